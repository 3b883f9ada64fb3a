"""Run a measured Mininet network: controller, switches, hosts, agents.

``measure-net`` (or ``python -m topo.launch``) brings up, in order:

1. the controller: the project's launcher (``python -m ryu_app``) as a
   subprocess, with OpenFlow on ``--controller-port`` and REST on
   ``--rest-port``; both ports must listen before any switch starts. With
   ``--standby``, a second one on the same PostgreSQL store (``--store``,
   else a throwaway ``testing.postgres`` server started first) on
   ``--standby-controller-port`` / ``--standby-rest-port``: it waits as the
   standby, every switch is given both controllers and every agent both URLs;
2. the data network: a ``topo.topos`` topology with its ``ovsu`` switch
   (userspace OVS, OpenFlow 1.3) under that remote controller, and its
   ``MeasureHost`` hosts (transmit checksum offload off on every data
   interface: TCP hangs through the userspace datapath otherwise);
3. the out-of-band management network (``MgmtNetwork``), built from
   Mininet's own nodes: a ``LinuxBridge`` ``mgmt0`` in the root namespace,
   a root-namespace ``Node`` linked to it holding 192.168.100.254/24, and
   per host a link whose host end ``<host>-mgmt`` carries
   192.168.100.<n>/24. It is not an OpenFlow switch, so the controller
   never sees it, and agents exclude that interface from capture: control
   and report traffic is neither measured nor disturbed by the data plane;
4. readiness: the controller sees every switch and link (LLDP), one
   pingall at 0% loss (so it also knows every host), then one agent per
   monitored host (``python -m host_agent``), all registered at the
   controller, and the overlay built over them.

Every host's shell gets the venv first on ``PATH``, ``MEASURE_URL`` (the
controller over the management network), ``MEASURE_TOKEN_FILE`` and the
project root as its directory, so ``mininet> h1 measure tasks`` works as
typed. Then it prints a banner saying so and opens the Mininet CLI
(``--cli``, with Mininet's output level back on) or runs ``--run 'HOST
CMD...'`` in a host and exits with that command's status. Logs go to a run
directory, printed at start. ``MeasureNetwork`` is the same thing as a
context manager for the demo and the tests. Every option is spelled once,
as a field of ``Options``: the command line is generated from it.

Clean-up runs on every exit path (normal, exception, SIGINT, SIGTERM):
agents, Mininet (``net.stop`` and ``topo.cleanup.cleanup_mininet``), the
controller, ``mgmt0`` and its veths. Only one Mininet network may exist on
a machine, so the launcher holds ``/tmp/endhost-measure-mininet.lock``
while it runs (``--no-lock`` when the caller already holds it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mininet.link import Link, TCLink
from mininet.net import Mininet
from mininet.node import Node, RemoteController
from mininet.nodelib import LinuxBridge

from measure_cli.client import ControllerClient, read_token
from measure_common.auth import load_or_create_secret, load_or_create_token, write_agent_key
from measure_common.settings import (
    MGMT_CONTROLLER_IP,
    MGMT_NET,
    SECRET_FILE_NAME,
    TOKEN_FILE_NAME,
    child_env,
    search_path,
)
from measure_model.version import __version__
from testing.postgres import PostgresServer
from testing.procs import (
    LOCK_PATH,
    install_signal_handlers,
    mininet_lock,
    port_open,
    signals_deferred,
    stop_process,
    wait_until,
)
from topo.topos import MeasureHost, MeasureTopo, switches, topos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MGMT_BRIDGE = "mgmt0"
MGMT_IP = MGMT_CONTROLLER_IP
MGMT_HOSTS = 253  # .1 .. .253 of the /24; .254 is the root namespace
AGENT_PORT = 8000


def log(msg: str) -> None:
    print(f"*** {msg}", flush=True)


def set_mininet_log_level(level: str) -> None:
    """``mininet.log.setLogLevel`` that takes effect at once.

    Mininet's logger is built outside ``logging``'s manager, so the level
    cache that ``Logger.setLevel`` clears for registered loggers is never
    cleared for it: once a call ran at ``warning``, ``output()`` (every line
    the Mininet CLI prints: ``pingall``, ``nodes``, ``h1 echo``) stays silent
    after ``setLogLevel("output")``. Clearing its cache fixes that.
    """
    from mininet.log import lg, setLogLevel

    setLogLevel(level)
    lg._cache.clear()


def tail(path: str, lines: int = 15) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


# ---------------------------------------------------------------- options

def option(default: Any, doc: str, *, topo: dict[str, str] | None = None,
           **argparse_kw: Any) -> Any:
    """One option: its default, its help, and (``topo``) the topology parameter it
    sets, per topology. ``build_parser`` makes ``--name`` from the field name
    (``--no-name`` for an option that is on by default)."""
    meta = {"help": doc, "topo": topo or {}, "argparse": argparse_kw}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Options:
    """What to launch; each field is one command-line option."""

    topo: str = option("tree", "topology", choices=list(topos))
    depth: int = option(2, "tree depth", topo={"tree": "depth"})
    fanout: int = option(3, "tree fanout", topo={"tree": "fanout"})
    k: int = option(4, "fat-tree k", topo={"fattree": "k"})
    n: int = option(4, "switches of linear/loop", topo={"linear": "k", "loop": "n"})
    bw: float | None = option(None, "link rate limit in Mbit/s")
    controller_port: int = option(6653, "the controller's OpenFlow port")
    rest_port: int = option(8080, "the controller's REST port")
    standby: bool = option(False, "start a second controller on the same PostgreSQL store: "
                           "the switches connect to both, the first leads, the second "
                           "takes over when it dies; agents know both URLs")
    store: str | None = option(None, "the controllers' PostgreSQL URL (with --standby and "
                               "none given: a throwaway server, removed at exit)")
    standby_controller_port: int | None = option(
        None, "the standby's OpenFlow port (default: controller port + 1)")
    standby_rest_port: int | None = option(None, "the standby's REST port (default: REST "
                                           "port + 1)")
    agents: bool = option(True, "start no agents")
    no_agent_on: list[str] = option([], "leave HOST unmonitored (the original left h1 as "
                                    "the operator)", metavar="HOST")
    allow_legacy: bool = option(False, "agents accept the original unauthenticated "
                                "messages on POST /")
    run_dir: str | None = option(None, "logs and state (default: a new temp dir)")
    lock: bool = option(True, f"the caller already holds {LOCK_PATH}")
    timeout: float = option(90.0, "readiness timeout, seconds")


OPTION_TYPES = {"int": int, "float": float, "float | None": float, "int | None": int}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="measure-net", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for f in dataclasses.fields(Options):
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"],
                              **f.metadata["argparse"]}
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            kw["action"] = "store_false" if f.default else "store_true"
            flag = "--no-" + flag[2:] if f.default else flag
        elif f.type == "list[str]":
            kw["action"] = "append"
        else:
            kw["type"] = OPTION_TYPES.get(str(f.type), str)
            kw["default"] = f.default
            if f.default is not None:
                kw["help"] += " (default %(default)s)"
        p.add_argument(flag, **kw)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--cli", action="store_true", help="open the Mininet CLI (default)")
    action.add_argument("--run", metavar="'HOST CMD...'",
                        help="run CMD in HOST, exit with its status")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)}
    return Options(**{k: v for k, v in given.items() if v is not None})


def make_topo(opts: Options) -> MeasureTopo:
    if opts.topo not in topos:
        raise ValueError(f"unknown topology {opts.topo!r}; choose from {', '.join(topos)}")
    params = {f.metadata["topo"][opts.topo]: getattr(opts, f.name)
              for f in dataclasses.fields(Options) if opts.topo in f.metadata["topo"]}
    return topos[opts.topo](bw=opts.bw, **params)


class ListeningController(RemoteController):
    """A remote controller already known to listen (``start_controller`` waited).

    Mininet's own check runs ``telnet`` against the OpenFlow port and decodes
    the reply as UTF-8; Ryu's binary OpenFlow hello then raises
    ``UnicodeDecodeError`` now and then.
    """

    def checkListening(self) -> None:  # noqa: N802 - Mininet's name
        if not port_open(self.ip, self.port):
            raise RuntimeError(f"controller {self.ip}:{self.port} is not listening")


# ---------------------------------------------------------------- management network

def mgmt_ip(name: str) -> str:
    """Host ``hN``'s management address, 192.168.100.N."""
    n = int(name.lstrip("h"))
    if not 1 <= n <= MGMT_HOSTS:
        raise ValueError(f"{name}: the management network {MGMT_NET} has room "
                         f"for h1..h{MGMT_HOSTS} only")
    return str(MGMT_NET[n])


