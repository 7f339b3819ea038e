"""Kubernetes refusing an object of a spawn ends it in people's words, never 'Unhandled error'
(issue #29, item 3). A fake API object stands in for the cluster."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from jupyterhub.spawner import SpawnException
from jupyterhub.utils import format_exception
from kubernetes_asyncio.client import V1ObjectMeta, V1Pod
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from dna_hub import DnaSpawner
from dna_hub.errors import ApiFailure, ProvisioningError
from dna_hub.hub.spawn_errors import KubernetesRefused, refusal, refusals_explained
from dna_hub.k8s.api import KubeApi

CLAIM = "home-carol@example.com"
NS = "kubeflow-carol-example-com---e0d47ca1"


def api_error(status: int, reason: str, message: str, **details: Any) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
         "reason": reason, "details": details, "code": status}
    ).encode()  # fmt: skip
    return error


def invalid_claim() -> ApiException:
    message = (
        f'PersistentVolumeClaim "{CLAIM}" is invalid: metadata.name: Invalid value: "{CLAIM}": '
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
    )
    return api_error(
        422, "Invalid", message, name=CLAIM, kind="PersistentVolumeClaim",
        causes=[{"reason": "FieldValueInvalid", "message": "Invalid", "field": "metadata.name"}],
    )  # fmt: skip


def test_a_422_becomes_a_refusal_for_the_user_and_the_operator() -> None:
    refused = refusal(invalid_claim(), kind="PersistentVolumeClaim", name=CLAIM, namespace=NS)
    assert isinstance(refused, KubernetesRefused)
    assert isinstance(refused, ApiFailure) and isinstance(refused, ProvisioningError)
    # JupyterHub's spawn handler shows an HTTPError's message even within the first second
    assert isinstance(refused, SpawnException) and isinstance(refused, web.HTTPError)
    user = refused.jupyterhub_message
    assert "storage volume" in user and "home directory" in user
    assert "contact your platform administrator" in user
    assert "Unhandled" not in user and "422" not in user
    assert format_exception(refused) == (user, None)
    operator = str(refused)
    assert f"creating PersistentVolumeClaim {NS}/{CLAIM} was refused: HTTP 422 Invalid" in operator
    assert "(fields: metadata.name)" in operator
    assert "a lowercase RFC 1123 subdomain must consist" in operator
    assert refused.get_message() == refused.detail  # what tornado logs
    assert (refused.kind, refused.name, refused.status, refused.fields, refused.reason) == (
        "PersistentVolumeClaim",
        CLAIM,
        422,
        ("metadata.name",),
        "invalid",
    )


def test_what_is_not_given_is_read_from_the_status() -> None:
    refused = refusal(invalid_claim())
    assert refused is not None
    assert (refused.kind, refused.name) == ("PersistentVolumeClaim", CLAIM)


@pytest.mark.parametrize(
    ("error", "reason", "user_words"),
    [
        (api_error(403, "Forbidden", 'pods "jupyter-alice" is forbidden: exceeded quota: '
                   "kf-resource-quota, requested: cpu=2, used: cpu=8, limited: cpu=8",
                   name="jupyter-alice", kind="pods"),
         "quota", "resource quota is used up"),
        (api_error(403, "Forbidden", 'secrets is forbidden: User "system:serviceaccount:'
                   'jupyterhub:hub" cannot create resource "secrets"', kind="secrets"),
         "forbidden", "not allowed to create the credentials"),
        (api_error(404, "NotFound", 'namespaces "kubeflow-alice" not found',
                   name="kubeflow-alice", kind="namespaces"),
         "missing", "namespace is missing"),
        (api_error(400, "BadRequest", "admission webhook denied the request"),
         "invalid", "the hub's configuration produced an invalid one"),
    ],
)  # fmt: skip
def test_each_refusal_says_what_to_do(error: ApiException, reason: str, user_words: str) -> None:
    refused = refusal(error)
    assert refused is not None
    assert refused.reason == reason
    assert user_words in refused.jupyterhub_message, refused.jupyterhub_message
    assert f"HTTP {error.status}" in str(refused)


@pytest.mark.parametrize(
    "error",
    [
        api_error(409, "AlreadyExists", "exists"),
        api_error(429, "TooManyRequests", "slow down"),
        api_error(500, "InternalError", "etcd"),
        TimeoutError(),
    ],
)
def test_what_is_not_a_refusal_is_left_alone(error: BaseException) -> None:
    assert refusal(error) is None


# --- the spawner, with a fake API object ---------------------------------------------------


class FakeCoreV1:
    """What DnaSpawner and KubeSpawner call of CoreV1Api while creating a server's objects."""

    def __init__(self, **errors: BaseException) -> None:
        self.errors = errors
        self.api_client = SimpleNamespace()
        self.calls: list[str] = []

    async def create_namespaced_pod(self, namespace: str, body: Any) -> Any:
        return self._call("create_namespaced_pod")

    async def create_namespaced_persistent_volume_claim(self, namespace: str, body: Any) -> Any:
        return self._call("create_namespaced_persistent_volume_claim")

    async def read_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> Any:
        return self._call("read_namespaced_persistent_volume_claim")

    def _call(self, name: str) -> Any:
        self.calls.append(name)
        if name in self.errors:
            raise self.errors[name]
        return {}


