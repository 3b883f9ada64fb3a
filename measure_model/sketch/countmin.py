"""Count-min sketch on a numpy array, updated a batch of unique keys at a time.

Design
------
The sketch is a ``depth x width`` int64 array (``width`` a power of two).
Row ``i`` hashes a 64-bit key ``x`` with seeded multiply-shift,
``((a_i * x + b_i) mod 2**64) >> (64 - log2(width))`` with ``a_i`` odd: a
universal family that costs two vectorised integer operations per row. The
row parameters come from ``seed`` through splitmix64 in plain Python, so two
hosts with the same ``(width, depth, seed)`` build identical hash functions
whatever their numpy version, and their sketches can be added cell by cell.

Keys arrive as numpy ``uint64`` arrays of *unique* keys with their counts (the
counter aggregates each packet batch first), so one update is a handful of
array operations however many packets the batch held.

Two update rules:

* **plain** (``conservative=False``): every row cell of a key grows by its
  count. The sketch is linear: the cell sum of sketches built on parts of a
  stream *equals* the sketch of the whole stream, exactly.
* **conservative update** (``conservative=True``, the default): a key's cells
  are raised only as far as ``old estimate + count``. Done for a whole batch
  with ``np.maximum.at`` it still never underestimates: before the batch each
  cell of key ``k`` is at least ``k``'s true count ``t_k``, so its old
  estimate ``e_k >= t_k`` and every cell of ``k`` ends ``>= e_k + c_k >= t_k +
  c_k`` (other keys only raise cells further). Keys must be unique within a
  batch, otherwise two counts of one key would collapse into their maximum.

Why conservative is the default: each conservative cell is at most the plain
cell for the same stream (by induction, ``e_k + c_k <= plain_old + c_k``), so
it is never less accurate. Adding conservative sketches from several hosts
still gives an upper bound of every key's total, and that sum is at most the
plain sketch of the union stream, though it may exceed a single conservative
sketch fed the union stream. So merged global results stay correct and at
least as accurate as plain ones; only the exact equality "sum of parts ==
sketch of the union" needs ``conservative=False``, which tasks can ask for.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import numpy as np

# the bounds are the task table's, so a sketch takes exactly what a task may ask for
from measure_model.task import (
    DEFAULT_DEPTH,
    DEFAULT_SEED,
    DEFAULT_WIDTH,
    MAX_DEPTH,
    MAX_SEED,
    MAX_WIDTH,
    MIN_WIDTH,
)

MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One splitmix64 output for state ``x`` (the state advance is the caller's)."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser of a uint64 array (a bijection)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_parameters(seed: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift parameters ``(a, b)`` for ``depth`` rows, as (depth, 1) uint64."""
    a, b = [], []
    state = (seed * 0xD1B54A32D192ED03) & MASK64
    for _ in range(depth):
        state = (state + 1) & MASK64
        a.append(splitmix64(state) | 1)
        state = (state + 1) & MASK64
        b.append(splitmix64(state))
    return (np.array(a, dtype=np.uint64).reshape(depth, 1),
            np.array(b, dtype=np.uint64).reshape(depth, 1))


def check_params(width: Any, depth: Any, seed: Any, where: str = "sketch") -> None:
    """Raise ValueError naming the field when sketch parameters are invalid."""
    if isinstance(width, bool) or not isinstance(width, int):
        raise ValueError(f"{where}: width must be an integer, got {width!r}")
    if width < MIN_WIDTH or width > MAX_WIDTH or width & (width - 1):
        raise ValueError(f"{where}: width {width} must be a power of two "
                         f"from {MIN_WIDTH} to {MAX_WIDTH}")
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"{where}: depth must be an integer, got {depth!r}")
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"{where}: depth {depth} must be from 1 to {MAX_DEPTH}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{where}: seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{where}: seed {seed} must be from 0 to {MAX_SEED}")


