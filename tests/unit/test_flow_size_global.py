"""A global flow-size task lists every flow, through real agents and the real merge.

The README's "First ten minutes" applied ``policies/flow_size_distribution.yaml``
after a pingall and got ``top_k: []`` globally while one host listed its 8
pairs: every flow is 168 bytes, 12.5% of what one host sees but 1.6% of the
network's total, and the agents counted the flow-size task with the legacy
default heavy-hitter threshold (5%), which the global merge then applied to
the network total. A flow-size task has no fraction threshold unless it gives
one: the global result ranks every flow.
"""

from __future__ import annotations

import numpy as np
import pytest

from measure_model.packet.keys import HeaderBatch
from measure_model.task import parse_task
from measure_model.wire import report
from testing.inproc import InProcAgent

pytestmark = pytest.mark.unit

HOSTS = range(2, 10)  # h1 is the operator, as with measure-net --no-agent-on h1


def pingall_at(agent: InProcAgent, task_id: str, host: int, now: float) -> None:
    """What one pingall delivers to ``host``'s INPUT chain: from every other host an
    echo request and the reply to its own ping, 84 bytes each."""
    others = [n for n in range(1, 10) if n != host]
    src = np.repeat(np.array([0x0A000000 + n for n in others]), 2)
    n = len(src)
    batch = HeaderBatch.from_arrays(src, np.full(n, 0x0A000000 + host), np.full(n, 1),
                                    np.zeros(n, int), np.zeros(n, int), np.full(n, 84))
    agent.counter(task_id).update(batch, now)


def test_global_flow_size_after_a_pingall_lists_all_64_pairs():
    task = parse_task({"name": "flow-size-icmp", "kind": "flow_size", "key": "src_dst",
                       "increment": "bytes", "top_k": 100,
                       "filter": {"interface": "INPUT", "proto": "icmp"}}, "policy")
    snaps = []
    for host in HOSTS:
        agent = InProcAgent(f"h{host}", data_ip=f"10.0.0.{host}")
        agent.install_task("1", task)
        pingall_at(agent, "1", host, now=10.0)
        snap = agent.snapshot_task("1", now=10.5)
        snap["missed"] = snap["missed"] or {}  # no capture rules here, as the overlay says
        snaps.append(snap)
    assert all(s["threshold"] == {} for s in snaps)
    merged = report.merge_all(snaps)
    assert merged["total"] == 64 * 168
    assert len(merged["top_k"]) == 64
    assert {k for k, _ in merged["top_k"]} == {
        f"10.0.0.{s},10.0.0.{d}" for d in HOSTS for s in range(1, 10) if s != d}
    assert all(count == 168 for _, count in merged["top_k"])
