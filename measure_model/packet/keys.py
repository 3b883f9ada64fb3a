"""Key types (the task table's), the key layout, and the batch of parsed headers.

Design
------
The monitor copies the first :data:`HEADER_COPY_BYTES` bytes of each packet
and hands a *list* of them to :meth:`HeaderBatch.from_payloads`, which joins
them into one ``(n, width)`` matrix and has :mod:`measure_model.packet.headers`
read every IPv4/IPv6 field with numpy gathers (IPv4 options, the IPv6
extension-header chain, ports only for first fragments; see there).

Addresses are 128-bit: two uint64 words ``[hi, lo]`` per address, an IPv4
address held as its IPv4-mapped form ``::ffff:a.b.c.d`` (``hi == 0``,
``lo == 0xffff << 32 | v4``) and printed as a dotted quad; IPv6 is printed
per RFC 5952. Full keys of a batch are an ``(n, W)`` uint64 array (``(n,)``
when ``W == 1``) with :data:`KEY_WIDTH` fixed per key type::

    src, dst         [hi, lo]                                  W = 2
    src_dst          [src hi, src lo, dst hi, dst lo]          W = 4
    src_dport, ...   [hi, lo, port]                            W = 3
    sport, dport     port                                      W = 1
    proto            proto                                     W = 1
    five_tuple       [src hi, src lo, dst hi, dst lo,
                      proto << 32 | sport << 16 | dport]       W = 5

As a Python int (:func:`key_ints`, :func:`format_key`, :func:`parse_key`) a
key is its fields concatenated, most significant first (address 128 bits,
port 16, proto 8): ``src_dst = src << 128 | dst``, ``five_tuple = src << 168
| dst << 40 | proto << 32 | sport << 16 | dport``.

The 64-bit sketch key. When every address of a key is IPv4 it is the
pre-IPv6 value (``src``, ``src << 32 | dst``, ``src << 16 | dport``, and for
``five_tuple`` ``mix64(mix64(src << 32 | dst) ^ (proto << 32 | sport << 16 |
dport))``), so IPv4 batches cost what they did and IPv4 sketches keep their
meaning. Otherwise it is a fold of the words, ``h = mix64(w0); h = mix64(h ^
w_i)``: two distinct keys share a sketch key with odds about 2**-64 per pair.
Only this module knows ``W`` and the layout; everything else goes through
its functions.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from measure_model.packet import headers
from measure_model.packet.headers import V4_MAPPED
from measure_model.sketch.countmin import MASK64, mix64, splitmix64
from measure_model.task import KEYS, SERVICE_PORTS

KEY_TYPES: tuple[str, ...] = KEYS  # the task table's key types (measure_model.task)
KEY_WIDTH: dict[str, int] = {"src": 2, "dst": 2, "src_dst": 4, "sport": 1, "dport": 1,
                             "src_dport": 3, "dst_dport": 3, "proto": 1, "five_tuple": 5}
HEADER_COPY_BYTES = 128   # IPv6 + a few extension headers + the TCP flags
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
MASK32 = 0xFFFFFFFF
MASK128 = (1 << 128) - 1
_U = np.uint64
# per key type: the bit shift of each word in the key's Python int, and the
# column of each address's ``hi`` word in the (n, W) array
_SHIFTS = {"src": (64, 0), "dst": (64, 0), "src_dst": (192, 128, 64, 0),
           "src_dport": (80, 16, 0), "dst_dport": (80, 16, 0),
           "five_tuple": (232, 168, 104, 40, 0)}
_WORD_MASKS = {"src": (MASK64, MASK64), "dst": (MASK64, MASK64),
               "src_dst": (MASK64,) * 4, "src_dport": (MASK64, MASK64, 0xFFFF),
               "dst_dport": (MASK64, MASK64, 0xFFFF),
               "five_tuple": (MASK64,) * 4 + ((1 << 40) - 1,)}
_PACKED = {w: np.dtype((np.void, 8 * w)) for w in set(KEY_WIDTH.values())}
_ADDR_COLS = {"src": (0,), "dst": (0,), "src_dst": (0, 2), "src_dport": (0,),
              "dst_dport": (0,), "five_tuple": (0, 2)}


def check_key_type(value: Any, name: str = "key") -> str:
    """Return ``value`` if it is a key type, else ValueError naming the field."""
    if not isinstance(value, str) or value not in KEY_TYPES:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(KEY_TYPES)}")
    return value


def key_width(key_type: str) -> int:
    """Words per full key of ``key_type`` (its arrays are ``(n,)`` when 1)."""
    return KEY_WIDTH[check_key_type(key_type)]


def empty_keys(key_type: str) -> np.ndarray:
    """A zero-length full-key array of ``key_type``."""
    w = key_width(key_type)
    return np.zeros(0, np.uint64) if w == 1 else np.zeros((0, w), np.uint64)


def pack_keys(key_type: str, full: np.ndarray) -> np.ndarray:
    """Full keys as a 1-D array, one element per key (numpy void of ``8 * W`` bytes
    when W > 1): gathers and concatenations of it cost what uint64 ones do, about
    a tenth of the same on ``(k, W)`` rows. :func:`key_ints` reads it directly."""
    w = KEY_WIDTH[key_type]
    if w == 1:
        return full
    if full.dtype != np.uint64 or not full.flags.c_contiguous:
        full = np.ascontiguousarray(full, dtype=np.uint64)
    return full.view(_PACKED[w])[:, 0]


def unpack_keys(key_type: str, keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_keys` (full keys pass unchanged)."""
    w = KEY_WIDTH[key_type]
    if w == 1 or keys.dtype.kind != "V":
        return keys
    return np.ascontiguousarray(keys).view(np.uint64).reshape(-1, w)


