"""The original root usage of the overlay: legacy counters shared with the subtree.

The legacy ``config sketch counter`` handler calls
``share_legacy_counter(sketch_id, counter_id)`` on an agent with
children: the counter becomes task ``legacy-S-C`` (1 s reports) that the
subtree installs, while here the legacy counter itself is the data.
``legacy_global(sketch_id, counter_id)`` then merges this node's current
snapshot with each child's latest subtree report, which the legacy
``query heavy hitters`` / ``query sketch`` / ``query real time counter``
answer from (the merged ``["heavy_hitters"]``, ``report.estimate``,
``["window"]``).

The root's own counter and the subtree's copies count with one candidate
divisor (an absolute threshold keeps candidates from ``threshold_abs / n``
on each of the ``n`` agents): the handler asks ``legacy_divisor(task)``
before it makes the counter, and ``share_legacy_counter`` hands that
divisor down as the ``_overlay.agents`` hint. Snapshots with different
divisors do not merge (``report.merge_all``), so a root counting with
another divisor than its subtree would answer for itself alone.

The shared counter's reports stay at the root (``put_task(...,
upward=False)``): the controller never heard of a ``legacy-S-C`` task, so
sending them there would only earn a 404 every interval.

``LegacyRoot`` is one part of ``host_agent.overlay.node.OverlayNode``, built
with what it uses: the agent runtime (its legacy sketches), the node's
``NodeState``, the down side (``TaskFanOut``) and the up side's
``global_snapshot``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from host_agent.overlay.down import TaskFanOut, candidate_divisor
from host_agent.overlay.state import NodeState
from host_agent.protocols import LegacyAgent
from measure_model.task import Task
from measure_model.wire.overlay import OVERLAY_KEY

LEGACY_INTERVAL = 1.0


def legacy_task_id(sketch_id: int, counter_id: int) -> str:
    return f"legacy-{sketch_id}-{counter_id}"


class LegacyRoot:
    """Legacy ``config sketch counter`` / queries on the overlay root.

    Only the root shares: the walk-through sends its global tasks to the root
    (h2 there) and its per-host tasks to a host (h5). An inner agent with
    children answers the original messages for itself alone, as a leaf does,
    so "heavy hitters at h5" means packets arriving at h5 wherever h5 sits
    in the tree."""

    def __init__(self, agent: LegacyAgent, state: NodeState, fanout: TaskFanOut,
                 global_snapshot: Callable[[str, float | None], dict | None]) -> None:
        self.agent = agent
        self.state = state
        self.fanout = fanout
        self.global_snapshot = global_snapshot

    def _sharing(self) -> bool:
        """Whether a legacy counter made here is shared: the root, with children."""
        with self.state.lock:
            return bool(self.state.children) and self.state.root

    def legacy_divisor(self, task: Task) -> int:
        """The candidate divisor a legacy counter for ``task`` made here counts with:
        its subtree copies' divisor when it will be shared, else 1."""
        return candidate_divisor(task, self.fanout.population()) if self._sharing() else 1

    def share_legacy_counter(self, sketch_id: int, counter_id: int) -> dict | None:
        """Forward a legacy counter made here to the subtree as a global task.

        Called by the legacy ``config sketch counter`` handler; the local
        counter itself is the task's data here, and the subtree counts with
        its candidate divisor. Returns the per-agent status, or None unless
        this agent is the overlay root and has children.
        """
        if not self._sharing():
            return None
        counter = self.agent.sketches[sketch_id].counters[counter_id]
        task = replace(counter.task, name=legacy_task_id(sketch_id, counter_id),
                       report_interval=LEGACY_INTERVAL).to_dict()
        if counter.task.threshold_abs is not None:
            task[OVERLAY_KEY] = {"agents": counter.candidate_divisor}
        task_id = legacy_task_id(sketch_id, counter_id)
        with self.state.lock:
            self.state.legacy[task_id] = (sketch_id, counter_id)
        return self.fanout.put_task(task_id, task, install_local=False, upward=False)

    def legacy_global(self, sketch_id: int, counter_id: int,
                      now: float | None = None) -> dict | None:
        """The global snapshot of a shared legacy counter (None if not shared)."""
        task_id = legacy_task_id(sketch_id, counter_id)
        with self.state.lock:
            shared = task_id in self.state.legacy
        return self.global_snapshot(task_id, now) if shared else None

    def unshare_legacy_sketch(self, sketch_id: int) -> None:
        """Remove the subtree's copies of a deleted legacy sketch's counters."""
        with self.state.lock:
            ids = [t for t, (sid, _) in self.state.legacy.items() if sid == sketch_id]
            for task_id in ids:
                del self.state.legacy[task_id]
        for task_id in ids:
            self.fanout.delete_task(task_id)
