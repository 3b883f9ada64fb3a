"""Unit tests of path health at the controller (ryu_app.paths): pair paths, the
pairs of peers: auto, and localization, on topologies built in memory."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.paths import fat_tree
from measure_model.pairs import cover_pairs
from ryu_app.net.topology import Topology
from ryu_app.paths.localize import Localizer, observations
from ryu_app.paths.routes import (
    PairPath,
    PathCache,
    access_link,
    hop_links,
    link_dict,
    link_name,
    parse_link,
    switch_link,
)
from ryu_app.paths.routes import pair_path as _pair_path
from testing.checks import some

pytestmark = pytest.mark.unit


def pair_path(topo: Topology, attach: dict, a: str, b: str) -> PairPath:
    """The pair's path, which every test here expects to exist."""
    return some(_pair_path(topo, attach, a, b))


def square() -> tuple[Topology, dict[str, tuple[int, int]]]:
    """Switches 1-2-3-4-1 in a ring; host hN on port 1 of switch N."""
    topo = Topology()
    for a, b in ((1, 2), (2, 3), (3, 4), (4, 1)):
        topo.add_link(a, 10 + b, b, 10 + a)
        topo.add_link(b, 10 + a, a, 10 + b)
    return topo, {f"h{n}": (n, 1) for n in range(1, 5)}


def counted(topo: Topology, attach: dict, pair: tuple[str, str]) -> Counter:
    p = pair_path(topo, attach, *pair)
    assert p is not None
    assert p.fwd_links == tuple(hop_links(p.src, p.dst, list(p.forward)))
    return Counter(p.fwd_links + p.rev_links)


# ------------------------------------------------------------------ routes

def test_pair_path_is_switch_by_switch_and_port_by_port() -> None:
    topo, attach = square()
    p = pair_path(topo, attach, "h1", "h2")
    assert p is not None
    assert [h.to_dict() for h in p.forward] == [
        {"switch": "0000000000000001", "in_port": 1, "out_port": 12},
        {"switch": "0000000000000002", "in_port": 11, "out_port": 1}]
    assert p.links == {access_link("h1", 1, 1), switch_link(1, 12, 2, 11),
                       access_link("h2", 2, 1)}


def test_paths_toward_one_destination_share_their_next_hops() -> None:
    topo, attach = fat_tree(4, 16)
    for dst in (102, 303, 403):  # edge switches of pods 1, 3, 4
        tree = topo.dst_tree(dst)
        for src in topo.switches():
            path = topo.shortest_path(src, dst)
            assert path is not None
            # every switch on the way continues exactly as its own path would
            for i, here in enumerate(path[:-1]):
                assert topo.shortest_path(here, dst) == path[i:]
                assert tree[here] == path[i + 1]


def test_avoided_link_is_routed_around_and_a_bridge_cannot_be_avoided() -> None:
    topo, attach = square()
    assert topo.shortest_path(1, 2) == [1, 2]
    assert topo.connected_without({frozenset({1, 2})})
    assert topo.set_avoided({frozenset({1, 2})})
    assert topo.shortest_path(1, 2) == [1, 4, 3, 2]
    assert switch_link(1, 12, 2, 11) not in pair_path(topo, attach, "h1", "h2").links
    # with 1-2 avoided, 2-3 is the only way to 2: avoiding both would cut 2 off
    assert not topo.connected_without({frozenset({1, 2}), frozenset({2, 3})})
    assert not topo.connected_without({frozenset({1, 3})})  # not a link
    assert not topo.set_avoided({frozenset({1, 2})})  # no change
    assert topo.set_avoided(set())
    assert topo.shortest_path(1, 2) == [1, 2]


def test_unlocated_host_has_no_path_and_cache_follows_topology_version() -> None:
    topo, attach = square()
    assert _pair_path(topo, attach, "h1", "h9") is None
    cache = PathCache(topo)
    first = cache.path(attach, "h1", "h2")
    assert cache.path(attach, "h1", "h2") is first
    topo.set_avoided({frozenset({1, 2})})
    assert cache.path(attach, "h1", "h2") != first


def test_link_forms_round_trip_and_bad_link_names_the_field() -> None:
    for key in (switch_link(2, 3, 1, 4), access_link("h1", 10, 2)):
        assert parse_link(link_dict(key)) == key
        assert parse_link(link_name(key)) == key
    assert switch_link(2, 3, 1, 4) == ("switch", 1, 4, 2, 3)
    assert link_name(switch_link(0x1a, 3, 1, 4)) == "s1:4-s1a:3"
    with pytest.raises(ValueError, match="field 'src_port'"):
        parse_link({"src_switch": "1", "src_port": "x", "dst_switch": "2", "dst_port": 1})
    with pytest.raises(ValueError, match="dpid"):
        parse_link({"host": "h1", "switch": "zz", "port": 1})
    with pytest.raises(ValueError, match="not a link name"):
        parse_link("s1:2")


