"""The task page's rates, units and per-kind views in a real headless Chromium.

A real controller process gets reports as a root agent posts them: snapshots
of real counters (count-min and elastic) with the agents' ``interval``
sections (``measure_model.interval``), one task per kind; the flows task's
snapshot also carries its flows' first and last time seen from a real flow
cache fed the same packets. The page must draw the rates with units, keep
every axis label inside its SVG (bounding boxes checked in the browser),
chart entropy and cardinality per interval with their bounds as a band, list
the flows with duration and rate, and show each kind's answer as a table or
bars, never as JSON text. Screenshots go to the artefacts directory and
docs/.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import numpy as np
import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from host_agent.counters.elastic import ElasticCounter
from host_agent.flows.cache import FlowCache
from measure_model import interval
from measure_model.packet.keys import HeaderBatch
from measure_model.task import Task, flow_counter
from testing.browser import login, screenshot, wait_for
from testing.controllers import rest_call

pytestmark = pytest.mark.netns

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
IP = 0x0A000000
KINDS: dict[str, dict[str, Any]] = {
    "heavy_hitters": {"key": "src_dst", "increment": "bytes"},
    "flow_size": {"key": "src_dst", "increment": "bytes", "memory": 65536},
    # small sketches over many keys: most keys are light, so the bounds are a real band
    "entropy": {"key": "src_dst", "memory": 4096},
    "cardinality": {"key": "five_tuple", "memory": 4096},
    "heavy_changers": {"key": "src_dst", "memory": 65536, "threshold": 0.1},
    "superspreaders": {"key": "src_dst", "memory": 65536, "min_distinct": 3},
    "flows": {"increment": "bytes"},
}
# destinations of h1's traffic in interval i: a few, or many for the estimate kinds
SPREAD = {"entropy": lambda i: 300 + 400 * i, "cardinality": lambda i: 300 + 400 * i}


def batch(src: np.ndarray, dst: np.ndarray, length: int) -> HeaderBatch:
    n = src.shape[0]
    return HeaderBatch.from_arrays(IP + src, IP + dst, np.full(n, 17), np.full(n, 1000),
                                   np.arange(n) % 50 + 80, np.full(n, length))


def reports(task: Task, task_id: str, ends: list[float]) -> list[dict]:
    """One root report per interval end: a real counter fed a growing stream (h1's
    traffic to many hosts grows each interval), with its interval section."""
    counted = flow_counter(task) if task.kind == "flows" else task
    counter = ElasticCounter(task, ends[0] - 5) if task.memory else \
        Counter(CounterSpec.from_task(counted), ends[0] - 5)
    cache = FlowCache()
    spread = SPREAD.get(task.kind, lambda i: 4 + i)
    mark = None
    out = []
    for i, end in enumerate(ends):
        n = 200 + 300 * i if task.kind not in SPREAD else 2 * spread(i)
        packets = batch(np.r_[np.full(n, 1), np.full(100, 2)],
                        np.r_[np.arange(n) % spread(i) + 5, np.full(100, 9)], 1000)
        counter.update(packets, end - 1)
        cache.update(packets, end - 1)
        snap = json.loads(json.dumps(counter.snapshot(end)))
        if task.kind == "flows":
            snap["flow_times"] = cache.times([k for k, _ in snap["top_k"]])
        snap["monitor"] = {"counting_since": ends[0] - 5}
        snap["interval"], mark = interval.section(mark, snap, end)
        del snap["monitor"]
        complete = i != 2  # the third interval is partial: h5 missing
        out.append({"task_id": task_id, "interval_end": end, "snapshot": snap,
                    "covered": ["h1", "h5"] if complete else ["h1"],
                    "missing": [] if complete else ["h5"], "generated_at": end,
                    "oldest": end, "kind": task.kind})
    return out


def inside(driver, chart_css: str) -> list[str]:
    """Texts of ``chart_css`` SVGs whose bounding box leaves their SVG's box."""
    return driver.execute_script("""
        const out = [];
        for (const svg of document.querySelectorAll(arguments[0])) {
          const box = svg.getBoundingClientRect();
          for (const t of svg.querySelectorAll("text")) {
            const r = t.getBoundingClientRect();
            if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5
                || r.bottom > box.bottom + 0.5) out.push(t.textContent);
          }
        }
        return out;""", chart_css)


