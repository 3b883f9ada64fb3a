"""Spoofed and plain port scans against ``port_scan`` tasks, in Mininet.

Tree depth 2 fanout 3 (h1-h3 on s2, h4-h6 on s3, h7-h9 on s4), an agent on
every host.

1. h5 scans h1 with h9's address as the source, against a task whose
   reaction is ``block``: the IP source guard drops the forged SYNs at h5's
   switch (its drop flow counts them), nothing is blocked, h9 and h1 stay
   reachable. The same scan from h5's own address blocks h5 at its own port,
   and never the target that answered it.
2. A plain connect scan of 25 to 200 closed ports, h1 -> h5, is detected in
   20 of 20 runs with no other traffic and 20 of 20 with a ping flood and a
   UDP stream beside it (a result after each scan lists source 10.0.0.1 and
   nobody else, never the target), and raises ``port_scan`` events from
   10.0.0.1 only.
"""

from __future__ import annotations

import random
import re
import subprocess
import time

import pytest

from testing.attacks import connect_scan, syn_scan
from testing.overlaynet import apply_everywhere, measure_network
from testing.procs import wait_until

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 10)]
INTERVAL = 1.0


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "spoofing-net") as mn:
        yield mn


def _events(net, task_id: str, kind: str) -> list[dict]:
    status, body = net.rest("/measure/v1/events?since=0")
    assert status == 200
    return [e for e in body["events"] if e["task_id"] == task_id and e["kind"] == kind]


def _actions(net, task_id: str) -> list[dict]:
    status, body = net.rest("/measure/v1/actions")
    assert status == 200
    return [a for a in body["actions"] if a["task_id"] == task_id]


def _reachable(net, src: str, dst: str) -> bool:
    out = net.net.get(src).cmd(f"ping -c2 -W1 -i0.3 {net.net.get(dst).IP()}")
    return " 0% packet loss" in out


def _guard_drops(net, switch: str, mac: str) -> int:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch,
                          f"table=0,dl_src={mac},ip"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    total = 0
    for line in out.splitlines():
        if "priority=11" in line and "nw_src" not in line:
            found = re.search(r"n_packets=(\d+)", line)
            assert found, line
            total += int(found.group(1))
    return total


def _delete(net, task_id: str) -> None:
    assert net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")[0] == 200


def test_spoofed_scan_blocks_nobody_and_a_true_scan_blocks_the_scanner(net):
    h1, h5 = net.net.get("h1"), net.net.get("h5")
    for a, b in (("h5", "h1"), ("h9", "h1")):
        assert _reachable(net, a, b)  # every host learned, guard flows in place
    task_id = apply_everywhere(net, {"name": "scan-guard", "kind": "port_scan",
                                     "report_interval": INTERVAL,
                                     "on": [{"event": "port_scan", "action": "block",
                                             "duration": 20}]}, AGENTS)
    time.sleep(2 * INTERVAL)
    before = _guard_drops(net, "s3", h5.MAC())
    out = syn_scan(h5, h1.IP(), 1000, 45, spoof="10.0.0.9")
    time.sleep(4 * INTERVAL)
    dropped = _guard_drops(net, "s3", h5.MAC()) - before
    assert dropped >= 45, (dropped, out)  # every forged SYN dropped at h5's switch, counted
    assert _actions(net, task_id) == [] and _events(net, task_id, "port_scan") == []
    assert _reachable(net, "h9", "h1") and _reachable(net, "h1", "h9")

    syn_scan(h5, h1.IP(), 2000, 45)  # the same scan from h5's own address
    block = wait_until(lambda: [a for a in _actions(net, task_id)
                                if a["action"] == "block" and a["status"] == "active"],
                       timeout=15, interval=0.2, message="h5 blocked")
    assert [a["target"] for a in block] == ["10.0.0.5"] and block[0]["dpid"] == 3
    s3 = net.net.get("s3")
    link = net.net.linksBetween(h5, s3)[0]
    port = s3.ports[link.intf1 if link.intf1.node is s3 else link.intf2]
    flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "s3"],
                           capture_output=True, text=True, timeout=10, check=True).stdout
    assert re.search(rf"cookie=0x52454143.*in_port={port}\b.*nw_src=10\.0\.0\.5", flows), flows
    time.sleep(3 * INTERVAL)
    assert [a["target"] for a in _actions(net, task_id)] == ["10.0.0.5"]  # never h1
    assert {e["src"] for e in _events(net, task_id, "port_scan")} == {"10.0.0.5"}
    assert _reachable(net, "h9", "h1")
    _delete(net, task_id)  # lifts the block
    wait_until(lambda: _reachable(net, "h5", "h1"), timeout=15, message="h5 unblocked")


