"""The agent and controller WSGI apps in process, for security, fuzz and fault tests.

- ``make_agent_app``: a real ``Agent`` with the real ``MonitorCore`` behind
  the monitor's channel (``testing.monitors.InlineMonitor``), capture rules kept in memory
  (``MemoryCapture``), and the real ``OverlayNode`` with a recording transport.
- ``make_controller_app``: Ryu's ``WSGIApplication`` with the project's REST
  over a real ``MeasureService`` and SQLite store, agent HTTP recorded.
- ``signed`` / ``bearer`` build requests with each credential;
  ``agent_state`` / ``controller_state`` snapshot everything a request could
  change, for no-side-effect checks; ``ready_agent`` / ``ready_controller``
  return apps holding a little state.
"""

from __future__ import annotations

import json
from typing import Any

from host_agent.capture.rules import CaptureFilter, sample_args
from host_agent.protocols import CaptureRules
from measure_model.task import Task, parse_task
from testing.clock import Clock
from testing.monitors import InlineMonitor

SECRET = b"hostile-input-test-secret-0123456789abcdef"
#: the name of the agent ``make_agent_app`` builds
AGENT_NAME = "fz"


class RecordingTransport:
    """Overlay transport that records outgoing requests and answers 503."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []

    def _record(self, method, url, json=None, timeout=5.0):
        self.sent.append((method, url, json))
        return 503, {"error": "test transport"}

    def request(self, method, url, json=None, timeout=5.0):
        return self._record(method.lower(), url, json, timeout)


class MemoryCapture:
    """In-memory stand-in for ``capture.Capture`` (the netns tier runs real iptables).

    Records the validated filters the agent would install; rule counters
    read zero, so snapshots carry ``missed`` as they do with real rules.
    """

    def __init__(self) -> None:
        self.rules: dict[int, tuple[CaptureFilter, int]] = {}

    def remove_stale(self) -> int:
        return 0

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        self.rules.clear()

    def add(self, sketch: int, slot: int, filt: CaptureFilter, sample: float = 1.0,
            sample_mode: str = "random", mode: str = "nfqueue") -> None:
        filt.match_args()  # what would reach iptables: must build without error
        sample_args(sample, sample_mode)
        self.rules[sketch] = (filt, slot)

    def remove(self, sketch: int) -> None:
        del self.rules[sketch]

    def counters(self, max_age: float = 0.0) -> dict[int, tuple[int, int]]:
        return {sketch: (0, 0) for sketch in self.rules}

    def listing(self) -> list[str]:
        return [f"{s}:{slot}:{' '.join(f.match_args())}"
                for s, (f, slot) in sorted(self.rules.items())]


def make_agent_app(secret: bytes | None = SECRET, allow_legacy: bool = False,
                   capture: CaptureRules | None | str = "memory") -> tuple[Any, Any, Any]:
    """An ``AgentApp`` over a real Agent, the real monitor core and the overlay role.

    Capture rules are kept in memory (``MemoryCapture``); the netns tier runs
    real iptables. Returns ``(app, agent, transport)``.
    """
    from host_agent.agent import Agent
    from host_agent.api import AgentApp
    from host_agent.overlay.node import OverlayNode
    from measure_common.auth import Verifier, agent_key
    from measure_common.runner import InlineRunner

    rules = MemoryCapture() if capture == "memory" else capture
    assert not isinstance(rules, str), f"capture: 'memory', None or rules, not {rules!r}"
    agent = Agent(AGENT_NAME, [InlineMonitor()], capture=rules, data_ip="10.0.0.9")
    transport = RecordingTransport()
    overlay = OverlayNode(agent, http=transport, runner=InlineRunner())
    verifier = Verifier.for_agent(AGENT_NAME, agent_key(secret, AGENT_NAME)) if secret else None
    return AgentApp(agent, verifier, allow_legacy, overlay=overlay), agent, transport


def agent_state(app) -> object:
    """Everything a request could change on an agent app (for no-side-effect checks)."""
    import json

    agent = app.agent
    return json.dumps({
        "sketches": [s.describe() for _, s in sorted(agent.sketches.items())],
        "tasks": agent.tasks, "next": agent.next_sketch,
        "monitor": sorted(agent.monitors[0].core.sketches),
        "rules": agent.capture.listing() if agent.capture is not None else None,
        "overlay": app.overlay.overlay(), "stats": app.overlay.stats,
        "beats": app.overlay.subtree_beats(),
        "receive_sessions": sorted(app.bandwidth.sessions.live()),
    }, sort_keys=True, default=repr)


def signed(method: str, path: str, body: bytes = b"", secret: bytes = SECRET,
           now: float | None = None, headers: dict | None = None,
           sender: str = "controller", receiver: str = AGENT_NAME):
    """A webob request signed like ``HmacAuth`` signs a real one: by default the
    controller's request to the test agent (``secret`` is the master secret)."""
    import webob

    from measure_common.auth import CONTROLLER, agent_key, sign_request

    req = webob.Request.blank(path, method=method, body=body,
                              headers={"Content-Type": "application/json", **(headers or {})})
    try:
        path_qs = req.path_qs
    except UnicodeDecodeError:  # a non-UTF-8 path: sign what goes on the wire
        from urllib.parse import quote

        raw = req.environ["PATH_INFO"].encode("latin-1")
        query = req.environ.get("QUERY_STRING")
        path_qs = quote(raw, safe="/") + (f"?{query}" if query else "")
    key = agent_key(secret, receiver if sender == CONTROLLER else sender)
    req.headers.update(sign_request(key, method, path_qs, body, now=now, sender=sender,
                                    receiver=receiver))
    return req


