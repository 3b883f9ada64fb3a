"""Agent API and agent state without root: webob Request.blank against AgentApp.

The monitor stand-in (``InlineMonitor``) runs the real ``MonitorCore`` (real
engine counters, real header parser) in process, with JSON round trips like
the real pipe; tests feed it synthetic IPv4 headers with known mark bits.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
import webob

from host_agent.agent import Agent
from host_agent.api import LEGACY_DISABLED, AgentApp
from host_agent.errors import AgentError
from host_agent.monitor.core import fail_open_message
from host_agent.overlay.node import OverlayNode
from measure_model.task import Task
from measure_model.version import __version__
from testing.clock import Clock
from testing.monitors import InlineMonitor

pytestmark = pytest.mark.unit


def ipv4(src: str, dst: str, proto: int = 1, length: int = 84, sport: int = 0,
         dport: int = 0, tcp_flags: int | None = None) -> bytes:
    """The first 24 bytes of an IPv4 packet (20-byte header + 4 bytes of ports), and
    the TCP header up to its flags when ``tcp_flags`` is given."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    tcp = b"" if tcp_flags is None else struct.pack("!IIBB", 0, 0, 0x50, tcp_flags)
    return head + struct.pack("!HH", sport, dport) + tcp


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000.25)


@pytest.fixture
def mon(clock) -> InlineMonitor:
    return InlineMonitor(clock)


@pytest.fixture
def agent(mon, clock) -> Agent:
    ag = Agent("h5", [mon], capture=None, clock=clock, max_sketches=4, max_memory_mb=4)
    ag.start()
    return ag


@pytest.fixture
def app(agent) -> AgentApp:
    return AgentApp(agent, allow_legacy=True, insecure=True)


def post_form(app, **fields) -> webob.Response:
    return webob.Request.blank("/", POST=fields).get_response(app)


def call(app, method: str, path: str, body: object = None, **kw) -> webob.Response:
    req = webob.Request.blank(path, method=method, **kw)
    if body is not None:
        req.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        req.content_type = "application/json"
    return req.get_response(app)


# ---------------------------------------------------------------- legacy

def test_original_heavy_hitter_flow_form_encoded(app, mon):
    r = post_form(app, type="config sketch", interface="INPUT", proto="icmp")
    assert (r.status_int, r.text, r.content_type) == (200, "1", "text/plain")
    r = post_form(app, type="config sketch counter", sketch_id="1", counter_key_type="src",
                  increment="pkt")
    assert (r.status_int, r.text) == (200, "1")
    mon.feed([ipv4("10.0.0.6", "10.0.0.5")] * 3 + [ipv4("10.0.0.7", "10.0.0.5")])
    r = post_form(app, type="query heavy hitters", sketch_id="1", counter_key_type="src")
    assert r.status_int == 200 and r.json == {"10.0.0.6": 3, "10.0.0.7": 1}
    r = post_form(app, type="query sketch", sketch_id="1", counter_key_type="src",
                  counter_key="10.0.0.6")
    assert (r.status_int, r.text) == (200, "3")
    r = post_form(app, type="query sketch", sketch_id="1", counter_key_type="src",
                  counter_key="real_time_key_num")
    assert r.text == "2"
    r = post_form(app, type="query real time counter", sketch_id="1", counter_key_type="src")
    assert r.json == {"10.0.0.6": 3, "10.0.0.7": 1}


def test_legacy_json_body_and_bytes_increment(app, mon):
    r = call(app, "POST", "/", {"type": "config sketch", "interface": "INPUT"})
    sid = int(r.text)
    r = call(app, "POST", "/", {"type": "config sketch counter", "sketch_id": sid,
                                "counter_key_type": "src_dst", "increment": "bytes"})
    assert r.status_int == 200
    mon.feed([ipv4("10.0.0.6", "10.0.0.5", length=500)] * 2 + [ipv4("10.0.0.1", "10.0.0.5")])
    r = call(app, "POST", "/", {"type": "query heavy hitters", "sketch_id": sid,
                                "counter_key_type": "src_dst"})
    assert r.json == {"10.0.0.6,10.0.0.5": 1000, "10.0.0.1,10.0.0.5": 84}
    # configuring the same counter again is a no-op; another increment conflicts
    r = call(app, "POST", "/", {"type": "config sketch counter", "sketch_id": sid,
                                "counter_key_type": "src_dst", "increment": "byte"})
    assert (r.status_int, r.text) == (200, "1")
    r = call(app, "POST", "/", {"type": "config sketch counter", "sketch_id": sid,
                                "counter_key_type": "src_dst", "increment": "pkt"})
    assert r.status_int == 409


