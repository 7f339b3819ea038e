"""A quota on requests and the profile's LimitRange on the control plane (admission plugins
LimitRanger and ResourceQuota on, as in a real cluster): a pipeline step that sets no
resources runs with the LimitRange's defaults; without the LimitRange the quota rejects it.

The profile controller stand-in makes the namespace and Kubeflow's ResourceQuota
``kf-resource-quota`` from ``resourceQuotaSpec``; kube-controller-manager computes its usage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets.config import Config

from dna_hub.cli.sync import renderer
from dna_hub.k8s.api import KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.profiles.provisioning import ProfileProvisioner
from tests.integration.test_standins import eventually
from tests.support.pod_security import restricted

pytestmark = [pytest.mark.controlplane]

QUOTA = {"hard": {"requests.cpu": "2", "requests.memory": "4Gi", "limits.memory": "8Gi"}}


def step_pod(name: str) -> dict[str, Any]:
    """A pipeline step as Argo would start it: no resources of its own (and, as Kale's steps
    run, meeting the profile namespace's Pod Security "restricted")."""
    return restricted(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": "default-editor",
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "x:1", "command": ["true"]}],
            },
        }
    )


async def profile_with_quota(hub_api: ApiClient, admin_api: ApiClient, config: Config, user: str):
    config.DnaSpawner.profile_group_resource_quotas = {"data-science": QUOTA}
    rendered = renderer(config)(user, f"{user}@example.com", ["data-science"])
    assert rendered.profile["spec"]["resourceQuotaSpec"] == QUOTA
    await ProfileProvisioner(KubeApi(hub_api, request_timeout=10), ready_timeout=60).ensure(
        rendered
    )
    namespace = namespace_for(user)
    core = CoreV1Api(admin_api)

    async def quota_counted() -> bool:
        try:
            quota = await core.read_namespaced_resource_quota("kf-resource-quota", namespace)
        except ApiException as e:
            if e.status == 404:  # the profile controller stand-in has not made it yet
                return False
            raise
        return bool(quota.status and quota.status.hard)

    await eventually(quota_counted, timeout=60)
    return namespace, core


@pytest.mark.slow
async def test_a_step_without_resources_gets_the_limitrange_defaults_under_a_quota(
    hub_api: ApiClient, admin_api: ApiClient, standins: Any, unique_name: Callable[..., str]
) -> None:
    namespace, core = await profile_with_quota(hub_api, admin_api, Config(), unique_name("lr"))
    pod = await core.create_namespaced_pod(namespace, step_pod("step"))
    try:
        resources = pod.spec.containers[0].resources
        assert resources.requests == {"cpu": "100m", "memory": "256Mi"}
        assert resources.limits == {"memory": "2Gi"}  # no CPU limit, by design
    finally:
        await core.delete_namespaced_pod("step", namespace, grace_period_seconds=0)


@pytest.mark.slow
async def test_without_the_limitrange_the_quota_rejects_such_a_step(
    hub_api: ApiClient,
    admin_api: ApiClient,
    standins: Any,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    config = Config()
    config.DnaSpawner.profile_limit_range = {}
    namespace, core = await profile_with_quota(hub_api, admin_api, config, unique_name("nolr"))
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_pod(namespace, step_pod("step"))
    assert info.value.status == 403
    assert "must specify" in info.value.body
