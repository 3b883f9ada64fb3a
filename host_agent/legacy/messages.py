"""The original per-host messages translated into the task model.

The original clients (README.md, "Agent API") send form fields, so every
value is a string: ``sketch_id=1&counter_key_type=src&threshold=0.1``.
These functions turn a ``config sketch`` message into a task-model
``filter`` body and a ``config sketch counter`` message into a counter body
of ``measure_model.task.counter_task``; the task table then checks them
like any other task (one validator, one set of numbers). Only the form
spelling is handled here: decimal strings become numbers, ``interface``
and ``proto`` are case-insensitive, an empty field is an absent one.
"""

from __future__ import annotations

import re
from typing import Any

SKETCH_FIELDS = ("interface", "proto", "src", "dst", "sport", "dport")
COUNTER_FIELDS = ("sketch_id", "counter_key_type", "increment", "threshold", "threshold_abs",
                  "top_k", "window_length", "window_mode")


def form_value(value: Any) -> Any:
    """A form string as the number it spells; anything else unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"[+-]?\d{1,30}", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", text,
                    re.IGNORECASE):
        return float(text)
    return value


def _given(fields: dict[str, Any], name: str) -> bool:
    return fields.get(name) not in (None, "")


def legacy_filter(fields: dict[str, Any]) -> dict[str, Any]:
    """The ``filter`` body of a ``config sketch`` message."""
    out: dict[str, Any] = {}
    for name in SKETCH_FIELDS:
        if not _given(fields, name):
            continue
        value = fields[name]
        if name == "interface" and isinstance(value, str):
            value = value.upper()
        elif name == "proto" and isinstance(value, str):
            value = value.lower()
        elif name in ("sport", "dport"):
            value = form_value(value)
            if isinstance(value, str):
                value = value.strip()
        out[name] = value
    return out


def legacy_counter_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The counter body of a ``config sketch counter`` message."""
    body: dict[str, Any] = {"key": fields.get("counter_key_type"),
                            "increment": fields["increment"] if _given(fields, "increment")
                            else "pkt"}
    for name in ("threshold", "threshold_abs", "top_k"):
        if _given(fields, name):
            body[name] = form_value(fields[name])
    window = {}
    if _given(fields, "window_length"):
        window["length"] = form_value(fields["window_length"])
    if _given(fields, "window_mode"):
        window["mode"] = fields["window_mode"]
    if window:
        body["window"] = window
    return body
