"""Benchmark part 5: end to end, from POST of a global task to its first complete result.

Run (root; takes the Mininet lock, so it waits for any other Mininet network)::

    .venv/bin/python -m bench.e2e            # 5 repetitions, about 1.5 minutes
    .venv/bin/python -m bench.e2e --quick    # 3 repetitions
    .venv/bin/python -m bench.e2e --load-tasks 11 --interval 5   # under a dozen tasks

It brings up the original network (Mininet tree, depth 2, fanout 3: 4
switches, 9 hosts, an agent on each) with ``topo.launch.MeasureNetwork``,
starts steady traffic that every agent sees (each host pings the next one
every 50 ms; bounded by count and by ``ping -w``), then per repetition:

1. waits until a chosen phase of the report interval (repetition ``k`` of
   ``n`` posts at ``(k + 0.5) / n`` of the interval), so the figure is not
   biased by always posting just after or just before an interval end;
2. ``POST /measure/v1/tasks`` a global heavy-hitter task (ICMP by source,
   ``report_interval`` = ``--interval``, 2 s by default);
3. polls ``GET /measure/v1/tasks/{id}/result`` every 20 ms until the result
   is ``complete`` and covers every agent;
4. deletes the task.

The figure is ``(received_at - t_post) / report_interval``, where
``received_at`` is the controller's own arrival time of that result (same
clock as this process: the controller runs in the root namespace), so the
polling period does not count. It splits into the wait for the first
interval end the task was installed before (``interval_end - t_post``) and
the aggregation delay up the overlay (``received_at - interval_end``).
Median and min..max over the repetitions; target <= 2 intervals.

With ``--load-tasks N`` the first N tasks of ``testing.deadlines.LOAD_TASKS``
(every measuring kind) run during the repetitions, and at the end every
agent's deadline margins are printed (``testing.deadlines``): per parent and
child subtree height, how long before the parent's deadline the children's
reports arrived (min, 5th percentile, median; ``late``: after it, left out),
and when each agent's own reports went up after the interval end.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from typing import Any

from bench.common import mininet_parser, print_table, spread_text, write_json

TARGET_INTERVALS = 2.0
PING_PERIOD = 0.05


def hh_task(name: str, interval: float) -> dict[str, Any]:
    """The global heavy-hitter task posted in each repetition."""
    return {"name": name, "kind": "heavy_hitters", "filter": {"proto": "icmp"},
            "key": "src", "increment": "pkt", "threshold": 0.1,
            "report_interval": interval, "scope": "global"}


def wait_phase(interval: float, phase: float) -> float:
    """Sleep until ``time.time() mod interval == phase * interval``; return that time."""
    now = time.time()
    target = math.floor(now / interval) * interval + phase * interval
    if target <= now + 0.05:
        target += interval
    time.sleep(target - time.time())
    return target


def first_id(body: Any) -> str:
    """The task id in a ``201 {"tasks": [{"id", "name"}]}`` reply."""
    try:
        return str(body["tasks"][0]["id"])
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"no task id in POST reply {body!r}") from None


def one_repetition(net, agents: set[str], interval: float, phase: float, name: str,
                   timeout: float) -> dict[str, Any]:
    """POST a task at ``phase`` of the interval; time its first complete result."""
    wait_phase(interval, phase)
    t_post = time.time()
    status, body = net.rest("/measure/v1/tasks", "POST", hh_task(name, interval))
    t_posted = time.time()
    if status != 201:
        raise RuntimeError(f"POST /measure/v1/tasks: {status} {body}")
    task_id = first_id(body)
    last: Any = None
    polls = 0
    incomplete: list[dict[str, Any]] = []  # earlier results that were not complete
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polls += 1
            code, data = net.rest(f"/measure/v1/tasks/{task_id}/result")
            last = data
            if (code == 200 and isinstance(data, dict) and "interval_end" in data
                    and not (data.get("complete") and agents <= set(data.get("covered", [])))
                    and all(i["interval_end"] != data["interval_end"] for i in incomplete)):
                incomplete.append({"interval_end": data["interval_end"],
                                   "covered": len(data.get("covered", [])),
                                   "missing": data.get("missing", [])})
            if (code == 200 and isinstance(data, dict) and data.get("complete")
                    and agents <= set(data.get("covered", []))):
                t_seen = time.time()
                received = float(data["received_at"])
                end = float(data["interval_end"])
                return {"task_id": task_id, "phase": phase, "t_post": t_post,
                        "post_s": t_posted - t_post, "interval_end": end,
                        "received_at": received, "seen_at": t_seen,
                        "wait_interval_end_s": end - t_post,
                        "aggregation_s": received - end,
                        "latency_s": received - t_post,
                        "intervals": (received - t_post) / interval,
                        "total": data.get("total"), "packets": data.get("packets"),
                        "heavy_hitters": data.get("heavy_hitters"),
                        "covered": len(data.get("covered", [])), "polls": polls,
                        "full_interval": end - interval >= t_post - 1e-6,
                        "incomplete_before": incomplete}
            time.sleep(0.02)
        return {"task_id": task_id, "phase": phase, "t_post": t_post, "intervals": None,
                "error": f"no complete result within {timeout:.0f} s",
                "last": str(last)[:600], "polls": polls, "incomplete_before": incomplete}
    finally:
        net.rest(f"/measure/v1/tasks/{task_id}", "DELETE")


def start_traffic(net, seconds: float) -> list:
    """Each host pings the next one every 50 ms for at most ``seconds``."""
    hosts = net.net.hosts
    procs = []
    count = int(seconds / PING_PERIOD) + 1
    for i, host in enumerate(hosts):
        dst = hosts[(i + 1) % len(hosts)]
        argv = ["ping", "-q", "-i", str(PING_PERIOD), "-c", str(count), "-w",
                str(int(seconds) + 1), dst.IP()]
        procs.append(host.popen(argv, env=net.host_env()))
    return procs


def post_load(net, interval: float, n: int) -> list[str]:
    """POST the first ``n`` load tasks (cycling through the kinds); their ids."""
    from testing.deadlines import LOAD_TASKS

    ids = []
    for i in range(n):
        task = {**LOAD_TASKS[i % len(LOAD_TASKS)], "report_interval": interval}
        task["name"] = f"{task['name']}-{i}"
        status, body = net.rest("/measure/v1/tasks", "POST", task)
        if status != 201:
            raise RuntimeError(f"POST load task {task['name']}: {status} {body}")
        ids.append(first_id(body))
    return ids


def run(reps: int, interval: float, opts_kw: dict[str, Any],
        load_tasks: int = 0) -> dict[str, Any]:
    """Bring up the network, time ``reps`` repetitions, tear everything down."""
    from testing.deadlines import margins
    from testing.procs import stop_process
    from topo.launch import MeasureNetwork, Options

    t0 = time.monotonic()
    opts = Options(topo="tree", depth=2, fanout=3, **opts_kw)
    timeout = 6 * interval + 10
    with MeasureNetwork(opts) as net:
        setup_s = time.monotonic() - t0
        agents = set(net.agents)
        if len(agents) != len(net.net.hosts):
            raise RuntimeError(f"agents on {sorted(agents)} only")
        traffic = start_traffic(net, reps * (interval * 2 + timeout) + 30)
        runs = []
        load = post_load(net, interval, load_tasks)
        views: dict[str, dict] = {}
        try:
            for k in range(reps):
                name = f"bench-e2e-{os.getpid()}-{k}"
                r = one_repetition(net, agents, interval, (k + 0.5) / reps, name, timeout)
                runs.append(r)
                shown = (f"{r['intervals']:.2f} intervals (wait {r['wait_interval_end_s']:.2f} s "
                         f"+ aggregation {r['aggregation_s']:.3f} s)"
                         if r["intervals"] is not None else r["error"])
                for inc in r["incomplete_before"]:
                    shown += (f"; earlier result for interval end {inc['interval_end']:.0f} "
                              f"incomplete: {inc['covered']} covered, missing {inc['missing']}")
                print(f"  repetition {k + 1}/{reps} at phase {r['phase']:.2f}: {shown}",
                      flush=True)
            if load:
                views = margins(net, sorted(agents, key=lambda a: int(a.lstrip("h"))))
        finally:
            for task_id in load:
                net.rest(f"/measure/v1/tasks/{task_id}", "DELETE")
            for proc in traffic:
                stop_process(proc)
        timings = dict(net.timings)
    return {"setup_s": setup_s, "launch_timings_s": timings, "runs": runs,
            "agents": sorted(agents), "total_s": time.monotonic() - t0,
            "load_tasks": load_tasks, "overlay": views}


def main(argv: list[str] | None = None) -> int:
    parser = mininet_parser(__doc__.splitlines()[0], interval=2.0)
    parser.add_argument("--load-tasks", type=int, default=0,
                        help="tasks of every kind running meanwhile (then the deadline "
                             "margins of every agent are printed)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.e2e needs root (Mininet)", file=sys.stderr)
        return 2
    reps = args.repeat or (3 if args.quick else 5)
    from testing.procs import install_signal_handlers

    install_signal_handlers()
    try:
        data = run(reps, args.interval, {"rest_port": args.rest_port,
                                         "controller_port": args.controller_port,
                                         "lock": not args.no_lock}, args.load_tasks)
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        return 130
    ok = [r for r in data["runs"] if r["intervals"] is not None]
    rows = []
    if ok:
        rows.append(["POST -> first complete result (intervals)",
                     spread_text([r["intervals"] for r in ok], "{:.2f}")])
        rows.append(["POST -> first complete result (s)",
                     spread_text([r["latency_s"] for r in ok], "{:.2f}")])
        rows.append(["  wait for the first interval end (s)",
                     spread_text([r["wait_interval_end_s"] for r in ok], "{:.2f}")])
        rows.append(["  interval end -> result at controller (s)",
                     spread_text([r["aggregation_s"] for r in ok], "{:.3f}")])
        rows.append(["POST request itself (s)",
                     spread_text([r["post_s"] for r in ok], "{:.3f}")])
    rows.append(["repetitions complete / run", f"{len(ok)}/{len(data['runs'])}"])
    rows.append(["network + agents up (s)", f"{data['setup_s']:.1f}"])
    print_table(f"End to end on the Mininet tree (depth 2, fanout 3, {len(data['agents'])} "
                f"agents), report interval {args.interval:g} s, median (min..max)",
                ["figure", "value"], rows)
    if data["overlay"]:
        from testing.deadlines import MARGIN_HEADER, margin_rows

        print_table(f"Deadline margins under {args.load_tasks} more tasks: children's "
                    f"reports before their parent's deadline (negative: left out)",
                    MARGIN_HEADER, margin_rows(data["overlay"]))
    median = statistics.median(r["intervals"] for r in ok) if ok else None
    met = median is not None and median <= TARGET_INTERVALS and len(ok) == len(data["runs"])
    print(f"target {'MET' if met else 'NOT MET'}: POST to first complete global result "
          f"<= {TARGET_INTERVALS:g} intervals (median "
          + (f"{median:.2f})" if median is not None else "n/a)"), flush=True)
    write_json("e2e", {"report_interval_s": args.interval, "repetitions": reps,
                       "intervals": [r["intervals"] for r in data["runs"]],
                       "median_intervals": median,
                       "min_intervals": min(r["intervals"] for r in ok) if ok else None,
                       "max_intervals": max(r["intervals"] for r in ok) if ok else None,
                       "target_intervals": TARGET_INTERVALS, "meets_target": met, **data},
               enabled=not args.no_json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
