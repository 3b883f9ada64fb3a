"""Agent state: sketches and counters, their capture rules, and the monitor processes.

A *sketch* is a packet filter (one iptables mark rule, see ``capture.py``)
with any number of *counters*; the state is in ``sketches.py``. Every
counter is a parsed ``measure_model.task.Task``: a per-host counter body
(``add_counter``) is translated by ``measure_model.task.counter_task``, the
legacy messages by ``host_agent.legacy.messages``, and a controller task
(docs/design.md task model) arrives parsed and becomes one sketch with one
counter (``install_task(task_id, task, candidate_divisor=n)`` /
``remove_task`` / ``snapshot_task``, used by the overlay role). Nothing in
the agent checks a task field again; the monitor receives ``Task.to_dict()``
and reads it back with ``Task.from_dict()``. Sketch ids are ints from 1;
counter ids are ints from 1 inside their sketch. Legacy clients name a
counter by its key type (``counter_key_type``): :meth:`Agent.legacy_counter`
finds it.

The counters live in the monitor processes (one per queue, see
``monitor.py``); the agent keeps the configuration, so that it can restart
a dead monitor and re-install everything. :meth:`Agent.tick` (called by the
agent's supervisor loop) notices a dead monitor, restarts it, and records
the gap: ``restarts``, and ``gaps`` with start/end times (start = when the
death was noticed) and ``unmeasured_packets_max``: packets the rules
matched that the dead monitor had not counted at its last poll (once a
second), i.e. an upper bound of what passed unmeasured around the gap
(``null`` with several queues or without capture). Reported in health and
in every snapshot.
Counts restart from zero with the monitor; ``counting_since`` says when.

``missed`` in a snapshot = packets (and bytes) the sketch's iptables rule
matched since ``counting_since`` minus those the monitor counted: traffic
accepted by fail-open on a full queue or by ``--queue-bypass`` while no
monitor was bound. It is ``null`` when the agent runs without capture rules.

A ``path_health`` or ``tcp_health`` task has no capture rule and no
counter: the agent's probe process (``host_agent.probes``) serves it, and
its snapshot is the task's ``paths`` or ``tcp`` section.

A ``flows`` task is one sketch whose capture rule feeds both a five_tuple
counter (``measure_model.task.flow_counter``: what travels up the overlay)
and a flow cache in each monitor (``add_flows``: the task in its wire form
plus the collectors' addresses, resolved here so the monitor never waits
for DNS). A sampled task's rule carries the iptables ``statistic`` match.
Health and the monitors' cost are assembled in ``agent_health.py``.

Limits (constructor arguments, ``--max-sketches`` etc.) are checked before
anything is installed: at most ``max_sketches`` sketches (and at most 32,
one mark bit each), ``max_counters`` counters in all, and ``max_memory_mb``
of sketch cells (width x depth x 8 bytes per counter per monitor process).
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from functools import reduce
from typing import Any

from host_agent import health as agent_health
from host_agent.capture.rules import MAX_SLOTS, CaptureFilter, free_slot
from host_agent.counters.sketches import CounterConfig, Sketch
from host_agent.errors import AgentError, MonitorError
from host_agent.monitor.commands import (
    AddCounter,
    AddFlows,
    Command,
    FlowsTop,
    Query,
    RemoveCounter,
    RemoveSketch,
    Stats,
)
from host_agent.monitor.crash_loop import CrashLoop
from host_agent.probes import ProbeMesh
from host_agent.protocols import CaptureRules, Monitor
from measure_model.fields import FieldError, parse_host_port
from measure_model.task import (
    DEFAULT_CAPTURE,
    FILTER,
    KEYS,
    Task,
    counter_task,
    field_value,
    flow_counter,
)
from measure_model.wire.report import merge
from measure_model.wire.snapshot import Snapshot

log = logging.getLogger("host_agent")

MAX_GAPS = 20
COST_MAX_AGE = 1.0  # seconds a cost reading is reused for (see Agent.cost)


def _ident(name: str, value: Any) -> int:
    """A positive integer id: an int or a decimal string (form fields), nothing else."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9:
        return value
    raise AgentError(400, f"{name} must be an integer, got {value!r}")


