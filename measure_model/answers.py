"""Answers of the elastic kinds from a (merged) snapshot, each with its error bound.

``answer(kind, snap, earlier)`` reads the ``elastic`` / ``spread`` sections of
a snapshot (:mod:`measure_model.wire.elastic_snapshot`) and returns the fields a
result carries for that kind; ``earlier`` are the task's previous cumulative
states (oldest first), needed by ``heavy_changers`` only. Every answer says
how far to trust it:

* per-key sizes: ``exact`` when the key owns a heavy entry with the flag
  off, otherwise over by at most ``error.abs`` (count-min ``eps *
  light_total``) with probability ``error.confidence``; never under;
* ``flow_size``: the histogram is MRAC's EM over the light part (an
  estimate; ``exact_flows`` of the flows, the unflagged heavy entries, have
  exact sizes) plus exact heavy sizes; ``flows`` its sum;
* ``cardinality``: linear counting's standard error (and ``over_at_most``
  from merge-flagged entries), since the task started and (``interval``) in
  the last report interval; ``lower``/``upper`` hold the truth with
  probability ``confidence`` (0.95: 1.96 standard errors each side, the
  lower end less ``over_at_most``; in an interval, light cells that were
  saturated and whose gain is unknown, ``unknown_cells``, widen the band to
  every reading they allow);
* ``entropy``: from the histogram of the last report interval (the
  difference of the last two cumulative states; ``scope``) or, on a task's
  first report, of everything so far; ``exact_share`` is the part of the
  total held by exact entries; ``lower``/``upper`` bound the entropy with no
  assumption on how the light part splits (the exact entries' terms, and the
  rest of the mass in between keys as large as the light part allows and as
  many equal keys as the cardinality estimate + 2 standard errors leaves);
* ``heavy_changers``: counts of the two intervals, each +- ``error.abs``;
* ``superspreaders`` / ``ddos_victims``: distinct peers with linear
  counting's standard error; merged bitmaps are exact (OR).

``host_answer(kind, snap, top)`` is the bounded per-host digest an agent
puts in its report's ``per_host`` line (``answer``; ``?host=`` shows it):
the flow size histogram in power-of-two bins (``histogram_log2``: lower
bound of ``[2^i, 2^(i+1))`` -> flows, at most 64 bins) with the ``top``
largest flows, the flow count, the entropy of everything the host counted
so far (an agent keeps no earlier state: ``scope`` ``since_start``), or the
``top`` spreaders. Heavy changers need two intervals of the merged state and
are answered network-wide only. The digest stays under ``MAX_HOST_ANSWER``
bytes of JSON, so a report of many agents stays within its body limit.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from typing import Any

import numpy as np

from measure_model.packet.keys import format_key, key_ints, parse_key, sketch_key_of
from measure_model.sketch import estimators as elastic_est
from measure_model.sketch.elastic import ElasticSketch
from measure_model.wire.elastic_snapshot import spread_of

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # two-sided: 1.96
MAX_HOST_ANSWER = 4096  # bytes of JSON of one host's digest (overlay_msgs checks it)
HOST_ANSWER_KINDS = ("flow_size", "entropy", "cardinality", "superspreaders", "ddos_victims")
LARGEST = 100
MAX_HISTOGRAM = 2000


def state_of(snap: dict) -> ElasticSketch:
    return ElasticSketch.from_wire(snap["elastic"])


def size_of(es: ElasticSketch, key: str) -> dict[str, Any]:
    """One key's size with its bound (ValueError if the key is malformed)."""
    hk = np.array([sketch_key_of(es.key_type, parse_key(es.key_type, key))], np.uint64)
    est = int(es.query(hk)[0])
    exact = bool(es.exact_mask(hk)[0])
    bound = es.error_bound(CONFIDENCE)
    return {"key": key, "size": est, "exact": exact,
            "error": {"abs": 0 if exact else round(bound["abs"], 3),
                      "never_under": es.never_under(),
                      "confidence": CONFIDENCE}}


def histogram(es: ElasticSketch) -> dict[str, Any]:
    d = elastic_est.distribution(es)
    hist = {int(s): round(n, 2) for s, n in d["histogram"].items() if round(n, 2) > 0}
    if len(hist) > MAX_HISTOGRAM:  # the largest sizes are single flows: keep the smallest
        hist = dict(sorted(hist.items())[:MAX_HISTOGRAM])
    return {"histogram": {str(k): v for k, v in sorted(hist.items())},
            "flows": round(d["flows"], 2), "raw": d["histogram"]}


