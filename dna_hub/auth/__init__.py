"""OpenID Connect login for dna_hub.

- `discovery`: fetch and check `<issuer>/.well-known/openid-configuration`.
- `tokens`: verify id_tokens (PyJWT) against the provider's JWKS.
- `claims`: pure rules from verified claims to the hub username, groups and the
  Kubeflow identity.
- `handlers`: the tornado login, callback and logout handlers (nonce, `iss`, RP logout).
- `revocation`: stop a removed user's servers, revoke their tokens and sessions.
- `oidc`: `DnaOIDCAuthenticator`, the JupyterHub authenticator built on all of them.

The auth_state keys the rest of dna_hub reads are constants here, so the spawner can
import them without importing JupyterHub or oauthenticator.
"""

#: auth_state key holding the identity Kubeflow sees (the Profile owner), exactly as the
#: Kubeflow auth proxy reads it from the token (its USERID_CLAIM); case is kept.
AUTH_STATE_KUBEFLOW_USERID = "kubeflow_userid"
#: auth_state key holding the user's groups from the provider's groups claim (a list).
AUTH_STATE_GROUPS = "groups"
#: auth_state key holding the verified id_token claims (a dict).
AUTH_STATE_CLAIMS = "oidc_claims"
#: auth_state key holding the unix time the access token expires (float or None).
AUTH_STATE_EXPIRES_AT = "expires_at"

#: auth_state key holding the (issuer, subject) the hub user is bound to, with its MAC.
AUTH_STATE_BINDING = "subject_binding"
#: auth_state key holding the unix time the provider last confirmed the user (a login or a
#: successful re-check): team access granted by the hub lasts at most
#: ``team_access_lease`` seconds past it when the hub cannot re-check the user.
AUTH_STATE_CONFIRMED_AT = "confirmed_at"
#: auth_state key holding the unix time the hub removed the user's team access because the
#: provider refused them or could not be asked (cleared by the next login).
AUTH_STATE_TEAM_ACCESS_REMOVED_AT = "team_access_removed_at"

__all__ = [
    "AUTH_STATE_BINDING",
    "AUTH_STATE_CLAIMS",
    "AUTH_STATE_CONFIRMED_AT",
    "AUTH_STATE_EXPIRES_AT",
    "AUTH_STATE_GROUPS",
    "AUTH_STATE_KUBEFLOW_USERID",
    "AUTH_STATE_TEAM_ACCESS_REMOVED_AT",
]
