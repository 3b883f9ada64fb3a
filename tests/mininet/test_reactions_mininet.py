"""Mininet tier: measurement events drive OpenFlow actions on real OVS through real Ryu.

One network for the module (``topo.launch.MeasureNetwork``: controller,
tree depth 2 fanout 3 on userspace OVS, so s2 holds h1-h3, s3 h4-h6, s4
h7-h9; an agent on every host), under the machine-wide Mininet lock.
Scenarios, in order (each its own task, deleted at its end):

1. ``dry_run``: a port scan h4 -> h5 records a would-be block and leaves
   ``ovs-ofctl dump-flows --no-stats`` of every switch equal.
2. port scan + ``block`` + ``notify``: h6 scans h5 (``nc -z`` over 40
   ports); h6 then reaches neither h5 nor h7 while the other eight hosts
   ping each other at 0% loss; a local HTTP server gets the event with a
   valid signature; the action and its expiry are in GET actions, GET
   events and ``measure actions``; a scan by h4 (``protect:``) is refused
   and recorded, h4 keeps its reach; after ``duration`` h6 reaches everyone
   again.
3. heavy hitter + ``mirror`` to h9: a TCP transfer h2 -> h1:80 is copied to
   h9 (tcpdump sees it) while a concurrent h2 -> h1:81 transfer is not; both
   transfers deliver every byte.
4. ``rate_limit`` 5 Mbit/s: an iperf3 TCP sender h4 -> h8 paced at 40 Mbit/s
   runs through the action and past its expiry; the receiver's per-second
   throughput is printed, the limited seconds' mean is within +-10% of
   5 Mbit/s and the seconds after expiry are back near the offered rate.
5. controller restart: a block h3 -> * is active, the controller is killed
   and started again on the same state; the block is still in force after
   the restart (re-installed with its remaining time) and ends at its
   original expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testing.overlaynet import apply_everywhere, measure_network
from testing.procs import stop_process, wait_until

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 10)]
INTERVAL = 1.0
#: the scanned ports only: the victim's RSTs go to the scanner's ephemeral ports, which would
#: make the victim look like a scanner of them
SCANNED = {"proto": "tcp", "dport": "1:1024"}
REACTION_COOKIE = 0x52454143 << 32


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "reactions-net") as mn:
        yield mn


def api(net, path, method="GET", body=None):
    return net.rest(path, method=method, body=body)


def apply(net, task: dict) -> str:
    task_id = apply_everywhere(net, task, AGENTS)
    time.sleep(2 * INTERVAL)  # a first (empty) result, so a crossing is a new event
    return task_id


def delete(net, task_id: str) -> None:
    assert api(net, f"/measure/v1/tasks/{task_id}", "DELETE")[0] == 200


def actions(net, task_id: str) -> list[dict]:
    status, body = api(net, "/measure/v1/actions")
    assert status == 200, body
    return [a for a in body["actions"] if a["task_id"] == task_id]


def events(net, task_id: str, kind: str | None = None) -> list[dict]:
    status, body = api(net, "/measure/v1/events?since=0")
    assert status == 200
    return [e for e in body["events"] if e["task_id"] == task_id
            and (kind is None or e["kind"] == kind)]


def dump_flows(net, switch: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "--no-stats", switch],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return sorted(line.strip() for line in out.splitlines()
                  if line.strip() and not line.startswith(("OFPST", "NXST")))


def reaction_flows(net, switch: str) -> list[str]:
    return [f for f in dump_flows(net, switch) if "cookie=0x52454143" in f]


def reachable(net, src: str, dst: str) -> bool:
    h = net.net.get(src)
    out = h.cmd(f"ping -c2 -W1 -i0.3 {net.net.get(dst).IP()}")
    return bool(re.search(r" 0% packet loss", out))


def unreachable(net, src: str, dst: str) -> bool:
    out = net.net.get(src).cmd(f"ping -c2 -W1 -i0.3 {net.net.get(dst).IP()}")
    return "100% packet loss" in out


def scan(net, src: str, dst: str, ports: str = "1-40") -> None:
    net.net.get(src).cmd(f"nc -z -w1 {net.net.get(dst).IP()} {ports}")


def ping_loss(net, hosts: list[str], attempts: int = 2) -> float:
    """All-pairs ping loss; a second round only if the first lost pings to (re)learning."""
    loss = 100.0
    for _ in range(attempts):
        loss = net.net.ping(hosts=[net.net.get(h) for h in hosts], timeout="1")
        if loss == 0.0:
            break
    return loss


# ---------------------------------------------------------------- 1. dry run

def test_dry_run_records_the_action_and_changes_no_flow_table(net):
    task_id = apply(net, {"name": "scan-dry", "kind": "port_scan", "report_interval": INTERVAL,
                          "filter": SCANNED,
                          "on": [{"event": "port_scan", "action": "block", "duration": 30,
                                  "mode": "dry_run"}]})
    scan(net, "h4", "h5", "1-5")  # the forwarding flows of this pair exist before the dump
    assert ping_loss(net, AGENTS) == 0.0
    switches = [s.name for s in net.net.switches]
    before = {s: dump_flows(net, s) for s in switches}
    scan(net, "h4", "h5")
    recorded = wait_until(lambda: [a for a in actions(net, task_id) if a["status"] == "dry_run"],
                          timeout=10 * INTERVAL, message="the dry-run action")
    after = {s: dump_flows(net, s) for s in switches}
    assert after == before
    assert recorded[0]["action"] == "block" and recorded[0]["target"] == "10.0.0.4"
    assert recorded[0]["match"]["ipv4_src"] == "10.0.0.4" and recorded[0]["dpid"] == 3
    assert [e["state"] for e in events(net, task_id, "action")] == ["dry_run"]
    assert reachable(net, "h4", "h5")
    delete(net, task_id)
    assert actions(net, task_id)[0]["status"] == "lifted"


# ---------------------------------------------------------------- 2. block + notify

class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_port_scan_blocks_the_scanner_notifies_and_expires(net):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    duration = 12
    try:
        task_id = apply(net, {"name": "scan-block", "kind": "port_scan",
                              "report_interval": INTERVAL, "filter": SCANNED,
                              "protect": ["h4"],
                              "on": [{"event": "port_scan", "action": "block",
                                      "duration": duration},
                                     {"event": "port_scan", "action": "notify", "url": url}]})
        t0 = time.time()
        scan(net, "h6", "h5")
        scanned = time.time()
        active = wait_until(lambda: [a for a in actions(net, task_id)
                                     if a["action"] == "block" and a["status"] == "active"],
                            timeout=10, interval=0.1, message="the block action")[0]
        seen = time.time()
        print(f"scan took {scanned - t0:.2f} s; block active {seen - scanned:.2f} s after it")
        assert active["target"] == "10.0.0.6" and active["dpid"] == 3
        assert active["expires"] == pytest.approx(active["created"] + duration)
        wait_until(lambda: reaction_flows(net, "s3"), timeout=5, message="block flow on s3")
        assert unreachable(net, "h6", "h5") and unreachable(net, "h6", "h7")
        others = [h for h in AGENTS if h != "h6"]
        assert ping_loss(net, others) == 0.0
        scan_events = events(net, task_id, "port_scan")
        assert [e["src"] for e in scan_events] == ["10.0.0.6"]  # the victim is no scanner
        cli = subprocess.run([sys.executable, "-m", "measure_cli.cli", "--url", net.rest_url,
                              "--token-file", net.token_file(), "actions"],
                             capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0, cli.stderr
        assert re.search(rf"^\s*{active['id']}\s+{task_id}\s+block\s+enforce\s+active\s+"
                         r"10\.0\.0\.6", cli.stdout, re.M), cli.stdout
        taken = [e for e in events(net, task_id, "action") if e["state"] == "taken"]
        assert taken[0]["action_id"] == active["id"] and taken[0]["cause"] == scan_events[0]["id"]
        assert taken[0]["expires"] == active["expires"]

        wait_until(lambda: Hook.received, timeout=10, message="the webhook POST")
        headers, body = Hook.received[0]
        secret = open(os.path.join(net.run_dir, "state", "webhook.secret")).read().strip()
        ts = headers["X-Measure-Timestamp"]
        mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Measure-Signature"] == f"sha256={mac}"
        sent = json.loads(body)
        assert sent["event"]["kind"] == "port_scan" and sent["event"]["src"] == "10.0.0.6"
        assert sent["task_id"] == task_id
        wait_until(lambda: [a for a in actions(net, task_id) if a["action"] == "notify"
                            and a["status"] == "sent"], timeout=5, message="notify sent")

        scan(net, "h4", "h5")  # h4 is protected: its scan is refused, recorded, not blocked
        refused = wait_until(lambda: [e for e in events(net, task_id, "action")
                                      if e["state"] == "refused"], timeout=10,
                             message="the refused block of protected h4")
        assert refused[0]["target"] == "10.0.0.4" and "protected" in refused[0]["reason"]
        assert reachable(net, "h4", "h5")
        assert [a["target"] for a in actions(net, task_id) if a["action"] == "block"] == [
            "10.0.0.6"]

        time.sleep(max(0.0, active["expires"] - time.time()) + 1.5)
        assert not reaction_flows(net, "s3")
        assert ping_loss(net, AGENTS) == 0.0
        ended = [a for a in actions(net, task_id) if a["id"] == active["id"]][0]
        assert ended["status"] == "expired"
        assert [e["state"] for e in events(net, task_id, "action")
                if e["action_id"] == active["id"]] == ["taken", "expired"]
        delete(net, task_id)
    finally:
        server.shutdown()


# ---------------------------------------------------------------- 3. mirror

SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
print(n, flush=True)
"""

