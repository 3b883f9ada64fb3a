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

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

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


@contextlib.contextmanager
def _two_agents_with_a_task(controller_factory, tmp_path, names: tuple[str, str],
                            **task: Any) -> Iterator[SimpleNamespace]:
    """A controller, two API-only agents in its overlay and a counter task installed on
    both; ``run.frozen`` (a stopped agent) is let go and the agents stopped at the end."""
    state = tmp_path / "state"
    port = free_port()
    env = state_env(state, port, MEASURE_FANOUT="2")
    ctl = controller_factory(rest_port=port, env=env)
    auth = credentials(state)
    api = f"{ctl.url}/measure/v1"
    agents = {name: _agent(name, n, ctl.url, str(state / "agent.secret"))
              for n, name in enumerate(names, start=1)}
    run = SimpleNamespace(ctl=ctl, port=port, env=env, auth=auth, api=api, agents=agents,
                          frozen=None)
    try:
        overlay = wait_until(
            lambda: (o := requests.get(f"{api}/overlay", headers=auth, timeout=5).json())
            and len(o["parent"]) == 2 and o, timeout=20, message="both agents in the overlay")
        run.root = overlay["root"]
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=PROMPT, json={
            "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"}, **task})
        assert resp.status_code == 201, resp.text
        run.task_id = resp.json()["tasks"][0]["id"]
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [run.task_id], timeout=15,
                       message="task on both agents")
        yield run
    finally:
        if run.frozen is not None:
            os.kill(run.frozen.pid, signal.SIGCONT)
        for proc, _ in agents.values():
            stop_process(proc)


def test_task_delete_answers_at_once_while_the_root_is_frozen(controller_factory, tmp_path):
    with _two_agents_with_a_task(controller_factory, tmp_path, ("p1", "p2")) as run:
        api, auth, agents, root, task_id = run.api, run.auth, run.agents, run.root, run.task_id
        run.frozen = agents[root][0]
        os.kill(run.frozen.pid, signal.SIGSTOP)
        resp = requests.delete(f"{api}/tasks/{task_id}", headers=auth, timeout=PROMPT)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"id": task_id, "name": "icmp-count", "deleted": True}
        resp = requests.get(f"{api}/tasks/{task_id}", headers=auth, timeout=PROMPT)
        assert resp.status_code == 404 and resp.json() == {"error": f"unknown task {task_id}"}
        assert requests.get(f"{api}/tasks", headers=auth, timeout=PROMPT).json() == {"tasks": []}
        # the frozen root has not been told yet, so both agents still measure
        other = next(url for name, (_, url) in agents.items() if name != root)
        assert _held(other) == [task_id]

        os.kill(run.frozen.pid, signal.SIGCONT)
        run.frozen = None
        for _, url in agents.values():
            wait_until(lambda url=url: _held(url) == [], timeout=30,
                       message="the queued deletion reached both agents")


def test_a_deletion_lost_with_a_controller_restart_reaches_the_agents(controller_factory,
                                                                     tmp_path):
    with _two_agents_with_a_task(controller_factory, tmp_path, ("q1", "q2"),
                                 report_interval=1) as run:
        api, auth, task_id = run.api, run.auth, run.task_id
        run.frozen = run.agents[run.root][0]
        os.kill(run.frozen.pid, signal.SIGSTOP)
        assert requests.delete(f"{api}/tasks/{task_id}", headers=auth,
                               timeout=PROMPT).status_code == 200
        stop_process(run.ctl.proc)  # the queued deletion is gone with it
        os.kill(run.frozen.pid, signal.SIGCONT)
        run.frozen = None
        controller_factory(rest_port=run.port, env=run.env)
        assert requests.get(f"{api}/tasks", headers=auth, timeout=PROMPT).json() == {"tasks": []}
        for _, url in run.agents.values():
            wait_until(lambda url=url: _held(url) == [], timeout=40,
                       message="the deleted task left both agents after the restart")
        health = requests.get(f"{api}/health", headers=auth, timeout=PROMPT).json()
        assert not any(k.startswith("delete") for k in health.get("failing", {})), health
