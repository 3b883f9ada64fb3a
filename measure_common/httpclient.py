"""The one HTTP client of the project's processes (controller and agents).

Every request between our processes goes through ``HttpClient.request``:
the controller's pushes to agents (overlay placements, tasks, deletions,
bandwidth requests), an agent's reports to its parent or the controller,
its registration and heartbeats, and the agent-to-agent calls of a
bandwidth probe. One client means one place that signs requests (an
optional ``requests`` auth such as ``measure_common.auth.HmacAuth``), one
answer shape and one error type:

- ``request(method, url, json=None, timeout=...)`` returns ``(status,
  body)`` for any HTTP answer, ``body`` being the parsed JSON or, when the
  answer is not JSON, at most 500 characters of its text;
- a request that got no answer raises ``Unreachable`` (a ``ConnectionError``)
  whose ``reason`` says ``refused``, ``timeout`` or ``error``, so callers map
  it to their own status without knowing ``requests``.

``Transport`` is the Protocol the callers type against; unit tests pass
in-memory routers with the same ``request`` method. Under eventlet's
monkey patching the sockets ``requests`` opens are green, so one slow peer
delays only the green thread talking to it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

DEFAULT_TIMEOUT = 5.0
TEXT_LIMIT = 500
#: peers (scheme, host, port) whose keep-alive connections are kept; the least recently
#: used peer's are closed past this (the controller talks to every agent)
POOL_PEERS = 64
#: idle keep-alive connections kept per peer (more concurrent calls open and close theirs,
#: and urllib3 logs a warning for each): an agent's runner has 8 workers, and its heartbeat
#: and the API's calls come on top (with 8, an overlay root reporting 12 tasks discarded
#: about one connection a second to the controller and logged each)
POOL_PER_PEER = 16
#: a peer not called for this long has its kept connections closed (s): the overlay
#: moves agents, and a former parent's or child's idle sockets would stay open for ever
#: (the 20-minute soak saw an overlay parent's open fds grow 76% over its faults)
POOL_IDLE_CLOSE = 60.0
#: a kept connection idle for this long is closed (s): under the servers' idle timeout
#: (15 s, ``measure_common.serverguard``), which would close it first and leave the
#: client's socket in CLOSE_WAIT until the pool hands that connection out again
KEEP_IDLE = 10.0


class Unreachable(ConnectionError):
    """No HTTP answer: ``reason`` is ``refused``, ``timeout`` or ``error``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Transport(Protocol):
    """What every caller of another process needs: one request, one answer."""

    def request(self, method: str, url: str, json: Any = None,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[int, Any]:
        """``(status, parsed body)``; raises ``ConnectionError`` without an answer."""
        ...


class _KeptQueue(queue.LifoQueue):
    """urllib3's pool of kept connections, newest first, that closes a connection kept
    idle for ``KEEP_IDLE`` s. urllib3 hands out the newest, so after a burst the older
    ones wait at the bottom until the server's idle timeout closes them and their
    sockets sit in CLOSE_WAIT, a file descriptor each (an overlay parent held 10 after
    a few faults). Each put and get closes the stale ones by age alone: a socket
    close, with the queue's lock held but nothing that waits or switches threads."""

    def _put(self, item: Any) -> None:
        now = time.monotonic()
        if item is not None:
            item.kept_at = now
        for conn in self.queue:
            if conn is not None and conn.sock is not None and now - conn.kept_at > KEEP_IDLE:
                conn.close()  # a closed connection stays in the pool and connects anew
        super()._put(item)

    def _get(self) -> Any:
        conn = super()._get()
        if conn is not None and conn.sock is not None \
                and time.monotonic() - conn.kept_at > KEEP_IDLE:
            conn.close()
        return conn


class _KeptHTTPPool(urllib3.HTTPConnectionPool):
    QueueCls = _KeptQueue


class _KeptHTTPSPool(urllib3.HTTPSConnectionPool):
    QueueCls = _KeptQueue


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _KeptHTTPPool,
                                                   "https": _KeptHTTPSPool}


class HttpClient:
    """``requests`` behind ``Transport``, with an optional signing ``auth``."""

    def __init__(self, auth: Any = None) -> None:
        self._session = requests.Session()
        # bounded pools that reuse connections: at most POOL_PEERS x POOL_PER_PEER idle
        # sockets whatever the number of peers and of concurrent calls (never blocking),
        # none kept longer than KEEP_IDLE
        adapter = _Adapter(pool_connections=POOL_PEERS, pool_maxsize=POOL_PER_PEER,
                           pool_block=False)
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, adapter)
        self._adapter = adapter
        self._auth = auth
        self._used: dict[tuple[str, str, int], float] = {}  # peer -> last call
        self._swept = time.monotonic()
        self._lock = threading.Lock()

    def _close_idle(self, url: str, now: float) -> None:
        """Note the call to ``url``'s peer; at most every ``POOL_IDLE_CLOSE / 2`` s,
        close the kept connections of the peers not called for ``POOL_IDLE_CLOSE``."""
        parts = urlsplit(url)
        peer = (parts.scheme, parts.hostname or "",
                parts.port or (443 if parts.scheme == "https" else 80))
        with self._lock:
            self._used[peer] = now
            if now - self._swept < POOL_IDLE_CLOSE / 2:
                return
            self._swept = now
            idle = {p for p, t in self._used.items() if now - t > POOL_IDLE_CLOSE}
            for p in idle:
                del self._used[p]
        if not idle:
            return
        pools = self._adapter.poolmanager.pools
        for key in list(pools.keys()):  # urllib3's PoolKey: key_scheme, key_host, key_port
            if (key.key_scheme, key.key_host.strip("[]"), key.key_port) in idle:
                pools.pop(key, None)  # the container closes the pool's sockets

    def request(self, method: str, url: str, json: Any = None,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[int, Any]:
        """Send one request; see the module docstring for the answer and errors."""
        self._close_idle(url, time.monotonic())
        try:
            resp = self._session.request(method.upper(), url, json=json,
                                         timeout=max(0.05, timeout), auth=self._auth)
        except requests.Timeout:
            raise Unreachable(f"{method.upper()} {url}: timeout after {timeout:g} s",
                              "timeout") from None
        except requests.ConnectionError as exc:
            refused = isinstance(_root_cause(exc), ConnectionRefusedError)
            reason = "refused" if refused else "error"
            text = "connection refused" if refused else type(exc).__name__
            raise Unreachable(f"{method.upper()} {url}: {text}", reason) from None
        except requests.RequestException as exc:
            raise Unreachable(f"{method.upper()} {url}: {type(exc).__name__}", "error") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text[:TEXT_LIMIT]


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception ``requests``/``urllib3`` wrapped (refused or not)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.__context__ or (exc.args[0] if exc.args and isinstance(
                exc.args[0], BaseException) else None)
        if inner is None:
            return exc
        exc = inner
    return exc
