"""A settable clock for code that takes ``now`` as a callable."""

from __future__ import annotations


class Clock:
    """``clock()`` returns ``clock.t``; a test moves time by setting or adding to ``t``."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
