"""Monitor cost and accuracy of sampled tasks (``sample: p``), in namespaces.

Run (root)::

    .venv/bin/python -m bench.sampling            # about a minute
    .venv/bin/python -m bench.sampling --quick

The receiver namespace runs the real agent; one task (kind ``counter``,
key ``src``, or kind ``flows``) is installed with ``sample`` p = 1, 0.1 and
0.01 (iptables ``statistic --mode random``). The sender offers a fixed
number of UDP packets at a fixed rate from 16 sources. For each p the table
gives the monitor's CPU seconds per million *offered* packets
(``/proc/<pid>/stat`` of the monitor process), the estimated total
(sampled packets x 1/p), its error against the packets sent and the 99.9%
bound the result states (``measure_model.sketch.sampling``).
"""

from __future__ import annotations

import sys
import time

from bench.common import base_parser, print_table, write_json
from bench.monitor import PORT, SOURCES, SUBNET, Agent, Namespaces, cpu_seconds, sh
from measure_model.sketch import sampling
from measure_model.task import parse_task

#: a UDP sender paced at a rate (the sampling figures need a known count, not a flood)
SENDER = r"""
import socket, sys, time
dst, port, rate, duration, nsrc = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5])
socks = []
for i in range(nsrc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"{sys.argv[6]}.{100 + i}", 0))
    s.connect((dst, port))
    socks.append(s.send)
payload = b"p" * 64
total = int(rate * duration)
sent = 0
start = time.perf_counter()
tick = 0.001
while sent < total:
    due = min(total, int((time.perf_counter() - start) * rate) + 1)
    while sent < due:
        try:
            socks[sent % nsrc](payload)
        except OSError:
            pass
        sent += 1
    if time.perf_counter() - start > duration * 3:
        break
    time.sleep(tick)
print(sent, time.perf_counter() - start)
"""


def run_one(net: Namespaces, kind: str, p: float, rate: int, duration: float) -> dict:
    agent = Agent(net, [])
    try:
        body = {"name": "s", "kind": kind, "filter": {"proto": "udp", "dport": PORT},
                "sample": p}
        if kind == "counter":
            body["key"] = "src"
        agent.call("PUT", "/tasks/1", parse_task(body, "bench").to_dict())
        pid = agent.call("GET", "/health")["monitors"][0]["pid"]
        time.sleep(0.5)
        cpu0 = cpu_seconds(pid)
        out = sh(["ip", "netns", "exec", net.snd, sys.executable, "-c", SENDER, f"{SUBNET}.2",
                  str(PORT), str(rate), str(duration), str(SOURCES), SUBNET],
                 timeout=duration * 4 + 30)
        sent = int(out.split()[0])
        time.sleep(0.5)
        cpu = cpu_seconds(pid) - cpu0
        snap = agent.call("GET", "/sketches/1/counters/1")  # a fresh agent's first sketch
        desc = sampling.describe(int(snap["packets"]), p)
        err = desc["packets_estimate"] - sent
        return {"kind": kind, "sample": p, "sent": sent, "sampled": snap["packets"],
                "estimate": desc["packets_estimate"], "error": err,
                "bound": desc["packets_bound"], "within_bound": abs(err) <= desc["packets_bound"],
                "cpu_s_per_million": round(1e6 * cpu / sent, 2)}
    finally:
        agent.close()


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--rate", type=int, default=30000, help="offered pkt/s")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else 5.0
    net = Namespaces()
    rows = []
    try:
        for kind in ("counter", "flows"):
            for p in (1.0, 0.1, 0.01):
                rows.append(run_one(net, kind, p, args.rate, duration))
                print(rows[-1], flush=True)
    finally:
        net.close()
    print_table(f"Sampled tasks: UDP 64 B at {args.rate} pkt/s offered for {duration:g} s",
                ["kind", "sample", "sent", "sampled", "estimate", "error", "bound (99.9%)",
                 "monitor CPU s / 1M pkts"],
                [[r["kind"], r["sample"], r["sent"], r["sampled"], r["estimate"], r["error"],
                  r["bound"], r["cpu_s_per_million"]] for r in rows])
    write_json("sampling", {"rows": rows, "rate": args.rate, "duration": duration},
               not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
