"""The eBPF capture's pure parts: its configuration rows, buffer sizes, and records.

Records (one row per masked key with its packets, bytes and flags OR) must
count exactly what the packets they stand for count: same snapshot from
every counter the NFQUEUE path feeds.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from host_agent.capture import ebpf
from host_agent.counters.countmin import Counter, CounterSpec
from host_agent.counters.elastic import ElasticCounter
from host_agent.flows.cache import FlowCache
from host_agent.monitor.core import ebpf_memory, ebpf_period
from measure_model.packet.keys import HeaderBatch
from measure_model.task import parse_task
from testing.checks import some

pytestmark = pytest.mark.unit


def words(value: int) -> list[int]:
    return list(np.frombuffer(value.to_bytes(16, "big"), "<u4"))


def test_slot_config_of_an_ipv4_filter_with_ranges_and_random_sampling():
    cfg = ebpf.slot_config({"interface": "OUTPUT", "proto": "udp", "src": "10.0.0.0/24",
                            "dport": "8100:8000"}, ebpf.KEY_FIELDS["src_dport"], 0.25)
    assert (cfg.on, cfg.dir, cfg.families, cfg.proto) == (1, 1, 1, 17)
    assert (cfg.sport_lo, cfg.sport_hi, cfg.dport_lo, cfg.dport_hi) == (0, 65535, 8000, 8100)
    assert (cfg.sampled, cfg.threshold) == (1, 2 ** 30)
    assert cfg.fields == ebpf.F_SRC | ebpf.F_DPORT
    assert list(cfg.src_net) == words(0xFFFF0A000000)
    assert list(cfg.src_mask) == words(((1 << 128) - 1) ^ 0xFF)
    assert list(cfg.dst_mask) == [0, 0, 0, 0] and list(cfg.dst_net) == [0, 0, 0, 0]


def test_slot_config_of_ipv6_icmpv6_and_nth_sampling():
    cfg = ebpf.slot_config({"proto": "icmpv6", "dst": "fd78::2"}, ebpf.KEY_FIELDS["dst"],
                           0.1, "nth")
    assert (cfg.dir, cfg.families, cfg.proto, cfg.sampled, cfg.every) == (0, 2, 58, 2, 10)
    assert list(cfg.dst_net) == words(0xFD780000000000000000000000000002)
    assert list(cfg.dst_mask) == [0xFFFFFFFF] * 4
    every = ebpf.slot_config({}, 0)
    assert (every.families, every.proto, every.sampled, every.probes) == (3, 0, 0, 0)
    assert ebpf.slot_config({"proto": "tcp"}, 0, probes=True).probes == 1  # port_scan
    with pytest.raises(ValueError, match="sample 0"):
        ebpf.slot_config({}, 0, 0)


def test_key_fields_cover_what_each_kind_reads():
    assert ebpf.key_fields("heavy_hitters", "src") == ebpf.F_SRC
    assert ebpf.key_fields("counter", "proto") == ebpf.F_PROTO
    assert ebpf.key_fields("port_scan", "dport") == ebpf.F_SRC | ebpf.F_DST | ebpf.F_DPORT
    assert ebpf.key_fields("superspreaders", "src") == ebpf.F_SRC | ebpf.F_DST
    assert ebpf.key_fields("flows", "five_tuple") == ebpf.ALL_FIELDS


def test_both_buffers_stay_within_the_task_memory():
    for memory in (65536, 524288, 64 * 2 ** 20):
        for ncpus in (1, 2, 64):
            n = ebpf.buffer_entries(memory, ncpus)
            assert 2 * n * ebpf.entry_bytes(ncpus) <= memory or n == 64
    task = parse_task({"name": "t", "kind": "heavy_hitters", "memory": 131072}, "t")
    assert ebpf_memory(task) == 131072
    plain = parse_task({"name": "t", "kind": "heavy_hitters",
                        "sketch": {"width": 1024, "depth": 2}}, "t")
    assert ebpf_memory(plain) == 1024 * 2 * 8


def test_read_period_follows_intervals_windows_and_flows():
    hh = parse_task({"name": "t", "kind": "heavy_hitters", "report_interval": 2,
                     "window": {"length": 4}}, "t")
    el = parse_task({"name": "t", "kind": "entropy", "report_interval": 3}, "t")
    fl = parse_task({"name": "t", "kind": "flows"}, "t")
    assert ebpf_period([hh]) == 1.0 and ebpf_period([el]) == 3.0
    assert ebpf_period([el, fl]) == 1.0 and ebpf_period([]) == 5.0


def packets(n: int, seed: int = 3) -> HeaderBatch:
    rng = np.random.default_rng(seed)
    src = rng.integers(0x0A000001, 0x0A000001 + 40, n)
    six = rng.random(n) < 0.3
    src_words = np.zeros((n, 2), np.uint64)
    src_words[:, 1] = src.astype(np.uint64) | np.uint64(0xFFFF << 32)
    src_words[six] = [0xFD78000000000000, 7]
    dst_words = np.zeros((n, 2), np.uint64)
    dst_words[:, 1] = np.uint64(0xFFFF0A0000FE)
    dst_words[six] = [0xFD78000000000000, 2]
    proto = np.where(rng.random(n) < 0.5, 6, 17)
    return HeaderBatch.from_arrays(src_words, dst_words, proto, rng.integers(1000, 1010, n),
                                   rng.integers(0, 30, n), rng.integers(40, 1500, n),
                                   np.where(six, 6, 4), np.where(proto == 6, 0x10, 0))


def records(batch: HeaderBatch) -> HeaderBatch:
    """The packets aggregated per five-tuple, as the kernel's hash holds them."""
    full = np.column_stack([batch.src, batch.dst, batch.proto.astype(np.uint64) << 32
                            | batch.sport.astype(np.uint64) << 16 | batch.dport])
    uniq, inverse = np.unique(full, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse).astype(np.uint64)
    nbytes = np.bincount(inverse, weights=batch.length).astype(np.uint64)
    flags = np.zeros(len(uniq), np.uint8)
    np.bitwise_or.at(flags, inverse, batch.tcp_flags)
    last = uniq[:, 4]
    return HeaderBatch.from_records(uniq[:, :2], uniq[:, 2:4], (last >> 32) & 0xFF,
                                    (last >> 16) & 0xFFFF, last & 0xFFFF, nbytes, count,
                                    np.where(uniq[:, 0] == 0, 4, 6), flags)


