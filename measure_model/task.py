"""Measurement tasks: the model, YAML policies and their validation.

A *policy* is a YAML document ``{tasks: [...]}``; a REST body is the same
object as JSON, or a single task object. Both go through one validator
(``parse_tasks``) in FAUCET's style:

1. each object is checked against a table of allowed fields (unknown keys
   are rejected, fields of another kind are rejected),
2. each field is checked for its type and bounds (``bool`` is not an
   integer, NaN and infinities are rejected) and defaults are filled in,
3. semantic checks run across fields (ports need tcp/udp, ``threshold`` and
   ``threshold_abs`` are exclusive, names are unique in a policy).

Every error is a ``PolicyError`` whose message names the source, the task
and the field, e.g. ``policy heavy.yaml: task hh-1: key 'srcdst' is not one
of src, dst, ...``. Validation is all-or-nothing: a caller gets either every
task of the policy or an error, so a rejected policy changes nothing.

YAML is read with a safe loader subclass that rejects duplicate keys and
anchors/aliases (no alias bombs), limits the document to 256 KiB and
resolves scalars like YAML 1.2's core schema (``80:59`` stays a string,
``yes`` is not a boolean).

``Task.to_dict()`` is what agents receive (every default filled in);
``Task.from_dict()`` validates it again, so the two round-trip exactly.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

KINDS = ("heavy_hitters", "flow_size", "port_scan", "counter", "bandwidth")
KEYS = ("src", "dst", "src_dst", "sport", "dport", "src_dport", "dst_dport", "proto",
        "five_tuple")
INCREMENTS = ("pkt", "bytes")
DEFAULT_KEY = {"heavy_hitters": "src", "flow_size": "src_dst", "port_scan": "src_dport",
               "counter": "src"}
INTERFACES = ("INPUT", "OUTPUT")
PROTOS = ("tcp", "udp", "icmp")
WINDOW_MODES = ("tumbling", "sliding")
BW_METHODS = ("slops", "bulk")
NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
HOST_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
MAX_POLICY_BYTES = 256 * 1024
MAX_TASKS = 100
MAX_SCOPE = 1000

MEASURE_FIELDS = ("filter", "key", "increment", "threshold", "threshold_abs", "top_k",
                  "window", "scan_ports", "report_interval", "sketch", "scope")
BANDWIDTH_FIELDS = ("src", "dst", "method", "max_duration", "max_bytes")
TASK_FIELDS = ("name", "kind", *MEASURE_FIELDS, *BANDWIDTH_FIELDS)
FILTER_FIELDS = ("interface", "proto", "src", "dst", "sport", "dport")
WINDOW_FIELDS = ("length", "mode")
SKETCH_FIELDS = ("width", "depth", "seed")


class PolicyError(ValueError):
    """A policy or task body failed validation; the message says where."""


class _FieldError(ValueError):
    """Raised by field checks; wrapped with the source and task names."""


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

    length: float = 1.0
    mode: str = "tumbling"


@dataclass(frozen=True)
class SketchSpec:
    """Count-min sketch size; equal specs are required to merge reports."""

    width: int = 16384
    depth: int = 4
    seed: int = 1


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
    src: str | None = None
    dst: str | None = None
    method: str | None = None
    max_duration: float | None = None
    max_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: every set field, nested objects as dicts."""
        out: dict[str, Any] = {}
        for name in TASK_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, Filter):
                value = {k: v for k, v in value.__dict__.items() if v is not None}
            elif isinstance(value, Window | SketchSpec):
                value = dict(value.__dict__)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, obj: Any, source_name: str = "task") -> Task:
        """Validate a wire-form dict back into a Task."""
        return parse_task(obj, source_name)

    @property
    def is_global(self) -> bool:
        return self.scope == "global"


# ---------------------------------------------------------------- field checks

def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(f"{name} must be an integer, not {_type_name(value)}")
    if not lo <= value <= hi:
        raise _FieldError(f"{name} {_shown(value)} is out of range {lo}..{hi}")
    return value


