"""The snapshot sections of the health kinds: ``paths`` (path_health) and ``tcp`` (tcp_health).

A path_health agent snapshot holds what its probes saw in **one report
interval** (not a running total: a pair's loss and latency are judged per
interval):

``paths: {"<src>><dst>": {"sent", "lost", "lost_fwd", "rtt", "rtt_max_ms", "jitter_ms"}}``
  ``sent`` probes whose send time fell in the interval and whose fate is
  known (answered, or unanswered after the loss timeout), ``lost`` of them
  unanswered, ``lost_fwd`` of those lost on the way to ``dst`` (from the
  reflector's echoed receive count; the rest were lost on the way back);
  ``rtt`` the round-trip times in milliseconds of the answered
  ones as a DDSketch (relative accuracy ``RELATIVE_ACCURACY``) in its
  protobuf form, base64 (``""`` when none was answered); ``rtt_max_ms`` the
  exact largest; ``jitter_ms`` the mean absolute difference of consecutive
  RTTs (RFC 3550's inter-packet delay variation, averaged), ``null`` below
  two answers.
``probes: {"<host>": {"packets_per_s", "bytes_per_s", "cpu_seconds_per_s"}}``
  each probing host's own cost in the interval: packets and IP bytes it
  sent and received for probes (requests and echoes), and the CPU its probe
  process used.

A tcp_health agent snapshot reads the kernel's TCP state (sock_diag) once
per interval:

``tcp: {"flows": [...], "pairs": {"<local>,<remote>": {...}}, "top": n}``
  ``flows`` the ``top`` connections with the most retransmitted segments,
  each ``{host, src, dst, sport, dport, retrans, spurious_retrans, lost,
  rtt_ms, min_rtt_ms, delivery_rate_bps, bytes_acked}`` (counters over the
  socket's life; ``spurious_retrans`` of ``retrans`` were D-SACKed by the
  receiver, so not lost; what each field means: ``host_agent.tcpinfo.diag``);
  ``pairs`` every (local address, remote address) with its ``host``, ``flows``,
  ``retrans``, ``spurious_retrans``, ``lost``, ``rtt_ms`` (mean over its
  flows), ``min_rtt_ms``, ``delivery_rate_bps`` (sum).

Merge rules (exact, as counts and sketches allow): ``sent``/``lost`` add,
RTT sketches merge (DDSketch merges are exact: the merged sketch is the
sketch of the union), ``rtt_max_ms`` is the maximum, ``jitter_ms`` the mean
weighted by answered probes; ``probes`` unite (one entry per host). TCP
pairs add their counts (``rtt_ms`` weighted by flows, ``min_rtt_ms`` the
minimum, ``delivery_rate_bps`` adds), flows are the union ranked by
``retrans``, keeping ``top``. Everything comes from the network: every
check raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ddsketch import DDSketch
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto
from google.protobuf.message import DecodeError

from measure_model.fields import is_count, is_number
from measure_model.wire.checks import HOST_RE, check_provenance, need

RELATIVE_ACCURACY = 0.01         # quantiles within 1% of the true value
MIN_RTT_MS = 1e-3                # smaller RTTs are recorded as this (the sketch's floor)
MAX_RTT_MS = 1e6
MAX_BIN_INDEX = 1000             # |bin index| of RTTs from MIN_RTT_MS to MAX_RTT_MS is below
MAX_SKETCH_CHARS = 64 * 1024
MAX_PAIRS = 100_000
MAX_FLOWS = 1000
MAX_TCP_TOP = 1000
MAX_VALUE = 1e15
PAIR_SEP = ">"
PAIR_FIELDS = frozenset(("sent", "lost", "lost_fwd", "rtt", "rtt_max_ms", "jitter_ms"))
COST_FIELDS = ("packets_per_s", "bytes_per_s", "cpu_seconds_per_s")
FLOW_FIELDS = ("host", "src", "dst", "sport", "dport", "retrans", "spurious_retrans", "lost",
               "rtt_ms", "min_rtt_ms", "delivery_rate_bps", "bytes_acked")
TCP_PAIR_FIELDS = ("host", "flows", "retrans", "spurious_retrans", "lost", "rtt_ms",
                   "min_rtt_ms", "delivery_rate_bps")
HEALTH_SNAPSHOT_FIELDS = frozenset(("paths", "probes", "tcp", "covered", "missing",
                                    "generated_at", "oldest", "monitor", "missed"))
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def _num(v: Any) -> bool:
    return is_number(v, 0, MAX_VALUE)


# ---------------------------------------------------------------- RTT sketches

def new_sketch() -> DDSketch:
    return DDSketch(RELATIVE_ACCURACY)


def add_rtt(sketch: BaseDDSketch, rtt_ms: float) -> None:
    sketch.add(min(max(rtt_ms, MIN_RTT_MS), MAX_RTT_MS))


def encode_sketch(sketch: BaseDDSketch | None) -> str:
    """The sketch's protobuf form in base64 (``""`` for no sketch or an empty one)."""
    if sketch is None or sketch.count == 0:
        return ""
    return base64.b64encode(DDSketchProto.to_proto(sketch).SerializeToString()).decode()


