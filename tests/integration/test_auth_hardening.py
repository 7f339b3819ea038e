"""Login hardening (issue 13), revocation and logout (issue 18.3, 18.6), the Kubeflow
identity check (issue 14.6): each through a real JupyterHub and a real OpenID provider
(panva/oidc-provider), with provider.mjs's `hostile` misbehaviours where a well-behaved
provider cannot show the attack.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.simple_httpclient import HTTPTimeoutError

from devstack.oidc_stack import DEMO_ACCOUNTS, HubProcess, _rsa_jwk
from dna_hub.errors import ConfigurationError
from tests.integration.test_auth_oidc import FakeUser, make_authenticator
from tests.integration.test_auth_oidc import login as oidc_login
from tests.unit.test_cli_render import render

pytestmark = pytest.mark.slow


def browser() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=15)


def accounts(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """DEMO_ACCOUNTS (a deep copy: providers that get edited must not share it) plus extra."""
    result = copy.deepcopy(DEMO_ACCOUNTS)
    result.update({login: {"claims": claims} for login, claims in extra.items()})
    return result


def person(login: str, **claims: Any) -> dict[str, Any]:
    """A verified account's claims, ``login@example.com``, in data-science; ``claims`` override."""
    return {
        "preferred_username": login,
        "email": f"{login}@example.com",
        "email_verified": True,
        "groups": ["data-science"],
        **claims,
    }


async def first_login(
    oidc_provider_factory: Any, hub_factory: Any, login: str, claims: dict[str, Any], **hub: Any
) -> tuple[HubProcess, Any]:
    """A hub whose provider also has ``login`` with ``claims``, and that login's last page."""
    provider = oidc_provider_factory(accounts=accounts(**{login: claims}))
    started = await hub_factory(provider, **hub)
    async with browser() as http:
        return started, await started.login(http, login)


async def api_token_headers(hub: HubProcess, name: str) -> dict[str, str]:
    """Headers that authenticate with a new API token of ``name`` (minted by the admin)."""
    async with hub.api() as api:
        minted = await api.post(f"/users/{name}/tokens", json={"note": "cli"})
    assert minted.status_code == 201, minted.text
    return {"Authorization": f"token {minted.json()['token']}"}


async def patch_auth_state(hub: HubProcess, name: str, auth_state: dict) -> None:
    async with hub.api() as api:
        response = await api.patch(f"/users/{name}", json={"auth_state": auth_state})
    response.raise_for_status()


async def auth_state(hub: HubProcess, name: str) -> dict[str, Any]:
    model = await hub.user_model(name)
    assert model is not None
    return model["auth_state"]


# ---------------------------------------------------------------- 13.1 subject binding

IMPOSTOR = {
    # Another person (sub "impostor") who set preferred_username to carol's email.
    "preferred_username": "carol@example.com",
    "email": "impostor@example.com",
    "email_verified": True,
    "groups": ["data-science"],
}


async def test_hub_user_is_bound_to_its_subject(oidc_provider_factory, hub_factory):
    provider = oidc_provider_factory(accounts=accounts(impostor=IMPOSTOR))
    hub = await hub_factory(provider)
    async with browser() as http:
        page = await hub.login(http, "carol")
        assert page.status_code == 200, page.text
    carol = await auth_state(hub, "carol@example.com")
    binding = carol["subject_binding"]
    assert (binding["iss"], binding["sub"]) == (provider.issuer, "carol")
    assert "Bound hub user carol@example.com to sub 'carol'" in hub.log()

    async def impostor_refused() -> None:
        async with browser() as http:
            page = await hub.login(http, "impostor")
        assert page.status_code == 403, page.text
        assert "belongs to another account at the identity provider" in page.text
        state = await auth_state(hub, "carol@example.com")
        assert state["kubeflow_userid"] == "Carol@Example.com"  # not impostor@example.com

    await impostor_refused()
    refusals = [line for line in hub.log().splitlines() if "Refused login as hub user" in line]
    assert len(refusals) == 1, refusals
    assert "sub 'impostor'" in refusals[0] and "bound to sub 'carol'" in refusals[0]
    assert "Traceback" not in hub.log()

    # The binding cannot be moved with the REST API (admin:auth_state): the MAC breaks.
    await patch_auth_state(hub, "carol@example.com", {**carol, "subject_binding": {
        **binding, "sub": "impostor"}})  # fmt: skip
    await impostor_refused()
    async with browser() as http:
        assert (await hub.login(http, "carol")).status_code == 403
    assert "its stored subject binding is invalid" in hub.log()

    # An existing user from before bindings: bound at the next login to the subject of
    # the last one; another subject is refused in the meantime.
    legacy = {k: v for k, v in carol.items() if k != "subject_binding"}
    await patch_auth_state(hub, "carol@example.com", legacy)
    await impostor_refused()
    assert "its last login (before subject binding) was sub 'carol'" in hub.log()
    async with browser() as http:
        assert (await hub.login(http, "carol")).status_code == 200
    assert (await auth_state(hub, "carol@example.com"))["subject_binding"] == binding

    # The documented re-bind: clear the auth_state; the next login binds (and is logged).
    await patch_auth_state(hub, "carol@example.com", {})
    async with browser() as http:
        assert (await hub.login(http, "impostor")).status_code == 200
    rebound = await auth_state(hub, "carol@example.com")
    assert rebound["subject_binding"]["sub"] == "impostor"
    assert "Bound hub user carol@example.com to sub 'impostor'" in hub.log()


