"""The kubelet stand-in's ``none`` runtime: pods reach Running without anything running.

Pure tests of its IP pool and runtime selection, and control-plane tests against a
stand-ins process of its own (``--kubelet-runtime none``, no profile controller, no
webhook) on a tainted node ``standin-none``: only pods that select that node and tolerate
its taint are bound there, so it never races the session's other stand-in kubelets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from jupyterhub.objects import Server
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner

from devstack.controlplane import ControlPlane
from devstack.standins import JSON, Kube
from devstack.standins.__main__ import parse_args
from devstack.standins.kubelet import IpPool, Kubelet, KubeletConfig, PodWorker
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS
from devstack.standins.simulated_pods import DEFAULT_POD_CIDR, PodCidrPool, SimulatedPodWorker
from devstack.standins_process import StandIns, running_standins, start_standins
from tests.integration.test_standins import eventually
from tests.support.pod_security import (
    RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    RESTRICTED_POD_SECURITY_CONTEXT,
)

NODE = "standin-none"
TAINT_KEY = "dna-hub.test/runtime"
POD_NETWORK = ipaddress.IPv4Network(DEFAULT_POD_CIDR)
LOOPBACK_POOL_SIZE = len(IpPool()._free)  # what the process runtime can hand out


def standin_args(node: str) -> list[str]:
    return [
        "--no-profile-controller",
        "--no-webhook",
        "--kubelet-runtime",
        "none",
        "--node-name",
        node,
        "--taint",
        f"{TAINT_KEY}=none:NoSchedule",
        # kube-scheduler counts pods against the node's capacity (a real kubelet's default
        # is 110; the stand-in's 250): the storm tests here run more pods than that
        "--max-pods",
        "1000",
    ]


def placement(node: str = NODE) -> JSON:
    """Spec fields that put a pod on the ``none`` node (and on no other stand-in node)."""
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [
            {"key": TAINT_KEY, "operator": "Equal", "value": "none", "effect": "NoSchedule"}
        ],
    }


def pod_manifest(name: str, containers: int = 1, **spec: Any) -> JSON:
    return {
        "metadata": {"name": name, "labels": {"app": "simulated"}},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": f"c{i}",
                    "image": f"example.org/image-{i}:1",
                    "ports": [{"containerPort": 8888 + i}],
                }
                for i in range(containers)
            ],
            **placement(),
            **spec,
        },
    }


# ------------------------------------------------------------------------------- pure


def test_pod_cidr_pool_hands_out_each_address_once_until_released() -> None:
    pool = PodCidrPool("10.9.0.0/29")  # .2 .. .6: network, .1 and broadcast never given
    ips = [pool.allocate() for _ in range(5)]
    assert ips == [f"10.9.0.{i}" for i in range(2, 7)]
    with pytest.raises(RuntimeError, match=r"no free pod IP left in 10\.9\.0\.0/29"):
        pool.allocate()
    pool.release("10.9.0.4")
    assert pool.in_use() == set(ips) - {"10.9.0.4"}
    assert pool.allocate() == "10.9.0.4"
    pool.release("10.9.0.3")
    pool.release("10.9.0.5")
    assert pool.allocate(preferred="10.9.0.5") == "10.9.0.5"  # a pod keeps its IP
    assert pool.allocate(preferred="10.9.0.6") == "10.9.0.3"  # taken: another free one
    pool.release("192.0.2.1")  # not ours: ignored
    pool.release(None)


def test_pod_cidr_pool_is_large_and_does_not_probe_ports() -> None:
    pool = PodCidrPool()
    ips = {pool.allocate(port=8888) for _ in range(5000)}
    assert len(ips) == 5000 > LOOPBACK_POOL_SIZE
    assert all(ipaddress.IPv4Address(ip) in POD_NETWORK for ip in ips)


def test_runtime_none_selects_the_simulated_worker_and_pool() -> None:
    kube: Any = object()  # never called by the constructor
    kubelet = Kubelet(kube, KubeletConfig(runtime="none", pod_cidr="10.77.0.0/16"))
    assert kubelet._worker_class is SimulatedPodWorker
    assert issubclass(SimulatedPodWorker, PodWorker)
    assert isinstance(kubelet.ips, PodCidrPool) and kubelet.ips.cidr == "10.77.0.0/16"
    assert kubelet.node_labels()["dna-hub.test/runtime"] == "none"
    assert Kubelet(kube, KubeletConfig())._worker_class is PodWorker
    with pytest.raises(ValueError, match="unknown runtime 'nothing'"):
        Kubelet(kube, KubeletConfig(runtime="nothing"))


def test_cli_selects_the_runtime() -> None:
    args = parse_args(
        ["--kubeconfig", "k", "--kubelet-runtime", "none", "--pod-cidr", "10.1.0.0/16"]
    )
    assert (args.runtime, args.pod_cidr) == ("none", "10.1.0.0/16")
    assert parse_args(["--kubeconfig", "k", "--runtime", "none"]).runtime == "none"
    assert parse_args(["--kubeconfig", "k"]).runtime == "process"


# ---------------------------------------------------------------------- control plane


@pytest.fixture(scope="module")
def simulated_standins(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandIns]:
    with running_standins(
        control_plane.admin_kubeconfig,
        tmp_path_factory.mktemp("standins-none"),
        *standin_args(NODE),
    ) as running:
        yield running


async def _namespace(kube: Kube, name: str, *, profile: bool = False) -> None:
    """A namespace whose ``default`` ServiceAccount exists (pod admission needs it); with
    ``profile``, labelled as Kubeflow's profile controller labels one, with its
    ``default-editor``."""
    metadata: JSON = {"name": name}
    if profile:
        metadata["labels"] = dict(DEFAULT_NAMESPACE_LABELS)
    await kube.create("/api/v1/namespaces", {"metadata": metadata})
    if profile:
        await kube.create(
            f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default-editor"}}
        )
    await eventually(
        lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=60,
    )


async def _running(kube: Kube, path: str) -> JSON | None:
    pod = await kube.get(path)
    return pod if pod.get("status", {}).get("phase") == "Running" else None


async def _gone(kube: Kube, path: str) -> bool:
    return await kube.get_or_none(path) is None


def assert_simulated_running(pod: JSON, node: str = NODE) -> None:
    """The status the ``none`` runtime writes: Running, Ready, an IP from its CIDR."""
    status = pod["status"]
    assert pod["spec"]["nodeName"] == node
    assert status["phase"] == "Running"
    ip = status["podIP"]
    assert ipaddress.IPv4Address(ip) in POD_NETWORK
    assert status["podIPs"] == [{"ip": ip}]
    assert status["hostIP"] == "127.0.0.1"
    assert status["startTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    names = [c["name"] for c in pod["spec"]["containers"]]
    statuses = status["containerStatuses"]
    assert sorted(s["name"] for s in statuses) == sorted(names)
    for s in statuses:
        assert s["ready"] is True and s["started"] is True, s
        assert "running" in s["state"], s
        assert s["containerID"] == f"standin-none://{pod['metadata']['uid']}/{s['name']}"


@pytest.mark.controlplane
@pytest.mark.timeout(240)
async def test_pods_run_nothing_but_are_running_ready_and_deleted(
    simulated_standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube, ns = standins_kube, unique_name("sim")
    await _namespace(kube, ns)
    base = f"/api/v1/namespaces/{ns}/pods"
    try:
        # Three containers, an init container, and env from a Secret that does not exist:
        # the process/podman runtimes hold such a pod in CreateContainerConfigError, this
        # one resolves nothing.
        missing = {"secretKeyRef": {"name": "absent", "key": "token"}}
        first = pod_manifest("first", containers=3)
        first["spec"]["containers"][0]["env"] = [{"name": "TOKEN", "valueFrom": missing}]
        first["spec"]["initContainers"] = [{"name": "setup", "image": "example.org/init:1"}]
        await kube.create(base, first)
        await kube.create(base, pod_manifest("second", containers=2))
        pods = [
            await eventually(lambda n=name: _running(kube, f"{base}/{n}"), timeout=60)
            for name in ("first", "second")
        ]
        for pod in pods:
            assert_simulated_running(pod)
        assert pods[0]["status"]["podIP"] != pods[1]["status"]["podIP"]
        (init,) = pods[0]["status"]["initContainerStatuses"]
        assert init["name"] == "setup"
        assert init["state"]["terminated"]["reason"] == "Completed"
        assert init["state"]["terminated"]["exitCode"] == 0
        # Nothing ran, so nothing was logged.
        assert simulated_standins.pod_log(ns, "first") == ""

        # A graceful delete (an hour's grace) is completed by the node at once: without
        # the stand-in the pod would stay, Terminating, on its node.
        await kube.delete(f"{base}/first", {"gracePeriodSeconds": 3600})
        await eventually(lambda: _gone(kube, f"{base}/first"), timeout=60)
        second = await kube.get(f"{base}/second")
        assert second["metadata"]["uid"] == pods[1]["metadata"]["uid"]
        assert not second["metadata"].get("deletionTimestamp")
    finally:
        await kube.delete(f"/api/v1/namespaces/{ns}")


@pytest.mark.controlplane
@pytest.mark.slow
@pytest.mark.timeout(480)
async def test_more_pods_than_loopback_addresses_get_distinct_ips(
    simulated_standins: StandIns, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    count = 300
    assert count > LOOPBACK_POOL_SIZE
    kube = standins_kube
    namespaces = [unique_name("many") for _ in range(3)]
    for ns in namespaces:
        await _namespace(kube, ns)
    slots = asyncio.Semaphore(16)

    async def create(i: int) -> None:
        async with slots:
            ns = namespaces[i % len(namespaces)]
            await kube.create(f"/api/v1/namespaces/{ns}/pods", pod_manifest(f"p{i}"))

    async def listed() -> list[JSON]:
        items: list[JSON] = []
        for ns in namespaces:
            items += (await kube.get(f"/api/v1/namespaces/{ns}/pods"))["items"]
        return items

    async def all_running() -> list[JSON] | None:
        items = await listed()
        running = [p for p in items if p.get("status", {}).get("phase") == "Running"]
        return items if len(running) == count else None

    try:
        await asyncio.gather(*(create(i) for i in range(count)))
        pods = await eventually(all_running, timeout=300, interval=1)
        for pod in pods:
            assert_simulated_running(pod)
        ips = {pod["status"]["podIP"] for pod in pods}
        assert len(ips) == count

        # Every one of them is deleted by the node too.
        for ns in namespaces:
            await kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods")

        async def none_left() -> bool:
            return not await listed()

        await eventually(none_left, timeout=300, interval=1)
    finally:
        for ns in namespaces:
            await kube.delete(f"/api/v1/namespaces/{ns}")


@pytest.mark.controlplane
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_pods_found_finished_or_deleting_are_handled_like_the_other_runtimes(
    control_plane: ControlPlane,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    """A stand-in that (re)starts finds pods already on its node: a Failed pod stays Failed
    until deleted, a Terminating pod's delete is completed, a Running pod keeps its IP."""
    kube, ns, node = standins_kube, unique_name("sim"), unique_name("node")
    await _namespace(kube, ns)
    base = f"/api/v1/namespaces/{ns}/pods"
    standins = start_standins(control_plane.admin_kubeconfig, tmp_path / "a", *standin_args(node))
    try:
        running = pod_manifest("running", **placement(node))
        await kube.create(base, running)
        before = await eventually(lambda: _running(kube, f"{base}/running"), timeout=60)
        assert_simulated_running(before, node)
        standins.stop()  # the node's pods now wait for a kubelet

        for name in ("failed", "deleting"):
            await kube.create(base, pod_manifest(name, nodeName=node, **placement(node)))
        await kube.patch(f"{base}/failed/status", {"status": {"phase": "Failed"}})
        await kube.delete(f"{base}/deleting", {"gracePeriodSeconds": 3600})
        assert (await kube.get(f"{base}/deleting"))["metadata"]["deletionTimestamp"]

        standins = start_standins(
            control_plane.admin_kubeconfig, tmp_path / "b", *standin_args(node)
        )
        await eventually(lambda: _gone(kube, f"{base}/deleting"), timeout=60)
        after = await kube.get(f"{base}/running")
        assert after["status"]["podIP"] == before["status"]["podIP"]
        assert after["status"]["startTime"] == before["status"]["startTime"]
        failed = await kube.get(f"{base}/failed")
        assert failed["status"]["phase"] == "Failed"
        assert "podIP" not in failed["status"]
        await kube.delete(f"{base}/failed")
        await eventually(lambda: _gone(kube, f"{base}/failed"), timeout=60)
        await kube.delete(f"{base}/running")
        await eventually(lambda: _gone(kube, f"{base}/running"), timeout=60)
    finally:
        standins.stop()
        await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.delete(f"/api/v1/nodes/{node}")


