"""Unit tests of the controller's Results: latest, per-host, history, events."""

from __future__ import annotations

import pytest

from ryu_app.service.results import MemoryStore, Results
from testing.checks import some
from testing.harness import sample_report


@pytest.fixture
def results() -> Results:
    return Results(MemoryStore(history=3))


def test_latest_global_result_has_coverage_and_age_and_no_raw_sketch(results):
    assert results.latest("t1") is None
    results.ingest(sample_report(10.0, hh={"10.0.0.9": 12}), now=10.5)
    res = results.latest("t1", now=11.01)
    assert res["host"] == "*" and res["interval_end"] == 10.0
    assert res["packets"] == 30 and res["heavy_hitters"] == {"10.0.0.9": 12}
    assert res["covered"] == ["h1", "h2"] and res["missing"] == [] and res["complete"] is True
    assert res["age"] == 1.0  # since the oldest data inside (10.01)
    assert res["sketch"] == {"width": 64, "depth": 2, "seed": 1, "conservative": True}
    assert res["distinct"] == {"estimate": 3, "precision": 12}


def test_per_host_result(results):
    results.ingest(sample_report(10.0), now=10.5)
    h2 = results.latest("t1", host="h2", now=12.05)
    assert (h2["host"], h2["packets"], h2["bytes"], h2["age"]) == ("h2", 20, 2000, 2.0)
    assert results.latest("t1", host="h9") is None


def test_history_is_bounded_and_newest_first(results):
    for k in range(5):
        results.ingest(sample_report(10.0 + 5 * k), now=10.5 + 5 * k)
    assert [r["interval_end"] for r in results.history("t1", limit=10)] == [30.0, 25.0, 20.0]
    assert [r["interval_end"] for r in results.history("t1", host="h1", limit=2)] == [30.0, 25.0]


def test_latest_survives_a_restart_through_the_store():
    store = MemoryStore()
    Results(store).ingest(sample_report(10.0), now=10.5)
    again = Results(store)
    assert some(again.latest("t1", now=10.51))["interval_end"] == 10.0


def test_first_report_after_a_restart_raises_events_against_the_stored_result():
    store = MemoryStore()
    assert Results(store).ingest(sample_report(10.0, hh={"10.0.0.9": 12}), now=10.5) == [1]
    again = Results(store)  # nobody read the result before the next report
    assert again.ingest(sample_report(15.0, hh={"10.0.0.9": 14}), now=15.5) == []
    assert again.ingest(sample_report(20.0, hh={"10.0.0.9": 14, "10.0.0.8": 9}), now=20.5) == [2]
    assert [(e["kind"], e.get("key")) for e in again.events()] == [
        ("heavy_hitter", "10.0.0.9"), ("heavy_hitter", "10.0.0.8")]


def test_new_heavy_hitters_and_port_scans_raise_events_once(results):
    ids1 = results.ingest(sample_report(10.0, hh={"10.0.0.9": 12}), now=10.5)
    ids2 = results.ingest(sample_report(15.0, hh={"10.0.0.9": 20, "10.0.0.7": 15, "10.0.0.8": 15},
                                 scan={"10.0.0.6": {"ports": [1, 2, 3, 4, 5], "dsts": ["10.0.0.5"]},
                                       "10.0.0.4": {"ports": [1, 2, 3, 4], "dsts": []}}),
                          now=15.5)
    ids3 = results.ingest(sample_report(20.0, hh={"10.0.0.9": 25, "10.0.0.7": 15},
                                 scan={"10.0.0.6": {"ports": [1, 2, 3, 4, 5, 6], "dsts": []}}),
                          now=20.5)
    assert ids1 == [1] and ids2 == [2, 3, 4] and ids3 == []
    events = results.events(since=0)
    assert [(e["id"], e["kind"]) for e in events] == [
        (1, "heavy_hitter"), (2, "heavy_hitter"), (3, "heavy_hitter"), (4, "port_scan")]
    assert events[1] == {"id": 2, "ts": 15.5, "task_id": "t1", "kind": "heavy_hitter",
                         "interval_end": 15.0, "key": "10.0.0.7", "value": 15}
    assert events[3] == {"id": 4, "ts": 15.5, "task_id": "t1", "kind": "port_scan",
                         "interval_end": 15.0, "src": "10.0.0.6", "ports": 5,
                         "dsts": ["10.0.0.5"]}
    assert [e["id"] for e in results.events(since=2)] == [3, 4]
    assert results.events(since=4) == []


def test_a_flow_size_task_raises_no_heavy_hitter_events(results):
    flows = {"10.0.0.1": 168, "10.0.0.6": 168}
    assert results.ingest(sample_report(10.0, hh=flows, kind="flow_size"), now=10.5) == []
    assert results.ingest(sample_report(15.0, hh={**flows, "10.0.0.7": 84},
                                 kind="flow_size"), now=15.5) == []
    assert results.latest("t1")["heavy_hitters"] == flows | {"10.0.0.7": 84}


ALL = ["h1", "h2", "h3", "h4"]


