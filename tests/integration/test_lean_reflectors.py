"""DnaSpawner's shared reflectors keep pods without managedFields (issue #17: the objects a
full garbage collection walks during a login storm), on the real API server. Counts, no timing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner

from devstack.controlplane import ControlPlane
from dna_hub import DnaSpawner
from dna_hub.hub.reflectors import LeanPodReflector, without_managed_fields
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane]


def test_stripping_leaves_everything_but_managed_fields() -> None:
    pod = {
        "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"manager": "x"}]},
        "status": {"phase": "Running"},
    }
    assert without_managed_fields(pod) == {
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "status": {"phase": "Running"},
    }
    assert without_managed_fields({"no": "metadata"}) == {"no": "metadata"}


async def test_the_pod_reflector_stores_pods_without_managed_fields(
    control_plane: ControlPlane,
    admin_api: ApiClient,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # KubeSpawner's load_config() reads the hub's kubeconfig (see test_kubespawner_standins).
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", os.environ["KUBECONFIG"])
    admin = CoreV1Api(admin_api)
    namespace = unique_name("lean")
    await admin.create_namespace({"metadata": {"name": namespace}})
    pod: dict[str, Any] = {
        "metadata": {"name": "jupyter-lean", "labels": {"component": "singleuser-server"}},
        "spec": {"containers": [{"name": "notebook", "image": "x", "env": [{"name": "A"}]}]},
    }
    # No kubelet on this node selector: the pod stays Pending, which is all this needs.
    pod["spec"]["nodeSelector"] = {"dna-hub.test/nowhere": "true"}
    pod["spec"]["automountServiceAccountToken"] = False

    async def created() -> bool:
        try:
            await admin.create_namespaced_pod(namespace, pod)
        except ApiException as e:  # the namespace's "default" account is not made yet
            if e.status in (403, 500):
                return False
            raise
        return True

    await eventually(created, timeout=30)
    key = f"{namespace}/jupyter-lean"
    user = SimpleNamespace(name="lean", id=1, url="/user/lean/", settings={}, groups=[])
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", public_host="", url="/hub/",
                          base_url="/hub/")  # fmt: skip
    spawner = DnaSpawner(user=user, hub=hub, _mock=True, log=logging.getLogger("test-lean"))
    saved = dict(KubeSpawner.reflectors)
    KubeSpawner.reflectors.clear()
    try:
        reflector = await asyncio.wait_for(spawner._start_watching_pods(), 60)
        assert isinstance(reflector, LeanPodReflector)
        assert (reflector.timeout_seconds, reflector.restart_seconds) == (300, 300)
        served = await admin.read_namespaced_pod("jupyter-lean", namespace)
        assert served.metadata.managed_fields, "the API server no longer sends managedFields"
        # From the list:
        listed = reflector.pods[key]
        assert "managedFields" not in listed["metadata"]
        assert listed["spec"]["containers"][0]["env"] == [{"name": "A"}]
        # From a watch event:
        await admin.patch_namespaced_pod(
            "jupyter-lean", namespace, {"metadata": {"labels": {"seen": "watch"}}}
        )

        def updated() -> dict[str, Any] | None:
            stored = reflector.pods.get(key)
            return stored if stored and stored["metadata"]["labels"].get("seen") else None

        watched = await eventually(lambda: asyncio.sleep(0, updated()), timeout=30)
        assert "managedFields" not in watched["metadata"]
        assert all("managedFields" not in p["metadata"] for p in reflector.pods.values())
    finally:
        for reflector in KubeSpawner.reflectors.values():
            await reflector.stop()
        KubeSpawner.reflectors.clear()
        KubeSpawner.reflectors.update(saved)
        await admin.delete_namespace(namespace)


async def test_stock_kubespawner_keeps_its_own_reflectors() -> None:
    """Only DnaSpawner swaps the class: a stock KubeSpawner in the same hub is untouched."""
    with mock.patch("kubespawner.spawner.load_config"):
        stock = KubeSpawner(_mock=True)
    made: list[type] = []

    async def record(self: Any, kind: str, reflector_class: type, *a: Any, **kw: Any) -> None:
        made.append(reflector_class)

    with mock.patch.object(KubeSpawner, "_start_reflector", record):
        await stock._start_watching_pods()
    assert made and made[0] is not LeanPodReflector
