"""Who can reach a Kubeflow profile namespace, and through what (``dna-hub access``).

From the live objects of profile namespaces — the Profile (its ``spec.owner``, read from the
object, never assumed), RoleBindings (KFAM contributor bindings with the ``user``/``role``
annotations, whether dna_hub made them from a team or someone added them by hand in the
dashboard; any other binding, e.g. the ``default-editor`` service account's) and Istio
AuthorizationPolicies (the ``kubeflow-userid`` header values they admit) — one
:class:`Access` row per identity, namespace and path. The RBAC rows are cross-checked by
SubjectAccessReview in :mod:`dna_hub.profiles.access`; this module is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dna_hub.policy.labels import (
    CONTRIBUTOR_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TEAM_GROUP_ANNOTATION,
)

__all__ = [
    "ACCESS_VERBS",
    "Access",
    "access_rows",
    "expected_level",
    "level_of",
    "subject_identity",
]

#: The Kubeflow roles, weakest first; a binding to ``kubeflow-<role>`` gives ``<role>``.
ROLES = ("view", "edit", "admin")

#: What each level may do in the namespace, asked of the API server (SubjectAccessReview):
#: view lists pods, edit creates them, admin manages the namespace's RoleBindings.
ACCESS_VERBS: tuple[tuple[str, str, str, str], ...] = (
    ("view", "", "pods", "list"),
    ("edit", "", "pods", "create"),
    ("admin", "rbac.authorization.k8s.io", "rolebindings", "create"),
)

_USERID_HEADER_KEYS = ("request.headers[kubeflow-userid]",)


@dataclass(frozen=True)
class Access:
    """One way one identity reaches one profile namespace."""

    namespace: str
    identity: str
    #: User, ServiceAccount or Group (RBAC subject kinds); User for an Istio header value.
    kind: str
    #: admin / edit / view (Kubeflow roles), another role's name, or "http" (Istio only).
    role: str
    #: owner, contributor (team / by hand), rolebinding, authorizationpolicy.
    via: str
    #: The object it comes from: Kind/name.
    source: str
    #: Whether Kubernetes RBAC is the path (a SubjectAccessReview can confirm it).
    rbac: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "identity": self.identity,
            "kind": self.kind,
            "role": self.role,
            "via": self.via,
            "source": self.source,
        }


def subject_identity(subject: Mapping[str, Any]) -> tuple[str, str]:
    """(identity, kind) of an RBAC subject; a service account as Kubernetes names it."""
    kind = str(subject.get("kind", ""))
    name = str(subject.get("name", ""))
    if kind == "ServiceAccount":
        return f"system:serviceaccount:{subject.get('namespace', '')}:{name}", kind
    return name, kind


def _role_of(role_ref: Mapping[str, Any]) -> str:
    name = str(role_ref.get("name", ""))
    if role_ref.get("kind") == "ClusterRole" and name.startswith("kubeflow-"):
        short = name[len("kubeflow-") :]
        if short in ROLES:
            return short
    return f"{role_ref.get('kind', 'Role')}/{name}"


def _meta(obj: Mapping[str, Any]) -> tuple[str, Mapping[str, str], Mapping[str, str]]:
    metadata = obj.get("metadata") or {}
    return (
        str(metadata.get("name", "")),
        metadata.get("annotations") or {},
        metadata.get("labels") or {},
    )


def _binding_rows(
    binding: Mapping[str, Any], namespace: str, profile: Mapping[str, Any]
) -> list[Access]:
    name, annotations, labels = _meta(binding)
    role = _role_of(binding.get("roleRef") or {})
    source = f"RoleBinding/{name}"
    owner = ((profile.get("spec") or {}).get("owner") or {}).get("name")
    if "user" in annotations and "role" in annotations:
        if name == "namespaceAdmin" and annotations["user"] == owner:
            via = "owner (the profile controller's namespaceAdmin binding)"
        elif labels.get(MANAGED_BY_LABEL) == MANAGED_BY and CONTRIBUTOR_LABEL in labels:
            _, profile_annotations, _ = _meta(profile)
            team = profile_annotations.get(TEAM_GROUP_ANNOTATION)
            via = f"contributor, by dna_hub from team {team}" if team else "contributor, by dna_hub"
        else:
            via = "contributor, added by hand (Kubeflow dashboard / KFAM)"
    else:
        via = "rolebinding"
    rows = []
    for subject in binding.get("subjects") or []:
        identity, kind = subject_identity(subject)
        rows.append(Access(namespace, identity, kind, role, via, source, rbac=True))
    return rows


def _policy_rows(policy: Mapping[str, Any], namespace: str) -> list[Access]:
    name, annotations, labels = _meta(policy)
    spec = policy.get("spec") or {}
    if str(spec.get("action", "ALLOW")).upper() != "ALLOW":
        return []
    role = annotations.get("role") or "http"
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and CONTRIBUTOR_LABEL in labels:
        via = "authorizationpolicy, by dna_hub (contributor)"
    elif name == "ns-owner-access-istio":
        via = "authorizationpolicy (the profile controller's, for the owner)"
    else:
        via = "authorizationpolicy"
    rows = []
    for rule in spec.get("rules") or []:
        for condition in rule.get("when") or []:
            if condition.get("key") not in _USERID_HEADER_KEYS:
                continue
            for value in condition.get("values") or []:
                rows.append(
                    Access(
                        namespace,
                        str(value),
                        "User",
                        role,
                        via,
                        f"AuthorizationPolicy/{name}",
                        rbac=False,
                    )
                )
    return rows


def access_rows(
    profiles: Iterable[Mapping[str, Any]],
    role_bindings: Iterable[Mapping[str, Any]],
    authorization_policies: Iterable[Mapping[str, Any]],
) -> list[Access]:
    """Every way into each profile namespace, from the listed objects (objects outside a
    profile's namespace are ignored), sorted by namespace, identity and source."""
    by_namespace = {str((p.get("metadata") or {}).get("name")): p for p in profiles}
    rows: list[Access] = []
    for namespace, profile in by_namespace.items():
        owner = (profile.get("spec") or {}).get("owner") or {}
        if owner.get("name"):
            rows.append(
                Access(
                    namespace,
                    str(owner["name"]),
                    str(owner.get("kind", "User")),
                    "admin",
                    "owner (Profile spec.owner)",
                    f"Profile/{namespace}",
                    rbac=False,
                )
            )
    for binding in role_bindings:
        namespace = str((binding.get("metadata") or {}).get("namespace", ""))
        if namespace in by_namespace:
            rows += _binding_rows(binding, namespace, by_namespace[namespace])
    for policy in authorization_policies:
        namespace = str((policy.get("metadata") or {}).get("namespace", ""))
        if namespace in by_namespace:
            rows += _policy_rows(policy, namespace)
    return sorted(rows, key=lambda a: (a.namespace, a.identity, a.source))


def level_of(allowed: Mapping[str, bool]) -> str:
    """The highest Kubeflow level whose verb a SubjectAccessReview allowed ('none': none)."""
    level = "none"
    for role in ROLES:
        if allowed.get(role):
            level = role
    return level


def expected_level(rows: Iterable[Access]) -> str:
    """The highest Kubeflow role the RBAC rows of one identity in one namespace give."""
    roles = [r.role for r in rows if r.rbac and r.role in ROLES]
    return max(roles, key=ROLES.index) if roles else "none"
