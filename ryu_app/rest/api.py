"""The controller REST API under ``/measure/v1`` (Ryu ``ControllerBase``).

A thin layer over ``MeasureService``: each handler parses its inputs once
(identifiers, query parameters, bodies), calls the service and returns JSON.
Every handler is wrapped by ``_api``, the one place that

- checks authentication (``_authorize``: bearer token for people, or a
  signature with the shared secret for agents, via
  ``measure_common.auth.check_request``; reads are open only when configured),
- checks the request line first (``_check_request_text``): a path or query
  that is not UTF-8 after percent-decoding, or holds a control character
  (e.g. ``%0a``), is answered 400 before anything reads ``req.path`` or
  ``req.GET`` (webob would raise ``UnicodeDecodeError`` there, and Ryu's
  eventlet server runs with ``debug=True``, so an escaping exception sends
  the client a traceback),
- on a standby controller (``ryu_app/service/standby.py``) answers 503
  naming the leader for every handler not marked ``standby=True`` (the
  reads the shared store holds),
- limits the body size (413: 16 MiB for ``POST reports``, whose merged
  root report is about 1 MB at 1000 agents; 1 MiB elsewhere) and the media
  type (415),
- counts the answered request in ``metrics`` (``ryu_app/rest/metrics.py``: count
  and latency per handler name, method and status) when one is registered,
- maps exceptions to a JSON ``{"error": "..."}`` body with the right status
  (400 validation, 401/403 auth, 404 unknown, 409 conflict, 413, 415, 502
  agent error, 503 unavailable); anything unexpected is logged and answered
  500 with a generic message, never a traceback.

Unknown paths under ``/measure/v1`` (newlines included) and wrong methods
on known paths get a JSON 404/405 from a fallback controller registered
after the main one, behind the same wrapper, so no exception leaves a
handler of this module.
The routes are described in ``ryu_app/rest/openapi.json`` (served at
``GET /measure/v1/openapi.json``); ``tests/unit/test_openapi.py`` keeps the two
in step.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from ryu.app.wsgi import ControllerBase, Response, route

from measure_common import jsonlimits
from measure_common.wsgibody import BodyTooLarge, hold_in_memory
from measure_model.fields import HOST_PATTERN, ID_PATTERN, ConflictError, FieldError
from measure_model.policy import read_policy
from measure_model.policy_errors import check_policy_object
from measure_model.task import PolicyConflict, PolicyError, bandwidth_request, parse_tasks
from ryu_app.errors import ServiceError
from ryu_app.rest.openapi_schemas import OPENAPI_PATH
from ryu_app.service.registry import IncompatibleAgent, RegistryError, UnknownAgent
from ryu_app.service.store import StoreError

log = logging.getLogger(__name__)

PREFIX = "/measure/v1"
SERVICE_KEY = "measure_service"
METRICS_KEY = "measure_metrics"
MAX_BODY = 1024 * 1024
MAX_REPORT_BODY = 16 * 1024 * 1024
MAX_YAML = 256 * 1024
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json",)
_ID_RE = re.compile(ID_PATTERN)
_NAME_RE = re.compile(HOST_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class HttpError(Exception):
    """An error the REST layer answers itself."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, sort_keys=True, allow_nan=False).encode()
    resp = Response(status=status, content_type="application/json", charset="utf-8", body=body)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    return json_response({"error": message}, status=status, headers=headers)


def _status_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HttpError):
        return exc.status, exc.message
    if isinstance(exc, ServiceError):
        return exc.status, str(exc)
    if isinstance(exc, IncompatibleAgent | PolicyConflict):
        return 409, str(exc)
    if isinstance(exc, PolicyError | RegistryError):
        return 400, str(exc)
    if isinstance(exc, UnknownAgent):
        return 404, str(exc)
    if isinstance(exc, StoreError):
        return 503, str(exc)
    return 500, "internal error (logged by the controller)"