@pytest.mark.parametrize("body", [
    {"kind": "heavy_hitters", "key": "src", "increment": "bytes"},
    {"kind": "heavy_hitters", "key": "dport", "memory": 65536},
    {"kind": "flow_size", "key": "five_tuple"},
    {"kind": "entropy", "key": "src_dst"},
    {"kind": "superspreaders", "key": "src", "min_distinct": 5},
    {"kind": "port_scan", "key": "src_dport", "scan_ports": 3},
])
def test_records_count_exactly_what_their_packets_count(body):
    task = parse_task({"name": "t", **body}, "t")
    pkts = packets(3000)
    recs = records(pkts)
    assert len(recs) < len(pkts) and recs.packets == len(pkts) == pkts.packets

    def build():
        if task.memory is not None:
            return ElasticCounter(task, 100.0)
        return Counter(CounterSpec.from_task(task), 100.0)

    one, other = build(), build()
    one.update(pkts, 100.5)
    other.update(recs, 100.5)
    a, b = one.snapshot(101.0), other.snapshot(101.0)
    # the elastic heavy part's votes see one weighted row where the packets were many
    # rows, so its state may differ once keys outnumber its buckets: everything else
    # is equal, and no key's estimate from the records is below its true count
    a.pop("elastic", None)
    b.pop("elastic", None)
    assert a == b
    if task.memory is not None:
        from measure_model.packet.keys import format_key, key_ints

        key = some(task.key)
        full = pkts.full_keys(key)
        values, counts = np.unique(np.asarray(key_ints(key, full)), return_counts=True)
        weights = counts if task.increment == "pkt" else None
        if weights is not None:
            for value, count in zip(values.tolist(), weights.tolist(), strict=True):
                assert other.estimate(format_key(task.key, value)) >= count


def test_records_give_the_flow_cache_the_same_flows():
    pkts = packets(2000, seed=9)
    one, other = FlowCache(), FlowCache()
    one.update(pkts, 5.0)
    other.update(records(pkts), 5.0)
    assert one.top(1000) == other.top(1000)
    assert one.stats == other.stats


