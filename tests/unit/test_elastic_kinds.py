"""The elastic kinds end to end in-process: Task -> monitor's counter factory
-> snapshot -> check and merge over hosts -> controller Results (answers, events, past)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from host_agent.counters.elastic import ElasticCounter
from host_agent.monitor.core import default_counter_factory
from measure_model.packet.headers import V4_MAPPED
from measure_model.packet.keys import HeaderBatch, format_key
from measure_model.task import PolicyError, parse_task
from measure_model.wire.report import check_snapshot, merge_all
from measure_model.wire.snapshot import Snapshot
from ryu_app.service.results import MemoryStore, Results
from testing.checks import some

pytestmark = pytest.mark.unit

HOSTS = ["h1", "h2", "h3"]


def entry_of(kind: str, **fields) -> dict:
    """The monitor's counter entry for a controller task (as the agent sends it)."""
    task = parse_task({"name": "t", "kind": kind, **fields}, "test")
    return {"task": task.to_dict(), "candidate_divisor": 1}


def batch(pairs: list[tuple[int, int, int]]) -> HeaderBatch:
    """Packets of (src, dst, count) flows, as the monitor's parser makes them."""
    src = np.repeat([p[0] for p in pairs], [p[2] for p in pairs])
    dst = np.repeat([p[1] for p in pairs], [p[2] for p in pairs])
    n = src.shape[0]
    return HeaderBatch.from_arrays(src, dst, np.full(n, 17), np.full(n, 5001),
                                   np.full(n, 5201), np.full(n, 100))


def report(task_id: str, kind: str, snap: Mapping[str, Any], end: float) -> dict:
    return {"task_id": task_id, "epoch": 1, "from": "h1", "interval_end": end, "kind": kind,
            "generated_at": end, "snapshot": snap, "covered": HOSTS, "missing": [],
            "oldest": end}


def merged(counters: dict[str, ElasticCounter], now: float) -> Snapshot:
    snaps = [check_snapshot(c.snapshot(now, host=h)) for h, c in counters.items()]
    return check_snapshot(merge_all(snaps))


# flows of known sizes between host pairs; each flow observed at one host (its dst)
ADDR = {h: 0x0A000001 + i for i, h in enumerate(["h1", "h2", "h3", "h4", "h5"])}
FLOWS = [("h4", "h1", 5), ("h5", "h1", 5), ("h4", "h2", 12), ("h5", "h2", 1),
         ("h4", "h3", 300), ("h1", "h3", 12), ("h2", "h3", 2)]


def fed(kind: str, flows=FLOWS, counters=None, **fields) -> dict[str, ElasticCounter]:
    counters = counters or {h: default_counter_factory(entry_of(kind, **fields), 0.0)
                            for h in HOSTS}
    for h, c in counters.items():
        mine = [(ADDR[s], ADDR[d], n) for s, d, n in flows if d == h]
        if mine:
            c.update(batch(mine), 1.0)
    return counters


def test_task_model_takes_the_new_kinds_and_fields():
    for kind in ("flow_size", "heavy_changers", "entropy", "cardinality", "superspreaders",
                 "ddos_victims"):
        task = parse_task({"name": "t", "kind": kind}, "x")
        assert task.memory == 512 * 1024 and task.key == "src_dst"
        assert parse_task(task.to_dict(), "x") == task
    assert parse_task({"name": "t", "kind": "superspreaders"}, "x").min_distinct == 100
    assert parse_task({"name": "t", "kind": "heavy_hitters"}, "x").memory is None
    assert parse_task({"name": "t", "kind": "counter", "memory": 65536}, "x").memory == 65536
    for body, field in (({"kind": "port_scan", "memory": 65536}, "memory"),
                        ({"kind": "heavy_hitters", "memory": 100}, "memory"),
                        ({"kind": "cardinality", "min_distinct": 5}, "min_distinct"),
                        ({"kind": "entropy", "memory": 100}, "memory"),
                        ({"kind": "superspreaders", "min_distinct": 10 ** 6}, "min_distinct"),
                        ({"kind": "flow_size", "memory": "1M"}, "memory")):
        with pytest.raises(PolicyError, match=field):
            parse_task({"name": "t", **body}, "x")


def test_counter_state_is_within_memory():
    for kind in ("flow_size", "superspreaders"):
        c = default_counter_factory(entry_of(kind, memory=131072), 0.0)
        assert isinstance(c, ElasticCounter)
        assert 0.9 * 131072 <= c.memory_bytes <= 131072


