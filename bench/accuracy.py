"""Benchmark: the elastic engine on four trace shapes and three memories, beside the
reference ElasticSketch when a checkout of it is given.

Run::

    .venv/bin/python -m bench.accuracy                          # about 5 minutes
    .venv/bin/python -m bench.accuracy --reference DIR          # + BlockLiu/ElasticSketchCode
    .venv/bin/python -m bench.accuracy --quick                  # smaller traces, 2 memories

Traces (4-byte keys: IPv4 sources, as the reference's demo counts; the
engine runs with ``key: src`` and ``family: 4``, so its heavy slots are
4-byte keys too), each with at least 100,000 flows (``--quick``: fewer
packets, so fewer distinct flows):

* ``zipf1.0``, ``zipf1.1``: 2,000,000 packets drawn by Zipf from 300,000 /
  200,000 flows (about 203k / 124k of them present); ``zipf1.3``: 4,000,000
  packets from 4,000,000 flows (about 130k present);
* ``elephants+mice``: 100,000 flows, 5% of them elephants carrying 80% of
  the packets (Pareto sizes), the others lognormal mice.

Memories 128 KB, 512 KB and 2 MB (``--quick``: 128 KB and 512 KB), the
reference with a quarter in its heavy part as in its demo. Figures: heavy-hitter
F1 at 0.01% of the packets, heavy-hitter size ARE, flow size distribution
WMRE, per-flow ARE over all flows, entropy and cardinality relative error,
flows under-estimated, update rate (one call over the whole trace, CPU time
of this process: the machine is shared). Partial keys: a ``five_tuple`` task
(flows spread over sources) answering ``src`` against a ``src`` task of the
same memory (top-100 sources F1 against the truth). Then the issue's targets,
each MET / NOT MET (or NOT JUDGED without ``--reference``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from bench import elastic_reference
from bench.common import base_parser, print_table, write_json
from measure_model import partial_keys
from measure_model.packet.keys import HeaderBatch
from measure_model.sketch import estimators as elastic_est
from measure_model.sketch.elastic import ElasticSketch, compiled

HH = 0.0001
MEMORIES_KB = [128, 512, 2048]
TOP_SOURCES = 100


def distinct_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random 32-bit keys (never 0), in random order."""
    keys = np.unique(rng.integers(1, 2 ** 32, n + n // 4 + 100, dtype=np.uint64))
    return rng.permutation(keys)[:n]


def zipf_trace(packets: int, flows: int, skew: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = distinct_keys(rng, flows)
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    return keys[rng.choice(flows, size=packets, p=p / p.sum())]


def elephants_mice(flows: int, packets: int, seed: int) -> np.ndarray:
    """5% elephants with 80% of the packets (Pareto shares), lognormal mice with the rest."""
    rng = np.random.default_rng(seed)
    keys = distinct_keys(rng, flows)
    big = flows // 20
    share = rng.pareto(1.2, big) + 1.0
    ele = np.maximum(1, np.round(share / share.sum() * 0.8 * packets)).astype(np.int64)
    mice = rng.lognormal(0.5, 1.0, flows - big)
    mic = np.maximum(1, np.round(mice / mice.sum() * 0.2 * packets)).astype(np.int64)
    stream = np.repeat(keys, np.concatenate([ele, mic]))
    return stream[rng.permutation(stream.shape[0])]


def traces(quick: bool) -> dict[str, np.ndarray]:
    """The four traces; sizes give at least 100,000 distinct flows each (``--quick``:
    400,000 packets, fewer flows)."""
    if quick:
        return {"zipf1.0": zipf_trace(400_000, 100_000, 1.0, 10),
                "zipf1.1": zipf_trace(400_000, 100_000, 1.1, 11),
                "zipf1.3": zipf_trace(400_000, 500_000, 1.3, 13),
                "elephants+mice": elephants_mice(50_000, 400_000, 14)}
    return {"zipf1.0": zipf_trace(2_000_000, 300_000, 1.0, 10),     # ~203k flows
            "zipf1.1": zipf_trace(2_000_000, 200_000, 1.1, 11),     # ~124k flows
            "zipf1.3": zipf_trace(4_000_000, 4_000_000, 1.3, 13),   # ~130k flows
            "elephants+mice": elephants_mice(100_000, 2_000_000, 14)}


def truth_of(stream: np.ndarray) -> dict[str, Any]:
    keys, counts = np.unique(stream, return_counts=True)
    total = stream.shape[0]
    sizes, n = np.unique(counts, return_counts=True)
    return {"keys": keys, "counts": counts, "total": total,
            "hist": {int(s): float(c) for s, c in zip(sizes, n, strict=True)},
            "entropy": math.log2(total) - float((counts * np.log2(counts)).sum()) / total,
            "hh": set(keys[counts >= HH * total].tolist())}


def f1(reported: set, true: set) -> float:
    tp = len(reported & true)
    p = tp / len(reported) if reported else 1.0
    r = tp / len(true) if true else 1.0
    return 2 * p * r / (p + r) if p + r else 0.0


def figures(truth: dict, est: np.ndarray, hh: dict[int, int], hist: dict[int, float],
            card: float, entropy: float) -> dict[str, float]:
    keys, counts, total = truth["keys"], truth["counts"], truth["total"]
    rel = np.abs(est - counts) / counts
    heavy = counts >= HH * total
    return {"hh_f1": f1({k for k, v in hh.items() if v >= HH * total}, truth["hh"]),
            "hh_are": float(rel[heavy].mean()) if heavy.any() else 0.0,
            "wmre": elastic_est.wmre(truth["hist"], hist),
            "are_all": float(rel.mean()),
            "entropy_re": abs(entropy - truth["entropy"]) / truth["entropy"],
            "card_re": abs(card - keys.shape[0]) / keys.shape[0],
            "under": int((est < counts).sum())}


def src_full(keys: np.ndarray) -> np.ndarray:
    z = np.zeros(keys.shape[0], np.uint64)
    return HeaderBatch.from_arrays(keys, z, z, z, z, z).full_keys("src")


def ours(stream: np.ndarray, truth: dict, memory: int) -> dict[str, float]:
    es = ElasticSketch(memory, "src", family=4)
    full = src_full(stream)
    start = time.process_time()
    es.update(stream, full, np.ones(stream.shape[0], np.uint64))
    seconds = time.process_time() - start
    e = es.entries()
    est_heavy = e["count"] + e["light"]
    hh = dict(zip(e["hkey"].tolist(), est_heavy.tolist(), strict=True))
    dist = elastic_est.distribution(es)
    out = figures(truth, es.query(truth["keys"]), hh, dist["histogram"],
                  elastic_est.cardinality(es)["estimate"],
                  elastic_est.entropy(dist["histogram"], truth["total"]))
    return {**out, "pps": stream.shape[0] / max(seconds, 1e-9), "state": es.memory_bytes}


def reference(checkout: str, stream: np.ndarray, truth: dict, memory: int) -> dict[str, float]:
    r = elastic_reference.run(checkout, memory, stream, truth["keys"],
                              max(1, int(HH * truth["total"])))
    out = figures(truth, r["est"], r["hh"], r["dist"], r["cardinality"], r["entropy"])
    return {**out, "pps": r["speed"], "state": memory}


def partial_f1(quick: bool, memory: int) -> dict[str, float]:
    """Top sources: a five_tuple task's ?key=src against a src task of the same memory."""
    rng = np.random.default_rng(21)
    flows = 50_000 if quick else 200_000
    packets = 400_000 if quick else 2_000_000
    sources = rng.integers(1, 2 ** 32, flows // 8, dtype=np.uint64)
    p = np.arange(1, sources.shape[0] + 1, dtype=np.float64) ** -1.0
    src = sources[rng.choice(sources.shape[0], size=flows, p=p / p.sum())]
    dst = rng.integers(1, 2 ** 32, flows, dtype=np.uint64)
    sport = rng.integers(1024, 65535, flows)
    dport = rng.choice([53, 80, 443, 8080, 5001], flows)
    q = np.arange(1, flows + 1, dtype=np.float64) ** -1.1
    pick = rng.choice(flows, size=packets, p=q / q.sum())
    b = HeaderBatch.from_arrays(src[pick], dst[pick], np.full(packets, 17), sport[pick],
                                dport[pick], np.full(packets, 100))
    ones = np.ones(packets, np.uint64)
    five = ElasticSketch(memory, "five_tuple", family=4)
    five.update(b.sketch_keys("five_tuple"), b.full_keys("five_tuple"), ones)
    own = ElasticSketch(memory, "src", family=4)
    own.update(b.sketch_keys("src"), b.full_keys("src"), ones)
    keys, counts = np.unique(src[pick], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:TOP_SOURCES]
    true = {int(k) for k in keys[order]}
    cut = int(counts[order[-1]])
    ans = partial_keys.answer(five, "src", None, 10 * TOP_SOURCES)
    s = partial_keys.sizes(five, "src")
    five_top = {int(f[1] & np.uint64(0xFFFFFFFF)) for f in
                s["full"][np.argsort(-s["size"], kind="stable")[:TOP_SOURCES]]}
    e = own.entries()
    est = e["count"] + e["light"]
    own_top = set(e["hkey"][np.argsort(-est, kind="stable")[:TOP_SOURCES]].tolist())
    return {"five_tuple_f1": f1(five_top, true), "src_f1": f1(own_top, true),
            "cut": cut, "listed": len(ans["partial"]["keys"])}


def verdict(ok: bool | None) -> str:
    return "NOT JUDGED" if ok is None else "MET" if ok else "NOT MET"


def targets(rows: list[dict], partial: dict[int, dict], has_ref: bool) -> list[list[str]]:
    """The issue's targets, one line per (figure, trace/memory) judged."""
    out: list[list[str]] = []
    by = {(r["trace"], r["memory_kb"], r["variant"]): r for r in rows}

    def pair(trace: str, kb: int) -> tuple[dict, dict | None]:
        return by[(trace, kb, "ours")], by.get((trace, kb, "reference"))

    trace_names = sorted({r["trace"] for r in rows})
    kbs = sorted({r["memory_kb"] for r in rows})
    for t in trace_names:
        o, ref = pair(t, 128)
        out.append(["HH F1 0.01%, 128 KB, >= ref - 0.02", t, f"{o['hh_f1']:.4f}",
                    f"{ref['hh_f1']:.4f}" if ref else "-",
                    verdict(o["hh_f1"] >= ref["hh_f1"] - 0.02 if ref else None)])
        for kb in (128, 512):
            if kb not in kbs:
                continue
            o, ref = pair(t, kb)
            out.append([f"HH size ARE, {kb} KB, <= 2x ref", t, f"{o['hh_are']:.5f}",
                        f"{ref['hh_are']:.5f}" if ref else "-",
                        verdict(o["hh_are"] <= 2 * ref["hh_are"] + 1e-12 if ref else None)])
            out.append([f"WMRE, {kb} KB, <= 1.5x ref", t, f"{o['wmre']:.4f}",
                         f"{ref['wmre']:.4f}" if ref else "-",
                         verdict(o["wmre"] <= 1.5 * ref["wmre"] if ref else None)])
        for kb in kbs:
            o, ref = pair(t, kb)
            out.append([f"per-flow ARE, {kb} KB, <= ref", t, f"{o['are_all']:.4f}",
                        f"{ref['are_all']:.4f}" if ref else "-",
                        verdict(o["are_all"] <= ref["are_all"] if ref else None)])
            out.append([f"entropy RE, {kb} KB, <= ref", t, f"{o['entropy_re']:.4%}",
                        f"{ref['entropy_re']:.4%}" if ref else "-",
                        verdict(o["entropy_re"] <= ref["entropy_re"] if ref else None)])
            out.append([f"flows under-estimated, {kb} KB, = 0", t, str(o["under"]),
                        str(ref["under"]) if ref else "-", verdict(o["under"] == 0)])
    speeds = [r["pps"] for r in rows if r["variant"] == "ours"]
    out.append(["update, compiled, one core, >= 10 M pkt/s", "all",
                f"{min(speeds) / 1e6:.1f}-{max(speeds) / 1e6:.1f} M", "-",
                verdict(compiled() and min(speeds) >= 10e6)])
    for kb, p in sorted(partial.items()):
        out.append([f"top sources from five_tuple vs src task, {kb} KB, F1 within 0.02",
                    "zipf flows", f"{p['five_tuple_f1']:.4f}", f"src task {p['src_f1']:.4f}",
                    verdict(p["five_tuple_f1"] >= p["src_f1"] - 0.02)])
    return out


COLUMNS = [("hh_f1", "HH F1", "{:.4f}"), ("hh_are", "HH ARE", "{:.5f}"),
           ("wmre", "WMRE", "{:.4f}"), ("are_all", "ARE all", "{:.4f}"),
           ("entropy_re", "entropy RE", "{:.3%}"), ("card_re", "card RE", "{:.3%}"),
           ("under", "under", "{}"), ("pps", "M pkt/s", "{:.1f}")]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--reference", metavar="DIR",
                        help="a checkout of BlockLiu/ElasticSketchCode to run side by side")
    args = parser.parse_args(argv)
    if args.reference:
        elastic_reference.source_dir(args.reference)
        print(f"reference: {args.reference} (src/CPU/ElasticSketch), built per memory")
    else:
        print("reference: not given (--reference DIR): its columns are empty and the targets "
              "against it are NOT JUDGED")
    if not compiled():
        print("compiled path: NOT BUILT (python -m measure_model.sketch.elastic_c); the numpy "
              "path runs")
    kbs = MEMORIES_KB[:2] if args.quick else MEMORIES_KB
    rows: list[dict] = []
    table = []
    for name, stream in traces(args.quick).items():
        truth = truth_of(stream)
        print(f"{name}: {stream.shape[0]:,} packets, {truth['keys'].shape[0]:,} flows, "
              f"{len(truth['hh'])} heavy hitters", flush=True)
        for kb in kbs:
            found = {"ours": ours(stream, truth, kb * 1024)}
            if args.reference:
                found["reference"] = reference(args.reference, stream, truth, kb * 1024)
            for variant, r in found.items():
                rows.append({"trace": name, "memory_kb": kb, "variant": variant,
                             "flows": int(truth["keys"].shape[0]), **r})
                table.append([name, kb, variant] + [
                    fmt.format(r[c] / 1e6 if c == "pps" else r[c]) for c, _, fmt in COLUMNS])
    print_table("Elastic engine vs reference (4-byte keys; same total memory)",
                ["trace", "KB", "variant"] + [h for _, h, _ in COLUMNS], table)
    partial = {kb: partial_f1(args.quick, kb * 1024) for kb in kbs}
    checks = targets(rows, partial, bool(args.reference))
    print_table("Targets (ours vs reference; NOT JUDGED: needs --reference)",
                ["target", "trace", "ours", "reference", "verdict"], checks)
    write_json("accuracy", {"memories_kb": kbs, "reference": bool(args.reference),
                            "compiled": compiled(), "rows": rows,
                            "partial": {str(k): v for k, v in partial.items()},
                            "targets": [{"target": c[0], "trace": c[1], "ours": c[2],
                                         "reference": c[3], "verdict": c[4]} for c in checks]},
               enabled=not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
