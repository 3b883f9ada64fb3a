"""The overlay tree over the live agents, computed from the physical topology.

Agents aggregate measurement reports along a tree: each agent merges its
children's reports with its own and sends one report to its parent; the
controller talks to the root only. The tree should

- follow the physical network: a child's parent is near it in hops, so
  report traffic stays local;
- stay shallow: every level adds a report interval of latency;
- never give a node more than ``fanout`` children (the merge work and the
  fan-out of task pushes per agent are bounded).

Algorithm (``build_overlay``), deterministic for a given input:

1. *Distances.* An agent's host node hangs off one switch (its *anchor*).
   Hop distances between agents come from one BFS per distinct anchor over
   the graph, plus one hop at each end; agents on the same host are 0 apart.
   Unreachable pairs count as ``len(graph) + 1`` hops.
2. *Root.* The root is the located agent with the smallest eccentricity
   (largest hop distance to another agent); equally central agents break
   the tie by name in natural order (``h2`` < ``h10``), so the same agents
   on the same topology always give the same root, whatever the order they
   registered in (on the README's tree, agents h2..h9: h2, the original's
   root; h1..h9: h1). Without located agents the hint (the current root),
   or else the first name in that order, is the root.
3. *Depth budget.* ``D_min`` is the depth of a complete ``fanout``-ary tree
   holding all ``n`` agents; the tree may use ``L = D_min + 1`` levels. A
   node at depth ``L`` takes no children. Greedy attachment below can never
   run out of places: it fails only when every node above depth ``L`` is
   full, i.e. when the tree is complete to depth ``L``, which holds more
   than ``n`` nodes.
4. *Attachment.* Located agents are placed in order of (distance from the
   root, name). For each, the *eligible* parents are placed agents with
   spare fan-out above depth ``L``; let ``d`` be the distance to the nearest
   eligible one. Among eligible parents within ``d + 1`` hops, the one with
   the smallest depth wins, then the smaller distance, then the name. The
   one-hop slack lets a node skip a deeper neighbour for a shallower one
   that is practically as near, which keeps chains short on linear paths.
5. *Unlocated agents* (registered but not yet seen in the topology) go
   last, each under the shallowest node with spare fan-out (ties by name),
   i.e. breadth-first filling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Overlay:
    """A tree over agent names. ``parent[root]`` is None."""

    root: str | None
    parent: dict[str, str | None] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    depth: int = 0
    levels: dict[str, int] = field(default_factory=dict)
    fanout: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "depth": self.depth, "fanout": self.fanout,
                "parent": dict(sorted(self.parent.items())),
                "children": {k: list(v) for k, v in sorted(self.children.items())}}

    def same_tree(self, other: Overlay | None) -> bool:
        """True when root, parents and children are equal (depth follows)."""
        return other is not None and self.root == other.root and \
            self.parent == other.parent and self.children == other.children


def _bfs(adj: dict[Any, list[Any]], source) -> dict[Any, int]:
    dist = {source: 0}
    frontier = [source]
    hops = 0
    while frontier:
        hops += 1
        nxt = []
        for node in frontier:
            for nbr in adj[node]:
                if nbr not in dist:
                    dist[nbr] = hops
                    nxt.append(nbr)
        frontier = nxt
    return dist


def min_complete_depth(n: int, fanout: int) -> int:
    """Depth of the shallowest tree with ``n`` nodes and the given fan-out."""
    if n <= 1:
        return 0
    if fanout == 1:
        return n - 1
    depth, capacity, level = 0, 1, 1
    while capacity < n:
        level *= fanout
        capacity += level
        depth += 1
    return depth


class _Distances:
    """Hop distances between agent hosts via one BFS per anchor switch."""

    def __init__(self, graph, hosts: dict[str, Any]) -> None:
        self.unreachable = len(graph) + 1
        self.anchor: dict[str, Any] = {}
        self.offset: dict[str, int] = {}
        self.host = hosts
        for name, node in hosts.items():
            nbrs = list(graph.adj[node])
            if len(nbrs) == 1:
                self.anchor[name], self.offset[name] = nbrs[0], 1
            else:
                self.anchor[name], self.offset[name] = node, 0
        # Anchored hosts are leaves: leave them out of the BFS graph.
        leaves = {hosts[n] for n, off in self.offset.items() if off}
        adj = {n: [m for m in graph.adj[n] if m not in leaves] for n in graph if n not in leaves}
        self.tables = {a: _bfs(adj, a) for a in sorted(set(self.anchor.values()), key=str)}

    def centrality(self) -> dict[str, tuple[int, int]]:
        """(eccentricity, distance sum) of every located agent.

        Computed per anchor group (agents sharing a switch), which is exact
        except that two agents on one host count as two hops apart.
        """
        groups: dict[Any, list[str]] = {}
        for name in self.host:
            groups.setdefault((self.anchor[name], self.offset[name]), []).append(name)
        out: dict[str, tuple[int, int]] = {}
        for (anchor, off), members in groups.items():
            table = self.tables[anchor]
            ecc, total = 0, 0
            for (other, other_off), others in groups.items():
                hops = table.get(other)
                d = self.unreachable if hops is None else hops + off + other_off
                count = len(others) - (1 if other == anchor and other_off == off else 0)
                if count:
                    ecc, total = max(ecc, d), total + d * count
            for name in members:
                out[name] = (ecc, total)
        return out

    def __call__(self, a: str, b: str) -> int:
        if self.host[a] == self.host[b]:
            return 0
        hops = self.tables[self.anchor[a]].get(self.anchor[b])
        if hops is None:
            return self.unreachable
        return hops + self.offset[a] + self.offset[b]


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a name with its digit runs as numbers: h2 < h10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", name) if part)


def build_overlay(graph, agents: dict[str, Any], fanout: int,
                  root_hint: str | None = None) -> Overlay:
    """Compute the overlay tree (see the module docstring for the rule)."""
    if fanout < 1:
        raise ValueError(f"fanout {fanout} must be at least 1")
    names = sorted(agents)
    if not names:
        return Overlay(root=None, fanout=fanout)
    located = {n: agents[n] for n in names if agents[n] is not None and agents[n] in graph}
    dist = _Distances(graph, located)

    root = root_hint if root_hint in agents else min(names, key=natural_key)
    if located:
        scores = dist.centrality()
        root = min(located, key=lambda n: (scores[n][0], natural_key(n)))

    limit = min_complete_depth(len(names), fanout) + 1
    tree = Overlay(root=root, parent={root: None}, children={root: []}, levels={root: 0},
                   fanout=fanout)

    def attach(child: str, parent: str) -> None:
        tree.parent[child] = parent
        tree.children[parent].append(child)
        tree.children[child] = []
        tree.levels[child] = tree.levels[parent] + 1

    def open_slot(node: str) -> bool:
        return len(tree.children[node]) < fanout and tree.levels[node] < limit

    # Placed located agents that still have room; kept small by pruning full ones.
    open_located = [root] if root in located else []
    order = sorted((n for n in located if n != root),
                   key=lambda n: (dist(root, n) if root in located else 0, n))
    for name in order:
        open_located = [p for p in open_located if open_slot(p)]
        scored = [(dist(name, p), tree.levels[p], p) for p in open_located]
        if not scored:
            break  # root unlocated and full: handled with the unlocated agents
        nearest = min(s[0] for s in scored)
        parent = min(((lvl, d, p) for d, lvl, p in scored if d <= nearest + 1))[2]
        attach(name, parent)
        open_located.append(name)

    # Everything not yet placed goes breadth-first under the shallowest open slot.
    rest = [n for n in names if n not in tree.parent]
    for name in rest:
        parent = min((p for p in tree.parent if open_slot(p)),
                     key=lambda p: (tree.levels[p], p))
        attach(name, parent)
    for kids in tree.children.values():
        kids.sort()
    tree.depth = max(tree.levels.values())
    return tree


def agent_distances(graph, agents: dict[str, Any]) -> _Distances:
    """Hop-distance function over the located agents (used by tests and stats)."""
    return _Distances(graph, {n: h for n, h in agents.items() if h is not None and h in graph})


def stretch_stats(graph, agents: dict[str, Any], tree: Overlay) -> dict[str, float]:
    """Mean hop distance child->parent against child->nearest other agent."""
    dist = agent_distances(graph, agents)
    ratios = []
    for child, parent in tree.parent.items():
        if parent is None or child not in dist.host or parent not in dist.host:
            continue
        nearest = min(dist(child, o) for o in dist.host if o != child)
        ratios.append(dist(child, parent) / max(nearest, 1))
    if not ratios:
        return {"mean": 1.0, "max": 1.0}
    return {"mean": sum(ratios) / len(ratios), "max": max(ratios)}
