"""Heartbeats folded up the overlay tree.

An agent with a parent sends its heartbeat to that parent
(``POST /agent/v1/heartbeats``), not to the controller: the body lists the
agent itself and every agent of its subtree it heard from recently, each
with its version (and its monitor cost only when that needs attention: a
crash-looping or restarted monitor)::

    {"from": "h4", "agents": {"h4": {"version": "0.2.0"},
                              "h9": {"version": "0.2.0", "monitor": {...}}}}

A node lists a child's entries while that child's last heartbeat is younger
than ``keep`` seconds; the root (an agent without a parent) sends the union
to the controller as the ``subtree`` of its own heartbeat. So the
controller receives one heartbeat per period whatever N, and an agent listed
there is alive. The controller's reply names the listed agents it does not
know (after a restart or a take-over): each parent passes the names down in
its replies, and those agents register again directly.

The delay: a beat climbs one level per heartbeat period (each node forwards
on its own timer), so an agent at depth ``d`` is seen by the
controller at most ``d`` periods after it beat, and a dead one drops out
``keep`` plus ``d`` periods after its last beat.
"""

from __future__ import annotations

import threading
from typing import Any

from measure_model.wire.overlay import check_beats

#: a child's entries are listed this long after its last heartbeat (s)
DEFAULT_KEEP = 6.0
#: names of unknown agents a heartbeat reply carries at most
MAX_UNKNOWN = 1000


def needs_attention(monitor: dict | None) -> bool:
    """Whether a monitor cost travels up with the beat (it changes what the controller
    says of the agent: crash-looping, restarted)."""
    return monitor is not None and bool(monitor.get("crash_looping") or monitor.get("restarts"))


class Beats:
    """What one node heard from its children, and the heartbeat it sends up."""

    def __init__(self, keep: float = DEFAULT_KEEP) -> None:
        self.keep = keep
        self._heard: dict[str, tuple[float, dict[str, dict]]] = {}  # child -> (when, agents)
        # agents of the subtree the controller does not know (after its restart or a
        # take-over): told down in the replies to heartbeats; they register again
        self._unknown: set[str] = set()
        self._lock = threading.Lock()

    def receive(self, body: Any, now: float, children: list[str]) -> dict:
        """A child's heartbeat (``check_beats``); refused (ValueError) from a non-child."""
        beats = check_beats(body)
        if beats["from"] not in children:
            raise ValueError(f"heartbeat: field 'from': '{beats['from']}' is not a child "
                             f"of this agent")
        with self._lock:
            self._heard[beats["from"]] = (now, beats["agents"])
            unknown = sorted(self._unknown.intersection(beats["agents"]))
            self._unknown.difference_update(unknown)
        return {"ok": True, "agents": len(beats["agents"]), "unknown": unknown}

    def unknown_below(self, names: Any) -> None:
        """The names the controller (or this node's parent) said it does not know."""
        if isinstance(names, list):
            with self._lock:
                self._unknown = {n for n in names[:MAX_UNKNOWN] if isinstance(n, str)}

    def subtree(self, now: float, children: list[str]) -> dict[str, dict]:
        """The agents below this node heard within ``keep`` (current children only)."""
        out: dict[str, dict] = {}
        with self._lock:
            for child in list(self._heard):
                when, agents = self._heard[child]
                if child not in children or now - when > self.keep:
                    del self._heard[child]
                    continue
                out.update(agents)
        return out

    def body(self, name: str, version: str, monitor: dict | None, now: float,
             children: list[str]) -> dict:
        """The heartbeat this node sends its parent: itself and its live subtree."""
        own: dict[str, Any] = {"version": version}
        if needs_attention(monitor):
            own["monitor"] = monitor
        return {"from": name, "agents": {**self.subtree(now, children), name: own}}
