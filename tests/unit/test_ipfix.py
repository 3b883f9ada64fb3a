"""The IPFIX / NetFlow v9 encoder: headers, templates, sequence numbers, MTU.

Messages are decoded here with a few lines of ``struct`` written from RFC
7011 (and scapy's NetFlow v9 decoder as an independent reader); the real
collector (nfdump) reads them in ``test_flows_netns.py``.
"""

from __future__ import annotations

import contextlib
import io
import struct

import numpy as np
import pytest

from measure_model.fields import parse_host_port
from measure_model.wire import ipfix
from testing.packets import decode_ipfix

pytestmark = pytest.mark.unit

NOW = 1_700_000_002.0


def records(n: int, start: int = 0) -> dict[str, np.ndarray]:
    i = np.arange(start, start + n)
    return {"family": np.full(n, 4), "src": 0x0A000001 + i, "dst": np.full(n, 0x0A000002),
            "sport": 1000 + i, "dport": np.full(n, 80), "proto": np.full(n, 6),
            "packets": i + 1, "octets": (i + 1) * 100 + 2 ** 40, "tcp_flags": np.full(n, 0x1B),
            "start_ms": np.full(n, 1_700_000_000_000), "end_ms": np.full(n, 1_700_000_001_500),
            "direction": np.ones(n), "end_reason": np.full(n, ipfix.END_IDLE)}


def test_ipfix_messages_templates_sequence_and_mtu():
    builder = ipfix.MessageBuilder("ipfix", domain=7, mtu=576, template_interval=30.0)
    templates: dict = {}
    seen, seqs = [], []
    first = builder.messages(records(40), NOW)
    later = builder.messages(records(5, start=40), NOW + 10)
    again = builder.messages(records(1, start=45), NOW + 31)
    for msg in first + later + again:
        assert len(msg) <= 576 - 28
        (export, seq, domain), recs = decode_ipfix(msg, templates)
        assert domain == 7 and export in (int(NOW), int(NOW + 10), int(NOW + 31))
        seqs.append((seq, len(recs)))
        seen += recs
    # sequence number = data records sent before the message (RFC 7011 3.1)
    total = 0
    for seq, n in seqs:
        assert seq == total
        total += n
    assert total == 46 and builder.sequence == 46 and builder.records_sent == 46
    assert templates[256] == [(e.ipfix_id, e.length) for e in ipfix.TEMPLATE_V4]
    assert [(e.ipfix_id, e.length) for e in ipfix.TEMPLATE_V6][5:7] == [(27, 16), (28, 16)]
    assert first[0][16:18] == b"\x00\x02" and later[0][16:18] != b"\x00\x02"
    assert again[0][16:18] == b"\x00\x02"  # templates re-sent after template_interval
    rec = seen[3]
    assert rec[8] == 0x0A000004 and rec[12] == 0x0A000002 and rec[7] == 1003 and rec[11] == 80
    assert rec[4] == 6 and rec[2] == 4 and rec[1] == 400 + 2 ** 40 and rec[6] == 0x1B
    assert rec[152] == 1_700_000_000_000 and rec[153] == 1_700_000_001_500
    assert rec[61] == 1 and rec[136] == ipfix.END_IDLE
    assert builder.template_messages(NOW + 40) == []
    assert len(builder.template_messages(NOW + 62)) == 1


def test_netflow9_decoded_by_scapy():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.netflow import NetflowDataflowsetV9, NetflowHeader, netflowv9_defragment

    builder = ipfix.MessageBuilder("netflow9", domain=3, boot=NOW - 100)
    msgs = builder.messages(records(70), NOW)
    assert len(msgs) == 2 and all(len(m) <= 1472 for m in msgs)
    heads = [struct.unpack_from("!HHIIII", m) for m in msgs]
    assert [h[4] for h in heads] == [0, 1]  # v9: export packets sent before
    assert all(h[0] == 9 and h[2] == 100_000 and h[5] == 3 for h in heads)
    with contextlib.redirect_stdout(io.StringIO()):
        pkts = netflowv9_defragment([IP() / UDP() / NetflowHeader(m) for m in msgs])
    got = [r for p in pkts for r in p[NetflowDataflowsetV9].records]
    assert sum(h[1] for h in heads) == 70 + len(ipfix.TEMPLATES)
    assert len(got) == 70
    assert [r.L4_SRC_PORT for r in got] == list(range(1000, 1070))
    assert got[5].IPV4_SRC_ADDR == "10.0.0.6" and got[5].TCP_FLAGS == 0x1B
    assert int.from_bytes(got[5].IN_PKTS, "big") == 6
    assert int.from_bytes(got[5].IN_BYTES, "big") == 600 + 2 ** 40
    assert got[5].FIRST_SWITCHED == 98_000 and got[5].LAST_SWITCHED == 99_500


def test_bad_arguments():
    with pytest.raises(ValueError, match="format 'v5'"):
        ipfix.MessageBuilder("v5")
    with pytest.raises(ValueError, match="mtu 100 is too small"):
        ipfix.MessageBuilder(mtu=100)
    assert parse_host_port("10.0.0.1:4739") == ("10.0.0.1", 4739)
    assert parse_host_port("[::1]:2055") == ("::1", 2055)
    assert parse_host_port("collector.example:9995") == ("collector.example", 9995)
    for bad in ("10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", ":80", "a b:80", "[::1:80"):
        with pytest.raises(ValueError):
            parse_host_port(bad)
