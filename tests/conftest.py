"""Shared fixtures for the three tiers (see the markers in pyproject.toml).

- ``unit``: pure logic, no root.
- ``netns``: root; namespaces, veth pairs, iptables, NFQUEUE.
- ``mininet``: root; Open vSwitch (userspace datapath), Ryu, Mininet.

Tests in the root tiers are skipped only when not running as root; in CI
(which runs as root) they always run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from testing import procs
from testing.controllers import ControllerProcess, start_controller
from testing.netns import Netns, run, unique_name
from testing.procs import stop_process, wait_until

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    for item in items:
        markers = {m.name for m in item.iter_markers()}
        if not markers & {"unit", "netns", "mininet"}:
            item.add_marker(pytest.mark.unit)
        if markers & {"netns", "mininet"} and not IS_ROOT:
            if os.environ.get("CI") == "true":
                raise pytest.UsageError("CI must run as root: the netns and mininet tiers need it")
            item.add_marker(pytest.mark.skip(reason="needs root"))


# ---------------------------------------------------------------- namespaces

def _delete_netns(name: str) -> None:
    run(["ip", "netns", "pids", name], check=False)
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        run(["kill", "-9", pid], check=False)
    run(["ip", "netns", "del", name], check=False)


class NetnsFactory:
    """Creates namespaces and veth pairs; ``cleanup`` removes all of them."""

    def __init__(self) -> None:
        self.namespaces: list[Netns] = []
        self.links: list[str] = []

    def netns(self) -> Netns:
        ns = Netns(unique_name("mt"))
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def pair(self, subnet: str = "10.77.0", offload_off: bool = False,
             subnet6: str | None = None) -> tuple[Netns, Netns]:
        """Two namespaces joined by a veth pair, addressed ``subnet``.1 and .2/24.

        With ``subnet6`` (e.g. ``"fd77::"``) also ``subnet6``1 and 2/64 (no DAD) and
        permanent neighbour entries, so no neighbour discovery adds packets.
        """
        a, b = self.netns(), self.netns()
        ia, ib = unique_name("va"), unique_name("vb")
        run(["ip", "link", "add", ia, "type", "veth", "peer", "name", ib])
        self.links.append(ia)
        for ns, intf, host in ((a, ia, 1), (b, ib, 2)):
            run(["ip", "link", "set", intf, "netns", ns.name])
            ns.run(["ip", "addr", "add", f"{subnet}.{host}/24", "dev", intf])
            ns.run(["ip", "link", "set", intf, "up"])
            if offload_off:
                ns.run(["ethtool", "-K", intf, "tx", "off"], check=False)
            ns.ip, ns.intf = f"{subnet}.{host}", intf
        wait_until(lambda: a.run(["ping", "-c1", "-W1", b.ip], check=False).returncode == 0,
                   timeout=10, message=f"veth {ia}<->{ib} up")
        if subnet6 is not None:
            macs = {}
            for ns, host in ((a, 1), (b, 2)):
                ns.run(["ip", "-6", "addr", "add", f"{subnet6}{host}/64", "dev", ns.intf,
                        "nodad"])
                ns.ip6 = f"{subnet6}{host}"
                macs[ns.name] = ns.run(["cat", f"/sys/class/net/{ns.intf}/address"]).stdout.strip()
            for ns, peer in ((a, b), (b, a)):
                ns.run(["ip", "-6", "neigh", "replace", peer.ip6, "lladdr", macs[peer.name],
                        "dev", ns.intf, "nud", "permanent"])
            wait_until(lambda: a.run(["ping", "-6", "-c1", "-W1", b.ip6],
                                     check=False).returncode == 0,
                       timeout=10, message=f"IPv6 over veth {ia}<->{ib}")
        return a, b

    def cleanup(self) -> None:
        for ns in self.namespaces:
            for proc in ns.procs:
                stop_process(proc)
            _delete_netns(ns.name)
        for link in self.links:
            run(["ip", "link", "del", link], check=False)


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def ns_pair(netns_factory: NetnsFactory) -> tuple[Netns, Netns]:
    """Two namespaces on one veth link: 10.77.0.1 and 10.77.0.2."""
    return netns_factory.pair()


# ---------------------------------------------------------------- controller

@pytest.fixture
def controller_factory(tmp_path):
    """Start controllers with ``factory(args=...)``; all are stopped afterwards.

    Fails the test if a controller logged a traceback.
    """
    with procs.stopped_after(lambda ctl: stop_process(ctl.proc), ControllerProcess.log,
                             "controller") as started:
        def factory(**kw) -> ControllerProcess:
            ctl = start_controller(tmp_path, **kw)
            started.append(ctl)
            return ctl

        yield factory


# ---------------------------------------------------------------- mininet

@pytest.fixture
def mininet_lock() -> Iterator[None]:
    """One Mininet network at a time on this machine (interface names clash)."""
    with procs.mininet_lock():
        yield


@pytest.fixture
def mininet_teardown(mininet_lock) -> Iterator[None]:
    """Remove what a Mininet network left, pass or fail (``topo.cleanup``:
    ``mn -c`` minus its machine-wide ``killall ping`` and ``rm /tmp/*.log``)."""
    try:
        yield
    finally:
        from topo.cleanup import cleanup_mininet

        cleanup_mininet()
