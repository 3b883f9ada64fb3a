"""Mininet tier: path_health on a k=4 fat-tree (20 switches, 32 switch links, 16 hosts,
an agent on every host), real OVS + Ryu, under the machine-wide Mininet lock.

1. No fault: ``peers: all`` at 10 probes/s gives all 120 pairs with loss 0 (at most
   one probe lost per pair) and RTT quantiles.
2. Five random links: 5 switch links are drawn (seeded; the seed is printed, and
   ``MEASURE_TEST_SEED`` repeats a run) from those the pairs' paths cross (a link no
   path uses carries no probe, so no end-host method can see it). Random loss by
   the eBPF injector (``testing.faults``) on both directions of each in turn: the
   first at 5% then 20%, the other four at one rate each (alternately 5% and 20%),
   to keep the run short. Within 3 report intervals that link is the top suspect;
   in the next full interval it is the only suspect, the crossing pairs' loss is
   within the binomial bounds of 1 - (1 - p)^d (d = the directions of the round trip
   that cross it; per pair and pooled over those pairs, every check of the run held
   together to 99.8%: ``testing.checks.binomial_slack``) and every other pair
   lost at most one probe; the suspicion clears within 3 intervals of removing the
   fault. Report interval 4 s (shorter than the default 5 s, for the run time).
3. Delay: a TBF (``testing.faults.queue_delay``, 4 Mbit/s, 100 ms of queue) on both
   directions of a link that two hosts' paths cross, with an iperf3 TCP transfer each
   way between them: that link has the largest ``latency_ms`` of all links.

Figures (times to suspect and to clear, losses, latencies) are printed for the record.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

import pytest

from testing.checks import binomial_slack
from testing.faults import queue_delay, random_loss
from testing.overlaynet import apply_everywhere, measure_network
from testing.procs import stop_process, wait_until

pytestmark = pytest.mark.mininet

AGENTS = [f"h{n}" for n in range(1, 17)]
PAIRS = 16 * 15 // 2
INTERVAL = 4.0
#: at most the loss checks of a run: 6 faults x (every pair, and the pooled loss of the
#: pairs crossing the link once and twice)
LOSS_CHECKS = 6 * (PAIRS + 2)
NAME = re.compile(r"^s([0-9a-f]+):(\d+)-s([0-9a-f]+):(\d+)$")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with measure_network(tmp_path_factory, "paths-fattree", topo="fattree", k=4,
                         timeout=240) as mn:
        yield mn


@pytest.fixture(scope="module")
def mesh(net):
    task_id = apply_everywhere(net, {"name": "mesh", "kind": "path_health", "peers": "all",
                                     "probe_rate": 10, "report_interval": INTERVAL},
                               AGENTS, timeout=60)
    wait_until(lambda: net.rest(f"/measure/v1/tasks/{task_id}/result")[0] == 200,
               timeout=10 * INTERVAL, interval=0.5, message="a first path_health result")
    yield task_id
    net.rest(f"/measure/v1/tasks/{task_id}", method="DELETE")


def get(net, path: str) -> Any:
    status, body = net.rest(path)
    assert status == 200, (path, body)
    return body


def next_result(net, task_id: str, after: float) -> dict:
    """The first result all of whose probes were sent after ``after``, with every pair."""
    def fresh():
        status, res = net.rest(f"/measure/v1/tasks/{task_id}/result")
        if status == 200 and res["interval_end"] >= after + INTERVAL + 1.0 \
                and len(res["pairs"]) == PAIRS:
            return res
        return None

    return wait_until(fresh, timeout=5 * INTERVAL, interval=0.5,
                      message=f"a path_health result for an interval after {after}")


def suspects(net) -> list[str]:
    return [x["name"] for x in get(net, "/measure/v1/links")["suspects"]]


def switch_intf(net, dpid: int, port: int) -> str:
    sw = next(s for s in net.net.switches if int(s.dpid, 16) == dpid)
    return sw.intfs[port].name


def link_intfs(net, name: str) -> list[str]:
    m = NAME.match(name)
    assert m, name
    return [switch_intf(net, int(m[1], 16), int(m[2])),
            switch_intf(net, int(m[3], 16), int(m[4]))]


def directions(pair: dict, name: str) -> int:
    """How many directions of the pair's round trip cross the switch link ``name``."""
    m = NAME.match(name)
    assert m
    ends = {(int(m[1], 16), int(m[2])), (int(m[3], 16), int(m[4]))}
    return sum(any((int(h["switch"], 16), h["out_port"]) in ends for h in pair[way])
               for way in ("forward", "reverse"))


def test_no_fault_every_pair_measured(net, mesh):
    res = next_result(net, mesh, time.time())
    assert sorted(res["covered"]) == sorted(AGENTS)
    for row in res["pairs"]:
        assert row["sent"] >= 0.8 * 10 * INTERVAL and row["lost"] <= 1, row
        q = row["rtt_ms"]
        assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"] * 1.01, row
    p50 = sorted(r["rtt_ms"]["p50"] for r in res["pairs"])
    print(f"\n{len(res['pairs'])} pairs, loss 0; RTT p50 over pairs: min {p50[0]} ms, "
          f"median {p50[len(p50) // 2]} ms, max {p50[-1]} ms; probe cost (max) "
          f"{res['probe_cost']['max']}")
    assert suspects(net) == []


