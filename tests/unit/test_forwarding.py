"""Unit tests of forwarding decisions (ryu_app.net.forwarding) on generated graphs.

``testing.fakeoftable.FakeNetwork`` replays the decisions as the real
OpenFlow messages of ``ryu_app.ofmsg`` on fake switch tables, and follows
every copy of a frame hop by hop (each table miss is another packet-in), so
loops and duplicates show up as counts.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import networkx as nx
import pytest

from ryu_app.net.forwarding import (
    ARP_REQUEST,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_LLDP,
    FLOW_COOKIE,
    FlowDelete,
    FlowMod,
    Forwarding,
    Packet,
    PacketOut,
    SourceFlow,
    arp_reply,
)
from ryu_app.net.topology import Topology
from testing.checks import some
from testing.fakeoftable import FakeNetwork
from testing.topologies import MAC1, MAC2, build

pytestmark = pytest.mark.unit

BCAST = "ff:ff:ff:ff:ff:ff"
NOW = 1000.0  # every port was added at 0: long settled


def network(graph: nx.Graph, hosts_per_switch: int = 1) -> tuple[Forwarding, FakeNetwork]:
    topo = build(nx.convert_node_labels_to_integers(graph), hosts_per_switch)
    fwd = Forwarding(topo)
    where = {h.mac: (h.dpid, h.port) for h in topo.hosts()}
    return fwd, FakeNetwork(fwd, where, now=NOW)


def test_known_destination_gets_shortest_path_flows_downstream_first():
    fwd, _ = network(nx.cycle_graph(6))  # ring 1..6, host n on switch n port 1
    pkt = Packet(MAC1, "00:00:00:00:00:05", 1, 1, ETH_TYPE_IPV4, ip_src="10.0.0.1")
    decisions = fwd.packet_in(pkt, NOW)
    topo = fwd.topology
    p16, p65 = some(topo.link_port(1, 6)), some(topo.link_port(6, 5))
    assert decisions == [
        SourceFlow(1, MAC1, 1, 10, 60, FLOW_COOKIE),
        SourceFlow(6, MAC1, None, 10, 60, FLOW_COOKIE),
        SourceFlow(5, MAC1, None, 10, 60, FLOW_COOKIE),
        FlowMod(5, "00:00:00:00:00:05", 1, 10, 60, FLOW_COOKIE),
        FlowMod(6, "00:00:00:00:00:05", p65, 10, 60, FLOW_COOKIE),
        FlowMod(1, "00:00:00:00:00:05", p16, 10, 60, FLOW_COOKIE),
        PacketOut(1, 1, (p16,)),
    ]


def test_destination_on_same_switch_and_behind_ingress():
    fwd, _ = network(nx.path_graph(2), hosts_per_switch=2)
    pkt = Packet(MAC1, MAC2, 1, 1, ETH_TYPE_IPV4)
    assert fwd.packet_in(pkt, NOW) == [SourceFlow(1, MAC1, 1), FlowMod(1, MAC2, 2),
                                       PacketOut(1, 1, (2,))]
    back = Packet("00:00:00:00:00:09", MAC2, 1, 2, ETH_TYPE_IPV4)
    assert fwd.packet_in(back, NOW) == [SourceFlow(1, "00:00:00:00:00:09", 2)]


@pytest.mark.parametrize("graph", [
    nx.cycle_graph(4), nx.complete_graph(5), nx.grid_2d_graph(3, 3),
    nx.random_regular_graph(3, 10, seed=3), nx.barbell_graph(3, 2),
], ids=["ring4", "k5", "grid3x3", "regular3x10", "barbell"])
def test_broadcast_reaches_every_other_host_exactly_once(graph):
    fwd, sim = network(graph)
    n = graph.number_of_nodes()
    sim.send(Packet(MAC1, BCAST, 1, 1, ETH_TYPE_IPV4, ip_src="10.0.0.1"))
    expected = {f"00:00:00:00:00:{i:02x}": 1 for i in range(2, n + 1)}
    assert dict(sim.delivered) == expected
    assert sim.packet_ins == n  # one packet-in per switch: the tree, no cycle


@pytest.mark.parametrize("graph", [nx.cycle_graph(5), nx.grid_2d_graph(3, 3)],
                         ids=["ring5", "grid3x3"])
def test_unicast_follows_shortest_path_and_arrives_once(graph):
    fwd, sim = network(graph)
    n = graph.number_of_nodes()
    for dst in range(2, n + 1):
        mac = f"00:00:00:00:00:{dst:02x}"
        before = sim.packet_ins
        sim.send(Packet(MAC1, mac, 1, 1, ETH_TYPE_IPV4))
        assert sim.delivered[mac] == 1
        assert sim.packet_ins - before == 1  # flows installed along the whole path
        hops = len(some(fwd.topology.shortest_path(1, dst))) - 1
        assert len(sim.flows_to(mac)) == hops + 1


def test_flood_ports_on_a_ring_use_tree_and_host_ports_only():
    fwd, _ = network(nx.cycle_graph(4))
    topo = fwd.topology
    tree = topo.tree_ports()
    all_ports = {(d, p) for d in topo.switches() for p in fwd.flood_ports(d, 0, NOW)}
    internal = {(d, p) for d in topo.switches() for p in topo.ports(d)
                if topo.is_internal_port(d, p)}
    assert all_ports & internal == tree
    assert len(internal - tree) == 2  # exactly one ring link is cut, both ends
    assert fwd.flood_ports(1, 1, NOW) == sorted(p for d, p in tree if d == 1)


def test_flood_copy_on_non_tree_link_is_dropped():
    fwd, _ = network(nx.cycle_graph(4))
    topo = fwd.topology
    (a, pa, b, pb), = [link for link in topo.links() if (link[0], link[1]) not in topo.tree_ports()]
    out = fwd.packet_in(Packet(MAC1, BCAST, a, pa, ETH_TYPE_IPV4), NOW)
    assert [d for d in out if isinstance(d, PacketOut)] == []


def test_unknown_destination_floods_on_spanning_tree():
    fwd, _ = network(nx.cycle_graph(4))
    out = fwd.packet_in(Packet(MAC1, "00:00:00:00:00:77", 1, 1, ETH_TYPE_IPV4), NOW)
    assert out == [SourceFlow(1, MAC1, 1), PacketOut(1, 1, tuple(fwd.flood_ports(1, 1, NOW)))]
    assert isinstance(out[1], PacketOut) and 1 not in out[1].out_ports


def test_new_ports_are_not_flooded_until_settled():
    fwd, _ = network(nx.path_graph(2))
    fwd.topology.add_port(1, 9, now=NOW)
    assert 9 not in fwd.flood_ports(1, 1, NOW + 1.0)
    assert 9 in fwd.flood_ports(1, 1, NOW + 2.0)


def test_proxy_arp_answers_known_ip_on_ingress_port():
    fwd, _ = network(nx.path_graph(3))
    req = Packet(MAC1, BCAST, 1, 1, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                 arp_spa="10.0.0.1", arp_tpa="10.0.0.3")
    frame = arp_reply(MAC1, "10.0.0.1", "00:00:00:00:00:03", "10.0.0.3")
    assert fwd.packet_in(req, NOW) == [SourceFlow(1, MAC1, 1), PacketOut(1, 1, (1,), frame)]
    assert frame[:12] == bytes.fromhex("000000000001" "000000000003")
    assert frame[12:14] == b"\x08\x06" and len(frame) == 42
    assert frame[20:22] == b"\x00\x02"  # opcode reply
    assert frame[28:32] == ipaddress.IPv4Address("10.0.0.3").packed
    assert frame[38:42] == ipaddress.IPv4Address("10.0.0.1").packed


def test_arp_for_unknown_ip_or_gratuitous_floods():
    fwd, _ = network(nx.path_graph(3))
    unknown = Packet(MAC1, BCAST, 1, 1, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                     arp_spa="10.0.0.1", arp_tpa="10.0.0.99")
    assert fwd.packet_in(unknown, NOW)[1:] == [PacketOut(1, 1, tuple(fwd.flood_ports(1, 1,
                                                                                 NOW)))]
    grat = Packet(MAC1, BCAST, 1, 1, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                  arp_spa="10.0.0.1", arp_tpa="10.0.0.1")
    assert isinstance(fwd.packet_in(grat, NOW)[1], PacketOut)
    fwd.proxy_arp = False
    known = Packet(MAC1, BCAST, 1, 1, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                   arp_spa="10.0.0.1", arp_tpa="10.0.0.3")
    answer = fwd.packet_in(known, NOW)[1]
    assert isinstance(answer, PacketOut) and answer.data is None


def test_arp_teaches_the_sender_ip():
    fwd, _ = network(nx.path_graph(2))
    new = "00:00:00:00:00:42"
    req = Packet(new, BCAST, 2, 7, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                 arp_spa="10.0.0.42", arp_tpa="10.0.0.99")
    fwd.topology.add_port(2, 7)
    fwd.packet_in(req, NOW)
    host = some(fwd.topology.host_by_ip("10.0.0.42"))
    assert (host.mac, host.dpid, host.port) == (new, 2, 7)


def test_control_chatter_is_dropped_and_not_learned():
    fwd, _ = network(nx.path_graph(2))
    v = fwd.topology.version
    assert fwd.packet_in(Packet("00:00:00:00:00:42", "01:80:c2:00:00:0e", 1, 1,
                                ETH_TYPE_LLDP), NOW) == []
    assert fwd.packet_in(Packet("00:00:00:00:00:42", "33:33:00:00:00:02", 1, 1,
                                0x86DD), NOW) == []
    assert fwd.packet_in(Packet(MAC1, MAC2, 99, 1, ETH_TYPE_IPV4), NOW) == []
    assert fwd.topology.version == v


def test_ipv6_neighbour_solicitations_flood_and_teach_the_source():
    fwd, _ = network(nx.path_graph(2))
    out = fwd.packet_in(Packet("00:00:00:00:00:42", "33:33:ff:00:00:05", 1, 1, 0x86DD), NOW)
    assert fwd.topology.host_by_mac("00:00:00:00:00:42") is not None
    floods = [d for d in out if isinstance(d, PacketOut)]
    assert floods and floods == fwd.flood(
        Packet("00:00:00:00:00:42", "33:33:ff:00:00:05", 1, 1, 0x86DD), NOW)
    # no source flow yet: the host's ARP must still reach the controller to teach its IPv4
    assert not any(isinstance(d, SourceFlow) for d in out)
    arp = fwd.packet_in(Packet("00:00:00:00:00:42", "ff:ff:ff:ff:ff:ff", 1, 1, ETH_TYPE_ARP,
                               arp_op=1, arp_spa="10.0.0.42", arp_tpa="10.0.0.9"), NOW)
    assert some(fwd.topology.host_by_mac("00:00:00:00:00:42")).ips == {"10.0.0.42"}
    assert SourceFlow(1, "00:00:00:00:00:42", 1) in arp
    # other IPv6 multicast (MLD reports, router solicitations) is still chatter
    assert fwd.packet_in(Packet("00:00:00:00:00:43", "33:33:00:00:00:16", 1, 1,
                                0x86DD), NOW) == []
    assert fwd.topology.host_by_mac("00:00:00:00:00:43") is None


def test_moved_host_invalidates_its_flows_and_link_change_invalidates_all():
    fwd, _ = network(nx.path_graph(2), hosts_per_switch=2)
    moved = fwd.packet_in(Packet(MAC1, "00:00:00:00:00:03", 2, 2, ETH_TYPE_IPV4), NOW)
    assert moved[:4] == [FlowDelete(1, FLOW_COOKIE, MAC1, "eth_dst"),
                         FlowDelete(1, FLOW_COOKIE, MAC1, "eth_src"),
                         FlowDelete(2, FLOW_COOKIE, MAC1, "eth_dst"),
                         FlowDelete(2, FLOW_COOKIE, MAC1, "eth_src")]
    assert moved[4] == SourceFlow(2, MAC1, 2)
    assert fwd.invalidate_all() == [FlowDelete(1), FlowDelete(2)]


def test_every_host_is_learned_even_when_all_its_destinations_have_flows():
    """A pingall in order: the last host never floods, yet it must be learned."""
    graph = nx.cycle_graph(4)
    topo = build(graph)
    late = "00:00:00:00:00:04"
    topo.remove_host(late)  # h4 (on switch 4) has not been seen yet
    fwd = Forwarding(topo)
    sim = FakeNetwork(fwd, {h.mac: (h.dpid, h.port) for h in topo.hosts()} | {late: (4, 1)},
                      now=NOW)
    known = [f"00:00:00:00:00:{i:02x}" for i in (1, 2, 3)]
    for src in known:  # everyone else talks first: flows to h1..h3 on every path
        for dst in known:
            if src != dst:
                sim.send(Packet(src, dst, int(src[-1]), 1, ETH_TYPE_IPV4))
    for dst in known:  # h4 answers by unicast only (it got their MACs from ARP)
        sim.send(Packet(late, dst, 4, 1, ETH_TYPE_IPV4))
        assert sim.delivered[dst] >= 1
    host = some(topo.host_by_mac(late))
    assert (host.dpid, host.port) == (4, 1)


def test_source_flow_matches_in_port_only_on_the_home_switch():
    fwd, _ = network(nx.path_graph(2))
    at_home = fwd.packet_in(Packet(MAC1, MAC2, 1, 1, ETH_TYPE_IPV4), NOW)
    assert at_home[0] == SourceFlow(1, MAC1, 1)
    transit = fwd.packet_in(Packet(MAC1, MAC2, 2, some(fwd.topology.link_port(2, 1)),
                                   ETH_TYPE_IPV4), NOW)
    assert transit[0] == SourceFlow(2, MAC1, None)


def fat_tree(k: int = 4) -> tuple[Forwarding, FakeNetwork]:
    """The k-ary fat-tree of topo/topos.py: dpids cores, aggs, edges; k/2 hosts per edge."""
    half = k // 2
    cores = list(range(1, half * half + 1))
    aggs = [[cores[-1] + pod * half + i + 1 for i in range(half)] for pod in range(k)]
    edges = [[aggs[-1][-1] + pod * half + i + 1 for i in range(half)] for pod in range(k)]
    topo = Topology()
    next_port: dict[int, int] = {}

    def link(a: int, b: int) -> None:
        for d in (a, b):
            next_port.setdefault(d, 1)
        pa, pb = next_port[a], next_port[b]
        next_port[a] += 1
        next_port[b] += 1
        topo.add_link(a, pa, b, pb)
        topo.add_link(b, pb, a, pa)

    host = 0
    where: dict[str, tuple[int, int]] = {}
    for pod in range(k):
        for i, agg in enumerate(aggs[pod]):
            for j in range(half):
                link(cores[i * half + j], agg)
            for edge in edges[pod]:
                link(agg, edge)
        for edge in edges[pod]:
            for _ in range(half):
                host += 1
                port = next_port.setdefault(edge, 1)
                next_port[edge] += 1
                topo.add_port(edge, port)
                mac = f"00:00:00:00:00:{host:02x}"
                assert topo.learn_host(mac, f"10.0.0.{host}", edge, port) == "new"
                where[mac] = (edge, port)
    fwd = Forwarding(topo)
    return fwd, FakeNetwork(fwd, where, now=NOW)


def test_fat_tree_two_pingalls_deliver_every_packet_exactly_once():
    """k=4 fat-tree (20 switches, 16 hosts, many equal-cost paths): each unicast
    frame of two full pingalls reaches its destination once and nobody else,
    with flows of the first round reused or overwritten by the second."""
    fwd, sim = fat_tree(4)
    assert len(fwd.topology.switches()) == 20 and len(fwd.topology.links()) == 32
    macs = sorted(sim.hosts)
    assert len(macs) == 16
    for _ in range(2):
        for src in macs:
            for dst in macs:
                if src == dst:
                    continue
                for a, b in ((src, dst), (dst, src)):  # echo request, echo reply
                    sim.delivered.clear()
                    dpid, port = sim.hosts[a]
                    sim.send(Packet(a, b, dpid, port, ETH_TYPE_IPV4))
                    assert dict(sim.delivered) == {b: 1}, (a, b)
    for src in macs:  # broadcast (ARP): every other host once, never the sender
        sim.delivered.clear()
        dpid, port = sim.hosts[src]
        sim.send(Packet(src, BCAST, dpid, port, ETH_TYPE_ARP, arp_op=ARP_REQUEST))
        assert dict(sim.delivered) == {m: 1 for m in macs if m != src}


def test_invalidating_a_host_deletes_only_the_flows_to_it_and_all_flows_on_a_change():
    fwd, sim = network(nx.path_graph(3))
    for dst in ("00:00:00:00:00:02", "00:00:00:00:00:03"):
        sim.send(Packet(MAC1, dst, 1, 1, ETH_TYPE_IPV4))
    assert sim.flows_to("00:00:00:00:00:03") == [1, 2, 3]
    sim.apply(fwd.invalidate_host("00:00:00:00:00:03"))
    assert sim.flows_to("00:00:00:00:00:03") == []
    assert sim.flows_to("00:00:00:00:00:02") == [1, 2]
    sim.apply(fwd.invalidate_all())
    assert all(sw.flows(cookie=FLOW_COOKIE) == [] for sw in sim.switches.values())
    assert all(len(sw.flows(cookie=0)) == 2 for sw in sim.switches.values())  # table-miss stays


def _pingall(sim: FakeNetwork) -> None:
    macs = sorted(sim.hosts)
    for src in macs:
        for dst in macs:
            if src != dst:
                sim.delivered.clear()
                dpid, port = sim.hosts[src]
                sim.send(Packet(src, dst, dpid, port, ETH_TYPE_IPV4))
                assert dict(sim.delivered) == {dst: 1}, (src, dst)


def _dst_flows(sim: FakeNetwork) -> dict[tuple[int, str], Any]:
    return {(d, f.match["eth_dst"]): f for d, sw in sim.switches.items()
            for f in sw.flows(table=1, cookie=FLOW_COOKIE)}


def _out_port(flow: Any) -> int:
    return next(a.port for i in flow.instructions for a in i.actions)


def test_rerouting_around_a_link_rewrites_only_the_flows_that_crossed_it():
    """Fat-tree k=4 after a pingall: avoiding one edge-aggregation link rewrites exactly
    the (switch, destination) flows whose next hop changes; every other flow is the
    same object, untouched. Traffic then avoids the link; lifting it moves the same
    flows back."""
    fwd, sim = fat_tree(4)
    topo = fwd.topology
    _pingall(sim)
    before = _dst_flows(sim)
    hops_before = fwd.next_hops()
    a, pa, b, pb = sorted(topo.links())[0]
    crossing = {k for k, f in before.items() if (k[0], _out_port(f)) in ((a, pa), (b, pb))}
    assert crossing
    moved = some(fwd.reroute({frozenset({a, b})}))
    assert fwd.reroute({frozenset({a, b})}) is None  # unchanged: nothing to do
    hops_after = fwd.next_hops()
    changed = {k for k in hops_before if hops_before[k] != hops_after.get(k)}
    assert crossing <= changed  # every flow that used the link is among the moved
    mods = [d for d in moved if isinstance(d, FlowMod)]
    assert len(mods) == len(moved)  # all adds: the fat-tree stays connected
    assert {(d.dpid, d.eth_dst) for d in mods} == changed
    assert len(moved) < len(before) / 4
    sim.apply(moved)
    after = _dst_flows(sim)
    for key, flow in before.items():
        if key not in changed:
            assert after[key] is flow, key  # not deleted, not re-added
        else:
            assert _out_port(after[key]) == hops_after[key]
    assert not any((k[0], _out_port(f)) in ((a, pa), (b, pb)) for k, f in after.items())
    _pingall(sim)
    assert not any((k[0], _out_port(f)) in ((a, pa), (b, pb))
                   for k, f in _dst_flows(sim).items())
    back = some(fwd.reroute(set()))
    assert {(d.dpid, d.eth_dst) for d in back if isinstance(d, FlowMod)} == changed
    assert len(back) == len(changed)
    sim.apply(back)
    assert {k: _out_port(f) for k, f in _dst_flows(sim).items() if k in before} == \
        {k: _out_port(f) for k, f in before.items()}


def test_rerouting_deletes_the_flows_of_a_destination_no_longer_reachable():
    fwd, sim = network(nx.path_graph(3))
    _pingall(sim)
    moved = some(fwd.reroute({frozenset({2, 3})}))
    deletes = [d for d in moved if isinstance(d, FlowDelete)]
    assert len(deletes) == len(moved)
    mac3 = "00:00:00:00:00:03"
    # s3 is cut off: the flows to h3 on s1, s2 and those to h1, h2 on s3 go
    assert sorted(deletes, key=lambda d: (d.mac, d.dpid)) == [
        FlowDelete(3, FLOW_COOKIE, MAC1), FlowDelete(3, FLOW_COOKIE, MAC2),
        FlowDelete(1, FLOW_COOKIE, mac3), FlowDelete(2, FLOW_COOKIE, mac3)]
    sim.apply(moved)
    assert sim.flows_to(mac3) == [3]
    assert sim.flows_to(MAC2) == [1, 2]


# ---------------------------------------------------------------- IP source guard

def test_source_guard_keeps_every_packet_of_pingalls_with_true_sources():
    """Guard on, k=4 fat-tree: ARP and IPv4 with the hosts' own addresses are
    all delivered once; the guard flows sit on each host's own port only."""
    fwd, sim = fat_tree(4)
    fwd.source_guard = True
    macs = sorted(sim.hosts)
    ip = {m: next(iter(some(fwd.topology.host_by_mac(m)).ips)) for m in macs}
    for src in macs:
        sim.delivered.clear()
        dpid, port = sim.hosts[src]
        sim.send(Packet(src, BCAST, dpid, port, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                        arp_spa=ip[src], arp_tpa="10.0.0.250"))
        assert dict(sim.delivered) == {m: 1 for m in macs if m != src}
    for _ in range(2):
        for a in macs:
            for b in macs:
                if a != b:
                    sim.delivered.clear()
                    dpid, port = sim.hosts[a]
                    sim.send(Packet(a, b, dpid, port, ETH_TYPE_IPV4, ip_src=ip[a]))
                    assert dict(sim.delivered) == {b: 1}, (a, b)
    assert fwd.spoofed == {}
    dpid, port = sim.hosts[macs[0]]
    guard = [f for f in sim.switches[dpid].flows(table=0) if f.match.get("eth_src") == macs[0]
             and f.match.get("in_port") == port and "eth_type" in f.match]
    assert sorted((f.priority, f.match.get("ipv4_src") or f.match.get("arp_spa") or "drop")
                  for f in guard) == [(11, "drop"), (11, "drop"), (12, ip[macs[0]]),
                                      (12, ip[macs[0]])]


