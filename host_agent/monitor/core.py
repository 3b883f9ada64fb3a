"""The monitor process: one NFQUEUE + NFLOG packet loop feeding the sketches' counters.

Process model
-------------
The agent (HTTP on eventlet) and the monitor are separate processes, so the
per-packet loop never shares a GIL with HTTP handling. The agent starts the
monitor with ``subprocess`` (fork+exec of ``python -m host_agent.monitor``,
so nothing eventlet-patched is inherited) and hands it one end of a Unix
``socketpair`` (``--fd``). Over it runs the agent's one child channel
(:mod:`host_agent.ipc`: a JSON line per request, a reply line each), whose
requests are the dataclasses of :mod:`host_agent.monitor.commands` (add and
remove sketches, counters and flow caches, query a counter, stats).

Packet path
-----------
``NetfilterQueue.bind(queue, cb, max_len, COPY_PACKET, HEADER_COPY_BYTES)``
copies only the header bytes; fail-open is switched on with a raw
``NFQNL_MSG_CONFIG`` (a full queue accepts instead of dropping), together
with ``NFQA_CFG_F_GSO``: the kernel then queues GSO/GRO super-packets whole
instead of segmenting them first, so a "packet" (and its IPv4 total length)
is what the host's stack and the iptables rule counters see, and a TCP bulk
transfer costs the monitor one packet per super-packet, not per segment. The
callback only appends the payload and the packet mark and notes the packet
id. The main loop ``select``s over the netlink socket and the command
socket, drains at most ``BUDGET`` packets per turn (``run_socket`` on a
budgeted wrapper, so a flood cannot starve commands), then accepts all of
them with ONE ``NFQNL_MSG_VERDICT_BATCH`` message (the stock binding has no
batch verdict, so it is sent raw on the same socket): one syscall per burst
instead of one per packet, and the verdict never waits for counting. At low
rates a burst is one packet, so the added latency is one loop turn. Then it
flushes a batch every ``BATCH`` packets or ``FLUSH_S`` seconds: the
batch is split by mark value (usually one), parsed once per split with
``HeaderBatch.from_payloads`` and given to every counter of every sketch
whose mark bit is set (see ``capture.py`` for the mark scheme: one queue
carries all sketches, overlapping filters count in each). A sketch of a
``flows`` task also feeds its flow cache (``flowexport.FlowTask``) with the
same parsed batch; the loop expires flows and sends records off the packet
path (``MonitorCore.tick``, every turn, acting twice a second).

Passive capture. The same loop also reads the NFLOG group numbered like the
queue (``nflog.py``): packets of ``capture: nflog`` sketches arrive there as
header copies in kernel-made batches, never wait for a verdict, and go into
the same ``payloads``/``marks`` lists, so both modes share one batch path.
What the kernel could not deliver (sequence gaps, ENOBUFS) is in ``stats``.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from host_agent.counters.protocol import Counter
from host_agent.ipc import ServerChannel
from host_agent.monitor import commands as cmds

BATCH = 4096
# at low rates a batch is what arrived in FLUSH_S: every batch costs each counter a fixed
# numpy overhead, so with a dozen counters 20 ms batches of a 250 packet/s flow took
# 0.12 CPU s per second; 100 ms batches take a fifth of it. A query flushes first, so
# answers still count every packet until then; windows and flows see packet times up to
# FLUSH_S late
FLUSH_S = 0.1
BUDGET = 512

# nfnetlink constants for the fail-open message (linux/netfilter/nfnetlink_queue.h)
_NFNL_SUBSYS_QUEUE = 3
_NFQNL_MSG_CONFIG = 2
_NLM_F_REQUEST = 1
_NFQA_CFG_MASK = 4
_NFQA_CFG_FLAGS = 5
_NFQA_CFG_F_FAIL_OPEN = 1
_NFQA_CFG_F_GSO = 4
_NFQNL_MSG_VERDICT_BATCH = 3
_NFQA_VERDICT_HDR = 2
_NF_ACCEPT = 1


def _ignore_mark(_: int) -> None:
    """The accept-only NFLOG path counts packets and does nothing with their marks."""


def fail_open_message(queue: int, gso: bool = True) -> bytes:
    """The ``NFQNL_MSG_CONFIG`` message turning on fail-open (and GSO) for ``queue``."""
    flags = _NFQA_CFG_F_FAIL_OPEN | (_NFQA_CFG_F_GSO if gso else 0)
    attrs = (struct.pack("=HH", 8, _NFQA_CFG_MASK) + struct.pack("!I", flags)
             + struct.pack("=HH", 8, _NFQA_CFG_FLAGS) + struct.pack("!I", flags))
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + attrs
    header = struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_CONFIG,
                         _NLM_F_REQUEST, 0, 0)
    return header + body


def verdict_batch_message(queue: int, last_id: int, verdict: int = _NF_ACCEPT) -> bytes:
    """``NFQNL_MSG_VERDICT_BATCH``: ``verdict`` for every queued packet with id <= last_id."""
    attr = struct.pack("=HH", 12, _NFQA_VERDICT_HDR) + struct.pack("!II", verdict, last_id)
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + attr
    header = struct.pack("=IHHII", 16 + len(body),
                         (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_VERDICT_BATCH, _NLM_F_REQUEST,
                         0, 0)
    return header + body


def default_counter_factory(entry: dict, now: float) -> Counter:
    """Build the engine's Counter from a counter entry of the protocol.

    ``entry`` is ``{"task": Task.to_dict(), "candidate_divisor": n}``: the
    task crosses the process boundary in its wire form and is read back
    with ``Task.from_dict`` (the one validator), then
    ``CounterSpec.from_task`` derives the engine's parameters.
    """
    from host_agent.counters.countmin import Counter, CounterSpec
    from host_agent.counters.elastic import ElasticCounter
    from measure_model.task import Task

    task = Task.from_dict(entry["task"], "monitor counter")
    divisor = entry.get("candidate_divisor", 1)
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise ValueError(f"candidate_divisor {divisor!r} is not a positive integer")
    if task.memory is not None:  # the whole state within task.memory
        return ElasticCounter(task, now)
    return Counter(CounterSpec.from_task(task, candidate_divisor=divisor), now)


EBPF_FIRST_SLOT = 32


def entry_task(entry: dict) -> Any:
    """The Task of a counter or flow-cache entry of the protocol."""
    from measure_model.task import Task

    return Task.from_dict(entry["task"], "monitor counter")


def ebpf_memory(task: Any) -> int:
    """Kernel bytes an eBPF sketch's buffers may take for one of its tasks: the task's
    ``memory``, else its sketch cells (width x depth x 8), else the default memory."""
    from measure_model.task import DEFAULT_MEMORY

    if task is None:
        return DEFAULT_MEMORY
    if task.memory:
        return int(task.memory)
    if task.sketch is not None:
        return int(task.sketch.width * task.sketch.depth * 8)
    return DEFAULT_MEMORY


def ebpf_period(tasks: Any) -> float:
    """Seconds between reads of an eBPF sketch: its shortest report interval, a quarter of
    a window (so window counts land within a quarter window of their packets), 1 s for a
    flow cache (timeouts); the agent's queries read too."""
    period = 5.0
    for task in tasks:
        period = min(period, task.report_interval or 5.0)
        if task.kind == "flows":
            period = min(period, 1.0)
        elif task.memory is None:  # a count-min counter's real-time window
            period = min(period, (task.window.length if task.window else 1.0) / 4)
    return max(0.05, period)


