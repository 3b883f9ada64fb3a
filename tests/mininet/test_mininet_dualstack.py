"""Mininet tier: one global task over IPv4 and IPv6 traffic, merged exactly.

A tree (depth 2, fanout 2: four hosts, an agent on each, the overlay built)
under the machine-wide Mininet lock. Every host gets an IPv6 address
``fd00::N/64`` next to its IPv4 one; the hosts find each other with real
neighbour discovery, which the controller floods (``ryu_app/net/forwarding.py``:
solicited-node multicast is not chatter). A global ``src_dst``/``bytes``
task on UDP (both address families, so rules in iptables and ip6tables on
every host) must report, merged over all four agents, exactly the bytes the
receivers got: IPv4 datagrams count payload + 28 bytes, IPv6 payload + 48,
keys print as dotted quads and RFC 5952 text. The same with ``capture:
nflog`` and ``capture: ebpf`` (tc programs on every host's data interface).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from testing.overlaynet import measure_network
from testing.procs import wait_until
from topo.launch import MeasureNetwork

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 5)]

RECEIVER = """
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(30.0)
n = 0
try:
    while True:
        s.recv(65536)
        n += 1
        s.settimeout(2.0)
except socket.timeout:
    pass
print(n, flush=True)
"""

SENDER = """
import socket, sys, time
dst, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(b"x" * size, (dst, port))
    time.sleep(0.002)
"""

# (family, src, dst, datagrams, payload bytes)
FLOWS = [(4, "h1", "h3", 100, 1000), (4, "h2", "h4", 50, 500), (6, "h1", "h4", 120, 800),
         (6, "h4", "h2", 80, 1200), (6, "h3", "h1", 30, 300)]


def ip6(host: str) -> str:
    return f"fd00::{host[1:]}"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from host_agent.capture.ebpf import ensure_object

    ensure_object()  # the agents' monitors load it when they start
    with measure_network(tmp_path_factory, "dualstack-net", fanout=2) as mn:
        for name in AGENTS:
            host = mn.net.get(name)
            host.cmd(f"ip -6 addr add {ip6(name)}/64 dev {host.defaultIntf().name} nodad")
        yield mn


def apply(net: MeasureNetwork, task: dict) -> str:
    status, body = net.rest("/measure/v1/tasks", method="POST", body={"tasks": [task]})
    assert status == 201, body
    task_id = body["tasks"][0]["id"]

    def everywhere():
        code, rec = net.rest(f"/measure/v1/tasks/{task_id}")
        return code == 200 and rec["agents"] == {a: "ok" for a in AGENTS}

    wait_until(everywhere, timeout=30, message=f"task {task_id} ok on all agents")
    return task_id


def send_flows(net: MeasureNetwork, base_port: int) -> dict[str, int]:
    """Paced UDP of both families; exact bytes per src_dst key that arrived."""
    py = sys.executable
    receivers = {}
    for i, (family, _, dst, _, _) in enumerate(FLOWS):
        proc = net.net.get(dst).popen([py, "-c", RECEIVER, str(family), str(base_port + i)],
                                      env=net.host_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        receivers[i] = proc
    addr = {4: lambda h: net.net.get(h).IP(), 6: ip6}
    for i, (family, src, dst, count, size) in enumerate(FLOWS):
        done = net.run_on(src, [py, "-c", SENDER, addr[family](dst), str(base_port + i),
                                str(count), str(size)], timeout=30)
        assert done.returncode == 0
    exact: dict[str, int] = {}
    for i, (family, src, dst, count, size) in enumerate(FLOWS):
        out, _ = receivers[i].communicate(timeout=30)
        got = int(out.split()[-1])
        assert got >= 0.95 * count, f"{src}->{dst} IPv{family}: {got} of {count} arrived"
        key = f"{addr[family](src)},{addr[family](dst)}"
        exact[key] = exact.get(key, 0) + got * (size + (28 if family == 4 else 48))
    return exact


@pytest.mark.parametrize("capture", ["nfqueue", "nflog", "ebpf"])
def test_global_task_counts_ipv4_and_ipv6_exactly(net, capture):
    task_id = apply(net, {"name": f"dual-{capture}", "kind": "heavy_hitters",
                          "key": "src_dst", "increment": "bytes", "filter": {"proto": "udp"},
                          "threshold": 0.01, "report_interval": 1, "capture": capture})
    exact = send_flows(net, {"nfqueue": 5700, "nflog": 5800, "ebpf": 5900}[capture])
    total = sum(exact.values())

    def complete():
        code, res = net.rest(f"/measure/v1/tasks/{task_id}/result")
        if code != 200 or res["covered"] != AGENTS or res["missing"] or res["total"] < total:
            return None
        return res

    res = wait_until(complete, timeout=30, interval=0.5,
                     message="a complete global result holding all the traffic")
    assert res["total"] == total == res["bytes"]
    assert set(res["heavy_hitters"]) == set(exact)
    width = res["sketch"]["width"]
    for key, value in exact.items():
        assert value <= res["heavy_hitters"][key] <= value + 2 * total / width, key
    assert "fd00::4,fd00::2" in res["heavy_hitters"] and "10.0.0.1,10.0.0.3" in exact
    code, h1 = net.rest(f"/measure/v1/tasks/{task_id}/result?host=h1")
    assert code == 200
    assert h1["bytes"] == sum(v for k, v in exact.items()
                              if k.endswith((",10.0.0.1", ",fd00::1")))
    net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")
