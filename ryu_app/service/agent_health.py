"""Each agent's health as the controller sees it, for the dashboard and ``/metrics``.

The registry knows whether an agent is up (heartbeats); what its packet
monitor does (restarts, packets counted, packets missed) only the agent
knows, in ``GET {url}/agent/v1/health``. ``AgentHealth.view(now)``
answers at once from what it knows, and when that is older than ``ttl``
seconds starts a refresh in the background: every live agent is asked,
concurrently (the service's runner: green threads under Ryu), through the
service's HTTP client, with a short timeout. Prometheus scraping every
second and a dashboard polling every two seconds cost at most one round of
requests per ``ttl``, and neither ever waits for an agent. An agent that
does not answer is listed ``reachable: false`` with the error and keeps its
last known monitor figures.

The agent's health carries ``monitor: {restarts, crash_looping, packets,
missed, ...}`` (docs/design.md, "Health, cost and version"); while that
object holds only some of them, ``monitor_figures`` takes the others from
the older fields: ``restarts``, ``monitors[].packets`` and the unmeasured
packets of the monitor ``gaps``.
"""

from __future__ import annotations

import threading
from typing import Any

from measure_common.httpclient import Transport
from measure_common.runner import Runner

DEFAULT_TTL = 2.0
DEFAULT_TIMEOUT = 1.0


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def monitor_figures(health: Any) -> dict[str, Any]:
    """``restarts``, ``packets``, ``missed``, ``crash_looping`` from an agent's health.

    Each figure comes from the ``monitor`` object when it holds it, else from
    the older fields (``restarts``, ``monitors[].packets``, the unmeasured
    packets of ``gaps``, ``status``).
    """
    if not isinstance(health, dict):
        return {"restarts": None, "packets": None, "missed": None, "crash_looping": None}
    found = health.get("monitor")
    mon: dict[str, Any] = found if isinstance(found, dict) else {}
    monitors = [m for m in health.get("monitors") or [] if isinstance(m, dict)]
    counts = [c for c in (_count(m.get("packets")) for m in monitors) if c is not None]
    gaps = [g for g in health.get("gaps") or [] if isinstance(g, dict)]
    unmeasured = [u for u in (_count(g.get("unmeasured_packets_max")) for g in gaps)
                  if u is not None]
    return {
        "restarts": _count(mon["restarts"] if "restarts" in mon else health.get("restarts")),
        "packets": _count(mon["packets"]) if "packets" in mon else (
            sum(counts) if counts else None),
        "missed": _count(mon["missed"]) if "missed" in mon else sum(unmeasured),
        "crash_looping": bool(mon["crash_looping"]) if "crash_looping" in mon
        else health.get("status") == "degraded",
    }


class AgentHealth:
    """Cached health of every registered agent (see module docstring)."""

    def __init__(self, registry: Any, http: Transport, runner: Runner,
                 ttl: float = DEFAULT_TTL, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.registry, self.http, self.runner = registry, http, runner
        self.ttl, self.timeout = ttl, timeout
        self._known: dict[str, dict[str, Any]] = {}
        self._checked = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()

    def _fetch(self, name_url: tuple[str, str]) -> tuple[str, dict[str, Any]]:
        name, url = name_url
        try:
            status, body = self.http.request("GET", f"{url}/agent/v1/health",
                                             timeout=self.timeout)
        except (ConnectionError, OSError) as exc:
            return name, {"reachable": False, "error": str(exc)[:200]}
        if status != 200 or not isinstance(body, dict):
            return name, {"reachable": False, "error": f"health: HTTP {status}"}
        return name, {"reachable": True, "error": None, **monitor_figures(body)}

    def refresh(self, now: float) -> None:
        """Ask every live agent now (``view`` starts this once per ``ttl``)."""
        try:
            live = sorted((n, a.url) for n, a in self.registry.agents.items() if a.up)
            answers = dict(self.runner.map(self._fetch, live))
            with self._lock:
                for name, answer in answers.items():
                    known = self._known.setdefault(name, {})
                    known.update(answer, checked_at=now)
                for name in [n for n in self._known if n not in self.registry.agents]:
                    del self._known[name]
        finally:
            self._refreshing = False

    def view(self, now: float) -> list[dict[str, Any]]:
        """One row per registered agent: name, up, reachable, monitor figures.

        Answers from what is known at once; when that is older than ``ttl`` a
        refresh is started in the background (the runner's ``submit``), so a
        scrape never waits for a slow agent.
        """
        if now - self._checked >= self.ttl and not self._refreshing:
            self._checked, self._refreshing = now, True
            self.runner.submit(lambda: self.refresh(now))
        rows = []
        with self._lock:
            for name, agent in sorted(self.registry.agents.items()):
                known = self._known.get(name, {})
                rows.append({"name": name, "up": agent.up, "url": agent.url,
                             "data_ip": agent.data_ip,
                             "reachable": known.get("reachable", False) if agent.up else False,
                             "restarts": known.get("restarts"),
                             "packets": known.get("packets"), "missed": known.get("missed"),
                             "crash_looping": known.get("crash_looping"),
                             "error": known.get("error") if agent.up else "down (no heartbeat)",
                             "checked_at": known.get("checked_at")})
        return rows
