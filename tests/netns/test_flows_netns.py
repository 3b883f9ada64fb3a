"""Flow records from a real agent to a real collector (nfdump's nfcapd), in namespaces.

The receiver namespace runs the agent (iptables + NFQUEUE + monitor) and
``nfcapd``; the sender opens a TCP connection (data, then FIN), a short UDP
flow, a long UDP flow (longer than the active timeout) and a sweep of 40
UDP source ports through a cache of 16 flows (evictions). Ground truth is
iptables accounting rules per flow, inserted in front of the agent's hook.
``nfdump -r`` lists the records; their sums per flow must equal the rule
counters exactly, with the right ports, protocol and flags, times inside the
test window, and every record received within the idle timeout of its last
packet (at once for TCP after its FIN). The same records also go to a second
nfcapd as NetFlow v9 (same flows, counts and flags), and a third collector
that does not listen shows up in the agent's health while the monitor
keeps running.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from measure_model.task import parse_task
from testing.agentproc import CAPTURES, capture_args
from testing.procs import free_port, wait_until

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("nfcapd") is None, reason="nfdump not installed")]

TCP_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=("", int(sys.argv[3])))
s.sendall(b"d" * int(sys.argv[4]))
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
s.close()
"""
TCP_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1)
c, _ = srv.accept()
while c.recv(65536):
    pass
