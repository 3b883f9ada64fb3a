"""The seams between the agent's modules, as Protocols.

The overlay role (``overlay_node``, ``overlay_down``, ``overlay_legacy``)
and the bandwidth probe are written against these, not against
``host_agent.agent.Agent`` itself, so they import no runtime module and unit
tests can pass small fakes that a type checker holds to the same shape.
``Monitor`` is what the agent runtime needs from one monitor process
(``agent.MonitorProcess`` or an in-process fake), ``CaptureRules`` what it
needs from its capture rules (``capture.rules.Capture`` or an in-memory
fake); the transport and the
runner are ``measure_common.httpclient.Transport`` and
``measure_common.runner.Runner``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from measure_model.task import Task

if TYPE_CHECKING:
    from host_agent.capture.rules import CaptureFilter
    from host_agent.counters.sketches import CounterConfig
    from host_agent.monitor.commands import Command


class LegacySketch(Protocol):
    """A sketch made by the original messages: its filter and its counters."""

    counters: dict[int, CounterConfig]

    @property
    def filter(self) -> Any:
        """The capture filter; ``to_dict()`` gives its wire form."""
        ...


class OverlayAgent(Protocol):
    """What the overlay role needs from the agent runtime."""

    name: str

    def install_task(self, task_id: str, task: Task, candidate_divisor: int = 1) -> int:
        """Start measuring a parsed task under ``task_id`` (replacing it if held);
        ``candidate_divisor``: agents in scope, for absolute thresholds."""
        ...

    def remove_task(self, task_id: str) -> None:
        """Stop measuring a task; ``KeyError`` when it is not held."""
        ...

    def snapshot_task(self, task_id: str, now: float) -> dict:
        """The cumulative snapshot of a task since it was installed."""
        ...

    def cost(self) -> dict:
        """What the monitor costs now (``measure_model/cost.py``)."""
        ...


class LegacyAgent(OverlayAgent, Protocol):
    """An agent that also holds counters made by the original messages."""

    sketches: Any  # id -> LegacySketch

    def snapshot(self, sid: Any, cid: Any, now: float | None = None) -> dict:
        """The snapshot of legacy counter ``cid`` of sketch ``sid``."""
        ...


class Monitor(Protocol):
    """One monitor process (one NFQUEUE queue) as the agent drives it."""

    queue: int

    @property
    def pid(self) -> int | None:
        """The process id, None when not running."""
        ...

    def start(self) -> None:
        """Start (or restart) the process."""
        ...

    def alive(self) -> bool:
        """Whether the process is running."""
        ...

    def call(self, cmd: Command) -> Any:
        """One command (``host_agent.monitor.commands``) and its reply."""
        ...

    def stop(self) -> None:
        """Stop the process."""
        ...


class CaptureRules(Protocol):
    """The capture rules of one agent, as the agent runtime drives them."""

    def remove_stale(self) -> int:
        """Remove rules and chains a previous run left; how many were removed."""
        ...

    def setup(self) -> None:
        """Create the agent's chains."""
        ...

    def teardown(self) -> None:
        """Remove every rule and chain of the agent."""
        ...

    def add(self, sketch: int, slot: int, filt: CaptureFilter, sample: float = 1.0,
            sample_mode: str = "random", mode: str = "nfqueue") -> None:
        """Capture packets matching ``filt`` (a ``sample`` of them) for ``sketch``."""
        ...

    def remove(self, sketch: int) -> None:
        """Stop capturing for ``sketch``."""
        ...

    def counters(self, max_age: float = 0.0) -> dict[int, tuple[int, int]]:
        """Packets and bytes each sketch's rule matched (a reading up to ``max_age``
        seconds old may be reused)."""
        ...

    def listing(self) -> list[str]:
        """The rules, one line each (for status and tests)."""
        ...
