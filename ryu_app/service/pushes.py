"""What the controller still has to tell its agents, and how often it failed.

Three queues, each drained by ``MeasureService.tick`` (or at once when a
REST call woke the ticker):

- ``overlay``: agents to send their placement (``PUT {url}/agent/v1/overlay``),
  all at once through the runner; a 409 naming a newer epoch is handed back
  so the service can jump past it;
- ``tasks``: task ids to send to the overlay root (``PUT
  {root}/agent/v1/tasks/{id}``), in id order; the root's per-agent answer
  becomes the task's status; an unreachable root stops the round;
- ``deletes``: task ids whose deletion the root has not acknowledged (2xx,
  or 404: it does not hold it).

An item stays queued until it succeeds. Every failure is counted per
target (``failing``: ``overlay h3``, ``task 7``, ``delete 7``) with its last
error and when it started failing, and agents that gave no answer at all
are ``unreachable``; a success clears both. The controller's health
(``GET /measure/v1/health``) lists them, so a push that keeps failing is
visible without reading logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from measure_common.httpclient import Transport
from measure_common.runner import Runner
from ryu_app.service.task_record import TaskRecord

log = logging.getLogger(__name__)

PUSH_TIMEOUT = 5.0
OVERLAY_TIMEOUT = 2.0


def _detail(body: Any) -> Any:
    return body.get("error") if isinstance(body, dict) else body


class Pushes:
    """The three push queues and their failure counts (see the module docstring)."""

    def __init__(self, http: Transport, runner: Runner, now: Callable[[], float]) -> None:
        #: a task's body for the root (the service fills in what it resolves, such as
        #: a path_health task's probe_targets)
        self.task_body: Callable[[Any], dict[str, Any]] = lambda task: task.to_dict()
        self.http = http
        self.runner = runner
        self.now = now
        self.overlay: set[str] = set()
        self.tasks: set[str] = set()
        self.deletes: set[str] = set()
        self.failing: dict[str, dict[str, Any]] = {}
        self.unreachable: dict[str, str] = {}  # agent -> last transport error

    # ------------------------------------------------------------ bookkeeping

    def _failed(self, target: str, error: str, agent: str | None = None,
                no_answer: bool = False) -> None:
        entry = self.failing.setdefault(target, {"failures": 0, "since": self.now()})
        entry["failures"] += 1
        entry["last_error"] = error
        if agent is not None and no_answer:
            self.unreachable[agent] = error
        elif agent is not None:
            self.unreachable.pop(agent, None)  # it answered, if with an error

    def _ok(self, target: str, agent: str | None = None) -> None:
        self.failing.pop(target, None)
        if agent is not None:
            self.unreachable.pop(agent, None)

    def forget_agents(self, live: Iterable[str]) -> None:
        """Drop queue entries and failure counts of agents that are gone."""
        live = set(live)
        self.overlay &= live
        for name in [n for n in self.unreachable if n not in live]:
            del self.unreachable[name]
        for target in [t for t in self.failing
                       if t.startswith("overlay ") and t.split(" ", 1)[1] not in live]:
            del self.failing[target]

    def forget_task(self, task_id: str) -> None:
        self.tasks.discard(task_id)
        self.failing.pop(f"task {task_id}", None)

    def health(self) -> dict[str, Any]:
        """``pushes_failing`` and ``agents_unreachable`` of the controller's health."""
        return {"pushes_failing": {t: dict(v) for t, v in sorted(self.failing.items())},
                "agents_unreachable": sorted(self.unreachable)}

    # ------------------------------------------------------------ overlay

    def send_overlay(self, urls: dict[str, str],
                     body_of: Callable[[str], dict[str, Any]]) -> list[int]:
        """Send placements to the queued agents in ``urls``; return newer epochs seen."""
        names = sorted(n for n in self.overlay if n in urls)
        newer: list[int] = []

        def push(name: str) -> tuple[str, bool]:
            url = f"{urls[name]}/agent/v1/overlay"
            target = f"overlay {name}"
            try:
                status, body = self.http.request("PUT", url, json=body_of(name),
                                                 timeout=OVERLAY_TIMEOUT)
            except OSError as exc:
                log.info("overlay push to %s failed: %s", name, exc)
                self._failed(target, str(exc), name, no_answer=True)
                return name, False
            if status == 409 and isinstance(body, dict):
                # The agent holds a newer epoch (the controller lost its state dir).
                match = re.search(r"current (\d+)", str(body.get("error", "")))
                if match:
                    newer.append(int(match[1]))
            if not 200 <= status < 300:
                self._failed(target, f"HTTP {status}: {_detail(body)}", name)
                return name, False
            self._ok(target, name)
            return name, True

        for name, ok in self.runner.map(push, names):
            if ok:
                self.overlay.discard(name)
        return newer

    # ------------------------------------------------------------ tasks

    def send_tasks(self, records: dict[str, TaskRecord], root: str | None,
                   root_url: str | None, agents: int) -> None:
        """Send the queued tasks to the overlay root (``agents``: the tree's size)."""
        for task_id in sorted(self.tasks, key=int):
            record = records.get(task_id)
            if record is None:
                self.forget_task(task_id)
                continue
            target = f"task {task_id}"
            if root_url is None:
                record.last_error = "no live agent to act as overlay root"
                self._failed(target, record.last_error)
                continue
            # the agent count from the first interval on (absolute thresholds are
            # split over it); the root strips the reserved field before installing
            body = {**self.task_body(record.task), "_overlay": {"agents": max(1, agents)}}
            try:
                status, reply = self.http.request(
                    "PUT", f"{root_url}/agent/v1/tasks/{task_id}", json=body,
                    timeout=PUSH_TIMEOUT)
            except OSError as exc:
                record.last_error = f"root {root}: {exc}"
                self._failed(target, record.last_error, root, no_answer=True)
                break  # the root is unreachable: the rest waits for the next tick
            if not 200 <= status < 300:
                record.last_error = f"root {root}: HTTP {status}: {_detail(reply)}"
                self._failed(target, record.last_error, root)
                continue
            answers = reply.get("agents") if isinstance(reply, dict) else None
            record.agents = {str(k): str(v) for k, v in (answers or {}).items()}
            failed = sorted(k for k, v in record.agents.items() if v != "ok")
            record.status = "partial" if failed else "active"
            record.pushed_at = self.now()
            record.last_error = f"failed on {', '.join(failed)}" if failed else None
            if failed:
                self._failed(target, f"agents refused it: {', '.join(failed)}", root)
            else:
                self._ok(target, root)
            self.tasks.discard(task_id)

    def send_deletes(self, root: str | None, root_url: str | None) -> None:
        """Send pending DELETEs to the root; each stays queued until acknowledged,
        so agents that were only unreachable do not keep measuring a deleted task."""
        if root_url is None:
            return  # retried on a later tick, when there is a live root
        for task_id in sorted(self.deletes, key=int):
            target = f"delete {task_id}"
            try:
                status, reply = self.http.request(
                    "DELETE", f"{root_url}/agent/v1/tasks/{task_id}", timeout=PUSH_TIMEOUT)
            except OSError as exc:
                self._failed(target, f"root {root}: {exc}", root, no_answer=True)
                continue
            if 200 <= status < 300 or status == 404:
                self.deletes.discard(task_id)
                self._ok(target, root)
            else:
                self._failed(target, f"root {root}: HTTP {status}: {_detail(reply)}", root)
