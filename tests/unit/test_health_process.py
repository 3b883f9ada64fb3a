"""Failures are loud: the controller's health shows each one, with real processes.

``python -m ryu_app`` and API-only agents (``--no-capture``) on loopback,
signed with the controller's secret; ``GET /measure/v1/health`` read with
the controller's token while, in turn:

- the controller's database is write-locked by another connection (as a
  stuck backup or a second controller would), so every tick that must
  store the new overlay epoch fails: ``ticker.failures`` grows,
  ``last_error`` names the lock, ``ok`` is false; released, the next tick
  succeeds and health is ok again;
- the overlay root is killed and a task is created: the push to the root
  gets no answer at every tick, so the root is in ``agents_unreachable``
  and ``pushes_failing`` counts ``task N``; once the root's heartbeats have
  timed out the task goes to the new root and both lists empty.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import requests

from testing.controllers import credentials, state_env
from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_until


def _agent(name: str, n: int, ctl_url: str, secret: str) -> subprocess.Popen:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return subprocess.Popen(
        [sys.executable, "-m", "host_agent", "--name", name, "--controller", ctl_url,
         "--listen", "127.0.0.1", "--port", str(port), "--advertise", url, "--no-capture",
         "--secret-file", secret, "--data-ip", f"10.97.0.{n}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ})


def test_health_reports_a_failing_tick_an_unreachable_root_and_a_failing_push(
        controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    ctl = controller_factory(rest_port=port, env=state_env(state, port))
    auth = credentials(state)
    api = f"{ctl.url}/measure/v1"
    secret = str(state / "agent.secret")

    def health() -> dict:
        resp = requests.get(f"{api}/health", headers=auth, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    agents = {name: _agent(name, n, ctl.url, secret) for n, name in enumerate(("q1", "q2"), 1)}
    try:
        first = wait_until(lambda: (h := health())["ok"] and h["agents"] == 2 and h,
                           timeout=30, message="a healthy controller with two agents")
        assert first["ticker"]["failures"] == 0 and first["ticker"]["running"] is True
        assert first["agents_unreachable"] == [] and first["pushes_failing"] == {}

        # 1. a tick that keeps failing: the database is locked for writers
        lock = sqlite3.connect(str(state / "measure.db"), timeout=1, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            agents["q3"] = _agent("q3", 3, ctl.url, secret)  # joins: a new epoch to store
            broken = wait_until(lambda: (h := health())["ticker"]["failures"] >= 2 and h,
                                timeout=40, message="ticks failing on the locked store")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert broken["ok"] is False
        assert "database is locked" in broken["ticker"]["last_error"]
        assert broken["ticker"]["last_ok"] is not None
        healed = wait_until(lambda: (h := health())["ok"] and h["agents"] == 3 and h,
                            timeout=30, message="healthy again once the store is free")
        assert healed["ticker"]["failures"] == 0
        assert healed["ticker"]["last_ok"] > broken["ticker"]["last_ok"]
        assert healed["ticker"]["total_failures"] >= 2

        # 2. an unreachable root and a push to it that keeps failing
        overlay = requests.get(f"{api}/overlay", headers=auth, timeout=5).json()
        root = overlay["root"]
        agents[root].send_signal(signal.SIGKILL)
        agents[root].wait(5)
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=5, json={
            "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"}})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["tasks"][0]["id"]
        failing = wait_until(
            lambda: (h := health())["pushes_failing"].get(f"task {task_id}", {}).get(
                "failures", 0) >= 2 and h,
            timeout=6, interval=0.2, message="the task push to the dead root failing")
        assert failing["ok"] is False and failing["agents_unreachable"] == [root]
        assert root in failing["pushes_failing"][f"task {task_id}"]["last_error"]
        # the dead root's heartbeats time out, the tree is rebuilt, the task lands
        done = wait_until(lambda: (h := health())["ok"] and h, timeout=30,
                          message="healthy again with a new root")
        assert done["agents_unreachable"] == [] and done["pushes_failing"] == {}
        assert done["agents_down"] == [root]
        task = requests.get(f"{api}/tasks/{task_id}", headers=auth, timeout=5).json()
        assert task["status"] == "active" and root not in task["agents"]
    finally:
        for proc in agents.values():
            stop_process(proc)
