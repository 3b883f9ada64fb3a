"""Config files for the long-running commands (``measure-agent``, ``measure-controller``).

A config file is a YAML mapping whose keys are the command's long options
with ``-`` written as ``_`` (``data_ip: 10.0.0.2`` is ``--data-ip
10.0.0.2``). The command's own ``argparse`` parser is the schema: there is
no second table of option names, types or defaults to drift from the flags.
Every key of both commands is a row of ``measure_common.settings`` (its
type, default, bound, choices and doc; the controller's keys that reach the
Ryu app also name their ``MEASURE_*`` variable): :func:`add_options` builds
the flags from those rows and :func:`check_bounds` checks their bounds, so
a config-file key, its flag and its variable are one row.
A value is checked against the option it sets (flags are booleans; numbers
are YAML numbers, never strings; choices must match), then becomes that
option's default, so a flag on the command line still overrides the file.

Errors name the file, the line and the field, like policy errors, and
suggest the nearest option for a misspelt key::

    config /etc/measure/agent.yaml line 4: field 'queus': unknown field
    (did you mean 'queues'?)

``--check-config`` validates the file (and the files it names, such as the
secret) and exits 0 or 2 without starting anything. Exit status 2 for every
configuration error lets a systemd unit stop instead of restarting in a loop
(``RestartPreventExitStatus=2``).

The YAML is read with the same safe loader as policies (no duplicate keys,
no anchors, YAML 1.2-like scalars).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from measure_common.auth import CredentialFileError, read_credential
from measure_common.settings import options
from measure_model.policy import _PolicyLoader

MAX_CONFIG_BYTES = 64 * 1024
CONFIG_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A config file (or a file it names) is unusable; the message says where."""


def _where(path: str, line: int | None) -> str:
    return f"config {path}" + (f" line {line}" if line else "")


def _read_mapping(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's top-level mapping and the line of each key."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path}: more than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not valid UTF-8") from None
    try:
        loader = _PolicyLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{_where(path, line)}: invalid YAML: {detail}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"config {path}: must be a mapping of option: value")
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return data, lines


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key -> the parser action it sets (long options only, no help/config)."""
    out = {}
    for action in parser._actions:  # argparse has no public listing of its actions
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in ("help", "config", "check_config", "version"):
            continue
        out[longs[0][2:].replace("-", "_")] = action
    return out


def _value(action: argparse.Action, value: Any) -> Any:
    """Check ``value`` against what the option accepts; return the converted value."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {type(value).__name__}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    kind: Callable[[Any], Any] | None = action.type  # type: ignore[assignment]
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or (kind is int and not isinstance(value, int)):
            name = "an integer" if kind is int else "a number"
            raise ValueError(f"must be {name}, not {type(value).__name__}")
        value = kind(value)
    elif kind is None or kind is str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
    else:
        value = kind(str(value))
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def load_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Parse ``path`` against ``parser``'s options: ``{dest: value}`` or ConfigError."""
    data, lines = _read_mapping(path)
    options = _options(parser)
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = _where(path, lines.get(str(key)))
        if not isinstance(key, str) or key not in options:
            close = difflib.get_close_matches(str(key), list(options), n=1, cutoff=0.7)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: field '{key}': unknown field{hint}")
        action = options[key]
        try:
            out[action.dest] = _value(action, value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: field '{key}': {exc}") from None
    return out


def check_secret_file(path: str, field: str = "secret_file") -> None:
    """The shared secret must exist and pass the credential checks of ``measure_common.auth``."""
    try:
        read_credential(path)
    except OSError as exc:
        raise ConfigError(f"{field} {path}: {exc.strerror}") from None
    except CredentialFileError as exc:
        raise ConfigError(f"{field} {exc}") from None


_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float}


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """A flag for each config-file key of ``command`` in the settings table. A key that
    also sets a variable has no parser default: given or not is then known, and the
    variable's own default applies when it is not given."""
    for key, row in options(command).items():
        flag = "--" + key.replace("_", "-")
        if row.kind == "bool":
            parser.add_argument(flag, action="store_true",
                                help=row.doc + (f" (env {row.name})" if row.name else ""))
            continue
        notes = ["required" if row.required else
                 f"default {row.describe_default()}" if row.describe_default() != "(none)"
                 else "",
                 f"{row.bound[0]}..{row.bound[1]}" if row.bound else "",
                 f"env {row.name}" if row.name else ""]
        shown = ", ".join(n for n in notes if n)
        parser.add_argument(flag, type=_TYPES.get(row.kind, str), choices=row.choices,
                            required=row.required,
                            default=None if row.name else row.default,
                            help=f"{row.doc} ({shown})" if shown else row.doc)


def check_bounds(args: argparse.Namespace, command: str) -> None:
    """ConfigError naming the key when a value of ``command``'s options is out of its
    row's bound."""
    for key, row in options(command).items():
        value = getattr(args, key, None)
        if row.bound and value is not None and not row.bound[0] <= value <= row.bound[1]:
            raise ConfigError(f"{key} {value} is out of range {row.bound[0]}..{row.bound[1]}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--check-config`` for a command's parser."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of options (keys are the long options with _ for -); "
                             "flags given on the command line override it")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config file and the files it names, then exit "
                             "(0 valid, 2 not)")


def parse_with_config(parser: argparse.ArgumentParser,
                      argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` are defaults that flags override.

    A ConfigError propagates to the caller, which prints it and exits
    :data:`CONFIG_ERROR_EXIT`.
    """
    args, rest = parse_known_with_config(parser, argv)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def parse_known_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                            ) -> tuple[argparse.Namespace, list[str]]:
    """:func:`parse_with_config` that returns the arguments it does not know."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    first, _ = pre.parse_known_args(argv)
    if first.config:
        values = load_config(first.config, parser)
        for action in parser._actions:
            if action.dest in values:
                action.required = False  # given by the file; a flag may still override it
        parser.set_defaults(**values)
    return parser.parse_known_args(argv)
