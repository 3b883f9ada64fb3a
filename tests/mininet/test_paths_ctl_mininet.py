"""Mininet tier: localization, avoid_link and diagnose on real OVS + Ryu, an agent on
every host, on a ring (``--topo loop``: s1-s2-s3-s4-s1, h1 h2 on s1, h3 h4 on s2, ...)
so every switch link has an alternative path.

1. No fault: no link is a suspect; ``diagnose h1 h3`` says the path is healthy.
2. 5% random loss on both directions of s1-s2 (``testing.faults``): within 3 report
   intervals that link is the top suspect and no other link is; ``diagnose h1 h3``
   names it; the ``dry_run`` avoid_link is recorded and no route moves (every pair
   crossing it still does). The fault removed, the suspicion clears within 3
   intervals.
3. Loss on h1's access link (the switch's egress to h1) is put on that access link,
   no switch link; its enforced avoid_link is refused and the refusal recorded.
4. Enforced avoid_link on 20% loss on s1-s2: the action is taken, and within 10 s
   of the event the pairs that crossed the link lose under 1%; when the action
   ends the paths cross s1-s2 again.
"""

from __future__ import annotations

import time

import pytest

from testing.faults import random_loss
from testing.overlaynet import apply_everywhere, measure_network
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
    wait_until(lambda: crossing_pairs(net, task_id, S1S2) == before, timeout=40,
               interval=1, message="the paths back over s1-s2 after the action")
    states = [e["state"] for e in events_of(net, "action", since)]
    assert "expired" in states, states
