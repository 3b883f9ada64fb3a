"""The ``measure`` CLI: offline check, table rendering, and real HTTP round trips."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from measure_cli.cli import main
from measure_cli.render import (
    render_bandwidth,
    render_events,
    render_history,
    render_overlay,
    render_result,
    render_table,
    render_tasks,
    render_topology,
)
from testing.checks import some
from testing.harness import POLICY_FILE as POLICY
from testing.netns import ROOT
from testing.procs import wait_until


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


def test_check_reports_every_error_with_did_you_mean(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: hh-1\n    kind: heavy_hitters\n    threshhold: 0.1\n"
                   "    key: srcdst\n    filter: {proto: icmp, intreface: INPUT}\n"
                   "  - name: fine\n    kind: flow_size\n  - name: Bad\n    kind: nope\n")
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "measure: 4 errors:",
        "policy bad.yaml: task hh-1: unknown field 'threshhold' (did you mean 'threshold'?)",
        "policy bad.yaml: task hh-1: unknown field 'filter.intreface' (did you mean "
        "'filter.interface'?)",
        "policy bad.yaml: task hh-1: key 'srcdst' is not one of src, dst, src_dst, sport, "
        "dport, src_dport, dst_dport, proto, five_tuple",
        "policy bad.yaml: task #3: name 'Bad' does not match [a-z0-9][a-z0-9_.-]{0,62}"]


def test_check_shows_a_yaml_error_with_its_line_and_a_caret(tmp_path, capsys):
    bad = tmp_path / "indent.yaml"
    bad.write_text("tasks:\n  - name: hh-1\n    kind: heavy_hitters\n   key: src\n")
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "measure: policy indent.yaml:4:4: invalid YAML: expected <block end>, but found "
        "'<block mapping start>'",
        "       key: src",
        "       ^"]


def test_console_script_needs_no_controller_for_check():
    proc = subprocess.run([sys.executable, "-m", "measure_cli.cli", "--url", "http://127.0.0.1:1",
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


@pytest.fixture
def utc(monkeypatch):
    """Local time = UTC, so rendered clock times are fixed."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


AGENTS = [{"name": f"h{n}", "data_ip": f"10.0.0.{n}", "host": f"00:00:00:00:00:0{n}",
           "up": True, "url": f"http://192.168.100.{n}:8000", "parent": None}
          for n in (2, 5, 6)]