def test_portscan_window_distinct_ports(app, mon, clock):
    sid = int(post_form(app, type="config sketch", interface="INPUT").text)
    post_form(app, type="config sketch counter", sketch_id=str(sid),
              counter_key_type="src_dport", increment="pkt")
    post_form(app, type="config sketch counter", sketch_id=str(sid),
              counter_key_type="dport", increment="pkt")
    mon.feed([ipv4("10.0.0.6", "10.0.0.5", 6, 60, 40000, p) for p in range(8008, 8093)]
             + [ipv4("10.0.0.1", "10.0.0.5", 6, 60, 40001, 22)])
    r = post_form(app, type="query sketch", sketch_id=str(sid), counter_key_type="dport",
                  counter_key="real_time_key_num")
    assert r.text == "86"
    r = post_form(app, type="query real time counter", sketch_id=str(sid),
                  counter_key_type="src_dport")
    assert len(r.json) == 86 and r.json["10.0.0.6,8008"] == 1
    clock.t += 1.0  # the next tumbling window: "the last second" still holds the scan
    r = post_form(app, type="query sketch", sketch_id=str(sid), counter_key_type="dport",
                  counter_key="real_time_key_num")
    assert r.text == "86"
    clock.t += 1.0  # two windows later nothing is left
    r = post_form(app, type="query sketch", sketch_id=str(sid), counter_key_type="dport",
                  counter_key="real_time_key_num")
    assert r.text == "0"


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"type": "config skecth"}, 400, "unknown type 'config skecth'; expected one of config "
     "sketch, config sketch counter, query heavy hitters, query sketch, query real time "
     "counter, query bw"),
    ({"interface": "INPUT"}, 400, "missing field 'type'"),
    ({"type": "config sketch", "interface": "FORWARD"}, 400,
     "filter.interface 'FORWARD' is not one of INPUT, OUTPUT"),
    ({"type": "config sketch", "proto": "sctp"}, 400,
     "filter.proto 'sctp' is not one of tcp, udp, icmp, icmpv6"),
    ({"type": "config sketch", "src": "10.0.0.300"}, 400,
     "filter.src '10.0.0.300' is not an IPv4 or IPv6 address or prefix"),
    ({"type": "config sketch", "proto": "icmp", "dport": "80"}, 400,
     "filter.dport needs filter.proto tcp or udp"),
    ({"type": "config sketch", "proto": "tcp", "dport": "80; rm -rf /"}, 400,
     "filter.dport '80; rm -rf /' is not a port or a range 'low:high' "
     "of ports 0..65535"),
    ({"type": "config sketch counter", "counter_key_type": "src"}, 400,
     "missing field 'sketch_id'"),
    ({"type": "config sketch counter", "sketch_id": "9", "counter_key_type": "src"}, 404,
     "unknown sketch_id 9"),
    ({"type": "config sketch counter", "sketch_id": "x", "counter_key_type": "src"}, 400,
     "sketch_id must be an integer, got 'x'"),
    ({"type": "config sketch counter", "sketch_id": "1", "counter_key_type": "srcdst"}, 400,
     "counter_key_type 'srcdst' is not one of src, dst, src_dst, sport, dport, src_dport, "
     "dst_dport, proto, five_tuple"),
    ({"type": "config sketch counter", "sketch_id": "1", "counter_key_type": "src",
      "increment": "pkts"}, 400, "increment 'pkts' is not one of pkt, bytes"),
    ({"type": "config sketch counter", "sketch_id": "1", "counter_key_type": "src",
      "threshold": "abc"}, 400, "threshold must be a number, not str"),
    ({"type": "config sketch counter", "sketch_id": "1", "counter_key_type": "src",
      "threshold": "nan"}, 400, "threshold nan is not a finite number"),
    ({"type": "query heavy hitters", "sketch_id": "1", "counter_key_type": "dst"}, 404,
     "no counter of counter_key_type 'dst' on sketch 1"),
    ({"type": "query sketch", "sketch_id": "1", "counter_key_type": "src"}, 400,
     "missing field 'counter_key'"),
    ({"type": "query sketch", "sketch_id": "1", "counter_key_type": "src",
      "counter_key": "not-an-ip"}, 400, None),
])
def test_legacy_bad_input(app, fields, status, message):
    post_form(app, type="config sketch", interface="INPUT")
    post_form(app, type="config sketch counter", sketch_id="1", counter_key_type="src")
    r = post_form(app, **fields)
    assert r.status_int == status, r.text
    if message is not None:
        assert r.json == {"error": message}
    else:
        assert "error" in r.json and "not-an-ip" in r.json["error"]


