"""Measurement tasks: the one table of their fields, defaults and bounds.

This module is the only code that knows a task's fields. ``TASK_ROWS`` has
one :class:`~measure_model.fields.Row` per field: its name, the kinds it
applies to, its checker (type and bounds, from ``measure_model.fields``),
its default and its documentation; every limit is a named constant below.
Everything else is derived from the table:

- ``parse_task`` / ``parse_tasks`` (FAUCET style): unknown keys and fields
  of another kind are refused, each field is checked and defaulted, then
  the cross-field ``RULES`` run (``threshold`` xor ``threshold_abs``, ports
  need tcp/udp, ``src != dst``); every error is a ``PolicyError`` naming
  source, task and field; a policy is all-or-nothing;
- the wire form ``Task.to_dict()`` (every default filled in), read back
  with ``Task.from_dict()``: the two round-trip exactly. This is what goes
  to agents and across the agent/monitor process boundary;
- sub-schemas of the same rows: the counter body of the agent's
  ``/agent/v1/sketches`` API (``counter_task``: ``COUNTER_FIELDS``, a
  ``Task`` of kind heavy_hitters or port_scan) and the controller's
  ``POST bandwidth`` body (``bandwidth_request``: ``BANDWIDTH_FIELDS``);
  the agent's own probe limits check with ``field_value``;
- the JSON schemas of ``ryu_app/rest/openapi.json`` (``task_json_schema``,
  ``bandwidth_json_schema``), so the documented limits are the enforced ones
  (``tests/unit/test_openapi.py`` compares them).

Reactions (``on:``) are a list of entries with rows of their own
(``measure_model.reaction_rows``); ``ReactionsFitTheTask`` ties their
events to the task's kind and key. A policy's top-level ``protect:`` is merged into each of its
measurement tasks (``with_protect``), so it is stored with them.

YAML policies are read in ``measure_model.policy``.

Adding a field: add a ``Row`` to ``TASK_ROWS`` (with ``kinds``), a
same-named attribute (default ``None``) to :class:`Task`, and, if it is a
new nested object, its rows and dataclass like ``WINDOW_ROWS``/``Window``;
a counter setting also goes into ``COUNTER_FIELDS``. Adding a kind: add it
to ``KINDS`` (and ``MEASURE_KINDS`` if agents count it, with its
``DEFAULT_KEY``) and to the ``kinds`` of the rows that apply. Then
regenerate the schemas (``python -m ryu_app.rest.openapi_schemas``). Nothing
else validates a task.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from measure_model.fields import (
    IP_ADDRESS,
    NAME_PATTERN,
    Choice,
    ConflictError,
    Distinct,
    Exclusive,
    FieldError,
    HostOrPrefix,
    HostPort,
    Integer,
    ListOf,
    NeedsValue,
    Nested,
    Number,
    OneFamily,
    Pattern,
    PortSpec,
    PowerOfTwo,
    Prefix,
    Row,
    described,
    type_name,
)
from measure_model.reaction_rows import (
    ACTIONS,
    ADDRESS_KEYS,
    EVENT_KINDS,
    EVENTS,
    HOST,
    MAX_PROTECT,
    MAX_REACTIONS,
    NETWORK_ACTIONS,
    REACTION,
    Reaction,
)

# ---------------------------------------------------------------- names and limits

# counted by an elastic counter (host_agent/counters/elastic.py) within ``memory`` bytes
ELASTIC_KINDS = ("flow_size", "heavy_changers", "entropy", "cardinality", "superspreaders",
                 "ddos_victims")
SPREAD_KINDS = ("superspreaders", "ddos_victims")  # distinct peers per source / destination
# count-min kinds that switch to the elastic counter when the task gives ``memory``
MEMORY_OPTIONAL_KINDS = ("heavy_hitters", "counter")
MEASURE_KINDS = ("heavy_hitters", "flow_size", "port_scan", "counter", *ELASTIC_KINDS[1:],
                 "flows")
# run by every agent outside the capture path: probes between hosts, the kernel's TCP state
HEALTH_KINDS = ("path_health", "tcp_health")
KINDS = (*MEASURE_KINDS, *HEALTH_KINDS, "bandwidth")
KEYS = ("src", "dst", "src_dst", "sport", "dport", "src_dport", "dst_dport", "proto",
        "five_tuple")
INCREMENTS = ("pkt", "bytes")
DEFAULT_KEY = {"heavy_hitters": "src", "flow_size": "src_dst", "port_scan": "src_dport",
               "counter": "src", "heavy_changers": "src_dst", "entropy": "src_dst",
               "cardinality": "src_dst", "superspreaders": "src_dst", "ddos_victims": "src_dst",
               "flows": "five_tuple"}
INTERFACES = ("INPUT", "OUTPUT")
PROTOS = ("tcp", "udp", "icmp", "icmpv6")
PROTO_FAMILY = {"icmp": 4, "icmpv6": 6}   # a filter with this proto matches one family
PORT_PROTOS = ("tcp", "udp")               # protocols with ports
# below: a service's port (a UDP datagram from one to a client port is a reply, not a probe)
SERVICE_PORTS = 1024
CAPTURE_MODES = ("nfqueue", "nflog", "ebpf")
DEFAULT_CAPTURE = "nfqueue"
WINDOW_MODES = ("tumbling", "sliding")
DEFAULT_WINDOW_MODE = "tumbling"
BW_METHODS = ("slops", "bulk")

MAX_POLICY_BYTES = 256 * 1024      # one YAML policy or JSON body
MAX_POLICY_TASKS = 100             # tasks in one policy or request
MAX_TASKS = 200                    # tasks the controller holds at once
MAX_SCOPE = 1000                   # hosts listed in one scope
DEFAULT_THRESHOLD = 0.05           # measurement tasks without threshold_abs ...
NO_DEFAULT_THRESHOLD = ("flow_size", "entropy", "cardinality", "superspreaders",
                        "ddos_victims")  # ... except these kinds
MAX_THRESHOLD_ABS = 2 ** 62
DEFAULT_TOP_K, MAX_TOP_K = 10, 1000
DEFAULT_WINDOW, MIN_WINDOW, MAX_WINDOW = 1.0, 0.05, 3600.0
DEFAULT_SCAN_PORTS, MAX_SCAN_PORTS = 20, 65535
DEFAULT_REPORT_INTERVAL, MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL = 5.0, 0.5, 3600.0
DEFAULT_WIDTH, MIN_WIDTH, MAX_WIDTH = 16384, 64, 2 ** 22
DEFAULT_DEPTH, MAX_DEPTH = 4, 8
DEFAULT_SEED, MAX_SEED = 1, 2 ** 31 - 1
CELL_BYTES = 8                     # one int64 count-min cell
BW_DEFAULT_DURATION, BW_MIN_DURATION, BW_MAX_DURATION = 10.0, 1.0, 60.0
BW_DEFAULT_BYTES, BW_MIN_BYTES, BW_MAX_BYTES = 20_000_000, 100_000, 200_000_000
DEFAULT_MEMORY, MIN_MEMORY, MAX_MEMORY = 512 * 1024, 4096, 64 * 1024 * 1024
DEFAULT_MIN_DISTINCT, MAX_MIN_DISTINCT = 100, 1000  # a 256-bit bitmap reads ~1,400 peers
DEFAULT_CHANGE_THRESHOLD = 0.001   # heavy_changers: fraction of an interval's total
SAMPLE_MODES = ("random", "nth")
DEFAULT_SAMPLE_MODE = "random"
MIN_SAMPLE = 1e-6                  # sample: at least one packet in a million
EXPORT_FORMATS = ("ipfix", "netflow9")
MAX_EXPORTS = 4                    # collectors per flows task
DEFAULT_ACTIVE_TIMEOUT, DEFAULT_IDLE_TIMEOUT = 60.0, 15.0
MIN_FLOW_TIMEOUT, MAX_FLOW_TIMEOUT = 1.0, 3600.0
DEFAULT_MAX_FLOWS, MIN_MAX_FLOWS, MAX_MAX_FLOWS = 65536, 16, 1_048_576
DEFAULT_FLOW_TOP_K = 100           # largest active flows a flows task reports
PEER_WORDS = ("all", "auto")       # path_health peers: every other host, or a covering set
MAX_PEERS = 1000                   # hosts listed in one peers list
DEFAULT_PROBE_RATE, MIN_PROBE_RATE, MAX_PROBE_RATE = 10.0, 1.0, 100.0  # per pair, 1/s
DEFAULT_PROBE_PAYLOAD, MIN_PROBE_PAYLOAD, MAX_PROBE_PAYLOAD = 64, 16, 1400  # UDP bytes
MAX_DSCP = 63
MAX_PROBE_TARGETS = 20_000         # resolved (src, dst) pairs one task carries
PROBE_PORT = 8001                  # UDP, on every agent's data address
DEFAULT_TCP_TOP = 10               # tcp_health: top flows and host pairs by retransmissions


class PolicyError(ValueError):
    """A policy or task body failed validation; the message says where."""


class PolicyConflict(PolicyError):
    """Valid fields that conflict with each other or another task of the policy
    (``src`` = ``dst``, a name used twice): what no JSON schema can refuse (409)."""


# ---------------------------------------------------------------- model

@dataclass(frozen=True)
class Filter:
    """Which packets a task sees (all conditions must hold)."""

    interface: str = "INPUT"
    proto: str | None = None
    src: str | None = None
    dst: str | None = None
    sport: int | str | None = None
    dport: int | str | None = None


@dataclass(frozen=True)
class Window:
    """The real-time window: its length in seconds and how it moves."""

    length: float = DEFAULT_WINDOW
    mode: str = "tumbling"


@dataclass(frozen=True)
class SketchSpec:
    """Count-min sketch size; equal specs are required to merge reports."""

    width: int = DEFAULT_WIDTH
    depth: int = DEFAULT_DEPTH
    seed: int = DEFAULT_SEED

    @property
    def cell_bytes(self) -> int:
        """Bytes of the sketch cells (int64 each): what agents budget memory by."""
        return self.width * self.depth * CELL_BYTES


@dataclass(frozen=True)
class ExportTarget:
    """Where an agent sends a flows task's records: ``host:port`` and the format."""

    collector: str
    format: str = "ipfix"


