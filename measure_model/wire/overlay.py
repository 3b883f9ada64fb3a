"""Overlay messages between agents and to the controller, checked completely.

The shapes are in docs/design.md ('Overlay messages'): the overlay
assignment's peers (``parse_peer``), a task forwarded down the tree with its
reserved ``_overlay`` hints (``check_task``, ``check_hints``) and a subtree
report sent up (``validate_report``, also used by the controller's
``ryu_app.service.results``). Everything is validated before any state changes;
errors are ``ValueError`` naming the field. No I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from measure_model.answers import MAX_HOST_ANSWER
from measure_model.cost import check_cost
from measure_model.fields import HOST_PATTERN, is_count, is_number
from measure_model.task import KINDS, Task
from measure_model.wire.report import check_snapshot
from measure_model.wire.snapshot import Report

OVERLAY_KEY = "_overlay"
URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]{1,253}(:[0-9]{1,5})?(/[\x21-\x7e]*)?")


@dataclass(frozen=True)
class Peer:
    name: str
    url: str


def parse_peer(value: Any, where: str) -> Peer:
    if not isinstance(value, dict) or set(value) - {"name", "url"}:
        raise ValueError(f"overlay: {where} must be an object with name and url")
    name, url = value.get("name"), value.get("url")
    if not isinstance(name, str) or not HOST_RE.fullmatch(name):
        raise ValueError(f"overlay: {where} field 'name' must be an agent name")
    if not isinstance(url, str) or not is_url(url):
        raise ValueError(f"overlay: {where} field 'url' must be an http(s) URL")
    return Peer(name, url.rstrip("/"))


def is_url(url: Any) -> bool:
    return (isinstance(url, str) and URL_RE.fullmatch(url) is not None)


def check_hints(hints: Any) -> dict | None:
    """The reserved ``_overlay`` field: ``{"budget": seconds, "agents": n}``."""
    if hints is None:
        return None
    if not isinstance(hints, dict) or set(hints) - {"budget", "agents"}:
        raise ValueError(f"task: field '{OVERLAY_KEY}' must be an object with budget, agents")
    b = hints.get("budget", 1.0)
    if isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b <= 60:
        raise ValueError(f"task: field '{OVERLAY_KEY}.budget' must be a number from 0 to 60")
    n = hints.get("agents", 1)
    if not is_count(n) or not 1 <= n <= MAX_AGENTS:
        raise ValueError(f"task: field '{OVERLAY_KEY}.agents' must be an integer "
                         f"from 1 to {MAX_AGENTS}")
    return hints


def check_task(task_id: Any, body: Any) -> tuple[Task, dict | None]:
    """Parse a forwarded task once, before anything is stored: (Task, hints).

    The body is ``Task.to_dict()`` plus the reserved ``_overlay`` hints; the
    task is read with ``Task.from_dict`` (the task table) and travels parsed
    from here on.
    """
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise ValueError(f"task: id must match {TASK_ID_PATTERN}")
    if not isinstance(body, dict):
        raise ValueError("task: body must be a JSON object")
    wire = dict(body)
    hints = check_hints(wire.pop(OVERLAY_KEY, None))
    task = Task.from_dict(wire, f"PUT /agent/v1/tasks/{task_id}")  # PolicyError: ValueError
    if not task.measures:
        raise ValueError("task: bandwidth tasks are run by the controller, not the overlay")
    return task, hints


TASK_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"  # controller ids and legacy-S-C
TASK_ID_RE = re.compile(TASK_ID_PATTERN)
HOST_RE = re.compile(HOST_PATTERN)
MAX_AGENTS = 100_000
MAX_TIME = 1e13  # seconds since 1970: far future, still a plain float
REPORT_FIELDS = ("task_id", "epoch", "from", "interval_end", "generated_at", "height", "kind",
                 "scan_ports", "snapshot", "covered", "missing", "oldest", "per_host", "errors",
                 "carried", "covered_count", "missing_count")
#: names a root report lists at most per list (``bound_report``): the rest is a count
MAX_LISTED = 20
SUMMARY_FIELDS = ("packets", "bytes", "total", "heavy_hitters", "top_k", "distinct", "scan",
                  "missed", "generated_at", "monitor", "answer")


def is_time(v: Any) -> bool:
    """A number from 0 to MAX_TIME (see ``fields.is_number``)."""
    return is_number(v, 0, MAX_TIME)


def _hosts(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_AGENTS or not all(
            isinstance(h, str) and HOST_RE.fullmatch(h) for h in value):
        raise ValueError(f"{where} must be a list of agent names")
    return value


def _summary(name: Any, value: Any) -> None:
    where = f"report: per_host '{name}'"
    if not (isinstance(name, str) and HOST_RE.fullmatch(name)):
        raise ValueError("report: field 'per_host' must map agent names to summaries")
    if not isinstance(value, dict) or set(value) - set(SUMMARY_FIELDS):
        raise ValueError(f"{where} must be an object with fields {', '.join(SUMMARY_FIELDS)}")
    for key in ("packets", "bytes", "total"):
        if key in value and not is_count(value[key]):
            raise ValueError(f"{where}: '{key}' must be a non-negative integer")
    for key in ("heavy_hitters", "scan"):
        m = value.get(key, {})
        if not isinstance(m, dict) or not all(isinstance(k, str) and is_count(v)
                                              for k, v in m.items()):
            raise ValueError(f"{where}: '{key}' must map keys to counts")
    top = value.get("top_k", [])
    if not isinstance(top, list) or not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and is_count(x[1])
            for x in top):
        raise ValueError(f"{where}: 'top_k' must be a list of [key, count]")
    missed = value.get("missed", {})
    if not isinstance(missed, dict | None) or not all(is_count(v)
                                                      for v in (missed or {}).values()):
        raise ValueError(f"{where}: 'missed' must map names to counts")
    if value.get("distinct") is not None and not is_count(value["distinct"]):
        raise ValueError(f"{where}: 'distinct' must be a non-negative integer")
    if "generated_at" in value and not is_time(value["generated_at"]):
        raise ValueError(f"{where}: 'generated_at' must be a time")
    if "monitor" in value:
        check_cost(value["monitor"], f"{where}: 'monitor'")
    answer = value.get("answer", {})
    if not isinstance(answer, dict) or len(json.dumps(answer)) > MAX_HOST_ANSWER:
        raise ValueError(f"{where}: 'answer' must be an object of at most "
                         f"{MAX_HOST_ANSWER} bytes of JSON")


def validate_report(body: Any, check: Callable[[Any], Any] | None = None) -> Report:
    """Check an overlay report completely before anything is stored.

    Used on receipt by parents (``receive_report``) and by the controller
    (``ryu_app.service.results``); the snapshot is checked with
    ``measure_model.wire.report.check_snapshot``. Errors name the field.
    """
    if not isinstance(body, dict):
        raise ValueError("report: body must be a JSON object")
    unknown = sorted(set(body) - set(REPORT_FIELDS))
    if unknown:
        raise ValueError(f"report: unknown field '{unknown[0]}'")
    if not isinstance(body.get("task_id"), str) or not TASK_ID_RE.fullmatch(body["task_id"]):
        raise ValueError("report: field 'task_id' must be a task id")
    if "from" in body and not (isinstance(body["from"], str) and HOST_RE.fullmatch(body["from"])):
        raise ValueError("report: field 'from' must be an agent name")
    if not is_time(body.get("interval_end")):
        raise ValueError(f"report: field 'interval_end' must be a time from 0 to {MAX_TIME:g}")
    for name in ("generated_at", "oldest"):
        if body.get(name) is not None and not is_time(body[name]):
            raise ValueError(f"report: field '{name}' must be a time from 0 to {MAX_TIME:g}")
    for name, hi in (("epoch", 2 ** 53), ("height", 64), ("scan_ports", 65535)):
        v = body.get(name)
        if v is not None and not (is_count(v) and v <= hi):
            raise ValueError(f"report: field '{name}' must be an integer from 0 to {hi}")
    if body.get("kind") is not None and body["kind"] not in KINDS:
        raise ValueError(f"report: field 'kind' must be one of {', '.join(KINDS)}")
    _hosts(body.get("covered"), "report: field 'covered'")
    _hosts(body.get("missing"), "report: field 'missing'")
    for name, listed in (("covered_count", "covered"), ("missing_count", "missing")):
        if name in body and not (is_count(body[name]) and len(body[listed]) <= body[name]
                                 <= MAX_AGENTS):
            raise ValueError(f"report: field '{name}' must be an integer from the length "
                             f"of '{listed}' to {MAX_AGENTS}")
    if "snapshot" not in body:
        raise ValueError("report: field 'snapshot' is required (null: no data in this subtree)")
    snap = body["snapshot"]
    if snap is not None:
        if not isinstance(snap, dict) or not snap:
            raise ValueError("report: field 'snapshot' must be a counter snapshot, or null "
                             "when nothing in the subtree measures the task")
        if snap.get("missed", {}) is None:
            snap["missed"] = {}  # an agent without capture rules knows of no misses
        (check or check_snapshot)(snap)  # ValueError "snapshot: ..."
    per_host = body.get("per_host", {})
    if not isinstance(per_host, dict) or len(per_host) > MAX_AGENTS:
        raise ValueError("report: field 'per_host' must map agent names to summaries")
    for name, summary in per_host.items():
        _summary(name, summary)
    errors = body.get("errors", {})
    if not isinstance(errors, dict) or not all(
            isinstance(k, str) and HOST_RE.fullmatch(k) and isinstance(v, str)
            for k, v in errors.items()):
        raise ValueError("report: field 'errors' must map agent names to messages")
    carried = body.get("carried", {})
    if not isinstance(carried, dict) or len(carried) > MAX_AGENTS or not all(
            isinstance(k, str) and HOST_RE.fullmatch(k) and is_number(v, 0, 1e13)
            for k, v in carried.items()):
        raise ValueError("report: field 'carried' must map agent names to the interval end "
                         "of the state carried for them")
    return cast(Report, body)  # checked field by field above


def bound_report(report: dict, cap: int = MAX_LISTED) -> dict:
    """The form of a subtree report the root sends to the controller: its size is
    bounded by the task's state, not by the number of agents. ``covered`` and
    ``missing`` (in the report and in its snapshot) list their first ``cap`` names
    and ``covered_count`` / ``missing_count`` give the exact numbers; ``per_host``
    holds the sender's own line only; ``errors`` and ``carried`` keep ``cap``
    entries. Per-host detail stays in the tree (``?host=`` asks the agent)."""
    out = dict(report)
    covered, missing = list(report["covered"]), list(report["missing"])
    out.update(covered=covered[:cap], missing=missing[:cap], covered_count=len(covered),
               missing_count=len(missing))
    sender = report.get("from")
    out["per_host"] = {h: v for h, v in (report.get("per_host") or {}).items() if h == sender}
    for name in ("errors", "carried"):
        if name in report:
            out[name] = dict(sorted(report[name].items())[:cap])
    if isinstance(report.get("snapshot"), dict):
        snap = dict(report["snapshot"])
        for name in ("covered", "missing"):
            if isinstance(snap.get(name), list):
                snap[name] = snap[name][:cap]
        out["snapshot"] = snap
    return out


def check_host_lines(body: Any, host: str) -> list[dict]:
    """An agent's answer to ``GET /agent/v1/tasks/{id}/hosts/{name}``: ``{"results":
    [per-host line with its interval_end, ...]}``, each line checked like a report's
    ``per_host`` line."""
    lines = body.get("results") if isinstance(body, dict) else None
    if not isinstance(lines, list) or len(lines) > 1000:
        raise ValueError("host lines: field 'results' must be a list")
    for line in lines:
        if not isinstance(line, dict) or not is_time(line.get("interval_end")):
            raise ValueError("host lines: each result must have an 'interval_end' time")
        _summary(host, {k: v for k, v in line.items() if k != "interval_end"})
    return lines


#: an agent's version (registration and heartbeats)
VERSION_RE = re.compile(r"\d{1,4}\.\d{1,4}(?:\.\d{1,4})?(?:[.+-][0-9A-Za-z.+-]{1,40})?")


def check_beat_agents(value: Any, where: str) -> dict[str, dict]:
    """The ``{agent: {"version", "monitor"?}}`` map of an aggregated heartbeat."""
    if not isinstance(value, dict) or len(value) > MAX_AGENTS:
        raise ValueError(f"{where} must map at most {MAX_AGENTS} agent names to "
                         f"{{version, monitor}}")
    for name, entry in value.items():
        if not isinstance(name, str) or not HOST_RE.fullmatch(name):
            raise ValueError(f"{where}: '{str(name)[:64]}' is not an agent name")
        if not isinstance(entry, dict) or set(entry) - {"version", "monitor"}:
            raise ValueError(f"{where}.{name} must be an object of 'version' and 'monitor'")
        if not isinstance(entry.get("version"), str) or not VERSION_RE.fullmatch(
                entry["version"]):
            raise ValueError(f"{where}.{name}: field 'version' must be a version like 0.2.0")
        if "monitor" in entry:
            check_cost(entry["monitor"], f"{where}.{name}: field 'monitor'")
    return value


def check_beats(body: Any) -> dict:
    """A heartbeat a child sends its parent (``POST /agent/v1/heartbeats``):
    ``{"from": name, "agents": {name: {"version", "monitor"?}}}``, the sender among them."""
    if not isinstance(body, dict):
        raise ValueError("heartbeat: body must be a JSON object")
    for key in body:
        if key not in ("from", "agents"):
            raise ValueError(f"heartbeat: unknown field '{str(key)[:64]}'")
    sender = body.get("from")
    if not isinstance(sender, str) or not HOST_RE.fullmatch(sender):
        raise ValueError("heartbeat: field 'from' must be an agent name")
    agents = check_beat_agents(body.get("agents"), "heartbeat: field 'agents'")
    if sender not in agents:
        raise ValueError("heartbeat: field 'agents' must list the sender")
    return body