def test_legacy_malformed_json_and_oversized(app):
    r = call(app, "POST", "/", b"{not json")
    assert r.status_int == 400 and r.json["error"].startswith("malformed JSON body")
    r = post_form(app, type="config sketch", interface="I" * 70000)
    assert r.status_int == 413 and r.json == {"error": "body too large: more than 65536 bytes"}


def test_legacy_refused_without_opt_in(agent):
    app = AgentApp(agent, allow_legacy=False, insecure=True)
    r = post_form(app, type="config sketch", interface="INPUT")
    assert (r.status_int, r.json) == (403, {"error": LEGACY_DISABLED})
    assert agent.sketches == {}


# ---------------------------------------------------------------- v1

def test_v1_sketch_lifecycle_and_snapshot(app, mon, agent):
    body = {"filter": {"proto": "udp", "dport": "5000:5010"},
            "counters": [{"key": "src", "increment": "bytes", "threshold": 0.5}]}
    r = call(app, "POST", "/agent/v1/sketches", body)
    assert r.status_int == 201, r.text
    assert r.json["id"] == 1 and r.json["filter"] == {"interface": "INPUT", "proto": "udp",
                                                       "dport": "5000:5010"}
    r = call(app, "POST", "/agent/v1/sketches/1/counters", {"key": "dport"})
    assert (r.status_int, r.json["id"], r.json["increment"]) == (201, 2, "pkt")
    mon.feed([ipv4("10.0.0.1", "10.0.0.2", 17, 200, 999, 5001)] * 3
             + [ipv4("10.0.0.3", "10.0.0.2", 17, 100, 999, 5002)])
    r = call(app, "GET", "/agent/v1/sketches/1/counters/1?key=10.0.0.3")
    snap = r.json
    assert (snap["packets"], snap["bytes"], snap["total"]) == (4, 700, 700)
    assert snap["heavy_hitters"] == {"10.0.0.1": 600}
    assert snap["estimate"] == {"key": "10.0.0.3", "value": 100}
    assert snap["covered"] == ["h5"] and snap["missed"] is None
    assert snap["monitor"]["restarts"] == 0
    r = call(app, "GET", "/agent/v1/sketches/1/counters/2")
    assert r.json["window"]["counts"] == {"5001": 3, "5002": 1}
    r = call(app, "GET", "/agent/v1/sketches/1/counters/1?key=bogus")
    assert r.status_int == 400
    assert [s["id"] for s in call(app, "GET", "/agent/v1/sketches").json] == [1]
    assert call(app, "DELETE", "/agent/v1/sketches/1/counters/2").status_int == 200
    assert call(app, "GET", "/agent/v1/sketches/1/counters/2").json == {
        "error": "unknown counter 2 on sketch 1"}
    assert call(app, "DELETE", "/agent/v1/sketches/1").json == {"deleted": 1}
    assert call(app, "GET", "/agent/v1/sketches/1").status_int == 404
    assert mon.core.sketches == {}


def test_v1_counter_with_memory_is_elastic_within_it(app, mon, agent):
    r = call(app, "POST", "/agent/v1/sketches", {"counters": [
        {"key": "src", "memory": 65536, "threshold": 0.5}]})
    assert r.status_int == 201, r.text
    assert r.json["counters"][0]["memory"] == 65536
    assert agent.memory_used() == 65536
    mon.feed([ipv4("10.0.0.1", "10.0.0.2", 17, 200, 999, 5001)] * 3
             + [ipv4("10.0.0.3", "10.0.0.2", 17, 100, 999, 5002)])
    snap = call(app, "GET", "/agent/v1/sketches/1/counters/1?key=10.0.0.3").json
    assert snap["heavy_hitters"] == {"10.0.0.1": 3} and snap["total"] == 4
    assert snap["estimate"] == {"key": "10.0.0.3", "value": 1}
    assert "elastic" in snap and "sketch" not in snap and snap["window"] is None
    counter = next(iter(mon.core.sketches.values())).counters[1]
    assert counter.memory_bytes <= 65536
    r = call(app, "POST", "/agent/v1/sketches/1/counters", {"key": "src", "memory": 10})
    assert (r.status_int, r.json) == (400, {"error": "memory 10 is out of range "
                                                     "4096..67108864"})


