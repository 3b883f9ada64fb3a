"""Checks every snapshot shares, whatever its kind.

A counter's or an elastic kind's snapshot (``wire/report.py``) and a health
kind's (``wire/paths.py``) both say where they come from: the agents they
cover and miss, when they were made and how old their oldest part is, and
the monitor's cost. A failed check is a ValueError naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from measure_model.fields import HOST_PATTERN, is_number

HOST_RE = re.compile(HOST_PATTERN)
MAX_HOSTS = 100_000  # names in a snapshot's covered or missing list
MAX_TIME = 1e15      # seconds since 1970


def need(cond: bool, message: str) -> None:
    """ValueError ``snapshot: message`` unless ``cond``."""
    if not cond:
        raise ValueError(f"snapshot: {message}")


def check_provenance(snap: dict[str, Any]) -> None:
    """``covered``/``missing`` (host names), ``generated_at``/``oldest`` (times or
    null) and ``monitor`` (an object), each optional."""
    for name in ("covered", "missing"):
        hosts = snap.get(name, [])
        need(isinstance(hosts, list) and len(hosts) <= MAX_HOSTS
             and all(isinstance(h, str) and HOST_RE.fullmatch(h) for h in hosts),
             f"{name} must be a list of host names")
    for name in ("generated_at", "oldest"):
        if snap.get(name) is not None:
            need(is_number(snap[name], 0, MAX_TIME), f"{name} must be a time")
    need(isinstance(snap.get("monitor", {}), dict), "monitor must be an object")