def test_heavy_hitters_with_memory_are_elastic_within_budget_and_keep_their_shape():
    from host_agent.counters.countmin import Counter

    plain = default_counter_factory(entry_of("heavy_hitters"), 0.0)
    assert isinstance(plain, Counter)
    counters = fed("heavy_hitters", memory=65536, key="src_dst", threshold=0.2)
    assert all(isinstance(c, ElasticCounter) and c.memory_bytes <= 65536
               for c in counters.values())
    # h3 sees 314 of its packets: h4 -> h3 (300) is heavy there
    assert counters["h3"].heavy_hitters() == {"10.0.0.4,10.0.0.3": 300}
    snap = merged(counters, 2.0)
    # network-wide 337 packets: 0.2 of them is 67.4, only the 300-packet flow passes
    assert snap["total"] == 337 and snap["heavy_hitters"] == {"10.0.0.4,10.0.0.3": 300}
    assert snap["top_k"][:3] == [["10.0.0.4,10.0.0.3", 300], ["10.0.0.1,10.0.0.3", 12],
                                 ["10.0.0.4,10.0.0.2", 12]]
    results = Results(MemoryStore())
    events = results.ingest(report("hh", "heavy_hitters", snap, 5.0), now=5.1)
    res = some(results.latest("hh"))
    assert res["heavy_hitters"] == {"10.0.0.4,10.0.0.3": 300} and res["total"] == 337
    assert [e["key"] for e in results.events() if e["id"] in events
            and e["kind"] == "heavy_hitter"] == ["10.0.0.4,10.0.0.3"]


def test_flow_size_global_is_the_exact_histogram_and_largest_flows():
    counters = fed("flow_size", memory=65536)
    snap = merged(counters, 2.0)
    results = Results(MemoryStore())
    results.ingest(report("fs", "flow_size", snap, 5.0), now=5.1)
    res = some(results.latest("fs"))["flow_size"]
    assert res["histogram"] == {"1": 1.0, "2": 1.0, "5": 2.0, "12": 2.0, "300": 1.0}
    assert res["flows"] == 7 and res["exact_flows"] == 7
    assert res["largest"][0] == ["10.0.0.4,10.0.0.3", 300, True]
    assert res["error"]["confidence"] == 0.95
    assert "elastic" not in some(results.latest("fs"))


def test_cardinality_and_entropy_exact_on_small_traffic():
    total = sum(n for *_, n in FLOWS)
    h = math.log2(total) - sum(n * math.log2(n) for *_, n in FLOWS) / total
    for kind, check in (("cardinality", lambda r: r["cardinality"]["estimate"] == 7),
                        ("entropy", lambda r: r["entropy"]["bits"] == pytest.approx(h, 1e-5))):
        snap = merged(fed(kind, memory=65536), 2.0)
        results = Results(MemoryStore())
        results.ingest(report("k", kind, snap, 5.0), now=5.1)
        assert check(some(results.latest("k")))


def test_entropy_is_per_report_interval():
    results = Results(MemoryStore())
    counters = fed("entropy", memory=65536)
    results.ingest(report("en", "entropy", merged(counters, 2.0), 5.0), now=5.1)
    assert some(results.latest("en"))["entropy"]["scope"] == "since_start"
    second = [("h4", "h1", 40), ("h5", "h2", 10), ("h1", "h3", 10)]
    fed("entropy", flows=second, counters=counters)
    results.ingest(report("en", "entropy", merged(counters, 7.0), 10.0), now=10.1)
    got = some(results.latest("en"))["entropy"]
    total = sum(n for *_, n in second)
    h = math.log2(total) - sum(n * math.log2(n) for *_, n in second) / total
    assert got["scope"] == "interval" and got["total"] == total and got["flows"] == 3
    assert got["bits"] == pytest.approx(h, abs=1e-5)


def test_cardinality_since_start_and_in_the_last_interval():
    results = Results(MemoryStore())
    counters = fed("cardinality", memory=65536)
    results.ingest(report("c", "cardinality", merged(counters, 2.0), 5.0), now=5.1)
    first = some(results.latest("c"))["cardinality"]
    assert first["estimate"] == 7 and "interval" not in first
    # one flow seen before (h4 -> h1) and two new ones
    fed("cardinality", flows=[("h4", "h1", 40), ("h2", "h1", 10), ("h3", "h2", 1)],
        counters=counters)
    results.ingest(report("c", "cardinality", merged(counters, 7.0), 10.0), now=10.1)
    got = some(results.latest("c"))["cardinality"]
    assert got["estimate"] == 9 and got["scope"] == "since_start"
    assert got["interval"]["estimate"] == 3


