"""Path health probes: the agent's side (``ProbeMesh``) of the probe process.

The probe process (``host_agent.probes.worker``, a ``host_agent.ipc`` child) sends
and echoes the probes
and reads the kernel's TCP state; the per-pair bookkeeping is in
``host_agent.probes.session``. ``ProbeMesh`` starts the process on first
use (and again if it died), hands it each path_health task's pairs for this
host, and turns its answers into the snapshot sections of
``measure_model.wire.paths``. Every agent runs the process from its start
when given a probe port, so it echoes its peers' probes before it holds a
task of its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from host_agent.ipc import ChildGone, ChildProcess, Refused
from measure_model.task import PROBE_PORT, Task
from measure_model.wire.paths import pair_key

log = logging.getLogger(__name__)

LOSS_TIMEOUT = 1.0  # seconds: a probe unanswered this long after it was sent is lost
CALL_TIMEOUT = 5.0
START_TIMEOUT = 30.0  # a loaded host takes seconds to start a Python process


class ProbeMesh:
    """This agent's probe process and the path_health / tcp_health tasks it serves."""

    def __init__(self, name: str, bind: str = "0.0.0.0", port: int = PROBE_PORT,
                 local: list[str] | None = None, prefix: list[str] | None = None) -> None:
        self.name, self.bind, self.port = name, bind, port
        self.prefix = prefix or []  # e.g. ``ip netns exec NAME`` (tests)
        self.local = local  # this host's data addresses (TCP flows on them only)
        self.worker: ChildProcess | None = None
        self.tasks: dict[str, dict[str, Any]] = {}   # path_health task id -> set request
        self.lock = threading.RLock()

    def start(self) -> None:
        with self.lock:
            if self.worker is not None and self.worker.alive():
                return
            if self.worker is not None:
                log.error("probe process died (exit %s); restarting",
                          self.worker.proc.poll() if self.worker.proc else None)
                self.worker.stop(grace=1.0)
            self.worker = ChildProcess("host_agent.probes.worker",
                                       ["--bind", self.bind, "--port", str(self.port)],
                                       name="probe process", timeout=CALL_TIMEOUT,
                                       prefix=self.prefix)
            self.worker.start()
            try:
                self.worker.call({"op": "ping"}, START_TIMEOUT)  # imports, binds the port
            except (ChildGone, Refused):
                self.worker.stop(grace=1.0)
                self.worker = None
                raise
            for task_id, req in self.tasks.items():
                self.worker.call(req)
                log.info("probe task %s re-installed", task_id)

    def stop(self) -> None:
        with self.lock:
            if self.worker is not None:
                self.worker.stop(grace=2.0)
                self.worker = None

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.start()
            if self.worker is None:
                raise ChildGone("probe process not running")
            try:
                reply: dict[str, Any] = self.worker.call(req)
                return reply
            except ChildGone:
                if self.worker is not None and self.worker.alive():
                    raise
                self.start()  # it died under us: once more on a fresh process
                assert self.worker is not None
                reply = self.worker.call(req)
                return reply

    # ------------------------------------------------------------ tasks
    def install(self, task_id: str, task: Task) -> None:
        """Probe this host's pairs of a path_health task (tcp_health needs nothing)."""
        if task.kind != "path_health":
            return
        targets = [{"dst": t.dst, "address": t.address} for t in task.probe_targets or ()
                   if t.src == self.name]
        req = {"op": "set", "task": task_id, "rate": task.probe_rate,
               "payload": task.probe_payload, "dscp": task.dscp, "targets": targets}
        with self.lock:
            self.tasks[task_id] = req
            self.call(req)

    def remove(self, task_id: str) -> None:
        with self.lock:
            if self.tasks.pop(task_id, None) is not None:
                self.call({"op": "remove", "task": task_id})

    def snapshot(self, task_id: str, task: Task, now: float) -> dict[str, Any]:
        """The task's snapshot: ``paths`` + ``probes`` (the probes sent before ``now``
        minus the loss timeout), or ``tcp``."""
        if task.kind == "tcp_health":
            tcp = self.call({"op": "tcp", "host": self.name, "top": task.top_k or 10,
                             "local": self.local})
            return {"tcp": tcp, "covered": [self.name], "missing": [],
                    "generated_at": now, "oldest": now}
        got = self.call({"op": "snapshot", "task": task_id, "cut": now - LOSS_TIMEOUT})
        paths = {pair_key(self.name, dst): entry for dst, entry in got["paths"].items()}
        return {"paths": paths, "probes": {self.name: got["cost"]}, "covered": [self.name],
                "missing": [], "generated_at": now, "oldest": now}
