"""The original per-host messages on ``POST /`` (form-encoded or JSON).

Semantics follow the original prototype's walk-through (README.md, "Agent API"):

    {"type": "config sketch", "interface": "INPUT", "proto": "icmp"}
        -> the new sketch id as plain text ("1")
    {"type": "config sketch counter", "sketch_id": 1, "counter_key_type": "src",
     "increment": "pkt"}
        -> 200, the counter id as plain text (configuring the same key type
           and increment again is a no-op; a different increment is a 409)
    {"type": "query heavy hitters", "sketch_id": 1, "counter_key_type": "src"}
        -> JSON object key -> count (keys at >= 5% of the total unless the
           counter was configured with ``threshold``/``threshold_abs``)
    {"type": "query sketch", "sketch_id": 1, "counter_key_type": "src",
     "counter_key": "10.0.0.6"}
        -> the estimate as plain text; with counter_key "real_time_key_num"
           the number of distinct keys in the last window length ("the last
           second": see ``last_window_keys``)
    {"type": "query real time counter", "sketch_id": 1, "counter_key_type": "src_dport"}
        -> JSON object key -> count in the real-time window
    {"type": "query bw", "src": "10.0.0.5", "dst": "10.0.0.6"}
        -> MBytes/s as plain text (bandwidth.Prober.legacy_query_bw)

On the overlay root (the walk-through's h2), a new legacy counter is also
shared with the whole tree as a global task
(``OverlayNode.share_legacy_counter``) and the queries answer from the
merged subtree snapshot (``OverlayNode.legacy_global``: own counter + the
children's latest reports), so the original root usage gives global
answers. Elsewhere they answer from the local counter.

JSON objects of string keys and integer values are also valid Python
literals, so the original clients' ``ast.literal_eval(r.text)`` still works.
The fields are translated into the task model by
``host_agent.legacy.messages`` and checked by its table. Errors are 4xx with
``{"error": "..."}`` naming the field. Optional extra
fields: ``src``/``dst``/``sport``/``dport`` on ``config sketch`` and
``threshold``/``threshold_abs``/``top_k``/``window_length``/``window_mode``
on ``config sketch counter``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import webob

from host_agent.agent import Agent, parse_counter
from host_agent.bandwidth.estimate import Prober
from host_agent.errors import AgentError
from host_agent.legacy.messages import (
    COUNTER_FIELDS,
    SKETCH_FIELDS,
    legacy_counter_body,
    legacy_filter,
)
from host_agent.overlay.node import OverlayNode
from measure_common import jsonlimits

REAL_TIME_KEY_NUM = "real_time_key_num"
log = logging.getLogger("host_agent.legacy.handler")


def text(body: str, status: int = 200) -> webob.Response:
    return webob.Response(body, status=status, content_type="text/plain", charset="utf-8")


def as_json(obj: Any) -> webob.Response:
    return webob.Response(json.dumps(obj, sort_keys=True), content_type="application/json",
                          charset="utf-8")


def fields_of(req: webob.Request) -> dict[str, Any]:
    """The message fields: JSON object body, or form fields (last value wins)."""
    ctype = (req.content_type or "").lower()
    if ctype == "application/json" or (not ctype and req.body[:1] in (b"{", b"[")):
        try:
            body = jsonlimits.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AgentError(400, f"malformed JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise AgentError(400, "body must be a JSON object")
        return body
    try:
        return dict(req.POST.items())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AgentError(400, f"malformed form body: {exc}") from None


def need(fields: dict, name: str) -> Any:
    value = fields.get(name)
    if value in (None, ""):
        raise AgentError(400, f"missing field {name!r}")
    return value


def _only(fields: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(fields) - set(allowed) - {"type"})
    if unknown:
        raise AgentError(400, f"unknown field {unknown[0]!r}")


def config_sketch(ctx: LegacyContext, f: dict) -> webob.Response:
    agent = ctx.agent
    _only(f, SKETCH_FIELDS)
    return text(str(agent.create_sketch(legacy_filter(f)).id))


def config_counter(ctx: LegacyContext, f: dict) -> webob.Response:
    agent = ctx.agent
    _only(f, COUNTER_FIELDS)
    sketch = agent.get_sketch(need(f, "sketch_id"))
    key = need(f, "counter_key_type")
    try:
        task = parse_counter(legacy_counter_body(f), sketch.filter)
    except AgentError as exc:
        if exc.message.startswith("key "):
            raise AgentError(400, "counter_key_type" + exc.message[3:]) from None
        raise
    for cid, existing in sorted(sketch.counters.items()):
        if existing.task.key == key:
            if existing.task.increment == task.increment:
                return text(str(cid))
            raise AgentError(409, f"sketch {sketch.id} already has a counter_key_type "
                                  f"{key!r} counter with increment "
                                  f"{existing.task.increment!r}")
    # at the overlay root, the candidate divisor of the subtree's copies (they merge)
    divisor = ctx.overlay.legacy_divisor(task) if ctx.overlay is not None else 1
    cid = agent.add_task_counter(sketch.id, task, candidate_divisor=divisor)
    if ctx.overlay is not None:  # at the overlay root the whole tree counts too
        try:
            ctx.overlay.share_legacy_counter(sketch.id, cid)
        except Exception as exc:  # noqa: BLE001 - the local counter works regardless
            log.warning("sharing legacy counter %d/%d with the subtree failed: %s",
                        sketch.id, cid, exc)
    return text(str(cid))


def _counter(agent: Agent, f: dict, extra: tuple[str, ...] = ()) -> tuple[int, int]:
    _only(f, ("sketch_id", "counter_key_type", *extra))
    sketch, cid = agent.legacy_counter(need(f, "sketch_id"), need(f, "counter_key_type"))
    return sketch.id, cid


def _global(ctx: LegacyContext, sid: int, cid: int) -> dict | None:
    """The subtree-wide snapshot of a shared legacy counter (None: answer locally)."""
    if ctx.overlay is None:
        return None
    return ctx.overlay.legacy_global(sid, cid, ctx.agent.clock())


def query_heavy_hitters(ctx: LegacyContext, f: dict) -> webob.Response:
    agent = ctx.agent
    sid, cid = _counter(agent, f)
    snap = _global(ctx, sid, cid)
    if snap is not None:
        return as_json(snap["heavy_hitters"])
    return as_json(agent.query(sid, cid, "heavy_hitters"))


def query_sketch(ctx: LegacyContext, f: dict) -> webob.Response:
    agent = ctx.agent
    sid, cid = _counter(agent, f, ("counter_key",))
    key = need(f, "counter_key")
    if not isinstance(key, str):
        raise AgentError(400, f"counter_key must be a string, got {key!r}")
    snap = _global(ctx, sid, cid)
    if key == REAL_TIME_KEY_NUM:
        window = snap["window"] if snap is not None else agent.query(sid, cid, "window")
        return text(str(last_window_keys(window)))
    if snap is not None:
        from measure_model.wire.report import estimate

        agent.query(sid, cid, "estimate", key=key)  # validates the key (400 if malformed)
        return text(str(int(estimate(snap, key))))
    return text(str(int(agent.query(sid, cid, "estimate", key=key))))


def last_window_keys(window: dict) -> int:
    """Distinct keys of "the last second": a sliding window covers the last length
    seconds; a tumbling one gives the larger of the current window so far and the
    previous complete one, so a question asked up to one window length after a burst
    still counts the whole burst (the window may have rolled over in between)."""
    previous = window.get("previous") or {}
    return max(int(window["distinct"]), int(previous.get("distinct", 0)))


def query_real_time(ctx: LegacyContext, f: dict) -> webob.Response:
    agent = ctx.agent
    sid, cid = _counter(agent, f)
    snap = _global(ctx, sid, cid)
    window = snap["window"] if snap is not None else agent.query(sid, cid, "window")
    return as_json(window["counts"])


def query_bw(prober: Prober, f: dict) -> webob.Response:
    _only(f, ("src", "dst"))
    src, dst = need(f, "src"), need(f, "dst")
    try:
        return text(prober.legacy_query_bw(str(src), str(dst)))
    except AgentError as exc:
        raise AgentError(getattr(exc, "status", 400), str(exc)) from None


HANDLERS = {
    "config sketch": config_sketch,
    "config sketch counter": config_counter,
    "query heavy hitters": query_heavy_hitters,
    "query sketch": query_sketch,
    "query real time counter": query_real_time,
}
KINDS = (*HANDLERS, "query bw")


@dataclass(frozen=True)
class LegacyContext:
    """What the original messages act on: the agent, its overlay role (a
    counter made at the root is shared with the subtree, queries there answer
    for the tree) and its bandwidth prober (``query bw``)."""

    agent: Agent
    overlay: OverlayNode | None
    prober: Prober


def handle_legacy(ctx: LegacyContext, req: webob.Request) -> webob.Response:
    """Answer one legacy message (errors are raised as AgentError)."""
    fields = fields_of(req)
    kind = need(fields, "type")
    if kind == "query bw":
        return query_bw(ctx.prober, fields)
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise AgentError(400, f"unknown type {kind!r}; expected one of "
                              f"{', '.join(KINDS)}")
    return handler(ctx, fields)
