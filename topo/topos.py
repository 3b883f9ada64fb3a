"""Mininet topologies for the measurement service.

Plain ``Topo`` classes (a description, not a running network), usable with
``mn --custom topo/topos.py --topo tree,depth=2,fanout=3`` or from
``topo.launch``. Hosts are ``h1..hN`` in creation order; host ``n`` gets
the ``n``-th address of ``ip_base`` (default ``10.0.0.0/8``, as Mininet's
``ipBase``), computed with Mininet's own ``ipAdd``/``netParse``, so h1 is
10.0.0.1, h256 is 10.0.1.0 and a topology holds as many hosts as the base
has addresses (a clear ``ValueError`` beyond); MAC ``00:00:00:00:HH:LL``
is ``n`` in hex. Addresses are predictable and distinct.
Every switch gets an explicit, distinct DPID (Mininet would derive clashing
DPIDs from names such as ``c1``/``a1``/``e1``).

``bw`` (Mbit/s) puts a rate limit on every link; it needs ``TCLink``
(``mn --link tc``; ``topo.launch`` picks it when ``bw`` is given).

- ``tree``: depth/fanout tree, as Mininet's; depth 2 fanout 3 is the
  original: 4 switches, 9 hosts.
- ``linear``: ``k`` switches in a chain, ``n`` hosts on each.
- ``fattree``: the k-ary fat-tree (k=4: 4 core, 8 aggregation, 8 edge
  switches, 16 hosts), full of equal-cost cycles.
- ``loop``: a ring of ``n`` switches with ``hosts`` hosts each.

For plain ``mn --custom topo/topos.py`` the file also offers what
``topo.launch`` does by itself: ``--host measure`` (:class:`MeasureHost`:
transmit checksum offload off on every host interface; TCP hangs through the
userspace datapath otherwise) and ``--switch ovsu`` (userspace OVS speaking
OpenFlow 1.3). The README's "Plain Mininet" section has the whole command
line and how to start agents there.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from mininet.node import Host, OVSSwitch
from mininet.topo import Topo
from mininet.util import ipAdd, netParse

DEFAULT_IP_BASE = "10.0.0.0/8"


class MeasureTopo(Topo):
    """Shared helpers: numbered hosts/switches with fixed addresses."""

    def build(self, *args: Any, **params: Any) -> None:
        raise NotImplementedError

    def _setup(self, bw: float | None, ip_base: str = DEFAULT_IP_BASE) -> None:
        self.bw = bw
        self.host_count = 0
        self.switch_count = 0
        self.ip_base_num, self.prefix_len = netParse(ip_base)
        self.max_hosts = (1 << (32 - self.prefix_len)) - 2
        self.ip_base = ip_base

    def new_host(self) -> str:
        self.host_count += 1
        n = self.host_count
        if n > self.max_hosts:
            raise ValueError(f"{self.ip_base} holds {self.max_hosts} host addresses; "
                             f"host h{n} does not fit (give a larger ip_base)")
        ip = ipAdd(n, prefixLen=self.prefix_len, ipBaseNum=self.ip_base_num)
        mac = f"00:00:00:00:{n >> 8:02x}:{n & 255:02x}"
        return self.addHost(f"h{n}", ip=f"{ip}/{self.prefix_len}", mac=mac)

    def new_switch(self, prefix: str = "s", name_index: int | None = None) -> str:
        self.switch_count += 1
        index = self.switch_count if name_index is None else name_index
        return self.addSwitch(f"{prefix}{index}", dpid=f"{self.switch_count:016x}")

    def link(self, a: str, b: str) -> None:
        if self.bw:
            self.addLink(a, b, bw=self.bw)
        else:
            self.addLink(a, b)

    def switch_links(self) -> int:
        """Number of switch-switch links (what LLDP should discover)."""
        switches = set(self.switches())
        return sum(1 for a, b in self.links() if a in switches and b in switches)


class TreeTopo(MeasureTopo):
    """Tree of ``depth`` levels of switches; ``fanout`` children each."""

    def build(self, depth: int = 2, fanout: int = 3, bw: float | None = None,
              ip_base: str = DEFAULT_IP_BASE, **_params: Any) -> None:
        self._setup(bw, ip_base)
        self._add_tree(int(depth), int(fanout))

    def _add_tree(self, depth: int, fanout: int) -> str:
        if depth == 0:
            return self.new_host()
        node = self.new_switch()
        for _ in range(fanout):
            self.link(node, self._add_tree(depth - 1, fanout))
        return node


class LinearTopo(MeasureTopo):
    """``k`` switches in a chain with ``n`` hosts each."""

    def build(self, k: int = 4, n: int = 1, bw: float | None = None,
              ip_base: str = DEFAULT_IP_BASE, **_params: Any) -> None:
        self._setup(bw, ip_base)
        last = None
        for _ in range(int(k)):
            sw = self.new_switch()
            for _ in range(int(n)):
                self.link(self.new_host(), sw)
            if last:
                self.link(last, sw)
            last = sw


class FatTreeTopo(MeasureTopo):
    """k-ary fat-tree: (k/2)^2 core, k pods of k/2 aggregation + k/2 edge."""

    def build(self, k: int = 4, bw: float | None = None, ip_base: str = DEFAULT_IP_BASE,
              **_params: Any) -> None:
        k = int(k)
        if k < 2 or k % 2:
            raise ValueError(f"fattree k must be even and >= 2, got {k}")
        self._setup(bw, ip_base)
        half = k // 2
        cores = [self.new_switch("c", i + 1) for i in range(half * half)]
        aggs, edges = [], []
        for pod in range(k):
            aggs.append([self.new_switch("a", pod * half + i + 1) for i in range(half)])
        for pod in range(k):
            edges.append([self.new_switch("e", pod * half + i + 1) for i in range(half)])
        for pod in range(k):
            for i, agg in enumerate(aggs[pod]):
                for j in range(half):
                    self.link(cores[i * half + j], agg)
                for edge in edges[pod]:
                    self.link(agg, edge)
            for edge in edges[pod]:
                for _ in range(half):
                    self.link(self.new_host(), edge)


class LoopTopo(MeasureTopo):
    """A ring of ``n`` switches, ``hosts`` hosts on each: one cycle."""

    def build(self, n: int = 4, hosts: int = 2, bw: float | None = None,
              ip_base: str = DEFAULT_IP_BASE, **_params: Any) -> None:
        n = int(n)
        if n < 3:
            raise ValueError(f"loop needs at least 3 switches, got {n}")
        self._setup(bw, ip_base)
        ring = [self.new_switch() for _ in range(n)]
        for sw in ring:
            for _ in range(int(hosts)):
                self.link(self.new_host(), sw)
        for i, sw in enumerate(ring):
            self.link(sw, ring[(i + 1) % n])


topos = {
    "tree": TreeTopo,
    "linear": LinearTopo,
    "fattree": FatTreeTopo,
    "loop": LoopTopo,
}


class MeasureHost(Host):
    """A host whose interfaces have transmit checksum offload off (``ethtool -K
    <intf> tx off``), so TCP works through the userspace datapath."""

    def config(self, **params: Any) -> dict[str, Any]:
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                out = self.cmd(f"ethtool -K {intf.name} tx off 2>&1 || echo ETHTOOL-FAILED")
                if "ETHTOOL-FAILED" in out:
                    raise RuntimeError(f"{self.name}: ethtool -K {intf.name} tx off: {out}")
        return result


hosts = {"measure": MeasureHost}
switches = {"ovsu": partial(OVSSwitch, datapath="user", protocols="OpenFlow13")}
