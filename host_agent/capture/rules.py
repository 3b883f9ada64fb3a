"""iptables/ip6tables capture rules: which packets reach the monitor, how many bypassed it.

Design
------
Several sketches may select the same packet (a global task and a legacy
sketch on the same ICMP traffic, say). ``NFQUEUE`` is a terminal target, so
one rule per sketch jumping to the queue would give each packet to the first
matching sketch only. Instead every agent owns two chains,
``ehm-<agent>-in`` and ``ehm-<agent>-out``, hooked from ``INPUT`` and
``OUTPUT`` (skipping the management interface)::

    -A ehm-h2-in -p udp -m multiport --ports 8001 -j RETURN  (path probes)
    -A ehm-h2-in -j MARK --set-xmark 0x0/0xffff0000           (clear our bits)
    -A ehm-h2-in -p icmp ... --comment endhost-measure:h2:1 -j MARK --or-mark 0x80010000
    -A ehm-h2-in -s 10.0.0.0/8 --comment endhost-measure:h2:2 -j MARK --or-mark 0x40020000
    -A ehm-h2-in -m mark --mark 0x80000000/0x80000000 -j NFQUEUE --queue-num 0 --queue-bypass
    -A ehm-h2-in -m mark --mark 0x40000000/0x40000000 -j NFLOG --nflog-group 0
                 --nflog-size 128 --nflog-threshold 64

Each sketch owns one bit of the packet mark; the monitor reads the mark of
every packet it gets and feeds the packet to every sketch whose bit is set.
One queue (or one ``--queue-balance`` range) then carries all sketches, and
overlapping filters are counted by each sketch.

The project owns bits 16..31 of the mark only (``OWNED_MASK``): the clear rule
is ``--set-xmark 0x0/0xffff0000`` and every match is masked, so a mark another
program set in the low 16 bits (policy routing, kube-proxy) goes through.

Two capture modes share the scheme and the sketch bits 16..29 (14 sketches in
all). A sketch's rule also sets its mode's flag: bit 31 (``QUEUE_FLAG``) for an
NFQUEUE sketch (the default), whose packets wait in the kernel for the
monitor's verdict (fail-open); bit 30 (``LOG_FLAG``) for an NFLOG sketch,
whose packets get a copy of the first
``HEADER_COPY_BYTES`` bytes sent to the netlink group of the same number, in
batches of up to ``threshold`` packets, and go on at once (the kernel never
waits; what it could not deliver is counted by the reader, ``nflog.py``). The
NFQUEUE rule comes first and is terminal, so a packet selected by both kinds
is queued once and the monitor counts it for every sketch of its mark; the
NFLOG rule only sees packets of NFLOG sketches alone.

Both address families get the same chains, rules and clean-up, in iptables
and ip6tables: a filter with IPv4 addresses (or ``proto: icmp``) goes to
iptables only, one with IPv6 addresses (or ``proto: icmpv6``) to ip6tables
only, any other filter to both.
The per-sketch ``MARK`` rule counters say how many packets each sketch
*should* have seen: the agent subtracts what the monitor counted to report
packets that bypassed measurement (queue full with fail-open, monitor dead
with ``--queue-bypass``).

A sampled task (``sample`` p < 1) adds ``-m statistic --mode random
--probability p`` (or ``--mode nth --every 1/p --packet 0``) to its mark
rule, so unsampled packets never reach the queue and cost the monitor
nothing; the rule counters then count the sampled packets.

A port_scan task's sketch selects connection attempts only
(``CaptureFilter.probes``, the rule of ``measure_model.packet.keys.probe_rows``)
in up to three disjoint mark rules per family, each cut to the filter::

    -A ehm-h2-in -p tcp --tcp-flags SYN,ACK,RST SYN ... --comment endhost-measure:h2:3 ...
    -A ehm-h2-in -p udp --sport 1024:65535 ...        --comment endhost-measure:h2:3 ...
    -A ehm-h2-in -p udp --sport 0:1023 --dport 0:1023 --comment endhost-measure:h2:3 ...

so a ping flood, bulk data, a target's RSTs and SYN-ACKs and services' UDP
replies never reach the monitor (nor wait in its queue), and the task's
``packets`` and ``missed`` count connection attempts. A packet matches one of
the rules at most, so the per-sketch sum of their counters (``counters``)
minus what the monitor counted is still what bypassed it.

Path health probes and their echoes (UDP port 8001 at both ends, see
``host_agent.probes``) leave the chain before anything else: they are never
marked, queued or logged, so an RTT never includes the monitor's NFQUEUE
delay and no task ever counts a probe.

Every rule carries the comment ``endhost-measure:<agent>:<what>``. Rules are
built as argument lists from validated values only; nothing from a request
reaches a shell. ``Capture.remove_stale()`` deletes leftovers of a crashed
agent with the same name before anything is installed.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from measure_model.sketch.sampling import nth_every
from measure_model.task import PROBE_PORT, PROTO_FAMILY, SERVICE_PORTS, Filter

COMMENT_PREFIX = "endhost-measure"
MAX_SLOTS = 32
AGENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,19}$")
INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
FILTER_FIELDS = ("interface", "proto", "src", "dst", "sport", "dport")
# A slot is a packet-mark bit. The project owns bits 16..31 only (OWNED_MASK): sketches
# of either mode take bits 16..29, bit 31 says "queue" and bit 30 "log". The low 16 bits
# are other programs' (policy routing, kube-proxy's 0x4000/0x8000, Cilium's 0xf00):
# the capture never reads or changes them. ebpf sketches have no iptables rule: their
# slots (32..47, bits no mark has) index the eBPF program's configuration rows
# (capture/ebpf.py)
SLOTS = {"nfqueue": range(16, 30), "nflog": range(16, 30), "ebpf": range(32, 48)}
QUEUE_FLAG, LOG_FLAG = 1 << 31, 1 << 30
MODE_FLAGS = {"nfqueue": QUEUE_FLAG, "nflog": LOG_FLAG}
OWNED_MASK = hex(0xFFFF0000)
NFLOG_THRESHOLD = 64

Runner = Callable[[list[str]], str]


def _run(cmd: list[str]) -> str:
    """Run one iptables command (an argument list) and return its stdout."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed: {res.stderr.strip()}")
    return res.stdout


