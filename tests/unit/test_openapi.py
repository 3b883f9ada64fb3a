"""The OpenAPI document matches the routes and the statuses the API returns."""

from __future__ import annotations

import json
import re

import pytest

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from measure_model.task import TASK_FIELDS  # noqa: E402
from ryu_app.rest.api import known_routes  # noqa: E402
from ryu_app.rest.openapi_schemas import (  # noqa: E402
    OPENAPI_PATH,
    component_schemas,
    render,
    updated,
)
from testing.harness import POLICY, Harness, hh_report  # noqa: E402

with open(OPENAPI_PATH) as _f:
    DOC = json.load(_f)

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented() -> dict[str, set[str]]:
    return {path: {m.upper() for m in ops if m in METHODS} for path, ops in DOC["paths"].items()}


def test_every_route_is_documented_and_every_documented_route_exists():
    assert documented() == known_routes()


def test_document_structure():
    assert DOC["openapi"].startswith("3.0.")
    ids = []
    for path, ops in DOC["paths"].items():
        params = set(re.findall(r"\{([a-z_]+)\}", path))
        for method, op in ops.items():
            ids.append(op["operationId"])
            assert op["summary"]
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params, (path, method)
            for code, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", code)
                assert resp["description"]
                assert "application/json" in resp["content"]
            assert {"401", "500", "503"} <= set(op["responses"])
            if method in ("post", "delete"):
                assert {"bearer": []} in op["security"]
    assert len(ids) == len(set(ids))
    refs = re.findall(r'"\$ref": "#/components/schemas/([A-Za-z]+)"', json.dumps(DOC))
    assert set(refs) <= set(DOC["components"]["schemas"])


def test_task_and_bandwidth_schemas_are_generated_from_the_task_table():
    """``python -m ryu_app.rest.openapi_schemas`` leaves the file unchanged."""
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        assert f.read() == render(updated(DOC))
    for name, schema in component_schemas().items():
        assert DOC["components"]["schemas"][name] == schema


def _numeric_bounds(schema, path=()):
    """(field path, minimum, exclusive, maximum, integer) of every bounded number."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") in ("number", "integer") and "minimum" in schema:
        yield (path, schema["minimum"], schema.get("exclusiveMinimum", False),
               schema["maximum"], schema["type"] == "integer")
    for key, sub in schema.get("properties", {}).items():
        yield from _numeric_bounds(sub, (*path, key))
    for sub in schema.get("oneOf", []):
        yield from _numeric_bounds(sub, path)


def _with(obj: dict, path: tuple, value) -> dict:
    out = json.loads(json.dumps(obj))
    target = out
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return out


def test_every_documented_task_bound_is_the_enforced_bound():
    """Each kind's numeric fields: the documented ends pass, just outside is refused."""
    from measure_model.task import PolicyError, parse_task

    cases = 0
    for kind_schema in DOC["components"]["schemas"]["Task"]["oneOf"]:
        kind = kind_schema["properties"]["kind"]["enum"][0]
        base = {"name": "t", "kind": kind}
        if kind == "bandwidth":
            base.update(src="h1", dst="h2")
        for path, lo, exclusive, hi, integer in _numeric_bounds(kind_schema):
            step = 1 if integer else 1e-6
            name = ".".join(path)
            for value, ok in ((lo + step if exclusive else lo, True), (hi, True),
                              (lo if exclusive else lo - step, False), (hi + step, False)):
                obj = _with(base, path, value)
                if path[0] == "filter":
                    obj["filter"]["proto"] = "tcp"  # ports need tcp or udp
                if path == ("threshold_abs",):
                    obj.pop("threshold", None)
                if ok:
                    parse_task(obj, "doc")
                else:
                    with pytest.raises(PolicyError, match=f"task t: {re.escape(name)} "):
                        parse_task(obj, "doc")
                cases += 1
    assert cases > 40


def _values_of(obj, key):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _values_of(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _values_of(v, key)


def test_no_openapi_3_1_keywords_in_a_3_0_document():
    """3.0 spells exclusive bounds as booleans next to minimum/maximum (3.1: numbers)."""
    assert DOC["openapi"] == "3.0.3"
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        assert all(isinstance(v, bool) for v in _values_of(DOC, key))
    assert list(_values_of(DOC, "exclusiveMinimum"))  # threshold's (0, 1] is documented


def _template(path: str) -> tuple[str, str]:
    for template in DOC["paths"]:
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path.split("?")[0]):
            return template, path
    raise AssertionError(f"undocumented path {path}")


