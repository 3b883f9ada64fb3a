"""Mininet tier: global results through the overlay, and its failure handling.

One network for the module (``topo.launch.MeasureNetwork``: controller,
tree depth 2 fanout 3 on userspace OVS, the mgmt0 bridge, an agent on each
of the nine hosts, overlay built), under the machine-wide Mininet lock.

1. A global heavy-hitter task over ``src_dst``/``bytes`` for UDP; paced
   datagrams of known sizes between five pairs, each counted by a receiver
   in the destination host (the ground truth: what arrived). The
   controller's global result must list all nine agents as covered and hold
   exactly the pairs above 5% of the total bytes, each within the count-min
   bound of its exact byte count (IPv4 total length = payload + 28);
   ``?host=`` gives one host's bytes.
2. Kill (SIGKILL) a non-root agent that has children, then the root agent:
   results keep coming with the dead agents missing and everyone else
   covered (the children re-parented, a new root chosen); restart both and
   the coverage is full again.

Every agent and the controller must not have logged a traceback.
"""

from __future__ import annotations

import json

import pytest

from testing.overlaynet import (
    AGENTS,
    apply,
    coverage,
    kill,
    overlay,
    restart,
    result,
    send_pairs,
)
from testing.procs import wait_until

pytestmark = pytest.mark.mininet


def test_global_heavy_hitters_match_exact_bytes_and_cover_all_agents(net):
    task_id = apply(net, {"name": "hh-udp-bytes", "kind": "heavy_hitters", "key": "src_dst",
                          "increment": "bytes", "filter": {"proto": "udp"},
                          "threshold": 0.05, "report_interval": 1})
    exact = send_pairs(net)
    total = sum(exact.values())
    heavy = {k for k, v in exact.items() if v >= 0.05 * total}
    assert len(heavy) == 4  # h4->h6 is below the threshold

    def matches():
        res = result(net, task_id)
        if not res or res["covered"] != AGENTS or res["missing"] or res["total"] < total:
            return None
        return res

    res = wait_until(matches, timeout=30, interval=0.5,
                     message="a complete global result holding all the traffic")
    assert res["total"] == total == res["bytes"]
    assert set(res["heavy_hitters"]) == heavy
    width = res["sketch"]["width"]
    for key in heavy:
        assert exact[key] <= res["heavy_hitters"][key] <= exact[key] + 2 * total / width
    assert res["complete"] is True and res["age"] < 5
    h5 = result(net, task_id, host="h5")
    assert h5["bytes"] == sum(v for k, v in exact.items() if k.endswith(",10.0.0.5"))


def test_dead_agents_are_missing_children_reparented_and_restart_restores(net):
    task_id = apply(net, {"name": "cover", "kind": "counter", "key": "src",
                          "increment": "pkt", "report_interval": 1})
    first = coverage(net, task_id, AGENTS, [], after=0)
    tree = overlay(net)
    root = tree["root"]
    parents = tree["parent"]
    inner = sorted((n for n in AGENTS if n != root and any(p == n for p in parents.values())),
                   key=lambda n: -sum(p == n for p in parents.values()))
    assert inner, f"no non-root agent with children in {json.dumps(tree)}"
    victim = inner[0]
    orphans = sorted(n for n, p in parents.items() if p == victim)

    kill(net, victim)
    live = [a for a in AGENTS if a != victim]
    res = coverage(net, task_id, live, [victim], after=first["interval_end"])
    new_parents = overlay(net)["parent"]
    assert all(new_parents[o] not in (None, victim) for o in orphans), new_parents

    kill(net, root)
    live = [a for a in live if a != root]
    res = coverage(net, task_id, live, sorted([victim, root]), after=res["interval_end"])
    new_tree = overlay(net)
    assert new_tree["root"] not in (root, victim)

    restart(net, victim)
    restart(net, root)
    coverage(net, task_id, AGENTS, [], after=res["interval_end"], timeout=90)