class MgmtNetwork:
    """The out-of-band management network, from Mininet's own nodes.

    A ``LinuxBridge`` in the root namespace, a root-namespace ``Node`` linked
    to it holding ``MGMT_IP`` (Mininet's ``connectToRootNS`` pattern), and a
    link per host whose host end ``<host>-mgmt`` holds ``mgmt_ip(host)``.
    Not part of the ``Mininet`` object: the controller, ``pingall`` and the
    switch list never see it.
    """

    def __init__(self, hosts: list[MeasureHost]) -> None:
        self.bridge = LinuxBridge(MGMT_BRIDGE, inNamespace=False)
        self.root = Node("mg-root", inNamespace=False)
        # fast=False: Mininet first deletes root-namespace interfaces of these names
        # (what a killed run left), then makes the pair and moves each end
        self.links = [Link(self.root, self.bridge, intfName1="mg-root",
                           intfName2=f"{MGMT_BRIDGE}-root", fast=False)]
        self.root.setIP(MGMT_IP, prefixLen=24, intf="mg-root")
        for host in hosts:
            self.links.append(Link(host, self.bridge, intfName1=f"{host.name}-mgmt",
                                   intfName2=f"{MGMT_BRIDGE}-{host.name}", fast=False))
            host.setIP(mgmt_ip(host.name), prefixLen=24, intf=f"{host.name}-mgmt")
        self.bridge.start([])  # enslaves every mgmt0-* interface

    def stop(self) -> None:
        for link in self.links:
            link.stop()
        self.bridge.stop()
        self.bridge.terminate()
        self.root.terminate()


