"""Connection exhaustion: a real controller and a real agent keep answering their
control traffic while thousands of idle, half-sent requests are held open.

The flood comes from other loopback addresses (127.0.0.2 and up: each a
source of its own, none of them an agent or the loopback 127.0.0.1), 2,000
connections to the controller and 500 to the agent, each a request line and
one header and then silence. While they are held, the controller's health,
a signed ``GET /agent/v1/overlay`` to the agent and a task POST each answer
within 2 s, and the task's results keep arriving; the flood's connections
are shed (per-source cap, pool room) or cut at the header deadline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from measure_common.auth import to_agent
from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_until

pytestmark = pytest.mark.unit

HEADER_DEADLINE = 5.0  # serverguard.GuardLimits.header_timeout
HALF_REQUEST = b"GET /measure/v1/health HTTP/1.1\r\nHost: flood\r\n"


def _flood(port: int, count: int, per_source: int) -> list[socket.socket]:
    """``count`` idle half-requests to 127.0.0.1:``port`` from 127.0.0.2, .3, ..."""
    socks = []
    for i in range(count):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.bind((f"127.0.0.{2 + i // per_source}", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_REQUEST)
        except OSError:
            s.close()  # refused or reset at once: shed
            continue
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    try:
        s.settimeout(0.01)
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_half_requests_do_not_wedge_controller_or_agent(controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    ctl = controller_factory(rest_port=port, env={
        "MEASURE_STATE_DIR": str(state), "MEASURE_CONTROLLER_URL": f"http://127.0.0.1:{port}"})
    wait_until(lambda: (state / "controller.token").exists() and (state / "agent.secret").exists(),
               timeout=10, message="credential files")
    token = (state / "controller.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    api = f"{ctl.url}/measure/v1"
    secret_file = state / "agent.secret"
    agent_port = free_port()
    agent_url = f"http://127.0.0.1:{agent_port}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "host_agent", "--name", "g1", "--controller", ctl.url,
         "--listen", "127.0.0.1", "--port", str(agent_port), "--advertise", agent_url,
         "--no-capture", "--secret-file", str(secret_file), "--data-ip", "10.96.0.1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ})
    signer = to_agent(secret_file.read_bytes().strip(), "g1")
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: requests.get(f"{api}/health", headers=auth, timeout=5).json()["agents"]
                   == 1, timeout=30, message="the agent registered")
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=5, json={
            "name": "before", "kind": "counter", "filter": {"proto": "icmp"}})
        assert resp.status_code == 201, resp.text
        before_id = resp.json()["tasks"][0]["id"]

        def received_at(task_id: str) -> float:
            r = requests.get(f"{api}/tasks/{task_id}/result", headers=auth, timeout=5)
            return r.json()["received_at"] if r.status_code == 200 else 0.0

        first = wait_until(lambda: received_at(before_id), timeout=30,
                           message="a first result before the flood")

        started = time.monotonic()
        flood = _flood(port, 2000, per_source=50) + _flood(agent_port, 500, per_source=50)
        opened = time.monotonic() - started

        def timed(call):
            t0 = time.monotonic()
            r = call()
            return r, time.monotonic() - t0

        r, took = timed(lambda: requests.get(f"{api}/health", headers=auth, timeout=5))
        assert r.status_code == 200 and took < 2, (r.status_code, took)
        r, took = timed(lambda: requests.get(f"{agent_url}/agent/v1/overlay", auth=signer,
                                             timeout=5))
        assert r.status_code == 200 and took < 2, (r.status_code, took, r.text)
        r, took = timed(lambda: requests.post(f"{api}/tasks", headers=auth, timeout=5, json={
            "name": "during", "kind": "counter", "filter": {"proto": "udp"}}))
        assert r.status_code == 201 and took < 2, (r.status_code, took, r.text)
        during_id = r.json()["tasks"][0]["id"]
        # results keep arriving: a newer report of the old task, a first one of the new
        wait_until(lambda: received_at(before_id) > first, timeout=15,
                   message="a newer result while flooded")
        wait_until(lambda: received_at(during_id), timeout=30,
                   message="the new task's first result while flooded")

        # the flood was shed or is cut at the header deadline: nothing of it is served
        cut = wait_until(lambda: all(_closed_by_server(s) for s in flood),
                         timeout=HEADER_DEADLINE + 10,
                         message="every flood connection closed by the servers")
        assert cut and opened < 60
        r = requests.get(f"{api}/health", headers=auth, timeout=5)
        assert r.status_code == 200
    finally:
        for s in flood:
            s.close()
        stop_process(agent)
