"""Exact merge of counter snapshots (the overlay's "merged results up").

Design
------
A snapshot (docs/design.md, built by ``host_agent.counters.countmin.Counter.snapshot``)
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
  just outside every host's top list can be missed). Each side also lists its
  own ``top_k`` largest keys whatever the threshold, and the merged ``top_k``
  is the k largest of the union (exact when every key is in some side's top
  list or over its threshold; otherwise the same best effort);
* windows are grouped by their start: windows with the same start add (hosts
  use epoch-aligned tumbling windows, so their windows line up), the newest
  group is the merged current window and the next one its ``previous``.
  Sliding windows add. Distinct keys of a merged window are exact while no
  part was truncated; otherwise the largest known count (a lower bound);
* HyperLogLog registers take the maximum (exact union);
* scan port and destination sets unite, bounded by ``max_scan_list`` per
  source and ``max_scan_sources`` sources, with a ``truncated`` flag;
* ``covered``/``missing`` unite, ``oldest`` is the minimum and
  ``generated_at`` the maximum;
* a flows task's ``flow_times`` (key -> [first, last] seen, from each flow
  cache) take the earliest first and the latest last, for the listed keys.

Snapshots come from the network: everything is validated, and a malformed or
incompatible snapshot raises ``ValueError`` with a message, never anything
else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from measure_model import interval
from measure_model.fields import MAX_COUNT, is_count, is_int, is_number
from measure_model.packet.keys import (
    KEY_TYPES,
    check_keys,
    parse_key,
    parsed_keys,
)
from measure_model.sketch import estimators
from measure_model.sketch.countmin import CountMinSketch
from measure_model.sketch.elastic import ElasticSketch
from measure_model.sketch.hll import HyperLogLog
from measure_model.task import DEFAULT_TOP_K, INCREMENTS
from measure_model.wire import elastic_snapshot, paths
from measure_model.wire.checks import check_provenance, need
from measure_model.wire.snapshot import Snapshot

MAX_CANDIDATES = 100_000
DEFAULT_LIMITS = {"top_k": DEFAULT_TOP_K, "max_candidates": 1000, "max_window_keys": 10000,
                  "max_scan_sources": 100, "max_scan_list": 1024}


# ---------------------------------------------------------------- validation
MAX_NUMBER = 1e15  # times (seconds since 1970), window lengths, thresholds
MAX_LIMIT = 10_000_000
SNAPSHOT_FIELDS = frozenset((
    "key", "increment", "packets", "bytes", "total", "sketch", "candidates", "heavy_hitters",
    "top_k", "threshold", "limits", "window", "scan", "distinct", "missed", "unparsed",
    "covered", "missing", "generated_at", "oldest", "monitor", "elastic", "spread",
    "interval", "flow_times"))
WINDOW_FIELDS = frozenset(("length", "mode", "start", "counts", "distinct", "truncated",
                           "previous"))


def _known(obj: dict, allowed: frozenset | set, where: str) -> None:
    unknown = sorted(map(str, set(obj) - allowed))
    if unknown:
        raise ValueError(f"snapshot: {where}unknown field {unknown[0]!r}")


def _is_num(v: Any) -> bool:
    """A finite number of sane size (see ``fields.is_number``)."""
    return is_number(v, -MAX_NUMBER, MAX_NUMBER)


def _keys_ok(key_type: str, keys: Any, name: str) -> None:
    try:
        check_keys(key_type, keys)
    except ValueError as exc:
        raise ValueError(f"snapshot: {name}: {exc}") from None


def _count_map(value: Any, name: str, key_type: str) -> dict[str, int]:
    need(isinstance(value, dict), f"{name} must be an object")
    need(len(value) <= MAX_CANDIDATES, f"{name} has more than {MAX_CANDIDATES} keys")
    counts = value.values()  # type() is int: no bool; min/max in C, not per value
    need(all(type(v) is int for v in counts) and (  # noqa: E721
        not counts or (min(counts) >= 0 and max(counts) < MAX_COUNT)),
        f"{name} must map keys to integers from 0 to 2**63-1")
    _keys_ok(key_type, value, name)
    return value


def _window_ok(w: Any, name: str, key_type: str, top: bool) -> None:
    need(isinstance(w, dict), f"{name} must be an object")
    allowed = WINDOW_FIELDS if top else WINDOW_FIELDS - {"length", "mode", "previous"}
    _known(w, allowed, f"{name}: ")
    need(_is_num(w.get("start")) and w["start"] >= 0, f"{name}.start must be a time")
    _count_map(w.get("counts"), f"{name}.counts", key_type)
    need(is_count(w.get("distinct")), f"{name}.distinct must be a non-negative integer")
    need(isinstance(w.get("truncated", False), bool), f"{name}.truncated must be a boolean")
    if top:
        need(w.get("mode", "tumbling") in ("tumbling", "sliding"),
              f"{name}.mode must be tumbling or sliding")
        length = w.get("length")
        need(length is None or (_is_num(length) and length > 0),
              f"{name}.length must be a positive number")
        if w.get("previous") is not None:
            _window_ok(w["previous"], f"{name}.previous", key_type, top=False)


def _scan_ok(scan: Any) -> None:
    need(isinstance(scan, dict) and len(scan) <= MAX_CANDIDATES,
          "scan must map sources to {ports: [int], dsts: [str], truncated: bool}")
    _keys_ok("src", scan, "scan")
    for src, info in scan.items():
        where = f"scan[{src!r}]"
        need(isinstance(info, dict), f"{where} must be an object")
        _known(info, {"ports", "dsts", "truncated"}, f"{where}: ")
        ports, dsts = info.get("ports"), info.get("dsts")
        need(isinstance(ports, list) and len(ports) <= 65536
              and all(is_int(p) and 0 <= p <= 65535 for p in ports),
              f"{where}.ports must be a list of port numbers")
        need(isinstance(dsts, list) and len(dsts) <= MAX_CANDIDATES,
              f"{where}.dsts must be a list of addresses")
        _keys_ok("dst", dsts, f"{where}.dsts")
        need(isinstance(info.get("truncated", False), bool),
              f"{where}.truncated must be a boolean")


def _distinct_ok(distinct: Any) -> None:
    need(isinstance(distinct, dict) and not set(distinct) - {"estimate", "hll", "precision"},
          "distinct must be an object with estimate, hll, precision")
    need(is_count(distinct.get("estimate", 0)),
          "distinct.estimate must be a non-negative integer")
    if "hll" in distinct:
        try:
            HyperLogLog.from_wire(distinct["hll"], distinct.get("precision"))
        except ValueError as exc:
            raise ValueError(f"snapshot: distinct: {exc}") from None


def check_snapshot(snap: Any) -> Snapshot:
    """Validate a whole snapshot (every field a merge or a reader uses, the sketch cells
    and HLL registers decoded); return it. ValueError naming the field if malformed."""
    need(isinstance(snap, dict), "must be an object")
    if paths.is_health(snap):  # path_health / tcp_health: measure_model.wire.paths
        return cast(Snapshot, paths.check_health_snapshot(snap))
    _known(snap, SNAPSHOT_FIELDS, "")
    key = snap.get("key")
    need(key in KEY_TYPES, f"key {key!r} is not one of {', '.join(KEY_TYPES)}")
    need(snap.get("increment") in INCREMENTS,
          f"increment {snap.get('increment')!r} is not one of pkt, bytes")
    for name in ("packets", "bytes", "total"):
        need(is_count(snap.get(name)), f"{name} must be an integer from 0 to 2**63-1")
    if snap.get("elastic") is not None:  # an elastic counter: measure_model.wire.elastic_snapshot
        need("sketch" not in snap, "has both sketch and elastic")
        try:
            elastic_snapshot.check(snap)
        except ValueError as exc:
            raise ValueError(f"snapshot: {exc}") from None
    else:
        need(isinstance(snap.get("sketch"), dict), "has no sketch; it cannot be merged")
        need(snap.get("spread") is None, "spread needs an elastic section")
        try:
            CountMinSketch.from_wire(snap["sketch"])
        except ValueError as exc:
            raise ValueError(f"snapshot: {exc}") from None
    _count_map(snap.get("candidates", {}), "candidates", key)
    _count_map(snap.get("heavy_hitters", {}), "heavy_hitters", key)
    top = snap.get("top_k", [])
    need(isinstance(top, list) and len(top) <= MAX_CANDIDATES and all(
        isinstance(e, list | tuple) and len(e) == 2 and is_count(e[1]) for e in top),
        "top_k must be a list of [key, count] pairs")
    _keys_ok(key, [e[0] for e in top], "top_k")
    threshold = snap.get("threshold", {})
    need(isinstance(threshold, dict) and not set(threshold) - {"fraction", "absolute",
                                                                 "divisor"},
          "threshold must be an object with fraction or absolute and divisor")
    if "fraction" in threshold:
        need(_is_num(threshold["fraction"]) and 0 < threshold["fraction"] <= 1,
              "threshold.fraction must be > 0 and <= 1")
    if "absolute" in threshold:
        need(_is_num(threshold["absolute"]) and threshold["absolute"] > 0,
              "threshold.absolute must be > 0")
        need(is_int(threshold.get("divisor", 1)) and 1 <= threshold.get("divisor", 1)
              <= MAX_LIMIT, "threshold.divisor must be a positive integer")
    limits = snap.get("limits", {})
    need(isinstance(limits, dict) and set(limits) <= set(DEFAULT_LIMITS) and all(
        is_int(v) and 1 <= v <= MAX_LIMIT for v in limits.values()),
        f"limits must map {', '.join(DEFAULT_LIMITS)} to integers from 1 to {MAX_LIMIT}")
    if snap.get("window") is not None:
        _window_ok(snap["window"], "window", key, top=True)
    _scan_ok(snap.get("scan", {}))
    _distinct_ok(snap.get("distinct"))
    missed = snap.get("missed", {})
    need(isinstance(missed, dict) and set(missed) <= {"packets", "bytes"}
          and all(is_count(v) for v in missed.values()),
          "missed must map packets and bytes to non-negative integers")
    need(is_count(snap.get("unparsed", 0)), "unparsed must be a non-negative integer")
    check_provenance(snap)
    if snap.get("interval") is not None:
        interval.check(snap["interval"], key)
    times = snap.get("flow_times", {})
    need(isinstance(times, dict) and len(times) <= MAX_CANDIDATES and all(
        isinstance(v, list) and len(v) == 2 and all(_is_num(t) and t >= 0 for t in v)
        and v[0] <= v[1] for v in times.values()),
        "flow_times must map keys to [first, last] times, first <= last")
    _keys_ok(key, list(times), "flow_times")
    return cast(Snapshot, snap)  # every field checked above


# ---------------------------------------------------------------- helpers
def _estimates(key_type: str, sketch: CountMinSketch, keys: list[str]) -> list[int]:
    return sketch.query(parsed_keys(key_type, keys)[1]).tolist()


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
    exact, hashed = parsed_keys(key_type, ordered)
    est = sketch.query(hashed).tolist()
    pairs = [(k, int(v), x) for k, v, x in zip(ordered, est, exact, strict=True)
             if threshold is None or v >= threshold]
    pairs.sort(key=lambda p: (-p[1], p[2]))
    return [(k, v) for k, v, _ in pairs[:limit]]


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


def _merge_sketches(snaps: list[dict], key_type: str, threshold: dict, total: int,
                    limits: dict) -> dict[str, Any]:
    """Count-min cells add; candidates are re-estimated against the merged sketch."""
    if any("elastic" in s for s in snaps):
        raise ValueError("snapshot: cannot merge a count-min counter with an elastic one")
    sketch = CountMinSketch.from_wire(snaps[0]["sketch"])
    for s in snaps[1:]:
        sketch = sketch.merge(CountMinSketch.from_wire(s["sketch"]))
    cand_threshold, hh_threshold = _thresholds(threshold, total)
    keys: set[str] = set()
    for s in snaps:
        keys.update(s.get("candidates", {}))
    # every part lists its own top_k beside its candidates, so the merged top_k ranks
    # them all again: the k largest whatever the heavy-hitter threshold
    ranked = _ranked(key_type, sketch, keys, None, limits["max_candidates"])
    top = limits["top_k"]
    if hh_threshold is None:
        heavy = dict(ranked[:top])
    else:
        heavy = {k: v for k, v in ranked if v >= hh_threshold}
    listed = ranked if cand_threshold is None else [
        kv for i, kv in enumerate(ranked) if i < top or kv[1] >= cand_threshold]
    return {"sketch": sketch.to_wire(), "candidates": dict(listed), "heavy_hitters": heavy,
            "top_k": [[k, v] for k, v in ranked[:top]]}


# ---------------------------------------------------------------- API
def merge_all(snaps: Sequence[Mapping[str, Any]], checked: bool = False) -> dict[str, Any]:
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
    if any(paths.is_health(s) for s in snaps):
        if not all(paths.is_health(s) for s in snaps):
            raise ValueError("snapshot: cannot merge a health snapshot with a counter's")
        return paths.merge_health(snaps)
    key_type, increment = first["key"], first["increment"]
    for s in snaps[1:]:
        if (s["key"], s["increment"]) != (key_type, increment):
            raise ValueError(f"snapshot: cannot merge {key_type}/{increment} with "
                             f"{s['key']}/{s['increment']}")
        if s.get("threshold", {}) != first.get("threshold", {}):
            raise ValueError(f"snapshot: cannot merge threshold {first.get('threshold', {})} "
                             f"with {s.get('threshold', {})}")
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
    if "elastic" in first:
        state = elastic_snapshot.merge(snaps, threshold, totals["total"], limits["top_k"])
    else:
        state = _merge_sketches(snaps, key_type, threshold, totals["total"], limits)
    missed: dict[str, int] = {}
    for s in snaps:
        for name, value in s.get("missed", {}).items():
            missed[name] = missed.get(name, 0) + value
    covered = sorted({h for s in snaps for h in s.get("covered", [])})
    missing = sorted({h for s in snaps for h in s.get("missing", [])} - set(covered))
    times = [s["generated_at"] for s in snaps if s.get("generated_at") is not None]
    oldest = [t for t in (s.get("oldest", s.get("generated_at")) for s in snaps)
              if t is not None]
    merged: dict[str, Any] = {
        "key": key_type, "increment": increment, **totals,
        **state,
        "threshold": threshold,
        "limits": limits,
        "window": _merge_windows(snaps, limits["max_window_keys"]),
        "scan": _merge_scan(snaps, limits["max_scan_sources"], limits["max_scan_list"]),
        "distinct": _merged_distinct(hll, state, snaps),
        "missed": missed or {"packets": 0, "bytes": 0},
        "unparsed": sum(s.get("unparsed", 0) for s in snaps if is_int(s.get("unparsed", 0))),
        "covered": covered, "missing": missing,
        "generated_at": max(times) if times else None,
        "oldest": min(oldest) if oldest else None,
    }
    section = interval.merge([s.get("interval") for s in snaps])
    if section is not None:
        merged["interval"] = section
    flow_times = _merge_flow_times(snaps, set(state.get("candidates", {}))
                                   | {kv[0] for kv in state.get("top_k", [])})
    if flow_times:
        merged["flow_times"] = flow_times
    return merged


def _merge_flow_times(snaps: Sequence[Mapping[str, Any]], listed: set[str]
                      ) -> dict[str, list[float]]:
    """A flows task's first and last time seen per listed key: the earliest first and
    the latest last over the parts (a flow seen by several agents or monitors)."""
    out: dict[str, list[float]] = {}
    for s in snaps:
        for key, (first, last) in (s.get("flow_times") or {}).items():
            if key not in listed:
                continue
            have = out.get(key)
            out[key] = [first, last] if have is None else [min(have[0], first),
                                                           max(have[1], last)]
    return out


def _merged_distinct(hll: HyperLogLog | None, state: dict[str, Any],
                     snaps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Distinct keys of the union: the merged HLL, or for an elastic counter the linear
    counting estimate of the merged state (never one part's count)."""
    if hll is not None:
        return {"estimate": hll.count(), "hll": hll.to_wire(), "precision": hll.precision}
    if state.get("elastic") is not None:
        card = estimators.cardinality(ElasticSketch.from_wire(state["elastic"]))
        return {"estimate": int(card["estimate"])}
    return {"estimate": max(s["distinct"].get("estimate", 0) for s in snaps)}


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
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

