"""id_token verification with real tokens from real OpenID providers (oidc-provider)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.utils import base64url_encode

from devstack.oidc_stack import TOKEN_CLIENT, OIDCProvider, SigningKeys
from dna_hub.auth.tokens import (
    IdTokenVerifier,
    JWKSCache,
    TokenVerificationError,
    validate_algorithms,
)


async def fetch_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.json()


def verifier_for(
    provider: OIDCProvider,
    *,
    issuer: str | None = None,
    client_id: str = TOKEN_CLIENT.client_id,
    leeway: float = 5,
    jwks: JWKSCache | None = None,
) -> IdTokenVerifier:
    return IdTokenVerifier(
        issuer=issuer or provider.issuer,
        client_id=client_id,
        jwks=jwks or JWKSCache(provider.url("/jwks"), fetch_json),
        leeway=leeway,
    )


@pytest.fixture(scope="module")
def other_issuer(oidc_provider_factory) -> OIDCProvider:
    """Another provider (its own issuer) signing with the *same* key as `oidc_provider`."""
    return oidc_provider_factory()


@pytest.fixture(scope="module")
def forger(oidc_provider_factory, oidc_provider, oidc_keys: SigningKeys) -> OIDCProvider:
    """Claims `oidc_provider`'s issuer and key id, but signs with another key."""
    return oidc_provider_factory(issuer=oidc_provider.issuer, keys=[oidc_keys.rogue])


async def test_valid_token(oidc_provider):
    grant = await oidc_provider.obtain_tokens("alice")
    claims = await verifier_for(oidc_provider).verify(grant.id_token, nonce=grant.nonce)
    assert claims["sub"] == "alice"
    assert claims["iss"] == oidc_provider.issuer
    assert claims["email"] == "Alice.Smith@Example.com"
    assert claims["groups"] == ["data-science"]


async def test_wrong_issuer(oidc_provider, other_issuer):
    # Correctly signed (same key), right audience and nonce, but another issuer.
    grant = await other_issuer.obtain_tokens("alice")
    with pytest.raises(TokenVerificationError) as error:
        await verifier_for(oidc_provider).verify(grant.id_token, nonce=grant.nonce)
    assert error.value.reason == "issuer"


async def test_wrong_audience(oidc_provider):
    grant = await oidc_provider.obtain_tokens("alice")
    verifier = verifier_for(oidc_provider, client_id="some-other-client")
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(grant.id_token, nonce=grant.nonce)
    assert error.value.reason == "audience"


async def test_provider_store_keeps_every_users_refresh_token(oidc_provider_factory):
    """The dev provider must not forget live grants under load (the storms log in 1000
    users): oidc-provider's own store is a 1000-entry LRU. With a store that small (30
    entries) the first user's refresh token is gone after 10 more logins; with the
    provider's default it is still honoured."""

    async def first_refresh_after_others(provider: OIDCProvider) -> int:
        first = await provider.obtain_tokens("alice")
        for i in range(10):
            await provider.obtain_tokens(f"user-{i}")
        answer = await provider.refresh(first.response["refresh_token"], TOKEN_CLIENT)
        return answer.status_code

    assert await first_refresh_after_others(oidc_provider_factory(store_size=30)) == 400
    assert await first_refresh_after_others(oidc_provider_factory()) == 200


async def test_expired(oidc_provider_factory):
    # exp = iat + 3 with whole seconds: between 2 and 3 s of real validity.
    short = oidc_provider_factory(ttl={"IdToken": 3})
    grant = await short.obtain_tokens("alice")
    # valid at first: checked with a leeway, so a loaded machine's delay cannot decide it
    await verifier_for(short, leeway=60).verify(grant.id_token, nonce=grant.nonce)
    verifier = verifier_for(short, leeway=0)
    await asyncio.sleep(3.2)
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(grant.id_token, nonce=grant.nonce)
    assert error.value.reason == "expired"
    # ...and the leeway is what tolerates clock skew.
    await verifier_for(short, leeway=60).verify(grant.id_token, nonce=grant.nonce)


async def test_signed_by_another_key(oidc_provider, forger):
    grant = await forger.obtain_tokens("alice")
    header = jwt.get_unverified_header(grant.id_token)
    assert header["kid"] == "dna-test-key"  # same kid as the real key: a forgery attempt
    assert jwt.decode(grant.id_token, options={"verify_signature": False})["iss"] == (
        oidc_provider.issuer
    )
    with pytest.raises(TokenVerificationError) as error:
        await verifier_for(oidc_provider).verify(grant.id_token, nonce=grant.nonce)
    assert error.value.reason == "signature"


async def test_nonce_mismatch(oidc_provider):
    grant = await oidc_provider.obtain_tokens("alice")
    verifier = verifier_for(oidc_provider)
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(grant.id_token, nonce="not-the-nonce-of-this-login")
    assert error.value.reason == "nonce"
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(grant.id_token, nonce=None, require_nonce=True)
    assert error.value.reason == "nonce"


async def test_unsigned_and_hmac_tokens_refused(oidc_provider):
    grant = await oidc_provider.obtain_tokens("alice")
    claims = jwt.decode(grant.id_token, options={"verify_signature": False})
    verifier = verifier_for(oidc_provider)
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(unsigned, nonce=grant.nonce)
    assert error.value.reason == "algorithm"
    # Algorithm confusion: HMAC keyed with the provider's *public* key (built by hand,
    # PyJWT rightly refuses to do it).
    jwks = await fetch_json(oidc_provider.url("/jwks"))
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "kid": "dna-test-key", "typ": "JWT"}, claims)
    )
    signature = base64url_encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    forged = (signing_input + b"." + signature).decode()
    with pytest.raises(TokenVerificationError) as error:
        await verifier.verify(forged, nonce=grant.nonce)
    assert error.value.reason == "algorithm"


@pytest.mark.parametrize("algs", [["none"], ["HS256"], ["RS256", "hs512"], [], ["XYZ"]])
def test_algorithm_config_validated(algs):
    with pytest.raises(ValueError):
        validate_algorithms(algs)


async def test_unknown_kid_refetch_is_rate_limited(oidc_provider, forger, oidc_keys):
    """Key rotation: an unknown kid triggers one JWKS fetch, then waits the interval."""
    now = [1000.0]
    jwks = JWKSCache(
        oidc_provider.url("/jwks"), fetch_json, min_refetch_interval=60, clock=lambda: now[0]
    )
    verifier = verifier_for(oidc_provider, jwks=jwks)
    grant = await oidc_provider.obtain_tokens("alice")
    await verifier.verify(grant.id_token, nonce=grant.nonce)
    assert jwks.fetch_count == 1
    await verifier.verify(grant.id_token, nonce=grant.nonce)
    assert jwks.fetch_count == 1  # cached

    # A token with a kid the provider does not publish (yet).
    claims = jwt.decode(grant.id_token, options={"verify_signature": False})
    rogue = jwt.PyJWK({**oidc_keys.rogue, "kid": "rotated-key"})
    unknown = jwt.encode(claims, rogue.key, algorithm="RS256", headers={"kid": "rotated-key"})
    now[0] += 61
    for _ in range(5):
        with pytest.raises(TokenVerificationError) as error:
            await verifier.verify(unknown, nonce=grant.nonce)
        assert error.value.reason == "signature"
    assert jwks.fetch_count == 2  # one refetch for five unknown-kid tokens
    now[0] += 61
    with pytest.raises(TokenVerificationError):
        await verifier.verify(unknown, nonce=grant.nonce)
    assert jwks.fetch_count == 3