# ---------------------------------------------------------------- 13.2 token endpoint errors


async def test_bad_code_is_a_clean_4xx(oidc_provider, hub_factory):
    hub = await hub_factory(oidc_provider)
    callback = f"{hub.url}/hub/oauth_callback"
    async with browser() as http:
        # A real login up to the callback; the code is then redeemed twice.
        start = f"{hub.url}/hub/oauth_login?" + urlencode({"next": "/hub/home"})
        redirect = await oidc_provider.browse(http, start, username="alice", stop_at=callback)
        assert redirect.is_redirect
        back = redirect.headers["location"]
        first = await http.get(back, follow_redirects=False)
        assert first.status_code == 302, first.text
        await http.get(f"{hub.url}/hub/logout", follow_redirects=False)

        # The state cookie is gone after a login: start again, then send a used code
        # and a forged one with this attempt's valid state.
        for code in (parse_qs(urlsplit(back).query)["code"][0], "forged-code"):
            login = await http.get(f"{hub.url}/hub/oauth_login", follow_redirects=False)
            state = parse_qs(urlsplit(login.headers["location"]).query)["state"][0]
            page = await http.get(
                f"{callback}?" + urlencode({"code": code, "state": state}),
                follow_redirects=False,
            )
            assert page.status_code == 400, page.text
            assert "Login failed, please start again." in page.text
    log = hub.log()
    assert "Traceback" not in log
    assert "Cookie:" not in log and "'Cookie'" not in log  # no request headers logged
    failures = [line for line in log.splitlines() if "Login failed: the token endpoint" in line]
    assert len(failures) == 2, log
    assert all("invalid_grant" in line for line in failures)


# ---------------------------------------------------------------- 13.3 token_type


async def test_non_bearer_token_type_is_refused(oidc_provider_factory, hub_factory):
    provider = oidc_provider_factory(hostile={"tokenType": "N_A"})
    hub = await hub_factory(provider)
    async with browser() as http:
        page = await hub.login(http, "alice")
    assert page.status_code == 400, page.text
    assert "Login failed, please start again." in page.text
    assert "token_type 'N_A', not Bearer" in hub.log()
    assert await hub.user_names() == []


# ---------------------------------------------------------------- 13.4 groups claim type


async def test_groups_claim_must_be_a_list(oidc_provider_factory, hub_factory):
    # A bare string equal to the admin group: before the fix, an admin.
    stringy = person("stringy", groups="hub-admins")
    hub, page = await first_login(oidc_provider_factory, hub_factory, "stringy", stringy)
    assert page.status_code == 403, page.text
    assert "sent the &#39;groups&#39; claim as a single string" in page.text
    assert await hub.user_model("stringy") is None
    assert "Refused login: malformed 'groups' claim 'hub-admins'" in hub.log()


async def test_single_string_groups_when_allowed(oidc_provider_factory, hub_factory):
    single = person("single", groups="data-science")
    hub, page = await first_login(
        oidc_provider_factory, hub_factory, "single", single,
        authenticator={"allow_single_string_groups": True},
    )  # fmt: skip
    assert page.status_code == 200, page.text
    model = await hub.user_model("single")
    assert model is not None and model["groups"] == ["data-science"]


