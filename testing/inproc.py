"""Real agents without NFQUEUE: the monitor core called in process.

``InProcMonitor`` is the real ``MonitorCore`` behind the agent's monitor
interface (``host_agent.protocols.Monitor``), with no process and no socket;
``InProcAgent`` is a real ``Agent`` over one of them and no capture rules,
with the URL an overlay test routes by and direct access to a task's
counter, so a test feeds packets straight into it.
"""

from __future__ import annotations

from typing import Any

from host_agent.agent import Agent
from host_agent.monitor.core import MonitorCore


class InProcMonitor:
    """The real monitor core, called in process instead of over its socket."""

    queue, pid = 0, None

    def __init__(self) -> None:
        self.core = MonitorCore()

    def start(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def call(self, msg: dict) -> Any:
        return self.core.handle(msg, float(msg.get("now", 0.0)))

    def stop(self) -> None:
        pass


class InProcAgent(Agent):
    """A real ``Agent`` over one ``InProcMonitor`` and no capture rules."""

    def __init__(self, name: str, data_ip: str | None = None, url: str | None = None,
                 **kw: Any) -> None:
        self.monitor = InProcMonitor()
        super().__init__(name, [self.monitor], capture=None, data_ip=data_ip, **kw)
        self.url = url or f"http://{name}.test:8000"

    def counter(self, task_id: str, cid: int = 1) -> Any:
        """Counter ``cid`` of the sketch that measures ``task_id``."""
        return self.sketch_counter(self.tasks[task_id], cid)

    def sketch_counter(self, sid: int, cid: int = 1) -> Any:
        """Counter ``cid`` of sketch ``sid`` in the monitor core."""
        return self.monitor.core.sketches[sid].counters[cid]
