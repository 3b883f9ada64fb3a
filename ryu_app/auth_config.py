"""The controller's credentials: which REST calls need a token, which a signature.

``AuthConfig`` is what the REST layer checks (``None`` = that mechanism is
off); ``auth_from_env`` builds it from the token and secret files
docs/security.md describes, creating them on first start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from measure_common.auth import Verifier, load_or_create_secret, load_or_create_token
from measure_common.settings import get_setting

log = logging.getLogger(__name__)


@dataclass
class AuthConfig:
    """Credentials the REST layer checks (None = that mechanism is off)."""

    token: str | None = None
    secret: bytes | None = None
    reads_open: bool = False
    verifier: Verifier | None = None

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.secret is not None


def auth_from_env(state_dir: str) -> AuthConfig:
    """Token and secret files as docs/security.md describes (MEASURE_AUTH=off disables)."""
    if not get_setting("MEASURE_AUTH"):
        return AuthConfig()
    token_path = get_setting("MEASURE_TOKEN_FILE", state_dir=state_dir)
    secret_path = get_setting("MEASURE_SECRET_FILE", state_dir=state_dir)
    token, created = load_or_create_token(token_path)
    if created:
        # the token itself never goes to the log (logs are read by more people than 0600 files)
        log.warning("created the controller token in %s (mode 0600); send 'Authorization: "
                    "Bearer <the file's content>'", token_path)
    secret, _ = load_or_create_secret(secret_path)
    reads_open = get_setting("MEASURE_READS_OPEN")
    return AuthConfig(token=token, secret=secret, reads_open=reads_open,
                      verifier=Verifier.for_controller(secret))
