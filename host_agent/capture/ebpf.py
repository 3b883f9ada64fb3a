"""``capture: ebpf``: tc clsact programs count in the kernel; the monitor reads their maps.

Design
------
``bpf/ehm_tc.c`` holds two tc programs, ``ehm_ingress`` (INPUT sketches) and
``ehm_egress`` (OUTPUT sketches), attached with direct action to the host's
data interface. Per packet the program parses the IPv4/IPv6 header with
the rules of ``measure_model/packet/headers.py``, then for every active
sketch slot (at most :data:`MAX_SLOTS`) evaluates the task's filter (proto,
port ranges, IPv4/IPv6 prefixes) and sampling (``bpf_get_prandom_u32`` or an
atomic nth counter), masks the record key to the fields the sketch's
counters need (:func:`key_fields`: a ``src`` counter keeps only the source
address, a port scan keeps source, destination and destination port, a
flows task the whole 5-tuple) and adds packets, IP bytes and the OR of the
TCP flags to that key in the slot's per-CPU hash map. A port_scan sketch's
row admits connection attempts only (``probes``), so its records' flags are
those of SYNs and a connection's later segments never make its SYN look
like a reply. It returns
``TC_ACT_OK`` on every path: it never drops or changes a packet. Filters,
sampling and key masks are rows of the ``ehm_cfg`` array written here, so a
new task needs no recompilation.

Kernel-side state: option 2 of the design (an exact per-CPU hash), without
an LRU and with an overflow counter instead of a count-min. Why: a record
of the exact hash is the task's key with its exact packet and byte counts
for one read interval, so user space turns it into a weighted
``HeaderBatch`` and feeds the *same* counter objects the NFQUEUE path feeds
(elastic or count-min, windows, scan pairs, flow cache). Snapshot, merge and
answers are then unchanged and every kind works, with the same numbers as
the Python engine on the same packets. Option 1 (elastic buckets in BPF)
would duplicate the elastic update in C, tie the kernel layout to the
engine's (which is changing to key-sized slots), and still need the
windows, scan sets and flow records that only exact records give. An LRU
would lose counts silently when it evicts; a count-min overflow cannot give
keys back to the engine. So when a buffer is full a new key's packets go to
the slot's ``ehm_miss`` counters and are reported as ``missed`` (counted,
never silent), as fail-open packets are for NFQUEUE. The hash holds keys
of one read interval only, so it fills only when more distinct masked keys
than its entries arrive within one interval.

Memory: each slot has two buffers (double buffering, below) sized so both
together take at most the task's ``memory`` (count-min tasks without it: the
bytes of their sketch cells), at :func:`entry_bytes` per entry; the monitor's
counter keeps its own state of that size, as in the other modes. At 512 KB
and 2 CPUs a buffer holds 1,820 keys per read.

Reading: :meth:`EbpfCapture.drain` flips the slot's active buffer
(``active`` in its ``ehm_cfg`` row), waits :data:`GRACE_S` for programs that read the old
selector to finish (a program runs for well under a microsecond), then
drains the old buffer with one ``BPF_MAP_LOOKUP_AND_DELETE_BATCH``: no
packet is lost between reads, and the buffer is empty again before its next
turn. The monitor calls it once per report interval, or more often when a
counter needs time resolution (windows: a quarter of the window; flows:
1 s for their timeouts), and before answering a query; while reads find a
buffer more than half full it halves the period (down to 5 ms), so a burst
of new keys is read before the buffer overflows.

Loading: the object is built from source by :func:`build` (``clang -O2 -g
-target bpf`` against a ``vmlinux.h`` dumped from the kernel's BTF; there are
no kernel headers) at install time and on demand in tests, and carries the
SHA-256 of its source: :func:`check_object` refuses a missing or stale one
with a message saying how to build it. libbpf is Debian's ``libbpf1``
through ctypes: no maintained Python binding on PyPI loads CO-RE objects
and attaches tc programs without BCC, and the few calls needed (open, load,
map create/update/batch, tc attach/detach) are a stable C API.

Clean-up: the programs are attached at a fixed handle and priority
(:data:`TC_HANDLE`, :data:`TC_PRIORITY`); :meth:`EbpfCapture.remove_stale`
detaches whatever sits there before attaching (a crashed monitor's programs
stay attached, harmlessly: they never drop), and :meth:`EbpfCapture.close`
detaches them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import ipaddress
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BPF_DIR = Path(__file__).resolve().parent / "bpf"
SOURCE = BPF_DIR / "ehm_tc.c"
BUILD_DIR = BPF_DIR / "build"
OBJECT = BUILD_DIR / "ehm_tc.o"
MAX_SLOTS = 16
TC_HANDLE = 0xE4B
TC_PRIORITY = 0xE4B
GRACE_S = 0.001
KEY_SIZE = 40
VALUE_SIZE = 24
_HASH_OVERHEAD = 56      # the kernel's htab_elem header and per-CPU pointer, about
_MIN_ENTRIES = 64
F_SRC, F_DST, F_PROTO, F_SPORT, F_DPORT = 1, 2, 4, 8, 16
ALL_FIELDS = F_SRC | F_DST | F_PROTO | F_SPORT | F_DPORT
KEY_FIELDS = {"src": F_SRC, "dst": F_DST, "src_dst": F_SRC | F_DST, "sport": F_SPORT,
              "dport": F_DPORT, "src_dport": F_SRC | F_DPORT, "dst_dport": F_DST | F_DPORT,
              "proto": F_PROTO, "five_tuple": ALL_FIELDS}
PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_NOEXIST, BPF_ANY = 1, 0
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
REC_DTYPE = np.dtype([("family", "u1"), ("proto", "u1"), ("sport", "<u2"), ("dport", "<u2"),
                      ("pad", "<u2"), ("src", ">u8", 2), ("dst", ">u8", 2)])
VAL_DTYPE = np.dtype([("packets", "<u8"), ("bytes", "<u8"), ("flags", "<u8")])


class EbpfError(RuntimeError):
    """eBPF capture cannot run here (no BPF, no object, a stale object, a failed call)."""


# ---------------------------------------------------------------- build

def source_hash() -> str:
    """SHA-256 of the C source: the object built from it carries this value."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def build(out: Path = OBJECT, clang: str = "clang") -> Path:
    """Compile ``ehm_tc.c`` into ``out`` (vmlinux.h dumped from the kernel's BTF)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    header = out.parent / "vmlinux.h"
    if not header.exists():
        try:
            dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                                   "format", "c"], capture_output=True, text=True, check=True,
                                  timeout=120)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise EbpfError(f"cannot dump the kernel's BTF into vmlinux.h: {exc}") from None
        header.write_text(dump.stdout)
    tmp = out.with_suffix(".o.tmp")
    cmd = [clang, "-O2", "-g", "-target", "bpf", f"-I{out.parent}",
           "-I/usr/include/x86_64-linux-gnu", f'-DEHM_SOURCE_HASH="{source_hash()}"',
           "-c", str(SOURCE), "-o", str(tmp)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except OSError as exc:
        raise EbpfError(f"cannot run {clang}: {exc}") from None
    if res.returncode != 0:
        raise EbpfError(f"clang failed building {SOURCE.name}: {res.stderr.strip()[-2000:]}")
    tmp.replace(out)
    return out


def object_hash(path: Path) -> str | None:
    """The source hash an object was built from (None if it carries none)."""
    data = path.read_bytes()
    at = data.find(b"EHMSRC:")
    if at < 0:
        return None
    return data[at + 7:at + 7 + 64].decode("ascii", "replace")


def check_object(path: Path = OBJECT) -> Path:
    """``path`` if it exists and was built from the current source; else EbpfError."""
    hint = "build it with: python -m host_agent.capture.ebpf build (scripts/install.sh does)"
    if not path.exists():
        raise EbpfError(f"eBPF object {path} is missing; {hint}")
    if SOURCE.exists() and object_hash(path) != source_hash():
        raise EbpfError(f"eBPF object {path} is stale (built from another {SOURCE.name}); "
                        f"{hint}")
    return path


def ensure_object(path: Path = OBJECT) -> Path:
    """The object, built now if it is missing or stale (tests and benchmarks)."""
    try:
        return check_object(path)
    except EbpfError:
        return build(path)


# ---------------------------------------------------------------- configuration

def key_fields(kind: str, key: str) -> int:
    """The record-key fields (``F_*``) a counter of ``kind`` keyed by ``key`` needs."""
    fields = KEY_FIELDS[key]
    if kind == "port_scan":
        fields |= F_SRC | F_DST | F_DPORT
    elif kind in ("superspreaders", "ddos_victims"):
        fields |= F_SRC | F_DST
    elif kind == "flows":
        fields = ALL_FIELDS
    return fields


def _prefix(text: str | None) -> tuple[list[int], list[int]]:
    """Network and mask words (big-endian u32 values as stored) of a prefix, IPv4-mapped."""
    if text is None:
        return [0] * 4, [0] * 4
    net = ipaddress.ip_network(text, strict=False)
    if net.version == 4:
        addr = (0xFFFF << 32) | int(net.network_address)
        plen = 96 + net.prefixlen
    else:
        addr, plen = int(net.network_address), net.prefixlen
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    raw_a, raw_m = addr.to_bytes(16, "big"), mask.to_bytes(16, "big")
    return ([int.from_bytes(raw_a[i:i + 4], "little") for i in range(0, 16, 4)],
            [int.from_bytes(raw_m[i:i + 4], "little") for i in range(0, 16, 4)])


def _ports(value: str | None) -> tuple[int, int]:
    if value is None:
        return 0, 65535
    if ":" in value:
        lo, hi = (int(x) for x in value.split(":"))
        return min(lo, hi), max(lo, hi)
    return int(value), int(value)


class Cfg(ctypes.Structure):
    """``struct cfg`` of ehm_tc.c."""

    _fields_ = [("on", ctypes.c_uint32), ("dir", ctypes.c_uint32),
                ("fields", ctypes.c_uint32), ("families", ctypes.c_uint32),
                ("proto", ctypes.c_uint32), ("sampled", ctypes.c_uint32),
                ("threshold", ctypes.c_uint32), ("every", ctypes.c_uint32),
                ("probes", ctypes.c_uint32),
                ("sport_lo", ctypes.c_uint16), ("sport_hi", ctypes.c_uint16),
                ("dport_lo", ctypes.c_uint16), ("dport_hi", ctypes.c_uint16),
                ("src_net", ctypes.c_uint32 * 4), ("src_mask", ctypes.c_uint32 * 4),
                ("dst_net", ctypes.c_uint32 * 4), ("dst_mask", ctypes.c_uint32 * 4),
                ("active", ctypes.c_uint32)]


class _Meta(ctypes.Structure):
    """``struct meta`` of ehm_tc.c."""

    _fields_ = [("top", ctypes.c_uint32), ("mask", ctypes.c_uint32 * 2)]


def slot_config(filt: dict[str, Any], fields: int, sample: float = 1.0,
                sample_mode: str = "random", probes: bool = False) -> Cfg:
    """The kernel's row for a sketch: a task-model filter dict, key fields and sampling;
    ``probes``: count connection attempts only (a port_scan sketch, as its iptables
    rules would: ``rules.CaptureFilter.rule_args``)."""
    from measure_model.sketch.sampling import nth_every
    from measure_model.task import PROTO_FAMILY

    cfg = Cfg()
    cfg.on = 1
    cfg.dir = 1 if filt.get("interface", "INPUT") == "OUTPUT" else 0
    cfg.fields = fields
    cfg.probes = 1 if probes else 0
    families = 3
    for name in ("src", "dst"):
        if filt.get(name) is not None:
            families = 2 if ":" in str(filt[name]) else 1
    if filt.get("proto") in PROTO_FAMILY:
        families = 1 if PROTO_FAMILY[filt["proto"]] == 4 else 2
    cfg.families = families
    cfg.proto = PROTO_NUMBERS.get(filt.get("proto") or "", 0)
    if not 0 < sample <= 1:
        raise ValueError(f"sample {sample} is out of range (0, 1]")
    if sample < 1 and sample_mode == "nth":
        cfg.sampled, cfg.every = 2, nth_every(sample)
    elif sample < 1:
        cfg.sampled, cfg.threshold = 1, min(0xFFFFFFFF, round(sample * 2 ** 32))
    sport = filt.get("sport")
    dport = filt.get("dport")
    cfg.sport_lo, cfg.sport_hi = _ports(None if sport is None else str(sport))
    cfg.dport_lo, cfg.dport_hi = _ports(None if dport is None else str(dport))
    for name in ("src", "dst"):
        net, mask = _prefix(filt.get(name))
        getattr(cfg, f"{name}_net")[:] = net
        getattr(cfg, f"{name}_mask")[:] = mask
    return cfg


def entry_bytes(ncpus: int) -> int:
    """Kernel bytes of one preallocated per-CPU hash entry."""
    return KEY_SIZE + _HASH_OVERHEAD + ncpus * VALUE_SIZE


def buffer_entries(memory: int, ncpus: int) -> int:
    """Entries of each of a slot's two buffers so that both fit in ``memory`` bytes."""
    return max(_MIN_ENTRIES, memory // (2 * entry_bytes(ncpus)))


@dataclass
class Drained:
    """One buffer's records: masked keys, per-key packets/bytes/flags, what did not fit."""

    keys: np.ndarray          # REC_DTYPE
    packets: np.ndarray       # uint64
    nbytes: np.ndarray        # uint64
    flags: np.ndarray         # uint8
    missed: tuple[int, int]   # packets, bytes

    def batch(self) -> Any:
        """The records as a weighted ``HeaderBatch`` (one row per key)."""
        from measure_model.packet.keys import HeaderBatch

        return HeaderBatch.from_records(self.keys["src"].astype(np.uint64),
                                        self.keys["dst"].astype(np.uint64),
                                        self.keys["proto"], self.keys["sport"],
                                        self.keys["dport"], self.nbytes, self.packets,
                                        self.keys["family"], self.flags)


# ---------------------------------------------------------------- libbpf

class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int),
                ("attach_point", ctypes.c_int), ("parent", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int),
                ("flags", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIB: Any = None


def libbpf() -> Any:
    """Debian's libbpf1 with the prototypes used here (EbpfError if it is absent)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise EbpfError(f"libbpf is not installed (apt-get install libbpf1): {exc}") from None
    vp, ci, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    lib.bpf_object__open_file.restype = vp
    lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, vp]
    lib.bpf_object__load.argtypes = [vp]
    lib.bpf_object__close.argtypes = [vp]
    lib.bpf_object__find_program_by_name.restype = vp
    lib.bpf_object__find_program_by_name.argtypes = [vp, ctypes.c_char_p]
    lib.bpf_program__fd.argtypes = [vp]
    lib.bpf_object__find_map_fd_by_name.argtypes = [vp, ctypes.c_char_p]
    lib.bpf_map_create.argtypes = [ci, ctypes.c_char_p, u32, u32, u32, vp]
    lib.bpf_map_update_elem.argtypes = [ci, vp, vp, ctypes.c_uint64]
    lib.bpf_map_lookup_elem.argtypes = [ci, vp, vp]
    lib.bpf_map_lookup_and_delete_batch.argtypes = [ci, vp, vp, vp, vp,
                                                    ctypes.POINTER(u32), vp]
    lib.bpf_tc_hook_create.argtypes = [ctypes.POINTER(_TcHook)]
    lib.bpf_tc_hook_destroy.argtypes = [ctypes.POINTER(_TcHook)]
    lib.bpf_tc_attach.argtypes = [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]
    lib.bpf_tc_detach.argtypes = [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]
    lib.bpf_tc_query.argtypes = [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]
    lib.libbpf_num_possible_cpus.argtypes = []
    lib.libbpf_set_print.restype = vp
    lib.libbpf_set_print.argtypes = [vp]
    _LIB = lib
    return lib


def release_clsact(lib: Any, ifindex: int, interface: str) -> None:
    """Remove the ``clsact`` qdisc a closing user created on ``interface``, unless a tc
    filter is still on it (another program's, which keeps it)."""
    for point in ("ingress", "egress"):
        shown = subprocess.run(["tc", "filter", "show", "dev", interface, point],
                               capture_output=True, text=True, timeout=10, check=False)
        if shown.returncode != 0 or shown.stdout.strip():
            return
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS, 0, 0)
    lib.bpf_tc_hook_destroy(ctypes.byref(hook))


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        raise EbpfError(f"{what}: {os.strerror(err)} (errno {err})")
    return rc


class _Slot:
    __slots__ = ("cfg", "entries", "fds", "keys", "vals", "in_b", "out_b", "active")

    def __init__(self, cfg: Cfg, entries: int, fds: list[int], ncpus: int) -> None:
        self.cfg, self.entries, self.fds, self.active = cfg, entries, fds, 0
        self.keys = np.zeros(entries, REC_DTYPE)
        self.vals = np.zeros(entries * ncpus, VAL_DTYPE)
        self.in_b, self.out_b = ctypes.c_uint32(0), ctypes.c_uint32(0)


class EbpfCapture:
    """The loaded programs on one interface, their maps, and the sketch slots in use."""

    def __init__(self, interface: str, obj_path: Path | None = None) -> None:
        self.interface = interface
        self.path = check_object(obj_path or OBJECT)
        try:
            self.ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise EbpfError(f"no interface {interface!r} to attach the eBPF capture to") \
                from None
        self.lib = libbpf()
        self.created_qdisc = False  # by attach(): close() removes it if nothing else uses it
        self._quiet = _PRINT_FN(lambda level, fmt, args: 0)
        self.lib.libbpf_set_print(ctypes.cast(self._quiet, ctypes.c_void_p))
        self.ncpus = _check(self.lib.libbpf_num_possible_cpus(), "possible CPUs")
        self.obj = self.lib.bpf_object__open_file(str(self.path).encode(), None)
        if not self.obj:
            raise EbpfError(f"libbpf cannot open {self.path}: "
                            f"{os.strerror(ctypes.get_errno())}")
        rc = self.lib.bpf_object__load(self.obj)
        if rc:
            self.lib.bpf_object__close(self.obj)
            self.obj = None
            raise EbpfError(f"the kernel refused the eBPF programs ({os.strerror(-rc)}): "
                            "is BPF (CONFIG_BPF_SYSCALL, cls_bpf) available?")
        self.maps = {name: _check(self.lib.bpf_object__find_map_fd_by_name(
            self.obj, f"ehm_{name}".encode()), f"map ehm_{name}")
            for name in ("cfg", "nth", "miss", "stats", "meta", "recs")}
        self.progs = {}
        for point, name in ((BPF_TC_INGRESS, "ehm_ingress"), (BPF_TC_EGRESS, "ehm_egress")):
            prog = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
            self.progs[point] = _check(self.lib.bpf_program__fd(prog), f"program {name}")
        self.slots: dict[int, _Slot] = {}
        self.attached = False

    # ------------------------------------------------------------ attach
    def _hook(self, point: int) -> _TcHook:
        return _TcHook(ctypes.sizeof(_TcHook), self.ifindex, point, 0, 0)

    def _opts(self, fd: int = 0) -> _TcOpts:
        return _TcOpts(ctypes.sizeof(_TcOpts), fd, 0, 0, TC_HANDLE, TC_PRIORITY, 0)

    def remove_stale(self) -> int:
        """Detach programs left at our handle/priority (a crashed monitor's); return how
        many."""
        removed = 0
        for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
            hook, opts = self._hook(point), self._opts()
            if self.lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts)) == 0:
                removed += 1
        return removed

    def attach(self) -> None:
        """Create the clsact qdisc if needed and attach both programs (stale ones first
        removed)."""
        self.remove_stale()
        for point, fd in self.progs.items():
            hook = self._hook(point)
            rc = self.lib.bpf_tc_hook_create(ctypes.byref(hook))
            if rc and rc != -errno.EEXIST:
                _check(rc, f"clsact qdisc on {self.interface}")
            self.created_qdisc = self.created_qdisc or rc == 0
            opts = self._opts(fd)
            _check(self.lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
                   f"tc attach on {self.interface}")
        self.attached = True

    def prog_ids(self) -> dict[str, int]:
        """The program ids attached now at our handle/priority (ingress, egress)."""
        out = {}
        for point, name in ((BPF_TC_INGRESS, "ingress"), (BPF_TC_EGRESS, "egress")):
            hook, opts = self._hook(point), self._opts()
            if self.lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts)) == 0:
                out[name] = int(opts.prog_id)
        return out

    def close(self) -> None:
        """Detach the programs and release the maps."""
        if self.attached:
            self.remove_stale()
            self.attached = False
            if self.created_qdisc:
                release_clsact(self.lib, self.ifindex, self.interface)
                self.created_qdisc = False
        for slot in list(self.slots):
            self.remove(slot)
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None

    # ------------------------------------------------------------ slots
    def _update(self, fd: int, key: Any, value: Any, what: str) -> None:
        _check(self.lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value),
                                            BPF_ANY), what)

    def _set_meta(self) -> None:
        meta = _Meta(max(self.slots, default=-1) + 1)
        for slot, st in self.slots.items():
            meta.mask[st.cfg.dir & 1] |= 1 << slot
        self._update(self.maps["meta"], ctypes.c_uint32(0), meta, "meta")

    def configure(self, slot: int, cfg: Cfg, memory: int) -> Drained | None:
        """Install or change ``slot``'s row; (re)create its buffers when their size changes.
        Returns what the old buffers held when they were replaced."""
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"ebpf slot {slot} out of range")
        entries = buffer_entries(memory, self.ncpus)
        old = self.slots.get(slot)
        leftover = None
        if old is None or old.entries != entries:
            if old is not None:
                leftover = self.remove(slot)
            fds = []
            for buf in range(2):
                fd = _check(self.lib.bpf_map_create(BPF_MAP_TYPE_PERCPU_HASH,
                                                    f"ehm_s{slot}b{buf}".encode(), KEY_SIZE,
                                                    VALUE_SIZE, entries, None),
                            "per-CPU hash map")
                fds.append(fd)
                self._update(self.maps["recs"], ctypes.c_uint32(slot * 2 + buf),
                             ctypes.c_uint32(fd), "outer map")
            self._update(self.maps["nth"], ctypes.c_uint32(slot), ctypes.c_uint64(0), "nth")
            for buf in range(2):
                self._update(self.maps["miss"], ctypes.c_uint32(slot * 2 + buf),
                             (ctypes.c_uint64 * (3 * self.ncpus))(), "miss")
            self.slots[slot] = _Slot(cfg, entries, fds, self.ncpus)
        else:
            old.cfg = cfg
        cfg.active = self.slots[slot].active
        self._update(self.maps["cfg"], ctypes.c_uint32(slot), cfg, "cfg")
        self._set_meta()
        return leftover

    def remove(self, slot: int) -> Drained | None:
        """Switch ``slot`` off and free its buffers; return what they still held."""
        st = self.slots.get(slot)
        if st is None:
            return None
        self._update(self.maps["cfg"], ctypes.c_uint32(slot), Cfg(), "cfg")
        time.sleep(GRACE_S)
        parts = [self._drain_buffer(slot, st, buf) for buf in range(2)]
        del self.slots[slot]
        self._set_meta()
        for fd in st.fds:
            os.close(fd)
        return _concat(parts)

    def drain(self, slot: int) -> Drained:
        """Flip ``slot``'s buffers and read (and empty) the one just retired."""
        st = self.slots[slot]
        old = st.active
        st.active = 1 - old
        # only ``active`` changes: a program reading the row meanwhile sees either buffer
        st.cfg.active = st.active
        self._update(self.maps["cfg"], ctypes.c_uint32(slot), st.cfg, "cfg")
        time.sleep(GRACE_S)
        return self._drain_buffer(slot, st, old)

    def _drain_buffer(self, slot: int, st: _Slot, buf: int) -> Drained:
        fd = st.fds[buf]
        count = ctypes.c_uint32(st.entries)
        rc = self.lib.bpf_map_lookup_and_delete_batch(
            fd, None, ctypes.byref(st.out_b), st.keys.ctypes.data, st.vals.ctypes.data,
            ctypes.byref(count), None)
        err = ctypes.get_errno() if rc else 0
        if rc and err != errno.ENOENT and -rc != errno.ENOENT:
            raise EbpfError(f"batch read of slot {slot}: {os.strerror(err or -rc)}")
        n = int(count.value)
        vals = st.vals[:n * self.ncpus].reshape(n, self.ncpus)
        keys = st.keys[:n].copy()
        missed = self._take_miss(slot * 2 + buf)
        return Drained(keys, vals["packets"].sum(axis=1, dtype=np.uint64),
                       vals["bytes"].sum(axis=1, dtype=np.uint64),
                       np.bitwise_or.reduce(vals["flags"], axis=1).astype(np.uint8)
                       if n else np.zeros(0, np.uint8), missed)

    def _take_miss(self, idx: int) -> tuple[int, int]:
        cells = (ctypes.c_uint64 * (3 * self.ncpus))()
        key = ctypes.c_uint32(idx)
        _check(self.lib.bpf_map_lookup_elem(self.maps["miss"], ctypes.byref(key),
                                            ctypes.byref(cells)), "miss")
        values = list(cells)
        if any(values):
            self._update(self.maps["miss"], key, (ctypes.c_uint64 * (3 * self.ncpus))(),
                         "miss")
        return sum(values[0::3]), sum(values[1::3])

    def stats(self) -> dict[str, int]:
        """The program's own counters: packets seen (both directions), not IP, records."""
        out = {}
        for idx, name in enumerate(("packets", "not_ip", "records")):
            cells = (ctypes.c_uint64 * self.ncpus)()
            key = ctypes.c_uint32(idx)
            _check(self.lib.bpf_map_lookup_elem(self.maps["stats"], ctypes.byref(key),
                                                ctypes.byref(cells)), "stats")
            out[name] = sum(cells)
        return out


def _concat(parts: list[Drained]) -> Drained:
    return Drained(np.concatenate([p.keys for p in parts]),
                   np.concatenate([p.packets for p in parts]),
                   np.concatenate([p.nbytes for p in parts]),
                   np.concatenate([p.flags for p in parts]),
                   (sum(p.missed[0] for p in parts), sum(p.missed[1] for p in parts)))


def data_interface(ip: str) -> str | None:
    """The interface holding address ``ip`` in this namespace (None if none)."""
    family = "-6" if ":" in ip else "-4"
    out = subprocess.run(["ip", "-o", family, "addr", "show"], capture_output=True, text=True,
                         check=False, timeout=10).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3].split("/")[0] == ip:
            return parts[1].split("@")[0]
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m host_agent.capture.ebpf",
                                     description="build or check the eBPF capture object")
    parser.add_argument("action", choices=("build", "check"))
    args = parser.parse_args(argv)
    try:
        path = build() if args.action == "build" else check_object()
    except EbpfError as exc:
        print(f"ebpf: {exc}")
        return 1
    print(f"ebpf: {path} ({source_hash()[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