class CountMinSketch:
    """Count-min sketch over uint64 keys; see the module docstring."""

    def __init__(self, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH,
                 seed: int = DEFAULT_SEED,
                 conservative: bool = True) -> None:
        check_params(width, depth, seed)
        self.width = width
        self.depth = depth
        self.seed = seed
        self.conservative = bool(conservative)
        self.cells = np.zeros((depth, width), dtype=np.int64)
        self._a, self._b = row_parameters(seed, depth)
        self._shift = np.uint64(64 - (width.bit_length() - 1))
        self._offsets = (np.arange(depth, dtype=np.int64) * width).reshape(depth, 1)

    # ------------------------------------------------------------ hashing
    def indices(self, keys: np.ndarray) -> np.ndarray:
        """Flat cell indices of ``keys`` as a (depth, n) int64 array."""
        x = np.asarray(keys, dtype=np.uint64).reshape(1, -1)
        rows = (self._a * x + self._b) >> self._shift
        return rows.astype(np.int64) + self._offsets

    # ------------------------------------------------------------ update / query
    def update(self, keys: np.ndarray, counts: np.ndarray | int) -> np.ndarray:
        """Add ``counts`` to ``keys`` (a uint64 array of UNIQUE keys).

        Returns an upper bound of each key's new count that is at most its fresh
        estimate (conservative: old estimate + count; plain: the fresh estimate),
        which spares callers a second query.
        """
        keys = np.asarray(keys, dtype=np.uint64)
        if keys.size == 0:
            return np.zeros(0, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != keys.shape:
            counts = np.broadcast_to(counts, keys.shape)
        idx = self.indices(keys)
        flat = self.cells.reshape(-1)
        values = np.empty(idx.shape, dtype=np.int64)  # one row per sketch row
        if self.conservative:
            new = flat[idx].min(axis=0) + counts
            values[:] = new
            np.maximum.at(flat, idx.reshape(-1), values.reshape(-1))
            return new
        values[:] = counts
        np.add.at(flat, idx.reshape(-1), values.reshape(-1))
        return flat[idx].min(axis=0)

    def add(self, keys: np.ndarray, counts: np.ndarray | int = 1) -> None:
        """Like :meth:`update` but ``keys`` may repeat (they are aggregated first)."""
        keys = np.asarray(keys, dtype=np.uint64)
        counts = np.broadcast_to(np.asarray(counts, dtype=np.int64), keys.shape)
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.zeros(uniq.shape, dtype=np.int64)
        np.add.at(sums, inverse, counts)
        self.update(uniq, sums)

    def query(self, keys: np.ndarray) -> np.ndarray:
        """Estimates (int64, never below the true count) for a uint64 key array."""
        keys = np.asarray(keys, dtype=np.uint64)
        if keys.size == 0:
            return np.zeros(0, dtype=np.int64)
        return self.cells.reshape(-1)[self.indices(keys)].min(axis=0)

    def query_one(self, key: int) -> int:
        """Estimate for one key given as a Python int."""
        return int(self.query(np.array([key], dtype=np.uint64))[0])

    # ------------------------------------------------------------ merge / wire
    def compatible(self, other: CountMinSketch) -> bool:
        return (self.width, self.depth, self.seed) == (other.width, other.depth, other.seed)

    def merge(self, other: CountMinSketch) -> CountMinSketch:
        """A new sketch whose cells are the sum of both (same width/depth/seed)."""
        if not self.compatible(other):
            mine = f"{self.width}/{self.depth}/{self.seed}"
            theirs = f"{other.width}/{other.depth}/{other.seed}"
            raise ValueError(f"cannot merge sketches with different parameters: "
                             f"width/depth/seed {mine} vs {theirs}")
        out = CountMinSketch(self.width, self.depth, self.seed,
                             self.conservative and other.conservative)
        np.add(self.cells, other.cells, out=out.cells)
        return out

    def copy(self) -> CountMinSketch:
        out = CountMinSketch(self.width, self.depth, self.seed, self.conservative)
        out.cells[...] = self.cells
        return out

    @property
    def memory_bytes(self) -> int:
        return int(self.cells.nbytes)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict: parameters plus base64 of zlib-compressed int64 LE cells."""
        raw = self.cells.astype("<i8", copy=False).tobytes()
        return {"width": self.width, "depth": self.depth, "seed": self.seed,
                "conservative": self.conservative,
                "cells": base64.b64encode(zlib.compress(raw, 1)).decode("ascii")}

    @classmethod
    def from_wire(cls, data: Any) -> CountMinSketch:
        """Rebuild a sketch from :meth:`to_wire` output; ValueError on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("sketch must be an object")
        for field in ("width", "depth", "seed", "cells"):
            if field not in data:
                raise ValueError(f"sketch: missing field '{field}'")
        width, depth, seed = data["width"], data["depth"], data["seed"]
        check_params(width, depth, seed)
        conservative = data.get("conservative", False)
        if not isinstance(conservative, bool):
            raise ValueError("sketch: conservative must be true or false")
        cells = data["cells"]
        if not isinstance(cells, str):
            raise ValueError("sketch: cells must be a base64 string")
        expected = width * depth * 8
        try:
            packed = base64.b64decode(cells.encode("ascii"), validate=True)
            inflater = zlib.decompressobj()
            raw = inflater.decompress(packed, expected + 1)
        except (binascii.Error, UnicodeEncodeError, zlib.error) as exc:
            raise ValueError(f"sketch: cells are not base64 zlib data ({exc})") from None
        if len(raw) != expected or inflater.unconsumed_tail:
            more = "+" if inflater.unconsumed_tail else ""
            raise ValueError(f"sketch: cells hold {len(raw)}{more} bytes, expected "
                             f"{expected} for width {width} depth {depth}")
        out = cls(width, depth, seed, conservative)
        out.cells[...] = np.frombuffer(raw, dtype="<i8").reshape(depth, width)
        if (out.cells < 0).any():
            raise ValueError("sketch: cells must be non-negative")
        return out
