"""What the day-2 identities need from the cluster (the hub's own: dna_hub/policy/permissions.py).

* :data:`SYNC_PERMISSIONS` — the ``dna-hub sync`` CronJob's ServiceAccount
  (``helm-values/dna-hub-sync.yaml`` grants exactly these;
  tests/integration/test_sync_rbac.py proves each one is needed on the API server). It
  may re-apply and prune the objects of
  *existing* profiles; it can neither create nor delete a Profile, nor touch namespaces.

Offboarding needs nothing beyond the hub's own rules (``helm-values/hub-rbac.yaml``): it
patches the Profile (marks it orphaned). Deleting Profiles is an operator's (``dna-hub gc``):
neither the hub nor the sync job may.
"""

from __future__ import annotations

from dna_hub.policy.permissions import KALE_ROLE_GRANTS, Permission, _grant

#: Namespaced kinds the shipped templates render: applied, and pruned when dropped.
_TEMPLATE_RESOURCES = (
    ("kubeflow.org", "poddefaults"),
    ("", "limitranges"),
    ("security.istio.io", "authorizationpolicies"),
    ("networking.k8s.io", "networkpolicies"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("networking.istio.io", "envoyfilters"),
    ("kueue.x-k8s.io", "localqueues"),
)
_TEMPLATE_SETTINGS = {"envoyfilters": "legacy_envoy_filter", "localqueues": "kueue"}

SYNC_PERMISSIONS: tuple[Permission, ...] = tuple(
    _grant("kubeflow.org", "profiles", "list", "sync finds the profiles dna_hub manages")
    + _grant("kubeflow.org", "profiles", "get patch", "sync re-applies each Profile (no create)")
    + _grant(
        "",
        "namespaces",
        "list",
        "sync checks the profile namespace exists and who owns it",
    )
    + _grant("", "serviceaccounts", "list", "sync checks default-editor exists")
    + [
        permission
        for group, resource in _TEMPLATE_RESOURCES
        for permission in _grant(
            group,
            resource,
            "create patch list delete",
            "sync applies template objects, lists and prunes the dropped ones",
            setting=_TEMPLATE_SETTINGS.get(resource),
        )
    ]
    + KALE_ROLE_GRANTS
)
