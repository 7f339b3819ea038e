"""DnaOIDCAuthenticator in-process, with real codes and tokens from a real provider.

The hub-level behaviour (cookies, pages, the database) is in test_auth_hub.py; here the
authenticator's decisions are checked one by one.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from oauthenticator.oauth2 import _serialize_state
from tornado import web
from traitlets import TraitError
from traitlets.config import Config

from devstack.oidc_stack import (
    ADMIN_GROUPS,
    ALLOWED_GROUPS,
    HUB_SCOPES,
    TOKEN_CLIENT,
    Authorization,
    OIDCProvider,
)
from dna_hub import DnaOIDCAuthenticator
from dna_hub.auth import (
    AUTH_STATE_CLAIMS,
    AUTH_STATE_EXPIRES_AT,
    AUTH_STATE_GROUPS,
    AUTH_STATE_KUBEFLOW_USERID,
)


def make_authenticator(provider: OIDCProvider, **overrides: Any) -> DnaOIDCAuthenticator:
    settings: dict[str, Any] = {
        "issuer": provider.issuer,
        "client_id": TOKEN_CLIENT.client_id,
        "client_secret": TOKEN_CLIENT.client_secret,
        "oauth_callback_url": TOKEN_CLIENT.redirect_uris[0],
        "allow_insecure_loopback": True,
        "scope": HUB_SCOPES,
        "manage_groups": True,
        "allowed_groups": set(ALLOWED_GROUPS),
        "admin_groups": set(ADMIN_GROUPS),
        "enable_auth_state": True,
    }
    settings.update(overrides)
    return DnaOIDCAuthenticator(config=Config({"DnaOIDCAuthenticator": settings}))


class FakeCallbackHandler:
    """What `authenticate` reads from the hub's OAuth callback handler."""

    def __init__(self, authorization: Authorization, *, cookie_nonce: str | None = None):
        self._code = authorization.code
        self._cookie = _serialize_state(
            {
                "state_id": "s",
                "code_verifier": authorization.code_verifier,
                "nonce": authorization.nonce if cookie_nonce is None else cookie_nonce,
            }
        )

    def get_argument(self, name: str, default: Any = None) -> Any:
        return self._code if name == "code" else default

    def get_state_cookie(self) -> str:
        return self._cookie


class FakeUser:
    def __init__(self, name: str, auth_state: dict[str, Any] | None):
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state

    async def save_auth_state(self, auth_state: dict[str, Any]) -> None:
        self.auth_state = auth_state


async def login(
    authenticator: DnaOIDCAuthenticator, provider: OIDCProvider, username: str, **kwargs: Any
) -> dict[str, Any] | None:
    authorization = await provider.authorize(username)
    handler = FakeCallbackHandler(authorization, **kwargs)
    return await authenticator.get_authenticated_user(handler, None)


async def test_login_builds_auth_model(oidc_provider):
    authenticator = make_authenticator(oidc_provider)
    model = await login(authenticator, oidc_provider, "alice")
    assert model is not None
    assert model["name"] == "alice"  # preferred_username "Alice", normalised
    assert model["admin"] is False
    assert model["groups"] == ["data-science"]
    state = model["auth_state"]
    assert state[AUTH_STATE_KUBEFLOW_USERID] == "Alice.Smith@Example.com"  # case kept
    assert state[AUTH_STATE_GROUPS] == ["data-science"]
    assert state[AUTH_STATE_CLAIMS]["sub"] == "alice"
    assert state[AUTH_STATE_EXPIRES_AT] > 0
    for key in ("access_token", "refresh_token", "id_token", "token_response"):
        assert state[key]
    # Endpoints came from discovery.
    assert authenticator.authorize_url == oidc_provider.url("/auth")
    assert authenticator.end_session_url == oidc_provider.url("/session/end")


async def test_admin_group_and_email_fallback(oidc_provider):
    authenticator = make_authenticator(oidc_provider)
    bob = await login(authenticator, oidc_provider, "bob")
    assert bob is not None and bob["admin"] is True
    carol = await login(authenticator, oidc_provider, "carol")
    assert carol is not None
    assert carol["name"] == "carol@example.com"  # no preferred_username: email, lowercased
    assert carol["auth_state"][AUTH_STATE_KUBEFLOW_USERID] == "Carol@Example.com"


