"""IPv6 filters and the capture mode in the task model, the controller REST API and
the agent: valid forms are normalised, bad ones are a 400 naming the field and
install nothing."""

from __future__ import annotations

import pytest

from host_agent.agent import Agent, AgentError
from measure_model.task import PolicyError, parse_task
from testing.checks import some
from testing.monitors import InlineMonitor

pytestmark = pytest.mark.unit


def task(**fields) -> dict:
    return {"name": "t", "kind": "counter", **fields}


def test_ipv6_prefixes_are_normalised_and_capture_defaults_to_nfqueue():
    t = parse_task(task(filter={"src": "2001:DB8::/32", "dst": "fd00::0001"}), "x")
    flt = some(t.filter)
    assert (flt.src, flt.dst, t.capture) == ("2001:db8::/32", "fd00::1", "nfqueue")
    assert some(parse_task(task(filter={"src": "::/0"}), "x").filter).src == "::/0"
    # host bits are masked, as iptables does for IPv4
    masked = some(parse_task(task(filter={"dst": "2001:db8::1/64"}), "x").filter)
    assert masked.dst == "2001:db8::/64"
    t = parse_task(task(filter={"proto": "icmpv6", "src": "fe80::/10"}, capture="nflog"), "x")
    assert (some(t.filter).proto, t.capture) == ("icmpv6", "nflog")
    assert parse_task(t.to_dict(), "x") == t


@pytest.mark.parametrize(("fields", "message"), [
    ({"filter": {"src": "2001:db8::/129"}},
     "filter.src '2001:db8::/129' is not an IPv4 or IPv6 address or prefix"),
    ({"filter": {"dst": "1::2::3"}},
     "filter.dst '1::2::3' is not an IPv4 or IPv6 address or prefix"),
    ({"filter": {"src": "fe80::1%eth0"}},
     "filter.src 'fe80::1%eth0' is not an IPv4 or IPv6 address or prefix"),
    ({"filter": {"src": "::ffff:10.0.0.1"}},
     "filter.src '::ffff:10.0.0.1' is not an IPv4 or IPv6 address or prefix"),
    ({"filter": {"src": "10.0.0.1", "dst": "2001:db8::1"}},
     "filter.dst '2001:db8::1' is IPv6 but filter.src '10.0.0.1' is IPv4: "
     "one address family per filter"),
    ({"filter": {"proto": "icmp", "src": "2001:db8::1"}},
     "filter.src '2001:db8::1' is IPv6 but filter.proto icmp is IPv4: "
     "one address family per filter"),
    ({"capture": "pcap"}, "capture 'pcap' is not one of nfqueue, nflog, ebpf"),
    ({"capture": None}, "capture None is not one of nfqueue, nflog, ebpf"),
])
def test_bad_ipv6_filters_and_capture_modes_name_the_field(fields, message):
    with pytest.raises(PolicyError) as err:
        parse_task(task(**fields), "x")
    assert str(err.value) == f"policy x: task t: {message}"


@pytest.mark.parametrize(("fields", "error"), [
    ({"filter": {"src": "10.0.0.1", "dst": "2001:db8::1"}},
     "filter.dst '2001:db8::1' is IPv6 but filter.src '10.0.0.1' is IPv4"),
    ({"filter": {"src": "2001:db8::/200"}}, "filter.src '2001:db8::/200' is not"),
    ({"capture": "mirror"}, "capture 'mirror' is not one of nfqueue, nflog, ebpf"),
])
def test_rest_refuses_and_stores_nothing(h, fields, error):
    h.register(1, 2)
    status, body = h.call("POST", "/measure/v1/tasks", task(**fields))
    assert status == 400 and error in body["error"], body
    assert h.call("GET", "/measure/v1/tasks")[1]["tasks"] == []
    assert not any(m == "PUT" for m, _, _ in h.agents.calls)


def test_rest_stores_ipv6_tasks_with_their_capture_mode(h):
    h.register(1, 2)
    status, body = h.call("POST", "/measure/v1/tasks",
                          task(filter={"proto": "udp", "dst": "2001:db8::5"}, capture="nflog"))
    assert status == 201, body
    (stored,) = h.call("GET", "/measure/v1/tasks")[1]["tasks"]
    assert stored["task"]["filter"]["dst"] == "2001:db8::5" and stored["task"]["capture"] == "nflog"


def test_agent_takes_the_capture_mode_per_task_per_sketch_and_per_agent():
    agent = Agent("h1", [InlineMonitor(clock=lambda: 0.0)])
    sid = agent.install_task("2", parse_task(task(capture="nflog"), "x"))
    assert agent.sketches[sid].capture == "nflog" and agent.sketches[sid].slot == 16
    sid = agent.install_task("3", parse_task(task(), "x"))
    assert agent.sketches[sid].capture == "nfqueue" and agent.sketches[sid].slot == 17
    with pytest.raises(AgentError) as err:
        agent.create_sketch({}, capture="tap")
    assert (err.value.status, err.value.message) == (
        400, "capture 'tap' is not one of nfqueue, nflog, ebpf")
    with pytest.raises(AgentError) as err:
        agent.create_sketch({"src": "10.0.0.1", "dst": "::1"})
    assert err.value.status == 400 and "one address family per filter" in err.value.message
    assert sorted(agent.sketches) == [1, 2]
    forced = Agent("h2", [InlineMonitor(clock=lambda: 0.0)], capture_mode="nflog")
    assert forced.create_sketch({}).capture == "nflog"
    assert forced.sketches[forced.install_task("1", parse_task(task(), "x"))].capture == "nflog"
