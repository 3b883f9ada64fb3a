"""The path_health / tcp_health task rows, snapshot sections, their merge and pair choice."""

from __future__ import annotations

import itertools

import pytest

from host_agent.probes.session import PairSession
from measure_model import pairs
from measure_model.task import PolicyError, parse_task
from measure_model.wire import paths
from measure_model.wire.report import check_snapshot, merge_all

pytestmark = pytest.mark.unit

MS = 1_000_000


def _session(rtts_ms: list[float], lost: set[int], t0: int = 10 ** 18) -> PairSession:
    s = PairSession("h2", "10.0.0.2")
    for i, rtt in enumerate(rtts_ms):
        seq = s.sent(t0 + i * 100 * MS)
        if seq not in lost:
            s.answer(seq, t0 + i * 100 * MS + int(rtt * MS), 0, seq + 1)
    return s


def test_path_health_rows_and_bounds():
    task = parse_task({"name": "p", "kind": "path_health", "peers": ["h1", "h2"],
                       "dscp": 46}, "t")
    assert task.to_dict() == {"name": "p", "kind": "path_health", "report_interval": 5.0,
                              "peers": ["h1", "h2"], "probe_rate": 10.0,
                              "probe_payload": 64, "dscp": 46}
    assert parse_task(task.to_dict(), "again") == task
    assert parse_task({"name": "p", "kind": "path_health"}, "t").peers == "all"
    for field, value, text in (("probe_rate", 101, "probe_rate 101 is out of range"),
                               ("probe_payload", 15, "probe_payload 15 is out of range"),
                               ("peers", "most", "peers must be 'all' or 'auto'"),
                               ("dscp", 64, "dscp 64 is out of range"),
                               ("filter", {}, "field 'filter' does not apply")):
        with pytest.raises(PolicyError, match=text):
            parse_task({"name": "p", "kind": "path_health", field: value}, "t")
    tcp = parse_task({"name": "t", "kind": "tcp_health", "top_k": 5}, "t")
    assert tcp.measures and not tcp.captures and tcp.top_k == 5


def test_session_counts_each_probe_once_and_exactly():
    s = _session([1.0, 2.0, 3.0, 4.0, 5.0], lost={1, 3})
    t0 = 10 ** 18
    first = s.close(t0 + 250 * MS)  # probes 0, 1, 2
    assert (first["sent"], first["lost"]) == (3, 1)
    assert first["rtt_max_ms"] == pytest.approx(3.0)
    assert first["jitter_ms"] == pytest.approx(2.0)  # |3 - 1|
    second = s.close(t0 + 10 ** 10)
    assert (second["sent"], second["lost"]) == (2, 1)
    assert s.answer(3, t0 + 10 ** 10, 0, 4) is None  # late: already counted lost
    assert s.close(t0 + 10 ** 11)["sent"] == 0


def test_forward_losses_from_the_echoed_count():
    s = PairSession("h2", "10.0.0.2")
    t0 = 10 ** 18
    for i in range(4):
        s.sent(t0 + i)
    s.answer(0, t0 + MS, 0, 1)
    # seq 1 lost on the way there, seq 2 on the way back: the reflector saw 0, 2, 3
    s.answer(3, t0 + MS, 0, 3)
    out = s.close(t0 + 10)
    assert (out["sent"], out["lost"], out["lost_fwd"]) == (4, 2, 1)


def test_snapshot_section_checks_and_merges_exactly():
    a = {"paths": {"h1>h2": _session([1.0, 2.0, 4.0], set()).close(2 * 10 ** 18)},
         "probes": {"h1": {"packets_per_s": 20.0, "bytes_per_s": 1840.0,
                           "cpu_seconds_per_s": 0.001}}, "covered": ["h1"]}
    b = {"paths": {"h1>h2": _session([8.0], {1}).close(2 * 10 ** 18) | {},
                   "h3>h4": _session([0.5], set()).close(2 * 10 ** 18)},
         "probes": {"h3": {"packets_per_s": 10.0, "bytes_per_s": 920.0,
                           "cpu_seconds_per_s": 0.002}}, "covered": ["h3"]}
    check_snapshot(a)
    check_snapshot(b)
    merged = merge_all([a, b])
    check_snapshot(merged)
    assert merged["covered"] == ["h1", "h3"]
    assert merged["paths"]["h1>h2"]["sent"] == 4 and merged["paths"]["h1>h2"]["lost"] == 0
    rows = {(r["src"], r["dst"]): r for r in paths.pair_rows(merged["paths"])}
    row = rows[("h1", "h2")]
    assert row["loss"] == 0 and row["rtt_ms"]["max"] == pytest.approx(8.0)
    assert row["rtt_ms"]["p50"] == pytest.approx(2.0, rel=0.02)
    assert set(row) == {"src", "dst", "sent", "lost", "loss", "lost_fwd", "lost_rev",
                        "rtt_ms", "jitter_ms"}
    assert [r["dst"] for r in paths.pair_rows(merged["paths"], "h4")] == ["h4"]
    cost = paths.probe_cost(merged["probes"])
    assert cost["max"]["bytes_per_s"] == 1840.0


