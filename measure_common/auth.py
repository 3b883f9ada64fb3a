"""Authentication for the controller REST API and the agent API.

Two mechanisms, both built only on the standard library:

1. **Bearer token (people and scripts -> controller).** The controller
   generates a token on first start (:func:`load_or_create_token`), stores it
   in a file of mode 0600 inside a directory of mode 0700, and prints it once.
   Every state-changing call (and every read unless configured open) carries
   ``Authorization: Bearer <token>``; :func:`check_bearer` compares in
   constant time.

2. **Signed requests (controller / overlay parent -> agent, agent ->
   controller).** All processes of one deployment share a secret file (same
   creation rules, :func:`load_or_create_secret`). A request is signed with
   HMAC-SHA256 over a canonical string::

       METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n hex(sha256(BODY))

   carried in ``X-Measure-Timestamp`` (integer Unix seconds),
   ``X-Measure-Nonce`` (32 hex digits) and ``X-Measure-Signature`` (64 hex
   digits). :class:`Verifier` accepts a request only if the signature
   matches, the timestamp is within ``max_skew`` seconds of its clock, and
   the nonce has not been seen inside that window. A nonce is remembered
   until its timestamp falls out of the window (from then on the timestamp
   check alone rejects the replay), so the cache is bounded by the request
   rate times the window, with a hard cap (``max_nonces``) past which new
   requests get 429 rather than the cache growing.

The path that is signed is the path *as sent on the wire* (percent-encoded,
with the query string): ``PreparedRequest.path_url`` on the client,
``webob.Request.path_qs`` on the server. :class:`HmacAuth` plugs into
``requests`` (``requests.post(url, json=..., auth=HmacAuth(secret))``).

Every failure raises :class:`AuthError` carrying an HTTP status (401 for a
missing or bad credential, 403 for a credential that is valid but not
allowed, 429 for a full nonce cache) and a message safe to put in a JSON
error body: it never echoes the presented credential.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

TIMESTAMP_HEADER = "X-Measure-Timestamp"
NONCE_HEADER = "X-Measure-Nonce"
SIGNATURE_HEADER = "X-Measure-Signature"
SIGNED_HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

#: Default locations; the controller and agent take flags to override them.
DEFAULT_STATE_DIR = "/var/lib/endhost-measure"
DEFAULT_TOKEN_PATH = os.path.join(DEFAULT_STATE_DIR, "controller.token")
DEFAULT_SECRET_PATH = os.path.join(DEFAULT_STATE_DIR, "agent.secret")

#: A WWW-Authenticate value for 401 replies of the controller.
BEARER_CHALLENGE = 'Bearer realm="measure"'

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,256}")
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_TS_RE = re.compile(r"[0-9]{1,12}")


class AuthError(Exception):
    """A refused request: ``status`` is the HTTP status, ``message`` the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.message!r})"


class CredentialFileError(Exception):
    """A token/secret file exists but is unsafe or unreadable; never silently replaced."""


# ---------------------------------------------------------------- files

def _check_file(path: str) -> None:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CredentialFileError(f"{path}: not a regular file")
    if st.st_uid not in (os.geteuid(), 0):
        # another user's file: they could read (or have planted) the credential
        raise CredentialFileError(
            f"{path}: owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}; "
            f"run: chown {os.geteuid()} {path}")
    if st.st_mode & 0o077:
        raise CredentialFileError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} is readable by others; "
            f"run: chmod 600 {path}")


def read_credential(path: str) -> str:
    """The credential in ``path``: a regular file, 0600 or stricter, holding a valid value."""
    _check_file(path)
    with open(path, encoding="ascii", errors="replace") as f:
        value = f.read(1024).strip()
    if not _TOKEN_RE.fullmatch(value):
        raise CredentialFileError(
            f"{path}: does not hold a valid credential (32-256 characters of "
            f"A-Z a-z 0-9 _ -); fix or delete the file")
    return value


def _load_or_create(path: str) -> tuple[str, bool]:
    """Read the credential at ``path``, or create it atomically (0600, dir 0700)."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        return read_credential(path), False
    value = secrets.token_urlsafe(32)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        try:
            # link() never replaces: of two concurrent creators exactly one wins.
            os.link(tmp, path)
        except FileExistsError:
            return read_credential(path), False
    finally:
        os.unlink(tmp)
    return value, True


def load_or_create_token(path: str) -> tuple[str, bool]:
    """Return ``(token, created)`` for the controller's bearer token file.

    Creates a new 32-byte urlsafe token if the file is missing. Raises
    :class:`CredentialFileError` if the file is readable by group/others or
    holds no valid token (an existing file is never overwritten).
    """
    return _load_or_create(path)


def load_or_create_secret(path: str) -> tuple[bytes, bool]:
    """Return ``(secret, created)`` for the shared HMAC secret file (same rules)."""
    value, created = _load_or_create(path)
    return value.encode("ascii"), created


# ---------------------------------------------------------------- bearer

def bearer_header(token: str) -> dict[str, str]:
    """The header a client sends: ``{"Authorization": "Bearer <token>"}``."""
    return {"Authorization": f"Bearer {token}"}


def check_bearer(authorization_header: str | None, token: str) -> None:
    """Accept ``Bearer <token>`` (scheme case-insensitive) or raise AuthError(401)."""
    if not authorization_header:
        raise AuthError(401, "missing bearer token (send 'Authorization: Bearer <token>')")
    scheme, _, presented = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthError(401, "authorization scheme must be Bearer")
    if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"),
                               token.encode("utf-8")):
        raise AuthError(401, "invalid bearer token")


# ---------------------------------------------------------------- signing

def _canonical(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    text = "\n".join((method.upper(), path_qs, timestamp, nonce, digest))
    return text.encode("utf-8", "surrogateescape")


def _signature(secret: bytes, canonical: bytes) -> str:
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def sign_request(secret: bytes, method: str, path_qs: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    """Headers that authenticate one request (a fresh nonce every call)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    sig = _signature(secret, _canonical(method, path_qs, timestamp, nonce, body or b""))
    return {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: sig}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for key, val in headers.items():
            if key.lower() == lname:
                return val
    return value


