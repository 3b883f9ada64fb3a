"""What ``mn --custom topo/topos.py`` loads: the ``measure`` host class and ``ovsu`` switch.

The custom file is executed the way ``mn`` executes it (a fresh namespace)
and must offer ``hosts["measure"]`` and ``switches["ovsu"]``. Then a real
network is built through Mininet's Python API with exactly those classes and
the project's controller (on free ports): the host interfaces report
``tx-checksumming: off`` and an iperf TCP transfer completes (through the
userspace datapath TCP hangs without the host class).

The ``mn`` command itself is not run here: on Ctrl-C and on any exception
it runs its machine-wide clean-up (``killall ping``, ``pkill -f mininet:``,
``rm /tmp/*.log``), which must never run beside other work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest

from testing.netns import ROOT
from testing.procs import free_port, stop_process, wait_for_port, wait_until

pytestmark = pytest.mark.mininet


def load_custom_file() -> dict:
    namespace: dict = {}
    path = os.path.join(ROOT, "topo", "topos.py")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace, namespace)  # noqa: S102 - as mn does
    return namespace


def test_mn_custom_classes_carry_tcp(mininet_teardown, tmp_path):
    from mininet.net import Mininet

    from topo.launch import ListeningController  # RemoteController's telnet check can crash

    custom = load_custom_file()
    host, switch = custom["hosts"]["measure"], custom["switches"]["ovsu"]
    assert {"tree", "linear", "fattree", "loop"} <= set(custom["topos"])
    of_port, rest_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "MEASURE_STATE_DIR": str(tmp_path / "state"),
           "MEASURE_TOKEN_FILE": str(tmp_path / "token"),
           "MEASURE_SECRET_FILE": str(tmp_path / "secret")}
    with open(tmp_path / "controller.log", "w") as log:
        ctl = subprocess.Popen([sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port",
                                str(of_port), "--wsapi-port", str(rest_port),
                                "--observe-links", "ryu_app.app"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    net = None
    try:
        wait_for_port("127.0.0.1", of_port, timeout=30, proc=ctl)
        net = Mininet(topo=custom["topos"]["linear"](k=2, n=1), host=host, switch=switch,
                      controller=partial(ListeningController, ip="127.0.0.1", port=of_port))
        net.start()
        h1, h2 = net.get("h1", "h2")
        assert "tx-checksumming: off" in h1.cmd("ethtool -k h1-eth0")
        assert any(net.pingAll(timeout="1") == 0 for _ in range(3))  # the first may lose ARP
        server = h2.popen(["iperf", "-s", "-p", "5001"])
        try:
            wait_until(lambda: "LISTEN" in h2.cmd("ss -ltn 'sport = :5001'"), timeout=10,
                       message="iperf server on h2")
            out = h1.cmd("timeout 20 iperf -c 10.0.0.2 -p 5001 -t 2")
        finally:
            stop_process(server)
        assert "bits/sec" in out and "connected with 10.0.0.2" in out, out
    finally:
        if net is not None:
            net.stop()
        stop_process(ctl)
