"""The elastic engine's state with exact ground truth: compiled == numpy, per-packet order
(batch size does not matter), exact IPv6 and mixed-family heavy parts, slot widths,
no under-estimate when 8-bit light counters saturate."""

from __future__ import annotations

import numpy as np
import pytest

from measure_model.packet.keys import HeaderBatch, addresses_of_v4, key_ints
from measure_model.sketch.elastic import ElasticSketch, ensure_compiled
from measure_model.sketch.elastic_slots import full_of_lanes, lanes_from_full

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", autouse=True)
def built():
    """The compiled path, built in place when this checkout has not built it yet."""
    assert ensure_compiled()


def zipf_batch(n: int, flows: int, skew: float, seed: int, v6_share: float = 0.0
               ) -> HeaderBatch:
    """A packet stream over random five-tuples (a share of them IPv6)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 2 ** 32, flows, dtype=np.uint64)
    dst = rng.integers(1, 2 ** 32, flows, dtype=np.uint64)
    sport = rng.integers(1024, 65535, flows)
    dport = rng.choice([53, 80, 443, 5001], flows)
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    pick = rng.choice(flows, size=n, p=p / p.sum())
    s6 = np.zeros((flows, 2), np.uint64)
    d6 = np.zeros((flows, 2), np.uint64)
    six = rng.random(flows) < v6_share
    s6[:, 0] = np.where(six, np.uint64(0x20010DB800000000) | src, 0)
    s6[:, 1] = np.where(six, dst, addresses_of_v4(src)[:, 1])
    d6[:, 0] = np.where(six, np.uint64(0x20010DB8FFFF0000), 0)
    d6[:, 1] = np.where(six, src ^ dst, addresses_of_v4(dst)[:, 1])
    family = np.where(six, 6, 4)[pick]
    return HeaderBatch.from_arrays(s6[pick], d6[pick], np.full(n, 17), sport[pick],
                                   dport[pick], rng.integers(60, 1500, n), family=family)


def state(es: ElasticSketch) -> list[np.ndarray]:
    out = [a for t in es.tables for a in (t.keys, t.count, t.flag, t.neg)]
    return out + [es.light, es.ov]


def assert_same(a: ElasticSketch, b: ElasticSketch) -> None:
    for x, y in zip(state(a), state(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.clamped == b.clamped


def feed(es: ElasticSketch, b: HeaderBatch, key: str, batch: int, weights: np.ndarray
         ) -> None:
    hk, full = b.sketch_keys(key), b.full_keys(key)
    for i in range(0, hk.shape[0], batch):
        es.update(hk[i:i + batch], full[i:i + batch], weights[i:i + batch])


@pytest.mark.parametrize("key,increment,family,v6", [
    ("src", "pkt", 4, 0.0), ("five_tuple", "pkt", 0, 0.3), ("src_dst", "bytes", 0, 0.5),
    ("sport", "pkt", 0, 0.2), ("src_dport", "bytes", 6, 1.0), ("five_tuple", "bytes", 4, 0.1)])
def test_compiled_and_numpy_give_identical_state(key, increment, family, v6):
    b = zipf_batch(30_000, 8_000, 1.0, seed=3, v6_share=v6)
    w = np.ones(len(b), np.uint64) if increment == "pkt" else b.length.astype(np.uint64)
    c = ElasticSketch(16 * 1024, key, increment, family=family, engine="c")
    n = ElasticSketch(16 * 1024, key, increment, family=family, engine="numpy")
    feed(c, b, key, 30_000, w)
    feed(n, b, key, 1024, w)
    assert_same(c, n)
    assert c.heavy_total() > 0 and c.light_total() > 0  # both parts took packets
    assert c.heavy_total() + c.light_total() == int(w.sum())


def test_state_does_not_depend_on_batch_size():
    b = zipf_batch(6_000, 3_000, 1.1, seed=4)
    w = np.ones(len(b), np.uint64)
    states = []
    for size, engine in ((1, "c"), (7, "c"), (256, "numpy"), (4096, "numpy"),
                         (6_000, "c")):
        es = ElasticSketch(4096, "five_tuple", family=4, engine=engine)
        feed(es, b, "five_tuple", size, w)
        states.append(es)
    for other in states[1:]:
        assert_same(states[0], other)


@pytest.mark.parametrize("key,v4,v6", [("src", 4, 16), ("dst", 4, 16), ("src_dst", 8, 32),
                                       ("src_dport", 8, 20), ("five_tuple", 16, 40),
                                       ("dport", 4, 4), ("proto", 4, 4)])
def test_slot_width_follows_key_and_family(key, v4, v6):
    one4 = ElasticSketch(128 * 1024, key, family=4)
    one6 = ElasticSketch(128 * 1024, key, family=6)
    assert one4.tables[0].keys.shape[2] * 4 == v4
    assert one6.tables[0].keys.shape[2] * 4 == v6
    both = ElasticSketch(128 * 1024, key, family=0)
    assert len(both.tables) == (1 if key in ("dport", "proto") else 2)


@pytest.mark.parametrize("key", ["src", "dst", "src_dst", "src_dport", "dst_dport",
                                 "five_tuple"])
def test_lanes_round_trip_exactly(key):
    b = zipf_batch(2_000, 2_000, 0.5, seed=5, v6_share=0.5)
    full = b.full_keys(key)
    fam = np.where(b.family == 4, 4, 6)
    for f in (4, 6):
        rows = fam == f
        back = full_of_lanes(key, f, lanes_from_full(key, f, full[rows]))
        assert np.array_equal(back, full[rows])


@pytest.mark.parametrize("family,v6", [(6, 1.0), (0, 0.5)])
def test_ipv6_and_mixed_heavy_parts_are_exact(family, v6):
    """Fewer flows than slots: every flow owns an entry, exact, with its exact key."""
    b = zipf_batch(20_000, 300, 1.0, seed=6, v6_share=v6)
    es = ElasticSketch(256 * 1024, "five_tuple", family=family)
    feed(es, b, "five_tuple", 256, np.ones(len(b), np.uint64))
    full = b.full_keys("five_tuple")
    keys, counts = np.unique(np.array(key_ints("five_tuple", full), dtype=object),
                             return_counts=True)
    truth = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    e = es.entries()
    got = dict(zip(key_ints("five_tuple", e["full"]), e["count"].tolist(), strict=True))
    assert got == truth and not e["flag"].any()
    assert es.light_total() == 0
    if family == 0:
        assert all(t.count.sum() > 0 for t in es.tables)  # both families counted


def test_never_under_when_8bit_light_counters_saturate():
    """A tiny light part under many packets: cells pass 255, nothing is under-estimated."""
    b = zipf_batch(300_000, 20_000, 0.9, seed=7)
    es = ElasticSketch(4096, "src", family=4)
    feed(es, b, "src", 4096, np.ones(len(b), np.uint64))
    assert es.saturated > 0 and int(es.ov.sum()) > 0
    hk = b.sketch_keys("src")
    keys, counts = np.unique(hk, return_counts=True)
    est = es.query(keys)
    assert (est >= counts).all() and es.never_under()
    assert es.heavy_total() + es.light_total() == len(b)
    merged = es.merge(es)  # merging two saturated parts keeps the bound
    assert (merged.query(keys) >= 2 * counts).all()
    assert merged.heavy_total() + merged.light_total() == 2 * len(b)
