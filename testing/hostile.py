"""Hostile input values and valid task bodies, shared by the security and fuzz tests.

Every value here must be refused with a 4xx naming the field (or accepted
unchanged where it is legal); none may reach a shell, an iptables argument
or a file name. ``CANARIES`` are the files an injection would create.
"""

from __future__ import annotations

import math
from typing import Any

SHELL_STRINGS = [
    "; rm -rf /tmp/x",
    "$(touch /tmp/pwn)",
    "`touch /tmp/pwn`",
    "| touch /tmp/pwn",
    "&& touch /tmp/pwn",
    "10.0.0.1; touch /tmp/pwn",
    "10.0.0.1 -j ACCEPT",
    "INPUT -j ACCEPT",
    "--help",
    "-F",
    "a\nb",
    "10.0.0.1\r\nX-Injected: 1",
    "x\x00y",
    "../../etc/passwd",
    "%s%s%n",
    "{{7*7}}",
    "\u202etcp",          # right-to-left override
    "ｔｃｐ",               # fullwidth letters
    "１０.０.０.１",         # fullwidth digits
    "\udcff",             # lone surrogate
    "x" * 10_000,
    "",
    " ",
]
NUMBERS = [10 ** 400, 2 ** 64, -(2 ** 64), -1, 1e308, -1e308, math.nan, math.inf, -math.inf,
           True]
SHAPES = [{"a": {"b": {"c": [1, 2, {"d": None}]}}}, [[[[[]]]]], [1, "a"], {}]
HOSTILE = [*SHELL_STRINGS, *NUMBERS, *SHAPES]

#: Files an injection would create if any value reached a shell.
CANARIES = ["/tmp/x", "/tmp/pwn"]


def label(value: object) -> str:
    """A short printable test id for a hostile value."""
    text = ascii(value)
    return text if len(text) <= 24 else text[:21] + "..."


def nested(depth: int) -> object:
    """A JSON value nested ``depth`` levels deep (recursion-limit probe)."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


MEASURE: dict[str, Any] = {
    "name": "hh-1", "kind": "heavy_hitters",
    "filter": {"interface": "INPUT", "proto": "tcp", "src": "10.0.0.0/24", "dst": "10.0.0.5",
               "sport": 80, "dport": "8000:8100"},
    "key": "src", "increment": "pkt", "threshold": 0.05, "top_k": 10,
    "window": {"length": 1.0, "mode": "tumbling"}, "report_interval": 5,
    "sketch": {"width": 16384, "depth": 4, "seed": 1}, "scope": ["h2", "10.0.0.4"],
}
SCAN = {"name": "scan-1", "kind": "port_scan", "scan_ports": 20, "threshold_abs": 100}
BANDWIDTH = {"name": "bw-1", "kind": "bandwidth", "src": "h5", "dst": "h6", "method": "slops",
             "max_duration": 10, "max_bytes": 20_000_000}
