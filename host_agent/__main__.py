"""The host agent command: ``python -m host_agent`` / ``measure-agent``.

Example (the Mininet launcher runs this on every host)::

    python -m host_agent --name h2 --controller http://192.168.100.254:8080 \\
        --listen 0.0.0.0 --port 8000 --advertise http://192.168.100.2:8000 \\
        --data-ip 10.0.0.2 --exclude-interface h2-mgmt --secret-file /path/secret

One process serves HTTP on eventlet (monkey-patched here, first thing in
``main``); it starts one monitor process per queue with fork+exec (never a
bare fork of the patched process), removes stale capture rules left by a
crashed agent of the same name, and runs a supervisor greenthread that
restarts dead monitors and ticks the overlay role. With ``--controller`` it
registers and heartbeats every 2 s; failures are logged and retried, never
fatal. SIGTERM/SIGINT remove the capture rules and stop the monitors. Every
event is one log line on stderr (and ``--log-file``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported at run time only after eventlet.monkey_patch() in main
    from host_agent.agent import Agent
    from host_agent.overlay.node import OverlayNode
    from host_agent.protocols import Monitor
    from measure_common.httpclient import Transport

from measure_common.config import (
    CONFIG_ERROR_EXIT,
    ConfigError,
    add_config_arguments,
    check_secret_file,
    parse_with_config,
)
from measure_model.version import __version__

log = logging.getLogger("host_agent")


def build_parser() -> argparse.ArgumentParser:
    """The agent's options; also the schema of its config file (measure_common.config)."""
    p = argparse.ArgumentParser(prog="measure-agent",
                                description="End-host measurement agent (NFQUEUE sketches + "
                                            "HTTP API on port 8000).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_config_arguments(p)
    p.add_argument("--name", required=True,
                   help="agent name, e.g. h2 ([a-z0-9][a-z0-9_.-]{0,19}); tags its iptables rules")
    p.add_argument("--controller", default=None,
                   help="controller base URL, e.g. http://192.168.100.254:8080, or several "
                        "separated by commas (a leader and its standbys: the agent registers "
                        "with the first that answers and moves on when it stops answering); "
                        "omit for a standalone agent (no registration)")
    p.add_argument("--listen", default=None,
                   help="HTTP listen address (default: the host of --advertise, else the local "
                        "address that reaches --controller, else 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--advertise", default=None,
                   help="URL the controller and overlay peers use to reach this agent "
                        "(default http://<data-ip or listen>:<port>)")
    p.add_argument("--data-ip", default=None,
                   help="this host's data-network address (registered with the controller)")
    p.add_argument("--exclude-interface", default=None,
                   help="interface never captured (the management interface, e.g. h2-mgmt)")
    p.add_argument("--secret-file", default=None,
                   help="shared HMAC secret with the controller (mode 0600); when given, every "
                        "state-changing /agent/v1 request must be signed")
    p.add_argument("--insecure", action="store_true",
                   help="without --secret-file, accept unsigned /agent/v1 configuration from "
                        "anyone (refused with 403 otherwise); only on an isolated test network")
    p.add_argument("--allow-legacy", action="store_true",
                   help="accept the original unauthenticated messages on POST / "
                        "(refused with 403 otherwise); only on an isolated test network")
    p.add_argument("--queues", type=int, default=1,
                   help="NFQUEUE queues, one monitor process each (--queue-balance); default 1")
    p.add_argument("--queue-num", type=int, default=0, help="first NFQUEUE number (default 0)")
    p.add_argument("--max-len", type=int, default=4096,
                   help="kernel queue length per queue; beyond it fail-open accepts packets "
                        "unmeasured (counted as missed)")
    p.add_argument("--max-sketches", type=int, default=32,
                   help="most sketches at once (at most 32: one packet-mark bit each)")
    p.add_argument("--max-counters", type=int, default=128, help="most counters in all")
    p.add_argument("--max-memory-mb", type=float, default=256,
                   help="most sketch memory (width x depth x 8 bytes per counter per queue)")
    p.add_argument("--log-file", default=None, help="also append log lines to this file")
    p.add_argument("--state-dir", default=None,
                   help="directory for the agent's pid file (created if missing)")
    p.add_argument("--monitor-accept-only", action="store_true",
                   help="monitors accept packets without counting (benchmark baseline only)")
    p.add_argument("--no-capture", action="store_true",
                   help="do not install iptables rules or start monitors (API only; tests)")
    p.add_argument("--capture", choices=("nfqueue", "nflog"), default=None,
                   help="capture every sketch of this agent this way, whatever its task says "
                        "(default: each task's 'capture' field; nflog never delays packets)")
    p.add_argument("--nflog-threshold", type=int, default=64,
                   help="NFLOG packets the kernel gathers per netlink message (1..1024)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over the config file; ConfigError names the file, line or field at fault."""
    args = parse_with_config(build_parser(), argv)
    if not 1 <= args.queues <= 16:
        raise ConfigError(f"queues {args.queues} is out of range 1..16")
    if not 1 <= args.max_sketches <= 32:
        raise ConfigError(f"max_sketches {args.max_sketches} is out of range 1..32")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"port {args.port} is out of range 1..65535")
    if not 1 <= args.nflog_threshold <= 1024:
        raise ConfigError(f"nflog_threshold {args.nflog_threshold} is out of range 1..1024")
    if args.secret_file:
        check_secret_file(args.secret_file)
    return args


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _mac_of(ip: str | None) -> str | None:
    """The MAC address of the interface holding ``ip`` (None if not found)."""
    import subprocess

    if not ip:
        return None
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3].split("/")[0] == ip:
            try:
                with open(f"/sys/class/net/{parts[1].split('@')[0]}/address") as f:
                    return f.read().strip()
            except OSError:
                return None
    return None


