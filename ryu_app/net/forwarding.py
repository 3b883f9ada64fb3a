"""Forwarding decisions: what to install and send for a packet-in.

This module decides; it does not talk OpenFlow. ``Forwarding.packet_in``
takes a parsed packet (``Packet``) and the time, updates the topology's
host table, and *returns* plain decisions (``SourceFlow``, ``FlowMod``,
``FlowDelete``, ``PacketOut``) that the Ryu shim turns into OpenFlow 1.3 messages, the way
FAUCET's valve returns messages to ``faucet.py``.

Rules, in order:

1. Control chatter (LLDP, STP, IPv6 multicast but neighbour discovery) is
   dropped: Ryu's own LLDP flow handles discovery. IPv6 neighbour
   solicitations (to the solicited-node groups ``33:33:ff:*``) flood like
   broadcasts (rule 4), so IPv6 hosts find each other; IPv6 unicast then
   follows the same ``eth_dst`` flows as IPv4.
2. ARP requests for an address the controller knows are answered by the
   controller itself on the ingress port (proxy ARP), so most ARP never
   floods at all.
3. Known destination: the shortest switch path from the ingress switch to
   the destination's switch. Each switch on it gets a flow matching
   ``eth_dst`` only (destination-based, so one flow per switch serves every
   source), installed downstream first, then the packet goes out of the
   ingress switch. Any suffix of a shortest path is a shortest path, so
   flows written for different sources never form a loop.
4. Otherwise (broadcast, multicast, unknown destination) the packet floods
   along the spanning tree: out of the switch's tree ports and its
   host-facing ports, never back out of the ingress port. A flooded copy
   that arrives on an inter-switch port outside the tree is dropped. So
   floods are loop-free on any topology. A port that appeared (or stopped
   being a link end) less than ``settle`` seconds ago is not flooded out of
   yet: LLDP may still show it to be a link, and flooding into an
   undiscovered cycle would storm.

Two tables. Table 0 (``SRC_TABLE``) admits known sources: a ``SourceFlow``
per (switch, learned host) sends the frame on to table 1, and anything else
misses to the controller. Table 1 (``DST_TABLE``) holds the ``eth_dst``
flows of rule 3; a miss goes to the controller too. Without table 0, a
host whose every destination already has flows would never reach the
controller and never be learned (the last host of a pingall, which got
all its neighbours' addresses from their ARP requests). On the host's own
switch the source flow also matches ``in_port``, so a host that moves to
another port misses and is re-learned.

All flows carry ``cookie``; on a switch or link change the shim deletes
them by cookie on every switch (``invalidate_all``), leaving the table-miss
flow and Ryu's LLDP flow alone. Routing around avoided links (``reroute``)
touches only the (switch, destination) flows whose next hop changes. A host
that moved has its flows removed by ``eth_dst`` (``invalidate_host``).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from ryu_app.net.topology import Topology, is_chatter

ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_LLDP = 0x88CC
ARP_REQUEST = 1
ARP_REPLY = 2

FLOW_COOKIE = 0x4D45415355524531  # "MEASURE1"
FLOW_PRIORITY = 10
SRC_TABLE = 0
DST_TABLE = 1
IDLE_TIMEOUT = 60
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Packet:
    """The fields of a packet-in that forwarding looks at."""

    src: str
    dst: str
    dpid: int
    in_port: int
    eth_type: int
    ip_src: str | None = None
    arp_op: int | None = None
    arp_spa: str | None = None
    arp_tpa: str | None = None


@dataclass(frozen=True)
class FlowMod:
    """Install: on ``dpid``, frames to ``eth_dst`` go out of ``out_port``."""

    dpid: int
    eth_dst: str
    out_port: int
    priority: int = FLOW_PRIORITY
    idle_timeout: int = IDLE_TIMEOUT
    cookie: int = FLOW_COOKIE


@dataclass(frozen=True)
class SourceFlow:
    """Install in table 0: frames from ``eth_src`` (on ``in_port`` if set) go to table 1."""

    dpid: int
    eth_src: str
    in_port: int | None = None
    priority: int = FLOW_PRIORITY
    idle_timeout: int = IDLE_TIMEOUT
    cookie: int = FLOW_COOKIE


@dataclass(frozen=True)
class FlowDelete:
    """Delete this app's flows on ``dpid`` (only those matching ``field`` = ``mac`` if given)."""

    dpid: int
    cookie: int = FLOW_COOKIE
    mac: str | None = None
    field: str = "eth_dst"


@dataclass(frozen=True)
class PacketOut:
    """Send a frame out of ``out_ports``; ``data`` None means the packet-in's frame."""

    dpid: int
    in_port: int
    out_ports: tuple[int, ...]
    data: bytes | None = None