# ---------------------------------------------------------------- 13.5 short RSA keys


async def test_short_rsa_signing_key_is_refused(oidc_provider_factory, hub_factory):
    provider = oidc_provider_factory(hostile={"weakKey": _rsa_jwk("weak-1024", bits=1024)})
    hub = await hub_factory(provider)
    async with browser() as http:
        page = await hub.login(http, "alice")
    assert page.status_code == 403, page.text
    assert "weak-key" in page.text and "has 1024 bits; at least 2048" in page.text
    assert await hub.user_names() == []


# ---------------------------------------------------------------- 14.6 Kubeflow identity


async def test_kubeflow_identity_with_control_characters_is_refused(
    oidc_provider_factory, hub_factory
):
    newline = person("newline", email="newline@example.com\nx-evil: 1")
    hub, page = await first_login(oidc_provider_factory, hub_factory, "newline", newline)
    assert page.status_code == 403, page.text
    assert "The Kubeflow identity from the &#39;email&#39; claim contains" in page.text
    assert "U+000A" in page.text
    assert await hub.user_model("newline") is None


async def test_a_team_identity_is_refused_as_a_login(oidc_provider_factory, hub_factory):
    """Issue 25: whoever logged in with a team Profile's owner (dna-hub-team:<namespace>) as
    Kubeflow identity would own that team's namespace."""
    impostor = person("impostor", email="dna-hub-team:kubeflow-team-ml")
    hub, page = await first_login(oidc_provider_factory, hub_factory, "impostor", impostor)
    assert page.status_code == 403, page.text
    assert "The Kubeflow identity from the &#39;email&#39; claim starts with" in page.text
    assert "dna-hub-team:" in page.text
    assert await hub.user_model("impostor") is None


@pytest.mark.parametrize(
    "owner", ["alice@example.com\nx", "alice example", "alice\u200b@x", "a" * 300, "\u00a0"]
)
def test_spawner_refuses_a_bad_owner(owner: str) -> None:
    """The spawner's own check (DnaSpawner.render_profile), here via `render --owner`."""
    result = render("--user", "alice", "--owner", owner)
    assert result.returncode == 2, result.stdout
    assert "the Profile owner" in result.stderr
    assert "whitespace or control" in result.stderr or "characters long" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- 18.6 logout


async def test_logout_needs_https_and_clears_tokens(oidc_provider, hub_factory):
    hub = await hub_factory(
        oidc_provider, authenticator={"end_session_url": "http://idp.example.com/logout"}
    )
    async with browser() as http:
        await hub.login(http, "alice")
        assert (await auth_state(hub, "alice"))["refresh_token"]
        response = await http.get(f"{hub.url}/hub/logout", follow_redirects=False)
        # No redirect carrying the id_token_hint over plain http: the hub's own login.
        assert response.status_code == 302, response.headers
        assert response.headers["location"] == "/hub/login"
    assert "end_session_url 'http://idp.example.com/logout' must be an https:// URL" in (hub.log())
    state = await auth_state(hub, "alice")
    for key in ("access_token", "refresh_token", "id_token", "token_response"):
        assert key not in state, key
    assert state["kubeflow_userid"] == "Alice.Smith@Example.com"
    assert state["subject_binding"]["sub"] == "alice"


async def test_callback_url_is_required(oidc_provider, hub_factory):
    """Without oauth_callback_url nothing is built from the request's Host header."""
    hub = await hub_factory(oidc_provider, authenticator={"oauth_callback_url": ""})
    async with browser() as http:
        page = await http.get(
            f"{hub.url}/hub/oauth_login",
            headers={"Host": "evil.example.com"},
            follow_redirects=False,
        )
    assert page.status_code == 503, page.headers
    assert "evil.example.com" not in page.headers.get("location", "")
    assert "oauth_callback_url is not configured" in page.text


# ---------------------------------------------------------------- 18.3 revocation


