"""Attack traffic for tests: port scans, plain and with a forged source address.

Each helper runs a real tool inside a Mininet host (anything with ``cmd``):
``hping3`` for raw SYN scans (``-a`` forges the source address), ``nc -z``
for a plain connect scan. Every scan is bounded in count and time.
``attempts_among_noise`` runs between two namespaces (``testing.netns.Netns``):
known connection attempts among pings, replies and an established transfer.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from testing.netns import Netns


def syn_scan(host: Any, dst_ip: str, first_port: int, count: int,
             spoof: str | None = None, interval_us: int = 2000) -> str:
    """``count`` TCP SYNs to ports ``first_port``.. of ``dst_ip`` (one each), from
    ``spoof`` if given (a forged source address), else from ``host``'s own."""
    if not 1 <= count <= 1000:
        raise ValueError("count must be 1..1000")
    forged = ["-a", spoof] if spoof else []
    cmd = ["timeout", "20", "hping3", "-q", "-S", *forged, "-p", f"++{first_port}",
           "-c", str(count), "-i", f"u{interval_us}", dst_ip]
    return host.cmd(" ".join(cmd) + " 2>&1")


def connect_scan(host: Any, dst_ip: str, first_port: int, count: int) -> str:
    """A plain connect scan (``nc -z``) of ``count`` ports from ``first_port``."""
    if not 1 <= count <= 1000:
        raise ValueError("count must be 1..1000")
    last = first_port + count - 1
    return host.cmd(f"timeout 30 nc -z -w1 {dst_ip} {first_port}-{last} 2>&1")


_ATTEMPTS = """
import socket, sys
dst = sys.argv[1]
for port in range(7000, 7010):  # 10 connection attempts to closed ports (RST back)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((dst, port))
    except OSError:
        pass
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(9000, 9005):  # 5 UDP probes from a client port
    u.sendto(b"x", (dst, port))
for sport, dport in ((53, 40000), (123, 40001), (53, 123)):  # 2 replies, 1 probe
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    r.bind(("", sport))
    r.sendto(b"y", (dst, dport))
    r.close()
"""

_SERVE = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("", 7100))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
while conn.recv(65536):
    pass
"""

_SEND = ("import socket, sys; s = socket.create_connection((sys.argv[1], 7100)); "
         "s.sendall(b'z' * 2000000); s.close()")


def attempts_among_noise(client: Netns, server: Netns) -> int:
    """From ``client`` to ``server``: 50 pings, 10 TCP connection attempts to closed
    ports, 5 UDP datagrams from a client port, 2 UDP replies (from ports 53 and 123 to
    client ports), 1 UDP datagram from 53 to 123, and one connection carrying 2 MB.
    Returns the connection attempts among them (17: the transfer's opening SYN too)."""
    srv = server.popen([sys.executable, "-c", _SERVE], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        client.run(["ping", "-c", "50", "-i", "0.01", "-q", server.ip])
        client.run([sys.executable, "-c", _ATTEMPTS, server.ip])
        client.run([sys.executable, "-c", _SEND, server.ip])
        srv.wait(timeout=10)
    finally:
        srv.kill()
        srv.wait()
    return 10 + 5 + 1 + 1