@pytest.mark.parametrize("bad, text", [
    ({"paths": {"h1-h2": {"sent": 1, "lost": 0}}}, "is not 'src>dst'"),
    ({"paths": {"h1>h2": {"sent": 1, "lost": 2}}}, "lost <= sent"),
    ({"paths": {"h1>h2": {"sent": 1, "lost": 0, "rtt": "!!"}}}, "not a base64 DDSketch"),
    ({"paths": {"h1>h2": {"sent": 1, "lost": 0, "extra": 1}}}, "unknown field 'extra'"),
    ({"paths": {}, "tcp": {}}, "holds both"),
    ({"paths": {}, "probes": {"h1": {"bytes_per_s": -1}}}, "probes"),
    ({"tcp": {"flows": [{"host": "h1"}]}}, r"tcp.flows\[0\]"),
])
def test_bad_sections_are_refused_naming_the_field(bad, text):
    with pytest.raises(ValueError, match=text):
        check_snapshot(bad)


def test_a_sketch_with_far_bins_is_refused():
    sketch = paths.new_sketch()
    paths.add_rtt(sketch, 1.0)
    from ddsketch.pb.proto import DDSketchProto
    msg = DDSketchProto.to_proto(sketch)
    msg.positiveValues.contiguousBinIndexOffset = 10 ** 8
    import base64
    text = base64.b64encode(msg.SerializeToString()).decode()
    with pytest.raises(ValueError, match="outside the RTT range"):
        paths.decode_sketch(text)


def test_tcp_merge_ranks_by_retransmissions():
    def flow(host, sport, retrans):
        return {"host": host, "src": "10.0.0.1", "dst": "10.0.0.2", "sport": sport,
                "dport": 5201, "retrans": retrans, "spurious_retrans": retrans // 3, "lost": 0,
                "rtt_ms": 1.0, "min_rtt_ms": 0.5, "delivery_rate_bps": 1e6, "bytes_acked": 10}

    def pair(host, flows, retrans, spurious=0, min_rtt=1.0):
        return {"host": host, "flows": flows, "retrans": retrans, "spurious_retrans": spurious,
                "lost": 0, "rtt_ms": 2.0, "min_rtt_ms": min_rtt, "delivery_rate_bps": 5.0}

    a = {"tcp": {"flows": [flow("h1", 1, 3), flow("h1", 2, 0)],
                 "pairs": {"10.0.0.1,10.0.0.2": pair("h1", 2, 3)}, "top": 2}}
    b = {"tcp": {"flows": [flow("h3", 9, 7)], "pairs": {"10.0.0.3,10.0.0.2": pair("h3", 1, 7)},
                 "top": 2}}
    merged = merge_all([a, b])
    out = paths.tcp_result(merged["tcp"])
    assert [f["sport"] for f in out["top_flows"]] == [9, 1]
    assert [(p["src"], p["retrans"]) for p in out["top_pairs"]] == [("10.0.0.3", 7),
                                                                     ("10.0.0.1", 3)]
    assert paths.health_result(merged, "h1")["tcp"]["top_pairs"][0]["host"] == "h1"
    assert out["top_flows"][0]["spurious_retrans"] == 2
    # the two ends of one address pair seen by two agents: counts add, min RTT the least
    c = {"tcp": {"flows": [], "pairs": {"10.0.0.1,10.0.0.2": pair("h1", 1, 4, 1, 0.25)},
                 "top": 2}}
    both = merge_all([a, c])["tcp"]["pairs"]["10.0.0.1,10.0.0.2"]
    assert (both["retrans"], both["spurious_retrans"], both["min_rtt_ms"]) == (7, 1, 0.25)
    bad = {"tcp": {"flows": [], "pairs": {"10.0.0.1,10.0.0.2": pair("h1", 1, 4, -1)},
                   "top": 2}}
    with pytest.raises(ValueError, match="spurious_retrans"):
        paths.check_health_snapshot(bad)


