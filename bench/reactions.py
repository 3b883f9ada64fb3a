"""Benchmark: measurement event -> reaction flow installed on the switch (Mininet, OVS, Ryu).

Run (root; takes the Mininet lock, so it waits for any other Mininet network)::

    .venv/bin/python -m bench.reactions            # 16 repetitions, about 2.5 minutes
    .venv/bin/python -m bench.reactions --quick    # 6 repetitions
    .venv/bin/python -m bench reactions            # through the one benchmark runner

It brings up the original network (tree depth 2, fanout 3, an agent on each
of the nine hosts) with ``topo.launch.MeasureNetwork`` and applies one
``port_scan`` task (TCP ports 1..1024, ``report_interval`` = ``--interval``)
with ``on: [{event: port_scan, action: block, duration: 30}]``. Per
repetition a host (all but the victim h5, in turn) scans h5 with ``nc -z``
over 40 ports while this process polls the scanner's edge switch with
``ovs-ofctl dump-flows ... cookie=REAC/mask`` every few milliseconds until
the block flow is there; then the action is lifted (``DELETE actions/{id}``)
and the next repetition waits two intervals.

Figures (controller and this process share the clock: both run in the root
namespace):

- **event -> flow** (ms): from the ``port_scan`` event's ``ts`` (when the
  controller stored it, on the root agent's report) to the first dump
  holding the flow; this is the reaction's own cost: plan, SQLite, wake the
  ticker, flow-mod, OVS;
- **interval end -> flow** (ms): from the end of the interval that detected
  the scan (the event's ``interval_end``) to the flow: adds the overlay's
  aggregation of the report;
- **scan -> flow** (report intervals): from the scan's start to the flow.

The goal is a flow within the detecting interval plus 100 ms, i.e. interval
end -> flow <= 100 ms. The dump loop's period (about 5-15 ms, one
``ovs-ofctl`` run) is included in every figure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import mininet_parser, percentile, print_table, write_json

TARGET_MS = 100.0
VICTIM = "h5"
COOKIE_MATCH = "cookie=0x5245414300000000/0xffffffff00000000"


def block_task(interval: float) -> dict[str, Any]:
    return {"name": f"bench-react-{os.getpid()}", "kind": "port_scan",
            "filter": {"proto": "tcp", "dport": "1:1024"}, "report_interval": interval,
            "on": [{"event": "port_scan", "action": "block", "duration": 30}]}


def flow_present(switch: str) -> bool:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch, COOKIE_MATCH],
                         capture_output=True, text=True, timeout=10).stdout
    return "priority=" in out


def one_repetition(net, task_id: str, scanner: str, since: int, interval: float,
                   timeout: float) -> dict[str, Any]:
    """Scan h5 from ``scanner``; time the block flow on the scanner's switch."""
    host = net.net.get(scanner)
    link = host.intf().link
    switch = (link.intf2 if link.intf1.node == host else link.intf1).node.name
    victim = net.net.get(VICTIM).IP()
    t_scan = time.time()
    scan = host.popen(["nc", "-z", "-w1", victim, "1-40"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    t_flow = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flow_present(switch):
            t_flow = time.time()
            break
        time.sleep(0.002)
    scan.wait(timeout=30)
    _, body = net.rest(f"/measure/v1/events?since={since}")
    events = body.get("events", []) if isinstance(body, dict) else []
    scan_ev = next((e for e in events if e["kind"] == "port_scan" and e["task_id"] == task_id
                    and e.get("src") == host.IP()), None)
    taken = next((e for e in events if e["kind"] == "action" and e.get("state") == "taken"
                  and scan_ev is not None and e.get("cause") == scan_ev["id"]), None)
    if taken is not None:
        net.rest(f"/measure/v1/actions/{taken['action_id']}", "DELETE")
    last = max([since, *(e["id"] for e in events)])
    if t_flow is None or scan_ev is None:
        return {"scanner": scanner, "error": "no block flow" if t_flow is None else "no event",
                "last_event": last}
    return {"scanner": scanner, "switch": switch, "t_scan": t_scan, "t_flow": t_flow,
            "event_ts": scan_ev["ts"], "interval_end": scan_ev["interval_end"],
            "event_to_flow_ms": (t_flow - scan_ev["ts"]) * 1000,
            "interval_end_to_flow_ms": (t_flow - scan_ev["interval_end"]) * 1000,
            "scan_to_flow_intervals": (t_flow - t_scan) / interval, "last_event": last}


def run(reps: int, interval: float, opts_kw: dict[str, Any]) -> dict[str, Any]:
    from topo.launch import MeasureNetwork, Options

    t0 = time.monotonic()
    opts = Options(topo="tree", depth=2, fanout=3, **opts_kw)
    with MeasureNetwork(opts) as net:
        setup_s = time.monotonic() - t0
        status, body = net.rest("/measure/v1/tasks", "POST", block_task(interval))
        if status != 201:
            raise RuntimeError(f"POST /measure/v1/tasks: {status} {body}")
        task_id = str(body["tasks"][0]["id"])
        time.sleep(3 * interval)  # installed on every agent, a first result in
        scanners = [h.name for h in net.net.hosts if h.name != VICTIM]
        runs: list[dict[str, Any]] = []
        since = 0
        try:
            for k in range(reps):
                r = one_repetition(net, task_id, scanners[k % len(scanners)], since, interval,
                                   timeout=6 * interval + 5)
                since = r["last_event"]
                runs.append(r)
                shown = (r["error"] if "error" in r else
                         f"event -> flow {r['event_to_flow_ms']:.1f} ms, interval end -> flow "
                         f"{r['interval_end_to_flow_ms']:.1f} ms, scan -> flow "
                         f"{r['scan_to_flow_intervals']:.2f} intervals")
                print(f"  repetition {k + 1}/{reps} ({r['scanner']}): {shown}", flush=True)
                time.sleep(2 * interval)  # the scanner leaves the scanners' set
        finally:
            net.rest(f"/measure/v1/tasks/{task_id}", "DELETE")
    return {"setup_s": setup_s, "runs": runs, "interval_s": interval,
            "total_s": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = mininet_parser(__doc__.splitlines()[0], interval=1.0)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.reactions needs root (Mininet)", file=sys.stderr)
        return 2
    reps = args.repeat or (6 if args.quick else 16)
    from topo.launch import install_signal_handlers

    install_signal_handlers()
    load_before = os.getloadavg()
    try:
        data = run(reps, args.interval, {"rest_port": args.rest_port,
                                         "controller_port": args.controller_port,
                                         "lock": not args.no_lock})
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        return 130
    ok = [r for r in data["runs"] if "error" not in r]
    rows = []
    for name, key, unit in (("event -> flow on the switch", "event_to_flow_ms", "ms"),
                            ("interval end -> flow on the switch", "interval_end_to_flow_ms",
                             "ms"),
                            ("scan start -> flow on the switch", "scan_to_flow_intervals",
                             "intervals")):
        values = [r[key] for r in ok]
        if values:
            data[f"{key}_median"] = statistics.median(values)
            data[f"{key}_p99"] = percentile(values, 99)
            rows.append([f"{name} ({unit})", f"{data[f'{key}_median']:.2f}",
                         f"{data[f'{key}_p99']:.2f}", f"{min(values):.2f}",
                         f"{max(values):.2f}"])
    data["failures"] = len(data["runs"]) - len(ok)
    data["load_before"] = load_before
    data["load_after"] = os.getloadavg()
    data["meets_target"] = bool(ok) and data.get("interval_end_to_flow_ms_p99", 1e9) <= TARGET_MS
    print_table(f"reaction latency, {len(ok)} of {len(data['runs'])} repetitions, report "
                f"interval {args.interval:g} s (load {load_before[0]:.1f} -> "
                f"{data['load_after'][0]:.1f})",
                ["figure", "median", "p99", "min", "max"], rows)
    print(f"target: interval end -> flow p99 <= {TARGET_MS:.0f} ms: "
          f"{'MET' if data['meets_target'] else 'NOT MET'}")
    write_json("reactions", data, enabled=not args.no_json)
    return 0 if ok and not data["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