# ------------------------------------------------------------------ select

def test_auto_pairs_over_the_controller_paths_cover_every_link() -> None:
    topo, attach = fat_tree(4, 16)
    cache = PathCache(topo)

    def links(a: str, b: str) -> list:
        return sorted(some(cache.path(attach, a, b)).links, key=repr)

    pairs = cover_pairs(attach, links, min_cover=2)
    cover = Counter(link for p in pairs for link in links(*p))
    every = {link for a in attach for b in attach if a != b for link in links(a, b)}
    assert set(cover) == every  # every link some pair can cross is crossed ...
    assert min(cover.values()) >= 2  # ... by two pairs at least
    assert len(pairs) < 16 * 15 / 2 / 2  # far fewer than all pairs


# ------------------------------------------------------------------ localize

def feed(loc: Localizer, paths: dict, lossy: dict, sent: int = 50,
         rtt: dict | None = None):
    rows = [{"src": a, "dst": b, "sent": sent, "lost": lossy.get((a, b), 0),
             "rtt_ms": {"p50": (rtt or {}).get((a, b), 1.0)}} for a, b in paths]
    return loc.update(rows, paths)


def fat_tree_pairs() -> tuple[dict, Topology, dict]:
    topo, attach = fat_tree(4, 16)
    cache = PathCache(topo)
    pairs = cover_pairs(attach, lambda a, b: sorted(some(cache.path(attach, a, b)).links, key=repr),
                        min_cover=4)
    return {p: counted(topo, attach, p) for p in pairs}, topo, attach


def test_one_lossy_link_is_the_only_suspect_and_is_raised_once() -> None:
    paths, _, _ = fat_tree_pairs()
    bad = next(link for link in sorted({k for c in paths.values() for k in c}, key=repr)
               if link[0] == "switch")
    crossing = [p for p, c in paths.items() if bad in c]
    loc = Localizer()
    first = feed(loc, paths, dict.fromkeys(crossing, 5))
    assert [s.key for s in first.suspects()] == [bad]
    assert [s.key for s in first.raised] == [bad]
    top = first.links[0].to_dict()
    assert top["suspect"] and top["pairs"] == len(crossing) and top["confidence"] > 0.9
    assert 0.03 < top["loss"] < 0.2
    second = feed(loc, paths, dict.fromkeys(crossing, 5))
    assert [s.key for s in second.suspects()] == [bad] and second.raised == []
    # clean again: the window still holds a lossy interval, but the clean one alone
    # rejects the link's rate: it clears at once, once, and is not raised again
    cleared = feed(loc, paths, {})
    assert [s.key for s in cleared.cleared] == [bad] and cleared.suspects() == []
    again = feed(loc, paths, {})
    assert again.cleared == [] and again.raised == [] and again.suspects() == []


def test_a_quiet_interval_of_a_low_rate_fault_is_not_a_recovery() -> None:
    """One loss per crossing pair and interval (2% of 50): an interval without a loss
    is no evidence against 2% (0.98^50 = 36% per pair), so the suspect stays."""
    paths, _, _ = fat_tree_pairs()
    bad = next(link for link in sorted({k for c in paths.values() for k in c}, key=repr)
               if link[0] == "switch")
    crossing = [p for p, c in paths.items() if bad in c]
    loc = Localizer()
    feed(loc, paths, dict.fromkeys(crossing, 1))
    assert [s.key for s in feed(loc, paths, dict.fromkeys(crossing, 1)).suspects()] == [bad]
    quiet = feed(loc, paths, {})
    assert [s.key for s in quiet.suspects()] == [bad] and quiet.cleared == []


def test_clean_pairs_bound_every_other_link_to_zero() -> None:
    paths, _, _ = fat_tree_pairs()
    out = feed(Localizer(), paths, {})
    assert out.suspects() == [] and out.raised == []
    assert all(s.loss == 0.0 and s.confidence == 0.0 for s in out.links)


def test_access_link_fault_is_attributed_to_the_access_link() -> None:
    paths, _, _ = fat_tree_pairs()
    bad = access_link("h5", *fat_tree(4, 16)[1]["h5"])
    crossing = [p for p, c in paths.items() if bad in c]
    out = None
    loc = Localizer()
    for _ in range(2):
        out = feed(loc, paths, dict.fromkeys(crossing, 5))
    assert out is not None and [s.key for s in out.suspects()] == [bad]


def test_links_the_pairs_cannot_tell_apart_are_not_named() -> None:
    a, b = switch_link(1, 1, 2, 1), switch_link(2, 2, 3, 1)
    paths = {("h1", "h2"): {a: 1, b: 1}, ("h3", "h4"): {a: 1, b: 1}}
    out = feed(Localizer(), paths, {("h1", "h2"): 10, ("h3", "h4"): 10})
    assert out.suspects() == []
    assert {s.key for s in out.links} == {a, b}
    assert all(0.3 < s.confidence < 0.6 for s in out.links)


