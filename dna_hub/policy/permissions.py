"""What the hub needs from the cluster: the API kinds and the RBAC permissions.

``helm-values/hub-rbac.yaml`` grants exactly :data:`HUB_PERMISSIONS` (a test holds them
equal), and ``dna-hub doctor`` checks both lists against a live cluster.

Most permissions are required: without one, something dna_hub does fails with 403. A few are
optimisations (``optional``): ``watch`` on namespaces and service accounts lets a spawn learn
the moment Kubeflow's profile controller is done; without it the wait polls (list with growing
pauses, a little later and with more requests) and the hub logs a warning that names the
missing permission. ``tests/integration/test_hub_rbac.py`` proves both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verb: str
    why: str
    #: The hub still works without it (more slowly, with a warning naming it).
    optional: bool = False
    #: Only needed with this feature on ("teams", "legacy_envoy_filter", "kueue"; None:
    #: always).
    setting: str | None = None
    #: Only on these objects (RBAC resourceNames; empty: any).
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServedKind:
    group: str
    version: str
    resource: str
    kind: str
    why: str
    #: Only needed with this DnaSpawner setting on (None: always).
    setting: str | None = None


def _grant(
    group: str,
    resource: str,
    verbs: str,
    why: str,
    *,
    optional: bool = False,
    setting: str | None = None,
    resource_names: tuple[str, ...] = (),
) -> list[Permission]:
    return [
        Permission(group, resource, verb, why, optional, setting, resource_names)
        for verb in verbs.split()
    ]


#: What the Kale Role of the profile templates grants: whoever applies that Role must hold it.
KALE_ROLE_GRANTS: list[Permission] = _grant(
    "argoproj.io",
    "workflows",
    "get list watch",
    "held to grant them in the Kale Role (RBAC escalation prevention)",
) + _grant(
    "argoproj.io",
    "workflowtaskresults",
    "create patch",
    "held to grant them in the Kale Role (RBAC escalation prevention)",
)


HUB_PERMISSIONS: tuple[Permission, ...] = tuple(
    _grant("", "pods", "get list watch create delete", "KubeSpawner runs notebook pods")
    + _grant("", "events", "list watch", "KubeSpawner shows pod events as spawn progress")
    + _grant("", "persistentvolumeclaims", "get create", "KubeSpawner: the chart's home PVC")
    + _grant("kubeflow.org", "profiles", "get create patch", "DnaSpawner applies Profiles")
    + _grant("", "namespaces", "list", "DnaSpawner checks and waits for profile namespaces")
    + _grant(
        "",
        "namespaces",
        "watch",
        "DnaSpawner learns at once that a profile namespace is ready (else it polls)",
        optional=True,
    )
    + _grant("", "serviceaccounts", "list", "DnaSpawner waits for default-editor")
    + _grant(
        "",
        "serviceaccounts",
        "watch",
        "DnaSpawner learns at once that default-editor exists (else it polls)",
        optional=True,
    )
    + _grant("kubeflow.org", "poddefaults", "create patch", "profile template: PodDefault")
    + _grant("", "limitranges", "create patch", "profile template: LimitRange")
    + _grant(
        "security.istio.io",
        "authorizationpolicies",
        "create patch",
        "profile template: notebook AuthorizationPolicy",
    )
    + _grant(
        "networking.k8s.io",
        "networkpolicies",
        "create patch",
        "profile template: notebook NetworkPolicy",
    )
    + _grant("rbac.authorization.k8s.io", "roles", "create patch", "profile template: Kale Role")
    + _grant(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "create patch",
        "profile template: Kale RoleBinding",
    )
    + _grant(
        "networking.istio.io",
        "envoyfilters",
        "create patch",
        "legacy EnvoyFilter template",
        setting="legacy_envoy_filter",
    )
    + KALE_ROLE_GRANTS
    + _grant(
        "",
        "secrets",
        "create",
        "DnaSpawner: each server's API token Secret (owned by its pod), never read back",
    )
    + _grant(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "list delete",
        "teams: find (by label) and remove the contributor RoleBindings dna_hub made",
        setting="teams",
    )
    + _grant(
        "security.istio.io",
        "authorizationpolicies",
        "list delete",
        "teams: find (by label) and remove the contributor AuthorizationPolicies dna_hub made",
        setting="teams",
    )
    + _grant(
        "kueue.x-k8s.io",
        "localqueues",
        "create patch",
        "Kueue: profile template: the profile's LocalQueue",
        setting="kueue",
    )
    + _grant(
        "kueue.x-k8s.io",
        "workloads",
        "list",
        "Kueue: a queued notebook's Workload (by its pod's uid), for its state",
        setting="kueue",
    )
    + _grant(
        "visibility.kueue.x-k8s.io",
        "localqueues/pendingworkloads",
        "get",
        "Kueue: a queued notebook's place in its queue (Kueue's visibility API)",
        setting="kueue",
    )
    + _grant(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "bind",
        "teams: grant kubeflow-edit/-view to members without holding those rights",
        setting="teams",
        resource_names=("kubeflow-edit", "kubeflow-view"),
    )
)


def hub_permissions(
    *, teams: bool, legacy_envoy_filter: bool, kueue: bool = False
) -> tuple[Permission, ...]:
    """What the hub needs with these features on (the rendered hub-rbac.yaml grants it)."""
    on = {"teams": teams, "legacy_envoy_filter": legacy_envoy_filter, "kueue": kueue}
    return tuple(p for p in HUB_PERMISSIONS if p.setting is None or on[p.setting])


REQUIRED_KINDS: tuple[ServedKind, ...] = (
    ServedKind("kubeflow.org", "v1", "profiles", "Profile", "Kubeflow profile controller's CRD"),
    ServedKind(
        "kubeflow.org", "v1alpha1", "poddefaults", "PodDefault", "Kubeflow admission webhook's CRD"
    ),
    ServedKind(
        "security.istio.io", "v1", "authorizationpolicies", "AuthorizationPolicy", "Istio's CRDs"
    ),
    ServedKind(
        "networking.istio.io",
        "v1alpha3",
        "envoyfilters",
        "EnvoyFilter",
        "Istio's CRDs",
        setting="legacy_envoy_filter",
    ),
    ServedKind(
        "kueue.x-k8s.io", "v1beta2", "localqueues", "LocalQueue", "Kueue's CRDs", "kueue_enabled"
    ),
    ServedKind(
        "kueue.x-k8s.io", "v1beta2", "workloads", "Workload", "Kueue's CRDs", "kueue_enabled"
    ),
)