def gone(*hosts: str) -> dict:
    """The coverage fields of a report with ``hosts`` missing."""
    return {"missing": list(hosts), "covered": [h for h in ALL if h not in hosts]}


def test_coverage_events_start_after_two_reports_and_end_once(results):
    results.reason_of = lambda name: {"h3": "unreachable"}.get(name, "late")
    results.ingest(sample_report(10.0, **gone()), now=10.5)
    results.ingest(sample_report(15.0, **gone("h3")), now=15.5)
    assert results.events() == []  # one late report raises nothing
    assert results.latest("t1")["complete"] is False  # but the result says it
    for k in range(2, 6):
        results.ingest(sample_report(10.0 + 5 * k, **gone(*["h3", "h4"][:k - 1])), now=10.5 + 5 * k)
    for k in range(6, 8):
        results.ingest(sample_report(10.0 + 5 * k, **gone()), now=10.5 + 5 * k)
    start, end = results.events()
    assert (start["kind"], start["state"], start["missing"], start["reasons"]) == (
        "coverage", "start", ["h3"], {"h3": "unreachable"})
    assert (end["state"], end["missing"], end["returned"], end["interval_end"]) == (
        "end", [], ["h3", "h4"], 45.0)  # after two complete reports


def test_one_late_report_at_a_time_raises_no_coverage_event(results):
    for k in range(8):
        late = [f"h{3 + k % 4 // 2}"] if k % 2 else []
        results.ingest(sample_report(10.0 + 5 * k, **gone(*late)), now=10.5 + 5 * k)
    assert results.events() == []


def test_scope_limits_the_expected_agents(results):
    results.ingest(sample_report(10.0, covered=["h5"], missing=["h8", "h9"]), now=10.5,
                   expected={"h5"})
    results.ingest(sample_report(15.0, covered=["h5"], missing=["h3"]), now=15.5, expected={"h5"})
    res = results.latest("t1")
    assert res["missing"] == [] and res["complete"] is True
    assert results.events() == []


@pytest.mark.parametrize("body, message", [
    ([], "report: body must be a JSON object"),
    ({"task_id": ""}, "report: field 'task_id' must be a task id"),
    ({"task_id": "t1", "interval_end": "5"},
     "report: field 'interval_end' must be a time from 0 to 1e+13"),
    ({"task_id": "t1", "interval_end": 5, "snapshot": [], "covered": [], "missing": []},
     "report: field 'snapshot' must be a counter snapshot, or null when nothing in the "
     "subtree measures the task"),
    ({"task_id": "t1", "interval_end": 5, "snapshot": {}, "covered": [], "missing": []},
     "report: field 'snapshot' must be a counter snapshot, or null when nothing in the "
     "subtree measures the task"),
    ({"task_id": "t1", "interval_end": 10 ** 400, "snapshot": None, "covered": [],
      "missing": []}, "report: field 'interval_end' must be a time from 0 to 1e+13"),
    ({"task_id": "t1", "interval_end": 5, "covered": [], "missing": []},
     "report: field 'snapshot' is required (null: no data in this subtree)"),
    ({"task_id": "t1", "interval_end": 5, "snapshot": None, "covered": [], "missing": [],
      "per_host": {"h1": 3}},
     "report: per_host 'h1' must be an object with fields packets, bytes, total, "
     "heavy_hitters, top_k, distinct, scan, missed, generated_at, monitor, answer"),
    ({"task_id": "t1", "interval_end": 5, "covered": [], "missing": [],
      "snapshot": {"key": "src", "increment": "pkt", "packets": 1, "bytes": 1, "total": 1}},
     "snapshot: has no sketch; it cannot be merged"),
])
def test_bad_reports_are_rejected(results, body, message):
    with pytest.raises(ValueError) as err:
        results.ingest(body, now=1.0)
    assert str(err.value) == message
    assert results.latest("t1") is None and results.events() == []


def test_since_must_be_a_non_negative_integer(results):
    with pytest.raises(ValueError, match="^events: 'since' must be a non-negative integer$"):
        results.events(since=-1)


def test_with_the_sqlite_store_two_writes_per_report_and_restart(tmp_path):
    from ryu_app.service.store import Store

    store = Store(str(tmp_path / "measure.db"), history=3)
    results = Results(store)
    for k in range(4):
        results.ingest(sample_report(10.0 + 5 * k, hh={"10.0.0.9": 12} if k >= 2 else {}),
                       now=10.5 + 5 * k)
    assert [e["id"] for e in results.events()] == [1]
    store.close()
    again = Results(Store(str(tmp_path / "measure.db"), history=3))
    assert some(again.latest("t1", now=26.0))["interval_end"] == 25.0
    h1 = some(again.latest("t1", host="h1", now=26.0))
    assert (h1["host"], h1["packets"], h1["interval_end"]) == ("h1", 10, 25.0)
    assert [r["interval_end"] for r in again.history("t1", host="h2")] == [25.0, 20.0, 15.0]
    assert again.events(since=0)[0]["key"] == "10.0.0.9"


