"""IPv6 and passive (NFLOG) capture with the real agent, ip6tables and traffic.

Two namespaces on one veth with IPv4 and IPv6 addresses and permanent
neighbour entries (no neighbour discovery in the counts). Each test sends
packets of known sizes and checks the exact totals, the heavy hitters and
the rule counters, in NFQUEUE and in NFLOG mode.
"""

from __future__ import annotations

import signal
import sys

import pytest

from testing.agentproc import AgentProc, capture_args, snapshot_when, tcp_transfer, truth_rule
from testing.procs import wait_until

pytestmark = pytest.mark.netns

UDP_SENDER = """
import socket, sys, time
dst, port = sys.argv[1], int(sys.argv[2])
sizes = [int(x) for x in sys.argv[3].split(",")]
count = int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    for size in sizes:
        s.sendto(b"x" * size, (dst, port))
    time.sleep(0.001)
"""


def send_udp(ns, dst: str, port: int, sizes: list[int], count: int) -> None:
    ns.run([sys.executable, "-c", UDP_SENDER, dst, str(port), ",".join(map(str, sizes)),
            str(count)], timeout=60)


def rule6(ag: AgentProc, sketch: int, table: str = "ip6tables") -> tuple[int, int]:
    """Packets and bytes of the sketch's mark rule in ``table`` (summed over hooks)."""
    tag = f'"endhost-measure:{ag.name}:{sketch}"'
    pkts = nbytes = 0
    for line in ag.ns.run([f"{table}-save", "-c", "-t", "filter"]).stdout.splitlines():
        if tag in line:
            p, b = line[1:line.index("]")].split(":")
            pkts, nbytes = pkts + int(p), nbytes + int(b)
    return pkts, nbytes


def counted(ag: AgentProc, sketch: int, mode: str, truth: dict,
            table: str = "ip6tables") -> tuple[int, int]:
    """The sketch's mark-rule counters, or for eBPF (no capture rule) the ground truth's."""
    return truth[table]() if mode == "ebpf" else rule6(ag, sketch, table)


def agent_for(factory, ns, mode: str) -> AgentProc:
    """An agent; for eBPF its object is built first (tasks still name their capture)."""
    if mode == "ebpf":
        capture_args(mode)
    return factory(ns)


@pytest.fixture
def pair6(netns_factory):
    return netns_factory.pair(subnet="10.78.0", subnet6="fd78::")


@pytest.fixture(params=["nfqueue", "nflog", "ebpf"])
def mode(request) -> str:
    return request.param


def test_ping6_exact_totals_and_heavy_hitters(pair6, agent_factory, mode):
    a, b = pair6
    ag = agent_for(agent_factory, b, mode)
    truth = {"ip6tables": truth_rule(b, "-p", "ipv6-icmp", "-s", a.ip6, table="ip6tables")}
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmpv6", "src": a.ip6},
                                     "capture": mode,
                                     "counters": [{"key": "src", "increment": "pkt"},
                                                  {"key": "src_dst", "increment": "bytes"}]})
    assert sk["capture"] == mode
    out = a.run(["ping", "-6", "-c", "20", "-i", "0.01", "-s", "100", "-q", b.ip6]).stdout
    assert " 0% packet loss" in out
    snap = snapshot_when(ag, sk["id"], 1, 20)
    assert (snap["packets"], snap["bytes"], snap["total"]) == (20, 20 * 148, 20)
    assert snap["heavy_hitters"] == {a.ip6: 20}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    assert snap["monitor"]["capture"] == mode
    by = ag.v1("GET", f"/sketches/{sk['id']}/counters/2")
    assert by["heavy_hitters"] == {f"{a.ip6},{b.ip6}": 20 * 148}
    assert counted(ag, sk["id"], mode, truth) == (20, 20 * 148)
    assert rule6(ag, sk["id"], "iptables") == (0, 0)   # an IPv6 filter: ip6tables only
    nflog = ag.v1("GET", "/health")["monitors"][0]["nflog"]
    assert nflog["lost"] == 0 and nflog["packets"] == (20 if mode == "nflog" else 0)


