"""Task model and policy validation: defaults, round trip, exact error messages."""

from __future__ import annotations

import glob
import os

import pytest

from measure_model.policy import load_policy
from measure_model.task import (
    Filter,
    PolicyError,
    SketchSpec,
    Task,
    Window,
    parse_tasks,
)
from testing.checks import some
from testing.netns import ROOT

KEYS = "src, dst, src_dst, sport, dport, src_dport, dst_dport, proto, five_tuple"

FULL = """
tasks:
  - name: hh-icmp
    kind: heavy_hitters
    filter:
      interface: INPUT
      proto: udp
      src: 10.0.0.0/24
      dst: 10.0.0.5
      sport: 80
      dport: "8000:8100"
    key: src
    increment: byte
    threshold: 0.05
    top_k: 10
    window: {length: 1.0, mode: tumbling}
    report_interval: 5
    sketch: {width: 16384, depth: 4, seed: 1}
    scope: [h2, h3, 10.0.0.4]
  - name: bw-h5-h6
    kind: bandwidth
    src: h5
    dst: h6
    method: slops
    max_duration: 10
    max_bytes: 20000000
"""


def test_full_example_from_the_design_document():
    hh, bw = load_policy(FULL, "full.yaml")
    assert hh == Task(
        name="hh-icmp", kind="heavy_hitters",
        filter=Filter(interface="INPUT", proto="udp", src="10.0.0.0/24", dst="10.0.0.5",
                      sport=80, dport="8000:8100"),
        key="src", increment="bytes", threshold=0.05, threshold_abs=None, top_k=10,
        window=Window(1.0, "tumbling"), scan_ports=None, report_interval=5.0,
        sketch=SketchSpec(16384, 4, 1), scope=("h2", "h3", "10.0.0.4"),
        sample=1.0, sample_mode="random", capture="nfqueue")
    assert bw == Task(name="bw-h5-h6", kind="bandwidth", src="h5", dst="h6", method="slops",
                      max_duration=10.0, max_bytes=20_000_000)


def test_defaults_per_kind_and_wire_form():
    tasks = parse_tasks({"tasks": [{"name": "a", "kind": "heavy_hitters"},
                                   {"name": "b", "kind": "flow_size"},
                                   {"name": "c", "kind": "port_scan"},
                                   {"name": "d", "kind": "counter", "threshold_abs": 7}]}, "d")
    assert [t.key for t in tasks] == ["src", "src_dst", "src_dport", "src"]
    assert [t.threshold for t in tasks] == [0.05, None, 0.05, None]
    assert [t.scan_ports for t in tasks] == [None, None, 20, None]
    assert tasks[2].to_dict() == {
        "name": "c", "kind": "port_scan", "filter": {"interface": "INPUT"}, "key": "src_dport",
        "increment": "pkt", "threshold": 0.05, "top_k": 10,
        "window": {"length": 1.0, "mode": "tumbling"}, "scan_ports": 20, "report_interval": 5.0,
        "sketch": {"width": 16384, "depth": 4, "seed": 1}, "scope": "global",
        "sample": 1.0, "sample_mode": "random", "capture": "nfqueue"}
    assert tasks[3].to_dict()["threshold_abs"] == 7


def test_prefixes_and_port_ranges_are_normalised_as_iptables_reads_them():
    """What the documented patterns allow is accepted: host bits are masked, range ends
    may come in either order."""
    (t,) = parse_tasks({"name": "a", "kind": "counter",
                        "filter": {"src": "10.0.0.1/24", "dst": "10.0.0.9/32", "proto": "udp",
                                   "dport": "90:80", "sport": "7:7"}}, "p")
    flt = some(t.filter)
    assert (flt.src, flt.dst, flt.dport, flt.sport) == (
        "10.0.0.0/24", "10.0.0.9", "80:90", "7:7")


def test_round_trip_and_single_task_body():
    for task in load_policy(FULL, "full.yaml"):
        assert Task.from_dict(task.to_dict()) == task
    (one,) = parse_tasks({"name": "x", "kind": "counter", "key": "five_tuple"}, "request")
    assert one.key == "five_tuple" and one.is_global