def test_heavy_changers_between_intervals_network_wide():
    results = Results(MemoryStore())
    counters = fed("heavy_changers", memory=65536, threshold_abs=20)
    results.ingest(report("hc", "heavy_changers", merged(counters, 2.0), 5.0), now=5.1)
    assert some(results.latest("hc"))["heavy_changers"] == []
    fed("heavy_changers", counters=counters)  # same rates in interval 2
    results.ingest(report("hc", "heavy_changers", merged(counters, 7.0), 10.0), now=10.1)
    assert some(results.latest("hc"))["heavy_changers"] == []
    changed = [(s, d, 80 if (s, d) == ("h4", "h2") else n) for s, d, n in FLOWS]
    fed("heavy_changers", flows=changed, counters=counters)
    ids = results.ingest(report("hc", "heavy_changers", merged(counters, 12.0), 15.0),
                         now=15.1)
    got = some(results.latest("hc"))["heavy_changers"]
    assert [(c["key"], c["before"], c["after"]) for c in got] == [("10.0.0.4,10.0.0.2", 12, 80)]
    events = results.events(0)
    assert [(e["kind"], e["key"]) for e in events if e["id"] in ids] == [
        ("heavy_changer", "10.0.0.4,10.0.0.2")]
    # ask the past: a key and a histogram of the second interval
    past = some(results.past("hc", 10.0, key="10.0.0.4,10.0.0.2"))
    assert past["interval_end"] == 10.0
    assert (past["size"]["size"], past["size"]["in_interval"], past["size"]["exact"]) == \
        (24, 12, True)
    assert results.past("hc", 1.0) is None
    # any two intervals: the first against the third
    span = some(results.past("hc", 15.0, key="10.0.0.4,10.0.0.2", since=5.0))["size"]
    assert (span["size"], span["previous"], span["in_interval"], span["since"]) == \
        (104, 12, 92, 5.0)
    assert results.past("hc", 15.0, key="10.0.0.4,10.0.0.2", since=1.0) is None
    with pytest.raises(ValueError):
        results.past("hc", None, key="not-a-key")


def test_superspreaders_with_min_distinct_over_hosts():
    hosts = [f"h{i}" for i in range(1, 10)]
    addr = {h: 0x0A000001 + i for i, h in enumerate(hosts)}
    flows = [("h1", d, 3) for d in hosts[1:]] + [("h2", "h3", 1), ("h2", "h4", 1),
                                                  ("h5", "h6", 2), ("h5", "h7", 1)]
    counters = {h: default_counter_factory(entry_of("superspreaders", memory=65536,
                                                    min_distinct=5), 0.0) for h in hosts}
    for h, c in counters.items():
        mine = [(addr[s], addr[d], n) for s, d, n in flows if d == h]
        if mine:
            c.update(batch(mine), 1.0)
    snaps = [check_snapshot(c.snapshot(2.0, host=h)) for h, c in counters.items()]
    snap = check_snapshot(merge_all(snaps))
    results = Results(MemoryStore())
    ids = results.ingest({**report("ss", "superspreaders", snap, 5.0), "covered": hosts},
                         now=5.1)
    got = some(results.latest("ss"))["superspreaders"]
    assert [g["key"] for g in got] == [format_key("src", V4_MAPPED | addr["h1"])]
    assert abs(got[0]["distinct"] - 8) <= 1 and got[0]["stderr"] >= 0
    assert [e["kind"] for e in results.events(0) if e["id"] in ids] == ["superspreader"]


def test_elastic_and_count_min_snapshots_do_not_merge():
    el = fed("flow_size", memory=65536)["h3"].snapshot(1.0, host="h3")
    cm = default_counter_factory(entry_of("heavy_hitters", key="src_dst"), 0.0)
    with pytest.raises(ValueError, match="cannot merge"):
        merge_all([el, cm.snapshot(1.0)])
    with pytest.raises(ValueError, match="elastic"):
        check_snapshot({**el, "elastic": {**el["elastic"], "state": "x"}})


