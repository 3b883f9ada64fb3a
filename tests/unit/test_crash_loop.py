"""``CrashLoop``: deaths counted over a sliding window (the agent's use is in
test_monitor_netns, with a real agent whose real monitor is killed)."""

from __future__ import annotations

import pytest

from host_agent.monitor.crash_loop import CrashLoop

pytestmark = pytest.mark.unit


def test_three_deaths_within_the_window_are_a_crash_loop_until_they_age_out():
    loop = CrashLoop(threshold=3, window=60.0)
    assert not loop.looping(0.0)
    for t in (10.0, 20.0):
        loop.died(t)
    assert not loop.looping(20.0)
    loop.died(69.0)
    assert loop.looping(69.0) and loop.looping(70.0)
    assert not loop.looping(80.5)  # the death at 10 s is more than 60 s old
    loop.died(81.0)
    assert not loop.looping(81.0)  # 20, 69, 81: the first is out of the window
    loop.died(82.0)
    assert loop.looping(82.0) and list(loop.deaths) == [69.0, 81.0, 82.0]


def test_deaths_spread_out_are_not_a_crash_loop():
    loop = CrashLoop(threshold=3, window=60.0)
    for t in range(0, 600, 45):
        loop.died(float(t))
        assert not loop.looping(float(t))