def test_v1_errors(app):
    cases = [
        ("POST", "/agent/v1/sketches", {"filter": {}, "colour": 1}, 400, "unknown field 'colour'"),
        ("POST", "/agent/v1/sketches", [1], 400, "body must be a JSON object"),
        ("POST", "/agent/v1/sketches", {"counters": [{"key": "src", "top_k": 0}]}, 400,
         "counters[0]: top_k 0 is out of range 1..1000"),
        ("POST", "/agent/v1/sketches", {"counters": [{"increment": "pkt"}]}, 400,
         "counters[0]: key is required"),
        ("POST", "/agent/v1/sketches/7/counters", {"key": "src"}, 404, "unknown sketch_id 7"),
        ("PATCH", "/agent/v1/sketches", {}, 405,
         "method PATCH not allowed on /agent/v1/sketches; use GET, POST"),
        ("GET", "/agent/v1/nothing", None, 404, "no such resource /agent/v1/nothing"),
    ]
    for method, path, body, status, message in cases:
        r = call(app, method, path, body)
        assert (r.status_int, r.json) == (status, {"error": message}), (path, r.text)
    r = call(app, "POST", "/agent/v1/sketches", b"{")
    assert r.status_int == 400 and r.json["error"].startswith("malformed JSON body")


def test_limits_sketches_and_memory(app, agent):
    for _ in range(4):
        assert call(app, "POST", "/agent/v1/sketches", {}).status_int == 201
    r = call(app, "POST", "/agent/v1/sketches", {})
    assert (r.status_int, r.json) == (409, {"error": "limit reached: at most 4 sketches"})
    # 4 MB: 2^16 x 8 x 8 bytes = 4 MB fits once, the second does not
    big = {"key": "src", "sketch": {"width": 65536, "depth": 8}}
    assert call(app, "POST", "/agent/v1/sketches/1/counters", big).status_int == 201
    r = call(app, "POST", "/agent/v1/sketches/2/counters", big)
    assert (r.status_int, r.json) == (409, {"error": "limit reached: sketch memory would "
                                                     "exceed 4 MB"})
    assert len(agent.sketches[2].counters) == 0


def test_overlapping_sketches_count_by_mark_bits(agent, mon):
    a = agent.create_sketch({"proto": "icmp"})
    b = agent.create_sketch({})
    agent.add_counter(a.id, {"key": "src"})
    agent.add_counter(b.id, {"key": "src"})
    mon.feed([ipv4("10.0.0.1", "10.0.0.2")] * 2, mark=0b11 << 16)  # icmp: both sketches
    mon.feed([ipv4("10.0.0.1", "10.0.0.2", 17)] * 5, mark=0b10 << 16)  # udp: sketch b only
    assert agent.snapshot(a.id, 1)["packets"] == 2
    assert agent.snapshot(b.id, 1)["packets"] == 7


def test_tasks_install_snapshot_remove(agent, mon, clock):
    scan = Task.from_dict({"name": "scan", "kind": "port_scan", "filter": {"proto": "tcp"},
                           "window": {"length": 1.0}, "report_interval": 5})
    sid = agent.install_task("t1", scan)
    assert agent.tasks == {"t1": sid}
    assert agent.sketches[sid].counters[1].task == scan
    assert agent.sketches[sid].filter.to_dict() == {"interface": "INPUT", "proto": "tcp"}
    assert agent.sketches[sid].filter.probes  # its capture selects connection attempts
    mon.feed([ipv4("10.0.0.6", "10.0.0.5", 6, 60, 1234, p, tcp_flags=0x02) for p in (80, 81, 82)],
             mark=1 << agent.sketches[sid].slot)
    snap = agent.snapshot_task("t1", clock())
    assert snap["scan"]["10.0.0.6"]["ports"] == [80, 81, 82]
    assert snap["scan"]["10.0.0.6"]["dsts"] == ["10.0.0.5"]
    # re-installing the same task id replaces it
    sid2 = agent.install_task("t1", Task.from_dict({"name": "hh", "kind": "heavy_hitters"}))
    assert sid2 != sid and list(agent.sketches) == [sid2]
    assert not agent.sketches[sid2].filter.probes
    bw = Task.from_dict({"name": "bw", "kind": "bandwidth", "src": "h1", "dst": "h2"})
    with pytest.raises(AgentError, match="kind 'bandwidth' is not a measurement task"):
        agent.install_task("t2", bw)
    agent.remove_task("t1")
    assert agent.tasks == {} and agent.sketches == {}
    with pytest.raises(KeyError):
        agent.remove_task("t1")


