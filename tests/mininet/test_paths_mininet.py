"""Mininet tier: path_health and tcp_health on real OVS + Ryu, an agent on every host.

One network for the module (tree depth 2 fanout 3: s1 core; h1-h3 on s2, h4-h6 on
s3, h7-h9 on s4), under the machine-wide Mininet lock.

1. No fault: ``peers: all`` at 10 probes/s gives all 36 pairs with loss 0 (at
   most one probe lost per pair) and RTT quantiles; a pair's median RTT agrees
   with ping's average within 20%.
2. One lossy link: random loss by the eBPF injector (``testing.faults``) on both
   directions of s1-s2, 5% then 20%. A probe measures the round trip, so a pair
   crossing the link loses q = 1 - (1 - p)^2. In the first full interval after
   the injection, every crossing pair's loss is within its binomial bounds, as is
   the pooled loss of all of them, and every other pair lost nothing (at most one
   probe). The bounds hold the run's 38 checks (2 rates x 18 pairs and the pooled
   loss) to a 99.8% family-wise level, about 4 standard deviations each: 99% per
   check, as the issue words it, fails a correct run one time in three (CI saw the
   pooled loss 2.9 standard deviations low at 20%: 1,519 of 4,482, 36% expected).
3. TCP health: a 5 Mbit/s iperf3 transfer h1 -> h4 across the lossy link (5%)
   shows retransmissions the receiver did not report as duplicates; one h2 -> h3
   (same switch) shows none: its ``retrans`` are all ``spurious_retrans`` (a tail
   loss probe fired by an ACK late on this shared machine, D-SACKed by the
   receiver), usually 0 of 0. The flow is iperf3's data connection: the one to the
   port that carried the most bytes (its control connection comes first).
4. RTT agreement, in one run, interleaved: a TCP transfer h2 -> h4 paced at
   5 Mbit/s in writes of one segment, ping h2 -> h4 every 0.1 s and path_health
   probes between h2 and h4 (report interval 1 s) share the same 20 s and the same
   path. The flow's ``min_rtt_ms`` (``tcpi_min_rtt``: the path without the flow's
   own queue) is within 20% of ping's minimum (0.89 to 0.97 times in 7 runs of
   the same transfer measured with sock_diag at 10 Hz; 0.83 to 1.04 in 8 runs of
   this test, the flow's being the lower in 7: its minimum is over thousands of
   samples, so 1,000 pings more, 50/s, take part in ping's minimum; in 5 runs they
   lowered it by 0 to 7%); the probes' p50 (median
   over the intervals) within a factor of 1.5 of ping's median. The smoothed
   ``rtt_ms`` (``tcpi_rtt``) is what the flow's segments see, not what a ping
   sees, so it is held to a sanity bound only: in the same 7 runs its median was
   1.3 to 3.4 times ping's median (0.25 to 2 ms more; 5.1 times, 3.52 against
   0.697 ms, in one CI run), because a segment that
   arrives alone is ACKed when the receiving iperf3 has read it (delayed ACK; ping's
   reply leaves from the kernel), and an average of 1/8 per ACK follows this
   machine's heavy tail (ping's 90th percentile is up to 6 times its median) where
   a median does not.
   With iperf3's default 128 KB writes it was 4.6 to 9.5 times (each write is a
   burst of 90 segments); unpaced, the flow fills the switches' queues and
   concurrent pings see the same queue (0.53 to 1.15 times ping's median).

Probe figures are printed for the record. Every agent and the controller must
not have logged a traceback.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

import pytest

from testing.checks import binomial_slack
from testing.faults import random_loss
from testing.overlaynet import apply_everywhere, measure_network
from testing.procs import stop_process, wait_until

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 10)]
LEFT = {"h1", "h2", "h3"}  # below s2
INTERVAL = 5.0
LOSS_CHECKS = 2 * (18 + 1)  # 2 loss rates x (18 crossing pairs and their pooled loss)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "paths-net") as mn:
        yield mn


def result(net, task_id: str, host: str | None = None):
    query = f"?host={host}" if host else ""
    status, body = net.rest(f"/measure/v1/tasks/{task_id}/result{query}")
    return body if status == 200 else None


def next_result(net, task_id: str, after: float, timeout: float = 4 * INTERVAL) -> dict:
    """The first result whose interval ends ``INTERVAL`` + 1 s after ``after`` (all of
    its probes were sent after ``after``) holding every pair."""
    def fresh():
        res = result(net, task_id)
        if res and res["interval_end"] >= after + INTERVAL + 1.0 and len(res["pairs"]) == 36:
            return res
        return None

    return wait_until(fresh, timeout=timeout, interval=0.5,
                      message=f"a path_health result for an interval after {after}")


def ping_median(net, src: str, dst: str, count: int = 20) -> float:
    """The median of ``count`` pings, 0.1 s apart."""
    out = net.run_on(src, ["ping", "-c", str(count), "-i", "0.1", net.net.get(dst).IP()],
                     timeout=count * 0.1 + 20, capture=True).stdout
    return statistics.median(float(t) for t in re.findall(r"time=([\d.]+) ms", out))


def switch_link_intfs(net, a: str, b: str) -> list[str]:
    link = net.net.linksBetween(net.net.get(a), net.net.get(b))[0]
    return [link.intf1.name, link.intf2.name]


def crossing(row: dict) -> bool:
    return (row["src"] in LEFT) != (row["dst"] in LEFT)


def test_no_fault(net):
    task_id = apply_everywhere(net, {"name": "mesh", "kind": "path_health", "peers": "all",
                                     "probe_rate": 10, "report_interval": INTERVAL},
                               AGENTS)
    res = next_result(net, task_id, time.time())
    assert res["covered"] == AGENTS and res["kind"] == "path_health"
    for row in res["pairs"]:
        assert row["sent"] >= 0.8 * 10 * INTERVAL and row["lost"] <= 1, row
        q = row["rtt_ms"]
        assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"] * 1.01, row
    cost = res["probe_cost"]["max"]
    print(f"\nprobe cost per host (max): {cost}")
    # ping over two intervals while the probes run; the first interval whose probes
    # were all sent within that time is compared with it (same seconds: this machine
    # is shared and RTTs through userspace OVS move with its load)
    start = time.time()
    ping = ping_median(net, "h1", "h4", count=int(2 * INTERVAL / 0.1))
    res = next_result(net, task_id, start)
    row = next(r for r in res["pairs"] if {r["src"], r["dst"]} == {"h1", "h4"})
    print(f"h1-h4 probe RTT p50 {row['rtt_ms']['p50']} ms, p99 {row['rtt_ms']['p99']} ms; "
          f"ping median {ping} ms (same seconds)")
    assert ping / 2 <= row["rtt_ms"]["p50"] <= 2 * ping
    mine = result(net, task_id, "h4")
    assert mine["pairs"] and all("h4" in (r["src"], r["dst"]) for r in mine["pairs"])
    status, _ = net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")
    assert status == 200


def test_one_lossy_link(net):
    task_id = apply_everywhere(net, {"name": "mesh-fast", "kind": "path_health",
                                     "peers": "all", "probe_rate": 50,
                                     "report_interval": INTERVAL}, AGENTS)
    intfs = switch_link_intfs(net, "s1", "s2")
    for p in (0.05, 0.20):
        with random_loss(intfs[0], p) as one, random_loss(intfs[1], p):
            start = time.time()
            res = next_result(net, task_id, start)
            del one
        q = 1 - (1 - p) ** 2
        cross = [r for r in res["pairs"] if crossing(r)]
        assert len(cross) == 18
        sent = sum(r["sent"] for r in cross)
        lost = sum(r["lost"] for r in cross)
        print(f"p={p}: crossing pairs lost {lost}/{sent} = {lost / sent:.4f} "
              f"(expected {q:.4f}); forward {sum(r['lost_fwd'] for r in cross)}")
        assert abs(lost - sent * q) <= binomial_slack(sent, q, LOSS_CHECKS)
        for r in cross:
            assert abs(r["lost"] - r["sent"] * q) <= binomial_slack(r["sent"], q, LOSS_CHECKS), r
        for r in res["pairs"]:
            if not crossing(r):
                assert r["lost"] <= 1, r


def data_flow(res: dict | None, src: str, port: int) -> dict | None:
    """iperf3's data connection from ``src`` to ``port`` in a tcp_health result: of the
    two connections to that port (iperf3 opens a control connection first), the one that
    carried the most bytes."""
    flows = [f for f in ((res or {}).get("tcp") or {}).get("top_flows", [])
             if f["dport"] == port and f["host"] == src]
    return max(flows, key=lambda f: f["bytes_acked"], default=None)


def wait_listening(host, port: int) -> None:
    """Until a TCP server listens on ``port`` in ``host``'s namespace."""
    wait_until(lambda: f":{port} " in host.cmd("ss -Hltn"), timeout=10, interval=0.05,
               message=f"a server on {host.name}:{port}")


