"""Unit tests of the topology graph (ryu_app.net.topology), no network needed."""

from __future__ import annotations

import dataclasses
import io

import networkx as nx
import pytest

from ryu_app.net.topology import Topology, dpid_to_str, str_to_dpid
from testing.checks import some
from testing.topologies import MAC1, MAC2, MAC3, build

pytestmark = pytest.mark.unit


def test_dpid_strings_are_16_hex_digits_and_parsed_once():
    assert dpid_to_str(1) == "0000000000000001"
    assert dpid_to_str(0xABCDEF) == "0000000000abcdef"
    assert str_to_dpid("0000000000abcdef") == 0xABCDEF
    assert str_to_dpid("1a") == 26
    for bad in ("", "0x1", "12345678901234567", "zz", 5):
        with pytest.raises(ValueError, match="is not 1 to 16 hex digits"):
            str_to_dpid(bad)  # type: ignore[arg-type]  # 5: a wrong type is refused too


def test_link_directions_merge_into_one_edge_and_either_removes_it():
    topo = Topology()
    topo.add_switch(1, [1, 2])
    topo.add_switch(2, [1, 2])
    assert topo.add_link(1, 2, 2, 1) is True
    assert topo.add_link(2, 1, 1, 2) is False  # the other direction: same link
    assert topo.links() == [(1, 2, 2, 1)]
    assert topo.is_internal_port(1, 2) and topo.is_internal_port(2, 1)
    assert not topo.is_internal_port(1, 1)
    assert topo.remove_link(2, 1, 1, 2) is True
    assert topo.links() == []
    assert topo.remove_link(1, 2, 2, 1) is False
    assert not topo.is_internal_port(1, 2)


def test_remove_link_with_other_ports_is_ignored():
    topo = Topology()
    topo.add_link(1, 2, 2, 1)
    assert topo.remove_link(1, 3, 2, 1) is False
    assert topo.links() == [(1, 2, 2, 1)]


def test_remove_switch_drops_its_links_and_hosts():
    topo = build(nx.path_graph(3))
    assert len(topo.hosts()) == 3
    assert topo.remove_switch(2) is True
    assert topo.switches() == [1, 3]
    assert topo.links() == []
    assert [h.mac for h in topo.hosts()] == [MAC1, MAC3]
    assert topo.remove_switch(2) is False


def test_host_learning_ignores_internal_ports_and_junk():
    topo = Topology()
    topo.add_switch(1, [1, 2, 3])
    topo.add_switch(2, [1, 2])
    topo.add_link(1, 3, 2, 2)
    assert topo.learn_host(MAC1, "10.0.0.1", 1, 3) is None  # inter-switch port
    assert topo.learn_host("01:00:5e:00:00:01", "10.0.0.9", 1, 1) is None  # multicast src
    assert topo.learn_host(MAC1, None, 1, 1, dst="33:33:00:00:00:16") is None  # IPv6 mcast
    assert topo.learn_host(MAC1, None, 1, 1, dst="01:80:c2:00:00:0e") is None  # LLDP
    assert topo.learn_host(MAC1, "10.0.0.1", 9, 1) is None  # unknown switch
    assert topo.hosts() == []
    assert topo.learn_host(MAC1.upper(), "0.0.0.0", 1, 1) == "new"
    assert some(topo.host_by_mac(MAC1)).ips == set()
    assert topo.learn_host(MAC1, "10.0.0.1", 1, 1) == "ip"
    assert topo.learn_host(MAC1, "10.0.0.1", 1, 1) is None
    assert some(topo.host_by_ip("10.0.0.1")).mac == MAC1
    assert topo.host_by_ip("10.0.0.2") is None