def test_per_host_digest_carries_the_histogram_and_the_spreaders():
    from host_agent.overlay.merge import host_summary
    from measure_model.wire.overlay import validate_report

    h3 = fed("flow_size", memory=65536)["h3"].snapshot(2.0, host="h3")
    digest = host_summary(h3, 2.0, 10, "flow_size")["answer"]
    # h3 saw flows of 300, 12 and 2 packets: bins [256, 512), [8, 16), [2, 4)
    assert digest["histogram_log2"] == {"2": 1.0, "8": 1.0, "256": 1.0}
    assert digest["flows"] == 3 and digest["exact_flows"] == 3
    assert digest["largest"][0] == ["10.0.0.4,10.0.0.3", 300, True]
    ss = default_counter_factory(entry_of("superspreaders", memory=65536, min_distinct=5), 0.0)
    ss.update(batch([(ADDR["h1"], 0x0A000100 + d, 1) for d in range(6)]
                    + [(ADDR["h2"], ADDR["h3"], 4)]), 1.0)
    line = host_summary(ss.snapshot(2.0, host="h1"), 2.0, 10, "superspreaders")
    assert [x["key"] for x in line["answer"]["superspreaders"]] == ["10.0.0.1"]
    assert abs(line["answer"]["superspreaders"][0]["distinct"] - 6) <= 1
    body = {**report("fs", "flow_size", check_snapshot(h3), 5.0), "covered": ["h3"],
            "per_host": {"h3": host_summary(h3, 2.0, 10, "flow_size")}}
    results = Results(MemoryStore())
    results.ingest(body, now=5.1)
    assert some(results.latest("fs", host="h3"))["answer"]["histogram_log2"]["256"] == 1.0
    assert "answer" not in host_summary(h3, 2.0, 10, "heavy_hitters")
    huge = {**body, "per_host": {"h3": {"answer": {"x": "y" * 5000}}}}
    with pytest.raises(ValueError, match="'answer' must be an object of at most 4096"):
        validate_report(huge)


def _many_flows(n: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` src_dst flows to 10.0.0.1 of Zipf-like sizes (exact ground truth)."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.zipf(1.6, n), 500)
    return [(0x0B000000 + i, ADDR["h1"], int(s)) for i, s in enumerate(sizes)]


def _entropy_bits(flows: list[tuple[int, int, int]]) -> float:
    sizes = np.array([n for *_, n in flows], np.float64)
    total = sizes.sum()
    return float(np.log2(total) - (sizes * np.log2(sizes)).sum() / total)


@pytest.mark.parametrize("memory", [4096, 65536])
def test_entropy_and_cardinality_bounds_hold_the_truth(memory):
    """Since the start (first report) and in the next interval alone: half the first
    flows again and 1000 new ones (which evict old keys from the heavy part)."""
    first = _many_flows(3000, seed=11)
    second = first[::2] + [(0x0C000000 + i, d, n) for i, (_, d, n)
                           in enumerate(_many_flows(1000, seed=12))]
    got: dict[str, list[dict]] = {}
    for kind in ("entropy", "cardinality"):
        counter = default_counter_factory(entry_of(kind, memory=memory), 0.0)
        results = Results(MemoryStore())
        got[kind] = []
        for end, flows in ((5.0, first), (10.0, second)):
            counter.update(batch(flows), end - 1)
            snap = check_snapshot(counter.snapshot(end - 0.5, host="h1"))
            results.ingest(report("k", kind, snap, end), now=end + 0.1)
            got[kind].append(some(results.latest("k"))[kind])
    for e, truth in zip(got["entropy"], (_entropy_bits(first), _entropy_bits(second)),
                        strict=True):
        assert e["lower"] <= truth <= e["upper"], (e, truth)
        assert e["lower"] <= e["bits"] <= e["upper"]
    c0, c1 = got["cardinality"]
    for c, truth in ((c0, 3000), (c1["interval"], len(second))):
        assert c["lower"] <= truth <= c["upper"], (c, truth)
        assert c["lower"] <= c["estimate"] <= c["upper"]
    if memory == 4096:  # most flows are light: the band is honest, not a point
        e = got["entropy"][0]
        assert e["exact_share"] < 0.9 and e["upper"] - e["lower"] > 0.1


def test_entropy_bounds_are_a_point_when_every_flow_is_exact():
    counter = default_counter_factory(entry_of("entropy", memory=65536), 0.0)
    counter.update(batch([(ADDR[s], ADDR[d], n) for s, d, n in FLOWS]), 1.0)
    results = Results(MemoryStore())
    results.ingest(report("k", "entropy", check_snapshot(counter.snapshot(2.0, host="h1")), 5.0),
                   now=5.1)
    e = some(results.latest("k"))["entropy"]
    assert e["exact_share"] == 1.0
    assert e["lower"] == pytest.approx(e["bits"], abs=1e-5) == pytest.approx(e["upper"], abs=1e-5)
