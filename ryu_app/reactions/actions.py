"""Actions: the controller's reactions to events, kept, capped, expired and re-installed.

Plain module (no Ryu import). ``ActionManager.react`` takes the events one
report raised (and the task's result, for ``threshold``), asks
``reactions.plan`` what each matching ``on:`` entry does, and

- in ``enforce`` mode stores an action (SQLite ``actions`` table, status
  ``active``) and queues OpenFlow operations (``Install``, ``Remove``,
  ``MeterAdd``, ``MeterDelete``) that the Ryu shim drains with ``drain()``;
- in ``dry_run`` mode stores what it would have done (status ``dry_run``) and
  queues nothing;
- for ``notify`` POSTs the event to the URL, signed (below), off the caller's
  thread.

Every outcome is an event of kind ``action`` (``state``: ``taken``,
``extended``, ``dry_run``, ``refused``, ``sent``, ``failed``, ``expired``,
``lifted``) with the action id and the cause event's id.

Safety: at most ``max_active`` enforced actions at once and ``max_new`` new
ones per minute (more are refused, not queued); the same task, reaction and
target while active extends the one action (new expiry, flows re-sent with
the new hard timeout). Flows carry cookie ``REACTION_COOKIE | id`` and a hard
timeout, so a switch drops them on time even without the controller; after a
controller restart or a switch reconnect ``on_switch`` re-installs the active
actions of that switch with their *remaining* time (they end at the original
expiry). ``tick`` marks expired actions and removes their flows and meters;
deleting a task or ``DELETE actions/{id}`` lifts them at once.

Webhook signature: header ``X-Measure-Timestamp: T`` and
``X-Measure-Signature: sha256=HEX`` where HEX is HMAC-SHA256 of
``T + "." + body`` with the webhook secret (``MEASURE_WEBHOOK_SECRET_FILE``,
default ``webhook.secret`` in the state directory, created when missing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from measure_common.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER
from measure_common.settings import DEFAULTS, get_setting
from measure_model.reaction_rows import NETWORK_ACTIONS
from measure_model.task import Task
from ryu_app.net.topology import Topology
from ryu_app.reactions.plan import (
    REACTION_COOKIE,
    ActionPlan,
    FlowSpec,
    MeterSpec,
    Refused,
    is_protected,
    meter_for,
    plan,
    protected_networks,
    threshold_crossings,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_ACTIVE: int = DEFAULTS["MEASURE_MAX_ACTIONS"]
DEFAULT_MAX_NEW_PER_MINUTE: int = DEFAULTS["MEASURE_MAX_ACTIONS_PER_MINUTE"]
WEBHOOK_TIMEOUT = 5.0
LIVE = ("active", "dry_run")


class UnknownHost(ValueError):
    """A task names a tap or protected host the controller does not know (404)."""


class ProtectedTarget(ValueError):
    """A task would act on a protected host (409: it conflicts with the protect list)."""


@dataclass(frozen=True)
class Install:
    """Add (or replace) ``flow`` with ``cookie`` and ``hard_timeout`` seconds."""

    flow: FlowSpec
    cookie: int
    hard_timeout: int


@dataclass(frozen=True)
class Remove:
    """Delete the flows with ``cookie`` (exact) on ``dpid``."""

    dpid: int
    cookie: int


@dataclass(frozen=True)
class MeterAdd:
    meter: MeterSpec


@dataclass(frozen=True)
class MeterDelete:
    dpid: int
    meter_id: int


@dataclass(frozen=True)
class Reroute:
    """Route unicast around ``links`` (switch pairs: the live ``avoid_link`` actions'); the
    shim sets them on the topology and, when that changed anything, rewrites only the
    forwarding flows whose next hop changed (``Forwarding.reroute``)."""

    links: frozenset


Op = Install | Remove | MeterAdd | MeterDelete | Reroute


def op_dpid(op: Op) -> int:
    """The switch an operation is for."""
    if isinstance(op, Install):
        return op.flow.dpid
    if isinstance(op, MeterAdd):
        return op.meter.dpid
    if isinstance(op, Reroute):
        return -1  # every switch
    return op.dpid


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=HEX`` of ``timestamp.body`` (what a receiver recomputes)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"



def action_rows(store: Any, limit: int = 1000) -> list[dict[str, Any]]:
    """The stored actions as ``GET actions`` lists them: newest first, without the
    ``flows`` and ``ident`` internals."""
    return [{k: v for k, v in row.items() if k not in ("flows", "ident")}
            for row in store.actions(limit)]

class ActionManager:
    """Actions of the controller (see the module docstring)."""

    def __init__(self, store: Any, topology: Topology, resolve: Callable[[str], str | None],
                 now: Callable[[], float], secret: bytes | None = None,
                 post: Callable[[str, bytes, dict], int] | None = None,
                 spawn: Callable[[Callable[[], None]], None] | None = None,
                 protect: tuple[str, ...] = (), max_active: int = DEFAULT_MAX_ACTIVE,
                 max_new_per_minute: int = DEFAULT_MAX_NEW_PER_MINUTE,
                 locate: Callable[[str], Any] | None = None,
                 vouch: Callable[[str], str | None] | None = None) -> None:
        self.store = store
        #: src ip -> a reason not to act on it (None: it passes the source guard)
        self.vouch = vouch
        #: ip -> attachment point (``topology.Host``) or None
        self.locate = locate or topology.host_by_ip
        self.topology = topology
        self.resolve = resolve
        self.now = now
        self.secret = secret or b""
        self.post = post or _post
        self.spawn = spawn or (lambda fn: fn())
        self.protect = tuple(protect)
        self.max_active = max_active
        self.max_new = max_new_per_minute
        self._lock = threading.RLock()
        self._ops: list[Op] = []
        self._created: deque[float] = deque()
        self._over: dict[tuple[str, int], set[str]] = {}
        #: set by the service: wakes the Ryu ticker so queued operations go out now
        self.wake: Callable[[], None] | None = None
        self.live: dict[int, dict[str, Any]] = {
            row["id"]: row for row in store.actions() if row.get("status") in LIVE}
        if self.avoided_links():  # after a restart: route around them again
            self._ops.append(Reroute(self.avoided_links()))

    # ------------------------------------------------------------ validation

    def check_task(self, task: Task) -> None:
        """Raise ``UnknownHost`` or ``ProtectedTarget`` naming the field when a task's
        ``on:`` cannot work here (the task itself is valid: that is the task table's)."""
        for name in task.protect or ():
            if "/" not in name and self._ip_of(name) is None:
                raise UnknownHost(f"task {task.name}: protect host '{name}' is not a known "
                                 "agent, host or address")
        nets = self._protected(task)
        for i, r in enumerate(task.on or ()):
            if r.action == "mirror" and self._ip_of(r.to or "") is None:
                # located or not yet: a tap without an attachment point when the event
                # comes is refused then (and recorded)
                raise UnknownHost(f"task {task.name}: on[{i}].to '{r.to}' is not a known "
                                  "agent, host or address")
            if r.action in NETWORK_ACTIONS and r.action != "mirror" and task.filter is not None:
                for side in ("src", "dst"):
                    value = getattr(task.filter, side)
                    if value and "/" not in value and is_protected(value, nets):
                        raise ProtectedTarget(f"task {task.name}: on[{i}].action {r.action} "
                                         f"targets filter.{side} {value}, a protected host")

    def _ip_of(self, name: str) -> str | None:
        try:
            import ipaddress

            return str(ipaddress.ip_address(name))
        except ValueError:
            return self.resolve(name)

    def _protected(self, task: Task) -> list:
        return protected_networks((*self.protect, *(task.protect or ())), self._ip_of)

    # ------------------------------------------------------------ reacting

    def react(self, task_id: str, task: Task, events: list[dict[str, Any]],
              result: dict[str, Any] | None = None) -> list[int]:
        """Act on one report's events; returns the ids of the events recorded."""
        if not task.on:
            return []
        now = self.now()
        out: list[int] = []
        for index, reaction in enumerate(task.on):
            if reaction.event == "threshold":
                if result is None:
                    continue
                seen = self._over.setdefault((task_id, index), set())
                crossed = threshold_crossings(result, seen, reaction.above or 1)
                counts = (result.get("window") or {}).get("counts") or {}
                seen.intersection_update(k for k, v in counts.items()
                                         if v >= (reaction.above or 1))
                seen.update(crossed)
                todo = []
                for key, value in crossed.items():
                    payload = {"key": key, "value": value, "above": reaction.above,
                               "interval_end": result.get("interval_end")}
                    eid = self.store.add_event(now, task_id, "threshold", payload)
                    out.append(eid)
                    todo.append({**payload, "id": eid, "kind": "threshold", "task_id": task_id})
            else:
                todo = [e for e in events if e.get("kind") == reaction.event]
            for event in todo:
                out += self._one(task_id, task, index, event, now)
        if self._ops and self.wake is not None:
            self.wake()
        return out

    def _record(self, now: float, task_id: str, state: str, row: dict[str, Any],
                **extra: Any) -> int:
        payload = {"state": state, "action_id": row.get("id"), "action": row.get("action"),
                   "cause": row.get("cause"), "target": row.get("target"),
                   "mode": row.get("mode"), "expires": row.get("expires"), **extra}
        return self.store.add_event(now, task_id, "action", payload)

    def _one(self, task_id: str, task: Task, index: int, event: dict[str, Any],
             now: float) -> list[int]:
        reaction = (task.on or ())[index]
        stub = {"action": reaction.action, "cause": event.get("id"), "mode": reaction.mode,
                "target": event.get("src") or event.get("key") or event.get("name")}
        tap = None
        if reaction.action == "mirror":
            ip = self._ip_of(reaction.to or "")
            tap = self.locate(ip) if ip else None
        try:
            p = plan(task_id, task, index, reaction, event, self.topology,
                     self._protected(task), tap, self.locate, self.avoided_links(),
                     self.vouch)
        except Refused as exc:
            log.info("task %s: %s for event %s refused: %s", task_id, reaction.action,
                     event.get("id"), exc)
            return [self._record(now, task_id, "refused", stub, reason=str(exc))]
        with self._lock:
            same = next((r for r in self.live.values() if r["ident"] == p.ident), None)
            if same is not None:
                return [self._extend(same, p, event, now)]
            if p.action == "notify":
                return self._notify(task, p, event, now)
            if p.mode == "enforce":
                reason = self._over_limits(now)
                if reason:
                    return [self._record(now, task_id, "refused", stub, reason=reason)]
                self._created.append(now)
            row = self._new_row(p, event, now)
            row["id"] = self.store.add_action(task_id, row["status"], row)
            self.live[row["id"]] = row
            if p.mode == "enforce":
                self._install(row, now)
            return [self._record(now, task_id, "taken" if p.mode == "enforce" else "dry_run",
                                 row, event=event.get("kind"), dpid=row["dpid"],
                                 match=row["match"])]

    def _over_limits(self, now: float) -> str | None:
        while self._created and now - self._created[0] >= 60.0:
            self._created.popleft()
        active = sum(1 for r in self.live.values() if r["status"] == "active")
        if active >= self.max_active:
            return f"{active} actions are active, the cap is {self.max_active}"
        if len(self._created) >= self.max_new:
            return f"{len(self._created)} actions were taken in the last minute, the cap is " \
                   f"{self.max_new}"
        return None

    def _new_row(self, p: ActionPlan, event: dict[str, Any], now: float) -> dict[str, Any]:
        return {"ident": p.ident, "task_id": p.task_id, "action": p.action, "mode": p.mode,
                "status": "active" if p.mode == "enforce" else "dry_run",
                "target": p.target, "cause": event.get("id"), "event": event.get("kind"),
                "created": now, "expires": now + p.duration if p.duration else None,
                "duration": p.duration, "extended": 0, "dpid": p.dpid, "match": p.match,
                "flows": [f.to_dict() for f in p.flows], "mbit": p.mbit, **p.detail}

    def _extend(self, row: dict[str, Any], p: ActionPlan, event: dict[str, Any],
                now: float) -> int:
        row["expires"] = now + p.duration if p.duration else row["expires"]
        row["extended"] += 1
        row["last_cause"] = event.get("id")
        if row["status"] == "active":
            self._install(row, now)
        self.store.update_action(row["id"], row["status"], row)
        return self._record(now, row["task_id"], "extended", row, event=event.get("kind"))

    # ------------------------------------------------------------ OpenFlow operations

    def _ops_for(self, row: dict[str, Any], now: float) -> list[Op]:
        remaining = 0 if row["expires"] is None else math.ceil(row["expires"] - now)
        if row["expires"] is not None and remaining <= 0:
            return []
        cookie = REACTION_COOKIE | row["id"]
        ops: list[Op] = []
        meter_id = (row["id"] % 200_000) + 1
        for obj in row["flows"]:
            flow = FlowSpec.from_dict(obj)
            if flow.meter is not None:
                ops.append(MeterAdd(meter_for(flow.dpid, meter_id, row["mbit"])))
                flow = FlowSpec(**{**flow.__dict__, "meter": meter_id})
            ops.append(Install(flow, cookie, min(65535, remaining)))
        return ops

    def _install(self, row: dict[str, Any], now: float) -> None:
        self._ops += self._ops_for(row, now)
        if row["action"] == "avoid_link":
            self._ops.append(Reroute(self.avoided_links()))

    def avoided_links(self) -> frozenset:
        """The switch links (frozensets of two dpids) live avoid_link actions avoid."""
        return frozenset(frozenset(r["avoid"]) for r in self.live.values()
                         if r["action"] == "avoid_link" and r["status"] == "active")

    def _uninstall(self, row: dict[str, Any]) -> None:
        dpids = sorted({int(f["dpid"]) for f in row["flows"]})
        self._ops += [Remove(d, REACTION_COOKIE | row["id"]) for d in dpids]
        if row.get("mbit") is not None:
            self._ops += [MeterDelete(d, (row["id"] % 200_000) + 1) for d in dpids]

    def drain(self) -> list[Op]:
        """The operations queued since the last call (for the Ryu shim)."""
        with self._lock:
            ops, self._ops = self._ops, []
        return ops

    def on_switch(self, dpid: int) -> list[Op]:
        """Operations that re-install the active actions of a (re)connected switch."""
        now = self.now()
        with self._lock:
            ops = []
            for row in self.live.values():
                if row["status"] == "active":
                    ops += [op for op in self._ops_for(row, now) if op_dpid(op) == dpid]
        return ops

    # ------------------------------------------------------------ ending

    def tick(self, now: float) -> None:
        """Expire actions whose time is up (the switch drops the flows by itself)."""
        with self._lock:
            due = [r for r in self.live.values()
                   if r["expires"] is not None and r["expires"] <= now]
            for row in due:
                self._end(row, "expired", now)
        if due and self.wake is not None:
            self.wake()

    def _end(self, row: dict[str, Any], status: str, now: float, **extra: Any) -> int:
        was_active = row["status"] == "active"
        if was_active:
            self._uninstall(row)
        row["status"] = status
        row["ended"] = now
        self.live.pop(row["id"], None)
        if was_active and row["action"] == "avoid_link":  # the paths come back
            self._ops.append(Reroute(self.avoided_links()))
        self.store.update_action(row["id"], status, row)
        return self._record(now, row["task_id"], status, row, **extra)

    def lift(self, action_id: int, reason: str = "deleted") -> dict[str, Any] | None:
        """End one live action now; None if there is no live action with that id."""
        with self._lock:
            row = self.live.get(action_id)
            if row is None:
                return None
            self._end(row, "lifted", self.now(), reason=reason)
        if self.wake is not None:
            self.wake()
        return row

    def lift_task(self, task_id: str) -> int:
        """End every live action of a deleted task; returns how many."""
        with self._lock:
            rows = [r for r in self.live.values() if r["task_id"] == task_id]
            for row in rows:
                self._end(row, "lifted", self.now(), reason="task deleted")
            self._over = {k: v for k, v in self._over.items() if k[0] != task_id}
        if rows and self.wake is not None:
            self.wake()
        return len(rows)

    def list_actions(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Live and past actions, newest first (``flows`` left out: see ``match``)."""
        return action_rows(self.store, limit)

    def get(self, action_id: int) -> dict[str, Any] | None:
        return next((r for r in self.list_actions() if r["id"] == action_id), None)

    # ------------------------------------------------------------ notify

    def _notify(self, task: Task, p: ActionPlan, event: dict[str, Any], now: float) -> list[int]:
        row = self._new_row(p, event, now)
        row.update(status="sending" if p.mode == "enforce" else "dry_run", url=p.url,
                   expires=None)
        row["id"] = self.store.add_action(p.task_id, row["status"], row)
        if p.mode == "dry_run":
            row["status"] = "would_send"
            self.store.update_action(row["id"], row["status"], row)
            return [self._record(now, p.task_id, "dry_run", row, url=p.url)]
        body = json.dumps({"task_id": p.task_id, "task": task.name, "action_id": row["id"],
                           "event": event}, sort_keys=True).encode()

        def send() -> None:
            ts = str(int(self.now()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts,
                       SIGNATURE_HEADER: webhook_signature(self.secret, ts, body)}
            detail: dict[str, Any]
            try:
                status = self.post(p.url or "", body, headers)
                state = "sent" if 200 <= status < 300 else "failed"
                detail = {"http_status": status}
            except OSError as exc:
                state, detail = "failed", {"reason": f"{type(exc).__name__}: {exc}"[:200]}
            row.update(status=state, **detail)
            self.store.update_action(row["id"], state, row)
            self._record(self.now(), p.task_id, state, row, url=p.url, **detail)

        self.spawn(send)
        return []


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST with ``requests``; connection problems become OSError.

    Not ``measure_common.httpclient``: a webhook receiver is not one of our
    processes, and its signature covers these exact body bytes."""
    import requests

    try:
        return requests.post(url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT,
                             allow_redirects=False).status_code
    except requests.RequestException as exc:
        raise OSError(str(exc)) from None


def manager_from_env(store: Any, topology: Topology, resolve: Callable[[str], str | None],
                     state_dir: str, now: Callable[[], float],
                     spawn: Callable[[Callable[[], None]], None] | None = None,
                     env: dict[str, str] | None = None,
                     locate: Callable[[str], Any] | None = None,
                     controller_url: str | None = None,
                     vouch: Callable[[str], str | None] | None = None) -> ActionManager:
    """The controller's manager: ``MEASURE_PROTECT`` (comma-separated hosts, addresses or
    prefixes; the management network ``MEASURE_MGMT_NET``, ``MEASURE_GATEWAYS`` and the
    controller's own address are always added, ``controller_url`` defaulting to
    ``MEASURE_CONTROLLER_URL``),
    ``MEASURE_MAX_ACTIONS``, ``MEASURE_MAX_ACTIONS_PER_MINUTE``,
    ``MEASURE_WEBHOOK_SECRET_FILE``."""
    from urllib.parse import urlparse

    from measure_common.auth import load_or_create_secret
    protect = [*get_setting("MEASURE_PROTECT", env), get_setting("MEASURE_MGMT_NET", env),
               *get_setting("MEASURE_GATEWAYS", env)]
    controller = urlparse(controller_url or get_setting("MEASURE_CONTROLLER_URL", env)).hostname
    if controller:
        protect.append(controller)
    secret, _ = load_or_create_secret(
        get_setting("MEASURE_WEBHOOK_SECRET_FILE", env, state_dir=state_dir))

    return ActionManager(store, topology, resolve, now, secret=secret, spawn=spawn,
                         protect=tuple(protect), locate=locate, vouch=vouch,
                         max_active=get_setting("MEASURE_MAX_ACTIONS", env),
                         max_new_per_minute=get_setting("MEASURE_MAX_ACTIONS_PER_MINUTE", env))
