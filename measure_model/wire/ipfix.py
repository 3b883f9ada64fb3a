"""IPFIX (RFC 7011) and NetFlow v9 (RFC 3954) messages carrying flow records.

Design
------
A flow record is one row of a table of columns (numpy arrays of equal
length, built by ``host_agent/flows/cache.py``): ``src``, ``dst``, ``sport``,
``dport``, ``proto``, ``packets``, ``octets``, ``tcp_flags``, ``start_ms``,
``end_ms`` (Unix milliseconds), ``direction`` (0 ingress, 1 egress) and
``end_reason`` (RFC 5102 flowEndReason). A template is a tuple of
:class:`Element` rows; each row names its column, its IPFIX information
element (RFC 7012 / IANA registry) and its NetFlow v9 field type, so one
table drives both formats. Encoding a data set is one numpy structured
array with big-endian fields, filled column by column and written with
``tobytes()``: the cost per record is a few array stores, never Python
code per record, so exporting a full cache costs little next to capture.

:class:`MessageBuilder` is one export stream (one collector, one
observation domain): it knows the templates, when they were last sent, the
sequence number and the size limit. Per RFC 7011 the IPFIX sequence number
counts the *data records* sent before the message (mod 2**32, templates not
counted, section 3.1); per RFC 3954 the v9 sequence number counts the
*export packets*. Over UDP templates are re-sent every
``template_interval`` seconds (RFC 7011 section 8.4: templateRefreshTimeout),
in front of the data of the next message or on their own
(:meth:`MessageBuilder.template_messages`). Every message fits in ``mtu``
minus the IP and UDP headers, so nothing is fragmented (RFC 7011 section
10.3.3); records are never split across messages.

Why our own encoder: the formats are a 16- or 20-byte header plus sets of
fixed-length records, about 150 lines with numpy. The Python libraries
are either unmaintained (``ipfix``, last release 2015) or general packet
toolkits (scapy's ``NetflowHeader`` layers) that build each record as
Python objects, cost a second to import and would run in the monitor
process. scapy is used in the tests as an independent decoder, and the
real collector (nfdump's ``nfcapd``) in the acceptance test.

IPv6 addresses are two more rows (``sourceIPv6Address``,
``destinationIPv6Address``) in :data:`TEMPLATE_V6`, used for records whose
``family`` column is 6; the columns ``src6``/``dst6`` are (n, 16) uint8
arrays of address bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

IPFIX_VERSION = 10
NETFLOW9_VERSION = 9
FORMATS = ("ipfix", "netflow9")
TEMPLATE_SET_ID = 2          # IPFIX template set (RFC 7011 section 3.3.2)
V9_TEMPLATE_FLOWSET_ID = 0   # NetFlow v9 template flowset (RFC 3954 section 5.2)
TEMPLATE_ID_V4 = 256
TEMPLATE_ID_V6 = 257
DEFAULT_MTU = 1500
DEFAULT_TEMPLATE_INTERVAL = 30.0
UDP_IPV4_OVERHEAD = 28
UDP_IPV6_OVERHEAD = 48
IPFIX_HEADER = struct.Struct("!HHIII")      # version, length, export time, sequence, domain
V9_HEADER = struct.Struct("!HHIIII")        # version, count, uptime, secs, sequence, source
SET_HEADER = struct.Struct("!HH")

# flowEndReason (RFC 5102 / IANA IE 136)
END_IDLE, END_ACTIVE, END_OF_FLOW, END_FORCED, END_LACK_OF_RESOURCES = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Element:
    """One template row: the record column and its IPFIX / NetFlow v9 encodings.

    ``v9_id`` 0 means the element is not sent in NetFlow v9. ``v9_uptime``
    marks Unix-millisecond columns that v9 sends as milliseconds since the
    exporter's boot (FIRST_SWITCHED / LAST_SWITCHED, 4 bytes).
    """

    column: str
    ipfix_id: int
    length: int
    v9_id: int
    v9_length: int
    v9_uptime: bool = False


_COMMON_HEAD = (
    Element("octets", 1, 8, 1, 8),            # octetDeltaCount / IN_BYTES
    Element("packets", 2, 8, 2, 8),           # packetDeltaCount / IN_PKTS
    Element("proto", 4, 1, 4, 1),             # protocolIdentifier / PROTOCOL
    Element("tcp_flags", 6, 2, 6, 1),         # tcpControlBits (unsigned16, RFC 7125)
    Element("sport", 7, 2, 7, 2),             # sourceTransportPort / L4_SRC_PORT
)
_COMMON_TAIL = (
    Element("dport", 11, 2, 11, 2),           # destinationTransportPort / L4_DST_PORT
    Element("start_ms", 152, 8, 22, 4, True),  # flowStartMilliseconds / FIRST_SWITCHED
    Element("end_ms", 153, 8, 21, 4, True),    # flowEndMilliseconds / LAST_SWITCHED
    Element("direction", 61, 1, 61, 1),       # flowDirection / DIRECTION
    Element("end_reason", 136, 1, 0, 0),      # flowEndReason (no v9 field type)
)
TEMPLATE_V4: tuple[Element, ...] = (
    *_COMMON_HEAD,
    Element("src", 8, 4, 8, 4),               # sourceIPv4Address / IPV4_SRC_ADDR
    Element("dst", 12, 4, 12, 4),             # destinationIPv4Address / IPV4_DST_ADDR
    *_COMMON_TAIL,
)
TEMPLATE_V6: tuple[Element, ...] = (
    *_COMMON_HEAD,
    Element("src6", 27, 16, 27, 16),          # sourceIPv6Address / IPV6_SRC_ADDR
    Element("dst6", 28, 16, 28, 16),          # destinationIPv6Address / IPV6_DST_ADDR
    *_COMMON_TAIL,
)
TEMPLATES: dict[int, tuple[Element, ...]] = {TEMPLATE_ID_V4: TEMPLATE_V4,
                                              TEMPLATE_ID_V6: TEMPLATE_V6}
FAMILY_TEMPLATE = {4: TEMPLATE_ID_V4, 6: TEMPLATE_ID_V6}


def _fields(template: tuple[Element, ...], v9: bool) -> list[tuple[Element, int, int]]:
    """(element, field type, length) of the elements sent in this format."""
    if v9:
        return [(e, e.v9_id, e.v9_length) for e in template if e.v9_id]
    return [(e, e.ipfix_id, e.length) for e in template]


def _dtype(fields: list[tuple[Element, int, int]]) -> np.dtype:
    """Packed big-endian record layout of a template."""
    spec = []
    for element, _, length in fields:
        spec.append((element.column, f"{length}u1" if length == 16 else f">u{length}"))
    return np.dtype(spec)


def template_set(template_id: int, v9: bool = False) -> bytes:
    """The (IPFIX) template set or (v9) template flowset announcing one template."""
    fields = _fields(TEMPLATES[template_id], v9)
    body = struct.pack("!HH", template_id, len(fields))
    body += b"".join(struct.pack("!HH", ftype, length) for _, ftype, length in fields)
    set_id = V9_TEMPLATE_FLOWSET_ID if v9 else TEMPLATE_SET_ID
    return SET_HEADER.pack(set_id, SET_HEADER.size + len(body)) + body


def encode_records(template_id: int, columns: dict[str, np.ndarray], v9: bool = False,
                   boot_ms: int = 0) -> bytes:
    """The data records of ``columns`` (all rows) in one template's layout, no set header."""
    fields = _fields(TEMPLATES[template_id], v9)
    n = len(columns["packets"])
    rec = np.zeros(n, dtype=_dtype(fields))
    for element, _, length in fields:
        value = columns[element.column]
        if v9 and element.v9_uptime:  # v9: ms since the exporter's boot, mod 2**32
            value = (np.asarray(value, np.int64) - boot_ms) & 0xFFFFFFFF
        if length != 16:
            value = np.minimum(np.asarray(value, np.uint64), np.uint64((1 << (8 * length)) - 1))
        rec[element.column] = value
    return rec.tobytes()


