"""Available-bandwidth estimation between agents (SLoPS) and bulk throughput.

The source agent runs the probe; the destination agent only receives:

1. ``POST {dst}/agent/v1/bandwidth/receive`` opens a receive session on the
   destination (a UDP or TCP socket in a probe worker process, see
   :mod:`host_agent.bwprobe`) and returns ``{"session", "port"}``.
2. The source sends a back-to-back packet train; the dispersion of its
   second half at the receiver estimates the path capacity (the first
   packets ride a token-bucket burst, so they are left out). That, with a
   margin, is the first upper bound of the search.
3. SLoPS (the method of pathload, Jain and Dovrolis): at a trial rate R the
   source sends a *fleet* of K periodic streams of N packets. For each
   stream the receiver's arrival times give relative one-way delays
   (arrival - send, minus the first: no clock synchronisation is needed).
   The delays are cut into about sqrt(N) groups whose medians feed two
   trend statistics, PCT (the fraction of consecutive increases) and PDT
   (net rise over total variation). Streams whose delays increase mean
   R > available bandwidth; a fleet mostly increasing moves the upper bound
   down, a fleet mostly flat moves the lower bound up, anything else is a
   grey region recorded separately. The search stops when the range is
   narrow or when the next fleet would break a cap.
4. ``GET .../receive/{session}?streams=...`` returns the arrival data;
   ``DELETE`` closes the session (it also closes itself when its time is up).
   The receive side lives in :mod:`host_agent.bwprobe` next to the worker.

``bulk`` instead pushes TCP data for a bounded time and reports the
receiver's byte rate, labelled *achievable throughput* (what the original
called "available bandwidth").

Caps are hard: every step is checked against the duration and byte budget
before it starts, HTTP calls and worker replies have timeouts within the
budget, and the result reports what was used. The trend statistics, fleet
verdict and search (:class:`RateSearch`) are plain functions over numbers,
tested with synthetic delay series. ``wsgi_handler`` and ``legacy_query_bw``
are the two entry points the agent's HTTP layer calls.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import webob

from host_agent.bwprobe import (  # noqa: F401 - re-exported for the agent's HTTP layer
    _SESSIONS,
    MAX_RECEIVE_SESSIONS,
    BandwidthError,
    Worker,
    WorkerError,
    close_receive,
    fetch_receive,
    open_receive,
    receive_sessions,
)

MAX_DURATION = 60.0
MAX_BYTES = 200_000_000
MAX_RATE_MBIT = 1000.0
MIN_RATE_MBIT = 0.1
PCT_INC, PCT_NONINC = 0.66, 0.54
PDT_INC, PDT_NONINC = 0.55, 0.45
FLEET_FRACTION = 0.65
LOSSY_STREAM = 0.1
SLOW_SENDER = 0.92
HTTP_TIMEOUT = 5.0


# ---------------------------------------------------------------- parameters

@dataclass
class ProbeParams:
    """A validated ``POST /agent/v1/bandwidth`` body."""

    dst_ip: str
    dst_url: str
    method: str = "slops"
    max_duration: float = 10.0
    max_bytes: int = 20_000_000
    max_rate_mbit: float = MAX_RATE_MBIT
    packet_size: int = 1000
    streams: int = 6
    packets: int = 80


_FIELDS = {"dst_ip", "dst_url", "method", "max_duration", "max_bytes", "max_rate_mbit",
           "packet_size", "streams", "packets"}


def _number(body: dict, name: str, default: float, lo: float, hi: float,
            integer: bool = False) -> Any:
    value = body.get(name, default)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        raise BandwidthError(400, f"field '{name}' must be {kind}")
    if not lo <= value <= hi:
        raise BandwidthError(400, f"field '{name}' must be between {lo:g} and {hi:g}")
    return value


def parse_params(body: Any) -> ProbeParams:
    """Validate a probe request; errors name the field (HTTP 400)."""
    if not isinstance(body, dict):
        raise BandwidthError(400, "body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        names = ", ".join(sorted(_FIELDS))
        raise BandwidthError(400, f"field '{unknown[0]}' is not one of {names}")
    dst_ip = body.get("dst_ip")
    try:
        ipaddress.IPv4Address(dst_ip if isinstance(dst_ip, str) else "")
    except ValueError:
        raise BandwidthError(400, "field 'dst_ip' must be an IPv4 address") from None
    dst_url = body.get("dst_url", f"http://{dst_ip}:8000")
    if not isinstance(dst_url, str) or not dst_url.startswith(("http://", "https://")):
        raise BandwidthError(400, "field 'dst_url' must be an http:// or https:// URL")
    method = body.get("method", "slops")
    if method not in ("slops", "bulk"):
        raise BandwidthError(400, "field 'method' must be one of slops, bulk")
    return ProbeParams(
        dst_ip=dst_ip, dst_url=dst_url.rstrip("/"), method=method,
        max_duration=float(_number(body, "max_duration", 10.0, 1.0, MAX_DURATION)),
        max_bytes=_number(body, "max_bytes", 20_000_000, 100_000, MAX_BYTES, integer=True),
        max_rate_mbit=float(_number(body, "max_rate_mbit", MAX_RATE_MBIT, 1.0, MAX_RATE_MBIT)),
        packet_size=_number(body, "packet_size", 1000, 200, 1500, integer=True),
        streams=_number(body, "streams", 6, 3, 24, integer=True),
        packets=_number(body, "packets", 80, 20, 500, integer=True))


# ---------------------------------------------------------------- trend statistics

def relative_owds(send_ns: list[int], recv_ns: list[int]) -> list[float]:
    """One-way delays in microseconds relative to the first packet's."""
    if not send_ns:
        return []
    base = recv_ns[0] - send_ns[0]
    return [((r - s) - base) / 1000.0 for s, r in zip(send_ns, recv_ns, strict=True)]


