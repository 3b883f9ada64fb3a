"""Unit tests of measure_common.auth: credential files, bearer tokens, signatures."""

from __future__ import annotations

import json
import os
import stat
import threading
from typing import Any

import pytest
import requests
import webob

from measure_common import auth
from measure_common.auth import (
    AuthError,
    CredentialFileError,
    HmacAuth,
    Verifier,
    agent_key,
    check_bearer,
    check_request,
    load_or_create_secret,
    load_or_create_token,
    sign_request,
)
from testing.apps import (
    REPORT,
    TASK,
    TOKEN,
    agent_state,
    bearer,
    controller_state,
    make_agent_app,
    ready_controller,
    signed,
    task_report,
)
from testing.apps import SECRET as APP_SECRET
from testing.apps import ready_agent as _ready_agent
from testing.clock import Clock

pytestmark = pytest.mark.unit

SECRET = b"s" * 43


def _sign(secret, method, path, body, now=None):
    """The controller's request to agent h2, signed with ``secret`` as h2's key."""
    return sign_request(secret, method, path, body, now=now, sender="controller",
                        receiver="h2")


def _verifier(secret, **kw):
    """Agent h2's verifier, every sender's key being ``secret``."""
    return Verifier(lambda sender, ticket: secret, "h2", **kw)


def _as_agent(secret, method, path, body, now=None, name="h4"):
    """Agent ``name``'s request to the controller, ``secret`` being the master secret."""
    return sign_request(agent_key(secret, name), method, path, body, now=now, sender=name,
                        receiver="controller")


# ---------------------------------------------------------------- files

def test_token_created_once_with_private_modes(tmp_path):
    path = tmp_path / "state" / "controller.token"
    token, created = load_or_create_token(str(path))
    assert created is True
    assert len(token) == 43 and auth._TOKEN_RE.fullmatch(token)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.read_text() == token + "\n"
    again, created2 = load_or_create_token(str(path))
    assert (again, created2) == (token, False)
    assert os.listdir(path.parent) == ["controller.token"]  # no temp file left


def test_tokens_are_random(tmp_path):
    a, _ = load_or_create_token(str(tmp_path / "a"))
    b, _ = load_or_create_token(str(tmp_path / "b"))
    assert a != b


def test_secret_is_bytes(tmp_path):
    secret, created = load_or_create_secret(str(tmp_path / "agent.secret"))
    assert created and isinstance(secret, bytes) and len(secret) == 43
    assert load_or_create_secret(str(tmp_path / "agent.secret")) == (secret, False)