@pytest.mark.parametrize("recheck", ["refresh-id_token", "userinfo"])
async def test_removed_user_loses_access(oidc_provider_factory, hub_factory, recheck):
    """Removal at the provider → servers stopped, tokens revoked, sessions ended.

    `auth_refresh_age` is 2 s here (DNA_HUB_REVOCATION_AGE overrides it, to measure);
    the test prints the measured time from the removal at the provider to the first
    refused request (the documented bound is `auth_refresh_age` plus the time to the
    user's next request).
    """
    age = int(os.environ.get("DNA_HUB_REVOCATION_AGE", "2"))
    hostile = {"noRefreshIdToken": True} if recheck == "userinfo" else {}
    provider = oidc_provider_factory(accounts=accounts(), hostile=hostile)
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": age})
    async with browser() as http:
        assert (await hub.login(http, "alice")).status_code == 200
        async with hub.api() as api:
            spawn = await api.post("/users/alice/server")
            assert spawn.status_code in (201, 202), spawn.text
            minted = await api.post("/users/alice/tokens", json={"note": "cli"})
            assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        as_alice = {"Authorization": f"token {token}"}
        assert hub.spawn_record("alice") is not None  # refresh_pre_spawn re-checked: allowed
        login_state = await auth_state(hub, "alice")
        await asyncio.sleep(age + 0.5)  # a re-check of a still-allowed user keeps everything
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
        assert me.status_code == 200, me.text
        rechecked = await auth_state(hub, "alice")
        assert rechecked["access_token"] != login_state["access_token"]  # a refresh grant
        # With no id_token in the answer, the claims came from userinfo; the id_token
        # of the login is kept (for logout).
        same_id_token = rechecked["id_token"] == login_state["id_token"]
        assert same_id_token is (recheck == "userinfo")

        claims = copy.deepcopy(DEMO_ACCOUNTS["alice"]["claims"])
        claims["groups"] = ["marketing"]  # removed from the only allowed group
        await provider.set_claims("alice", claims)
        removed = time.monotonic()
        status = 200
        for _ in range(age * 30 + 150):  # polls every 0.1 s (plus the request's time)
            status = (await http.get(f"{hub.url}/hub/api/user", headers=as_alice)).status_code
            if status != 200:
                break
            await asyncio.sleep(0.1)
        lost = time.monotonic() - removed
        assert status == 403
        print(f"\nremoval at the provider -> access lost ({recheck}): {lost:.2f} s")

        model = await hub.user_model("alice")
        assert model is not None and model["servers"] == {}
        async with hub.api() as api:
            tokens = (await api.get("/users/alice/tokens")).json()["api_tokens"]
        assert tokens == []
        home = await http.get(f"{hub.url}/hub/home", follow_redirects=False)
        assert home.status_code == 302 and "/login" in home.headers["location"]
    # The minted token and the server's own token.
    assert "Revoked access of alice: 2 API tokens revoked" in hub.log()
    assert "stopped: default server" in hub.log()


async def test_spawn_rechecks_and_failed_recheck_is_strict(oidc_provider_factory, hub_factory):
    """refresh_pre_spawn and auth_refresh_strict, both on by default now.

    carol is removed from her groups: an admin's spawn for her re-checks first and is
    refused. alice's account is deleted at the provider: the refresh grant fails, and her
    API token is refused (strict) instead of working on with stale auth.
    """
    provider = oidc_provider_factory(accounts=accounts())
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 2})
    async with browser() as http:
        assert (await hub.login(http, "carol")).status_code == 200
    async with browser() as http:
        assert (await hub.login(http, "alice")).status_code == 200
    as_alice = await api_token_headers(hub, "alice")

    claims = copy.deepcopy(DEMO_ACCOUNTS["carol"]["claims"])
    claims["groups"] = []
    await provider.set_claims("carol", claims)
    async with hub.api() as api:
        spawn = await api.post("/users/carol@example.com/server")
    assert spawn.status_code == 403, spawn.text
    assert hub.spawn_record("carol@example.com") is None
    assert "Revoked access of carol@example.com" in hub.log()

    await provider.set_claims("alice", None)
    await asyncio.sleep(2.5)  # past auth_refresh_age: the next request re-checks
    async with browser() as http:
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
    assert me.status_code == 403, me.text
    # the provider's refusal of her refresh token, named as such (not an outage)
    assert "The provider refused the refresh token of alice" in hub.log()
    assert "invalid_grant" in hub.log()


