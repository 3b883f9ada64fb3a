"""Process and port helpers shared by the launcher, the tests, the benchmarks and the demo.

One copy of the small things every harness of this project needs:

- ``free_port`` / ``port_open`` / ``wait_for_port``: pick a free TCP port on
  the loopback, probe one, wait until one listens;
- ``wait_until``: poll a predicate until it holds (exceptions count as "not
  yet"), raising ``TimeoutError`` that names what was awaited;
- ``stop_process``: stop a child and its process group (children are
  started with ``start_new_session=True``), politely first, then firmly;
- ``mininet_lock``: the machine-wide lock that lets one Mininet network
  exist at a time (interface and bridge names would clash otherwise);
- ``install_signal_handlers`` / ``signals_deferred``: SIGTERM and SIGHUP
  unwind like Ctrl-C so every ``finally`` cleans up, and clean-up itself is
  not interrupted.

It lives in ``topo`` (a package setuptools installs) so that ``bench/`` and
``examples/`` use it without importing ``tests/``. No Mininet import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

LOCK_PATH = "/tmp/endhost-measure-mininet.lock"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


T = TypeVar("T")


def wait_until(predicate: Callable[..., T | None], timeout: float = 10.0,
               interval: float = 0.05, message: str = "") -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    ``predicate`` is called without arguments (typed ``...`` so that a lambda
    may bind loop variables as defaults).

    Exceptions raised by the predicate count as "not yet". On timeout raise
    ``TimeoutError`` carrying ``message`` and the last exception seen.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}{detail}")
        time.sleep(interval)


def wait_for_port(host: str, port: int, timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Wait until ``host:port`` listens; fail at once if ``proc`` exits first."""
    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise ChildProcessError(f"process exited with {proc.returncode}")
        return port_open(host, port)

    deadline = time.monotonic() + timeout
    while not up():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {host}:{port}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0,
                 signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL)) -> None:
    """Stop ``proc`` and its process group: each of ``signals`` in turn, waiting
    ``timeout`` seconds after each. Safe on a process that already exited."""
    if proc.poll() is not None:
        return
    for sig in signals:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:  # not a group leader we may signal: the process alone
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def stopped_after(stop: Callable[[T], None], log: Callable[[T], str],
                  what: str) -> Iterator[list[T]]:
    """The list a fixture appends the processes it starts to. At the end every one is
    stopped, then the test fails if one of them logged a traceback."""
    started: list[T] = []
    yield started
    for proc in started:
        stop(proc)
    for proc in started:
        text = log(proc)
        assert "Traceback" not in text, f"{what} logged a traceback:\n{text}"


@contextlib.contextmanager
def mininet_lock(on_wait: Callable[[], None] | None = None,
                 path: str = LOCK_PATH) -> Iterator[float]:
    """Hold the machine's Mininet lock; yields the seconds spent waiting for it.

    ``on_wait`` is called once when another holder makes us wait (to say so).
    """
    start = time.monotonic()
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield round(time.monotonic() - start, 1)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def signals_deferred():
    """Ignore SIGINT/SIGTERM while cleaning up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _raise_on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every ``finally`` cleans up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
