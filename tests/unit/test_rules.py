"""Cross-field rules: each rule object's check and its JSON schema say the same thing."""

from __future__ import annotations

import itertools

import jsonschema_rs
import pytest

from measure_model.fields import (
    ConflictError,
    Distinct,
    Exclusive,
    FieldError,
    NeedsValue,
    OneFamily,
)
from measure_model.task import FILTER, PORT_PROTOS, PROTO_FAMILY, PROTOS, RAW_RULES, RULES

pytestmark = pytest.mark.unit


def _schema_accepts(schema: dict, obj: dict) -> bool:
    given = {k: v for k, v in obj.items() if v is not None}  # an absent field is None here
    return jsonschema_rs.Draft4Validator(schema).is_valid(given)


def _check_accepts(rule, name: str, obj: dict) -> bool:
    try:
        rule.check(name, obj)
    except FieldError:
        return False
    return True


FILTERS = [dict(zip(("proto", "src", "dst", "sport", "dport"), values, strict=True))
           for values in itertools.product((None, *PROTOS), (None, "10.0.0.1", "2001:db8::/32"),
                                           (None, "10.1.0.0/16", "::1"), (None, 80),
                                           (None, "1000:2000"))]


@pytest.mark.parametrize("rule", FILTER.rules, ids=lambda r: type(r).__name__)
def test_filter_rules_check_what_their_schema_says(rule):
    schema = rule.schema()
    seen = set()
    for obj in FILTERS:
        accepted = _check_accepts(rule, "filter", obj)
        assert accepted == _schema_accepts(schema, obj), obj
        seen.add(accepted)
    assert seen == {True, False}  # the objects try both sides of the rule


def test_filter_rule_messages():
    ports, family = FILTER.rules
    with pytest.raises(FieldError, match="^filter.dport needs filter.proto tcp or udp$"):
        ports.check("filter", {"sport": None, "dport": 80, "proto": "icmp"})
    with pytest.raises(FieldError, match="^filter.dst '::1' is IPv6 but filter.proto icmp is "
                                         "IPv4: one address family per filter$"):
        family.check("filter", {"proto": "icmp", "src": None, "dst": "::1"})
    assert isinstance(ports, NeedsValue) and isinstance(family, OneFamily)
    assert ports.values == PORT_PROTOS and dict(family.proto_family) == PROTO_FAMILY


def test_exclusive_and_distinct():
    rule = Exclusive(("threshold", "threshold_abs"))
    for obj in ({}, {"threshold": 0.1}, {"threshold_abs": 5},
                {"threshold": 0.1, "threshold_abs": 5}):
        assert _check_accepts(rule, "", obj) == _schema_accepts(rule.schema(), obj), obj
    with pytest.raises(FieldError, match="^threshold and threshold_abs are exclusive"):
        rule.check("", {"threshold": 0.1, "threshold_abs": 5})
    distinct = Distinct("src", "dst", "host")
    assert distinct.schema() is None  # type: ignore[func-returns-value]  # checks it has none
    with pytest.raises(ConflictError, match="^src and dst are the same host 'h1'$"):
        distinct.check("", {"src": "h1", "dst": "h1"})
    distinct.check("", {"src": None, "dst": None})


def test_needs_value_names_the_object_path():
    rule = NeedsValue(("a",), "b", ("x", "y"))
    with pytest.raises(FieldError, match="^o.a needs o.b x or y$"):
        rule.check("o", {"a": 1, "b": "z"})


def test_every_task_rule_gives_its_schema_to_the_kinds_it_applies_to():
    from measure_model.task import kind_json_schema

    assert kind_json_schema("heavy_hitters")["not"] == {"required": ["threshold",
                                                                     "threshold_abs"]}
    assert "not" not in kind_json_schema("bandwidth")
    assert "allOf" in kind_json_schema("heavy_hitters")  # reactions fit the task's key
    assert len(RAW_RULES) + len(RULES) == 3
