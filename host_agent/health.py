"""An agent's health and monitoring cost, read from its monitors and capture rules.

``health(agent)`` asks every monitor process for its ``stats`` (packets,
CPU seconds, resident memory, per-sketch counts, flow caches and their
exporters) and combines them with the agent's own state into the
``GET /agent/v1/health`` object. Its ``monitor`` part is the cost object of
``measure_model/cost.py`` (also sent in heartbeats and reports):

- ``cpu_seconds``: user + system time of the monitor processes since they
  started; ``cpu_seconds_per_s``: its rate over the last interval of at
  least ``COST_INTERVAL`` seconds between calls (``None`` until known, and
  again after a monitor restarted from zero), kept by :class:`CostMeter`;
- ``missed``: packets the capture rules matched since counting (re)started
  that no monitor counted (fail-open on a full queue, queue bypass while no
  monitor was bound), ``None`` without capture rules;
- ``crash_looping``: the monitors keep dying (``crash_loop.py``); the
  status is then ``degraded``.

``export_problems`` lists the flow exporters that had errors (an
unreachable collector, a name that does not resolve): reported, never fatal.
"""

from __future__ import annotations

import os
from typing import Any

from host_agent.monitor.commands import Stats
from measure_model.version import __version__

#: open reads (health, a counter GET) reuse iptables rule counters this old (seconds)
RULES_MAX_AGE = 2.0

COST_INTERVAL = 2.0


class CostMeter:
    """CPU seconds per second of the monitors, over intervals of >= COST_INTERVAL."""

    def __init__(self) -> None:
        self.ref: tuple[float, float] | None = None
        self.rate: float | None = None

    def update(self, now: float, cpu: float) -> float | None:
        if self.ref is None or cpu < self.ref[1]:  # first call, or a monitor restarted
            self.ref, self.rate = (now, cpu), None
        elif now - self.ref[0] >= COST_INTERVAL:
            self.rate = round((cpu - self.ref[1]) / (now - self.ref[0]), 4)
            self.ref = (now, cpu)
        return self.rate


def _monitor_stats(agent: Any, errors: tuple[type[Exception], ...]
                   ) -> tuple[list[dict], dict[int, int], dict[str, list[dict]]]:
    """Per monitor info, packets counted per sketch, and flow caches per task."""
    mons: list[dict] = []
    seen: dict[int, int] = {}
    flows: dict[str, list[dict]] = {}
    for m in agent.monitors:
        alive = m.alive() if hasattr(m, "alive") else True
        info = {"queue": getattr(m, "queue", None), "pid": getattr(m, "pid", None),
                "alive": alive, "packets": None}
        if alive:
            try:
                stats = m.call(Stats())
                info.update(packets=stats["packets"], unmatched=stats["unmatched"],
                            batches=stats["batches"], cpu_seconds=stats.get("cpu_seconds"),
                            rss_bytes=stats.get("rss_bytes"), nflog=stats.get("nflog"),
                            ebpf=stats.get("ebpf"))
                for sid, (pk, _) in stats["seen"].items():
                    seen[int(sid)] = seen.get(int(sid), 0) + pk
                for sid, desc in (stats.get("flows") or {}).items():
                    sketch = agent.sketches.get(int(sid))
                    if sketch is not None:
                        flows.setdefault(str(sketch.task_id or sid), []).append(desc)
            except errors:
                info["alive"] = False
        mons.append(info)
    return mons, seen, flows


def _cost(agent: Any, mons: list[dict], seen: dict[int, int]) -> dict:
    now = agent.clock()
    cpu = sum(m.get("cpu_seconds") or 0.0 for m in mons)
    missed = None
    if agent.capture is not None:
        try:
            # an open read: rule counters at most RULES_MAX_AGE old (iptables-save is dear)
            rules = agent.capture.counters(max_age=RULES_MAX_AGE)
        except RuntimeError:
            rules = None
        if rules is not None:
            missed = sum(max(0, rules.get(s.id, (0, 0))[0] - s.base[0] - seen.get(s.id, 0))
                         for s in agent.sketches.values())
    return {"restarts": agent.restarts, "crash_looping": agent.crash_loop.looping(now),
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_s": agent.cost_meter.update(now, cpu),
            "rss_bytes": sum(m.get("rss_bytes") or 0 for m in mons),
            "packets": sum(m.get("packets") or 0 for m in mons), "missed": missed}


def health(agent: Any, errors: tuple[type[Exception], ...]) -> dict:
    """The agent's ``GET /agent/v1/health`` object (see the module docstring)."""
    mons, seen, flows = _monitor_stats(agent, errors)
    problems = [{"task": task, "collector": e["collector"], "errors": e["errors"],
                 "records_dropped": e["records_dropped"], "last_error": e["last_error"],
                 "last_error_at": e["last_error_at"]}
                for task, parts in sorted(flows.items()) for part in parts
                for e in part["exporters"] if e["errors"]]
    cost = _cost(agent, mons, seen)
    ok = all(m["alive"] for m in mons) and not cost["crash_looping"]
    return {"name": agent.name, "version": __version__, "status": "ok" if ok else "degraded",
            "monitor": cost, "flows": flows, "export_problems": problems,
            "uptime": agent.clock() - agent.started, "sketches": len(agent.sketches),
            "counters": sum(len(s.counters) for s in agent.sketches.values()),
            "tasks": sorted(agent.tasks), "memory_bytes": agent.memory_used(),
            "monitors": mons, "restarts": agent.restarts, "gaps": list(agent.gaps),
            "counting_since": agent.counting_since, "pid": os.getpid()}
