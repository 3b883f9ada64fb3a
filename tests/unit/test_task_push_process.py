"""REST calls on tasks never wait for agents (real controller, real agent processes).

``python -m ryu_app`` and two API-only agents (``--no-capture``) on
loopback, signed with the controller's secret. The root agent is frozen
with SIGSTOP: a ``DELETE /measure/v1/tasks/{id}`` still answers at once
(before, the controller sent the deletion through the overlay inside the
request and waited up to its 5 s push timeout), the task is gone from the
controller's list, and once the agents run again the deletion reaches both
of them, because it stays queued until the root acknowledges it.

The queue lives in the controller's memory: when the controller restarts
before the root is reachable again, the root goes on reporting the deleted
task, and the restarted controller tells it to delete the task (ids are
never reused, so a report of an id it does not hold is a deleted task).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from testing.controllers import credentials, state_env
from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_until

#: Well under the controller's 5 s push timeout: a call that waited for the
#: frozen root would time out here.
PROMPT = 3.0


def _agent(name: str, n: int, ctl_url: str, secret: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_agent", "--name", name, "--controller", ctl_url,
         "--listen", "127.0.0.1", "--port", str(port), "--advertise", url, "--no-capture",
         "--secret-file", secret, "--data-ip", f"10.98.0.{n}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ})
    return proc, url


def _held(url: str) -> list[str]:
    return requests.get(f"{url}/agent/v1/health", timeout=2).json()["tasks"]


def _both_in_overlay(api: str, auth: dict) -> dict:
    return wait_until(
        lambda: (o := requests.get(f"{api}/overlay", headers=auth, timeout=5).json())
        and len(o["parent"]) == 2 and o, timeout=20, message="both agents in the overlay")


def test_task_delete_answers_at_once_while_the_root_is_frozen(controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    ctl = controller_factory(rest_port=port, env=state_env(state, port, MEASURE_FANOUT="2"))
    auth = credentials(state)
    api = f"{ctl.url}/measure/v1"
    agents = {name: _agent(name, n, ctl.url, str(state / "agent.secret"))
              for n, name in enumerate(("p1", "p2"), start=1)}
    frozen = None
    try:
        overlay = _both_in_overlay(api, auth)
        root = overlay["root"]
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=PROMPT, json={
            "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"}})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["tasks"][0]["id"]
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [task_id], timeout=15,
                       message="task on both agents")

        frozen = agents[root][0]
        os.kill(frozen.pid, signal.SIGSTOP)
        resp = requests.delete(f"{api}/tasks/{task_id}", headers=auth, timeout=PROMPT)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"id": task_id, "name": "icmp-count", "deleted": True}
        resp = requests.get(f"{api}/tasks/{task_id}", headers=auth, timeout=PROMPT)
        assert resp.status_code == 404 and resp.json() == {"error": f"unknown task {task_id}"}
        assert requests.get(f"{api}/tasks", headers=auth, timeout=PROMPT).json() == {"tasks": []}
        # the frozen root has not been told yet, so both agents still measure
        other = next(url for name, (_, url) in agents.items() if name != root)
        assert _held(other) == [task_id]

        os.kill(frozen.pid, signal.SIGCONT)
        frozen = None
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [], timeout=30,
                       message="the queued deletion reached both agents")
    finally:
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)
        for proc, _ in agents.values():
            stop_process(proc)


def test_a_deletion_lost_with_a_controller_restart_reaches_the_agents(controller_factory,
                                                                     tmp_path):
    state = tmp_path / "state"
    port = free_port()
    env = state_env(state, port, MEASURE_FANOUT="2")
    ctl = controller_factory(rest_port=port, env=env)
    auth = credentials(state)
    api = f"{ctl.url}/measure/v1"
    agents = {name: _agent(name, n, ctl.url, str(state / "agent.secret"))
              for n, name in enumerate(("q1", "q2"), start=1)}
    frozen = None
    try:
        overlay = _both_in_overlay(api, auth)
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=PROMPT, json={
            "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"},
            "report_interval": 1})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["tasks"][0]["id"]
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [task_id], timeout=15,
                       message="task on both agents")

        frozen = agents[overlay["root"]][0]
        os.kill(frozen.pid, signal.SIGSTOP)
        assert requests.delete(f"{api}/tasks/{task_id}", headers=auth,
                               timeout=PROMPT).status_code == 200
        stop_process(ctl.proc)  # the queued deletion is gone with it
        os.kill(frozen.pid, signal.SIGCONT)
        frozen = None
        ctl = controller_factory(rest_port=port, env=env)
        assert requests.get(f"{api}/tasks", headers=auth, timeout=PROMPT).json() == {"tasks": []}
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [], timeout=40,
                       message="the deleted task left both agents after the restart")
        health = requests.get(f"{api}/health", headers=auth, timeout=PROMPT).json()
        assert not any(k.startswith("delete") for k in health.get("failing", {})), health
    finally:
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)
        for proc, _ in agents.values():
            stop_process(proc)
