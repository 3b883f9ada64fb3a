"""The controller's measurement service: registry + overlay + tasks + results.

``MeasureService`` is plain Python, driven by three kinds of calls:

- requests from the REST layer (apply/delete tasks, agent registration and
  heartbeats, root reports, bandwidth queries), which change state and
  return JSON-able dicts, raising ``ServiceError`` subclasses that carry
  the HTTP status;
- ``tick(now)`` about once a second from the Ryu app: heartbeat timeouts,
  overlay recomputation, and (re)sending whatever agents have not
  acknowledged yet;
- ``on_topology_changed()`` from the Ryu app, which only sets a flag: the
  overlay is recomputed at the next tick, so OpenFlow event handlers never
  wait for HTTP.

Pushing state to agents (``/agent/v1`` of docs/design.md):

- every live agent gets ``PUT {url}/agent/v1/overlay`` with its parent,
  children, root flag, the overlay ``epoch`` and the controller URL
  whenever the tree changes (a new epoch, persisted so it keeps growing
  across controller restarts) or the agent (re)joins;
- each measurement task goes to the overlay root only, ``PUT
  {root}/agent/v1/tasks/{id}`` with ``Task.to_dict()``; the root installs
  it and forwards it down the tree, and its reply ``{"agents": {name:
  "ok" | "error: ..."}}`` is kept as the task's per-agent status. Tasks go
  again to the root when the root changes or an agent (re)joins;
- ``DELETE {root}/agent/v1/tasks/{id}`` removes a task everywhere.

A REST call never waits for agents: a new or deleted task is stored (the
answer says so), queued (``ryu_app.service.pushes``), and the Ryu app's ticker is
woken at once (``wake``) to push it; without a ticker (unit tests) a
deletion is sent before the call returns and a new task at the next
``tick``. Failed pushes stay queued and are retried at the next tick. HTTP
goes through one ``measure_common.httpclient.Transport`` (``HttpClient``,
signed with the shared secret when one is configured) and fan-out through
one ``measure_common.runner.Runner``. Under Ryu's eventlet hub the sockets
are green, so a slow agent delays only the green thread that talks to it;
no lock is held across HTTP.

Bandwidth requests and the bandwidth tasks of a policy are
``ryu_app.service.bandwidth_jobs``. Failures are loud: ``health()`` (``GET
/measure/v1/health``) reports the tick loop (``ryu_app.service.health``), agents
that did not answer and pushes that keep failing.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import networkx as nx

from measure_common.httpclient import HttpClient, Transport
from measure_common.runner import Runner, default_runner
from measure_common.settings import get_setting
from measure_model import pairs, partial_keys
from measure_model.fields import ID_PATTERN
from measure_model.task import MAX_PROBE_TARGETS, MAX_TASKS, Task
from measure_model.version import __version__
from ryu_app.auth_config import AuthConfig, auth_from_env
from ryu_app.errors import BadRequest, Conflict, NotFound
from ryu_app.net.topology import Topology
from ryu_app.reactions.actions import ProtectedTarget, UnknownHost, manager_from_env
from ryu_app.service.bandwidth_jobs import BandwidthJobs
from ryu_app.service.health import TickerHealth
from ryu_app.service.overlay import Overlay, build_overlay
from ryu_app.service.pathhealth import KIND as PATH_KIND
from ryu_app.service.pathhealth import TCP_KIND, PathHealth, diagnose, tcp_between
from ryu_app.service.pushes import Pushes
from ryu_app.service.reads import StoredReads, scaled
from ryu_app.service.registry import AGENT_FIELDS, DEFAULT_TIMEOUT, Agent, Registry, host_node
from ryu_app.service.results import Results
from ryu_app.service.store import GLOBAL, NameConflict, Store, StoreError
from ryu_app.service.task_record import TaskRecord

log = logging.getLogger(__name__)
_TASK_ID = re.compile(ID_PATTERN)
HOST_FETCH_TIMEOUT = 0.45  # s, per request: ?host= within 1 s (the agent, else its parent)

PARTIAL_RETRY = 10.0


class MeasureService(StoredReads):
    """Agents, overlay, tasks and results of the controller (see module docstring)."""

    def __init__(self, topology: Topology, state_dir: str, now: Callable[[], float] = time.time,
                 http: Transport | None = None, fanout: int | None = None,
                 heartbeat_timeout: float = DEFAULT_TIMEOUT,
                 controller_url: str | None = None, auth: AuthConfig | None = None,
                 runner: Runner | None = None, store: Store | None = None) -> None:
        self.topology = topology
        self.now = now
        self.state_dir = state_dir
        self.store = store if store is not None else Store.in_dir(state_dir)
        self.registry = Registry(heartbeat_timeout)
        # a given argument wins; the environment only fills what was not given
        self.fanout = fanout if fanout is not None else get_setting("MEASURE_FANOUT")
        self.controller_url = (controller_url
                               or get_setting("MEASURE_CONTROLLER_URL")).rstrip("/")
        self.auth = auth if auth is not None else auth_from_env(state_dir)
        self.http: Transport = http if http is not None else HttpClient(self._signer())
        self.runner = runner if runner is not None else default_runner(
            inline_without_eventlet=True)
        self.results = Results(self.store)
        self.results.reason_of = self._missing_reason
        self.pushes = Pushes(self.http, self.runner, now)
        self.pushes.task_body = self._task_body
        self.probe_budget_bps = float(get_setting("MEASURE_PROBE_BUDGET_BPS"))
        self.jobs = BandwidthJobs(self.registry, topology, self.http, self.runner, self.store,
                                  now)
        self.jobs.credential = self.peer_credential
        self.ticker = TickerHealth()
        self.overlay = Overlay(root=None, fanout=self.fanout)
        self.epoch = int(self.store.get_meta("overlay_epoch", "0") or 0)
        self._root_since = self.epoch  # the epoch at which the current root became root
        self.tasks: dict[str, TaskRecord] = {}
        for row in self.store.tasks():
            record = self.tasks[row["id"]] = TaskRecord.from_row(row)
            if record.pushed:  # pushed again: pending until the root acknowledges it
                record.status = "pending"
        self.pushes.tasks = {i for i, r in self.tasks.items() if r.pushed}
        self._topology_dirty = True
        self._joined = False
        #: set by the Ryu app: wakes its ticker so queued pushes go out now
        self.wake: Callable[[], None] | None = None
        self.actions = manager_from_env(self.store, topology, self._data_ip, state_dir, now,
                                        spawn=self.runner.submit, locate=self._locate,
                                        controller_url=self.controller_url,
                                        vouch=self._vouch)
        self.actions.wake = lambda: self.wake() if self.wake is not None else None
        self.pathhealth = PathHealth(topology, self.registry)
        self.results.localize = self.pathhealth.localize
        if self.store.is_shared():
            # a take-over: the agents the last leader knew, as if just heard from (the
            # heartbeats through the tree keep them up, or they go down as usual)
            for fields in self.store.agents():
                self._admit(fields)

    def _signer(self) -> Any:
        """The request signer for agents (None without a secret): a request to an
        agent is signed with that agent's own key and names it as the receiver."""
        if self.auth.secret is None:
            return None
        from measure_common.auth import CONTROLLER, HmacAuth, RoutedAuth, agent_key

        master = self.auth.secret

        def lookup(url: str) -> HmacAuth | None:
            for agent in list(self.registry.agents.values()):
                if url == agent.url or url.startswith(agent.url + "/"):
                    return HmacAuth(agent_key(master, agent.name), sender=CONTROLLER,
                                    receiver=agent.name)
            log.warning("no registered agent at %s: request sent unsigned", url[:200])
            return None

        return RoutedAuth(lookup)

    def peer_credential(self, sender: str, receiver: str) -> dict[str, str] | None:
        """What ``sender`` needs to sign requests to ``receiver`` (None without a secret)."""
        if self.auth.secret is None:
            return None
        from measure_common.auth import peer_credential

        return peer_credential(self.auth.secret, sender, receiver)

    # ------------------------------------------------------------ tasks

    def apply_tasks(self, tasks: list[Task]) -> list[dict[str, str]]:
        """Store validated tasks (all or none) and queue them for the root."""
        names = {r.task.name: i for i, r in self.tasks.items()}
        for task in tasks:
            if task.name in names:
                raise Conflict(f"task name '{task.name}' is already used by task "
                               f"{names[task.name]}; delete it first")
        if len(self.tasks) + len(tasks) > MAX_TASKS:
            raise Conflict(f"at most {MAX_TASKS} tasks; {len(self.tasks)} exist")
        for task in tasks:
            unknown = [h for h in self._scope_refs(task) if self._scope_agent(h) is None]
            if unknown:
                raise NotFound(f"task {task.name}: scope host '{unknown[0]}' is not a known "
                               "agent (name, data address or URL host)")
            try:
                self.actions.check_task(task)
            except UnknownHost as exc:
                raise NotFound(str(exc)) from None
            except ProtectedTarget as exc:
                raise Conflict(str(exc)) from None
            if task.kind == "path_health":
                self._check_probes(task)
        now = self.now()
        try:
            ids = self.store.add_tasks([(t.name, t.to_dict()) for t in tasks], now)
        except NameConflict as exc:
            raise Conflict(str(exc)) from None
        for task_id, task in zip(ids, tasks, strict=True):
            record = self.tasks[task_id] = TaskRecord(task_id, task, now)
            if record.pushed:
                self.pushes.tasks.add(task_id)
        if self.wake is not None:
            self.wake()
        return [{"id": i, "name": t.name} for i, t in zip(ids, tasks, strict=True)]

    # ------------------------------------------------------------ path health

    def _probe_hosts(self) -> dict[str, str]:
        """Live agents with a data address: name -> data address."""
        return {n: a.data_ip for n, a in self.registry.live().items() if a.data_ip}

    def _links_of(self, a: str, b: str) -> list[Any]:
        """The links of the controller's path between two agents' hosts, both directions
        and both access links included; [] when either host is not located."""
        return self.pathhealth.links_of(a, b)

    def _probe_pairs(self, task: Task, hosts: dict[str, str]) -> list[tuple[str, str]]:
        peers = task.peers or "all"
        if isinstance(peers, tuple):
            wanted = [self.registry.find(h) for h in peers]
            peers = tuple(a.name for a in wanted if a is not None and a.name in hosts)
        return pairs.resolve_peers(peers, hosts, self.pathhealth.links_function())

    def _check_probes(self, task: Task) -> None:
        """404 for a peer that is not a known agent; 400 when the probes of the task
        would exceed the per-host probe budget or the target limit."""
        if isinstance(task.peers, tuple):
            for name in task.peers:
                agent = self.registry.find(name)
                if agent is None:
                    raise NotFound(f"task {task.name}: peers host '{name}' is not a known "
                                   "agent")
                if not agent.data_ip:
                    raise NotFound(f"task {task.name}: peers host '{name}' has no data "
                                   "address")
        hosts = self._probe_hosts()
        chosen = self._probe_pairs(task, hosts)
        if len(chosen) > MAX_PROBE_TARGETS:
            raise BadRequest(f"task {task.name}: peers gives {len(chosen)} probed pairs, "
                             f"more than {MAX_PROBE_TARGETS}")
        load = pairs.probe_load_bps(chosen, task.probe_rate or 10.0, task.probe_payload or 64)
        worst = max(load.values(), default=0.0)
        if worst > self.probe_budget_bps:
            raise BadRequest(
                f"task {task.name}: peers {task.peers if isinstance(task.peers, str) else 'list'}"
                f" over {len(hosts)} hosts at probe_rate {task.probe_rate:g} needs "
                f"{worst / 1e6:.2f} Mbit/s of probes on a host, more than the probe budget "
                f"of {self.probe_budget_bps / 1e6:.2f} Mbit/s (MEASURE_PROBE_BUDGET_BPS)")

    def _task_body(self, task: Task) -> dict[str, Any]:
        """The task as the root gets it: a path_health task with its probed pairs resolved
        over the live agents (``probe_targets``), at every push."""
        body = task.to_dict()
        if task.kind == "path_health":
            hosts = self._probe_hosts()
            chosen = self._probe_pairs(task, hosts)[:MAX_PROBE_TARGETS]
            body["probe_targets"] = [{"src": a, "dst": b, "address": hosts[b]}
                                     for a, b in chosen]
            if not body["probe_targets"]:
                body.pop("probe_targets")
        return body

    def _record(self, task_id: str) -> TaskRecord:
        record = self.tasks.get(task_id)
        if record is None:
            raise NotFound(f"unknown task {task_id}")
        return record

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._record(task_id).to_dict()

    def list_tasks(self) -> list[dict[str, Any]]:
        return [r.to_dict() for _, r in sorted(self.tasks.items(), key=lambda kv: int(kv[0]))]

    def delete_task(self, task_id: str) -> dict[str, Any]:
        record = self._record(task_id)
        self.store.delete_task(task_id)
        del self.tasks[task_id]
        self.pushes.forget_task(task_id)
        self.actions.lift_task(task_id)
        self.results.forget(task_id)
        self.pathhealth.forget(task_id)
        if record.pushed:
            self.pushes.deletes.add(task_id)
            if self.wake is not None:
                self.wake()  # the ticker tells the root; this call does not wait for agents
            else:
                self._send_deletes()
        return {"id": task_id, "name": record.task.name, "deleted": True}

    def result(self, task_id: str, host: str | None = None,
               key: str | None = None) -> dict[str, Any]:
        """The latest result; with ``key``, a five_tuple / src_dst elastic task's answer
        for that coarser key (``measure_model.partial_keys``) in place of its own."""
        record = self._record(task_id)
        if key is not None:
            return self._partial_result(task_id, record, host, key)
        if host is not None:
            agent = self.registry.find(host)
            host = agent.name if agent is not None else host
        fetched = self._host_results(task_id, host, 1) if host is not None else None
        latest = fetched[0] if fetched else self.results.latest(task_id, host, now=self.now())
        if latest is None:
            where = f" for host {host}" if host else ""
            raise NotFound(f"no result yet for task {task_id}{where} ({record.status})")
        return scaled([latest], record.task)[0]

    def _partial_result(self, task_id: str, record: Any, host: str | None,
                        key: str) -> dict[str, Any]:
        task = record.task
        if task.memory is None:
            raise BadRequest(f"key: task {task_id} has no memory (not an elastic counter): "
                             "only elastic five_tuple and src_dst tasks answer a coarser key")
        try:
            partial_keys.check_key(task.key, key)
        except ValueError as exc:
            raise BadRequest(str(exc) if str(exc).startswith("key") else f"key: {exc}"
                             ) from None
        if host is not None:
            raise BadRequest("key: a coarser key is answered network-wide only (no host)")
        latest = self.result(task_id)
        state = self.results.latest_state(task_id)
        if state is None:
            raise NotFound(f"no elastic state yet for task {task_id} ({record.status})")
        threshold = None
        if task.threshold is not None:
            threshold = task.threshold * float(latest.get("total") or 0)
        elif task.threshold_abs is not None:
            threshold = float(task.threshold_abs)
        out = partial_keys.answer(state, key, threshold, task.top_k or 10)
        fraction = task.sample or 1.0
        if fraction < 1.0:  # sampled: scale the sizes like every other count
            out["top_k"] = [[k, round(v / fraction)] for k, v in out["top_k"]]
            out["heavy_hitters"] = {k: round(v / fraction)
                                    for k, v in out["heavy_hitters"].items()}
        return {**{k: v for k, v in latest.items() if k not in ("top_k", "heavy_hitters")},
                **out}

    def flows(self, task_id: str, top: int = 10, by: str = "bytes") -> dict[str, Any]:
        """The largest active flows of a ``flows`` task network-wide (merged up the
        overlay as the task's five_tuple counter), scaled by 1/sample when sampled."""
        record = self._record(task_id)
        task = record.task
        if task.kind != "flows":
            raise NotFound(f"task {task_id} is of kind {task.kind}: it has no flows")
        counted = "packets" if task.increment == "pkt" else "bytes"
        if by != counted:
            raise Conflict(f"by: task {task_id} ranks its flows by {counted} "
                           f"(its increment), not {by}")
        latest = self.result(task_id)  # already scaled by 1/sample
        now = (latest.get("rate") or {}).get("keys") or {}
        times = latest.get("flow_times") or {}
        rows = []
        for key, value in (latest.get("top_k") or [])[:top]:
            row = {"flow": key, counted: value,
                   **({n: now[key][n] for n in ("pps", "bps")} if key in now else {})}
            if key in times:  # the flow cache's first and last time seen (one record)
                first, last = times[key]
                row.update(first=first, last=last, duration=round(last - first, 3))
            rows.append(row)
        out = {"task_id": task_id, "by": counted, "flows": rows,
               "interval_end": latest.get("interval_end"), "covered": latest.get("covered"),
               "missing": latest.get("missing"), "age": latest.get("age")}
        if "sampled" in latest:
            out["sampled"] = latest["sampled"]
        return out

    def history(self, task_id: str, host: str | None = None,
                limit: int = 50) -> dict[str, Any]:
        """Up to ``limit`` past results of a task (global or one host's), newest first."""
        self._record(task_id)
        if host is not None:
            agent = self.registry.find(host)
            host = agent.name if agent is not None else host
        fetched = self._host_results(task_id, host, limit) if host is not None else None
        rows = fetched or self.results.history(task_id, host, limit, now=self.now())
        rows = scaled(rows, self.tasks[task_id].task)
        return {"task_id": task_id, "host": host or GLOBAL, "results": rows}

    def _host_results(self, task_id: str, host: str, limit: int) -> list[dict[str, Any]]:
        """One agent's per-host results, asked of the tree on demand: one request to the
        agent (its own last ``limit`` lines), or, when it does not answer, to its parent
        (the agent's last line, from its last report). Empty when neither answers."""
        agent = self.registry.agents.get(host)
        if agent is None:
            return []
        parent = self.registry.agents.get(self.overlay.parent.get(host) or "")
        path = f"/agent/v1/tasks/{task_id}/hosts/{host}?limit={max(1, min(limit, 100))}"
        for peer in (agent, parent):
            if peer is None:
                continue
            try:
                code, body = self.http.request("GET", f"{peer.url}{path}",
                                               timeout=HOST_FETCH_TIMEOUT)
                if code == 200:
                    return self.results.host_results(task_id, host, body, now=self.now())
            except (OSError, ValueError) as exc:  # not there: the next, else the store
                log.info("per-host lines of %s from %s: %s", host, peer.name, exc)
        return []

    def check_root_report(self, report: Any) -> None:
        """Refuse (409, logged) a report an agent sends unless it comes ``from`` the
        current root at an epoch of that root's tenure (a replayed placement must not
        make a leaf's reports the global result)."""
        if not isinstance(report, dict):
            return  # ingest_report answers the 400
        sender, epoch = report.get("from"), report.get("epoch")
        root = self.overlay.root
        ok = (root is not None and sender == root and isinstance(epoch, int)
              and not isinstance(epoch, bool) and self._root_since <= epoch <= self.epoch)
        if not ok:
            log.warning("report for task %s refused: from %r at epoch %r; the root is %r "
                        "since epoch %d (now %d)", report.get("task_id"), sender, epoch, root,
                        self._root_since, self.epoch)
            raise Conflict(f"report from {sender!r} at epoch {epoch!r} refused: the overlay "
                           f"root is {root!r} (epochs {self._root_since}..{self.epoch})")

    def root_alive(self, name: str) -> None:
        """A signed report from the root counts as its heartbeat: the root merges every
        report of the tree, so it is the busiest agent and the first whose heartbeats
        come late under load, while its reports show it is alive (a root that is down
        already is not brought back by a report; it registers or beats again)."""
        agent = self.registry.agents.get(name)
        if agent is not None and agent.up:
            agent.last_seen = max(agent.last_seen, self.now())

    def _stale_task(self, task_id: str) -> None:
        """The root reports a task this controller does not hold: it was deleted while
        its DELETE could not reach the root and the queue was lost (a controller restart
        or a take-over), so the tree would measure it for ever. Ids are never reused
        (the store's AUTOINCREMENT / BIGSERIAL), so the root is told to delete it."""
        if not _TASK_ID.fullmatch(task_id) or task_id in self.pushes.deletes:
            return
        log.info("the root reports task %s, which is not a task here (deleted): "
                 "telling the root to delete it", task_id)
        self.pushes.deletes.add(task_id)
        if self.wake is not None:
            self.wake()

    def ingest_report(self, report: Any) -> dict[str, Any]:
        """A root agent's merged report (``POST /measure/v1/reports``)."""
        if isinstance(report, dict) and isinstance(report.get("task_id"), str) \
                and report["task_id"] not in self.tasks:
            self._stale_task(report["task_id"])
            raise NotFound(f"unknown task {report['task_id']}")
        try:
            known = self.tasks.get(report["task_id"]) if isinstance(report, dict) \
                and isinstance(report.get("task_id"), str) else None
            expected = self.expected_agents(known.task) if known is not None else None
            events = self.results.ingest(report, now=self.now(), expected=expected,
                                         placed=set(self.overlay.parent),
                                         registered=set(self.registry.agents))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        record = self.tasks[report["task_id"]]
        if record.task.on:
            wanted = set(events)
            raised = [e for e in self.store.events(min(events) - 1,
                                                   limit=max(events) - min(events) + 1)
                      if e["id"] in wanted] if events else []
            events += self.actions.react(record.id, record.task, raised,
                                         self.results.latest(record.id, now=self.now()))
        return {"accepted": True, "events": events}

    # ------------------------------------------------------------ path health

    def _kind_tasks(self, kind: str) -> list[TaskRecord]:
        return [r for _, r in sorted(self.tasks.items(), key=lambda kv: int(kv[0]))
                if r.task.kind == kind]

    def pair_paths(self, task_id: str) -> dict[str, Any]:
        """Each pair of a path_health task with its figures and path (``measure paths``)."""
        record = self._record(task_id)
        if record.task.kind != PATH_KIND:
            raise NotFound(f"task {task_id} is of kind {record.task.kind}: it has no paths")
        latest = self.results.latest(task_id, now=self.now())
        if latest is None:
            raise NotFound(f"no result yet for task {task_id} ({record.status})")
        return {"task_id": task_id, "interval_end": latest["interval_end"],
                "pairs": self.pathhealth.pair_paths(latest),
                "links": latest.get("links") or []}

    def links(self) -> dict[str, Any]:
        """Every link's latest estimate over the path_health tasks (``measure links``):
        per link the task whose estimate is most confident; suspects first."""
        best: dict[str, dict[str, Any]] = {}
        for record in self._kind_tasks(PATH_KIND):
            latest = self.results.latest(record.id, now=self.now())
            for link in (latest or {}).get("links") or []:
                name = link.get("name")
                old = best.get(name)
                rank = (link.get("suspect"), link.get("pairs", 0) > 0, link.get("confidence"))
                if old is None or rank > (old.get("suspect"), old.get("pairs", 0) > 0,
                                          old.get("confidence")):
                    best[name] = {**link, "task_id": record.id}
        links = sorted(best.values(), key=lambda x: (not x.get("suspect"),
                                                     -(x.get("confidence") or 0),
                                                     -(x.get("loss") or 0), x.get("name")))
        return {"links": links, "suspects": [x for x in links if x.get("suspect")]}

    def diagnose(self, src: str, dst: str) -> dict[str, Any]:
        """Is the path from ``src`` to ``dst`` healthy now (``GET diagnose``)."""
        names = []
        for field, ref in (("src", src), ("dst", dst)):
            agent = self.registry.find(ref)
            if agent is None:
                raise NotFound(f"diagnose: field '{field}': unknown host {ref!r}")
            names.append(agent.name)
        if names[0] == names[1]:
            raise BadRequest("diagnose: field 'dst' must differ from 'src'")
        a, b = names
        tasks = []
        for record in self._kind_tasks(PATH_KIND):
            latest = self.results.latest(record.id, now=self.now())
            history = self.results.history(record.id, limit=30, now=self.now())[1:]
            tasks.append((record.id, latest, history,
                          self.pathhealth.measured.get(record.id, {})))
        tcp = None
        addrs = {ip for ip in (self._data_ip(a), self._data_ip(b)) if ip}
        for record in self._kind_tasks(TCP_KIND):
            tcp = tcp_between(self.results.latest(record.id, now=self.now()), addrs)
            if tcp is not None:
                break
        avoids = [x for x in self.actions.list_actions()
                  if x.get("action") == "avoid_link" and x.get("status") == "active"]
        return diagnose(a, b, self.pathhealth.path(a, b), tasks, tcp, avoids,
                        self._can_avoid)

    def _can_avoid(self, link: dict[str, Any]) -> bool:
        if self.topology is None or "host" in link:
            return False  # a host's access link has no alternative
        from ryu_app.net.topology import str_to_dpid
        edge = frozenset({str_to_dpid(link["src_switch"]), str_to_dpid(link["dst_switch"])})
        return bool(self.topology.connected_without(self.actions.avoided_links() | {edge}))

    def list_actions(self) -> list[dict[str, Any]]:
        return self.actions.list_actions()

    def delete_action(self, action_id: int) -> dict[str, Any]:
        """Lift one live action (``DELETE /measure/v1/actions/{id}``)."""
        row = self.actions.lift(action_id)
        if row is None:
            if self.actions.get(action_id) is None:
                raise NotFound(f"unknown action {action_id}")
            raise Conflict(f"action {action_id} has already ended")
        return {"id": action_id, "lifted": True}

    def _locate(self, ip: str) -> Any:
        """A host's attachment point by IP, else by the MAC its agent registered (a host
        whose every frame matched existing flows has no IP in the topology)."""
        host = self.topology.host_by_ip(ip)
        agent = self.registry.find(ip) if host is None else None
        return self.topology.host_by_mac(agent.mac) if agent and agent.mac else host

    def _vouch(self, ip: str) -> str | None:
        """Why a reaction must not act on source ``ip`` (None: it may).

        An agent's data address is protected from spoofing: it is acted on only while
        the source guard binds it to that agent's registered MAC (then table 0 drops
        the address from every other port, so the packets came from the agent's host).
        Other addresses are acted on where the guard placed them (``_locate``)."""
        agent = self.registry.find(ip)
        if agent is None or agent.data_ip != ip:
            return None
        if not agent.mac:
            return (f"is agent {agent.name}'s data address and the agent registered no MAC "
                    "to bind it to")
        owner = self.topology.host_by_ip(ip)
        mac = agent.mac.lower()
        if owner is not None and owner.mac != mac:
            return (f"is agent {agent.name}'s data address, bound to {owner.mac}, not the "
                    f"agent's MAC {mac}")
        if self.topology.host_by_mac(mac) is None:
            return f"is agent {agent.name}'s data address and its host is not attached"
        return None

    @staticmethod
    def _scope_refs(task: Task) -> tuple[str, ...]:
        scope = task.scope
        return scope if isinstance(scope, tuple) else ()

    def _scope_agent(self, ref: str) -> str | None:
        """The agent a scope entry names (name, data IP or URL host), or None."""
        agent = self.registry.find(ref)
        if agent is not None:
            return agent.name
        for agent in self.registry.agents.values():
            if urlsplit(agent.url).hostname == ref:
                return agent.name
        return None

    def expected_agents(self, task: Task) -> set[str] | None:
        """The agents a task's result should cover (None: every agent)."""
        refs = self._scope_refs(task)
        if not refs:
            return None
        return {name for name in map(self._scope_agent, refs) if name is not None}

    def _missing_reason(self, name: str) -> str:
        """Why an agent is missing from a report: ``unreachable`` (no heartbeat),
        ``crashed`` (its monitor is crash-looping) or ``late`` (up, but its report did
        not reach its parent in time)."""
        agent = self.registry.agents.get(name)
        if agent is None or not agent.up:
            return "unreachable"
        if (agent.monitor or {}).get("crash_looping"):
            return "crashed"
        return "late"

    def _data_ip(self, name: str) -> str | None:
        agent = self.registry.find(name)
        return agent.data_ip if agent is not None else None

    # ------------------------------------------------------------ agents

    def register_agent(self, body: Any) -> dict[str, Any]:
        agent = self._admit(body)
        if self.store.is_shared():  # for a standby that takes over
            self.store.put_agent(agent.name, {k: getattr(agent, k) for k in AGENT_FIELDS})
        # the live task ids: the agent drops a task it still holds that was deleted
        # while it could not be told (``OverlayNode.drop_stale``)
        return {"name": agent.name, "registered": True, "epoch": self.epoch,
                "heartbeat_interval": self.registry.timeout / 3, "version": __version__,
                "tasks": sorted(self.tasks, key=int)}

    def _admit(self, body: Any) -> Agent:
        """Register an agent (or a stored one, at a take-over): its overlay place and
        tasks are pushed at the next tick."""
        agent = self.registry.register(body, self.now())
        if agent.mac and agent.data_ip:
            # the agent's registration is what moves a pinned IP at once (source guard)
            self.topology.bind_ip(agent.mac, agent.data_ip, self.now())
        self._joined = True
        self.pushes.overlay.add(agent.name)
        return agent

    def heartbeat(self, name: str, body: Any = None) -> dict[str, Any]:
        """An agent's heartbeat, with its overlay subtree's (``subtree``): the reply's
        ``unknown`` names the listed agents that must register again."""
        if self.registry.heartbeat(name, self.now(), body):
            self._joined = True
            self.pushes.overlay.add(name)
        subtree = body.get("subtree") if isinstance(body, dict) else None
        unknown = sorted(n for n in subtree or () if n not in self.registry.agents)
        return {"name": name, "ok": True, "epoch": self.epoch, "unknown": unknown[:1000]}

    def agents(self) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for item in self.registry.to_list(now):
            agent = self.registry.agents[item["name"]]
            item["host"] = host_node(agent, self.topology)
            item["parent"] = self.overlay.parent.get(agent.name) if agent.up else None
            out.append(item)
        return out

    def overlay_view(self) -> dict[str, Any]:
        view = self.overlay.to_dict()
        view["epoch"] = self.epoch
        view["agents"] = {name: {"url": a.url, "host": host_node(a, self.topology)}
                          for name, a in self.registry.live().items()}
        view["unlocated"] = sorted(n for n, a in view["agents"].items() if a["host"] is None)
        return view

    def topology_view(self) -> dict[str, Any]:
        if self.topology is None:
            return {"switches": [], "links": [], "hosts": []}
        return self.topology.to_dict()

    # ------------------------------------------------------------ overlay

    def on_topology_changed(self) -> None:
        """Called by the Ryu app after topology events: recompute at the next tick."""
        self._topology_dirty = True

    def recompute(self) -> bool:
        """Rebuild the tree; on a change bump the epoch. True if it changed."""
        live = self.registry.live()
        located = {n: host_node(a, self.topology) for n, a in live.items()}
        graph = self.topology.graph if self.topology is not None else None
        hint = self.overlay.root if self.overlay.root in live else None
        if graph is None:
            graph = nx.Graph()
        tree = build_overlay(graph, located, self.fanout, root_hint=hint)
        if tree.same_tree(self.overlay):
            return False
        old_root = self.overlay.root
        self.epoch += 1
        self.store.set_meta("overlay_epoch", str(self.epoch))
        self.overlay = tree
        self.pushes.overlay = set(live)
        if tree.root != old_root:
            self._root_since = self.epoch
            self.pushes.tasks |= {i for i, r in self.tasks.items() if r.pushed}
        log.info("overlay epoch %d: root %s, depth %d, %d agents", self.epoch, tree.root,
                 tree.depth, len(live))
        return True

    def _overlay_body(self, name: str) -> dict[str, Any]:
        agents = self.registry.agents
        parent = self.overlay.parent.get(name)
        body = {"parent": None if parent is None else {"name": parent,
                                                       "url": agents[parent].url},
                "children": [{"name": c, "url": agents[c].url}
                             for c in self.overlay.children.get(name, [])],
                "root": name == self.overlay.root, "epoch": self.epoch,
                "controller": self.controller_url,
                "to": name}  # signed with the body: a replay to another agent is refused
        if self.auth.secret is not None:
            # keys for talking to the parent and children (each wrapped for this agent)
            peers = ([parent] if parent else []) + self.overlay.children.get(name, [])
            body["keys"] = {peer: self.peer_credential(name, peer) for peer in peers}
        return body

    def _send_overlay(self) -> None:
        live = self.registry.live()
        self.pushes.forget_agents(live)
        urls = {n: a.url for n, a in live.items() if n in self.overlay.parent}
        newer = self.pushes.send_overlay(urls, self._overlay_body)
        if newer and max(newer) >= self.epoch:
            # An agent holds a newer epoch (the controller lost its state dir):
            # jump past it and send everyone the tree again.
            self.epoch = max(newer) + 1
            self.store.set_meta("overlay_epoch", str(self.epoch))
            self.pushes.overlay = set(live)
            log.warning("an agent held overlay epoch %d: moved on to epoch %d", max(newer),
                        self.epoch)

    def _root_url(self) -> str | None:
        root = self.overlay.root
        agent = self.registry.agents.get(root) if root else None
        return agent.url if agent is not None and agent.up else None

    def _send_tasks(self) -> None:
        self.pushes.send_tasks(self.tasks, self.overlay.root, self._root_url(),
                               len(self.overlay.parent))

    def _send_deletes(self) -> None:
        self.pushes.send_deletes(self.overlay.root, self._root_url())

    # ------------------------------------------------------------ bandwidth

    def bandwidth(self, src: str, dst: str, method: str, max_duration: float,
                  max_bytes: int) -> tuple[int, Any]:
        """Ask the source agent to probe towards the destination agent (the
        arguments as ``measure_model.task.bandwidth_request`` checked them)."""
        return self.jobs.request(src, dst, method, max_duration, max_bytes)

    def peer_key(self, name: str, body: Any) -> dict[str, Any]:
        """``POST agents/{name}/peer-key``: what agent ``name`` needs to call the
        agent ``body['peer']`` (a name or data IP) itself: its name, URL, data IP
        and the credential wrapped for ``name`` (null without a secret)."""
        if not isinstance(body, dict):
            raise BadRequest("peer-key: body must be a JSON object")
        unknown = sorted(set(body) - {"peer"})
        if unknown:
            raise BadRequest(f"peer-key: field '{unknown[0]}' is not allowed (only 'peer')")
        peer = body.get("peer")
        if not isinstance(peer, str) or not 0 < len(peer) <= 64:
            raise BadRequest("peer-key: field 'peer' must be an agent name or data IP "
                             "(a string of 1 to 64 characters)")
        if name not in self.registry.agents:
            raise NotFound(f"peer-key: agent {name} is not registered (register again)")
        dst = self.jobs.end("peer", peer, "peer-key")
        if dst.name == name:
            raise BadRequest(f"peer-key: field 'peer' names the caller {name} itself")
        if dst.data_ip is None:
            raise Conflict(f"peer-key: agent {dst.name} registered no data_ip")
        log.info("peer-key: agent %s asked for the key to %s (%s)", name, dst.name, peer[:64])
        return {"dst_name": dst.name, "dst_url": dst.url, "dst_ip": dst.data_ip,
                "dst_key": self.peer_credential(name, dst.name)}

    # ------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """``GET /measure/v1/health``: the tick loop, unreachable agents, failing pushes.

        ``ok`` is false while any of them is wrong (see docs/design.md,
        "Health, cost and version").
        """
        now = self.now()
        ticking = self.wake is not None
        pushes = self.pushes.health()
        down = sorted(n for n, a in self.registry.agents.items() if not a.up)
        ok = (self.ticker.healthy(now, ticking) and not pushes["agents_unreachable"]
              and not pushes["pushes_failing"])
        return {"ok": ok, "version": __version__, "role": "leader",
                "switch_roles": self.roles_view(),
                "ticker": self.ticker.to_dict(now, ticking), **pushes, "agents_down": down,
                "agents": len(self.registry.agents), "tasks": len(self.tasks),
                "overlay_epoch": self.epoch}

    # ------------------------------------------------------------ clock

    def tick(self, now: float | None = None) -> None:
        """Timeouts, overlay recomputation and retries (about once a second).

        A failing tick is logged with its traceback, counted in ``ticker``
        (shown by ``health``) and tried again at the next tick.
        """
        now = self.now() if now is None else now
        try:
            self._tick(now)
        except Exception as exc:  # broad: counted and shown in health, retried
            if isinstance(exc, StoreError):
                log.error("tick: %s", exc)
            else:
                log.exception("tick failed")
            self.ticker.failed(now, exc)
        else:
            self.ticker.ok(now)

    def _tick(self, now: float) -> None:
        if not self.store.try_lead():
            # another controller took the shared store: two leaders would fight over the
            # agents and the switches, so this one stops (its supervisor restarts it as
            # the standby)
            log.critical("lost the leader's lock on %s: exiting", self.store.path)
            os._exit(3)
        self.actions.tick(now)
        gone = self.registry.expire(now, self.overlay.levels)
        if gone:
            log.info("agents down: %s", ", ".join(gone))
        if gone or self._joined or self._topology_dirty:
            self.recompute()
            self._topology_dirty = False
        if self._joined:
            # A (re)started agent holds no tasks: the root sends them down again
            # (installing a task an agent already holds is idempotent).
            self.pushes.tasks |= {i for i, r in self.tasks.items() if r.pushed}
        self._joined = False
        if self.pushes.overlay:
            self._send_overlay()
        if self.pushes.deletes:
            self._send_deletes()
        # A task some agents refused goes to the root again every PARTIAL_RETRY s.
        self.pushes.tasks |= {i for i, r in self.tasks.items()
                              if r.status == "partial" and now - r.pushed_at >= PARTIAL_RETRY}
        if self.pushes.tasks:
            self._send_tasks()
        self.jobs.run_next(self.tasks)
