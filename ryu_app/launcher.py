"""Controller launcher: ``ryu-manager`` with the eventlet compatibility fix.

Ryu 4.34 imports ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet 0.33+
removed; no eventlet release both has it and runs on Python 3.11. Ryu only
compares against the object, so a sentinel is enough. The sentinel must be
in place before anything imports ``ryu.app.wsgi``, which is why this module
imports Ryu lazily.

The launcher starts the measurement app with ``--observe-links`` (LLDP
link discovery), OpenFlow on 6653 and its REST API on port 8080. Its own
options and config file (``--config``, ``--check-config``, ``--version``)
are in ``ryu_app.controller_options``; any other argument is passed to
``ryu-manager`` unchanged.

Start-up and shutdown are quiet and prompt: eventlet is monkey-patched
first, before anything creates a lock (Ryu patches threads only after its
logging is set up, hence eventlet's "5 RLock(s) were not greened"), its
deprecation notice is not shown to operators, and SIGINT/SIGTERM stop the
controller at once (Ryu's own ``KeyboardInterrupt`` path only works when the
signal lands in the main green thread: the first Ctrl-C was usually lost in
the hub and the second ended in a traceback).
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

from measure_common.config import ConfigError
from ryu_app.controller_options import config_error_exit, ryu_invocation


def patch_eventlet() -> None:
    """Give eventlet.wsgi the ALREADY_HANDLED name Ryu expects, and route Ryu's
    server through the connection guard (``measure_common.serverguard``:
    deadlines, per-source caps, a bounded pool with slots kept for agents and
    the loopback) with ``debug=False`` (Ryu starts it with eventlet's default,
    ``debug=True``, which sends a Python traceback to the client when a
    handler raises)."""
    import eventlet.wsgi

    from measure_common.serverguard import CONTROLLER_GUARD, guarded_server

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    if not getattr(eventlet.wsgi.server, "_measure_guarded", False):
        def server(sock, site, log=None, **kwargs):
            guarded_server(sock, site, CONTROLLER_GUARD, log=log, **kwargs)

        server._measure_guarded = True  # type: ignore[attr-defined]
        eventlet.wsgi.server = server


def patch_ryu_tls() -> None:
    """Make Ryu's OpenFlow TLS server build its TLS context once.

    Ryu 4.34's ``hub.StreamServer`` pops the key, certificate and CA out of its
    arguments while wrapping the *first* connection, so every later switch got
    a bare ``ssl.wrap_socket`` without a certificate and failed its handshake;
    a failed handshake also raised out of the connection's green thread. Here
    the context (TLS 1.2 or newer, the client certificate required when a CA
    is given) is made once, and a failed handshake closes that connection
    only. Must run before ``ryu.controller.controller`` is imported.
    """
    import ssl

    from ryu.lib import hub

    base = hub.StreamServer
    if getattr(base, "_measure_tls", False):
        return

    class StreamServer(base):  # type: ignore[misc,valid-type]
        _measure_tls = True

        def __init__(self, listen_info, handle=None, backlog=None, spawn="default",
                     **ssl_args):
            super().__init__(listen_info, handle, backlog, spawn)
            if not ssl_args:
                return
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(ssl_args["certfile"], ssl_args["keyfile"])
            if ssl_args.get("ca_certs"):
                ctx.load_verify_locations(ssl_args["ca_certs"])
                ctx.verify_mode = ssl_args.get("cert_reqs", ssl.CERT_REQUIRED)

            def wrap_and_handle(sock, addr):
                try:
                    tls = ctx.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    print(f"measure-controller: OpenFlow TLS handshake from {addr} failed: "
                          f"{exc}", file=sys.stderr, flush=True)
                    sock.close()
                    return
                handle(tls, addr)

            self.handle = wrap_and_handle

    hub.StreamServer = StreamServer


def green_first() -> None:
    """Monkey-patch everything before any lock exists; hide the deprecation notice."""
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()


def _on_signal(signum: int, _frame: object) -> None:
    """Exit at once, status 0: every change is already committed to the SQLite store
    (tasks are stored before a call answers) and agents keep their tasks."""
    print(f"measure-controller: stopped ({signal.Signals(signum).name})", file=sys.stderr,
          flush=True)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    try:
        args, env, check_only = ryu_invocation(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        return config_error_exit(exc)
    if check_only:
        print("measure-controller: configuration is valid")
        return 0
    os.environ.update(env)
    green_first()
    patch_eventlet()
    patch_ryu_tls()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    from ryu.cmd import manager

    sys.argv = ["ryu-manager", *args]
    manager.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