@dataclass(frozen=True)
class ProbeTarget:
    """One probed pair of a path_health task: ``src`` probes ``dst`` at ``address``
    (``dst``'s data address), resolved by the controller from ``peers``."""

    src: str
    dst: str
    address: str


@dataclass(frozen=True)
class Task:
    """One validated measurement task (fields of other kinds are None)."""

    name: str
    kind: str
    filter: Filter | None = None
    key: str | None = None
    increment: str | None = None
    threshold: float | None = None
    threshold_abs: int | None = None
    top_k: int | None = None
    window: Window | None = None
    scan_ports: int | None = None
    report_interval: float | None = None
    sketch: SketchSpec | None = None
    scope: str | tuple[str, ...] | None = None
    memory: int | None = None
    min_distinct: int | None = None
    capture: str | None = None
    src: str | None = None
    dst: str | None = None
    method: str | None = None
    max_duration: float | None = None
    max_bytes: int | None = None
    sample: float | None = None
    sample_mode: str | None = None
    export: tuple[ExportTarget, ...] | None = None
    active_timeout: float | None = None
    idle_timeout: float | None = None
    max_flows: int | None = None
    on: tuple[Reaction, ...] | None = None
    protect: tuple[str, ...] | None = None
    peers: str | tuple[str, ...] | None = None
    probe_rate: float | None = None
    probe_payload: int | None = None
    dscp: int | None = None
    probe_targets: tuple[ProbeTarget, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: every set field, nested objects as dicts."""
        out: dict[str, Any] = {}
        for row in TASK_ROWS:
            value = getattr(self, row.name)
            if value is None:
                continue
            if isinstance(value, Filter | Window | SketchSpec):
                value = {f.name: getattr(value, f.name) for f in fields(value)
                         if getattr(value, f.name) is not None}
            elif isinstance(value, tuple):
                value = [{f.name: getattr(v, f.name) for f in fields(v)}
                         if isinstance(v, ExportTarget | ProbeTarget)
                         else v.to_dict() if isinstance(v, Reaction) else v for v in value]
            out[row.name] = value
        return out

    @classmethod
    def from_dict(cls, obj: Any, source_name: str = "task") -> Task:
        """Validate a wire-form dict back into a Task."""
        return parse_task(obj, source_name)

    @property
    def is_global(self) -> bool:
        return self.scope == "global"

    @property
    def measures(self) -> bool:
        """Run by agents and merged up the overlay (every kind but bandwidth)."""
        return self.kind in MEASURE_KINDS or self.kind in HEALTH_KINDS

    @property
    def captures(self) -> bool:
        """Counted from captured packets (a capture rule and a counter at each agent)."""
        return self.kind in MEASURE_KINDS


# ---------------------------------------------------------------- the table

def _flows_or(flows: Any, other: Any) -> Callable[[dict[str, Any]], Any]:
    """A default that differs for kind flows."""
    return lambda obj: flows if obj.get("kind") == "flows" else other


def _default_threshold(obj: dict[str, Any]) -> float | None:
    """DEFAULT_THRESHOLD unless the task gives threshold_abs or ranks every flow;
    heavy_changers: DEFAULT_CHANGE_THRESHOLD of an interval's total.

    flow_size has no fraction threshold: a flow small against the whole
    network's total is still a flow, so its result lists the largest flows.
    """
    if obj.get("threshold_abs") is not None or obj.get("kind") in NO_DEFAULT_THRESHOLD:
        return None
    if obj.get("kind") == "heavy_changers":
        return DEFAULT_CHANGE_THRESHOLD
    return DEFAULT_THRESHOLD


def _default_memory(obj: dict[str, Any]) -> int | None:
    """DEFAULT_MEMORY for the elastic kinds; none (the count-min counter) otherwise."""
    return DEFAULT_MEMORY if obj.get("kind") in ELASTIC_KINDS else None


def kind_events(kind: str) -> list[str]:
    """The events an ``on:`` entry of a task of ``kind`` may name."""
    return [e for e in EVENTS if EVENT_KINDS.get(e) in (None, kind)
            or EVENT_KINDS[e] not in KINDS]


@dataclass(frozen=True)
class ReactionsFitTheTask:
    """An ``on:`` event must come from the task's kind; a network action needs a key
    holding an address (``ADDRESS_KEYS``) unless its event names addresses itself
    (``exempt_events``). A task-level rule: its schema depends on the kind."""

    exempt_events: tuple[str, ...] = ("port_scan",)

    def check(self, name: str, obj: dict[str, Any]) -> None:
        for i, r in enumerate(obj.get("on") or ()):
            need = EVENT_KINDS.get(r.event)
            if need is not None and need in KINDS and obj["kind"] != need:
                raise FieldError(f"on[{i}].event {r.event} is raised by kind {need}, "
                                 f"not {obj['kind']}")
            if r.action in NETWORK_ACTIONS and r.event not in self.exempt_events \
                    and obj.get("key") not in ADDRESS_KEYS:
                raise FieldError(f"on[{i}].action {r.action} needs a key holding an address "
                                 f"({', '.join(ADDRESS_KEYS)}), not {obj.get('key')}")

    def apply_schema(self, kind: str, schema: dict[str, Any]) -> None:
        """The rule in a kind's task ``schema``: the events it may name, and the key rule."""
        if "on" not in schema["properties"]:
            return
        on = schema["properties"]["on"]
        entry = on["items"]
        schema["properties"]["on"] = {**on, "items": {**entry, "properties": {
            **entry["properties"], "event": {**entry["properties"]["event"],
                                             "enum": kind_events(kind)}}}}
        harmless = {"anyOf": [
            {"properties": {"action": {"enum": [a for a in ACTIONS
                                                if a not in NETWORK_ACTIONS]}}},
            {"properties": {"event": {"enum": list(self.exempt_events)}}}]}
        if "key" not in schema["properties"]:  # path_health, tcp_health: no address key
            schema["allOf"] = [{"properties": {"on": {"items": harmless}}}]
            return
        schema["allOf"] = [{"anyOf": [  # the default keys of every kind hold an address
            {"not": {"required": ["key"]}},
            {"properties": {"key": {"enum": list(ADDRESS_KEYS)}}},
            {"properties": {"on": {"items": harmless}}}]}]


@dataclass(frozen=True)
class KindRule:
    """A plain :class:`~measure_model.fields.Rule` at task level: its schema joins the
    schema of every kind that has all of its ``fields``."""

    rule: Exclusive | Distinct
    fields: tuple[str, ...]

    def check(self, name: str, obj: dict[str, Any]) -> None:
        self.rule.check(name, obj)

    def apply_schema(self, kind: str, schema: dict[str, Any]) -> None:
        part = self.rule.schema()
        if part is not None and all(f in schema["properties"] for f in self.fields):
            schema.update(part)


def with_protect(task: Task, protect: tuple[str, ...]) -> Task:
    """A policy's top-level ``protect:`` list, merged into each measurement task."""
    if not protect or task.kind not in ROWS["protect"].kinds:  # kinds that raise events
        return task
    merged = tuple(dict.fromkeys((*(task.protect or ()), *protect)))
    return Task(**{**{f.name: getattr(task, f.name) for f in fields(task)},
                   "protect": merged})



FILTER_ROWS = (
    Row("interface", Choice(INTERFACES), "INPUT", "netfilter chain: packets in or out"),
    Row("proto", Choice(PROTOS), doc="IP protocol (icmp is IPv4's, icmpv6 IPv6's)"),
    Row("src", Prefix(), doc="IPv4 or IPv6 source address or prefix (one family per filter)"),
    Row("dst", Prefix(),
        doc="IPv4 or IPv6 destination address or prefix (one family per filter)"),
    Row("sport", PortSpec(), doc="source port or 'low:high'; needs proto tcp or udp"),
    Row("dport", PortSpec(), doc="destination port or 'low:high'; needs proto tcp or udp"),
)
WINDOW_ROWS = (
    Row("length", Number(MIN_WINDOW, MAX_WINDOW), DEFAULT_WINDOW, "seconds"),
    Row("mode", Choice(WINDOW_MODES), DEFAULT_WINDOW_MODE,
        "tumbling: epoch-aligned windows; sliding: the last length seconds"),
)
SKETCH_ROWS = (
    Row("width", PowerOfTwo(MIN_WIDTH, MAX_WIDTH), DEFAULT_WIDTH, "cells per row"),
    Row("depth", Integer(1, MAX_DEPTH), DEFAULT_DEPTH, "rows"),
    Row("seed", Integer(0, MAX_SEED), DEFAULT_SEED, "hash seed"),
)
EXPORT_ROWS = (
    Row("collector", HostPort(), required=True, doc="collector address 'host:port'"),
    Row("format", Choice(EXPORT_FORMATS), "ipfix", doc="IPFIX (RFC 7011) or NetFlow v9"),
)
FILTER = Nested(FILTER_ROWS, Filter, rules=(
    NeedsValue(("sport", "dport"), "proto", PORT_PROTOS),
    OneFamily(("src", "dst"), "proto", tuple(PROTO_FAMILY.items()))))
EXPORT = Nested(EXPORT_ROWS, ExportTarget)
PROBE_TARGET_ROWS = (
    Row("src", HOST, required=True, doc="the probing host (agent name)"),
    Row("dst", HOST, required=True, doc="the probed host (agent name)"),
    Row("address", Pattern(IP_ADDRESS, "is not an IPv4 or IPv6 address"), required=True,
        doc="dst's data address"),
)
PROBE_TARGETS = ListOf(Nested(PROBE_TARGET_ROWS, ProbeTarget), MAX_PROBE_TARGETS,
                       noun="target")
PROTECT = ListOf(HostOrPrefix(HOST), MAX_PROTECT, None, "host")
REACTIONS = ListOf(REACTION, MAX_REACTIONS, None, "reaction")
WINDOW = Nested(WINDOW_ROWS, Window)
SKETCH = Nested(SKETCH_ROWS, SketchSpec)

_ALL = frozenset(KINDS)
_MEASURE = frozenset(MEASURE_KINDS)
_ELASTIC = frozenset(ELASTIC_KINDS)
_COUNTERS = _MEASURE - {"flows"}              # kinds whose settings are a counter's
_FLOWS = frozenset({"flows"})
_BW = frozenset({"bandwidth"})
_PATHS = frozenset({"path_health"})
_TCP = frozenset({"tcp_health"})
_HEALTH = _PATHS | _TCP

TASK_ROWS: tuple[Row, ...] = (
    Row("name", Pattern(NAME_PATTERN, f"does not match {NAME_PATTERN}"), required=True,
        kinds=_ALL, doc="unique among the controller's tasks and in a policy"),
    Row("kind", Choice(KINDS), required=True, kinds=_ALL, doc="what the task measures"),
    Row("filter", FILTER, lambda _: FILTER.check("filter", {}), kinds=_MEASURE,
        doc="which packets count (all conditions must hold)"),
    Row("key", Choice(KEYS), lambda obj: DEFAULT_KEY[obj["kind"]], kinds=_COUNTERS,
        doc="key type (default per kind: src, src_dst, src_dport, src)"),
    Row("increment", Choice(INCREMENTS, (("byte", "bytes"),)), _flows_or("bytes", "pkt"),
        kinds=_MEASURE, doc="count packets or IP bytes (IPv4 total length, IPv6 40 + payload; "
                            "flows: what ranks active flows, default bytes)"),
    Row("threshold", Number(0.0, 1.0, lo_open=True), _default_threshold, kinds=_COUNTERS,
        doc=f"heavy if >= this fraction of the total (default {DEFAULT_THRESHOLD}, none for "
            "flow_size or with threshold_abs); exclusive with threshold_abs"),
    Row("threshold_abs", Integer(1, MAX_THRESHOLD_ABS), kinds=_COUNTERS,
        doc="heavy if >= this absolute count (over all hosts in scope)"),
    Row("top_k", Integer(1, MAX_TOP_K), _flows_or(DEFAULT_FLOW_TOP_K, DEFAULT_TOP_K),
        kinds=_MEASURE | _TCP,
        doc=f"largest keys reported (default {DEFAULT_TOP_K}; flows: largest active flows, "
            f"default {DEFAULT_FLOW_TOP_K}; tcp_health: top flows and host pairs by "
            "retransmissions)"),
    Row("window", WINDOW, lambda _: WINDOW.check("window", {}), kinds=_COUNTERS,
        doc="the real-time window"),
    Row("scan_ports", Integer(1, MAX_SCAN_PORTS), DEFAULT_SCAN_PORTS,
        kinds=frozenset({"port_scan"}),
        doc="a source is a scanner at this many distinct dports in a window"),
    Row("report_interval", Number(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL),
        DEFAULT_REPORT_INTERVAL, kinds=_MEASURE | _HEALTH, doc="seconds between overlay reports"),
    Row("sketch", SKETCH, lambda _: SKETCH.check("sketch", {}), kinds=_COUNTERS,
        doc="count-min sketch size (equal on every host)"),
    Row("scope", ListOf(HOST, MAX_SCOPE, "global", "host"), "global", kinds=_MEASURE | _TCP,
        doc="'global' or the hosts (names or data addresses) that measure"),
    Row("memory", Integer(MIN_MEMORY, MAX_MEMORY), _default_memory,
        kinds=_ELASTIC | frozenset(MEMORY_OPTIONAL_KINDS),
        doc=f"total bytes of one counter's state, every byte counted (elastic kinds, "
            f"default {DEFAULT_MEMORY}); heavy_hitters and counter: given, the counter is "
            "elastic and holds all its state within it"),
    Row("min_distinct", Integer(2, MAX_MIN_DISTINCT), DEFAULT_MIN_DISTINCT,
        kinds=frozenset(SPREAD_KINDS),
        doc="superspreaders: sources with >= this many distinct destinations; "
            "ddos_victims: destinations with >= this many distinct sources"),
    Row("sample", Number(MIN_SAMPLE, 1.0), 1.0, kinds=_MEASURE,
        doc="capture this fraction of the packets (iptables statistic); counts are "
            "scaled by 1/sample and results state the error bound"),
    Row("sample_mode", Choice(SAMPLE_MODES), DEFAULT_SAMPLE_MODE, kinds=_MEASURE,
        doc="random: each packet with probability sample; nth: one in every "
            "round(1/sample) packets (the rate actually used is 1/that)"),
    Row("export", ListOf(EXPORT, MAX_EXPORTS, noun="target"), kinds=_FLOWS,
        doc="collectors every agent sends the flow records to"),
    Row("active_timeout", Number(MIN_FLOW_TIMEOUT, MAX_FLOW_TIMEOUT), DEFAULT_ACTIVE_TIMEOUT,
        kinds=_FLOWS, doc="seconds after which a long flow is exported (in parts)"),
    Row("idle_timeout", Number(MIN_FLOW_TIMEOUT, MAX_FLOW_TIMEOUT), DEFAULT_IDLE_TIMEOUT,
        kinds=_FLOWS, doc="seconds without packets after which a flow is exported"),
    Row("max_flows", Integer(MIN_MAX_FLOWS, MAX_MAX_FLOWS), DEFAULT_MAX_FLOWS, kinds=_FLOWS,
        doc="flows one agent's cache holds; beyond it the least recent are exported early"),
    Row("capture", Choice(CAPTURE_MODES), DEFAULT_CAPTURE, kinds=_MEASURE,
        doc="nfqueue: packets wait for the monitor (fail-open); nflog: header copies, "
            "no added latency, kernel-side losses counted; ebpf: tc programs count in "
            "the kernel at millions of packets per second, read once per interval"),
    Row("on", REACTIONS, kinds=_COUNTERS | _PATHS,
        doc="reactions: [{event, action, duration, mode, to | mbit | dscp | queue | url, "
            "above}] (see README, Reactions)"),
    Row("protect", PROTECT, kinds=_COUNTERS,
        doc="hosts, addresses or prefixes no reaction may block, limit or mark (a "
            "policy's top-level protect is merged in)"),
    Row("peers", ListOf(HOST, MAX_PEERS, PEER_WORDS, "host"), "all", kinds=_PATHS,
        doc="who probes whom: 'all' (every pair of hosts), 'auto' (a set of pairs that "
            "crosses every link at least twice, chosen by the controller from its paths) "
            "or the hosts (names) probing each other"),
    Row("probe_rate", Number(MIN_PROBE_RATE, MAX_PROBE_RATE), DEFAULT_PROBE_RATE,
        kinds=_PATHS, doc="probes per second per pair"),
    Row("probe_payload", Integer(MIN_PROBE_PAYLOAD, MAX_PROBE_PAYLOAD), DEFAULT_PROBE_PAYLOAD,
        kinds=_PATHS, doc="UDP payload bytes of each probe (and of its echo)"),
    Row("dscp", Integer(0, MAX_DSCP), kinds=_PATHS,
        doc="DSCP of the probes and their echoes (default: none, best effort)"),
    Row("probe_targets", PROBE_TARGETS, kinds=_PATHS,
        doc="the probed pairs with the probed host's data address: filled in by the "
            "controller from peers before the task goes to agents (given here, replaced)"),
    Row("src", HOST, required=True, kinds=_BW, doc="sending host"),
    Row("dst", HOST, required=True, kinds=_BW, doc="receiving host"),
    Row("method", Choice(BW_METHODS), "slops", kinds=_BW,
        doc="slops: available bandwidth (self-loading trains); bulk: TCP throughput"),
    Row("max_duration", Number(BW_MIN_DURATION, BW_MAX_DURATION), BW_DEFAULT_DURATION,
        kinds=_BW, doc="seconds the probe may take"),
    Row("max_bytes", Integer(BW_MIN_BYTES, BW_MAX_BYTES), BW_DEFAULT_BYTES, kinds=_BW,
        doc="bytes the probe may send"),
)
ROWS = {row.name: row for row in TASK_ROWS}
TASK_FIELDS = tuple(ROWS)
COUNTER_FIELDS = ("key", "increment", "threshold", "threshold_abs", "top_k", "window",
                  "scan_ports", "sketch", "memory")
BANDWIDTH_FIELDS = ("src", "dst", "method", "max_duration", "max_bytes")


# cross-field rules of a task: each checks and gives its JSON schema (where one can say it)
RULES = (KindRule(Distinct("src", "dst", "host"), ("src", "dst")),  # on the checked fields
         ReactionsFitTheTask())
RAW_RULES = (KindRule(Exclusive(("threshold", "threshold_abs")),  # on the given fields
                      ("threshold", "threshold_abs")),)


# ---------------------------------------------------------------- parsing

def _task_label(obj: Any, index: int) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) \
            and re.fullmatch(NAME_PATTERN, obj["name"]):
        return obj["name"]
    return f"#{index + 1}"