def test_host_moves_and_ip_changes_owner():
    topo = build(nx.path_graph(2))
    assert topo.learn_host(MAC1, None, 2, 5) == "moved"
    assert (some(topo.host_by_mac(MAC1)).dpid, some(topo.host_by_mac(MAC1)).port) == (2, 5)
    assert topo.learn_host(MAC1, None, 2, 5) is None
    # IP ownership is pinned: one packet claiming another host's IP does not move it
    assert topo.learn_host(MAC3, "10.0.0.1", 1, 1, now=100.0) == "new"
    assert some(topo.host_by_ip("10.0.0.1")).mac == MAC1
    assert some(topo.host_by_mac(MAC3)).ips == set()
    assert topo.learn_host(MAC3, "10.0.0.1", 1, 1, now=105.0) is None  # not confirmed yet
    assert topo.ip_conflicts == 2
    # a claim that persists for IP_CONFIRM_SECONDS moves it, once per IP_MOVE_INTERVAL
    assert topo.learn_host(MAC3, "10.0.0.1", 1, 1, now=110.0) == "ip"
    assert some(topo.host_by_ip("10.0.0.1")).mac == MAC3
    assert some(topo.host_by_mac(MAC1)).ips == set()
    for now in (111.0, 125.0):  # the old owner claims it back: too soon after a move
        topo.learn_host(MAC1, "10.0.0.1", 2, 5, now=now)
    assert some(topo.host_by_ip("10.0.0.1")).mac == MAC3
    # an agent's registration binds at once
    assert topo.bind_ip(MAC1, "10.0.0.1", now=126.0) is True
    assert some(topo.host_by_ip("10.0.0.1")).mac == MAC1
    assert some(topo.host_by_mac(MAC3)).ips == set()
    assert topo.bind_ip(MAC1, "10.0.0.1") is False
    assert topo.remove_host(MAC1) is True
    assert topo.host_by_ip("10.0.0.1") is None
    # the owner gone (port down, host removed): the next claim takes it at once
    assert topo.learn_host(MAC3, "10.0.0.1", 1, 1, now=127.0) == "ip"


def test_link_found_late_forgets_hosts_mislearned_on_its_ports():
    topo = Topology()
    topo.add_switch(1, [1, 2])
    topo.add_switch(2, [1, 2])
    # h2's frame arrived at s1 over the (not yet discovered) link port 2.
    assert topo.learn_host(MAC2, "10.0.0.2", 1, 2) == "new"
    topo.add_link(1, 2, 2, 2)
    assert topo.host_by_mac(MAC2) is None
    assert topo.learn_host(MAC2, "10.0.0.2", 2, 1) == "new"


def test_remove_port_drops_host_behind_it():
    topo = build(nx.path_graph(2))
    assert topo.remove_port(1, 1) is True
    assert topo.host_by_mac(MAC1) is None
    assert topo.ports(1) == [2]


def test_shortest_path_on_a_ring():
    topo = build(nx.cycle_graph(6))  # switches 1..6 in a ring, host i on switch i
    assert topo.shortest_path(1, 3) == [1, 2, 3]
    assert topo.shortest_path(1, 5) == [1, 6, 5]
    assert topo.shortest_path(1, 4) in ([1, 2, 3, 4], [1, 6, 5, 4])
    topo.add_switch(7)
    assert topo.shortest_path(1, 7) is None
    assert topo.shortest_path(1, 8) is None


@pytest.mark.parametrize("graph", [
    nx.cycle_graph(4), nx.complete_graph(5), nx.grid_2d_graph(3, 3),
    nx.random_regular_graph(3, 10, seed=7), nx.balanced_tree(3, 2),
], ids=["ring4", "k5", "grid3x3", "regular3x10", "tree3x2"])
def test_spanning_tree_spans_every_switch_without_cycles(graph):
    graph = nx.convert_node_labels_to_integers(graph)
    topo = build(graph)
    tree = nx.Graph()
    tree.add_nodes_from(topo.switches())
    for a, pa, b, pb in topo.links():
        if (a, pa) in topo.tree_ports():
            assert (b, pb) in topo.tree_ports()
            tree.add_edge(a, b)
    assert nx.is_tree(tree)
    assert tree.number_of_nodes() == graph.number_of_nodes()


