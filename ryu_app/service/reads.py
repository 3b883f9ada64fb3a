"""The reads a leader and a standby controller both answer from the store.

``MeasureService`` (the leader) and ``StandbyService`` (a standby on the
shared store) inherit these; each gives its own ``_record`` (the leader
from memory, the standby from the store) and ``results``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from measure_model.sketch.sampling import scale_result
from measure_model.task import Task
from ryu_app.errors import BadRequest, NotFound
from ryu_app.service.results import Results
from ryu_app.service.task_record import TaskRecord


def scaled(rows: list[dict[str, Any]], task: Task) -> list[dict[str, Any]]:
    """Results of a sampled task with their counts scaled up (as every read shows them)."""
    return [scale_result(r, task.sample or 1.0, task.sample_mode or "random") for r in rows]


class StoredReads:
    """``past`` and ``events``: answered from ``results`` (its store) alone; the
    switches' roles (``switch_roles``, kept by the Ryu app from their role replies)."""

    results: Results
    now: Callable[[], float]
    #: dpid -> the role the switch last answered this controller; set by the Ryu app
    switch_roles: dict[int, str] | None = None

    def roles_view(self) -> dict[str, str]:
        """``health``'s ``switch_roles``: by 16-digit hex dpid."""
        return {f"{dpid:016x}": role for dpid, role in sorted((self.switch_roles or {}).items())}

    def _record(self, task_id: str) -> TaskRecord:
        raise NotImplementedError

    def past(self, task_id: str, interval_end: float | None, key: str | None = None,
             since: float | None = None) -> dict[str, Any]:
        """Ask a kept interval of an elastic task (``Results.past``): one key's size with
        its bound, or the task's answer then (histogram, changes, ...)."""
        record = self._record(task_id)
        try:
            out = self.results.past(task_id, interval_end, key, since)
        except ValueError as exc:
            raise BadRequest(f"key: {exc}") from None
        if out is None:
            when = "" if interval_end is None else f" at or before {interval_end:g}"
            raise NotFound(f"no kept interval{when} for task {task_id} ({record.status}; "
                           f"kept for elastic kinds only)")
        return out

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.results.events(since)
