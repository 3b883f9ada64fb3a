"""Unit tier: the reactions model, planner and action manager with real modules.

The task model (``measure_model.task``), the topology (``ryu_app.net.topology``),
the SQLite store and the service are the real ones; only the clock and the
webhook POST are injected. The Mininet test (``test_reactions_mininet.py``)
runs the same code against OVS and Ryu.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from typing import Any

import pytest

from measure_model.policy import load_policy
from measure_model.task import PolicyError, Task, parse_tasks
from ryu_app import ofmsg
from ryu_app.errors import ServiceError
from ryu_app.reactions.actions import (
    ActionManager,
    Install,
    MeterAdd,
    MeterDelete,
    Remove,
    op_dpid,
)
from ryu_app.reactions.plan import ACTION_PRIORITY, REACTION_COOKIE, Output, Refused, SetField, plan
from ryu_app.service.core import MeasureService
from ryu_app.service.store import Store
from testing.checks import some
from testing.clock import Clock
from testing.fakeoftable import FakeOFTable
from testing.topologies import tree_topology as topology

MAC = {n: f"00:00:00:00:00:{n:02x}" for n in range(1, 10)}


def one(task: dict, **policy) -> Task:
    return parse_tasks({"tasks": [task], **policy}, "t")[0]


SCAN: dict[str, Any] = {"name": "scan", "kind": "port_scan",
        "on": [{"event": "port_scan", "action": "block", "duration": 10}]}
SCAN_EVENT = {"id": 7, "kind": "port_scan", "src": "10.0.0.6", "ports": 40}


class RecordedManager(ActionManager):
    """An ActionManager that keeps its clock and what it posted, for the tests."""

    clock: Clock
    posts: list


@pytest.fixture
def manager(tmp_path):
    clock = Clock(1000.0)
    posts: list = []

    def post(url, body, headers):
        posts.append((url, body, headers))
        return 204

    names = {f"h{n}": f"10.0.0.{n}" for n in range(1, 10)}
    m = RecordedManager(Store(str(tmp_path / "m.db")), topology(), names.get, clock,
                      secret=b"s3cret", post=post, protect=("192.168.100.0/24", "h1"),
                      max_active=3, max_new_per_minute=4)
    m.clock, m.posts = clock, posts
    return m


# ---------------------------------------------------------------- task model

@pytest.mark.parametrize("entry,message", [
    ({"event": "port_scan", "action": "block"}, "on[0].duration is required for action block"),
    ({"event": "scan", "action": "block", "duration": 5}, "on[0].event 'scan' is not one of"),
    ({"event": "port_scan", "action": "drop", "duration": 5}, "on[0].action 'drop' is not one"),
    ({"event": "port_scan", "action": "rate_limit", "mbit": 0, "duration": 5},
     "on[0].mbit 0 is out of range"),
    ({"event": "port_scan", "action": "mirror", "duration": 5}, "on[0].to is required"),
    ({"event": "port_scan", "action": "mark", "dscp": 64}, "on[0].dscp 64 is out of range"),
    ({"event": "port_scan", "action": "mark", "dscp": 1, "queue": 1},
     "on[0]: action mark needs exactly one of dscp"),
    ({"event": "port_scan", "action": "notify", "url": "ftp://x"}, "on[0].url must be an http"),
    ({"event": "port_scan", "action": "block", "duration": 5, "mbit": 3},
     "field 'on[0].mbit' does not apply to action block"),
    ({"event": "heavy_hitter", "action": "block", "duration": 5},
     "on[0].event heavy_hitter is raised by kind heavy_hitters, not port_scan"),
    ({"event": "threshold", "action": "notify", "url": "http://x"},
     "on[0].above is required for event threshold"),
    ({"event": "port_scan", "action": "block", "duration": 70000}, "on[0].duration 70000"),
    ({"event": "port_scan", "action": "block", "duration": 5, "mode": "try"},
     "on[0].mode 'try' is not one of enforce, dry_run"),
])
def test_bad_reactions_name_the_field(entry, message):
    with pytest.raises(PolicyError, match="task scan: " + re.escape(message)):
        one({"name": "scan", "kind": "port_scan", "on": [entry]})


def test_on_and_protect_round_trip_and_the_engine_events_are_accepted():
    tasks = load_policy(
        "protect: [h1, 10.0.9.0/24]\n"
        "tasks:\n"
        "  - name: hh\n    kind: heavy_hitters\n    key: five_tuple\n"
        "    on:\n"
        "      - {event: heavy_hitter, action: mirror, to: h9, duration: 30}\n"
        "      - {event: heavy_hitter, action: notify, url: 'http://10.0.0.1/x'}\n"
        "      - {event: threshold, above: 1000, action: mark, queue: 2, mode: dry_run}\n"
        "  - name: spread\n    kind: superspreaders\n"
        "    on: [{event: superspreader, action: block, duration: 30}]\n",
        "p.yaml")
    task = tasks[0]
    assert task.protect == ("h1", "10.0.9.0/24") == tasks[1].protect
    assert [r.action for r in some(task.on)] == ["mirror", "notify", "mark"]
    assert some(task.on)[2].duration == 60 and some(task.on)[2].mode == "dry_run"
    for t in tasks:
        assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(PolicyError, match="heavy_changer is raised by kind heavy_changers, "
                                          "not heavy_hitters"):
        one({"name": "x", "kind": "heavy_hitters",
             "on": [{"event": "heavy_changer", "action": "notify", "url": "http://a/"}]})


def test_network_actions_need_a_key_with_an_address():
    with pytest.raises(PolicyError, match="on\\[0\\].action block needs a key holding an address"):
        one({"name": "x", "kind": "heavy_hitters", "key": "dport",
             "on": [{"event": "heavy_hitter", "action": "block", "duration": 5}]})


# ---------------------------------------------------------------- planner

def test_block_of_a_scanner_drops_its_ipv4_at_its_edge_port_and_exempts_control_ports():
    task = one(SCAN)
    control = [ipaddress.ip_network("192.168.100.0/24"), ipaddress.ip_network("10.0.0.254"),
               ipaddress.ip_network("2001:db8::/64")]
    p = plan("1", task, 0, some(task.on)[0], SCAN_EVENT, topology(), control)
    assert (p.dpid, p.target) == (3, "10.0.0.6")
    assert p.match == {"in_port": 3, "eth_type": 0x0800, "ipv4_src": "10.0.0.6"}
    drop = p.flows[0]
    assert drop.priority == ACTION_PRIORITY["block"] and drop.actions == () and drop.goto is None
    # control ports stay open only towards the protected (IPv4) networks
    exempt = {(f.match.get("tcp_dst"), f.match.get("tcp_src"), str(f.match["ipv4_dst"]))
              for f in p.flows[1:]}
    assert exempt == {(dst, src, net) for dst, src in
                      ((8000, None), (None, 8000), (8080, None), (None, 8080), (6653, None),
                       (None, 6653))
                      for net in ("('192.168.100.0', '255.255.255.0')", "10.0.0.254")}
    assert all(f.priority > drop.priority and f.goto == 1 for f in p.flows[1:])


def test_mirror_to_a_tap_on_another_switch_rewrites_and_restores_eth_dst():
    task = one({"name": "m", "kind": "heavy_hitters", "key": "five_tuple",
                "filter": {"proto": "tcp", "dport": 80},
                "on": [{"event": "heavy_hitter", "action": "mirror", "to": "h9", "duration": 9}]})
    topo = topology()
    event = {"id": 1, "kind": "heavy_hitter", "key": "10.0.0.2,10.0.0.1,tcp,40000,80"}
    p = plan("1", task, 0, some(task.on)[0], event, topo, [], tap=topo.host_by_ip("10.0.0.9"))
    flow = p.flows[0]
    assert flow.dpid == 2 and flow.match == {
        "in_port": 2, "eth_type": 0x0800, "ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.1",
        "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 80}
    assert flow.actions == (SetField("eth_dst", MAC[9]), Output(4), SetField("eth_dst", MAC[1]))
    assert flow.goto == 1
    same = plan("1", task, 0, some(task.on)[0], event, topo, [], tap=topo.host_by_ip("10.0.0.3"))
    assert same.flows[0].actions == (Output(3),)


def test_protected_or_unknown_targets_are_refused():
    task = one(SCAN)
    with pytest.raises(Refused, match="src 10.0.0.6 is protected"):
        plan("1", task, 0, some(task.on)[0], SCAN_EVENT, topology(),
             [__import__("ipaddress").ip_network("10.0.0.6/32")])
    with pytest.raises(Refused, match="no known attachment point"):
        plan("1", task, 0, some(task.on)[0], {**SCAN_EVENT, "src": "10.9.9.9"}, topology(), [])


# ---------------------------------------------------------------- manager

def test_same_event_twice_extends_one_action_and_reinstalls_with_the_new_timeout(manager):
    task = one(SCAN)
    manager.react("1", task, [SCAN_EVENT])
    first = manager.drain()
    # the drop and 6 exemptions towards each of the 2 protected networks
    assert [type(o) for o in first] == [Install] * 13
    assert first[0].cookie == REACTION_COOKIE | 1 and first[0].hard_timeout == 10
    manager.clock.t += 4
    manager.react("1", task, [{**SCAN_EVENT, "id": 8}])
    (action,) = manager.list_actions()
    assert action["status"] == "active" and action["extended"] == 1
    assert action["expires"] == 1014.0
    assert manager.drain()[0].hard_timeout == 10
    states = [e["state"] for e in manager.store.events(0) if e["kind"] == "action"]
    assert states == ["taken", "extended"]


def test_expiry_removes_flows_and_meters_and_restart_reinstalls_the_remaining_time(manager):
    task = one({"name": "rl", "kind": "heavy_hitters", "key": "src",
                "on": [{"event": "heavy_hitter", "action": "rate_limit", "mbit": 5,
                        "duration": 20}]})
    manager.react("1", task, [{"id": 3, "kind": "heavy_hitter", "key": "10.0.0.4"}])
    ops = manager.drain()
    assert isinstance(ops[0], MeterAdd) and ops[0].meter.kbps == 5000
    assert ops[1].flow.meter == ops[0].meter.meter_id
    manager.clock.t += 12.5
    again = ActionManager(manager.store, topology(), lambda n: None, manager.clock)
    reinstall = again.on_switch(3)
    assert isinstance(reinstall[0], MeterAdd) and isinstance(reinstall[1], Install)
    assert reinstall[1].hard_timeout == 8
    assert again.on_switch(2) == []
    manager.clock.t += 8
    again.tick(manager.clock.t)
    assert [type(o) for o in again.drain()] == [Remove, MeterDelete]
    assert again.list_actions()[0]["status"] == "expired" and again.on_switch(3) == []


def test_caps_on_concurrent_and_new_actions_refuse_and_record(manager):
    task = one(SCAN)
    for n in range(4, 9):
        manager.react("1", task, [{**SCAN_EVENT, "id": n, "src": f"10.0.0.{n}"}])
    assert len([a for a in manager.list_actions() if a["status"] == "active"]) == 3
    refused = [e for e in manager.store.events(0) if e.get("state") == "refused"]
    assert len(refused) == 2 and "the cap is 3" in refused[0]["reason"]
    manager.lift(1)
    manager.lift(2)
    manager.clock.t += 1
    manager.react("1", task, [{**SCAN_EVENT, "id": 20, "src": "10.0.0.2"}])
    assert manager.store.events(0)[-1]["state"] == "taken"
    manager.react("1", task, [{**SCAN_EVENT, "id": 21, "src": "10.0.0.3"}])
    assert "in the last minute, the cap is 4" in manager.store.events(0)[-1]["reason"]
    manager.clock.t += 60
    manager.react("1", task, [{**SCAN_EVENT, "id": 22, "src": "10.0.0.3"}])
    assert manager.store.events(0)[-1]["state"] == "taken"


def test_dry_run_queues_nothing_and_task_deletion_lifts(manager):
    task = one({**SCAN, "on": [{**SCAN["on"][0], "mode": "dry_run"}]})
    manager.react("1", task, [SCAN_EVENT])
    assert manager.drain() == []
    assert manager.list_actions()[0]["status"] == "dry_run"
    enforced = one(SCAN)
    manager.react("2", enforced, [SCAN_EVENT])
    manager.drain()
    assert manager.lift_task("2") == 1
    assert manager.drain() == [Remove(3, REACTION_COOKIE | 2)]
    assert {a["id"]: a["status"] for a in manager.list_actions()} == {2: "lifted", 1: "dry_run"}


def test_protected_scanner_is_refused_and_notify_is_signed(manager):
    task = one({**SCAN, "on": [SCAN["on"][0], {"event": "port_scan", "action": "notify",
                                                "url": "http://127.0.0.1:9/h"}]})
    manager.react("1", task, [{**SCAN_EVENT, "src": "10.0.0.1"}])
    states = [(e["action"], e["state"]) for e in manager.store.events(0)]
    assert states == [("block", "refused"), ("notify", "sent")]
    url, body, headers = manager.posts[0]
    mac = hmac.new(b"s3cret", headers["X-Measure-Timestamp"].encode() + b"." + body,
                   hashlib.sha256).hexdigest()
    assert headers["X-Measure-Signature"] == "sha256=" + mac
    assert json.loads(body)["event"]["src"] == "10.0.0.1"


def test_threshold_fires_once_per_crossing(manager):
    task = one({"name": "c", "kind": "counter", "key": "src",
                "on": [{"event": "threshold", "above": 100, "action": "block",
                        "duration": 5}]})
    result = {"interval_end": 1.0, "window": {"counts": {"10.0.0.5": 150, "10.0.0.7": 10}}}
    manager.react("1", task, [], result)
    manager.react("1", task, [], result)
    kinds = [(e["kind"], e.get("key")) for e in manager.store.events(0)]
    assert kinds == [("threshold", "10.0.0.5"), ("action", None)]
    assert manager.list_actions()[0]["extended"] == 0  # the second report raised nothing new


# ---------------------------------------------------------------- service (REST errors)

def test_service_refuses_unknown_or_protected_hosts_and_stores_nothing(tmp_path, monkeypatch):
    """Schema-valid tasks naming hosts the controller does not know (404) or acting on a
    protected host (409); malformed ones are the task table's 400s above."""
    monkeypatch.setenv("MEASURE_AUTH", "off")
    service = MeasureService(topology(), str(tmp_path), now=Clock(1000.0))
    service.register_agent({"name": "h9", "url": "http://192.168.100.9:8000",
                            "data_ip": "10.0.0.9"})
    mirror: dict[str, Any] = {"name": "m", "kind": "heavy_hitters", "key": "src_dst",
              "on": [{"event": "heavy_hitter", "action": "mirror", "to": "h42", "duration": 5}]}
    for body, message, status in [
        (mirror, "on[0].to 'h42' is not a known agent, host or address", 404),
        ({**SCAN, "filter": {"src": "10.0.0.3"}, "protect": ["10.0.0.3"]},
         "targets filter.src 10.0.0.3, a protected host", 409),
        ({**SCAN, "protect": ["h77"]}, "protect host 'h77' is not a known", 404),
    ]:
        with pytest.raises(ServiceError, match=re.escape(message)) as info:
            service.apply_tasks(parse_tasks(body, "rest"))
        assert info.value.status == status
    assert service.list_tasks() == [] and service.store.tasks() == []
    ok = service.apply_tasks(parse_tasks({**mirror, "on": [{**mirror["on"][0], "to": "h9"}]},
                                         "rest"))
    assert ok[0]["name"] == "m"


