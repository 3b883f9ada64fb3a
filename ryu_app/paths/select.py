"""The probe pairs of ``peers: auto``: every link covered by at least two pairs,
about ``per_host`` pairs per host instead of N - 1 (deTector-style).

deTector (ATC 2017) picks a probe matrix so that every link is crossed by
enough probe paths for a failure to be located, and keeps it small. Here the
paths are the controller's own (``ryu_app.paths.routes``), so the choice is a
greedy cover over them:

1. ``per_host`` rounds; in each, every host (in a seeded shuffled order) looks
   at ``candidates`` random peers it does not probe yet and takes the one
   whose round trip crosses the most links still covered fewer than ``cover``
   times (ties: the first drawn). Each host thus probes ``per_host`` peers and
   answers about as many, so its access link is crossed by about twice
   ``per_host`` pairs, and the far peers a random draw mostly yields spread
   the pairs over the core.
2. A repair pass adds, for every link seen on a candidate's path but still
   covered fewer than ``cover`` times, the candidates seen crossing it.

The result grows as N * ``per_host`` (N = 1,000 hosts: about 2,000 pairs,
not 999,000), is a pure function of its inputs and ``seed`` (every call on
the same hosts gives the same list), and is what the controller pushes to the
agents as the task's explicit pair list. A link no pair's path crosses
(forwarding sends no host pair's traffic over it) cannot be measured from the
hosts: it is listed with ``pairs: 0``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable

PER_HOST = 4
COVER = 2
CANDIDATES = 8

Pair = tuple[str, str]


def auto_pairs(hosts: Iterable[str], links_of: Callable[[str, str], Iterable[Hashable] | None],
               per_host: int = PER_HOST, cover: int = COVER, candidates: int = CANDIDATES,
               seed: int = 0) -> list[Pair]:
    """Choose probe pairs over ``hosts``; ``links_of(src, dst)`` gives the links of the
    pair's round trip (None: no path). Returns sorted (src, dst) pairs."""
    names = sorted(set(hosts))
    if len(names) < 2:
        return []
    rng = random.Random(seed)
    coverage: Counter = Counter()
    chosen: set[Pair] = set()
    crossing: dict[Hashable, list[Pair]] = {}
    cache: dict[Pair, frozenset] = {}

    def links(pair: Pair) -> frozenset:
        if pair not in cache:
            found = links_of(*pair)
            cache[pair] = frozenset(found) if found is not None else frozenset()
            for link in cache[pair]:
                seen = crossing.setdefault(link, [])
                if len(seen) < cover:
                    seen.append(pair)
        return cache[pair]

    def take(pair: Pair) -> None:
        chosen.add(pair)
        coverage.update(links(pair))

    order = list(names)
    for _ in range(min(per_host, len(names) - 1)):
        rng.shuffle(order)
        for src in order:
            best, best_gain = None, -1
            for _ in range(candidates):
                dst = names[rng.randrange(len(names))]
                if dst == src or (src, dst) in chosen:
                    continue
                gain = sum(cover - coverage[k] for k in links((src, dst))
                           if coverage[k] < cover)
                if gain > best_gain:
                    best, best_gain = (src, dst), gain
            if best is not None:
                take(best)
    for link, pairs in sorted(crossing.items(), key=lambda kv: repr(kv[0])):
        for pair in pairs:
            if coverage[link] >= cover:
                break
            if pair not in chosen:
                take(pair)
    return sorted(chosen)


def coverage_of(pairs: Iterable[Pair],
                links_of: Callable[[str, str], Iterable[Hashable] | None]) -> Counter:
    """How many of ``pairs`` cross each link."""
    out: Counter = Counter()
    for pair in pairs:
        out.update(links_of(*pair) or ())
    return out
