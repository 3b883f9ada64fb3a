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
answer says so), queued, and the Ryu app's ticker is woken at once
(``wake``) to push it; without a ticker (unit tests) a deletion is sent
before the call returns and a new task at the next ``tick``. Failed pushes
stay queued and are retried at the next tick. HTTP goes
through an injectable client (``http.request(method, url, json, timeout)``
returning ``(status, body)``), signed with the shared secret when one is
configured. Under Ryu's eventlet hub the sockets are green, so a slow agent
delays only the green thread that talks to it; no lock is held across HTTP.

Bandwidth tasks in a policy are not pushed: the service runs them one at a
time (in a green thread, so the tick goes on) through the source agent's
``POST /agent/v1/bandwidth`` and stores the answer as the task's result.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from measure_model.task import Task
from ryu_app.overlay import Overlay, build_overlay
from ryu_app.registry import DEFAULT_TIMEOUT, Registry, host_node
from ryu_app.store import GLOBAL, NameConflict, Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_CONTROLLER_URL = "http://192.168.100.254:8080"
DEFAULT_FANOUT = 4
MAX_TASKS = 200
PUSH_TIMEOUT = 5.0
PARTIAL_RETRY = 10.0
OVERLAY_TIMEOUT = 2.0


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status."""

    status = 500


class BadRequest(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    status = 503


class BadGateway(ServiceError):
    status = 502


@dataclass
class AuthConfig:
    """Credentials the REST layer checks (None = that mechanism is off)."""

    token: str | None = None
    secret: bytes | None = None
    reads_open: bool = False
    verifier: Any = None

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.secret is not None


@dataclass
class TaskRecord:
    id: str
    task: Task
    created: float
    status: str = "pending"
    agents: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
    pushed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.task.name, "kind": self.task.kind,
                "created": self.created, "status": self.status, "agents": dict(self.agents),
                "last_error": self.last_error, "task": self.task.to_dict()}


class RequestsClient:
    """The default HTTP client: ``requests`` with optional request signing."""

    def __init__(self, secret: bytes | None = None) -> None:
        import requests

        self._session = requests.Session()
        self._auth = None
        if secret is not None:
            from measure_model.auth import HmacAuth

            self._auth = HmacAuth(secret)

    def request(self, method: str, url: str, json: Any = None,
                timeout: float = PUSH_TIMEOUT) -> tuple[int, Any]:
        import requests

        try:
            resp = self._session.request(method, url, json=json, timeout=timeout,
                                         auth=self._auth)
        except requests.RequestException as exc:
            raise ConnectionError(f"{method} {url}: {type(exc).__name__}") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text[:500]


def auth_from_env(state_dir: str) -> AuthConfig:
    """Token and secret files as docs/security.md describes (MEASURE_AUTH=off disables)."""
    if os.environ.get("MEASURE_AUTH", "on").lower() in ("off", "0", "false", "no"):
        return AuthConfig()
    from measure_model.auth import Verifier, load_or_create_secret, load_or_create_token

    token_path = os.environ.get("MEASURE_TOKEN_FILE", os.path.join(state_dir, "controller.token"))
    secret_path = os.environ.get("MEASURE_SECRET_FILE", os.path.join(state_dir, "agent.secret"))
    token, created = load_or_create_token(token_path)
    if created:
        log.warning("created the controller token in %s; send 'Authorization: Bearer %s'",
                    token_path, token)
    secret, _ = load_or_create_secret(secret_path)
    reads_open = os.environ.get("MEASURE_READS_OPEN", "").lower() in ("1", "true", "yes")
    return AuthConfig(token=token, secret=secret, reads_open=reads_open,
                      verifier=Verifier(secret))


def _map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Run ``fn`` over items concurrently under eventlet, else in order."""
    try:
        from eventlet import patcher

        if len(items) > 1 and patcher.is_monkey_patched("socket"):
            import eventlet

            return list(eventlet.GreenPool(min(len(items), 32)).imap(fn, items))
    except ImportError:
        pass
    return [fn(item) for item in items]


def _spawn(fn: Callable[[], Any]) -> None:
    """Run ``fn`` in a green thread under eventlet, else now (tests)."""
    try:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            import eventlet

            eventlet.spawn_n(fn)
            return
    except ImportError:
        pass
    fn()


