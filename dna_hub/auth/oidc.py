"""`DnaOIDCAuthenticator`: corporate OpenID Connect login for the dna_hub front door.

Built on oauthenticator's `GenericOAuthenticator` (authorization-code flow, PKCE, state
cookie, managed groups, encrypted auth_state) and adds what "just OAuth2" lacks:

- endpoints from the issuer's discovery document (`discovery.py`);
- an id_token verified before any user exists: signature (JWKS), iss, aud/azp, exp/iat,
  and a per-login `nonce` kept next to the PKCE verifier in the state cookie (`tokens.py`);
- the hub username and the exact Kubeflow identity from configurable claims;
- each hub user bound to the (iss, sub) of its first login (`bind_subject`);
- strict token responses (Bearer only; a failed code exchange is a 400, not a 500);
- `refresh_user` that re-checks with the provider on every call (refresh grant, userinfo
  when no id_token comes back), never re-verifies a stored, naturally expired id_token
  (oauthenticator issue #793), and revokes the access of users no longer allowed
  (`revocation.py`);
- RP-initiated logout at the provider's `end_session_endpoint` (`handlers.py`).

The class holds the configuration and the flow; the tornado handlers live in
`handlers.py` and the pure claim rules (username, groups, email_verified, Kubeflow
identity) in `claims.py`, called by thin methods here that pass in the trait values.

auth_state keys (see `dna_hub.auth`): `kubeflow_userid`, `groups`, `oidc_claims`,
`expires_at`, `subject_binding`, plus oauthenticator's `access_token`, `refresh_token`,
`id_token`, `scope` and `token_response` (the tokens are removed at logout).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import importlib
import json
import time
from inspect import isawaitable
from typing import Any
from urllib.parse import urlencode, urljoin

from jupyterhub import orm
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import _deserialize_state
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.simple_httpclient import HTTPTimeoutError
from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate

from dna_hub.auth import (
    AUTH_STATE_BINDING,
    AUTH_STATE_CLAIMS,
    AUTH_STATE_CONFIRMED_AT,
    AUTH_STATE_EXPIRES_AT,
    AUTH_STATE_GROUPS,
    AUTH_STATE_KUBEFLOW_USERID,
    AUTH_STATE_TEAM_ACCESS_REMOVED_AT,
    binding,
)
from dna_hub.auth import claims as claim_rules
from dna_hub.auth.discovery import (
    DiscoveryCache,
    DiscoveryError,
    ProviderMetadata,
    check_endpoint_url,
)
from dna_hub.auth.handlers import (
    STORED_TOKEN_KEYS,
    DnaOIDCCallbackHandler,
    DnaOIDCLoginHandler,
    DnaOIDCLogoutHandler,
    GrantRefused,
    LoginFailed,
    LoginRejected,
)
from dna_hub.auth.revocation import revoke_access
from dna_hub.auth.tokens import (
    DEFAULT_ALGORITHMS,
    IdTokenVerifier,
    JWKSCache,
    TokenVerificationError,
    validate_algorithms,
)
from dna_hub.errors import ConfigurationError

#: id_token claims that describe the login itself; kept when a re-check gets no id_token.
_LOGIN_CLAIMS = ("iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "acr", "amr")

#: True inside the background re-check of every user (`reconcile_users`).
_RECONCILING: contextvars.ContextVar[bool] = contextvars.ContextVar("reconciling", default=False)

#: Endpoint traits that discovery fills unless the admin configured them explicitly.
_ENDPOINT_TRAITS = {
    "authorize_url": "authorization_endpoint",
    "token_url": "token_endpoint",
    "userdata_url": "userinfo_endpoint",
    "jwks_url": "jwks_uri",
    "end_session_url": "end_session_endpoint",
}


def _within(
    trait: str, value: float, low: float, high: float, unit: str = "", *, why: str = ""
) -> float:
    """``value`` of ``DnaOIDCAuthenticator.<trait>``, or a ConfigurationError naming the range."""
    if not low <= value <= high:
        raise ConfigurationError(
            f"DnaOIDCAuthenticator.{trait} must be between {low:g} and {high:g}{unit} "
            f"(got {value:g}){why}"
        )
    return value


class DnaOIDCAuthenticator(GenericOAuthenticator):
    """Log in with a corporate OpenID Connect provider, configured from its issuer URL."""

    login_handler = DnaOIDCLoginHandler
    callback_handler = DnaOIDCCallbackHandler
    logout_handler = DnaOIDCLogoutHandler
    user_auth_state_key = AUTH_STATE_CLAIMS

    # ------------------------------------------------------------------ configuration

    issuer = Unicode(
        "",
        config=True,
        help="""
        The OpenID Provider's issuer URL, e.g. `https://login.example.com/realms/corp`.

        Endpoints come from `<issuer>/.well-known/openid-configuration`; that document's
        `issuer` and every id_token's `iss` must equal this value exactly. Must be https
        (see `allow_insecure_loopback`).
        """,
    )

    allow_insecure_loopback = Bool(
        False,
        config=True,
        help="""
        Allow a plain-http issuer and endpoints, but only on a loopback address
        (127.0.0.0/8, ::1, localhost). For tests and local development: traffic to
        loopback never leaves the machine. Any other plain-http URL is always refused.
        """,
    )

    jwks_url = Unicode(
        "",
        config=True,
        help="Override the JWKS URL from discovery (normally leave empty).",
    )

    end_session_url = Unicode(
        "",
        config=True,
        help="""
        Override the provider's `end_session_endpoint` from discovery (RP-initiated
        logout). Normally leave empty.
        """,
    )

    discovery_ttl = Float(
        3600.0,
        config=True,
        help="Seconds to cache the discovery document before fetching it again.",
    )

    http_timeout = Float(
        10.0,
        config=True,
        help="""
        Connect and request timeout (seconds) for every call to the provider, unless
        `http_request_kwargs` sets its own.
        """,
    )

    provider_connections = Int(
        64,
        config=True,
        help="""
        How many requests to the provider may be in flight at once (token exchanges,
        refresh grants, userinfo); the others wait for a free one, up to
        `provider_queue_timeout`. oauthenticator otherwise uses Tornado's shared client,
        which allows 10 and counts the wait in its queue against the request's own
        timeout: in a login storm most logins and pre-spawn re-checks failed with "Timeout
        in request queue" — 10 is what a single-user test needs, not a Monday morning.
        Between 1 and 1024.
        """,
    )

    provider_queue_timeout = Float(
        60.0,
        config=True,
        help="""
        Seconds a call to the provider may wait for one of the `provider_connections`
        (a login storm) before it fails as a timeout. The wait is not part of
        `http_timeout`, which bounds the request itself once it is sent. The default
        matches the lifetime providers commonly give an authorization code (60 s): a
        login that waits longer would be refused by the provider anyway. Between 1 and
        600.
        """,
    )

    @validate("provider_queue_timeout")
    def _validate_provider_queue_timeout(self, proposal: Any) -> float:
        return _within("provider_queue_timeout", float(proposal["value"]), 1, 600, " seconds")

    @validate("provider_connections")
    def _validate_provider_connections(self, proposal: Any) -> int:
        return int(_within("provider_connections", int(proposal["value"]), 1, 1024))

    @default("http_client")
    def _default_http_client(self) -> AsyncHTTPClient:
        # Its own client, not Tornado's process-wide one (max_clients 10, shared with
        # everything else in the hub that uses AsyncHTTPClient()).
        return AsyncHTTPClient(force_instance=True, max_clients=self.provider_connections)

    id_token_signing_algs = List(
        Unicode(),
        default_value=list(DEFAULT_ALGORITHMS),
        config=True,
        help="""
        Accepted id_token signature algorithms. Asymmetric only: `none` and HS* are
        refused, because HS* "verified" with a public key lets anyone forge tokens.
        """,
    )

    id_token_leeway = Float(
        30.0,
        config=True,
        help="Clock-skew tolerance (seconds, 0-300) for the id_token's exp and iat.",
    )

    jwks_min_refetch_interval = Float(
        60.0,
        config=True,
        help="""
        Minimum seconds between JWKS fetches caused by an unknown key id, so forged
        tokens cannot make the hub hammer the provider.
        """,
    )

    jwks_max_age = Float(
        3600.0,
        config=True,
        help="Seconds after which the JWKS is fetched again (drops withdrawn keys).",
    )

    username_fallback_claim = Unicode(
        "email",
        config=True,
        help="""
        Claim for the hub username when `username_claim` (default `preferred_username`)
        is absent. Empty: no fallback. The name is lowercased and stripped; names that are
        empty or contain control characters are refused.
        """,
    )

    kubeflow_userid_claim = Unicode(
        "email",
        config=True,
        help="""
        Claim holding the identity Kubeflow sees, kept exactly (case included) in
        `auth_state["kubeflow_userid"]`; the spawner makes it the Profile owner. It must
        match the Kubeflow auth proxy's USERID_CLAIM (e.g. `email` or `sub`).
        """,
    )

    groups_claim = Unicode(
        "groups",
        config=True,
        help="""
        Claim with the user's groups (a list of strings), stored in
        `auth_state["groups"]`; with `manage_groups` they become JupyterHub groups used
        by `allowed_groups` and `admin_groups`.
        """,
    )

    require_email_verified = Bool(
        True,
        config=True,
        help="""
        Refuse logins unless the `email_verified` claim is true. On by default because
        the email is the default Kubeflow identity: an unverified address could name
        someone else's profile. Set False only for providers that never send the claim
        and only hand out addresses they own (e.g. Microsoft Entra ID).
        """,
    )

    fetch_userinfo = Bool(
        False,
        config=True,
        help="""
        Also call the userinfo endpoint and add its claims (for providers that keep
        e.g. groups out of the id_token). Its `sub` must equal the id_token's.
        """,
    )

    token_refresh_margin = Float(
        300.0,
        config=True,
        help="""
        Without a refresh token, `refresh_user` (run before a spawn and every
        `auth_refresh_age`) re-checks the user at the userinfo endpoint with the stored
        access token only while it stays valid for this many seconds; after that a new
        login is required. (With a refresh token every re-check uses the refresh grant.)
        """,
    )

    end_provider_session_on_logout = Bool(
        True,
        config=True,
        help="""
        On hub logout, also end the provider session (RP-initiated logout with
        `id_token_hint`) when the provider announces an `end_session_endpoint`.
        """,
    )

    post_logout_redirect_url = Unicode(
        "",
        config=True,
        help="""
        Where the provider sends the browser after ending its session; must be
        registered with the provider. Default: the hub's login page next to the OAuth
        callback URL.
        """,
    )

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "email", "profile"]

    @default("login_service")
    def _login_service_default(self) -> str:
        return "OpenID Connect"

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        # allowed_groups/admin_groups only work on JupyterHub groups, and OAuthenticator
        # refuses them (hub does not start) unless groups are managed. Groups come from the
        # provider's claims, so manage them by default; an explicit False with either set
        # still fails at startup with OAuthenticator's message naming both traits.
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self) -> str:
        return AUTH_STATE_GROUPS

    @default("validate_server_cert")
    def _validate_server_cert_default(self) -> bool:
        return True

    @validate("validate_server_cert")
    def _refuse_no_tls_verification(self, proposal: Any) -> bool:
        if not proposal.value:
            raise ValueError(
                "DnaOIDCAuthenticator never disables TLS verification; trust a private CA "
                "with http_request_kwargs={'ca_certs': '/path/ca.pem'} instead"
            )
        return True

    @validate("id_token_signing_algs")
    def _validate_algs(self, proposal: Any) -> list[str]:
        return validate_algorithms(proposal.value)

    @validate("id_token_leeway")
    def _validate_leeway(self, proposal: Any) -> float:
        if not 0 <= proposal.value <= 300:
            raise ValueError("id_token_leeway must be between 0 and 300 seconds")
        return proposal.value

    @validate("scope")
    def _validate_scope(self, proposal: Any) -> list[str]:
        if "openid" not in proposal.value:
            raise ValueError("scope must include 'openid' for OpenID Connect")
        return proposal.value

    allow_single_string_groups = Bool(
        False,
        config=True,
        help="""
        Accept a `groups_claim` that is a single string as one group. Off by default: a
        groups claim must be a JSON list of strings, and anything else refuses the login
        (a bare string equal to an admin group would otherwise make its holder admin).
        Turn on only for a provider known to send one group as a plain string.
        """,
    )

    revoke_removed_users = Bool(
        True,
        config=True,
        help="""
        When a re-check with the provider (every `auth_refresh_age`, before every spawn)
        shows a user may no longer log in (removed from the allowed groups, email no
        longer verified, claims now invalid), stop their servers, revoke their API
        tokens and end their browser sessions at once, instead of only refusing their
        next request.
        """,
    )

    team_access_hook = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="""
        Called after every re-check with the provider, so that access the provider took
        away is taken away in Kubeflow without the user's cooperation:
        `await hook(authenticator, user, auth_state, removed=...)`, or its import path
        `"module:function"` (for YAML values). After a successful
        re-check `auth_state` is the new one (`removed=False`); after a revocation
        (`revoke_removed_users`) it is the last stored one and `removed=True`. With
        dna_hub's team profiles set it to `dna_hub.team_login:sync_teams_at_recheck`
        (re-syncs the contributor bindings to the verified groups, stops team servers the
        user is no longer an editor of, removes every binding of a revoked user). A
        failing hook is logged and never fails the request.
        """,
    )

    reconcile_interval = Float(
        300.0,
        config=True,
        help="""
        Seconds between two re-checks of every hub user with the provider, in the
        background, whether or not they use the hub (the same re-check as `refresh_user`:
        refresh grant or userinfo, allow checks, `revoke_removed_users`,
        `team_access_hook`). Bounds how long a user removed at the provider keeps access
        without logging in: about one interval plus the time the re-checks take (users are
        re-checked one at a time). 0 turns it off (then removals take effect only when the
        user next makes a request); the minimum otherwise is 1.
        """,
    )

    recheck_grace = Float(
        0.0,
        config=True,
        help="""
        Seconds after the provider confirmed a user (their login, or a re-check) during
        which a request-driven re-check — before a spawn (`refresh_pre_spawn`), or when a
        session reaches `auth_refresh_age` — does not ask the provider again. A login is
        usually followed at once by a spawn: without this, every spawn of a login storm
        waits for a second round trip to the provider, and JupyterHub redirects to the
        spawn-pending page after 1 s whether the spawn has begun or not, so users of a slow
        provider see "server not running" while it starts. Tokens that need refreshing
        (`token_refresh_margin`) are always refreshed, and the background re-check
        (`reconcile_interval`) always asks the provider. The default, 0, asks it every
        time (a user removed at the provider a second ago cannot spawn); a deployment that
        expects login storms may trade a few seconds of that for one round trip per spawn
        (BENCHMARKS.md measures both). At most 300.
        """,
    )

    @validate("recheck_grace")
    def _validate_recheck_grace(self, proposal: Any) -> float:
        return _within(
            "recheck_grace",
            float(proposal["value"]),
            0,
            300,
            " seconds",
            why=": it is how long a login vouches for its user",
        )

    team_access_lease = Float(
        43200.0,
        config=True,
        help="""
        Seconds team access lasts past the provider's last confirmation of a user the hub
        cannot re-check (it holds no tokens for them: they logged out, or their tokens
        expired without a refresh token). The background re-check (`reconcile_interval`)
        then removes their team access (`team_access_hook` with ``removed=True``); their
        next login grants it again. Users whose refresh token the provider refuses
        (``invalid_grant``: deleted, disabled, sessions revoked) lose it at that re-check,
        without waiting for the lease. 0 keeps team access of users who cannot be
        re-checked until they are deleted (not recommended); otherwise at least 1.
        """,
    )

    team_sweep_hook = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="""
        Called after every background re-check of all users (`reconcile_interval`) to
        remove team access the hub granted to identities that no hub user holds any more
        (a user deleted while the hook failed, a hub database restored from a backup):
        `await hook(authenticator)`, or its import path `"module:function"`. The hook asks
        `authenticator.entitled_identities()` for who may keep access. With dna_hub's team
        profiles set it to `dna_hub.team_login:sweep_team_access`. A failing hook is logged.
        """,
    )

    @validate("team_access_lease")
    def _validate_team_access_lease(self, proposal: Any) -> float:
        value = float(proposal.value)
        if value != 0 and value < 1:
            raise TraitError(
                f"DnaOIDCAuthenticator.team_access_lease must be 0 (never) or at least 1 "
                f"second, not {proposal.value!r}"
            )
        return value

    @validate("reconcile_interval")
    def _validate_reconcile_interval(self, proposal: Any) -> float:
        value = float(proposal.value)
        if value != 0 and not 1 <= value <= 86400:
            raise TraitError(
                f"DnaOIDCAuthenticator.reconcile_interval must be 0 (off) or 1 to 86400 "
                f"seconds, not {proposal.value!r}"
            )
        return value

    accept_no_revocation = Bool(
        False,
        config=True,
        help="""
        Allow `enable_auth_state = False` (default True here; False is refused at startup
        unless this is set). Without auth_state there is no subject binding, no re-check
        with the provider, no revocation of removed users (they keep access until their hub
        cookie expires) and no Kubeflow identity claim (the spawner needs
        `profile_owner_fallback`). Set True only if you accept all of that.
        """,
    )

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        # Subject binding, re-checks, revocation and the Kubeflow identity all live in
        # auth_state; JupyterHub then refuses to start without JUPYTERHUB_CRYPT_KEY.
        return True

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self) -> bool:
        # Re-check with the provider before every spawn (tokens and group membership).
        return True

    @default("auth_refresh_strict")
    def _auth_refresh_strict_default(self) -> bool:
        # JupyterHub >= 6.1 only (older versions are always strict): a failed refresh
        # must also stop API-token requests and admin spawns, not only browser requests.
        return True

    # ------------------------------------------------------------------ lifecycle

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Endpoints the admin set explicitly win over discovery.
        self._explicit_endpoints = {name for name in _ENDPOINT_TRAITS if getattr(self, name)}
        self._discovery: DiscoveryCache | None = None
        self._jwks: JWKSCache | None = None
        self._startup_task: asyncio.Task[None] | None = None
        # One re-check per user at a time; requests that waited for it share its outcome
        # (concurrent refresh grants with one refresh token can make a provider with
        # reuse detection revoke the whole grant).
        self._recheck_locks: dict[str, asyncio.Lock] = {}
        self._provider_slots: asyncio.Semaphore | None = None  # made on first use, on the loop
        self._last_recheck: dict[str, tuple[float, bool]] = {}
        if not self.enable_auth_state:
            if not self.accept_no_revocation:
                raise ConfigurationError(
                    "Login is misconfigured. Please contact your platform administrator.",
                    "DnaOIDCAuthenticator needs Authenticator.enable_auth_state = True (with "
                    "JUPYTERHUB_CRYPT_KEY): without it there is no subject binding, no re-check "
                    "with the provider and no revocation of removed users. Set "
                    "DnaOIDCAuthenticator.accept_no_revocation = True to run without them.",
                )
            self.log.warning(
                "DnaOIDCAuthenticator without enable_auth_state (accept_no_revocation): no "
                "subject binding, no re-check with the provider (removed users keep access), "
                "no Kubeflow identity"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # constructed outside the hub (tests, config checks)
        if loop is not None and self.issuer:
            # JupyterHub builds the authenticator inside its running loop: check the
            # provider now, without blocking startup, so a wrong issuer is seen at once.
            self._startup_task = loop.create_task(self._startup_check())
        self._reconcile_task: asyncio.Task[None] | None = None
        self._team_tasks: set[asyncio.Task[None]] = set()
        if loop is not None and self.enable_auth_state and self.reconcile_interval:
            self._reconcile_task = loop.create_task(self._reconcile_forever())

    async def _startup_check(self) -> None:
        """Log loudly at startup if the provider is unusable or cannot meet our config.

        Only logs: the hub still starts (the provider may come back), but the admin sees
        the cause now rather than at the first user's failed login.
        """
        try:
            metadata = await self.provider_metadata()
        except Exception as e:
            self.log.error(
                "\n%s\nDnaOIDCAuthenticator: OpenID provider check FAILED: %s\n"
                "Logins will fail until this is fixed.\n%s",
                "!" * 72,
                e,
                "!" * 72,
            )
            return
        offered = set(metadata.id_token_signing_alg_values_supported)
        if offered and not offered & set(self.id_token_signing_algs):
            self.log.error(
                "The provider signs id_tokens with %s but id_token_signing_algs allows only "
                "%s: every login will be refused",
                sorted(offered),
                self.id_token_signing_algs,
            )
        methods = metadata.code_challenge_methods_supported
        if self.enable_pkce and methods and "S256" not in methods:
            self.log.warning("The provider does not announce PKCE S256 support (%s)", methods)
        self.log.info("OpenID provider %s discovered", metadata.issuer)

    async def httpfetch(self, url: str, *args: Any, **kwargs: Any) -> Any:
        """oauthenticator's fetch with `http_timeout`, so a hung provider cannot hang logins."""
        # Every call to the provider gets a timeout unless http_request_kwargs has one.
        for key in ("connect_timeout", "request_timeout"):
            if key not in self.http_request_kwargs:
                kwargs.setdefault(key, self.http_timeout)
        # Queue here, with its own budget: the client's queue would count the wait against
        # the request's timeout (and http_client has room for every slot, so it never does).
        if self._provider_slots is None:
            self._provider_slots = asyncio.Semaphore(self.provider_connections)
        try:
            await asyncio.wait_for(self._provider_slots.acquire(), self.provider_queue_timeout)
        except TimeoutError:
            raise HTTPTimeoutError(
                f"Timeout waiting {self.provider_queue_timeout:g} s for one of the "
                f"{self.provider_connections} connections to the provider "
                "(DnaOIDCAuthenticator.provider_connections, provider_queue_timeout)"
            ) from None
        try:
            return await super().httpfetch(url, *args, **kwargs)
        finally:
            self._provider_slots.release()

    async def _fetch_json(self, url: str) -> Any:
        """GET a JSON document from the provider (discovery, JWKS) with the hub's TLS rules."""
        return await self.httpfetch(
            url,
            label=f"fetching {url}",
            method="GET",
            headers={"Accept": "application/json", "User-Agent": "JupyterHub dna-hub"},
            validate_cert=self.validate_server_cert,
        )

    async def provider_metadata(self, *, user_facing: bool = False) -> ProviderMetadata:
        """The discovery document (cached), with explicitly configured URLs applied.

        With `user_facing`, failures become a 503 page with the reason instead of an
        exception: the admin sees what is wrong, nobody is logged in.
        """
        try:
            if self._discovery is None:
                self._discovery = DiscoveryCache(
                    self.issuer,
                    self._fetch_json,
                    ttl=self.discovery_ttl,
                    allow_insecure_loopback=self.allow_insecure_loopback,
                    log=self.log,
                )
            metadata = await self._discovery.get()
            # Explicitly configured endpoints pass the same https check as discovered
            # ones: an http jwks_url would let anyone on the path forge id_tokens.
            # (end_session_url is checked at logout, where it is used.)
            for name in sorted(self._explicit_endpoints - {"end_session_url"}):
                check_endpoint_url(
                    getattr(self, name),
                    f"DnaOIDCAuthenticator.{name}",
                    allow_insecure_loopback=self.allow_insecure_loopback,
                )
        except DiscoveryError as e:
            self.log.error("OpenID discovery failed: %s", e)
            if user_facing:
                error = web.HTTPError(503, "%s", f"Login is unavailable: {e}")
                error.jupyterhub_message = (  # type: ignore[attr-defined]
                    f"Login is unavailable: the OpenID provider could not be used ({e})."
                )
                raise error from e
            raise
        for name, key in _ENDPOINT_TRAITS.items():
            if name not in self._explicit_endpoints:
                value = getattr(metadata, key) or ""
                if getattr(self, name) != value:
                    setattr(self, name, value)
        return metadata

    def _verifier(self) -> IdTokenVerifier:
        """An id_token verifier for the current config; the JWKS cache outlives it.

        The cache is rebuilt only when discovery moved `jwks_url`, so keys and the
        refetch rate limit survive between logins.
        """
        if self._jwks is None or self._jwks.jwks_uri != self.jwks_url:
            self._jwks = JWKSCache(
                self.jwks_url,
                self._fetch_json,
                min_refetch_interval=self.jwks_min_refetch_interval,
                max_age=self.jwks_max_age,
                log=self.log,
            )
        return IdTokenVerifier(
            issuer=self.issuer,
            client_id=self.client_id,
            jwks=self._jwks,
            algorithms=self.id_token_signing_algs,
            leeway=self.id_token_leeway,
        )

    async def verify_id_token(
        self, id_token: str | None, *, nonce: str | None, require_nonce: bool = True
    ) -> dict[str, Any]:
        """Verify an id_token for this client; raise TokenVerificationError if bad."""
        await self.provider_metadata()
        return await self._verifier().verify(
            id_token or "", nonce=nonce, require_nonce=require_nonce
        )

    # ------------------------------------------------------------------ identity

    def normalize_username(self, username: str) -> str:
        """Stripped and lowercased (then `username_map`): one hub user per person."""
        return claim_rules.normalize_username(username, self.username_map)

    def validate_username(self, username: str) -> bool:
        """JupyterHub's check, after refusing control and format characters."""
        if claim_rules.has_control_characters(username):
            return False
        return super().validate_username(username)

    def username_from_claims(self, claims: dict[str, Any]) -> str:
        """The normalised hub username, or LoginRejected with the reason."""
        try:
            return claim_rules.username_from_claims(
                claims,
                username_claim=self.username_claim,
                fallback_claim=self.username_fallback_claim,
                normalize=self.normalize_username,
                validate=self.validate_username,
            )
        except claim_rules.ClaimError as e:
            raise LoginRejected(str(e)) from None

    def groups_from_claims(self, claims: dict[str, Any]) -> list[str]:
        """The user's groups from `groups_claim`, or LoginRejected if it is malformed."""
        try:
            return claim_rules.groups_from_claims(
                claims, self.groups_claim, allow_single_string=self.allow_single_string_groups
            )
        except claim_rules.ClaimError as e:
            value = claims.get(self.groups_claim)
            self.log.warning("Refused login: malformed %r claim %r", self.groups_claim, value)
            raise LoginRejected(str(e)) from None

    def check_email_verified(self, claims: dict[str, Any]) -> None:
        """LoginRejected unless the email is verified (when `require_email_verified`)."""
        if not self.require_email_verified or claim_rules.email_verified(claims):
            return
        raise LoginRejected(
            "Your email address is not verified with the identity provider, so you cannot log in."
        )

    async def _userinfo(self, token_info: dict[str, Any], sub: str) -> dict[str, Any]:
        """The userinfo claims for `sub`, or LoginRejected (no endpoint, other subject)."""
        await self.provider_metadata()  # endpoints checked (https) and current
        if not self.userdata_url:
            raise LoginRejected("The provider has no userinfo endpoint (fetch_userinfo).")
        info = await self.httpfetch(
            self.userdata_url,
            label="fetching userinfo",
            method="GET",
            headers=self.build_userdata_request_headers(
                token_info["access_token"], token_info.get("token_type", "Bearer")
            ),
            validate_cert=self.validate_server_cert,
        )
        # Core 5.3.2: userinfo sub MUST equal the id_token sub, or it is someone else.
        if not isinstance(info, dict) or info.get("sub") != sub:
            raise LoginRejected("The provider's userinfo is for a different subject.")
        return info

    async def claims_to_auth_model(
        self, token_info: dict[str, Any], claims: dict[str, Any], *, userinfo: bool = True
    ) -> dict[str, Any]:
        """Turn verified claims into the hub's auth model (raise LoginRejected if unfit).

        `userinfo=False` when the caller already merged userinfo claims (a re-check).
        """
        if self.fetch_userinfo and userinfo:
            info = await self._userinfo(token_info, claims["sub"])
            # The verified id_token wins for the claims that identify the token; email
            # and email_verified come from one source.
            claims = claim_rules.merge_userinfo(claims, info)
        self.check_email_verified(claims)
        username = self.username_from_claims(claims)
        try:
            kubeflow_userid = claim_rules.kubeflow_userid_from_claims(
                claims, self.kubeflow_userid_claim
            )
        except claim_rules.ClaimError as e:
            raise LoginRejected(str(e)) from None
        auth_state = self.build_auth_state_dict(token_info, claims)
        if isawaitable(auth_state):
            auth_state = await auth_state
        auth_state[AUTH_STATE_KUBEFLOW_USERID] = kubeflow_userid
        auth_state[AUTH_STATE_GROUPS] = self.groups_from_claims(claims)
        # the provider vouched for these claims now (a login or a successful re-check)
        auth_state[AUTH_STATE_CONFIRMED_AT] = time.time()
        expires_in = token_info.get("expires_in")
        auth_state[AUTH_STATE_EXPIRES_AT] = (
            time.time() + float(expires_in) if isinstance(expires_in, int | float) else None
        )
        if self.modify_auth_state_hook is not None:
            auth_state = await self._call_modify_auth_state_hook(auth_state)
        auth_model: dict[str, Any] = {
            "name": username,
            "admin": True if username in self.admin_users else None,
            "auth_state": auth_state,
        }
        auth_model = await self.update_auth_model(auth_model)
        if self.manage_groups:
            groups = set(await self.get_user_groups(auth_model["auth_state"]))
            auth_model["groups"] = sorted(groups)
            if self.admin_groups and not auth_model["admin"]:
                auth_model["admin"] = bool(groups & self.admin_groups)
        return auth_model

    # ------------------------------------------------------------------ tokens

    async def get_token_info(self, handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        """The token endpoint's answer (login and refresh alike), checked.

        A failed request (e.g. a forged or already used `code`) raises LoginFailed: a
        4xx page and one log line, never a traceback. A `token_type` other than Bearer
        (OIDC Core 3.1.3.3, compared case-insensitively) is refused.
        """
        try:
            response = await self.httpfetch(
                self.token_url,
                label="requesting tokens",
                method="POST",
                headers=self.build_token_info_request_headers(),
                body=urlencode(params).encode("utf-8"),
                validate_cert=self.validate_server_cert,
                parse_json=False,
                raise_error=False,
            )
        except (HTTPClientError, OSError) as e:
            raise LoginFailed(f"the token endpoint could not be reached ({e})") from None
        try:
            token_info = json.loads(response.body or b"null")
        except ValueError:
            token_info = None
        if response.code != 200 or not isinstance(token_info, dict):
            error = token_info if isinstance(token_info, dict) else {}
            # RFC 6749 5.2: invalid_grant (a 400) is the provider refusing this user's code
            # or refresh token; anything else (invalid_client, 5xx) is not about the user
            refused = response.code == 400 and error.get("error") == "invalid_grant"
            raise (GrantRefused if refused else LoginFailed)(
                f"the token endpoint answered {response.code} "
                f"{str(error.get('error', ''))[:100]!r}: "
                f"{str(error.get('error_description', ''))[:200]!r}"
            )
        if "access_token" not in token_info:
            raise LoginFailed("the token endpoint returned no access_token")
        token_type = token_info.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise LoginFailed(f"the token endpoint returned token_type {token_type!r}, not Bearer")
        return token_info

    def get_callback_url(self, handler: Any = None) -> str:
        """The configured `oauth_callback_url`; never one built from the request's Host."""
        if not self.oauth_callback_url:
            error = web.HTTPError(503, "DnaOIDCAuthenticator.oauth_callback_url is not set")
            error.jupyterhub_message = (  # type: ignore[attr-defined]
                "Login is unavailable: the hub's oauth_callback_url is not configured."
            )
            raise error
        return self.oauth_callback_url

    # ------------------------------------------------------------------ subject binding

    def bind_subject(
        self, username: str, claims: dict[str, Any], stored: dict[str, Any] | None
    ) -> dict[str, str] | None:
        """The (issuer, subject) binding for `username` (:func:`dna_hub.auth.binding.bind`)."""
        if not self.enable_auth_state:
            return None
        return binding.bind(username, claims, stored, binding.hub_secrets(), self.log)

    def _refuse_unreadable_auth_state(self, user: Any, claims: dict[str, Any]) -> None:
        """LoginRejected if `user` has auth_state that the current keys cannot decrypt.

        JupyterHub's `get_auth_state` answers None both for "no auth_state" and for
        "cannot decrypt it" (e.g. the key that encrypted it was dropped from
        JUPYTERHUB_CRYPT_KEY); binding afresh in the second case would hand the account to
        whoever logs in first. An admin re-binds by replacing the auth_state
        (docs/deploy.md, "Re-binding").
        """
        if getattr(user, "encrypted_auth_state", None) is None:
            return  # never had auth_state: a first login binds
        self.log.warning(
            "Refused login as hub user %s by sub %r at %s: its auth_state cannot be "
            "decrypted with the current JUPYTERHUB_CRYPT_KEY, so its subject binding cannot "
            "be checked (admin re-bind: PATCH /hub/api/users/%s with "
            '{"auth_state": {}}, docs/deploy.md)',
            user.name,
            claims.get("sub"),
            claims.get("iss"),
            user.name,
        )
        raise LoginRejected(
            f"The hub cannot verify that the account {user.name!r} is yours (its stored "
            "login data is unreadable). Please ask your hub administrator to re-bind it."
        )

    # ------------------------------------------------------------------ login

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict:
        """Code for tokens, verify the id_token, then build the auth model.

        Overridden (unlike in oauthenticator's subclasses) because the nonce check needs
        the handler's state cookie; everything is verified before JupyterHub sees a name.
        """
        if not self.client_id or not self.client_secret:
            raise LoginRejected("DnaOIDCAuthenticator needs client_id and client_secret.")
        await self.provider_metadata(user_facing=True)
        params = self.build_access_tokens_request_params(handler, data)
        token_info = await self.get_token_info(handler, params)
        nonce = _deserialize_state(handler.get_state_cookie() or "").get("nonce")
        try:
            claims = await self.verify_id_token(
                token_info.get("id_token"), nonce=nonce, require_nonce=True
            )
        except TokenVerificationError as e:
            self.log.warning("Rejected id_token (%s): %s", e.reason, e)
            raise LoginRejected(f"The identity token was rejected ({e.reason}): {e}") from e
        auth_model = await self.claims_to_auth_model(token_info, claims)
        stored = None
        find_user = getattr(handler, "find_user", None)
        if find_user is not None:
            existing = find_user(auth_model["name"])
            if existing is not None:
                stored = await existing.get_auth_state()
                if stored is None and self.enable_auth_state:
                    self._refuse_unreadable_auth_state(existing, claims)
        binding = self.bind_subject(auth_model["name"], claims, stored)
        if binding is not None:
            auth_model["auth_state"][AUTH_STATE_BINDING] = binding
        return auth_model

    # ------------------------------------------------------------------ refresh

    def _needs_refresh(self, auth_state: dict[str, Any]) -> bool:
        """True if the access token expires within `token_refresh_margin` seconds."""
        expires_at = auth_state.get(AUTH_STATE_EXPIRES_AT)
        if not isinstance(expires_at, int | float):
            return False  # the provider gave no lifetime: nothing tells us it is stale
        return time.time() + self.token_refresh_margin >= expires_at

    async def _recheck_tokens(
        self, user: Any, handler: Any, auth_state: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Ask the provider again: the refresh grant, else userinfo with the access token.

        None if the provider cannot confirm the user (then a new login is required).
        """
        refresh_token = auth_state.get("refresh_token")
        if refresh_token:
            try:
                await self.provider_metadata()
                token_info = await self.get_token_info(
                    handler, self.build_refresh_token_request_params(refresh_token)
                )
            except GrantRefused:
                raise  # the provider's answer about this user: the caller acts on it
            except (LoginFailed, DiscoveryError) as e:
                self.log.info("Re-check of %s with the provider failed: %s", user.name, e)
                return None
            # Providers may or may not rotate refresh tokens; keep the old one if not.
            token_info.setdefault("refresh_token", refresh_token)
            return token_info
        access_token = auth_state.get("access_token")
        if not access_token or self._needs_refresh(auth_state):
            self.log.info("Tokens of %s expired and cannot be refreshed", user.name)
            return None
        token_info = dict(auth_state.get("token_response") or {})
        token_info["access_token"] = access_token
        token_info["token_type"] = "Bearer"  # noqa: S105 (a token type, not a secret)
        token_info.pop("id_token", None)
        token_info.pop("expires_in", None)
        return token_info

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Re-check the user with the provider (one re-check per user at a time).

        A call that waited while another re-check of the same user ran returns that
        re-check's outcome (True for success: the first caller saves the new auth_state)
        instead of asking the provider again with the same refresh token.
        """
        if handler is not None and not hasattr(handler, "_token_authenticated"):
            # JupyterHub 6.1 reads this attribute when refresh_user returns False but sets
            # it only for token-authenticated requests: cookie requests then fail with a
            # 500 instead of asking for a new login. Set the value it means (not token).
            handler._token_authenticated = False
        started = time.monotonic()
        lock = self._recheck_locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            last = self._last_recheck.get(user.name)
            if last is not None and last[0] >= started:
                return last[1]
            result = await self._refresh_user(user, handler)
            self._last_recheck[user.name] = (time.monotonic(), bool(result))
            return result

    async def _refresh_user(self, user: Any, handler: Any) -> Any:
        """Re-check the user with the provider; False forces a new login.

        JupyterHub calls this every `auth_refresh_age` seconds of a user's activity and
        before every spawn (`refresh_pre_spawn`). Each call asks the provider: the refresh
        grant, and when its answer has no id_token (or there is no refresh token) the
        userinfo endpoint, so removed users and changed groups are seen. New claims go
        through the same checks as a login (`claims_to_auth_model`, subject binding,
        `check_allowed`). The stored, naturally expired id_token is never re-verified
        (oauthenticator issue #793). A user the provider now reports as not allowed has
        their servers stopped and API tokens revoked (`revoke_removed_users`).
        """
        if not self.enable_auth_state:
            return True
        auth_state = await user.get_auth_state()
        if self.refresh_user_hook is not None:
            refreshed = await self._call_refresh_user_hook(user, auth_state)
            if refreshed is not None:
                return refreshed
        if not auth_state or AUTH_STATE_KUBEFLOW_USERID not in auth_state:
            self.log.info("No OIDC auth_state for %s: a new login is required", user.name)
            return False
        confirmed = auth_state.get(AUTH_STATE_CONFIRMED_AT)
        if (
            handler is not None  # a request's re-check; the background one always asks
            and isinstance(confirmed, int | float)
            and 0 <= time.time() - confirmed < self.recheck_grace
            and not self._needs_refresh(auth_state)  # a server must get live tokens
        ):
            return True  # the provider vouched for this user seconds ago (recheck_grace)
        try:
            token_info = await self._recheck_tokens(user, handler, auth_state)
        except GrantRefused as e:
            await self._grant_refused(user, auth_state, e)
            return False
        if token_info is None:
            return False

        old_claims: dict[str, Any] = auth_state.get(AUTH_STATE_CLAIMS) or {}
        if token_info.get("id_token"):
            try:
                claims = await self.verify_id_token(
                    token_info["id_token"], nonce=old_claims.get("nonce"), require_nonce=False
                )
            except TokenVerificationError as e:
                self.log.warning("Refreshed id_token of %s rejected: %s", user.name, e)
                return False
            # Core 12.2: a refreshed id_token is for the same subject.
            if old_claims and not hmac.compare_digest(
                str(claims.get("sub")), str(old_claims.get("sub"))
            ):
                self.log.warning("Refreshed id_token of %s has another sub", user.name)
                return False
        else:
            # No new id_token: today's claims come from userinfo (its sub must match);
            # the id_token claims that describe the login itself stay.
            try:
                info = await self._userinfo(token_info, str(old_claims.get("sub")))
            except (LoginRejected, HTTPClientError, OSError, DiscoveryError) as e:
                self.log.info("Userinfo re-check of %s failed: %s", user.name, e)
                return False
            login_claims = {k: old_claims[k] for k in _LOGIN_CLAIMS if k in old_claims}
            claims = {**info, **login_claims}
            if self.groups_claim not in info and self.groups_claim in old_claims:
                # Many providers put groups in the id_token only: keep the last verified
                # ones rather than count the user as removed from every group.
                self.log.info(
                    "Userinfo for %s has no %r claim: keeping the groups of the last "
                    "verified login or refresh",
                    user.name,
                    self.groups_claim,
                )
                claims[self.groups_claim] = old_claims[self.groups_claim]
            token_info["id_token"] = auth_state.get("id_token")  # keep it for logout
        try:
            auth_model = await self.claims_to_auth_model(token_info, claims, userinfo=False)
            if auth_model["name"] != user.name:
                raise LoginRejected(f"the provider now maps them to {auth_model['name']!r}")
            binding = self.bind_subject(user.name, claims, auth_state)
            if not self.allow_all and not await self.check_allowed(user.name, auth_model):
                raise LoginRejected("not in the allowed users or groups any more")
        except web.HTTPError as e:
            reason = getattr(e, "jupyterhub_message", None) or e.log_message or str(e)
            self.log.warning("%s may no longer log in: %s", user.name, reason)
            if self.revoke_removed_users:
                await revoke_access(user, handler, log=self.log, proxy=self._proxy())
                await self._remove_team_access(user, auth_state)
            return False
        if binding is not None:
            auth_model["auth_state"][AUTH_STATE_BINDING] = binding
        reconciling = _RECONCILING.get()
        if reconciling or auth_model["auth_state"].get(AUTH_STATE_GROUPS) != auth_state.get(
            AUTH_STATE_GROUPS
        ):
            # the background re-check re-syncs everyone; a request's refresh only on a change
            await self._team_access(user, auth_model["auth_state"], removed=False, wait=reconciling)
        return auth_model

    async def delete_user(self, user: Any) -> None:
        """An admin deletes the hub user: their team access goes with them (`team_access_hook`
        with ``removed=True``), so a later account with the same Kubeflow identity (a reused
        email) inherits no binding."""
        state = await user.get_auth_state() if self.enable_auth_state else None
        await self._team_access(user, state, removed=True, wait=True)
        super().delete_user(user)

    def _proxy(self) -> Any:
        """The hub's proxy (to remove a stopped server's route without a request handler)."""
        return getattr(self.parent, "proxy", None)

    # ------------------------------------------------------------------ removal

    async def _grant_refused(
        self, user: Any, auth_state: dict[str, Any], error: GrantRefused
    ) -> None:
        """The provider refused the user's refresh token: their team access ends now.

        Their personal servers keep running (a refresh token may also simply have reached
        its end of life); JupyterHub asks them to log in again at their next request, and
        that login grants team access again if the provider still allows it.
        """
        self.log.warning(
            "The provider refused the refresh token of %s (%s): a new login is required; "
            "team access, if any, is removed until then",
            user.name,
            error.reason,
        )
        await self._remove_team_access(user, auth_state)

    async def _remove_team_access(self, user: Any, auth_state: dict[str, Any] | None) -> None:
        """Remove the user's team access (awaited) and record it in their auth_state, without
        the tokens the provider no longer honours (nothing left to re-check with)."""
        await self._team_access(user, auth_state, removed=True, wait=True)
        if not auth_state:
            return
        state = {k: v for k, v in auth_state.items() if k not in STORED_TOKEN_KEYS}
        state[AUTH_STATE_TEAM_ACCESS_REMOVED_AT] = time.time()
        await user.save_auth_state(state)

    def _load_hook(self, hook: Any) -> Any:
        if isinstance(hook, str):  # "module:function", as YAML values can give it
            module, _, attribute = hook.partition(":")
            hook = getattr(importlib.import_module(module), attribute)
        return hook

    async def entitled_identities(self) -> set[str]:
        """The Kubeflow identities hub users may hold team access for now: every user whose
        auth_state has one and whose team access was not removed (confirmed, within the
        lease, or not re-checkable during a provider outage). Read from the database at the
        call, so a login that happened meanwhile counts."""
        app = self.parent
        users, db = getattr(app, "users", None), getattr(app, "db", None)
        if users is None or db is None:
            return set()
        identities: set[str] = set()
        for orm_user in list(db.query(orm.User)):
            state = await users[orm_user].get_auth_state()
            if not state or state.get(AUTH_STATE_TEAM_ACCESS_REMOVED_AT):
                continue
            identity = state.get(AUTH_STATE_KUBEFLOW_USERID)
            if isinstance(identity, str) and identity:
                identities.add(identity)
        return identities

    def _can_recheck(self, state: dict[str, Any]) -> bool:
        """True if the hub holds a token to ask the provider about this user with."""
        if state.get("refresh_token"):
            return True
        return bool(state.get("access_token")) and not self._needs_refresh(state)

    def _lease_expired(self, state: dict[str, Any], now: float) -> bool:
        """True for a user the hub cannot re-check whose team access outlived its lease."""
        if not self.team_access_lease or state.get(AUTH_STATE_TEAM_ACCESS_REMOVED_AT):
            return False
        if not state.get(AUTH_STATE_KUBEFLOW_USERID):
            return False  # no identity: the hub never granted this user anything
        confirmed = state.get(AUTH_STATE_CONFIRMED_AT)
        # a state from before confirmed_at was recorded counts as confirmed long ago
        confirmed = confirmed if isinstance(confirmed, int | float) else 0.0
        return now - confirmed > self.team_access_lease

    async def _team_access(
        self, user: Any, auth_state: dict[str, Any] | None, *, removed: bool, wait: bool
    ) -> None:
        """Run `team_access_hook` (awaited if `wait`, else in the background); log failures."""
        hook = self.team_access_hook
        if hook is None or not auth_state:
            return
        hook = self._load_hook(hook)

        async def run() -> None:
            try:
                await hook(self, user, auth_state, removed=removed)
            except Exception:
                self.log.exception("team_access_hook failed for %s", user.name)

        if wait:
            await run()
            return
        task = asyncio.ensure_future(run())
        self._team_tasks.add(task)
        task.add_done_callback(self._team_tasks.discard)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await self.reconcile_users()
            except Exception:
                self.log.exception("Background re-check of the hub's users failed")

    async def reconcile_users(self) -> dict[str, Any]:
        """Re-check every hub user that has tokens with the provider, one at a time.

        The same re-check as a request's (`refresh_user`): a user the provider no longer
        allows is revoked (`revoke_removed_users`), and `team_access_hook` re-syncs each
        confirmed user's team access to their verified groups. A new auth_state is saved as
        JupyterHub saves it after a request's refresh. Returns what happened per user
        (True: confirmed, False: not confirmed). Users the hub holds no usable token for
        (logged out, tokens expired) cannot be re-checked: their team access is removed
        once `team_access_lease` has passed since the provider last confirmed them. Then
        `team_sweep_hook` removes access of identities no hub user holds any more.
        """
        app = self.parent
        users, db = getattr(app, "users", None), getattr(app, "db", None)
        if users is None or db is None:
            return {}  # not inside a JupyterHub
        outcome: dict[str, Any] = {}
        for name in [u.name for u in db.query(orm.User)]:
            orm_user = orm.User.find(db, name)
            if orm_user is None:
                continue  # deleted meanwhile
            user = users[orm_user]
            state = await user.get_auth_state()
            if not state:
                continue
            if not self._can_recheck(state):
                # nothing to re-check with (logged out, tokens expired): the lease decides
                if self._lease_expired(state, time.time()):
                    self.log.warning(
                        "Team access of %s removed: not confirmed by the provider for more "
                        "than team_access_lease (%ss) and the hub holds no token to re-check "
                        "them with (logged out?); their next login grants it again",
                        name,
                        int(self.team_access_lease),
                    )
                    await self._remove_team_access(user, state)
                continue
            token = _RECONCILING.set(True)
            try:
                result = await self.refresh_user(user, None)
            except Exception:
                self.log.exception("Background re-check of %s failed", name)
                continue
            finally:
                _RECONCILING.reset(token)
            if isinstance(result, dict):
                if result.get("auth_state") is not None:
                    await user.save_auth_state(result["auth_state"])
                if self.manage_groups and result.get("groups") is not None:
                    user.sync_groups(result["groups"])
            outcome[name] = bool(result)
        if self.team_sweep_hook is not None:
            try:
                await self._load_hook(self.team_sweep_hook)(self)
            except Exception:
                self.log.exception("team_sweep_hook failed")
        self.log.info(
            "Background re-check of %d user(s) with the provider: %d not confirmed",
            len(outcome),
            sum(1 for ok in outcome.values() if not ok),
        )
        return outcome

    # ------------------------------------------------------------------ logout

    async def end_session_redirect(self, handler: Any, id_token: str | None) -> str | None:
        """The provider's end-session URL for RP-initiated logout, or None.

        An explicitly configured `end_session_url` must be https (like discovered ones),
        because the `id_token_hint` travels in its query; the post-logout redirect is
        never built from the request's Host header.
        """
        if not self.end_provider_session_on_logout:
            return None
        try:
            await self.provider_metadata()
            if self.end_session_url:
                check_endpoint_url(
                    self.end_session_url,
                    "end_session_url",
                    allow_insecure_loopback=self.allow_insecure_loopback,
                )
        except DiscoveryError as e:
            self.log.error("No RP-initiated logout at the provider: %s", e)
            return None  # the hub logout itself already happened
        if not self.end_session_url:
            return None
        post_logout = self.post_logout_redirect_url or self.logout_redirect_url
        if not post_logout:
            if not self.oauth_callback_url:
                self.log.error("No RP-initiated logout: oauth_callback_url is not set")
                return None
            post_logout = urljoin(self.oauth_callback_url, "login")
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout}
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in self.end_session_url else "?"
        return f"{self.end_session_url}{separator}{urlencode(params)}"