def test_yaml_scalars_follow_the_core_schema():
    # YAML 1.1 would read 22:10 as sexagesimal 1330 and "yes" as True.
    (t,) = load_policy("tasks: [{name: a, kind: counter, filter: {proto: tcp, dport: 22:30}}]",
                       "s.yaml")
    assert some(t.filter).dport == "22:30"
    with pytest.raises(PolicyError) as info:
        load_policy("tasks: [{name: a, kind: counter, top_k: yes}]", "s.yaml")
    assert str(info.value) == "policy s.yaml: task a: top_k must be an integer, not str"


MALFORMED = [
    ("tasks: [{name: hh-1, kind: heavy_hitters, key: srcdst}]",
     f"policy bad.yaml: task hh-1: key 'srcdst' is not one of {KEYS}"),
    ("tasks: [{name: hh-1, kind: heavy_hitters, thresold: 0.1}]",
     "policy bad.yaml: task hh-1: unknown field 'thresold'"),
    ("tasks: [{name: hh-1, kind: heavy_hitters, threshold: 0.1, threshold_abs: 5}]",
     "policy bad.yaml: task hh-1: threshold and threshold_abs are exclusive: give one of them"),
    ("tasks: [{name: hh-1, kind: heavy_hitters, threshold: 1.5}]",
     "policy bad.yaml: task hh-1: threshold 1.5 is out of range (0, 1]"),
    ("tasks: [{name: hh-1, kind: heavy_hitters, threshold: .nan}]",
     "policy bad.yaml: task hh-1: threshold nan is not a finite number"),
    ("tasks: [{name: hh-1, kind: counter, filter: {dport: 80}}]",
     "policy bad.yaml: task hh-1: filter.dport needs filter.proto tcp or udp"),
    ("tasks: [{name: hh-1, kind: counter, filter: {proto: icmp, sport: 80}}]",
     "policy bad.yaml: task hh-1: filter.sport needs filter.proto tcp or udp"),
    ("tasks: [{name: hh-1, kind: counter, sketch: {width: 1000}}]",
     "policy bad.yaml: task hh-1: sketch.width 1000 is not a power of two"),
    ("tasks: [{name: hh-1, kind: counter, sketch: {depth: 9}}]",
     "policy bad.yaml: task hh-1: sketch.depth 9 is out of range 1..8"),
    ("tasks: [{name: hh-1, kind: counter, top_k: true}]",
     "policy bad.yaml: task hh-1: top_k must be an integer, not bool"),
    ("tasks: [{name: hh-1, kind: counter, top_k: 1001}]",
     "policy bad.yaml: task hh-1: top_k 1001 is out of range 1..1000"),
    ("tasks: [{name: hh-1, kind: counter, window: {length: 0.01}}]",
     "policy bad.yaml: task hh-1: window.length 0.01 is out of range [0.05, 3600]"),
    ("tasks: [{name: hh-1, kind: counter, window: {mode: hopping}}]",
     "policy bad.yaml: task hh-1: window.mode 'hopping' is not one of tumbling, sliding"),
    ("tasks: [{name: hh-1, kind: counter, filter: {src: 10.0.0.1/33}}]",
     "policy bad.yaml: task hh-1: filter.src '10.0.0.1/33' is not an IPv4 or IPv6 address "
     "or prefix"),
    ("tasks: [{name: hh-1, kind: counter, filter: {proto: tcp, dport: '70000:80'}}]",
     "policy bad.yaml: task hh-1: filter.dport '70000:80' is not a port or a range "
     "'low:high' of ports 0..65535"),
    ("tasks: [{name: hh-1, kind: counter, filter: {interface: FORWARD}}]",
     "policy bad.yaml: task hh-1: filter.interface 'FORWARD' is not one of INPUT, OUTPUT"),
    ("tasks: [{name: hh-1, kind: counter, filter: {vlan: 3}}]",
     "policy bad.yaml: task hh-1: unknown field 'filter.vlan'"),
    ("tasks: [{name: hh-1, kind: counter, increment: packets}]",
     "policy bad.yaml: task hh-1: increment 'packets' is not one of pkt, bytes"),
    ("tasks: [{name: hh-1, kind: counter, scan_ports: 5}]",
     "policy bad.yaml: task hh-1: field 'scan_ports' does not apply to kind counter"),
    ("tasks: [{name: hh-1, kind: counter, src: h5}]",
     "policy bad.yaml: task hh-1: field 'src' does not apply to kind counter"),
    ("tasks: [{name: bw-1, kind: bandwidth, src: h5, dst: h5}]",
     "policy bad.yaml: task bw-1: src and dst are the same host 'h5'"),
    ("tasks: [{name: bw-1, kind: bandwidth, src: h5}]",
     "policy bad.yaml: task bw-1: dst is required for kind bandwidth"),
    ("tasks: [{name: bw-1, kind: bandwidth, src: h5, dst: h6, max_duration: 61}]",
     "policy bad.yaml: task bw-1: max_duration 61 is out of range [1, 60]"),
    ("tasks: [{name: bw-1, kind: bandwidth, src: h5, dst: h6, key: src}]",
     "policy bad.yaml: task bw-1: field 'key' does not apply to kind bandwidth"),
    ("tasks: [{name: hh-1, kind: sketchy}]",
     "policy bad.yaml: task hh-1: kind 'sketchy' is not one of heavy_hitters, flow_size, "
     "port_scan, counter, heavy_changers, entropy, cardinality, superspreaders, ddos_victims, "
     "flows, path_health, tcp_health, bandwidth"),
    ("tasks: [{name: HH_1, kind: counter}]",
     "policy bad.yaml: task #1: name 'HH_1' does not match [a-z0-9][a-z0-9_.-]{0,62}"),
    ("tasks: [{kind: counter}]", "policy bad.yaml: task #1: name is required"),
    ("tasks: [{name: a, kind: counter}, {name: a, kind: flow_size}]",
     "policy bad.yaml: task a: name is used by another task in the policy"),
    ("tasks: [{name: a, kind: counter, scope: []}]",
     "policy bad.yaml: task a: scope must be 'global' or a non-empty list of hosts"),
    ("tasks: [{name: a, kind: counter, scope: [h2, 'h2']}]",
     "policy bad.yaml: task a: scope lists a host twice"),
    ("tasks: [{name: a, kind: counter, scope: ['h2; reboot']}]",
     "policy bad.yaml: task a: scope[0] 'h2; reboot' is not a host name or IPv4 address"),
    ("tasks: []", "policy bad.yaml: tasks must be a non-empty list"),
    ("task: [{name: a, kind: counter}]", "policy bad.yaml: unknown top-level field 'task'"),
    ("- {name: a, kind: counter}", "policy bad.yaml: must be a mapping with 'tasks', not list"),
    ("tasks: [a, b]", "policy bad.yaml: task #1: must be a mapping, not str"),
    ("tasks:\n  - name: a\n    kind: counter\n    key: src\n    key: dst\n",
     "policy bad.yaml: invalid YAML: duplicate key 'key' (line 5)"),
    ("base: &b {kind: counter}\ntasks: [{<<: *b, name: a}]",
     "policy bad.yaml: invalid YAML: anchors and aliases are not allowed (line 1)"),
]


