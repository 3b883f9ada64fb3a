"""The real monitor core behind the real monitor channel, in the test's process.

``InlineMonitor`` is what ``host_agent.monitor.client.MonitorProcess`` is,
minus the subprocess and NFQUEUE: every command goes through its wire form
(``commands.to_wire``, JSON both ways) and the channel's reply mapping
(``ipc.reply_for``) into a real ``MonitorCore``, and a refusal or an internal
failure becomes the same ``AgentError`` 400 or ``MonitorError`` as from the
real process. Packets are fed with :meth:`InlineMonitor.feed`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from host_agent.errors import AgentError, MonitorError
from host_agent.ipc import reply_for
from host_agent.monitor.commands import Command, to_wire
from host_agent.monitor.core import MonitorCore


class InlineMonitor:
    """One in-process monitor (queue ``queue``) on the clock ``clock``.

    With ``clock=None`` the monitor's time is the ``now`` of each query, and 0
    for other commands: simulations that drive time through queries.
    """

    def __init__(self, clock: Callable[[], float] | None = time.time, queue: int = 0) -> None:
        self.clock, self.queue, self.pid = clock, queue, None
        self.core = MonitorCore()
        self.dead = False
        self.starts = 0

    def start(self) -> None:
        self.core = MonitorCore()
        self.dead = False
        self.starts += 1

    def stop(self) -> None:
        """Nothing runs: a stopped inline monitor is one that ``dead`` says is gone."""

    def alive(self) -> bool:
        return not self.dead

    def call(self, cmd: Command) -> Any:
        msg = json.loads(json.dumps(to_wire(cmd)))
        now = self.clock() if self.clock is not None else float(msg.get("now") or 0.0)
        reply = json.loads(json.dumps(reply_for(lambda m: self.core.handle(m, now), msg)))
        if reply["ok"]:
            return reply["result"]
        if reply.get("internal"):
            raise MonitorError(reply["error"])
        raise AgentError(400, reply["error"])

    def feed(self, packets: list[bytes], mark: int = 1 << 16, now: float | None = None) -> None:
        """Ingest ``packets`` with packet mark ``mark`` (default: the bit of an agent's
        first NFQUEUE sketch, slot 16)."""
        when = now if now is not None else self.clock() if self.clock is not None else 0.0
        self.core.ingest(packets, [mark] * len(packets), when)
