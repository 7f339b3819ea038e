"""DnaOIDCAuthenticator in a real JupyterHub (with configurable-http-proxy) against a real
OpenID provider, driven by an HTTP client that fills the provider's login/consent pages.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import httpx
import pytest

from devstack.oidc_stack import HubProcess, OIDCProvider

pytestmark = pytest.mark.slow


def browser() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=15)


async def wait_for_server(hub: HubProcess, name: str, timeout: float = 30) -> dict:
    for _ in range(int(timeout * 5)):
        model = await hub.user_model(name)
        assert model is not None
        server = model["servers"].get("")
        if server and server["ready"]:
            return server
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}'s server did not become ready:\n{hub.log()}")


async def test_login_happy_path(oidc_provider: OIDCProvider, hub_factory):
    hub = await hub_factory(oidc_provider)
    async with browser() as http:
        page = await hub.login(http, "alice")
        assert page.status_code == 200, page.text
        assert str(page.url) == f"{hub.url}/hub/home"
        # The hub session works for later requests.
        home = await http.get(f"{hub.url}/hub/home")
        assert home.status_code == 200

    user = await hub.user_model("alice")
    assert user is not None
    assert user["admin"] is False
    assert user["groups"] == ["data-science"]
    state = user["auth_state"]
    assert state["kubeflow_userid"] == "Alice.Smith@Example.com"
    assert state["groups"] == ["data-science"]
    assert state["oidc_claims"]["iss"] == oidc_provider.issuer
    assert state["access_token"] and state["refresh_token"] and state["id_token"]

    async with browser() as http:
        await hub.login(http, "bob")
    bob = await hub.user_model("bob")
    assert bob is not None and bob["admin"] is True
    assert sorted(bob["groups"]) == ["data-science", "hub-admins"]


@pytest.mark.parametrize(
    ("account", "message"),
    [
        ("mallory", "not currently authorized"),  # not in an allowed group
        ("eve", "email address is not verified"),
    ],
)
async def test_rejected_users_are_not_created(oidc_provider, hub_factory, account, message):
    hub = await hub_factory(oidc_provider)
    async with browser() as http:
        page = await hub.login(http, account)
        assert page.status_code == 403, page.text
        assert str(page.url).startswith(f"{hub.url}/hub/oauth_callback")
        assert message in page.text
        # No hub session either.
        home = await http.get(f"{hub.url}/hub/home", follow_redirects=False)
        assert home.status_code == 302
    assert await hub.user_model(account) is None
    assert await hub.user_names() == []


async def test_wrong_issuer_refuses_login(oidc_provider, oidc_provider_factory, hub_factory):
    """The hub's issuer serves a discovery document naming another issuer."""
    impostor = oidc_provider_factory(issuer=oidc_provider.issuer)
    hub = await hub_factory(impostor, issuer=impostor.base_url)
    async with browser() as http:
        page = await http.get(f"{hub.url}/hub/oauth_login")
        assert page.status_code == 503
        assert "issuer mismatch" in page.text
    assert "OpenID provider check FAILED" in hub.log()  # already at startup
    assert await hub.user_names() == []


async def test_spawn_after_id_token_expired(oidc_provider_factory, hub_factory):
    """Refresh before spawn with the refresh token; the expired id_token is no obstacle."""
    provider = oidc_provider_factory(ttl={"AccessToken": 4, "IdToken": 3})
    hub = await hub_factory(
        provider, authenticator={"id_token_leeway": 0, "token_refresh_margin": 0}
    )
    async with browser() as http:
        await hub.login(http, "alice")
        user = await hub.user_model("alice")
        assert user is not None
        login_state = user["auth_state"]
        await asyncio.sleep(4.5)  # access token and id_token expired, refresh token good
        response = await http.get(f"{hub.url}/hub/spawn", follow_redirects=False)
        assert response.status_code == 302, response.text
        assert "/login" not in response.headers["location"]
        await wait_for_server(hub, "alice")

    record = hub.spawn_record("alice")
    assert record is not None
    spawned_with = record["auth_state"]
    assert spawned_with["kubeflow_userid"] == "Alice.Smith@Example.com"
    assert spawned_with["access_token"] != login_state["access_token"]
    assert spawned_with["id_token"] != login_state["id_token"]
    assert spawned_with["expires_at"] > login_state["expires_at"]
    user = await hub.user_model("alice")
    assert user is not None
    assert user["auth_state"]["access_token"] == spawned_with["access_token"]


async def test_failed_refresh_forces_new_login(oidc_provider_factory, hub_factory):
    provider = oidc_provider_factory(ttl={"AccessToken": 2, "RefreshToken": 2})
    hub = await hub_factory(provider, authenticator={"token_refresh_margin": 0})
    async with browser() as http:
        await hub.login(http, "alice")
        await asyncio.sleep(3)  # everything expired: the refresh must fail
        response = await http.get(f"{hub.url}/hub/spawn", follow_redirects=False)
        # JupyterHub refuses the spawn and asks for a new login.
        assert response.status_code == 403
        assert "login again" in response.text
    assert hub.spawn_record("alice") is None
    model = await hub.user_model("alice")
    assert model is not None and not model["servers"]


async def test_logout_ends_provider_session(oidc_provider, hub_factory):
    hub = await hub_factory(oidc_provider)
    async with browser() as http:
        await hub.login(http, "alice")
        user = await hub.user_model("alice")
        assert user is not None
        refresh_token = user["auth_state"]["refresh_token"]

        response = await http.get(f"{hub.url}/hub/logout", follow_redirects=False)
        assert response.status_code == 302
        end_session = response.headers["location"]
        assert end_session.startswith(oidc_provider.url("/session/end?"))
        assert "id_token_hint=" in end_session
        assert "post_logout_redirect_uri=" + urlencode({"": f"{hub.url}/hub/login"})[1:] in (
            end_session
        )
        # The provider asks "sign out?", the helper says yes, the provider sends us back.
        page = await oidc_provider.browse(http, end_session)
        assert str(page.url) == f"{hub.url}/hub/login"
        assert page.status_code == 200

        # Logged out of the hub...
        home = await http.get(f"{hub.url}/hub/home", follow_redirects=False)
        assert home.status_code == 302
        # ...and of the provider: logging in again asks for credentials.
        with pytest.raises(AssertionError, match="asks for a login"):
            await hub.login(http, None)  # type: ignore[arg-type]
    # The provider ended the grant too: the old refresh token is dead.
    refreshed = await oidc_provider.refresh(refresh_token, hub.client)
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
