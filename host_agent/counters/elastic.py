"""A counter whose whole state is one elastic sketch (+ a spread sketch) within ``memory``.

The engine of the elastic kinds (``flow_size``, ``heavy_changers``,
``entropy``, ``cardinality``, ``superspreaders``, ``ddos_victims``), and of
``heavy_hitters`` / ``counter`` tasks that give ``memory`` (their result
keeps its shape: ``heavy_hitters`` over the threshold and ``top_k`` read
from the heavy part, ``total``; ``window`` is ``null``): the
same interface as :class:`host_agent.counters.countmin.Counter` (``update``,
``snapshot``, ``estimate``, ``heavy_hitters``, ``top_k``, ``window``,
``scan``, ``memory_bytes``) so the monitor, agent and overlay treat both
alike. Per batch it aggregates the keys once (``aggregate.batch_counts``) and
makes one :meth:`ElasticSketch.update` with every packet in order (the state is the
per-packet state whatever the batch size); the task's filter decides the
address family of the heavy part (``family_of``); spread kinds add the batch's unique
(spreader, peer) pairs to a :class:`SpreadSketch` that gets a quarter of the
memory. There is no window, scan set, candidate list or HyperLogLog outside
the two structures: ``memory_bytes`` is their arrays' bytes and never more
than ``memory`` (``window`` is ``null`` in the snapshot; ``distinct`` is the
linear-counting estimate of the light part).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from measure_model.packet.keys import HeaderBatch, parse_key, sketch_key_of
from measure_model.sketch import estimators as elastic_est
from measure_model.sketch.elastic import ElasticSketch, key_words
from measure_model.sketch.spread import SpreadSketch
from measure_model.task import ELASTIC_KINDS, MEMORY_OPTIONAL_KINDS, PROTO_FAMILY, Task
from measure_model.wire import elastic_snapshot

SPREAD_SHARE = 0.25
SPREAD_SIDE = {"superspreaders": "src", "ddos_victims": "dst"}


def family_of(task: Task) -> int:
    """The address family a task's filter allows (4 or 6), 0 if both (two heavy tables)."""
    f = task.filter
    if f is None:
        return 0
    if f.proto in PROTO_FAMILY:
        return PROTO_FAMILY[f.proto]
    for addr in (f.src, f.dst):
        if addr is not None:
            return 6 if ":" in addr else 4
    return 0


class ElasticCounter:
    """Elastic state of one counter (module docstring), built from its parsed Task."""

    def __init__(self, task: Task, now: float) -> None:
        if task.kind not in ELASTIC_KINDS + MEMORY_OPTIONAL_KINDS or task.memory is None \
                or task.key is None:
            raise ValueError(f"kind {task.kind!r} without memory is not counted by an "
                             "elastic counter")
        self.task = task
        self.key = task.key
        self.increment = task.increment or "pkt"
        memory = task.memory
        self.side = SPREAD_SIDE.get(task.kind)
        seed = task.sketch.seed if task.sketch is not None else 1
        self.spread: SpreadSketch | None = None
        if self.side is not None and task.min_distinct is not None:
            share = int(memory * SPREAD_SHARE)
            # every source with a peer is a candidate: the table keeps the largest
            self.spread = SpreadSketch(share, task.min_distinct, divisor=task.min_distinct,
                                       seed=seed, words=key_words(self.side))
            memory -= share
        self.es = ElasticSketch(memory, self.key, self.increment, seed,
                                family=family_of(task))
        self.threshold = ({"fraction": task.threshold} if task.threshold is not None
                          else {"absolute": task.threshold_abs, "divisor": 1}
                          if task.threshold_abs is not None else {})
        self.top_k_n = task.top_k or 10
        self.packets = self.bytes = self.total = self.unparsed = 0
        self.created = float(now)

    def update(self, batch: HeaderBatch, now: float) -> None:
        """Count a parsed batch (``now`` is unused: the state is cumulative)."""
        self.unparsed += batch.dropped
        n = len(batch)
        if n == 0:
            return
        nbytes = int(batch.length.sum(dtype=np.int64))
        self.total += n if self.increment == "pkt" else nbytes
        self.packets += n
        self.bytes += nbytes
        weights = np.ones(n, np.uint64) if self.increment == "pkt" else batch.length
        self.es.update(batch.sketch_keys(self.key), batch.full_keys(self.key), weights)
        if self.spread is not None and self.side is not None:
            peer = "dst" if self.side == "src" else "src"
            self.spread.update(batch.sketch_keys(self.side), batch.full_keys(self.side),
                               batch.sketch_keys(peer))

    def estimate(self, key: str) -> int:
        value = sketch_key_of(self.key, parse_key(self.key, key))
        return int(self.es.query(np.array([value], np.uint64))[0])

    def _sections(self) -> dict[str, Any]:
        return elastic_snapshot.sections(self.es, self.spread, self.side, self.threshold,
                                         self.total, self.top_k_n)

    def heavy_hitters(self) -> dict[str, int]:
        return self._sections()["heavy_hitters"]

    def top_k(self) -> list[list[Any]]:
        return self._sections()["top_k"]

    def window(self, now: float) -> dict[str, Any]:
        """An elastic counter keeps no real-time window (the count-min counter does)."""
        return {}

    def scan(self, now: float) -> dict[str, Any]:
        """An elastic counter tracks no scans."""
        return {}

    def snapshot(self, now: float, include_sketch: bool = True,
                 host: str | None = None) -> dict[str, Any]:
        """JSON-ready state in the docs/design.md snapshot shape (elastic sections)."""
        card = elastic_est.cardinality(self.es)
        return {
            "key": self.key, "increment": self.increment,
            "packets": self.packets, "bytes": self.bytes, "total": self.total,
            **self._sections(),
            "threshold": self.threshold,
            "limits": {"top_k": self.top_k_n},
            "window": None, "scan": {},
            "distinct": {"estimate": int(card["estimate"])},
            "missed": {"packets": 0, "bytes": 0}, "unparsed": self.unparsed,
            "covered": [host] if host else [], "missing": [],
            "generated_at": float(now), "oldest": float(now),
        }

    @property
    def memory_bytes(self) -> int:
        """Every byte of the state: the elastic arrays plus the spread sketch's."""
        return self.es.memory_bytes + (self.spread.memory_bytes if self.spread else 0)
