"""OpenID Provider discovery: fetch `<issuer>/.well-known/openid-configuration`, check it.

OpenID Connect Discovery 1.0 section 4.3: the `issuer` in the document MUST be identical
to the issuer it was fetched for, otherwise an attacker who controls the document could
make us trust their tokens. So a mismatch is an error here, never a warning.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: An async function that GETs a URL and returns the parsed JSON body, raising on errors
#: (the authenticator passes one built on oauthenticator's `httpfetch`, with timeouts).
FetchJSON = Callable[[str], Awaitable[Any]]

WELL_KNOWN_PATH = "/.well-known/openid-configuration"


class DiscoveryError(Exception):
    """The provider's discovery document could not be fetched or is not acceptable."""


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback IP literals (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint_url(url: str, what: str, *, allow_insecure_loopback: bool) -> str:
    """Require https, except plain http to a loopback address when explicitly allowed.

    Plain http on loopback never leaves the machine, which is what a test or a sidecar
    provider needs; anything else would send codes, secrets and tokens in clear text.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        if allow_insecure_loopback:
            return url
        raise DiscoveryError(
            f"{what} {url!r} uses plain http; set allow_insecure_loopback to allow it on a "
            "loopback address (tests only)"
        )
    raise DiscoveryError(f"{what} {url!r} must be an https:// URL")


def check_issuer(issuer: str, *, allow_insecure_loopback: bool) -> str:
    """Validate the configured issuer URL (https, no query or fragment: OIDC Discovery 3)."""
    if not issuer:
        raise DiscoveryError("no issuer configured: set DnaOIDCAuthenticator.issuer")
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise DiscoveryError(f"issuer {issuer!r} must not have a query or fragment")
    return check_endpoint_url(issuer, "issuer", allow_insecure_loopback=allow_insecure_loopback)


def well_known_url(issuer: str) -> str:
    """Where the discovery document lives; the issuer may end with a slash or not."""
    return issuer.rstrip("/") + WELL_KNOWN_PATH


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the discovery document the authenticator uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def parse_metadata(
    document: Any, expected_issuer: str, *, allow_insecure_loopback: bool
) -> ProviderMetadata:
    """Check a fetched discovery document and keep what we need."""
    if not isinstance(document, dict):
        raise DiscoveryError("the discovery document is not a JSON object")
    announced = document.get("issuer")
    # Exact comparison, as the spec requires; tokens are later checked against this value.
    if announced != expected_issuer:
        raise DiscoveryError(
            f"issuer mismatch: configured {expected_issuer!r} but the provider's discovery "
            f"document says {announced!r}; fix DnaOIDCAuthenticator.issuer (it must match "
            "exactly, including any trailing slash)"
        )

    def url(key: str, *, required: bool) -> str | None:
        value = document.get(key)
        if value is None or value == "":
            if required:
                raise DiscoveryError(f"the discovery document has no {key}")
            return None
        if not isinstance(value, str):
            raise DiscoveryError(f"{key} in the discovery document is not a string")
        return check_endpoint_url(value, key, allow_insecure_loopback=allow_insecure_loopback)

    def strings(key: str) -> tuple[str, ...]:
        value = document.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DiscoveryError(f"{key} in the discovery document is not a list of strings")
        return tuple(value)

    return ProviderMetadata(
        issuer=announced,
        authorization_endpoint=url("authorization_endpoint", required=True) or "",
        token_endpoint=url("token_endpoint", required=True) or "",
        jwks_uri=url("jwks_uri", required=True) or "",
        userinfo_endpoint=url("userinfo_endpoint", required=False),
        end_session_endpoint=url("end_session_endpoint", required=False),
        id_token_signing_alg_values_supported=strings("id_token_signing_alg_values_supported"),
        code_challenge_methods_supported=strings("code_challenge_methods_supported"),
        raw=dict(document),
    )


class DiscoveryCache:
    """Fetch the discovery document once, keep it for `ttl` seconds, share one fetch.

    If a later re-fetch fails, the last verified document is kept (logged by the caller):
    it passed the issuer check and endpoints rarely move, so a provider blip should not
    lock everybody out. With nothing cached yet, the error propagates: no silent fallback.
    """

    def __init__(
        self,
        issuer: str,
        fetch_json: FetchJSON,
        *,
        ttl: float = 3600.0,
        allow_insecure_loopback: bool = False,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self.issuer = check_issuer(issuer, allow_insecure_loopback=allow_insecure_loopback)
        self.url = well_known_url(issuer)
        self._fetch_json = fetch_json
        self._ttl = ttl
        self._allow_insecure_loopback = allow_insecure_loopback
        self._clock = clock
        self._log = log or logging.getLogger(__name__)
        self._metadata: ProviderMetadata | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self.last_error: Exception | None = None

    @property
    def cached(self) -> ProviderMetadata | None:
        return self._metadata

    def _fresh(self) -> bool:
        return self._metadata is not None and self._clock() - self._fetched_at < self._ttl

    async def get(self, *, force: bool = False) -> ProviderMetadata:
        if not force and self._fresh():
            assert self._metadata is not None
            return self._metadata
        async with self._lock:
            # Another task may have fetched while we waited for the lock.
            if not force and self._fresh():
                assert self._metadata is not None
                return self._metadata
            try:
                document = await self._fetch_json(self.url)
                metadata = parse_metadata(
                    document,
                    self.issuer,
                    allow_insecure_loopback=self._allow_insecure_loopback,
                )
            except DiscoveryError as e:
                self.last_error = e
                raise
            except Exception as e:
                self.last_error = e
                if self._metadata is not None:
                    self._log.warning(
                        "Re-fetching %s failed (%s); keeping the last verified document",
                        self.url,
                        e,
                    )
                    # Retry at the next call instead of hammering a struggling provider.
                    self._fetched_at = self._clock() - self._ttl + min(self._ttl, 30.0)
                    return self._metadata
                raise DiscoveryError(
                    f"cannot fetch the OpenID discovery document {self.url}: {e}"
                ) from e
            self._metadata = metadata
            self._fetched_at = self._clock()
            self.last_error = None
            return metadata
