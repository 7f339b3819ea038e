"""``dna-hub doctor`` checks the admission guards by their effect (issue 24, item 6).

The test API server (Kubernetes 1.37) serves ValidatingAdmissionPolicy, and the control
plane applies both guard files at start. Here: every policy, for each identity it confines,
is probed through the real API server (dry runs: nothing persists) — as the hub, and by an
operator impersonating the hub and the sync job (``--as``); a guard that is absent fails,
naming the policy; a profile namespace that does not enforce Pod Security ``restricted``
fails, by name; below 1.30 (no ValidatingAdmissionPolicy served — the one stand-in: the API
declared not served) doctor FAILS: such clusters are unsupported.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane, load_manifests
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS
from dna_hub.cli import guard_check
from dna_hub.policy.platform import SHIPPED, PlatformValues, platform_objects
from tests.integration.test_guard_replay import call, guard_path

PSA = "pod-security.kubernetes.io/enforce"
POLICIES = {
    o["metadata"]["name"]
    for name in ("hub-namespace-guard.yaml", "hub-object-guard.yaml")
    for o in platform_objects(SHIPPED)[name]
    if o["kind"] == "ValidatingAdmissionPolicy"
}


def test_verdicts() -> None:
    probe = guard_check.probes(PlatformValues(), "kubeflow-alice")[0]
    assert not guard_check.verdict(probe, None).ok  # admitted: the guard is absent
    refused = ApiException(status=422, reason="Invalid")
    refused.body = (
        f"ValidatingAdmissionPolicy '{probe.policy}' with binding '{probe.policy}' "
        "denied request: ..."
    )
    assert guard_check.verdict(probe, refused).ok
    other = ApiException(status=422, reason="Invalid")
    other.body = "ValidatingAdmissionPolicy 'dna-hub-pods' with binding 'x' denied request"
    assert not guard_check.verdict(probe, other).ok  # refused, but by another policy
    rbac = ApiException(status=403, reason="Forbidden")
    rbac.body = 'limitranges is forbidden: User "x" cannot create resource'
    failed = guard_check.verdict(probe, rbac)
    assert not failed.ok and "dna-hub manifests" in failed.fix


def test_pod_security_verdicts_name_every_open_namespace() -> None:
    def ns(name: str, level: str | None) -> dict[str, Any]:
        labels = {PSA: level} if level else {}
        return {"metadata": {"name": name, "labels": labels}}

    (ok,) = guard_check.pod_security_verdicts([ns("kubeflow-a", "restricted")])
    assert ok.ok
    (bad,) = guard_check.pod_security_verdicts(
        [ns("kubeflow-a", "restricted"), ns("kubeflow-b", "baseline"), ns("kubeflow-c", None)]
    )
    assert not bad.ok
    assert bad.detail == "not enforcing: kubeflow-b (baseline), kubeflow-c (unset)"


@pytest_asyncio.fixture(loop_scope="session")
async def target(admin_api: ApiClient, unique_name: Callable[..., str]) -> AsyncIterator[str]:
    """A profile namespace (restricted) for the object probes."""
    name = unique_name("kubeflow-doc")
    body = {"metadata": {"name": name, "labels": dict(DEFAULT_NAMESPACE_LABELS)}}
    assert (await call(admin_api, "POST", "/api/v1/namespaces", body)).admitted
    try:
        yield name
    finally:
        await call(admin_api, "DELETE", f"/api/v1/namespaces/{name}")


def impersonating(api: ApiClient, identity: str) -> ApiClient:
    return ApiClient(api.configuration, header_name="Impersonate-User", header_value=identity)


async def settled(clients: dict[str, ApiClient], values: PlatformValues) -> list[Any]:
    """The verdicts once the API server has loaded the guards (its informer lags a write)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        verdicts = await guard_check.check_guards(clients, values, 10)
        if all(v.ok or v.skipped for v in verdicts):
            return verdicts
        if asyncio.get_running_loop().time() > deadline:
            return verdicts
        await asyncio.sleep(0.5)


