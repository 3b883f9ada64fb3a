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
"""

from __future__ import annotations

import os
import sys

from measure_model.config import ConfigError
from ryu_app.controller_options import config_error_exit, ryu_invocation


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
    try:
        args, env, check_only = ryu_invocation(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        return config_error_exit(exc)
    if check_only:
        print("measure-controller: configuration is valid")
        return 0
    os.environ.update(env)
    patch_eventlet()
    from ryu.cmd import manager

    sys.argv = ["ryu-manager", *args]
    manager.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
