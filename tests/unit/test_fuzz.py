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

The hostile values and valid task bodies live in ``testing.hostile``, the
in-process apps and request builders in ``testing.apps``.
"""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure_model.policy import load_policy
from measure_model.task import PolicyError, Task, parse_tasks
from testing.apps import TOKEN, bearer, ready_agent, ready_controller, signed
from testing.hostile import BANDWIDTH, HOSTILE, MEASURE, SCAN

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
                     st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12))

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
    return ready_controller(tmp_path_factory.mktemp("fuzz-controller"))


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