def test_spoofed_sources_are_dropped_and_counted_and_do_not_move_the_ip():
    fwd, sim = network(nx.path_graph(3))  # h1 on s1, h2 on s2, h3 on s3 (port 1 each)
    fwd.source_guard = True
    mac3 = "00:00:00:00:00:03"
    sim.send(Packet(mac3, MAC1, 3, 1, ETH_TYPE_IPV4, ip_src="10.0.0.3"))  # h3's own address
    assert dict(sim.delivered) == {MAC1: 1}
    sim.delivered.clear()
    ins = sim.packet_ins
    for _ in range(40):  # h3 scans h1 as 10.0.0.2: dropped by h3's switch, no packet-in
        sim.send(Packet(mac3, MAC1, 3, 1, ETH_TYPE_IPV4, ip_src="10.0.0.2"))
    assert dict(sim.delivered) == {} and sim.packet_ins == ins
    fate = sim.switches[3].lookup({"in_port": 1, "eth_src": mac3, "eth_dst": MAC1,
                                   "eth_type": ETH_TYPE_IPV4, "ipv4_src": "10.0.0.2"})
    assert fate.dropped and fate.flows[-1].priority == 11  # the drop flow counts them
    # before its guard flows exist (a new switch table), the controller drops and counts
    sim.apply(fwd.invalidate_all())
    sim.send(Packet(mac3, MAC1, 3, 1, ETH_TYPE_IPV4, ip_src="10.0.0.2"))
    assert dict(sim.delivered) == {} and fwd.spoofed == {(3, 1): 1}
    # a forged ARP (h3 says 10.0.0.2 is at its MAC) does not move 10.0.0.2
    sim.apply(fwd.invalidate_all())
    decisions = fwd.packet_in(Packet(mac3, BCAST, 3, 1, ETH_TYPE_ARP, arp_op=ARP_REQUEST,
                                     arp_spa="10.0.0.2", arp_tpa="10.0.0.1"), NOW)
    assert not any(isinstance(d, PacketOut) for d in decisions)
    assert some(fwd.topology.host_by_ip("10.0.0.2")).mac == MAC2 and fwd.spoofed[(3, 1)] == 2
    # and proxy ARP keeps answering h2's MAC for 10.0.0.2
    (reply,) = [d for d in fwd.packet_in(Packet(MAC1, BCAST, 1, 1, ETH_TYPE_ARP,
                                                arp_op=ARP_REQUEST, arp_spa="10.0.0.1",
                                                arp_tpa="10.0.0.2"), NOW)
                if isinstance(d, PacketOut)]
    assert reply.data == arp_reply(MAC1, "10.0.0.1", MAC2, "10.0.0.2")


def test_a_new_leader_claims_master_and_an_older_claim_is_stale():
    from ryu.ofproto import ofproto_v1_3 as ofp

    from ryu_app import ofmsg
    from testing.fakeoftable import FakeOFTable

    sw, dp = FakeOFTable(1), ofmsg.offline_datapath(1)
    sw.apply([ofmsg.role(dp, "slave", 1)])  # a standby, at the current generation
    assert (sw.role, sw.generation) == (ofp.OFPCR_ROLE_SLAVE, 1)
    sw.apply([ofmsg.role(dp, "master", 2)])
    assert (sw.role, sw.generation) == (ofp.OFPCR_ROLE_MASTER, 2)
    with pytest.raises(ValueError, match="stale role request"):
        sw.apply([ofmsg.role(dp, "master", 1)])
