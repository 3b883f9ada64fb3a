"""Reactions: a measurement event + the topology + the task's ``on:`` -> OpenFlow plans.

Plain module (no Ryu import). ``plan`` turns one event of a task and one of
its ``Reaction`` entries into an ``ActionPlan``: the switch, the match, the
priority, the instructions and the hard timeout of the flow(s) to install,
or raises ``Refused`` naming why it must not act. ``ryu_app/reactions/actions.py``
keeps the plans (SQLite, caps, expiry) and the Ryu shim turns the plan's
``FlowSpec``/``MeterSpec`` into flow-mods and meter-mods.

Where a reaction acts: the offending key's source host's edge switch, in
table 0 (``SRC_TABLE``), at ``ACTION_PRIORITY`` of the action (above the
forwarding source flows), matching its ingress port, IPv4 and the key's
fields plus the task's filter (protocol, ports); a port scan's source is
matched as a whole (all its IPv4), since the task's filter only says which
ports count as scanned. A key without a source (``dst``, ``dst_dport``: a
victim) acts at the destination's edge switch without an ingress port. Per
action:

- ``block``: no instructions (drop);
- ``rate_limit``: OpenFlow 1.3 meter (kbps, drop band), then table 1;
- ``mark``: ``set_field ip_dscp`` or ``set_queue``, then table 1;
- ``avoid_link`` (on ``link_suspect``): no flow of its own. The plan names the
  switch link; while the action lives, unicast routing leaves it out
  (``Topology.avoided``) and the forwarding flows are dropped so traffic
  re-learns the paths around it. A host's access link, or a link whose
  absence would cut the switches apart, is refused.
- ``mirror``: a copy to the tap host. On the tap's own switch the copy
  leaves by the tap's port; elsewhere the copy's ``eth_dst`` is set to the
  tap's MAC and sent towards the tap's switch (the forwarding tables carry
  it on), then ``eth_dst`` is set back to the original destination's MAC
  before table 1 forwards the original. That needs the destination host to
  be known (a key or filter with a single destination).

Safety, decided here: a target inside a protected network (the management
network, the controller's address, ``protect:`` of the policy or
``MEASURE_PROTECT``) is refused; ``block`` and ``rate_limit`` get exemption
flows one priority higher so the agent's and controller's control ports (TCP
8000, 8080, 6653) keep flowing, towards the protected networks only. Every plan has an ``ident``:
the same task, reaction and target give the same ident, so a repeated event
extends the one action instead of adding another.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from measure_model.reaction_rows import Reaction
from measure_model.task import Filter, Task
from ryu_app.net.forwarding import DST_TABLE, FLOW_PRIORITY, SRC_TABLE
from ryu_app.net.topology import Host, Topology
from ryu_app.paths.routes import ACCESS_LINK, link_dict, link_name, parse_link

REACTION_PRIORITY = FLOW_PRIORITY + 1000
#: one priority per action, so two actions on the same match never replace each other's
#: flow: the stronger one wins (block over rate_limit over mirror over mark)
ACTION_PRIORITY = {"mark": REACTION_PRIORITY, "mirror": REACTION_PRIORITY + 1,
                   "rate_limit": REACTION_PRIORITY + 2, "block": REACTION_PRIORITY + 3}
EXEMPT_PRIORITY = REACTION_PRIORITY + 10
REACTION_COOKIE = 0x52454143 << 32  # "REAC" in the upper 32 bits, the action id below
CONTROL_PORTS = (8000, 8080, 6653)
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
IP_PROTO = {"icmp": 1, "tcp": 6, "udp": 17}
#: the address a spread event's single-address key names
SPREAD_SIDE = {"superspreader": "src", "ddos_victim": "dst"}
METER_BURST_SECONDS = 1.0


class Refused(Exception):
    """The reaction must not (or cannot) act; the message says why."""


@dataclass(frozen=True)
class Output:
    """Send the frame out of ``port``."""

    port: int


@dataclass(frozen=True)
class SetField:
    """Rewrite one header field (``ip_dscp``, ``eth_dst``, ...)."""

    field: str
    value: Any


@dataclass(frozen=True)
class SetQueue:
    """Put the frame on egress queue ``queue``."""

    queue: int


FlowAction = Output | SetField | SetQueue


def action_to_json(a: FlowAction) -> list[Any]:
    """The stored form of an action: ``["output", port]``, ``["set_field", f, v]``,
    ``["set_queue", q]`` (the form the actions table has always held)."""
    if isinstance(a, Output):
        return ["output", a.port]
    if isinstance(a, SetField):
        return ["set_field", a.field, a.value]
    return ["set_queue", a.queue]


def action_from_json(obj: list[Any]) -> FlowAction:
    name, *args = obj
    if name == "output":
        return Output(int(args[0]))
    if name == "set_field":
        return SetField(str(args[0]), args[1])
    if name == "set_queue":
        return SetQueue(int(args[0]))
    raise ValueError(f"unknown flow action {name!r}")


@dataclass(frozen=True)
class FlowSpec:
    """One flow in table 0: ``actions`` are applied, ``meter`` and ``goto`` add
    instructions; no actions and no goto means drop. ``ryu_app.ofmsg`` builds it."""

    dpid: int
    priority: int
    match: dict[str, Any]
    actions: tuple[FlowAction, ...] = ()
    meter: int | None = None
    goto: int | None = None
    table: int = SRC_TABLE

    def to_dict(self) -> dict[str, Any]:
        return {"dpid": self.dpid, "priority": self.priority, "match": dict(self.match),
                "actions": [action_to_json(a) for a in self.actions], "meter": self.meter,
                "goto": self.goto, "table": self.table}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> FlowSpec:
        return cls(dpid=int(obj["dpid"]), priority=int(obj["priority"]), match=dict(obj["match"]),
                   actions=tuple(action_from_json(a) for a in obj["actions"]),
                   meter=obj["meter"], goto=obj["goto"], table=int(obj["table"]))


@dataclass(frozen=True)
class MeterSpec:
    """An OpenFlow 1.3 meter with one drop band of ``kbps`` (burst ``burst_kb``)."""

    dpid: int
    meter_id: int
    kbps: int
    burst_kb: int


@dataclass
class ActionPlan:
    """What one reaction does for one event (see the module docstring)."""

    ident: str
    task_id: str
    action: str
    mode: str
    target: str
    duration: int | None
    dpid: int | None = None
    match: dict[str, Any] = field(default_factory=dict)
    flows: list[FlowSpec] = field(default_factory=list)
    mbit: float | None = None
    url: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def event_fields(task: Task, event: dict[str, Any]) -> dict[str, Any]:
    """The key's header fields an event names: ``src``, ``dst``, ``proto``, ports."""
    if event.get("kind") == "port_scan":
        return {"src": event["src"]}
    key = str(event.get("key", ""))
    parts = key.split(",")
    side = SPREAD_SIDE.get(str(event.get("kind")))
    if side is not None and len(parts) == 1:  # the spreading source, or the victim
        parts, layout_key = [key], side
    else:
        layout_key = task.key or ""
    layout = {"src": ("src",), "dst": ("dst",), "src_dst": ("src", "dst"),
              "src_dport": ("src", "dport"), "dst_dport": ("dst", "dport"),
              "five_tuple": ("src", "dst", "proto", "sport", "dport")}.get(layout_key, ())
    if len(parts) != len(layout):
        raise Refused(f"event key '{key[:80]}' does not fit key type {task.key}")
    out: dict[str, Any] = dict(zip(layout, parts, strict=True))
    for name in ("src", "dst"):
        if name in out:
            try:
                out[name] = str(ipaddress.ip_address(out[name]))
            except ValueError:
                raise Refused(f"event key '{key[:80]}': {name} is not an address") from None
    return out


