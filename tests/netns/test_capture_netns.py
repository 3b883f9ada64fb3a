"""Capture rules: filter validation (unit) and real iptables in a namespace (netns).

The netns tests drive ``Capture`` with a runner that executes the argument
list inside the test's namespace; nothing is bound to the queue, so
``--queue-bypass`` lets every packet through while the per-sketch rule
counters still count what each sketch matched.
"""

from __future__ import annotations

import pytest

from host_agent.agent import capture_filter
from host_agent.capture.rules import Capture, CaptureFilter, free_slot
from host_agent.errors import AgentError
from measure_model.task import FILTER
from testing.attacks import attempts_among_noise
from testing.netns import Netns


def rule(body: dict) -> CaptureFilter:
    """The capture rule of a filter body, as the agent builds it."""
    return capture_filter(body)


@pytest.mark.unit
@pytest.mark.parametrize(("body", "message"), [
    ({"interface": "FORWARD"}, "filter.interface 'FORWARD' is not one of INPUT, OUTPUT"),
    ({"proto": "gre"}, "filter.proto 'gre' is not one of tcp, udp, icmp, icmpv6"),
    ({"dst": "$(touch /tmp/x)"},
     "filter.dst '$(touch /tmp/x)' is not an IPv4 or IPv6 address or prefix"),
    ({"proto": "udp", "sport": "9:99999"},
     "filter.sport '9:99999' is not a port or a range 'low:high' of ports 0..65535"),
    ({"proto": "tcp", "dport": "80\n-j DROP"},
     "filter.dport '80\n-j DROP' is not a port or a range 'low:high' of ports 0..65535"),
    ({"proto": "tcp", "dport": True}, "filter.dport must be an integer, not bool"),
    ({"dport": 80}, "filter.dport needs filter.proto tcp or udp"),
    ({"iface": "eth0"}, "unknown field 'filter.iface'"),
])
def test_filter_rejects_bad_fields(body, message):
    with pytest.raises(AgentError) as exc:
        rule(body)
    assert (exc.value.status, exc.value.message) == (400, message)


@pytest.mark.unit
def test_filter_normalises_and_builds_match_args():
    f = rule({"interface": "OUTPUT", "proto": "tcp", "src": "10.0.0.0/8",
              "dst": "10.0.0.5", "sport": 80, "dport": "8000:8100"})
    assert f.to_dict() == {"interface": "OUTPUT", "proto": "tcp", "src": "10.0.0.0/8",
                           "dst": "10.0.0.5", "sport": 80, "dport": "8000:8100"}
    assert rule(f.to_dict()) == f  # the task-model form again (a sketch's filter is re-read)
    assert f.match_args() == ["-p", "tcp", "-s", "10.0.0.0/8", "-d", "10.0.0.5",
                              "--sport", "80", "--dport", "8000:8100"]
    assert rule({}).match_args() == []
    # both modes share the sketch bits 16..29 (bits 30 and 31 are the modes' flags)
    assert free_slot([16, 17, 19]) == 18 and free_slot(list(range(16, 30))) is None
    assert free_slot([16], "nflog") == 17 and free_slot(list(range(32)), "nflog") is None


@pytest.mark.unit
def test_capture_rejects_bad_names():
    with pytest.raises(ValueError, match="agent name must match"):
        Capture("h2; rm -rf /", runner=lambda cmd: "")
    with pytest.raises(ValueError, match="bad exclude interface"):
        Capture("h2", exclude_interface="eth0 -j DROP", runner=lambda cmd: "")


def ns_runner(ns: Netns):
    return lambda cmd: ns.run(cmd).stdout


def counts(cap: Capture) -> dict[int, tuple[int, int]]:
    return cap.counters()


