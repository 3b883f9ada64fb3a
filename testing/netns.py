"""Test helpers shared by every tier: commands, unique names, namespaces.

Everything that creates system state (namespaces, veth pairs, processes)
returns something whose clean-up is guaranteed by the fixtures in
``conftest.py``, even when a test fails. Polling, ports and stopping
processes are in ``testing.procs`` (shared with the launcher and bench).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    ip6: str = ""
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