def _proto_number(proto: Any) -> int | None:
    if proto in (None, ""):
        return None
    if isinstance(proto, str) and proto in IP_PROTO:
        return IP_PROTO[proto]
    try:
        return int(proto)
    except (TypeError, ValueError):
        raise Refused(f"protocol '{proto}' is not a protocol name or number") from None


def _port_value(spec: Any) -> int | None:
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str) and spec.isdigit():
        return int(spec)
    return None  # a range has no single OpenFlow match


def flow_match(fields: dict[str, Any], flt: Filter | None) -> dict[str, Any]:
    """An OpenFlow 1.3 match (Ryu ``OFPMatch`` names) for a key's fields and a task filter."""
    addrs: dict[str, str] = {}
    for side in ("src", "dst"):
        given = getattr(flt, side, None) if flt is not None else None
        if side in fields:
            addrs[side] = fields[side]
        elif given and "/" not in given:  # one host of the filter; a prefix has no one match
            addrs[side] = given
    v6 = any(":" in a for a in addrs.values())
    family = "ipv6" if v6 else "ipv4"
    match: dict[str, Any] = {"eth_type": ETH_TYPE_IPV6 if v6 else ETH_TYPE_IPV4}
    for side, addr in addrs.items():
        if (":" in addr) == v6:  # a filter of the other family cannot hold with this key
            match[f"{family}_{side}"] = addr
    proto = _proto_number(fields.get("proto") or (flt.proto if flt is not None else None))
    if proto is not None:
        match["ip_proto"] = proto
    if proto in (6, 17):
        l4 = "tcp" if proto == 6 else "udp"
        for port in ("sport", "dport"):
            value = _port_value(fields.get(port, getattr(flt, port, None) if flt else None))
            if value is not None and not (port in fields and value == 0):
                match[f"{l4}_{'src' if port == 'sport' else 'dst'}"] = value
    return match


