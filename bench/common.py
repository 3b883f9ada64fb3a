"""Helpers shared by the benchmarks: repetition, median and spread, tables, JSON results.

The machines are shared and noisy, so every figure that matters is the median
of several repetitions with its spread (min..max) printed next to it, and is
compared with a baseline measured in the same run. Results are printed as
plain-text tables and written to ``bench/results/<name>.json`` together with
the date and a description of the machine.

Usage::

    from bench.common import base_parser, repeat, summary, print_table, write_json
    times = repeat(lambda: work(), n=3)      # seconds per repetition
    med, lo, hi = summary(times)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def base_parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the flags every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="short run (smaller inputs, fewer repetitions) for development")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions per measurement (default 3, 1 with --quick)")
    parser.add_argument("--no-json", action="store_true",
                        help=f"do not write the JSON result under {RESULTS_DIR}")
    return parser


def mininet_parser(description: str, interval: float) -> argparse.ArgumentParser:
    """``base_parser`` plus what every benchmark on its own Mininet network takes."""
    parser = base_parser(description)
    parser.add_argument("--interval", type=float, default=interval,
                        help=f"report interval of the task, seconds (default {interval:g})")
    parser.add_argument("--rest-port", type=int, default=8080)
    parser.add_argument("--controller-port", type=int, default=6653)
    parser.add_argument("--no-lock", action="store_true",
                        help="the caller already holds /tmp/endhost-measure-mininet.lock")
    return parser


def repeat(fn: Callable[[], Any], n: int = 3, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of ``n`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, n)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of a non-empty sequence."""
    return statistics.median(values), min(values), max(values)


def spread_text(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min..max)`` formatted with ``fmt``."""
    med, lo, hi = summary(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}..{fmt.format(hi)})"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of an empty sequence")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def machine_info() -> dict[str, Any]:
    """Date, CPU, core count, Python and numpy versions, load average."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover
        numpy_version = None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
        "kernel": platform.release(), "python": platform.python_version(),
        "numpy": numpy_version,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numeric-looking columns."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                               for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(title, headers, rows), flush=True)
    print(flush=True)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace(".", "").replace("%", "").replace("x", "")
    return t.lstrip("-").split(" ")[0].isdigit()


def write_json(name: str, data: dict[str, Any], enabled: bool = True) -> Path | None:
    """Write ``data`` plus machine info to ``bench/results/<name>.json``; return the path."""
    if not enabled:
        return None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **data}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"results written to {path}", flush=True)
    return path
