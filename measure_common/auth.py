"""Authentication for the controller REST API and the agent API.

Two mechanisms, both built only on the standard library:

1. **Bearer token (people and scripts -> controller).** The controller
   generates a token on first start (:func:`load_or_create_token`), stores it
   in a file of mode 0600 inside a directory of mode 0700, and prints it once.
   Every state-changing call (and every read unless configured open) carries
   ``Authorization: Bearer <token>``; :func:`check_bearer` compares in
   constant time.

2. **Signed requests (controller / overlay parent -> agent, agent ->
   controller, agent -> agent).** The controller holds a master secret (same
   creation rules, :func:`load_or_create_secret`); each agent holds only its
   own key, :func:`agent_key` = HMAC(master, name), so the controller needs no
   per-agent table and an agent's key speaks only for that agent. Two agents
   talk with a pair key (:func:`pair_key`) the controller hands to the sender
   wrapped under the sender's key, with a ticket (the same pair key wrapped
   under the receiver's key) that the receiver unwraps: see
   :func:`peer_credential`. A request is signed with HMAC-SHA256 over::

       METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n SENDER \\n RECEIVER \\n hex(sha256(BODY))

   carried in ``X-Measure-Timestamp`` (integer Unix seconds),
   ``X-Measure-Nonce`` (32 hex digits), ``X-Measure-Sender`` (``controller`` or
   an agent's name), ``X-Measure-Ticket`` (agent to agent only) and
   ``X-Measure-Signature`` (64 hex digits). The receiver puts *its own*
   identity in the string, so a request replayed to another receiver fails.
   :class:`Verifier` accepts a request only if the signature matches, the
   timestamp is within ``max_skew`` seconds of its clock, and
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

import base64
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
SENDER_HEADER = "X-Measure-Sender"
TICKET_HEADER = "X-Measure-Ticket"
SIGNED_HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, SENDER_HEADER)
#: the controller's identity in signed requests (agent names are never this)
CONTROLLER = "controller"

#: A WWW-Authenticate value for 401 replies of the controller.
BEARER_CHALLENGE = 'Bearer realm="measure"'

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,256}")
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_TS_RE = re.compile(r"[0-9]{1,12}")
_SENDER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TICKET_RE = re.compile(r"[0-9a-f]{64}")


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

def _canonical(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes,
               sender: str, receiver: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    text = "\n".join((method.upper(), path_qs, timestamp, nonce, sender, receiver, digest))
    return text.encode("utf-8", "surrogateescape")


def _signature(secret: bytes, canonical: bytes) -> str:
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def agent_key(master: bytes, name: str) -> bytes:
    """The agent ``name``'s own key: it signs and verifies only for that agent.

    43 characters of urlsafe base64, like a secret file's content, so a key
    file (:func:`write_agent_key`) loads with :func:`load_or_create_secret`."""
    digest = hmac.new(master, b"measure agent key\n" + name.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def write_agent_key(path: str, master: bytes, name: str) -> None:
    """Write agent ``name``'s key file (mode 0600, replaced atomically)."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(agent_key(master, name) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pair_key(master: bytes, a: str, b: str) -> bytes:
    """The key two agents share (the same for both directions)."""
    x, y = sorted((a, b))
    return hmac.new(master, f"measure pair key\n{x}\n{y}".encode(),
                    hashlib.sha256).digest()


def _pad(holder_key: bytes, other: str) -> bytes:
    return hmac.new(holder_key, b"measure wrap\n" + other.encode(), hashlib.sha256).digest()


def wrap(holder_key: bytes, other: str, key: bytes) -> str:
    """``key`` (32 bytes) readable only with ``holder_key``, for talking to ``other``."""
    return bytes(a ^ b for a, b in zip(key, _pad(holder_key, other), strict=True)).hex()


def unwrap(holder_key: bytes, other: str, wrapped: str) -> bytes:
    """The inverse of :func:`wrap` (a wrong key gives a wrong key, never an error)."""
    data = bytes.fromhex(wrapped)
    return bytes(a ^ b for a, b in zip(data, _pad(holder_key, other), strict=True))


