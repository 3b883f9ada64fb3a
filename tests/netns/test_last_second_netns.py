""""The last second" means the last second: real_time_key_num after a scan, at several delays.

A real agent in a namespace (``h5``) with the original messages: ``config
sketch`` + a ``dport`` counter (1 s tumbling window), a 60-port ``nc -z``
scan from ``h6``, then ``query sketch`` with ``counter_key:
real_time_key_num`` asked 0.05 s to 0.9 s after the scan ended. Each answer
holds the whole scan, also after the window rolled over between scan and
question (the larger of the current and the previous complete window).
"""

from __future__ import annotations

import time

import pytest

from testing.procs import wait_until

pytestmark = pytest.mark.netns

DELAYS = (0.05, 0.3, 0.6, 0.9)
PORTS = 60


def test_real_time_key_num_counts_the_whole_scan_for_one_window(three_hosts,
                                                                  agent_factory):
    h1, h5, h6 = three_hosts
    agent = agent_factory(h5, "h5", client_ns=h1)
    sketch_id = int(agent.legacy(type="config sketch", interface="INPUT", proto="tcp").text)
    r = agent.legacy(type="config sketch counter", sketch_id=sketch_id,
                     counter_key_type="dport", increment="pkt")
    assert r.status_code == 200
    query = {"type": "query sketch", "sketch_id": sketch_id, "counter_key_type": "dport",
             "counter_key": "real_time_key_num"}
    rolled = 0
    for delay in DELAYS:
        # start late in a window (the scan takes ~10 ms, so it fits in it): the
        # longer delays ask after the window rolled over, the short ones before
        wait_until(lambda: 0.6 <= time.time() % 1.0 < 0.7, timeout=2, interval=0.002)
        start = time.time()
        h6.run(["nc", "-z", "-w", "1", "10.79.0.2", f"9000-{9000 + PORTS - 1}"], check=False)
        done = time.time()
        time.sleep(max(0.0, done + delay - time.time()))
        asked = time.time()
        answer = int(agent.legacy(**query).text)
        rolled += int(asked) != int(start)
        # the scan's 60 ports, plus port 8000 of h1's own queries to the agent
        assert PORTS <= answer <= PORTS + 1, (delay, answer)
        time.sleep(2.1)  # the next scan starts with both windows clear of this one
    assert 1 <= rolled < len(DELAYS)  # questions both before and after the roll-over
