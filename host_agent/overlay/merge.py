"""Merging the parts of a subtree report, and the per-host summaries it carries.

A node's report for one interval merges its own snapshot with its
children's subtree snapshots (``report.merge_all``: cells add, totals add,
candidates re-checked against the merged sketch, HLL max). A part that
cannot be merged (a child with another sketch geometry, say) is left out
and named in the report's ``errors``, so one bad child does not lose the
rest of the tree (``merge_parts``). ``host_summary`` is the bounded
per-host digest each covered agent gets in ``per_host``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from measure_model import answers
from measure_model.wire.report import merge_all

log = logging.getLogger(__name__)

Merge = Callable[[list[dict]], "dict | None"]


def merge_snapshots(snaps: list[dict], checked: bool = False) -> dict | None:
    """``report.merge_all`` over non-empty snapshots (None when there are none)."""
    snaps = [s for s in snaps if s]
    if not snaps:
        return None
    return dict(merge_all(snaps, checked=checked))


def merge_checked_snapshots(snaps: list[dict]) -> dict | None:
    """``merge_snapshots`` of snapshots already checked (see ``report.merge_all``)."""
    return merge_snapshots(snaps, checked=True)


def merge_parts(merge: Merge, parts: list[tuple[str, dict, list[str]]]
                ) -> tuple[dict | None, dict[str, str]]:
    """Merge the snapshots of ``(from, snapshot, agents)`` parts with ``merge``;
    one that cannot merge is left out and named in the returned errors."""
    snaps = [snap for _, snap, _ in parts if snap]
    if not snaps:
        return None, {}
    try:
        return merge(snaps), {}
    except ValueError:
        pass
    merged: dict | None = None
    errors: dict[str, str] = {}
    for name, snap, _ in parts:
        if not snap:
            continue
        try:
            merged = merge([merged, snap] if merged is not None else [snap])
        except ValueError as exc:
            errors[name] = str(exc)
            log.warning("snapshot from %s left out of the merge: %s", name, exc)
    return merged, errors


def host_summary(snap: dict, now: float, top: int, kind: str | None = None) -> dict:
    """A bounded per-host summary of one agent's snapshot (``top`` of each list); for an
    elastic kind also its digest (``answer``: ``measure_model.answers.host_answer``)."""
    hh = sorted((snap.get("heavy_hitters") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    scan = snap.get("scan") or {}
    out = {"packets": snap.get("packets", 0), "bytes": snap.get("bytes", 0),
           "total": snap.get("total", 0), "heavy_hitters": dict(hh[:top]),
           "top_k": [list(x) for x in (snap.get("top_k") or [])[:top]],
           "distinct": (snap.get("distinct") or {}).get("estimate"),
           "scan": {src: len(v.get("ports", [])) for src, v in sorted(
               scan.items(), key=lambda kv: -len(kv[1].get("ports", [])))[:top]},
           "missed": snap.get("missed", {}),
           "generated_at": snap.get("generated_at", now)}
    answer = answers.host_answer(kind or "", snap, top)
    if answer:
        out["answer"] = answer
    return out
