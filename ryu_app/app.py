"""The Ryu application: a thin shim between Ryu events and plain modules.

Everything that decides lives elsewhere and never imports Ryu:
``topology.Topology`` (the graph), ``forwarding.Forwarding`` (what to
install and send), and ``service.MeasureService`` (agents, overlay, tasks,
results). This class only

- installs the table-miss flows of tables 0 and 1 (everything unmatched
  goes to the controller, unbuffered) when a switch connects,
- feeds ``ryu.topology`` events (switches, ports, links; they need
  ``--observe-links``) and packet-ins into the topology and forwarding,
  and sends the OpenFlow 1.3 messages that ``ofmsg`` builds from the
  returned decisions,
- deletes its own flows by cookie on every switch when a switch or link
  changes (Ryu's LLDP flow and the table-miss flow have cookie 0 and stay),
- runs a hub thread calling ``service.tick(time.time())`` every second, and
  at once when a REST call queued a push (``service.wake``), and tells the
  service when the topology changed (a failing tick is counted by the
  service and shown in ``GET /measure/v1/health``),
- sends the reactions' flow-mods and meter-mods (``service.actions.drain()``
  after every tick, ``service.actions.on_switch`` when a switch connects:
  ``ryu_app/reactions/actions.py`` decides, ``ofmsg`` builds, this only sends),
- registers the REST API (``rest.register_rest``), the dashboard and
  ``/metrics`` (``dashboard.register_dashboard``) on Ryu's WSGI app.

Start it with the project launcher (``python -m ryu_app``), or with
``ryu-manager ryu_app/app.py`` where plain Ryu runs; link discovery
is switched on here as well, since forwarding on loops depends on it.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import arp, ethernet, ipv4, packet
from ryu.ofproto import ofproto_v1_3
from ryu.topology import event as topo_event

from measure_common.serverguard import CONTROLLER_GUARD
from measure_common.settings import get_setting
from ryu_app import ofmsg
from ryu_app.net.forwarding import Decision, FlowDelete, Forwarding, Packet
from ryu_app.net.topology import Topology
from ryu_app.reactions.actions import Op, Reroute, op_dpid
from ryu_app.rest.api import register_rest
from ryu_app.rest.dashboard import register_dashboard
from ryu_app.service.core import MeasureService
from ryu_app.service.store import PgStore, StoreError

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
        self.forwarding = Forwarding(self.topology, source_guard=True)
        self.datapaths: dict[int, Any] = {}  # dpid -> ryu Datapath
        self.role_generation: int | None = None  # set when leading on a shared store
        self.service = self._make_service()
        self._agent_ips: tuple[int, set] = (-1, set())
        metrics = register_dashboard(kwargs["wsgi"], self.service)
        register_rest(kwargs["wsgi"], self.service, metrics)
        CONTROLLER_GUARD.trusted = self._agent_source
        self._ticker = hub.spawn(self._tick_loop)

    # ------------------------------------------------------------ wiring

    def _make_service(self) -> MeasureService:
        state_dir = get_setting("MEASURE_STATE_DIR")
        store_url = get_setting("MEASURE_STORE_URL")
        try:
            store = PgStore(store_url) if store_url else None
            if store is not None and not store.try_lead():
                # cold standby: the leader holds the lock; it is the server that frees it
                # when the leader's process dies, and then this one resumes from the
                # shared state (tasks, actions with their remaining time, history)
                self.logger.info("standby: waiting for the leader's lock on %s", store.path)
                while not store.try_lead():
                    hub.sleep(1.0)
                self.logger.info("leader now, on %s", store.path)
            if store is not None:
                self.role_generation = int(store.get_meta("leader_generation", "0") or 0) + 1
                store.set_meta("leader_generation", str(self.role_generation))
            return MeasureService(self.topology, state_dir, now=time.time, store=store)
        except StoreError as exc:
            # a corrupt or locked database: one clear line, no reset, exit 2
            self.logger.error("cannot start: %s", exc)
            raise SystemExit(2) from None

    def _agent_source(self, ip: str) -> bool:
        """Whether ``ip`` is a registered agent's address (its URL's host or data
        IP): agents keep the REST slots held back for control traffic."""
        registry = self.service.registry
        if self._agent_ips[0] != registry.version:
            ips = set()
            for agent in registry.agents.values():
                ips.add(urllib.parse.urlsplit(agent.url).hostname)
                ips.add(agent.data_ip)
            self._agent_ips = (registry.version, ips)
        return ip in self._agent_ips[1]

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
        self.datapaths[dp.id] = dp
        if self.role_generation is not None:  # controllers share a store: claim the switch
            dp.send_msg(ofmsg.role_master(dp, self.role_generation))
        for msg in ofmsg.table_miss(dp):
            dp.send_msg(msg)
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
        """Send the OpenFlow messages of forwarding decisions (built by ``ofmsg``)."""
        for d in decisions:
            dp = self.datapaths.get(d.dpid)
            if dp is not None:
                for msg in ofmsg.forwarding(dp, d, data):
                    dp.send_msg(msg)

    def _send_queued_reactions(self) -> None:
        try:
            self._send_reactions(self.service.actions.drain())
        except Exception:  # broad: the ticker must keep running (logged with its traceback)
            self.logger.exception("sending reaction flow-mods failed")

    def _send_reactions(self, ops: list[Op]) -> None:
        """Send the flow-mods and meter-mods of reaction operations (built by ``ofmsg``)."""
        for op in ops:
            if isinstance(op, Reroute):
                moved = self.forwarding.reroute(set(op.links))
                if moved is not None:
                    self.logger.info("routing around %d link(s): %d flow(s) moved",
                                     len(op.links), len(moved))
                    self._send(moved)
                continue
            dp = self.datapaths.get(op_dpid(op))
            if dp is None:
                continue  # re-installed by on_switch when it connects
            for msg in ofmsg.reaction(dp, op):
                dp.send_msg(msg)
