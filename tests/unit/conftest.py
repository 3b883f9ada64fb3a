"""Fixtures shared by the unit tests."""

from __future__ import annotations

import threading
from wsgiref.simple_server import make_server

import pytest

from testing.harness import Harness, QuietHandler


@pytest.fixture
def h(tmp_path):
    """The controller's REST app and service in process (``testing.harness.Harness``)."""
    return Harness(str(tmp_path / "state"))


@pytest.fixture
def controller(tmp_path):
    """The real REST app and service on a loopback port (fake agents behind it)."""
    from ryu_app.auth_config import AuthConfig

    harness = Harness(str(tmp_path / "state"), auth=AuthConfig(token="k" * 40))
    server = make_server("127.0.0.1", 0, harness.wsgi, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("k" * 40 + "\n")
    try:
        yield harness, f"http://127.0.0.1:{server.server_port}", str(token)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
