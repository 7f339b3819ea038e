"""``dna-hub doctor`` checks the admission guards by their effect (issue 18, item 1).

The test API server (Kubernetes 1.37) serves ValidatingAdmissionPolicy: there a guard that
is absent is a failure and one in force passes — both against the real API server with the
hub's identity; the dry runs are real, and persist nothing. Below 1.30 no guard can run and
doctor warns: that path is reached by declaring the API not served (the only stand-in).
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.cli import guard_check
from dna_hub.k8s.api import PROFILE, KubeApi

PROBE = guard_check.probes("jupyterhub")[0]


def test_verdicts() -> None:
    assert not guard_check.verdict(PROBE, None).ok  # admitted: the guard is absent
    refused = ApiException(status=422, reason="Invalid")
    refused.body = (
        "ValidatingAdmissionPolicy 'dna-hub-profiles' with binding 'dna-hub-profiles' "
        "denied request: no Profile plugins"
    )
    assert guard_check.verdict(PROBE, refused).ok
    rbac = ApiException(status=403, reason="Forbidden")
    rbac.body = 'profiles.kubeflow.org is forbidden: User "x" cannot create resource'
    failed = guard_check.verdict(PROBE, rbac)
    assert not failed.ok and "hub-object-guard.yaml" in failed.fix


@pytest.mark.controlplane
async def test_doctor_warns_where_no_guard_can_run(
    hub_api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_served(api: ApiClient, seconds: float) -> bool:
        return False

    monkeypatch.setattr(guard_check, "guards_supported", not_served)
    (verdict,) = await guard_check.check_guards(hub_api, "jupyterhub", 10)
    assert verdict.ok and verdict.warning, verdict
    assert "Kubernetes < 1.30" in verdict.detail


@pytest.mark.controlplane
async def test_the_api_server_serves_the_guards(hub_api: ApiClient) -> None:
    assert await guard_check.guards_supported(hub_api, 10)


@pytest.mark.controlplane
async def test_an_absent_guard_fails_where_guards_are_supported(
    hub_api: ApiClient, admin_api: ApiClient
) -> None:
    # No guard object exists here (a module that applied them removed them); the API
    # server's policy cache may still hold one deleted a moment ago: wait for it to go.
    api = KubeApi(admin_api, request_timeout=10)
    for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        listing = await api.api_client.call_api(
            f"/apis/admissionregistration.k8s.io/v1/{kind}",
            "GET",
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        assert not [i for i in listing["items"] if i["metadata"]["name"].startswith("dna-hub")]
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        verdicts = await guard_check.check_guards(hub_api, "jupyterhub", 10)
        if not any(v.ok for v in verdicts) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert [v.ok for v in verdicts] == [False, False], verdicts
    assert all("absent" in v.detail and "kubectl apply" in v.fix for v in verdicts)
    # a dry run: nothing was created
    profile = PROBE.body["metadata"]["name"]
    assert await KubeApi(admin_api, request_timeout=10).get(PROFILE, profile) is None