def test_install_task_gives_the_counter_its_candidate_divisor(agent, mon, clock):
    """The divisor reaches the monitor's counter (it was dropped on the way before)."""
    task = Task.from_dict({"name": "abs", "kind": "heavy_hitters", "threshold_abs": 90})
    sid = agent.install_task("t1", task, candidate_divisor=3)
    counter = mon.core.sketches[sid].counters[1]
    assert (counter.spec.threshold_abs, counter.spec.candidate_divisor) == (90, 3)
    assert counter.candidate_threshold() == 30
    mon.feed([ipv4("10.0.0.9", "10.0.0.5")] * 30, mark=1 << agent.sketches[sid].slot)
    snap = agent.snapshot_task("t1", clock())
    assert snap["threshold"] == {"absolute": 90, "divisor": 3}
    assert snap["candidates"] == {"10.0.0.9": 30} and snap["heavy_hitters"] == {}


def test_supervisor_restarts_dead_monitor_and_reports_gap(agent, mon, clock):
    s = agent.create_sketch({"proto": "icmp"})
    agent.add_counter(s.id, {"key": "src"})
    mon.feed([ipv4("10.0.0.1", "10.0.0.2")] * 3)
    mon.dead = True
    clock.t += 2
    agent.tick()
    assert mon.starts == 2 and agent.restarts == 1
    assert agent.gaps == [{"start": clock.t, "end": clock.t, "queue": 0,
                           "unmeasured_packets_max": None}]
    # sketches and counters are back in the new monitor; counting restarted
    mon.feed([ipv4("10.0.0.1", "10.0.0.2")])
    snap = agent.snapshot(s.id, 1)
    assert snap["packets"] == 1 and snap["monitor"]["counting_since"] == clock.t
    health = agent.health()
    assert health["restarts"] == 1 and health["status"] == "ok"


def test_signed_requests_when_secret_configured(agent):
    from measure_common.auth import Verifier, agent_key, sign_request

    secret = agent_key(b"s" * 32, agent.name)
    app = AgentApp(agent, verifier=Verifier.for_agent(agent.name, secret))
    r = call(app, "POST", "/agent/v1/sketches", {})
    assert r.status_int == 401 and "signed" in r.json["error"]
    assert agent.sketches == {}
    assert call(app, "GET", "/agent/v1/health").status_int == 200
    body = b"{}"
    headers = sign_request(secret, "POST", "/agent/v1/sketches", body, sender="controller",
                           receiver=agent.name)
    r = call(app, "POST", "/agent/v1/sketches", body, headers=headers)
    assert r.status_int == 201
    r = call(app, "POST", "/agent/v1/sketches", body, headers=headers)  # replay
    assert r.status_int == 401 and len(agent.sketches) == 1


def test_fail_open_message_layout():
    msg = fail_open_message(7)
    length, mtype, flags = struct.unpack_from("=IHH", msg)
    assert (length, len(msg), mtype, flags) == (36, 36, (3 << 8) | 2, 1)
    assert msg[16:20] == b"\x00\x00\x00\x07"
    assert msg[20:] == (b"\x08\x00\x04\x00\x00\x00\x00\x05" b"\x08\x00\x05\x00\x00\x00\x00\x05")
    assert fail_open_message(7, gso=False)[20:] == (b"\x08\x00\x04\x00\x00\x00\x00\x01"
                                                    b"\x08\x00\x05\x00\x00\x00\x00\x01")


class AppTransport:
    """OverlayNode transport that hands requests to in-process AgentApps by URL."""

    def __init__(self) -> None:
        self.apps: dict[str, AgentApp] = {}
        self.urls: list[str] = []  # every URL requested, in order
        self.overlays: dict[str, OverlayNode] = {}

    def _call(self, method: str, url: str, json_body: object) -> tuple[int, object]:
        self.urls.append(url)
        base, _, path = url.partition("/agent/")
        app = self.apps.get(base)
        if app is None:
            return 599, {"error": "unreachable"}
        r = call(app, method, "/agent/" + path, json_body if json_body is not None else None)
        return r.status_int, r.json

    def request(self, method, url, json=None, timeout=5.0):
        return self._call(method.upper(), url, json)


