"""A fixed set of flows of known sizes, counted by a real elastic counter.

``FLOWS`` are (src, dst, sport, dport, packets) rows whose sources and ports
span several flows; ``flows_batch`` turns them into one shuffled
``HeaderBatch`` and ``elastic_counter`` counts it with the counter a
``flow_size`` task of ``key`` gets (tests of partial keys and their page).
"""

from __future__ import annotations

import numpy as np

from host_agent.counters.elastic import ElasticCounter
from host_agent.monitor.core import default_counter_factory
from measure_model.packet.keys import HeaderBatch
from measure_model.task import parse_task

# (src, dst, sport, dport, packets): sources and ports whose totals span several flows
FLOWS = [(1, 9, 1000, 80, 40), (1, 9, 1001, 80, 25), (1, 8, 1002, 443, 30),
         (2, 9, 2000, 53, 50), (2, 7, 2001, 443, 12), (3, 9, 3000, 80, 90),
         (4, 9, 4000, 8080, 5), (5, 6, 5000, 53, 7)]


def flows_batch(flows: list[tuple[int, int, int, int, int]] = FLOWS) -> HeaderBatch:
    """The packets of ``flows`` in a shuffled order (10.0.0.x addresses, TCP, 100 bytes)."""
    reps = [f[4] for f in flows]
    rng = np.random.default_rng(1)
    order = rng.permutation(sum(reps))
    cols = [np.repeat([f[i] for f in flows], reps)[order] for i in range(4)]
    n = order.shape[0]
    return HeaderBatch.from_arrays(0x0A000000 + cols[0], 0x0A000000 + cols[1],
                                   np.full(n, 6), cols[2], cols[3], np.full(n, 100))


def elastic_counter(key: str, memory: int = 65536) -> ElasticCounter:
    """The elastic counter of a ``flow_size`` task on ``key``, after ``flows_batch()``."""
    task = parse_task({"name": "t", "kind": "flow_size", "key": key, "memory": memory}, "t")
    c = default_counter_factory({"task": task.to_dict(), "candidate_divisor": 1}, 0.0)
    assert isinstance(c, ElasticCounter)
    c.update(flows_batch(), 1.0)
    return c