def test_render_result_heading_per_kind(utc):
    hh = {"task_id": "3", "host": "*", "kind": "heavy_hitters", "age": 1.5,
          "interval_end": 3600.0, "key": "src_dst", "increment": "bytes", "packets": 30,
          "bytes": 2520.0, "total": 2520.0, "threshold": {"fraction": 0.05},
          "covered": ["h2", "h5"], "missing": ["h6"],
          "heavy_hitters": {"10.0.0.6,10.0.0.5": 168, "10.0.0.2,10.0.0.5": 1512},
          "distinct": {"estimate": 2}}
    assert render_result(hh, {"name": "hh-1"}, AGENTS) == "\n".join([
        "task 3 (hh-1): heavy hitters, all hosts, interval ending 01:00:00 (1.5 s ago)",
        "covered 2: h2, h5  missing 1: h6",
        "packets 30  bytes 2520  distinct keys ~2",
        "heavy hitters (>= 5% of 2520 bytes)",
        "SRC_DST            HOSTS     COUNT  SHARE",
        "10.0.0.2,10.0.0.5  h2 -> h5   1512  60.0%",
        "10.0.0.6,10.0.0.5  h6 -> h5    168  6.7%",
    ])
    quiet = {**hh, "heavy_hitters": {}}
    assert render_result(quiet).splitlines()[-1] == \
        "no heavy hitters: no key reached 5% of 2520 bytes"
    flows = {"task_id": "1", "host": "h5", "age": 0, "interval_end": 3600, "key": "src_dst",
             "total": 336, "top_k": [["10.0.0.6,10.0.0.5", 168], ["10.0.0.1,10.0.0.5", 168]]}
    text = render_result(flows, {"kind": "flow_size", "name": "fs"}, AGENTS)
    assert text.splitlines()[0] == "task 1 (fs): flow sizes, host h5, interval ending 01:00:00 " \
        "(0 s ago)"
    assert "flows, largest first (2)" in text and "h6 -> h5" in text and "?" in text
    assert "heavy hitters" not in text
    assert render_result({**flows, "top_k": []}, {"kind": "flow_size"}).endswith(
        "no flows counted yet")
    elastic = {**flows, "increment": "bytes", "top_k": [], "flow_size": {
        "histogram": {"84": 2.0, "168": 62.0}, "flows": 64.0,
        "largest": [["10.0.0.6,10.0.0.5", 168, True], ["10.0.0.1,10.0.0.5", 84, False],
                    ["10.0.0.10,10.0.0.5", 84, False]]}}
    lines = render_result(elastic, {"kind": "flow_size"}, AGENTS).splitlines()
    assert lines[1] == "~64 flows; by size: 168 bytes x 62, 84 bytes x 2"
    assert lines[2:5] == ["flow sizes (bytes, power-of-two bins: flows of at least that size)",
                          " >= 64 |#                              2",
                          ">= 128 |############################## 62"]
    assert lines[5] == "flows, largest first (3)" and "h6 -> h5" in lines[7]
    assert [line.split()[0] for line in lines[8:]] == ["10.0.0.1,10.0.0.5", "10.0.0.10,10.0.0.5"]
    scan = {"task_id": "2", "kind": "port_scan", "age": 0, "total": 9,
            "covered": ["h5"], "missing": [], "scanners": {"10.0.0.6": 85}}
    lines = render_result(scan, None, AGENTS).splitlines()
    assert lines[-3:] == ["port scans (distinct destination ports per source in one window)",
                          "SRC       HOST  PORTS", "10.0.0.6  h6       85"]
    assert render_result({**scan, "scanners": {}}).endswith("no port scan seen in this interval")
    assert "heavy hitters" not in render_result({**scan, "scanners": {}})


def test_render_history_rows_are_per_interval(utc):
    history = {"task_id": "1", "host": "*", "results": [
        {"interval_end": 3610.0, "covered": ["h5"], "missing": [], "total": 900,
         "heavy_hitters": {"10.0.0.6": 500}},
        {"interval_end": 3605.0, "covered": ["h5"], "missing": [], "total": 600,
         "heavy_hitters": {"10.0.0.6": 300}},
        {"interval_end": 3600.0, "covered": ["h5"], "missing": [], "total": 100}]}
    assert render_history(history, "heavy_hitters") == (
        "task 1  host *  (newest first; COUNTED = in that interval)\n"
        "INTERVAL END  COVERED  MISSING  COUNTED  TOTAL  TOP HEAVY HITTER\n"
        "01:00:10            1        0      300    900  10.0.0.6 500\n"
        "01:00:05            1        0      500    600  10.0.0.6 300\n"
        "01:00:00            1        0        -    100  -")


def test_render_tasks_counts_the_agents_of_the_scope():
    tasks: list[dict] = [
        {"id": "1", "name": "hh", "kind": "heavy_hitters", "status": "partial",
         "scope": "global", "agents": {"h2": "ok", "h5": "error: timeout"},
         "last_error": "failed on h5"},
        {"id": "2", "name": "scan", "kind": "port_scan", "status": "active",
         "task": {"scope": ["10.0.0.5"]}, "agents": {"h2": "ok", "h5": "ok", "h6": "ok"},
         "last_error": None},
        {"id": "3", "name": "bw", "kind": "bandwidth", "status": "pending", "agents": {},
         "last_error": None}]
    assert render_tasks(tasks, AGENTS) == (
        "ID  NAME  KIND           STATUS   SCOPE   AGENTS OK  ERROR\n"
        "1   hh    heavy_hitters  partial  global  1/2        failed on h5\n"
        "2   scan  port_scan      active   h5      1/1        -\n"
        "3   bw    bandwidth      pending  global  -          -")
    assert render_tasks([]) == "no tasks"


