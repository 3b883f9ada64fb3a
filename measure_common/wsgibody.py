"""Request bodies held in memory, never in a temporary file.

WebOb buffers a body longer than ``request_body_tempfile_limit`` (10 KB) in
an anonymous temporary file the first time it is read (``req.body``), and
that file is closed only when the request is garbage-collected; for these
servers that waits for the cyclic collector, so an overlay root receiving
its children's reports (tens of KB each, a dozen every 2 s) held 86 of them
open at one sample, and the soak saw the parents' open files grow by 25-77%
and swing by half between samples. Both servers bound their bodies (16 MiB at most) and parse them
whole anyway, so the body is read into memory once, at the boundary.
"""

from __future__ import annotations

from typing import Any

_WITH_BODY = ("POST", "PUT", "DELETE", "PATCH")


class BodyTooLarge(ValueError):
    """A body without ``Content-Length`` that is longer than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body too large: more than {limit} bytes")
        self.limit = limit


def hold_in_memory(req: Any, limit: int) -> None:
    """Read ``req``'s body (a ``webob.Request``) into memory as ``req.body``: its
    ``Content-Length`` bytes (the caller checked them against ``limit``), or, without
    one, up to ``limit`` bytes (``BodyTooLarge`` beyond)."""
    length = req.content_length
    if length is None and req.method not in _WITH_BODY:
        return
    if length == 0:
        return
    data = req.body_file_raw.read(limit + 1 if length is None else length)
    if length is None and len(data) > limit:
        raise BodyTooLarge(limit)
    req.body = data
