"""The released z2jh chart with our values: rendered by real Helm, validated, applied.

What ``helm upgrade --install -f helm-values/values.yaml -f site.yaml`` and ``kubectl apply -f
helm-values/hub-rbac.yaml`` do, on the test control plane (devstack/chart.py).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from devstack.chart import (
    ChartError,
    RenderedChart,
    apply_chart,
    local_overlay,
    render_chart,
    validate_objects,
)
from devstack.controlplane import ControlPlane, apply_object
from devstack.host_pods import pod_addresses, prepare_host_pod
from devstack.hub_image_env import REQUIREMENTS, HubImageEnv, hub_image_env
from devstack.paths import REPO_ROOT, shared_path

CONFIG_CHECK = Path(__file__).parents[1] / "support" / "hub_config_check.py"
OVERLAY = local_overlay(
    issuer="http://127.0.0.1:5556/", callback_url="http://127.0.0.1:8000/hub/oauth_callback"
)


@pytest.fixture(scope="module")
def rendered() -> RenderedChart:
    return render_chart(OVERLAY)


def test_the_chart_renders_with_our_values_and_every_object_is_valid(
    rendered: RenderedChart,
) -> None:
    validate_objects(rendered)
    assert rendered.kube_version == "1.28.0"
    kinds = rendered.kinds()
    for kind in ("apps/v1/Deployment", "v1/Secret", "v1/ConfigMap", "v1/ServiceAccount"):
        assert kinds[kind] >= 1, rendered.summary()
    # the user's values reach the hub through the chart's Secret, exactly as merged
    stored = yaml.safe_load(rendered.files_of("Secret", "hub")["values.yaml"])
    config = stored["hub"]["config"]
    assert config["JupyterHub"]["spawner_class"] == "dna"
    assert config["DnaOIDCAuthenticator"]["issuer"] == "http://127.0.0.1:5556/"
    assert config["DnaOIDCAuthenticator"]["allowed_groups"] == ["kubeflow-users"]
    hub = rendered.get("Deployment", "hub")["spec"]["template"]["spec"]
    assert hub["serviceAccountName"] == "hub"
    assert hub["containers"][0]["image"] == "localhost/dna-hub/hub:dev"
    # Helm's order: ServiceAccounts and the Secret before the Deployments that use them
    order = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert order.index(("ServiceAccount", "hub")) < order.index(("Deployment", "hub"))
    assert order.index(("Secret", "hub")) < order.index(("Deployment", "hub"))


@pytest.mark.parametrize(
    ("overlay", "named"),
    [
        ({"singleuser": {"storag": {"type": "none"}}}, "storag"),
        ({"hub": {"networkPolicy": {"enabled": "yes"}}}, "enabled"),
    ],
)
def test_values_the_chart_schema_refuses_fail_naming_the_key(
    overlay: dict[str, Any], named: str
) -> None:
    with pytest.raises(ChartError, match=named):
        render_chart(OVERLAY, overlay)


def test_an_invalid_rendered_object_fails_naming_it(rendered: RenderedChart) -> None:
    broken = RenderedChart(
        values=rendered.values,
        objects=[*rendered.objects, {**rendered.get("Service", "hub"), "spek": {}}],
        hooks=[],
        kube_version=rendered.kube_version,
    )
    with pytest.raises(ChartError, match=r"Service jupyterhub/hub.*spek"):
        validate_objects(broken)


@pytest.mark.controlplane
async def test_the_chart_applies_to_the_control_plane_and_binds_the_hub_rbac(
    control_plane: ControlPlane, admin_api: ApiClient, rendered: RenderedChart
) -> None:
    applied = await apply_chart(admin_api, rendered)
    print(rendered.summary())
    print(applied.report())
    # the 1.37 test server serves every kind the chart renders, policy/v1
    # PodDisruptionBudgets included (1.20 did not)
    assert applied.unserved == []
    assert any(o["kind"] == "PodDisruptionBudget" for o in rendered.all_objects())
    assert len(applied.applied) == len(rendered.all_objects()) - len(applied.unserved) + 2
    apps = client.AppsV1Api(admin_api)
    hub = await apps.read_namespaced_deployment("hub", "jupyterhub")
    assert hub.spec.template.spec.service_account_name == "hub"
    rbac = client.RbacAuthorizationV1Api(admin_api)
    binding = await rbac.read_cluster_role_binding("dna-hub")
    assert [(s.kind, s.namespace, s.name) for s in binding.subjects] == [
        ("ServiceAccount", "jupyterhub", "hub")
    ]
    # the chart's hub ServiceAccount is the identity hub-rbac.yaml binds: ask as it
    token = await client.CoreV1Api(admin_api).create_namespaced_service_account_token(
        "hub",
        "jupyterhub",
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    review = {
        "spec": {
            "resourceAttributes": {
                "verb": "create",
                "resource": "persistentvolumeclaims",
                "namespace": "kubeflow-alice",
            }
        }
    }
    configuration = control_plane.hub_configuration()
    configuration.api_key = {"BearerToken": f"Bearer {token.status.token}"}
    async with ApiClient(configuration) as as_hub:
        answer = await client.AuthorizationV1Api(as_hub).create_self_subject_access_review(review)
    assert answer.status.allowed, answer.status


# --- the chart's own jupyterhub_config.py, in the hub image's Python environment ------------


async def create_oidc_secret(admin_api: ApiClient, value: str) -> None:
    """docs/deploy.md step 3: the OIDC client secret, created out of band."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dna-hub-oidc", "namespace": "jupyterhub"},
        "stringData": {"client-secret": value},
    }
    await apply_object(admin_api, body)