def test_udp6_datagrams_of_known_sizes(pair6, agent_factory, mode):
    a, b = pair6
    ag = agent_for(agent_factory, b, mode)
    truth = {"ip6tables": truth_rule(b, "-p", "udp", "-s", a.ip6, "--dport", "7001:7003",
                                     table="ip6tables")}
    sk = ag.v1("POST", "/sketches", {
        "filter": {"proto": "udp", "src": a.ip6, "dport": "7001:7003"}, "capture": mode,
        "counters": [{"key": "dport", "increment": "pkt", "threshold": 0.3},
                     {"key": "src_dport", "increment": "bytes"}]})
    send_udp(a, b.ip6, 7001, [100, 300], 25)    # 50 packets of 148 and 348 bytes
    send_udp(a, b.ip6, 7002, [50], 5)           # 5 of 98
    send_udp(a, b.ip6, 7003, [1000], 45)        # 45 of 1048
    send_udp(a, b.ip6, 7999, [10], 10)          # outside the filter
    send_udp(a, b.ip, 7001, [10], 10)           # IPv4: outside the filter
    snap = snapshot_when(ag, sk["id"], 1, 100)
    assert snap["packets"] == 100
    assert snap["heavy_hitters"] == {"7001": 50, "7003": 45}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    expected = 25 * (148 + 348) + 5 * 98 + 45 * 1048
    by = ag.v1("GET", f"/sketches/{sk['id']}/counters/2?key={a.ip6},7003")
    assert (by["bytes"], by["total"], by["estimate"]["value"]) == (expected, expected, 45 * 1048)
    top = ag.v1("GET", f"/sketches/{sk['id']}/counters/2")["top_k"]
    assert top[0] == [f"{a.ip6},7003", 45 * 1048]
    assert counted(ag, sk["id"], mode, truth) == (100, expected)


def test_tcp6_counts_equal_rule_counters(pair6, agent_factory, mode):
    a, b = pair6
    ag = agent_for(agent_factory, b, mode)
    truth = {"ip6tables": truth_rule(b, "-p", "tcp", "--dport", "5202", table="ip6tables")}
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "tcp", "dport": 5202},
                                     "capture": mode,
                                     "counters": [{"key": "five_tuple", "increment": "bytes"}]})
    tcp_transfer(a, b, b.ip6, 5202, 300000, ipv6=True)
    pkts, nbytes = counted(ag, sk["id"], mode, truth)
    snap = snapshot_when(ag, sk["id"], 1, pkts)
    assert (snap["packets"], snap["bytes"]) == (pkts, nbytes)
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    assert nbytes > 300000 and rule6(ag, sk["id"], "iptables") == (0, 0)
    (key, value), = snap["top_k"]
    assert key.startswith(f"{a.ip6},{b.ip6},tcp,") and key.endswith(",5202") and value == nbytes


def test_one_task_counts_ipv4_and_ipv6_together(pair6, agent_factory, mode):
    a, b = pair6
    ag = agent_for(agent_factory, b, mode)
    truth = {"ip6tables": truth_rule(b, "-p", "udp", "--dport", "7100", table="ip6tables"),
             "iptables": truth_rule(b, "-p", "udp", "--dport", "7100")}
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "udp", "dport": 7100},
                                     "capture": mode,
                                     "counters": [{"key": "src", "increment": "bytes",
                                                   "threshold": 0.2}]})
    send_udp(a, b.ip6, 7100, [200], 30)    # 30 x 248
    send_udp(a, b.ip, 7100, [200], 20)     # 20 x 228
    snap = snapshot_when(ag, sk["id"], 1, 50)
    assert (snap["packets"], snap["bytes"]) == (50, 30 * 248 + 20 * 228)
    assert snap["heavy_hitters"] == {a.ip6: 30 * 248, a.ip: 20 * 228}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    assert counted(ag, sk["id"], mode, truth) == (30, 30 * 248)
    assert counted(ag, sk["id"], mode, truth, "iptables") == (20, 20 * 228)