def _check_task(obj: Any) -> Task:
    """The table applied to one object; raises FieldError."""
    if not isinstance(obj, dict):
        raise FieldError(f"must be a mapping, not {type_name(obj)}")
    for key in obj:
        if key not in ROWS:
            raise FieldError(f"unknown field '{key}'")
    for name in ("name", "kind"):
        if name not in obj:
            raise FieldError(f"{name} is required")
    values = {"name": ROWS["name"].checker.check("name", obj["name"]),
              "kind": ROWS["kind"].checker.check("kind", obj["kind"])}
    kind = values["kind"]
    for key in obj:
        if kind not in ROWS[key].kinds:
            raise FieldError(f"field '{key}' does not apply to kind {kind}")
    for raw in RAW_RULES:
        raw.check("", obj)
    for row in TASK_ROWS:
        if row.name in values or kind not in row.kinds:
            continue
        if row.name in obj:
            values[row.name] = row.checker.check(row.name, obj[row.name])
        elif row.required:
            raise FieldError(f"{row.name} is required for kind {kind}")
        else:
            values[row.name] = row.default_for(obj)
    for rule in RULES:
        rule.check("", values)
    return Task(**values)


def parse_task(obj: Any, source_name: str, index: int = 0) -> Task:
    """Validate one task object; raise PolicyError naming source, task and field."""
    try:
        return _check_task(obj)
    except FieldError as exc:
        error = PolicyConflict if isinstance(exc, ConflictError) else PolicyError
        raise error(f"policy {source_name}: task {_task_label(obj, index)}: {exc}") from None