def iperf_flow(net, task_id: str, src: str, dst: str, port: int) -> dict:
    """A 5 Mbit/s iperf3 transfer ``src`` -> ``dst`` for two intervals and a bit; its data
    connection as tcp_health last reported it while the transfer ran."""
    server = net.net.get(dst).popen(["iperf3", "-s", "-1", "-p", str(port)])
    try:
        wait_listening(net.net.get(dst), port)
        client = net.net.get(src).popen(["iperf3", "-c", net.net.get(dst).IP(), "-p",
                                         str(port), "-t", str(2 * INTERVAL + 2), "-b", "5M"])
        start = time.time()
        last = None
        while client.poll() is None and time.time() < start + 4 * INTERVAL:
            res = result(net, task_id)
            if res and res["interval_end"] >= start + INTERVAL:
                last = data_flow(res, src, port) or last
            time.sleep(0.5)
        assert client.wait(4 * INTERVAL) == 0
        assert last is not None, f"the iperf3 flow {src}->{dst} never showed in tcp_health"
        return last
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(5)


def test_tcp_health_sees_retransmissions_across_the_lossy_link(net):
    task_id = apply_everywhere(net, {"name": "tcp", "kind": "tcp_health", "top_k": 20,
                                     "report_interval": INTERVAL}, AGENTS)
    clean = iperf_flow(net, task_id, "h2", "h3", 5301)
    intfs = switch_link_intfs(net, "s1", "s2")
    with random_loss(intfs[0], 0.05), random_loss(intfs[1], 0.05):
        lossy = iperf_flow(net, task_id, "h1", "h4", 5302)
    print(f"\nclean h2->h3: {clean}\nlossy h1->h4: {lossy}")
    # a retransmission on the clean path is a tail loss probe fired by a late ACK (this
    # machine is shared), which the receiver reports as a duplicate: nothing was lost
    assert clean["retrans"] == clean["spurious_retrans"], clean
    assert lossy["retrans"] - lossy["spurious_retrans"] >= 10, lossy
    status, _ = net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")
    assert status == 200