def test_five_random_links_each_found_alone_and_cleared(net, mesh):
    seed = int(os.environ.get("MEASURE_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"\nseed {seed} (MEASURE_TEST_SEED={seed} repeats the draw)")
    pairs = get(net, f"/measure/v1/tasks/{mesh}/paths")["pairs"]
    used = sorted({s for p in pairs for s in _switch_names(p)})
    assert len(used) >= 5
    chosen = random.Random(seed).sample(used, 5)
    plan = [(chosen[0], 0.05), (chosen[0], 0.20)] + \
        [(name, 0.05 if i % 2 else 0.20) for i, name in enumerate(chosen[1:])]
    print(f"links: {chosen}")
    for name, p in plan:
        crossing = {(r["src"], r["dst"]): directions(r, name) for r in pairs
                    if directions(r, name)}
        a, b = link_intfs(net, name)
        with random_loss(a, p), random_loss(b, p):
            start = time.time()
            wait_until(lambda name=name: suspects(net)[:1] == [name],
                       timeout=3 * INTERVAL + 5, interval=0.5,
                       message=f"{name} ({p:.0%}) the top suspect")
            found = time.time() - start
            res = next_result(net, mesh, time.time())
            named = suspects(net)
        _check_losses(res, crossing, p, name)
        assert named == [name], (name, named)
        start = time.time()
        wait_until(lambda: suspects(net) == [], timeout=3 * INTERVAL + 5, interval=0.5,
                   message=f"{name} cleared")
        print(f"{name} {p:.0%} ({len(crossing)} pairs cross it): top suspect after "
              f"{found:.1f} s ({found / INTERVAL:.1f} intervals), cleared "
              f"{time.time() - start:.1f} s after removal")


def _switch_names(pair: dict) -> set[str]:
    return {f"s{int(x['src_switch'], 16):x}:{x['src_port']}-"
            f"s{int(x['dst_switch'], 16):x}:{x['dst_port']}"
            for x in pair.get("links") or [] if "host" not in x}


def _check_losses(res: dict, crossing: dict[tuple[str, str], int], p: float,
                  name: str) -> None:
    pooled: dict[int, list[int]] = {}
    for row in res["pairs"]:
        d = crossing.get((row["src"], row["dst"]), 0)
        if not d:
            assert row["lost"] <= 1, (name, row)
            continue
        q = 1 - (1 - p) ** d
        n = row["sent"]
        assert abs(row["lost"] - n * q) <= binomial_slack(n, q, LOSS_CHECKS), (name, row)
        sent_lost = pooled.setdefault(d, [0, 0])
        sent_lost[0] += n
        sent_lost[1] += row["lost"]
    for d, (sent, lost) in sorted(pooled.items()):
        q = 1 - (1 - p) ** d
        print(f"  {name} {p:.0%}: pairs crossing it {d}x lost {lost}/{sent} = "
              f"{lost / sent:.4f} (expected {q:.4f})")
        assert abs(lost - sent * q) <= binomial_slack(sent, q, LOSS_CHECKS), (d, lost)


def test_delay_on_one_link_is_put_on_that_link(net, mesh):
    pairs = get(net, f"/measure/v1/tasks/{mesh}/paths")["pairs"]
    # a switch link the pair's round trip crosses both ways (so one TCP transfer each
    # way keeps both queues full), between hosts of different pods
    pick = next((r, name) for r in sorted(pairs, key=lambda r: (r["src"], r["dst"]))
                for name in sorted(_switch_names(r)) if directions(r, name) == 2)
    row, name = pick
    a, b = link_intfs(net, name)
    src, dst = row["src"], row["dst"]
    servers = [net.net.get(h).popen(["iperf3", "-s", "-1", "-p", "5401"]) for h in (src, dst)]
    clients = []
    try:
        with queue_delay(a, rate="4mbit", latency="100ms", burst="16kb"), \
                queue_delay(b, rate="4mbit", latency="100ms", burst="16kb"):
            time.sleep(0.5)
            for here, there in ((src, dst), (dst, src)):
                clients.append(net.net.get(here).popen(
                    ["iperf3", "-c", net.net.get(there).IP(), "-p", "5401",
                     "-t", str(int(4 * INTERVAL + 4))]))
            time.sleep(1.0)
            res = next_result(net, mesh, time.time())
            res = next_result(net, mesh, time.time())  # two loaded intervals in the window
            links = res["links"]
    finally:
        for proc in clients + servers:
            stop_process(proc)
    by_latency = sorted(links, key=lambda x: -x["latency_ms"])
    top = [(x.get("name"), x["latency_ms"], x["loss"]) for x in by_latency[:4]]
    middle = by_latency[len(by_latency) // 2]["latency_ms"]
    print(f"\ndelay on {name} (TCP {src}<->{dst}): top latency_ms {top}; median over "
          f"{len(links)} links {middle} ms")
    assert by_latency[0]["name"] == name, top
    assert by_latency[0]["latency_ms"] >= 5.0, top