@dataclass(frozen=True)
class CaptureFilter:
    """The capture rule of a task-model ``filter`` (ports in iptables' spelling).

    Built from a ``measure_model.task.Filter`` that the task table already
    checked (``from_filter``); nothing here validates it again.
    """

    interface: str = "INPUT"
    proto: str | None = None
    src: str | None = None
    dst: str | None = None
    sport: str | None = None
    dport: str | None = None
    probes: bool = False  # connection attempts only (a port_scan task's sketch)

    @classmethod
    def from_filter(cls, flt: Filter, probes: bool = False) -> CaptureFilter:
        """The capture rule of a task-model filter (validated by measure_model.task);
        ``probes``: select only its connection attempts (``rule_args``)."""
        return cls(flt.interface, flt.proto, flt.src, flt.dst,
                   None if flt.sport is None else str(flt.sport),
                   None if flt.dport is None else str(flt.dport), probes)

    def to_dict(self) -> dict:
        """The task-model form again: one port is a number, a range ``"low:high"``."""
        out: dict[str, str | int] = {}
        for k in FILTER_FIELDS:
            value = getattr(self, k)
            if value is not None:
                out[k] = int(value) if k in ("sport", "dport") and value.isdigit() else value
        return out

    @property
    def families(self) -> tuple[int, ...]:
        """The address families (4, 6) whose packets this filter can match."""
        for addr in (self.src, self.dst):
            if addr is not None:
                return (6 if ":" in addr else 4,)
        family = PROTO_FAMILY.get(self.proto or "")
        return (family,) if family else (4, 6)

    def match_args(self, family: int = 4) -> list[str]:
        """The iptables (``family`` 4) or ip6tables (6) match arguments of this filter."""
        args: list[str] = []
        if self.proto:
            args += ["-p", "ipv6-icmp" if self.proto == "icmpv6" else self.proto]
        if self.src:
            args += ["-s", self.src]
        if self.dst:
            args += ["-d", self.dst]
        if self.sport:
            args += ["--sport", self.sport]
        if self.dport:
            args += ["--dport", self.dport]
        return args

    def rule_args(self, family: int = 4) -> list[list[str]]:
        """The match arguments of each of this filter's mark rules in ``family``.

        One rule (``match_args``) unless ``probes``. Then only connection attempts
        (``measure_model.packet.keys.probe_rows``) are selected, in up to three
        disjoint rules, so a packet matches one at most and the rules' counters
        add up to the sketch's packets: TCP with SYN set and neither ACK nor RST
        (``--tcp-flags SYN,ACK,RST SYN``); UDP from a port of 1024 and up; UDP from
        a port below 1024 to a port below 1024. Each is cut to the filter's
        protocol and port ranges (none left: no rule), so an ICMP filter has no
        rule and a flood of replies, pings or bulk data never reaches the monitor.
        """
        if not self.probes:
            return [self.match_args(family)]
        out = []
        for proto, sport, dport, extra in (
                ("tcp", (0, 65535), (0, 65535), ["--tcp-flags", "SYN,ACK,RST", "SYN"]),
                ("udp", (SERVICE_PORTS, 65535), (0, 65535), []),
                ("udp", (0, SERVICE_PORTS - 1), (0, SERVICE_PORTS - 1), [])):
            if self.proto not in (None, proto):
                continue
            s, d = _cut(self.sport, sport), _cut(self.dport, dport)
            if s is None or d is None:
                continue
            rule = replace(self, proto=proto, sport=s, dport=d, probes=False)
            out.append([*rule.match_args(family), *extra])
        return out


