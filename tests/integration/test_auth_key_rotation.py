"""Issue 25.4: the subject binding under auth_state key rotation, auth_state that no key can
decrypt any more, and auth_state switched off. Through a real JupyterHub (restarted on its
database with other JUPYTERHUB_CRYPT_KEY values) and a real OpenID provider.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from devstack.oidc_stack import HubNotReady
from dna_hub.errors import ConfigurationError
from tests.integration.test_auth_hardening import (
    IMPOSTOR,
    accounts,
    auth_state,
    browser,
    patch_auth_state,
)
from tests.integration.test_auth_oidc import make_authenticator

pytestmark = pytest.mark.slow

CAROL = "carol@example.com"


def crypt_keys(*keys: str) -> dict[str, str]:
    """The hub's environment with JUPYTERHUB_CRYPT_KEY = these keys, newest first."""
    return {"JUPYTERHUB_CRYPT_KEY": ";".join(keys)}


async def login_status(hub: Any, login: str) -> tuple[int, str]:
    async with browser() as http:
        page = await hub.login(http, login)
    return page.status_code, page.text


async def test_key_rotation_remacs_the_binding(oidc_provider_factory, hub_factory):
    """old key -> "new;old" (a login re-MACs the binding) -> "new" only: still logs in."""
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    provider = oidc_provider_factory(accounts=accounts())
    hub = await hub_factory(provider, env=crypt_keys(old))
    assert (await login_status(hub, "carol"))[0] == 200
    first = (await auth_state(hub, CAROL))["subject_binding"]
    work = hub.log_file.parent
    hub.stop()

    hub = await hub_factory(provider, work=work, env=crypt_keys(new, old))
    assert (await login_status(hub, "carol"))[0] == 200
    rotated = (await auth_state(hub, CAROL))["subject_binding"]
    assert (rotated["iss"], rotated["sub"]) == (first["iss"], first["sub"])
    assert rotated["mac"] != first["mac"]
    assert f"Re-MACed the subject binding of {CAROL} with the newest key" in hub.log()
    hub.stop()

    hub = await hub_factory(provider, work=work, env=crypt_keys(new))
    status, text = await login_status(hub, "carol")
    assert status == 200, text
    assert "stored subject binding is invalid" not in hub.log()


async def test_unreadable_auth_state_refuses_login_until_rebind(oidc_provider_factory, hub_factory):
    """The key that encrypted carol's auth_state is dropped: nobody may take her account
    (not even she: the binding cannot be checked) until an admin re-binds it."""
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    provider = oidc_provider_factory(accounts=accounts(impostor=IMPOSTOR))
    hub = await hub_factory(provider, env=crypt_keys(old))
    assert (await login_status(hub, "carol"))[0] == 200
    work = hub.log_file.parent
    hub.stop()

    hub = await hub_factory(provider, work=work, env=crypt_keys(new))
    for login in ("impostor", "carol"):
        status, text = await login_status(hub, login)
        assert status == 403, text
        assert "ask your hub administrator to re-bind it" in text
    assert "its auth_state cannot be decrypted with the current JUPYTERHUB_CRYPT_KEY" in hub.log()
    assert "Bound hub user" not in hub.log()

    # The documented re-bind (docs/deploy.md): replace the auth_state; the next login binds.
    await patch_auth_state(hub, CAROL, {})
    assert (await login_status(hub, "carol"))[0] == 200
    assert (await auth_state(hub, CAROL))["subject_binding"]["sub"] == "carol"
    assert f"Bound hub user {CAROL} to sub 'carol'" in hub.log()
    assert "Traceback" not in hub.log()


async def test_auth_state_off_refuses_to_start(oidc_provider, hub_factory):
    with pytest.raises(HubNotReady) as failed:
        await hub_factory(oidc_provider, authenticator={"enable_auth_state": False})
    assert "ConfigurationError" in str(failed.value)
    assert "DnaOIDCAuthenticator.accept_no_revocation = True" in str(failed.value)


def test_auth_state_off_needs_the_opt_in(oidc_provider, caplog):
    with pytest.raises(ConfigurationError, match="no revocation of removed users"):
        make_authenticator(oidc_provider, enable_auth_state=False)
    make_authenticator(oidc_provider, enable_auth_state=False, accept_no_revocation=True)
    assert "no re-check with the provider (removed users keep access)" in caplog.text
