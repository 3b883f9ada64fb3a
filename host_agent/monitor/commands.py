"""The monitor's commands: one dataclass per request of the agent-monitor channel.

They travel as ``{"op": name, field: value, ...}`` lines over
:mod:`host_agent.ipc`. :func:`to_wire` writes one, :func:`from_wire` reads
one back and checks every field (a wrong type is a ``ValueError`` naming the
field, which the channel returns as a refusal). Replies are plain JSON
values; ``Stats`` and ``Query`` document theirs.

A counter ``entry`` is ``{"task": Task.to_dict(), "candidate_divisor": n}``
(read back by ``host_agent.monitor.core.default_counter_factory``); a flows
``entry`` is ``{"task": Task.to_dict(), "addresses": [collector, ...]}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

QUERY_METHODS = ("snapshot", "summary", "estimate", "heavy_hitters", "top_k", "window",
                 "scan")
FLOW_ORDER = ("bytes", "packets")


@dataclass(frozen=True)
class Ping:
    """Reply: ``{"pid": n}``."""

    op: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Stats:
    """Reply: ``{"seen": {"<sketch>": [pkts, bytes]}, "packets", "unmatched", "batches",
    "errors", "started", "cpu_seconds", "rss_bytes", "flows": {...}, "nflog": {...}}``."""

    op: ClassVar[str] = "stats"


@dataclass(frozen=True)
class AddSketch:
    """``ebpf``: ``{"filter": Filter dict, "sample": p, "sample_mode": m, "probes": b}`` for
    a sketch counted by the eBPF capture (slots 32..47; only the first monitor gets it);
    ``probes``: connection attempts only (a port_scan task's sketch)."""

    op: ClassVar[str] = "add_sketch"
    sketch: int
    slot: int
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    ebpf: dict[str, Any] | None = None


@dataclass(frozen=True)
class RemoveSketch:
    op: ClassVar[str] = "remove_sketch"
    sketch: int


@dataclass(frozen=True)
class AddCounter:
    op: ClassVar[str] = "add_counter"
    sketch: int
    counter: int
    entry: dict[str, Any]


@dataclass(frozen=True)
class RemoveCounter:
    op: ClassVar[str] = "remove_counter"
    sketch: int
    counter: int


@dataclass(frozen=True)
class AddFlows:
    op: ClassVar[str] = "add_flows"
    sketch: int
    entry: dict[str, Any]


@dataclass(frozen=True)
class RemoveFlows:
    """Exports every flow still cached."""

    op: ClassVar[str] = "remove_flows"
    sketch: int


@dataclass(frozen=True)
class FlowsTop:
    op: ClassVar[str] = "flows_top"
    sketch: int
    n: int = 10
    by: str = "bytes"


@dataclass(frozen=True)
class Query:
    """``method``: snapshot | summary (the snapshot without the sketch cells and the
    HyperLogLog registers: bounded by the counter's limits, cheap to build) | estimate
    (needs ``key``) | heavy_hitters | top_k | window | scan; ``now`` defaults to the
    monitor's clock."""

    op: ClassVar[str] = "query"
    sketch: int
    counter: int
    method: str
    now: float | None = None
    key: str | None = None


Command = (Ping | Stats | AddSketch | RemoveSketch | AddCounter | RemoveCounter | AddFlows
           | RemoveFlows | FlowsTop | Query)
COMMANDS: dict[str, type[Any]] = {c.op: c for c in (
    Ping, Stats, AddSketch, RemoveSketch, AddCounter, RemoveCounter, AddFlows, RemoveFlows,
    FlowsTop, Query)}

def to_wire(cmd: Command) -> dict[str, Any]:
    return {"op": cmd.op, **asdict(cmd)}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(name: str, value: Any, kind: str) -> Any:
    ok = {"int": _int(value),
          "dict": isinstance(value, dict),
          "dict?": value is None or isinstance(value, dict),
          "str": isinstance(value, str),
          "float?": value is None or (isinstance(value, int | float)
                                      and not isinstance(value, bool)),
          "str?": value is None or isinstance(value, str)}[kind]
    if not ok:
        raise ValueError(f"{name}: expected {kind.rstrip('?')}, got {value!r}")
    return value


_KINDS = {"sketch": "int", "slot": "int", "counter": "int", "n": "int", "counters": "dict",
          "entry": "dict", "ebpf": "dict?", "method": "str", "by": "str", "now": "float?",
          "key": "str?"}


def from_wire(msg: dict[str, Any]) -> Command:
    """The command of one request line; ``ValueError``/``KeyError`` name what is wrong."""
    if not isinstance(msg, dict):
        raise ValueError(f"a request is a JSON object, not {type(msg).__name__}")
    op = msg.get("op")
    cls = COMMANDS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ValueError(f"unknown op {op!r}")
    known = {f.name for f in fields(cls)}
    extra = set(msg) - known - {"op"}
    if extra:
        raise ValueError(f"{op}: unknown fields {sorted(extra)}")
    args = {k: _check(k, v, _KINDS[k]) for k, v in msg.items() if k != "op"}
    cmd: Command = cls(**args)
    if isinstance(cmd, Query) and cmd.method not in QUERY_METHODS:
        raise ValueError(f"unknown query method {cmd.method!r}")
    if isinstance(cmd, FlowsTop) and cmd.by not in FLOW_ORDER:
        raise ValueError(f"by: one of {FLOW_ORDER}, not {cmd.by!r}")
    return cmd
