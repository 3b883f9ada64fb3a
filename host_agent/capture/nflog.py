"""A raw-netlink NFLOG reader: passive capture that never holds a packet.

Design
------
The ``NFLOG`` rules of ``capture.py`` copy the first ``HEADER_COPY_BYTES``
bytes of each selected packet into a netlink message for one group and let
the packet go on: the kernel never waits for user space, so the host's
traffic is neither delayed nor dropped by the monitor. The kernel gathers
messages per group into one netlink datagram until ``threshold`` packets are
pending, the buffer (``NFULA_CFG_NLBUFSIZ``) is full or ``timeout`` passes,
so a busy host costs one ``recv`` per batch of packets.

This module speaks ``NFNL_SUBSYS_ULOG`` directly on an ``AF_NETLINK`` socket
(``linux/netfilter/nfnetlink_log.h``), no library: bind the group, set the
copy mode and range, buffer size, flush timeout and queue threshold, and
turn on per-instance sequence numbers (``NFULNL_CFG_F_SEQ``). The reader
hands each packet's payload and mark to the same callbacks the NFQUEUE path
uses, so both feed one batch in the monitor.

What it cannot see is counted, never silent:

* ``lost``: gaps in ``NFULA_SEQ``. The kernel numbers every message it
  builds for the group, so a datagram dropped because the socket buffer was
  full leaves a gap of exactly its packets.
* ``overruns``: ``ENOBUFS`` from ``recv`` (the kernel's notice that the
  socket overflowed; the gap says by how much).

The agent also compares each sketch's rule counter with what the monitor
counted (``missed`` in snapshots), which covers losses before a sequence
number is given (kernel allocation failures) as well.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 1

NFULA_MARK = 2
NFULA_PAYLOAD = 9
NFULA_SEQ = 12

DEFAULT_BUFSIZE = 131072       # the kernel's largest NFULA_CFG_NLBUFSIZ
DEFAULT_TIMEOUT_CS = 1         # flush pending messages after 10 ms
DEFAULT_THRESHOLD = 64
DEFAULT_RCVBUF = 8 * 1024 * 1024
_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_BE32 = struct.Struct("!I")


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return _ATTR.pack(length, kind) + data + bytes((4 - length % 4) % 4)


def config_message(group: int, attrs: bytes, family: int = socket.AF_UNSPEC,
                   seq: int = 0) -> bytes:
    """One ``NFULNL_MSG_CONFIG`` request (with an ACK) for ``group``."""
    body = struct.pack("=BB", family, 0) + struct.pack("!H", group) + attrs
    return _HDR.pack(16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                     NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def setup_messages(group: int, copy_range: int, threshold: int,
                   timeout_cs: int = DEFAULT_TIMEOUT_CS,
                   bufsize: int = DEFAULT_BUFSIZE) -> list[bytes]:
    """Bind ``group`` and configure it: copy mode/range, buffer, timeout, threshold, seq."""
    return [
        config_message(group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), seq=1),
        config_message(group, _attr(NFULA_CFG_MODE, struct.pack("!IBB", copy_range,
                                                                NFULNL_COPY_PACKET, 0)), seq=2),
        config_message(group, _attr(NFULA_CFG_NLBUFSIZ, _BE32.pack(bufsize))
                       + _attr(NFULA_CFG_TIMEOUT, _BE32.pack(timeout_cs))
                       + _attr(NFULA_CFG_QTHRESH, _BE32.pack(threshold))
                       + _attr(NFULA_CFG_FLAGS, struct.pack("!H", NFULNL_CFG_F_SEQ)), seq=3),
    ]


class NflogError(OSError):
    """The kernel refused a configuration request (e.g. the group is bound elsewhere)."""


class NflogReader:
    """One bound NFLOG group; :meth:`drain` feeds payloads and marks to callbacks."""

    def __init__(self, group: int, copy_range: int, threshold: int = DEFAULT_THRESHOLD,
                 timeout_cs: int = DEFAULT_TIMEOUT_CS, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        if not 0 <= group <= 65535:
            raise ValueError(f"nflog group {group} is not within 0..65535")
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            for msg in setup_messages(group, copy_range, threshold, timeout_cs):
                self._request(msg)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.packets = 0
        self.lost = 0          # sequence gaps: packets the kernel could not deliver
        self.overruns = 0      # ENOBUFS notices
        self._next_seq: int | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def _request(self, msg: bytes) -> None:
        """Send a config request and wait for its ACK (an NLMSG_ERROR with code 0)."""
        self.sock.settimeout(5.0)
        self.sock.send(msg)
        seq = _HDR.unpack_from(msg)[3]
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, rseq, _ = _HDR.unpack_from(data, off)
                if kind == NLMSG_ERROR and rseq == seq:
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise NflogError(-code, f"nflog group {self.group}: "
                                                f"{errno.errorcode.get(-code, -code)}")
                    return
                off += max((length + 3) & ~3, 16)

    def drain(self, add_payload: Callable[[bytes], None], add_mark: Callable[[int], None],
              budget: int = 64) -> int:
        """Read up to ``budget`` datagrams now; return the packets handed on."""
        got = 0
        recv = self.sock.recv
        for _ in range(budget):
            try:
                data = recv(1 << 18)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            got += self._parse(data, add_payload, add_mark)
        self.packets += got
        return got

    def _parse(self, data: bytes, add_payload: Callable[[bytes], None],
               add_mark: Callable[[int], None]) -> int:
        got, off, end = 0, 0, len(data)
        packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
        while off + 20 <= end:
            length, kind = _HDR.unpack_from(data, off)[:2]
            if length < 16:
                break
            if kind == packet_type:
                payload, mark, seq = None, 0, None
                a, stop = off + 20, min(off + length, end)
                while a + 4 <= stop:
                    alen, atype = _ATTR.unpack_from(data, a)
                    if alen < 4:
                        break
                    atype &= 0x3FFF
                    if atype == NFULA_PAYLOAD:
                        payload = data[a + 4:a + alen]
                    elif atype == NFULA_MARK:
                        mark = _BE32.unpack_from(data, a + 4)[0]
                    elif atype == NFULA_SEQ:
                        seq = _BE32.unpack_from(data, a + 4)[0]
                    a += (alen + 3) & ~3
                if seq is not None:
                    if self._next_seq is not None and seq != self._next_seq:
                        self.lost += (seq - self._next_seq) & 0xFFFFFFFF
                    self._next_seq = (seq + 1) & 0xFFFFFFFF
                if payload is not None:
                    add_payload(payload)
                    add_mark(mark)
                    got += 1
            off += (length + 3) & ~3
        return got

    def stats(self) -> dict[str, int]:
        return {"group": self.group, "packets": self.packets, "lost": self.lost,
                "overruns": self.overruns}

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self._request(config_message(
                self.group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])), seq=9))
        except OSError:
            pass
        self.sock.close()