def test_spanning_tree_follows_changes():
    topo = build(nx.cycle_graph(3))
    before = set(topo.tree_ports())
    assert len(before) == 4  # 2 tree links, 2 ends each
    a, pa, b, pb = next(link for link in topo.links() if (link[0], link[1]) in before)
    topo.remove_link(a, pa, b, pb)
    after = topo.tree_ports()
    assert (a, pa) not in after and len(after) == 4


def test_port_age_restarts_when_a_link_goes_away():
    topo = Topology()
    topo.add_switch(1, [1], now=100.0)
    assert topo.port_age(1, 1, 103.0) == 3.0
    assert topo.port_age(1, 7, 103.0) == -1.0
    topo.add_link(1, 2, 2, 1, now=104.0)
    topo.remove_link(1, 2, 2, 1, now=110.0)
    assert topo.port_age(1, 2, 111.0) == 1.0
    assert topo.edge_ports(1) == [1, 2]


def test_to_dict_uses_hex_dpids_everywhere():
    topo = Topology()
    topo.add_switch(0x1A, [2, 1])
    topo.add_switch(2, [1])
    topo.add_link(0x1A, 2, 2, 1)
    topo.learn_host("00:00:00:00:00:0A", "10.0.0.10", 0x1A, 1)
    topo.learn_host("00:00:00:00:00:0a", "10.0.0.9", 0x1A, 1)
    assert topo.to_dict() == {
        "switches": [{"dpid": "0000000000000002", "ports": [1]},
                     {"dpid": "000000000000001a", "ports": [1, 2]}],
        "links": [{"src": {"dpid": "0000000000000002", "port": 1},
                   "dst": {"dpid": "000000000000001a", "port": 2}}],
        "hosts": [{"mac": "00:00:00:00:00:0a", "ips": ["10.0.0.9", "10.0.0.10"],
                   "dpid": "000000000000001a", "port": 1}],
    }


def test_version_counts_changes_only():
    topo = Topology()
    v0 = topo.version
    topo.add_switch(1, [1])
    v1 = topo.version
    assert v1 > v0
    topo.add_switch(1, [1])
    topo.learn_host(MAC1, None, 1, 1)
    v2 = topo.version
    topo.learn_host(MAC1, None, 1, 1)
    assert topo.version == v2 > v1


# ---------------------------------------------------------------- Mininet topologies

@pytest.mark.parametrize("name,params,switches,hosts,links", [
    ("tree", {"depth": 2, "fanout": 3}, 4, 9, 3),
    ("tree", {"depth": 3, "fanout": 2}, 7, 8, 6),
    ("linear", {"k": 4}, 4, 4, 3),
    ("fattree", {"k": 4}, 20, 16, 32),
    ("loop", {"n": 4, "hosts": 2}, 4, 8, 4),
])
def test_mininet_topologies_have_the_documented_shape(name, params, switches, hosts, links):
    from topo.topos import topos

    topo = topos[name](**params)
    assert len(topo.switches()) == switches
    assert topo.hosts() == [f"h{n}" for n in range(1, hosts + 1)]
    assert topo.switch_links() == links
    dpids = [topo.nodeInfo(s)["dpid"] for s in topo.switches()]
    assert len(set(dpids)) == switches and all(len(d) == 16 for d in dpids)
    for n in range(1, hosts + 1):
        info = topo.nodeInfo(f"h{n}")
        assert info["ip"] == f"10.0.0.{n}/8"
        assert info["mac"] == f"00:00:00:00:00:{n:02x}"
    graph = nx.Graph(list(topo.links()))
    assert nx.is_connected(graph)
    assert (nx.cycle_basis(graph) == []) == (name in ("tree", "linear"))


