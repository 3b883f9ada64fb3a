"""Real-time windows of a count-min counter: per-key counts, distinct keys, scan pairs.

Design
------
``tumbling``: windows ``[k * length, (k + 1) * length)`` aligned to the
epoch (so hosts' windows line up for merging); a query returns the current
window so far plus the last complete one (``previous``). ``sliding``: the
window is kept as 10 sub-buckets of ``length / 10``; a query covers the
current sub-bucket and the 9 before it, i.e. the last ``length`` seconds to
within one sub-bucket. A window keeps per-key counts (at most
``max_window_keys``, the largest kept, ``truncated`` set when keys were
dropped) and its number of distinct keys (exact unless truncated, then from
a per-bucket HyperLogLog). With ``scan`` on it also keeps the unique
(src, dport) and (src, dst) pairs, which answer "10.0.0.6 touched 85 ports
in the last window" in one call (:meth:`Windows.scan`).

Appends are lazy (a bucket holds a list of per-batch arrays and compacts
when they exceed four times its limit), so a window's arrays may hold up
to ``4 x max_window_keys`` keys between compactions;
:attr:`Windows.memory_bytes` counts the arrays actually held.

What a periodic report sees. Reports are taken just after multiples of the
report interval, which are tumbling-window boundaries too when the interval
is a multiple of the window length: the current window then holds a few
milliseconds. So every snapshot carries the last complete window as well:
``window.previous`` (its own per-key ``counts`` and ``distinct``, merged
across hosts by window ``start`` in :mod:`measure_model.wire.report`), and
``scan`` gives, per source, the larger of the current and the previous
window (see :meth:`Windows.scan`). A window that ended more than one window
length before the snapshot is not reported: with windows shorter than the
report interval, use a sliding window or a longer window to cover the
interval.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from host_agent.counters.aggregate import aggregate
from measure_model.packet.keys import (
    HeaderBatch,
    empty_keys,
    format_key,
    key_ints,
    pack_keys,
    probe_rows,
)
from measure_model.sketch.hll import HyperLogLog

SLIDING_BUCKETS = 10
WINDOW_HLL_PRECISION = 10


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
            keys, reps, counts, distinct = combine(self.keys, self.reps, self.counts, limit)
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


    @property
    def memory_bytes(self) -> int:
        """Bytes of the arrays this bucket holds (pending ones included) and its HLL."""
        arrays = self.keys + self.reps + self.counts + self.ports + self.dsts
        unique = {id(a): a for a in arrays}  # reps is the keys array for 64-bit keys
        return sum(a.nbytes for a in unique.values()) + self.hll.registers.nbytes


def combine(keys: list[np.ndarray], reps: list[np.ndarray], counts: list[np.ndarray],
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


class Windows:
    """The tumbling or sliding window of one counter (module docstring)."""

    def __init__(self, key: str, length: float, mode: str, max_window_keys: int, now: float,
                 scan: bool = False, max_scan_sources: int = 100,
                 max_scan_list: int = 1024, scan_horizon: float = 0.0) -> None:
        self.key, self.length, self.mode = key, length, mode
        self.max_window_keys, self.scan_on = max_window_keys, scan
        self.max_scan_sources, self.max_scan_list = max_scan_sources, max_scan_list
        self._step = length / (SLIDING_BUCKETS if mode == "sliding" else 1)
        self._buckets: deque[_Bucket] = deque([_Bucket(self._index(now), key)])
        self._previous: _Bucket | None = None
        # scan pairs live in their own sub-buckets (see scan()): half a window
        # for tumbling windows, the sliding sub-bucket for sliding ones
        self._scan_n = SLIDING_BUCKETS if mode == "sliding" else 2
        self._scan_step = length / self._scan_n
        self._scan_keep = self._scan_n + math.ceil(max(scan_horizon, length) / self._scan_step)
        self._scan_buckets: deque[_Bucket] = deque()
        self._now = now

    def _scan_roll(self, now: float) -> int:
        index = math.floor(now / self._scan_step)
        while self._scan_buckets and self._scan_buckets[0].index <= index - self._scan_keep:
            self._scan_buckets.popleft()
        return index

    def _index(self, now: float) -> int:
        return math.floor(now / self._step)

    def roll(self, now: float) -> None:
        """Move the window to ``now`` (a new bucket when a boundary passed)."""
        self._now = max(self._now, now)
        index = self._index(now)
        current = self._buckets[-1]
        if index <= current.index:
            return
        if self.mode == "tumbling":
            self._previous = current if current.index == index - 1 else _Bucket(index - 1,
                                                                                 self.key)
            self._buckets = deque([_Bucket(index, self.key)])
            return
        self._buckets.append(_Bucket(index, self.key))
        while self._buckets[0].index <= index - SLIDING_BUCKETS:
            self._buckets.popleft()

    def add(self, uniq: np.ndarray, reps: np.ndarray, counts: np.ndarray,
            batch: HeaderBatch | None = None) -> None:
        """Count a batch's unique keys (and, with scan on, its probes' pairs) now.

        Only probes make scan pairs (``probe_rows``: a TCP SYN without ACK, a
        UDP datagram that is not a service's reply); replies never do.
        """
        self._buckets[-1].add(uniq, reps, counts, self.max_window_keys)
        if self.scan_on and batch is not None:
            rows = probe_rows(batch)
            if rows.shape[0] == 0:
                return
            ports = _unique_rows(batch.full_keys("src_dport", rows))
            dsts = _unique_rows(batch.full_keys("src_dst", rows))
            index = self._scan_roll(self._now)
            if not self._scan_buckets or self._scan_buckets[-1].index < index:
                self._scan_buckets.append(_Bucket(index, self.key))
            self._scan_buckets[-1].add_pairs(ports, dsts, 10 * self.max_window_keys)

    @property
    def memory_bytes(self) -> int:
        """Bytes of every array the window holds now (keys, counts, pairs, HLLs)."""
        buckets = list(self._buckets) + ([self._previous] if self._previous else [])
        return sum(b.memory_bytes for b in buckets + list(self._scan_buckets))

    def _window_of(self, buckets: list[_Bucket], start: float) -> dict[str, Any]:
        limit = self.max_window_keys
        parts = [b.compact(limit) for b in buckets]
        truncated = any(b.truncated for b in buckets)
        keys, reps, counts, distinct = combine([p[0] for p in parts], [p[1] for p in parts],
                                                [p[2] for p in parts], limit)
        truncated = truncated or distinct > limit
        if truncated:
            hll = HyperLogLog(WINDOW_HLL_PRECISION)
            for b in buckets:
                hll.update_from(b.hll)
            distinct = max(hll.count(), distinct)
        order = np.argsort(-counts, kind="stable")
        ints = key_ints(self.key, reps[order])
        return {"start": start,
                "counts": {format_key(self.key, k): int(v)
                           for k, v in zip(ints, counts[order].tolist(), strict=True)},
                "distinct": distinct, "truncated": bool(truncated)}

    def window(self, now: float) -> dict[str, Any]:
        """Per-key counts and distinct keys of the current window (see module docstring)."""
        self.roll(now)
        if self.mode == "sliding":
            index = self._buckets[-1].index
            out = self._window_of(list(self._buckets),
                                  (index - SLIDING_BUCKETS + 1) * self._step)
            out.update(length=self.length, mode="sliding", previous=None)
            return out
        current = self._buckets[-1]
        out = self._window_of([current], current.index * self._step)
        out.update(length=self.length, mode="tumbling", previous=None)
        if self._previous is not None:
            out["previous"] = self._window_of([self._previous],
                                              self._previous.index * self._step)
        return {"length": out.pop("length"), "mode": out.pop("mode"), **out}

    def _scan_view(self, buckets: list[_Bucket]) -> _ScanView:
        """The unique (src, dport) and (src, dst) pairs of ``buckets``, indexed by source."""
        limit = 10 * self.max_window_keys
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
        """Per source: distinct dports and dsts in one window length (``{}`` if scan is off).

        The rule: a source's count is the largest of any span of one window
        length that ended within the last ``scan_horizon`` (two report
        intervals for a port_scan task) plus one window, the spans starting at
        every half window (tumbling) or sliding sub-bucket (sliding). So a scan
        that lasts at most half a window is counted whole even when it
        straddles a window boundary, two reports in a row see it, and a count
        never spans more than one window length (a source with 15 ports in
        each of two windows has 15, not 30). Ports and dsts are maximised
        separately; ties go to the older span.
        """
        self.roll(now)
        if not self.scan_on:
            return {}
        index = self._scan_roll(now)
        by_index = {b.index: b for b in self._scan_buckets}
        views = []
        for start in range(index - self._scan_keep + 1, index + 1):
            span = [by_index[i] for i in range(start, start + self._scan_n) if i in by_index]
            if span:
                views.append(self._scan_view(span))
        if not views:
            return {}
        srcs = set().union(*(v.ports_of.keys() | v.dsts_of.keys() for v in views))
        n_ports = {s: max(v.ports_of.get(s, (0, 0))[1] for v in views) for s in srcs}
        ranked = sorted(srcs, key=lambda s: (-n_ports[s], s))
        cap = self.max_scan_list
        out: dict[str, dict[str, Any]] = {}
        for src in ranked[: self.max_scan_sources]:
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

