"""Real agents without NFQUEUE: the monitor core called in process.

``InProcAgent`` is a real ``Agent`` over one ``testing.monitors.InlineMonitor``
(the real ``MonitorCore`` behind the real channel's wire form) and no capture rules,
with the URL an overlay test routes by and direct access to a task's
counter, so a test feeds packets straight into it.
"""

from __future__ import annotations

from typing import Any

from host_agent.agent import Agent
from testing.monitors import InlineMonitor


class InProcAgent(Agent):
    """A real ``Agent`` over one ``InlineMonitor`` (whose time is each query's ``now``)
    and no capture rules."""

    def __init__(self, name: str, data_ip: str | None = None, url: str | None = None,
                 **kw: Any) -> None:
        self.monitor = InlineMonitor(clock=None)
        super().__init__(name, [self.monitor], capture=None, data_ip=data_ip, **kw)
        self.url = url or f"http://{name}.test:8000"

    def counter(self, task_id: str, cid: int = 1) -> Any:
        """Counter ``cid`` of the sketch that measures ``task_id``."""
        return self.sketch_counter(self.tasks[task_id], cid)

    def sketch_counter(self, sid: int, cid: int = 1) -> Any:
        """Counter ``cid`` of sketch ``sid`` in the monitor core."""
        return self.monitor.core.sketches[sid].counters[cid]