def decode_sketch(text: Any, where: str = "rtt") -> BaseDDSketch | None:
    """A sketch from :func:`encode_sketch`'s form, checked so that decoding and merging
    stay bounded (same mapping, bins within the RTT range); None for ``""``."""
    need(isinstance(text, str) and len(text) <= MAX_SKETCH_CHARS,
          f"{where} must be a base64 string of at most {MAX_SKETCH_CHARS} characters")
    if text == "":
        return None
    try:
        msg = DDSketchMessage()
        msg.ParseFromString(base64.b64decode(text, validate=True))
    except (binascii.Error, DecodeError, ValueError):
        raise ValueError(f"snapshot: {where} is not a base64 DDSketch protobuf") from None
    expected = new_sketch()._mapping
    need(math.isclose(msg.mapping.gamma, expected.gamma, rel_tol=1e-9)
          and msg.mapping.indexOffset == 0 and msg.mapping.interpolation == 0,
          f"{where}: another mapping than DDSketch({RELATIVE_ACCURACY})")
    pos, neg = msg.positiveValues, msg.negativeValues
    need(not neg.contiguousBinCounts and not neg.binCounts and not pos.binCounts,
          f"{where}: only positive contiguous bins are allowed")
    need(-MAX_BIN_INDEX <= pos.contiguousBinIndexOffset
          and pos.contiguousBinIndexOffset + len(pos.contiguousBinCounts) <= MAX_BIN_INDEX,
          f"{where}: bins outside the RTT range")
    counts = list(pos.contiguousBinCounts) + [msg.zeroCount]
    need(all(is_number(c, 0, MAX_VALUE) for c in counts), f"{where}: bad bin counts")
    sketch = DDSketchProto.from_proto(msg)
    return sketch if sketch.count > 0 else None


def quantiles(sketch: BaseDDSketch | None, rtt_max: float | None) -> dict[str, float | None]:
    """``{p50, p90, p99, max}`` in milliseconds (None without answers)."""
    if sketch is None or sketch.count == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    out: dict[str, float | None] = {
        name: round(float(sketch.get_quantile_value(q) or 0.0), 4) for name, q in QUANTILES}
    out["max"] = round(float(rtt_max), 4) if rtt_max is not None else out["p99"]
    return out


# ---------------------------------------------------------------- checks

def pair_key(src: str, dst: str) -> str:
    return f"{src}{PAIR_SEP}{dst}"


def split_pair(key: str) -> tuple[str, str]:
    src, _, dst = key.partition(PAIR_SEP)
    return src, dst


