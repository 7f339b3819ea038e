"""Issue 25.8: usernames and the Kubeflow identity from an email need `email_verified` on every
path: login (with userinfo: email and email_verified from one source), refresh with an id_token,
refresh through userinfo. Through a real JupyterHub and a real OpenID provider.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from devstack.oidc_stack import DEMO_ACCOUNTS
from tests.integration.test_auth_hardening import accounts, api_token_headers, browser, person
from tests.integration.test_auth_key_rotation import login_status

pytestmark = pytest.mark.slow


async def test_userinfo_email_needs_its_own_email_verified(oidc_provider_factory, hub_factory):
    """The id_token says email_verified but has no email; userinfo sends another, unverified
    address (which would become the Kubeflow identity): refused."""
    mallory = {
        "claims": person("mallory"),
        "idToken": {"email": None},
        "userinfo": {"email": "victim@example.com", "email_verified": False},
    }
    provider = oidc_provider_factory(accounts={**accounts(), "mallory": mallory})
    hub = await hub_factory(provider, authenticator={"fetch_userinfo": True})
    status, text = await login_status(hub, "mallory")
    assert status == 403, text
    assert "Your email address is not verified" in text
    assert await hub.user_model("mallory") is None


@pytest.mark.parametrize("recheck", ["refresh-id_token", "userinfo"])
async def test_email_no_longer_verified_is_refused_at_recheck(
    oidc_provider_factory, hub_factory, recheck
):
    hostile = {"noRefreshIdToken": True} if recheck == "userinfo" else {}
    provider = oidc_provider_factory(accounts=accounts(), hostile=hostile)
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 1})
    assert (await login_status(hub, "alice"))[0] == 200
    as_alice = await api_token_headers(hub, "alice")
    claims = copy.deepcopy(DEMO_ACCOUNTS["alice"]["claims"])
    claims["email_verified"] = False
    await provider.set_claims("alice", claims)
    await asyncio.sleep(1.5)  # past auth_refresh_age
    async with browser() as http:
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
    assert me.status_code == 403, me.text
    assert "alice may no longer log in: Your email address is not verified" in hub.log()
    assert "Revoked access of alice" in hub.log()
