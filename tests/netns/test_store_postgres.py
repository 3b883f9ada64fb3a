"""The controller's store on a real PostgreSQL server (``PgStore``), and its leader lock.

Root tier: the server runs as the ``postgres`` user in a throwaway cluster
(``testing.postgres``). The same behaviour as the SQLite store is checked on
it: ids never reused, bounded history, bounded events, name conflicts, the
schema version; then what only a shared store has: two controllers' stores
see each other's rows, and exactly one holds the leader's lock until its
connection dies.
"""

from __future__ import annotations

import pytest

from ryu_app.service.store import NameConflict, PgStore, StoreError, redact
from testing.postgres import postgres_server

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def server():
    with postgres_server() as srv:
        yield srv


@pytest.fixture
def store(server):
    s = PgStore(server.url, history=3, max_events=3)
    yield s
    with s._tx() as db:  # a clean database for the next test
        for table in ("tasks", "results", "events", "meta", "actions"):
            db.execute(f"TRUNCATE {table} RESTART IDENTITY")  # noqa: S608 - fixed names
    s.close()


def test_tasks_names_and_ids_as_with_sqlite(store, server):
    assert store.add_tasks([("a", {"kind": "counter"}), ("b", {})], now=5.0) == ["1", "2"]
    with pytest.raises(NameConflict, match='unique constraint "tasks_name_key"'):
        store.add_tasks([("c", {}), ("a", {})], now=6.0)
    assert [t["name"] for t in store.tasks()] == ["a", "b"]  # the failed batch left nothing
    store.set_status("2", "active")
    store.set_meta("overlay_epoch", "7")
    store.set_meta("overlay_epoch", "8")
    other = PgStore(server.url)  # another controller on the same database
    try:
        assert other.tasks()[1] == {"id": "2", "name": "b", "task": {}, "created": 5.0,
                                    "status": "active"}
        assert other.get_meta("overlay_epoch") == "8" and other.get_meta("x", "d") == "d"
        assert other.delete_task("1") is True and other.delete_task("1") is False
    finally:
        other.close()
    # never reused: the refused batch consumed 3 and 4 (sequences do not roll back)
    assert store.add_tasks([("a", {})], now=7.0) == ["5"]


def test_results_events_and_actions_are_bounded(store):
    for i in range(5):
        store.add_result("1", "*", float(i), {"i": i})
    assert store.results("1") == [{"i": 4}, {"i": 3}, {"i": 2}]
    ids = [store.add_event(float(i), "1", "heavy_hitter", {"key": f"k{i}"}) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5] and [e["id"] for e in store.events(0)] == [3, 4, 5]
    aid = store.add_action("1", "active", {"action": "block"})
    store.update_action(aid, "expired", {"action": "block"})
    assert store.actions() == [{"action": "block", "id": aid}]


def test_exactly_one_leader_until_its_connection_dies(server):
    a, b = PgStore(server.url), PgStore(server.url)
    try:
        assert a.try_lead() is True and a.try_lead() is True
        assert b.try_lead() is False
        a._leader.close()  # what a killed leader's server-side session amounts to
        a._leader = None
        assert b.try_lead() is True and a.try_lead() is False
    finally:
        a.close()
        b.close()


def test_unreachable_server_and_newer_schema_are_clear_errors(server):
    with pytest.raises(StoreError, match=r"store postgresql://measure@/nodb.*nodb"):
        PgStore(server.url.replace("/measure?", "/nodb?"))
    s = PgStore(server.url)
    with s._tx() as db:
        db.execute("UPDATE schema SET version = 99")
    try:
        with pytest.raises(StoreError, match="schema version 99, this controller needs 1"):
            PgStore(server.url)
    finally:
        with s._tx() as db:
            db.execute("UPDATE schema SET version = 1")
        s.close()


def test_passwords_never_appear_in_errors():
    assert redact("postgresql://u:secret@db.example/m") == "postgresql://u:***@db.example/m"
    assert redact("postgresql://u@/m?host=/tmp") == "postgresql://u@/m?host=/tmp"


def test_a_standby_controller_takes_over_the_shared_state_when_the_leader_dies(
        server, controller_factory, tmp_path):
    """Two real controllers on one PostgreSQL: the second waits (its ports stay closed)
    until the leader is SIGKILLed, then serves the leader's task and events."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from testing.netns import ROOT
    from testing.procs import free_port, port_open, stop_process, wait_until

    state = tmp_path / "state"
    env = {"MEASURE_STATE_DIR": str(state), "MEASURE_STORE_URL": server.url}
    leader = controller_factory(env=env)
    wait_until(lambda: (state / "controller.token").exists(), timeout=10, message="token")
    auth = {"Authorization": f"Bearer {(state / 'controller.token').read_text().strip()}"}
    resp = requests.post(f"{leader.url}/measure/v1/tasks", headers=auth, timeout=10, json={
        "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"}})
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["tasks"][0]["id"]
    events_before = requests.get(f"{leader.url}/measure/v1/events", headers=auth,
                                 timeout=10).json()["events"]

    rest_port, of_port = free_port(), free_port()
    standby_url = f"http://127.0.0.1:{rest_port}"
    agent_port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "host_agent", "--name", "q1", "--controller",
         f"{leader.url},{standby_url}", "--listen", "127.0.0.1", "--port", str(agent_port),
         "--advertise", f"http://127.0.0.1:{agent_port}", "--no-capture", "--secret-file",
         str(state / "agent.secret"), "--data-ip", "10.97.0.1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ})

    def agents_at(url: str) -> list[str]:
        got = requests.get(f"{url}/measure/v1/agents", headers=auth, timeout=10).json()
        return [a["name"] for a in got["agents"]]

    log_path = tmp_path / "standby.log"
    with open(log_path, "w") as log:
        standby = subprocess.Popen(
            [sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port", str(of_port),
             "--wsapi-port", str(rest_port), "--observe-links", "ryu_app.app"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env})
    try:
        wait_until(lambda: agents_at(leader.url) == ["q1"], timeout=30,
                   message="the agent registered with the leader")
        wait_until(lambda: "standby: waiting for the leader's lock" in log_path.read_text(),
                   timeout=30, message="the second controller waiting as standby")
        time.sleep(2.0)
        assert not port_open("127.0.0.1", rest_port) and not port_open("127.0.0.1", of_port)

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: port_open("127.0.0.1", rest_port), timeout=30,
                   message="the standby serving after the leader died")
        took = time.monotonic() - killed
        api = f"http://127.0.0.1:{rest_port}/measure/v1"
        tasks = requests.get(f"{api}/tasks", headers=auth, timeout=10).json()["tasks"]
        assert [(t["id"], t["name"]) for t in tasks] == [(task_id, "icmp-count")]
        events = requests.get(f"{api}/events", headers=auth, timeout=10).json()["events"]
        assert events[:len(events_before)] == events_before  # nothing lost
        assert "leader now" in log_path.read_text()
        wait_until(lambda: agents_at(standby_url) == ["q1"], timeout=30,
                   message="the agent registered with the new leader")
        print(f"standby serving {took:.1f} s after the leader's SIGKILL")
        assert took < 15.0, f"take-over took {took:.1f} s"
    finally:
        stop_process(agent)
        stop_process(standby)
    assert "Traceback" not in log_path.read_text()