def test_render_overlay_topology_with_host_names():
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
            "hosts": [{"mac": "00:00:00:00:00:05", "ips": ["10.0.0.5"],
                       "dpid": "0000000000000001", "port": 1},
                      {"mac": "00:00:00:00:00:01", "ips": ["10.0.0.1"],
                       "dpid": "0000000000000001", "port": 2}]}
    assert render_topology(topo, AGENTS) == (
        "SWITCH            PORTS\n0000000000000001  1,2\n\n"
        "LINK              PORT  TO                PORT\n"
        "0000000000000001     2  0000000000000002     1\n\n"
        "HOST  MAC                IPS       SWITCH            PORT\n"
        "h5    00:00:00:00:00:05  10.0.0.5  0000000000000001     1\n"
        "-     00:00:00:00:00:01  10.0.0.1  0000000000000001     2")


def test_render_events_in_words_with_local_times(utc):
    events = [{"id": 1, "ts": 3600.0, "task_id": "2", "kind": "port_scan", "src": "10.0.0.6",
               "ports": 85, "dsts": ["10.0.0.5"], "interval_end": 3600.0},
              {"id": 2, "ts": 3601.0, "task_id": "1", "kind": "coverage", "covered": 7,
               "missing": ["h3"], "interval_end": 3601.0}]
    assert render_events(events) == (
        "ID  TIME      TASK  KIND       WHAT\n"
        " 1  01:00:00  2     port_scan  10.0.0.6 touched 85 ports of 10.0.0.5\n"
        " 2  01:00:01  1     coverage   7 agents covered; missing h3")
    assert render_events(events[1:], header=False).startswith(" 2  01:00:01")


