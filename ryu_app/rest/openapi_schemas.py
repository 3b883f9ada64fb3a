"""The task and bandwidth schemas of ``ryu_app/rest/openapi.json``, generated from the task table.

``measure_model.task`` holds the only table of task fields; its checkers
give their own JSON schema (``measure_model.fields``). This module builds
the document's ``Task`` (one object schema per kind, holding exactly the
fields of that kind), ``Policy`` and ``BandwidthRequest`` components from it,
so the documented limits are the enforced ones; the ``Report`` envelope
comes from ``measure_model.wire.overlay``' constants the same way. ``tests/unit/test_openapi.py``
fails when the file and the table disagree; after changing the table run

    python -m ryu_app.rest.openapi_schemas

which rewrites those components of ``ryu_app/rest/openapi.json`` in place.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from measure_model.cost import cost_json_schema
from measure_model.fields import HOST_PATTERN, described
from measure_model.task import (
    KINDS,
    MAX_POLICY_TASKS,
    ROWS,
    bandwidth_json_schema,
    task_json_schema,
)
from measure_model.wire.overlay import MAX_AGENTS, MAX_TIME, TASK_ID_RE

OPENAPI_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")


COUNT = {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1}
TIME = {"type": "number", "minimum": 0, "maximum": MAX_TIME}
NAME = {"type": "string", "pattern": f"^{HOST_PATTERN}$"}
NAMES = {"type": "array", "items": NAME, "maxItems": MAX_AGENTS}


def report_schema() -> dict[str, Any]:
    """The envelope of an overlay report (``measure_model.wire.overlay.validate_report``).

    The snapshot is described, not specified: its sketch cells and HLL
    registers are compressed binary (base64) that only
    ``measure_model.wire.report.check_snapshot`` can check.
    """
    counts = {"type": "object", "additionalProperties": COUNT}
    summary = {"type": "object", "additionalProperties": False, "properties": {
        "packets": COUNT, "bytes": COUNT, "total": COUNT, "heavy_hitters": counts,
        "top_k": {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2}},
        "distinct": {**COUNT, "nullable": True}, "scan": counts,
        "missed": {**counts, "nullable": True}, "generated_at": TIME,
        "monitor": cost_json_schema()}}
    return {
        "type": "object", "additionalProperties": False,
        "required": ["task_id", "interval_end", "snapshot", "covered", "missing"],
        "properties": {
            "task_id": {"type": "string", "pattern": f"^{TASK_ID_RE.pattern}$"},
            "epoch": {"type": "integer", "minimum": 0, "maximum": 2 ** 53},
            "from": NAME, "interval_end": TIME,
            "generated_at": {**TIME, "nullable": True}, "oldest": {**TIME, "nullable": True},
            "height": {"type": "integer", "minimum": 0, "maximum": 64, "nullable": True},
            "kind": {"type": "string", "enum": list(KINDS), "nullable": True},
            "scan_ports": {"type": "integer", "minimum": 0, "maximum": 65535,
                           "nullable": True},
            "snapshot": {"type": "object", "nullable": True,
                         "description": "the subtree's merged counter snapshot "
                                        "(docs/design.md), checked whole on receipt "
                                        "(measure_model.wire.report.check_snapshot: its sketch "
                                        "cells and HLL registers are compressed binary); "
                                        "null when nothing in the subtree measures the task"},
            "covered": NAMES, "missing": NAMES,
            "covered_count": {"type": "integer", "minimum": 0, "maximum": MAX_AGENTS},
            "missing_count": {"type": "integer", "minimum": 0, "maximum": MAX_AGENTS},
            "per_host": {"type": "object", "additionalProperties": summary},
            "errors": {"type": "object", "additionalProperties": {"type": "string"}},
        }}


def component_schemas() -> dict[str, Any]:
    """The generated components, by name."""
    return {
        "Task": task_json_schema(),
        "Policy": {"oneOf": [
            {"$ref": "#/components/schemas/Task"},
            {"type": "object", "required": ["tasks"], "additionalProperties": False,
             "properties": {"tasks": {"type": "array", "minItems": 1,
                                      "maxItems": MAX_POLICY_TASKS,
                                      "items": {"$ref": "#/components/schemas/Task"}},
                            "protect": described(ROWS["protect"])}}]},
        "BandwidthRequest": bandwidth_json_schema(),
        "Report": report_schema(),
    }


def render(doc: dict[str, Any]) -> str:
    """The document as the file holds it."""
    return json.dumps(doc, indent=2) + "\n"


def updated(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the generated components in place."""
    out = dict(doc)
    out["components"] = dict(doc["components"])
    out["components"]["schemas"] = {**doc["components"]["schemas"], **component_schemas()}
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated components of ``ryu_app/rest/openapi.json``."""
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        doc = json.load(f)
    text = render(updated(doc))
    with open(OPENAPI_PATH, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{OPENAPI_PATH}: {', '.join(component_schemas())} written from measure_model")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