TASK = {"name": "t-1", "kind": "counter", "key": "src", "filter": {"proto": "udp"},
        "report_interval": 5}
REPORT = {"task_id": "t-0", "from": "c1", "snapshot": {}, "covered": ["c1"], "missing": [],
          "interval_end": 1e12}


def ready_agent(allow_legacy=False):
    """An agent holding sketch 1 (counter 1), overlay epoch 1 with child c1, task t-0.

    ``REPORT`` is refreshed to a valid report of c1 for t-0.
    """
    import json

    app, agent, transport = make_agent_app(allow_legacy=allow_legacy)
    setup = [
        ("POST", "/agent/v1/sketches", {"filter": {"proto": "tcp"}, "counters": [{"key": "src"}]}),
        ("PUT", "/agent/v1/overlay", {"epoch": 1, "parent": None, "root": True,
                                      "children": [{"name": "c1", "url": "http://127.0.0.1:9"}],
                                      "controller": "http://127.0.0.1:9"}),
        ("PUT", "/agent/v1/tasks/t-0", {**TASK, "name": "t-0"}),
    ]
    for method, path, body in setup:
        resp = signed(method, path, json.dumps(body).encode()).get_response(app)
        assert resp.status_code in (200, 201), resp.text
    transport.sent.clear()
    REPORT["snapshot"] = agent.snapshot_task("t-0", 1e12)
    return app, agent, transport


TOKEN = "hostile-input-test-token-0123456789abcdefghij"
CLOCK = 1_700_000_000.0


class RecordingHttp:
    """The controller's agent client: records requests, answers every agent 'ok'."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []

    def request(self, method, url, json=None, timeout=5.0):
        self.sent.append((method, url, json))
        if "/agent/v1/tasks/" in url:
            return 200, {"agents": {"h2": "ok"}}
        return 200, {}


def make_controller_app(state_dir, reads_open: bool = False, clock=None):
    """Ryu's ``WSGIApplication`` with the project's REST API over a real MeasureService.

    Real SQLite store in ``state_dir``, a settable clock, agent HTTP recorded
    (``RecordingHttp``). Returns ``(wsgi_app, service)``.
    """
    from ryu_app import launcher

    launcher.patch_eventlet()
    from ryu.app.wsgi import WSGIApplication

    from measure_common.auth import Verifier
    from ryu_app.auth_config import AuthConfig
    from ryu_app.net.topology import Topology
    from ryu_app.rest.api import register_rest
    from ryu_app.service.core import MeasureService

    auth = AuthConfig(token=TOKEN, secret=SECRET, reads_open=reads_open,
                      verifier=Verifier.for_controller(SECRET))
    service = MeasureService(Topology(), str(state_dir), now=clock or Clock(), http=RecordingHttp(),
                             controller_url="http://127.0.0.1:9", auth=auth)
    wsgi = WSGIApplication()
    register_rest(wsgi, service)
    return wsgi, service


def controller_state(service) -> str:
    """Everything a request could change on the controller (no-side-effect checks)."""
    import json

    from ryu_app.service.store import GLOBAL

    return json.dumps({
        "tasks": service.list_tasks(), "stored": service.store.tasks(),
        "agents": service.agents(), "overlay": service.overlay_view(),
        "events": service.events(0), "sent": service.http.sent,
        "results": {t: service.store.results(t, GLOBAL, limit=5) for t in service.tasks},
        "actions": service.list_actions(),
    }, sort_keys=True, default=repr)


def bearer(method: str, path: str, body: bytes = b"", token: str = TOKEN,
           content_type: str = "application/json"):
    import webob

    return webob.Request.blank(path, method=method, body=body, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})


def task_report() -> dict:
    """A valid report of h2 for task 1 (hh-1), its snapshot from a real agent."""
    _, agent, _ = make_agent_app()
    agent.install_task("1", Task.from_dict({"name": "hh-1", "kind": "heavy_hitters"}))
    return {"task_id": "1", "from": "h2", "snapshot": agent.snapshot_task("1", CLOCK),
            "covered": ["h2"], "missing": [], "interval_end": CLOCK}


def ready_controller(tmp_path: Any, reads_open: bool = False) -> tuple[Any, Any]:
    """A controller with agents h2, h3 registered and task 1 (hh-1) applied."""
    app, service = make_controller_app(tmp_path, reads_open=reads_open)
    regs = [{"name": f"h{i}", "url": f"http://192.168.100.{i}:8000", "data_ip": f"10.0.0.{i}",
             "mac": f"00:00:00:00:00:0{i}"} for i in (2, 3)]
    for path, body in [("/measure/v1/agents", regs[0]), ("/measure/v1/agents", regs[1]),
                       ("/measure/v1/tasks", {"name": "hh-1", "kind": "heavy_hitters"})]:
        resp = bearer("POST", path, json.dumps(body).encode()).get_response(app)
        assert resp.status_code == 201, resp.text
    # action 1: a dry-run block of h3 (attached to switch 1), as task 1's reaction would make
    service.topology.add_switch(1, [1])
    service.topology.learn_host("00:00:00:00:00:03", "10.0.0.3", 1, 1)
    scan = parse_task({"name": "scan", "kind": "port_scan", "on": [
        {"event": "port_scan", "action": "block", "duration": 60, "mode": "dry_run"}]}, "t")
    service.actions.react("1", scan, [{"id": 1, "kind": "port_scan", "src": "10.0.0.3"}])
    service.http.sent.clear()
    service.now.t += 1  # a heartbeat now changes last_seen
    return app, service
