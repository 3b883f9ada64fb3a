"""``testing.procs``: the one copy of the process and port helpers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from testing.checks import some
from testing.procs import free_port, mininet_lock, port_open, stop_process, wait_for_port

pytestmark = pytest.mark.unit


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_process_stops_the_whole_group():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    child = int(some(proc.stdout).readline())
    stop_process(proc, timeout=5)
    assert proc.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), f"child {child} of the group still running"
    stop_process(proc)  # a second call on an exited process is a no-op


def test_stop_process_falls_through_to_the_next_signal():
    proc = subprocess.Popen([sys.executable, "-c",
                             "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert some(proc.stdout).readline().strip() == "ready"
    stop_process(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_ports():
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        wait_for_port("127.0.0.1", port, timeout=2)
        assert port_open("127.0.0.1", port)
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.2)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(ChildProcessError):
        wait_for_port("127.0.0.1", port, timeout=5, proc=dead)


def test_mininet_lock_waits_for_the_holder(tmp_path):
    path = str(tmp_path / "lock")
    waited: list[bool] = []
    with mininet_lock(path=path) as first_wait:
        assert first_wait == 0
        box: dict[str, float] = {}

        def second() -> None:
            with mininet_lock(on_wait=lambda: waited.append(True), path=path) as w:
                box["waited"] = w

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        assert "waited" not in box
    t.join(5)
    assert waited == [True] and box["waited"] >= 0.4
