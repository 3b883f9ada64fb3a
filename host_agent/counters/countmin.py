"""Counter state of one count-min measurement counter, updated a packet batch at a time.

Design
------
The monitor parses a batch of copied headers (:class:`HeaderBatch`) and calls
:meth:`Counter.update` per counter. ``update`` aggregates the batch to its
unique keys first (:func:`host_agent.counters.aggregate.batch_counts`), so everything
after that costs per *unique key* and is vectorised: the totals, the
count-min sketch (:mod:`measure_model.sketch.countmin`), a HyperLogLog of all keys
ever seen, the heavy-hitter candidates and the real-time window with its
scan pairs (:mod:`host_agent.counters.windows`). There is no per-packet Python code.
All time comes from the ``now`` argument.

Heavy hitters. A key is heavy when its estimate is at least the threshold:
``fraction * total`` or an absolute count. After each batch, every key of the
batch whose fresh estimate passes the *candidate threshold* joins the
candidates; then all candidates are re-estimated against the sketch and those
below the threshold are dropped, so a key that was heavy when the total was
small does not linger (no stale entries). The set is bounded by
``max_candidates`` (the smallest estimates are evicted). No false negatives:
a key whose true count reaches the threshold had, at its last update, an
estimate at least that large against a threshold no higher than today's, and
estimates never fall. Queries (:meth:`heavy_hitters`, :meth:`top_k`,
:meth:`snapshot`) always re-estimate. Without any threshold the candidates
are the top ``max_candidates`` keys by estimate.

Top-k. ``top_k`` lists the k largest estimates whatever the threshold, so
the candidates also keep the ``top_k`` largest keys (the count-min + heap
scheme): pruning keeps them beside the keys over the threshold and records
the k-th largest estimate as the *floor*; a batch key joins when its fresh
estimate reaches the threshold or the floor (estimates never fall, so the
floor only understates today's k-th largest). Exact where the sketch's
estimates are; otherwise a key can miss the list by at most the collision
error of the keys it is compared with.

The candidate threshold equals the heavy-hitter threshold for fractions: if
a key is heavy in a sum of counters, it is heavy in at least one of them
(pigeonhole), so merging candidate sets finds every globally heavy key (see
:mod:`measure_model.wire.report`). For absolute thresholds the pigeonhole needs
``threshold_abs / n`` on each of ``n`` counters: ``candidate_divisor = n``.

Memory. The task's ``sketch`` sizes only the cells; the candidates, the
all-time HyperLogLog and the window's keys and scan pairs come on top and
grow with the traffic (up to ``max_window_keys`` keys per window bucket,
4x that between compactions). :attr:`Counter.memory_bytes` counts all of it
as held now, so it is honest but not bounded by a budget. A task that needs
a hard budget gives ``memory`` and gets :mod:`host_agent.counters.elastic`
instead (heavy_hitters and counter tasks keep their result shape there;
port_scan keeps this engine: its answer is per-window scan sets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from host_agent.counters.aggregate import batch_counts
from host_agent.counters.windows import Windows
from measure_model.packet.keys import (
    HeaderBatch,
    empty_keys,
    format_key,
    key_ints,
    pack_keys,
    parse_key,
    sketch_key_of,
)
from measure_model.sketch.countmin import CountMinSketch
from measure_model.sketch.hll import HyperLogLog
from measure_model.task import (
    DEFAULT_DEPTH,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    DEFAULT_WIDTH,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_MODE,
    SketchSpec,
    Task,
)
from measure_model.wire.report import DEFAULT_LIMITS

MAX_CANDIDATES: int = DEFAULT_LIMITS["max_candidates"]


@dataclass
class CounterSpec:
    """What a counter counts and how: the engine's parameters.

    Built from a parsed task with :meth:`from_task` (the task was validated
    by ``measure_model.task``; nothing here checks it again). The
    engine-only parameters (candidate set and window sizes, HLL precision,
    scan bounds) are derived here; benchmarks and unit tests may set them
    directly.
    """

    key: str = "src"
    increment: str = "pkt"
    threshold: float | None = None       # fraction of the total, 0 < x <= 1
    threshold_abs: float | None = None   # absolute count (exclusive with threshold)
    top_k: int = DEFAULT_TOP_K
    window_length: float = DEFAULT_WINDOW
    window_mode: str = DEFAULT_WINDOW_MODE
    width: int = DEFAULT_WIDTH
    depth: int = DEFAULT_DEPTH
    seed: int = DEFAULT_SEED
    conservative: bool = True
    max_candidates: int = MAX_CANDIDATES
    max_window_keys: int = DEFAULT_LIMITS["max_window_keys"]
    scan: bool = False
    hll_precision: int = 12
    candidate_divisor: int = 1
    max_scan_sources: int = DEFAULT_LIMITS["max_scan_sources"]
    max_scan_list: int = DEFAULT_LIMITS["max_scan_list"]
    scan_horizon: float = 0.0  # seconds a scan stays listed after its window (2 intervals)

    @classmethod
    def from_task(cls, task: Task, candidate_divisor: int = 1) -> CounterSpec:
        """The counter of a measurement task.

        ``candidate_divisor`` = agents in the task's scope for absolute
        thresholds (candidates at ``threshold_abs / n``, see the module
        docstring); scan tracking is on for port_scan tasks, and a scan stays listed
        for two report intervals: every scan is then in at least two consecutive
        reports, so one report that comes late or without this host cannot hide it.
        """
        key, increment, top_k, window, sketch = (task.key, task.increment, task.top_k,
                                                 task.window, task.sketch)
        if not task.measures or key is None or increment is None or top_k is None \
                or window is None or sketch is None:  # the table fills these for every kind
            raise ValueError(f"kind {task.kind} is not counted by agents")
        return cls(key=key, increment=increment, threshold=task.threshold,
                   threshold_abs=task.threshold_abs, top_k=top_k,
                   window_length=window.length, window_mode=window.mode,
                   width=sketch.width, depth=sketch.depth, seed=sketch.seed,
                   max_candidates=max(MAX_CANDIDATES, top_k),
                   scan=task.kind == "port_scan",
                   scan_horizon=2 * float(task.report_interval or 0.0),
                   candidate_divisor=max(1, int(candidate_divisor)))

    @property
    def cell_bytes(self) -> int:
        """Bytes of the sketch cells (what agents budget memory by)."""
        return SketchSpec(self.width, self.depth, self.seed).cell_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



class Counter:
    """Sketch, heavy hitters, top-k, window and scan state of one counter."""

    def __init__(self, spec: CounterSpec, now: float) -> None:
        self.spec = spec
        self.created = float(now)
        self.sketch = CountMinSketch(spec.width, spec.depth, spec.seed, spec.conservative)
        self.hll = HyperLogLog(spec.hll_precision)
        self.packets = 0
        self.bytes = 0
        self.total = 0
        self.unparsed = 0
        self.last_update = float(now)
        self._hll_pending: list[np.ndarray] = []
        self._hll_pending_n = 0
        self._cand_keys = np.zeros(0, np.uint64)   # sorted
        self._cand_reps = self._empty_reps()
        self._pruned_at = 0.0
        self._floor = 0.0  # k-th largest candidate estimate at the last pruning
        self.windows = Windows(spec.key, spec.window_length, spec.window_mode,
                               spec.max_window_keys, now, spec.scan, spec.max_scan_sources,
                               spec.max_scan_list, spec.scan_horizon)

    # ------------------------------------------------------------ helpers
    def _empty_reps(self) -> np.ndarray:
        return pack_keys(self.spec.key, empty_keys(self.spec.key))

    def hh_threshold(self) -> float | None:
        if self.spec.threshold is not None:
            return self.spec.threshold * self.total
        return self.spec.threshold_abs

    def candidate_threshold(self) -> float | None:
        if self.spec.threshold is not None:
            return self.spec.threshold * self.total
        if self.spec.threshold_abs is not None:
            return self.spec.threshold_abs / self.spec.candidate_divisor
        return None

    # ------------------------------------------------------------ update
    def update(self, batch: HeaderBatch, now: float) -> None:
        """Count a parsed batch observed at time ``now``."""
        self.windows.roll(now)
        self.last_update = float(now)
        self.unparsed += batch.dropped
        if len(batch) == 0:
            return
        uniq, first, counts, added, nbytes = batch_counts(batch, self.spec.key,
                                                          self.spec.increment)
        self.total += added
        self.packets += batch.packets
        self.bytes += nbytes
        reps = pack_keys(self.spec.key, batch.full_keys(self.spec.key, first))
        est = self.sketch.update(uniq, counts)
        self._hll_pending.append(uniq)
        self._hll_pending_n += uniq.shape[0]
        if self._hll_pending_n > 16384:
            self._flush_hll()
        self._update_candidates(uniq, reps, est)
        self.windows.add(uniq, reps, counts, batch if self.spec.scan else None)

    def _flush_hll(self) -> None:
        if self._hll_pending:
            self.hll.add(np.concatenate(self._hll_pending))
            self._hll_pending, self._hll_pending_n = [], 0

    def _update_candidates(self, uniq: np.ndarray, reps: np.ndarray, est: np.ndarray) -> None:
        """Add the batch's keys that pass the candidate threshold; prune when due.

        ``est`` bounds each key's count from above (see ``CountMinSketch.update``),
        so no key that reached the threshold is missed. Pruning re-estimates every
        candidate; it runs when the set outgrows ``max_candidates`` or the threshold
        has risen 25% since the last pruning (queries re-estimate anyway).
        """
        threshold = self.candidate_threshold()
        if threshold is not None:
            passing = est >= min(threshold, self._floor)
            if not passing.all():
                uniq, reps = uniq[passing], reps[passing]
        cand = self._cand_keys
        if uniq.shape[0]:
            if cand.shape[0]:
                pos = np.minimum(np.searchsorted(cand, uniq), cand.shape[0] - 1)
                fresh = cand[pos] != uniq
                uniq, reps = uniq[fresh], reps[fresh]
            if uniq.shape[0]:
                keys = np.concatenate([cand, uniq])
                order = np.argsort(keys, kind="stable")
                self._cand_keys = keys[order]
                self._cand_reps = np.concatenate([self._cand_reps, reps])[order]
        limit = self.spec.max_candidates
        size = self._cand_keys.shape[0]
        if threshold is None:
            if size > limit + limit // 2:
                self._prune(None)
        elif size > limit or (size and threshold >= 1.25 * self._pruned_at):
            self._prune(threshold)

    def _prune(self, threshold: float | None) -> None:
        keys, reps = self._cand_keys, self._cand_reps
        est = self.sketch.query(keys)
        if threshold is not None:
            k = self.spec.top_k
            self._floor = float(-np.partition(-est, k - 1)[k - 1]) if est.shape[0] > k else 0.0
            keep = (est >= threshold) | (est >= self._floor)
            keys, reps, est = keys[keep], reps[keep], est[keep]
            self._pruned_at = threshold
        limit = self.spec.max_candidates
        if keys.shape[0] > limit:
            top = np.argpartition(-est, limit - 1)[:limit]
            top.sort()
            keys, reps = keys[top], reps[top]
        self._cand_keys, self._cand_reps = keys, reps

    # ------------------------------------------------------------ queries
    def estimate(self, key: str) -> int:
        """Sketch estimate for one key in its string form (ValueError if malformed)."""
        value = parse_key(self.spec.key, key)
        return self.sketch.query_one(sketch_key_of(self.spec.key, value))

    def _ranked(self, threshold: float | None) -> list[tuple[str, int]]:
        """Candidates with fresh estimates >= threshold, largest first (ties by key)."""
        est = self.sketch.query(self._cand_keys)
        keep = est >= threshold if threshold is not None else np.ones(est.shape, bool)
        ints = key_ints(self.spec.key, self._cand_reps[keep])
        pairs = sorted(zip(ints, est[keep].tolist(), strict=True), key=lambda p: (-p[1], p[0]))
        return [(format_key(self.spec.key, k), int(v))
                for k, v in pairs[: self.spec.max_candidates]]

    def candidates(self) -> dict[str, int]:
        """Keys at or above the candidate threshold (all tracked keys without one)."""
        return dict(self._ranked(self.candidate_threshold()))

    def _listed(self) -> list[tuple[str, int]]:
        """What a snapshot lists and a merge re-ranks: the candidates over the threshold
        and the ``top_k`` largest keys, largest first."""
        ranked = self._ranked(None)
        threshold = self.candidate_threshold()
        if threshold is None:
            return ranked
        return [kv for i, kv in enumerate(ranked) if i < self.spec.top_k or kv[1] >= threshold]

    def heavy_hitters(self) -> dict[str, int]:
        """Keys at or above the threshold with their estimates (top-k without a threshold)."""
        threshold = self.hh_threshold()
        if threshold is None:
            return dict(self._ranked(None)[: self.spec.top_k])
        return dict(self._ranked(threshold))

    def top_k(self) -> list[list[Any]]:
        """The ``top_k`` largest keys, whatever the heavy-hitter threshold."""
        return [[k, v] for k, v in self._ranked(None)[: self.spec.top_k]]

    def distinct(self) -> int:
        """Estimated number of distinct keys ever seen."""
        self._flush_hll()
        return self.hll.count()

    def window(self, now: float) -> dict[str, Any]:
        """Per-key counts and distinct keys of the current window (see ``counters.windows``)."""
        return self.windows.window(now)

    def scan(self, now: float) -> dict[str, dict[str, Any]]:
        """Per source: distinct dports and dsts in one window (``{}`` if scan is off)."""
        return self.windows.scan(now)

    def threshold_dict(self) -> dict[str, Any]:
        if self.spec.threshold is not None:
            return {"fraction": self.spec.threshold}
        if self.spec.threshold_abs is not None:
            return {"absolute": self.spec.threshold_abs, "divisor": self.spec.candidate_divisor}
        return {}

    def snapshot(self, now: float, include_sketch: bool = True,
                 host: str | None = None) -> dict[str, Any]:
        """JSON-ready state in the docs/design.md snapshot shape."""
        spec = self.spec
        ranked = self._listed()
        hh_threshold = self.hh_threshold()
        if hh_threshold is None:
            heavy = dict(ranked[: spec.top_k])
        else:
            heavy = {k: v for k, v in ranked if v >= hh_threshold}
        snap: dict[str, Any] = {
            "key": spec.key, "increment": spec.increment,
            "packets": self.packets, "bytes": self.bytes, "total": self.total,
        }
        if include_sketch:
            snap["sketch"] = self.sketch.to_wire()
        snap.update({
            "candidates": dict(ranked),
            "heavy_hitters": heavy,
            "top_k": [[k, v] for k, v in ranked[: spec.top_k]],
            "threshold": self.threshold_dict(),
            "limits": {"top_k": spec.top_k, "max_candidates": spec.max_candidates,
                       "max_window_keys": spec.max_window_keys,
                       "max_scan_sources": spec.max_scan_sources,
                       "max_scan_list": spec.max_scan_list},
            "window": self.window(now),
            "scan": self.scan(now),
            "distinct": {"estimate": self.distinct(), "hll": self.hll.to_wire(),
                         "precision": self.hll.precision},
            "missed": {"packets": 0, "bytes": 0},
            "unparsed": self.unparsed,
            "covered": [host] if host else [], "missing": [],
            "generated_at": float(now), "oldest": float(now),
        })
        return snap

    @property
    def memory_bytes(self) -> int:
        """Bytes of every array this counter holds now: sketch cells, HyperLogLog (and the
        keys waiting for it), candidates, window keys and scan pairs (module docstring)."""
        pending = sum(a.nbytes for a in self._hll_pending)
        return (self.sketch.memory_bytes + self.hll.registers.nbytes + pending
                + self._cand_keys.nbytes + self._cand_reps.nbytes
                + self.windows.memory_bytes)
