"""Bandwidth estimation: trend statistics, fleet verdicts, the rate search,
parameter validation and the REST boundary (webob ``Request.blank``).

Pure logic runs on synthetic delay series; the few tests that need sockets
use loopback and the real probe worker process.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import webob

from host_agent.bandwidth import estimate as bw
from host_agent.bandwidth import slops
from host_agent.bandwidth.api import bandwidth_api
from host_agent.bandwidth.receive import MAX_RECEIVE_SESSIONS
from host_agent.errors import AgentError
from measure_common.httpclient import HttpClient

# ---------------------------------------------------------------- statistics


def test_relative_owds_subtract_first_delay_without_clock_sync():
    # sender and receiver clocks differ by an arbitrary offset: only changes count
    send = [1_000, 2_000, 3_000, 4_000]
    recv = [9_000_000_000 + s + d for s, d in zip(send, [500, 500, 1500, 3500], strict=True)]
    assert slops.relative_owds(send, recv) == [0.0, 0.0, 1.0, 3.0]
    assert slops.relative_owds([], []) == []


def test_group_medians_use_sqrt_n_groups():
    assert slops.group_medians([1, 2, 3, 4, 5, 6, 7, 8, 9]) == [2, 5, 8]
    assert len(slops.group_medians(list(range(80)))) == 8


def test_pct_pdt_of_monotonic_series():
    assert slops.pct_pdt([float(i) for i in range(100)]) == (1.0, 1.0)
    assert slops.pct_pdt([float(-i) for i in range(100)]) == (0.0, -1.0)
    assert slops.pct_pdt([5.0] * 100) == (0.0, 0.0)


def test_pct_pdt_of_zigzag():
    # medians of 3 groups: 1, 3, 2 -> one rise of two steps; net +1 over 3 of travel
    pct, pdt = slops.pct_pdt([1, 1, 1, 3, 3, 3, 2, 2, 2])
    assert pct == 0.5 and pdt == pytest.approx(1 / 3)


def test_increasing_delays_with_noise_are_increasing():
    rng = random.Random(1)
    owds = [i * 20 + rng.uniform(-60, 60) for i in range(80)]  # 20 us/packet queue growth
    assert slops.stream_trend(owds) == "I"


def test_flat_noisy_delays_are_non_increasing():
    rng = random.Random(2)
    for _ in range(20):
        owds = [rng.uniform(0, 200) for _ in range(80)]
        assert slops.stream_trend(owds) in ("N", "G")
    draining = [max(0.0, 3000 - 40 * i) + rng.uniform(0, 50) for i in range(80)]
    assert slops.stream_trend(draining) == "N"


def test_stream_trend_loss_and_short_streams():
    assert slops.stream_trend([0.0] * 80, loss=0.2) == "I"  # lossy: the rate is too high
    assert slops.stream_trend([0.0, 1.0, 2.0]) == "G"


def test_fleet_verdict_thresholds():
    assert slops.fleet_verdict(list("IIIIIN")) == "above"
    assert slops.fleet_verdict(list("IIIINN")) == "above"  # 4 of 6 >= 0.65
    assert slops.fleet_verdict(list("IIINNN")) == "grey"
    assert slops.fleet_verdict(list("NNNNGI")) == "below"
    assert slops.fleet_verdict(list("NNN"), sent=7) == "grey"  # most streams unusable
    assert slops.fleet_verdict([]) == "grey"


def test_train_capacity_uses_second_half():
    # first 5 packets ride a burst (no spacing), then 1000-byte packets every 800 us
    recv = [0] * 5 + [800_000 * i for i in range(1, 6)]
    assert slops.train_capacity_mbit(recv, 1000) == pytest.approx(10.0)
    assert slops.train_capacity_mbit([5], 1000) == 0.0


def test_sent_rate():
    s = {"sent": 11, "first_ns": 0, "last_ns": 8_000_000}
    assert slops.sent_rate_mbit(s, 1000) == pytest.approx(10.0)
    assert slops.sent_rate_mbit({"sent": 1, "first_ns": 5, "last_ns": 5}, 1000) == 0.0


# ---------------------------------------------------------------- the search


def oracle(avail: float, grey: float = 0.0):
    """Fleet verdicts of a path with ``avail`` Mbit/s and a grey band around it."""
    def verdict(rate: float) -> str:
        if rate > avail + grey:
            return "above"
        if rate < avail - grey:
            return "below"
        return "grey"
    return verdict


@pytest.mark.parametrize("avail,start_hi", [(6.0, 11.0), (10.0, 11.0), (48.0, 55.0),
                                            (3.0, 11.0), (9.0, 6.0)])
def test_search_converges_around_available_bandwidth(avail, start_hi):
    search, verdict, rates = slops.RateSearch(hi=start_hi), oracle(avail), []
    while not search.done():
        rate = search.next_rate()
        rates.append(rate)
        search.update(rate, verdict(rate))
        assert len(rates) < 20
    assert search.lo <= avail <= search.hi
    if not search.grey:  # a fleet exactly at the available rate is grey
        assert search.hi - search.lo <= search.resolution()
    assert abs(search.estimate() - avail) <= 0.05 * avail
    assert search.hi_verified


def test_search_first_fleet_is_half_the_capacity_bound():
    search = slops.RateSearch(hi=12.0)
    assert search.next_rate() == 6.0
    search.update(6.0, "below")
    assert (search.lo, search.next_rate()) == (6.0, 9.0)


def test_search_with_grey_region_reports_its_middle():
    search, verdict = slops.RateSearch(hi=12.0), oracle(6.0, grey=0.5)
    for _ in range(20):
        if search.done():
            break
        rate = search.next_rate()
        search.update(rate, verdict(rate))
    assert search.done()
    assert search.grey and all(5.5 <= g <= 6.5 for g in search.grey)
    res = search.resolution()
    assert 5.5 - res <= search.lo and search.hi <= 6.5 + res
    assert abs(search.estimate() - 6.0) <= 0.5


def test_search_verifies_trusted_upper_bound_before_stopping():
    search = slops.RateSearch(hi=10.0)
    search.lo = 9.8
    assert not search.done() and search.next_rate() == 10.0
    search.update(10.0, "below")  # the bound was wrong: widen by half
    assert (search.lo, search.hi, search.hi_verified) == (10.0, 15.0, False)


def test_search_caps_at_the_senders_limit():
    search = slops.RateSearch(hi=1000.0)
    search.update(500.0, "sender_limited")  # a fleet at 500 Mbit/s could not be sent
    assert (search.max_rate, search.hi, search.hi_verified) == (475.0, 475.0, False)
    verdict = oracle(2000.0)
    while not search.done():
        rate = search.next_rate()
        search.update(rate, verdict(rate))
    assert search.lo == 475.0  # reported as "at least"


def test_search_stops_at_max_rate():
    search = slops.RateSearch(hi=20.0, max_rate=20.0)
    verdict = oracle(1000.0)
    steps = 0
    while not search.done():
        rate = search.next_rate()
        search.update(rate, verdict(rate))
        steps += 1
    assert search.lo == 20.0 and steps < 12


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("body,message", [
    ([], "body must be a JSON object"),
    ({"dst_ip": "10.0.0.6", "speed": 1}, "field 'speed' is not one of dst_ip, dst_key, "
     "dst_name, dst_url, max_bytes, max_duration, max_rate_mbit, method, packet_size, "
     "packets, streams"),
    ({"dst_ip": "10.0.0.6", "dst_name": "h6"}, "fields 'dst_name' and 'dst_key' go together"),
    ({"dst_ip": "10.0.0.6", "dst_name": "h 6", "dst_key": {"key": "0" * 64,
                                                           "ticket": "0" * 64}},
     "field 'dst_name' must be an agent name"),
    ({"dst_ip": "10.0.0.6", "dst_name": "h6", "dst_key": {"key": "0" * 64}},
     "field 'dst_key' must be an object with 'key' and 'ticket', 64 hex digits each"),
    ({}, "field 'dst_ip' must be an IPv4 address"),
    ({"dst_ip": "h6"}, "field 'dst_ip' must be an IPv4 address"),
    ({"dst_ip": "10.0.0.6", "dst_url": "ftp://x"},
     "field 'dst_url' must be an http:// or https:// URL"),
    ({"dst_ip": "10.0.0.6", "method": "iperf"}, "method 'iperf' is not one of slops, bulk"),
    ({"dst_ip": "10.0.0.6", "max_duration": 61}, "max_duration 61 is out of range [1, 60]"),
    ({"dst_ip": "10.0.0.6", "max_duration": "5"}, "max_duration must be a number, not str"),
    ({"dst_ip": "10.0.0.6", "max_bytes": 200_000_001},
     "max_bytes 200000001 is out of range 100000..200000000"),
    ({"dst_ip": "10.0.0.6", "max_bytes": 1e6}, "max_bytes must be an integer, not float"),
    ({"dst_ip": "10.0.0.6", "max_rate_mbit": 5000},
     "max_rate_mbit 5000 is out of range [1, 1000]"),
    ({"dst_ip": "10.0.0.6", "packet_size": 9000}, "packet_size 9000 is out of range 200..1500"),
    ({"dst_ip": "10.0.0.6", "streams": True}, "streams must be an integer, not bool"),
])
def test_parse_params_errors_name_the_field(body, message):
    with pytest.raises(AgentError) as err:
        bw.parse_params(body)
    assert (err.value.status, err.value.message) == (400, message)


def test_parse_params_defaults():
    p = bw.parse_params({"dst_ip": "10.0.0.6"})
    assert (p.dst_url, p.method, p.max_duration, p.max_bytes) == (
        "http://10.0.0.6:8000", "slops", 10.0, 20_000_000)


def test_result_json_units():
    r = bw.result_json("10.0.0.5", "10.0.0.6", "slops", 9.52, 9.0, 10.04, 5.123456, 1000, 30)
    assert r == {"mbit_s": 9.52, "mbytes_s": 1.19, "range_mbit_s": [9.0, 10.04],
                 "method": "slops", "duration_s": 5.123, "probe_bytes": 1000, "streams": 30,
                 "src": "10.0.0.5", "dst": "10.0.0.6"}


# ---------------------------------------------------------------- REST boundary


def call(agent, method, path, body=None):
    kw = {"method": method}
    if body is not None:
        kw["body"] = json.dumps(body).encode()
        kw["content_type"] = "application/json"
    resp = agent.handle(webob.Request.blank(path, **kw))
    return resp.status_int, json.loads(resp.body)


@pytest.fixture
def agent():
    """The bandwidth routes of an agent at 127.0.0.1 (``BandwidthApi``)."""
    api = bandwidth_api("127.0.0.1", HttpClient())
    yield api
    api.sessions.close_all()


def test_rest_errors(agent):
    assert call(agent, "GET", "/agent/v1/bandwidth") == (
        405, {"error": "use POST /agent/v1/bandwidth"})
    assert call(agent, "POST", "/agent/v1/bandwidth", {"dst_ip": "x"}) == (
        400, {"error": "field 'dst_ip' must be an IPv4 address"})
    assert call(agent, "GET", "/agent/v1/bandwidth/receive/abc") == (
        404, {"error": "no receive session 'abc'"})
    assert call(agent, "POST", "/agent/v1/bandwidth/other", {}) == (
        404, {"error": "no such resource /agent/v1/bandwidth/other"})
    assert call(agent, "POST", "/agent/v1/bandwidth/receive", {"duration": 0}) == (
        400, {"error": "field 'duration' must be between 1 and 65"})
    resp = agent.handle(webob.Request.blank("/agent/v1/bandwidth", method="POST",
                                            body=b"{nope"))
    assert (resp.status_int, resp.json) == (400, {"error": "body is not valid JSON"})


def test_receive_session_records_probe_packets(agent):
    import socket

    from host_agent.bandwidth.worker import HEADER, MAGIC

    status, opened = call(agent, "POST", "/agent/v1/bandwidth/receive", {"duration": 5})
    assert status == 200 and opened["method"] == "slops"
    sid, port = opened["session"], opened["port"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seq in range(3):
            s.sendto(HEADER.pack(MAGIC, int(sid, 16), 7, seq, 1000 + seq) + b"\0" * 100,
                     ("127.0.0.1", port))
        s.sendto(HEADER.pack(MAGIC, int(sid, 16) ^ 1, 7, 9, 0), ("127.0.0.1", port))  # other
        s.sendto(b"junk", ("127.0.0.1", port))

    def fetched():
        got = call(agent, "GET", f"/agent/v1/bandwidth/receive/{sid}?streams=7,8")[1]
        return got if len(got["streams"]["7"]["seq"]) == 3 else None

    from testing.procs import wait_until

    got = wait_until(fetched, timeout=5)
    assert got["streams"]["7"]["send_ns"] == [1000, 1001, 1002]
    assert got["streams"]["8"] == {"seq": [], "send_ns": [], "recv_ns": []}
    assert got["bytes"] == 3 * (HEADER.size + 100 + 28)
    assert call(agent, "GET", f"/agent/v1/bandwidth/receive/{sid}?streams=a")[0] == 400
    assert call(agent, "DELETE", f"/agent/v1/bandwidth/receive/{sid}") == (
        200, {"session": sid, "closed": True})
    assert call(agent, "DELETE", f"/agent/v1/bandwidth/receive/{sid}")[0] == 404


def test_receiver_session_limit(agent):
    for _ in range(MAX_RECEIVE_SESSIONS):
        assert call(agent, "POST", "/agent/v1/bandwidth/receive", {"duration": 5})[0] == 200
    assert call(agent, "POST", "/agent/v1/bandwidth/receive", {}) == (
        503, {"error": "receiver busy: 4 probe sessions open"})


def test_destination_agent_not_running(agent):
    from testing.procs import free_port

    port = free_port()
    status, body = call(agent, "POST", "/agent/v1/bandwidth",
                        {"dst_ip": "127.0.0.1", "dst_url": f"http://127.0.0.1:{port}"})
    assert (status, body) == (502, {"error": f"destination agent not running at http://127.0.0.1:"
                                             f"{port}/agent/v1/bandwidth/receive "
                                             "(connection refused)"})


@pytest.fixture
def slow_peer():
    """A destination that accepts ``receive`` but answers only when released."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            release.wait(10)
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "released"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_concurrent_probe_on_same_pair_is_409(agent, slow_peer):
    port, release = slow_peer
    body = {"dst_ip": "127.0.0.1", "dst_url": f"http://127.0.0.1:{port}", "max_duration": 3}
    first: list = []
    t = threading.Thread(target=lambda: first.append(call(agent, "POST", "/agent/v1/bandwidth",
                                                          body)))
    t.start()
    from testing.procs import wait_until

    wait_until(lambda: agent.prober.busy("127.0.0.1"), timeout=5)
    assert call(agent, "POST", "/agent/v1/bandwidth", body) == (
        409, {"error": "a bandwidth probe to 127.0.0.1 is already running"})
    release.set()
    t.join(10)
    assert first == [(502, {"error": f"destination agent http://127.0.0.1:{port}/agent/v1/"
                                     "bandwidth/receive answered 500: released"})]
    assert not agent.prober.busy("127.0.0.1")


