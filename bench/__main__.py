"""The one benchmark command: every part in one run, one table per part, JSON results.

Run (root, from the repository root)::

    .venv/bin/python -m bench                     # every part, under 10 minutes
    .venv/bin/python -m bench --quick             # every part, short (development)
    .venv/bin/python -m bench engine overlay      # some parts only
    .venv/bin/python -m bench --list              # parts, what they measure, targets

Each part is its own module with its own command line (``python -m
bench.<module> --help``); this runner starts it as a subprocess with
parameters chosen so that the whole suite fits in 10 minutes on a 2-core
machine, passes its output through (so its table is printed), stops it at
its time budget, then reads the JSON it wrote under ``bench/results/``.
A subprocess per part keeps parts independent: a part that needs root or
Mininet, crashes, or overruns does not take the others with it, and every
part starts from a cold interpreter.

At the end it prints a summary table (status, seconds, the headline
figures, each target MET / NOT MET) and writes
``bench/results/summary.json``: date, machine (uname, nproc, CPU model,
Python version, load average), and per part its status, wall time, exit
code, headline figures, target verdicts and the path of its full JSON.
Parts needing root are skipped (and say so) when not run as root; the
Mininet part waits for ``/tmp/endhost-measure-mininet.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench.common
from bench.common import format_table, machine_info
from testing.procs import LOCK_PATH, mininet_lock, stop_process

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Part:
    """One benchmark part: how to run it (full and quick) and how to read its JSON."""

    name: str
    module: str
    what: str
    full: list[str]
    quick: list[str]
    budget_s: float  # expected seconds of the full run; stopped at 1.5x + 30 s
    root: bool = False
    json_name: str = ""
    json_flag: bool = False  # the module writes JSON only when given ``--json PATH``
    headline: Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, bool]]] | None = None
    optional: bool = False  # skip quietly when the module does not exist yet
    mininet: bool = False  # the runner holds the Mininet lock around it (``--no-lock``)
    own_lock: bool = False  # takes the Mininet lock itself: the runner waits until it is free
    targets: list[str] = field(default_factory=list)

    def json_path(self, results_dir: Path) -> Path:
        return results_dir / f"{self.json_name or self.name}.json"

    def argv(self, quick: bool, results_dir: Path) -> list[str]:
        """The part's command; through ``CHILD_BOOT`` when results go to another directory."""
        args = [*(self.quick if quick else self.full)]
        if self.mininet:
            args.append("--no-lock")
        if self.json_flag:
            args += ["--json", str(self.json_path(results_dir))]
        if results_dir == bench.common.RESULTS_DIR:
            return [sys.executable, "-m", self.module, *args]
        return [sys.executable, "-c", CHILD_BOOT, str(results_dir), self.module, *args]


# Runs ``python -c CHILD_BOOT DIR MODULE ARGS...``: the part's module as __main__ with
# bench.common.RESULTS_DIR pointed at DIR (used by tests so they leave bench/results alone).
CHILD_BOOT = ("import runpy, sys; from pathlib import Path; import bench.common as c; "
              "c.RESULTS_DIR = Path(sys.argv.pop(1)); mod = sys.argv.pop(1); "
              "runpy.run_module(mod, run_name='__main__', alter_sys=True)")


# ------------------------------------------------------------------ headline figures