async def test_kubeflow_userid_claim_is_configurable(oidc_provider):
    authenticator = make_authenticator(oidc_provider, kubeflow_userid_claim="sub")
    model = await login(authenticator, oidc_provider, "alice")
    assert model is not None
    assert model["auth_state"][AUTH_STATE_KUBEFLOW_USERID] == "alice"


async def test_nonce_mismatch_rejected(oidc_provider):
    authenticator = make_authenticator(oidc_provider)
    with pytest.raises(web.HTTPError) as error:
        await login(authenticator, oidc_provider, "alice", cookie_nonce="another-login")
    assert error.value.status_code == 403
    assert "nonce" in str(error.value)


async def test_unverified_email_rejected(oidc_provider):
    authenticator = make_authenticator(oidc_provider)
    with pytest.raises(web.HTTPError) as error:
        await login(authenticator, oidc_provider, "eve")
    assert error.value.status_code == 403
    assert "not verified" in str(error.value)
    # Opting out lets eve in (she is in the allowed group).
    relaxed = make_authenticator(oidc_provider, require_email_verified=False)
    assert await login(relaxed, oidc_provider, "eve") is not None


async def test_outside_allowed_groups_rejected(oidc_provider):
    authenticator = make_authenticator(oidc_provider)
    assert await login(authenticator, oidc_provider, "mallory") is None


async def test_wrong_key_rejected_at_login(oidc_provider, oidc_provider_factory, oidc_keys):
    """A provider claiming our issuer but signing with another key is refused."""
    forger = oidc_provider_factory(issuer=oidc_provider.issuer, keys=[oidc_keys.rogue])
    authenticator = make_authenticator(oidc_provider)
    await authenticator.provider_metadata()
    # The token endpoint is the forger's: it answers with a forged id_token.
    authenticator._explicit_endpoints.add("token_url")
    authenticator.token_url = forger.url("/token")
    authorization = await forger.authorize("alice")
    with pytest.raises(web.HTTPError) as error:
        await authenticator.get_authenticated_user(FakeCallbackHandler(authorization), None)
    assert error.value.status_code == 403
    assert "signature" in str(error.value)


async def test_discovery_failure_is_a_clear_error():
    authenticator = DnaOIDCAuthenticator(
        issuer="http://127.0.0.1:9", allow_insecure_loopback=True, client_id="x"
    )
    with pytest.raises(web.HTTPError) as error:
        await authenticator.provider_metadata(user_facing=True)
    assert error.value.status_code == 503
    assert "cannot fetch" in str(error.value)


async def test_startup_check_logs_loudly(oidc_provider, oidc_provider_factory, caplog):
    impostor = oidc_provider_factory(issuer=oidc_provider.issuer)
    authenticator = make_authenticator(impostor, issuer=impostor.base_url)
    assert authenticator._startup_task is not None
    await authenticator._startup_task
    assert "OpenID provider check FAILED" in caplog.text
    assert "issuer mismatch" in caplog.text


async def test_explicit_endpoints_win(oidc_provider):
    authenticator = make_authenticator(oidc_provider, authorize_url="https://sso.example.com/a")
    await authenticator.provider_metadata()
    assert authenticator.authorize_url == "https://sso.example.com/a"
    assert authenticator.token_url == oidc_provider.url("/token")


# ---------------------------------------------------------------------------- identity


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"preferred_username": "  Alice "}, "alice"),
        ({"preferred_username": "", "email": "X@Y.org"}, "x@y.org"),
        ({"email": "X@Y.org"}, "x@y.org"),
    ],
)
def test_username_normalisation(claims, expected):
    authenticator = DnaOIDCAuthenticator()
    assert authenticator.username_from_claims(claims) == expected


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"preferred_username": "   "},
        {"preferred_username": "ali\x00ce"},
        {"preferred_username": "ali\nce"},
        {"preferred_username": "ali\u200bce"},  # zero-width space (format character)
        {"preferred_username": "a/b"},
    ],
)
def test_bad_usernames_rejected(claims):
    authenticator = DnaOIDCAuthenticator()
    with pytest.raises(web.HTTPError) as error:
        authenticator.username_from_claims(claims)
    assert error.value.status_code == 403


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id_token_signing_algs", ["HS256"]),
        ("id_token_signing_algs", ["none"]),
        ("id_token_signing_algs", []),
        ("id_token_leeway", 1000.0),
        ("id_token_leeway", -1.0),
        ("scope", ["email"]),
        ("validate_server_cert", False),
        ("reconcile_interval", 0.5),  # hammers the provider
        ("reconcile_interval", -1.0),
        ("reconcile_interval", 86401.0),  # removals would wait more than a day
    ],
)
def test_unsafe_config_refused(name, value):
    with pytest.raises((TraitError, ValueError)):
        DnaOIDCAuthenticator(**{name: value})