@pytest.mark.controlplane
async def test_every_policy_is_probed_for_the_hub_and_the_sync_job(
    target: str, admin_api: ApiClient
) -> None:
    values = PlatformValues(legacy_ml_pipeline_policy=True)
    made = await call(admin_api, "POST", "/api/v1/namespaces", {"metadata": {"name": "kubeflow"}})
    assert made.admitted or made.status == 409, made  # the KFP namespace; kept, as elsewhere
    hub = impersonating(admin_api, values.hub.username)
    sync = impersonating(admin_api, values.sync.username)
    async with hub, sync:
        verdicts = await settled({"hub": hub, "sync": sync}, values)
    assert all(v.ok and not v.skipped for v in verdicts), [v for v in verdicts if not v.ok]
    probed = {v.name.removeprefix("admission guard ").split(" in force")[0] for v in verdicts}
    assert probed >= POLICIES
    assert {v.name for v in verdicts if v.name.endswith("(sync)")} == {
        "admission guard dna-hub-sync-allowlist in force (sync)",
        "admission guard dna-hub-rbac in force (sync)",
        "admission guard dna-hub-poddefaults in force (sync)",
    }


@pytest.mark.controlplane
async def test_doctor_as_an_operator_probes_both_identities(
    target: str, control_plane: ControlPlane
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "dna_hub.cli",
            "doctor",
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            "--as",
            "system:serviceaccount:jupyterhub:hub",
            "--as",
            "system:serviceaccount:jupyterhub:dna-hub-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("admission guard")]
    assert len(lines) == 10, result.stdout  # 7 hub probes (no legacy policies) + 3 sync
    assert all("  pass  " in line for line in lines), result.stdout


@pytest.mark.controlplane
async def test_a_profile_namespace_not_enforcing_restricted_fails(
    target: str, admin_api: ApiClient, hub_api: ApiClient
) -> None:
    patch = {"metadata": {"labels": {PSA: "baseline"}}}
    outcome = await call(
        admin_api,
        "PATCH",
        f"/api/v1/namespaces/{target}",
        patch,
        content_type="application/merge-patch+json",
    )
    assert outcome.admitted, outcome
    verdicts = await guard_check.check_guards({"hub": hub_api}, PlatformValues(), 10)
    (psa,) = [v for v in verdicts if "Pod Security" in v.name]
    assert not psa.ok and f"{target} (baseline)" in psa.detail
    assert "kubectl label namespace" in psa.fix


@pytest.mark.controlplane
async def test_doctor_fails_where_no_guard_can_run(
    hub_api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_served(api: ApiClient, seconds: float) -> bool:
        return False

    monkeypatch.setattr(guard_check, "guards_supported", not_served)
    (verdict,) = await guard_check.check_guards({"hub": hub_api}, PlatformValues(), 10)
    assert not verdict.ok and not verdict.skipped, verdict
    assert "Kubernetes < 1.30" in verdict.detail and "unsupported" in verdict.fix


@pytest.mark.controlplane
async def test_the_api_server_serves_the_guards(hub_api: ApiClient) -> None:
    assert await guard_check.guards_supported(hub_api, 10)


@pytest.mark.controlplane
async def test_an_absent_guard_fails(
    target: str, hub_api: ApiClient, admin_api: ApiClient, control_plane: ControlPlane
) -> None:
    """The pods policy removed (its binding too): doctor fails naming it; the others pass.
    Put back afterwards, exactly as the control plane applied it."""
    from devstack.controlplane import GUARD_FILES, apply_object

    pods = [
        o for f in GUARD_FILES for o in load_manifests(f) if o["metadata"]["name"] == "dna-hub-pods"
    ]
    assert len(pods) == 2
    for obj in pods:
        assert (await call(admin_api, "DELETE", guard_path(obj))).admitted
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            verdicts = await guard_check.check_guards({"hub": hub_api}, PlatformValues(), 10)
            (pod_verdict,) = [v for v in verdicts if "dna-hub-pods" in v.name]
            if not pod_verdict.ok or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert not pod_verdict.ok and "absent" in pod_verdict.detail, pod_verdict
        assert "dna-hub manifests" in pod_verdict.fix
        others = [v for v in verdicts if not v.skipped and v is not pod_verdict]
        assert others and all(v.ok for v in others), others
    finally:
        for obj in pods:
            await apply_object(admin_api, obj)
    # a dry run: the probe pod was never created
    listing = await call(admin_api, "GET", f"/api/v1/namespaces/{target}/pods/dna-hub-doctor-probe")
    assert listing.status == 404
