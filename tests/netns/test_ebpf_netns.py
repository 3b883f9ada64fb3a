"""``capture: ebpf`` between two namespaces: safety, clean-up and refusal.

The counting itself (exact packets and bytes, heavy hitters, port scans,
IPv6, flows to nfcapd, sampling) is checked by the NFQUEUE tests run with
``capture: ebpf`` (test_monitor_netns, test_ipv6_netns, test_flows_netns).
Here: the programs return ``TC_ACT_OK`` on every path and the payloads
arrive unchanged; a SIGKILLed agent leaves programs that never drop, and
the next agent removes them; an agent that cannot load eBPF refuses eBPF
tasks with 400 naming ``capture`` and keeps counting with NFQUEUE.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys

import pytest

from host_agent.capture.ebpf import TC_HANDLE
from testing.agentproc import (
    AgentProc,
    capture_args,
    in_netns,
    ping_counts,
    snapshot_when,
    truth_rule,
)
from testing.attacks import attempts_among_noise
from testing.netns import Netns
from testing.procs import wait_until

pytestmark = pytest.mark.netns

ECHO_SINK = """
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(10)
h, n = hashlib.sha256(), 0
while n < int(sys.argv[2]):
    data, _ = s.recvfrom(65536)
    h.update(data); n += 1