def _flow_size(es: ElasticSketch, top: int) -> dict[str, Any]:
    h = histogram(es)
    e = es.entries()
    sizes = e["count"] + e["light"]
    order = np.argsort(-sizes, kind="stable")[:top]
    ints = key_ints(es.key_type, e["full"][order])
    largest = [[format_key(es.key_type, k), int(sizes[i]), bool(not e["flag"][i])]
               for k, i in zip(ints, order.tolist(), strict=True)]
    bound = es.error_bound(CONFIDENCE)
    return {"flow_size": {
        "histogram": h["histogram"], "flows": h["flows"], "largest": largest,
        "exact_flows": int((~e["flag"]).sum()),
        "error": {"per_key_abs": round(bound["abs"], 3), "confidence": CONFIDENCE,
                  "histogram": "EM estimate over the light part; heavy sizes exact"}}}


def _entropy_of(es: ElasticSketch, total: int) -> dict[str, Any]:
    h = histogram(es)
    bits = elastic_est.entropy(h["raw"], total)
    e = es.entries()
    exact_mass = int(e["count"][~e["flag"]].sum())
    flows = h["flows"]
    lower, upper = _entropy_bounds(es, e, total)
    return {"bits": round(bits, 6),
            "normalized": round(bits / math.log2(flows), 6) if flows > 1 else 0.0,
            "flows": flows, "total": total,
            "exact_share": round(exact_mass / total, 6) if total else 1.0,
            "lower": round(min(lower, bits), 6), "upper": round(max(upper, bits), 6)}


def _entropy_bounds(es: ElasticSketch, e: dict[str, np.ndarray], total: int
                    ) -> tuple[float, float]:
    """Entropy bounds (bits) that need no assumption on how the light part splits: the
    exact entries' terms are known; the rest of the mass, share ``m``, is held by keys
    of at most ``c`` each (the smallest row maximum of the light part, or a flagged
    heavy entry's count plus its light estimate), so it adds at least ``m log2(total /
    c)``, and at most ``m log2(n / m)`` for ``n`` keys not exact (cardinality estimate
    + 2 std. errors, at most the rest's count)."""
    if total <= 0:
        return 0.0, 0.0
    exact = e["count"][~e["flag"]]
    p = exact[exact > 0].astype(np.float64) / total
    known = float(-(p * np.log2(p)).sum())
    rest = total - int(exact.sum())
    if rest <= 0:
        return known, known
    m = rest / total
    rows = min(int(es.light_row(r).max()) for r in range(es.light.shape[0]))
    flagged = e["count"][e["flag"]].astype(np.int64) + e["light"][e["flag"]]
    largest = min(rest, max(1, rows, int(flagged.max()) if flagged.size else 0))
    c = elastic_est.cardinality(es)
    n = min(float(rest), max(1.0, c["estimate"] - c["heavy_exact"] + 2 * c["stderr"]))
    return known + m * math.log2(total / largest), known + m * math.log2(n / m)


def _entropy(es: ElasticSketch, total: int, earlier: list[ElasticSketch]) -> dict[str, Any]:
    """Entropy of the last report interval (of everything so far on the first report)."""
    since_start = _entropy_of(es, total)
    if not earlier:
        return {"entropy": {**since_start, "scope": "since_start"}}
    part = elastic_est.interval_state(earlier[-1], es)
    interval_total = part.heavy_total() + part.light_total()
    return {"entropy": {**_entropy_of(part, interval_total), "scope": "interval",
                        "since_start_bits": since_start["bits"]}}


def _cardinality(es: ElasticSketch, earlier: list[ElasticSketch] | None = None
                 ) -> dict[str, Any]:
    """Distinct keys since the task started and, from the second report on, the keys
    with packets in the last report interval (``interval``: the same estimator over
    the difference of the last two states, ``elastic_est.interval_cardinality``)."""
    c = elastic_est.cardinality(es)
    out = {"estimate": int(c["estimate"]), "stderr": round(c["stderr"], 3),
           "rel_stderr": round(c["rel_stderr"], 6), "over_at_most": int(c["over_at_most"]),
           "scope": "since_start", **_count_bounds(c)}
    if earlier:
        i = elastic_est.interval_cardinality(earlier[-1], es)
        out["interval"] = {"estimate": int(i["estimate"]), "stderr": round(i["stderr"], 3),
                           "over_at_most": int(i["over_at_most"]),
                           "unknown_cells": int(i["unknown_cells"]), **_count_bounds(i)}
    return {"cardinality": out}


def _count_bounds(c: dict[str, float]) -> dict[str, Any]:
    """``lower``/``upper``: a ``CONFIDENCE`` band, the lowest and highest readings of the
    light cells (``low``/``high``: equal to the estimate unless some cells' gain in the
    interval is unknown) less and plus ``Z`` of their standard errors, the lower end
    also less the keys a merge may have counted twice (``over_at_most``)."""
    return {"lower": max(0, math.floor(min(c["estimate"], c["low"] - Z * c["low_stderr"])
                                       - c["over_at_most"])),
            "upper": math.ceil(max(c["estimate"], c["high"] + Z * c["high_stderr"])),
            "confidence": CONFIDENCE}


