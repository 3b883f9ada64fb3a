"""Mininet tier: the elastic kinds network-wide, against traffic of known sizes.

One network for the module (``topo.launch.MeasureNetwork``: controller,
tree depth 2 fanout 3 on userspace OVS, an agent on each of the nine
hosts, overlay built), under the machine-wide Mininet lock.

1. ``flow_size`` (global, ``src_dst``/``pkt``, UDP to ports 5700..5799):
   flows of known sizes between several host pairs, counted by receivers in
   the destination hosts (the ground truth is what arrived). The global
   result's histogram is exactly the flows' sizes, with every agent covered;
   the largest flow is listed first, exact; asking the past for one key
   gives its size; ``?host=h5`` gives h5's digest (its flows' histogram in
   power-of-two bins and its largest flows).
2. ``heavy_changers`` (threshold 60 packets per interval of 2 s): three
   pairs at 10 packets/s; one of them goes to 100 packets/s half way. The
   heavy_changer events name that pair and nothing else.
3. ``superspreaders`` with ``min_distinct: 5``: h1 sends to all 8 other
   hosts, h2 and h3 to two each; only h1 is reported.
4. Partial keys: one ``five_tuple`` ``flow_size`` task answers ``?key=src``
   and ``?key=dport`` with the exact per-source and per-port totals of the
   flows that arrived (several flows per source and per port).

1 to 3 run with ``capture: nfqueue`` and ``capture: ebpf`` (ports 50 higher).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from testing.overlaynet import (
    AGENTS,
    RECEIVER,
    api,
    apply,
    result,
)
from testing.procs import wait_until
from topo.launch import MeasureNetwork

pytestmark = pytest.mark.mininet
CAPTURES = ["nfqueue", "ebpf"]
OFFSET = {"nfqueue": 0, "ebpf": 50}


@pytest.fixture(scope="module", autouse=True)
def _ebpf_object():
    """The eBPF object, before the network's agents start (their monitors load it)."""
    from host_agent.capture.ebpf import ensure_object

    ensure_object()


PACED = """
import socket, sys, time
dst, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for part in sys.argv[3:]:  # rate/seconds ...
    rate, seconds = (float(x) for x in part.split("/"))
    end = time.time() + seconds
    while time.time() < end:
        s.sendto(b"x" * 100, (dst, port))
        time.sleep(1.0 / rate)
"""

SENDER = """
import socket, sys, time
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"x" * 100, (dst, port))
    time.sleep(0.003)
"""

FLOWS = [("h1", "h5", 30), ("h2", "h9", 30), ("h7", "h3", 50), ("h4", "h6", 7),
         ("h8", "h5", 12), ("h6", "h2", 1)]


def ip(mn: MeasureNetwork, host: str) -> str:
    return mn.net.get(host).IP()


