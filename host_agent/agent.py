"""Agent state: sketches and counters, their capture rules, and the monitor processes.

A *sketch* is a packet filter (one iptables mark rule, see ``capture.py``)
with any number of *counters* (key type + increment + heavy-hitter, top-k,
window and sketch-size settings). Sketch ids are ints from 1; counter ids
are ints from 1 inside their sketch. Legacy clients name a counter by its
key type (``counter_key_type``): :meth:`Agent.legacy_counter` finds it. A
controller task (docs/design.md task model) is one sketch with one counter
(``install_task`` / ``remove_task`` / ``snapshot_task``, used by the overlay
role).

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

Limits (constructor arguments, ``--max-sketches`` etc.) are checked before
anything is installed: at most ``max_sketches`` sketches (and at most 32,
one mark bit each), ``max_counters`` counters in all, and ``max_memory_mb``
of sketch cells (width x depth x 8 bytes per counter per monitor process).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from host_agent.capture import MAX_SLOTS, Capture, CaptureFilter, free_slot

log = logging.getLogger("host_agent")

KEY_TYPES = ("src", "dst", "src_dst", "sport", "dport", "src_dport", "dst_dport", "proto",
             "five_tuple")
INCREMENTS = {"pkt": "pkt", "bytes": "bytes", "byte": "bytes"}
WINDOW_MODES = ("tumbling", "sliding")
DEFAULT_KEY = {"heavy_hitters": "src", "flow_size": "src_dst", "port_scan": "src_dport",
               "counter": "src"}
COUNTER_FIELDS = ("key", "increment", "threshold", "threshold_abs", "top_k", "window",
                  "scan_ports", "sketch")
LEGACY_THRESHOLD = 0.05
MAX_GAPS = 20


class AgentError(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class MonitorError(RuntimeError):
    """The monitor did not answer (dead, hung) or answered with an error."""


# ---------------------------------------------------------------- validation

def _number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite number in range; numeric strings are accepted (form bodies)."""
    if isinstance(value, bool):
        raise AgentError(400, f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise AgentError(400, f"{name} must be a number, got {value!r}") from None
    if not isinstance(value, int | float):
        raise AgentError(400, f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise AgentError(400, f"{name} is out of range") from None
    if not math.isfinite(value):
        raise AgentError(400, f"{name} must be a finite number, got {value!r}")
    if (value <= lo if lo_open else value < lo) or value > hi:
        raise AgentError(400, f"{name} {value:g} is out of range "
                              f"{'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(value)


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentError(400, f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise AgentError(400, f"{name} {value} is out of range {lo}..{hi}")
    return value


def _ident(name: str, value: Any) -> int:
    """A positive integer id: an int or a decimal string (form fields), nothing else."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9:
        return value
    raise AgentError(400, f"{name} must be an integer, got {value!r}")


def counter_spec(body: dict, default_threshold: float | None = LEGACY_THRESHOLD) -> dict:
    """Validate a counter body; return the normalised spec the monitor builds from."""
    if not isinstance(body, dict):
        raise AgentError(400, "counter must be a JSON object")
    unknown = sorted(set(body) - set(COUNTER_FIELDS))
    if unknown:
        raise AgentError(400, f"unknown field {unknown[0]!r}")
    if "key" not in body:
        raise AgentError(400, "missing field 'key'")
    key = body["key"]
    if not isinstance(key, str) or key not in KEY_TYPES:
        raise AgentError(400, f"key {key!r} is not one of {', '.join(KEY_TYPES)}")
    inc = body.get("increment", "pkt")
    if not isinstance(inc, str) or inc not in INCREMENTS:
        raise AgentError(400, f"increment {inc!r} is not one of pkt, bytes")
    threshold, threshold_abs = body.get("threshold"), body.get("threshold_abs")
    if threshold is not None and threshold_abs is not None:
        raise AgentError(400, "threshold and threshold_abs are exclusive: give one of them")
    if threshold is not None:
        threshold = _number("threshold", threshold, 0.0, 1.0, lo_open=True)
    elif threshold_abs is not None:
        threshold_abs = _int("threshold_abs", threshold_abs, 1, 2 ** 62)
    else:
        threshold = default_threshold
    window = body.get("window", {})
    if not isinstance(window, dict) or set(window) - {"length", "mode"}:
        raise AgentError(400, "window must be an object with length and mode")
    mode = window.get("mode", "tumbling")
    if mode not in WINDOW_MODES:
        raise AgentError(400, f"window.mode {mode!r} is not one of tumbling, sliding")
    sk = body.get("sketch", {})
    if not isinstance(sk, dict) or set(sk) - {"width", "depth", "seed"}:
        raise AgentError(400, "sketch must be an object with width, depth and seed")
    width = _int("sketch.width", sk.get("width", 16384), 64, 2 ** 22)
    if width & (width - 1):
        raise AgentError(400, f"sketch.width {width} is not a power of two")
    scan = body.get("scan_ports")
    if "top_k" in body and body["top_k"] is None:
        raise AgentError(400, "top_k must be an integer, got None")
    return {
        "key": key, "increment": INCREMENTS[inc],
        "threshold": threshold, "threshold_abs": threshold_abs,
        "top_k": _int("top_k", body.get("top_k", 10), 1, 1000),
        "window": {"length": _number("window.length", window.get("length", 1.0), 0.05, 3600),
                   "mode": mode},
        "sketch": {"width": width, "depth": _int("sketch.depth", sk.get("depth", 4), 1, 8),
                   "seed": _int("sketch.seed", sk.get("seed", 1), 0, 2 ** 31 - 1)},
        "scan_ports": None if scan is None else _int("scan_ports", scan, 1, 65535),
    }


def capture_filter(body: Any) -> CaptureFilter:
    try:
        return CaptureFilter.from_dict(body)
    except ValueError as exc:
        raise AgentError(400, str(exc)) from None


def spec_bytes(spec: dict) -> int:
    return spec["sketch"]["width"] * spec["sketch"]["depth"] * 8


# ---------------------------------------------------------------- monitor link

class MonitorProcess:
    """A monitor subprocess and its command socket (see monitor.py for the protocol)."""

    def __init__(self, queue: int, max_len: int = 4096, timeout: float = 10.0,
                 extra_args: list[str] | None = None) -> None:
        self.queue, self.max_len, self.timeout = queue, max_len, timeout
        self.extra = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.reader: Any = None
        self.lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "host_agent.monitor", "--queue", str(self.queue),
               "--fd", str(child.fileno()), "--max-len", str(self.max_len), *self.extra]
        self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        parent.settimeout(self.timeout)
        self.sock, self.reader = parent, parent.makefile("rb")
        self.call({"op": "ping"})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, msg: dict) -> Any:
        if self.sock is None:
            raise MonitorError("monitor not started")
        with self.lock:
            try:
                self.sock.sendall(json.dumps(msg).encode() + b"\n")
                line = self.reader.readline()
            except OSError as exc:
                raise MonitorError(f"monitor on queue {self.queue}: {exc}") from None
        if not line:
            raise MonitorError(f"monitor on queue {self.queue} is not running")
        reply = json.loads(line)
        if not reply.get("ok"):  # the monitor refuses bad input (e.g. a bad key)
            if reply.get("internal"):
                raise MonitorError(f"monitor on queue {self.queue}: {reply.get('error')}")
            raise AgentError(400, reply.get("error", "monitor refused the request"))
        return reply.get("result")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------- agent

@dataclass
class Sketch:
    id: int
    slot: int
    filter: CaptureFilter
    counters: dict[int, dict] = field(default_factory=dict)
    task_id: str | None = None
    created: float = 0.0
    next_counter: int = 1
    base: tuple[int, int] = (0, 0)     # rule counters when counting (re)started

    def describe(self) -> dict:
        return {"id": self.id, "filter": self.filter.to_dict(), "task": self.task_id,
                "created": self.created,
                "counters": [{"id": cid, **spec} for cid, spec in sorted(self.counters.items())]}


class Agent:
    """One host's measurement state; see the module docstring."""

    def __init__(self, name: str, monitors: list[Any], capture: Capture | None = None,
                 max_sketches: int = 32, max_counters: int = 128, max_memory_mb: float = 256,
                 clock: Callable[[], float] = time.time, data_ip: str | None = None) -> None:
        self.name, self.monitors, self.capture = name, monitors, capture
        self.max_sketches = min(max_sketches, MAX_SLOTS)
        self.max_counters, self.max_memory = max_counters, int(max_memory_mb * 2 ** 20)
        self.clock, self.data_ip = clock, data_ip
        self.sketches: dict[int, Sketch] = {}
        self.tasks: dict[str, int] = {}
        self.next_sketch = 1
        self.started = clock()
        self.counting_since = self.started
        self.restarts = 0
        self.gaps: list[dict] = []
        self.overlay: Any = None
        self.advertise: str | None = None
        self._retry_at: dict[int, float] = {}
        self._seen: dict[int, int] = {}
        self._polled = 0.0
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

    def _broadcast(self, msg: dict) -> list[Any]:
        return [mon.call(msg) for mon in self.monitors]

    # ------------------------------------------------------------ sketches
    def get_sketch(self, sid: Any) -> Sketch:
        sid = _ident("sketch_id", sid)
        sketch = self.sketches.get(sid)
        if sketch is None:
            raise AgentError(404, f"unknown sketch_id {sid}")
        return sketch

    def memory_used(self) -> int:
        per = sum(spec_bytes(s) for sk in self.sketches.values() for s in sk.counters.values())
        return per * max(1, len(self.monitors))

    def create_sketch(self, filter_body: Any, task_id: str | None = None) -> Sketch:
        filt = capture_filter(filter_body)
        with self.lock:
            if len(self.sketches) >= self.max_sketches:
                raise AgentError(409, f"limit reached: at most {self.max_sketches} sketches")
            slot = free_slot([s.slot for s in self.sketches.values()])
            sketch = Sketch(self.next_sketch, slot, filt, task_id=task_id, created=self.clock())
            self._broadcast({"op": "add_sketch", "sketch": sketch.id, "slot": slot})
            if self.capture is not None:
                try:
                    self.capture.add(sketch.id, slot, filt)
                except RuntimeError as exc:
                    self._broadcast({"op": "remove_sketch", "sketch": sketch.id})
                    raise AgentError(500, f"capture rule failed: {exc}") from None
            self.sketches[sketch.id] = sketch
            self.next_sketch += 1
        log.info("sketch %d created: %s", sketch.id, filt.to_dict())
        return sketch

    def delete_sketch(self, sid: Any) -> None:
        with self.lock:
            sketch = self.get_sketch(sid)
            if self.capture is not None:
                self.capture.remove(sketch.id)
            self._broadcast({"op": "remove_sketch", "sketch": sketch.id})
            del self.sketches[sketch.id]
            if sketch.task_id is not None:
                self.tasks.pop(sketch.task_id, None)
        log.info("sketch %d deleted", sketch.id)
        unshare = getattr(self.overlay, "unshare_legacy_sketch", None)
        if unshare is not None and sketch.task_id is None:
            try:
                unshare(sketch.id)
            except Exception as exc:  # noqa: BLE001 - the local delete is done
                log.warning("removing sketch %d from the subtree failed: %s", sketch.id, exc)

    def add_counter(self, sid: Any, body: dict,
                    default_threshold: float | None = LEGACY_THRESHOLD) -> int:
        spec = counter_spec(body, default_threshold)
        with self.lock:
            sketch = self.get_sketch(sid)
            total = sum(len(s.counters) for s in self.sketches.values())
            if total >= self.max_counters:
                raise AgentError(409, f"limit reached: at most {self.max_counters} counters")
            need = spec_bytes(spec) * max(1, len(self.monitors))
            if self.memory_used() + need > self.max_memory:
                raise AgentError(409, f"limit reached: sketch memory would exceed "
                                      f"{self.max_memory // 2 ** 20} MB")
            cid = sketch.next_counter
            self._broadcast({"op": "add_counter", "sketch": sketch.id, "counter": cid,
                             "spec": spec})
            sketch.counters[cid] = spec
            sketch.next_counter += 1
        log.info("counter %d on sketch %d: %s/%s", cid, sketch.id, spec["key"],
                 spec["increment"])
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
            self._broadcast({"op": "remove_counter", "sketch": sketch.id, "counter": cid})
            del sketch.counters[cid]

    def legacy_counter(self, sid: Any, key_type: Any) -> tuple[Sketch, int]:
        """The counter of ``key_type`` on a sketch (legacy messages name counters so)."""
        sketch = self.get_sketch(sid)
        if not isinstance(key_type, str) or key_type not in KEY_TYPES:
            raise AgentError(400, f"counter_key_type {key_type!r} is not one of "
                                  f"{', '.join(KEY_TYPES)}")
        for cid, spec in sorted(sketch.counters.items()):
            if spec["key"] == key_type:
                return sketch, cid
        raise AgentError(404, f"no counter of counter_key_type {key_type!r} "
                              f"on sketch {sketch.id}")

    # ------------------------------------------------------------ queries
    def query(self, sid: Any, cid: Any, method: str, **kw: Any) -> Any:
        """One query on a counter, combined over the monitor processes."""
        sketch, cid = self.get_counter(sid, cid)
        now = kw.pop("now", None) or self.clock()
        msg = {"op": "query", "sketch": sketch.id, "counter": cid, "method": method,
               "now": now, **kw}
        if len(self.monitors) == 1:
            return self.monitors[0].call(msg)
        if method == "estimate":
            return sum(self._broadcast(msg))
        snap = self._merged_snapshot(sketch.id, cid, now)
        if method == "snapshot":
            return snap
        if method == "heavy_hitters":
            return snap.get("heavy_hitters", {})
        if method == "window":
            return snap.get("window", {})
        if method == "scan":
            return snap.get("scan", {})
        return snap.get("top_k", [])

    def _merged_snapshot(self, sid: int, cid: int, now: float) -> dict:
        from measure_model.report import merge

        snaps = self._broadcast({"op": "query", "sketch": sid, "counter": cid,
                                 "method": "snapshot", "now": now})
        seen = [s.pop("seen", {"packets": 0, "bytes": 0}) for s in snaps]
        out = reduce(merge, snaps)
        out["seen"] = {"packets": sum(s["packets"] for s in seen),
                       "bytes": sum(s["bytes"] for s in seen)}
        return out

    def snapshot(self, sid: Any, cid: Any, now: float | None = None) -> dict:
        """The counter snapshot of docs/design.md, plus ``missed`` and monitor gaps."""
        now = now or self.clock()
        sketch, cid = self.get_counter(sid, cid)
        rules = self.capture.counters() if self.capture is not None else None
        snap = self.query(sketch.id, cid, "snapshot", now=now)
        seen = snap.pop("seen", None) or {"packets": 0, "bytes": 0}
        if rules is not None and sketch.id in rules:
            pk, by = rules[sketch.id]
            snap["missed"] = {"packets": max(0, pk - sketch.base[0] - seen["packets"]),
                              "bytes": max(0, by - sketch.base[1] - seen["bytes"])}
        else:
            snap["missed"] = None
        if not snap.get("covered"):
            snap["covered"] = [self.name]
        snap.setdefault("missing", [])
        snap.setdefault("generated_at", now)
        snap.setdefault("oldest", now)
        snap["monitor"] = {"restarts": self.restarts, "gaps": list(self.gaps),
                           "counting_since": max(self.counting_since, sketch.created)}
        return snap

    # ------------------------------------------------------------ tasks (overlay)
    def install_task(self, task: dict) -> int:
        """Install a task-model dict (with ``id``) as one sketch + one counter."""
        if not isinstance(task, dict):
            raise AgentError(400, "task must be an object")
        task_id = str(task.get("id") or task.get("name") or "")
        if not task_id:
            raise AgentError(400, "task has no id")
        kind = task.get("kind", "counter")
        if kind not in DEFAULT_KEY:
            raise AgentError(400, f"kind {kind!r} is not a measurement task")
        body = {k: task[k] for k in COUNTER_FIELDS if task.get(k) is not None}
        body.setdefault("key", DEFAULT_KEY[kind])
        if kind == "port_scan":
            body.setdefault("scan_ports", 20)
        # flow_size ranks every flow: no fraction threshold (a flow small against the
        # whole network's total is still a flow); the other kinds keep the default
        default = None if kind == "flow_size" else LEGACY_THRESHOLD
        spec = counter_spec(body, default)
        filt = capture_filter(task.get("filter", {}))
        with self.lock:
            if task_id in self.tasks:
                self.remove_task(task_id)
            sketch = self.create_sketch(filt.to_dict(), task_id=task_id)
            try:
                self.add_counter(sketch.id, {k: v for k, v in spec.items() if v is not None},
                                 default_threshold=default)
            except AgentError:
                self.delete_sketch(sketch.id)
                raise
            self.tasks[task_id] = sketch.id
        return sketch.id

    def remove_task(self, task_id: str) -> None:
        with self.lock:
            if task_id not in self.tasks:
                raise KeyError(task_id)
            self.delete_sketch(self.tasks[task_id])

    def snapshot_task(self, task_id: str, now: float) -> dict:
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
                    mon.call({"op": "add_sketch", "sketch": sketch.id, "slot": sketch.slot,
                              "counters": {str(c): s for c, s in sketch.counters.items()}})
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
            seen = mon.call({"op": "stats"})["seen"]
        except (MonitorError, AgentError):
            return
        self._seen = {int(sid): pk for sid, (pk, _) in seen.items()}

    def health(self) -> dict:
        mons = []
        for m in self.monitors:
            alive = m.alive() if hasattr(m, "alive") else True
            info = {"queue": getattr(m, "queue", None), "pid": getattr(m, "pid", None),
                    "alive": alive, "packets": None}
            if alive:
                try:
                    stats = m.call({"op": "stats"})
                    info.update(packets=stats["packets"], unmatched=stats["unmatched"],
                                batches=stats["batches"])
                except (MonitorError, AgentError):
                    info["alive"] = False
            mons.append(info)
        return {"name": self.name, "status": "ok" if all(m["alive"] for m in mons) else "degraded",
                "uptime": self.clock() - self.started, "sketches": len(self.sketches),
                "counters": sum(len(s.counters) for s in self.sketches.values()),
                "tasks": sorted(self.tasks), "memory_bytes": self.memory_used(),
                "monitors": mons, "restarts": self.restarts, "gaps": list(self.gaps),
                "counting_since": self.counting_since, "pid": os.getpid()}
