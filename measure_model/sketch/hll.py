"""HyperLogLog distinct counter over uint64 keys, mergeable by register maximum.

Design
------
``m = 2**p`` registers (``p`` 4..16) in a numpy uint8 array. A key is hashed
with the splitmix64 finaliser (a bijection of 64-bit words, applied after
xoring a fixed salt so it is independent of the count-min rows); the top
``p`` bits pick a register and the register keeps the maximum "rank" (1 +
leading zeros) of the remaining ``64 - p`` bits. Ranks are computed without
a per-key loop: the remaining bits, shifted down to 53 bits, convert exactly
to float64 and ``np.frexp`` returns their bit length (a key whose 53 top
remaining bits are all zero, probability 2**-53, gets the cap rank).

The estimate is the standard one (Flajolet et al. 2007) with linear counting
for small ranges; with a 64-bit hash no large-range correction is needed.
Its relative standard error is about ``1.04 / sqrt(m)`` (1.6% at p = 12,
4 KB). Two counters with the same precision merge exactly by taking the
register-wise maximum: the result equals a counter fed both streams.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from measure_model.sketch.countmin import mix64

HLL_SALT = np.uint64(0x5BD1E9955BD1E995)
MIN_PRECISION = 4
MAX_PRECISION = 16


def check_precision(precision: Any, where: str = "hll") -> None:
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise ValueError(f"{where}: precision must be an integer, got {precision!r}")
    if not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise ValueError(f"{where}: precision {precision} must be from "
                         f"{MIN_PRECISION} to {MAX_PRECISION}")


def _alpha(m: int) -> float:
    if m == 16:
        return 0.673
    if m == 32:
        return 0.697
    if m == 64:
        return 0.709
    return 0.7213 / (1.0 + 1.079 / m)


class HyperLogLog:
    """Distinct-count estimator; see the module docstring."""

    def __init__(self, precision: int = 12) -> None:
        check_precision(precision)
        self.precision = precision
        self.m = 1 << precision
        self.registers = np.zeros(self.m, dtype=np.uint8)

    def add(self, keys: np.ndarray) -> None:
        """Add a uint64 key array (repeats are harmless)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if keys.size == 0:
            return
        h = mix64(keys ^ HLL_SALT)
        p = np.uint64(self.precision)
        idx = (h >> (np.uint64(64) - p)).astype(np.intp)
        rest = (h << p) >> np.uint64(11)  # top 53 of the remaining bits
        _, bits = np.frexp(rest.astype(np.float64))
        rank = np.minimum(54 - bits, 65 - self.precision).astype(np.uint8)
        np.maximum.at(self.registers, idx, rank)

    def estimate(self) -> float:
        m = self.m
        raw = _alpha(m) * m * m / float(np.ldexp(1.0, -self.registers.astype(np.int64)).sum())
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return m * math.log(m / zeros)
        return raw

    def count(self) -> int:
        """Estimate rounded to an integer."""
        return int(round(self.estimate()))

    def merge(self, other: HyperLogLog) -> HyperLogLog:
        if self.precision != other.precision:
            raise ValueError(f"cannot merge HyperLogLog with precision {self.precision} "
                             f"and {other.precision}")
        out = HyperLogLog(self.precision)
        np.maximum(self.registers, other.registers, out=out.registers)
        return out

    def copy(self) -> HyperLogLog:
        out = HyperLogLog(self.precision)
        out.registers[...] = self.registers
        return out

    def update_from(self, other: HyperLogLog) -> None:
        """In-place merge."""
        if self.precision != other.precision:
            raise ValueError(f"cannot merge HyperLogLog with precision {self.precision} "
                             f"and {other.precision}")
        np.maximum(self.registers, other.registers, out=self.registers)

    def to_wire(self) -> str:
        """Base64 of the raw registers (the precision travels next to it)."""
        return base64.b64encode(self.registers.tobytes()).decode("ascii")

    @classmethod
    def from_wire(cls, registers: Any, precision: Any) -> HyperLogLog:
        check_precision(precision)
        if not isinstance(registers, str):
            raise ValueError("hll: registers must be a base64 string")
        try:
            raw = base64.b64decode(registers.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("hll: registers are not base64") from None
        out = cls(precision)
        if len(raw) != out.m:
            raise ValueError(f"hll: {len(raw)} registers, expected {out.m} for precision "
                             f"{precision}")
        out.registers[...] = np.frombuffer(raw, dtype=np.uint8)
        if int(out.registers.max()) > 65 - precision:
            raise ValueError("hll: register value out of range")
        return out
