"""The controller's REST API and service in process, for unit tests and benchmarks.

``Harness`` runs the real ``MeasureService`` and REST routes under Ryu's
``WSGIApplication`` (driven with ``webob.Request.blank``, no server) over a
fixed tree topology, with a settable clock and ``FakeAgents``: an agent
HTTP client that answers like a healthy overlay and records every call.
``hh_report`` and ``sample_report`` build the reports agents post.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from host_agent.counters.countmin import Counter, CounterSpec  # noqa: E402
from measure_model.packet.keys import HeaderBatch, parse_key  # noqa: E402
from measure_model.sketch.countmin import CountMinSketch  # noqa: E402
from measure_model.sketch.hll import HyperLogLog  # noqa: E402
from ryu_app.auth_config import AuthConfig  # noqa: E402
from ryu_app.rest.api import register_rest  # noqa: E402
from ryu_app.service.core import MeasureService  # noqa: E402
from testing.netns import ROOT  # noqa: E402
from testing.topologies import tree_topology  # noqa: E402


class FakeAgents:
    """Answers the controller's /agent/v1 calls like a healthy overlay would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.down: set[str] = set()
        self.refusing: set[str] = set()
        self.overlay: dict[str, dict] = {}
        self.tasks: dict[str, set[str]] = {}
        self.bandwidth_reply: tuple[int, object] = (200, {"mbit_s": 9.6, "method": "slops"})
        #: (agent asked, task id, host) -> the per-host lines it answers for ``?host=``
        self.host_lines: dict[tuple[str, str, str], list[dict]] = {}

    @staticmethod
    def name_of(url: str) -> str:
        return "h" + (urlsplit(url).hostname or "").rsplit(".", 1)[1]

    def request(self, method, url, json=None, timeout=5.0):
        self.calls.append((method, url, json))
        name, path = self.name_of(url), urlsplit(url).path
        if name in self.down:
            raise ConnectionError(f"{method} {url}: ConnectTimeout")
        if path == "/agent/v1/overlay":
            held = self.overlay.get(name, {}).get("epoch", -1)
            if json["epoch"] < held:
                return 409, {"error": f"overlay: stale epoch {json['epoch']} < current {held}"}
            self.overlay[name] = json
            return 200, {"epoch": json["epoch"]}
        if method == "GET" and path.startswith("/agent/v1/tasks/") and "/hosts/" in path:
            _, _, _, _, task_id, _, host = path.split("/")
            lines = self.host_lines.get((name, task_id, host))
            if lines is None:
                return 404, {"error": f"no per-host line of '{host}' for task '{task_id}'"}
            return 200, {"task_id": task_id, "host": host, "results": lines}
        if path.startswith("/agent/v1/tasks/"):
            task_id = path.rsplit("/", 1)[1]
            holders = {n for n in self.overlay if n not in self.down}
            if method == "PUT":
                self.tasks[task_id] = holders - self.refusing
            else:
                self.tasks.pop(task_id, None)
            return 200, {"agents": {n: "error: HTTP 507: sketch memory limit" if n in
                                    self.refusing else "ok" for n in sorted(holders)}}
        if path == "/agent/v1/bandwidth":
            return self.bandwidth_reply
        return 404, {"error": "no such endpoint"}

    def sent(self, method: str, suffix: str) -> list[str]:
        return [self.name_of(u) for m, u, _ in self.calls if m == method and u.endswith(suffix)]