def check_paths(paths: Any) -> dict[str, dict]:
    need(isinstance(paths, dict) and len(paths) <= MAX_PAIRS,
          f"paths must map at most {MAX_PAIRS} 'src>dst' pairs to their figures")
    for key, entry in paths.items():
        src, dst = split_pair(key) if isinstance(key, str) else ("", "")
        need(bool(HOST_RE.fullmatch(src)) and bool(HOST_RE.fullmatch(dst)),
              f"paths key {key!r} is not 'src>dst'")
        where = f"paths[{key!r}]"
        need(isinstance(entry, dict), f"{where} must be an object")
        unknown = sorted(set(entry) - PAIR_FIELDS)
        need(not unknown, f"{where}: unknown field {unknown[0]!r}" if unknown else "")
        need(is_count(entry.get("sent")) and is_count(entry.get("lost"))
              and entry["lost"] <= entry["sent"],
              f"{where}: sent and lost must be counts with lost <= sent")
        need(is_count(entry.get("lost_fwd", 0)) and entry.get("lost_fwd", 0) <= entry["lost"],
              f"{where}: lost_fwd must be a count <= lost")
        sketch = decode_sketch(entry.get("rtt", ""), f"{where}.rtt")
        answered = entry["sent"] - entry["lost"]
        need(sketch is None or round(sketch.count) <= answered,
              f"{where}.rtt holds more RTTs than answered probes")
        for name in ("rtt_max_ms", "jitter_ms"):
            v = entry.get(name)
            need(v is None or _num(v), f"{where}.{name} must be a non-negative number")
    return paths


def check_probes(probes: Any) -> dict[str, dict]:
    need(isinstance(probes, dict) and len(probes) <= MAX_PAIRS
          and all(isinstance(h, str) and HOST_RE.fullmatch(h) for h in probes),
          "probes must map host names to their probe cost")
    for host, cost in probes.items():
        need(isinstance(cost, dict) and set(cost) == set(COST_FIELDS)
              and all(_num(v) for v in cost.values()),
              f"probes[{host!r}] must hold {', '.join(COST_FIELDS)} (non-negative numbers)")
    return probes


def check_tcp(tcp: Any) -> dict[str, Any]:
    need(isinstance(tcp, dict) and set(tcp) <= {"flows", "pairs", "top"},
          "tcp must be {flows, pairs, top}")
    top = tcp.get("top", 10)
    need(is_count(top) and 1 <= top <= MAX_TCP_TOP, f"tcp.top must be 1..{MAX_TCP_TOP}")
    flows = tcp.get("flows", [])
    need(isinstance(flows, list) and len(flows) <= MAX_FLOWS,
          f"tcp.flows must be a list of at most {MAX_FLOWS} flows")
    for i, f in enumerate(flows):
        need(isinstance(f, dict) and set(f) == set(FLOW_FIELDS),
              f"tcp.flows[{i}] must hold exactly {', '.join(FLOW_FIELDS)}")
        need(isinstance(f["host"], str) and bool(HOST_RE.fullmatch(f["host"]))
              and all(isinstance(f[n], str) and len(f[n]) <= 45 for n in ("src", "dst"))
              and all(is_count(f[n]) and f[n] <= 65535 for n in ("sport", "dport"))
              and all(is_count(f[n]) for n in ("retrans", "spurious_retrans", "lost",
                                                "bytes_acked"))
              and all(_num(f[n]) for n in ("rtt_ms", "min_rtt_ms", "delivery_rate_bps")),
              f"tcp.flows[{i}]: bad field types")
    pairs = tcp.get("pairs", {})
    need(isinstance(pairs, dict) and len(pairs) <= MAX_PAIRS,
          f"tcp.pairs must map at most {MAX_PAIRS} 'local,remote' pairs")
    for key, p in pairs.items():
        need(isinstance(key, str) and key.count(",") == 1 and len(key) <= 91,
              f"tcp.pairs key {key!r} is not 'local,remote'")
        need(isinstance(p, dict) and set(p) == set(TCP_PAIR_FIELDS)
              and isinstance(p["host"], str) and bool(HOST_RE.fullmatch(p["host"]))
              and all(is_count(p[n]) for n in ("flows", "retrans", "spurious_retrans", "lost"))
              and all(_num(p[n]) for n in ("rtt_ms", "min_rtt_ms", "delivery_rate_bps")),
              f"tcp.pairs[{key!r}] must hold {', '.join(TCP_PAIR_FIELDS)}")
    return tcp


