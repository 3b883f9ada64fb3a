"""The connection guard's admission rule (pure logic) and its deadlines on a real
eventlet server in this process."""

from __future__ import annotations

import pytest

from measure_common.serverguard import Guard, GuardLimits

pytestmark = pytest.mark.unit


def _guard(**kw) -> Guard:
    limits = GuardLimits(max_connections=6, reserved=2, per_source=2, **kw)
    return Guard(limits, trusted=lambda ip: ip == "10.0.0.254")


def test_per_source_cap_sheds_the_newest_and_frees_on_release():
    g = _guard()
    assert g.admit("10.0.0.5") and g.admit("10.0.0.5")
    assert not g.admit("10.0.0.5")
    assert g.stats()["shed_source"] == 1
    g.release("10.0.0.5")
    assert g.admit("10.0.0.5")
    assert g.stats()["active"] == 2 and g.stats()["sources"] == 1


def test_reserved_slots_are_kept_for_control_sources():
    g = _guard()
    for i in range(4):  # untrusted room: 6 - 2
        assert g.admit(f"10.0.1.{i}")
    assert not g.admit("10.0.1.9")  # pool room for untrusted sources is full
    assert g.stats()["shed_full"] == 1
    # the controller (trusted hook) and the loopback take the reserve, past the per-source cap
    assert g.admit("10.0.0.254") and g.admit("127.0.0.1")
    assert not g.admit("::1")  # the whole pool is full: even control traffic is shed
    assert g.stats()["active"] == 6


def test_a_failing_trust_hook_counts_as_untrusted():
    def broken(ip: str) -> bool:
        raise RuntimeError("boom")

    g = Guard(GuardLimits(max_connections=3, reserved=1, per_source=1), trusted=broken)
    assert g.admit("10.0.0.1") and not g.admit("10.0.0.1")


def test_limits_are_checked():
    with pytest.raises(ValueError, match="reserved"):
        GuardLimits(max_connections=4, reserved=4)
    with pytest.raises(ValueError, match="header_timeout"):
        GuardLimits(header_timeout=0)


def test_header_and_body_deadlines_cut_slow_requests_on_a_real_server():
    import eventlet

    from measure_common.serverguard import guarded_server

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Length", str(len(body) + 2))])
        return [b"ok" + body]

    listener = eventlet.listen(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    guard = Guard(GuardLimits(header_timeout=0.5, body_timeout=0.5, socket_timeout=5,
                              idle_timeout=5))
    server = eventlet.spawn(guarded_server, listener, app, guard, log_output=False)
    try:
        def talk(chunks: list[bytes], pause: float) -> bytes:
            s = eventlet.green.socket.create_connection(("127.0.0.1", port))
            s.settimeout(5)
            try:
                for chunk in chunks:
                    s.sendall(chunk)
                    eventlet.sleep(pause)
                return s.recv(4096)
            except OSError:
                return b"<reset>"
            finally:
                s.close()

        assert talk([b"GET / HTTP/1.0\r\n\r\n"], 0).endswith(b"ok")
        # headers trickled one line every 0.2 s: each read is quick, the whole is late
        trickle = [b"GET / HTTP/1.0\r\n"] + [b"X-A: b\r\n"] * 5 + [b"\r\n"]
        assert talk(trickle, 0.2) in (b"", b"<reset>")
        # a body that stops half-way is cut at its deadline, without an answer
        assert talk([b"POST / HTTP/1.0\r\nContent-Length: 10\r\n\r\nabc"], 1.0) in (b"", b"<reset>")
        assert guard.stats()["deadline_cut"] == 2
        assert talk([b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nxyz"], 0).endswith(b"okxyz")
        assert guard.stats()["active"] == 0
    finally:
        server.kill()
        listener.close()
