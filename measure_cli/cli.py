"""``measure``: the command line for people, over the controller's REST API.

::

    measure check policies/heavy_hitter.yaml     # validate offline: every error, exit 1
    measure apply policies/heavy_hitter.yaml     # POST the policy -> task ids
    measure tasks                                # table of tasks and their status
    measure result 1 [--host h5] [--json]        # latest result as a table
    measure result 1 --key src                   # a five_tuple task's answer by source
    measure history 1 [--host h5] [--limit 10]   # past results, one row per interval
    measure delete 1
    measure topology | overlay | agents
    measure events [--since N] [--follow]        # --follow: print new events as they come
    measure bw h5 h6 [--method bulk]             # progress on stderr while it probes
    measure watch 1 [--interval 2] [--host h5]   # redraw the result like top
    measure result 1 --wait 30                   # wait (with progress) for a first result
    measure actions [--json]                     # reactions taken: active and past
    measure lift 3                               # end action 3 now
    measure paths 4                              # a path_health task's pairs and routes
    measure links                                # every link's loss estimate, suspects first
    measure diagnose h1 h6                       # is the path healthy now, and if not where

Wherever a host is named, its agent name (``h5``) or its data IP
(``10.0.0.5``: what the Mininet CLI puts in place of host names) is taken.
``--url`` (default ``$MEASURE_URL`` or http://127.0.0.1:8080) names the
controller; ``--token-file`` (default ``$MEASURE_TOKEN_FILE``, else
``$MEASURE_TOKEN``, else the controller's default token file when readable)
supplies the bearer token; a refused token is reported with the file it
came from. Every command but ``check`` talks to the controller through
``measure_cli.client.ControllerClient``; rendering is ``measure_cli.render``.
Exit status: 0 ok, 1 refused by the controller or invalid policy, 2
controller unreachable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from measure_cli import render, render_paths
from measure_cli.client import ApiError, ControllerClient
from measure_common.settings import get_setting
from measure_model.policy_errors import check_policy
from measure_model.version import __version__

MAX_POLICY_READ = 256 * 1024 + 1


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _read_policy(path: str) -> tuple[bytes, str]:
    """The policy's bytes and its one-line summary; CliError with every error."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_READ)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    name = os.path.basename(path)
    checked = check_policy(data, name)
    if checked.errors:
        count = len(checked.errors)
        head = f"{count} errors:\n" if count > 1 else ""
        raise CliError(head + "\n".join(checked.errors))
    return data, f"policy {name}: {len(checked.tasks)} task(s) valid: " + \
        ", ".join(f"{t.name} ({t.kind})" for t in checked.tasks)


def _no_agent_message(client: ControllerClient, task_id: str, host: str) -> str | None:
    """Why a host's result will never come: it runs no agent (None if it does)."""
    agents = client.call("GET", "/agents")["agents"]
    if host in render.agent_names(agents):
        return None
    names = ", ".join(a["name"] for a in agents) or "none"
    return (f"task {task_id}: {host} runs no agent, so it has no result "
            f"(agents: {names})")


def follow_events(client: ControllerClient, since: int, interval: float,
                  out: Any, as_json: bool, rounds: int = 0) -> int:
    """Print events after ``since`` as they arrive, until Ctrl-C (or ``rounds`` polls)."""
    header = True
    polls = 0
    while rounds == 0 or polls < rounds:
        events = client.call("GET", f"/events?since={since}")["events"]
        polls += 1
        if events:
            since = max(e["id"] for e in events)
            if as_json:
                for e in events:
                    print(json.dumps(e, sort_keys=True), file=out, flush=True)
            else:
                print(render.render_events(events, header=header), file=out, flush=True)
                header = False
        time.sleep(interval)
    return 0


def _no_result_yet(exc: Exception) -> bool:
    return isinstance(exc, ApiError) and str(exc).startswith("HTTP 404: no result yet")


def _wait_for_result(client: ControllerClient, path: str, task_id: str,
                     seconds: float) -> Any:
    """Poll ``path`` until the task's first result, showing progress on stderr."""
    from measure_cli.watch import Progress

    deadline = time.monotonic() + seconds
    with Progress(f"waiting for the first result of task {task_id}", sys.stderr,
                  expected=seconds) as progress:
        while True:
            try:
                return client.call("GET", path)
            except ApiError as exc:
                if not _no_result_yet(exc) or time.monotonic() >= deadline:
                    raise
                progress.status = str(exc).removeprefix("HTTP 404: ")
            time.sleep(0.5)