class Harness:
    def __init__(self, state_dir: str, auth: AuthConfig | None = None,
                 agents: FakeAgents | None = None) -> None:
        self.clock = 1000.0
        self.agents = agents if agents is not None else FakeAgents()
        self.state_dir = state_dir
        self.service = MeasureService(tree_topology(), state_dir, now=lambda: self.clock,
                                      http=self.agents, fanout=3,
                                      controller_url="http://192.168.100.254:8080",
                                      auth=auth or AuthConfig())
        self.wsgi = WSGIApplication()
        register_rest(self.wsgi, self.service)

    def call(self, method: str, path: str, body=None, content_type="application/json",
             headers=None):
        kw = {"method": method, "headers": headers or {}}
        if body is not None:
            kw["body"] = body if isinstance(body, bytes) else json.dumps(body).encode()
            kw["content_type"] = content_type
        resp = Request.blank(path, **kw).get_response(self.wsgi)
        assert resp.content_type == "application/json", resp.body
        assert b"Traceback" not in resp.body
        return resp.status_int, json.loads(resp.body)

    def register(self, *numbers: int) -> None:
        for i in numbers:
            status, _ = self.call("POST", "/measure/v1/agents", {
                "name": f"h{i}", "url": f"http://192.168.100.{i}:8000",
                "data_ip": f"10.0.0.{i}", "mac": f"00:00:00:00:00:{i:02x}"})
            assert status == 201

    def beat(self, *numbers: int) -> None:
        for i in numbers:
            assert self.call("POST", f"/measure/v1/agents/h{i}/heartbeat")[0] == 200

    def tick(self, seconds: float = 1.0) -> None:
        self.clock += seconds
        self.service.tick(self.clock)


POLICY = b"""tasks:
  - {name: hh-icmp, kind: heavy_hitters, filter: {proto: icmp}, key: src_dst, increment: bytes}
  - {name: scan, kind: port_scan, filter: {proto: tcp}, scope: [h5]}
"""


def hh_report(task_id: str, covered, missing, end: float, hh: dict) -> dict:
    """A report whose snapshot is a real counter's: each ``src,dst`` key of ``hh``
    sent as one packet of that many bytes (no packets when ``hh`` is empty)."""
    counter = Counter(CounterSpec(key="src_dst", increment="bytes", threshold=0.5), now=end - 1)
    flows = [k.split(",") + [v] for k, v in hh.items()]
    counter.update(HeaderBatch.from_arrays(
        [parse_key("src", s) for s, _, _ in flows], [parse_key("dst", d) for _, d, _ in flows],
        [6] * len(flows), [1000] * len(flows), [80] * len(flows), [n for _, _, n in flows]),
        end - 0.5)
    return {"task_id": task_id, "interval_end": end, "snapshot": counter.snapshot(end),
            "covered": covered, "missing": missing, "generated_at": end, "oldest": end,
            "per_host": {"h2": {"total": 600, "heavy_hitters": hh}}}


#: A policy file of the repository (heavy hitters), for CLI tests.
POLICY_FILE = os.path.join(ROOT, "policies", "heavy_hitter.yaml")

SKETCH = CountMinSketch(64, 2, 1).to_wire()
HLL = HyperLogLog(12).to_wire()


def sample_report(end: float, hh: dict | None = None, scan: dict | None = None,
                  missing: list | None = None, **kw: Any) -> dict:
    """A root report of task t1 over h1 and h2 (hand-written snapshot), ``kw`` overriding."""
    snap = {"key": "src", "increment": "pkt", "packets": 30, "bytes": 3000, "total": 30,
            "sketch": SKETCH,
            "heavy_hitters": hh or {}, "top_k": sorted((hh or {}).items()),
            "distinct": {"estimate": 3, "hll": HLL, "precision": 12},
            "scan": scan or {}}
    base = {"task_id": "t1", "epoch": 1, "from": "h1", "interval_end": end,
            "generated_at": end + 0.2, "snapshot": snap, "covered": ["h1", "h2"],
            "missing": missing or [], "oldest": end + 0.01, "scan_ports": 5,
            "per_host": {"h1": {"packets": 10, "bytes": 1000, "total": 10,
                                "heavy_hitters": {"10.0.0.9": 10}, "generated_at": end + 0.01},
                         "h2": {"packets": 20, "bytes": 2000, "total": 20,
                                "heavy_hitters": {}, "generated_at": end + 0.05}}}
    return {**base, **kw}


class QuietHandler(WSGIRequestHandler):
    """A ``wsgiref`` request handler that keeps test output clean."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - wsgiref's name
        pass


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The WSGI ``app`` served on a free loopback port by a thread; yields its base URL
    (``http://127.0.0.1:PORT``) and always stops the server."""
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
