"""The one channel between the agent and its child processes.

The agent runs its per-packet loop (``python -m host_agent.monitor``) and its
bandwidth probe I/O (``python -m host_agent.bandwidth.worker``) in child
processes started with fork+exec, so nothing eventlet-patched is inherited
and neither shares a GIL with HTTP handling. Both speak the same protocol
over one end of a Unix ``socketpair`` handed over as ``--fd N``:

- framing: one JSON object per line (UTF-8), strictly request/response, one
  reply line per request line. JSON rather than pickle: replies are plain
  data, unpickling is code execution if either side is ever compromised, and
  a line is easy to read in a trace;
- a request is ``{"op": name, ...}``;
- a reply is ``{"ok": true, "result": ...}``, or ``{"ok": false, "error": msg}``
  when the child refuses the request (bad input: ``KeyError``, ``ValueError``,
  ``TypeError`` in its handler), or ``{"ok": false, "internal": true, "error":
  msg}`` when the handler failed in another way (the child keeps serving).

:class:`ChildProcess` is the agent's end: :meth:`ChildProcess.call` sends one
request and waits for its reply, bounded by a timeout. It waits with
``select.select`` and ``os.read`` looked up at call time, which works in a
plain process and under eventlet's monkey patching alike. A child that
died, hung past the timeout or broke the framing is :class:`ChildGone` (and
is killed); a refused request is :class:`Refused`. :class:`ServerChannel` is
the child's end (non-blocking reads inside its own ``select`` loop) and
:func:`reply_for` maps a handler's outcome to a reply, the same way for every
child.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE = 64 << 20  # a reply larger than this breaks the framing


class ChildGone(RuntimeError):
    """The child is not running, did not answer in time, or broke the framing."""


class Refused(Exception):
    """The child refused the request; the message says why (bad input)."""


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def reply_for(handler: Callable[[dict[str, Any]], Any], msg: dict[str, Any]) -> dict[str, Any]:
    """Run ``handler(msg)`` and turn its outcome into a reply object."""
    try:
        return {"ok": True, "result": handler(msg)}
    except KeyError as exc:  # str() of a KeyError quotes its message
        return {"ok": False, "error": str(exc.args[0]) if exc.args else "KeyError"}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any other failure is reported, the child serves on
        log.exception("ipc: %s failed", msg.get("op"))
        return {"ok": False, "internal": True, "error": repr(exc)}


class ServerChannel:
    """The child's end: line-delimited JSON over the inherited socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        sock.setblocking(False)

    @classmethod
    def from_fd(cls, fd: int) -> ServerChannel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[dict[str, Any]] | None:
        """Complete requests available now; None when the agent hung up."""
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buf += data
        lines = self.buf.split(b"\n")
        self.buf = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]

    def reply(self, obj: dict[str, Any]) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(encode(obj))
        finally:
            self.sock.setblocking(False)

    def serve(self, msgs: list[dict[str, Any]],
              handler: Callable[[dict[str, Any]], Any]) -> None:
        for msg in msgs:
            self.reply(reply_for(handler, msg))

    def close(self) -> None:
        self.sock.close()


class ChildProcess:
    """A child ``python -m module args... --fd N`` and the agent's end of its socket."""

    def __init__(self, module: str, args: list[str], name: str, timeout: float = 10.0,
                 prefix: list[str] | None = None) -> None:
        self.module, self.args, self.name, self.timeout = module, args, name, timeout
        self.prefix = prefix or []  # e.g. ``ip netns exec NAME`` (exec keeps the fd)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.buf = b""
        self.lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        parent, child = socket.socketpair()
        # -X faulthandler: a child killed by a fault in C code (libbpf, libnetfilter_queue)
        # leaves its Python stack on the agent's stderr instead of vanishing silently
        cmd = [*self.prefix, sys.executable, "-X", "faulthandler", "-m", self.module,
               *self.args, "--fd", str(child.fileno())]
        self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self.sock, self.buf = parent, b""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, msg: dict[str, Any], timeout: float | None = None) -> Any:
        """Send one request and return its result (``Refused`` / ``ChildGone`` otherwise)."""
        if self.sock is None:
            raise ChildGone(f"{self.name} not started")
        with self.lock:
            line = self._exchange(encode(msg), self.timeout if timeout is None else timeout,
                                  msg.get("op"))
        try:
            reply = json.loads(line)
        except ValueError:
            self.stop()
            raise ChildGone(f"{self.name} broke the framing: {line[:80]!r}") from None
        if reply.get("ok"):
            return reply.get("result")
        if reply.get("internal"):
            raise ChildGone(f"{self.name}: {reply.get('error')}")
        raise Refused(reply.get("error", f"{self.name} refused the request"))

    def _exchange(self, data: bytes, timeout: float, op: Any) -> bytes:
        assert self.sock is not None
        fd = self.sock.fileno()
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ChildGone(f"{self.name}: {exc}{self._exit_status()}") from None
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                self.stop()
                raise ChildGone(f"{self.name} did not answer {op} within {timeout:.1f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ChildGone(f"{self.name}: {exc}{self._exit_status()}") from None
            if not chunk:
                raise ChildGone(f"{self.name} is not running{self._exit_status()}")
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                self.stop()
                raise ChildGone(f"{self.name} sent a reply over {MAX_LINE} bytes")
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def _exit_status(self, wait: float = 1.0) -> str:
        """How the child ended (``; exited with 1``, ``; killed by SIGSEGV``), '' if unknown."""
        if self.proc is None:
            return ""
        try:
            code = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return ""
        if code < 0:
            try:
                return f"; killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"; killed by signal {-code}"
        return f"; exited with {code}"

    def stop(self, grace: float = 5.0) -> None:
        """Close the socket (the child exits on hang-up), then terminate and kill."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