def _url_host(url: str | None) -> str | None:
    return urllib.parse.urlsplit(url).hostname if url else None


def default_listen(advertise: str | None, controller: str | None) -> str:
    """The management address: the host of ``advertise``, else the local address
    this host uses to reach the controller, else every address."""
    host = _url_host(advertise)
    if host:
        return host
    target = _url_host(controller_urls(controller)[0]) if controller else None
    if target:
        try:
            family = socket.AF_INET6 if ":" in target else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))  # no packet is sent: only the route is looked up
                return str(s.getsockname()[0])
        except OSError:
            pass
    return "0.0.0.0"


def control_sources(controller: str | None, overlay: OverlayNode) -> Callable[[str], bool]:
    """Whether a source address is control traffic for this agent: its controllers
    and its current overlay parent and children."""
    controllers = {_url_host(u) for u in controller_urls(controller)} if controller else set()

    def trusted(ip: str) -> bool:
        if ip in controllers:
            return True
        peers = [overlay.parent, *overlay.children]
        return any(p is not None and _url_host(p.url) == ip for p in peers)

    return trusted


def registrar(args: argparse.Namespace, advertise: str, http: Transport,
              cost: Callable[[], dict], interval: float = 2.0) -> None:
    """Register with the controller as reachable at ``advertise``, then heartbeat with
    the monitors' ``cost()`` (``measure_model/cost.py``); retry forever, never raise.

    With several controller URLs (a leader and standbys on one shared store),
    a controller that fails is left for the next one, where the agent
    registers again; only the leader answers (a standby's ports stay closed).
    """
    import eventlet

    bases = controller_urls(args.controller)
    current = 0
    base = bases[current]
    body = {"name": args.name, "url": advertise, "data_ip": args.data_ip,
            "mac": _mac_of(args.data_ip), "version": __version__}
    registered, failing, last_logged = False, False, -1e9
    while True:
        try:
            if not registered:
                status, reply = http.request("POST", f"{base}/measure/v1/agents", json=body,
                                             timeout=3)
                if status >= 300:
                    raise RuntimeError(f"register: HTTP {status} {str(reply)[:200]}")
                registered = True
                log.info("registered with %s as %s", base, args.name)
            else:
                try:
                    beat = {"monitor": cost()}
                except Exception as exc:  # noqa: BLE001 - a heartbeat must still go out
                    log.warning("monitor cost unavailable: %s", exc)
                    beat = {}
                status, reply = http.request(
                    "POST", f"{base}/measure/v1/agents/{args.name}/heartbeat", json=beat,
                    timeout=3)
                if status == 404:
                    registered = False
                    raise RuntimeError("heartbeat: controller does not know us; re-registering")
                if status >= 300:
                    raise RuntimeError(f"heartbeat: HTTP {status} {str(reply)[:200]}")
            if failing:
                log.info("controller %s reachable again", base)
            failing = False
        except (OSError, RuntimeError) as exc:  # logged (at most every 30 s) and retried
            if not failing or time.monotonic() - last_logged > 30:
                log.warning("controller %s: %s (retrying every %gs)", base, exc, interval)
                last_logged = time.monotonic()
            failing = True
            if len(bases) > 1 and isinstance(exc, OSError):  # unreachable: try the next one
                current = (current + 1) % len(bases)
                base, registered = bases[current], False
        eventlet.sleep(interval if registered else min(interval, 1.0))


