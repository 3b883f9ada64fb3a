"""The one error of the bandwidth API: an HTTP status and a message to report."""

from __future__ import annotations


class BandwidthError(Exception):
    """A failure with the HTTP status and message to report."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
