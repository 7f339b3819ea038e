"""Issue 28: GPU notebooks that queue instead of failing, on real Kueue.

Kueue is the real manager (devstack/kueue.py: built from the Go module proxy, its own CRDs and
webhooks, its visibility API through the aggregator) on the control plane with the real
kube-scheduler; pods run on the stand-in kubelet. The node advertises one ``example.com/gpu``
(an extended resource, patched into the node's status as a device plugin would; not
``nvidia.com/gpu``, whose absence other tests of the session rely on), and a ClusterQueue
has quota for exactly one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.demo import DNA_SPAWNER_CONFIG
from devstack.kueue import ADMISSION_GATE, QUEUE_LABEL, Kueue
from devstack.standins import Kube
from devstack.standins.kubelet import DEFAULT_NODE_NAME
from dna_hub.policy.naming import namespace_for
from tests.integration.test_auth_hardening import accounts, browser, person
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

GPU = "example.com/gpu"
KUEUE = "/apis/kueue.x-k8s.io/v1beta2"


async def advertise_gpu(kube: Kube) -> None:
    """One example.com/gpu on the node (what a device plugin makes the kubelet report)."""
    await kube.patch(
        f"/api/v1/nodes/{DEFAULT_NODE_NAME}/status",
        {"status": {"capacity": {GPU: "1"}, "allocatable": {GPU: "1"}}},
        "strategic",
    )


async def gpu_cluster_queue(kube: Kube, name: str) -> None:
    """A ResourceFlavor and a StrictFIFO ClusterQueue with quota for one GPU (and ample CPU
    and memory), for every namespace."""
    await kube.create(
        f"{KUEUE}/resourceflavors",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": name},
        },
    )
    await kube.create(
        f"{KUEUE}/clusterqueues",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {},
                "queueingStrategy": "StrictFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", GPU],
                        "flavors": [
                            {
                                "name": name,
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "100"},
                                    {"name": "memory", "nominalQuota": "1000Gi"},
                                    {"name": GPU, "nominalQuota": "1"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
    )


def gpu_pod(name: str, queue: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["sleep", "600"],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi", GPU: "1"},
                        "limits": {"memory": "16Mi", GPU: "1"},
                    },
                }
            ],
        },
    }


async def queue_namespace(kube: Kube, namespace: str, cluster_queue: str) -> None:
    """A plain namespace with a LocalQueue ``notebooks`` on ``cluster_queue``."""
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    await kube.create(
        f"{KUEUE}/namespaces/{namespace}/localqueues",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "notebooks", "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    )


async def hold_the_gpu(kube: Kube, namespace: str, cluster_queue: str) -> str:
    """Someone else's GPU pod, admitted and running in ``namespace``; returns the namespace
    (delete its pod ``holder`` to free the GPU)."""
    await queue_namespace(kube, namespace, cluster_queue)
    await kube.create(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("holder", "notebooks"))
    assert await eventually(lambda: _is(phase(kube, namespace, "holder"), "Running"), timeout=60)
    return namespace


async def phase(kube: Kube, namespace: str, name: str) -> str | None:
    pod = await kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return None if pod is None else pod["status"].get("phase")


async def test_kueue_holds_a_second_gpu_pod_until_the_first_is_gone(
    kueue: Kueue, standins_kube: Kube, unique_name: Callable[..., str]
) -> None:
    kube = standins_kube
    namespace, queue = unique_name("kq"), unique_name("gpu")
    await advertise_gpu(kube)
    await gpu_cluster_queue(kube, queue)
    await queue_namespace(kube, namespace, queue)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    await kube.create(pods, gpu_pod("first", "notebooks"))
    assert await eventually(lambda: _is(phase(kube, namespace, "first"), "Running"), timeout=60)

    second = await kube.create(pods, gpu_pod("second", "notebooks"))
    # Kueue's webhook gated it; its Workload waits for quota, first in line
    assert {"name": ADMISSION_GATE} in second["spec"].get("schedulingGates", [])

    async def pending_position() -> Any:
        answer = await kube.get(
            f"/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{namespace}"
            "/localqueues/notebooks/pendingworkloads"
        )
        return [(w["metadata"]["name"], w["positionInClusterQueue"]) for w in answer["items"]]

    waiting = await eventually(pending_position, timeout=30)
    assert len(waiting) == 1 and waiting[0][0].startswith("pod-second-") and waiting[0][1] == 0
    await asyncio.sleep(2)
    assert await phase(kube, namespace, "second") == "Pending"

    await kube.delete(f"{pods}/first")
    assert await eventually(lambda: _is(phase(kube, namespace, "second"), "Running"), timeout=60)
    pod = await kube.get(f"{pods}/second")
    assert not pod["spec"].get("schedulingGates")
    await kube.delete(f"{pods}/second")


async def _is(value: Any, expected: Any) -> bool:
    return (await value) == expected


# --- through the real hub --------------------------------------------------------------------


def kueue_config(cluster_queue: str) -> str:
    return f"""
