"""The agent's HTTP API: a plain WSGI app over webob (served by eventlet.wsgi).

Routes (docs/design.md, "Agent HTTP API"):

    POST   /                                      legacy messages (legacy.py)
    GET    /agent/v1/health
    GET    /agent/v1/flows/{task}                 active flows of a flows task (?top=&by=)
    GET    /agent/v1/sketches                     list
    POST   /agent/v1/sketches                     {"filter": {...}, "counters": [{...}]}
    GET    /agent/v1/sketches/{id}
    DELETE /agent/v1/sketches/{id}
    POST   /agent/v1/sketches/{id}/counters       {"key": "src", "increment": "pkt", ...}
    GET    /agent/v1/sketches/{id}/counters/{cid} summary (?key=K adds "estimate";
                                                   ?full=1, signed: the whole snapshot)
    DELETE /agent/v1/sketches/{id}/counters/{cid}
    GET|PUT /agent/v1/overlay, PUT|DELETE /agent/v1/tasks/{id},
    POST   /agent/v1/reports                      overlay role (overlay_node.py)
    POST   /agent/v1/heartbeats                   a child's heartbeat (overlay/beats.py)
    GET    /agent/v1/tasks/{id}/hosts/{name}      per-host lines (?limit=), for ?host=
    *      /agent/v1/bandwidth[/...]              bandwidth probing (bw_http.py)

The boundary does everything once: the body is bounded (64 KiB, 413), the
request is authenticated (a ``measure_common.auth.Verifier`` checks the HMAC
signature of every state-changing ``/agent/v1`` request and of every overlay
request, when the agent has a secret), JSON is parsed, and every failure
becomes ``{"error": "..."}`` with a 4xx status naming the field. A 500 says
"internal error" and never carries a traceback (it is logged). Legacy
messages are refused with 403 unless the agent was started with
``--allow-legacy``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import webob

from host_agent.agent import Agent, capture_filter, parse_capture_mode, parse_counter
from host_agent.bandwidth.api import BandwidthApi, bandwidth_api
from host_agent.errors import AgentError, MonitorError
from host_agent.legacy.handler import LegacyContext, handle_legacy
from host_agent.overlay.node import OverlayNode
from measure_common import jsonlimits
from measure_common.httpclient import HttpClient
from measure_common.wsgibody import BodyTooLarge, hold_in_memory
from measure_model.fields import HOST_PATTERN
from measure_model.task import DEFAULT_CAPTURE
from measure_model.wire.overlay import TASK_ID_PATTERN

log = logging.getLogger("host_agent.api")

MAX_BODY = 64 * 1024


def _full_read(req: webob.Request) -> bool:
    """``?full=1``: a read that ships whole sketches (signed, when the agent has a key)."""
    return req.method in ("GET", "HEAD") and req.GET.get("full") not in (None, "", "0",
                                                                          "false")
#: what a request signed by another agent (not the controller) may reach
PEER_PATHS = ("/agent/v1/tasks/", "/agent/v1/reports", "/agent/v1/heartbeats",
              "/agent/v1/bandwidth/receive")
MAX_REPORT_BODY = 16 * 1024 * 1024  # as the controller's POST reports
NO_SECRET = ("this agent has no shared secret: configuration is accepted only from the "
             "controller or the overlay parent, signed (start it with --secret-file; "
             "--insecure only on an isolated test network)")
LEGACY_DISABLED = "legacy messages are disabled; start the agent with --allow-legacy"
_ID = r"(\d{1,9})"
_TASK = f"({TASK_ID_PATTERN})"
SKETCH_BODY_FIELDS = ("filter", "counters", "capture")


def json_response(obj: Any, status: int = 200) -> webob.Response:
    return webob.Response(json.dumps(obj, separators=(",", ":")), status=status,
                          content_type="application/json", charset="utf-8")


def error(status: int, message: str) -> webob.Response:
    return json_response({"error": message}, status)


def parse_json(req: webob.Request) -> Any:
    if not req.body:
        raise AgentError(400, "body must be a JSON object")
    try:
        return jsonlimits.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AgentError(400, f"malformed JSON body: {exc}") from None


def json_object(req: webob.Request) -> dict:
    body = parse_json(req)
    if not isinstance(body, dict):
        raise AgentError(400, "body must be a JSON object")
    return body


def _from_the_sender(req: webob.Request, what: str, may: str) -> Any:
    """The parsed body of an agent's message; 403 if an agent signed it whose name is not
    the body's ``from`` (the controller's key may speak for any agent)."""
    body = parse_json(req)
    sender = req.environ.get("measure.sender")
    if sender not in (None, "controller") and isinstance(body, dict) \
            and body.get("from") != sender:
        log.warning("refused %s from agent %s claiming to be from %r", what, sender,
                    str(body.get("from"))[:64])
        raise AgentError(403, f"agent {sender} may only {may}")
    return body


class AgentApp:
    """WSGI application of one agent."""

    def __init__(self, agent: Agent, verifier: Any = None, allow_legacy: bool = False,
                 max_body: int = MAX_BODY, insecure: bool = False,
                 bandwidth: BandwidthApi | None = None,
                 overlay: OverlayNode | None = None) -> None:
        """``verifier`` checks signed requests; without one, state-changing
        ``/agent/v1`` requests are refused (403) unless ``insecure`` is set
        (``--insecure``: an isolated test network only). ``bandwidth`` serves
        ``/agent/v1/bandwidth`` (default: unsigned requests to the peer);
        ``overlay`` is the agent's overlay role (without one, its routes are 503)."""
        self.agent, self.verifier, self.insecure = agent, verifier, insecure
        self.bandwidth = bandwidth if bandwidth is not None else bandwidth_api(
            agent.data_ip, HttpClient())
        self.overlay = overlay
        self.legacy = LegacyContext(agent, overlay, self.bandwidth.prober)
        self.allow_legacy, self.max_body = allow_legacy, max_body
        self.routes: list[tuple[re.Pattern[str], dict[str, Any]]] = [
            (re.compile(r"^/agent/v1/health$"), {"GET": self.health}),
            (re.compile(rf"^/agent/v1/flows/{_TASK}$"), {"GET": self.get_flows}),
            (re.compile(r"^/agent/v1/sketches$"), {"GET": self.list_sketches,
                                                   "POST": self.create_sketch}),
            (re.compile(rf"^/agent/v1/sketches/{_ID}$"), {"GET": self.get_sketch,
                                                          "DELETE": self.delete_sketch}),
            (re.compile(rf"^/agent/v1/sketches/{_ID}/counters$"), {"POST": self.add_counter}),
            (re.compile(rf"^/agent/v1/sketches/{_ID}/counters/{_ID}$"),
             {"GET": self.get_counter, "DELETE": self.delete_counter}),
            (re.compile(r"^/agent/v1/overlay$"), {"GET": self.get_overlay,
                                                  "PUT": self.put_overlay}),
            (re.compile(rf"^/agent/v1/tasks/{_TASK}$"), {"PUT": self.put_task,
                                                         "DELETE": self.delete_task}),
            (re.compile(r"^/agent/v1/reports$"), {"POST": self.post_report}),
            (re.compile(r"^/agent/v1/heartbeats$"), {"POST": self.post_beats}),
            (re.compile(rf"^/agent/v1/tasks/{_TASK}/hosts/({HOST_PATTERN})$"),
             {"GET": self.get_host_lines}),
        ]

    def __call__(self, environ: dict, start_response: Any) -> Any:
        return self.handle(webob.Request(environ))(environ, start_response)

    # ------------------------------------------------------------ boundary
    def handle(self, req: webob.Request) -> webob.Response:
        try:
            self._bound_body(req)
            try:
                path = req.path_info
                req.GET  # noqa: B018 - decode the query once, here
            except UnicodeDecodeError:
                raise AgentError(400, "path is not valid UTF-8") from None
            if path in ("/", ""):
                if req.method != "POST":
                    raise AgentError(405, "legacy messages use POST /")
                if not self.allow_legacy:
                    raise AgentError(403, LEGACY_DISABLED)
                return handle_legacy(self.legacy, req)
            self._authenticate(req, path)
            if BandwidthApi.serves(path):
                return self.bandwidth.handle(req)
            for pattern, methods in self.routes:
                match = pattern.match(path)
                if match:
                    handler = methods.get(req.method)
                    if handler is None:
                        raise AgentError(405, f"method {req.method} not allowed on {path}; "
                                              f"use {', '.join(methods)}")
                    return handler(req, *match.groups())
            raise AgentError(404, f"no such resource {path}")
        except AgentError as exc:
            return error(exc.status, exc.message)
        except MonitorError as exc:
            log.error("monitor unavailable: %s", exc)
            return error(503, f"monitor unavailable: {exc}")
        except Exception:  # broad: never a traceback on the wire (logged with its traceback)
            log.exception("internal error on %s %r", req.method, req.environ.get("PATH_INFO"))
            return error(500, "internal error")

    def _bound_body(self, req: webob.Request) -> None:
        # a child's report carries its subtree's merged state (an elastic counter's
        # heavy entries and light cells, compressed): the controller's report limit
        # (the raw WSGI path: decoding is checked later, answered with a 400)
        raw_path = req.environ.get("PATH_INFO", "")
        limit = MAX_REPORT_BODY if raw_path in ("/agent/v1/reports", "/agent/v1/heartbeats") \
            else self.max_body  # a subtree's heartbeats: about 30 bytes per agent
        length = req.content_length
        if length is not None and length > limit:
            raise AgentError(413, f"body too large: more than {limit} bytes")
        try:
            hold_in_memory(req, limit)
        except BodyTooLarge as exc:
            raise AgentError(413, str(exc)) from None

    def _authenticate(self, req: webob.Request, path: str) -> None:
        overlay = path == "/agent/v1/overlay" or path.startswith(("/agent/v1/tasks",
                                                                  "/agent/v1/reports"))
        if req.method in ("GET", "HEAD") and not overlay and not _full_read(req):
            return
        if self.verifier is None:
            if self.insecure:
                return
            raise AgentError(403, NO_SECRET)
        from measure_common.auth import CONTROLLER, AuthError

        try:
            sender = self.verifier.verify_webob(req)
        except AuthError as exc:
            log.warning("refused %s %s: %s", req.method, path[:200], exc.message)
            raise AgentError(exc.status, exc.message) from None
        req.environ["measure.sender"] = sender
        if sender != CONTROLLER and not path.startswith(PEER_PATHS):
            # another agent's key covers overlay traffic and bandwidth receivers only
            log.warning("refused %s %s from agent %s: only the controller may", req.method,
                        path[:200], sender)
            raise AgentError(403, f"agent {sender} may not call {req.method} {path[:200]}; "
                                  "only the controller may")

    # ------------------------------------------------------------ v1
    def health(self, req: webob.Request) -> webob.Response:
        out = self.agent.health()
        if self.overlay is not None:
            try:
                out["overlay"] = self.overlay.overlay()
            except Exception as exc:  # noqa: BLE001 - health must answer whatever failed
                log.warning("health: the overlay state is unavailable: %r", exc)
                out["overlay"] = None
        return json_response(out)

    def get_flows(self, req: webob.Request, task_id: str) -> webob.Response:
        """This agent's active flows of a flows task (``?top=N&by=bytes|packets``)."""
        top = req.GET.get("top", "10")
        if not re.fullmatch(r"[1-9][0-9]{0,2}|1000", top):
            raise AgentError(400, "query parameter 'top' must be an integer from 1 to 1000")
        by = req.GET.get("by", "bytes")
        if by not in ("bytes", "packets"):
            raise AgentError(400, "query parameter 'by' must be bytes or packets")
        return json_response({"task": task_id, "by": by,
                              "flows": self.agent.flows_top(task_id, int(top), by)})

    def list_sketches(self, req: webob.Request) -> webob.Response:
        return json_response([s.describe() for _, s in sorted(self.agent.sketches.items())])

    def create_sketch(self, req: webob.Request) -> webob.Response:
        body = json_object(req)
        unknown = sorted(set(body) - set(SKETCH_BODY_FIELDS))
        if unknown:
            raise AgentError(400, f"unknown field {unknown[0]!r}")
        counters = body.get("counters", [])
        if not isinstance(counters, list):
            raise AgentError(400, "counters must be a list of counter objects")
        filt = capture_filter(body.get("filter", {}))
        mode = parse_capture_mode(body.get("capture", DEFAULT_CAPTURE))
        tasks = []
        for i, c in enumerate(counters):  # parse all before installing anything
            try:
                tasks.append(parse_counter(c, filt))
            except AgentError as exc:
                raise AgentError(400, f"counters[{i}]: {exc.message}") from None
        sketch = self.agent.create_sketch(filt, capture=mode)
        try:
            for task in tasks:
                self.agent.add_task_counter(sketch.id, task)
        except AgentError:
            self.agent.delete_sketch(sketch.id)
            raise
        return json_response(sketch.describe(), 201)

    def get_sketch(self, req: webob.Request, sid: str) -> webob.Response:
        return json_response(self.agent.get_sketch(sid).describe())

    def delete_sketch(self, req: webob.Request, sid: str) -> webob.Response:
        sketch = self.agent.get_sketch(sid)
        self.agent.delete_sketch(sketch.id)
        if self.overlay is not None and sketch.task_id is None:
            try:  # a legacy sketch the root shared: the subtree's copies go too
                self.overlay.unshare_legacy_sketch(sketch.id)
            except Exception as exc:  # noqa: BLE001 - the local delete is done
                log.warning("removing sketch %d from the subtree failed: %s", sketch.id, exc)
        return json_response({"deleted": int(sid)})

    def add_counter(self, req: webob.Request, sid: str) -> webob.Response:
        body = json_object(req)
        cid = self.agent.add_counter(sid, body)
        sketch = self.agent.get_sketch(sid)
        return json_response({"id": cid, "sketch": sketch.id, **sketch.counters[cid].describe()},
                             201)

    def get_counter(self, req: webob.Request, sid: str, cid: str) -> webob.Response:
        # open: the summary, rule counters at most RULES_MAX_AGE old; ?full=1 (signed
        # when the agent has a key): the whole snapshot, sketch cells included
        from host_agent.health import RULES_MAX_AGE

        now = self.agent.clock()
        full = _full_read(req)
        snap = self.agent.snapshot(sid, cid, now, full=full,
                                   rules_max_age=0.0 if full else RULES_MAX_AGE)
        key = req.GET.get("key")
        if key is not None:
            snap["estimate"] = {"key": key,
                                "value": self.agent.query(sid, cid, "estimate", key=key,
                                                          now=now)}
        return json_response(snap)

    def delete_counter(self, req: webob.Request, sid: str, cid: str) -> webob.Response:
        self.agent.delete_counter(sid, cid)
        return json_response({"deleted": int(cid), "sketch": int(sid)})

    # ------------------------------------------------------------ overlay
    def _overlay(self) -> OverlayNode:
        if self.overlay is None:
            raise AgentError(503, "overlay role is not available on this agent")
        return self.overlay

    def _overlay_call(self, fn: Any, *args: Any) -> webob.Response:
        try:
            return json_response(fn(*args))
        except AgentError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            status = getattr(exc, "status", 409 if type(exc).__name__ == "StaleEpoch" else 400)
            return error(status, str(exc).strip("'\""))

    def get_overlay(self, req: webob.Request) -> webob.Response:
        return self._overlay_call(self._overlay().overlay)

    def put_overlay(self, req: webob.Request) -> webob.Response:
        return self._overlay_call(self._overlay().set_overlay, parse_json(req))

    def put_task(self, req: webob.Request, task_id: str) -> webob.Response:
        return self._overlay_call(self._overlay().put_task, task_id, parse_json(req))

    def delete_task(self, req: webob.Request, task_id: str) -> webob.Response:
        body = parse_json(req) if req.body else None
        return self._overlay_call(self._overlay().delete_task, task_id, body)

    def post_report(self, req: webob.Request) -> webob.Response:
        body = _from_the_sender(req, "a report", "report as itself")
        return self._overlay_call(self._overlay().receive_report, body)

    def post_beats(self, req: webob.Request) -> webob.Response:
        body = _from_the_sender(req, "a heartbeat", "send its own heartbeat")
        return self._overlay_call(self._overlay().receive_beats, body)

    def get_host_lines(self, req: webob.Request, task_id: str, name: str) -> webob.Response:
        """One agent's per-host lines of a task (``?limit=``, newest first): this agent's
        own, or a child's last; the controller asks here for ``?host=``."""
        limit = req.GET.get("limit", "1")
        if not re.fullmatch(r"[1-9][0-9]{0,2}", limit):
            raise AgentError(400, "query parameter 'limit' must be an integer from 1 to 999")
        return self._overlay_call(lambda: {"task_id": task_id, "host": name,
                                           "results": self._overlay().host_lines(
                                               task_id, name, int(limit))})
