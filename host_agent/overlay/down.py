"""The tasks an overlay node holds and their way down the tree.

``TaskFanOut`` is the configuration half of the overlay role (the reports
going up are ``host_agent.overlay.node``); it is built with everything it
uses: the agent runtime that installs tasks, the node's ``NodeState``, the
transport, the runner, the clock and the forwarding budget.

``put_task`` installs a task locally (``agent.install_task``) and forwards
the same body to every child at once; each child does the same. Replies
carry ``{"agents": {name: "ok" | "error: ..."}}`` for the child's whole
subtree, so the root's reply tells the controller the outcome on every
agent (the controller counts anything but "ok" as a failure). Timeouts
shrink down the tree: the forwarded body carries a reserved
``_overlay: {"budget": seconds, "agents": n}`` field (stripped before the
task is installed) and each level keeps a margin, so a slow grandchild
makes its parent answer "error: timeout" before the root's own request to
that parent expires. A child that does not answer is reported together
with the subtree its last report listed ("error: unreachable via ...").
An agent outside a task's ``scope`` installs nothing but still forwards
and merges. ``delete_task`` is symmetric (a child's 404 counts as "ok").
New children (after re-parenting or a restart) get every known task pushed
to them (``push_tasks``); the up side re-pushes a task to a child that
has been silent on it for a few intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from host_agent.overlay.state import DEFAULT_INTERVAL, NodeState, TaskState
from host_agent.protocols import OverlayAgent
from measure_common.httpclient import Transport
from measure_common.runner import Runner
from measure_model.task import Task
from measure_model.wire.overlay import OVERLAY_KEY, TASK_ID_RE, Peer, check_hints, check_task


def candidate_divisor(task: Task, agents: int) -> int:
    """The pigeonhole divisor of a task's counters among ``agents``: candidates at
    ``threshold_abs / agents`` when the threshold is absolute, else 1."""
    return agents if task.threshold_abs is not None and agents > 1 else 1


def _error_text(status: int, body: Any) -> str:
    """A child's failed reply as its status text."""
    if isinstance(body, dict) and "error" in body:
        return f"error: HTTP {status}: {body['error']}"
    return f"error: HTTP {status}"


# ---------------------------------------------------------------- down

