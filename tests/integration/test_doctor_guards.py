"""``dna-hub doctor`` checks the admission guards by their effect (issue 18, item 1).

The test API server is Kubernetes 1.20, which serves no ValidatingAdmissionPolicy: doctor
must warn there (and still pass). Where it is served, a guard that is absent is a failure:
that path runs here against the real API server with the hub's identity by declaring the
API served (the only stand-in); the dry runs are real, and persist nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane
from dna_hub.cli import guard_check
from dna_hub.k8s.api import PROFILE, KubeApi
from tests.integration.test_doctor import config_file, doctor

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
def test_doctor_warns_where_no_guard_can_run(control_plane: ControlPlane, tmp_path: Path) -> None:
    result = doctor(control_plane.hub_kubeconfig, config_file(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [row for row in result.stdout.splitlines() if row.startswith("admission guards")]
    assert "  warn  " in line and "Kubernetes < 1.30" in line


@pytest.mark.controlplane
async def test_an_absent_guard_fails_where_guards_are_supported(
    hub_api: ApiClient, admin_api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def served(api: ApiClient, seconds: float) -> bool:
        return True

    monkeypatch.setattr(guard_check, "guards_supported", served)
    verdicts = await guard_check.check_guards(hub_api, "jupyterhub", 10)
    assert [v.ok for v in verdicts] == [False, False], verdicts
    assert all("absent" in v.detail and "kubectl apply" in v.fix for v in verdicts)
    # a dry run: nothing was created
    profile = PROBE.body["metadata"]["name"]
    assert await KubeApi(admin_api, request_timeout=10).get(PROFILE, profile) is None
