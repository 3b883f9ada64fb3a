"""Any coarser key from a five_tuple / src_dst elastic task: exact when everything is in the
heavy part (equal to a dedicated task's answer), bounds otherwise, 400 naming ``key``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ryu_app.launcher import patch_eventlet

patch_eventlet()

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from host_agent.counters.elastic import ElasticCounter  # noqa: E402
from host_agent.monitor.core import default_counter_factory  # noqa: E402
from measure_model import partial_keys  # noqa: E402
from measure_model.packet.keys import HeaderBatch  # noqa: E402
from measure_model.task import parse_task  # noqa: E402
from ryu_app.auth_config import AuthConfig  # noqa: E402
from ryu_app.net.topology import Topology  # noqa: E402
from ryu_app.rest.api import register_rest  # noqa: E402
from ryu_app.service.core import MeasureService  # noqa: E402
from testing.flows import elastic_counter  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("key", ["src", "dst", "dport", "src_dst", "proto", "src_dport"])
def test_partial_key_equals_a_dedicated_task_when_all_is_heavy(key):
    whole, own = elastic_counter("five_tuple"), elastic_counter(key)
    ans = partial_keys.answer(whole.es, key, threshold=30, top=20)
    mine = own.es.entries()
    assert own.es.light_total() == 0 and whole.es.light_total() == 0
    assert ans["top_k"] == own.top_k()[:20] or sorted(map(tuple, ans["top_k"])) == \
        sorted(map(tuple, own.top_k()))
    dedicated = {k: v for k, v in own.top_k()}
    assert {k: v for k, v in ans["top_k"]} == dedicated
    assert len(dedicated) == mine["count"].shape[0]
    assert ans["heavy_hitters"] == {k: v for k, v in dedicated.items() if v >= 30}
    assert all(r["exact"] and r["lower"] == r["size"] == r["upper"]
               for r in ans["partial"]["keys"])


def test_src_dst_task_answers_src_and_dst_only():
    c = elastic_counter("src_dst")
    ans = partial_keys.answer(c.es, "src", None, 3)
    assert ans["top_k"] == [["10.0.0.1", 95], ["10.0.0.3", 90], ["10.0.0.2", 62]]
    assert ans["heavy_hitters"] == {}
    for bad in ("dport", "five_tuple", "src_dst", "bogus", None):
        with pytest.raises(ValueError, match="^key"):
            partial_keys.check_key("src_dst", bad)


def test_bounds_hold_when_flows_spill_into_the_light_part():
    """A tiny memory: most flows are light; each listed key's truth lies in its bounds."""
    rng = np.random.default_rng(2)
    n = 60_000
    src = rng.integers(1, 200, n)
    dport = rng.integers(1, 3000, n)
    b = HeaderBatch.from_arrays(0x0A000000 + src, np.full(n, 0x0A0000FE), np.full(n, 17),
                                rng.integers(1024, 1100, n), dport, np.full(n, 64))
    task = parse_task({"name": "t", "kind": "flow_size", "key": "five_tuple",
                       "memory": 8192}, "t")
    c = default_counter_factory({"task": task.to_dict(), "candidate_divisor": 1}, 0.0)
    assert isinstance(c, ElasticCounter)
    c.update(b, 1.0)
    ans = partial_keys.answer(c.es, "src", None, 50)
    truth = {f"10.0.0.{s}": int(v) for s, v in zip(*np.unique(src, return_counts=True),
                                                   strict=True)}
    assert ans["partial"]["light_total"] > 0
    for row in ans["partial"]["keys"]:
        assert row["lower"] <= truth[row["key"]] <= row["upper"]
        assert row["lower"] <= row["size"] <= row["upper"]
        assert not row["exact"]


class Service:
    """A controller service and its REST app (no agents: reports are posted)."""

    def __init__(self, state_dir: str) -> None:
        self.service = MeasureService(Topology(), state_dir, now=lambda: 1000.0,
                                      controller_url="http://192.168.100.254:8080",
                                      auth=AuthConfig())
        self.wsgi = WSGIApplication()
        register_rest(self.wsgi, self.service)

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        kw: dict = {"method": method}
        if body is not None:
            kw["body"], kw["content_type"] = json.dumps(body).encode(), "application/json"
        resp = Request.blank(path, **kw).get_response(self.wsgi)
        return resp.status_int, json.loads(resp.body)


def test_rest_result_with_key(tmp_path):
    s = Service(str(tmp_path / "state"))
    assert s.call("POST", "/measure/v1/tasks", {"name": "ft", "kind": "flow_size",
                                                "key": "five_tuple", "memory": 65536})[0] == 201
    assert s.call("POST", "/measure/v1/tasks", {"name": "hh", "kind": "heavy_hitters",
                                                "key": "src"})[0] == 201
    assert s.call("POST", "/measure/v1/tasks", {"name": "fs", "kind": "flow_size",
                                                "key": "src"})[0] == 201
    snap = elastic_counter("five_tuple").snapshot(999.0, host="h1")
    report = {"task_id": "1", "interval_end": 999.0, "kind": "flow_size", "snapshot": snap,
              "covered": ["h1"], "missing": [], "generated_at": 999.0, "oldest": 999.0}
    assert s.call("POST", "/measure/v1/reports", report)[0] == 202
    status, body = s.call("GET", "/measure/v1/tasks/1/result?key=dport")
    assert status == 200 and body["key"] == "dport"
    assert body["top_k"][:3] == [["80", 155], ["53", 57], ["443", 42]]
    assert body["partial"]["of"] == "five_tuple" and body["flow_size"]["flows"] == 8
    status, body = s.call("GET", "/measure/v1/tasks/1/result?key=src")
    assert body["top_k"][0] == ["10.0.0.1", 95] and body["partial"]["keys"][0]["exact"]
    for query, words in (("key=bogus", "key 'bogus' is not one of"),
                         ("key=five_tuple", "key 'five_tuple' is not one of"),
                         ("key=src&host=h1", "key: a coarser key")):
        status, body = s.call("GET", f"/measure/v1/tasks/1/result?{query}")
        assert status == 400 and body["error"].startswith(words), body
    status, body = s.call("GET", "/measure/v1/tasks/2/result?key=src")
    assert status == 400 and body["error"].startswith("key: task 2 has no memory")
    status, body = s.call("GET", "/measure/v1/tasks/3/result?key=dst")
    assert status == 400 and body["error"].startswith("key: a task keyed by src answers")


def test_cli_result_with_key_over_http(tmp_path, capsys):
    from measure_cli.cli import main
    from testing.harness import serving

    s = Service(str(tmp_path / "state"))
    s.call("POST", "/measure/v1/tasks", {"name": "ft", "kind": "flow_size",
                                         "key": "five_tuple", "memory": 65536})
    snap = elastic_counter("five_tuple").snapshot(999.0, host="h1")
    s.call("POST", "/measure/v1/reports", {
        "task_id": "1", "interval_end": 999.0, "kind": "flow_size", "snapshot": snap,
        "covered": ["h1"], "missing": [], "generated_at": 999.0, "oldest": 999.0})
    with serving(s.wsgi) as url:
        assert main(["--url", url, "result", "1", "--key", "src"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[3].startswith("by src, from the five_tuple task's heavy entries")
        assert out[4].split() == ["SRC", "SIZE", "LOWER", "UPPER", "EXACT"]
        assert out[5].split() == ["10.0.0.1", "95", "95", "95", "yes"]
        assert main(["--url", url, "result", "1", "--key", "sport,dport"]) == 1
        assert capsys.readouterr().err.startswith("measure: HTTP 400: key 'sport,dport' is "
                                                  "not one of")
