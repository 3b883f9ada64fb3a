"""Counter state of one measurement counter, updated a packet batch at a time.

Design
------
The monitor parses a batch of copied headers (:class:`HeaderBatch`) and calls
:meth:`Counter.update` per counter. ``update`` aggregates the batch to its
unique keys first (``np.unique`` + ``np.bincount``), so everything after that
costs per *unique key* and is vectorised: the totals, the count-min sketch
(:mod:`measure_model.sketch`), a HyperLogLog of all keys ever seen, the
heavy-hitter candidates, the real-time window and the scan state. There is no
per-packet Python code. All time comes from the ``now`` argument.

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

The candidate threshold equals the heavy-hitter threshold for fractions: if
a key is heavy in a sum of counters, it is heavy in at least one of them
(pigeonhole), so merging candidate sets finds every globally heavy key (see
:mod:`measure_model.report`). For absolute thresholds the pigeonhole needs
``threshold_abs / n`` on each of ``n`` counters: ``candidate_divisor = n``.

Windows. ``tumbling``: windows ``[k * length, (k + 1) * length)`` aligned to
the epoch (so hosts' windows line up for merging); a query returns the
current window so far plus the last complete one (``previous``).
``sliding``: the window is kept as 10 sub-buckets of ``length / 10``; a
query covers the current sub-bucket and the 9 before it, i.e. the last
``length`` seconds to within one sub-bucket. A window keeps per-key counts
(at most ``max_window_keys``, the largest kept, ``truncated`` set when keys
were dropped) and its number of distinct keys (exact unless truncated, then
from a per-bucket HyperLogLog). With ``scan`` on it also keeps the unique
(src, dport) and (src, dst) pairs, which answer "10.0.0.6 touched 85 ports in
the last window" in one call (:meth:`scan`).

What a periodic report sees. Reports are taken just after multiples of the
report interval, which are tumbling-window boundaries too when the interval
is a multiple of the window length: the current window then holds a few
milliseconds. So every snapshot carries the last complete window as well:
``window.previous`` (its own per-key ``counts`` and ``distinct``, merged
across hosts by window ``start`` in :mod:`measure_model.report`), and
``scan`` gives, per source, the larger of the current and the previous
window (see :meth:`scan`). A window that ended more than one window length
before the snapshot is not reported: with windows shorter than the report
interval, use a sliding window or a longer window to cover the interval.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from measure_model.hll import HyperLogLog
from measure_model.keys import (
    HeaderBatch,
    empty_keys,
    format_key,
    key_ints,
    key_width,
    pack_keys,
    parse_key,
    sketch_key_of,
)
from measure_model.sketch import CountMinSketch
from measure_model.task import Task

MAX_CANDIDATES = 1000
SLIDING_BUCKETS = 10
WINDOW_HLL_PRECISION = 10


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
    top_k: int = 10
    window_length: float = 1.0
    window_mode: str = "tumbling"
    width: int = 16384
    depth: int = 4
    seed: int = 1
    conservative: bool = True
    max_candidates: int = MAX_CANDIDATES
    max_window_keys: int = 10000
    scan: bool = False
    hll_precision: int = 12
    candidate_divisor: int = 1
    max_scan_sources: int = 100
    max_scan_list: int = 1024

    @classmethod
    def from_task(cls, task: Task, candidate_divisor: int = 1) -> CounterSpec:
        """The counter of a measurement task.

        ``candidate_divisor`` = agents in the task's scope for absolute
        thresholds (candidates at ``threshold_abs / n``, see the module
        docstring); scan tracking is on for port_scan tasks.
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
                   candidate_divisor=max(1, int(candidate_divisor)))

    @property
    def cell_bytes(self) -> int:
        """Bytes of the sketch cells (what agents budget memory by)."""
        return self.width * self.depth * 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bucket:
    """One window bucket: per-key counts and scan pairs, compacted lazily."""

    def __init__(self, index: int, key: str) -> None:
        self.index = index
        self.key = key
        self.keys: list[np.ndarray] = []
        self.reps: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.pending = 0
        self.truncated = False
        self.hll = HyperLogLog(WINDOW_HLL_PRECISION)
        self.hll_done = 0                   # arrays of self.keys already in self.hll
        self.ports: list[np.ndarray] = []   # unique src_dport full keys (rows)
        self.dsts: list[np.ndarray] = []    # unique src_dst full keys (rows)
        self.pairs_pending = 0
        self.scan_truncated = False

    def add(self, keys: np.ndarray, reps: np.ndarray, counts: np.ndarray, limit: int) -> None:
        self.keys.append(keys)
        self.reps.append(reps)
        self.counts.append(counts)
        self.pending += keys.shape[0]
        if self.pending > 4 * limit:
            self.compact(limit)

    def compact(self, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum the pending arrays into one (largest ``limit`` kept); feed the bucket's HLL."""
        if len(self.keys) > self.hll_done:
            self.hll.add(np.concatenate(self.keys[self.hll_done:]))
            self.hll_done = len(self.keys)
        if len(self.keys) > 1 or (self.keys and self.keys[0].shape[0] > limit):
            keys, reps, counts, distinct = _combine(self.keys, self.reps, self.counts, limit)
            self.truncated = self.truncated or distinct > limit
            self.keys, self.reps, self.counts = [keys], [reps], [counts]
            self.pending = keys.shape[0]
            self.hll_done = 1
        if not self.keys:
            empty = np.zeros(0, np.uint64)
            reps = pack_keys(self.key, empty_keys(self.key))
            return empty, reps, np.zeros(0, np.int64)
        return self.keys[0], self.reps[0], self.counts[0]

    def add_pairs(self, ports: np.ndarray, dsts: np.ndarray, limit: int) -> None:
        self.ports.append(ports)
        self.dsts.append(dsts)
        self.pairs_pending += ports.shape[0] + dsts.shape[0]
        if self.pairs_pending > 4 * limit:
            self.compact_pairs(limit)

    def compact_pairs(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for name, key_type in (("ports", "src_dport"), ("dsts", "src_dst")):
            parts = getattr(self, name)
            arr = _unique_rows(np.concatenate(parts)) if parts else empty_keys(key_type)
            if arr.shape[0] > limit:
                arr = arr[:limit]
                self.scan_truncated = True
            setattr(self, name, [arr])
            out.append(arr)
        self.pairs_pending = out[0].shape[0] + out[1].shape[0]
        return out[0], out[1]


def aggregate(keys: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, the index of one occurrence of each, and their counts (or weight sums).

    One argsort and a few linear passes: cheaper than ``np.unique`` with
    ``return_inverse`` on the small arrays of a packet batch.
    """
    order = keys.argsort(kind="stable")
    ordered = keys[order]
    n = ordered.shape[0]
    flags = np.empty(n, dtype=bool)
    flags[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=flags[1:])
    starts = flags.nonzero()[0]
    if weights is None:
        counts = np.empty(starts.shape[0], dtype=np.int64)
        np.subtract(starts[1:], starts[:-1], out=counts[:-1])
        counts[-1:] = n - starts[-1:]
    else:
        counts = np.add.reduceat(weights[order].astype(np.int64), starts)
    return ordered[starts], order[starts], counts


def _combine(keys: list[np.ndarray], reps: list[np.ndarray], counts: list[np.ndarray],
             limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sum counts per key over several arrays, keeping the ``limit`` largest.

    Returns keys, representatives, sums and the number of distinct keys before the cut.
    """
    k = np.concatenate(keys)
    r = np.concatenate(reps)
    c = np.concatenate(counts)
    uniq, first, sums = aggregate(k, c)
    reps_u = r[first]
    distinct = int(uniq.shape[0])
    if distinct > limit:
        top = np.argsort(-sums, kind="stable")[:limit]
        top.sort()
        uniq, reps_u, sums = uniq[top], reps_u[top], sums[top]
    return uniq, reps_u, sums, distinct


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Unique rows of a full-key array, in lexicographic (so per-source) order."""
    return np.unique(rows, axis=0) if rows.shape[0] > 1 else rows


def _by_source(rows: np.ndarray) -> dict[int, tuple[int, int]]:
    """Per source address (the first two words) of sorted pair rows: (first row, count)."""
    k = rows.shape[0]
    if k == 0:
        return {}
    flags = np.ones(k, bool)
    flags[1:] = (rows[1:, :2] != rows[:-1, :2]).any(axis=1)
    starts = flags.nonzero()[0]
    counts = np.diff(np.append(starts, k))
    return dict(zip(key_ints("src", rows[starts, :2]),
                    zip(starts.tolist(), counts.tolist(), strict=True), strict=True))


@dataclass
class _ScanView:
    """Scan pairs of one window: sorted pair arrays and, per source, (first index, count)."""

    ports: np.ndarray
    dsts: np.ndarray
    ports_of: dict[int, tuple[int, int]]
    dsts_of: dict[int, tuple[int, int]]
    truncated: bool


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
        step = spec.window_length / (SLIDING_BUCKETS if spec.window_mode == "sliding" else 1)
        self._step = step
        self._buckets: deque[_Bucket] = deque([_Bucket(self._index(now), spec.key)])
        self._previous: _Bucket | None = None

    # ------------------------------------------------------------ helpers
    def _empty_reps(self) -> np.ndarray:
        return pack_keys(self.spec.key, empty_keys(self.spec.key))

    def _index(self, now: float) -> int:
        return math.floor(now / self._step)

    def _roll(self, now: float) -> None:
        index = self._index(now)
        current = self._buckets[-1]
        if index <= current.index:
            return
        if self.spec.window_mode == "tumbling":
            self._previous = current if current.index == index - 1 else _Bucket(index - 1,
                                                                                 self.spec.key)
            self._buckets = deque([_Bucket(index, self.spec.key)])
            return
        self._buckets.append(_Bucket(index, self.spec.key))
        while self._buckets[0].index <= index - SLIDING_BUCKETS:
            self._buckets.popleft()

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
        self._roll(now)
        self.last_update = float(now)
        self.unparsed += batch.dropped
        n = len(batch)
        if n == 0:
            return
        keys = batch.sketch_keys(self.spec.key)
        nbytes = int(batch.length.sum(dtype=np.int64))
        if self.spec.increment == "pkt":
            uniq, first, counts = aggregate(keys)
            self.total += n
        else:
            uniq, first, counts = aggregate(keys, batch.length)
            self.total += nbytes
        self.packets += n
        self.bytes += nbytes
        reps = pack_keys(self.spec.key, batch.full_keys(self.spec.key, first))
        est = self.sketch.update(uniq, counts)
        self._hll_pending.append(uniq)
        self._hll_pending_n += uniq.shape[0]
        if self._hll_pending_n > 16384:
            self._flush_hll()
        self._update_candidates(uniq, reps, est)
        self._buckets[-1].add(uniq, reps, counts, self.spec.max_window_keys)
        if self.spec.scan:
            ports = _unique_rows(batch.full_keys("src_dport"))
            dsts = _unique_rows(batch.full_keys("src_dst"))
            self._buckets[-1].add_pairs(ports, dsts, 10 * self.spec.max_window_keys)

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
            passing = est >= threshold
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
            keep = est >= threshold
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
        return dict(self._ranked(self.candidate_threshold()))

    def heavy_hitters(self) -> dict[str, int]:
        """Keys at or above the threshold with their estimates (top-k without a threshold)."""
        threshold = self.hh_threshold()
        if threshold is None:
            return dict(self._ranked(None)[: self.spec.top_k])
        return dict(self._ranked(threshold))

    def top_k(self) -> list[list[Any]]:
        return [[k, v] for k, v in self._ranked(self.candidate_threshold())[: self.spec.top_k]]

    def distinct(self) -> int:
        """Estimated number of distinct keys ever seen."""
        self._flush_hll()
        return self.hll.count()

    def _window_of(self, buckets: list[_Bucket], start: float) -> dict[str, Any]:
        limit = self.spec.max_window_keys
        parts = [b.compact(limit) for b in buckets]
        truncated = any(b.truncated for b in buckets)
        keys, reps, counts, distinct = _combine([p[0] for p in parts], [p[1] for p in parts],
                                                [p[2] for p in parts], limit)
        truncated = truncated or distinct > limit
        if truncated:
            hll = HyperLogLog(WINDOW_HLL_PRECISION)
            for b in buckets:
                hll.update_from(b.hll)
            distinct = max(hll.count(), distinct)
        order = np.argsort(-counts, kind="stable")
        ints = key_ints(self.spec.key, reps[order])
        return {"start": start,
                "counts": {format_key(self.spec.key, k): int(v)
                           for k, v in zip(ints, counts[order].tolist(), strict=True)},
                "distinct": distinct, "truncated": bool(truncated)}

    def window(self, now: float) -> dict[str, Any]:
        """Per-key counts and distinct keys of the current window (see module docstring)."""
        self._roll(now)
        spec = self.spec
        if spec.window_mode == "sliding":
            index = self._buckets[-1].index
            out = self._window_of(list(self._buckets),
                                  (index - SLIDING_BUCKETS + 1) * self._step)
            out.update(length=spec.window_length, mode="sliding", previous=None)
            return out
        current = self._buckets[-1]
        out = self._window_of([current], current.index * self._step)
        out.update(length=spec.window_length, mode="tumbling", previous=None)
        if self._previous is not None:
            out["previous"] = self._window_of([self._previous],
                                              self._previous.index * self._step)
        return {"length": out.pop("length"), "mode": out.pop("mode"), **out}

    def _scan_view(self, buckets: list[_Bucket]) -> _ScanView:
        """The unique (src, dport) and (src, dst) pairs of ``buckets``, indexed by source."""
        limit = 10 * self.spec.max_window_keys
        ports_parts, dsts_parts, truncated = [], [], False
        for b in buckets:
            p, d = b.compact_pairs(limit)
            ports_parts.append(p)
            dsts_parts.append(d)
            truncated = truncated or b.scan_truncated
        ports = _unique_rows(np.concatenate(ports_parts))
        dsts = _unique_rows(np.concatenate(dsts_parts))
        return _ScanView(ports, dsts, _by_source(ports), _by_source(dsts), truncated)

    def scan(self, now: float) -> dict[str, dict[str, Any]]:
        """Per source: distinct dports and dsts in one window (``{}`` if scan is off).

        Sliding: the last ``length`` seconds. Tumbling: per source, the larger of
        the current window so far and the last complete one (``previous``),
        separately for ports and for dsts; ties go to the complete window. A
        report taken just after a window boundary thus still sees the scan of
        the window that just ended, and a count never spans more than one
        window (a source with 15 ports in each of two windows has 15, not 30).
        """
        self._roll(now)
        if not self.spec.scan:
            return {}
        views = [self._scan_view(list(self._buckets))]
        if self.spec.window_mode == "tumbling" and self._previous is not None:
            views.insert(0, self._scan_view([self._previous]))  # first wins ties
        srcs = set().union(*(v.ports_of.keys() | v.dsts_of.keys() for v in views))
        n_ports = {s: max(v.ports_of.get(s, (0, 0))[1] for v in views) for s in srcs}
        ranked = sorted(srcs, key=lambda s: (-n_ports[s], s))
        cap = self.spec.max_scan_list
        out: dict[str, dict[str, Any]] = {}
        for src in ranked[: self.spec.max_scan_sources]:
            pv = max(views, key=lambda v: v.ports_of.get(src, (0, 0))[1])
            dv = max(views, key=lambda v: v.dsts_of.get(src, (0, 0))[1])
            i, n = pv.ports_of.get(src, (0, 0))
            j, m = dv.dsts_of.get(src, (0, 0))
            port_list = pv.ports[i:i + min(n, cap), 2].tolist()
            dst_list = [format_key("dst", x)
                        for x in key_ints("dst", dv.dsts[j:j + min(m, cap), 2:4])]
            out[format_key("src", src)] = {
                "ports": port_list, "dsts": dst_list,
                "truncated": bool(pv.truncated or dv.truncated or n > cap or m > cap)}
        return out

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
        ranked = self._ranked(self.candidate_threshold())
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
        """Rough upper bound of the memory this counter can hold."""
        per_window_key = 8 * (key_width(self.spec.key) + 2)
        buckets = SLIDING_BUCKETS + 1 if self.spec.window_mode == "sliding" else 2
        window = buckets * (5 * self.spec.max_window_keys * per_window_key + 1024)
        scan = buckets * 50 * self.spec.max_window_keys * 8 if self.spec.scan else 0
        return (self.sketch.memory_bytes + self.hll.m
                + self.spec.max_candidates * 2 * per_window_key + window + scan)
