"""Connection limits and deadlines for the project's HTTP servers (agent and controller).

Both servers are ``eventlet.wsgi.server``: the agent starts it itself, the
controller through Ryu (``ryu.lib.hub.WSGIServer``), whose call the launcher
routes through ``guarded_server``. Unguarded, eventlet hands every accepted
connection to a green pool and stops accepting once the pool is full; a
connection that sends half a request and waits holds its slot forever (no
socket timeout), so a few hundred idle sockets wedged the agent and 1,030
wedged the controller, health and signed control traffic included.

The guard, one place for both servers:

- **Header deadline.** A request line and its headers must arrive within
  ``header_timeout`` seconds of the connection (or, on a kept-alive
  connection, of the previous answer plus ``idle_timeout``); a trickle of
  bytes does not extend it. A late request is cut off without an answer.
- **Body deadline.** The body must be read within ``body_timeout`` seconds
  of the headers; each read also has the per-read ``socket_timeout``.
- **Idle timeout.** A kept-alive connection with no new request for
  ``idle_timeout`` seconds is closed.
- **Per-source cap.** One source address holds at most ``per_source``
  connections; more are closed at once.
- **Bounded pool that sheds the newest.** At most ``max_connections``
  connections are served. The last ``reserved`` of them are kept for
  *control* sources (``trusted``: the loopback, the controller for an agent,
  registered agents for the controller). A new connection that finds no slot
  it may take is closed at once, so the accept loop never blocks and the
  connections already being served are never dropped for it.

``GuardLimits`` holds the numbers; ``Guard`` the live counts (``stats()``
feeds health and metrics). Nothing here imports Ryu.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import resource
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import eventlet
import eventlet.wsgi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardLimits:
    """The numbers of one server's guard (seconds and connection counts)."""

    max_connections: int = 512
    reserved: int = 64
    per_source: int = 32
    header_timeout: float = 5.0
    body_timeout: float = 15.0
    socket_timeout: float = 10.0
    idle_timeout: float = 15.0

    def __post_init__(self) -> None:
        if not 1 <= self.reserved < self.max_connections:
            raise ValueError("reserved must be at least 1 and below max_connections")
        if self.per_source < 1:
            raise ValueError("per_source must be at least 1")
        for name in ("header_timeout", "body_timeout", "socket_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


AGENT_LIMITS = GuardLimits(max_connections=256, reserved=32, per_source=32)
CONTROLLER_LIMITS = GuardLimits(max_connections=1024, reserved=128, per_source=64)

# the controller's REST server guard (the launcher routes Ryu's server through
# it; the app tells it which sources are agents)
CONTROLLER_GUARD: Guard  # defined below, once Guard exists

# eventlet's own server, before the launcher routes eventlet.wsgi.server here
_EVENTLET_SERVER = eventlet.wsgi.server

_LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


def source_ip(addr: Any) -> str:
    """The address part of an accepted socket's peer (IPv4, IPv6 or a path)."""
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return str(addr)


@dataclass
class Guard:
    """Admission and live counts of one server (see the module docstring).

    Only green threads of one process use it, so it takes no lock (nothing
    here yields).

    ``trusted(ip)`` says whether a source is control traffic; it is asked
    on every accept, so it must be cheap. ``127.0.0.1`` and ``::1`` are
    always trusted.
    """

    limits: GuardLimits = field(default_factory=GuardLimits)
    trusted: Callable[[str], bool] = lambda ip: False
    active: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    shed_source: int = 0
    shed_full: int = 0
    deadline_cut: int = 0

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if any(addr in net for net in _LOOPBACK):
            return True
        try:
            return bool(self.trusted(str(addr)))
        except Exception:  # noqa: BLE001 - a failing hook must not stop accepting
            log.exception("server guard: trusted-source check failed")
            return False

    def admit(self, ip: str) -> bool:
        """Take a slot for a new connection from ``ip``; False: close it at once."""
        trusted = self.is_trusted(ip)
        lim = self.limits
        if not trusted and self.per_source.get(ip, 0) >= lim.per_source:
            self.shed_source += 1
            return False
        room = lim.max_connections if trusted else lim.max_connections - lim.reserved
        if self.active >= room:
            self.shed_full += 1
            return False
        self.active += 1
        self.per_source[ip] = self.per_source.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.active -= 1
        left = self.per_source.get(ip, 0) - 1
        if left > 0:
            self.per_source[ip] = left
        else:
            self.per_source.pop(ip, None)

    def stats(self) -> dict[str, int]:
        """Live and cumulative counts: ``active``, ``sources``, ``shed_source``,
        ``shed_full``, ``deadline_cut``."""
        return {"active": self.active, "sources": len(self.per_source),
                "shed_source": self.shed_source, "shed_full": self.shed_full,
                "deadline_cut": self.deadline_cut}


CONTROLLER_GUARD = Guard(CONTROLLER_LIMITS)


class GuardedListener:
    """A listening socket whose ``accept`` returns only admitted connections.

    Refused connections are closed before eventlet sees them, so its accept
    loop never waits for a pool slot.
    """

    def __init__(self, sock: Any, guard: Guard) -> None:
        self._sock = sock
        self._guard = guard

    def accept(self) -> tuple[Any, Any]:
        while True:
            try:
                conn, addr = self._sock.accept()
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # out of descriptors: the connection waits in the backlog, the loop lives on
                log.warning("server guard: accept failed (%s); retrying", exc.strerror)
                eventlet.sleep(0.05)
                continue
            if self._guard.admit(source_ip(addr)):
                return conn, addr
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GuardedPool(eventlet.GreenPool):
    """eventlet's pool with one more slot than the guard admits (so ``spawn``
    never blocks the accept loop), releasing the guard's slot when a
    connection ends."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard.limits.max_connections + 1)
        self._guard = guard

    def spawn(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        conn_state = args[0]
        ip = source_ip(conn_state[0])
        thread = super().spawn(function, *args, **kwargs)
        thread.link(lambda _gt: self._guard.release(ip))
        return thread


class _DeadlineInput:
    """``wsgi.input`` whose reads fail once the body deadline has passed."""

    def __init__(self, inner: Any, deadline: float, on_cut: Callable[[], None]) -> None:
        self._inner = inner
        self._deadline = deadline
        self._on_cut = on_cut

    def _call(self, name: str, *args: Any) -> Any:
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._on_cut()
            raise TimeoutError("request body deadline passed")
        try:
            with eventlet.Timeout(left, TimeoutError("request body deadline passed")):
                return getattr(self._inner, name)(*args)
        except TimeoutError:
            self._on_cut()
            raise

    def read(self, *args: Any) -> Any:
        return self._call("read", *args)

    def readline(self, *args: Any) -> Any:
        return self._call("readline", *args)

    def readlines(self, *args: Any) -> Any:
        return self._call("readlines", *args)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP protocol with the header and body deadlines."""

    guard: Guard  # set on the per-server subclass

    def handle_one_request(self) -> None:
        lim = self.guard.limits
        first = not getattr(self, "_measure_served", False)
        self._measure_served = True
        wait = lim.header_timeout if first else lim.idle_timeout + lim.header_timeout
        self._measure_header_timer = eventlet.Timeout(
            wait, TimeoutError("request header deadline passed"))
        try:
            super().handle_one_request()
        except TimeoutError:
            self.guard.deadline_cut += 1
            self.close_connection = 1
        finally:
            self._measure_header_timer.cancel()

    def get_environ(self) -> dict[str, Any]:
        # called once the request line and headers are parsed: the header
        # deadline ends here and the body deadline starts
        self._measure_header_timer.cancel()
        environ = super().get_environ()
        deadline = time.monotonic() + self.guard.limits.body_timeout
        conn = self.connection

        def cut() -> None:
            self.guard.deadline_cut += 1
            self.close_connection = 1
            try:  # no answer for a request whose body never came
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], deadline, cut)
        return environ


BACKLOG = 1024


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def guarded_server(sock: Any, site: Any, guard: Guard, **kwargs: Any) -> None:
    """``eventlet.wsgi.server(sock, site, ...)`` behind ``guard`` (runs until killed).

    The listen backlog grows to ``BACKLOG`` (a flood of connections is drained
    by shedding, but a backlog of 50 would drop control SYNs meanwhile) and
    the open-file limit to its hard limit.
    """
    raise_fd_limit()
    with contextlib.suppress(OSError):
        sock.listen(BACKLOG)
    protocol = type("MeasureGuardedProtocol", (GuardedProtocol,), {"guard": guard})
    kwargs.pop("max_size", None)
    kwargs.update(custom_pool=GuardedPool(guard), protocol=protocol,
                  socket_timeout=guard.limits.socket_timeout,
                  keepalive=guard.limits.idle_timeout)
    kwargs.setdefault("debug", False)
    _EVENTLET_SERVER(GuardedListener(sock, guard), site, **kwargs)