def capture_filter(body: Any) -> CaptureFilter:
    """A filter body (task-model ``filter``) as the capture rule's filter; 400 if bad."""
    try:
        return CaptureFilter.from_filter(FILTER.check("filter", body))
    except FieldError as exc:
        raise AgentError(400, str(exc)) from None


def parse_capture_mode(value: Any) -> str:
    """A capture mode (the task table's ``capture`` row); 400 naming the field."""
    try:
        return field_value("capture", {"capture": value})
    except FieldError as exc:
        raise AgentError(400, str(exc)) from None


def parse_counter(body: Any, filt: CaptureFilter) -> Task:
    """A per-host counter body as a Task on a sketch's filter; 400 naming the field."""
    try:
        return counter_task(body, "counter", filt.to_dict())
    except FieldError as exc:
        raise AgentError(400, str(exc)) from None


def resolve_collector(collector: str) -> str | None:
    """The collector's address, resolved here (the agent's loop, not the monitor's packet
    loop, waits for DNS); None when the name does not resolve (the monitor reports it)."""
    host, port = parse_host_port(collector)
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
    except OSError as exc:
        log.warning("collector %s does not resolve: %s", collector, exc)
        return None


def flows_entry(task: Task) -> dict[str, Any]:
    """The monitor protocol's flow-cache entry of a flows task."""
    return {"task": task.to_dict(),
            "addresses": [resolve_collector(t.collector) for t in task.export or ()]}


