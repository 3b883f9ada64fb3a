"""Estimators over an elastic counter: flow size distribution, flow count, entropy, changes.

Design
------
* **Number of flows** (:func:`cardinality`): linear counting (Whang et al.
  1990) on every light row, averaged, plus the heavy entries whose flag is
  off (their packets never reached the light part). A light row of ``w``
  cells with ``z`` zeros holds ``w ln(w / z)`` flows, standard error
  ``sqrt(w (e^t - t - 1)) / n`` at load ``t = n / w``. Exact merge: the light
  part is linear, so the merged zeros are the union stream's zeros.
* **Flow size distribution** (:func:`distribution`): MRAC's EM (Kumar et al.
  SIGMETRICS 2004) over light row 0, less one light flow per flagged heavy
  key (its light share), plus the heavy entries as flows of known size (the
  ElasticSketch recipe). The model: flows land in cells as a Poisson number
  (rate ``lambda = n / w``) with sizes drawn from ``phi``, so a cell's value
  is compound Poisson. Its E-step is exact, with no limit on the number of
  flows in a cell (MRAC and the reference enumerate splits into at most 3 to
  7 flows): the value probabilities ``p`` come from Panjer's recursion
  ``p_0 = e^-lambda, p_v = lambda / v * sum_s s phi_s p_(v-s)``, and the
  expected number of flows of size ``s`` in a cell of value ``v`` is
  ``lambda phi_s p_(v-s) / p_v`` (a Poisson count's size-biased form), so
  each round costs ``O(MAX_V^2)``. The M-step sets ``phi`` to the expected
  sizes and ``n`` to their sum; ``EM_ROUNDS`` (30) rounds from the cell
  histogram (``n`` from linear counting). Values above ``MAX_V`` count as
  one flow each.
* **Entropy** (:func:`entropy`) of the flow size shares, from the
  distribution: ``H = log2 N - (1/N) sum_i n_i i log2 i``.
* **One interval** (:func:`interval_state`): the difference of two
  cumulative states, so distribution and entropy can be read per report
  interval.
* **Heavy changers** (:func:`changers`): keys whose estimate changed by at
  least a threshold between two states, taken from the heavy entries of both
  (ElasticSketch's rule); each change carries its count-min error bound.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from measure_model.sketch.elastic import MERGE_FLAG, OWN_FLAG, ElasticSketch

MAX_V = 256
EM_ROUNDS = 30


def _linear_count(row: np.ndarray, unknown: np.ndarray | None = None
                  ) -> tuple[float, float]:
    """(flows, standard error) of one counter row by linear counting; cells in
    ``unknown`` are left out and the count of the others scaled to the row (the keys
    hash uniformly, so the known cells see their share of them)."""
    w = row.shape[0]
    if unknown is not None and unknown.any():
        known = row[~unknown]
        if known.shape[0] == 0:
            return 0.0, 0.0
        n, err = _linear_count(known)
        return n * w / known.shape[0], err * w / known.shape[0]
    zeros = int(np.count_nonzero(row == 0))
    if zeros == 0:
        zeros = 1  # saturated row: a lower bound
    n = w * math.log(w / zeros)
    t = n / w
    return n, math.sqrt(max(w * (math.exp(t) - t - 1.0), 0.0))


def _rows_count(rows: np.ndarray, unknown: np.ndarray | None = None
                ) -> tuple[float, float]:
    """Linear counting averaged over the light rows: (flows, standard error)."""
    counts = [_linear_count(row, None if unknown is None else unknown[r])
              for r, row in enumerate(rows)]
    return (sum(c[0] for c in counts) / len(counts),
            math.sqrt(sum(c[1] ** 2 for c in counts)) / len(counts))


def cardinality(es: ElasticSketch, unknown: np.ndarray | None = None) -> dict[str, float]:
    """Distinct keys: light rows by linear counting plus unflagged heavy entries.

    ``unknown`` (a bool per light cell, :func:`interval_cardinality`) marks cells
    that may or may not have had a packet: the estimate leaves them out, and
    ``low``/``high`` (each with its standard error) are the counts with all of
    them empty or all occupied, between which the count of the true occupancy lies.
    """
    light, stderr = _rows_count(es.light, unknown)
    low = high = (light, stderr)
    if unknown is not None and unknown.any():
        low = _rows_count(np.where(unknown, 0, es.light))
        high = _rows_count(np.where(unknown, 1, es.light))
    e = es.entries()
    exact = int((~e["flag"]).sum())
    # a flagged entry whose key first came as the evicting challenger has nothing in
    # the light part; of F own-flagged entries, A have all light cells non-zero, which
    # a key outside the light part shows with probability rho (non-zero by chance)
    own = (e["bits"] & OWN_FLAG) > 0
    flagged = int(own.sum())
    rho = float(np.prod([(row > 0).mean() for row in es.light]))
    seen = int((e["light"][own] > 0).sum())
    inside = min(max((seen - flagged * rho) / (1.0 - rho), 0.0), flagged) if rho < 1 else seen
    # flagged by a merge only: counted as outside the light part, so the estimate may
    # be over by at most their number (a key seen on two hosts, light on one of them)
    merge_only = int((e["bits"] == MERGE_FLAG).sum())
    heavy = exact + flagged - inside + merge_only
    est = light + heavy
    return {"estimate": round(est), "stderr": stderr,
            "rel_stderr": stderr / est if est else 0.0, "heavy_exact": exact,
            "over_at_most": merge_only, "unknown_cells": int(0 if unknown is None
                                                             else unknown.sum()),
            "low": low[0] + heavy, "low_stderr": low[1],
            "high": high[0] + heavy, "high_stderr": high[1]}


def em_distribution(row: np.ndarray, rounds: int = EM_ROUNDS) -> dict[int, float]:
    """MRAC EM over a counter row, exact compound-Poisson E-step: flows per size."""
    row = np.asarray(row, np.int64)
    w = row.shape[0]
    hist = np.bincount(row)
    big = {int(v): float(c) for v, c in enumerate(hist) if v > MAX_V and c}
    top = min(hist.shape[0] - 1, MAX_V)  # sizes above the largest value present are 0
    cv = hist[: top + 1].astype(np.float64)
    cv[0] = 0.0
    if not cv.any():
        return big
    n_big = sum(big.values())
    n_flows = max(_linear_count(row)[0], 1.0)
    phi = cv / cv.sum()
    sizes = np.arange(top + 1, dtype=np.float64)
    n_small = 0.0
    for _ in range(rounds):
        lam = n_flows / w
        a = lam * sizes * phi
        p = np.zeros(top + 1)
        p[0] = math.exp(-lam)
        for v in range(1, top + 1):
            p[v] = float(np.dot(a[1:v + 1], p[v - 1::-1])) / v
        ratio = np.divide(cv, p, out=np.zeros_like(cv), where=p > 0)
        # sum over v >= s of ratio[v] p[v - s], for every s
        back = np.correlate(ratio, p, mode="full")[top:]
        expect = lam * phi * back
        expect[0] = 0.0
        n_small = float(expect.sum())
        if n_small <= 0:
            break
        new_phi = expect / n_small
        done = float(np.abs(new_phi - phi).max()) < 1e-12
        phi, n_flows = new_phi, n_small + n_big
        if done:
            break
    out = {i: float(x) for i, x in enumerate(phi * n_small) if i and x > 1e-9}
    for v, c in big.items():
        out[v] = out.get(v, 0.0) + c
    return out


class Distribution(TypedDict):
    """A flow size histogram {size: flows}, its number of flows and of heavy entries."""

    histogram: dict[int, float]
    flows: float
    heavy_flows: int


def distribution(es: ElasticSketch, rounds: int = EM_ROUNDS) -> Distribution:
    """Flow size histogram {size: flows} (EM over the light part + heavy entries).

    A flagged heavy key also has packets in the light part: the EM has counted
    that share as one light flow of the size its cell reads, so one flow of that
    size is taken out of the EM's histogram (ElasticSketch's rule; taking the
    share out of the cells before the EM instead zeroes the other flows of the
    cell and was 1.5-2x worse on the benchmark traces), and the key counts as
    one flow of its whole size.
    """
    e = es.entries()
    hist = em_distribution(es.light_row(0), rounds)
    shares = e["light"][e["flag"] & (e["light"] > 0)]
    for v in shares.tolist():
        if hist.get(int(v), 0.0) > 0:
            hist[int(v)] = max(0.0, hist[int(v)] - 1.0)
    hist = {s: n for s, n in hist.items() if n > 0}
    sizes = e["count"] + e["light"]
    for s in sizes.tolist():
        hist[int(s)] = hist.get(int(s), 0.0) + 1.0
    flows = sum(hist.values())
    return Distribution(histogram=dict(sorted(hist.items())), flows=flows,
                        heavy_flows=int(sizes.shape[0]))


def entropy(hist: dict[int, float], total: int) -> float:
    """Entropy (bits) of the flow shares of ``total`` packets from a size histogram."""
    if total <= 0:
        return 0.0
    s = sum(n * i * math.log2(i) for i, n in hist.items() if i > 1)
    return max(0.0, math.log2(total) - s / total)


def wmre(true_hist: dict[int, float], est_hist: dict[int, float]) -> float:
    """Weighted mean relative error of two histograms (MRAC's measure)."""
    sizes = set(true_hist) | set(est_hist)
    num = sum(abs(true_hist.get(i, 0.0) - est_hist.get(i, 0.0)) for i in sizes)
    den = sum((true_hist.get(i, 0.0) + est_hist.get(i, 0.0)) / 2 for i in sizes)
    return num / den if den else 0.0


def changers(s0: ElasticSketch | None, s1: ElasticSketch, s2: ElasticSketch,
             threshold: float) -> list[tuple[np.ndarray, int, int]]:
    """Keys whose count in the last interval differs from the interval before by >= threshold.

    ``s0, s1, s2`` are three cumulative states at consecutive report times
    (``s0`` None: nothing before ``s1``): the intervals are
    ``s1 - s0`` and ``s2 - s1`` (estimates subtract; the light part is linear).
    Candidates are the heavy entries of every state (ElasticSketch's rule).
    Returns (full key, count in the earlier interval, count in the later one),
    largest change first.
    """
    parts = [s.entries() for s in (s0, s1, s2) if s is not None]
    hk = np.concatenate([p["hkey"] for p in parts])
    full = np.concatenate([p["full"] for p in parts])
    hk, first = np.unique(hk, return_index=True)
    full = full[first]
    e1, e2 = s1.query(hk), s2.query(hk)
    e0 = s0.query(hk) if s0 is not None else np.zeros_like(e1)
    # each agent's estimates never fall; a merged state's can (an entry evicted to the
    # light part): an interval's count is never below 0
    before, after = np.maximum(e1 - e0, 0), np.maximum(e2 - e1, 0)
    delta = after - before
    keep = np.flatnonzero(np.abs(delta) >= threshold)
    keep = keep[np.argsort(-np.abs(delta[keep]), kind="stable")]
    return [(full[i], int(before[i]), int(after[i])) for i in keep]


def _interval_light(prev: ElasticSketch, cur: ElasticSketch
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per light cell: the most it gained between two cumulative states, and whether it
    is unknown if it gained anything (``unknown``); see :func:`interval_state`.

    A cell below its maximum in ``cur`` is exact in both states. A maximal cell
    keeps its excess in its row's overflow word, shared by ``OV_CELLS`` cells, so its
    own gain is only known to lie between what its byte shows (0 if it was already
    maximal) and that plus the word's growth.
    """
    raw = np.stack([cur.light[r].astype(np.int64) - prev.light[r].astype(np.int64)
                    for r in range(cur.light_depth)])
    old = prev.entries()
    hit, now, _ = cur.heavy_lookup(old["hkey"])
    fell = old["count"] - np.minimum(old["count"], np.where(hit, now, 0))
    moved = fell > 0
    if moved.any():
        idx = cur.light_index(old["hkey"][moved]) % cur.width
        for r in range(cur.light_depth):
            np.subtract.at(raw[r], idx[r], fell[moved])
    top = cur.light == cur.cell_max
    cols = np.arange(cur.width) % cur.ov_width
    growth = (cur.ov.astype(np.int64) - prev.ov.astype(np.int64))[:, cols]
    upper = np.maximum(np.where(top, raw + growth, raw), 0)
    unknown = top & (raw <= 0) & (upper > 0)
    return upper, unknown


def interval_state(prev: ElasticSketch, cur: ElasticSketch) -> ElasticSketch:
    """The state of the interval between two cumulative states of one counter.

    Every packet of a key is in its heavy entry or in its light cells, in both
    states, so a key's mass in the interval is its mass in ``cur`` less its mass
    in ``prev``. Light cells subtract (the light part is linear; a maximal cell
    gains at most its byte's gain plus its overflow word's growth, so the
    interval's cells never read under the truth); a heavy entry keeps what it
    gained since ``prev`` (its count there, if it had an entry, is taken off). A
    key whose heavy count fell (evicted to the light part, by a later key's
    votes or by a merge, and perhaps back in with a new count) brought at least
    that fall into its light cells during the interval: it is taken off those
    cells too, so a key evicted without a packet in the interval leaves nothing
    in it (without this, churn, new keys evicting old ones, counted the evicted
    keys as flows of the interval).
    """
    return _interval(prev, cur)[0]


def interval_cardinality(prev: ElasticSketch, cur: ElasticSketch) -> dict[str, float]:
    """:func:`cardinality` of the interval between two cumulative states, the light
    cells whose gain is unknown (maximal cells, :func:`_interval_light`) left out of
    the estimate and bracketed by ``low``/``high``."""
    part, unknown = _interval(prev, cur)
    return cardinality(part, unknown)


def _interval(prev: ElasticSketch, cur: ElasticSketch) -> tuple[ElasticSketch, np.ndarray]:
    if not prev.compatible(cur):
        raise ValueError("interval of two elastic states with different parameters")
    upper, unknown = _interval_light(prev, cur)
    out = cur.copy()
    out.ov[...] = 0
    for r in range(cur.light_depth):
        out.light[r] = np.minimum(upper[r], cur.cell_max).astype(out.light.dtype)
        over = np.flatnonzero(upper[r] > cur.cell_max)
        np.add.at(out.ov[r], over % cur.ov_width,
                  (upper[r][over] - cur.cell_max).astype(np.uint64))
    for table in out.tables:
        occ = table.count > 0
        hk = table.slot_hkeys()[occ]
        hit, before, _ = prev.heavy_lookup(hk)
        left = np.maximum(table.count[occ].astype(np.int64) - np.where(hit, before, 0), 0)
        counts = table.count.copy()
        counts[occ] = left
        gone = occ & (counts == 0)  # no packet since prev: not a flow of the interval
        table.count[...] = counts
        table.flag[gone] = 0
    out._slot_hk = None
    return out, unknown
