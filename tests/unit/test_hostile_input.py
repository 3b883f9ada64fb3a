"""Hostile input: injection strings, absurd numbers and odd shapes in every field.

Each hostile value goes into each field of the task model (the validator
that both the controller REST and the agent use), of the agent API and of
the controller REST. The expected outcome is always the same: a 4xx (or a
``PolicyError``) naming the field, no side effect (no file created, no task
or sketch added, no iptables rule), and no traceback text in the reply.

The hostile values and the in-process apps live in ``tests/unit/test_fuzz.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import pytest
import yaml

from measure_model import task as task_model
from measure_model.policy import load_policy
from measure_model.task import PolicyError, parse_tasks
from testing import apps
from testing.apps import (
    REPORT,
    TASK,
    agent_state,
    bearer,
    controller_state,
    ready_agent,
    signed,
    task_report,
)
from testing.hostile import (
    BANDWIDTH,
    CANARIES,
    HOSTILE,
    MEASURE,
    NUMBERS,
    SCAN,
    SHELL_STRINGS,
    label,
    nested,
)


@pytest.fixture
def canaries():
    """Assert that no injection created a canary file (and that none existed)."""
    for path in CANARIES:
        assert not os.path.lexists(path), f"{path} exists before the test; remove it"
    yield
    created = [p for p in CANARIES if os.path.lexists(p)]
    assert not created, f"an injection ran: {created}"


# ---------------------------------------------------------------- task model

FIELDS = [
    (MEASURE, ("name",)), (MEASURE, ("kind",)), (MEASURE, ("filter",)),
    *[(MEASURE, ("filter", f)) for f in MEASURE["filter"]],
    (MEASURE, ("key",)), (MEASURE, ("increment",)), (MEASURE, ("threshold",)),
    (MEASURE, ("top_k",)), (MEASURE, ("window",)), (MEASURE, ("window", "length")),
    (MEASURE, ("window", "mode")), (MEASURE, ("report_interval",)), (MEASURE, ("sketch",)),
    (MEASURE, ("sketch", "width")), (MEASURE, ("sketch", "depth")),
    (MEASURE, ("sketch", "seed")), (MEASURE, ("scope",)), (MEASURE, ("scope", 0)),
    (SCAN, ("scan_ports",)), (SCAN, ("threshold_abs",)),
    *[(BANDWIDTH, (f,)) for f in ("src", "dst", "method", "max_duration", "max_bytes")],
]
MAPPING_FIELDS = {("filter",), ("window",), ("sketch",)}


def _with(base: dict, path: tuple, value: object) -> dict:
    obj = copy.deepcopy(base)
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return obj


def _cases():
    for base, path in FIELDS:
        for value in HOSTILE:
            if value == {} and path in MAPPING_FIELDS:
                continue  # an empty filter/window/sketch is valid: all defaults
            yield pytest.param(base, path, value,
                               id=f"{base['name']}-{'.'.join(map(str, path))}-{label(value)}")


def test_valid_bases_are_accepted():
    names = [t.name for t in parse_tasks({"tasks": [MEASURE, SCAN, BANDWIDTH]}, "hostile")]
    assert names == ["hh-1", "scan-1", "bw-1"]


@pytest.mark.parametrize("base, path, value", list(_cases()))
def test_task_model_refuses_hostile_value(base, path, value, canaries):
    with pytest.raises(PolicyError) as info:
        parse_tasks({"tasks": [_with(base, path, value)]}, "hostile")
    message = str(info.value)
    task_label = base["name"] if path != ("name",) else "#1"
    assert message.startswith(f"policy hostile: task {task_label}: "), message
    assert str(path[0]) in message, message
    assert "Traceback" not in message


def test_unicode_digits_in_port_range_are_refused():
    """Ports are ASCII digits, as the documented pattern says (``\\d`` would match ``٨``)."""
    with pytest.raises(PolicyError, match="filter.dport '٨٠:٩٠' is not a port or a range"):
        parse_tasks(_with(MEASURE, ("filter", "dport"), "٨٠:٩٠"), "hostile")


def test_deep_nesting_is_refused_without_recursion_error():
    with pytest.raises(PolicyError, match=r"^policy hostile: task hh-1: filter must be a "
                                          r"mapping, not list$"):
        parse_tasks(_with(MEASURE, ("filter",), nested(5000)), "hostile")


@pytest.mark.parametrize("count, ok", [(task_model.MAX_POLICY_TASKS, True),
                                       (task_model.MAX_POLICY_TASKS + 1, False)])
def test_task_count_is_bounded(count, ok):
    tasks = [{**BANDWIDTH, "name": f"bw-{i}"} for i in range(count)]
    if ok:
        assert len(parse_tasks({"tasks": tasks}, "many")) == count
    else:
        with pytest.raises(PolicyError) as info:
            parse_tasks({"tasks": tasks}, "many")
        assert str(info.value) == f"policy many: {count} tasks, more than {count - 1}"


# ---------------------------------------------------------------- YAML documents

BILLION_LAUGHS = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *[f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]"
      for i in range(8)],
    "tasks: *i",
])


@pytest.mark.parametrize("text, message", [
    (BILLION_LAUGHS, "policy p.yaml: invalid YAML: anchors and aliases are not allowed (line 1)"),
    ("tasks:\n- name: a\n  kind: counter\n  kind: bandwidth\n",
     "policy p.yaml: invalid YAML: duplicate key 'kind' (line 4)"),
    ('tasks: [{name: a, kind: counter, key: !!python/object/apply:os.system ["touch /tmp/pwn"]}]',
     "policy p.yaml: invalid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("!!python/name:os.system",
     "policy p.yaml: invalid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/name:os.system'"),
    ("tasks: [{name: a, kind: counter, threshold: .nan}]",
     "policy p.yaml: task a: threshold nan is not a finite number"),
    ("tasks: [{name: a, kind: counter, report_interval: 1e999}]",
     "policy p.yaml: task a: report_interval inf is not a finite number"),
    ("tasks: [{name: '$(touch /tmp/pwn)', kind: counter}]",
     "policy p.yaml: task #1: name '$(touch /tmp/pwn)' does not match "
     + task_model.NAME_PATTERN),
    (b"tasks: [{name: a, kind: \xff}]", "policy p.yaml: not valid UTF-8"),
    ("x" * (task_model.MAX_POLICY_BYTES + 1),
     f"policy p.yaml: {task_model.MAX_POLICY_BYTES + 1} bytes is more than the limit of "
     f"{task_model.MAX_POLICY_BYTES}"),
])
def test_hostile_yaml_is_refused(text, message, canaries):
    with pytest.raises(PolicyError) as info:
        load_policy(text, "p.yaml")
    assert str(info.value).startswith(message), str(info.value)


# ---------------------------------------------------------------- hostile values over HTTP

def _set(obj: Any, path: tuple, value: object) -> Any:
    obj = copy.deepcopy(obj)
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return obj


def _quote(value: object) -> str:
    from urllib.parse import quote

    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


def _problem(resp, before: str, after: str, read: bool = False) -> str | None:
    """What is wrong with a reply to a hostile request (None if it was refused cleanly)."""
    text = resp.body.decode("utf-8", "replace")
    if "Traceback" in text or 'File "' in text:
        return f"traceback in body: {text[:120]!r}"
    if after != before:
        return f"state changed ({resp.status_code} {text[:120]!r})"
    if read and resp.status_code == 200:
        return None
    if not 400 <= resp.status_code < 500:
        return f"{resp.status_code} {text[:160]!r}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{resp.status_code} body is not JSON: {text[:80]!r}"
    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
        return f"{resp.status_code} body has no error message: {text[:80]!r}"
    return None


def sweep(app, state, make_request, values=HOSTILE, read: bool = False) -> list[str]:
    """Send one request per hostile value; return the problems found."""
    problems = []
    for value in values:
        before = state()
        try:
            req = make_request(value)
        except (UnicodeEncodeError, yaml.YAMLError):
            continue  # not representable in this encoding
        try:
            resp = req.get_response(app)
        except Exception as exc:  # noqa: BLE001 - under eventlet.wsgi this leaks a traceback
            problems.append(f"{label(value)}: exception escaped the app: {exc!r:.120}")
            continue
        problem = _problem(resp, before, state(), read)
        if problem:
            problems.append(f"{label(value)}: {problem}")
    return problems


# ------------------------------------------------ agent API

AGENT_SKETCH: dict[str, Any] = {"filter": dict(MEASURE["filter"]), "counters": [{
    "key": "src", "increment": "pkt", "threshold": 0.05, "top_k": 10,
    "window": {"length": 1.0, "mode": "tumbling"}, "sketch": {"width": 1024, "depth": 4,
                                                             "seed": 1}}]}
AGENT_COUNTER = AGENT_SKETCH["counters"][0]
SCAN_COUNTER = {"key": "src_dport", "scan_ports": 20, "threshold_abs": 5}
OVERLAY = {"epoch": 5, "parent": {"name": "p1", "url": "http://127.0.0.1:9"},
           "children": [{"name": "c1", "url": "http://127.0.0.1:9"}], "root": False,
           "controller": "http://127.0.0.1:9"}
PROBE = {"dst_ip": "127.0.0.1", "dst_url": "http://127.0.0.1:1", "method": "slops",
         "max_duration": 2, "max_bytes": 100_000, "max_rate_mbit": 10, "packet_size": 500,
         "streams": 3, "packets": 20}
RECEIVE = {"method": "slops", "duration": 2}


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every field path of a JSON body (objects and list items included)."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        out.append((*prefix, key))
        if isinstance(value, dict | list) and value:
            out.extend(_paths(value, (*prefix, key)))
    return out


def _agent_cases():
    targets = [
        ("POST", "/agent/v1/sketches", AGENT_SKETCH),
        ("POST", "/agent/v1/sketches", {"counters": [SCAN_COUNTER]}),
        ("POST", "/agent/v1/sketches/1/counters", AGENT_COUNTER),
        ("PUT", "/agent/v1/overlay", OVERLAY),
        ("PUT", "/agent/v1/tasks/t-9", MEASURE),
        ("PUT", "/agent/v1/tasks/t-9", SCAN),
        ("POST", "/agent/v1/reports", "REPORT"),
        ("POST", "/agent/v1/bandwidth", PROBE),
        ("POST", "/agent/v1/bandwidth/receive", RECEIVE),
    ]
    for method, path, base in targets:
        fields = (("task_id",), ("from",), ("snapshot",), ("covered",), ("missing",),
                  ("interval_end",), ("snapshot", "key"), ("snapshot", "packets"),
                  ("snapshot", "sketch"), ("snapshot", "candidates"), ("snapshot", "window"),
                  ("covered", 0)) if base == "REPORT" else _paths(base)
        for field in fields:
            yield pytest.param(method, path, base, field,
                               id=f"{method} {path} {'.'.join(map(str, field))}")


def _agent_values(path, field):
    out = []
    report = path == "/agent/v1/reports"
    for value in HOSTILE:
        if value == {} and field[-1] in ("filter", "window", "sketch") and not report:
            continue  # an empty object is valid: all defaults
        if value is True and field == ("root",):
            continue  # a boolean field
        if value == {} and field[-1] == "candidates":
            continue  # no candidates: valid
        out.append(value)
    return out


@pytest.mark.parametrize("method, path, base, field", list(_agent_cases()))
def test_agent_refuses_hostile_field(method, path, base, field, canaries):
    app, agent, _ = ready_agent()
    base = REPORT if base == "REPORT" else base

    def request(value):
        return signed(method, path, json.dumps(_set(base, field, value)).encode())

    values = _agent_values(path, field)
    assert sweep(app, lambda: agent_state(app), request, values) == []


# ------------------------------------------------ legacy messages (agent with --allow-legacy)

LEGACY_BASES = {
    "config sketch": {"interface": "INPUT", "proto": "tcp", "src": "10.0.0.0/24",
                      "dst": "10.0.0.5", "sport": "80", "dport": "8000:8100"},
    "config sketch counter": {"sketch_id": "1", "counter_key_type": "dst", "increment": "pkt",
                              "threshold": "0.1", "top_k": "5", "window_length": "2",
                              "window_mode": "sliding"},
    "query heavy hitters": {"sketch_id": "1", "counter_key_type": "src"},
    "query sketch": {"sketch_id": "1", "counter_key_type": "src", "counter_key": "10.0.0.6"},
    "query real time counter": {"sketch_id": "1", "counter_key_type": "src"},
    "query bw": {"src": "10.0.0.9", "dst": "127.0.0.1"},
}
def _legacy_values(kind, field, form):
    optional = field not in ("sketch_id", "counter_key_type", "counter_key", "src", "dst") \
        or kind == "config sketch"
    out = []
    for value in HOSTILE:
        if form and isinstance(value, dict | list):
            continue  # a form field is a string
        if value == "" and optional:
            continue  # legacy clients send '' for an absent optional field (by design)
        out.append(str(value) if form else value)
    return out


def _legacy_cases():
    for kind, base in LEGACY_BASES.items():
        for field in ["type", *base]:
            for form in (False, True):
                yield pytest.param(kind, base, field, form, _legacy_values(kind, field, form),
                                   id=f"{kind}-{field}-{'form' if form else 'json'}")


def _legacy_sweep(kind, base, field, form, values):
    import webob

    app, agent, _ = ready_agent(allow_legacy=True)

    def request(value):
        fields = {"type": kind, **base, field: value}
        if form:
            return webob.Request.blank("/", POST=fields)
        return webob.Request.blank("/", method="POST", body=json.dumps(fields).encode(),
                                   headers={"Content-Type": "application/json"})

    read = kind.startswith("query") and kind != "query bw" and field != "type"
    return sweep(app, lambda: agent_state(app), request, values, read=read)


@pytest.mark.parametrize("kind, base, field, form, values", list(_legacy_cases()))
def test_legacy_message_refuses_hostile_field(kind, base, field, form, values, canaries):
    assert _legacy_sweep(kind, base, field, form, values) == []


# ------------------------------------------------ identifiers in paths and query strings

RAW_SEGMENTS = ["%ff", "%00", "%ED%B3%BF", "..%2f..%2fetc%2fpasswd", "%2e%2e", "a%0d%0aX-I:%201",
                "1%3b%20rm%20-rf%20%2ftmp%2fx", "0", "-1", "1.0", "0x1", "%e2%80%ae1"]
PATH_VALUES = [*RAW_SEGMENTS, *(_quote(v) for v in SHELL_STRINGS + NUMBERS)]
AGENT_PATHS = [("GET", "/agent/v1/sketches/{}"), ("DELETE", "/agent/v1/sketches/{}"),
               ("GET", "/agent/v1/sketches/1/counters/{}"),
               ("POST", "/agent/v1/sketches/{}/counters"), ("PUT", "/agent/v1/tasks/{}"),
               ("DELETE", "/agent/v1/tasks/{}"), ("GET", "/agent/v1/sketches/1/counters/1?key={}"),
               ("GET", "/agent/v1/bandwidth/receive/{}"),
               ("DELETE", "/agent/v1/bandwidth/receive/{}"),
               ("GET", "/agent/v1/{}"), ("POST", "/{}")]
CONTROLLER_PATHS = [("GET", "/measure/v1/tasks/{}"), ("DELETE", "/measure/v1/tasks/{}"),
                    ("GET", "/measure/v1/tasks/{}/result"),
                    ("GET", "/measure/v1/tasks/1/result?host={}"),
                    ("POST", "/measure/v1/agents/{}/heartbeat"),
                    ("GET", "/measure/v1/events?since={}"), ("GET", "/measure/v1/{}")]


TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _path_cases(paths):
    from urllib.parse import unquote

    for method, template in paths:
        values = [v for v in PATH_VALUES
                  if not (template.startswith("/agent/v1/tasks/")
                          and TASK_ID.fullmatch(unquote(v)))]  # a valid task id
        yield pytest.param(method, template, values, id=f"{method} {template}")


def _agent_path_sweep(method, template, values):
    app, agent, _ = ready_agent(allow_legacy=True)
    body = {"PUT": json.dumps(TASK).encode(), "POST": b'{"key": "dst"}'}.get(method, b"")
    return sweep(app, lambda: agent_state(app),
                 lambda v: signed(method, template.format(v), body), values,
                 read=method == "GET")


@pytest.mark.parametrize("method, template, values", list(_path_cases(AGENT_PATHS)))
def test_agent_refuses_hostile_identifiers(method, template, values, canaries):
    assert _agent_path_sweep(method, template, values) == []


def _controller_path_sweep(ready, method, template, values):
    app, service, _ = ready
    return sweep(app, lambda: controller_state(service),
                 lambda v: bearer(method, template.format(v), b"{}"), values,
                 read=method == "GET")


@pytest.mark.parametrize("method, template, values", list(_path_cases(CONTROLLER_PATHS)))
def test_controller_refuses_hostile_identifiers(ready_controller, method, template, values,
                                               canaries):
    assert _controller_path_sweep(ready_controller, method, template, values) == []


# ------------------------------------------------ controller REST bodies

CONTROLLER_BANDWIDTH = {"src": "h2", "dst": "h3", "method": "slops", "max_duration": 5,
                        "max_bytes": 1_000_000}
CONTROLLER_REGISTRATION = {"name": "h4", "url": "http://192.168.100.4:8000",
                           "data_ip": "10.0.0.4", "mac": "00:00:00:00:00:04"}


def _controller_cases():
    targets = [("/measure/v1/agents", "json", CONTROLLER_REGISTRATION),
               ("/measure/v1/bandwidth", "json", CONTROLLER_BANDWIDTH),
               ("/measure/v1/reports", "json", "REPORT")]
    targets += [("/measure/v1/tasks", "json", base) for base in (MEASURE, SCAN, BANDWIDTH)]
    targets += [("/measure/v1/tasks", "yaml", MEASURE)]
    for path, enc, base in targets:
        fields = ([("task_id",), ("from",), ("snapshot",), ("covered",), ("missing",),
                   ("interval_end",), ("snapshot", "key"), ("snapshot", "packets"),
                   ("snapshot", "heavy_hitters"), ("snapshot", "scan"), ("covered", 0)]
                  if base == "REPORT" else _paths(base))
        for field in fields:
            values = [v for v in HOSTILE  # an empty filter/window/sketch/scan map is valid
                      if not (v == {} and field[-1] in ("filter", "window", "sketch", "scan",
                                                          "candidates", "heavy_hitters"))]
            yield pytest.param(path, enc, base, field, values,
                               id=f"{path} {enc} {'.'.join(map(str, field))}")


@pytest.fixture(scope="module")
def ready_controller(tmp_path_factory):
    """One controller for the module's refusal sweeps (a refusal changes nothing)."""
    app, service = apps.ready_controller(tmp_path_factory.mktemp("controller"))
    return app, service, task_report()


