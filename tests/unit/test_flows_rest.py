"""Active flows and sampled results at the controller (REST, no network).

Reports carry real counter snapshots; two agents' snapshots are merged with
``report.merge``, the function every overlay parent uses, so the flows the
controller lists are the network-wide merge of the agents' flow counters.
"""

from __future__ import annotations

import pytest

from host_agent.counters.countmin import Counter, CounterSpec
from measure_model.packet.keys import HeaderBatch, parse_key
from measure_model.wire.report import merge
from ryu_app.launcher import patch_eventlet

patch_eventlet()

from testing.harness import Harness  # noqa: E402

pytestmark = pytest.mark.unit

END = 1000.0


def snapshot(flows: dict[str, list[int]], increment: str = "bytes") -> dict:
    """A real five_tuple counter's snapshot: each flow key sent as packets of these sizes."""
    counter = Counter(CounterSpec(key="five_tuple", increment=increment, top_k=10), now=END - 1)
    cols: list[list[int]] = [[], [], [], [], [], []]
    for key, sizes in flows.items():
        src, dst, _, sport, dport = key.split(",")
        for size in sizes:
            for col, value in zip(cols, (parse_key("src", src), parse_key("dst", dst), 6,
                                         int(sport), int(dport), size), strict=True):
                col.append(value)
    counter.update(HeaderBatch.from_arrays(*cols), END - 0.5)
    return counter.snapshot(END)


def report(task_id: str, snap: dict, covered: list[str]) -> dict:
    return {"task_id": task_id, "interval_end": END, "snapshot": snap, "covered": covered,
            "missing": [], "generated_at": END, "oldest": END, "per_host": {}}


@pytest.fixture
def h(tmp_path):
    harness = Harness(str(tmp_path))
    harness.register(1, 2)
    harness.tick()
    return harness


A = "10.0.0.1,10.0.0.2,tcp,40000,80"
B = "10.0.0.2,10.0.0.1,tcp,80,40000"
C = "10.0.0.1,10.0.0.2,tcp,40001,443"


def test_active_flows_merged_network_wide_and_sorted(h):
    assert h.call("POST", "/measure/v1/tasks", {"name": "fl", "kind": "flows"})[0] == 201
    h1 = snapshot({A: [1500] * 4, C: [100]})
    h2 = snapshot({A: [1500] * 2, B: [40] * 50})
    status, _ = h.call("POST", "/measure/v1/reports", report("1", merge(h1, h2), ["h1", "h2"]))
    assert status == 202
    status, body = h.call("GET", "/measure/v1/flows?task=1&top=2")
    assert status == 200
    assert body["flows"] == [{"flow": A, "bytes": 9000}, {"flow": B, "bytes": 2000}]
    assert body["by"] == "bytes" and body["covered"] == ["h1", "h2"] and "sampled" not in body
    assert h.call("GET", "/measure/v1/flows?task=1")[1]["flows"][2] == {"flow": C, "bytes": 100}


def test_flows_carry_their_duration_from_the_flow_caches_first_and_last_seen(h):
    """Each agent's flow cache times its listed flows; the merge takes the earliest first
    and the latest last; the controller lists first, last and duration per flow."""
    assert h.call("POST", "/measure/v1/tasks", {"name": "fl", "kind": "flows"})[0] == 201
    h1 = {**snapshot({A: [1500] * 4, C: [100]}), "flow_times": {A: [900.0, 990.0],
                                                                 C: [950.0, 950.5]}}
    h2 = {**snapshot({A: [1500] * 2, B: [40] * 50}), "flow_times": {A: [910.0, 999.25],
                                                                     B: [980.0, 999.0]}}
    merged = merge(h1, h2)
    assert merged["flow_times"] == {A: [900.0, 999.25], B: [980.0, 999.0], C: [950.0, 950.5]}
    assert h.call("POST", "/measure/v1/reports", report("1", merged, ["h1", "h2"]))[0] == 202
    rows = h.call("GET", "/measure/v1/flows?task=1")[1]["flows"]
    assert rows == [{"flow": A, "bytes": 9000, "first": 900.0, "last": 999.25, "duration": 99.25},
                    {"flow": B, "bytes": 2000, "first": 980.0, "last": 999.0, "duration": 19.0},
                    {"flow": C, "bytes": 100, "first": 950.0, "last": 950.5, "duration": 0.5}]
    # malformed times are refused with the field named
    bad = {**snapshot({A: [100]}), "flow_times": {A: [5.0, 4.0]}}
    status, body = h.call("POST", "/measure/v1/reports", report("1", bad, ["h1"]))
    assert status == 400 and "flow_times" in body["error"]


def test_flows_query_errors_name_the_parameter(h):
    h.call("POST", "/measure/v1/tasks", {"name": "fl", "kind": "flows"})
    h.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters"})
    for query, status, error in [
        ("", 400, "query parameter 'task' is required"),
        ("?task=x", 404, "unknown task 'x' (ids are positive integers)"),
        ("?task=1&top=0", 400, "query parameter 'top' must be an integer from 1 to 1000"),
        ("?task=1&by=flows", 400, "query parameter 'by' must be bytes or packets"),
        ("?task=1&by=packets", 409, "by: task 1 ranks its flows by bytes (its increment), "
                                    "not packets"),
        ("?task=2", 404, "task 2 is of kind heavy_hitters: it has no flows"),
        ("?task=9", 404, "unknown task 9"),
        ("?task=1", 404, "no result yet for task 1 (pending)"),
    ]:
        got = h.call("GET", f"/measure/v1/flows{query}")
        assert got[0] == status, (query, got)
        if error is not None:
            assert got[1] == {"error": error}


