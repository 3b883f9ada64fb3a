"""Bandwidth estimation across a real rate-limited link between namespaces.

A probe source, a cross-traffic source and a destination namespace behind
a router namespace whose link to the destination gets the same HTB shaping
Mininet's ``TCLink(bw=10)`` installs (``rate 10Mbit burst 15k``). A
standalone bandwidth agent (``python -m host_agent.bandwidth.cli serve``) or the
real agent (``python -m host_agent --no-capture``) runs in
the destination namespace; probes run in the source namespace. Rates are
IP-level (what the probe counts), so the expected available bandwidth of
a 10 Mbit/s link (Ethernet frames) is about 9.87 Mbit/s for 1000-byte
packets; the acceptance bands (15% of 10, 20% of 6) hold either
way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from testing.netns import run, unique_name
from testing.procs import wait_until

pytestmark = pytest.mark.netns

PY = sys.executable
RUNS = 5


def shape(ns, intf: str, rate_mbit: float) -> None:
    """HTB on ``intf``, exactly as Mininet's TCLink(bw=...) does it."""
    ns.run(["tc", "qdisc", "add", "dev", intf, "root", "handle", "5:0", "htb", "default", "1"])
    ns.run(["tc", "class", "add", "dev", intf, "parent", "5:0", "classid", "5:1", "htb",
            "rate", f"{rate_mbit}Mbit", "burst", "15k"])


def reachable(ns, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({ip!r}, {port}), 1).close()"
    return ns.run([PY, "-c", code], check=False).returncode == 0


def routed(netns_factory, rate_mbit: float):
    """Probe source, cross source and destination behind a router namespace.

    Each end has its own veth to the router; the router's veth to the
    destination carries the HTB. Cross traffic meets the probe only in that
    queue, like a flow from another host (a sender on the probe's own host
    would be slowed by its socket buffer when the queue fills). Namespace
    deletion removes the veths, so the factory's clean-up covers everything.
    """
    src, xsrc, rtr, dst = (netns_factory.netns() for _ in range(4))
    rtr.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for i, ns in enumerate((src, xsrc, dst)):
        host, router = unique_name("bh"), unique_name("br")
        run(["ip", "link", "add", host, "netns", ns.name, "type", "veth", "peer", "name", router,
             "netns", rtr.name])
        ns.ip, ns.intf = f"10.79.{i}.1", host
        ns.run(["ip", "addr", "add", f"{ns.ip}/24", "dev", host])
        rtr.run(["ip", "addr", "add", f"10.79.{i}.254/24", "dev", router])
        ns.run(["ip", "link", "set", host, "up"])
        rtr.run(["ip", "link", "set", router, "up"])
        ns.run(["ip", "route", "add", "default", "via", f"10.79.{i}.254"])
    shape(rtr, router, rate_mbit)  # the router's link to dst (the last one made)
    return src, xsrc, dst


@pytest.fixture
def link(netns_factory):
    """(src, dst, cross src): a 10 Mbit/s bottleneck, bandwidth API on dst:8000."""
    a, x, b = routed(netns_factory, 10)
    b.popen([PY, "-m", "host_agent.bandwidth.cli", "serve", "--port", "8000", "--data-ip", b.ip])
    wait_until(lambda: reachable(a, b.ip, 8000), timeout=15, message="bandwidth API on dst")
    return a, b, x


def probe(a, b, *args: str, timeout: float = 70) -> tuple[dict, float]:
    start = time.monotonic()
    out = a.run([PY, "-m", "host_agent.bandwidth.cli", "probe", "--src-ip", a.ip, "--dst-ip", b.ip,
                 *args], check=False, timeout=timeout)
    wall = time.monotonic() - start
    assert out.stdout, out.stderr
    return json.loads(out.stdout), wall


def cross_traffic(x, b, rate_mbit: float, seconds: float) -> subprocess.Popen:
    """A bounded constant-rate UDP stream from ``x`` to dst through the same HTB."""
    return x.popen([PY, "-m", "host_agent.bandwidth.cli", "cross", "--dst-ip", b.ip, "--port", "9",
                    "--rate-mbit", str(rate_mbit), "--duration", str(seconds)], text=True)


def test_estimate_within_15_percent_of_10_mbit_five_runs(link):
    a, b, _ = link
    results = [probe(a, b)[0] for _ in range(RUNS)]
    estimates = [r["mbit_s"] for r in results]
    print("estimates without cross traffic:", estimates)
    assert all(8.5 <= e <= 11.5 for e in estimates), results
    for r in results:
        assert r["method"] == "slops" and r["label"] == "available bandwidth (SLoPS)"
        assert r["range_mbit_s"][0] <= r["mbit_s"] <= r["range_mbit_s"][1]
        assert r["mbytes_s"] == pytest.approx(r["mbit_s"] / 8, abs=1e-3)
        assert r["duration_s"] <= 10.0 and 0 < r["probe_bytes"] <= 20_000_000
        assert 9.0 <= r["capacity_mbit_s"] <= 10.5
        assert (r["src"], r["dst"]) == (a.ip, b.ip)


def test_estimate_within_20_percent_of_6_mbit_with_4_mbit_cross_traffic(link):
    a, b, x = link
    estimates = []
    for _ in range(RUNS):
        cross = cross_traffic(x, b, 4, 10.5)
        result, _ = probe(a, b, "--max-duration", "10")
        out, _ = cross.communicate(timeout=20)
        sent = json.loads(out)
        assert 3.9 <= sent["rate_mbit"] <= 4.1, sent  # the cross traffic really ran
        estimates.append(result["mbit_s"])
        assert 4.8 <= result["mbit_s"] <= 7.2, (estimates, result)
    print("estimates with 4 Mbit/s cross traffic:", estimates)


