"""REST load: N concurrent clients, a mix of controller calls, latency p50/p99.

Run as root from the repository root::

    .venv/bin/python -m bench.load                    # own network: 9 agents, 20 clients, 60 s
    .venv/bin/python -m bench.load --duration 10      # shorter
    .venv/bin/python -m bench.load --url http://127.0.0.1:8080 --token-file RUN/controller.token

Without ``--url`` it starts its own network (``topo.launch.MeasureNetwork``:
controller, Mininet tree depth 2 fanout 3 on userspace OVS, an agent on each
of the nine hosts) under the machine-wide Mininet lock, applies two tasks
(a global heavy-hitter task reporting every second and a per-host counter)
and waits for the first global result, so every call in the mix has
something to answer. Then ``--clients`` threads (one ``requests.Session``
each, bearer token) call the controller in a loop until ``--duration`` is
up, each picking a call by weight:

=============================  ======  ==================================
call                           weight  expected status
=============================  ======  ==================================
GET topology                   10      200
GET agents                     15      200
GET overlay                    10      200
GET tasks                      15      200
GET tasks/{id}                 15      200
GET tasks/{id}/result          15      200
GET events?since=N             10      200
POST tasks + DELETE tasks/{id} 10      201, then 200 (a task of its own)
=============================  ======  ==================================

Any other status, or a transport error, is an error. Latency is per HTTP
call (wall clock, ``time.perf_counter``); the table prints count, errors,
p50, p99 and max per call and overall, and the throughput. Task calls do
not wait for agents (the controller pushes in the background), so after
the load the benchmark waits until every agent holds exactly the tasks the
controller still has, and prints how long that took. The exit status is 1
if there was any error or the agents did not settle within 120 s. Results
go to ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections import defaultdict
from typing import Any

import requests

from bench.common import print_table, write_json

MIX = [("GET topology", 10), ("GET agents", 15), ("GET overlay", 10), ("GET tasks", 15),
       ("GET task", 15), ("GET result", 15), ("GET events", 10), ("POST+DELETE task", 10)]
GLOBAL_TASK = {"name": "load-hh", "kind": "heavy_hitters", "filter": {"proto": "icmp"},
               "report_interval": 1, "window": {"length": 1.0}}
COUNTER_TASK = {"name": "load-count", "kind": "counter", "filter": {"proto": "udp"},
                "report_interval": 2}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Client(threading.Thread):
    """One client: calls by weight until the deadline; records latency and errors."""

    def __init__(self, index: int, url: str, token: str, task_id: str, deadline: float,
                 seed: int) -> None:
        super().__init__(name=f"load-{index}", daemon=True)
        self.index, self.url, self.task_id, self.deadline = index, url, task_id, deadline
        self.rng = random.Random(seed)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.created = 0

    def call(self, name: str, method: str, path: str, ok: tuple[int, ...],
             body: Any = None) -> Any:
        start = time.perf_counter()
        try:
            resp = self.session.request(method, self.url + path, json=body, timeout=30)
        except requests.RequestException as exc:
            self.latency[name].append(time.perf_counter() - start)
            self.errors[name].append(f"{type(exc).__name__}: {exc}")
            return None
        self.latency[name].append(time.perf_counter() - start)
        if resp.status_code not in ok:
            self.errors[name].append(f"{resp.status_code} {resp.text[:200]}")
            return None
        return resp.json()

    def run(self) -> None:
        names = [n for n, _ in MIX]
        weights = [w for _, w in MIX]
        since = 0
        while time.monotonic() < self.deadline:
            name = self.rng.choices(names, weights)[0]
            if name == "GET topology":
                self.call(name, "GET", "/measure/v1/topology", (200,))
            elif name == "GET agents":
                self.call(name, "GET", "/measure/v1/agents", (200,))
            elif name == "GET overlay":
                self.call(name, "GET", "/measure/v1/overlay", (200,))
            elif name == "GET tasks":
                self.call(name, "GET", "/measure/v1/tasks", (200,))
            elif name == "GET task":
                self.call(name, "GET", f"/measure/v1/tasks/{self.task_id}", (200,))
            elif name == "GET result":
                self.call(name, "GET", f"/measure/v1/tasks/{self.task_id}/result", (200,))
            elif name == "GET events":
                got = self.call(name, "GET", f"/measure/v1/events?since={since}", (200,))
                if got and got["events"]:
                    since = max(e["id"] for e in got["events"])
            else:
                self.created += 1
                task = {"name": f"load-c{self.index}-{self.created}", "kind": "counter",
                        "filter": {"proto": "tcp", "dport": 9}, "scope": ["h1"]}
                made = self.call("POST task", "POST", "/measure/v1/tasks", (201,), task)
                if made:
                    self.call("DELETE task", "DELETE",
                              f"/measure/v1/tasks/{made['tasks'][0]['id']}", (200,))


def run_load(url: str, token: str, task_id: str, clients: int, duration: float,
             seed: int = 1) -> dict[str, Any]:
    """Run the clients; return per-call and overall figures (seconds in, ms out)."""
    deadline = time.monotonic() + duration
    workers = [Client(i, url, token, task_id, deadline, seed + i) for i in range(clients)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(duration + 60)
    elapsed = time.monotonic() - start
    latency: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    for w in workers:
        for name, values in w.latency.items():
            latency[name].extend(values)
        for name, errs in w.errors.items():
            errors[name].extend(errs)
    everything = [v for values in latency.values() for v in values]
    calls = {name: {"count": len(values), "errors": len(errors.get(name, [])),
                    "p50_ms": 1000 * percentile(values, 50),
                    "p99_ms": 1000 * percentile(values, 99),
                    "max_ms": 1000 * max(values)}
             for name, values in sorted(latency.items())}
    return {"clients": clients, "duration_s": elapsed, "calls": calls,
            "total": {"count": len(everything), "errors": sum(len(e) for e in errors.values()),
                      "p50_ms": 1000 * percentile(everything, 50),
                      "p99_ms": 1000 * percentile(everything, 99),
                      "mean_ms": 1000 * statistics.fmean(everything) if everything else 0.0,
                      "per_s": len(everything) / elapsed if elapsed else 0.0},
            "error_samples": {n: e[:3] for n, e in errors.items()}}


def _prepare(rest) -> str:
    """Apply the two tasks through ``rest(path, method, body)``; return the global task id."""
    status, body = rest("/measure/v1/tasks", "POST", {"tasks": [GLOBAL_TASK, COUNTER_TASK]})
    if status != 201:
        raise SystemExit(f"could not apply the load tasks: {status} {body}")
    return body["tasks"][0]["id"]


def _wait_result(rest, task_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rest(f"/measure/v1/tasks/{task_id}/result")[0] == 200:
            return
        time.sleep(0.5)
    raise SystemExit(f"no result for task {task_id} after {timeout:.0f}s")


def _settle(rest, timeout: float = 120.0) -> dict[str, Any]:
    """After the load: wait until every agent holds exactly the tasks the controller
    still has (every queued push and deletion delivered); how long that took."""
    start = time.monotonic()
    want = sorted(t["id"] for t in rest("/measure/v1/tasks")[1]["tasks"]
                  if t["kind"] != "bandwidth")
    agents = rest("/measure/v1/agents")[1]["agents"]
    while True:
        wrong: dict[str, Any] = {}
        for agent in agents:
            try:
                held = requests.get(f"{agent['url']}/agent/v1/health", timeout=5).json()["tasks"]
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                held = f"{type(exc).__name__}: {exc}"
            if held != want:
                wrong[agent["name"]] = held
        waited = round(time.monotonic() - start, 2)
        if not wrong:
            return {"settled_s": waited, "unsettled": {}, "tasks_left": want}
        if waited > timeout:
            return {"settled_s": None, "unsettled": wrong, "tasks_left": want}
        time.sleep(0.5)


def _own_network(args, run_load_with):
    from testing.procs import free_port
    from topo.launch import MeasureNetwork, Options

    opts = Options(topo="tree", depth=2, fanout=3, agents=True, lock=True,
                   controller_port=free_port(), rest_port=free_port(), timeout=120)
    with MeasureNetwork(opts) as mn:  # start() waits for all agents and the overlay
        task_id = _prepare(mn.rest)
        _wait_result(mn.rest, task_id)
        with open(mn.token_file()) as f:
            token = f.read().strip()
        agents = len(mn.rest("/measure/v1/agents")[1]["agents"])
        result = run_load_with(mn.rest_url, token, task_id)
        result.update(_settle(mn.rest))
        return result, agents


def _rest_for(url: str, token: str):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def rest(path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        resp = session.request(method, url + path, json=body, timeout=30)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text
    return rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--url", default=None,
                        help="an already running controller (default: start a network)")
    parser.add_argument("--token-file", default=None, help="its bearer token (with --url)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the call mix")
    parser.add_argument("--no-json", action="store_true",
                        help="do not write bench/results/load.json")
    parser.add_argument("--json-out", default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 200 or not 1 <= args.duration <= 600:
        parser.error("--clients must be within 1..200 and --duration within 1..600")

    def go(url: str, token: str, task_id: str) -> dict[str, Any]:
        print(f"load: {args.clients} clients for {args.duration:g} s against {url}", flush=True)
        return run_load(url, token, task_id, args.clients, args.duration, args.seed)

    if args.url:
        if not args.token_file:
            parser.error("--url needs --token-file")
        with open(args.token_file) as f:
            token = f.read().strip()
        rest = _rest_for(args.url.rstrip("/"), token)
        task_id = _prepare(rest)
        _wait_result(rest, task_id)
        result = go(args.url.rstrip("/"), token, task_id)
        result.update(_settle(rest))
        agents = len(rest("/measure/v1/agents")[1]["agents"])
    else:
        result, agents = _own_network(args, go)
    result["agents"] = agents
    rows = [[name, c["count"], c["errors"], c["p50_ms"], c["p99_ms"], c["max_ms"]]
            for name, c in result["calls"].items()]
    t = result["total"]
    rows.append(["all", t["count"], t["errors"], t["p50_ms"], t["p99_ms"], ""])
    print_table(f"REST load: {args.clients} clients, {result['duration_s']:.0f} s, "
                f"{agents} agents, {t['per_s']:.0f} calls/s",
                ["call", "count", "errors", "p50 ms", "p99 ms", "max ms"], rows)
    for name, samples in result["error_samples"].items():
        print(f"errors in {name}: {samples}", flush=True)
    if result["settled_s"] is None:
        print(f"NOT SETTLED: agents still hold other tasks than {result['tasks_left']}: "
              f"{result['unsettled']}", flush=True)
    else:
        print(f"settled {result['settled_s']:.1f} s after the load: every agent holds exactly "
              f"the controller's tasks {result['tasks_left']}", flush=True)
    write_json("load", result, enabled=not args.no_json)
    if args.json_out:
        import json

        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return 1 if t["errors"] or result["settled_s"] is None else 0


if __name__ == "__main__":
    raise SystemExit(main())
