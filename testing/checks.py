"""Small assertions that also narrow types for the type checker."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TypeVar

T = TypeVar("T")


def some(value: T | None) -> T:
    """``value``, asserting it is not None (a lookup a test expects to succeed)."""
    assert value is not None, "expected a value, got None"
    return value


def binomial_slack(n: int, q: float, checks: int, false_failure: float = 0.002) -> float:
    """How far a count of ``n`` trials of probability ``q`` may stray from ``n * q`` when
    a run makes ``checks`` such checks and a correct run may fail one of them with
    probability ``false_failure`` at most (Bonferroni; normal approximation, plus one
    for a discrete count). At 99% per check, 36 checks fail a correct run one time in
    three."""
    z = NormalDist().inv_cdf(1 - false_failure / checks / 2)
    return z * math.sqrt(n * q * (1 - q)) + 1
