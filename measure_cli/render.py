"""Text rendering for the ``measure`` CLI: the API's JSON in, lines for people out.

Plain functions, no I/O, so tests check them without a controller. The
choices a reader sees:

- hosts are named as agents name them (``h5``), next to MACs and IPs;
- times are local wall-clock times (``14:03:07``), ages in seconds;
- a result's heading says what the task measures (heavy hitters, flow sizes,
  port scans, counts) and, when nothing qualifies, why (the threshold);
- history rows are per interval (what arrived since the previous row), the
  cumulative total beside it;
- a task scoped to some hosts counts the agents of its scope only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from measure_cli import views
from measure_cli.table import render_table

__all__ = ["render_table"]  # re-exported: callers import it from here

KIND_TITLES = {"heavy_hitters": "heavy hitters", "flow_size": "flow sizes",
               "port_scan": "port scans", "counter": "counts", "bandwidth": "bandwidth"}


def clock(ts: Any) -> str:
    """An epoch time as local ``HH:MM:SS`` ('-' when absent)."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def agent_names(agents: list[dict]) -> dict[str, str]:
    """Agent name by every way a host is referred to: name, data IP, MAC."""
    names: dict[str, str] = {}
    for a in agents:
        for ref in (a.get("name"), a.get("data_ip"), a.get("host"), a.get("mac")):
            if isinstance(ref, str) and ref:
                names[ref] = a["name"]
    return names


def in_scope(task: dict, agents: list[dict]) -> set[str] | None:
    """The agent names a task (a ``GET tasks`` record or the task itself) is scoped
    to; None for a global task."""
    scope = (task.get("task") or task).get("scope", "global")
    if not isinstance(scope, list):
        return None
    names = agent_names(agents)
    return {names.get(str(ref), str(ref)) for ref in scope}


def render_tasks(tasks: list[dict], agents: list[dict] | None = None) -> str:
    if not tasks:
        return "no tasks"
    rows = []
    for t in tasks:
        states = t.get("agents") or {}
        scope = in_scope(t, agents or [])
        counted = states if scope is None else {n: s for n, s in states.items() if n in scope}
        total = len(states) if scope is None else len(scope)
        ok = sum(1 for v in counted.values() if v == "ok")
        where = "global" if scope is None else ",".join(sorted(scope))
        rows.append([t["id"], t["name"], t["kind"], t["status"], where,
                     f"{ok}/{total}" if total and t["kind"] != "bandwidth" else None,
                     t.get("last_error")])
    return render_table(["ID", "NAME", "KIND", "STATUS", "SCOPE", "AGENTS OK", "ERROR"], rows)


def _threshold_text(result: dict, rate: dict | None = None) -> str:
    """The threshold against the total since start, or against an interval's (``rate``)."""
    threshold = result.get("threshold") or {}
    unit = "bytes" if result.get("increment") == "bytes" else "packets"
    total = _number(result.get("total", 0))
    if rate is not None:
        total = _number(rate.get("bytes" if unit == "bytes" else "packets", 0))
    if "fraction" in threshold:
        return f">= {threshold['fraction'] * 100:g}% of {total} {unit}"
    if "absolute" in threshold:
        return f">= {_number(threshold['absolute'])} {unit}"
    return f"the largest of {total} {unit}"


def _key_table(result: dict, pairs: list[tuple[str, Any]], names: dict[str, str],
               key: str) -> str:
    """Keys with the hosts they name ('?': an address with no agent), counts, shares (and
    the rate in the last interval when the result has one)."""
    if isinstance(result.get("rate"), dict):
        return views.keys_table(result, pairs, names, key)
    total = result.get("total") or 0
    rows = []
    for k, v in pairs:
        hosts = [names.get(part, "") for part in str(k).split(",")]
        who = " -> ".join(h or "?" for h in hosts) if any(hosts) else None
        share = f"{100 * v / total:.1f}%" if total else None
        rows.append([k, who, _number(v), share])
    return render_table([key.upper(), "HOSTS", "COUNT", "SHARE"], rows)