def overlay_agents(clock, *names: str):
    """Agents with overlay roles, wired to each other in process by name
    (``net.overlays[name]`` is each agent's ``OverlayNode``)."""
    from measure_common.runner import InlineRunner

    net = AppTransport()
    nodes = {}
    for name in names:
        mon = InlineMonitor(clock)
        ag = Agent(name, [mon], clock=clock)
        ag.start()
        node = net.overlays[name] = OverlayNode(ag, http=net, now=clock, runner=InlineRunner())
        net.apps[f"http://{name}"] = AgentApp(ag, allow_legacy=True, insecure=True,
                                              overlay=node)
        nodes[name] = (ag, mon)
    return net, nodes


def test_legacy_messages_at_overlay_root_answer_for_the_subtree(clock):
    """The walk-through's global usage: legacy messages to the root h2 cover h3 too."""
    net, nodes = overlay_agents(clock, "h2", "h3")
    child = nodes["h3"][0]
    net.overlays["h2"].set_overlay({"epoch": 1, "root": True,
                                    "controller": "http://ctl.test:8080",
                                    "children": [{"name": "h3", "url": "http://h3"}]})
    net.overlays["h3"].set_overlay({"epoch": 1, "parent": {"name": "h2", "url": "http://h2"}})
    app = net.apps["http://h2"]
    sid = int(post_form(app, type="config sketch", interface="INPUT", proto="icmp").text)
    r = post_form(app, type="config sketch counter", sketch_id=str(sid),
                  counter_key_type="src_dst", increment="bytes")
    assert r.status_int == 200
    # the subtree got the counter as a task: h3 installed its own sketch
    assert list(child.tasks) == [f"legacy-{sid}-1"]
    nodes["h2"][1].feed([ipv4("10.0.0.6", "10.0.0.2")] * 2)
    csid = child.tasks[f"legacy-{sid}-1"]
    nodes["h3"][1].feed([ipv4("10.0.0.6", "10.0.0.3")] * 3,
                        mark=1 << child.sketches[csid].slot)
    clock.t = (int(clock.t) + 1) + 0.01   # past the 1 s interval end: h3 reports up
    net.overlays["h3"].tick(clock.t)
    net.overlays["h2"].tick(clock.t)
    # the child reported to the root; the root kept the report (the controller
    # does not know legacy-S-C tasks: it answered 404 every second)
    assert "http://h2/agent/v1/reports" in net.urls
    assert not [u for u in net.urls if u.startswith("http://ctl.test")]
    assert net.overlays["h2"].stats["send_errors"] == 0
    r = post_form(app, type="query heavy hitters", sketch_id=str(sid),
                  counter_key_type="src_dst")
    assert r.json == {"10.0.0.6,10.0.0.2": 168, "10.0.0.6,10.0.0.3": 252}
    r = post_form(app, type="query sketch", sketch_id=str(sid), counter_key_type="src_dst",
                  counter_key="10.0.0.6,10.0.0.3")
    assert r.text == "252"
    # deleting the root's sketch removes the subtree's copy
    assert call(app, "DELETE", f"/agent/v1/sketches/{sid}").status_int == 200
    assert child.tasks == {} and child.sketches == {}


def test_legacy_absolute_threshold_at_overlay_root_lists_every_pair_of_the_tree(clock):
    """examples/flow_size_distribution.py at the root (threshold_abs=1): the root and
    its subtree count with one candidate divisor, so their snapshots merge and the
    answer lists the pairs seen anywhere, not only the root's own."""
    net, nodes = overlay_agents(clock, "h2", "h3", "h4")
    net.overlays["h2"].set_overlay({"epoch": 1, "root": True,
                                    "controller": "http://ctl.test:8080",
                                    "children": [{"name": k, "url": f"http://{k}"}
                                                 for k in ("h3", "h4")]})
    for kid in ("h3", "h4"):
        net.overlays[kid].set_overlay({"epoch": 1, "parent": {"name": "h2", "url": "http://h2"}})
    app = net.apps["http://h2"]
    sid = int(post_form(app, type="config sketch", interface="INPUT", proto="icmp").text)
    assert post_form(app, type="config sketch counter", sketch_id=str(sid),
                     counter_key_type="src_dst", increment="bytes",
                     threshold_abs="1").status_int == 200
    divisors = {nodes["h2"][0].sketches[sid].counters[1].candidate_divisor}
    expected = {}
    for n, name in enumerate(("h2", "h3", "h4"), start=2):
        agent, mon = nodes[name]
        own = sid if name == "h2" else agent.tasks[f"legacy-{sid}-1"]
        divisors.add(agent.sketches[own].counters[1].candidate_divisor)
        for m in (2, 3, 4):  # a pingall: two 84-byte echo packets from each other host
            if m != n:
                mon.feed([ipv4(f"10.0.0.{m}", f"10.0.0.{n}")] * 2,
                         mark=1 << agent.sketches[own].slot)
                expected[f"10.0.0.{m},10.0.0.{n}"] = 168
    assert divisors == {3}  # one divisor: the 3 agents of the tree
    clock.t = (int(clock.t) + 1) + 0.01
    for name in ("h3", "h4", "h2"):
        net.overlays[name].tick(clock.t)
    r = post_form(app, type="query heavy hitters", sketch_id=str(sid),
                  counter_key_type="src_dst")
    assert r.json == expected
    r = post_form(app, type="query sketch", sketch_id=str(sid), counter_key_type="src_dst",
                  counter_key="10.0.0.2,10.0.0.4")
    assert r.text == "168"


