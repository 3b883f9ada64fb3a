"""Counter: increments, heavy hitters against exact counts, windows on a fake clock, scans."""

from __future__ import annotations

import json
from collections import Counter as Exact
from dataclasses import replace

import numpy as np
import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from measure_model.fields import FieldError
from measure_model.packet.headers import V4_MAPPED
from measure_model.packet.keys import HeaderBatch, format_key, parse_key
from measure_model.task import Task, counter_task
from testing.packets import PACKETS

pytestmark = pytest.mark.unit

IP = 0x0A000000  # 10.0.0.0


def batch(src, dst=5, proto=17, sport=1000, dport=2000, length=100,
          flags=0x02) -> HeaderBatch:
    """Synthetic packets; TCP ones are opening SYNs unless ``flags`` says otherwise."""
    n = len(src)

    def col(v):
        return np.broadcast_to(np.asarray(v), (n,))

    return HeaderBatch.from_arrays(IP + np.asarray(src), IP + col(dst), col(proto), col(sport),
                                   col(dport), col(length), tcp_flags=col(flags))


def test_every_key_type_and_increment_on_parsed_packets():
    parsed = HeaderBatch.from_payloads(PACKETS + PACKETS[:1])
    for key in ("src", "src_dst", "dport", "proto", "five_tuple", "dst_dport"):
        pkt = Counter(CounterSpec(key=key, increment="pkt"), now=0)
        byte = Counter(CounterSpec(key=key, increment="bytes"), now=0)
        pkt.update(parsed, 0.1)
        byte.update(parsed, 0.1)
        assert (pkt.packets, pkt.bytes, pkt.total) == (4, 3136, 4)
        assert (byte.packets, byte.bytes, byte.total) == (4, 3136, 3136)
        assert byte.spec.increment == "bytes"
        first = pkt.window(0.2)["counts"]
        assert sum(first.values()) == 4
        for key_str, count in first.items():
            assert pkt.estimate(key_str) == count
        expected: Exact = Exact()
        for i in range(4):
            expected[_key_of(parsed, key, i)] += int(parsed.length[i])
        assert byte.window(0.2)["counts"] == dict(expected)


def _key_of(parsed: HeaderBatch, key: str, i: int) -> str:
    one = HeaderBatch.from_arrays(parsed.src[i:i + 1], parsed.dst[i:i + 1],
                                  parsed.proto[i:i + 1], parsed.sport[i:i + 1],
                                  parsed.dport[i:i + 1], parsed.length[i:i + 1])
    c = Counter(CounterSpec(key=key), now=0)
    c.update(one, 0)
    return next(iter(c.window(0)["counts"]))


def test_five_tuple_counts_by_exact_key():
    parsed = HeaderBatch.from_payloads(PACKETS * 3)
    c = Counter(CounterSpec(key="five_tuple", increment="bytes", threshold=0.04), now=0)
    c.update(parsed, 0)
    assert c.heavy_hitters() == {"10.0.0.1,10.0.0.2,udp,5001,5201": 4500,
                                 "10.0.0.6,10.0.0.5,icmp,0,0": 252}
    assert c.estimate("10.0.0.3,10.0.0.2,6,40000,80") == 156