def test_world_readable_file_refused_not_replaced(tmp_path):
    path = tmp_path / "t"
    path.write_text("A" * 43 + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(CredentialFileError,
                       match=r"mode 0644 is readable by others; run: chmod 600 "):
        load_or_create_token(str(path))
    assert path.read_text() == "A" * 43 + "\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_another_users_credential_file_is_refused(tmp_path):
    path = tmp_path / "t"
    path.write_text("A" * 43 + "\n")
    os.chmod(path, 0o600)
    os.chown(path, 54321, -1)
    with pytest.raises(CredentialFileError, match=r"owned by uid 54321, not by this process"):
        load_or_create_token(str(path))
    os.chown(path, 0, -1)  # root's own file is fine
    assert load_or_create_token(str(path)) == ("A" * 43, False)


def test_created_token_is_not_logged(tmp_path, caplog):
    from ryu_app.auth_config import auth_from_env

    with caplog.at_level("WARNING"):
        cfg = auth_from_env(str(tmp_path / "state"))
    assert cfg.token and "controller.token" in caplog.text and cfg.token not in caplog.text


@pytest.mark.parametrize("content", ["", "short", "x" * 40 + " y", "é" * 40])
def test_corrupt_file_refused_not_replaced(tmp_path, content):
    path = tmp_path / "t"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(CredentialFileError, match="does not hold a valid credential"):
        load_or_create_token(str(path))
    assert path.read_text() == content


def test_directory_in_place_of_file_refused(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(CredentialFileError, match="not a regular file"):
        load_or_create_token(str(tmp_path / "t"))


def test_concurrent_creation_yields_one_token(tmp_path):
    path = str(tmp_path / "race" / "token")
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(load_or_create_token(path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({tok for tok, _ in results}) == 1
    assert sum(created for _, created in results) == 1


# ---------------------------------------------------------------- bearer

def test_bearer_accepts_exact_token():
    check_bearer("Bearer abc", "abc")
    check_bearer("bearer abc", "abc")


@pytest.mark.parametrize("header, message", [
    (None, "missing bearer token (send 'Authorization: Bearer <token>')"),
    ("", "missing bearer token (send 'Authorization: Bearer <token>')"),
    ("Basic YWJjOmRlZg==", "authorization scheme must be Bearer"),
    ("Bearer", "authorization scheme must be Bearer"),
    ("Bearer ", "authorization scheme must be Bearer"),
    ("Bearer abd", "invalid bearer token"),
    ("Bearer abcd", "invalid bearer token"),
    ("Bearer ab\u00e9", "invalid bearer token"),
    ("Bearer \udcff", "invalid bearer token"),
])
def test_bearer_refusals(header, message):
    with pytest.raises(AuthError) as info:
        check_bearer(header, "abc")
    assert (info.value.status, info.value.message) == (401, message)
    assert "abd" not in info.value.message  # the presented token is never echoed


# ---------------------------------------------------------------- signatures

def _signed(clock, method="POST", path="/agent/v1/sketches", body=b'{"a":1}'):
    return _sign(SECRET, method, path, body, now=clock())


def test_sign_and_verify_roundtrip():
    clock = Clock()
    headers = _signed(clock)
    assert set(headers) == {"X-Measure-Timestamp", "X-Measure-Nonce", "X-Measure-Signature",
                            "X-Measure-Sender"}
    assert headers["X-Measure-Timestamp"] == "1700000000"
    _verifier(SECRET, now=clock).verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)


def test_signature_is_the_documented_hmac():
    import hashlib
    import hmac

    headers = sign_request(b"k" * 32, "put", "/a?b=1", b"xyz", now=5.9, sender="h3",
                           receiver="controller")
    assert headers["X-Measure-Sender"] == "h3"
    canonical = "\n".join(["PUT", "/a?b=1", "5", headers["X-Measure-Nonce"], "h3",
                           "controller", hashlib.sha256(b"xyz").hexdigest()]).encode()
    assert headers["X-Measure-Signature"] == hmac.new(b"k" * 32, canonical,
                                                      hashlib.sha256).hexdigest()


def test_nonces_differ():
    clock = Clock()
    assert _signed(clock)["X-Measure-Nonce"] != _signed(clock)["X-Measure-Nonce"]


@pytest.mark.parametrize("change", ["method", "path", "query", "body", "secret"])
def test_any_change_breaks_the_signature(change):
    clock = Clock()
    headers = _signed(clock)
    args: dict[str, Any] = {"method": "POST", "path": "/agent/v1/sketches", "body": b'{"a":1}'}
    secret = SECRET
    if change == "method":
        args["method"] = "PUT"
    elif change == "path":
        args["path"] = "/agent/v1/sketches/1"
    elif change == "query":
        args["path"] = "/agent/v1/sketches?x=1"
    elif change == "body":
        args["body"] = b'{"a":2}'
    else:
        secret = b"t" * 43
    with pytest.raises(AuthError) as info:
        _verifier(secret, now=clock).verify(args["method"], args["path"], args["body"], headers)
    assert (info.value.status, info.value.message) == (401, "bad request signature")


@pytest.mark.parametrize("missing", ["X-Measure-Timestamp", "X-Measure-Nonce",
                                     "X-Measure-Signature", "X-Measure-Sender"])
def test_missing_header(missing):
    clock = Clock()
    headers = _signed(clock)
    del headers[missing]
    with pytest.raises(AuthError) as info:
        _verifier(SECRET, now=clock).verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)
    assert (info.value.status, info.value.message) == (
        401, f"missing {missing} header (request must be signed)")


@pytest.mark.parametrize("name, value", [
    ("X-Measure-Timestamp", "1e9"), ("X-Measure-Timestamp", "-1"),
    ("X-Measure-Timestamp", "9" * 40), ("X-Measure-Timestamp", "nan"),
    ("X-Measure-Nonce", "zz" * 16), ("X-Measure-Nonce", "a" * 31),
    ("X-Measure-Signature", "A" * 64), ("X-Measure-Signature", "0" * 63),
])
def test_malformed_headers(name, value):
    clock = Clock()
    headers = _signed(clock)
    headers[name] = value
    with pytest.raises(AuthError) as info:
        _verifier(SECRET, now=clock).verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)
    assert (info.value.status, info.value.message) == (401, f"bad {name} header")


def test_headers_are_case_insensitive():
    clock = Clock()
    headers = {k.lower(): v for k, v in _signed(clock).items()}
    _verifier(SECRET, now=clock).verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)


@pytest.mark.parametrize("offset, ok", [(-30, True), (30, True), (-31, False), (31, False),
                                        (-3600, False)])
def test_timestamp_window(offset, ok):
    clock = Clock()
    headers = _sign(SECRET, "GET", "/x", b"", now=clock() + offset)
    verifier = _verifier(SECRET, max_skew=30, now=clock)
    if ok:
        verifier.verify("GET", "/x", b"", headers)
    else:
        with pytest.raises(AuthError) as info:
            verifier.verify("GET", "/x", b"", headers)
        assert info.value.status == 401
        assert info.value.message == ("stale request timestamp (more than 30s from the "
                                      "receiver's clock)")


def test_replay_refused_within_window_and_cache_pruned_after():
    clock = Clock()
    verifier = _verifier(SECRET, max_skew=30, now=clock)
    headers = _signed(clock)
    verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)
    clock.t += 29
    with pytest.raises(AuthError) as info:
        verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)
    assert (info.value.status, info.value.message) == (401,
                                                       "replayed request (nonce already used)")
    clock.t += 2  # past the window: the timestamp check takes over, the cache forgets
    with pytest.raises(AuthError, match="stale request timestamp"):
        verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)
    verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', _signed(clock))
    assert len(verifier) == 1


