"""Acceptance tests of the local control plane: it must behave like a real cluster.

Everything dna_hub's tests rely on is checked here through kubernetes_asyncio: the real
Kubeflow/Istio CRD schemas, RBAC denials for the hub, ServiceAccount admission, and the
controllers (namespace deletion, garbage collection, ClusterRole aggregation).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane

TIMEOUT = 30  # per request


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Poll ``check`` until true: controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def namespace(admin_api: ApiClient, unique_name: Callable[..., str]) -> AsyncIterator[str]:
    """A fresh namespace (deleted afterwards, without waiting)."""
    name = unique_name("ns")
    core = client.CoreV1Api(admin_api)
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=TIMEOUT
    )
    yield name
    try:
        await core.delete_namespace(name, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _status(exc: pytest.ExceptionInfo[ApiException]) -> int:
    return exc.value.status


def _message(exc: pytest.ExceptionInfo[ApiException]) -> str:
    """The API server's own message (the body is a JSON Status object)."""
    return json.loads(exc.value.body)["message"]


async def test_profile_roundtrip(admin_api: ApiClient, unique_name: Callable[..., str]) -> None:
    custom = client.CustomObjectsApi(admin_api)
    name = unique_name("prof")
    body: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": "alice@example.org"}},
    }
    await custom.create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", body, _request_timeout=TIMEOUT
    )
    try:
        got = await custom.get_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", name, _request_timeout=TIMEOUT
        )
        assert got["spec"]["owner"] == {"kind": "User", "name": "alice@example.org"}
    finally:
        await custom.delete_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", name, _request_timeout=TIMEOUT
        )


async def test_invalid_profile_is_rejected_with_422(
    admin_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    body = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": unique_name("bad")},
        "spec": {"owner": {"name": "alice@example.org"}},
    }
    with pytest.raises(ApiException) as exc:
        await custom.create_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", body, _request_timeout=TIMEOUT
        )
    assert _status(exc) == 422
    assert "spec.owner.kind: Required value" in _message(exc)


async def test_poddefault_roundtrip(admin_api: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(admin_api)
    body = {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": "add-gpu-env", "namespace": namespace},
        "spec": {
            "desc": "Adds an environment variable",
            "selector": {"matchLabels": {"add-gpu-env": "true"}},
            "env": [{"name": "FOO", "value": "bar"}],
        },
    }
    await custom.create_namespaced_custom_object(
        "kubeflow.org", "v1alpha1", namespace, "poddefaults", body, _request_timeout=TIMEOUT
    )
    got = await custom.get_namespaced_custom_object(
        "kubeflow.org",
        "v1alpha1",
        namespace,
        "poddefaults",
        "add-gpu-env",
        _request_timeout=TIMEOUT,
    )
    assert got["spec"]["env"] == [{"name": "FOO", "value": "bar"}]


async def test_authorization_policy_roundtrip(admin_api: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(admin_api)
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-hub", "namespace": namespace},
        "spec": {
            "action": "ALLOW",
            "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/jupyterhub/sa/hub"]}}]}
            ],
        },
    }
    await custom.create_namespaced_custom_object(
        "security.istio.io",
        "v1",
        namespace,
        "authorizationpolicies",
        body,
        _request_timeout=TIMEOUT,
    )
    # v1beta1 is served too (conversion None): the same object is readable there.
    got = await custom.get_namespaced_custom_object(
        "security.istio.io",
        "v1beta1",
        namespace,
        "authorizationpolicies",
        "allow-hub",
        _request_timeout=TIMEOUT,
    )
    assert got["spec"]["action"] == "ALLOW"


async def test_hub_is_forbidden_what_its_rbac_does_not_allow(
    hub_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    core = client.CoreV1Api(hub_api)
    with pytest.raises(ApiException) as exc:
        await core.list_secret_for_all_namespaces(_request_timeout=TIMEOUT)
    assert _status(exc) == 403
    assert "system:serviceaccount:jupyterhub:hub" in _message(exc)
    with pytest.raises(ApiException) as exc:
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=unique_name("ns"))),
            _request_timeout=TIMEOUT,
        )
    assert _status(exc) == 403
    # ...while what helm-values/hub-rbac.yaml grants works.
    pods = await core.list_pod_for_all_namespaces(_request_timeout=TIMEOUT)
    assert pods.items is not None


async def test_hub_kubeconfig_is_the_service_account(control_plane: ControlPlane) -> None:
    async with control_plane.hub_client() as api:
        review = await client.AuthorizationV1Api(api).create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        verb="create", resource="pods", namespace="anywhere"
                    )
                )
            ),
            _request_timeout=TIMEOUT,
        )
    assert review.status.allowed


async def test_pod_with_missing_service_account_is_rejected(
    hub_api: ApiClient, namespace: str
) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="notebook"),
        spec=client.V1PodSpec(
            service_account_name="default-editor",
            containers=[client.V1Container(name="notebook", image="jupyter/base-notebook")],
        ),
    )
    with pytest.raises(ApiException) as exc:
        await client.CoreV1Api(hub_api).create_namespaced_pod(
            namespace, pod, _request_timeout=TIMEOUT
        )
    assert _status(exc) == 403
    assert 'serviceaccount "default-editor" not found' in _message(exc)


async def test_default_service_account_appears(admin_api: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)

    async def exists() -> bool:
        accounts = await core.list_namespaced_service_account(namespace, _request_timeout=TIMEOUT)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    await eventually(exists, f"ServiceAccount default in {namespace}")


async def test_namespace_deletion_completes(
    admin_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    core = client.CoreV1Api(admin_api)
    name = unique_name("gone")
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=TIMEOUT
    )
    await core.create_namespaced_config_map(
        name,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"a": "b"}),
        _request_timeout=TIMEOUT,
    )
    await core.delete_namespace(name, _request_timeout=TIMEOUT)

    async def deleted() -> bool:
        try:
            await core.read_namespace(name, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await eventually(deleted, f"namespace {name} to be deleted")


async def test_garbage_collection_of_owned_objects(admin_api: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)
    owner = await core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")),
        _request_timeout=TIMEOUT,
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    await core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref])),
        _request_timeout=TIMEOUT,
    )
    await core.delete_namespaced_config_map("owner", namespace, _request_timeout=TIMEOUT)

    async def collected() -> bool:
        maps = await core.list_namespaced_config_map(namespace, _request_timeout=TIMEOUT)
        return "owned" not in {m.metadata.name for m in maps.items}

    await eventually(collected, "the owned ConfigMap to be garbage-collected")


async def test_kubeflow_roles_are_aggregated(admin_api: ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(admin_api)

    async def aggregated() -> bool:
        role = await rbac.read_cluster_role("kubeflow-edit", _request_timeout=TIMEOUT)
        resources = {r for rule in role.rules or [] for r in rule.resources or []}
        # From kubeflow-kubernetes-edit, and from KFP via kubeflow-pipelines-edit (nested).
        return "pods" in resources and "pipelines" in resources

    await eventually(aggregated, "ClusterRole kubeflow-edit to be aggregated")
