"""Foundation checks: the launcher patch, the helpers, namespaces, Mininet."""

from __future__ import annotations

import pytest

from testing.procs import wait_until


@pytest.mark.unit
def test_launcher_patches_eventlet_before_ryu_wsgi_import():
    import eventlet.wsgi

    from ryu_app import launcher

    launcher.patch_eventlet()
    launcher.patch_eventlet()  # idempotent
    assert hasattr(eventlet.wsgi, "ALREADY_HANDLED")
    assert eventlet.wsgi.server._measure_guarded
    import ryu.app.wsgi  # noqa: F401 - fails without the patch


@pytest.mark.unit
def test_wait_until_returns_value_and_times_out():
    calls = iter([0, 0, 7])
    assert wait_until(lambda: next(calls), timeout=2, interval=0.001) == 7
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: 1 / 0, timeout=0.05, interval=0.01, message="never")


@pytest.mark.netns
def test_namespace_pair_carries_ping(netns_factory):
    a, b = netns_factory.pair()
    out = a.run(["ping", "-c", "3", "-i", "0.2", b.ip]).stdout
    assert " 0% packet loss" in out
    names = {ns.name for ns in netns_factory.namespaces}
    netns_factory.cleanup()
    from testing.netns import run

    listed = run(["ip", "netns", "list"]).stdout
    assert not any(n in listed for n in names)
