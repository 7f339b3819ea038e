"""``dna-hub render``: the admin's preview of what a login applies, with no cluster.

It builds a real :class:`~dna_hub.DnaSpawner` from the hub's config, with a stand-in user
and hub (what JupyterHub would pass) and without loading any Kubernetes credentials, and
prints what the spawner would apply — the same code path, not a copy of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import yaml
from traitlets import TraitError
from traitlets.config import Config, PyFileConfigLoader

from dna_hub.errors import ConfigurationError, ProvisioningError
from dna_hub.hub import team_choice
from dna_hub.policy.rendering import default_template_dir
from dna_hub.policy.teams import contributor_objects
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION, with_digest

#: Where the pod manifest would carry per-spawn secrets, a placeholder is printed instead.
PLACEHOLDER = "<generated at spawn>"


def load_hub_config(path: str | None) -> Config:
    """The --config file, or an error of one line naming the file (and line) to fix."""
    if not path:
        return Config()
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"dna-hub: --config {path} does not exist")
    try:
        return PyFileConfigLoader(file.name, path=str(file.parent.resolve())).load_config()
    except SyntaxError as e:
        raise SystemExit(f"dna-hub: --config {path}, line {e.lineno}: {e.msg}") from None
    except Exception as e:  # the config file is Python: anything can go wrong in it
        raise SystemExit(f"dna-hub: --config {path}: {type(e).__name__}: {e}") from None


class _OfflineUser:
    """What a spawner needs of JupyterHub's User, for a user that is not in any hub."""

    def __init__(self, name: str, groups: list[str]) -> None:
        self.name = name
        self.id = 0
        self.url = f"/user/{name}/"
        self.groups = [SimpleNamespace(name=g) for g in groups]
        self.settings: dict[str, Any] = {}
        #: What the authenticator would have stored: the groups of the verified token.
        self.auth_state: dict[str, Any] = {}

    async def get_auth_state(self) -> dict[str, Any]:
        return self.auth_state


def _auth_state_setting(config: Config) -> SimpleNamespace:
    enabled = False  # JupyterHub's default
    for section in ("Authenticator", "GenericOAuthenticator", "DnaOIDCAuthenticator"):
        if section in config and "enable_auth_state" in config[section]:
            enabled = bool(config[section]["enable_auth_state"])
    return SimpleNamespace(enable_auth_state=enabled)


@contextmanager
def _no_kubernetes_credentials():
    # KubeSpawner loads kubeconfig/in-cluster credentials in __init__; a preview needs none.
    with mock.patch("kubespawner.spawner.load_config"):
        yield


def offline_spawner(config: Config, user: str, groups: list[str]) -> Any:
    """A real DnaSpawner of ``config`` for ``user``, as the hub would make it, with no cluster.

    Constructing it runs the checks the hub runs when it starts (traits' validation, the
    name-bearing templates: :mod:`dna_hub.hub.name_check`): an invalid configuration is a
    :class:`ConfigurationError`. Needs a running event loop (KubeSpawner's shared client).
    """
    from dna_hub.hub.spawner import DnaSpawner

    hub = SimpleNamespace(
        api_url="http://hub:8081/hub/api",
        public_host="",
        url="http://hub:8081/hub/",
        base_url="/hub/",
    )
    try:
        with _no_kubernetes_credentials():
            spawner = DnaSpawner(
                config=config,
                user=_OfflineUser(user, groups),
                hub=hub,
                _mock=True,
                # as the hub would: profile_owner_fallback applies only with auth_state off
                authenticator=_auth_state_setting(config),
            )
    except (TraitError, ValueError) as e:
        # traitlets validators raise either: both mean the configuration is invalid
        raise ConfigurationError("invalid DnaSpawner configuration", str(e)) from e
    return spawner


async def render_objects(
    config: Config, user: str, owner: str | None, groups: list[str], with_pod: bool
) -> list[dict[str, Any]]:
    spawner = offline_spawner(config, user, groups)
    spawner.user.auth_state[spawner.team_groups_auth_state_key] = list(groups)
    spawner._apply_namespace_policy(strict=True)
    team_choice.check_personal_namespace(spawner)
    if owner is None:
        try:
            owner = await spawner.profile_owner()
        except ConfigurationError as e:
            raise ConfigurationError(
                e.user_message,
                f"no Kubeflow identity for user {user!r}: pass --owner IDENTITY (the "
                "kubeflow-userid the hub would get from their login, e.g. an email), or set "
                "DnaSpawner.profile_owner_fallback in the --config file",
                reason=e.reason,
            ) from e
    try:
        rendered = spawner.render_profile(owner)
    except ConfigurationError as e:
        raise ConfigurationError(
            e.user_message, _with_template_path(e, spawner), reason=e.reason
        ) from e
    objects = [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
    objects.extend(await _team_objects(spawner, owner))
    if with_pod:
        spawner.api_token = PLACEHOLDER
        spawner.oauth_client_id = f"jupyterhub-user-{user}"
        pod = await spawner.get_pod_manifest()
        manifest = spawner.api.api_client.sanitize_for_serialization(pod)
        manifest["metadata"]["namespace"] = spawner.namespace  # set by KubeSpawner at create
        objects.append(manifest)
    return objects


def _with_template_path(error: ConfigurationError, spawner: Any) -> str:
    """The admin's detail of a template error, led by the path of the template to fix."""
    detail = error.detail or error.user_message
    name = getattr(error.__cause__, "template", None)
    if name:
        for directory in [*spawner.profile_template_dirs, default_template_dir()]:
            if (Path(directory) / name).is_file():
                return f"{Path(directory) / name}: {detail}"
    return detail


async def _team_objects(spawner: Any, owner: str) -> list[dict[str, Any]]:
    """Each team profile the groups give, then the user's contributor objects in them."""
    plan = await team_choice.plan(spawner)
    for group, reason in plan.refused:
        print(f"dna-hub render: team {group!r} refused: {reason}", file=sys.stderr)
    objects: list[dict[str, Any]] = []
    for team in plan.teams:
        rendered = team_choice.render_team(spawner, team)
        objects += [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
    for contributor in sorted(plan.contributors(owner), key=lambda c: (c.namespace, c.name)):
        objects += contributor_objects(contributor, principals=spawner.team_contributor_principals)
    return objects


def run_render(args: argparse.Namespace) -> int:
    try:
        objects = asyncio.run(
            render_objects(
                load_hub_config(args.config), args.user, args.owner, args.group, args.pod
            )
        )
    except ProvisioningError as e:
        # For the admin running the CLI: what to fix, not the words a data scientist sees.
        print(f"dna-hub render: {e.detail or e.user_message}", file=sys.stderr)
        return 2
    sys.stdout.write(f"# objects a login of {args.user!r} applies ({DIGEST_ANNOTATION} = digest)\n")
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, explicit_start=True)
    return 0
