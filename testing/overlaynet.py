"""The Mininet overlay network of the Mininet tests: its agents, traffic and results.

``measure_network`` runs a module's ``topo.launch.MeasureNetwork`` under the
machine's Mininet lock (``net`` below: tree depth 2 fanout 3, an agent on
each of h1..h9) and ``apply_everywhere`` posts a task and waits until
every agent holds it. ``send_pairs`` sends paced UDP between fixed
pairs and returns the exact bytes that arrived (the ground truth a result
is checked against); ``kill`` / ``restart`` stop and start one agent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from testing.procs import free_port, mininet_lock, wait_until
from topo.launch import ROOT, MeasureNetwork, Options


@contextlib.contextmanager
def measure_network(tmp_path_factory: pytest.TempPathFactory, name: str,
                    **options: Any) -> Iterator[MeasureNetwork]:
    """A module's ``MeasureNetwork`` (tree depth 2 fanout 3 with an agent on every host
    unless ``options`` say otherwise; free ports for its controllers, two with
    ``standby=True``) under the machine's Mininet lock, stopped at the end; then fails
    if a controller or an agent logged a traceback."""
    with mininet_lock():
        run_dir = tmp_path_factory.mktemp(name)
        settings = {"topo": "tree", "depth": 2, "fanout": 3, "agents": True, "timeout": 120,
                    **options}
        # ports picked once the lock is held, just before the controllers bind them
        ports: dict[str, Any] = {"controller_port": free_port(), "rest_port": free_port()}
        if settings.get("standby"):
            ports.update(standby_controller_port=free_port(), standby_rest_port=free_port())
        mn = MeasureNetwork(Options(**settings, **ports, lock=False, run_dir=str(run_dir)))
        try:
            mn.start()
            yield mn
        finally:
            mn.stop()  # ends with topo.cleanup.cleanup_mininet: only what this network left
        for path in [f"{run_dir}/controller.log", *glob.glob(f"{run_dir}/standby.log"),
                     *glob.glob(f"{run_dir}/agent-h*.log"),
                     *glob.glob(f"{run_dir}/agent-h*.out")]:
            with open(path, errors="replace") as f:
                text = f.read()
            assert "Traceback" not in text, f"{path} logged a traceback:\n{text[-4000:]}"


def apply_everywhere(net: MeasureNetwork, task: dict, agents: list[str],
                     timeout: float = 30) -> str:
    """POST one task to the network's controller; its id once every agent holds it."""
    status, body = net.rest("/measure/v1/tasks", method="POST", body={"tasks": [task]})
    assert status == 201, body
    task_id = body["tasks"][0]["id"]

    def everywhere() -> bool:
        code, rec = net.rest(f"/measure/v1/tasks/{task_id}")
        return code == 200 and rec["agents"] == {a: "ok" for a in agents}

    wait_until(everywhere, timeout=timeout,
               message=f"task {task_id} ok on all {len(agents)} agents")
    return task_id


AGENTS = [f"h{n}" for n in range(1, 10)]


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(30.0)  # until the first datagram, then until the sender goes quiet
n = 0
try:
    while True:
        s.recv(65536)
        n += 1
        s.settimeout(float(sys.argv[2]))
except socket.timeout:
    pass
print(n, flush=True)
"""

SENDER = """
import socket, sys, time
dst, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
gap = float(sys.argv[5]) if len(sys.argv) > 5 else 0.002
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * size
for _ in range(count):
    s.sendto(payload, (dst, port))
    time.sleep(gap)
"""

# (src, dst, datagrams, payload bytes): h4->h6 stays under 5% of the total
PAIRS = [("h1", "h5", 200, 1000), ("h2", "h9", 100, 500), ("h7", "h3", 300, 1200),
         ("h4", "h6", 50, 200), ("h8", "h5", 120, 800)]


def api(net: MeasureNetwork, path: str, method: str = "GET", body=None):
    return net.rest(path, method=method, body=body)  # with the controller's bearer token


def apply(net: MeasureNetwork, task: dict) -> str:
    return apply_everywhere(net, task, AGENTS)


def result(net: MeasureNetwork, task_id: str, host: str | None = None):
    query = f"?host={host}" if host else ""
    status, body = api(net, f"/measure/v1/tasks/{task_id}/result{query}")
    return body if status == 200 else None


def send_pairs(net: MeasureNetwork) -> dict[str, int]:
    """Paced UDP between the pairs; returns exact bytes per src_dst key that arrived."""
    py = sys.executable
    receivers = {}
    for i, (_, dst, _, _) in enumerate(PAIRS):
        proc = net.net.get(dst).popen([py, "-c", RECEIVER, str(5600 + i), "2.0"],
                                      env=net.host_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        receivers[i] = proc
    for i, (src, dst, count, size) in enumerate(PAIRS):
        ip = net.net.get(dst).IP()
        done = net.run_on(src, [py, "-c", SENDER, ip, str(5600 + i), str(count), str(size)],
                          timeout=30)
        assert done.returncode == 0
    exact: dict[str, int] = {}
    for i, (src, dst, count, size) in enumerate(PAIRS):
        out, _ = receivers[i].communicate(timeout=30)
        got = int(out.split()[-1])
        assert got >= 0.95 * count, f"{src}->{dst}: only {got} of {count} datagrams arrived"
        key = f"{net.net.get(src).IP()},{net.net.get(dst).IP()}"
        exact[key] = exact.get(key, 0) + got * (size + 28)
    return exact


def overlay(net: MeasureNetwork) -> dict:
    status, body = api(net, "/measure/v1/overlay")
    assert status == 200
    return body


def kill(net: MeasureNetwork, name: str) -> None:
    proc = net.agents[name]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def restart(net: MeasureNetwork, name: str) -> None:
    host = net.net.get(name)
    with open(os.path.join(net.run_dir, f"agent-{name}.out"), "a") as out:
        net.agents[name] = host.popen(net.agent_command(host), env=net.host_env(),
                                      stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def coverage(net: MeasureNetwork, task_id: str, covered: list[str], missing: list[str],
             after: float, timeout: float = 60):
    def ok():
        res = result(net, task_id)
        good = (res and res["interval_end"] > after and res["covered"] == covered
                and res["missing"] == missing)
        return res if good else None

    return wait_until(ok, timeout=timeout, interval=0.5,
                      message=f"result covering {covered}, missing {missing}")


STATS = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?\s*")


def flow_tables(net: MeasureNetwork) -> dict[str, dict[str, tuple[str, float]]]:
    """Every switch's OpenFlow 1.3 table: switch -> {a flow's cookie, table, priority,
    timeouts and match: (its actions, its duration in s)}. Counters and ages are
    left out, so two snapshots hold the same flows and actions when no flow was
    added, changed or deleted; a flow deleted and added again as it was shows as a
    duration that did not grow with the time between them."""
    out: dict[str, dict[str, tuple[str, float]]] = {}
    for sw in net.net.switches:
        text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", sw.name],
                              capture_output=True, text=True, timeout=15, check=True).stdout
        table: dict[str, tuple[str, float]] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("OFPST", "NXST")):
                continue
            m = re.search(r"\bduration=([\d.]+)s", line)
            flow = STATS.sub("", line).strip()
            match, _, actions = flow.rpartition(" actions=")
            table[match] = (actions, float(m[1]) if m else 0.0)
        out[sw.name] = table
    return out
