"""Agent registry: who is alive, where it listens, which host it sits on.

Agents register on start (``POST /measure/v1/agents`` with name, url,
data_ip, mac) and then send a heartbeat every couple of seconds. The
registry is plain state driven by the caller's clock: ``register`` and
``heartbeat`` take ``now``, and ``expire(now)`` marks down every agent not
heard from for ``timeout`` seconds (default 6 s: three missed 2-s beats),
plus one 2-s period per level of its depth in the overlay (its beat climbs the
tree one level per period).

Membership changes (an agent appears, comes back, goes down, or moves to
another URL/address) bump ``version`` and are returned to the caller, which
recomputes the overlay. A registration always means the agent (re)started
and must get its overlay place and tasks again.

Agents are mapped to topology host nodes by data IP first, then by MAC
(``host_node``), so the overlay follows the discovered network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from measure_model.cost import check_cost
from measure_model.fields import HOST_PATTERN, MAC_PATTERN
from measure_model.version import __version__, incompatibility
from measure_model.wire.overlay import VERSION_RE, check_beat_agents
from ryu_app.net.topology import Topology

DEFAULT_TIMEOUT = 6.0
MAX_AGENTS = 65_536
AGENT_FIELDS = ("name", "url", "data_ip", "mac", "version")
_MAC_RE = re.compile(MAC_PATTERN)
_VERSION_RE = VERSION_RE


class RegistryError(ValueError):
    """A malformed registration (400)."""


class IncompatibleAgent(RegistryError):
    """An agent of a version this controller cannot work with (409)."""


class UnknownAgent(KeyError):
    """A heartbeat or lookup for an agent that never registered (404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown agent"


@dataclass
class Agent:
    name: str
    url: str
    data_ip: str | None
    mac: str | None
    registered_at: float
    last_seen: float
    version: str | None = None
    up: bool = True
    joins: int = 1
    monitor: dict[str, Any] | None = None   # last reported cost (measure_model/cost.py)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        out = {"name": self.name, "url": self.url, "data_ip": self.data_ip, "mac": self.mac,
               "version": self.version, "up": self.up, "registered_at": self.registered_at,
               "last_seen": self.last_seen, "joins": self.joins, "monitor": self.monitor}
        if now is not None:
            out["silent_for"] = round(max(0.0, now - self.last_seen), 3)
        return out


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or len(url) > 200:
        raise RegistryError("agent: field 'url' must be an http URL string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password \
            or parts.path not in ("", "/") or any(c.isspace() for c in url):
        raise RegistryError(f"agent: field 'url' '{url}' is not of the form http://HOST:PORT")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise RegistryError(f"agent: field 'url' '{url}' has a bad port") from None
    return url.rstrip("/")


def validate_registration(body: Any) -> dict[str, Any]:
    """Check a registration body; return the normalised fields."""
    if not isinstance(body, dict):
        raise RegistryError("agent: body must be a JSON object")
    for key in body:
        if key not in AGENT_FIELDS:
            raise RegistryError(f"agent: unknown field '{key}'")
    name = body.get("name")
    if not isinstance(name, str) or not re.fullmatch(HOST_PATTERN, name, re.ASCII):
        raise RegistryError(f"agent: field 'name' must match {HOST_PATTERN}")
    out: dict[str, Any] = {"name": name, "url": _check_url(body.get("url")),
                           "data_ip": None, "mac": None}
    if body.get("data_ip") is not None:
        try:
            if not isinstance(body["data_ip"], str):  # IPv4Address(int) would accept 1, True
                raise TypeError
            out["data_ip"] = str(ipaddress.IPv4Address(body["data_ip"]))
        except (ValueError, TypeError):
            raise RegistryError("agent: field 'data_ip' must be an IPv4 address") from None
    if body.get("mac") is not None:
        mac = body["mac"].lower() if isinstance(body["mac"], str) else None
        if mac is None or not _MAC_RE.fullmatch(mac):
            raise RegistryError("agent: field 'mac' must be a MAC address like 00:00:00:00:00:01")
        out["mac"] = mac
    out["version"] = _check_version(name, body.get("version"))
    return out


def _check_version(name: str, version: Any) -> str | None:
    """The agent's version (None from agents older than version reporting)."""
    if version is None:
        return None
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise RegistryError("agent: field 'version' must be a version like 0.2.0")
    problem = incompatibility(__version__, version, f"agent '{name}'")
    if problem:
        raise IncompatibleAgent(f"agent: {problem}")
    return version


def validate_heartbeat(body: Any) -> tuple[dict[str, Any] | None, dict[str, dict]]:
    """The ``monitor`` cost object of a heartbeat body (``{}`` or none: None) and its
    ``subtree``: the agents below the sender heard through the overlay
    (``host_agent/overlay/beats.py``), ``{name: {version, monitor?}}``."""
    if body is None or body == {}:
        return None, {}
    if not isinstance(body, dict):
        raise RegistryError("heartbeat: body must be a JSON object")
    for key in body:
        if key not in ("monitor", "subtree"):
            raise RegistryError(f"heartbeat: unknown field '{str(key)[:64]}'")
    try:
        monitor = check_cost(body["monitor"], "heartbeat: field 'monitor'") \
            if "monitor" in body else None
        subtree = check_beat_agents(body.get("subtree", {}), "heartbeat: field 'subtree'")
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    return monitor, subtree


class Registry:
    """Registered agents with liveness driven by ``now`` (see module docstring)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, max_agents: int = MAX_AGENTS) -> None:
        self.timeout = timeout
        self.max_agents = max_agents
        self.agents: dict[str, Agent] = {}
        self.version = 0

    def register(self, body: Any, now: float) -> Agent:
        """Add or refresh an agent.

        Every registration is a (re)join: an agent registers only when it
        starts, so it holds no overlay place and no tasks yet.
        """
        fields = validate_registration(body)
        agent = self.agents.get(fields["name"])
        if agent is None:
            if len(self.agents) >= self.max_agents:
                raise RegistryError(f"agent: registry is full ({self.max_agents} agents)")
            agent = Agent(registered_at=now, last_seen=now, **fields)
            self.agents[agent.name] = agent
        else:
            agent.url, agent.data_ip, agent.mac = fields["url"], fields["data_ip"], fields["mac"]
            agent.version = fields["version"]
            agent.registered_at, agent.last_seen, agent.up = now, now, True
            agent.joins += 1
        self.version += 1
        return agent

    def heartbeat(self, name: str, now: float, body: Any = None) -> bool:
        """Record a heartbeat (its body may carry ``monitor``: the agent's monitoring
        cost); True when a down agent came back."""
        monitor, subtree = validate_heartbeat(body)
        agent = self.agents.get(name)
        if agent is None:
            raise UnknownAgent(f"agent '{name}' is not registered")
        back = self._seen(agent, now, monitor)
        for below, entry in subtree.items():  # listed by the sender: alive (a registered
            known = self.agents.get(below)     # agent; an unknown one registers itself)
            if known is not None and below != name:
                known.version = entry["version"]
                back = self._seen(known, now, entry.get("monitor"), clear=True) or back
        return back

    def _seen(self, agent: Agent, now: float, monitor: dict | None,
              clear: bool = False) -> bool:
        """``agent`` heard from at ``now``; True when it was down. ``clear``: a beat that
        came through the tree carries a monitor cost only when it needs attention, so
        its absence clears an old crash-looping one (others stay as last heard)."""
        if monitor is not None:
            agent.monitor = monitor
        elif clear and (agent.monitor or {}).get("crash_looping"):
            agent.monitor = None
        agent.last_seen = max(agent.last_seen, now)
        if not agent.up:
            agent.up = True
            self.version += 1
            return True
        return False

    def expire(self, now: float, levels: Mapping[str, int] | None = None) -> list[str]:
        """Mark down agents silent for longer than ``timeout``; return their names.

        ``levels``: each agent's depth in the overlay. A beat climbs the tree one level
        per heartbeat period (``timeout / 3``), so an agent at depth ``d`` is heard
        ``d`` periods late at most, and after a re-parenting its new ancestors list it
        only once its beat has climbed again: it is given ``d`` periods more."""
        period = self.timeout / 3
        gone = sorted(a.name for a in self.agents.values()
                      if a.up and now - a.last_seen
                      > self.timeout + period * (levels or {}).get(a.name, 0))
        for name in gone:
            self.agents[name].up = False
        if gone:
            self.version += 1
        return gone

    def live(self) -> dict[str, Agent]:
        return {n: a for n, a in sorted(self.agents.items()) if a.up}

    def get(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            raise UnknownAgent(f"agent '{name}' is not registered")
        return agent

    def find(self, ref: str) -> Agent | None:
        """An agent by name or by data IP."""
        if ref in self.agents:
            return self.agents[ref]
        for agent in self.agents.values():
            if agent.data_ip == ref:
                return agent
        return None

    def to_list(self, now: float | None = None) -> list[dict[str, Any]]:
        return [a.to_dict(now) for _, a in sorted(self.agents.items())]


def host_node(agent: Agent, topology: Topology | None) -> str | None:
    """The topology host node (its MAC) an agent sits on: by data IP, then MAC."""
    if topology is None:
        return None
    host = topology.host_by_ip(agent.data_ip) if agent.data_ip else None
    if host is None and agent.mac:
        host = topology.host_by_mac(agent.mac)
    return None if host is None else host.mac
