"""The monitor's flow path without NFQUEUE: MonitorCore + FlowTask + a UDP collector.

Packets are real IPv4 headers parsed by the monitor's own batch parser; the
collector is a UDP socket on loopback whose messages are decoded with the
RFC 7011 reader of ``test_ipfix``.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from host_agent.flows.export import Exporter
from host_agent.monitor.core import MonitorCore
from measure_model.task import parse_task
from measure_model.wire import ipfix
from testing.packets import decode_ipfix, ipv4, tcp_flagged, udp

pytestmark = pytest.mark.unit


@pytest.fixture
def collector():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(65535))
    except TimeoutError:
        return out


def entry(port: int, **fields) -> dict:
    """An ``add_flows`` entry as the agent sends it (literal addresses: none resolved)."""
    fields.setdefault("export", [{"collector": f"127.0.0.1:{port}"}])
    task = parse_task({"name": "f", "kind": "flows", "max_flows": 16, "idle_timeout": 2,
                       **fields}, "test")
    return {"task": task.to_dict(), "addresses": [None] * len(task.export or ())}


def test_monitor_exports_fin_idle_and_removal_records(collector):
    port = collector.getsockname()[1]
    core = MonitorCore()
    core.handle({"op": "add_sketch", "sketch": 1, "slot": 0}, 100.0)
    core.handle({"op": "add_flows", "sketch": 1, "entry": entry(port)}, 100.0)
    syn = ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(40000, 80, 0x02))
    fin = ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(40000, 80, 0x11))
    dgram = ipv4("10.0.0.3", "10.0.0.2", 17, udp(5000, 53) + bytes(100))
    core.ingest([syn, dgram, dgram], [1, 1, 1], 100.0)
    core.ingest([fin, dgram], [1, 1], 100.5)         # FIN: TCP record goes out now
    templates: dict = {}
    recs = [r for m in received(collector) for r in decode_ipfix(m, templates)[1]]
    assert len(recs) == 1
    assert (recs[0][7], recs[0][11], recs[0][4], recs[0][2], recs[0][6]) == (40000, 80, 6, 2,
                                                                             0x13)
    assert recs[0][1] == len(syn) + len(fin) and recs[0][136] == ipfix.END_OF_FLOW
    core.tick(101.0)
    assert received(collector) == []                   # UDP flow not idle yet
    core.tick(103.0)                                   # idle for 2.5 s
    (msg,) = received(collector)
    (_, seq, domain), (rec,) = decode_ipfix(msg, templates)
    assert seq == 1 and domain == 1
    assert (rec[8], rec[2], rec[1], rec[136]) == (0x0A000003, 3, 3 * len(dgram), ipfix.END_IDLE)
    assert rec[152] == 100_000 and rec[153] == 100_500
    core.ingest([dgram], [1], 104.0)
    stats = core.handle({"op": "stats"}, 104.0)
    assert stats["flows"]["1"]["flows"] == 1 and stats["cpu_seconds"] > 0
    assert stats["flows"]["1"]["exporters"][0]["records"] == 2
    assert core.handle({"op": "flows_top", "sketch": 1, "n": 5}, 104.0)[0]["packets"] == 1
    core.handle({"op": "remove_sketch", "sketch": 1}, 105.0)   # forced end: flushed
    (msg,) = received(collector)
    (_, seq, _), (rec,) = decode_ipfix(msg, templates)
    assert seq == 2 and rec[136] == ipfix.END_FORCED and rec[2] == 1


def test_an_unreachable_collector_is_counted_and_never_raises(collector):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()                                      # nothing listens: ICMP port unreachable
    core = MonitorCore()
    core.handle({"op": "add_sketch", "sketch": 1, "slot": 0}, 0.0)
    targets = [{"collector": f"127.0.0.1:{port}"},
               {"collector": f"127.0.0.1:{collector.getsockname()[1]}", "format": "netflow9"},
               {"collector": "no-such-host.invalid:4739"}]
    core.handle({"op": "add_flows", "sketch": 1, "entry": entry(0, export=targets,
                                                                  idle_timeout=1)}, 0.0)
    dgram = ipv4("10.0.0.3", "10.0.0.2", 17, udp(5000, 53))
    for t in range(6):
        core.ingest([dgram], [1], float(10 * t))
        core.tick(float(10 * t + 2))
    flows = core.handle({"op": "stats"}, 60.0)["flows"]["1"]
    bad, good, unknown = flows["exporters"]
    assert good["errors"] == 0 and good["records"] == 6 and len(received(collector)) >= 6
    assert bad["errors"] >= 1 and "refused" in bad["last_error"].lower()
    assert bad["records"] + bad["records_dropped"] == 6
    assert unknown["errors"] >= 1 and unknown["records_dropped"] == 6 and not unknown["connected"]
    assert core.errors == 0


def test_exporter_resends_templates_after_a_failure(collector):
    exp = Exporter(f"127.0.0.1:{collector.getsockname()[1]}", "ipfix", domain=9, now=0.0)
    empty = {"packets": np.array([], np.uint64)}
    exp.export(empty, 0.0)                            # templates only
    assert len(received(collector)) == 1
    exp.export(empty, 1.0)
    assert received(collector) == []                  # not due again yet
    exp._failed("simulated", 2.0)
    exp.export(empty, 8.0)                            # reconnects after RETRY_S, re-sends
    assert len(received(collector)) == 1 and exp.describe()["errors"] == 1


def test_the_agent_resolves_collector_names_for_the_monitor():
    from host_agent.agent import flows_entry, resolve_collector

    assert resolve_collector("localhost:4739") in ("127.0.0.1", "::1")
    assert resolve_collector("no-such-host.invalid:4739") is None
    task = parse_task({"name": "f", "kind": "flows",
                       "export": [{"collector": "127.0.0.1:4739"},
                                  {"collector": "no-such-host.invalid:1",
                                   "format": "netflow9"}]}, "test")
    entry = flows_entry(task)
    assert entry == {"task": task.to_dict(), "addresses": ["127.0.0.1", None]}
    core = MonitorCore()
    core.handle({"op": "add_sketch", "sketch": 4, "slot": 0}, 0.0)
    core.handle({"op": "add_flows", "sketch": 4, "entry": entry}, 0.0)
    with pytest.raises(ValueError, match="add_flows needs a task of kind flows"):
        core.handle({"op": "add_flows", "sketch": 4, "entry": {
            "task": parse_task({"name": "c", "kind": "counter"}, "t").to_dict()}}, 0.0)
    exp = Exporter("no-such-host.invalid:1", "netflow9", domain=1, now=0.0, address=None)
    exp.export({"packets": np.array([1])} | {c: np.array([0]) for c in ipfix_columns()}, 0.0)
    assert exp.describe()["last_error"] == "no-such-host.invalid:1: name does not resolve"


def ipfix_columns() -> list[str]:
    return [e.column for e in ipfix.TEMPLATE_V4 if e.column != "packets"]


def test_a_flows_snapshot_times_its_listed_flows_from_the_cache():
    """The flows task's counter snapshot carries each listed flow's first and last time
    seen in the flow cache (what ``GET flows`` shows as duration)."""
    from measure_model.task import flow_counter

    task = parse_task({"name": "f", "kind": "flows"}, "test")
    core = MonitorCore()
    core.handle({"op": "add_sketch", "sketch": 1, "slot": 0, "counters": {
        "1": {"task": flow_counter(task).to_dict(), "candidate_divisor": 1}}}, 100.0)
    core.handle({"op": "add_flows", "sketch": 1,
                 "entry": {"task": task.to_dict(), "addresses": []}}, 100.0)
    a = ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53) + bytes(100))
    b = ipv4("10.0.0.3", "10.0.0.2", 17, udp(6000, 53) + bytes(10))
    core.ingest([a, b], [1, 1], 100.0)
    core.ingest([a], [1], 107.5)
    snap = core.handle({"op": "query", "sketch": 1, "counter": 1, "method": "snapshot"}, 108.0)
    assert [k for k, _ in snap["top_k"]] == ["10.0.0.1,10.0.0.2,udp,5000,53",
                                             "10.0.0.3,10.0.0.2,udp,6000,53"]
    assert snap["flow_times"] == {"10.0.0.1,10.0.0.2,udp,5000,53": [100.0, 107.5],
                                  "10.0.0.3,10.0.0.2,udp,6000,53": [100.0, 100.0]}
