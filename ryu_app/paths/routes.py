"""The controller's own path of a measured pair, switch by switch and port by port.

Forwarding (``ryu_app.net.forwarding``) sends every frame toward a host along
its destination switch's BFS tree (``Topology.dst_tree``) and out of the
host's port, so the path a probe takes is known exactly, not guessed by
traceroute. There is no ECMP: one path per direction. A probe is echoed, so
a pair measures the forward path *and* the reverse one; its ``links`` are the
union of both, each link undirected (a round trip cannot tell the two
directions of a link apart).

Link keys are tuples, hashable and ordered:

- ``("switch", a, port_a, b, port_b)`` with ``a < b`` (dpids);
- ``("access", host, dpid, port)`` for a host's access link.

``link_dict`` turns one into the published form (``src_switch``, ...;
``host``, ``switch``, ``port``) and ``parse_link`` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ryu_app.net.topology import Topology, dpid_to_str, str_to_dpid

SWITCH_LINK = "switch"
ACCESS_LINK = "access"

LinkKey = tuple  # ("switch", a, pa, b, pb) | ("access", host, dpid, port)


def switch_link(a: int, pa: int, b: int, pb: int) -> LinkKey:
    """The key of the link between ``a``:``pa`` and ``b``:``pb`` (either order)."""
    return (SWITCH_LINK, a, pa, b, pb) if a < b else (SWITCH_LINK, b, pb, a, pa)


def access_link(host: str, dpid: int, port: int) -> LinkKey:
    return (ACCESS_LINK, host, dpid, port)


def link_dict(key: LinkKey) -> dict[str, Any]:
    """The published form of a link key."""
    if key[0] == ACCESS_LINK:
        return {"host": key[1], "switch": dpid_to_str(key[2]), "port": key[3]}
    return {"src_switch": dpid_to_str(key[1]), "src_port": key[2],
            "dst_switch": dpid_to_str(key[3]), "dst_port": key[4]}


def link_name(key: LinkKey) -> str:
    """A short text form: ``h1-s1:1`` or ``s1:3-s2:1`` (dpids in hex, leading zeros cut)."""
    if key[0] == ACCESS_LINK:
        return f"{key[1]}-s{key[2]:x}:{key[3]}"
    return f"s{key[1]:x}:{key[2]}-s{key[3]:x}:{key[4]}"


def parse_link(body: Any) -> LinkKey:
    """Read a link given in its published form (or its ``link_name``); ValueError names
    the field that is wrong."""
    if isinstance(body, str):
        return _parse_name(body)
    if not isinstance(body, dict):
        raise ValueError("link: must be an object or a name like s1:3-s2:1")
    try:
        if "host" in body:
            if not isinstance(body["host"], str) or not body["host"]:
                raise ValueError("link: field 'host' must be a host name")
            return access_link(body["host"], str_to_dpid(str(body.get("switch"))),
                               _port(body.get("port"), "port"))
        return switch_link(str_to_dpid(str(body.get("src_switch"))),
                           _port(body.get("src_port"), "src_port"),
                           str_to_dpid(str(body.get("dst_switch"))),
                           _port(body.get("dst_port"), "dst_port"))
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("link:") else f"link: {msg}") from None


def _port(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
        raise ValueError(f"link: field '{name}' must be a port number")
    return value


_END_RE = re.compile(r"^s([0-9a-f]{1,16}):([0-9]{1,10})$")


def _parse_name(text: str) -> LinkKey:
    left, _, right = text.rpartition("-")
    end, start = _END_RE.match(right), _END_RE.match(left)
    if not left or end is None:
        raise ValueError(f"link: {text!r} is not a link name like s1:3-s2:1 or h1-s1:1")
    if start is None:
        return access_link(left, int(end[1], 16), int(end[2]))
    return switch_link(int(start[1], 16), int(start[2]), int(end[1], 16), int(end[2]))


@dataclass(frozen=True)
class Hop:
    """One switch of a path: the frame enters on ``in_port`` and leaves by ``out_port``."""

    dpid: int
    in_port: int
    out_port: int

    def to_dict(self) -> dict[str, Any]:
        return {"switch": dpid_to_str(self.dpid), "in_port": self.in_port,
                "out_port": self.out_port}


def hops(topology: Topology, src: tuple[int, int], dst: tuple[int, int]) -> list[Hop] | None:
    """The switches a frame from the host at ``src`` (dpid, port) to the host at ``dst``
    crosses, as forwarding routes it; None when there is no path."""
    path = topology.shortest_path(src[0], dst[0])
    if path is None:
        return None
    out: list[Hop] = []
    in_port = src[1]
    for here, nxt in zip(path, path[1:], strict=False):
        port, back = topology.link_port(here, nxt), topology.link_port(nxt, here)
        if port is None or back is None:  # no link between them (any more)
            return None
        out.append(Hop(here, in_port, port))
        in_port = back
    out.append(Hop(path[-1], in_port, dst[1]))
    return out


def hop_links(src_host: str, dst_host: str, path: list[Hop]) -> list[LinkKey]:
    """The links of one direction's path, access links included, in order."""
    first, last = path[0], path[-1]
    links = [access_link(src_host, first.dpid, first.in_port)]
    for here, nxt in zip(path, path[1:], strict=False):
        links.append(switch_link(here.dpid, here.out_port, nxt.dpid, nxt.in_port))
    links.append(access_link(dst_host, last.dpid, last.out_port))
    return links


@dataclass(frozen=True)
class PairPath:
    """A measured pair's two directions and the links the round trip crosses."""

    src: str
    dst: str
    forward: tuple[Hop, ...]
    reverse: tuple[Hop, ...]
    links: frozenset[LinkKey]
    fwd_links: tuple[LinkKey, ...] = ()  # the forward path's links, in order
    rev_links: tuple[LinkKey, ...] = ()  # the reverse path's

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst,
                "forward": [h.to_dict() for h in self.forward],
                "reverse": [h.to_dict() for h in self.reverse],
                "links": [link_dict(k) for k in sorted(self.links, key=_order)]}


def _order(key: LinkKey) -> tuple:
    return (key[0], str(key[1]), key[2:])


def pair_path(topology: Topology, attach: dict[str, tuple[int, int]], src: str,
              dst: str) -> PairPath | None:
    """The path of the pair ``src`` -> ``dst`` (host names; ``attach`` maps a name to its
    switch and port), or None when either host is unlocated or unreachable."""
    if src not in attach or dst not in attach:
        return None
    fwd = hops(topology, attach[src], attach[dst])
    rev = hops(topology, attach[dst], attach[src])
    if fwd is None or rev is None:
        return None
    there, back = tuple(hop_links(src, dst, fwd)), tuple(hop_links(dst, src, rev))
    return PairPath(src, dst, tuple(fwd), tuple(rev), frozenset(there) | frozenset(back),
                    there, back)


class PathCache:
    """Pair paths of one topology, recomputed when its ``version`` changes."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._version = -1
        self._attach: dict[str, tuple[int, int]] = {}
        self._paths: dict[tuple[str, str], PairPath | None] = {}

    def path(self, attach: dict[str, tuple[int, int]], src: str,
             dst: str) -> PairPath | None:
        if self.topology.version != self._version or attach != self._attach:
            self._version, self._attach, self._paths = self.topology.version, dict(attach), {}
        key = (src, dst)
        if key not in self._paths:
            self._paths[key] = pair_path(self.topology, attach, src, dst)
        return self._paths[key]
