"""Per-interval figures: an agent's own difference, merged up, never negative, and the
controller's rates and once-per-episode heavy hitters built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from host_agent.counters.elastic import ElasticCounter
from measure_model import interval
from measure_model.packet.keys import HeaderBatch
from measure_model.task import Task
from measure_model.wire import report
from ryu_app.service.results import MemoryStore, Results
from testing.checks import some

pytestmark = pytest.mark.unit

IP = 0x0A000000


def batch(src: list[int], length: int = 100) -> HeaderBatch:
    n = len(src)

    def col(v: int) -> np.ndarray:
        return np.full(n, v)

    return HeaderBatch.from_arrays(IP + np.asarray(src), IP + col(5), col(17), col(1000),
                                   col(80), col(length))


def snap(counter, now: float) -> dict:
    """A counter's snapshot as the agent sends it (``monitor.counting_since`` added)."""
    out = json.loads(json.dumps(counter.snapshot(now)))
    out["monitor"] = {"counting_since": counter.created}
    return out


def test_an_agents_interval_is_its_own_difference_with_per_key_counts():
    c = Counter(CounterSpec(key="src", threshold=0.05), now=0.0)
    c.update(batch([1] * 50 + [2] * 30), 1.0)
    first, mark = interval.section(None, snap(c, 5.0), 5.0)
    assert (first["start"], first["end"], first["packets"], first["bytes"]) == (0.0, 5.0, 80,
                                                                               8000)
    assert first["keys"] == {"10.0.0.1": [50, None], "10.0.0.2": [30, None]}
    c.update(batch([2] * 40), 6.0)  # 10.0.0.1 stopped
    second, _ = interval.section(mark, snap(c, 10.0), 10.0)
    second = some(second)
    assert (second["seconds"], second["packets"], second["bytes"]) == (5.0, 40, 4000)
    assert second["keys"] == {"10.0.0.2": [40, None]}
    assert some(interval.rate(second))["bps"] == 4000 * 8 / 5.0
    assert some(interval.rate(second))["keys"]["10.0.0.2"]["pps"] == 8.0


def test_a_restarted_counter_starts_a_new_interval_never_a_negative_one():
    c = Counter(CounterSpec(key="src"), now=0.0)
    c.update(batch([1] * 50), 1.0)
    _, mark = interval.section(None, snap(c, 5.0), 5.0)
    fresh = Counter(CounterSpec(key="src"), now=7.0)
    fresh.update(batch([1] * 3), 8.0)
    sec, _ = interval.section(mark, snap(fresh, 10.0), 10.0)
    assert (sec["packets"], sec["keys"]) == (3, {"10.0.0.1": [3, None]})


def test_elastic_counters_give_bytes_per_key():
    task = Task.from_dict({"name": "f", "kind": "flow_size", "key": "src",
                           "increment": "bytes"})
    c = ElasticCounter(task, now=0.0)
    c.update(batch([1] * 10, length=500), 1.0)
    _, mark = interval.section(None, snap(c, 5.0), 5.0)
    c.update(batch([1] * 4 + [3] * 2, length=500), 6.0)
    sec, _ = interval.section(mark, snap(c, 10.0), 10.0)
    assert sec["keys"] == {"10.0.0.1": [None, 2000], "10.0.0.3": [None, 1000]}
    assert sec["bytes"] == 3000 and sec["total"] == 3000


def test_sections_add_up_the_tree_and_survive_the_snapshot_check():
    a, b = (Counter(CounterSpec(key="src"), now=0.0) for _ in range(2))
    a.update(batch([1] * 10), 1.0)
    b.update(batch([1] * 5 + [2] * 7), 1.0)
    sa, sb = snap(a, 5.0), snap(b, 5.0)
    sa["interval"], _ = interval.section(None, sa, 5.0)
    sb["interval"], _ = interval.section(None, sb, 5.0)
    merged = report.merge_all([sa, sb])
    assert merged["interval"]["packets"] == 22
    assert merged["interval"]["keys"] == {"10.0.0.1": [15, None], "10.0.0.2": [7, None]}
    report.check_snapshot(merged)
    bad = dict(merged, interval={**merged["interval"], "packets": -1})
    with pytest.raises(ValueError, match=r"^snapshot: interval.packets must be an integer"):
        report.check_snapshot(bad)


def test_merged_seconds_are_the_median_part_s():
    def part(seconds: float) -> dict:
        return {"start": 10.0 - seconds, "end": 10.0, "seconds": seconds, "packets": 1,
                "bytes": 1, "total": 1, "keys": {}}

    # one agent read its counts 3 s late: the others' keys keep their rate
    merged = interval.merge([part(5.0), part(8.0), part(5.1)])
    assert merged is not None
    assert (merged["seconds"], merged["start"], merged["packets"]) == (5.1, 2.0, 3)
    two = interval.merge([part(5.0), part(4.9)])
    assert two is not None and two["seconds"] == 5.0


