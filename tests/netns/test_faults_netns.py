"""Fault and hostile-request tests against real processes.

Each test asserts what was *kept* and what was *reported*, not only that
something still runs:

- SQLite locked under a running controller: the write is refused with 503
  naming the file, nothing is applied, and it works once the lock is gone;
  a corrupt database stops the controller with an error naming the file,
  and the file is left byte for byte as it was (no silent reset). These two
  need no root (``unit`` tier: in-process service, or a controller process
  on loopback).
- An agent killed with SIGKILL and started again, with a controller in
  another namespace: traffic keeps flowing meanwhile (``--queue-bypass``),
  the new agent removes the stale rules, re-registers, and the controller
  restores its task; the controller reports the second join.
- A real agent started with ``--secret-file`` in a namespace, attacked from
  another namespace: unsigned requests get 401 and the original messages 403,
  signed hostile filters get 400, and ``iptables -S`` in the agent's
  namespace does not change.
- A UDP flood into a tiny NFQUEUE (``--max-len 4``): every datagram reaches
  the host (fail-open), and the snapshot's ``packets + missed`` equals the
  packets the capture rule matched.

The monitor SIGKILL test and the SIGSTOP full-queue test live with the
agent's own netns tests (``tests/netns/test_monitor_netns.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import sys

import pytest

from measure_common.auth import to_agent
from testing.agentproc import AgentProc, rule_counters, snapshot_when
from testing.apps import bearer, controller_state, make_controller_app
from testing.hostile import CANARIES, SHELL_STRINGS
from testing.netns import ROOT, run
from testing.procs import free_port, stop_process, wait_until

# ---------------------------------------------------------------- SQLite faults


@pytest.mark.unit
def test_locked_database_refuses_writes_clearly_and_recovers(tmp_path):
    app, service = make_controller_app(tmp_path)
    body = json.dumps({"name": "hh-lock", "kind": "heavy_hitters"}).encode()
    holder = sqlite3.connect(tmp_path / "measure.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        before = controller_state(service)
        resp = bearer("POST", "/measure/v1/tasks", body).get_response(app)
        assert (resp.status_code, resp.json) == (503, {
            "error": f"store {tmp_path / 'measure.db'}: database is locked"})
        assert controller_state(service) == before and service.list_tasks() == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    resp = bearer("POST", "/measure/v1/tasks", body).get_response(app)
    assert (resp.status_code, resp.json) == (201, {"tasks": [{"id": "1", "name": "hh-lock"}]})
    assert [r["name"] for r in service.store.tasks()] == ["hh-lock"]


def _run_controller(state_dir, timeout: float = 40.0):
    env = {**os.environ, "MEASURE_STATE_DIR": str(state_dir)}
    return run([sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port", str(free_port()),
                "--wsapi-port", str(free_port()), "ryu_app.app"], check=False,
               timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def corrupt_state(tmp_path):
    db = tmp_path / "measure.db"
    db.write_bytes(b"this is not an SQLite database\n" + bytes(range(256)) * 16)
    return tmp_path, db, hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.mark.unit
def test_corrupt_database_stops_the_controller_and_is_kept(corrupt_state):
    state, db, digest = corrupt_state
    res = _run_controller(state)
    log = res.stdout + res.stderr
    assert res.returncode != 0, log
    assert f"store {db}: file is not a database" in log
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest  # not reset, not replaced
    assert sorted(p.name for p in state.iterdir()) == ["measure.db"]


@pytest.mark.unit
def test_corrupt_database_error_is_one_clear_line(corrupt_state):
    state, db, _ = corrupt_state
    res = _run_controller(state)
    log = res.stdout + res.stderr
    assert "Traceback" not in log
    assert res.returncode == 2, log
    assert f"cannot start: store {db}: file is not a database" in log


# ---------------------------------------------------------------- agent killed and restarted


def _agent_rules(ag: AgentProc) -> list[str]:
    return sorted(line.split("] ", 1)[1] for line in ag.rules().splitlines()
                  if f"endhost-measure:{ag.name}:" in line)


@pytest.mark.netns
def test_agent_killed_and_restarted_gets_its_task_back(ns_pair, agent_factory, controller_in):
    a, b = ns_pair
    ctl = controller_in(a)
    secret = str(ctl.state_dir / "agent.secret")
    args = ["--controller", ctl.url, "--advertise", f"http://{b.ip}:8000",
            "--secret-file", secret]
    ag = agent_factory(b, extra=args, client_ns=a)
    resp = ctl.request("POST", "/measure/v1/tasks", json={
        "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"},
        "report_interval": 1})
    assert resp.status_code == 201, resp.text
    health = wait_until(lambda: (h := ag.v1("GET", "/health"))["tasks"] == ["1"] and h,
                        timeout=30, message="task pushed to the agent")
    (sketch,) = ag.v1("GET", "/sketches")
    assert sketch["task"] == "1" and sketch["filter"] == {"interface": "INPUT", "proto": "icmp"}
    rules_before = _agent_rules(ag)
    # two hooks; per chain the probe exemption, a clear, an NFLOG and an NFQUEUE rule;
    # the foreign-source rule of OUTPUT; the task's mark rule
    assert len(rules_before) == 12, rules_before
    assert sum('"endhost-measure:h2:1"' in r for r in rules_before) == 1, rules_before

    ag.stop(signal.SIGKILL)  # agent and monitor gone, rules stay behind
    assert _agent_rules(ag) == rules_before
    out = a.run(["ping", "-c", "10", "-i", "0.02", "-q", b.ip]).stdout
    assert " 0% packet loss" in out, out  # --queue-bypass: nobody bound, traffic flows

    ag2 = agent_factory(b, extra=args, client_ns=a)
    wait_until(lambda: ag2.v1("GET", "/health")["tasks"] == ["1"], timeout=30,
               message="task restored on the new agent")
    assert _agent_rules(ag2) == rules_before  # stale rules removed, the same set installed
    (sketch2,) = ag2.v1("GET", "/sketches")
    assert sketch2["task"] == "1" and sketch2["filter"] == sketch["filter"]
    a.run(["ping", "-c", "7", "-i", "0.02", "-q", b.ip])
    snap = snapshot_when(ag2, sketch2["id"], 1, 7)
    assert (snap["packets"], snap["missed"]) == (7, {"packets": 0, "bytes": 0})
    # what the controller reports: the second join, and the task held by h2
    (agent,) = ctl.get("/measure/v1/agents").json()["agents"]
    assert (agent["name"], agent["up"], agent["joins"]) == ("h2", True, 2)
    task = wait_until(lambda: (t := ctl.get("/measure/v1/tasks/1").json())["agents"] and t,
                      timeout=10, message="task status")
    assert task["agents"] == {"h2": "ok"}
    assert health["name"] == "h2"


# ---------------------------------------------------------------- hostile requests, real agent

@pytest.fixture
def guarded_agent(ns_pair, agent_factory, tmp_path):
    """An agent in b with a shared secret (no legacy opt-in), attacked from a."""
    a, b = ns_pair
    secret_file = tmp_path / "agent.secret"
    from measure_common.auth import load_or_create_secret

    secret, _ = load_or_create_secret(str(secret_file))
    ag = agent_factory(b, extra=["--secret-file", str(secret_file)], client_ns=a)
    for path in CANARIES:
        assert not os.path.lexists(path), f"{path} exists before the test"
    yield a, b, ag, secret
    created = [p for p in CANARIES if os.path.lexists(p)]
    assert not created, f"an injection ran: {created}"


def _iptables(ns) -> str:
    return ns.run(["iptables", "-S"]).stdout + ns.run(["iptables", "-t", "mangle", "-S"]).stdout


@pytest.mark.netns
def test_real_agent_refuses_unauthenticated_requests(guarded_agent):
    a, b, ag, secret = guarded_agent
    rules = _iptables(b)
    body = {"filter": {"proto": "icmp"}, "counters": [{"key": "src"}]}
    r = ag.request("POST", "/agent/v1/sketches", json=body)
    assert (r.status_code, r.json()) == (401, {
        "error": "missing X-Measure-Timestamp header (request must be signed)"})
    r = ag.request("POST", "/agent/v1/sketches", json=body, auth=to_agent(b"x" * 43, "h2"))
    assert (r.status_code, r.json()) == (401, {"error": "bad request signature"})
    r = ag.legacy(type="config sketch", interface="INPUT", proto="icmp")
    assert (r.status_code, r.json()) == (403, {
        "error": "legacy messages are disabled; start the agent with --allow-legacy"})
    r = ag.request("PUT", "/agent/v1/overlay", json={"epoch": 1, "root": True})
    assert r.status_code == 401
    assert _iptables(b) == rules and ag.v1("GET", "/sketches") == []
    # the same request signed with the shared secret is accepted (the refusals can fail)
    r = ag.request("POST", "/agent/v1/sketches", json=body, auth=to_agent(secret, "h2"))
    assert r.status_code == 201, r.text
    assert _iptables(b) != rules and '"endhost-measure:h2:1"' in ag.rules()


@pytest.mark.netns
def test_real_agent_refuses_signed_hostile_filters_without_touching_iptables(guarded_agent):
    a, b, ag, secret = guarded_agent
    rules = _iptables(b)
    problems = []
    for field in ("interface", "proto", "src", "dst", "sport", "dport"):
        for value in [v for v in SHELL_STRINGS if v and len(v) < 100]:
            flt = {"proto": "tcp", field: value}
            r = ag.request("POST", "/agent/v1/sketches", json={"filter": flt},
                           auth=to_agent(secret, "h2"))
            if r.status_code != 400 or "Traceback" in r.text or "error" not in r.json():
                problems.append((field, value, r.status_code, r.text[:100]))
    assert problems == []
    assert _iptables(b) == rules and ag.v1("GET", "/sketches") == []


@pytest.mark.netns
def test_real_agent_never_sends_a_traceback(guarded_agent):
    a, b, ag, secret = guarded_agent
    for path in ("/agent/v1/sketches/%ff", "/agent/v1/sketches/1/counters/1?key=%ff", "/%ff"):
        r = ag.request("GET", path)
        assert r.status_code < 500 and "Traceback" not in r.text, (path, r.text[:300])


# ---------------------------------------------------------------- queue overflow

UDP_FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"x" * 100, (sys.argv[1], int(sys.argv[2])))
"""