def default_batch_parser(payloads: list[bytes]) -> Any:
    from measure_model.packet.keys import HeaderBatch

    return HeaderBatch.from_payloads(payloads)


def ip_bytes(payloads: list[bytes]) -> int:
    """Sum of the IP lengths of the copied headers (IPv4 total length, IPv6 40 + payload)."""
    total = 0
    for p in payloads:
        if len(p) >= 6 and p[0] >> 4 == 6:
            total += 40 + ((p[4] << 8) | p[5])
        elif len(p) >= 4:
            total += (p[2] << 8) | p[3]
    return total


def process_cost() -> tuple[float, int]:
    """This process's CPU seconds (user + system) and resident memory in bytes."""
    times = os.times()
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    return times.user + times.system, rss


class SketchState:
    """One sketch inside the monitor: its mark bit, counters, flow cache and seen totals.

    An eBPF sketch (``ebpf`` set: its filter and sampling) has no mark bit any
    packet carries (slots 32..47); its records come from the kernel's maps.
    """

    __slots__ = ("sketch", "bit", "slot", "counters", "flows", "packets", "bytes", "ebpf",
                 "tasks", "missed", "next_poll", "hurry")

    def __init__(self, sketch: int, slot: int, ebpf: dict | None = None) -> None:
        self.sketch, self.bit, self.slot = sketch, 1 << slot, slot
        self.counters: dict[int, Counter] = {}
        self.flows: Any = None
        self.packets = 0
        self.bytes = 0
        self.ebpf = ebpf
        self.tasks: dict[int, Any] = {}   # counter id (0: the flow cache) -> Task
        self.missed = [0, 0]
        self.next_poll = 0.0
        self.hurry = 1.0   # eBPF read period divisor: doubles while reads find buffers half full


