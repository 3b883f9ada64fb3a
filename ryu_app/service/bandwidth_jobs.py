"""Bandwidth between two agents, asked for now or as a policy's task.

``BandwidthJobs.request(src, dst, ...)`` resolves both ends (agent name or
data IP), checks they are distinct live agents and asks the source agent
(``POST {src}/agent/v1/bandwidth``) to probe towards the destination; the
answer is returned with the agents' names. ``REST POST
/measure/v1/bandwidth`` calls it directly.

Bandwidth tasks of a policy are not pushed down the overlay: ``run_next``
(called every tick) starts the oldest pending one, one at a time, in the
background through the runner, so the tick goes on; its answer is stored
as the task's result, and a task whose agents are not there yet stays
pending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from measure_common.httpclient import Transport
from measure_common.runner import Runner
from ryu_app.errors import BadGateway, BadRequest, Conflict, NotFound, ServiceError, Unavailable
from ryu_app.net.topology import Topology
from ryu_app.service.registry import Agent, Registry
from ryu_app.service.store import GLOBAL, Store, StoreError
from ryu_app.service.task_record import TaskRecord

log = logging.getLogger(__name__)

REPLY_MARGIN = 10.0  # seconds an agent may take beyond the probe's own limit


class BandwidthJobs:
    """Bandwidth requests and bandwidth tasks (see the module docstring)."""

    def __init__(self, registry: Registry, topology: Topology, http: Transport, runner: Runner,
                 store: Store, now: Callable[[], float]) -> None:
        self.registry = registry
        self.topology = topology
        self.http = http
        self.runner = runner
        self.store = store
        self.now = now
        #: (src, dst) -> what src needs to sign its calls to dst (None: no secret)
        self.credential: Callable[[str, str], dict[str, str] | None] = lambda a, b: None

    def end(self, role: str, ref: str, what: str = "bandwidth") -> Agent:
        """The live agent named ``ref`` or holding data IP ``ref`` (404, 503)."""
        agent = self.registry.find(ref)
        if agent is None and self.topology is not None:
            host = self.topology.host_by_ip(ref)
            agent = next((a for a in self.registry.agents.values()
                          if host is not None and a.mac == host.mac), None)
        if agent is None:
            raise NotFound(f"{what}: {role} '{ref}' is not a known agent name or data IP")
        if not agent.up:
            raise Unavailable(f"{what}: agent {agent.name} ({role}) is down")
        return agent

    def request(self, src: str, dst: str, method: str, max_duration: float,
                max_bytes: int) -> tuple[int, Any]:
        """Ask the source agent to probe towards the destination agent."""
        src_agent, dst_agent = self.end("src", src), self.end("dst", dst)
        if src_agent.name == dst_agent.name:
            raise BadRequest(f"bandwidth: src and dst are the same agent {src_agent.name}")
        if dst_agent.data_ip is None:
            raise Conflict(f"bandwidth: agent {dst_agent.name} registered no data_ip")
        body: dict[str, Any] = {"dst_ip": dst_agent.data_ip, "dst_url": dst_agent.url,
                                "method": method, "max_duration": max_duration,
                                "max_bytes": max_bytes}
        cred = self.credential(src_agent.name, dst_agent.name)
        if cred is not None:  # the source signs its calls to the destination with these
            body["dst_name"], body["dst_key"] = dst_agent.name, cred
        try:
            status, reply = self.http.request("POST", f"{src_agent.url}/agent/v1/bandwidth",
                                              json=body, timeout=max_duration + REPLY_MARGIN)
        except OSError as exc:
            raise Unavailable(f"bandwidth: agent {src_agent.name} unreachable: {exc}") from None
        if not 200 <= status < 300:
            detail = reply.get("error") if isinstance(reply, dict) else reply
            raise BadGateway(f"bandwidth: agent {src_agent.name}: HTTP {status}: {detail}")
        if isinstance(reply, dict):
            reply = {**reply, "src": src_agent.name, "dst": dst_agent.name}
        return status, reply

    def run_next(self, records: dict[str, TaskRecord]) -> None:
        """Start the oldest pending bandwidth task, one at a time, off the tick."""
        tasks = [r for r in records.values() if not r.pushed]
        pending = [r for r in tasks if r.status == "pending"]
        if not pending or any(r.status == "running" for r in tasks):
            return
        record = min(pending, key=lambda r: int(r.id))
        record.status = "running"
        self.runner.submit(lambda: self._probe(record, records))

    def _probe(self, record: TaskRecord, records: dict[str, TaskRecord]) -> None:
        t = record.task
        try:
            # a parsed bandwidth task has every one of these (measure_model.task)
            if (t.src is None or t.dst is None or t.method is None or t.max_duration is None
                    or t.max_bytes is None):
                raise BadRequest(f"bandwidth task {record.id} lacks a bandwidth field")
            _, reply = self.request(t.src, t.dst, t.method, t.max_duration, t.max_bytes)
            status, error = "done", None
        except (NotFound, Unavailable) as exc:
            record.status, record.last_error = "pending", str(exc)  # agents may come later
            return
        except ServiceError as exc:
            status, error, reply = "failed", str(exc), None
        record.status, record.last_error = status, error
        if record.id not in records:
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
