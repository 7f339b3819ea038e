"""pytest plugin: what the KFP API stand-in needs to authorize like Kubeflow Pipelines.

* ``kfp_cluster_roles`` (session): Kubeflow Pipelines' aggregated ClusterRoles
  (``kubeflow-pipelines-edit``/``-view`` and their rules, as the multi-user install of
  kubeflow/pipelines defines them), which aggregate into ``kubeflow-edit``/``kubeflow-view``
  of ``../shared/rbac``. ``../shared`` holds only Kubeflow's own roles, so they are
  applied here.
* ``kfp_auth`` (session): a :class:`~devstack.kfp_standin.KubeAuth` — a client
  certificate from the control plane's CA for user ``dna-hub-test:kfp-api-server``, bound
  to a ClusterRole that may only create TokenReviews and SubjectAccessReviews (what the
  real ``ml-pipeline`` ServiceAccount needs for this).
"""

from __future__ import annotations

from devstack.controlplane import ControlPlane
from devstack.kfp_standin import KubeAuth
from devstack.standins import Kube, KubeError

KFP_GROUP = "pipelines.kubeflow.org"
AGG = "rbac.authorization.kubeflow.org/aggregate-to-"
REVIEWER = "dna-hub-test:kfp-api-server"


def _role(
    name: str, labels: dict[str, str], rules: list | None = None, aggregate: str = ""
) -> dict:
    role: dict = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels},
        "rules": rules or [],
    }
    if aggregate:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {AGG + aggregate: "true"}}]
        }
    return role


PIPELINES_ROLES = [
    _role("kubeflow-pipelines-edit", {AGG + "kubeflow-edit": "true"},
          aggregate="kubeflow-pipelines-edit"),
    _role("kubeflow-pipelines-view",
          {AGG + "kubeflow-pipelines-edit": "true", AGG + "kubeflow-view": "true"},
          aggregate="kubeflow-pipelines-view"),
    _role("aggregate-to-kubeflow-pipelines-edit", {AGG + "kubeflow-pipelines-edit": "true"}, [
        {"apiGroups": [KFP_GROUP], "resources": ["pipelines", "pipelines/versions"],
         "verbs": ["create", "delete", "update"]},
        {"apiGroups": [KFP_GROUP], "resources": ["experiments"],
         "verbs": ["archive", "create", "delete", "unarchive"]},
        {"apiGroups": [KFP_GROUP], "resources": ["runs"],
         "verbs": ["archive", "create", "delete", "retry", "terminate", "unarchive"]},
        {"apiGroups": [KFP_GROUP], "resources": ["jobs"],
         "verbs": ["create", "delete", "disable", "enable"]},
    ]),
    _role("aggregate-to-kubeflow-pipelines-view", {AGG + "kubeflow-pipelines-view": "true"}, [
        {"apiGroups": [KFP_GROUP],
         "resources": ["pipelines", "pipelines/versions", "experiments", "runs", "jobs"],
         "verbs": ["get", "list"]},
    ]),
]  # fmt: skip


async def _apply(kube: Kube, path: str, obj: dict) -> None:
    try:
        await kube.create(path, obj)
    except KubeError as exc:
        if exc.status != 409:
            raise
        await kube.replace(f"{path}/{obj['metadata']['name']}", obj)


async def apply_pipelines_roles(control_plane: ControlPlane) -> None:
    """Apply Kubeflow Pipelines' aggregated ClusterRoles (:data:`PIPELINES_ROLES`)."""
    kube = Kube(control_plane.admin_client())
    try:
        for role in PIPELINES_ROLES:
            await _apply(kube, "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    finally:
        await kube.close()


async def kfp_reviewer_auth(control_plane: ControlPlane) -> KubeAuth:
    """The KFP API server's identity: a client certificate that may only create reviews."""
    assert control_plane.ca is not None
    pki = control_plane.workdir / "kfp-standin-pki"
    pki.mkdir(exist_ok=True)
    cert, key = control_plane.ca.issue(pki, "kfp-api-server", common_name=REVIEWER, client=True)
    kube = Kube(control_plane.admin_client())
    try:
        await _apply(kube, "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "dna-hub-test-kfp-reviews"},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                 "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                 "verbs": ["create"]},
            ],
        })  # fmt: skip
        await _apply(kube, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "dna-hub-test-kfp-reviews"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "dna-hub-test-kfp-reviews"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": REVIEWER}],
        })  # fmt: skip
    finally:
        await kube.close()
    return KubeAuth(
        server=control_plane.server, ca_file=control_plane.ca_file, cert_file=cert, key_file=key
    )
