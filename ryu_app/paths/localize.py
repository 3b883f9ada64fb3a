"""Which link drops the probes: per-link loss and added latency from pair results.

Input per report interval: observations, each with ``sent`` and ``lost``
probes in that interval and an RTT median, and the links it crosses
(``ryu_app.paths.routes``). ``observations`` makes them from a result's
``pairs``: a probe's loss is known per direction (``lost_fwd`` on the way to
the peer, ``lost_rev`` on the way back, from the reflector's echoed count),
so each pair gives two observations, the forward path's links with ``sent``
and ``lost_fwd``, the reverse path's with the probes that reached the peer
and ``lost_rev``; without that split, one round-trip observation that
crosses a link once per direction using it. The last ``window`` intervals
of every observation are summed (one whose path changed starts again: its
old counts came over other links).

**Method: greedy maximum-likelihood single-link explanations.** With the
pairs' counts ``(S_p, L_p)``, the hypothesis "link l alone loses, at rate
q_l" has the maximum-likelihood rate ``q_l = sum L_p / sum S_p`` over the
pairs crossing l, and its log-likelihood ratio against "no link loses more
than the background rate p0" is

    G_l = sum_p [ L_p ln(q_l / p0) + (S_p - L_p) ln((1 - q_l) / (1 - p0)) ]

(0 when q_l <= p0). Pairs not crossing l have the same likelihood under both,
so the G_l of different links compare directly. Treating the hypotheses as
a Bayesian model choice with a prior weight ``e^prior`` on "no fault", link
l's ``confidence`` is ``e^G_l / (e^prior + sum_k e^G_k)``. The best link is a
suspect when its confidence reaches ``min_confidence`` and its rate
``min_loss``; its expected losses (``q_l S_p``) are then taken off the pairs
crossing it and the search repeats (up to ``max_suspects``), so several
faulty links are found one by one. A suspect stays one while its confidence
is at least ``keep_confidence`` (hysteresis); one no pair crosses any more
(traffic moved off it) keeps its state, since no evidence is not a recovery.
A link whose latest interval alone rejects its window's rate by the prior's
odds (log-likelihood ratio below ``-prior``) has recovered: it is cleared at
once (not a window later) and not raised again on the window's old losses,
which count as explained.

Every other link's ``loss`` is the smallest loss of the pairs crossing it: a
link cannot lose more than any path through it does, so a link crossed by a
clean pair reads 0 (boolean tomography's rule, as a bound). Its
``latency_ms`` is likewise the smallest rise of a crossing pair's RTT median
above that pair's own lowest median of the last ``baseline`` intervals.

Trade-offs (docs/design.md, "Path health"): 007 votes each lost flow's blame
evenly over its path's links and ranks by votes; cheap and needs no model,
but blame spreads to every link a lossy path shares, and it gives a rank,
not a rate or a confidence. Boolean tomography (NetBouncer) marks every link
of a clean path good and the remaining ones of lossy paths bad; it is exact
with noiseless good/bad paths but a single background drop flips a path, so
it needs thresholds and gives no rate. Least squares over ``-ln(1 - loss)``
per path gives every link a rate but is under-determined with few paths per
link and spreads a fault over collinear links (NetBouncer adds a
regularizer for that). The likelihood test here weighs the number of probes
(a 1% rate on 2,000 probes is evidence, on 50 it is not), yields a rate and a
confidence, and refuses to choose between links that the pairs cannot tell
apart (their confidence splits, none reaches ``min_confidence``) instead of
naming a wrong one; its cost is one pass over the links per suspect.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ryu_app.paths.routes import LinkKey, link_dict

WINDOW = 2            # report intervals of evidence
BASE_LOSS = 1e-3      # background loss of a healthy path (p0)
PRIOR = 7.0           # log prior weight of "no fault" (e^7 ~ 1100)
MIN_CONFIDENCE = 0.9
KEEP_CONFIDENCE = 0.5
MIN_LOSS = 0.003
MAX_SUSPECTS = 8
BASELINE = 30         # intervals of RTT medians a pair's baseline is the lowest of

Pair = tuple[str, ...]  # (src, dst) or (src, dst, direction)


def observations(rows: Iterable[dict[str, Any]], paths: Mapping[tuple[str, str], Any]
                 ) -> tuple[list[dict[str, Any]], dict[Pair, Any]]:
    """A result's ``pairs`` rows and their ``PairPath``s (by (src, dst); a pair without
    one is skipped) -> the localizer's rows and paths (see the module docstring)."""
    out: list[dict[str, Any]] = []
    links: dict[Pair, Any] = {}
    key: Pair
    for row in rows:
        path = paths.get((str(row.get("src")), str(row.get("dst"))))
        if path is None:
            continue
        src, dst = path.src, path.dst
        fwd, rev = path.fwd_links, path.rev_links
        sent = max(0, int(row.get("sent") or 0))
        lost = min(sent, max(0, int(row.get("lost") or 0)))
        if isinstance(row.get("lost_fwd"), int):
            lost_fwd = min(lost, max(0, row["lost_fwd"]))
            directions: tuple[tuple[Pair, int, int, tuple], ...] = (
                ((src, dst, "fwd"), sent, lost_fwd, fwd),
                ((src, dst, "rev"), sent - lost_fwd, lost - lost_fwd, rev))
            for key, n, lo, hop in directions:
                out.append({"key": key, "sent": n, "lost": lo, "rtt_ms": row.get("rtt_ms")})
                links[key] = hop  # a path crosses a link once
        else:
            key = (src, dst)
            out.append({"key": key, "sent": sent, "lost": lost, "rtt_ms": row.get("rtt_ms")})
            counts: dict[LinkKey, int] = {}
            for link in (*fwd, *rev):
                counts[link] = counts.get(link, 0) + 1
            links[key] = counts
    return out, links