def _cut(ports: str | None, bounds: tuple[int, int]) -> str | None:
    """A port or ``low:high`` range (iptables' spelling, or None: any) cut to ``bounds``:
    the range in that spelling, ``""`` for any port, None when nothing is left."""
    low, high = bounds
    if ports is not None:
        first, _, last = ports.partition(":")
        a, b = int(first), int(last or first)
        low, high = max(low, min(a, b)), min(high, max(a, b))
    if low > high:
        return None
    if (low, high) == (0, 65535):
        return ""
    return str(low) if low == high else f"{low}:{high}"


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


class Capture:
    """The rules of one agent in iptables and ip6tables: hooks, mark rules, queue/log rules."""

    def __init__(self, agent: str, queue: int = 0, queues: int = 1,
                 exclude_interface: str | None = None, runner: Runner = _run,
                 iptables: str = "iptables", ip6tables: str | None = "ip6tables",
                 nflog_threshold: int = NFLOG_THRESHOLD,
                 probe_port: int | None = PROBE_PORT, own_ip: str | None = None) -> None:
        if not AGENT_NAME_RE.match(agent):
            raise ValueError(f"agent name must match {AGENT_NAME_RE.pattern}, got {agent!r}")
        if exclude_interface is not None and not INTERFACE_RE.match(exclude_interface):
            raise ValueError(f"bad exclude interface {exclude_interface!r}")
        if not (0 <= queue and queue + queues - 1 <= 65535 and 1 <= queues <= 64):
            raise ValueError("queue numbers must be within 0..65535")
        if not 1 <= nflog_threshold <= 1024:
            raise ValueError(f"nflog threshold must be within 1..1024, got {nflog_threshold}")
        self.agent, self.queue, self.queues = agent, queue, queues
        self.exclude = exclude_interface
        self.run = runner
        self.tables = {4: iptables} if ip6tables is None else {4: iptables, 6: ip6tables}
        self.nflog_threshold = nflog_threshold
        self.probe_port = probe_port
        # this host's IPv4 data address (an IPv6 one or none: no foreign-source rule)
        self.own_ip = own_ip if own_ip and _is_ipv4(own_ip) else None
        self.chains = {"INPUT": f"ehm-{agent}-in", "OUTPUT": f"ehm-{agent}-out"}
        # sketch -> filter, slot, sampling arguments, mark (its bit and its mode's flag)
        self.rules: dict[int, tuple[CaptureFilter, int, list[str], int]] = {}
        # counters(): the last reading (monotonic time, rule generation, counts); every
        # iptables change bumps the generation, so a reading from before it is not reused
        self._generation = 0
        self._counted: tuple[float, int, dict[int, tuple[int, int]]] | None = None
        self._count_lock = threading.Lock()

    def comment(self, what: object) -> str:
        return f"{COMMENT_PREFIX}:{self.agent}:{what}"

    def _ipt(self, family: int, *args: str) -> str:
        self._generation += 1  # the rules change: the next counters() reads them again
        return self.run([self.tables[family], "-w", "5", *args])

    def queue_target(self) -> list[str]:
        if self.queues == 1:
            return ["-j", "NFQUEUE", "--queue-num", str(self.queue), "--queue-bypass"]
        last = self.queue + self.queues - 1
        return ["-j", "NFQUEUE", "--queue-balance", f"{self.queue}:{last}", "--queue-bypass"]

    def log_target(self) -> list[str]:
        """NFLOG to the group numbered like the first queue (read by that monitor)."""
        from measure_model.packet.keys import HEADER_COPY_BYTES

        return ["-j", "NFLOG", "--nflog-group", str(self.queue), "--nflog-size",
                str(HEADER_COPY_BYTES), "--nflog-threshold", str(self.nflog_threshold)]

    # ------------------------------------------------------------ lifecycle
    def setup(self) -> None:
        """Remove stale rules, then create the chains and hook them (both families)."""
        self.remove_stale()
        for family in self.tables:
            for hook, chain in self.chains.items():
                self._ipt(family, "-N", chain)
                if self.probe_port:
                    self._ipt(family, "-A", chain, "-p", "udp", "-m", "multiport", "--ports",
                              str(self.probe_port), "-m", "comment", "--comment",
                              self.comment("probes"), "-j", "RETURN")
                # clear the project's bits only: another program's mark goes through
                self._ipt(family, "-A", chain, "-m", "comment", "--comment",
                          self.comment("clear"), "-j", "MARK", "--set-xmark",
                          f"0x0/{OWNED_MASK}")
                if family == 4 and hook == "OUTPUT" and self.own_ip:
                    # a packet this host sends with another host's source address is
                    # spoofed (the controller's source guard drops it): never counted
                    self._ipt(family, "-A", chain, "!", "-o", "lo", "!", "-s", self.own_ip,
                              "-m", "comment", "--comment", self.comment("foreign-src"),
                              "-j", "RETURN")
                self._ipt(family, "-A", chain, "-m", "mark", "--mark",
                          f"{hex(QUEUE_FLAG)}/{hex(QUEUE_FLAG)}", "-m", "comment",
                          "--comment", self.comment("queue"), *self.queue_target())
                self._ipt(family, "-A", chain, "-m", "mark", "--mark",
                          f"{hex(LOG_FLAG)}/{hex(LOG_FLAG)}", "-m", "comment",
                          "--comment", self.comment("log"), *self.log_target())
                flag = "-i" if hook == "INPUT" else "-o"
                skip = ["!", flag, self.exclude] if self.exclude else []
                self._ipt(family, "-I", hook, "1", *skip, "-m", "comment", "--comment",
                          self.comment("hook"), "-j", chain)

    def remove_stale(self) -> int:
        """Delete every rule and chain of this agent name in both tables; return how many."""
        removed = 0
        prefix = self.comment("")
        for family in self.tables:
            for line in self._save(family).splitlines():
                if not line.startswith("[") or prefix not in line:
                    continue
                args = shlex.split(line.split("]", 1)[1])
                if len(args) > 2 and args[0] == "-A" and args[1] in ("INPUT", "OUTPUT"):
                    try:
                        self._ipt(family, "-D", *args[1:])
                        removed += 1
                    except RuntimeError:
                        pass
            existing = self._save(family)
            for chain in self.chains.values():
                if f":{chain} " in existing:
                    self._ipt(family, "-F", chain)
                    self._ipt(family, "-X", chain)
                    removed += 1
        self.rules.clear()
        return removed

    def teardown(self) -> None:
        self.remove_stale()

    # ------------------------------------------------------------ sketches
    def add(self, sketch: int, slot: int, filt: CaptureFilter, sample: float = 1.0,
            sample_mode: str = "random", mode: str = "nfqueue") -> None:
        """Mark packets matching ``filt`` (a ``sample`` of them) with the sketch's bit and
        its ``mode``'s flag, in each address family the filter covers."""
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"slot {slot} out of range")
        sampling = sample_args(sample, sample_mode)
        mark = (1 << slot) | MODE_FLAGS[mode]
        done: list[tuple[int, list[str]]] = []
        try:
            for family, rule in self._mark_rules(sketch, mark, filt, sampling):
                self._ipt(family, "-I", self.chains[filt.interface],
                          self._mark_position(family, filt.interface), *rule)
                done.append((family, rule))
        except RuntimeError:
            for family, rule in done:
                self._ipt(family, "-D", self.chains[filt.interface], *rule)
            raise
        self.rules[sketch] = (filt, slot, sampling, mark)

    def _mark_position(self, family: int, hook: str) -> str:
        """Where mark rules go: after the probe exemption, the clear rule and the
        foreign-source rule (those present)."""
        after = 1 + (1 if self.probe_port else 0) + (
            1 if family == 4 and hook == "OUTPUT" and self.own_ip else 0)
        return str(after + 1)

    def remove(self, sketch: int) -> None:
        filt, _, sampling, mark = self.rules.pop(sketch)
        for family, rule in self._mark_rules(sketch, mark, filt, sampling):
            self._ipt(family, "-D", self.chains[filt.interface], *rule)

    def _mark_rules(self, sketch: int, mark: int, filt: CaptureFilter,
                    sampling: list[str]) -> list[tuple[int, list[str]]]:
        """(family, rule arguments) of each mark rule of a sketch; all carry its comment,
        so ``counters`` sums them (they are disjoint: ``CaptureFilter.rule_args``)."""
        return [(family, [*match, *sampling, "-m", "comment", "--comment",
                          self.comment(sketch), "-j", "MARK", "--or-mark", hex(mark)])
                for family in filt.families if family in self.tables
                for match in filt.rule_args(family)]

    def _save(self, family: int) -> str:
        return self.run([f"{self.tables[family]}-save", "-c", "-t", "filter"])

    def counters(self, max_age: float = 0.0) -> dict[int, tuple[int, int]]:
        """Packets and bytes each sketch's rules matched (both families summed).

        ``max_age`` > 0: a reading at most that many seconds old is returned again
        (no ``iptables-save``), unless the rules changed since; concurrent callers
        share one reading."""
        with self._count_lock:
            cached = self._counted
            if max_age > 0 and cached is not None and cached[1] == self._generation \
                    and time.monotonic() - cached[0] <= max_age:
                return dict(cached[2])
            taken, generation = time.monotonic(), self._generation
            out = self._read_counters()
            self._counted = (taken, generation, out)
            return dict(out)

    def _read_counters(self) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for family in self.tables:
            for line in self._save(family).splitlines():
                m = re.match(r"^\[(\d+):(\d+)\] -A (\S+) .*--comment \"?"
                             + re.escape(self.comment("")) + r"(\d+)\"? ", line)
                if m and m.group(3) in self.chains.values():
                    pkts, nbytes = out.get(int(m.group(4)), (0, 0))
                    out[int(m.group(4))] = (pkts + int(m.group(1)), nbytes + int(m.group(2)))
        return out

    def listing(self) -> list[str]:
        """The rule lines of this agent, iptables first (for health and tests)."""
        prefix = self.comment("")
        return [ln for family in self.tables for ln in self._save(family).splitlines()
                if prefix in ln]


def sample_args(sample: float, mode: str) -> list[str]:
    """iptables ``statistic`` match arguments selecting a ``sample`` of the packets."""
    if not 0 < sample <= 1:
        raise ValueError(f"sample {sample} is out of range (0, 1]")
    if sample == 1:
        return []
    if mode == "nth":
        return ["-m", "statistic", "--mode", "nth", "--every", str(nth_every(sample)),
                "--packet", "0"]
    return ["-m", "statistic", "--mode", "random", "--probability", f"{sample:.10f}"]


def free_slot(used: Sequence[int], mode: str = "nfqueue") -> int | None:
    """The lowest mark bit of ``mode``'s range not in ``used``, or None when all are taken."""
    for slot in SLOTS[mode]:
        if slot not in used:
            return slot
    return None
