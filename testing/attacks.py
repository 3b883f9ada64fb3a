"""Attack traffic for tests: port scans, plain and with a forged source address.

Each helper runs a real tool inside a Mininet host (anything with ``cmd``):
``hping3`` for raw SYN scans (``-a`` forges the source address), ``nc -z``
for a plain connect scan. Every scan is bounded in count and time.
"""

from __future__ import annotations

from typing import Any


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
