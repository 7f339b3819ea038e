"""DnaSpawner end to end on the control plane: login identity → profile → notebook pod → server.

The spawner runs in the test's event loop as it would in the hub, with the hub's own
identity (helm-values/hub-rbac.yaml); the profile controller, the PodDefault webhook and the
kubelet are the stand-ins; the user and hub objects are the few attributes JupyterHub passes
a spawner (KubeSpawner's own tests do the same with ``_mock=True``). The full browser flow
through a real JupyterHub is in tests/e2e/test_e2e_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
from jupyterhub import orm
from jupyterhub.objects import Server
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import load_kube_config
from kubespawner import KubeSpawner

from devstack.controlplane import ControlPlane
from devstack.standins import Kube
from devstack.standins_process import StandIns
from dna_hub import DnaSpawner
from dna_hub.errors import ConfigurationError, OwnershipConflict
from dna_hub.hub.spawn_errors import KubernetesRefused
from dna_hub.policy.naming import namespace_for
from tests.integration.test_kubespawner_standins import fake_hub_api  # noqa: F401 - a fixture
from tests.integration.test_provisioning import profile_template_with
from tests.integration.test_standins import eventually
from tests.support.faultproxy import FaultProxy
from tests.support.hub_user import HubUser

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]


@pytest_asyncio.fixture(loop_scope="session")
async def make_spawner(
    standins: StandIns,
    fake_hub_api: str,  # noqa: F811
) -> AsyncIterator[Callable[..., DnaSpawner]]:
    spawners: list[DnaSpawner] = []

    def make(
        username: str, owner: str | None = None, server_name: str = "", **config: Any
    ) -> DnaSpawner:
        user = HubUser(
            name=username,
            escaped_name=username,
            id=abs(hash(username)) % 100000,
            url=f"/user/{username}/",
            settings={},
            groups=[SimpleNamespace(name="data-science")],
            auth_state={"kubeflow_userid": owner} if owner else {},
        )
        hub = SimpleNamespace(public_host="", url="/hub/", base_url="/hub/", api_url=fake_hub_api)
        config.setdefault("cmd", ["jupyterhub-singleuser"])
        config.setdefault("image", "dna-hub/singleuser:test")
        config.setdefault("start_timeout", 90)
        config.setdefault("profile_ready_timeout", 60)
        spawner = DnaSpawner(
            _mock=True,
            user=user,
            hub=hub,
            # JupyterHub's ORM row for the server; named servers have a name.
            orm_spawner=SimpleNamespace(
                name=server_name, display_name=server_name, server=None, last_activity=None
            ),
            api_token="not-a-real-token",
            oauth_client_id=f"jupyterhub-user-{username}",
            hub_namespace="jupyterhub",
            **config,
        )
        base_url = f"/user/{username}/{server_name + '/' if server_name else ''}"
        spawner.server = Server(
            orm_server=orm.Server(proto="http", ip="", port=0, base_url=base_url, cookie_name="")
        )
        spawners.append(spawner)
        return spawner

    try:
        yield make
    finally:
        for spawner in spawners:
            if spawner._start_future is not None and spawner._start_future.done():
                if not spawner._start_future.exception():
                    await asyncio.wait_for(spawner.stop(now=True), timeout=60)
        for reflector in list(KubeSpawner.reflectors.values()):
            await reflector.stop()
        KubeSpawner.reflectors.clear()


async def start_with_progress(spawner: DnaSpawner) -> tuple[str, list[str]]:
    """Start like JupyterHub does: start() and progress() side by side."""
    future = spawner.start()
    messages: list[str] = []

    async def follow() -> None:
        async for event in spawner.progress():
            messages.append(event["message"])

    follower = asyncio.ensure_future(follow())
    try:
        url = await asyncio.wait_for(future, timeout=150)
    finally:
        await asyncio.wait_for(follower, timeout=30)
    parsed = urlsplit(url)
    spawner.server.ip, spawner.server.port = parsed.hostname, parsed.port
    return url, messages


async def answers(url: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(url, allow_redirects=False) as response:
            return response.status


async def test_first_spawn_of_a_new_user_with_a_slow_profile_controller(
    make_spawner: Callable[..., DnaSpawner],
    standins: StandIns,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    username = unique_name("first")
    owner = f"{username.title()}@Example.com"  # case kept: it is what Kubeflow sees
    (tmp_path / "00-profile.yaml.j2").write_text(
        profile_template_with({"dna-hub.test/controller-delay-seconds": "2"})
    )
    spawner = make_spawner(username, owner, profile_template_dirs=[str(tmp_path)])
    namespace = namespace_for(username)
    assert spawner.namespace == namespace

    url, messages = await start_with_progress(spawner)

    assert messages[:2] == [
        "Provisioning your Kubeflow profile…",
        f"Waiting for namespace {namespace}…",
    ]
    profile = await standins_kube.get(f"/apis/kubeflow.org/v1/profiles/{namespace}")
    assert profile["spec"]["owner"] == {"kind": "User", "name": owner}
    ns = await standins_kube.get(f"/api/v1/namespaces/{namespace}")
    assert ns["metadata"]["annotations"]["owner"] == owner  # made by the profile controller
    pod = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "default-editor"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KF_PIPELINES_ENDPOINT"] == "http://ml-pipeline.kubeflow:8888"
    assert env["KF_PIPELINES_UI_ENDPOINT"] == "http://ml-pipeline-ui.kubeflow:80"
    assert env["KALE_SECURITY_CONTEXT_RUN_AS_USER"] == "8737"
    # injected by the PodDefault webhook, not by the spawner
    assert env["KF_PIPELINES_SA_TOKEN_PATH"] == "/var/run/secrets/kubeflow/pipelines/token"
    assert (
        "poddefault.admission.kubeflow.org/poddefault-access-ml-pipeline"
        in (pod["metadata"]["annotations"])
    )
    assert "volume-kf-pipeline-token" in {v["name"] for v in pod["spec"]["volumes"]}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    status = await eventually(lambda: answers(f"{url}{spawner.server.base_url}api"), timeout=30)
    assert status == 200, standins.pod_log(namespace, spawner.pod_name)

    # A repeat spawn of an up-to-date profile costs two concurrent requests.
    await asyncio.wait_for(spawner.stop(), timeout=60)
    spawner.clear_state()
    await start_with_progress(spawner)
    assert spawner.last_provision is not None
    assert spawner.last_provision.up_to_date
    assert spawner.last_provision.requests == 2  # Profile + namespace owner, at once


async def test_two_servers_of_one_user_at_once(
    make_spawner: Callable[..., DnaSpawner], standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    username = unique_name("both")
    owner = f"{username}@example.com"
    first = make_spawner(username, owner)
    second = make_spawner(username, owner, server_name="gpu")
    (url1, _), (url2, _) = await asyncio.gather(
        start_with_progress(first), start_with_progress(second)
    )
    assert url1 != url2
    namespace = namespace_for(username)
    profiles = await standins_kube.get("/apis/kubeflow.org/v1/profiles")
    assert [p["metadata"]["name"] for p in profiles["items"]].count(namespace) == 1
    pods = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods")
    assert sorted(p["metadata"]["name"] for p in pods["items"]) == sorted(
        [first.pod_name, second.pod_name]
    )


async def test_spawn_into_someone_elses_namespace_is_refused(
    make_spawner: Callable[..., DnaSpawner], standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    username = unique_name("taken")
    namespace = namespace_for(username)
    await standins_kube.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {"owner": "mallory@example.com"}},
        },
    )
    spawner = make_spawner(username, f"{username}@example.com")
    with pytest.raises(OwnershipConflict) as info:
        await start_with_progress(spawner)
    assert "does not belong to you" in info.value.jupyterhub_message
    assert await standins_kube.get_or_none(f"/apis/kubeflow.org/v1/profiles/{namespace}") is None
    pods = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods")
    assert pods["items"] == []


async def test_spawn_without_a_kubeflow_identity_fails_clearly(
    make_spawner: Callable[..., DnaSpawner], standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    username = unique_name("anon")
    spawner = make_spawner(username, owner=None)
    with pytest.raises(ConfigurationError) as info:
        await start_with_progress(spawner)
    assert "log out and in again" in info.value.jupyterhub_message
    assert "kubeflow_userid" in str(info.value)
    assert (
        await standins_kube.get_or_none(f"/apis/kubeflow.org/v1/profiles/{namespace_for(username)}")
        is None
    )


async def test_saved_state_and_options_never_move_the_namespace(
    make_spawner: Callable[..., DnaSpawner], unique_name: Callable[..., str]
) -> None:
    username = unique_name("state")
    spawner = make_spawner(username, f"{username}@example.com")
    policy = namespace_for(username)
    spawner.load_state({"namespace": "jupyterhub-old-style", "pod_name": "jupyter-x"})
    assert spawner.namespace == policy
    spawner.clear_state()
    assert spawner.namespace == policy
    # a profile_list override naming another namespace is ignored
    spawner.profile_list = [
        {
            "display_name": "evil",
            "slug": "evil",
            "kubespawner_override": {"namespace": "kube-system"},
        }
    ]
    spawner.user_options = {"profile": "evil"}
    await spawner.load_user_options()
    assert spawner.namespace == policy


@contextlib.asynccontextmanager
async def api_through_proxy(
    spawner: DnaSpawner, control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[FaultProxy]:
    """The spawner's KubeSpawner client (pods, secrets) through a fault proxy, for a test."""
    with FaultProxy.for_kubeconfig(control_plane.hub_kubeconfig, control_plane.ca_file) as proxy:
        kubeconfig = proxy.write_kubeconfig(control_plane.hub_kubeconfig, tmp_path / "kubeconfig")
        configuration = Configuration()
        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        async with ApiClient(configuration) as api_client:
            shared, spawner.api = spawner.api, CoreV1Api(api_client)
            try:
                yield proxy
            finally:
                spawner.api = shared  # the fixture stops the server after the proxy is gone