def test_a_scanner_is_blocked_whole_whatever_ports_the_task_counts():
    task = one({**SCAN, "filter": {"proto": "tcp", "dport": "1:1024"}})
    p = plan("1", task, 0, some(task.on)[0], SCAN_EVENT, topology(), [])
    assert p.match == {"in_port": 3, "eth_type": 0x0800, "ipv4_src": "10.0.0.6"}


def test_cli_lists_actions_as_a_table():
    from measure_cli.render import render_actions

    text = render_actions([{"id": 4, "task_id": "2", "action": "block", "mode": "enforce",
                            "status": "active", "target": "10.0.0.6", "cause": 17, "dpid": 3,
                            "match": {"ipv4_src": "10.0.0.6"}, "expires": 0.0}])
    header, row = text.splitlines()[:2]
    assert header.split()[:5] == ["ID", "TASK", "ACTION", "MODE", "STATUS"]
    assert row.split()[:8] == ["4", "2", "block", "enforce", "active", "10.0.0.6", "17", "3"]
    assert '{"ipv4_src": "10.0.0.6"}' in row
    assert render_actions([]) == "no actions"


def test_spread_events_name_the_spreading_source_or_the_victim():
    from ryu_app.reactions.plan import event_fields

    task = one({"name": "c", "kind": "counter", "key": "src_dst"})
    assert event_fields(task, {"kind": "superspreader", "key": "10.0.0.6"}) == {
        "src": "10.0.0.6"}
    assert event_fields(task, {"kind": "ddos_victim", "key": "10.0.0.5"}) == {"dst": "10.0.0.5"}
    assert event_fields(task, {"kind": "heavy_changer", "key": "10.0.0.1,10.0.0.2"}) == {
        "src": "10.0.0.1", "dst": "10.0.0.2"}


