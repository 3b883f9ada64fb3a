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

Loaded and attached through libbpf, as the eBPF capture is
(``host_agent.capture.ebpf``; no bpffs needed, which Mininet hosts lack for
iproute2's loader): a ``clsact`` qdisc, created if missing (and removed on close if created here
and no other filter is on it),
and one direct-action ingress program at :data:`TC_PRIO` / :data:`TC_HANDLE`,
before the eBPF capture's. A program left by a killed worker at that place is
replaced. Any failure (no clang, no BPF, not root) is an :class:`OSError`; the
worker then echoes in user space.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
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
        from host_agent.capture.ebpf import (
            _PRINT_FN,
            BPF_TC_INGRESS,
            EbpfError,
            _check,
            _TcHook,
            _TcOpts,
            libbpf,
        )

        self.interface = interface
        self.attached = False
        self.created_qdisc = False
        self.obj: Any = None
        try:
            ifindex = socket.if_nametoindex(interface)
            path = build()
            lib = self.lib = libbpf()
            self._quiet = _PRINT_FN(lambda level, fmt, args: 0)
            lib.libbpf_set_print(ctypes.cast(self._quiet, ctypes.c_void_p))
            self.obj = lib.bpf_object__open_file(str(path).encode(), None)
            if not self.obj:
                raise OSError(f"libbpf cannot open {path}")
            rc = lib.bpf_object__load(self.obj)
            if rc:
                raise OSError(f"the kernel refused the reflector ({os.strerror(-rc)})")
            prog = lib.bpf_object__find_program_by_name(self.obj, b"probe_reflect")
            prog_fd = _check(lib.bpf_program__fd(prog), "program probe_reflect")
            self.map_fd = _check(lib.bpf_object__find_map_fd_by_name(
                self.obj, b"probe_echoed"), "map probe_echoed")
            self.hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_INGRESS, 0, 0)
            self._opts = lambda fd=0: _TcOpts(ctypes.sizeof(_TcOpts), fd, 0, 0, TC_HANDLE,
                                              TC_PRIO, 0)
            rc = lib.bpf_tc_hook_create(ctypes.byref(self.hook))  # the clsact qdisc
            if rc and rc != -errno.EEXIST:
                _check(rc, f"clsact qdisc on {interface}")
            self.created_qdisc = rc == 0
            self._detach()  # a killed worker's filter at our place
            _check(lib.bpf_tc_attach(ctypes.byref(self.hook), ctypes.byref(self._opts(prog_fd))),
                   f"tc attach on {interface}")
            self.attached = True
        except (EbpfError, OSError) as exc:
            self.close()
            raise OSError(str(exc)) from None

    def _detach(self) -> None:
        opts = self._opts()
        self.lib.bpf_tc_detach(ctypes.byref(self.hook), ctypes.byref(opts))

    def echoed(self) -> tuple[int, int]:
        """Echoes the kernel sent so far: (packets, IP bytes); (0, 0) if unreadable."""
        out = []
        for index in (0, 1):
            key, value = ctypes.c_uint32(index), ctypes.c_uint64(0)
            if self.lib.bpf_map_lookup_elem(self.map_fd, ctypes.byref(key),
                                            ctypes.byref(value)) != 0:
                return 0, 0
            out.append(int(value.value))
        return out[0], out[1]

    def close(self) -> None:
        """Detach the program, and the clsact qdisc if it was created here and no other
        filter uses it."""
        if self.attached:
            self._detach()
            self.attached = False
            if self.created_qdisc:
                from host_agent.capture.ebpf import release_clsact

                release_clsact(self.lib, self.hook.ifindex, self.interface)
                self.created_qdisc = False
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None