def _scanners_since(net, task_id: str, since: float) -> dict | None:
    """The scanners of the task's latest result if it covers time after ``since``."""
    status, body = net.rest(f"/measure/v1/tasks/{task_id}/result")
    if status != 200 or body.get("interval_end", 0) < since:
        return None
    return body.get("scanners") or None


def _detect_runs(net, task_id: str, runs: int, rng: random.Random) -> list[tuple[int, str]]:
    """Run ``runs`` plain scans h1 -> h5; (ports, 'ok' or what went wrong) each.

    Detected: a result after the scan lists 10.0.0.1 as a scanner (a ``port_scan``
    event is raised only when a source newly appears, so under load, with results
    arriving late, two runs may share one event), and lists nobody else."""
    h1, h5 = net.net.get("h1"), net.net.get("h5")
    out = []
    for _ in range(runs):
        count = rng.randint(25, 200)
        started = time.time()
        connect_scan(h1, h5.IP(), rng.randint(2000, 30000), count)
        try:
            found = wait_until(lambda started=started: _scanners_since(net, task_id, started),
                               timeout=10, interval=0.2, message="the scan in a result")
            out.append((count, "ok" if set(found) == {"10.0.0.1"} else f"scanners {found}"))
        except TimeoutError:
            out.append((count, "missed"))
        # the scan leaves the listing before the next run
        wait_until(lambda: not _scanners_since(net, task_id, time.time() - 1.0), timeout=20,
                   interval=0.3, message="the listing cleared")
    return out


def test_plain_scans_are_detected_every_time_with_and_without_other_traffic(net):
    task_id = apply_everywhere(net, {"name": "scan-detect", "kind": "port_scan",
                                     "report_interval": INTERVAL,
                                     "window": {"length": 1.0, "mode": "tumbling"}}, AGENTS)
    time.sleep(2 * INTERVAL)
    rng = random.Random(28)
    quiet = _detect_runs(net, task_id, 20, rng)
    h2, h6, h8 = (net.net.get(n) for n in ("h2", "h6", "h8"))
    pids = [h8.cmd("timeout 200 iperf3 -s -1 -p 5299 >/dev/null 2>&1 & echo $!")]
    time.sleep(0.5)
    pids.append(h2.cmd(f"timeout 190 iperf3 -u -b 20M -t 180 -c {h8.IP()} -p 5299 "
                       ">/dev/null 2>&1 & echo $!"))
    pids.append(h6.cmd(f"timeout 190 ping -f -W1 {net.net.get('h5').IP()} >/dev/null 2>&1 "
                       "& echo $!"))
    try:
        busy = _detect_runs(net, task_id, 20, rng)
    finally:
        for pid in pids:  # the `timeout` wrappers this test started, and their children
            if pid.strip().isdigit():
                subprocess.run(["pkill", "-TERM", "-P", pid.strip()], check=False)
                subprocess.run(["kill", pid.strip()], check=False)
    print("quiet runs:", quiet)
    print("busy runs:", busy)
    assert [r for r in quiet if r[1] != "ok"] == []
    assert [r for r in busy if r[1] != "ok"] == []
    assert {e["src"] for e in _events(net, task_id, "port_scan")} == {"10.0.0.1"}
    _delete(net, task_id)
