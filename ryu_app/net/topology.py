"""The discovered network as a graph: switches, links and hosts.

One ``networkx.Graph`` holds everything. Switch nodes are ints (the
datapath id), host nodes are MAC strings; a node's ``kind`` attribute says
which. A switch-switch edge carries the port at each end (``ports`` maps
dpid -> port); a host-switch edge carries the switch port. LLDP reports
every link once per direction: both directions map to the same undirected
edge, and removing either direction removes it (a link is only useful when
it works both ways).

Hosts are learned from packet-in. A frame arriving on a port that ends an
inter-switch link says nothing about where its source lives, so such ports
are ignored; so are multicast/broadcast sources and the LLDP and IPv6
multicast chatter. When a link is discovered on a port that hosts were
learned on (the link was found after their packets), those hosts are
forgotten and re-learned at their real place.

Flooding uses a spanning tree over the switches: a BFS tree from the
smallest dpid of each connected component, recomputed lazily after every
change (``version`` counts changes, so callers can cache per version).
Every port also remembers since when it has been known (``port_age``): a
port that has just appeared may still turn out to be an inter-switch link,
so forwarding can wait a moment before flooding out of it.

DPIDs are ints inside; the REST form is a 16-hex-digit string
(``dpid_to_str``/``str_to_dpid`` are the one place where they are converted).
Nothing here imports Ryu; times are passed in as ``now``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import networkx as nx

SWITCH = "switch"
HOST = "host"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_DPID_RE = re.compile(r"^[0-9a-fA-F]{1,16}$")

# Destination prefixes of frames that are control chatter, not hosts
# talking: LLDP/STP (01:80:c2) and IPv6 multicast (33:33), except the
# solicited-node groups (33:33:ff) of IPv6 neighbour discovery: without
# those, no IPv6 host would find another's MAC address.
JUNK_DST_PREFIXES = ("01:80:c2:", "33:33:")
ND_DST_PREFIX = "33:33:ff:"


def is_chatter(dst: str) -> bool:
    """A frame to ``dst`` (a MAC) is control chatter: dropped, its source not learned."""
    d = dst.lower()
    return d.startswith(JUNK_DST_PREFIXES) and not d.startswith(ND_DST_PREFIX)


def dpid_to_str(dpid: int) -> str:
    """The REST form of a datapath id: 16 lowercase hex digits."""
    return f"{dpid:016x}"


def str_to_dpid(text: str) -> int:
    """Parse a datapath id given as up to 16 hex digits."""
    if not isinstance(text, str) or not _DPID_RE.match(text):
        raise ValueError(f"dpid {text!r} is not 1 to 16 hex digits")
    return int(text, 16)


def normalize_mac(mac: str) -> str:
    mac = mac.lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"mac {mac!r} is not six colon-separated hex bytes")
    return mac


def is_unicast_mac(mac: str) -> bool:
    return not int(mac[:2], 16) & 1


@dataclass
class Host:
    """A host as the controller knows it: where it is attached, its IPs."""

    mac: str
    dpid: int
    port: int
    ips: set[str] = field(default_factory=set)

    def to_dict(self) -> dict:
        return {"mac": self.mac, "ips": sorted(self.ips, key=ipaddress.ip_address),
                "dpid": dpid_to_str(self.dpid), "port": self.port}


IP_CONFIRM_SECONDS = 10.0   # a claim on another host's IP must persist this long
IP_MOVE_INTERVAL = 60.0     # and an IP changes owner at most once in this many seconds


class Topology:
    """Switches, links and hosts, with paths and a flooding tree."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.version = 0
        self._port_since: dict[tuple[int, int], float] = {}
        self._tree_version = -1
        self._tree_ports: set[tuple[int, int]] = set()
        # IP ownership is pinned: (ip -> (claimant mac, first claim time)) of
        # refused claims, the time each IP last changed owner, refusals counted
        self._claims: dict[str, tuple[str, float]] = {}
        self._ip_moved_at: dict[str, float] = {}
        self.ip_conflicts = 0

    def _changed(self) -> None:
        self.version += 1

    # ------------------------------------------------------------ switches

    def add_switch(self, dpid: int, ports: list[int] | tuple[int, ...] = (),
                   now: float = 0.0) -> bool:
        """Add a switch (or new ports of a known one). True if anything changed."""
        changed = False
        if not self.has_switch(dpid):
            self.graph.add_node(dpid, kind=SWITCH, ports=set())
            changed = True
        for port in ports:
            changed |= self.add_port(dpid, port, now)
        if changed:
            self._changed()
        return changed

    def has_switch(self, dpid: int) -> bool:
        return self.graph.nodes.get(dpid, {}).get("kind") == SWITCH

    def remove_switch(self, dpid: int) -> bool:
        """Remove a switch with its links and the hosts attached to it."""
        if not self.has_switch(dpid):
            return False
        for mac in [h.mac for h in self.hosts() if h.dpid == dpid]:
            self.graph.remove_node(mac)
        self.graph.remove_node(dpid)
        self._port_since = {k: v for k, v in self._port_since.items() if k[0] != dpid}
        self._changed()
        return True

    def add_port(self, dpid: int, port: int, now: float = 0.0) -> bool:
        if not self.has_switch(dpid):
            self.add_switch(dpid, now=now)
        ports = self.graph.nodes[dpid]["ports"]
        if port in ports:
            return False
        ports.add(port)
        self._port_since[(dpid, port)] = now
        self._changed()
        return True

    def remove_port(self, dpid: int, port: int) -> bool:
        """Remove a port, the link on it and the hosts learned behind it."""
        if not self.has_switch(dpid) or port not in self.graph.nodes[dpid]["ports"]:
            return False
        self.graph.nodes[dpid]["ports"].discard(port)
        self._port_since.pop((dpid, port), None)
        for other in list(self.graph.neighbors(dpid)):
            if self.graph.edges[dpid, other]["ports"].get(dpid) == port:
                self.graph.remove_edge(dpid, other)
                if self.graph.nodes[other]["kind"] == HOST:
                    self.graph.remove_node(other)
        self._changed()
        return True

    def switches(self) -> list[int]:
        return sorted(n for n, d in self.graph.nodes(data=True) if d["kind"] == SWITCH)

    def ports(self, dpid: int) -> list[int]:
        return sorted(self.graph.nodes[dpid]["ports"]) if self.has_switch(dpid) else []

    def port_age(self, dpid: int, port: int, now: float) -> float:
        """Seconds since the port appeared or last stopped being a link end."""
        since = self._port_since.get((dpid, port))
        return -1.0 if since is None else now - since

    # ------------------------------------------------------------ links

    def add_link(self, src_dpid: int, src_port: int, dst_dpid: int, dst_port: int,
                 now: float = 0.0) -> bool:
        """Add the undirected link for one LLDP direction. True if new or changed."""
        if src_dpid == dst_dpid:
            return False
        for dpid, port in ((src_dpid, src_port), (dst_dpid, dst_port)):
            self.add_port(dpid, port, now)
        ports = {src_dpid: src_port, dst_dpid: dst_port}
        if self.graph.has_edge(src_dpid, dst_dpid):
            if self.graph.edges[src_dpid, dst_dpid]["ports"] == ports:
                return False
            self.graph.remove_edge(src_dpid, dst_dpid)
        # A port ends at most one link; hosts seen on it were mislearned.
        for dpid, port in ports.items():
            for other in list(self.graph.neighbors(dpid)):
                if self.graph.edges[dpid, other]["ports"].get(dpid) == port:
                    self.graph.remove_edge(dpid, other)
                    if self.graph.nodes[other]["kind"] == HOST:
                        self.graph.remove_node(other)
        self.graph.add_edge(src_dpid, dst_dpid, kind=SWITCH, ports=ports)
        self._changed()
        return True

    def remove_link(self, src_dpid: int, src_port: int, dst_dpid: int, dst_port: int,
                    now: float = 0.0) -> bool:
        """Remove the link reported in either direction; True if it existed."""
        if not self.graph.has_edge(src_dpid, dst_dpid):
            return False
        edge = self.graph.edges[src_dpid, dst_dpid]
        if edge.get("kind") != SWITCH or edge["ports"] != {src_dpid: src_port,
                                                           dst_dpid: dst_port}:
            return False
        self.graph.remove_edge(src_dpid, dst_dpid)
        for key in ((src_dpid, src_port), (dst_dpid, dst_port)):
            if key in self._port_since:
                self._port_since[key] = now
        self._changed()
        return True

    def links(self) -> list[tuple[int, int, int, int]]:
        """Links as (dpid_a, port_a, dpid_b, port_b) with dpid_a < dpid_b, sorted."""
        out = []
        for a, b, data in self.graph.edges(data=True):
            if data.get("kind") == SWITCH:
                a, b = sorted((a, b))
                out.append((a, data["ports"][a], b, data["ports"][b]))
        return sorted(out)

    def link_port(self, dpid: int, neighbor: int) -> int | None:
        """The port of ``dpid`` facing switch ``neighbor``, if they are linked."""
        if not self.graph.has_edge(dpid, neighbor):
            return None
        return self.graph.edges[dpid, neighbor]["ports"].get(dpid)

    def is_internal_port(self, dpid: int, port: int) -> bool:
        """True if the port ends an inter-switch link."""
        if not self.has_switch(dpid):
            return False
        for other in self.graph.neighbors(dpid):
            edge = self.graph.edges[dpid, other]
            if edge["kind"] == SWITCH and edge["ports"][dpid] == port:
                return True
        return False

    # ------------------------------------------------------------ hosts

    def learn_host(self, mac: str, ip: str | None, dpid: int, port: int,
                   dst: str | None = None, now: float = 0.0) -> str | None:
        """Record that ``mac`` (with ``ip``) sits behind ``dpid``/``port``.

        Returns ``"new"``, ``"moved"``, ``"ip"`` (a new address of a known
        host) or ``None`` when nothing was learned: unknown switch,
        inter-switch port, non-unicast source, or control chatter (``dst``
        is the frame's destination MAC, used to spot LLDP/IPv6 multicast).
        """
        mac = normalize_mac(mac)
        if not self.has_switch(dpid) or not is_unicast_mac(mac):
            return None
        if dst is not None and is_chatter(dst):
            return None
        if self.is_internal_port(dpid, port):
            return None
        if ip in (None, "", "0.0.0.0"):
            ip = None
        if ip is not None and not self._may_take(ip, mac, now):
            ip = None  # pinned to another host: learned without it (the guard drops it)
        old = self.host_by_mac(mac)
        if old is None:
            self.graph.add_node(mac, kind=HOST, host=Host(mac, dpid, port,
                                                          {ip} if ip else set()))
            self.graph.add_edge(mac, dpid, kind=HOST, ports={dpid: port})
            self._changed()
            return "new"
        result = None
        if (old.dpid, old.port) != (dpid, port):
            self.graph.remove_edge(mac, old.dpid)
            old.dpid, old.port = dpid, port
            self.graph.add_edge(mac, dpid, kind=HOST, ports={dpid: port})
            result = "moved"
        if ip and ip not in old.ips:
            old.ips.add(ip)
            result = result or "ip"
        if result:
            self._changed()
        return result

    def _may_take(self, ip: str, mac: str, now: float) -> bool:
        """Whether ``mac`` may own ``ip`` now; moves it from its owner when confirmed.

        A confirmed claim: the same MAC claimed the IP at least
        ``IP_CONFIRM_SECONDS`` ago and claims it still, and the IP has not
        changed owner in the last ``IP_MOVE_INTERVAL`` seconds.
        """
        owner = self.host_by_ip(ip)
        if owner is None or owner.mac == mac:
            self._claims.pop(ip, None)
            return True
        first = self._claims.get(ip)
        if first is None or first[0] != mac:
            self._claims[ip] = (mac, now)
            self.ip_conflicts += 1
            return False
        if now - first[1] < IP_CONFIRM_SECONDS or \
                now - self._ip_moved_at.get(ip, -IP_MOVE_INTERVAL) < IP_MOVE_INTERVAL:
            self.ip_conflicts += 1
            return False
        owner.ips.discard(ip)
        self._claims.pop(ip, None)
        self._ip_moved_at[ip] = now
        return True

    def bind_ip(self, mac: str, ip: str, now: float = 0.0) -> bool:
        """An agent registered ``ip`` for ``mac``: the host (if known) owns it at once.

        True when the binding changed anything."""
        mac = normalize_mac(mac)
        host = self.host_by_mac(mac)
        if host is None or ip in host.ips:
            return False
        for other in self.hosts():
            if other.mac != mac:
                other.ips.discard(ip)
        host.ips.add(ip)
        self._claims.pop(ip, None)
        self._ip_moved_at[ip] = now
        self._changed()
        return True

    def remove_host(self, mac: str) -> bool:
        host = self.host_by_mac(mac)
        if host is None:
            return False
        self.graph.remove_node(host.mac)
        self._changed()
        return True

    def hosts(self) -> list[Host]:
        return sorted((d["host"] for _, d in self.graph.nodes(data=True) if d["kind"] == HOST),
                      key=lambda h: h.mac)

    def host_by_mac(self, mac: str) -> Host | None:
        node = self.graph.nodes.get(mac.lower())
        return node["host"] if node and node["kind"] == HOST else None

    def host_by_ip(self, ip: str) -> Host | None:
        for host in self.hosts():
            if ip in host.ips:
                return host
        return None

    # ------------------------------------------------------------ paths

    def _switch_graph(self) -> nx.Graph:
        return self.graph.subgraph(self.switches())

    def shortest_path(self, src_dpid: int, dst_dpid: int) -> list[int] | None:
        """Switches from ``src_dpid`` to ``dst_dpid`` (inclusive), or None."""
        if not (self.has_switch(src_dpid) and self.has_switch(dst_dpid)):
            return None
        try:
            return nx.shortest_path(self._switch_graph(), src_dpid, dst_dpid)
        except nx.NetworkXNoPath:
            return None

    # ------------------------------------------------------------ flooding

    def tree_ports(self) -> set[tuple[int, int]]:
        """(dpid, port) ends of the links in the BFS spanning tree."""
        if self._tree_version != self.version:
            ports: set[tuple[int, int]] = set()
            graph = self._switch_graph()
            for component in nx.connected_components(graph):
                root = min(component)
                for a, b in nx.bfs_edges(graph, root, sort_neighbors=sorted):
                    edge = graph.edges[a, b]["ports"]
                    ports.add((a, edge[a]))
                    ports.add((b, edge[b]))
            self._tree_ports, self._tree_version = ports, self.version
        return self._tree_ports

    def edge_ports(self, dpid: int) -> list[int]:
        """Ports of ``dpid`` that do not end an inter-switch link."""
        return [p for p in self.ports(dpid) if not self.is_internal_port(dpid, p)]

    # ------------------------------------------------------------ output

    def to_dict(self) -> dict:
        """The REST form (``GET /measure/v1/topology``)."""
        return {
            "switches": [{"dpid": dpid_to_str(d), "ports": self.ports(d)}
                         for d in self.switches()],
            "links": [{"src": {"dpid": dpid_to_str(a), "port": pa},
                       "dst": {"dpid": dpid_to_str(b), "port": pb}}
                      for a, pa, b, pb in self.links()],
            "hosts": [h.to_dict() for h in self.hosts()],
        }
