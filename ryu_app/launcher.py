"""Controller launcher: ``ryu-manager`` with the eventlet compatibility fix.

Ryu 4.34 imports ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet 0.33+
removed; no eventlet release both has it and runs on Python 3.11. Ryu only
compares against the object, so a sentinel is enough. The sentinel must be
in place before anything imports ``ryu.app.wsgi``, which is why this module
imports Ryu lazily.

With no arguments the launcher starts the measurement app with
``--observe-links`` (LLDP link discovery) and its REST API on port 8080.
Any arguments are passed to ``ryu-manager`` unchanged.
"""

from __future__ import annotations

import sys

DEFAULT_APP = "ryu_app.measure_app"
DEFAULT_ARGS = ["--observe-links", "--wsapi-port", "8080", DEFAULT_APP]


def patch_eventlet() -> None:
    """Give eventlet.wsgi the ALREADY_HANDLED name Ryu expects, and make its
    server default to ``debug=False`` (Ryu starts it with eventlet's default,
    ``debug=True``, which sends a Python traceback to the client when a
    handler raises)."""
    import functools

    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    server = eventlet.wsgi.server
    if not getattr(server, "_measure_no_debug", False):
        @functools.wraps(server)
        def quiet_server(*args, **kwargs):
            kwargs.setdefault("debug", False)
            return server(*args, **kwargs)

        quiet_server._measure_no_debug = True
        eventlet.wsgi.server = quiet_server


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = list(DEFAULT_ARGS)
    patch_eventlet()
    from ryu.cmd import manager

    sys.argv = ["ryu-manager", *args]
    manager.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
