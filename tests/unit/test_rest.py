"""Controller REST API and service, through webob against Ryu's WSGIApplication.

Agents are a fake HTTP client that records what the controller sends
(the agent side is tested by its own owners); the topology, registry,
overlay, store and results are the real modules.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from webob import Request  # noqa: E402

from measure_common.auth import Verifier, as_agent  # noqa: E402
from ryu_app.auth_config import AuthConfig  # noqa: E402
from ryu_app.service.store import StoreError  # noqa: E402
from testing.harness import POLICY, Harness, hh_report  # noqa: E402


def test_agents_register_and_get_their_overlay_place(h):
    h.register(*range(1, 10))
    h.tick()
    status, overlay = h.call("GET", "/measure/v1/overlay")
    assert status == 200
    assert overlay["root"] == "h1" and overlay["epoch"] == 1 and overlay["unlocated"] == []
    assert set(overlay["parent"]) == {f"h{i}" for i in range(1, 10)}
    assert all(len(kids) <= 3 for kids in overlay["children"].values())
    assert sorted(h.agents.overlay) == sorted(overlay["parent"])
    assert h.agents.overlay["h1"]["root"] is True and h.agents.overlay["h1"]["parent"] is None
    h5 = h.agents.overlay["h5"]
    assert h5 == {"parent": {"name": overlay["parent"]["h5"],
                             "url": f"http://192.168.100.{overlay['parent']['h5'][1:]}:8000"},
                  "children": [{"name": c, "url": f"http://192.168.100.{c[1:]}:8000"}
                               for c in overlay["children"]["h5"]],
                  "root": False, "epoch": 1, "controller": "http://192.168.100.254:8080",
                  "to": "h5"}
    status, body = h.call("GET", "/measure/v1/agents")
    assert status == 200 and [a["name"] for a in body["agents"]] == [f"h{i}" for i in range(1, 10)]
    assert body["agents"][4]["host"] == "00:00:00:00:00:05" and body["agents"][0]["up"] is True
    status, topo = h.call("GET", "/measure/v1/topology")
    assert status == 200 and len(topo["switches"]) == 4 and len(topo["hosts"]) == 9
    assert len(topo["links"]) == 3
    # Nothing changed: no new epoch, no new pushes.
    pushes = len(h.agents.calls)
    h.tick()
    assert len(h.agents.calls) == pushes and h.service.epoch == 1


def test_apply_yaml_policy_pushes_to_root_and_reports_per_agent_status(h):
    h.register(*range(1, 10))
    h.tick()
    status, body = h.call("POST", "/measure/v1/tasks", POLICY, "application/yaml")
    assert status == 201
    assert body == {"tasks": [{"id": "1", "name": "hh-icmp"}, {"id": "2", "name": "scan"}]}
    h.tick()
    assert h.agents.sent("PUT", "/agent/v1/tasks/1") == ["h1"]  # the root only
    put = [c for c in h.agents.calls if c[1].endswith("/agent/v1/tasks/1")][0]
    assert put[2]["key"] == "src_dst" and put[2]["increment"] == "bytes"
    status, task = h.call("GET", "/measure/v1/tasks/1")
    assert status == 200 and task["status"] == "active" and task["last_error"] is None
    assert task["agents"] == {f"h{i}": "ok" for i in range(1, 10)}
    status, tasks = h.call("GET", "/measure/v1/tasks")
    assert [t["name"] for t in tasks["tasks"]] == ["hh-icmp", "scan"]
    status, body = h.call("DELETE", "/measure/v1/tasks/1")
    assert (status, body) == (200, {"id": "1", "name": "hh-icmp", "deleted": True})
    assert h.agents.sent("DELETE", "/agent/v1/tasks/1") == ["h1"]
    assert h.call("GET", "/measure/v1/tasks/1") == (404, {"error": "unknown task 1"})


def test_json_bodies_single_task_and_conflicts_change_nothing(h):
    status, body = h.call("POST", "/measure/v1/tasks", {"name": "c1", "kind": "counter"})
    assert (status, body) == (201, {"tasks": [{"id": "1", "name": "c1"}]})
    status, body = h.call("POST", "/measure/v1/tasks",
                          {"tasks": [{"name": "c2", "kind": "counter"},
                                     {"name": "c1", "kind": "counter"}]})
    assert (status, body) == (409, {"error": "task name 'c1' is already used by task 1; "
                                             "delete it first"})
    status, body = h.call("POST", "/measure/v1/tasks",
                          {"tasks": [{"name": "c3", "kind": "counter"},
                                     {"name": "c4", "kind": "counter", "window": {"len": 1}}]})
    assert (status, body) == (400, {"error": "policy request: task c4: unknown field "
                                             "'window.len'",
                                    "errors": ["policy request: task c4: unknown field "
                                               "'window.len' (did you mean 'window.length'?)"]})
    assert [t["name"] for t in h.call("GET", "/measure/v1/tasks")[1]["tasks"]] == ["c1"]
    assert [t["name"] for t in h.service.store.tasks()] == ["c1"]


@pytest.mark.parametrize("method,path,body,ctype,status,error", [
    ("POST", "/measure/v1/tasks", b"name: x", "text/plain", 415,
     "Content-Type must be application/json or application/yaml"),
    ("POST", "/measure/v1/tasks", b"{", "application/json", 400,
     "body is not valid JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    ("POST", "/measure/v1/tasks", b'{"name": "a", "kind": "counter", "top_k": NaN}',
     "application/json", 400, "body is not valid JSON: NaN is not allowed"),
    ("POST", "/measure/v1/tasks", b"tasks: [{name: a, kind: counter, key: srcdst}]",
     "application/yaml", 400, "policy request: task a: key 'srcdst' is not one of src, dst, "
     "src_dst, sport, dport, src_dport, dst_dport, proto, five_tuple"),
    ("POST", "/measure/v1/tasks", b"#" * (256 * 1024 + 1), "application/yaml", 413,
     "body of 262145 bytes is more than the limit of 262144"),
    ("POST", "/measure/v1/tasks", b" " * (1024 * 1024 + 1), "application/json", 413,
     "body of 1048577 bytes is more than the limit of 1048576"),
    ("GET", "/measure/v1/tasks/0", None, None, 404,
     "unknown task '0' (ids are positive integers)"),
    ("GET", "/measure/v1/tasks/1%3Brm", None, None, 404,
     "unknown task '1;rm' (ids are positive integers)"),
    ("GET", "/measure/v1/tasks/77", None, None, 404, "unknown task 77"),
    ("DELETE", "/measure/v1/tasks/77", None, None, 404, "unknown task 77"),
    ("GET", "/measure/v1/tasks/77/result", None, None, 404, "unknown task 77"),
    ("GET", "/measure/v1/events?since=-1", None, None, 400,
     "query parameter 'since' must be a non-negative integer"),
    ("GET", "/measure/v1/events?since=1&since=2", None, None, 400,
     "query parameter 'since' given more than once"),
    ("GET", "/measure/v1/nothing/here", None, None, 404,
     "no such endpoint: /measure/v1/nothing/here"),
    ("PUT", "/measure/v1/tasks/1", None, None, 405,
     "method PUT is not allowed here; use DELETE, GET"),
    ("POST", "/measure/v1/agents/h9/heartbeat", None, None, 404,
     "agent 'h9' is not registered"),
    ("POST", "/measure/v1/agents", {"name": "h1", "url": "gopher://x"}, "application/json",
     400, "agent: field 'url' 'gopher://x' is not of the form http://HOST:PORT"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1"}, "application/json", 400,
     "bandwidth: dst is required"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h2", "max_duration": 1e9},
     "application/json", 400, "bandwidth: max_duration 1000000000.0 is out of range [1, 60]"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h2", "rate": 1},
     "application/json", 400, "bandwidth: unknown field 'rate'"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h42"}, "application/json", 404,
     "bandwidth: src 'h1' is not a known agent name or data IP"),
    ("POST", "/measure/v1/reports", {"task_id": "1"}, "application/json", 404,
     "unknown task 1"),
])
def test_errors_are_json_with_the_right_status(h, method, path, body, ctype, status, error):
    if ctype is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    assert h.call(method, path, body, ctype) == (status, {"error": error})


def test_reports_give_results_and_events(h):
    h.register(1, 2, 3)
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    assert h.call("GET", "/measure/v1/tasks/1/result") == (
        404, {"error": "no result yet for task 1 (pending)"})
    status, body = h.call("POST", "/measure/v1/reports",
                          hh_report("1", ["h1", "h2"], ["h3"], 1000.0, {"10.0.0.2,10.0.0.5": 900}))
    assert status == 202 and body["accepted"] is True and len(body["events"]) == 1
    status, result = h.call("GET", "/measure/v1/tasks/1/result")
    assert status == 200
    assert result["covered"] == ["h1", "h2"] and result["missing"] == ["h3"]
    assert result["heavy_hitters"] == {"10.0.0.2,10.0.0.5": 900} and result["age"] == 0.0
    status, per_host = h.call("GET", "/measure/v1/tasks/1/result?host=10.0.0.2")
    assert status == 200 and per_host["host"] == "h2" and per_host["total"] == 600
    assert h.call("GET", "/measure/v1/tasks/1/result?host=h7") == (
        404, {"error": "no result yet for task 1 for host h7 (pending)"})
    status, events = h.call("GET", "/measure/v1/events")
    assert [(e["id"], e["kind"], e["key"]) for e in events["events"]] == [
        (1, "heavy_hitter", "10.0.0.2,10.0.0.5")]
    h.call("POST", "/measure/v1/reports", hh_report("1", ["h1", "h2"], ["h3"], 1005.0, {}))
    for end in (1010.0, 1015.0):  # missing twice in a row, then back: one start, one end
        h.call("POST", "/measure/v1/reports", hh_report("1", ["h1", "h2", "h3"], [], end, {}))
    status, events = h.call("GET", "/measure/v1/events?since=1")
    assert [(e["id"], e["kind"], e["state"], e["missing"]) for e in events["events"]] == [
        (2, "coverage", "start", ["h3"]), (3, "coverage", "end", [])]
    assert events["events"][0]["reasons"] == {"h3": "late"}
    assert h.call("POST", "/measure/v1/reports", {"task_id": "1", "interval_end": "x"}) == (
        400, {"error": "report: field 'interval_end' must be a time from 0 to 1e+13"})


def test_task_goes_to_the_root_with_the_agent_count(h):
    h.register(1, 2, 3)
    h.tick()
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters",
                                         "threshold_abs": 300})
    h.tick()
    puts = [(u, body) for m, u, body in h.agents.calls if m == "PUT" and "/tasks/" in u]
    assert [u for u, _ in puts] == ["http://192.168.100.1:8000/agent/v1/tasks/1"]
    assert puts[0][1]["_overlay"] == {"agents": 3}
    assert {k: v for k, v in puts[0][1].items() if k != "_overlay"} == \
        h.service.tasks["1"].task.to_dict()


def test_delete_without_a_reachable_root_is_retried_until_a_root_acknowledges(h):
    h.register(1, 2)
    h.tick()
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    h.tick()
    assert h.agents.tasks["1"] == {"h1", "h2"}
    h.agents.down.update({"h1", "h2"})
    assert h.call("DELETE", "/measure/v1/tasks/1")[0] == 200
    h.tick()
    assert "1" in h.agents.tasks and h.service.pushes.deletes == {"1"}
    for _ in range(7):  # both stop heartbeating: no live root at all for a while
        h.tick()
    assert h.service._root_url() is None and h.service.pushes.deletes == {"1"}
    h.agents.down.clear()
    h.register(1, 2)
    h.tick()
    assert "1" not in h.agents.tasks and h.service.pushes.deletes == set()
    assert h.agents.sent("DELETE", "/agent/v1/tasks/1")[-1] == h.service.overlay.root


def test_a_root_reporting_a_deleted_task_is_told_to_delete_it(h):
    """After a restart the controller holds no queued deletion: a report of a task it
    does not hold (ids are never reused) makes it send the DELETE to the root."""
    h.register(1, 2)
    h.tick()
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    h.tick()
    assert h.call("POST", "/measure/v1/reports", hh_report("9", ["h1", "h2"], [], 1005.0, {})
                  ) == (404, {"error": "unknown task 9"})
    assert h.service.pushes.deletes == {"9"}
    h.tick()
    assert h.agents.sent("DELETE", "/agent/v1/tasks/9") == [h.service.overlay.root]
    assert h.service.pushes.deletes == set() and "1" in h.service.tasks
    status, reply = h.call("POST", "/measure/v1/agents", {
        "name": "h3", "url": "http://192.168.100.3:8000", "data_ip": "10.0.0.3"})
    assert status == 201 and reply["tasks"] == ["1"]  # what the agent may keep


def test_history_lists_past_results_newest_first(h):
    h.register(1, 2, 3)
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    assert h.call("GET", "/measure/v1/tasks/1/history") == (
        200, {"task_id": "1", "host": "*", "results": []})
    for i, end in enumerate((1000.0, 1005.0, 1010.0)):
        h.clock = end
        assert h.call("POST", "/measure/v1/reports", hh_report(
            "1", ["h1", "h2", "h3"], [], end, {"10.0.0.2,10.0.0.5": 900 + i}))[0] == 202
    status, hist = h.call("GET", "/measure/v1/tasks/1/history")
    assert status == 200 and (hist["task_id"], hist["host"]) == ("1", "*")
    assert [(r["interval_end"], r["total"], r["age"]) for r in hist["results"]] == [
        (1010.0, 902, 0.0), (1005.0, 901, 5.0), (1000.0, 900, 10.0)]
    status, hist = h.call("GET", "/measure/v1/tasks/1/history?host=10.0.0.2&limit=2")
    assert (status, hist["host"]) == (200, "h2")
    assert [(r["host"], r["interval_end"], r["total"]) for r in hist["results"]] == [
        ("h2", 1010.0, 600), ("h2", 1005.0, 600)]
    assert h.call("GET", "/measure/v1/tasks/1/history?limit=1001") == (
        400, {"error": "query parameter 'limit' must be an integer from 1 to 1000"})
    assert h.call("GET", "/measure/v1/tasks/1/history?limit=x") == (
        400, {"error": "query parameter 'limit' must be an integer from 1 to 1000"})
    assert h.call("GET", "/measure/v1/tasks/7/history") == (404, {"error": "unknown task 7"})


def test_agent_failure_moves_the_root_and_rejoin_gets_tasks_again(h):
    h.register(*range(1, 10))
    h.tick()
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    h.tick()
    assert h.service.overlay.root == "h1"
    # h1 dies: heartbeats from the others only, for longer than the timeout.
    h.agents.down.add("h1")
    for _ in range(7):
        for i in range(2, 10):
            h.call("POST", f"/measure/v1/agents/h{i}/heartbeat")
        h.tick()
    status, overlay = h.call("GET", "/measure/v1/overlay")
    assert overlay["root"] != "h1" and "h1" not in overlay["parent"]
    assert set(overlay["parent"]) == {f"h{i}" for i in range(2, 10)}
    new_root = overlay["root"]
    assert h.agents.sent("PUT", "/agent/v1/tasks/1")[-1] == new_root
    assert h.call("GET", "/measure/v1/agents")[1]["agents"][0]["up"] is False
    # h1 restarts and registers again: it gets its place and the task is re-sent.
    h.agents.down.discard("h1")
    before = len(h.agents.sent("PUT", "/agent/v1/tasks/1"))
    h.register(1)
    h.tick()
    assert "h1" in h.service.overlay.parent
    assert h.agents.overlay["h1"]["epoch"] == h.service.epoch
    assert len(h.agents.sent("PUT", "/agent/v1/tasks/1")) == before + 1
    assert "h1" in h.agents.tasks["1"]
    # the root is deterministic: h1, first of the equally central agents, is root again
    assert h.service.overlay.root == "h1" != new_root


def test_unreachable_root_keeps_the_task_pending_until_it_answers(h):
    h.register(1)
    h.tick()
    h.agents.down.add("h1")
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    h.tick()
    task = h.call("GET", "/measure/v1/tasks/1")[1]
    assert task["status"] == "pending"
    assert task["last_error"] == ("root h1: PUT http://192.168.100.1:8000/agent/v1/tasks/1: "
                                  "ConnectTimeout")
    h.agents.down.clear()
    h.tick()
    assert h.call("GET", "/measure/v1/tasks/1")[1]["status"] == "active"


def test_partial_install_is_retried_every_ten_seconds(h):
    h.register(1, 2, 3)
    h.tick()
    h.agents.refusing.add("h3")
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    h.tick()
    task = h.call("GET", "/measure/v1/tasks/1")[1]
    assert task["status"] == "partial" and task["last_error"] == "failed on h3"
    assert task["agents"]["h3"] == "error: HTTP 507: sketch memory limit"
    for _ in range(9):
        h.beat(1, 2, 3)
        h.tick()
    assert len(h.agents.sent("PUT", "/agent/v1/tasks/1")) == 1
    h.agents.refusing.clear()
    h.beat(1, 2, 3)
    h.tick()
    assert len(h.agents.sent("PUT", "/agent/v1/tasks/1")) == 2
    task = h.call("GET", "/measure/v1/tasks/1")[1]
    assert task["status"] == "active" and task["agents"]["h3"] == "ok"


def test_unreachable_root_costs_one_timeout_per_tick(h):
    h.register(1)
    h.tick()
    h.agents.down.add("h1")
    h.call("POST", "/measure/v1/tasks", {"tasks": [{"name": "a", "kind": "counter"},
                                                   {"name": "b", "kind": "counter"}]})
    before = len(h.agents.calls)
    h.tick()
    assert [u for _, u, _ in h.agents.calls[before:]] == [
        "http://192.168.100.1:8000/agent/v1/tasks/1"]


def test_agent_with_a_newer_epoch_moves_the_controller_past_it(h):
    # e.g. the controller's state directory was lost while agents kept running
    h.agents.overlay["h1"] = {"epoch": 7}
    h.register(1, 2)
    h.tick()
    assert h.service.epoch == 8
    h.tick()
    assert h.agents.overlay["h1"]["epoch"] == 8 and h.agents.overlay["h2"]["epoch"] == 8
    assert h.service.store.get_meta("overlay_epoch") == "8"


def test_store_failure_in_tick_is_logged_not_raised(h, caplog):
    h.register(1)
    h.service.store._db.execute("PRAGMA busy_timeout = 50")
    locker = sqlite3.connect(h.service.store.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        h.tick()  # the overlay epoch cannot be stored
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert f"tick: store {h.service.store.path}: database is locked" in caplog.text
    h.tick()
    assert h.service.overlay.root == "h1"


def test_tasks_and_epoch_survive_a_controller_restart(h, tmp_path):
    h.register(1, 2, 3, 5)
    h.tick()
    h.call("POST", "/measure/v1/tasks", POLICY, "application/yaml")
    h.tick()
    epoch = h.service.epoch
    h.service.store.close()
    again = Harness(h.state_dir)
    status, tasks = again.call("GET", "/measure/v1/tasks")
    assert [(t["id"], t["name"], t["status"]) for t in tasks["tasks"]] == [
        ("1", "hh-icmp", "pending"), ("2", "scan", "pending")]
    again.register(1, 2, 3, 5)
    again.tick()
    assert again.service.epoch == epoch + 1  # agents refuse older epochs
    assert again.agents.sent("PUT", "/agent/v1/tasks/1") == ["h1"]
    assert again.call("GET", "/measure/v1/tasks/2")[1]["status"] == "active"


def test_first_report_after_a_restart_is_compared_with_the_stored_result(h):
    """A restarted controller raises events against the last stored result, whether or
    not someone read the result first: a heavy hitter from before is not new again."""
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    hh = {"10.0.0.2,10.0.0.5": 900}
    assert h.call("POST", "/measure/v1/reports", hh_report("1", ["h1", "h2"], ["h3"], 1000.0, hh)
                  ) == (202, {"accepted": True, "events": [1]})
    h.service.store.close()
    again = Harness(h.state_dir)
    assert again.call("POST", "/measure/v1/reports",
                      hh_report("1", ["h1", "h2", "h3"], [], 1005.0, hh)
                      ) == (202, {"accepted": True, "events": []})
    status, events = again.call("GET", "/measure/v1/events")
    assert [(e["id"], e["kind"], e["interval_end"]) for e in events["events"]] == [
        (1, "heavy_hitter", 1000.0)]


def test_bandwidth_resolves_hosts_and_calls_the_source_agent(h):
    h.register(5, 6)
    status, body = h.call("POST", "/measure/v1/bandwidth",
                          {"src": "h5", "dst": "10.0.0.6", "max_duration": 5})
    assert status == 200
    assert body == {"mbit_s": 9.6, "method": "slops", "src": "h5", "dst": "h6"}
    method, url, sent = h.agents.calls[-1]
    assert (method, url) == ("POST", "http://192.168.100.5:8000/agent/v1/bandwidth")
    assert sent == {"dst_ip": "10.0.0.6", "dst_url": "http://192.168.100.6:8000",
                    "method": "slops", "max_duration": 5.0, "max_bytes": 20_000_000}
    h.agents.bandwidth_reply = (409, {"error": "a probe between h5 and h6 is running"})
    assert h.call("POST", "/measure/v1/bandwidth", {"src": "h5", "dst": "h6"}) == (
        502, {"error": "bandwidth: agent h5: HTTP 409: a probe between h5 and h6 is running"})
    h.agents.down.add("h5")
    assert h.call("POST", "/measure/v1/bandwidth", {"src": "h5", "dst": "h6"}) == (
        503, {"error": "bandwidth: agent h5 unreachable: POST "
                       "http://192.168.100.5:8000/agent/v1/bandwidth: ConnectTimeout"})
    h.clock += 100
    h.service.tick(h.clock)
    assert h.call("POST", "/measure/v1/bandwidth", {"src": "h5", "dst": "h6"}) == (
        503, {"error": "bandwidth: agent h5 (src) is down"})


def test_peer_key_resolves_the_peer_and_refuses_bad_requests(h):
    h.register(5, 6)
    key = "/measure/v1/agents/h5/peer-key"
    # without a secret (this harness) there is no credential to hand out
    assert h.call("POST", key, {"peer": "10.0.0.6"}) == (200, {
        "dst_name": "h6", "dst_url": "http://192.168.100.6:8000", "dst_ip": "10.0.0.6",
        "dst_key": None})
    assert h.call("POST", key, {"peer": "h7"}) == (
        404, {"error": "peer-key: peer 'h7' is not a known agent name or data IP"})
    assert h.call("POST", key, {"peer": "h5"}) == (
        400, {"error": "peer-key: field 'peer' names the caller h5 itself"})
    assert h.call("POST", key, {"peer": "h6", "x": 1}) == (
        400, {"error": "peer-key: field 'x' is not allowed (only 'peer')"})
    assert h.call("POST", key, {})[0] == 400 and "'peer'" in h.call("POST", key, {})[1]["error"]
    assert h.call("POST", "/measure/v1/agents/h9/peer-key", {"peer": "h6"}) == (
        404, {"error": "peer-key: agent h9 is not registered (register again)"})
    assert h.call("POST", "/measure/v1/agents", {
        "name": "h7", "url": "http://192.168.100.7:8000"})[0] == 201
    assert h.call("POST", key, {"peer": "h7"}) == (
        409, {"error": "peer-key: agent h7 registered no data_ip"})
    h.clock += 100
    h.service.tick(h.clock)
    h.beat(5)
    assert h.call("POST", key, {"peer": "h6"}) == (
        503, {"error": "peer-key: agent h6 (peer) is down"})


def test_bandwidth_task_in_a_policy_runs_once_and_stores_its_result(h):
    h.call("POST", "/measure/v1/tasks",
           {"name": "bw", "kind": "bandwidth", "src": "h5", "dst": "h6"})
    h.tick()  # agents not registered yet: stays pending
    task = h.call("GET", "/measure/v1/tasks/1")[1]
    assert task["status"] == "pending"
    assert task["last_error"] == "bandwidth: src 'h5' is not a known agent name or data IP"
    h.register(5, 6)
    h.tick()
    assert h.call("GET", "/measure/v1/tasks/1")[1]["status"] == "done"
    status, result = h.call("GET", "/measure/v1/tasks/1/result")
    assert status == 200 and result["mbit_s"] == 9.6 and result["src"] == "h5"
    calls = len(h.agents.calls)
    h.tick()
    assert len(h.agents.calls) == calls  # not repeated
    h.agents.bandwidth_reply = (504, {"error": "probe timed out"})
    h.call("POST", "/measure/v1/tasks",
           {"name": "bw2", "kind": "bandwidth", "src": "h6", "dst": "h5", "method": "bulk"})
    h.tick()
    task = h.call("GET", "/measure/v1/tasks/2")[1]
    assert (task["status"], task["last_error"]) == (
        "failed", "bandwidth: agent h6: HTTP 504: probe timed out")
    assert h.agents.calls[-1][2]["method"] == "bulk"
    assert h.service.store.task("2")["status"] == "failed"
    assert h.call("GET", "/measure/v1/tasks/2/result")[0] == 404


def test_authentication_for_people_and_agents(tmp_path):
    secret = b"s" * 43
    token = "t" * 43
    verifier = Verifier.for_controller(secret)
    h = Harness(str(tmp_path / "state"),
                auth=AuthConfig(token=token, secret=secret, verifier=verifier))
    body = {"name": "c", "kind": "counter"}
    assert h.call("POST", "/measure/v1/tasks", body) == (
        401, {"error": "missing bearer token (send 'Authorization: Bearer <token>')"})
    assert h.call("POST", "/measure/v1/tasks", body,
                  headers={"Authorization": "Bearer nope"}) == (
        401, {"error": "invalid bearer token"})
    assert h.call("GET", "/measure/v1/tasks")[0] == 401
    assert h.service.store.tasks() == []
    ok = {"Authorization": f"Bearer {token}"}
    assert h.call("POST", "/measure/v1/tasks", body, headers=ok)[0] == 201
    assert h.call("GET", "/measure/v1/tasks", headers=ok)[0] == 200
    # An agent signs its registration with its own key.
    import requests

    reg = {"name": "h1", "url": "http://192.168.100.1:8000", "data_ip": "10.0.0.1"}
    prepared = requests.Request("POST", "http://c/measure/v1/agents", json=reg).prepare()
    as_agent(secret, "h1")(prepared)
    req = Request.blank("/measure/v1/agents", method="POST", body=prepared.body,
                        content_type="application/json",
                        headers={k: v for k, v in prepared.headers.items()
                                 if k.startswith("X-Measure")})
    assert req.get_response(h.wsgi).status_int == 201
    assert req.get_response(h.wsgi).status_int == 401  # replayed
    h.service.auth.reads_open = True
    assert h.call("GET", "/measure/v1/agents")[0] == 200


def test_store_trouble_is_503_and_unexpected_errors_are_500_without_details(h):
    h.service.store._db.execute("PRAGMA busy_timeout = 50")
    locker = sqlite3.connect(h.service.store.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        status, body = h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert (status, body) == (503, {"error": f"store {h.service.store.path}: database is locked"})
    assert h.call("GET", "/measure/v1/tasks") == (200, {"tasks": []})

    def broken():
        raise RuntimeError("secret internals")

    h.service.list_tasks = broken
    assert h.call("GET", "/measure/v1/tasks") == (
        500, {"error": "internal error (logged by the controller)"})


HOSTILE_PATHS = [
    ("GET", "/measure/v1/tasks/%ff", "request path is not valid UTF-8"),
    ("GET", "/measure/v1/%ff", "request path is not valid UTF-8"),
    ("GET", "/measure/v1/agents/%ff/heartbeat", "request path is not valid UTF-8"),
    ("POST", "/measure/v1/agents/%ff/heartbeat", "request path is not valid UTF-8"),
    ("GET", "/measure/v1/tasks/1/result?host=%ff", "request query is not valid UTF-8"),
    ("GET", "/measure/v1/events?since=%ff", "request query is not valid UTF-8"),
    ("GET", "/measure/v1/events?since=1%0a", "request query contains a control character"),
    ("GET", "/measure/v1/a%0ab", "request path contains a control character"),
    ("DELETE", "/measure/v1/tasks/1%0a", "request path contains a control character"),
    ("GET", "/measure/v1/tasks/1%00", "request path contains a control character"),
]


@pytest.mark.parametrize("secured", [False, True])
@pytest.mark.parametrize("method,path,error", HOSTILE_PATHS)
def test_hostile_paths_get_a_json_400_and_change_nothing(tmp_path, method, path, error, secured):
    token = "t" * 43
    auth = AuthConfig(token=token, secret=b"s" * 43, verifier=Verifier.for_controller(b"s" * 43)) \
        if secured else None
    h = Harness(str(tmp_path / "state"), auth=auth)
    ok = {"Authorization": f"Bearer {token}"}
    assert h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"},
                  headers=ok)[0] == 201
    for headers in ({}, ok):
        assert h.call(method, path, headers=headers) == (400, {"error": error})
    assert [t["id"] for t in h.call("GET", "/measure/v1/tasks", headers=ok)[1]["tasks"]] == ["1"]


def test_report_bodies_may_be_16_mib_other_bodies_1_mib(h):
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter"})
    big = hh_report("1", ["h1"], [], 1000.0, {})
    big["pad"] = "x" * (2 * 1024 * 1024)
    assert h.call("POST", "/measure/v1/reports", big) == (
        400, {"error": "report: unknown field 'pad'"})
    assert h.call("POST", "/measure/v1/reports", b" " * (16 * 1024 * 1024 + 1)) == (
        413, {"error": "body of 16777217 bytes is more than the limit of 16777216"})
    assert h.call("POST", "/measure/v1/agents", b" " * (1024 * 1024 + 1)) == (
        413, {"error": "body of 1048577 bytes is more than the limit of 1048576"})


def test_corrupt_store_stops_the_service_with_a_clear_error(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "measure.db").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match=r"measure\.db: file is not a database$"):
        Harness(str(state))


# ---------------------------------------------------------------- real processes

def test_controller_process_with_real_agents_keeps_tasks_across_restart(controller_factory,
                                                                        tmp_path):
    """``python -m ryu_app`` + three API-only agents on loopback, signed both ways."""
    import os
    import subprocess
    import sys

    import requests

    from testing.controllers import credentials, state_env
    from testing.netns import ROOT
    from testing.procs import free_port, stop_process, wait_until

    state = tmp_path / "state"
    port = free_port()
    env = state_env(state, port, MEASURE_FANOUT="2")
    ctl = controller_factory(rest_port=port, env=env)
    auth = credentials(state)
    agents = []

    def get(path):
        resp = requests.get(f"{ctl.url}/measure/v1{path}", headers=auth, timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    try:
        for i in (1, 2, 3):
            agent_port = free_port()
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "host_agent", "--name", f"a{i}", "--controller", ctl.url,
                 "--listen", "127.0.0.1", "--port", str(agent_port),
                 "--advertise", f"http://127.0.0.1:{agent_port}", "--no-capture",
                 "--secret-file", str(state / "agent.secret"), "--data-ip", f"10.99.0.{i}"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ}))
        overlay = wait_until(lambda: (o := get("/overlay")) and len(o["parent"]) == 3 and o,
                             timeout=20, message="three agents in the overlay")
        # Not in the topology (no switches here): the first agent seen stays root.
        root = overlay["root"]
        assert overlay["children"][root] == sorted({"a1", "a2", "a3"} - {root})
        with open(os.path.join(ROOT, "policies", "flow_size_distribution.yaml"), "rb") as f:
            policy = f.read()
        resp = requests.post(f"{ctl.url}/measure/v1/tasks", data=policy, timeout=5,
                             headers={"Content-Type": "application/yaml"})
        assert resp.status_code == 401
        resp = requests.post(f"{ctl.url}/measure/v1/tasks", data=policy, timeout=5,
                             headers={**auth, "Content-Type": "application/yaml"})
        assert resp.status_code == 201 and resp.json() == {
            "tasks": [{"id": "1", "name": "flow-size-icmp"}]}
        everyone = {"a1": "ok", "a2": "ok", "a3": "ok"}
        wait_until(lambda: get("/tasks/1")["agents"] == everyone, timeout=15,
                   message="task installed on every agent")
        assert get("/tasks/1")["status"] == "active"
        epoch = get("/overlay")["epoch"]

        stop_process(ctl.proc)
        ctl = controller_factory(rest_port=port, env=env)
        tasks = get("/tasks")["tasks"]
        assert [(t["id"], t["name"]) for t in tasks] == [("1", "flow-size-icmp")]
        # Agents notice (heartbeat 404), register again, and get the task from the new root.
        wait_until(lambda: get("/tasks/1")["agents"] == everyone
                   and get("/tasks/1")["status"] == "active", timeout=20,
                   message="task active again after the restart")
        assert get("/overlay")["epoch"] > epoch
    finally:
        for proc in agents:
            stop_process(proc)


# ---------------------------------------------------------------- path health

def test_path_health_peers_are_checked_and_nothing_is_stored(h):
    h.register(1, 2, 3)
    assert h.call("POST", "/measure/v1/tasks", {
        "name": "mesh", "kind": "path_health", "peers": ["h1", "h7"]}) == (
        404, {"error": "task mesh: peers host 'h7' is not a known agent"})
    status, body = h.call("POST", "/measure/v1/tasks", {
        "name": "mesh", "kind": "path_health", "probe_rate": 1000})
    assert status == 400 and "probe_rate" in body["error"]
    h.service.probe_budget_bps = 20_000  # 2 pairs per host at 10/s of 106 bytes: 16,960
    status, body = h.call("POST", "/measure/v1/tasks", {
        "name": "mesh", "kind": "path_health", "peers": "all", "probe_rate": 20})
    assert status == 400 and body["error"].startswith("task mesh: peers all over 3 hosts")
    assert "probe budget" in body["error"]
    assert h.call("GET", "/measure/v1/tasks") == (200, {"tasks": []})


def test_path_health_goes_out_with_its_pairs_resolved(h):
    h.register(1, 2, 3, 4, 5, 6, 7, 8, 9)
    h.tick()
    assert h.call("POST", "/measure/v1/tasks", {"name": "all", "kind": "path_health"})[0] == 201
    assert h.call("POST", "/measure/v1/tasks", {"name": "few", "kind": "path_health",
                                                "peers": ["h1", "10.0.0.5"]})[0] == 201
    assert h.call("POST", "/measure/v1/tasks", {"name": "auto", "kind": "path_health",
                                                "peers": "auto"})[0] == 201
    h.tick()
    bodies = {body["name"]: body for m, u, body in h.agents.calls
              if m == "PUT" and "/tasks/" in u}
    every = bodies["all"]["probe_targets"]
    assert len(every) == 9 * 8 // 2
    assert {"src": "h1", "dst": "h2", "address": "10.0.0.2"} in every
    assert bodies["few"]["probe_targets"] == [{"src": "h1", "dst": "h5", "address": "10.0.0.5"}]
    auto = bodies["auto"]["probe_targets"]
    assert len(auto) < len(every)
    crossed: dict = {}
    for t in auto:  # every access link and every switch link of the tree, twice
        for link in h.service._links_of(t["src"], t["dst"]):
            crossed[link] = crossed.get(link, 0) + 1
    assert len(crossed) == 9 + 3 and min(crossed.values()) >= 2


def test_path_health_report_gives_pairs_and_each_hosts_rows(h):
    from host_agent.probes.session import PairSession
    h.register(1, 2, 3)
    h.call("POST", "/measure/v1/tasks", {"name": "mesh", "kind": "path_health"})

    def entry(rtts, lost):
        s = PairSession("x", "10.0.0.9")
        for i, rtt in enumerate(rtts):
            seq = s.sent(10 ** 18 + i)
            if i not in lost:
                s.answer(seq, 10 ** 18 + i + int(rtt * 1e6), 0, seq + 1)
        return s.close(2 * 10 ** 18)

    cost = {"packets_per_s": 40.0, "bytes_per_s": 3680.0, "cpu_seconds_per_s": 0.002}
    snap = {"paths": {"h1>h2": entry([1.0] * 10, {3}), "h3>h1": entry([2.0] * 10, set())},
            "probes": {"h1": cost, "h3": cost}, "covered": ["h1", "h2", "h3"],
            "missing": [], "generated_at": 1000.0, "oldest": 1000.0}
    report = {"task_id": "1", "interval_end": 1000.0, "kind": "path_health",
              "snapshot": snap, "covered": ["h1", "h2", "h3"], "missing": [],
              "generated_at": 1000.0, "oldest": 1000.0,
              "per_host": {n: {"generated_at": 1000.0} for n in ("h1", "h2", "h3")}}
    assert h.call("POST", "/measure/v1/reports", report)[0] == 202
    status, result = h.call("GET", "/measure/v1/tasks/1/result")
    assert status == 200 and "paths" not in result
    rows = {(r["src"], r["dst"]): r for r in result["pairs"]}
    assert rows[("h1", "h2")]["loss"] == 0.1 and rows[("h3", "h1")]["loss"] == 0.0
    assert rows[("h1", "h2")]["rtt_ms"]["p50"] == pytest.approx(1.0, rel=0.02)
    assert result["probe_cost"]["max"]["bytes_per_s"] == 3680.0
    status, mine = h.call("GET", "/measure/v1/tasks/1/result?host=h2")
    assert status == 200 and [(r["src"], r["dst"]) for r in mine["pairs"]] == [("h1", "h2")]
    bad = {**report, "snapshot": {**snap, "paths": {"h1>h2": {"sent": 1, "lost": 5}}}}
    status, body = h.call("POST", "/measure/v1/reports", bad)
    assert status == 400 and "lost <= sent" in body["error"]


def test_a_policy_with_several_errors_lists_every_one_with_did_you_mean(h):
    yaml = ("tasks:\n  - {name: a, kind: counter, threshhold: 0.1}\n"
            "  - {name: b, kind: heavy_hitters, key: srcdst}\n")
    status, body = h.call("POST", "/measure/v1/tasks", yaml.encode(), "application/yaml")
    assert status == 400
    assert body["error"].startswith("policy request: task a: unknown field 'threshhold'")
    assert body["errors"][0] == ("policy request: task a: unknown field 'threshhold' "
                                 "(did you mean 'threshold'?)")
    assert len(body["errors"]) == 2 and "task b: key 'srcdst'" in body["errors"][1]
    assert h.call("GET", "/measure/v1/tasks")[1]["tasks"] == []


def test_a_misspelt_scope_host_is_a_404_naming_scope_and_stores_nothing(h):
    h.register(5)
    status, body = h.call("POST", "/measure/v1/tasks",
                          {"name": "hh", "kind": "heavy_hitters", "scope": ["h55"]})
    assert (status, body) == (404, {"error": "task hh: scope host 'h55' is not a known agent "
                                             "(name, data address or URL host)"})
    assert h.call("GET", "/measure/v1/tasks")[1]["tasks"] == [] and h.service.store.tasks() == []
    for ref in ("h5", "10.0.0.5", "192.168.100.5"):
        status, body = h.call("POST", "/measure/v1/tasks",
                              {"name": f"hh-{ref}", "kind": "heavy_hitters", "scope": [ref]})
        assert status == 201, body


def test_host_result_is_fetched_from_the_agent_else_its_parent(h):
    """``?host=``: one request to that agent; when it is down, its overlay parent's copy
    of its last line; when neither answers, what the store has (the root's own line)."""
    h.register(1, 2, 3)
    h.tick()  # the overlay tree is placed
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    h.call("POST", "/measure/v1/reports",
           hh_report("1", ["h1", "h2", "h3"], [], 1000.0, {"10.0.0.2,10.0.0.5": 900}))
    line = {"interval_end": 1000.0, "packets": 7, "bytes": 700, "total": 7,
            "heavy_hitters": {}, "generated_at": 1000.0}
    h.agents.host_lines[("h3", "1", "h3")] = [line, {**line, "interval_end": 995.0}]
    h.agents.calls.clear()
    status, res = h.call("GET", "/measure/v1/tasks/1/result?host=h3")
    assert status == 200 and (res["host"], res["packets"], res["interval_end"]) == (
        "h3", 7, 1000.0)
    assert [u for m, u, _ in h.agents.calls if m == "GET"] == [
        "http://192.168.100.3:8000/agent/v1/tasks/1/hosts/h3?limit=1"]
    status, hist = h.call("GET", "/measure/v1/tasks/1/history?host=h3&limit=5")
    assert status == 200 and [r["interval_end"] for r in hist["results"]] == [1000.0, 995.0]
    parent = h.service.overlay.parent["h3"]
    assert parent == "h1"  # h3 is below h1: its parent answers when h3 is down
    h.agents.down.add("h3")
    h.agents.host_lines[(parent, "1", "h3")] = [{**line, "packets": 8}]
    status, res = h.call("GET", "/measure/v1/tasks/1/result?host=h3")
    assert status == 200 and res["packets"] == 8
    h.agents.down.update({"h1", "h2", "h3"})
    assert h.call("GET", "/measure/v1/tasks/1/result?host=h3")[0] == 404  # not in the store
