"""Keep the notebook's JupyterHub API token out of its pod spec.

JupyterHub hands a single-user server its API token as ``JUPYTERHUB_API_TOKEN`` (and the
deprecated ``JPY_API_TOKEN``), and KubeSpawner writes env values into the pod spec
(jupyterhub/kubespawner#398). Anyone who may read pods in the profile namespace —
``default-viewer``, ``view`` contributors — could take the token and act as the notebook
(``default-editor``). Here the token goes into a per-server Secret instead, referenced from
the pod with ``secretKeyRef``:

- the Secret's name is fresh for every start (``<pod>-api-token-<random>``), so a Secret of
  the previous start, not yet garbage collected, never conflicts and never has to be read
  or deleted by the hub (the hub may only *create* Secrets);
- it is created right after the pod, with an ownerReference to that pod (its uid), so
  Kubernetes' garbage collector deletes it with the pod; until it exists the kubelet
  retries the container (CreateContainerConfigError), as it does for any missing Secret;
- one that exists already when the hub creates it is never taken for ours (someone in the
  namespace may have made it first): the spawn fails (:func:`create_api_token_secret`).

Manifests here are pure; :func:`create_api_token_secret` is the one API call.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.errors import OwnershipConflict
from dna_hub.k8s.api import Kind, KubeApi
from dna_hub.policy.labels import API_TOKEN_LABEL, MANAGED_BY, MANAGED_BY_LABEL

__all__ = [
    "API_TOKEN_ENV",
    "API_TOKEN_KEY",
    "SECRET",
    "api_token_secret_manifest",
    "api_token_secret_name",
    "create_api_token_secret",
    "env_without_api_token",
]

#: Environment variables through which JupyterHub passes the server's API token.
API_TOKEN_ENV = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
#: The key of the token in the Secret.
API_TOKEN_KEY = "token"  # noqa: S105 (a key name, not a secret)
SECRET = Kind("v1", "Secret", "secrets", namespaced=True)
_SUFFIX = "-api-token-"


def api_token_secret_name(pod_name: str) -> str:
    """A fresh Secret name for one start of ``pod_name`` (a DNS subdomain, < 253 chars)."""
    return f"{pod_name}{_SUFFIX}{secrets.token_hex(4)}"


def env_without_api_token(env: Mapping[str, Any], secret_name: str) -> dict[str, Any]:
    """``env`` with every API-token variable read from the Secret instead of a value.

    KubeSpawner turns a dict value into a ``V1EnvVar`` (``valueFrom``)."""
    hidden = dict(env)
    for name in API_TOKEN_ENV:
        if name in hidden:
            hidden[name] = {
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": API_TOKEN_KEY}}
            }
    return hidden


def api_token_secret_manifest(
    *, name: str, namespace: str, token: str, pod_name: str, pod_uid: str
) -> dict[str, Any]:
    """The Secret holding one server's token, owned by (deleted with) its pod."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, API_TOKEN_LABEL: pod_name},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}
            ],
        },
        "type": "Opaque",
        "stringData": {API_TOKEN_KEY: token},
    }


async def create_api_token_secret(
    api: KubeApi, *, name: str, namespace: str, token: str, pod_name: str, pod_uid: str
) -> None:
    """Create the Secret; :class:`~dna_hub.errors.OwnershipConflict` if it exists already.

    The name is fresh per start, but it is in the pod's spec before the Secret exists, so
    anyone who may create Secrets in the namespace (a profile's editors) could create it
    first with a token of their choosing. The hub may not read Secrets, so it cannot tell
    such a Secret from one a retried create of its own had made: either way the spawn
    fails (JupyterHub then deletes the pod) and the next start gets a new name.
    """
    manifest = api_token_secret_manifest(
        name=name, namespace=namespace, token=token, pod_name=pod_name, pod_uid=pod_uid
    )
    try:
        await api.create(SECRET, manifest, field_manager="dna-hub")
    except ApiException as e:
        if e.status != 409:
            raise
        raise OwnershipConflict(
            "Your notebook server's credentials could not be stored safely. "
            "Please start your server again.",
            f"Secret {namespace}/{name} (the API token of pod {pod_name}) already existed "
            "before the hub created it; it is not used and the spawn is stopped",
        ) from e
