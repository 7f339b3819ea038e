"""JupyterHub glue for team profiles: what DnaSpawner calls, kept out of the spawner class.

- the spawn form (KubeSpawner's ``profile_list``, computed per user and server): the
  personal profile and each team profile the user may run notebooks in (``edit`` members
  only), offered for named servers — the default server is the personal one, its
  namespace fixed by policy;
- the server-side re-check at spawn of whatever the form posted;
- team rendering (the same templates; a team is data in the template context) and the
  per-spawn sync of team profiles and contributor bindings (:mod:`dna_hub.profiles.contributors`).

Groups come only from the verified token: ``auth_state[team_groups_auth_state_key]``, which
the authenticator writes from the id_token's groups claim.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from traitlets import TraitError

from dna_hub.errors import ConfigurationError, ProvisioningError
from dna_hub.k8s.api import KubeApi
from dna_hub.policy.naming import NamespacePolicyError, namespace_for
from dna_hub.policy.rendering import RenderedProfile, TemplateError, render_profile
from dna_hub.policy.teams import Team, TeamConfigError, TeamPlan, parse_teams, plan_for
from dna_hub.profiles.contributors import ContributorSync, TeamSyncResult, describe_result
from dna_hub.profiles.provisioning import ProfileProvisioner, Progress

if TYPE_CHECKING:
    from dna_hub.hub.spawner import DnaSpawner

PERSONAL_SLUG = "personal"


def check_config(spawner: DnaSpawner, **override: Any) -> dict[str, Team]:
    """Parse the team settings (with ``override`` for a value being validated)."""
    settings = {
        "team_profiles": spawner.team_profiles,
        "team_namespace_template": spawner.team_namespace_template,
        **override,
    }
    try:
        return parse_teams(
            settings["team_profiles"],
            template=settings["team_namespace_template"],
            owner="validation-only",
        )
    except TeamConfigError as e:
        raise TraitError(str(e)) from e


def teams(spawner: DnaSpawner) -> dict[str, Team]:
    try:
        return parse_teams(
            spawner.team_profiles,
            template=spawner.team_namespace_template,
            owner=spawner.team_profile_owner,
        )
    except TeamConfigError as e:
        raise ConfigurationError(
            "The team profiles are misconfigured. Please contact your platform administrator.",
            str(e),
            reason="config",
        ) from e


def personal_namespace(spawner: DnaSpawner) -> str | None:
    try:
        return namespace_for(spawner.user.name, spawner.namespace_template)
    except NamespacePolicyError:
        return None


async def verified_groups(spawner: DnaSpawner) -> list[Any]:
    """The groups of the verified token, as the authenticator stored them."""
    auth_state = await spawner.user.get_auth_state() or {}
    groups = auth_state.get(spawner.team_groups_auth_state_key)
    return list(groups) if isinstance(groups, list) else []


async def plan(spawner: DnaSpawner) -> TeamPlan:
    if not spawner.team_profiles:
        return TeamPlan()
    return plan_for(await verified_groups(spawner), teams(spawner), personal_namespace(spawner))


async def profile_list(spawner: DnaSpawner) -> list[dict[str, Any]]:
    """The spawn form's choices for this user and server (empty: no form)."""
    if not spawner.name:
        return []  # the default server is the personal one
    editable = (await plan(spawner)).editable()
    if not editable:
        return []
    personal = personal_namespace(spawner) or "your profile"
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


async def profile_list_of(spawner: DnaSpawner, current: DnaSpawner) -> list[dict[str, Any]]:
    """The spawn form's choices, whatever ``profile_list`` is (a list or a callable)."""
    choices = spawner.profile_list
    if callable(choices):
        choices = choices(current)
        if inspect.isawaitable(choices):
            choices = await choices
    return list(choices or [])


async def chosen_team(spawner: DnaSpawner) -> Team | None:
    """The team the posted form chose, re-checked against the user's verified groups now."""
    slug = (spawner.user_options or {}).get("profile")
    if not slug or not spawner.team_profiles:
        return None
    if slug not in {team.slug for team in teams(spawner).values()}:
        return None  # the personal profile, or a choice of an admin's own profile_list
    if not spawner.name:
        raise ConfigurationError(
            "Team notebooks run as named servers; your default server is your personal one.",
            f"{spawner.user.name} asked for profile {slug!r} on the default server",
            reason="team",
        )
    for team in (await plan(spawner)).editable():
        if team.slug == slug:
            return team
    raise ConfigurationError(
        "You may not start a notebook in that team profile (you are not an editor of it).",
        f"{spawner.user.name} asked for profile {slug!r}, not among their edit teams",
        reason="team",
    )


