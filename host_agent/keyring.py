"""The agent's signing keys: which key signs a request to which receiver.

An agent holds only its own key (``measure_common.auth.agent_key``: derived
by the controller from its master secret and the agent's name). With it the
agent signs to the controller and verifies the controller's requests. To
talk to another agent (its overlay parent and children, a bandwidth probe's
destination) it needs a pair key, which the controller sends inside the
placement or the bandwidth request, wrapped under the agent's own key, with
a ticket for the receiver. ``KeyRing.lookup`` maps a request's URL to the
signer for that receiver; ``RoutedAuth(keyring.lookup)`` is the agent's one
HTTP signer. The ring is bounded (``MAX_PEERS``, oldest forgotten first).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from measure_common.auth import CONTROLLER, HmacAuth, unwrap

log = logging.getLogger(__name__)

MAX_PEERS = 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_credential(value: Any, field: str) -> dict[str, str]:
    """A ``{"key", "ticket"}`` object (64 hex digits each), or ValueError naming ``field``."""
    if not isinstance(value, dict) or set(value) != {"key", "ticket"} or not all(
            isinstance(v, str) and _HEX64.fullmatch(v) for v in value.values()):
        raise ValueError(f"field '{field}' must be an object with 'key' and 'ticket', "
                         "64 hex digits each")
    return {"key": value["key"], "ticket": value["ticket"]}


class KeyRing:
    """Signers by receiver URL: the controller's, and one per known peer."""

    def __init__(self, name: str, own_key: bytes, controllers: list[str] | None = None) -> None:
        self.name = name
        self.own_key = own_key
        self._controllers = {u.rstrip("/") for u in controllers or []}
        self._peers: dict[str, HmacAuth] = {}
        self._lock = threading.Lock()

    def add_controller(self, url: str) -> None:
        with self._lock:
            self._controllers.add(url.rstrip("/"))

    def learn(self, peer: str, url: str, credential: dict[str, str]) -> None:
        """Sign requests to ``url`` as going to agent ``peer`` with this credential."""
        if not _NAME.fullmatch(peer) or peer == CONTROLLER:
            raise ValueError(f"bad peer name {peer!r}")
        key = unwrap(self.own_key, peer, credential["key"])
        signer = HmacAuth(key, sender=self.name, receiver=peer, ticket=credential["ticket"])
        with self._lock:
            self._peers.pop(url.rstrip("/"), None)
            self._peers[url.rstrip("/")] = signer
            while len(self._peers) > MAX_PEERS:
                del self._peers[next(iter(self._peers))]

    def lookup(self, url: str) -> HmacAuth | None:
        """The signer for the receiver at ``url`` (None: unknown, sent unsigned)."""
        with self._lock:
            for base in self._controllers:
                if url == base or url.startswith(base + "/"):
                    return HmacAuth(self.own_key, sender=self.name, receiver=CONTROLLER)
            for base, signer in self._peers.items():
                if url == base or url.startswith(base + "/"):
                    return signer
        log.warning("no key for %s: request sent unsigned", url[:200])
        return None
