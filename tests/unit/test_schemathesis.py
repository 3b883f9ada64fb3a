"""The OpenAPI document is true to a live controller: a short schemathesis run.

``python -m ryu_app`` is started with its token; schemathesis reads
``GET /measure/v1/openapi.json`` from it and runs every check (its default:
all of them) in the coverage, fuzzing and stateful phases, with
``tests/schemathesis.toml`` (which turns off the acceptance of schema-valid
data for the few operations whose constraints no schema can state, counts 413
as a rejection, and says why). Any failure or schema error makes schemathesis
exit non-zero. The long run's figures are in the README ("OpenAPI fuzzing");
this one is bounded by ``--max-examples`` and skips one coverage phase
(``SUITE_ONLY``).
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


# The coverage phase of POST tasks alone generates about 8,000 cases from the
# task schema (a oneOf of every kind with all its fields): about 6 minutes on an
# idle 2-core VM, three times that under load. Here that one operation is fuzzed
# (and reached by the stateful phase) but its coverage phase is left to the
# long run in the README; every other operation runs all three phases.
SUITE_ONLY = """
[[operations]]
include-operation-id = "createTasks"
phases.coverage.enabled = false
"""


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_failure_against_a_live_controller(controller_factory, tmp_path):
    state = tmp_path / "state"
    port = free_port()
    controller_factory(rest_port=port, env={"MEASURE_STATE_DIR": str(state)})
    wait_until(lambda: (state / "controller.token").exists(), timeout=10,
               message="controller token")
    token = (state / "controller.token").read_text().strip()
    config = tmp_path / "schemathesis.toml"
    with open(os.path.join(ROOT, "tests", "schemathesis.toml"), encoding="utf-8") as f:
        config.write_text(f.read() + SUITE_ONLY)
    proc = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(config),
         "run", f"http://127.0.0.1:{port}/measure/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--max-examples", "8", "--workers", "1",
         "--seed", "1", "--phases", "coverage,fuzzing,stateful"],
        cwd=tmp_path, capture_output=True, text=True, timeout=800, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:] + "\n" + "\n".join(
        line for line in out.splitlines() if line.startswith(("_", "1.", "2.", "[")))
    assert re.search(r"Selected: (\d+)/\1\b", out), out[-2000:]  # every operation
    assert "✅ Stateful" in out, out[-2000:]
