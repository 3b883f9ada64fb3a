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
    add_options,
    check_bounds,
    check_secret_file,
    parse_known_with_config,
)
from measure_common.settings import OPTIONS
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
    add_options(p, "controller")  # every key is a row of measure_common.settings
    return p


def _check(args: argparse.Namespace) -> None:
    check_bounds(args, "controller")
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
    for name, row in OPTIONS.items():
        value = getattr(args, name)
        if row.name is None:
            continue  # a ryu-manager argument, below
        if row.kind == "bool":
            if value:
                env[row.name] = "1"
        elif value is not None and value != "":
            env[row.name] = str(value)
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
