"""IPv6 in the header parser and the key formats: extension headers, fragments,
RFC 5952 strings, mixed IPv4/IPv6 batches and their sketch keys."""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from measure_model.packet.keys import (
    HEADER_COPY_BYTES,
    KEY_TYPES,
    KEY_WIDTH,
    HeaderBatch,
    format_address,
    format_key,
    full_key_array,
    key_ints,
    pack_keys,
    parse_address,
    parse_key,
    sketch_key_of,
    sketch_keys_of,
    unpack_keys,
)
from testing.packets import ICMP6, PACKETS, ipv4, ipv6, tcp, udp

pytestmark = pytest.mark.unit

HOP, ROUTING, FRAGMENT, AH, DSTOPTS = 0, 43, 44, 51, 60


def ext(next_header: int, units: int = 0) -> bytes:
    """A hop-by-hop / routing / destination-options header of ``(units + 1) * 8`` bytes."""
    return bytes([next_header, units]) + bytes(6 + 8 * units)


def frag(next_header: int, offset: int = 0, more: bool = False) -> bytes:
    return struct.pack("!BBHI", next_header, 0, (offset << 3) | int(more), 99)


def ah(next_header: int) -> bytes:
    """An AH header of 24 bytes (payload length field 4: (4 + 2) * 4)."""
    return bytes([next_header, 4]) + bytes(22)


A, B = "2001:db8::1", "2001:db8::2"


def parse(*packets: bytes) -> HeaderBatch:
    return HeaderBatch.from_payloads([p[:HEADER_COPY_BYTES] for p in packets])


def test_extension_header_chain_to_the_ports():
    batch = parse(
        ipv6(A, B, 17, udp(5001, 5201), payload_len=1460),
        ipv6(A, B, HOP, ext(DSTOPTS, 1) + ext(ROUTING) + ext(FRAGMENT) + frag(6)
             + tcp(40000, 443)),
        ipv6(A, B, AH, ah(17) + udp(53, 5353)),
        ipv6(B, A, 58, ICMP6, payload_len=64),
    )
    assert batch.dropped == 0 and batch.family.tolist() == [6, 6, 6, 6]
    assert batch.proto.tolist() == [17, 6, 17, 58]
    assert batch.sport.tolist() == [5001, 40000, 53, 0]
    assert batch.dport.tolist() == [5201, 443, 5353, 0]
    assert batch.tcp_flags.tolist() == [0, 0x02, 0, 0]
    assert batch.length.tolist() == [1500, 40 + 16 + 8 + 8 + 8 + 20, 40 + 24 + 8, 104]
    assert [format_key("src", v) for v in key_ints("src", batch.src)] == [A, A, A, B]
    assert format_key("proto", int(batch.proto[3])) == "icmpv6"


def test_seven_and_more_extension_headers_do_not_hide_the_ports():
    """Nine 8-byte destination-options headers (as many as fit before the TCP
    flags in a 128-byte copy) and then a SYN: the ports and flags are read."""
    for count in (7, 9):
        chain = b"".join(ext(DSTOPTS) for _ in range(count - 1)) + ext(6)
        batch = parse(ipv6(A, B, DSTOPTS, chain + tcp(40000, 22)))
        assert (batch.proto.tolist(), batch.dport.tolist(), batch.tcp_flags.tolist()) == \
            ([6], [22], [0x02]), count


def test_ports_only_for_first_fragments_and_cut_chains():
    batch = parse(
        ipv6(A, B, FRAGMENT, frag(17, offset=0, more=True) + udp(1, 2)),   # first fragment
        ipv6(A, B, FRAGMENT, frag(17, offset=185) + udp(3, 4)),            # later fragment
        ipv6(A, B, HOP, ext(6, 20) + tcp(5, 6))[:HEADER_COPY_BYTES],       # TCP beyond the copy
        ipv6(A, B, HOP, ext(HOP, 20) + ext(6))[:HEADER_COPY_BYTES],        # chain cut by copy
        ipv6(A, B, 6, tcp(7, 8))[:40 + 10],                                # TCP cut after ports
        ipv6(A, B, 17, udp(9, 10))[:42],                                   # UDP cut in ports
    )
    assert batch.proto.tolist() == [17, 17, 6, HOP, 6, 17]
    assert batch.sport.tolist() == [1, 0, 0, 0, 7, 0]
    assert batch.dport.tolist() == [2, 0, 0, 0, 8, 0]
    assert batch.tcp_flags.tolist() == [0, 0, 0, 0, 0, 0]


def test_mixed_batch_matches_single_family_batches():
    v6 = [ipv6(A, B, 17, udp(5001, 5201)), ipv6("::1", "fe80::1", 6, tcp(1, 2))]
    v4 = list(PACKETS)
    mixed = parse(v6[0], v4[0], v6[1], v4[1], v4[2])
    alone4, alone6 = parse(*v4), parse(*v6)
    assert mixed.family.tolist() == [6, 4, 6, 4, 4]
    for key_type in KEY_TYPES:
        got = mixed.sketch_keys(key_type).tolist()
        want4, want6 = alone4.sketch_keys(key_type).tolist(), alone6.sketch_keys(key_type).tolist()
        assert got == [want6[0], want4[0], want6[1], want4[1], want4[2]], key_type
        full = mixed.full_keys(key_type)
        assert full.shape == ((5,) if KEY_WIDTH[key_type] == 1 else (5, KEY_WIDTH[key_type]))
        ints = key_ints(key_type, full)
        texts = [format_key(key_type, v) for v in ints]
        assert [parse_key(key_type, t) for t in texts] == ints
        assert [sketch_key_of(key_type, v) for v in ints] == got
        assert sketch_keys_of(key_type, full_key_array(key_type, ints)).tolist() == got
        packed = pack_keys(key_type, full)
        assert packed.ndim == 1 and key_ints(key_type, packed) == ints
        assert np.array_equal(unpack_keys(key_type, packed), full)
        rows = np.array([4, 0, 2])
        assert np.array_equal(mixed.full_keys(key_type, rows), full[rows])
        assert np.array_equal(alone4.full_keys(key_type, rows[:2] % 3),
                              alone4.full_keys(key_type)[rows[:2] % 3])
    assert format_key("five_tuple", key_ints("five_tuple", mixed.full_keys("five_tuple"))[2]) \
        == "::1,fe80::1,tcp,1,2"


