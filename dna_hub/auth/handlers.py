"""Tornado handlers `DnaOIDCAuthenticator` plugs into oauthenticator's login flow.

Each handler is oauthenticator's own with one OpenID Connect addition; the decisions
(discovery, the end-session URL) stay on the authenticator, reached via
`self.authenticator`, so the handlers hold no configuration of their own.
"""

from __future__ import annotations

import secrets
from typing import Any

from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    OAuthLogoutHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import web

#: auth_state keys holding provider tokens, cleared at logout.
STORED_TOKEN_KEYS = ("access_token", "refresh_token", "id_token", "token_response")


class LoginRejected(web.HTTPError):
    """403 with a message the user sees on the hub's error page (no user is created)."""

    def __init__(self, message: str) -> None:
        super().__init__(403, "%s", message)
        # JupyterHub's error page shows this text.
        self.jupyterhub_message = message


class LoginFailed(web.HTTPError):
    """400: the login attempt cannot complete (e.g. the provider refused the `code`).

    The user sees "Login failed, please start again"; the reason (`log_message`) is one
    warning line in the hub log, without a traceback or request headers.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(400, "Login failed: %s", reason)
        self.reason = reason
        self.jupyterhub_message = "Login failed, please start again."

    def __str__(self) -> str:
        return f"login failed: {self.reason}"


class GrantRefused(LoginFailed):
    """The provider answered and refused the grant (OAuth 2 ``invalid_grant``): the code or
    refresh token is not (any more) valid for this user — the account was deleted or
    disabled, its sessions were revoked, or the refresh token expired. Unlike an outage
    (no answer, 5xx), this is the provider's word that it does not confirm the user."""


class DnaOIDCLoginHandler(OAuthLoginHandler):
    """oauthenticator's login redirect plus discovery and an OIDC `nonce`."""

    _nonce: str = ""

    async def get(self) -> None:
        """Discover the endpoints (503 page if the provider is unusable), then redirect."""
        await self.authenticator.provider_metadata(user_facing=True)
        # The nonce binds the id_token to this browser's login attempt (replay defence);
        # it is stored, like the PKCE verifier, in oauthenticator's signed state cookie.
        self._nonce = secrets.token_urlsafe(32)
        super().get()

    def set_state_cookie(self, state_cookie_value: str) -> None:
        """Add the nonce to the signed state cookie, where the callback reads it back."""
        state = _deserialize_state(state_cookie_value)
        state["nonce"] = self._nonce
        super().set_state_cookie(_serialize_state(state))

    def authorize_redirect(self, *args: Any, **kwargs: Any) -> None:
        """Send the nonce to the provider, which must echo it in the id_token."""
        extra = dict(kwargs.pop("extra_params", None) or {})
        extra["nonce"] = self._nonce
        super().authorize_redirect(*args, extra_params=extra, **kwargs)


class DnaOIDCCallbackHandler(OAuthCallbackHandler):
    """oauthenticator's callback plus the RFC 9207 `iss` check against mix-up attacks."""

    def check_arguments(self) -> None:
        """Refuse a response another issuer sent (when the provider names itself)."""
        super().check_arguments()
        iss = self.get_argument("iss", None)
        if iss is not None and iss != self.authenticator.issuer:
            raise LoginRejected(
                f"The authorization response came from issuer {iss!r}, "
                f"not the configured {self.authenticator.issuer!r}."
            )


class DnaOIDCLogoutHandler(OAuthLogoutHandler):
    """Hub logout, then RP-initiated logout at the provider when it supports it."""

    _id_token: str | None = None

    async def get(self) -> None:
        """Log out of the hub, keeping the id_token for the provider's `id_token_hint`."""
        # Read the id_token before the default logout clears the login cookie.
        user = self.current_user
        if user is not None and self.authenticator.enable_auth_state:
            auth_state = await user.get_auth_state() or {}
            self._id_token = auth_state.get("id_token")
            # The hub keeps no provider tokens of a logged-out user; the identity
            # (kubeflow_userid, groups, subject binding) stays for their servers.
            if any(key in auth_state for key in STORED_TOKEN_KEYS):
                for key in STORED_TOKEN_KEYS:
                    auth_state.pop(key, None)
                await user.save_auth_state(auth_state)
        await super().get()

    async def render_logout_page(self) -> None:
        """Redirect to the provider's end-session URL, else show the hub's logout page."""
        url = await self.authenticator.end_session_redirect(self, self._id_token)
        if url:
            self.redirect(url)
            return
        await super().render_logout_page()
