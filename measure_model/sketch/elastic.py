"""Elastic counter state: a voting heavy part in front of a linear light part.

Design
------
One counter's whole per-key state lives in numpy arrays whose sizes are
fixed from the configured ``memory`` (bytes) when the counter is built;
:attr:`ElasticSketch.memory_bytes` is the sum of their ``nbytes``
(docs/design.md "Elastic engine layout" is the byte-level description the
eBPF capture mirrors):

* **heavy part** (``heavy_share`` of the memory, 1/4 as in ElasticSketch):
  one or two :class:`HeavyTable` s of ``buckets x slots`` entries. A slot is
  its key in 32-bit lanes sized to the key type and family
  (:mod:`measure_model.sketch.elastic_slots`: 4 bytes for an IPv4 ``src``,
  16 for an IPv4 ``five_tuple``, 16 per IPv6 address), a count (uint32 for
  packets, uint64 for bytes; 0 = free) and a flag byte; a bucket adds one
  ``vote-``. Keys are exact, never fingerprints. A task that may see both
  families (no family in its filter) has an IPv4 table and an IPv6 table
  (``V6_SHARE`` of the heavy memory), each exact; a one-family task has one.
  The update is ElasticSketch's, per packet and in stream order
  (:mod:`measure_model.sketch.elastic_c`, numpy twin in
  :mod:`measure_model.sketch.elastic_update`), so the state does not depend
  on batch size.
* **light part** (the rest): ``light_depth`` (1, as in ElasticSketch) rows
  of 8-bit counters for packets (32-bit for bytes). One row of full width
  gives the EM twice the cells per flow two half rows would, which is what
  keeps the distribution estimate working at 128 KB with 200k flows (load
  about 2 flows per cell instead of 4). A counter never wraps or loses
  mass: at its maximum it stays there and the excess goes to its row's
  overflow word (``ov``: one uint64 per ``OV_CELLS`` cells, 3% of the light
  memory), and a read of a maximal cell adds that word, so no estimate falls
  below the truth (``never_under`` holds; only a heavy count reaching its
  type's maximum, ``clamped``, breaks it, and answers then say so). The row
  is linear (plain count-min adds): the cell sum of light parts built on
  parts of a stream equals the light part of the whole stream (overflow
  words included), which is what makes network-wide merges exact. It is
  MRAC's counter array: EM over it gives the flow size distribution
  (:mod:`measure_model.sketch.estimators`), linear counting the flow count.

Merge: light cells add (exact); heavy entries of one bucket unite by key
(counts add, flags or), the largest ``slots`` stay and the others' counts go
to the light part; ``vote-`` adds. The invariant every answer rests on:
**every packet of a key is in its heavy entry or in its light cells**, so an
estimate never falls below the truth, and a key owning an entry with the
flag off is exact. Flags: ``OWN_FLAG`` (the key won its slot by eviction:
light may hold some of it), ``MERGE_FLAG`` (another part's light cells may
hold some).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from measure_model.packet.keys import check_key_type, sketch_keys_of
from measure_model.sketch import elastic_c, elastic_merge, elastic_update
from measure_model.sketch.countmin import MASK64, mix64, splitmix64
from measure_model.sketch.elastic_slots import (
    full_of_lanes,
    has_family,
    is_v4,
    lanes_from_full,
    lanes_of,
)
from measure_model.task import MAX_MEMORY, MIN_MEMORY

LAMBDA = 8
OWN_FLAG = 1    # the key won its slot by eviction: light holds some of it
MERGE_FLAG = 2  # another part's light part may hold some (set by a merge)
DEFAULT_SLOTS = 8
DEFAULT_HEAVY_SHARE = 0.25
DEFAULT_LIGHT_DEPTH = 1
V6_SHARE = 0.25  # of the heavy memory, for the IPv6 table of a two-family task
FAMILIES = (0, 4, 6)  # 0: both (two tables)
OV_CELLS = 256
LIGHT_DTYPE = {"pkt": np.uint8, "bytes": np.uint32}
LIGHT_MAX = {"pkt": 255, "bytes": 2 ** 32 - 1}
COUNT_DTYPE = {"pkt": np.uint32, "bytes": np.uint64}
COUNT_MAX = {"pkt": 2 ** 32 - 1, "bytes": 2 ** 59}
KIND_CODE = {"sport": 0, "dport": 0, "proto": 0, "src": 1, "dst": 1, "src_dst": 2,
             "src_dport": 3, "dst_dport": 3, "five_tuple": 4}
ENGINES = ("auto", "c", "numpy")
_C = elastic_c.load()


def key_words(key_type: str) -> int:
    """Number of uint64 words of a full key of ``key_type`` (keys.py's layout)."""
    from measure_model.packet.keys import KEY_WIDTH
    return KEY_WIDTH[check_key_type(key_type)]


def hash_salts(seed: int, n: int) -> list[np.uint64]:
    state = (seed * 0x9E6C63D0676A9A99) & MASK64
    out = []
    for _ in range(n):
        state = (state + 0x632BE59BD9B4E019) & MASK64
        out.append(np.uint64(splitmix64(state)))
    return out


def reduce_hash(h: np.ndarray, n: int) -> np.ndarray:
    """Map 64-bit hashes to ``[0, n)`` by multiply-high on the top 32 bits."""
    return (((h >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)


def compiled() -> bool:
    """Whether the compiled update path is built (``python -m measure_model.sketch.elastic_c``)."""
    return _C is not None


def ensure_compiled() -> bool:
    """Build the compiled path in place if this checkout has not (tests), then load it."""
    global _C
    if _C is None:
        elastic_c.build()
        _C = elastic_c.load()
    return _C is not None


class HeavyTable:
    """``buckets x slots`` exact-key entries of one address family (module docstring)."""

    def __init__(self, key_type: str, family: int, memory: int, slots: int, increment: str,
                 salt: np.uint64) -> None:
        self.key_type, self.family, self.slots, self.salt = key_type, family, slots, salt
        self.lanes = lanes_of(key_type, family)
        ctype = np.dtype(COUNT_DTYPE[increment])
        bucket_bytes = slots * (4 * self.lanes + ctype.itemsize + 1) + ctype.itemsize
        self.buckets = max(1, memory // bucket_bytes)
        self.keys = np.zeros((self.buckets, slots, self.lanes), np.uint32)
        self.count = np.zeros((self.buckets, slots), ctype)
        self.flag = np.zeros((self.buckets, slots), np.uint8)
        self.neg = np.zeros(self.buckets, ctype)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.count.nbytes + self.flag.nbytes + self.neg.nbytes)

    def bucket_of(self, hkeys: np.ndarray) -> np.ndarray:
        return reduce_hash(mix64(np.asarray(hkeys, np.uint64) ^ self.salt), self.buckets)

    def slot_hkeys(self) -> np.ndarray:
        """Sketch key of every slot (garbage where the slot is free)."""
        full = full_of_lanes(self.key_type, self.family, self.keys.reshape(-1, self.lanes))
        return sketch_keys_of(self.key_type, full).reshape(self.buckets, self.slots)

    def occupied(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(full keys, sketch keys, counts, flags) of the occupied slots, slot order."""
        occ = self.count > 0
        full = full_of_lanes(self.key_type, self.family, self.keys[occ])
        return full, sketch_keys_of(self.key_type, full), self.count[occ].astype(np.int64), \
            self.flag[occ]

    def lookup(self, hkeys: np.ndarray, slot_hk: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per sketch key: (has an entry, its count, its flag bits)."""
        b = self.bucket_of(hkeys)
        match = (slot_hk[b] == hkeys[:, None]) & (self.count[b] > 0)
        hit = match.any(axis=1)
        slot = match.argmax(axis=1)
        return hit, np.where(hit, self.count[b, slot].astype(np.int64), 0), \
            np.where(hit, self.flag[b, slot], 0).astype(np.uint8)

    def clear(self) -> None:
        for a in (self.keys, self.count, self.flag, self.neg):
            a[...] = 0


class ElasticSketch:
    """Heavy + light state of one counter within ``memory`` bytes (module docstring)."""

    LAMBDA = LAMBDA
    OWN_FLAG, MERGE_FLAG, FAMILIES = OWN_FLAG, MERGE_FLAG, FAMILIES

    def __init__(self, memory: int, key_type: str, increment: str = "pkt", seed: int = 1,
                 heavy_share: float = DEFAULT_HEAVY_SHARE, slots: int = DEFAULT_SLOTS,
                 light_depth: int = DEFAULT_LIGHT_DEPTH, family: int = 0,
                 engine: str = "auto") -> None:
        check_key_type(key_type)
        if increment not in LIGHT_DTYPE:
            raise ValueError(f"increment {increment!r} is not one of pkt, bytes")
        if isinstance(memory, bool) or not isinstance(memory, int) or \
                not MIN_MEMORY <= memory <= MAX_MEMORY:
            raise ValueError(f"memory {memory!r} must be an integer from {MIN_MEMORY} "
                             f"to {MAX_MEMORY} bytes")
        if family not in FAMILIES:
            raise ValueError(f"family {family!r} is not one of 0 (both), 4, 6")
        if engine not in ENGINES or (engine == "c" and _C is None):
            raise ValueError(f"engine {engine!r}: one of {', '.join(ENGINES)} (c needs the "
                             "compiled module: python -m measure_model.sketch.elastic_c)")
        if not has_family(key_type):
            family = 4  # ports and protocols: one table whatever the family
        self.memory, self.key_type, self.increment, self.seed = memory, key_type, increment, seed
        self.heavy_share, self.slots, self.light_depth = heavy_share, slots, light_depth
        self.family, self.engine = family, engine
        self.words = key_words(key_type)
        salts = hash_salts(seed, light_depth + 2)
        heavy = int(memory * heavy_share)
        shares = {4: [(4, heavy)], 6: [(6, heavy)],
                  0: [(4, heavy - int(heavy * V6_SHARE)), (6, int(heavy * V6_SHARE))]}[family]
        self.tables = [HeavyTable(key_type, fam, mem, slots, increment, salts[0])
                       for fam, mem in shares]
        self.table_of_family = {t.family: i for i, t in enumerate(self.tables)}
        cell = np.dtype(LIGHT_DTYPE[increment]).itemsize
        rest = memory - sum(t.nbytes for t in self.tables)
        self.width = max(16, int(rest / (light_depth * (cell + 8 / OV_CELLS))))
        self.ov_width = max(1, self.width // OV_CELLS)
        while light_depth * (self.width * cell + 8 * self.ov_width) > rest and self.width > 16:
            self.width -= 1
            self.ov_width = max(1, self.width // OV_CELLS)
        self.light = np.zeros((light_depth, self.width), LIGHT_DTYPE[increment])
        self.ov = np.zeros((light_depth, self.ov_width), np.uint64)
        self.cell_max, self.count_max = LIGHT_MAX[increment], COUNT_MAX[increment]
        self.clamped = 0  # 1 once a heavy count reached its type's maximum
        self._light_salt = salts[1]
        self._row_mult = np.array([int(x) | 1 for x in salts[2:]], np.uint64).reshape(-1, 1)
        self._offsets = (np.arange(light_depth, dtype=np.int64) * self.width).reshape(-1, 1)
        self._slot_hk: list[np.ndarray] | None = None
        self._c: tuple[Any, Any, Any, Any] | None = None

    # ------------------------------------------------------------ params
    def params(self) -> dict[str, Any]:
        return {"memory": self.memory, "key": self.key_type, "increment": self.increment,
                "seed": self.seed, "heavy_share": self.heavy_share, "slots": self.slots,
                "light_depth": self.light_depth, "family": self.family}

    def compatible(self, other: ElasticSketch) -> bool:
        return self.params() == other.params()

    @property
    def memory_bytes(self) -> int:
        """Bytes of all state arrays (every byte of the counter's per-key state)."""
        return sum(t.nbytes for t in self.tables) + int(self.light.nbytes + self.ov.nbytes)

    @property
    def saturated(self) -> int:
        """Light cells at their maximum (their excess is in the overflow words)."""
        return int((self.light == self.cell_max).sum())

    # ------------------------------------------------------------ hashing
    def light_index(self, hkeys: np.ndarray) -> np.ndarray:
        """Flat light-cell indices of ``hkeys``, a (depth, n) int64 array: one mix of the
        key, then per row an odd multiplier (multiply-shift) and multiply-high by width."""
        h = mix64(np.asarray(hkeys, np.uint64) ^ self._light_salt).reshape(1, -1) \
            * self._row_mult
        return ((h >> np.uint64(32)) * np.uint64(self.width) >> np.uint64(32)).astype(
            np.int64) + self._offsets

    def route(self, full: np.ndarray) -> np.ndarray:
        """Per key: the index of its family's table, -1 if the task has none (light only)."""
        full = np.asarray(full, np.uint64)
        n = full.shape[0]
        if not has_family(self.key_type):
            return np.zeros(n, np.int8)
        v4 = is_v4(self.key_type, full)
        t4, t6 = self.table_of_family.get(4, -1), self.table_of_family.get(6, -1)
        return np.where(v4, t4, t6).astype(np.int8)

    def lanes_of(self, full: np.ndarray, tab: np.ndarray) -> np.ndarray:
        """``(n, max lanes)`` uint32 slot keys of full keys, in their table's layout."""
        full = np.asarray(full, np.uint64)
        stride = max(t.lanes for t in self.tables)
        if len(self.tables) == 1:
            out = lanes_from_full(self.key_type, self.tables[0].family, full)
            if out.shape[1] == stride:
                return np.ascontiguousarray(out)
        out = np.zeros((full.shape[0], stride), np.uint32)
        for i, t in enumerate(self.tables):
            rows = np.flatnonzero(tab == i)
            if rows.shape[0]:
                out[rows, :t.lanes] = lanes_from_full(self.key_type, t.family, full[rows])
        return out

    # ------------------------------------------------------------ update
    def update(self, hkeys: np.ndarray, full: np.ndarray, weights: np.ndarray) -> None:
        """Count packets in stream order: sketch keys, full keys and weights (1 per packet,
        or its bytes) of each packet; keys may repeat."""
        hkeys = np.ascontiguousarray(hkeys, np.uint64)
        n = hkeys.shape[0]
        if n == 0:
            return
        w = np.ascontiguousarray(weights, np.uint64)
        if int(w.max()) > self.count_max:
            raise ValueError(f"weight above {self.count_max}")
        tab = self.route(full)
        lanes = self.lanes_of(full, tab)
        self._slot_hk = None
        if _C is not None and self.engine != "numpy":
            self._update_c(hkeys, lanes, tab, w)
        else:
            elastic_update.apply(self, hkeys, lanes, tab, w)

    def _c_state(self) -> tuple[Any, Any, Any, Any]:
        """The C structs pointing at this sketch's arrays (built once: arrays never move)."""
        if self._c is None:
            assert _C is not None
            ffi = _C.ffi
            tables = ffi.new("es_table[]", len(self.tables))
            for i, t in enumerate(self.tables):
                tables[i].keys = ffi.cast("uint32_t *", ffi.from_buffer(t.keys))
                tables[i].count = ffi.cast("void *", ffi.from_buffer(t.count))
                tables[i].flag = ffi.cast("uint8_t *", ffi.from_buffer(t.flag))
                tables[i].neg = ffi.cast("void *", ffi.from_buffer(t.neg))
                tables[i].buckets, tables[i].slots = t.buckets, t.slots
                tables[i].lanes, tables[i].family = t.lanes, t.family
                tables[i].salt = int(t.salt)
            light = ffi.new("es_light *")
            light.cells = ffi.cast("void *", ffi.from_buffer(self.light))
            light.ov = ffi.cast("uint64_t *", ffi.from_buffer(self.ov))
            light.width, light.ov_width = self.width, self.ov_width
            light.depth = self.light_depth
            light.salt, light.cell_max = int(self._light_salt), self.cell_max
            mult = np.ascontiguousarray(self._row_mult.reshape(-1))
            light.mult = ffi.cast("uint64_t *", ffi.from_buffer(mult))
            fn = _C.lib.es_update_pkt if self.increment == "pkt" else _C.lib.es_update_bytes
            self._c = (tables, light, mult, fn)
        return self._c

    def _update_c(self, hkeys: np.ndarray, lanes: np.ndarray, tab: np.ndarray,
                  w: np.ndarray) -> None:
        assert _C is not None
        ffi = _C.ffi
        tables, light, _, fn = self._c_state()
        tab = np.ascontiguousarray(tab, np.int8)
        self.clamped |= fn(hkeys.shape[0], ffi.cast("uint64_t *", ffi.from_buffer(hkeys)),
                           ffi.cast("uint32_t *", ffi.from_buffer(lanes)), lanes.shape[1],
                           ffi.cast("int8_t *", ffi.from_buffer(tab)),
                           ffi.cast("uint64_t *", ffi.from_buffer(w)), tables, light,
                           LAMBDA, self.count_max, KIND_CODE[self.key_type])

    # ------------------------------------------------------------ queries
    def light_cells(self, flat: np.ndarray) -> np.ndarray:
        """Values of flat light-cell indices, a maximal cell read with its overflow word."""
        v = self.light.reshape(-1)[flat].astype(np.int64)
        top = v == self.cell_max
        if top.any():
            f = flat[top]
            v[top] += self.ov[f // self.width, (f % self.width) % self.ov_width].astype(np.int64)
        return v

    def light_row(self, r: int = 0) -> np.ndarray:
        """Row ``r`` of the light part as int64, maximal cells read with their overflow."""
        return self.light_cells(np.arange(self.width, dtype=np.int64) + r * self.width)

    def light_query(self, hkeys: np.ndarray) -> np.ndarray:
        if hkeys.shape[0] == 0:
            return np.zeros(0, np.int64)
        idx = self.light_index(hkeys)
        return self.light_cells(idx.reshape(-1)).reshape(idx.shape).min(axis=0)

    def _slot_hkeys(self) -> list[np.ndarray]:
        if self._slot_hk is None:
            self._slot_hk = [t.slot_hkeys() for t in self.tables]
        return self._slot_hk

    def heavy_lookup(self, hkeys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key: (owns a heavy entry, its count, its flag)."""
        hkeys = np.asarray(hkeys, np.uint64)
        hit = np.zeros(hkeys.shape[0], bool)
        cnt = np.zeros(hkeys.shape[0], np.int64)
        bits = np.zeros(hkeys.shape[0], np.uint8)
        for t, shk in zip(self.tables, self._slot_hkeys(), strict=True):
            h, c, f = t.lookup(hkeys, shk)
            new = h & ~hit
            hit |= h
            cnt[new], bits[new] = c[new], f[new]
        return hit, cnt, bits > 0

    def query(self, hkeys: np.ndarray) -> np.ndarray:
        """Estimates (never below the true count) for a uint64 sketch-key array."""
        hkeys = np.asarray(hkeys, np.uint64)
        hit, cnt, flag = self.heavy_lookup(hkeys)
        light = self.light_query(hkeys)
        return np.where(hit & ~flag, cnt, cnt + light)

    def exact_mask(self, hkeys: np.ndarray) -> np.ndarray:
        """Keys whose estimate is exact (own a heavy entry with the flag off)."""
        hit, _, flag = self.heavy_lookup(np.asarray(hkeys, np.uint64))
        return hit & ~flag

    def entries(self) -> dict[str, np.ndarray]:
        """Occupied heavy entries of every table: sketch keys, full keys, counts, flags (any
        bit), flag bits, light estimates (0 where the flag is off)."""
        parts = [t.occupied() for t in self.tables]
        full = np.concatenate([p[0] for p in parts])
        hk = np.concatenate([p[1] for p in parts])
        count = np.concatenate([p[2] for p in parts])
        bits = np.concatenate([p[3] for p in parts])
        return {"hkey": hk, "full": full, "count": count, "flag": bits > 0, "bits": bits,
                "light": np.where(bits > 0, self.light_query(hk), 0)}

    def heavy_total(self) -> int:
        """Packets (or bytes) held by heavy entries."""
        return sum(int(t.count.sum(dtype=np.uint64)) for t in self.tables)

    def light_total(self) -> int:
        """Packets (or bytes) in one light row: the mass that drives every error bound."""
        return int(self.light[0].sum(dtype=np.int64)) + int(self.ov[0].sum())

    def never_under(self) -> bool:
        """Whether every estimate is at least the truth (no heavy count was clamped)."""
        return not self.clamped

    def error_bound(self, confidence: float = 0.95) -> dict[str, float]:
        """Count-min bound of a light estimate: over by at most ``eps * light_total``
        with probability ``confidence`` (``eps`` from ``confidence = 1 - (1/(e w eps))^d``)."""
        miss = (1.0 - confidence) ** (1.0 / self.light_depth)
        eps = 1.0 / (math.e * self.width * miss) if miss > 0 else 1.0
        eps = min(1.0, eps)
        return {"eps": eps, "abs": eps * self.light_total(), "confidence": confidence}

    # ------------------------------------------------------------ merge and wire
    def empty_like(self) -> ElasticSketch:
        return ElasticSketch(self.memory, self.key_type, self.increment, self.seed,
                             self.heavy_share, self.slots, self.light_depth, self.family,
                             self.engine)

    def copy(self) -> ElasticSketch:
        out = self.empty_like()
        for mine, theirs in zip(self.tables, out.tables, strict=True):
            for name in ("keys", "count", "flag", "neg"):
                getattr(theirs, name)[...] = getattr(mine, name)
        out.light[...] = self.light
        out.ov[...] = self.ov
        out.clamped = self.clamped
        return out

    def merge(self, other: ElasticSketch) -> ElasticSketch:
        """Both sides' state in one (module docstring: exact light part, bounded heavy)."""
        return elastic_merge.merge(self, other)

    def to_wire(self) -> dict[str, Any]:
        return elastic_merge.to_wire(self)

    @classmethod
    def from_wire(cls, data: Any) -> ElasticSketch:
        """Rebuild from :meth:`to_wire` output; ValueError naming the field if malformed."""
        return elastic_merge.from_wire(cls, data)
