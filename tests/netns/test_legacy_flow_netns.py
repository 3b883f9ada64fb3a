"""The original walk-through's example scripts, message for message, against a real agent.

Three namespaces: ``h1`` (the client running the example scripts, as in the
walk-through), ``h5`` (the monitored host running the agent) and ``h6``
(another sender). The client posts form-encoded messages exactly like
``requests.post(url, data=data)`` in examples/heavy_hitter.py,
flow_size_distrib.py and portscan.py, parses replies with
``ast.literal_eval`` like they do, and checks the values the walk-through
prints.
"""

from __future__ import annotations

import ast
import collections
import re
import time
from typing import Any

import pytest

from testing.procs import wait_until

pytestmark = pytest.mark.netns


def test_heavy_hitter_example(three_hosts, agent_factory):
    h1, h5, h6 = three_hosts
    agent = agent_factory(h5, "h5", client_ns=h1)
    data: dict[str, Any] = {"type": "config sketch", "interface": "INPUT", "proto": "icmp"}
    r = agent.legacy(**data)
    sketch_id = int(r.text)
    data = {"type": "config sketch counter", "sketch_id": sketch_id,
            "counter_key_type": "src", "increment": "pkt"}
    assert agent.legacy(**data).status_code == 200
    h1.run(["ping", "-c", "2", "-i", "0.05", "10.77.0.2"])                 # h1 -> h5
    h6.run(["ping", "-c", "2", "-i", "0.05", "10.79.0.2"])                 # h6 -> h5
    data = {"type": "query heavy hitters", "sketch_id": sketch_id, "counter_key_type": "src"}

    def heavy():
        d = ast.literal_eval(agent.legacy(**data).text)
        return d if sum(d.values()) == 4 else None

    assert wait_until(heavy, timeout=10, message="4 pings") == {h1.ip: 2, h6.ip: 2}
    data = {"type": "query sketch", "sketch_id": sketch_id, "counter_key_type": "src",
            "counter_key": h6.ip}
    r = agent.legacy(**data)
    assert "h6 hits: " + r.text + "times" == "h6 hits: 2times"


def test_flow_size_distribution_example(three_hosts, agent_factory):
    h1, h5, h6 = three_hosts
    agent = agent_factory(h5, "h5", client_ns=h1)
    sketch_id = int(agent.legacy(type="config sketch", interface="INPUT", proto="icmp").text)
    r = agent.legacy(type="config sketch counter", sketch_id=sketch_id,
                     counter_key_type="src_dst", increment="bytes")
    assert r.status_code == 200
    h1.run(["ping", "-c", "2", "-i", "0.05", "10.77.0.2"])
    h6.run(["ping", "-c", "3", "-i", "0.05", "10.79.0.2"])
    query = {"type": "query heavy hitters", "sketch_id": sketch_id,
             "counter_key_type": "src_dst"}
    d = wait_until(lambda: (x := ast.literal_eval(agent.legacy(**query).text))
                   and sum(x.values()) == 5 * 84 and x, timeout=10, message="5 pings")
    assert d == {f"{h1.ip},10.77.0.2": 168, f"{h6.ip},10.79.0.2": 252}
    r = agent.legacy(type="query sketch", sketch_id=sketch_id, counter_key_type="src_dst",
                     counter_key=f"{h6.ip},10.79.0.2")
    assert "h6 hits h5: " + r.text + "times" == "h6 hits h5: 252times"


def test_portscan_example(three_hosts, agent_factory):
    h1, h5, h6 = three_hosts
    agent = agent_factory(h5, "h5", client_ns=h1)
    sketch_id = int(agent.legacy(type="config sketch", interface="INPUT").text)
    for key_type in ("src_dport", "dport"):
        r = agent.legacy(type="config sketch counter", sketch_id=sketch_id,
                         counter_key_type=key_type, increment="pkt")
        assert r.status_code == 200

    def scan_once():
        # The real-time window is 1 s, tumbling: start just after a boundary so
        # the scan and the queries fall in the same window (retried otherwise).
        wait_until(lambda: time.time() % 1.0 < 0.1, timeout=2, interval=0.005)
        start = int(time.time())
        h6.run(["nc", "-z", "-w", "1", "10.79.0.2", "8008-8092"], check=False)
        r1 = agent.legacy(type="query sketch", sketch_id=sketch_id,
                          counter_key_type="dport", counter_key="real_time_key_num")
        r2 = agent.legacy(type="query real time counter", sketch_id=sketch_id,
                          counter_key_type="src_dport")
        if int(time.time()) != start:
            return None
        ip_list = re.findall(r"\d+\.\d+\.\d+\.\d+", r2.text)
        return int(r1.text), dict(collections.Counter(ip_list))

    key_num, freq = wait_until(scan_once, timeout=20, interval=0.1, message="scan in a window")
    # h1's own queries to port 8000 are in the window too, as in the walk-through
    # ({"10.0.0.1": 1, "10.0.0.6": 85}).
    assert freq == {h1.ip: 1, h6.ip: 85}
    assert key_num == 86
