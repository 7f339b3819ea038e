"""Pure rules turning verified id_token claims into a hub identity.

Kept apart from `DnaOIDCAuthenticator` so the rules can be read and tested without
JupyterHub, tornado or a provider: every function gets the claims and the configured
values it needs and returns a value, or raises `ClaimError` with the reason a user may
not log in. The authenticator turns `ClaimError` into its 403 login page.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ClaimError",
    "claim_str",
    "email_verified",
    "groups_from_claims",
    "has_control_characters",
    "kubeflow_userid_from_claims",
    "normalize_username",
    "username_from_claims",
]


class ClaimError(ValueError):
    """The claims cannot identify a hub user; the message is shown to the user."""


def claim_str(claims: Mapping[str, Any], name: str) -> str | None:
    """The claim `name` if it is a non-blank string, else None (also for an empty name).

    Blank strings count as absent so that a provider sending `""` falls back to the next
    claim instead of producing an empty identity.
    """
    value = claims.get(name) if name else None
    return value if isinstance(value, str) and value.strip() else None


def has_control_characters(text: str) -> bool:
    """True if `text` has any Unicode "other" character (control, format, unassigned, ...).

    Such characters (NUL, newlines, zero-width spaces) make names that look alike but
    differ, or that break logs, paths and Kubernetes labels, so they are never accepted.
    """
    return any(unicodedata.category(c).startswith("C") for c in text)


def normalize_username(username: str, username_map: Mapping[str, str]) -> str:
    """Stripped and lowercased, then mapped through JupyterHub's `username_map`.

    So that Alice@X and alice@x are one hub user and the spawner's namespace policy
    sees one spelling.
    """
    username = username.strip().lower()
    return username_map.get(username, username)


def username_from_claims(
    claims: Mapping[str, Any],
    *,
    username_claim: str | Callable[[Mapping[str, Any]], Any],
    fallback_claim: str,
    normalize: Callable[[str], str],
    validate: Callable[[str], bool],
) -> str:
    """The normalised hub username from the claims, or ClaimError with the reason.

    `username_claim` is a claim name or, as oauthenticator allows, a callable taking the
    claims (then there is no fallback). `normalize` and `validate` are the
    authenticator's own methods, so its configuration and any subclass overrides apply.
    """
    if callable(username_claim):
        raw = username_claim(claims)
        source = "username_claim"
    else:
        source = username_claim
        raw = claim_str(claims, username_claim)
        if raw is None and fallback_claim:
            source = fallback_claim
            raw = claim_str(claims, fallback_claim)
    if not isinstance(raw, str) or not raw.strip():
        raise ClaimError(
            f"Your account has no usable {username_claim!r} or "
            f"{fallback_claim!r} claim for a hub username."
        )
    if has_control_characters(raw):
        raise ClaimError(f"The {source!r} claim contains control characters.")
    name = normalize(raw)
    if not validate(name):
        raise ClaimError(f"{name!r} (from {source!r}) is not a valid hub username.")
    return name


def groups_from_claims(claims: Mapping[str, Any], groups_claim: str) -> list[str] | None:
    """The user's groups: [] if the claim is absent (or unnamed), None if it is unusable.

    A single string is one group and non-string list entries are dropped, because
    providers differ in how they send groups. None (the claim is neither a string nor a
    list) lets the caller warn before treating it as no groups.
    """
    value = claims.get(groups_claim) if groups_claim else None
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return None


def email_verified(claims: Mapping[str, Any]) -> bool:
    """True if the `email_verified` claim says so (JSON true, or the string "true").

    Some providers (e.g. Cognito) send the string "true".
    """
    verified = claims.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


def kubeflow_userid_from_claims(claims: Mapping[str, Any], claim: str) -> str:
    """The identity Kubeflow sees, exactly as sent (case kept), or ClaimError.

    Not normalised like the hub username: it must equal what the Kubeflow auth proxy
    reads from the same claim (its USERID_CLAIM), or the user gets someone else's, or
    no, Profile.
    """
    value = claim_str(claims, claim)
    if value is None:
        raise ClaimError(
            f"Your account has no {claim!r} claim, which Kubeflow needs to identify you."
        )
    return value
