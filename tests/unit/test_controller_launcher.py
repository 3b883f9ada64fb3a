"""``measure-controller`` (``python -m ryu_app``) starts quietly and stops at the first signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from testing.checks import some
from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_for_port

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_stops_the_controller_without_a_traceback(tmp_path, sig):
    of_port, rest_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "MEASURE_STATE_DIR": str(tmp_path / "state"),
           "MEASURE_TOKEN_FILE": str(tmp_path / "token"),
           "MEASURE_SECRET_FILE": str(tmp_path / "secret")}
    proc = subprocess.Popen([sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port",
                             str(of_port), "--wsapi-port", str(rest_port), "--observe-links",
                             "ryu_app.app"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_port("127.0.0.1", rest_port, timeout=30, proc=proc)
        proc.send_signal(sig)
        code = proc.wait(5)  # one signal is enough
    finally:
        stop_process(proc)
    out = some(proc.stdout).read()
    assert code == 0, out
    assert out.splitlines()[-1] == f"measure-controller: stopped ({sig.name})"
    for noise in ("Traceback", "RLock(s) were not greened", "Eventlet is deprecated",
                  "KeyboardInterrupt"):
        assert noise not in out, out
