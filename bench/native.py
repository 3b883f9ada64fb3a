"""The bench's small C programs: a sendmmsg UDP sender and an accept-only NFQUEUE loop.

The Python sender tops out near 100k packets/s, below what the monitor can
take, so it cannot find a ceiling; ``bench/c/udp_flood.c`` (``sendmmsg``
batches of 64) saturates the veth path instead. ``bench/c/nfq_accept.c`` is
an accept-only libnetfilter_queue loop with the Python monitor's design (up
to 64 packets drained, one batch verdict): the rate the kernel path allows a
user-space NFQUEUE reader, next to which the Python loops are measured.
Both are compiled with ``cc`` on first use into a cache directory keyed by
the source's hash (build-essential and libnetfilter-queue-dev are in
scripts/install.sh).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile

C_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")
LIBS = {"nfq_accept": ["-lnetfilter_queue", "-lnfnetlink"], "udp_flood": [], "raw_flood": []}


def build(name: str) -> str:
    """Path of the compiled ``bench/c/<name>.c`` (built now if missing or changed)."""
    src = os.path.join(C_DIR, f"{name}.c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out_dir = os.path.join(tempfile.gettempdir(), f"endhost-measure-bench-{os.getuid()}")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, f"{name}-{digest}")
    if not os.path.exists(exe):
        tmp = f"{exe}.{os.getpid()}"
        subprocess.run(["cc", "-O2", "-Wall", "-o", tmp, src, *LIBS[name]], check=True,
                       capture_output=True, text=True, timeout=120)
        os.replace(tmp, exe)
    return exe


class CAcceptLoop:
    """``nfq_accept`` on ``queue`` inside namespace ``ns`` behind an NFQUEUE rule of
    its own (``--queue-bypass``), so its rule counter is what it should have seen."""

    COMMENT = "endhost-measure:bench-c:queue"

    def __init__(self, ns: str, queue: int, match: list[str]) -> None:
        self.ns, self.rule = ns, ["INPUT", *match, "-m", "comment", "--comment", self.COMMENT,
                                  "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
        self._ipt("-I", *self.rule)
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, build("nfq_accept"),
                                      str(queue)], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("nfq_accept did not start")
        self.pids = [self.proc.pid]

    def _ipt(self, *args: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.ns, "iptables", "-w", "5", *args],
                              check=True, capture_output=True, text=True, timeout=20).stdout

    def seen(self) -> int:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return int(self.proc.stdout.readline())

    def matched(self) -> int:
        for line in subprocess.run(["ip", "netns", "exec", self.ns, "iptables-save", "-c"],
                                   capture_output=True, text=True, check=True).stdout.splitlines():
            if self.COMMENT in line:
                return int(line[1:line.index(":")])
        return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        subprocess.run(["ip", "netns", "exec", self.ns, "iptables", "-w", "5", "-D", *self.rule],
                       capture_output=True, check=False, timeout=20)
