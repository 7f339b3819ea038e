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

from ..errors import ConfigurationError, ProvisioningError
from ..provisioning import DIGEST_ANNOTATION, with_digest

#: Where the pod manifest would carry per-spawn secrets, a placeholder is printed instead.
PLACEHOLDER = "<generated at spawn>"


def load_hub_config(path: str | None) -> Config:
    if not path:
        return Config()
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"dna-hub render: config file {path} does not exist")
    return PyFileConfigLoader(file.name, path=str(file.parent.resolve())).load_config()


class _OfflineUser:
    """What a spawner needs of JupyterHub's User, for a user that is not in any hub."""

    def __init__(self, name: str, groups: list[str]) -> None:
        self.name = name
        self.id = 0
        self.url = f"/user/{name}/"
        self.groups = [SimpleNamespace(name=g) for g in groups]
        self.settings: dict[str, Any] = {}

    async def get_auth_state(self) -> dict[str, Any]:
        return {}


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


async def render_objects(
    config: Config, user: str, owner: str | None, groups: list[str], with_pod: bool
) -> list[dict[str, Any]]:
    from ..spawner import DnaSpawner

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
    spawner._apply_namespace_policy(strict=True)
    if owner is None:
        owner = await spawner.profile_owner()
    rendered = spawner.render_profile(owner)
    objects = [with_digest(rendered.profile, rendered.digest), *rendered.namespaced]
    if with_pod:
        spawner.api_token = PLACEHOLDER
        spawner.oauth_client_id = f"jupyterhub-user-{user}"
        pod = await spawner.get_pod_manifest()
        manifest = spawner.api.api_client.sanitize_for_serialization(pod)
        manifest["metadata"]["namespace"] = spawner.namespace  # set by KubeSpawner at create
        objects.append(manifest)
    return objects


def run_render(args: argparse.Namespace) -> int:
    try:
        objects = asyncio.run(
            render_objects(
                load_hub_config(args.config), args.user, args.owner, args.group, args.pod
            )
        )
    except ProvisioningError as e:
        print(f"dna-hub render: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(f"# objects a login of {args.user!r} applies ({DIGEST_ANNOTATION} = digest)\n")
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, explicit_start=True)
    return 0