@pytest.mark.parametrize("text,message", MALFORMED, ids=[m[1].split(": ", 2)[-1][:40]
                                                          for m in MALFORMED])
def test_malformed_policy_gives_exact_error(text, message):
    with pytest.raises(PolicyError) as info:
        load_policy(text, "bad.yaml")
    assert str(info.value) == message


def test_json_body_errors_name_the_source():
    with pytest.raises(PolicyError) as info:
        parse_tasks({"tasks": [{"name": "ok", "kind": "counter"},
                               {"name": "hh-2", "kind": "heavy_hitters", "top_k": 1e3}]},
                    "request")
    assert str(info.value) == "policy request: task hh-2: top_k must be an integer, not float"
    with pytest.raises(PolicyError) as info:
        parse_tasks("tasks", "request")
    assert str(info.value) == "policy request: must be a mapping with 'tasks', not str"


def test_size_limit_and_invalid_yaml():
    with pytest.raises(PolicyError) as info:
        load_policy("#" * (256 * 1024 + 1), "big.yaml")
    assert str(info.value) == "policy big.yaml: 262145 bytes is more than the limit of 262144"
    with pytest.raises(PolicyError, match=r"^policy b\.yaml: invalid YAML: "):
        load_policy("tasks: [", "b.yaml")


def test_every_shipped_policy_is_valid():
    files = sorted(glob.glob(os.path.join(ROOT, "policies", "*.yaml")))
    names = {os.path.basename(f) for f in files}
    assert {"heavy_hitter.yaml", "flow_size_distribution.yaml", "port_scan.yaml",
            "query_bw.yaml", "flows.yaml"} <= names
    kinds = set()
    for path in files:
        with open(path) as f:
            tasks = load_policy(f.read(), os.path.basename(path))
        assert tasks, path
        kinds |= {t.kind for t in tasks}
    assert {"heavy_hitters", "flow_size", "port_scan", "bandwidth", "flows"} <= kinds


