"""Which hosts probe which: a path_health task's ``peers`` as an explicit pair list.

Pure functions, used by the controller before it pushes the task (agents
get the resolved ``probe_targets``) and by the benchmark.

- ``all``: every unordered pair of hosts once (a probe measures the round
  trip, so A->B also tells about B->A), oriented so that each host sends
  about half of its pairs (``balanced_pairs``): the probing cost per host is
  (N-1)/2 pairs sent and about as many echoed.
- a list of hosts: every pair among them, the same way.
- ``auto`` (``cover_pairs``): a deTector-style greedy cover. Every link of
  every candidate pair's path (access links included, as the caller's
  ``links_of`` returns them) must be crossed by at least ``min_cover``
  chosen pairs (``AUTO_MIN_COVER``, 6); the greedy repeatedly takes the candidate pair that
  removes the most remaining deficit (ties: fewest pairs on its two hosts,
  then by name), until every coverable link is covered or nothing helps.
  Candidates are every pair up to ``FULL_CANDIDATES`` hosts, else each host
  with ``SAMPLED_PEERS`` others chosen by a seeded shuffle, so selection
  costs O(N log N) path look-ups. On a k-ary fat-tree every link is crossed
  twice by a number of pairs that grows about linearly with N (Pingmesh's
  full mesh grows as N^2).

``probe_load_bps`` is one host's probe traffic for a pair list, which the
controller compares with its probe budget (``peers: all`` on a large
network is refused with 400).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence

#: how many chosen pairs ``peers: auto`` makes cross each link: 2 lets a single fault be
#: told from its neighbours; 6 gives the localization enough probes to name a 1% lossy
#: access link within two 5-second intervals at 10 probes/s (``bench.paths``), for about
#: 3 pairs per host (N = 1,000: ~125 kbit/s of probes on the busiest host)
AUTO_MIN_COVER = 6
FULL_CANDIDATES = 64
SAMPLED_PEERS = 24
ETH_IP_UDP = 14 + 20 + 8  # bytes a probe carries besides its UDP payload

Pair = tuple[str, str]


def balanced_pairs(hosts: Iterable[str]) -> list[Pair]:
    """Every unordered pair of ``hosts`` once, each host the source of about half
    of its pairs (the round-robin orientation: i probes j when j - i is odd)."""
    names = sorted(set(hosts))
    out = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            out.append((a, b) if (j - i) % 2 == 1 else (b, a))
    return out


def _candidates(names: list[str], seed: int) -> list[Pair]:
    if len(names) <= FULL_CANDIDATES:
        return balanced_pairs(names)
    rng = random.Random(seed)
    seen: set[frozenset[str]] = set()
    out: list[Pair] = []
    for a in names:
        others = [b for b in names if b != a]
        for b in rng.sample(others, min(SAMPLED_PEERS, len(others))):
            key = frozenset((a, b))
            if key not in seen:
                seen.add(key)
                out.append((a, b))
    return out


def cover_pairs(hosts: Iterable[str], links_of: Callable[[str, str], Sequence[Hashable]],
                min_cover: int = 2, seed: int = 1) -> list[Pair]:
    """A small set of pairs crossing every link of the candidates' paths at least
    ``min_cover`` times (see the module docstring). ``links_of(a, b)`` is the path's
    links (any hashable; an undirected link should be one value for both directions)."""
    names = sorted(set(hosts))
    paths = {pair: tuple(dict.fromkeys(links_of(*pair))) for pair in _candidates(names, seed)}
    crossing: Counter[Hashable] = Counter(link for links in paths.values() for link in links)
    need = {link: min(min_cover, n) for link, n in crossing.items()}  # coverable at best
    load: Counter[str] = Counter()
    chosen: list[Pair] = []

    def gain(pair: Pair) -> int:
        return sum(1 for link in paths[pair] if need[link] > 0)

    heap = [(-gain(p), 0, p) for p in paths]
    heapq.heapify(heap)
    while heap and any(v > 0 for v in need.values()):
        neg, _, pair = heapq.heappop(heap)
        now = gain(pair)
        if now == 0:
            continue
        tie = load[pair[0]] + load[pair[1]]
        if heap and (-now, tie) > heap[0][:2]:  # stale: re-rank it (lazy greedy)
            heapq.heappush(heap, (-now, tie, pair))
            continue
        chosen.append(pair)
        load.update(pair)
        for link in paths[pair]:
            if need[link] > 0:
                need[link] -= 1
    return sorted(chosen)


def resolve_peers(peers: str | Sequence[str], hosts: Iterable[str],
                  links_of: Callable[[str, str], Sequence[Hashable]] | None = None,
                  min_cover: int = AUTO_MIN_COVER) -> list[Pair]:
    """The (src, dst) pairs of a ``peers`` value over the known ``hosts`` (names)."""
    if peers == "auto":
        if links_of is None:
            raise ValueError("peers auto needs the paths (links_of)")
        return cover_pairs(hosts, links_of, min_cover)
    if peers == "all":
        return balanced_pairs(hosts)
    return balanced_pairs(peers)


def probe_load_bps(pairs: Iterable[Pair], rate: float, payload: int) -> dict[str, float]:
    """Each host's probe traffic in bits/s in one direction (what it sends: its own
    probes and the echoes of the probes it receives)."""
    per_pair = rate * (payload + ETH_IP_UDP) * 8
    out: Counter[str] = Counter()
    for a, b in pairs:
        out[a] += 1
        out[b] += 1
    return {h: n * per_pair for h, n in out.items()}
