"""Monitor throughput and added latency, NFQUEUE and NFLOG, against the kernel path.

Run (root)::

    .venv/bin/python -m bench.monitor            # a few minutes
    .venv/bin/python -m bench.monitor --quick    # about a minute

Two namespaces joined by a veth pair: a sender and a monitored receiver that
runs the real agent (``python -m host_agent``: iptables mark rules, NFQUEUE
with fail-open or NFLOG, monitor processes). The sender is a small C program
(``bench/c/udp_flood.c``, ``sendmmsg`` batches, built with ``cc``) offering
UDP (64-byte payloads, from 16 source addresses so that ``--queue-balance``
can spread them) at increasing rates for a fixed time each, the last step
("max") as fast as it can. Fail-open means overload never drops traffic: it
shows up as packets the sketch rule matched but the monitor did not see (the
agent's ``missed``); with NFLOG nothing waits at all and what the kernel
could not deliver is the same difference (and the reader's sequence gaps).
For each rate step::

    loss = 1 - (packets the monitors saw) / (packets the sketch rule matched)

and the table gives the highest sent rate with loss 0 and with loss < 1%
for: the accept-only NFQUEUE loop in C (``bench/c/nfq_accept.c``,
libnetfilter_queue: what the kernel path allows a user-space reader), the
accept-only Python loop (``--monitor-accept-only``: the ceiling of any Python
monitor), the monitor with 1 counter (src), with 3 counters (src, src_dst,
dport), with 3 elastic counters (the same keys, each with ``memory`` 512 KB:
the in-budget structure of ``host_agent/counters/elastic.py``), 3 counters
over 2 queues / 2 processes (``--queues 2``), 3 counters fed by NFLOG
(``capture: nflog``), and 3 counters counted in the kernel (``capture:
ebpf``: tc programs, ``host_agent/capture/ebpf.py``; the monitor reads their
maps). For eBPF there is no sketch rule: the loss is measured against a
target-less iptables rule counting the same packets, and its CPU per packet
is the programs' own run time (``BPF_ENABLE_STATS``: ``run_time_ns /
run_cnt``, both directions) plus the monitor's reads. The last ("max") step
runs :data:`SENDERS` senders at once, so the sender's ceiling is as high
as this box allows; the eBPF row also gives the program's own packet count
against the senders' (``program_vs_sent``) and its packets per second per
core (``1e9 / ns per packet``).

Latency: ICMP echo RTTs (``bench/rtt_probe.py``, N echo pairs 2 ms apart
per mode and round) with no monitor, the C and Python accept-only loops, the
monitor with 3 counters on NFQUEUE, on NFLOG and on eBPF, the modes
interleaved in one run. Each echo to the monitored receiver is sent back to
back with one to the same namespace over a second veth pair that has no
rule or program, so the load's drift cancels in the per-pair difference;
"added" is the median of those differences less the no-monitor mode's. Two
clocks: ``kernel`` (the sender veth's software TX timestamp to the reply's
RX timestamp: the network path alone, the target's figure) and ``user`` (as
``ping`` sees it, with the sender's own wake-up).

The box has 2 cores shared by the sender, the kernel's packet path, the
monitor(s) and whatever else runs: the sustained rates are as noisy as the
load. The monitor's own CPU time per packet (``/proc/<pid>/stat`` over the
highest loss-free step, at least 20,000 packets) is much steadier, and its
ratio to the accept-only loop is the capacity ratio a dedicated core would give.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from bench.common import base_parser, percentile, print_table, spread_text, write_json
from bench.native import CAcceptLoop, build
from testing.procs import stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_libc = ctypes.CDLL(None, use_errno=True)
SUBNET = "10.83.0"
SOURCES = 16
PORT = 5001
C_QUEUE = 9
SENDERS = 2
EBPF_RATES = [600000, 1000000, 1500000]  # paced steps beyond the Python paths' reach

SINK = ("import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('0.0.0.0', {PORT})); time.sleep(3600)")


def sh(cmd: list[str], check: bool = True, timeout: float = 60) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True,
                          timeout=timeout).stdout


class Namespaces:
    """Sender and receiver namespaces on a veth pair; ``close`` removes them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.snd, self.rcv = f"bms{tag}", f"bmr{tag}"
        self.procs: list[subprocess.Popen] = []
        sh(["ip", "netns", "add", self.snd])
        sh(["ip", "netns", "add", self.rcv])
        a, b = f"bsa{tag}", f"bsb{tag}"
        self.snd_if, self.rcv_if = a, b
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        for ns, intf, host in ((self.snd, a, 1), (self.rcv, b, 2)):
            sh(["ip", "link", "set", intf, "netns", ns])
            sh(["ip", "-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", intf])
            sh(["ip", "-n", ns, "link", "set", intf, "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        for i in range(SOURCES):
            sh(["ip", "-n", self.snd, "addr", "add", f"{SUBNET}.{100 + i}/24", "dev", a])
        self.popen(self.rcv, [sys.executable, "-c", SINK])
        deadline = time.monotonic() + 10
        while sh(["ip", "netns", "exec", self.snd, "ping", "-c1", "-W1", f"{SUBNET}.2"],
                 check=False).find(" 0% packet loss") < 0:
            if time.monotonic() > deadline:
                raise RuntimeError("veth link did not come up")

    def popen(self, ns: str, args: list[str], **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], start_new_session=True,
                                cwd=ROOT, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        for ns in (self.snd, self.rcv):
            for pid in sh(["ip", "netns", "pids", ns], check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh(["ip", "netns", "del", ns], check=False)


def in_netns(ns: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in a thread that has entered network namespace ``ns``."""
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["e"] = exc

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(30)
    if "e" in box:
        raise box["e"]
    return box.get("v")


class Agent:
    """The real agent in the receiver namespace."""

    def __init__(self, net: Namespaces, extra: list[str]) -> None:
        self.net = net
        self.proc = net.popen(net.rcv, [sys.executable, "-m", "host_agent", "--name", "bench",
                                        "--listen", "127.0.0.1", "--port", "8000", "--insecure",
                                        "--data-ip", f"{SUBNET}.2", *extra])
        deadline = time.monotonic() + 60  # a loaded box can take this long
        while True:
            try:
                self.call("GET", "/health")
                break
            except (requests.RequestException, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("agent did not start") from None
                time.sleep(0.1)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = in_netns(self.net.rcv, lambda: requests.request(
            method, "http://127.0.0.1:8000/agent/v1" + path, json=body, timeout=10))
        r.raise_for_status()
        return r.json()

    def seen(self) -> int:
        return sum(m["packets"] or 0 for m in self.call("GET", "/health")["monitors"])

    def sketch_rule(self, sketch: int) -> int:
        out = sh(["ip", "netns", "exec", self.net.rcv, "iptables-save", "-c", "-t", "filter"])
        m = re.search(r"^\[(\d+):\d+\] .*\"endhost-measure:bench:" + str(sketch) + '"', out,
                      re.M)
        return int(m.group(1)) if m else 0

    def close(self) -> None:
        stop_process(self.proc)


class AgentTarget:
    """The agent with one UDP sketch: what a throughput step measures."""

    def __init__(self, net: Namespaces, extra: list[str], counters: list[dict],
                 capture: str) -> None:
        self.net, self.capture = net, capture
        if capture == "ebpf":  # no sketch rule: a target-less rule counts the truth
            sh(["ip", "netns", "exec", net.rcv, "iptables", "-I", "INPUT", "1", "-p", "udp",
                "--dport", str(PORT), "-m", "comment", "--comment", "bench-truth"])
        self.agent = Agent(net, extra)
        self.sketch = self.agent.call("POST", "/sketches", {
            "filter": {"proto": "udp", "dport": PORT}, "capture": capture,
            "counters": counters})["id"]
        health = self.agent.call("GET", "/health")["monitors"]
        self.pids = [m["pid"] for m in health]
        self.progs = list((health[0].get("ebpf") or {}).get("attached", {}).values())

    def seen(self) -> int:
        if self.capture == "ebpf":
            return int(self.agent.call("GET", f"/sketches/{self.sketch}/counters/1")["packets"])
        return self.agent.seen()

    def matched(self) -> int:
        if self.capture == "ebpf":
            out = sh(["ip", "netns", "exec", self.net.rcv, "iptables-save", "-c", "-t",
                      "filter"])
            m = re.search(r"^\[(\d+):\d+\] .*bench-truth", out, re.M)
            return int(m.group(1)) if m else 0
        return self.agent.sketch_rule(self.sketch)

    def kernel(self) -> tuple[float, int]:
        """The eBPF programs' run time (s) and packets (their own count), both directions."""
        return program_stats(self.progs)

    def close(self) -> None:
        self.agent.close()
        if self.capture == "ebpf":
            sh(["ip", "netns", "exec", self.net.rcv, "iptables", "-D", "INPUT", "-p", "udp",
                "--dport", str(PORT), "-m", "comment", "--comment", "bench-truth"],
               check=False)


def program_stats(prog_ids: list[int]) -> tuple[float, int]:
    """Run time (seconds) and run count of BPF programs (0 while stats are off)."""
    run_ns = runs = 0
    for prog in prog_ids:
        info = json.loads(sh(["bpftool", "-j", "prog", "show", "id", str(prog)], check=False)
                          or "{}")
        run_ns += int(info.get("run_time_ns", 0))
        runs += int(info.get("run_cnt", 0))
    return run_ns / 1e9, runs


def enable_bpf_stats() -> int | None:
    """Turn on BPF run-time statistics while the returned fd is open (BPF_ENABLE_STATS)."""
    try:
        from host_agent.capture.ebpf import libbpf

        lib = libbpf()
        fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
        return fd if fd >= 0 else None
    except Exception:  # noqa: BLE001 - the eBPF rows then report no kernel CPU
        return None


def settle(target: Any, timeout: float = 3.0) -> int:
    """Packets seen once the count stops growing (the queue has drained)."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = target.seen()
        if now == last:
            return now
        last = now
        time.sleep(0.15)
    return last


def throughput(net: Namespaces, start: Callable[[], Any], rates: list[int],
               duration: float) -> list[dict]:
    """Loss and CPU per paced rate step until the loss passes 5%, then one step as fast
    as the sender can ("max"), for one target."""
    target = start()
    flood = build("udp_flood")
    steps: list[dict] = []

    kernel = getattr(target, "kernel", None) if getattr(target, "progs", None) else None

    def step(rate: int) -> float:
        seen0, match0 = settle(target), target.matched()
        cpu0 = sum(cpu_seconds(p) for p in target.pids)
        k0 = kernel() if kernel else (0.0, 0)
        senders = [subprocess.Popen(
            ["ip", "netns", "exec", net.snd, flood, f"{SUBNET}.2", str(PORT), str(rate),
             str(duration), str(SOURCES), SUBNET], stdout=subprocess.PIPE, text=True)
            for _ in range(1 if rate else SENDERS)]
        outs = [p.communicate(timeout=duration * 4 + 30)[0].split() for p in senders]
        sent = sum(int(o[0]) for o in outs)
        elapsed = max(float(o[1]) for o in outs)
        seen = settle(target) - seen0
        matched = target.matched() - match0
        cpu = sum(cpu_seconds(p) for p in target.pids) - cpu0
        k1 = kernel() if kernel else (0.0, 0)
        cpu += k1[0] - k0[0]
        loss = 1 - seen / matched if matched else 0.0
        steps.append({"offered_pps": rate or "max", "senders": len(senders),
                      "sent_pps": round(sent / elapsed),
                      "matched": matched, "seen": seen, "loss": round(max(0.0, loss), 5),
                      "cpu_us_per_pkt": round(1e6 * cpu / seen, 3) if seen else None})
        if kernel and k1[1] > k0[1]:
            runs = k1[1] - k0[1]
            ns = 1e9 * (k1[0] - k0[0]) / runs
            steps[-1].update(program_runs=runs, program_vs_sent=round(runs / sent, 4),
                             program_ns_per_pkt=round(ns, 1),
                             program_mpps_per_core=round(1e3 / ns, 2) if ns else None)
        print(f"  {rate or 'max':>7} pps offered, {steps[-1]['sent_pps']:>7} sent: "
              f"loss {100 * steps[-1]['loss']:.2f}%, monitor CPU "
              f"{steps[-1]['cpu_us_per_pkt']} us/pkt"
              + (f"; program {steps[-1]['program_ns_per_pkt']} ns/pkt, counted "
                 f"{steps[-1]['program_vs_sent']} of sent" if "program_runs" in steps[-1]
                 else ""), flush=True)
        return loss

    try:
        for rate in rates:
            if step(rate) > 0.05:
                break
        step(0)
        return steps
    finally:
        target.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_cost(steps: list[dict]) -> float | None:
    """Monitor CPU per packet at the highest loss-free rate step (batches are largest)
    with at least 20,000 packets (10,000 when none has that many)."""
    ok = [s for s in steps if s["loss"] == 0 and s["cpu_us_per_pkt"] and s["seen"] >= 20000]
    if not ok:  # quick steps on a loaded box may all fall short of that: the largest >= 10k
        ok = sorted((s for s in steps if s["loss"] == 0 and s["cpu_us_per_pkt"]
                     and s["seen"] >= 10000), key=lambda s: s["seen"])
    return ok[-1]["cpu_us_per_pkt"] if ok else None


def best(steps: list[dict], limit: float) -> int:
    ok = [s["sent_pps"] for s in steps if s["loss"] <= limit]
    return max(ok) if ok else 0


BASE_SUBNET = "10.84.0"


def add_baseline_pair(net: Namespaces) -> None:
    """A second veth pair between the same namespaces that never gets a program or rule."""
    a, b = f"bla{net.snd[3:]}", f"blb{net.snd[3:]}"
    sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    for ns, intf, host in ((net.snd, a, 1), (net.rcv, b, 2)):
        sh(["ip", "link", "set", intf, "netns", ns])
        sh(["ip", "-n", ns, "addr", "add", f"{BASE_SUBNET}.{host}/24", "dev", intf])
        sh(["ip", "-n", ns, "link", "set", intf, "up"])
    deadline = time.monotonic() + 10
    while " 0% packet loss" not in sh(["ip", "netns", "exec", net.snd, "ping", "-c1", "-W1",
                                       f"{BASE_SUBNET}.2"], check=False):
        if time.monotonic() > deadline:
            raise RuntimeError("baseline veth did not come up")


def probe(net: Namespaces, count: int, interval: float) -> dict[str, list[list[float]]]:
    """``count`` pairs of ICMP echoes (monitored receiver, the baseline pair), alternated
    packet by packet (``bench.rtt_probe``): kernel and user RTTs in microseconds."""
    out = sh(["ip", "netns", "exec", net.snd, sys.executable, "-m", "bench.rtt_probe",
              f"{SUBNET}.2", f"{BASE_SUBNET}.2", str(count), str(interval)],
             timeout=count * (interval + 0.01) * 4 + 60)
    return json.loads(out)


def rtt_summary(pairs: list[list[float]], ref: list[list[float]]) -> dict[str, float]:
    """Median and p99 of one mode's (measured, baseline pair) RTTs; ``added``: the median
    paired difference less the no-monitor mode's (what the two veth pairs differ by alone)."""
    diff = percentile([m - b for m, b in pairs], 50)
    meas = [m for m, _ in pairs]
    return {"median_us": percentile(meas, 50), "p99_us": percentile(meas, 99),
            "pair_median_us": percentile([b for _, b in pairs], 50),
            "paired_diff_median_us": diff,
            "added_median_us": diff - percentile([m - b for m, b in ref], 50),
            "added_p99_us": percentile(meas, 99) - percentile([m for m, _ in ref], 99),
            "n": len(pairs)}


LATENCY_MODES = ("off", "C accept-only", "accept-only", "3 counters", "nflog 3 counters",
                 "ebpf 3 counters")


def _latency_target(net: Namespaces, mode: str) -> Any:
    if mode == "C accept-only":
        return CAcceptLoop(net.rcv, C_QUEUE, ["-p", "icmp"])
    agent = Agent(net, ["--monitor-accept-only"] if mode == "accept-only" else [])
    counters = [] if mode == "accept-only" else ["src", "src_dst", "dport"]
    agent.call("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "capture": mode.split()[0] if mode.startswith(("nflog",
                                                                                   "ebpf"))
                                     else "nfqueue",
                                     "counters": [{"key": k} for k in counters]})
    return agent


def latency(net: Namespaces, count: int, rounds: int) -> dict[str, Any]:
    """Echo RTTs with no monitor and each capture path, the modes interleaved, each echo
    paired with one to a program- and rule-free veth pair (``probe``). Per mode and clock
    (``kernel``: the sender veth's software TX to RX timestamps, the network path alone;
    ``user``: as ``ping`` sees it), :func:`rtt_summary`."""
    got: dict[str, dict[str, list[list[float]]]] = {
        mode: {"kernel": [], "user": []} for mode in LATENCY_MODES}
    add_baseline_pair(net)
    for _ in range(rounds):
        for mode in LATENCY_MODES:
            target = None if mode == "off" else _latency_target(net, mode)
            try:
                time.sleep(1.0)  # let a new agent finish starting (it loads the whole box)
                block = probe(net, count, 0.002)
            finally:
                if target is not None:
                    target.close()
                if mode.startswith("ebpf"):  # the agent leaves its empty clsact qdisc
                    sh(["tc", "-n", net.rcv, "qdisc", "del", "dev", net.rcv_if, "clsact"],
                       check=False)
            for clock in ("kernel", "user"):
                got[mode][clock] += block[clock]
    return {mode: {clock: rtt_summary(got[mode][clock], got["off"][clock])
                   for clock in ("kernel", "user")} for mode in LATENCY_MODES}


ELASTIC_MEMORY = 512 * 1024
THREE = [{"key": k} for k in ("src", "src_dst", "dport")]
CONFIGS: list[tuple[str, list[str], list[dict], str]] = [
    # name, agent arguments, counter bodies, capture ("c": the C loop, no agent)
    ("C accept-only", [], [], "c"),
    ("accept-only", ["--monitor-accept-only"], [], "nfqueue"),
    ("1 counter", [], [{"key": "src"}], "nfqueue"),
    ("3 counters", [], THREE, "nfqueue"),
    ("3 elastic counters", [], [{**c, "memory": ELASTIC_MEMORY} for c in THREE], "nfqueue"),
    ("3 counters, 2 queues", ["--queues", "2"], THREE, "nfqueue"),
    ("nflog 3 counters", [], THREE, "nflog"),
    ("ebpf 3 counters", [], THREE, "ebpf"),
]


def kernel_ceiling(net: Namespaces, duration: float) -> list[dict]:
    """The eBPF capture (the agent, 3 counters on UDP) under raw frames from one AF_PACKET
    sender per core (``bench/c/raw_flood.c``: qdisc bypass, no sender IP stack): frames
    addressed to the receiver (they go on to its UDP socket) and to another host (the
    receiver drops them right after tc ingress, so only the program and the sender run
    per packet). Per run: the senders' rate, the program's own count against it, and the
    program's run time per packet (``BPF_ENABLE_STATS``) as packets per second per core.
    The senders' CPU time holds the whole path (the veth runs the receiver's side in the
    sender's softirq), so ``sent_per_sender_cpu_s`` is the rate one dedicated core gives
    on this loaded box, and ``path_ns_per_pkt`` its cost per packet."""
    raw = build("raw_flood")
    mac = json.loads(sh(["ip", "-n", net.rcv, "-j", "link", "show", "dev", net.rcv_if]))[0][
        "address"]
    cpus = os.cpu_count() or 1
    rows = []
    for dst in ("receiver", "otherhost"):
        target = AgentTarget(net, [], THREE, "ebpf")
        try:
            seen0 = settle(target)
            k0 = target.kernel()
            senders = [subprocess.Popen(
                ["ip", "netns", "exec", net.snd, raw, net.snd_if,
                 mac if dst == "receiver" else "otherhost", SUBNET, f"{SUBNET}.2", str(PORT),
                 str(duration), str(SOURCES), str(cpu)], stdout=subprocess.PIPE, text=True)
                for cpu in range(cpus)]
            outs = [p.communicate(timeout=duration * 4 + 30)[0].split() for p in senders]
            k1 = target.kernel()
            seen = settle(target) - seen0
        finally:
            target.close()
        sent = sum(int(o[0]) for o in outs)
        elapsed = max(float(o[1]) for o in outs)
        sender_cpu = sum(float(o[2]) for o in outs)
        runs = k1[1] - k0[1]
        ns = 1e9 * (k1[0] - k0[0]) / runs if runs else 0.0
        rows.append({"dst": dst, "senders": cpus, "sent_pps": round(sent / elapsed),
                     "program_runs": runs, "program_vs_sent": round(runs / sent, 4) if sent
                     else 0.0, "program_pps": round(runs / elapsed),
                     "sketch_vs_sent": round(seen / sent, 4) if sent else 0.0,
                     "sender_cpu_s": round(sender_cpu, 3),
                     "sent_per_sender_cpu_s": round(sent / sender_cpu) if sender_cpu else 0,
                     "path_ns_per_pkt": round(1e9 * sender_cpu / sent, 1) if sent else 0.0,
                     "program_ns_per_pkt": round(ns, 1),
                     "program_mpps_per_core": round(1e3 / ns, 2) if ns else 0.0})
        print(f"  raw frames to {dst}: {rows[-1]}", flush=True)
    return rows


def _starter(net: Namespaces, extra: list[str], counters: list[dict],
             capture: str) -> Callable[[], Any]:
    if capture == "c":
        return lambda: CAcceptLoop(net.rcv, C_QUEUE, ["-p", "udp", "--dport", str(PORT)])
    return lambda: AgentTarget(net, extra, counters, capture)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=None,
                        help="comma-separated paced rates in packets/s (a 'max' step follows)")
    parser.add_argument("--only", default=None,
                        help="semicolon-separated config names to run (default: all)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per rate step (default 2, 1 with --quick)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.monitor needs root (namespaces, iptables, NFQUEUE)", file=sys.stderr)
        return 2
    duration = args.duration or (1.0 if args.quick else 2.0)
    rates = ([int(r) for r in args.rates.split(",")] if args.rates else
             [20000, 50000, 100000, 200000] if args.quick else
             [20000, 50000, 100000, 150000, 200000, 300000, 400000])
    reps = args.repeat or (1 if args.quick else 2)
    if any(capture == "ebpf" for *_, capture in CONFIGS):
        from host_agent.capture.ebpf import ensure_object

        ensure_object()
    stats_fd = enable_bpf_stats()
    net = Namespaces()
    runs: dict[str, list[list[dict]]] = {name: [] for name, *_ in CONFIGS}
    results: dict[str, Any] = {"duration_s": duration, "rates": rates, "repeat": reps,
                               "throughput": runs}
    try:
        for rep in range(reps):  # configs interleaved, so load drifts hit all of them
            for name, extra, counters, capture in CONFIGS:
                if args.only and name not in args.only.split(";"):
                    continue
                print(f"{name} (run {rep + 1}/{reps}):", flush=True)
                steps = rates + (EBPF_RATES if capture == "ebpf" else [])
                runs[name].append(throughput(net, _starter(net, extra, counters, capture),
                                             steps, duration))
        if not args.only or "ebpf 3 counters" in args.only.split(";"):
            print("ebpf kernel ceiling (raw AF_PACKET senders, one per core):", flush=True)
            results["kernel_ceiling"] = kernel_ceiling(net, duration)
        results["latency"] = latency(net, 100 if args.quick else 400, 1 if args.quick else 2)
    finally:
        net.close()
        if stats_fd is not None:
            os.close(stats_fd)

    def med(name: str, limit: float) -> float:
        if not runs[name]:  # not run (--only)
            return 1
        return statistics.median(best(steps, limit) for steps in runs[name]) or 1

    def spread(name: str, limit: float) -> str:
        return spread_text([best(steps, limit) for steps in runs[name]])

    def cpu(name: str) -> float | None:
        costs = [c for c in (cpu_cost(steps) for steps in runs[name]) if c]
        return statistics.median(costs) if costs else None

    kernel0, kernel1 = med("C accept-only", 0.0), med("C accept-only", 0.01)
    base_cpu = cpu("accept-only")
    def cpu_ratio(name: str) -> str:
        cost = cpu(name)
        return f"{base_cpu / cost:.2f}x" if base_cpu and cost else "-"

    rows = [[name, spread(name, 0.0), spread(name, 0.01), f"{med(name, 0.0) / kernel0:.2f}x",
             f"{med(name, 0.01) / kernel1:.2f}x", cpu(name) or "-", cpu_ratio(name)]
            for name, *_ in CONFIGS if runs[name]]
    print_table(f"Monitor throughput (UDP 64 B from a sendmmsg sender; highest sent rate "
                f"sustained, pkt/s; median (min..max) of {reps}); CPU per packet (us, all "
                "monitor processes; the C loop's own process for it)",
                ["config", "no loss", "< 1% loss", "vs C loop (0%)", "vs C loop (<1%)",
                 "CPU us/pkt", "capacity vs Python accept-only"], rows)
    results["cpu_us_per_pkt"] = {name: cpu(name) for name, *_ in CONFIGS}
    results["max_step"] = {name: [steps[-1] for steps in runs[name]] for name, *_ in CONFIGS}
    lat = results["latency"]
    for clock in ("kernel", "user"):
        print_table(f"Echo RTT (us, {clock} clock): no monitor, then each capture path on "
                    "ICMP; 'added': median of (echo - echo to a monitor-free veth sent back "
                    "to back), less the same with no monitor",
                    ["", "median", "p99", "n", "median added", "p99 added"],
                    [[mode, round(v[clock]["median_us"], 1), round(v[clock]["p99_us"], 1),
                      v[clock]["n"], round(v[clock]["added_median_us"], 2),
                      round(v[clock]["added_p99_us"], 1)] for mode, v in lat.items()])
    added = lat["3 counters"]["kernel"]["added_median_us"]
    added_nflog = lat["nflog 3 counters"]["kernel"]["added_median_us"]
    one_q, two_q = med("3 counters", 0.01), med("3 counters, 2 queues", 0.01)
    nfq0, nflog0 = med("3 counters", 0.0), med("nflog 3 counters", 0.0)
    base1 = med("accept-only", 0.01)
    elastic_cpu = cpu("3 elastic counters")
    elastic_capacity = base_cpu / elastic_cpu if base_cpu and elastic_cpu else 0.0
    ebpf0 = med("ebpf 3 counters", 0.0)
    added_ebpf = lat["ebpf 3 counters"]["kernel"]["added_median_us"]
    ceiling = max((s["sent_pps"] for steps in runs["ebpf 3 counters"] for s in steps),
                  default=0)
    kernel_steps = [s for steps in runs["ebpf 3 counters"] for s in steps
                    if s.get("program_mpps_per_core")]
    per_core = statistics.median(s["program_mpps_per_core"] for s in kernel_steps) \
        if kernel_steps else 0.0
    raw = {r["dst"]: r for r in results.get("kernel_ceiling", [])}
    if "otherhost" in raw:  # the highest rate this box reaches: the program's figure
        per_core = raw["otherhost"]["program_mpps_per_core"]
    print(f"ebpf: no-loss {ebpf0:.0f} pkt/s = {ebpf0 / nflog0:.1f}x NFLOG; sender ceiling "
          f"{ceiling} pkt/s ({SENDERS} UDP senders)"
          + "".join(f"; raw frames to {d}: {r['sent_pps']} pkt/s sent, program counted "
                    f"{r['program_vs_sent']} of them" for d, r in raw.items())
          + f"; program {per_core} M pkt/s per core; added median RTT {added_ebpf:.1f} us "
          f"(kernel clock; user clock "
          f"{lat['ebpf 3 counters']['user']['added_median_us']:.1f} us)")
    targets = {
        "ebpf: no-loss rate >= 10x NFLOG, or the sender's ceiling":
            ebpf0 >= 10 * nflog0 or ebpf0 >= 0.95 * ceiling,
        "ebpf: added median latency <= 5 us": added_ebpf <= 5,
        "goal: ebpf program >= 2 M pkt/s per core": per_core >= 2,
        "3 counters >= 80% of accept-only (<1% loss)": one_q / base1 >= 0.8,
        "3 elastic counters >= 0.85x accept-only capacity (CPU per packet)":
            elastic_capacity >= 0.85,
        "goal: 3 elastic counters >= 0.95x accept-only capacity": elastic_capacity >= 0.95,
        "2 queues >= 1.6x one queue (<1% loss)": two_q / one_q >= 1.6,
        "median added latency <= 100 us": added <= 100,
        "nflog: median added latency <= 20 us": added_nflog <= 20,
        "nflog: throughput without loss >= NFQUEUE 3 counters": nflog0 >= nfq0,
    }
    for text, ok in targets.items():
        print(f"target {'MET' if ok else 'NOT MET'}: {text}")
    results["targets"] = targets
    results["ratios"] = {"three_vs_accept": one_q / base1, "two_queues_vs_one": two_q / one_q,
                         "elastic_capacity_vs_accept": elastic_capacity,
                         "added_median_us": added, "nflog_added_median_us": added_nflog,
                         "nflog_vs_nfqueue_no_loss": nflog0 / nfq0,
                         "ebpf_vs_nflog_no_loss": ebpf0 / nflog0,
                         "ebpf_no_loss_pps": ebpf0, "sender_ceiling_pps": ceiling,
                         "ebpf_added_median_us": added_ebpf,
                         "ebpf_program_mpps_per_core": per_core,
                         "python_accept_vs_c_no_loss": med("accept-only", 0.0) / kernel0,
                         "monitor_3_vs_c_no_loss": nfq0 / kernel0}
    write_json("monitor", results, enabled=not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
