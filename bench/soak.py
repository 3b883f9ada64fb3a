"""Soak: a Mininet network under steady load and periodic faults for N minutes.

Run as root from the repository root::

    .venv/bin/python -m bench.soak --minutes 20     # the README's figures
    .venv/bin/python -m bench.soak --minutes 2      # the suite's short run

It starts its own network (``topo.launch.MeasureNetwork``: controller, tree
depth 2 fanout 3 on userspace OVS, an agent on each of the nine hosts) under
the machine-wide Mininet lock, applies one task of every measurement kind of
the task model (report interval 2 s), and keeps for the whole run:

- traffic: three ping streams between host pairs (10 packets/s each) and a
  short ``nc -z`` port scan every fault period;
- REST load: two clients calling the read endpoints and creating/deleting a
  task, about 10 calls/s in all;
- faults, one per period, in turn: SIGKILL an agent (started again after a
  few seconds, as its service unit would), SIGKILL a monitor process (the
  agent restarts it), restart the controller (SIGTERM, started again on the
  same state directory), take a switch link down (and up again).

It reports:

- REST errors: any call that did not answer as expected, except calls made
  while the controller was deliberately down (counted apart);
- results lost: every report interval of every task from its first result
  to the end either has a global result in the history (polled often enough
  that the bounded history never drops a row unseen), or lies in a window
  where the controller was down (reported missing with that reason);
  anything else is lost. Results whose coverage is partial are kept and
  counted with the agents they miss;
- RSS and open file descriptors of the controller, every agent and every
  monitor after the warm-up (a quarter of the run, at least 30 s) and at the
  end, each the least of 9 samples over two report intervals (the sockets of
  a burst of reports come and go within a second: what a process keeps
  raises its least count), with the growth of the processes that lived
  through (a restarted process is listed as restarted);
- the SQLite store's size after the warm-up and at the end, next to its
  retention (rows kept per task and host) and the rows it holds.

Goals: 0 REST errors, 0 results lost, RSS and fd growth <= 10% after the
warm-up. Exit status 1 when REST errors or lost results are not 0. The JSON
goes to ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Any

import requests

from bench.common import print_table, write_json
from measure_model.task import KINDS

REPORT_INTERVAL = 2.0
PING_PAIRS = (("h1", "h5"), ("h2", "h9"), ("h6", "h3"))
SAMPLE_TASKS: dict[str, dict[str, Any]] = {
    "heavy_hitters": {"filter": {"proto": "icmp"}, "key": "src"},
    "flow_size": {"filter": {"proto": "icmp"}},
    "port_scan": {"filter": {"proto": "tcp"}, "scan_ports": 10},
    "counter": {"filter": {"proto": "icmp"}},
    "path_health": {"peers": "auto", "probe_rate": 5},
    "tcp_health": {},
}
FAULTS = ("kill_agent", "kill_monitor", "restart_controller", "link_down")
GROWTH_GOAL = 0.10
MONITOR_ARG = b"host_agent.monitor"  # an agent's monitors run ``python -m host_agent.monitor``


def soak_tasks() -> list[dict[str, Any]]:
    """One task per measurement kind of the task model (its defaults for the rest)."""
    tasks = []
    for kind in KINDS:
        if kind == "bandwidth":
            continue
        extra = SAMPLE_TASKS.get(kind, {"filter": {"proto": "icmp"}})
        tasks.append({"name": f"soak-{kind.replace('_', '-')}", "kind": kind,
                      "report_interval": REPORT_INTERVAL, **extra})
    return tasks


def proc_stats(pid: int) -> dict[str, int] | None:
    """RSS (KiB), open fds and how many of them are sockets; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        return {"pid": pid, "rss_kib": rss, "fds": len(fds), "sockets": sockets}
    except (OSError, StopIteration):
        return None