def test_ipv4_sketch_keys_keep_their_pre_ipv6_values():
    batch = parse(*PACKETS)
    s = 0x0A000001
    d = 0x0A000002
    assert int(batch.sketch_keys("src")[0]) == s
    assert int(batch.sketch_keys("src_dst")[0]) == s << 32 | d
    assert int(batch.sketch_keys("src_dport")[0]) == s << 16 | 5201
    assert int(batch.sketch_keys("dport")[0]) == 5201


@pytest.mark.parametrize(("text", "canonical"), [
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),        # first of two equal runs
    ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),     # one 0 field is not compressed
    ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),               # the longest run
    ("::", "::"), ("::1", "::1"), ("::1:2", "::1:2"),      # not ::0.1.0.2
    ("::0.1.0.2", "::1:2"), ("fe80::", "fe80::"),
    ("::ffff:10.0.0.1", "10.0.0.1"),                       # IPv4-mapped: the dotted quad
    ("::ffff:a00:1", "10.0.0.1"),
])
def test_rfc5952_strings(text, canonical):
    value = parse_address(text)
    assert format_address(value) == canonical
    assert parse_address(canonical) == value
    if "." not in canonical:
        assert value == int(ipaddress.IPv6Address(text))


def test_random_ipv6_addresses_round_trip_like_ipaddress():
    rng = np.random.default_rng(3)
    for _ in range(2000):
        words = (rng.integers(0, 3, 8) > 0) * rng.integers(0, 65536, 8)   # many zero fields
        value = int("".join(f"{w:04x}" for w in words.tolist()), 16)
        if value >> 32 == 0xFFFF:
            continue
        text = format_address(value)
        assert text == str(ipaddress.IPv6Address(value))
        assert parse_address(text) == value


def test_counter_counts_both_families_and_reports_ipv6_keys():
    packets = ([ipv6(A, B, 17, udp(5001, 5201), payload_len=992)] * 6
               + [ipv4("10.0.0.1", "10.0.0.2", 17, udp(5001, 5201), total=500)] * 3
               + [ipv6("fe80::1", B, 6, tcp(40000, 22))])
    batch = parse(*packets)
    counters = {k: Counter(CounterSpec(key=k, threshold=0.25, scan=True), 0.0)
                for k in ("src", "five_tuple", "src_dport")}
    for c in counters.values():
        c.update(batch, 0.5)
    src = counters["src"].snapshot(0.6, include_sketch=False)
    assert src["packets"] == 10 and src["bytes"] == 6 * 1032 + 3 * 500 + 60
    assert src["heavy_hitters"] == {A: 6, "10.0.0.1": 3}
    assert src["window"]["counts"] == {A: 6, "10.0.0.1": 3, "fe80::1": 1}
    assert counters["five_tuple"].heavy_hitters() == {f"{A},{B},udp,5001,5201": 6,
                                                      "10.0.0.1,10.0.0.2,udp,5001,5201": 3}
    assert counters["src_dport"].estimate(f"{A},5201") == 6
    assert src["scan"] == {
        A: {"ports": [5201], "dsts": [B], "truncated": False},
        "10.0.0.1": {"ports": [5201], "dsts": ["10.0.0.2"], "truncated": False},
        "fe80::1": {"ports": [22], "dsts": [B], "truncated": False}}


def test_snapshots_with_ipv6_keys_pass_the_check_and_merge_exactly():
    from measure_model.wire import report
    hosts = {"h1": [ipv6(A, B, 17, udp(1, 53), payload_len=100)] * 4
             + [ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 53), total=200)] * 2,
             "h2": [ipv6(A, B, 17, udp(1, 53), payload_len=100)] * 3
             + [ipv6("fe80::9", B, 17, udp(7, 53), payload_len=50)]}
    snaps = []
    for host, packets in hosts.items():
        c = Counter(CounterSpec(key="src_dst", increment="bytes", threshold=0.1, scan=True),
                    0.0)
        c.update(parse(*packets), 0.5)
        snaps.append(report.check_snapshot(c.snapshot(0.6, host=host)))
    merged = report.merge_all(snaps)
    assert merged["heavy_hitters"] == {f"{A},{B}": 7 * 140, "10.0.0.1,10.0.0.2": 400}
    assert merged["window"]["counts"] == {f"{A},{B}": 980, "10.0.0.1,10.0.0.2": 400,
                                          f"fe80::9,{B}": 90}
    assert set(merged["scan"]) == {A, "10.0.0.1", "fe80::9"}
    assert merged["scan"][A]["dsts"] == [B]
    report.check_snapshot(merged)