def test_secure_defaults():
    authenticator = DnaOIDCAuthenticator()
    assert authenticator.enable_pkce
    assert authenticator.require_email_verified
    assert authenticator.validate_server_cert
    assert not authenticator.allow_insecure_loopback
    assert not authenticator.allow_all
    assert "none" not in authenticator.id_token_signing_algs
    assert authenticator.username_claim == "preferred_username"
    assert authenticator.kubeflow_userid_claim == "email"
    # removals at the provider take effect within minutes without the user's cooperation
    assert 0 < authenticator.reconcile_interval <= 600


# ---------------------------------------------------------------------------- refresh


@pytest.fixture(scope="module")
def short_lived(oidc_provider_factory) -> OIDCProvider:
    """Access tokens of 4 s and id_tokens of 3 s; refresh tokens of a day."""
    return oidc_provider_factory(ttl={"AccessToken": 4, "IdToken": 3})


async def test_refresh_after_id_token_expired(short_lived):
    """oauthenticator #793: an expired id_token must not fail refresh (hence spawn)."""
    authenticator = make_authenticator(short_lived, id_token_leeway=0, token_refresh_margin=0)
    model = await login(authenticator, short_lived, "alice")
    assert model is not None
    user = FakeUser("alice", model["auth_state"])
    # Still fresh, yet every refresh re-checks with the provider (issue 18.3): the same
    # identity comes back with new tokens.
    rechecked = await authenticator.refresh_user(user)
    assert isinstance(rechecked, dict), rechecked
    assert rechecked["name"] == "alice"
    assert rechecked["auth_state"][AUTH_STATE_KUBEFLOW_USERID] == "Alice.Smith@Example.com"
    assert rechecked["auth_state"]["access_token"] != model["auth_state"]["access_token"]
    await asyncio.sleep(4.5)  # both the access token and the id_token have expired
    refreshed = await authenticator.refresh_user(user)
    assert isinstance(refreshed, dict), refreshed
    new_state = refreshed["auth_state"]
    old_state = model["auth_state"]
    assert new_state["access_token"] != old_state["access_token"]
    assert new_state["id_token"] != old_state["id_token"]  # a new, verified id_token
    assert new_state[AUTH_STATE_EXPIRES_AT] > old_state[AUTH_STATE_EXPIRES_AT]
    assert new_state[AUTH_STATE_KUBEFLOW_USERID] == "Alice.Smith@Example.com"
    assert new_state["refresh_token"]
    assert refreshed["name"] == "alice"
    assert refreshed["groups"] == ["data-science"]


async def test_failed_refresh_forces_login(short_lived):
    authenticator = make_authenticator(short_lived, id_token_leeway=0, token_refresh_margin=60)
    model = await login(authenticator, short_lived, "alice")
    assert model is not None
    state = dict(model["auth_state"], refresh_token="revoked-" + secrets.token_hex(8))
    refused = FakeUser("alice", state)
    assert await authenticator.refresh_user(refused) is False
    # the provider refused it (invalid_grant): the hub keeps no token it will not honour,
    # and records that team access was removed
    assert refused.auth_state is not None
    assert "refresh_token" not in refused.auth_state
    assert refused.auth_state["team_access_removed_at"] > 0
    no_refresh = dict(model["auth_state"], refresh_token=None)
    assert await authenticator.refresh_user(FakeUser("alice", no_refresh)) is False
    assert await authenticator.refresh_user(FakeUser("alice", None)) is False


# ---------------------------------------------------------------------------- logout


async def test_end_session_redirect(oidc_provider):
    authenticator = make_authenticator(
        oidc_provider, post_logout_redirect_url="http://127.0.0.1:9/hub/login"
    )
    url = await authenticator.end_session_redirect(None, "the-id-token")
    assert url is not None
    assert url.startswith(oidc_provider.url("/session/end?"))
    query = parse_qs(urlsplit(url).query)
    assert query["id_token_hint"] == ["the-id-token"]
    assert query["post_logout_redirect_uri"] == ["http://127.0.0.1:9/hub/login"]
    assert query["client_id"] == [TOKEN_CLIENT.client_id]
    off = make_authenticator(oidc_provider, end_provider_session_on_logout=False)
    assert await off.end_session_redirect(None, "the-id-token") is None