@pytest.mark.netns
def test_rules_count_overlapping_sketches_and_bypass(ns_pair):
    a, b = ns_pair
    cap = Capture("h9", queue=3, runner=ns_runner(b))
    cap.setup()
    try:
        cap.add(1, 0, rule({"proto": "icmp"}))
        cap.add(2, 1, rule({"src": a.ip}))
        cap.add(3, 2, rule({"proto": "udp", "dport": 9}))
        cap.add(4, 3, rule({"interface": "OUTPUT", "proto": "icmp"}))
        out = a.run(["ping", "-c", "4", "-i", "0.05", "-s", "72", b.ip]).stdout
        assert " 0% packet loss" in out  # nobody bound to queue 3: --queue-bypass
        c = counts(cap)
        assert c[1] == (4, 400) and c[3] == (0, 0) and c[4] == (4, 400), (c, out)
        assert c[2][0] >= 4  # icmp plus any neighbour traffic from a
        cap.remove(1)
        assert set(counts(cap)) == {2, 3, 4}
        rules = "\n".join(cap.listing())
        assert "--queue-num 3 --queue-bypass" in rules
        assert '"endhost-measure:h9:hook" -j ehm-h9-in' in rules
    finally:
        cap.teardown()
    assert cap.listing() == []
    assert "ehm-h9" not in b.run(["iptables-save"]).stdout


@pytest.mark.netns
def test_excluded_interface_is_not_captured(ns_pair):
    a, b = ns_pair
    cap = Capture("h9", exclude_interface=b.intf, runner=ns_runner(b))
    cap.setup()
    try:
        cap.add(1, 0, rule({"proto": "icmp"}))
        a.run(["ping", "-c", "2", "-i", "0.05", b.ip])
        b.run(["ping", "-c", "1", "127.0.0.1"])  # loopback is still captured
        assert counts(cap)[1] == (2, 168)
    finally:
        cap.teardown()


@pytest.mark.netns
def test_stale_rules_removed_by_name_only(ns_pair):
    _, b = ns_pair
    old = Capture("h9", runner=ns_runner(b))
    old.setup()
    old.add(5, 4, rule({"proto": "tcp", "dport": "1:1024"}))
    other = Capture("h10", queue=1, runner=ns_runner(b))
    other.setup()
    try:
        fresh = Capture("h9", runner=ns_runner(b))
        removed = fresh.remove_stale()
        assert removed == 8  # INPUT and OUTPUT hooks + two chains, iptables and ip6tables
        assert old.listing() == [] and len(other.listing()) == 20  # 4 of them: probe exemptions
        fresh.setup()
        assert fresh.counters() == {} and len(fresh.listing()) == 20
        fresh.teardown()
    finally:
        other.teardown()
        old.remove_stale()


@pytest.mark.unit
@pytest.mark.parametrize(("body", "message"), [
    ({"src": "2001:db8::/129"},
     "filter.src '2001:db8::/129' is not an IPv4 or IPv6 address or prefix"),
    ({"src": "10.0.0.1", "dst": "2001:db8::1"},
     "filter.dst '2001:db8::1' is IPv6 but filter.src '10.0.0.1' is IPv4: "
     "one address family per filter"),
    ({"proto": "icmpv6", "src": "10.0.0.0/8"},
     "filter.src '10.0.0.0/8' is IPv4 but filter.proto icmpv6 is IPv6: "
     "one address family per filter"),
])
def test_filter_rejects_bad_ipv6_and_mixed_families(body, message):
    with pytest.raises(AgentError) as exc:
        capture_filter(body)
    assert (exc.value.status, exc.value.message) == (400, message)


@pytest.mark.unit
def test_filter_families_and_ip6tables_match_args():
    f = capture_filter({"proto": "udp", "src": "2001:DB8::7/32", "dst": "fd00::5"})
    assert f.to_dict() == {"interface": "INPUT", "proto": "udp", "src": "2001:db8::/32",
                           "dst": "fd00::5"}
    assert f.families == (6,) and f.match_args(6) == ["-p", "udp", "-s", "2001:db8::/32",
                                                      "-d", "fd00::5"]
    assert capture_filter({"proto": "icmpv6"}).match_args(6) == ["-p", "ipv6-icmp"]
    assert capture_filter({"proto": "icmp"}).families == (4,)
    assert capture_filter({"proto": "tcp"}).families == (4, 6)
    assert capture_filter({"dst": "10.0.0.5/32"}).families == (4,)


