"""SLoPS (the method of pathload, Jain and Dovrolis): the numbers of a probe.

Plain functions over numbers, tested with synthetic delay series; the
probe that sends the packets and collects their arrival times is
:mod:`host_agent.bandwidth.estimate`.

- One stream: relative one-way delays (arrival - send, minus the first: no
  clock synchronisation is needed) are cut into about sqrt(N) groups whose
  medians feed two trend statistics, PCT (the fraction of consecutive
  increases) and PDT (net rise over total variation): the stream is
  increasing (``I``), non-increasing (``N``) or grey (``G``); a lossy
  stream counts as increasing.
- One fleet (K streams at one rate): mostly increasing means the rate is
  above the available bandwidth, mostly flat below, else grey.
- The search (:class:`RateSearch`): a binary search between a lower bound
  and an upper one that starts from the capacity of a back-to-back train
  (``train_capacity_mbit``), with a grey region recorded separately.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

MAX_RATE_MBIT = 1000.0
MIN_RATE_MBIT = 0.1
PCT_INC, PCT_NONINC = 0.66, 0.54
PDT_INC, PDT_NONINC = 0.55, 0.45
FLEET_FRACTION = 0.65
LOSSY_STREAM = 0.1
SLOW_SENDER = 0.92  # a stream sent below this share of its rate says nothing


def relative_owds(send_ns: list[int], recv_ns: list[int]) -> list[float]:
    """One-way delays in microseconds relative to the first packet's."""
    if not send_ns:
        return []
    base = recv_ns[0] - send_ns[0]
    return [((r - s) - base) / 1000.0 for s, r in zip(send_ns, recv_ns, strict=True)]


def group_medians(owds: list[float]) -> list[float]:
    """Medians of about sqrt(N) consecutive groups (robust to single outliers)."""
    groups = max(2, int(len(owds) ** 0.5))
    size = len(owds) / groups
    return [statistics.median(owds[int(i * size):int((i + 1) * size)]) for i in range(groups)]


def pct_pdt(owds: list[float]) -> tuple[float, float]:
    """Pairwise comparison test and pairwise difference test on the delays."""
    med = group_medians(owds)
    diffs = [b - a for a, b in zip(med, med[1:], strict=False)]
    pct = sum(1 for d in diffs if d > 0) / len(diffs)
    total = sum(abs(d) for d in diffs)
    pdt = (med[-1] - med[0]) / total if total else 0.0
    return pct, pdt


def stream_trend(owds: list[float], loss: float = 0.0) -> str:
    """``I`` (increasing), ``N`` (non-increasing) or ``G`` (grey) for one stream."""
    if loss > LOSSY_STREAM:
        return "I"
    if len(owds) < 4:
        return "G"
    pct, pdt = pct_pdt(owds)
    pct_v = "I" if pct > PCT_INC else "N" if pct < PCT_NONINC else "G"
    pdt_v = "I" if pdt > PDT_INC else "N" if pdt < PDT_NONINC else "G"
    if "I" in (pct_v, pdt_v) and "N" not in (pct_v, pdt_v):
        return "I"
    if "N" in (pct_v, pdt_v) and "I" not in (pct_v, pdt_v):
        return "N"
    return "G"


def fleet_verdict(trends: list[str], sent: int | None = None) -> str:
    """``above`` (rate > available), ``below``, or ``grey`` for a fleet.

    ``trends`` are the usable streams out of ``sent``; a fleet with fewer
    than half of its streams usable is grey.
    """
    sent = len(trends) if sent is None else sent
    if not trends or len(trends) * 2 < sent:
        return "grey"
    if trends.count("I") >= FLEET_FRACTION * len(trends):
        return "above"
    if trends.count("N") >= FLEET_FRACTION * len(trends):
        return "below"
    return "grey"


def sent_rate_mbit(stream: dict[str, int], size: int) -> float:
    """The rate a stream was actually sent at (from the sender's clock)."""
    span = (stream["last_ns"] - stream["first_ns"]) / 1e9
    if stream["sent"] < 2 or span <= 0:
        return 0.0
    return (stream["sent"] - 1) * size * 8 / span / 1e6


def train_capacity_mbit(recv_ns: list[int], size: int) -> float:
    """Dispersion rate of the second half of a back-to-back train, Mbit/s."""
    tail = recv_ns[len(recv_ns) // 2:]
    if len(tail) < 2 or tail[-1] <= tail[0]:
        return 0.0
    return (len(tail) - 1) * size * 8 / ((tail[-1] - tail[0]) / 1e9) / 1e6


@dataclass
class RateSearch:
    """Binary search of the available bandwidth with a grey region (pathload).

    ``lo`` is the highest rate seen below the available bandwidth and ``hi``
    the upper bound: it starts from the capacity estimate, is trusted for
    bisection, and is probed itself before the search ends unless a fleet
    already showed a rate at or under it to be above. ``grey`` holds the
    rates with mixed verdicts; the available bandwidth varies within them.
    """

    hi: float
    max_rate: float = MAX_RATE_MBIT
    lo: float = 0.0
    hi_verified: bool = False
    grey: list[float] = field(default_factory=list)

    def resolution(self) -> float:
        return max(0.05 * self.hi, 0.2)

    def _narrow(self) -> bool:
        res = self.resolution()
        if not self.grey:
            return self.hi - self.lo <= res
        return min(self.grey) - self.lo <= res and self.hi - max(self.grey) <= res

    def next_rate(self) -> float:
        if self._narrow() and not self.hi_verified:
            return self.hi
        if not self.grey:
            return (self.lo + self.hi) / 2
        glo, ghi = min(self.grey), max(self.grey)
        if glo - self.lo >= self.hi - ghi:
            return (self.lo + glo) / 2
        return (ghi + self.hi) / 2

    def update(self, rate: float, verdict: str) -> None:
        if verdict == "sender_limited":  # this host cannot send faster: cap the search
            self.max_rate = min(self.max_rate, 0.95 * rate)
            self.hi, self.hi_verified = min(self.hi, self.max_rate), False
            self.lo = min(self.lo, self.max_rate)
            return
        if verdict == "above":
            if rate <= self.hi:
                self.hi, self.hi_verified = rate, True
            self.grey = [g for g in self.grey if g < rate]
            return
        if verdict == "below":
            self.lo = max(self.lo, rate)
            self.grey = [g for g in self.grey if g > rate]
        else:
            self.grey.append(rate)
        if rate >= self.hi:  # the bound was too low: widen it
            self.hi, self.hi_verified = min(self.max_rate, rate * 1.5), False

    def done(self) -> bool:
        return self.lo >= self.max_rate or (self.hi_verified and self._narrow())

    def estimate(self) -> float:
        """Middle of the grey region if there is one, else of the range."""
        if self.grey:
            return (min(self.grey) + max(self.grey)) / 2
        return (self.lo + self.hi) / 2
