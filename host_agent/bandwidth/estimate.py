"""Available-bandwidth estimation from this agent to another (SLoPS) and bulk throughput.

The source agent runs the probe (``Prober.probe``); the destination agent
only receives (:mod:`host_agent.bandwidth.receive`):

1. ``POST {dst}/agent/v1/bandwidth/receive`` opens a receive session on the
   destination and returns ``{"session", "port"}``.
2. The source sends a back-to-back packet train; the dispersion of its
   second half at the receiver estimates the path capacity (the first
   packets ride a token-bucket burst, so they are left out). That, with a
   margin, is the first upper bound of the search.
3. SLoPS: at a trial rate R the source sends a *fleet* of K periodic
   streams of N packets; the receiver's arrival times say whether R is
   above the available bandwidth, and a binary search with a grey region
   narrows the range (the numbers: :mod:`host_agent.bandwidth.slops`). The search
   stops when the range is narrow or when the next fleet would break a cap.
4. ``GET .../receive/{session}?streams=...`` returns the arrival data;
   ``DELETE`` closes the session (it also closes itself when its time is up).

``bulk`` instead pushes TCP data for a bounded time and reports the
receiver's byte rate, labelled *achievable throughput* (what the original
called "available bandwidth").

Caps are hard: every step is checked against the duration and byte budget
before it starts, HTTP calls (:mod:`host_agent.bandwidth.peer`) and worker replies
(:mod:`host_agent.bandwidth.worker`) have timeouts within the budget, and the result
reports what was used. The HTTP routes are :mod:`host_agent.bandwidth.api`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from host_agent.bandwidth.peer import PeerClient
from host_agent.bandwidth.slops import (
    MAX_RATE_MBIT,
    MIN_RATE_MBIT,
    SLOW_SENDER,
    RateSearch,
    fleet_verdict,
    relative_owds,
    sent_rate_mbit,
    stream_trend,
    train_capacity_mbit,
)
from host_agent.bandwidth.worker import Worker, WorkerError
from host_agent.errors import AgentError
from host_agent.keyring import KeyRing, check_credential
from measure_model.fields import FieldError, Integer, Number
from measure_model.task import BW_DEFAULT_BYTES, BW_DEFAULT_DURATION, field_value

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 5.0


# ---------------------------------------------------------------- parameters

@dataclass
class ProbeParams:
    """A validated ``POST /agent/v1/bandwidth`` body."""

    dst_ip: str
    dst_url: str
    method: str = "slops"
    max_duration: float = BW_DEFAULT_DURATION
    max_bytes: int = BW_DEFAULT_BYTES
    max_rate_mbit: float = MAX_RATE_MBIT
    packet_size: int = 1000
    streams: int = 6
    packets: int = 80
    #: the destination agent's name and the controller's credential for it (signed calls)
    dst_name: str | None = None
    dst_key: dict[str, str] | None = None


_FIELDS = {"dst_ip", "dst_url", "method", "max_duration", "max_bytes", "max_rate_mbit",
           "packet_size", "streams", "packets", "dst_name", "dst_key"}


#: the probe's own knobs (not task fields): default and checker
_PROBE_KNOBS: dict[str, tuple[float, Number | Integer]] = {
    "max_rate_mbit": (MAX_RATE_MBIT, Number(1.0, MAX_RATE_MBIT)),
    "packet_size": (1000, Integer(200, 1500)),
    "streams": (6, Integer(3, 24)),
    "packets": (80, Integer(20, 500)),
}


def _param(body: dict, name: str) -> Any:
    """A checked parameter: a task field by the task table, a knob by its checker."""
    try:
        if name in _PROBE_KNOBS:
            default, checker = _PROBE_KNOBS[name]
            return checker.check(name, body.get(name, default))
        return field_value(name, body)
    except FieldError as exc:
        raise AgentError(400, str(exc)) from None


def parse_params(body: Any) -> ProbeParams:
    """Validate a probe request; errors name the field (HTTP 400)."""
    if not isinstance(body, dict):
        raise AgentError(400, "body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        names = ", ".join(sorted(_FIELDS))
        raise AgentError(400, f"field '{unknown[0]}' is not one of {names}")
    dst_ip = body.get("dst_ip")
    try:
        ipaddress.IPv4Address(dst_ip if isinstance(dst_ip, str) else "")
    except ValueError:
        raise AgentError(400, "field 'dst_ip' must be an IPv4 address") from None
    dst_url = body.get("dst_url", f"http://{dst_ip}:8000")
    if not isinstance(dst_url, str) or not dst_url.startswith(("http://", "https://")):
        raise AgentError(400, "field 'dst_url' must be an http:// or https:// URL")
    dst_name, dst_key = body.get("dst_name"), body.get("dst_key")
    if (dst_name is None) != (dst_key is None):
        raise AgentError(400, "fields 'dst_name' and 'dst_key' go together")
    if dst_name is not None and (not isinstance(dst_name, str)
                                 or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", dst_name)):
        raise AgentError(400, "field 'dst_name' must be an agent name")
    if dst_key is not None:
        try:
            dst_key = check_credential(dst_key, "dst_key")
        except ValueError as exc:
            raise AgentError(400, str(exc)) from None
    return ProbeParams(
        dst_name=dst_name, dst_key=dst_key,
        dst_ip=str(dst_ip), dst_url=dst_url.rstrip("/"), method=_param(body, "method"),
        max_duration=_param(body, "max_duration"), max_bytes=_param(body, "max_bytes"),
        max_rate_mbit=float(_param(body, "max_rate_mbit")),
        packet_size=_param(body, "packet_size"), streams=_param(body, "streams"),
        packets=_param(body, "packets"))


def result_json(src: str, dst: str, method: str, estimate: float, lo: float, hi: float,
                duration: float, probe_bytes: int, streams: int, **extra: Any) -> dict[str, Any]:
    """The v1 result body (Mbit/s; 1 MByte = 10^6 bytes)."""
    return {"mbit_s": round(estimate, 3), "mbytes_s": round(estimate / 8, 4),
            "range_mbit_s": [round(lo, 3), round(hi, 3)], "method": method,
            "duration_s": round(duration, 3), "probe_bytes": probe_bytes, "streams": streams,
            "src": src, "dst": dst, **extra}


# ---------------------------------------------------------------- source side

class _Budget:
    """Deadline and byte budget of one probe."""

    def __init__(self, params: ProbeParams) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + params.max_duration - 0.3  # for planned steps
        self.end = self.start + params.max_duration - 0.1  # for every wait
        self.max_bytes = params.max_bytes
        self.bytes = 0
        self.capped = ""

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def wait_left(self) -> float:
        """Timeout for any wait: never past the hard end of the probe."""
        return max(0.05, self.end - time.monotonic())

    def over(self) -> bool:
        return time.monotonic() >= self.end - 0.05

    def allows(self, seconds: float, nbytes: int) -> bool:
        if seconds > self.left():
            self.capped = "max_duration"
        elif self.bytes + nbytes > self.max_bytes:
            self.capped = "max_bytes"
        return not self.capped


def _open_receiver(peer: PeerClient, params: ProbeParams, budget: _Budget) -> dict:
    url = f"{params.dst_url}/agent/v1/bandwidth/receive"
    body = {"method": params.method, "duration": round(params.max_duration + 2, 3)}
    reply = peer.call("POST", url, body, min(HTTP_TIMEOUT, budget.left()))
    if not isinstance(reply.get("port"), int) or not isinstance(reply.get("session"), str):
        raise AgentError(502, f"destination agent {url} sent a bad receive reply")
    return reply


def _fetch(peer: PeerClient, params: ProbeParams, session: str, streams: list[int],
           budget: _Budget, expected: int = 0, settle: float = 0.0) -> dict:
    """Arrival data; with ``expected`` packets, wait up to ``settle`` s for the
    tail still queued at the bottleneck, until all came or the count stalls."""
    ids = ",".join(str(s) for s in streams)
    url = f"{params.dst_url}/agent/v1/bandwidth/receive/{session}?streams={ids}"
    end, last = time.monotonic() + min(settle, budget.left()), -1
    while True:
        got = peer.call("GET", url, None, min(HTTP_TIMEOUT, budget.wait_left()))
        count = sum(len(s["seq"]) for s in got["streams"].values())
        if count >= expected or 0 < count == last or time.monotonic() >= end:
            return got
        last = count
        time.sleep(0.05)


def _close(peer: PeerClient, params: ProbeParams, session: str, budget: _Budget) -> None:
    try:
        peer.call("DELETE", f"{params.dst_url}/agent/v1/bandwidth/receive/{session}",
              None, min(1.0, budget.wait_left()))
    except AgentError:
        pass  # the session closes itself at its deadline anyway


def _run_slops(peer: PeerClient, params: ProbeParams, budget: _Budget, recv: dict,
               worker: Worker) -> dict:
    session = int(recv["session"], 16)
    host, port, size = params.dst_ip, recv["port"], params.packet_size
    base = {"op": "send_fleet", "host": host, "port": port, "session": session}
    # 1. capacity train (stream 0)
    train_n = 60
    if not budget.allows(1.0, train_n * size):
        raise AgentError(400, "max_duration or max_bytes too small for a single train")
    worker.call({**base, "streams": [{"id": 0, "count": train_n, "size": size, "rate_bps": 0}],
                 "timeout": 2}, timeout=min(3.0, budget.left()))
    budget.bytes += train_n * size
    train = _fetch(peer, params, recv["session"], [0], budget, expected=train_n,
                   settle=1.0)["streams"].get("0", {})
    if len(train.get("recv_ns", [])) < 4:
        raise AgentError(502, f"probe packets from this host do not reach {host}:{port} "
                                  "(UDP filtered or wrong dst_ip)")
    capacity = train_capacity_mbit(train["recv_ns"], size)
    search = RateSearch(hi=max(MIN_RATE_MBIT, min(params.max_rate_mbit, capacity * 1.1)),
                        max_rate=params.max_rate_mbit)
    fleets: list[dict] = []
    next_id = 1
    # 2. binary search with fleets of periodic streams
    while not search.done():
        rate = search.next_rate()
        stream_s = params.packets * size * 8 / (rate * 1e6)
        fleet_s = params.streams * 1.5 * stream_s + 0.15
        fleet_bytes = params.streams * params.packets * size
        if not budget.allows(fleet_s + 0.2, fleet_bytes):
            break
        ids = list(range(next_id, next_id + params.streams))
        next_id += params.streams
        spec = [{"id": i, "count": params.packets, "size": size, "rate_bps": rate * 1e6,
                 "pause": stream_s / 2} for i in ids]
        try:
            sent = worker.call({**base, "streams": spec, "timeout": fleet_s},
                               timeout=budget.wait_left())["streams"]
            budget.bytes += sum(s["bytes"] for s in sent)
            arrivals = _fetch(peer, params, recv["session"], ids, budget,
                              expected=sum(s["sent"] for s in sent), settle=0.3)["streams"]
        except (WorkerError, AgentError):
            if not budget.over():
                raise
            budget.capped = "max_duration"  # a slow host ran into the cap: keep what we have
            break
        trends = []
        for s in sent:
            got = arrivals.get(str(s["stream"]), {"send_ns": [], "recv_ns": []})
            if sent_rate_mbit(s, size) < SLOW_SENDER * rate:
                trends.append("S")  # the sender lagged: this stream says nothing
                continue
            loss = 1 - len(got["recv_ns"]) / max(1, s["sent"])
            trends.append(stream_trend(relative_owds(got["send_ns"], got["recv_ns"]), loss))
        verdict = ("sender_limited" if trends.count("S") * 2 > len(trends)
                   else fleet_verdict([t for t in trends if t != "S"], len(trends)))
        fleets.append({"rate_mbit": round(rate, 3), "verdict": verdict,
                       "trends": "".join(trends)})
        search.update(rate, verdict)
    out = {"estimate": search.estimate(), "lo": search.lo, "hi": search.hi,
           "streams": next_id - 1, "capacity_mbit_s": round(capacity, 3),
           "at_least": search.lo >= search.max_rate,  # more than we may probe at
           "fleets": fleets, "converged": search.done()}
    if search.lo > capacity:  # one figure must not silently contradict another
        out["capacity_note"] = ("the search found more available than the dispersion "
                                "capacity: that train read low (a busy or virtual path); "
                                "the estimate and its range are the answer")
    return out


def _run_bulk(peer: PeerClient, params: ProbeParams, budget: _Budget, recv: dict,
              worker: Worker) -> dict:
    seconds = min(3.0, budget.left() - 0.8)  # like the original's 3 s, within the cap
    if seconds < 0.3:
        raise AgentError(400, "max_duration too small for a bulk transfer")
    sent = worker.call({"op": "bulk_send", "host": params.dst_ip, "port": recv["port"],
                        "duration": seconds, "max_bytes": params.max_bytes},
                       timeout=budget.wait_left())
    budget.bytes = sent["bytes"]
    wait_end = min(time.monotonic() + 1.0, budget.deadline)
    while True:  # let the receiver read the tail of the transfer
        got = _fetch(peer, params, recv["session"], [], budget)
        if (got["bytes"] >= sent["bytes"] and not got.get("connected")) \
                or time.monotonic() > wait_end:
            break
        time.sleep(0.05)
    span = (got["last_ns"] - got["first_ns"]) / 1e9
    rate = got["bytes"] * 8 / span / 1e6 if span > 0 else 0.0
    return {"estimate": rate, "lo": rate, "hi": rate, "streams": 1,
            "received_bytes": got["bytes"]}


class Prober:
    """The source side of this agent's probes: one probe per destination at a time."""

    def __init__(self, data_ip: str | None, peer: PeerClient) -> None:
        self.data_ip = data_ip or ""
        self.peer = peer
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        #: the agent's signing keys: a request's destination credential is added to it
        self.keyring: KeyRing | None = None
        #: this agent's name and controller URLs: ``query bw`` asks them for its key
        self.name: str | None = None
        self.controllers: list[str] = []
        #: data IP -> URL of the destinations ``query bw`` learnt a key for
        self._legacy_urls: dict[str, str] = {}

    def busy(self, dst_ip: str) -> bool:
        """Whether a probe to ``dst_ip`` is running."""
        with self._lock:
            return dst_ip in self._busy

    def probe(self, body: Any) -> dict[str, Any]:
        """Run one probe from this agent to ``body['dst_ip']``; return the v1 JSON."""
        params = parse_params(body)
        if params.dst_name is not None and params.dst_key is not None \
                and self.keyring is not None:
            try:
                self.keyring.learn(params.dst_name, params.dst_url, params.dst_key)
            except ValueError as exc:
                raise AgentError(400, f"field 'dst_name': {exc}") from None
        with self._lock:
            if params.dst_ip in self._busy:
                raise AgentError(409, f"a bandwidth probe to {params.dst_ip} "
                                          "is already running")
            self._busy.add(params.dst_ip)
        budget = _Budget(params)
        try:
            recv = _open_receiver(self.peer, params, budget)
            worker = Worker(lifetime=params.max_duration + 1)
            try:
                run = _run_bulk if params.method == "bulk" else _run_slops
                out = run(self.peer, params, budget, recv, worker)
            except WorkerError as exc:
                raise AgentError(502, f"probe failed: {exc}") from None
            finally:
                worker.close()
                _close(self.peer, params, recv["session"], budget)
        finally:
            with self._lock:
                self._busy.discard(params.dst_ip)
        est, lo, hi = out.pop("estimate"), out.pop("lo"), out.pop("hi")
        streams = out.pop("streams")
        label = ("achievable throughput (TCP bulk transfer)" if params.method == "bulk"
                 else "available bandwidth (SLoPS)")
        return result_json(self.data_ip, params.dst_ip, params.method, est, lo, hi,
                           time.monotonic() - budget.start, budget.bytes, streams, label=label,
                           capped=budget.capped or None, max_duration=params.max_duration,
                           max_bytes=params.max_bytes, **out)

    def legacy_query_bw(self, src: str, dst: str) -> str:
        """The original ``query bw`` reply: plain-text MBytes/s (1 MByte = 10^6 bytes).

        Raises :class:`AgentError` (with ``status``) when the probe fails.
        """
        if src and self.data_ip and src != self.data_ip:
            raise AgentError(400, f"query bw: src {src} is not this agent "
                                      f"({self.data_ip}); send the query to the source "
                                      "host's agent")
        try:
            ipaddress.IPv4Address(dst)
        except ValueError:
            raise AgentError(400, "query bw: field 'dst' must be an IPv4 address") from None
        body: dict[str, Any] = {"dst_ip": dst, "method": "slops"}
        url = self._legacy_urls.get(dst)
        if url is not None and self.keyring is not None and self.keyring.knows(url):
            body["dst_url"] = url  # the key learnt before still signs
        elif self.keyring is not None:  # keys but no credential for dst: ask the controller
            body.update(self._peer_key(dst))
            self._legacy_urls[dst] = body["dst_url"]
        result = self.probe(body)
        return f"{result['mbytes_s']:.2f}"

    def _peer_key(self, dst: str) -> dict[str, Any]:
        """``dst_url``, ``dst_name`` and ``dst_key`` for the agent at data IP ``dst``,
        from ``POST agents/{name}/peer-key`` (signed with this agent's own key), trying
        each controller URL in turn; a ``AgentError`` when none answers it."""
        if self.name is None or not self.controllers:
            raise AgentError(503, "query bw: this agent has keys but no controller to "
                                      f"ask for the key to {dst}")
        failures = []
        for base in self.controllers:
            url = f"{base}/measure/v1/agents/{self.name}/peer-key"
            try:
                status, reply = self.peer.transport.request("POST", url, json={"peer": dst},
                                                            timeout=5)
            except OSError as exc:
                failures.append(f"{base}: {getattr(exc, 'reason', None) or exc}")
                continue
            detail = reply.get("error") if isinstance(reply, dict) else str(reply)[:200]
            if status in (400, 404, 409):  # unknown, this agent itself, or no data IP
                log.warning("query bw: controller %s has no agent for %s: %s", base, dst,
                            detail)
                raise AgentError(status, f"query bw: dst {dst}: controller answered "
                                             f"{status}: {detail}")
            if not 200 <= status < 300:
                failures.append(f"{base}: HTTP {status}: {detail}")
                continue
            return self._learnt(dst, base, reply)
        log.warning("query bw: no controller gave the key to %s: %s", dst, "; ".join(failures))
        raise AgentError(502, f"query bw: no controller gave the key to {dst}: "
                                  + "; ".join(failures))

    def _learnt(self, dst: str, base: str, reply: Any) -> dict[str, Any]:
        """The probe fields of a peer-key answer (502 when it is malformed)."""
        try:
            if not isinstance(reply, dict):
                raise ValueError("not a JSON object")
            name, url, key = reply.get("dst_name"), reply.get("dst_url"), reply.get("dst_key")
            if not isinstance(name, str) or not isinstance(url, str) \
                    or not url.startswith(("http://", "https://")):
                raise ValueError("no dst_name or dst_url")
            if key is None:
                raise ValueError("no dst_key (the controller holds no secret)")
            key = check_credential(key, "dst_key")
        except ValueError as exc:
            raise AgentError(502, f"query bw: controller {base}: bad peer-key answer: "
                                      f"{exc}") from None
        log.info("query bw: controller %s gave the key to %s (agent %s at %s)", base, dst,
                 name, url)
        return {"dst_url": url, "dst_name": name, "dst_key": key}