def _controller_sweep(ready, path, enc, base, field, values):
    app, service, report = ready
    base = report if base == "REPORT" else base

    def request(value):
        obj = _set(base, field, value)
        if enc == "yaml":
            return bearer("POST", path, yaml.safe_dump({"tasks": [obj]}).encode(),
                          content_type="application/yaml")
        return bearer("POST", path, json.dumps(obj).encode())

    return sweep(app, lambda: controller_state(service), request, values)


@pytest.mark.parametrize("path, enc, base, field, values", list(_controller_cases()))
def test_controller_refuses_hostile_field(ready_controller, path, enc, base, field, values,
                                         canaries):
    assert _controller_sweep(ready_controller, path, enc, base, field, values) == []


# ------------------------------------------------ bodies without a length (chunked)

class EndlessBody:
    """A wsgi.input of ``size`` bytes, produced on demand; counts what was read."""

    def __init__(self, size: int) -> None:
        self.left, self.read_bytes = size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        self.read_bytes += n
        return b"x" * n

    def readline(self, n: int = -1) -> bytes:
        return self.read(n if n and n > 0 else 65536)


def _chunked(path: str, size: int):
    import webob

    req = webob.Request.blank(path, method="POST", headers={
        "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ["wsgi.input"] = body = EndlessBody(size)
    return req, body


def test_agent_reads_a_chunked_body_only_up_to_its_limit():
    app, agent, _ = ready_agent()
    before = agent_state(app)
    req, body = _chunked("/agent/v1/sketches", 8 * 2 ** 20)
    resp = req.get_response(app)
    assert (resp.status_code, resp.json) == (413, {
        "error": "body too large: more than 65536 bytes"})
    assert body.read_bytes <= 65537 and agent_state(app) == before


def test_controller_reads_a_chunked_body_only_up_to_its_limit(ready_controller):
    """eventlet.wsgi sets no wsgi.input_terminated: webob reads no body without a length,
    so nothing is read before authentication."""
    app, service, _ = ready_controller
    before = controller_state(service)
    req, body = _chunked("/measure/v1/tasks", 8 * 2 ** 20)
    resp = req.get_response(app)
    assert resp.status_code in (401, 413)
    assert body.read_bytes <= 2 ** 20 + 1 and controller_state(service) == before


def test_agent_reads_a_report_body_only_up_to_the_report_limit():
    """Child reports carry merged elastic state: the controller's 16 MiB, not 64 KiB."""
    app, agent, _ = ready_agent()
    before = agent_state(app)
    req, body = _chunked("/agent/v1/reports", 32 * 2 ** 20)
    resp = req.get_response(app)
    assert (resp.status_code, resp.json) == (413, {
        "error": f"body too large: more than {16 * 2 ** 20} bytes"})
    assert body.read_bytes <= 16 * 2 ** 20 + 1 and agent_state(app) == before


# ------------------------------------------------ deep documents (400, never 500)

DEEP_JSON = [b"[" * 20_000 + b"]" * 20_000,      # past the parser's own recursion limit
             b'{"a":' * 500 + b"1" + b"}" * 500]     # parses, but deeper than any body we use
DEEP_YAML = ("- " * 5000 + "1\n").encode(), ("a:\n" + "".join(
    "  " * i + "b:\n" for i in range(1, 200)) + "  " * 200 + "c: 1\n").encode()


@pytest.mark.parametrize("body", DEEP_JSON, ids=["parser-limit", "500-objects"])
def test_deep_json_is_a_400_at_the_controller_and_the_agent(ready_controller, body):
    app, _service, _report = ready_controller
    for path in ("/measure/v1/tasks", "/measure/v1/reports"):
        resp = bearer("POST", path, body).get_response(app)
        assert resp.status_int == 400 and "nested more than" in resp.json["error"], resp.text
    agent_app, _agent, _ = ready_agent()
    resp = signed("PUT", "/agent/v1/tasks/t-9", body).get_response(agent_app)
    assert resp.status_int == 400 and "nested more than" in resp.text, resp.text


@pytest.mark.parametrize("body", DEEP_YAML, ids=["sequence", "mapping"])
def test_deep_yaml_is_a_400(ready_controller, body):
    app, _service, _report = ready_controller
    resp = bearer("POST", "/measure/v1/tasks", body, content_type="application/yaml") \
        .get_response(app)
    assert resp.status_int == 400 and "levels deep" in resp.json["error"], resp.text
    with pytest.raises(PolicyError, match="nested more than 32 levels deep"):
        load_policy(body, "deep")
