"""Controller topologies built without a network, for unit tests of the plain modules.

``build`` turns any networkx graph of switches into one, with links
reported both ways as LLDP does; ``tree_topology`` is Mininet's tree
(depth 2, fanout 3) as the controller learns it.
"""

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


def tree_topology() -> Topology:
    """Mininet tree depth 2 fanout 3: s1 core; h1..h9 on s2, s3, s4 (10.0.0.i)."""
    topo = Topology()
    topo.add_switch(1, [1, 2, 3])
    for leaf in (2, 3, 4):
        topo.add_switch(leaf, [1, 2, 3, 4])
        topo.add_link(1, leaf - 1, leaf, 4)
        topo.add_link(leaf, 4, 1, leaf - 1)
    for i in range(1, 10):
        topo.learn_host(f"00:00:00:00:00:{i:02x}", f"10.0.0.{i}", 2 + (i - 1) // 3,
                        1 + (i - 1) % 3)
    return topo
