"""The heavy-hitter and port-scan examples on a fat-tree (k=4, 16 hosts).

A fat-tree has many equal-cost paths and loops: this proves forwarding,
topology-following overlay and the examples on more than a tree. The tests
are the tree module's, run against this module's network.
"""

from __future__ import annotations

import pytest

from tests.mininet.test_examples_mininet import (  # noqa: F401 - tests collected here too
    launch,
    test_heavy_hitter_per_host_after_pingall,
    test_heavy_hitter_through_the_controller,
    test_port_scan_per_host_polling,
    test_port_scan_through_controller_events,
)

pytestmark = pytest.mark.mininet


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    yield from launch(tmp_path_factory, topo="fattree", k=4)
