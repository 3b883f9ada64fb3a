"""Run a measured Mininet network: controller, switches, hosts, agents.

``measure-net`` (or ``python -m topo.launch``) brings up, in order:

1. the controller: the project's launcher (``python -m ryu_app``) as a
   subprocess, with OpenFlow on ``--controller-port`` and REST on
   ``--rest-port``; both ports must listen before any switch starts;
2. the data network: a ``topo.topos`` topology with ``OVSSwitch``
   (userspace datapath, OpenFlow 1.3) under that remote controller, and
   transmit checksum offload turned off on every host data interface
   (TCP hangs through the userspace datapath otherwise);
3. the out-of-band management network: a Linux bridge ``mgmt0`` in the
   root namespace holding 192.168.100.254/24, and per host a veth whose
   namespace end ``<host>-mgmt`` carries 192.168.100.<n>/24. It is not an
   OpenFlow switch, so the controller never sees it, and agents exclude
   that interface from capture: control and report traffic is neither
   measured nor disturbed by the data plane;
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
context manager for the demo and the tests.

Clean-up runs on every exit path (normal, exception, SIGINT, SIGTERM):
agents, Mininet (``net.stop`` and ``topo.cleanup.cleanup_mininet``), the
controller, ``mgmt0`` and its veths. Only one Mininet network may exist on
a machine, so the launcher holds ``/tmp/endhost-measure-mininet.lock``
while it runs (``--no-lock`` when the caller already holds it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from measure_cli.client import ControllerClient, read_token
from measure_common.auth import load_or_create_secret, load_or_create_token
from measure_common.settings import (
    MGMT_CONTROLLER_IP,
    MGMT_NET,
    SECRET_FILE_NAME,
    TOKEN_FILE_NAME,
    child_env,
    search_path,
)
from measure_model.version import __version__
from testing.procs import (
    LOCK_PATH,
    install_signal_handlers,
    mininet_lock,
    port_open,
    signals_deferred,
    stop_process,
    wait_until,
)

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


def run(cmd: list[str], check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Options:
    """What to launch; the command line maps onto this one to one."""

    topo: str = "tree"
    depth: int = 2
    fanout: int = 3
    k: int = 4
    n: int = 4
    bw: float | None = None
    controller_port: int = 6653
    rest_port: int = 8080
    agents: bool = True
    no_agent_on: list[str] = field(default_factory=list)
    allow_legacy: bool = False
    run_dir: str | None = None
    lock: bool = True
    timeout: float = 90.0


def make_topo(opts: Options):
    from topo.topos import topos

    if opts.topo not in topos:
        raise ValueError(f"unknown topology {opts.topo!r}; choose from {', '.join(topos)}")
    cls = topos[opts.topo]
    params = {"tree": {"depth": opts.depth, "fanout": opts.fanout},
              "linear": {"k": opts.n}, "fattree": {"k": opts.k},
              "loop": {"n": opts.n}}[opts.topo]
    return cls(bw=opts.bw, **params)


def agents_available() -> bool:
    return importlib.util.find_spec("host_agent.__main__") is not None


def _remote_controller_class():
    from mininet.node import RemoteController

    class _Listening(RemoteController):
        """A remote controller already known to listen (``start_controller`` waited).

        Mininet's own check runs ``telnet`` against the OpenFlow port and
        decodes the reply as UTF-8; Ryu's binary OpenFlow hello then raises
        ``UnicodeDecodeError`` now and then.
        """

        def checkListening(self) -> None:
            if not port_open(self.ip, self.port):
                raise RuntimeError(f"controller {self.ip}:{self.port} is not listening")

    return _Listening


def ListeningController(*args, **kw):  # noqa: N802 - used as a Mininet node class
    return _remote_controller_class()(*args, **kw)


class MeasureNetwork:
    """A running measured network; ``with MeasureNetwork(opts) as mn: ...``."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.topo = make_topo(opts)
        self.run_dir = opts.run_dir or tempfile.mkdtemp(prefix="measure-run-")
        os.makedirs(self.run_dir, exist_ok=True)
        self.rest_url = f"http://127.0.0.1:{opts.rest_port}"
        self.net = None
        self.controller: subprocess.Popen | None = None
        self.agents: dict[str, subprocess.Popen] = {}
        self.mgmt_links: list[str] = []
        self._lock: contextlib.AbstractContextManager | None = None
        self.timings: dict[str, float] = {}
        self.ping_losses: list[float] = []

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> MeasureNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _step(self, name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[name] = time.monotonic() - t0

    def start(self) -> None:
        log(f"run directory: {self.run_dir} (REST token: {self.token_file()})")
        if self.opts.lock:
            self._step("lock", self._acquire_lock)
        self._step("controller", self.start_controller)
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
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"net.stop failed: {exc!r}")
            self.net = None
            from topo.cleanup import cleanup_mininet

            cleanup_mininet()
        for link in self.mgmt_links:
            run(["ip", "link", "del", link])
        self.mgmt_links = []
        if run(["ip", "link", "show", MGMT_BRIDGE]).returncode == 0:
            run(["ip", "link", "del", MGMT_BRIDGE])
        if self.controller is not None:
            stop_process(self.controller)
            self.controller = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _acquire_lock(self) -> None:
        self._lock = mininet_lock(
            on_wait=lambda: log(f"waiting for {LOCK_PATH} (another Mininet network is running)"))
        self._lock.__enter__()

    # ------------------------------------------------------------ controller

    def start_controller(self) -> None:
        for port in (self.opts.controller_port, self.opts.rest_port):
            if port_open("127.0.0.1", port):
                raise RuntimeError(f"port {port} is already in use")
        path = os.path.join(self.run_dir, "controller.log")
        cmd = [sys.executable, "-m", "ryu_app",
               "--ofp-tcp-listen-port", str(self.opts.controller_port),
               "--ofp-listen-host", "127.0.0.1",  # the switches' address; hosts cannot reach it
               "--wsapi-port", str(self.opts.rest_port),
               "--observe-links", "ryu_app.app"]
        env = child_env(self.controller_env())
        log(f"controller: {shlex.join(cmd)} (log {path})")
        with open(path, "w") as out:
            self.controller = subprocess.Popen(cmd, cwd=ROOT, stdout=out,
                                               stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True)

        def up() -> bool:
            if self.controller.poll() is not None:
                raise RuntimeError(f"controller exited; {path} ends with:\n{tail(path)}")
            return (port_open("127.0.0.1", self.opts.controller_port)
                    and port_open("127.0.0.1", self.opts.rest_port))

        deadline = time.monotonic() + 30
        while not up():
            if time.monotonic() > deadline:
                raise TimeoutError(f"controller ports did not open; {path} ends with:\n"
                                   f"{tail(path)}")
            time.sleep(0.1)

    def secret_file(self) -> str:
        """The agents' shared HMAC secret (created here, given to both sides)."""
        path = os.path.join(self.run_dir, SECRET_FILE_NAME)
        load_or_create_secret(path)
        return path

    def token_file(self) -> str:
        """The controller's bearer token for people and scripts."""
        path = os.path.join(self.run_dir, TOKEN_FILE_NAME)
        load_or_create_token(path)
        return path

    def controller_env(self) -> dict[str, str]:
        """Environment that tells the controller where its credentials and state are."""
        return {"MEASURE_STATE_DIR": os.path.join(self.run_dir, "state"),
                "MEASURE_SECRET_FILE": self.secret_file(),
                "MEASURE_TOKEN_FILE": self.token_file(),
                "MEASURE_CONTROLLER_URL": f"http://{MGMT_IP}:{self.opts.rest_port}"}

    def measure_env(self) -> dict[str, str]:
        """What a host needs to run ``measure`` and the examples: the venv first on
        PATH, the controller's management URL and its token file."""
        venv_bin = os.path.dirname(sys.executable)
        return {"PATH": search_path(venv_bin),
                "MEASURE_URL": f"http://{MGMT_IP}:{self.opts.rest_port}",
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

    def client(self) -> ControllerClient:
        """The controller's REST client with its bearer token (paths from the server root)."""
        return ControllerClient(self.rest_url, read_token(self.token_file()),
                                self.token_file(), prefix="")

    def rest(self, path: str, method: str = "GET", body: object = None,
             headers: dict | None = None, data: bytes | None = None) -> tuple[int, object]:
        """Call the controller REST API; returns (status, parsed JSON or text)."""
        return self.client().request(method, path, body, data=data, headers=headers)

    # ------------------------------------------------------------ network

    def start_network(self) -> None:
        from mininet.link import Link, TCLink
        from mininet.net import Mininet
        from mininet.node import OVSSwitch

        set_mininet_log_level("warning")
        switch = partial(OVSSwitch, datapath="user", protocols="OpenFlow13")
        controller = partial(ListeningController, ip="127.0.0.1",
                             port=self.opts.controller_port)
        self.net = Mininet(topo=self.topo, switch=switch, controller=controller,
                           link=TCLink if self.opts.bw else Link, autoSetMacs=False,
                           build=False)
        self.net.build()
        self.net.start()
        for host in self.net.hosts:
            for intf in host.intfList():
                if intf.name != "lo":
                    _, err, code = host.pexec(["ethtool", "-K", intf.name, "tx", "off"])
                    if code:
                        raise RuntimeError(f"ethtool on {intf.name}: {err.strip()}")
        log(f"network up: {len(self.net.switches)} switches, {len(self.net.hosts)} hosts")

    def host_index(self, name: str) -> int:
        return int(name.lstrip("h"))

    def mgmt_ip(self, name: str) -> str:
        """Host ``hN``'s management address, 192.168.100.N."""
        n = self.host_index(name)
        if not 1 <= n <= MGMT_HOSTS:
            raise ValueError(f"{name}: the management network {MGMT_NET} has room "
                             f"for h1..h{MGMT_HOSTS} only")
        return str(MGMT_NET[n])

    def start_mgmt(self) -> None:
        if run(["ip", "link", "show", MGMT_BRIDGE]).returncode == 0:
            run(["ip", "link", "del", MGMT_BRIDGE])  # left over by a killed run
        run(["ip", "link", "add", MGMT_BRIDGE, "type", "bridge"], check=True)
        run(["ip", "addr", "add", f"{MGMT_IP}/{MGMT_NET.prefixlen}", "dev", MGMT_BRIDGE],
            check=True)
        run(["ip", "link", "set", MGMT_BRIDGE, "up"], check=True)
        for host in self.net.hosts:
            outer, inner = f"mg-{host.name}", f"{host.name}-mgmt"
            run(["ip", "link", "del", outer])
            run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner,
                 "netns", str(host.pid)], check=True)
            self.mgmt_links.append(outer)
            run(["ip", "link", "set", outer, "master", MGMT_BRIDGE, "up"], check=True)
            for cmd in (["ip", "addr", "add", f"{self.mgmt_ip(host.name)}/24", "dev", inner],
                        ["ip", "link", "set", inner, "up"]):
                _, err, code = host.pexec(cmd)
                if code:
                    raise RuntimeError(f"{host.name}: {shlex.join(cmd)}: {err.strip()}")
        first = self.net.hosts[0]
        wait_until(lambda: first.pexec(["ping", "-c1", "-W1", MGMT_IP])[2] == 0, timeout=15,
                   interval=0.2, message=f"{first.name} to reach {MGMT_IP} over {MGMT_BRIDGE}")

    def wait_topology(self) -> None:
        switches = len(self.topo.switches())
        links = self.topo.switch_links()

        def complete() -> bool:
            status, body = self.rest("/measure/v1/topology")
            return (status == 200 and len(body["switches"]) == switches
                    and len(body["links"]) == links)

        wait_until(complete, timeout=self.opts.timeout, interval=0.2,
                   message=f"the controller to see {switches} switches and {links} links")
        log(f"controller sees {switches} switches and {links} links")

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

    def monitored_hosts(self) -> list:
        return [h for h in self.net.hosts if h.name not in self.opts.no_agent_on]

    def agent_command(self, host) -> list[str]:
        cmd = [sys.executable, "-m", "host_agent", "--name", host.name,
               "--controller", f"http://{MGMT_IP}:{self.opts.rest_port}",
               "--listen", "0.0.0.0", "--port", str(AGENT_PORT),
               "--advertise", f"http://{self.mgmt_ip(host.name)}:{AGENT_PORT}",
               "--data-ip", host.IP(), "--exclude-interface", f"{host.name}-mgmt",
               "--secret-file", self.secret_file(),
               "--log-file", os.path.join(self.run_dir, f"agent-{host.name}.log"),
               "--state-dir", os.path.join(self.run_dir, f"agent-{host.name}")]
        if self.opts.allow_legacy:
            cmd.append("--allow-legacy")
        return cmd

    def start_agents(self) -> None:
        if not agents_available():
            log("host_agent has no __main__ yet: no agents started")
            return
        for host in self.monitored_hosts():
            self.start_agent(host)
        log(f"agents started on {', '.join(self.agents)}")
        self.wait_agents()

    def start_agent(self, host) -> subprocess.Popen:
        """Start (or start again) the agent of ``host``; its output goes to the run dir."""
        with open(os.path.join(self.run_dir, f"agent-{host.name}.out"), "a") as out:
            proc = host.popen(self.agent_command(host), cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT, env=self.host_env())
        self.agents[host.name] = proc
        return proc

    def wait_agents(self) -> None:
        names = set(self.agents)
        status, _ = self.rest("/measure/v1/agents")
        if status == 404:
            log("controller has no agent registry yet: not waiting for registration")
            return

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
            return (status == 200 and bool(body.get("root"))
                    and names <= set(body.get("parent", {})))

        wait_until(overlay_built, timeout=self.opts.timeout, interval=0.2,
                   message="the overlay over all agents")
        _, body = self.rest("/measure/v1/overlay")
        log(f"overlay built: root {body['root']}, depth {body.get('depth')}")

    # ------------------------------------------------------------ commands

    def run_on(self, host_name: str, argv: list[str], timeout: float | None = None,
               capture: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` in a host (from the project root, venv first on PATH)."""
        host = self.net.get(host_name)
        kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} if capture else {
            "stdout": None, "stderr": None}
        proc = host.popen(argv, cwd=ROOT, env=self.host_env(), text=capture, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # timeout, Ctrl-C, SIGTERM: never leave it running
            stop_process(proc)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def agent_names(body: object) -> set[str]:
    """Names in a ``GET /measure/v1/agents`` body (list, or dict with 'agents')."""
    if isinstance(body, dict):
        body = body.get("agents", body)
    if isinstance(body, dict):
        return {str(k) for k in body}
    return {a["name"] for a in body if isinstance(a, dict) and "name" in a}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="measure-net", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--topo", default="tree", choices=["tree", "linear", "fattree", "loop"])
    p.add_argument("--depth", type=int, default=2, help="tree depth (default 2)")
    p.add_argument("--fanout", type=int, default=3, help="tree fanout (default 3)")
    p.add_argument("--k", type=int, default=4, help="fat-tree k (default 4)")
    p.add_argument("--n", type=int, default=4, help="switches of linear/loop (default 4)")
    p.add_argument("--bw", type=float, default=None, help="link rate limit in Mbit/s")
    p.add_argument("--controller-port", type=int, default=6653)
    p.add_argument("--rest-port", type=int, default=8080)
    p.add_argument("--no-agents", action="store_true", help="start no agents")
    p.add_argument("--no-agent-on", action="append", default=[], metavar="HOST",
                   help="leave HOST unmonitored (the original left h1 as the operator)")
    p.add_argument("--allow-legacy", action="store_true",
                   help="agents accept the original unauthenticated messages on POST /")
    p.add_argument("--run-dir", default=None, help="logs and state (default: a new temp dir)")
    p.add_argument("--no-lock", action="store_true",
                   help="the caller already holds " + LOCK_PATH)
    p.add_argument("--timeout", type=float, default=90.0, help="readiness timeout, seconds")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--cli", action="store_true", help="open the Mininet CLI (default)")
    action.add_argument("--run", metavar="'HOST CMD...'",
                        help="run CMD in HOST, exit with its status")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(topo=args.topo, depth=args.depth, fanout=args.fanout, k=args.k, n=args.n,
                   bw=args.bw, controller_port=args.controller_port,
                   rest_port=args.rest_port, agents=not args.no_agents,
                   no_agent_on=args.no_agent_on, allow_legacy=args.allow_legacy,
                   run_dir=args.run_dir, lock=not args.no_lock, timeout=args.timeout)


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
