"""The controller's own options, and how they become ``ryu-manager`` arguments.

``measure-controller`` is ``ryu-manager`` with the measurement app. Its
deployment options (ports, listen address, state directory, token and
secret files, the URL agents are told, the overlay fan-out, open reads) are
named here once, so that a config file (``--config``, see
``measure_common.config``) and flags set them alike. They reach the app as
``ryu-manager`` arguments and the ``MEASURE_*`` environment variables that
``ryu_app`` reads (docs/design.md); any other argument goes to
``ryu-manager`` unchanged, so ``measure-controller --ofp-tcp-listen-port
6653 --wsapi-port 8080 --observe-links ryu_app.app`` still works.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence

from measure_common.config import (
    CONFIG_ERROR_EXIT,
    ConfigError,
    add_config_arguments,
    check_secret_file,
    parse_known_with_config,
)
from measure_model.version import __version__

DEFAULT_APP = "ryu_app.app"
_APP_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="measure-controller", allow_abbrev=False,
        description="SDN measurement controller (Ryu app, REST /measure/v1). Options not "
                    "listed here are passed to ryu-manager.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_config_arguments(p)
    p.add_argument("--openflow-port", type=int, default=6653,
                   help="OpenFlow listen port (default 6653)")
    p.add_argument("--openflow-listen", default=None,
                   help="OpenFlow listen address (default: every address; give the address "
                        "the switches reach, e.g. 127.0.0.1 for Mininet). TLS: Ryu's "
                        "--ctl-privkey, --ctl-cert, --ca-certs and --ofp-ssl-listen-port")
    p.add_argument("--rest-listen", default="0.0.0.0",
                   help="REST listen address (default 0.0.0.0)")
    p.add_argument("--rest-port", type=int, default=8080, help="REST port (default 8080)")
    p.add_argument("--state-dir", default=None,
                   help="SQLite store, token and secret (default /var/lib/endhost-measure)")
    p.add_argument("--store", default=None, metavar="URL",
                   help="keep the state in PostgreSQL (postgresql://user@host/db) instead of "
                        "STATE_DIR's SQLite file; controllers sharing it elect one leader")
    p.add_argument("--token-file", default=None,
                   help="REST bearer token file (default STATE_DIR/controller.token; created "
                        "0600 on first start)")
    p.add_argument("--secret-file", default=None,
                   help="HMAC secret shared with the agents (default STATE_DIR/agent.secret; "
                        "created 0600 on first start; must not be readable by others)")
    p.add_argument("--controller-url", default=None,
                   help="URL agents are told to report to (default http://192.168.100.254:8080)")
    p.add_argument("--fanout", type=int, default=None,
                   help="most children per agent in the overlay tree (default 4)")
    p.add_argument("--reads-open", action="store_true",
                   help="answer GET requests without a token (mutations still need one)")
    p.add_argument("--log-file", default=None, help="also write the log to this file")
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("openflow_port", "rest_port"):
        port = getattr(args, name)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{name.replace('_', '-')} {port} is out of range 1..65535")
    if args.fanout is not None and not 1 <= args.fanout <= 64:
        raise ConfigError(f"fanout {args.fanout} is out of range 1..64")
    if args.secret_file and os.path.exists(args.secret_file):
        check_secret_file(args.secret_file)
    if args.store and not args.store.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"store {args.store!r}: only postgresql:// URLs are supported")
    if args.state_dir and os.path.exists(args.state_dir) and not os.path.isdir(args.state_dir):
        raise ConfigError(f"state_dir {args.state_dir}: not a directory")


def ryu_invocation(argv: Sequence[str]) -> tuple[list[str], dict[str, str], bool]:
    """``(ryu-manager argv, environment to set, check_only)`` for our argv.

    Raises ConfigError for a bad config file or option value.
    """
    args, rest = parse_known_with_config(build_parser(), list(argv))
    _check(args)
    env: dict[str, str] = {}
    for name, var in (("state_dir", "MEASURE_STATE_DIR"), ("token_file", "MEASURE_TOKEN_FILE"),
                      ("secret_file", "MEASURE_SECRET_FILE"),
                      ("controller_url", "MEASURE_CONTROLLER_URL"),
                      ("store", "MEASURE_STORE_URL")):
        if getattr(args, name):
            env[var] = str(getattr(args, name))
    if args.fanout is not None:
        env["MEASURE_FANOUT"] = str(args.fanout)
    if args.reads_open:
        env["MEASURE_READS_OPEN"] = "1"
    ryu = list(rest)
    if "--ofp-tcp-listen-port" not in ryu:
        ryu += ["--ofp-tcp-listen-port", str(args.openflow_port)]
    if args.openflow_listen and "--ofp-listen-host" not in ryu:
        ryu += ["--ofp-listen-host", args.openflow_listen]
    if "--wsapi-port" not in ryu:
        ryu += ["--wsapi-port", str(args.rest_port)]
    if "--wsapi-host" not in ryu:
        ryu += ["--wsapi-host", args.rest_listen]
    if args.log_file and "--log-file" not in ryu:
        ryu += ["--log-file", args.log_file]
    if "--observe-links" not in ryu:
        ryu.insert(0, "--observe-links")
    if not any(_APP_NAME.fullmatch(a) for a in rest):
        ryu.append(DEFAULT_APP)
    return ryu, env, args.check_config


def config_error_exit(exc: ConfigError) -> int:
    """Print ``exc`` the way every command reports a configuration error."""
    import sys

    print(f"measure-controller: {exc}", file=sys.stderr)
    return CONFIG_ERROR_EXIT
