"""``dna-hub render``: the admin's preview of what a login applies, with no cluster.

It builds the hub's :class:`~dna_hub.hub.settings.DnaSettings` from its config and renders
what a spawn would apply — the settings' own builders, the spawn's code, not a copy of it.
It also makes the DnaSpawner the hub would make for the user — in a process whose
Kubernetes client points nowhere (:func:`~dna_hub.cli.context.isolate_from_cluster`) — so
the checks a hub runs when it starts refuse here what they would refuse there, and
``--pod`` prints the pod KubeSpawner builds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from traitlets.config import Config

from dna_hub.cli.context import (
    PreviewUser,
    auth_state_enabled,
    isolate_from_cluster,
    load_hub_config,
    notebook_server,
    preview_spawner,
    settings_from,
)
from dna_hub.errors import ConfigurationError, DnaHubError, TemplateRenderError
from dna_hub.hub import server_choice, team_choice
from dna_hub.hub.settings import DnaSettings, NotebookServer
from dna_hub.policy.rendering import default_template_dir
from dna_hub.policy.teams import contributor_objects
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION, with_digest

__all__ = ["PLACEHOLDER", "load_hub_config", "render_objects", "run_render"]

#: Where the pod manifest would carry per-spawn secrets, a placeholder is printed instead.
PLACEHOLDER = "<generated at spawn>"


async def render_form(config: Config, user: str, groups: list[str]) -> list[dict[str, Any]]:
    """The spawn form's entries a login of ``user`` with ``groups`` sees (default server)."""
    settings = settings_from(config)
    auth_state = {settings.team_groups_auth_state_key: list(groups)}
    spawner = preview_spawner(
        config, PreviewUser(user, groups=[_Group(g) for g in groups], auth_state=auth_state)
    )
    entries: list[dict[str, Any]] = await spawner._profile_entries(spawner)
    return await server_choice.visible_to(settings, entries, spawner.user.get_auth_state)


def parse_choices(pairs: list[str]) -> dict[str, str]:
    """``--option KEY=VALUE`` s as the user_options KubeSpawner's form would post."""
    choices = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError("invalid --option", f"--option {pair!r}: expected KEY=VALUE")
        choices[key] = value
    return choices


async def render_objects(
    config: Config,
    user: str,
    owner: str | None,
    groups: list[str],
    with_pod: bool,
    choices: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """What a login of ``user`` with ``groups`` applies (and, ``with_pod``, the pod)."""
    settings = settings_from(config)
    server = notebook_server(config)
    # What the authenticator would have stored: the groups of the verified token.
    auth_state = {settings.team_groups_auth_state_key: list(groups)}
    # The spawner the hub would make for this user: constructing it runs the checks a hub
    # runs at start (every trait's validation, the name-bearing templates:
    # dna_hub.hub.name_check), so a preview refuses what the hub would refuse.
    spawner = preview_spawner(
        config, PreviewUser(user, groups=[_Group(g) for g in groups], auth_state=auth_state)
    )
    namespace = settings.personal_namespace(user)
    settings.check_personal_namespace(user, namespace)
    if owner is None:
        try:
            owner = settings.owner_of(
                user, auth_state, auth_state_enabled=auth_state_enabled(config)
            )
        except ConfigurationError as e:
            raise ConfigurationError(
                e.user_message,
                f"no Kubeflow identity for user {user!r}: pass --owner IDENTITY (the "
                "kubeflow-userid the hub would get from their login, e.g. an email), or set "
                "DnaSpawner.profile_owner_fallback in the --config file",
            ) from e
    try:
        rendered = settings.render_personal(
            username=user, namespace=namespace, owner=owner, groups=groups, server=server
        )
    except TemplateRenderError as e:
        raise TemplateRenderError(e.user_message, _with_template_path(e, settings)) from e
    objects = [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
    objects.extend(_team_objects(settings, server, user, auth_state, owner))
    if with_pod or choices:
        # the form's choice, checked and applied as at a spawn (KubeSpawner's overrides)
        spawner.user_options = dict(choices or {})
        await spawner.load_user_options()
    if with_pod:
        spawner.api_token = PLACEHOLDER
        spawner.oauth_client_id = f"jupyterhub-user-{user}"
        pod = await spawner.get_pod_manifest()
        manifest = spawner.api.api_client.sanitize_for_serialization(pod)
        manifest["metadata"]["namespace"] = spawner.namespace  # set by KubeSpawner at create
        objects.append(manifest)
    return objects


@dataclass(frozen=True)
class _Group:
    """A hub group as a spawner sees it (``user.groups`` holds objects with a name)."""

    name: str


def _with_template_path(error: DnaHubError, settings: DnaSettings) -> str:
    """The admin's detail of a template error, led by the path of the template to fix."""
    detail = error.detail or error.user_message
    name = getattr(error.__cause__, "template", None)
    if name:
        directories: list[str | Path] = [*settings.profile_template_dirs, default_template_dir()]
        for directory in directories:
            if (Path(directory) / name).is_file():
                return f"{Path(directory) / name}: {detail}"
    return detail


def _team_objects(
    settings: DnaSettings,
    server: NotebookServer,
    user: str,
    auth_state: dict[str, Any],
    owner: str,
) -> list[dict[str, Any]]:
    """Each team profile the groups give, then the user's contributor objects in them."""
    plan = team_choice.team_plan(settings, user, auth_state)
    for group, reason in plan.refused:
        print(f"dna-hub render: team {group!r} refused: {reason}", file=sys.stderr)
    objects: list[dict[str, Any]] = []
    for team in plan.teams:
        rendered = settings.render_team(team, server)
        objects += [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
    for contributor in sorted(plan.contributors(owner), key=lambda c: (c.namespace, c.name)):
        objects += contributor_objects(contributor, principals=settings.team_contributor_principals)
    return objects


def run_render(args: argparse.Namespace) -> int:
    isolate_from_cluster()
    try:
        config = load_hub_config(args.config)
        if getattr(args, "form", False):
            entries = asyncio.run(render_form(config, args.user, args.group))
            sys.stdout.write(
                f"# spawn form of {args.user!r} with groups {args.group} (default server)\n"
            )
            yaml.safe_dump(entries, sys.stdout, sort_keys=False)
            return 0
        choices = parse_choices(getattr(args, "option", []))
        objects = asyncio.run(
            render_objects(config, args.user, args.owner, args.group, args.pod, choices)
        )
    except DnaHubError as e:
        # For the admin running the CLI: what to fix, not the words a data scientist sees.
        print(f"dna-hub render: {e.detail or e.user_message}", file=sys.stderr)
        return 2
    sys.stdout.write(f"# objects a login of {args.user!r} applies ({DIGEST_ANNOTATION} = digest)\n")
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, explicit_start=True)
    return 0