@pytest.mark.controlplane
@pytest.mark.timeout(180)
async def test_stock_kubespawner_starts_and_stops_on_the_none_runtime(
    simulated_standins: StandIns,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with started_stock_kubespawner(
        standins_kube, unique_name("kubeflow-ks"), placement(), monkeypatch
    ) as (spawner, url, pod):
        assert_simulated_running(pod)
        assert url == f"http://{pod['status']['podIP']}:8888"
        assert await spawner.poll() is None


@asynccontextmanager
async def started_stock_kubespawner(
    kube: Kube, namespace: str, placement: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[KubeSpawner, str, JSON]]:
    """Stock KubeSpawner started in a new profile namespace: ``(spawner, url, pod)``; on exit
    it is stopped, its pod must be gone, and the namespace is deleted.

    KubeSpawner's load_kube_config() must see the hub's kubeconfig (see
    tests/integration/test_kubespawner_standins.py): stock KubeSpawner runs with the hub's
    identity, which the admission guards confine to profile namespaces, as default-editor,
    Pod Security "restricted" — so that is where, and how, it runs the pod.
    """
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", os.environ["KUBECONFIG"])
    await _namespace(kube, namespace, profile=True)
    try:
        spawner = stock_kubespawner(namespace, placement)
        url = await asyncio.wait_for(spawner.start(), timeout=120)
        # What the Hub does with the URL start() returns (poll() compares against it).
        parsed = urlsplit(url)
        spawner.server.ip, spawner.server.port = parsed.hostname, parsed.port
        path = f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}"
        try:
            yield spawner, url, await kube.get(path)
        finally:
            await asyncio.wait_for(spawner.stop(), timeout=60)
        assert await kube.get_or_none(path) is None
    finally:
        await kube.delete(f"/api/v1/namespaces/{namespace}")


