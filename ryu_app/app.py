"""The Ryu application: a thin shim between Ryu events and plain modules.

Everything that decides lives elsewhere and never imports Ryu:
``topology.Topology`` (the graph), ``forwarding.Forwarding`` (what to
install and send), and ``service.MeasureService`` (agents, overlay, tasks,
results). This class only

- installs the table-miss flows of tables 0 and 1 (everything unmatched
  goes to the controller, unbuffered) when a switch connects,
- feeds ``ryu.topology`` events (switches, ports, links; they need
  ``--observe-links``) and packet-ins into the topology and forwarding,
  and turns the returned decisions into OpenFlow 1.3 messages,
- deletes its own flows by cookie on every switch when a switch or link
  changes (Ryu's LLDP flow and the table-miss flow have cookie 0 and stay),
- runs a hub thread calling ``service.tick(time.time())`` every second, and
  at once when a REST call queued a push (``service.wake``), and tells the
  service when the topology changed (a failing tick is counted by the
  service and shown in ``GET /measure/v1/health``),
- sends the reactions' flow-mods and meter-mods (``service.actions.drain()``
  after every tick, ``service.actions.on_switch`` when a switch connects:
  ``ryu_app/reactions/actions.py`` decides, this only translates),
- registers the REST API (``rest.register_rest``), the dashboard and
  ``/metrics`` (``dashboard.register_dashboard``) on Ryu's WSGI app.

Start it with the project launcher (``python -m ryu_app``), or with
``ryu-manager ryu_app/app.py`` where plain Ryu runs; link discovery
is switched on here as well, since forwarding on loops depends on it.
"""

from __future__ import annotations

import time
from typing import Any

from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import arp, ethernet, ipv4, packet
from ryu.ofproto import ofproto_v1_3
from ryu.topology import event as topo_event

from measure_common.settings import get_setting
from ryu_app.net.forwarding import (
    DST_TABLE,
    SRC_TABLE,
    Decision,
    FlowDelete,
    FlowMod,
    Forwarding,
    Packet,
    PacketOut,
    SourceFlow,
)
from ryu_app.net.topology import Topology
from ryu_app.reactions.actions import Install, MeterAdd, MeterDelete, Op, Remove, op_dpid
from ryu_app.rest.api import register_rest
from ryu_app.rest.dashboard import register_dashboard
from ryu_app.service.core import MeasureService
from ryu_app.service.store import StoreError

TICK_SECONDS = 1.0


def _observe_links() -> None:
    """Make LLDP link discovery the default, also under plain ``ryu-manager``."""
    from ryu import cfg

    try:
        cfg.CONF.set_default("observe_links", True)
    except cfg.NoSuchOptError:  # pragma: no cover - flag defined by ryu.flags
        pass


_observe_links()


class MeasureApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.topology = Topology()
        self.forwarding = Forwarding(self.topology)
        self.datapaths: dict[int, Any] = {}  # dpid -> ryu Datapath
        self.service = self._make_service()
        metrics = register_dashboard(kwargs["wsgi"], self.service)
        register_rest(kwargs["wsgi"], self.service, metrics)
        self._ticker = hub.spawn(self._tick_loop)

    # ------------------------------------------------------------ wiring

    def _make_service(self) -> MeasureService:
        state_dir = get_setting("MEASURE_STATE_DIR")
        try:
            return MeasureService(self.topology, state_dir, now=time.time)
        except StoreError as exc:
            # a corrupt or locked database: one clear line, no reset, exit 2
            self.logger.error("cannot start: %s", exc)
            raise SystemExit(2) from None

    def _tick_loop(self) -> None:
        """``service.tick`` every second, or at once when a REST call queued a push.

        ``tick`` never raises: it logs, counts and shows a failure in health.
        """
        wake = hub.Event()
        self.service.wake = wake.set
        while True:
            wake.wait(timeout=TICK_SECONDS)
            wake.clear()
            self._send_queued_reactions()  # queued by a report: out before the tick's work
            self.service.tick(time.time())
            self._send_queued_reactions()  # expiries found by the tick

    def _topology_changed(self, flush: bool) -> None:
        if flush:
            self._send(self.forwarding.invalidate_all())
        self.service.on_topology_changed()

    # ------------------------------------------------------------ switches

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.datapaths[dp.id] = dp
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        for table in (SRC_TABLE, DST_TABLE):
            dp.send_msg(parser.OFPFlowMod(datapath=dp, table_id=table, priority=0,
                                          match=parser.OFPMatch(), instructions=inst))
        # Flows from an earlier run of the controller may be stale.
        self._send([FlowDelete(dp.id, self.forwarding.cookie)])
        # active reactions, with their remaining time
        self._send_reactions(self.service.actions.on_switch(dp.id))

    @set_ev_cls(topo_event.EventSwitchEnter)
    def _switch_enter(self, ev):
        sw = ev.switch
        self.datapaths[sw.dp.id] = sw.dp
        ports = [p.port_no for p in sw.ports if not p.is_reserved()]
        if self.topology.add_switch(sw.dp.id, ports, now=time.time()):
            self.logger.info("switch %016x entered with ports %s", sw.dp.id, ports)
            self._topology_changed(flush=False)

    @set_ev_cls(topo_event.EventSwitchLeave)
    def _switch_leave(self, ev):
        dpid = ev.switch.dp.id
        self.datapaths.pop(dpid, None)
        if self.topology.remove_switch(dpid):
            self.logger.info("switch %016x left", dpid)
            self._topology_changed(flush=True)

    @set_ev_cls(topo_event.EventPortAdd)
    def _port_add(self, ev):
        port = ev.port
        if not port.is_reserved() and self.topology.add_port(port.dpid, port.port_no,
                                                              now=time.time()):
            self._topology_changed(flush=False)

    @set_ev_cls(topo_event.EventPortDelete)
    def _port_delete(self, ev):
        port = ev.port
        if self.topology.remove_port(port.dpid, port.port_no):
            self._topology_changed(flush=True)

    @set_ev_cls(topo_event.EventLinkAdd)
    def _link_add(self, ev):
        src, dst = ev.link.src, ev.link.dst
        if self.topology.add_link(src.dpid, src.port_no, dst.dpid, dst.port_no, now=time.time()):
            self.logger.info("link %016x:%d <-> %016x:%d", src.dpid, src.port_no,
                             dst.dpid, dst.port_no)
            self._topology_changed(flush=True)

    @set_ev_cls(topo_event.EventLinkDelete)
    def _link_delete(self, ev):
        src, dst = ev.link.src, ev.link.dst
        if self.topology.remove_link(src.dpid, src.port_no, dst.dpid, dst.port_no,
                                     now=time.time()):
            self.logger.info("link %016x:%d <-> %016x:%d removed", src.dpid, src.port_no,
                             dst.dpid, dst.port_no)
            self._topology_changed(flush=True)

    # ------------------------------------------------------------ packets

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None:
            return
        fields = {}
        arp_pkt = pkt.get_protocol(arp.arp)
        if arp_pkt is not None:
            fields = {"arp_op": arp_pkt.opcode, "arp_spa": arp_pkt.src_ip,
                      "arp_tpa": arp_pkt.dst_ip}
        ip_pkt = pkt.get_protocol(ipv4.ipv4)
        if ip_pkt is not None:
            fields["ip_src"] = ip_pkt.src
        info = Packet(src=eth.src, dst=eth.dst, dpid=msg.datapath.id,
                      in_port=msg.match["in_port"], eth_type=eth.ethertype, **fields)
        before = self.topology.version
        decisions = self.forwarding.packet_in(info, time.time())
        self._send(decisions, msg.data)
        if self.topology.version != before:
            self._topology_changed(flush=False)

    def _send(self, decisions: list[Decision], data: bytes | None = None) -> None:
        """Turn forwarding decisions into OpenFlow 1.3 messages."""
        for d in decisions:
            dp = self.datapaths.get(d.dpid)
            if dp is None:
                continue
            ofp, parser = dp.ofproto, dp.ofproto_parser
            if isinstance(d, SourceFlow):
                fields: dict[str, Any] = {"eth_src": d.eth_src}
                if d.in_port is not None:
                    fields["in_port"] = d.in_port
                dp.send_msg(parser.OFPFlowMod(
                    datapath=dp, table_id=SRC_TABLE, cookie=d.cookie, priority=d.priority,
                    idle_timeout=d.idle_timeout, match=parser.OFPMatch(**fields),
                    instructions=[parser.OFPInstructionGotoTable(DST_TABLE)]))
            elif isinstance(d, FlowMod):
                actions = [parser.OFPActionOutput(d.out_port)]
                inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
                dp.send_msg(parser.OFPFlowMod(
                    datapath=dp, table_id=DST_TABLE, cookie=d.cookie, priority=d.priority,
                    idle_timeout=d.idle_timeout, match=parser.OFPMatch(eth_dst=d.eth_dst),
                    instructions=inst))
            elif isinstance(d, FlowDelete):
                match = parser.OFPMatch(**{d.field: d.mac}) if d.mac else parser.OFPMatch()
                dp.send_msg(parser.OFPFlowMod(
                    datapath=dp, cookie=d.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                    table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                    out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match))
            elif isinstance(d, PacketOut):
                frame = d.data if d.data is not None else data
                if frame is None:
                    continue
                in_port = d.in_port if d.data is None else ofp.OFPP_CONTROLLER
                actions = [parser.OFPActionOutput(p) for p in d.out_ports]
                dp.send_msg(parser.OFPPacketOut(
                    datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                    actions=actions, data=frame))

    def _send_queued_reactions(self) -> None:
        try:
            self._send_reactions(self.service.actions.drain())
        except Exception:  # broad: the ticker must keep running (logged with its traceback)
            self.logger.exception("sending reaction flow-mods failed")

    def _send_reactions(self, ops: list[Op]) -> None:
        """Turn reaction operations (``reactions.actions``) into flow-mods and meter-mods."""
        for op in ops:
            dp = self.datapaths.get(op_dpid(op))
            if dp is None:
                continue  # re-installed by on_switch when it connects
            ofp, parser = dp.ofproto, dp.ofproto_parser
            if isinstance(op, Install):
                f = op.flow
                actions = []
                for name, *args in f.actions:
                    if name == "set_field":
                        actions.append(parser.OFPActionSetField(**{args[0]: args[1]}))
                    elif name == "output":
                        actions.append(parser.OFPActionOutput(args[0]))
                    elif name == "set_queue":
                        actions.append(parser.OFPActionSetQueue(args[0]))
                inst = []
                if f.meter is not None:
                    inst.append(parser.OFPInstructionMeter(f.meter, ofp.OFPIT_METER))
                if actions:
                    inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
                if f.goto is not None:
                    inst.append(parser.OFPInstructionGotoTable(f.goto))
                dp.send_msg(parser.OFPFlowMod(
                    datapath=dp, table_id=f.table, cookie=op.cookie, priority=f.priority,
                    hard_timeout=op.hard_timeout, match=parser.OFPMatch(**f.match),
                    instructions=inst))
            elif isinstance(op, Remove):
                dp.send_msg(parser.OFPFlowMod(
                    datapath=dp, cookie=op.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
                    table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                    out_group=ofp.OFPG_ANY, match=parser.OFPMatch()))
            elif isinstance(op, MeterAdd):
                m = op.meter
                dp.send_msg(parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=m.meter_id))
                band = parser.OFPMeterBandDrop(rate=m.kbps, burst_size=m.burst_kb)
                dp.send_msg(parser.OFPMeterMod(
                    dp, command=ofp.OFPMC_ADD, flags=ofp.OFPMF_KBPS | ofp.OFPMF_BURST,
                    meter_id=m.meter_id, bands=[band]))
            elif isinstance(op, MeterDelete):
                dp.send_msg(parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE,
                                               meter_id=op.meter_id))