def test_bad_signature_does_not_consume_nonce():
    clock = Clock()
    verifier = _verifier(SECRET, now=clock)
    headers = _signed(clock)
    forged = {**headers, "X-Measure-Signature": "0" * 64}
    with pytest.raises(AuthError, match="bad request signature"):
        verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', forged)
    assert len(verifier) == 0
    verifier.verify("POST", "/agent/v1/sketches", b'{"a":1}', headers)


def test_nonce_cache_is_bounded():
    clock = Clock()
    verifier = _verifier(SECRET, now=clock, max_nonces=3)
    for _ in range(3):
        verifier.verify("GET", "/x", b"", _sign(SECRET, "GET", "/x", b"", now=clock()))
    with pytest.raises(AuthError) as info:
        verifier.verify("GET", "/x", b"", _sign(SECRET, "GET", "/x", b"", now=clock()))
    assert (info.value.status, info.value.message) == (
        429, "too many signed requests in the replay window")
    clock.t += 31
    verifier.verify("GET", "/x", b"", _sign(SECRET, "GET", "/x", b"", now=clock()))
    assert len(verifier) == 1


def test_empty_secret_rejected():
    with pytest.raises(ValueError, match="empty secret"):
        Verifier.for_controller(b"")
    with pytest.raises(ValueError, match="empty key"):
        Verifier.for_agent("h2", b"")


# ---------------------------------------------------------------- requests + webob

@pytest.mark.parametrize("kwargs", [
    {"json": {"type": "x", "n": [1, 2]}},
    {"data": {"a": "b c", "d": "é"}},
    {"data": "raw text"},
    {},
])
def test_hmac_auth_signs_prepared_request_verified_by_webob(kwargs):
    clock = Clock()
    prepared = requests.Request("POST", "http://10.0.0.5:8000/agent/v1/tasks/t1?force=1&x=%20",
                                auth=HmacAuth(SECRET, now=clock, sender="controller",
                                                      receiver="h2"), **kwargs).prepare()
    environ_req = webob.Request.blank(prepared.path_url, method="POST",
                                      body=prepared.body.encode() if isinstance(
                                          prepared.body, str) else (prepared.body or b""),
                                      headers=dict(prepared.headers))
    assert environ_req.path_qs == prepared.path_url
    verifier = _verifier(SECRET, now=clock)
    verifier.verify_webob(environ_req)
    with pytest.raises(AuthError, match="replayed"):
        verifier.verify_webob(environ_req)


def test_hmac_auth_refuses_streamed_body():
    prepared = requests.Request("POST", "http://h/x").prepare()
    prepared.body = iter([b"a"])
    with pytest.raises(TypeError, match="in-memory body"):
        HmacAuth(SECRET, sender="controller", receiver="h2")(prepared)


def test_check_request_accepts_either_credential():
    clock = Clock()
    verifier = _verifier(SECRET, now=clock)
    body = b"{}"
    assert check_request("POST", "/m", body, {"Authorization": "Bearer tok"},
                         token="tok", verifier=verifier) == ("bearer", None)
    signed = _sign(SECRET, "POST", "/m", body, now=clock())
    assert check_request("POST", "/m", body, signed, token="tok",
                         verifier=verifier) == ("signature", "controller")
    with pytest.raises(AuthError, match="^missing bearer token"):
        check_request("POST", "/m", body, {}, token="tok", verifier=verifier)
    with pytest.raises(AuthError, match="^invalid bearer token"):
        check_request("POST", "/m", body, {**signed, "Authorization": "Bearer bad"},
                      token="tok", verifier=verifier)
    with pytest.raises(AuthError, match="^missing X-Measure-Timestamp"):
        check_request("POST", "/m", body, {}, verifier=verifier)
    with pytest.raises(AuthError, match="^no credential accepted here"):
        check_request("POST", "/m", body, {})


# ---------------------------------------------------------------- agent API (in process)


AGENT_MUTATIONS: list[tuple[str, str, Any, int | None]] = [
    ("POST", "/agent/v1/sketches", {"filter": {"proto": "icmp"}, "counters": [{"key": "src"}]},
     201),
    ("DELETE", "/agent/v1/sketches/1", None, 200),
    ("POST", "/agent/v1/sketches/1/counters", {"key": "dst"}, 201),
    ("DELETE", "/agent/v1/sketches/1/counters/1", None, 200),
    ("PUT", "/agent/v1/overlay", {"epoch": 9, "parent": None, "children": [], "root": True,
                                  "controller": "http://127.0.0.1:9"}, 200),
    ("GET", "/agent/v1/overlay", None, 200),
    ("PUT", "/agent/v1/tasks/t-1", TASK, 200),
    ("DELETE", "/agent/v1/tasks/t-0", None, 200),
    ("POST", "/agent/v1/reports", REPORT, 200),
    ("POST", "/agent/v1/heartbeats", {"from": "c1", "agents": {"c1": {"version": "0.2.0"}}},
     200),
    ("POST", "/agent/v1/bandwidth", {"dst_ip": "10.0.0.8", "method": "slops"}, None),
    ("POST", "/agent/v1/bandwidth/receive", {"method": "slops", "duration": 2}, None),
    ("DELETE", "/agent/v1/bandwidth/receive/s-1", None, None),
]
#: ``host_agent.bandwidth.api.BandwidthApi`` is not table-driven: its mutating routes.
AGENT_BANDWIDTH_ROUTES = [("POST", r"^/agent/v1/bandwidth$"),
                          ("POST", r"^/agent/v1/bandwidth/receive$"),
                          ("DELETE", r"^/agent/v1/bandwidth/receive/[^/]+$")]


