"""What one overlay node holds: its place in the tree and its tasks.

``NodeState`` is shared, under its one lock, by the node's three parts (see
``host_agent.overlay.node``): the placement the controller sent (parent,
children, root flag, epoch, controller URL), the tasks held (``TaskState``,
each with its intervals being aggregated, ``Pending``), the legacy counters
shared with the subtree, and what the children's reports taught (their
delay, their subtree). Queries that need several of these at once
(``known_subtree``, ``height``, ``in_scope``) live here, so no part reaches
into another's attributes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from measure_model.task import DEFAULT_REPORT_INTERVAL, Task
from measure_model.wire.overlay import Peer

DEFAULT_INTERVAL = DEFAULT_REPORT_INTERVAL  # the task table's report_interval default
SUMMARIES_KEPT = 100  # own per-host lines kept per task (history ?host=)


@dataclass
class Pending:
    """One interval being aggregated."""

    end: float
    started: float = math.inf  # when this node took its own snapshot for ``end``
    own: dict | None = None
    own_error: str = ""
    children: dict[str, dict] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)  # child -> when its report came
    taking: bool = False  # the own snapshot is being taken (not ready before it is in)
    snapshot_s: float = 0.0  # how long the own snapshot took
    snapshot_done: float = math.nan  # when it was in


@dataclass
class TaskState:
    """One task this node holds.

    ``upward`` says where the root sends its finalised reports: True for the
    controller's tasks; False for a legacy counter shared by this root,
    whose reports stay here (the original messages are answered from them,
    the controller never heard of the task).
    """

    task_id: str
    task: Task
    installed: bool
    interval: float
    reporting: bool
    last_started: float = -math.inf
    finalised_upto: float = -math.inf
    pending: dict[float, Pending] = field(default_factory=dict)
    latest_child: dict[str, dict] = field(default_factory=dict)
    silent: dict[str, int] = field(default_factory=dict)
    agents: int = 0  # number of agents in the tree, as told with the task
    upward: bool = True
    mark: Any = None  # measure_model.interval.Mark of the last own snapshot
    closed: dict[float, float] = field(default_factory=dict)  # recent ends -> their deadline
    # this agent's own per-host lines, newest last: (interval end, summary); ``?host=``
    # reads them here (they do not travel up the tree beyond the parent)
    summaries: deque = field(default_factory=lambda: deque(maxlen=SUMMARIES_KEPT))
    since: float = field(default_factory=time.monotonic)  # installed here (monotonic s)


@dataclass
class NodeState:
    """Placement, tasks and learnt facts of one node (see the module docstring)."""

    name: str
    idents: frozenset[str]  # name, data IP and URL host: what a task's scope may say
    parent: Peer | None = None
    children: list[Peer] = field(default_factory=list)
    root: bool = False
    epoch: int = -1
    controller: str | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)
    legacy: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (sketch, counter)
    delay: dict[str, float] = field(default_factory=dict)  # child -> last report's delay
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def of(cls, agent: Any) -> NodeState:
        """The state of a fresh node for ``agent`` (its name, data IP, URL host)."""
        url_host = str(getattr(agent, "url", "") or "").split("//")[-1].split(":")[0]
        idents = {agent.name, getattr(agent, "data_ip", None), url_host}
        return cls(agent.name, frozenset(i for i in idents if i))

    def child_names(self) -> list[str]:
        with self.lock:
            return [k.name for k in self.children]

    def in_scope(self, task: Task) -> bool:
        """Whether this agent measures ``task`` (else it only forwards and merges)."""
        if task.scope is None or isinstance(task.scope, str):
            return True  # "global", or a kind that has no scope (bandwidth)
        return bool(self.idents & set(task.scope))

    def known_subtree(self, child: str) -> list[str]:
        """Agents below ``child`` as its last report (of any task) said."""
        names: set[str] = set()
        with self.lock:
            for state in self.tasks.values():
                rep = state.latest_child.get(child)
                if rep:
                    names.update(rep.get("covered", []))
                    names.update(rep.get("missing", []))
        names.discard(child)
        return sorted(names)

    def height(self) -> int:
        """Subtree height as learnt from the children's reports."""
        with self.lock:
            if not self.children:
                return 0
            h = 0
            for state in self.tasks.values():
                for rep in state.latest_child.values():
                    h = max(h, int(rep.get("height", 0)))
            return h + 1
