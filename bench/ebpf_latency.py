"""Where the eBPF capture's added ping RTT comes from: each layer alone, interleaved.

Run (root)::

    .venv/bin/python -m bench.ebpf_latency            # about 2 minutes
    .venv/bin/python -m bench.ebpf_latency --quick    # about 40 s

Two namespaces on one veth pair (``bench.monitor.Namespaces``). The receiver's
interface gets, one layer at a time: nothing; a ``clsact`` qdisc with no
filter; the tc programs (``host_agent/capture/ebpf.py``) with no sketch slot;
ingress only, and both directions, with 1 and with 3 ICMP slots (keys src,
src_dst, dport); 3 slots while a reader thread drains the maps every 5 ms
(the monitor's fastest read period); and the whole agent with 3 counters on
NFLOG, on eBPF, and with no sketch at all (what the agent process alone
costs). Each block sends ``--pings`` pings (``ping -i 0.002``) from the
sender; the modes run in a different order every round (rounds ``--rounds``),
so the load's drift hits all of them alike. Medians and p99 over all rounds,
each against the no-program blocks of the same run.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import base_parser, machine_info, print_table, write_json
from bench.monitor import (
    SUBNET,
    Agent,
    Namespaces,
    add_baseline_pair,
    enable_bpf_stats,
    in_netns,
    probe,
    program_stats,
    rtt_summary,
    sh,
)

Mode = Callable[[Namespaces], contextlib.AbstractContextManager[Any]]
KEYS = ("src", "src_dst", "dport")


def attached_programs(net: Namespaces) -> list[int]:
    """Ids of the BPF programs on the receiver's interface, both directions."""
    dev = _intf(net)
    out = "".join(sh(["tc", "-n", net.rcv, "-j", "filter", "show", "dev", dev, hook],
                     check=False) for hook in ("ingress", "egress"))
    return [int(x) for x in re.findall(r'"id":\s*(\d+)', out)]


def _intf(net: Namespaces) -> str:
    from host_agent.capture.ebpf import data_interface

    dev = in_netns(net.rcv, lambda: data_interface(f"{SUBNET}.2"))
    if dev is None:
        raise RuntimeError("no receiver interface")
    return str(dev)


@contextlib.contextmanager
def nothing(net: Namespaces) -> Iterator[None]:
    yield


@contextlib.contextmanager
def clsact(net: Namespaces) -> Iterator[None]:
    dev = _intf(net)
    sh(["tc", "-n", net.rcv, "qdisc", "add", "dev", dev, "clsact"])
    try:
        yield
    finally:
        sh(["tc", "-n", net.rcv, "qdisc", "del", "dev", dev, "clsact"], check=False)


TRIVIAL = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int ok(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def trivial(both: bool) -> Mode:
    """A tc program that only returns TC_ACT_OK: what running any BPF program costs."""

    @contextlib.contextmanager
    def mode(net: Namespaces) -> Iterator[None]:
        obj = Path(tempfile.gettempdir()) / "ehm_trivial_tc.o"
        if not obj.exists():
            src = obj.with_suffix(".c")
            src.write_text(TRIVIAL)
            sh(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                str(src), "-o", str(obj)])
        dev = _intf(net)
        sh(["tc", "-n", net.rcv, "qdisc", "add", "dev", dev, "clsact"])
        try:
            for hook in ("ingress", "egress")[:2 if both else 1]:
                sh(["tc", "-n", net.rcv, "filter", "add", "dev", dev, hook, "bpf", "da",
                    "obj", str(obj), "sec", "tc"])
            yield
        finally:
            sh(["tc", "-n", net.rcv, "qdisc", "del", "dev", dev, "clsact"], check=False)

    return mode


def programs(slots: int, ingress_only: bool = False, reader: bool = False) -> Mode:
    """The tc programs with ``slots`` ICMP sketch slots (in this process)."""

    @contextlib.contextmanager
    def mode(net: Namespaces) -> Iterator[None]:
        from host_agent.capture import ebpf

        dev = _intf(net)
        cap = in_netns(net.rcv, lambda: ebpf.EbpfCapture(dev))
        if ingress_only:
            del cap.progs[ebpf.BPF_TC_EGRESS]
        stop = threading.Event()
        thread = None
        try:
            in_netns(net.rcv, cap.attach)
            for slot in range(slots):
                cap.configure(slot, ebpf.slot_config(
                    {"proto": "icmp"}, ebpf.key_fields("counter", KEYS[slot % 3])), 512 * 1024)
            if reader:
                def read() -> None:
                    while not stop.wait(0.005):
                        for slot in range(slots):
                            cap.drain(slot)
                thread = threading.Thread(target=read, daemon=True)
                thread.start()
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(5)
            in_netns(net.rcv, cap.close)
            sh(["tc", "-n", net.rcv, "qdisc", "del", "dev", dev, "clsact"], check=False)

    return mode


