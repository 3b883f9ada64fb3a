"""Mininet tier: the controller forwards on tree, linear and loop networks.

Each network is started through ``topo.launch.MeasureNetwork`` (controller
launcher on free ports, userspace OVS, offload off, mgmt0 bridge), without
agents, so these tests check the network part alone. The tree is started
once for its three tests (class scope). One Mininet network may exist at a
time, so the whole module holds the machine-wide Mininet lock (module scope;
the networks and the demo run with the lock already held). Every network
fails its test if the controller logged a traceback.

TCP transfers use ``nc`` and compare every byte (iperf3's receiver byte
count with ``-n`` is not exact). Durations are in the module's report.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testing.netns import ROOT, run
from testing.procs import free_port, mininet_lock, port_open, wait_until
from topo.launch import MGMT_BRIDGE, MeasureNetwork, Options

pytestmark = pytest.mark.mininet


@pytest.fixture(scope="module")
def module_lock():
    """Hold the Mininet lock for the module; ``topo.cleanup`` at the end."""
    with mininet_lock():
        try:
            yield
        finally:
            from topo.cleanup import cleanup_mininet

            cleanup_mininet()


def start_network(tmp_path_factory, topo: str, **kw) -> MeasureNetwork:
    run_dir = tmp_path_factory.mktemp(f"net-{topo}")
    opts = Options(topo=topo, agents=False, lock=False, controller_port=free_port(),
                   rest_port=free_port(), run_dir=str(run_dir), timeout=60, **kw)
    return MeasureNetwork(opts).__enter__()


def stop_network(net: MeasureNetwork) -> None:
    net.stop()
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in net.timings.items())
    print(f"{net.opts.topo} start-up: {steps}")
    with open(f"{net.run_dir}/controller.log", errors="replace") as f:
        text = f.read()
    assert "Traceback" not in text, f"controller logged a traceback:\n{text}"


@pytest.fixture(scope="class")
def tree_net(module_lock, tmp_path_factory):
    net = start_network(tmp_path_factory, "tree", depth=2, fanout=3)
    try:
        yield net
    finally:
        stop_network(net)


def tcp_transfer(net: MeasureNetwork, client: str, server: str,
                 nbytes: int) -> tuple[bytes, bytes]:
    """Send ``nbytes`` random bytes over one TCP connection with nc.

    Returns (received, sent). The receiver writes to a file, not a pipe: a
    full pipe would stall it and, through TCP, the sender.
    """
    srv, cli = net.net.get(server), net.net.get(client)
    payload = os.urandom(nbytes)
    path = os.path.join(net.run_dir, f"nc-{client}-{server}.out")
    with open(path, "wb") as out:
        receiver = srv.popen(["nc", "-l", "5202"], stdin=subprocess.DEVNULL, stdout=out)
    try:
        wait_until(lambda: "LISTEN" in srv.pexec(["ss", "-ltn", "sport = :5202"])[0],
                   timeout=10, message="nc listening")
        sender = cli.popen(["nc", "-N", srv.IP(), "5202"], stdin=subprocess.PIPE)
        try:
            sender.communicate(payload, timeout=30)
        finally:
            sender.kill()
        receiver.wait(30)
    finally:
        receiver.kill()
        receiver.wait(5)
    assert sender.returncode == 0
    with open(path, "rb") as f:
        return f.read(), payload


class TestTree:
    def test_pingall_zero_loss(self, tree_net):
        assert tree_net.net.pingAll(timeout="1") == 0

    def test_tcp_transfer_delivers_every_byte(self, tree_net):
        received, sent = tcp_transfer(tree_net, "h1", "h9", 4 * 1024 * 1024)  # via the root
        assert len(received) == 4 * 1024 * 1024
        assert received == sent

    def test_topology_rest_lists_switches_links_and_hosts(self, tree_net):
        tree_net.net.pingAll(timeout="1")
        status, body = tree_net.rest("/measure/v1/topology")
        assert status == 200
        assert [s["dpid"] for s in body["switches"]] == [f"{d:016x}" for d in (1, 2, 3, 4)]
        assert body["switches"][0]["ports"] == [1, 2, 3]
        links = sorted((lk["src"]["dpid"], lk["src"]["port"], lk["dst"]["dpid"],
                        lk["dst"]["port"]) for lk in body["links"])
        assert links == [(f"{1:016x}", p, f"{p + 1:016x}", 4) for p in (1, 2, 3)]
        hosts = sorted((h["mac"], tuple(h["ips"]), h["dpid"], h["port"])
                       for h in body["hosts"])
        assert hosts == [(f"00:00:00:00:00:{n:02x}", (f"10.0.0.{n}",),
                          f"{(n - 1) // 3 + 2:016x}", (n - 1) % 3 + 1) for n in range(1, 10)]

    def test_forwarding_flows_carry_the_cookie_and_lldp_flow_stays(self, tree_net):
        tree_net.net.pingAll(timeout="1")
        out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "s1"]).stdout
        assert "cookie=0x4d45415355524531" in out
        assert "dl_type=0x88cc" in out  # Ryu's LLDP flow
        assert "priority=0 actions=CONTROLLER:65535" in out


@pytest.mark.parametrize("topo,kw,switches,links,hosts", [
    ("linear", {"n": 4}, 4, 3, 4),
    ("loop", {"n": 4}, 4, 4, 8),
    ("fattree", {"k": 4}, 20, 32, 16),
])
def test_pingall_zero_loss(module_lock, tmp_path_factory, topo, kw, switches, links, hosts):
    net = start_network(tmp_path_factory, topo, **kw)
    try:
        # Start-up waited for these counts and one pingall at 0% loss.
        assert net.ping_losses[-1] == 0
        status, body = net.rest("/measure/v1/topology")
        assert (len(body["switches"]), len(body["links"]), len(body["hosts"])) == (
            switches, links, hosts)
        if topo != "fattree":  # 240 pings take 25 s there: the start-up pingall will do
            assert net.net.pingAll(timeout="1") == 0
        received, sent = tcp_transfer(net, net.net.hosts[0].name, net.net.hosts[-1].name,
                                      1024 * 1024)
        assert received == sent
    finally:
        stop_network(net)


def test_demo_exits_zero_and_leaves_nothing_behind(module_lock, tmp_path):
    of_port, rest_port = free_port(), free_port()
    run_dir = tmp_path / "demo"
    netns_before = set(run(["ip", "netns", "list"]).stdout.split())
    res = subprocess.run([sys.executable, "-m", "topo.demo", "--no-lock",
                          "--controller-port", str(of_port), "--rest-port", str(rest_port),
                          "--run-dir", str(run_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS  pingall: 72 pings between 9 hosts, 0% loss" in res.stdout
    assert "PASS  tcp: iperf3 TCP h2 -> h9:" in res.stdout
    assert ("PASS  heavy hitters: global heavy hitters (ICMP by src, >= 20% of" in res.stdout
            and "9 agents): {'10.0.0.1': " in res.stdout and "'10.0.0.2': " in res.stdout)
    assert run(["ip", "link", "show", MGMT_BRIDGE], check=False).returncode != 0
    bridges = run(["ovs-vsctl", "list-br"]).stdout.split()
    assert not {"s1", "s2", "s3", "s4"} & set(bridges)
    new_netns = set(run(["ip", "netns", "list"]).stdout.split()) - netns_before
    assert not {n for n in new_netns if n.startswith(("h", "s", "mgmt"))}
    assert not port_open("127.0.0.1", of_port) and not port_open("127.0.0.1", rest_port)
    ps = run(["ps", "-eo", "args"]).stdout
    assert str(run_dir) not in ps and f"--wsapi-port {rest_port}" not in ps
    assert "mininet:h" not in ps  # Mininet host shells
    with open(run_dir / "controller.log", errors="replace") as f:
        assert "Traceback" not in f.read()


def test_launcher_run_exits_with_command_status_and_cleans_up(module_lock, tmp_path):
    of_port, rest_port = free_port(), free_port()
    base = [sys.executable, "-m", "topo.launch", "--no-lock", "--no-agents", "--topo", "linear",
            "--n", "2", "--controller-port", str(of_port), "--rest-port", str(rest_port)]
    ok = subprocess.run(base + ["--run-dir", str(tmp_path / "a"), "--run",
                                "h1 ping -c1 -W2 10.0.0.2"],
                        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 received" in ok.stdout
    bad = subprocess.run(base + ["--run-dir", str(tmp_path / "b"), "--run", "h2 sh -c 'exit 7'"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert bad.returncode == 7, bad.stdout + bad.stderr
    assert run(["ip", "link", "show", MGMT_BRIDGE], check=False).returncode != 0
    assert not {"s1", "s2"} & set(run(["ovs-vsctl", "list-br"]).stdout.split())


def test_launcher_cleans_up_on_sigterm(module_lock, tmp_path):
    of_port, rest_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "topo.launch", "--no-lock", "--no-agents", "--topo", "linear",
           "--n", "2", "--controller-port", str(of_port), "--rest-port", str(rest_port),
           "--run-dir", str(tmp_path), "--run", "h1 sleep 119.4321"]
    log_path = tmp_path / "launch.out"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: "running on h1" in log_path.read_text(), timeout=120,
                   message="launcher running the command")
        proc.terminate()
        assert proc.wait(60) == 130, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "interrupted: cleaned up" in log_path.read_text()
    assert run(["ip", "link", "show", MGMT_BRIDGE], check=False).returncode != 0
    assert not {"s1", "s2"} & set(run(["ovs-vsctl", "list-br"]).stdout.split())
    assert not port_open("127.0.0.1", of_port) and not port_open("127.0.0.1", rest_port)
    ps = run(["ps", "-eo", "args"]).stdout
    assert "sleep 119.4321" not in ps and "mininet:h" not in ps and str(tmp_path) not in ps