class Verifier:
    """Checks signed requests; remembers nonces for the skew window (no replay)."""

    def __init__(self, secret: bytes, max_skew: float = 30,
                 now: Callable[[], float] = time.time, max_nonces: int = 100_000) -> None:
        if not secret:
            raise ValueError("empty secret")
        self.secret = secret
        self.max_skew = max_skew
        self.now = now
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, method: str, path_qs: str, body: bytes | Callable[[], bytes],
               headers: Mapping[str, str]) -> None:
        """Return if the request is authentic and fresh, else raise AuthError.

        ``body`` may be a callable: it is called (the body read) only once the
        headers are well-formed and the timestamp is fresh."""
        values = {}
        for name in SIGNED_HEADERS:
            value = _header(headers, name)
            if not value:
                raise AuthError(401, f"missing {name} header (request must be signed)")
            values[name] = value.strip()
        timestamp, nonce, sig = (values[n] for n in SIGNED_HEADERS)
        if not _TS_RE.fullmatch(timestamp):
            raise AuthError(401, f"bad {TIMESTAMP_HEADER} header")
        if not _NONCE_RE.fullmatch(nonce):
            raise AuthError(401, f"bad {NONCE_HEADER} header")
        if not _SIG_RE.fullmatch(sig):
            raise AuthError(401, f"bad {SIGNATURE_HEADER} header")
        now = self.now()
        ts = int(timestamp)
        # headers first: a request that cannot be fresh is refused before its body is read
        if abs(now - ts) > self.max_skew:
            raise AuthError(401, f"stale request timestamp (more than {self.max_skew:g}s "
                                 f"from the receiver's clock)")
        data = body() if callable(body) else body
        expected = _signature(self.secret, _canonical(method, path_qs, timestamp, nonce,
                                                      data or b""))
        if not hmac.compare_digest(expected, sig):
            raise AuthError(401, "bad request signature")
        with self._lock:
            self._prune(now)
            if nonce in self._seen:
                raise AuthError(401, "replayed request (nonce already used)")
            if len(self._seen) >= self.max_nonces:
                raise AuthError(429, "too many signed requests in the replay window")
            expiry = ts + self.max_skew
            self._seen[nonce] = expiry
            heapq.heappush(self._expiry, (expiry, nonce))

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.pop(nonce, None)

    def verify_webob(self, request: Any) -> None:
        """Verify a ``webob.Request`` (reads its body; callers limit its size first)."""
        self.verify(request.method, request.path_qs, lambda: request.body, request.headers)


class HmacAuth:
    """``requests`` auth hook: ``requests.post(url, json=b, auth=HmacAuth(secret))``."""

    def __init__(self, secret: bytes, now: Callable[[], float] | None = None) -> None:
        self.secret = secret
        self.now = now

    def __call__(self, request: Any) -> Any:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes | bytearray):
            raise TypeError("HmacAuth needs an in-memory body (not a stream or generator)")
        now = self.now() if self.now else None
        request.headers.update(sign_request(self.secret, request.method, request.path_url,
                                            bytes(body), now=now))
        return request


def check_request(method: str, path_qs: str, body: bytes | Callable[[], bytes],
                  headers: Mapping[str, str], token: str | None = None,
                  verifier: Verifier | None = None) -> str:
    """Accept a bearer token or a signature, whichever the request carries.

    For the controller, which serves people (token) and agents (shared
    secret). Returns ``"bearer"`` or ``"signature"``; raises AuthError(401).
    """
    authorization = _header(headers, "Authorization")
    if authorization and token is not None:
        check_bearer(authorization, token)
        return "bearer"
    if verifier is not None and _header(headers, SIGNATURE_HEADER):
        verifier.verify(method, path_qs, body, headers)
        return "signature"
    if token is not None:
        check_bearer(authorization, token)
        return "bearer"
    if verifier is not None:
        verifier.verify(method, path_qs, body, headers)
        return "signature"
    raise AuthError(401, "no credential accepted here")