def monitors(pid: int) -> list[int]:
    """The monitor processes among an agent's children (not its passing iptables calls)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(p) for p in f.read().split()]
    except OSError:
        return []
    out = []
    for kid in kids:
        with contextlib.suppress(OSError), open(f"/proc/{kid}/cmdline", "rb") as f:
            if MONITOR_ARG in f.read().split(b"\0"):
                out.append(kid)
    return out


class Rest(threading.Thread):
    """Background REST clients; errors outside the controller's planned downtime count."""

    def __init__(self, index: int, url: str, token: str, task_id: str, deadline: float,
                 controller_down: threading.Event) -> None:
        super().__init__(daemon=True, name=f"soak-rest-{index}")
        self.index, self.url, self.task_id, self.deadline = index, url, task_id, deadline
        self.down = controller_down
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.calls = self.errors = self.during_restart = 0
        self.samples: list[str] = []

    def call(self, method: str, path: str, ok: int, body: Any = None) -> Any:
        planned = self.down.is_set()
        self.calls += 1
        try:
            resp = self.session.request(method, self.url + path, json=body, timeout=10)
            if resp.status_code == ok:
                return resp.json()
            problem = f"{method} {path}: {resp.status_code} {resp.text[:120]}"
        except requests.RequestException as exc:
            problem = f"{method} {path}: {type(exc).__name__}"
        if planned or self.down.is_set():
            self.during_restart += 1
        else:
            self.errors += 1
            if len(self.samples) < 5:
                self.samples.append(problem)
        return None

    def run(self) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            n += 1
            for path in ("/measure/v1/topology", "/measure/v1/agents", "/measure/v1/tasks",
                         f"/measure/v1/tasks/{self.task_id}/result", "/measure/v1/overlay"):
                self.call("GET", path, 200)
                time.sleep(0.1)
            made = self.call("POST", "/measure/v1/tasks", 201,
                             {"name": f"soak-churn-{self.index}-{n}", "kind": "counter",
                              "scope": ["h4"],
                              "filter": {"proto": "udp", "dport": 9}})
            if made:
                self.call("DELETE", f"/measure/v1/tasks/{made['tasks'][0]['id']}", 200)