@dataclass
class LinkState:
    """One link's figures after an interval."""

    key: LinkKey
    pairs: int = 0
    loss: float = 0.0
    latency_ms: float = 0.0
    confidence: float = 0.0
    suspect: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**link_dict(self.key), "loss": round(self.loss, 6),
                "latency_ms": round(self.latency_ms, 3), "pairs": self.pairs,
                "suspect": self.suspect, "confidence": round(self.confidence, 4)}


@dataclass
class Assessment:
    """The result of one interval: every link, and the suspect transitions."""

    links: list[LinkState]
    raised: list[LinkState] = field(default_factory=list)   # became suspects
    cleared: list[LinkState] = field(default_factory=list)  # stopped being suspects

    def suspects(self) -> list[LinkState]:
        return [s for s in self.links if s.suspect]


def _gain(data: list[tuple[int, float, int]], p0: float) -> tuple[float, float]:
    """(rate per crossing, log-likelihood ratio) of the one-link hypothesis over the
    pairs crossing it: ``(sent, lost, crossings)`` each."""
    trials = sum(sent * c for sent, _, c in data)
    if trials <= 0:
        return 0.0, 0.0
    q = min(sum(lost for _, lost, _ in data) / trials, 1.0)
    if q <= p0:
        return q, 0.0
    return q, _loglik(data, q, p0)


def _loglik(data: list[tuple[int, float, int]], q: float, p0: float) -> float:
    """Log-likelihood ratio of "the link loses q per crossing" against background p0."""
    g = 0.0
    for sent, lost, c in data:
        p = max(1.0 - (1.0 - q) ** c, p0)
        g += lost * math.log(p / p0)
        if p < 1.0:
            g += (sent - lost) * math.log((1.0 - p) / (1.0 - p0))
    return g


def _posteriors(gains: dict[LinkKey, float], prior: float) -> dict[LinkKey, float]:
    top = max([prior, *gains.values()])
    norm = math.exp(prior - top) + sum(math.exp(g - top) for g in gains.values())
    return {k: math.exp(g - top) / norm for k, g in gains.items()}


