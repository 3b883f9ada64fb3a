"""Prometheus metrics of the controller: ``GET /metrics`` in the exposition format.

Two kinds of figures, kept apart:

- **state read at scrape time** by ``StateCollector`` (path health's families:
  ``ryu_app/rest/metrics_paths.py``) (a ``prometheus_client``
  custom collector): tasks and their latest global results, agents, the
  overlay. Nothing is copied into gauges between scrapes, so a deleted task
  or a forgotten agent disappears from the next scrape, and the figures are
  the ones the REST API and the dashboard show (``service.get_task``,
  ``service.results.latest``, ``AgentHealth.view``);
  The tick loop's failures and failing pushes come from ``service.health()``,
  the object ``GET /measure/v1/health`` answers with;
- **events counted as they happen** by ``Metrics``: REST requests (count and
  latency per route template, method and status).

Label cardinality is bounded by construction: per task at most
``MAX_KEYS`` heavy-hitter keys, ``MAX_KEYS`` top-k keys and ``MAX_KEYS``
scan sources (the largest values), tasks are bounded by the service's task
limit, agents by the registry's, and REST labels are route templates (the
handler name), never raw paths. Numeric fields of a result that no metric
below names (a new task kind's ``entropy``, say) appear as
``measure_task_result_value{field=...}``, so a new kind is exported without
touching this module.

Names follow the Prometheus conventions: a ``measure_`` prefix, base units
(``_seconds``, ``_bytes``), ``_total`` only on counters, ``_ratio`` for
fractions. The task totals (``packets``, ``bytes``, ``total`` of a result)
count from the task's start and only grow while its coverage does not
shrink, so they are counters; a result that lost an agent makes them drop,
which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ryu_app.rest.metrics_paths import path_metrics

MAX_KEYS = 20
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: result fields with their own metric or that are not measurements
KNOWN_FIELDS = frozenset({
    "task_id", "host", "kind", "key", "increment", "packets", "bytes", "total",
    "heavy_hitters", "top_k", "scanners", "scan", "distinct", "covered", "missing",
    "complete", "oldest", "age", "interval_end", "received_at", "generated_at", "epoch",
    "threshold", "threshold_abs", "window", "sketch", "report_interval", "scan_ports",
    "located",  # path_health: pairs placed on the topology (their figures: metrics_paths)
})
TASK_LABELS = ["task_id", "task"]
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _largest(items: Any) -> list[tuple[str, float]]:
    """The ``MAX_KEYS`` largest (key, value) pairs of a mapping or a [key, value] list."""
    pairs = items.items() if isinstance(items, dict) else items or []
    good = [(str(k), float(v)) for k, v in (p for p in pairs if len(p) == 2) if _finite(v)]
    return sorted(good, key=lambda kv: (-kv[1], kv[0]))[:MAX_KEYS]


class StateCollector(Collector):
    """Task, agent and overlay state of a ``MeasureService``, read at each scrape."""

    def __init__(self, service: Any, health: Any, now: Callable[[], float]) -> None:
        self.service, self.health, self.now = service, health, now

    def describe(self) -> list[Metric]:
        return []  # the families depend on the state: do not call collect() at registration

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        yield from self._tasks(now)
        yield from self._agents(now)
        yield from self._overlay()
        yield from self._health()
        yield from path_metrics(self.service, now)

    def _tasks(self, now: float) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=TASK_LABELS + (extra or []))

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=TASK_LABELS)

        info = GaugeMetricFamily("measure_task_info", "1 per task; labels name its kind and "
                                 "status", labels=TASK_LABELS + ["kind", "status"])
        packets = counter("measure_task_packets", "packets the task counted since it started "
                                                  "(latest global result)")
        nbytes = counter("measure_task_bytes", "bytes (IPv4 total length) the task counted "
                                               "since it started")
        total = counter("measure_task_counted", "sum of the task's increment (packets or "
                                                "bytes) since it started")
        hh = gauge("measure_task_heavy_hitter", f"estimated count of a current heavy hitter "
                   f"(the {MAX_KEYS} largest per task)", ["key"])
        hh_n = gauge("measure_task_heavy_hitters", "number of current heavy hitters")
        top = gauge("measure_task_top_k", f"estimated count of a top-k key (the {MAX_KEYS} "
                    f"largest per task)", ["key"])
        scans = gauge("measure_task_scan_ports", "distinct destination ports of a scanning "
                      f"source in the window (the {MAX_KEYS} largest per task)", ["src"])
        distinct = gauge("measure_task_distinct_keys", "estimated number of distinct keys")
        covered = gauge("measure_task_covered_agents", "agents covered by the latest result")
        missing = gauge("measure_task_missing_agents", "agents missing from the latest result")
        ratio = gauge("measure_task_coverage_ratio", "covered / (covered + missing) agents")
        age = gauge("measure_task_result_age_seconds", "age of the oldest data in the latest "
                                                       "result")
        end = gauge("measure_task_result_timestamp_seconds", "end of the latest result's "
                                                             "interval (Unix time)")
        other = gauge("measure_task_result_value", "a numeric result field without a metric "
                      "of its own (new task kinds)", ["field"])
        results = self.service.results
        for record in self.service.list_tasks():
            labels = [record["id"], record["name"]]
            info.add_metric(labels + [record["kind"], record["status"]], 1)
            res = results.latest(record["id"], None, now=now) if results is not None else None
            if res is None:
                continue
            for family, field in ((packets, "packets"), (nbytes, "bytes"), (total, "total")):
                if _finite(res.get(field)):
                    family.add_metric(labels, res[field])
            hitters = res.get("heavy_hitters")
            if isinstance(hitters, dict):
                hh_n.add_metric(labels, len(hitters))
            for key, value in _largest(hitters):
                hh.add_metric(labels + [key], value)
            for key, value in _largest(res.get("top_k")):
                top.add_metric(labels + [key], value)
            for src, value in _largest(res.get("scanners")):
                scans.add_metric(labels + [src], value)
            d = res.get("distinct")
            if isinstance(d, dict) and _finite(d.get("estimate")):
                distinct.add_metric(labels, d["estimate"])
            if isinstance(res.get("covered"), list) and isinstance(res.get("missing"), list):
                n_cov = res.get("covered_count", len(res["covered"]))
                n_miss = res.get("missing_count", len(res["missing"]))
                covered.add_metric(labels, n_cov)
                missing.add_metric(labels, n_miss)
                if n_cov + n_miss:
                    ratio.add_metric(labels, n_cov / (n_cov + n_miss))
            if _finite(res.get("age")):
                age.add_metric(labels, res["age"])
            if _finite(res.get("interval_end")):
                end.add_metric(labels, res["interval_end"])
            for field, value in sorted(res.items()):
                if field not in KNOWN_FIELDS and _finite(value):
                    other.add_metric(labels + [field], value)
        yield from (info, packets, nbytes, total, hh, hh_n, top, scans, distinct, covered,
                    missing, ratio, age, end, other)

    def _agents(self, now: float) -> Iterator[Metric]:
        rows = self.health.view(now)
        up = GaugeMetricFamily("measure_agent_up", "1 while the agent heartbeats, else 0",
                               labels=["agent"])
        reach = GaugeMetricFamily("measure_agent_reachable", "1 if the agent answered its last "
                                  "health request", labels=["agent"])
        seen = CounterMetricFamily("measure_agent_monitor_packets_seen", "packets the agent's "
                                   "monitor counted (restarts from 0 with the monitor)",
                                   labels=["agent"])
        missed = CounterMetricFamily("measure_agent_monitor_packets_missed", "packets matched "
                                     "by capture rules that the monitor did not count",
                                     labels=["agent"])
        restarts = CounterMetricFamily("measure_agent_monitor_restarts", "times the agent "
                                       "restarted a dead monitor", labels=["agent"])
        states = GaugeMetricFamily("measure_agents", "registered agents by state",
                                   labels=["state"])
        for row in rows:
            up.add_metric([row["name"]], 1 if row["up"] else 0)
            reach.add_metric([row["name"]], 1 if row["reachable"] else 0)
            for family, field in ((seen, "packets"), (missed, "missed"),
                                  (restarts, "restarts")):
                if row[field] is not None:
                    family.add_metric([row["name"]], row[field])
        n_up = sum(1 for r in rows if r["up"])
        states.add_metric(["up"], n_up)
        states.add_metric(["down"], len(rows) - n_up)
        yield from (states, up, reach, seen, missed, restarts)

    def _overlay(self) -> Iterator[Metric]:
        view = self.service.overlay_view()
        yield GaugeMetricFamily("measure_overlay_depth", "depth of the overlay tree (0: one "
                                "agent or none)", value=view.get("depth") or 0)
        yield GaugeMetricFamily("measure_overlay_agents", "agents placed in the overlay tree",
                                value=len(view.get("parent") or {}))
        yield GaugeMetricFamily("measure_overlay_epoch", "overlay epoch (grows on every "
                                "change of the tree)", value=view.get("epoch") or 0)
        yield GaugeMetricFamily("measure_overlay_has_root", "1 if the overlay has a root",
                                value=1 if view.get("root") else 0)


    def _health(self) -> Iterator[Metric]:
        """The tick loop and pushes, from ``service.health()`` (``GET /measure/v1/health``)."""
        health = self.service.health()
        ticker = health["ticker"]
        yield GaugeMetricFamily("measure_health_ok", "1 while GET /measure/v1/health says ok",
                                value=1 if health["ok"] else 0)
        yield CounterMetricFamily("measure_tick_failures", "service ticks that failed since "
                                  "the controller started", value=ticker["total_failures"])
        yield GaugeMetricFamily("measure_tick_consecutive_failures", "ticks failed since the "
                                "last successful one", value=ticker["failures"])
        last = GaugeMetricFamily("measure_tick_last_success_timestamp_seconds", "time of the "
                                 "last successful tick (Unix time)")
        if _finite(ticker.get("last_ok")):
            last.add_metric([], ticker["last_ok"])
        yield last
        yield GaugeMetricFamily("measure_agents_unreachable", "agents the controller failed "
                                "to reach on their last push",
                                value=len(health.get("agents_unreachable") or []))
        yield GaugeMetricFamily("measure_pushes_failing", "pushes to agents that keep failing",
                                value=len(health.get("pushes_failing") or {}))


class Metrics:
    """The controller's metrics registry: state at scrape time plus REST counters."""

    def __init__(self, service: Any, health: Any, now: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(service, health, now))
        self.requests = Counter("measure_rest_requests", "REST requests answered",
                                ["method", "route", "code"], registry=self.registry)
        self.latency = Histogram("measure_rest_request_duration_seconds",
                                 "time to answer a REST request", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1.0, 2.5, 5.0, 10.0))

    def observe_request(self, method: str, route: str, code: int, seconds: float) -> None:
        """Count one answered request (``route`` is the handler name: bounded)."""
        method = method if method in HTTP_METHODS else "other"
        self.requests.labels(method, route, str(code)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The text exposition format of every metric (``GET /metrics``)."""
        return generate_latest(self.registry)