def test_agent_mutations_cover_every_state_changing_route():
    """Every method other than GET on every agent route has a row in AGENT_MUTATIONS, so
    a route added later is refused unsigned only if a row proves it."""
    import re

    app, _, _ = make_agent_app()
    routes = [(m, p.pattern) for p, methods in app.routes for m in methods if m != "GET"]
    routes += AGENT_BANDWIDTH_ROUTES
    assert len(routes) == 12, routes
    for method, pattern in routes:
        assert any(m == method and re.match(pattern, path) for m, path, _, _ in AGENT_MUTATIONS
                   ), f"no refusal test for {method} {pattern}"


def _forgeries(method, path, body):
    """Requests that must all be refused: (name, request, expected message)."""
    import webob


    plain = webob.Request.blank(path, method=method, body=body,
                                headers={"Content-Type": "application/json"})
    replay = signed(method, path, body)
    other_body = signed(method, path, body + b" ")
    other_body.body = body
    other_path = signed(method, "/agent/v1/health", body)
    other_path.path_info = path
    return [
        ("unsigned", plain, "missing X-Measure-Timestamp header (request must be signed)"),
        ("wrong secret", signed(method, path, body, secret=b"w" * 43), "bad request signature"),
        ("stale", signed(method, path, body, now=1_000_000_000),
         "stale request timestamp (more than 30s from the receiver's clock)"),
        ("future", signed(method, path, body, now=4_000_000_000),
         "stale request timestamp (more than 30s from the receiver's clock)"),
        ("body swapped", other_body, "bad request signature"),
        ("path swapped", other_path, "bad request signature"),
        ("bearer instead", webob.Request.blank(path, method=method, body=body, headers={
            "Authorization": "Bearer " + APP_SECRET.decode()}),
         "missing X-Measure-Timestamp header (request must be signed)"),
        ("garbage", webob.Request.blank(path, method=method, body=body, headers={
            **signed(method, path, body).headers, "X-Measure-Signature": "x"}),
         "bad X-Measure-Signature header"),
    ], replay


@pytest.mark.parametrize("method, path, body, ok_status", AGENT_MUTATIONS,
                         ids=[f"{m} {p}" for m, p, _, _ in AGENT_MUTATIONS])
def test_agent_refuses_unsigned_and_forged_requests_and_changes_nothing(method, path, body,
                                                                       ok_status):
    app, agent, transport = _ready_agent()
    raw = json.dumps(body).encode() if body is not None else b""
    forgeries, replay = _forgeries(method, path, raw)
    before = agent_state(app)
    for name, req, message in forgeries:
        resp = req.get_response(app)
        assert (resp.status_code, resp.json) == (401, {"error": message}), name
        assert agent_state(app) == before, f"{name} changed the agent"
    assert transport.sent == []
    if ok_status is None:
        return  # bandwidth: a probe would send traffic; the netns tier runs it signed
    # the same request, correctly signed, works (so the refusals above can fail)
    resp = replay.get_response(app)
    assert resp.status_code == ok_status, resp.text
    if method != "GET":
        assert agent_state(app) != before
    after = agent_state(app)
    resp = replay.get_response(app)
    assert (resp.status_code, resp.json) == (401, {"error": "replayed request (nonce already "
                                                            "used)"})
    assert agent_state(app) == after


@pytest.mark.parametrize("path", ["/agent/v1/health", "/agent/v1/sketches",
                                  "/agent/v1/sketches/1", "/agent/v1/sketches/1/counters/1"])
def test_agent_reads_are_open(path):
    import webob

    app, _, _ = _ready_agent()
    assert webob.Request.blank(path).get_response(app).status_code == 200


LEGACY = [
    {"type": "config sketch", "interface": "INPUT", "proto": "icmp"},
    {"type": "config sketch counter", "sketch_id": "1", "counter_key_type": "dst",
     "increment": "pkt"},
    {"type": "query heavy hitters", "sketch_id": "1", "counter_key_type": "src"},
    {"type": "query sketch", "sketch_id": "1", "counter_key_type": "src",
     "counter_key": "10.0.0.6"},
    {"type": "query real time counter", "sketch_id": "1", "counter_key_type": "src"},
    {"type": "query bw", "src": "10.0.0.9", "dst": "10.0.0.8"},
]


