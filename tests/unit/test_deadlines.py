"""The deadline margin table of ``testing.deadlines`` (printed by bench e2e and the
operator-view Mininet test) from agents' overlay views."""

from __future__ import annotations

import pytest

from testing.deadlines import MARGIN_HEADER, margin_rows

pytestmark = pytest.mark.unit


def test_a_row_per_parent_and_child_height_and_one_per_leaf():
    views: dict[str, dict] = {
        "h10": {"deadline_margin_s": {"reports": 0},
                "report_timing_s": {"reports": 3, "post_at": {"p50": 0.61, "max": 1.2}}},
        "h1": {"deadline_margin_s": {
                   "reports": 3, "min": -0.5, "p5": -0.5, "p50": 0.4, "late": 1,
                   "by_height": {"0": {"reports": 2, "min": -0.5, "p5": -0.5, "p50": 0.4,
                                       "late": 1},
                                 "1": {"reports": 1, "min": 1.25, "p5": 1.25, "p50": 1.25,
                                       "late": 0}}},
               "report_timing_s": {"reports": 0}},
        "h2": {"error": "connection refused"},
    }
    rows = margin_rows(views)
    assert all(len(r) == len(MARGIN_HEADER) for r in rows)
    assert rows == [["h1", "0", "2", "1", "-0.50", "-0.50", "0.40", "-"],
                    ["h1", "1", "1", "0", "1.25", "1.25", "1.25", "-"],
                    ["h2", "-", "0", "-", "-", "-", "-", "-"],
                    ["h10", "-", "0", "-", "-", "-", "-", "0.61 / 1.20"]]
