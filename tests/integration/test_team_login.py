"""Team sync at login (``post_auth_hook``) on the control plane: access follows the groups of
each new token before any notebook starts, and a failing sync never fails the login."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets.config import Config

from dna_hub.hub.team_login import pending, sync_teams_at_login
from dna_hub.policy.teams import team_namespace
from tests.integration.test_contributors import may

pytestmark = [pytest.mark.controlplane]

HANDLER = SimpleNamespace(
    hub=SimpleNamespace(api_url="http://127.0.0.1:9/hub/api", base_url="/hub/", url="/hub/")
)


def authenticator(**spawner_config: Any) -> SimpleNamespace:
    config = Config()
    config.DnaSpawner.hub_namespace = "jupyterhub"
    config.DnaSpawner.profile_ready_timeout = 60
    config.JupyterHub.subdomain_host = "https://hub.example.test"  # needed with teams
    for key, value in spawner_config.items():
        setattr(config.DnaSpawner, key, value)
    return SimpleNamespace(config=config, log=logging.getLogger("test.team_login"))


async def login(auth: SimpleNamespace, name: str, auth_state: dict[str, Any]) -> None:
    model = {"name": name, "auth_state": auth_state, "admin": False}
    assert await sync_teams_at_login(auth, HANDLER, model) is model  # unchanged
    await asyncio.gather(*pending())


async def test_login_grants_and_revokes_team_access(
    standins: Any, admin_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    username, group = unique_name("alice"), unique_name("fraud")
    owner = f"{username}@example.com"
    auth = authenticator(team_profiles={group: "edit"})
    namespace = team_namespace(group)

    await login(auth, username, {"kubeflow_userid": owner, "groups": ["data-science", group]})
    assert await may(admin_api, owner, "create", "pods", namespace)
    assert not await may(admin_api, f"bob.{owner}", "create", "pods", namespace)

    # removed from the group at the provider, she logs in again
    await login(auth, username, {"kubeflow_userid": owner, "groups": ["data-science"]})
    assert not await may(admin_api, owner, "create", "pods", namespace)


async def test_a_failing_sync_is_logged_and_never_fails_the_login(
    standins: Any, unique_name: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    username = unique_name("anon")
    auth = authenticator(team_profiles={unique_name("fraud"): "edit"})
    with caplog.at_level(logging.ERROR, logger="test.team_login"):
        await login(auth, username, {"groups": ["x"]})  # no Kubeflow identity
    assert f"Teams of {username} not synchronised at login" in caplog.text
    assert "kubeflow_userid" in caplog.text


async def test_teams_without_per_user_origins_are_refused_at_login(
    standins: Any, admin_api: ApiClient, unique_name: Callable[..., str], caplog: Any
) -> None:
    """Issue 25.3: team profiles without JupyterHub.subdomain_host are a configuration error
    naming it (unless team_shared_origin_risk_accepted): nothing is granted."""
    username, group = unique_name("alice"), unique_name("fraud")
    owner = f"{username}@example.com"
    auth = authenticator(team_profiles={group: "edit"})
    del auth.config.JupyterHub["subdomain_host"]
    with caplog.at_level(logging.ERROR, logger="test.team_login"):
        await login(auth, username, {"kubeflow_userid": owner, "groups": [group]})
    assert "needs JupyterHub.subdomain_host" in caplog.text
    assert "team_shared_origin_risk_accepted" in caplog.text
    # nothing was made: not even the team's profile (namespace)
    with pytest.raises(ApiException) as missing:
        await client.CoreV1Api(admin_api).read_namespace(team_namespace(group))
    assert missing.value.status == 404

    # the explicit opt-out accepts the risk
    auth.config.DnaSpawner.team_shared_origin_risk_accepted = True
    await login(auth, username, {"kubeflow_userid": owner, "groups": [group]})
    assert await may(admin_api, owner, "create", "pods", team_namespace(group))
