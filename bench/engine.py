"""Benchmark: the sketch engine alone versus the original per-packet path.

Run::

    .venv/bin/python -m bench.engine            # full run, about 1-2 minutes
    .venv/bin/python -m bench.engine --quick    # short run

A recorded stream of 1,000,000 packets (Zipf, skew 1.1, over about 100,000
five-tuple flows; each packet is the 128-byte header copy the monitor takes,
built beforehand) is fed to:

* the engine: ``HeaderBatch.from_payloads`` on batches of 256 copies, then
  ``Counter.update`` for 1 counter (``src``) and for 3 counters (``src``,
  ``src_dst``, ``dport``), each a 16384 x 4 conservative count-min sketch
  with a heavy-hitter threshold of 0.1%, a 1 s tumbling window and HLL;
* a re-implementation of the original design's per-packet path, in the same
  process: scapy ``IP(payload)`` parse, then one madoka ``Sketch.inc`` per
  counter per packet with the key as a string. It is run on a 20,000-packet
  slice (5,000 with ``--quick``) and its rate is per packet, so it scales.

It prints packets per second (median and min..max of the repetitions) and
the engine/original ratio (target: >= 20x). Last, the elastic update alone
(hash, vote, light add: ``ElasticSketch.update`` over the whole parsed
stream in one call, 128 KB, CPU time of this process since the machine is
shared): target >= 10 M packets/s on the compiled path, goal 30 M.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import base_parser, print_table, repeat, spread_text, summary, write_json
from host_agent.counters.countmin import Counter, CounterSpec
from host_agent.counters.elastic import ElasticCounter
from measure_model.packet.keys import HEADER_COPY_BYTES, HeaderBatch
from measure_model.sketch.elastic import ElasticSketch, compiled
from measure_model.task import parse_task

COUNTER_SETS = {1: ["src"], 3: ["src", "src_dst", "dport"]}
ELASTIC_KEYS = ["src_dst"]
ELASTIC_MEMORY = 512 * 1024
BATCH = 256


def build_stream(packets: int, flows: int, skew: float, seed: int = 1) -> list[bytes]:
    """Header copies of a Zipf stream over random TCP/UDP five-tuples."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0x0A000001, 0x0A00FFFF, flows)
    dst = rng.integers(0x0A000001, 0x0A0000FF, flows)
    udp = rng.random(flows) < 0.7
    sport = rng.integers(1024, 65535, flows)
    dport = rng.choice([53, 80, 443, 5001, 5201, 8080], flows)
    length = rng.integers(60, 1500, flows)
    headers = []
    for i in range(flows):
        proto = 17 if udp[i] else 6
        ip = struct.pack("!BBHHHBBHII", 0x45, 0, int(length[i]), 1, 0, 64, proto, 0,
                         int(src[i]), int(dst[i]))
        l4 = struct.pack("!HH", int(sport[i]), int(dport[i])) + bytes(16)
        headers.append((ip + l4 + bytes(HEADER_COPY_BYTES))[:HEADER_COPY_BYTES])
    p = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    order = rng.permutation(flows)[rng.choice(flows, size=packets, p=p / p.sum())]
    return [headers[i] for i in order.tolist()]


def engine_run(payloads: list[bytes], keys: list[str]) -> Callable[[], None]:
    def run() -> None:
        counters = [Counter(CounterSpec(key=k, threshold=0.001), now=0.0) for k in keys]
        now = 0.0
        for i in range(0, len(payloads), BATCH):
            batch = HeaderBatch.from_payloads(payloads[i:i + BATCH])
            now += 0.001
            for c in counters:
                c.update(batch, now)
        for c in counters:
            c.heavy_hitters()
    return run


def elastic_run(payloads: list[bytes], keys: list[str]) -> Callable[[], None]:
    """Elastic counters (heavy + light part, 512 KB total each), as flow_size tasks run."""
    def run() -> None:
        counters = [ElasticCounter(parse_task({"name": "e", "kind": "flow_size", "key": k,
                                               "memory": ELASTIC_MEMORY}, "bench"), now=0.0)
                    for k in keys]
        for i in range(0, len(payloads), BATCH):
            batch = HeaderBatch.from_payloads(payloads[i:i + BATCH])
            for c in counters:
                c.update(batch, 0.0)
        for c in counters:
            c.top_k()
    return run


def parse_run(payloads: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(payloads), BATCH):
            HeaderBatch.from_payloads(payloads[i:i + BATCH])
    return run