REQUESTS = [
    ("GET", "/measure/v1/topology", None, None),
    ("GET", "/measure/v1/agents", None, None),
    ("POST", "/measure/v1/agents", {"name": "h4", "url": "http://192.168.100.4:8000",
                                    "data_ip": "10.0.0.4"}, "application/json"),
    ("POST", "/measure/v1/agents", {"name": "bad name"}, "application/json"),
    ("POST", "/measure/v1/agents", b"x", "text/plain"),
    ("POST", "/measure/v1/agents/h1/heartbeat", None, None),
    ("POST", "/measure/v1/agents/h8/heartbeat", None, None),
    ("GET", "/measure/v1/overlay", None, None),
    ("POST", "/measure/v1/tasks", POLICY, "application/yaml"),
    ("POST", "/measure/v1/tasks", POLICY, "application/yaml"),
    ("POST", "/measure/v1/tasks", {"name": "x"}, "application/json"),
    ("POST", "/measure/v1/tasks", b"x", "text/csv"),
    ("POST", "/measure/v1/tasks", b"#" * 300000, "application/yaml"),
    ("GET", "/measure/v1/tasks", None, None),
    ("GET", "/measure/v1/tasks/1", None, None),
    ("GET", "/measure/v1/tasks/9", None, None),
    ("GET", "/measure/v1/tasks/1/result", None, None),
    ("POST", "/measure/v1/reports", hh_report("1", ["h1"], [], 1.0, {}), "application/json"),
    ("POST", "/measure/v1/reports", {"task_id": "1"}, "application/json"),
    ("POST", "/measure/v1/reports", {"task_id": "99"}, "application/json"),
    ("GET", "/measure/v1/tasks/1/result", None, None),
    ("GET", "/measure/v1/tasks/1/result?host=h1", None, None),
    ("GET", "/measure/v1/tasks/1/result?host=h1&host=h2", None, None),
    ("GET", "/measure/v1/tasks/1/history", None, None),
    ("GET", "/measure/v1/tasks/1/history?host=h1&limit=5", None, None),
    ("GET", "/measure/v1/tasks/1/history?limit=0", None, None),
    ("GET", "/measure/v1/tasks/9/history", None, None),
    ("GET", "/measure/v1/tasks/1/history/latest", None, None),
    ("GET", "/measure/v1/tasks/1/history/12.5?key=10.0.0.1", None, None),
    ("GET", "/measure/v1/tasks/1/history/yesterday", None, None),
    ("GET", "/measure/v1/tasks/1/history/latest?since=noon", None, None),
    ("GET", "/measure/v1/tasks/9/history/latest", None, None),
    ("GET", "/measure/v1/flows?task=1", None, None),
    ("GET", "/measure/v1/flows?task=1&top=0", None, None),
    ("GET", "/measure/v1/flows?task=9", None, None),
    ("GET", "/measure/v1/tasks/1/paths", None, None),
    ("GET", "/measure/v1/tasks/9/paths", None, None),
    ("GET", "/measure/v1/links", None, None),
    ("GET", "/measure/v1/diagnose?src=h1&dst=h2", None, None),
    ("GET", "/measure/v1/diagnose?src=h1&dst=h1", None, None),
    ("GET", "/measure/v1/diagnose?src=h1&dst=h9", None, None),
    ("GET", "/measure/v1/diagnose?src=h1", None, None),
    ("GET", "/measure/v1/events?since=0", None, None),
    ("GET", "/measure/v1/events?since=x", None, None),
    ("GET", "/measure/v1/actions", None, None),
    ("DELETE", "/measure/v1/actions/1", None, None),
    ("DELETE", "/measure/v1/actions/x", None, None),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h2"}, "application/json"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h7"}, "application/json"),
    ("POST", "/measure/v1/bandwidth", {"src": "h1"}, "application/json"),
    ("DELETE", "/measure/v1/tasks/1", None, None),
    ("DELETE", "/measure/v1/tasks/1", None, None),
    ("GET", "/measure/v1/health", None, None),
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(str(tmp_path_factory.mktemp("openapi")))
    h.register(1, 2)
    h.tick()
    return h