@pytest.mark.parametrize("form", [True, False], ids=["form", "json"])
@pytest.mark.parametrize("message", LEGACY, ids=[m["type"] for m in LEGACY])
def test_legacy_messages_refused_without_opt_in(message, form):
    import webob

    app, agent, _ = _ready_agent(allow_legacy=False)
    before = agent_state(app)
    if form:
        req = webob.Request.blank("/", POST=message)
    else:
        req = webob.Request.blank("/", method="POST", body=json.dumps(message).encode(),
                                  headers={"Content-Type": "application/json"})
    resp = req.get_response(app)
    assert (resp.status_code, resp.json) == (403, {
        "error": "legacy messages are disabled; start the agent with --allow-legacy"})
    assert agent_state(app) == before
    # a signature does not unlock them either: the opt-in is the agent's flag
    signed_req = signed("POST", "/", json.dumps(message).encode())
    assert signed_req.get_response(app).status_code == 403


def test_legacy_messages_work_with_opt_in():
    import webob

    app, agent, _ = _ready_agent(allow_legacy=True)
    resp = webob.Request.blank("/", POST=LEGACY[0]).get_response(app)
    assert (resp.status_code, resp.text) == (200, "3")  # 1: setup sketch, 2: task t-0
    resp = webob.Request.blank("/", POST={**LEGACY[1], "sketch_id": "3"}).get_response(app)
    assert (resp.status_code, resp.text) == (200, "1")
    assert [s.filter.to_dict() for _, s in sorted(agent.sketches.items())] == [
        {"interface": "INPUT", "proto": "tcp"}, {"interface": "INPUT", "proto": "udp"},
        {"interface": "INPUT", "proto": "icmp"}]
    assert agent.capture.listing() == ["1:16:-p tcp", "2:17:-p udp", "3:18:-p icmp"]


def test_agent_body_limit_checked_before_signature():
    import webob

    app, agent, _ = _ready_agent()
    before = agent_state(app)
    big = b"{" + b" " * (64 * 1024) + b"}"
    resp = webob.Request.blank("/agent/v1/sketches", method="POST", body=big).get_response(app)
    assert (resp.status_code, resp.json) == (413, {"error": "body too large: more than 65536 "
                                                            "bytes"})
    assert agent_state(app) == before


# ---------------------------------------------------------------- controller REST (in process)


REGISTRATION = {"name": "h4", "url": "http://192.168.100.4:8000", "data_ip": "10.0.0.4",
                "mac": "00:00:00:00:00:04"}
POLICY_YAML = b"tasks:\n  - name: hh-yaml\n    kind: heavy_hitters\n    threshold: 0.1\n"


CONTROLLER_MUTATIONS = [
    ("POST", "/measure/v1/agents", "application/json", REGISTRATION, 201),
    ("POST", "/measure/v1/agents/h2/heartbeat", "application/json", {}, 200),
    ("POST", "/measure/v1/agents/h2/peer-key", "application/json", {"peer": "h3"}, 200),
    ("POST", "/measure/v1/tasks", "application/json", {"name": "hh-2", "kind": "heavy_hitters"},
     201),
    ("POST", "/measure/v1/tasks", "application/yaml", POLICY_YAML, 201),
    ("DELETE", "/measure/v1/tasks/1", "application/json", None, 200),
    ("POST", "/measure/v1/reports", "application/json", "REPORT", 202),
    ("POST", "/measure/v1/bandwidth", "application/json", {"src": "h2", "dst": "h3"}, 200),
    ("DELETE", "/measure/v1/actions/1", "application/json", None, 200),
]
CONTROLLER_READS = ["/measure/v1/topology", "/measure/v1/agents", "/measure/v1/overlay",
                    "/measure/v1/tasks", "/measure/v1/tasks/1", "/measure/v1/tasks/1/result",
                    "/measure/v1/events", "/measure/v1/openapi.json"]


def _controller_forgeries(method, path, body, ctype):
    import webob

    def req(headers):
        return webob.Request.blank(path, method=method, body=body,
                                   headers={"Content-Type": ctype, **headers})

    missing = "missing bearer token (send 'Authorization: Bearer <token>')"
    return [
        ("no credential", req({}), missing),
        ("wrong token", req({"Authorization": "Bearer " + TOKEN[:-1] + "X"}),
         "invalid bearer token"),
        ("token prefix", req({"Authorization": "Bearer " + TOKEN[:-1]}), "invalid bearer token"),
        ("token + suffix", req({"Authorization": "Bearer " + TOKEN + "A"}),
         "invalid bearer token"),
        ("basic auth", req({"Authorization": "Basic " + TOKEN}),
         "authorization scheme must be Bearer"),
        ("token in query", webob.Request.blank(path + "?token=" + TOKEN, method=method,
                                               body=body, headers={"Content-Type": ctype}),
         missing),
        ("secret as token", req({"Authorization": "Bearer " + APP_SECRET.decode()}),
         "invalid bearer token"),
        ("wrong secret", req(_as_agent(b"w" * 43, method, path, body)),
         "bad request signature"),
        ("stale signature", req(_as_agent(APP_SECRET, method, path, body, now=1e9)),
         "stale request timestamp (more than 30s from the receiver's clock)"),
        ("body swapped", req(_as_agent(APP_SECRET, method, path, body + b" "))
         if body else req(_as_agent(APP_SECRET, method, path, b"{}")),
         "bad request signature"),
        ("path swapped", req(_as_agent(APP_SECRET, method, "/measure/v1/agents", body)),
         "bad request signature") if path != "/measure/v1/agents" else
        ("path swapped", req(_as_agent(APP_SECRET, method, "/measure/v1/tasks", body)),
         "bad request signature"),
    ]