async def test_pod_refused_until_the_token_secret_exists_is_retried(
    make_spawner: Callable[..., DnaSpawner],
    control_plane: ControlPlane,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Kubernetes < 1.24 refuses a pod whose service account has no token secret yet with a
    retryable 500 ServerTimeout (the exact body the 1.20 test server sends, injected here so
    the test does not depend on how fast the token controller is); the spawn retries."""
    username = unique_name("token")
    spawner = make_spawner(username, f"{username}@example.com")
    async with api_through_proxy(spawner, control_plane, tmp_path) as proxy:
        rule = proxy.add_rule(
            "POST",
            r"/api/v1/namespaces/[^/]+/pods$",
            status=500,
            reason="ServerTimeout",
            message='No API token found for service account "default-editor", retry after '
            "the token is automatically created and added to the service account",
            times=1,
        )
        await start_with_progress(spawner)
        assert rule.hits == 1
        assert proxy.count("POST", r"/pods$") == 2
    pods = await standins_kube.get(f"/api/v1/namespaces/{namespace_for(username)}/pods")
    assert [p["metadata"]["name"] for p in pods["items"]] == [spawner.pod_name]


async def test_other_pod_refusals_are_not_retried(
    make_spawner: Callable[..., DnaSpawner],
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    username = unique_name("refused")
    spawner = make_spawner(username, f"{username}@example.com")
    async with api_through_proxy(spawner, control_plane, tmp_path) as proxy:
        proxy.add_rule("POST", r"/api/v1/namespaces/[^/]+/pods$", status=403, times=None)
        # a refusal ends the spawn in people's words (issue 29), the status kept for the log
        with pytest.raises(KubernetesRefused) as refused:
            await start_with_progress(spawner)
        assert refused.value.status == 403 and refused.value.kind == "Pod"
        assert isinstance(refused.value.__cause__, ApiException)
        assert "not allowed" in refused.value.jupyterhub_message.lower()
        assert proxy.count("POST", r"/pods$") == 1


async def test_a_username_beyond_the_basic_plane_spawns(
    make_spawner: Callable[..., DnaSpawner], standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    """JupyterHub accepts `emoji😀user`; its profile renders, applies and the pod runs (#14)."""
    username = unique_name("emoji") + "-😀"
    spawner = make_spawner(username, f"{username}@example.com")
    namespace = namespace_for(username)
    await start_with_progress(spawner)
    profile = await standins_kube.get(f"/apis/kubeflow.org/v1/profiles/{namespace}")
    assert profile["spec"]["owner"]["name"] == f"{username}@example.com"
    assert profile["metadata"]["annotations"]["dna-hub.io/hub-username"] == username
    pod = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
    assert pod["status"]["phase"] == "Running"


async def test_spawn_with_the_charts_own_singleuser_settings(
    make_spawner: Callable[..., DnaSpawner],
    standins: StandIns,
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    """What z2jh's jupyterhub_config.py sets whatever our values say, with the hub's RBAC.

    singleuser.storage.type "dynamic" (the chart default): a home PVC claim-<user> in the
    profile namespace; singleuser.extraLabels (chart default) replaces extra_labels.
    """
    username = unique_name("chart")
    spawner = make_spawner(
        username,
        f"{username}@example.com",
        extra_labels={"hub.jupyter.org/network-access-hub": "true"},
        storage_pvc_ensure=True,
        storage_capacity="10Gi",
        storage_access_modes=["ReadWriteOnce"],
        pvc_name_template="claim-{user_server}",
        storage_extra_labels={},
        volumes={
            "volume-{user_server}": {
                "name": "volume-{user_server}",
                "persistentVolumeClaim": {"claimName": "{pvc_name}"},
            }
        },
        volume_mounts={
            "volume-{user_server}": {"mountPath": "/home/jovyan", "name": "volume-{user_server}"}
        },
    )
    namespace = namespace_for(username)
    await start_with_progress(spawner)

    claim = await standins_kube.get(
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/claim-{username}"
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pod = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
    assert pod["status"]["phase"] == "Running", standins.pod_log(namespace, spawner.pod_name)
    labels = pod["metadata"]["labels"]
    assert labels["access-ml-pipeline"] == "true"
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    # so the PodDefault selected the pod and mounted the KFP token
    assert "volume-kf-pipeline-token" in {v["name"] for v in pod["spec"]["volumes"]}
    assert {
        "name": f"volume-{username}",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    } in pod["spec"]["volumes"]