def controller_urls(value: str) -> list[str]:
    """The controller base URLs of ``--controller`` (comma-separated), in order."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    if not urls:
        raise ValueError("--controller names no URL")
    return urls


def supervisor(agent: Agent, overlay: OverlayNode, period: float = 0.25) -> None:
    """Restart dead monitors and tick the overlay role, forever."""
    import eventlet

    while True:
        try:
            agent.tick()
            overlay.tick(time.time())
        except Exception:  # noqa: BLE001 - the loop must survive
            log.exception("supervisor")
        eventlet.sleep(period)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        print(f"measure-agent: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    if args.check_config:
        print(f"measure-agent: configuration of agent {args.name} is valid")
        return 0
    import warnings

    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()
    import os
    import signal

    from host_agent.agent import Agent
    from host_agent.api import AgentApp
    from host_agent.bandwidth.api import bandwidth_api
    from host_agent.capture.rules import Capture
    from host_agent.monitor.client import MonitorProcess
    from host_agent.overlay.node import OverlayNode
    from measure_common.httpclient import HttpClient
    from measure_common.serverguard import AGENT_LIMITS, Guard, guarded_server

    _setup_logging(args.log_file)
    verifier = auth = None
    if args.secret_file:
        from measure_common.auth import HmacAuth, Verifier, load_or_create_secret

        secret, _ = load_or_create_secret(args.secret_file)
        verifier, auth = Verifier(secret), HmacAuth(secret)
    try:
        capture = None if args.no_capture else Capture(
            args.name, args.queue_num, args.queues, args.exclude_interface,
            nflog_threshold=args.nflog_threshold, own_ip=args.data_ip)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    monitors: list[Monitor] = [] if args.no_capture else [
        MonitorProcess(args.queue_num + i, args.max_len,
                       extra_args=(["--accept-only"] if args.monitor_accept_only else [])
                       + ["--nflog-threshold", str(args.nflog_threshold)])
        for i in range(args.queues)]
    agent = Agent(args.name, monitors, capture, max_sketches=args.max_sketches,
                  max_counters=args.max_counters, max_memory_mb=args.max_memory_mb,
                  data_ip=args.data_ip, capture_mode=args.capture)
    listen = args.listen or default_listen(args.advertise, args.controller)
    args.listen = listen
    wildcard = listen in ("0.0.0.0", "::")
    advertise = args.advertise or \
        f"http://{(args.data_ip or listen) if wildcard else listen}:{args.port}"
    # one signed client for every request this agent sends: registration and
    # heartbeats, overlay reports and task fan-out, bandwidth probe calls
    http = HttpClient(auth)
    overlay = OverlayNode(agent, http=http)
    bandwidth = bandwidth_api(args.data_ip, http)

    stopping: list[int] = []

    def _stop(signum, frame):  # only a flag: the main greenthread notices it
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sock = eventlet.listen((args.listen, args.port))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.listen, args.port, exc)
        return 2
    pid_file = os.path.join(args.state_dir, f"agent-{args.name}.pid") if args.state_dir else None
    if pid_file:
        os.makedirs(args.state_dir, exist_ok=True)
        with open(pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        agent.start()
        log.info("agent %s listening on %s:%d (queues %d from %d, legacy %s)", args.name,
                 args.listen, args.port, args.queues, args.queue_num,
                 "allowed" if args.allow_legacy else "refused")
        threads = [eventlet.spawn(supervisor, agent, overlay)]
        if args.controller:
            threads.append(eventlet.spawn(registrar, args, advertise, http, agent.cost))
        guard = Guard(AGENT_LIMITS, trusted=control_sources(args.controller, overlay))
        threads.append(eventlet.spawn(guarded_server, sock,
                                      AgentApp(agent, verifier, args.allow_legacy,
                                               insecure=args.insecure, bandwidth=bandwidth,
                                               overlay=overlay),
                                      guard, log_output=False))
        while not stopping and not threads[-1].dead:
            eventlet.sleep(0.2)
        for thread in threads:
            thread.kill()
    finally:
        log.info("agent %s stopping: removing capture rules", args.name)
        bandwidth.sessions.close_all()
        agent.stop()
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
