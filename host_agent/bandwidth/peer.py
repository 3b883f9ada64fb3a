"""HTTP from the source agent of a probe to the destination agent.

Every call goes through the agent's one ``Transport`` (signed like the
controller's requests when the agent has the shared secret) and is mapped
to a ``AgentError`` the probe's caller gets as the answer: the peer's
own refusal (409 when it is busy, else 502), a peer not running (502,
"connection refused"), or one that does not answer in time (504). Nothing
waits past the timeout it is given.
"""

from __future__ import annotations

from host_agent.errors import AgentError
from measure_common.httpclient import Transport


class PeerClient:
    """Calls to the destination agent's ``/agent/v1/bandwidth/receive``."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def call(self, method: str, url: str, body: dict | None, timeout: float) -> dict:
        """One call; its JSON object answer, or ``AgentError``."""
        try:
            status, reply = self.transport.request(method, url, json=body,
                                                   timeout=max(0.05, timeout))
        except OSError as exc:
            if getattr(exc, "reason", "") == "refused":
                raise AgentError(502, f"destination agent not running at {url} "
                                          "(connection refused)") from None
            why = getattr(exc, "reason", None) or exc
            raise AgentError(504, f"destination unreachable at {url}: {why}") from None
        if not 200 <= status < 300:
            detail = reply.get("error", "") if isinstance(reply, dict) else ""
            code = 409 if status in (409, 503) else 502
            raise AgentError(code, f"destination agent {url} answered {status}: "
                                       f"{detail or 'error'}")
        if not isinstance(reply, dict):
            raise AgentError(502, f"destination agent {url} sent a non-JSON reply")
        return reply
