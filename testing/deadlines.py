"""Deadline margins of a running overlay, read from every agent (Mininet tests, bench e2e).

Each agent's ``GET /agent/v1/overlay`` holds ``deadline_margin_s``: how long
before this node's deadline its children's recent reports arrived, per child
subtree height (``by_height``; negative: the report came after the deadline
and was left out of that interval), and ``report_timing_s``: when its own
recent reports went up, relative to their interval end. ``margins`` asks
every agent over the management network (signed with the agents' secret);
``margin_rows`` turns the answers into one table row per (agent, child
height), the distribution of report arrival relative to the deadline per
depth.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from bench.monitor import cpu_seconds
from measure_common.auth import load_or_create_secret, to_agent
from topo.launch import MeasureNetwork, mgmt_ip

# a dozen tasks of every measuring kind (report_interval is added by the caller)
LOAD_TASKS: list[dict[str, Any]] = [
    {"name": "load-hh", "kind": "heavy_hitters", "key": "src_dst", "increment": "bytes"},
    {"name": "load-count-src", "kind": "counter", "key": "src", "increment": "pkt"},
    {"name": "load-count-dst", "kind": "counter", "key": "dst", "increment": "bytes"},
    {"name": "load-scan", "kind": "port_scan", "key": "src_dport",
     "filter": {"proto": "tcp"}, "window": {"length": 2.0, "mode": "sliding"}},
    {"name": "load-flows", "kind": "flows", "top_k": 20},
    {"name": "load-sizes", "kind": "flow_size", "key": "src_dst", "memory": 262144},
    {"name": "load-entropy", "kind": "entropy", "key": "src_dst", "memory": 262144},
    {"name": "load-card", "kind": "cardinality", "key": "five_tuple", "memory": 262144},
    {"name": "load-changers", "kind": "heavy_changers", "key": "src_dst", "memory": 262144},
    {"name": "load-spreaders", "kind": "superspreaders", "key": "src_dst", "memory": 262144},
    {"name": "load-victims", "kind": "ddos_victims", "key": "src_dst", "memory": 262144},
]


def margins(net: MeasureNetwork, agents: list[str]) -> dict[str, dict]:
    """Every agent's overlay view (``GET /agent/v1/overlay``); an agent that does not
    answer maps to ``{"error": ...}``."""
    secret, _ = load_or_create_secret(net.secret_file())
    out: dict[str, dict] = {}
    for name in agents:
        try:
            resp = requests.get(f"http://{mgmt_ip(name)}:8000/agent/v1/overlay", timeout=5,
                                auth=to_agent(secret, name))
            out[name] = resp.json() if resp.status_code == 200 else {
                "error": f"HTTP {resp.status_code}"}
        except (OSError, ValueError) as exc:
            out[name] = {"error": str(exc)}
    return out


def margin_rows(views: dict[str, dict]) -> list[list[str]]:
    """One row per (agent with children, child subtree height): reports, late, min, p5,
    p50 of the margin (s), and the agent's own reports' POST time after the interval end
    (median and maximum)."""
    rows = []
    for name, view in sorted(views.items(), key=lambda kv: int(kv[0].lstrip("h"))):
        spread = (view.get("deadline_margin_s") or {}).get("by_height") or {}
        timing = view.get("report_timing_s") or {}
        post = timing.get("post_at") or {}
        sent = (f"{post['p50']:.2f} / {post['max']:.2f}" if post else "-")
        if not spread:
            rows.append([name, "-", "0", "-", "-", "-", "-", sent])
        for height, s in sorted(spread.items()):
            rows.append([name, height, str(s["reports"]), str(s["late"]), f"{s['min']:.2f}",
                         f"{s['p5']:.2f}", f"{s['p50']:.2f}", sent])
    return rows


MARGIN_HEADER = ["agent", "child height", "reports", "late", "min s", "p5 s", "p50 s",
                 "own POST at p50 / max s"]


def print_margins(views: dict[str, dict]) -> None:
    """The margin table, plain text."""
    rows = [MARGIN_HEADER, *margin_rows(views)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(MARGIN_HEADER))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def cpu_use(net: MeasureNetwork) -> dict[str, tuple[float, float]]:
    """Per agent: (CPU seconds of the agent process, of its child processes: the
    monitors and workers) used so far."""
    return {name: (cpu_seconds(proc.pid), sum(cpu_seconds(c) for c in _children(proc.pid)))
            for name, proc in net.agents.items()}


def print_cpu(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
              seconds: float, interval: float) -> None:
    """CPU seconds per report interval of every agent and of its monitors between two
    ``cpu_use`` readings ``seconds`` apart, and the machine's load average."""
    per = interval / seconds
    cells = []
    for n in sorted(after, key=lambda a: int(a.lstrip("h"))):
        if n in before:
            own, kids = ((a - b) * per for a, b in zip(after[n], before[n], strict=True))
            cells.append(f"{n} {own:.2f}+{kids:.2f}")
    print(f"CPU s per {interval:g} s interval, agent+monitors: {', '.join(cells)}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
