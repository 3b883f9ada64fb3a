"""The probe process: TWAMP-light sender and reflector on UDP port 8001, and sock_diag reads.

Why a process of its own: the agent process runs on eventlet (monkey
patched), where a green thread waits for whatever else the hub runs, and
the monitor processes spend their time in the NFQUEUE loop. A probe's send
time or an echo's turnaround delayed by either would be counted as network
latency. This process does nothing but probes: one UDP socket bound to the
data address, ``select`` on it and on the agent's command pipe, and a send
schedule. Arrival times are the kernel's (``SO_TIMESTAMPNS``), and each echo
carries the reflector's dwell time (its send time minus the probe's kernel
arrival time), which is subtracted: RTT = (t4 - t1) - (t3 - t2). Bound to a
data address on port 8001 and able to load BPF (root, clang), the process
also attaches the kernel reflector (``host_agent.probes.kreflect``): probes
to this host are then echoed in the kernel as they arrive (dwell 0) and this
socket only sees echoes; otherwise it echoes them itself. The agent
speaks to it over ``host_agent.ipc`` (``ChildProcess``); it exits when the
agent hangs up.

Packets (16 bytes, network order, padded with zeros to ``probe_payload``):
``magic u8 = 0xA7, type u8 (1 probe, 2 echo), slot u16, seq u32, dwell_ns u32,
received u32``. ``slot`` names the sender's task (random base per process,
so a restarted sender is a new session at the reflector); an echo copies
slot and seq, and ``received`` is the number of probes of that (sender,
slot) the reflector has received, which splits losses by direction
(``host_agent.probes.session``). Echoes go out with the probe's own TOS
(``IP_RECVTOS``), so a ``dscp`` task is measured in its class both ways.

Commands: ``set`` {task, rate, payload, dscp, targets: [{dst, address}]},
``remove`` {task}, ``snapshot`` {task, cut} -> {paths: {dst: entry}, cost},
``tcp`` {top, host, local} -> the tcp section (``host_agent.tcpinfo``),
``exit``.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from host_agent.ipc import ServerChannel
from host_agent.probes.kreflect import KernelReflector
from host_agent.probes.session import PairSession
from measure_model.task import PROBE_PORT

MAGIC, PROBE, ECHO = 0xA7, 1, 2
HEADER = struct.Struct("!BBHIII")
IP_UDP = 28
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
MAX_REFLECTED_SESSIONS = 100_000


@dataclass
class TaskProbes:
    """One path_health task at this host: its pairs and how they are probed."""

    slot: int
    rate: float
    payload: int
    tos: int
    pairs: dict[str, PairSession] = field(default_factory=dict)   # by dst
    by_address: dict[str, PairSession] = field(default_factory=dict)
    cost_mark: tuple[float, int, int, float] = (0.0, 0, 0, 0.0)   # time, pkts, bytes, cpu


class Prober:
    """Sender, reflector and command handler of the probe process."""

    def __init__(self, bind: str = "0.0.0.0", port: int = PROBE_PORT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        self.sock.bind((bind, port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tasks: dict[str, TaskProbes] = {}
        self.by_slot: dict[int, TaskProbes] = {}
        self.slot_base = random.randrange(1 << 16)
        self.next_slot = 0
        self.schedule: list[tuple[int, int, str]] = []   # (due ns, slot, dst)
        self.received: dict[tuple[str, int], int] = {}   # reflector: (sender, slot) -> count
        self.packets = 0
        self.bytes = 0
        self.tos = 0
        self.kernel: KernelReflector | None = None

    def attach_kernel_reflector(self) -> str:
        """Echo in the kernel when bound to a data address on the probe port (see the
        module docstring); which reflector answers: ``kernel`` or ``user`` and why."""
        bind = self.sock.getsockname()[0]
        if self.port != PROBE_PORT or bind in ("0.0.0.0", ""):
            return "user (not bound to a data address on the probe port)"
        from host_agent.capture.ebpf import data_interface

        iface = data_interface(bind)
        if iface is None:
            return f"user (no interface holds {bind})"
        try:
            self.kernel = KernelReflector(iface)
        except OSError as exc:
            return f"user ({exc})"
        return f"kernel (on {iface})"

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None
        self.sock.close()

    # ------------------------------------------------------------ commands
    def set_task(self, req: dict[str, Any]) -> dict[str, Any]:
        task_id = str(req["task"])
        old = self.tasks.get(task_id)
        slot = old.slot if old is not None else (self.slot_base + self.next_slot) & 0xFFFF
        if old is None:
            self.next_slot += 1
        dscp = req.get("dscp")
        tp = TaskProbes(slot, float(req["rate"]), int(req["payload"]),
                        (int(dscp) << 2) if dscp is not None else 0)
        now = time.time_ns()
        gap = int(1e9 / tp.rate)
        for i, t in enumerate(req.get("targets", [])):
            keep = old.pairs.get(t["dst"]) if old is not None else None
            pair = keep if keep is not None and keep.address == t["address"] \
                else PairSession(t["dst"], t["address"])
            tp.pairs[pair.dst] = pair
            tp.by_address[pair.address] = pair
            # spread the pairs' first probes over one gap: no bursts
            heapq.heappush(self.schedule, (now + gap * i // max(1, len(req["targets"])),
                                           slot, pair.dst))
        tp.cost_mark = old.cost_mark if old is not None else self._cost_now()
        self.tasks[task_id] = tp
        self.by_slot[slot] = tp
        return {"ok": True, "slot": slot, "pairs": len(tp.pairs), "port": self.port}

    def remove_task(self, req: dict[str, Any]) -> dict[str, Any]:
        tp = self.tasks.pop(str(req["task"]), None)
        if tp is not None:
            self.by_slot.pop(tp.slot, None)
        return {"ok": True}

    def _cost_now(self) -> tuple[float, int, int, float]:
        packets, nbytes = self.packets, self.bytes
        if self.kernel is not None:  # each kernel echo: a probe in, its echo out
            echoed, echoed_bytes = self.kernel.echoed()
            packets, nbytes = packets + 2 * echoed, nbytes + 2 * echoed_bytes
        return (time.monotonic(), packets, nbytes, time.process_time())

    def snapshot(self, req: dict[str, Any]) -> dict[str, Any]:
        tp = self.tasks.get(str(req["task"]))
        if tp is None:
            raise KeyError(f"task {req['task']} is not probing here")
        cut = int(float(req["cut"]) * 1e9)
        # echoes already in the socket count before the cut: a worker kept off the CPU
        # for over the loss timeout (a loaded host) must not call them lost; their
        # kernel receive stamps keep their RTTs right
        self.readable()
        out = {dst: pair.close(cut) for dst, pair in sorted(tp.pairs.items())}
        now = self._cost_now()
        t0, p0, b0, c0 = tp.cost_mark
        span = max(1e-3, now[0] - t0)
        tp.cost_mark = now
        cost = {"packets_per_s": round((now[1] - p0) / span, 3),
                "bytes_per_s": round((now[2] - b0) / span, 3),
                "cpu_seconds_per_s": round((now[3] - c0) / span, 6)}
        return {"paths": out, "cost": cost}

    # ------------------------------------------------------------ packets
    def send_due(self) -> float:
        """Send every probe that is due; seconds until the next one (at most 0.2)."""
        now = time.time_ns()
        while self.schedule and self.schedule[0][0] <= now:
            due, slot, dst = heapq.heappop(self.schedule)
            tp = self.by_slot.get(slot)
            pair = tp.pairs.get(dst) if tp is not None else None
            if tp is None or pair is None:
                continue  # removed or replaced
            self._send_probe(tp, pair)
            gap = int(1e9 / tp.rate)
            nxt = due + gap
            if nxt <= now:  # fell behind: skip, never burst
                nxt = now + gap
            heapq.heappush(self.schedule, (nxt, slot, dst))
            now = time.time_ns()
        if not self.schedule:
            return 0.2
        return min(0.2, max(0.0, (self.schedule[0][0] - time.time_ns()) / 1e9))

    def _set_tos(self, tos: int) -> None:
        if tos != self.tos:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            self.tos = tos

    def _send_probe(self, tp: TaskProbes, pair: PairSession) -> None:
        buf = bytearray(max(tp.payload, HEADER.size))
        self._set_tos(tp.tos)
        HEADER.pack_into(buf, 0, MAGIC, PROBE, tp.slot, pair.next_seq & 0xFFFFFFFF, 0, 0)
        addr = (pair.address, self.port)
        t1 = time.time_ns()  # as late as possible: the RTT starts at the send call
        try:
            self.sock.sendto(buf, addr)
        except OSError:
            return  # not sent: the sequence number is used by the next probe
        pair.sent(t1)
        self.packets += 1
        self.bytes += len(buf) + IP_UDP

    def readable(self) -> None:
        """Handle every datagram waiting: echo probes, record echoes."""
        for _ in range(1024):
            try:
                data, anc, _, addr = self.sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ICMP unreachable reported on the socket
            if len(data) < HEADER.size:
                continue
            magic, kind, slot, seq, dwell, received = HEADER.unpack_from(data)
            if magic != MAGIC:
                continue
            rx_ns, tos = time.time_ns(), 0
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    rx_ns = sec * 1_000_000_000 + nsec
                elif level == socket.IPPROTO_IP and ctype == IP_TOS_CMSG and cdata:
                    tos = cdata[0]
            self.packets += 1
            self.bytes += len(data) + IP_UDP
            if kind == PROBE:
                self._echo(data, addr, slot, seq, rx_ns, tos)
            elif kind == ECHO:
                tp = self.by_slot.get(slot)
                pair = tp.by_address.get(addr[0]) if tp is not None else None
                if pair is not None:
                    pair.answer(seq, rx_ns, dwell, received)

    def _echo(self, data: bytes, addr: tuple[str, int], slot: int, seq: int, rx_ns: int,
              tos: int) -> None:
        key = (addr[0], slot)
        if key not in self.received and len(self.received) >= MAX_REFLECTED_SESSIONS:
            self.received.clear()
        count = self.received[key] = self.received.get(key, 0) + 1
        buf = bytearray(data)
        self._set_tos(tos)
        dwell = min(0xFFFFFFFF, max(0, time.time_ns() - rx_ns))  # t3 - t2
        HEADER.pack_into(buf, 0, MAGIC, ECHO, slot, seq, dwell, count & 0xFFFFFFFF)
        try:
            self.sock.sendto(buf, addr)
        except OSError:
            return
        self.packets += 1
        self.bytes += len(buf) + IP_UDP


IP_TOS_CMSG = getattr(socket, "IP_TOS", 1)  # the TOS cmsg type is IP_TOS


def handle(prober: Prober, req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "set":
        return prober.set_task(req)
    if op == "remove":
        return prober.remove_task(req)
    if op == "snapshot":
        return prober.snapshot(req)
    if op == "tcp":
        from host_agent.tcpinfo.diag import tcp_section

        return tcp_section(str(req["host"]), int(req.get("top", 10)), req.get("local"),
                           req.get("exclude_ports", [PROBE_PORT]))
    if op == "ping":
        return {"ok": True, "port": prober.port}
    raise ValueError(f"unknown op {op!r}")


def worker_main(bind: str, port: int, fd: int) -> int:
    """Serve the agent's requests (``host_agent.ipc``) and the probes until hang-up."""
    prober = Prober(bind, port)
    # a SIGTERM (the agent's process group stopped) still detaches the kernel reflector
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    reflector = prober.attach_kernel_reflector()
    print(f"probe worker on {bind}:{prober.port}: echo in {reflector}", file=sys.stderr,
          flush=True)
    chan = ServerChannel.from_fd(fd)
    try:
        while True:
            wait = prober.send_due()
            ready, _, _ = select.select([prober.sock, chan], [], [], wait)
            if prober.sock in ready:
                prober.readable()
            if chan not in ready:
                continue
            msgs = chan.read()
            if msgs is None or any(m.get("op") == "exit" for m in msgs):
                return 0
            chan.serve(msgs, lambda req: handle(prober, req))
    finally:
        prober.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m host_agent.probes.worker --bind ADDR --port 8001 --fd N``."""
    parser = argparse.ArgumentParser(prog="python -m host_agent.probes.worker")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=PROBE_PORT)
    parser.add_argument("--fd", type=int, required=True, help="the agent's socket")
    args = parser.parse_args(argv)
    return worker_main(args.bind, args.port, args.fd)


if __name__ == "__main__":
    sys.exit(main())