def original_run(payloads: list[bytes], keys: list[str]) -> Callable[[], None]:
    """Per packet: scapy parse and one madoka inc per counter (the original design)."""
    import madoka
    from scapy.layers.inet import IP

    def key_of(kind: str, ip) -> str:
        if kind == "src":
            return ip.src
        if kind == "src_dst":
            return f"{ip.src},{ip.dst}"
        return str(getattr(ip.payload, "dport", 0))

    def run() -> None:
        sketches = [(k, madoka.Sketch(width=16384 * 4)) for k in keys]
        for p in payloads:
            ip = IP(p)
            for kind, sketch in sketches:
                sketch.inc(key_of(kind, ip))
    return run


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=None)
    args = parser.parse_args(argv)
    reps = args.repeat or (1 if args.quick else 3)
    packets = args.packets or (200_000 if args.quick else 1_000_000)
    flows = 100_000
    slice_n = 5_000 if args.quick else 20_000
    t0 = time.perf_counter()
    payloads = build_stream(packets, flows, 1.1)
    print(f"stream: {packets:,} packets over {flows:,} flows built in "
          f"{time.perf_counter() - t0:.1f} s; {reps} repetition(s)", flush=True)

    rows: list[list[str]] = []
    results: dict[str, Any] = {}
    parse_t = repeat(parse_run(payloads), reps)
    parse_rate = [packets / t for t in parse_t]
    rows.append(["engine: parse only", "-", spread_text(parse_rate), "", ""])
    results["parse_only_pps"] = parse_rate
    for n, keys in COUNTER_SETS.items():
        eng_t = repeat(engine_run(payloads, keys), reps)
        eng = [packets / t for t in eng_t]
        original_run(payloads[:500], keys)()  # warm up scapy's dissectors
        orig_t = repeat(original_run(payloads[:slice_n], keys), reps)
        orig = [slice_n / t for t in orig_t]
        ratio = summary(eng)[0] / summary(orig)[0]
        rows.append([f"engine: {n} counter(s)", ",".join(keys), spread_text(eng),
                     f"{1e6 / summary(eng)[0]:.2f}", f"{ratio:.1f}x"])
        rows.append([f"original: {n} counter(s)", ",".join(keys), spread_text(orig),
                     f"{1e6 / summary(orig)[0]:.2f}", "1x"])
        results[f"counters_{n}"] = {"keys": keys, "engine_pps": eng, "original_pps": orig,
                                    "ratio_median": ratio, "target_ratio": 20,
                                    "meets_target": ratio >= 20}
    el_t = repeat(elastic_run(payloads, ELASTIC_KEYS), reps)
    el = [packets / t for t in el_t]
    rows.append(["engine: elastic 1 counter, 512 KB", ",".join(ELASTIC_KEYS), spread_text(el),
                 f"{1e6 / summary(el)[0]:.2f}", ""])
    results["elastic_1"] = {"keys": ELASTIC_KEYS, "memory": ELASTIC_MEMORY, "engine_pps": el,
                            "target_pps": 500_000, "goal_pps": 2_000_000,
                            "meets_target": summary(el)[0] >= 500_000}
    whole = HeaderBatch.from_payloads(payloads)
    update_rows = {}
    for key in ("src", "five_tuple"):
        hk, full = whole.sketch_keys(key), whole.full_keys(key)
        rates = []
        for _ in range(reps):
            es = ElasticSketch(128 * 1024, key, family=4)
            start = time.process_time()
            es.update(hk, full, np.ones(packets, np.uint64))
            rates.append(packets / max(time.process_time() - start, 1e-9))
        update_rows[key] = rates
        rows.append([f"elastic update only, {'compiled' if compiled() else 'numpy'}, 128 KB",
                     key, spread_text(rates), f"{1e6 / summary(rates)[0]:.3f}", ""])
    results["elastic_update"] = {"compiled": compiled(), "memory": 128 * 1024,
                                 "pps": update_rows, "target_pps": 10_000_000,
                                 "goal_pps": 30_000_000,
                                 "meets_target": compiled() and min(
                                     summary(r)[0] for r in update_rows.values()) >= 10_000_000}
    print_table(f"Engine vs original per-packet path ({packets:,} packets, batches of "
                f"{BATCH}; original on a {slice_n:,}-packet slice)",
                ["path", "counters", "packets/s median (min..max)", "us/packet", "ratio"],
                rows)
    write_json("engine", {"packets": packets, "flows": flows, "skew": 1.1, "batch": BATCH,
                          "repetitions": reps, "original_slice": slice_n, **results},
               enabled=not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