def is_health(snap: Mapping[str, Any]) -> bool:
    """Whether a snapshot is a health kind's (``paths`` or ``tcp``), not a counter's."""
    return "paths" in snap or "tcp" in snap


def check_health_snapshot(snap: dict) -> dict:
    """Validate a path_health or tcp_health snapshot (see the module docstring)."""
    unknown = sorted(map(str, set(snap) - HEALTH_SNAPSHOT_FIELDS))
    need(not unknown, f"unknown field {unknown[0]!r}" if unknown else "")
    need(("paths" in snap) != ("tcp" in snap), "holds both paths and tcp")
    if "paths" in snap:
        check_paths(snap["paths"])
        check_probes(snap.get("probes", {}))
    else:
        need("probes" not in snap, "probes belongs to a paths snapshot")
        check_tcp(snap["tcp"])
    check_provenance(snap)
    need(isinstance(snap.get("missed", {}), dict), "missed must be an object")
    return snap


# ---------------------------------------------------------------- merge

def _merge_pair(entries: list[dict]) -> dict:
    if len(entries) == 1:
        return dict(entries[0])
    sketch: BaseDDSketch | None = None
    for e in entries:
        part = decode_sketch(e.get("rtt", ""))
        if part is not None:
            if sketch is None:
                sketch = part
            else:
                sketch.merge(part)
    maxes = [e["rtt_max_ms"] for e in entries if e.get("rtt_max_ms") is not None]
    weighted = [(e["jitter_ms"], e["sent"] - e["lost"]) for e in entries
                if e.get("jitter_ms") is not None]
    weight = sum(w for _, w in weighted)
    return {"sent": sum(e["sent"] for e in entries), "lost": sum(e["lost"] for e in entries),
            "lost_fwd": sum(e.get("lost_fwd", 0) for e in entries),
            "rtt": encode_sketch(sketch), "rtt_max_ms": max(maxes) if maxes else None,
            "jitter_ms": (sum(j * w for j, w in weighted) / weight) if weight else None}


def merge_paths(sections: Sequence[Mapping[str, dict]]) -> dict[str, dict]:
    grouped: dict[str, list[dict]] = {}
    for section in sections:
        for key, entry in section.items():
            grouped.setdefault(key, []).append(entry)
    return {key: _merge_pair(entries) for key, entries in sorted(grouped.items())}


def _merge_tcp_pair(entries: list[dict]) -> dict:
    flows = sum(p["flows"] for p in entries)
    return {"host": entries[0]["host"], "flows": flows,
            "retrans": sum(p["retrans"] for p in entries),
            "spurious_retrans": sum(p["spurious_retrans"] for p in entries),
            "lost": sum(p["lost"] for p in entries),
            "rtt_ms": (sum(p["rtt_ms"] * p["flows"] for p in entries) / flows) if flows else 0.0,
            "min_rtt_ms": min(p["min_rtt_ms"] for p in entries),
            "delivery_rate_bps": sum(p["delivery_rate_bps"] for p in entries)}


def rank_flows(flows: list[dict], top: int) -> list[dict]:
    return sorted(flows, key=lambda f: (-f["retrans"], -f["lost"], f["host"], f["src"],
                                        f["sport"], f["dst"], f["dport"]))[:top]


