"""What z2jh's own jupyterhub_config.py does to our classes, setting by setting.

The chart sets some KubeSpawner/JupyterHub traits from its values whatever
``helm-values/values.yaml`` says (``extra_labels`` from ``singleuser.extraLabels``,
``hub_connect_url`` = ``http://hub:8081``, dynamic home storage). Each test below applies
exactly that setting to DnaSpawner/DnaOIDCAuthenticator and checks that what the Kubeflow
namespace policy needs still holds. The chart's real config file, run with the rendered
chart, is exercised in tests/e2e/test_chart_deploy.py.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jupyterhub import orm
from jupyterhub.objects import Server
from traitlets import TraitError
from traitlets.config import Config

from devstack.paths import REPO_ROOT, shared_path
from dna_hub import DnaOIDCAuthenticator, DnaSpawner
from dna_hub.policy.hub_url import qualify_service_url

VALUES = yaml.safe_load((REPO_ROOT / "helm-values" / "values.yaml").read_text())


def chart_default(dotted: str) -> Any:
    tree = yaml.safe_load(shared_path("schemas", "z2jh-values.defaults.yaml").read_text())
    for part in dotted.split("."):
        tree = tree[part]
    return tree


class HubUser(SimpleNamespace):
    async def get_auth_state(self) -> dict[str, Any]:
        return {"kubeflow_userid": "alice@example.com"}


@pytest.fixture
def chart_spawner(control_plane: Any) -> Callable[..., DnaSpawner]:
    """DnaSpawners configured through ``c.KubeSpawner`` as the chart configures them.

    Constructing a KubeSpawner loads the process-wide Kubernetes client configuration once
    (and caches its clients), so these use the session's control plane, never a dummy one;
    nothing here calls the API.
    """
    return make_chart_spawner


def make_chart_spawner(api_url: str = "http://hub:8081/hub/api", **config: Any) -> DnaSpawner:
    user = HubUser(name="alice", escaped_name="alice", id=7, url="/user/alice/", groups=[])
    hub = SimpleNamespace(public_host="", url="/hub/", base_url="/hub/", api_url=api_url)
    spawner = DnaSpawner(
        _mock=True,
        user=user,
        hub=hub,
        orm_spawner=SimpleNamespace(name="", display_name="", server=None, last_activity=None),
        api_token="not-a-real-token",
        oauth_client_id="jupyterhub-user-alice",
        hub_namespace="jupyterhub",
        config=Config({"KubeSpawner": config}),
    )
    spawner.server = Server(
        orm_server=orm.Server(proto="http", ip="", port=0, base_url="/user/alice/", cookie_name="")
    )
    return spawner


# --- hub.config.DnaOIDCAuthenticator: allowed_groups / admin_groups ------------------------


def test_the_values_group_settings_let_the_authenticator_start() -> None:
    settings = VALUES["hub"]["config"]["DnaOIDCAuthenticator"]
    assert settings["allowed_groups"]
    # operators get hub.loadRoles' dna-hub-operator role by group, not JupyterHub admin
    assert "admin_groups" not in settings
    authenticator = DnaOIDCAuthenticator(config=Config({"DnaOIDCAuthenticator": settings}))
    assert authenticator.manage_groups is True
    assert authenticator.allowed_groups == set(settings["allowed_groups"])
    # admin_groups, where a site sets them, also start only with managed groups
    with_admins = Config({"DnaOIDCAuthenticator": {**settings, "admin_groups": ["ops"]}})
    assert DnaOIDCAuthenticator(config=with_admins).admin_groups == {"ops"}


def test_groups_without_group_management_fail_naming_the_trait() -> None:
    settings = {"manage_groups": False, "allowed_groups": ["kubeflow-users"]}
    with pytest.raises((TraitError, ValueError), match="manage_groups"):
        DnaOIDCAuthenticator(config=Config({"DnaOIDCAuthenticator": settings}))


# --- singleuser.extraLabels → KubeSpawner.extra_labels -------------------------------------


@pytest.mark.parametrize(
    "extra_labels",
    [
        chart_default("singleuser.extraLabels"),
        {},
        {"team": "data-science", "access-ml-pipeline": "false"},
    ],
    ids=["chart-default", "empty", "overridden"],
)
@pytest.mark.controlplane
async def test_notebook_pods_always_carry_the_pipeline_access_label(
    chart_spawner: Callable[..., DnaSpawner], extra_labels: dict[str, str]
) -> None:
    spawner = chart_spawner(extra_labels=extra_labels)
    pod = await spawner.get_pod_manifest()
    labels = pod.metadata.labels
    assert labels["access-ml-pipeline"] == "true", labels
    for key, value in extra_labels.items():
        if key != "access-ml-pipeline":
            assert labels[key] == value


# --- JupyterHub.hub_connect_url = http://hub:8081 ------------------------------------------


@pytest.mark.controlplane
async def test_the_notebook_reaches_the_hub_api_by_a_namespace_qualified_name(
    chart_spawner: Callable[..., DnaSpawner],
) -> None:
    env = chart_spawner(api_url="http://hub:8081/hub/api").get_env()
    assert env["JUPYTERHUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"].startswith("http://hub.jupyterhub.svc:8081/hub/api/")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://hub:8081/hub/api", "http://hub.jupyterhub.svc:8081/hub/api"),
        ("http://hub/hub/api", "http://hub.jupyterhub.svc/hub/api"),
        ("https://u@hub:443/x?q=1", "https://u@hub.jupyterhub.svc:443/x?q=1"),
        ("http://hub.jupyterhub:8081/hub/api", "http://hub.jupyterhub:8081/hub/api"),
        ("http://hub.other.svc.cluster.local/", "http://hub.other.svc.cluster.local/"),
        ("http://10.0.0.7:8081/hub/api", "http://10.0.0.7:8081/hub/api"),
        ("http://[::1]:8081/hub/api", "http://[::1]:8081/hub/api"),
        ("http://localhost:8081/hub/api", "http://localhost:8081/hub/api"),
        ("/hub/api", "/hub/api"),
    ],
)
def test_qualify_service_url(url: str, expected: str) -> None:
    assert qualify_service_url(url, "jupyterhub") == expected


# --- singleuser.storage.type dynamic → KubeSpawner.storage_pvc_ensure ----------------------


@pytest.mark.controlplane
async def test_the_chart_storage_makes_a_home_claim_in_the_profile_namespace(
    chart_spawner: Callable[..., DnaSpawner],
) -> None:
    assert chart_default("singleuser.storage.type") == "dynamic"
    spawner = chart_spawner(storage_pvc_ensure=True)
    pvc = spawner.get_pvc_manifest()
    assert spawner.namespace == "kubeflow-alice"
    assert pvc.metadata.name == "claim-alice"


@pytest.mark.controlplane
async def test_deleting_a_hub_user_never_deletes_profile_storage(
    chart_spawner: Callable[..., DnaSpawner],
) -> None:
    assert chart_spawner().delete_pvc is False
    # even when configured: the hub has no delete on PVCs, a 403 would fail the deletion
    spawner = chart_spawner(delete_pvc=True, storage_pvc_ensure=True)
    assert spawner.delete_pvc is True
    # the profile's offboarding (profile_retention, tests/integration/test_offboarding.py)
    # is all that happens; KubeSpawner's PVC deletion never runs
    offboarded = []

    async def offboard_profile() -> None:
        offboarded.append(spawner.namespace)

    spawner.offboard_profile = offboard_profile  # type: ignore[method-assign]
    spawner.api = None  # any other Kubernetes call would fail loudly
    await spawner.delete_forever()
    assert offboarded == [spawner.namespace]
