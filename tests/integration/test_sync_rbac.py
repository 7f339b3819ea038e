"""helm-values/dna-hub-sync.yaml: the sync CronJob's RBAC is least privilege, each rule proven.

As tests/integration/test_hub_rbac.py does for the hub: for every single permission, a sync identity
with all the others runs what ``dna-hub sync`` does (apply every template kind, dry run,
prune every template kind) against the real API server and must hit a real 403; with all of
them it runs cleanly.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from devstack.controlplane import ControlPlane
from devstack.paths import REPO_ROOT
from dna_hub.cli.sync import renderer
from dna_hub.k8s.api import KubeApi
from dna_hub.k8s.retry import RetryPolicy
from dna_hub.policy.ops_permissions import SYNC_PERMISSIONS
from dna_hub.policy.permissions import Permission
from dna_hub.profiles.provisioning import ProfileProvisioner
from dna_hub.profiles.sync import ProfileSync
from tests.integration.test_hub_rbac import kfp_namespace  # noqa: F401 - fixture
from tests.support.rbac_identity import granted, rules_without, service_account_token

SYNC_FILE = REPO_ROOT / "helm-values" / "dna-hub-sync.yaml"
#: Every namespaced default template: an empty file of the same name removes it.
NAMESPACED_TEMPLATES = sorted(
    p.name for p in (REPO_ROOT / "profile-templates").glob("*.yaml.j2") if p.name[:2] != "00"
)


def sync_objects() -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(SYNC_FILE.read_text()) if o]


def sync_role() -> dict[str, Any]:
    (role,) = [o for o in sync_objects() if o["kind"] == "ClusterRole"]
    return role


def test_sync_rbac_grants_exactly_the_documented_permissions() -> None:
    assert granted(sync_role()) == {(p.group, p.resource, p.verb) for p in SYNC_PERMISSIONS}


def test_sync_rbac_is_least_privilege() -> None:
    objects = sync_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CronJob", "ServiceAccount"]
    rules = granted(sync_role())
    for group, resource, verb in rules:
        assert "*" not in (group, resource, verb)
        assert resource not in {"secrets", "pods", "persistentvolumeclaims"}
        assert verb not in {"escalate", "bind", "impersonate", "deletecollection", "update"}
    # it may not make or remove profiles or namespaces
    assert ("kubeflow.org", "profiles", "create") not in rules
    assert ("kubeflow.org", "profiles", "delete") not in rules
    assert not {(g, r, v) for g, r, v in rules if r == "namespaces" and v not in {"get", "list"}}
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == sync_role()["metadata"]["name"]
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "jupyterhub"}
    ]
    (cronjob,) = [o for o in objects if o["kind"] == "CronJob"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = pod["containers"]
    assert container["command"][:2] == ["dna-hub", "sync"]
    assert "--config" in container["command"]
    assert not container["image"].endswith(":latest")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] != "tmp")


def test_sync_manifests_are_valid() -> None:
    import kubernetes_validate

    for obj in sync_objects():
        kubernetes_validate.validate(obj, "1.30.0", strict=True)


# --- on the control plane -----------------------------------------------------------------


async def sync_token(admin: ApiClient, missing: Permission | None, tag: str) -> str:
    """A token of a ServiceAccount bound to dna-hub-sync.yaml's rules less ``missing``."""
    return await service_account_token(
        admin, f"dna-hub-sync-{tag}", rules_without(sync_role(), missing)
    )


def client_for(control_plane: ControlPlane, token: str) -> ApiClient:
    configuration = copy.copy(control_plane.hub_configuration())
    configuration.api_key = {"BearerToken": f"Bearer {token}"}
    return ApiClient(configuration)


def write_kubeconfig(control_plane: ControlPlane, token: str, path: Path) -> Path:
    """A kubeconfig for ``token`` (TLS verified with the control plane's CA)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "cp",
                        "cluster": {
                            "server": control_plane.server,
                            "certificate-authority": str(control_plane.ca_file),
                        },
                    }
                ],
                "users": [{"name": "sync", "user": {"token": token}}],
                "contexts": [{"name": "sync", "context": {"cluster": "cp", "user": "sync"}}],
                "current-context": "sync",
            }
        )
    )
    return path


def legacy_config(template_dir: Path | None = None) -> Config:
    config = Config()
    config.DnaSpawner.legacy_envoy_filter = True
    config.DnaSpawner.legacy_ml_pipeline_policy = True
    if template_dir is not None:
        config.DnaSpawner.profile_template_dirs = [str(template_dir)]
    return config


def emptied_templates(directory: Path) -> Path:
    """A template dir that removes every namespaced default: only the Profile is left."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in NAMESPACED_TEMPLATES:
        (directory / name).write_text("")
    return directory


async def managed_bare_profile(hub_api: ApiClient, username: str, empty: Path) -> None:
    """A Profile dna_hub provisioned (as the hub) whose namespace has no template objects."""
    rendered = renderer(legacy_config(empty))(username, f"{username}@example.com", [])
    kube = KubeApi(hub_api, request_timeout=10, retry=RetryPolicy(attempts=3))
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)


async def exercise(api_client: ApiClient, username: str, empty: Path) -> list[str]:
    """What sync does, as one identity: a dry run, a run that creates every template kind,
    a run that prunes every one. The failures it met (each profile's detail)."""
    kube = KubeApi(api_client, request_timeout=10, retry=RetryPolicy(attempts=3))
    failures: list[str] = []
    for config, dry_run in (
        (legacy_config(), True),
        (legacy_config(), False),
        (legacy_config(empty), False),
    ):
        syncer = ProfileSync(kube, renderer(config), prune_namespaces=["kubeflow"], concurrency=1)
        try:
            profiles, missing = await syncer.managed_profiles([username])
        except Exception as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        results = await syncer.run(profiles, dry_run=dry_run)
        failures += [r.detail for r in [*missing, *results] if r.failed]
    return failures


@pytest.mark.controlplane
@pytest.mark.slow
async def test_every_sync_permission_is_needed_and_all_suffice(
    admin_api: ApiClient,
    hub_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    kfp_namespace: None,  # noqa: F811 - fixture
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    empty = emptied_templates(tmp_path / "empty")
    # all of them: everything works
    username = unique_name("sync-all")
    await managed_bare_profile(hub_api, username, empty)
    async with client_for(
        control_plane, await sync_token(admin_api, None, unique_name("a"))
    ) as api:
        assert await exercise(api, username, empty) == []

    limit = asyncio.Semaphore(6)

    async def without(index: int, permission: Permission) -> tuple[Permission, list[str]]:
        async with limit:
            user = unique_name(f"sync-{index}")
            await managed_bare_profile(hub_api, user, empty)
            token = await sync_token(admin_api, permission, unique_name(f"s{index}"))
            async with client_for(control_plane, token) as api:
                return permission, await exercise(api, user, empty)

    # Kueue's rules need Kueue's kinds served: test_kueue.py proves each of them
    checked = [p for p in SYNC_PERMISSIONS if p.setting != "kueue"]
    results = await asyncio.gather(*(without(i, p) for i, p in enumerate(checked)))
    unneeded = [f"{p.verb} {p.resource}.{p.group or 'core'}" for p, f in results if not f]
    assert not unneeded, f"dna-hub-sync.yaml grants permissions sync never uses: {unneeded}"
    wrong = [
        f"{p.verb} {p.resource}: {f}"
        for p, f in results
        if f and not any("403" in failure for failure in f)
    ]
    assert not wrong, "missing permissions must fail with 403:\n" + "\n".join(wrong)
