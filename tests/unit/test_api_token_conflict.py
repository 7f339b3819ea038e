"""Issue 25 (api_token.py): a 409 on the notebook's API-token Secret is never taken for ours.

The Secret's name is in the pod spec before the Secret exists; a profile editor could create
it first with a token of their choosing. The hub may only create Secrets (never read them), so
the spawn fails instead of running the notebook with that Secret."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from kubernetes_asyncio.client import V1ObjectMeta, V1Pod

from dna_hub.errors import ApiFailure, OwnershipConflict
from dna_hub.k8s.api import KubeApi
from dna_hub.profiles.api_token import create_api_token_secret
from tests.unit.test_spawn_errors import FakeCoreV1, api_error, spawner_for


async def test_an_existing_secret_fails_the_create() -> None:
    api = mock.Mock(spec=KubeApi)
    api.create = mock.AsyncMock(side_effect=api_error(409, "AlreadyExists", "exists"))
    with pytest.raises(OwnershipConflict) as conflict:
        await create_api_token_secret(
            api, name="jupyter-alice-api-token-0a1b2c3d", namespace="kubeflow-alice",
            token="t", pod_name="jupyter-alice", pod_uid="u",
        )  # fmt: skip
    assert "Secret kubeflow-alice/jupyter-alice-api-token-0a1b2c3d" in str(conflict.value)
    assert "already existed before the hub created it" in str(conflict.value)
    assert conflict.value.jupyterhub_message == (
        "Your notebook server's credentials could not be stored safely. "
        "Please start your server again."
    )
    assert api.create.await_count == 1  # nothing read, nothing overwritten


async def test_the_spawn_stops_on_a_squatted_secret() -> None:
    spawner = spawner_for("alice", FakeCoreV1())
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    with (
        mock.patch.object(KubeApi, "get", mock.AsyncMock(return_value={"metadata": {"uid": "u"}})),
        mock.patch.object(
            KubeApi, "create", mock.AsyncMock(side_effect=api_error(409, "AlreadyExists", "x"))
        ),
        pytest.raises(OwnershipConflict, match=spawner.api_token_secret),
    ):
        await spawner._make_create_pod_request(pod, 5)


async def create_pod_and_secret(api: FakeCoreV1) -> tuple[int, str]:
    """DnaSpawner creates its pod through `api`: how often the pod was read back, and the
    uid the API-token Secret names as its owner."""
    spawner = spawner_for("alice", api)
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    get = mock.AsyncMock(return_value={"metadata": {"uid": "uid-from-get"}})
    create = mock.AsyncMock(return_value={})
    with mock.patch.object(KubeApi, "get", get), mock.patch.object(KubeApi, "create", create):
        assert await spawner._make_create_pod_request(pod, 5) is True
    (secret,) = [c.args[1] for c in create.await_args_list]
    return get.await_count, secret["metadata"]["ownerReferences"][0]["uid"]


async def test_the_secret_is_owned_by_the_created_pod_without_reading_it_back() -> None:
    """The create's answer carries the pod's uid: no GET of the pod on the way (one request
    fewer on every spawn; tests/benchmarks counts the requests of a returning user)."""

    class CreatingCoreV1(FakeCoreV1):
        async def create_namespaced_pod(self, namespace: str, body: Any) -> Any:
            self.calls.append("create_namespaced_pod")
            return V1Pod(metadata=V1ObjectMeta(name=body.metadata.name, uid="uid-from-create"))

    assert await create_pod_and_secret(CreatingCoreV1()) == (0, "uid-from-create")


async def test_a_pod_created_by_kubespawners_own_path_is_read_for_its_uid() -> None:
    """After a 409 KubeSpawner's own create runs (it returns no object): the uid is read."""
    # FakeCoreV1's create answers {}: no uid
    assert await create_pod_and_secret(FakeCoreV1()) == (1, "uid-from-get")


async def test_an_api_server_that_does_not_answer_the_secret_fails_the_spawn_in_words() -> None:
    """Issue 26 (500 users at once): the Secret's create timed out after KubeApi's retries and
    the bare TimeoutError reached the user as "Spawn failed: " (nothing else)."""
    spawner = spawner_for("alice", FakeCoreV1())
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    with (
        mock.patch.object(KubeApi, "get", mock.AsyncMock(return_value={"metadata": {"uid": "u"}})),
        mock.patch.object(KubeApi, "create", mock.AsyncMock(side_effect=TimeoutError())),
        pytest.raises(ApiFailure) as failure,
    ):
        await spawner._make_create_pod_request(pod, 5)
    assert failure.value.jupyterhub_message == (
        "The Kubernetes API did not answer while starting your server. "
        "Please try again in a moment."
    )
    assert f"Secret {spawner.api_token_secret}: timed out" in str(failure.value)
