"""A small fake OpenFlow 1.3 switch: Ryu message objects in, packet fates out.

Modelled on FAUCET's ``clib/fakeoftable.py``, much smaller: it applies the
messages that ``ryu_app.ofmsg`` builds (flow-mods with add and cookie/match
deletes, meter-mods, packet-outs) to per-table flow lists, and ``lookup``
walks a packet through the tables the way a switch does (highest priority
first, goto, apply-actions, meter). ``FakeNetwork`` wires several fake
switches along a ``Topology``'s links and hosts, hands every table miss to
the real ``Forwarding`` as a packet-in and applies what comes back, so a
unit test sees where a frame is delivered, how often, and how many
packet-ins it took.

Only the fields the controller matches on are understood: in_port,
eth_src/eth_dst/eth_type, ipv4/ipv6 src/dst (exact or ``(addr, mask)``),
ip_proto, tcp/udp ports, ip_dscp. Anything else in a match is a test error.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_app import ofmsg
from ryu_app.net.forwarding import Forwarding, Packet

KNOWN_FIELDS = {"in_port", "eth_src", "eth_dst", "eth_type", "ipv4_src", "ipv4_dst",
                "ipv6_src", "ipv6_dst", "ip_proto", "tcp_src", "tcp_dst", "udp_src",
                "udp_dst", "ip_dscp", "arp_spa"}
CONTROLLER = "controller"


@dataclass
class Flow:
    table: int
    priority: int
    match: dict[str, Any]
    instructions: list[Any]
    cookie: int


@dataclass
class Fate:
    """What one switch did with a packet."""

    outputs: list[tuple[int | str, dict[str, Any]]] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)
    queues: list[int] = field(default_factory=list)
    tables: list[int] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)

    @property
    def ports(self) -> list[int | str]:
        return [p for p, _ in self.outputs]

    @property
    def dropped(self) -> bool:
        return not self.outputs


def _value_matches(name: str, want: Any, have: Any) -> bool:
    if have is None:
        return False
    if name.startswith(("ipv4_", "ipv6_", "arp_spa")):
        if isinstance(want, tuple):
            net = ipaddress.ip_network(f"{want[0]}/{want[1]}", strict=False)
            return ipaddress.ip_address(have) in net
        return ipaddress.ip_address(want) == ipaddress.ip_address(have)
    if name.startswith("eth_") and isinstance(want, str):
        return want.lower() == str(have).lower()
    return bool(want == have)


def matches(match: dict[str, Any], pkt: dict[str, Any]) -> bool:
    unknown = set(match) - KNOWN_FIELDS
    if unknown:
        raise ValueError(f"fake table does not know match fields {sorted(unknown)}")
    return all(_value_matches(k, v, pkt.get(k)) for k, v in match.items())


class FakeOFTable:
    """One switch's flow tables and meters."""

    def __init__(self, dpid: int, n_tables: int = 2) -> None:
        self.dpid = dpid
        self.tables: list[list[Flow]] = [[] for _ in range(n_tables)]
        self.meters: dict[int, Any] = {}
        self.packet_outs: list[Any] = []
        self.role: int | None = None
        self.generation: int | None = None

    # ------------------------------------------------------------ messages

    def apply(self, msgs: list[Any]) -> None:
        for msg in msgs:
            msg.serialize()  # every message must encode, as on the wire
            if isinstance(msg, parser.OFPFlowMod):
                self._flow_mod(msg)
            elif isinstance(msg, parser.OFPMeterMod):
                if msg.command == ofp.OFPMC_DELETE:
                    self.meters.pop(msg.meter_id, None)
                elif msg.command == ofp.OFPMC_ADD:
                    if msg.meter_id in self.meters:
                        raise ValueError(f"meter {msg.meter_id} exists (OFPMMFC_METER_EXISTS)")
                    self.meters[msg.meter_id] = msg
            elif isinstance(msg, parser.OFPPacketOut):
                self.packet_outs.append(msg)
            elif isinstance(msg, parser.OFPRoleRequest):
                if self.generation is not None and msg.generation_id < self.generation:
                    raise ValueError(f"stale role request: generation {msg.generation_id} "
                                     f"< {self.generation} (OFPRRFC_STALE)")
                self.role, self.generation = msg.role, msg.generation_id
            else:
                raise TypeError(f"fake table cannot apply {type(msg).__name__}")

    def _flow_mod(self, msg: Any) -> None:
        match = dict(msg.match.items())
        if msg.command == ofp.OFPFC_ADD:
            table = self.tables[msg.table_id]
            for inst in msg.instructions:
                if isinstance(inst, parser.OFPInstructionMeter) and \
                        inst.meter_id not in self.meters:
                    raise ValueError(f"flow uses meter {inst.meter_id}, which does not exist")
            table[:] = [f for f in table if not (f.priority == msg.priority and f.match == match)]
            table.append(Flow(msg.table_id, msg.priority, match, list(msg.instructions),
                              msg.cookie))
        elif msg.command == ofp.OFPFC_DELETE:
            tables = (range(len(self.tables)) if msg.table_id == ofp.OFPTT_ALL
                      else [msg.table_id])
            for t in tables:
                self.tables[t][:] = [f for f in self.tables[t]
                                     if not self._delete_hits(f, msg, match)]
        else:
            raise ValueError(f"fake table does not support flow-mod command {msg.command}")

    @staticmethod
    def _delete_hits(flow: Flow, msg: Any, match: dict[str, Any]) -> bool:
        if (flow.cookie & msg.cookie_mask) != (msg.cookie & msg.cookie_mask):
            return False
        # non-strict delete: the flow's match is at least as specific as the given one
        return all(flow.match.get(k) == v for k, v in match.items())

    def flows(self, table: int | None = None, cookie: int | None = None) -> list[Flow]:
        out = [f for t in self.tables for f in t]
        return [f for f in out if (table is None or f.table == table)
                and (cookie is None or f.cookie == cookie)]

    # ------------------------------------------------------------ packets

    def lookup(self, pkt: dict[str, Any]) -> Fate:
        """Where ``pkt`` (a dict of match fields, with ``in_port``) goes on this switch."""
        fate, pkt, table = Fate(), dict(pkt), 0
        while True:
            fate.tables.append(table)
            candidates = [f for f in self.tables[table] if matches(f.match, pkt)]
            if not candidates:
                return fate  # no table-miss flow: dropped
            flow = max(candidates, key=lambda f: f.priority)
            fate.flows.append(flow)
            goto = None
            for inst in flow.instructions:
                if isinstance(inst, parser.OFPInstructionMeter):
                    fate.meters.append(inst.meter_id)
                elif isinstance(inst, parser.OFPInstructionActions):
                    for act in inst.actions:
                        self._act(act, pkt, fate)
                elif isinstance(inst, parser.OFPInstructionGotoTable):
                    goto = inst.table_id
            if goto is None:
                return fate
            if goto <= table:
                raise ValueError(f"goto table {goto} from table {table}: not forward")
            table = goto

    @staticmethod
    def _act(act: Any, pkt: dict[str, Any], fate: Fate) -> None:
        if isinstance(act, parser.OFPActionOutput):
            port = CONTROLLER if act.port == ofp.OFPP_CONTROLLER else act.port
            fate.outputs.append((port, dict(pkt)))
        elif isinstance(act, parser.OFPActionSetField):
            pkt[act.key] = act.value
        elif isinstance(act, parser.OFPActionSetQueue):
            fate.queues.append(act.queue_id)
        else:
            raise TypeError(f"fake table does not know action {type(act).__name__}")


