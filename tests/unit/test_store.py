"""SQLite store: tasks survive reopening, bounded history, clear errors, never a reset."""

from __future__ import annotations

import os
import sqlite3

import pytest

from ryu_app.service.store import NameConflict, Store, StoreError


def test_tasks_survive_reopen_and_names_are_unique(tmp_path):
    store = Store.in_dir(str(tmp_path))
    assert store.add_tasks([("a", {"kind": "counter"}), ("b", {})], now=5.0) == ["1", "2"]
    with pytest.raises(NameConflict, match="UNIQUE constraint failed: tasks.name"):
        store.add_tasks([("c", {}), ("a", {})], now=6.0)
    store.set_status("2", "active")
    store.set_meta("overlay_epoch", "7")
    store.close()
    again = Store.in_dir(str(tmp_path))
    assert again.tasks() == [
        {"id": "1", "name": "a", "task": {"kind": "counter"}, "created": 5.0,
         "status": "pending"},
        {"id": "2", "name": "b", "task": {}, "created": 5.0, "status": "active"}]
    assert again.get_meta("overlay_epoch") == "7" and again.get_meta("x", "d") == "d"
    assert again.delete_task("1") is True and again.delete_task("1") is False
    assert [t["name"] for t in again.tasks()] == ["b"]
    # An id is never reused after a delete.
    assert again.add_tasks([("a", {})], now=7.0) == ["3"]


def test_results_are_bounded_per_task_and_host(tmp_path):
    store = Store.in_dir(str(tmp_path), history=3)
    for i in range(5):
        store.add_result("1", "*", float(i), {"i": i})
        store.add_result("1", "h2", float(i), {"h": i})
    assert store.results("1") == [{"i": 4}, {"i": 3}, {"i": 2}]
    assert store.results("1", "h2", limit=2) == [{"h": 4}, {"h": 3}]
    assert store.results("2") == []
    store.add_tasks([("t", {})], 0.0)
    store.delete_task("1")
    assert store.results("1") == []


def test_events_have_increasing_ids_and_are_bounded(tmp_path):
    store = Store.in_dir(str(tmp_path), max_events=3)
    ids = [store.add_event(float(i), "1", "heavy_hitter", {"key": f"k{i}"}) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert [e["id"] for e in store.events(0)] == [3, 4, 5]
    assert store.events(4) == [{"id": 5, "ts": 4.0, "task_id": "1", "kind": "heavy_hitter",
                                "key": "k4"}]


def test_wal_mode(tmp_path):
    store = Store.in_dir(str(tmp_path))
    store.add_tasks([("a", {})], 0.0)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_file_is_a_clear_error_and_is_kept(tmp_path):
    path = tmp_path / "measure.db"
    garbage = b"this is not a database" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        Store(str(path))
    assert str(info.value) == f"store {path}: file is not a database"
    assert path.read_bytes() == garbage  # never reset


def test_locked_database_is_a_clear_error(tmp_path):
    store = Store.in_dir(str(tmp_path), busy_timeout=0.1)
    store.add_tasks([("a", {})], 0.0)
    locker = sqlite3.connect(store.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError) as info:
            store.add_tasks([("b", {})], 1.0)
        assert str(info.value) == f"store {store.path}: database is locked"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert [t["name"] for t in store.tasks()] == ["a"]  # the failed insert changed nothing


def test_newer_schema_is_refused(tmp_path):
    store = Store.in_dir(str(tmp_path))
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE schema SET version = 99")
    store.close()
    with pytest.raises(StoreError) as info:
        Store.in_dir(str(tmp_path))
    assert str(info.value) == (f"store {os.path.join(str(tmp_path), 'measure.db')}: "
                               "schema version 99, this controller needs 1")


def test_unusable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"cannot create its directory"):
        Store(str(blocker / "sub" / "measure.db"))


def test_agents_are_replaced_by_name_and_listed_by_name(tmp_path):
    store = Store(str(tmp_path / "m.db"))
    store.put_agent("h2", {"name": "h2", "url": "http://10.0.0.2:8000"})
    store.put_agent("h1", {"name": "h1", "url": "http://10.0.0.1:8000"})
    store.put_agent("h2", {"name": "h2", "url": "http://10.0.0.22:8000"})
    assert store.agents() == [{"name": "h1", "url": "http://10.0.0.1:8000"},
                              {"name": "h2", "url": "http://10.0.0.22:8000"}]
    store.close()


def test_a_schema_1_store_without_the_agents_table_gets_it(tmp_path):
    path = str(tmp_path / "m.db")
    Store(path).close()
    with sqlite3.connect(path) as db:  # what a controller before the agents table left
        db.execute("DROP TABLE agents")
    store = Store(path)
    assert store.agents() == []
    store.close()