# --- Kueue (tests/integration/test_kueue.py) ---
c.DnaSpawner.kueue_cluster_queue = {cluster_queue!r}
c.DnaSpawner.kueue_accelerators = [{GPU!r}]
c.DnaSpawner.kueue_poll_interval = 0.5
c.DnaSpawner.server_options = [
    {{"display_name": "CPU server", "slug": "cpu", "default": True}},
    {{"display_name": "GPU server", "slug": "gpu",
     "kubespawner_override": {{"extra_resource_limits": {{{GPU!r}: "1"}}}}}},
]
"""


async def progress_until(
    hub: Any, name: str, wanted: Callable[[str], bool], timeout: float = 90
) -> list[str]:
    """The server's progress messages (the spawn page's event stream), until one is wanted."""
    messages: list[str] = []
    async with hub.api() as api:
        async with api.stream(
            "GET", f"/users/{name}/server/progress", timeout=httpx.Timeout(timeout)
        ) as stream:
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if wanted(messages[-1]):
                    return messages
    raise AssertionError(f"not in the progress of {name}: {messages}")


async def server_state(hub: Any, name: str) -> dict[str, Any] | None:
    model = await hub.user_model(name)
    assert model is not None
    return model["servers"].get("")


async def test_a_gpu_notebook_queues_shows_its_place_and_starts_when_the_gpu_frees(
    kueue: Kueue,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    oidc_provider_factory: Any,
    hub_factory: Any,
) -> None:

    kube = standins_kube
    queue = unique_name("gpu")
    await advertise_gpu(kube)
    await gpu_cluster_queue(kube, queue)
    alice, bob, carol = unique_name("qa"), unique_name("qb"), unique_name("qc")
    provider = oidc_provider_factory(
        accounts=accounts(**{login: person(login) for login in (alice, bob, carol)})
    )
    hub = await hub_factory(provider, extra_config=DNA_SPAWNER_CONFIG + kueue_config(queue))
    for login in (alice, bob, carol):
        async with browser() as http:
            assert (await hub.login(http, login)).status_code == 200

    async def start(login: str, option: str) -> None:
        async with hub.api() as api:
            started = await api.post(f"/users/{login}/server", json={"profile": option})
        assert started.status_code in (201, 202), started.text

    async def ready(login: str) -> bool:
        state = await server_state(hub, login)
        return bool(state and state.get("ready"))

    # alice's GPU notebook gets the one GPU
    await start(alice, "gpu")
    assert await eventually(lambda: ready(alice), timeout=180), hub.log()[-3000:]
    alice_pod = await kube.get(f"/api/v1/namespaces/{namespace_for(alice)}/pods/jupyter-{alice}")
    assert alice_pod["metadata"]["labels"][QUEUE_LABEL] == "notebooks"

    # bob's waits in the queue, and his spawn page says where he stands
    await start(bob, "gpu")
    messages = await progress_until(hub, bob, lambda m: m.startswith("Queued: position 1"))
    assert "in queue notebooks, waiting for 1 example.com/gpu" in messages[-1]
    bob_pods = f"/api/v1/namespaces/{namespace_for(bob)}/pods"
    bob_pod = await kube.get(f"{bob_pods}/jupyter-{bob}")
    assert {"name": ADMISSION_GATE} in bob_pod["spec"]["schedulingGates"]

    # carol's CPU notebook is not queued and starts meanwhile
    await start(carol, "cpu")
    assert await eventually(lambda: ready(carol), timeout=180), hub.log()[-3000:]
    carol_pod = await kube.get(f"/api/v1/namespaces/{namespace_for(carol)}/pods/jupyter-{carol}")
    assert QUEUE_LABEL not in carol_pod["metadata"]["labels"]

    # bob cancels: the pending server stops, its pod and Workload go
    async with hub.api() as api:
        cancelled = await api.delete(f"/users/{bob}/server")
    assert cancelled.status_code in (202, 204), cancelled.text
    assert await eventually(lambda: _gone(kube, f"{bob_pods}/jupyter-{bob}"), timeout=60), (
        hub.log()[-3000:]
    )
    assert await server_state(hub, bob) is None

    # bob queues again; alice stops; bob's notebook starts (no timeout: it waited its turn)
    await start(bob, "gpu")
    await progress_until(hub, bob, lambda m: m.startswith("Queued: position 1"))
    async with hub.api() as api:
        stopped = await api.delete(f"/users/{alice}/server")
    assert stopped.status_code in (202, 204), stopped.text
    assert await eventually(lambda: ready(bob), timeout=180), hub.log()[-3000:]
    assert "Queue kubeflow-" in hub.log() and "admitted" in hub.log()
    async with hub.api() as api:
        for login in (bob, carol):
            await api.delete(f"/users/{login}/server")


async def _gone(kube: Kube, path: str) -> bool:
    return await kube.get_or_none(path) is None


# --- the hub's and the sync job's Kueue permissions, each needed ------------------------------


async def kueue_exercise(api: Any, namespace: str, *, sync: bool) -> list[str]:
    """What the hub (or the sync job) does with Kueue; the steps the API server forbade."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from dna_hub.k8s.api import QUEUE_VISIBILITY, WORKLOAD, KubeApi
    from dna_hub.k8s.retry import RetryPolicy

    kube = KubeApi(api, retry=RetryPolicy(attempts=1))
    local_queue = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": "notebooks", "namespace": namespace},
        "spec": {"clusterQueue": "none"},
    }
    steps: list[tuple[str, Any]] = [
        ("apply (create)", lambda: kube.apply(local_queue, field_manager="dna-hub")),
        ("apply (patch)", lambda: kube.apply(local_queue, field_manager="dna-hub")),
    ]
    if sync:
        lq = await kube.kind_for("kueue.x-k8s.io/v1beta2", "LocalQueue")
        steps += [
            ("list localqueues", lambda: kube.list(lq, namespace)),
            ("delete localqueue", lambda: kube.delete(lq, "notebooks", namespace)),
        ]
    else:
        steps += [
            ("list workloads", lambda: kube.list(WORKLOAD, namespace)),
            (
                "get pendingworkloads",
                lambda: kube.get_subresource(
                    QUEUE_VISIBILITY, "notebooks", namespace, "pendingworkloads"
                ),
            ),
        ]
    forbidden = []
    for name, step in steps:
        try:
            await step()
        except ApiException as e:
            if e.status != 403:
                raise
            forbidden.append(name)
    return forbidden


