"""Flow tasks inside the monitor: a flow cache plus its IPFIX / NetFlow v9 exporters.

A :class:`FlowTask` is what the monitor keeps per ``flows`` task: the
:class:`~host_agent.flows.cache.FlowCache` fed by the batch path, and one
:class:`Exporter` per ``export`` target. Exporting never blocks and never
raises into the packet loop: each exporter owns a connected, non-blocking
UDP socket (connected so that an ICMP port-unreachable from the collector
comes back as ``ECONNREFUSED`` on a later send and is seen); a send that
fails is counted (``errors``, ``records_dropped``) with the last error and
its time, which the agent's health shows. The agent resolves a collector's
name when it installs the task and passes the address: the monitor never
waits for DNS. After a failure the socket is re-made at most every
``RETRY_S`` seconds (records meanwhile are counted as dropped), so a dead
collector costs nothing per batch.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np

from host_agent.flows.cache import DIRECTIONS, FlowCache
from measure_model.fields import parse_host_port
from measure_model.sketch.sampling import effective_sample
from measure_model.task import Task
from measure_model.wire import ipfix

RETRY_S = 5.0
EXPIRE_EVERY_S = 0.5


class Exporter:
    """One collector: the UDP socket, the message stream and its error counters.

    ``address`` is the collector's IP address as the agent resolved it;
    without one the collector's host must be an address literal (the monitor
    never waits for DNS)."""

    def __init__(self, collector: str, fmt: str, domain: int, now: float,
                 mtu: int = ipfix.DEFAULT_MTU,
                 template_interval: float = ipfix.DEFAULT_TEMPLATE_INTERVAL,
                 address: str | None = None) -> None:
        self.collector, self.format = collector, fmt
        self.host, self.port = parse_host_port(collector)
        self.address = address or self.host
        self.domain, self.mtu, self.template_interval = domain, mtu, template_interval
        self.boot = now
        self.builder: ipfix.MessageBuilder | None = None
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        self.stats: dict[str, Any] = {"messages": 0, "records": 0, "errors": 0,
                                      "records_dropped": 0, "last_error": None,
                                      "last_error_at": None}

    def _connect(self, now: float) -> bool:
        if self.sock is not None:
            return True
        if now < self.retry_at:
            return False
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(
                self.address, self.port, type=socket.SOCK_DGRAM,
                flags=socket.AI_NUMERICHOST)[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.connect(addr)
        except socket.gaierror:
            self._failed(f"{self.collector}: name does not resolve", now)
            return False
        except OSError as exc:
            self._failed(f"{self.collector}: {exc}", now)
            return False
        overhead = ipfix.UDP_IPV6_OVERHEAD if family == socket.AF_INET6 else \
            ipfix.UDP_IPV4_OVERHEAD
        if self.builder is None:
            self.builder = ipfix.MessageBuilder(self.format, self.domain, self.mtu,
                                                self.template_interval, self.boot, overhead)
        self.sock = sock
        return True

    def _failed(self, message: str, now: float) -> None:
        self.stats["errors"] += 1
        self.stats["last_error"], self.stats["last_error_at"] = message, now
        self.retry_at = now + RETRY_S
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.builder is not None:  # the collector may have lost our templates
            self.builder.templates_sent_at = None

    def _send(self, messages: list[bytes], records: int, now: float) -> None:
        assert self.sock is not None
        for msg in messages:
            try:
                self.sock.send(msg)
            except OSError as exc:
                self.stats["records_dropped"] += records
                self._failed(f"{self.collector}: {exc}", now)
                return
            self.stats["messages"] += 1
        self.stats["records"] += records

    def export(self, records: dict[str, np.ndarray], now: float) -> None:
        """Send ``records`` (templates first when due); count what could not be sent."""
        n = len(records["packets"])
        if not self._connect(now):
            self.stats["records_dropped"] += n
            return
        assert self.builder is not None
        msgs = self.builder.messages(records, now) if n else \
            self.builder.template_messages(now)
        if msgs:
            self._send(msgs, n, now)

    def describe(self) -> dict[str, Any]:
        seq = self.builder.sequence if self.builder is not None else 0
        return {"collector": self.collector, "format": self.format, "sequence": seq,
                "connected": self.sock is not None, **self.stats}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class FlowTask:
    """The flow cache of one task and where its records go."""

    def __init__(self, task: Task, addresses: list[str | None], domain: int, now: float,
                 template_interval: float = ipfix.DEFAULT_TEMPLATE_INTERVAL) -> None:
        assert task.kind == "flows" and task.filter is not None and task.max_flows
        assert task.active_timeout and task.idle_timeout
        self.cache = FlowCache(max_flows=task.max_flows, active_timeout=task.active_timeout,
                               idle_timeout=task.idle_timeout,
                               direction=DIRECTIONS[task.filter.interface],
                               sample=effective_sample(task.sample or 1.0,
                                                       task.sample_mode or "random"))
        targets = task.export or ()
        if len(addresses) != len(targets):
            raise ValueError(f"{len(addresses)} addresses for {len(targets)} export targets")
        self.exporters = [Exporter(t.collector, t.format, domain, now,
                                   template_interval=template_interval, address=address)
                          for t, address in zip(targets, addresses, strict=True)]
        self.next_expire = now + EXPIRE_EVERY_S

    @classmethod
    def from_entry(cls, entry: dict, domain: int, now: float) -> FlowTask:
        """The monitor protocol's ``add_flows`` entry: ``{"task": Task.to_dict(),
        "addresses": [address or None per export target]}``, read back with
        ``Task.from_dict`` (the one validator)."""
        task = Task.from_dict(entry["task"], "monitor flows")
        if task.kind != "flows":
            raise ValueError(f"add_flows needs a task of kind flows, not {task.kind}")
        addresses = entry.get("addresses", [])
        if not isinstance(addresses, list) or not all(
                a is None or isinstance(a, str) for a in addresses):
            raise ValueError("addresses must be a list of address strings or nulls")
        return cls(task, addresses, domain, now)

    def _export(self, records: dict[str, np.ndarray], now: float) -> None:
        for exporter in self.exporters:
            exporter.export(records, now)

    def update(self, batch: Any, now: float) -> None:
        records = self.cache.update(batch, now)
        if len(records["packets"]):
            self._export(records, now)

    def tick(self, now: float) -> None:
        """Expire idle/active flows and refresh templates (about twice a second)."""
        if now < self.next_expire:
            return
        self.next_expire = now + EXPIRE_EVERY_S
        self._export(self.cache.expire(now), now)

    def close(self, now: float) -> None:
        """Export every flow still in the cache, then close the sockets."""
        records = self.cache.flush()
        if len(records["packets"]):
            self._export(records, now)
        for exporter in self.exporters:
            exporter.close()

    def describe(self) -> dict[str, Any]:
        return {**self.cache.describe(), "exporters": [e.describe() for e in self.exporters]}