def parse_tasks(obj: Any, source_name: str) -> list[Task]:
    """Validate a policy object: ``{"tasks": [...]}`` or one task object."""
    where = f"policy {source_name}"
    if isinstance(obj, dict) and "tasks" not in obj and "kind" in obj:
        items: Any = [obj]
    elif isinstance(obj, dict):
        for key in obj:
            if key not in ("tasks", "protect"):
                raise PolicyError(f"{where}: unknown top-level field '{key}'")
        if "tasks" not in obj:
            raise PolicyError(f"{where}: 'tasks' is required")
        items = obj["tasks"]
    else:
        raise PolicyError(f"{where}: must be a mapping with 'tasks', not {type_name(obj)}")
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{where}: tasks must be a non-empty list")
    if len(items) > MAX_POLICY_TASKS:
        raise PolicyError(f"{where}: {len(items)} tasks, more than {MAX_POLICY_TASKS}")
    protect: tuple[str, ...] = ()
    if isinstance(obj, dict) and "protect" in obj:
        try:
            protect = PROTECT.check("protect", obj["protect"])  # type: ignore[assignment]
        except FieldError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    tasks: list[Task] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        task = with_protect(parse_task(item, source_name, index), protect)
        if task.name in seen:
            raise PolicyConflict(f"{where}: task {task.name}: name is used by another task "
                                 "in the policy")
        seen.add(task.name)
        tasks.append(task)
    return tasks