def _check_request_text(req) -> None:
    """400 unless the path and the query are UTF-8 without control characters.

    WSGI servers hand over ``PATH_INFO`` percent-decoded as latin-1 text and
    ``QUERY_STRING`` still percent-encoded; webob decodes both as UTF-8 when
    ``req.path``/``req.GET`` are read. Checked here once, first, so that the
    rest of the request handling can read them safely.
    """
    env = req.environ
    for part, raw in (("path", env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")),
                      ("query", env.get("QUERY_STRING", ""))):
        try:
            data = raw.encode("latin-1")
            text = (unquote_to_bytes(data.replace(b"+", b" ")) if part == "query"
                    else data).decode("utf-8")
        except UnicodeError:
            raise HttpError(400, f"request {part} is not valid UTF-8") from None
        if _CONTROL_RE.search(text):
            raise HttpError(400, f"request {part} contains a control character")


def _raw_path(req) -> str:
    """The path for log lines, whatever its bytes (never raises)."""
    return repr(req.environ.get("PATH_INFO", ""))[:200]


#: what a request signed with the agents' secret may call (all POST)
AGENT_ROUTES = re.compile(
    r"/measure/v1/(agents|agents/[A-Za-z0-9_.-]+/(heartbeat|peer-key)|reports)")


def _authorize(req, service, mutating: bool) -> None:
    """The one place where REST authentication is checked."""
    auth = getattr(service, "auth", None)
    if auth is None or not auth.enabled or (not mutating and auth.reads_open):
        return
    from measure_common.auth import (
        BEARER_CHALLENGE,
        SENDER_HEADER,
        SIGNATURE_HEADER,
        AuthError,
        check_request,
    )

    try:
        # the body is read only once the headers passed (a bearer token needs none)
        how, sender = check_request(req.method, req.path_qs, lambda: req.body, req.headers,
                                    token=auth.token, verifier=auth.verifier)
    except AuthError as exc:
        if req.headers.get(SIGNATURE_HEADER):  # a forged, replayed or misdirected signature
            log.warning("REST %s %s: refused a signed request from %r: %s", req.method,
                        _raw_path(req), str(req.headers.get(SENDER_HEADER))[:64], exc.message)
        headers = {"WWW-Authenticate": BEARER_CHALLENGE} if exc.status == 401 else None
        raise HttpError(exc.status, exc.message, headers) from None
    req.environ["measure.auth"] = how
    req.environ["measure.agent"] = sender
    if how == "signature" and not (req.method == "POST" and AGENT_ROUTES.fullmatch(req.path)):
        # the agents' secret means "an agent": register, heartbeat, ask for a peer's
        # key and report, nothing else
        log.warning("REST %s %s: refused a signed (agent) request; it needs the operator "
                    "token", req.method, _raw_path(req))
        raise HttpError(403, "a signed (agent) request may only register, heartbeat, "
                             "ask for a peer key or report; this call needs the operator "
                             "token")


def _own_name(req, claimed: Any, what: str) -> None:
    """An agent's key speaks only for that agent: a signed request naming another
    agent (in its path or body) is refused with 403 and logged."""
    sender = req.environ.get("measure.agent")
    if req.environ.get("measure.auth") != "signature" or sender is None or claimed == sender:
        return
    log.warning("REST %s %s: agent %s tried to %s %r; refused", req.method, _raw_path(req),
                sender, what, str(claimed)[:64])
    raise HttpError(403, f"agent {sender} may only {what} itself, not {str(claimed)[:64]!r}")


def _read_body(req, limit: int = MAX_BODY) -> bytes:
    length = req.content_length
    if length is not None and length > limit:
        raise HttpError(413, f"body of {length} bytes is more than the limit of {limit}")
    data = req.body_file.read(limit + 1) if length is None else req.body
    if len(data) > limit:
        raise HttpError(413, f"body is more than the limit of {limit} bytes")
    return data


def _json_body(req, required: bool = True, limit: int = MAX_BODY) -> Any:
    data = _read_body(req, limit)
    if not data and not required:
        return {}
    if req.content_type not in JSON_TYPES:
        raise HttpError(415, "Content-Type must be application/json")
    try:
        return jsonlimits.loads(data, parse_constant=_reject_constant)
    except ValueError as exc:
        raise HttpError(400, f"body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _api(mutating: bool = False, max_body: int = MAX_BODY, service: bool = True,
         standby: bool = False):
    """The one wrapper of every handler (see module docstring): request-line
    check, body limit, authentication (handlers with ``service``), the standby's
    refusal (handlers without ``standby``, when the service is a standby
    controller's: 503 naming the leader), exception mapping. Nothing raised
    inside reaches Ryu's server."""
    def wrap(method):
        @functools.wraps(method)
        def handler(self, req, **kwargs):
            start = time.monotonic()
            resp = answer(self, req, **kwargs)
            metrics = getattr(self, "metrics", None)
            if metrics is not None:
                metrics.observe_request(req.method, method.__name__, resp.status_int,
                                        time.monotonic() - start)
            return resp

        def answer(self, req, **kwargs):
            try:
                _check_request_text(req)
                length = req.content_length or 0
                if length > max_body:
                    raise HttpError(413, f"body of {length} bytes is more than "
                                         f"the limit of {max_body}")
                try:
                    hold_in_memory(req, max_body)
                except BodyTooLarge:
                    raise HttpError(413, f"body is more than the limit of {max_body} "
                                         "bytes") from None
                if service:
                    _authorize(req, self.service, mutating)
                    if self.service is None:
                        raise HttpError(503, "measurement service is not running")
                    if not standby and getattr(self.service, "standby", False):
                        raise self.service.not_leader()
                return method(self, req, **kwargs)
            except Exception as exc:  # noqa: BLE001 - mapped to a JSON error
                try:
                    status, message = _status_of(exc)
                    if status >= 500 and not isinstance(exc, HttpError | ServiceError
                                                        | StoreError):
                        log.exception("REST %s %s failed", req.method, _raw_path(req))
                    return error_response(status, message, getattr(exc, "headers", None))
                except Exception:  # broad: last resort, still JSON (logged with its traceback)
                    log.exception("REST error handling failed")
                    return error_response(500, "internal error (logged by the controller)")
        return handler
    return wrap


def parse_task_id(text: str) -> str:
    """Task ids are positive decimal integers (kept as strings)."""
    if not _ID_RE.fullmatch(text or ""):
        raise HttpError(404, f"unknown task '{text[:40]}' (ids are positive integers)")
    return text


def parse_name(text: str, what: str = "agent") -> str:
    if not _NAME_RE.fullmatch(text or ""):
        raise HttpError(404, f"unknown {what} '{text[:40]}'")
    return text


def _query(req, name: str) -> str | None:
    values = req.GET.getall(name)
    if len(values) > 1:
        raise HttpError(400, f"query parameter '{name}' given more than once")
    return values[0] if values else None


def _since(req) -> int:
    text = _query(req, "since")
    if text is None:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise HttpError(400, "query parameter 'since' must be a non-negative integer")
    return int(text)


def _bandwidth_args(body: Any) -> dict[str, Any]:
    """The ``POST bandwidth`` body, checked by the task table's bandwidth rows."""
    try:
        return bandwidth_request(body)
    except FieldError as exc:
        status = 409 if isinstance(exc, ConflictError) else 400
        raise HttpError(status, f"bandwidth: {exc}") from None


class MeasureController(ControllerBase):
    """Routes of ``/measure/v1`` (see ``ryu_app/rest/openapi.json``)."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.service = data[SERVICE_KEY]
        self.metrics = data.get(METRICS_KEY)

    @route("measure", PREFIX + "/topology", methods=["GET"])
    @_api()
    def get_topology(self, req, **_kw):
        return json_response(self.service.topology_view())

    @route("measure", PREFIX + "/health", methods=["GET"])
    @_api(standby=True)
    def get_health(self, req, **_kw):
        return json_response(self.service.health())

    @route("measure", PREFIX + "/agents", methods=["GET"])
    @_api()
    def list_agents(self, req, **_kw):
        return json_response({"agents": self.service.agents()})

    @route("measure", PREFIX + "/agents", methods=["POST"])
    @_api(mutating=True)
    def register_agent(self, req, **_kw):
        body = _json_body(req)
        _own_name(req, body.get("name") if isinstance(body, dict) else None, "register as")
        return json_response(self.service.register_agent(body), status=201)

    @route("measure", PREFIX + "/agents/{name}/heartbeat", methods=["POST"])
    @_api(mutating=True, max_body=MAX_REPORT_BODY)
    def heartbeat(self, req, name, **_kw):
        name = parse_name(name)
        _own_name(req, name, "heartbeat for")
        # no body: {}; a root's lists its subtree (about 30 bytes per agent)
        body = _json_body(req, required=False, limit=MAX_REPORT_BODY)
        if not isinstance(body, dict):
            raise HttpError(400, "heartbeat: body must be a JSON object")
        return json_response(self.service.heartbeat(name, body))

    @route("measure", PREFIX + "/agents/{name}/peer-key", methods=["POST"])
    @_api(mutating=True)
    def peer_key(self, req, name, **_kw):
        name = parse_name(name)
        _own_name(req, name, "ask for a peer key for")
        return json_response(self.service.peer_key(name, _json_body(req)))

    @route("measure", PREFIX + "/overlay", methods=["GET"])
    @_api()
    def get_overlay(self, req, **_kw):
        return json_response(self.service.overlay_view())

    @route("measure", PREFIX + "/tasks", methods=["POST"])
    @_api(mutating=True)
    def create_tasks(self, req, **_kw):
        if req.content_type in YAML_TYPES:
            policy = read_policy(_read_body(req, MAX_YAML), "request")
        elif req.content_type in JSON_TYPES:
            policy = _json_body(req)
        else:
            raise HttpError(415, "Content-Type must be application/json or application/yaml")
        try:
            tasks = parse_tasks(policy, "request")
        except PolicyError as exc:
            # "error" is the first problem; "errors" every one, with "did you mean"
            every = check_policy_object(policy, "request").errors if not isinstance(
                exc, PolicyConflict) else []
            if len(every) > 1 or (every and every[0] != str(exc)):
                return json_response({"error": str(exc), "errors": every}, status=400)
            raise
        return json_response({"tasks": self.service.apply_tasks(tasks)}, status=201)

    @route("measure", PREFIX + "/tasks", methods=["GET"])
    @_api(standby=True)
    def list_tasks(self, req, **_kw):
        return json_response({"tasks": self.service.list_tasks()})

    @route("measure", PREFIX + "/tasks/{task_id}", methods=["GET"])
    @_api(standby=True)
    def get_task(self, req, task_id, **_kw):
        return json_response(self.service.get_task(parse_task_id(task_id)))

    @route("measure", PREFIX + "/tasks/{task_id}", methods=["DELETE"])
    @_api(mutating=True)
    def delete_task(self, req, task_id, **_kw):
        return json_response(self.service.delete_task(parse_task_id(task_id)))

    @route("measure", PREFIX + "/tasks/{task_id}/result", methods=["GET"])
    @_api(standby=True)
    def get_result(self, req, task_id, **_kw):
        task_id = parse_task_id(task_id)
        host = _query(req, "host")
        if host is not None:
            host = parse_name(host, "host")
        return json_response(self.service.result(task_id, host, _query(req, "key")))

    @route("measure", PREFIX + "/tasks/{task_id}/history", methods=["GET"])
    @_api(standby=True)
    def get_history(self, req, task_id, **_kw):
        task_id = parse_task_id(task_id)
        host = _query(req, "host")
        if host is not None:
            host = parse_name(host, "host")
        text = _query(req, "limit")
        if text is None:
            limit = 50
        elif re.fullmatch(r"[1-9][0-9]{0,2}|1000", text):
            limit = int(text)
        else:
            raise HttpError(400, "query parameter 'limit' must be an integer from 1 to 1000")
        return json_response(self.service.history(task_id, host, limit))

    @route("measure", PREFIX + "/tasks/{task_id}/history/{interval}", methods=["GET"])
    @_api(standby=True)
    def get_past(self, req, task_id, interval, **_kw):
        task_id = parse_task_id(task_id)
        if interval == "latest":
            end = None
        elif re.fullmatch(r"[0-9]{1,13}(\.[0-9]{1,6})?", interval):
            end = float(interval)
        else:
            raise HttpError(400, "interval must be 'latest' or an interval end time "
                                 "(seconds since 1970)")
        key = _query(req, "key")
        if key is not None and len(key) > 200:
            raise HttpError(400, "query parameter 'key' is too long")
        since = _query(req, "since")
        if since is not None:
            if not re.fullmatch(r"[0-9]{1,13}(\.[0-9]{1,6})?", since):
                raise HttpError(400, "query parameter 'since' must be an interval end time")
        return json_response(self.service.past(task_id, end, key,
                                               float(since) if since is not None else None))

    @route("measure", PREFIX + "/flows", methods=["GET"])
    @_api()
    def get_flows(self, req, **_kw):
        task_id = _query(req, "task")
        if task_id is None:
            raise HttpError(400, "query parameter 'task' is required")
        task_id = parse_task_id(task_id)
        top = _query(req, "top") or "10"
        if not re.fullmatch(r"[1-9][0-9]{0,2}|1000", top):
            raise HttpError(400, "query parameter 'top' must be an integer from 1 to 1000")
        by = _query(req, "by") or "bytes"
        if by not in ("bytes", "packets"):
            raise HttpError(400, "query parameter 'by' must be bytes or packets")
        return json_response(self.service.flows(task_id, int(top), by))

    @route("measure", PREFIX + "/tasks/{task_id}/paths", methods=["GET"])
    @_api()
    def get_paths(self, req, task_id, **_kw):
        return json_response(self.service.pair_paths(parse_task_id(task_id)))

    @route("measure", PREFIX + "/links", methods=["GET"])
    @_api()
    def get_links(self, req, **_kw):
        return json_response(self.service.links())

    @route("measure", PREFIX + "/diagnose", methods=["GET"])
    @_api()
    def get_diagnose(self, req, **_kw):
        refs = []
        for name in ("src", "dst"):
            ref = _query(req, name)
            if not ref:
                raise HttpError(400, f"query parameter '{name}' is required (a host name "
                                     f"or data IP)")
            refs.append(parse_name(ref, name))
        return json_response(self.service.diagnose(*refs))

    @route("measure", PREFIX + "/reports", methods=["POST"])
    @_api(mutating=True, max_body=MAX_REPORT_BODY)
    def post_report(self, req, **_kw):
        body = _json_body(req, limit=MAX_REPORT_BODY)
        signed = req.environ.get("measure.auth") == "signature"
        if signed:
            # an agent reports only as itself, and counts only as the current root
            # (an operator may post any)
            _own_name(req, body.get("from") if isinstance(body, dict) else None, "report as")
            self.service.check_root_report(body)
        reply = self.service.ingest_report(body)
        if signed:
            self.service.root_alive(body["from"])
        return json_response(reply, status=202)

    @route("measure", PREFIX + "/events", methods=["GET"])
    @_api(standby=True)
    def get_events(self, req, **_kw):
        return json_response({"events": self.service.events(_since(req))})

    @route("measure", PREFIX + "/actions", methods=["GET"])
    @_api(standby=True)
    def list_actions(self, req, **_kw):
        return json_response({"actions": self.service.list_actions()})

    @route("measure", PREFIX + "/actions/{action_id}", methods=["DELETE"])
    @_api(mutating=True)
    def delete_action(self, req, action_id, **_kw):
        if not _ID_RE.fullmatch(action_id or ""):
            raise HttpError(404, f"unknown action '{action_id[:40]}' (ids are positive integers)")
        return json_response(self.service.delete_action(int(action_id)))

    @route("measure", PREFIX + "/bandwidth", methods=["POST"])
    @_api(mutating=True)
    def post_bandwidth(self, req, **_kw):
        status, reply = self.service.bandwidth(**_bandwidth_args(_json_body(req)))
        return json_response(reply, status=status)

    @route("measure", PREFIX + "/openapi.json", methods=["GET"])
    @_api(standby=True)
    def openapi(self, req, **_kw):
        with open(OPENAPI_PATH, "rb") as f:
            body = f.read()
        return Response(status=200, content_type="application/json", charset="utf-8",
                        body=body)


def known_routes() -> dict[str, set[str]]:
    """Path template -> methods, from the route decorators above."""
    out: dict[str, set[str]] = {}
    for attr in vars(MeasureController).values():
        info = getattr(attr, "routing_info", None)
        if info:
            out.setdefault(info["path"], set()).update(info["methods"])
    return out


class FallbackController(ControllerBase):
    """JSON 404/405 for anything under /measure/v1 that no route matched."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.metrics = data.get(METRICS_KEY)

    # [\s\S], not '.': a path with a newline must get a JSON answer too
    @route("measure_fallback", PREFIX + "{rest:(/[\\s\\S]*)?}")
    @_api(service=False)
    def fallback(self, req, rest="", **_kw):
        for template, methods in known_routes().items():
            pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, req.path_info):
                return error_response(405, f"method {req.method} is not allowed here; "
                                           f"use {', '.join(sorted(methods))}",
                                      {"Allow": ", ".join(sorted(methods))})
        return error_response(404, f"no such endpoint: {req.path_info[:100]}")


def register_rest(wsgi, service, metrics=None) -> Callable[[Any, Any], None]:
    """Register the API on Ryu's WSGIApplication (called by the Ryu app); requests
    are counted in ``metrics`` (``ryu_app.rest.metrics.Metrics``) when given.

    Returns ``rebind(service, metrics)``, which makes every later request go to
    another service (a standby's ``StandbyService`` replaced by the
    ``MeasureService`` of its take-over)."""
    api = {SERVICE_KEY: service, METRICS_KEY: metrics}
    fallback = {METRICS_KEY: metrics}
    wsgi.register(MeasureController, api)
    wsgi.register(FallbackController, fallback)

    def rebind(new_service: Any, new_metrics: Any) -> None:
        api.update({SERVICE_KEY: new_service, METRICS_KEY: new_metrics})
        fallback[METRICS_KEY] = new_metrics

    return rebind
