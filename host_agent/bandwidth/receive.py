"""The destination side of a bandwidth probe: receive sessions.

``POST /agent/v1/bandwidth/receive`` opens a session: one probe worker
process (:class:`host_agent.bandwidth.worker.Worker`) with a UDP (SLoPS) or TCP
(bulk) socket, whose port goes back to the source agent; ``GET
.../receive/{session}?streams=...`` returns the arrival data, ``DELETE``
closes it. Sessions are capped in number (``MAX_RECEIVE_SESSIONS``) and in
lifetime (``MAX_RECEIVE_SECONDS``); one that outlived its time is closed the
next time the table is looked at, and its worker exits by itself anyway.
One ``ReceiveSessions`` belongs to one agent.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from host_agent.bandwidth.worker import Worker, WorkerError
from host_agent.errors import AgentError

MAX_RECEIVE_SESSIONS = 4
MAX_RECEIVE_SECONDS = 65.0
METHODS = ("slops", "bulk")


@dataclass
class Session:
    """One open receive session: its worker, port and expiry (monotonic)."""

    worker: Worker
    port: int
    expires: float


class ReceiveSessions:
    """The receive sessions of one agent (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[str, Session] = {}

    def live(self) -> dict[str, Session]:
        """The open sessions, after closing those past their time."""
        with self._lock:
            for sid, sess in list(self._table.items()):
                if sess.expires < time.monotonic():
                    sess.worker.close()
                    del self._table[sid]
            return dict(self._table)

    def open(self, body: Any) -> dict[str, Any]:
        """Open a receive session for a probe towards this agent."""
        if not isinstance(body, dict):
            raise AgentError(400, "body must be a JSON object")
        method = body.get("method", "slops")
        if method not in METHODS:
            raise AgentError(400, f"field 'method' must be one of {', '.join(METHODS)}")
        duration = body.get("duration", 12.0)
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise AgentError(400, "field 'duration' must be a number")
        if not 1 <= duration <= MAX_RECEIVE_SECONDS:
            raise AgentError(400, "field 'duration' must be between 1 and "
                                      f"{MAX_RECEIVE_SECONDS:g}")
        open_now = len(self.live())
        if open_now >= MAX_RECEIVE_SESSIONS:
            raise AgentError(503, f"receiver busy: {open_now} probe sessions open")
        worker = Worker(lifetime=duration)
        session = secrets.token_hex(4)
        try:
            port = worker.call({"op": "recv_open", "session": int(session, 16),
                                "proto": "tcp" if method == "bulk" else "udp"},
                               timeout=3)["port"]
        except WorkerError as exc:
            worker.close()
            raise AgentError(500, f"cannot open a receive socket: {exc}") from None
        with self._lock:
            self._table[session] = Session(worker, port, time.monotonic() + duration)
        return {"session": session, "port": port, "method": method}

    def _session(self, session: str) -> Session:
        sess = self.live().get(session)
        if sess is None:
            raise AgentError(404, f"no receive session {session!r}")
        return sess

    def fetch(self, session: str, streams: str | None) -> dict[str, Any]:
        """Arrival data of the requested streams (comma-separated ids)."""
        sess = self._session(session)
        try:
            ids = [int(s) for s in streams.split(",") if s] if streams else []
        except ValueError:
            raise AgentError(400, "parameter 'streams' must be comma-separated "
                                      "integers") from None
        try:
            return sess.worker.call({"op": "recv_fetch", "streams": ids}, timeout=3)
        except WorkerError as exc:
            raise AgentError(500, f"receive session {session} failed: {exc}") from None

    def close(self, session: str) -> dict[str, Any]:
        """Close a receive session and stop its worker."""
        sess = self._session(session)
        with self._lock:
            self._table.pop(session, None)
        sess.worker.close()
        return {"session": session, "closed": True}

    def close_all(self) -> None:
        """Stop every worker (the agent is stopping)."""
        with self._lock:
            sessions, self._table = list(self._table.values()), {}
        for sess in sessions:
            sess.worker.close()