def merge_tcp(sections: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    top = max(s.get("top", 10) for s in sections)
    grouped: dict[str, list[dict]] = {}
    for s in sections:
        for key, p in s.get("pairs", {}).items():
            grouped.setdefault(key, []).append(p)
    return {"flows": rank_flows([f for s in sections for f in s.get("flows", [])], top),
            "pairs": {k: _merge_tcp_pair(v) for k, v in sorted(grouped.items())},
            "top": top}


def merge_health(snaps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge checked health snapshots of one task (see the module docstring)."""
    if any("paths" in s for s in snaps) and any("tcp" in s for s in snaps):
        raise ValueError("snapshot: cannot merge a paths snapshot with a tcp one")
    out: dict[str, Any] = {}
    if "paths" in snaps[0]:
        out["paths"] = merge_paths([s["paths"] for s in snaps])
        probes: dict[str, dict] = {}
        for s in snaps:
            probes.update(s.get("probes", {}))
        out["probes"] = dict(sorted(probes.items()))
    else:
        out["tcp"] = merge_tcp([s["tcp"] for s in snaps])
    covered = sorted({h for s in snaps for h in s.get("covered", [])})
    times = [s["generated_at"] for s in snaps if s.get("generated_at") is not None]
    oldest = [t for t in (s.get("oldest", s.get("generated_at")) for s in snaps)
              if t is not None]
    out.update(covered=covered,
               missing=sorted({h for s in snaps for h in s.get("missing", [])} - set(covered)),
               generated_at=max(times) if times else None,
               oldest=min(oldest) if oldest else None)
    return out


# ---------------------------------------------------------------- results

def pair_row(key: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One ``pairs`` row of a result: ``{src, dst, sent, lost, loss, lost_fwd, lost_rev,
    rtt_ms, jitter_ms}`` (``loss`` is round-trip loss; None when nothing was sent)."""
    src, dst = split_pair(key)
    sent, lost = entry["sent"], entry["lost"]
    fwd = entry.get("lost_fwd", 0)
    return {"src": src, "dst": dst, "sent": sent, "lost": lost,
            "loss": round(lost / sent, 6) if sent else None,
            "lost_fwd": fwd, "lost_rev": lost - fwd,
            "rtt_ms": quantiles(decode_sketch(entry.get("rtt", "")), entry.get("rtt_max_ms")),
            "jitter_ms": (round(entry["jitter_ms"], 4) if entry.get("jitter_ms") is not None
                          else None)}


def pair_rows(paths: Mapping[str, Mapping[str, Any]], host: str | None = None
              ) -> list[dict[str, Any]]:
    """The result rows of a ``paths`` section; with ``host``, the pairs it is an end of."""
    return [pair_row(k, v) for k, v in sorted(paths.items())
            if host is None or host in split_pair(k)]


def probe_cost(probes: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The probes' own cost: per host, and the largest over hosts."""
    worst = {name: max((c[name] for c in probes.values()), default=0.0)
             for name in COST_FIELDS}
    return {"per_host": {h: dict(c) for h, c in sorted(probes.items())}, "max": worst}


def tcp_result(tcp: Mapping[str, Any]) -> dict[str, Any]:
    """``tcp_health``'s answer: top flows and top host pairs by retransmissions."""
    top = tcp.get("top", 10)
    pairs = [{"src": k.split(",")[0], "dst": k.split(",")[1], **v}
             for k, v in tcp.get("pairs", {}).items()]
    pairs.sort(key=lambda p: (-p["retrans"], -p["lost"], p["src"], p["dst"]))
    return {"top_flows": rank_flows(list(tcp.get("flows", [])), top),
            "top_pairs": pairs[:top], "pairs_total": len(pairs)}


def health_result(snap: Mapping[str, Any], host: str | None = None) -> dict[str, Any]:
    """The fields a health task's result carries (``pairs`` and ``probe_cost``, or
    ``tcp``); with ``host``, only that host's rows."""
    if "paths" in snap:
        probes = snap.get("probes", {})
        if host is not None:
            probes = {h: c for h, c in probes.items() if h == host}
        return {"pairs": pair_rows(snap["paths"], host), "probe_cost": probe_cost(probes)}
    tcp = snap.get("tcp", {})
    if host is not None:
        tcp = {"top": tcp.get("top", 10),
               "flows": [f for f in tcp.get("flows", []) if f["host"] == host],
               "pairs": {k: p for k, p in tcp.get("pairs", {}).items() if p["host"] == host}}
    return {"tcp": tcp_result(tcp)}