def test_sampled_results_are_scaled_and_carry_their_bound(h):
    h.call("POST", "/measure/v1/tasks", {"name": "c", "kind": "counter", "key": "five_tuple",
                                         "increment": "pkt", "sample": 0.1})
    snap = snapshot({A: [100] * 40, B: [100] * 10}, increment="pkt")
    h.call("POST", "/measure/v1/reports", report("1", snap, ["h1"]))
    status, result = h.call("GET", "/measure/v1/tasks/1/result")
    assert status == 200
    assert result["packets"] == 500 and result["total"] == 500 and result["bytes"] == 50000
    assert result["top_k"] == [[A, 400], [B, 100]]
    assert result["sampled"] == {"probability": 0.1, "mode": "random", "sampled_packets": 50,
                                 "packets_estimate": 500, "packets_bound": 220.7,
                                 "relative_bound": 0.4414}
    history = h.call("GET", "/measure/v1/tasks/1/history")[1]["results"]
    assert history[0]["packets"] == 500 and history[0]["sampled"]["probability"] == 0.1


def test_cli_renders_flows_as_a_table():
    from measure_cli.render import render_flows

    text = render_flows({"task_id": "3", "by": "bytes", "covered": ["h1", "h2"],
                         "flows": [{"flow": A, "bytes": 9000, "bps": 2_050_000.0, "pps": 250.0,
                                    "first": 100.0, "last": 3825.5, "duration": 3725.5},
                                   {"flow": B, "bytes": 200}],
                         "sampled": {"probability": 0.1, "mode": "random",
                                     "relative_bound": 0.05}},
                        [{"name": "h1", "data_ip": "10.0.0.1"}])
    assert text.splitlines() == [
        "task 3  active flows by bytes  covered h1,h2  sampled p=0.1 (random, +-5.0% of packets)",
        "SRC       DST       PROTO  SPORT  DPORT  HOSTS    DURATION   BYTES (SINCE START)  NOW",
        "10.0.0.1  10.0.0.2  tcp    40000  80     h1 -> ?  1 h 2 min                 9000  "
        "2.05 Mbit/s",
        "10.0.0.2  10.0.0.1  tcp    80     40000  ? -> h1  -                          200  -"]
    assert render_flows({"task_id": "3", "flows": []}).endswith("no active flows")


@pytest.mark.parametrize("fields, message", [
    ({"export": [{"collector": "10.0.0.9"}]},
     "export[0].collector '10.0.0.9' is not host:port with a port 1..65535"),
    ({"export": [{"collector": 4739}]},
     "export[0].collector must be a string 'host:port', not int"),
    ({"sample": 0}, "sample 0 is out of range [1e-06, 1]"),
    ({"sample": 1.01}, "sample 1.01 is out of range [1e-06, 1]"),
    ({"idle_timeout": 0}, "idle_timeout 0 is out of range [1, 3600]"),
    ({"active_timeout": 86400}, "active_timeout 86400 is out of range [1, 3600]"),
    ({"max_flows": 10 ** 9}, "max_flows 1000000000 is out of range 16..1048576"),
])
def test_bad_flows_fields_are_400_naming_the_field(h, fields, message):
    """Also a null heartbeat body is refused (a body must be an object)."""
    status, body = h.call("POST", "/measure/v1/tasks", {"name": "fl", "kind": "flows", **fields})
    assert (status, body) == (400, {"error": f"policy request: task fl: {message}"})
    assert h.call("GET", "/measure/v1/tasks") == (200, {"tasks": []})


def test_cli_agents_table_shows_the_monitor_cost():
    from measure_cli.render import render_agents

    text = render_agents([{"name": "h1", "up": True, "url": "http://192.168.100.1:8000",
                           "data_ip": "10.0.0.1", "mac": None, "parent": None,
                           "monitor": {"cpu_seconds_per_s": 0.034, "rss_bytes": 41_200_000,
                                       "missed": 0}},
                          {"name": "h2", "up": False, "url": "http://192.168.100.2:8000",
                           "monitor": None}])
    head, one, two = text.splitlines()
    assert head.split() == ["NAME", "UP", "URL", "DATA", "IP", "MAC", "PARENT", "MONITOR",
                            "CPU", "RSS", "MB", "MISSED"]
    assert one.split()[-3:] == ["3.4%", "41.2", "0"] and two.split()[-3:] == ["-", "-", "-"]


def test_heartbeat_bodies(h):
    cost = {"restarts": 0, "crash_looping": False, "cpu_seconds": 2.0, "cpu_seconds_per_s": 0.1,
            "rss_bytes": 1000, "packets": 5, "missed": 0}
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat", {"monitor": cost})[0] == 200
    agents = {a["name"]: a for a in h.call("GET", "/measure/v1/agents")[1]["agents"]}
    assert agents["h1"]["monitor"] == cost and agents["h2"]["monitor"] is None
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat", None) == (200, {
        "name": "h1", "ok": True, "epoch": h.service.epoch, "unknown": []})
    # a root's heartbeat lists its subtree: known agents are seen, unknown ones named
    beat = {"subtree": {"h2": {"version": "0.2.0"}, "h9": {"version": "0.2.0"}}}
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat", beat) == (200, {
        "name": "h1", "ok": True, "epoch": h.service.epoch, "unknown": ["h9"]})
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat",
                  {"subtree": {"h2": {"version": "x"}}}) == (
        400, {"error": "heartbeat: field 'subtree'.h2: field 'version' must be a version "
                       "like 0.2.0"})
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat", b"null") == (
        400, {"error": "heartbeat: body must be a JSON object"})
    assert h.call("POST", "/measure/v1/agents/h1/heartbeat", {"monitor": {**cost, "x": 1}}) == (
        400, {"error": "heartbeat: field 'monitor': unknown field 'x'"})
