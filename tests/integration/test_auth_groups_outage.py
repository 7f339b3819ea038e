"""Issue 25.6: a userinfo without `groups` (refreshes without id_token) and an IdP outage longer
than auth_refresh_age: nobody counts as removed, nothing is revoked. Through a real JupyterHub
and a real OpenID provider (provider.mjs's per-use claims and outage switch).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_auth_hardening import (
    accounts,
    api_token_headers,
    auth_state,
    browser,
    person,
)
from tests.integration.test_auth_key_rotation import login_status

pytestmark = pytest.mark.slow


async def test_userinfo_without_groups_keeps_the_id_token_groups(
    oidc_provider_factory, hub_factory
):
    """Refreshes without id_token and a userinfo without `groups` (groups only in the
    id_token, as many IdPs do): the user stays allowed, nothing is revoked."""
    dora = {"claims": person("dora"), "userinfo": {"groups": None}}
    provider = oidc_provider_factory(
        accounts={**accounts(), "dora": dora}, hostile={"noRefreshIdToken": True}
    )
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 1})
    assert (await login_status(hub, "dora"))[0] == 200
    async with hub.api() as api:
        spawn = await api.post("/users/dora/server")
    assert spawn.status_code in (201, 202), spawn.text
    as_dora = await api_token_headers(hub, "dora")
    login_state = await auth_state(hub, "dora")
    await asyncio.sleep(1.5)  # past auth_refresh_age: the next request re-checks (userinfo)
    async with browser() as http:
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_dora)
    assert me.status_code == 200, me.text
    state = await auth_state(hub, "dora")
    assert state["access_token"] != login_state["access_token"]  # it did re-check
    assert state["groups"] == ["data-science"]
    model = await hub.user_model("dora")
    assert model is not None and "" in model["servers"]
    assert "Userinfo for dora has no 'groups' claim: keeping the groups" in hub.log()
    assert "Revoked access" not in hub.log()


async def test_idp_outage_longer_than_refresh_age_revokes_nothing(
    oidc_provider_factory, hub_factory
):
    """The IdP answers 503 for longer than auth_refresh_age: requests that need a re-check
    are refused (API: 403; browser: sent to log in again, which ends at the IdP's error
    page while it is down), but no server is stopped and no token revoked; when the IdP is
    back, the same API token works again at its next re-check."""
    provider = oidc_provider_factory(accounts=accounts())
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 1})
    async with browser() as http:
        assert (await hub.login(http, "alice")).status_code == 200
        async with hub.api() as api:
            spawn = await api.post("/users/alice/server")
        assert spawn.status_code in (201, 202), spawn.text
        as_alice = await api_token_headers(hub, "alice")

        await provider.set_outage(True)
        try:
            await asyncio.sleep(1.5)  # past auth_refresh_age
            me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
            assert me.status_code == 403, me.text
            home = await http.get(f"{hub.url}/hub/home", follow_redirects=False)
            assert home.status_code == 302 and "/hub/login" in home.headers["location"]
            again = await http.get(f"{hub.url}/hub/oauth_login", follow_redirects=False)
            assert again.headers["location"].startswith(provider.url("/auth"))
            idp = await http.get(again.headers["location"], follow_redirects=False)
            assert idp.status_code == 503
        finally:
            await provider.set_outage(False)
    assert "Re-check of alice with the provider failed" in hub.log()
    assert "Revoked access" not in hub.log()
    model = await hub.user_model("alice")
    assert model is not None and "" in model["servers"]
    async with hub.api() as api:
        tokens = (await api.get("/users/alice/tokens")).json()["api_tokens"]
    assert len(tokens) == 2  # the minted one and the server's

    async with browser() as http:
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
    assert me.status_code == 200, me.text
