"""Subject binding: a hub user belongs to the (issuer, subject) of its first login.

The binding is kept in auth_state with a MAC over (hub username, issuer, subject) keyed from
the hub's auth_state encryption key: whoever can write auth_state through the REST API
cannot move a binding to another subject or copy one from another user without that key.
A login whose token names another subject than the user's binding is refused
(:class:`~dna_hub.auth.handlers.LoginRejected`), so a reused username at the identity
provider (an email given to a new person) does not inherit the old user's hub account.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from dna_hub.auth import AUTH_STATE_BINDING, AUTH_STATE_CLAIMS
from dna_hub.auth.handlers import LoginRejected

__all__ = ["bind", "binding_mac", "hub_secrets", "make_binding", "verify_binding"]


def _binding_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"dna-hub subject binding v1", hashlib.sha256).digest()


def binding_mac(secret: bytes, username: str, issuer: str, subject: str) -> str:
    """The hex MAC binding `username` to (`issuer`, `subject`) under `secret`."""
    message = json.dumps([username, issuer, subject], ensure_ascii=True).encode()
    return hmac.new(_binding_key(secret), message, hashlib.sha256).hexdigest()


def make_binding(secret: bytes, username: str, issuer: str, subject: str) -> dict[str, str]:
    """The binding record stored in auth_state."""
    return {"iss": issuer, "sub": subject, "mac": binding_mac(secret, username, issuer, subject)}


def verify_binding(binding: object, secrets: Iterable[bytes], username: str) -> bool:
    """True if `binding` is a record made by `make_binding` for `username` with any secret."""
    if not isinstance(binding, Mapping):
        return False
    iss, sub, mac = binding.get("iss"), binding.get("sub"), binding.get("mac")
    if not (isinstance(iss, str) and isinstance(sub, str) and isinstance(mac, str)):
        return False
    return any(
        hmac.compare_digest(binding_mac(secret, username, iss, sub), mac) for secret in secrets
    )


def hub_secrets() -> list[bytes]:
    """The hub's auth_state encryption keys (JUPYTERHUB_CRYPT_KEY), newest first."""
    try:
        from jupyterhub.crypto import CryptKeeper
    except ImportError:  # pragma: no cover - always installed with the hub
        return []
    return list(CryptKeeper.instance().keys)


def bind(
    username: str,
    claims: Mapping[str, Any],
    stored: Mapping[str, Any] | None,
    secrets: list[bytes],
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> dict[str, str] | None:
    """The (issuer, subject) binding for `username`, or LoginRejected for another subject.

    `stored` is the user's current auth_state (None for a new user). Its binding must carry
    a valid MAC (by any of `secrets`) and name this login's issuer and subject; it is
    returned MAC'ed with the newest secret (`secrets[0]`), so key rotation keeps it. A
    user without one (created before bindings existed) is bound now, unless the claims of
    their last login name another subject. None if no key is configured (nothing can be bound).
    """
    if not secrets:
        log.warning("No auth_state encryption key: cannot bind %s to a subject", username)
        return None
    issuer, subject = str(claims.get("iss")), str(claims.get("sub"))
    binding = (stored or {}).get(AUTH_STATE_BINDING)
    if binding is not None:
        if not verify_binding(binding, secrets, username):
            _refuse(log, username, "its stored subject binding is invalid", claims)
        if (binding["iss"], binding["sub"]) != (issuer, subject):
            _refuse(
                log, username, f"it is bound to sub {binding['sub']!r} at {binding['iss']}", claims
            )
        renewed = make_binding(secrets[0], username, issuer, subject)
        if renewed["mac"] != binding["mac"]:
            # Verified by an older key: re-MAC with the newest, so the binding survives
            # when the old key is dropped from JUPYTERHUB_CRYPT_KEY.
            log.info("Re-MACed the subject binding of %s with the newest key", username)
        return renewed
    previous = (stored or {}).get(AUTH_STATE_CLAIMS) or {}
    if previous.get("sub") is not None and (
        str(previous.get("iss")),
        str(previous.get("sub")),
    ) != (issuer, subject):
        _refuse(
            log,
            username,
            f"its last login (before subject binding) was sub {previous.get('sub')!r} "
            f"at {previous.get('iss')}",
            claims,
        )
    log.info("Bound hub user %s to sub %r at %s", username, subject, issuer)
    return make_binding(secrets[0], username, issuer, subject)


def _refuse(
    log: logging.Logger | logging.LoggerAdapter[Any],
    username: str,
    why: str,
    claims: Mapping[str, Any],
) -> None:
    log.warning(
        "Refused login as hub user %s by sub %r at %s: %s (admin re-bind: docs/deploy.md)",
        username,
        claims.get("sub"),
        claims.get("iss"),
        why,
    )
    raise LoginRejected(
        f"The hub account {username!r} belongs to another account at the identity "
        "provider, so you cannot use it. If it is yours, ask your hub administrator "
        "to re-bind it."
    )