def test_served_document_is_the_file(harness):
    assert harness.call("GET", "/measure/v1/openapi.json") == (200, DOC)


@pytest.mark.parametrize("method,path,body,ctype", REQUESTS,
                         ids=[f"{m} {p}" for m, p, _, _ in REQUESTS])
def test_every_status_returned_is_documented(harness, method, path, body, ctype):
    template, _ = _template(path)
    status, _ = harness.call(method, path, body, ctype)
    listed = DOC["paths"][template][method.lower()]["responses"]
    assert str(status) in listed, (method, path, status)


def test_requests_cover_every_operation():
    covered = {(_template(p)[0], m) for m, p, _, _ in REQUESTS}
    covered.add(("/measure/v1/openapi.json", "GET"))
    assert covered == {(p, m) for p, ms in known_routes().items() for m in ms}


# ---------------------------------------------------------------- fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
TASK_KEYS = list(TASK_FIELDS)
TASKISH = st.dictionaries(st.sampled_from(TASK_KEYS + ["x"]), JSON_VALUES, max_size=8)
SEGMENT = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and "?" not in s)
OPERATIONS = sorted((p, m) for p, ms in known_routes().items() for m in ms)


@pytest.fixture(scope="module")
def fuzz_harness(tmp_path_factory):
    h = Harness(str(tmp_path_factory.mktemp("fuzz")))
    h.register(1, 2, 3)
    h.tick()
    return h


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(op=st.sampled_from(OPERATIONS), segment=SEGMENT,
       body=st.one_of(JSON_VALUES, TASKISH, TASKISH.map(lambda t: {"tasks": [t]})),
       query=st.dictionaries(st.sampled_from(["host", "since", "limit", "task", "top", "by", "x"]),
                             st.text(max_size=8),
                             max_size=2))
def test_fuzzed_requests_never_fail_with_5xx(fuzz_harness, op, segment, body, query):
    """Random ids, query strings and JSON bodies on every route: a 4xx JSON error at worst."""
    from urllib.parse import quote, urlencode

    template, method = op
    if template.endswith("/bandwidth"):
        return  # would call the (fake) agent; its inputs are validated before that
    path = re.sub(r"\{[a-z_]+\}", quote(segment, safe=""), template)
    if query:
        path += "?" + urlencode(query)
    raw = json.dumps(body).encode() if method in ("POST", "PUT") else None
    status, reply = fuzz_harness.call(method, path, raw, "application/json")
    assert status < 500, (method, path, body, reply)
    if status >= 400:
        assert set(reply) in ({"error"}, {"error", "errors"}) and reply["error"]
        assert all(isinstance(e, str) for e in reply.get("errors", []))


def test_every_pattern_is_anchored_around_its_alternatives():
    """``^a|b$`` would let ``1.2.3.4<`` through as an address: each documented
    pattern matches what the model's own check accepts, and no more, on a
    valid value followed or preceded by junk."""
    patterns = set(_values_of(DOC, "pattern"))
    assert any("|" in p for p in patterns)  # the address and prefix patterns
    for pattern in patterns:
        for junk in ("<", " x"):
            for sample in ("10.0.0.1", "fe80::1", "h1", "1"):
                if re.search(pattern, sample):
                    assert not re.search(pattern, sample + junk), (pattern, sample)
                    assert not re.search(pattern, junk + sample), (pattern, sample)


def test_policy_errors_accept_protect_beside_a_bad_task():
    """Every error of a policy with ``protect`` names the bad task, not ``protect``."""
    from measure_cli.policy_check import check_policy

    out = check_policy(b"protect: [10.0.0.9]\ntasks:\n- {name: p, kind: path_health, "
                       b"probe_targets: [{src: a, dst: b, address: '10.0.0.2<'}]}\n", "request")
    assert out.errors == ["policy request: task p: probe_targets[0].address '10.0.0.2<' "
                          "is not an IPv4 or IPv6 address"], out.errors
    out = check_policy(b"protekt: [10.0.0.9]\ntasks: [{name: c, kind: counter}]\n", "request")
    assert "(did you mean 'protect'?)" in " ".join(out.errors), out.errors
