"""Overlay tree: exact small cases and properties on generated topologies."""

from __future__ import annotations

import math
import random

import networkx as nx
import pytest

from ryu_app.service.overlay import build_overlay, min_complete_depth, natural_key, stretch_stats


def _mac(i: int) -> str:
    return f"00:00:00:00:{i // 256:02x}:{i % 256:02x}"


def _with_hosts(switch_graph: nx.Graph, edge_switches, per_switch: int):
    """Copy a switch graph (ints from 1) and hang ``per_switch`` hosts on each edge switch."""
    g = nx.Graph()
    g.add_edges_from((a + 1, b + 1) for a, b in switch_graph.edges())
    agents, i = {}, 0
    for sw in edge_switches:
        for _ in range(per_switch):
            i += 1
            g.add_edge(sw + 1, _mac(i))
            agents[f"h{i}"] = _mac(i)
    return g, agents


def mininet_tree(depth: int, fanout: int, per_leaf: int | None = None):
    sw = nx.balanced_tree(fanout, depth - 1)
    leaves = sorted(n for n in sw if sw.degree(n) == 1 or len(sw) == 1)
    return _with_hosts(sw, leaves, per_leaf or fanout)


def linear(n: int):
    return _with_hosts(nx.path_graph(n), range(n), 1)


def fat_tree(k: int = 4, per_edge: int | None = None):
    """k-ary fat tree: (k/2)^2 core, k pods of k/2 aggregation + k/2 edge switches."""
    g, half = nx.Graph(), k // 2
    core = list(range(half * half))
    nxt = len(core)
    edges = []
    for _pod in range(k):
        aggs = list(range(nxt, nxt + half))
        edg = list(range(nxt + half, nxt + k))
        nxt += k
        for j, a in enumerate(aggs):
            for c in range(half):
                g.add_edge(a, core[j * half + c])
            for e in edg:
                g.add_edge(a, e)
        edges += edg
    return _with_hosts(g, edges, per_edge or half)


def random_graph(switches: int, per_switch: int, seed: int):
    sw = nx.connected_watts_strogatz_graph(switches, 4, 0.3, seed=seed)
    return _with_hosts(sw, range(switches), per_switch)


def check_tree(graph, agents, tree, fanout):
    n = len(agents)
    assert set(tree.parent) == set(agents)
    assert sum(1 for p in tree.parent.values() if p is None) == 1
    assert tree.parent[tree.root] is None
    assert sum(len(c) for c in tree.children.values()) == n - 1
    for node, kids in tree.children.items():
        assert len(kids) <= fanout, node
        for kid in kids:
            assert tree.parent[kid] == node
    for node in agents:  # every agent reaches the root without cycles
        hops, cur = 0, node
        while tree.parent[cur] is not None:
            cur, hops = tree.parent[cur], hops + 1
            assert hops <= n
        assert cur == tree.root and hops == tree.levels[node]
    bound = math.ceil(math.log(n, fanout)) + 1 if fanout > 1 else n - 1
    assert tree.depth <= min_complete_depth(n, fanout) + 1 <= bound + (fanout == 1)
    return stretch_stats(graph, agents, tree)


def test_mininet_tree_depth2_fanout3_exact():
    g, agents = mininet_tree(2, 3)
    tree = build_overlay(g, agents, fanout=3)
    # Switch 1 is the core; hosts h1..h3 on switch 2, h4..h6 on 3, h7..h9 on 4.
    assert tree.root == "h1"
    # h2, h3 are nearest the root; h4 (another switch) takes the root's last slot
    # and its switch-mates; h7 goes under the shallowest open node at equal
    # distance (h2), and its switch-mates under h7: three levels, as L allows.
    assert tree.children == {
        "h1": ["h2", "h3", "h4"], "h2": ["h7"], "h3": [], "h4": ["h5", "h6"],
        "h5": [], "h6": [], "h7": ["h8", "h9"], "h8": [], "h9": []}
    assert tree.depth == 3
    assert tree.to_dict()["parent"]["h9"] == "h7"
    assert stretch_stats(g, agents, tree) == {"mean": 1.25, "max": 2.0}


def test_follows_the_network_with_room_to_spare():
    g, agents = mininet_tree(2, 3)
    tree = build_overlay(g, agents, fanout=4)
    assert tree.root == "h1"
    # Same-switch agents hang under a same-switch parent (2 hops), never a remote one.
    assert tree.children["h1"] == ["h2", "h3", "h4", "h7"]
    assert tree.parent["h5"] == "h4" and tree.parent["h6"] == "h4"
    assert tree.parent["h8"] == "h7" and tree.parent["h9"] == "h7"
    assert stretch_stats(g, agents, tree) == {"mean": 1.25, "max": 2.0}
    assert tree.depth == 2


