"""Packets and export messages built and decoded by hand, for parser and exporter tests.

Builders write raw IPv4/IPv6 headers and L4 headers with ``struct``, so a
test states every byte the parser sees; ``decode_ipfix`` reads an IPFIX
message back (RFC 7011) independently of the exporter under test.
"""

from __future__ import annotations

import socket
import struct


def ipv4(src: str, dst: str, proto: int, l4: bytes, total: int | None = None,
         options: bytes = b"", frag: int = 0, version: int = 4) -> bytes:
    ihl = 5 + len(options) // 4
    length = total if total is not None else ihl * 4 + len(l4)
    return struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, length, 7, frag, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + options + l4


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8, 0)


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIHHHH", sport, dport, 1, 0, 0x5002, 1024, 0, 0)


ICMP = struct.pack("!BBHHH", 8, 0, 0, 1, 1)

PACKETS = [
    ipv4("10.0.0.1", "10.0.0.2", 17, udp(5001, 5201), total=1500),
    ipv4("10.0.0.3", "10.0.0.2", 6, tcp(40000, 80), options=bytes(12)),
    ipv4("10.0.0.6", "10.0.0.5", 1, ICMP, total=84),
]


def tcp_flagged(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 512, 0, 0)


def ipv6(src: str, dst: str, next_header: int, rest: bytes, payload_len: int | None = None
         ) -> bytes:
    """An IPv6 header followed by ``rest`` (extension headers + upper layer)."""
    plen = len(rest) if payload_len is None else payload_len
    return struct.pack("!IHBB16s16s", 0x60000000, plen, next_header, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + rest


ICMP6 = struct.pack("!BBHHH", 128, 0, 0, 1, 1)


def decode_ipfix(msg: bytes, templates: dict) -> tuple[tuple, list[dict]]:
    """RFC 7011 section 3: header, then sets; returns header and data records."""
    version, length, export, seq, domain = struct.unpack_from("!HHIII", msg)
    assert version == 10 and length == len(msg)
    off, recs = 16, []
    while off < length:
        set_id, set_len = struct.unpack_from("!HH", msg, off)
        assert set_len >= 4 and off + set_len <= length
        body = msg[off + 4:off + set_len]
        if set_id == 2:
            p = 0
            while p < len(body):
                tid, count = struct.unpack_from("!HH", body, p)
                fields = [struct.unpack_from("!HH", body, p + 4 + 4 * k) for k in range(count)]
                templates[tid] = fields
                p += 4 + 4 * count
        else:
            fields = templates[set_id]
            size = sum(n for _, n in fields)
            assert len(body) % size == 0
            for r in range(len(body) // size):
                p, rec = r * size, {}
                for ie, n in fields:
                    rec[ie] = int.from_bytes(body[p:p + n], "big")
                    p += n
                recs.append(rec)
        off += set_len
    return (export, seq, domain), recs
