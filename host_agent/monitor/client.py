"""The agent's end of the monitor: one monitor subprocess and its channel.

The agent starts ``python -m host_agent.monitor`` as a :class:`host_agent.ipc.ChildProcess`
and speaks the commands of :mod:`host_agent.monitor.commands` to it.
:meth:`MonitorProcess.call` sends one command and waits for its reply
(bounded by ``timeout``); a dead or hung monitor is a ``MonitorError``, a
command the monitor refuses is an ``AgentError`` 400.
"""

from __future__ import annotations

from typing import Any

from host_agent.errors import AgentError, MonitorError
from host_agent.ipc import ChildGone, ChildProcess, Refused
from host_agent.monitor.commands import Command, Ping, to_wire


class MonitorProcess:
    """A monitor subprocess bound to NFQUEUE ``queue`` (and the NFLOG group of that number)."""

    def __init__(self, queue: int, max_len: int = 4096, timeout: float = 10.0,
                 extra_args: list[str] | None = None) -> None:
        self.queue = queue
        self.child = ChildProcess(
            "host_agent.monitor",
            ["--queue", str(queue), "--max-len", str(max_len), *(extra_args or [])],
            name=f"monitor on queue {queue}", timeout=timeout)

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def start(self) -> None:
        self.child.start()
        self.call(Ping())

    def alive(self) -> bool:
        return self.child.alive()

    def call(self, cmd: Command) -> Any:
        try:
            return self.child.call(to_wire(cmd))
        except ChildGone as exc:
            raise MonitorError(str(exc)) from None
        except Refused as exc:  # the monitor refuses bad input (e.g. a bad key)
            raise AgentError(400, str(exc)) from None

    def stop(self) -> None:
        self.child.stop()
