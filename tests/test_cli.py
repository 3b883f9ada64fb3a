"""The ``measure`` CLI: offline check, table rendering, and real HTTP round trips."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from ryu_app.cli import (
    main,
    render_overlay,
    render_result,
    render_table,
    render_tasks,
    render_topology,
)
from tests.helpers import ROOT

POLICY = os.path.join(ROOT, "policies", "heavy_hitter.yaml")


def test_check_valid_policy(capsys):
    assert main(["check", POLICY]) == 0
    assert capsys.readouterr().out == \
        "policy heavy_hitter.yaml: 1 task(s) valid: hh-icmp-h5 (heavy_hitters)\n"


def test_check_invalid_policy_exits_1_with_the_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: hh-1\n    kind: heavy_hitters\n    key: srcdst\n")
    assert main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("measure: policy bad.yaml: task hh-1: key 'srcdst' is not one of "
                            "src, dst, src_dst, sport, dport, src_dport, dst_dport, proto, "
                            "five_tuple\n")
    assert main(["check", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().err == (f"measure: cannot read {tmp_path / 'missing.yaml'}: "
                                       "No such file or directory\n")


def test_console_script_needs_no_controller_for_check():
    proc = subprocess.run([sys.executable, "-m", "ryu_app.cli", "--url", "http://127.0.0.1:1",
                           "check", POLICY], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "1 task(s) valid" in proc.stdout


def test_unreachable_controller_exits_2(capsys):
    assert main(["--url", "http://127.0.0.1:1", "tasks"]) == 2
    assert capsys.readouterr().err.startswith(
        "measure: cannot reach the controller at http://127.0.0.1:1: ")


def test_render_table_aligns_numbers_right():
    assert render_table(["KEY", "COUNT"], [["10.0.0.2", 5], ["10.0.0.10", 1200]]) == (
        "KEY        COUNT\n"
        "10.0.0.2       5\n"
        "10.0.0.10   1200")


def test_render_result_tables():
    result = {"task_id": "3", "host": "*", "kind": "heavy_hitters", "age": 1.5,
              "key": "src_dst", "packets": 30, "bytes": 2520.0, "total": 2520.0,
              "covered": ["h1", "h2"], "missing": ["h3"],
              "heavy_hitters": {"10.0.0.6,10.0.0.5": 168, "10.0.0.2,10.0.0.5": 1512},
              "top_k": [["10.0.0.2,10.0.0.5", 1512], ["10.0.0.6,10.0.0.5", 168]],
              "scanners": {"10.0.0.6": 85}, "distinct": {"estimate": 2}}
    assert render_result(result) == "\n".join([
        "task 3  host *  kind heavy_hitters  age 1.5s",
        "covered 2: h1, h2  missing 1: h3",
        "packets 30  bytes 2520  total 2520",
        "heavy hitters",
        "SRC_DST            COUNT",
        "10.0.0.2,10.0.0.5   1512",
        "10.0.0.6,10.0.0.5    168",
        "top k",
        "SRC_DST            COUNT",
        "10.0.0.2,10.0.0.5   1512",
        "10.0.0.6,10.0.0.5    168",
        "port scans",
        "SRC       PORTS",
        "10.0.0.6     85",
        "distinct keys ~2",
    ])
    assert render_result({"task_id": "4", "kind": "counter", "age": 0, "covered": ["h1"],
                          "missing": [], "total": 0}) == (
        "task 4  host *  kind counter  age 0s\ncovered 1: h1  (complete)\ntotal 0\n"
        "no heavy hitters")
    assert render_result({"task_id": "5", "host": "*", "kind": "bandwidth", "age": 2.0,
                          "method": "slops", "src": "h5", "dst": "h6", "mbit_s": 9.6}) == (
        "task 5  host *  kind bandwidth  age 2.0s\n"
        "FIELD   VALUE\nmethod  slops\nsrc     h5\ndst     h6\nmbit_s  9.6")


def test_render_tasks_overlay_topology():
    tasks = [{"id": "1", "name": "hh", "kind": "heavy_hitters", "status": "partial",
              "agents": {"h1": "ok", "h2": "error: timeout"}, "last_error": "failed on h2"},
             {"id": "2", "name": "bw", "kind": "bandwidth", "status": "pending", "agents": {},
              "last_error": None}]
    assert render_tasks(tasks) == (
        "ID  NAME  KIND           STATUS   AGENTS OK  ERROR\n"
        "1   hh    heavy_hitters  partial  1/2        failed on h2\n"
        "2   bw    bandwidth      pending  -          -")
    assert render_tasks([]) == "no tasks"
    overlay = {"root": "h1", "epoch": 3, "depth": 2, "fanout": 2,
               "parent": {"h1": None, "h2": "h1", "h3": "h1", "h4": "h2", "h5": "h2"},
               "children": {"h1": ["h2", "h3"], "h2": ["h4", "h5"]}, "unlocated": ["h5"]}
    assert render_overlay(overlay) == (
        "epoch 3  depth 2  fanout 2  agents 5\n"
        "h1\n"
        "|-- h2\n"
        "|   |-- h4\n"
        "|   `-- h5\n"
        "`-- h3\n"
        "not located in the topology: h5")
    assert render_overlay({"root": None, "epoch": 0}) == "epoch 0: no live agents"
    topo = {"switches": [{"dpid": "0000000000000001", "ports": [1, 2]}],
            "links": [{"src": {"dpid": "0000000000000001", "port": 2},
                       "dst": {"dpid": "0000000000000002", "port": 1}}],
            "hosts": [{"mac": "00:00:00:00:00:01", "ips": ["10.0.0.1"],
                       "dpid": "0000000000000001", "port": 1}]}
    assert render_topology(topo) == (
        "SWITCH            PORTS\n0000000000000001  1,2\n\n"
        "LINK              PORT  TO                PORT\n"
        "0000000000000001     2  0000000000000002     1\n\n"
        "HOST               IPS       SWITCH            PORT\n"
        "00:00:00:00:00:01  10.0.0.1  0000000000000001     1")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def controller(tmp_path):
    """The real REST app and service on a loopback port (fake agents behind it)."""
    from ryu_app.auth_config import AuthConfig
    from tests.test_rest import Harness

    harness = Harness(str(tmp_path / "state"), auth=AuthConfig(token="k" * 40))
    server = make_server("127.0.0.1", 0, harness.wsgi, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("k" * 40 + "\n")
    try:
        yield harness, f"http://127.0.0.1:{server.server_port}", str(token)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_apply_tasks_result_over_http(controller, capsys):
    harness, url, token = controller
    base = ["--url", url, "--token-file", token]
    assert main(["--url", url, "apply", POLICY]) == 1
    assert capsys.readouterr().err == ("measure: HTTP 401: missing bearer token "
                                       "(send 'Authorization: Bearer <token>')\n")
    assert main([*base, "apply", POLICY]) == 0
    assert capsys.readouterr().out == "task 1: hh-icmp-h5\n"
    assert main([*base, "apply", POLICY]) == 1
    assert capsys.readouterr().err == ("measure: HTTP 409: task name 'hh-icmp-h5' is already "
                                       "used by task 1; delete it first\n")
    for i in (1, 5):  # agents register with a signature; here straight to the service
        harness.service.register_agent({"name": f"h{i}", "url": f"http://192.168.100.{i}:8000",
                                        "data_ip": f"10.0.0.{i}"})
    harness.tick()
    assert main([*base, "tasks"]) == 0
    assert capsys.readouterr().out == (
        "ID  NAME        KIND           STATUS  AGENTS OK  ERROR\n"
        "1   hh-icmp-h5  heavy_hitters  active  2/2        -\n")
    assert main([*base, "result", "1"]) == 1
    assert capsys.readouterr().err == "measure: HTTP 404: no result yet for task 1 (active)\n"
    assert main([*base, "overlay"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["h1", "`-- h5"]
    assert main([*base, "bw", "h1", "h5", "--json"]) == 0
    assert '"mbit_s": 9.6' in capsys.readouterr().out
    assert main([*base, "history", "1"]) == 0
    assert capsys.readouterr().out == "task 1: no results yet\n"
    from tests.test_rest import _report

    for end, hh in ((1000.0, {"10.0.0.1,10.0.0.5": 700}), (1005.0, {})):
        harness.clock = end
        assert harness.service.ingest_report(_report("1", ["h1", "h5"], [], end, hh))
    assert main([*base, "history", "1", "--limit", "5"]) == 0
    assert capsys.readouterr().out == (
        "task 1  host *\n"
        "INTERVAL END  AGE S  COVERED  MISSING  TOTAL  TOP HEAVY HITTER\n"
        "        1005      0        2        0      0  -\n"
        "        1000      5        2        0    700  10.0.0.1,10.0.0.5 700\n")
    assert main([*base, "delete", "1"]) == 0
    assert capsys.readouterr().out == "task 1 deleted\n"


def test_bandwidth_reply_is_a_table_in_the_order_of_the_result_body():
    from host_agent.bandwidth import result_json
    from ryu_app.cli import render_bandwidth

    reply = result_json("h1", "h5", "slops", 9.9816, 9.5, 10.25, 2.0004, 120000, 1,
                        label="available bandwidth")
    lines = render_bandwidth(reply).splitlines()
    assert lines[0].split() == ["FIELD", "VALUE"]
    assert [line.split()[0] for line in lines[1:]] == [
        "src", "dst", "method", "mbit_s", "mbytes_s", "range_mbit_s", "duration_s",
        "probe_bytes", "streams", "label"]
    assert lines[6].split(None, 1) == ["range_mbit_s", "[9.5, 10.25]"]


# ---------------------------------------------------------------- Mininet

@pytest.mark.mininet
def test_controller_acceptance_on_a_mininet_tree(mininet_teardown, tmp_path):
    """Issue 5: tree depth 2 fanout 3, agents on all hosts, CLI in a host, restart."""
    import requests

    from measure_model.auth import HmacAuth, load_or_create_secret
    from topo.launch import MeasureNetwork, Options
    from topo.procs import free_port, stop_process, wait_until

    opts = Options(rest_port=free_port(), controller_port=free_port(),
                   run_dir=str(tmp_path / "run"), lock=False, timeout=120)
    hosts = [f"h{i}" for i in range(1, 10)]
    everyone = {h: "ok" for h in hosts}
    with MeasureNetwork(opts) as net:
        status, topo = net.rest("/measure/v1/topology")
        assert status == 200 and len(topo["switches"]) == 4
        links = {frozenset((lk["src"]["dpid"], lk["dst"]["dpid"])) for lk in topo["links"]}
        assert links == {frozenset((f"{1:016x}", f"{s:016x}")) for s in (2, 3, 4)}
        assert sorted(ip for h in topo["hosts"] for ip in h["ips"]) == \
            sorted(f"10.0.0.{i}" for i in range(1, 10))

        overlay = wait_until(lambda: (o := net.rest("/measure/v1/overlay")[1])["root"] == "h1"
                             and o, timeout=20, message="overlay rooted at the centre")
        assert sorted(overlay["parent"]) == hosts and overlay["unlocated"] == []
        assert max(len(k) for k in overlay["children"].values()) <= overlay["fanout"] == 4
        assert overlay["depth"] <= 2

        applied = net.run_on("h1", ["measure", "apply", "policies/flow_size_distribution.yaml"],
                             timeout=30, capture=True)
        assert (applied.returncode, applied.stdout) == (0, "task 1: flow-size-icmp\n"), \
            applied.stderr
        wait_until(lambda: net.rest("/measure/v1/tasks/1")[1]["agents"] == everyone,
                   timeout=30, message="the task on every agent")
        secret, _ = load_or_create_secret(net.secret_file())
        for i in range(1, 10):  # ask each agent itself, over the management network
            resp = requests.get(f"http://192.168.100.{i}:8000/agent/v1/overlay", timeout=5,
                                auth=HmacAuth(secret))
            assert resp.status_code == 200 and resp.json()["tasks"] == ["1"], (i, resp.text)

        epoch = net.rest("/measure/v1/overlay")[1]["epoch"]
        stop_process(net.controller)
        net.start_controller()
        status, body = net.rest("/measure/v1/tasks")
        assert [(t["id"], t["name"]) for t in body["tasks"]] == [("1", "flow-size-icmp")]
        wait_until(lambda: (t := net.rest("/measure/v1/tasks/1")[1])["agents"] == everyone
                   and t["status"] == "active", timeout=60, message="task active again")
        assert net.rest("/measure/v1/overlay")[1]["epoch"] > epoch
        result = wait_until(lambda: (r := net.rest("/measure/v1/tasks/1/result"))[0] == 200
                            and r[1]["covered"] == hosts and r[1], timeout=30,
                            message="a result covering every agent")
        assert result["missing"] == [] and result["complete"] is True
        shown = net.run_on("h1", ["measure", "result", "1"], timeout=30, capture=True)
        assert shown.returncode == 0
        assert shown.stdout.splitlines()[1] == f"covered 9: {', '.join(hosts)}  (complete)"
    with open(tmp_path / "run" / "controller.log") as f:
        assert "Traceback" not in f.read()
