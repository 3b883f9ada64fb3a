"""The original root usage of the overlay: legacy counters shared with the subtree.

The legacy ``config sketch counter`` handler calls
``share_legacy_counter(sketch_id, counter_id)`` on an agent with
children: the counter becomes task ``legacy-S-C`` (1 s reports) that the
subtree installs, while here the legacy counter itself is the data.
``legacy_global(sketch_id, counter_id)`` then merges this node's current
snapshot with each child's latest subtree report, which the legacy
``query heavy hitters`` / ``query sketch`` / ``query real time counter``
answer from (``report.heavy_hitters_of``, ``report.estimate``,
``["window"]``).

The shared counter's reports stay at the root (``put_task(...,
upward=False)``): the controller never heard of a ``legacy-S-C`` task, so
sending them there would only earn a 404 every interval.

``LegacyRoot`` is one part of ``host_agent.overlay_node.OverlayNode``, built
with what it uses: the agent runtime (its legacy sketches), the node's
``NodeState``, the down side (``TaskFanOut``) and the up side's
``global_snapshot``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from host_agent.overlay_down import TaskFanOut
from host_agent.overlay_state import NodeState
from host_agent.protocols import LegacyAgent

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

    def share_legacy_counter(self, sketch_id: int, counter_id: int) -> dict | None:
        """Forward a legacy counter made here to the subtree as a global task.

        Called by the legacy ``config sketch counter`` handler; the local
        counter itself is the task's data here. Returns the per-agent status,
        or None unless this agent is the overlay root and has children.
        """
        with self.state.lock:
            if not self.state.children or not self.state.root:
                return None
        counter = self.agent.sketches[sketch_id].counters[counter_id]
        task = replace(counter.task, name=legacy_task_id(sketch_id, counter_id),
                       report_interval=LEGACY_INTERVAL).to_dict()
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
