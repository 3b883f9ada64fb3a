"""Mininet tier: a flows task on nine agents, one real collector, results up the overlay.

One network (``topo.launch.MeasureNetwork``: controller, tree depth 2 fanout
3 on userspace OVS, the mgmt0 bridge, an agent per host) under the
machine-wide Mininet lock, and ``nfcapd`` in the root namespace listening on
the management address. A ``flows`` task (UDP to ports 5600..5604 received
by a host) is applied through the controller; paced datagrams of known
sizes go between five pairs and the receivers count what arrived (the
ground truth). Then:

- ``nfdump -r`` lists one record per pair (or more parts) from the agent of
  the receiving host, whose packets and bytes add up exactly to what
  arrived, with the right addresses, ports and protocol;
- ``GET /measure/v1/flows`` lists the five flows network-wide (the task's
  five_tuple counter merged up the overlay), largest first, each within
  the count-min bound of its exact bytes, all nine agents covered;
- every agent's per-host result (``?host=``, fetched from that agent) shows
  its monitor's cost.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from testing.overlaynet import AGENTS, PAIRS, RECEIVER, SENDER, measure_network
from testing.procs import free_port, wait_until
from topo.launch import AGENT_PORT, MGMT_IP, MeasureNetwork, mgmt_ip

pytestmark = pytest.mark.mininet
PORT0 = 5600


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "flows-net") as mn:
        yield mn


def test_flow_records_collector_and_network_wide_flows(net, tmp_path):
    collector_port = free_port()
    outdir = tmp_path / "nfcap"
    outdir.mkdir()
    nfcapd = subprocess.Popen(["nfcapd", "-w", str(outdir), "-b", MGMT_IP, "-p",
                               str(collector_port), "-t", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, body = net.rest("/measure/v1/tasks", "POST", {"tasks": [{
            "name": "flows-udp", "kind": "flows", "report_interval": 1, "idle_timeout": 2,
            "filter": {"proto": "udp", "dport": f"{PORT0}:{PORT0 + 4}"},
            "export": [{"collector": f"{MGMT_IP}:{collector_port}"}]}]})
        assert status == 201, body
        task_id = body["tasks"][0]["id"]
        wait_until(lambda: net.rest(f"/measure/v1/tasks/{task_id}")[1].get("agents")
                   == {a: "ok" for a in AGENTS}, timeout=30, message="task on all agents")
        exact = send(net)

        def listed():
            code, reply = net.rest(f"/measure/v1/flows?task={task_id}&top=10")
            if code != 200 or reply["covered"] != AGENTS or len(reply["flows"]) < len(exact):
                return None
            return reply

        reply = wait_until(listed, timeout=30, interval=0.5, message="five flows listed")
        got = {}
        for row in reply["flows"]:
            src, dst, proto, _, dport = row["flow"].split(",")
            assert proto == "udp"
            got[(src, dst, int(dport))] = row["bytes"]
        assert set(got) == set(exact)
        total = sum(b for _, b in exact.values())
        for key, (_, nbytes) in exact.items():
            assert nbytes <= got[key] <= nbytes + 2 * total / 16384
        order = [got[k] for k in got]
        assert order == sorted(order, reverse=True)

        def costs_known() -> bool:
            # each agent's monitor cost is in its own per-host line, which stays in the
            # tree: the controller fetches it from the agent for ``?host=``
            for name in AGENTS:
                code, line = net.rest(f"/measure/v1/tasks/{task_id}/result?host={name}")
                if code != 200 or not (line.get("monitor") or {}).get("cpu_seconds", 0) > 0:
                    return False
            return True

        wait_until(costs_known, timeout=20, interval=0.5, message="every monitor's cost")
        _, h5 = net.rest(f"/measure/v1/tasks/{task_id}/result?host=h5")
        assert h5["monitor"]["packets"] >= exact[(ip(net, "h1"), ip(net, "h5"), PORT0)][0]

        # idle timeout 2 s: every agent's cache empties and each record goes out
        wait_until(lambda: all(cache_empty(net, a) for a in AGENTS), timeout=20, interval=0.5,
                   message="every flow exported")
    finally:
        if nfcapd.poll() is None:
            os.kill(nfcapd.pid, signal.SIGTERM)
            nfcapd.wait(10)
    sums: dict[tuple[str, str, int], list[int]] = {}
    for path in glob.glob(str(outdir / "nfcapd.*")):
        out = subprocess.run(["nfdump", "-r", path, "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
        for rec in json.loads(out) if out.strip() else []:
            assert rec["proto"] == 17
            key = (rec["src4_addr"], rec["dst4_addr"], rec["dst_port"])
            acc = sums.setdefault(key, [0, 0])
            acc[0] += rec["in_packets"]
            acc[1] += rec["in_bytes"]
    assert {k: tuple(v) for k, v in sums.items()} == exact


def ip(net: MeasureNetwork, host: str) -> str:
    return net.net.get(host).IP()


def cache_empty(net: MeasureNetwork, agent: str) -> bool:
    """The agent's flow caches hold nothing and every record reached the collector."""
    url = f"http://{mgmt_ip(agent)}:{AGENT_PORT}/agent/v1/health"
    health = requests.get(url, timeout=5).json()
    caches = [c for parts in health["flows"].values() for c in parts]
    return bool(caches) and all(c["flows"] == 0 and not health["export_problems"]
                                for c in caches)


def send(net: MeasureNetwork) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Paced UDP between the pairs; (src, dst, dport) -> exact (packets, bytes) that arrived."""
    py = sys.executable
    receivers = {}
    for i, (_, dst, _, _) in enumerate(PAIRS):
        proc = net.net.get(dst).popen([py, "-c", RECEIVER, str(PORT0 + i), "2.0"],
                                      env=net.host_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        receivers[i] = proc
    for i, (src, dst, count, size) in enumerate(PAIRS):
        done = net.run_on(src, [py, "-c", SENDER, ip(net, dst), str(PORT0 + i), str(count),
                                str(size)], timeout=30)
        assert done.returncode == 0
    exact = {}
    for i, (src, dst, count, size) in enumerate(PAIRS):
        out, _ = receivers[i].communicate(timeout=30)
        got = int(out.split()[-1])
        assert got >= 0.95 * count, f"{src}->{dst}: only {got} of {count} datagrams arrived"
        exact[(ip(net, src), ip(net, dst), PORT0 + i)] = (got, got * (size + 28))
    return exact