async def test_concurrent_rechecks_share_one_refresh_grant(oidc_provider):
    """A browser's burst of requests after auth_refresh_age: one refresh grant, not one
    per request (a provider with refresh-token reuse detection would revoke the grant)."""
    authenticator = make_authenticator(oidc_provider)
    model = await oidc_login(authenticator, oidc_provider, "alice")
    assert model is not None
    user = FakeUser("alice", model["auth_state"])
    grants: list[str] = []
    fetch = authenticator.httpfetch

    async def counting_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        if url == authenticator.token_url:
            grants.append(url)
        return await fetch(url, *args, **kwargs)

    authenticator.httpfetch = counting_fetch  # type: ignore[method-assign]
    results = await asyncio.gather(*(authenticator.refresh_user(user) for _ in range(5)))
    assert len(grants) == 1
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(r is True for r in results if not isinstance(r, dict))
    # A later call (not waiting for that one) asks the provider again.
    assert isinstance(await authenticator.refresh_user(user), dict)
    assert len(grants) == 2


async def test_recheck_grace_trusts_a_fresh_login_only_where_configured(oidc_provider_factory):
    """recheck_grace (opt-in, 0 by default): a request's re-check within it of the provider's
    last confirmation does not ask the provider again — the background re-check always does,
    and by default every re-check asks (a user deleted a second ago is refused)."""
    provider = oidc_provider_factory(accounts=accounts())
    request = SimpleNamespace()  # a request's re-check (pre-spawn, auth_refresh_age)
    graced = make_authenticator(provider, recheck_grace=60)
    default = make_authenticator(provider)
    assert default.recheck_grace == 0
    users = {}
    for name, authenticator in (("graced", graced), ("default", default)):
        model = await oidc_login(authenticator, provider, "alice")
        assert model is not None
        users[name] = FakeUser("alice", model["auth_state"])
    await provider.set_claims("alice", None)  # deleted at the provider just after login

    assert await graced.refresh_user(users["graced"], request) is True  # not asked
    assert await graced.refresh_user(users["graced"], None) is False  # background: asked
    assert await default.refresh_user(users["default"], request) is False  # asked
    with pytest.raises(ConfigurationError, match="between 0 and 300 seconds"):
        make_authenticator(provider, recheck_grace=301)


def test_provider_calls_have_their_own_connection_pool(oidc_provider_factory):
    """Not Tornado's shared client (10 requests at once, the rest queued until they time out:
    most logins of a 500-user storm failed with "Timeout in request queue", BENCHMARKS.md)."""
    provider = oidc_provider_factory(accounts=accounts())
    authenticator = make_authenticator(provider)
    assert authenticator.http_client is not AsyncHTTPClient()
    assert authenticator.http_client.max_clients == 64
    assert make_authenticator(provider, provider_connections=200).http_client.max_clients == 200
    with pytest.raises(ConfigurationError, match="between 1 and 1024"):
        make_authenticator(provider, provider_connections=0)


class SlowServer:
    """A loopback HTTP server that answers every GET after `delay` seconds and records how
    many requests it had in flight at once."""

    def __init__(self, delay: float) -> None:
        self.delay, self.in_flight, self.most_in_flight = delay, 0, 0
        server = self

        class Slow(tornado.web.RequestHandler):
            async def get(self) -> None:
                server.in_flight += 1
                server.most_in_flight = max(server.most_in_flight, server.in_flight)
                await asyncio.sleep(server.delay)
                server.in_flight -= 1
                self.write("ok")

        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/"
        self.http = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Slow)]))
        self.http.add_sockets(sockets)


async def test_provider_calls_wait_for_a_connection_on_their_own_budget(oidc_provider_factory):
    """Calls beyond `provider_connections` wait for a free connection up to
    `provider_queue_timeout`, apart from `http_timeout`: in the HTTP client's own queue the
    wait counted against the request's timeout, and a 500-user storm's logins failed with
    "Timeout in request queue" (BENCHMARKS.md)."""
    provider = oidc_provider_factory(accounts=accounts())
    server = SlowServer(delay=1.0)
    try:
        one = make_authenticator(provider, provider_connections=1, http_timeout=3.0)
        # the 4th waits 3 s for its turn: in the client's queue that alone was its timeout
        answers = await asyncio.gather(
            *(one.httpfetch(server.url, parse_json=False) for _ in range(4))
        )
        assert [a.body for a in answers] == [b"ok"] * 4
        assert server.most_in_flight == 1

        server.delay = 2.0
        impatient = make_authenticator(
            provider, provider_connections=1, http_timeout=5.0, provider_queue_timeout=1.0
        )
        outcomes = await asyncio.gather(
            *(impatient.httpfetch(server.url, parse_json=False) for _ in range(3)),
            return_exceptions=True,
        )
        assert outcomes[0].body == b"ok"
        for waited in outcomes[1:]:
            assert isinstance(waited, HTTPTimeoutError)
            assert "provider_queue_timeout" in str(waited)
            assert "1 connections to the provider" in str(waited)
    finally:
        server.http.stop()
    with pytest.raises(ConfigurationError, match="between 1 and 600 seconds"):
        make_authenticator(provider, provider_queue_timeout=0.5)


