"""Bandwidth estimation benchmark: SLoPS probe next to the bulk TCP method.

Run (root)::

    .venv/bin/python bench/bandwidth.py            # 4 rates x 2 loads x 3 repetitions
    .venv/bin/python bench/bandwidth.py --quick    # 1 repetition

For each bottleneck (5, 10, 20, 50 Mbit/s; HTB as Mininet's
``TCLink(bw=...)`` sets it, on a router namespace's link to the destination)
and each cross-traffic load (none, and 40% of the bottleneck as
constant-rate UDP from a third namespace through the same router queue), it
runs the ``slops`` probe and the ``bulk`` method from the source
namespace against a standalone bandwidth agent in the destination and
prints, per method, the median estimate with its spread, the error against
the nominal available bandwidth (bottleneck minus cross traffic), the time
taken and the bytes sent. The probe's rates count IP bytes while HTB counts
Ethernet frames, so a perfect probe reads about 1.3% under the nominal
figure with 1000-byte packets. Results also go to
``bench/results/bandwidth.json``.

Every namespace, process and qdisc it creates is removed on exit, even on
failure; cross traffic and probes are bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, print_table, spread_text, write_json  # noqa: E402
from testing.procs import stop_process  # noqa: E402

PY = sys.executable
RATES = (5, 10, 20, 50)
LOADS = (0.0, 0.4)


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True,
                          timeout=timeout)


class Link:
    """Probe source, cross-traffic source and destination behind a router.

    ``src`` and ``xsrc`` each have their own veth to the router ``rtr``; the
    router's veth to ``dst`` carries HTB ``rate``. Cross traffic thus meets
    the probe (or the bulk TCP flow) only in the router's queue, like a flow
    from another host, and is not slowed by its own socket buffer.
    """

    def __init__(self, rate: float) -> None:
        tag = f"{os.getpid() % 1000}{uuid.uuid4().hex[:4]}"
        self.src, self.xsrc, self.rtr, self.dst = (f"bw{r}{tag}" for r in "sxrd")
        self.procs: list[subprocess.Popen] = []
        self.src_ip, self.xsrc_ip, self.dst_ip = "10.81.1.1", "10.81.2.1", "10.81.0.2"
        for ns in (self.src, self.xsrc, self.rtr, self.dst):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", self.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, (ns, ip, subnet) in enumerate(((self.src, self.src_ip, "10.81.1"),
                                              (self.xsrc, self.xsrc_ip, "10.81.2"),
                                              (self.dst, self.dst_ip, "10.81.0"))):
            host, router = f"bwh{i}{tag}", f"bwr{i}{tag}"
            sh("ip", "link", "add", host, "netns", ns, "type", "veth", "peer", "name", router,
               "netns", self.rtr)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", host)
            sh("ip", "-n", self.rtr, "addr", "add", f"{subnet}.254/24", "dev", router)
            sh("ip", "-n", ns, "link", "set", host, "up")
            sh("ip", "-n", self.rtr, "link", "set", router, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{subnet}.254")
        bottleneck = f"bwr2{tag}"
        sh("ip", "netns", "exec", self.rtr, "tc", "qdisc", "add", "dev", bottleneck, "root",
           "handle", "5:0", "htb", "default", "1")
        sh("ip", "netns", "exec", self.rtr, "tc", "class", "add", "dev", bottleneck, "parent",
           "5:0", "classid", "5:1", "htb", "rate", f"{rate}Mbit", "burst", "15k")
        self.procs.append(self.popen(self.dst, [PY, "-m", "host_agent.bandwidth.cli", "serve",
                                                "--port", "8000", "--data-ip", self.dst_ip]))
        code = f"import socket; socket.create_connection(({self.dst_ip!r}, 8000), 1).close()"
        deadline = time.monotonic() + 15
        while sh("ip", "netns", "exec", self.src, PY, "-c", code, check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("bandwidth agent did not start in the destination")
            time.sleep(0.1)

    def popen(self, ns: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, start_new_session=True)

    def probe(self, method: str, max_duration: float = 10) -> tuple[dict, float]:
        start = time.monotonic()
        out = sh("ip", "netns", "exec", self.src, PY, "-m", "host_agent.bandwidth.cli", "probe",
                 "--src-ip", self.src_ip, "--dst-ip", self.dst_ip, "--method", method,
                 "--max-duration", str(max_duration), check=False, timeout=max_duration + 20)
        return json.loads(out.stdout), time.monotonic() - start

    def cross(self, rate: float, seconds: float) -> subprocess.Popen:
        return self.popen(self.xsrc, [PY, "-m", "host_agent.bandwidth.cli", "cross", "--dst-ip",
                                     self.dst_ip, "--rate-mbit", str(rate), "--duration",
                                     str(seconds)])

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, signals=(signal.SIGKILL,))
        for ns in (self.src, self.xsrc, self.rtr, self.dst):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)


def measure(link: Link, method: str, cross_mbit: float, reps: int) -> list[dict]:
    runs = []
    for _ in range(reps):
        seconds = 10.5 if method == "slops" else 5.5  # covers the probe, no more
        proc = link.cross(cross_mbit, seconds) if cross_mbit else None
        try:
            result, wall = link.probe(method)
        finally:
            if proc is not None:  # the probe is done: stop the cross traffic now
                stop_process(proc, timeout=10, signals=(signal.SIGKILL,))
        runs.append({**result, "wall_s": wall})
    return runs


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, RATES)),
                        help="bottleneck rates in Mbit/s, comma-separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/bandwidth.py needs root (namespaces, tc)", file=sys.stderr)
        return 2
    reps = args.repeat or (1 if args.quick else 3)
    rows, records = [], []
    for rate in [float(r) for r in args.rates.split(",")]:
        link = Link(rate)
        try:
            for load in LOADS:
                cross = rate * load
                nominal = rate - cross
                for method in ("slops", "bulk"):
                    runs = measure(link, method, cross, reps)
                    ok = [r for r in runs if "mbit_s" in r]
                    if not ok:
                        rows.append([f"{rate:g}", f"{load:.0%}", method, "error", "", "", "",
                                     runs[0].get("error", "")])
                        continue
                    est = [r["mbit_s"] for r in ok]
                    err = [100 * (e - nominal) / nominal for e in est]
                    rows.append([f"{rate:g}", f"{load:.0%}", method, f"{nominal:g}",
                                 spread_text(est, "{:.2f}"), spread_text(err, "{:+.1f}%"),
                                 spread_text([r["duration_s"] for r in ok], "{:.1f}"),
                                 spread_text([r["probe_bytes"] / 1e6 for r in ok], "{:.2f}")])
                    records.append({"bottleneck_mbit": rate, "cross_mbit": cross,
                                    "nominal_available_mbit": nominal, "method": method,
                                    "estimates_mbit": est, "errors_pct": err,
                                    "median_error_pct": statistics.median(err),
                                    "durations_s": [r["duration_s"] for r in ok],
                                    "probe_bytes": [r["probe_bytes"] for r in ok],
                                    "failures": len(runs) - len(ok)})
        finally:
            link.close()
    print_table(f"Available bandwidth, SLoPS probe vs bulk TCP (median (min..max) of {reps})",
                ["bottleneck Mbit/s", "cross", "method", "available Mbit/s", "estimate Mbit/s",
                 "error", "time s", "MB sent"], rows)
    write_json("bandwidth", {"repetitions": reps, "results": records}, enabled=not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
