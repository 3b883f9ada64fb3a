"""Benchmark: localizing a lossy link from probe pairs, over simulated fat-trees.

Run::

    .venv/bin/python -m bench.paths            # N = 100 and 1,000 hosts, 60 faults each
    .venv/bin/python -m bench.paths --quick    # 20 faults each
    .venv/bin/python -m bench paths            # through the one benchmark runner

It builds the controller's own ``Topology`` of a k-ary fat-tree (k = 8 for
100 hosts, 16 for 1,000; hosts on the first edge ports), chooses the probe
pairs of ``peers: auto`` with ``measure_model.pairs.cover_pairs`` over the
paths of ``ryu_app.paths.routes`` (the code the controller runs), then per
trial puts one random loss rate from 0.5% to 20% on one random link crossed
by some pair (both directions, like the fault injector) and feeds
``ryu_app.paths.localize`` one report interval at a time, as the controller
does with a result's ``pairs``. Per pair and interval, the probes lost on the
way out (``lost_fwd``) are drawn from Binomial(sent, r) when the forward path
crosses the link, those lost on the way back from Binomial(sent - lost_fwd,
r) when the reverse path does (plus ``--background`` loss each way), with
sent = ``--rate`` x ``--interval``. Clean trials (no fault) count false
positives too.

Figures per N: detection time (intervals until the faulty link is the top
suspect), precision (suspects that were the faulty link, over every suspect
named in any interval of any trial), recall of the faulty link within 2
intervals (for loss >= 1%, and at 0.5%), and the probes' cost per host (the
busiest host's probe + echo bits/s on the wire, against 1 Gbit/s).
Targets: precision >= 0.99, recall >= 0.95 for loss >= 1%, detection within 2
intervals, probes <= 1% of 1 Gbit/s per host at N = 1,000.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from typing import Any

import numpy as np

from bench.common import base_parser, print_table, write_json
from measure_model.pairs import AUTO_MIN_COVER, cover_pairs, probe_load_bps
from ryu_app.net.topology import Topology
from ryu_app.paths.localize import Localizer, observations
from ryu_app.paths.routes import PairPath, PathCache, link_name

RATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
WIRE_OVERHEAD = 8 + 20 + 14 + 4 + 20  # UDP, IPv4, Ethernet, FCS, preamble + gap
LINK_BPS = 1e9


def fat_tree(k: int, hosts: int) -> tuple[Topology, dict[str, tuple[int, int]]]:
    """A k-ary fat-tree as the controller would discover it, with ``hosts`` hosts."""
    topo = Topology()
    half = k // 2
    core = [1000 + i for i in range(half * half)]
    attach: dict[str, tuple[int, int]] = {}
    for pod in range(k):
        aggs = [100 * (pod + 1) + i for i in range(half)]
        edges = [100 * (pod + 1) + half + i for i in range(half)]
        for a, agg in enumerate(aggs):
            for e, edge in enumerate(edges):
                topo.add_link(agg, 1 + e, edge, half + 1 + a)
            for c in range(half):
                topo.add_link(agg, half + 1 + c, core[a * half + c], 1 + pod)
        for edge in edges:
            for port in range(1, half + 1):
                if len(attach) < hosts:
                    attach[f"h{len(attach) + 1}"] = (edge, port)
    return topo, attach


def run_size(n: int, trials: int, args: Any, rng: random.Random,
             nprng: np.random.Generator) -> dict[str, Any]:
    k = 8 if n <= 128 else 16
    topo, attach = fat_tree(k, n)
    cache = PathCache(topo)

    def path(a: str, b: str) -> PairPath:
        found = cache.path(attach, a, b)
        if found is None:
            raise RuntimeError(f"no path between {a} and {b} in the simulated fat-tree")
        return found
    t0 = time.perf_counter()
    pairs = cover_pairs(attach, lambda a, b: sorted(path(a, b).links,
                                                    key=repr), min_cover=args.cover)
    select_s = time.perf_counter() - t0
    paths = {pair: path(*pair) for pair in pairs}
    directions = {pair: (set(p.fwd_links), set(p.rev_links)) for pair, p in paths.items()}
    coverage = Counter(link for p in paths.values() for link in p.links)
    covered = sorted(coverage, key=repr)
    per_host: Counter[str] = Counter()
    for a, b in pairs:
        per_host[a] += 1
        per_host[b] += 1
    # on the wire: probes sent plus echoes returned, with Ethernet framing and gaps
    frame_bits = (args.payload + WIRE_OVERHEAD) * 8
    busiest_bps = max(per_host.values()) * args.rate * frame_bits
    ip_bps = max(probe_load_bps(pairs, args.rate, args.payload).values())
    sent = int(round(args.rate * args.interval))
    rows: list[Any] = []
    detect: list[Any] = []
    named: Counter[Any] = Counter()
    assess_s: list[float] = []
    for trial in range(trials + args.clean):
        fault = rng.choice(covered) if trial < trials else None
        rate = RATES[trial % len(RATES)] if fault is not None else 0.0
        loc = Localizer()
        found_at = None
        for interval in range(1, args.intervals + 1):
            report = []
            for pair, (fwd, rev) in directions.items():
                pf = 1 - (1 - (rate if fault in fwd else 0.0)) * (1 - args.background)
                pr = 1 - (1 - (rate if fault in rev else 0.0)) * (1 - args.background)
                lost_fwd = int(nprng.binomial(sent, pf)) if pf > 0 else 0
                lost_rev = int(nprng.binomial(sent - lost_fwd, pr)) if pr > 0 else 0
                report.append({"src": pair[0], "dst": pair[1], "sent": sent,
                               "lost": lost_fwd + lost_rev, "lost_fwd": lost_fwd})
            t1 = time.perf_counter()
            rows_, links_ = observations(report, paths)
            out = loc.update(rows_, links_)
            assess_s.append(time.perf_counter() - t1)
            suspects = out.suspects()
            for s in suspects:
                named["right" if s.key == fault else "wrong"] += 1
            if found_at is None and suspects and suspects[0].key == fault:
                found_at = interval
        rows.append({"fault": link_name(fault) if fault else None, "rate": rate,
                     "pairs": coverage.get(fault, 0) if fault else 0,
                     "detected_in": found_at})
        if fault is not None:
            detect.append((rate, found_at))
    within = [(r, f) for r, f in detect if f is not None and f <= 2]
    big = [d for d in detect if d[0] >= 0.01]
    small = [d for d in detect if d[0] < 0.01]
    times = [f for r, f in detect if f is not None and r >= 0.01]
    total_named = named["right"] + named["wrong"]
    return {
        "n": n, "k": k, "pairs": len(pairs), "links": len(topo.links()) + n,
        "covered_links": len(covered),
        "min_cover": min(coverage.values()), "links_below_2": sum(
            1 for v in coverage.values() if v < 2),
        "select_s": round(select_s, 3),
        "assess_ms_median": round(statistics.median(assess_s) * 1e3, 2),
        "precision": named["right"] / total_named if total_named else 1.0,
        "wrong_suspects": named["wrong"],
        "recall_ge_1pct": sum(1 for r, _ in within if r >= 0.01) / len(big) if big else 1.0,
        "recall_half_pct": sum(1 for r, _ in within if r < 0.01) / len(small) if small else 1.0,
        "detect_p95_intervals": (float(np.percentile(times, 95)) if times else None),
        "detect_max_intervals": max(times) if times else None,
        "probe_bps_busiest_host": round(busiest_bps),
        "probe_ip_bps_busiest_host": round(ip_bps),
        "probe_share_of_1g": busiest_bps / LINK_BPS,
        "pairs_per_host_max": max(per_host.values()),
        "trials": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("localize one lossy link over simulated fat-trees")
    parser.add_argument("--sizes", default="100,1000", help="host counts (default 100,1000)")
    parser.add_argument("--trials", type=int, default=None,
                        help="faulty trials per size (default 60, 20 with --quick)")
    parser.add_argument("--clean", type=int, default=None,
                        help="trials without a fault per size (default 10, 4 with --quick)")
    parser.add_argument("--intervals", type=int, default=4, help="report intervals per trial")
    parser.add_argument("--interval", type=float, default=5.0, help="report interval, s")
    parser.add_argument("--rate", type=float, default=10.0, help="probes/s per pair")
    parser.add_argument("--payload", type=int, default=64, help="probe payload, bytes")
    parser.add_argument("--cover", type=int, default=AUTO_MIN_COVER,
                        help="pairs crossing each link at least (default: peers: auto's, "
                             f"{AUTO_MIN_COVER})")
    parser.add_argument("--background", type=float, default=0.0,
                        help="loss of every pair without a fault (default 0)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.trials = args.trials or (20 if args.quick else 60)
    args.clean = args.clean if args.clean is not None else (4 if args.quick else 10)
    rng, nprng = random.Random(args.seed), np.random.default_rng(args.seed)
    results = [run_size(int(n), args.trials, args, rng, nprng)
               for n in args.sizes.split(",")]
    print_table("bench paths: one lossy link (0.5-20%), simulated fat-tree",
                ["hosts", "pairs", "links (covered)", "min pairs/link", "precision",
                 "recall >=1%", "recall 0.5%", "detect p95/max", "probe kbit/s/host",
                 "assess ms"],
                [[r["n"], r["pairs"], f"{r['links']} ({r['covered_links']})", r["min_cover"],
                  f"{r['precision']:.3f}", f"{r['recall_ge_1pct']:.3f}",
                  f"{r['recall_half_pct']:.3f}",
                  f"{r['detect_p95_intervals']}/{r['detect_max_intervals']}",
                  f"{r['probe_bps_busiest_host'] / 1e3:.1f}", r["assess_ms_median"]]
                 for r in results])
    targets = _targets(results)
    for name, ok in targets.items():
        print(f"{'MET' if ok else 'NOT MET'}: {name}")
    write_json("paths", {"args": vars(args), "rows": results, "targets": targets},
               enabled=not args.no_json)
    return 0


def _targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out = {
        "precision >= 0.99": all(r["precision"] >= 0.99 for r in rows),
        "recall >= 0.95 for loss >= 1% (within 2 intervals)": all(
            r["recall_ge_1pct"] >= 0.95 for r in rows),
        "detection within 2 intervals (p95, loss >= 1%)": all(
            r["detect_p95_intervals"] is not None and r["detect_p95_intervals"] <= 2
            for r in rows),
    }
    big = [r for r in rows if r["n"] >= 1000]
    if big:
        out["probes <= 1% of 1 Gbit/s per host at N = 1,000"] = (
            big[0]["probe_share_of_1g"] <= 0.01)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