def test_agent_sigkill_then_new_agent_removes_stale_ip6tables_rules(pair6, agent_factory):
    a, b = pair6
    ag = agent_factory(b)
    ag.v1("POST", "/sketches", {"filter": {"proto": "udp"}, "counters": [{"key": "src"}]})
    ag.v1("POST", "/sketches", {"filter": {"src": a.ip6}, "capture": "nflog"})
    ag.stop(signal.SIGKILL)
    stale = b.run(["ip6tables-save"]).stdout
    assert '"endhost-measure:h2:1"' in stale and '"endhost-measure:h2:2"' in stale
    assert "NFLOG" in stale and "NFQUEUE" in stale
    # fail-open: nothing listens on the queue or the log group, traffic still flows
    assert " 0% packet loss" in a.run(["ping", "-6", "-c", "3", "-i", "0.05", b.ip6]).stdout
    ag2 = agent_factory(b)
    for table in ("ip6tables-save", "iptables-save"):
        rules = b.run([table]).stdout
        assert ":h2:1" not in rules and ":h2:2" not in rules, table
        assert rules.count('"endhost-measure:h2:hook"') == 2, table
    assert "stale" in ag2.log()
    ag2.stop()
    for table in ("ip6tables-save", "iptables-save"):
        assert "endhost-measure" not in b.run([table]).stdout


def test_nflog_never_holds_traffic_and_counts_what_it_missed(pair6, agent_factory):
    """A stopped monitor: under NFQUEUE the queue would fill and packets wait;
    under NFLOG traffic flows untouched, the kernel drops copies once the
    socket buffer is full, and the agent reports exactly how many it missed."""
    import os

    a, b = pair6
    ag = agent_factory(b)
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "udp", "dport": 7200},
                                     "capture": "nflog",
                                     "counters": [{"key": "src", "increment": "pkt"}]})
    pid = ag.v1("GET", "/health")["monitors"][0]["pid"]
    sent = 100 * 1000
    os.kill(pid, signal.SIGSTOP)
    try:
        send_udp(a, b.ip6, 7200, [20] * 100, sent // 100)   # far more than the buffer holds
        out = a.run(["ping", "-6", "-c", "20", "-i", "0.01", "-q", b.ip6]).stdout
        assert " 0% packet loss" in out                     # nothing waits for the reader
    finally:
        os.kill(pid, signal.SIGCONT)
    assert rule6(ag, sk["id"])[0] == sent

    def settled():
        snap = ag.v1("GET", f"/sketches/{sk['id']}/counters/1")
        read = ag.v1("GET", "/health")["monitors"][0]["nflog"]
        last.append(read["packets"])
        if len(last) < 3 or len(set(last[-3:])) != 1 or snap["packets"] != read["packets"]:
            return None
        return snap, read

    last: list[int] = []
    wait_until(settled, timeout=20, interval=0.3, message="the reader has drained its backlog")
    # the next packets after the overflow reveal the gap in the sequence numbers
    send_udp(a, b.ip6, 7200, [20], 10)
    sent += 10
    last.clear()

    def accounted():
        # an open read's rule counters may be up to RULES_MAX_AGE (2 s) old, so
        # ``missed`` catches up with the last packets within that
        got = settled()
        return got if got and got[0]["packets"] + got[0]["missed"]["packets"] == sent \
            else None

    snap, read = wait_until(accounted, timeout=20, interval=0.3,
                            message="the reader has counted the last packets, each read or "
                                    "missed")
    assert snap["packets"] + snap["missed"]["packets"] == sent == rule6(ag, sk["id"])[0]
    assert 0 < snap["missed"]["packets"] < sent
    assert snap["missed"]["bytes"] == snap["missed"]["packets"] * 68
    assert read["lost"] == snap["missed"]["packets"], read   # the sequence gaps, exactly