def test_a_suspect_nobody_crosses_any_more_keeps_its_state() -> None:
    a, c = switch_link(1, 1, 2, 1), switch_link(1, 2, 3, 1)
    loc = Localizer()
    paths = {("h1", "h2"): {a: 2}, ("h3", "h4"): {a: 2}, ("h1", "h3"): {c: 2}}
    feed(loc, paths, {("h1", "h2"): 10, ("h3", "h4"): 10})
    moved = {("h1", "h2"): {c: 2}, ("h3", "h4"): {c: 2}, ("h1", "h3"): {c: 2}}
    out = feed(loc, moved, {})
    assert out.cleared == [] and [s.key for s in out.suspects()] == [a]
    assert next(s for s in out.links if s.key == a).pairs == 0


def test_added_latency_is_the_smallest_rise_over_each_pairs_own_baseline() -> None:
    a, b = switch_link(1, 1, 2, 1), switch_link(2, 2, 3, 1)
    paths = {("h1", "h2"): {a: 1, b: 1}, ("h1", "h3"): {a: 1}}
    loc = Localizer()
    feed(loc, paths, {}, rtt={("h1", "h2"): 1.0, ("h1", "h3"): 0.5})
    out = feed(loc, paths, {}, rtt={("h1", "h2"): 6.0, ("h1", "h3"): 0.5})
    lat = {s.key: s.latency_ms for s in out.links}
    assert lat == {a: 0.0, b: 5.0}


def test_loss_split_by_direction_names_the_link_of_that_direction() -> None:
    """With lost_fwd, each direction is an observation of its own path's links, and the
    rate is per crossing, not per round trip."""
    topo, attach = fat_tree(4, 16)
    cache = PathCache(topo)
    pairs = cover_pairs(attach, lambda a, b: sorted(some(cache.path(attach, a, b)).links, key=repr),
                        min_cover=4)
    paths = {p: some(cache.path(attach, *p)) for p in pairs}
    bad = next(k for p in paths.values() for k in p.rev_links if k[0] == "switch")
    loc, out = Localizer(), None
    for _ in range(2):
        # 3 lost each way the pair's path crosses it (a fault in both directions)
        rows = [{"src": a, "dst": b, "sent": 50, "lost_fwd": 3 * int(bad in p.fwd_links),
                 "lost": 3 * (int(bad in p.fwd_links) + int(bad in p.rev_links))}
                for (a, b), p in paths.items()]
        obs, links = observations(rows, paths)
        assert len(obs) == 2 * len(rows)
        out = loc.update(obs, links)
    assert out is not None and [s.key for s in out.suspects()] == [bad]
    assert abs(out.suspects()[0].loss - 0.06) < 0.01  # per crossing, not per round trip


def test_bench_paths_runs_the_real_code_and_prints_its_verdicts(capsys) -> None:
    from bench.__main__ import paths_headline
    from bench.paths import main

    assert main(["--sizes", "100", "--trials", "6", "--clean", "2", "--intervals", "2",
                 "--no-json"]) == 0
    out = capsys.readouterr().out
    assert "MET: precision >= 0.99" in out and "NOT MET: precision" not in out
    assert "probes <= 1% of 1 Gbit/s per host at N = 1,000" not in out  # no N = 1,000 run
    figures, ok = paths_headline({"rows": [{"n": 100, "precision": 1.0, "recall_ge_1pct": 1.0,
                                            "detect_p95_intervals": 1.0,
                                            "probe_bps_busiest_host": 72800}],
                                  "targets": {"precision >= 0.99": True}})
    assert figures["n100_probe_kbit_s_host"] == 72.8 and ok == {"precision >= 0.99": True}


def test_the_interval_a_pair_moved_in_is_put_on_no_link() -> None:
    """Its probes crossed the old path, then the new one: losses of the old path (the
    reason it moved) must not land on the new path's links."""
    paths, _, _ = fat_tree_pairs()
    bad = next(link for link in sorted({k for c in paths.values() for k in c}, key=repr)
               if link[0] == "switch")
    crossing = [p for p, c in paths.items() if bad in c]
    loc = Localizer()
    feed(loc, paths, {})
    # the crossing pairs now go another way, over a link only they cross
    other = ("switch", 98, 1, 99, 1)
    moved = {p: ({other: 1} if p in crossing else c) for p, c in paths.items()}
    out = feed(loc, moved, dict.fromkeys(crossing, 10))
    assert out.suspects() == [] and out.raised == []
    assert feed(loc, moved, {}).suspects() == []
