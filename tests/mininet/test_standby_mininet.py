"""Mininet tier: two controllers on one PostgreSQL; the leader is SIGKILLed, the standby
takes over.

One network (``topo.launch.MeasureNetwork`` with ``standby=True`` on a throwaway
PostgreSQL server of ``testing.postgres``: controller 0 leading, controller 1
waiting on the store's advisory lock, every switch connected to both, every
agent given both URLs;
tree depth 2 fanout 3 on userspace OVS, so s2 holds h1-h3), under the
machine-wide Mininet lock. Before the kill: every switch shows controller 0
MASTER and controller 1 SLAVE (``ovs-vsctl``'s ``role`` column); a global UDP
``counter`` task has counted a first batch exactly and has history; a port
scan by h3 made an active ``block`` of h3; the standby answers the stored
reads exactly as the leader and refuses writes naming it.

Then a second batch of paced UDP h1 -> h9 starts, and the leader is killed
in its middle. Asserted:

- the standby is leader (its ``health``) within 5 s of the SIGKILL, and every
  switch's role reply gives it MASTER within 5 s (``health``'s ``switch_roles``;
  ``ovs-vsctl`` shows it too, a few seconds later: OVS rewrites a controller
  row's role at its next connectivity change);
- the task's next complete result at the new leader comes within two report
  intervals of the take-over, and the result after the traffic counts the
  datagrams that arrived in both batches exactly (counted by the receiver);
- the block is the same action with the same expiry, still in force (its
  flows re-sent with the remaining time), and ends at that expiry;
- pingall among the unblocked hosts is 0% loss after the take-over, and among
  all hosts once the block ended;
- no task, event or history row from before the kill is lost;
- the old leader started again joins as standby: it answers ``role: standby``
  naming the new leader, the switches' role replies and ``ovs-vsctl`` show it
  SLAVE, and for the next seconds the new leader stays MASTER everywhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from testing.overlaynet import AGENTS, RECEIVER, SENDER, apply_everywhere, measure_network
from testing.postgres import postgres_server
from testing.procs import wait_until

pytestmark = pytest.mark.mininet

INTERVAL = 3.0
PORT = 5700
SIZE = 200
FIRST, SECOND, GAP = 40, 160, 0.05  # the second batch lasts 8 s: the kill is in it
BLOCK_S = 150  # long enough for everything before the expiry check
SCANNED = {"proto": "tcp", "dport": "1:1024"}
REACTION_COOKIE = "cookie=0x52454143"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    # the server first: its initdb takes seconds, which would otherwise pass between
    # picking the controllers' free ports and binding them
    with postgres_server() as pg, measure_network(tmp_path_factory, "standby-net",
                                                  standby=True, store=pg.url) as mn:
        yield mn


def api(net, path: str, index: int, method: str = "GET", body=None):
    return net.rest(path, method=method, body=body, index=index)


def ok(net, path: str, index: int):
    status, body = api(net, path, index)
    assert status == 200, (path, index, status, body)
    return body


def roles(net) -> dict[str, dict[int, tuple[str, bool]]]:
    """switch -> {a controller's OpenFlow port: (its role, connected)}, from ovs-vsctl."""
    def table(*args: str) -> list[list]:
        out = subprocess.run(["ovs-vsctl", "--format=json", *args], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        return json.loads(out)["data"]

    def uuids(cell) -> list[str]:
        return [u for _, u in cell[1]] if cell[0] == "set" else [cell[1]]

    names = {sw.name for sw in net.net.switches}
    bridges = {name: uuids(cell)
               for name, cell in table("--columns=name,controller", "list", "bridge")
               if name in names}
    mine = {u for us in bridges.values() for u in us}
    ctls = {}  # this network's controller rows: uuid -> (port, role, connected)
    for uuid, target, role, connected in table("--columns=_uuid,target,role,is_connected",
                                               "list", "controller"):
        if uuid[1] in mine:
            ctls[uuid[1]] = (int(target.rsplit(":", 1)[1]),
                             role if isinstance(role, str) else "", connected)
    return {name: {ctls[u][0]: ctls[u][1:] for u in us if u in ctls}
            for name, us in bridges.items()}


def replied(net, index: int, role: str) -> bool:
    """Whether every switch's last role reply to controller ``index`` gave it ``role``
    (its ``health``'s ``switch_roles``)."""
    status, health = api(net, "/measure/v1/health", index)
    return status == 200 and health["switch_roles"] == {sw.dpid: role
                                                        for sw in net.net.switches}


def master_everywhere(net, master: int, slave: int, slave_connected: bool = True) -> bool:
    """Every switch: controller ``master`` MASTER, ``slave`` SLAVE (or not connected)."""
    m_port, s_port = net.ports(master)[0], net.ports(slave)[0]
    got = roles(net)
    return len(got) == len(net.net.switches) and all(
        r.get(m_port) == ("master", True)
        and (r.get(s_port) == ("slave", True) if slave_connected
             else not r.get(s_port, ("", False))[1])
        for r in got.values())


def first_seen(checks: dict, since: float, timeout: float) -> dict[str, tuple[float, Any]]:
    """Poll every check every 50 ms until each has held once: name -> (seconds after
    ``since`` it was first seen, what it returned)."""
    got: dict[str, tuple[float, Any]] = {}
    while len(got) < len(checks):
        for name, check in checks.items():
            if name not in got:
                value = check()
                if value:
                    got[name] = (time.time() - since, value)
        assert time.time() - since < timeout, f"not seen in {timeout} s: " \
            f"{sorted(set(checks) - set(got))}"
        time.sleep(0.05)
    return got


def receiver(net, host: str):
    proc = net.net.get(host).popen([sys.executable, "-c", RECEIVER, str(PORT), "6.0"],
                                   env=net.host_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def sender(net, src: str, dst: str, count: int, gap: float):
    return net.net.get(src).popen([sys.executable, "-c", SENDER, net.net.get(dst).IP(),
                                   str(PORT), str(count), str(SIZE), str(gap)],
                                  env=net.host_env())


def received(proc) -> int:
    out, _ = proc.communicate(timeout=60)
    return int(out.split()[-1])


def reaction_flows(switch: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "--no-stats", switch],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.strip() for line in out.splitlines() if REACTION_COOKIE in line]


def pings(net, src: str, dst: str) -> str:
    return net.net.get(src).cmd(f"ping -c2 -W1 -i0.3 {net.net.get(dst).IP()}")


def ping_loss(net, hosts: list[str], attempts: int = 3) -> float:
    loss = 100.0
    for _ in range(attempts):  # a second round only for pings lost to (re)learning
        loss = net.net.ping(hosts=[net.net.get(h) for h in hosts], timeout="1")
        if loss == 0.0:
            break
    return loss


def no_age(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "age"} for r in rows]


def test_the_standby_takes_over_from_a_killed_leader_and_the_old_one_rejoins(net):
    leader_url, standby_url = net.controller_url(0), net.controller_url(1)
    wait_until(lambda: master_everywhere(net, 0, 1), timeout=15,
               message="controller 0 MASTER and controller 1 SLAVE on every switch")
    assert replied(net, 0, "master") and replied(net, 1, "slave")
    health = ok(net, "/measure/v1/health", 1)
    assert (health["role"], health["leader"]) == ("standby", leader_url)
    assert ok(net, "/measure/v1/health", 0)["role"] == "leader"

    # ---- a global counter with history, an active block
    counter = apply_everywhere(net, {"name": "udp-count", "kind": "counter",
                                     "filter": {"proto": "udp", "dport": PORT},
                                     "report_interval": INTERVAL}, AGENTS)
    scan_task = apply_everywhere(net, {"name": "scan-block", "kind": "port_scan",
                                       "report_interval": 1.0, "filter": SCANNED,
                                       "on": [{"event": "port_scan", "action": "block",
                                               "duration": BLOCK_S}]}, AGENTS)
    time.sleep(2.0)  # a first (empty) port-scan result, so the scan is a new event
    net.net.get("h3").cmd(f"nc -z -w1 {net.net.get('h1').IP()} 1-40")
    block = wait_until(lambda: [a for a in ok(net, "/measure/v1/actions", 0)["actions"]
                                if a["task_id"] == scan_task and a["status"] == "active"],
                       timeout=15, interval=0.2, message="the block of h3")[0]
    assert (block["action"], block["dpid"], block["target"]) == ("block", 2, "10.0.0.3")
    assert "100% packet loss" in pings(net, "h3", "h1")

    rx = receiver(net, "h9")
    tx = sender(net, "h1", "h9", FIRST, 0.01)
    assert tx.wait(30) == 0
    first = received(rx)
    assert first >= FIRST * 0.95, f"only {first} of {FIRST} datagrams arrived"
    wait_until(lambda: (r := api(net, f"/measure/v1/tasks/{counter}/result", 0))[0] == 200
               and r[1]["packets"] == first and r[1]["complete"], timeout=30, interval=0.2,
               message=f"a complete result counting the first {first} datagrams")
    wait_until(lambda: len(ok(net, f"/measure/v1/tasks/{counter}/history?limit=1000",
                              0)["results"]) >= 3, timeout=30, message="history rows")

    # the standby answers the stored reads as the leader does, and refuses writes
    history_path = f"/measure/v1/tasks/{counter}/history?limit=1000"
    tasks_before = ok(net, "/measure/v1/tasks", 0)["tasks"]
    events_before = ok(net, "/measure/v1/events", 0)["events"]
    history_before = no_age(ok(net, history_path, 0)["results"])
    assert ok(net, "/measure/v1/events", 1)["events"][:len(events_before)] == events_before
    standby_history = no_age(ok(net, history_path, 1)["results"])
    assert all(row in standby_history for row in history_before)
    status, refused = api(net, "/measure/v1/tasks", 1, "POST", {"name": "x", "kind": "counter"})
    assert status == 503 and refused["error"].endswith(f"the leader at {leader_url}")

    # ---- the second batch; the leader is killed in its middle
    rx = receiver(net, "h9")
    tx = sender(net, "h1", "h9", SECOND, GAP)
    time.sleep(2.0)
    os.kill(net.controller.pid, signal.SIGKILL)
    killed = time.time()
    net.controller.wait(10)

    def next_complete():
        status, res = api(net, f"/measure/v1/tasks/{counter}/result", 1)
        return res if status == 200 and res["complete"] and res["interval_end"] > killed \
            else None

    # each watched at once, every 50 ms: the time each was first seen after the kill
    seen = first_seen({
        "lead": lambda: api(net, "/measure/v1/health", 1)[1].get("role") == "leader",
        "master": lambda: replied(net, 1, "master"),  # the switches' role replies
        # OVS's database shows it a connectivity change later (it rewrites a controller
        # row's status when a connection's state changes)
        "ovs-vsctl": lambda: master_everywhere(net, 1, 0, slave_connected=False),
        "result": next_complete}, since=killed, timeout=60)
    took_lead, took_master, took_db = (seen[k][0] for k in ("lead", "master", "ovs-vsctl"))
    next_result = seen["result"][1]
    took_result = seen["result"][0] - took_lead  # after the take-over
    assert tx.wait(60) == 0
    sent_until = time.time()
    second = received(rx)
    assert second >= SECOND * 0.9, f"only {second} of {SECOND} datagrams arrived"
    after = wait_until(lambda: (r := next_complete()) and r["interval_end"] > sent_until + 0.5
                       and r, timeout=30, interval=0.1,
                       message="a complete result after the second batch")
    print(f"SIGKILL -> standby leading {took_lead:.2f} s, MASTER on every switch "
          f"{took_master:.2f} s (role replies; ovs-vsctl {took_db:.2f} s); next complete "
          f"result {took_result:.2f} s after the "
          f"take-over (interval {INTERVAL:g} s, end {next_result['interval_end'] - killed:.2f}"
          f" s after the kill); datagrams {first} + {second}")
    assert took_lead <= 5.0 and took_master <= 5.0
    assert took_result <= 2 * INTERVAL
    assert (after["packets"], after["bytes"]) == (first + second, (first + second) * (SIZE + 28))
    assert after["covered"] == AGENTS and after["missing"] == []

    # ---- the block: same action, same expiry, still in force
    again = [a for a in ok(net, "/measure/v1/actions", 1)["actions"] if a["id"] == block["id"]]
    assert again and (again[0]["status"], again[0]["expires"]) == ("active", block["expires"])
    flows = wait_until(lambda: reaction_flows("s2"), timeout=15, message="the block re-sent")
    timeouts = {int(t) for f in flows for t in re.findall(r"hard_timeout=(\d+)", f)}
    assert timeouts and max(timeouts) < BLOCK_S  # the remaining time, not the duration
    net.wait_topology(1)
    assert ping_loss(net, [h for h in AGENTS if h != "h3"]) == 0.0
    assert "100% packet loss" in pings(net, "h3", "h1")

    # ---- nothing lost
    tasks_after = ok(net, "/measure/v1/tasks", 1)["tasks"]
    assert [(t["id"], t["name"], t["task"]) for t in tasks_after] == [
        (t["id"], t["name"], t["task"]) for t in tasks_before]
    assert ok(net, "/measure/v1/events", 1)["events"][:len(events_before)] == events_before
    history_after = no_age(ok(net, history_path, 1)["results"])
    assert all(row in history_after for row in history_before)

    # ---- the old leader again: a standby that leaves the switches alone
    net.start_controller(0)
    health = ok(net, "/measure/v1/health", 0)
    assert (health["role"], health["leader"]) == ("standby", standby_url)
    wait_until(lambda: replied(net, 0, "slave"), timeout=30, interval=0.2,
               message="every switch's role reply: controller 0 SLAVE")
    wait_until(lambda: master_everywhere(net, 1, 0), timeout=30, interval=0.2,
               message="ovs-vsctl: controller 0 back as SLAVE on every switch")
    for _ in range(10):
        assert master_everywhere(net, 1, 0) and replied(net, 1, "master")
        assert ok(net, "/measure/v1/health", 1)["role"] == "leader"
        time.sleep(0.5)
    with open(net.controller_log(0)) as f:
        assert f.read().count("standby: waiting for the leader's lock") == 1

    # ---- the block ends at its original expiry; then everyone reaches everyone
    left = block["expires"] - time.time()
    assert left > 3, f"the take-over took too long ({left:.1f} s of the block left)"
    time.sleep(max(0.0, left - 2))
    assert "100% packet loss" in pings(net, "h3", "h1")
    time.sleep(3.5)
    assert not reaction_flows("s2")
    wait_until(lambda: [a for a in ok(net, "/measure/v1/actions", 1)["actions"]
                        if a["id"] == block["id"] and a["status"] == "expired"],
               timeout=5, message="the block expired")
    assert ping_loss(net, AGENTS) == 0.0