def probes(body: dict) -> CaptureFilter:
    """The capture rule of a port_scan task's filter body: connection attempts only."""
    return CaptureFilter.from_filter(FILTER.check("filter", body), probes=True)


@pytest.mark.unit
def test_a_probe_filter_selects_connection_attempts_in_disjoint_rules():
    syn = ["--tcp-flags", "SYN,ACK,RST", "SYN"]
    assert probes({}).rule_args() == [
        ["-p", "tcp", *syn], ["-p", "udp", "--sport", "1024:65535"],
        ["-p", "udp", "--sport", "0:1023", "--dport", "0:1023"]]
    assert probes({"proto": "tcp", "dst": "fd00::5", "dport": "20:30"}).rule_args(6) == [
        ["-p", "tcp", "-d", "fd00::5", "--dport", "20:30", *syn]]
    # cut to the filter's ports: from 53 only the service-to-service rule is left
    assert probes({"proto": "udp", "sport": 53}).rule_args() == [
        ["-p", "udp", "--sport", "53", "--dport", "0:1023"]]
    assert probes({"proto": "udp", "sport": "1000:2000", "dport": 1023}).rule_args() == [
        ["-p", "udp", "--sport", "1024:2000", "--dport", "1023"],
        ["-p", "udp", "--sport", "1000:1023", "--dport", "1023"]]
    assert probes({"proto": "udp", "sport": 80, "dport": "2000:3000"}).rule_args() == []
    assert probes({"proto": "icmp"}).rule_args() == []
    assert probes({"proto": "udp"}).to_dict() == {"interface": "INPUT", "proto": "udp"}
    assert rule({"proto": "udp"}).rule_args() == [["-p", "udp"]]  # not a probe filter


@pytest.mark.netns
def test_a_probe_sketch_counts_connection_attempts_only(ns_pair):
    """A port_scan sketch's rules pass the monitor only connection attempts: a ping
    flood, an established TCP transfer, RSTs and UDP replies never reach it, and its
    rules' counters (summed per sketch) count each attempt once."""
    a, b = ns_pair
    cap = Capture("h9", runner=ns_runner(b))
    cap.setup()
    try:
        cap.add(1, 16, probes({}))
        cap.add(2, 17, rule({}))  # every packet, for comparison
        attempts = attempts_among_noise(a, b)
        c = counts(cap)
        assert c[1][0] == attempts, c  # SYNs, UDP probes, 53 -> 123, the opening SYN
        # the plain sketch: the pings, probes, replies and the 2 MB (GRO makes few packets)
        assert c[2][0] >= 50 + attempts + 2 and c[2][1] > 2_000_000, c
        assert len([ln for ln in cap.listing() if '"endhost-measure:h9:1"' in ln]) == 6
        cap.remove(1)
        assert not [ln for ln in cap.listing() if '"endhost-measure:h9:1"' in ln]
    finally:
        cap.teardown()


@pytest.mark.netns
def test_both_tables_get_queue_and_log_rules_and_lose_them_on_teardown(ns_pair):
    _, b = ns_pair
    cap = Capture("h9", queue=6, runner=ns_runner(b))
    cap.setup()
    try:
        cap.add(1, 16, capture_filter({"proto": "udp"}))
        cap.add(2, 17, capture_filter({"src": "fd00::1"}), mode="nflog")
        cap.add(3, 18, capture_filter({"proto": "icmp"}), mode="nflog")
        v4 = b.run(["iptables-save"]).stdout
        v6 = b.run(["ip6tables-save"]).stdout
        for text in (v4, v6):
            assert "-j NFQUEUE --queue-num 6 --queue-bypass" in text
            assert "--mark 0x80000000/0x80000000 " in text  # queue flag
            assert "--mark 0x40000000/0x40000000 " in text  # log flag
            # the clear rule touches the project's bits only
            assert "-j MARK --and-mark 0xffff" in text or \
                "-j MARK --set-xmark 0x0/0xffff0000" in text
            assert "--nflog-group 6 --nflog-size 128 --nflog-threshold 64" in text
            assert '"endhost-measure:h9:1" -j MARK --set-xmark 0x80010000/0x80010000' in text
        assert '"endhost-measure:h9:2"' in v6 and '"endhost-measure:h9:2"' not in v4
        assert '"endhost-measure:h9:3"' in v4 and '"endhost-measure:h9:3"' not in v6
        cap.remove(2)
        assert '"endhost-measure:h9:2"' not in b.run(["ip6tables-save"]).stdout
    finally:
        cap.teardown()
    assert "ehm-h9" not in b.run(["iptables-save"]).stdout + b.run(["ip6tables-save"]).stdout


