"""The agent's configuration state: sketches and the counters on them.

A *sketch* is a packet filter (one capture rule with its mark bit, see
``capture.py``) carrying counters. Each counter is a parsed
``measure_model.task.Task`` (plus the ``candidate_divisor`` of absolute
thresholds), so the one task model describes per-host counters, legacy
counters and overlay tasks alike. The agent keeps this state so that it can
re-install everything in a restarted monitor; the counts themselves live
in the monitor process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from host_agent.capture.rules import CaptureFilter
from measure_model.task import DEFAULT_CAPTURE, DEFAULT_SAMPLE_MODE, Task, counter_view


@dataclass(frozen=True)
class CounterConfig:
    """One counter: its task and the candidate divisor for absolute thresholds."""

    task: Task
    candidate_divisor: int = 1

    @property
    def cell_bytes(self) -> int:
        """Sketch memory of this counter in one monitor process (an elastic counter's
        whole state: its ``memory``)."""
        if self.task.memory is not None:
            return self.task.memory
        return 0 if self.task.sketch is None else self.task.sketch.cell_bytes

    def entry(self) -> dict[str, Any]:
        """The monitor protocol's counter entry (the task in its wire form)."""
        return {"task": self.task.to_dict(), "candidate_divisor": self.candidate_divisor}

    def describe(self) -> dict[str, Any]:
        """The counter settings as the agent API shows them."""
        return counter_view(self.task)


@dataclass
class Sketch:
    """A capture filter with its counters (ids from 1 within the sketch)."""

    id: int
    slot: int
    filter: CaptureFilter
    counters: dict[int, CounterConfig] = field(default_factory=dict)
    task_id: str | None = None
    created: float = 0.0
    next_counter: int = 1
    base: tuple[int, int] = (0, 0)     # rule counters when counting (re)started
    sample: float = 1.0                # the capture rule's sampling (1: every packet)
    sample_mode: str = DEFAULT_SAMPLE_MODE
    flows: dict[str, Any] | None = None  # the monitor's flow-cache entry (kind flows)
    capture: str = DEFAULT_CAPTURE     # one of CAPTURE_MODES (see host_agent/capture/)

    def add_command(self, first: bool = True, counters: dict[str, dict[str, Any]] | None = None
                    ) -> Any:
        """The monitor's ``AddSketch``; an ebpf sketch's filter and sampling go to the
        first monitor only (it alone loads the eBPF capture)."""
        from host_agent.monitor.commands import AddSketch

        ebpf = None
        if self.capture == "ebpf" and first:
            ebpf = {"filter": self.filter.to_dict(), "sample": self.sample,
                    "sample_mode": self.sample_mode, "probes": self.filter.probes}
        return AddSketch(self.id, self.slot, counters or {}, ebpf)

    def describe(self) -> dict[str, Any]:
        out = {"id": self.id, "filter": self.filter.to_dict(), "task": self.task_id,
               "capture": self.capture, "created": self.created,
               "counters": [{"id": cid, **c.describe()}
                            for cid, c in sorted(self.counters.items())]}
        if self.sample < 1:
            out["sample"] = {"probability": self.sample, "mode": self.sample_mode}
        if self.flows is not None:
            out["flows"] = {"export": self.flows["task"].get("export", []),
                            "addresses": self.flows["addresses"]}
        return out