def _changers(es: ElasticSketch, snap: dict, earlier: list[ElasticSketch]) -> dict[str, Any]:
    threshold = snap.get("threshold", {})
    if len(earlier) < 1:
        return {"heavy_changers": [], "heavy_changers_note": "needs two report intervals"}
    s1 = earlier[-1]
    s0 = earlier[-2] if len(earlier) >= 2 else None
    interval = es.heavy_total() + es.light_total() - s1.heavy_total() - s1.light_total()
    if "fraction" in threshold:
        limit = max(1.0, threshold["fraction"] * interval)
    else:
        limit = float(threshold.get("absolute", 1))
    bound = es.error_bound(CONFIDENCE)["abs"]
    out = []
    for full, before, after in elastic_est.changers(s0, s1, es, limit)[:LARGEST]:
        key = format_key(es.key_type, key_ints(es.key_type, np.asarray([full]))[0])
        out.append({"key": key, "before": before, "after": after, "change": after - before,
                    "error": round(2 * bound, 3)})
    return {"heavy_changers": out, "change_threshold": limit}


def _spreaders(snap: dict, kind: str) -> dict[str, Any]:
    ss, side = spread_of(snap["spread"])
    cand, full = ss.candidates()
    est = ss.estimate(cand)
    keep = np.flatnonzero(est >= ss.min_distinct)
    keep = keep[np.argsort(-est[keep], kind="stable")][:LARGEST]
    out = []
    for i in keep.tolist():
        n = float(est[i])
        key = format_key(side, key_ints(side, np.asarray([full[i]]))[0])
        out.append({"key": key, "distinct": round(n, 1) if math.isfinite(n) else None,
                    "stderr": round(ss.stderr(n), 2) if math.isfinite(n) else None,
                    "saturated": not math.isfinite(n)})
    return {kind: out, "min_distinct": ss.min_distinct,
            "distinct_readable_up_to": round(ss.saturation)}


def answer(kind: str, snap: dict, earlier: list[ElasticSketch]) -> dict[str, Any]:
    """The result fields of an elastic kind (module docstring)."""
    if snap.get("elastic") is None:
        return {}
    es = state_of(snap)
    if kind == "flow_size":
        return _flow_size(es, LARGEST)
    if kind == "entropy":
        return _entropy(es, int(snap.get("total", 0)), earlier)
    if kind == "cardinality":
        return _cardinality(es, earlier)
    if kind == "heavy_changers":
        return _changers(es, snap, earlier)
    if kind in ("superspreaders", "ddos_victims") and snap.get("spread") is not None:
        return _spreaders(snap, kind)
    return {}


def _log2_bins(hist: dict[int, float]) -> dict[str, float]:
    """A size histogram in power-of-two bins: lower bound 2^i -> flows in [2^i, 2^(i+1))."""
    bins: dict[int, float] = {}
    for size, n in hist.items():
        if size >= 1:
            low = 1 << (int(size).bit_length() - 1)
            bins[low] = bins.get(low, 0.0) + n
    return {str(k): round(v, 2) for k, v in sorted(bins.items()) if round(v, 2) > 0}


def host_answer(kind: str, snap: dict, top: int) -> dict[str, Any]:
    """One host's bounded digest of its kind's answer (module docstring); {} for other
    kinds or a snapshot without elastic state. Lists are shortened until the digest fits
    in ``MAX_HOST_ANSWER`` bytes of JSON."""
    if snap.get("elastic") is None or kind not in HOST_ANSWER_KINDS:
        return {}
    es = state_of(snap)
    top = max(0, min(top, 20))
    while True:
        out = _host_answer(kind, es, snap, top)
        if top == 0 or len(json.dumps(out)) <= MAX_HOST_ANSWER:
            return out
        top //= 2


def _host_answer(kind: str, es: ElasticSketch, snap: dict, top: int) -> dict[str, Any]:
    if kind == "flow_size":
        fs = _flow_size(es, top)["flow_size"]
        return {"histogram_log2": _log2_bins(histogram(es)["raw"]), "flows": fs["flows"],
                "largest": fs["largest"], "exact_flows": fs["exact_flows"]}
    if kind == "entropy":
        e = _entropy_of(es, int(snap.get("total", 0)))
        return {"bits": e["bits"], "normalized": e["normalized"], "flows": e["flows"],
                "scope": "since_start"}
    if kind == "cardinality":
        c = _cardinality(es)["cardinality"]
        return {"estimate": c["estimate"], "stderr": c["stderr"]}
    if snap.get("spread") is None:
        return {}
    found = _spreaders(snap, kind)
    return {kind: [{"key": x["key"], "distinct": x["distinct"]} for x in found[kind][:top]],
            "min_distinct": found["min_distinct"]}
