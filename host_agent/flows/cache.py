"""The flow cache: NetFlow/IPFIX-style flow records built per batch with numpy.

Design
------
A flow is the packets of one ``five_tuple`` key seen by one task's capture
rule (so in one direction: the task's ``filter.interface``, INPUT =
ingress, OUTPUT = egress). The cache holds, per flow, the exact key, the
first and last time seen, packets, bytes and the OR of the TCP flags, in
parallel numpy arrays sorted by the key's 64-bit mix (``keys.sketch_keys_of``).

:meth:`FlowCache.update` takes one :class:`~measure_model.packet.keys.HeaderBatch`:

1. the batch is sorted by the 64-bit mix once; group boundaries give each
   flow's packets (run lengths), bytes (``add.reduceat``, exact integers) and
   flags (``bitwise_or.reduceat``). The exact keys are compared with their
   group's first key: packets whose key merely shares the mix (odds about
   2**-64 per pair) are processed again as a batch of their own, so grouping
   is exact;
2. groups are found in the cache with one ``searchsorted``; known flows are
   updated in place, new ones inserted with ``np.insert`` (a copy of the
   cache per batch, not per packet). A cache slot whose exact key differs
   from the group's (a mix collision) is exported and replaced;
3. flows whose flags now hold FIN or RST are exported (end of flow) and
   removed; so are the least recently seen flows beyond ``max_flows``
   (lack of resources, counted in ``evicted``): memory is bounded and no
   packet is ever dropped from the sums.

:meth:`FlowCache.expire` (called by the monitor about twice a second, off
the packet path) exports flows idle for ``idle_timeout`` and flows older
than ``active_timeout`` (a long flow is exported in parts; the next packet
starts a new record). :meth:`FlowCache.flush` exports everything (task
removed, monitor stopping). Every export is a column table in the layout of
``measure_model/wire/ipfix.py``. No Python code runs per packet; per batch the
cost is a sort of the batch and a few passes over the cache.

Times are the batch's time (the monitor flushes a batch at least every
20 ms), so first/last seen are exact to that resolution. FIN/RST end the
record at the end of the batch that carried them; packets of the same key
in later batches (the last ACK) start a new record. Counts of a sampled
task (``sample`` p < 1) are exported scaled by 1/p (rounded).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from measure_model.packet.keys import five_tuple_columns, format_key, key_ints, parsed_keys
from measure_model.wire import ipfix

KEY = "five_tuple"
FIN, RST = 0x01, 0x04
COLUMNS = ("family", "src", "dst", "proto", "sport", "dport", "packets", "octets",
           "tcp_flags", "start_ms", "end_ms", "direction", "end_reason")
DIRECTIONS = {"INPUT": 0, "OUTPUT": 1}
BYTES_PER_FLOW = 8 + 16 + 8 + 8 + 8 + 8 + 2   # mix, key words, first, last, packets, bytes, flags


def empty_records() -> dict[str, np.ndarray]:
    """A record table with no rows."""
    return {c: np.zeros(0, np.uint64) for c in COLUMNS}


def concat_records(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One table of the rows of ``parts`` (in order)."""
    parts = [p for p in parts if len(p["packets"])]
    if not parts:
        return empty_records()
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


