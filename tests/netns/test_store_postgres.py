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
        for table in ("tasks", "results", "events", "meta", "actions", "agents"):
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
    store.put_agent("h2", {"name": "h2", "url": "http://a:1"})
    store.put_agent("h1", {"name": "h1", "url": "http://b:1"})
    store.put_agent("h2", {"name": "h2", "url": "http://c:1"})
    assert store.agents() == [{"name": "h1", "url": "http://b:1"},
                              {"name": "h2", "url": "http://c:1"}]


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


def test_a_standby_controller_answers_reads_and_takes_over_when_the_leader_dies(
        server, controller_factory, tmp_path):
    """Two real controllers on one PostgreSQL: the second answers reads from the store
    and refuses writes naming the leader; an agent given the standby's URL first ends up
    with the leader; when the leader is SIGKILLed the standby serves its task and events
    and the agent moves to it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from testing.controllers import credentials, state_env
    from testing.netns import ROOT
    from testing.procs import free_port, stop_process, wait_until

    state = tmp_path / "state"
    leader_port, standby_port = free_port(), free_port()
    leader = controller_factory(rest_port=leader_port, env=state_env(
        state, leader_port, MEASURE_STORE_URL=server.url))
    auth = credentials(state)
    resp = requests.post(f"{leader.url}/measure/v1/tasks", headers=auth, timeout=10, json={
        "name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"}})
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["tasks"][0]["id"]
    standby = controller_factory(rest_port=standby_port, env=state_env(
        state, standby_port, MEASURE_STORE_URL=server.url))
    assert "standby: waiting for the leader's lock" in standby.log()

    def get(url: str, path: str) -> tuple[int, dict]:
        r = requests.get(f"{url}/measure/v1/{path}", headers=auth, timeout=10)
        return r.status_code, r.json()

    for path in ("tasks", f"tasks/{task_id}", "events", "actions"):
        assert get(standby.url, path)[0] == 200, path
    assert [t["name"] for t in get(standby.url, "tasks")[1]["tasks"]] == ["icmp-count"]
    assert get(standby.url, "events") == get(leader.url, "events")
    health = get(standby.url, "health")[1]
    assert (health["role"], health["leader"]) == ("standby", leader.url)
    refused = requests.post(f"{standby.url}/measure/v1/tasks", headers=auth, timeout=10,
                            json={"name": "other", "kind": "counter"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"].endswith(f"send this to the leader at {leader.url}")
    assert get(standby.url, "agents")[0] == 503

    agent_port = free_port()
    agent = subprocess.Popen(  # the standby first: it refuses, the agent moves on
        [sys.executable, "-m", "host_agent", "--name", "q1", "--controller",
         f"{standby.url},{leader.url}", "--listen", "127.0.0.1", "--port", str(agent_port),
         "--advertise", f"http://127.0.0.1:{agent_port}", "--no-capture", "--secret-file",
         str(state / "agent.secret"), "--data-ip", "10.97.0.1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ})

    def agents_at(url: str) -> list[str] | None:
        status, got = get(url, "agents")
        return [a["name"] for a in got["agents"]] if status == 200 else None

    try:
        wait_until(lambda: agents_at(leader.url) == ["q1"], timeout=30,
                   message="the agent registered with the leader")
        stop_process(agent)  # so the new leader can only know it from the store
        events_before = get(leader.url, "events")[1]["events"]
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: get(standby.url, "health")[1]["role"] == "leader", timeout=30,
                   interval=0.05, message="the standby leading after the leader died")
        took = time.monotonic() - killed
        tasks = get(standby.url, "tasks")[1]["tasks"]
        assert [(t["id"], t["name"]) for t in tasks] == [(task_id, "icmp-count")]
        events = get(standby.url, "events")[1]["events"]
        assert events[:len(events_before)] == events_before  # nothing lost
        assert "leader now" in standby.log()
        assert agents_at(standby.url) == ["q1"]  # the registry of the shared store
        agent = subprocess.Popen(agent.args, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True,
                                 env={**os.environ})
        wait_until(lambda: [a["joins"] for a in get(standby.url, "agents")[1]["agents"]]
                   == [2], timeout=30, message="the agent registered with the new leader")
        print(f"standby leading {took:.2f} s after the leader's SIGKILL")
        assert took < 5.0, f"take-over took {took:.1f} s"
    finally:
        stop_process(agent)
