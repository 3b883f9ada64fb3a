"""Property-based fuzzing (hypothesis) of the validators and both HTTP APIs.

Properties, for every generated input:

- the task model returns tasks or raises ``PolicyError`` (never another
  exception), and accepted tasks round-trip through their wire form;
- the agent and controller WSGI apps, driven in process with
  ``webob.Request.blank``, never answer 5xx, never let an exception escape,
  never put ``Traceback`` in a body, and answer every error with a JSON
  object holding an ``error`` string.

The suite runs a few hundred examples per property (``unit`` tier). The long
run, a few thousand requests per API::

    env FUZZ_EXAMPLES=5000 .venv/bin/pytest -q tests/unit/test_fuzz.py

This module also holds what the security tests share (``test_hostile_input``,
``test_auth``, ``test_faults_netns`` import it): the hostile values, valid
task bodies, and the in-process apps -- ``make_agent_app`` (a real ``Agent``
with the real ``MonitorCore`` behind the monitor's JSON protocol, capture rules
kept in memory, the real ``OverlayNode`` with a recording transport) and
``make_controller_app`` (Ryu's ``WSGIApplication`` with the project's REST over
a real ``MeasureService`` and SQLite store, agent HTTP recorded), with
``signed``/``bearer`` request builders and ``agent_state``/``controller_state``
for no-side-effect checks.
"""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_agent.capture.rules import sample_args
from measure_model.policy import load_policy
from measure_model.task import PolicyError, Task, parse_tasks
from testing.monitors import InlineMonitor

# ---------------------------------------------------------------- shared: hostile values

SHELL_STRINGS = [
    "; rm -rf /tmp/x",
    "$(touch /tmp/pwn)",
    "`touch /tmp/pwn`",
    "| touch /tmp/pwn",
    "&& touch /tmp/pwn",
    "10.0.0.1; touch /tmp/pwn",
    "10.0.0.1 -j ACCEPT",
    "INPUT -j ACCEPT",
    "--help",
    "-F",
    "a\nb",
    "10.0.0.1\r\nX-Injected: 1",
    "x\x00y",
    "../../etc/passwd",
    "%s%s%n",
    "{{7*7}}",
    "\u202etcp",          # right-to-left override
    "ｔｃｐ",               # fullwidth letters
    "１０.０.０.１",         # fullwidth digits
    "\udcff",             # lone surrogate
    "x" * 10_000,
    "",
    " ",
]
NUMBERS = [10 ** 400, 2 ** 64, -(2 ** 64), -1, 1e308, -1e308, math.nan, math.inf, -math.inf,
           True]
SHAPES = [{"a": {"b": {"c": [1, 2, {"d": None}]}}}, [[[[[]]]]], [1, "a"], {}]
HOSTILE = [*SHELL_STRINGS, *NUMBERS, *SHAPES]

#: Files an injection would create if any value reached a shell.
CANARIES = ["/tmp/x", "/tmp/pwn"]


def label(value: object) -> str:
    """A short printable test id for a hostile value."""
    text = ascii(value)
    return text if len(text) <= 24 else text[:21] + "..."