print(n, h.hexdigest())
"""

RANDOM_SENDER = """
import hashlib, random, socket, sys, time
rng = random.Random(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
h = hashlib.sha256()
for i in range(int(sys.argv[3])):
    data = rng.randbytes(rng.randint(1, 1400))
    h.update(data)
    s.sendto(data, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.0005)
print(h.hexdigest())
"""


def filters(ns: Netns, point: str) -> list[int]:
    """Program ids of the eBPF capture's tc filters on ``ns``'s veth at ``point``
    (ingress/egress): those at its handle (the probe reflector has its own at ingress)."""
    out = ns.run(["tc", "filter", "show", "dev", ns.intf, point]).stdout
    return [int(x) for x in re.findall(rf"handle {TC_HANDLE:#x} .*? id (\d+)", out)]


def ebpf_health(ag: AgentProc) -> dict:
    return ag.v1("GET", "/health")["monitors"][0]["ebpf"]


def test_programs_always_accept_and_payloads_arrive_unchanged(ns_pair, agent_factory):  # noqa: F811
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args("ebpf"))
    ins = ag.v1("POST", "/sketches", {"filter": {"proto": "udp"},
                                      "counters": [{"key": "five_tuple"}]})
    ag.v1("POST", "/sketches", {"filter": {"interface": "OUTPUT"},
                                "counters": [{"key": "src_dst", "increment": "bytes"}]})
    state = ebpf_health(ag)
    assert state["available"] and set(state["attached"]) == {"ingress", "egress"}
    assert filters(b, "ingress") == [state["attached"]["ingress"]]
    assert filters(b, "egress") == [state["attached"]["egress"]]
    # every exit of both programs (and of any subprogram) returns 0 = TC_ACT_OK,
    # and no helper that could change or redirect a packet is called
    for prog_id in state["attached"].values():
        xlated = b.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)]).stdout
        lines = xlated.splitlines()
        exits = [i for i, line in enumerate(lines) if line.rstrip().endswith("exit")]
        assert exits and all(lines[i - 1].rstrip().endswith("r0 = 0") for i in exits), xlated
        assert not re.search(r"store_bytes|csum|redirect|change_|adjust_room|set_hash",
                             xlated)
    sink = b.popen([sys.executable, "-c", ECHO_SINK, "7400", "400"], text=True,
                   stdout=subprocess.PIPE)
    wait_until(lambda: "7400" in b.run(["ss", "-lun"]).stdout, timeout=10, message="sink")
    sent_hash = a.run([sys.executable, "-c", RANDOM_SENDER, b.ip, "7400", "400"]).stdout
    out, _ = sink.communicate(timeout=20)
    assert out.split() == ["400", sent_hash.strip()]
    ping = a.run(["ping", "-c", "50", "-i", "0.01", "-q", b.ip]).stdout
    assert ping_counts(ping) == (50, 50)
    snap = snapshot_when(ag, ins["id"], 1, 400)
    assert snap["packets"] == 400 and snap["missed"] == {"packets": 0, "bytes": 0}
    program = ebpf_health(ag)["program"]
    assert program["packets"] >= 400 + 100 and program["records"] >= 400


def test_sigkill_under_traffic_no_ping_lost_restart_removes_stale(
        ns_pair, agent_factory):  # noqa: F811
    a, b = ns_pair
    ag = agent_factory(b, extra=capture_args("ebpf"))
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "counters": [{"key": "src"}]})
    old = ebpf_health(ag)["attached"]
    ping = a.popen(["ping", "-c", "300", "-i", "0.01", "-q", b.ip], text=True)
    wait_until(lambda: ag.v1("GET", f"/sketches/{sk['id']}/counters/1")["packets"] >= 20,
               timeout=10, message="ping counted")
    ag.stop(signal.SIGKILL)   # the agent's process group: agent and monitor
    out, _ = ping.communicate(timeout=30)
    assert ping_counts(out) == (300, 300), out
    # the dead monitor's programs stay attached (they never drop) ...
    assert filters(b, "ingress") == [old["ingress"]]
    ag2 = agent_factory(b, extra=capture_args("ebpf"))
    # ... until the next monitor starts: it removes them before anything else
    wait_until(lambda: filters(b, "ingress") == [] and filters(b, "egress") == [],
               timeout=10, message="stale programs removed")
    assert "removed 2 stale eBPF programs" in ag2.log()
    sk2 = ag2.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                       "counters": [{"key": "src"}]})
    new = ebpf_health(ag2)["attached"]
    assert filters(b, "ingress") == [new["ingress"]] and new["ingress"] != old["ingress"]
    assert filters(b, "egress") == [new["egress"]]
    a.run(["ping", "-c", "5", "-i", "0.01", "-q", b.ip])
    assert snapshot_when(ag2, sk2["id"], 1, 5)["packets"] == 5
    ag2.stop()
    assert filters(b, "ingress") == [] and filters(b, "egress") == []


def test_no_ebpf_here_is_400_naming_capture_and_nfqueue_keeps_working(
        ns_pair, agent_factory):  # noqa: F811
    a, b = ns_pair
    ag = agent_factory(b, extra=["--data-interface", "nosuch0"])
    r = ag.request("POST", "/agent/v1/sketches", json={
        "filter": {"proto": "icmp"}, "capture": "ebpf", "counters": [{"key": "src"}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("capture: ebpf is not available on this host")
    assert "nosuch0" in r.json()["error"]
    assert ag.v1("GET", "/sketches") == []
    assert ebpf_health(ag)["available"] is False
    truth = truth_rule(b, "-p", "icmp")
    sk = ag.v1("POST", "/sketches", {"filter": {"proto": "icmp"},
                                     "counters": [{"key": "src"}]})
    a.run(["ping", "-c", "10", "-i", "0.01", "-q", b.ip])
    snap = snapshot_when(ag, sk["id"], 1, 10)
    assert snap["monitor"]["capture"] == "nfqueue" and snap["packets"] == truth()[0] == 10


def test_stale_object_is_refused_with_its_reason(tmp_path):
    from host_agent.capture import ebpf

    obj = ebpf.ensure_object()
    stale = tmp_path / "ehm_tc.o"
    stale.write_bytes(obj.read_bytes().replace(b"EHMSRC:", b"EHMSRC:0"))
    with pytest.raises(ebpf.EbpfError, match="is stale"):
        ebpf.EbpfCapture("lo", stale)
    with pytest.raises(ebpf.EbpfError, match="is missing"):
        ebpf.EbpfCapture("lo", tmp_path / "none.o")
    assert hashlib.sha256(ebpf.SOURCE.read_bytes()).hexdigest() == ebpf.object_hash(obj)


def test_a_port_scan_slot_counts_connection_attempts_only(ns_pair):
    """A port_scan sketch's slot (``probes``) admits only connection attempts: pings,
    replies and an established transfer make no record, so its TCP records carry SYN
    alone; a plain slot on the same traffic ORs the transfer's ACKs into its SYN's."""
    from host_agent.capture import ebpf

    a, b = ns_pair
    fields = ebpf.key_fields("port_scan", "src_dport")
    cap = in_netns(b, lambda: ebpf.EbpfCapture(b.intf))
    try:
        def attach() -> None:
            cap.attach()
            cap.configure(0, ebpf.slot_config({}, fields, probes=True), 1 << 20)
            cap.configure(1, ebpf.slot_config({}, fields), 1 << 20)

        in_netns(b, attach)
        attempts = attempts_among_noise(a, b)
        probes, every = in_netns(b, lambda: (cap.drain(0), cap.drain(1)))
        assert int(probes.packets.sum()) == attempts and probes.missed == (0, 0)
        syn = probes.flags[probes.flags != 0]
        assert syn.tolist() == [0x02] * 11  # 10 closed ports and the transfer's port
        transfer = every.flags[every.keys["dport"] == 7100]
        assert transfer.tolist() and transfer[0] & 0x10  # ACK: probe_rows would skip it
        assert int(every.packets.sum()) > 50 + attempts
    finally:
        in_netns(b, cap.close)
