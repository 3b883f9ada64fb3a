"""Fixtures shared by the Mininet tests."""

from __future__ import annotations

import pytest

from testing.overlaynet import measure_network


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The overlay network of ``testing.overlaynet``, one per module."""
    with measure_network(tmp_path_factory, "overlay-net") as mn:
        yield mn
