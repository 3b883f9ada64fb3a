"""Reactions: the ``on:`` entries of a task, their rows, defaults and bounds.

What a measurement event makes the controller do (``ryu_app/reactions/plan.py``
plans the OpenFlow side, ``ryu_app/reactions/actions.py`` runs it). An entry is
checked against ``REACTION_ROWS`` (through ``measure_model.fields``) and
then ``_reaction_rule`` (the fields each action takes, the required ones);
``measure_model.task`` ties an entry's event to the task's kind and key and
holds the task-level ``on`` and ``protect`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from measure_model.fields import (
    HOST_PATTERN,
    Choice,
    FieldError,
    Integer,
    Nested,
    Number,
    Pattern,
    Row,
    Url,
)

HOST = Pattern(HOST_PATTERN, "is not a host name or IPv4 address")


EVENTS = ("heavy_hitter", "port_scan", "threshold", "heavy_changer", "superspreader",
          "ddos_victim", "link_suspect")
#: the task kind whose results raise each event (checked once that kind exists)
EVENT_KINDS = {"heavy_hitter": "heavy_hitters", "port_scan": "port_scan",
               "heavy_changer": "heavy_changers", "superspreader": "superspreaders",
               "ddos_victim": "ddos_victims", "link_suspect": "path_health"}
ACTIONS = ("mirror", "block", "rate_limit", "mark", "notify", "avoid_link")
#: the actions a link event takes (a link is no flow to block or mark)
LINK_ACTIONS = ("avoid_link", "notify")
NETWORK_ACTIONS = ("mirror", "block", "rate_limit", "mark")
TIMED_ACTIONS = ("mirror", "block", "rate_limit", "avoid_link")  # duration is required
ACTION_MODES = ("enforce", "dry_run")
#: the fields each action takes besides event, action, duration, mode (and above)
ACTION_FIELDS = {"mirror": ("to",), "block": (), "rate_limit": ("mbit",),
                 "mark": ("dscp", "queue"), "notify": ("url",), "avoid_link": ()}
ADDRESS_KEYS = ("src", "dst", "src_dst", "src_dport", "dst_dport", "five_tuple")
MAX_REACTIONS = 8
MAX_ACTION_DURATION = 65535  # OpenFlow hard_timeout is 16 bits
DEFAULT_MARK_DURATION = 60
MAX_MBIT = 100_000.0
MAX_DSCP = 63
MAX_QUEUE = 2 ** 32 - 2
MAX_URL = 2048
MAX_ABOVE = 2 ** 62
MAX_PROTECT = 1000


@dataclass(frozen=True)
class Reaction:
    """One ``on:`` entry: when ``event`` fires, do ``action`` for ``duration`` seconds."""

    event: str
    action: str
    duration: int | None = None
    mode: str = "enforce"
    to: str | None = None
    mbit: float | None = None
    dscp: int | None = None
    queue: int | None = None
    url: str | None = None
    above: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


def _reaction_rule(name: str, out: dict[str, Any]) -> None:
    """Cross-field checks of one ``on:`` entry (fields per action, required ones)."""
    action, event = out["action"], out["event"]
    for field_name, value in out.items():
        if value is None or field_name in ("event", "action", "duration", "mode"):
            continue
        if field_name == "above" and event != "threshold":
            raise FieldError(f"field '{name}.above' does not apply to event {event}")
        if field_name != "above" and field_name not in ACTION_FIELDS[action]:
            raise FieldError(f"field '{name}.{field_name}' does not apply to action {action}")
    if action == "avoid_link" and event != "link_suspect":
        raise FieldError(f"field '{name}.action' avoid_link goes with event link_suspect only")
    if event == "link_suspect" and action not in LINK_ACTIONS:
        raise FieldError(f"field '{name}.action' {action} does not apply to event "
                         f"link_suspect (avoid_link or notify)")
    if event == "threshold" and out["above"] is None:
        raise FieldError(f"{name}.above is required for event threshold")
    if out["duration"] is None:
        if action in TIMED_ACTIONS:
            raise FieldError(f"{name}.duration is required for action {action}")
        if action == "mark":
            out["duration"] = DEFAULT_MARK_DURATION
    if action == "mark" and (out["dscp"] is None) == (out["queue"] is None):
        raise FieldError(f"{name}: action mark needs exactly one of dscp and queue")
    for needed in {"mirror": "to", "rate_limit": "mbit", "notify": "url"}.items():
        if action == needed[0] and out[needed[1]] is None:
            raise FieldError(f"{name}.{needed[1]} is required for action {action}")


REACTION_ROWS = (
    Row("event", Choice(EVENTS), required=True, doc="the event that triggers the action"),
    Row("action", Choice(ACTIONS), required=True,
        doc="what the controller does (avoid_link: route around the suspect link; only "
            "with event link_suspect, which takes avoid_link or notify)"),
    Row("duration", Integer(1, MAX_ACTION_DURATION),
        doc="seconds (OpenFlow hard timeout); required for mirror, block, rate_limit, "
            "avoid_link; "
            f"mark defaults to {DEFAULT_MARK_DURATION}"),
    Row("mode", Choice(ACTION_MODES), "enforce",
        doc="dry_run records what would be done and installs nothing"),
    Row("to", HOST, doc="mirror: the tap host (name or data address)"),
    Row("mbit", Number(0.0, MAX_MBIT, lo_open=True), doc="rate_limit: Mbit/s (a meter)"),
    Row("dscp", Integer(0, MAX_DSCP), doc="mark: DSCP value set on the packets"),
    Row("queue", Integer(0, MAX_QUEUE), doc="mark: output queue id"),
    Row("url", Url(MAX_URL), doc="notify: webhook URL (HMAC-signed POST of the event)"),
    Row("above", Integer(1, MAX_ABOVE), doc="threshold: a key's window count at or above"),
)


def _reaction_schema() -> dict[str, Any]:
    """``_reaction_rule`` as JSON schema: each action's own fields, ``above`` only and
    always with event threshold (``measure_model.task.ReactionsFitTheTask`` ties events to
    the task's kind and key)."""
    extra = ("to", "mbit", "dscp", "queue", "url")
    per_action = []
    for action, own in ACTION_FIELDS.items():
        required = [*(["duration"] if action in TIMED_ACTIONS else []),
                    *([] if action == "mark" else own)]
        schema: dict[str, Any] = {"properties": {"action": {"enum": [action]}},
                                  "not": {"anyOf": [{"required": [f]} for f in extra
                                                    if f not in own]}}
        if required:
            schema["required"] = required
        if action == "mark":
            schema["oneOf"] = [{"required": ["dscp"]}, {"required": ["queue"]}]
        per_action.append(schema)
    above = {"anyOf": [
        {"properties": {"event": {"enum": ["threshold"]}}, "required": ["above"]},
        {"properties": {"event": {"enum": [e for e in EVENTS if e != "threshold"]}},
         "not": {"required": ["above"]}}]}
    link = {"anyOf": [
        {"properties": {"event": {"enum": ["link_suspect"]},
                        "action": {"enum": list(LINK_ACTIONS)}}},
        {"properties": {"event": {"enum": [e for e in EVENTS if e != "link_suspect"]},
                        "action": {"enum": [a for a in ACTIONS if a != "avoid_link"]}}}]}
    return {"allOf": [{"anyOf": per_action}, above, link]}


@dataclass(frozen=True)
class ReactionRule:
    """The fields each action takes and needs (``ACTION_FIELDS``, ``TIMED_ACTIONS``):
    the check and its JSON schema, from the same tables."""

    def check(self, name: str, obj: dict[str, Any]) -> None:
        _reaction_rule(name, obj)

    def schema(self) -> dict[str, Any]:
        return _reaction_schema()


#: one ``on:`` entry: its rows, then the reaction rule
REACTION = Nested(REACTION_ROWS, Reaction, rules=(ReactionRule(),))
