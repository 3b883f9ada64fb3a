"""What the shipped Grafana dashboards (``docs/grafana/*.json``) ask Prometheus for.

There is no Grafana server here: tests check the dashboards' PromQL names
against what the controller's ``/metrics`` exports.
"""

from __future__ import annotations

import glob
import json
import os
import re

from testing.netns import ROOT


def grafana_metrics() -> dict[str, set[str]]:
    """Dashboard file -> metric names used in its PromQL expressions."""
    out = {}
    functions = {"sum", "rate", "increase", "histogram_quantile", "topk", "time"}
    for path in sorted(glob.glob(os.path.join(ROOT, "docs/grafana/*.json"))):
        with open(path) as f:
            board = json.load(f)
        names = set()
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", target["expr"])
                expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # selectors, ranges
                names |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - functions
        out[os.path.basename(path)] = names
    return out
