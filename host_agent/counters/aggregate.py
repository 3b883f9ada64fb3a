"""Per-batch aggregation of packet keys: the first step of every counter's update.

A counter never touches packets one by one: a batch of parsed headers
(:class:`HeaderBatch`) is reduced to its unique keys with their counts (or
byte sums) by one argsort and a few linear passes, and everything after
that (sketch, heavy part, windows) costs per unique key. Both engines
(:mod:`host_agent.counters.countmin`, :mod:`host_agent.counters.elastic`) use
:func:`batch_counts`, so they count the same batch the same way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from measure_model.packet.keys import HeaderBatch


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


class BatchCounts(NamedTuple):
    """A non-empty batch aggregated for one key type and increment."""

    uniq: np.ndarray      # unique 64-bit sketch keys
    first: np.ndarray     # index of one packet of each (to pick its full key)
    counts: np.ndarray    # packets or bytes per key
    total: int            # what the batch adds to the counter's total
    nbytes: int           # IPv4 bytes of the batch


def batch_counts(batch: HeaderBatch, key: str, increment: str) -> BatchCounts:
    """The batch's unique ``key`` values with their ``increment`` counts (batch not empty)."""
    keys = batch.sketch_keys(key)
    nbytes = int(batch.length.sum(dtype=np.int64))
    if increment == "pkt":
        uniq, first, counts = aggregate(keys, batch.weight)
        return BatchCounts(uniq, first, counts, batch.packets, nbytes)
    uniq, first, counts = aggregate(keys, batch.length)
    return BatchCounts(uniq, first, counts, nbytes, nbytes)