async def test_each_kueue_permission_of_the_hub_and_the_sync_job_is_needed(
    kueue: Kueue,
    admin_api: Any,
    control_plane: Any,
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    """The exhaustive RBAC tests (test_hub_rbac.py, test_sync_rbac.py) leave the Kueue rules
    to this one: they need Kueue's kinds served. With all rules nothing is forbidden; without
    any one Kueue rule, a step is."""
    from dna_hub.policy.ops_permissions import SYNC_PERMISSIONS
    from dna_hub.policy.permissions import HUB_PERMISSIONS
    from tests.integration.test_hub_rbac import identity_without
    from tests.integration.test_sync_rbac import client_for, sync_token

    async def namespace() -> str:
        name = f"kubeflow-{unique_name('kperm')}"
        await standins_kube.create(
            "/api/v1/namespaces",
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "app.kubernetes.io/part-of": "kubeflow-profile",
                        "pod-security.kubernetes.io/enforce": "restricted",
                    },
                }
            },
        )
        return name

    async with await identity_without(admin_api, control_plane, None, unique_name("k")) as api:
        assert await kueue_exercise(api, await namespace(), sync=False) == []
    async with client_for(
        control_plane, await sync_token(admin_api, None, unique_name("ks"))
    ) as api:
        assert await kueue_exercise(api, await namespace(), sync=True) == []
    for index, permission in enumerate(p for p in HUB_PERMISSIONS if p.setting == "kueue"):
        tag = unique_name(f"k{index}")
        async with await identity_without(admin_api, control_plane, permission, tag) as api:
            forbidden = await kueue_exercise(api, await namespace(), sync=False)
        assert forbidden, f"the hub's {permission.verb} {permission.resource} is not needed"
    for index, permission in enumerate(p for p in SYNC_PERMISSIONS if p.setting == "kueue"):
        token = await sync_token(admin_api, permission, unique_name(f"ks{index}"))
        async with client_for(control_plane, token) as api:
            forbidden = await kueue_exercise(api, await namespace(), sync=True)
        assert forbidden, f"the sync job's {permission.verb} {permission.resource} is not needed"