def addresses_of_v4(values: Any) -> np.ndarray:
    """``(n, 2)`` address words of IPv4 addresses given as 32-bit ints."""
    v = np.asarray(values, dtype=np.uint64)
    out = np.zeros((v.shape[0], 2), np.uint64)
    out[:, 1] = v | _U(V4_MAPPED)
    return out


class HeaderBatch:
    """Parsed header fields of a batch of IPv4/IPv6 packets (parallel arrays).

    ``src``/``dst`` are ``(n, 2)`` uint64 address words ``[hi, lo]``
    (IPv4-mapped for IPv4), ``proto`` uint8 (for IPv6 the upper-layer next
    header), ``sport``/``dport`` uint16, ``length`` uint32 (the IPv4 total
    length, or 40 + the IPv6 payload length), ``family`` uint8 (4 or 6),
    ``tcp_flags`` uint8 (the TCP flags byte, 0 for other protocols or later
    fragments), ``dropped`` the payloads that were neither IPv4 nor IPv6,
    ``weight`` None (one packet per row) or the packets of each row when the
    rows are records already counted elsewhere (the eBPF capture: ``length``
    is then each row's byte sum and ``tcp_flags`` their OR). A
    batch parsed from IPv4-only copies without options builds ``src``,
    ``dst``, ``family`` and ``tcp_flags`` only when asked: its sketch keys
    come from the 32-bit addresses directly.
    """

    def __init__(self, src: np.ndarray | None, dst: np.ndarray | None, proto: np.ndarray,
                 sport: np.ndarray, dport: np.ndarray, length: np.ndarray, dropped: int = 0,
                 family: np.ndarray | None = None, tcp_flags: np.ndarray | None = None, *,
                 v4: tuple[np.ndarray, np.ndarray] | None = None,
                 flags_at: tuple[np.ndarray, int, np.ndarray] | None = None) -> None:
        self._src, self._dst = src, dst
        self.proto, self.sport, self.dport, self.length = proto, sport, dport, length
        self.dropped = dropped
        self._family, self._tcp_flags = family, tcp_flags
        self._v4 = v4              # 32-bit (src, dst) as uint64 when every packet is IPv4
        self._flags_at = flags_at  # (copies, column, mask) the TCP flags are read from
        self._cache: dict = {}
        self.weight: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.proto.shape[0])

    @property
    def packets(self) -> int:
        """Packets in the batch: its rows, or the sum of their weights."""
        if self.weight is None:
            return len(self)
        return int(self.weight.sum(dtype=np.uint64))

    def _addr(self, which: int, rows: np.ndarray | None = None) -> np.ndarray:
        """``(k, 2)`` words of the sources (0) or destinations (1), all or ``rows``."""
        if self._v4 is None:
            a = self._src if which == 0 else self._dst
            assert a is not None  # IPv6 batches always hold (n, 2) address words
            return a if rows is None else a[rows]
        x = self._v4[which] if rows is None else self._v4[which][rows]
        out = np.zeros((x.shape[0], 2), np.uint64)
        out[:, 1] = x | _U(V4_MAPPED)
        return out

    @property
    def src(self) -> np.ndarray:
        if self._src is None:
            self._src = self._addr(0)
        return self._src

    @property
    def dst(self) -> np.ndarray:
        if self._dst is None:
            self._dst = self._addr(1)
        return self._dst

    @property
    def family(self) -> np.ndarray:
        if self._family is None:
            if self._v4 is not None:
                self._family = np.full(len(self), 4, np.uint8)
            else:
                self._family = np.where(_is_v4(self.src) & _is_v4(self.dst), 4,
                                        6).astype(np.uint8)
        return self._family

    @property
    def tcp_flags(self) -> np.ndarray:
        if self._tcp_flags is None:
            if self._flags_at is None:
                self._tcp_flags = np.zeros(len(self), np.uint8)
            else:
                mat, col, mask = self._flags_at
                self._tcp_flags = mat[:, col] * mask
        return self._tcp_flags

    @classmethod
    def empty(cls, dropped: int = 0) -> HeaderBatch:
        z = np.zeros((0, 2), np.uint64)
        return cls(z, z.copy(), np.zeros(0, np.uint8), np.zeros(0, np.uint16),
                   np.zeros(0, np.uint16), np.zeros(0, np.uint32), dropped,
                   np.zeros(0, np.uint8), np.zeros(0, np.uint8))

    @classmethod
    def from_arrays(cls, src: ArrayLike, dst: ArrayLike, proto: ArrayLike, sport: ArrayLike,
                    dport: ArrayLike, length: ArrayLike, family: ArrayLike | None = None,
                    tcp_flags: ArrayLike | None = None) -> HeaderBatch:
        """Build a batch from field arrays (synthetic streams, tests).

        ``src``/``dst`` are ``(n, 2)`` address words, or 32-bit IPv4 addresses.
        """
        src, dst = np.asarray(src), np.asarray(dst)
        if src.ndim == 1:
            src = addresses_of_v4(src)
        if dst.ndim == 1:
            dst = addresses_of_v4(dst)
        return cls(src.astype(np.uint64), dst.astype(np.uint64), np.asarray(proto, np.uint8),
                   np.asarray(sport, np.uint16), np.asarray(dport, np.uint16),
                   np.asarray(length, np.uint32), 0,
                   None if family is None else np.asarray(family, np.uint8),
                   None if tcp_flags is None else np.asarray(tcp_flags, np.uint8))

    @classmethod
    def from_records(cls, src: np.ndarray, dst: np.ndarray, proto: np.ndarray,
                     sport: np.ndarray, dport: np.ndarray, nbytes: np.ndarray,
                     packets: np.ndarray, family: np.ndarray,
                     tcp_flags: np.ndarray) -> HeaderBatch:
        """Rows that each stand for ``packets`` packets of ``nbytes`` bytes in all
        (``src``/``dst`` as ``(n, 2)`` address words)."""
        batch = cls.from_arrays(src, dst, proto, sport, dport,
                                np.asarray(nbytes, np.uint64), family, tcp_flags)
        batch.length = np.asarray(nbytes, np.uint64)
        batch.weight = np.asarray(packets, np.uint64)
        return batch

    @classmethod
    def from_payloads(cls, payloads: list[bytes]) -> HeaderBatch:
        """Parse copied IPv4/IPv6 headers (ideally :data:`HEADER_COPY_BYTES` each)."""
        n = len(payloads)
        if n == 0:
            return cls.empty()
        lens = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
        joined = b"".join(payloads)
        if len(joined) == n * int(lens[0]) and (lens == lens[0]).all() and lens[0] >= 64:
            # the monitor's usual case for full-size packets: equal copies
            mat = np.frombuffer(joined, dtype=np.uint8).reshape(n, int(lens[0]))
        else:
            width = int(max(64, min(int(lens.max()), HEADER_COPY_BYTES)))
            buf = np.frombuffer(joined + bytes(width), dtype=np.uint8)
            offs = np.cumsum(lens) - lens
            mat = buf[offs[:, None] + np.arange(width)]
            lens = np.minimum(lens, width)
        if (mat[:, 0] == 0x45).all() and lens.min() >= 24:
            return cls(None, None, **headers.ipv4_plain(mat, lens))
        return cls(**headers.any_ip(mat, lens))

    # ------------------------------------------------------------ keys
    def _v4_words(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The 32-bit IPv4 ``(src, dst)`` as uint64 when every packet is IPv4, else None."""
        if self._v4 is None and "v4" not in self._cache:
            all4 = bool((self.family == 4).all())
            self._cache["v4"] = ((self.src[:, 1] & _U(MASK32), self.dst[:, 1] & _U(MASK32))
                                 if all4 else None)
        return self._v4 if self._v4 is not None else self._cache["v4"]

    def _last_word(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``proto << 32 | sport << 16 | dport`` (the five-tuple's last word)."""
        cached = self._cache.get("last")
        if cached is None:
            cached = ((self.proto.astype(_U) << _U(32)) | (self.sport.astype(_U) << _U(16))
                      | self.dport.astype(_U))
            self._cache["last"] = cached
        return cached if rows is None else cached[rows]

    def full_keys(self, key_type: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Exact keys (of every packet, or of ``rows``): ``(k, W)`` uint64, ``(k,)`` when W
        is 1; see the module docstring."""
        cached = self._cache.get(("full", key_type))
        if cached is not None:
            return cached if rows is None else cached[rows]
        if self._v4 is not None and KEY_WIDTH[key_type] > 1:
            out = self._v4_full(key_type, rows)
        elif key_type in ("src", "dst"):
            out = self._addr(0 if key_type == "src" else 1, rows)
        elif key_type == "src_dst":
            out = np.concatenate([self._addr(0, rows), self._addr(1, rows)], axis=1)
        elif key_type in ("sport", "dport", "proto"):
            col = getattr(self, key_type)
            out = (col if rows is None else col[rows]).astype(_U)
        elif key_type in ("src_dport", "dst_dport"):
            port = self.dport if rows is None else self.dport[rows]
            out = np.concatenate([self._addr(0 if key_type == "src_dport" else 1, rows),
                                  port.astype(_U)[:, None]], axis=1)
        elif key_type == "five_tuple":
            out = np.concatenate([self._addr(0, rows), self._addr(1, rows),
                                  self._last_word(rows)[:, None]], axis=1)
        else:
            check_key_type(key_type)
            raise AssertionError(key_type)
        if rows is None:
            self._cache[("full", key_type)] = out
        return out

    def _v4_full(self, key_type: str, rows: np.ndarray | None) -> np.ndarray:
        """Full keys with addresses straight from the 32-bit IPv4 words (one array)."""
        assert self._v4 is not None  # only called for all-IPv4 batches
        s, d = self._v4 if rows is None else (self._v4[0][rows], self._v4[1][rows])
        out = np.zeros((s.shape[0], KEY_WIDTH[key_type]), np.uint64)
        mapped = _U(V4_MAPPED)
        if key_type in ("src", "src_dst", "src_dport", "five_tuple"):
            np.bitwise_or(s, mapped, out=out[:, 1])
        if key_type in ("src_dst", "five_tuple"):
            np.bitwise_or(d, mapped, out=out[:, 3])
        elif key_type in ("dst", "dst_dport"):
            np.bitwise_or(d, mapped, out=out[:, 1])
        if key_type in ("src_dport", "dst_dport"):
            out[:, 2] = self.dport if rows is None else self.dport[rows]
        elif key_type == "five_tuple":
            out[:, 4] = self._last_word(rows)
        return out

    def sketch_keys(self, key_type: str) -> np.ndarray:
        """64-bit keys the sketches hash (see the module docstring)."""
        cached = self._cache.get(("sketch", key_type))
        if cached is None:
            v4 = self._v4_words() if KEY_WIDTH[key_type] > 1 else None
            if v4 is None:
                cached = sketch_keys_of(key_type, self.full_keys(key_type))
            else:
                last = self._last_word() if key_type == "five_tuple" else self.dport
                cached = _v4_sketch(key_type, v4[0], v4[1], last)
            self._cache[("sketch", key_type)] = cached
        return cached


TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10


def probe_rows(batch: HeaderBatch) -> np.ndarray:
    """Rows of ``batch`` that are connection attempts (what port_scan counts).

    The rule: a TCP segment with SYN set and neither ACK nor RST (an opening
    SYN; never the SYN-ACK or RST a target answers with), or a UDP datagram
    unless it goes from a service port (below 1024) to a client port (1024 and
    up), which is how a service answers. Later fragments (no ports or flags),
    ICMP and other protocols are never probes.
    """
    proto = batch.proto
    flags = batch.tcp_flags
    tcp = (proto == 6) & ((flags & TCP_SYN) != 0) & ((flags & (TCP_ACK | TCP_RST)) == 0)
    udp = (proto == 17) & ~((batch.sport < SERVICE_PORTS) & (batch.dport >= SERVICE_PORTS))
    return np.flatnonzero(tcp | udp)


def _is_v4(addr: np.ndarray) -> np.ndarray:
    """Rows of ``(n, 2)`` address words that are IPv4-mapped."""
    return (addr[:, 0] == 0) & ((addr[:, 1] >> _U(32)) == _U(0xFFFF))


def _v4_sketch(key_type: str, s: np.ndarray, d: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Sketch keys of all-IPv4 keys from their 32-bit addresses (the pre-IPv6 values).

    ``last`` is the dport (``src_dport``/``dst_dport``) or the five-tuple's last word.
    """
    if key_type == "src":
        return s
    if key_type == "dst":
        return d
    if key_type == "src_dst":
        return (s << _U(32)) | d
    if key_type == "src_dport":
        return (s << _U(16)) | last.astype(_U)
    if key_type == "dst_dport":
        return (d << _U(16)) | last.astype(_U)
    return mix64(mix64((s << _U(32)) | d) ^ last)


def _fold(full: np.ndarray) -> np.ndarray:
    h = mix64(full[:, 0])
    for i in range(1, full.shape[1]):
        h = mix64(h ^ full[:, i])
    return h


def sketch_keys_of(key_type: str, full: np.ndarray) -> np.ndarray:
    """Sketch keys for an array of exact keys (full or packed) of ``key_type``."""
    full = np.asarray(unpack_keys(key_type, full), dtype=np.uint64)
    if KEY_WIDTH[key_type] == 1:
        return full
    cols = _ADDR_COLS[key_type]
    v4 = _is_v4(full[:, cols[0]:cols[0] + 2])
    for c in cols[1:]:
        v4 &= _is_v4(full[:, c:c + 2])
    m32 = _U(MASK32)
    s = full[:, 1] & m32
    d = full[:, 3] & m32 if len(cols) == 2 else s
    out = _v4_sketch(key_type, s, d, full[:, -1])
    if not v4.all():
        rows = (~v4).nonzero()[0]
        out[rows] = _fold(full[rows])
    return out


def key_ints(key_type: str, full: np.ndarray) -> list[int]:
    """Exact keys (full or packed) as Python ints (for formatting)."""
    if KEY_WIDTH[key_type] == 1:
        return [int(x) for x in full.tolist()]
    full = unpack_keys(key_type, full)
    if key_type in ("src", "dst"):
        return [(hi << 64) | lo for hi, lo in full.tolist()]
    shifts = _SHIFTS[key_type]
    return [sum(w << s for w, s in zip(row, shifts, strict=True)) for row in full.tolist()]


def five_tuple_columns(full: np.ndarray) -> dict[str, np.ndarray]:
    """The fields of exact ``five_tuple`` keys as columns (flow records, IPFIX export):
    ``family`` (4 or 6), ``src``/``dst`` (uint32, the IPv4 rows' addresses, else 0),
    ``src6``/``dst6`` ((n, 16) uint8 address bytes, the IPv6 rows'), ``proto``,
    ``sport``, ``dport``."""
    full = np.asarray(unpack_keys("five_tuple", full), dtype=np.uint64).reshape(-1, 5)
    v4 = _is_v4(full[:, 0:2]) & _is_v4(full[:, 2:4])
    last = full[:, 4]
    m32 = _U(MASK32)
    return {"family": np.where(v4, 4, 6).astype(np.uint8),
            "src": ((full[:, 1] & m32) * v4).astype(np.uint32),
            "dst": ((full[:, 3] & m32) * v4).astype(np.uint32),
            "src6": np.ascontiguousarray(full[:, 0:2]).astype(">u8").view(np.uint8)
            .reshape(-1, 16),
            "dst6": np.ascontiguousarray(full[:, 2:4]).astype(">u8").view(np.uint8)
            .reshape(-1, 16),
            "proto": ((last >> _U(32)) & _U(0xFF)).astype(np.uint8),
            "sport": ((last >> _U(16)) & _U(0xFFFF)).astype(np.uint16),
            "dport": (last & _U(0xFFFF)).astype(np.uint16)}


def full_key_array(key_type: str, values: list[int]) -> np.ndarray:
    """Inverse of :func:`key_ints`: exact-key array from Python ints."""
    if KEY_WIDTH[key_type] == 1:
        return np.array(values, dtype=np.uint64)
    shifts, masks = _SHIFTS[key_type], _WORD_MASKS[key_type]
    rows = [[(v >> s) & m for s, m in zip(shifts, masks, strict=True)] for v in values]
    return np.array(rows, dtype=np.uint64).reshape(len(values), len(shifts))


def _is_v4_int(a: int) -> bool:
    return a >> 32 == 0xFFFF


def _fold_int(words: list[int]) -> int:
    h = splitmix64(words[0])
    for w in words[1:]:
        h = splitmix64(h ^ w)
    return h & MASK64


def sketch_key_of(key_type: str, value: int) -> int:
    """Sketch key of one exact key (Python int); equals :func:`sketch_keys_of`."""
    if KEY_WIDTH[key_type] == 1:
        return value
    if key_type in ("src", "dst"):
        return value & MASK32 if _is_v4_int(value) else _fold_int([value >> 64, value & MASK64])
    if key_type == "src_dst":
        s, d = value >> 128, value & MASK128
        if _is_v4_int(s) and _is_v4_int(d):
            return (s & MASK32) << 32 | (d & MASK32)
    elif key_type in ("src_dport", "dst_dport"):
        a = value >> 16
        if _is_v4_int(a):
            return (a & MASK32) << 16 | (value & 0xFFFF)
    else:
        s, d, last = value >> 168, (value >> 40) & MASK128, value & ((1 << 40) - 1)
        if _is_v4_int(s) and _is_v4_int(d):
            hi = (s & MASK32) << 32 | (d & MASK32)
            return splitmix64(splitmix64(hi) ^ last) & MASK64
    shifts, masks = _SHIFTS[key_type], _WORD_MASKS[key_type]
    return _fold_int([(value >> s) & m for s, m in zip(shifts, masks, strict=True)])


# ---------------------------------------------------------------- strings
def format_address(a: int) -> str:
    """A 128-bit address: dotted quad if IPv4-mapped, else RFC 5952 text."""
    if a >> 32 == 0xFFFF:
        return socket.inet_ntoa((a & MASK32).to_bytes(4, "big"))
    text = socket.inet_ntop(socket.AF_INET6, a.to_bytes(16, "big"))
    # glibc writes ::/96 addresses as ::a.b.c.d; RFC 5952 wants hex there
    return str(ipaddress.IPv6Address(a)) if "." in text else text


def _proto_str(v: int) -> str:
    return PROTO_NAMES.get(v, str(v))


@functools.lru_cache(maxsize=1 << 16)  # the same keys are formatted every interval
def format_key(key_type: str, value: int) -> str:
    """String form (docs/design.md) of an exact key."""
    if key_type in ("src", "dst"):
        return format_address(value)
    if key_type == "src_dst":
        return f"{format_address(value >> 128)},{format_address(value & MASK128)}"
    if key_type in ("sport", "dport"):
        return str(value)
    if key_type in ("src_dport", "dst_dport"):
        return f"{format_address(value >> 16)},{value & 0xFFFF}"
    if key_type == "proto":
        return _proto_str(value)
    if key_type == "five_tuple":
        return (f"{format_address(value >> 168)},{format_address((value >> 40) & MASK128)},"
                f"{_proto_str((value >> 32) & 0xFF)},{(value >> 16) & 0xFFFF},{value & 0xFFFF}")
    check_key_type(key_type)
    raise AssertionError(key_type)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_UNPACK_U32 = struct.Struct("!I").unpack


def parse_address(text: str) -> int:
    """128-bit address of a strict dotted quad (IPv4-mapped) or IPv6 text.

    Dotted quads are matched by a regex first (no leading zeros, octal, hex or
    short forms, which ``inet_aton`` alone would accept), then converted by
    ``inet_aton``: about 5x faster than ``ipaddress``, and merges parse every
    candidate key. IPv6 goes through ``inet_pton`` (no zone ids).
    """
    t = text.strip()
    if ":" in t:
        try:
            return int.from_bytes(socket.inet_pton(socket.AF_INET6, t), "big")
        except (OSError, ValueError):
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    if _DOTTED_QUAD.fullmatch(t) is None:
        raise ValueError(f"{text!r} is not an IPv4 address")
    return V4_MAPPED | _UNPACK_U32(socket.inet_aton(t))[0]


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
        raise ValueError(f"{text!r} is not a protocol ({', '.join(PROTO_NUMBERS)} or 0..255)")
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
        return parse_address(parts[0])
    if key_type == "src_dst":
        return (parse_address(parts[0]) << 128) | parse_address(parts[1])
    if key_type in ("sport", "dport"):
        return _parse_port(parts[0])
    if key_type in ("src_dport", "dst_dport"):
        return (parse_address(parts[0]) << 16) | _parse_port(parts[1])
    if key_type == "proto":
        return _parse_proto(parts[0])
    return ((parse_address(parts[0]) << 168) | (parse_address(parts[1]) << 40)
            | (_parse_proto(parts[2]) << 32) | (_parse_port(parts[3]) << 16)
            | _parse_port(parts[4]))


@functools.lru_cache(maxsize=1 << 16)
def _sketch_key_of_text(key_type: str, text: str) -> tuple[int, int]:
    value = parse_key(key_type, text)
    return value, sketch_key_of(key_type, value)


def parsed_keys(key_type: str, texts: Iterable[str]) -> tuple[list[int], np.ndarray]:
    """Exact keys and their sketch keys (uint64) for string keys, remembered: the same
    keys come back every interval from every child, and parsing them one by one in
    Python was most of a merge's time (ValueError as ``parse_key``)."""
    pairs = [_sketch_key_of_text(key_type, t) if isinstance(t, str) else (parse_key(
        key_type, t), 0) for t in texts]
    return [v for v, _ in pairs], np.array([h for _, h in pairs], dtype=np.uint64)


# Canonical IPv4 string forms (what format_key writes), matched by one regex per
# key: ~20x faster than parse_key, so a report's thousands of window keys are
# cheap to check on receipt. Anything else (IPv6 keys included) goes through
# parse_key, which accepts the same set plus harmless variants (spaces, leading
# zeros in ports, any valid IPv6 spelling).
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
