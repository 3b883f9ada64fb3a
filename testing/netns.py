"""Test helpers shared by every tier: commands, unique names, namespaces.

Everything that creates system state (namespaces, veth pairs, processes)
returns something whose clean-up is guaranteed by the fixtures in
``conftest.py``, even when a test fails. Polling, ports and stopping
processes are in ``testing.procs`` (shared with the launcher and bench).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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


@contextlib.contextmanager
def measure_network(tmp_path_factory: Any, name: str, **options: Any) -> Iterator[Any]:
    """A module's ``MeasureNetwork`` (tree depth 2 fanout 3 with an agent on every host
    unless ``options`` say otherwise) under the machine's Mininet lock, stopped at the
    end; then fails if the controller or an agent logged a traceback."""
    from testing.procs import free_port, mininet_lock
    from topo.launch import MeasureNetwork, Options

    with mininet_lock():
        run_dir = tmp_path_factory.mktemp(name)
        settings = {"topo": "tree", "depth": 2, "fanout": 3, "agents": True, "timeout": 120,
                    **options}
        mn = MeasureNetwork(Options(**settings, lock=False, controller_port=free_port(),
                                    rest_port=free_port(), run_dir=str(run_dir)))
        try:
            mn.start()
            yield mn
        finally:
            mn.stop()  # ends with topo.cleanup.cleanup_mininet: only what this network left
        for path in [f"{run_dir}/controller.log", *glob.glob(f"{run_dir}/agent-h*.log"),
                     *glob.glob(f"{run_dir}/agent-h*.out")]:
            with open(path, errors="replace") as f:
                text = f.read()
            assert "Traceback" not in text, f"{path} logged a traceback:\n{text[-4000:]}"


def apply_everywhere(net: Any, task: dict, agents: list[str], timeout: float = 30) -> str:
    """POST one task to the network's controller; its id once every agent holds it."""
    from testing.procs import wait_until

    status, body = net.rest("/measure/v1/tasks", method="POST", body={"tasks": [task]})
    assert status == 201, body
    task_id = body["tasks"][0]["id"]

    def everywhere() -> bool:
        code, rec = net.rest(f"/measure/v1/tasks/{task_id}")
        return code == 200 and rec["agents"] == {a: "ok" for a in agents}

    wait_until(everywhere, timeout=timeout,
               message=f"task {task_id} ok on all {len(agents)} agents")
    return task_id