# ---------------------------------------------------------------- sub-schemas

def counter_task(body: Any, name: str, filter: Any = None) -> Task:
    """An agent counter body (``COUNTER_FIELDS``, ``key`` required) as a Task.

    Kind port_scan with ``scan_ports``, else heavy_hitters; the threshold is
    ``DEFAULT_THRESHOLD`` unless one is given, as for every task. ``filter`` is the
    sketch's filter in its wire form. Raises FieldError naming the field.
    """
    if not isinstance(body, dict):
        raise FieldError(f"counter must be a mapping, not {type_name(body)}")
    for key in body:
        if key not in COUNTER_FIELDS:
            raise FieldError(f"unknown field '{key}'")
    if "key" not in body:
        raise FieldError("key is required")
    kind = "port_scan" if "scan_ports" in body else "heavy_hitters"
    obj = {"name": name, "kind": kind, **body}
    if filter is not None:
        obj["filter"] = filter
    return _check_task(obj)


def flow_counter(task: Task) -> Task:
    """The counter of a flows task: its largest flows by ``increment`` (a count-min
    counter on five_tuple whose candidates are every flow, ``threshold_abs`` 1, so
    its ``top_k`` are the largest flows), so the flows travel up the overlay and
    merge like any counter's keys."""
    wire = task.to_dict()
    obj = {name: wire[name] for name in ("filter", "increment", "top_k", "report_interval",
                                         "scope", "sample", "sample_mode") if name in wire}
    return _check_task({"name": task.name, "kind": "counter", "key": DEFAULT_KEY["flows"],
                        "threshold_abs": 1, **obj})


