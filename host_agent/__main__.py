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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at run time only after eventlet.monkey_patch() in main
    from host_agent.agent import Agent
    from host_agent.overlay.node import OverlayNode
    from host_agent.protocols import Monitor
    from measure_common.httpclient import Transport

from measure_common.config import (
    CONFIG_ERROR_EXIT,
    ConfigError,
    add_config_arguments,
    add_options,
    check_bounds,
    check_secret_file,
    parse_with_config,
)
from measure_model.version import __version__

log = logging.getLogger("host_agent")
AGENT_PRIORITY = -5  # nice value of the agent process (the monitors take -10)


def build_parser() -> argparse.ArgumentParser:
    """The agent's options; also the schema of its config file (measure_common.config)."""
    p = argparse.ArgumentParser(prog="measure-agent",
                                description="End-host measurement agent (NFQUEUE sketches + "
                                            "HTTP API on port 8000).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_config_arguments(p)
    add_options(p, "agent")  # every key is a row of measure_common.settings
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over the config file; ConfigError names the file, line or field at fault."""
    args = parse_with_config(build_parser(), argv)
    check_bounds(args, "agent")
    if args.secret_file:
        check_secret_file(args.secret_file)
    if args.key_file:
        check_secret_file(args.key_file, "key_file")
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


def beat_parent(http: Transport, overlay: OverlayNode, monitor: dict | None) -> bool | None:
    """Send this agent's heartbeat (with its subtree's) to its overlay parent. None when
    there is no parent or it did not take it (the heartbeat then goes to the
    controller); else whether the controller said it does not know this agent (it
    registers again)."""
    parent = overlay.parent
    if parent is None:
        return None
    try:
        status, reply = http.request("POST", f"{parent.url}/agent/v1/heartbeats",
                                     json=overlay.beat_body(__version__, monitor), timeout=2)
    except OSError as exc:
        log.info("heartbeat to parent %s: %s (sent to the controller)", parent.name, exc)
        return None
    if status >= 300:
        log.info("heartbeat to parent %s: HTTP %s %s (sent to the controller)", parent.name,
                 status, str(reply)[:200])
        return None
    unknown = reply.get("unknown") if isinstance(reply, dict) else None
    overlay.beats.unknown_below(unknown)  # for this agent's children's replies
    return isinstance(unknown, list) and overlay.name in unknown


class BeatCost:
    """The monitors' cost for the next heartbeat, never waited for longer than ``wait``
    seconds: a monitor busy for seconds (a snapshot of a large sketch, a flood) would
    hold the beat back, and a root whose beat is late has its whole subtree marked
    down. A slow reading goes on in the background (one at a time) and the beat
    carries the last one read (None before the first: the controller keeps its own)."""

    def __init__(self, read: Callable[[], dict], wait: float = 0.5) -> None:
        self.read, self.wait = read, wait
        self.last: dict | None = None
        self._pending: Any = None

    def _read(self) -> None:
        try:
            self.last = self.read()
        except Exception as exc:  # noqa: BLE001 - a heartbeat must still go out
            log.warning("monitor cost unavailable: %s", exc)

    def __call__(self) -> dict | None:
        import eventlet

        if self._pending is None or self._pending.dead:
            self._pending = eventlet.spawn(self._read)
        with eventlet.Timeout(self.wait, False):
            self._pending.wait()
        return self.last


class ControllerUnavailable(RuntimeError):
    """A controller answered 503: a standby (or its store is down); try the next URL."""


def registrar(args: argparse.Namespace, advertise: str, http: Transport,
              cost: Callable[[], dict], interval: float = 2.0,
              overlay: OverlayNode | None = None) -> None:
    """Register with the controller as reachable at ``advertise``, then heartbeat with
    the monitors' ``cost()`` (``measure_model/cost.py``); retry forever, never raise.

    With an ``overlay`` parent the heartbeat goes to that parent, which folds it
    into its own (``host_agent/overlay/beats.py``); a root, or an agent whose
    parent does not answer, sends its own with its subtree to the controller.

    With several controller URLs (a leader and standbys on one shared store),
    a controller that does not answer, or answers 503 (a standby refuses agent
    calls, naming the leader), is left for the next one, where the agent
    registers again: it ends up with the leader, whichever URL that is.
    """
    import eventlet

    beat_cost = BeatCost(cost)
    bases = controller_urls(args.controller)
    current = 0
    base = bases[current]
    body = {"name": args.name, "url": advertise, "data_ip": args.data_ip,
            "mac": _mac_of(args.data_ip), "version": __version__}
    registered, failing, last_logged = False, False, -1e9
    while True:
        try:
            if not registered:
                sent = time.monotonic()
                status, reply = http.request("POST", f"{base}/measure/v1/agents", json=body,
                                             timeout=3)
                if status == 503:
                    raise ControllerUnavailable(f"register: HTTP 503 {str(reply)[:200]}")
                if status >= 300:
                    raise RuntimeError(f"register: HTTP {status} {str(reply)[:200]}")
                registered = True
                log.info("registered with %s as %s", base, args.name)
                if overlay is not None and isinstance(reply, dict):
                    overlay.drop_stale(reply.get("tasks"), sent)
            else:
                monitor = beat_cost()
                via_parent = beat_parent(http, overlay, monitor) if overlay else None
                if via_parent is None:  # no parent, or it is down: to the controller
                    beat: dict = {} if monitor is None else {"monitor": monitor}
                    if overlay is not None:  # with the subtree heard through the tree
                        subtree = overlay.subtree_beats()
                        if subtree:
                            beat["subtree"] = subtree
                    status, reply = http.request(
                        "POST", f"{base}/measure/v1/agents/{args.name}/heartbeat",
                        json=beat, timeout=3)
                    if status == 404:
                        registered = False
                        raise RuntimeError("heartbeat: controller does not know us; "
                                           "re-registering")
                    if status == 503:
                        raise ControllerUnavailable(f"heartbeat: HTTP 503 {str(reply)[:200]}")
                    if status >= 300:
                        raise RuntimeError(f"heartbeat: HTTP {status} {str(reply)[:200]}")
                    if overlay is not None and isinstance(reply, dict):
                        overlay.beats.unknown_below(reply.get("unknown"))
                elif via_parent:  # the controller does not know us (told down the tree)
                    registered = False
            if failing:
                log.info("controller %s reachable again", base)
            failing = False
        except (OSError, RuntimeError) as exc:  # logged (at most every 30 s) and retried
            if not failing or time.monotonic() - last_logged > 30:
                log.warning("controller %s: %s (retrying every %gs)", base, exc, interval)
                last_logged = time.monotonic()
            failing = True
            if len(bases) > 1 and isinstance(exc, OSError | ControllerUnavailable):
                # unreachable, or a standby: try the next one
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
            # wake at the next interval end or deadline rather than up to a period after
            # it: the own snapshots are then taken close to the interval end on every
            # agent, and the interval figures of the agents cover the same seconds (a
            # deadline already past, say behind a snapshot still being taken: 50 ms)
            due = overlay.next_wakeup(time.time())
            pause = min(period, due + 0.001) if due > 0 else 0.05
        except Exception:  # broad: the loop must survive (logged with its traceback)
            log.exception("supervisor")
            pause = period
        eventlet.sleep(pause)


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
    from host_agent.probes import ProbeMesh
    from measure_common.httpclient import HttpClient
    from measure_common.serverguard import AGENT_LIMITS, Guard, guarded_server

    _setup_logging(args.log_file)
    # a report is due at each interval's end and takes little CPU: ahead of bulk work on
    # the host (a flooding sender, the switch), behind its own monitors (-10)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, AGENT_PRIORITY)
    verifier = auth = keyring = None
    if args.key_file or args.secret_file:
        from host_agent.keyring import KeyRing
        from measure_common.auth import RoutedAuth, Verifier, agent_key, load_or_create_secret

        if args.key_file:
            own_key, _ = load_or_create_secret(args.key_file)
        else:  # the master secret: keep only this agent's key derived from it
            own_key = agent_key(load_or_create_secret(args.secret_file)[0], args.name)
        keyring = KeyRing(args.name, own_key,
                          controller_urls(args.controller) if args.controller else [])
        verifier, auth = Verifier.for_agent(args.name, own_key), RoutedAuth(keyring.lookup)
    try:
        capture = None if args.no_capture else Capture(
            args.name, args.queue_num, args.queues, args.exclude_interface,
            nflog_threshold=args.nflog_threshold, own_ip=args.data_ip)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    ebpf_iface = args.data_interface
    if ebpf_iface is None and args.data_ip and not args.no_capture:
        from host_agent.capture.ebpf import data_interface

        ebpf_iface = data_interface(args.data_ip)
    monitors: list[Monitor] = [] if args.no_capture else [
        MonitorProcess(args.queue_num + i, args.max_len,
                       extra_args=(["--accept-only"] if args.monitor_accept_only else [])
                       + ["--nflog-threshold", str(args.nflog_threshold)]
                       + (["--ebpf-interface", ebpf_iface] if ebpf_iface and i == 0 else []))
        for i in range(args.queues)]
    probes = ProbeMesh(args.name, bind=args.data_ip or "0.0.0.0", port=args.probe_port,
                       local=[args.data_ip] if args.data_ip else None) \
        if args.probe_port else None
    agent = Agent(args.name, monitors, capture, max_sketches=args.max_sketches,
                  max_counters=args.max_counters, max_memory_mb=args.max_memory_mb,
                  data_ip=args.data_ip, capture_mode=args.capture, probes=probes)
    listen = args.listen or default_listen(args.advertise, args.controller)
    args.listen = listen
    wildcard = listen in ("0.0.0.0", "::")
    advertise = args.advertise or \
        f"http://{(args.data_ip or listen) if wildcard else listen}:{args.port}"
    # one signed client for every request this agent sends: registration and
    # heartbeats, overlay reports and task fan-out, bandwidth probe calls
    http = HttpClient(auth)
    overlay = OverlayNode(agent, http=http)
    overlay.keyring = keyring
    bandwidth = bandwidth_api(args.data_ip, http)
    bandwidth.prober.keyring = keyring
    bandwidth.prober.name = args.name
    bandwidth.prober.controllers = controller_urls(args.controller) if args.controller else []

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
            threads.append(eventlet.spawn(registrar, args, advertise, http, agent.cost,
                                          overlay=overlay))
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
