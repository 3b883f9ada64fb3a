"""Distinct peers per key (superspreaders, DDoS victims) in a fixed budget, merged exactly.

Design
------
``depth x width`` cells of ``BITS`` bits each (uint64 words). A (key, peer)
pair sets, in row ``r``, one bit chosen by hashing the pair in the cell
``h_r(key)``; the distinct peers of a key are read from each of its cells by
linear counting (``-BITS ln(1 - ones / BITS)``) and the smallest row wins
(other keys only add bits, so each row over-counts). This is a count-min of
linear-counting bitmaps (the "virtual bitmap" family used by SpreadSketch);
it reads up to about ``BITS ln BITS`` peers (1,400 at 256 bits), and a key
with a full cell is reported as saturated, never as a smaller number.

Candidates: the keys a counter reports are kept in a bounded table (part of
the budget): every key of a batch whose estimate reaches ``min_distinct /
divisor`` joins, and the table keeps the largest ``capacity`` estimates.
Network-wide: a key with ``N`` distinct peers overall has at least ``N / n``
at one of ``n`` hosts (the union of n sets of sizes s_i holds at most sum
s_i), so with ``divisor = n`` each globally large key is a candidate at some
host.

Merge: cells are ORed. **Exact**: the merged bitmaps are bit for bit those
of one sketch fed the union stream (a pair seen on two hosts sets the same
bit), so merged estimates equal the union stream's; candidates unite.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from typing import Any

import numpy as np

from measure_model.sketch.countmin import mix64
from measure_model.sketch.elastic import MAX_MEMORY, MIN_MEMORY, hash_salts, reduce_hash

BITS = 256
DEPTH = 2
CANDIDATE_SHARE = 0.1


class SpreadSketch:
    """Distinct peers per key within ``memory`` bytes (module docstring)."""

    def __init__(self, memory: int, min_distinct: int, divisor: int = 1, seed: int = 1,
                 words: int = 1) -> None:
        self.memory, self.min_distinct, self.divisor, self.seed = memory, min_distinct, \
            divisor, seed
        self.key_words = words
        entry = 8 * (1 + (words if words > 1 else 0))
        self.capacity = max(16, int(memory * CANDIDATE_SHARE) // entry)
        per_cell = BITS // 8
        self.width = max(16, (memory - self.capacity * entry) // (per_cell * DEPTH))
        self.cells = np.zeros((DEPTH, self.width, BITS // 64), np.uint64)
        self.cand = np.zeros(0, np.uint64)
        self.cand_full = np.zeros((0, words) if words > 1 else 0, np.uint64)
        salts = hash_salts(seed ^ 0x5A5A, DEPTH + 1)
        self._pair_salt, self._row_salts = salts[0], salts[1:]

    @property
    def memory_bytes(self) -> int:
        """Cells plus the candidate table at its capacity."""
        entry = 8 * (1 + (self.key_words if self.key_words > 1 else 0))
        return int(self.cells.nbytes + self.capacity * entry)

    def _cells_of(self, keys: np.ndarray) -> list[np.ndarray]:
        return [reduce_hash(mix64(keys ^ s), self.width) for s in self._row_salts]

    def update(self, keys: np.ndarray, full: np.ndarray, peers: np.ndarray) -> None:
        """Add (key, peer) pairs (uint64 sketch keys of both; repeats are harmless)."""
        if keys.shape[0] == 0:
            return
        bit = mix64(mix64(keys ^ self._pair_salt) ^ peers) & np.uint64(BITS - 1)
        word = (bit >> np.uint64(6)).astype(np.int64)
        mask = np.uint64(1) << (bit & np.uint64(63))
        for r, cell in enumerate(self._cells_of(keys)):
            np.bitwise_or.at(self.cells[r], (cell, word), mask)
        uniq, first = np.unique(keys, return_index=True)
        est = self.estimate(uniq)
        passing = est >= self.min_distinct / self.divisor
        if passing.any():
            self._add_candidates(uniq[passing], full[first[passing]])

    def _add_candidates(self, keys: np.ndarray, full: np.ndarray) -> None:
        allk = np.concatenate([self.cand, keys])
        allf = np.concatenate([self.cand_full, full]) if self.key_words > 1 else allk
        allk, first = np.unique(allk, return_index=True)
        allf = allf[first]
        if allk.shape[0] > self.capacity:
            top = np.argsort(-self.estimate(allk), kind="stable")[: self.capacity]
            top.sort()
            allk, allf = allk[top], allf[top]
        self.cand = allk
        self.cand_full = allf if self.key_words > 1 else np.zeros(0, np.uint64)

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(sketch keys, full keys) of the candidate table."""
        return self.cand, (self.cand_full if self.key_words > 1 else self.cand)

    def estimate(self, keys: np.ndarray) -> np.ndarray:
        """Distinct peers per key (float; ``inf`` where every row's cell is full)."""
        keys = np.asarray(keys, np.uint64)
        out = np.full(keys.shape[0], np.inf)
        for r, cell in enumerate(self._cells_of(keys)):
            ones = np.bitwise_count(self.cells[r][cell]).sum(axis=1).astype(np.float64)
            with np.errstate(divide="ignore"):
                est = -BITS * np.log1p(-ones / BITS)
            out = np.minimum(out, est)
        return out

    def stderr(self, n: float) -> float:
        """Linear counting's standard error at ``n`` peers in one cell."""
        if not math.isfinite(n):
            return math.inf
        t = n / BITS
        return math.sqrt(max(BITS * (math.exp(t) - t - 1.0), 0.0))

    @property
    def saturation(self) -> float:
        """Largest peer count a cell can read."""
        return BITS * math.log(BITS)

    def params(self) -> dict[str, Any]:
        return {"memory": self.memory, "min_distinct": self.min_distinct,
                "divisor": self.divisor, "seed": self.seed, "words": self.key_words}

    def merge(self, other: SpreadSketch) -> SpreadSketch:
        """OR of the cells (exact) and the union of candidates."""
        if (self.memory, self.seed, self.key_words) != (other.memory, other.seed,
                                                         other.key_words):
            raise ValueError("cannot merge spread sketches with different parameters")
        out = SpreadSketch(**self.params())
        np.bitwise_or(self.cells, other.cells, out=out.cells)
        out.cand, out.cand_full = self.cand, self.cand_full
        ok, of = other.candidates()
        if ok.shape[0]:
            out._add_candidates(ok, of if self.key_words > 1 else ok)
        return out

    # ------------------------------------------------------------ wire
    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict: parameters, candidates and base64 zlib of the cells."""
        raw = self.cells.astype("<u8").tobytes() + self.cand.astype("<u8").tobytes() + \
            np.asarray(self.cand_full, np.uint64).astype("<u8").tobytes()
        return {**self.params(), "candidates": int(self.cand.shape[0]),
                "state": base64.b64encode(zlib.compress(raw, 1)).decode("ascii")}

    @classmethod
    def from_wire(cls, data: Any) -> SpreadSketch:
        """Rebuild from :meth:`to_wire` output; ValueError naming the field if malformed."""
        names = ("memory", "min_distinct", "divisor", "seed", "words", "candidates", "state")
        if not isinstance(data, dict) or set(data) != set(names):
            raise ValueError(f"spread must be an object with fields {', '.join(names)}")
        for name, lo, hi in (("memory", MIN_MEMORY, MAX_MEMORY), ("min_distinct", 1, 1 << 20),
                             ("divisor", 1, 1 << 20), ("seed", 0, (1 << 64) - 1),
                             ("words", 1, 8)):
            v = data[name]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"spread: {name} must be an integer from {lo} to {hi}")
        out = cls(data["memory"], data["min_distinct"], data["divisor"], data["seed"],
                  data["words"])
        n = data["candidates"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= out.capacity:
            raise ValueError(f"spread: candidates must be an integer from 0 to {out.capacity}")
        extra = out.key_words if out.key_words > 1 else 0
        expected = out.cells.nbytes + 8 * n + 8 * n * extra
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.b64decode(str(data["state"]).encode("ascii"),
                                                       validate=True), expected + 1)
        except (binascii.Error, UnicodeEncodeError, zlib.error) as exc:
            raise ValueError(f"spread: state is not base64 zlib data ({exc})") from None
        if len(raw) != expected or inflater.unconsumed_tail:
            raise ValueError(f"spread: state holds {len(raw)} bytes, expected {expected}")
        c = out.cells.nbytes
        out.cells[...] = np.frombuffer(raw[:c], "<u8").reshape(out.cells.shape)
        out.cand = np.frombuffer(raw[c:c + 8 * n], "<u8").astype(np.uint64)
        if extra:
            out.cand_full = np.frombuffer(raw[c + 8 * n:], "<u8").astype(np.uint64).reshape(
                n, extra)
        return out
