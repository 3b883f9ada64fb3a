"""Path health through the controller service and REST: path_health reports become
links and link events, avoid_link re-routes (and refuses), diagnose and the views.

Real service, store, topology, task model, reactions and forwarding (through
the fake OpenFlow tables of ``testing.fakeoftable``); only the agents' HTTP
and the clock are fakes.
"""

from __future__ import annotations

import pytest

from ryu_app.net.forwarding import ETH_TYPE_IPV4, Forwarding, Packet
from ryu_app.reactions.actions import Reroute
from testing.fakeoftable import FakeNetwork
from testing.pathharness import MAC, PathHarness, crossing, post_task

pytestmark = pytest.mark.unit

def events(h: PathHarness, kind: str) -> list[dict]:
    return [e for e in h.call("GET", "/measure/v1/events?since=0")[1]["events"]
            if e["kind"] == kind]


@pytest.fixture
def h(tmp_path):
    return PathHarness(str(tmp_path / "state"))


def test_lossy_link_is_named_rerouted_around_and_restored(h):
    task_id = post_task(h)
    bad = crossing(h, 1, 2)
    assert ("h1", "h2") in bad and ("h3", "h4") not in bad
    h.report(task_id, set())
    h.report(task_id, bad)
    h.report(task_id, bad)
    raised = events(h, "link_suspect")
    assert [e["name"] for e in raised] == ["s1:12-s2:11"]
    assert raised[0]["link"] == {"src_switch": "0000000000000001", "src_port": 12,
                                 "dst_switch": "0000000000000002", "dst_port": 11}
    links = h.call("GET", "/measure/v1/links")[1]
    assert [x["name"] for x in links["suspects"]] == ["s1:12-s2:11"]
    assert links["links"][0]["confidence"] > 0.9
    # the reaction: routed around, recorded with its duration
    taken = [e for e in events(h, "action") if e["state"] == "taken"]
    assert taken and taken[0]["action"] == "avoid_link" and taken[0]["target"] == "s1:12-s2:11"
    ops = h.service.actions.drain()
    assert Reroute(frozenset({frozenset({1, 2})})) in ops
    topo = h.service.topology
    assert topo.set_avoided(set(ops[-1].links))
    fwd = Forwarding(topo)
    sim = FakeNetwork(fwd, {MAC[i]: (i, 1) for i in range(1, 6)}, now=1000.0)
    sim.send(Packet(MAC[1], MAC[2], 1, 1, ETH_TYPE_IPV4, ip_src="10.0.0.1"))
    assert dict(sim.delivered) == {MAC[2]: 1}
    assert not any(f.instructions and any(getattr(a, "port", None) == 12
                                          for i in f.instructions for a in i.actions)
                   for f in sim.switches[1].flows(table=1))
    assert topo.shortest_path(1, 2) == [1, 4, 3, 2]
    diag = h.call("GET", "/measure/v1/diagnose?src=h1&dst=h2")[1]
    assert diag["healthy"] is False
    assert any("avoid_link action" in line for line in diag["lines"]), diag["lines"]
    # the action ends: the paths come back
    action_id = taken[0]["action_id"]
    h.clock += 31
    h.service.tick(h.clock)
    assert Reroute(frozenset()) in h.service.actions.drain()
    assert h.service.actions.get(action_id)["status"] == "expired"


def test_dry_run_changes_no_route_and_bridge_and_access_links_are_refused(h):
    task_id = post_task(h, mode="dry_run")
    for _ in range(2):
        h.report(task_id, crossing(h, 1, 2))
    acts = h.call("GET", "/measure/v1/actions")[1]["actions"]
    assert [a["status"] for a in acts] == ["dry_run"]
    assert h.service.actions.drain() == [] and h.service.topology.avoided == set()
    # s1-s5 is the only way to h5: never avoided
    from ryu_app.paths.routes import access_link, link_dict, switch_link
    task = h.service.tasks[task_id].task
    enforce = type(task.on[0])(event="link_suspect", action="avoid_link", duration=30)
    task = type(task)(**{**task.__dict__, "on": (enforce,)})
    for key, why in ((switch_link(1, 15, 5, 11), "no alternative path"),
                     (access_link("h3", 3, 1), "access link")):
        ids = h.service.actions.react(task_id, task, [{
            "id": 99, "kind": "link_suspect", "link": link_dict(key), "name": "x"}])
        refused = [e for e in h.service.store.events(min(ids) - 1) if e["id"] in ids]
        assert refused[0]["state"] == "refused" and why in refused[0]["reason"]
    assert h.service.actions.drain() == []


def test_clean_path_says_look_at_the_hosts_and_bad_input_names_the_field(h):
    task_id = post_task(h)
    h.report(task_id, set())
    h.report(task_id, set())
    diag = h.call("GET", "/measure/v1/diagnose?src=h3&dst=10.0.0.4")[1]
    assert diag["healthy"] is True and diag["suspects"] == []
    assert diag["lines"][-1] == "the path is clean: not the network, look at the hosts"
    assert diag["path"]["forward"][0] == {"switch": "0000000000000003", "in_port": 1,
                                          "out_port": 14}
    status, body = h.call("GET", f"/measure/v1/tasks/{task_id}/paths")
    assert status == 200 and len(body["pairs"]) == 20
    assert all(p["forward"] for p in body["pairs"])
    assert h.call("GET", "/measure/v1/diagnose?src=h3&dst=h77") == (
        404, {"error": "diagnose: field 'dst': unknown host 'h77'"})
    assert h.call("GET", "/measure/v1/diagnose?src=h3")[0] == 400
    assert h.call("GET", "/measure/v1/diagnose?src=h3&dst=h3")[0] == 400


