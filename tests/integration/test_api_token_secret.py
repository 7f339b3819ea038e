"""The notebook's JupyterHub API token is not in its pod spec (issue 18, item 4).

Anyone who may read pods in a profile (``default-viewer``, ``view`` contributors: Kubeflow's
``kubeflow-view``) must not find the token there: it lives in a Secret owned by the pod,
which ``kubeflow-view`` cannot read, and which is deleted with the pod. Runs DnaSpawner with
the hub's RBAC on the control plane; the kubelet is the stand-in (it resolves
``secretKeyRef`` like the kubelet, retrying until the Secret exists).
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from collections.abc import Callable

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane
from devstack.standins import Kube
from devstack.standins_process import StandIns
from dna_hub import DnaSpawner
from dna_hub.policy.naming import namespace_for
from dna_hub.profiles.api_token import API_TOKEN_ENV, API_TOKEN_KEY
from tests.integration.test_kubespawner_standins import fake_hub_api  # noqa: F401 - a fixture
from tests.integration.test_spawner import answers, make_spawner, start_with_progress  # noqa: F401
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]


async def client_as(
    admin: ApiClient, control_plane: ControlPlane, namespace: str, account: str
) -> ApiClient:
    """An ApiClient authenticated as a ServiceAccount (a bound token the admin requests)."""
    token = await CoreV1Api(admin).create_namespaced_service_account_token(
        account,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    configuration = copy.copy(control_plane.hub_configuration())
    configuration.api_key = {"BearerToken": f"Bearer {token.status.token}"}
    return ApiClient(configuration)


async def test_a_profile_viewer_reads_the_pod_and_finds_no_token(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    standins: StandIns,
    standins_kube: Kube,
    admin_api: ApiClient,
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
) -> None:
    username = unique_name("tok")
    namespace = namespace_for(username)
    spawner = make_spawner(username, f"{username}@example.com")
    token = secrets.token_hex(24)
    spawner.api_token = token

    url, _ = await start_with_progress(spawner)
    # the server got its token through the Secret: it started and answers
    status = await eventually(lambda: answers(f"{url}{spawner.server.base_url}api"), timeout=30)
    assert status == 200, standins.pod_log(namespace, spawner.pod_name)

    # default-viewer is bound to kubeflow-view in the profile (by the profile controller)
    viewer = await client_as(admin_api, control_plane, namespace, "default-viewer")
    async with viewer:
        core = CoreV1Api(viewer)
        pod = await core.read_namespaced_pod(spawner.pod_name, namespace, _request_timeout=10)
        manifest = viewer.sanitize_for_serialization(pod)
        assert token not in json.dumps(manifest)
        (container,) = manifest["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for name in API_TOKEN_ENV:
            assert "value" not in env[name]
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == API_TOKEN_KEY
        secret_name = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        # ... and may not read the Secret
        with pytest.raises(ApiException) as denied:
            await core.read_namespaced_secret(secret_name, namespace, _request_timeout=10)
        assert denied.value.status == 403

    secret = await standins_kube.get(f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Pod",
        spawner.pod_name,
        pod.metadata.uid,
    )

    # deleted with the pod (Kubernetes' garbage collector, kube-controller-manager)
    await asyncio.wait_for(spawner.stop(now=True), timeout=60)

    async def secret_gone() -> bool:
        path = f"/api/v1/namespaces/{namespace}/secrets/{secret_name}"
        return await standins_kube.get_or_none(path) is None

    assert await eventually(secret_gone, timeout=60)

    # the next start uses a fresh Secret name: no conflict with one not yet collected
    first = secret_name
    spawner.clear_state()
    spawner.api_token = secrets.token_hex(24)
    await start_with_progress(spawner)
    assert spawner.api_token_secret != first
