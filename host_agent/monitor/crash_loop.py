"""Whether a monitor keeps crashing: restarts counted over a sliding window.

The agent's supervisor restarts a dead monitor at once (and retries one
that does not start every 2 s), so a monitor that dies again and again is
never "down" for long: only the rate of restarts shows it. ``CrashLoop``
remembers when each death happened; ``looping(now)`` is true while at
least ``threshold`` happened within the last ``window`` seconds. The
agent's health (``GET /agent/v1/health``) reports it as
``monitor.crash_looping`` and its status as ``degraded``, so a crash loop
is seen by the controller's and the operator's checks, not only in the log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

CRASH_LOOP_THRESHOLD = 3
CRASH_LOOP_WINDOW = 60.0


@dataclass
class CrashLoop:
    """Deaths of one agent's monitors within a sliding window."""

    threshold: int = CRASH_LOOP_THRESHOLD
    window: float = CRASH_LOOP_WINDOW
    deaths: deque[float] = field(default_factory=deque)

    def died(self, when: float) -> None:
        """A monitor was found dead (or failed to start) at ``when``."""
        self.deaths.append(when)
        while len(self.deaths) > self.threshold:
            self.deaths.popleft()

    def looping(self, now: float) -> bool:
        """At least ``threshold`` deaths within the last ``window`` seconds."""
        recent = [t for t in self.deaths if now - t <= self.window]
        return len(recent) >= self.threshold
