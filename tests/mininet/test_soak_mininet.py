"""The soak's short version: two minutes of load and faults on a Mininet network.

``python -m bench.soak --minutes 2`` runs a task of every kind, pings, scans
and REST load while it kills an agent, kills a monitor, restarts the
controller and takes a link down. The run must answer every REST call made
while the controller was up, lose no report interval (each has a result or
falls in the controller's planned downtime), and bring every agent and
monitor back. The 20-minute figures are in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testing.netns import ROOT

pytestmark = pytest.mark.mininet


def test_two_minute_soak(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "2", "--no-json",
                           "--json-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {f["kind"] for f in result["faults"]} == {
        "kill_agent", "kill_monitor", "restart_controller", "link_down"}, result["faults"]
    assert result["rest"]["calls"] > 100
    assert result["rest"]["errors"] == 0, result["rest"]["samples"]
    for name, row in result["results"].items():
        assert row["lost"] == 0, (name, row)
        assert row["results"] >= 20, (name, row)
    ends = result["processes"]
    for n in range(1, 10):
        assert ends[f"agent h{n}"]["end"] is not None, f"agent h{n} not running at the end"
        assert ends[f"monitor h{n}.0"]["end"] is not None, f"monitor of h{n} not running"
    assert ends["controller"]["end"] is not None
    killed = [f for f in result["faults"] if f["kind"] == "kill_monitor"]
    assert killed and all("pid None" not in f["detail"] for f in killed), killed
    assert proc.returncode == 0, proc.stdout[-3000:]
