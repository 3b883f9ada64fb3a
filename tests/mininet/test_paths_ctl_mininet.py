"""Mininet tier: localization, avoid_link and diagnose on real OVS + Ryu, an agent on
every host, on a ring (``--topo loop``: s1-s2-s3-s4-s1, h1 h2 on s1, h3 h4 on s2, ...)
so every switch link has an alternative path.

1. No fault: no link is a suspect; ``diagnose h1 h3`` says the path is healthy.
2. 5% random loss on both directions of s1-s2 (``testing.faults``): within 3 report
   intervals that link is the top suspect and no other link is; ``diagnose h1 h3``
   names it; the ``dry_run`` avoid_link is recorded and no route moves (every pair
   crossing it still does, and ``ovs-ofctl dump-flows`` of every switch shows the
   same flows and actions, none of them re-added). The fault removed, the suspicion clears within 3
   intervals.
3. Loss on h1's access link (the switch's egress to h1) is put on that access link,
   no switch link; its enforced avoid_link is refused and the refusal recorded.
4. Enforced avoid_link on 20% loss on s1-s2: the action is taken, and within 10 s
   of the event the pairs that crossed the link lose under 1%; only flows whose
   next hop changed were rewritten (every other flow of every switch kept its
   actions and its age); when the action ends the paths cross s1-s2 again.
"""

from __future__ import annotations

import re
import time

import pytest

from testing.faults import random_loss
from testing.overlaynet import apply_everywhere, flow_tables, measure_network
from testing.procs import wait_until

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 9)]
INTERVAL = 3.0
S1S2 = "s1:3-s2:3"  # port 3 of s1 (after h1, h2) to port 3 of s2 (after h3, h4)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "paths-ctl-net", topo="loop") as mn:
        yield mn


def get(net, path: str):
    status, body = net.rest(path)
    assert status == 200, (path, body)
    return body


def intfs(net, a: str, b: str) -> list[str]:
    link = net.net.linksBetween(net.net.get(a), net.net.get(b))[0]
    return [link.intf1.name, link.intf2.name]


def suspects(net) -> list[str]:
    return [x["name"] for x in get(net, "/measure/v1/links")["suspects"]]


def wait_intervals(net, task_id: str, n: int) -> None:
    end = get(net, f"/measure/v1/tasks/{task_id}/result")["interval_end"]
    wait_until(lambda: get(net, f"/measure/v1/tasks/{task_id}/result")["interval_end"]
               >= end + n * INTERVAL - 0.5, timeout=n * INTERVAL + 15, interval=0.5,
               message=f"{n} more intervals of task {task_id}")


def crossing_pairs(net, task_id: str, name: str) -> list[tuple[str, str]]:
    body = get(net, f"/measure/v1/tasks/{task_id}/paths")
    return sorted((p["src"], p["dst"]) for p in body["pairs"] if name in _names(p))


def _names(pair: dict) -> set[str]:
    out = set()
    for link in pair.get("links") or []:
        if "host" in link:
            out.add(f"{link['host']}-s{int(link['switch'], 16):x}:{link['port']}")
        else:
            out.add(f"s{int(link['src_switch'], 16):x}:{link['src_port']}-"
                    f"s{int(link['dst_switch'], 16):x}:{link['dst_port']}")
    return out


def events_of(net, kind: str, since: int = 0) -> list[dict]:
    return [e for e in get(net, f"/measure/v1/events?since={since}")["events"]
            if e["kind"] == kind]


def same_flows(before: dict, after: dict, elapsed: float) -> dict[str, list[str]]:
    """The flows (by switch) that were added, deleted, given other actions, or deleted
    and added again (a duration that did not grow by ``elapsed``) between two
    ``flow_tables`` snapshots."""
    moved: dict[str, list[str]] = {}
    for sw in before:
        b, a = before[sw], after[sw]
        for match in sorted(set(b) | set(a)):
            if match not in b or match not in a or a[match][0] != b[match][0] \
                    or a[match][1] < b[match][1] + elapsed - 2.0:
                moved.setdefault(sw, []).append(match)
    return moved


def next_hops(net, task_id: str) -> dict[tuple[int, str], int]:
    """(switch dpid, destination MAC) -> out port, from the pairs' forward paths."""
    out = {}
    for pair in get(net, f"/measure/v1/tasks/{task_id}/paths")["pairs"]:
        mac = net.net.get(pair["dst"]).MAC()
        for hop in pair["forward"]:
            out[(int(hop["switch"], 16), mac)] = hop["out_port"]
    return out


def dl_dst(match: str) -> str | None:
    m = re.search(r"dl_dst=([0-9a-f:]{17})", match)
    return m[1] if m else None