def test_controller_mutations_cover_every_state_changing_operation():
    """Every operation other than GET in the served OpenAPI document has a row in
    CONTROLLER_MUTATIONS (the document is kept equal to the routes by test_openapi)."""
    import re

    from testing.netns import ROOT

    with open(os.path.join(ROOT, "ryu_app", "rest", "openapi.json")) as f:
        doc = json.load(f)
    ops = [(m.upper(), path) for path, item in doc["paths"].items() for m in item
           if m in ("post", "put", "patch", "delete")]
    assert len(ops) == 8, ops
    for method, template in ops:
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        assert any(m == method and re.match(pattern, path)
                   for m, path, _, _, _ in CONTROLLER_MUTATIONS), f"no test for {method} {template}"


@pytest.mark.parametrize("method, path, ctype, body, ok_status", CONTROLLER_MUTATIONS,
                         ids=[f"{m} {p} {c.split('/')[1]}" for m, p, c, _, _ in
                              CONTROLLER_MUTATIONS])
def test_controller_refuses_bad_credentials_and_changes_nothing(tmp_path, method, path, ctype,
                                                               body, ok_status):
    app, service = ready_controller(tmp_path, reads_open=True)
    if body == "REPORT":
        body = task_report()
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None
                                                 else b"")
    before = controller_state(service)
    for name, req, message in _controller_forgeries(method, path, raw, ctype):
        resp = req.get_response(app)
        assert (resp.status_code, resp.json) == (401, {"error": message}), name
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="measure"'
        assert controller_state(service) == before, f"{name} changed the controller"
    # the same request with the token works (so the refusals above can fail)
    resp = bearer(method, path, raw, content_type=ctype).get_response(app)
    assert resp.status_code == ok_status, resp.text
    if path.endswith("/peer-key"):  # stores nothing: it hands out a credential
        assert resp.json["dst_name"] == "h3" and set(resp.json["dst_key"]) == {"key", "ticket"}
    else:
        assert controller_state(service) != before


def test_controller_accepts_agent_signature_once(tmp_path):

    app, service = ready_controller(tmp_path)
    req = signed("POST", "/measure/v1/agents", json.dumps(REGISTRATION).encode(),
                 sender="h4", receiver="controller")
    assert req.get_response(app).status_code == 201
    assert [a["name"] for a in service.agents()] == ["h2", "h3", "h4"]
    before = controller_state(service)
    resp = req.get_response(app)
    assert (resp.status_code, resp.json) == (401, {"error": "replayed request (nonce already "
                                                            "used)"})
    assert controller_state(service) == before


@pytest.mark.parametrize("path", CONTROLLER_READS)
def test_controller_reads_need_the_token_unless_open(tmp_path, path):
    import webob

    app, _ = ready_controller(tmp_path)
    resp = webob.Request.blank(path).get_response(app)
    assert (resp.status_code, resp.json) == (401, {
        "error": "missing bearer token (send 'Authorization: Bearer <token>')"})
    assert bearer("GET", path).get_response(app).status_code in (200, 404)  # 404: no result
    open_app, _ = ready_controller(tmp_path / "open", reads_open=True)
    assert webob.Request.blank(path).get_response(open_app).status_code in (200, 404)


def test_agent_without_a_secret_does_not_accept_configuration_from_anyone():
    import webob

    app, agent, _ = make_agent_app(secret=None)
    before = agent_state(app)
    resp = webob.Request.blank("/agent/v1/sketches", method="POST", body=json.dumps(
        {"filter": {"proto": "icmp"}}).encode(), headers={"Content-Type": "application/json"}
    ).get_response(app)
    assert resp.status_code == 403
    assert "--secret-file" in resp.json["error"]
    assert agent_state(app) == before


# ---------------------------------------------------------------- one key, one meaning

