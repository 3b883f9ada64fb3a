"""The agent's overlay role: tasks flow down the tree, merged reports flow up.

The controller computes a tree over the live agents and tells each agent its
place with ``PUT /agent/v1/overlay`` (parent, children, root flag, epoch,
controller URL). This module is that agent-side role, as plain logic: the
clock, the HTTP transport and the concurrency are injected, so unit tests
wire a whole tree in one process with a fake clock.

Down (configuration)
    ``put_task`` installs a task here and forwards it to every child at
    once; the reply holds the outcome on every agent of the subtree, with
    timeouts shrinking down the tree. ``delete_task`` is symmetric; new or
    silent children get the tasks pushed again. This half is
    ``TaskFanOut`` in ``host_agent.overlay.down``; the per-task state
    (``TaskState``, ``Pending``) is in ``host_agent.overlay.state``.

Up (reports)
    Report intervals are aligned to absolute time: interval ``E`` ends at a
    multiple of the task's ``report_interval``. At the first ``tick`` after
    ``E`` a node takes its own snapshot (``agent.snapshot_task``), then waits
    for its children's subtree reports for ``E``. It sends ONE report up
    (parent's ``POST /agent/v1/reports``, or at the root the controller's
    ``POST /measure/v1/reports``) as soon as all children have reported, or
    at its deadline, whichever comes first. ``height`` is the node's subtree
    height, learnt from the children's reports, and its wait is
    ``wait(h) = min(max(h * level_wait, 1.5 * slowest child's last delay),
    cap(h))``: a parent waits one level longer than its children, so a dead
    grandchild is reported missing by the child in time for the parent; slow
    children stretch the wait; a child that never reported (height unknown)
    gets the cap; nothing blocks beyond the cap. The deadlines are relative
    to depth: below the root a node's deadline is ``E + wait(h)`` with
    ``cap(h) = max_wait * interval * (1 - 0.4^h)`` (60% of the budget at
    height 1, 84% at 2, ...: the leaves, whose monitors count the packets,
    are the slowest to report), so every node gives up on a slow child
    before its own parent gives up on it, at any depth; the root's cap is
    the whole ``max_wait * interval`` and counts from when it took its own
    snapshot (a root that woke late does not give up on children that are
    late too: nobody waits for the root); a node below that woke late still
    waits ``h * level_wait`` after its own snapshot.
    Snapshots are cumulative since install, so merging (``report.merge_all``:
    cells add, totals add, candidates re-checked against the merged sketch,
    HLL max) gives the global state as of ``E``.

Coverage
    Each report lists ``covered`` agents (whose data is inside) and
    ``missing`` agents: a child that did not report is missing together with
    the subtree it last reported, so the controller sees every agent that
    is not counted. ``oldest`` is the oldest snapshot time inside.

Per-host results
    A report's ``per_host`` holds the sender's own line only: a small
    summary (totals, the top ``per_host_top`` heavy hitters and top-k,
    distinct estimate, scan sources). The parent keeps its children's last
    lines (with their reports), each agent its own last ``SUMMARIES_KEPT``
    (``host_lines``, served as ``GET /agent/v1/tasks/{id}/hosts/{name}``):
    the controller asks there when ``?host=`` is asked. The root sends the
    controller the bounded form (``measure_model.wire.overlay.bound_report``:
    the first names of ``covered``/``missing`` and their exact counts), so
    what the controller receives per task and interval does not grow with N.

Parts
    The node is composed, not mixed in: ``NodeState`` (``overlay_state``)
    holds the placement and the tasks under one lock; ``TaskFanOut``
    (``overlay_down``) is the down side; ``LegacyRoot`` (``overlay_legacy``)
    shares the original messages' counters with the subtree; this class is
    the placement and the up side, and the one object the agent's HTTP API
    talks to. Each part gets its collaborators in its constructor. Requests
    go out through one ``measure_common.httpclient.Transport`` and background
    work through one ``measure_common.runner.Runner``; merging the parts of a
    subtree report and the per-host summaries are ``overlay_merge``; the
    message checks (peers, forwarded tasks, reports) are in
    ``measure_model.wire.overlay``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from host_agent.keyring import KeyRing, check_credential
from host_agent.legacy.overlay import LegacyRoot
from host_agent.overlay.beats import Beats
from host_agent.overlay.down import TaskFanOut
from host_agent.overlay.merge import (
    host_summary,
    merge_checked_snapshots,
    merge_parts,
    merge_snapshots,
)
from host_agent.overlay.state import NodeState, Pending, TaskState
from host_agent.protocols import LegacyAgent
from measure_common.httpclient import HttpClient, Transport
from measure_common.runner import Runner, default_runner
from measure_model import interval
from measure_model.fields import ID_PATTERN, is_count
from measure_model.task import Task
from measure_model.wire.overlay import (
    Peer,
    bound_report,
    is_url,
    parse_peer,
    validate_report,
)

log = logging.getLogger(__name__)
_CONTROLLER_ID = re.compile(ID_PATTERN)  # the controller's task ids (legacy ones differ)


class StaleEpoch(ValueError):
    """An overlay assignment older than the one the node holds."""

    status = 409


class NotAChild(ValueError):
    """A report from an agent that is not one of this node's children."""

    status = 409


