"""Exact merge of counter snapshots (the overlay's "merged results up").

Design
------
A snapshot (docs/design.md, built by ``host_agent.counter.Counter.snapshot``)
carries everything a merge needs: the count-min cells, the heavy-hitter
candidates, totals, the window, scan pairs and HyperLogLog registers. Merging
is exact where the math allows:

* sketches with equal width/depth/seed add cell by cell (``ValueError``
  otherwise); totals, missed and unparsed counts add;
* candidates are the union of both sides' keys, **re-estimated against the
  merged sketch** and re-checked against the merged candidate threshold.
  Why the union is enough: for a fractional threshold each counter reports
  every key whose estimate reaches ``fraction * its total``; a key with at
  least ``fraction * (T1 + ... + Tn)`` packets overall holds at least
  ``fraction * Ti`` on some counter ``i`` (pigeonhole), so one side reports it,
  and at every merge on the way up it stays above the merged threshold. A key
  heavy in aggregate but light everywhere is therefore found. For absolute
  thresholds the same holds when each counter uses ``threshold_abs / n``
  (``divisor`` = number of counters) as its candidate threshold. Without a
  threshold the candidates are each side's top ``max_candidates``, and the
  merge keeps the top ``max_candidates`` of the union (best effort: a key
  just outside every host's top list can be missed);
* windows are grouped by their start: windows with the same start add (hosts
  use epoch-aligned tumbling windows, so their windows line up), the newest
  group is the merged current window and the next one its ``previous``.
  Sliding windows add. Distinct keys of a merged window are exact while no
  part was truncated; otherwise the largest known count (a lower bound);
* HyperLogLog registers take the maximum (exact union);
* scan port and destination sets unite, bounded by ``max_scan_list`` per
  source and ``max_scan_sources`` sources, with a ``truncated`` flag;
* ``covered``/``missing`` unite, ``oldest`` is the minimum and
  ``generated_at`` the maximum.

Snapshots come from the network: everything is validated, and a malformed or
incompatible snapshot raises ``ValueError`` with a message, never anything
else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from measure_model.hll import HyperLogLog
from measure_model.keys import (
    INCREMENTS,
    KEY_TYPES,
    format_key,
    parse_key,
    sketch_key_of,
)
from measure_model.sketch import CountMinSketch

MAX_CANDIDATES = 100_000
DEFAULT_LIMITS = {"top_k": 10, "max_candidates": 1000, "max_window_keys": 10000,
                  "max_scan_sources": 100, "max_scan_list": 1024}


# ---------------------------------------------------------------- validation
def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"snapshot: {message}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _count_map(value: Any, name: str) -> dict[str, int]:
    _need(isinstance(value, dict), f"{name} must be an object")
    _need(len(value) <= MAX_CANDIDATES, f"{name} has more than {MAX_CANDIDATES} keys")
    for k, v in value.items():
        _need(isinstance(k, str) and _is_int(v) and v >= 0,
              f"{name} must map key strings to non-negative integers")
    return value


def _window_ok(w: Any, name: str) -> None:
    _need(isinstance(w, dict), f"{name} must be an object")
    _need(_is_num(w.get("start")), f"{name}.start must be a number")
    _count_map(w.get("counts"), f"{name}.counts")
    _need(_is_int(w.get("distinct")) and w["distinct"] >= 0,
          f"{name}.distinct must be a non-negative integer")


def check_snapshot(snap: Any) -> dict[str, Any]:
    """Validate the fields a merge reads; return the snapshot (ValueError if malformed)."""
    _need(isinstance(snap, dict), "must be an object")
    _need(snap.get("key") in KEY_TYPES, f"key {snap.get('key')!r} is not one of "
                                        f"{', '.join(KEY_TYPES)}")
    _need(snap.get("increment") in INCREMENTS,
          f"increment {snap.get('increment')!r} is not one of pkt, bytes")
    for name in ("packets", "bytes", "total"):
        _need(_is_int(snap.get(name)) and 0 <= snap[name] < 2 ** 63,
              f"{name} must be a non-negative integer")
    _need(isinstance(snap.get("sketch"), dict), "has no sketch; it cannot be merged")
    _count_map(snap.get("candidates", {}), "candidates")
    _count_map(snap.get("heavy_hitters", {}), "heavy_hitters")
    top = snap.get("top_k", [])
    _need(isinstance(top, list) and len(top) <= MAX_CANDIDATES and all(
        isinstance(e, list | tuple) and len(e) == 2 and isinstance(e[0], str) and _is_int(e[1])
        and e[1] >= 0 for e in top), "top_k must be a list of [key, count] pairs")
    threshold = snap.get("threshold", {})
    _need(isinstance(threshold, dict), "threshold must be an object")
    if "fraction" in threshold:
        _need(_is_num(threshold["fraction"]) and 0 < threshold["fraction"] <= 1,
              "threshold.fraction must be > 0 and <= 1")
    if "absolute" in threshold:
        _need(_is_num(threshold["absolute"]) and threshold["absolute"] > 0,
              "threshold.absolute must be > 0")
        _need(_is_int(threshold.get("divisor", 1)) and threshold.get("divisor", 1) >= 1,
              "threshold.divisor must be a positive integer")
    limits = snap.get("limits", {})
    _need(isinstance(limits, dict) and all(_is_int(v) and v >= 1 for v in limits.values()),
          "limits must map names to positive integers")
    if snap.get("window") is not None:
        _window_ok(snap["window"], "window")
        if snap["window"].get("previous") is not None:
            _window_ok(snap["window"]["previous"], "window.previous")
    scan = snap.get("scan", {})
    _need(isinstance(scan, dict), "scan must be an object")
    for src, info in scan.items():
        _need(isinstance(src, str) and isinstance(info, dict)
              and isinstance(info.get("ports", []), list)
              and isinstance(info.get("dsts", []), list)
              and all(_is_int(p) and 0 <= p <= 65535 for p in info.get("ports", []))
              and all(isinstance(d, str) for d in info.get("dsts", [])),
              "scan must map sources to {ports: [int], dsts: [str]}")
    distinct = snap.get("distinct")
    _need(isinstance(distinct, dict), "distinct must be an object")
    for name in ("missed",):
        m = snap.get(name, {})
        _need(isinstance(m, dict) and all(_is_int(v) and v >= 0 for v in m.values()),
              f"{name} must map names to non-negative integers")
    for name in ("covered", "missing"):
        _need(isinstance(snap.get(name, []), list)
              and all(isinstance(h, str) for h in snap.get(name, [])),
              f"{name} must be a list of host names")
    for name in ("generated_at", "oldest"):
        if name in snap:
            _need(_is_num(snap[name]), f"{name} must be a number")
    return snap


# ---------------------------------------------------------------- helpers
def _estimates(key_type: str, sketch: CountMinSketch, keys: list[str]) -> list[int]:
    values = [sketch_key_of(key_type, parse_key(key_type, k)) for k in keys]
    return sketch.query(np.array(values, dtype=np.uint64)).tolist()


def _thresholds(threshold: dict, total: int) -> tuple[float | None, float | None]:
    """(candidate threshold, heavy-hitter threshold) for a merged total."""
    if "fraction" in threshold:
        t = threshold["fraction"] * total
        return t, t
    if "absolute" in threshold:
        return threshold["absolute"] / threshold.get("divisor", 1), threshold["absolute"]
    return None, None


def _ranked(key_type: str, sketch: CountMinSketch, keys: set[str],
            threshold: float | None, limit: int) -> list[tuple[str, int]]:
    """Keys re-estimated, filtered by threshold, largest first (ties by key), at most limit."""
    ordered = sorted(keys)
    est = _estimates(key_type, sketch, ordered)
    pairs = [(k, int(v)) for k, v in zip(ordered, est, strict=True)
             if threshold is None or v >= threshold]
    pairs.sort(key=lambda p: (-p[1], parse_key(key_type, p[0])))
    return pairs[:limit]


def _merge_windows(snaps: list[dict], limit: int) -> dict | None:
    windows = [s["window"] for s in snaps if s.get("window") is not None]
    if not windows:
        return None
    mode = windows[0].get("mode", "tumbling")
    length = windows[0].get("length")
    parts = list(windows)
    if mode == "tumbling":
        parts += [w["previous"] for w in windows if w.get("previous") is not None]
    groups: dict[float, list[dict]] = {}
    earliest = min(p["start"] for p in parts)
    for w in parts:
        start = earliest if mode == "sliding" else w["start"]
        groups.setdefault(round(start, 6), []).append(w)
    starts = sorted(groups, reverse=True)

    def combine(group: list[dict], start: float) -> dict:
        counts: dict[str, int] = {}
        for w in group:
            for k, v in w["counts"].items():
                counts[k] = counts.get(k, 0) + v
        truncated = any(w.get("truncated") for w in group) or len(counts) > limit
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        distinct = len(counts)
        if truncated:
            distinct = max([distinct] + [w["distinct"] for w in group])
        return {"start": start, "counts": dict(ranked), "distinct": distinct,
                "truncated": truncated}

    out = {"length": length, "mode": mode, **combine(groups[starts[0]], starts[0]),
           "previous": None}
    if mode == "tumbling" and len(starts) > 1:
        out["previous"] = combine(groups[starts[1]], starts[1])
    return out


def _merge_scan(snaps: list[dict], max_sources: int, max_list: int) -> dict:
    ports: dict[str, set[int]] = {}
    dsts: dict[str, set[str]] = {}
    truncated: dict[str, bool] = {}
    for s in snaps:
        for src, info in s.get("scan", {}).items():
            ports.setdefault(src, set()).update(info.get("ports", []))
            dsts.setdefault(src, set()).update(info.get("dsts", []))
            truncated[src] = truncated.get(src, False) or bool(info.get("truncated"))
    ranked = sorted(ports, key=lambda src: (-len(ports[src]), parse_key("src", src)))
    out = {}
    for src in ranked[:max_sources]:
        p = sorted(ports[src])
        d = sorted(dsts[src], key=lambda x: parse_key("dst", x))
        out[src] = {"ports": p[:max_list], "dsts": d[:max_list],
                    "truncated": truncated[src] or len(p) > max_list or len(d) > max_list}
    return out


# ---------------------------------------------------------------- API
def merge_all(snaps: list[dict], checked: bool = False) -> dict[str, Any]:
    """Merge snapshots of the same counter from several agents (see module docstring).

    ``checked=True``: the caller already ran :func:`check_snapshot` on every
    snapshot (the overlay does on receipt) or built it itself (a counter's own
    snapshot, an earlier merge result), so it is not checked again; the merge
    still raises ``ValueError`` for incompatible snapshots.
    """
    if not isinstance(snaps, list) or not snaps:
        raise ValueError("snapshot: nothing to merge")
    if not checked:
        for s in snaps:
            check_snapshot(s)
    first = snaps[0]
    key_type, increment = first["key"], first["increment"]
    for s in snaps[1:]:
        if (s["key"], s["increment"]) != (key_type, increment):
            raise ValueError(f"snapshot: cannot merge {key_type}/{increment} with "
                             f"{s['key']}/{s['increment']}")
        if s.get("threshold", {}) != first.get("threshold", {}):
            raise ValueError(f"snapshot: cannot merge threshold {first.get('threshold', {})} "
                             f"with {s.get('threshold', {})}")
    sketch = CountMinSketch.from_wire(first["sketch"])
    for s in snaps[1:]:
        sketch = sketch.merge(CountMinSketch.from_wire(s["sketch"]))
    hll = None
    for s in snaps:
        d = s["distinct"]
        if "hll" in d:
            part = HyperLogLog.from_wire(d["hll"], d.get("precision"))
            hll = part if hll is None else hll.merge(part)
    given: dict[str, int] = {}
    for s in snaps:
        for name, value in s.get("limits", {}).items():
            given[name] = max(value, given.get(name, 0))
    limits = {**DEFAULT_LIMITS, **given}
    totals = {name: sum(s[name] for s in snaps) for name in ("packets", "bytes", "total")}
    threshold = first.get("threshold", {})
    cand_threshold, hh_threshold = _thresholds(threshold, totals["total"])
    keys: set[str] = set()
    for s in snaps:
        keys.update(s.get("candidates", {}))
    ranked = _ranked(key_type, sketch, keys, cand_threshold, limits["max_candidates"])
    if hh_threshold is None:
        heavy = dict(ranked[: limits["top_k"]])
    else:
        heavy = {k: v for k, v in ranked if v >= hh_threshold}
    missed: dict[str, int] = {}
    for s in snaps:
        for name, value in s.get("missed", {}).items():
            missed[name] = missed.get(name, 0) + value
    covered = sorted({h for s in snaps for h in s.get("covered", [])})
    missing = sorted({h for s in snaps for h in s.get("missing", [])} - set(covered))
    times = [s["generated_at"] for s in snaps if "generated_at" in s]
    oldest = [s.get("oldest", s.get("generated_at")) for s in snaps]
    oldest = [t for t in oldest if t is not None]
    return {
        "key": key_type, "increment": increment, **totals,
        "sketch": sketch.to_wire(),
        "candidates": dict(ranked),
        "heavy_hitters": heavy,
        "top_k": [[k, v] for k, v in ranked[: limits["top_k"]]],
        "threshold": threshold,
        "limits": limits,
        "window": _merge_windows(snaps, limits["max_window_keys"]),
        "scan": _merge_scan(snaps, limits["max_scan_sources"], limits["max_scan_list"]),
        "distinct": ({"estimate": hll.count(), "hll": hll.to_wire(), "precision": hll.precision}
                     if hll is not None else {"estimate": max(s["distinct"].get("estimate", 0)
                                                              for s in snaps)}),
        "missed": missed or {"packets": 0, "bytes": 0},
        "unparsed": sum(s.get("unparsed", 0) for s in snaps if _is_int(s.get("unparsed", 0))),
        "covered": covered, "missing": missing,
        "generated_at": max(times) if times else None,
        "oldest": min(oldest) if oldest else None,
    }


def merge(a: dict, b: dict) -> dict[str, Any]:
    """Merge two snapshots (``merge_all([a, b])``)."""
    return merge_all([a, b])


def estimate(snapshot: dict, key: str) -> int:
    """Sketch estimate of one key (string form) in a snapshot."""
    check_snapshot(snapshot)
    sketch = CountMinSketch.from_wire(snapshot["sketch"])
    return _estimates(snapshot["key"], sketch, [key])[0]


def heavy_hitters_of(snapshot: dict) -> dict[str, int]:
    """Heavy hitters of a snapshot, re-estimated against its own sketch and totals."""
    check_snapshot(snapshot)
    sketch = CountMinSketch.from_wire(snapshot["sketch"])
    limits = {**DEFAULT_LIMITS, **snapshot.get("limits", {})}
    threshold = snapshot.get("threshold", {})
    _, hh_threshold = _thresholds(threshold, snapshot["total"])
    ranked = _ranked(snapshot["key"], sketch, set(snapshot.get("candidates", {})),
                     hh_threshold, limits["max_candidates"])
    return dict(ranked if hh_threshold is not None else ranked[: limits["top_k"]])


def format_keys(key_type: str, values: list[int]) -> list[str]:
    """String forms of exact keys (convenience for callers building snapshots)."""
    return [format_key(key_type, v) for v in values]