class Localizer:
    """Per-task localization state (windows, baselines, suspects); see module docstring."""

    def __init__(self, window: int = WINDOW, base_loss: float = BASE_LOSS,
                 prior: float = PRIOR, min_confidence: float = MIN_CONFIDENCE,
                 keep_confidence: float = KEEP_CONFIDENCE, min_loss: float = MIN_LOSS,
                 max_suspects: int = MAX_SUSPECTS, baseline: int = BASELINE) -> None:
        self.window, self.base_loss, self.prior = window, base_loss, prior
        self.min_confidence, self.keep_confidence = min_confidence, keep_confidence
        self.min_loss, self.max_suspects, self.baseline = min_loss, max_suspects, baseline
        self._counts: dict[Pair, deque] = {}
        self._rtts: dict[Pair, deque] = {}
        self._paths: dict[Pair, dict[LinkKey, int]] = {}
        self._given: dict[Pair, Any] = {}  # each observation's links as given
        self.active: dict[LinkKey, LinkState] = {}

    def update(self, pairs: Iterable[dict[str, Any]],
               paths: Mapping[Pair, Mapping[LinkKey, int] | Iterable[LinkKey]],
               links: Iterable[LinkKey] = ()) -> Assessment:
        """Take one interval's observations (``key``, or ``src`` and ``dst``; ``sent``,
        ``lost``, optional ``rtt_ms.p50``) and each one's links, with how many times it
        crosses each (a set: once); ``links`` adds links none crosses (listed with
        ``pairs: 0``)."""
        added: dict[Pair, float] = {}
        for row in pairs:
            pair = tuple(row["key"]) if "key" in row else (row["src"], row["dst"])
            given = paths.get(pair)
            if given is None:
                continue
            old = self._given.get(pair)
            moved = False
            if old is not given and old != given:  # new or moved: its counts are elsewhere
                moved = pair in self._given
                self._given[pair] = given
                self._paths[pair] = (dict(given) if isinstance(given, Mapping)
                                     else dict.fromkeys(given, 1))
                self._counts[pair] = deque(maxlen=self.window)
                self._rtts[pair] = deque(maxlen=self.baseline)
            if moved:
                continue  # this interval's probes crossed the old path and the new one
            sent = max(0, int(row.get("sent") or 0))
            lost = min(sent, max(0, int(row.get("lost") or 0)))
            self._counts[pair].append((sent, lost))
            p50 = (row.get("rtt_ms") or {}).get("p50")
            if isinstance(p50, int | float) and sent > lost:
                rtts = self._rtts[pair]
                if rtts:
                    added[pair] = max(0.0, float(p50) - min(rtts))
                rtts.append(float(p50))
        for pair in [p for p in self._paths if p not in paths]:
            del self._paths[pair], self._counts[pair], self._rtts[pair], self._given[pair]
        return self._assess(added, links)

    def _assess(self, added: dict[Pair, float], extra: Iterable[LinkKey]) -> Assessment:
        totals = {p: (sum(s for s, _ in c), sum(lo for _, lo in c))
                  for p, c in self._counts.items()}
        crossing: dict[LinkKey, list[Pair]] = {}
        for pair, path in self._paths.items():
            if totals[pair][0] > 0:
                for link in path:
                    crossing.setdefault(link, []).append(pair)
        states = {k: LinkState(k) for k in extra}
        for link, plist in crossing.items():
            state = states.setdefault(link, LinkState(link))
            state.pairs = len({p[:2] for p in plist})  # pairs, not directions
            state.loss = min(totals[p][1] / totals[p][0] for p in plist)
            state.latency_ms = min((added.get(p, 0.0) for p in plist), default=0.0)
        explained: set[Pair] = set()
        suspects: dict[LinkKey, LinkState] = {}
        # only a link some lossy observation crosses can explain anything
        lossy = {link: plist for link, plist in crossing.items()
                 if any(totals[p][1] for p in plist)}
        # a link whose window is lossy but whose latest interval alone rejects the
        # window's rate (by the prior's odds) has recovered: the losses are over, so
        # it is no suspect (not kept, not raised again) and its pairs' old losses are
        # explained, not put on a neighbour
        recovered = set()
        for link, plist in lossy.items():
            q, _ = _gain([(*totals[p], self._paths[p][link]) for p in plist], self.base_loss)
            latest = [(*self._counts[p][-1], self._paths[p][link]) for p in plist
                      if self._counts[p]]
            if q > self.base_loss and _loglik(latest, q, self.base_loss) < -self.prior:
                recovered.add(link)
                explained.update(plist)
        for _ in range(self.max_suspects):
            gains, rates = {}, {}
            for link, plist in lossy.items():
                if link in suspects or link in recovered:
                    continue
                q, g = _gain([(*totals[p], self._paths[p][link]) for p in plist
                              if p not in explained], self.base_loss)
                if g > 0:
                    gains[link], rates[link] = g, q
            if not gains:
                break
            # each further fault is less likely a priori than the one before
            post = _posteriors(gains, self.prior * (1 + len(suspects)))
            for link, conf in post.items():
                if not suspects and link in states:
                    states[link].confidence = conf
            best = max(post, key=lambda k: (post[k], rates[k]))
            need = self.keep_confidence if best in self.active else self.min_confidence
            if post[best] < need or rates[best] < self.min_loss:
                break
            state = states[best]
            state.suspect, state.loss, state.confidence = True, rates[best], post[best]
            suspects[best] = state
            # its pairs are explained: a further suspect needs evidence of its own
            explained.update(crossing[best])
            lossy = {link: [p for p in plist if p not in explained]
                     for link, plist in lossy.items()}
            lossy = {link: plist for link, plist in lossy.items()
                     if any(totals[p][1] for p in plist)}
        out = Assessment(sorted(states.values(), key=_rank))
        for link, old in list(self.active.items()):
            if link in suspects:
                continue
            if link not in crossing:  # nobody measures it now: keep what was known
                kept = states.setdefault(link, LinkState(link))
                kept.suspect, kept.loss, kept.confidence = True, old.loss, old.confidence
                if kept not in out.links:
                    out.links.append(kept)
                continue
            del self.active[link]
            out.cleared.append(states[link])
        for link, state in suspects.items():
            if link not in self.active:
                out.raised.append(state)
            self.active[link] = state
        out.links.sort(key=_rank)
        return out


def _rank(state: LinkState) -> tuple:
    return (not state.suspect, -state.confidence, -state.loss, repr(state.key))
