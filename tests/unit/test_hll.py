"""HyperLogLog: error within its bound, exact merge, wire format."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from measure_model.sketch.hll import HyperLogLog

pytestmark = pytest.mark.unit


def keys(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64)


@pytest.mark.parametrize("precision", [10, 12, 14])
@pytest.mark.parametrize("n", [50, 5_000, 200_000])
def test_error_within_three_standard_errors(precision, n):
    hll = HyperLogLog(precision)
    hll.add(keys(n, seed=n + precision))
    bound = 3 * 1.04 / math.sqrt(1 << precision)
    assert abs(hll.estimate() - n) / n <= bound


def test_mean_error_over_many_sets_matches_theory():
    errors = []
    for seed in range(40):
        hll = HyperLogLog(12)
        hll.add(keys(20_000, seed))
        errors.append((hll.estimate() - 20_000) / 20_000)
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert rms <= 1.3 * 1.04 / 64


def test_structured_keys_and_repeats():
    hll = HyperLogLog(12)
    ips = np.arange(0x0A000000, 0x0A000000 + 30_000, dtype=np.uint64)
    for _ in range(3):
        hll.add(ips)
    assert abs(hll.estimate() - 30_000) / 30_000 <= 3 * 1.04 / 64
    empty = HyperLogLog(8)
    assert empty.count() == 0


def test_merge_equals_union_and_error_within_bound():
    parts = [keys(30_000, seed) for seed in range(10)]
    merged = HyperLogLog(12)
    for part in parts:
        one = HyperLogLog(12)
        one.add(part)
        merged = merged.merge(one)
    union = HyperLogLog(12)
    union.add(np.concatenate(parts))
    assert np.array_equal(merged.registers, union.registers)
    true = np.unique(np.concatenate(parts)).shape[0]
    assert abs(merged.estimate() - true) / true <= 3 * 1.04 / 64
    # overlapping hosts: a sum of per-host counts would double count, the merge does not
    a, b = HyperLogLog(12), HyperLogLog(12)
    a.add(parts[0])
    b.add(parts[0])
    assert a.merge(b).count() == a.count()


def test_wire_round_trip_and_errors():
    hll = HyperLogLog(6)
    hll.add(keys(1000, 1))
    back = HyperLogLog.from_wire(hll.to_wire(), 6)
    assert np.array_equal(back.registers, hll.registers)
    with pytest.raises(ValueError) as err:
        HyperLogLog.from_wire(hll.to_wire(), 7)
    assert str(err.value) == "hll: 64 registers, expected 128 for precision 7"
    with pytest.raises(ValueError) as err:
        HyperLogLog(17)
    assert str(err.value) == "hll: precision 17 must be from 4 to 16"
    with pytest.raises(ValueError) as err:
        HyperLogLog.from_wire("AAAA", 4)
    assert str(err.value) == "hll: 3 registers, expected 16 for precision 4"
    with pytest.raises(ValueError) as err:
        HyperLogLog.from_wire(base64.b64encode(b"\xff" * 16).decode(), 4)
    assert str(err.value) == "hll: register value out of range"
    with pytest.raises(ValueError) as err:
        HyperLogLog(12).merge(HyperLogLog(10))
    assert str(err.value) == "cannot merge HyperLogLog with precision 12 and 10"