class MonitorCore:
    """Sketch state and command handling, independent of NFQUEUE (unit-testable)."""

    def __init__(self,
                 counter_factory: Callable[[dict, float], Counter] = default_counter_factory,
                 batch_parser: Callable[[list[bytes]], Any] = default_batch_parser) -> None:
        self.factory, self.parse = counter_factory, batch_parser
        self.sketches: dict[int, SketchState] = {}
        self.packets = 0
        self.unmatched = 0
        self.batches = 0
        self.errors = 0
        self.started = time.time()
        self.queue = 0  # set by run(): flow exports use (queue << 16) | sketch as domain
        self.nflog: Any = None   # the NflogReader when run() bound one
        self.ebpf: Any = None    # the EbpfCapture when run() loaded one
        self.ebpf_error = "this monitor has no eBPF capture (no data interface given)"
        self.ebpf_records = 0

    def ingest(self, payloads: list[bytes], marks: list[int], now: float) -> None:
        """Count one batch: split by mark, parse once per split, update counters."""
        self.packets += len(payloads)
        self.batches += 1
        first = marks[0]
        if marks.count(first) == len(marks):
            groups = {first: payloads}
        else:
            groups = {}
            for p, m in zip(payloads, marks, strict=True):
                groups.setdefault(m, []).append(p)
        for mark, group in groups.items():
            batch = None
            nbytes = -1
            matched = False
            for state in self.sketches.values():
                if not mark & state.bit:
                    continue
                matched = True
                if nbytes < 0:
                    nbytes = ip_bytes(group)
                state.packets += len(group)
                state.bytes += nbytes
                if state.counters or state.flows is not None:
                    if batch is None:
                        batch = self.parse(group)
                    for counter in state.counters.values():
                        counter.update(batch, now)
                    if state.flows is not None:
                        state.flows.update(batch, now)
            if not matched:
                self.unmatched += len(group)

    def ebpf_stats(self) -> dict[str, Any]:
        """The eBPF capture's state: loaded or why not, program ids, the program's counts."""
        if self.ebpf is None:
            return {"available": False, "error": self.ebpf_error}
        return {"available": True, "interface": self.ebpf.interface,
                "attached": self.ebpf.prog_ids() if self.ebpf.attached else {},
                "program": self.ebpf.stats(), "records": self.ebpf_records,
                "slots": sorted(s - EBPF_FIRST_SLOT for s in
                                (st.slot for st in self.sketches.values() if st.ebpf))}

    def tick(self, now: float) -> None:
        """Per-loop-turn work off the packet path: eBPF reads when due, flow expiry and
        export."""
        for state in self.sketches.values():
            if state.ebpf is not None and now >= state.next_poll:
                self.poll_ebpf(state, now)
            if state.flows is not None:
                state.flows.tick(now)

    def next_poll(self) -> float | None:
        """When the next eBPF read is due (None without eBPF sketches)."""
        return min((s.next_poll for s in self.sketches.values() if s.ebpf is not None),
                   default=None)

    def poll_ebpf(self, state: SketchState, now: float) -> None:
        """Read an eBPF sketch's retired buffer into its counters (see ebpf.py)."""
        try:
            drained = self.ebpf.drain(state.slot - EBPF_FIRST_SLOT)
        except Exception:
            state.next_poll = self._next_read(state, now)  # retried next period, no spin
            raise
        full = drained.keys.shape[0] * 2 > self.ebpf.slots[state.slot - EBPF_FIRST_SLOT].entries
        state.hurry = min(256.0, state.hurry * 2) if full else max(1.0, state.hurry / 2)
        state.next_poll = self._next_read(state, now)
        self._ingest_records(state, drained, now)

    def _ingest_records(self, state: SketchState, drained: Any, now: float) -> None:
        if drained is None:
            return
        state.missed[0] += drained.missed[0]
        state.missed[1] += drained.missed[1]
        if not drained.keys.shape[0]:
            return
        batch = drained.batch()
        state.packets += batch.packets
        state.bytes += int(drained.nbytes.sum(dtype="uint64"))
        self.ebpf_records += int(drained.keys.shape[0])
        for counter in state.counters.values():
            counter.update(batch, now)
        if state.flows is not None:
            state.flows.update(batch, now)

    def _configure_ebpf(self, state: SketchState, now: float) -> None:
        """Write an eBPF sketch's filter, key fields and buffer size into the kernel."""
        from host_agent.capture import ebpf

        if self.ebpf is None:
            raise ValueError(f"capture: ebpf is not available on this host: {self.ebpf_error}")
        info = state.ebpf or {}
        fields = 0
        memory = 0
        for task in state.tasks.values():
            fields |= ebpf.key_fields(task.kind, task.key or "five_tuple")
            memory += ebpf_memory(task)
        cfg = ebpf.slot_config(info.get("filter") or {}, fields, info.get("sample", 1.0),
                               info.get("sample_mode", "random"), bool(info.get("probes")))
        if not self.ebpf.attached:
            self.ebpf.attach()
        leftover = self.ebpf.configure(state.slot - EBPF_FIRST_SLOT, cfg,
                                       memory or ebpf_memory(None))
        self._ingest_records(state, leftover, now)
        # a task that wants faster reads takes effect now, not after the read already
        # scheduled: a sketch's first read (before its flow task came) is 5 s away, and a
        # 4.5 s flow went out as one record instead of parts of the 2 s active timeout
        state.next_poll = min(state.next_poll, self._next_read(state, now))

    @staticmethod
    def _next_read(state: SketchState, now: float) -> float:
        """When an eBPF sketch read at ``now`` is read next: its tasks' period, shorter
        while reads find its buffers half full."""
        return now + max(0.005, ebpf_period(state.tasks.values()) / state.hurry)

    def close(self, now: float) -> None:
        """Export every cached flow (the monitor is stopping)."""
        for state in self.sketches.values():
            if state.flows is not None:
                state.flows.close(now)
                state.flows = None

    def handle(self, msg: dict[str, Any], now: float) -> Any:
        """Execute one request line; return its result or raise ValueError/KeyError."""
        return self.execute(cmds.from_wire(msg), now)

    def execute(self, cmd: cmds.Command, now: float) -> Any:
        """Execute one command; return its result or raise ValueError/KeyError."""
        if isinstance(cmd, cmds.Ping):
            return {"pid": os.getpid()}
        if isinstance(cmd, cmds.Stats):
            return self.stats()
        if isinstance(cmd, cmds.AddSketch):
            new = SketchState(cmd.sketch, cmd.slot, cmd.ebpf)
            for cid, entry in cmd.counters.items():
                new.counters[int(cid)] = self.factory(entry, now)
                new.tasks[int(cid)] = entry_task(entry)
            if new.ebpf is not None:
                if not EBPF_FIRST_SLOT <= new.slot < EBPF_FIRST_SLOT + 16:
                    raise ValueError(f"capture: ebpf slot {new.slot} out of range")
                self._configure_ebpf(new, now)
            self.sketches[new.sketch] = new
            return None
        if isinstance(cmd, cmds.RemoveSketch):
            gone = self.sketches.pop(cmd.sketch, None)
            if gone is not None and gone.ebpf is not None and self.ebpf is not None:
                self.ebpf.remove(gone.slot - EBPF_FIRST_SLOT)
            if gone is not None and gone.flows is not None:
                gone.flows.close(now)
            return None
        state = self.sketches.get(cmd.sketch)
        if state is None:
            raise KeyError(f"unknown sketch {cmd.sketch!r}")
        if isinstance(cmd, cmds.AddCounter):
            state.counters[cmd.counter] = self.factory(cmd.entry, now)
            if state.ebpf is not None:
                state.tasks[cmd.counter] = entry_task(cmd.entry)
                self._configure_ebpf(state, now)
        elif isinstance(cmd, cmds.RemoveCounter):
            state.counters.pop(cmd.counter, None)
            if state.ebpf is not None and state.tasks.pop(cmd.counter, None):
                self._configure_ebpf(state, now)
        elif isinstance(cmd, cmds.AddFlows):
            self._add_flows(state, cmd.entry, now)
            if state.ebpf is not None:
                state.tasks[0] = entry_task(cmd.entry)
                self._configure_ebpf(state, now)
        elif isinstance(cmd, cmds.RemoveFlows):
            if state.flows is not None:
                state.flows.close(now)
                state.flows = None
        elif isinstance(cmd, cmds.FlowsTop):
            if state.flows is None:
                raise KeyError(f"sketch {state.sketch} has no flow cache")
            return state.flows.cache.top(cmd.n, cmd.by)
        elif isinstance(cmd, cmds.Query):
            return self._query(state, cmd, now)
        return None

    def stats(self) -> dict[str, Any]:
        cpu, rss = process_cost()
        return {"seen": {str(s): [st.packets, st.bytes] for s, st in self.sketches.items()},
                "packets": self.packets, "unmatched": self.unmatched,
                "batches": self.batches, "errors": self.errors, "started": self.started,
                "cpu_seconds": cpu, "rss_bytes": rss,
                "flows": {str(s): st.flows.describe() for s, st in self.sketches.items()
                          if st.flows is not None},
                "nflog": self.nflog.stats() if self.nflog is not None else None,
                "ebpf": self.ebpf_stats()}

    def _add_flows(self, state: SketchState, entry: dict[str, Any], now: float) -> None:
        from host_agent.flows.export import FlowTask

        if state.flows is not None:
            state.flows.close(now)
        domain = (self.queue << 16) | (state.sketch & 0xFFFF)  # one stream per process
        state.flows = FlowTask.from_entry(entry, domain=domain, now=now)

    def _query(self, state: SketchState, cmd: cmds.Query, now: float) -> Any:
        counter = state.counters.get(cmd.counter)
        if counter is None:
            raise KeyError(f"unknown counter {cmd.counter!r}")
        when = now if cmd.now is None else cmd.now
        if state.ebpf is not None and self.ebpf is not None:
            self.poll_ebpf(state, now)  # the answer includes every packet until now
        if cmd.method in ("snapshot", "summary"):
            snap = summary(counter.snapshot(when, include_sketch=False)) \
                if cmd.method == "summary" else counter.snapshot(when)
            snap["seen"] = {"packets": state.packets, "bytes": state.bytes}
            snap["read_at"] = now  # when the counts were read (the agent's clock may lag)
            if state.ebpf is not None:
                snap["ebpf_missed"] = {"packets": state.missed[0], "bytes": state.missed[1]}
            if state.flows is not None:  # a flows task: when its listed flows were seen
                listed = list(dict.fromkeys([*snap.get("candidates", {}),
                                             *(kv[0] for kv in snap.get("top_k", []))]))
                snap["flow_times"] = state.flows.cache.times(listed)
            return snap
        if cmd.method == "estimate":
            if cmd.key is None:
                raise ValueError("estimate needs a key")
            return counter.estimate(cmd.key)
        if cmd.method == "window":
            return counter.window(when)
        if cmd.method == "scan":
            return counter.scan(when)
        if cmd.method == "heavy_hitters":
            return counter.heavy_hitters()
        return counter.top_k()