def zipf_keys(n: int, flows: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    return rng.choice(flows, size=n, p=p / p.sum())


def test_heavy_hitters_no_false_negatives_no_stale_entries():
    stream = zipf_keys(100_000, 20_000, 1.0, seed=1)
    spec = CounterSpec(key="src", threshold=0.01, width=1024, depth=4, max_candidates=200)
    c = Counter(spec, now=0)
    exact: Exact = Exact()
    for step, i in enumerate(range(0, stream.shape[0], 256)):
        part = stream[i:i + 256]
        c.update(batch(part), now=step * 0.001)
        exact.update(part.tolist())
        if step % 50 == 0 or i + 256 >= stream.shape[0]:
            threshold = 0.01 * c.total
            hh = c.heavy_hitters()
            truth = {format_key("src", V4_MAPPED | IP + k)
                     for k, v in exact.items() if v >= threshold}
            assert truth <= set(hh)  # no false negatives
            for key, est in hh.items():  # no stale entries: fresh estimate >= current threshold
                assert est == c.estimate(key) >= threshold
                assert est >= exact[(parse_key("src", key) & 0xFFFFFFFF) - IP]
    assert len(c.candidates()) <= 200
    # an early burst that was heavy when the total was small is gone now
    burst = Counter(CounterSpec(key="src", threshold=0.5), now=0)
    burst.update(batch([1] * 10), 0)
    assert burst.heavy_hitters() == {"10.0.0.1": 10}
    burst.update(batch(list(range(2, 102)) * 5), 0)
    assert burst.heavy_hitters() == {}
    assert burst.candidates() == {}


def test_top_k_without_threshold_and_absolute_threshold():
    c = Counter(CounterSpec(key="dport", top_k=3, max_candidates=5), now=0)
    ports = [80] * 50 + [443] * 30 + [22] * 20 + [53] * 10 + list(range(1000, 1100))
    b = batch([1] * len(ports), dport=np.array(ports))
    c.update(b, 0)
    assert c.top_k() == [["80", 50], ["443", 30], ["22", 20]]
    assert c.heavy_hitters() == {"80": 50, "443": 30, "22": 20}
    assert len(c.candidates()) == 5
    a = Counter(CounterSpec(key="dport", threshold_abs=25, candidate_divisor=5), now=0)
    a.update(b, 0)
    assert a.heavy_hitters() == {"80": 50, "443": 30}
    assert a.candidates() == {"80": 50, "443": 30, "22": 20, "53": 10}
    assert a.threshold_dict() == {"absolute": 25.0, "divisor": 5}


def test_tumbling_window_with_fake_clock():
    c = Counter(CounterSpec(key="src", window_length=2.0, window_mode="tumbling"), now=100.0)
    c.update(batch([1, 1, 2]), 100.5)
    c.update(batch([3]), 101.9)
    w = c.window(101.95)
    assert (w["start"], w["counts"], w["distinct"], w["previous"]) == (
        100.0, {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 1}, 3, None)
    c.update(batch([4, 4]), 102.0)
    w = c.window(103.0)
    assert (w["start"], w["counts"], w["distinct"]) == (102.0, {"10.0.0.4": 2}, 1)
    assert w["previous"]["start"] == 100.0
    assert w["previous"]["counts"] == {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 1}
    w = c.window(107.0)  # two windows without traffic
    assert (w["start"], w["counts"], w["previous"]["start"], w["previous"]["counts"]) == (
        106.0, {}, 104.0, {})
    assert c.total == 6  # totals are not windowed


def test_sliding_window_with_fake_clock():
    c = Counter(CounterSpec(key="src", window_length=1.0, window_mode="sliding"), now=0.0)
    c.update(batch([1]), 10.05)   # sub-bucket 100
    c.update(batch([2]), 10.55)   # sub-bucket 105
    c.update(batch([3, 3]), 10.95)   # sub-bucket 109
    w = c.window(10.99)
    assert (w["mode"], w["start"], w["distinct"]) == ("sliding", 10.0, 3)
    assert w["counts"] == {"10.0.0.3": 2, "10.0.0.1": 1, "10.0.0.2": 1}
    w = c.window(11.02)  # sub-bucket 100 slid out
    assert w["counts"] == {"10.0.0.3": 2, "10.0.0.2": 1}
    assert w["start"] == pytest.approx(10.1)
    assert c.window(11.6)["counts"] == {"10.0.0.3": 2}
    assert c.window(30.0)["counts"] == {}


def test_window_key_bound_sets_truncated_and_keeps_largest():
    c = Counter(CounterSpec(key="src", max_window_keys=10, top_k=5, max_candidates=10), now=0)
    c.update(batch([1] * 5 + list(range(2, 60))), 0.1)
    for i in range(10):
        c.update(batch(list(range(100 + 20 * i, 120 + 20 * i))), 0.2)
    w = c.window(0.5)
    assert w["truncated"] is True
    assert len(w["counts"]) == 10 and w["counts"]["10.0.0.1"] == 5
    assert abs(w["distinct"] - 258) <= 0.1 * 258


def test_port_scan_is_one_query():
    c = Counter(CounterSpec(key="src_dport", scan=True, window_length=1.0), now=0)
    ports = np.arange(8008, 8093)  # nc -z 10.0.0.5 8008-8092: 85 ports
    c.update(batch(np.full(85, 6), dst=5, proto=6, dport=ports), 0.3)
    c.update(batch([1, 1], dst=5, proto=1, dport=0), 0.4)  # ICMP is never a probe
    c.update(batch([6], dst=7, proto=6, dport=8008), 0.5)
    c.update(batch([2, 2], dst=5, proto=17, sport=40000, dport=[53, 161]), 0.5)  # UDP probes
    s = c.scan(0.6)
    assert list(s) == ["10.0.0.6", "10.0.0.2"]
    assert s["10.0.0.6"]["ports"] == list(range(8008, 8093))
    assert s["10.0.0.6"]["dsts"] == ["10.0.0.5", "10.0.0.7"]
    assert s["10.0.0.2"] == {"ports": [53, 161], "dsts": ["10.0.0.5"], "truncated": False}
    assert c.scan(1.1) == s  # the window that just ended is still reported
    assert c.scan(2.6) == {}
    assert Counter(CounterSpec(), now=0).scan(0) == {}


def test_replies_are_never_probes_so_the_target_is_not_a_scanner():
    """h1 sends 45 SYNs to closed ports of h5; h5 answers each with RST+ACK (and
    an open one with SYN+ACK); a DNS server answers clients' ephemeral ports."""
    c = Counter(CounterSpec(key="src_dport", scan=True, window_length=1.0), now=0)
    eph = np.arange(40000, 40045)
    c.update(batch(np.full(45, 1), dst=5, proto=6, sport=eph, dport=np.arange(1, 46)), 0.1)
    c.update(batch(np.full(44, 5), dst=1, proto=6, sport=np.arange(1, 45), dport=eph[:44],
                   flags=0x14), 0.1)  # RST+ACK
    c.update(batch([5], dst=1, proto=6, sport=45, dport=eph[44], flags=0x12), 0.1)  # SYN+ACK
    c.update(batch([5, 5], dst=1, proto=6, sport=3, dport=[40100, 40101], flags=0x04), 0.1)
    c.update(batch(np.full(30, 9), dst=4, proto=17, sport=53, dport=np.arange(50000, 50030)),
             0.2)  # DNS answers
    s = c.scan(0.3)
    assert list(s) == ["10.0.0.1"] and len(s["10.0.0.1"]["ports"]) == 45


def test_a_scan_straddling_a_window_boundary_is_counted_whole():
    c = Counter(CounterSpec(key="src_dport", scan=True, window_length=1.0), now=0)
    c.update(batch(np.full(13, 6), dst=5, proto=6, dport=np.arange(100, 113)), 4.95)
    c.update(batch(np.full(12, 6), dst=5, proto=6, dport=np.arange(113, 125)), 5.05)
    for now in (5.06, 5.6, 6.4):  # any report until one window after the scan has ended
        assert c.scan(now)["10.0.0.6"]["ports"] == list(range(100, 125)), now
    assert c.scan(7.1) == {}
    # a count never spans more than one window length: 15 ports in each of two
    # windows, 1 s apart, are 15, not 30
    c.update(batch(np.full(15, 7), dst=5, proto=6, dport=np.arange(200, 215)), 10.1)
    c.update(batch(np.full(15, 7), dst=5, proto=6, dport=np.arange(300, 315)), 11.2)
    assert len(c.scan(11.3)["10.0.0.7"]["ports"]) == 15


def test_a_late_report_still_sees_the_scan_within_the_report_interval():
    c = Counter(CounterSpec(key="src_dport", scan=True, window_length=1.0, scan_horizon=5.0),
                now=0)
    c.update(batch(np.full(25, 6), dst=5, proto=6, dport=np.arange(100, 125)), 0.2)
    assert len(c.scan(5.5)["10.0.0.6"]["ports"]) == 25  # 5 s report interval, taken late
    assert c.scan(8.0) == {}


def test_a_port_scan_task_lists_each_scan_in_two_reports_at_least():
    """Reports are taken just after each whole report interval; a scan stays listed
    for two of them, so one late or incomplete report cannot hide it."""
    task = counter_task({"key": "src_dport", "scan_ports": 20, "window": {"length": 1.0}}, "c")
    task = replace(task, report_interval=1.0)
    assert task.kind == "port_scan"
    for at in (0.02, 0.2, 0.49, 0.5, 0.8, 0.98):
        c = Counter(CounterSpec.from_task(task), now=0)
        c.update(batch(np.full(25, 6), dst=5, proto=6, dport=np.arange(100, 125)), 10 + at)
        ports = [len(c.scan(t).get("10.0.0.6", {}).get("ports", []))
                 for t in (11.05, 12.05, 13.05, 14.05)]
        assert ports[:2] == [25, 25] and ports[3] == 0, (at, ports)


def test_snapshot_shape_is_json():
    c = Counter(CounterSpec(key="src", threshold=0.3, scan=True), now=50.0)
    c.update(batch([1, 1, 1, 2]), 50.2)
    snap = json.loads(json.dumps(c.snapshot(50.5, host="h2")))
    assert set(snap) == {"key", "increment", "packets", "bytes", "total", "sketch", "candidates",
                         "heavy_hitters", "top_k", "threshold", "limits", "window", "scan",
                         "distinct", "missed", "unparsed", "covered", "missing",
                         "generated_at", "oldest"}
    assert snap["heavy_hitters"] == {"10.0.0.1": 3}
    assert snap["top_k"] == [["10.0.0.1", 3], ["10.0.0.2", 1]]  # the largest, over 0.3 or not
    assert snap["threshold"] == {"fraction": 0.3}
    assert snap["window"]["counts"] == {"10.0.0.1": 3, "10.0.0.2": 1}
    assert snap["distinct"]["estimate"] == 2 and snap["distinct"]["precision"] == 12
    assert snap["covered"] == ["h2"] and snap["generated_at"] == 50.5
    assert "sketch" not in c.snapshot(50.5, include_sketch=False)


@pytest.mark.parametrize(("body", "message"), [
    ({"key": "srcdst"}, "key 'srcdst' is not one of src, dst, src_dst, sport, dport, "
                        "src_dport, dst_dport, proto, five_tuple"),
    ({"key": "src", "increment": "packets"}, "increment 'packets' is not one of pkt, bytes"),
    ({"key": "src", "threshold": 0.1, "threshold_abs": 5},
     "threshold and threshold_abs are exclusive: give one of them"),
    ({"key": "src", "threshold": 1.5}, "threshold 1.5 is out of range (0, 1]"),
    ({"key": "src", "threshold": "0.1"}, "threshold must be a number, not str"),
    ({"key": "src", "threshold_abs": 0}, "threshold_abs 0 is out of range 1..4611686018427387904"),
    ({"key": "src", "top_k": 0}, "top_k 0 is out of range 1..1000"),
    ({"key": "src", "window": {"length": 0.01}}, "window.length 0.01 is out of range [0.05, 3600]"),
    ({"key": "src", "window": {"mode": "hopping"}},
     "window.mode 'hopping' is not one of tumbling, sliding"),
    ({"key": "src", "sketch": {"width": 1000}}, "sketch.width 1000 is not a power of two"),
    ({"key": "src", "colour": 1}, "unknown field 'colour'"),
    ({"increment": "pkt"}, "key is required"),
])
def test_counter_bodies_are_checked_by_the_task_table(body, message):
    """A counter is checked once, by measure_model; CounterSpec only derives."""
    with pytest.raises(FieldError) as err:
        counter_task(body, "c")
    assert str(err.value) == message


def test_spec_from_task_derives_the_engine_parameters():
    task = counter_task({"key": "src_dport", "scan_ports": 9, "threshold_abs": 50, "top_k": 7,
                         "window": {"length": 2.0, "mode": "sliding"},
                         "sketch": {"width": 1024, "depth": 3, "seed": 5}}, "c")
    spec = CounterSpec.from_task(task, candidate_divisor=4)
    assert spec == CounterSpec(key="src_dport", increment="pkt", threshold=None,
                               threshold_abs=50, top_k=7, window_length=2.0,
                               window_mode="sliding", width=1024, depth=3, seed=5, scan=True,
                               candidate_divisor=4, scan_horizon=10.0)  # 2 report intervals
    assert CounterSpec.from_task(counter_task({"key": "src"}, "c")).threshold == 0.05
    with pytest.raises(ValueError, match="kind bandwidth is not counted by agents"):
        CounterSpec.from_task(Task.from_dict({"name": "b", "kind": "bandwidth", "src": "h1",
                                              "dst": "h2"}))


def test_unparsed_payloads_counted_and_bad_key_query():
    c = Counter(CounterSpec(), now=0)
    c.update(HeaderBatch.from_payloads([b"junk", PACKETS[0]]), 0)
    assert (c.packets, c.unparsed) == (1, 1)
    with pytest.raises(ValueError) as err:
        c.estimate("10.0.0")
    assert str(err.value) == "'10.0.0' is not an IPv4 address"


def test_aggregate_matches_exact_counts():
    from host_agent.counters.aggregate import aggregate

    rng = np.random.default_rng(5)
    keys = rng.integers(0, 50, 1000).astype(np.uint64)
    weights = rng.integers(40, 1500, 1000)
    uniq, first, counts = aggregate(keys)
    _, _, sums = aggregate(keys, weights)
    exact_n, exact_w = Exact(keys.tolist()), Exact[int]()
    for k, w in zip(keys.tolist(), weights.tolist(), strict=True):
        exact_w[k] += w
    assert uniq.tolist() == sorted(exact_n)
    assert counts.tolist() == [exact_n[k] for k in uniq.tolist()]
    assert sums.tolist() == [exact_w[k] for k in uniq.tolist()]
    assert (keys[first] == uniq).all()
    empty = aggregate(np.zeros(0, np.uint64), np.zeros(0, np.int64))
    assert [a.shape[0] for a in empty] == [0, 0, 0]


def test_memory_bytes_counts_every_array_the_counter_holds():
    spec = CounterSpec(key="src", width=1024, depth=4, scan=True, threshold=None)
    c = Counter(spec, now=0.0)
    empty = c.memory_bytes
    assert empty == 1024 * 4 * 8 + 4096 + 1024  # cells, all-time HLL, the bucket's HLL
    c.update(batch(np.arange(5000), sport=40000), 0.1)  # UDP probes
    # 5,000 fresh keys (addresses are 2 words): in the window (key 8, full key 16,
    # count 8), the all-time HLL's queue (8), one (src, dport) scan pair (3 words) and
    # one (src, dst) pair (4 words) in a scan bucket (with its HLL); candidates: the top
    # 1,000 (key 8, full key 16) once the set outgrew 1,500
    assert c.memory_bytes - empty == 5000 * (32 + 8 + 24 + 32) + 1000 * 24 + 1024
    # the next window: the previous is kept
    c.update(batch(np.arange(5000, 10000), sport=40000), 1.5)
    assert c.memory_bytes - empty >= 2 * 5000 * (32 + 56) + 10000 * 8 + 1024


def test_both_engines_are_the_monitors_counter():
    from host_agent.counters.protocol import Counter as CounterProtocol
    from host_agent.monitor.core import default_counter_factory
    from measure_model.task import Task

    for extra in ({}, {"memory": 65536}):
        task = Task.from_dict({"name": "c", "kind": "heavy_hitters", **extra}, "t")
        counter = default_counter_factory({"task": task.to_dict()}, 0.0)
        assert isinstance(counter, CounterProtocol)
        assert counter.window(0.0) == {} or "counts" in counter.window(0.0)
        assert counter.scan(0.0) == {}