def test_a_keys_rate_is_its_own_agents_count_over_that_agents_seconds():
    """h5 read its counts 0.2 s late (5.2 s of its key), h1 and h2 on time: the key h5
    alone counts keeps h5's seconds; a key of two parts has the sum of their rates."""
    def part(seconds: float, keys: dict) -> dict:
        return {"start": 10.0, "end": 10.0 + seconds, "seconds": seconds, "packets": 1,
                "bytes": 1, "total": 1, "keys": keys}

    merged = interval.merge([part(5.0, {"b": [None, 100]}), part(5.2, {"a": [None, 1300]}),
                             part(5.0, {"b": [None, 150]})])
    assert merged is not None and merged["seconds"] == 5.0
    assert merged["keys"] == {"a": [None, 1300, 5.2], "b": [None, 250]}
    rate = some(interval.rate(merged))
    assert rate["keys"]["a"]["bps"] == 1300 * 8 / 5.2 and rate["keys"]["a"]["seconds"] == 5.2
    assert rate["keys"]["b"]["bps"] == 250 * 8 / 5.0
    # up the tree: the third item is kept and weighs like the part it came from
    up = interval.merge([merged, part(4.0, {"a": [None, 400]})])
    assert up is not None and up["seconds"] == 5.0
    want = 1700 / (1300 / 5.2 + 400 / 4.0)
    assert up["keys"]["a"][:2] == [None, 1700] and up["keys"]["a"][2] == round(want, 6)
    assert some(interval.rate(up))["keys"]["a"]["bps"] == pytest.approx((250 + 100) * 8, rel=1e-6)
    assert interval.heavy(up, {"absolute": 300}, 10) == {"a": 1700}
    for bad in ([None, 1, -1.0], [None, 1, "5"], [None, 1, 5.0, 1]):
        with pytest.raises(ValueError, match=r"keys must map keys to \[packets, bytes\]"):
            interval.check({**part(5.0, {}), "keys": {"10.0.0.1": bad}}, "src")
    interval.check({**part(5.0, {}), "keys": {"10.0.0.1": [None, 1, 5.2]}}, "src")


def test_heavy_is_judged_on_the_interval_total():
    sec = {"start": 0.0, "end": 5.0, "seconds": 5.0, "packets": 100, "bytes": 1, "total": 100,
           "keys": {"a": [60, None], "b": [4, None], "c": [0, None]}}
    assert interval.heavy(sec, {"fraction": 0.05}, 10) == {"a": 60}
    assert interval.heavy(sec, {"absolute": 4}, 10) == {"a": 60, "b": 4}
    assert interval.heavy(sec, {}, 1) == {"a": 60}


def root_report(end: float, keys: dict[str, int], total: int, covered=("h1", "h2"),
                missing=()) -> dict:
    from measure_model.sketch.countmin import CountMinSketch
    from measure_model.sketch.hll import HyperLogLog

    cum = {k: v * 10 for k, v in keys.items()}
    snapshot = {"key": "src", "increment": "pkt", "packets": 999, "bytes": 99900,
                "total": 999, "sketch": CountMinSketch(64, 2, 1).to_wire(),
                "heavy_hitters": cum, "top_k": sorted(cum.items()),
                "threshold": {"fraction": 0.05},
                "distinct": {"estimate": 3, "hll": HyperLogLog(12).to_wire(),
                             "precision": 12},
                "scan": {}, "interval": {"start": end - 5, "end": end, "seconds": 5.0,
                                         "packets": total, "bytes": total * 100,
                                         "total": total,
                                         "keys": {k: [v, None] for k, v in keys.items()}}}
    return {"task_id": "t1", "epoch": 1, "from": "h1", "interval_end": end,
            "generated_at": end, "snapshot": snapshot, "covered": list(covered),
            "missing": list(missing), "oldest": end, "per_host": {}}


def test_result_rate_and_heavy_hitters_once_per_episode():
    results = Results(MemoryStore())
    pair = "10.0.0.2"
    # 4 intervals heavy, a partial one (h2 missing, the pair's traffic there), heavy
    # again, then stopped
    for k, (n, missing) in enumerate([(500, ()), (500, ()), (20, ()), (500, ()),
                                      (0, ("h2",)), (500, ()), (0, ()), (0, ()), (0, ())]):
        covered = [h for h in ("h1", "h2") if h not in missing]
        results.ingest(root_report(5.0 * (k + 1), {pair: n, "10.0.0.3": 500}, n + 500,
                                   covered, missing), now=5.0 * (k + 1))
        res = some(results.latest("t1"))
        if k == 0:
            assert res["rate"]["pps"] == 200.0 and res["rate"]["bps"] == 200 * 800
            assert res["rate"]["keys"][pair]["pps"] == 100.0
            assert res["heavy_hitters"][pair] == 5000  # since the task started
        assert (pair in res["rate"]["heavy_hitters"]) == (n >= 0.05 * (n + 500) and n > 0)
    hh = [e for e in results.events() if e["kind"] == "heavy_hitter" and e["key"] == pair]
    assert len(hh) == 1 and hh[0]["value"] == 500 and hh[0]["pps"] == 100.0
    # stopped: a new episode starts when it comes back
    results.ingest(root_report(50.0, {pair: 500}, 500), now=50.0)
    assert len([e for e in results.events() if e.get("key") == pair]) == 2
