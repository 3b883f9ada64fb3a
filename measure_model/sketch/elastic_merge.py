"""Merge and wire form of an elastic sketch (the rules are in :mod:`.elastic`'s docstring).

Wire form: the parameters, ``entries`` (occupied slots per heavy table),
``saturated`` (light cells at their maximum), ``clamped`` and ``state``:
base64 of zlib of, per table, the occupied slot positions (uint32), their
lanes (uint32), counts (the table's count type), flags (uint8) and every
bucket's ``vote-``; then the light cells and the overflow words (uint64),
all little-endian.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from measure_model.sketch import elastic_update
from measure_model.sketch.countmin import MASK64
from measure_model.sketch.elastic_slots import lanes_from_full

if TYPE_CHECKING:  # the class calls this module: it is passed in, never imported
    from measure_model.sketch.elastic import ElasticSketch, HeavyTable


def merge(a: ElasticSketch, b: ElasticSketch) -> ElasticSketch:
    """Both sides' state in one: light cells add, heavy entries unite per bucket."""
    if not a.compatible(b):
        raise ValueError(f"cannot merge elastic counters with different parameters: "
                         f"{a.params()} vs {b.params()}")
    out = a.copy()
    top = a.cell_max
    total = a.light.astype(np.int64) + b.light
    out.light[...] = np.minimum(total, top)
    out.ov[...] = a.ov + b.ov
    rows, cols = np.nonzero(total > top)
    if rows.shape[0]:
        np.add.at(out.ov, (rows, cols % a.ov_width),
                  (total[rows, cols] - top).astype(np.uint64))
    out.clamped = a.clamped | b.clamped
    for i, (ta, tb, to) in enumerate(zip(a.tables, b.tables, out.tables, strict=True)):
        to.neg[...] = np.minimum(ta.neg.astype(np.int64) + tb.neg, a.count_max)
        fa, ha, ca, ga = ta.occupied()
        fb, hb, cb, gb = tb.occupied()
        # an entry of one side whose key the other side has no entry for may have mass in
        # the other side's light part: it gets MERGE_FLAG
        ga = ga | _maybe_light(b, i, ha)
        gb = gb | _maybe_light(a, i, hb)
        _rebuild(out, to, np.concatenate([fa, fb]), np.concatenate([ha, hb]),
                 np.concatenate([ca, cb]), np.concatenate([ga, gb]))
    out._slot_hk = None
    return out


def _maybe_light(other: ElasticSketch, t: int, hk: np.ndarray) -> np.ndarray:
    table = other.tables[t]
    hit, _, _ = table.lookup(hk, table.slot_hkeys())
    b = table.bucket_of(hk)
    maybe = ~hit & (table.neg[b] > 0) & (other.light_query(hk) > 0)
    return np.where(maybe, other.MERGE_FLAG, 0).astype(np.uint8)


def _rebuild(es: ElasticSketch, table: HeavyTable, full: np.ndarray, hk: np.ndarray,
             cnt: np.ndarray, flag: np.ndarray) -> None:
    """Refill one table from entries (keys may repeat: counts add, flags or); per bucket
    the largest ``slots`` stay, the others' counts go to the light part."""
    table.clear()
    if hk.shape[0] == 0:
        return
    uniq, first, inv = np.unique(hk, return_index=True, return_inverse=True)
    sums = np.bincount(inv, weights=cnt.astype(np.float64)).astype(np.int64)
    flags = np.zeros(uniq.shape[0], np.uint8)
    np.bitwise_or.at(flags, inv, flag)
    lanes = lanes_from_full(es.key_type, table.family, full[first])
    b = table.bucket_of(uniq)
    order = np.lexsort((-sums, b))
    uniq, sums, flags, lanes, b = uniq[order], sums[order], flags[order], lanes[order], \
        b[order]
    start = np.ones(b.shape[0], bool)
    start[1:] = b[1:] != b[:-1]
    starts = start.nonzero()[0]
    rank = np.arange(b.shape[0]) - np.repeat(starts, np.diff(np.append(starts, b.shape[0])))
    keep = rank < table.slots
    kb, ks = b[keep], rank[keep]
    table.keys[kb, ks] = lanes[keep]
    table.count[kb, ks] = np.minimum(sums[keep], es.count_max)
    table.flag[kb, ks] = flags[keep]
    if (~keep).any():
        elastic_update.light_add(es, uniq[~keep], sums[~keep])
        table.neg[b[~keep]] = np.maximum(table.neg[b[~keep]], 1)