def test_slow_destination_times_out_within_cap(agent, slow_peer):
    port, _ = slow_peer
    start = time.monotonic()
    status, body = call(agent, "POST", "/agent/v1/bandwidth",
                        {"dst_ip": "127.0.0.1", "dst_url": f"http://127.0.0.1:{port}",
                         "max_duration": 2})
    elapsed = time.monotonic() - start
    assert status == 504 and body["error"].startswith(
        f"destination unreachable at http://127.0.0.1:{port}/agent/v1/bandwidth/receive")
    assert elapsed < 2.0


def test_legacy_query_bw_refuses_foreign_src(agent):
    with pytest.raises(AgentError) as err:
        agent.prober.legacy_query_bw("10.0.0.9", "10.0.0.6")
    assert err.value.status == 400
    assert err.value.message == ("query bw: src 10.0.0.9 is not this agent (127.0.0.1); "
                                 "send the query to the source host's agent")


def test_requests_to_the_peer_are_signed_with_the_agents_signer():
    from measure_common.auth import HmacAuth, Verifier, agent_key, peer_credential, unwrap

    secret = b"s" * 32
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, body, dict(self.headers)))
            self.send_response(409)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "busy"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # h1's call to h2, signed with the pair key the controller handed h1
        cred = peer_credential(secret, "h1", "h2")
        pair = unwrap(agent_key(secret, "h1"), "h2", cred["key"])
        signer = HmacAuth(pair, sender="h1", receiver="h2", ticket=cred["ticket"])
        signed = bandwidth_api("127.0.0.1", HttpClient(signer))
        port = server.server_address[1]
        status, body = call(signed, "POST", "/agent/v1/bandwidth",
                            {"dst_ip": "127.0.0.1", "dst_url": f"http://127.0.0.1:{port}"})
    finally:
        server.shutdown()
        server.server_close()
    assert (status, body) == (409, {"error": f"destination agent http://127.0.0.1:{port}/agent/"
                                             "v1/bandwidth/receive answered 409: busy"})
    path, sent, headers = seen[0]
    assert path == "/agent/v1/bandwidth/receive"
    assert json.loads(sent) == {"method": "slops", "duration": 12.0}
    # raises AuthError if not
    assert Verifier.for_agent("h2", agent_key(secret, "h2")).verify(
        "POST", path, sent, headers) == "h1"


