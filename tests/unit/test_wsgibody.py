"""Request bodies are read into memory at the servers' boundary, never into a
temporary file (WebOb's default over 10 KB, closed only at garbage collection)."""

from __future__ import annotations

import io

import pytest
import webob

from measure_common.wsgibody import BodyTooLarge, hold_in_memory

pytestmark = pytest.mark.unit


class _Stream:
    """A server's ``wsgi.input``: read only, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def _request(body: bytes, length: bool = True, method: str = "POST") -> webob.Request:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/agent/v1/reports",
               "SERVER_NAME": "h1", "SERVER_PORT": "8000", "wsgi.url_scheme": "http",
               "wsgi.input": _Stream(body)}
    if length:
        environ["CONTENT_LENGTH"] = str(len(body))
    return webob.Request(environ)


def test_webob_alone_buffers_a_large_body_in_a_temporary_file():
    req = _request(b"x" * 60_000)
    assert req.body == b"x" * 60_000
    assert not isinstance(req.body_file_raw, io.BytesIO)  # the file this module avoids
    req.body_file_raw.close()


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no length"])
def test_a_large_body_is_held_in_memory(length):
    body = b'{"task_id": "1"}' + b" " * 60_000
    req = _request(body, length)
    hold_in_memory(req, 16 * 1024 * 1024)
    assert isinstance(req.body_file_raw, io.BytesIO)
    assert req.body == body and req.content_length == len(body)


def test_an_undeclared_body_over_the_limit_is_refused_and_a_get_is_not_read():
    with pytest.raises(BodyTooLarge, match="more than 1000 bytes"):
        hold_in_memory(_request(b"x" * 1001, length=False), 1000)
    get = _request(b"", length=False, method="GET")
    hold_in_memory(get, 1000)
    assert get.body == b""
