"""Probe I/O for bandwidth estimation, run in a child process.

Precise pacing and timestamping do not mix with eventlet's green
scheduling (the agent process is monkey-patched) nor with a GIL shared with
busy request handlers. So every probe socket lives in a separate OS process,
``python -m host_agent.bandwidth.worker worker``, which the agent drives over
its one child channel (:mod:`host_agent.ipc`: a JSON line per request, one
reply line each):

- ``recv_open`` binds a UDP (SLoPS) or TCP (bulk) socket and returns its
  port. Arrivals are timestamped by the kernel (``SO_TIMESTAMPNS``), so the
  time the worker takes to read them does not matter; ``recv_fetch``
  returns the per-stream arrival data.
- ``send_fleet`` sends periodic UDP streams: a sleep/busy-wait hybrid holds
  each inter-packet gap (sleep until about 200 us before the send time, then
  spin); gaps below ``TRAIN_GAP_NS`` are sent as back-to-back trains whose
  average rate is the requested one. A sender that falls behind shifts its
  schedule instead of bursting to catch up.
- ``bulk_send`` pushes TCP data for a bounded time and byte count.

Probe packets carry ``MAGIC, session, stream, seq, send_ns``; the receiver
drops anything else. The worker exits when the agent hangs up or its
lifetime ends, so an agent that dies never leaves a probe socket behind.

The client side is :class:`Worker`, a :class:`host_agent.ipc.ChildProcess`.
The destination agent's receive sessions are in :mod:`host_agent.bandwidth.receive`,
the source side of a probe in
:mod:`host_agent.bandwidth.estimate`, the command lines for tests and the benchmark
in :mod:`host_agent.bandwidth.cli`.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time
from typing import Any

from host_agent.ipc import ChildGone, ChildProcess, Refused, ServerChannel

MAGIC = b"BWP1"
HEADER = struct.Struct("!4sIIIQ")  # magic, session, stream, seq, send_ns
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux values
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
TRAIN_GAP_NS = 40_000  # below this per-packet gap, send trains
SPIN_NS = 200_000  # busy-wait the last 200 us before a send
RCVBUF = 8 * 1024 * 1024
IP_UDP_HEADERS = 28


class WorkerError(RuntimeError):
    """The probe worker failed, timed out or replied with an error."""


# ---------------------------------------------------------------- sender side

def wait_until_ns(target: int) -> int:
    """Sleep, then spin, until ``time.monotonic_ns() >= target``; return now."""
    while True:
        now = time.monotonic_ns()
        left = target - now
        if left <= 0:
            return now
        if left > SPIN_NS:
            time.sleep((left - SPIN_NS) / 1e9)


def send_stream(sock: socket.socket, addr: tuple[str, int], session: int, stream: int,
                count: int, size: int, rate_bps: float) -> dict[str, int]:
    """Send ``count`` IP packets of ``size`` bytes at ``rate_bps`` (0 = back to back).

    Sizes and rates count IP bytes (UDP payload + 28), as a link does.
    """
    buf = bytearray(max(size - IP_UDP_HEADERS, HEADER.size))
    gap = int(size * 8 * 1e9 / rate_bps) if rate_bps > 0 else 0
    train = max(1, -(-TRAIN_GAP_NS // gap)) if gap else count
    first = last = 0
    sent = 0
    start = time.monotonic_ns()
    for seq in range(count):
        if gap and seq % train == 0:
            due = start + seq * gap
            now = wait_until_ns(due)
            if now - due > gap * train:  # fell behind: shift, do not burst
                start += now - due
        now = time.monotonic_ns()
        HEADER.pack_into(buf, 0, MAGIC, session, stream, seq, now)
        try:
            sock.sendto(buf, addr)
        except OSError:
            continue  # full buffer or unreachable: the receiver sees a loss
        sent += 1
        first = first or now
        last = now
    return {"stream": stream, "sent": sent, "bytes": sent * size,
            "first_ns": first, "last_ns": last}


def send_fleet(req: dict[str, Any]) -> dict[str, Any]:
    """Send the streams of one fleet, each followed by its idle pause."""
    addr = (req["host"], int(req["port"]))
    deadline = time.monotonic() + float(req.get("timeout", 30))
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        for spec in req["streams"]:
            if time.monotonic() >= deadline:
                break
            out.append(send_stream(sock, addr, int(req["session"]), int(spec["id"]),
                                   int(spec["count"]), int(spec["size"]),
                                   float(spec["rate_bps"])))
            pause = min(float(spec.get("pause", 0.0)), max(0.0, deadline - time.monotonic()))
            if pause > 0:
                time.sleep(pause)
    return {"streams": out}


def bulk_send(req: dict[str, Any]) -> dict[str, Any]:
    """Push TCP data to the receiver for ``duration`` s or ``max_bytes``."""
    chunk = b"\0" * 65536
    limit = int(req["max_bytes"])
    total = 0
    start = time.monotonic()
    end = start + float(req["duration"])
    connect_timeout = min(3.0, float(req["duration"]))
    with socket.create_connection((req["host"], int(req["port"])), connect_timeout) as sock:
        sock.settimeout(0.1)
        while total < limit and time.monotonic() < end:
            try:
                total += sock.send(chunk[: min(len(chunk), limit - total)])
            except TimeoutError:
                continue
    return {"bytes": total, "seconds": time.monotonic() - start}


# ---------------------------------------------------------------- receiver side

class Receiver:
    """Arrival records of one receive session (UDP streams or a TCP transfer)."""

    def __init__(self, session: int, proto: str, bind: str = "0.0.0.0") -> None:
        self.session, self.proto = session, proto
        self.streams: dict[int, list[tuple[int, int, int]]] = {}
        self.bytes = 0
        self.first_ns = self.last_ns = 0
        self.conn: socket.socket | None = None
        if proto == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:  # root may exceed net.core.rmem_max, which is small by default
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        if proto == "tcp":
            self.sock.listen(1)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def fds(self) -> list[socket.socket]:
        return [self.sock] + ([self.conn] if self.conn else [])

    def readable(self, sock: socket.socket) -> None:
        """Drain what is ready on ``sock`` without blocking."""
        if self.proto == "udp":
            self._drain_udp()
        elif sock is self.sock and self.conn is None:
            try:
                self.conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            self.conn.setblocking(False)
        elif sock is self.conn:
            self._drain_tcp()

    def _drain_udp(self) -> None:
        cmsg_space = socket.CMSG_SPACE(16)
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(2048, cmsg_space)
            except BlockingIOError:
                return
            recv_ns = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    recv_ns = sec * 1_000_000_000 + nsec
            if not recv_ns:
                recv_ns = time.time_ns()
            if len(data) < HEADER.size:
                continue
            magic, session, stream, seq, send_ns = HEADER.unpack_from(data)
            if magic != MAGIC or session != self.session:
                continue
            self.streams.setdefault(stream, []).append((seq, send_ns, recv_ns))
            self.bytes += len(data) + IP_UDP_HEADERS

    def _drain_tcp(self) -> None:
        assert self.conn is not None
        while True:
            try:
                data = self.conn.recv(262144)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            now = time.monotonic_ns()
            if not data:
                self.conn.close()
                self.conn = None
                return
            self.first_ns = self.first_ns or now
            self.last_ns = now
            self.bytes += len(data)

    def fetch(self, streams: list[int] | None) -> dict[str, Any]:
        """Arrival data: per stream, sorted by sequence number."""
        if self.proto == "udp":
            self._drain_udp()
        elif self.conn is not None:
            self._drain_tcp()
        wanted = sorted(self.streams) if streams is None else streams
        out = {}
        for sid in wanted:
            recs = sorted(self.streams.get(sid, []))
            out[str(sid)] = {"seq": [r[0] for r in recs], "send_ns": [r[1] for r in recs],
                             "recv_ns": [r[2] for r in recs]}
        return {"streams": out, "bytes": self.bytes, "first_ns": self.first_ns,
                "last_ns": self.last_ns, "connected": self.conn is not None}

    def close(self) -> None:
        for s in self.fds():
            s.close()


def raise_priority(realtime: bool = True) -> str:
    """Best effort: keep the pacing loop from being preempted on a busy host.

    On a loaded 2-core machine a normal process misses send times by 4-7 ms
    at the 99th percentile (CFS time slices); under ``SCHED_FIFO`` the miss
    stays under about 20 us. This needs root (the agent runs as root); the
    sender sleeps between packets, every fleet is bounded in time, and the
    kernel's RT throttling keeps 5% of each core for everything else.
    Falls back to ``nice -10``, then to nothing. Returns what it got.
    """
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            return "fifo"
        except (OSError, AttributeError):
            pass
    try:
        os.nice(-10)
        return "nice"
    except OSError:
        return "normal"


def worker_main(lifetime: float, fd: int) -> int:
    """Serve requests on the inherited socket until hang-up, ``exit`` or the lifetime ends.

    Only senders raise their priority: receivers rely on kernel timestamps.
    """
    end = time.monotonic() + lifetime
    state: dict[str, Any] = {"receiver": None, "priority": ""}
    chan = ServerChannel.from_fd(fd)

    def handle(req: dict[str, Any]) -> Any:
        op = req.get("op")
        receiver: Receiver | None = state["receiver"]
        if op == "exit":
            raise SystemExit(0)
        if op == "recv_open":
            state["receiver"] = Receiver(int(req["session"]), req.get("proto", "udp"),
                                         req.get("bind", "0.0.0.0"))
            return {"port": state["receiver"].port}
        if op == "recv_fetch":
            if receiver is None:
                raise ValueError("no receive socket open")
            return receiver.fetch(req.get("streams"))
        if op == "send_fleet":
            state["priority"] = state["priority"] or raise_priority()
            return {**send_fleet(req), "priority": state["priority"]}
        if op == "bulk_send":
            return bulk_send(req)
        raise ValueError(f"unknown op {op!r}")

    try:
        while time.monotonic() < end:
            receiver = state["receiver"]
            fds: list[Any] = [chan] + (receiver.fds() if receiver else [])
            ready, _, _ = select.select(fds, [], [],
                                        min(0.2, max(0.0, end - time.monotonic())))
            for sock in ready:
                if sock is not chan and receiver is not None:
                    receiver.readable(sock)
            if chan not in ready:
                continue
            msgs = chan.read()
            if msgs is None:
                break
            chan.serve(msgs, handle)
    except SystemExit:
        pass
    finally:
        if state["receiver"] is not None:
            state["receiver"].close()
        chan.close()
    return 0


# ---------------------------------------------------------------- client side

class Worker:
    """A probe worker child process (:class:`host_agent.ipc.ChildProcess`)."""

    def __init__(self, lifetime: float) -> None:
        self.child = ChildProcess("host_agent.bandwidth.worker",
                                  ["worker", "--lifetime", f"{lifetime:.3f}"],
                                  name="probe worker")
        self.child.start()

    def call(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request; wait at most ``timeout`` s for its reply."""
        try:
            reply: dict[str, Any] = self.child.call(req, timeout)
        except (ChildGone, Refused) as exc:
            raise WorkerError(str(exc)) from None
        return reply

    def close(self) -> None:
        """Stop the child at once (it holds no state worth a clean exit)."""
        self.child.stop(grace=2.0)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m host_agent.bandwidth.worker worker --lifetime S``: the probe I/O child."""
    parser = argparse.ArgumentParser(prog="python -m host_agent.bandwidth.worker")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="probe I/O child (driven by the agent)")
    w.add_argument("--lifetime", type=float, required=True)
    w.add_argument("--fd", type=int, required=True, help="inherited socket carrying requests")
    args = parser.parse_args(argv)
    return worker_main(args.lifetime, args.fd)


if __name__ == "__main__":
    sys.exit(main())
