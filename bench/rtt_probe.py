"""ICMP echo RTTs to two targets, alternated packet by packet, with kernel timestamps.

Run inside the sender's namespace (``ip netns exec NS python -m bench.rtt_probe
MEASURED BASELINE COUNT INTERVAL``); prints one JSON object::

    {"kernel": [[measured_us, baseline_us], ...], "user": [[...], ...]}

Each pair is one echo to ``MEASURED`` and one to ``BASELINE`` sent back to back
(which goes first alternates), so drift of the machine's load hits both alike
and the per-pair difference is what the measured path adds. Two RTTs per echo:

- ``kernel``: from the software TX timestamp the sender's veth takes in its
  ``ndo_start_xmit`` to the software RX timestamp of the reply
  (``SO_TIMESTAMPING``). This is the whole network path: the receiver's tc
  ingress, ICMP, the reply and the receiver's tc egress, without the sender
  process's own scheduling and wake-up.
- ``user``: from just before ``sendto`` to the return of ``recvmsg`` in this
  process, as ``ping`` sees it (plus Python's own overhead).

A lost echo (no reply within 1 s) drops that pair.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = 37
SOF_TX_SOFTWARE = 1 << 1
SOF_RX_SOFTWARE = 1 << 3
SOF_SOFTWARE = 1 << 4
SOF_OPT_TSONLY = 1 << 11
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    body = b"rtt-probe-payload-56-bytes-like-ping-does".ljust(56, b".")
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(head + body), ident, seq) + body


def _stamp(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return None


class Prober:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING,
                             SOF_TX_SOFTWARE | SOF_RX_SOFTWARE | SOF_SOFTWARE | SOF_OPT_TSONLY)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def echo(self, dst: str) -> tuple[float, float] | None:
        """(kernel RTT, user RTT) in microseconds, None when lost."""
        self.seq = (self.seq + 1) & 0xFFFF
        packet = _echo(self.ident, self.seq)
        t0 = time.perf_counter_ns()
        self.sock.sendto(packet, (dst, 0))
        tx = rx = None
        t1 = 0
        deadline = time.monotonic() + 1.0
        while tx is None or rx is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, x = select.select([self.sock], [], [self.sock], left)
            if tx is None:
                try:
                    _, anc, _, _ = self.sock.recvmsg(0, 512, socket.MSG_ERRQUEUE |
                                                     socket.MSG_DONTWAIT)
                    tx = _stamp(anc)
                except BlockingIOError:
                    pass
            if rx is None and r:
                try:
                    data, anc, _, addr = self.sock.recvmsg(2048, 512, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                ihl = (data[0] & 0x0F) * 4
                typ, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == ICMP_ECHOREPLY and ident == self.ident and seq == self.seq \
                        and addr[0] == dst:
                    t1 = time.perf_counter_ns()
                    rx = _stamp(anc)
        return (rx - tx) / 1000, (t1 - t0) / 1000


def probe(measured: str, baseline: str, count: int, interval: float) -> dict[str, list]:
    p = Prober()
    kernel, user = [], []
    for i in range(count):
        order = (measured, baseline) if i % 2 == 0 else (baseline, measured)
        got = {dst: p.echo(dst) for dst in order}
        m, b = got[measured], got[baseline]
        if m is not None and b is not None:
            kernel.append([m[0], b[0]])
            user.append([m[1], b[1]])
        time.sleep(interval)
    return {"kernel": kernel, "user": user}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
