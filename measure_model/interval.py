"""Per-interval figures: each agent's own state difference, merged up, never negative.

An agent's counter state is cumulative since the task was installed. The
question an operator asks is "what is happening now": how many packets and
bits per second, and which keys are heavy in the last interval. Taking the
difference of two *merged* cumulative states at the controller is wrong as
soon as the two states cover different agents (a late child makes the
difference negative, its return makes a spike). So the difference is taken
where the state is whole, on each agent, against its own previous snapshot:

* :func:`section` turns the agent's snapshot for interval end ``E`` and the
  :class:`Mark` kept from its previous one into the snapshot's ``interval``
  section ``{start, end, seconds, packets, bytes, total, keys}``. ``keys``
  maps at most ``MAX_KEYS`` keys (the counter's candidates, or an elastic
  counter's heavy entries) to ``[packets, bytes]`` gained in the interval;
  the unit the counter does not count (``increment``) is ``null``. Every
  figure is clamped at 0; a counter that restarted (totals fell, or it has
  counted since after the mark) starts a new interval from its restart.
  Count-min estimates never fall, so a key's difference is an upper bound
  of its interval count plus the collision error of both; an elastic key's
  is bounded the same way (``measure_model.sketch.elastic``).
* :func:`merge` adds the sections of the parts of a subtree report: totals
  and key counts add, ``start``/``end`` are the earliest and latest,
  ``seconds`` the median part's (the parts measure the same wall-clock
  interval, give or take when each agent read its counts; one agent whose
  read came late, and whose next one comes early, must not stretch or
  shrink the totals' rate). A key keeps the time its own counts took: its
  rate is the sum of its parts' rates (count / that part's seconds), and
  where the seconds this gives (count / rate) differ from the section's,
  the key's list carries them as a third item ``[packets, bytes,
  seconds]``. So the rate of a key seen by one agent is that agent's count
  over that agent's own interval, however late its read came (a loaded
  host reads 0.2 s late, then on time: 4% off a rate divided by the
  others' seconds). A key absent from a part's
  list counted below that part's candidate threshold there, so a merged key
  count is a lower bound of the network's (exact where every agent lists it).
* :func:`rate` is what a result carries: ``{seconds, packets, bytes, pps,
  bps}`` and per listed key the same figures; :func:`heavy` the keys heavy in
  the interval, judged by the task's threshold against the interval's own
  total (a fraction) or count (an absolute threshold: a count per interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from measure_model.fields import is_count, is_number
from measure_model.packet.keys import check_keys, format_key, parsed_keys
from measure_model.sketch.countmin import CountMinSketch
from measure_model.sketch.elastic import ElasticSketch
from measure_model.wire.elastic_snapshot import top_entries

MAX_KEYS = 100  # keys listed per interval section, largest interval counts first
FIELDS = frozenset(("start", "end", "seconds", "packets", "bytes", "total", "keys"))


@dataclass
class Mark:
    """What an agent keeps of its previous snapshot of one task to take differences."""

    at: float
    packets: int
    bytes: int
    total: int
    state: CountMinSketch | ElasticSketch | None

    def estimates(self, hkeys: np.ndarray) -> np.ndarray:
        if self.state is None or not hkeys.shape[0]:
            return np.zeros(hkeys.shape[0], np.int64)
        return np.asarray(self.state.query(hkeys), np.int64)


def _state(snap: dict) -> CountMinSketch | ElasticSketch | None:
    if snap.get("elastic") is not None:
        return ElasticSketch.from_wire(snap["elastic"])
    if snap.get("sketch") is not None:
        return CountMinSketch.from_wire(snap["sketch"])
    return None


def _listed(snap: dict, state: CountMinSketch | ElasticSketch | None
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The snapshot's listed keys: names, sketch keys and cumulative estimates now."""
    key_type = snap["key"]
    if isinstance(state, ElasticSketch):
        # the largest entries (bounded work) with the sketch keys they hold
        ints, _, hk = top_entries(state, None, 2 * MAX_KEYS)
        names = [format_key(key_type, k) for k in ints]
        return names, hk, np.asarray(state.query(hk) if names else [], np.int64)
    pairs = list((snap.get("candidates") or snap.get("heavy_hitters") or {}).items())
    pairs += [(k, v) for k, v in snap.get("top_k") or [] if k not in dict(pairs)]
    names = [k for k, _ in pairs]
    hk = parsed_keys(key_type, names)[1]
    if state is not None and names:
        est = np.asarray(state.query(hk), np.int64)
    else:
        est = np.array([v for _, v in pairs], np.int64)
    return names, hk, est


def section(prev: Mark | None, snap: dict, now: float) -> tuple[dict[str, Any], Mark]:
    """The ``interval`` section of an agent's own snapshot taken at ``now``, and the mark
    the next interval is taken against (module docstring)."""
    state = _state(snap)
    monitor = snap.get("monitor") or {}
    since = monitor.get("counting_since")
    end = float(snap.get("generated_at") or now)
    restarted = prev is not None and (
        snap["packets"] < prev.packets or snap["total"] < prev.total
        or (isinstance(since, int | float) and since > prev.at))
    if prev is None or restarted:
        start = float(since) if isinstance(since, int | float) else end
        prev = Mark(min(start, end), 0, 0, 0, None)
    names, hk, est = _listed(snap, state)
    gained = np.maximum(est - prev.estimates(hk), 0)
    order = np.argsort(-gained, kind="stable")[:MAX_KEYS]
    by_bytes = snap["increment"] == "bytes"
    keys = {names[i]: [None, int(gained[i])] if by_bytes else [int(gained[i]), None]
            for i in order.tolist() if gained[i] > 0}
    out = {"start": prev.at, "end": end, "seconds": round(max(0.0, end - prev.at), 6),
           "packets": max(0, snap["packets"] - prev.packets),
           "bytes": max(0, snap["bytes"] - prev.bytes),
           "total": max(0, snap["total"] - prev.total), "keys": keys}
    return out, Mark(end, snap["packets"], snap["bytes"], snap["total"], state)


