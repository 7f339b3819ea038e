"""Stock KubeSpawner 7 against the stand-ins: the whole chain outside dna_hub's own code.

A Profile is reconciled by the profile-controller stand-in, stock ``kubespawner.KubeSpawner``
(with the hub's identity, from the session's ``KUBECONFIG``) creates the single-user pod in
that namespace as ``default-editor``, the kubelet stand-in runs ``jupyterhub-singleuser``
on the pod's own loopback address, and the server answers HTTP at the URL KubeSpawner
returns. This proves the stand-ins are faithful enough for KubeSpawner's start/stop logic
before any dna_hub code is involved.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import jupyterhub
import pytest
import pytest_asyncio
from aiohttp import web
from jupyterhub.objects import Server
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner

from devstack.standins import Kube
from devstack.standins_process import StandIns
from tests.integration.test_standins import (
    delete_profile,
    eventually,
    make_profile,
    wait_profile_ready,
)
from tests.support.pod_security import (
    RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    RESTRICTED_POD_SECURITY_CONTEXT,
)


@pytest_asyncio.fixture(loop_scope="session")
async def fake_hub_api() -> AsyncIterator[str]:
    """Just enough Hub API for jupyterhub-singleuser to start: it exits if the Hub is away."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {"version": jupyterhub.__version__},
            headers={"X-JupyterHub-Version": jupyterhub.__version__},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hub/api"
    finally:
        await runner.cleanup()


@pytest.mark.controlplane
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_stock_kubespawner_runs_singleuser_in_profile_namespace(
    standins: StandIns,
    standins_kube: Kube,
    fake_hub_api: str,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kubernetes_asyncio reads KUBECONFIG once, at import, before the control_plane fixture
    # sets it; KubeSpawner's load_kube_config() must see the hub's kubeconfig.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", os.environ["KUBECONFIG"])
    kube, namespace = standins_kube, unique_name("ks")
    await make_profile(kube, namespace, "dave@example.com")
    try:
        await wait_profile_ready(kube, namespace)
        user = SimpleNamespace(
            name="dave", escaped_name="dave", id=7, url="/user/dave/", settings={}
        )
        hub = SimpleNamespace(public_host="", url="/hub/", base_url="/hub/", api_url=fake_hub_api)
        spawner = KubeSpawner(
            _mock=True,
            user=user,
            hub=hub,
            namespace=namespace,
            service_account="default-editor",
            cmd=["jupyterhub-singleuser"],
            image="quay.io/jupyter/base-notebook:latest",
            api_token="not-a-real-token",
            oauth_client_id="jupyterhub-user-dave",
            start_timeout=90,
            events_enabled=True,
            # what a stock KubeSpawner needs in a profile namespace that enforces Pod Security
            # "restricted" (Kubeflow's kubeflow-pss overlay; restricted in the devstack)
            uid=1000,
            pod_security_context=dict(RESTRICTED_POD_SECURITY_CONTEXT),
            container_security_context=dict(RESTRICTED_CONTAINER_SECURITY_CONTEXT),
        )
        spawner.server = Server(base_url="/user/dave/")
        url = await asyncio.wait_for(spawner.start(), timeout=120)
        # What the Hub does with the URL start() returns (poll() compares against it).
        parsed = urlsplit(url)
        spawner.server.ip, spawner.server.port = parsed.hostname, parsed.port
        try:
            pod = await kube.get(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
            assert pod["spec"]["serviceAccountName"] == "default-editor"
            assert pod["spec"]["nodeName"] == standins.node_name
            assert url == f"http://{pod['status']['podIP']}:8888"

            async def answers() -> int | None:
                timeout = aiohttp.ClientTimeout(total=5)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    async with http.get(f"{url}/user/dave/api", allow_redirects=False) as resp:
                        return resp.status

            status = await eventually(answers, timeout=30)
            assert status == 200, standins.pod_log(namespace, spawner.pod_name)
            assert await spawner.poll() is None
        finally:
            await asyncio.wait_for(spawner.stop(), timeout=60)
        assert (
            await kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
            is None
        )
        assert await spawner.poll() is not None
    finally:
        # KubeSpawner's reflectors are class-level and outlive the spawner: stop them before
        # the session's control plane goes away.
        for reflector in list(KubeSpawner.reflectors.values()):
            await reflector.stop()
        KubeSpawner.reflectors.clear()
        await delete_profile(kube, namespace)