def peer_credential(master: bytes, sender: str, receiver: str) -> dict[str, str]:
    """What the controller gives ``sender`` so it may sign requests to ``receiver``:
    ``key`` (the pair key wrapped under the sender's key) and ``ticket`` (wrapped
    under the receiver's key; sent as ``X-Measure-Ticket``)."""
    key = pair_key(master, sender, receiver)
    return {"key": wrap(agent_key(master, sender), receiver, key),
            "ticket": wrap(agent_key(master, receiver), sender, key)}


def sign_request(secret: bytes, method: str, path_qs: str, body: bytes,
                 now: float | None = None, *, sender: str, receiver: str,
                 ticket: str | None = None) -> dict[str, str]:
    """Headers that authenticate one request (a fresh nonce every call)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    sig = _signature(secret, _canonical(method, path_qs, timestamp, nonce, body or b"",
                                        sender, receiver))
    headers = {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: sig,
               SENDER_HEADER: sender}
    if ticket is not None:
        headers[TICKET_HEADER] = ticket
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for key, val in headers.items():
            if key.lower() == lname:
                return val
    return value


#: how a receiver finds the key of a sender: (sender, ticket or None) -> key
KeyLookup = Callable[[str, "str | None"], bytes]


def controller_keys(master: bytes) -> KeyLookup:
    """The controller's lookup: an agent's key from its name (no ticket taken)."""
    def key(sender: str, ticket: str | None) -> bytes:
        if sender == CONTROLLER or ticket is not None:
            raise AuthError(401, f"sender {sender!r} cannot sign requests to the controller")
        return agent_key(master, sender)
    return key


def agent_keys(own_key: bytes) -> KeyLookup:
    """An agent's lookup: its own key for the controller, a ticket's pair key for peers."""
    def key(sender: str, ticket: str | None) -> bytes:
        if sender == CONTROLLER:
            return own_key
        if ticket is None:
            raise AuthError(401, f"missing {TICKET_HEADER} header (a request from agent "
                                 f"{sender} needs the controller's ticket)")
        return unwrap(own_key, sender, ticket)
    return key


class Verifier:
    """Checks signed requests to ``receiver``; remembers nonces for the skew window.

    ``keys`` maps the claimed sender (and its ticket) to the key that must have
    signed; ``verify`` returns the authenticated sender's name."""

    def __init__(self, keys: KeyLookup, receiver: str, max_skew: float = 30,
                 now: Callable[[], float] = time.time, max_nonces: int = 100_000) -> None:
        self.keys = keys
        self.receiver = receiver
        self.max_skew = max_skew
        self.now = now
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    @classmethod
    def for_controller(cls, master: bytes, **kw: Any) -> Verifier:
        if not master:
            raise ValueError("empty secret")
        return cls(controller_keys(master), CONTROLLER, **kw)

    @classmethod
    def for_agent(cls, name: str, own_key: bytes, **kw: Any) -> Verifier:
        if not own_key:
            raise ValueError("empty key")
        return cls(agent_keys(own_key), name, **kw)

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, method: str, path_qs: str, body: bytes | Callable[[], bytes],
               headers: Mapping[str, str]) -> str:
        """Return the sender if the request is authentic, fresh and meant for this
        receiver, else raise AuthError.

        ``body`` may be a callable: it is called (the body read) only once the
        headers are well-formed and the timestamp is fresh."""
        values = {}
        for name in SIGNED_HEADERS:
            value = _header(headers, name)
            if not value:
                raise AuthError(401, f"missing {name} header (request must be signed)")
            values[name] = value.strip()
        timestamp, nonce, sig, sender = (values[n] for n in SIGNED_HEADERS)
        ticket = _header(headers, TICKET_HEADER)
        ticket = ticket.strip() if ticket else None
        if not _TS_RE.fullmatch(timestamp):
            raise AuthError(401, f"bad {TIMESTAMP_HEADER} header")
        if not _NONCE_RE.fullmatch(nonce):
            raise AuthError(401, f"bad {NONCE_HEADER} header")
        if not _SIG_RE.fullmatch(sig):
            raise AuthError(401, f"bad {SIGNATURE_HEADER} header")
        if not _SENDER_RE.fullmatch(sender):
            raise AuthError(401, f"bad {SENDER_HEADER} header")
        if ticket is not None and not _TICKET_RE.fullmatch(ticket):
            raise AuthError(401, f"bad {TICKET_HEADER} header")
        now = self.now()
        ts = int(timestamp)
        # headers first: a request that cannot be fresh is refused before its body is read
        if abs(now - ts) > self.max_skew:
            raise AuthError(401, f"stale request timestamp (more than {self.max_skew:g}s "
                                 f"from the receiver's clock)")
        key = self.keys(sender, ticket)
        data = body() if callable(body) else body
        expected = _signature(key, _canonical(method, path_qs, timestamp, nonce, data or b"",
                                              sender, self.receiver))
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
        return sender

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.pop(nonce, None)

    def verify_webob(self, request: Any) -> str:
        """Verify a ``webob.Request`` (reads its body; callers limit its size first)."""
        return self.verify(request.method, request.path_qs, lambda: request.body,
                           request.headers)


