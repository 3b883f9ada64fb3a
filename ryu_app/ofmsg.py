"""Every OpenFlow 1.3 message the controller sends, built in one place.

The deciding modules never talk OpenFlow: forwarding returns plain
decisions (``ryu_app.net.forwarding``: ``SourceFlow``, ``FlowMod``,
``FlowDelete``, ``PacketOut``), the reactions plan flows and meters
(``ryu_app.reactions``: ``Install``, ``Remove``, ``MeterAdd``,
``MeterDelete``). This module turns both into Ryu message objects for one
datapath, the way FAUCET builds every message in ``valve_of.py``. The Ryu
shim only sends what it gets back; ``testing/fakeoftable.py`` applies the
same messages to a fake flow table in fast unit tests (what a packet
matches, and where it goes).

A datapath here is anything with ``id``, ``ofproto`` and ``ofproto_parser``
(Ryu's ``Datapath``; :func:`offline_datapath` gives one without a switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from ryu_app.net.forwarding import (
    DST_TABLE,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    SRC_TABLE,
    Decision,
    FlowDelete,
    FlowMod,
    PacketOut,
    SourceFlow,
    SourceGuard,
)
from ryu_app.reactions.actions import Install, MeterAdd, MeterDelete, Op, Remove
from ryu_app.reactions.plan import FlowAction, Output, SetField, SetQueue

ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


class Datapath(Protocol):
    """The part of Ryu's ``Datapath`` that building a message needs."""

    id: int
    ofproto: Any
    ofproto_parser: Any


@dataclass
class OfflineDatapath:
    """A datapath with no switch behind it: for building and checking messages."""

    id: int
    ofproto: Any = ofproto_v1_3
    ofproto_parser: Any = ofproto_v1_3_parser


def offline_datapath(dpid: int) -> OfflineDatapath:
    return OfflineDatapath(dpid)


def table_miss(dp: Datapath) -> list[Any]:
    """Tables 0 and 1: everything unmatched goes to the controller, unbuffered."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
    return [parser.OFPFlowMod(datapath=dp, table_id=table, priority=0,
                              match=parser.OFPMatch(), instructions=inst)
            for table in (SRC_TABLE, DST_TABLE)]


def role(dp: Datapath, name: str, generation: int) -> Any:
    """An OpenFlow 1.3 role request: ``master`` claims the switch (it makes every other
    controller SLAVE), ``slave`` gives up packet-ins and writes (a standby).
    ``generation`` grows with each leadership, so a switch refuses a stale claim
    from an earlier leader (OFPRRFC_STALE); a standby asks at the current one."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    roles = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE}
    return parser.OFPRoleRequest(dp, roles[name], generation)


def role_name(dp: Datapath, role: int) -> str:
    """The name of an OpenFlow 1.3 role (``master``, ``slave``, ``equal``, ``nochange``)."""
    ofp = dp.ofproto
    names = {ofp.OFPCR_ROLE_MASTER: "master", ofp.OFPCR_ROLE_SLAVE: "slave",
             ofp.OFPCR_ROLE_EQUAL: "equal", ofp.OFPCR_ROLE_NOCHANGE: "nochange"}
    return names.get(role, str(role))


def delete_by_cookie(dp: Datapath, cookie: int, match: dict[str, Any] | None = None) -> Any:
    """Delete, in every table, the flows with exactly ``cookie`` (and ``match`` if given)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        datapath=dp, cookie=cookie, cookie_mask=ALL_COOKIE_BITS, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**(match or {})))


def forwarding(dp: Datapath, d: Decision, data: bytes | None = None) -> list[Any]:
    """The message of one forwarding decision (none for a packet-out with no frame)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(d, SourceFlow):
        fields: dict[str, Any] = {"eth_src": d.eth_src}
        if d.in_port is not None:
            fields["in_port"] = d.in_port
        return [parser.OFPFlowMod(
            datapath=dp, table_id=SRC_TABLE, cookie=d.cookie, priority=d.priority,
            idle_timeout=d.idle_timeout, match=parser.OFPMatch(**fields),
            instructions=[parser.OFPInstructionGotoTable(DST_TABLE)])]
    if isinstance(d, SourceGuard):
        return source_guard(dp, d)
    if isinstance(d, FlowMod):
        actions = [parser.OFPActionOutput(d.out_port)]
        return [parser.OFPFlowMod(
            datapath=dp, table_id=DST_TABLE, cookie=d.cookie, priority=d.priority,
            idle_timeout=d.idle_timeout, match=parser.OFPMatch(eth_dst=d.eth_dst),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)])]
    if isinstance(d, FlowDelete):
        return [delete_by_cookie(dp, d.cookie, {d.field: d.mac} if d.mac else None)]
    if isinstance(d, PacketOut):
        frame = d.data if d.data is not None else data
        if frame is None:
            return []
        in_port = d.in_port if d.data is None else ofp.OFPP_CONTROLLER
        return [parser.OFPPacketOut(
            datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
            actions=[parser.OFPActionOutput(p) for p in d.out_ports], data=frame)]
    raise TypeError(f"not a forwarding decision: {d!r}")


