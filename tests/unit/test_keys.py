"""Key types, increments and the vectorised header parser on hand-built packets."""

from __future__ import annotations

import numpy as np
import pytest

from measure_model.packet.keys import (
    HEADER_COPY_BYTES,
    KEY_TYPES,
    HeaderBatch,
    check_key_type,
    format_key,
    full_key_array,
    key_ints,
    parse_key,
    sketch_key_of,
    sketch_keys_of,
)
from testing.packets import PACKETS, ipv4, tcp, tcp_flagged, udp

pytestmark = pytest.mark.unit


def test_parse_fields_with_options_and_total_length():
    batch = HeaderBatch.from_payloads([p[:HEADER_COPY_BYTES] for p in PACKETS])
    assert len(batch) == 3 and batch.dropped == 0
    assert [format_key("src", x) for x in key_ints("src", batch.src)] == ["10.0.0.1", "10.0.0.3",
                                                                          "10.0.0.6"]
    assert [format_key("dst", x) for x in key_ints("dst", batch.dst)] == ["10.0.0.2", "10.0.0.2",
                                                                          "10.0.0.5"]
    assert batch.family.tolist() == [4, 4, 4]
    assert batch.tcp_flags.tolist() == [0, 0x02, 0]  # the SYN of tcp()
    assert batch.proto.tolist() == [17, 6, 1]
    assert batch.sport.tolist() == [5001, 40000, 0]
    assert batch.dport.tolist() == [5201, 80, 0]
    assert batch.length.tolist() == [1500, 52, 84]


def test_non_ip_and_short_payloads_dropped_and_counted():
    ipv5 = bytes([0x50]) + bytes(39)
    short = PACKETS[0][:19]
    bad_ihl = bytes([0x44]) + PACKETS[0][1:]
    cut_options = ipv4("10.0.0.9", "10.0.0.2", 6, b"", options=bytes(40))[:30]
    short6 = bytes([0x60]) + bytes(38)
    batch = HeaderBatch.from_payloads([ipv5, PACKETS[2], short, bad_ihl, b"", cut_options,
                                       short6])
    assert len(batch) == 1 and batch.dropped == 6
    assert format_key("src", key_ints("src", batch.src)[0]) == "10.0.0.6"
    assert HeaderBatch.from_payloads([]).dropped == 0


def test_ports_zero_for_fragments_and_cut_l4():
    frag = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), frag=185)  # offset != 0
    more_fragments = ipv4("10.0.0.1", "10.0.0.2", 17, udp(3, 4), frag=0x2000)  # MF, offset 0
    cut = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(5, 6))[:22]
    batch = HeaderBatch.from_payloads([frag, more_fragments, cut])
    assert batch.sport.tolist() == [0, 3, 0]
    assert batch.dport.tolist() == [0, 4, 0]


EXPECTED = {
    "src": ["10.0.0.1", "10.0.0.3", "10.0.0.6"],
    "dst": ["10.0.0.2", "10.0.0.2", "10.0.0.5"],
    "src_dst": ["10.0.0.1,10.0.0.2", "10.0.0.3,10.0.0.2", "10.0.0.6,10.0.0.5"],
    "sport": ["5001", "40000", "0"],
    "dport": ["5201", "80", "0"],
    "src_dport": ["10.0.0.1,5201", "10.0.0.3,80", "10.0.0.6,0"],
    "dst_dport": ["10.0.0.2,5201", "10.0.0.2,80", "10.0.0.5,0"],
    "proto": ["udp", "tcp", "icmp"],
    "five_tuple": ["10.0.0.1,10.0.0.2,udp,5001,5201", "10.0.0.3,10.0.0.2,tcp,40000,80",
                   "10.0.0.6,10.0.0.5,icmp,0,0"],
}


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_every_key_type_formats_parses_and_hashes(key_type):
    batch = HeaderBatch.from_payloads(PACKETS)
    full = batch.full_keys(key_type)
    ints = key_ints(key_type, full)
    assert [format_key(key_type, v) for v in ints] == EXPECTED[key_type]
    assert [parse_key(key_type, s) for s in EXPECTED[key_type]] == ints
    assert batch.sketch_keys(key_type).tolist() == [sketch_key_of(key_type, v) for v in ints]
    assert sketch_keys_of(key_type, full_key_array(key_type, ints)).tolist() == \
        batch.sketch_keys(key_type).tolist()


def test_proto_accepts_names_and_numbers():
    assert parse_key("proto", "47") == 47
    assert format_key("proto", 47) == "47"
    assert parse_key("proto", "UDP") == 17
    assert parse_key("five_tuple", "10.0.0.1,10.0.0.2,17,1,2") == \
        parse_key("five_tuple", "10.0.0.1,10.0.0.2,udp,1,2")