def test_cli_paths_links_and_diagnose_over_http(h, capsys):
    from measure_cli.cli import main
    from testing.harness import serving

    task_id = post_task(h, mode="dry_run")
    for _ in range(2):
        h.report(task_id, crossing(h, 1, 2))
    with serving(h.wsgi) as url:
        capsys.readouterr()
        assert main(["--url", url, "links"]) == 0
        links_out = capsys.readouterr().out
        first = links_out.splitlines()[1].split()
        assert first[:2] == ["s1:12-s2:11", "SUSPECT"], links_out
        assert main(["--url", url, "diagnose", "h1", "h2"]) == 0
        text = capsys.readouterr().out
        assert text.startswith("h1 -> h2: UNHEALTHY\n")
        assert "suspect link s1:12-s2:11" in text
        assert "avoid_link on s1:12-s2:11: possible" in text
        assert main(["--url", url, "paths", task_id]) == 0
        table = capsys.readouterr().out
        assert "s1:1>12 s2:11>1" in table and table.startswith(f"task {task_id}  pairs 20")
        assert main(["--url", url, "events"]) == 0
        assert "link s1:12-s2:11 is a suspect" in capsys.readouterr().out
        assert main(["--url", url, "diagnose", "h1", "h9"]) == 1
        assert "field 'dst': unknown host 'h9'" in capsys.readouterr().err


def test_metrics_per_pair_and_per_link_and_the_grafana_board(h):
    from prometheus_client.parser import text_string_to_metric_families
    from ryu.app.wsgi import WSGIApplication
    from webob import Request

    from ryu_app.rest.dashboard import register_dashboard
    from testing.grafana import grafana_metrics

    task_id = post_task(h, mode="dry_run")
    for _ in range(2):
        h.report(task_id, crossing(h, 1, 2))
    wsgi = WSGIApplication()
    register_dashboard(wsgi, h.service)
    body = Request.blank("/metrics").get_response(wsgi).body.decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    assert len(samples["measure_path_loss_ratio"]) == 20
    lossy = {(lab["src"], lab["dst"]): v for lab, v in samples["measure_path_loss_ratio"]}
    assert lossy[("h1", "h2")] == pytest.approx(0.1) and lossy[("h3", "h4")] == 0
    assert {lab["quantile"] for lab, _ in samples["measure_path_rtt_seconds"]} == {
        "0.5", "0.9", "0.99", "1"}
    suspect = {lab["link"]: v for lab, v in samples["measure_link_suspect"]}
    assert suspect["s1:12-s2:11"] == 1 and sum(suspect.values()) == 1
    used = grafana_metrics()["path-health.json"]
    assert used and used - {n for n, v in samples.items() if v} == set()


def test_a_pair_not_probed_itself_is_answered_from_the_links_of_its_route(h):
    """peers: auto probes a covering set, so most pairs have no row: diagnose reads
    the links on the pair's route when one task measures all of them."""
    from ryu_app.service.pathhealth import diagnose

    task_id = post_task(h)
    h.report(task_id, set())
    h.report(task_id, set())
    latest = h.call("GET", f"/measure/v1/tasks/{task_id}/result")[1]
    svc = h.service
    path = svc.pathhealth.path("h1", "h2")
    assert path is not None
    unprobed = {**latest, "pairs": [r for r in latest["pairs"]
                                    if {r["src"], r["dst"]} != {"h1", "h2"}]}
    clean = diagnose("h1", "h2", path, [(task_id, unprobed, [], {})], None, [],
                     lambda _: True)
    assert clean["healthy"] is True and clean["suspects"] == [], clean["lines"]
    assert clean["lines"][0].startswith(f"h1 <-> h2 is not probed itself; task {task_id} "
                                        "measures all 3 links of its route: loss 0.00%")
    assert clean["lines"][-1] == "the path is clean: not the network, look at the hosts"
    # the link between them turns bad (reported by other pairs): the pair is unhealthy
    for _ in range(2):
        h.report(task_id, crossing(h, 1, 2))
    latest = h.call("GET", f"/measure/v1/tasks/{task_id}/result")[1]
    unprobed = {**latest, "pairs": [r for r in latest["pairs"]
                                    if {r["src"], r["dst"]} != {"h1", "h2"}]}
    bad = diagnose("h1", "h2", path, [(task_id, unprobed, [], {})], None, [],
                   lambda _: True)
    assert bad["healthy"] is False
    assert [s["name"] for s in bad["suspects"]] == ["s1:12-s2:11"], bad["lines"]
    # a task that measures none of the route's links still says nothing
    none = diagnose("h1", "h2", path, [(task_id, {"pairs": [], "links": []}, [], {})],
                    None, [], lambda _: True)
    assert none["healthy"] is None and none["lines"][0].startswith("no path_health task")