def render_team(spawner: DnaSpawner, team: Team) -> RenderedProfile:
    """The team profile: the user's template context with the team's data, member-free."""
    base = spawner.profile_context(team.owner)
    context = dataclasses.replace(
        base,
        username=team.group,
        namespace=team.namespace,
        owner=team.owner,
        groups=(),
        resource_quota=team.resource_quota or spawner.profile_resource_quota or None,
        team=team.group,
    )
    try:
        return render_profile(context, spawner.profile_template_dirs)
    except TemplateError as e:
        raise ConfigurationError(
            "Your team's Kubeflow profile could not be prepared. "
            "Please contact your platform administrator.",
            str(e),
            reason="template",
        ) from e


async def sync(
    spawner: DnaSpawner,
    api: KubeApi,
    provisioner: ProfileProvisioner,
    identity: str,
    progress: Mapping[str, Progress] | None = None,
) -> TeamSyncResult | None:
    """Team profiles and contributor bindings for this user, as their groups say now."""
    if not spawner.team_profiles:
        return None
    team_plan = await plan(spawner)
    return await ContributorSync(
        api,
        provisioner,
        principals=spawner.team_contributor_principals,
        ready_timeout=spawner.profile_ready_timeout,
        log=spawner.log,
    ).sync(identity, team_plan, lambda team: render_team(spawner, team), progress=progress)


def clients(spawner: DnaSpawner) -> tuple[KubeApi, ProfileProvisioner]:
    """A KubeApi (its own request count) and provisioner with the spawner's settings."""
    api = KubeApi(
        spawner.api.api_client,
        request_timeout=spawner.k8s_api_request_timeout,
        max_watches=spawner.max_concurrent_watches,
    )
    provisioner = ProfileProvisioner(
        api,
        ready_timeout=spawner.profile_ready_timeout,
        service_account=spawner.service_account or "default-editor",
        log=spawner.log,
        max_concurrent=spawner.max_concurrent_provisioning,
    )
    return api, provisioner


async def sync_at_spawn(spawner: DnaSpawner, identity: str) -> TeamSyncResult | None:
    """The sync at a spawn: a team server needs its team ready; a personal server goes on
    whatever happens to the teams (the failure is logged for the admin)."""
    team = getattr(spawner, "team", None)
    if not spawner.team_profiles:
        return None
    try:
        # a spawn in a team shows that team's provisioning steps on its progress page
        progress = {team.group: spawner._report_progress} if team else None
        result = await sync(spawner, *clients(spawner), identity, progress)
    except ProvisioningError as e:
        if team:
            raise
        spawner.log.error("Team profiles of %s not synchronised: %s", spawner.user.name, e)
        return None
    if result is not None:
        spawner.log.info("Teams of %s: %s", spawner.user.name, describe_result(result))
    if team and (result is None or team.group in result.failed or team not in result.ready):
        reason = str(result.failed.get(team.group, "not ready")) if result else "no teams"
        raise ConfigurationError(
            f"The team profile {team.namespace} is not available. "
            "Please contact your platform administrator.",
            f"team {team.group!r} for {spawner.user.name}: {reason}",
            reason="team",
        )
    return result


def saved_team(spawner: DnaSpawner, group: str) -> Team | None:
    """The team of a server saved in the hub's state, by the policy of today's config."""
    try:
        team = teams(spawner).get(group)
    except ConfigurationError as e:
        spawner.log.error("Team %r of %s's server: %s", group, spawner.user.name, e)
        return None
    if team is None:
        spawner.log.warning(
            "Server %s of %s ran in team %r, which is no longer configured",
            spawner.name,
            spawner.user.name,
            group,
        )
    return team


def check_personal_namespace(spawner: DnaSpawner) -> None:
    """A personal profile must never be a configured team's namespace."""
    if not spawner.team_profiles or getattr(spawner, "team", None):
        return
    for team in teams(spawner).values():
        if team.namespace == spawner.namespace:
            raise ConfigurationError(
                "Your username maps to a team's Kubeflow profile, so your own profile cannot "
                "be created. Please contact your platform administrator.",
                f"{spawner.user.name}'s personal namespace {spawner.namespace} is team "
                f"{team.group!r}'s namespace; nothing written",
                reason="naming",
            )


__all__ = [
    "PERSONAL_SLUG",
    "chosen_team",
    "profile_list",
    "render_team",
    "sync",
]