def send_counted(mn: MeasureNetwork, flows, base_port: int) -> dict[str, int]:
    """Datagrams per flow that arrived (receivers in the destinations)."""
    py = sys.executable
    receivers = []
    for i, (_, dst, _) in enumerate(flows):
        proc = mn.net.get(dst).popen([py, "-c", RECEIVER, str(base_port + i), "2.0"],
                                     env=mn.host_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        receivers.append(proc)
    for i, (src, dst, count) in enumerate(flows):
        done = mn.run_on(src, [py, "-c", SENDER, ip(mn, dst), str(base_port + i),
                               str(count)], timeout=30)
        assert done.returncode == 0
    arrived = {}
    for (src, dst, count), proc in zip(flows, receivers, strict=True):
        out, _ = proc.communicate(timeout=30)
        got = int(out.split()[-1])
        assert got >= 0.9 * count, f"{src}->{dst}: only {got} of {count} arrived"
        arrived[f"{ip(mn, src)},{ip(mn, dst)}"] = got
    return arrived


@pytest.mark.parametrize("capture", CAPTURES)
def test_global_flow_size_is_the_exact_histogram(net, capture):
    task_id = apply(net, {"name": f"fs-udp-{capture}", "kind": "flow_size", "key": "src_dst",
                          "filter": {"proto": "udp", "dport": "5700:5799"},
                          "memory": 65536, "report_interval": 1, "capture": capture})
    arrived = send_counted(net, FLOWS, 5700 + OFFSET[capture])
    expect: dict[str, float] = {}
    for n in arrived.values():
        expect[str(n)] = expect.get(str(n), 0.0) + 1.0

    def complete():
        res = result(net, task_id)
        good = res and res["covered"] == AGENTS and res.get("flow_size") and \
            res["total"] == sum(arrived.values())
        return res if good else None

    res = wait_until(complete, timeout=30, interval=0.5, message="a complete flow_size")
    fs = res["flow_size"]
    assert fs["histogram"] == dict(sorted(expect.items(), key=lambda kv: int(kv[0])))
    assert fs["flows"] == len(FLOWS) and fs["exact_flows"] == len(FLOWS)
    top = max(arrived, key=lambda key: arrived[key])
    assert fs["largest"][0] == [top, arrived[top], True]
    status, past = api(net, f"/measure/v1/tasks/{task_id}/history/latest?key={top}")
    assert status == 200 and past["size"]["size"] == arrived[top] and past["size"]["exact"]
    status, _ = api(net, f"/measure/v1/tasks/{task_id}/history/latest?key=nonsense")
    assert status == 400
    # ?host= carries that agent's digest: h5 received h1 -> h5 and h8 -> h5
    at_h5 = {k: n for k, n in arrived.items() if k.endswith("," + ip(net, "h5"))}
    bins: dict[str, float] = {}
    for n in at_h5.values():
        low = str(1 << (n.bit_length() - 1))
        bins[low] = bins.get(low, 0.0) + 1.0
    digest = result(net, task_id, "h5")["answer"]
    assert digest["histogram_log2"] == dict(sorted(bins.items(), key=lambda kv: int(kv[0])))
    assert sorted(x[1] for x in digest["largest"]) == sorted(at_h5.values())


@pytest.mark.parametrize("capture", CAPTURES)
def test_heavy_changers_report_the_changed_flow_only(net, capture):
    low = 5800 + OFFSET[capture]
    task_id = apply(net, {"name": f"hc-udp-{capture}", "kind": "heavy_changers",
                          "key": "src_dst",
                          "filter": {"proto": "udp", "dport": f"{low}:{low + 49}"},
                          "threshold_abs": 60, "memory": 65536, "report_interval": 2,
                          "capture": capture})
    status, before = api(net, "/measure/v1/events?since=0")
    since = max([e["id"] for e in before["events"]], default=0) if status == 200 else 0
    py = sys.executable
    pairs = [("h1", "h4", ["10/12"]), ("h2", "h8", ["10/6", "100/6"]),
             ("h3", "h7", ["10/12"])]
    procs = [net.net.get(src).popen([py, "-c", PACED, ip(net, dst), str(low + i), *plan],
                                    env=net.host_env())
             for i, (src, dst, plan) in enumerate(pairs)]
    for proc in procs:
        assert proc.wait(timeout=40) == 0
    changed = f"{ip(net, 'h2')},{ip(net, 'h8')}"

    def changer_events():
        code, body = api(net, f"/measure/v1/events?since={since}")
        events = [e for e in body["events"] if e["task_id"] == task_id
                  and e["kind"] == "heavy_changer"] if code == 200 else []
        return events if len(events) >= 2 else None  # the rise and the stop

    time.sleep(5)  # two more intervals after the traffic stopped
    events = wait_until(changer_events, timeout=20, interval=1, message="changer events")
    assert {e["key"] for e in events} == {changed}
    rise = next(e for e in events if e["change"] > 0)
    assert rise["after"] - rise["before"] >= 60


@pytest.mark.parametrize("capture", CAPTURES)
def test_superspreaders_min_distinct_5(net, capture):
    low = 5900 + OFFSET[capture]
    task_id = apply(net, {"name": f"ss-udp-{capture}", "kind": "superspreaders",
                          "key": "src_dst",
                          "filter": {"proto": "udp", "dport": f"{low}:{low + 49}"},
                          "min_distinct": 5, "memory": 65536, "report_interval": 1,
                          "capture": capture})
    flows = [("h1", d, 3) for d in AGENTS if d != "h1"] + [
        ("h2", "h3", 3), ("h2", "h4", 3), ("h3", "h5", 3), ("h3", "h6", 3)]
    send_counted(net, flows, low)

    def reported():
        res = result(net, task_id)
        good = res and res["covered"] == AGENTS and res.get("superspreaders")
        return res if good else None

    res = wait_until(reported, timeout=30, interval=0.5, message="superspreaders")
    assert [s["key"] for s in res["superspreaders"]] == [ip(net, "h1")]
    assert abs(res["superspreaders"][0]["distinct"] - 8) <= 1
    assert res["min_distinct"] == 5


def test_five_tuple_task_answers_sources_and_ports(net):  # noqa: F811
    # 2 s intervals: a parent waits at most half an interval for its children, and on a
    # loaded machine the mid-level agents' reports came after the root's 0.5 s of a 1 s
    # interval every time, so no result covered all nine agents within the wait
    task_id = apply(net, {"name": "ft-udp", "kind": "flow_size", "key": "five_tuple",
                          "filter": {"proto": "udp", "dport": "5900:5999"},
                          "memory": 65536, "report_interval": 2})
    first = [("h1", "h5", 40), ("h2", "h6", 25), ("h3", "h7", 10)]
    second = [("h1", "h8", 20), ("h4", "h9", 15)]
    by_src: dict[str, int] = {}
    by_port: dict[str, int] = {}
    for flows in (first, second):  # the second round reuses the first's ports
        arrived = send_counted(net, flows, 5900)
        for i, (src, dst, _) in enumerate(flows):
            n = arrived[f"{ip(net, src)},{ip(net, dst)}"]
            by_src[ip(net, src)] = by_src.get(ip(net, src), 0) + n
            by_port[str(5900 + i)] = by_port.get(str(5900 + i), 0) + n
    total = sum(by_src.values())

    seen: dict = {}

    def complete():
        res = result(net, task_id)
        seen.update(covered=res and res.get("covered"), total=res and res.get("total"),
                    top=res and res.get("top_k"))
        return res if res and res["covered"] == AGENTS and res["total"] == total else None

    try:
        wait_until(complete, timeout=60, interval=0.5, message="a complete five_tuple result")
    except TimeoutError as exc:
        raise AssertionError(f"expected total {total} from {AGENTS}, last result: {seen}; "
                             f"sent by source {by_src}") from exc
    for key, expect in (("src", by_src), ("dport", by_port)):
        status, res = api(net, f"/measure/v1/tasks/{task_id}/result?key={key}")
        assert status == 200, res
        assert {k: v for k, v in res["top_k"]} == expect
        assert [v for _, v in res["top_k"]] == sorted(expect.values(), reverse=True)
        assert {r["key"]: r["size"] for r in res["partial"]["keys"]} == expect
        assert all(r["exact"] for r in res["partial"]["keys"])
    status, res = api(net, f"/measure/v1/tasks/{task_id}/result?key=five_tuple")
    assert status == 400 and res["error"].startswith("key 'five_tuple'")