def test_legacy_messages_at_an_inner_agent_answer_for_that_host_only(clock):
    """h5 with overlay children still means "packets arriving at h5" (per host)."""
    net, nodes = overlay_agents(clock, "h5", "h6")
    child = nodes["h6"][0]
    net.overlays["h5"].set_overlay({"epoch": 1, "root": False,
                                    "parent": {"name": "h2", "url": "http://h2"},
                                    "children": [{"name": "h6", "url": "http://h6"}]})
    net.overlays["h6"].set_overlay({"epoch": 1, "parent": {"name": "h5", "url": "http://h5"}})
    app = net.apps["http://h5"]
    sid = int(post_form(app, type="config sketch", interface="INPUT", proto="icmp").text)
    assert post_form(app, type="config sketch counter", sketch_id=str(sid),
                     counter_key_type="src", increment="pkt").status_int == 200
    assert child.tasks == {}
    nodes["h5"][1].feed([ipv4("10.0.0.1", "10.0.0.5")] * 2)
    r = post_form(app, type="query heavy hitters", sketch_id=str(sid), counter_key_type="src")
    assert r.json == {"10.0.0.1": 2}


def test_original_messages_take_and_show_ipv6_keys(app, mon):
    from testing.packets import ICMP6, ipv6

    r = post_form(app, type="config sketch", interface="INPUT", proto="icmpv6")
    sid = r.text
    assert r.status_int == 200
    r = post_form(app, type="config sketch counter", sketch_id=sid, counter_key_type="src_dst")
    assert r.status_int == 200
    mon.feed([ipv6("2001:db8::6", "2001:db8::5", 58, ICMP6)] * 3
             + [ipv6("fe80::7", "2001:db8::5", 58, ICMP6)])
    r = post_form(app, type="query heavy hitters", sketch_id=sid, counter_key_type="src_dst")
    assert r.json == {"2001:db8::6,2001:db8::5": 3, "fe80::7,2001:db8::5": 1}
    r = post_form(app, type="query sketch", sketch_id=sid, counter_key_type="src_dst",
                  counter_key="2001:DB8::6,2001:db8:0::5")   # any valid spelling
    assert (r.status_int, r.text) == (200, "3")
    r = post_form(app, type="query sketch", sketch_id=sid, counter_key_type="src_dst",
                  counter_key="2001:db8::6::1,2001:db8::5")
    assert r.status_int == 400 and "2001:db8::6::1' is not an IPv6 address" in r.json["error"]


# ---------------------------------------------------------------- heartbeats up the tree