class TaskFanOut:
    """Tasks installed here and forwarded to the subtree (see the module docstring)."""

    def __init__(self, agent: OverlayAgent, state: NodeState, transport: Transport,
                 runner: Runner, now: Callable[[], float], forward_budget: float) -> None:
        self.agent = agent
        self.state = state
        self.transport = transport
        self.runner = runner
        self.now = now
        self.forward_budget = forward_budget
        self.name = state.name

    def put_task(self, task_id: str, task: dict, install_local: bool = True,
                 upward: bool = True) -> dict:
        """Install here and forward to the subtree at once; per-agent outcome.

        ``upward=False`` keeps this node's finalised reports of the task here
        when it is the root (a legacy counter it shares; see ``TaskState``).
        """
        parsed, hints = check_task(task_id, task)
        budget = self._budget(hints)
        agents = self.population(hints)
        interval = parsed.report_interval or DEFAULT_INTERVAL
        with self.state.lock:
            state = self.state.tasks.get(task_id)
            if state is None or state.task != parsed:
                # the first report is for the interval the task was installed
                # in, not for one that ended before the task existed
                started = math.floor(self.now() / interval) * interval
                state = TaskState(task_id, parsed, installed=False, interval=float(interval),
                                  reporting=parsed.kind != "bandwidth",
                                  last_started=started)
                self.state.tasks[task_id] = state
            state.agents = agents
            state.upward = upward
            kids = list(self.state.children)

        def local() -> dict[str, str]:
            if not self.state.in_scope(parsed):
                return {self.name: "ok"}  # holds nothing, still forwards and merges
            if state.installed or not install_local:
                state.installed = True
                return {self.name: "ok"}
            try:
                self.agent.install_task(task_id, parsed,
                                        candidate_divisor=candidate_divisor(parsed, agents))
            except Exception as exc:  # noqa: BLE001 - reported per agent
                return {self.name: f"error: {exc}"}
            state.installed = True
            return {self.name: "ok"}

        return {"agents": self._fan_out("put", task_id, parsed.to_dict(), kids, budget, local,
                                        agents=agents)}

    def delete_task(self, task_id: str, body: Any = None) -> dict:
        """Remove here and in the subtree at once; per-agent outcome."""
        if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
            raise ValueError("task: id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
        if body is not None and (not isinstance(body, dict) or set(body) - {OVERLAY_KEY}):
            raise ValueError(f"task: a DELETE body may only hold '{OVERLAY_KEY}'")
        hints = check_hints(body.get(OVERLAY_KEY) if body else None)
        budget = self._budget(hints)
        with self.state.lock:
            state = self.state.tasks.pop(task_id, None)
            kids = list(self.state.children)

        def local() -> dict[str, str]:
            if state is not None and not state.installed:
                return {self.name: "ok"}
            try:
                self.agent.remove_task(task_id)
            except KeyError:
                return {self.name: "ok"}  # nothing to remove
            except Exception as exc:  # noqa: BLE001 - reported per agent
                return {self.name: f"error: {exc}"}
            return {self.name: "ok"}

        return {"agents": self._fan_out("delete", task_id, {}, kids, budget, local)}

    def population(self, hints: Any = None) -> int:
        """Number of agents in the tree: the sender's hint, else what reports taught us."""
        if isinstance(hints, dict) and isinstance(hints.get("agents"), int) and not isinstance(
                hints.get("agents"), bool) and hints["agents"] >= 1:
            return hints["agents"]
        kids = self.state.child_names()
        return 1 + sum(1 + len(self.state.known_subtree(k)) for k in kids)

    def _budget(self, overlay: Any) -> float:
        if isinstance(overlay, dict) and isinstance(overlay.get("budget"), int | float):
            return max(0.2, min(float(overlay["budget"]), self.forward_budget))
        return self.forward_budget

    def _fan_out(self, method: str, task_id: str, task: dict, kids: list[Peer],
                 budget: float, local: Callable[[], dict[str, str]] | None = None,
                 sequential: bool = False, agents: int = 0) -> dict[str, str]:
        """Run ``local`` and send to all children at once; children get less budget."""
        child_budget = max(0.1, budget - max(0.25, 0.2 * budget))
        hints: dict[str, Any] = {"budget": child_budget}
        if agents:
            hints["agents"] = agents
        body = dict(task, **{OVERLAY_KEY: hints})

        def one(kid: Peer | None) -> dict[str, str]:
            if kid is None:
                return local() if local is not None else {}
            url = f"{kid.url}/agent/v1/tasks/{task_id}"
            try:
                code, reply = self.transport.request(method.upper(), url, json=body,
                                                     timeout=budget)
            except OSError as exc:  # no answer: the child's status says why
                timeout = isinstance(exc, TimeoutError) or getattr(exc, "reason", "") == "timeout"
                text = "timeout" if timeout else str(exc)
                return self._subtree_status(task_id, kid, f"error: {text}")
            if code // 100 == 2 and isinstance(reply, dict) and isinstance(
                    reply.get("agents"), dict):
                return {str(k): str(v) for k, v in reply["agents"].items()}
            if code == 404 and method == "delete":
                return {kid.name: "ok"}
            return self._subtree_status(task_id, kid, _error_text(code, reply))

        merged: dict[str, str] = {}
        items = [None, *kids]
        parts = [one(k) for k in items] if sequential else self.runner.map(one, items)
        for part in parts:
            merged.update(part)
        return merged

    def _subtree_status(self, task_id: str, kid: Peer, text: str) -> dict[str, str]:
        out = {kid.name: text}
        for name in self.state.known_subtree(kid.name):
            out.setdefault(name, f"error: unreachable via {kid.name}")
        return out

    def push_tasks(self, kids: list[Peer], tasks: list[TaskState]) -> None:
        """Send every one of ``tasks`` to ``kids`` (new or silent children)."""
        for state in tasks:
            # already on the runner: no nested map, which could starve a small pool
            self._fan_out("put", state.task_id, state.task.to_dict(), kids, self.forward_budget,
                          sequential=True, agents=state.agents)
