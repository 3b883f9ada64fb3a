"""The errors the controller's service raises, each carrying its HTTP status.

The REST layer (``ryu_app.rest.api``) turns a ``ServiceError`` into a JSON
error answer with ``status``; everything else the service raises is a bug
and answers 500.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status."""

    status = 500


class BadRequest(ServiceError):
    """The request itself is wrong (400)."""

    status = 400


class NotFound(ServiceError):
    """An unknown task, agent or result (404)."""

    status = 404


class Conflict(ServiceError):
    """The request clashes with the stored state (409)."""

    status = 409


class Unavailable(ServiceError):
    """An agent the request needs is down or unreachable (503)."""

    status = 503


class BadGateway(ServiceError):
    """An agent answered the request with an error (502)."""

    status = 502


class NotLeader(ServiceError):
    """This controller is a standby on a shared store: the call needs the leader (503).

    The message names the leader's URL; ``Retry-After`` tells an agent or a
    client that the answer may change once a standby takes over."""

    status = 503
    headers = {"Retry-After": "1"}