def record_length(template_id: int, v9: bool = False) -> int:
    return sum(length for _, _, length in _fields(TEMPLATES[template_id], v9))


class MessageBuilder:
    """One export stream: templates, sequence numbers and the size limit of its messages."""

    def __init__(self, fmt: str = "ipfix", domain: int = 1, mtu: int = DEFAULT_MTU,
                 template_interval: float = DEFAULT_TEMPLATE_INTERVAL, boot: float = 0.0,
                 overhead: int = UDP_IPV4_OVERHEAD) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        self.v9 = fmt == "netflow9"
        self.fmt, self.domain = fmt, domain
        self.max_message = mtu - overhead
        self.template_interval = template_interval
        self.boot_ms = int(boot * 1000)
        self.sequence = 0            # IPFIX: data records sent; v9: packets sent
        self.records_sent = 0
        self.messages_sent = 0
        self.templates_sent_at: float | None = None
        header = V9_HEADER.size if self.v9 else IPFIX_HEADER.size
        if self.max_message < header + SET_HEADER.size + max(
                record_length(t, self.v9) for t in TEMPLATES) + len(self._templates()):
            raise ValueError(f"mtu {mtu} is too small for one record and the templates")

    def _templates(self) -> bytes:
        return b"".join(template_set(t, self.v9) for t in TEMPLATES)

    def _template_count(self) -> int:
        return len(TEMPLATES)

    def _due(self, now: float) -> bool:
        return (self.templates_sent_at is None
                or now - self.templates_sent_at >= self.template_interval)

    def _header(self, body_len: int, records: int, now: float) -> bytes:
        if self.v9:
            uptime = (int(now * 1000) - self.boot_ms) & 0xFFFFFFFF
            head = V9_HEADER.pack(NETFLOW9_VERSION, records, uptime, int(now),
                                  self.sequence & 0xFFFFFFFF, self.domain)
            self.sequence += 1
            return head
        return IPFIX_HEADER.pack(IPFIX_VERSION, IPFIX_HEADER.size + body_len, int(now),
                                 self.sequence & 0xFFFFFFFF, self.domain)

    def template_messages(self, now: float, force: bool = False) -> list[bytes]:
        """A template-only message when the templates are due (or ``force``), else []."""
        if not (force or self._due(now)):
            return []
        body = self._templates()
        self.templates_sent_at = now
        self.messages_sent += 1
        return [self._header(len(body), self._template_count(), now) + body]

    def messages(self, columns: dict[str, np.ndarray], now: float) -> list[bytes]:
        """Messages carrying every record of ``columns``, templates first when due."""
        n = len(columns["packets"])
        family = columns.get("family")
        out: list[bytes] = []
        pending = b""        # sets of the message being built
        pending_records = 0  # v9 count: template + data records in it
        pending_data = 0     # IPFIX sequence: data records in it
        limit = self.max_message - (V9_HEADER.size if self.v9 else IPFIX_HEADER.size)

        def flush() -> None:
            nonlocal pending, pending_records, pending_data
            if pending:
                out.append(self._header(len(pending), pending_records, now) + pending)
                if not self.v9:
                    self.sequence += pending_data
                self.records_sent += pending_data
                self.messages_sent += 1
            pending, pending_records, pending_data = b"", 0, 0

        if self._due(now):
            pending = self._templates()
            pending_records = self._template_count()
            self.templates_sent_at = now
        for fam, template_id in FAMILY_TEMPLATE.items():
            rows = (np.arange(n) if family is None and fam == 4 else
                    np.zeros(0, np.int64) if family is None else
                    np.flatnonzero(np.asarray(family) == fam))
            if rows.size == 0:
                continue
            data = encode_records(template_id, {k: np.asarray(v)[rows] for k, v in
                                                columns.items()}, self.v9, self.boot_ms)
            size = record_length(template_id, self.v9)
            done = 0
            while done < rows.size:
                room = limit - len(pending) - SET_HEADER.size
                take = min(rows.size - done, room // size)
                if take <= 0:
                    flush()
                    continue
                chunk = data[done * size:(done + take) * size]
                pad = (-len(chunk)) % 4 if self.v9 else 0  # v9 flowsets align to 32 bits
                if pad and len(pending) + SET_HEADER.size + len(chunk) + pad > limit:
                    take -= 1
                    if take <= 0:
                        flush()
                        continue
                    chunk = data[done * size:(done + take) * size]
                    pad = (-len(chunk)) % 4
                pending += SET_HEADER.pack(template_id, SET_HEADER.size + len(chunk) + pad)
                pending += chunk + bytes(pad)
                pending_records += take
                pending_data += take
                done += take
                flush()
        if pending and not out:  # templates due and no data: send them anyway
            flush()
        return out