def test_original_tree_numbering_and_bandwidth_option():
    from topo.topos import TreeTopo

    topo = TreeTopo(depth=2, fanout=3, bw=10)
    assert sorted(topo.links()) == sorted(
        [("s1", "s2"), ("s1", "s3"), ("s1", "s4")]
        + [(f"s{(n - 1) // 3 + 2}", f"h{n}") for n in range(1, 10)])
    assert all(topo.linkInfo(a, b)["bw"] == 10 for a, b in topo.links())
    assert "bw" not in TreeTopo().linkInfo("s1", "s2")


def test_fattree_and_loop_reject_bad_sizes():
    from topo.topos import FatTreeTopo, LoopTopo

    with pytest.raises(ValueError, match="fattree k must be even and >= 2, got 3"):
        FatTreeTopo(k=3)
    with pytest.raises(ValueError, match="loop needs at least 3 switches, got 2"):
        LoopTopo(n=2)


def test_launcher_helpers():
    from topo.launch import Options, agent_names, build_parser, make_topo, options_from_args

    assert agent_names({"agents": [{"name": "h2"}, {"name": "h3"}]}) == {"h2", "h3"}
    opts = options_from_args(build_parser().parse_args(
        ["--topo", "loop", "--n", "5", "--no-agent-on", "h1", "--bw", "10", "--no-lock"]))
    assert (opts.topo, opts.n, opts.no_agent_on, opts.bw, opts.lock, opts.agents) == (
        "loop", 5, ["h1"], 10.0, False, True)
    assert len(make_topo(opts).switches()) == 5
    with pytest.raises(ValueError, match="unknown topology 'ring'"):
        make_topo(Options(topo="ring"))
    # one table: no flag means the dataclass default, and every field has its flag
    assert options_from_args(build_parser().parse_args([])) == Options()
    assert make_topo(Options(topo="fattree", k=2)).hosts() == ["h1", "h2"]
    flags = {a.dest for a in build_parser()._actions}
    assert {f.name for f in dataclasses.fields(Options)} <= flags


def test_host_addresses_are_computed_from_the_ip_base_like_mininet():
    from mininet.util import ipAdd, netParse

    from topo.topos import LinearTopo, TreeTopo

    topo = LinearTopo(k=4, n=250)  # 1,000 hosts
    ips = [topo.nodeInfo(f"h{n}")["ip"] for n in range(1, 1001)]
    assert len(set(ips)) == 1000
    assert ips[0] == "10.0.0.1/8" and ips[254] == "10.0.0.255/8"
    assert ips[255] == "10.0.1.0/8" and ips[999] == "10.0.3.232/8"
    base, plen = netParse("10.0.0.0/8")
    assert ips == [f"{ipAdd(n, plen, base)}/8" for n in range(1, 1001)]
    macs = {topo.nodeInfo(f"h{n}")["mac"] for n in range(1, 1001)}
    assert len(macs) == 1000 and topo.nodeInfo("h1000")["mac"] == "00:00:00:00:03:e8"
    small = TreeTopo(depth=1, fanout=3, ip_base="192.0.2.0/24")
    assert [small.nodeInfo(h)["ip"] for h in ("h1", "h3")] == ["192.0.2.1/24", "192.0.2.3/24"]
    with pytest.raises(ValueError, match="192.0.2.0/30 holds 2 host addresses; host h3"):
        TreeTopo(depth=1, fanout=3, ip_base="192.0.2.0/30")


def test_mininet_output_comes_back_after_a_quiet_start():
    """The launcher starts Mininet at ``warning`` and opens the CLI at ``output``:
    the CLI's lines (pingall, nodes, h1 echo) must print again."""
    from mininet.log import lg, output

    from topo.launch import set_mininet_log_level

    handler = lg.handlers[0]
    try:
        set_mininet_log_level("warning")
        output("quiet\n")
        set_mininet_log_level("output")
        stream, handler.stream = handler.stream, io.StringIO()
        try:
            output("loud\n")
            printed = handler.stream.getvalue()
        finally:
            handler.stream = stream
        assert printed == "loud\n"
    finally:
        set_mininet_log_level("output")