class Agent:
    """One host's measurement state; see the module docstring."""

    def __init__(self, name: str, monitors: list[Monitor], capture: CaptureRules | None = None,
                 max_sketches: int = 32, max_counters: int = 128, max_memory_mb: float = 256,
                 clock: Callable[[], float] = time.time, data_ip: str | None = None,
                 capture_mode: str | None = None, probes: ProbeMesh | None = None) -> None:
        self.name, self.monitors, self.capture = name, monitors, capture
        # the probe process of path_health / tcp_health tasks (None: started on first use)
        self.probes = probes
        self.health_tasks: dict[str, Task] = {}
        # None: each task's ``capture`` field decides; else every sketch uses this mode
        self.capture_mode = None if capture_mode is None else parse_capture_mode(capture_mode)
        self.max_sketches = min(max_sketches, MAX_SLOTS)
        self.max_counters, self.max_memory = max_counters, int(max_memory_mb * 2 ** 20)
        self.clock, self.data_ip = clock, data_ip
        self.sketches: dict[int, Sketch] = {}
        self.tasks: dict[str, int] = {}
        self.next_sketch = 1
        self.started = clock()
        self.counting_since = self.started
        self.restarts = 0
        self.crash_loop = CrashLoop()
        self.cost_meter = agent_health.CostMeter()
        self.gaps: list[dict] = []
        self.advertise: str | None = None
        self._retry_at: dict[int, float] = {}
        self._seen: dict[int, int] = {}
        self._polled = 0.0
        # Each reading of the capture rules' counters forks iptables-save and
        # ip6tables-save: one reading serves every snapshot taken with the same ``now``
        # (the overlay snapshots all the tasks due at an interval end with one ``now``),
        # and the cost object is read at most once per COST_MAX_AGE seconds.
        self._rules_read: tuple[float, dict[int, tuple[int, int]]] | None = None
        self._cost_read: tuple[float, dict] | None = None
        self.lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.capture is not None:
            removed = self.capture.remove_stale()
            if removed:
                log.info("removed %d stale capture rules/chains", removed)
            self.capture.setup()
        for mon in self.monitors:
            if hasattr(mon, "start"):
                mon.start()
        if self.probes is not None:
            try:
                self.probes.start()  # echoes peers' probes from the start
            except Exception as exc:  # noqa: BLE001 - tried again when a task needs it
                log.error("probe process did not start: %s", exc)
        self.counting_since = self.clock()

    def stop(self) -> None:
        if self.capture is not None:
            try:
                self.capture.teardown()
            except RuntimeError as exc:
                log.error("capture teardown: %s", exc)
        for mon in self.monitors:
            if hasattr(mon, "stop"):
                mon.stop()
        if self.probes is not None:
            self.probes.stop()

    def _broadcast(self, cmd: Command) -> list[Any]:
        return [mon.call(cmd) for mon in self.monitors]

    # ------------------------------------------------------------ sketches
    def get_sketch(self, sid: Any) -> Sketch:
        sid = _ident("sketch_id", sid)
        sketch = self.sketches.get(sid)
        if sketch is None:
            raise AgentError(404, f"unknown sketch_id {sid}")
        return sketch

    def memory_used(self) -> int:
        per = sum(c.cell_bytes for sk in self.sketches.values() for c in sk.counters.values())
        return per * max(1, len(self.monitors))

    def create_sketch(self, filter_body: Any, task_id: str | None = None,
                      sample: float = 1.0, sample_mode: str = "random",
                      capture: Any = DEFAULT_CAPTURE) -> Sketch:
        """A new sketch for a filter body, or an already parsed CaptureFilter; ``sample``
        < 1 makes its capture rule sample packets (iptables ``statistic``); captured with
        ``capture`` (or the agent's own mode when it has one)."""
        filt = (filter_body if isinstance(filter_body, CaptureFilter)
                else capture_filter(filter_body))
        mode = self.capture_mode or parse_capture_mode(capture)
        with self.lock:
            if len(self.sketches) >= self.max_sketches:
                raise AgentError(409, f"limit reached: at most {self.max_sketches} sketches")
            slot = free_slot([s.slot for s in self.sketches.values()], mode)
            if slot is None:
                raise AgentError(409, f"limit reached: every {mode} mark bit is in use")
            sketch = Sketch(self.next_sketch, slot, filt, task_id=task_id, created=self.clock(),
                            sample=sample, sample_mode=sample_mode, capture=mode)
            done = []
            try:
                for i, mon in enumerate(self.monitors):
                    mon.call(sketch.add_command(first=i == 0))
                    done.append(mon)
            except AgentError:
                for mon in done:
                    mon.call(RemoveSketch(sketch.id))
                raise
            if self.capture is not None and mode != "ebpf":
                try:
                    self.capture.add(sketch.id, slot, filt, sample, sample_mode, mode)
                except RuntimeError as exc:
                    self._broadcast(RemoveSketch(sketch.id))
                    raise AgentError(500, f"capture rule failed: {exc}") from None
            self.sketches[sketch.id] = sketch
            self.next_sketch += 1
        log.info("sketch %d created: %s", sketch.id, filt.to_dict())
        return sketch

    def delete_sketch(self, sid: Any) -> None:
        with self.lock:
            sketch = self.get_sketch(sid)
            if self.capture is not None and sketch.capture != "ebpf":
                self.capture.remove(sketch.id)
            self._broadcast(RemoveSketch(sketch.id))
            del self.sketches[sketch.id]
            if sketch.task_id is not None:
                self.tasks.pop(sketch.task_id, None)
        log.info("sketch %d deleted", sketch.id)

    def add_counter(self, sid: Any, body: Any) -> int:
        """Add a per-host counter body (``measure_model.task.counter_task``) to a sketch."""
        return self.add_task_counter(sid, parse_counter(body, self.get_sketch(sid).filter))

    def add_task_counter(self, sid: Any, task: Task, candidate_divisor: int = 1) -> int:
        """Add a counter for a parsed task to a sketch (limits checked first)."""
        config = CounterConfig(task, candidate_divisor)
        with self.lock:
            sketch = self.get_sketch(sid)
            total = sum(len(s.counters) for s in self.sketches.values())
            if total >= self.max_counters:
                raise AgentError(409, f"limit reached: at most {self.max_counters} counters")
            need = config.cell_bytes * max(1, len(self.monitors))
            if self.memory_used() + need > self.max_memory:
                raise AgentError(409, f"limit reached: sketch memory would exceed "
                                      f"{self.max_memory // 2 ** 20} MB")
            cid = sketch.next_counter
            self._broadcast(AddCounter(sketch.id, cid, config.entry()))
            sketch.counters[cid] = config
            sketch.next_counter += 1
        log.info("counter %d on sketch %d: %s/%s", cid, sketch.id, task.key, task.increment)
        return cid

    def get_counter(self, sid: Any, cid: Any) -> tuple[Sketch, int]:
        sketch = self.get_sketch(sid)
        cid = _ident("counter id", cid)
        if cid not in sketch.counters:
            raise AgentError(404, f"unknown counter {cid} on sketch {sketch.id}")
        return sketch, cid

    def delete_counter(self, sid: Any, cid: Any) -> None:
        with self.lock:
            sketch, cid = self.get_counter(sid, cid)
            self._broadcast(RemoveCounter(sketch.id, cid))
            del sketch.counters[cid]

    def legacy_counter(self, sid: Any, key_type: Any) -> tuple[Sketch, int]:
        """The counter of ``key_type`` on a sketch (legacy messages name counters so)."""
        sketch = self.get_sketch(sid)
        if not isinstance(key_type, str) or key_type not in KEYS:
            raise AgentError(400, f"counter_key_type {key_type!r} is not one of "
                                  f"{', '.join(KEYS)}")
        for cid, config in sorted(sketch.counters.items()):
            if config.task.key == key_type:
                return sketch, cid
        raise AgentError(404, f"no counter of counter_key_type {key_type!r} "
                              f"on sketch {sketch.id}")

    # ------------------------------------------------------------ queries
    def query(self, sid: Any, cid: Any, method: str, now: float | None = None,
              key: str | None = None) -> Any:
        """One query on a counter, combined over the monitor processes."""
        sketch, cid = self.get_counter(sid, cid)
        now = now or self.clock()
        msg = Query(sketch.id, cid, method, now=now, key=key)
        if len(self.monitors) == 1:
            return self.monitors[0].call(msg)
        if method == "estimate":
            return sum(self._broadcast(msg))
        snap = self._merged_snapshot(sketch.id, cid, now)
        if method == "snapshot":
            return snap
        if method == "summary":  # merged from full snapshots (several monitors)
            from host_agent.monitor.core import summary

            return summary(dict(snap))
        if method == "heavy_hitters":
            return snap.get("heavy_hitters", {})
        if method == "window":
            return snap.get("window", {})
        if method == "scan":
            return snap.get("scan", {})
        return snap.get("top_k", [])

    def _merged_snapshot(self, sid: int, cid: int, now: float) -> Snapshot:
        snaps = self._broadcast(Query(sid, cid, "snapshot", now=now))
        if not snaps:
            raise MonitorError("no monitor runs on this agent (started with --no-capture): "
                               "it counts nothing")
        seen = [s.pop("seen", {"packets": 0, "bytes": 0}) for s in snaps]
        read = [r for s in snaps if isinstance(r := s.pop("read_at", None), int | float)]
        kernel = [k for s in snaps if (k := s.pop("ebpf_missed", None)) is not None]
        out = reduce(merge, snaps)
        if kernel:  # only the first monitor reads the eBPF capture
            out["ebpf_missed"] = kernel[0]
        out["seen"] = {"packets": sum(s["packets"] for s in seen),
                       "bytes": sum(s["bytes"] for s in seen)}
        if read:
            out["read_at"] = max(read)
        return out

    def snapshot(self, sid: Any, cid: Any, now: float | None = None, full: bool = True,
                 rules_max_age: float = 0.0) -> dict:
        """The counter snapshot of docs/design.md, plus ``missed`` and monitor gaps.

        ``full=False``: the summary (no sketch cells, no HyperLogLog registers);
        ``rules_max_age``: rule counters that old may come from the cache."""
        now = now or self.clock()
        sketch, cid = self.get_counter(sid, cid)
        # read before the monitor's counts: missed >= 0
        rules = self._rule_counters(now, rules_max_age)
        snap = self.query(sketch.id, cid, "snapshot" if full else "summary", now=now)
        seen = snap.pop("seen", None) or {"packets": 0, "bytes": 0}
        read_at = snap.pop("read_at", None)
        if isinstance(read_at, int | float) and math.isfinite(read_at):
            # the time the monitor read its counts: an interval's figures are the counts
            # between two reads, so its seconds are those between the reads
            snap["generated_at"] = float(read_at)
        if rules is not None and sketch.id in rules:
            pk, by = rules[sketch.id]
            snap["missed"] = {"packets": max(0, pk - sketch.base[0] - seen["packets"]),
                              "bytes": max(0, by - sketch.base[1] - seen["bytes"])}
        else:
            snap["missed"] = None
        kernel_missed = snap.pop("ebpf_missed", None)
        if sketch.capture == "ebpf":  # records that found the kernel's buffer full
            snap["missed"] = kernel_missed
        if not snap.get("covered"):
            snap["covered"] = [self.name]
        snap.setdefault("missing", [])
        snap.setdefault("generated_at", now)
        snap.setdefault("oldest", now)
        snap["monitor"] = {"restarts": self.restarts, "gaps": list(self.gaps),
                           "counting_since": max(self.counting_since, sketch.created),
                           "capture": sketch.capture}
        return snap

    # ------------------------------------------------------------ tasks (overlay)
    def install_task(self, task_id: str, task: Task, candidate_divisor: int = 1) -> int:
        """Install a parsed measurement task as one sketch + one counter.

        ``candidate_divisor`` is the number of agents in the task's scope when
        the threshold is absolute: each counter then keeps candidates from
        ``threshold_abs / n`` so that a key heavy in aggregate is found after
        the merge. Re-installing a task id replaces it.
        """
        if task.measures and not task.captures:
            return self._install_health(task_id, task)
        if not task.measures or task.filter is None:
            raise AgentError(400, f"kind {task.kind!r} is not a measurement task")
        # a port_scan task counts connection attempts only: its rules select just those
        filt = CaptureFilter.from_filter(task.filter, probes=task.kind == "port_scan")
        flows = task.kind == "flows"
        with self.lock:
            if task_id in self.tasks:
                self.remove_task(task_id)
            sketch = self.create_sketch(filt, task_id=task_id, sample=task.sample or 1.0,
                                        sample_mode=task.sample_mode or "random",
                                        capture=task.capture or DEFAULT_CAPTURE)
            try:
                self.add_task_counter(sketch.id, flow_counter(task) if flows else task,
                                      candidate_divisor)
                if flows:
                    entry = flows_entry(task)
                    self._broadcast(AddFlows(sketch.id, entry))
                    sketch.flows = entry
            except (AgentError, MonitorError):
                self.delete_sketch(sketch.id)
                raise
            self.tasks[task_id] = sketch.id
        return sketch.id

    def flows_top(self, task_id: str, n: int = 10, by: str = "bytes") -> list[dict]:
        """The task's ``n`` largest active flows on this agent (merged over monitors)."""
        sid = self.tasks.get(task_id)
        if sid is None or self.sketches[sid].flows is None:
            raise AgentError(404, f"task {task_id} has no flow cache here")
        rows = [r for part in self._broadcast(FlowsTop(sid, n, by)) for r in part]
        return sorted(rows, key=lambda r: r[by], reverse=True)[:n]

    def _install_health(self, task_id: str, task: Task) -> int:
        """A path_health or tcp_health task: no capture rule, the probe process serves it."""
        if self.probes is None:
            self.probes = ProbeMesh(self.name, local=[self.data_ip] if self.data_ip else None)
        with self.lock:
            if task_id in self.tasks:
                self.remove_task(task_id)
            try:
                self.probes.install(task_id, task)
            except Exception as exc:  # noqa: BLE001 - the probe process failed: a 500
                raise AgentError(500, f"probe process: {exc}") from None
            self.health_tasks[task_id] = task
        return 0

    def remove_task(self, task_id: str) -> None:
        with self.lock:
            if task_id in self.health_tasks:
                del self.health_tasks[task_id]
                if self.probes is not None:
                    self.probes.remove(task_id)
                return
            if task_id not in self.tasks:
                raise KeyError(task_id)
            self.delete_sketch(self.tasks[task_id])

    def snapshot_task(self, task_id: str, now: float) -> dict:
        health = self.health_tasks.get(task_id)
        if health is not None and self.probes is not None:
            return self.probes.snapshot(task_id, health, now)
        sid = self.tasks.get(task_id)
        if sid is None:
            raise KeyError(task_id)
        return self.snapshot(sid, min(self.sketches[sid].counters), now)

    # ------------------------------------------------------------ supervision
    def tick(self, now: float | None = None) -> None:
        """Restart dead monitors (re-installing every sketch) and record the gap."""
        when = now or self.clock()
        if len(self.monitors) == 1 and when - self._polled >= 1.0:
            self._poll_seen(when)
        for mon in self.monitors:
            if not hasattr(mon, "alive") or mon.alive():
                continue
            start = now or self.clock()
            if self._retry_at.get(id(mon), 0) > start:
                continue
            log.error("monitor on queue %s (pid %s) died; restarting", mon.queue, mon.pid)
            self.crash_loop.died(start)
            if self.crash_loop.looping(start):
                log.error("monitors are crash-looping: %d deaths within %g s",
                          self.crash_loop.threshold, self.crash_loop.window)
            with self.lock:
                mon.stop()
                try:
                    mon.start()
                except (OSError, MonitorError, AgentError) as exc:
                    log.error("monitor on queue %s did not start: %s (retry in 2 s)",
                              mon.queue, exc)
                    self._retry_at[id(mon)] = start + 2.0
                    continue
                rules = self.capture.counters() if self.capture is not None else None
                unmeasured = 0 if rules is not None and len(self.monitors) == 1 else None
                for sketch in self.sketches.values():
                    mon.call(sketch.add_command(
                        first=mon is self.monitors[0],
                        counters={str(c): cfg.entry() for c, cfg in sketch.counters.items()}))
                    if sketch.flows is not None:
                        mon.call(AddFlows(sketch.id, sketch.flows))
                    now_rule = (rules or {}).get(sketch.id, (0, 0))
                    if unmeasured is not None:
                        unmeasured += max(0, now_rule[0] - sketch.base[0]
                                          - self._seen.get(sketch.id, 0))
                    sketch.base = now_rule
                self._seen.clear()
                end = self.clock()
                self.restarts += 1
                self.counting_since = end
                self.gaps.append({"start": start, "end": end, "queue": mon.queue,
                                  "unmeasured_packets_max": unmeasured})
                del self.gaps[:-MAX_GAPS]
            log.info("monitor on queue %s restarted (pid %s)", mon.queue, mon.pid)

    def _poll_seen(self, when: float) -> None:
        """Remember what the monitor has counted per sketch (for the gap estimate)."""
        self._polled = when
        mon = self.monitors[0]
        if hasattr(mon, "alive") and not mon.alive():
            return
        try:
            seen = mon.call(Stats())["seen"]
        except (MonitorError, AgentError):
            return
        self._seen = {int(sid): pk for sid, (pk, _) in seen.items()}

    def _rule_counters(self, now: float,
                       max_age: float = 0.0) -> dict[int, tuple[int, int]] | None:
        """The capture rules' counters, read once per ``now`` (None without rules);
        ``max_age``: the capture's own cached reading that old will do."""
        if self.capture is None:
            return None
        if self._rules_read is None or self._rules_read[0] != now:
            self._rules_read = (now, self.capture.counters(max_age=max_age))
        return self._rules_read[1]

    def cost(self) -> dict:
        """The monitor cost object (``measure_model/cost.py``) as health reports it; a
        reading younger than ``COST_MAX_AGE`` is reused (every report carries it)."""
        now = self.clock()
        if self._cost_read is None or not 0 <= now - self._cost_read[0] < COST_MAX_AGE:
            self._cost_read = (now, self.health()["monitor"])
        return dict(self._cost_read[1])

    def health(self) -> dict:
        """``GET /agent/v1/health``: state, monitors, cost, flow caches (agent_health.py)."""
        return agent_health.health(self, (MonitorError, AgentError))