def test_root_hint_unlocated_agents_and_edge_cases():
    g, agents = mininet_tree(2, 3)
    tree = build_overlay(g, agents, fanout=3, root_hint="h9")
    assert tree.root == "h1"  # equally central: the first name wins over the hint
    check_tree(g, agents, tree, 3)
    with_ghosts = {**agents, "x1": None, "x2": "00:00:00:00:ff:ff"}
    tree = build_overlay(g, with_ghosts, fanout=3)
    check_tree(g, with_ghosts, tree, 3)
    assert tree.levels["x1"] >= 1 and tree.levels["x2"] >= 1
    assert build_overlay(g, {}, fanout=3).root is None
    only_ghosts = build_overlay(g, {"b": None, "a": None, "c": None}, fanout=1)
    assert only_ghosts.root == "a" and only_ghosts.children == {"a": ["b"], "b": ["c"], "c": []}
    with pytest.raises(ValueError, match="fanout 0 must be at least 1"):
        build_overlay(g, agents, fanout=0)


def test_min_complete_depth():
    assert [min_complete_depth(n, 2) for n in (1, 2, 3, 4, 7, 8, 15, 16)] == \
        [0, 1, 1, 2, 2, 3, 3, 4]
    assert min_complete_depth(5, 1) == 4
    assert min_complete_depth(1000, 10) == 3


@pytest.mark.parametrize("fanout", [2, 3, 4, 8])
@pytest.mark.parametrize("make,mean_bound", [
    (lambda: mininet_tree(2, 3), 2.0),
    (lambda: mininet_tree(3, 3), 2.0),
    (lambda: mininet_tree(4, 4, per_leaf=2), 2.0),
    (lambda: fat_tree(4), 2.0),
    (lambda: fat_tree(4, per_edge=8), 2.0),
    (lambda: linear(10), 3.0),
    (lambda: linear(60), 3.5),
    (lambda: random_graph(30, 1, seed=1), 2.0),
    (lambda: random_graph(50, 2, seed=2), 2.0),
    (lambda: random_graph(100, 3, seed=3), 2.0),
    (lambda: random_graph(200, 5, seed=4), 2.0),
], ids=["tree2x3", "tree3x3", "tree4x4", "fattree4", "fattree4-dense", "linear10",
        "linear60", "rand30", "rand100", "rand300", "rand1000"])
def test_generated_topologies(make, mean_bound, fanout):
    g, agents = make()
    tree = build_overlay(g, agents, fanout=fanout)
    stats = check_tree(g, agents, tree, fanout)
    assert stats["mean"] <= mean_bound, stats
    # Deterministic: same input in another dict order gives the same tree.
    items = list(agents.items())
    random.Random(7).shuffle(items)
    again = build_overlay(g, dict(items), fanout=fanout)
    assert again.to_dict() == tree.to_dict()


def test_stretch_is_minimal_when_fanout_allows():
    # With a large fan-out every agent can take its nearest placed agent.
    g, agents = fat_tree(4)
    tree = build_overlay(g, agents, fanout=16)
    assert tree.depth <= 2
    check_tree(g, agents, tree, 16)


def test_fanout_one_is_a_chain():
    g, agents = mininet_tree(2, 2)
    tree = build_overlay(g, agents, fanout=1)
    check_tree(g, agents, tree, 1)
    assert tree.depth == len(agents) - 1


def test_the_root_is_the_most_central_agent_first_by_name_whatever_the_hint():
    g, agents = mininet_tree(2, 3)
    # All nine hosts have eccentricity 4: the first in natural order, whatever the hint
    # (the current root) or the order agents came in
    for hint in (None, "h6", "h9"):
        assert build_overlay(g, agents, fanout=3, root_hint=hint).root == "h1"
    reordered = dict(reversed(list(agents.items())))
    assert build_overlay(g, reordered, fanout=3).root == "h1"
    # the README's walk-through: agents on h2..h9 (h1 runs the examples) give h2,
    # the original's root, though h4..h9 have a smaller distance sum
    walk = {n: m for n, m in agents.items() if n != "h1"}
    assert build_overlay(g, walk, fanout=4, root_hint="h5").root == "h2"
    # natural order: h2 before h10
    assert natural_key("h2") < natural_key("h10") < natural_key("h11")
    # On a line the ends are worse than the middle: the hint gives way.
    g, agents = linear(5)
    assert build_overlay(g, agents, fanout=2, root_hint="h1").root == "h3"
    assert build_overlay(g, agents, fanout=2, root_hint="h3").root == "h3"
    # An unlocated hint gives way to a located centre, but not to nobody.
    assert build_overlay(g, {**agents, "x": None}, fanout=2, root_hint="x").root == "h3"
    assert build_overlay(g, {"x": None, "y": None}, fanout=2, root_hint="y").root == "y"