def test_a_request_signed_with_the_agents_secret_cannot_use_operator_routes(tmp_path, caplog):
    app, service = ready_controller(tmp_path)
    before = sorted(service.tasks)
    for method, path, body in [("POST", "/measure/v1/tasks", json.dumps(TASK).encode()),
                               ("DELETE", "/measure/v1/tasks/1", b""),
                               ("DELETE", "/measure/v1/actions/1", b""),
                               ("GET", "/measure/v1/tasks", b"")]:
        resp = signed(method, path, body, sender="h2", receiver="controller").get_response(app)
        assert resp.status_code == 403 and "operator token" in resp.json["error"], (path,
                                                                                    resp.text)
    assert sorted(service.tasks) == before
    assert "refused a signed (agent) request" in caplog.text
    # the agent's own calls still work with it
    beat = signed("POST", "/measure/v1/agents/h2/heartbeat", b"{}", sender="h2",
                  receiver="controller").get_response(app)
    assert beat.status_code == 200, beat.text
    # and the operator's token does everything
    assert bearer("DELETE", "/measure/v1/tasks/1").get_response(app).status_code == 200


def test_the_body_is_read_only_after_the_headers_pass():
    reads = []

    def body() -> bytes:
        reads.append(1)
        return b"{}"

    verifier = _verifier(SECRET, now=lambda: 1_000_000.0)
    stale = _sign(SECRET, "POST", "/x", b"{}", now=1_000_000.0 - 3600)
    with pytest.raises(AuthError, match="stale request timestamp"):
        verifier.verify("POST", "/x", body, stale)
    with pytest.raises(AuthError, match="missing X-Measure-Timestamp"):
        verifier.verify("POST", "/x", body, {})
    with pytest.raises(AuthError, match="invalid bearer token"):
        check_request("POST", "/x", body, {"Authorization": "Bearer " + "x" * 43},
                      token="y" * 43, verifier=verifier)
    assert reads == []
    fresh = _sign(SECRET, "POST", "/x", b"{}", now=1_000_000.0)
    verifier.verify("POST", "/x", body, fresh)
    assert reads == [1]


def test_an_agents_report_counts_only_from_the_current_root_at_its_epoch(tmp_path, caplog):
    app, service = ready_controller(tmp_path)
    service.recompute()
    root, epoch = service.overlay.root, service.epoch
    leaf = next(n for n in ("h2", "h3") if n != root)

    def post(sender: str, at: int) -> int:
        body = {**task_report(), "from": sender, "epoch": at}
        return signed("POST", "/measure/v1/reports", json.dumps(body).encode(),
                      sender=sender, receiver="controller").get_response(app).status_code

    assert post(leaf, epoch) == 409  # a leaf made root by a replayed placement
    assert post(root, epoch + 1) == 409  # an epoch the controller never gave out
    assert "report for task 1 refused" in caplog.text and leaf in caplog.text
    assert service.results.latest("1", now=service.now()) is None
    assert post(root, epoch) == 202
    # the operator's token may post any report (tools, tests, a manual replay)
    body = {**task_report(), "from": leaf, "epoch": 0}
    assert bearer("POST", "/measure/v1/reports", json.dumps(body).encode()) \
        .get_response(app).status_code == 202


def test_a_placement_replayed_to_another_agent_is_refused(caplog):
    """The controller's placement names its receiver (``to``, signed with the body): the
    same signed placement sent to another agent is a 409, and so is a second, different
    placement at the epoch an agent already holds."""
    app, _agent, _ = make_agent_app()  # agent "fz"
    mine: dict[str, Any] = {"epoch": 3, "parent": None, "root": False, "children": [],
                            "to": "fz"}
    other = {**mine, "root": True, "to": "h5"}  # recorded on its way to h5
    resp = signed("PUT", "/agent/v1/overlay", json.dumps(other).encode()).get_response(app)
    assert resp.status_code == 409 and "addressed to 'h5'" in resp.json["error"]
    assert "refused a placement addressed to 'h5'" in caplog.text
    ok = signed("PUT", "/agent/v1/overlay", json.dumps(mine).encode()).get_response(app)
    assert ok.status_code == 200, ok.text
    again = signed("PUT", "/agent/v1/overlay", json.dumps(mine).encode()).get_response(app)
    assert again.status_code == 200  # the same placement again (a re-push) is fine
    forged = {**mine, "root": True, "to": None}
    resp = signed("PUT", "/agent/v1/overlay", json.dumps(forged).encode()).get_response(app)
    assert resp.status_code == 409 and "already holds another placement" in resp.json["error"]
    status = signed("GET", "/agent/v1/overlay").get_response(app).json
    assert status["root"] is False and status["epoch"] == 3


