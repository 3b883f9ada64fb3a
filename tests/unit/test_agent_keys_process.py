"""Keys that mean one thing, with real processes: a controller and three agents,
each agent holding only its own key file (HMAC of the controller's secret and
its name, as ``measure-net`` writes it).

- The overlay works with per-agent keys: children sign their reports to the
  root with the pair key the controller put in their placement, and the root
  accepts them.
- g2's key speaks for g2 only: a heartbeat for g1 or a task POST is a 403.
- A request the controller signed for g1, replayed to g2, is a 401 that g2
  logs; a child's pair key cannot configure its parent (403).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from measure_common.auth import (
    HmacAuth,
    agent_key,
    as_agent,
    load_or_create_secret,
    peer_credential,
    to_agent,
    unwrap,
    write_agent_key,
)
from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_until

pytestmark = pytest.mark.unit

NAMES = ("g1", "g2", "g3")


def test_per_agent_keys_with_a_real_controller_and_agents(controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    ctl = controller_factory(rest_port=port, env={
        "MEASURE_STATE_DIR": str(state), "MEASURE_CONTROLLER_URL": f"http://127.0.0.1:{port}"})
    wait_until(lambda: (state / "controller.token").exists() and (state / "agent.secret").exists(),
               timeout=10, message="credential files")
    auth = {"Authorization": f"Bearer {(state / 'controller.token').read_text().strip()}"}
    api = f"{ctl.url}/measure/v1"
    master, _ = load_or_create_secret(str(state / "agent.secret"))
    urls, logs, procs = {}, {}, []
    try:
        for i, name in enumerate(NAMES):
            key_file = tmp_path / f"{name}.key"
            write_agent_key(str(key_file), master, name)
            assert key_file.read_bytes().strip() == agent_key(master, name)
            agent_port = free_port()
            urls[name] = f"http://127.0.0.1:{agent_port}"
            logs[name] = tmp_path / f"{name}.log"
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "host_agent", "--name", name, "--controller", ctl.url,
                 "--listen", "127.0.0.1", "--port", str(agent_port), "--advertise", urls[name],
                 "--no-capture", "--key-file", str(key_file), "--data-ip", f"10.95.0.{i + 1}",
                 "--log-file", str(logs[name])],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ}))
        wait_until(lambda: requests.get(f"{api}/health", headers=auth, timeout=5).json()
                   ["agents"] == 3, timeout=30, message="three agents registered")
        resp = requests.post(f"{api}/tasks", headers=auth, timeout=5, json={
            "name": "keys", "kind": "counter", "filter": {"proto": "icmp"}})
        assert resp.status_code == 201, resp.text

        overlay = wait_until(lambda: (o := requests.get(f"{api}/overlay", headers=auth,
                                                        timeout=5).json())["root"] and o,
                             timeout=20, message="an overlay root")
        root = overlay["root"]
        children = [n for n in NAMES if n != root]
        assert sorted(overlay["children"][root]) == children  # fan-out 3: a star

        def received() -> int:
            return requests.get(f"{urls[root]}/agent/v1/overlay", timeout=5,
                                auth=to_agent(master, root)).json()["stats"]["reports_received"]

        # the children's reports, signed with their pair keys, reach the root (with
        # --no-capture an agent has no monitor, so the reports carry no counts)
        wait_until(lambda: received() >= 4, timeout=40,
                   message="the children's signed reports at the root")
        for name in children:
            assert "401" not in logs[name].read_text() and "403" not in logs[name].read_text()
        child = children[0]

        # an agent's key speaks for that agent only
        beat = requests.post(f"{api}/agents/g1/heartbeat", json={}, timeout=5,
                             auth=as_agent(master, "g2"))
        assert (beat.status_code, beat.json()) == (403, {
            "error": "agent g2 may only heartbeat for itself, not 'g1'"})
        task = requests.post(f"{api}/tasks", json={"name": "x", "kind": "counter"}, timeout=5,
                             auth=as_agent(master, "g2"))
        assert task.status_code == 403 and "operator token" in task.json()["error"]
        own = requests.post(f"{api}/agents/g2/heartbeat", json={}, timeout=5,
                            auth=as_agent(master, "g2"))
        assert own.status_code == 200, own.text

        # the controller's request signed for g1, replayed to g2
        prepared = requests.Request("PUT", f"{urls['g2']}/agent/v1/overlay", json={
            "epoch": 10**6, "parent": None, "root": True, "children": [],
            "to": "g2"}).prepare()
        to_agent(master, "g1")(prepared)
        with requests.Session() as session:
            replayed = session.send(prepared, timeout=5)
        assert (replayed.status_code, replayed.json()) == (401, {
            "error": "bad request signature"})
        wait_until(lambda: "refused PUT /agent/v1/overlay: bad request signature"
                   in logs["g2"].read_text(), timeout=5, message="g2 logged the replay")

        # a child's pair key for its parent reaches overlay routes only
        cred = peer_credential(master, child, root)
        pair = HmacAuth(unwrap(agent_key(master, child), root, cred["key"]), sender=child,
                        receiver=root, ticket=cred["ticket"])
        resp = requests.put(f"{urls[root]}/agent/v1/overlay", timeout=5, auth=pair, json={
            "epoch": 10**6, "parent": None, "root": True, "children": [], "to": root})
        assert resp.status_code == 403 and "only the controller may" in resp.json()["error"]
        after = requests.get(f"{api}/overlay", headers=auth, timeout=5).json()
        assert after["root"] == root
    finally:
        for proc in procs:
            stop_process(proc)
    for name in NAMES:
        assert "Traceback" not in logs[name].read_text(), name
