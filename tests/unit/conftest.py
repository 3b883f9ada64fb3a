"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from testing.harness import Harness, serving


@pytest.fixture
def h(tmp_path):
    """The controller's REST app and service in process (``testing.harness.Harness``)."""
    return Harness(str(tmp_path / "state"))


@pytest.fixture
def controller(tmp_path):
    """The real REST app and service on a loopback port (fake agents behind it)."""
    from ryu_app.auth_config import AuthConfig

    harness = Harness(str(tmp_path / "state"), auth=AuthConfig(token="k" * 40))
    token = tmp_path / "token"
    token.write_text("k" * 40 + "\n")
    with serving(harness.wsgi) as url:
        yield harness, url, str(token)
