"""The one concurrency runner of the controller and the agents.

Both processes fan requests out to several peers (the controller's overlay
pushes, an agent forwarding a task to its children) and run work in the
background (a report sent up, a bandwidth job), and both run under
eventlet's monkey patching in production but plainly in unit tests. A
``Runner`` has two calls:

- ``map(fn, items)`` runs ``fn`` on every item concurrently and returns the
  results in order once all are done;
- ``submit(fn)`` runs ``fn`` in the background and returns at once.

``GreenRunner`` uses an eventlet ``GreenPool`` (the sockets are green, so
waiting for one peer does not block the others); ``ThreadRunner`` a thread
pool; ``InlineRunner`` runs everything in the caller, in order, which makes
unit tests and the in-process benchmark deterministic. ``default_runner``
picks the green one exactly when eventlet has patched sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol


class Runner(Protocol):
    """Concurrent fan-out and background work (see the module docstring)."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, run concurrently."""
        ...

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` in the background."""
        ...


class InlineRunner:
    """Runs everything in the caller, in order (tests, in-process bench)."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return [fn(item) for item in items]

    def submit(self, fn: Callable[[], Any]) -> None:
        fn()


class ThreadRunner:
    """A small thread pool: ``map`` waits for all, ``submit`` does not."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runner")

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def submit(self, fn: Callable[[], Any]) -> None:
        self._pool.submit(fn)


class GreenRunner:
    """An eventlet GreenPool, for a process whose sockets eventlet has patched."""

    def __init__(self, workers: int = 64) -> None:
        import eventlet

        self._pool = eventlet.GreenPool(workers)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._pool.imap(fn, items))

    def submit(self, fn: Callable[[], Any]) -> None:
        self._pool.spawn_n(fn)


def default_runner(inline_without_eventlet: bool = False) -> Runner:
    """A GreenPool under eventlet's socket patching, else a thread pool.

    ``inline_without_eventlet`` asks for ``InlineRunner`` instead of threads
    outside eventlet: the controller's service is then driven step by step
    by its caller (unit tests, tools), as under Ryu it is by the hub.
    """
    from eventlet import patcher  # imported here: a plain process need not load eventlet

    if patcher.is_monkey_patched("socket"):
        return GreenRunner()
    return InlineRunner() if inline_without_eventlet else ThreadRunner()
