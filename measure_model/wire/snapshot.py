"""The counter snapshot and the overlay report as types (docs/design.md).

These ``TypedDict``s are the JSON shapes that cross process and network
boundaries: a counter's ``snapshot`` (monitor -> agent -> overlay ->
controller) and the subtree ``Report`` (child -> parent -> controller).
They are checked on receipt by ``measure_model.wire.report.check_snapshot`` and
``measure_model.wire.overlay.validate_report``; these types say what code
on both sides may rely on after the check. Sections that only some
counters carry are ``NotRequired``; a new kind adds its section here (and
its check and merge rule in ``report.py``).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class SketchWire(TypedDict):
    """Count-min sketch cells (``cells``: base64 zlib int64 little-endian)."""

    width: int
    depth: int
    seed: int
    conservative: NotRequired[bool]
    cells: str


class Threshold(TypedDict, total=False):
    """``{"fraction": f}``, ``{"absolute": a, "divisor": n}`` or ``{}``."""

    fraction: float
    absolute: float
    divisor: int


class Limits(TypedDict):
    top_k: int
    max_candidates: int
    max_window_keys: int
    max_scan_sources: int
    max_scan_list: int


class WindowPart(TypedDict):
    """One window: per-key counts (largest kept) and its distinct keys."""

    start: float
    counts: dict[str, int]
    distinct: int
    truncated: bool


class WindowState(WindowPart):
    """The current window, and the last complete one (tumbling) or None."""

    length: float
    mode: str
    previous: WindowPart | None


class ScanEntry(TypedDict):
    ports: list[int]
    dsts: list[str]
    truncated: bool


class Distinct(TypedDict):
    estimate: int
    hll: str
    precision: int


class Missed(TypedDict):
    packets: int
    bytes: int


class Gap(TypedDict):
    start: float
    end: float
    queue: int
    unmeasured_packets_max: int | None


class MonitorState(TypedDict):
    restarts: int
    gaps: list[Gap]
    counting_since: float


class Snapshot(TypedDict):
    """A counter snapshot (``host_agent.counters.countmin.Counter.snapshot``, merged by
    ``measure_model.wire.report.merge``)."""

    key: str
    increment: str
    packets: int
    bytes: int
    total: int
    sketch: SketchWire
    candidates: NotRequired[dict[str, int]]
    heavy_hitters: dict[str, int]
    top_k: list[list[Any]]
    threshold: Threshold
    limits: NotRequired[Limits]
    window: WindowState | None             # null for elastic counters
    scan: dict[str, ScanEntry]
    distinct: Distinct
    missed: Missed | None
    unparsed: NotRequired[int]
    covered: list[str]
    missing: list[str]
    generated_at: float
    oldest: float
    monitor: NotRequired[MonitorState]     # the agent's addition
    seen: NotRequired[Missed]              # monitor -> agent only
    # elastic kinds (host_agent/counters/elastic.py) instead of sketch/candidates;
    # merge rules in measure_model/wire/elastic_snapshot.py
    elastic: NotRequired[dict[str, Any]]   # ElasticSketch.to_wire()
    spread: NotRequired[dict[str, Any]]    # SpreadSketch.to_wire() + "side"
    interval: NotRequired[dict[str, Any]]  # measure_model.interval.section, merged up
    flow_times: NotRequired[dict[str, list[float]]]  # flows task: key -> [first, last] seen


class HostSummary(TypedDict, total=False):
    """One agent's line in a report's ``per_host``."""

    packets: int
    bytes: int
    total: int
    heavy_hitters: dict[str, int]
    top_k: list[list[Any]]
    distinct: int | None
    scan: dict[str, int]
    missed: dict[str, int] | None
    generated_at: float
    answer: dict[str, Any]  # an elastic kind's digest (answers.host_answer)


Report = TypedDict("Report", {
    "task_id": str,
    "epoch": NotRequired[int],
    "from": NotRequired[str],
    "interval_end": float,
    "generated_at": NotRequired[float],
    "height": NotRequired[int],
    "kind": NotRequired[str | None],
    "scan_ports": NotRequired[int | None],
    "snapshot": Snapshot | None,
    "covered": list[str],
    "missing": list[str],
    "oldest": NotRequired[float | None],
    "per_host": NotRequired[dict[str, HostSummary]],
    "errors": NotRequired[dict[str, str]],
    # a missing child's subtree: the interval end of its last state, merged in
    "carried": NotRequired[dict[str, float]],
    # the root's bounded form (``overlay.bound_report``): the exact numbers of the lists
    "covered_count": NotRequired[int],
    "missing_count": NotRequired[int],
})
"""A subtree report (``POST /agent/v1/reports``, ``POST /measure/v1/reports``)."""
