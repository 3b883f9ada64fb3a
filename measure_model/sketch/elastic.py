"""Elastic counter state: a voting heavy part in front of a linear light part.

Design
------
One counter's whole per-key state lives in two numpy structures whose sizes
are fixed from the configured ``memory`` (bytes) when the counter is built,
and :attr:`ElasticSketch.memory_bytes` is the sum of their ``nbytes``:

* **heavy part** (``heavy_share`` of the memory, 1/4 by default as in
  ElasticSketch): ``buckets x slots`` entries, each holding a key's 64-bit
  sketch key, its full key words (only for key types wider than 64 bits;
  ``keys.py`` says which), a count (``vote+``) and a flag ("this key may also
  have packets in the light part"), plus one ``vote-`` per bucket. A key
  hashes to one bucket; it adds to its slot, takes a free slot, or votes
  against the bucket's smallest entry; when ``vote- >= LAMBDA * vote+`` the
  smallest entry is evicted into the light part and the challenger takes its
  slot (flagged). This is ElasticSketch's software heavy part (8-way
  buckets, lambda 8): elephants end in the heavy part with exact counts
  (flag off) or counts exact since they arrived (flag on).
* **light part** (the rest): ``depth x width`` small counters (8-bit for
  packet counts as in ElasticSketch, 32-bit for bytes; they saturate at their
  maximum, which ``saturated`` counts: flows that large belong in the heavy
  part, and none saturated on the benchmark traces) updated the plain
  count-min way: every row cell of a key grows by its count. Unlike
  ElasticSketch's conservative-update light part this one is *linear*: the
  cell sum of light parts built on parts of a stream equals the light part
  of the whole stream, which is what makes network-wide
  merges exact. It is MRAC's counter array (SIGMETRICS 2004): its row 0
  gives the flow size distribution by EM (:mod:`measure_model.sketch.estimators`)
  and every row the number of flows by linear counting.

Why this and not the others: count-min alone spends every cell on the
elephants' noise (per-flow ARE 5 at 512 KB); UnivMon answers the same
questions from L levels of count sketches, each needing its own heavy-hitter
heap outside the sketch and about 4x the memory for the same distribution
error; ElasticSketch is the most accurate per byte but neither of its parts
merges. Keeping its heavy part and making the light part linear gives its
accuracy with a merge that is exact where it can be:

* light cells add (exact, equal to the union stream's light part, unless a
  cell saturates, which ``saturated`` counts);
* heavy entries of one bucket are united by key (same key: counts add, flags
  or); the largest ``slots`` stay and the others' counts are *added to the
  light part* at their cells; ``vote-`` adds. The merged state is not the
  single-stream state, but the invariant every answer rests on holds:
  **every packet of a key is either in its heavy entry or in its light
  cells**, so an estimate never falls below the truth (while no light cell
  saturated) and its error is at
  most the other keys' mass in its light cells (count-min's
  ``e * light_total / width`` with probability ``1 - e**-depth``). A key
  that owns a heavy entry with the flag off is exact, merged or not. The
  flag has two bits: ``OWN_FLAG`` (set by an eviction on the host) and
  ``MERGE_FLAG`` (set by a merge when another part's light cells of the key
  are non-zero: it may, or may not, have packets there), which the flow
  count uses (:func:`measure_model.sketch.estimators.cardinality`).
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from typing import Any

import numpy as np

from measure_model.packet.keys import HeaderBatch, check_key_type
from measure_model.sketch.countmin import MASK64, mix64, splitmix64
from measure_model.task import MAX_MEMORY, MIN_MEMORY

LAMBDA = 8
OWN_FLAG = 1    # the key was rejected here before it got its entry: light holds some
MERGE_FLAG = 2  # another part's light part may hold some (set by a merge)
DEFAULT_SLOTS = 8
DEFAULT_HEAVY_SHARE = 0.25
DEFAULT_LIGHT_DEPTH = 2
LIGHT_MAX = {"pkt": np.iinfo(np.uint8).max, "bytes": np.iinfo(np.uint32).max}
LIGHT_DTYPE = {"pkt": np.uint8, "bytes": np.uint32}


def key_words(key_type: str) -> int:
    """Number of uint64 words of a full key of ``key_type`` (from keys.py's own arrays)."""
    shape = HeaderBatch.empty().full_keys(key_type).shape
    return 1 if len(shape) == 1 else int(shape[1])


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


class ElasticSketch:
    """Heavy + light state of one counter within ``memory`` bytes (module docstring)."""

    def __init__(self, memory: int, key_type: str, increment: str = "pkt", seed: int = 1,
                 heavy_share: float = DEFAULT_HEAVY_SHARE, slots: int = DEFAULT_SLOTS,
                 light_depth: int = DEFAULT_LIGHT_DEPTH) -> None:
        check_key_type(key_type)
        if increment not in LIGHT_DTYPE:
            raise ValueError(f"increment {increment!r} is not one of pkt, bytes")
        if isinstance(memory, bool) or not isinstance(memory, int) or \
                not MIN_MEMORY <= memory <= MAX_MEMORY:
            raise ValueError(f"memory {memory!r} must be an integer from {MIN_MEMORY} "
                             f"to {MAX_MEMORY} bytes")
        self.memory, self.key_type, self.increment, self.seed = memory, key_type, increment, seed
        self.heavy_share, self.slots, self.light_depth = heavy_share, slots, light_depth
        self.words = key_words(key_type)
        extra = self.words if self.words > 1 else 0  # full-key words besides the sketch key
        slot_bytes = 8 + 8 * extra + 8 + 1
        bucket_bytes = slots * slot_bytes + 8
        self.buckets = max(1, int(memory * heavy_share) // bucket_bytes)
        cell = np.dtype(LIGHT_DTYPE[increment]).itemsize
        self.width = max(16, (memory - self.buckets * bucket_bytes) // (cell * light_depth))
        self.hkey = np.zeros((self.buckets, slots), np.uint64)
        self.full = np.zeros((self.buckets, slots, extra), np.uint64)
        self.count = np.zeros((self.buckets, slots), np.int64)
        self.flag = np.zeros((self.buckets, slots), np.uint8)  # OWN_FLAG | MERGE_FLAG
        self.neg = np.zeros(self.buckets, np.int64)
        self.light = np.zeros((light_depth, self.width), LIGHT_DTYPE[increment])
        self.saturated = 0
        salts = hash_salts(seed, light_depth + 2)
        self._bucket_salt, self._light_salt = salts[0], salts[1]
        self._row_mult = np.array([int(x) | 1 for x in salts[2:]], np.uint64).reshape(-1, 1)
        self._offsets = (np.arange(light_depth, dtype=np.int64) * self.width).reshape(-1, 1)

    # ------------------------------------------------------------ params
    def params(self) -> dict[str, Any]:
        return {"memory": self.memory, "key": self.key_type, "increment": self.increment,
                "seed": self.seed, "heavy_share": self.heavy_share, "slots": self.slots,
                "light_depth": self.light_depth}

    def compatible(self, other: ElasticSketch) -> bool:
        return self.params() == other.params()

    @property
    def memory_bytes(self) -> int:
        """Bytes of all state arrays (every byte of the counter's per-key state)."""
        return int(self.hkey.nbytes + self.full.nbytes + self.count.nbytes + self.flag.nbytes
                   + self.neg.nbytes + self.light.nbytes)

    # ------------------------------------------------------------ hashing
    def bucket_of(self, hkeys: np.ndarray) -> np.ndarray:
        return reduce_hash(mix64(hkeys ^ self._bucket_salt), self.buckets)

    def light_index(self, hkeys: np.ndarray) -> np.ndarray:
        """Flat light-cell indices of ``hkeys``, a (depth, n) int64 array: one mix of the
        key, then per row an odd multiplier (multiply-shift) and multiply-high by width."""
        h = mix64(hkeys ^ self._light_salt).reshape(1, -1) * self._row_mult
        return ((h >> np.uint64(32)) * np.uint64(self.width) >> np.uint64(32)).astype(
            np.int64) + self._offsets

    # ------------------------------------------------------------ update
    def _light_add(self, hkeys: np.ndarray, counts: np.ndarray) -> None:
        if hkeys.shape[0] == 0:
            return
        idx = self.light_index(hkeys).reshape(-1)
        vals = np.tile(counts, self.light_depth)
        flat = self.light.reshape(-1)
        top = LIGHT_MAX[self.increment]
        if int(flat[idx].max()) + int(vals.sum()) <= top:
            np.add.at(flat, idx, vals.astype(flat.dtype))
            return
        uniq, inv = np.unique(idx, return_inverse=True)
        sums = np.bincount(inv, weights=vals.astype(np.float64)).astype(np.int64)
        new = flat[uniq].astype(np.int64) + sums
        self.saturated += int((new > top).sum())
        flat[uniq] = np.minimum(new, top).astype(flat.dtype)

    def update(self, hkeys: np.ndarray, full: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` for UNIQUE sketch keys ``hkeys`` with full keys ``full``."""
        n = hkeys.shape[0]
        if n == 0:
            return
        counts = counts.astype(np.int64, copy=False)
        b = self.bucket_of(hkeys)
        occupied = self.count[b] > 0
        match = (self.hkey[b] == hkeys[:, None]) & occupied
        hit = match.any(axis=1)
        if hit.any():
            hi = hit.nonzero()[0]
            self.count[b[hi], match[hi].argmax(axis=1)] += counts[hi]
            if hi.shape[0] == n:
                return
            rest = (~hit).nonzero()[0]
        else:
            rest = np.arange(n)
        rb = b[rest]
        order = np.lexsort((-counts[rest], rb))
        rest, rb = rest[order], rb[order]
        first = np.ones(rest.shape[0], bool)
        first[1:] = rb[1:] != rb[:-1]
        starts = first.nonzero()[0]
        rank = np.arange(rest.shape[0]) - np.repeat(starts, np.diff(np.append(starts,
                                                                               rest.shape[0])))
        used = occupied[rest].sum(axis=1)
        free = rank < self.slots - used
        if free.any():
            fi = rest[free]
            fb, fs = rb[free], (used + rank)[free]
            self.hkey[fb, fs] = hkeys[fi]
            if self.words > 1:
                self.full[fb, fs] = full[fi]
            self.count[fb, fs] = counts[fi]
            self.flag[fb, fs] = 0
        if free.all():
            return
        lose = rest[~free]
        lb = rb[~free]
        lfirst = np.ones(lose.shape[0], bool)
        lfirst[1:] = lb[1:] != lb[:-1]
        lstarts = lfirst.nonzero()[0]
        ubuckets = lb[lstarts]
        self.neg[ubuckets] += np.add.reduceat(counts[lose], lstarts)
        small = self.count[ubuckets].argmin(axis=1)
        smallest = self.count[ubuckets, small]
        evict = self.neg[ubuckets] >= LAMBDA * smallest
        to_light = np.ones(lose.shape[0], bool)
        if evict.any():
            eb, es = ubuckets[evict], small[evict]
            challenger = lose[lstarts[evict]]
            self._light_add(self.hkey[eb, es], self.count[eb, es])
            self.hkey[eb, es] = hkeys[challenger]
            if self.words > 1:
                self.full[eb, es] = full[challenger]
            self.count[eb, es] = counts[challenger]
            self.flag[eb, es] = OWN_FLAG
            self.neg[eb] = 0
            to_light[lstarts[evict]] = False
        self._light_add(hkeys[lose[to_light]], counts[lose[to_light]])

    # ------------------------------------------------------------ queries
    def light_query(self, hkeys: np.ndarray) -> np.ndarray:
        if hkeys.shape[0] == 0:
            return np.zeros(0, np.int64)
        return self.light.reshape(-1)[self.light_index(hkeys)].min(axis=0).astype(np.int64)

    def heavy_lookup(self, hkeys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key: (owns a heavy entry, its count, its flag)."""
        b = self.bucket_of(hkeys)
        match = (self.hkey[b] == hkeys[:, None]) & (self.count[b] > 0)
        hit = match.any(axis=1)
        slot = match.argmax(axis=1)
        return hit, np.where(hit, self.count[b, slot], 0), (self.flag[b, slot] > 0) & hit

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
        """Occupied heavy entries: sketch keys, full keys, counts, flags (any bit), flag
        bits, light estimates (0 where the flag is off)."""
        occ = self.count > 0
        hk = self.hkey[occ]
        full = self.full[occ] if self.words > 1 else hk
        bits = self.flag[occ]
        return {"hkey": hk, "full": full, "count": self.count[occ], "flag": bits > 0,
                "bits": bits, "light": np.where(bits > 0, self.light_query(hk), 0)}

    def light_total(self) -> int:
        """Packets (or bytes) in one light row: the mass that drives every error bound."""
        return int(self.light[0].sum(dtype=np.int64))

    def error_bound(self, confidence: float = 0.95) -> dict[str, float]:
        """Count-min bound of a light estimate: over by at most ``eps * light_total``
        with probability ``confidence`` (``eps`` from ``confidence = 1 - (1/(e w eps))^d``)."""
        miss = (1.0 - confidence) ** (1.0 / self.light_depth)
        eps = 1.0 / (math.e * self.width * miss) if miss > 0 else 1.0
        eps = min(1.0, eps)
        return {"eps": eps, "abs": eps * self.light_total(), "confidence": confidence}

    # ------------------------------------------------------------ merge
    def copy(self) -> ElasticSketch:
        out = ElasticSketch(self.memory, self.key_type, self.increment, self.seed,
                            self.heavy_share, self.slots, self.light_depth)
        for name in ("hkey", "full", "count", "flag", "neg", "light"):
            getattr(out, name)[...] = getattr(self, name)
        out.saturated = self.saturated
        return out

    def merge(self, other: ElasticSketch) -> ElasticSketch:
        """Both sides' state in one (module docstring: exact light part, bounded heavy)."""
        if not self.compatible(other):
            raise ValueError(f"cannot merge elastic counters with different parameters: "
                             f"{self.params()} vs {other.params()}")
        out = self.copy()
        top = LIGHT_MAX[self.increment]
        total = self.light.astype(np.int64) + other.light
        out.saturated = self.saturated + other.saturated + int((total > top).sum())
        out.light[...] = np.minimum(total, top)
        out.neg += other.neg
        e = other.entries()
        if e["hkey"].shape[0] == 0:
            return out
        # other's entries first meet self's light estimate: a key that is not in self's
        # heavy part but may have mass in self's light part gets the flag
        hk, cnt, flag = e["hkey"], e["count"], e["bits"]
        hit, _, _ = self.heavy_lookup(hk)
        b = self.bucket_of(hk)
        maybe_light = (self.neg[b] > 0) & (self.light_query(hk) > 0)
        flag = flag | np.where(~hit & maybe_light, MERGE_FLAG, 0).astype(np.uint8)
        # self's entries absent from other may have mass in other's light part
        mine = self.entries()
        ohit, _, _ = other.heavy_lookup(mine["hkey"])
        mb = self.bucket_of(mine["hkey"])
        mflag = mine["bits"] | np.where(~ohit & (other.neg[mb] > 0)
                                        & (other.light_query(mine["hkey"]) > 0),
                                        MERGE_FLAG, 0).astype(np.uint8)
        out._rebuild(np.concatenate([mine["hkey"], hk]),
                     np.concatenate([mine["full"], e["full"]]),
                     np.concatenate([mine["count"], cnt]),
                     np.concatenate([mflag, flag]))
        return out

    def _rebuild(self, hk: np.ndarray, full: np.ndarray, cnt: np.ndarray,
                 flag: np.ndarray) -> None:
        """Refill the heavy part from entries (keys may repeat: counts add, flags or);
        per bucket the largest ``slots`` stay, the others' counts go to the light part."""
        uniq, inv = np.unique(hk, return_inverse=True)
        sums = np.bincount(inv, weights=cnt.astype(np.float64)).astype(np.int64)
        flags = np.zeros(uniq.shape[0], np.uint8)
        np.bitwise_or.at(flags, inv, flag)
        first = np.zeros(uniq.shape[0], np.int64)
        first[inv[::-1]] = np.arange(inv.shape[0])[::-1]
        fulls = full[first]
        b = self.bucket_of(uniq)
        order = np.lexsort((-sums, b))
        uniq, sums, flags, fulls, b = uniq[order], sums[order], flags[order], fulls[order], \
            b[order]
        start = np.ones(b.shape[0], bool)
        start[1:] = b[1:] != b[:-1]
        starts = start.nonzero()[0]
        rank = np.arange(b.shape[0]) - np.repeat(starts, np.diff(np.append(starts, b.shape[0])))
        keep = rank < self.slots
        self.hkey[...] = 0
        self.count[...] = 0
        self.flag[...] = 0
        self.full[...] = 0
        kb, ks = b[keep], rank[keep]
        self.hkey[kb, ks] = uniq[keep]
        self.count[kb, ks] = sums[keep]
        self.flag[kb, ks] = flags[keep]
        if self.words > 1:
            self.full[kb, ks] = fulls[keep]
        if (~keep).any():
            self._light_add(uniq[~keep], sums[~keep])
            self.neg[b[~keep]] = np.maximum(self.neg[b[~keep]], 1)

    # ------------------------------------------------------------ wire
    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict: parameters plus base64 zlib of the occupied entries and light."""
        occ = self.count > 0
        where = np.flatnonzero(occ.reshape(-1)).astype("<u4")
        parts = [where.tobytes(), self.hkey[occ].astype("<u8").tobytes(),
                 self.full[occ].astype("<u8").tobytes(), self.count[occ].astype("<i8").tobytes(),
                 self.flag[occ].astype("u1").tobytes(), self.neg.astype("<i8").tobytes(),
                 self.light.astype(self.light.dtype.newbyteorder("<")).tobytes()]
        return {**self.params(), "entries": int(where.shape[0]), "saturated": self.saturated,
                "state": base64.b64encode(zlib.compress(b"".join(parts), 1)).decode("ascii")}

    @classmethod
    def from_wire(cls, data: Any) -> ElasticSketch:
        """Rebuild from :meth:`to_wire` output; ValueError naming the field if malformed."""
        if not isinstance(data, dict):
            raise ValueError("elastic must be an object")
        names = ("memory", "key", "increment", "seed", "heavy_share", "slots", "light_depth",
                 "entries", "saturated", "state")
        for name in names:
            if name not in data:
                raise ValueError(f"elastic: missing field '{name}'")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"elastic: unknown field {unknown[0]!r}")
        share, slots, depth, seed = (data["heavy_share"], data["slots"], data["light_depth"],
                                     data["seed"])
        if not isinstance(share, float) or not 0.0 < share < 1.0:
            raise ValueError("elastic: heavy_share must be a number between 0 and 1")
        for name, value, hi in (("slots", slots, 64), ("light_depth", depth, 8),
                                ("seed", seed, MASK64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise ValueError(f"elastic: {name} must be an integer from 0 to {hi}")
        if slots < 1 or depth < 1:
            raise ValueError("elastic: slots and light_depth must be at least 1")
        out = cls(data["memory"], data["key"], data["increment"], seed, share, slots, depth)
        n, sat = data["entries"], data["saturated"]
        cells = out.buckets * out.slots
        for name, value, hi in (("entries", n, cells), ("saturated", sat, 2 ** 62)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise ValueError(f"elastic: {name} must be an integer from 0 to {hi}")
        if not isinstance(data["state"], str):
            raise ValueError("elastic: state must be a base64 string")
        extra = out.full.shape[2]
        sizes = [4 * n, 8 * n, 8 * n * extra, 8 * n, n, 8 * out.buckets, out.light.nbytes]
        expected = sum(sizes)
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.b64decode(data["state"].encode("ascii"),
                                                       validate=True), expected + 1)
        except (binascii.Error, UnicodeEncodeError, zlib.error) as exc:
            raise ValueError(f"elastic: state is not base64 zlib data ({exc})") from None
        if len(raw) != expected or inflater.unconsumed_tail:
            raise ValueError(f"elastic: state holds {len(raw)} bytes, expected {expected}")
        offs = np.cumsum([0] + sizes)
        chunk = [raw[offs[i]:offs[i + 1]] for i in range(len(sizes))]
        where = np.frombuffer(chunk[0], "<u4").astype(np.int64)
        counts = np.frombuffer(chunk[3], "<i8")
        if n and (where.max() >= cells or (np.diff(where) <= 0).any() or (counts <= 0).any()):
            raise ValueError("elastic: heavy entries out of range")
        bi, si = where // out.slots, where % out.slots
        out.hkey[bi, si] = np.frombuffer(chunk[1], "<u8")
        out.full[bi, si] = np.frombuffer(chunk[2], "<u8").reshape(n, extra)
        out.count[bi, si] = counts
        out.flag[bi, si] = np.frombuffer(chunk[4], "u1")
        if (out.flag > OWN_FLAG | MERGE_FLAG).any():
            raise ValueError("elastic: flag bits out of range")
        out.neg[...] = np.frombuffer(chunk[5], "<i8")
        out.light[...] = np.frombuffer(chunk[6], out.light.dtype.newbyteorder("<")).reshape(
            out.light.shape)
        if (out.neg < 0).any():
            raise ValueError("elastic: vote- must be non-negative")
        out.saturated = sat
        return out
