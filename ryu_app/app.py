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

On a shared PostgreSQL store (``MEASURE_STORE_URL``) the controller that
does not get the store's leader lock is a standby: its REST API is a
``StandbyService`` (stored reads; 503 naming the leader for the rest), it
asks every switch for the SLAVE role and sends nothing else, and ignores
packet-ins. When it gets the lock it builds the ``MeasureService`` from the
shared state, points the REST API at it, and claims every connected switch
(MASTER at the next generation, table-miss, stale flows deleted, active
reactions with their remaining time).

Start it with the project launcher (``python -m ryu_app``), or with
``ryu-manager ryu_app/app.py`` where plain Ryu runs; link discovery
is switched on here as well, since forwarding on loops depends on it.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable
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
from ryu_app.service.standby import LEADER_URL_KEY, StandbyService
from ryu_app.service.store import PgStore, StoreError

TICK_SECONDS = 1.0
LEAD_POLL_SECONDS = 0.5  # a standby tries the leader's lock this often
GENERATION_KEY = "leader_generation"


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
        self.switch_roles: dict[int, str] = {}  # dpid -> role, from the switch's role reply
        self.role_generation: int | None = None  # set when leading on a shared store
        self.measure: MeasureService | None = None  # the working service, when leading
        self._wsgi = kwargs["wsgi"]
        self._agent_ips: tuple[int, set] = (-1, set())
        self._rebind_rest: Callable[[Any, Any], None] | None = None
        self.state_dir = get_setting("MEASURE_STATE_DIR")
        store = self._open_store()
        self.service: MeasureService | StandbyService
        if store is not None and not store.try_lead():
            # a standby: REST reads from the shared store, switches connected as SLAVE,
            # until the server frees the leader's lock (the leader's process or its
            # connection died); then it takes over from the shared state
            self.logger.info("standby: waiting for the leader's lock on %s", store.path)
            self.service = StandbyService(store, self.state_dir)
            self.service.switch_roles = self.switch_roles
            self._rebind_rest = register_rest(self._wsgi, self.service)
            hub.spawn(self._await_lead, store)
        else:
            self._lead(store)
        CONTROLLER_GUARD.trusted = self._agent_source

    # ------------------------------------------------------------ wiring

    def _open_store(self) -> PgStore | None:
        """The shared PostgreSQL store of ``MEASURE_STORE_URL`` (None: SQLite, the
        service opens it); a store that cannot be used exits with status 2."""
        store_url = get_setting("MEASURE_STORE_URL")
        try:
            return PgStore(store_url) if store_url else None
        except StoreError as exc:
            # a corrupt or locked database: one clear line, no reset, exit 2
            self.logger.error("cannot start: %s", exc)
            raise SystemExit(2) from None

    def _lead(self, store: PgStore | None) -> MeasureService:
        """Become the working controller: the service from the (shared) state, the
        REST API, dashboard and metrics on it, the ticker. On a shared store the
        leadership gets the next generation (for the switches' role requests) and
        the store names this controller's URL for the standbys' answers."""
        try:
            if store is not None:
                self.role_generation = int(store.get_meta(GENERATION_KEY, "0") or 0) + 1
                store.set_meta(GENERATION_KEY, str(self.role_generation))
            service = MeasureService(self.topology, self.state_dir, now=time.time,
                                     store=store)
            if store is not None:
                store.set_meta(LEADER_URL_KEY, service.controller_url)
        except StoreError as exc:
            self.logger.error("cannot start: %s", exc)
            raise SystemExit(2) from None
        self.service = self.measure = service
        service.switch_roles = self.switch_roles
        metrics = register_dashboard(self._wsgi, service)
        if self._rebind_rest is not None:  # a standby's API: now the leader's
            self._rebind_rest(service, metrics)
        else:
            register_rest(self._wsgi, service, metrics)
        self._ticker = hub.spawn(self._tick_loop, service)
        return service

    def _await_lead(self, store: PgStore) -> None:
        """The standby's wait: poll the leader's lock, then take over and claim every
        connected switch (MASTER, table-miss, stale flows, active reactions)."""
        while not store.try_lead():  # False also while the server does not answer
            hub.sleep(LEAD_POLL_SECONDS)
        started = time.monotonic()
        # a green thread cannot end the process by raising; and a standby that holds
        # the lock without leading would leave the network without a controller
        try:
            service = self._lead(store)
        except SystemExit:  # the store failed (logged by _lead)
            os._exit(2)
        except Exception:  # broad: logged with its traceback, then exit for a restart
            self.logger.exception("taking over failed")
            os._exit(2)
        for dp in list(self.datapaths.values()):
            self._claim(dp, service)
        self.logger.info("leader now, on %s (generation %s, %d switch(es) claimed in %.2f s)",
                         store.path, self.role_generation, len(self.datapaths),
                         time.monotonic() - started)

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

    def _tick_loop(self, service: MeasureService) -> None:
        """``service.tick`` at once (a take-over pushes the overlay and the tasks without
        waiting), then every second, or at once when a REST call queued a push.

        ``tick`` never raises: it logs, counts and shows a failure in health.
        """
        wake = hub.Event()
        service.wake = wake.set
        while True:
            self._send_queued_reactions(service)  # queued by a report: before the tick's work
            service.tick(time.time())
            self._send_queued_reactions(service)  # expiries found by the tick
            wake.wait(timeout=TICK_SECONDS)
            wake.clear()

    def _topology_changed(self, flush: bool) -> None:
        if self.measure is None:  # a standby keeps the switches and ports, sends nothing
            return
        if flush:
            self._send(self.forwarding.invalidate_all())
        self.measure.on_topology_changed()

    # ------------------------------------------------------------ switches

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        self.datapaths[dp.id] = dp
        if self.measure is not None:
            self._claim(dp, self.measure)
        else:  # a standby: SLAVE, at the current leader's generation
            try:
                generation = int(self.service.store.get_meta(GENERATION_KEY, "0") or 0)
            except StoreError as exc:  # asks again when the switch reconnects
                self.logger.warning("switch %016x: no SLAVE role request: %s", dp.id, exc)
                return
            dp.send_msg(ofmsg.role(dp, "slave", generation))

    def _claim(self, dp, service: MeasureService) -> None:
        """Take a switch as the leader: MASTER on a shared store (the switch makes every
        other controller SLAVE), the table-miss flows, no stale forwarding flows, the
        active reactions with their remaining time."""
        if self.role_generation is not None:
            dp.send_msg(ofmsg.role(dp, "master", self.role_generation))
        for msg in ofmsg.table_miss(dp):
            dp.send_msg(msg)
        # Flows from an earlier run of the controller may be stale.
        self._send([FlowDelete(dp.id, self.forwarding.cookie)])
        # active reactions, with their remaining time
        self._send_reactions(service.actions.on_switch(dp.id))

    @set_ev_cls(ofp_event.EventOFPRoleReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _role_reply(self, ev):
        """What the switch says this controller now is (shown in ``health``)."""
        msg = ev.msg
        self.switch_roles[msg.datapath.id] = ofmsg.role_name(msg.datapath, msg.role)
        self.logger.info("switch %016x: %s (generation %d)", msg.datapath.id,
                         self.switch_roles[msg.datapath.id], msg.generation_id)

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
        self.switch_roles.pop(dpid, None)
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
        if self.measure is None:  # sent before the switch took the SLAVE role: the leader's
            return
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

    def _send_queued_reactions(self, service: MeasureService) -> None:
        try:
            self._send_reactions(service.actions.drain())
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