def test_tcp_and_probe_rtt_agree_with_ping(net):
    tcp_id = apply_everywhere(net, {"name": "tcp-rtt", "kind": "tcp_health", "top_k": 20,
                                    "report_interval": 1.0}, AGENTS)
    mesh_id = apply_everywhere(net, {"name": "mesh-rtt", "kind": "path_health",
                                     "peers": ["h2", "h4"], "probe_rate": 10,
                                     "report_interval": 1.0}, AGENTS)
    secs = 20
    h2, h4 = net.net.get("h2"), net.net.get("h4")
    server = h4.popen(["iperf3", "-s", "-1", "-p", "5303"])
    wait_listening(h4, 5303)
    # paced in writes of one segment: iperf3's default 128 KB writes would queue
    # behind themselves (see the module docstring)
    client = h2.popen(["iperf3", "-c", h4.IP(), "-p", "5303", "-t", str(secs + 2),
                       "-b", "5M", "-l", "1448"])
    ping = h2.popen(["ping", "-i", "0.1", "-w", str(secs), h4.IP()], stdout=subprocess.PIPE,
                    text=True)
    # the minimum of 200 pings sits above that of the flow's thousands of RTT samples:
    # 1,000 more pings for it
    fast = h2.popen(["ping", "-q", "-i", "0.02", "-w", str(secs), h4.IP()],
                    stdout=subprocess.PIPE, text=True)
    flows: dict[float, dict] = {}
    probe_p50: dict[float, float] = {}
    try:
        end = time.time() + secs
        time.sleep(1.5)
        while time.time() < end - 1:
            res = result(net, tcp_id)
            flow = data_flow(res, "h2", 5303)
            if flow is not None and flow["rtt_ms"] > 0:
                flows[res["interval_end"]] = flow
            res = result(net, mesh_id)
            row = next((r for r in (res or {}).get("pairs", [])
                        if {r["src"], r["dst"]} == {"h2", "h4"}
                        and (r.get("rtt_ms") or {}).get("p50")), None)
            if row is not None:
                probe_p50[res["interval_end"]] = row["rtt_ms"]["p50"]
            time.sleep(0.5)
        out, _ = ping.communicate(timeout=30)
        fast_out, _ = fast.communicate(timeout=30)
    finally:
        for proc in (ping, fast, client, server):
            stop_process(proc)
    pings = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    assert len(pings) >= 10 * secs // 2 and len(flows) >= 8 and len(probe_p50) >= 8, \
        (len(pings), flows, probe_p50)
    fast_min = re.search(r"(\d+) received.*\n.*= ([\d.]+)/", fast_out)
    assert fast_min, fast_out
    ping_ms, ping_min = statistics.median(pings), min(min(pings), float(fast_min[2]))
    rtts = [f["rtt_ms"] for f in flows.values()]
    tcp_ms = statistics.median(rtts)
    min_rtt = flows[max(flows)]["min_rtt_ms"]
    probe_ms = statistics.median(probe_p50.values())
    print(f"\nsame {secs} s, h2 -> h4 ({len(pings)} + {fast_min[1]} pings, {len(flows)} "
          f"tcp_health and {len(probe_p50)} path_health intervals): ping min {ping_min:.3f} "
          f"ms ({min(pings):.3f} of the first {len(pings)}), median "
          f"{ping_ms:.3f}, mean {statistics.fmean(pings):.3f}; tcp min_rtt_ms {min_rtt:.3f} "
          f"({min_rtt / ping_min:.2f} x ping's min); tcp rtt_ms median {tcp_ms:.3f} "
          f"({tcp_ms / ping_ms:.2f} x ping's median); probe p50 median {probe_ms:.3f} "
          f"({probe_ms / ping_ms:.2f} x)")
    # the path's RTT without any queue, like with like: TCP's min RTT against ping's
    assert 0.8 * ping_min <= min_rtt <= 1.2 * ping_min, (min_rtt, ping_min)
    # the probes are echoed in the kernel, as ping is: 0.89 and 1.26 times ping's median
    # in two runs here (1.8 times with the user-space echo, which this bound catches)
    assert ping_ms / 1.5 <= probe_ms <= 1.5 * ping_ms, (probe_ms, ping_ms)
    # the smoothed RTT adds the flow's own queue and ACK timing to the path's and averages
    # a heavy tail (module docstring): never below its min RTT, 1.3 to 5.1 times ping's
    # median here; the bound catches a unit or a field error (1,000 times)
    assert all(f["min_rtt_ms"] <= f["rtt_ms"] for f in flows.values()), flows
    assert ping_min * 0.8 <= tcp_ms <= 20 * ping_ms, (tcp_ms, ping_ms)
    for task_id in (tcp_id, mesh_id):
        assert net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")[0] == 200
