"""The kernel probe reflector (``bpf/reflect.c``): build it, attach it, detach it.

Why: with the echo in user space, a probe's RTT holds, besides the network's
time, one more wake-up of whatever forwards the echo (here OVS's userspace
datapath, a process): the reflector's send arrives at an idle switch. The
kernel's ICMP echo reply (ping) and TCP's ACKs leave in the softirq that
received the packet, so they do not. Measured over one OVS userspace bridge,
interleaved with ping: probe p50 1.7 to 2.3 times ping's median with the
user-space echo, 0.95 to 1.25 times with this one (docs/design.md, "Path
health"). The dwell the user-space reflector subtracts cannot remove this: it
lies after its send call.

Attached with iproute2's ``tc`` (a ``clsact`` qdisc, created if missing and
left in place; one ``bpf da`` ingress filter at :data:`TC_PRIO` /
:data:`TC_HANDLE`, before the eBPF capture's). A filter left by a killed worker
at that place is replaced. Any failure (no clang, no BPF, not root) is an
:class:`OSError`; the worker then echoes in user space.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

BPF_DIR = Path(__file__).resolve().parent / "bpf"
SOURCE = BPF_DIR / "reflect.c"
BUILD_DIR = BPF_DIR / "build"
TC_PRIO = 0x100           # lower than the eBPF capture's 0xE4B: runs first
TC_HANDLE = 0xE4C


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OSError(f"{cmd[0]}: {exc}") from None
    if check and res.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {res.stderr.strip()[-500:]}")
    return res


def build() -> Path:
    """The object for the current source (compiled now if missing): BUILD_DIR/reflect-<hash>.o."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = BUILD_DIR / f"reflect-{digest}.o"
    if out.exists():
        return out
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # workers may build at once
    arch = _run(["uname", "-m"]).stdout.strip()
    _run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
          "-c", str(SOURCE), "-o", str(tmp)])
    tmp.replace(out)
    return out


class KernelReflector:
    """The reflector attached to ``interface`` (this namespace) until :meth:`close`."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        obj = build()
        _run(["tc", "qdisc", "add", "dev", interface, "clsact"], check=False)  # may exist
        self._delete()
        _run(["tc", "filter", "add", "dev", interface, "ingress", "prio", str(TC_PRIO),
              "handle", str(TC_HANDLE), "bpf", "da", "obj", str(obj), "sec", "tc"])
        self.attached = True
        self.counter_map = self._counter_map()
        self._lib: Any = None
        self._map_fd: int | None = None

    def _counter_map(self) -> int | None:
        """The id of the attached program's ``probe_echoed`` map (None if bpftool cannot
        tell: the cost then leaves the kernel's echoes out)."""
        try:
            shown = json.loads(_run(["tc", "-j", "filter", "show", "dev", self.interface,
                                     "ingress", "prio", str(TC_PRIO)]).stdout or "[]")
            prog = next(f["options"]["prog"]["id"] for f in shown
                        if f.get("options", {}).get("handle") == hex(TC_HANDLE))
            for map_id in json.loads(_run(["bpftool", "-j", "prog", "show", "id",
                                           str(prog)]).stdout).get("map_ids", []):
                info = json.loads(_run(["bpftool", "-j", "map", "show", "id",
                                        str(map_id)]).stdout)
                if info.get("name") == "probe_echoed":
                    return int(map_id)
        except (OSError, ValueError, KeyError, StopIteration):
            return None
        return None

    def echoed(self) -> tuple[int, int]:
        """Echoes the kernel sent so far: (packets, IP bytes); (0, 0) when unknown. Read
        through libbpf (no process per read)."""
        if self.counter_map is None:
            return 0, 0
        if self._map_fd is None:
            from host_agent.capture.ebpf import libbpf

            lib = libbpf()
            lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
            fd = lib.bpf_map_get_fd_by_id(self.counter_map)
            if fd < 0:
                self.counter_map = None
                return 0, 0
            self._lib, self._map_fd = lib, fd
        out = []
        for index in (0, 1):
            key, value = ctypes.c_uint32(index), ctypes.c_uint64(0)
            if self._lib.bpf_map_lookup_elem(self._map_fd, ctypes.byref(key),
                                             ctypes.byref(value)) != 0:
                return 0, 0
            out.append(int(value.value))
        return out[0], out[1]

    def _delete(self) -> None:
        _run(["tc", "filter", "del", "dev", self.interface, "ingress", "prio", str(TC_PRIO),
              "handle", str(TC_HANDLE), "bpf"], check=False)

    def close(self) -> None:
        """Detach the filter (the clsact qdisc stays: others may use it)."""
        if self._map_fd is not None:
            os.close(self._map_fd)
            self._map_fd = None
        if self.attached:
            self._delete()
            self.attached = False
