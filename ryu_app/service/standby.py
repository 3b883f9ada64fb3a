"""What a standby controller answers while another one leads the shared store.

Two controllers on one PostgreSQL store (``ryu_app.service.store.PgStore``)
elect a leader with the store's advisory lock. The other one is a standby:
its REST API answers, but only from the shared store, and never changes it.

- Served from the store: ``health`` (with ``role: standby`` and the
  leader's URL), the tasks, a task's latest result and history (global or
  one host's stored rows), a kept interval (``history/{interval}``), the
  events and the actions. A result asked with ``?key=`` needs the leader's
  merged state in memory, so it is refused like a write.
- Refused with 503 (``NotLeader``, ``Retry-After: 1``), the message naming the
  leader's URL: every write (tasks, actions, bandwidth), every agent call
  (register, heartbeat, report, peer key: an agent moves on to its next
  controller URL) and the reads of the leader's live state (agents,
  overlay, topology, links, paths, flows, diagnose).

The leader's URL is the ``leader_url`` it wrote to the store's metadata
when it took the lock. The Ryu app swaps this object for a
``MeasureService`` when the standby takes the lock itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from measure_model.version import __version__
from ryu_app.auth_config import AuthConfig, auth_from_env
from ryu_app.errors import NotFound, NotLeader
from ryu_app.reactions.actions import action_rows
from ryu_app.service.reads import StoredReads, scaled
from ryu_app.service.registry import Registry
from ryu_app.service.results import Results
from ryu_app.service.store import GLOBAL, Store
from ryu_app.service.task_record import TaskRecord

LEADER_URL_KEY = "leader_url"


class StandbyService(StoredReads):
    """The read side of ``MeasureService`` over the shared store (module docstring)."""

    standby = True

    def __init__(self, store: Store, state_dir: str, now: Callable[[], float] = time.time,
                 auth: AuthConfig | None = None) -> None:
        self.store = store
        self.now = now
        self.auth = auth if auth is not None else auth_from_env(state_dir)
        self.registry = Registry()  # agents register with the leader only
        self.results = Results(store)

    def leader_url(self) -> str | None:
        return self.store.get_meta(LEADER_URL_KEY)

    def not_leader(self) -> NotLeader:
        leader = self.leader_url()
        where = f"the leader at {leader}" if leader else "the leader (no URL stored yet)"
        return NotLeader(f"this controller is a standby on the shared store "
                         f"{self.store.path}; send this to {where}")

    # ------------------------------------------------------------ tasks

    def _record(self, task_id: str) -> TaskRecord:
        row = self.store.task(task_id)
        if row is None:
            raise NotFound(f"unknown task {task_id}")
        return TaskRecord.from_row(row)

    def list_tasks(self) -> list[dict[str, Any]]:
        return [TaskRecord.from_row(r).to_dict() for r in self.store.tasks()]

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._record(task_id).to_dict()

    def result(self, task_id: str, host: str | None = None,
               key: str | None = None) -> dict[str, Any]:
        """The newest stored result (global, or one host's stored rows)."""
        record = self._record(task_id)
        if key is not None:
            raise self.not_leader()
        rows = self.results.history(task_id, host, 1, now=self.now())
        if not rows:
            where = f" for host {host}" if host else ""
            raise NotFound(f"no result yet for task {task_id}{where} ({record.status})")
        return scaled(rows, record.task)[0]

    def history(self, task_id: str, host: str | None = None,
                limit: int = 50) -> dict[str, Any]:
        rows = self.results.history(task_id, host, limit, now=self.now())
        return {"task_id": task_id, "host": host or GLOBAL,
                "results": scaled(rows, self._record(task_id).task)}

    # ------------------------------------------------------------ events, actions

    def list_actions(self) -> list[dict[str, Any]]:
        return action_rows(self.store)

    # ------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """Always ``ok`` while the store answers (this read proves it): a standby has
        no tick loop, agents or pushes of its own."""
        return {"ok": True, "version": __version__, "role": "standby",
                "leader": self.leader_url(), "switch_roles": self.roles_view(),
                "ticker": {"last_ok": None, "failures": 0, "last_error": None,
                           "running": False, "stale": False},
                "agents_unreachable": [], "pushes_failing": {},
                "tasks": len(self.store.tasks())}