@pytest.mark.netns
def test_packets_sent_with_a_foreign_source_are_not_counted(ns_pair):
    """A host that sends with a source other than its data address (a spoofed
    scan) is not counted by its own agent: only its own address's packets are."""
    a, b = ns_pair
    b.run(["ip", "addr", "add", "10.77.0.9/24", "dev", b.intf])
    cap = Capture("h9", runner=ns_runner(b), own_ip=b.ip)
    cap.setup()
    try:
        cap.add(1, 0, rule({"interface": "OUTPUT", "proto": "icmp"}))
        b.run(["ping", "-c", "3", "-i", "0.05", "-I", "10.77.0.9", a.ip])  # foreign source
        assert counts(cap)[1] == (0, 0)
        b.run(["ping", "-c", "2", "-i", "0.05", a.ip])  # its own address
        assert counts(cap)[1] == (2, 168)
        assert '"endhost-measure:h9:foreign-src" -j RETURN' in "\n".join(cap.listing())
    finally:
        cap.teardown()


def _mangle_count(ns: Netns, comment: str) -> int:
    """Packets the mangle rule with this comment counted."""
    for line in ns.run(["iptables-save", "-c", "-t", "mangle"]).stdout.splitlines():
        if f"--comment {comment}" in line.replace('"', ""):
            return int(line[1:].split(":", 1)[0])
    raise AssertionError(f"no mangle rule {comment}")


@pytest.mark.netns
def test_a_mark_set_by_another_program_survives_capture(ns_pair):
    """The mark test: another program (here a mangle rule, as kube-proxy or policy
    routing would) sets 0x4000 before the capture's chain; the capture clears and
    sets only its own bits (0xffff0000), so the packets still carry 0x4000 after it
    (counted by a mangle POSTROUTING rule), and the sketch's own bit too."""
    a, b = ns_pair
    own = ["-p", "icmp", "-d", a.ip]
    other = ["OUTPUT", *own, "-m", "comment", "--comment", "other-program", "-j", "MARK",
             "--set-xmark", "0x4000/0x4000"]
    kept = ["POSTROUTING", *own, "-m", "mark", "--mark", "0x4000/0x4000", "-m", "comment",
            "--comment", "other-mark-kept"]
    ours = ["POSTROUTING", *own, "-m", "mark", "--mark", "0x10000/0x10000", "-m", "comment",
            "--comment", "sketch-bit-set"]
    b.run(["iptables", "-t", "mangle", "-A", *other])
    cap = Capture("h9", runner=ns_runner(b))
    try:
        for rule_args in (kept, ours):
            b.run(["iptables", "-t", "mangle", "-A", *rule_args])
        cap.setup()
        cap.add(1, 16, rule({"interface": "OUTPUT", "proto": "icmp"}))
        b.run(["ping", "-c", "3", "-i", "0.05", a.ip])
        assert counts(cap)[1][0] == 3  # the capture saw them
        assert _mangle_count(b, "sketch-bit-set") == 3
        assert _mangle_count(b, "other-mark-kept") == 3  # 0 when the clear rule zeroed all
    finally:
        cap.teardown()
        for rule_args in (other, kept, ours):
            b.run(["iptables", "-t", "mangle", "-D", *rule_args], check=False)
