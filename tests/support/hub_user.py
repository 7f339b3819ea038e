"""The few attributes of ``jupyterhub.user.User`` a spawner uses, for spawners driven
without a hub (``_mock=True``), as KubeSpawner's own tests drive them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class HubUser(SimpleNamespace):
    """``name``, ``escaped_name``, ``id``, ``url``, ``settings``, ``groups`` and the
    ``auth_state`` the authenticator stored."""

    async def get_auth_state(self) -> dict[str, Any]:
        return self.auth_state
