"""The agent's two error types, shared by its state, its monitor link, its API and its
bandwidth routes."""

from __future__ import annotations


class AgentError(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class MonitorError(RuntimeError):
    """The monitor did not answer (dead, hung) or answered with an internal error."""