@pytest.mark.parametrize(("key_type", "text", "message"), [
    ("src", "10.0.0.300", "'10.0.0.300' is not an IPv4 address"),
    ("dport", "65536", "'65536' is not a port (0..65535)"),
    ("dport", "-1", "'-1' is not a port (0..65535)"),
    ("src_dst", "10.0.0.1", "src_dst key '10.0.0.1' must have 2 comma-separated fields"),
    ("proto", "gre", "'gre' is not a protocol (icmp, tcp, udp, icmpv6 or 0..255)"),
    ("src", "2001:db8::1::2", "'2001:db8::1::2' is not an IPv6 address"),
    ("src", "fe80::1%eth0", "'fe80::1%eth0' is not an IPv6 address"),
    ("src_dport", "2001:db8::1,65536", "'65536' is not a port (0..65535)"),
    ("five_tuple", "1.2.3.4,5.6.7.8,tcp,1", "five_tuple key '1.2.3.4,5.6.7.8,tcp,1' must have "
                                           "5 comma-separated fields"),
])
def test_parse_key_errors(key_type, text, message):
    with pytest.raises(ValueError) as err:
        parse_key(key_type, text)
    assert str(err.value) == message


def test_key_type_validation():
    assert check_key_type("src_dst") == "src_dst"
    with pytest.raises(ValueError) as err:
        check_key_type("srcdst")
    assert str(err.value) == ("key 'srcdst' is not one of src, dst, src_dst, sport, dport, "
                              "src_dport, dst_dport, proto, five_tuple")
    # the key types are the task table's (one source)
    from measure_model.task import KEYS

    assert KEY_TYPES is KEYS


def test_from_arrays_matches_parser():
    parsed = HeaderBatch.from_payloads(PACKETS)
    built = HeaderBatch.from_arrays(parsed.src, parsed.dst, parsed.proto, parsed.sport,
                                    parsed.dport, parsed.length)
    for key_type in KEY_TYPES:
        assert np.array_equal(built.full_keys(key_type), parsed.full_keys(key_type))


@pytest.mark.parametrize("text", ["01.2.3.4", "1.2.3", "1.2.3.4.5", "0x1.2.3.4", "1.2.3.4 junk",
                                  "\u0661.2.3.4", "1..2.3", "", "1.2.3.04", "+1.2.3.4",
                                  "1.2.3.4\x00", "256.0.0.1", "1.2.3.-4", "017.0.0.1"])
def test_dotted_quads_are_strict_where_inet_aton_alone_is_lax(text):
    with pytest.raises(ValueError) as err:
        parse_key("src", text)
    assert str(err.value) == f"{text!r} is not an IPv4 address"


def test_dotted_quads_parse_like_ipaddress():
    import ipaddress

    rng = np.random.default_rng(5)
    for value in [0, 0xFFFFFFFF, *rng.integers(0, 2 ** 32, 2000).tolist()]:
        text = str(ipaddress.IPv4Address(value))
        assert parse_key("src", text) == (0xFFFF << 32 | value) == parse_key("dst", f" {text} ")


def _random_v4_batch(n: int, seed: int) -> HeaderBatch:
    rng = np.random.default_rng(seed)
    edge = np.array([0, 2 ** 32 - 1])
    src = np.concatenate([edge, rng.integers(0, 2 ** 32, n)])
    dst = np.concatenate([edge[::-1], rng.integers(0, 2 ** 32, n)])
    ports = np.concatenate([[0, 65535], rng.integers(0, 65536, n)])
    proto = np.concatenate([[0, 255], rng.integers(0, 256, n)])
    return HeaderBatch.from_arrays(src, dst, proto, ports, ports[::-1], np.ones(n + 2))


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_check_keys_takes_every_formatted_key_and_refuses_like_parse_key(key_type):
    from measure_model.packet.keys import _CANONICAL, check_keys

    values = key_ints(key_type, _random_v4_batch(500, 11).full_keys(key_type))
    texts = [format_key(key_type, v) for v in values]
    assert all(_CANONICAL[key_type].fullmatch(t) for t in texts)  # the fast path
    check_keys(key_type, texts)
    assert [parse_key(key_type, t) for t in texts] == values
    # not canonical but valid for parse_key: still accepted (by parse_key)
    check_keys(key_type, [f" {texts[2]}"] if key_type in ("src", "dst") else [])
    refused = 0
    for other in ("", "1.2.3.4,", "256.1.1.1", "01.2.3.4", "65536", "x", "1.2.3.4\n",
                  "1.2.3.4,80,9", "080", 7, None):
        try:
            parse_key(key_type, other)
            want = None
        except ValueError as exc:
            want = str(exc)
        try:
            check_keys(key_type, [texts[0], other])
            got = None
        except ValueError as exc:
            got = str(exc)
        assert got == want, other
        refused += want is not None
    assert refused >= 8


def test_tcp_flags_column():
    pkts = [ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(1, 2, 0x12)),        # SYN+ACK
            ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2) + bytes(40)),          # UDP: 0
            ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(1, 2, 0x11), options=bytes(8)),
            ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(1, 2, 0x04), frag=5),  # not first
            ipv4("10.0.0.1", "10.0.0.2", 6, tcp_flagged(1, 2, 0x01))[:30]]   # cut short
    batch = HeaderBatch.from_payloads([p[:HEADER_COPY_BYTES] for p in pkts])
    assert batch.tcp_flags.tolist() == [0x12, 0, 0x11, 0, 0]
    fast = HeaderBatch.from_payloads([pkts[0][:HEADER_COPY_BYTES].ljust(64, b"\0")] * 3)
    assert fast.tcp_flags.tolist() == [0x12] * 3
    assert HeaderBatch.from_arrays([1], [2], [6], [3], [4], [40]).tcp_flags.tolist() == [0]
