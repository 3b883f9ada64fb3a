"""Results at the controller: latest and historical task results, and events.

The overlay root posts one merged report per task per report interval
(``POST /measure/v1/reports``, built by ``host_agent.overlay.node``).
``Results.ingest`` turns it into:

- a **global result** (host ``'*'``): totals, heavy hitters, top-k,
  distinct estimate, scan sources, and coverage (``covered``, ``missing``,
  ``complete``, ``oldest`` data time; ``age`` is computed when read).
  ``missing`` is every agent ever seen in this task's reports that the
  report does not cover: an agent the controller dropped from the tree
  (dead) stays missing until it is back (``forget_agent`` for good);
- the root's own **per-host result** (a report carries the sender's line
  only, in one store row, host ``'+hosts'``); the other agents' lines stay in
  the tree and ``?host=`` asks for them (``host_results`` turns the answer
  into results). A bounded report (``covered_count`` / ``missing_count``
  beyond its listed names, ``measure_model.wire.overlay.bound_report``) keeps
  the counts exact and the lists capped;
- **events** with increasing ids, for ``GET /measure/v1/events?since=``:
  ``heavy_hitter`` when a key becomes a global heavy hitter that was not one
  in the task's previous result, ``port_scan`` when a source reaches
  ``scan_ports`` distinct destination ports in the window (default 20) and
  was below that before, and ``coverage`` when the set of missing agents
  changes; for a ``path_health`` task, ``link_suspect`` and ``link_cleared``
  from the ``localize`` hook, which also adds the result's ``links``.

A path_health or tcp_health report answers from its ``paths`` / ``tcp`` section
(``measure_model.wire.paths.health_result``): ``pairs`` and ``probe_cost``, or
``tcp`` (top flows and host pairs by retransmissions); each per-host result
holds that host's rows of the merged answer.

Raw sketch cells, HLL registers and candidates are dropped and window
counts cut to the largest 100 before storing: results are for reading, and
a 16384 x 4 sketch would make every history row half a megabyte. The
latest result of every (task, host) is also kept in memory.

Storage is the controller's SQLite store (``ryu_app/service/store.py``); this module
needs only four methods of it::

    store.add_result(task_id, host, ts, payload: dict) -> None   # bounded
    store.results(task_id, host=None, limit=N) -> [payload, ...] # newest first
    store.add_event(ts, task_id, kind, payload: dict) -> int     # new id
    store.events(since: int, limit=N) -> [{"id", "ts", "task_id", "kind", **payload}]

``MemoryStore`` implements them in memory (for tests and for running
without SQLite).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from measure_model import answers, interval
from measure_model.task import DEFAULT_SCAN_PORTS, ELASTIC_KINDS
from measure_model.wire import paths
from measure_model.wire.overlay import MAX_LISTED, check_host_lines
from measure_model.wire.overlay import validate_report as check_report
from measure_model.wire.snapshot import Report

GLOBAL = "*"
STATE = "+state"  # the store row holding one interval's merged elastic state
MAX_EVENTS_PER_REPORT = 100
WINDOW_KEYS = 100
HOSTS = "+hosts"  # the store row holding one interval's per-host results
EPISODE_END = 2  # intervals below the threshold that end a key's heavy episode
COVERAGE_AFTER = 2  # reports in a row without an agent before it counts as missing


class MemoryStore:
    """The store methods ``Results`` uses, in memory with bounded history."""

    def __init__(self, history: int = 100, max_events: int = 10000) -> None:
        self._results: dict[tuple[str, str], deque] = defaultdict(lambda: deque(maxlen=history))
        self._events: deque = deque(maxlen=max_events)
        self._ids = itertools.count(1)

    def add_result(self, task_id: str, host: str, ts: float, payload: dict) -> None:
        self._results[(task_id, host)].appendleft(payload)

    def results(self, task_id: str, host: str | None = None, limit: int = 100) -> list[dict]:
        return list(itertools.islice(self._results.get((task_id, host or GLOBAL), ()), limit))

    def add_event(self, ts: float, task_id: str, kind: str, payload: dict) -> int:
        event_id = next(self._ids)
        self._events.append({"id": event_id, "ts": ts, "task_id": task_id, "kind": kind,
                             **payload})
        return event_id

    def events(self, since: int = 0, limit: int = 1000) -> list[dict]:
        return [e for e in self._events if e["id"] > since][:limit]


def validate_report(report: Any) -> Report:
    """The full check of ``measure_model.wire.overlay.validate_report`` (envelope, names,
    times, per-host summaries, and the snapshot with ``report.check_snapshot``)."""
    return check_report(report)


def _top_counts(window: Any) -> Any:
    """A window with at most ``WINDOW_KEYS`` of its largest counts."""
    if not isinstance(window, dict) or not isinstance(window.get("counts"), dict):
        return window
    counts = window["counts"]
    out = dict(window)
    if len(counts) > WINDOW_KEYS:
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:WINDOW_KEYS]
        out.update(counts=dict(top), truncated=True)
    if isinstance(window.get("previous"), dict):
        out["previous"] = _top_counts(window["previous"])
    return out


def _strip(snapshot: dict) -> dict:
    """The readable part of a snapshot: no sketch cells, elastic state, HLL registers or
    candidates."""
    out = {k: v for k, v in snapshot.items()
           if k not in ("sketch", "covered", "missing", "candidates", "elastic", "spread",
                        "paths", "probes", "tcp", "interval")}
    if isinstance(out.get("distinct"), dict):
        out["distinct"] = {k: v for k, v in out["distinct"].items() if k != "hll"}
    if isinstance(out.get("flow_times"), dict):  # kept for the listed flows only
        listed = {kv[0] for kv in out.get("top_k") or []}
        out["flow_times"] = {k: v for k, v in out["flow_times"].items() if k in listed}
    if "window" in out:
        out["window"] = _top_counts(out["window"])
    if isinstance(snapshot.get("sketch"), dict):
        out["sketch"] = {k: v for k, v in snapshot["sketch"].items() if k != "cells"}
    return out


def scanners(snapshot: dict, scan_ports: int) -> dict[str, int]:
    """Sources with at least ``scan_ports`` distinct ports in the window."""
    out = {}
    for src, info in (snapshot.get("scan") or {}).items():
        ports = info.get("ports", []) if isinstance(info, dict) else []
        if len(ports) >= scan_ports:
            out[src] = len(ports)
    return out


class Results:
    """Latest, history and events of task results (see module docstring)."""

    def __init__(self, store: Any, history: int = 100) -> None:
        self.store = store
        self.history_limit = history
        self._latest: dict[tuple[str, str], dict] = {}
        self._known: dict[str, set[str]] = {}
        self._states: dict[str, deque] = {}  # task -> its last two merged elastic states
        # task -> key -> intervals it has been below the threshold in its heavy episode
        self._episodes: dict[str, dict[str, int]] = {}
        # task -> agent -> consecutive reports it was missing from (coverage debounce)
        self._absent: dict[str, dict[str, int]] = {}
        self._episode: dict[str, dict] = {}  # task -> its open coverage episode
        self._health: dict[str, dict] = {}  # health task -> its last merged snapshot
        self._lock = threading.Lock()
        #: ``(task_id, global result) -> (fields to add, [(event kind, payload)])`` for
        #: ``path_health`` results (``ryu_app.service.pathhealth.PathHealth.localize``)
        self.localize: Any = None
        # why an agent is missing ("late", "unreachable", "crashed"); the service knows
        self.reason_of: Callable[[str], str] = lambda _name: "late"

    def ingest(self, body: Any, now: float | None = None,
               expected: set[str] | None = None, placed: set[str] | None = None,
               registered: set[str] | None = None) -> list[int]:
        """Record one root report; returns the ids of the events it raised. ``expected``:
        the agents of the task's scope (None: every agent seen is expected). For a
        bounded report, which names only its first agents: ``placed`` (the agents of
        the current overlay tree) and ``registered`` (every agent known, the expected
        ones of a global task) say which expected agents are outside the tree, so
        missing."""
        report = validate_report(body)
        now = time.time() if now is None else now
        task_id = report["task_id"]
        snap: dict[str, Any] = dict(report["snapshot"] or {})  # null: nothing measures it
        covered = sorted(set(report["covered"]))
        n_covered = report.get("covered_count", len(covered))
        n_missing = report.get("missing_count", len(report["missing"]))
        bounded = n_covered > len(covered) or n_missing > len(report["missing"])
        with self._lock:
            known = self._known.get(task_id)
            if known is None:  # first report since start: what the store last said
                rows = self.store.results(task_id, GLOBAL, limit=1)
                known = set(rows[0]["covered"]) | set(rows[0]["missing"]) if rows else set()
                self._known[task_id] = known
                if rows:  # and the result new events are compared with (after a restart)
                    self._latest.setdefault((task_id, GLOBAL), rows[0])
            if bounded:  # the lists are cut: the expected agents outside the tree
                named = set(covered) | set(report["missing"])
                universe = expected if expected is not None else registered
                outside = set() if universe is None or placed is None else (
                    universe - placed - named)
                missing = sorted(set(report["missing"]) | outside)[:MAX_LISTED]
                n_missing += len(outside)
            else:
                known.update(covered, report["missing"])
                # an agent dropped from the tree (dead, being re-parented) is still
                # missing; an agent out of the task's scope is never expected
                if expected is not None:
                    known.intersection_update(expected | set(covered))
                missing = sorted(known - set(covered))
                n_missing = len(missing)
        oldest = report.get("oldest")
        result = {
            "task_id": task_id, "host": GLOBAL, "interval_end": report["interval_end"],
            "received_at": now, "generated_at": report.get("generated_at", now),
            "oldest": oldest, "covered": covered, "missing": missing,
            "covered_count": n_covered, "missing_count": n_missing,
            "complete": not n_missing, "epoch": report.get("epoch"),
            "kind": report.get("kind"), **_strip(snap),
        }
        section = snap.get("interval")
        if section is not None:
            top_k = int((snap.get("limits") or {}).get("top_k", 10))
            # heavy_hitters stays the cumulative answer (since the task started); what is
            # heavy now, and raises events, is judged on the interval
            result["rate"] = interval.rate(section, top_k)
            result["rate"]["heavy_hitters"] = interval.heavy(
                section, snap.get("threshold") or {}, top_k)
        scan_ports = report.get("scan_ports") or DEFAULT_SCAN_PORTS
        result["scanners"] = scanners(snap, scan_ports)
        if snap.get("elastic") is not None:
            result.update(self._answers(task_id, report, snap, now))
        health = paths.is_health(snap)  # path_health / tcp_health: pairs, probe cost, tcp
        if health:
            result.update(paths.health_result(snap))
            with self._lock:
                self._health[task_id] = snap  # for the per-host rows of ?host=
        link_events: list[tuple[str, dict]] = []
        if self.localize is not None and result.get("kind") == "path_health":
            extra, link_events = self.localize(task_id, result)
            result.update(extra)
        per_host = {}
        for host, summary in sorted(report.get("per_host", {}).items()):
            per_host[host] = {"task_id": task_id, "host": host,
                              "interval_end": report["interval_end"], "received_at": now,
                              "oldest": summary.get("generated_at"), **summary}
            if health:  # the host's own rows of the merged answer
                per_host[host].update(paths.health_result(snap, host))
        with self._lock:
            previous = self._latest.get((task_id, GLOBAL))
            self._latest[(task_id, GLOBAL)] = result
            for host, res in per_host.items():
                self._latest[(task_id, host)] = res
        self.store.add_result(task_id, GLOBAL, now, result)
        if per_host:  # one row for all hosts: two writes per report whatever N is
            self.store.add_result(task_id, HOSTS, now, per_host)
        ids = self._events(task_id, previous, result, now)
        for kind, payload in link_events[:MAX_EVENTS_PER_REPORT]:
            ids.append(self.store.add_event(now, task_id, kind, {
                "interval_end": result["interval_end"], **payload}))
        return ids

    def _answers(self, task_id: str, report: Report, snap: dict, now: float) -> dict:
        """The elastic kind's answer (measure_model.answers); the merged state is kept in
        memory for the next interval's changes and in the store for questions about the
        past (``past``). A difference of two merged states is taken only between states
        of the same agents: one that covers fewer agents would make counts negative, so
        the answers then say ``coverage_changed`` and start again from this state."""
        covered = sorted(report["covered"])
        if report.get("covered_count", len(covered)) > len(covered):  # a bounded report:
            # the same agents = the same count and the same (listed) missing ones
            covered += [f"+{report['covered_count']}", *report["missing"]]
        with self._lock:
            earlier = self._states.get(task_id)
        if earlier is None:
            rows = self.store.results(task_id, STATE, limit=2)
            earlier = deque(((r.get("covered"), answers.state_of(r)) for r in reversed(rows)),
                            maxlen=2)
        same = [es for cov, es in earlier if cov is None or cov == covered]
        if len(same) < len(earlier):
            same = [es for cov, es in list(earlier)[-1:] if cov is None or cov == covered]
        out = answers.answer(report.get("kind") or "", snap, same)
        if len(same) < len(earlier):
            out["coverage_changed"] = True
        earlier.append((covered, answers.state_of(snap)))
        with self._lock:
            self._states[task_id] = earlier
        row = {"interval_end": report["interval_end"], "kind": report.get("kind"),
               "key": snap["key"], "increment": snap["increment"], "total": snap["total"],
               "threshold": snap.get("threshold", {}), "elastic": snap["elastic"],
               "covered": covered}
        if snap.get("spread") is not None:
            row["spread"] = snap["spread"]
        self.store.add_result(task_id, STATE, now, row)
        return out

    def past(self, task_id: str, interval_end: float | None = None, key: str | None = None,
             since: float | None = None, limit: int = 100) -> dict | None:
        """Ask a kept interval (the newest with ``interval_end`` <= the given one; the
        newest if None): one key's size or the task's answer at that time, and the change
        from the interval before it, or from the kept interval at ``since`` (any two
        intervals). None when nothing is kept there."""
        rows = self.store.results(task_id, STATE, limit=max(2, min(limit, self.history_limit)))

        def at(end: float | None) -> int | None:
            return next((n for n, r in enumerate(rows)
                         if end is None or r["interval_end"] <= end), None)

        i = at(interval_end)
        j = at(since) if since is not None else (i + 1 if i is not None else None)
        if i is None or (since is not None and j is None):
            return None
        row = rows[i]
        earlier = [answers.state_of(r) for r in reversed(rows[i + 1:i + 3])]
        base = answers.state_of(rows[j]) if j is not None and j < len(rows) and j > i \
            else None
        es = answers.state_of(row)
        out: dict[str, Any] = {"task_id": task_id, "interval_end": row["interval_end"],
                               "kind": row.get("kind")}
        if key is not None:
            out["size"] = answers.size_of(es, key)
            if base is not None:
                before = answers.size_of(base, key)
                out["size"].update(previous=before["size"], since=rows[j]["interval_end"],
                                   in_interval=out["size"]["size"] - before["size"])
            return out
        if since is not None and base is not None:
            earlier = [base]  # the kind's answer (e.g. heavy_changers) against that interval
        out.update(answers.answer(row.get("kind") or "", row, earlier))
        return out

    def _events(self, task_id: str, prev: dict | None, cur: dict, now: float) -> list[int]:
        """Crossings since the task's previous result become events."""
        ids: list[int] = []
        base = {"interval_end": cur["interval_end"]}
        for change in (cur.get("heavy_changers") or [])[:MAX_EVENTS_PER_REPORT]:
            ids.append(self.store.add_event(now, task_id, "heavy_changer",
                                            {**base, **change}))
        for kind, event in (("superspreaders", "superspreader"),
                            ("ddos_victims", "ddos_victim")):
            before = {e["key"] for e in (prev or {}).get(kind) or []}
            for item in (cur.get(kind) or [])[:MAX_EVENTS_PER_REPORT]:
                if item["key"] not in before:
                    ids.append(self.store.add_event(now, task_id, event, {**base, **item}))
        # an elastic task (flow_size, ...), a flows or a port_scan task answers other
        # questions: its heavy_hitters (largest flows, keys over a change threshold, or a
        # scan's single connection attempts, each a large share of an interval holding
        # only the scan's tail) raise no events (reaction_rows.EVENT_KINDS says the same)
        quiet = cur.get("kind") in ELASTIC_KINDS or cur.get("kind") in ("flows", "port_scan")
        if cur.get("rate") is not None:  # judged on the interval: once per episode
            hh = {} if quiet else cur["rate"]["heavy_hitters"]
            was_heavy = ((prev or {}).get("rate") or {}).get("heavy_hitters") or {}
            new = self._episodes_started(task_id, hh, cur["complete"], was_heavy)
        else:  # an agent that sends no interval figures: the cumulative answer
            hh = {} if quiet else cur.get("heavy_hitters") or {}
            prev_hh = set((prev or {}).get("heavy_hitters") or {})
            new = [k for k in hh if k not in prev_hh]
        new = sorted(new, key=lambda k: (-hh[k], k))
        keys = (cur.get("rate") or {}).get("keys") or {}
        for key in new[:MAX_EVENTS_PER_REPORT]:
            extra = {n: keys[key][n] for n in ("pps", "bps") if key in keys}
            ids.append(self.store.add_event(now, task_id, "heavy_hitter",
                                            {**base, "key": key, "value": hh[key], **extra}))
        prev_scan = set((prev or {}).get("scanners") or {})
        for src, ports in sorted(cur["scanners"].items()):
            if src not in prev_scan:
                info = (cur.get("scan") or {}).get(src, {})
                ids.append(self.store.add_event(now, task_id, "port_scan", {
                    **base, "src": src, "ports": ports,
                    "dsts": list(info.get("dsts", []))[:20]}))
        ids.extend(self._coverage(task_id, cur, now, base))
        return ids

    def _episodes_started(self, task_id: str, heavy: dict[str, int], complete: bool,
                          before: dict[str, int]) -> list[str]:
        """Keys whose heavy episode starts with this interval. An episode ends after
        ``EPISODE_END`` intervals below the threshold; an incomplete interval (an agent
        missing) neither starts the count nor ends an episode. After a restart the
        episodes go on from the stored result's heavy keys (``before``)."""
        with self._lock:
            episodes = self._episodes.setdefault(task_id, dict.fromkeys(before, 0))
            new = [k for k in heavy if k not in episodes]
            for key in list(episodes):
                if key in heavy:
                    episodes[key] = 0
                elif complete:
                    episodes[key] += 1
                    if episodes[key] >= EPISODE_END:
                        del episodes[key]
            for key in new:
                episodes[key] = 0
        return new

    def _coverage(self, task_id: str, cur: dict, now: float, base: dict) -> list[int]:
        """One ``coverage`` event when agents start missing (``state: start``, each with
        its reason) and one when every agent is back (``state: end``). Both ways take
        ``COVERAGE_AFTER`` reports in a row: an agent counts as missing after that many
        reports without it, and the episode ends after that many complete reports, so a
        late report or an agent catching up after a restart raises nothing more."""
        with self._lock:
            absent = self._absent.setdefault(task_id, {})
            for host in [h for h in absent if h not in cur["missing"]]:
                del absent[host]
            for host in cur["missing"]:
                absent[host] = absent.get(host, 0) + 1
            missing = sorted(h for h, n in absent.items() if n >= COVERAGE_AFTER)
            episode = self._episode.get(task_id)
            if episode is None and missing:
                self._episode[task_id] = {"hosts": set(missing), "clean": 0}
                start = True
            else:
                start = False
                if episode is not None:
                    episode["hosts"].update(missing)
                    episode["clean"] = 0 if cur["missing"] else episode["clean"] + 1
                    if episode["clean"] >= COVERAGE_AFTER:
                        del self._episode[task_id]
                    else:
                        episode = None
        covered = cur.get("covered_count", len(cur["covered"]))
        if start:
            reasons = {h: self.reason_of(h) for h in missing}
            return [self.store.add_event(now, task_id, "coverage", {
                **base, "state": "start", "covered": covered,
                "missing": missing, "missing_count": cur.get("missing_count", len(missing)),
                "reasons": reasons})]
        if episode is not None:
            return [self.store.add_event(now, task_id, "coverage", {
                **base, "state": "end", "covered": covered, "missing": [],
                "returned": sorted(episode["hosts"])})]
        return []

    def latest(self, task_id: str, host: str | None = None,
               now: float | None = None) -> dict | None:
        """The newest result of a task (``host`` None = global), with its age."""
        key = (task_id, host or GLOBAL)
        with self._lock:
            result = self._latest.get(key)
        if result is None:
            rows = self._rows(task_id, host, 1)
            if not rows:
                return None
            result = rows[0]
            with self._lock:
                self._latest[key] = result
        return self._aged(result, now)

    def host_results(self, task_id: str, host: str, lines: Any,
                     now: float | None = None) -> list[dict]:
        """Per-host results from the lines an agent (or its parent) answered for
        ``?host=`` (``check_host_lines``), newest first, with their age; a health
        task's also carry that host's rows of the last merged answer."""
        now = time.time() if now is None else now
        checked = check_host_lines(lines, host)
        with self._lock:
            snap = self._health.get(task_id)
        out = []
        for line in checked:
            res = {"task_id": task_id, "host": host, "interval_end": line["interval_end"],
                   "received_at": now, "oldest": line.get("generated_at"),
                   **{k: v for k, v in line.items() if k != "interval_end"}}
            if snap is not None:
                res.update(paths.health_result(snap, host))
            out.append(self._aged(res, now))
        return out

    def latest_state(self, task_id: str) -> Any:
        """The newest merged elastic state of a task (an ElasticSketch), None if none."""
        with self._lock:
            earlier = self._states.get(task_id)
        if earlier:
            return earlier[-1][1]  # (covered agents, state)
        rows = self.store.results(task_id, STATE, limit=1)
        return answers.state_of(rows[0]) if rows else None

    def _rows(self, task_id: str, host: str | None, limit: int) -> list[dict]:
        if host is None or host == GLOBAL:
            return self.store.results(task_id, GLOBAL, limit=limit)
        rows = self.store.results(task_id, HOSTS, limit=limit)
        return [row[host] for row in rows if host in row]

    def history(self, task_id: str, host: str | None = None, limit: int = 50,
                now: float | None = None) -> list[dict]:
        """Up to ``limit`` results, newest first."""
        limit = max(1, min(int(limit), self.history_limit))
        return [self._aged(r, now) for r in self._rows(task_id, host, limit)]

    def events(self, since: int = 0, limit: int = 1000) -> list[dict]:
        """Events with id greater than ``since``, oldest first."""
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError("events: 'since' must be a non-negative integer")
        return self.store.events(since, limit=limit)

    def forget(self, task_id: str) -> None:
        """Drop the in-memory latest results of a deleted task."""
        with self._lock:
            for key in [k for k in self._latest if k[0] == task_id]:
                del self._latest[key]
            self._known.pop(task_id, None)
            self._states.pop(task_id, None)
            self._episodes.pop(task_id, None)
            self._absent.pop(task_id, None)
            self._episode.pop(task_id, None)
            self._health.pop(task_id, None)

    def forget_agent(self, name: str) -> None:
        """An agent removed for good is no longer expected (not listed missing)."""
        with self._lock:
            for known in self._known.values():
                known.discard(name)

    @staticmethod
    def _aged(result: dict, now: float | None) -> dict:
        now = time.time() if now is None else now
        oldest = result.get("oldest")
        ref = oldest if isinstance(oldest, int | float) else result["interval_end"]
        return {**result, "age": round(max(0.0, now - float(ref)), 3)}
