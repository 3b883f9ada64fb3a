"""The systemd units: valid for systemd, and a bad config stops them without a restart loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from measure_common.config import CONFIG_ERROR_EXIT
from testing.netns import ROOT
from testing.units import UNITS, parse_unit, unit_command

pytestmark = pytest.mark.unit

AGENT = parse_unit(UNITS / "endhost-measure-agent.service")
CONTROLLER = parse_unit(UNITS / "endhost-measure-controller.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path):
    bindir = os.path.dirname(sys.executable)
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/endhost-measure/.venv/bin", bindir)
        (tmp_path / unit.name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", *map(str, tmp_path.glob("*.service"))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_score_at_most_2_5_in_systemd_analyze_security(tmp_path):
    import re

    for unit in sorted(UNITS.glob("*.service")):
        out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert found, (unit.name, out.stdout[-500:], out.stderr)
        assert float(found.group(1)) <= 2.5, (unit.name, found.group(1))


def test_units_do_not_restart_on_a_configuration_error():
    for unit in (AGENT, CONTROLLER):
        assert unit["Restart"] == ["on-failure"]
        assert unit["RestartPreventExitStatus"] == [str(CONFIG_ERROR_EXIT)]
        assert unit["ExecStartPre"][0].endswith("--check-config")
    assert AGENT["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE"]
    assert CONTROLLER["CapabilityBoundingSet"] == [""] and CONTROLLER["DynamicUser"] == ["yes"]


def _check_agent(tmp_path, config: str, secret_mode: int | None = 0o600):
    etc, creds, run = tmp_path / "etc", tmp_path / "creds", tmp_path / "run"
    for d in (etc, creds, run):
        d.mkdir(exist_ok=True)
    (etc / "agent.yaml").write_text(config)
    if secret_mode is not None:
        (creds / "agent.key").write_text("k" * 43)
        os.chmod(creds / "agent.key", secret_mode)
    argv = unit_command(AGENT, "ExecStartPre", {"CREDENTIALS_DIRECTORY": str(creds),
                                                "RUNTIME_DIRECTORY": str(run)})
    argv = [a.replace("/etc/endhost-measure", str(etc)) for a in argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}), etc / "agent.yaml", creds


@pytest.mark.parametrize("config, message", [
    ("name: h2\nqueues: 2\nexclude_interfce: eth1\n",
     "line 3: field 'exclude_interfce': unknown field (did you mean 'exclude_interface'?)"),
    ("name: h2\nport: eighty\n", "line 2: field 'port': must be an integer, not str"),
    ("name: h2\nqueues: 40\n", "queues 40 is out of range 1..16"),
])
def test_bad_agent_config_stops_the_unit_at_start(tmp_path, config, message):
    proc, path, _ = _check_agent(tmp_path, config)
    assert proc.returncode == CONFIG_ERROR_EXIT, proc.stdout + proc.stderr
    assert message in proc.stderr
    if "line" in message:
        assert f"config {path} line" in proc.stderr


def test_agent_secret_missing_or_readable_by_others(tmp_path):
    proc, _, creds = _check_agent(tmp_path, "name: h2\n", secret_mode=None)
    assert proc.returncode == CONFIG_ERROR_EXIT
    assert f"key_file {creds}/agent.key: No such file or directory" in proc.stderr
    proc, _, creds = _check_agent(tmp_path, "name: h2\n", secret_mode=0o640)
    assert proc.returncode == CONFIG_ERROR_EXIT
    assert "mode 0640 is readable by others; run: chmod 600" in proc.stderr
    proc, _, _ = _check_agent(tmp_path, "name: h2\n", secret_mode=0o400)
    assert proc.returncode == 0, proc.stderr
    assert "configuration of agent h2 is valid" in proc.stdout


@pytest.mark.parametrize("module, config", [("ryu_app", "controller.yaml"),
                                            ("host_agent", "agent.yaml")])
def test_shipped_config_files_are_valid(module, config):
    path = os.path.join(ROOT, "contrib", "config", config)
    proc = subprocess.run([sys.executable, "-m", module, "--config", path, "--check-config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
