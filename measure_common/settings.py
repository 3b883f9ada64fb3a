"""Every ``MEASURE_*`` environment variable and controller config-file key, in one table.

Modelled on FAUCET's ``DEFAULTS`` plus ``get_setting``: each :class:`Setting`
row names the variable, its type, default, bound and meaning, and (when
``measure-controller`` has a flag and config-file key for it) the option
that sets it. Nothing else in the tree reads ``os.environ``: code asks
:func:`get_setting`, and code that starts a child process builds the child's
environment with :func:`child_env`.

A value that is configured (a constructor argument, a command-line option,
a config-file key) always wins: callers ask for the setting only when they
were given nothing (``fanout if fanout is not None else
get_setting("MEASURE_FANOUT")``). A bad value raises :class:`SettingError`
naming the variable, never a bare ``ValueError`` from ``int()``.

Fixed facts the settings' defaults are made of (the state directory, the
names of the files in it, the management network and the controller's
address on it) are defined here once as well.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from measure_model.task import CAPTURE_MODES, PROBE_PORT

#: Where the controller keeps its SQLite store, token and secrets.
DEFAULT_STATE_DIR = "/var/lib/endhost-measure"
TOKEN_FILE_NAME = "controller.token"
SECRET_FILE_NAME = "agent.secret"
WEBHOOK_SECRET_FILE_NAME = "webhook.secret"
#: The management network of measure-net (agents, controller and CLI talk over it).
MGMT_NET = ipaddress.IPv4Network("192.168.100.0/24")
#: The controller's address on the management network.
MGMT_CONTROLLER_IP = str(MGMT_NET[254])
REST_PORT = 8080
DEFAULT_CONTROLLER_URL = f"http://{MGMT_CONTROLLER_IP}:{REST_PORT}"
#: The ``measure`` CLI's default URL (a controller on the same machine).
DEFAULT_CLI_URL = f"http://127.0.0.1:{REST_PORT}"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A ``MEASURE_*`` variable holds a value its row does not accept."""