def to_wire(es: ElasticSketch) -> dict[str, Any]:
    """JSON-ready dict: parameters plus base64 zlib of the occupied entries and light."""
    parts, entries = [], []
    for t in es.tables:
        occ = t.count > 0
        where = np.flatnonzero(occ.reshape(-1)).astype("<u4")
        entries.append(int(where.shape[0]))
        parts += [where.tobytes(), t.keys[occ].astype("<u4").tobytes(),
                  t.count[occ].astype(t.count.dtype.newbyteorder("<")).tobytes(),
                  t.flag[occ].tobytes(), t.neg.astype(t.neg.dtype.newbyteorder("<")).tobytes()]
    parts += [es.light.astype(es.light.dtype.newbyteorder("<")).tobytes(),
              es.ov.astype("<u8").tobytes()]
    return {**es.params(), "entries": entries, "saturated": es.saturated,
            "clamped": es.clamped,
            "state": base64.b64encode(zlib.compress(b"".join(parts), 1)).decode("ascii")}


NAMES = ("memory", "key", "increment", "seed", "heavy_share", "slots", "light_depth",
         "family", "entries", "saturated", "clamped", "state")


def _int_field(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"elastic: {name} must be an integer from {lo} to {hi}")
    return value


def from_wire(cls: type[ElasticSketch], data: Any) -> ElasticSketch:
    """Rebuild from :func:`to_wire` output; ValueError naming the field if malformed."""
    if not isinstance(data, dict):
        raise ValueError("elastic must be an object")
    for name in NAMES:
        if name not in data:
            raise ValueError(f"elastic: missing field '{name}'")
    unknown = sorted(set(data) - set(NAMES))
    if unknown:
        raise ValueError(f"elastic: unknown field {unknown[0]!r}")
    share = data["heavy_share"]
    if not isinstance(share, float) or not 0.0 < share < 1.0:
        raise ValueError("elastic: heavy_share must be a number between 0 and 1")
    slots = _int_field("slots", data["slots"], 1, 64)
    depth = _int_field("light_depth", data["light_depth"], 1, 8)
    seed = _int_field("seed", data["seed"], 0, MASK64)
    if data["family"] not in cls.FAMILIES or isinstance(data["family"], bool):
        raise ValueError("elastic: family must be 0, 4 or 6")
    out = cls(data["memory"], data["key"], data["increment"], seed, share, slots, depth,
              data["family"])
    _int_field("saturated", data["saturated"], 0, 2 ** 62)
    out.clamped = _int_field("clamped", data["clamped"], 0, 1)
    entries = data["entries"]
    if not isinstance(entries, list) or len(entries) != len(out.tables):
        raise ValueError(f"elastic: entries must be a list of {len(out.tables)} integers")
    ns = [_int_field("entries", n, 0, t.buckets * t.slots)
          for n, t in zip(entries, out.tables, strict=True)]
    if not isinstance(data["state"], str):
        raise ValueError("elastic: state must be a base64 string")
    sizes = []
    for n, t in zip(ns, out.tables, strict=True):
        c = t.count.dtype.itemsize
        sizes += [4 * n, 4 * n * t.lanes, c * n, n, c * t.buckets]
    sizes += [out.light.nbytes, out.ov.nbytes]
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
    for i, (n, t) in enumerate(zip(ns, out.tables, strict=True)):
        where, keys, counts, flags, neg = chunk[5 * i:5 * i + 5]
        ctype = t.count.dtype.newbyteorder("<")
        pos = np.frombuffer(where, "<u4").astype(np.int64)
        cnt = np.frombuffer(counts, ctype)
        if n and (pos.max() >= t.buckets * t.slots or (np.diff(pos) <= 0).any()
                  or (cnt == 0).any() or int(cnt.max()) > out.count_max):
            raise ValueError("elastic: heavy entries out of range")
        bi, si = pos // t.slots, pos % t.slots
        t.keys[bi, si] = np.frombuffer(keys, "<u4").reshape(n, t.lanes)
        t.count[bi, si] = cnt
        t.flag[bi, si] = np.frombuffer(flags, "u1")
        t.neg[...] = np.frombuffer(neg, ctype)
        if (t.flag > cls.OWN_FLAG | cls.MERGE_FLAG).any():
            raise ValueError("elastic: flag bits out of range")
    out.light[...] = np.frombuffer(chunk[-2], out.light.dtype.newbyteorder("<")).reshape(
        out.light.shape)
    out.ov[...] = np.frombuffer(chunk[-1], "<u8").reshape(out.ov.shape)
    return out