def spawner_for(username: str, api: FakeCoreV1) -> DnaSpawner:
    user = SimpleNamespace(name=username, id=1, url="/user/x/", settings={}, groups=[])
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", public_host="", url="/hub/",
                          base_url="/hub/")  # fmt: skip
    with mock.patch("kubespawner.spawner.load_config"):
        spawner = DnaSpawner(user=user, hub=hub, _mock=True)
    spawner.api = api
    spawner.api_token = "token"
    return spawner


async def test_a_422_creating_the_pvc_is_a_refusal_not_an_api_exception() -> None:
    api = FakeCoreV1(create_namespaced_persistent_volume_claim=invalid_claim())
    spawner = spawner_for("carol@example.com", api)
    pvc = spawner.get_pvc_manifest()
    with pytest.raises(KubernetesRefused) as refused:
        await spawner._make_create_pvc_request(pvc, 5)
    assert refused.value.kind == "PersistentVolumeClaim"
    assert refused.value.name == pvc.metadata.name
    assert refused.value.namespace == spawner.namespace
    assert "storage volume" in refused.value.jupyterhub_message
    assert isinstance(refused.value.__cause__, ApiException)


async def test_an_existing_pvc_is_still_fine() -> None:
    api = FakeCoreV1(create_namespaced_persistent_volume_claim=api_error(409, "AlreadyExists", "x"))
    spawner = spawner_for("alice", api)
    assert await spawner._make_create_pvc_request(spawner.get_pvc_manifest(), 5) is True


async def test_a_422_creating_the_pod_is_a_refusal() -> None:
    error = api_error(
        422, "Invalid", 'Pod "jupyter-alice" is invalid: spec.volumes[0].name: Invalid value',
        name="jupyter-alice", kind="Pod", causes=[{"field": "spec.volumes[0].name"}],
    )  # fmt: skip
    spawner = spawner_for("alice", FakeCoreV1(create_namespaced_pod=error))
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    with pytest.raises(KubernetesRefused) as refused:
        await spawner._make_create_pod_request(pod, 5)
    assert refused.value.kind == "Pod"
    assert "your notebook server" in refused.value.jupyterhub_message
    assert "(fields: spec.volumes[0].name)" in str(refused.value)


async def test_a_pod_the_server_asks_to_retry_is_retried_not_refused() -> None:
    spawner = spawner_for("alice", FakeCoreV1(create_namespaced_pod=api_error(429, "Slow", "x")))
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    assert await spawner._make_create_pod_request(pod, 5) is False


async def test_a_refused_api_token_secret_is_a_refusal() -> None:
    forbidden = api_error(403, "Forbidden", "secrets is forbidden: cannot create", kind="secrets")
    spawner = spawner_for("alice", FakeCoreV1())
    pod = V1Pod(metadata=V1ObjectMeta(name=spawner.pod_name))
    with (
        mock.patch.object(KubeApi, "get", mock.AsyncMock(return_value={"metadata": {"uid": "u"}})),
        mock.patch("dna_hub.hub.spawner.create_api_token_secret", side_effect=forbidden),
    ):
        with pytest.raises(KubernetesRefused) as refused:
            await spawner._make_create_pod_request(pod, 5)
    assert (refused.value.kind, refused.value.name) == ("Secret", spawner.api_token_secret)
    assert refused.value.reason == "forbidden"
    assert "credentials of your notebook server" in refused.value.jupyterhub_message


async def test_a_refusal_from_a_hook_is_explained_from_the_status() -> None:
    async def hook() -> None:  # e.g. a modify_pod_hook creating the home claim itself
        raise invalid_claim()

    with pytest.raises(KubernetesRefused) as refused:
        await refusals_explained(hook(), namespace=NS)
    assert str(refused.value).startswith(refused.value.jupyterhub_message)
    assert f"PersistentVolumeClaim {NS}/{CLAIM}" in str(refused.value)

    async def other() -> None:
        raise api_error(500, "InternalError", "etcd is down")

    with pytest.raises(ApiException):
        await refusals_explained(other())


def test_every_dna_hub_error_of_a_spawn_is_shown_in_the_users_words() -> None:
    """JupyterHub answers a spawn that fails within a second itself and shows only an
    HTTPError's message; every dna_hub error keeps its class and is made one."""
    from tornado import web

    from dna_hub.errors import NamingError, TeamNotAllowed
    from dna_hub.hub.spawn_errors import shown_by_jupyterhub

    refused = TeamNotAllowed("You may not start a notebook there.", "alice asked for x")
    shown = shown_by_jupyterhub(refused)
    assert isinstance(shown, TeamNotAllowed) and isinstance(shown, web.HTTPError)
    assert shown.status_code == 403 and shown.reason == "team"
    assert shown.jupyterhub_message == "You may not start a notebook there."
    assert str(shown) == str(refused)
    config = shown_by_jupyterhub(NamingError("No profile for you.", "bad template"))
    assert isinstance(config, NamingError) and config.status_code == 500
    assert shown_by_jupyterhub(shown) is shown
