"""The OpenAPI document is true to a live controller: a short schemathesis run.

``python -m ryu_app`` is started with its token; schemathesis reads
``GET /measure/v1/openapi.json`` from it and runs every check (its default:
all of them) in the coverage, fuzzing and stateful phases, with
``tests/schemathesis.toml`` (which turns off the acceptance of schema-valid
data for the few operations whose constraints no schema can state, counts 413
as a rejection, and says why). Any failure or schema error makes schemathesis exit non-zero.
The long run's figures are in the README ("OpenAPI fuzzing"); this one is
bounded by ``--max-examples``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from testing.netns import ROOT
from testing.procs import free_port, wait_until

pytestmark = pytest.mark.unit
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


@pytest.mark.timeout(1500)  # the coverage phase: a few minutes, much more on a loaded machine
def test_schemathesis_finds_no_failure_against_a_live_controller(controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    controller_factory(rest_port=port, env={"MEASURE_STATE_DIR": str(state)})
    wait_until(lambda: (state / "controller.token").exists(), timeout=10,
               message="controller token")
    token = (state / "controller.token").read_text().strip()
    proc = subprocess.run(
        [SCHEMATHESIS, "--config-file", os.path.join(ROOT, "tests", "schemathesis.toml"),
         "run", f"http://127.0.0.1:{port}/measure/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--max-examples", "8", "--workers", "1",
         "--seed", "1", "--phases", "coverage,fuzzing,stateful"],
        cwd=tmp_path, capture_output=True, text=True, timeout=1400, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:] + "\n" + "\n".join(
        line for line in out.splitlines() if line.startswith(("_", "1.", "2.", "[")))
    assert re.search(r"Selected: (\d+)/\1\b", out), out[-2000:]  # every operation
    assert "✅ Stateful" in out, out[-2000:]