def _number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{name} must be a number, not {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _FieldError(f"{name} {value} is not a finite number")
    if (value <= lo if lo_open else value < lo) or value > hi:  # exact for huge ints too
        left = "(" if lo_open else "["
        raise _FieldError(f"{name} {_shown(value)} is out of range {left}{lo:g}, {hi:g}]")
    return float(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        raise _FieldError(f"{name} {shown} is not one of {', '.join(choices)}")
    return value


def _mapping(name: str, value: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise _FieldError(f"{name} must be a mapping, not {_type_name(value)}")
    for key in value:
        if key not in allowed:
            raise _FieldError(f"unknown field '{name}.{key}'")
    return value


def _prefix(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"{name} must be an IPv4 address or prefix, not {_type_name(value)}")
    try:
        return str(ipaddress.IPv4Network(value, strict=True)).removesuffix("/32")
    except ValueError as exc:
        raise _FieldError(f"{name} '{value}' is not an IPv4 address or prefix ({exc})") from None


def _port_spec(name: str, value: Any) -> int | str:
    if isinstance(value, str):
        match = re.fullmatch(r"(\d{1,5}):(\d{1,5})", value)
        if not match:
            raise _FieldError(f"{name} '{value}' is not a port or a range 'low:high'")
        low, high = int(match[1]), int(match[2])
        if not 0 <= low <= high <= 65535:
            raise _FieldError(f"{name} '{value}' is not a range within 0..65535 with low <= high")
        return f"{low}:{high}"
    return _int(name, value, 0, 65535)


def _host_ref(name: str, value: Any) -> str:
    """A host named like ``h5`` or an IPv4 data address."""
    if not isinstance(value, str) or not re.fullmatch(HOST_PATTERN, value):
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        raise _FieldError(f"{name} {shown} is not a host name or IPv4 address")
    return value


def _filter(value: Any) -> Filter:
    obj = _mapping("filter", value, FILTER_FIELDS)
    proto = _choice("filter.proto", obj["proto"], PROTOS) if "proto" in obj else None
    flt = Filter(
        interface=_choice("filter.interface", obj.get("interface", "INPUT"), INTERFACES),
        proto=proto,
        src=_prefix("filter.src", obj["src"]) if "src" in obj else None,
        dst=_prefix("filter.dst", obj["dst"]) if "dst" in obj else None,
        sport=_port_spec("filter.sport", obj["sport"]) if "sport" in obj else None,
        dport=_port_spec("filter.dport", obj["dport"]) if "dport" in obj else None,
    )
    for port in ("sport", "dport"):
        if getattr(flt, port) is not None and proto not in ("tcp", "udp"):
            raise _FieldError(f"filter.{port} needs filter.proto tcp or udp")
    return flt


def _window(value: Any) -> Window:
    obj = _mapping("window", value, WINDOW_FIELDS)
    return Window(length=_number("window.length", obj.get("length", 1.0), 0.05, 3600.0),
                  mode=_choice("window.mode", obj.get("mode", "tumbling"), WINDOW_MODES))


def _sketch(value: Any) -> SketchSpec:
    obj = _mapping("sketch", value, SKETCH_FIELDS)
    width = _int("sketch.width", obj.get("width", 16384), 64, 2 ** 22)
    if width & (width - 1):
        raise _FieldError(f"sketch.width {width} is not a power of two")
    return SketchSpec(width=width, depth=_int("sketch.depth", obj.get("depth", 4), 1, 8),
                      seed=_int("sketch.seed", obj.get("seed", 1), 0, 2 ** 31 - 1))


def _scope(value: Any) -> str | tuple[str, ...]:
    if value == "global":
        return "global"
    if not isinstance(value, list) or not value:
        raise _FieldError("scope must be 'global' or a non-empty list of hosts")
    if len(value) > MAX_SCOPE:
        raise _FieldError(f"scope lists {len(value)} hosts, more than {MAX_SCOPE}")
    hosts = tuple(_host_ref(f"scope[{i}]", v) for i, v in enumerate(value))
    if len(set(hosts)) != len(hosts):
        raise _FieldError("scope lists a host twice")
    return hosts


def _increment(value: Any) -> str:
    if value == "byte":
        return "bytes"
    return _choice("increment", value, INCREMENTS)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        shown = f"'{value}'" if isinstance(value, str) else _type_name(value)
        raise _FieldError(f"name {shown} does not match {NAME_PATTERN}")
    return value


def _measure_task(name: str, kind: str, obj: dict) -> Task:
    for key in BANDWIDTH_FIELDS:
        if key in obj:
            raise _FieldError(f"field '{key}' does not apply to kind {kind}")
    if "scan_ports" in obj and kind != "port_scan":
        raise _FieldError(f"field 'scan_ports' does not apply to kind {kind}")
    threshold = obj.get("threshold")
    threshold_abs = obj.get("threshold_abs")
    if threshold is not None and threshold_abs is not None:
        raise _FieldError("threshold and threshold_abs are exclusive: give one of them")
    if threshold is not None:
        threshold = _number("threshold", threshold, 0.0, 1.0, lo_open=True)
    elif threshold_abs is not None:
        threshold_abs = _int("threshold_abs", threshold_abs, 1, 2 ** 62)
    elif kind == "heavy_hitters":
        threshold = 0.05
    return Task(
        name=name, kind=kind,
        filter=_filter(obj.get("filter", {})),
        key=_choice("key", obj.get("key", DEFAULT_KEY[kind]), KEYS),
        increment=_increment(obj.get("increment", "pkt")),
        threshold=threshold, threshold_abs=threshold_abs,
        top_k=_int("top_k", obj.get("top_k", 10), 1, 1000),
        window=_window(obj.get("window", {})),
        scan_ports=(_int("scan_ports", obj.get("scan_ports", 20), 1, 65535)
                    if kind == "port_scan" else None),
        report_interval=_number("report_interval", obj.get("report_interval", 5.0), 0.5, 3600.0),
        sketch=_sketch(obj.get("sketch", {})),
        scope=_scope(obj.get("scope", "global")),
    )


def _bandwidth_task(name: str, obj: dict) -> Task:
    for key in MEASURE_FIELDS:
        if key in obj:
            raise _FieldError(f"field '{key}' does not apply to kind bandwidth")
    for key in ("src", "dst"):
        if key not in obj:
            raise _FieldError(f"{key} is required for kind bandwidth")
    src, dst = _host_ref("src", obj["src"]), _host_ref("dst", obj["dst"])
    if src == dst:
        raise _FieldError(f"src and dst are the same host '{src}'")
    return Task(
        name=name, kind="bandwidth", src=src, dst=dst,
        method=_choice("method", obj.get("method", "slops"), BW_METHODS),
        max_duration=_number("max_duration", obj.get("max_duration", 10.0), 0.0, 60.0,
                             lo_open=True),
        max_bytes=_int("max_bytes", obj.get("max_bytes", 20_000_000), 1, 200_000_000),
    )


# ---------------------------------------------------------------- entry points

def _task_label(obj: Any, index: int) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) \
            and re.fullmatch(NAME_PATTERN, obj["name"]):
        return obj["name"]
    return f"#{index + 1}"


def parse_task(obj: Any, source_name: str, index: int = 0) -> Task:
    """Validate one task object; raise PolicyError naming source, task and field."""
    label = _task_label(obj, index)
    try:
        if not isinstance(obj, dict):
            raise _FieldError(f"must be a mapping, not {_type_name(obj)}")
        for key in obj:
            if key not in TASK_FIELDS:
                raise _FieldError(f"unknown field '{key}'")
        if "name" not in obj:
            raise _FieldError("name is required")
        if "kind" not in obj:
            raise _FieldError("kind is required")
        name = _name(obj["name"])
        kind = _choice("kind", obj["kind"], KINDS)
        if kind == "bandwidth":
            return _bandwidth_task(name, obj)
        return _measure_task(name, kind, obj)
    except _FieldError as exc:
        raise PolicyError(f"policy {source_name}: task {label}: {exc}") from None


def parse_tasks(obj: Any, source_name: str) -> list[Task]:
    """Validate a policy object: ``{"tasks": [...]}`` or one task object."""
    where = f"policy {source_name}"
    if isinstance(obj, dict) and "tasks" not in obj and "kind" in obj:
        items: Any = [obj]
    elif isinstance(obj, dict):
        for key in obj:
            if key != "tasks":
                raise PolicyError(f"{where}: unknown top-level field '{key}'")
        if "tasks" not in obj:
            raise PolicyError(f"{where}: 'tasks' is required")
        items = obj["tasks"]
    else:
        raise PolicyError(f"{where}: must be a mapping with 'tasks', not {_type_name(obj)}")
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{where}: tasks must be a non-empty list")
    if len(items) > MAX_TASKS:
        raise PolicyError(f"{where}: {len(items)} tasks, more than {MAX_TASKS}")
    tasks: list[Task] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        task = parse_task(item, source_name, index)
        if task.name in seen:
            raise PolicyError(f"{where}: task {task.name}: name is used by another task "
                              "in the policy")
        seen.add(task.name)
        tasks.append(task)
    return tasks


# ---------------------------------------------------------------- YAML

class _PolicyLoader(yaml.SafeLoader):
    """Safe loader: no anchors/aliases, no duplicate keys, YAML 1.2-like scalars."""

    def compose_node(self, parent, index):  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise yaml.YAMLError(f"anchors and aliases are not allowed (line {line})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.YAMLError(
                        f"unhashable mapping key (line {key_node.start_mark.line + 1})") from None
                if duplicate:
                    raise yaml.YAMLError(
                        f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_policy(text: str | bytes, source_name: str) -> list[Task]:
    """Parse and validate a YAML policy; raise PolicyError on any problem."""
    where = f"policy {source_name}"
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"{where}: {size} bytes is more than the limit of {MAX_POLICY_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{where}: not valid UTF-8") from None
    try:
        obj = yaml.load(text, Loader=_PolicyLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise PolicyError(f"{where}: invalid YAML: {detail}") from None
    return parse_tasks(obj, source_name)