def test_all_pairs_are_balanced_and_auto_covers_every_link_twice():
    hosts = [f"h{i}" for i in range(1, 17)]
    every = pairs.balanced_pairs(hosts)
    assert len(every) == 16 * 15 // 2
    sends = {h: sum(1 for a, _ in every if a == h) for h in hosts}
    assert max(sends.values()) - min(sends.values()) <= 1

    def fat_tree(k: int):
        """Hosts of a k-ary fat-tree and each pair's links (one deterministic path)."""
        half = k // 2
        names = [f"h{p}_{e}_{i}" for p in range(k) for e in range(half) for i in range(half)]

        def links_of(a: str, b: str):
            pa, ea, _ = a[1:].split("_")
            pb, eb, _ = b[1:].split("_")
            agg = (int(pa) + int(pb)) % half
            out = [("access", a), tuple(sorted((f"e{pa}{ea}", f"a{pa}{agg}")))]
            if pa != pb:
                core = f"c{agg}{(int(ea) + int(eb)) % half}"
                out += [tuple(sorted((f"a{pa}{agg}", core))),
                        tuple(sorted((core, f"a{pb}{agg}")))]
            if (pa, ea) != (pb, eb):
                out.append(tuple(sorted((f"a{pb}{agg}", f"e{pb}{eb}"))))
            return [*out, ("access", b)]
        return names, links_of

    for k in (4, 8):
        names, links_of = fat_tree(k)
        chosen = pairs.cover_pairs(names, links_of)
        count: dict = {}
        for a, b in chosen:
            for link in set(links_of(a, b)):
                count[link] = count.get(link, 0) + 1
        candidates = {link for a, b in itertools.combinations(names, 2)
                      for link in links_of(a, b)}
        assert all(count.get(link, 0) >= 2 for link in candidates)
        assert len(chosen) < len(names) * (len(names) - 1) / 2 / 4
    load = pairs.probe_load_bps([("h1", "h2"), ("h1", "h3")], 10.0, 64)
    assert load == {"h1": 2 * 10 * 106 * 8, "h2": 8480.0, "h3": 8480.0}


def test_tcp_info_fields_become_flow_and_pair_fields():
    from host_agent.tcpinfo.diag import summarize

    def conn(sport, retrans, dups, rtt_us, min_us):
        return {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": sport, "dport": 5201,
                "tcpi_total_retrans": retrans, "tcpi_dsack_dups": dups, "tcpi_lost": 0,
                "tcpi_rtt": rtt_us, "tcpi_min_rtt": min_us, "tcpi_delivery_rate": 1000,
                "tcpi_bytes_acked": 5}

    out = summarize("h1", [conn(1, 3, 1, 2500, 400), conn(2, 0, 0, 1500, 300),
                           {**conn(3, 9, 0, 1, 1), "src": "127.0.0.1"}], top=5)
    first = out["flows"][0]
    assert (first["retrans"], first["spurious_retrans"], first["rtt_ms"],
            first["min_rtt_ms"], first["delivery_rate_bps"]) == (3, 1, 2.5, 0.4, 8000.0)
    pair = out["pairs"]["10.0.0.1,10.0.0.2"]
    assert (pair["flows"], pair["retrans"], pair["spurious_retrans"], pair["rtt_ms"],
            pair["min_rtt_ms"]) == (2, 3, 1, 2.0, 0.3)
    paths.check_health_snapshot({"tcp": out})


def test_tcp_between_two_hosts_adds_both_directions():
    from ryu_app.service.pathhealth import tcp_between

    rows = [{"src": "10.0.0.1", "dst": "10.0.0.2", "retrans": 5, "spurious_retrans": 5,
             "lost": 0},
            {"src": "10.0.0.2", "dst": "10.0.0.1", "retrans": 2, "spurious_retrans": 0,
             "lost": 1},
            {"src": "10.0.0.3", "dst": "10.0.0.1", "retrans": 9, "spurious_retrans": 0,
             "lost": 0}]
    out = tcp_between({"tcp": {"top_pairs": rows}}, {"10.0.0.1", "10.0.0.2"})
    assert out is not None
    assert (out["retrans"], out["spurious_retrans"], out["lost"]) == (7, 5, 1)
    assert tcp_between({"tcp": {"top_pairs": rows}}, {"10.0.0.4", "10.0.0.2"}) is None
