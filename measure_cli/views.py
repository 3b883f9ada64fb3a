"""What a result says, per kind, for people: rates now, then each kind's own answer.

``render.render_result`` writes a result's heading and coverage, then the
lines of this module:

- ``rate_line``: the last interval's own counts as rates with SI units
  (``2.05 Mbit/s  250 pkt/s over 5 s``), the cumulative totals labelled as
  such;
- one view per kind in ``VIEWS`` (kind -> function of the result, the host
  names and the key type, returning lines). A new kind adds one function
  and one row; ``render_result`` falls back to the top keys for a kind
  without a row.

Units: bits per second for rates (``bps``), packets per second (``pps``),
bytes with SI prefixes (``MB``); a count in the task's unit (``increment``)
says its unit. Plain functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from measure_cli.table import render_table

BAR_WIDTH = 30


def si(value: float | None, unit: str, digits: int = 3) -> str:
    """``2050000, 'bit/s'`` -> ``2.05 Mbit/s`` ('-' when absent)."""
    if value is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def bitrate(bps: float | None) -> str:
    return si(bps, "bit/s")


def pktrate(pps: float | None) -> str:
    return si(pps, "pkt/s")


def duration(seconds: float | None) -> str:
    """``3725.5`` -> ``1 h 2 min``, ``185`` -> ``3 min 5 s``, ``12.5`` -> ``12.5 s``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.3g} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def size(n: float | None, increment: str | None) -> str:
    """A count in the task's unit: bytes with SI prefixes, packets as ``pkt``."""
    return si(n, "B") if increment == "bytes" else si(n, "pkt")


def rate_line(result: dict) -> str | None:
    """``now: 2.05 Mbit/s, 250 pkt/s (last 5 s interval); since start: 1.2 MB, 900 pkt``."""
    rate = result.get("rate")
    since = f"since start: {si(result.get('bytes'), 'B')}, {si(result.get('packets'), 'pkt')}"
    if not isinstance(rate, dict):
        return since if "bytes" in result else None
    partial = "" if result.get("complete", True) else ", partial: agents missing"
    return (f"now: {bitrate(rate.get('bps'))}, {pktrate(rate.get('pps'))} "
            f"(last {rate.get('seconds', 0):.3g} s interval{partial}); {since}")


def hosts_of(key: str, names: dict[str, str]) -> str | None:
    """``h2 -> h5`` for a key naming agents' addresses ('?': no agent there)."""
    hosts = [names.get(part, "") for part in str(key).split(",")]
    return " -> ".join(h or "?" for h in hosts) if any(hosts) else None


def key_rate(result: dict, key: str) -> str | None:
    """The key's bit rate (or packet rate) in the last interval, when listed."""
    entry = ((result.get("rate") or {}).get("keys") or {}).get(key)
    if not isinstance(entry, dict):
        return None
    return bitrate(entry["bps"]) if entry.get("bps") is not None else pktrate(entry.get("pps"))


def keys_table(result: dict, pairs: list[tuple[str, Any]], names: dict[str, str],
               key: str) -> str:
    """Keys with the hosts they name, their count (the task's unit), share and rate now."""
    total = result.get("total") or 0
    rows = []
    for k, v in pairs:
        share = f"{100 * v / total:.1f}%" if total else None
        rows.append([k, hosts_of(k, names), _number(v), share, key_rate(result, k)])
    return render_table([key.upper(), "HOSTS", "COUNT", "SHARE", "NOW"], rows)


def bars(items: list[tuple[str, float]], width: int = BAR_WIDTH) -> list[str]:
    """A horizontal bar per (label, value), scaled to the largest."""
    if not items:
        return []
    top = max(v for _, v in items) or 1
    label_w = max(len(label) for label, _ in items)
    return [f"{label.rjust(label_w)} |{'#' * max(1, round(width * v / top)):<{width}} "
            f"{_number(round(v, 2))}" for label, v in items]


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------- per kind

def flow_size_view(result: dict, names: dict[str, str], key: str) -> list[str]:
    answer = result.get("flow_size")
    if not isinstance(answer, dict):
        return []
    unit = "bytes" if result.get("increment") == "bytes" else "packets"
    hist = sorted(((int(s), float(n)) for s, n in (answer.get("histogram") or {}).items()))
    bins: dict[int, float] = {}
    for s, n in hist:  # power-of-two bins: a long histogram stays a dozen bars
        low = 1 << (s.bit_length() - 1) if s >= 1 else 0
        bins[low] = bins.get(low, 0.0) + n
    lines = [f"flow sizes ({unit}, power-of-two bins: flows of at least that size)"]
    lines += bars([(f">= {low}", n) for low, n in sorted(bins.items())])
    return lines


def _range(answer: dict, digits: int = 3) -> str | None:
    """``[2.1, 2.6]`` from an answer's ``lower``/``upper`` (None without)."""
    lo, hi = answer.get("lower"), answer.get("upper")
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return None
    return f"[{_number(round(lo, digits))}, {_number(round(hi, digits))}]"


def _bounds(answer: dict) -> str:
    """``; truth in [2.1, 2.6]`` ('' without bounds)."""
    found = _range(answer)
    return f"; truth in {found}" if found else ""