def test_an_agents_key_speaks_only_for_that_agent(tmp_path, caplog):
    """h3's own key may register, heartbeat and report as h3 only: naming h2 in the path
    or body is a 403 (logged); claiming to be h2 in the sender header is a 401."""
    app, service = ready_controller(tmp_path)
    before = controller_state(service)
    beat = signed("POST", "/measure/v1/agents/h2/heartbeat", b"{}", sender="h3",
                  receiver="controller").get_response(app)
    assert (beat.status_code, beat.json) == (403, {
        "error": "agent h3 may only heartbeat for itself, not 'h2'"})
    reg = {"name": "h2", "url": "http://192.168.100.66:8000", "data_ip": "10.0.0.66"}
    resp = signed("POST", "/measure/v1/agents", json.dumps(reg).encode(), sender="h3",
                  receiver="controller").get_response(app)
    assert resp.status_code == 403 and "register as itself" in resp.json["error"]
    report = {**task_report(), "from": "h2"}
    resp = signed("POST", "/measure/v1/reports", json.dumps(report).encode(), sender="h3",
                  receiver="controller").get_response(app)
    assert resp.status_code == 403 and "report as itself" in resp.json["error"]
    assert "agent h3 tried to heartbeat for 'h2'" in caplog.text
    # h3's key with h2 in the sender header: the signature does not match h2's key
    forged = sign_request(agent_key(APP_SECRET, "h3"), "POST", "/measure/v1/agents/h2/heartbeat",
                          b"{}", sender="h2", receiver="controller")
    resp = webob.Request.blank("/measure/v1/agents/h2/heartbeat", method="POST", body=b"{}",
                               headers={**forged, "Content-Type": "application/json"}
                               ).get_response(app)
    assert (resp.status_code, resp.json) == (401, {"error": "bad request signature"})
    assert "refused a signed request from 'h2': bad request signature" in caplog.text
    assert controller_state(service) == before
    # the same key for its own name works (so the refusals above can fail)
    own = signed("POST", "/measure/v1/agents/h3/heartbeat", b"{}", sender="h3",
                 receiver="controller").get_response(app)
    assert own.status_code == 200, own.text


def test_a_request_signed_for_another_receiver_is_refused_and_logged(caplog):
    """Every signature names its receiver: the controller's request to h5 (say a task
    push), recorded and replayed to agent fz, is a 401, whatever its path or body."""
    app, _agent, _ = make_agent_app()  # agent "fz"
    before = agent_state(app)
    body = json.dumps({"name": "c", "kind": "counter"}).encode()
    for_h5 = signed("PUT", "/agent/v1/tasks/t1", body, receiver="h5")
    replay = webob.Request.blank("/agent/v1/tasks/t1", method="PUT", body=body,
                                 headers=dict(for_h5.headers))
    resp = replay.get_response(app)
    assert (resp.status_code, resp.json) == (401, {"error": "bad request signature"})
    assert "refused PUT /agent/v1/tasks/t1: bad request signature" in caplog.text
    # fz's own key, but the receiver named in the signature is h5: refused as well
    key = agent_key(APP_SECRET, "fz")
    misdirected = sign_request(key, "PUT", "/agent/v1/tasks/t1", body, sender="controller",
                               receiver="h5")
    resp = webob.Request.blank("/agent/v1/tasks/t1", method="PUT", body=body, headers={
        **misdirected, "Content-Type": "application/json"}).get_response(app)
    assert resp.status_code == 401
    assert agent_state(app) == before
    ok = signed("PUT", "/agent/v1/tasks/t1", body).get_response(app)
    assert ok.status_code in (200, 201), ok.text


def _peer_request(method, path, body, sender, receiver="fz", ticket_for=None):
    """Agent ``sender``'s request to ``receiver`` with the controller's credential."""
    from measure_common.auth import peer_credential, unwrap

    cred = peer_credential(APP_SECRET, sender, ticket_for or receiver)
    key = unwrap(agent_key(APP_SECRET, sender), ticket_for or receiver, cred["key"])
    headers = sign_request(key, method, path, body, sender=sender, receiver=receiver,
                           ticket=cred["ticket"])
    return webob.Request.blank(path, method=method, body=body,
                               headers={**headers, "Content-Type": "application/json"})


def test_an_agents_peer_key_reaches_overlay_routes_only_as_itself(caplog):
    """A child signs its reports to its parent with the pair key the controller gave it;
    the same key cannot configure the parent, nor report under another name, and a
    ticket made for another receiver does not verify."""
    app, agent, _ = _ready_agent()  # fz, root, child c1
    report = json.dumps(REPORT).encode()  # from c1
    sketches = json.dumps({"filter": {"proto": "udp"}}).encode()
    before = agent_state(app)
    resp = _peer_request("POST", "/agent/v1/sketches", sketches, "c1").get_response(app)
    assert resp.status_code == 403 and "only the controller may" in resp.json["error"]
    as_other = json.dumps({**REPORT, "from": "c2"}).encode()
    resp = _peer_request("POST", "/agent/v1/reports", as_other, "c1").get_response(app)
    assert (resp.status_code, resp.json) == (403, {"error": "agent c1 may only report as "
                                                            "itself"})
    resp = _peer_request("POST", "/agent/v1/reports", report, "c1",
                         ticket_for="h5").get_response(app)
    assert (resp.status_code, resp.json) == (401, {"error": "bad request signature"})
    no_ticket = _peer_request("POST", "/agent/v1/reports", report, "c1")
    del no_ticket.headers["X-Measure-Ticket"]
    assert no_ticket.get_response(app).status_code == 401
    assert agent_state(app) == before
    assert "refused POST /agent/v1/sketches from agent c1" in caplog.text
    resp = _peer_request("POST", "/agent/v1/reports", report, "c1").get_response(app)
    assert (resp.status_code, resp.json) == (200, {"accepted": True, "late": False})
