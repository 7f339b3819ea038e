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

from dna_hub.policy.labels import TEAM_OWNER_PREFIX

__all__ = [
    "KUBEFLOW_IDENTITY_MAX_LENGTH",
    "RESERVED_IDENTITY_PREFIXES",
    "ClaimError",
    "check_kubeflow_identity",
    "claim_str",
    "email_verified",
    "groups_from_claims",
    "has_control_characters",
    "kubeflow_identity_problem",
    "kubeflow_userid_from_claims",
    "merge_userinfo",
    "normalize_username",
    "username_from_claims",
]

#: Longest Kubeflow identity accepted: an email address is at most 254 characters
#: (RFC 5321); a `sub` is at most 255 ASCII characters (OIDC Core 2).
KUBEFLOW_IDENTITY_MAX_LENGTH = 256


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


def groups_from_claims(
    claims: Mapping[str, Any], groups_claim: str, *, allow_single_string: bool = False
) -> list[str]:
    """The user's groups: [] if the claim is absent (or unnamed), else a list of strings.

    Anything but a JSON list of strings is refused with ClaimError: a bare string would
    otherwise count as one group, and a string equal to an admin group would make its
    holder admin. `allow_single_string` accepts a bare string as one group, for providers
    known to send a single group that way.
    """
    value = claims.get(groups_claim) if groups_claim else None
    if value is None:
        return []
    if isinstance(value, str) and allow_single_string:
        return [value]
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return list(value)
    kind = "a single string" if isinstance(value, str) else type(value).__name__
    raise ClaimError(
        f"The identity provider sent the {groups_claim!r} claim as {kind}, not as a list "
        "of group names, so your groups cannot be trusted. Ask your administrator to fix "
        "the provider's groups mapping."
    )


def email_verified(claims: Mapping[str, Any]) -> bool:
    """True if the `email_verified` claim says so (JSON true, or the string "true").

    Some providers (e.g. Cognito) send the string "true".
    """
    verified = claims.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


def merge_userinfo(id_token_claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> dict:
    """The id_token's claims with userinfo's added; the id_token wins where both have one.

    `email` and `email_verified` are taken as a pair from one source: an id_token that says
    `email_verified: true` but carries no `email` must not vouch for the address userinfo
    sends (CVE-2026-33175 class: an unverified email naming someone else's account).
    """
    merged = {**userinfo, **id_token_claims}
    source = id_token_claims if "email" in id_token_claims else userinfo
    merged.pop("email_verified", None)
    if "email_verified" in source:
        merged["email_verified"] = source["email_verified"]
    return merged


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
    return check_kubeflow_identity(value, f"the {claim!r} claim")


#: Kubeflow identities no person may have (compared case-insensitively).
RESERVED_IDENTITY_PREFIXES = ("system:", TEAM_OWNER_PREFIX)
_RESERVED_FOR = {
    "system:": "Kubernetes' own identities",
    TEAM_OWNER_PREFIX: "the identities of team profiles",
}


def kubeflow_identity_problem(value: object) -> str | None:
    """Why `value` cannot be a Kubeflow identity (Profile owner), or None if it can.

    The identity becomes a Profile's owner, an RBAC subject and an exact Istio header
    match, so it must be one printable token: no whitespace, no control or format
    characters (a newline could split a header or a log line), 1 to
    KUBEFLOW_IDENTITY_MAX_LENGTH characters. It must not start (in any case) with a
    reserved prefix: ``system:`` (Kubernetes' own users and service accounts) or
    ``dna-hub-team:`` (a team Profile's owner, :func:`dna_hub.policy.teams.team_owner`): a
    person logging in as either would own what that identity owns.
    """
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not value:
        return "is empty"
    if len(value) > KUBEFLOW_IDENTITY_MAX_LENGTH:
        return f"is {len(value)} characters long (at most {KUBEFLOW_IDENTITY_MAX_LENGTH})"
    for char in value:
        category = unicodedata.category(char)
        if char.isspace() or category.startswith(("C", "Z")):
            return f"contains the character U+{ord(char):04X} (whitespace or control)"
    for prefix in RESERVED_IDENTITY_PREFIXES:
        if value[: len(prefix)].lower() == prefix:
            return f"starts with {prefix!r}, which is reserved for {_RESERVED_FOR[prefix]}"
    return None


def check_kubeflow_identity(value: object, source: str) -> str:
    """`value` if it can be a Kubeflow identity, else ClaimError naming `source` and why."""
    problem = kubeflow_identity_problem(value)
    if problem is not None:
        raise ClaimError(f"The Kubeflow identity from {source} {problem}, so it cannot be used.")
    assert isinstance(value, str)
    return value
