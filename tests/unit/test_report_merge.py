"""Merging counter snapshots: exact where the math allows, ValueError on anything bad."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter as Exact

import numpy as np
import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from measure_model.packet.headers import V4_MAPPED
from measure_model.packet.keys import HeaderBatch, format_key
from measure_model.sketch.countmin import CountMinSketch
from measure_model.sketch.hll import HyperLogLog
from measure_model.task import Task
from measure_model.wire import report

pytestmark = pytest.mark.unit

IP = 0x0A000000


def batch(src, dst=5, dport=80, length=100, sport=1000) -> HeaderBatch:
    src = np.asarray(src)
    n = src.shape[0]

    def col(v):
        return np.broadcast_to(np.asarray(v), (n,))

    return HeaderBatch.from_arrays(IP + src, IP + col(dst), col(17), col(sport), col(dport),
                                   col(length))


def run(spec: CounterSpec, stream: np.ndarray, now: float = 10.0, host: str | None = None,
        lengths: np.ndarray | None = None) -> dict:
    c = Counter(spec, now=now)
    for i in range(0, stream.shape[0], 256):
        c.update(batch(stream[i:i + 256], length=100 if lengths is None
                       else lengths[i:i + 256]), now)
    return json.loads(json.dumps(c.snapshot(now + 0.5, host=host)))


def zipf(n: int, flows: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    return rng.permutation(flows)[rng.choice(flows, size=n, p=p / p.sum())]


def test_plain_sketch_merge_equals_one_counter_over_union_stream():
    spec = CounterSpec(key="src", increment="bytes", threshold=0.02, conservative=False,
                       width=2048, depth=4, seed=5)
    parts = [zipf(20_000, 3_000, 1.1, seed=s) for s in range(5)]
    rng = np.random.default_rng(9)
    lengths = [np.asarray(rng.integers(40, 1500, p.shape[0])) for p in parts]
    snaps = [run(spec, p, host=f"h{i}", lengths=ln)
             for i, (p, ln) in enumerate(zip(parts, lengths, strict=True))]
    merged = report.merge_all(snaps)
    union = run(spec, np.concatenate(parts), lengths=np.concatenate(lengths))
    cells = CountMinSketch.from_wire(merged["sketch"]).cells
    assert np.array_equal(cells, CountMinSketch.from_wire(union["sketch"]).cells)
    for name in ("packets", "bytes", "total", "heavy_hitters", "candidates", "top_k"):
        assert merged[name] == union[name], name
    assert merged["distinct"] == union["distinct"]
    assert merged["window"]["counts"] == union["window"]["counts"]
    assert merged["covered"] == ["h0", "h1", "h2", "h3", "h4"] and merged["missing"] == []
    # a tree of merges gives the same answer as one flat merge
    tree = report.merge(report.merge_all(snaps[:2]), report.merge_all(snaps[2:]))
    assert tree["heavy_hitters"] == merged["heavy_hitters"]
    assert tree["sketch"]["cells"] == merged["sketch"]["cells"]


def test_global_heavy_key_spread_thinly_over_ten_hosts_is_found():
    """Key 7 has 150 packets on each of 10 hosts: light everywhere, 1500 in total."""
    hosts = []
    for h in range(10):
        local_hog = np.full(900, 100 + h)        # heavy locally, light globally
        background = np.arange(1000 + 500 * h, 1000 + 500 * h + 400)
        hosts.append(np.concatenate([np.full(150, 7), local_hog, background]))
    for divisor, found in ((10, True), (1, False)):
        # top_k 1: each host's own top key is its hog, so key 7 travels up only as a
        # candidate over threshold_abs / divisor
        spec = CounterSpec(key="src", threshold_abs=1000, candidate_divisor=divisor, top_k=1)
        snaps = [run(spec, np.random.default_rng(h).permutation(s), host=f"h{h}")
                 for h, s in enumerate(hosts)]
        assert all("10.0.0.7" not in s["heavy_hitters"] for s in snaps)
        merged = report.merge_all(snaps)
        assert ("10.0.0.7" in merged["heavy_hitters"]) is found
        if found:
            assert merged["heavy_hitters"] == {"10.0.0.7": 1500}
        assert merged["total"] == 10 * 1450


@pytest.mark.parametrize("seed", range(4))
def test_fraction_threshold_merge_has_no_false_negatives(seed):
    rng = np.random.default_rng(seed)
    spec = CounterSpec(key="src", threshold=0.01, width=4096, depth=4)
    parts = [zipf(int(rng.integers(2_000, 30_000)), 5_000, 1.0, seed=100 * seed + h)
             for h in range(10)]
    snaps = [run(spec, p, host=f"h{h}") for h, p in enumerate(parts)]
    merged = report.merge_all(snaps)
    exact = Exact(np.concatenate(parts).tolist())
    total = sum(exact.values())
    truth = {format_key("src", V4_MAPPED | IP + k) for k, v in exact.items() if v >= 0.01 * total}
    assert truth and truth <= set(merged["heavy_hitters"])
    for key, est in merged["heavy_hitters"].items():
        assert est >= 0.01 * total
        assert est >= exact[int(key.split(".")[-1]) + 256 * int(key.split(".")[-2])]
    assert merged["heavy_hitters"] == report.heavy_hitters_of(merged)


def test_distinct_merge_within_hll_bound():
    spec = CounterSpec(key="src", hll_precision=12)
    parts = [np.arange(3000 * h, 3000 * h + 5000) for h in range(10)]  # overlapping
    merged = report.merge_all([run(spec, p) for p in parts])
    true = 3000 * 9 + 5000
    assert abs(merged["distinct"]["estimate"] - true) / true <= 3 * 1.04 / math.sqrt(4096)
    hll = HyperLogLog.from_wire(merged["distinct"]["hll"], 12)
    assert hll.count() == merged["distinct"]["estimate"]


def test_windows_group_by_start_and_scan_sets_unite():
    spec = CounterSpec(key="src", window_length=1.0, scan=True)
    a = Counter(spec, now=0)
    b = Counter(spec, now=0)
    a.update(batch([1, 1, 2], dport=22), 100.2)
    b.update(batch([1, 3], dport=23), 100.7)
    b.update(batch([6] * 3, dport=np.array([80, 81, 82]), dst=9), 101.4)
    merged = report.merge(a.snapshot(100.9), b.snapshot(101.5))
    w = merged["window"]
    assert (w["start"], w["counts"], w["distinct"]) == (101.0, {"10.0.0.6": 3}, 1)
    assert w["previous"]["start"] == 100.0
    assert w["previous"]["counts"] == {"10.0.0.1": 3, "10.0.0.2": 1, "10.0.0.3": 1}
    assert w["previous"]["distinct"] == 3
    assert merged["scan"]["10.0.0.6"] == {"ports": [80, 81, 82], "dsts": ["10.0.0.9"],
                                          "truncated": False}
    c = Counter(spec, now=0)
    c.update(batch([1], dport=24, dst=7), 100.5)
    both = report.merge(a.snapshot(100.9), c.snapshot(100.9))
    assert both["scan"]["10.0.0.1"]["ports"] == [22, 24]
    assert both["scan"]["10.0.0.1"]["dsts"] == ["10.0.0.5", "10.0.0.7"]
    assert (both["generated_at"], both["oldest"]) == (100.9, 100.9)


def test_scan_union_is_bounded_with_flag():
    spec = CounterSpec(key="src", scan=True, max_scan_list=50)
    snaps = []
    for h in range(3):
        c = Counter(spec, now=0)
        c.update(batch(np.full(40, 6), dport=np.arange(1000 + 40 * h, 1040 + 40 * h),
                       sport=40000), 0.1)
        snaps.append(c.snapshot(0.2))
    merged = report.merge_all(snaps)
    assert merged["scan"]["10.0.0.6"]["ports"] == list(range(1000, 1050))
    assert merged["scan"]["10.0.0.6"]["truncated"] is True


def test_coverage_and_ages():
    spec = CounterSpec(key="src")
    a = run(spec, np.array([1]), now=10.0, host="h2")
    b = run(spec, np.array([2]), now=20.0, host="h3")
    b["missing"] = ["h4", "h2"]
    b["oldest"] = 12.0
    merged = report.merge(a, b)
    assert (merged["covered"], merged["missing"]) == (["h2", "h3"], ["h4"])
    assert (merged["oldest"], merged["generated_at"]) == (10.5, 20.5)


def test_estimate_and_heavy_hitters_of_snapshot():
    spec = CounterSpec(key="src", threshold=0.4)
    snap = run(spec, np.array([1, 1, 1, 2, 3]))
    assert report.estimate(snap, "10.0.0.1") == 3
    assert report.estimate(snap, "10.0.0.99") == 0
    assert report.heavy_hitters_of(snap) == {"10.0.0.1": 3}


def base_snapshot() -> dict:
    return run(CounterSpec(key="src", threshold=0.1, scan=True), np.array([1, 1, 2]))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s.update(sketch=dict(s["sketch"], seed=2)),
     "cannot merge sketches with different parameters: width/depth/seed 16384/4/1 vs "
     "16384/4/2"),
    (lambda s: s.update(key="dst"), "snapshot: cannot merge src/pkt with dst/pkt"),
    (lambda s: s.update(threshold={"fraction": 0.2}),
     "snapshot: cannot merge threshold {'fraction': 0.1} with {'fraction': 0.2}"),
    (lambda s: s.pop("sketch"), "snapshot: has no sketch; it cannot be merged"),
    (lambda s: s.update(total=-1), "snapshot: total must be an integer from 0 to 2**63-1"),
    (lambda s: s.update(candidates={"10.0.0.1": "3"}),
     "snapshot: candidates must map keys to integers from 0 to 2**63-1"),
    (lambda s: s.update(candidates={"10.0.0.1": 2 ** 63}),
     "snapshot: candidates must map keys to integers from 0 to 2**63-1"),
    (lambda s: s.update(candidates={"not-an-ip": 3}),
     "snapshot: candidates: 'not-an-ip' is not an IPv4 address"),
    (lambda s: s.update(heavy_hitters={"10.0.0.1,80": 3}),
     "snapshot: heavy_hitters: src key '10.0.0.1,80' must have 1 comma-separated field"),
    (lambda s: s.update(top_k=[["10.0.0.300", 1]]),
     "snapshot: top_k: '10.0.0.300' is not an IPv4 address"),
    (lambda s: s.update(packets=10 ** 400), "snapshot: packets must be an integer from 0 to "
                                            "2**63-1"),
    (lambda s: s.update(extra=1), "snapshot: unknown field 'extra'"),
    (lambda s: s.update(sketch={"a": {"b": 1}}), "snapshot: sketch: missing field 'width'"),
    (lambda s: s.update(sketch=dict(s["sketch"], cells="AAAA")),
     "snapshot: sketch: cells are not base64 zlib data (Error -3 while decompressing data: "
     "unknown compression method)"),
    (lambda s: s.update(generated_at=10 ** 400), "snapshot: generated_at must be a time"),
    (lambda s: s.update(missed={"packets": -1}),
     "snapshot: missed must map packets and bytes to non-negative integers"),
    (lambda s: s.update(limits={"top_k": 10 ** 9}), "snapshot: limits must map top_k, "
     "max_candidates, max_window_keys, max_scan_sources, max_scan_list to integers from 1 to "
     "10000000"),
    (lambda s: s.update(covered="h2"), "snapshot: covered must be a list of host names"),
    (lambda s: s["window"].update(start="x"), "snapshot: window.start must be a time"),
    (lambda s: s.update(scan={"10.0.0.1": {"ports": [70000], "dsts": []}}),
     "snapshot: scan['10.0.0.1'].ports must be a list of port numbers"),
    (lambda s: s.update(scan={"10.0.0.1": {"ports": [], "dsts": ["x"]}}),
     "snapshot: scan['10.0.0.1'].dsts: 'x' is not an IPv4 address"),
    (lambda s: s.update(scan={"a": {"b": {}}}), "snapshot: scan: 'a' is not an IPv4 address"),
    (lambda s: s.update(scan={"10.0.0.1": {"b": {}}}),
     "snapshot: scan['10.0.0.1']: unknown field 'b'"),
    (lambda s: s["window"].update(counts={"10.0.0.1": 1.5}),
     "snapshot: window.counts must map keys to integers from 0 to 2**63-1"),
    (lambda s: s["distinct"].update(hll="AAAA"),
     "snapshot: distinct: hll: 3 registers, expected 4096 for precision 12"),
    (lambda s: s["distinct"].update(precision=20),
     "snapshot: distinct: hll: precision 20 must be from 4 to 16"),
])
def test_bad_snapshots_raise_value_error_with_message(mutate, message):
    good = base_snapshot()
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(ValueError) as err:
        report.merge(good, bad)
    assert str(err.value) == message


def test_random_junk_only_ever_raises_value_error():
    good = base_snapshot()
    rng = np.random.default_rng(0)
    junk = [None, "x", -1, 1.5, float("nan"), [], {}, {"a": 1}, [1, "b"], True, 10**30]
    raised = 0
    for _ in range(400):
        bad = copy.deepcopy(good)
        target = bad
        path = list(bad)
        name = path[int(rng.integers(len(path)))]
        if isinstance(bad[name], dict) and bad[name] and rng.random() < 0.5:
            target = bad[name]
            name = list(target)[int(rng.integers(len(target)))]
        target[name] = junk[int(rng.integers(len(junk)))]
        try:
            report.merge(good, bad)
        except ValueError:
            raised += 1
    assert raised > 100
    with pytest.raises(ValueError) as err:
        report.merge_all([])
    assert str(err.value) == "snapshot: nothing to merge"
    with pytest.raises(ValueError) as err:
        report.merge_all([good, "x"])  # type: ignore[list-item]  # what a bad child sends
    assert str(err.value) == "snapshot: must be an object"


def test_merge_all_skips_the_check_only_when_told_the_snapshots_were_checked(monkeypatch):
    snaps = [run(CounterSpec(key="src", threshold=0.1), np.array([1, 1, 2]), host=h)
             for h in ("h1", "h2")]
    expected = report.merge_all(snaps)
    calls = []

    def check(snap: dict) -> dict:
        calls.append(snap)
        return snap

    monkeypatch.setattr(report, "check_snapshot", check)
    assert report.merge_all(snaps, checked=True) == expected and calls == []
    assert report.merge_all(snaps) == expected and calls == snaps
    with pytest.raises(ValueError, match="cannot merge src/pkt with dst/pkt"):
        report.merge_all([snaps[0], {**snaps[1], "key": "dst"}], checked=True)


def test_elastic_distinct_keys_are_the_union_not_one_parts_count():
    from host_agent.counters.elastic import ElasticCounter
    from measure_model.task import Task

    task = Task.from_dict({"name": "c", "kind": "cardinality", "key": "src"})
    parts = []
    for first in (0, 100):  # 100 sources on each agent, none in common
        c = ElasticCounter(task, now=0.0)
        c.update(batch(np.arange(first, first + 100)), 1.0)
        parts.append(json.loads(json.dumps(c.snapshot(2.0))))
    assert all(95 <= p["distinct"]["estimate"] <= 105 for p in parts)
    assert 190 <= report.merge_all(parts)["distinct"]["estimate"] <= 210


# eight src_dst pairs, exact counts; the smallest is 3.6% of the total, under the 5% default
PAIR_COUNTS = {1: 300, 2: 250, 3: 200, 4: 150, 5: 120, 6: 100, 7: 80, 8: 45}


def _pairs_stream(share: float, seed: int) -> np.ndarray:
    """``share`` of each pair's packets, interleaved at random (pair i: 10.0.0.i > .5)."""
    keys = np.concatenate([np.full(round(n * share), k) for k, n in PAIR_COUNTS.items()])
    return np.random.default_rng(seed).permutation(keys)


@pytest.mark.parametrize("top_k", [20, 3])
def test_top_k_lists_the_k_largest_keys_whatever_the_threshold(top_k):
    task = Task.from_dict({"name": "pairs", "kind": "counter", "key": "src_dst",
                           "top_k": top_k})
    spec = CounterSpec.from_task(task)
    assert spec.threshold == 0.05  # the default heavy-hitter threshold applies
    truth = sorted(((f"10.0.0.{k},10.0.0.5", n) for k, n in PAIR_COUNTS.items()),
                   key=lambda kv: -kv[1])
    expected = [[k, n] for k, n in truth[:top_k]]
    one = run(spec, _pairs_stream(1.0, seed=3))
    assert one["top_k"] == expected
    assert sorted(one["heavy_hitters"].values()) == [80, 100, 120, 150, 200, 250, 300]
    # two agents with their halves: each lists its own top keys, the merge ranks the union
    parts = [run(spec, _pairs_stream(0.4, seed=4), host="h1"),
             run(spec, _pairs_stream(0.6, seed=5), host="h2")]
    merged = report.merge_all(parts)
    assert merged["top_k"] == expected
    assert len(merged["heavy_hitters"]) == 7 and truth[-1][0] not in merged["heavy_hitters"]
