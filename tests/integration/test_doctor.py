"""``dna-hub doctor`` on the local control plane: good setups pass, broken ones say the fix."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane, _write_kubeconfig, apply_object
from devstack.paths import shared_path
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS
from dna_hub.cli import guard_check
from dna_hub.policy.permissions import HUB_PERMISSIONS, hub_permissions
from dna_hub.policy.platform import PlatformValues
from tests.integration.test_hub_rbac import token_without

pytestmark = [pytest.mark.controlplane, pytest.mark.usefixtures("guards_in_force")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guards_in_force(
    guards: float, hub_api_module: ApiClient, admin_api_module: ApiClient
) -> AsyncIterator[None]:
    """Both guard files applied (as a platform engineer does on Kubernetes >= 1.30) and
    already refusing, with a profile namespace (restricted) for doctor's object probes:
    doctor fails a cluster that serves ValidatingAdmissionPolicy without them
    (tests/integration/test_doctor_guards.py)."""
    name = f"kubeflow-doctor-{os.getpid()}"
    body = {"metadata": {"name": name, "labels": dict(DEFAULT_NAMESPACE_LABELS)}}
    await apply_object(admin_api_module, {"apiVersion": "v1", "kind": "Namespace", **body})
    values = PlatformValues()
    deadline = asyncio.get_running_loop().time() + 60
    try:
        while True:
            verdicts = await guard_check.check_guards({"hub": hub_api_module}, values, 10)
            if all(v.ok or v.skipped for v in verdicts) and not any(
                v.skipped and "no profile namespace" in v.detail for v in verdicts
            ):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the guards never took effect: {verdicts}")
            await asyncio.sleep(0.5)
        yield
    finally:
        await admin_api_module.call_api(
            f"/api/v1/namespaces/{name}", "DELETE", auth_settings=["BearerToken"]
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin_api_module(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    async with control_plane.admin_client() as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hub_api_module(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    async with control_plane.hub_client() as api:
        yield api


GOOD_CONFIG = """c = get_config()  # noqa
c.DnaSpawner.kfp_endpoint = "http://localhost:8888"
c.DnaSpawner.kfp_ui_endpoint = "http://localhost:80"
"""


def doctor(
    kubeconfig: Path, config: Path | None = None, *, in_cluster: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run doctor; ``in_cluster`` as in the hub's pod, where Kubernetes sets this variable."""
    args = [sys.executable, "-m", "dna_hub.cli", "doctor", "--kubeconfig", str(kubeconfig)]
    if config:
        args += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    if in_cluster:
        env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, env=env)


def config_file(tmp_path: Path, text: str = GOOD_CONFIG) -> Path:
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(text)
    return path


def rows(output: str) -> dict[str, str]:
    """CHECK name -> 'pass' / 'FAIL'."""
    result = {}
    for line in output.splitlines():
        for word in ("  pass  ", "  FAIL  "):
            if word in line:
                result[line.split(word)[0].strip()] = word.strip()
    return result