def nested(depth: int) -> object:
    """A JSON value nested ``depth`` levels deep (recursion-limit probe)."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


MEASURE = {
    "name": "hh-1", "kind": "heavy_hitters",
    "filter": {"interface": "INPUT", "proto": "tcp", "src": "10.0.0.0/24", "dst": "10.0.0.5",
               "sport": 80, "dport": "8000:8100"},
    "key": "src", "increment": "pkt", "threshold": 0.05, "top_k": 10,
    "window": {"length": 1.0, "mode": "tumbling"}, "report_interval": 5,
    "sketch": {"width": 16384, "depth": 4, "seed": 1}, "scope": ["h2", "10.0.0.4"],
}
SCAN = {"name": "scan-1", "kind": "port_scan", "scan_ports": 20, "threshold_abs": 100}
BANDWIDTH = {"name": "bw-1", "kind": "bandwidth", "src": "h5", "dst": "h6", "method": "slops",
             "max_duration": 10, "max_bytes": 20_000_000}


# ---------------------------------------------------------------- in-process apps

SECRET = b"hostile-input-test-secret-0123456789abcdef"


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
        self.rules: dict[int, tuple[object, int]] = {}

    def remove_stale(self) -> int:
        return 0

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        self.rules.clear()

    def add(self, sketch: int, slot: int, filt, sample: float = 1.0,
            sample_mode: str = "random") -> None:
        filt.match_args()  # what would reach iptables: must build without error
        sample_args(sample, sample_mode)
        self.rules[sketch] = (filt, slot)

    def remove(self, sketch: int) -> None:
        del self.rules[sketch]

    def counters(self) -> dict[int, tuple[int, int]]:
        return {sketch: (0, 0) for sketch in self.rules}

    def listing(self) -> list[str]:
        return [f"{s}:{slot}:{' '.join(f.match_args())}"
                for s, (f, slot) in sorted(self.rules.items())]


def make_agent_app(secret: bytes | None = SECRET, allow_legacy: bool = False,
                   capture: object = "memory"):
    """An ``AgentApp`` over a real Agent, the real monitor core and the overlay role.

    Capture rules are kept in memory (``MemoryCapture``); the netns tier runs
    real iptables. Returns ``(app, agent, transport)``.
    """
    from host_agent.agent import Agent
    from host_agent.api import AgentApp
    from host_agent.overlay.node import OverlayNode
    from measure_common.auth import Verifier
    from measure_common.runner import InlineRunner

    if capture == "memory":
        capture = MemoryCapture()
    agent = Agent("fz", [InlineMonitor()], capture=capture, data_ip="10.0.0.9")
    transport = RecordingTransport()
    overlay = OverlayNode(agent, http=transport, runner=InlineRunner())
    verifier = Verifier(secret) if secret else None
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
        "receive_sessions": sorted(app.bandwidth.sessions.live()),
    }, sort_keys=True, default=repr)


def signed(method: str, path: str, body: bytes = b"", secret: bytes = SECRET,
           now: float | None = None, headers: dict | None = None):
    """A webob request signed like ``HmacAuth`` signs a real one."""
    import webob

    from measure_common.auth import sign_request

    req = webob.Request.blank(path, method=method, body=body,
                              headers={"Content-Type": "application/json", **(headers or {})})
    try:
        path_qs = req.path_qs
    except UnicodeDecodeError:  # a non-UTF-8 path: sign what goes on the wire
        from urllib.parse import quote

        raw = req.environ["PATH_INFO"].encode("latin-1")
        query = req.environ.get("QUERY_STRING")
        path_qs = quote(raw, safe="/") + (f"?{query}" if query else "")
    req.headers.update(sign_request(secret, method, path_qs, body, now=now))
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


class Clock:
    """A settable clock (``clock.t``)."""

    def __init__(self, t: float = CLOCK) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


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
                      verifier=Verifier(SECRET))
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



pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 70),
                                                         max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from([v for v in HOSTILE if not isinstance(v, dict | list)]),
    st.sampled_from(["src", "dst", "pkt", "bytes", "byte", "tcp", "udp", "icmp", "INPUT",
                     "OUTPUT", "global", "10.0.0.1", "10.0.0.0/8", "80", "1:2", "h5"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = sorted({*MEASURE, *MEASURE["filter"], *SCAN, *BANDWIDTH, "window", "sketch",
                      "length", "mode", "width", "depth", "seed", "tasks"})


def _check_parse(obj: object) -> list[Task] | None:
    try:
        tasks = parse_tasks(obj, "fuzz")
    except PolicyError as exc:
        assert str(exc).startswith("policy fuzz: "), str(exc)
        return None
    for t in tasks:
        assert Task.from_dict(t.to_dict()) == t
    return tasks


@FUZZ
@given(json_values)
def test_task_model_arbitrary_json(obj):
    _check_parse(obj)


@FUZZ
@given(st.sampled_from([MEASURE, SCAN, BANDWIDTH]), st.data())
def test_task_model_mutated_valid_task(base, data):
    obj = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        target = obj
        if isinstance(obj.get("filter"), dict) and data.draw(st.booleans()):
            target = obj["filter"]
        key = data.draw(st.sampled_from(FIELD_NAMES))
        if data.draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = data.draw(json_values)
    _check_parse({"tasks": [obj]})


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 json_values.map(lambda v: f"tasks:\n  - {v!r}\n")))
def test_yaml_policy_arbitrary_text(text):
    try:
        load_policy(text, "fuzz")
    except PolicyError as exc:
        assert str(exc).startswith("policy fuzz: "), str(exc)


# ---------------------------------------------------------------- HTTP APIs in process

SAFE_NUMBERS = st.one_of(st.integers(-(2 ** 40), 2 ** 40), st.floats(allow_nan=False,
                                                                      allow_infinity=False))
FUZZ_NUMBERS = st.one_of(SAFE_NUMBERS, st.sampled_from([math.nan, math.inf, -math.inf,
                                                        10 ** 400, 2 ** 64]))
NUMBER_STRATEGY = FUZZ_NUMBERS  # every route: no known gap is left to steer around
WORDS = st.sampled_from(["src", "dst", "src_dst", "dport", "pkt", "bytes", "byte", "tcp", "udp",
                         "icmp", "INPUT", "OUTPUT", "global", "slops", "10.0.0.1", "10.0.0.0/8",
                         "80", "1:2", "h2", "c1", "t-0", "1", "config sketch",
                         "config sketch counter", "query heavy hitters", "query sketch",
                         "query real time counter", "tumbling", "sliding"])
http_scalars = st.one_of(st.none(), st.booleans(), NUMBER_STRATEGY, st.text(max_size=30), WORDS,
                         st.sampled_from([s for s in HOSTILE if isinstance(s, str)]))
http_values = st.recursive(http_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.one_of(WORDS, st.text(max_size=10)), c,
                                             max_size=5), max_leaves=10)
SEGMENTS = st.one_of(st.integers(-3, 40).map(str), WORDS,
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12))

AGENT_ROUTES = ["/", "/agent/v1/health", "/agent/v1/sketches", "/agent/v1/sketches/{}",
                "/agent/v1/sketches/{}/counters", "/agent/v1/sketches/{}/counters/{}",
                "/agent/v1/sketches/1/counters/1?key={}", "/agent/v1/overlay",
                "/agent/v1/tasks/{}", "/agent/v1/reports", "/agent/v1/{}"]
CONTROLLER_ROUTES = ["/measure/v1/topology", "/measure/v1/agents",
                     "/measure/v1/agents/{}/heartbeat", "/measure/v1/overlay", "/measure/v1/tasks",
                     "/measure/v1/tasks/{}",
                     "/measure/v1/tasks/{}/result", "/measure/v1/tasks/1/result?host={}",
                     "/measure/v1/reports", "/measure/v1/events?since={}",
                     "/measure/v1/bandwidth", "/measure/v1/openapi.json", "/measure/v1/{}"]
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])


def _path(template: str, data) -> str:
    from urllib.parse import quote

    while "{}" in template:
        template = template.replace("{}", quote(data.draw(SEGMENTS), safe=""), 1)
    return template


def _body(data) -> tuple[bytes, str]:
    kind = data.draw(st.sampled_from(["json", "json", "json", "form", "bytes", "none"]))
    if kind == "json":
        return json.dumps(data.draw(http_values)).encode(), "application/json"
    if kind == "form":
        from urllib.parse import urlencode

        fields = data.draw(st.dictionaries(st.one_of(WORDS, st.just("type")), st.one_of(
            WORDS, st.text(max_size=20)), max_size=6))
        return urlencode(fields).encode(), "application/x-www-form-urlencoded"
    if kind == "bytes":
        return data.draw(st.binary(max_size=200)), data.draw(st.sampled_from(
            ["application/json", "application/yaml", "text/plain", ""]))
    return b"", ""


def _check_reply(resp) -> None:
    text = resp.body.decode("utf-8", "replace")
    assert resp.status_code < 500, f"{resp.status_code} {text[:300]}"
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    if resp.status_code >= 400 and resp.request.method != "HEAD":
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), text[:200]


def _agent_app():

    return ready_agent(allow_legacy=True)


@FUZZ
@given(st.data())
def test_agent_api_fuzz(data):
    app, agent, transport = _agent_app()
    for _ in range(data.draw(st.integers(1, 4))):
        path = _path(data.draw(st.sampled_from(AGENT_ROUTES)), data)
        method = data.draw(METHODS)
        body, ctype = _body(data)
        req = signed(method, path, body, headers={"Content-Type": ctype})
        if data.draw(st.integers(0, 5)) == 0:  # now and then unsigned or tampered
            del req.headers["X-Measure-Signature"]
        resp = req.get_response(app)
        resp.request = req
        _check_reply(resp)
    assert all(url.startswith("http://127.0.0.1:9") for _, url, _ in transport.sent)


@pytest.fixture(scope="module")
def fuzz_controller(tmp_path_factory):
    from tests.unit.test_auth import _ready_controller

    return _ready_controller(tmp_path_factory.mktemp("fuzz-controller"))


@FUZZ
@given(data=st.data())
def test_controller_api_fuzz(fuzz_controller, data):
    app, service = fuzz_controller
    path = _path(data.draw(st.sampled_from(CONTROLLER_ROUTES)), data)
    method = data.draw(METHODS)
    body, ctype = _body(data)
    if data.draw(st.booleans()) and method == "POST" and path == "/measure/v1/tasks":
        import yaml

        body, ctype = yaml.safe_dump(data.draw(http_values)).encode(), "application/yaml"
    token = TOKEN if data.draw(st.integers(0, 5)) else TOKEN[:-1]
    req = bearer(method, path, body, token=token, content_type=ctype)
    resp = req.get_response(app)
    resp.request = req
    _check_reply(resp)
    for _, url, _ in service.http.sent:
        assert url.startswith("http://192.168.100."), url