@pytest.mark.netns  # needs root: the pacing is promised under SCHED_FIFO (raise_priority)
@pytest.mark.parametrize("rate_mbit", [20.0, 150.0])
def test_worker_paces_streams_and_receiver_timestamps_every_packet(agent, rate_mbit):
    from host_agent.bandwidth.worker import Worker

    status, opened = call(agent, "POST", "/agent/v1/bandwidth/receive", {"duration": 10})
    assert status == 200
    with Worker(lifetime=10) as worker:
        streams = [{"id": i, "count": 80, "size": 1000, "rate_bps": rate_mbit * 1e6,
                    "pause": 0.01} for i in (1, 2, 3)]
        reply = worker.call({"op": "send_fleet", "host": "127.0.0.1", "port": opened["port"],
                             "session": int(opened["session"], 16), "streams": streams,
                             "timeout": 5}, timeout=8)
    assert [s["sent"] for s in reply["streams"]] == [80, 80, 80]
    for s in reply["streams"]:
        assert 0.95 * rate_mbit <= slops.sent_rate_mbit(s, 1000) <= 1.1 * rate_mbit, s
    from testing.procs import wait_until

    def complete():
        got = call(agent, "GET", f"/agent/v1/bandwidth/receive/{opened['session']}"
                                 "?streams=1,2,3")[1]["streams"]
        return got if all(len(got[k]["seq"]) == 80 for k in "123") else None

    got = wait_until(complete, timeout=5)
    for k in "123":
        assert got[k]["seq"] == list(range(80))
        recv = got[k]["recv_ns"]
        assert all(b >= a for a, b in zip(recv, recv[1:], strict=False))  # kernel stamps