def test_good_setup_passes(control_plane: ControlPlane, tmp_path: Path) -> None:
    result = doctor(control_plane.hub_kubeconfig, config_file(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout)
    assert table["API server reachable"] == "pass"
    assert table["Profile (profiles.kubeflow.org/v1) served"] == "pass"
    assert table["may create profiles.kubeflow.org in all namespaces"] == "pass"
    # only what the configured features need (no teams, no legacy EnvoyFilter here)
    wanted = hub_permissions(teams=False, legacy_envoy_filter=False)
    assert sum(name.startswith("may ") for name in table) == len(wanted)
    # every policy that confines the hub, probed through the API server
    assert table["admission guard dna-hub-hub-allowlist in force (hub)"] == "pass"
    assert table["admission guard dna-hub-pods in force (hub)"] == "pass"
    assert table["profile namespaces enforce Pod Security restricted"] == "pass"
    assert "0 failed" in result.stdout


def test_default_kfp_endpoints_that_do_not_resolve_fail(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    result = doctor(
        control_plane.hub_kubeconfig,
        config_file(tmp_path, "c = get_config()  # noqa\n"),
        in_cluster=True,
    )
    assert result.returncode == 1
    table = rows(result.stdout)
    assert table["kfp_endpoint host 'ml-pipeline.kubeflow' resolves"] == "FAIL"
    assert "fix: set DnaSpawner.kfp_endpoint" in result.stdout


def test_outside_the_cluster_in_cluster_names_are_not_blamed_on_the_config(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    result = doctor(
        control_plane.hub_kubeconfig, config_file(tmp_path, "c = get_config()  # noqa\n")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "set DnaSpawner.kfp_endpoint" not in result.stdout
    (line,) = [x for x in result.stdout.splitlines() if "'ml-pipeline.kubeflow' resolves" in x]
    assert "  skip  " in line and "outside the cluster" in line
    assert "exec deploy/hub -- dna-hub doctor" in result.stdout
    # the two in-cluster names, and the sync job's three probes (doctor runs as the hub:
    # an operator probes those with --as, test_doctor_guards.py)
    assert "0 failed, 5 not checked" in result.stdout


async def test_a_missing_rbac_rule_is_reported_with_its_fix(
    admin_api: ApiClient, control_plane: ControlPlane, tmp_path: Path, unique_name: Callable
) -> None:
    (missing,) = [p for p in HUB_PERMISSIONS if (p.resource, p.verb) == ("profiles", "create")]
    token = await token_without(admin_api, missing, unique_name("doc"))
    kubeconfig = _write_kubeconfig(
        tmp_path / "kubeconfig",
        server=control_plane.server,
        ca_file=control_plane.ca_file,
        user="limited",
        credentials={"token": token},
    )
    result = await asyncio.to_thread(doctor, kubeconfig, config_file(tmp_path))
    assert result.returncode == 1, result.stdout
    table = rows(result.stdout)
    assert table["may create profiles.kubeflow.org in all namespaces"] == "FAIL"
    # The guards confine the hub's and the sync job's own identities, not this one: doctor
    # says it cannot probe them as it (not checked, with how), rather than pass or fail them.
    assert [name for name, r in table.items() if r == "FAIL"] == [
        "may create profiles.kubeflow.org in all namespaces",
    ]
    assert "dna-hub manifests --config <hub config> | kubectl apply -f -" in result.stdout
    assert "dna-hub doctor --as system:serviceaccount:jupyterhub:hub" in result.stdout
    assert "1 failed" in result.stdout


async def wait_envoyfilters_served(api: ApiClient, served: bool, timeout: float = 60) -> None:
    """Until API discovery does (not) list envoyfilters — or fail, saying so."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            listing = await api.call_api(
                "/apis/networking.istio.io/v1alpha3",
                "GET",
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=10,
            )
            names = {r.get("name") for r in listing.get("resources", [])}
        except ApiException as e:
            if e.status != 404:
                raise
            names = set()
        if ("envoyfilters" in names) == served:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"envoyfilters {'not ' if served else ''}served after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def test_a_missing_crd_is_reported_with_its_fix(
    admin_api: ApiClient, control_plane: ControlPlane, tmp_path: Path
) -> None:
    crd_name = "envoyfilters.networking.istio.io"
    crd: dict[str, Any] = yaml.safe_load(shared_path("crds", f"{crd_name}.yaml").read_text())
    extensions = ApiextensionsV1Api(admin_api)
    await extensions.delete_custom_resource_definition(crd_name)
    try:
        await wait_envoyfilters_served(admin_api, False)  # what doctor reads: discovery
        config = config_file(tmp_path, GOOD_CONFIG + "c.DnaSpawner.legacy_envoy_filter = True\n")
        result = await asyncio.to_thread(doctor, control_plane.hub_kubeconfig, config)
        assert result.returncode == 1, result.stdout
        table = rows(result.stdout)
        assert table["EnvoyFilter (envoyfilters.networking.istio.io/v1alpha3) served"] == "FAIL"
        assert "fix: install Istio's CRDs (EnvoyFilter)" in result.stdout
        # without the legacy setting, EnvoyFilter is not needed at all
        result = await asyncio.to_thread(
            doctor, control_plane.hub_kubeconfig, config_file(tmp_path)
        )
        assert result.returncode == 0, result.stdout
    finally:
        await apply_object(admin_api, crd)
        await wait_envoyfilters_served(admin_api, True)  # later tests apply EnvoyFilters
