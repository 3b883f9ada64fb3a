"""How the overlay role talks and runs things concurrently (``overlay_node``).

Transport: an object with ``put/post/delete(url, json=..., timeout=...)``
returning ``(status, body)``; ``RequestsTransport`` uses ``requests`` (with
an optional ``auth`` such as ``measure_model.auth.HmacAuth``).

Runners: ``map(fn, items)`` runs ``fn`` on every item concurrently and waits
for all (task fan-out to the children), ``submit(fn)`` runs it in the
background (sending a report up). ``default_runner`` picks eventlet's
GreenPool when eventlet has patched sockets (the agent's wsgi server), else
a thread pool; tests and the in-process benchmark use ``InlineRunner``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class RequestsTransport:
    """HTTP with ``requests``: ``(status, parsed JSON or text)``."""

    def __init__(self, auth: Any = None) -> None:
        import requests

        self._session = requests.Session()
        self._auth = auth

    def _call(self, method: str, url: str, json: Any, timeout: float) -> tuple[int, Any]:
        resp = self._session.request(method, url, json=json, timeout=timeout, auth=self._auth)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def put(self, url: str, json: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        return self._call("PUT", url, json, timeout)

    def post(self, url: str, json: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        return self._call("POST", url, json, timeout)

    def delete(self, url: str, json: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        return self._call("DELETE", url, json, timeout)


class InlineRunner:
    """Runs everything in the caller, in order (tests, in-process bench)."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return [fn(item) for item in items]

    def submit(self, fn: Callable[[], Any]) -> None:
        fn()


class ThreadRunner:
    """A small thread pool: ``map`` waits for all, ``submit`` does not."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="overlay")

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def submit(self, fn: Callable[[], Any]) -> None:
        self._pool.submit(fn)


class GreenRunner:
    """eventlet GreenPool, for an agent whose sockets eventlet has patched."""

    def __init__(self, workers: int = 64) -> None:
        import eventlet

        self._pool = eventlet.GreenPool(workers)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._pool.imap(fn, items))

    def submit(self, fn: Callable[[], Any]) -> None:
        self._pool.spawn_n(fn)


def default_runner() -> InlineRunner | ThreadRunner | GreenRunner:
    """GreenPool under eventlet's socket patching, else threads."""
    try:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            return GreenRunner()
    except ImportError:
        pass
    return ThreadRunner()