def test_auth_state_off_is_warned(oidc_provider, caplog):
    # Refused without the opt-in (issue 25.4, test_auth_key_rotation.py); warned with it.
    make_authenticator(oidc_provider, enable_auth_state=False, accept_no_revocation=True)
    assert "no re-check with the provider (removed users keep access)" in caplog.text


@pytest.mark.parametrize("rule", ["token_type", "weak_key", "groups", "identity"])
async def test_rules_hold_for_refreshed_tokens(oidc_provider_factory, hub_factory, rule):
    """Login and re-check share one verification path: each login rule above also
    refuses a re-check (the login itself is well-formed; only the refresh is not)."""
    hostile: dict[str, Any] = {"refreshOnly": True}
    if rule == "token_type":
        hostile["tokenType"] = "N_A"
    if rule == "weak_key":
        hostile["weakKey"] = _rsa_jwk("weak-1024", bits=1024)
    provider = oidc_provider_factory(accounts=accounts(), hostile=hostile)
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 1})
    async with browser() as http:
        assert (await hub.login(http, "alice")).status_code == 200
    as_alice = await api_token_headers(hub, "alice")
    claims = copy.deepcopy(DEMO_ACCOUNTS["alice"]["claims"])
    if rule == "groups":
        claims["groups"] = "hub-admins"
    if rule == "identity":
        claims["email"] = "alice@example.com\nx-evil: 1"
    await provider.set_claims("alice", claims)
    await asyncio.sleep(1.5)  # past auth_refresh_age: the next request re-checks
    async with browser() as http:
        me = await http.get(f"{hub.url}/hub/api/user", headers=as_alice)
    assert me.status_code == 403, me.text
    expected = {
        "token_type": "token_type 'N_A', not Bearer",
        "weak_key": "has 1024 bits; at least 2048 are required",
        "groups": "sent the 'groups' claim as a single string",
        "identity": "The Kubeflow identity from the 'email' claim contains",
    }[rule]
    assert expected in hub.log()
    model = await hub.user_model("alice")
    assert model is not None and model["admin"] is False


async def test_idle_server_activity_report_triggers_revocation(oidc_provider_factory, hub_factory):
    """A server nobody uses still reports activity with its own token (jupyterhub-
    singleuser, every JUPYTERHUB_ACTIVITY_INTERVAL = 300 s): that request re-checks its
    owner, so a removed user's idle server is stopped too."""
    provider = oidc_provider_factory(accounts=accounts())
    hub = await hub_factory(provider, authenticator={"auth_refresh_age": 1})
    async with browser() as http:
        assert (await hub.login(http, "alice")).status_code == 200
    async with hub.api() as api:
        spawn = await api.post("/users/alice/server")
        assert spawn.status_code in (201, 202), spawn.text
    record = hub.spawn_record("alice")
    assert record is not None
    as_server = {"Authorization": f"token {record['api_token']}"}
    claims = copy.deepcopy(DEMO_ACCOUNTS["alice"]["claims"])
    claims["groups"] = ["marketing"]
    await provider.set_claims("alice", claims)
    await asyncio.sleep(1.5)  # past auth_refresh_age
    now = datetime.now(UTC).isoformat()
    async with browser() as http:
        report = await http.post(
            f"{hub.url}/hub/api/users/alice/activity",
            headers=as_server,
            json={"last_activity": now, "servers": {"": {"last_activity": now}}},
        )
    assert report.status_code == 403, report.text
    model = await hub.user_model("alice")
    assert model is not None and model["servers"] == {}
    assert "Revoked access of alice" in hub.log() and "stopped: default server" in hub.log()
