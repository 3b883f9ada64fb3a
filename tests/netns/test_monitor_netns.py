"""The agent with real iptables + NFQUEUE + traffic between two namespaces.

The agent runs as ``ip netns exec <ns> python -m host_agent`` (a real
process with its monitor subprocess). The test talks HTTP to it from inside
a namespace (``testing.agentproc``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from measure_model.cost import check_cost
from testing.agentproc import (
    CAPTURES,
    capture_args,
    ping_counts,
    rule_counters,
    send_udp,
    sketch_counts,
    snapshot_when,
    tcp_transfer,
    truth_rule,
)
from testing.netns import ROOT
from testing.procs import wait_until

pytestmark = pytest.mark.netns


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("mode", CAPTURES)
def test_ping_exact_packets_and_bytes(ns_pair, agent_factory, mode):
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args(mode))
    truth = truth_rule(b, "-p", "icmp")
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "counters": [{"key": "src", "increment": "pkt"},
                                                  {"key": "src", "increment": "bytes"}]})
    out = a.run(["ping", "-c", "20", "-i", "0.01", "-s", "100", "-q", b.ip]).stdout
    assert " 0% packet loss" in out
    snap = snapshot_when(ag, sk["id"], 1, 20)
    assert (snap["packets"], snap["bytes"], snap["total"]) == (20, 20 * 128, 20)
    assert snap["heavy_hitters"] == {a.ip: 20}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    assert snap["monitor"]["capture"] == mode
    by = ag.v1("GET", f"/sketches/{sk['id']}/counters/2?key={a.ip}")
    assert (by["total"], by["estimate"]["value"]) == (2560, 2560)
    assert sketch_counts(ag, sk["id"], mode, truth) == (20, 2560)


@pytest.mark.parametrize("mode", CAPTURES)
def test_udp_datagrams_of_known_sizes_and_heavy_hitters(ns_pair, agent_factory, mode):
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args(mode))
    truth = truth_rule(b, "-p", "udp", "-s", a.ip, "--dport", "7001:7003")
    sk = ag.v1("POST", "/sketches", {
        "filter": {"proto": "udp", "src": a.ip, "dport": "7001:7003"},
        "counters": [{"key": "dport", "increment": "pkt", "threshold": 0.3},
                     {"key": "src_dport", "increment": "bytes"}]})
    send_udp(a, b.ip, 7001, [100, 300], 25)     # 50 packets
    send_udp(a, b.ip, 7002, [50], 5)            # 5 packets
    send_udp(a, b.ip, 7003, [1000], 45)         # 45 packets
    send_udp(a, b.ip, 7999, [10], 10)           # outside the filter
    snap = snapshot_when(ag, sk["id"], 1, 100)
    assert snap["packets"] == 100
    assert snap["heavy_hitters"] == {"7001": 50, "7003": 45}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    expected = 25 * (128 + 328) + 5 * 78 + 45 * 1028
    by = ag.v1("GET", f"/sketches/{sk['id']}/counters/2?key={a.ip},7003")
    assert (by["bytes"], by["total"], by["estimate"]["value"]) == (expected, expected, 45 * 1028)
    assert sketch_counts(ag, sk["id"], mode, truth) == (100, expected)


@pytest.mark.parametrize("mode", CAPTURES)
def test_tcp_counts_equal_rule_counters(ns_pair, agent_factory, mode):
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args(mode))
    truth = truth_rule(b, "-p", "tcp", "--dport", "5201")
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "tcp", "dport": 5201},
                                     "counters": [{"key": "five_tuple", "increment": "bytes"}]})
    tcp_transfer(a, b, b.ip, 5201, 300000)
    pkts, nbytes = sketch_counts(ag, sk["id"], mode, truth)
    snap = snapshot_when(ag, sk["id"], 1, pkts)
    assert (snap["packets"], snap["bytes"]) == (pkts, nbytes)
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    assert nbytes > 300000
    (key, value), = snap["top_k"]
    assert key.startswith(f"{a.ip},{b.ip},tcp,") and key.endswith(",5201") and value == nbytes


@pytest.mark.parametrize("mode", CAPTURES)
def test_nc_port_scan_window_distinct_ports(ns_pair, agent_factory, mode):
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args(mode))
    sk = ag.v1("POST", "/sketches", {
        "filter": {"proto": "tcp", "dport": "8008:8092"},
        "counters": [{"key": "dport", "window": {"length": 60, "mode": "sliding"}},
                     {"key": "src_dport", "window": {"length": 60, "mode": "sliding"}}]})
    a.run(["nc", "-z", "-w", "1", b.ip, "8008-8092"], check=False)
    snapshot_when(ag, sk["id"], 1, 85)
    r = ag.legacy(type="query sketch", sketch_id=sk["id"], counter_key_type="dport",
                  counter_key="real_time_key_num")
    assert (r.status_code, r.text) == (200, "85")
    r = ag.legacy(type="query real time counter", sketch_id=sk["id"],
                  counter_key_type="src_dport")
    counts = r.json()
    assert sorted(counts) == sorted(f"{a.ip},{p}" for p in range(8008, 8093))


def test_delete_sketch_removes_its_rule(ns_pair, agent_factory):
    _, b = ns_pair
    ag = agent_factory(b)
    one = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"}})
    two = ag.v1("POST", "/sketches", {"filter": {"proto": "udp"}})
    rules = ag.rules()
    assert '"endhost-measure:h2:1"' in rules and '"endhost-measure:h2:2"' in rules
    ag.v1("DELETE", f"/sketches/{one['id']}")
    rules = ag.rules()
    assert '"endhost-measure:h2:1"' not in rules and '"endhost-measure:h2:2"' in rules
    ag.v1("DELETE", f"/sketches/{two['id']}")
    assert ":h2:2" not in ag.rules()
    ag.stop()
    assert "endhost-measure" not in ag.rules() and "ehm-h2" not in ag.rules()


def test_monitor_sigkill_traffic_flows_and_agent_restarts_it(ns_pair, agent_factory):
    a, b = ns_pair
    ag = agent_factory(b)
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "counters": [{"key": "src"}]})
    old_pid = ag.v1("GET", "/health")["monitors"][0]["pid"]
    ping = a.popen(["ping", "-c", "150", "-i", "0.01", "-q", b.ip], text=True)
    wait_until(lambda: ag.v1("GET", f"/sketches/{sk['id']}/counters/1")["packets"] >= 20,
               timeout=10, message="ping counted")
    os.kill(old_pid, signal.SIGKILL)
    out, _ = ping.communicate(timeout=30)
    # Packets sitting in the kernel queue at the instant of the kill are dropped
    # by the kernel when the queue is destroyed (at most a couple at 100 pkt/s);
    # everything after passes unmeasured thanks to --queue-bypass.
    sent, received = ping_counts(out)
    assert sent == 150 and received >= 148, out
    health = wait_until(lambda: (h := ag.v1("GET", "/health"))["restarts"] == 1 and h,
                        timeout=10, message="monitor restarted")
    new_pid = health["monitors"][0]["pid"]
    assert new_pid != old_pid and health["monitors"][0]["alive"]
    gap = health["gaps"][0]
    assert gap["end"] >= gap["start"] and gap["queue"] == 0
    # pings kept arriving (bypassed) between the kill and the restart
    assert 1 <= gap["unmeasured_packets_max"] <= 150
    # the sketch is back in the new monitor: fresh pings are counted from zero
    a.run(["ping", "-c", "5", "-i", "0.01", "-q", b.ip])
    snap = snapshot_when(ag, sk["id"], 1, 5)
    assert snap["monitor"]["restarts"] == 1 and snap["monitor"]["counting_since"] == gap["end"]
    assert snap["missed"]["packets"] + snap["packets"] >= 5
    assert "died; restarting" in ag.log()


def test_full_queue_fails_open_and_counts_missed(ns_pair, agent_factory):
    a, b = ns_pair
    ag = agent_factory(b, extra=["--allow-legacy", "--max-len", "16"])
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "counters": [{"key": "src"}]})
    pid = ag.v1("GET", "/health")["monitors"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)  # the monitor stops reading: the queue fills up
    try:
        ping = a.popen(["ping", "-c", "50", "-i", "0.01", "-w", "20", "-q", b.ip], text=True)
        wait_until(lambda: rule_counters(ag, sk["id"])[0] >= 50, timeout=10,
                   message="50 pings matched")
        # 34 bypassed the full queue (fail-open) and were answered meanwhile
        assert ping.poll() is None
    finally:
        os.kill(pid, signal.SIGCONT)
    out, _ = ping.communicate(timeout=30)
    sent, received = ping_counts(out)
    # the 16 held in the queue are answered after SIGCONT (ping stops at >= 50 replies)
    assert received >= 50, out
    matched, _ = rule_counters(ag, sk["id"])
    # an open read's rule counters may be up to RULES_MAX_AGE (2 s) old: poll until fresh
    snap = wait_until(lambda: (s := snapshot_when(ag, sk["id"], 1, 16))["packets"]
                      + s["missed"]["packets"] == sent and s, timeout=10,
                      message="a snapshot with fresh rule counters")
    missed = snap["missed"]["packets"]
    assert matched == sent and snap["packets"] + missed == sent
    assert missed >= 34 and snap["missed"]["bytes"] == missed * 84


def test_agent_sigkill_then_new_agent_removes_stale_rules(ns_pair, agent_factory):
    a, b = ns_pair
    ag = agent_factory(b)
    ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"}, "counters": [{"key": "src"}]})
    ag.v1("POST", "/sketches", {"filter": {"proto": "udp"}})
    ag.stop(signal.SIGKILL)
    stale = ag.rules()
    assert '"endhost-measure:h2:1"' in stale and '"endhost-measure:h2:2"' in stale
    assert " 0% packet loss" in a.run(["ping", "-c", "3", "-i", "0.05", b.ip]).stdout
    ag2 = agent_factory(b)
    rules = ag2.rules()
    assert ":h2:1" not in rules and ":h2:2" not in rules
    assert rules.count('"endhost-measure:h2:hook"') == 2
    assert "removed" in ag2.log() and "stale" in ag2.log()
    assert ag2.v1("GET", "/sketches") == []


MULTI_SENDER = """
import socket, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for src in sys.argv[4:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for _ in range(count):
        s.sendto(b"z" * 72, (dst, port))
"""


def test_two_queues_two_monitors_merge_exactly(ns_pair, agent_factory):
    a, b = ns_pair
    sources = [f"10.77.0.{i}" for i in range(11, 19)]
    for src in sources:
        a.run(["ip", "addr", "add", f"{src}/24", "dev", a.intf])
    ag = agent_factory(b, extra=["--allow-legacy", "--queues", "2", "--queue-num", "4"])
    health = ag.v1("GET", "/health")
    assert [m["queue"] for m in health["monitors"]] == [4, 5]
    assert "--queue-balance 4:5 --queue-bypass" in ag.rules()
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "udp", "dport": 6000},
                                     "counters": [{"key": "src", "threshold": 0.1}]})
    a.run([sys.executable, "-c", MULTI_SENDER, b.ip, "6000", "20", *sources])
    snap = snapshot_when(ag, sk["id"], 1, 160)
    assert (snap["packets"], snap["bytes"]) == (160, 160 * 100)
    assert snap["heavy_hitters"] == {src: 20 for src in sources}
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    per_queue = [m["packets"] for m in ag.v1("GET", "/health")["monitors"]]
    assert sum(per_queue) == 160 and all(n > 0 for n in per_queue), per_queue
    r = ag.legacy(type="query sketch", sketch_id=sk["id"], counter_key_type="src",
                  counter_key=sources[0])
    assert r.text == "20"


def test_registration_heartbeat_and_signing(ns_pair, agent_factory, tmp_path):
    """--controller: register + heartbeat (signed), retried while the controller is down."""
    import json as jsonlib

    from measure_common.auth import agent_key, load_or_create_secret, sign_request

    _, b = ns_pair
    secret_file = str(tmp_path / "secret")
    secret, _ = load_or_create_secret(secret_file)
    seen_file = tmp_path / "seen.jsonl"
    # The stand-in controller is a process in the namespace (no threads or
    # eventlet in the test process): it records (path, body, signed) per POST.
    script = (
        "import http.server, json, sys\n"
        "from measure_common.auth import Verifier, load_or_create_secret\n"
        "v = Verifier.for_controller(load_or_create_secret(sys.argv[1])[0])\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))\n"
        "        try:\n"
        "            v.verify('POST', self.path, body, dict(self.headers)); ok = True\n"
        "        except Exception:\n"
        "            ok = False\n"
        "        with open(sys.argv[2], 'a') as f:\n"
        "            f.write(json.dumps([self.path, json.loads(body or b'{}'), ok]) + '\\n')\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
        "    def log_message(self, *a):\n"
        "        pass\n"
        "http.server.HTTPServer(('127.0.0.1', 18080), H).serve_forever()\n")

    def recorded() -> list:
        if not seen_file.exists():
            return []
        return [jsonlib.loads(line) for line in seen_file.read_text().splitlines() if line]

    ag = agent_factory(b, "h2", extra=["--controller", "http://127.0.0.1:18080",
                                       "--secret-file", secret_file,
                                       "--advertise", "http://192.168.100.2:8000",
                                       "--listen", "0.0.0.0"])
    wait_until(lambda: "retrying" in ag.log(), timeout=10, message="controller down logged")
    b.popen([sys.executable, "-c", script, secret_file, str(seen_file)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: any(p.endswith("/heartbeat") for p, _, _ in recorded()), timeout=20,
               message="heartbeat")
    seen = recorded()
    path, body, signed = seen[0]
    assert path == "/measure/v1/agents" and signed
    assert body["name"] == "h2" and body["url"] == "http://192.168.100.2:8000"
    assert body["data_ip"] == b.ip and re.fullmatch(r"[0-9a-f:]{17}", body["mac"])
    assert all(s for _, _, s in seen) and seen[1][0] == "/measure/v1/agents/h2/heartbeat"
    # state-changing v1 requests must be signed; reads need not be
    r = ag.request("POST", "/agent/v1/sketches", json={})
    assert r.status_code == 401 and "signed" in r.json()["error"]
    data = b"{}"
    r = ag.request("POST", "/agent/v1/sketches", data=data, headers={
        **sign_request(agent_key(secret, "h2"), "POST", "/agent/v1/sketches", data,
                       sender="controller", receiver="h2"),
        "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert ag.get("/agent/v1/sketches").json()[0]["id"] == 1
    r = ag.legacy(type="config sketch", interface="INPUT")
    assert r.status_code == 403  # no --allow-legacy


def test_a_monitor_that_keeps_crashing_is_crash_looping_in_health(ns_pair, agent_factory):
    """Three SIGKILLs of the real monitor within a minute: the real agent restarts it
    each time and its health says ``crash_looping`` (status degraded); one death
    alone does not."""
    _, b = ns_pair
    ag = agent_factory(b)
    health = ag.v1("GET", "/health")
    assert (health["monitor"]["restarts"], health["monitor"]["crash_looping"]) == (0, False)
    assert check_cost(health["monitor"]) and health["monitor"]["cpu_seconds"] > 0
    assert health["status"] == "ok"
    for n in range(1, 4):
        pid = ag.v1("GET", "/health")["monitors"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        health = wait_until(
            lambda n=n, pid=pid: (h := ag.v1("GET", "/health"))["restarts"] == n
            and h["monitors"][0]["alive"] and h["monitors"][0]["pid"] != pid and h,
            timeout=10, message=f"monitor restarted after kill {n}")
        assert health["monitor"]["crash_looping"] is (n == 3), health["monitor"]
    assert health["status"] == "degraded"
    assert "crash-looping" in ag.log()