class FlowCache:
    """Active flows of one task; see the module docstring."""

    def __init__(self, max_flows: int = 65536, active_timeout: float = 60.0,
                 idle_timeout: float = 15.0, direction: int = 0, sample: float = 1.0) -> None:
        self.max_flows, self.direction = max_flows, direction
        self.active_timeout, self.idle_timeout = active_timeout, idle_timeout
        self.scale = 1.0 / sample
        self.mix = np.zeros(0, np.uint64)
        self.keys = np.zeros((0, 2), np.uint64)
        self.first = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.packets = np.zeros(0, np.uint64)
        self.octets = np.zeros(0, np.uint64)
        self.flags = np.zeros(0, np.uint16)
        self.stats = {"packets": 0, "bytes": 0, "records": 0, "evicted": 0, "collisions": 0,
                      "ended": 0, "idle_timeouts": 0, "active_timeouts": 0, "forced": 0}

    def __len__(self) -> int:
        return int(self.mix.shape[0])

    @property
    def memory_bytes(self) -> int:
        """Bytes of the cache's arrays now (bounded by ``max_flows``)."""
        return len(self) * BYTES_PER_FLOW

    # ------------------------------------------------------------ packets
    def update(self, batch: Any, now: float) -> dict[str, np.ndarray]:
        """Add one batch; return the records it ended (FIN/RST, evictions, collisions)."""
        n = len(batch)
        if n == 0:
            return empty_records()
        weight = batch.weight if batch.weight is not None else np.ones(n, np.uint64)
        self.stats["packets"] += int(weight.sum(dtype=np.uint64))
        self.stats["bytes"] += int(batch.length.sum(dtype=np.int64))
        out: list[dict[str, np.ndarray]] = []
        self._update(batch.sketch_keys(KEY), batch.full_keys(KEY),
                     batch.length.astype(np.uint64), batch.tcp_flags.astype(np.uint16), now, out,
                     weight.astype(np.uint64))
        done = np.flatnonzero((self.flags & (FIN | RST)) != 0)
        if done.size:
            self.stats["ended"] += int(done.size)
            out.append(self._take(done, ipfix.END_OF_FLOW))
        over = len(self) - self.max_flows
        if over > 0:
            lru = np.argpartition(self.last, over - 1)[:over] if over < len(self) else \
                np.arange(len(self))
            self.stats["evicted"] += int(over)
            out.append(self._take(np.sort(lru), ipfix.END_LACK_OF_RESOURCES))
        return concat_records(out)

    def _update(self, mix: np.ndarray, full: np.ndarray, length: np.ndarray,
                flags: np.ndarray, now: float, out: list[dict[str, np.ndarray]],
                weight: np.ndarray) -> None:
        if not len(self) and self.keys.shape[1:] != full.shape[1:]:
            self.keys = np.zeros((0, *full.shape[1:]), np.uint64)
        order = np.argsort(mix, kind="stable")
        ms = mix[order]
        starts = np.flatnonzero(np.r_[True, ms[1:] != ms[:-1]])
        full_sorted = full[order]
        rep = full_sorted[starts]
        gid = np.cumsum(np.r_[True, ms[1:] != ms[:-1]]) - 1
        same = full_sorted == rep[gid]
        if same.ndim > 1:
            same = same.all(axis=1)
        if not same.all():  # a 64-bit mix shared by two keys in this batch: split it off
            rest = order[~same]
            self.stats["collisions"] += 1
            keep = order[same]
            self._update(mix[keep], full[keep], length[keep], flags[keep], now, out,
                         weight[keep])
            self._update(mix[rest], full[rest], length[rest], flags[rest], now, out,
                         weight[rest])
            return
        uniq = ms[starts]
        pk = np.add.reduceat(weight[order], starts)
        by = np.add.reduceat(length[order], starts)
        fl = np.bitwise_or.reduceat(flags[order], starts)
        pos = np.searchsorted(self.mix, uniq)
        found = pos < len(self)
        found[found] = self.mix[pos[found]] == uniq[found]
        hit = np.flatnonzero(found)
        if hit.size:
            slots = pos[hit]
            clash = (self.keys[slots] != rep[hit]).reshape(slots.size, -1).any(axis=1)
            if clash.any():  # same mix, different key: export the old flow, reuse its slot
                self.stats["collisions"] += int(clash.sum())
                cs = slots[clash]
                out.append(self._records(cs, ipfix.END_LACK_OF_RESOURCES))
                self.keys[cs] = rep[hit[clash]]
                self.first[cs] = now
                self.packets[cs] = 0
                self.octets[cs] = 0
                self.flags[cs] = 0
            self.packets[slots] += pk[hit]
            self.octets[slots] += by[hit]
            self.flags[slots] |= fl[hit]
            self.last[slots] = now
        new = np.flatnonzero(~found)
        if new.size:
            at = pos[new]
            self.mix = np.insert(self.mix, at, uniq[new])
            self.keys = np.insert(self.keys, at, rep[new], axis=0)
            self.first = np.insert(self.first, at, now)
            self.last = np.insert(self.last, at, now)
            self.packets = np.insert(self.packets, at, pk[new])
            self.octets = np.insert(self.octets, at, by[new])
            self.flags = np.insert(self.flags, at, fl[new])

    # ------------------------------------------------------------ export
    def _records(self, idx: np.ndarray, reason: int) -> dict[str, np.ndarray]:
        cols = five_tuple_columns(self.keys[idx])
        k = idx.shape[0]
        packets, octets = self.packets[idx], self.octets[idx]
        if self.scale != 1.0:
            packets = np.rint(packets * self.scale).astype(np.uint64)
            octets = np.rint(octets * self.scale).astype(np.uint64)
        cols.update(packets=packets, octets=octets, tcp_flags=self.flags[idx],
                    start_ms=np.rint(self.first[idx] * 1000).astype(np.uint64),
                    end_ms=np.rint(self.last[idx] * 1000).astype(np.uint64),
                    direction=np.full(k, self.direction, np.uint8),
                    end_reason=np.full(k, reason, np.uint8))
        self.stats["records"] += k
        return cols

    def _take(self, idx: np.ndarray, reason: int) -> dict[str, np.ndarray]:
        """Records of the flows at ``idx``, removed from the cache."""
        recs = self._records(idx, reason)
        keep = np.ones(len(self), bool)
        keep[idx] = False
        for name in ("mix", "keys", "first", "last", "packets", "octets", "flags"):
            setattr(self, name, getattr(self, name)[keep])
        return recs

    def expire(self, now: float) -> dict[str, np.ndarray]:
        """Records of flows idle for ``idle_timeout`` or older than ``active_timeout``."""
        if not len(self):
            return empty_records()
        idle = now - self.last >= self.idle_timeout
        active = ~idle & (now - self.first >= self.active_timeout)
        parts = []
        for mask, reason, name in ((idle, ipfix.END_IDLE, "idle_timeouts"),
                                   (active, ipfix.END_ACTIVE, "active_timeouts")):
            if mask.any():
                self.stats[name] += int(mask.sum())
                parts.append(self._records(np.flatnonzero(mask), reason))
        if parts:
            keep = ~(idle | active)
            for name in ("mix", "keys", "first", "last", "packets", "octets", "flags"):
                setattr(self, name, getattr(self, name)[keep])
        return concat_records(parts)

    def flush(self) -> dict[str, np.ndarray]:
        """Records of every flow (forced end), leaving the cache empty."""
        if not len(self):
            return empty_records()
        self.stats["forced"] += len(self)
        return self._take(np.arange(len(self)), ipfix.END_FORCED)

    # ------------------------------------------------------------ queries
    def top(self, n: int, by: str = "bytes") -> list[dict[str, Any]]:
        """The ``n`` active flows with the most bytes (or packets), largest first."""
        if not len(self):
            return []
        col = self.octets if by == "bytes" else self.packets
        idx = np.argsort(col, kind="stable")[::-1][:n]
        out = []
        for i, key in zip(idx.tolist(), key_ints(KEY, self.keys[idx]), strict=True):
            out.append({"flow": format_key(KEY, key),
                        "packets": round(int(self.packets[i]) * self.scale),
                        "bytes": round(int(self.octets[i]) * self.scale),
                        "tcp_flags": int(self.flags[i]), "first": float(self.first[i]),
                        "last": float(self.last[i])})
        return out

    def times(self, keys: list[str]) -> dict[str, list[float]]:
        """First and last time seen of those of ``keys`` (five_tuple strings) that are
        active flows here: ``{key: [first, last]}`` (found by their mix, then the exact
        key compared)."""
        if not keys or not len(self):
            return {}
        exact, mix = parsed_keys(KEY, keys)
        pos = np.searchsorted(self.mix, mix)
        found = pos < len(self)
        found[found] = self.mix[pos[found]] == mix[found]
        out = {}
        for i in np.flatnonzero(found).tolist():
            slot = int(pos[i])
            if key_ints(KEY, self.keys[slot:slot + 1])[0] == exact[i]:
                out[keys[i]] = [float(self.first[slot]), float(self.last[slot])]
        return out

    def describe(self) -> dict[str, Any]:
        """Counters for health and results: active flows, memory, evictions, exports."""
        return {"flows": len(self), "max_flows": self.max_flows,
                "memory_bytes": self.memory_bytes, **self.stats}