def test_an_ipv6_key_is_matched_as_ipv6():
    from ryu_app.reactions.plan import flow_match

    assert flow_match({"src": "2001:db8::6"}, None) == {"eth_type": 0x86DD,
                                                        "ipv6_src": "2001:db8::6"}
    assert flow_match({"src": "10.0.0.6"}, None) == {"eth_type": 0x0800, "ipv4_src": "10.0.0.6"}


# ---------------------------------------------------------------- on a fake switch

def _edge_switch(manager, dpid: int) -> FakeOFTable:
    """Switch ``dpid`` with the table-miss flows and every queued reaction message applied."""
    sw = FakeOFTable(dpid)
    dp = ofmsg.offline_datapath(dpid)
    sw.apply(ofmsg.table_miss(dp))
    for op in manager.drain():
        if op_dpid(op) == dpid:
            sw.apply(ofmsg.reaction(dp, op))
    return sw


def test_block_on_a_fake_switch_drops_the_scanner_but_not_its_control_traffic(manager):
    manager.react("1", one(SCAN), [SCAN_EVENT])
    sw = _edge_switch(manager, 3)
    scan = {"in_port": 3, "eth_src": MAC[6], "eth_dst": MAC[5], "eth_type": 0x0800,
            "ipv4_src": "10.0.0.6", "ipv4_dst": "10.0.0.5", "ip_proto": 6, "tcp_dst": 22}
    assert sw.lookup(scan).dropped
    # control traffic to a protected address (h1, the management network) goes on
    for dst in ("10.0.0.1", "192.168.100.254"):
        agent = {**scan, "ipv4_dst": dst, "tcp_dst": 8000}
        assert sw.lookup(agent).ports == ["controller"] and sw.lookup(agent).tables == [0, 1]
    # but a control port number on any other host is no way around the block
    assert sw.lookup({**scan, "tcp_dst": 8080}).dropped
    neighbour = {**scan, "in_port": 2, "eth_src": MAC[5], "ipv4_src": "10.0.0.5"}
    assert sw.lookup(neighbour).ports == ["controller"]  # h5 is untouched
    (action,) = manager.list_actions()
    manager.lift(action["id"])
    for op in manager.drain():
        sw.apply(ofmsg.reaction(ofmsg.offline_datapath(3), op))
    assert sw.flows(cookie=REACTION_COOKIE | action["id"]) == []
    assert not sw.lookup(scan).dropped


