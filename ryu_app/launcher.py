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

        quiet_server.__dict__["_measure_no_debug"] = True  # a marker: patched once
        eventlet.wsgi.server = quiet_server


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
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    from ryu.cmd import manager

    sys.argv = ["ryu-manager", *args]
    manager.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
