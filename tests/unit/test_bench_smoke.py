"""Smoke test of the benchmark suite: the quick mode runs and its JSON has sane figures.

Unit tier: the in-process parts (engine, accuracy, overlay) through the real
runner (``python -m bench ... --quick --results-dir TMP``), so the results
under ``bench/results/`` are left alone. Netns tier: the monitor part (root,
namespaces, NFQUEUE). Mininet tier: the end-to-end part on the tree.
Speed figures are not asserted beyond "positive and finite" (the machine is
shared); structure, units and targets' bookkeeping are.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench.common
from bench import __main__ as runner

ROOT = Path(__file__).resolve().parents[2]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run_suite(tmp_path: Path, *parts: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench", *parts, "--quick", "--results-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Summary (quick run" in proc.stdout
    return json.loads((tmp_path / "summary.json").read_text())


def load(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / f"{name}.json").read_text())


def positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.unit
def test_quick_in_process_parts(tmp_path):
    summary = run_suite(tmp_path, "engine", "accuracy", "overlay")
    assert summary["quick"] is True
    assert summary["ran"] == ["engine", "accuracy", "overlay"]
    machine = summary["machine"]
    assert machine["nproc"] == os.cpu_count()
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))
    assert machine["uname"].startswith("Linux ")
    assert machine["cpu"] and machine["date"].endswith("Z")
    for name in ("engine", "accuracy", "overlay"):
        part = summary["parts"][name]
        assert part["status"] == "ok", part
        assert part["returncode"] == 0 and part["seconds"] > 0
        assert Path(part["json"]).parent == tmp_path

    engine = load(tmp_path, "engine")
    assert engine["packets"] == 200_000 and engine["original_slice"] == 5_000
    for n, keys in ((1, ["src"]), (3, ["src", "src_dst", "dport"])):
        c = engine[f"counters_{n}"]
        assert c["keys"] == keys and c["target_ratio"] == 20
        assert all(positive(v) for v in c["engine_pps"] + c["original_pps"])
        assert c["meets_target"] == (c["ratio_median"] >= 20)
        assert summary["parts"]["engine"]["targets"][
            f"engine >= 20x original ({n} counter(s))"] == c["meets_target"]

    acc = load(tmp_path, "accuracy")
    assert acc["memories_kb"] == [128, 512] and acc["reference"] is False
    seen = {(r["trace"], r["memory_kb"], r["variant"]) for r in acc["rows"]}
    for trace in ("zipf1.0", "zipf1.1", "zipf1.3", "elephants+mice"):
        for kb in (128, 512):
            assert (trace, kb, "ours") in seen
    for r in acc["rows"]:
        assert 0 <= r["hh_f1"] <= 1 and r["wmre"] >= 0 and r["are_all"] >= 0
        assert r["flows"] >= 10_000 and positive(r["pps"])
        assert r["under"] == 0  # the engine never under-estimates a flow
        assert r["state"] <= r["memory_kb"] * 1024  # every byte in the budget
    verdicts = {t["verdict"] for t in acc["targets"]}
    assert verdicts <= {"MET", "NOT MET", "NOT JUDGED"}
    judged_without_ref = {t["target"].split(",")[0] for t in acc["targets"]
                          if t["verdict"] != "NOT JUDGED"}
    assert judged_without_ref == {"flows under-estimated", "update",
                                  "top sources from five_tuple vs src task"}
    for p in acc["partial"].values():
        assert 0 <= p["five_tuple_f1"] <= 1 and 0 <= p["src_f1"] <= 1

    ov = load(tmp_path, "overlay_scale")
    assert [r["n"] for r in ov["rows"]] == [10, 100]
    for r in ov["rows"]:
        assert r["ctl_msgs"] == 1 and r["star_ctl_msgs"] == 2 * r["n"]
        assert positive(r["config_s"]) and positive(r["result_s"]) and r["missing"] == 0
    figures = summary["parts"]["overlay"]["figures"]
    assert figures["n100_ctl_msgs"] == 1 and figures["n100_star_ctl_msgs"] == 200


@pytest.mark.unit
def test_runner_lists_parts_and_refuses_unknown(capsys):
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("engine", "accuracy", "overlay", "monitor", "e2e", "bandwidth"):
        assert f"\n{name}" in "\n" + out
    with pytest.raises(SystemExit) as exc:
        runner.main(["nosuchpart"])
    assert exc.value.code == 2
    assert "unknown part(s) nosuchpart" in capsys.readouterr().err


@pytest.mark.unit
def test_part_commands_keep_default_results_dir_plain(tmp_path):
    part = runner.BY_NAME["overlay"]
    default = part.argv(False, bench.common.RESULTS_DIR)
    assert default[1:3] == ["-m", "bench.overlay_scale"]
    assert default[-2:] == ["--json", str(bench.common.RESULTS_DIR / "overlay_scale.json")]
    other = part.argv(True, tmp_path)
    assert other[1] == "-c" and other[3:5] == [str(tmp_path), "bench.overlay_scale"]
    # the runner holds the Mininet lock itself around the end-to-end part
    assert runner.BY_NAME["e2e"].argv(False, bench.common.RESULTS_DIR)[-1] == "--no-lock"


@pytest.mark.netns
@root_only
def test_quick_monitor_part(tmp_path):
    summary = run_suite(tmp_path, "monitor", timeout=400)
    assert summary["parts"]["monitor"]["status"] == "ok"
    mon = load(tmp_path, "monitor")
    assert set(mon["throughput"]) == {"C accept-only", "accept-only", "1 counter", "3 counters",
                                      "3 elastic counters", "3 counters, 2 queues",
                                      "nflog 3 counters", "ebpf 3 counters"}
    assert positive(mon["ratios"]["elastic_capacity_vs_accept"])
    for name, runs in mon["throughput"].items():   # every config ends with a "max" step
        assert all(steps[-1]["offered_pps"] == "max" and steps[-1]["matched"] > 0
                   for steps in runs), name
    for mode in ("off", "C accept-only", "3 counters", "nflog 3 counters", "ebpf 3 counters"):
        for clock in ("kernel", "user"):
            lat = mon["latency"][mode][clock]
            assert positive(lat["median_us"]) and lat["p99_us"] >= lat["median_us"]
            assert lat["n"] >= 90   # echo pairs with both replies (100 sent in quick mode)
    assert mon["latency"]["off"]["kernel"]["added_median_us"] == 0
    # the network path alone is shorter than what the sending process sees
    assert mon["latency"]["off"]["kernel"]["median_us"] < mon["latency"]["off"]["user"]["median_us"]
    assert set(summary["parts"]["monitor"]["targets"]) == set(mon["targets"])


@pytest.mark.mininet
@root_only
def test_quick_e2e_part(tmp_path, monkeypatch, mininet_teardown):
    from bench import e2e

    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    assert e2e.main(["--repeat", "2", "--no-lock", "--rest-port", "18931",
                     "--controller-port", "16931"]) == 0
    data = load(tmp_path, "e2e")
    assert data["repetitions"] == 2 and len(data["runs"]) == 2
    assert data["agents"] == [f"h{i}" for i in range(1, 10)]
    for r in data["runs"]:
        assert r["covered"] == 9
        assert r["wait_interval_end_s"] > 0 and r["aggregation_s"] >= 0
        assert r["intervals"] == pytest.approx(r["latency_s"] / 2.0)
    assert data["meets_target"] == (data["median_intervals"] <= 2.0)
