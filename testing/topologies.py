"""Controller topologies built from graphs, for unit tests of the plain modules."""

from __future__ import annotations

import networkx as nx

from ryu_app.net.topology import Topology

MAC1, MAC2, MAC3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"


def build(graph: nx.Graph, hosts_per_switch: int = 1) -> Topology:
    """A Topology from a networkx graph of switches (nodes 0..n-1 -> dpid 1..n).

    Port numbers: hosts use 1..hosts_per_switch, links use the next ones.
    Each link is reported in both directions, as LLDP does. Host ``k`` (from
    1) has MAC ``00:00:00:00:00:kk`` and IP ``10.0.0.k``.
    """
    topo = Topology()
    next_port = {}
    for node in graph.nodes:
        topo.add_switch(node + 1, list(range(1, hosts_per_switch + 1)))
        next_port[node] = hosts_per_switch + 1
    for a, b in graph.edges:
        pa, pb = next_port[a], next_port[b]
        next_port[a] += 1
        next_port[b] += 1
        topo.add_link(a + 1, pa, b + 1, pb)
        topo.add_link(b + 1, pb, a + 1, pa)
    host = 0
    for node in graph.nodes:
        for port in range(1, hosts_per_switch + 1):
            host += 1
            mac = f"00:00:00:00:00:{host:02x}"
            if topo.learn_host(mac, f"10.0.0.{host}", node + 1, port) != "new":
                raise ValueError(f"host {mac} learned twice")
    return topo
