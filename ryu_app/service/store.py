"""Persistence for the controller: tasks, results, events, metadata, actions.

Two backends with the same tables and the same queries:

- **SQLite** (the default, one machine): one database file under the state
  directory (``measure.db``), opened in WAL mode so readers do not block the
  single writer;
- **PostgreSQL** (``PgStore``, ``--store postgresql://...``): a shared server,
  so that a standby controller can take over from the same state. Each
  process holds one connection; transactions are explicit ``BEGIN`` /
  ``COMMIT`` as with SQLite.

Tables:

- ``schema`` holds the schema version; a database with another version is
  refused rather than migrated silently;
- ``tasks`` (id, name unique, json, created, status): the applied tasks,
  re-applied after a controller restart;
- ``results`` (task_id, host or ``'*'``, ts, json): a bounded history per
  (task, host), oldest rows trimmed on insert;
- ``events`` (id autoincrement, ts, task_id, kind, json), bounded in total;
- ``meta`` (key, value): e.g. the overlay epoch, which must keep growing
  across restarts because agents refuse older epochs;
- ``actions`` (id, task_id, status, json): reactions taken (``ryu_app/reactions/actions.py``),
  kept so active ones are re-installed after a restart; past ones are bounded;
- ``agents`` (name, json): the registered agents (name, url, data_ip, mac,
  version), written on a shared store only, so that a standby taking over
  knows them without waiting for each to register again. A table added to
  schema 1 (created when missing; older controllers ignore it).

Every database failure becomes a ``StoreError`` naming the file (or the
server) and the cause (``store /var/lib/...: file is not a database``); a
corrupt or locked file is never reset or replaced. Task ids are decimal
strings of the row id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SCHEMA_VERSION = 1
DB_NAME = "measure.db"
GLOBAL = "*"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT NOT NULL,
    host TEXT NOT NULL,
    ts REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_task ON results (task_id, host, ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (name TEXT PRIMARY KEY, json TEXT NOT NULL);
"""
MAX_PAST_ACTIONS = 1000


class StoreError(RuntimeError):
    """The database cannot be used; the message names the file and the cause."""


class NameConflict(StoreError):
    """A task with this name exists already (409)."""


