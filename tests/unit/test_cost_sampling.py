"""Monitoring cost objects, sampling arithmetic and the sampled capture rule."""

from __future__ import annotations

import pytest

from host_agent.capture.rules import Capture, CaptureFilter, sample_args
from measure_model.cost import check_cost
from measure_model.sketch.sampling import describe, error_bound, scale_result
from measure_model.task import Filter
from ryu_app.service.registry import Registry, RegistryError

pytestmark = pytest.mark.unit

COST = {"restarts": 0, "crash_looping": False, "cpu_seconds": 1.5, "cpu_seconds_per_s": 0.02,
        "rss_bytes": 40_000_000, "packets": 1000, "missed": 0}
H1 = {"name": "h1", "url": "http://192.168.100.1:8000"}


def test_cost_check_names_the_field():
    assert check_cost(COST) is COST
    assert check_cost({**COST, "missed": None, "cpu_seconds_per_s": None})
    for bad, message in [({**COST, "cpu": 1}, "monitor: unknown field 'cpu'"),
                         ({**COST, "packets": -1},
                          "monitor: field 'packets' must be a non-negative integer or null"),
                         ({**COST, "cpu_seconds": float("nan")},
                          "monitor: field 'cpu_seconds' must be a non-negative number or null"),
                         ({**COST, "crash_looping": 1},
                          "monitor: field 'crash_looping' must be a boolean"),
                         ([], "monitor must be an object")]:
        with pytest.raises(ValueError) as err:
            check_cost(bad)
        assert str(err.value) == message


def test_heartbeat_carries_the_cost_to_get_agents():
    reg = Registry()
    reg.register(H1, now=1.0)
    assert reg.to_list(now=1.0)[0]["monitor"] is None
    reg.heartbeat("h1", 2.0, {"monitor": COST})
    assert reg.to_list(now=2.0)[0]["monitor"] == COST
    reg.heartbeat("h1", 3.0, {})              # an older agent: cost kept, liveness updated
    assert reg.to_list(now=3.0)[0]["monitor"] == COST
    with pytest.raises(RegistryError, match="heartbeat: field 'monitor': field 'packets'"):
        reg.heartbeat("h1", 4.0, {"monitor": {**COST, "packets": "x"}})
    with pytest.raises(RegistryError, match="heartbeat: unknown field 'cpu'"):
        reg.heartbeat("h1", 4.0, {"cpu": 1})


def test_error_bounds():
    assert error_bound(1000, 1.0) == 0.0
    assert error_bound(10_000, 0.1) == pytest.approx(3.29 * (10_000 * 0.9 / 0.1) ** 0.5)
    assert error_bound(10_000, 0.01, "nth") == 100
    assert describe(100, 0.1)["packets_estimate"] == 1000
    assert describe(0, 0.5)["relative_bound"] is None


def test_scale_result_scales_counts_only():
    result = {"packets": 10, "bytes": 1000, "total": 10, "heavy_hitters": {"a": 5},
              "top_k": [["a", 5], ["b", 2]], "distinct": {"estimate": 2},
              "window": {"counts": {"a": 3}, "previous": {"counts": {"b": 1}}}}
    out = scale_result(result, 0.5, "nth")
    assert out["packets"] == 20 and out["bytes"] == 2000 and out["total"] == 20
    assert out["heavy_hitters"] == {"a": 10} and out["top_k"] == [["a", 10], ["b", 4]]
    assert out["window"] == {"counts": {"a": 6}, "previous": {"counts": {"b": 2}}}
    assert out["distinct"] == {"estimate": 2}
    assert out["sampled"]["mode"] == "nth" and out["sampled"]["packets_bound"] == 2.0
    assert result["packets"] == 10                      # input untouched
    assert scale_result(result, 1.0) is result


def test_sampled_capture_rule_arguments():
    assert sample_args(1.0, "random") == []
    assert sample_args(0.1, "random") == ["-m", "statistic", "--mode", "random",
                                          "--probability", "0.1000000000"]
    assert sample_args(0.01, "nth") == ["-m", "statistic", "--mode", "nth", "--every", "100",
                                        "--packet", "0"]
    with pytest.raises(ValueError, match=r"sample 0 is out of range"):
        sample_args(0, "random")
    calls: list[list[str]] = []
    def runner(cmd: list[str]) -> str:
        calls.append(cmd)
        return ""

    cap = Capture("h1", runner=runner)
    filt = CaptureFilter.from_filter(Filter(proto="udp"))
    cap.add(3, 2, filt, 0.25, "nth")
    cap.remove(3)
    added, added6, removed, removed6 = calls      # proto udp: iptables and ip6tables
    assert [added[0], added6[0], removed[0], removed6[0]] == ["iptables", "ip6tables"] * 2
    assert added6[added6.index("-I") + 3:] == added[added.index("-I") + 3:]
    assert added[added.index("-I") + 3:] == [
        "-p", "udp", "-m", "statistic", "--mode", "nth", "--every", "4", "--packet", "0",
        "-m", "comment", "--comment", "endhost-measure:h1:3",
        "-j", "MARK", "--or-mark", "0x80000004"]
    assert removed[removed.index("-D") + 2:] == added[added.index("-I") + 3:]