def test_rate_limit_on_a_fake_switch_meters_then_forwards_and_a_reinstall_replaces_the_meter(
        manager):
    task = one({"name": "rl", "kind": "heavy_hitters", "key": "src",
                "on": [{"event": "heavy_hitter", "action": "rate_limit", "mbit": 5,
                        "duration": 20}]})
    manager.react("1", task, [{"id": 3, "kind": "heavy_hitter", "key": "10.0.0.4"}])
    sw = _edge_switch(manager, 3)
    fate = sw.lookup({"in_port": 1, "eth_src": MAC[4], "eth_dst": MAC[5], "eth_type": 0x0800,
                      "ipv4_src": "10.0.0.4", "ipv4_dst": "10.0.0.5", "ip_proto": 17})
    (meter_id,) = fate.meters
    assert sw.meters[meter_id].bands[0].rate == 5000 and fate.tables == [0, 1]
    # after a controller restart the same meter is added again: delete-then-add, no error
    for op in manager.on_switch(3):
        sw.apply(ofmsg.reaction(ofmsg.offline_datapath(3), op))
    assert list(sw.meters) == [meter_id]


def test_mirror_on_a_fake_switch_copies_to_the_tap_and_delivers_the_original():
    task = one({"name": "m", "kind": "heavy_hitters", "key": "five_tuple",
                "filter": {"proto": "tcp", "dport": 80},
                "on": [{"event": "heavy_hitter", "action": "mirror", "to": "h9", "duration": 9}]})
    topo = topology()
    event = {"id": 1, "kind": "heavy_hitter", "key": "10.0.0.2,10.0.0.1,tcp,40000,80"}
    p = plan("1", task, 0, some(task.on)[0], event, topo, [], tap=topo.host_by_ip("10.0.0.9"))
    sw, dp = FakeOFTable(2), ofmsg.offline_datapath(2)
    sw.apply(ofmsg.table_miss(dp))
    sw.apply(ofmsg.reaction(dp, Install(p.flows[0], REACTION_COOKIE | 1, 9)))
    fate = sw.lookup({"in_port": 2, "eth_src": MAC[2], "eth_dst": MAC[1], "eth_type": 0x0800,
                      "ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.1", "ip_proto": 6,
                      "tcp_src": 40000, "tcp_dst": 80})
    (port, copy), (ctl, original) = fate.outputs
    assert (port, copy["eth_dst"]) == (4, MAC[9])  # towards the tap, addressed to it
    assert (ctl, original["eth_dst"]) == ("controller", MAC[1])  # then forwarded as before


