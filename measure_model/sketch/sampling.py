"""Scaling sampled counts and the error bound that comes with them.

A task with ``sample`` p < 1 counts only the packets its capture rule
sampled (iptables ``statistic``). An estimate of a count is the sampled
count times 1/p. For ``random`` sampling each packet is kept independently
with probability p, so a true count N gives a sampled count n ~ Binomial(N,
p) and the estimate n/p has standard deviation sqrt(N (1 - p) / p); the
stated bound is ``Z`` (3.29) standard deviations, a 99.9% interval (the
true count falls outside it about once in a thousand results), computed
with the estimate in place of N. For ``nth`` sampling (one packet
in every round(1/p), counted per rule; the rate used is 1/round(1/p),
``effective_sample``) the estimate of the rule's total is off by less than
that many packets, deterministically.
"""

from __future__ import annotations

import math
from typing import Any

Z = 3.29


def effective_sample(sample: float, mode: str = "random") -> float:
    """The rate a capture rule really samples at: ``sample`` for random sampling,
    1/round(1/sample) for nth (one packet in every round(1/sample))."""
    if mode == "nth" and sample < 1:
        return 1 / nth_every(sample)
    return sample


def nth_every(sample: float) -> int:
    """nth sampling: count one packet in this many."""
    return max(1, round(1 / sample))


def scale(count: int | float, sample: float) -> float:
    """Estimate of a true count from a sampled one."""
    return count / sample


def error_bound(estimate: float, sample: float, mode: str = "random") -> float:
    """Half-width of the 99.9% interval (random) or the exact bound (nth) of ``estimate``."""
    if sample >= 1:
        return 0.0
    if mode == "nth":
        return 1 / sample
    return Z * math.sqrt(max(estimate, 1.0) * (1 - sample) / sample)


def describe(sampled_packets: int, sample: float, mode: str = "random") -> dict:
    """What a sampled result says about itself: rate, mode, estimate and bound."""
    estimate = scale(sampled_packets, sample)
    bound = error_bound(estimate, sample, mode)
    return {"probability": sample, "mode": mode, "sampled_packets": sampled_packets,
            "packets_estimate": round(estimate), "packets_bound": round(bound, 1),
            "relative_bound": round(bound / estimate, 4) if estimate else None}


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return round(value * factor)


def _scaled_window(window: Any, factor: float) -> Any:
    if not isinstance(window, dict):
        return window
    out = dict(window)
    if isinstance(window.get("counts"), dict):
        out["counts"] = {k: _scaled(v, factor) for k, v in window["counts"].items()}
    if isinstance(window.get("previous"), dict):
        out["previous"] = _scaled_window(window["previous"], factor)
    return out


def scale_result(result: dict, sample: float, mode: str = "random") -> dict:
    """A result (global or one host's) with its counts scaled by 1/sample and a
    ``sampled`` section (:func:`describe`); unchanged when ``sample`` is 1.

    Scaled: ``packets``, ``bytes``, ``total``, ``heavy_hitters``, ``top_k`` and
    window counts. Distinct-key estimates and scan port sets are not scaled
    (sampling hides keys it never saw; those stay lower bounds)."""
    sample = effective_sample(sample, mode)
    if sample >= 1:
        return result
    factor = 1 / sample
    out = dict(result)
    for name in ("packets", "bytes", "total"):
        if name in out:
            out[name] = _scaled(out[name], factor)
    if isinstance(out.get("heavy_hitters"), dict):
        out["heavy_hitters"] = {k: _scaled(v, factor) for k, v in out["heavy_hitters"].items()}
    if isinstance(out.get("top_k"), list):
        out["top_k"] = [[kv[0], _scaled(kv[1], factor)] if isinstance(kv, list | tuple)
                        and len(kv) == 2 else kv for kv in out["top_k"]]
    if "window" in out:
        out["window"] = _scaled_window(out["window"], factor)
    raw = result.get("packets")
    out["sampled"] = describe(int(raw) if isinstance(raw, int | float) else 0, sample, mode)
    return out
