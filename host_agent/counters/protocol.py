"""What the monitor asks of a counter: the one interface both engines implement.

``countmin.Counter`` (count-min sketch with candidates, windows and scan
pairs) and ``elastic.ElasticCounter`` (one elastic sketch within the task's
``memory``) are both built by ``host_agent.monitor.core.default_counter_factory``
and driven only through this Protocol; ``tests/unit/test_counter.py`` checks
that both satisfy it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from measure_model.packet.keys import HeaderBatch


@runtime_checkable
class Counter(Protocol):
    def update(self, batch: HeaderBatch, now: float) -> None:
        """Count one parsed batch of packets."""
        ...

    def estimate(self, key: str) -> int:
        """The count of one key (an upper bound where the engine says so)."""
        ...

    def heavy_hitters(self) -> dict[str, int]:
        ...

    def top_k(self) -> list[list[Any]]:
        ...

    def window(self, now: float) -> dict[str, Any]:
        """The real-time window (``{}`` for an engine that keeps none)."""
        ...

    def scan(self, now: float) -> dict[str, Any]:
        """Scan pairs per source (``{}`` when scan tracking is off)."""
        ...

    def snapshot(self, now: float, include_sketch: bool = True,
                 host: str | None = None) -> dict[str, Any]:
        """The JSON-ready snapshot of docs/design.md."""
        ...

    @property
    def memory_bytes(self) -> int:
        """Every array the counter holds, in bytes."""
        ...
