"""Bandwidth limits: the controller refuses exactly what the agent would refuse.

Every numeric limit documented in ``openapi.json``'s ``BandwidthRequest`` is
sent through the real controller REST app (``MeasureService`` + Ryu's
WSGI routing) whose agent calls go to a real ``AgentApp`` with the real
bandwidth routes and ``Prober``. Just outside a limit: 400 naming the field
from the controller, and the agent is never called (before, the controller
accepted ``max_duration`` 0.5 and ``max_bytes`` 1 and the agent's refusal came
back as a 502). At a limit: the controller passes the request on and the
agent's parameter check accepts it too: it goes on to open the receiver at
the destination (which this test leaves unreachable, so no probe traffic is
sent), asking for ``max_duration + 2`` seconds.
"""

from __future__ import annotations

import json

import pytest
import webob

from host_agent.agent import Agent
from host_agent.api import AgentApp
from host_agent.bandwidth.api import bandwidth_api
from ryu_app.rest.openapi_schemas import OPENAPI_PATH
from testing.harness import FakeAgents, Harness

pytestmark = pytest.mark.unit

with open(OPENAPI_PATH, encoding="utf-8") as _f:
    SCHEMA = json.load(_f)["components"]["schemas"]["BandwidthRequest"]["properties"]


def _limits() -> list[tuple[str, float | int, float | int]]:
    """(field, value at the limit, value just outside) for every documented bound."""
    out = []
    for name, prop in SCHEMA.items():
        step = 1 if prop.get("type") == "integer" else 0.001
        if "minimum" in prop:
            out.append((name, prop["minimum"], prop["minimum"] - step))
        if "maximum" in prop:
            out.append((name, prop["maximum"], prop["maximum"] + step))
    return out


LIMITS = _limits()


class Destination:
    """The destination agent's side of the probe: records the receive request, unreachable."""

    def __init__(self) -> None:
        self.receives: list[object] = []

    def request(self, method, url, json=None, timeout=5.0):
        self.receives.append(json)
        raise ConnectionError("connection refused")


class RealBandwidthAgents(FakeAgents):
    """FakeAgents for the overlay calls; ``/agent/v1/bandwidth`` is a real AgentApp."""

    def __init__(self) -> None:
        super().__init__()
        self.destination = Destination()
        self.bandwidth_replies: list[tuple[int, object]] = []
        agent = Agent("h1", [], capture=None, data_ip="10.0.0.1")
        self.app = AgentApp(agent, insecure=True,
                            bandwidth=bandwidth_api("10.0.0.1", self.destination))

    def request(self, method, url, json=None, timeout=5.0):
        if url.endswith("/agent/v1/bandwidth"):
            self.calls.append((method, url, json))
            req = webob.Request.blank("/agent/v1/bandwidth", method=method,
                                      body=_json_bytes(json), content_type="application/json")
            resp = req.get_response(self.app)
            reply = (resp.status_int, resp.json)
            self.bandwidth_replies.append(reply)
            return reply
        return super().request(method, url, json, timeout)


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def h(tmp_path):
    harness = Harness(str(tmp_path / "state"), agents=RealBandwidthAgents())
    harness.register(1, 2)
    return harness


def test_the_documented_limits_are_the_table_limits():
    from measure_model.task import BW_MAX_BYTES, BW_MAX_DURATION, BW_MIN_BYTES, BW_MIN_DURATION

    assert sorted((n, at) for n, at, _ in LIMITS) == sorted([
        ("max_bytes", BW_MIN_BYTES), ("max_bytes", BW_MAX_BYTES),
        ("max_duration", BW_MIN_DURATION), ("max_duration", BW_MAX_DURATION)])


@pytest.mark.parametrize(("field", "at", "outside"), LIMITS,
                         ids=[f"{n}={o}" for n, _, o in LIMITS])
def test_just_outside_a_limit_is_a_400_naming_the_field_and_the_agent_is_not_called(
        h, field, at, outside):
    status, body = h.call("POST", "/measure/v1/bandwidth",
                          {"src": "h1", "dst": "h2", field: outside})
    assert status == 400, body
    assert body["error"].startswith(f"bandwidth: {field} ") and "out of range" in body["error"]
    assert h.agents.bandwidth_replies == []


@pytest.mark.parametrize(("field", "at", "outside"), LIMITS,
                         ids=[f"{n}={a}" for n, a, _ in LIMITS])
def test_at_a_limit_the_agent_accepts_the_parameters_too(h, field, at, outside):
    status, body = h.call("POST", "/measure/v1/bandwidth", {"src": "h1", "dst": "h2", field: at})
    ((agent_status, agent_body),) = h.agents.bandwidth_replies
    assert agent_status != 400, agent_body  # the agent's parameter check passed
    assert "destination unreachable" in agent_body["error"]
    duration = at if field == "max_duration" else 10.0
    assert h.agents.destination.receives == [{"method": "slops", "duration": duration + 2}]
    assert status in (502, 503, 504) and body["error"].startswith("bandwidth: agent h1")


def test_a_task_in_a_policy_is_checked_by_the_same_rows(h):
    status, body = h.call("POST", "/measure/v1/tasks", {
        "name": "bw", "kind": "bandwidth", "src": "h1", "dst": "h2", "max_bytes": 1})
    assert (status, body) == (400, {"error": "policy request: task bw: max_bytes 1 is out "
                                             "of range 100000..200000000"})
