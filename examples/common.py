"""Small helpers shared by the example scripts.

The examples talk to the system in its two ways:

- **per host**, with the original JSON messages (form-encoded POST to an
  agent's port 8000). Agents accept them only when started with
  ``--allow-legacy`` (``measure-net --allow-legacy`` does that);
- **globally**, through the controller's REST API (``/measure/v1``), with
  the bearer token the controller created (``MEASURE_TOKEN_FILE``, or
  ``--token-file``).

Replies are parsed with ``json.loads`` / ``float``: never ``ast.literal_eval``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import requests

from measure_cli.client import ApiError, ControllerClient
from measure_common.settings import DEFAULT_CONTROLLER_URL, given_setting
from testing.procs import wait_until

AGENT_PORT = 8000
DEFAULT_CONTROLLER = given_setting("MEASURE_URL") or DEFAULT_CONTROLLER_URL
HERE = os.path.dirname(os.path.abspath(__file__))
POLICIES = os.path.join(os.path.dirname(HERE), "policies")


def add_mode_arguments(parser: argparse.ArgumentParser, agent_default: str) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--agent", metavar="IP", default=None,
                      help=f"per-host mode: send the original messages to this agent "
                           f"(default {agent_default})")
    mode.add_argument("--controller", metavar="URL", nargs="?", const=DEFAULT_CONTROLLER,
                      default=None, help=f"global mode through the controller REST API "
                                         f"(default URL {DEFAULT_CONTROLLER})")
    parser.add_argument("--token-file", default=given_setting("MEASURE_TOKEN_FILE"),
                        help="controller bearer token file (env MEASURE_TOKEN_FILE)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="stop after this many polls (default 0: forever)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.set_defaults(agent_default=agent_default)


def run_mode(args: argparse.Namespace, per_host, through_controller) -> None:
    """Global mode with ``--controller``, else per-host mode against ``--agent`` (or the
    default agent given to :func:`add_mode_arguments`)."""
    if args.controller:
        through_controller(args)
    else:
        args.agent = args.agent or args.agent_default
        per_host(args)


def rounds(n: int):
    """1, 2, 3, ... forever (n == 0) or up to n."""
    i = 0
    while n == 0 or i < n:
        i += 1
        yield i


def own_address(peer: str, port: int = AGENT_PORT) -> str:
    """This host's address on the way to ``peer`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer, port))
        return s.getsockname()[0]


def show(obj) -> None:
    print(json.dumps(obj, sort_keys=True, indent=4), flush=True)


class Agent:
    """One agent, spoken to with the original messages."""

    def __init__(self, addr: str, port: int = AGENT_PORT, timeout: float = 30.0) -> None:
        self.url = f"http://{addr}:{port}"
        self.timeout = timeout

    def post(self, **data) -> requests.Response:
        reply = requests.post(self.url, data=data, timeout=self.timeout)
        if reply.status_code != 200:
            sys.exit(f"{data.get('type')}: HTTP {reply.status_code}: {reply.text.strip()}")
        return reply

    def config_sketch(self, **fields) -> int:
        return int(self.post(type="config sketch", **fields).text)

    def config_counter(self, sketch_id: int, key_type: str, increment: str, **extra) -> None:
        self.post(type="config sketch counter", sketch_id=sketch_id,
                  counter_key_type=key_type, increment=increment, **extra)

    def heavy_hitters(self, sketch_id: int, key_type: str) -> dict:
        return json.loads(self.post(type="query heavy hitters", sketch_id=sketch_id,
                                    counter_key_type=key_type).text)

    def query(self, sketch_id: int, key_type: str, key: str) -> int:
        return int(float(self.post(type="query sketch", sketch_id=sketch_id,
                                   counter_key_type=key_type, counter_key=key).text))

    def real_time_counter(self, sketch_id: int, key_type: str) -> dict:
        return json.loads(self.post(type="query real time counter", sketch_id=sketch_id,
                                    counter_key_type=key_type).text)


class Controller:
    """The controller REST API (``/measure/v1``) through the project's one client
    (``measure_cli.client.ControllerClient``); a refused call ends the example with
    the controller's message."""

    def __init__(self, url: str, token_file: str | None, timeout: float = 60.0) -> None:
        self.client = ControllerClient.from_token_file(url, token_file, timeout=timeout)

    def call(self, method: str, path: str, body: object = None,
             yaml_text: str | None = None) -> Any:
        try:
            return self.client.call(method, path, body, yaml_text=yaml_text)
        except ApiError as exc:
            sys.exit(f"{method} {path}: {exc}")

    def apply_policy(self, name: str) -> list[dict]:
        with open(os.path.join(POLICIES, name)) as f:
            created = self.call("POST", "/tasks", yaml_text=f.read())
        for task in created["tasks"]:
            self.wait_installed(task["id"])
        return created["tasks"]

    def wait_installed(self, task_id: str, timeout: float = 30.0) -> dict:
        """Wait until the overlay reports the task installed on every agent."""
        last: dict = {}

        def active() -> dict | None:
            last.update(self.call("GET", f"/tasks/{task_id}"))
            return dict(last) if last["status"] == "active" else None

        try:
            return wait_until(active, timeout=timeout, interval=0.3)
        except TimeoutError:
            sys.exit(f"task {task_id} not installed within {timeout:.0f}s: {last.get('status')} "
                     f"{last.get('agents')} {last.get('last_error') or ''}")

    def delete_task(self, task_id: str) -> None:
        self.client.request("DELETE", f"/tasks/{task_id}", timeout=10)

    def result(self, task_id: str) -> dict | None:
        status, body = self.client.request("GET", f"/tasks/{task_id}/result")
        if status == 404:
            return None
        if status >= 400:
            sys.exit(f"result {task_id}: HTTP {status}: {body}")
        return body

    def wait_result(self, task_id: str, newer_than: float = 0.0, timeout: float = 60.0) -> dict:
        """The first complete result newer than ``newer_than``."""
        def fresh() -> dict | None:
            res = self.result(task_id)
            if (res and res.get("interval_end", 0) > newer_than and res.get("complete")
                    and "total" in res):
                return res
            return None

        try:
            return wait_until(fresh, timeout=timeout, interval=0.5)
        except TimeoutError:
            sys.exit(f"no result for task {task_id} within {timeout:.0f}s")

    def follow(self, policy: str, n: int, interval: float):
        """Apply a one-task policy, yield its newer complete results every
        ``interval`` seconds (``n`` times, 0 = forever), then delete it."""
        (task,) = self.apply_policy(policy)
        print(f"task id: {task['id']}", flush=True)
        try:
            seen = 0.0
            for _ in rounds(n):
                time.sleep(interval)
                res = self.wait_result(task["id"], newer_than=seen)
                seen = res["interval_end"]
                yield res
        finally:
            self.delete_task(task["id"])

    def events(self, since: int) -> list[dict]:
        body = self.call("GET", f"/events?since={since}")
        return body["events"] if isinstance(body, dict) else body