class Soak:
    """The network, the load, the faults and the bookkeeping of one soak run."""

    def __init__(self, mn: Any, minutes: float, period: float) -> None:
        self.mn, self.minutes, self.period = mn, minutes, period
        self.controller_down = threading.Event()
        self.down_windows: list[tuple[float, float]] = []
        self.faults: list[dict[str, Any]] = []
        self.seen: dict[str, set[float]] = {}
        self.partial: dict[str, int] = {}
        self.tasks: dict[str, str] = {}
        self.first: dict[str, float] = {}
        self.pings: list[subprocess.Popen] = []
        self.series: list[dict[str, Any]] = []

    # ------------------------------------------------------------ set-up

    def start_traffic(self) -> None:
        hosts = {h.name: h for h in self.mn.net.hosts}
        for src, dst in PING_PAIRS:
            self.pings.append(hosts[src].popen(["ping", "-q", "-i", "0.1", hosts[dst].IP()],
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))

    def stop_traffic(self) -> None:
        for proc in self.pings:
            proc.terminate()
            proc.wait(5)

    def apply_tasks(self) -> None:
        status, body = self.mn.rest("/measure/v1/tasks", "POST", {"tasks": soak_tasks()})
        if status != 201:
            raise SystemExit(f"soak: could not apply the tasks: {status} {body}")
        self.tasks = {t["name"]: t["id"] for t in body["tasks"]}
        for tid in self.tasks.values():
            self.seen[tid] = set()

    def wait_first_results(self, timeout: float = 60.0) -> None:
        """The load starts once every task has a first global result."""
        start = time.monotonic()
        deadline = start + timeout
        for name, tid in self.tasks.items():
            while self.mn.rest(f"/measure/v1/tasks/{tid}/result")[0] != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"soak: no first result for {name} in {timeout:g} s")
                time.sleep(0.5)
            print(f"soak: first result of {name} {time.monotonic() - start:.1f} s after "
                  "the tasks were applied", flush=True)

    # ------------------------------------------------------------ bookkeeping

    def poll_history(self) -> None:
        for tid in self.tasks.values():
            try:
                status, body = self.mn.rest(f"/measure/v1/tasks/{tid}/history?limit=100")
            except OSError:
                continue
            if status != 200:
                continue
            for row in body["results"]:
                end = row["interval_end"]
                if end not in self.seen[tid] and row.get("missing"):
                    self.partial[tid] = self.partial.get(tid, 0) + 1
                self.seen[tid].add(end)
                self.first[tid] = min(self.first.get(tid, end), end)

    def lost(self, end_time: float) -> dict[str, Any]:
        """Intervals of each task with no result, split into explained and lost."""
        out: dict[str, Any] = {}
        margin = 2 * REPORT_INTERVAL + 3.0
        for name, tid in self.tasks.items():
            if tid not in self.first:
                out[name] = {"lost": None, "explained": 0, "results": 0}
                continue
            k = self.first[tid] / REPORT_INTERVAL
            expected = []
            while k * REPORT_INTERVAL <= end_time - 2 * REPORT_INTERVAL:
                expected.append(round(k * REPORT_INTERVAL, 6))
                k += 1
            absent = [e for e in expected if e not in self.seen[tid]]
            explained = [e for e in absent
                         if any(lo - margin <= e <= hi + margin for lo, hi in self.down_windows)]
            out[name] = {"results": len(self.seen[tid]), "expected": len(expected),
                         "explained": len(explained), "lost": len(absent) - len(explained),
                         "lost_at": [e for e in absent if e not in explained][:5],
                         "partial_coverage": self.partial.get(tid, 0)}
        return out

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        ctl = self.mn.controller
        if ctl is not None and (s := proc_stats(ctl.pid)):
            out["controller"] = s
        for name, proc in self.mn.agents.items():
            if (s := proc_stats(proc.pid)):
                out[f"agent {name}"] = s
            for i, pid in enumerate(monitors(proc.pid)):
                if (s := proc_stats(pid)):
                    out[f"monitor {name}.{i}"] = s
        return out

    def steady(self, samples: int = 9) -> dict[str, Any]:
        """Per process, the least RSS and open fds of ``samples`` samples over two report
        intervals: every interval starts with a burst of reports (12 tasks, each child
        to its parent, beyond the connections kept per peer) whose sockets come and
        go within a second. What a process keeps (a leak) raises its least count."""
        out = self.sample()
        for _ in range(samples - 1):
            time.sleep(2 * REPORT_INTERVAL / (samples - 1))
            for role, stats in self.sample().items():
                kept = out.get(role)
                if kept is None or kept["pid"] != stats["pid"]:
                    continue
                for field in ("rss_kib", "fds", "sockets"):
                    kept[field] = min(kept[field], stats[field])
        return out

    def trend(self, at: float) -> None:
        """Summed RSS and fds of the agents and the controller, every poll (leaks show here)."""
        stats = self.sample()
        agents = [v for k, v in stats.items() if k.startswith("agent ")]
        ctl = stats.get("controller") or {}
        self.series.append({"t_s": round(at), "agents_rss_kib": sum(a["rss_kib"] for a in agents),
                            "agents_fds": sum(a["fds"] for a in agents),
                            "controller_rss_kib": ctl.get("rss_kib"),
                            "controller_fds": ctl.get("fds"), "db_bytes": self.db_size()})

    def db_size(self) -> int:
        path = os.path.join(self.mn.run_dir, "state", "measure.db")
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    # ------------------------------------------------------------ faults

    def fault(self, index: int) -> None:
        kind = FAULTS[index % len(FAULTS)]
        names = sorted(self.mn.agents)
        victim = names[(index // len(FAULTS) * 3 + 2) % len(names)]
        start = time.time()
        detail = ""
        if kind == "kill_agent":
            proc = self.mn.agents[victim]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            time.sleep(3)
            host = next(h for h in self.mn.net.hosts if h.name == victim)
            self.mn.start_agent(host)
            detail = victim
        elif kind == "kill_monitor":
            pids = monitors(self.mn.agents[victim].pid)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
            detail = f"{victim} monitor pid {pids[0] if pids else None}"
        elif kind == "restart_controller":
            self.controller_down.set()
            proc = self.mn.controller
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self.mn.controller = None
            self.mn.start_controller()
            self.mn.wait_topology()
            # back in service once it knows every agent again (a task scoped to an agent
            # it has not heard from since its start is refused with 404 until then)
            up = time.time()
            self.mn.wait_agents()
            detail = f"agents back {time.time() - up:.1f} s after the switches"
            self.controller_down.clear()
            self.down_windows.append((start, time.time()))
        else:
            self.mn.net.configLinkStatus("s1", "s2", "down")
            time.sleep(5)
            self.mn.net.configLinkStatus("s1", "s2", "up")
            detail = "s1-s2"
        self.faults.append({"kind": kind, "at": round(start, 3), "detail": detail,
                            "took_s": round(time.time() - start, 2)})
        print(f"soak: fault {kind} {detail} ({time.time() - start:.1f} s)", flush=True)

    def scan(self) -> None:
        hosts = {h.name: h for h in self.mn.net.hosts}
        hosts["h6"].cmd(f"nc -z -w 1 {hosts['h5'].IP()} 9000-9012")

    # ------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        mn = self.mn
        duration = self.minutes * 60
        warmup = max(30.0, duration / 4)
        self.apply_tasks()
        self.start_traffic()
        with open(mn.token_file()) as f:
            token = f.read().strip()
        self.wait_first_results()
        t0 = time.monotonic()
        deadline = t0 + duration
        first_task = next(iter(self.tasks.values()))
        clients = [Rest(i, mn.rest_url, token, first_task, deadline, self.controller_down)
                   for i in range(2)]
        for c in clients:
            c.start()
        start_stats: dict[str, Any] = {}
        start_db = 0
        next_fault, faults_done, next_poll = t0 + warmup, 0, t0
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if not start_stats and now >= t0 + warmup - 1:
                    start_stats, start_db = self.steady(), self.db_size()
                if now >= next_poll:
                    self.poll_history()
                    self.trend(now - t0)
                    next_poll = now + 30
                if now >= next_fault and deadline - now > self.period / 2:
                    self.fault(faults_done)
                    self.scan()
                    faults_done += 1
                    next_fault = now + self.period
                time.sleep(0.5)
            end_wall = time.time()
            # a result arrives up to a report deadline after its interval (later while a
            # fault of the last seconds holds a parent waiting): not lost for arriving then
            time.sleep(2 * REPORT_INTERVAL + 3.0)
            self.poll_history()
            end_stats, end_db = self.steady(), self.db_size()
        finally:
            self.stop_traffic()
            for c in clients:
                c.join(15)
        return self.report(start_stats, end_stats, start_db, end_db, clients, end_wall)

    def report(self, start: dict, end: dict, start_db: int, end_db: int,
               clients: list[Rest], end_wall: float) -> dict[str, Any]:
        procs = {}
        for role in sorted(set(start) | set(end)):
            a, b = start.get(role), end.get(role)
            row: dict[str, Any] = {"start": a, "end": b}
            if a and b and a["pid"] == b["pid"]:
                row["rss_growth"] = (b["rss_kib"] - a["rss_kib"]) / a["rss_kib"]
                row["fd_growth"] = (b["fds"] - a["fds"]) / a["fds"]
            else:
                row["restarted"] = True
            procs[role] = row
        status, _ = self.mn.rest("/measure/v1/tasks")
        rows = 0
        import sqlite3

        with sqlite3.connect(os.path.join(self.mn.run_dir, "state", "measure.db")) as db:
            rows = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            per_key = db.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM results "
                                 "GROUP BY task_id, host)").fetchone()[0]
        return {
            "minutes": self.minutes, "fault_period_s": self.period, "faults": self.faults,
            "rest": {"calls": sum(c.calls for c in clients),
                     "errors": sum(c.errors for c in clients),
                     "during_controller_restart": sum(c.during_restart for c in clients),
                     "samples": [s for c in clients for s in c.samples][:5]},
            "results": self.lost(end_wall), "processes": procs, "series": self.series,
            "sqlite": {"start_bytes": start_db, "end_bytes": end_db, "rows": rows,
                       "max_rows_per_task_host": per_key, "retention_rows": 100},
        }


def print_report(result: dict[str, Any]) -> None:
    rest = result["rest"]
    print_table(f"soak: {result['minutes']:g} min, {len(result['faults'])} faults "
                f"({', '.join(sorted({f['kind'] for f in result['faults']}))})",
                ["figure", "value", "goal"],
                [["REST calls", rest["calls"], ""],
                 ["REST errors", rest["errors"], "0"],
                 ["calls while the controller was restarted", rest["during_controller_restart"],
                  "(planned)"],
                 ["results lost", sum(r["lost"] or 0 for r in result["results"].values()), "0"],
                 ["SQLite bytes after warm-up / end", f"{result['sqlite']['start_bytes']} / "
                  f"{result['sqlite']['end_bytes']}",
                  f"<= retention {result['sqlite']['retention_rows']} rows/task/host"]])
    print_table("results per task", ["task", "results", "expected", "missing (controller down)",
                                     "lost", "partial coverage"],
                [[n, r["results"], r.get("expected", ""), r["explained"], r["lost"],
                  r.get("partial_coverage", "")] for n, r in result["results"].items()])
    for sample in rest["samples"]:
        print(f"REST error: {sample}", flush=True)
    for name, r in result["results"].items():
        if r["lost"]:
            print(f"{name}: no result for intervals ending {r['lost_at']}", flush=True)
    rows = []
    for role, p in result["processes"].items():
        a, b = p["start"] or {}, p["end"] or {}
        rows.append([role, a.get("rss_kib", ""), b.get("rss_kib", ""),
                     "restarted" if p.get("restarted") else f"{100 * p['rss_growth']:+.1f}%",
                     a.get("fds", ""), b.get("fds", ""),
                     "" if p.get("restarted") else f"{100 * p['fd_growth']:+.1f}%",
                     b.get("sockets", "")])
    print_table("trend every 30 s (agents summed)",
                ["t s", "agents RSS KiB", "agents fds", "controller RSS KiB", "controller fds",
                 "SQLite bytes"],
                [[r["t_s"], r["agents_rss_kib"], r["agents_fds"], r["controller_rss_kib"],
                  r["controller_fds"], r["db_bytes"]] for r in result["series"]])
    print_table("processes after warm-up and at the end, least of 9 samples over 4 s "
                "(goal: growth <= 10%)",
                ["process", "RSS KiB", "RSS KiB end", "RSS growth", "fds", "fds end",
                 "fd growth", "sockets end"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the run (20)")
    parser.add_argument("--fault-period", type=float, default=None,
                        help="seconds between faults (default: a twelfth of the run, 10..90)")
    parser.add_argument("--no-json", action="store_true",
                        help="do not write bench/results/soak.json")
    parser.add_argument("--json-out", default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.minutes <= 24 * 60:
        parser.error("--minutes must be within 1..1440")
    period = args.fault_period or min(90.0, max(10.0, args.minutes * 60 / 12))

    from testing.procs import free_port
    from topo.launch import MeasureNetwork, Options

    opts = Options(topo="tree", depth=2, fanout=3, agents=True, lock=True,
                   controller_port=free_port(), rest_port=free_port(), timeout=120)
    print(f"soak: {args.minutes:g} minutes, a fault every {period:g} s", flush=True)
    with MeasureNetwork(opts) as mn:
        result = Soak(mn, args.minutes, period).run()
    print_report(result)
    write_json("soak", result, enabled=not args.no_json)
    if args.json_out:
        import json

        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    lost = sum(r["lost"] or 0 for r in result["results"].values())
    no_result = [n for n, r in result["results"].items() if r["lost"] is None]
    if no_result:
        print(f"NO RESULT AT ALL for {no_result}", flush=True)
    return 1 if result["rest"]["errors"] or lost or no_result else 0


if __name__ == "__main__":
    raise SystemExit(main())