def protected_networks(protect: tuple[str, ...] | list[str],
                       resolve: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Protected entries (names resolved by ``resolve(name) -> ip | None``) as networks."""
    out = []
    for item in protect:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        ip = resolve(item)
        if ip is not None:
            out.append(ipaddress.ip_network(ip))
    return out


def is_protected(ip: str, networks: list) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in networks)


def _exemptions(dpid: int, base: dict[str, Any], control: list) -> list[FlowSpec]:
    """Flows that keep control traffic of a blocked/limited host going (to table 1):
    TCP to or from a control port, and only towards ``control`` (the protected
    networks: the management network, the controller, ``protect:`` entries), so a
    blocked host cannot reach anything else through a control port number."""
    if any(k.startswith(("tcp_", "udp_")) for k in base) or base.get("ip_proto") not in (
            None, 6):
        return []  # a flow-specific match never covers control ports to begin with
    v6 = base.get("eth_type") == ETH_TYPE_IPV6
    field_name = "ipv6_dst" if v6 else "ipv4_dst"
    nets = [n for n in control if n.version == (6 if v6 else 4)]
    flows = []
    for net in nets:
        dst = str(net.network_address) if net.prefixlen == net.max_prefixlen else \
            (str(net.network_address), str(net.netmask))
        for port in CONTROL_PORTS:
            for side in ("tcp_dst", "tcp_src"):
                match = {**base, "ip_proto": 6, side: port, field_name: dst}
                flows.append(FlowSpec(dpid, EXEMPT_PRIORITY, match, goto=DST_TABLE))
    return flows


def plan_avoid(task_id: str, index: int, reaction: Reaction, event: dict[str, Any],
               topology: Topology, avoided: frozenset = frozenset()) -> ActionPlan:
    """``avoid_link`` for a ``link_suspect`` event: route unicast around the event's switch
    link. Refused for a host's access link and wherever leaving the link out (with the
    links ``avoided`` already) would cut any switch off: it never isolates a host."""
    try:
        key = parse_link(event.get("link"))
    except ValueError as exc:
        raise Refused(str(exc)) from None
    name = link_name(key)
    if key[0] == ACCESS_LINK:
        raise Refused(f"{name} is host {key[1]}'s access link: there is no other path, "
                      "avoiding it would isolate the host")
    edge = frozenset({key[1], key[3]})
    if topology.link_port(key[1], key[3]) != key[2] or \
            topology.link_port(key[3], key[1]) != key[4]:
        raise Refused(f"{name} is not a link of the topology")
    if not topology.connected_without(set(avoided) | {edge}):
        raise Refused(f"no alternative path around {name}: avoiding it would cut switches "
                      "(and their hosts) off")
    p = ActionPlan(ident=f"{task_id}/{index}/avoid_link/{name}", task_id=task_id,
                   action="avoid_link", mode=reaction.mode, target=name,
                   duration=reaction.duration)
    p.detail.update(link=link_dict(key), avoid=sorted(edge))
    return p


def plan(task_id: str, task: Task, index: int, reaction: Reaction, event: dict[str, Any],
         topology: Topology, protected: list, tap: Host | None = None,
         locate: Callable[[str], Host | None] | None = None,
         avoided: frozenset = frozenset(),
         vouch: Callable[[str], str | None] | None = None) -> ActionPlan:
    """Decide what ``reaction`` (``task.on[index]``) does for ``event``; raise ``Refused``.

    ``vouch(src)`` gives a reason not to act on a source address (None: it passes the
    source guard, so the packets really came from its owner's port); it is asked before
    a ``block``, ``rate_limit`` or ``mark`` of a source.

    ``locate(ip)`` finds a host's attachment point (default ``topology.host_by_ip``; the
    controller also tries the MAC its agent registered); ``avoided``: the switch links
    live ``avoid_link`` actions already route around."""
    if reaction.action == "avoid_link":
        return plan_avoid(task_id, index, reaction, event, topology, avoided)
    locate = locate or topology.host_by_ip
    try:
        fields = event_fields(task, event)
    except Refused:
        if reaction.action != "notify":
            raise
        fields = {}
    target = fields.get("src") or fields.get("dst") or str(event.get("key")
                                                           or event.get("name") or "")
    where = ",".join(f"{k}={v}" for k, v in sorted(fields.items()))
    ident = f"{task_id}/{index}/{event.get('kind')}/{where}"
    base = ActionPlan(ident=ident, task_id=task_id, action=reaction.action, mode=reaction.mode,
                      target=target, duration=reaction.duration)
    if reaction.action == "notify":
        base.url = reaction.url
        return base
    for name in ("src", "dst"):
        if name in fields and is_protected(fields[name], protected):
            if name == "src" or reaction.action != "mirror":
                raise Refused(f"{name} {fields[name]} is protected")
    if "src" in fields and vouch is not None and reaction.action in (
            "block", "rate_limit", "mark"):
        reason = vouch(fields["src"])
        if reason is not None:
            raise Refused(f"src {fields['src']} {reason}")
    if "src" in fields:
        host = locate(fields["src"])
        where = "src"
    else:
        host = locate(fields.get("dst", ""))
        where = "dst"
    if host is None:
        raise Refused(f"{where} {fields.get(where)} has no known attachment point")
    # a scanner is blocked (limited, marked) as a whole; a heavy key as its flow
    match = flow_match(fields, None if event.get("kind") == "port_scan" else task.filter)
    if where == "src":
        match = {"in_port": host.port, **match}
    base.dpid, base.match = host.dpid, match
    flows: list[FlowSpec] = []
    if reaction.action == "block":
        flows.append(FlowSpec(host.dpid, ACTION_PRIORITY["block"], match))
        flows += _exemptions(host.dpid, match, protected)
    elif reaction.action == "rate_limit":
        flows.append(FlowSpec(host.dpid, ACTION_PRIORITY["rate_limit"], match, meter=0,
                              goto=DST_TABLE))
        flows += _exemptions(host.dpid, match, protected)
        base.mbit = reaction.mbit
    elif reaction.action == "mark":
        if reaction.dscp is not None:
            act: FlowAction = SetField("ip_dscp", reaction.dscp)
        elif reaction.queue is not None:
            act = SetQueue(reaction.queue)
        else:  # the task model refuses a mark with neither
            raise Refused("mark needs dscp or queue")
        flows.append(FlowSpec(host.dpid, ACTION_PRIORITY["mark"], match, actions=(act,),
                              goto=DST_TABLE))
    elif reaction.action == "mirror":
        flows.append(_mirror_flow(host, match, tap, reaction, topology, locate))
        base.detail["to"] = reaction.to
    base.flows = flows
    return base


def _mirror_flow(src: Host, match: dict[str, Any], tap: Host | None, reaction: Reaction,
                 topology: Topology, locate: Callable[[str], Host | None]) -> FlowSpec:
    if tap is None:
        raise Refused(f"tap host {reaction.to} has no known attachment point")
    if tap.dpid == src.dpid:
        return FlowSpec(src.dpid, ACTION_PRIORITY["mirror"], match,
                        actions=(Output(tap.port),),
                        goto=DST_TABLE)
    dst_ip = match.get("ipv4_dst")
    dst = locate(dst_ip) if dst_ip else None
    if dst is None:
        raise Refused("a mirror to a tap on another switch needs the flow's destination host "
                      "(a key or filter with one destination)")
    path = topology.shortest_path(src.dpid, tap.dpid)
    port = topology.link_port(src.dpid, path[1]) if path and len(path) > 1 else None
    if port is None:
        raise Refused(f"no path from switch {src.dpid} to the tap's switch {tap.dpid}")
    actions = (SetField("eth_dst", tap.mac), Output(port), SetField("eth_dst", dst.mac))
    return FlowSpec(src.dpid, ACTION_PRIORITY["mirror"], match, actions=actions,
                    goto=DST_TABLE)


def meter_for(dpid: int, meter_id: int, mbit: float) -> MeterSpec:
    """The meter of a ``rate_limit`` plan: ``mbit`` in kbps, ``METER_BURST_SECONDS`` of burst."""
    kbps = max(1, int(round(mbit * 1000)))
    return MeterSpec(dpid, meter_id, kbps, max(1, int(kbps * METER_BURST_SECONDS)))


def threshold_crossings(result: dict[str, Any], previous: set[str], above: int) -> dict[str, int]:
    """Keys whose count in the result's window reached ``above`` and were below before."""
    counts = (result.get("window") or {}).get("counts") or {}
    if not counts:
        counts = {k: v for k, v in result.get("top_k") or [] if isinstance(k, str)}
    return {k: int(v) for k, v in sorted(counts.items())
            if isinstance(v, int | float) and v >= above and k not in previous}