def entropy_view(result: dict, names: dict[str, str], key: str) -> list[str]:
    e = result.get("entropy")
    if not isinstance(e, dict):
        return []
    scope = "the last interval" if e.get("scope") == "interval" else "everything so far"
    line = (f"entropy {e.get('bits')} bits (normalized {e.get('normalized')}, 0..1) over "
            f"~{_number(e.get('flows'))} keys in {scope}; exact share "
            f"{100 * float(e.get('exact_share') or 0):.0f}%")
    if "since_start_bits" in e:
        line += f"; since start {e['since_start_bits']} bits"
    lines = [line]
    bounds = _range(e)
    if bounds:
        lines.append(f"truth in {bounds} bits (exact entries known; the rest of the traffic "
                     f"between one key and all keys equal)")
    return lines


def cardinality_view(result: dict, names: dict[str, str], key: str) -> list[str]:
    c = result.get("cardinality")
    if not isinstance(c, dict):
        return []
    lines = [f"distinct {key} keys since start: ~{c.get('estimate')} "
             f"(+- {c.get('stderr')} std. error; merged entries may add at most "
             f"{c.get('over_at_most', 0)}){_bounds(c)}"]
    i = c.get("interval")
    if isinstance(i, dict):
        lines.append(f"in the last interval: ~{i.get('estimate')} (+- {i.get('stderr')})"
                     f"{_bounds(i)}")
    return lines


def flows_view(result: dict, names: dict[str, str], key: str) -> list[str]:
    """A flows task's largest flows: hosts, how long each was seen, size, rate now."""
    top = result.get("top_k") or []
    if not top:
        return ["no active flows"]
    times = result.get("flow_times") or {}
    rows = []
    for k, v in top:
        parts = str(k).split(",")
        seen = times.get(k)
        rows.append([k, hosts_of(",".join(parts[:2]), names),
                     duration(seen[1] - seen[0]) if seen else None,
                     size(v, result.get("increment")), key_rate(result, k)])
    return [f"active flows, largest first ({len(rows)})",
            render_table(["FLOW", "HOSTS", "DURATION", "SINCE START", "NOW"], rows)]


def estimate_of(result: dict, kind: str) -> tuple[float, float, float] | None:
    """(estimate, lower, upper) of an entropy or cardinality result for its interval:
    the interval's figures where the answer has them, else since the start."""
    answer = result.get(kind)
    if not isinstance(answer, dict):
        return None
    if kind != "entropy" and isinstance(answer.get("interval"), dict):
        answer = answer["interval"]
    value = answer.get("bits" if kind == "entropy" else "estimate")
    lo, hi = answer.get("lower", value), answer.get("upper", value)
    if not (isinstance(value, int | float) and isinstance(lo, int | float)
            and isinstance(hi, int | float)):
        return None
    return float(value), float(lo), float(hi)


def band_bar(value: float, lo: float, hi: float, top: float, width: int = BAR_WIDTH) -> str:
    """``|   ---*--      |``: the band [lo, hi] as dashes and the estimate as ``*`` on a
    0..top scale."""
    top = top or 1.0

    def at(x: float) -> int:
        return min(width - 1, max(0, round((width - 1) * x / top)))

    cells = [" "] * width
    for i in range(at(lo), at(hi) + 1):
        cells[i] = "-"
    cells[at(value)] = "*"
    return "|" + "".join(cells) + "|"


def changers_view(result: dict, names: dict[str, str], key: str) -> list[str]:
    changes = result.get("heavy_changers")
    if changes is None:
        return []
    limit = result.get("change_threshold")
    note = result.get("heavy_changers_note")
    if result.get("coverage_changed"):
        note = "the agents covered changed: no change is computed across it"
    if not changes:
        return [f"no heavy changer (change >= {_number(limit)})" if note is None
                else f"no heavy changer: {note}"]
    rows = [[c["key"], hosts_of(c["key"], names), c["before"], c["after"],
             f"{c['change']:+d}", c.get("error")] for c in changes]
    return [f"heavy changers (change >= {_number(limit)} between the last two intervals)",
            render_table([key.upper(), "HOSTS", "BEFORE", "AFTER", "CHANGE", "+-"], rows)]


def spreaders_view(kind: str) -> Callable[[dict, dict[str, str], str], list[str]]:
    title = "sources reaching" if kind == "superspreaders" else "destinations reached by"

    def view(result: dict, names: dict[str, str], key: str) -> list[str]:
        found = result.get(kind)
        if found is None:
            return []
        least = result.get("min_distinct")
        if not found:
            return [f"no {title} {least} or more distinct peers"]
        rows = [[s["key"], names.get(s["key"]), "saturated" if s.get("saturated")
                 else s.get("distinct"), s.get("stderr")] for s in found]
        return [f"{title} at least {least} distinct peers, since the task started",
                render_table(["KEY", "HOST", "DISTINCT", "+-"], rows)]

    return view


VIEWS: dict[str, Callable[[dict, dict[str, str], str], list[str]]] = {
    "flows": flows_view,
    "flow_size": flow_size_view,
    "entropy": entropy_view,
    "cardinality": cardinality_view,
    "heavy_changers": changers_view,
    "superspreaders": spreaders_view("superspreaders"),
    "ddos_victims": spreaders_view("ddos_victims"),
}