def merge(sections: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sum of the parts' sections (module docstring); None when no part has one."""
    parts = [s for s in sections if s]
    if not parts:
        return None
    seconds = sorted(s["seconds"] for s in parts)[len(parts) // 2]
    keys: dict[str, list[int | None]] = {}
    per_second: dict[str, float] = {}
    for s in parts:
        for key, value in s["keys"].items():
            pk, by = value[0], value[1]
            have = keys.setdefault(key, [None, None])
            if pk is not None:
                have[0] = (have[0] or 0) + pk
            if by is not None:
                have[1] = (have[1] or 0) + by
            own = key_seconds(value, s["seconds"])
            if own > 0:
                per_second[key] = per_second.get(key, 0.0) + count_of(value) / own

    def size(kv: tuple[str, list[int | None]]) -> int:
        return max(v or 0 for v in kv[1])

    top = sorted(keys.items(), key=lambda kv: (-size(kv), kv[0]))[:MAX_KEYS]
    out: dict[str, list[Any]] = {}
    for key, value in top:
        r = per_second.get(key, 0.0)
        own = round(count_of(value) / r, 6) if r > 0 else seconds
        out[key] = value if abs(own - seconds) < 1e-6 else [*value, own]
    return {"start": min(s["start"] for s in parts), "end": max(s["end"] for s in parts),
            "seconds": seconds,
            "packets": sum(s["packets"] for s in parts),
            "bytes": sum(s["bytes"] for s in parts),
            "total": sum(s["total"] for s in parts), "keys": out}


def check(sec: Any, key_type: str) -> None:
    """ValueError naming the field unless ``sec`` is a well-formed interval section."""
    where = "snapshot: interval"
    if not isinstance(sec, dict):
        raise ValueError(f"{where} must be an object")
    unknown = sorted(set(sec) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    for name in ("start", "end", "seconds"):
        if not is_number(sec.get(name), 0, 1e13):
            raise ValueError(f"{where}.{name} must be a time or duration in seconds")
    for name in ("packets", "bytes", "total"):
        if not is_count(sec.get(name)) or sec[name] >= 2 ** 63:
            raise ValueError(f"{where}.{name} must be an integer from 0 to 2**63-1")
    keys = sec.get("keys")
    if not isinstance(keys, dict) or len(keys) > 10 * MAX_KEYS:
        raise ValueError(f"{where}.keys must map at most {10 * MAX_KEYS} keys")
    for value in keys.values():
        if not (isinstance(value, list) and len(value) in (2, 3) and all(
                v is None or (is_count(v) and v < 2 ** 63) for v in value[:2])
                and (len(value) == 2 or is_number(value[2], 0, 1e13))):
            raise ValueError(f"{where}.keys must map keys to [packets, bytes] (null: "
                             f"not counted) or [packets, bytes, seconds]")
    try:
        check_keys(key_type, keys)
    except ValueError as exc:
        raise ValueError(f"{where}.keys: {exc}") from None


def _per_second(count: int | None, seconds: float, scale: int = 1) -> float | None:
    if count is None:
        return None
    return round(count * scale / seconds, 3) if seconds > 0 else 0.0


def rate(sec: dict[str, Any] | None, listed: int = 10) -> dict[str, Any] | None:
    """A result's ``rate``: the interval's counts and their rates, per listed key too."""
    if not sec:
        return None
    s = float(sec["seconds"])
    out: dict[str, Any] = {"seconds": s, "packets": sec["packets"], "bytes": sec["bytes"],
                           "pps": _per_second(sec["packets"], s),
                           "bps": _per_second(sec["bytes"], s, 8), "start": sec["start"],
                           "end": sec["end"]}
    out["keys"] = {}
    for k, value in list(sec["keys"].items())[:listed]:
        pk, by, own = value[0], value[1], key_seconds(value, s)
        out["keys"][k] = {"packets": pk, "bytes": by, "seconds": own,
                          "pps": _per_second(pk, own), "bps": _per_second(by, own, 8)}
    return out


def count_of(value: list[Any]) -> int:
    """A key's interval count in the counter's own unit (the non-null one)."""
    return next((v for v in value[:2] if v is not None), 0)


def key_seconds(value: list[Any], seconds: float) -> float:
    """The seconds a key's counts took: its own (a merge's third item) or the
    section's."""
    return float(value[2]) if len(value) > 2 else float(seconds)


def heavy(sec: dict[str, Any] | None, threshold: dict, top_k: int) -> dict[str, int]:
    """Keys heavy in the interval (module docstring), with their interval counts."""
    if not sec:
        return {}
    counts = {k: count_of(v) for k, v in sec["keys"].items()}
    if "fraction" in threshold:
        limit = threshold["fraction"] * sec["total"]
    elif "absolute" in threshold:
        limit = threshold["absolute"]
    else:
        return dict(sorted(((k, v) for k, v in counts.items() if v > 0),
                           key=lambda kv: (-kv[1], kv[0]))[:top_k])
    return {k: v for k, v in counts.items() if v > 0 and v >= limit}
