"""The one child channel (host_agent.ipc) and the monitor's commands, with real children."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from host_agent.bandwidth.worker import Worker, WorkerError
from host_agent.ipc import reply_for
from host_agent.monitor import commands as cmds
from host_agent.monitor.core import MonitorCore
from testing.checks import some

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("msg,message", [
    ({"op": "nope"}, "unknown op 'nope'"),
    ({"op": "add_sketch", "sketch": "1", "slot": 0}, "sketch: expected int, got '1'"),
    ({"op": "add_sketch", "sketch": True, "slot": 0}, "sketch: expected int, got True"),
    ({"op": "remove_sketch", "sketch": 1, "extra": 2}, "remove_sketch: unknown fields ['extra']"),
    ({"op": "query", "sketch": 1, "counter": 1, "method": "all"}, "unknown query method 'all'"),
    ({"op": "query", "sketch": 1, "counter": 1, "method": "window", "now": "x"},
     "now: expected float, got 'x'"),
    ({"op": "flows_top", "sketch": 1, "by": "flows"}, "by: one of ('bytes', 'packets')"),
    (["op", "ping"], "a request is a JSON object, not list"),
])
def test_bad_commands_are_refused_naming_the_field(msg, message):
    reply = reply_for(lambda m: MonitorCore().handle(m, 0.0), msg)
    assert reply["ok"] is False and "internal" not in reply
    assert message in reply["error"]


def test_every_command_survives_its_wire_form():
    for cmd in (cmds.Ping(), cmds.Stats(), cmds.AddSketch(1, 2, {"3": {"task": {}}}),
                cmds.RemoveSketch(1), cmds.AddCounter(1, 2, {"task": {}}),
                cmds.RemoveCounter(1, 2), cmds.AddFlows(1, {"task": {}}), cmds.RemoveFlows(1),
                cmds.FlowsTop(1, 5, "packets"),
                cmds.Query(1, 2, "estimate", now=3.5, key="10.0.0.1")):
        assert cmds.from_wire(cmds.to_wire(cmd)) == cmd


def test_a_handler_failure_is_internal_and_the_channel_serves_on():
    def boom(msg):
        raise RuntimeError("disk on fire")

    assert reply_for(boom, {"op": "x"}) == {"ok": False, "internal": True,
                                            "error": "RuntimeError('disk on fire')"}


def test_a_real_child_refuses_bad_input_and_answers_good_input():
    with Worker(lifetime=10) as worker:
        opened = worker.call({"op": "recv_open", "session": 7}, timeout=5)
        assert opened["port"] > 0
        with pytest.raises(WorkerError, match="unknown op 'dance'"):
            worker.call({"op": "dance"}, timeout=5)
        assert worker.call({"op": "recv_fetch"}, timeout=5)["bytes"] == 0  # still serving


def test_a_hung_child_times_out_and_is_killed():
    worker = Worker(lifetime=30)
    try:
        worker.call({"op": "recv_open", "session": 1}, timeout=5)
        os.kill(some(worker.child.pid), signal.SIGSTOP)
        with pytest.raises(WorkerError, match="did not answer recv_fetch within 0.5 s"):
            worker.call({"op": "recv_fetch"}, timeout=0.5)
        assert some(worker.child.proc).wait(5) == -signal.SIGKILL or not worker.child.alive()
        with pytest.raises(WorkerError, match="not started"):
            worker.call({"op": "recv_fetch"}, timeout=0.5)
    finally:
        worker.close()


def test_a_dead_child_is_gone_not_hung():
    worker = Worker(lifetime=30)
    try:
        some(worker.child.proc).kill()
        some(worker.child.proc).wait(5)
        with pytest.raises(WorkerError, match="not running|Broken pipe|Connection reset"):
            worker.call({"op": "recv_fetch"}, timeout=5)
    finally:
        worker.close()


def test_a_child_killed_by_a_fault_says_so_and_leaves_its_stack(tmp_path, monkeypatch):
    """A fault in C code (SIGSEGV) kills the child: the error names the signal and the
    child's Python stack is on its stderr (faulthandler), not a bare 'connection reset'."""
    stderr = tmp_path / "child.err"
    with open(stderr, "wb") as err:
        real_popen = subprocess.Popen

        def popen(*args, **kwargs):
            return real_popen(*args, **kwargs, stderr=err)  # type: ignore[call-overload]

        monkeypatch.setattr(subprocess, "Popen", popen)
        worker = Worker(lifetime=30)
    try:
        worker.call({"op": "recv_open", "session": 1}, timeout=5)
        os.kill(some(worker.child.pid), signal.SIGSEGV)
        with pytest.raises(WorkerError, match="killed by SIGSEGV"):
            worker.call({"op": "recv_fetch"}, timeout=5)
    finally:
        worker.close()
    assert "Fatal Python error: Segmentation fault" in stderr.read_text()
