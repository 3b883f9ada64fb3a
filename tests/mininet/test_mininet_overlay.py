"""Mininet tier: global results through the overlay, and its failure handling.

One network for the module (``topo.launch.MeasureNetwork``: controller,
tree depth 2 fanout 3 on userspace OVS, the mgmt0 bridge, an agent on each
of the nine hosts, overlay built), under the machine-wide Mininet lock.

1. A global heavy-hitter task over ``src_dst``/``bytes`` for UDP; paced
   datagrams of known sizes between five pairs, each counted by a receiver
   in the destination host (the ground truth: what arrived). The
   controller's global result must list all nine agents as covered and hold
   exactly the pairs above 5% of the total bytes, each within the count-min
   bound of its exact byte count (IPv4 total length = payload + 28);
   ``?host=`` gives one host's bytes.
2. Kill (SIGKILL) a non-root agent that has children, then the root agent:
   results keep coming with the dead agents missing and everyone else
   covered (the children re-parented, a new root chosen); restart both and
   the coverage is full again.

Every agent and the controller must not have logged a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from testing.netns import apply_everywhere, measure_network
from testing.procs import wait_until
from topo.launch import ROOT, MeasureNetwork

pytestmark = pytest.mark.mininet

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
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * size
for _ in range(count):
    s.sendto(payload, (dst, port))
    time.sleep(0.002)
"""

# (src, dst, datagrams, payload bytes): h4->h6 stays under 5% of the total
PAIRS = [("h1", "h5", 200, 1000), ("h2", "h9", 100, 500), ("h7", "h3", 300, 1200),
         ("h4", "h6", 50, 200), ("h8", "h5", 120, 800)]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "overlay-net") as mn:
        yield mn


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


def test_global_heavy_hitters_match_exact_bytes_and_cover_all_agents(net):
    task_id = apply(net, {"name": "hh-udp-bytes", "kind": "heavy_hitters", "key": "src_dst",
                          "increment": "bytes", "filter": {"proto": "udp"},
                          "threshold": 0.05, "report_interval": 1})
    exact = send_pairs(net)
    total = sum(exact.values())
    heavy = {k for k, v in exact.items() if v >= 0.05 * total}
    assert len(heavy) == 4  # h4->h6 is below the threshold

    def matches():
        res = result(net, task_id)
        if not res or res["covered"] != AGENTS or res["missing"] or res["total"] < total:
            return None
        return res

    res = wait_until(matches, timeout=30, interval=0.5,
                     message="a complete global result holding all the traffic")
    assert res["total"] == total == res["bytes"]
    assert set(res["heavy_hitters"]) == heavy
    width = res["sketch"]["width"]
    for key in heavy:
        assert exact[key] <= res["heavy_hitters"][key] <= exact[key] + 2 * total / width
    assert res["complete"] is True and res["age"] < 5
    h5 = result(net, task_id, host="h5")
    assert h5["bytes"] == sum(v for k, v in exact.items() if k.endswith(",10.0.0.5"))


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


def test_dead_agents_are_missing_children_reparented_and_restart_restores(net):
    task_id = apply(net, {"name": "cover", "kind": "counter", "key": "src",
                          "increment": "pkt", "report_interval": 1})
    first = coverage(net, task_id, AGENTS, [], after=0)
    tree = overlay(net)
    root = tree["root"]
    parents = tree["parent"]
    inner = sorted((n for n in AGENTS if n != root and any(p == n for p in parents.values())),
                   key=lambda n: -sum(p == n for p in parents.values()))
    assert inner, f"no non-root agent with children in {json.dumps(tree)}"
    victim = inner[0]
    orphans = sorted(n for n, p in parents.items() if p == victim)

    kill(net, victim)
    live = [a for a in AGENTS if a != victim]
    res = coverage(net, task_id, live, [victim], after=first["interval_end"])
    new_parents = overlay(net)["parent"]
    assert all(new_parents[o] not in (None, victim) for o in orphans), new_parents

    kill(net, root)
    live = [a for a in live if a != root]
    res = coverage(net, task_id, live, sorted([victim, root]), after=res["interval_end"])
    new_tree = overlay(net)
    assert new_tree["root"] not in (root, victim)

    restart(net, victim)
    restart(net, root)
    coverage(net, task_id, AGENTS, [], after=res["interval_end"], timeout=90)
