"""CLI rendering of path health: ``measure paths ID``, ``measure links``, ``measure
diagnose A B`` (tables over ``GET tasks/{id}/paths``, ``GET links``, ``GET diagnose``)."""

from __future__ import annotations

from typing import Any

from measure_cli.render import render_table


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{100 * v:.2f}%"


def _ms(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:.2f}"


def _hops(hops: list[dict] | None) -> str:
    if not hops:
        return "-"
    return " ".join(f"s{int(h['switch'], 16):x}:{h['in_port']}>{h['out_port']}" for h in hops)


def render_paths(reply: dict) -> str:
    """Each pair of a path_health task: loss, RTT quantiles, its route, suspects on it."""
    rows = []
    for p in reply.get("pairs") or []:
        rtt = p.get("rtt_ms") or {}
        rows.append([p.get("src"), p.get("dst"), p.get("sent"), p.get("lost"),
                     _pct(p.get("loss")), _ms(rtt.get("p50")), _ms(rtt.get("p99")),
                     _hops(p.get("forward")), ", ".join(p.get("suspects") or []) or "-"])
    head = f"task {reply.get('task_id')}  pairs {len(rows)}"
    if not rows:
        return head + "\nno pairs measured yet"
    return head + "\n" + render_table(["SRC", "DST", "SENT", "LOST", "LOSS", "RTT P50 MS",
                                       "RTT P99 MS", "ROUTE (switch:in>out)", "SUSPECT"], rows)


def render_links(reply: dict) -> str:
    """Every link's loss and latency estimate, suspects first."""
    rows = [[x.get("name"), "SUSPECT" if x.get("suspect") else "", _pct(x.get("loss")),
             _ms(x.get("latency_ms")), x.get("pairs"), f"{x.get('confidence') or 0:.2f}",
             x.get("task_id")] for x in reply.get("links") or []]
    if not rows:
        return "no links measured (no path_health task has a result yet)"
    return render_table(["LINK", "", "LOSS", "ADDED MS", "PAIRS", "CONFIDENCE", "TASK"], rows)


def render_diagnose(reply: dict) -> str:
    """The diagnosis in a few lines, a verdict first."""
    healthy = reply.get("healthy")
    verdict = {True: "HEALTHY", False: "UNHEALTHY", None: "UNKNOWN"}[healthy]
    return "\n".join([f"{reply.get('src')} -> {reply.get('dst')}: {verdict}",
                      *[f"  {line}" for line in reply.get("lines") or []]])
