"""A notebook server that cannot start says why in people's words (issue 27, item 1), on the
control plane: the kube-scheduler is the real one and the stand-in node has no
``nvidia.com/gpu``, so a server asking for a GPU gets Kubernetes' own "0/1 nodes are
available: 1 Insufficient nvidia.com/gpu" event; the progress stream shows what it means and
what to do (the event itself in ``raw_event``), and the spawn ends with it, not a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from devstack.standins import Kube
from dna_hub import DnaSpawner
from dna_hub.errors import ServerNotStarted
from tests.integration.test_kubespawner_standins import fake_hub_api  # noqa: F401 - a fixture
from tests.integration.test_spawner import make_spawner  # noqa: F401 - a fixture

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

NO_GPU = "No GPU is free in the cluster right now."
NO_GPU_FINAL = "Your server did not start: no GPU was free in the cluster."


async def test_a_server_asking_for_a_gpu_no_node_has_says_so(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    username = unique_name("gpu")
    spawner = make_spawner(
        username,
        f"{username}@example.com",
        extra_resource_limits={"nvidia.com/gpu": "1"},
        start_timeout=40,  # the pod can never be scheduled: the spawn ends when this is up
    )
    events: list[dict[str, Any]] = []
    future = spawner.start()

    async def follow() -> None:
        async for event in spawner.progress():
            events.append(event)

    follower = asyncio.ensure_future(follow())
    try:
        with pytest.raises(ServerNotStarted) as info:
            await asyncio.wait_for(future, timeout=120)
    finally:
        await asyncio.wait_for(follower, timeout=30)
        await asyncio.wait_for(spawner.stop(now=True), timeout=60)

    # the progress page shows the cause in people's words, the event itself kept with it
    explained = [e for e in events if e["message"].startswith(NO_GPU)]
    assert explained, [e["message"] for e in events]
    raw = explained[0]["raw_event"]
    assert raw["reason"] == "FailedScheduling"
    assert "Insufficient nvidia.com/gpu" in raw["message"]
    assert raw["involvedObject"]["name"] == spawner.pod_name
    assert not any("Insufficient nvidia.com/gpu" in e["message"] for e in events)
    # the spawn ends with that message (JupyterHub shows jupyterhub_message), not a timeout
    error = info.value
    assert error.jupyterhub_message.startswith(NO_GPU_FINAL)
    assert "timeout" not in error.jupyterhub_message.lower()
    assert "Insufficient nvidia.com/gpu" in str(error)  # the operator's detail, in the log
    assert spawner.pod_name in str(error)
    pod = await standins_kube.get_or_none(
        f"/api/v1/namespaces/{spawner.namespace}/pods/{spawner.pod_name}"
    )
    assert pod is None or pod["metadata"].get("deletionTimestamp")
