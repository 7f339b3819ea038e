"""profile_owner_fallback only where there is no auth_state (issue 18, item 6).

With auth_state on, a user without the Kubeflow identity in it (created by an admin, or
spawned by an admin before their first login) must not get a Profile owned by an identity
built from the hub name.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from dna_hub import DnaSpawner
from dna_hub.errors import ConfigurationError


class _User(SimpleNamespace):
    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state


def spawner(auth_state_enabled: bool, auth_state: dict[str, Any] | None) -> DnaSpawner:
    user = _User(name="alice", escaped_name="alice", id=1, url="/user/alice/", settings={})
    user.auth_state = auth_state
    with mock.patch("kubespawner.spawner.load_config"):  # no cluster needed
        return DnaSpawner(
            _mock=True,
            user=user,
            hub=SimpleNamespace(public_host="", url="/hub/", base_url="/hub/", api_url=""),
            orm_spawner=SimpleNamespace(name="", display_name="", server=None, last_activity=None),
            authenticator=SimpleNamespace(enable_auth_state=auth_state_enabled),
            profile_owner_fallback="{username}@example.com",
            hub_namespace="jupyterhub",
        )


async def test_fallback_is_ignored_with_auth_state_on(caplog: pytest.LogCaptureFixture) -> None:
    for state in ({}, None):  # admin-created user; user who never logged in
        with pytest.raises(ConfigurationError, match="log out and in again"):
            await spawner(True, state).profile_owner()
    assert "profile_owner_fallback ignored for alice" in caplog.text


async def test_fallback_applies_with_auth_state_off_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert await spawner(False, None).profile_owner() == "alice@example.com"
    assert "built from the hub name by profile_owner_fallback" in caplog.text


async def test_the_owner_in_auth_state_always_wins() -> None:
    owner = await spawner(True, {"kubeflow_userid": "Alice@Example.com"}).profile_owner()
    assert owner == "Alice@Example.com"
