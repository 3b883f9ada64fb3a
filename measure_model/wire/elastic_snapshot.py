"""Snapshot sections of an elastic counter: what it sends, how it is checked and merged.

An elastic counter's snapshot (docs/design.md) has the usual totals,
coverage and times but no ``sketch``: instead

* ``elastic``: :meth:`ElasticSketch.to_wire` (heavy entries + light cells).
  Merge: light cells add (exact), heavy entries unite per bucket (bounded;
  see :mod:`measure_model.sketch.elastic`);
* ``spread`` (superspreaders / ddos_victims): :meth:`SpreadSketch.to_wire`
  and which side spreads (``side``: ``src`` or ``dst``). Merge: bitmaps OR
  (exact), candidates unite;
* ``candidates`` is empty, ``heavy_hitters`` (only with a threshold) and
  ``top_k`` are read from the heavy entries of the (merged) state, so they
  are re-derived after a merge.

The answers (distribution, cardinality, entropy, changers, spreaders) are
computed from these sections by :mod:`measure_model.answers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from measure_model.packet.keys import format_key, key_ints
from measure_model.sketch.elastic import ElasticSketch
from measure_model.sketch.spread import SpreadSketch

SIDES = ("src", "dst")


def top_entries(es: ElasticSketch, threshold: float | None, limit: int
                ) -> tuple[list[int], list[int], np.ndarray]:
    """Heavy entries with estimate >= threshold, largest first (ties by key), at most
    ``limit``: their exact keys as ints, estimates and sketch keys. Only the entries
    at least as large as the ``limit``-th are turned into Python ints and sorted."""
    e = es.entries()
    est = e["count"] + e["light"]
    keep = est >= threshold if threshold is not None else np.ones(est.shape, bool)
    full, est, hkey = e["full"][keep], est[keep], e["hkey"][keep]
    if limit <= 0:
        return [], [], hkey[:0]
    if est.shape[0] > limit:
        cut = np.partition(est, est.shape[0] - limit)[est.shape[0] - limit]
        sel = est >= cut
        full, est, hkey = full[sel], est[sel], hkey[sel]
    ints = key_ints(es.key_type, full)
    order = sorted(range(len(ints)), key=lambda i: (-int(est[i]), ints[i]))[:limit]
    return ([ints[i] for i in order], [int(est[i]) for i in order],
            hkey[np.array(order, dtype=np.int64)])


def ranked(es: ElasticSketch, threshold: float | None, limit: int) -> list[tuple[str, int]]:
    """Heavy entries with estimate >= threshold, largest first (ties by key)."""
    ints, est, _ = top_entries(es, threshold, limit)
    return [(format_key(es.key_type, k), v) for k, v in zip(ints, est, strict=True)]


def sections(es: ElasticSketch, spread: SpreadSketch | None, side: str | None,
             threshold: dict, total: int, top_k: int) -> dict[str, Any]:
    """The snapshot fields an elastic counter (or a merge) fills."""
    if "fraction" in threshold:
        hh: float | None = threshold["fraction"] * total
    else:
        hh = threshold.get("absolute")
    top = ranked(es, None, top_k)
    out: dict[str, Any] = {
        "elastic": es.to_wire(), "candidates": {},
        "heavy_hitters": dict(ranked(es, hh, 1000)) if hh is not None else {},
        "top_k": [[k, v] for k, v in top]}
    if spread is not None:
        out["spread"] = {**spread.to_wire(), "side": side}
    return out


def spread_of(section: dict) -> tuple[SpreadSketch, str]:
    """The spread sketch and side of a ``spread`` section (ValueError if malformed)."""
    if not isinstance(section, dict) or section.get("side") not in SIDES:
        raise ValueError("spread.side must be src or dst")
    return SpreadSketch.from_wire({k: v for k, v in section.items() if k != "side"}), \
        section["side"]


def check(snap: dict) -> None:
    """Decode the elastic sections of a snapshot; ValueError naming the field."""
    es = ElasticSketch.from_wire(snap["elastic"])
    if (es.key_type, es.increment) != (snap.get("key"), snap.get("increment")):
        raise ValueError("elastic: key and increment must be the snapshot's")
    if snap.get("spread") is not None:
        spread_of(snap["spread"])


def merge(snaps: list[dict], threshold: dict, total: int, top_k: int) -> dict[str, Any]:
    """Merged sections of elastic snapshots (all must be elastic, same parameters)."""
    if not all("elastic" in s for s in snaps):
        raise ValueError("snapshot: cannot merge an elastic counter with a count-min one")
    es = ElasticSketch.from_wire(snaps[0]["elastic"])
    for s in snaps[1:]:
        es = es.merge(ElasticSketch.from_wire(s["elastic"]))
    spread, side = None, None
    for s in snaps:
        if s.get("spread") is None:
            continue
        part, part_side = spread_of(s["spread"])
        if side is not None and part_side != side:
            raise ValueError("snapshot: cannot merge spread sides src and dst")
        spread, side = (part if spread is None else spread.merge(part)), part_side
    return sections(es, spread, side, threshold, total, top_k)
