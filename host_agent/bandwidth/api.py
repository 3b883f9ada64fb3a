"""The agent's ``/agent/v1/bandwidth`` routes.

``POST /agent/v1/bandwidth`` runs a probe from this agent (``Prober``);
``POST .../receive``, ``GET|DELETE .../receive/{session}`` serve the
destination side (``ReceiveSessions``). Every failure is a JSON
``{"error"}`` with the status of its ``AgentError``. Authentication is
the caller's (``host_agent.api.AgentApp`` checks the signature first).
"""

from __future__ import annotations

from typing import Any

import webob

from host_agent.bandwidth.estimate import Prober
from host_agent.bandwidth.peer import PeerClient
from host_agent.bandwidth.receive import ReceiveSessions
from host_agent.errors import AgentError
from measure_common import jsonlimits
from measure_common.httpclient import Transport

PREFIX = "/agent/v1/bandwidth"


def _json_body(req: webob.Request) -> Any:
    try:
        return jsonlimits.loads(req.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise AgentError(400, "body is not valid JSON") from None


class BandwidthApi:
    """The bandwidth routes of one agent, over its prober and receive sessions."""

    def __init__(self, prober: Prober, sessions: ReceiveSessions) -> None:
        self.prober = prober
        self.sessions = sessions

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is one of these routes."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def handle(self, req: webob.Request) -> webob.Response:
        """Serve one request under ``/agent/v1/bandwidth``."""
        parts = [p for p in req.path_info.split("/") if p][3:]  # after agent/v1/bandwidth
        try:
            if not parts:
                if req.method != "POST":
                    raise AgentError(405, f"use POST {PREFIX}")
                return webob.Response(json=self.prober.probe(_json_body(req)))
            if parts[0] != "receive" or len(parts) > 2:
                raise AgentError(404, f"no such resource {req.path_info}")
            if len(parts) == 1:
                if req.method != "POST":
                    raise AgentError(405, f"use POST {PREFIX}/receive")
                return webob.Response(json=self.sessions.open(_json_body(req)))
            if req.method == "GET":
                return webob.Response(json=self.sessions.fetch(parts[1],
                                                               req.GET.get("streams")))
            if req.method == "DELETE":
                return webob.Response(json=self.sessions.close(parts[1]))
            raise AgentError(405, "use GET or DELETE on a receive session")
        except AgentError as exc:
            return webob.Response(json={"error": exc.message}, status=exc.status)


def bandwidth_api(data_ip: str | None, transport: Transport) -> BandwidthApi:
    """The bandwidth routes of an agent at ``data_ip`` talking through ``transport``."""
    return BandwidthApi(Prober(data_ip, PeerClient(transport)), ReceiveSessions())
