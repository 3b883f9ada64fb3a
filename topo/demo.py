"""The main job: a measured Mininet network doing its job, then gone.

Run it with ``./run.sh demo`` or ``python -m topo.demo`` (as root). It
brings up the original network (tree, depth 2, fanout 3: 4 switches, 9
hosts) under the project's controller with ``topo.launch.MeasureNetwork``,
runs a list of steps, prints a summary and exits, cleaning up everything
(no namespaces, bridges or processes of ours remain).

Steps (``STEPS``; each returns one summary line or raises):

1. ``pingall``: every host reaches every other host, 0% loss;
2. ``tcp``: an iperf3 TCP transfer h2 -> h9 for 2 s, reporting Mbit/s;
3. ``heavy hitters``: when the controller has the task API and agents are
   running, a global heavy-hitter task (ICMP by source, 1 s reports) goes
   to every agent through the overlay; once all agents report it, h1 pings
   three hosts at steady, different rates, and the first complete report
   whose heavy hitters are the expected ones (10.0.0.1 and 10.0.0.2) is
   printed. Skipped (and said so) while those parts are missing.

Exit status 0 when every step that ran passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from testing.procs import install_signal_handlers, stop_process, wait_until
from topo.launch import MeasureNetwork, Options, log


class Skipped(Exception):
    """A step that cannot run yet; reported, not a failure."""


@dataclass
class Step:
    name: str
    run: Callable[[MeasureNetwork], str]


def step_pingall(net: MeasureNetwork) -> str:
    loss = net.net.pingAll(timeout="1")
    if loss != 0:
        raise AssertionError(f"pingall lost {loss}% of pings")
    n = len(net.net.hosts)
    return f"{n * (n - 1)} pings between {n} hosts, 0% loss"


def step_tcp(net: MeasureNetwork, client: str = "h2", server: str = "h9",
             seconds: int = 2) -> str:
    srv = net.net.get(server)
    proc = srv.popen(["iperf3", "-s", "-1", "-p", "5201"])
    try:
        wait_until(lambda: srv.pexec(["ss", "-ltn", "sport = :5201"])[0].count("LISTEN"),
                   timeout=10, interval=0.2, message=f"iperf3 server on {server}")
        res = net.run_on(client, ["iperf3", "-c", srv.IP(), "-p", "5201", "-t", str(seconds),
                                  "-J"], timeout=seconds + 20, capture=True)
    finally:
        stop_process(proc)
    if res.returncode != 0:
        raise AssertionError(f"iperf3 failed ({res.returncode}): {res.stdout[-300:]}")
    end = json.loads(res.stdout)["end"]
    mbits = end["sum_received"]["bits_per_second"] / 1e6
    sent = end["sum_sent"]["bytes"]
    if mbits <= 0 or sent <= 0:
        raise AssertionError(f"iperf3 moved nothing: {end['sum_received']}")
    return f"iperf3 TCP {client} -> {server}: {mbits:.1f} Mbit/s ({sent} bytes in {seconds} s)"


HH_POLICY = {"tasks": [{
    "name": "demo-hh-icmp", "kind": "heavy_hitters",
    "filter": {"interface": "INPUT", "proto": "icmp"},
    "key": "src", "increment": "pkt", "threshold": 0.2,
    "report_interval": 1, "scope": "global"}]}
# h1 pings these hosts at steady rates (interval s, count), 5 s each, so every
# 1 s report sees about 20 + 5 + 1 echo requests from 10.0.0.1 (at h2, h3,
# h4) and 20, 5, 1 replies from 10.0.0.2, .3, .4 (at h1): the sources at or
# above 20% of the packets are 10.0.0.1 (~50%) and 10.0.0.2 (~38%).
HH_PINGS = {"h2": (0.05, 100), "h3": (0.2, 25), "h4": (1.0, 5)}
HH_EXPECTED = {"10.0.0.1", "10.0.0.2"}


def step_heavy_hitters(net: MeasureNetwork) -> str:
    if not net.agents:
        raise Skipped("no agents running")
    status, body = net.rest("/measure/v1/tasks", "POST", HH_POLICY)
    if status == 404:
        raise Skipped("the controller has no task API yet")
    if status != 201:
        raise AssertionError(f"POST /measure/v1/tasks: {status} {body}")
    task_id = _first_id(body)
    agents = set(net.agents)
    last: dict = {}

    def result(newer_than: float = 0.0, want: set | None = None) -> dict | None:
        code, data = net.rest(f"/measure/v1/tasks/{task_id}/result")
        if code != 200 or not isinstance(data, dict):
            return None
        last.update(data)
        if not data.get("complete") or not agents <= set(data.get("covered", [])):
            return None
        if data.get("interval_end", 0) <= newer_than:
            return None
        if want is not None and set(_heavy_hitters(data)) != want:
            return None
        return data

    pings = []
    try:
        wait_until(result, timeout=30, interval=0.2, message="every agent to report the task")
        h1 = net.net.get("h1")
        started = time.time()
        for host, (interval, count) in HH_PINGS.items():
            argv = ["ping", "-q", "-i", str(interval), "-c", str(count), net.net.get(host).IP()]
            pings.append(h1.popen(argv, env=net.host_env()))
        try:
            data = wait_until(lambda: result(started + 1.5, HH_EXPECTED), timeout=15,
                              interval=0.2, message="a complete 1 s report with heavy "
                                                    f"hitters {sorted(HH_EXPECTED)}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last result: {json.dumps(last)[:600]}") from None
    finally:
        for proc in pings:
            stop_process(proc)
        net.rest(f"/measure/v1/tasks/{task_id}", "DELETE")
    hh = _heavy_hitters(data)
    print(json.dumps({"task": task_id, "covered": data["covered"], "total": data.get("total"),
                      "heavy_hitters": hh, "top_k": data.get("top_k")}), flush=True)
    return (f"global heavy hitters (ICMP by src, >= 20% of {data.get('total')} packets in "
            f"one report, {len(data['covered'])} agents): {hh}")


def _first_id(body: object) -> str:
    if isinstance(body, dict):
        for key in ("ids", "tasks"):
            if key in body and body[key]:
                item = body[key][0]
                return str(item["id"] if isinstance(item, dict) else item)
        if "id" in body:
            return str(body["id"])
    raise AssertionError(f"no task id in {body!r}")


def _heavy_hitters(data: dict) -> dict:
    for container in (data, data.get("result") or {}, data.get("snapshot") or {}):
        if isinstance(container, dict) and isinstance(container.get("heavy_hitters"), dict):
            return container["heavy_hitters"]
    return {}


STEPS = [Step("pingall", step_pingall), Step("tcp", step_tcp),
         Step("heavy hitters", step_heavy_hitters)]


def run_steps(net: MeasureNetwork, steps: list[Step]) -> list[tuple[str, str, str]]:
    """Run each step; returns (name, PASS|FAIL|SKIP, line)."""
    results = []
    for step in steps:
        log(f"step: {step.name}")
        t0 = time.monotonic()
        try:
            line, state = step.run(net), "PASS"
        except Skipped as exc:
            line, state = f"skipped: {exc}", "SKIP"
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            line, state = f"{type(exc).__name__}: {exc}", "FAIL"
        results.append((step.name, state, f"{line} [{time.monotonic() - t0:.1f} s]"))
        log(f"{state} {step.name}: {line}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topo.demo", description=__doc__.split("\n")[0])
    p.add_argument("--controller-port", type=int, default=6653)
    p.add_argument("--rest-port", type=int, default=8080)
    p.add_argument("--no-lock", action="store_true", help="the caller holds the Mininet lock")
    p.add_argument("--run-dir", default=None)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo must run as root (Mininet)", file=sys.stderr)
        return 2
    install_signal_handlers()
    opts = Options(topo="tree", depth=2, fanout=3, controller_port=args.controller_port,
                   rest_port=args.rest_port, lock=not args.no_lock, run_dir=args.run_dir)
    t0 = time.monotonic()
    try:
        with MeasureNetwork(opts) as net:
            waited = net.timings.get("lock", 0.0)
            setup = time.monotonic() - t0 - waited
            results = run_steps(net, STEPS)
    except KeyboardInterrupt:
        log("interrupted: cleaned up")
        return 130
    print("\n=== demo summary ===")
    lock_note = f" (after {waited:.1f} s waiting for another Mininet run)" if waited > 1 else ""
    print(f"network: tree depth 2 fanout 3 (4 switches, 9 hosts), up in {setup:.1f} s"
          f"{lock_note}")
    for name, state, line in results:
        print(f"{state:4}  {name}: {line}")
    print(f"total {time.monotonic() - t0:.1f} s; everything stopped and removed")
    return 1 if any(state == "FAIL" for _, state, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