def agent(capture: str | None) -> Mode:
    """The whole agent, with 3 ICMP counters on ``capture`` (None: no sketch)."""

    @contextlib.contextmanager
    def mode(net: Namespaces) -> Iterator[None]:
        a = Agent(net, [])
        try:
            if capture:
                a.call("POST", "/sketches", {"filter": {"proto": "icmp"}, "capture": capture,
                                             "counters": [{"key": k} for k in KEYS]})
            yield
        finally:
            a.close()
            # the agent detaches its programs but leaves the (empty) clsact qdisc
            sh(["tc", "-n", net.rcv, "qdisc", "del", "dev", _intf(net), "clsact"], check=False)

    return mode


MODES: dict[str, Mode] = {
    "no program": nothing,
    "clsact, no filter": clsact,
    "trivial program, ingress": trivial(False),
    "trivial program, both": trivial(True),
    "programs, no slot": programs(0),
    "ingress only, 1 slot": programs(1, ingress_only=True),
    "both, 1 slot": programs(1),
    "both, 3 slots": programs(3),
    "both, 3 slots, reader 5 ms": programs(3, reader=True),
    "agent, no sketch": agent(None),
    "agent, nflog 3 counters": agent("nflog"),
    "agent, ebpf 3 counters": agent("ebpf"),
}


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=None, help="echo pairs per block (500)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all modes (6)")
    parser.add_argument("--interval", type=float, default=0.002, help="gap between pairs (s)")
    parser.add_argument("--only", default=None, help="semicolon-separated mode names")
    args = parser.parse_args(argv)
    pings = args.pings or (200 if args.quick else 500)
    rounds = args.rounds or (3 if args.quick else 6)
    modes = {k: v for k, v in MODES.items()
             if not args.only or k in args.only.split(";") or k == "no program"}
    from host_agent.capture.ebpf import ensure_object

    ensure_object()
    rng = random.Random(29)
    net = Namespaces()
    got: dict[str, dict[str, list[list[float]]]] = {
        m: {"kernel": [], "user": []} for m in modes}
    run_ns = {m: 0.0 for m in modes}
    runs = {m: 0 for m in modes}
    stats_fd = enable_bpf_stats()
    try:
        add_baseline_pair(net)
        for rnd in range(rounds):
            order = list(modes)
            rng.shuffle(order)
            for name in order:
                with modes[name](net):
                    time.sleep(0.2)
                    ids = attached_programs(net)
                    run0 = program_stats(ids)
                    block = probe(net, pings, args.interval)
                    run1 = program_stats(ids)
                    run_ns[name] += run1[0] - run0[0]
                    runs[name] += run1[1] - run0[1]
                    for clock in ("kernel", "user"):
                        got[name][clock] += block[clock]
            print(f"round {rnd + 1}/{rounds} done", flush=True)
    finally:
        net.close()
        if stats_fd is not None:
            os.close(stats_fd)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for clock in ("kernel", "user"):
        rows = []
        for name in modes:
            r = rtt_summary(got[name][clock], got["no program"][clock])
            results.setdefault(name, {})[clock] = r
            r["program_ns_per_run"] = 1e9 * run_ns[name] / runs[name] if runs[name] else 0.0
            rows.append([name, round(r["median_us"], 1), round(r["p99_us"], 1), r["n"],
                         round(r["pair_median_us"], 1), round(r["paired_diff_median_us"], 2),
                         round(r["added_median_us"], 2), round(r["added_p99_us"], 1),
                         round(r["program_ns_per_run"])])
        print_table(f"{clock} RTT (us): {pings} echo pairs x {rounds} rounds per mode, "
                    f"{args.interval * 1000:g} ms apart, modes shuffled per round; each echo "
                    "paired with one to the program-free veth pair sent back to back",
                    ["mode", "median", "p99", "n", "pair median", "paired diff median",
                     "added median", "added p99", "program ns/run"], rows)
    write_json("ebpf_latency", {"pings": pings, "rounds": rounds, "interval_s": args.interval,
                                "machine": machine_info(), "modes": results},
               enabled=not args.no_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
