"""Narrow Mininet clean-up: only what a Mininet network of ours leaves behind.

``mininet.clean.cleanup()`` (``mn -c``) is written for a machine that runs
nothing else: it ``killall``s every ``ping``, ``ryu-manager`` and
``controller`` process and deletes ``/tmp/*.log`` and ``/tmp/*.out``. Here
tests, benchmarks and a demo may run side by side, so this removes only:

- Mininet's node shells (bash processes whose command line has
  ``mininet:``); processes started in hosts are the starter's to stop;
- the OVS bridges Mininet created (``s<N>`` names, or the names given);
- leftover ``<node>-eth<N>`` links in the root namespace;
- the management bridge ``mgmt0``, its ``mgmt0-*`` ports and the root
  namespace's ``mg-*`` end.

It takes argument lists only and never raises: it is called on failure paths.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

MININET_SWITCH = re.compile(r"^s\d+$")
NODE_LINK = re.compile(r"^([-_.A-Za-z0-9]+-eth\d+)(@\S+)?:?$")


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _mininet_shells() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"mininet:" in cmdline and b"bash" in cmdline:
            pids.append(int(entry))
    return pids


def cleanup_mininet(bridges: list[str] | None = None, mgmt_bridge: str = "mgmt0") -> None:
    """Remove what a Mininet network of ours may have left (see module docstring)."""
    for pid in _mininet_shells():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    names = bridges
    if names is None:
        names = [b for b in _run(["ovs-vsctl", "--timeout=5", "list-br"]).split()
                 if MININET_SWITCH.match(b)]
    for bridge in names:
        _run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", bridge])
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name = parts[1].rstrip(":").split("@")[0]
        if NODE_LINK.match(name) or name.startswith(("mg-", f"{mgmt_bridge}-")):
            _run(["ip", "link", "del", name])
    _run(["ip", "link", "del", mgmt_bridge])