def test_apply_tasks_result_over_http(controller, capsys):
    harness, url, token = controller
    base = ["--url", url, "--token-file", token]
    assert main(["--url", url, "apply", POLICY]) == 1
    assert capsys.readouterr().err == (
        "measure: HTTP 401: missing bearer token (send 'Authorization: Bearer <token>'); "
        "no token given: pass --token-file or set MEASURE_TOKEN_FILE (measure-net prints the "
        "run directory holding controller.token)\n")
    stale = os.path.join(os.path.dirname(token), "stale.token")
    with open(stale, "w") as f:
        f.write("s" * 40 + "\n")
    assert main(["--url", url, "--token-file", stale, "tasks"]) == 1
    assert capsys.readouterr().err.endswith(
        f"; the token from {stale} does not match this controller's ({url}): pass "
        "--token-file or set MEASURE_TOKEN_FILE to its controller.token\n")
    assert main([*base, "apply", POLICY]) == 1  # its scope, h5, is not known yet
    assert capsys.readouterr().err == (
        "measure: HTTP 404: task hh-icmp-h5: scope host 'h5' is not a known agent (name, "
        "data address or URL host)\n")
    assert main([*base, "tasks"]) == 0 and "hh-icmp" not in capsys.readouterr().out
    for i in (1, 5):  # agents register with a signature; here straight to the service
        harness.service.register_agent({"name": f"h{i}", "url": f"http://192.168.100.{i}:8000",
                                        "data_ip": f"10.0.0.{i}"})
    assert main([*base, "apply", POLICY]) == 0
    assert capsys.readouterr().out == "task 1: hh-icmp-h5\n"
    assert main([*base, "apply", POLICY]) == 1
    assert capsys.readouterr().err == ("measure: HTTP 409: task name 'hh-icmp-h5' is already "
                                       "used by task 1; delete it first\n")
    harness.tick()
    assert main([*base, "tasks"]) == 0
    assert capsys.readouterr().out == (
        "ID  NAME        KIND           STATUS  SCOPE  AGENTS OK  ERROR\n"
        "1   hh-icmp-h5  heavy_hitters  active  h5     1/1        -\n")
    assert main([*base, "result", "1"]) == 1
    assert capsys.readouterr().err == "measure: HTTP 404: no result yet for task 1 (active)\n"
    assert main([*base, "result", "1", "--host", "10.0.0.3"]) == 1
    assert capsys.readouterr().err == ("measure: task 1: 10.0.0.3 runs no agent, so it has no "
                                       "result (agents: h1, h5)\n")
    assert main([*base, "result", "1", "--host", "10.0.0.5"]) == 1  # h5: not yet
    assert capsys.readouterr().err == ("measure: HTTP 404: no result yet for task 1 for host "
                                       "h5 (active)\n")
    assert main([*base, "overlay"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["h1", "`-- h5"]
    assert main([*base, "bw", "h1", "h5", "--json"]) == 0
    assert '"mbit_s": 9.6' in capsys.readouterr().out
    assert main([*base, "bw", "10.0.0.1", "10.0.0.5"]) == 0  # data IPs, as the Mininet CLI sends
    assert "9.6" in capsys.readouterr().out.splitlines()[0]
    assert main([*base, "history", "1"]) == 0
    assert capsys.readouterr().out == "task 1: no results yet\n"
    from testing.harness import hh_report

    for end, hh in ((1000.0, {"10.0.0.1,10.0.0.5": 700}), (1005.0, {})):
        harness.clock = end
        assert harness.service.ingest_report(hh_report("1", ["h1", "h5"], [], end, hh))
    assert main([*base, "history", "1", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["INTERVAL", "END", "COVERED", "MISSING", "COUNTED", "TOTAL",
                                "TOP", "HEAVY", "HITTER"]
    assert [line.split()[1:] for line in lines[2:]] == [
        ["2", "0", "-", "0", "-"], ["2", "0", "-", "700", "10.0.0.1,10.0.0.5", "700"]]
    assert main([*base, "result", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "no heavy hitters: no key reached 50% of 0 bytes")
    assert main([*base, "events"]) == 0
    assert "10.0.0.1,10.0.0.5 became a heavy hitter with 700" in capsys.readouterr().out
    assert main([*base, "delete", "1"]) == 0
    assert capsys.readouterr().out == "task 1 deleted\n"


def test_events_follow_prints_new_events_until_ctrl_c(controller):
    import signal
    import time

    from testing.harness import hh_report

    harness, url, token = controller
    from measure_model.task import parse_task

    harness.service.apply_tasks([parse_task({"name": "hh", "kind": "heavy_hitters"}, "test")])
    env = {**os.environ, "PYTHONPATH": ROOT, "MEASURE_URL": url, "MEASURE_TOKEN_FILE": token}
    proc = subprocess.Popen([sys.executable, "-m", "measure_cli.cli", "events", "--follow",
                             "--interval", "0.2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(some(proc.stdout)), daemon=True)
    try:
        reader.start()
        for end, key in ((1000.0, "10.0.0.1,10.0.0.5"), (1005.0, "10.0.0.2,10.0.0.5")):
            time.sleep(0.5)
            harness.clock = end
            harness.service.ingest_report(hh_report("1", ["h1"], [], end, {key: 700}))
        # interrupt once both events are printed (a busy machine may take seconds to
        # start the CLI: a Ctrl-C during its imports would test nothing of --follow)
        wait_until(lambda: len(lines) >= 3, timeout=60, message="both events printed")
        time.sleep(0.5)  # a few more polls: nothing is printed twice
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=10)
        took = time.monotonic() - sent
        reader.join(5)
        err = some(proc.stderr).read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err == "", err
    assert took < 2.0  # at once, even under load
    lines = [line.rstrip("\n") for line in lines]
    assert lines[0].split() == ["ID", "TIME", "TASK", "KIND", "WHAT"]
    assert "10.0.0.1,10.0.0.5 became a heavy hitter with 700" in lines[1]
    assert "10.0.0.2,10.0.0.5 became a heavy hitter with 700" in lines[2]
    assert len(lines) == 3  # each event once, one header


def test_bandwidth_reply_is_a_headline_and_a_table_in_the_order_of_the_result_body():
    from host_agent.bandwidth.estimate import result_json

    reply = result_json("10.0.0.5", "10.0.0.6", "slops", 9.9816, 9.5, 10.25, 2.0004, 120000, 1,
                        label="available bandwidth (SLoPS)", capacity_mbit_s=193.7,
                        at_least=False)
    lines = render_bandwidth(reply).splitlines()
    assert lines[0] == "available bandwidth (SLoPS) 10.0.0.5 -> 10.0.0.6: 9.982 Mbit/s"
    assert lines[1].split() == ["FIELD", "VALUE", "NOTE"]
    assert [line.split()[0] for line in lines[2:]] == [
        "src", "dst", "method", "mbit_s", "mbytes_s", "range_mbit_s", "duration_s",
        "probe_bytes", "streams", "label", "at_least", "capacity_mbit_s"]
    assert lines[7].split(None, 2)[:2] == ["range_mbit_s", "9.5"]
    assert "9.5 .. 10.25" in lines[7] and "[" not in render_bandwidth(reply)
    assert "path capacity from one back-to-back train" in lines[-1]
    capped = render_bandwidth({**reply, "at_least": True, "mbit_s": 1000.0,
                               "range_mbit_s": [1000.0, 1000.0]}).splitlines()
    assert capped[0].endswith("10.0.0.6: 1000.0 Mbit/s")
    assert capped[1] == "(at least: the path takes more than the probe may send)"


# ---------------------------------------------------------------- Mininet

@pytest.mark.mininet
def test_controller_acceptance_on_a_mininet_tree(mininet_teardown, tmp_path):
    """Tree depth 2 fanout 3, agents on all hosts, CLI in a host, restart."""
    import requests

    from measure_common.auth import load_or_create_secret, to_agent
    from testing.procs import free_port, stop_process, wait_until
    from topo.launch import MeasureNetwork, Options

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
                                auth=to_agent(secret, f"h{i}"))
            assert resp.status_code == 200 and resp.json()["tasks"] == ["1"], (i, resp.text)

        epoch = net.rest("/measure/v1/overlay")[1]["epoch"]
        stop_process(some(net.controller))
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


def test_a_closed_pipe_ends_the_command_without_a_traceback():
    import subprocess
    import sys as _sys

    policy = os.path.join(os.path.dirname(POLICY), "flows.yaml")
    proc = subprocess.Popen([_sys.executable, "-m", "measure_cli", "check", policy],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    some(proc.stdout).close()  # the reader is gone before the first line
    err = some(proc.stderr).read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and err == ""


def _results_of(kind: str, fields: dict) -> dict:
    """The controller's global result of a task of ``kind`` after three intervals of a
    real counter's traffic (h1 to a growing set of hosts), with interval figures."""
    import json as _json

    import numpy as np

    from host_agent.counters.countmin import Counter, CounterSpec
    from host_agent.counters.elastic import ElasticCounter
    from measure_model import interval
    from measure_model.packet.keys import HeaderBatch
    from measure_model.task import Task
    from ryu_app.service.results import MemoryStore, Results

    task = Task.from_dict({"name": kind, "kind": kind, **fields})
    counter = ElasticCounter(task, 0.0) if task.memory else \
        Counter(CounterSpec.from_task(task), 0.0)
    results, mark = Results(MemoryStore()), None
    for i, end in enumerate((5.0, 10.0, 15.0)):
        n = 100 + 400 * i
        src = np.r_[np.full(n, 1), np.full(50, 2)]
        dst = np.r_[np.arange(n) % (3 + 2 * i) + 5, np.full(50, 9)]
        counter.update(HeaderBatch.from_arrays(
            0x0A000000 + src, 0x0A000000 + dst, np.full(src.shape[0], 17),
            np.full(src.shape[0], 1000), np.arange(src.shape[0]) % 40 + 80,
            np.full(src.shape[0], 500)), end - 1)
        snap = _json.loads(_json.dumps(counter.snapshot(end)))
        snap["monitor"] = {"counting_since": 0.0}
        snap["interval"], mark = interval.section(mark, snap, end)
        del snap["monitor"]
        results.ingest({"task_id": "7", "interval_end": end, "snapshot": snap, "kind": kind,
                        "covered": ["h1", "h5"], "missing": [], "generated_at": end,
                        "oldest": end}, now=end)
    return some(results.latest("7", now=15.5))


@pytest.mark.parametrize("kind, fields, expected", [
    ("heavy_hitters", {"key": "src_dst", "increment": "bytes"},
     [r"^now: \d[\d.]* [kM]?bit/s, \d[\d.]* k?pkt/s \(last 5 s interval\)",
      r"^heavy now \(>= 5% of \d+ bytes in the last interval\)",
      r"^SRC_DST\s+HOSTS\s+COUNT\s+SHARE\s+NOW$",
      r"^10\.0\.0\.1,10\.0\.0\.5\s+h1 -> h5\s+\d+\s+[\d.]+%\s+[\d.]+ [kM]?bit/s$",
      r"^heavy hitters since the task started"]),
    ("counter", {"key": "src", "increment": "pkt"},
     [r"^now: ", r"^top keys \(2\)", r"^10\.0\.0\.1\s+h1\s+\d+\s+[\d.]+%\s+[\d.]+ k?pkt/s$"]),
    ("flow_size", {"key": "src_dst", "increment": "bytes", "memory": 65536},
     [r"^~\d+ flows; by size: ", r"^flow sizes \(bytes, power-of-two bins",
      r"^\s*>= \d+ \|#+\s+\d", r"^flows, largest first"]),
    ("entropy", {"key": "src_dst", "memory": 65536},
     [r"^entropy [\d.]+ bits \(normalized [\d.]+, 0\.\.1\) over ~\d+ keys in the last "
      r"interval; exact share \d+%; since start [\d.]+ bits$"]),
    ("cardinality", {"key": "src_dst", "memory": 65536},
     [r"^distinct src_dst keys since start: ~8 \(\+- [\d.]+ std\. error",
      r"^in the last interval: ~\d+ \(\+- [\d.]+\)$"]),
    ("heavy_changers", {"key": "src_dst", "memory": 65536, "threshold": 0.1},
     [r"^heavy changers \(change >= [\d.]+ between the last two intervals\)",
      r"^SRC_DST\s+HOSTS\s+BEFORE\s+AFTER\s+CHANGE\s+\+-$",
      r"^10\.0\.0\.1,10\.0\.0\.\d+\s+h1 -> \S+\s+\d+\s+\d+\s+[+-]\d+"]),
    ("superspreaders", {"key": "src_dst", "memory": 65536, "min_distinct": 3},
     [r"^sources reaching at least 3 distinct peers, since the task started$",
      r"^KEY\s+HOST\s+DISTINCT\s+\+-$", r"^10\.0\.0\.1\s+h1\s+[\d.]+\s+[\d.]+$"]),
])
def test_measure_result_prints_each_kinds_answer(kind, fields, expected):
    import re

    agents = [{"name": f"h{n}", "data_ip": f"10.0.0.{n}"} for n in (1, 2, 5)]
    text = render_result(_results_of(kind, fields), {"kind": kind, "name": kind}, agents)
    lines = text.splitlines()
    for pattern in expected:
        assert any(re.search(pattern, line) for line in lines), (pattern, text)
    assert "{" not in text  # an answer in words and tables, never JSON