# ---------------------------------------------------------------- the network

class MeasureNetwork:
    """A running measured network; ``with MeasureNetwork(opts) as mn: ...``."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.topo = make_topo(opts)
        self.run_dir = opts.run_dir or tempfile.mkdtemp(prefix="measure-run-")
        os.makedirs(self.run_dir, exist_ok=True)
        self.rest_url = f"http://127.0.0.1:{opts.rest_port}"
        self._net: Mininet | None = None
        self.mgmt: MgmtNetwork | None = None
        self.controller: subprocess.Popen | None = None
        self.standby: subprocess.Popen | None = None  # the second controller (--standby)
        self.postgres: PostgresServer | None = None  # the throwaway store of --standby
        self.agents: dict[str, subprocess.Popen] = {}
        self._lock: contextlib.AbstractContextManager | None = None
        self.timings: dict[str, float] = {}
        self.ping_losses: list[float] = []

    @property
    def net(self) -> Mininet:
        """The running Mininet network (its hosts, switches, ``get``)."""
        if self._net is None:
            raise RuntimeError("the Mininet network is not running")
        return self._net

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> MeasureNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _step(self, name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[name] = time.monotonic() - t0

    def start(self) -> None:
        log(f"run directory: {self.run_dir} (REST token: {self.token_file()})")
        if self.opts.lock:
            self._step("lock", self._acquire_lock)
        if self.opts.standby and not self.opts.store:
            self._step("postgres", self.start_postgres)
        self._step("controller", self.start_controller)
        if self.opts.standby:
            self._step("standby", lambda: self.start_controller(1))
        self._step("network", self.start_network)
        self._step("shells", self.setup_host_shells)
        self._step("mgmt", self.start_mgmt)
        self._step("topology", self.wait_topology)
        self._step("pingall", self.pingall)
        if self.opts.agents:
            self._step("agents", self.start_agents)

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a partial start."""
        with signals_deferred():
            self._stop()

    def _stop(self) -> None:
        for name, proc in list(self.agents.items()):
            stop_process(proc)
            self.agents.pop(name)
        if self.mgmt is not None:
            try:
                self.mgmt.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"stopping {MGMT_BRIDGE} failed: {exc!r}")
            self.mgmt = None
        if self._net is not None:
            try:
                self._net.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"net.stop failed: {exc!r}")
            self._net = None
            from topo.cleanup import cleanup_mininet

            cleanup_mininet()
        for running in (self.controller, self.standby):
            if running is not None:
                stop_process(running)
        self.controller = self.standby = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _acquire_lock(self) -> None:
        self._lock = mininet_lock(
            on_wait=lambda: log(f"waiting for {LOCK_PATH} (another Mininet network is running)"))
        self._lock.__enter__()

    # ------------------------------------------------------------ controller

    def ports(self, index: int = 0) -> tuple[int, int]:
        """(OpenFlow port, REST port) of controller ``index`` (1: the standby)."""
        if index == 0:
            return self.opts.controller_port, self.opts.rest_port
        return (self.opts.standby_controller_port or self.opts.controller_port + 1,
                self.opts.standby_rest_port or self.opts.rest_port + 1)

    def controller_url(self, index: int = 0) -> str:
        """Controller ``index``'s REST URL over the management network (agents use it)."""
        return f"http://{MGMT_IP}:{self.ports(index)[1]}"

    def controller_urls(self) -> list[str]:
        return [self.controller_url(i) for i in range(2 if self.opts.standby else 1)]

    def store_url(self) -> str | None:
        """The controllers' shared PostgreSQL store (None: the first one's SQLite)."""
        if self.opts.store:
            return self.opts.store
        return self.postgres.url if self.postgres is not None else None

    def start_postgres(self) -> None:
        self.postgres = PostgresServer().start()
        log(f"PostgreSQL store for both controllers: {self.postgres.url}")

    def start_controller(self, index: int = 0) -> subprocess.Popen:
        """Start controller ``index`` (0, then 1 with ``--standby``) and wait until its
        OpenFlow and REST ports listen (a standby answers REST and takes the switches
        as SLAVE while it waits for the leader's lock). Its log is appended to."""
        of_port, rest_port = self.ports(index)
        for port in (of_port, rest_port):
            if port_open("127.0.0.1", port):
                raise RuntimeError(f"port {port} is already in use")
        path = self.controller_log(index)
        cmd = [sys.executable, "-m", "ryu_app",
               "--ofp-tcp-listen-port", str(of_port),
               "--ofp-listen-host", "127.0.0.1",  # the switches' address; hosts cannot reach it
               "--wsapi-port", str(rest_port),
               "--observe-links", "ryu_app.app"]
        env = child_env(self.controller_env(index))
        log(f"controller {index}: {shlex.join(cmd)} (log {path})")
        with open(path, "a") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        if index == 0:
            self.controller = proc
        else:
            self.standby = proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"controller exited; {path} ends with:\n{tail(path)}")
            return port_open("127.0.0.1", of_port) and port_open("127.0.0.1", rest_port)

        try:
            wait_until(up, timeout=30, interval=0.1, message="the controller's ports to open")
        except TimeoutError:
            raise TimeoutError(f"controller ports did not open; {path} ends with:\n"
                               f"{tail(path)}") from None
        return proc

    def controller_log(self, index: int = 0) -> str:
        return os.path.join(self.run_dir, "controller.log" if index == 0 else "standby.log")

    def secret_file(self) -> str:
        """The agents' shared HMAC secret (created here, given to both sides)."""
        path = os.path.join(self.run_dir, SECRET_FILE_NAME)
        load_or_create_secret(path)
        return path

    def key_file(self, name: str) -> str:
        """Agent ``name``'s own key (derived from the secret; the agent gets only this)."""
        path = os.path.join(self.run_dir, f"agent-{name}.key")
        write_agent_key(path, load_or_create_secret(self.secret_file())[0], name)
        return path

    def token_file(self) -> str:
        """The controller's bearer token for people and scripts."""
        path = os.path.join(self.run_dir, TOKEN_FILE_NAME)
        load_or_create_token(path)
        return path

    def controller_env(self, index: int = 0) -> dict[str, str]:
        """Environment that tells controller ``index`` where its credentials, state and
        store are (both controllers share the credentials and the store)."""
        env = {"MEASURE_STATE_DIR": os.path.join(self.run_dir, "state"),
               "MEASURE_SECRET_FILE": self.secret_file(),
               "MEASURE_TOKEN_FILE": self.token_file(),
               "MEASURE_CONTROLLER_URL": self.controller_url(index)}
        store = self.store_url()
        if store:
            env["MEASURE_STORE_URL"] = store
        return env

    def measure_env(self) -> dict[str, str]:
        """What a host needs to run ``measure`` and the examples: the venv first on
        PATH, the controller's management URL and its token file."""
        venv_bin = os.path.dirname(sys.executable)
        return {"PATH": search_path(venv_bin),
                "MEASURE_URL": self.controller_url(),
                "MEASURE_TOKEN_FILE": self.token_file()}

    def host_env(self) -> dict[str, str]:
        """Environment of commands started in hosts (``--run``, agents, tests)."""
        return child_env(self.measure_env())

    def setup_host_shells(self) -> None:
        """Give every host's interactive shell (the Mininet CLI's ``h1 ...``) the
        same environment as ``host_env`` and the project root as its directory,
        so the README's commands (``h1 measure tasks``) work as typed."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.measure_env().items())
        for host in self.net.hosts:
            host.cmd(f"export {exports}; cd {shlex.quote(ROOT)}")

    def banner(self) -> str:
        """What to type first, printed before the Mininet CLI opens."""
        env = self.measure_env()
        monitored = [h.name for h in self.monitored_hosts()] if self.opts.agents else []
        return "\n".join([
            f"ready: agents on {', '.join(monitored) or 'no host'}; logs in {self.run_dir}",
            f"in every host MEASURE_URL={env['MEASURE_URL']} and "
            f"MEASURE_TOKEN_FILE={env['MEASURE_TOKEN_FILE']} are set and `measure` is "
            "on PATH, e.g.:",
            "  mininet> h1 measure agents",
            "  mininet> h1 measure apply policies/heavy_hitter.yaml",
            f"from the root namespace: measure --url {self.rest_url} "
            f"--token-file {env['MEASURE_TOKEN_FILE']} tasks"])

    def client(self, index: int = 0) -> ControllerClient:
        """Controller ``index``'s REST client with its bearer token (paths from the server
        root)."""
        url = f"http://127.0.0.1:{self.ports(index)[1]}"
        return ControllerClient(url, read_token(self.token_file()), self.token_file(),
                                prefix="")

    def rest(self, path: str, method: str = "GET", body: object = None,
             headers: dict[str, str] | None = None, data: bytes | None = None,
             index: int = 0) -> tuple[int, Any]:
        """Call controller ``index``'s REST API; returns (status, parsed JSON or text)."""
        return self.client(index).request(method, path, body, data=data, headers=headers)

    # ------------------------------------------------------------ network

    def start_network(self) -> None:
        set_mininet_log_level("warning")
        controllers = [partial(ListeningController, ip="127.0.0.1", port=self.ports(i)[0])
                       for i in range(2 if self.opts.standby else 1)]  # each switch: both
        self._net = Mininet(topo=self.topo, switch=switches["ovsu"], host=MeasureHost,
                            controller=controllers, link=TCLink if self.opts.bw else Link,
                            autoSetMacs=False, build=False)
        self._net.build()
        self._net.start()
        log(f"network up: {len(self.net.switches)} switches, {len(self.net.hosts)} hosts")

    def start_mgmt(self) -> None:
        self.mgmt = MgmtNetwork(self.net.hosts)
        first = self.net.hosts[0]
        wait_until(lambda: first.pexec(["ping", "-c1", "-W1", MGMT_IP])[2] == 0, timeout=15,
                   interval=0.2, message=f"{first.name} to reach {MGMT_IP} over {MGMT_BRIDGE}")

    def wait_topology(self, index: int = 0) -> None:
        """Until controller ``index`` sees every switch and link (LLDP)."""
        switch_count = len(self.topo.switches())
        links = self.topo.switch_links()

        def complete() -> bool:
            status, body = self.rest("/measure/v1/topology", index=index)
            return (status == 200 and len(body["switches"]) == switch_count
                    and len(body["links"]) == links)

        wait_until(complete, timeout=self.opts.timeout, interval=0.2,
                   message=f"the controller to see {switch_count} switches and {links} links")
        log(f"controller sees {switch_count} switches and {links} links")

    def pingall(self, attempts: int = 3) -> float:
        """pingall until 0% loss (the first may lose pings to ARP); fail after ``attempts``."""
        loss = 100.0
        for _ in range(attempts):
            loss = self.net.pingAll(timeout="1")
            self.ping_losses.append(loss)
            if loss == 0:
                log("pingall: 0% loss")
                return loss
        raise RuntimeError(f"pingall: {loss}% loss after {attempts} attempts")

    # ------------------------------------------------------------ agents

    def monitored_hosts(self) -> list[MeasureHost]:
        return [h for h in self.net.hosts if h.name not in self.opts.no_agent_on]

    def agent_command(self, host: MeasureHost) -> list[str]:
        cmd = [sys.executable, "-m", "host_agent", "--name", host.name,
               "--controller", ",".join(self.controller_urls()),
               "--listen", "0.0.0.0", "--port", str(AGENT_PORT),
               "--advertise", f"http://{mgmt_ip(host.name)}:{AGENT_PORT}",
               "--data-ip", host.IP(), "--exclude-interface", f"{host.name}-mgmt",
               "--key-file", self.key_file(host.name),
               "--log-file", os.path.join(self.run_dir, f"agent-{host.name}.log"),
               "--state-dir", os.path.join(self.run_dir, f"agent-{host.name}")]
        if self.opts.allow_legacy:
            cmd.append("--allow-legacy")
        return cmd

    def start_agents(self) -> None:
        for host in self.monitored_hosts():
            self.start_agent(host)
        log(f"agents started on {', '.join(self.agents)}")
        self.wait_agents()

    def start_agent(self, host: MeasureHost) -> subprocess.Popen:
        """Start (or start again) the agent of ``host``; its output goes to the run dir."""
        with open(os.path.join(self.run_dir, f"agent-{host.name}.out"), "a") as out:
            proc = host.popen(self.agent_command(host), cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT, env=self.host_env())
        self.agents[host.name] = proc
        return proc

    def wait_agents(self) -> None:
        names = set(self.agents)

        def registered() -> bool:
            for name, proc in self.agents.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"agent {name} exited with {proc.returncode}; "
                                       f"see {self.run_dir}/agent-{name}.out")
            status, body = self.rest("/measure/v1/agents")
            return status == 200 and names <= agent_names(body)

        wait_until(registered, timeout=self.opts.timeout, interval=0.2,
                   message=f"agents {sorted(names)} to register")
        log(f"{len(names)} agents registered")

        def overlay_built() -> bool:
            status, body = self.rest("/measure/v1/overlay")
            return status == 200 and bool(body["root"]) and names <= set(body["parent"])

        wait_until(overlay_built, timeout=self.opts.timeout, interval=0.2,
                   message="the overlay over all agents")
        _, body = self.rest("/measure/v1/overlay")
        log(f"overlay built: root {body['root']}, depth {body['depth']}")

    # ------------------------------------------------------------ commands

    def run_on(self, host_name: str, argv: list[str], timeout: float | None = None,
               capture: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` in a host (from the project root, venv first on PATH)."""
        host = self.net.get(host_name)
        pipe = subprocess.PIPE if capture else None
        proc = host.popen(argv, cwd=ROOT, env=self.host_env(), text=capture, stdout=pipe,
                          stderr=pipe)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # timeout, Ctrl-C, SIGTERM: never leave it running
            stop_process(proc)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def agent_names(body: dict[str, Any]) -> set[str]:
    """Names in a ``GET /measure/v1/agents`` body."""
    return {agent["name"] for agent in body["agents"]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("measure-net must run as root (Mininet)", file=sys.stderr)
        return 2
    command = shlex.split(args.run) if args.run else None
    if command is not None and len(command) < 2:
        print("--run needs 'HOST CMD...'", file=sys.stderr)
        return 2
    install_signal_handlers()
    try:
        with MeasureNetwork(options_from_args(args)) as net:
            if command is not None:
                host, argv_ = command[0], command[1:]
                log(f"running on {host}: {shlex.join(argv_)}")
                return net.run_on(host, argv_).returncode
            from mininet.cli import CLI

            for line in net.banner().splitlines():
                log(line)
            set_mininet_log_level("output")  # the CLI prints through Mininet's log
            CLI(net.net)
            return 0
    except KeyboardInterrupt:
        log("interrupted: cleaned up")
        return 130


if __name__ == "__main__":
    sys.exit(main())
