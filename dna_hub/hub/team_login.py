"""Team sync at login: a JupyterHub ``post_auth_hook``.

.. code-block:: python

    from dna_hub.team_login import sync_teams_at_login
    c.Authenticator.post_auth_hook = sync_teams_at_login

JupyterHub calls the hook after the authenticator verified the login and the user passed
the allow checks, with the auth model the authenticator built from the verified token. The
hook starts, in the background, the same sync a spawn runs (:mod:`dna_hub.hub.team_choice`):
team profiles exist and the user's contributor bindings match the groups of *this* token
(``auth_state[DnaSpawner.team_groups_auth_state_key]``), so access given or taken at the
identity provider takes effect at the next login, before any notebook starts. The login is
never delayed or failed by it: the outcome goes to the hub log (and every spawn syncs again).

The DnaSpawner settings are the hub's own (the authenticator's config); the spawner is built
for the logging-in user as ``dna-hub render`` builds one — the same code path, no copy.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from dna_hub.errors import ProvisioningError

__all__ = ["pending", "sync_teams_at_login"]

#: Background syncs still running (held so they are not garbage-collected mid-flight).
_running: set[asyncio.Task[Any]] = set()


class _LoginUser:
    """What a spawner needs of JupyterHub's User, for a login whose User is not saved yet."""

    def __init__(self, name: str, auth_state: dict[str, Any]) -> None:
        self.name = name
        self.id = 0
        self.url = f"/user/{name}/"
        self.groups: list[Any] = []
        self.settings: dict[str, Any] = {}
        self._auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any]:
        return self._auth_state


def pending() -> set[asyncio.Task[Any]]:
    """The syncs started by logins that have not finished (tests await them)."""
    return set(_running)


async def sync_teams_at_login(
    authenticator: Any, handler: Any, authentication: dict[str, Any]
) -> dict[str, Any]:
    """``post_auth_hook``: start the team sync for this login; return the model unchanged."""
    task = asyncio.ensure_future(_sync(authenticator, handler, authentication))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return authentication


async def _sync(authenticator: Any, handler: Any, authentication: dict[str, Any]) -> None:
    from dna_hub.hub import team_choice
    from dna_hub.hub.spawner import DnaSpawner

    name = authentication["name"]
    log = authenticator.log
    try:
        spawner = DnaSpawner(
            config=authenticator.config,
            user=_LoginUser(name, dict(authentication.get("auth_state") or {})),
            hub=getattr(handler, "hub", None) or SimpleNamespace(api_url="", base_url="/hub/"),
        )
        if not spawner.team_profiles:
            return
        identity = await spawner.profile_owner()
        result = await team_choice.sync(spawner, *team_choice.clients(spawner), identity)
    except ProvisioningError as e:
        log.error("Teams of %s not synchronised at login: %s", name, e)
        return
    except Exception:
        log.exception("Teams of %s not synchronised at login", name)
        return
    if result is not None:
        log.info("Teams of %s at login: %s", name, team_choice.describe_result(result))
