"""Mininet tier: the REST load benchmark as a test.

``bench.load`` starts its own network (controller, tree depth 2 fanout 3,
nine agents) under the machine-wide Mininet lock, applies two tasks, waits
for a global result, then runs 20 concurrent clients over the documented
mix of REST calls. Here it runs for 10 s (the benchmark's default is 60 s):
no call may fail, every call of the mix must have been made, and all nine
agents must be registered.
"""

from __future__ import annotations

import json
import sys

import pytest

from testing.netns import ROOT, run

pytestmark = pytest.mark.mininet


def test_twenty_clients_rest_mix_without_errors(tmp_path):
    out = tmp_path / "load.json"
    res = run([sys.executable, "-m", "bench.load", "--clients", "20", "--duration", "10",
               "--no-json", "--json-out", str(out)], check=False, timeout=900, cwd=ROOT)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    data = json.loads(out.read_text())
    assert data["agents"] == 9 and data["clients"] == 20
    assert data["total"]["errors"] == 0, data["error_samples"]
    assert set(data["calls"]) == {"GET topology", "GET agents", "GET overlay", "GET tasks",
                                  "GET task", "GET result", "GET events", "POST task",
                                  "DELETE task"}
    assert data["total"]["count"] >= 100, data["total"]
    assert 0 < data["total"]["p50_ms"] <= data["total"]["p99_ms"]
    assert "REST load: 20 clients" in res.stdout
