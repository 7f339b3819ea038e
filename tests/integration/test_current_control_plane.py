"""The devstack control plane is a current Kubernetes (#22), and what that means for dna_hub.

* the API server is 1.37.2 (built by devstack/gobuild/build.sh), serving APIs a 1.20 one
  did not: policy/v1 PodDisruptionBudget (the chart renders them) and
  admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (dna_hub's hub guard);
* a profile namespace made by the profile controller (stand-in, with the devstack's
  namespace-labels file) enforces Pod Security "restricted", and the API server's
  PodSecurity admission holds it: a privileged or root pod is refused there, while the
  notebook pod dna_hub renders (``dna-hub render --pod``) is admitted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import yaml

from devstack.controlplane import KUBE_VERSION, ControlPlane, apply_object
from devstack.standins import JSON, Kube, KubeError
from devstack.standins_process import StandIns
from tests.integration.test_standins import delete_profile, wait_profile_ready
from tests.support.pod_security import restricted

pytestmark = [pytest.mark.controlplane]

ENFORCE = "pod-security.kubernetes.io/enforce"


def render(user: str, owner: str) -> list[JSON]:
    """``dna-hub render --pod`` (no cluster), as the objects it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", "render", "--user", user, "--owner", owner, "--pod"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


async def test_version_is_current(standins_kube: Kube) -> None:
    version = await standins_kube.get("/version")
    assert version["gitVersion"] == f"v{KUBE_VERSION}" == "v1.37.2"


@pytest.mark.parametrize(
    ("group_version", "kind"),
    [
        ("policy/v1", "PodDisruptionBudget"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
    ],
)
async def test_current_apis_are_served(standins_kube: Kube, group_version: str, kind: str) -> None:
    resources = await standins_kube.get(f"/apis/{group_version}")
    assert kind in {r["kind"] for r in resources["resources"]}


@pytest_asyncio.fixture(loop_scope="session")
async def rendered_namespace(
    control_plane: ControlPlane,
    standins: StandIns,
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> AsyncIterator[tuple[str, JSON]]:
    """A login's Profile (as ``dna-hub render`` prints it) applied and reconciled by the
    profile controller stand-in; yields its namespace and the rendered notebook Pod."""
    user = unique_name("psa")
    docs = render(user, f"{user}@example.com")
    profile = next(d for d in docs if d["kind"] == "Profile")
    pod = next(d for d in docs if d["kind"] == "Pod")
    name = profile["metadata"]["name"]
    async with control_plane.admin_client() as api:
        await apply_object(api, profile)
    try:
        await wait_profile_ready(standins_kube, name)
        yield name, pod
    finally:
        await delete_profile(standins_kube, name)


async def test_profile_namespace_enforces_restricted(
    rendered_namespace: tuple[str, JSON], standins_kube: Kube
) -> None:
    namespace, _ = rendered_namespace
    ns = await standins_kube.get(f"/api/v1/namespaces/{namespace}")
    labels = ns["metadata"]["labels"]
    assert labels[ENFORCE] == "restricted"
    assert labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
    assert labels["istio-injection"] == "enabled"


def _plain_pod(name: str, **container_security: Any) -> JSON:
    container: JSON = {"name": "main", "image": "python:3.11", "command": ["sleep", "60"]}
    pod = restricted(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [container], "automountServiceAccountToken": False},
        }
    )
    container["securityContext"].update(container_security)
    return pod


async def _dry_run_create(kube: Kube, namespace: str, pod: JSON) -> JSON:
    return await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        query=[("dryRun", "All"), ("fieldManager", "dna-hub-tests")],
        body=pod,
    )


async def test_the_restricted_baseline_pod_is_admitted(
    rendered_namespace: tuple[str, JSON], standins_kube: Kube
) -> None:
    """The control case of the refusals below: the same pod, compliant, is admitted."""
    namespace, _ = rendered_namespace
    created = await _dry_run_create(standins_kube, namespace, _plain_pod("compliant"))
    assert created["metadata"]["namespace"] == namespace


@pytest.mark.parametrize(
    ("case", "container_security", "violation"),
    [
        ("privileged", {"privileged": True, "allowPrivilegeEscalation": True}, "privileged"),
        ("root", {"runAsUser": 0, "runAsNonRoot": False}, "runAsUser=0"),
    ],
)
async def test_non_compliant_pod_is_refused_by_the_api_server(
    rendered_namespace: tuple[str, JSON],
    standins_kube: Kube,
    case: str,
    container_security: JSON,
    violation: str,
) -> None:
    namespace, _ = rendered_namespace
    with pytest.raises(KubeError) as refused:
        await _dry_run_create(standins_kube, namespace, _plain_pod(case, **container_security))
    assert refused.value.status == 403
    message = str(refused.value)
    assert 'violates PodSecurity "restricted:latest"' in message
    assert violation in message


async def test_the_pod_dna_hub_renders_is_admitted(
    rendered_namespace: tuple[str, JSON], standins_kube: Kube
) -> None:
    namespace, pod = rendered_namespace
    assert pod["metadata"]["namespace"] == namespace
    created = await _dry_run_create(standins_kube, namespace, pod)
    assert created["metadata"]["name"] == pod["metadata"]["name"]
    # what PodSecurity judged: the rendered security settings, not defaults
    assert created["spec"]["securityContext"]["runAsNonRoot"] is True