def group_medians(owds: list[float]) -> list[float]:
    """Medians of about sqrt(N) consecutive groups (robust to single outliers)."""
    groups = max(2, int(len(owds) ** 0.5))
    size = len(owds) / groups
    return [statistics.median(owds[int(i * size):int((i + 1) * size)]) for i in range(groups)]


def pct_pdt(owds: list[float]) -> tuple[float, float]:
    """Pairwise comparison test and pairwise difference test on the delays."""
    med = group_medians(owds)
    diffs = [b - a for a, b in zip(med, med[1:], strict=False)]
    pct = sum(1 for d in diffs if d > 0) / len(diffs)
    total = sum(abs(d) for d in diffs)
    pdt = (med[-1] - med[0]) / total if total else 0.0
    return pct, pdt


def stream_trend(owds: list[float], loss: float = 0.0) -> str:
    """``I`` (increasing), ``N`` (non-increasing) or ``G`` (grey) for one stream."""
    if loss > LOSSY_STREAM:
        return "I"
    if len(owds) < 4:
        return "G"
    pct, pdt = pct_pdt(owds)
    pct_v = "I" if pct > PCT_INC else "N" if pct < PCT_NONINC else "G"
    pdt_v = "I" if pdt > PDT_INC else "N" if pdt < PDT_NONINC else "G"
    if "I" in (pct_v, pdt_v) and "N" not in (pct_v, pdt_v):
        return "I"
    if "N" in (pct_v, pdt_v) and "I" not in (pct_v, pdt_v):
        return "N"
    return "G"


def fleet_verdict(trends: list[str], sent: int | None = None) -> str:
    """``above`` (rate > available), ``below``, or ``grey`` for a fleet.

    ``trends`` are the usable streams out of ``sent``; a fleet with fewer
    than half of its streams usable is grey.
    """
    sent = len(trends) if sent is None else sent
    if not trends or len(trends) * 2 < sent:
        return "grey"
    if trends.count("I") >= FLEET_FRACTION * len(trends):
        return "above"
    if trends.count("N") >= FLEET_FRACTION * len(trends):
        return "below"
    return "grey"


def sent_rate_mbit(stream: dict[str, int], size: int) -> float:
    """The rate a stream was actually sent at (from the sender's clock)."""
    span = (stream["last_ns"] - stream["first_ns"]) / 1e9
    if stream["sent"] < 2 or span <= 0:
        return 0.0
    return (stream["sent"] - 1) * size * 8 / span / 1e6


