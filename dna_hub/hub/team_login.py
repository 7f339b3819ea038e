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

:func:`sweep_team_access` is ``DnaOIDCAuthenticator.team_sweep_hook``: after each background
re-check of every user, the contributor bindings dna_hub made for identities no hub user
holds any more (deleted while the hook failed, a restored database) are deleted.

:func:`sync_teams_at_recheck` is ``DnaOIDCAuthenticator.team_access_hook``: the same sync
after every re-check with the provider (a request's refresh when the groups changed, and the
authenticator's periodic background re-check of every user, ``reconcile_interval``), so a
user removed from a group loses the team's bindings and team servers without logging in,
and a revoked user loses every binding.

The settings are the hub's own (:meth:`DnaSettings.from_config` of the authenticator's
config); the Kubernetes client is KubeSpawner's shared one, loaded as a spawner loads it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubespawner.clients import load_config, shared_client
from traitlets.config import Config

from dna_hub.auth.revocation import stop_server
from dna_hub.errors import DnaHubError
from dna_hub.hub import team_choice
from dna_hub.hub.settings import (
    DnaSettings,
    notebook_server_from_config,
    request_timeout_from_config,
    spawner_config_section,
    subdomain_host_from_config,
)
from dna_hub.profiles.contributors import describe_result

__all__ = ["pending", "sweep_team_access", "sync_teams_at_login", "sync_teams_at_recheck"]

#: Background syncs still running (held so they are not garbage-collected mid-flight).
_running: set[asyncio.Task[Any]] = set()


def pending() -> set[asyncio.Task[Any]]:
    """The syncs started by logins that have not finished (tests await them)."""
    return set(_running)


async def sync_teams_at_login(
    authenticator: Any, handler: Any, authentication: dict[str, Any]
) -> dict[str, Any]:
    """``post_auth_hook``: start the team sync for this login; return the model unchanged."""
    task = asyncio.ensure_future(_sync(authenticator, authentication))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return authentication


def _kube_api_client(config: Config) -> Any:
    """KubeSpawner's shared client, configured as a DnaSpawner with this config would do."""
    section = spawner_config_section(config)
    # lru-cached by these arguments in KubeSpawner: the spawners' own call shares it
    load_config(
        host=section.get("k8s_api_host"),
        ssl_ca_cert=section.get("k8s_api_ssl_ca_cert"),
        verify_ssl=section.get("k8s_api_verify_ssl"),
    )
    return shared_client("CoreV1Api").api_client


def subdomain_host(authenticator: Any) -> str:
    """The running hub's ``subdomain_host`` (else the config's): per-user origins or ''."""
    hub = getattr(authenticator, "parent", None)
    return str(
        getattr(hub, "subdomain_host", "") or subdomain_host_from_config(authenticator.config)
    )


async def _sync(authenticator: Any, authentication: dict[str, Any]) -> None:
    name = authentication["name"]
    log = authenticator.log
    auth_state = dict(authentication.get("auth_state") or {})
    try:
        settings = DnaSettings.from_config(authenticator.config, log=log)
        if not settings.team_profiles:
            return
        settings.check_team_isolation(subdomain_host(authenticator))
        server = notebook_server_from_config(authenticator.config)
        identity = settings.owner_of(
            name,
            auth_state,
            auth_state_enabled=getattr(authenticator, "enable_auth_state", False) is not False,
        )
        clients = settings.clients(
            _kube_api_client(authenticator.config),
            request_timeout=request_timeout_from_config(authenticator.config),
            server=server,
            log=log,
        )
        result = await team_choice.sync_teams(
            settings,
            clients.contributors,
            username=name,
            auth_state=auth_state,
            identity=identity,
            server=server,
        )
    except DnaHubError as e:
        log.error("Teams of %s not synchronised at login: %s", name, e)
        return
    except Exception:
        log.exception("Teams of %s not synchronised at login", name)
        return
    if result is not None:
        log.info("Teams of %s at login: %s", name, describe_result(result))


async def sync_teams_at_recheck(
    authenticator: Any, user: Any, auth_state: dict[str, Any], *, removed: bool
) -> None:
    """``DnaOIDCAuthenticator.team_access_hook``: after a re-check with the provider.

    The user's contributor bindings are made to match the groups of ``auth_state`` (none at
    all when ``removed``: the provider no longer allows the user), and every running team
    server of a team the user is no longer an editor of is stopped. Raises on failure (the
    authenticator logs it).
    """
    name = user.name
    log = authenticator.log
    settings = DnaSettings.from_config(authenticator.config, log=log)
    if not settings.team_profiles:
        return
    state = dict(auth_state)
    if not removed:
        try:
            settings.check_team_isolation(subdomain_host(authenticator))
        except DnaHubError as e:
            # misconfigured: grant nothing, but still take away what the groups no longer give
            log.error("Teams of %s: only removals after this re-check: %s", name, e)
            removed = True
    if removed:
        state[settings.team_groups_auth_state_key] = []
    server = notebook_server_from_config(authenticator.config)
    identity = settings.owner_of(name, state, auth_state_enabled=True)
    clients = settings.clients(
        _kube_api_client(authenticator.config),
        request_timeout=request_timeout_from_config(authenticator.config),
        server=server,
        log=log,
    )
    result = await team_choice.sync_teams(
        settings,
        clients.contributors,
        username=name,
        auth_state=state,
        identity=identity,
        server=server,
    )
    if result is not None:
        log.info(
            "Teams of %s after a re-check with the provider%s: %s",
            name,
            " (access revoked)" if removed else "",
            describe_result(result),
        )
    editable = {team.group for team in team_choice.team_plan(settings, name, state).editable()}
    proxy = getattr(getattr(authenticator, "parent", None), "proxy", None)
    for server_name, spawner in list(user.spawners.items()):
        team = getattr(spawner, "team", None)
        if team is None or team.group in editable or not spawner.active or spawner.pending:
            continue
        log.warning(
            "Stopping %s's server %r in team %r: they are no longer an editor of it",
            name,
            server_name,
            team.group,
        )
        await stop_server(user, server_name, proxy=proxy)


async def sweep_team_access(authenticator: Any) -> None:
    """``DnaOIDCAuthenticator.team_sweep_hook``: delete contributor objects dna_hub made for
    identities no longer entitled (``authenticator.entitled_identities()``). Raises on
    failure (the authenticator logs it)."""
    log = authenticator.log
    settings = DnaSettings.from_config(authenticator.config, log=log)
    if not settings.team_profiles:
        return
    server = notebook_server_from_config(authenticator.config)
    clients = settings.clients(
        _kube_api_client(authenticator.config),
        request_timeout=request_timeout_from_config(authenticator.config),
        server=server,
        log=log,
    )
    deleted = await clients.contributors.sweep(
        authenticator.entitled_identities,
        namespaces={team.namespace for team in settings.teams().values()},
        grace=settings.team_sweep_grace,
    )
    if deleted:
        log.warning("Team access sweep: %d contributor object(s) deleted", len(deleted))