def test_an_agents_data_address_is_acted_on_only_where_the_guard_binds_it(tmp_path,
                                                                          monkeypatch):
    """Protected by default: an agent's data address is blocked only while the source
    guard binds it to the agent's registered MAC (so the scan really came from its host);
    the same scan from the agent's own, bound address is still blocked; gateways and the
    controller are never acted on."""
    monkeypatch.setenv("MEASURE_AUTH", "off")
    monkeypatch.setenv("MEASURE_GATEWAYS", "10.0.0.8")
    topo = topology()
    service = MeasureService(topo, str(tmp_path), now=Clock(1000.0))
    for n, mac in ((5, MAC[5]), (9, MAC[9]), (7, None)):
        service.register_agent({"name": f"h{n}", "url": f"http://192.168.100.{n}:8000",
                                "data_ip": f"10.0.0.{n}", **({"mac": mac} if mac else {})})
    task = one({**SCAN, "on": [{**SCAN["on"][0], "mode": "dry_run"}]})

    assert service._vouch("10.0.0.5") is None  # h5's own address, bound to h5's MAC
    assert service._vouch("10.0.0.4") is None  # not an agent: placed where the guard put it
    assert service._vouch("10.0.0.7") == ("is agent h7's data address and the agent "
                                          "registered no MAC to bind it to")
    # h9's address held by another MAC (a claim the pinning let through): never h9's block
    topo.remove_host(MAC[9])
    topo.learn_host("00:00:00:00:00:66", "10.0.0.9", 4, 3)
    assert service._vouch("10.0.0.9") == ("is agent h9's data address, bound to "
                                          "00:00:00:00:00:66, not the agent's MAC "
                                          f"{MAC[9]}")
    mgr = service.actions
    before = len(mgr.live)
    for src, reason in [("10.0.0.9", "src 10.0.0.9 is agent h9's data address, bound to"),
                        ("10.0.0.7", "src 10.0.0.7 is agent h7's data address"),
                        ("10.0.0.8", "src 10.0.0.8 is protected")]:
        mgr.react("1", task, [{"id": 2, "kind": "port_scan", "src": src}])
        assert len(mgr.live) == before, src
        assert reason in json.dumps(service.store.events()), (src, reason)
    mgr.react("1", task, [{"id": 3, "kind": "port_scan", "src": "10.0.0.5"}])
    (row,) = [r for r in mgr.live.values() if r["target"] == "10.0.0.5"]
    assert row["dpid"] == 3 and row["match"]["in_port"] == 2  # h5's own edge port
