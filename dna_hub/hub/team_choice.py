"""Team profiles at the hub: the spawn form's choices, the re-check at spawn, the sync.

- the spawn form (KubeSpawner's ``profile_list``, computed per user and server): the
  personal profile and each team profile the user may run notebooks in (``edit`` members
  only), offered for named servers — the default server is the personal one, its
  namespace fixed by policy;
- the server-side re-check at spawn of whatever the form posted;
- the sync of team profiles and contributor bindings (:mod:`dna_hub.profiles.contributors`)
  at a spawn and at a login.

Groups come only from the verified token: ``auth_state[team_groups_auth_state_key]``, which
the authenticator writes from the id_token's groups claim. Every function takes the settings
and plain values; none takes a spawner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dna_hub.errors import DnaHubError, NamingError, TeamNotAllowed, TeamUnavailable
from dna_hub.hub.settings import DnaSettings, NotebookServer
from dna_hub.policy.teams import Team, TeamPlan, plan_for
from dna_hub.profiles.contributors import ContributorSync, TeamSyncResult, describe_result
from dna_hub.profiles.provisioning import Progress

__all__ = [
    "PERSONAL_SLUG",
    "chosen_team",
    "form_choices",
    "saved_team",
    "sync_at_spawn",
    "sync_teams",
    "team_plan",
    "verified_groups",
]

PERSONAL_SLUG = "personal"


def verified_groups(settings: DnaSettings, auth_state: Mapping[str, Any] | None) -> list[Any]:
    """The groups of the verified token, as the authenticator stored them."""
    groups = (auth_state or {}).get(settings.team_groups_auth_state_key)
    return list(groups) if isinstance(groups, list) else []


def team_plan(
    settings: DnaSettings, username: str, auth_state: Mapping[str, Any] | None
) -> TeamPlan:
    """The teams this login's verified groups give (an empty plan without teams)."""
    if not settings.team_profiles:
        return TeamPlan()
    try:
        personal: str | None = settings.personal_namespace(username)
    except NamingError:
        personal = None
    return plan_for(verified_groups(settings, auth_state), settings.teams(), personal)


def form_choices(
    settings: DnaSettings, username: str, server_name: str, auth_state: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The spawn form's choices for this user and server (empty: no form)."""
    if not server_name:
        return []  # the default server is the personal one
    editable = team_plan(settings, username, auth_state).editable()
    if not editable:
        return []
    try:
        personal = settings.personal_namespace(username)
    except NamingError:
        personal = "your profile"
    choices = [
        {
            "display_name": "Personal profile",
            "slug": PERSONAL_SLUG,
            "description": f"Your own Kubeflow profile ({personal})",
            "default": True,
        }
    ]
    for team in editable:
        choices.append(
            {
                "display_name": f"Team {team.group}",
                "slug": team.slug,
                "description": f"The team's Kubeflow profile ({team.namespace}), shared with "
                f"the members of {team.group}",
            }
        )
    return choices


async def chosen_team(
    settings: DnaSettings,
    *,
    slug: str | None,
    username: str,
    server_name: str,
    load_auth_state: Callable[[], Awaitable[Mapping[str, Any] | None]],
) -> Team | None:
    """The team the posted form chose, re-checked against the user's verified groups now.

    ``load_auth_state`` (JupyterHub's ``User.get_auth_state``, which decrypts) is awaited only
    when the choice names a team.
    """
    if not slug or not settings.team_profiles:
        return None
    if slug not in {team.slug for team in settings.teams().values()}:
        return None  # the personal profile, or a choice of an admin's own profile_list
    if not server_name:
        raise TeamNotAllowed(
            "Team notebooks run as named servers; your default server is your personal one.",
            f"{username} asked for profile {slug!r} on the default server",
        )
    for team in team_plan(settings, username, await load_auth_state()).editable():
        if team.slug == slug:
            return team
    raise TeamNotAllowed(
        "You may not start a notebook in that team profile (you are not an editor of it).",
        f"{username} asked for profile {slug!r}, not among their edit teams",
    )


async def sync_teams(
    settings: DnaSettings,
    contributors: ContributorSync,
    *,
    username: str,
    auth_state: Mapping[str, Any] | None,
    identity: str,
    server: NotebookServer,
    progress: Mapping[str, Progress] | None = None,
) -> TeamSyncResult | None:
    """Team profiles and contributor bindings for this user, as their groups say now."""
    if not settings.team_profiles:
        return None
    plan = team_plan(settings, username, auth_state)

    def render(team: Team) -> Any:
        return settings.render_team(team, server)

    return await contributors.sync(identity, plan, render, progress=progress)


async def sync_at_spawn(
    settings: DnaSettings,
    contributors: ContributorSync,
    *,
    username: str,
    auth_state: Mapping[str, Any] | None,
    identity: str,
    server: NotebookServer,
    team: Team | None,
    report: Callable[[str], None],
    log: logging.Logger,
) -> TeamSyncResult | None:
    """The sync at a spawn: a team server needs its team ready; a personal server goes on
    whatever happens to the teams (the failure is logged for the admin)."""
    if not settings.team_profiles:
        return None
    try:
        # a spawn in a team shows that team's provisioning steps on its progress page
        result = await sync_teams(
            settings,
            contributors,
            username=username,
            auth_state=auth_state,
            identity=identity,
            server=server,
            progress={team.group: report} if team else None,
        )
    except DnaHubError as e:
        if team:
            raise
        log.error("Team profiles of %s not synchronised: %s", username, e)
        return None
    if result is not None:
        log.info("Teams of %s: %s", username, describe_result(result))
    if team and (result is None or team.group in result.failed or team not in result.ready):
        reason = str(result.failed.get(team.group, "not ready")) if result else "no teams"
        raise TeamUnavailable(
            f"The team profile {team.namespace} is not available. "
            "Please contact your platform administrator.",
            f"team {team.group!r} for {username}: {reason}",
        )
    return result


def saved_team(
    settings: DnaSettings, group: str, *, username: str, server_name: str, log: logging.Logger
) -> Team | None:
    """The team of a server saved in the hub's state, by the policy of today's config."""
    try:
        team = settings.teams().get(group)
    except DnaHubError as e:
        log.error("Team %r of %s's server: %s", group, username, e)
        return None
    if team is None:
        log.warning(
            "Server %s of %s ran in team %r, which is no longer configured",
            server_name,
            username,
            group,
        )
    return team
