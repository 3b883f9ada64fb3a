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

A mixin of ``host_agent.overlay_node.OverlayNode``: it uses the node's
``agent``, ``children``, ``legacy`` map, lock, ``put_task``, ``delete_task``
and ``global_snapshot``.
"""

from __future__ import annotations

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

    def share_legacy_counter(self, sketch_id: int, counter_id: int) -> dict | None:
        """Forward a legacy counter made here to the subtree as a global task.

        Called by the legacy ``config sketch counter`` handler; the local
        counter itself is the task's data here. Returns the per-agent status,
        or None unless this agent is the overlay root and has children.
        """
        with self._lock:
            if not self.children or not self.root:
                return None
        sketch = self.agent.sketches[sketch_id]
        spec = sketch.counters[counter_id]
        thresholds = {k: spec[k] for k in ("threshold", "threshold_abs")
                      if spec.get(k) is not None}
        task = {"name": legacy_task_id(sketch_id, counter_id),
                "kind": "heavy_hitters" if thresholds else "counter",
                "filter": sketch.filter.to_dict(), "key": spec["key"],
                "increment": spec["increment"], "top_k": spec["top_k"],
                "window": spec["window"], "sketch": spec["sketch"],
                "report_interval": LEGACY_INTERVAL, **thresholds}
        if spec.get("scan_ports") is not None:
            task["scan_ports"] = spec["scan_ports"]
        task_id = legacy_task_id(sketch_id, counter_id)
        with self._lock:
            self.legacy[task_id] = (sketch_id, counter_id)
        return self.put_task(task_id, task, install_local=False)

    def legacy_global(self, sketch_id: int, counter_id: int,
                      now: float | None = None) -> dict | None:
        """The global snapshot of a shared legacy counter (None if not shared)."""
        task_id = legacy_task_id(sketch_id, counter_id)
        with self._lock:
            shared = task_id in self.legacy
        return self.global_snapshot(task_id, now) if shared else None

    def unshare_legacy_sketch(self, sketch_id: int) -> None:
        """Remove the subtree's copies of a deleted legacy sketch's counters."""
        with self._lock:
            ids = [t for t, (sid, _) in self.legacy.items() if sid == sketch_id]
            for task_id in ids:
                del self.legacy[task_id]
        for task_id in ids:
            self.delete_task(task_id)