@pytest.fixture(scope="module")
def hub_env() -> HubImageEnv:
    return hub_image_env()


async def check_chart_config(
    control_plane: ControlPlane,
    admin_api: ApiClient,
    hub_env: HubImageEnv,
    *overlays: dict[str, Any],
    tmp_path: Path,
) -> tuple[dict[str, Any] | None, str]:
    """Render+apply with ``overlays``, load the chart's config in the hub pod's setting."""
    try:
        rendered = render_chart(OVERLAY, *overlays)
    except ChartError as e:  # helm refuses the values already (the chart's schema)
        return None, str(e)
    await apply_chart(admin_api, rendered)
    await create_oidc_secret(admin_api, "not-the-real-secret")
    addresses = pod_addresses(["hub", "proxy"])
    pod = await prepare_host_pod(
        admin_api,
        rendered.get("Deployment", "hub"),
        address=addresses["hub"],
        backing={"hub": addresses["hub"], "proxy-api": addresses["proxy"]},
        executables={"jupyterhub": [str(hub_env.python.parent / "jupyterhub")]},
        api_server=control_plane.server,
        ca_file=control_plane.ca_file,
        base_env={"PYTHONPATH": str(hub_env.dna_hub_dir)},
        root=tmp_path / "hub-pod",
    )
    report_file = tmp_path / "report.json"
    pod.argv = [str(hub_env.python), str(CONFIG_CHECK), str(report_file)]
    result = pod.run(timeout=120)
    output = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    if not report_file.exists():
        return None, output
    return json.loads(report_file.read_text()), output


