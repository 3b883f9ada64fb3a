"""The controller as a real process: on loopback (``start_controller``) or in a namespace.

Both wait until the controller listens before returning, keep its output
in a log file a test can read, and are stopped by ``stop_process``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import requests

from measure_common.settings import child_env
from testing.agentproc import in_netns
from testing.netns import ROOT
from testing.procs import free_port, port_open, stop_process, wait_until


class ControllerProcess:
    def __init__(self, proc: subprocess.Popen, rest_port: int, of_port: int, log_path: str):
        self.proc, self.rest_port, self.of_port, self.log_path = proc, rest_port, of_port, log_path
        self.url = f"http://127.0.0.1:{rest_port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def start_controller(tmp_path, args: list[str] | None = None, rest_port: int | None = None,
                     of_port: int | None = None, env: dict | None = None) -> ControllerProcess:
    """Start the project's controller launcher and wait until both ports listen."""
    rest_port = rest_port or free_port()
    of_port = of_port or free_port()
    log_path = str(tmp_path / f"controller-{rest_port}.log")
    cmd = [sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port", str(of_port),
           "--wsapi-port", str(rest_port)]
    cmd += args if args is not None else ["--observe-links", "ryu_app.app"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(env))
    ctl = ControllerProcess(proc, rest_port, of_port, log_path)
    try:
        wait_until(lambda: port_open("127.0.0.1", rest_port) and port_open("127.0.0.1", of_port),
                   timeout=30, message="controller ports")
    except TimeoutError:
        stop_process(proc)
        raise AssertionError(f"controller did not start:\n{ctl.log()}") from None
    return ctl


def state_env(state_dir: Path, rest_port: int, **more: str) -> dict[str, str]:
    """The environment of a controller on ``rest_port`` that keeps its state and
    credentials in ``state_dir`` and gives agents its loopback URL (plus ``more``)."""
    return {"MEASURE_STATE_DIR": str(state_dir),
            "MEASURE_CONTROLLER_URL": f"http://127.0.0.1:{rest_port}", **more}


def credentials(state_dir: Path, timeout: float = 10) -> dict[str, str]:
    """Wait until a controller run with ``MEASURE_STATE_DIR=state_dir`` has written its
    bearer token and agent secret; the ``Authorization`` header of its REST API."""
    wait_until(lambda: (state_dir / "controller.token").exists()
               and (state_dir / "agent.secret").exists(), timeout=timeout,
               message="credential files")
    return {"Authorization": f"Bearer {(state_dir / 'controller.token').read_text().strip()}"}


class ControllerInNetns:
    """The controller process inside a namespace (so agents in others can reach it)."""

    def __init__(self, ns, state_dir, log_path) -> None:
        self.ns, self.state_dir = ns, state_dir
        self.url = f"http://{ns.ip}:8080"
        self.log_file = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        env = {**child_env(), "MEASURE_STATE_DIR": str(state_dir),
               "MEASURE_CONTROLLER_URL": self.url}
        self.proc = ns.popen([sys.executable, "-m", "ryu_app", "--ofp-tcp-listen-port", "6653",
                              "--wsapi-port", "8080", "ryu_app.app"],
                             stdout=self.log_file, stderr=self.log_file, cwd=ROOT, env=env)
        try:
            wait_until(lambda: (state_dir / "controller.token").exists()
                       and self.get("/measure/v1/tasks").status_code == 200,
                       timeout=40, interval=0.2, message="controller REST")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"controller did not start:\n{self.log()}") from None

    @property
    def token(self) -> str:
        return (self.state_dir / "controller.token").read_text().strip()

    def request(self, method, path, **kw):
        headers = {"Authorization": f"Bearer {self.token}"}
        return in_netns(self.ns, lambda: requests.request(method, self.url + path,
                                                          headers=headers, timeout=10, **kw))

    def get(self, path):
        return self.request("GET", path)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()


def rest_call(url: str, token: str | None, method: str, path: str, body: Any = None,
              ctype: str = "application/json") -> tuple[int, Any]:
    """One raw HTTP call to a controller (urllib, no client library): (status, JSON)."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local URL
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
