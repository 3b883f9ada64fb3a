"""Keys that mean one thing, with real processes: a controller and three agents,
each agent holding only its own key file (HMAC of the controller's secret and
its name, as ``measure-net`` writes it).

- The overlay works with per-agent keys: children sign their reports to the
  root with the pair key the controller put in their placement, and the root
  accepts them.
- g2's key speaks for g2 only: a heartbeat for g1 or a task POST is a 403.
- A request the controller signed for g1, replayed to g2, is a 401 that g2
  logs; a child's pair key cannot configure its parent (403).
- ``POST agents/g1/peer-key`` gives g1 a credential for g2 (found by name or
  data IP) that g2 accepts; g1's key asking as g2 is a 403, an unknown peer a
  404. The legacy ``query bw`` to g1 (``--allow-legacy``) asks for that key
  itself and measures towards g2 over loopback (data IPs 127.0.0.x).
"""

from __future__ import annotations

import os
import re
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
                 "--no-capture", "--key-file", str(key_file), "--data-ip", f"127.0.0.{i + 1}",
                 # no probes: three probe workers bound to 127.0.0.x would each attach the
                 # kernel reflector to the root namespace's lo, racing over its qdisc
                 "--probe-port", "0",
                 "--log-file", str(logs[name])] + (["--allow-legacy"] if name == "g1" else []),
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
            # no report refused by the root ('report T to URL failed: {error}') and no call
            # refused here (the timestamps' milliseconds may read 401 or 403)
            assert not re.search(r"report \S+ to \S+ failed: \{|refused (GET|PUT|POST|DELETE) ",
                                 logs[name].read_text())
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

        # the peer key route: g1's own key gets a credential for g2 that g2 accepts
        for ref in ("g2", "127.0.0.2"):
            got = requests.post(f"{api}/agents/g1/peer-key", json={"peer": ref}, timeout=5,
                                auth=as_agent(master, "g1"))
            assert got.status_code == 200, got.text
            answer = got.json()
            assert {k: answer[k] for k in ("dst_name", "dst_url", "dst_ip")} == {
                "dst_name": "g2", "dst_url": urls["g2"], "dst_ip": "127.0.0.2"}
            assert answer["dst_key"] == peer_credential(master, "g1", "g2")
        cred = answer["dst_key"]
        signer = HmacAuth(unwrap(agent_key(master, "g1"), "g2", cred["key"]), sender="g1",
                          receiver="g2", ticket=cred["ticket"])
        receive = f"{urls['g2']}/agent/v1/bandwidth/receive"
        opened = requests.post(receive, json={"method": "slops", "duration": 1}, timeout=5,
                               auth=signer)
        assert opened.status_code == 200 and opened.json()["session"], opened.text
        unsigned = requests.post(receive, json={"method": "slops", "duration": 1}, timeout=5)
        assert unsigned.status_code == 401, unsigned.text
        # g1's key speaks for g1 only; an unknown peer, the caller itself, a bad body
        other = requests.post(f"{api}/agents/g2/peer-key", json={"peer": "g3"}, timeout=5,
                              auth=as_agent(master, "g1"))
        assert (other.status_code, other.json()) == (403, {
            "error": "agent g1 may only ask for a peer key for itself, not 'g2'"})
        unknown = requests.post(f"{api}/agents/g1/peer-key", json={"peer": "10.9.9.9"},
                                timeout=5, auth=as_agent(master, "g1"))
        assert unknown.status_code == 404 and "'10.9.9.9'" in unknown.json()["error"]
        itself = requests.post(f"{api}/agents/g1/peer-key", json={"peer": "g1"}, timeout=5,
                               auth=as_agent(master, "g1"))
        assert itself.status_code == 400 and "'peer'" in itself.json()["error"]
        bad = requests.post(f"{api}/agents/g1/peer-key", json={"peer": 7}, timeout=5,
                            auth=as_agent(master, "g1"))
        assert bad.status_code == 400 and "'peer'" in bad.json()["error"]

        # the original query bw message: g1 asks the controller for g2's key itself
        legacy = requests.post(f"{urls['g1']}/", timeout=40, data={
            "type": "query bw", "src": "127.0.0.1", "dst": "127.0.0.2"})
        assert legacy.status_code == 200, legacy.text
        assert float(legacy.text) > 0, legacy.text
        assert "gave the key to 127.0.0.2 (agent g2" in logs["g1"].read_text()
        assert "answered 401" not in logs["g1"].read_text()
    finally:
        for proc in procs:
            stop_process(proc)
    for name in NAMES:
        assert "Traceback" not in logs[name].read_text(), name
