"""``measure watch`` and the CLI's progress lines, over real HTTP to the controller app."""

from __future__ import annotations

import io
import re
import threading

import pytest

from measure_cli.cli import main
from measure_cli.watch import Progress, watch
from testing.harness import POLICY_FILE as POLICY
from testing.harness import hh_report


def register(harness, *numbers: int) -> None:
    for i in numbers:
        harness.service.register_agent({"name": f"h{i}", "url": f"http://192.168.100.{i}:8000",
                                        "data_ip": f"10.0.0.{i}"})


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: the text, with the carriage returns, line
    erases and cursor-up moves rich.live draws with (cursor show/hide ignored)."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[\?25[lh]|\x1b\[2K|\x1b\[1A|\r|\n|[^\x1b\r\n]+", raw):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token == "\x1b[1A":
            row = max(0, row - 1)
        elif not token.startswith("\x1b"):
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + len(token):]
            col += len(token)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_watch_waits_for_the_first_result_then_redraws_it(controller, capsys):
    harness, url, token = controller
    base = ["--url", url, "--token-file", token]
    register(harness, 1, 5)  # the policy's scope names h5
    assert main([*base, "apply", POLICY]) == 0
    capsys.readouterr()
    assert main([*base, "watch", "1", "--interval", "0.1", "--count", "2"]) == 0
    frames = capsys.readouterr().out.split("\n\nmeasure watch 1")
    assert len(frames) == 2
    for frame in frames:
        assert "waiting for the first result: " in frame
        assert "(HTTP 404: no result yet for task 1 (pending))" in frame
    harness.clock = 1000.0
    harness.service.ingest_report(hh_report("1", ["h1", "h5"], [], 1000.0,
                                          {"10.0.0.1,10.0.0.5": 700}))
    assert main([*base, "watch", "1", "--interval", "0.1", "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("measure watch 1  every 0.1 s  ") == 3
    assert out.count("heavy hitters (>= 50% of 700 bytes)") == 3
    assert out.count("\n10.0.0.1,10.0.0.5  ") == 3
    assert "\x1b" not in out  # not a terminal: plain frames one after the other
    assert main([*base, "watch", "7", "--count", "1"]) == 1
    assert capsys.readouterr().err == "measure: HTTP 404: unknown task 7\n"


def test_watch_on_a_terminal_redraws_each_frame_in_place():
    results = iter([{"task_id": "3", "total": 1}, {"task_id": "3", "total": 22}])
    out = Tty()
    assert watch(lambda: next(results), lambda r: f"total {r['total']}\nline", "measure watch 3",
                 1.0, out, count=2, sleep=lambda s: None, size=lambda: (80, 24)) == 0
    raw = out.getvalue()
    assert raw.startswith("\x1b[?25l") and raw.endswith("\n\x1b[?25h")  # cursor hidden, back
    assert "total 1\nline" in raw  # the first frame was drawn, then erased
    shown = screen(raw)
    assert shown[0].startswith("measure watch 3  every 1 s  ")
    assert shown[1:] == ["", "total 22", "line"]


def test_watch_stops_quietly_on_ctrl_c():
    def fetch():
        raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(fetch, str, "t", 1.0, out) == 0
    assert out.getvalue() == "\n"


def test_result_wait_shows_progress_until_the_first_result(controller, capsys):
    harness, url, token = controller
    base = ["--url", url, "--token-file", token]
    register(harness, 1, 5)  # the policy's scope names h5
    assert main([*base, "apply", POLICY]) == 0
    capsys.readouterr()

    def later():
        harness.clock = 1000.0
        harness.service.ingest_report(hh_report("1", ["h1"], [], 1000.0, {"10.0.0.1,10.0.0.5": 9}))

    timer = threading.Timer(1.6, later)
    timer.start()
    try:
        assert main([*base, "result", "1", "--wait", "20"]) == 0
    finally:
        timer.cancel()
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "waiting for the first result of task 1..."
    assert lines[1].startswith("waiting for the first result of task 1: 1.")
    assert lines[1].endswith(" s of about 20 s (no result yet for task 1 (pending))")
    assert lines[-1].startswith("waiting for the first result of task 1: done after ")
    assert "10.0.0.1,10.0.0.5" in captured.out
    assert main([*base, "result", "1", "--wait", "0.5", "--host", "h9"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "measure: task 1: h9 runs no agent, so it has no result (agents: h1, h5)"
    assert "failed after" in err[-2]


def test_progress_on_a_terminal_rewrites_one_line():
    clock = iter([0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
    out = Tty()
    with Progress("probing h1 -> h5", out, expected=10, clock=lambda: next(clock)) as p:
        p._write(p.line())
    raw = out.getvalue()
    assert raw.startswith("\x1b[?25lprobing h1 -> h5...")
    assert "\r\x1b[2Kprobing h1 -> h5: 0.3 s of about 10 s" in raw
    assert raw.endswith("\n\x1b[?25h")
    assert screen(raw) == ["probing h1 -> h5: done after 0.6 s"]


def test_bw_shows_progress_on_stderr_and_the_table_on_stdout(controller, capsys):
    harness, url, token = controller
    for i in (1, 5):
        harness.service.register_agent({"name": f"h{i}", "url": f"http://192.168.100.{i}:8000",
                                        "data_ip": f"10.0.0.{i}"})
    assert main(["--url", url, "--token-file", token, "bw", "h1", "h5", "--json"]) == 0
    captured = capsys.readouterr()
    assert '"mbit_s": 9.6' in captured.out and "probing" not in captured.out
    err = captured.err.splitlines()
    assert err[0] == "probing the bandwidth h1 -> h5 (slops)..."
    assert err[-1].startswith("probing the bandwidth h1 -> h5 (slops): done after ")


@pytest.mark.parametrize("columns, rows", [(80, 24), (200, 50)])
def test_watch_fits_the_terminal(columns, rows):
    from measure_cli.render import render_result

    flows = [[f"10.0.{i // 250}.{i % 250 + 1},10.0.0.5", 10_000 - i, True] for i in range(64)]
    result = {"task_id": "4", "host": "*", "kind": "flow_size", "age": 0.4,
              "interval_end": 3600.0, "key": "src_dst", "increment": "bytes",
              "packets": 640, "bytes": 600_000, "total": 600_000,
              "covered": [f"h{n}" for n in range(1, 10)], "missing": [],
              "rate": {"seconds": 5.0, "packets": 64, "bytes": 64_000, "pps": 12.8,
                       "bps": 102_400.0, "keys": {}},
              "flow_size": {"histogram": {str(10_000 - i): 1.0 for i in range(64)},
                            "flows": 64.0, "largest": flows}}
    out = Tty()
    watch(lambda: result, lambda r: render_result(r, {"kind": "flow_size"}), "measure watch 4",
          2.0, out, count=1, sleep=lambda s: None, size=lambda: (columns, rows))
    lines = screen(out.getvalue())
    frame = "\n".join(lines)
    assert len(lines) <= rows - 1 and max(map(len, lines)) <= columns
    assert lines[-1].startswith("... ") and "more lines" in lines[-1]
    assert "10.0.0.1,10.0.0.5" in frame  # the largest flow stays on screen
