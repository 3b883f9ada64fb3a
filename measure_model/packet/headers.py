"""Byte-level IPv4/IPv6 header parsing of a batch of header copies (numpy).

``measure_model.packet.keys.HeaderBatch.from_payloads`` lays the copies out as a
``(n, width)`` uint8 matrix and calls one of these; they return the batch's
columns. Every field is read with numpy gathers at per-packet offsets, so
the cost per packet is a few array elements, not Python code.

* IPv4: honours IHL (options), takes the length from the total-length field
  (not the copied length), reads ports only for TCP/UDP first fragments.
  :func:`ipv4_plain` is the common case (no options anywhere: the ports are
  bytes 20..23 of every copy) and leaves the 128-bit addresses to be built
  only if asked.
* IPv6 (:func:`any_ip`): the length is 40 + the payload length; the
  next-header chain is walked through hop-by-hop (0), routing (43), fragment
  (44), destination options (60) and AH (51), one vectorised step per header
  for the rows still on an extension header, for as many headers as fit in
  the copy (the smallest is 8 bytes: up to 11 in a 128-byte copy; an
  arbitrary step bound let a seventh header hide the ports). Ports and TCP
  flags only for first fragments (fragment offset 0). A chain cut by the
  copy keeps the last next-header value read as ``proto`` and ports 0.
* Anything else, or a copy shorter than its IP header, is dropped and
  counted. A TCP/UDP payload cut before the ports keeps ports 0, one cut
  before the flags keeps the flags 0.

Addresses are two uint64 words ``[hi, lo]``; IPv4 is IPv4-mapped
(``hi == 0``, ``lo == V4_MAPPED | v4``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

V4_MAPPED = 0xFFFF << 32
IPV6_HEADER = 40
EXTENSION_HEADERS = (0, 43, 44, 51, 60)   # hop-by-hop, routing, fragment, AH, dest. options
_U = np.uint64


def _rows(mat: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``mat[rows, cols + k]`` for the k of ``cols``' last axis (a per-row gather)."""
    return mat[rows[:, None], cols]


def ipv4_plain(mat: np.ndarray, lens: np.ndarray) -> dict[str, Any]:
    """IPv4 without options anywhere: the ports are bytes 20..23 of every copy."""
    hdr = np.ascontiguousarray(mat[:, :24])
    # one byte-swapping cast each, then native arithmetic
    words = hdr.view(">u4").astype(np.uint32)          # [.., .., .., src, dst, ports]
    halves = hdr[:, :8].view(">u2").astype(np.uint16)  # [.., total length, id, frag]
    proto = hdr[:, 9].copy()
    first = (halves[:, 3] & 0x1FFF) == 0
    ported = ((proto == 6) | (proto == 17)) & first
    ports = words[:, 5] * ported
    tcp = (proto == 6) & first & (lens >= 34)
    return {"proto": proto, "sport": (ports >> 16).astype(np.uint16),
            "dport": (ports & 0xFFFF).astype(np.uint16),
            "length": halves[:, 1].astype(np.uint32),
            "v4": (words[:, 3].astype(np.uint64), words[:, 4].astype(np.uint64)),
            "flags_at": (mat, 33, tcp)}

def any_ip(mat: np.ndarray, lens: np.ndarray) -> dict[str, Any]:
    """Any mix of IPv4 (with options) and IPv6 (with extension headers)."""
    n = mat.shape[0]
    b0 = mat[:, 0]
    version = b0 >> 4
    hlen = (b0 & 0x0F).astype(np.int64) * 4
    v4 = (version == 4) & (lens >= 20) & (hlen >= 20) & (lens >= hlen)
    v6 = (version == 6) & (lens >= IPV6_HEADER)
    ok = v4 | v6
    if not ok.all():
        mat, lens, hlen, v4 = mat[ok], lens[ok], hlen[ok], v4[ok]
    m = mat.shape[0]
    src = np.zeros((m, 2), np.uint64)
    dst = np.zeros((m, 2), np.uint64)
    proto = np.zeros(m, np.uint8)
    length = np.zeros(m, np.uint32)
    l4 = np.zeros(m, np.int64)
    first = np.ones(m, bool)
    i4 = v4.nonzero()[0]
    i6 = (~v4).nonzero()[0]
    if i4.shape[0]:
        hdr = np.ascontiguousarray(mat[i4, :20])
        words = hdr.view(">u4").astype(np.uint64)
        halves = hdr[:, :8].view(">u2")
        src[i4, 1] = words[:, 3] | _U(V4_MAPPED)
        dst[i4, 1] = words[:, 4] | _U(V4_MAPPED)
        proto[i4] = hdr[:, 9]
        length[i4] = halves[:, 1]
        first[i4] = (halves[:, 3] & 0x1FFF) == 0
        l4[i4] = hlen[i4]
    if i6.shape[0]:
        m6, lens6 = mat[i6], lens[i6]
        addr = np.ascontiguousarray(m6[:, 8:40]).view(">u8").astype(np.uint64)
        src[i6], dst[i6] = addr[:, :2], addr[:, 2:]
        length[i6] = IPV6_HEADER + (m6[:, 4].astype(np.uint32) << 8 | m6[:, 5])
        nh, off, first6 = walk_extensions(m6, lens6)
        proto[i6], l4[i6], first[i6] = nh, off, first6
    width = mat.shape[1]
    rows = np.arange(m)
    ported = ((proto == 6) | (proto == 17)) & first & (lens >= l4 + 4)
    at = np.minimum(l4, width - 4)[:, None] + np.arange(4)
    p = _rows(mat, rows, at).astype(np.uint16) * ported[:, None]
    tcp = (proto == 6) & first & (lens >= l4 + 14)
    flags = mat[rows, np.minimum(l4 + 13, width - 1)] * tcp
    family = np.where(v4, 4, 6).astype(np.uint8)
    return {"src": src, "dst": dst, "proto": proto,
            "sport": (p[:, 0] << 8 | p[:, 1]).astype(np.uint16),
            "dport": (p[:, 2] << 8 | p[:, 3]).astype(np.uint16), "length": length,
            "dropped": n - m, "family": family, "tcp_flags": flags}



def walk_extensions(mat: np.ndarray, lens: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-layer protocol, its offset and first-fragment flag of IPv6 copies.

    One vectorised step per extension header, for the rows still on one; a
    header that does not fit in the copy stops its row's walk there.
    """
    k = mat.shape[0]
    nh = mat[:, 6].astype(np.int64)
    off = np.full(k, IPV6_HEADER, np.int64)
    first = np.ones(k, bool)
    ext_ids = np.array(EXTENSION_HEADERS)
    for _ in range(max(1, (mat.shape[1] - IPV6_HEADER) // 8 + 1)):  # all that fit
        on = np.isin(nh, ext_ids) & (off + 8 <= lens)
        if not on.any():
            break
        rows = on.nonzero()[0]
        o, kind = off[rows], nh[rows]
        size1 = mat[rows, o + 1].astype(np.int64)
        size = np.where(kind == 44, 8, np.where(kind == 51, (size1 + 2) * 4, (size1 + 1) * 8))
        frag = kind == 44
        if frag.any():
            fo = ((mat[rows, o + 2].astype(np.int64) << 8) | mat[rows, o + 3]) >> 3
            first[rows[frag & (fo != 0)]] = False
        nh[rows] = mat[rows, o]
        off[rows] = o + size
    return nh.astype(np.uint8), off, first