class UnknownTask(KeyError):
    """A report for a task this node does not hold."""

    status = 404


# below the root, a node of height h waits at most (1 - LEVEL_SHARE^h) of the root's cap
LEVEL_SHARE = 0.4
CLOSED_KEPT = 4  # finalised intervals whose deadline is kept (a late report's margin)


def _spread(values: list[float]) -> dict:
    """Count, minimum, 5th percentile, median and late count (< 0) of margins."""
    if not values:
        return {"reports": 0}
    v = sorted(values)
    return {"reports": len(v), "min": v[0], "p5": v[len(v) // 20], "p50": v[len(v) // 2],
            "late": sum(1 for x in v if x < 0)}


class UnknownHost(KeyError):
    """A per-host line asked of a node that holds none for that agent."""

    status = 404


# ---------------------------------------------------------------- the node

class OverlayNode:
    """One agent's place in the overlay tree (see the module docstring)."""

    def __init__(self, agent: LegacyAgent, http: Transport | None = None,
                 now: Callable[[], float] = time.time, runner: Runner | None = None,
                 auth: Any = None, forward_budget: float = 4.0, level_wait: float = 0.3,
                 max_wait: float = 0.8, per_host_top: int = 10, repush_after: int = 3,
                 merge: Callable[[list[dict]], dict | None] | None = None,
                 check: Callable[[dict], Any] | None = None) -> None:
        self.agent = agent
        # Children's snapshots are checked on receipt (validate_report with
        # report.check_snapshot) and our own comes from our counters, so the
        # default merge does not check them again; a custom ``check`` may be
        # weaker, so then the merge checks.
        self.merge = merge or (merge_checked_snapshots if check is None else merge_snapshots)
        self.check = check  # snapshot validation (None: report.check_snapshot)
        self.http: Transport = http if http is not None else HttpClient(auth)
        self.now = now
        self.runner: Runner = runner if runner is not None else default_runner()
        self.forward_budget = forward_budget
        self.level_wait = level_wait
        self.max_wait = max_wait
        self.per_host_top = per_host_top
        self.repush_after = repush_after
        self.state = NodeState.of(agent)
        self.fanout = TaskFanOut(agent, self.state, self.http, self.runner, now,
                                 forward_budget)
        self.legacy_root = LegacyRoot(agent, self.state, self.fanout, self.global_snapshot)
        self.stats = {"reports_sent": 0, "reports_received": 0, "late_reports": 0,
                      "send_errors": 0}
        # (the child's subtree height, seconds between its report's arrival and this
        # node's deadline for it; negative: it came after the deadline and was left out
        # of that interval's report), the last 1000
        self.margins: deque[tuple[int, float]] = deque(maxlen=1000)
        # per report sent, the last 1000: when its interval's own snapshot was taken and
        # how long each step took, relative to the interval end (``report_timing``)
        self.timings: deque[dict] = deque(maxlen=1000)
        self._lock = self.state.lock
        self.beats = Beats()  # the subtree's heartbeats (host_agent.overlay.beats)
        # between two tasks' reports in ``tick``: under eventlet, lets children's
        # reports in (a simulation with its own clock replaces it)
        self.pause: Callable[[], None] = lambda: time.sleep(0)
        #: the agent's signing keys; placements add their peers' (None: unsigned)
        self.keyring: KeyRing | None = None

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def parent(self) -> Peer | None:
        return self.state.parent

    @property
    def children(self) -> list[Peer]:
        return self.state.children

    @property
    def root(self) -> bool:
        return self.state.root

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def controller(self) -> str | None:
        return self.state.controller

    @property
    def tasks(self) -> dict[str, TaskState]:
        return self.state.tasks

    @property
    def legacy(self) -> dict[str, tuple[int, int]]:
        return self.state.legacy

    # ------------------------------------------------------------ down and legacy

    def put_task(self, task_id: str, task: dict, install_local: bool = True) -> dict:
        """``TaskFanOut.put_task``: install here and in the subtree."""
        return self.fanout.put_task(task_id, task, install_local)

    def delete_task(self, task_id: str, body: Any = None) -> dict:
        """``TaskFanOut.delete_task``: remove here and in the subtree."""
        return self.fanout.delete_task(task_id, body)

    def drop_stale(self, live: Any, registered_at: float) -> list[str]:
        """The controller's task ids as its reply to this agent's registration said
        (``live``): a controller task held here since before the registration was
        sent (``registered_at``, monotonic) and not among them was deleted while this
        agent could not be told (the controller restarted with the deletion still
        queued, or the agent was outside the tree): removed here and below. Task ids
        not the controller's (legacy counters) stay."""
        if not isinstance(live, list):
            return []  # a controller that does not say
        with self._lock:
            stale = [tid for tid, state in self.state.tasks.items()
                     if state.upward and _CONTROLLER_ID.fullmatch(tid)
                     and tid not in live and state.since < registered_at]
        for task_id in stale:
            log.info("task %s is not a task of the controller any more: removing it",
                     task_id)
            self.delete_task(task_id)
        return stale

    def legacy_divisor(self, task: Task) -> int:
        """``LegacyRoot.legacy_divisor``."""
        return self.legacy_root.legacy_divisor(task)

    def share_legacy_counter(self, sketch_id: int, counter_id: int) -> dict | None:
        """``LegacyRoot.share_legacy_counter``."""
        return self.legacy_root.share_legacy_counter(sketch_id, counter_id)

    def legacy_global(self, sketch_id: int, counter_id: int,
                      now: float | None = None) -> dict | None:
        """``LegacyRoot.legacy_global``."""
        return self.legacy_root.legacy_global(sketch_id, counter_id, now)

    def unshare_legacy_sketch(self, sketch_id: int) -> None:
        """``LegacyRoot.unshare_legacy_sketch``."""
        self.legacy_root.unshare_legacy_sketch(sketch_id)

    # ------------------------------------------------------------ overlay

    def set_overlay(self, body: Any) -> dict:
        """Adopt a placement from the controller; older epochs are refused."""
        if not isinstance(body, dict):
            raise ValueError("overlay: body must be a JSON object")
        unknown = set(body) - {"parent", "children", "root", "epoch", "controller", "to",
                               "keys"}
        if unknown:
            raise ValueError(f"overlay: unknown field '{sorted(unknown)[0]}'")
        epoch = body.get("epoch")
        if not isinstance(epoch, int) or not is_count(epoch) or epoch > 2 ** 53:
            raise ValueError("overlay: field 'epoch' must be an integer from 0 to 2^53")
        parent = body.get("parent")
        parent = None if parent is None else parse_peer(parent, "parent")
        children = body.get("children", [])
        if not isinstance(children, list):
            raise ValueError("overlay: field 'children' must be a list")
        kids = [parse_peer(c, f"children[{i}]") for i, c in enumerate(children)]
        if len({k.name for k in kids}) != len(kids):
            raise ValueError("overlay: field 'children' names a child twice")
        root = body.get("root", False)
        if not isinstance(root, bool):
            raise ValueError("overlay: field 'root' must be a boolean")
        controller = body.get("controller")
        if controller is not None and not is_url(controller):
            raise ValueError("overlay: field 'controller' must be an http(s) URL")
        keys = body.get("keys", {})
        if not isinstance(keys, dict) or len(keys) > len(kids) + 1:
            raise ValueError("overlay: field 'keys' must be an object with one entry per "
                             "parent or child")
        peers = {p.name: p for p in [*([parent] if parent else []), *kids]}
        creds = {}
        for peer_name, cred in keys.items():
            if peer_name not in peers:
                raise ValueError(f"overlay: field 'keys' names {str(peer_name)[:64]!r}, "
                                 "neither the parent nor a child")
            creds[peer_name] = check_credential(cred, f"keys.{peer_name}")
        to = body.get("to")
        if to is not None and to != self.name:
            # a placement made for another agent (a replay): never adopted
            log.warning("overlay: refused a placement addressed to %r (this agent is %s)",
                        to, self.name)
            raise StaleEpoch(f"overlay: placement is addressed to {to!r}, not to {self.name}")
        with self._lock:
            if epoch < self.epoch:
                raise StaleEpoch(f"overlay: stale epoch {epoch} < current {self.epoch}")
            if epoch == self.epoch and epoch > 0 and (
                    parent, kids, root) != (self.parent, list(self.children), self.root):
                log.warning("overlay: refused a second, different placement at epoch %d", epoch)
                raise StaleEpoch(f"overlay: epoch {epoch} already holds another placement")
            old = set(self.children)
            st = self.state
            st.parent, st.children, st.root, st.epoch = parent, kids, root, epoch
            if controller is not None:
                st.controller = controller.rstrip("/")
            if self.keyring is not None:
                if controller is not None:
                    self.keyring.add_controller(controller)
                for peer_name, cred in creds.items():
                    self.keyring.learn(peer_name, peers[peer_name].url, cred)
            new_kids = [k for k in kids if k not in old]
            tasks = list(self.tasks.values())
            names = {k.name for k in kids}
            for state in self.tasks.values():
                state.latest_child = {n: r for n, r in state.latest_child.items() if n in names}
        if new_kids and tasks:
            self.runner.submit(lambda: self.fanout.push_tasks(new_kids, tasks))
        return {"epoch": epoch, "parent": parent.name if parent else None,
                "children": [k.name for k in kids], "root": root}

    def overlay(self) -> dict:
        """The current placement, for health/debug endpoints."""
        return {"epoch": self.epoch, "root": self.root,
                "parent": self.parent.__dict__ if self.parent else None,
                "children": [k.__dict__ for k in self.children],
                "controller": self.controller, "tasks": sorted(self.tasks),
                "height": self.height(), "stats": dict(self.stats),
                "deadline_margin_s": self.margin_summary(),
                "report_timing_s": self.timing_summary()}

    def margin_summary(self) -> dict:
        """Minimum, 5th percentile and median of the recent deadline margins, overall and
        per child subtree height (``by_height``, with the number of ``late`` reports)."""
        with self._lock:
            margins = list(self.margins)
        out = _spread([m for _, m in margins])
        heights = sorted({h for h, _ in margins})
        if heights:
            out["by_height"] = {str(h): _spread([m for g, m in margins if g == h])
                                for h in heights}
        return out

    def timing_summary(self) -> dict:
        """When this node's recent reports went up, relative to their interval end: the
        own snapshot done, the POST started and answered (median and maximum)."""
        with self._lock:
            rows = list(self.timings)
        out: dict[str, Any] = {"reports": len(rows)}
        for name, value in (("snapshot_done", lambda r: r["snapshot_done"]),
                            ("post_at", lambda r: r["post_at"]),
                            ("answered_at", lambda r: r["post_at"] + r["post_s"])):
            values = sorted(v for r in rows if math.isfinite(v := value(r)))
            if values:
                out[name] = {"p50": values[len(values) // 2], "max": values[-1]}
        return out

    # ------------------------------------------------------------ up

    def receive_report(self, body: Any) -> dict:
        """Store a child's subtree report; send ours at once if complete."""
        body = validate_report(body, self.check)
        end = body["interval_end"]
        sender = body["from"]
        now = self.now()
        with self._lock:
            if sender not in {k.name for k in self.children}:
                raise NotAChild(f"report: '{sender}' is not a child of {self.name}")
            state = self.tasks.get(body["task_id"])
            if state is None:
                raise UnknownTask(f"report: unknown task '{body['task_id']}'")
            self.stats["reports_received"] += 1
            self.state.delay[sender] = max(0.0, now - float(end))
            prev = state.latest_child.get(sender)
            if prev is None or prev["interval_end"] <= end:
                state.latest_child[sender] = body
            if end <= state.finalised_upto:
                self.stats["late_reports"] += 1
                if end in state.closed:
                    self.margins.append((int(body.get("height", 0)),
                                         round(state.closed[end] - now, 4)))
                return {"accepted": True, "late": True}
            pending = state.pending.setdefault(end, Pending(end))
            pending.children[sender] = body
            pending.arrived[sender] = now
            state.silent.pop(sender, None)
        # merging and sending up is background work: the child's request is answered now,
        # so a busy parent does not make its children's reports time out
        self.runner.submit(lambda: self._advance(state, self.now()))
        return {"accepted": True, "late": False}

    def tick(self, now: float | None = None) -> list[dict]:
        """Start due intervals and send every report that is ready."""
        now = self.now() if now is None else now
        sent: list[dict] = []
        with self._lock:
            states = [s for s in self.tasks.values() if s.reporting]
        # every due task's own snapshot first, all with this ``now`` (one reading of the
        # capture rules serves them all), then the merges: the last task's snapshot is
        # not held back behind the other tasks' merges and sends
        for state in states:
            pending = self._start(state, now)
            if pending is not None:
                self._take_own(state, pending, now)
                self.pause()  # under eventlet: let children's reports in between
        for state in states:
            sent.extend(self._advance(state, now))
            self.pause()
        return sent

    def next_wakeup(self, now: float) -> float:
        """Seconds until the next interval end or deadline (for the tick loop)."""
        best = math.inf
        with self._lock:
            for s in self.tasks.values():
                if not s.reporting:
                    continue
                best = min(best, (math.floor(now / s.interval) + 1) * s.interval)
                for p in s.pending.values():
                    if math.isfinite(p.started):
                        best = min(best, self._deadline(p, self._wait(s)))
        return max(0.0, best - now) if best < math.inf else 1.0

    def height(self) -> int:
        """Subtree height as learnt from the children's reports."""
        return self.state.height()

    def _wait(self, state: TaskState) -> float:
        """How long after an interval end (at the root: after its own snapshot) to wait
        for the children's reports.

        One ``level_wait`` per level below, or longer when the children have
        been slower than that lately (1.5 x their last delay), or the whole
        cap while a child has never reported (its subtree height is unknown);
        never more than the cap of this node's height (module docstring).
        """
        height = self.height()
        cap = self.max_wait * state.interval
        if not self.root:
            cap *= 1.0 - LEVEL_SHARE ** max(height, 1)
        with self._lock:
            kids = [k.name for k in self.children]
            if any(k not in self.state.delay for k in kids):
                return cap
            slowest = max((self.state.delay[k] for k in kids), default=0.0)
        return min(max(height * self.level_wait, 1.5 * slowest), cap)

    def _deadline(self, p: Pending, wait: float) -> float:
        """When this node stops waiting for children's reports for ``p`` (``_wait``):
        relative to the own snapshot at the root; below it, relative to the interval
        end, but never less than one ``level_wait`` per level after the own snapshot
        (a node that woke late, as its children did, still gives them that)."""
        if self.root:
            return p.started + wait
        return max(p.end + wait, p.started + min(wait, self.height() * self.level_wait))

    def _advance(self, state: TaskState, now: float) -> list[dict]:
        """Take the own snapshot for a new interval; finalise what is ready."""
        started = self._start(state, now)
        if started is not None:
            self._take_own(state, started, now)
        ready: list[Pending] = []
        with self._lock:
            if self.tasks.get(state.task_id) is not state:
                return []
            kids = {k.name for k in self.children}
            deadline_wait = self._wait(state)
            for p_end in sorted(state.pending):
                p = state.pending[p_end]
                if p_end > state.last_started or p.taking:
                    continue  # a child is ahead of our clock, or our snapshot is not in
                complete = kids <= set(p.children)
                deadline = self._deadline(p, deadline_wait)
                if complete or now >= deadline or p_end < state.last_started:
                    ready.append(state.pending.pop(p_end))
                    state.finalised_upto = max(state.finalised_upto, p_end)
                    if not math.isfinite(p.started):
                        continue  # an interval this node never started (it skipped it)
                    for name, at in p.arrived.items():  # how long before the deadline
                        self.margins.append((int(p.children[name].get("height", 0)),
                                             round(deadline - at, 4)))
                    state.closed[p_end] = deadline
                    for old in sorted(state.closed)[:-CLOSED_KEPT]:
                        del state.closed[old]
        reports = []
        for p in ready:
            t0 = time.monotonic()
            rep = self._finalise(state, p, now)
            timing = {"task": state.task_id, "end": p.end, "height": rep["height"],
                      "snapshot_at": round(p.started - p.end, 4),
                      "snapshot_s": round(p.snapshot_s, 4),
                      "snapshot_done": round(p.snapshot_done - p.end, 4),
                      "deadline": round(self._deadline(p, deadline_wait) - p.end, 4),
                      "children": len(p.children), "expected": len(kids),
                      "finalise_s": round(time.monotonic() - t0, 4)}
            reports.append(rep)
            self._send_up(state, rep, timing)
        return reports

    def _start(self, state: TaskState, now: float) -> Pending | None:
        """The interval ``now`` is in, if it is new for ``state``: its own snapshot is
        then to be taken (``_take_own``); else None."""
        with self._lock:
            if self.tasks.get(state.task_id) is not state:
                return None
            end = math.floor(now / state.interval) * state.interval
            if end <= state.last_started:
                return None
            state.last_started = end
            pending = state.pending.setdefault(end, Pending(end))
            pending.started, pending.taking = now, True
            return pending

    def _take_own(self, state: TaskState, pending: Pending, now: float) -> None:
        """Take the own snapshot of a started interval, outside the node's lock (the
        children's reports are received meanwhile)."""
        t0 = time.monotonic()
        try:
            self._own_snapshot(state, pending, now)
        finally:
            with self._lock:
                pending.snapshot_s = time.monotonic() - t0
                pending.snapshot_done = self.now()
                pending.taking = False

    def _own_snapshot(self, state: TaskState, pending: Pending, now: float) -> None:
        if not state.installed:
            pending.own_error = "not installed"
            return
        try:
            own = self._snapshot(state.task_id, now)
        except Exception as exc:  # noqa: BLE001 - the agent is then listed missing
            pending.own_error = str(exc)
            log.warning("snapshot of %s failed: %s", state.task_id, exc)
            return
        if isinstance(own, dict) and "key" in own and state.task_id not in self.legacy:
            try:  # the interval's own figures, against this agent's previous snapshot
                own["interval"], state.mark = interval.section(state.mark, own, now)
            except (ValueError, KeyError) as exc:
                log.warning("interval of %s not computed: %s", state.task_id, exc)
        pending.own = own

    def _snapshot(self, task_id: str, now: float) -> dict:
        """This agent's own snapshot of a task (or of a shared legacy counter)."""
        if task_id in self.legacy:
            own = self.agent.snapshot(*self.legacy[task_id], now)
        else:
            own = self.agent.snapshot_task(task_id, now)
        if isinstance(own, dict) and own.get("missed", {}) is None:
            own["missed"] = {}  # no capture rules: nothing known to be missed
        return own

    def _finalise(self, state: TaskState, p: Pending, now: float) -> dict:
        """Merge own + children into one subtree report for interval ``p.end``."""
        with self._lock:
            kids = [k.name for k in self.children]
            for name in kids:
                if name in p.children:
                    state.silent.pop(name, None)
                else:
                    state.silent[name] = state.silent.get(name, 0) + 1
            repush = [k for k in self.children
                      if state.silent.get(k.name, 0) >= self.repush_after]
            for k in repush:
                state.silent[k.name] = 0
            height = self.height()
        parts: list[tuple[str, dict, list[str]]] = []  # (from, snapshot, its agents)
        missing: list[str] = []
        per_host: dict[str, dict] = {}
        if p.own is not None:
            parts.append((self.name, p.own, [self.name]))
            per_host[self.name] = host_summary(p.own, now, self.per_host_top,
                                               state.task.kind)
            try:
                per_host[self.name]["monitor"] = self.agent.cost()
            except Exception as exc:  # noqa: BLE001 - a report goes out without it
                log.warning("monitor cost unavailable: %s", exc)
            with self._lock:
                state.summaries.append((p.end, per_host[self.name]))
        elif self.state.in_scope(state.task):
            missing.append(self.name)
        carried: dict[str, float] = {}
        times = [v["generated_at"] for v in per_host.values()
                 if isinstance(v.get("generated_at"), int | float)]
        for name in kids:
            rep = p.children.get(name)
            if rep is None:
                missing.append(name)
                missing.extend(self.state.known_subtree(name))
                last = state.latest_child.get(name)
                if last is not None and last.get("snapshot"):
                    # its last state is carried (cumulative figures do not dip) but not
                    # its last interval's figures, and its agents stay missing
                    snap = {k: v for k, v in last["snapshot"].items() if k != "interval"}
                    parts.append((name, snap, []))
                    carried.update(dict.fromkeys(last["covered"], last["interval_end"]))
                continue
            parts.append((name, rep["snapshot"], list(rep["covered"])))
            missing.extend(rep["missing"])
            carried.update(rep.get("carried") or {})
            if isinstance(rep.get("oldest"), int | float):
                times.append(rep["oldest"])
        if not kids and not self.root and len(parts) == 1:
            # a leaf: its own snapshot goes up as it is (the parent checks it and merges
            # it with the others); merging one part costs a quarter of a leaf's CPU per
            # interval with a dozen tasks, for nothing
            snapshot: dict | None = dict(parts[0][1])
            errors: dict[str, str] = {}
        else:
            snapshot, errors = merge_parts(self.merge, parts)
        covered = sorted({h for name, _, hosts in parts if name not in errors for h in hosts})
        for name, _, hosts in parts:
            if name in errors:
                missing.extend(hosts)
                for h in hosts:
                    per_host.pop(h, None)
        missing = sorted(set(missing) - set(covered))
        oldest = min(times) if times else None
        if snapshot is not None:
            snapshot.update(covered=covered, missing=missing, oldest=oldest, generated_at=now)
        report = {"task_id": state.task_id, "epoch": self.epoch, "from": self.name,
                  "interval_end": p.end, "generated_at": now, "height": height,
                  "kind": state.task.kind, "scan_ports": state.task.scan_ports,
                  "snapshot": snapshot, "covered": covered, "missing": missing,
                  "oldest": oldest, "per_host": per_host}
        if p.own is None and p.own_error and self.state.in_scope(state.task):
            errors[self.name] = p.own_error
        if errors:
            report["errors"] = errors
        carried = {h: t for h, t in carried.items() if h in missing}
        if carried:
            report["carried"] = carried
        if repush:
            self.runner.submit(lambda: self.fanout.push_tasks(repush, [state]))
        return report

    def _send_up(self, state: TaskState, report: dict, timing: dict | None = None) -> None:
        with self._lock:
            if self.root and not state.upward:
                return  # a legacy counter shared by this root: its home is here
            if self.root and self.controller:
                url = f"{self.controller}/measure/v1/reports"
                report = bound_report(report)
            elif self.parent is not None:
                url = f"{self.parent.url}/agent/v1/reports"
            else:
                return  # not placed in a tree yet: keep the report locally only

        def send() -> None:
            t0 = time.monotonic()
            queued = self.now() - report["interval_end"]
            try:
                code, body = self.http.request("POST", url, json=report,
                                               timeout=max(self.forward_budget,
                                                           state.interval))
                ok = code // 100 == 2
            except OSError as exc:  # no answer: the next interval tries again
                ok, body = False, str(exc)
            with self._lock:
                self.stats["reports_sent"] += 1
                if not ok:
                    self.stats["send_errors"] += 1
            if timing is not None:
                timing.update(post_at=round(queued, 4), post_s=round(time.monotonic() - t0, 4),
                              ok=ok)
                self.timings.append(timing)
                log.info("report timing %s", json.dumps(timing, separators=(",", ":")))
            if not ok:
                log.warning("report %s to %s failed: %s", report["task_id"], url, body)

        self.runner.submit(send)

    # ------------------------------------------------------------ heartbeats

    def receive_beats(self, body: Any) -> dict:
        """A child's heartbeat with its subtree's (``POST /agent/v1/heartbeats``)."""
        return self.beats.receive(body, self.now(), self.state.child_names())

    def beat_body(self, version: str, monitor: dict | None) -> dict:
        """The heartbeat for this node's parent: itself and its live subtree."""
        return self.beats.body(self.name, version, monitor, self.now(),
                               self.state.child_names())

    def subtree_beats(self) -> dict[str, dict]:
        """The live agents below this node (a root's heartbeat to the controller)."""
        return self.beats.subtree(self.now(), self.state.child_names())

    # ------------------------------------------------------------ queries

    def host_lines(self, task_id: str, name: str, limit: int = 1) -> list[dict]:
        """The per-host lines of agent ``name`` for a task, newest first: this agent's
        own last ``limit``, or a child's last one (from its last report)."""
        with self._lock:
            state = self.tasks.get(task_id)
            if state is None:
                raise UnknownTask(f"unknown task '{task_id}'")
            if name == self.name:
                lines = list(state.summaries)[::-1][:max(1, limit)]
            else:
                rep = state.latest_child.get(name)
                line = (rep or {}).get("per_host", {}).get(name)
                if line is None:
                    raise UnknownHost(f"no per-host line of '{name}' for task '{task_id}' "
                                      f"at {self.name}")
                lines = [(rep["interval_end"], line)]  # type: ignore[index]
        return [{"interval_end": end, **line} for end, line in lines]

    def global_snapshot(self, task_id: str, now: float | None = None) -> dict | None:
        """Own current snapshot merged with each child's latest subtree report."""
        now = self.now() if now is None else now
        with self._lock:
            state = self.tasks.get(task_id)
            if state is None:
                return None
            children = [state.latest_child.get(k.name) for k in self.children]
            kid_names = [k.name for k in self.children]
        parts: list[tuple[str, dict, list[str]]] = []
        missing: list[str] = []
        if state.installed:
            try:
                parts.append((self.name, self._snapshot(task_id, now), [self.name]))
            except Exception as exc:  # noqa: BLE001 - one snapshot must not stop the merge
                log.warning("snapshot of %s for the subtree failed: %r", task_id, exc)
                missing.append(self.name)
        for name, rep in zip(kid_names, children, strict=True):
            if rep is None:
                missing.append(name)
                continue
            parts.append((name, rep["snapshot"], list(rep["covered"])))
            missing.extend(rep["missing"])
        merged, errors = merge_parts(self.merge, parts)
        covered = {h for name, _, hosts in parts if name not in errors for h in hosts}
        missing.extend(h for name, _, hosts in parts if name in errors for h in hosts)
        if merged is not None:
            merged.update(covered=sorted(covered), missing=sorted(set(missing) - covered))
        return merged