@dataclass(frozen=True)
class SourceGuard:
    """IP source guard in table 0 on a host's own switch and port: IPv4 from
    ``eth_src`` on ``in_port`` goes on only with a source in ``ips`` (ARP only
    with a sender address in ``ips``); any other IPv4 or ARP from there is
    dropped by the switch (the flow's packet counter counts it)."""

    dpid: int
    eth_src: str
    in_port: int
    ips: tuple[str, ...]
    priority: int = FLOW_PRIORITY
    idle_timeout: int = IDLE_TIMEOUT
    cookie: int = FLOW_COOKIE


Decision = SourceFlow | SourceGuard | FlowMod | FlowDelete | PacketOut


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def arp_reply(requester_mac: str, requester_ip: str, target_mac: str, target_ip: str) -> bytes:
    """An Ethernet frame carrying the ARP reply ``target_ip is-at target_mac``."""
    eth = mac_bytes(requester_mac) + mac_bytes(target_mac) + struct.pack("!H", ETH_TYPE_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_TYPE_IPV4, 6, 4, ARP_REPLY)
    arp += mac_bytes(target_mac) + ipaddress.IPv4Address(target_ip).packed
    arp += mac_bytes(requester_mac) + ipaddress.IPv4Address(requester_ip).packed
    return eth + arp


