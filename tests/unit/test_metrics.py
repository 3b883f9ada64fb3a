"""``GET /metrics``, the dashboard routes and the Grafana dashboards, through webob.

The controller side is real (topology, registry, overlay, store, results,
REST, dashboard, metrics); agents are ``tests.unit.test_rest.FakeAgents`` plus a
health answer. Reports are posted like a root agent posts them.
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from measure_common.runner import InlineRunner  # noqa: E402
from ryu_app.auth_config import AuthConfig  # noqa: E402
from ryu_app.rest.api import register_rest  # noqa: E402
from ryu_app.rest.dashboard import register_dashboard  # noqa: E402
from ryu_app.rest.metrics import MAX_KEYS  # noqa: E402
from ryu_app.service.agent_health import AgentHealth, monitor_figures  # noqa: E402
from testing.grafana import grafana_metrics  # noqa: E402
from testing.harness import FakeAgents, Harness, sample_report  # noqa: E402
from testing.netns import ROOT  # noqa: E402

TOKEN = "s3cret-token-for-tests"
HEALTH = {"name": "h1", "status": "ok", "monitor": {"restarts": 2, "crash_looping": False,
                                                    "packets": 1234, "missed": 7}}


class HealthyAgents(FakeAgents):
    """FakeAgents that also answer ``GET /agent/v1/health`` (h3 does not)."""

    def request(self, method, url, json=None, timeout=5.0):
        if url.endswith("/agent/v1/health"):
            self.calls.append((method, url, json))
            if self.name_of(url) == "h3":
                raise ConnectionError(f"GET {url}: ConnectTimeout")
            return 200, {**HEALTH, "name": self.name_of(url)}
        return super().request(method, url, json, timeout)


class MetricsHarness(Harness):
    def __init__(self, state_dir: str, auth: AuthConfig | None = None) -> None:
        super().__init__(state_dir, auth)
        self.agents = HealthyAgents()
        self.service.http = self.agents
        self.wsgi = WSGIApplication()
        self.metrics = register_dashboard(self.wsgi, self.service)
        register_rest(self.wsgi, self.service, self.metrics)

    def get(self, path: str, headers: dict | None = None):
        return Request.blank(path, headers=headers or {}).get_response(self.wsgi)

    def scrape(self) -> dict[str, list]:
        """Sample name -> [(labels, value)] of one ``GET /metrics``."""
        resp = self.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_int == 200, resp.body
        assert resp.content_type == "text/plain"
        out: dict[str, list] = {}
        for family in text_string_to_metric_families(resp.body.decode()):
            out.setdefault(family.name, [])
            for s in family.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out


def value(samples: dict, name: str, **labels) -> float:
    found = [v for lab, v in samples.get(name, [])
             if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


@pytest.fixture
def mh(tmp_path):
    h = MetricsHarness(str(tmp_path / "state"))
    h.register(1, 2, 3)
    h.tick()
    return h


def apply_task(h, name: str = "hh") -> str:
    status, body = h.call("POST", "/measure/v1/tasks", {"tasks": [
        {"name": name, "kind": "heavy_hitters", "key": "src", "report_interval": 1}]})
    assert status == 201, body
    return body["tasks"][0]["id"]


def post(h, rep: dict) -> None:
    status, body = h.call("POST", "/measure/v1/reports", rep)
    assert status == 202, body


def test_task_totals_heavy_hitters_coverage_and_age_are_exported(mh):
    task_id = apply_task(mh)
    rep = sample_report(mh.clock - 1.0, hh={"10.0.0.9": 21, "10.0.0.4": 5}, task_id=task_id,
                 covered=["h1", "h2"], missing=["h3"],
                 scan={"10.0.0.6": {"ports": list(range(7)), "dsts": ["10.0.0.2"]}})
    rep["snapshot"].update(packets=31, bytes=3100, total=31)
    post(mh, rep)
    s = mh.scrape()
    labels = {"task_id": task_id, "task": "hh"}
    assert value(s, "measure_task_info", kind="heavy_hitters", status="pending", **labels) == 1
    assert value(s, "measure_task_packets_total", **labels) == 31
    assert value(s, "measure_task_bytes_total", **labels) == 3100
    assert value(s, "measure_task_counted_total", **labels) == 31
    assert value(s, "measure_task_heavy_hitter", key="10.0.0.9", **labels) == 21
    assert value(s, "measure_task_heavy_hitters", **labels) == 2
    assert value(s, "measure_task_top_k", key="10.0.0.4", **labels) == 5
    assert value(s, "measure_task_scan_ports", src="10.0.0.6", **labels) == 7
    assert value(s, "measure_task_distinct_keys", **labels) == 3
    assert value(s, "measure_task_covered_agents", **labels) == 2
    assert value(s, "measure_task_missing_agents", **labels) == 1
    assert value(s, "measure_task_coverage_ratio", **labels) == pytest.approx(2 / 3)
    # age counts from the report's oldest data (interval_end + 0.01) to the service clock
    assert value(s, "measure_task_result_age_seconds", **labels) == pytest.approx(0.99)
    assert value(s, "measure_task_result_timestamp_seconds", **labels) == mh.clock - 1.0


def test_a_deleted_task_disappears_from_the_next_scrape(mh):
    task_id = apply_task(mh)
    post(mh, sample_report(mh.clock - 1.0, hh={"10.0.0.9": 21}, task_id=task_id))
    assert value(mh.scrape(), "measure_task_packets_total", task_id=task_id) == 30
    assert mh.call("DELETE", f"/measure/v1/tasks/{task_id}")[0] == 200
    s = mh.scrape()
    assert s["measure_task_info"] == [] and s.get("measure_task_packets_total", []) == []


def test_key_labels_are_bounded_to_the_largest_values(mh):
    task_id = apply_task(mh)
    hh = {f"10.0.{i // 200}.{i % 200 + 1}": 100 + i for i in range(3 * MAX_KEYS)}
    post(mh, sample_report(mh.clock - 1.0, hh=hh, task_id=task_id))
    s = mh.scrape()
    series = {lab["key"]: v for lab, v in s["measure_task_heavy_hitter"]}
    largest = sorted(hh.items(), key=lambda kv: -kv[1])[:MAX_KEYS]
    assert series == {k: float(v) for k, v in largest}
    assert len(s["measure_task_top_k"]) == MAX_KEYS
    assert value(s, "measure_task_heavy_hitters", task_id=task_id) == 3 * MAX_KEYS


def test_agents_monitor_and_overlay(mh):
    s = mh.scrape()
    assert value(s, "measure_agents", state="up") == 3
    assert value(s, "measure_agents", state="down") == 0
    assert {lab["agent"]: v for lab, v in s["measure_agent_up"]} == {"h1": 1, "h2": 1, "h3": 1}
    assert {lab["agent"]: v for lab, v in s["measure_agent_reachable"]} == {
        "h1": 1, "h2": 1, "h3": 0}
    assert value(s, "measure_agent_monitor_restarts_total", agent="h1") == 2
    assert value(s, "measure_agent_monitor_packets_seen_total", agent="h2") == 1234
    assert value(s, "measure_agent_monitor_packets_missed_total", agent="h2") == 7
    assert s["measure_agent_monitor_restarts_total"] and all(
        lab["agent"] != "h3" for lab, _ in s["measure_agent_monitor_restarts_total"])
    overlay = mh.service.overlay_view()
    assert value(s, "measure_overlay_depth") == overlay["depth"] == 1
    assert value(s, "measure_overlay_agents") == 3
    assert value(s, "measure_overlay_epoch") == overlay["epoch"]
    assert value(s, "measure_overlay_has_root") == 1
    mh.tick(10.0)  # no heartbeats: all three are down
    s = mh.scrape()
    assert value(s, "measure_agents", state="down") == 3
    assert value(s, "measure_agent_up", agent="h1") == 0
    assert value(s, "measure_agent_reachable", agent="h1") == 0


def test_rest_requests_latencies_and_tick_failures_are_counted(mh):
    before = mh.scrape()
    mh.call("GET", "/measure/v1/tasks")
    mh.call("GET", "/measure/v1/tasks/99")
    mh.call("GET", "/measure/v1/no-such-thing")
    s = mh.scrape()
    assert value(s, "measure_rest_requests_total", method="GET", route="list_tasks",
                 code="200") == 1
    assert value(s, "measure_rest_requests_total", route="get_task", code="404") == 1
    assert value(s, "measure_rest_requests_total", route="fallback", code="404") == 1
    assert value(s, "measure_rest_request_duration_seconds_count", method="GET",
                 route="list_tasks") == 1
    # the scrape before this one counted itself once it was answered
    assert value(s, "measure_rest_requests_total", route="prometheus", code="200") == 1
    assert value(before, "measure_tick_failures_total") == 0
    assert value(before, "measure_tick_last_success_timestamp_seconds") == mh.clock
    mh.register(4)  # the overlay changes: the next ticks store a new epoch...
    mh.service.store.close()  # ...in a closed database, so they fail
    mh.tick()
    mh.tick()
    s = mh.scrape()
    assert value(s, "measure_tick_failures_total") == 2
    assert value(s, "measure_tick_consecutive_failures") == 2
    assert value(s, "measure_health_ok") == 0
    assert value(s, "measure_tick_last_success_timestamp_seconds") == mh.clock - 2


def test_unknown_numeric_fields_of_a_new_kind_are_exported(mh):
    task_id = apply_task(mh)
    rep = sample_report(mh.clock - 1.0, task_id=task_id)
    post(mh, rep)
    mh.service.results._latest[(task_id, "*")]["entropy"] = 2.5  # a field a new kind adds
    s = mh.scrape()
    assert value(s, "measure_task_result_value", task_id=task_id, field="entropy") == 2.5


# ---------------------------------------------------------------- auth


@pytest.fixture
def secured(tmp_path):
    return MetricsHarness(str(tmp_path / "state"), AuthConfig(token=TOKEN))


@pytest.mark.parametrize("path", ["/metrics", "/dashboard/api/agent-health"])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dXNlcjpwdw=="])
def test_metrics_and_dashboard_data_refuse_like_the_rest_api(secured, path, header):
    headers = {"Authorization": header} if header else {}
    ours = secured.get(path, headers)
    api = secured.get("/measure/v1/tasks", headers)
    assert api.status_int in (401, 403)
    assert (ours.status_int, ours.json, ours.headers.get("WWW-Authenticate")) == (
        api.status_int, api.json, api.headers.get("WWW-Authenticate"))
    assert b"measure_" not in ours.body


def test_with_the_token_or_open_reads_data_is_served(tmp_path, secured):
    assert secured.get("/metrics", {"Authorization": f"Bearer {TOKEN}"}).status_int == 200
    open_reads = MetricsHarness(str(tmp_path / "open"), AuthConfig(token=TOKEN, reads_open=True))
    assert open_reads.get("/metrics").status_int == 200
    assert open_reads.get("/dashboard/api/agent-health").json == {"agents": []}


@pytest.mark.parametrize("path,ctype", [("/dashboard/", "text/html"),
                                        ("/dashboard/static/app.js", "application/javascript"),
                                        ("/dashboard/static/style.css", "text/css")])
def test_page_files_hold_no_data_and_carry_a_strict_csp(secured, path, ctype):
    resp = secured.get(path)
    assert resp.status_int == 200 and resp.content_type == ctype
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert TOKEN.encode() not in resp.body


@pytest.mark.parametrize("name", ["../rest.py", "..%2frest.py", "app.py", "APP.JS",
                                  "x" * 60 + ".js", "%00.js"])
def test_only_dashboard_files_are_served(secured, name):
    resp = secured.get(f"/dashboard/static/{name}")
    assert resp.status_int in (400, 404)
    assert b"import" not in resp.body


def test_dashboard_pages_never_parse_data_as_html():
    sources = {p: open(p).read() for p in glob.glob(os.path.join(ROOT, "ryu_app/rest/static/*.js"))}
    assert len(sources) >= 7
    for path, text in sources.items():
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function"):
            assert sink not in text, f"{path} uses {sink}"


# ---------------------------------------------------------------- agent health


def test_monitor_figures_read_the_contract_shape_and_the_older_one():
    assert monitor_figures(HEALTH) == {"restarts": 2, "packets": 1234, "missed": 7,
                                       "crash_looping": False}
    older = {"status": "ok", "restarts": 1, "monitors": [{"packets": 10}, {"packets": 5}],
             "gaps": [{"unmeasured_packets_max": 4}, {"unmeasured_packets_max": 3}]}
    assert monitor_figures(older) == {"restarts": 1, "packets": 15, "missed": 7,
                                      "crash_looping": False}
    today = {**older, "monitor": {"restarts": 3, "crash_looping": True}}  # partly moved
    assert monitor_figures(today) == {"restarts": 3, "packets": 15, "missed": 7,
                                      "crash_looping": True}
    assert monitor_figures("garbage")["restarts"] is None
    assert monitor_figures({"monitor": {"restarts": -1, "packets": True}})["restarts"] is None


def test_agent_health_asks_once_per_ttl_and_keeps_the_last_figures(mh):
    clock = [100.0]
    health = AgentHealth(mh.service.registry, mh.agents, InlineRunner(), ttl=2.0)
    health.view(clock[0])
    health.view(clock[0] + 1.0)
    asked = [u for m, u, _ in mh.agents.calls if u.endswith("/health")]
    assert len(asked) == 3  # one round for three agents within the ttl
    mh.agents.down.add("h1")
    mh.agents.request = FakeAgents.request.__get__(mh.agents)  # no health answers now
    rows = {r["name"]: r for r in health.view(clock[0] + 2.5)}
    assert rows["h1"]["reachable"] is False and rows["h1"]["restarts"] == 2
    assert "ConnectTimeout" in rows["h1"]["error"]


class DeferredRunner(InlineRunner):
    """Background work waits until the test runs it (a slow agent round)."""

    def __init__(self) -> None:
        self.pending: list = []

    def submit(self, fn) -> None:
        self.pending.append(fn)


def test_a_scrape_never_waits_for_the_agents(mh):
    runner = DeferredRunner()
    health = AgentHealth(mh.service.registry, mh.agents, runner, ttl=2.0)
    rows = health.view(100.0)
    assert [r["reachable"] for r in rows] == [False, False, False]  # not asked yet
    assert len(runner.pending) == 1
    health.view(103.0)  # stale, but a round is still running: no second one
    assert len(runner.pending) == 1
    runner.pending.pop()()
    by_name = {r["name"]: r for r in health.view(103.5)}
    assert by_name["h1"]["reachable"] is True and by_name["h1"]["checked_at"] == 100.0
    assert len(runner.pending) == 1  # older than the ttl: the next round is started


# ---------------------------------------------------------------- grafana


def test_grafana_dashboards_are_importable_json():
    files = grafana_metrics()
    assert set(files) == {"network-overview.json", "task-view.json", "path-health.json"}
    for name in files:
        with open(os.path.join(ROOT, "docs/grafana", name)) as f:
            board = json.load(f)
        assert board["id"] is None and board["uid"] and board["title"] and board["schemaVersion"]
        assert board["__inputs"][0]["pluginId"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_every_metric_named_in_the_grafana_json_has_samples_in_metrics(mh):
    task_id = apply_task(mh)
    rep = sample_report(mh.clock - 1.0, hh={"10.0.0.9": 21}, task_id=task_id, missing=["h3"],
                 scan={"10.0.0.6": {"ports": list(range(7)), "dsts": ["10.0.0.2"]}})
    post(mh, rep)
    mh.service.results._latest[(task_id, "*")]["entropy"] = 2.5
    s = mh.scrape()
    exported = {name for name, samples in s.items() if samples}
    # path-health.json's metrics need a path_health task: tests/unit/test_paths_service.py
    used = set().union(*(v for k, v in grafana_metrics().items() if k != "path-health.json"))
    assert len(used) >= 20
    assert used - exported == set()