c.close()
"""
UDP_FLOWS = """
import socket, sys, time
dst = sys.argv[1]
def flow(sport, dport, sizes, gap=0.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", sport))
    for size in sizes:
        s.sendto(b"u" * size, (dst, dport))
        if gap:
            time.sleep(gap)
    s.close()
flow(41000, 5001, [100, 200, 300] * 10)                 # short flow: idle timeout
flow(41001, 5002, [64] * 45, gap=0.1)                    # 4.5 s > active timeout 2 s
for p in range(42000, 42040):                            # 40 flows through 16 slots
    flow(p, 5003, [50, 60, 70])
"""


def accounting(ns, spec: list[tuple[str, int, int]]) -> None:
    for proto, sport, dport in spec:
        ns.run(["iptables", "-w", "5", "-I", "INPUT", "1", "-s", "10.77.0.1", "-p", proto,
                "--sport", str(sport), "--dport", str(dport), "-m", "comment", "--comment",
                f"i17acct:{proto}:{sport}:{dport}"])


def counted(ns) -> dict[tuple[str, int, int], tuple[int, int]]:
    out = {}
    for line in ns.run(["iptables-save", "-c", "-t", "filter"]).stdout.splitlines():
        if "i17acct:" in line:
            pk, by = line[1:line.index("]")].split(":")
            tag = line.split("i17acct:")[1].split()[0].strip('"')
            proto, sport, dport = tag.split(":")
            out[(proto, int(sport), int(dport))] = (int(pk), int(by))
    return out


def collected(outdir) -> list[dict]:
    """Every record nfcapd wrote under ``outdir``, read back with ``nfdump -o json``."""
    files = glob.glob(str(outdir / "nfcapd.*"))
    assert files, f"nfcapd wrote nothing in {outdir}"
    records: list[dict] = []
    for path in files:
        out = subprocess.run(["nfdump", "-r", path, "-o", "json"], capture_output=True,
                             text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
        # a file nfcapd rotated to at a minute boundary after the last record is empty
        records += json.loads(out) if out.strip() and "No matching flows" not in out else []
    return records


def stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize("mode", CAPTURES)
def test_flow_records_reach_nfcapd_exactly(netns_factory, agent_factory, tmp_path, mode):
    snd, rcv = netns_factory.pair(offload_off=True)
    port, port9, dead = free_port(), free_port(), free_port()
    collectors = {}
    for name, p in (("ipfix", port), ("netflow9", port9)):
        outdir = tmp_path / name
        outdir.mkdir()
        collectors[name] = (outdir, rcv.popen(
            ["nfcapd", "-w", str(outdir), "-b", "127.0.0.1", "-p", str(p), "-t", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    ag = agent_factory(rcv, "h2", capture_args(mode))
    task = parse_task({"name": "fl", "kind": "flows", "filter": {"src": snd.ip},
                       "capture": mode,
                       "idle_timeout": 2, "active_timeout": 2, "max_flows": 16,
                       "export": [{"collector": f"127.0.0.1:{port}"},
                                  {"collector": f"127.0.0.1:{port9}", "format": "netflow9"},
                                  {"collector": f"127.0.0.1:{dead}", "format": "netflow9"}]},
                      "test").to_dict()
    ag.v1("PUT", "/tasks/1", task)
    sweep = [("udp", p, 5003) for p in range(42000, 42040)]
    flows = [("tcp", 40001, 7000), ("udp", 41000, 5001), ("udp", 41001, 5002), *sweep]
    accounting(rcv, flows)
    server = rcv.popen([sys.executable, "-c", TCP_SERVER, "7000"])
    t0 = time.time()
    wait_until(lambda: "7000" in rcv.run(["ss", "-ltn"]).stdout, timeout=10)
    snd.run([sys.executable, "-c", TCP_CLIENT, rcv.ip, "7000", "40001", "300000"], timeout=30)
    snd.run([sys.executable, "-c", UDP_FLOWS, rcv.ip], timeout=60)
    server.wait(10)
    truth = counted(rcv)
    assert truth[("tcp", 40001, 7000)][0] >= 5 and truth[("udp", 41001, 5002)] == (45, 45 * 92)

    last: list = []

    def drained():
        health = ag.v1("GET", "/health")
        last[:] = [health]
        caches = health["flows"].get("1", [])
        # empty and every flow exported: the eBPF path reads its map once a second, so an
        # empty cache alone may only mean that the sweep was not read yet
        return health if caches and caches[0]["flows"] == 0 \
            and caches[0]["records"] >= len(flows) else None

    try:
        health = wait_until(drained, timeout=15, interval=0.3, message="flow cache drained")
    except TimeoutError:
        raise AssertionError(f"{last}\n{ag.log()}") from None
    t1 = time.time()
    [cache] = health["flows"]["1"]  # one monitor (--queues 1)
    assert cache["evicted"] > 0 and cache["ended"] >= 1, f"{health}\n{ag.log()}"
    good, good9, bad = cache["exporters"]
    assert good["errors"] == 0 and good["records"] == cache["records"]
    assert good9["errors"] == 0 and good9["records"] == cache["records"]
    problem = health["export_problems"][0]
    assert problem["collector"] == f"127.0.0.1:{dead}" and problem["errors"] >= 1
    assert "refused" in problem["last_error"].lower()
    assert health["monitor"]["cpu_seconds"] > 0 and health["monitor"]["rss_bytes"] > 0
    assert all(m["alive"] for m in health["monitors"])

    ag.v1("DELETE", "/tasks/1")
    for _, proc in collectors.values():
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
    v9 = collected(collectors["netflow9"][0])
    records = collected(collectors["ipfix"][0])
    assert sorted((r["src_port"], r["dst_port"], r["in_packets"], r["in_bytes"], r["tcp_flags"])
                  for r in v9) == sorted((r["src_port"], r["dst_port"], r["in_packets"],
                                          r["in_bytes"], r["tcp_flags"]) for r in records)
    sums: dict[tuple[str, int, int], list[int]] = {}
    by_flow: dict[tuple[str, int, int], list[dict]] = {}
    for rec in records:
        key = ({6: "tcp", 17: "udp"}[rec["proto"]], rec["src_port"], rec["dst_port"])
        assert rec["src4_addr"] == snd.ip and rec["dst4_addr"] == rcv.ip
        acc = sums.setdefault(key, [0, 0])
        acc[0] += rec["in_packets"]
        acc[1] += rec["in_bytes"]
        by_flow.setdefault(key, []).append(rec)
        start, end, received = stamp(rec["first"]), stamp(rec["last"]), stamp(rec["received"])
        assert t0 - 0.05 <= start <= end <= t1 + 0.05
        assert received - end <= 2 + 1.0  # idle timeout + one expiry pass
    assert {k: tuple(v) for k, v in sums.items()} == {k: truth[k] for k in flows}
    tcp = by_flow[("tcp", 40001, 7000)]
    assert "F" in tcp[0]["tcp_flags"] and "S" in tcp[0]["tcp_flags"]
    assert stamp(tcp[0]["received"]) - stamp(tcp[0]["last"]) < 1.0  # FIN: exported at once
    long_parts = by_flow[("udp", 41001, 5002)]
    assert len(long_parts) >= 2  # 4.5 s of packets, active timeout 2 s
    assert all(stamp(r["last"]) - stamp(r["first"]) <= 2.0 + 0.6 for r in long_parts)
    assert len(records) >= len(flows)


@pytest.mark.parametrize("capture", CAPTURES)
def test_sampled_capture_counts_within_the_stated_bound(netns_factory, agent_factory, capture):
    from measure_model.sketch.sampling import describe
    from testing.agentproc import send_udp

    snd, rcv = netns_factory.pair()
    ag = agent_factory(rcv, "h2", capture_args(capture))
    for tid, mode, port in (("1", "random", 6001), ("2", "nth", 6002)):
        task = parse_task({"name": f"s{tid}", "kind": "counter", "key": "src",
                           "filter": {"src": snd.ip, "proto": "udp", "dport": port},
                           "sample": 0.1, "sample_mode": mode, "capture": capture},
                          "test").to_dict()
        ag.v1("PUT", f"/tasks/{tid}", task)
    sent = 4000
    send_udp(snd, rcv.ip, 6001, [60], sent, gap=0)
    send_udp(snd, rcv.ip, 6002, [60], sent, gap=0)
    rules = ag.rules()
    if capture == "nfqueue":
        assert "--mode random --probability 0.1" in rules and "--mode nth --every 10" in rules
    else:  # the program samples: no capture rule at all
        assert "--mode" not in rules

    def counted(sid: int) -> int:
        return ag.v1("GET", f"/sketches/{sid}/counters/1")["packets"]

    wait_until(lambda: counted(2) == sent // 10, timeout=10, message="nth: one in ten")
    sampled = counted(1)
    stated = describe(sampled, 0.1, "random")
    assert abs(stated["packets_estimate"] - sent) <= stated["packets_bound"], stated
    assert 0 < sampled < sent // 2
    health = ag.v1("GET", "/health")
    if capture == "nfqueue":  # only sampled packets were queued
        assert health["monitor"]["packets"] == sampled + sent // 10
    else:  # the monitor saw no packet: the program counted them
        assert health["monitor"]["packets"] == 0
    assert health["monitor"]["missed"] == 0


@pytest.mark.parametrize("mode", CAPTURES)
def test_agent_lists_its_active_flows(netns_factory, agent_factory, mode):
    from testing.agentproc import send_udp

    snd, rcv = netns_factory.pair()
    ag = agent_factory(rcv, "h2", capture_args(mode))
    ag.v1("PUT", "/tasks/7", parse_task({"name": "fl", "kind": "flows", "capture": mode,
                                         "filter": {"src": snd.ip, "proto": "udp"}},
                                        "test").to_dict())
    send_udp(snd, rcv.ip, 6100, [100], 30, gap=0)
    send_udp(snd, rcv.ip, 6101, [300], 10, gap=0)
    reply = wait_until(lambda: (r := ag.v1("GET", "/flows/7?top=5"))["flows"]
                       and len(r["flows"]) == 2 and r, timeout=10, message="two flows")
    first, second = reply["flows"]
    assert first["flow"].startswith(f"{snd.ip},{rcv.ip},udp,") and first["flow"].endswith(",6100")
    assert (first["packets"], first["bytes"]) == (30, 30 * 128)
    assert (second["packets"], second["bytes"]) == (10, 10 * 328)
    # the task's counter snapshot (what goes up the overlay) times the flows it lists
    # from the same flow cache: the controller's GET flows shows their duration from it
    sketch = next(sk for sk in ag.v1("GET", "/sketches") if sk["task"] == "7")
    snap = ag.v1("GET", f"/sketches/{sketch['id']}/counters/{sketch['counters'][0]['id']}")
    assert snap["flow_times"] == {f["flow"]: [f["first"], f["last"]] for f in reply["flows"]}
    assert all(0 <= f["last"] - f["first"] < 5 for f in reply["flows"])
    by_packets = ag.v1("GET", "/flows/7?by=packets&top=1")["flows"]
    assert [f["packets"] for f in by_packets] == [30]
    assert ag.get("/agent/v1/flows/7?top=0").json() == {
        "error": "query parameter 'top' must be an integer from 1 to 1000"}
    assert ag.get("/agent/v1/flows/9").status_code == 404
