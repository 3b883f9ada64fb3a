"""measure-controller's options: config file, flags, and what ryu-manager receives."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from measure_common.config import ConfigError
from ryu_app.controller_options import ryu_invocation
from testing.netns import ROOT

pytestmark = pytest.mark.unit


def test_defaults_start_the_app_with_link_discovery():
    argv, env, check = ryu_invocation([])
    assert argv == ["--observe-links", "--ofp-tcp-listen-port", "6653", "--wsapi-port", "8080",
                    "--wsapi-host", "0.0.0.0", "ryu_app.app"]
    assert (env, check) == ({}, False)


def test_ryu_arguments_pass_through_unchanged():
    given = ["--ofp-tcp-listen-port", "7000", "--wsapi-port", "9000", "--observe-links",
             "ryu_app.app"]
    argv, env, _ = ryu_invocation(given)
    assert argv == [*given, "--wsapi-host", "0.0.0.0"]
    assert env == {}


def test_config_file_sets_environment_and_ports_and_flags_override(tmp_path):
    secret = tmp_path / "agent.secret"
    secret.write_text("s" * 64)
    os.chmod(secret, 0o600)
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(f"rest_port: 9100\nopenflow_port: 6700\nstate_dir: {tmp_path}\n"
                   f"secret_file: {secret}\nfanout: 3\nreads_open: true\n"
                   "controller_url: http://192.168.7.1:9100\n")
    argv, env, check = ryu_invocation(["--config", str(cfg), "--rest-port", "9200"])
    assert argv[argv.index("--wsapi-port") + 1] == "9200"
    assert argv[argv.index("--ofp-tcp-listen-port") + 1] == "6700"
    assert env == {"MEASURE_STATE_DIR": str(tmp_path), "MEASURE_SECRET_FILE": str(secret),
                   "MEASURE_FANOUT": "3", "MEASURE_READS_OPEN": "1",
                   "MEASURE_CONTROLLER_URL": "http://192.168.7.1:9100"}
    assert ryu_invocation(["--config", str(cfg), "--check-config"])[2] is True


@pytest.mark.parametrize("text, message", [
    ("rest_prot: 1\n", "line 1: field 'rest_prot': unknown field (did you mean 'rest_port'?)"),
    ("rest_port: 70000\n", "rest_port 70000 is out of range 1..65535"),
    ("fanout: 0\n", "fanout 0 is out of range 1..64"),
    ("reads_open: 'yes'\n", "line 1: field 'reads_open': must be true or false, not str"),
])
def test_bad_controller_config(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ryu_invocation(["--config", str(cfg)])


def test_secret_readable_by_others_stops_the_controller_with_status_2(tmp_path):
    secret = tmp_path / "agent.secret"
    secret.write_text("s" * 64)
    os.chmod(secret, 0o644)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"secret_file: {secret}\n")
    proc = subprocess.run([sys.executable, "-m", "ryu_app", "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"secret_file {secret}: mode 0644 is readable by others" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "ryu_app", "--version"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("measure-controller ")


@pytest.mark.parametrize("module, prog", [("ryu_app", "measure-controller"),
                                          ("host_agent", "measure-agent"),
                                          ("measure_cli.cli", "measure"),
                                          ("topo.launch", "measure-net")])
def test_every_command_prints_the_version(module, prog):
    from measure_model.version import __version__

    out = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"{prog} {__version__}"), out.stderr
