"""The HTTP client reuses connections and keeps a bounded number of them."""

from __future__ import annotations

import http.server
import threading
from typing import Any

import pytest

from measure_common.httpclient import POOL_PEERS, POOL_PER_PEER, HttpClient

pytestmark = pytest.mark.unit


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set = set()

    def setup(self) -> None:
        super().setup()
        _Handler.connections.add(self.client_address)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_sequential_calls_reuse_one_connection_and_pools_are_bounded():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = HttpClient()
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        for _ in range(50):
            assert client.request("GET", url) == (200, {"ok": True})
        assert len(_Handler.connections) == 1  # one keep-alive connection, reused
        adapter: Any = client._session.get_adapter(url)  # an HTTPAdapter: its pool sizes
        assert (adapter._pool_connections, adapter._pool_maxsize) == (POOL_PEERS, POOL_PER_PEER)
        assert adapter.poolmanager.pools._maxsize == POOL_PEERS
    finally:
        server.shutdown()
        server.server_close()
