"""Key types, increments, and the vectorised IPv4 header parser.

Design
------
The monitor copies the first :data:`HEADER_COPY_BYTES` bytes of each packet
(an IPv4 header is at most 60 bytes, plus 4 bytes of L4 for the ports) and
hands a *list* of them to :meth:`HeaderBatch.from_payloads`. The parser joins
the list into one buffer and reads every field with numpy gathers at the
per-packet offsets, so its cost per packet is a few array elements, not
Python code. It honours IHL (options), takes the length from the IPv4
total-length field (not the copied length), reads ports only for TCP/UDP
first fragments (and TCP flags, byte 13 of the TCP header, when the copy
reaches it: always without IP options), and drops (and counts) payloads that are not IPv4 or are
shorter than their IP header. A TCP/UDP payload cut before the ports keeps
ports 0.

Keys are integers inside the engine and strings on the wire
(docs/design.md). Every key type except ``five_tuple`` fits in 64 bits:
``src_dst`` = ``src << 32 | dst``, ``src_dport`` = ``src << 16 | dport``, and
so on; that integer is also the key the sketches hash. ``five_tuple`` needs
104 bits (``src << 72 | dst << 40 | proto << 32 | sport << 16 | dport``);
inside numpy it is a (n, 2) uint64 array ``[src << 32 | dst, proto << 32 |
sport << 16 | dport]`` and its sketch key is a 64-bit mix of the two words
(a collision needs two distinct tuples with equal 64-bit mixes, odds about
2**-64 per pair).
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from measure_model.sketch import MASK64, mix64, splitmix64

KEY_TYPES: tuple[str, ...] = ("src", "dst", "src_dst", "sport", "dport", "src_dport",
                              "dst_dport", "proto", "five_tuple")
INCREMENTS: tuple[str, ...] = ("pkt", "bytes")
INCREMENT_SPELLINGS = {"pkt": "pkt", "bytes": "bytes", "byte": "bytes"}
IP_HEADER_MAX = 60
HEADER_COPY_BYTES = IP_HEADER_MAX + 4
PORT_PROTOS = (6, 17)
TCP_FLAGS_OFFSET = 13
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}


def check_key_type(value: Any, name: str = "key") -> str:
    """Return ``value`` if it is a key type, else ValueError naming the field."""
    if not isinstance(value, str) or value not in KEY_TYPES:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(KEY_TYPES)}")
    return value


def normalize_increment(value: Any, name: str = "increment") -> str:
    """``pkt`` or ``bytes`` (``byte`` is accepted as ``bytes``); ValueError otherwise."""
    if not isinstance(value, str) or value not in INCREMENT_SPELLINGS:
        raise ValueError(f"{name} {value!r} is not one of pkt, bytes")
    return INCREMENT_SPELLINGS[value]


@dataclass
class HeaderBatch:
    """Parsed header fields of a batch of IPv4 packets (parallel arrays)."""

    src: np.ndarray      # uint32
    dst: np.ndarray      # uint32
    proto: np.ndarray    # uint8
    sport: np.ndarray    # uint16
    dport: np.ndarray    # uint16
    length: np.ndarray   # uint32, the IPv4 total length
    dropped: int = 0     # payloads that were not parseable IPv4
    tcp_flags: np.ndarray | None = None  # uint8, TCP flags (0 for other protocols)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tcp_flags is None:
            self.tcp_flags = np.zeros(self.src.shape[0], np.uint8)

    def __len__(self) -> int:
        return int(self.src.shape[0])

    @classmethod
    def empty(cls, dropped: int = 0) -> HeaderBatch:
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint8),
                   np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.uint32),
                   dropped)

    @classmethod
    def from_arrays(cls, src, dst, proto, sport, dport, length,
                    tcp_flags=None) -> HeaderBatch:
        """Build a batch from field arrays (synthetic streams, tests)."""
        return cls(np.asarray(src, np.uint32), np.asarray(dst, np.uint32),
                   np.asarray(proto, np.uint8), np.asarray(sport, np.uint16),
                   np.asarray(dport, np.uint16), np.asarray(length, np.uint32),
                   tcp_flags=None if tcp_flags is None else np.asarray(tcp_flags, np.uint8))

    @classmethod
    def from_payloads(cls, payloads: list[bytes]) -> HeaderBatch:
        """Parse copied IPv4 headers (each at least the IP header, ideally 64 bytes)."""
        n = len(payloads)
        if n == 0:
            return cls.empty()
        lens = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
        joined = b"".join(payloads)
        if lens[0] == HEADER_COPY_BYTES and len(joined) == n * HEADER_COPY_BYTES \
                and (lens == HEADER_COPY_BYTES).all():
            # the monitor's usual case: every copy is exactly 64 bytes
            mat = np.frombuffer(joined, dtype=np.uint8).reshape(n, HEADER_COPY_BYTES)
        else:
            buf = np.frombuffer(joined + bytes(HEADER_COPY_BYTES), dtype=np.uint8)
            offs = np.cumsum(lens) - lens
            mat = buf[offs[:, None] + np.arange(HEADER_COPY_BYTES)]
        b0 = mat[:, 0]
        if (b0 == 0x45).all() and lens.min() >= 24:
            # no IP options anywhere: the ports are bytes 20..23 of every copy
            hdr = np.ascontiguousarray(mat[:, :24])
            dropped = 0
            l4_present = None
            flags_at = np.full(n, 20 + TCP_FLAGS_OFFSET)
        else:
            hlen = (b0 & 0x0F).astype(np.int64) * 4
            ok = (lens >= 20) & ((b0 >> 4) == 4) & (hlen >= 20) & (lens >= hlen)
            if not ok.all():
                mat, lens, hlen = mat[ok], lens[ok], hlen[ok]
            dropped = n - int(mat.shape[0])
            hdr = np.ascontiguousarray(mat[:, :24])
            hdr[:, 20:24] = mat[np.arange(mat.shape[0])[:, None], hlen[:, None] + np.arange(4)]
            l4_present = lens >= hlen + 4
            flags_at = hlen + TCP_FLAGS_OFFSET
        # one byte-swapping cast each, then native arithmetic
        words = hdr.view(">u4").astype(np.uint32)          # [.., .., .., src, dst, ports]
        halves = hdr[:, :8].view(">u2").astype(np.uint16)  # [.., total length, id, frag]
        proto = hdr[:, 9].copy()
        ported = ((proto == 6) | (proto == 17)) & ((halves[:, 3] & 0x1FFF) == 0)
        if l4_present is not None:
            ported &= l4_present
        ports = words[:, 5] * ported
        # TCP flags: byte 13 of the TCP header, when the copy reaches it
        flagged = ported & (proto == 6)
        flagged &= (lens > flags_at) & (flags_at < HEADER_COPY_BYTES)
        flags = mat[np.arange(mat.shape[0]), np.minimum(flags_at, HEADER_COPY_BYTES - 1)]
        return cls(src=words[:, 3], dst=words[:, 4], proto=proto,
                   sport=(ports >> 16).astype(np.uint16),
                   dport=(ports & 0xFFFF).astype(np.uint16),
                   length=halves[:, 1].astype(np.uint32), dropped=dropped,
                   tcp_flags=flags * flagged.astype(np.uint8))

    # ------------------------------------------------------------ keys
    def full_keys(self, key_type: str) -> np.ndarray:
        """Exact keys: uint64 (n,), or (n, 2) uint64 for ``five_tuple``."""
        cached = self._cache.get(("full", key_type))
        if cached is not None:
            return cached
        u = np.uint64
        src, dst = self.src.astype(u), self.dst.astype(u)
        if key_type == "src":
            out = src
        elif key_type == "dst":
            out = dst
        elif key_type == "src_dst":
            out = (src << u(32)) | dst
        elif key_type == "sport":
            out = self.sport.astype(u)
        elif key_type == "dport":
            out = self.dport.astype(u)
        elif key_type == "src_dport":
            out = (src << u(16)) | self.dport.astype(u)
        elif key_type == "dst_dport":
            out = (dst << u(16)) | self.dport.astype(u)
        elif key_type == "proto":
            out = self.proto.astype(u)
        elif key_type == "five_tuple":
            hi = (src << u(32)) | dst
            lo = ((self.proto.astype(u) << u(32)) | (self.sport.astype(u) << u(16))
                  | self.dport.astype(u))
            out = np.stack([hi, lo], axis=1)
        else:
            check_key_type(key_type)
            raise AssertionError(key_type)
        self._cache[("full", key_type)] = out
        return out

    def sketch_keys(self, key_type: str) -> np.ndarray:
        """64-bit keys the sketches hash (the exact key, or a mix for ``five_tuple``)."""
        cached = self._cache.get(("sketch", key_type))
        if cached is None:
            cached = sketch_keys_of(key_type, self.full_keys(key_type))
            self._cache[("sketch", key_type)] = cached
        return cached


def sketch_keys_of(key_type: str, full: np.ndarray) -> np.ndarray:
    """Sketch keys for an array of exact keys of ``key_type``."""
    if key_type != "five_tuple":
        return np.asarray(full, dtype=np.uint64)
    return mix64(mix64(full[:, 0]) ^ full[:, 1])


def key_ints(key_type: str, full: np.ndarray) -> list[int]:
    """Exact keys as Python ints (for formatting)."""
    if key_type != "five_tuple":
        return [int(x) for x in full.tolist()]
    return [(int(hi) << 40) | int(lo) for hi, lo in full.tolist()]


def five_tuple_columns(full: np.ndarray) -> dict[str, np.ndarray]:
    """The fields of exact ``five_tuple`` keys as columns (flow records, IPFIX export):
    ``family`` (4), ``src``/``dst`` (uint32), ``proto``, ``sport``, ``dport``."""
    full = np.asarray(full, dtype=np.uint64).reshape(-1, 2)
    hi, lo = full[:, 0], full[:, 1]
    return {"family": np.full(hi.shape[0], 4, np.uint8),
            "src": (hi >> np.uint64(32)).astype(np.uint32),
            "dst": (hi & np.uint64(0xFFFFFFFF)).astype(np.uint32),
            "proto": ((lo >> np.uint64(32)) & np.uint64(0xFF)).astype(np.uint8),
            "sport": ((lo >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16),
            "dport": (lo & np.uint64(0xFFFF)).astype(np.uint16)}


def full_key_array(key_type: str, values: list[int]) -> np.ndarray:
    """Inverse of :func:`key_ints`: exact-key array from Python ints."""
    if key_type != "five_tuple":
        return np.array(values, dtype=np.uint64)
    out = np.zeros((len(values), 2), dtype=np.uint64)
    for i, v in enumerate(values):
        out[i, 0] = v >> 40
        out[i, 1] = v & ((1 << 40) - 1)
    return out


def sketch_key_of(key_type: str, value: int) -> int:
    """Sketch key of one exact key (Python int)."""
    if key_type != "five_tuple":
        return value
    hi, lo = value >> 40, value & ((1 << 40) - 1)
    return splitmix64(splitmix64(hi) ^ lo) & MASK64


# ---------------------------------------------------------------- strings
def _ip(v: int) -> str:
    return socket.inet_ntoa(v.to_bytes(4, "big"))


def _proto_str(v: int) -> str:
    return PROTO_NAMES.get(v, str(v))


def format_key(key_type: str, value: int) -> str:
    """String form (docs/design.md) of an exact key."""
    if key_type in ("src", "dst"):
        return _ip(value)
    if key_type == "src_dst":
        return f"{_ip(value >> 32)},{_ip(value & 0xFFFFFFFF)}"
    if key_type in ("sport", "dport"):
        return str(value)
    if key_type in ("src_dport", "dst_dport"):
        return f"{_ip(value >> 16)},{value & 0xFFFF}"
    if key_type == "proto":
        return _proto_str(value)
    if key_type == "five_tuple":
        return (f"{_ip(value >> 72)},{_ip((value >> 40) & 0xFFFFFFFF)},"
                f"{_proto_str((value >> 32) & 0xFF)},{(value >> 16) & 0xFFFF},{value & 0xFFFF}")
    check_key_type(key_type)
    raise AssertionError(key_type)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_UNPACK_U32 = struct.Struct("!I").unpack


def _parse_ip(text: str) -> int:
    """A strict dotted quad (no leading zeros, octal, hex or short forms, which
    ``inet_aton`` alone would accept), converted by ``inet_aton``: about 5x
    faster than ``ipaddress``, and merges parse every candidate key."""
    t = text.strip()
    if _DOTTED_QUAD.fullmatch(t) is None:
        raise ValueError(f"{text!r} is not an IPv4 address")
    return _UNPACK_U32(socket.inet_aton(t))[0]


def _parse_port(text: str) -> int:
    t = text.strip()
    if not t.isdigit() or int(t) > 65535:
        raise ValueError(f"{text!r} is not a port (0..65535)")
    return int(t)


def _parse_proto(text: str) -> int:
    t = text.strip().lower()
    if t in PROTO_NUMBERS:
        return PROTO_NUMBERS[t]
    if not t.isdigit() or int(t) > 255:
        raise ValueError(f"{text!r} is not a protocol (icmp, tcp, udp or 0..255)")
    return int(t)


def parse_key(key_type: str, text: Any) -> int:
    """Exact key from its string form; ValueError naming the problem."""
    check_key_type(key_type)
    if not isinstance(text, str):
        raise ValueError(f"{key_type} key must be a string, got {text!r}")
    parts = text.split(",")
    arity = {"src_dst": 2, "src_dport": 2, "dst_dport": 2, "five_tuple": 5}.get(key_type, 1)
    if len(parts) != arity:
        raise ValueError(f"{key_type} key {text!r} must have {arity} comma-separated "
                         f"field{'s' if arity > 1 else ''}")
    if key_type in ("src", "dst"):
        return _parse_ip(parts[0])
    if key_type == "src_dst":
        return (_parse_ip(parts[0]) << 32) | _parse_ip(parts[1])
    if key_type in ("sport", "dport"):
        return _parse_port(parts[0])
    if key_type in ("src_dport", "dst_dport"):
        return (_parse_ip(parts[0]) << 16) | _parse_port(parts[1])
    if key_type == "proto":
        return _parse_proto(parts[0])
    return ((_parse_ip(parts[0]) << 72) | (_parse_ip(parts[1]) << 40)
            | (_parse_proto(parts[2]) << 32) | (_parse_port(parts[3]) << 16)
            | _parse_port(parts[4]))


# Canonical string forms (what format_key writes), matched by one regex per key:
# ~20x faster than parse_key, so a report's thousands of window keys are cheap to
# check on receipt. Anything else still goes through parse_key, which accepts
# the same set plus harmless variants (spaces, leading zeros in ports).
_IP_RE = _DOTTED_QUAD.pattern
_PORT_RE = (r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
            r"|[1-9][0-9]{0,3}|0)")
_PROTO_RE = rf"(?:{'|'.join(sorted(PROTO_NUMBERS))}|25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL = {key_type: re.compile(",".join(parts), re.ASCII) for key_type, parts in {
    "src": [_IP_RE], "dst": [_IP_RE], "src_dst": [_IP_RE, _IP_RE],
    "sport": [_PORT_RE], "dport": [_PORT_RE], "src_dport": [_IP_RE, _PORT_RE],
    "dst_dport": [_IP_RE, _PORT_RE], "proto": [_PROTO_RE],
    "five_tuple": [_IP_RE, _IP_RE, _PROTO_RE, _PORT_RE, _PORT_RE]}.items()}


def check_keys(key_type: str, keys: Any) -> None:
    """ValueError (``parse_key``'s message) for the first item of ``keys`` that is
    not a key of ``key_type``; nothing otherwise."""
    check_key_type(key_type)
    fast = _CANONICAL[key_type].fullmatch
    for k in keys:
        if not (isinstance(k, str) and fast(k)):
            parse_key(key_type, k)
