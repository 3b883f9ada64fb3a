"""Whether the controller's tick loop is doing its work.

The Ryu app calls ``MeasureService.tick`` about once a second; a tick that
raises is logged with its traceback, counted here and tried again at the
next tick, so one bad moment does not stop the controller, but a tick that
stays broken is not only in a log file: ``GET /measure/v1/health`` shows
``ticker: {last_ok, failures, last_error, ...}`` and answers ``"ok":
false`` while the last tick failed or no tick succeeded for
``STALE_AFTER`` seconds (the loop itself stopped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STALE_AFTER = 10.0


@dataclass
class TickerHealth:
    """Outcome of the ticks so far: the last success and the failures since."""

    last_ok: float | None = None
    failures: int = 0  # consecutive, since the last successful tick
    total_failures: int = 0
    last_error: str | None = None
    last_failure: float | None = None

    def ok(self, now: float) -> None:
        self.last_ok, self.failures = now, 0

    def failed(self, now: float, exc: BaseException) -> None:
        self.failures += 1
        self.total_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_failure = now

    def healthy(self, now: float, ticking: bool) -> bool:
        """No failure since the last success, and (with a tick loop) a recent one."""
        if self.failures:
            return False
        if not ticking:
            return True
        return self.last_ok is not None and now - self.last_ok <= STALE_AFTER

    def to_dict(self, now: float, ticking: bool) -> dict[str, Any]:
        return {"last_ok": self.last_ok, "failures": self.failures,
                "total_failures": self.total_failures, "last_error": self.last_error,
                "last_failure": self.last_failure, "running": ticking,
                "stale": ticking and not self.failures and not self.healthy(now, ticking)}
