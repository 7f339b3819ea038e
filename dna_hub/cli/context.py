"""What every ``dna-hub`` command starts from: the hub's config, its settings, a kube client.

- :func:`load_hub_config` reads the hub's ``jupyterhub_config.py`` (one-line errors);
- :func:`settings_from` builds :class:`~dna_hub.hub.settings.DnaSettings` from it — the same
  settings object the spawner is, without a spawner, user or cluster;
- :func:`load_client` builds a Kubernetes client from ``--kubeconfig``/``--context`` or the
  pod's service account;
- :func:`preview_spawner` is only for ``render --pod``: KubeSpawner builds the pod, and it
  needs a spawner with a user; that spawner never talks to a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import kube_config as kube_config_module
from traitlets import TraitError
from traitlets.config import Config, PyFileConfigLoader

from dna_hub.errors import ConfigurationError
from dna_hub.hub.settings import DnaSettings, NotebookServer, notebook_server_from_config

__all__ = [
    "PreviewUser",
    "auth_state_enabled",
    "in_cluster",
    "isolate_from_cluster",
    "load_client",
    "load_hub_config",
    "notebook_server",
    "preview_spawner",
    "settings_from",
]

#: What the hub would pass a spawner as ``hub`` (URLs only; nothing is requested).
PREVIEW_HUB = SimpleNamespace(
    api_url="http://hub:8081/hub/api", public_host="", url="http://hub:8081/hub/", base_url="/hub/"
)

#: ``render --pod`` points the Kubernetes client at this address, which cannot resolve
#: (RFC 6761 ``.invalid``): a preview must never reach, or need credentials for, a cluster.
PREVIEW_SERVER = "https://dna-hub-render.invalid"


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


def settings_from(config: Config) -> DnaSettings:
    """The hub's DnaSettings; :class:`ConfigurationError` naming the invalid trait."""
    return DnaSettings.from_config(config)


def notebook_server(config: Config) -> NotebookServer:
    """KubeSpawner's service account and port as the hub would see them."""
    return notebook_server_from_config(config)


def auth_state_enabled(config: Config) -> bool:
    """Whether the hub keeps auth_state (JupyterHub's default: no)."""
    enabled = False
    for section in ("Authenticator", "GenericOAuthenticator", "DnaOIDCAuthenticator"):
        if section in config and "enable_auth_state" in config[section]:
            enabled = bool(config[section]["enable_auth_state"])
    return enabled


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _kubeconfig_files(args: argparse.Namespace) -> str:
    """The kubeconfig file list the client will read; one clear error if none exists."""
    if args.kubeconfig:
        files, source = args.kubeconfig, "--kubeconfig"
    elif os.environ.get("KUBECONFIG"):
        files, source = os.environ["KUBECONFIG"], "$KUBECONFIG"
    else:
        files, source = "~/.kube/config", "the default kubeconfig"
    if not any(Path(f).expanduser().is_file() for f in files.split(os.pathsep) if f):
        raise kube_config.ConfigException(
            f"{source} {files} does not exist: pass --kubeconfig FILE, set KUBECONFIG, or run "
            "doctor in the hub's pod (kubectl -n HUB_NAMESPACE exec deploy/hub -- "
            "dna-hub doctor)"
        )
    return files


async def load_client(args: argparse.Namespace) -> ApiClient:
    """A Kubernetes client from --kubeconfig/--context, $KUBECONFIG, or the pod's account."""
    configuration = Configuration()
    if args.kubeconfig or not in_cluster():
        await kube_config.load_kube_config(
            config_file=_kubeconfig_files(args),
            context=args.context,
            client_configuration=configuration,
        )
    else:
        kube_config.load_incluster_config(client_configuration=configuration)
    return ApiClient(configuration)


@dataclass
class PreviewUser:
    """What KubeSpawner reads of JupyterHub's ``User`` to build a pod, for ``render --pod``."""

    name: str
    groups: list[Any] = field(default_factory=list)
    auth_state: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"/user/{self.name}/"

    async def get_auth_state(self) -> dict[str, Any]:
        return self.auth_state


def isolate_from_cluster() -> None:
    """Point this process's Kubernetes client at :data:`PREVIEW_SERVER`, no credentials.

    For the ``dna-hub render`` process only (it is one process per preview): KubeSpawner's
    constructor loads the process-wide client configuration, and a preview must neither
    need nor use the caller's credentials.
    """
    directory = Path(tempfile.mkdtemp(prefix="dna-hub-render-"))
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "preview",
                "clusters": [{"name": "preview", "cluster": {"server": PREVIEW_SERVER}}],
                "users": [{"name": "preview", "user": {}}],
                "contexts": [
                    {"name": "preview", "context": {"cluster": "preview", "user": "preview"}}
                ],
            }
        )
    )
    os.environ["KUBECONFIG"] = str(kubeconfig)
    # read once at import by kubernetes_asyncio: the environment alone is too late
    kube_config_module.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # never the pod's own credentials


def preview_spawner(config: Config, user: PreviewUser) -> Any:
    """A DnaSpawner for ``render --pod``; it sends no request (see :func:`isolate_from_cluster`)."""
    from dna_hub.hub.spawner import DnaSpawner

    try:
        return DnaSpawner(
            config=config,
            user=user,
            hub=PREVIEW_HUB,
            # as the hub would: profile_owner_fallback applies only with auth_state off
            authenticator=SimpleNamespace(enable_auth_state=auth_state_enabled(config)),
        )
    except (TraitError, ValueError) as e:
        raise ConfigurationError("invalid DnaSpawner configuration", str(e)) from e
