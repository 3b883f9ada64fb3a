"""Test helpers shared by every tier: polling, namespaces, processes.

Everything that creates system state (namespaces, veth pairs, processes)
returns something whose clean-up is guaranteed by the fixtures in
``conftest.py``, even when a test fails.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.05, message: str = "") -> object:
    """Poll ``predicate`` until it returns a truthy value; return that value.

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
            raise TimeoutError(f"timed out after {timeout}s: {message}{detail}")
        time.sleep(interval)


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], check: bool = True, timeout: float = 30.0,
        **kw) -> subprocess.CompletedProcess:
    """Run an argument list (never a shell string) and capture text output."""
    return subprocess.run(cmd, check=check, timeout=timeout, capture_output=True,
                          text=True, **kw)


_counter = itertools.count()


def unique_name(prefix: str) -> str:
    """A short unique name (interface names are limited to 15 bytes)."""
    return f"{prefix}{os.getpid() % 1000:03d}{next(_counter)}{uuid.uuid4().hex[:3]}"[:15]


@dataclass
class Netns:
    """A network namespace created by a test."""

    name: str
    ip: str = ""
    intf: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)

    def cmd(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, args: list[str], check: bool = True, timeout: float = 30.0,
            **kw) -> subprocess.CompletedProcess:
        return run(self.cmd(args), check=check, timeout=timeout, **kw)

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.cmd(args), start_new_session=True, **kw)
        self.procs.append(proc)
        return proc


def kill_proc(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop a process group politely, then firmly."""
    if proc.poll() is not None:
        return
    for sig, wait in ((15, timeout), (9, timeout)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