def counter_view(task: Task) -> dict[str, Any]:
    """The counter settings of a task's wire form (what the agent API shows)."""
    wire = task.to_dict()
    return {k: wire[k] for k in COUNTER_FIELDS if k in wire}


def bandwidth_request(body: Any) -> dict[str, Any]:
    """A ``POST bandwidth`` body (``BANDWIDTH_FIELDS``) checked and defaulted."""
    if not isinstance(body, dict):
        raise FieldError(f"body must be a mapping, not {type_name(body)}")
    for key in body:
        if key not in BANDWIDTH_FIELDS:
            raise FieldError(f"unknown field '{key}'")
    for key in ("src", "dst"):
        if key not in body:
            raise FieldError(f"{key} is required")
    task = _check_task({"name": "bandwidth", "kind": "bandwidth", **body})
    return {k: getattr(task, k) for k in BANDWIDTH_FIELDS}


def field_value(name: str, body: dict[str, Any]) -> Any:
    """``body[name]`` checked by the table's row (its default when absent)."""
    row = ROWS[name]
    return row.checker.check(name, body[name]) if name in body else row.default_for(body)


# ---------------------------------------------------------------- JSON schemas

def kind_json_schema(kind: str) -> dict[str, Any]:
    """The OpenAPI schema of one task kind: exactly its rows, required ones listed."""
    rows = [row for row in TASK_ROWS if kind in row.kinds]
    props = {row.name: described(row) for row in rows}
    props["kind"] = {**props["kind"], "enum": [kind]}
    out: dict[str, Any] = {"title": kind, "type": "object",
                           "required": [row.name for row in rows if row.required],
                           "additionalProperties": False, "properties": props}
    for rule in (*RAW_RULES, *RULES):
        rule.apply_schema(kind, out)
    return out


def task_json_schema() -> dict[str, Any]:
    """The OpenAPI schema of one task, from the table: one object schema per kind."""
    return {"description": "A measurement task: the fields of its kind only "
                           "(threshold and threshold_abs are exclusive).",
            "oneOf": [kind_json_schema(kind) for kind in KINDS]}


def bandwidth_json_schema() -> dict[str, Any]:
    """The OpenAPI schema of a ``POST bandwidth`` body, from the table."""
    return {"type": "object", "required": ["src", "dst"], "additionalProperties": False,
            "properties": {name: described(ROWS[name]) for name in BANDWIDTH_FIELDS}}