class FakeNetwork:
    """Fake switches along a topology's links, driven by the real ``Forwarding``.

    ``hosts`` maps a MAC to its (dpid, port). ``send`` injects a frame at a
    switch port and follows every copy until it is delivered or dropped; a
    table miss becomes a packet-in whose decisions ``ofmsg`` turns into
    messages again. ``delivered`` counts frames per receiving host.
    """

    def __init__(self, forwarding: Forwarding, hosts: dict[str, tuple[int, int]],
                 now: float = 1000.0) -> None:
        self.forwarding, self.topology = forwarding, forwarding.topology
        self.hosts, self.now = hosts, now
        self.switches = {d: FakeOFTable(d) for d in self.topology.switches()}
        self.packet_ins = 0
        self.delivered: Counter[str] = Counter()
        for dpid, sw in self.switches.items():
            sw.apply(ofmsg.table_miss(ofmsg.offline_datapath(dpid)))

    def _peer(self, dpid: int, port: int) -> tuple[str, Any] | None:
        for a, pa, b, pb in self.topology.links():
            if (a, pa) == (dpid, port):
                return "switch", (b, pb)
            if (b, pb) == (dpid, port):
                return "switch", (a, pa)
        for mac, loc in self.hosts.items():
            if loc == (dpid, port):
                return "host", mac
        return None

    def apply(self, decisions: list[Any], data: bytes | None = None) -> list[tuple[int, Any]]:
        """Apply decisions as messages; return the packet-outs as (dpid, message)."""
        outs = []
        for d in decisions:
            msgs = ofmsg.forwarding(ofmsg.offline_datapath(d.dpid), d, data)
            self.switches[d.dpid].apply(msgs)
            outs += [(d.dpid, m) for m in msgs if isinstance(m, parser.OFPPacketOut)]
        return outs

    def flows_to(self, eth_dst: str) -> list[int]:
        """The switches with a table-1 flow for ``eth_dst``."""
        return sorted(d for d, sw in self.switches.items()
                      if any(f.match.get("eth_dst") == eth_dst for f in sw.flows(table=1)))

    def send(self, pkt: Packet, max_hops: int = 200) -> None:
        """Inject ``pkt`` at ``pkt.dpid``/``pkt.in_port`` and follow every copy."""
        frame: dict[str, Any] = {"eth_src": pkt.src, "eth_dst": pkt.dst, "eth_type": pkt.eth_type}
        for name, value in (("ipv4_src", pkt.ip_src), ("arp_op", pkt.arp_op),
                            ("arp_spa", pkt.arp_spa), ("arp_tpa", pkt.arp_tpa)):
            if value is not None:
                frame[name] = value
        queue: list[tuple[int, int, dict[str, Any]]] = [(pkt.dpid, pkt.in_port, frame)]
        hops = 0
        while queue:
            hops += 1
            if hops > max_hops:
                raise AssertionError(f"frame still travelling after {max_hops} hops: a loop")
            dpid, in_port, frame = queue.pop(0)
            frame = {**frame, "in_port": in_port}
            fate = self.switches[dpid].lookup(frame)
            for out, sent in fate.outputs:
                if out == CONTROLLER:
                    queue += self._packet_in(dpid, in_port, sent)
                elif out != in_port:  # OpenFlow never sends back out of the in_port
                    queue += self._egress(dpid, int(out), sent)

    def _packet_in(self, dpid: int, in_port: int,
                   frame: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
        self.packet_ins += 1
        info = Packet(src=frame["eth_src"], dst=frame["eth_dst"], dpid=dpid, in_port=in_port,
                      eth_type=frame["eth_type"], ip_src=frame.get("ipv4_src"),
                      arp_op=frame.get("arp_op"), arp_spa=frame.get("arp_spa"),
                      arp_tpa=frame.get("arp_tpa"))
        out = []
        for out_dpid, msg in self.apply(self.forwarding.packet_in(info, self.now), b"frame"):
            if msg.in_port == ofp.OFPP_CONTROLLER:
                continue  # a frame the controller made (a proxy ARP reply): not followed
            for act in msg.actions:
                if act.port != msg.in_port:
                    out += self._egress(out_dpid, act.port, frame)
        return out

    def _egress(self, dpid: int, port: int,
                frame: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
        peer = self._peer(dpid, port)
        if peer is None:
            return []
        kind, where = peer
        if kind == "host":
            self.delivered[where] += 1
            return []
        return [(where[0], where[1], dict(frame))]
