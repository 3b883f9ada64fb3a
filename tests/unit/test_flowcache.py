"""The flow cache on synthetic batches: exact sums, timeouts, FIN/RST, evictions."""

from __future__ import annotations

import numpy as np
import pytest

from host_agent.flows.cache import FlowCache, concat_records
from measure_model.packet.keys import HeaderBatch
from measure_model.wire import ipfix

pytestmark = pytest.mark.unit

IP = 0x0A000000


def batch(src, sport, length, flags=None, proto=6, dport=80) -> HeaderBatch:
    n = len(src)
    return HeaderBatch.from_arrays(IP + np.asarray(src), np.full(n, IP + 99), np.full(n, proto),
                                   np.asarray(sport), np.full(n, dport), np.asarray(length),
                                   tcp_flags=flags)


def totals(recs) -> dict[tuple[int, int], tuple[int, int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for s, sp, p, o in zip(recs["src"].tolist(), recs["sport"].tolist(),
                           recs["packets"].tolist(), recs["octets"].tolist(), strict=True):
        acc = out.setdefault((s - IP, sp), [0, 0])
        acc[0] += p
        acc[1] += o
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_groups_a_batch_exactly_and_keeps_first_last_flags():
    cache = FlowCache()
    assert not len(cache.update(batch([1, 2, 1, 1], [10, 20, 10, 10], [100, 60, 40, 10],
                                      flags=[0x02, 0x10, 0x10, 0x18]), now=100.0)["packets"])
    cache.update(batch([1], [10], [5], flags=[0x10]), now=101.5)
    assert len(cache) == 2
    top = cache.top(10)
    assert top[0] == {"flow": "10.0.0.1,10.0.0.99,tcp,10,80", "packets": 4, "bytes": 155,
                      "tcp_flags": 0x1A, "first": 100.0, "last": 101.5}
    assert top[1]["flow"] == "10.0.0.2,10.0.0.99,tcp,20,80"
    assert [f["packets"] for f in cache.top(1, by="packets")] == [4]
    # the times of listed keys that are active here (unknown and malformed-free keys skipped)
    assert cache.times(["10.0.0.2,10.0.0.99,tcp,20,80", "10.0.0.1,10.0.0.99,tcp,10,80",
                        "10.0.0.3,10.0.0.99,tcp,20,80"]) == {
        "10.0.0.1,10.0.0.99,tcp,10,80": [100.0, 101.5],
        "10.0.0.2,10.0.0.99,tcp,20,80": [100.0, 100.0]}
    recs = cache.flush()
    assert totals(recs) == {(1, 10): (4, 155), (2, 20): (1, 60)}
    assert set(recs["end_reason"].tolist()) == {ipfix.END_FORCED}
    assert len(cache) == 0 and cache.stats["forced"] == 2


def test_fin_and_rst_end_the_record_and_later_packets_start_a_new_one():
    cache = FlowCache()
    cache.update(batch([1, 2], [10, 20], [60, 60], flags=[0x02, 0x02]), now=1.0)
    ended = cache.update(batch([1, 2], [10, 20], [52, 40], flags=[0x11, 0x04]), now=2.0)
    assert totals(ended) == {(1, 10): (2, 112), (2, 20): (2, 100)}
    assert ended["tcp_flags"].tolist() == [0x13, 0x06]
    assert ended["end_reason"].tolist() == [ipfix.END_OF_FLOW] * 2
    assert ended["start_ms"].tolist() == [1000, 1000] and ended["end_ms"].tolist() == [2000] * 2
    assert len(cache) == 0
    cache.update(batch([1], [10], [52], flags=[0x10]), now=2.1)
    assert len(cache) == 1 and cache.stats["ended"] == 2


def test_idle_and_active_timeouts_split_a_long_flow_with_exact_sums():
    cache = FlowCache(active_timeout=10.0, idle_timeout=3.0)
    sent = [0, 0]
    parts = []
    for t in range(25):  # one packet per second of flow 1; flow 2 only at t=0
        length = 100 + t
        cache.update(batch([1] if t else [1, 2], [10] if t else [10, 20],
                           [length] if t else [length, 7]), now=float(t))
        sent[0] += 1
        sent[1] += length
        parts.append(cache.expire(float(t)))
    parts.append(cache.flush())
    recs = concat_records(parts)
    one = recs["sport"] == 10
    assert int(recs["packets"][one].sum()) == sent[0]
    assert int(recs["octets"][one].sum()) == sent[1]
    reasons = recs["end_reason"][one].tolist()
    assert reasons == [ipfix.END_ACTIVE, ipfix.END_ACTIVE, ipfix.END_FORCED]
    assert (recs["end_ms"][one] - recs["start_ms"][one] <= 10_000).all()
    two = recs["sport"] == 20
    assert recs["end_reason"][two].tolist() == [ipfix.END_IDLE]
    assert cache.stats["idle_timeouts"] == 1 and cache.stats["active_timeouts"] == 2


def test_a_full_cache_evicts_the_least_recent_flows_early_and_loses_no_packet():
    cache = FlowCache(max_flows=8)
    rng = np.random.default_rng(3)
    parts = []
    src = rng.integers(1, 30, size=2000)
    length = rng.integers(40, 1500, size=2000)
    for i in range(0, 2000, 100):
        parts.append(cache.update(batch(src[i:i + 100], src[i:i + 100], length[i:i + 100]),
                                  now=float(i)))
        assert len(cache) <= 8
    evicted = concat_records(parts)
    assert cache.stats["evicted"] == len(evicted["packets"]) > 0
    assert set(evicted["end_reason"].tolist()) == {ipfix.END_LACK_OF_RESOURCES}
    recs = concat_records([evicted, cache.flush()])
    assert int(recs["packets"].sum()) == 2000
    assert int(recs["octets"].sum()) == int(length.sum())
    want: dict = {}
    for s, n in zip(src.tolist(), length.tolist(), strict=True):
        acc = want.setdefault((s, s), [0, 0])
        acc[0] += 1
        acc[1] += n
    assert totals(recs) == {k: tuple(v) for k, v in want.items()}


def test_keys_sharing_a_mix_are_kept_apart():
    cache = FlowCache()
    b = batch([1, 2, 1], [10, 20, 10], [100, 200, 300])
    b._cache[("sketch", "five_tuple")] = np.zeros(3, np.uint64)  # force one 64-bit mix
    first = cache.update(b, now=1.0)
    # the second key took the slot of the first, which was exported at once
    assert len(cache) == 1 and totals(first) == {(1, 10): (2, 400)}
    assert first["end_reason"].tolist() == [ipfix.END_LACK_OF_RESOURCES]
    recs = concat_records([first, cache.update(batch([2], [20], [5]), now=2.0), cache.flush()])
    assert cache.stats["collisions"] == 2  # split inside the batch, then the slot clash
    assert totals(recs) == {(1, 10): (2, 400), (2, 20): (2, 205)}


def test_sampled_counts_are_scaled_on_export():
    cache = FlowCache(sample=0.1)
    cache.update(batch([1, 1, 1], [10, 10, 10], [100, 100, 100]), now=1.0)
    assert cache.top(1)[0]["packets"] == 30
    recs = cache.flush()
    assert recs["packets"].tolist() == [30] and recs["octets"].tolist() == [3000]