def test_rates_units_and_a_view_per_kind(ctl):  # noqa: F811
    controller, token, driver = ctl
    ends = [float(int(time.time()) - 30 + 5 * i) for i in range(5)]
    ids = {}
    for kind, fields in KINDS.items():
        body: dict[str, Any] = {"name": f"view-{kind}", "kind": kind, **fields}
        status, created = rest_call(controller.url, token, "POST", "/measure/v1/tasks",
                               {"tasks": [body]})
        assert status == 201, created
        ids[kind] = created["tasks"][0]["id"]
        task = Task.from_dict(body)
        for rep in reports(task, ids[kind], ends):
            status, reply = rest_call(controller.url, token, "POST", "/measure/v1/reports", rep)
            assert status == 202, reply
    login(driver, controller.url, token)
    for kind, task_id in ids.items():
        driver.get(f"{controller.url}/dashboard/#/task/{task_id}")
        wait_for(driver, lambda: len(driver.find_elements(
            "css selector", "#rate-chart circle.point")) == 5, 15, f"{kind}: the rate chart")
        wait_for(driver, lambda: driver.find_elements("css selector", "#sections section"), 10,
                 f"{kind}: the sections")
        time.sleep(0.5)
        # units on every line chart's axis, and hollow points for the partial interval
        units = driver.execute_script(
            "return [...document.querySelectorAll('svg.line-chart')].map(s => s.dataset.unit)")
        assert units and all(units), units
        # (read in one script: the page redraws every second)
        labels, partial = driver.execute_script(
            "const svg = document.querySelector('#rate-chart svg');"
            "return [[...svg.querySelectorAll('text')].map(t => t.textContent),"
            " [...svg.querySelectorAll('circle.point.partial')].map(c => Number(c.dataset.x))]")
        assert any(t.endswith("bit/s") for t in labels), labels
        assert partial == [ends[2]]
        assert inside(driver, "svg.line-chart, svg.bar-chart") == []
        # the answer as tables or bars, never JSON text; no internal limits shown
        fields = driver.execute_script(
            "return [...document.querySelectorAll('#sections section')].map(s => "
            "[s.dataset.field, !!s.querySelector('table, svg.bar-chart, dl, p.empty'),"
            " !!s.querySelector('pre')])")
        assert fields, kind
        assert [f for f, drawn, _ in fields if not drawn] == [], (kind, fields)
        json_boxes = [f for f, _, pre in fields if pre]
        assert json_boxes == [], (kind, json_boxes)
        assert "limits" not in [f for f, _, _ in fields]
        assert "rate" in [f for f, _, _ in fields]
        if kind in ("flow_size", "entropy", "cardinality", "heavy_changers", "superspreaders",
                    "flows"):
            assert kind in [f for f, _, _ in fields], (kind, fields)
        if kind in ("entropy", "cardinality"):
            # the estimate per interval, with its bounds as a band, on a unit-labelled axis
            title, unit, points, bands, labels = driver.execute_script(
                "const svg = document.querySelector('#estimate-chart svg.line-chart');"
                "return [document.querySelector('#estimate-title').textContent,"
                " svg.dataset.unit, svg.querySelectorAll('circle.point').length,"
                " [...svg.querySelectorAll('polygon.band')].map(p => p.getBBox().height),"
                " [...svg.querySelectorAll('text.axis')].map(t => t.textContent)]")
            assert "bounds" in title and points == 5, (title, points)
            assert unit == ("bit" if kind == "entropy" else "keys")
            assert len(bands) == 1 and bands[0] > 5, bands  # a band of some height, in px
            assert labels[0] == ("entropy (bit)" if kind == "entropy" else "distinct keys")
            assert all(t.endswith(f" {unit}") for t in labels[1:6]), labels
            assert inside(driver, "#estimate-chart svg") == []
        if kind == "flows":
            head, rows = driver.execute_script(
                "const t = document.querySelector('#flows-table');"
                "return [[...t.querySelectorAll('th')].map(c => c.textContent),"
                " [...t.querySelectorAll('tbody tr')]"
                "   .map(r => [...r.cells].map(c => c.textContent))]")
            assert head == ["FLOW", "HOSTS", "DURATION", "SINCE START", "RATE NOW"]
            assert rows, head
            # flows seen in every interval were seen from the first to the last: 20 s
            assert all(re.fullmatch(r"\d+(\.\d+)? s", r[2]) for r in rows), rows
            assert any(r[2] == "20 s" and r[4].endswith("bit/s") for r in rows), rows[:5]
        if kind in ("entropy", "flows"):
            anchor = "#estimate-title" if kind == "entropy" else "section[data-field=flows]"
            driver.execute_script(f"document.querySelector('{anchor}').scrollIntoView()")
            screenshot(driver, f"dashboard-{kind}-view.png",
                       also=os.path.join(DOCS, f"dashboard-{kind}-view.png"))
        if kind in ("heavy_hitters", "flow_size"):
            driver.execute_script("document.querySelector('#sections').scrollIntoView()")
            screenshot(driver, f"dashboard-{kind}-view.png",
                       also=os.path.join(DOCS, f"dashboard-{kind}-view.png"))