@pytest.mark.controlplane
async def test_the_charts_own_config_runs_our_classes_on_the_hub_images_versions(
    control_plane: ControlPlane, admin_api: ApiClient, hub_env: HubImageEnv, tmp_path: Path
) -> None:
    report, output = await check_chart_config(control_plane, admin_api, hub_env, tmp_path=tmp_path)
    assert report is not None, output
    # the hub image pins its own JupyterHub over the chart's 5.5.0 (images/hub/requirements.txt)
    assert report["jupyterhub"] == "5.5.4"
    assert report["problems"] == [], output
    assert report["spawner_class"] == "dna_hub.hub.spawner.DnaSpawner"
    assert report["authenticator_class"] == "dna_hub.auth.oidc.DnaOIDCAuthenticator"
    assert report["authenticator"]["manage_groups"] is True
    assert report["authenticator"]["allowed_groups"] == ["kubeflow-users"]
    assert report["hub_connect_url"] == "http://hub:8081"  # the chart's short name
    spawner = report["spawner"]
    assert spawner["namespace"] == "kubeflow-alice"
    assert spawner["pod_labels"]["access-ml-pipeline"] == "true"
    assert spawner["pod_labels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert spawner["env"]["JUPYTERHUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"
    assert spawner["storage_pvc_ensure"] is True and spawner["pvc_name"] == "claim-alice"
    assert spawner["delete_pvc"] is False
    assert spawner["service_account"] == "default-editor"
    assert spawner["image"] == "localhost/dna-hub/notebook:dev"
    assert spawner["scheduler_name"] is None  # no user-scheduler in the local overlay


@pytest.mark.controlplane
@pytest.mark.parametrize(
    ("overlay", "named"),
    [
        (
            {"hub": {"config": {"DnaSpawner": {"namespace_templat": "kubeflow-{username}"}}}},
            "DnaSpawner.namespace_templat: not a configurable trait",
        ),
        (
            {"hub": {"config": {"DnaOIDCAuthenticator": {"groups_clam": "groups"}}}},
            "DnaOIDCAuthenticator.groups_clam: not a configurable trait",
        ),
        ({"hub": {"config": {"DnaSpawnr": {"kfp_namespace": "kf"}}}}, "hub.config.DnaSpawnr"),
        # caught by the chart's schema before anything runs
        ({"hub": {"config": {"dnaSpawner": {"kfp_namespace": "kf"}}}}, "'dnaSpawner' not allowed"),
        (
            {"hub": {"config": {"DnaOIDCAuthenticator": {"manage_groups": False}}}},
            "_groups requires DnaOIDCAuthenticator.manage_groups",
        ),
    ],
    ids=["misspelt-spawner-trait", "misspelt-auth-trait", "unknown-class", "lowercase", "groups"],
)
async def test_a_values_change_that_breaks_the_hub_fails_naming_it(
    control_plane: ControlPlane,
    admin_api: ApiClient,
    hub_env: HubImageEnv,
    tmp_path: Path,
    overlay: dict[str, Any],
    named: str,
) -> None:
    report, output = await check_chart_config(
        control_plane, admin_api, hub_env, overlay, tmp_path=tmp_path
    )
    found = "\n".join(report["problems"]) if report is not None else output
    assert named in found, found


def test_pyproject_lower_bounds_are_the_hub_images_pins() -> None:
    """The oldest versions dna_hub allows are the ones the deployment tests run."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    from devstack.hub_image_env import IMAGE_PINS

    # what the image runs: the chart's frozen requirements, then the image's own security
    # pins over them (images/hub/requirements.txt)
    pins = {}
    for file in (shared_path(*REQUIREMENTS), IMAGE_PINS):
        for line in file.read_text().splitlines():
            line = line.split("#")[0].strip().removesuffix("\\").strip()
            if "==" in line and not line.startswith("--"):
                name, version = line.split("==")
                pins[canonicalize_name(name)] = Version(version.strip())
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wrong = []
    for dep in pyproject["project"]["dependencies"]:
        req = Requirement(dep)
        pinned = pins.get(canonicalize_name(req.name))
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if pinned is None or len(lower) != 1:
            wrong.append(f"{dep}: the hub image pins {pinned}, lower bounds {lower}")
            continue
        (bound,) = lower
        # at least major.minor: ">=5" would admit 5.0, which nothing tests
        precise = len(bound.release) >= 2
        if (
            not precise
            or pinned not in req.specifier
            or pinned.release[: len(bound.release)] != bound.release
        ):
            wrong.append(f"{dep}: lower bound {bound}, the hub image runs {pinned}")
    assert not wrong, "\n".join(wrong)
