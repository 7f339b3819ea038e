"""OpenID discovery: fetching, the issuer check, the https rule and the cache."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dna_hub.auth.discovery import (
    DiscoveryCache,
    DiscoveryError,
    check_issuer,
    parse_metadata,
    well_known_url,
)


async def fetch_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.json()


async def test_discovers_real_provider(oidc_provider):
    cache = DiscoveryCache(oidc_provider.issuer, fetch_json, allow_insecure_loopback=True)
    metadata = await cache.get()
    assert metadata.issuer == oidc_provider.issuer
    assert metadata.authorization_endpoint == oidc_provider.url("/auth")
    assert metadata.token_endpoint == oidc_provider.url("/token")
    assert metadata.jwks_uri == oidc_provider.url("/jwks")
    assert metadata.userinfo_endpoint == oidc_provider.url("/me")
    assert metadata.end_session_endpoint == oidc_provider.url("/session/end")
    assert "S256" in metadata.code_challenge_methods_supported
    assert await cache.get() is metadata  # cached


async def test_issuer_mismatch_is_an_error(oidc_provider, oidc_provider_factory):
    impostor = oidc_provider_factory(issuer=oidc_provider.issuer)
    # Configured with the impostor's URL, whose document names another issuer.
    cache = DiscoveryCache(impostor.base_url, fetch_json, allow_insecure_loopback=True)
    with pytest.raises(DiscoveryError, match="issuer mismatch"):
        await cache.get()
    assert cache.cached is None


async def test_unreachable_provider_is_an_error():
    cache = DiscoveryCache("http://127.0.0.1:9", fetch_json, allow_insecure_loopback=True)
    with pytest.raises(DiscoveryError, match="cannot fetch"):
        await cache.get()


async def test_refetch_failure_keeps_verified_document(oidc_provider):
    now = [0.0]
    calls = []

    async def flaky(url: str) -> Any:
        calls.append(url)
        if len(calls) > 1:
            raise OSError("provider down")
        return await fetch_json(url)

    cache = DiscoveryCache(
        oidc_provider.issuer, flaky, ttl=10, allow_insecure_loopback=True, clock=lambda: now[0]
    )
    first = await cache.get()
    now[0] = 100
    assert await cache.get() is first
    assert isinstance(cache.last_error, OSError)


@pytest.mark.parametrize(
    ("issuer", "ok"),
    [
        ("https://login.example.com/realms/corp", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080/x", True),
        ("http://[::1]:8080", True),
        ("http://login.example.com", False),  # clear text off the machine
        ("http://10.0.0.1", False),
        ("https://login.example.com/?tenant=x", False),
        ("ftp://login.example.com", False),
        ("", False),
    ],
)
def test_issuer_rules(issuer, ok):
    if ok:
        assert check_issuer(issuer, allow_insecure_loopback=True) == issuer
    else:
        with pytest.raises(DiscoveryError):
            check_issuer(issuer, allow_insecure_loopback=True)


def test_loopback_http_needs_opt_in():
    with pytest.raises(DiscoveryError, match="allow_insecure_loopback"):
        check_issuer("http://127.0.0.1:8080", allow_insecure_loopback=False)


def test_endpoints_must_be_https_too():
    document = {
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "http://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
    }
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        parse_metadata(document, "https://idp.example.com", allow_insecure_loopback=True)


def test_trailing_slash_is_significant():
    document = {
        "issuer": "https://idp.example.com/",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
    }
    with pytest.raises(DiscoveryError, match="issuer mismatch"):
        parse_metadata(document, "https://idp.example.com", allow_insecure_loopback=False)
    assert well_known_url("https://idp.example.com/") == (
        "https://idp.example.com/.well-known/openid-configuration"
    )