def summary(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its unbounded parts (sketch cells, HyperLogLog registers)."""
    snap.pop("sketch", None)
    distinct = snap.get("distinct")
    if isinstance(distinct, dict):
        distinct.pop("hll", None)
    snap["summary"] = True
    return snap


class _Budget:
    """A socket stand-in for ``run_socket`` that stops after ``left`` receives."""

    __slots__ = ("sock", "left")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.left = sock, 0

    def recv(self, size: int) -> bytes:
        if self.left <= 0:
            raise BlockingIOError(errno.EAGAIN, "budget spent")
        self.left -= 1
        return self.sock.recv(size)


def run(queue: int, cmd_sock: socket.socket, max_len: int = 4096, accept_only: bool = False,
        fail_open: bool = True, core: MonitorCore | None = None,
        batch_verdicts: bool = True, priority: int = -10, nflog: bool = True,
        nflog_threshold: int = 64, ebpf_interface: str | None = None) -> None:
    """Bind ``queue`` (and the NFLOG group of the same number), load the eBPF capture on
    ``ebpf_interface`` (removing a crashed monitor's programs; attached once an eBPF
    sketch arrives) and serve packets and commands until the agent hangs up."""
    from netfilterqueue import COPY_PACKET, NetfilterQueue

    from host_agent.capture.nflog import NflogReader
    from measure_model.packet.keys import HEADER_COPY_BYTES

    core = core or MonitorCore()
    core.queue = queue
    if ebpf_interface:
        load_ebpf(core, ebpf_interface)
    if priority:
        try:  # wake up ahead of bulk work: the verdict path waits on this process
            os.setpriority(os.PRIO_PROCESS, 0, priority)
        except OSError:
            pass
    payloads: list[bytes] = []
    marks: list[int] = []
    add_payload, add_mark = payloads.append, marks.append
    accepted = [0]

    last_id = [0]
    if accept_only and not batch_verdicts:
        def callback(pkt: Any) -> None:
            pkt.accept()
            accepted[0] += 1
    elif accept_only:
        def callback(pkt: Any) -> None:
            last_id[0] = pkt.id
            accepted[0] += 1
    elif not batch_verdicts:
        def callback(pkt: Any) -> None:
            add_payload(pkt.get_payload())
            add_mark(pkt.mark)
            pkt.accept()
    else:
        def callback(pkt: Any) -> None:
            add_payload(pkt.get_payload())
            add_mark(pkt.mark)
            last_id[0] = pkt.id

    nfq = NetfilterQueue()
    nfq.bind(queue, callback, max_len=max_len, mode=COPY_PACKET, range=HEADER_COPY_BYTES,
             sock_len=8 * 1024 * 1024)
    nl = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW, 12)
    if fail_open:
        nl.send(fail_open_message(queue))
    nl.setblocking(False)
    budget = _Budget(nl)
    reader = NflogReader(queue, HEADER_COPY_BYTES, nflog_threshold) if nflog else None
    core.nflog = reader
    log_payload: Callable[[bytes], None] = add_payload
    log_mark: Callable[[int], None] = add_mark
    if reader is not None and accept_only:
        def count_only(_: bytes) -> None:
            accepted[0] += 1
        log_payload, log_mark = count_only, _ignore_mark
    chan = ServerChannel(cmd_sock)
    watched = [nl, chan] if reader is None else [nl, reader, chan]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    last_flush = time.monotonic()
    try:
        while not stop[0]:
            timeout = FLUSH_S if payloads else 0.5
            due = core.next_poll()
            if due is not None:
                timeout = max(0.0, min(timeout, due - time.time()))
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if nl in ready:
                budget.left = BUDGET
                nfq.run_socket(budget)  # type: ignore[arg-type]  # duck-typed recv()
                if last_id[0]:  # one verdict message for everything just drained
                    nl.send(verdict_batch_message(queue, last_id[0]))
                    last_id[0] = 0
            if reader is not None and reader in ready:
                reader.drain(log_payload, log_mark)
            mono = time.monotonic()
            if payloads and (len(payloads) >= BATCH or mono - last_flush >= FLUSH_S
                             or chan in ready):
                try:
                    core.ingest(payloads, marks, time.time())
                except Exception as exc:  # noqa: BLE001 - lose a batch, not the counters
                    core.errors += 1
                    print(f"monitor: batch of {len(payloads)} dropped: {exc!r}",
                          file=sys.stderr, flush=True)
                payloads.clear()
                marks.clear()
                last_flush = mono
            elif not payloads:
                last_flush = mono
            try:
                core.tick(time.time())
            except Exception as exc:  # noqa: BLE001 - a read or export problem must not stop counting
                core.errors += 1
                print(f"monitor: eBPF read or flow export: {exc!r}", file=sys.stderr, flush=True)
            if chan in ready:
                msgs = chan.read()
                if msgs is None:
                    break
                if accepted[0]:  # accept-only modes count in the callback
                    core.packets = max(core.packets, accepted[0])
                chan.serve(msgs, lambda msg: core.handle(msg, time.time()))
    finally:
        try:  # count what is pending and export every cached flow before leaving
            if payloads:
                core.ingest(payloads, marks, time.time())
            core.close(time.time())
        except Exception as exc:  # noqa: BLE001 - unbinding matters more
            print(f"monitor: final flow export: {exc!r}", file=sys.stderr, flush=True)
        nfq.unbind()
        if reader is not None:
            reader.close()
        if core.ebpf is not None:
            core.ebpf.close()


def load_ebpf(core: MonitorCore, interface: str) -> None:
    """Load the eBPF programs for ``interface`` into ``core`` and detach stale ones; on
    failure keep the reason (eBPF sketches are then refused naming ``capture``)."""
    from host_agent.capture.ebpf import EbpfCapture, EbpfError

    try:
        core.ebpf = EbpfCapture(interface)
        removed = core.ebpf.remove_stale()
        if removed:
            print(f"monitor: removed {removed} stale eBPF programs from {interface}",
                  file=sys.stderr, flush=True)
    except (EbpfError, OSError) as exc:
        core.ebpf, core.ebpf_error = None, str(exc)
        print(f"monitor: eBPF capture unavailable: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host_agent.monitor",
                                     description="NFQUEUE monitor process (started by the agent)")
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number to bind")
    parser.add_argument("--fd", type=int, required=True,
                        help="inherited socket carrying agent commands")
    parser.add_argument("--max-len", type=int, default=4096,
                        help="kernel queue length before fail-open accepts (default 4096)")
    parser.add_argument("--accept-only", action="store_true",
                        help="accept packets without counting (benchmark baseline)")
    parser.add_argument("--per-packet-verdicts", action="store_true",
                        help="accept each packet in the callback instead of one batch verdict "
                             "per drained burst (benchmark comparison)")
    parser.add_argument("--no-fail-open", action="store_true",
                        help="drop instead of accept when the queue is full")
    parser.add_argument("--no-nflog", action="store_true",
                        help="do not bind the NFLOG group numbered like the queue")
    parser.add_argument("--nflog-threshold", type=int, default=64,
                        help="NFLOG packets the kernel gathers per message (default 64)")
    parser.add_argument("--ebpf-interface", default=None,
                        help="the data interface for capture: ebpf (tc programs attached "
                             "once an eBPF sketch is added)")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    try:
        run(args.queue, sock, max_len=args.max_len, accept_only=args.accept_only,
            fail_open=not args.no_fail_open, batch_verdicts=not args.per_packet_verdicts,
            nflog=not args.no_nflog, nflog_threshold=args.nflog_threshold,
            ebpf_interface=args.ebpf_interface)
    except OSError as exc:
        print(f"monitor: queue {args.queue}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
