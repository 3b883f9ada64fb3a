"""Agent registry: validation, heartbeats, timeouts with a fake clock, host mapping."""

from __future__ import annotations

import pytest

from ryu_app.net.topology import Topology
from ryu_app.service.registry import Registry, RegistryError, UnknownAgent, host_node

H1 = {"name": "h1", "url": "http://192.168.100.1:8000", "data_ip": "10.0.0.1",
      "mac": "00:00:00:00:00:01"}


def test_register_heartbeat_and_timeout():
    reg = Registry(timeout=6.0)
    agent = reg.register(H1, now=100.0)
    assert (agent.name, agent.url, agent.up, agent.joins) == ("h1", H1["url"], True, 1)
    assert reg.version == 1
    assert reg.expire(106.0) == []  # exactly at the timeout: still up
    assert reg.heartbeat("h1", 105.0) is False
    assert reg.expire(111.0) == []
    assert reg.expire(111.5) == ["h1"]
    assert reg.version == 2 and reg.live() == {}
    assert reg.expire(200.0) == []  # reported once
    assert reg.heartbeat("h1", 201.0) is True  # came back
    assert reg.version == 3 and list(reg.live()) == ["h1"]
    again = reg.register({**H1, "url": "http://192.168.100.1:8001/"}, now=202.0)
    assert again is agent and again.joins == 2 and again.url == "http://192.168.100.1:8001"
    assert reg.to_list(now=203.0)[0]["silent_for"] == 1.0


def test_unknown_agent_heartbeat():
    reg = Registry()
    with pytest.raises(UnknownAgent) as info:
        reg.heartbeat("h9", 1.0)
    assert str(info.value) == "agent 'h9' is not registered"


@pytest.mark.parametrize("body,message", [
    ([], "agent: body must be a JSON object"),
    ({**H1, "port": 1}, "agent: unknown field 'port'"),
    ({**H1, "name": "h1;rm"}, "agent: field 'name' must match [A-Za-z0-9][A-Za-z0-9_.-]{0,62}"),
    ({**H1, "url": "ftp://x"}, "agent: field 'url' 'ftp://x' is not of the form http://HOST:PORT"),
    ({**H1, "url": "http://x:8000/path"},
     "agent: field 'url' 'http://x:8000/path' is not of the form http://HOST:PORT"),
    ({**H1, "url": "http://x:99999"}, "agent: field 'url' 'http://x:99999' has a bad port"),
    ({**H1, "url": 5}, "agent: field 'url' must be an http URL string"),
    ({**H1, "data_ip": "10.0.0.256"}, "agent: field 'data_ip' must be an IPv4 address"),
    ({**H1, "mac": "00:00"}, "agent: field 'mac' must be a MAC address like 00:00:00:00:00:01"),
])
def test_registration_is_validated(body, message):
    reg = Registry()
    with pytest.raises(RegistryError) as info:
        reg.register(body, 1.0)
    assert str(info.value) == message
    assert reg.agents == {} and reg.version == 0


def test_registry_is_bounded():
    reg = Registry(max_agents=2)
    reg.register({**H1, "name": "a"}, 1.0)
    reg.register({**H1, "name": "b"}, 1.0)
    with pytest.raises(RegistryError, match=r"^agent: registry is full \(2 agents\)$"):
        reg.register({**H1, "name": "c"}, 1.0)


def test_maps_agents_to_topology_hosts_by_ip_then_mac():
    topo = Topology()
    topo.add_switch(1, [1, 2])
    topo.learn_host("00:00:00:00:00:01", "10.0.0.1", 1, 1)
    topo.learn_host("00:00:00:00:00:02", None, 1, 2)
    reg = Registry()
    a = reg.register(H1, 1.0)
    b = reg.register({"name": "h2", "url": "http://192.168.100.2:8000",
                      "mac": "00:00:00:00:00:02"}, 1.0)
    c = reg.register({"name": "h3", "url": "http://192.168.100.3:8000", "data_ip": "10.0.0.3"},
                     1.0)
    assert host_node(a, topo) == "00:00:00:00:00:01"
    assert host_node(b, topo) == "00:00:00:00:00:02"
    assert host_node(c, topo) is None
    assert host_node(a, None) is None
    assert reg.find("10.0.0.1") is a and reg.find("h2") is b and reg.find("h4") is None


def test_registration_carries_the_version_and_refuses_an_incompatible_one():
    from measure_model.version import __version__
    from ryu_app.service.registry import IncompatibleAgent

    reg = Registry()
    assert reg.register({**H1, "version": __version__}, now=1.0).version == __version__
    assert reg.to_list(now=1.0)[0]["version"] == __version__
    assert reg.register(H1, now=2.0).version is None  # an agent older than version reporting
    major = int(__version__.split(".")[0])
    with pytest.raises(IncompatibleAgent) as err:
        reg.register({**H1, "version": f"{major + 1}.0.0"}, now=3.0)
    assert f"{major + 1}.0.0" in str(err.value) and __version__ in str(err.value)
    with pytest.raises(RegistryError, match="field 'version' must be a version"):
        reg.register({**H1, "version": "latest"}, now=4.0)


def test_a_report_from_the_root_keeps_it_alive_but_does_not_revive_it(h):
    h.register(1, 2)
    h.tick(1.0)  # 1001: the overlay is built
    h.service.root_alive("h1")  # a report at 1001 (h2 beats, h1's beats come late)
    h.clock = 1006.5
    h.beat(2)
    h.service.root_alive("h1")
    h.tick(0.5)  # 1007: 6 s after h1 registered, 0.5 s after its report
    assert set(h.service.registry.live()) == {"h1", "h2"}
    h.beat(2)
    h.tick(6.0)  # 1013: no report nor beat from h1 for 6.5 s
    assert set(h.service.registry.live()) == {"h2"}
    h.service.root_alive("h1")  # a late report does not bring it back
    assert set(h.service.registry.live()) == {"h2"}


def test_a_deeper_agent_is_given_one_heartbeat_period_per_level():
    reg = Registry(timeout=6.0)
    for n in (1, 2, 3):
        reg.register({**H1, "name": f"h{n}", "data_ip": f"10.0.0.{n}"}, now=100.0)
    levels = {"h1": 0, "h2": 1, "h3": 3}
    assert reg.expire(106.0, levels) == []
    assert reg.expire(106.5, levels) == ["h1"]
    assert reg.expire(108.0, levels) == []  # h2: 6 + 2 s
    assert reg.expire(108.5, levels) == ["h2"]
    assert reg.expire(112.0, levels) == []  # h3: 6 + 3 * 2 s
    assert reg.expire(112.5, levels) == ["h3"]
