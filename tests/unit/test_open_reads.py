"""Open agent reads stay cheap: health and counter GETs reuse a recent reading of the
iptables rule counters (one ``iptables-save`` per family at most every
``RULES_MAX_AGE`` seconds, and again at once after any rule change), and an open
counter GET ships the summary (no sketch cells, no HyperLogLog registers). The
whole snapshot is ``?full=1``, which must be signed when the agent has a key."""

from __future__ import annotations

import json

import pytest
import webob

from host_agent.capture.rules import Capture, CaptureFilter
from host_agent.health import RULES_MAX_AGE
from measure_model.task import Filter
from testing.apps import make_agent_app, signed

pytestmark = pytest.mark.unit

SAVE = ("[5:300] -A ehm-h1-in -p udp -m comment --comment endhost-measure:h1:3 "
        "-j MARK --or-mark 0x4\n")


class SaveCounter:
    """An iptables runner answering ``*-save`` with one counted mark rule."""

    def __init__(self) -> None:
        self.saves = 0

    def __call__(self, cmd: list[str]) -> str:
        if cmd[0].endswith("-save"):
            self.saves += 1
            return SAVE if cmd[0] == "iptables-save" else ""
        return ""


def test_rule_counters_are_reused_for_open_reads_and_read_again_after_a_change(monkeypatch):
    import host_agent.capture.rules as rules

    t = [100.0]
    monkeypatch.setattr(rules.time, "monotonic", lambda: t[0])
    runner = SaveCounter()
    cap = Capture("h1", runner=runner)
    assert cap.counters(max_age=RULES_MAX_AGE) == {3: (5, 300)}
    assert runner.saves == 2  # iptables-save and ip6tables-save
    assert cap.counters(max_age=RULES_MAX_AGE) == {3: (5, 300)}
    t[0] += RULES_MAX_AGE / 2
    cap.counters(max_age=RULES_MAX_AGE)
    assert runner.saves == 2  # reused
    cap.add(4, 3, CaptureFilter.from_filter(Filter(proto="udp")))
    cap.counters(max_age=RULES_MAX_AGE)
    assert runner.saves == 4  # the rules changed: read again at once
    t[0] += RULES_MAX_AGE + 0.1
    cap.counters(max_age=RULES_MAX_AGE)
    assert runner.saves == 6  # too old
    cap.counters()  # max_age 0: always fresh (the overlay's own snapshots)
    assert runner.saves == 8


def test_health_gets_do_not_run_iptables_save_each_time():
    runner = SaveCounter()
    app, agent, _ = make_agent_app(capture=Capture("fz", runner=runner))
    for _ in range(20):
        resp = webob.Request.blank("/agent/v1/health").get_response(app)
        assert resp.status_code == 200
    assert runner.saves == 2  # one reading for all twenty (within RULES_MAX_AGE)


def _app_with_counts():
    app, agent, _ = make_agent_app()
    body = json.dumps({"filter": {"proto": "udp"}, "counters": [{"key": "src"}]}).encode()
    assert signed("POST", "/agent/v1/sketches", body).get_response(app).status_code == 201
    return app


def test_an_open_counter_get_is_the_summary_and_the_full_snapshot_is_signed():
    app = _app_with_counts()
    path = "/agent/v1/sketches/1/counters/1"
    open_get = webob.Request.blank(path).get_response(app)
    assert open_get.status_code == 200, open_get.text
    snap = open_get.json
    assert snap["summary"] is True and "sketch" not in snap
    assert "hll" not in snap["distinct"] and "estimate" in snap["distinct"]
    assert {"heavy_hitters", "top_k", "window", "scan", "packets"} <= set(snap)
    unsigned_full = webob.Request.blank(path + "?full=1").get_response(app)
    assert (unsigned_full.status_code, unsigned_full.json) == (401, {
        "error": "missing X-Measure-Timestamp header (request must be signed)"})
    full = signed("GET", path + "?full=1").get_response(app)
    assert full.status_code == 200, full.text
    assert "sketch" in full.json and "hll" in full.json["distinct"]
    assert "summary" not in full.json
    assert len(full.body) > 10 * len(open_get.body)