def test_heartbeats_fold_up_the_tree_and_unknown_agents_are_told_down(clock):
    """h4 -> h3 -> h2 (root): each beats its parent through the real route; the root's
    heartbeat to the controller lists the whole subtree; the controller's ``unknown``
    goes back down the replies, and h4 learns it must register again."""
    from host_agent.__main__ import beat_parent
    from ryu_app.service.registry import Registry

    net, _ = overlay_agents(clock, "h2", "h3", "h4")
    ov = net.overlays
    ov["h2"].set_overlay({"epoch": 1, "root": True,
                          "children": [{"name": "h3", "url": "http://h3"}]})
    ov["h3"].set_overlay({"epoch": 1, "parent": {"name": "h2", "url": "http://h2"},
                          "children": [{"name": "h4", "url": "http://h4"}]})
    ov["h4"].set_overlay({"epoch": 1, "parent": {"name": "h3", "url": "http://h3"}})
    crashing = {"restarts": 3, "crash_looping": True}
    assert beat_parent(net, ov["h4"], crashing) is False
    assert beat_parent(net, ov["h3"], {"restarts": 0}) is False
    assert beat_parent(net, ov["h2"], None) is None  # a root beats the controller
    subtree = ov["h2"].subtree_beats()
    assert sorted(subtree) == ["h3", "h4"]
    assert subtree["h4"] == {"version": __version__, "monitor": crashing}
    assert subtree["h3"] == {"version": __version__}  # a healthy cost stays home

    reg = Registry(timeout=6.0)
    for n, name in enumerate(("h2", "h3")):
        reg.register({"name": name, "url": f"http://192.168.100.{n + 2}:8000",
                      "data_ip": f"10.0.0.{n + 2}", "mac": f"00:00:00:00:00:0{n + 2}"},
                     now=clock.t)
    reg.agents["h3"].up = False
    assert reg.heartbeat("h2", clock.t, {"subtree": subtree}) is True  # h3 is back
    assert reg.agents["h3"].up and reg.agents["h3"].version == __version__
    # the controller does not know h4: its reply says so; h3 hears it from h2, h4 from h3
    ov["h2"].beats.unknown_below(["h4"])
    assert beat_parent(net, ov["h3"], None) is False
    assert beat_parent(net, ov["h4"], None) is True

    # a child that is gone drops out of its parent's list after ``keep`` seconds
    clock.t += ov["h3"].beats.keep + 0.1
    assert sorted(ov["h3"].subtree_beats()) == []
    r = call(net.apps["http://h2"], "POST", "/agent/v1/heartbeats",
             {"from": "h9", "agents": {"h9": {"version": __version__}}})
    assert r.status_int == 400 and "'h9' is not a child" in r.json["error"]
    r = call(net.apps["http://h2"], "POST", "/agent/v1/heartbeats",
             {"from": "h3", "agents": {"h3": {"version": "x"}}})
    assert r.status_int == 400 and "field 'version'" in r.json["error"]
    r = call(net.apps["http://h2"], "POST", "/agent/v1/heartbeats",
             {"from": "h3", "agents": {"h4": {"version": __version__}}})
    assert r.status_int == 400 and "must list the sender" in r.json["error"]


def test_parent_down_heartbeat_goes_to_the_controller(clock):
    from host_agent.__main__ import beat_parent

    net, _ = overlay_agents(clock, "h3")
    net.overlays["h3"].set_overlay({"epoch": 1, "parent": {"name": "h2", "url": "http://h2"}})
    assert beat_parent(net, net.overlays["h3"], None) is None  # no such app: 599


def test_host_lines_route_checks_limit(clock):
    net, _ = overlay_agents(clock, "h2")
    app = net.apps["http://h2"]
    r = call(app, "GET", "/agent/v1/tasks/t1/hosts/h2?limit=0")
    assert r.status_int == 400 and "'limit'" in r.json["error"]
    r = call(app, "GET", "/agent/v1/tasks/t1/hosts/h2")
    assert r.status_int == 404 and "unknown task 't1" in r.json["error"]


def test_a_heartbeat_does_not_wait_for_a_slow_monitor_cost():
    """A monitor that takes seconds to answer (a large snapshot, a flood) must not
    hold back the heartbeat: a root whose beat came 5 s late had its whole subtree
    marked down. The reading goes on in the background; the beat carries the last."""
    import itertools
    import time

    import eventlet

    from host_agent.__main__ import BeatCost

    answers = ({"n": n} for n in itertools.count(1))
    slow = {"on": False}

    def read() -> dict:
        if slow["on"]:
            eventlet.sleep(1.0)
        return next(answers)

    cost = BeatCost(read, wait=0.2)
    assert cost() == {"n": 1}
    slow["on"] = True
    t0 = time.monotonic()
    assert cost() == {"n": 1}  # the last reading, at the wait
    assert cost() == {"n": 1}  # still the one reading in flight, not a second
    assert time.monotonic() - t0 < 0.9
    eventlet.sleep(1.0)
    slow["on"] = False
    assert cost() == {"n": 3}  # the slow reading ended (2); this beat read again

    def broken() -> dict:
        raise OSError("monitor gone")

    assert BeatCost(broken)() is None