def timed_post(ns, url: str, body: dict) -> tuple[int, dict, float]:
    """POST with curl (starts in milliseconds, unlike Python under load); time it."""
    start = time.monotonic()
    out = ns.run(["curl", "-s", "-m", "70", "-w", "\n%{http_code}", "-X", "POST", "-H",
                  "Content-Type: application/json", "-d", json.dumps(body), url], timeout=75)
    wall = time.monotonic() - start
    text, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(text), wall


@pytest.fixture
def src_api(link):
    """The bandwidth API on the source too, so requests time only the probe."""
    a, b, _ = link
    a.popen([PY, "-m", "host_agent.bandwidth.cli", "serve", "--port", "8000", "--data-ip", a.ip])
    wait_until(lambda: reachable(a, a.ip, 8000), timeout=15, message="bandwidth API on src")
    return f"http://{a.ip}:8000/agent/v1/bandwidth"


@pytest.mark.parametrize("method,cap", [("slops", 2.0), ("slops", 3.5), ("bulk", 2.0),
                                        ("bulk", 5.0)])
def test_probe_never_runs_longer_than_max_duration(link, src_api, method, cap):
    a, b, _ = link
    status, result, wall = timed_post(a, src_api, {"dst_ip": b.ip, "method": method,
                                                   "max_duration": cap})
    assert status == 200, result
    assert result["duration_s"] <= cap and wall <= cap + 0.3, (wall, result)
    if method == "slops":
        assert result["capped"] == "max_duration"
    else:
        assert result["label"] == "achievable throughput (TCP bulk transfer)"
        assert 8.0 <= result["mbit_s"] <= 10.5, result


def test_probe_never_sends_more_than_max_bytes(link, src_api):
    a, b, _ = link
    status, result, _ = timed_post(a, src_api, {"dst_ip": b.ip, "max_bytes": 300_000})
    assert status == 200 and result["capped"] == "max_bytes", result
    assert 0 < result["probe_bytes"] <= 300_000


def test_unreachable_and_missing_destination_fail_fast(link):
    a, b, _ = link
    result, wall = probe(a, b, "--dst-url", f"http://{b.ip}:8009")
    assert result == {"error": f"destination agent not running at http://{b.ip}:8009/agent/v1/"
                               "bandwidth/receive (connection refused)", "status": 502}
    start = time.monotonic()
    out = a.run([PY, "-m", "host_agent.bandwidth.cli", "probe", "--dst-ip", "10.200.0.1",
                 "--max-duration", "3"], check=False)
    reply = json.loads(out.stdout)  # the router answers ICMP unreachable
    assert reply["status"] == 504 and reply["error"].startswith(
        "destination unreachable at http://10.200.0.1:8000/agent/v1/bandwidth/receive: "), reply
    assert time.monotonic() - start < 3.0
    b.run(["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"])  # goes with the namespace
    result, _ = probe(a, b, "--max-duration", "4")
    assert result["status"] == 502 and result["error"].startswith(
        f"probe packets from this host do not reach {b.ip}:"), result
    assert result["error"].endswith("(UDP filtered or wrong dst_ip)")


@pytest.fixture
def agents(netns_factory):
    """The real agent (eventlet, monkey-patched) on both ends of a 10 Mbit/s link."""
    a, b = netns_factory.pair(subnet="10.79.9")
    shape(a, a.intf, 10)
    for ns, name in ((a, "bwsrc"), (b, "bwdst")):
        ns.popen([PY, "-m", "host_agent", "--name", name, "--port", "8000", "--data-ip", ns.ip,
                  "--no-capture", "--allow-legacy", "--insecure"])
    for ns, peer in ((a, b), (b, a)):
        wait_until(lambda ns=ns, peer=peer: reachable(ns, peer.ip, 8000), timeout=20,
                   message="agents listening")
    return a, b


def curl(ns, *args: str) -> tuple[int, str]:
    out = ns.run(["curl", "-s", "-m", "40", "-w", "\n%{http_code}", *args], timeout=45)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_through_the_agent_api_and_the_original_message(agents):
    a, b = agents
    url = f"http://{a.ip}:8000"
    status, body = curl(a, "-X", "POST", "-H", "Content-Type: application/json", "-d",
                        json.dumps({"dst_ip": b.ip}), f"{url}/agent/v1/bandwidth")
    result = json.loads(body)
    assert status == 200 and 8.5 <= result["mbit_s"] <= 11.5, result
    status, text = curl(a, "-X", "POST", "-d", f"type=query bw&src={a.ip}&dst={b.ip}", url + "/")
    assert status == 200 and 8.5 / 8 <= float(text) <= 11.5 / 8, text
    assert text == f"{float(text):.2f}"  # plain-text MBytes/s, as the original replied
    status, body = curl(a, "-X", "POST", "-d", json.dumps({"dst_ip": b.ip, "method": "bulk",
                                                           "max_duration": 4}),
                        f"{url}/agent/v1/bandwidth")
    assert status == 200 and 8.0 <= json.loads(body)["mbit_s"] <= 10.5, body
    status, body = curl(a, "-X", "POST", "-d", json.dumps({"dst_ip": b.ip, "max_bytes": 1}),
                        f"{url}/agent/v1/bandwidth")
    assert (status, json.loads(body)) == (
        400, {"error": "max_bytes 1 is out of range 100000..200000000"})
