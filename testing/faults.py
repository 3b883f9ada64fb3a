"""Fault injection for tests and benchmarks: random loss (eBPF) and queueing delay (TBF).

There is no netem on these machines (docs: /work/shared/PLATFORM.md), so:

- **Loss**: ``random_loss(dev, p)`` attaches a tc ``clsact`` **egress**
  BPF program (``testing/bpf/loss.c``, compiled at test time with ``clang
  -O2 -target bpf`` into a temporary directory, never committed) that
  drops a packet when ``bpf_get_prandom_u32()`` is below ``p * 2^32``, read
  from an array map so ``LossFault.set(p)`` changes the rate without
  reattaching. Egress, because on an OVS port the userspace datapath reads
  with AF_PACKET before tc ingress sees anything. The program returns
  ``TC_ACT_STOLEN`` (freed, the send reports success) rather than
  ``TC_ACT_SHOT``: a SHOT drop is an error to the sender, and OVS's
  userspace datapath then abandons the rest of its ``sendmmsg`` batch (with
  SHOT, 20% asked gave 0.42 round-trip loss across one link instead of 0.36),
  and a host's own socket would see the error instead of a silent loss.
- **Delay**: ``queue_delay(dev, rate)`` puts a TBF with a deep buffer on
  ``dev``; background traffic above ``rate`` then queues and delays
  everything behind it.

Both are context managers that remove exactly what they added (the qdisc
they created), even when the body fails. ``ns`` runs the commands in a
network namespace (a ``testing.netns.Netns``), else in the root namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf", "loss.c")
INCLUDE = "/usr/include/x86_64-linux-gnu"
_built: dict[str, str] = {}


def _run(cmd: list[str], ns: Any = None, check: bool = True) -> str:
    full = ns.cmd(cmd) if ns is not None else cmd
    proc = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def build_loss_program() -> str:
    """Compile ``loss.c`` once per process into a temporary directory; the object's path."""
    if "loss" in _built and os.path.exists(_built["loss"]):
        return _built["loss"]
    out = os.path.join(tempfile.mkdtemp(prefix="faults-bpf-"), "loss.o")
    _run(["clang", "-O2", "-g", "-target", "bpf", f"-I{INCLUDE}", "-c", SOURCE, "-o", out])
    _built["loss"] = out
    return out


def threshold_of(p: float) -> int:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"loss probability must be within 0..1, got {p}")
    return min(2 ** 32, round(p * 2 ** 32))


class LossFault:
    """A random-loss program attached to one device's egress (see ``random_loss``)."""

    def __init__(self, dev: str, ns: Any = None) -> None:
        self.dev, self.ns = dev, ns
        self.map_id: int | None = None
        self.added_qdisc = False

    def attach(self, p: float) -> None:
        obj = build_loss_program()
        qdiscs = _run(["tc", "qdisc", "show", "dev", self.dev], self.ns)
        if "clsact" not in qdiscs:
            _run(["tc", "qdisc", "add", "dev", self.dev, "clsact"], self.ns)
            self.added_qdisc = True
        _run(["tc", "filter", "add", "dev", self.dev, "egress", "pref", "7", "bpf", "da",
              "obj", obj, "sec", "tc"], self.ns)
        shown = json.loads(_run(["tc", "-j", "filter", "show", "dev", self.dev, "egress"],
                                self.ns) or "[]")
        prog_id = next(f["options"]["prog"]["id"] for f in shown
                       if f.get("pref") == 7 and "options" in f and "prog" in f["options"])
        prog = json.loads(_run(["bpftool", "-j", "prog", "show", "id", str(prog_id)]))
        self.map_id = prog["map_ids"][0]  # maps are global: found by the program, not by name
        self.set(p)

    def set(self, p: float) -> None:
        """Change the loss probability in place."""
        value = threshold_of(p).to_bytes(8, "little")
        _run(["bpftool", "map", "update", "id", str(self.map_id), "key", "0", "0", "0", "0",
              "value", *[str(b) for b in value]])

    def detach(self) -> None:
        _run(["tc", "filter", "del", "dev", self.dev, "egress", "pref", "7"], self.ns,
             check=False)
        if self.added_qdisc:
            _run(["tc", "qdisc", "del", "dev", self.dev, "clsact"], self.ns, check=False)


@contextlib.contextmanager
def random_loss(dev: str, p: float, ns: Any = None) -> Iterator[LossFault]:
    """Drop each packet leaving ``dev`` with probability ``p``, until the block ends."""
    fault = LossFault(dev, ns)
    try:
        fault.attach(p)
        yield fault
    finally:
        fault.detach()


@contextlib.contextmanager
def queue_delay(dev: str, rate: str = "10mbit", latency: str = "400ms", burst: str = "16kb",
                ns: Any = None) -> Iterator[None]:
    """A TBF on ``dev``'s root with a deep queue (``latency``): traffic above ``rate``
    waits there, delaying every packet behind it. Replaces no existing root qdisc."""
    _run(["tc", "qdisc", "add", "dev", dev, "root", "handle", "77:", "tbf", "rate", rate,
          "burst", burst, "latency", latency], ns)
    try:
        yield
    finally:
        _run(["tc", "qdisc", "del", "dev", dev, "root", "handle", "77:"], ns, check=False)