def test_suspect_diagnose_dry_run_clear_and_access_link(net):
    task_id = apply_everywhere(net, {
        "name": "mesh", "kind": "path_health", "peers": "all", "probe_rate": 20,
        "report_interval": INTERVAL,
        "on": [{"event": "link_suspect", "action": "avoid_link", "duration": 60,
                "mode": "dry_run"}]}, AGENTS)
    wait_until(lambda: net.rest(f"/measure/v1/tasks/{task_id}/result")[0] == 200,
               timeout=30, message="a first result")
    wait_intervals(net, task_id, 2)
    assert suspects(net) == []
    diag = get(net, "/measure/v1/diagnose?src=h1&dst=h3")
    assert diag["healthy"] is True, diag["lines"]
    assert diag["lines"][-1] == "the path is clean: not the network, look at the hosts"
    before = crossing_pairs(net, task_id, S1S2)
    assert ("h1", "h3") in before or ("h3", "h1") in before
    a, b = intfs(net, "s1", "s2")
    assert {a, b} == {"s1-eth3", "s2-eth3"}
    tables, taken_at = flow_tables(net), time.time()
    assert sum(len(t) for t in tables.values()) >= 4 * 8, tables  # each switch's 8 hosts
    with random_loss(a, 0.05), random_loss(b, 0.05):
        start = time.time()
        wait_until(lambda: suspects(net)[:1] == [S1S2], timeout=3 * INTERVAL + 5,
                   interval=0.5, message=f"{S1S2} the top suspect")
        print(f"\n5% on {S1S2}: top suspect after {time.time() - start:.1f} s "
              f"({(time.time() - start) / INTERVAL:.1f} intervals)")
        wait_intervals(net, task_id, 1)
        assert suspects(net) == [S1S2]
        diag = get(net, "/measure/v1/diagnose?src=h1&dst=h3")
        print("\n".join(diag["lines"]))
        assert diag["healthy"] is False and [s["name"] for s in diag["suspects"]] == [S1S2]
        acts = [x for x in get(net, "/measure/v1/actions")["actions"]
                if x["action"] == "avoid_link"]
        assert [(x["status"], x["target"]) for x in acts] == [("dry_run", S1S2)]
        assert crossing_pairs(net, task_id, S1S2) == before  # dry_run moved no route
        moved = same_flows(tables, flow_tables(net), time.time() - taken_at)
        assert moved == {}, moved  # and changed no flow table
    start = time.time()
    wait_until(lambda: suspects(net) == [], timeout=3 * INTERVAL + 5, interval=0.5,
               message=f"{S1S2} cleared")
    print(f"cleared after {time.time() - start:.1f} s")
    assert [e["name"] for e in events_of(net, "link_cleared")] == [S1S2]
    # h1's access link: the switch's egress towards h1 (h1's own egress would drop
    # before sending and tell the socket)
    since = get(net, "/measure/v1/events?since=0")["events"][-1]["id"]
    with random_loss("s1-eth1", 0.10):
        wait_until(lambda: suspects(net)[:1] == ["h1-s1:1"], timeout=3 * INTERVAL + 5,
                   interval=0.5, message="h1's access link the top suspect")
        wait_intervals(net, task_id, 1)
        assert suspects(net) == ["h1-s1:1"]
    assert [e["name"] for e in events_of(net, "link_suspect", since)] == ["h1-s1:1"]
    refused = [e for e in events_of(net, "action", since) if e["state"] == "refused"]
    assert refused and "access link" in refused[0]["reason"], refused
    status, _ = net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")
    assert status == 200


def test_avoid_link_moves_the_pairs_off_and_back(net):
    task_id = apply_everywhere(net, {
        "name": "mesh-avoid", "kind": "path_health", "peers": "all", "probe_rate": 20,
        "report_interval": INTERVAL,
        "on": [{"event": "link_suspect", "action": "avoid_link", "duration": 20}]}, AGENTS)
    wait_until(lambda: net.rest(f"/measure/v1/tasks/{task_id}/result")[0] == 200,
               timeout=30, message="a first result")
    wait_intervals(net, task_id, 1)
    before = crossing_pairs(net, task_id, S1S2)
    assert before
    a, b = intfs(net, "s1", "s2")
    since = get(net, "/measure/v1/events?since=0")["events"][-1]["id"]
    tables, taken_at, hops = flow_tables(net), time.time(), next_hops(net, task_id)
    with random_loss(a, 0.20), random_loss(b, 0.20):
        taken = wait_until(lambda: [e for e in events_of(net, "action", since)
                                    if e["state"] == "taken"],
                           timeout=4 * INTERVAL + 5, interval=0.5, message="avoid_link taken")
        event_ts = taken[0]["ts"]
        assert taken[0]["action"] == "avoid_link" and taken[0]["target"] == S1S2

        def clean() -> bool:
            res = get(net, f"/measure/v1/tasks/{task_id}/result")
            if res["interval_end"] < event_ts + INTERVAL:
                return False
            rows = [r for r in res["pairs"] if (r["src"], r["dst"]) in before]
            return bool(rows) and all((r["loss"] or 0) < 0.01 for r in rows)

        wait_until(clean, timeout=10, interval=0.5,
                   message="loss < 1% on the affected pairs within 10 s")
        print(f"\naffected pairs clean {time.time() - event_ts:.1f} s after the event")
        assert S1S2 not in set().union(*(_names(p) for p in get(
            net, f"/measure/v1/tasks/{task_id}/paths")["pairs"]))
        moved = same_flows(tables, flow_tables(net), time.time() - taken_at)
        total = sum(len(t) for t in tables.values())
        count = sum(len(m) for m in moved.values())
        print(f"avoid_link rewrote {count} of {total} flows: {moved}")
        # exactly the (switch, destination) flows whose next hop changed were
        # rewritten; every other flow (other destinations, table-miss, LLDP) was not
        # touched: same actions, and its age grew
        after = next_hops(net, task_id)
        changed = {k for k in set(hops) | set(after) if hops.get(k) != after.get(k)}
        dpids = {sw.name: int(sw.dpid, 16) for sw in net.net.switches}
        assert changed and 0 < count < total, (changed, moved)
        assert {(dpids[sw], dl_dst(m)) for sw, ms in moved.items() for m in ms} \
            == changed, (changed, moved)
    wait_until(lambda: crossing_pairs(net, task_id, S1S2) == before, timeout=40,
               interval=1, message="the paths back over s1-s2 after the action")
    states = [e["state"] for e in events_of(net, "action", since)]
    assert "expired" in states, states
