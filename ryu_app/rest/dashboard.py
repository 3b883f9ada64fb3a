"""The web dashboard and ``GET /metrics``, on the controller's REST port.

Routes (registered on Ryu's ``WSGIApplication`` next to ``rest.py``'s):

- ``GET /dashboard/`` and ``GET /dashboard/static/{file}``: the single-page
  dashboard in ``ryu_app/rest/static/`` (HTML, JavaScript, CSS written for
  this project: no library, no CDN, works offline). These files hold no
  data: the page asks for the controller token once, keeps it in the
  browser's ``sessionStorage`` and sends it as ``Authorization: Bearer`` on
  every data request (the REST API under ``/measure/v1`` and the two routes
  below), which refuse a missing or wrong token exactly like the REST API
  (the same ``rest._api`` wrapper), unless reads are open.
- ``GET /dashboard/api/agent-health``: each agent's health (up, reachable,
  monitor restarts, packets seen and missed; ``agent_health.AgentHealth``).
- ``GET /metrics``: the Prometheus exposition (``metrics.Metrics``).

Every page response carries a Content-Security-Policy allowing only this
origin's scripts and styles (no inline script), on top of the page code's
rule of putting data into the DOM only as text.
"""

from __future__ import annotations

import os
import re

from ryu.app.wsgi import ControllerBase, Response, route

from ryu_app.rest.api import SERVICE_KEY, HttpError, _api, json_response
from ryu_app.rest.metrics import CONTENT_TYPE, Metrics
from ryu_app.service.agent_health import AgentHealth

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
METRICS_KEY = "dashboard_metrics"
HEALTH_KEY = "dashboard_health"
_FILE_RE = re.compile(r"[a-z][a-z0-9_-]{0,40}\.(js|css|html|svg)")
_TYPES = {"js": "application/javascript", "css": "text/css", "html": "text/html",
          "svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> Response:
    match = _FILE_RE.fullmatch(name)
    path = os.path.join(STATIC_DIR, name)
    if match is None or not os.path.isfile(path):
        raise HttpError(404, f"no such dashboard file: {name[:60]}")
    with open(path, "rb") as f:
        body = f.read()
    resp = Response(status=200, content_type=_TYPES[match[1]], charset="utf-8", body=body)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


class DashboardController(ControllerBase):
    """The dashboard's pages and data routes, and ``/metrics`` (see module docstring)."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.service = data[SERVICE_KEY]
        self.metrics = data[METRICS_KEY]
        self.health = data[HEALTH_KEY]

    @route("dashboard", "/dashboard", methods=["GET"])
    @_api(service=False)
    def root(self, req, **_kw):
        resp = Response(status=302, content_type="text/plain", charset="utf-8",
                        body=b"see /dashboard/\n")
        resp.headers["Location"] = "/dashboard/"
        return resp

    @route("dashboard", "/dashboard/", methods=["GET"])
    @_api(service=False)
    def index(self, req, **_kw):
        return _static("index.html")

    @route("dashboard", "/dashboard/static/{name}", methods=["GET"])
    @_api(service=False)
    def static(self, req, name, **_kw):
        return _static(name)

    @route("dashboard", "/dashboard/api/agent-health", methods=["GET"])
    @_api()
    def agent_health(self, req, **_kw):
        return json_response({"agents": self.health.view(self.service.now())})

    @route("dashboard", "/metrics", methods=["GET"])
    @_api()
    def prometheus(self, req, **_kw):
        resp = Response(status=200, body=self.metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp


def register_dashboard(wsgi, service) -> Metrics:
    """Register the dashboard and ``/metrics``; returns the metrics ``rest.py``
    counts its requests into."""
    health = AgentHealth(service.registry, service.http, service.runner)
    metrics = Metrics(service, health, now=service.now)
    wsgi.register(DashboardController, {SERVICE_KEY: service, METRICS_KEY: metrics,
                                        HEALTH_KEY: health})
    return metrics
