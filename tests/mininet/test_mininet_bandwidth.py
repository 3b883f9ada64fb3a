"""Mininet tier: available bandwidth on TCLink(bw=10) links.

One tree network (depth 2, fanout 3, every link ``TCLink(bw=10)``, i.e. HTB
10 Mbit/s; userspace OVS) with the controller and an agent per host, started
once for the module through ``topo.launch.MeasureNetwork``. The probe runs
from h5 to h6 (h5 - s3 - h6); cross traffic goes from h4 to h6, so it shares
only the s3 -> h6 bottleneck with the probe, as a real competing flow does.

- the probe engine alone (``bwcli probe`` in h5 against a standalone
  ``bwcli serve`` in h6): five runs without and five with 4 Mbit/s of
  UDP cross traffic, all inside 15% of 10 and 20% of 6 Mbit/s;
- the same through the controller (``POST /measure/v1/bandwidth``), the
  original ``query bw`` message to h5's agent, and the ``measure bw`` CLI
  (agent-to-agent calls signed with the shared secret).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testing.procs import free_port, mininet_lock, stop_process, wait_until
from topo.launch import MeasureNetwork, Options

pytestmark = pytest.mark.mininet

PY = sys.executable
RUNS = 5
SERVE_PORT = 8100


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with mininet_lock():
        opts = Options(topo="tree", depth=2, fanout=3, bw=10, agents=True, allow_legacy=True,
                       lock=False, controller_port=free_port(), rest_port=free_port(),
                       run_dir=str(tmp_path_factory.mktemp("net-bw")), timeout=90)
        network = MeasureNetwork(opts)
        try:
            network.start()
            yield network
        finally:
            network.stop()
        with open(f"{network.run_dir}/controller.log", errors="replace") as f:
            text = f.read()
        assert "Traceback" not in text, f"controller logged a traceback:\n{text}"


def reachable(net: MeasureNetwork, host: str, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({ip!r}, {port}), 1).close()"
    return net.run_on(host, [PY, "-c", code], timeout=5, capture=True).returncode == 0


@pytest.fixture(scope="module")
def serve_h6(net):
    h6 = net.net.get("h6")
    proc = h6.popen([PY, "-m", "host_agent.bandwidth.cli", "serve", "--port", str(SERVE_PORT),
                     "--data-ip", h6.IP()], env=net.host_env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: reachable(net, "h5", h6.IP(), SERVE_PORT), timeout=20,
                   message="bwcli serve on h6")
        yield h6
    finally:
        stop_process(proc)


def probe(net: MeasureNetwork, h6) -> dict:
    out = net.run_on("h5", [PY, "-m", "host_agent.bandwidth.cli", "probe", "--src-ip", "10.0.0.5",
                            "--dst-ip", h6.IP(), "--dst-url", f"http://{h6.IP()}:{SERVE_PORT}"],
                     timeout=30, capture=True)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def cross(net: MeasureNetwork, seconds: float) -> subprocess.Popen:
    h4 = net.net.get("h4")
    return h4.popen([PY, "-m", "host_agent.bandwidth.cli", "cross", "--dst-ip", "10.0.0.6",
                     "--port", "9", "--rate-mbit", "4", "--duration", str(seconds)],
                    env=net.host_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)


def test_probe_engine_10_mbit_without_cross_traffic(net, serve_h6):
    results = [probe(net, serve_h6) for _ in range(RUNS)]
    estimates = [r.get("mbit_s") for r in results]
    print("mininet, no cross traffic:", estimates)
    assert all(e is not None and 8.5 <= e <= 11.5 for e in estimates), results
    assert all(r["duration_s"] <= 10.0 for r in results)


def test_probe_engine_6_mbit_with_4_mbit_cross_traffic(net, serve_h6):
    estimates = []
    for _ in range(RUNS):
        proc = cross(net, 10.5)
        result = probe(net, serve_h6)
        out, err = proc.communicate(timeout=20)
        assert 3.9 <= json.loads(out)["rate_mbit"] <= 4.1, (out, err)
        estimates.append(result.get("mbit_s"))
        assert estimates[-1] is not None and 4.8 <= estimates[-1] <= 7.2, (estimates, result)
    print("mininet, 4 Mbit/s cross traffic:", estimates)


def test_through_controller_rest_cli_and_original_message(net):
    status, body = net.rest("/measure/v1/bandwidth", method="POST",
                            body={"src": "h5", "dst": "h6", "method": "slops"})
    assert status == 200, body
    assert 8.5 <= body["mbit_s"] <= 11.5 and body["method"] == "slops", body
    assert (body["src"], body["dst"]) == ("h5", "h6")
    out = net.run_on("h1", ["curl", "-s", "-m", "30", "-X", "POST", "-d",
                            "type=query bw&src=10.0.0.5&dst=10.0.0.6", "http://10.0.0.5:8000/"],
                     timeout=35, capture=True)
    assert 8.5 / 8 <= float(out.stdout) <= 11.5 / 8, out.stdout
    out = net.run_on("h1", ["measure", "bw", "h5", "h6", "--json"], timeout=40, capture=True)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert 8.5 <= reply["mbit_s"] <= 11.5 and (reply["src"], reply["dst"]) == ("h5", "h6"), reply
