"""helm-values/hub-rbac.yaml grants exactly what dna_hub does — each permission proven needed.

The suite's hub identity has exactly this RBAC (tests/support/controlplane.py applies the
file unchanged). Here, for every single permission, a hub identity with all the others
runs everything dna_hub does against the API and must hit a real 403; with all of them,
it runs cleanly.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.errors import ApiFailure
from dna_hub.k8s.api import KubeApi
from dna_hub.k8s.retry import RetryPolicy
from dna_hub.naming import namespace_for
from dna_hub.permissions import HUB_PERMISSIONS, Permission
from dna_hub.provisioning import ProfileProvisioner
from tests.support.controlplane import ControlPlane
from tests.support.paths import REPO_ROOT
from tests.test_provisioning import rendered_for

RBAC_FILE = REPO_ROOT / "helm-values" / "hub-rbac.yaml"


def rbac_objects() -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(RBAC_FILE.read_text()) if o]


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_file_grants_exactly_the_documented_permissions() -> None:
    (role,) = [o for o in rbac_objects() if o["kind"] == "ClusterRole"]
    assert granted(role) == {(p.group, p.resource, p.verb) for p in HUB_PERMISSIONS}


def test_rbac_file_is_least_privilege() -> None:
    objects = rbac_objects()
    assert sorted(o["kind"] for o in objects) == ["ClusterRole", "ClusterRoleBinding"]
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    for group, resource, verb in granted(role):
        assert "*" not in (group, resource, verb)
        assert resource != "secrets", "no cluster-wide access to Secrets"
        assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule
    # writes: nothing to namespaces themselves, no cluster-scoped kinds but the Profile
    writes = {(g, r) for g, r, v in granted(role) if v in {"create", "patch", "update", "delete"}}
    assert ("", "namespaces") not in writes
    assert ("rbac.authorization.k8s.io", "clusterroles") not in writes
    assert ("rbac.authorization.k8s.io", "clusterrolebindings") not in writes
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}
    ]
    for obj in objects:
        assert obj["metadata"].get("namespace") not in {"kube-system", "istio-system"}


# --- on the control plane: every permission is needed -------------------------------------


def pod_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"component": "singleuser-server", "access-ml-pipeline": "true"},
        },
        "spec": {
            "serviceAccountName": "default-editor",
            "containers": [{"name": "notebook", "image": "x", "command": ["sleep", "60"]}],
        },
    }


def pvc_manifest(name: str) -> dict[str, Any]:
    """The claim KubeSpawner makes with the chart's default dynamic storage."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"component": "singleuser-storage"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }


async def drain(response: Any) -> None:
    """Read a watch to its end; kubernetes_asyncio leaves the status of unread ones to us."""
    async with response:
        body = await response.read()
        if response.status >= 400:
            raise ApiException(status=response.status, reason=body.decode(errors="replace"))


async def exercise(api_client: ApiClient, username: str) -> None:
    """What dna_hub does against the API, with one identity.

    Provisioning is dna_hub's own code (create path, then the forced patch path); the pod
    and event calls are exactly the ones KubeSpawner 7 makes (reflectors across namespaces,
    create, delete, read to confirm a stale pod is gone).
    """
    # retries cover a loaded machine; a 403 is never retried, so it still surfaces
    kube = KubeApi(api_client, request_timeout=10, retry=RetryPolicy(attempts=3))
    rendered = rendered_for(username, legacy_envoy_filter=True, legacy_ml_pipeline_policy=True)
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)
    await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered, force=True)
    core = CoreV1Api(api_client)
    namespace = namespace_for(username)
    selector = "component=singleuser-server"
    await core.list_pod_for_all_namespaces(label_selector=selector, _request_timeout=10)
    await drain(
        await core.list_pod_for_all_namespaces(
            label_selector=selector, watch=True, timeout_seconds=1, _preload_content=False
        )
    )
    await core.list_event_for_all_namespaces(_request_timeout=10)
    await drain(
        await core.list_event_for_all_namespaces(
            watch=True, timeout_seconds=1, _preload_content=False
        )
    )
    # the chart's singleuser.storage.type "dynamic": KubeSpawner creates claim-<user> (a
    # 409 is fine) and reads it back when a quota refuses the create or for a legacy name
    claim = pvc_manifest(f"claim-{username}")
    await core.create_namespaced_persistent_volume_claim(namespace, claim, _request_timeout=10)
    await core.read_namespaced_persistent_volume_claim(
        claim["metadata"]["name"], namespace, _request_timeout=10
    )
    name = "jupyter-rbac-check"
    await core.create_namespaced_pod(namespace, pod_manifest(name), _request_timeout=10)
    await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=10)
    try:
        await core.read_namespaced_pod(name, namespace, _request_timeout=10)
    except ApiException as e:
        if e.status != 404:
            raise


