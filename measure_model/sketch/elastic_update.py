"""The numpy update of an elastic sketch: the fallback and the reference of the C path.

It gives the state :mod:`measure_model.sketch.elastic_c` gives, bit for bit,
because it applies the same per-packet rule in the same order, only grouped:

* per table, packets are sorted by bucket (stable, so each bucket keeps its
  stream order); consecutive packets of one key in one bucket form a *run*;
* round ``r`` applies the ``r``-th run of every bucket at once (buckets are
  independent: a packet reads and writes its own bucket only);
* a run's outcome has a closed form: it adds to its slot or takes a free
  slot with its whole weight; or it votes, and the eviction happens at the
  first packet ``j`` where ``vote- + w_1 + ... + w_j > lambda * smallest``
  (``searchsorted`` on the cumulative weights): packets before ``j`` go to
  the light part, the rest to the new entry;
* light additions never influence the heavy part, and adding to a light cell
  is associative (cell up to its maximum, the excess to its overflow word),
  so they are summed per cell and applied once at the end.

Because the state is the per-packet state, it does not depend on how the
packets were cut into batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from measure_model.packet.keys import sketch_keys_of
from measure_model.sketch.elastic_slots import full_of_lanes

if TYPE_CHECKING:
    from measure_model.sketch.elastic import ElasticSketch, HeavyTable

OWN_FLAG = 1


def light_add(es: ElasticSketch, hkeys: np.ndarray, amounts: np.ndarray) -> None:
    """Add ``amounts`` at the light cells of ``hkeys`` (repeats allowed)."""
    if hkeys.shape[0] == 0:
        return
    idx = es.light_index(np.asarray(hkeys, np.uint64))  # (depth, n) flat indices
    flat = es.light.reshape(-1)
    top = es.cell_max
    amounts = np.asarray(amounts, np.int64)
    uniq, inv = np.unique(idx.reshape(-1), return_inverse=True)
    sums = np.bincount(inv, weights=np.tile(amounts, es.light_depth).astype(np.float64))
    total = flat[uniq].astype(np.int64) + np.rint(sums).astype(np.int64)
    over = total > top
    flat[uniq] = np.minimum(total, top).astype(flat.dtype)
    if over.any():
        cells = uniq[over]
        row, col = cells // es.width, cells % es.width
        np.add.at(es.ov, (row, col % es.ov_width), (total[over] - top).astype(np.uint64))


def apply(es: ElasticSketch, hkeys: np.ndarray, lanes: np.ndarray, tab: np.ndarray,
          weights: np.ndarray) -> None:
    """Apply packets (sketch keys, slot lanes, table index or -1, weights) in order."""
    light_h: list[np.ndarray] = []
    light_w: list[np.ndarray] = []
    direct = tab < 0
    if direct.any():
        light_h.append(hkeys[direct])
        light_w.append(weights[direct].astype(np.int64))
    for t, table in enumerate(es.tables):
        sel = np.flatnonzero(tab == t)
        if sel.shape[0]:
            _apply_table(es, table, hkeys[sel], lanes[sel, :table.lanes],
                         weights[sel].astype(np.int64), light_h, light_w)
    if light_h:
        light_add(es, np.concatenate(light_h), np.concatenate(light_w))


def _apply_table(es: ElasticSketch, table: HeavyTable, hk: np.ndarray, lanes: np.ndarray,
                 w: np.ndarray, light_h: list, light_w: list) -> None:
    b = table.bucket_of(hk)
    order = np.argsort(b, kind="stable")
    b, hk, lanes, w = b[order], hk[order], lanes[order], w[order]
    n = b.shape[0]
    new = np.ones(n, bool)
    new[1:] = (b[1:] != b[:-1]) | (lanes[1:] != lanes[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    cs = np.cumsum(w)
    base = np.where(starts > 0, cs[starts - 1], 0)
    tot = cs[ends - 1] - base
    rb = b[starts]
    first = np.ones(starts.shape[0], bool)
    first[1:] = rb[1:] != rb[:-1]
    fidx = np.flatnonzero(first)
    rank = np.arange(starts.shape[0]) - np.repeat(fidx, np.diff(np.append(fidx,
                                                                         starts.shape[0])))
    cmax, lam = es.count_max, es.LAMBDA
    for r in range(int(rank.max()) + 1):
        runs = np.flatnonzero(rank == r)
        bk, key, total = rb[runs], lanes[starts[runs]], tot[runs]
        cnt = table.count[bk].astype(np.int64)
        occ = cnt > 0
        match = occ & (table.keys[bk] == key[:, None, :]).all(axis=2)
        hit = match.any(axis=1)
        if hit.any():
            slot = match[hit].argmax(axis=1)
            v = cnt[hit, slot] + total[hit]
            es.clamped |= int((v > cmax).any())
            table.count[bk[hit], slot] = np.minimum(v, cmax)
        free = ~occ
        takes = ~hit & free.any(axis=1)
        if takes.any():
            slot = free[takes].argmax(axis=1)
            es.clamped |= int((total[takes] > cmax).any())
            table.keys[bk[takes], slot] = key[takes]
            table.count[bk[takes], slot] = np.minimum(total[takes], cmax)
            table.flag[bk[takes], slot] = 0
        votes = ~hit & ~takes
        if not votes.any():
            continue
        vr, vb = runs[votes], bk[votes]
        small = cnt[votes].argmin(axis=1)
        smallest = cnt[votes, small]
        limit = lam * smallest
        neg0 = table.neg[vb].astype(np.int64)
        j = np.searchsorted(cs, limit - neg0 + base[vr], side="right")
        evict = (j < ends[vr]) & (cmax > limit)
        if evict.any():
            eb, es_ = vb[evict], small[evict]
            old = sketch_keys_of(es.key_type, full_of_lanes(es.key_type, table.family,
                                                             table.keys[eb, es_]))
            light_h.append(old)
            light_w.append(smallest[evict])
            ej, er = j[evict], vr[evict]
            before = np.where(ej > 0, cs[np.maximum(ej - 1, 0)], 0) - base[er]
            light_h.append(hk[starts[er]])
            light_w.append(before)
            after = tot[er] - before
            es.clamped |= int((after > cmax).any())
            table.keys[eb, es_] = lanes[starts[er]]
            table.count[eb, es_] = np.minimum(after, cmax)
            table.flag[eb, es_] = OWN_FLAG
            table.neg[eb] = 0
        keep = ~evict
        if keep.any():
            kr = vr[keep]
            table.neg[vb[keep]] = np.minimum(neg0[keep] + tot[kr], cmax)
            light_h.append(hk[starts[kr]])
            light_w.append(tot[kr])
