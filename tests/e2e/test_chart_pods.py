"""End to end on the chart run by its own Deployments: the hub and proxy are pods.

``helm install`` (real Helm render, applied to the control plane) with helm-values/values.yaml
and this machine's overlay (devstack/chart_hub.py ``pods_overlay``: images, the container
node's selector and toleration). kube-controller-manager makes the ReplicaSets and pods; the
container kubelet stand-in runs them from our images: the hub from images/hub/Dockerfile with
the chart's own ``jupyterhub_config.py``/``z2jh.py`` from its ConfigMap/Secret mounts, the
hub ServiceAccount's token from its mount (in-cluster configuration: nothing else), its
database on the ``hub-db-dir`` claim; Service names through the cluster DNS stand-in, ports
through the service variables (devstack/standins/kubelet.py ``ClusterNetworking``).

Chromium logs in at the OIDC provider through the chart's proxy (``proxy-public``, through the
load-balancer stand-in), alice's profile and notebook are provisioned by the hub pod, and
JupyterLab loads; then the hub pod is deleted, the Deployment's replacement starts, and alice
finds her server still running and reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.chart_hub import ChartHubNotReady, ChartPods, deploy_chart_pods
from devstack.oidc_stack import OIDCProvider
from devstack.pod_network import CONTAINER_NODE, POD_ON_CONTAINERS, PodNetwork
from devstack.standins_process import StandIns

pytestmark = [pytest.mark.controlplane, pytest.mark.slow, pytest.mark.browser]

NS = "kubeflow-alice"


async def _absent(call) -> None:
    try:
        await call()
    except ApiException as e:
        if e.status != 404:
            raise


def _log(standins: StandIns, namespace: str, name: str) -> str:
    return standins.pod_log(namespace, name) or ""


async def test_chart_pods_serve_alice_through_a_hub_pod_replacement(
    admin_api: ApiClient,
    standins: StandIns,
    container_standins: StandIns,
    pod_network: PodNetwork,
    oidc_provider: OIDCProvider,
    oidc_node_modules: Path,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path, login_in_browser

    core = client.CoreV1Api(admin_api)
    await _absent(lambda: core.delete_namespaced_pod("jupyter-alice", NS, grace_period_seconds=0))
    chart: ChartPods = await deploy_chart_pods(
        admin_api,
        oidc_provider,
        oidc_node_modules,
        pod_network.gateway,
        POD_ON_CONTAINERS,
        pod_log=container_standins.pod_log,
    )
    try:
        hub = await chart.ready_pod("hub", 30)
        proxy = await chart.ready_pod("proxy", 30)
        hub_image = chart.rendered.get("Deployment", "hub")["spec"]["template"]["spec"]
        for pod in (hub, proxy):
            # made by the Deployment's ReplicaSet, run by the container kubelet
            assert pod.metadata.owner_references[0].kind == "ReplicaSet", pod.metadata
            assert pod.spec.node_name == CONTAINER_NODE
            assert pod.status.container_statuses[0].container_id.startswith("podman://")
        assert hub.spec.containers[0].image == hub_image["containers"][0]["image"]
        assert hub.spec.service_account_name == "hub"
        # its only credential is its ServiceAccount's token (in-cluster configuration)
        assert not [e for e in hub.spec.containers[0].env or [] if "KUBECONFIG" in e.name]

        def projected(v: Any) -> str:
            # the ServiceAccount admission's kube-api-access-*: a bound (expiring) token,
            # the cluster CA and the namespace; since 1.24 there is no token Secret
            parts = [
                f"token {p.service_account_token.path}" if p.service_account_token
                else f"configMap {p.config_map.name}" if p.config_map
                else "downwardAPI " + ",".join(i.field_ref.field_path for i in p.downward_api.items)
                if p.downward_api else "other"
                for p in v.projected.sources
            ]  # fmt: skip
            return f"projected {v.name.rsplit('-', 1)[0]}: " + "; ".join(parts)

        sources = sorted(
            f"configMap {v.config_map.name}" if v.config_map
            else f"secret {v.secret.secret_name}" if v.secret
            else f"pvc {v.persistent_volume_claim.claim_name}" if v.persistent_volume_claim
            else projected(v) if v.projected
            else f"other {v.name}"
            for v in hub.spec.volumes
        )  # fmt: skip
        assert sources == [
            "configMap hub",
            "projected kube-api-access: token token; configMap kube-root-ca.crt; "
            "downwardAPI metadata.namespace",
            "pvc hub-db-dir",
            "secret hub",
        ], sources
        [api_access] = [v for v in hub.spec.volumes if v.projected]
        assert [p.service_account_token.expiration_seconds for p in api_access.projected.sources
                if p.service_account_token] == [3607]  # fmt: skip
        hub_log = _log(container_standins, "jupyterhub", hub.metadata.name)
        # the chart's own config (z2jh.py reads the chart's Secret from its mount), and the
        # hub found its proxy by the chart's short Service name, through cluster DNS
        assert "Loading /usr/local/etc/jupyterhub/secret/values.yaml" in hub_log, hub_log[-4000:]
        assert "Adding route for Hub: / => http://hub:8081" in hub_log, hub_log[-4000:]
        async with httpx.AsyncClient(timeout=30) as http:
            version = (await http.get(f"{chart.url}/hub/api/")).json()["version"]
        # the hub image's own JupyterHub pin (images/hub/requirements.txt), behind the chart's proxy
        assert version == "5.5.4"

        shot = tmp_path / "jupyterlab.png"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await login_in_browser(page, chart, "alice")  # type: ignore[arg-type]
                chart.mark("logged in at the provider")
                await page.wait_for_url("**/user/alice/lab**", timeout=300_000)
                await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
                chart.mark("JupyterLab loaded")
                await page.screenshot(path=str(shot))
                notebook = await core.read_namespaced_pod("jupyter-alice", NS)
                assert notebook.spec.node_name == CONTAINER_NODE
                env = {e.name: e.value for e in notebook.spec.containers[0].env}
                assert env["JUPYTERHUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"
                assert notebook.metadata.labels["access-ml-pipeline"] == "true"

                # the hub pod is deleted; the Deployment starts its replacement. Meanwhile
                # alice keeps using her server (her browser's cookies): every answer is 200.
                statuses: list[int] = []

                async def keep_using() -> None:
                    while True:
                        answer = await page.request.get(f"{chart.url}/user/alice/api/contents")
                        statuses.append(answer.status)
                        await asyncio.sleep(0.5)

                using = asyncio.create_task(keep_using())
                await core.delete_namespaced_pod(hub.metadata.name, "jupyterhub")
                replaced = time.monotonic()
                try:
                    new_hub = await chart.ready_pod("hub", 300, exclude=hub.metadata.name)
                    await chart.wait_healthy(120)
                finally:
                    using.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await using
                assert statuses and set(statuses) == {200}, statuses
                chart.timings["hub pod replaced (delete → healthy)"] = time.monotonic() - replaced
                old_log = _log(container_standins, "jupyterhub", hub.metadata.name)
                assert "Leaving single-user servers running" in old_log, old_log[-3000:]

                # alice's server: the same pod, reachable, never an error page
                lab = await page.goto(f"{chart.url}/user/alice/lab")
                assert lab is not None and lab.status == 200, lab and lab.status
                await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
                home = await page.goto(f"{chart.url}/hub/home")
                assert home is not None and home.status == 200
                assert await page.locator("#stop").count() == 1, await page.content()
                still = await core.read_namespaced_pod("jupyter-alice", NS)
                assert still.metadata.uid == notebook.metadata.uid
                title = await page.title()
            finally:
                await browser.close()
        assert new_hub.metadata.name != hub.metadata.name
        print(chart.rendered.summary())
        print(chart.applied.report())
        print({k: round(v, 1) for k, v in chart.timings.items()}, f"screenshot: {shot}")
        assert "JupyterHub" in title or "Home" in title, title
    finally:
        await chart.stop()
        await _absent(
            lambda: core.delete_namespaced_pod("jupyter-alice", NS, grace_period_seconds=0)
        )


async def test_a_values_change_that_stops_the_hub_pod_fails_naming_it(
    admin_api: ApiClient,
    container_standins: StandIns,
    pod_network: PodNetwork,
    oidc_provider: OIDCProvider,
    oidc_node_modules: Path,
) -> None:
    """The hub pod's own error, from its container log, is the failure message."""
    broken = {"hub": {"config": {"DnaOIDCAuthenticator": {"manage_groups": False}}}}
    with pytest.raises(ChartHubNotReady, match=r"requires DnaOIDCAuthenticator\.manage_groups"):
        await deploy_chart_pods(
            admin_api,
            oidc_provider,
            oidc_node_modules,
            pod_network.gateway,
            POD_ON_CONTAINERS,
            extra_overlays=[broken],
            pod_log=container_standins.pod_log,
            ready_timeout=240,
        )