def render_result(result: dict, task: dict | None = None,
                  agents: list[dict] | None = None) -> str:
    """A measurement or bandwidth result: a heading for the task's kind, then tables."""
    task = task or {}
    kind = result.get("kind") or task.get("kind") or "counter"
    host = result.get("host", "*")
    where = "all hosts" if host == "*" else f"host {host}"
    name = f" ({task['name']})" if task.get("name") else ""
    lines = [f"task {result.get('task_id')}{name}: {KIND_TITLES.get(kind, kind)}, {where}, "
             f"interval ending {clock(result.get('interval_end'))} "
             f"({_number(result.get('age', '-'))} s ago)"]
    if kind == "bandwidth":
        lines.append(render_bandwidth(result))
        return "\n".join(lines)
    if "covered" in result:
        missing = result.get("missing") or []
        covered = result["covered"] or []
        n_cov = result.get("covered_count", len(covered))
        n_miss = result.get("missing_count", len(missing))
        more = " ..." if n_cov > len(covered) else ""  # a capped list: the first names
        text = f"covered {n_cov}" + (f": {', '.join(covered)}{more}" if covered else "")
        more = " ..." if n_miss > len(missing) else ""
        lines.append(text + (f"  missing {n_miss}: {', '.join(missing)}{more}" if missing
                             else "  (complete)"))
    totals = [f"{n} {_number(result[n])}" for n in ("packets", "bytes") if n in result]
    distinct = result.get("distinct")
    if isinstance(distinct, dict) and "estimate" in distinct:
        totals.append(f"distinct keys ~{distinct['estimate']}")
    if totals:
        lines.append("  ".join(totals))
    now = views.rate_line(result) if isinstance(result.get("rate"), dict) else None
    if now:
        lines.append(now)
    names = agent_names(agents or [])
    key = str(result.get("key") or (task.get("task") or {}).get("key") or "key")
    if isinstance(result.get("partial"), dict):
        lines.append(_partial_text(result["partial"], key))
        return "\n".join(lines)
    if kind == "heavy_hitters":
        rate = result.get("rate")
        if isinstance(rate, dict):
            heavy_now = sorted((rate.get("heavy_hitters") or {}).items(),
                               key=lambda kv: (-kv[1], kv[0]))
            if heavy_now:
                lines += [f"heavy now ({_threshold_text(result, rate)} in the last interval)",
                          _key_table(result, heavy_now, names, key)]
            else:
                lines.append(f"nothing heavy now: no key reached "
                             f"{_threshold_text(result, rate)[3:]} in the last interval")
        hh = sorted((result.get("heavy_hitters") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        since = " since the task started" if isinstance(rate, dict) else ""
        if hh:
            lines += [f"heavy hitters{since} ({_threshold_text(result)})",
                      _key_table(result, hh, names, key)]
        else:
            lines.append(f"no heavy hitters{since}: no key reached "
                         f"{_threshold_text(result)[3:]}")
    elif kind == "port_scan":
        scanners = result.get("scanners")
        if scanners is None:  # a per-host summary: {src: distinct ports seen here}
            scanners = result.get("scan") or {}
        if scanners:
            lines.append("port scans (distinct destination ports per source in one window)")
            lines.append(render_table(["SRC", "HOST", "PORTS"],
                                      [[s, names.get(s), n] for s, n in sorted(
                                          scanners.items(), key=lambda kv: (-_len(kv[1]),
                                                                            kv[0]))]))
        else:
            lines.append("no port scan seen in this interval")
    else:
        answer = result.get("flow_size") if kind == "flow_size" else None
        if isinstance(answer, dict):  # the elastic counter's answer: largest flows, histogram
            top = sorted(((e[0], e[1]) for e in answer.get("largest") or []),
                         key=lambda kv: (-kv[1], _key_order(kv[0])))
            lines.append(_histogram_text(answer, result))
        else:
            top = [(k, v) for k, v in result.get("top_k") or []]
        lines += views.VIEWS.get(kind, lambda *_: [])(result, names, key)
        title = "flows, largest first" if kind == "flow_size" else "top keys"
        if kind == "flows":
            pass  # its view lists the flows
        elif top:
            lines += [f"{title} ({len(top)})", _key_table(result, top, names, key)]
        else:
            lines.append("no flows counted yet" if kind == "flow_size" else "nothing counted yet")
    return "\n".join(lines)


def _partial_text(partial: dict, key: str) -> str:
    """A coarser key's answer (``?key=``): sizes with their bounds."""
    rows = [[r.get("key"), _number(r.get("size")), _number(r.get("lower")),
             _number(r.get("upper")), "yes" if r.get("exact") else "no"]
            for r in partial.get("keys") or []]
    head = (f"by {key}, from the {partial.get('of')} task's heavy entries (truth in "
            f"[lower, upper]; {_number(partial.get('light_total', 0))} in the light part)")
    if not rows:
        return head + "\nnothing counted yet"
    return head + "\n" + render_table([key.upper(), "SIZE", "LOWER", "UPPER", "EXACT"], rows)


def _key_order(key: str) -> tuple:
    """Keys in address order (``10.0.0.9`` before ``10.0.0.10``) for equal counts."""
    return tuple(int(p) if p.isdigit() else 0 for p in key.replace(",", ".").split("."))


def _histogram_text(answer: dict, result: dict) -> str:
    """``~64 flows; by size: 168 bytes x 64`` from a flow-size answer."""
    unit = "bytes" if result.get("increment") == "bytes" else "packets"
    hist = answer.get("histogram") or {}
    ranked = sorted(hist.items(), key=lambda kv: (-float(kv[1]), int(kv[0])))[:5]
    parts = ", ".join(f"{size} {unit} x {_number(n)}" for size, n in ranked)
    more = f" (+{len(hist) - 5} sizes)" if len(hist) > 5 else ""
    return f"~{_number(answer.get('flows', 0))} flows; by size: {parts or '-'}{more}"


def _len(value: Any) -> int:
    return len(value) if isinstance(value, list | dict) else int(value or 0)


def render_history(history: dict, kind: str | None = None) -> str:
    """One line per past result, newest first; COUNTED is what arrived in that interval."""
    results = history.get("results", [])
    if not results:
        return f"task {history.get('task_id')}: no results yet"
    if kind in ("entropy", "cardinality"):
        return _estimate_history(history, kind)
    rows = []
    for i, r in enumerate(results):
        total = r.get("total")
        older = results[i + 1].get("total") if i + 1 < len(results) else None
        counted = None
        if isinstance(total, int | float) and isinstance(older, int | float) and total >= older:
            counted = _number(total - older)
        if kind == "heavy_hitters":
            best = sorted((r.get("heavy_hitters") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        else:
            best = [tuple(p) for p in r.get("top_k") or []]
        missing = r.get("missing")
        rows.append([clock(r.get("interval_end")),
                     r.get("covered_count", len(r["covered"]))
                     if isinstance(r.get("covered"), list) else None,
                     r.get("missing_count", len(missing)) if isinstance(missing, list) else None,
                     counted, _number(total),
                     f"{best[0][0]} {_number(best[0][1])}" if best else None])
    top = "TOP HEAVY HITTER" if kind == "heavy_hitters" else "LARGEST"
    return (f"task {history.get('task_id')}  host {history.get('host', '*')}  "
            f"(newest first; COUNTED = in that interval)\n"
            + render_table(["INTERVAL END", "COVERED", "MISSING", "COUNTED", "TOTAL", top],
                           rows))


def _estimate_history(history: dict, kind: str) -> str:
    """Entropy or cardinality per interval with its bounds, drawn as a band (``-``) with
    the estimate (``*``) on one scale from 0, newest first."""
    rows, marks = [], []
    for r in history.get("results", []):
        est = views.estimate_of(r, kind)
        rows.append((r, est))
        if est is not None:
            marks.append(est[2])
    top = max(marks, default=1.0)
    unit = "bits" if kind == "entropy" else "keys"
    table = []
    for r, est in rows:
        missing = r.get("missing")
        if est is None:
            cells: list[Any] = [None, None, None]
        else:
            value, lo, hi = est
            cells = [_number(round(value, 3)), f"{_number(round(lo, 3))}..{_number(round(hi, 3))}",
                     views.band_bar(value, lo, hi, top)]
        table.append([clock(r.get("interval_end")),
                      len(missing) if isinstance(missing, list) else None, *cells])
    what = "entropy (bits)" if kind == "entropy" else "distinct keys"
    return (f"task {history.get('task_id')}  host {history.get('host', '*')}  "
            f"{what} per interval, newest first; band = bounds, * = estimate, "
            f"scale 0..{_number(round(top, 3))} {unit}\n"
            + render_table(["INTERVAL END", "MISSING", "ESTIMATE", "BOUNDS", "CHART"], table))


def render_overlay(overlay: dict) -> str:
    root = overlay.get("root")
    if root is None:
        return f"epoch {overlay.get('epoch', 0)}: no live agents"
    children = overlay.get("children", {})
    lines = [f"epoch {overlay.get('epoch')}  depth {overlay.get('depth')}  "
             f"fanout {overlay.get('fanout')}  agents {len(overlay.get('parent', {}))}"]

    def walk(node: str, prefix: str, last: bool, top: bool) -> None:
        lines.append(node if top else f"{prefix}{'`-- ' if last else '|-- '}{node}")
        kids = children.get(node, [])
        for i, kid in enumerate(kids):
            walk(kid, "" if top else prefix + ("    " if last else "|   "),
                 i == len(kids) - 1, False)

    walk(root, "", True, True)
    if overlay.get("unlocated"):
        lines.append(f"not located in the topology: {', '.join(overlay['unlocated'])}")
    return "\n".join(lines)


def render_topology(topo: dict, agents: list[dict] | None = None) -> str:
    names = agent_names(agents or [])
    out = [render_table(["SWITCH", "PORTS"], [[s["dpid"], ",".join(map(str, s["ports"]))]
                                              for s in topo.get("switches", [])])]
    out.append(render_table(["LINK", "PORT", "TO", "PORT"],
                            [[lk["src"]["dpid"], lk["src"]["port"], lk["dst"]["dpid"],
                              lk["dst"]["port"]] for lk in topo.get("links", [])]))
    rows = []
    for h in topo.get("hosts", []):
        ips = h.get("ips", [])
        name = names.get(h["mac"]) or next((names[ip] for ip in ips if ip in names), None)
        rows.append([name, h["mac"], ",".join(ips), h["dpid"], h["port"]])
    out.append(render_table(["HOST", "MAC", "IPS", "SWITCH", "PORT"], rows))
    return "\n\n".join(out)


def render_flows(reply: dict, agents: list[dict] | None = None) -> str:
    """Active flows (``GET flows``) as a table: one row per flow, largest first, with the
    hosts' agent names, how long the flow has been seen (its flow cache record's first to
    last packet) and its rate in the last interval ('-': not listed)."""
    names = agent_names(agents or [])
    by = reply.get("by", "bytes")
    head = (f"task {reply.get('task_id')}  active flows by {by}  covered "
            f"{','.join(reply.get('covered') or []) or '-'}")
    sampled = reply.get("sampled")
    if sampled:
        head += (f"  sampled p={sampled['probability']:g} ({sampled['mode']}, "
                 f"+-{100 * (sampled.get('relative_bound') or 0):.1f}% of packets)")
    rows = []
    for row in reply.get("flows", []):
        parts = row["flow"].split(",")
        if len(parts) != 5:
            parts = [row["flow"], "", "", "", ""]
        hosts = views.hosts_of(f"{parts[0]},{parts[1]}", names)
        now = views.bitrate(row["bps"]) if row.get("bps") is not None else \
            views.pktrate(row["pps"]) if row.get("pps") is not None else None
        rows.append([*parts, hosts, views.duration(row.get("duration")), row.get(by), now])
    if not rows:
        return head + "\nno active flows"
    return head + "\n" + render_table(["SRC", "DST", "PROTO", "SPORT", "DPORT", "HOSTS",
                                        "DURATION", f"{by.upper()} (SINCE START)", "NOW"],
                                       rows)


def render_agents(agents: list[dict]) -> str:
    """Registered agents with their monitor's cost (CPU share, memory, packets missed)."""
    if not agents:
        return "no agents"

    def cost(a: dict, name: str) -> Any:
        return (a.get("monitor") or {}).get(name)

    rows = []
    for a in agents:
        rss = cost(a, "rss_bytes")
        cpu = cost(a, "cpu_seconds_per_s")
        rows.append([a["name"], "yes" if a["up"] else "no", a["url"], a.get("data_ip"),
                     a.get("host") or a.get("mac"), a.get("parent"),
                     None if cpu is None else f"{100 * cpu:.1f}%",
                     None if rss is None else round(rss / 1e6, 1), cost(a, "missed")])
    return render_table(["NAME", "UP", "URL", "DATA IP", "MAC", "PARENT", "MONITOR CPU",
                         "RSS MB", "MISSED"], rows)


def event_text(e: dict) -> str:
    """One event's detail in words."""
    kind = e.get("kind")
    if kind == "heavy_hitter":
        return f"{e.get('key')} became a heavy hitter with {_number(e.get('value'))}"
    if kind == "port_scan":
        dsts = ", ".join(e.get("dsts") or []) or "?"
        return f"{e.get('src')} touched {e.get('ports')} ports of {dsts}"
    if kind == "action":
        what = f"{e.get('action')} {e.get('target')}: {e.get('state')}"
        if e.get("reason"):
            what += f" ({e['reason']})"
        return what + f" [action {e.get('action_id')}, cause event {e.get('cause')}]"
    if kind in ("link_suspect", "link_cleared"):
        what = "is a suspect" if kind == "link_suspect" else "is clear again"
        return (f"link {e.get('name')} {what}: loss {100 * (e.get('loss') or 0):.2f}%, "
                f"confidence {e.get('confidence') or 0:.2f}")
    if kind == "coverage":
        missing = e.get("missing") or []
        return (f"{e.get('covered')} agents covered; "
                + (f"missing {', '.join(missing)}" if missing else "none missing"))
    detail = {k: v for k, v in e.items() if k not in ("id", "ts", "task_id", "kind")}
    return json.dumps(detail, sort_keys=True)


def render_events(events: list[dict], header: bool = True) -> str:
    if not events:
        return "no events" if header else ""
    table = render_table(["ID", "TIME", "TASK", "KIND", "WHAT"],
                         [[e["id"], clock(e.get("ts")), e["task_id"], e["kind"], event_text(e)]
                          for e in events])
    return table if header else "\n".join(table.splitlines()[1:])


def render_actions(actions: list[dict]) -> str:
    """Reactions taken: one row per action, newest first."""
    if not actions:
        return "no actions"
    rows = [[a["id"], a["task_id"], a["action"], a["mode"], a["status"], a.get("target"),
             a.get("cause"), a.get("dpid"), json.dumps(a.get("match") or {}, sort_keys=True),
             clock(a.get("expires"))] for a in actions]
    return render_table(["ID", "TASK", "ACTION", "MODE", "STATUS", "TARGET", "CAUSE", "SWITCH",
                         "MATCH", "EXPIRES"], rows)


BW_NOTES = {
    "mbit_s": "the estimate",
    "range_mbit_s": "the search ended between these rates",
    "capacity_mbit_s": "path capacity from one back-to-back train's dispersion (the "
                       "search's first upper bound; reads low on a busy or virtual path)",
    "probe_bytes": "bytes the probe sent",
}


def render_bandwidth(reply: dict) -> str:
    """A headline (what was measured, the figure) and the body as FIELD/VALUE rows."""
    head = (f"{reply.get('label') or reply.get('method', 'bandwidth')} "
            f"{reply.get('src')} -> {reply.get('dst')}: {reply.get('mbit_s')} Mbit/s")
    if reply.get("at_least"):
        head += "\n(at least: the path takes more than the probe may send)"
    keys = [k for k in ("src", "dst", "method", "mbit_s", "mbytes_s", "range_mbit_s",
                        "duration_s", "probe_bytes", "streams", "label") if k in reply]
    keys += sorted(k for k in reply if k not in keys and k != "fleets")
    rows = []
    for k in keys:
        value = reply[k]
        if isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, int | float) for v in value):
            value = f"{value[0]} .. {value[1]}"
        elif isinstance(value, list | dict):
            value = json.dumps(value, sort_keys=True)
        rows.append([k, value, BW_NOTES.get(k, "")])
    return head + "\n" + render_table(["FIELD", "VALUE", "NOTE"], rows)
