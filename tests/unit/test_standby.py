"""A standby controller's REST API (``StandbyService``) over the leader's store.

The leader is the in-process ``Harness`` (real service and routes, SQLite
store); the standby opens the same database file, as a second controller
on a shared store would, and is driven through the same routes. It answers
the reads the store holds exactly as the leader does, and refuses writes,
agent calls and the leader's in-memory views with 503 naming the leader.
"""

from __future__ import annotations

import json

import pytest

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from ryu_app.auth_config import AuthConfig  # noqa: E402
from ryu_app.rest.api import register_rest  # noqa: E402
from ryu_app.service.standby import LEADER_URL_KEY, StandbyService  # noqa: E402
from ryu_app.service.store import Store  # noqa: E402
from testing.harness import hh_report  # noqa: E402

LEADER = "http://192.168.100.254:8080"


@pytest.fixture
def pair(h):
    """(the leader's harness, a call function on a standby over its store)."""
    h.service.store.set_meta(LEADER_URL_KEY, LEADER)
    store = Store.in_dir(h.state_dir)
    standby = StandbyService(store, h.state_dir, now=lambda: h.clock, auth=AuthConfig())
    wsgi = WSGIApplication()
    register_rest(wsgi, standby)

    def call(method: str, path: str, body=None):
        kw: dict = {"method": method}
        if body is not None:
            kw.update(body=json.dumps(body).encode(), content_type="application/json")
        resp = Request.blank(path, **kw).get_response(wsgi)
        assert resp.content_type == "application/json"
        return resp.status_int, json.loads(resp.body), resp.headers

    yield h, call
    store.close()


def test_the_standby_answers_the_stored_reads_like_the_leader(pair):
    h, standby = pair
    h.register(1, 2, 3)
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    for end, hh in ((1000.0, {"10.0.0.2,10.0.0.5": 900}), (1005.0, {})):
        h.clock = end
        h.call("POST", "/measure/v1/reports", hh_report("1", ["h1", "h2"], ["h3"], end, hh))
    for path in ("/measure/v1/tasks/1/result", "/measure/v1/tasks/1/history",
                 "/measure/v1/tasks/1/history?host=h2&limit=5", "/measure/v1/events",
                 "/measure/v1/events?since=1", "/measure/v1/actions"):
        status, body, _ = standby("GET", path)
        assert (status, body) == h.call("GET", path), path
    status, listed, _ = standby("GET", "/measure/v1/tasks")
    _, leader_listed = h.call("GET", "/measure/v1/tasks")
    # the same tasks; a task's push state (status, per-agent answers) is the leader's
    # memory, so the standby shows the stored one
    strip = ("status", "agents", "last_error")
    assert status == 200 and [{k: v for k, v in t.items() if k not in strip}
                              for t in listed["tasks"]] == [
        {k: v for k, v in t.items() if k not in strip} for t in leader_listed["tasks"]]
    assert standby("GET", "/measure/v1/tasks/7")[:2] == (404, {"error": "unknown task 7"})
    status, health, _ = standby("GET", "/measure/v1/health")
    assert status == 200 and health["role"] == "standby" and health["leader"] == LEADER
    assert health["tasks"] == 1 and h.call("GET", "/measure/v1/health")[1]["role"] == "leader"
    assert standby("GET", "/measure/v1/openapi.json")[0] == 200


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"}),
    ("DELETE", "/measure/v1/tasks/1", None),
    ("DELETE", "/measure/v1/actions/1", None),
    ("POST", "/measure/v1/agents", {"name": "h4", "url": "http://192.168.100.4:8000"}),
    ("POST", "/measure/v1/agents/h1/heartbeat", {}),
    ("POST", "/measure/v1/agents/h1/peer-key", {"peer": "10.0.0.2"}),
    ("POST", "/measure/v1/reports", {"task_id": "1"}),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h2"}),
    ("GET", "/measure/v1/agents", None),
    ("GET", "/measure/v1/overlay", None),
    ("GET", "/measure/v1/topology", None),
    ("GET", "/measure/v1/links", None),
    ("GET", "/measure/v1/tasks/1/result?key=10.0.0.2", None),
])
def test_the_standby_refuses_writes_and_live_views_naming_the_leader(pair, method, path, body):
    h, standby = pair
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    tasks_before = h.service.store.tasks()
    status, answer, headers = standby(method, path, body)
    assert status == 503 and headers["Retry-After"] == "1"
    assert answer == {"error": "this controller is a standby on the shared store "
                               f"{h.service.store.path}; send this to the leader at {LEADER}"}
    assert h.service.store.tasks() == tasks_before


def test_a_standby_before_any_leader_says_so(tmp_path):
    store = Store.in_dir(str(tmp_path))
    standby = StandbyService(store, str(tmp_path), auth=AuthConfig())
    assert "the leader (no URL stored yet)" in str(standby.not_leader())
    assert standby.health()["leader"] is None and standby.health()["switch_roles"] == {}
    standby.switch_roles = {10: "slave", 2: "slave"}  # what the Ryu app keeps from replies
    assert standby.health()["switch_roles"] == {"0000000000000002": "slave",
                                                "000000000000000a": "slave"}
    store.close()
