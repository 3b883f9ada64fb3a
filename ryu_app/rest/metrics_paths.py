"""Prometheus families of path health, read at scrape time (``StateCollector`` calls
``path_metrics``): per pair of every path_health task its loss and RTT quantiles, per
link its estimated loss, added latency, suspect flag and confidence (``GET links``).

Cardinality: pairs are bounded by the task's probe targets (at most
``MAX_PAIRS`` per task exported, the lossiest first), links by the topology.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

MAX_PAIRS = 2000
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"), ("max", "1"))


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def path_metrics(service: Any, now: float) -> Iterator[Metric]:
    pair_labels = ["task_id", "task", "src", "dst"]
    loss = GaugeMetricFamily("measure_path_loss_ratio", "probes lost / sent of a pair in "
                             "its latest interval (round trip)", labels=pair_labels)
    rtt = GaugeMetricFamily("measure_path_rtt_seconds", "round-trip time quantiles of a "
                            "pair's probes in its latest interval (quantile 1: the largest)",
                            labels=pair_labels + ["quantile"])
    jitter = GaugeMetricFamily("measure_path_jitter_seconds", "mean absolute difference of "
                               "consecutive RTTs", labels=pair_labels)
    link_labels = ["link"]
    lloss = GaugeMetricFamily("measure_link_loss_ratio", "estimated loss of a link per "
                              "crossing (suspect: its rate; else the lowest loss of a pair "
                              "crossing it)", labels=link_labels)
    llat = GaugeMetricFamily("measure_link_added_latency_seconds", "smallest rise of a "
                             "crossing pair's RTT median over its own baseline",
                             labels=link_labels)
    suspect = GaugeMetricFamily("measure_link_suspect", "1 while the link is a suspect",
                                labels=link_labels)
    conf = GaugeMetricFamily("measure_link_confidence_ratio", "posterior probability that "
                             "the link is the one losing probes", labels=link_labels)
    pairs = GaugeMetricFamily("measure_link_pairs", "probe pairs crossing the link",
                              labels=link_labels)
    results = service.results
    for record in service.list_tasks():
        if record["kind"] != "path_health" or results is None:
            continue
        res = results.latest(record["id"], None, now=now) or {}
        rows = [r for r in res.get("pairs") or [] if isinstance(r, dict)]
        rows.sort(key=lambda r: -(r.get("loss") or 0))
        for r in rows[:MAX_PAIRS]:
            labels = [record["id"], record["name"], str(r.get("src")), str(r.get("dst"))]
            if _num(r.get("loss")):
                loss.add_metric(labels, r["loss"])
            for field, q in QUANTILES:
                value = (r.get("rtt_ms") or {}).get(field)
                if isinstance(value, int | float):
                    rtt.add_metric(labels + [q], value / 1e3)
            if _num(r.get("jitter_ms")):
                jitter.add_metric(labels, r["jitter_ms"] / 1e3)
    for link in service.links()["links"]:
        labels = [str(link.get("name"))]
        lloss.add_metric(labels, link.get("loss") or 0.0)
        llat.add_metric(labels, (link.get("latency_ms") or 0.0) / 1e3)
        suspect.add_metric(labels, 1 if link.get("suspect") else 0)
        conf.add_metric(labels, link.get("confidence") or 0.0)
        pairs.add_metric(labels, link.get("pairs") or 0)
    yield from (loss, rtt, jitter, lloss, llat, suspect, conf, pairs)
