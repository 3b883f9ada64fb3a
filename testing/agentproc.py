"""A real agent process in a network namespace, and what netns tests do around it.

The agent runs as ``ip netns exec <ns> python -m host_agent`` (a real
process with its monitor subprocess). Tests talk HTTP to it from inside a
namespace: :func:`in_netns` runs a function in a short-lived thread that
has ``setns``-ed into the namespace, so sockets it opens live there (no
routes from the root namespace, no curl). ``send_udp`` and the TCP scripts
make traffic of known sizes; ``snapshot_when`` polls until it is counted.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import requests

from testing.netns import ROOT, Netns
from testing.procs import stop_process, wait_until

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
PORT = 8000


def in_netns(ns: Netns, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``fn()`` in a thread inside network namespace ``ns``; return its value."""
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns.name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"in_netns({ns.name}) took more than {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class AgentProc:
    """An agent process in a namespace and an HTTP client for it."""

    def __init__(self, ns: Netns, name: str, log_path: str, extra: list[str] | None = None,
                 client_ns: Netns | None = None) -> None:
        self.ns, self.name, self.log_path = ns, name, log_path
        self.client_ns = client_ns or ns
        host = "127.0.0.1" if self.client_ns is ns else ns.ip
        self.url = f"http://{host}:{PORT}"
        self.log_file = open(log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = ns.popen([sys.executable, "-m", "host_agent", "--name", name,
                              "--port", str(PORT), "--data-ip", ns.ip, "--insecure",
                              *(extra or [])],
                             stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_until(lambda: self.get("/agent/v1/health").status_code == 200, timeout=20,
                       interval=0.1, message=f"agent {name} health")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"agent did not start:\n{self.log()}") from None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        return in_netns(self.client_ns,
                        lambda: requests.request(method, self.url + path, **kw))

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def legacy(self, **fields: Any) -> requests.Response:
        """An original message, form-encoded exactly like the original clients."""
        return self.request("POST", "/", data=fields)

    def v1(self, method: str, path: str, body: Any = None) -> Any:
        r = self.request(method, "/agent/v1" + path, json=body)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json()

    def rules(self) -> str:
        return self.ns.run(["iptables-save", "-c", "-t", "filter"]).stdout

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        self.log_file.close()


def rule_counters(ag: AgentProc, sketch: int) -> tuple[int, int]:
    tag = f'"endhost-measure:{ag.name}:{sketch}"'
    for line in ag.rules().splitlines():
        if tag in line:
            pkts, nbytes = line[1:line.index("]")].split(":")
            return int(pkts), int(nbytes)
    raise AssertionError(f"no rule {tag}")


UDP_SENDER = """
import socket, sys, time
dst, port = sys.argv[1], int(sys.argv[2])
sizes = [int(x) for x in sys.argv[3].split(",")]
count, gap = int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    for size in sizes:
        s.sendto(b"x" * size, (dst, port))
    if gap:
        time.sleep(gap)
"""


def send_udp(ns: Netns, dst: str, port: int, sizes: list[int], count: int,
             gap: float = 0.001) -> None:
    ns.run([sys.executable, "-c", UDP_SENDER, dst, str(port), ",".join(map(str, sizes)),
            str(count), str(gap)], timeout=60)


def ping_counts(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def snapshot_when(ag: AgentProc, sid: int, cid: int, packets: int) -> dict:
    """Poll the counter snapshot until it has counted ``packets`` packets."""
    return wait_until(lambda: (s := ag.v1("GET", f"/sketches/{sid}/counters/{cid}"))
                      and s["packets"] >= packets and s, timeout=10,
                      message=f"{packets} packets counted")


TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
c.sendall(str(n).encode()); c.close()
"""

TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(b"y" * int(sys.argv[3])); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def tcp_transfer(client: Netns, server: Netns, dst: str, port: int, nbytes: int,
                 ipv6: bool = False) -> None:
    """``nbytes`` over one TCP connection from ``client`` to ``dst``:``port`` (a
    one-shot server in ``server``); asserts the server received all of them."""
    script = TCP_SERVER
    if ipv6:
        script = (script.replace('"0.0.0.0"', '"::"')
                  .replace("socket.socket()", "socket.socket(socket.AF_INET6)"))
    proc = server.popen([sys.executable, "-c", script, str(port)])
    wait_until(lambda: str(port) in server.run(["ss", "-ltn"]).stdout, timeout=10,
               message="server")
    out = client.run([sys.executable, "-c", TCP_CLIENT, dst, str(port), str(nbytes)]).stdout
    assert out.strip() == str(nbytes)
    proc.wait(10)


CAPTURES = ["nfqueue", "ebpf"]


def capture_args(mode: str) -> list[str]:
    """Agent arguments capturing every sketch with ``mode`` (the eBPF object is built on
    demand)."""
    if mode == "nfqueue":
        return ["--allow-legacy"]
    from host_agent.capture.ebpf import ensure_object

    ensure_object()
    return ["--allow-legacy", "--capture", mode]


def truth_rule(ns: Netns, *match: str, chain: str = "INPUT",
               table: str = "iptables") -> Callable[[], tuple[int, int]]:
    """A target-less iptables (or ip6tables) rule counting ``match``: ground truth where
    there is no capture rule; returns a reader of its packets and bytes."""
    tag = f"truth-{table}-{abs(hash(match)) % 10 ** 8}"
    ns.run([table, "-I", chain, "1", *match, "-m", "comment", "--comment", tag])

    def read() -> tuple[int, int]:
        for line in ns.run([f"{table}-save", "-c", "-t", "filter"]).stdout.splitlines():
            if tag in line:
                pkts, nbytes = line[1:line.index("]")].split(":")
                return int(pkts), int(nbytes)
        raise AssertionError(f"no rule {tag}")
    return read


def sketch_counts(ag: AgentProc, sketch: int, mode: str,
                  truth: Callable[[], tuple[int, int]] | None = None) -> tuple[int, int]:
    """What the capture should have seen: the sketch's rule counters, or for eBPF (no
    capture rule) the ground-truth rule's."""
    if mode == "ebpf":
        assert truth is not None
        return truth()
    return rule_counters(ag, sketch)
