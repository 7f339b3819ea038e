"""The released z2jh chart with our values: rendered by real Helm, validated, applied.

What ``helm upgrade --install -f helm-values/values.yaml -f site.yaml`` and ``kubectl apply -f
helm-values/hub-rbac.yaml`` do, on the test control plane (tests/support/chart.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from tests.support.chart import (
    ChartError,
    RenderedChart,
    apply_chart,
    local_overlay,
    render_chart,
    validate_objects,
)
from tests.support.controlplane import ControlPlane

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
    # the 1.20 test server serves everything but policy/v1 (PodDisruptionBudgets): listed
    assert applied.unserved == [
        f"policy/v1 PodDisruptionBudget jupyterhub/{o['metadata']['name']}"
        for o in rendered.all_objects()
        if o["kind"] == "PodDisruptionBudget"
    ]
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