def _median(values: list[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def engine_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs, ok = {}, {}
    for n in (1, 3):
        c = d.get(f"counters_{n}")
        if c:
            figs[f"engine_{n}_counter_pps"] = round(_median(c["engine_pps"]))
            figs[f"original_{n}_counter_pps"] = round(_median(c["original_pps"]))
            figs[f"ratio_{n}_counter"] = round(c["ratio_median"], 1)
            ok[f"engine >= 20x original ({n} counter(s))"] = c["ratio_median"] >= 20
    update = d.get("elastic_update")
    if update:
        for key, rates in update["pps"].items():
            figs[f"elastic_update_{key}_pps"] = round(_median(rates))
        ok["elastic update >= 10 M pkt/s (compiled, one core)"] = update["meets_target"]
    return figs, ok


def monitor_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs = {k: round(v, 2) for k, v in d.get("ratios", {}).items()}
    lat = d.get("latency", {})
    for mode, v in lat.items():
        figs[f"rtt_{mode.replace(' ', '_')}_median_us"] = v.get("median_us")
        figs[f"rtt_{mode.replace(' ', '_')}_p99_us"] = v.get("p99_us")
    return figs, dict(d.get("targets", {}))


def ebpf_accuracy_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {"counted": d.get("counted"), "missed": d.get("missed")}
    for side in ("python", "ebpf"):
        for name, value in d.get(side, {}).items():
            figs[f"{side}_{name}"] = round(value, 5)
    ok = {f"{name} within 10% of the Python engine's": met
          for name, met in d.get("within_10pct", {}).items()}
    return figs, ok


def accuracy_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {}
    for r in d.get("rows", []):
        if r["variant"] == "ours" and r["memory_kb"] == 128:
            for name in ("hh_f1", "wmre", "are_all", "under"):
                figs[f"{r['trace']}_128k_{name}"] = round(r[name], 5)
    ok = {f"{t['target']} [{t['trace']}]": t["verdict"] == "MET"
          for t in d.get("targets", []) if t["verdict"] != "NOT JUDGED"}
    return figs, ok


def accuracy_merge_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {}
    for r in d.get("rows", []):
        if r["memory_kb"] == 512 and r["skew"] == 1.1:
            tag = r["variant"].split(" ")[0].lower() + ("8" if "8 hosts" in r["variant"] else "")
            for name in ("hh_f1_low", "are_all", "are_10", "wmre", "card_re", "hc_f1"):
                value = r[name]
                figs[f"{tag}_{name}"] = round(value, 5) if value == value else None
    ok = {f"{t['figure']} (must {t['must']})": t["met"] for t in d.get("targets", [])}
    return figs, ok


def overlay_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {}
    for r in d.get("rows", []):
        n = f"n{r['n']}" + (f"_f{r['fanout']}" if r.get("fanout", 8) != 8 else "")
        figs[f"{n}_config_s"] = round(r["config_s"], 3)
        figs[f"{n}_result_s"] = round(r["result_s"], 3)
        figs[f"{n}_missing"] = r["missing"]
        figs[f"{n}_ctl_msgs"] = r["ctl_msgs"]
        figs[f"{n}_ctl_kb"] = round(r["ctl_bytes"] / 1024, 1)
        figs[f"{n}_host_s"] = round(r["host_s"], 3)
        figs[f"{n}_hb_msgs_s"] = r["hb_msgs_s"]
        figs[f"{n}_star_ctl_msgs"] = r["star_ctl_msgs"]
        figs[f"{n}_star_result_s"] = round(r["star_result_s"], 3)
    ok = {t["figure"]: t["met"] for t in d.get("targets", [])}
    return figs, ok


def e2e_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs = {k: d.get(k) for k in ("report_interval_s", "median_intervals", "min_intervals",
                                  "max_intervals", "setup_s")}
    figs = {k: round(v, 3) if isinstance(v, float) else v for k, v in figs.items()}
    return figs, {"POST -> first complete global result <= 2 intervals":
                  bool(d.get("meets_target"))}


def bandwidth_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs = {}
    for r in d.get("results", []):
        if isinstance(r, dict) and "method" in r:
            key = f"{r['method']}_{r['bottleneck_mbit']:g}mbit_cross{r['cross_mbit']:g}_err_pct"
            figs[key] = round(r["median_error_pct"], 1)
    return figs, {}


def load_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    t = d.get("total", {})
    figs = {"clients": d.get("clients"), "duration_s": round(d.get("duration_s", 0), 1),
            "calls": t.get("count"), "errors": t.get("errors"),
            "p50_ms": round(t.get("p50_ms", 0), 2), "p99_ms": round(t.get("p99_ms", 0), 2),
            "calls_per_s": round(t.get("per_s", 0), 1), "agents": d.get("agents")}
    return figs, {"no errors under load": t.get("errors") == 0 and bool(t.get("count"))}


def paths_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {}
    for r in d.get("rows", []):
        n = r["n"]
        figs[f"n{n}_precision"] = round(r["precision"], 3)
        figs[f"n{n}_recall_ge_1pct"] = round(r["recall_ge_1pct"], 3)
        figs[f"n{n}_detect_p95_intervals"] = r["detect_p95_intervals"]
        figs[f"n{n}_probe_kbit_s_host"] = round(r["probe_bps_busiest_host"] / 1e3, 1)
    return figs, dict(d.get("targets", {}))


def sampling_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs: dict[str, Any] = {}
    ok: dict[str, bool] = {}
    rows = {(r["kind"], r["sample"]): r for r in d.get("rows", [])}
    for (kind, p), r in rows.items():
        figs[f"{kind}_p{p:g}_cpu_s_per_million"] = r["cpu_s_per_million"]
        figs[f"{kind}_p{p:g}_error_pct"] = round(100 * r["error"] / r["sent"], 2)
    for kind in ("counter", "flows"):
        full, tenth = rows.get((kind, 1.0)), rows.get((kind, 0.1))
        if full and tenth:
            ok[f"{kind}: sample 0.1 within its stated bound"] = bool(tenth["within_bound"])
            ok[f"{kind}: sample 0.1 costs less monitor CPU than 1"] = (
                tenth["cpu_s_per_million"] < full["cpu_s_per_million"])
    return figs, ok


def reactions_headline(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    figs = {k: round(d[k], 2) for k in (
        "event_to_flow_ms_median", "event_to_flow_ms_p99", "interval_end_to_flow_ms_median",
        "interval_end_to_flow_ms_p99", "scan_to_flow_intervals_median",
        "scan_to_flow_intervals_p99") if isinstance(d.get(k), int | float)}
    return figs, {"interval end -> flow <= 100 ms (p99)": bool(d.get("meets_target"))}


#: the overlay part's full run (N = 1,000 dominates; N = 10,000 is run by hand:
#: ``bench/overlay_scale.py --sizes 10000 --fanout 8,16``)
BUDGET_OVERLAY = 300

PARTS = [
    Part("engine", "bench.engine",
         "part 1b: sketch engine vs the original per-packet path (scapy + madoka), 1M packets",
         # --quick keeps the original path on a 5,000-packet slice (its rate is per packet)
         full=["--quick", "--packets", "1000000", "--repeat", "3"], quick=["--quick"],
         budget_s=70, headline=engine_headline, targets=["engine >= 20x original"]),
    Part("accuracy", "bench.accuracy",
         "part 3: the elastic engine on Zipf 1.0/1.1/1.3 and elephants+mice at 128 KB/512 KB/"
         "2 MB (HH F1 and ARE, WMRE, per-flow ARE, entropy, cardinality, under-estimates, "
         "update rate, partial keys), beside the reference ElasticSketch with --reference",
         full=[], quick=["--quick"], budget_s=300, headline=accuracy_headline,
         targets=["the engine issue's targets per trace (against the reference when given)"]),
    Part("accuracy_merge", "bench.accuracy_merge",
         "part 3b: every answer (HH, per-flow ARE, distribution, cardinality, entropy, "
         "changers, superspreaders) at 128 KB/512 KB/2 MB, Zipf 0.8/1.1/1.5, CM today vs "
         "elastic one host and merged over 8", full=[], quick=["--quick"], budget_s=150,
         headline=accuracy_merge_headline,
         targets=["the issue's targets at 512 KB, Zipf 1.1 (one host; merged within 10%)"]),
    Part("overlay", "bench.overlay_scale",
         "part 4: overlay tree vs star for N = 10, 100, 1000 simulated agents",
         full=[], quick=["--quick"], budget_s=BUDGET_OVERLAY, json_name="overlay_scale",
         json_flag=True, headline=overlay_headline,
         targets=["N=1000 and 10000: controller KB/interval <= 100 and <= 1.5x N=100, "
                  "complete <= 1 s, config <= 2 s, ?host= <= 1 s"]),
    Part("monitor", "bench.monitor",
         "parts 1a + 2: monitor throughput from a sendmmsg sender (C accept-only loop, Python "
         "accept-only, 1/3 counters, 3 elastic counters, 2 queues, NFLOG, eBPF) and ping RTT "
         "added, in namespaces",
         full=["--rates", "20000,50000,100000,150000,200000,300000", "--duration", "1.5"],
         quick=["--quick"], budget_s=420, root=True, headline=monitor_headline,
         targets=["3 counters >= 80% of accept-only", "3 elastic counters >= 0.85x "
                  "accept-only capacity", "2 queues >= 1.6x one queue",
                  "median RTT added <= 100 us", "nflog: median RTT added <= 20 us",
                  "nflog: throughput without loss >= NFQUEUE's",
                  "ebpf: no-loss rate >= 10x NFLOG or the sender's ceiling",
                  "ebpf: median RTT added <= 5 us", "goal: ebpf >= 2 M pkt/s per core"]),
    Part("ebpf_accuracy", "bench.ebpf_accuracy",
         "eBPF capture: elastic 512 KB answers from the kernel's records of a Zipf trace "
         "replayed through a veth vs the Python engine's", full=[], quick=["--quick"],
         budget_s=120, root=True, headline=ebpf_accuracy_headline,
         targets=["every figure within 10% of the Python engine's"]),
    Part("e2e", "bench.e2e",
         "part 5: Mininet tree (depth 2, fanout 3): POST task -> first complete global result",
         full=["--repeat", "5"], quick=["--quick"], budget_s=60, root=True, mininet=True,
         headline=e2e_headline, targets=["<= 2 report intervals"]),
    Part("bandwidth", "bench.bandwidth",
         "available bandwidth, SLoPS probe vs bulk TCP, HTB bottleneck with/without "
         "cross traffic", full=["--rates", "10", "--repeat", "1"],
         quick=["--rates", "10", "--repeat", "1"], budget_s=35, root=True,
         headline=bandwidth_headline),
    Part("sampling", "bench.sampling",
         "monitor CPU per million packets and accuracy of sampled tasks (counter, "
         "flows) at sample 1, 0.1, 0.01, in namespaces",
         full=[], quick=["--quick"], budget_s=70, root=True, headline=sampling_headline,
         targets=["sample 0.1 within its stated bound", "sample 0.1 costs less CPU"]),
    Part("reactions", "bench.reactions",
         "port-scan event -> block flow on the scanner's edge switch (Mininet tree)",
         full=["--repeat", "16"], quick=["--quick"], budget_s=150, root=True, mininet=True,
         headline=reactions_headline,
         targets=["interval end -> flow <= 100 ms (p99)"]),
    Part("paths", "bench.paths",
         "path health: localize one lossy link (0.5-20%) from probe pairs over simulated "
         "fat-trees of 100 and 1,000 hosts", full=[], quick=["--quick"], budget_s=240,
         headline=paths_headline,
         targets=["precision >= 0.99", "recall >= 0.95 for loss >= 1%",
                  "detection within 2 intervals", "probes <= 1% of 1 Gbit/s per host"]),
    # bench.load takes the Mininet lock itself (it has no --no-lock): the runner waits for
    # the lock to be free, then starts it.
    Part("load", "bench.load",
         "20 REST clients against the controller with 9 agents (own Mininet tree)",
         full=["--duration", "20"], quick=["--duration", "5"], budget_s=70, optional=True,
         own_lock=True,
         headline=load_headline, targets=["no errors"]),
]
BY_NAME = {p.name: p for p in PARTS}


# ------------------------------------------------------------------ running

def module_exists(module: str) -> bool:
    return (ROOT / (module.replace(".", "/") + ".py")).exists()


def run_part(part: Part, quick: bool, results_dir: Path) -> dict[str, Any]:
    """Run one part as a subprocess (output passed through); return its summary entry."""
    entry: dict[str, Any] = {"what": part.what, "module": part.module,
                             "targets_stated": part.targets}
    if not module_exists(part.module):
        entry["status"] = f"skipped: {part.module} does not exist yet"
        return entry
    if part.root and os.geteuid() != 0:
        entry["status"] = "skipped: needs root"
        return entry
    argv = part.argv(quick, results_dir)
    json_path = part.json_path(results_dir)
    shown = [a for a in argv[1:] if a != CHILD_BOOT]
    entry["command"] = shown
    print(f"===== {part.name}: {part.what}", flush=True)
    print(f"      {' '.join(shown)} (budget {part.budget_s:.0f} s)", flush=True)
    before = json_path.stat().st_mtime if json_path.exists() else None
    with contextlib.ExitStack() as stack:
        if part.mininet or part.own_lock:
            entry["lock_wait_s"] = stack.enter_context(mininet_lock(on_wait=_say_waiting))
        if part.own_lock:
            stack.close()  # free again: the part takes it (a narrow race with other users)
        _run(argv, part.budget_s * (0.6 if quick else 1.0) * 1.5 + 30, entry)
    fresh = json_path.exists() and json_path.stat().st_mtime != before
    if fresh:
        entry["json"] = str(json_path)
        data = json.loads(json_path.read_text(encoding="utf-8"))
        if part.headline is not None:
            try:
                entry["figures"], entry["targets"] = part.headline(data)
            except (KeyError, TypeError, ValueError) as exc:
                entry["figures"], entry["targets"] = {}, {}
                entry["headline_error"] = f"{type(exc).__name__}: {exc}"
    elif entry["status"] == "ok":
        entry["status"] = "failed: no JSON result written"
    print(flush=True)
    return entry


def _say_waiting() -> None:
    print(f"      waiting for {LOCK_PATH} (another Mininet network is running; "
          "not counted in the part's time)", flush=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the part's process group: SIGINT first (Python unwinds and its ``finally``
    blocks clean up namespaces and Mininet), then SIGTERM, then SIGKILL."""
    stop_process(proc, timeout=120, signals=(signal.SIGINT, signal.SIGTERM, signal.SIGKILL))


def _run(argv: list[str], timeout: float, entry: dict[str, Any]) -> None:
    """Run one part's command; stop its process group at ``timeout``."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
        entry["status"] = "ok" if code == 0 else f"failed: exit code {code}"
    except subprocess.TimeoutExpired:
        _stop(proc)
        code = proc.returncode
        entry["status"] = f"failed: stopped after {time.monotonic() - start:.0f} s"
    except KeyboardInterrupt:
        _stop(proc)
        raise
    entry["seconds"] = round(time.monotonic() - start, 1)
    entry["returncode"] = code


def machine() -> dict[str, Any]:
    info = machine_info()
    u = platform.uname()
    info.update(uname=" ".join([u.system, u.node, u.release, u.version, u.machine]),
                nproc=os.cpu_count())
    return info


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """One row per target (MET / NOT MET), one row for a part without targets."""
    rows = []
    for name, e in results.items():
        targets = e.get("targets") or {}
        first = [name, e["status"], e.get("seconds", "-")]
        if not targets:
            rows.append([*first, "-", "-"])
        for i, (text, ok) in enumerate(targets.items()):
            rows.append([*(first if i == 0 else ["", "", ""]), "MET" if ok else "NOT MET", text])
    return rows


def write_summary(results: dict[str, dict[str, Any]], quick: bool, total: float,
                  results_dir: Path) -> Path:
    """Write ``summary.json``; parts not run this time keep their previous entry."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "summary.json"
    parts: dict[str, Any] = {}
    if path.exists():
        try:
            parts = json.loads(path.read_text(encoding="utf-8")).get("parts", {})
        except ValueError:
            parts = {}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for entry in results.values():
        entry.update(date=now, quick=quick)
    parts.update(results)
    payload = {"date": now, "machine": machine(), "quick": quick, "total_s": round(total, 1),
               "ran": list(results), "parts": parts}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", metavar="PART",
                    help=f"parts to run (default all): {', '.join(BY_NAME)}")
    ap.add_argument("--quick", action="store_true", help="short runs of every part")
    ap.add_argument("--list", action="store_true", help="list the parts and exit")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help=f"where the JSON results go (default {bench.common.RESULTS_DIR})")
    args = ap.parse_args(argv)
    if args.list:
        for p in PARTS:
            print(f"{p.name:10} {p.what}" + (f" [targets: {'; '.join(p.targets)}]"
                                             if p.targets else ""))
        return 0
    unknown = [n for n in args.parts if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    chosen = [BY_NAME[n] for n in args.parts] if args.parts else PARTS
    results_dir = (args.results_dir or bench.common.RESULTS_DIR).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    try:
        for part in chosen:
            entry = run_part(part, args.quick, results_dir)
            if part.optional and entry["status"].startswith("skipped: bench."):
                continue
            results[part.name] = entry
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    total = time.monotonic() - start - sum(e.get("lock_wait_s", 0) for e in results.values())
    print(format_table(f"Summary ({'quick' if args.quick else 'full'} run, {total:.0f} s, "
                       "not counting waits for the Mininet lock)",
                       ["part", "status", "s", "verdict", "target"], summary_rows(results)))
    if not args.parts and not args.quick:
        print(f"suite time {total:.0f} s: {'MET' if total <= 600 else 'NOT MET'} "
              "(whole suite <= 10 minutes)")
    path = write_summary(results, args.quick, total, results_dir)
    print(f"\nsummary written to {path}", flush=True)
    return 0 if all(e["status"] == "ok" or e["status"].startswith("skipped")
                    for e in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
