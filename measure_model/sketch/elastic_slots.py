"""The heavy part's slot key: 32-bit lanes sized to the key type and address family.

A heavy slot stores its key as ``lanes`` uint32 words, no more than the key
needs, so a 4-byte IPv4 ``src`` costs 4 bytes and only IPv6 addresses cost
16. Every lane layout is invertible: :func:`full_of_lanes` gives back the
exact full key of :mod:`measure_model.packet.keys` (no fingerprint), so a
heavy entry always names its key exactly::

    key type             IPv4 table (family 4)                 IPv6 table (family 6)
    src, dst             [addr]                           1    [a0, a1, a2, a3]             4
    src_dst              [src, dst]                       2    [src a0..a3, dst a0..a3]     8
    src_dport, dst_dport [addr, dport]                    2    [a0..a3, dport]              5
    five_tuple           [src, dst, sport<<16|dport,      4    [src a0..a3, dst a0..a3,    10
                          proto]                                sport<<16|dport, proto]
    sport, dport, proto  [value]                          1    (one table, no family)

``a0..a3`` are the address's 128 bits, most significant first. A key is
IPv4 when every address in it is IPv4-mapped (``keys.py``); it then goes to
the IPv4 table, otherwise to the IPv6 table.
"""

from __future__ import annotations

import numpy as np

from measure_model.packet.headers import V4_MAPPED
from measure_model.packet.keys import KEY_WIDTH

_U = np.uint64
M32 = _U(0xFFFFFFFF)
# the columns of each address's hi word in keys.py's full key
ADDR_COLS = {"src": (0,), "dst": (0,), "src_dst": (0, 2), "src_dport": (0,),
             "dst_dport": (0,), "five_tuple": (0, 2)}
V4_LANES = {"src": 1, "dst": 1, "src_dst": 2, "src_dport": 2, "dst_dport": 2, "five_tuple": 4}
V6_LANES = {"src": 4, "dst": 4, "src_dst": 8, "src_dport": 5, "dst_dport": 5, "five_tuple": 10}


def has_family(key_type: str) -> bool:
    """Whether keys of this type hold addresses (and so an address family)."""
    return key_type in ADDR_COLS


def lanes_of(key_type: str, family: int) -> int:
    """Lanes of one slot key of ``key_type`` in the table of ``family`` (4 or 6)."""
    if not has_family(key_type):
        return 1
    return V4_LANES[key_type] if family == 4 else V6_LANES[key_type]


def is_v4(key_type: str, full: np.ndarray) -> np.ndarray:
    """Per key: every address is IPv4-mapped (all True for keys without addresses)."""
    full = np.asarray(full, np.uint64)
    if not has_family(key_type):
        return np.ones(full.shape[0], bool)
    out = np.ones(full.shape[0], bool)
    for c in ADDR_COLS[key_type]:
        out &= (full[:, c] == 0) & ((full[:, c + 1] >> _U(32)) == _U(0xFFFF))
    return out


def _addr_lanes(hi: np.ndarray, lo: np.ndarray) -> list[np.ndarray]:
    return [hi >> _U(32), hi & M32, lo >> _U(32), lo & M32]


def lanes_from_full(key_type: str, family: int, full: np.ndarray) -> np.ndarray:
    """``(n, lanes)`` uint32 slot keys of full keys (IPv4 lanes assume IPv4 keys)."""
    full = np.asarray(full, np.uint64)
    if not has_family(key_type):
        return (full.reshape(-1) & M32).astype(np.uint32).reshape(-1, 1)
    cols: list[np.ndarray] = []
    for c in ADDR_COLS[key_type]:
        if family == 4:
            cols.append(full[:, c + 1] & M32)
        else:
            cols.extend(_addr_lanes(full[:, c], full[:, c + 1]))
    if key_type in ("src_dport", "dst_dport"):
        cols.append(full[:, 2] & M32)
    elif key_type == "five_tuple":
        cols.extend([full[:, 4] & M32, full[:, 4] >> _U(32)])
    return np.stack(cols, axis=1).astype(np.uint32)


def full_of_lanes(key_type: str, family: int, lanes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lanes_from_full`: keys.py full keys (``(n,)`` when W is 1)."""
    lanes = np.asarray(lanes, np.uint32).astype(np.uint64).reshape(-1, lanes_of(key_type,
                                                                               family))
    n = lanes.shape[0]
    if not has_family(key_type):
        return lanes[:, 0].copy()
    out = np.zeros((n, KEY_WIDTH[key_type]), np.uint64)
    pos = 0
    for c in ADDR_COLS[key_type]:
        if family == 4:
            out[:, c + 1] = lanes[:, pos] | _U(V4_MAPPED)
            pos += 1
        else:
            out[:, c] = (lanes[:, pos] << _U(32)) | lanes[:, pos + 1]
            out[:, c + 1] = (lanes[:, pos + 2] << _U(32)) | lanes[:, pos + 3]
            pos += 4
    if key_type in ("src_dport", "dst_dport"):
        out[:, 2] = lanes[:, pos]
    elif key_type == "five_tuple":
        out[:, 4] = lanes[:, pos] | (lanes[:, pos + 1] << _U(32))
    return out
