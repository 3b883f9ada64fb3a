"""What running the monitor costs an agent: the ``monitor`` cost object and its check.

An agent reports it in ``GET /agent/v1/health`` (``monitor``), in every
heartbeat to the controller (shown by ``GET /measure/v1/agents``) and in the
per-host summary of every task report (``per_host.<agent>.monitor``)::

    {"restarts": 0, "crash_looping": false, "cpu_seconds": 12.5,
     "cpu_seconds_per_s": 0.08, "rss_bytes": 41000000, "packets": 120000,
     "missed": 0}

``cpu_seconds`` is the monitor processes' user + system time since they
started, ``cpu_seconds_per_s`` its rate over the last interval of a few
seconds (``null`` until known), ``packets`` what they counted and
``missed`` what the capture rules matched that they did not count
(fail-open on a full queue, queue bypass while no monitor was bound;
``null`` without capture rules).
"""

from __future__ import annotations

import math
from typing import Any

COST_FIELDS = ("restarts", "crash_looping", "cpu_seconds", "cpu_seconds_per_s", "rss_bytes",
               "packets", "missed")
_COUNTS = ("restarts", "rss_bytes", "packets", "missed")
_SECONDS = ("cpu_seconds", "cpu_seconds_per_s")
MAX_COUNT = 2 ** 63
MAX_SECONDS = 1e12


def check_cost(value: Any, where: str = "monitor") -> dict[str, Any]:
    """The cost object if every field is known and in range; ValueError naming the field."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    for key in value:
        if key not in COST_FIELDS:
            raise ValueError(f"{where}: unknown field '{key}'")
    for key in _COUNTS:
        v = value.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                              or not 0 <= v < MAX_COUNT):
            raise ValueError(f"{where}: field '{key}' must be a non-negative integer or null")
    for key in _SECONDS:
        v = value.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v) or not 0 <= v <= MAX_SECONDS):
            raise ValueError(f"{where}: field '{key}' must be a non-negative number or null")
    if not isinstance(value.get("crash_looping", False), bool):
        raise ValueError(f"{where}: field 'crash_looping' must be a boolean")
    return value


def cost_json_schema() -> dict[str, Any]:
    """The OpenAPI schema of the cost object (the same rules as :func:`check_cost`)."""
    count = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT - 1, "nullable": True}
    seconds = {"type": "number", "minimum": 0, "maximum": MAX_SECONDS, "nullable": True}
    props: dict[str, Any] = {k: count for k in _COUNTS}
    props.update({k: seconds for k in _SECONDS})
    props["crash_looping"] = {"type": "boolean"}
    return {"type": "object", "additionalProperties": False,
            "properties": {k: props[k] for k in COST_FIELDS}}
