"""Team profiles: pure policy from verified OIDC groups to Kubeflow team profiles and contributors.

An admin maps OIDC groups to teams (``DnaSpawner.team_profiles``). For every configured group
a user is in — groups come only from the verified token the authenticator stored — the user

- has the team's Kubeflow Profile, named by policy (default ``kubeflow-team-{group}``) with
  the same guarantees as personal profiles (:mod:`dna_hub.policy.naming`: a valid DNS label of at
  most 63 characters, deterministic, injective, reserved names refused), owned by a stable
  non-person identity;
- is a contributor (``edit`` or ``view``) exactly as Kubeflow's access management (KFAM)
  writes and reads one: a RoleBinding ``user-<identity>-clusterrole-<role>`` with the
  annotations ``user`` and ``role`` and exactly one User subject, and an Istio
  AuthorizationPolicy of the same name (:func:`contributor_objects`).

Everything here is pure; the Kubernetes I/O is in :mod:`dna_hub.profiles.contributors`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dna_hub.policy.labels import (
    CONTRIBUTOR_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROFILE_LABEL,
    TEAM_OWNER_PREFIX,
)
from dna_hub.policy.naming import (
    NamespacePolicyError,
    namespace_for,
    validate_namespace_template,
)

__all__ = [
    "CONTRIBUTOR_LABEL",
    "DEFAULT_INGRESS_GATEWAY_PRINCIPAL",
    "DEFAULT_KFP_UI_PRINCIPAL",
    "DEFAULT_TEAM_NAMESPACE_TEMPLATE",
    "ROLES",
    "Contributor",
    "Team",
    "TeamConfigError",
    "TeamPlan",
    "contributor_binding_name",
    "contributor_label_value",
    "contributor_objects",
    "parse_teams",
    "plan_for",
    "team_like_namespace",
    "team_namespace",
    "team_owner",
]

DEFAULT_TEAM_NAMESPACE_TEMPLATE = "kubeflow-team-{group}"
#: What a member may do in the team profile: Kubeflow's contributor roles.
ROLES = ("edit", "view")
#: KFAM's defaults (its ISTIO_INGRESS_GATEWAY_PRINCIPAL and KFP_UI_PRINCIPAL).
DEFAULT_INGRESS_GATEWAY_PRINCIPAL = (
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
)
DEFAULT_KFP_UI_PRINCIPAL = "cluster.local/ns/kubeflow/sa/ml-pipeline-ui"

_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def team_owner(namespace: str) -> str:
    """The owner of a team's Profile: ``dna-hub-team:<namespace>``, the team's own identity.

    Never a person (a person's Profile-owner rights would outlive their membership), never
    the hub (Kubeflow would make it kubeflow-admin of every team namespace, and in legacy
    header mode every team notebook would speak as the hub). No one logs in as it:
    DnaOIDCAuthenticator refuses it as a Kubeflow identity, and the admission guards admit
    it only as the owner of that one team's Profile.
    """
    return TEAM_OWNER_PREFIX + namespace


class TeamConfigError(ValueError):
    """The team configuration cannot be used: names the group and the problem."""


@dataclass(frozen=True)
class Team:
    """One configured team: an OIDC group and the Kubeflow profile its members share."""

    group: str
    namespace: str
    role: str
    owner: str
    resource_quota: Mapping[str, Any] | None = None
    #: Groups whose members are ``view`` contributors of this team's profile.
    view_groups: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """The spawn form's option value for this team (a valid, unique name)."""
        return self.namespace


@dataclass(frozen=True)
class Contributor:
    """One (identity, profile) contribution, as KFAM names and annotates it."""

    identity: str
    namespace: str
    role: str

    @property
    def name(self) -> str:
        return contributor_binding_name(self.identity, self.role)


@dataclass(frozen=True)
class TeamPlan:
    """What a login with some groups gets: teams, and the teams refused (with why)."""

    teams: tuple[Team, ...] = ()
    refused: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def contributors(self, identity: str) -> set[Contributor]:
        return {Contributor(identity, team.namespace, team.role) for team in self.teams}

    def editable(self) -> tuple[Team, ...]:
        """Teams a notebook may run in: in Kubeflow Pipelines a notebook acts as its
        namespace's ``default-editor``, so only ``edit`` members get one."""
        return tuple(team for team in self.teams if team.role == "edit")


def _template_for_naming(template: str) -> str:
    """The team template as a :mod:`dna_hub.policy.naming` template.

    (``{group}`` → ``{username}``)
    """
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields != ["group"]:
        raise TeamConfigError(
            f"team namespace template {template!r} must contain {{group}} exactly once and no "
            f"other field (found {fields or 'none'})"
        )
    return template.replace("{group}", "{username}")


def team_namespace(group: str, template: str = DEFAULT_TEAM_NAMESPACE_TEMPLATE) -> str:
    """The team profile's namespace for an OIDC group, by the same rules as a user's.

    Any group name — dots, upper case, unicode, 200 characters — becomes a valid DNS label
    of at most 63 characters; different groups never share one (KubeSpawner's safe slugs
    with a hash where needed). Raises :class:`TeamConfigError` naming the group otherwise.
    """
    try:
        return namespace_for(group, _template_for_naming(template))
    except NamespacePolicyError as e:
        raise TeamConfigError(f"team group {group!r}: {e}") from e


def team_like_namespace(namespace: str, template: str = DEFAULT_TEAM_NAMESPACE_TEMPLATE) -> bool:
    """True if `namespace` has the form of a team namespace under `template`.

    With the defaults, user ``team-x``'s personal namespace ``kubeflow-team-x`` is group
    ``x``'s team namespace: such a personal namespace is refused whether or not that group
    is configured today (a team added later would share it with the user).
    """
    try:
        prefix, suffix = validate_namespace_template(_template_for_naming(template))
    except NamespacePolicyError as e:
        raise TeamConfigError(str(e)) from e
    return (
        len(namespace) > len(prefix) + len(suffix)
        and namespace.startswith(prefix)
        and namespace.endswith(suffix)
    )


def _team_setting(group: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"role": value}
    if isinstance(value, Mapping):
        unknown = set(value) - {"role", "resource_quota", "view_groups"}
        if unknown:
            raise TeamConfigError(
                f"team group {group!r}: unknown settings {sorted(unknown)} "
                "(allowed: role, resource_quota, view_groups)"
            )
        return dict(value)
    raise TeamConfigError(
        f"team group {group!r}: expected 'edit', 'view' or a dict with role and "
        f"resource_quota, not {type(value).__name__}"
    )


def parse_teams(
    config: Mapping[str, Any],
    *,
    template: str = DEFAULT_TEAM_NAMESPACE_TEMPLATE,
) -> dict[str, Team]:
    """Validate the admin's group → team map; return the teams by group.

    ``config`` maps a group to ``"edit"``/``"view"`` or to
    ``{"role": ..., "resource_quota": {...}, "view_groups": [...]}`` (members of a view group
    are ``view`` contributors of the same team profile). Every problem raises
    :class:`TeamConfigError` naming the group: an empty group, a role that is not
    ``edit``/``view``, a quota that is not a mapping, a reserved namespace, or two groups
    that land on one namespace. Each team's Profile is owned by the team's own identity
    (:func:`team_owner`).
    """
    _template_for_naming(template)
    teams: dict[str, Team] = {}
    by_namespace: dict[str, str] = {}
    for group, value in config.items():
        if not isinstance(group, str) or not group:
            raise TeamConfigError(f"team group {group!r}: a group must be a non-empty string")
        setting = _team_setting(group, value)
        role = setting.get("role", "edit")
        if role not in ROLES:
            raise TeamConfigError(
                f"team group {group!r}: role {role!r} is not one of {', '.join(ROLES)}"
            )
        quota = setting.get("resource_quota") or None
        if quota is not None and not isinstance(quota, Mapping):
            raise TeamConfigError(
                f"team group {group!r}: resource_quota must be a ResourceQuotaSpec mapping"
            )
        view_groups = setting.get("view_groups") or []
        if not isinstance(view_groups, list) or not all(
            isinstance(g, str) and g and g != group for g in view_groups
        ):
            raise TeamConfigError(
                f"team group {group!r}: view_groups must be a list of other group names"
            )
        namespace = team_namespace(group, template)
        if namespace in by_namespace:
            # Unreachable with safe slugs; a clear error beats two teams sharing data.
            raise TeamConfigError(
                f"team groups {by_namespace[namespace]!r} and {group!r} both map to "
                f"namespace {namespace!r}"
            )
        by_namespace[namespace] = group
        teams[group] = Team(
            group, namespace, role, team_owner(namespace), quota, tuple(view_groups)
        )
    return teams


def plan_for(
    groups: Iterable[Any], teams: Mapping[str, Team], personal_namespace: str | None
) -> TeamPlan:
    """The teams a user with ``groups`` (from the verified token) belongs to.

    Groups match configured groups exactly (case included); anything that is not a string
    is ignored. A team whose namespace is the user's own personal namespace is refused: a
    team profile must never be, or take over, a person's profile.
    """
    chosen: list[Team] = []
    refused: list[tuple[str, str]] = []
    member_of = sorted({g for g in groups if isinstance(g, str)})
    # a view group's members see the team as viewers, unless its own group makes them more
    viewing = {
        team.group: dataclasses.replace(team, role="view")
        for team in teams.values()
        if team.group not in member_of and set(team.view_groups).intersection(member_of)
    }
    for group in sorted({*member_of, *viewing}):
        team = teams.get(group) if group in member_of else viewing.get(group)
        if team is None:
            continue
        if team.namespace == personal_namespace:
            refused.append(
                (
                    group,
                    f"team profile {team.namespace!r} of group {group!r} is this user's "
                    "personal profile namespace; the team is skipped for this user",
                )
            )
            continue
        chosen.append(team)
    return TeamPlan(tuple(chosen), tuple(refused))


def contributor_binding_name(identity: str, role: str) -> str:
    """The name KFAM gives a contributor's RoleBinding and AuthorizationPolicy.

    KFAM (kubeflow/dashboard components/access-management/kfam/bindings.go, getBindingName):
    runs of non-alphanumerics in the identity become ``-``, then
    ``User-<that>-ClusterRole-<role>`` is lowercased and cleaned the same way.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    raw = "-".join(["User", _NON_ALNUM.sub("-", identity), "ClusterRole", role]).lower()
    return _NON_ALNUM.sub("-", raw)


def contributor_label_value(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:40]


def contributor_objects(
    contributor: Contributor,
    *,
    principals: Iterable[str] = (DEFAULT_INGRESS_GATEWAY_PRINCIPAL, DEFAULT_KFP_UI_PRINCIPAL),
    userid_header: str = "kubeflow-userid",
    userid_prefix: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The RoleBinding and AuthorizationPolicy KFAM's ``Create`` writes for a contributor.

    Same name, same ``user``/``role`` annotations, roleRef ``kubeflow-<role>``, exactly one
    User subject (an annotated binding with more breaks the Kubeflow dashboard), and a policy
    allowing the ``kubeflow-userid`` header equal to the identity from the given principals.
    dna_hub adds only labels (KFAM ignores them): managed-by, the profile, and the identity's
    hash, which is how it finds — and only ever removes — the bindings it made.
    """
    metadata: dict[str, Any] = {
        "name": contributor.name,
        "namespace": contributor.namespace,
        "annotations": {"user": contributor.identity, "role": contributor.role},
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY,
            PROFILE_LABEL: contributor.namespace,
            CONTRIBUTOR_LABEL: contributor_label_value(contributor.identity),
        },
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"kubeflow-{contributor.role}",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": contributor.identity}
        ],
    }
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            **metadata,
            "annotations": dict(metadata["annotations"]),
            "labels": dict(metadata["labels"]),
        },
        "spec": {
            "rules": [
                {
                    "from": [{"source": {"principals": list(principals)}}],
                    "when": [
                        {
                            "key": f"request.headers[{userid_header}]",
                            "values": [userid_prefix + contributor.identity],
                        }
                    ],
                }
            ]
        },
    }
    return binding, policy