def _create_schema(db: Any, schema: str, param: str, where: str) -> None:
    """Run ``schema``'s statements, then record the schema version (a new store) or check
    it; ``param`` is the driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg)."""
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)
    row = db.execute("SELECT version FROM schema").fetchone()
    if row is None:
        db.execute(f"INSERT INTO schema (version) VALUES ({param})", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        raise StoreError(f"store {where}: schema version {row[0]}, "
                         f"this controller needs {SCHEMA_VERSION}")


class Store:
    """The controller's SQLite database (see the module docstring)."""

    def __init__(self, path: str, history: int = 100, max_events: int = 10000,
                 busy_timeout: float = 2.0) -> None:
        self.path = path
        self.history = history
        self.max_events = max_events
        self._lock = threading.RLock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {path}: cannot create its directory: {exc}") from None
        with self._errors():
            self._db: Any = sqlite3.connect(path, timeout=busy_timeout,
                                            check_same_thread=False, isolation_level=None)
        try:
            self._open()
        except StoreError:
            self._db.close()
            raise

    @classmethod
    def in_dir(cls, state_dir: str, **kw: Any) -> Store:
        return cls(os.path.join(state_dir, DB_NAME), **kw)

    # the SQL of this class is SQLite's, with ``{rowid}`` for the results row id
    ROWID = "rowid"
    BEGIN = "BEGIN IMMEDIATE"  # take the write lock at once: no deadlock between writers

    def _x(self, db: Any, sql: str, params: tuple = ()) -> Any:
        """Execute one statement of the shared SQL on ``db``."""
        return db.execute(sql.replace("{rowid}", self.ROWID), params)

    @staticmethod
    def _unique_violation(exc: StoreError, column: str) -> bool:
        return f"UNIQUE constraint failed: tasks.{column}" in str(exc)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from None

    def is_shared(self) -> bool:
        """Whether other controllers may use the same database (a standby can)."""
        return False

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._db.execute(self.BEGIN)
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _open(self) -> None:
        with self._errors():
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"store {self.path}: cannot switch to WAL mode ({mode})")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"store {self.path}: integrity check failed: {check}")
        with self._tx() as db:
            _create_schema(db, _SCHEMA, "?", self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def try_lead(self) -> bool:
        """A store of one controller: it always leads."""
        return True

    # ------------------------------------------------------------ tasks

    def add_tasks(self, tasks: list[tuple[str, dict]], now: float,
                  status: str = "pending") -> list[str]:
        """Insert (name, task dict) pairs atomically; NameConflict if a name exists."""
        ids = []
        with self._lock:
            try:
                with self._tx() as db:
                    for name, body in tasks:
                        row = self._x(db, "INSERT INTO tasks (name, json, created, status) "
                                          "VALUES (?,?,?,?) RETURNING id",
                                      (name, json.dumps(body, sort_keys=True), now,
                                       status)).fetchone()
                        ids.append(str(row[0]))
            except StoreError as exc:
                if self._unique_violation(exc, "name"):
                    raise NameConflict(str(exc)) from None
                raise
        return ids

    def tasks(self) -> list[dict[str, Any]]:
        with self._lock, self._errors():
            rows = self._x(self._db, "SELECT id, name, json, created, status FROM tasks "
                                     "ORDER BY id").fetchall()
        return [self._task_row(r) for r in rows]

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self._lock, self._errors():
            row = self._x(self._db, "SELECT id, name, json, created, status FROM tasks "
                                    "WHERE id = ?", (int(task_id),)).fetchone()
        return None if row is None else self._task_row(row)

    @staticmethod
    def _task_row(row: tuple) -> dict[str, Any]:
        return {"id": str(row[0]), "name": row[1], "task": json.loads(row[2]),
                "created": row[3], "status": row[4]}

    def set_status(self, task_id: str, status: str) -> None:
        with self._tx() as db:
            self._x(db, "UPDATE tasks SET status = ? WHERE id = ?", (status, int(task_id)))

    def delete_task(self, task_id: str) -> bool:
        """Remove a task and its results; False if there was none."""
        with self._tx() as db:
            cur = self._x(db, "DELETE FROM tasks WHERE id = ?", (int(task_id),))
            self._x(db, "DELETE FROM results WHERE task_id = ?", (task_id,))
        return cur.rowcount > 0

    # ------------------------------------------------------------ results

    def add_result(self, task_id: str, host: str, ts: float, payload: dict) -> None:
        """Append a result, keeping the newest ``history`` rows of (task, host)."""
        with self._tx() as db:
            self._x(db, "INSERT INTO results (task_id, host, ts, json) VALUES (?,?,?,?)",
                    (task_id, host, ts, json.dumps(payload)))
            self._x(db,
                    "DELETE FROM results WHERE task_id = ? AND host = ? AND {rowid} NOT IN "
                    "(SELECT {rowid} FROM results WHERE task_id = ? AND host = ? "
                    "ORDER BY ts DESC, {rowid} DESC LIMIT ?)",
                    (task_id, host, task_id, host, self.history))

    def results(self, task_id: str, host: str | None = None, limit: int = 100) -> list[dict]:
        """Newest first."""
        with self._lock, self._errors():
            rows = self._x(self._db,
                           "SELECT json FROM results WHERE task_id = ? AND host = ? "
                           "ORDER BY ts DESC, {rowid} DESC LIMIT ?",
                           (task_id, host or GLOBAL, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # ------------------------------------------------------------ events

    def add_event(self, ts: float, task_id: str, kind: str, payload: dict) -> int:
        with self._tx() as db:
            event_id = int(self._x(db, "INSERT INTO events (ts, task_id, kind, json) "
                                       "VALUES (?,?,?,?) RETURNING id",
                                   (ts, task_id, kind, json.dumps(payload))).fetchone()[0])
            self._x(db, "DELETE FROM events WHERE id <= ?", (event_id - self.max_events,))
        return event_id

    def events(self, since: int = 0, limit: int = 1000) -> list[dict]:
        """Events with id > ``since``, oldest first."""
        with self._lock, self._errors():
            rows = self._x(self._db, "SELECT id, ts, task_id, kind, json FROM events "
                                     "WHERE id > ? ORDER BY id LIMIT ?",
                           (since, limit)).fetchall()
        return [{**json.loads(r[4]), "id": r[0], "ts": r[1], "task_id": r[2], "kind": r[3]}
                for r in rows]

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock, self._errors():
            row = self._x(self._db, "SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            self._x(db, "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # ------------------------------------------------------------ agents

    def put_agent(self, name: str, fields: dict) -> None:
        """Insert or replace a registered agent's fields."""
        with self._tx() as db:
            self._x(db, "INSERT INTO agents (name, json) VALUES (?, ?) ON CONFLICT(name) "
                        "DO UPDATE SET json = excluded.json",
                    (name, json.dumps(fields, sort_keys=True)))

    def agents(self) -> list[dict]:
        """The stored agents' fields, by name."""
        with self._lock, self._errors():
            rows = self._x(self._db, "SELECT json FROM agents ORDER BY name").fetchall()
        return [json.loads(r[0]) for r in rows]

    # ------------------------------------------------------------ actions

    def add_action(self, task_id: str, status: str, payload: dict) -> int:
        """Insert an action row; returns its id (never reused)."""
        with self._tx() as db:
            row = self._x(db, "INSERT INTO actions (task_id, status, json) VALUES (?,?,?) "
                              "RETURNING id", (task_id, status, json.dumps(payload))).fetchone()
        return int(row[0])

    def update_action(self, action_id: int, status: str, payload: dict) -> None:
        """Rewrite an action row; past rows beyond ``MAX_PAST_ACTIONS`` are trimmed."""
        with self._tx() as db:
            self._x(db, "UPDATE actions SET status = ?, json = ? WHERE id = ?",
                    (status, json.dumps(payload), action_id))
            past = "status NOT IN ('active', 'dry_run')"
            self._x(db, f"DELETE FROM actions WHERE {past} AND id NOT IN "  # noqa: S608
                        f"(SELECT id FROM actions WHERE {past} ORDER BY id DESC LIMIT ?)",
                    (MAX_PAST_ACTIONS,))

    def actions(self, limit: int = MAX_PAST_ACTIONS) -> list[dict]:
        """Action rows, newest first."""
        with self._lock, self._errors():
            rows = self._x(self._db, "SELECT id, json FROM actions ORDER BY id DESC LIMIT ?",
                           (limit,)).fetchall()
        return [{**json.loads(r[1]), "id": r[0]} for r in rows]


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL,
    host TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_task ON results (task_id, host, ts);
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    id BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (name TEXT PRIMARY KEY, json TEXT NOT NULL)
"""
#: ``pg_advisory_lock`` keys: one serialises schema creation, one is the leader's
SCHEMA_LOCK = 0x4D534348  # "MSCH"
LEADER_LOCK = 0x4D4C4452  # "MLDR"


def redact(url: str) -> str:
    """``url`` without its password (what logs and errors show)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PgStore(Store):
    """The same store on a PostgreSQL server (``postgresql://user@host/db``).

    Several controllers may share it; :meth:`try_lead` takes the leader's
    advisory lock on a connection of its own, so the lock is released by the
    server when the leader's process (or its connection) dies.
    """

    ROWID = "id"
    BEGIN = "BEGIN"

    def __init__(self, url: str, history: int = 100, max_events: int = 10000,
                 connect_timeout: int = 5) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url, self.path = url, redact(url)
        self.history, self.max_events = history, max_events
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._leader: Any = None
        with self._errors():
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout)
        try:
            self._open()
        except StoreError:
            self._db.close()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise StoreError(f"store {self.path}: {str(exc).strip()}") from None

    def is_shared(self) -> bool:
        return True

    def _x(self, db: Any, sql: str, params: tuple = ()) -> Any:
        return db.execute(sql.replace("{rowid}", self.ROWID).replace("?", "%s"), params)

    @staticmethod
    def _unique_violation(exc: StoreError, column: str) -> bool:
        return f'unique constraint "tasks_{column}_key"' in str(exc)

    def _open(self) -> None:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            _create_schema(db, _PG_SCHEMA, "%s", self.path)

    def try_lead(self) -> bool:
        """Hold the leader's lock (taken once, kept while this connection lives)."""
        with self._lock:
            try:
                if self._leader is not None:
                    self._leader.execute("SELECT 1")
                    return True
                conn = self._psycopg.connect(self.url, autocommit=True,
                                             connect_timeout=self.connect_timeout)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                if row is not None and row[0]:
                    self._leader = conn
                    return True
                conn.close()
                return False
            except self._psycopg.Error:
                if self._leader is not None:
                    self._leader.close()
                self._leader = None
                return False

    def close(self) -> None:
        with self._lock:
            if self._leader is not None:
                self._leader.close()
                self._leader = None
            self._db.close()