SOURCE = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
chunk = b"m" * 20000
end = time.time() + float(sys.argv[3])
n = 0
while time.time() < end:
    s.sendall(chunk); n += len(chunk); time.sleep(0.01)
s.close()
print(n, flush=True)
"""


def test_heavy_hitter_mirrors_that_flow_to_the_tap_and_nothing_else(net):
    py = sys.executable
    assert ping_loss(net, ["h1", "h2", "h9"]) == 0.0  # all three located by the controller
    macs = {h["mac"] for h in api(net, "/measure/v1/topology")[1]["hosts"]}
    assert {net.net.get(h).MAC() for h in ("h1", "h2", "h9")} <= macs, macs
    task_id = apply(net, {"name": "hh-mirror", "kind": "heavy_hitters", "key": "five_tuple",
                          "increment": "bytes", "threshold": 0.05, "report_interval": INTERVAL,
                          "filter": {"proto": "tcp", "dport": 80},
                          "on": [{"event": "heavy_hitter", "action": "mirror", "to": "h9",
                                  "duration": 30}]})
    h1, h2, h9 = (net.net.get(h) for h in ("h1", "h2", "h9"))
    pcap = os.path.join(net.run_dir, "h9.pcap")
    dump = h9.popen(["tcpdump", "-i", "h9-eth0", "-n", "-U", "-w", pcap, "tcp"],
                    stderr=subprocess.PIPE)
    sinks = [h1.popen([py, "-c", SINK, str(p)], stdout=subprocess.PIPE, text=True)
             for p in (80, 81)]
    try:
        for s in sinks:
            assert s.stdout.readline().strip() == "ready"
        sources = [h2.popen([py, "-c", SOURCE, h1.IP(), str(p), "8"], stdout=subprocess.PIPE,
                            text=True) for p in (80, 81)]
        sent = [int(p.communicate(timeout=60)[0].split()[-1]) for p in sources]
        got = [int(s.communicate(timeout=30)[0].split()[-1]) for s in sinks]
        assert got == sent  # the transfers themselves are unaffected
        time.sleep(1)
    finally:
        for proc in (*sinks, dump):
            stop_process(proc)
    mirrored = [a for a in actions(net, task_id) if a["action"] == "mirror"]
    assert len(mirrored) == 1 and mirrored[0]["status"] == "active", mirrored
    assert mirrored[0]["match"]["tcp_dst"] == 80 and mirrored[0]["dpid"] == 2
    read = subprocess.run(["tcpdump", "-n", "-r", pcap], capture_output=True, text=True,
                          timeout=60)
    lines = read.stdout.splitlines()
    to80 = [x for x in lines if re.search(r"10\.0\.0\.2\.\d+ > 10\.0\.0\.1\.80:", x)]
    to81 = [x for x in lines if re.search(r"10\.0\.0\.2\.\d+ > 10\.0\.0\.1\.81:", x)]
    back = [x for x in lines if "10.0.0.1." in x.split(">")[0]]
    print(f"h9 captured {len(to80)} packets of h2->h1:80, {len(to81)} of h2->h1:81, "
          f"{len(back)} of h1->h2; sent {sent} bytes")
    assert len(to80) > 50 and to81 == [] and back == []
    delete(net, task_id)
    wait_until(lambda: not reaction_flows(net, "s2"), timeout=5, message="mirror flow lifted")


# ---------------------------------------------------------------- 4. rate limit

def test_rate_limit_holds_an_iperf3_sender_to_5_mbit_until_expiry(net):
    duration = 14
    task_id = apply(net, {"name": "hh-limit", "kind": "heavy_hitters", "key": "src",
                          "increment": "bytes", "threshold": 0.3, "report_interval": INTERVAL,
                          "filter": {"proto": "tcp", "dport": 5201},
                          "on": [{"event": "heavy_hitter", "action": "rate_limit", "mbit": 5,
                                  "duration": duration}]})
    h4, h8 = net.net.get("h4"), net.net.get("h8")
    # the receiver's own JSON report: what arrived, per second (the sender's view counts
    # socket writes)
    server = h8.popen(["iperf3", "-s", "-1", "-p", "5201", "-J", "-i", "1"],
                      stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        start = time.time()
        client = h4.popen(["iperf3", "-c", h8.IP(), "-p", "5201", "-t", "26", "-b", "40M",
                           "-i", "1", "-J"], stdout=subprocess.PIPE, text=True)
        client.communicate(timeout=60)
        out, _ = server.communicate(timeout=30)
    finally:
        stop_process(server)
    report = json.loads(out)
    limit = [a for a in actions(net, task_id) if a["action"] == "rate_limit"]
    assert len(limit) == 1, limit
    act = limit[0]
    assert act["status"] == "expired" and act["mbit"] == 5
    on, off = act["created"] - start, act["expires"] - start
    rates = [(iv["sum"]["start"], iv["sum"]["end"], iv["sum"]["bits_per_second"] / 1e6)
             for iv in report["intervals"]]
    print(f"limit from {on:.1f} s to {off:.1f} s of the run; per second (Mbit/s): "
          + " ".join(f"{r:.1f}" for _, _, r in rates))
    limited = [r for s, e, r in rates if s >= on + 2 and e <= off - 0.5]
    after = [r for s, e, r in rates if s >= off + 1.5]
    mean = sum(limited) / len(limited)
    print(f"limited mean {mean:.2f} Mbit/s over {len(limited)} s; after expiry "
          f"{sum(after) / len(after):.1f} Mbit/s over {len(after)} s")
    assert len(limited) >= 6 and len(after) >= 3
    assert 4.5 <= mean <= 5.5
    assert min(after) > 25
    delete(net, task_id)


# ---------------------------------------------------------------- 5. controller restart

def test_block_survives_a_controller_restart_and_ends_at_its_original_expiry(net):
    duration = 40
    task_id = apply(net, {"name": "scan-restart", "kind": "port_scan",
                          "report_interval": INTERVAL, "filter": SCANNED,
                          "on": [{"event": "port_scan", "action": "block",
                                  "duration": duration}]})
    scan(net, "h3", "h1")
    active = wait_until(lambda: [a for a in actions(net, task_id) if a["status"] == "active"],
                        timeout=10, interval=0.2, message="the block action")[0]
    assert active["dpid"] == 2 and active["target"] == "10.0.0.3"
    assert unreachable(net, "h3", "h1")

    killed = time.time()
    stop_process(net.controller)
    net.start_controller()
    # the switches reconnect to the new controller and get the block again
    wait_until(lambda: api(net, "/measure/v1/topology")[1].get("switches"), timeout=30,
               message="switches back")
    flows = wait_until(lambda: reaction_flows(net, "s2"), timeout=15, message="block re-sent")
    timeouts = {int(t) for f in flows for t in re.findall(r"hard_timeout=(\d+)", f)}
    print(f"controller back {time.time() - killed:.1f} s after the kill; block flows with "
          f"hard_timeout {sorted(timeouts)} s, {active['expires'] - time.time():.1f} s left")
    assert timeouts and max(timeouts) < duration  # re-sent with the remaining time
    assert ping_loss(net, [h for h in AGENTS if h != "h3"], attempts=3) == 0.0
    assert unreachable(net, "h3", "h1") and unreachable(net, "h3", "h7")
    again = [a for a in actions(net, task_id) if a["id"] == active["id"]][0]
    assert again["status"] == "active" and again["expires"] == active["expires"]

    left = active["expires"] - time.time()
    assert left > 3, f"the restart took too long ({left:.1f} s of the block left)"
    time.sleep(max(0.0, left - 2))
    assert unreachable(net, "h3", "h1")  # still blocked two seconds before the expiry
    time.sleep(3.5)
    assert not reaction_flows(net, "s2")
    wait_until(lambda: reachable(net, "h3", "h1"), timeout=5, message="h3 reaches h1 again")
    wait_until(lambda: [a for a in actions(net, task_id) if a["status"] == "expired"],
               timeout=5, message="expired in GET actions")
    delete(net, task_id)
