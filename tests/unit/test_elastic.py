"""Elastic counter and spread sketch: exact ground truth per answer, one host and merged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from measure_model import answers
from measure_model.packet.keys import HeaderBatch, format_key, key_ints, parsed_keys, sketch_keys_of
from measure_model.sketch import estimators as elastic_est
from measure_model.sketch.elastic import ElasticSketch
from measure_model.sketch.spread import SpreadSketch
from measure_model.wire.elastic_snapshot import ranked, top_entries
from testing.checks import some

pytestmark = pytest.mark.unit


def zipf(n: int, flows: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = rng.integers(1, 2 ** 63, flows, dtype=np.uint64)
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    return keys[rng.choice(flows, size=n, p=p / p.sum())]


def full_of(key_type: str, keys: np.ndarray) -> np.ndarray:
    """keys.py's full keys of 64-bit values read as IPv4 ``src << 32 | dst`` (whose
    sketch keys are those values) or, for ``src``, as IPv4 addresses."""
    z = np.zeros(keys.shape[0], np.uint64)
    if key_type == "src":
        return HeaderBatch.from_arrays(keys, z, z, z, z, z).full_keys("src")
    return HeaderBatch.from_arrays(keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF),
                                   z, z, z, z).full_keys(key_type)


def feed(es: ElasticSketch, stream: np.ndarray, batch: int = 256) -> None:
    for i in range(0, stream.shape[0], batch):
        part = stream[i:i + batch]
        es.update(part, full_of("src_dst", part), np.ones(part.shape[0], np.uint64))


def split(stream: np.ndarray, hosts: int) -> list[np.ndarray]:
    return [stream[(stream % np.uint64(hosts)) == h] for h in range(hosts)]


def merged(parts: list[np.ndarray], memory: int, batch: int = 256) -> ElasticSketch:
    out = None
    for part in parts:
        es = ElasticSketch(memory, "src_dst")
        feed(es, part, batch)
        out = es if out is None else out.merge(es)
    return some(out)


def truth(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(stream, return_counts=True)


# ---------------------------------------------------------------- budget and bounds
@pytest.mark.parametrize("memory", [4096, 128 * 1024, 512 * 1024, 2 << 20])
@pytest.mark.parametrize("key", ["src", "src_dst", "five_tuple"])
def test_memory_bytes_is_every_array_and_within_budget(memory, key):
    es = ElasticSketch(memory, key)
    arrays = sum(a.nbytes for obj in [es, *es.tables] for name, a in vars(obj).items()
                 if isinstance(a, np.ndarray) and not name.startswith("_"))
    assert es.memory_bytes == arrays  # private arrays: hash constants, not state
    assert 0.9 * memory <= es.memory_bytes <= memory


def test_estimates_never_below_truth_and_packets_conserved():
    stream = zipf(200_000, 30_000, 1.1, seed=1)
    es = ElasticSketch(64 * 1024, "src_dst")
    feed(es, stream)
    keys, counts = truth(stream)
    est = es.query(keys)
    assert (est >= counts).all()
    # every packet is in a heavy entry or in each light row, exactly once
    assert es.heavy_total() + es.light_total() == stream.shape[0]
    exact = es.exact_mask(keys)
    assert exact.any() and (est[exact] == counts[exact]).all()
    bound = es.error_bound(0.95)
    assert np.mean(est - counts <= bound["abs"]) >= 0.95


@pytest.mark.parametrize("hosts", [2, 8])
def test_merge_light_part_is_the_union_streams_and_bounds_hold(hosts):
    stream = zipf(150_000, 20_000, 1.1, seed=2)
    parts = split(stream, hosts)
    m = merged(parts, 128 * 1024)
    keys, counts = truth(stream)
    est = m.query(keys)
    assert (est >= counts).all()
    assert m.heavy_total() + m.light_total() == stream.shape[0]
    # the light part is linear: with nothing moved at the merge, it is the cell sum
    singles = []
    for part in parts:
        es = ElasticSketch(128 * 1024, "src_dst")
        feed(es, part)
        singles.append(es)
    cells = np.minimum(sum(s.light.astype(np.int64) for s in singles), m.cell_max)
    moved = m.light.astype(np.int64) - cells
    assert (moved >= 0).all()
    e = m.entries()
    assert (e["count"] > 0).all()


def test_small_traffic_is_exact_merged_or_not():
    rng = np.random.default_rng(5)
    flows = rng.integers(1, 2 ** 63, 60, dtype=np.uint64)
    sizes = rng.integers(1, 40, 60)
    stream = rng.permutation(np.repeat(flows, sizes))
    for hosts in (1, 3):
        m = merged(split(stream, hosts), 64 * 1024)
        assert (m.query(flows) == sizes).all()
        assert m.exact_mask(flows).all()
        hist = elastic_est.distribution(m)
        expect = {int(s): float(n) for s, n in zip(*np.unique(sizes, return_counts=True),
                                                   strict=True)}
        assert hist["histogram"] == expect and hist["flows"] == 60
        assert elastic_est.cardinality(m)["estimate"] == 60
        total = int(sizes.sum())
        h = math.log2(total) - sum(s * math.log2(s) for s in sizes.tolist()) / total
        assert elastic_est.entropy(hist["histogram"], total) == pytest.approx(h)


def test_heavy_changers_exact_on_known_intervals():
    rng = np.random.default_rng(6)
    flows = rng.integers(1, 2 ** 63, 40, dtype=np.uint64)
    first = np.repeat(flows, 50)
    second_sizes = np.full(40, 50)
    second_sizes[7] = 400  # the one flow whose rate changed
    second = np.repeat(flows, second_sizes)
    es = ElasticSketch(64 * 1024, "src_dst")
    feed(es, rng.permutation(first))
    s1 = es.copy()
    feed(es, rng.permutation(second))
    out = elastic_est.changers(None, s1, es, threshold=100)
    assert [(int(sketch_keys_of("src_dst", np.asarray(k)[None])[0]), b, a)
            for k, b, a in out] == [(int(flows[7]), 50, 400)]
    # merged over hosts: the same answer
    parts1, parts2 = split(first, 4), split(second, 4)
    m1 = merged(parts1, 64 * 1024)
    m2 = merged([np.concatenate([a, b]) for a, b in zip(parts1, parts2, strict=True)],
                64 * 1024)
    out = elastic_est.changers(None, m1, m2, threshold=100)
    assert [(int(sketch_keys_of("src_dst", np.asarray(k)[None])[0]), b, a)
            for k, b, a in out] == [(int(flows[7]), 50, 400)]


def test_interval_state_is_the_second_interval():
    rng = np.random.default_rng(11)
    flows = rng.integers(1, 2 ** 63, 50, dtype=np.uint64)
    first, second = rng.integers(1, 30, 50), rng.integers(0, 30, 50)
    for hosts in (1, 4):
        one = rng.permutation(np.repeat(flows, first))
        two = rng.permutation(np.repeat(flows, second))
        s1 = merged(split(one, hosts), 64 * 1024)
        s2 = merged([np.concatenate([a, b]) for a, b in
                     zip(split(one, hosts), split(two, hosts), strict=True)], 64 * 1024)
        part = elastic_est.interval_state(s1, s2)
        assert part.query(flows).tolist() == second.tolist()
        sizes = second[second > 0]
        expect = {int(s): float(n) for s, n in zip(*np.unique(sizes, return_counts=True),
                                                   strict=True)}
        assert elastic_est.distribution(part)["histogram"] == expect
        total = int(sizes.sum())
        h = math.log2(total) - sum(s * math.log2(s) for s in sizes.tolist()) / total
        assert elastic_est.entropy(expect, total) == pytest.approx(h)


def _churn(rng: np.random.Generator, flows: np.ndarray, skew: float, cap: int
           ) -> np.ndarray:
    """A shuffled stream of ``flows`` with Zipf sizes (at most ``cap`` packets)."""
    return rng.permutation(np.repeat(flows, np.minimum(rng.zipf(skew, flows.shape[0]), cap)))


@pytest.mark.parametrize("memory,flows,skew,hosts,trials", [
    (4096, 600, 1.5, 1, 100),   # 1,020 light cells for about 750 interval flows
    (4096, 600, 1.5, 3, 100),   # merged: the merge also moves heavy counts to the light part
    (4096, 600, 1.2, 1, 30),    # big flows: about 120 light cells saturated
])
def test_interval_cardinality_band_holds_the_truth_under_churn(memory, flows, skew, hosts,
                                                               trials):
    """Flows that stop and start between two reports: half of the first interval's keys
    go on, as many new ones come (they evict old keys from the heavy part). The interval's
    distinct keys lie in [lower, upper] in at least the band's confidence less sampling
    slack of the trials, and the estimate has no bias (an evicted key used to be counted
    in the interval it was evicted in: most trials missed, the mean error about +3
    standard errors)."""
    missed, errors, unknown = 0, [], 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        first = rng.choice(2 ** 40, flows, replace=False).astype(np.uint64) + np.uint64(1)
        new = rng.choice(2 ** 40, flows * 3 // 4, replace=False).astype(np.uint64) \
            + np.uint64(2 ** 41)
        second = np.concatenate([first[rng.random(flows) < 0.5], new])
        one, two = _churn(rng, first, skew, 600), _churn(rng, second, skew, 600)
        prev = merged(split(one, hosts), memory, one.shape[0])
        cur = merged([np.concatenate([a, b]) for a, b in
                      zip(split(one, hosts), split(two, hosts), strict=True)], memory,
                     one.shape[0] + two.shape[0])
        got = answers.answer("cardinality", {"elastic": cur.to_wire()}, [prev])
        c = got["cardinality"]["interval"]
        assert c["confidence"] == answers.CONFIDENCE == 0.95
        truth_n = second.shape[0]
        missed += not c["lower"] <= truth_n <= c["upper"]
        errors.append((c["estimate"] - truth_n) / c["stderr"])
        unknown += c["unknown_cells"]
    # at 95%, 100 trials miss 5 on average; 12 or more is a 1-in-200 draw (the seeds are
    # fixed: 4 and 4 missed, and 0 of 30 with saturated cells)
    assert missed <= max(1, trials * 0.11), (missed, trials)
    if skew == 1.5:
        assert abs(float(np.mean(errors))) < 0.5, np.mean(errors)
    else:  # the band widened over the unknown cells (the estimate reads low there)
        assert unknown > 50 * trials


def test_distribution_cardinality_entropy_on_a_large_trace():
    stream = zipf(400_000, 60_000, 1.1, seed=7)
    keys, counts = truth(stream)
    exact_hist = {int(s): float(n) for s, n in zip(*np.unique(counts, return_counts=True),
                                                   strict=True)}
    total = stream.shape[0]
    h = math.log2(total) - float((counts * np.log2(counts)).sum()) / total
    for es in (merged([stream], 256 * 1024), merged(split(stream, 8), 256 * 1024)):
        d = elastic_est.distribution(es)
        assert elastic_est.wmre(exact_hist, d["histogram"]) < 0.1
        card = elastic_est.cardinality(es)
        assert abs(card["estimate"] - keys.shape[0]) <= max(4 * card["stderr"],
                                                            0.01 * keys.shape[0])
        assert abs(elastic_est.entropy(d["histogram"], total) - h) / h < 0.02


def test_wide_keys_keep_their_full_words():
    batch = HeaderBatch.from_arrays([0x0A000001, 0x0A000002], [0x0A000003, 0x0A000003],
                                    [17, 6], [5001, 80], [5201, 443], [100, 60])
    full = batch.full_keys("five_tuple")
    hk = sketch_keys_of("five_tuple", full)
    es = ElasticSketch(32 * 1024, "five_tuple")
    es.update(hk, full, np.array([3, 4]))
    e = es.entries()
    order = np.argsort(e["count"])
    assert e["full"][order].tolist() == full.tolist()
    assert es.query(hk).tolist() == [3, 4]


def test_wire_round_trip_and_malformed_state():
    stream = zipf(50_000, 5_000, 1.1, seed=8)
    es = ElasticSketch(32 * 1024, "src_dst")
    feed(es, stream)
    back = ElasticSketch.from_wire(es.to_wire())
    for mine, theirs in zip(es.tables, back.tables, strict=True):
        for name in ("keys", "count", "flag", "neg"):
            assert (getattr(mine, name) == getattr(theirs, name)).all()
    assert (back.light == es.light).all() and (back.ov == es.ov).all()
    wire = es.to_wire()
    for bad, message in (({**wire, "state": "!!"}, "base64"),
                         ({**wire, "entries": [wire["entries"][0] - 1,
                                               *wire["entries"][1:]]}, "bytes"),
                         ({**wire, "entries": 3}, "entries"),
                         ({**wire, "slots": True}, "slots"),
                         ({**wire, "extra": 1}, "unknown field"),
                         ({k: v for k, v in wire.items() if k != "light_depth"},
                          "light_depth")):
        with pytest.raises(ValueError, match=message):
            ElasticSketch.from_wire(bad)
    with pytest.raises(ValueError, match="different parameters"):
        es.merge(ElasticSketch(64 * 1024, "src_dst"))


# ---------------------------------------------------------------- spread
def spread_stream(seed: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    rng = np.random.default_rng(seed)
    src, dst, true = [], [], {}
    for i, n in enumerate([300, 250, 8, 2, 1] + [1] * 200):
        s = 1000 + i
        peers = rng.integers(1, 2 ** 32, n, dtype=np.uint64)
        reps = rng.integers(1, 4, n)
        src.append(np.full(int(reps.sum()), s, np.uint64))
        dst.append(np.repeat(peers, reps))
        true[s] = n
    order = rng.permutation(sum(x.shape[0] for x in src))
    return np.concatenate(src)[order], np.concatenate(dst)[order], true


def test_spread_merge_equals_the_union_stream_and_finds_spreaders():
    src, dst, true = spread_stream(9)
    whole = SpreadSketch(64 * 1024, 100, divisor=8)
    whole.update(src, full_of("src", src), dst)
    parts = None
    for h in range(8):
        mine = (dst % np.uint64(8)) == h
        ss = SpreadSketch(64 * 1024, 100, divisor=8)
        for i in range(0, int(mine.sum()), 64):
            ss.update(src[mine][i:i + 64], full_of("src", src[mine][i:i + 64]),
                      dst[mine][i:i + 64])
        parts = ss if parts is None else parts.merge(ss)
    parts = some(parts)
    assert (parts.cells == whole.cells).all()  # exact: OR of bitmaps
    cand, _ = parts.candidates()
    est = parts.estimate(cand)
    assert set(cand[est >= 100].tolist()) == {1000, 1001}
    for s, n in ((1000, 300), (1001, 250)):
        e = float(parts.estimate(np.array([s], np.uint64))[0])
        assert abs(e - n) <= 4 * parts.stderr(n)
    assert parts.memory_bytes <= 64 * 1024


def test_em_recovers_sizes_from_a_loaded_row():
    """Two flows per cell on average (the load at 128 KB with 200k flows): the EM's
    histogram is close to the flows placed (the previous EM, at most 4 flows a cell:
    WMRE 0.25 and 0.34, 16-22% of the flows lost), far closer than the cell values
    read as one flow each."""
    rng = np.random.default_rng(3)
    w, n = 20_000, 40_000
    for sizes, bound in ((rng.geometric(0.35, n), 0.08),
                         (np.minimum(rng.zipf(1.8, n), 200), 0.2)):
        row = np.bincount(rng.integers(0, w, n), weights=sizes, minlength=w).astype(np.int64)
        exact = {int(s): float(c) for s, c in zip(*np.unique(sizes, return_counts=True),
                                                  strict=True)}
        raw = {int(v): float(c) for v, c in enumerate(np.bincount(row)) if v and c}
        est = elastic_est.em_distribution(row)
        assert elastic_est.wmre(exact, est) < bound
        assert elastic_est.wmre(exact, est) < 0.25 * elastic_est.wmre(exact, raw)
        assert abs(sum(est.values()) - n) < 0.03 * n


# ---------------------------------------------------------------- ranking
def test_ranking_lists_the_largest_entries_ties_by_key_at_any_limit():
    # two flows per size: ties at every boundary, and fewer entries than some limits
    stream = np.repeat(np.arange(1, 61, dtype=np.uint64) << np.uint64(32),
                       np.repeat(np.arange(30, 0, -1), 2))
    es = ElasticSketch(64 * 1024, "src_dst")
    feed(es, stream)
    e = es.entries()
    every = sorted(zip(key_ints("src_dst", e["full"]), (e["count"] + e["light"]).tolist(),
                       strict=True), key=lambda p: (-p[1], p[0]))
    assert len(every) == 60 and every[0][1] == every[1][1] == 30
    for threshold in (None, 1, 15, 30, 31):
        listed = [p for p in every if threshold is None or p[1] >= threshold]
        for limit in (0, 1, 2, 3, 7, 60, 100):
            want = [(format_key("src_dst", k), v) for k, v in listed[:limit]]
            assert ranked(es, threshold, limit) == want
            ints, est, hk = top_entries(es, threshold, limit)
            assert list(zip(ints, est, strict=True)) == listed[:limit]
            assert hk.tolist() == parsed_keys("src_dst", [k for k, _ in want])[1].tolist()
