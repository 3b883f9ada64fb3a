"""Count-min sketch: never underestimates, exact merge in plain mode, wire format."""

from __future__ import annotations

import base64
import zlib
from collections import Counter as Exact

import numpy as np
import pytest

from measure_model.sketch.countmin import CountMinSketch
from testing.checks import some

pytestmark = pytest.mark.unit


def zipf_stream(n: int, flows: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, flows + 1, dtype=np.float64)
    p = ranks ** -skew
    keys = rng.permutation(flows).astype(np.uint64) * np.uint64(2654435761) + np.uint64(7)
    return keys[rng.choice(flows, size=n, p=p / p.sum())]


def feed(sketch: CountMinSketch, stream: np.ndarray, weights: np.ndarray, batch: int) -> None:
    for i in range(0, stream.shape[0], batch):
        sketch.add(stream[i:i + batch], weights[i:i + batch])


def exact(stream: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, inverse = np.unique(stream, return_inverse=True)
    return keys, np.bincount(inverse, weights=weights).astype(np.int64)


@pytest.mark.parametrize("conservative", [True, False])
def test_never_underestimates_with_batched_updates(conservative):
    stream = zipf_stream(60_000, 5_000, 1.0, seed=3)
    weights = np.asarray(np.random.default_rng(4).integers(40, 1500, stream.shape[0]))
    sketch = CountMinSketch(width=256, depth=3, seed=9, conservative=conservative)
    feed(sketch, stream, weights, batch=256)
    keys, truth = exact(stream, weights)
    est = sketch.query(keys)
    assert (est >= truth).all()
    assert sketch.query(np.array([12345], np.uint64))[0] >= 0


def test_conservative_cells_never_exceed_plain_cells():
    stream = zipf_stream(50_000, 4_000, 1.1, seed=5)
    ones = np.ones(stream.shape[0], np.int64)
    cu = CountMinSketch(width=512, depth=4, seed=2, conservative=True)
    plain = CountMinSketch(width=512, depth=4, seed=2, conservative=False)
    feed(cu, stream, ones, 200)
    feed(plain, stream, ones, 200)
    assert (cu.cells <= plain.cells).all()
    keys, truth = exact(stream, ones)
    cu_err = (cu.query(keys) - truth).sum()
    plain_err = (plain.query(keys) - truth).sum()
    assert 0 <= cu_err < plain_err


def test_plain_merge_equals_one_sketch_over_union_stream():
    parts = [zipf_stream(20_000, 3_000, 1.1, seed=s) for s in range(4)]
    union = CountMinSketch(width=1024, depth=4, seed=11, conservative=False)
    merged = None
    for part in parts:
        sk = CountMinSketch(width=1024, depth=4, seed=11, conservative=False)
        feed(sk, part, np.ones(part.shape[0], np.int64), 333)
        merged = sk if merged is None else merged.merge(sk)
    feed(union, np.concatenate(parts), np.ones(80_000, np.int64), 1000)
    assert np.array_equal(some(merged).cells, union.cells)


def test_conservative_merge_is_upper_bound_below_plain_union():
    parts = [zipf_stream(20_000, 3_000, 1.1, seed=s) for s in range(3)]
    plain_union = CountMinSketch(width=512, depth=4, seed=1, conservative=False)
    merged = None
    for part in parts:
        sk = CountMinSketch(width=512, depth=4, seed=1)
        feed(sk, part, np.ones(part.shape[0], np.int64), 256)
        merged = sk if merged is None else merged.merge(sk)
    whole = np.concatenate(parts)
    feed(plain_union, whole, np.ones(whole.shape[0], np.int64), 256)
    keys, truth = exact(whole, np.ones(whole.shape[0]))
    assert (some(merged).query(keys) >= truth).all()
    assert (some(merged).cells <= plain_union.cells).all()


def test_merge_rejects_different_parameters():
    with pytest.raises(ValueError) as err:
        CountMinSketch(1024, 4, 1).merge(CountMinSketch(1024, 4, 2))
    assert str(err.value) == ("cannot merge sketches with different parameters: "
                              "width/depth/seed 1024/4/1 vs 1024/4/2")


def test_wire_round_trip_and_same_seed_same_hashes():
    a = CountMinSketch(2048, 5, 77)
    a.add(np.arange(5000, dtype=np.uint64) % 321, np.arange(5000) % 7)
    wire = a.to_wire()
    assert set(wire) == {"width", "depth", "seed", "conservative", "cells"}
    b = CountMinSketch.from_wire(wire)
    assert np.array_equal(a.cells, b.cells) and b.conservative
    keys = np.arange(400, dtype=np.uint64)
    assert np.array_equal(a.query(keys), b.query(keys))
    assert np.array_equal(CountMinSketch(2048, 5, 77).indices(keys),
                          CountMinSketch(2048, 5, 77).indices(keys))
    assert a.memory_bytes == 2048 * 5 * 8


def _cells(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode()


@pytest.mark.parametrize(("wire", "message"), [
    ([], "sketch must be an object"),
    ({"width": 64, "depth": 1, "seed": 1}, "sketch: missing field 'cells'"),
    ({"width": 100, "depth": 1, "seed": 1, "cells": ""},
     "sketch: width 100 must be a power of two from 64 to 4194304"),
    ({"width": 64, "depth": 9, "seed": 1, "cells": ""}, "sketch: depth 9 must be from 1 to 8"),
    ({"width": 64, "depth": 1, "seed": "1", "cells": ""},
     "sketch: seed must be an integer, got '1'"),
    ({"width": 64, "depth": 1, "seed": 1, "cells": 5}, "sketch: cells must be a base64 string"),
    ({"width": 64, "depth": 1, "seed": 1, "cells": _cells(bytes(8 * 63))},
     "sketch: cells hold 504 bytes, expected 512 for width 64 depth 1"),
    ({"width": 64, "depth": 1, "seed": 1, "cells": _cells(bytes(10_000_000))},
     "sketch: cells hold 513+ bytes, expected 512 for width 64 depth 1"),
    ({"width": 64, "depth": 1, "seed": 1, "cells": _cells(b"\xff" * 512)},
     "sketch: cells must be non-negative"),
    ({"width": 64, "depth": 1, "seed": 1, "conservative": "yes", "cells": ""},
     "sketch: conservative must be true or false"),
])
def test_from_wire_rejects_bad_input(wire, message):
    with pytest.raises(ValueError) as err:
        CountMinSketch.from_wire(wire)
    assert str(err.value) == message


def test_from_wire_rejects_garbage_cells():
    with pytest.raises(ValueError) as err:
        CountMinSketch.from_wire({"width": 64, "depth": 1, "seed": 1, "cells": "!!!"})
    assert str(err.value).startswith("sketch: cells are not base64 zlib data")


def test_add_aggregates_repeated_keys_exactly_when_no_collisions():
    sk = CountMinSketch(1 << 16, 4, 3)
    stream = np.array([5, 5, 5, 9, 9, 1], np.uint64)
    sk.add(stream, 1)
    counts = Exact(stream.tolist())
    assert sk.query(np.array([5, 9, 1, 2], np.uint64)).tolist() == [counts[5], counts[9],
                                                                    counts[1], 0]
    assert sk.query_one(5) == 3