def source_guard(dp: Datapath, d: SourceGuard) -> list[Any]:
    """Table 0 on the host's own port: IPv4/ARP with a bound source address go on
    (priority + 2), any other IPv4/ARP from that MAC and port is dropped
    (priority + 1: no instructions; the flow's counters count the drops); the
    host's plain ``SourceFlow`` (``priority``) admits everything else."""
    parser = dp.ofproto_parser
    on = {"in_port": d.in_port, "eth_src": d.eth_src}
    msgs = []
    for ip in d.ips:
        for fields in ({"eth_type": ETH_TYPE_IPV4, "ipv4_src": ip},
                       {"eth_type": ETH_TYPE_ARP, "arp_spa": ip}):
            msgs.append(parser.OFPFlowMod(
                datapath=dp, table_id=SRC_TABLE, cookie=d.cookie, priority=d.priority + 2,
                idle_timeout=d.idle_timeout, match=parser.OFPMatch(**on, **fields),
                instructions=[parser.OFPInstructionGotoTable(DST_TABLE)]))
    for eth_type in (ETH_TYPE_IPV4, ETH_TYPE_ARP):
        msgs.append(parser.OFPFlowMod(
            datapath=dp, table_id=SRC_TABLE, cookie=d.cookie, priority=d.priority + 1,
            idle_timeout=d.idle_timeout, match=parser.OFPMatch(**on, eth_type=eth_type),
            instructions=[]))
    return msgs


def _action(dp: Datapath, a: FlowAction) -> Any:
    parser = dp.ofproto_parser
    if isinstance(a, Output):
        return parser.OFPActionOutput(a.port)
    if isinstance(a, SetField):
        return parser.OFPActionSetField(**{a.field: a.value})
    if isinstance(a, SetQueue):
        return parser.OFPActionSetQueue(a.queue)
    raise TypeError(f"not a flow action: {a!r}")


def reaction(dp: Datapath, op: Op) -> list[Any]:
    """The messages of one reaction operation (a meter is replaced, not added twice)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(op, Install):
        f = op.flow
        inst = []
        if f.meter is not None:
            inst.append(parser.OFPInstructionMeter(f.meter, ofp.OFPIT_METER))
        if f.actions:
            inst.append(parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, [_action(dp, a) for a in f.actions]))
        if f.goto is not None:
            inst.append(parser.OFPInstructionGotoTable(f.goto))
        return [parser.OFPFlowMod(
            datapath=dp, table_id=f.table, cookie=op.cookie, priority=f.priority,
            hard_timeout=op.hard_timeout, match=parser.OFPMatch(**f.match),
            instructions=inst)]
    if isinstance(op, Remove):
        return [delete_by_cookie(dp, op.cookie)]
    if isinstance(op, MeterAdd):
        m = op.meter
        band = parser.OFPMeterBandDrop(rate=m.kbps, burst_size=m.burst_kb)
        return [parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=m.meter_id),
                parser.OFPMeterMod(dp, command=ofp.OFPMC_ADD,
                                   flags=ofp.OFPMF_KBPS | ofp.OFPMF_BURST,
                                   meter_id=m.meter_id, bands=[band])]
    if isinstance(op, MeterDelete):
        return [parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=op.meter_id)]
    raise TypeError(f"not a reaction operation: {op!r}")
