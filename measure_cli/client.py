"""The one client of the controller's REST API (``/measure/v1``).

Used by the ``measure`` CLI, the example scripts and the Mininet launcher,
so that the URL joining, the bearer token, JSON/YAML bodies, timeouts and
the error text are written once. ``request`` returns ``(status, body)``
and never raises for an HTTP status (the launcher and tests look at the
status); ``call`` raises :class:`ApiError` for a status >= 400 or an
unreachable controller (the CLI and the examples print it).

Where the token came from is kept (``token_source``) so that a refused
token is explained: "token from /x/controller.token does not match this
controller" is actionable, "HTTP 401" alone is not.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from measure_common.settings import (
    DEFAULT_STATE_DIR,
    DEFAULTS,
    TOKEN_FILE_NAME,
    given_setting,
)

API_PREFIX = "/measure/v1"
DEFAULT_URL: str = DEFAULTS["MEASURE_URL"]
DEFAULT_TOKEN_FILE = os.path.join(DEFAULT_STATE_DIR, TOKEN_FILE_NAME)


class ApiError(Exception):
    """A refused or failed API call; ``status`` is None when nothing answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def read_token(path: str) -> str:
    """The bearer token stored in ``path`` (whitespace stripped)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise ApiError(f"cannot read token file {path}: {exc.strerror}") from None


def resolve_token(token_file: str | None = None) -> tuple[str | None, str | None]:
    """(token, where it came from): ``token_file``, else ``$MEASURE_TOKEN_FILE``,
    else ``$MEASURE_TOKEN``, else the controller's default token file when readable."""
    path = token_file or given_setting("MEASURE_TOKEN_FILE")
    if path:
        return read_token(path), path
    token = given_setting("MEASURE_TOKEN")
    if token:
        return token.strip(), "$MEASURE_TOKEN"
    if os.access(DEFAULT_TOKEN_FILE, os.R_OK):
        return read_token(DEFAULT_TOKEN_FILE), f"{DEFAULT_TOKEN_FILE} (the default)"
    return None, None


class ControllerClient:
    """JSON (or YAML) in, JSON out, over ``requests``; see the module docstring."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 token_source: str | None = None, timeout: float = 30.0,
                 prefix: str = API_PREFIX) -> None:
        self.url = url.rstrip("/")
        self.token, self.token_source = token, token_source
        self.timeout, self.prefix = timeout, prefix

    @classmethod
    def from_token_file(cls, url: str, token_file: str | None, **kw: Any) -> ControllerClient:
        """A client whose token is found as :func:`resolve_token` says."""
        token, source = resolve_token(token_file)
        return cls(url, token, source, **kw)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: Any = None, yaml_text: str | None = None,
                data: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float | None = None) -> tuple[int, Any]:
        """One call; (HTTP status, parsed JSON or text). Raises ApiError only when
        the controller cannot be reached."""
        hdrs = {**self.headers(), **(headers or {})}
        kw: dict[str, Any] = {"headers": hdrs, "timeout": timeout or self.timeout}
        if yaml_text is not None:
            hdrs["Content-Type"] = "application/yaml"
            kw["data"] = yaml_text.encode()
        elif body is not None:
            kw["json"] = body
        elif data is not None:
            kw["data"] = data
        try:
            resp = requests.request(method, f"{self.url}{self.prefix}{path}", **kw)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the controller at {self.url}: "
                           f"{type(exc).__name__}") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def call(self, method: str, path: str, body: Any = None, yaml_text: str | None = None,
             timeout: float | None = None) -> Any:
        """Like :meth:`request`, but a status >= 400 raises ApiError with the
        controller's message (and, for 401, where the refused token came from)."""
        status, data = self.request(method, path, body, yaml_text, timeout=timeout)
        if status < 400:
            return data
        message = str(data.get("error") if isinstance(data, dict) else data)[:500]
        if status == 401:
            if self.token is None:
                message += ("; no token given: pass --token-file or set MEASURE_TOKEN_FILE "
                            "(measure-net prints the run directory holding controller.token)")
            else:
                message += (f"; the token from {self.token_source or 'the caller'} does not "
                            f"match this controller's ({self.url}): pass --token-file or set "
                            "MEASURE_TOKEN_FILE to its controller.token")
        raise ApiError(f"HTTP {status}: {message}", status)