def train_capacity_mbit(recv_ns: list[int], size: int) -> float:
    """Dispersion rate of the second half of a back-to-back train, Mbit/s."""
    tail = recv_ns[len(recv_ns) // 2:]
    if len(tail) < 2 or tail[-1] <= tail[0]:
        return 0.0
    return (len(tail) - 1) * size * 8 / ((tail[-1] - tail[0]) / 1e9) / 1e6


@dataclass
class RateSearch:
    """Binary search of the available bandwidth with a grey region (pathload).

    ``lo`` is the highest rate seen below the available bandwidth and ``hi``
    the upper bound: it starts from the capacity estimate, is trusted for
    bisection, and is probed itself before the search ends unless a fleet
    already showed a rate at or under it to be above. ``grey`` holds the
    rates with mixed verdicts; the available bandwidth varies within them.
    """

    hi: float
    max_rate: float = MAX_RATE_MBIT
    lo: float = 0.0
    hi_verified: bool = False
    grey: list[float] = field(default_factory=list)

    def resolution(self) -> float:
        return max(0.05 * self.hi, 0.2)

    def _narrow(self) -> bool:
        res = self.resolution()
        if not self.grey:
            return self.hi - self.lo <= res
        return min(self.grey) - self.lo <= res and self.hi - max(self.grey) <= res

    def next_rate(self) -> float:
        if self._narrow() and not self.hi_verified:
            return self.hi
        if not self.grey:
            return (self.lo + self.hi) / 2
        glo, ghi = min(self.grey), max(self.grey)
        if glo - self.lo >= self.hi - ghi:
            return (self.lo + glo) / 2
        return (ghi + self.hi) / 2

    def update(self, rate: float, verdict: str) -> None:
        if verdict == "sender_limited":  # this host cannot send faster: cap the search
            self.max_rate = min(self.max_rate, 0.95 * rate)
            self.hi, self.hi_verified = min(self.hi, self.max_rate), False
            self.lo = min(self.lo, self.max_rate)
            return
        if verdict == "above":
            if rate <= self.hi:
                self.hi, self.hi_verified = rate, True
            self.grey = [g for g in self.grey if g < rate]
            return
        if verdict == "below":
            self.lo = max(self.lo, rate)
            self.grey = [g for g in self.grey if g > rate]
        else:
            self.grey.append(rate)
        if rate >= self.hi:  # the bound was too low: widen it
            self.hi, self.hi_verified = min(self.max_rate, rate * 1.5), False

    def done(self) -> bool:
        return self.lo >= self.max_rate or (self.hi_verified and self._narrow())

    def estimate(self) -> float:
        """Middle of the grey region if there is one, else of the range."""
        if self.grey:
            return (min(self.grey) + max(self.grey)) / 2
        return (self.lo + self.hi) / 2


def result_json(src: str, dst: str, method: str, estimate: float, lo: float, hi: float,
                duration: float, probe_bytes: int, streams: int, **extra: Any) -> dict[str, Any]:
    """The v1 result body (Mbit/s; 1 MByte = 10^6 bytes)."""
    return {"mbit_s": round(estimate, 3), "mbytes_s": round(estimate / 8, 4),
            "range_mbit_s": [round(lo, 3), round(hi, 3)], "method": method,
            "duration_s": round(duration, 3), "probe_bytes": probe_bytes, "streams": streams,
            "src": src, "dst": dst, **extra}


# ---------------------------------------------------------------- HTTP to the peer

def signer_from_secret(secret: bytes) -> Any:
    """An ``agent.sign_request(method, url, body)`` for the shared HMAC secret.

    The agent entry point sets ``agent.sign_request = signer_from_secret(s)``
    when it has a secret, so probe requests pass the peer's ``Verifier``.
    """
    from urllib.parse import urlsplit

    from measure_model.auth import sign_request

    def sign(method: str, url: str, body: bytes) -> dict[str, str]:
        parts = urlsplit(url)
        path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return sign_request(secret, method, path_qs, body)
    return sign


def _peer(agent: Any, method: str, url: str, body: dict | None, timeout: float) -> dict:
    """Call the destination agent; map failures to clear errors (no hang)."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"}
    sign = getattr(agent, "sign_request", None)
    if sign is not None:
        headers.update(sign(method, url, data) or {})
    req = urllib.request.Request(url, data=data if body is not None else None,
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=max(0.05, timeout)) as resp:  # noqa: S310
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        status = 409 if exc.code in (409, 503) else 502
        raise BandwidthError(status, f"destination agent {url} answered {exc.code}: "
                                     f"{detail or exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise BandwidthError(502, f"destination agent not running at {url} "
                                      "(connection refused)") from None
        raise BandwidthError(504, f"destination unreachable at {url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise BandwidthError(504, f"destination unreachable at {url}: {exc}") from None
    except ValueError:
        raise BandwidthError(502, f"destination agent {url} sent a non-JSON reply") from None


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


def _open_receiver(agent: Any, params: ProbeParams, budget: _Budget, proto: str) -> dict:
    url = f"{params.dst_url}/agent/v1/bandwidth/receive"
    body = {"method": params.method, "duration": round(params.max_duration + 2, 3)}
    reply = _peer(agent, "POST", url, body, min(HTTP_TIMEOUT, budget.left()))
    if not isinstance(reply.get("port"), int) or not isinstance(reply.get("session"), str):
        raise BandwidthError(502, f"destination agent {url} sent a bad receive reply")
    return reply


def _fetch(agent: Any, params: ProbeParams, session: str, streams: list[int],
           budget: _Budget, expected: int = 0, settle: float = 0.0) -> dict:
    """Arrival data; with ``expected`` packets, wait up to ``settle`` s for the
    tail still queued at the bottleneck, until all came or the count stalls."""
    ids = ",".join(str(s) for s in streams)
    url = f"{params.dst_url}/agent/v1/bandwidth/receive/{session}?streams={ids}"
    end, last = time.monotonic() + min(settle, budget.left()), -1
    while True:
        got = _peer(agent, "GET", url, None, min(HTTP_TIMEOUT, budget.wait_left()))
        count = sum(len(s["seq"]) for s in got["streams"].values())
        if count >= expected or 0 < count == last or time.monotonic() >= end:
            return got
        last = count
        time.sleep(0.05)


def _close(agent: Any, params: ProbeParams, session: str, budget: _Budget) -> None:
    try:
        _peer(agent, "DELETE", f"{params.dst_url}/agent/v1/bandwidth/receive/{session}",
              None, min(1.0, budget.wait_left()))
    except BandwidthError:
        pass  # the session closes itself at its deadline anyway


def _run_slops(agent: Any, params: ProbeParams, budget: _Budget, recv: dict,
               worker: Worker) -> dict:
    session = int(recv["session"], 16)
    host, port, size = params.dst_ip, recv["port"], params.packet_size
    base = {"op": "send_fleet", "host": host, "port": port, "session": session}
    # 1. capacity train (stream 0)
    train_n = 60
    if not budget.allows(1.0, train_n * size):
        raise BandwidthError(400, "max_duration or max_bytes too small for a single train")
    worker.call({**base, "streams": [{"id": 0, "count": train_n, "size": size, "rate_bps": 0}],
                 "timeout": 2}, timeout=min(3.0, budget.left()))
    budget.bytes += train_n * size
    train = _fetch(agent, params, recv["session"], [0], budget, expected=train_n,
                   settle=1.0)["streams"].get("0", {})
    if len(train.get("recv_ns", [])) < 4:
        raise BandwidthError(502, f"probe packets from this host do not reach {host}:{port} "
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
            arrivals = _fetch(agent, params, recv["session"], ids, budget,
                              expected=sum(s["sent"] for s in sent), settle=0.3)["streams"]
        except (WorkerError, BandwidthError):
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
    return {"estimate": search.estimate(), "lo": search.lo, "hi": search.hi,
            "streams": next_id - 1, "capacity_mbit_s": round(capacity, 3),
            "at_least": search.lo >= search.max_rate,  # more than we may probe at
            "fleets": fleets, "converged": search.done()}


def _run_bulk(agent: Any, params: ProbeParams, budget: _Budget, recv: dict,
              worker: Worker) -> dict:
    seconds = min(3.0, budget.left() - 0.8)  # like the original's 3 s, within the cap
    if seconds < 0.3:
        raise BandwidthError(400, "max_duration too small for a bulk transfer")
    sent = worker.call({"op": "bulk_send", "host": params.dst_ip, "port": recv["port"],
                        "duration": seconds, "max_bytes": params.max_bytes},
                       timeout=budget.wait_left())
    budget.bytes = sent["bytes"]
    wait_end = min(time.monotonic() + 1.0, budget.deadline)
    while True:  # let the receiver read the tail of the transfer
        got = _fetch(agent, params, recv["session"], [], budget)
        if (got["bytes"] >= sent["bytes"] and not got.get("connected")) \
                or time.monotonic() > wait_end:
            break
        time.sleep(0.05)
    span = (got["last_ns"] - got["first_ns"]) / 1e9
    rate = got["bytes"] * 8 / span / 1e6 if span > 0 else 0.0
    return {"estimate": rate, "lo": rate, "hi": rate, "streams": 1,
            "received_bytes": got["bytes"]}


_BUSY: set[tuple[int, str]] = set()
_BUSY_LOCK = threading.Lock()


def probe(agent: Any, body: Any) -> dict[str, Any]:
    """Run one probe from this agent to ``body['dst_ip']``; return the v1 JSON."""
    params = parse_params(body)
    pair = (id(agent), params.dst_ip)
    with _BUSY_LOCK:
        if pair in _BUSY:
            raise BandwidthError(409, f"a bandwidth probe to {params.dst_ip} is already running")
        _BUSY.add(pair)
    budget = _Budget(params)
    try:
        recv = _open_receiver(agent, params, budget, "tcp" if params.method == "bulk" else "udp")
        worker = Worker(lifetime=params.max_duration + 1)
        try:
            run = _run_bulk if params.method == "bulk" else _run_slops
            out = run(agent, params, budget, recv, worker)
        except WorkerError as exc:
            raise BandwidthError(502, f"probe failed: {exc}") from None
        finally:
            worker.close()
            _close(agent, params, recv["session"], budget)
    finally:
        with _BUSY_LOCK:
            _BUSY.discard(pair)
    est, lo, hi, streams = out.pop("estimate"), out.pop("lo"), out.pop("hi"), out.pop("streams")
    label = ("achievable throughput (TCP bulk transfer)" if params.method == "bulk"
             else "available bandwidth (SLoPS)")
    return result_json(getattr(agent, "data_ip", "") or "", params.dst_ip, params.method, est, lo,
                       hi, time.monotonic() - budget.start, budget.bytes, streams, label=label,
                       capped=budget.capped or None, max_duration=params.max_duration,
                       max_bytes=params.max_bytes, **out)


# ---------------------------------------------------------------- HTTP entry points

def _json_body(req: webob.Request) -> Any:
    try:
        return json.loads(req.body or b"{}")
    except ValueError:
        raise BandwidthError(400, "body is not valid JSON") from None


def wsgi_handler(agent: Any, req: webob.Request) -> webob.Response:
    """Serve every request under ``/agent/v1/bandwidth``."""
    parts = [p for p in req.path_info.split("/") if p][3:]  # after agent/v1/bandwidth
    try:
        if not parts:
            if req.method != "POST":
                raise BandwidthError(405, "use POST /agent/v1/bandwidth")
            return webob.Response(json=probe(agent, _json_body(req)))
        if parts[0] != "receive" or len(parts) > 2:
            raise BandwidthError(404, f"no such resource {req.path_info}")
        if len(parts) == 1:
            if req.method != "POST":
                raise BandwidthError(405, "use POST /agent/v1/bandwidth/receive")
            return webob.Response(json=open_receive(agent, _json_body(req)))
        if req.method == "GET":
            return webob.Response(json=fetch_receive(agent, parts[1], req.GET.get("streams")))
        if req.method == "DELETE":
            return webob.Response(json=close_receive(agent, parts[1]))
        raise BandwidthError(405, "use GET or DELETE on a receive session")
    except BandwidthError as exc:
        return webob.Response(json={"error": exc.message}, status=exc.status)


def legacy_query_bw(agent: Any, src: str, dst: str) -> str:
    """The original ``query bw`` reply: plain-text MBytes/s (1 MByte = 10^6 bytes).

    Raises :class:`BandwidthError` (with ``status``) when the probe fails.
    """
    own = getattr(agent, "data_ip", "")
    if src and own and src != own:
        raise BandwidthError(400, f"query bw: src {src} is not this agent ({own}); "
                                  "send the query to the source host's agent")
    result = probe(agent, {"dst_ip": dst, "method": "slops"})
    return f"{result['mbytes_s']:.2f}"