def test_stored_results_drop_raw_sketch_candidates_and_long_windows(results):
    rep = sample_report(10.0)
    rep["snapshot"]["candidates"] = {"10.0.0.9": 12}
    rep["snapshot"]["window"] = {"start": 9.0, "length": 1.0, "distinct": 150,
                                 "counts": {f"10.0.{i // 256}.{i % 256}": i for i in range(150)}}
    results.ingest(rep, now=10.5)
    res = results.latest("t1")
    assert "candidates" not in res and "hll" not in res["distinct"]
    assert len(res["window"]["counts"]) == 100 and res["window"]["truncated"] is True
    assert min(res["window"]["counts"].values()) == 50 and res["window"]["distinct"] == 150


def test_an_agent_dropped_from_the_tree_stays_missing_until_back(results):
    results.ingest(sample_report(10.0, covered=["h1", "h2", "h3"]), now=10.5)
    results.ingest(sample_report(15.0, covered=["h1", "h2"]), now=15.5)  # h3 left the tree
    res = results.latest("t1", now=16.0)
    assert res["missing"] == ["h3"] and res["complete"] is False
    results.ingest(sample_report(20.0, covered=["h1", "h2", "h3"]), now=20.5)
    assert results.latest("t1")["missing"] == [] and results.latest("t1")["complete"]
    assert results.events() == []  # missing from one report only
    results.ingest(sample_report(25.0, covered=["h1", "h2"]), now=25.5)
    results.forget_agent("h3")
    results.ingest(sample_report(30.0, covered=["h1", "h2"]), now=30.5)
    assert results.latest("t1")["missing"] == []


def test_bounded_root_report_keeps_counts_exact_and_lists_capped(results):
    """A root report of 60 agents in its bounded form: 20 names of each list, the exact
    counts; an expected agent outside the tree is missing too; coverage events count."""
    from measure_model.wire.overlay import MAX_LISTED, bound_report

    names = [f"h{i:02d}" for i in range(60)]
    covered, missing = names[:55], names[55:]
    full = sample_report(10.0, covered=covered, missing=missing,
                         per_host={n: {"packets": 1, "bytes": 100, "total": 1,
                                       "heavy_hitters": {}} for n in ["h1", *covered]})
    sent = bound_report(full)
    assert len(sent["covered"]) == MAX_LISTED and sent["covered_count"] == 55
    assert sent["missing"] == missing and sent["missing_count"] == 5
    assert list(sent["per_host"]) == ["h1"]  # the sender's own line only
    from ryu_app.service.results import COVERAGE_AFTER

    for k in range(COVERAGE_AFTER):  # missing that many reports in a row: an episode
        sent = bound_report({**full, "interval_end": 10.0 + 5 * k})
        events = results.ingest(sent, now=10.5 + 5 * k, expected=set(names) | {"h99"},
                                placed=set(names), registered=set(names) | {"h99"})
    res = some(results.latest("t1", now=10.6 + 5 * k))
    assert res["covered_count"] == 55 and len(res["covered"]) == MAX_LISTED
    assert res["missing_count"] == 6 and res["missing"] == [*missing, "h99"]
    assert res["complete"] is False
    (coverage,) = [e for e in results.events() if e["kind"] == "coverage"]
    assert coverage["id"] in events and coverage["covered"] == 55
    assert coverage["missing_count"] == 6
    # everyone back: complete, and the episode ends
    back = bound_report(sample_report(100.0, covered=names, missing=[]))
    results.ingest(back, now=100.5, expected=set(names), placed=set(names),
                   registered=set(names))
    res = some(results.latest("t1", now=100.6))
    assert res["complete"] is True and res["covered_count"] == 60 and res["missing_count"] == 0


def test_bounded_report_count_below_its_list_is_refused(results):
    from ryu_app.service.results import validate_report

    bad = sample_report(10.0, covered=["h1", "h2"], covered_count=1)
    with pytest.raises(ValueError, match="field 'covered_count'"):
        validate_report(bad)


def test_host_results_from_an_agent_answer(results):
    lines = {"results": [{"interval_end": 10.0, "packets": 3, "bytes": 300, "total": 3,
                          "heavy_hitters": {}, "generated_at": 10.01}]}
    (res,) = results.host_results("t1", "h2", lines, now=11.01)
    assert (res["host"], res["packets"], res["interval_end"], res["age"]) == ("h2", 3, 10.0, 1.0)
    with pytest.raises(ValueError, match="'interval_end'"):
        results.host_results("t1", "h2", {"results": [{"packets": 3}]})


def test_a_port_scan_task_raises_port_scan_events_only(results):
    # a port_scan task counts connection attempts: in an interval holding only a scan's
    # tail, each scanned key is a large share of the total, not a heavy hitter
    scan = {"10.0.0.6": {"ports": [1, 2, 3, 4, 5], "dsts": ["10.0.0.5"]}}
    ids = results.ingest(sample_report(10.0, hh={"10.0.0.6": 1, "10.0.0.7": 1},
                                       scan=scan, kind="port_scan"), now=10.5)
    assert [(e["id"], e["kind"]) for e in results.events(since=0)] == [(1, "port_scan")]
    assert ids == [1]