def test_flows_kind_and_sampling_fields():
    (task,) = parse_tasks({"name": "fl", "kind": "flows", "idle_timeout": 2, "sample": 0.5,
                           "export": [{"collector": "127.0.0.1:9995"},
                                      {"collector": "[::1]:4739", "format": "netflow9"}]}, "r")
    assert task.to_dict() == {
        "name": "fl", "kind": "flows", "filter": {"interface": "INPUT"}, "increment": "bytes",
        "top_k": 100, "report_interval": 5.0, "scope": "global", "sample": 0.5,
        "sample_mode": "random", "capture": "nfqueue",
        "export": [{"collector": "127.0.0.1:9995", "format": "ipfix"},
                   {"collector": "[::1]:4739", "format": "netflow9"}],
        "active_timeout": 60.0, "idle_timeout": 2.0, "max_flows": 65536}
    assert Task.from_dict(task.to_dict()) == task
    (nth,) = parse_tasks({"name": "c", "kind": "counter", "sample": 0.01,
                          "sample_mode": "nth"}, "r")
    assert nth.sample == 0.01 and nth.sample_mode == "nth"


@pytest.mark.parametrize("body, message", [
    ({"export": [{"collector": "10.0.0.1"}]},
     "export[0].collector '10.0.0.1' is not host:port with a port 1..65535"),
    ({"export": [{"collector": "10.0.0.1:99999"}]},
     "export[0].collector '10.0.0.1:99999' is not host:port with a port 1..65535"),
    ({"export": [{"collector": "h:1", "format": "v5"}]},
     "export[0].format 'v5' is not one of ipfix, netflow9"),
    ({"export": [{"collector": "h:1", "port": 1}]}, "unknown field 'export[0].port'"),
    ({"export": "h:1"}, "export must be a non-empty list of targets"),
    ({"export": [{"collector": "a:1"}, {"collector": "a:1"}]},
     "export lists a target twice"),
    ({"sample": 0}, "sample 0 is out of range [1e-06, 1]"),
    ({"sample": 1.5}, "sample 1.5 is out of range [1e-06, 1]"),
    ({"sample": 1e-7}, "sample 1e-07 is out of range [1e-06, 1]"),
    ({"idle_timeout": 0.5}, "idle_timeout 0.5 is out of range [1, 3600]"),
    ({"active_timeout": 4000}, "active_timeout 4000 is out of range [1, 3600]"),
    ({"max_flows": 2}, "max_flows 2 is out of range 16..1048576"),
    ({"key": "src"}, "field 'key' does not apply to kind flows"),
])
def test_flows_bad_fields_name_the_field(body, message):
    with pytest.raises(PolicyError) as err:
        parse_tasks({"name": "fl", "kind": "flows", **body}, "r")
    assert str(err.value) == f"policy r: task fl: {message}"


def test_flow_fields_do_not_apply_to_other_kinds():
    with pytest.raises(PolicyError, match="field 'idle_timeout' does not apply to kind counter"):
        parse_tasks({"name": "c", "kind": "counter", "idle_timeout": 3}, "r")
    with pytest.raises(PolicyError, match="field 'sample' does not apply to kind bandwidth"):
        parse_tasks({"name": "b", "kind": "bandwidth", "src": "h1", "dst": "h2",
                     "sample": 0.5}, "r")
