"""Port scan detection: a source touching many ports of a host in one window.

Per host, with the original polling of a real-time counter every 300 ms::

    sudo measure-net --allow-legacy --no-agent-on h1
    mininet> h1 python examples/port_scan.py --agent 10.0.0.5 --rounds 100 &
    mininet> h6 nc -z 10.0.0.5 8008-8092

Globally, through the controller's events (applies ``policies/port_scan.yaml``)::

    mininet> h1 python examples/port_scan.py --controller --rounds 100 &
    mininet> h6 nc -z 10.0.0.5 8008-8092

Either way it prints ``portscan detected.`` and ``{"10.0.0.6": 85}``: h6
touched 85 distinct ports of h5 within one window. Per host, the sketch
counts every incoming packet of h5, so the script's own polling of h5's
agent shows up as ``"10.0.0.1": 1`` (one port, 8000); the script says so.
"""

from __future__ import annotations

import argparse
import collections
import time

from common import (
    AGENT_PORT,
    Agent,
    Controller,
    add_mode_arguments,
    own_address,
    rounds,
    run_mode,
    show,
)


def ports_by_source(agent: Agent, sketch_id: int, interval: float) -> dict[str, int]:
    """Distinct ports per source in the real-time window, once the scan that
    raised the alarm has stopped growing (it may still be running)."""
    last: dict[str, int] = {}
    while True:
        window = agent.real_time_counter(sketch_id, "src_dport")
        now = dict(collections.Counter(key.split(",")[0] for key in window))
        if now == last:
            return now
        last = now
        time.sleep(interval)


def per_host(args) -> None:
    agent = Agent(args.agent)
    sketch_id = agent.config_sketch(interface="INPUT")
    # a sliding 2 s real-time window: a scan is not cut in two by a window edge
    window = {"window_length": 2.0, "window_mode": "sliding"}
    agent.config_counter(sketch_id, "src_dport", "pkt", **window)
    agent.config_counter(sketch_id, "dport", "pkt", **window)
    print(f"sketch id: {sketch_id}", flush=True)
    key_num = 0
    for _ in rounds(args.rounds):
        time.sleep(args.interval)
        new_key_num = agent.query(sketch_id, "dport", "real_time_key_num")
        if new_key_num - key_num > args.threshold:
            print("portscan detected.", flush=True)
            ports = ports_by_source(agent, sketch_id, args.interval)
            show(ports)
            me = own_address(args.agent)
            if me in ports:
                print(f"({me} is this script polling the agent on port {AGENT_PORT}: "
                      "its own connections, one port, not a scan)", flush=True)
            if args.stop:
                return
        key_num = new_key_num


def scan_size(ctl: Controller, task_id: str, event: dict) -> int:
    """Distinct ports of the scan: the event is raised on the first report
    that crosses the threshold, while the scan may still be going on, so
    follow the results until the source's count stops growing."""
    ports, seen = event["ports"], event.get("interval_end", 0.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        res = ctl.result(task_id) or {}
        if res.get("interval_end", 0.0) <= seen:
            time.sleep(0.3)
            continue
        seen = res["interval_end"]
        now = res.get("scanners", {}).get(event["src"], 0)
        if now <= ports:
            return ports
        ports = now
    return ports


def through_controller(args) -> None:
    ctl = Controller(args.controller, args.token_file)
    since = max([e["id"] for e in ctl.events(0)], default=0)
    (task,) = ctl.apply_policy("port_scan.yaml")
    print(f"task id: {task['id']}", flush=True)
    try:
        for _ in rounds(args.rounds):
            time.sleep(args.interval)
            for event in ctl.events(since):
                since = max(since, event["id"])
                if event["kind"] == "port_scan" and str(event["task_id"]) == str(task["id"]):
                    print("portscan detected.", flush=True)
                    show({event["src"]: scan_size(ctl, task["id"], event)})
                    if args.stop:
                        return
    finally:
        ctl.delete_task(task["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, agent_default="10.0.0.5")
    parser.set_defaults(interval=0.3)
    parser.add_argument("--threshold", type=int, default=20,
                        help="new distinct ports per poll that mean a scan (per-host mode)")
    parser.add_argument("--stop", action="store_true", help="exit after the first detection")
    args = parser.parse_args()
    run_mode(args, per_host, through_controller)


if __name__ == "__main__":
    main()