def _udp_delivered(ns) -> int:
    """Datagrams the namespace's UDP layer took in (delivered, no port, or errors)."""
    lines = [ln.split() for ln in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Udp:")]
    names, values = lines[0], lines[1]
    row = dict(zip(names[1:], map(int, values[1:]), strict=True))
    return row["InDatagrams"] + row["NoPorts"] + row["InErrors"]


@pytest.mark.netns
def test_udp_flood_into_a_tiny_queue_fails_open_and_reports_missed(ns_pair, agent_factory):
    a, b = ns_pair
    ag = agent_factory(b, extra=["--allow-legacy", "--max-len", "4"])
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "udp", "dport": 9},
                                     "counters": [{"key": "src"}]})
    delivered0 = _udp_delivered(b)
    sent = 20_000
    a.run([sys.executable, "-c", UDP_FLOOD, b.ip, "9", str(sent)], timeout=60)
    matched = wait_until(lambda: (m := rule_counters(ag, sk["id"])[0]) >= sent and m,
                         timeout=20, message="flood matched by the capture rule")
    assert matched == sent
    # fail-open: every datagram went on to the UDP layer, measured or not
    wait_until(lambda: _udp_delivered(b) - delivered0 == sent, timeout=10,
               message=f"{sent} datagrams delivered")
    snap = wait_until(lambda: (s := ag.v1("GET", f"/sketches/{sk['id']}/counters/1"))
                      and s["packets"] + s["missed"]["packets"] == sent and s,
                      timeout=10, message="packets + missed == sent")
    assert snap["missed"]["packets"] > 0, snap  # the queue did overflow
    assert snap["missed"]["bytes"] == snap["missed"]["packets"] * 128
    assert snap["packets"] == snap["total"]


# ---------------------------------------------------------------- real controller, hostile paths

CONTROLLER_PATHS = ["/measure/v1/tasks/%ff", "/measure/v1/%ff", "/measure/v1/agents/%ff/heartbeat",
                    "/measure/v1/tasks/1/result?host=%ff", "/measure/v1/events?since=%ff",
                    "/measure/v1/a%0ab"]


def _raw_get(port: int, path: str, headers: dict) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.mark.unit
def test_real_controller_answers_hostile_paths_with_json_errors(tmp_path):
    from testing.controllers import start_controller

    ctl = start_controller(tmp_path, env={"MEASURE_STATE_DIR": str(tmp_path)})
    try:
        token = (tmp_path / "controller.token").read_text().strip()
        problems = []
        for auth in ({}, {"Authorization": f"Bearer {token}"}):
            for path in CONTROLLER_PATHS:
                status, text = _raw_get(ctl.rest_port, path, auth)
                if not 400 <= status < 500 or "Traceback" in text or not text.startswith("{"):
                    problems.append((path, bool(auth), status, text[:80]))
    finally:
        stop_process(ctl.proc)
    assert problems == []
    assert "Traceback" not in ctl.log()