@dataclass(frozen=True)
class Setting:
    """One row: an environment variable (``name``), a config-file key of a command
    (``option`` for ``commands``), or both (the controller hands its options to the Ryu
    app as variables). ``kind`` is ``str``, ``int``, ``float``, ``bool``, ``list``
    (comma-separated), ``network`` (an address or prefix) or ``path``. A ``path`` row
    with a ``state_file`` defaults to that file in the state directory."""

    name: str | None
    kind: str
    default: Any
    doc: str
    bound: tuple[int, int] | None = None
    option: str | None = None  # the command's flag (with - for _) and config-file key
    state_file: str | None = None
    commands: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    required: bool = False

    def parse(self, text: str) -> Any:
        """``text`` (the variable's value) as this row's type, or SettingError."""
        if self.kind == "int":
            lo, hi = self.bound or (0, 2**31 - 1)
            value = text.strip()
            if not value.isdigit() or not lo <= int(value) <= hi:
                raise SettingError(f"{self.name}={text!r} is not an integer from {lo} to {hi}")
            return int(value)
        if self.kind == "bool":
            low = text.strip().lower()
            if low not in _TRUE + _FALSE:
                raise SettingError(f"{self.name}={text!r} is not one of "
                                   f"{', '.join(_TRUE + _FALSE)}")
            return low in _TRUE
        if self.kind == "list":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if self.kind == "network":
            try:
                return str(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise SettingError(f"{self.name}={text!r} is not an address or prefix") from None
        if not text:
            raise SettingError(f"{self.name} is set but empty")
        return text

    def describe_default(self) -> str:
        """The default as docs show it."""
        if self.state_file:
            return f"STATE_DIR/{self.state_file}"
        if self.kind == "bool":
            return "on" if self.default else "off"
        if self.default is None or self.default == ():
            return "(none)"
        return str(self.default)


def _ctl(name: str | None, kind: str, default: Any, doc: str, option: str,
         **kw: Any) -> Setting:
    return Setting(name, kind, default, doc, option=option, commands=("controller",), **kw)


def _agent(option: str, kind: str, default: Any, doc: str, **kw: Any) -> Setting:
    return Setting(None, kind, default, doc, option=option, commands=("agent",), **kw)


PORT = (1, 65535)

SETTINGS: tuple[Setting, ...] = (
    # controller: variables that its flags and config-file keys set for the Ryu app
    _ctl("MEASURE_STATE_DIR", "path", DEFAULT_STATE_DIR,
         "controller's SQLite store, token and secrets", "state_dir"),
    _ctl("MEASURE_TOKEN_FILE", "path", None,
         "REST bearer token file (created 0600 on first start); the CLI reads it too",
         "token_file", state_file=TOKEN_FILE_NAME),
    _ctl("MEASURE_SECRET_FILE", "path", None,
         "HMAC secret shared with the agents (created 0600 on first start; must not be "
         "readable by others)", "secret_file", state_file=SECRET_FILE_NAME),
    _ctl("MEASURE_STORE_URL", "str", None,
         "keep the state in PostgreSQL (postgresql://user@host/db) instead of STATE_DIR's "
         "SQLite file; controllers sharing it elect one leader", "store"),
    _ctl("MEASURE_CONTROLLER_URL", "str", DEFAULT_CONTROLLER_URL,
         "URL agents are told to report to", "controller_url"),
    _ctl("MEASURE_FANOUT", "int", 4, "most children per agent in the overlay tree", "fanout",
         bound=(1, 64)),
    _ctl("MEASURE_READS_OPEN", "bool", False,
         "answer GET requests without a token (mutations still need one)", "reads_open"),
    # controller: options of measure-controller only (ryu-manager arguments)
    _ctl(None, "int", 6653, "OpenFlow listen port", "openflow_port", bound=PORT),
    _ctl(None, "str", None, "OpenFlow listen address (default: every address; give the "
         "address the switches reach, e.g. 127.0.0.1 for Mininet). TLS: Ryu's "
         "--ctl-privkey, --ctl-cert, --ca-certs and --ofp-ssl-listen-port", "openflow_listen"),
    _ctl(None, "str", "0.0.0.0", "REST listen address", "rest_listen"),
    _ctl(None, "int", REST_PORT, "REST port", "rest_port", bound=PORT),
    _ctl(None, "path", None, "also write the log to this file", "log_file"),
    # controller: variables only
    Setting("MEASURE_AUTH", "bool", True,
            "off: no token and no signatures at all (tests and benchmarks only)"),
    Setting("MEASURE_PROTECT", "list", (),
            "hosts, addresses or prefixes no reaction may block (the management network "
            "and the controller are always protected)"),
    Setting("MEASURE_GATEWAYS", "list", (),
            "the data network's gateways (routers): always protected from reactions, "
            "like the controller"),
    Setting("MEASURE_MGMT_NET", "network", str(MGMT_NET),
            "the management network, always protected from reactions"),
    Setting("MEASURE_PROBE_BUDGET_BPS", "int", 10_000_000,
            "most probe bits per second the busiest host of a path_health mesh may send "
            "(a larger mesh is refused)", bound=(1000, 10_000_000_000)),
    Setting("MEASURE_MAX_ACTIONS", "int", 100, "most reactions active at once",
            bound=(1, 100_000)),
    Setting("MEASURE_MAX_ACTIONS_PER_MINUTE", "int", 30, "most new reactions per minute",
            bound=(1, 100_000)),
    Setting("MEASURE_WEBHOOK_SECRET_FILE", "path", None,
            "HMAC secret that signs webhook calls (created 0600 on first start)",
            state_file=WEBHOOK_SECRET_FILE_NAME),
    # measure-agent: its flags and config-file keys
    _agent("name", "str", None, "agent name, e.g. h2; tags its iptables rules", required=True),
    _agent("controller", "str", None, "controller base URL, e.g. "
           f"{DEFAULT_CONTROLLER_URL}, or several separated by commas (a leader and its "
           "standbys on one shared store: the agent moves on to the next when one does not "
           "answer or answers 503, so it registers with the leader); none for a standalone "
           "agent (no registration)"),
    _agent("listen", "str", None, "HTTP listen address (default: the host of advertise, "
           "else the local address that reaches the controller, else 0.0.0.0)"),
    _agent("port", "int", 8000, "HTTP port", bound=PORT),
    _agent("advertise", "str", None, "URL the controller and overlay peers use to reach "
           "this agent (default http://<data-ip or listen>:<port>)"),
    _agent("data_ip", "str", None,
           "this host's data-network address (registered with the controller)"),
    _agent("exclude_interface", "str", None,
           "interface never captured (the management interface, e.g. h2-mgmt)"),
    _agent("key_file", "path", None, "this agent's own HMAC key (mode 0600; the "
           "controller's HMAC(secret, name), written by measure-net); when given, every "
           "state-changing /agent/v1 request must be signed"),
    _agent("secret_file", "path", None, "the controller's master secret (mode 0600), from "
           "which the agent derives its own key and keeps only that; key_file is better"),
    _agent("insecure", "bool", False, "without key_file or secret_file, accept unsigned /agent/v1 "
           "configuration from anyone (refused with 403 otherwise); only on an isolated "
           "test network"),
    _agent("allow_legacy", "bool", False, "accept the original unauthenticated messages on "
           "POST / (refused with 403 otherwise); only on an isolated test network"),
    _agent("queues", "int", 1, "NFQUEUE queues, one monitor process each (--queue-balance)",
           bound=(1, 16)),
    _agent("queue_num", "int", 0, "first NFQUEUE number", bound=(0, 65535)),
    _agent("max_len", "int", 4096, "kernel queue length per queue; beyond it fail-open "
           "accepts packets unmeasured (counted as missed)", bound=(1, 2**31 - 1)),
    _agent("max_sketches", "int", 32, "most sketches at once (one packet-mark bit each)",
           bound=(1, 32)),
    _agent("max_counters", "int", 128, "most counters in all", bound=(1, 100_000)),
    _agent("max_memory_mb", "float", 256.0,
           "most sketch memory (width x depth x 8 bytes per counter per queue)"),
    _agent("log_file", "path", None, "also append log lines to this file"),
    _agent("state_dir", "path", None, "directory for the agent's pid file (created if "
           "missing)"),
    _agent("monitor_accept_only", "bool", False,
           "monitors accept packets without counting (benchmark baseline only)"),
    _agent("no_capture", "bool", False,
           "do not install iptables rules or start monitors (API only; tests)"),
    _agent("capture", "str", None, "capture every sketch of this agent this way, whatever "
           "its task says (default: each task's 'capture' field; nflog never delays "
           "packets)", choices=CAPTURE_MODES),
    _agent("nflog_threshold", "int", 64,
           "NFLOG packets the kernel gathers per netlink message", bound=(1, 1024)),
    _agent("data_interface", "str", None, "interface the eBPF capture attaches to (default: "
           "the one holding data_ip)"),
    _agent("probe_port", "int", PROBE_PORT, "UDP port of path_health probes and their echoes "
           "on the data address (0: no probe process until a task needs one)",
           bound=(0, 65535)),
    # the measure CLI and the examples
    Setting("MEASURE_URL", "str", DEFAULT_CLI_URL, "controller REST URL of the measure CLI"),
    Setting("MEASURE_TOKEN", "str", None,
            "the bearer token itself, when no token file is given or set"),
    # tests
    Setting("MEASURE_TEST_ARTEFACTS", "path", "/tmp/endhost-measure-artefacts",
            "where browser tests leave screenshots and page sources"),
)

#: variable name -> its row
ROWS: dict[str, Setting] = {row.name: row for row in SETTINGS if row.name}
#: FAUCET's DEFAULTS: the default of every variable.
DEFAULTS: dict[str, Any] = {row.name: row.default for row in SETTINGS if row.name}


def options(command: str) -> dict[str, Setting]:
    """``command``'s config-file keys (its long options with _ for -) -> their rows."""
    return {row.option: row for row in SETTINGS if row.option and command in row.commands}


#: measure-controller option (config-file key) -> the row it sets.
OPTIONS: dict[str, Setting] = options("controller")


def _row(name: str) -> Setting:
    try:
        return ROWS[name]
    except KeyError:
        raise KeyError(f"{name} is not a row of measure_common.settings") from None


def is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the variable is given (non-empty) in ``env`` (default: this process)."""
    _row(name)
    return bool((os.environ if env is None else env).get(name))


def given_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The parsed value of ``name`` when the variable is set, else None (no default)."""
    return get_setting(name, env) if is_set(name, env) else None


def get_setting(name: str, env: Mapping[str, str] | None = None,
                state_dir: str | None = None) -> Any:
    """The value of ``name`` from ``env`` (default: this process's environment), else its
    default; a ``path`` row with a state file defaults to that file in ``state_dir`` (else
    in ``MEASURE_STATE_DIR``). An empty variable counts as unset."""
    row = _row(name)
    text = (os.environ if env is None else env).get(name)
    if text:
        return row.parse(text)
    if row.state_file:
        base = state_dir if state_dir is not None else get_setting("MEASURE_STATE_DIR", env)
        return os.path.join(base, row.state_file)
    return row.default


def child_env(values: Mapping[str, str] | None = None,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ``base`` (default: this process's) with
    ``values`` on top. ``MEASURE_*`` names in ``values`` must be rows of the table."""
    extra = dict(values or {})
    for name in extra:
        if name.startswith("MEASURE_"):
            _row(name)
    return {**(os.environ if base is None else base), **extra}


def search_path(first: str, env: Mapping[str, str] | None = None) -> str:
    """``PATH`` (of ``env``, default this process's) with ``first`` in front."""
    rest = (os.environ if env is None else env).get("PATH", "")
    return f"{first}:{rest}" if rest else first


def export(values: Mapping[str, str]) -> None:
    """Set rows of the table in this process's environment, for code it then loads (the
    controller launcher hands its options to the Ryu app this way)."""
    for name in values:
        _row(name)
    os.environ.update(values)


def table_markdown() -> str:
    """The variables, then each command's config-file keys, as docs/deploy.md lists them."""
    lines = ["| variable | type | default | bound | controller option | meaning |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in SETTINGS:
        if row.name is None:
            continue
        option = f"`{row.option}`" if row.option else ""
        lines.append(f"| `{row.name}` | {row.kind} | `{row.describe_default()}` "
                     f"| {_bound(row)} | {option} | {row.doc} |")
    for command in ("controller", "agent"):
        lines += ["", f"Config-file keys of `measure-{command}` (flags: `--` and the key with "
                      "`-` for `_`):", "",
                  "| key | type | default | bound | variable | meaning |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for key, row in options(command).items():
            default = "required" if row.required else f"`{row.describe_default()}`"
            kind = " or ".join(row.choices) if row.choices else row.kind
            lines.append(f"| `{key}` | {kind} | {default} | {_bound(row)} "
                         f"| {f'`{row.name}`' if row.name else ''} | {row.doc} |")
    return "\n".join(lines)


def _bound(row: Setting) -> str:
    return f"{row.bound[0]}..{row.bound[1]}" if row.bound else ""


if __name__ == "__main__":
    print(table_markdown())