class MeasureService:
    """Agents, overlay, tasks and results of the controller (see module docstring)."""

    def __init__(self, topology: Any, state_dir: str, now: Callable[[], float] = time.time,
                 http: Any = None, fanout: int = DEFAULT_FANOUT,
                 heartbeat_timeout: float = DEFAULT_TIMEOUT,
                 controller_url: str | None = None, auth: AuthConfig | None = None) -> None:
        self.topology = topology
        self.now = now
        self.state_dir = state_dir
        self.store = Store.in_dir(state_dir)
        self.registry = Registry(heartbeat_timeout)
        self.fanout = int(os.environ.get("MEASURE_FANOUT", fanout))
        self.controller_url = (controller_url or os.environ.get("MEASURE_CONTROLLER_URL")
                               or DEFAULT_CONTROLLER_URL).rstrip("/")
        self.auth = auth if auth is not None else auth_from_env(state_dir)
        self.http = http if http is not None else RequestsClient(self.auth.secret)
        try:
            from ryu_app.results import Results
        except ImportError:  # pragma: no cover - results.py is another owner's module
            Results = None  # noqa: N806
        self.results = Results(self.store) if Results is not None else None
        self.overlay = Overlay(root=None, fanout=self.fanout)
        self.epoch = int(self.store.get_meta("overlay_epoch", "0") or 0)
        self.tasks: dict[str, TaskRecord] = {}
        for row in self.store.tasks():
            task = Task.from_dict(row["task"], f"stored task {row['id']}")
            status = row["status"] if task.kind == "bandwidth" else "pending"
            self.tasks[row["id"]] = TaskRecord(row["id"], task, row["created"], status)
        self._push_tasks = {i for i, r in self.tasks.items() if r.task.kind != "bandwidth"}
        self._push_deletes: set[str] = set()
        self._push_overlay: set[str] = set()
        self._topology_dirty = True
        self._joined = False
        #: set by the Ryu app: wakes its ticker so queued pushes go out now
        self.wake: Callable[[], None] | None = None

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
        now = self.now()
        try:
            ids = self.store.add_tasks([(t.name, t.to_dict()) for t in tasks], now)
        except NameConflict as exc:
            raise Conflict(str(exc)) from None
        for task_id, task in zip(ids, tasks, strict=True):
            self.tasks[task_id] = TaskRecord(task_id, task, now)
            if task.kind != "bandwidth":
                self._push_tasks.add(task_id)
        if self.wake is not None:
            self.wake()
        return [{"id": i, "name": t.name} for i, t in zip(ids, tasks, strict=True)]

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
        self._push_tasks.discard(task_id)
        if self.results is not None:
            self.results.forget(task_id)
        if record.task.kind != "bandwidth":
            self._push_deletes.add(task_id)
            if self.wake is not None:
                self.wake()  # the ticker tells the root; this call does not wait for agents
            else:
                self._send_deletes()
        return {"id": task_id, "name": record.task.name, "deleted": True}

    def result(self, task_id: str, host: str | None = None) -> dict[str, Any]:
        record = self._record(task_id)
        if host is not None:
            agent = self.registry.find(host)
            host = agent.name if agent is not None else host
        latest = None
        if self.results is not None:
            latest = self.results.latest(task_id, host, now=self.now())
        elif rows := self.store.results(task_id, host or GLOBAL, limit=1):
            latest = rows[0]
        if latest is None:
            where = f" for host {host}" if host else ""
            raise NotFound(f"no result yet for task {task_id}{where} ({record.status})")
        return latest

    def history(self, task_id: str, host: str | None = None,
                limit: int = 50) -> dict[str, Any]:
        """Up to ``limit`` past results of a task (global or one host's), newest first."""
        self._record(task_id)
        if host is not None:
            agent = self.registry.find(host)
            host = agent.name if agent is not None else host
        if self.results is not None:
            rows = self.results.history(task_id, host, limit, now=self.now())
        else:
            rows = self.store.results(task_id, host or GLOBAL, limit=limit)
        return {"task_id": task_id, "host": host or GLOBAL, "results": rows}

    def ingest_report(self, report: Any) -> dict[str, Any]:
        """A root agent's merged report (``POST /measure/v1/reports``)."""
        if self.results is None:
            raise Unavailable("results are not available in this controller build")
        if isinstance(report, dict) and isinstance(report.get("task_id"), str) \
                and report["task_id"] not in self.tasks:
            raise NotFound(f"unknown task {report['task_id']}")
        try:
            events = self.results.ingest(report, now=self.now())
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return {"accepted": True, "events": events}

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        if self.results is not None:
            return self.results.events(since)
        return self.store.events(since)

    # ------------------------------------------------------------ agents

    def register_agent(self, body: Any) -> dict[str, Any]:
        agent = self.registry.register(body, self.now())
        self._joined = True
        self._push_overlay.add(agent.name)
        return {"name": agent.name, "registered": True, "epoch": self.epoch,
                "heartbeat_interval": self.registry.timeout / 3}

    def heartbeat(self, name: str) -> dict[str, Any]:
        if self.registry.heartbeat(name, self.now()):
            self._joined = True
            self._push_overlay.add(name)
        return {"name": name, "ok": True, "epoch": self.epoch}

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
            import networkx as nx

            graph = nx.Graph()
        tree = build_overlay(graph, located, self.fanout, root_hint=hint)
        if tree.same_tree(self.overlay):
            return False
        old_root = self.overlay.root
        self.epoch += 1
        self.store.set_meta("overlay_epoch", str(self.epoch))
        self.overlay = tree
        self._push_overlay = set(live)
        if tree.root != old_root:
            self._push_tasks |= {i for i, r in self.tasks.items() if r.task.kind != "bandwidth"}
        log.info("overlay epoch %d: root %s, depth %d, %d agents", self.epoch, tree.root,
                 tree.depth, len(live))
        return True

    def _overlay_body(self, name: str) -> dict[str, Any]:
        agents = self.registry.agents
        parent = self.overlay.parent.get(name)
        return {"parent": None if parent is None else {"name": parent, "url": agents[parent].url},
                "children": [{"name": c, "url": agents[c].url}
                             for c in self.overlay.children.get(name, [])],
                "root": name == self.overlay.root, "epoch": self.epoch,
                "controller": self.controller_url}

    def _send_overlay(self) -> None:
        live = self.registry.live()
        names = sorted(n for n in self._push_overlay if n in live and n in self.overlay.parent)
        self._push_overlay -= {n for n in self._push_overlay if n not in live}

        def push(name: str) -> tuple[str, bool]:
            url = f"{live[name].url}/agent/v1/overlay"
            try:
                status, body = self.http.request("PUT", url, json=self._overlay_body(name),
                                                 timeout=OVERLAY_TIMEOUT)
            except (ConnectionError, OSError) as exc:
                log.info("overlay push to %s failed: %s", name, exc)
                return name, False
            if status == 409 and isinstance(body, dict):
                # The agent holds a newer epoch (the controller lost its state dir):
                # jump past it and send everyone the tree again.
                match = re.search(r"current (\d+)", str(body.get("error", "")))
                if match:
                    newer.append(int(match[1]))
                return name, False
            return name, 200 <= status < 300

        newer: list[int] = []
        for name, ok in _map(push, names):
            if ok:
                self._push_overlay.discard(name)
        if newer and max(newer) >= self.epoch:
            self.epoch = max(newer) + 1
            self.store.set_meta("overlay_epoch", str(self.epoch))
            self._push_overlay = set(live)
            log.warning("an agent held overlay epoch %d: moved on to epoch %d", max(newer),
                        self.epoch)

    def _root_url(self) -> str | None:
        root = self.overlay.root
        agent = self.registry.agents.get(root) if root else None
        return agent.url if agent is not None and agent.up else None

    def _send_tasks(self) -> None:
        root_url = self._root_url()
        for task_id in sorted(self._push_tasks, key=int):
            record = self.tasks.get(task_id)
            if record is None:
                self._push_tasks.discard(task_id)
                continue
            if root_url is None:
                record.last_error = "no live agent to act as overlay root"
                continue
            # the agent count from the first interval on (absolute thresholds are
            # split over it); the root strips the reserved field before installing
            agents = max(1, len(self.overlay.parent))
            body = {**record.task.to_dict(), "_overlay": {"agents": agents}}
            try:
                status, body = self.http.request(
                    "PUT", f"{root_url}/agent/v1/tasks/{task_id}", json=body,
                    timeout=PUSH_TIMEOUT)
            except (ConnectionError, OSError) as exc:
                record.last_error = f"root {self.overlay.root}: {exc}"
                break  # the root is unreachable: the rest waits for the next tick
            if not 200 <= status < 300:
                detail = body.get("error") if isinstance(body, dict) else body
                record.last_error = f"root {self.overlay.root}: HTTP {status}: {detail}"
                continue
            agents = body.get("agents") if isinstance(body, dict) else None
            record.agents = {str(k): str(v) for k, v in (agents or {}).items()}
            failed = sorted(k for k, v in record.agents.items() if v != "ok")
            record.status = "partial" if failed else "active"
            record.pushed_at = self.now()
            record.last_error = f"failed on {', '.join(failed)}" if failed else None
            self._push_tasks.discard(task_id)

    def _send_deletes(self) -> None:
        """Send pending DELETEs to the root; each stays pending until a root
        acknowledges it (2xx, or 404: the root does not hold it), so agents that
        were only unreachable do not keep measuring a deleted task."""
        root_url = self._root_url()
        if root_url is None:
            return  # retried on a later tick, when there is a live root
        for task_id in sorted(self._push_deletes, key=int):
            try:
                status, _ = self.http.request("DELETE", f"{root_url}/agent/v1/tasks/{task_id}",
                                              timeout=PUSH_TIMEOUT)
            except (ConnectionError, OSError):
                continue
            if 200 <= status < 300 or status == 404:
                self._push_deletes.discard(task_id)

    # ------------------------------------------------------------ bandwidth

    def bandwidth(self, src: str, dst: str, method: str = "slops", max_duration: float = 10.0,
                  max_bytes: int = 20_000_000) -> tuple[int, Any]:
        """Ask the source agent to probe towards the destination agent."""
        ends = []
        for role, ref in (("src", src), ("dst", dst)):
            agent = self.registry.find(ref)
            if agent is None and self.topology is not None:
                host = self.topology.host_by_ip(ref)
                agent = next((a for a in self.registry.agents.values()
                              if host is not None and a.mac == host.mac), None)
            if agent is None:
                raise NotFound(f"bandwidth: {role} '{ref}' is not a known agent name or data IP")
            if not agent.up:
                raise Unavailable(f"bandwidth: agent {agent.name} ({role}) is down")
            ends.append(agent)
        src_agent, dst_agent = ends
        if src_agent.name == dst_agent.name:
            raise BadRequest(f"bandwidth: src and dst are the same agent {src_agent.name}")
        if dst_agent.data_ip is None:
            raise Conflict(f"bandwidth: agent {dst_agent.name} registered no data_ip")
        body = {"dst_ip": dst_agent.data_ip, "dst_url": dst_agent.url, "method": method,
                "max_duration": max_duration, "max_bytes": max_bytes}
        try:
            status, reply = self.http.request("POST", f"{src_agent.url}/agent/v1/bandwidth",
                                              json=body, timeout=max_duration + 10.0)
        except (ConnectionError, OSError) as exc:
            raise Unavailable(f"bandwidth: agent {src_agent.name} unreachable: {exc}") from None
        if not 200 <= status < 300:
            detail = reply.get("error") if isinstance(reply, dict) else reply
            raise BadGateway(f"bandwidth: agent {src_agent.name}: HTTP {status}: {detail}")
        if isinstance(reply, dict):
            reply = {**reply, "src": src_agent.name, "dst": dst_agent.name}
        return status, reply

    def _run_bandwidth_task(self) -> None:
        """Start the oldest pending bandwidth task, one at a time, off the tick."""
        tasks = [r for r in self.tasks.values() if r.task.kind == "bandwidth"]
        pending = [r for r in tasks if r.status == "pending"]
        if not pending or any(r.status == "running" for r in tasks):
            return
        record = min(pending, key=lambda r: int(r.id))
        record.status = "running"
        _spawn(lambda: self._probe(record))

    def _probe(self, record: TaskRecord) -> None:
        t = record.task
        try:
            _, reply = self.bandwidth(t.src, t.dst, t.method, t.max_duration, t.max_bytes)
            status, error = "done", None
        except (NotFound, Unavailable) as exc:
            record.status, record.last_error = "pending", str(exc)  # agents may come later
            return
        except ServiceError as exc:
            status, error, reply = "failed", str(exc), None
        record.status, record.last_error = status, error
        if record.id not in self.tasks:
            return  # deleted meanwhile
        try:
            self.store.set_status(record.id, status)
            if reply is not None:
                now = self.now()
                self.store.add_result(record.id, GLOBAL, now, {
                    "task_id": record.id, "host": GLOBAL, "kind": "bandwidth",
                    "received_at": now, "interval_end": now, "oldest": now, **reply})
        except StoreError as exc:
            log.error("bandwidth task %s: %s", record.id, exc)

    # ------------------------------------------------------------ clock

    def tick(self, now: float | None = None) -> None:
        """Timeouts, overlay recomputation and retries (about once a second).

        A store failure is logged in one line and the tick retried next time.
        """
        try:
            self._tick(self.now() if now is None else now)
        except StoreError as exc:
            log.error("tick: %s", exc)

    def _tick(self, now: float) -> None:
        gone = self.registry.expire(now)
        if gone:
            log.info("agents down: %s", ", ".join(gone))
        if gone or self._joined or self._topology_dirty:
            self.recompute()
            self._topology_dirty = False
        if self._joined:
            # A (re)started agent holds no tasks: the root sends them down again
            # (installing a task an agent already holds is idempotent).
            self._push_tasks |= {i for i, r in self.tasks.items() if r.task.kind != "bandwidth"}
        self._joined = False
        if self._push_overlay:
            self._send_overlay()
        if self._push_deletes:
            self._send_deletes()
        # A task some agents refused goes to the root again every PARTIAL_RETRY s.
        self._push_tasks |= {i for i, r in self.tasks.items()
                             if r.status == "partial" and now - r.pushed_at >= PARTIAL_RETRY}
        if self._push_tasks:
            self._send_tasks()
        self._run_bandwidth_task()