def run(args: argparse.Namespace, out: Any = None) -> int:
    """Execute one parsed command; returns the exit status."""
    out = out if out is not None else sys.stdout
    if args.command == "check":
        _, summary = _read_policy(args.policy)
        print(summary, file=out)
        return 0
    client = ControllerClient.from_token_file(args.url, args.token_file)
    as_json = getattr(args, "json", False)

    def show(data: Any, text: Callable[[Any], str]) -> None:
        print(json.dumps(data, indent=2, sort_keys=True) if as_json else text(data), file=out)

    def agents() -> list[dict]:
        return client.call("GET", "/agents")["agents"]

    if args.command == "apply":
        data, _ = _read_policy(args.policy)
        created = client.call("POST", "/tasks", yaml_text=data.decode())["tasks"]
        show(created, lambda c: "\n".join(f"task {t['id']}: {t['name']}" for t in c))
    elif args.command == "tasks":
        show(client.call("GET", "/tasks")["tasks"], lambda t: render.render_tasks(t, agents()))
    elif args.command == "delete":
        client.call("DELETE", f"/tasks/{quote(args.id, safe='')}")
        print(f"task {args.id} deleted", file=out)
    elif args.command == "watch":
        from measure_cli.watch import watch

        task_path = f"/tasks/{quote(args.id, safe='')}"
        query = f"?host={quote(args.host, safe='')}" if args.host else ""
        task = client.call("GET", task_path)
        return watch(lambda: client.call("GET", f"{task_path}/result{query}"),
                     lambda r: render.render_result(r, task, agents()),
                     f"measure watch {args.id}", args.interval, out, count=args.count,
                     waiting=_no_result_yet)
    elif args.command == "result":
        task_path = f"/tasks/{quote(args.id, safe='')}"
        params = {**({"host": args.host} if args.host else {}),
                  **({"key": args.key} if args.key else {})}
        query = f"?{urlencode(params)}" if params else ""
        try:
            if args.wait:
                result = _wait_for_result(client, f"{task_path}/result{query}", args.id,
                                          args.wait)
            else:
                result = client.call("GET", f"{task_path}/result{query}")
        except ApiError as exc:
            why = _no_agent_message(client, args.id, args.host) \
                if exc.status == 404 and args.host else None
            raise CliError(why or str(exc)) from None
        task = client.call("GET", task_path)
        show(result, lambda r: render.render_result(r, task, agents()))
    elif args.command == "history":
        params = {"limit": args.limit, **({"host": args.host} if args.host else {})}
        task = client.call("GET", f"/tasks/{quote(args.id, safe='')}")
        show(client.call("GET", f"/tasks/{quote(args.id, safe='')}/history?{urlencode(params)}"),
             lambda h: render.render_history(h, task.get("kind")))
    elif args.command == "flows":
        query = urlencode({"task": args.task, "top": args.top, "by": args.by})
        show(client.call("GET", f"/flows?{query}"), lambda f: render.render_flows(f, agents()))
    elif args.command == "topology":
        show(client.call("GET", "/topology"), lambda t: render.render_topology(t, agents()))
    elif args.command == "overlay":
        show(client.call("GET", "/overlay"), render.render_overlay)
    elif args.command == "agents":
        show(agents(), render.render_agents)
    elif args.command == "events":
        if args.follow:
            return follow_events(client, args.since, args.interval, out, as_json)
        show(client.call("GET", f"/events?since={args.since}")["events"], render.render_events)
    elif args.command == "actions":
        show(client.call("GET", "/actions")["actions"], render.render_actions)
    elif args.command == "lift":
        client.call("DELETE", f"/actions/{quote(args.id, safe='')}")
        print(f"action {args.id} lifted", file=out)
    elif args.command == "paths":
        show(client.call("GET", f"/tasks/{quote(args.id, safe='')}/paths"),
             render_paths.render_paths)
    elif args.command == "links":
        show(client.call("GET", "/links"), render_paths.render_links)
    elif args.command == "diagnose":
        query = urlencode({"src": args.src, "dst": args.dst})
        show(client.call("GET", f"/diagnose?{query}"), render_paths.render_diagnose)
    elif args.command == "bw":
        body = {"src": args.src, "dst": args.dst, "method": args.method,
                "max_duration": args.max_duration}
        from measure_cli.watch import Progress

        with Progress(f"probing the bandwidth {args.src} -> {args.dst} ({args.method})",
                      sys.stderr, expected=args.max_duration):
            reply = client.call("POST", "/bandwidth", body, timeout=args.max_duration + 20)
        show(reply, render.render_bandwidth)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds in 0.1..3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", default=get_setting("MEASURE_URL"),
                        help="controller REST URL (default $MEASURE_URL or %(default)s)")
    parser.add_argument("--token-file", help="file holding the controller bearer token "
                        "(default $MEASURE_TOKEN_FILE)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("check", "validate a policy offline"),
                       ("apply", "apply a policy on the controller")):
        p = sub.add_parser(name, help=text)
        p.add_argument("policy", help="YAML policy file")
        if name == "apply":
            p.add_argument("--json", action="store_true")
    for name, text in (("tasks", "list tasks"), ("topology", "discovered topology"),
                       ("overlay", "the overlay tree"), ("agents", "registered agents"),
                       ("actions", "reactions taken (active and past)")):
        sub.add_parser(name, help=text).add_argument("--json", action="store_true")
    p = sub.add_parser("result", help="latest result of a task")
    p.add_argument("id")
    p.add_argument("--host", help="one host (agent name or data IP)")
    p.add_argument("--key", help="a coarser key of an elastic five_tuple or src_dst task "
                                 "(src, dst, dport, ...)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="wait up to SECONDS for a first result (progress on stderr)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("flows", help="largest active flows of a flows task, network-wide")
    p.add_argument("task", help="task id")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--by", choices=("bytes", "packets"), default="bytes")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("watch", help="redraw a task's result every interval (like top)")
    p.add_argument("id")
    p.add_argument("--host", help="one host (agent name or data IP)")
    p.add_argument("--interval", type=_seconds, default=2.0, help="seconds (default 2)")
    p.add_argument("--count", type=int, default=None, help="stop after COUNT frames")
    p = sub.add_parser("history", help="past results of a task, newest first")
    p.add_argument("id")
    p.add_argument("--host", help="one host (agent name or data IP)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    sub.add_parser("delete", help="delete a task").add_argument("id")
    sub.add_parser("lift", help="end an active action now").add_argument("id")
    p = sub.add_parser("events", help="events (heavy hitters, port scans, coverage)")
    p.add_argument("--since", type=int, default=0, help="only events after this id")
    p.add_argument("--follow", action="store_true",
                   help="keep printing new events until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between polls with --follow (default 1)")
    p.add_argument("--json", action="store_true", help="JSON (one event per line with --follow)")
    p = sub.add_parser("paths", help="a path_health task's pairs: loss, RTT, route")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    sub.add_parser("links", help="every link's estimated loss and latency, suspects "
                                 "first").add_argument("--json", action="store_true")
    p = sub.add_parser("diagnose", help="is the path from SRC to DST healthy now")
    p.add_argument("src", help="agent name or data IP")
    p.add_argument("dst", help="agent name or data IP")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("bw", help="available bandwidth from SRC to DST")
    p.add_argument("src", help="agent name or data IP")
    p.add_argument("dst", help="agent name or data IP")
    p.add_argument("--method", choices=["slops", "bulk"], default="slops")
    p.add_argument("--max-duration", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: unwind as KeyboardInterrupt (``--follow`` and ``watch`` end cleanly), and
    exit 130 after at most ``INTERRUPT_GRACE`` seconds whatever the main thread is
    blocked in (a slow answer, a busy machine, a non-daemon thread at shutdown)."""
    timer = threading.Timer(INTERRUPT_GRACE, os._exit, (130,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


INTERRUPT_GRACE = 1.0


def main(argv: list[str] | None = None) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except ApiError as exc:
        print(f"measure: {exc}", file=sys.stderr)
        return 2 if exc.status is None else 1
    except CliError as exc:
        print(f"measure: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (``measure history 1 | head``): no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush is quiet
        return 141


if __name__ == "__main__":
    sys.exit(main())
