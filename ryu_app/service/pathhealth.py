"""Path health at the controller: localization per ``path_health`` task, the links
view, each pair's path, and ``diagnose``.

``Results.ingest`` calls ``PathHealth.localize(task_id, result)`` for every
global ``path_health`` result before storing it. It maps the result's
``pairs`` (agent names) to the hosts' attachment points (the agent's data IP
or MAC in the topology), takes each pair's path from the controller's own
routing (``ryu_app.paths.routes``), feeds the task's
``ryu_app.paths.localize.Localizer`` and returns the ``links`` list to add to
the result and the ``link_suspect`` / ``link_cleared`` events
(``link``, ``name``, ``loss``, ``confidence``, ``pairs``) to store. A pair's
``sent``/``lost`` are that report interval's counts.
"""

from __future__ import annotations

import threading
from typing import Any

from ryu_app.net.topology import Topology
from ryu_app.paths.localize import Localizer, observations
from ryu_app.paths.routes import (
    PairPath,
    PathCache,
    access_link,
    link_dict,
    link_name,
    parse_link,
    switch_link,
)
from ryu_app.service.registry import host_node

KIND = "path_health"
TCP_KIND = "tcp_health"
BASELINE_RESULTS = 30  # results a pair's baseline loss and RTT are taken over


class PathHealth:
    """Per-task localizers over the service's topology and registry."""

    def __init__(self, topology: Topology, registry: Any) -> None:
        self.topology = topology
        self.registry = registry
        self.cache = PathCache(topology) if topology is not None else None
        self._localizers: dict[str, Localizer] = {}
        #: per task, the path each pair of its latest result was measured over
        self.measured: dict[str, dict[tuple[str, str], PairPath]] = {}
        self._lock = threading.Lock()

    def attach(self) -> dict[str, tuple[int, int]]:
        """Agent name -> (dpid, port) of its host, for the agents the topology places."""
        out: dict[str, tuple[int, int]] = {}
        if self.topology is None:
            return out
        for name, agent in self.registry.agents.items():
            mac = host_node(agent, self.topology)
            host = self.topology.host_by_mac(mac) if mac else None
            if host is not None:
                out[name] = (host.dpid, host.port)
        return out

    def path(self, src: str, dst: str,
             attach: dict[str, tuple[int, int]] | None = None) -> PairPath | None:
        if self.cache is None:
            return None
        return self.cache.path(self.attach() if attach is None else attach, src, dst)

    def links_of(self, a: str, b: str,
                 attach: dict[str, tuple[int, int]] | None = None) -> list[Any]:
        """The links of the pair's round trip (both access links and both directions'
        switch links, with their ports); [] when either host is not located."""
        p = self.path(a, b, attach)
        return [] if p is None else sorted(p.links, key=repr)

    def links_function(self) -> Any:
        """``links_of`` over the hosts' places as they are now (looked up once: a pair
        choice asks for thousands of paths)."""
        attach = self.attach()
        return lambda a, b: self.links_of(a, b, attach)

    def localize(self, task_id: str, result: dict[str, Any]
                 ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """The ``links`` of one global result, and the events it raises."""
        pairs = [p for p in result.get("pairs") or [] if isinstance(p, dict)
                 and isinstance(p.get("src"), str) and isinstance(p.get("dst"), str)]
        attach = self.attach()
        paths = {}
        for row in pairs:
            p = self.path(row["src"], row["dst"], attach)
            if p is not None:
                paths[(row["src"], row["dst"])] = p
        rows, links = observations(pairs, paths)
        # every link is listed, those no pair crosses with pairs: 0
        extra = [switch_link(*link) for link in self.topology.links()] + [
            access_link(name, *at) for name, at in sorted(attach.items())]
        with self._lock:
            loc = self._localizers.setdefault(task_id, Localizer())
            out = loc.update(rows, links, extra)
            self.measured[task_id] = paths
        events: list[tuple[str, dict[str, Any]]] = []
        for kind, states in (("link_suspect", out.raised), ("link_cleared", out.cleared)):
            for s in states:
                events.append((kind, {"link": link_dict(s.key), "name": link_name(s.key),
                                      "loss": round(s.loss, 6),
                                      "confidence": round(s.confidence, 4),
                                      "pairs": s.pairs}))
        published = [dict(s.to_dict(), name=link_name(s.key)) for s in out.links]
        return {"links": published, "located": len(paths), "unlocated": sorted(
            {f"{r['src']}>{r['dst']}" for r in pairs} - {f"{a}>{b}" for a, b in paths})}, \
            events

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._localizers.pop(task_id, None)
            self.measured.pop(task_id, None)

    # ------------------------------------------------------------ views

    def pair_paths(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        """Each pair of a result with its figures and its path (``measure paths ID``)."""
        attach = self.attach()
        suspects = {link_name_of(link) for link in result.get("links") or []
                    if link.get("suspect")}
        out = []
        for row in result.get("pairs") or []:
            p = self.path(row.get("src"), row.get("dst"), attach)
            item = {k: row.get(k) for k in ("src", "dst", "sent", "lost", "loss", "rtt_ms",
                                             "jitter_ms")}
            if p is None:
                item.update(path=None, suspects=[])
            else:
                item.update(p.to_dict())
                item["suspects"] = sorted(link_name(k) for k in p.links
                                          if link_name(k) in suspects)
            out.append(item)
        return out


def link_name_of(link: dict[str, Any]) -> str:
    """The ``name`` of a published link (added by ``localize``), or rebuilt from it."""
    if isinstance(link.get("name"), str):
        return link["name"]
    return link_name(parse_link({k: v for k, v in link.items() if k in (
        "host", "switch", "port", "src_switch", "src_port", "dst_switch", "dst_port")}))


def pair_row(result: dict[str, Any] | None, src: str, dst: str) -> dict[str, Any] | None:
    for row in (result or {}).get("pairs") or []:
        if row.get("src") == src and row.get("dst") == dst:
            return row
    return None


def baseline(history: list[dict[str, Any]], src: str, dst: str) -> dict[str, Any]:
    """A pair's recent baseline over older results: its lowest loss and lowest RTT
    median of them (the path at its recent best; a median would take in the fault
    itself once it lasts half the history)."""
    rows = [r for r in (pair_row(h, src, dst) for h in history) if r]
    losses = [float(r["loss"]) for r in rows if isinstance(r.get("loss"), int | float)]
    rtts = [float(r["rtt_ms"]["p50"]) for r in rows
            if isinstance((r.get("rtt_ms") or {}).get("p50"), int | float)]
    return {"results": len(rows), "loss": min(losses) if losses else None,
            "rtt_p50_ms": min(rtts) if rtts else None}


def tcp_between(result: dict[str, Any] | None, addrs: set[str]) -> dict[str, Any] | None:
    """Retransmissions between two hosts (``addrs``: their data addresses) in a
    ``tcp_health`` result: its ``tcp.top_pairs`` rows between them, both directions
    added (counters over the sockets' lives)."""
    rows = [r for r in ((result or {}).get("tcp") or {}).get("top_pairs") or []
            if isinstance(r, dict) and {r.get("src"), r.get("dst")} == addrs]
    if not rows:
        return None
    return {"retrans": sum(int(r.get("retrans") or 0) for r in rows),
            "spurious_retrans": sum(int(r.get("spurious_retrans") or 0) for r in rows),
            "lost": sum(int(r.get("lost") or 0) for r in rows), "rows": rows}


def diagnose(src: str, dst: str, path: PairPath | None,
             tasks: list[tuple[str, dict | None, list[dict], dict]], tcp: dict | None,
             avoids: list[dict[str, Any]], can_avoid: Any) -> dict[str, Any]:
    """Is the path ``src`` -> ``dst`` healthy now? ``tasks``: each path_health task's
    id, latest global result, older results (newest first) and the paths its latest
    pairs were measured over; ``tcp``: a tcp_health result; ``avoids``: live
    avoid_link actions; ``can_avoid(link dict)``: whether routing around a link
    isolates nobody."""
    out: dict[str, Any] = {"src": src, "dst": dst, "path": path.to_dict() if path else None}
    lines: list[str] = []
    on_path = {link_name(k) for k in path.links} if path else set()
    measured = None
    for task_id, latest, history, over in tasks:
        row = pair_row(latest, src, dst) or pair_row(latest, dst, src)
        if row is not None:
            a, b = row["src"], row["dst"]
            measured = (task_id, latest, row, baseline(history, a, b))
            if (a, b) in over:  # the suspect may be on the path it was measured over
                on_path |= {link_name(k) for k in over[(a, b)].links}
            break
    # not probed itself (peers: auto probes a covering set): answer from the links on
    # its route when one task measures every one of them
    by_route = None
    if measured is None and on_path:
        for task_id, latest, _, _ in tasks:
            known = {link_name_of(x): x for x in (latest or {}).get("links") or []
                     if x.get("pairs")}
            if on_path <= set(known):
                by_route = (task_id, [known[n] for n in sorted(on_path)])
                break
    suspects = []
    if by_route is not None:
        task_id, route_links = by_route
        suspects = [x for x in route_links if x.get("suspect")]
        kept = 1.0
        for x in route_links:
            kept *= 1.0 - float(x.get("loss") or 0.0)
        added = sum(float(x.get("latency_ms") or 0.0) for x in route_links)
        out.update(task_id=task_id, loss=1.0 - kept)
        lines.append(f"{src} <-> {dst} is not probed itself; task {task_id} measures all "
                     f"{len(route_links)} links of its route: loss {_pct(1.0 - kept)} "
                     f"(the links' added up), added latency {_ms(added)}")
    if measured is not None:
        task_id, latest, row, base = measured
        for link in (latest or {}).get("links") or []:
            if link.get("suspect") and link_name_of(link) in on_path:
                suspects.append(link)
        loss = row.get("loss")
        rtt = (row.get("rtt_ms") or {}).get("p50")
        out.update(task_id=task_id, loss=loss, rtt_ms=row.get("rtt_ms"), baseline=base,
                   sent=row.get("sent"), lost=row.get("lost"))
        lines.append(f"path {row['src']} -> {row['dst']} (task {task_id}): loss "
                     f"{_pct(loss)} (baseline {_pct(base['loss'])}), RTT p50 {_ms(rtt)} "
                     f"(baseline {_ms(base['rtt_p50_ms'])})")
    elif by_route is None:
        lines.append(f"no path_health task measures {src} <-> {dst}: start one with "
                     f"peers: [{dst}] on {src}")
    if path is not None:
        hops = " ".join(f"s{int(h.dpid):x}:{h.in_port}>{h.out_port}" for h in path.forward)
        lines.append(f"route: {src} {hops} {dst}")
    out["suspects"] = suspects
    for link in suspects:
        lines.append(f"suspect link {link_name_of(link)}: loss {_pct(link.get('loss'))}, "
                     f"confidence {link.get('confidence', 0):.2f}")
    out["tcp"] = tcp
    if tcp is not None:
        lines.append(f"TCP between {src} and {dst}: {tcp['retrans']} retransmitted segments "
                     f"({tcp['spurious_retrans']} of them spurious: the receiver had them)")
    named = {link_name_of(s) for s in suspects}
    live = [a for a in avoids if a.get("target") in on_path | named]
    out["avoid_link"] = {"active": live, "possible": {
        link_name_of(s): bool(can_avoid(s)) for s in suspects}}
    for a in live:
        lines.append(f"avoid_link action {a.get('id')} routes around {a.get('target')} "
                     f"until {a.get('expires')}")
    for name, ok in out["avoid_link"]["possible"].items():
        if not any(a.get("target") == name for a in live):
            lines.append(f"avoid_link on {name}: "
                         + ("possible (an alternative path exists)" if ok
                            else "not possible (no alternative path)"))
    degraded = bool(suspects) or (measured is not None and _worse(measured[2], measured[3]))
    out["healthy"] = None if measured is None and by_route is None else not degraded
    if (measured is not None or by_route is not None) and not degraded:
        lines.append("the path is clean: not the network, look at the hosts")
    elif measured is not None and not suspects:
        lines.append("the path is worse than its baseline but no link is a suspect yet")
    out["lines"] = lines
    return out


def _worse(row: dict[str, Any], base: dict[str, Any]) -> bool:
    loss = row.get("loss") or 0.0
    if loss > max(0.01, 2 * (base["loss"] or 0.0)):
        return True
    rtt, brtt = (row.get("rtt_ms") or {}).get("p50"), base["rtt_p50_ms"]
    return bool(rtt and brtt and rtt > 2 * brtt + 1.0)


def _pct(v: Any) -> str:
    return "n/a" if not isinstance(v, int | float) else f"{100 * v:.2f}%"


def _ms(v: Any) -> str:
    return "n/a" if not isinstance(v, int | float) else f"{v:.2f} ms"