async def test_a_notebook_the_queue_stops_ends_cleanly_and_the_next_start_says_why(
    kueue: Kueue,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    oidc_provider_factory: Any,
    hub_factory: Any,
) -> None:
    """Kueue evicts a running GPU notebook (here: its Workload is deactivated, as an admin or
    a preemption would make Kueue stop it): the pod goes, JupyterHub sees the server stopped,
    nothing is left (no pod, no Workload), the hub log says why, and so does the progress page
    of the user's next start, which queues and runs as before."""

    kube = standins_kube
    queue = unique_name("gpu")
    await advertise_gpu(kube)
    await gpu_cluster_queue(kube, queue)
    dana = unique_name("qd")
    provider = oidc_provider_factory(accounts=accounts(**{dana: person(dana)}))
    config = DNA_SPAWNER_CONFIG + kueue_config(queue) + "c.Spawner.poll_interval = 1\n"
    hub = await hub_factory(provider, extra_config=config)
    async with browser() as http:
        assert (await hub.login(http, dana)).status_code == 200
    namespace = namespace_for(dana)
    pod_path = f"/api/v1/namespaces/{namespace}/pods/jupyter-{dana}"

    async def ready() -> bool:
        state = await server_state(hub, dana)
        return bool(state and state.get("ready"))

    async with hub.api() as api:
        started = await api.post(f"/users/{dana}/server", json={"profile": "gpu"})
    assert started.status_code in (201, 202), started.text
    assert await eventually(ready, timeout=180), hub.log()[-3000:]
    pod = await kube.get(pod_path)
    workloads = f"{KUEUE}/namespaces/{namespace}/workloads"
    (workload,) = (
        await kube.get(f"{workloads}?labelSelector=kueue.x-k8s.io/job-uid={pod['metadata']['uid']}")
    )["items"]

    # Kueue stops it
    await kube.patch(f"{workloads}/{workload['metadata']['name']}", {"spec": {"active": False}})

    async def stopped() -> bool:
        return await server_state(hub, dana) is None and await kube.get_or_none(pod_path) is None

    assert await eventually(stopped, timeout=90), hub.log()[-3000:]
    assert f"of {dana} stopped by Kueue:" in hub.log(), hub.log()[-3000:]
    assert not (await kube.get(f"{workloads}"))["items"] or all(
        w["metadata"].get("deletionTimestamp") for w in (await kube.get(workloads))["items"]
    )

    # someone else takes the GPU meanwhile, so the next start waits (and its page is read)
    holder = await hold_the_gpu(kube, unique_name("kh"), queue)

    # the next start says why the last one ended, then queues and runs as before
    async with hub.api() as api:
        started = await api.post(f"/users/{dana}/server", json={"profile": "gpu"})
    assert started.status_code in (201, 202), started.text
    messages = await progress_until(hub, dana, lambda m: m.startswith("Queued: position 1"))
    assert any("stopped by the GPU queue" in m for m in messages), messages
    await kube.delete(f"/api/v1/namespaces/{holder}/pods/holder")
    assert await eventually(ready, timeout=180), hub.log()[-3000:]
    async with hub.api() as api:
        await api.delete(f"/users/{dana}/server")


async def test_a_spawn_still_queued_at_its_limit_ends_with_a_message_and_no_pod(
    kueue: Kueue,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    oidc_provider_factory: Any,
    hub_factory: Any,
) -> None:
    """The GPU stays taken: the spawn waits start_timeout + kueue_queue_timeout, then ends
    with the queue's message (not a timeout), and no pod or Workload is left behind."""

    kube = standins_kube
    queue = unique_name("gpu")
    await advertise_gpu(kube)
    await gpu_cluster_queue(kube, queue)
    holder = await hold_the_gpu(kube, unique_name("kt"), queue)

    erin = unique_name("qe")
    provider = oidc_provider_factory(accounts=accounts(**{erin: person(erin)}))
    limits = "c.DnaSpawner.start_timeout = 20\nc.DnaSpawner.kueue_queue_timeout = 10\n"
    hub = await hub_factory(
        provider, extra_config=DNA_SPAWNER_CONFIG + kueue_config(queue) + limits
    )
    async with browser() as http:
        assert (await hub.login(http, erin)).status_code == 200
    async with hub.api() as api:
        started = await api.post(f"/users/{erin}/server", json={"profile": "gpu"})
    assert started.status_code in (201, 202), started.text
    messages = await progress_until(
        hub, erin, lambda m: "became free in the queue" in m, timeout=120
    )
    assert (
        "No 1 example.com/gpu became free in the queue notebooks within 30 seconds"
        in (messages[-1])
    ), messages
    assert await server_state(hub, erin) is None
    pod_path = f"/api/v1/namespaces/{namespace_for(erin)}/pods/jupyter-{erin}"
    assert await eventually(lambda: _gone(kube, pod_path), timeout=60), hub.log()[-3000:]
    await kube.delete(f"/api/v1/namespaces/{holder}/pods/holder")