async def identity_without(
    admin: ApiClient, control_plane: ControlPlane, missing: Permission | None, tag: str
) -> ApiClient:
    """A ServiceAccount bound to hub-rbac.yaml's rules less ``missing``; an ApiClient as it."""
    token = await token_without(admin, missing, tag)
    configuration = copy.copy(control_plane.hub_configuration())
    configuration.api_key = {"BearerToken": f"Bearer {token}"}
    return ApiClient(configuration)


async def token_without(admin: ApiClient, missing: Permission | None, tag: str) -> str:
    """A token of a ServiceAccount bound to hub-rbac.yaml's rules less ``missing``."""
    (role,) = [o for o in rbac_objects() if o["kind"] == "ClusterRole"]
    rules = [
        {"apiGroups": [g], "resources": [r], "verbs": [v]}
        for g, r, v in sorted(granted(role))
        if missing is None or (g, r, v) != (missing.group, missing.resource, missing.verb)
    ]
    name = f"dna-hub-rbac-{tag}"
    rbac = client.RbacAuthorizationV1Api(admin)
    core = CoreV1Api(admin)
    await core.create_namespaced_service_account(
        "jupyterhub", {"metadata": {"name": name}}, _request_timeout=10
    )
    await rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    await rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "jupyterhub"}],
        }
    )
    token = await core.create_namespaced_service_account_token(
        name,
        "jupyterhub",
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    return token.status.token


def is_forbidden(error: BaseException) -> bool:
    if isinstance(error, ApiFailure):
        return error.reason == "forbidden"
    return isinstance(error, ApiException) and error.status == 403


@pytest.fixture
async def kfp_namespace(admin_api: ApiClient) -> None:
    """The legacy ml-pipeline policy lives in Kubeflow Pipelines' namespace."""
    try:
        await CoreV1Api(admin_api).create_namespace({"metadata": {"name": "kubeflow"}})
    except ApiException as e:
        if e.status != 409:
            raise


@pytest.mark.controlplane
@pytest.mark.slow
async def test_every_permission_is_needed_and_all_suffice(
    admin_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    kfp_namespace: None,
    unique_name: Callable[..., str],
) -> None:
    # all of them: everything works
    full = await identity_without(admin_api, control_plane, None, unique_name("all"))
    async with full:
        await exercise(full, unique_name("rbac-all"))

    # each one missing: a real 403
    limit = asyncio.Semaphore(6)

    async def without(
        index: int, permission: Permission
    ) -> tuple[Permission, BaseException | None]:
        async with limit:
            api = await identity_without(
                admin_api, control_plane, permission, unique_name(f"w{index}")
            )
            async with api:
                try:
                    await exercise(api, unique_name(f"rbac-{index}"))
                except Exception as error:
                    return permission, error
                return permission, None

    results = await asyncio.gather(*(without(i, p) for i, p in enumerate(HUB_PERMISSIONS)))
    unneeded = [f"{p.verb} {p.resource}.{p.group or 'core'}" for p, e in results if e is None]
    assert not unneeded, f"hub-rbac.yaml grants permissions nothing uses: {unneeded}"
    wrong = [
        f"{p.verb} {p.resource}: {type(e).__name__}: {e}"
        for p, e in results
        if e is not None and not is_forbidden(e)
    ]
    assert not wrong, "missing permissions must fail with 403:\n" + "\n".join(wrong)


# --- the optional admission guard for Kubernetes >= 1.30 ------------------------------------

GUARD_FILE = REPO_ROOT / "helm-values" / "hub-namespace-guard.yaml"


def test_namespace_guard_is_valid_and_covers_every_namespaced_write() -> None:
    import kubernetes_validate

    policy, binding = [o for o in yaml.safe_load_all(GUARD_FILE.read_text()) if o]
    for obj in (policy, binding):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    guarded = {
        (group, resource)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    cluster_scoped = {("kubeflow.org", "profiles")}
    writes = {
        (p.group, p.resource)
        for p in HUB_PERMISSIONS
        if p.verb in {"create", "patch", "update", "delete"}
    }
    # a namespaced kind the hub may write but the guard does not cover would be a hole
    assert writes - cluster_scoped <= guarded
    (condition,) = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:jupyterhub:hub" in condition["expression"]
