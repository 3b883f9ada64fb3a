"""Fixtures shared by the namespace tests: agent and controller processes in namespaces."""

from __future__ import annotations

import pytest

from testing.agentproc import AgentProc
from testing.browser import chrome
from testing.controllers import ControllerInNetns
from testing.netns import Netns, run, unique_name
from testing.procs import stopped_after, wait_until


@pytest.fixture
def agent_factory(netns_factory, tmp_path):
    """Start agents with ``factory(ns, name, extra=[...])``; all stopped afterwards.

    Fails the test if an agent logged a traceback.
    """
    started: list[AgentProc]
    with stopped_after(AgentProc.stop, AgentProc.log, "agent") as started:
        def factory(ns: Netns, name: str = "h2", extra: list[str] | None = None,
                    client_ns: Netns | None = None) -> AgentProc:
            ag = AgentProc(ns, name, str(tmp_path / f"agent-{name}-{len(started)}.log"),
                           extra or ["--allow-legacy"], client_ns)
            started.append(ag)
            return ag

        yield factory


@pytest.fixture
def controller_in(tmp_path):
    """Start controllers in a namespace, all on one state dir (a second start is a
    restart), each with its own log file; stopped and checked for tracebacks after."""
    started: list[ControllerInNetns]
    with stopped_after(ControllerInNetns.stop, ControllerInNetns.log, "controller") as started:
        def start(ns):
            log = str(tmp_path / f"controller-{len(started)}.log")
            ctl = ControllerInNetns(ns, tmp_path / "state", log)
            started.append(ctl)
            return ctl

        yield start


@pytest.fixture
def three_hosts(netns_factory):
    """h1 -- h5 (10.77.0.1/.2) and h6 -- h5 (10.79.0.1/.2): h5 is the monitored host."""
    h1, h5 = netns_factory.pair("10.77.0")
    h6 = netns_factory.netns()
    i6, i5 = unique_name("vc"), unique_name("vd")
    run(["ip", "link", "add", i6, "type", "veth", "peer", "name", i5])
    netns_factory.links.append(i6)
    for ns, intf, addr in ((h6, i6, "10.79.0.1"), (h5, i5, "10.79.0.2")):
        run(["ip", "link", "set", intf, "netns", ns.name])
        ns.run(["ip", "addr", "add", f"{addr}/24", "dev", intf])
        ns.run(["ip", "link", "set", intf, "up"])
    h6.ip = "10.79.0.1"
    wait_until(lambda: h6.run(["ping", "-c1", "-W1", "10.79.0.2"], check=False).returncode == 0,
               timeout=10, message="h6 link up")
    return h1, h5, h6


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    """A controller with a token (no switches, no agents) and a browser, per module."""
    from testing.controllers import start_controller
    from testing.procs import stop_process

    tmp = tmp_path_factory.mktemp("dashboard")
    token_file = tmp / "controller.token"
    env = {"MEASURE_STATE_DIR": str(tmp / "state"), "MEASURE_TOKEN_FILE": str(token_file),
           "MEASURE_SECRET_FILE": str(tmp / "agent.secret")}
    controller = start_controller(tmp, env={**env, "MEASURE_READS_OPEN": "0"})
    try:
        token = token_file.read_text().strip()
        with chrome() as driver:
            yield controller, token, driver
    finally:
        stop_process(controller.proc)
    assert "Traceback" not in controller.log(), controller.log()