def test_add_sketch_carries_the_ebpf_part_to_the_first_monitor_only():
    from host_agent.capture.rules import CaptureFilter
    from host_agent.counters.sketches import Sketch
    from host_agent.monitor import commands as cmds

    sketch = Sketch(3, 32, CaptureFilter(proto="udp", dport="7000:7010"), sample=0.5,
                    sample_mode="nth", capture="ebpf")
    first = sketch.add_command(first=True)
    assert first.ebpf == {"filter": {"interface": "INPUT", "proto": "udp", "dport": "7000:7010"},
                          "sample": 0.5, "sample_mode": "nth", "probes": False}
    assert cmds.from_wire(cmds.to_wire(first)) == first
    scan = Sketch(4, 33, CaptureFilter(probes=True), capture="ebpf")  # a port_scan task's
    assert scan.add_command().ebpf == {"filter": {"interface": "INPUT"}, "sample": 1.0,
                                       "sample_mode": "random", "probes": True}
    assert sketch.add_command(first=False).ebpf is None
    with pytest.raises(ValueError, match="ebpf: expected dict"):
        cmds.from_wire({**cmds.to_wire(first), "ebpf": "yes"})


def test_a_monitor_without_ebpf_refuses_naming_capture():
    from host_agent.monitor import commands as cmds
    from host_agent.monitor.core import MonitorCore

    core = MonitorCore()
    core.ebpf_error = "libbpf is not installed"
    with pytest.raises(ValueError, match="^capture: ebpf is not available on this host: "
                                         "libbpf is not installed$"):
        core.execute(cmds.AddSketch(1, 32, {}, {"filter": {}}), 0.0)
    assert core.sketches == {}


class EmptyKernel:
    """The capture's interface to the monitor, holding no records: the read schedule is
    what is checked (``MonitorCore.next_poll``), not the kernel."""

    attached = True

    def __init__(self) -> None:
        self.slots: dict[int, Any] = {}
        self.reads = 0

    def configure(self, slot: int, cfg: Any, memory: int) -> None:
        self.slots[slot] = SimpleNamespace(entries=ebpf.buffer_entries(memory, 2))

    def drain(self, slot: int) -> ebpf.Drained:
        self.reads += 1
        keys = np.zeros(0, ebpf.REC_DTYPE)
        empty = np.zeros(0, np.uint64)
        return ebpf.Drained(keys, empty, empty, np.zeros(0, np.uint8), (0, 0))


def test_a_flow_task_added_after_the_first_read_is_read_within_a_second():
    from host_agent.agent import flows_entry
    from host_agent.monitor import commands as cmds
    from host_agent.monitor.core import MonitorCore

    core = MonitorCore()
    kernel = EmptyKernel()
    core.ebpf = kernel
    core.execute(cmds.AddSketch(1, 32, {}, {"filter": {}}), 100.0)
    core.tick(100.0)  # the first read: no task yet, so the next is 5 s away
    assert kernel.reads == 1 and core.next_poll() == 105.0
    flows = parse_task({"name": "f", "kind": "flows", "active_timeout": 2}, "t")
    core.execute(cmds.AddFlows(1, flows_entry(flows)), 100.2)
    # the flow cache's timeouts need a read a second: a 4.5 s flow read once at its end
    # was exported as one record under a 2 s active timeout
    assert core.next_poll() == 101.2
    core.tick(101.2)
    assert kernel.reads == 2 and core.next_poll() == 102.2


class FailingKernel(EmptyKernel):
    def drain(self, slot: int) -> ebpf.Drained:
        self.reads += 1
        raise ebpf.EbpfError(f"batch read of slot {slot}: Device or resource busy")


def test_a_failed_read_is_retried_next_period_not_at_every_loop_turn():
    from host_agent.monitor import commands as cmds
    from host_agent.monitor.core import MonitorCore

    core = MonitorCore()
    kernel = FailingKernel()
    core.ebpf = kernel
    core.execute(cmds.AddSketch(1, 32, {}, {"filter": {}}), 100.0)
    with pytest.raises(ebpf.EbpfError, match="Device or resource busy"):
        core.tick(100.0)
    assert kernel.reads == 1 and core.next_poll() == 105.0
    core.tick(100.01)  # the monitor's next loop turn: no read before the next period
    assert kernel.reads == 1
