"""Hub operators cannot act as another user (issue 18, item 2).

A real JupyterHub, configured with `helm-values/values.yaml`'s authenticator group settings
and `hub.loadRoles`, logs in an operator (bob, in the provider's admin group) and a user
(alice) through the real OpenID provider. With a token of bob's (all his scopes), bob can
list users and stop alice's server, but cannot open it (the hub's OAuth authorisation for
her server), mint a token for her, or write her auth_state (her Kubeflow identity).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import yaml

from devstack.oidc_stack import ADMIN_GROUPS, HubProcess, OIDCProvider
from devstack.paths import REPO_ROOT

pytestmark = pytest.mark.slow

VALUES = yaml.safe_load((REPO_ROOT / "helm-values" / "values.yaml").read_text())

#: Scopes that act as a user, or change who a user is, when not limited to oneself.
ACTS_AS_USERS = {
    "access:servers",
    "tokens",
    "admin:users",
    "admin:auth_state",
    "users",
    "servers",
    "admin:servers",
    "start:servers",
    "admin:server_state",
    "admin:groups",
    "groups",
    "shutdown",
    "proxy",
}


def hub_roles() -> list[dict[str, Any]]:
    """values.yaml's hub.loadRoles as the chart passes them (a list), for the test's groups."""
    roles = []
    for name, role in VALUES["hub"]["loadRoles"].items():
        role = {"name": name, **role}
        if "groups" in role:
            role["groups"] = list(ADMIN_GROUPS)  # the placeholder group -> the provider's
        roles.append(role)
    return roles


def authenticator_settings() -> dict[str, Any]:
    configured = VALUES["hub"]["config"]["DnaOIDCAuthenticator"]
    return {
        # the test fixture's default makes the admin group hub admins; values.yaml does not
        "admin_groups": configured.get("admin_groups", []),
        "manage_groups": configured["manage_groups"],
    }


def extra_config() -> str:
    # The test's own service may mint tokens for users (to obtain bob's and alice's).
    return (
        '\nc.JupyterHub.load_roles[0]["scopes"].append("tokens")\n'
        f"c.JupyterHub.load_roles.extend(json.loads({json.dumps(hub_roles())!r}))\n"
    )


async def token_of(hub: HubProcess, name: str) -> str:
    async with hub.api() as api:
        response = await api.post(f"/users/{name}/tokens", json={"note": "test"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def start_server(hub: HubProcess, name: str) -> None:
    async with hub.api() as api:
        response = await api.post(f"/users/{name}/server")
        assert response.status_code in (201, 202), response.text
        for _ in range(150):
            model = (await api.get(f"/users/{name}")).json()
            server = model["servers"].get("")
            if server and server["ready"]:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{name}'s server did not start:\n{hub.log()}")


async def authorize_server(
    hub: HubProcess, browser: httpx.AsyncClient, owner: str
) -> httpx.Response:
    """The hub's OAuth step a logged-in browser goes through to open ``owner``'s server."""
    return await browser.get(
        f"{hub.url}/hub/api/oauth2/authorize",
        params={
            "client_id": f"jupyterhub-user-{owner}",
            "redirect_uri": f"/user/{owner}/oauth_callback",
            "response_type": "code",
            "state": "x",
        },
        follow_redirects=False,
    )


async def test_an_operator_cannot_act_as_another_user(oidc_provider: OIDCProvider, hub_factory):
    hub = await hub_factory(
        oidc_provider, authenticator=authenticator_settings(), extra_config=extra_config()
    )
    browsers = {name: httpx.AsyncClient(timeout=15) for name in ("alice", "bob")}
    try:
        for name, browser in browsers.items():
            page = await hub.login(browser, name)
            assert page.status_code == 200, page.text
        await check_operator(hub, browsers)
    finally:
        for browser in browsers.values():
            await browser.aclose()


async def check_operator(hub: HubProcess, browsers: dict[str, httpx.AsyncClient]) -> None:
    bob_model = await hub.user_model("bob")
    assert bob_model is not None
    assert bob_model["admin"] is False
    assert set(ADMIN_GROUPS) <= set(bob_model["groups"])  # the operator role's group
    await start_server(hub, "alice")
    alice_state = (await hub.user_model("alice"))["auth_state"]
    bob = await token_of(hub, "bob")

    async with httpx.AsyncClient(
        base_url=f"{hub.url}/hub/api", headers={"Authorization": f"token {bob}"}, timeout=15
    ) as as_bob:
        # effective scopes: nothing that acts as (or rewrites) anyone but bob
        scopes = (await as_bob.get("/user")).json()["scopes"]
        broad = [
            s
            for s in scopes
            if s.partition("!")[0] in ACTS_AS_USERS
            and s.partition("!")[2] not in ("user=bob", "server=bob/")
        ]
        assert broad == [], scopes

        # what an operator needs works: list users, see and stop servers
        assert "delete:servers" in scopes and "list:users" in scopes  # the role applies
        listing = await as_bob.get("/users")
        assert listing.status_code == 200
        assert {"alice", "bob"} <= {u["name"] for u in listing.json()}

        # cannot open alice's server (runs as her default-editor)
        refused = await authorize_server(hub, browsers["bob"], "alice")
        assert refused.status_code == 403, refused.headers.get("location")
        # cannot mint a token for alice
        minted = await as_bob.post("/users/alice/tokens", json={"note": "x"})
        assert minted.status_code == 403, minted.text
        # cannot write alice's auth_state (her Kubeflow identity)
        forged = {**alice_state, "kubeflow_userid": "bob@example.com"}
        patched = await as_bob.patch("/users/alice", json={"auth_state": forged})
        assert patched.status_code == 403, patched.text
        assert (await hub.user_model("alice"))["auth_state"] == alice_state
        # cannot make himself (or anyone) a full admin
        promoted = await as_bob.patch("/users/bob", json={"admin": True})
        assert promoted.status_code == 403, promoted.text

        # alice herself may open her server: the refusal above is about bob
        own = await authorize_server(hub, browsers["alice"], "alice")
        assert own.status_code == 302, own.text
        assert own.headers["location"].startswith("/user/alice/oauth_callback?code=")

        stopped = await as_bob.delete("/users/alice/server")
        assert stopped.status_code in (202, 204), stopped.text