class HmacAuth:
    """``requests`` auth hook signing as ``sender`` to one ``receiver``:
    ``requests.post(url, json=b, auth=HmacAuth(key, sender="controller", receiver="h2"))``."""

    def __init__(self, secret: bytes, now: Callable[[], float] | None = None, *,
                 sender: str, receiver: str, ticket: str | None = None) -> None:
        self.secret = secret
        self.now = now
        self.sender = sender
        self.receiver = receiver
        self.ticket = ticket

    def __call__(self, request: Any) -> Any:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes | bytearray):
            raise TypeError("HmacAuth needs an in-memory body (not a stream or generator)")
        now = self.now() if self.now else None
        request.headers.update(sign_request(self.secret, request.method, request.path_url,
                                            bytes(body), now=now, sender=self.sender,
                                            receiver=self.receiver, ticket=self.ticket))
        return request


def to_agent(master: bytes, name: str) -> HmacAuth:
    """The controller's signer for requests to agent ``name``."""
    return HmacAuth(agent_key(master, name), sender=CONTROLLER, receiver=name)


def as_agent(master: bytes, name: str) -> HmacAuth:
    """Agent ``name``'s signer for requests to the controller."""
    return HmacAuth(agent_key(master, name), sender=name, receiver=CONTROLLER)


class RoutedAuth:
    """``requests`` auth hook choosing the signer by URL: ``lookup(url)`` gives an
    :class:`HmacAuth` for the receiver at that URL, or None (sent unsigned)."""

    def __init__(self, lookup: Callable[[str], HmacAuth | None]) -> None:
        self.lookup = lookup

    def __call__(self, request: Any) -> Any:
        signer = self.lookup(request.url)
        return request if signer is None else signer(request)


def check_request(method: str, path_qs: str, body: bytes | Callable[[], bytes],
                  headers: Mapping[str, str], token: str | None = None,
                  verifier: Verifier | None = None) -> tuple[str, str | None]:
    """Accept a bearer token or a signature, whichever the request carries.

    For the controller, which serves people (token) and agents (their keys).
    Returns ``("bearer", None)`` or ``("signature", sender)``; raises AuthError.
    """
    authorization = _header(headers, "Authorization")
    if authorization and token is not None:
        check_bearer(authorization, token)
        return "bearer", None
    if verifier is not None and (_header(headers, SIGNATURE_HEADER) or token is None):
        return "signature", verifier.verify(method, path_qs, body, headers)
    if token is not None:
        check_bearer(authorization, token)
        return "bearer", None
    raise AuthError(401, "no credential accepted here")
