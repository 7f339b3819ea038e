"""Issue 25.5: explicitly configured endpoints (authorize, token, userinfo, JWKS) pass the same
https check as discovered ones; plain http only to loopback with allow_insecure_loopback."""

from __future__ import annotations

import pytest

from dna_hub.auth.discovery import DiscoveryError
from tests.integration.test_auth_key_rotation import login_status
from tests.integration.test_auth_oidc import make_authenticator

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("trait", ["authorize_url", "token_url", "userdata_url", "jwks_url"])
async def test_configured_endpoints_must_be_https(oidc_provider, trait):
    url = "http://idp.example.com/endpoint"
    authenticator = make_authenticator(oidc_provider, **{trait: url})
    with pytest.raises(DiscoveryError, match=rf"DnaOIDCAuthenticator.{trait} '{url}' must be an"):
        await authenticator.provider_metadata()
    # Loopback stays allowed with allow_insecure_loopback (tests, sidecar providers) ...
    loopback = oidc_provider.url("/endpoint")
    await make_authenticator(oidc_provider, **{trait: loopback}).provider_metadata()
    # ... and https anywhere.
    await make_authenticator(
        oidc_provider, **{trait: "https://idp.example.com/x"}
    ).provider_metadata()


async def test_http_jwks_url_refuses_login(oidc_provider, hub_factory):
    hub = await hub_factory(oidc_provider, authenticator={"jwks_url": "http://dex.example/keys"})
    status, text = await login_status(hub, "alice")
    assert status == 503, text
    assert "DnaOIDCAuthenticator.jwks_url &#39;http://dex.example/keys&#39; must be an" in text
    assert await hub.user_names() == []
