"""The agent's end of the monitor IPC: one monitor subprocess and its socket.

The agent starts ``python -m host_agent.monitor`` with fork+exec and one end
of a Unix socketpair (see ``monitor.py`` for why and for the protocol: one
JSON object per line, strictly request/response). :meth:`MonitorProcess.call`
sends one request and waits for its reply (bounded by ``timeout``); a dead
or hung monitor is a ``MonitorError``, a request the monitor refuses is an
``AgentError`` 400.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

from host_agent.errors import AgentError, MonitorError


class MonitorProcess:
    """A monitor subprocess and its command socket (see monitor.py for the protocol)."""

    def __init__(self, queue: int, max_len: int = 4096, timeout: float = 10.0,
                 extra_args: list[str] | None = None) -> None:
        self.queue, self.max_len, self.timeout = queue, max_len, timeout
        self.extra = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.reader: Any = None
        self.lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "host_agent.monitor", "--queue", str(self.queue),
               "--fd", str(child.fileno()), "--max-len", str(self.max_len), *self.extra]
        self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        parent.settimeout(self.timeout)
        self.sock, self.reader = parent, parent.makefile("rb")
        self.call({"op": "ping"})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, msg: dict) -> Any:
        if self.sock is None:
            raise MonitorError("monitor not started")
        with self.lock:
            try:
                self.sock.sendall(json.dumps(msg).encode() + b"\n")
                line = self.reader.readline()
            except OSError as exc:
                raise MonitorError(f"monitor on queue {self.queue}: {exc}") from None
        if not line:
            raise MonitorError(f"monitor on queue {self.queue} is not running")
        reply = json.loads(line)
        if not reply.get("ok"):  # the monitor refuses bad input (e.g. a bad key)
            if reply.get("internal"):
                raise MonitorError(f"monitor on queue {self.queue}: {reply.get('error')}")
            raise AgentError(400, reply.get("error", "monitor refused the request"))
        return reply.get("result")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