def stock_kubespawner(namespace: str, placement: dict[str, Any]) -> KubeSpawner:
    """Stock KubeSpawner for user erin in `namespace` (a profile namespace: the hub's
    identity is confined there), as default-editor, Pod Security "restricted", placed on a
    stand-in node by `placement` (its nodeSelector and tolerations)."""
    user = SimpleNamespace(name="erin", escaped_name="erin", id=9, url="/user/erin/", settings={})
    hub = SimpleNamespace(
        public_host="", url="/hub/", base_url="/hub/", api_url="http://127.0.0.1:8081/hub/api"
    )
    spawner = KubeSpawner(
        _mock=True,
        user=user,
        hub=hub,
        namespace=namespace,
        cmd=["jupyterhub-singleuser"],
        image="quay.io/jupyter/base-notebook:latest",
        api_token="not-a-real-token",
        oauth_client_id="jupyterhub-user-erin",
        node_selector=placement["nodeSelector"],
        tolerations=placement["tolerations"],
        start_timeout=90,
        service_account="default-editor",
        pod_security_context=dict(RESTRICTED_POD_SECURITY_CONTEXT),
        container_security_context=dict(RESTRICTED_CONTAINER_SECURITY_CONTEXT),
    )
    spawner.server = Server(base_url="/user/erin/")
    return spawner
