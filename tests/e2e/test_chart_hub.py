"""End to end on the chart: its hub (hub image versions) behind its proxy, a real OIDC login,
a replaced hub pod that keeps alice logged in, and alice's profile and notebook pod made with
the chart hub ServiceAccount's own token.

The hub and proxy run as host processes (devstack/host_pods.py, a stand-in for the
container kubelet); the notebook pod is run by the process kubelet stand-in, which gives it
the host's resolver, so it cannot reach the hub API by its Service name: this test stops at
the notebook pod, with every property the four chart defects broke.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.chart_hub import deploy_chart_hub
from devstack.controlplane import ControlPlane
from devstack.host_pods import HostPod
from devstack.hub_image_env import hub_image_env
from devstack.oidc_stack import OIDCProvider
from devstack.standins_process import StandIns

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]


async def created(read, timeout: float = 120):
    """The object once it exists (polling; 404 until then)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await read()
        except ApiException as e:
            if e.status != 404 or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.5)


async def logged(pod: HostPod, text: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in pod.log():
        assert asyncio.get_running_loop().time() < deadline, f"{text!r} not in:\n{pod.log()}"
        await asyncio.sleep(0.5)


async def absent(coro_factory) -> None:
    try:
        await coro_factory()
    except ApiException as e:
        if e.status != 404:
            raise


async def test_login_through_the_charts_proxy_provisions_alice_as_the_chart_hub(
    control_plane: ControlPlane,
    admin_api: ApiClient,
    standins: StandIns,
    oidc_provider: OIDCProvider,
    oidc_node_modules: Path,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(admin_api)
    namespace, pod_name = "kubeflow-alice", "jupyter-alice"
    await absent(lambda: core.delete_namespaced_pod(pod_name, namespace, grace_period_seconds=0))
    hub = await deploy_chart_hub(
        control_plane, admin_api, oidc_provider, oidc_node_modules, hub_image_env(), tmp_path
    )
    try:
        # the hub found its proxy by the chart's short Service name, through cluster DNS
        proxy_api = "proxy-api.jupyterhub.svc.cluster.local."
        assert (proxy_api, hub.pods["proxy"].address) in hub.dns.queries, hub.dns.queries
        # in-cluster configuration only: the chart hub SA's token, no kubeconfig
        hub_pod = hub.pods["hub"]
        assert "KUBECONFIG" not in hub_pod.env and hub_pod.env["KUBERNETES_SERVICE_HOST"]
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await hub.login(browser, "alice")
            assert page.status_code == 200 and "/hub/home" in str(page.url), hub.logs()
            hub.mark("logged in")

            # the hub pod is replaced: the new one finds its database on the PVC and the
            # chart's Secret, so alice is still logged in
            await hub.replace_pod("hub")
            previous = hub.pods["hub"].log_file.with_suffix(".previous.log").read_text()
            assert "Leaving single-user servers running" in previous
            home = await browser.get(f"{hub.url}/hub/home", follow_redirects=False)
            assert home.status_code == 200, (home.status_code, home.headers.get("location"))

            spawn = await browser.get(f"{hub.url}/hub/spawn", follow_redirects=False)
            assert spawn.status_code in (200, 302), spawn.text

        pod = await created(lambda: core.read_namespaced_pod(pod_name, namespace))
        # the chart's idle culler (a hub-managed service, python3 -m jupyterhub_idle_culler
        # --url=http://localhost:8081/hub/api) runs and reaches the hub
        await logged(hub.pods["hub"], "(jupyterhub-idle-culler@")
        labels = pod.metadata.labels
        assert labels["access-ml-pipeline"] == "true", labels
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["JUPYTERHUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"
        volumes = {v.name: v for v in pod.spec.volumes}
        assert volumes["volume-kf-pipeline-token"].projected is not None  # the PodDefault's
        claim = await core.read_namespaced_persistent_volume_claim("claim-alice", namespace)
        assert claim.metadata.labels["app.kubernetes.io/managed-by"] == "kubespawner"
        profile = await client.CustomObjectsApi(admin_api).get_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", namespace
        )
        assert profile["spec"]["owner"]["name"] == "Alice.Smith@Example.com"
        print(hub.rendered.summary())
        print(hub.applied.report())
        print({k: round(v, 1) for k, v in hub.timings.items()})
    finally:
        hub.stop()
        await absent(
            lambda: core.delete_namespaced_pod(pod_name, namespace, grace_period_seconds=0)
        )