class Forwarding:
    """Shortest-path unicast, spanning-tree flooding, proxy ARP."""

    def __init__(self, topology: Topology, proxy_arp: bool = True,
                 settle: float = SETTLE_SECONDS, idle_timeout: int = IDLE_TIMEOUT,
                 priority: int = FLOW_PRIORITY, cookie: int = FLOW_COOKIE,
                 source_guard: bool = False) -> None:
        self.topology = topology
        self.source_guard = source_guard
        self.spoofed: dict[tuple[int, int], int] = {}  # (dpid, port) -> packets dropped here
        self.proxy_arp = proxy_arp
        self.settle = settle
        self.idle_timeout = idle_timeout
        self.priority = priority
        self.cookie = cookie

    def packet_in(self, pkt: Packet, now: float) -> list[Decision]:
        """Learn from the packet and decide what to do with it."""
        dst = pkt.dst.lower()
        if pkt.eth_type == ETH_TYPE_LLDP or is_chatter(dst):
            return []
        if not self.topology.has_switch(pkt.dpid):
            return []
        out: list[Decision] = []
        ip = pkt.arp_spa if pkt.eth_type == ETH_TYPE_ARP else pkt.ip_src
        if self.topology.learn_host(pkt.src, ip, pkt.dpid, pkt.in_port, dst, now) == "moved":
            out += self.invalidate_host(pkt.src)
        src = self.topology.host_by_mac(pkt.src)
        # A host first seen in an IPv6 neighbour solicitation has no IPv4 address yet: its
        # source flow would keep its ARP and IPv4 packets from the controller for good, so
        # it is installed once the address is known.
        if src is not None and (src.ips or pkt.eth_type != ETH_TYPE_IPV6):
            in_port = pkt.in_port if src.dpid == pkt.dpid else None
            if in_port is None or src.port == in_port:
                out.append(SourceFlow(pkt.dpid, src.mac, in_port, self.priority,
                                      self.idle_timeout, self.cookie))
                v4 = tuple(sorted(i for i in src.ips if ipaddress.ip_address(i).version == 4))
                if in_port is not None and v4 and self.source_guard:
                    out.append(SourceGuard(pkt.dpid, src.mac, in_port, v4, self.priority,
                                           self.idle_timeout, self.cookie))
        if self._spoofed(pkt, src, ip):
            self.spoofed[(pkt.dpid, pkt.in_port)] = \
                self.spoofed.get((pkt.dpid, pkt.in_port), 0) + 1
            return out  # learned what could be learned; the packet itself goes nowhere
        if pkt.eth_type == ETH_TYPE_ARP and pkt.arp_op == ARP_REQUEST and self.proxy_arp:
            reply = self._proxy_arp(pkt)
            if reply is not None:
                return out + [reply]
        host = self.topology.host_by_mac(dst)
        if host is not None:
            return out + self._unicast(pkt, host.dpid, host.port, dst)
        return out + self.flood(pkt, now)

    def _spoofed(self, pkt: Packet, src: Any, ip: str | None) -> bool:
        """An IPv4 or ARP packet, from a host's own port, whose source address that
        host does not own (``0.0.0.0``, as DHCP and ARP probes send, passes)."""
        if not self.source_guard or pkt.eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_ARP):
            return False
        if ip in (None, "", "0.0.0.0"):
            return False
        if src is None:  # not learnable here (inter-switch port, multicast source)
            return False
        return src.dpid == pkt.dpid and src.port == pkt.in_port and ip not in src.ips

    def _proxy_arp(self, pkt: Packet) -> PacketOut | None:
        if not pkt.arp_spa or not pkt.arp_tpa or pkt.arp_spa == pkt.arp_tpa:
            return None
        target = self.topology.host_by_ip(pkt.arp_tpa)
        if target is None or target.mac == pkt.src.lower():
            return None
        frame = arp_reply(pkt.src.lower(), pkt.arp_spa, target.mac, pkt.arp_tpa)
        # in_port stays "controller" for OpenFlow; out of the ingress port.
        return PacketOut(pkt.dpid, pkt.in_port, (pkt.in_port,), frame)

    def _unicast(self, pkt: Packet, dst_dpid: int, dst_port: int, dst: str) -> list[Decision]:
        path = self.topology.shortest_path(pkt.dpid, dst_dpid)
        if path is None:
            return []
        hops = self.path_hops(path, dst_port)
        if hops[0] == (pkt.dpid, pkt.in_port):
            return []  # the destination sits behind the ingress port
        flows: list[Decision] = [
            FlowMod(dpid, dst, port, self.priority, self.idle_timeout, self.cookie)
            for dpid, port in reversed(hops)]
        if self.topology.host_by_mac(pkt.src) is not None:
            # Admit the (known) source downstream too: one packet-in per new path.
            flows = [SourceFlow(dpid, pkt.src.lower(), None, self.priority, self.idle_timeout,
                                self.cookie) for dpid, _ in hops[1:]] + flows
        return flows + [PacketOut(pkt.dpid, pkt.in_port, (hops[0][1],))]

    def path_hops(self, path: list[int], last_port: int) -> list[tuple[int, int]]:
        """(dpid, out_port) for each switch of ``path``; the last leaves by ``last_port``."""
        hops = []
        for here, nxt in zip(path, path[1:], strict=False):
            port = self.topology.link_port(here, nxt)
            assert port is not None, f"no link {here} -> {nxt}"
            hops.append((here, port))
        hops.append((path[-1], last_port))
        return hops

    def flood_ports(self, dpid: int, in_port: int, now: float) -> list[int]:
        """Tree ports and settled host-facing ports of ``dpid``, minus ``in_port``."""
        tree = self.topology.tree_ports()
        ports = {p for d, p in tree if d == dpid}
        ports |= {p for p in self.topology.edge_ports(dpid)
                  if self.topology.port_age(dpid, p, now) >= self.settle}
        ports.discard(in_port)
        return sorted(ports)

    def flood(self, pkt: Packet, now: float) -> list[Decision]:
        if (self.topology.is_internal_port(pkt.dpid, pkt.in_port)
                and (pkt.dpid, pkt.in_port) not in self.topology.tree_ports()):
            return []  # a copy that came over a non-tree link: drop it
        ports = self.flood_ports(pkt.dpid, pkt.in_port, now)
        return [PacketOut(pkt.dpid, pkt.in_port, tuple(ports))] if ports else []

    def next_hops(self) -> dict[tuple[int, str], int]:
        """(dpid, host MAC) -> the port this switch forwards that host's frames out of,
        for every learned host and every switch that reaches it."""
        out: dict[tuple[int, str], int] = {}
        for host in self.topology.hosts():
            out[(host.dpid, host.mac)] = host.port
            for here, nxt in self.topology.dst_tree(host.dpid).items():
                port = self.topology.link_port(here, nxt)
                if port is not None:
                    out[(here, host.mac)] = port
        return out

    def reroute(self, avoided: set[frozenset[int]]) -> list[Decision] | None:
        """Route around ``avoided`` (switch links), moving only the flows that change.

        None if the avoided set is unchanged. Otherwise, for each (switch,
        destination) whose next hop differs, a ``FlowMod`` with the new port (an add
        replaces the flow of the same match), or a ``FlowDelete`` of that
        destination's flow where the switch no longer reaches it. Per destination
        the switches nearest to it come first, so a switch is pointed at a neighbour
        that already forwards on the new path. Every other flow stays as it is."""
        before = self.next_hops()
        if not self.topology.set_avoided(avoided):
            return None
        after = self.next_hops()
        depth: dict[tuple[int, str], int] = {}
        for host in self.topology.hosts():
            # dst_tree lists switches in BFS order from the destination: nearest first
            for rank, here in enumerate(self.topology.dst_tree(host.dpid), start=1):
                depth[(here, host.mac)] = rank
        out: list[Decision] = []
        for key in sorted(set(before) | set(after), key=lambda k: (k[1], depth.get(k, 0), k)):
            dpid, mac = key
            old, new = before.get(key), after.get(key)
            if old is None or old == new:
                continue  # never routed there (nothing to move) or unchanged
            if new is None:
                out.append(FlowDelete(dpid, self.cookie, mac, "eth_dst"))
            else:
                out.append(FlowMod(dpid, mac, new, self.priority, self.idle_timeout,
                                   self.cookie))
        return out

    def invalidate_all(self) -> list[Decision]:
        """Delete this app's flows on every switch (after a switch/link change)."""
        return [FlowDelete(dpid, self.cookie) for dpid in self.topology.switches()]

    def invalidate_host(self, mac: str) -> list[Decision]:
        """Delete the flows from and to ``mac`` on every switch (the host moved)."""
        return [FlowDelete(dpid, self.cookie, mac.lower(), field)
                for dpid in self.topology.switches() for field in ("eth_dst", "eth_src")]
