"""``dna-hub access``'s reads: who reaches which profile namespace, from live objects,
cross-checked with the API server's authorizer (SubjectAccessReview).

Read-only: lists Profiles, RoleBindings and AuthorizationPolicies, and asks
SubjectAccessReviews (exactly dna_hub/policy/access_permissions.py). The reading of the
objects is :func:`dna_hub.policy.access.access_rows`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dna_hub.k8s.api import AUTHORIZATION_POLICY, PROFILE, ROLE_BINDING, Kind, KubeApi
from dna_hub.policy.access import (
    ACCESS_VERBS,
    Access,
    access_rows,
    expected_level,
    level_of,
)

__all__ = ["AccessReport", "IdentityAccess", "access_report"]

SUBJECT_ACCESS_REVIEW = Kind(
    "authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", False
)
#: SubjectAccessReviews asked at once (each is one small request).
_CONCURRENT_REVIEWS = 8


@dataclass(frozen=True)
class IdentityAccess:
    """One identity in one namespace: its paths, and what the authorizer says it may do."""

    namespace: str
    identity: str
    kind: str
    paths: tuple[Access, ...]
    #: The highest Kubeflow level the RBAC paths give (none: Istio or ownership only).
    expected: str
    #: The highest level the SubjectAccessReviews allowed (None: not asked, e.g. Istio only).
    reviewed: str | None

    @property
    def consistent(self) -> bool:
        return self.reviewed is None or self.reviewed == self.expected

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "identity": self.identity,
            "kind": self.kind,
            "rbac_role": self.expected,
            "subject_access_review": self.reviewed,
            "consistent": self.consistent,
            "paths": [p.as_json() for p in self.paths],
        }


@dataclass
class AccessReport:
    entries: list[IdentityAccess] = field(default_factory=list)

    def as_json(self) -> list[dict[str, Any]]:
        return [e.as_json() for e in self.entries]


def _review_body(identity: str, kind: str, namespace: str, verb: tuple[str, ...]) -> dict:
    _, group, resource, action = verb
    spec: dict[str, Any] = {
        "resourceAttributes": {
            "namespace": namespace,
            "group": group,
            "resource": resource,
            "verb": action,
        }
    }
    if kind == "Group":
        spec["groups"] = [identity]
        spec["user"] = "dna-hub-access:group-member"
    elif kind == "ServiceAccount":
        spec["user"] = identity
        sa_namespace = identity.split(":")[2] if identity.count(":") >= 3 else ""
        spec["groups"] = ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]
    else:
        spec["user"] = identity
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": spec,
    }


async def _reviewed_level(
    api: KubeApi, identity: str, kind: str, namespace: str, limit: asyncio.Semaphore
) -> str:
    async def ask(verb: tuple[str, str, str, str]) -> tuple[str, bool]:
        async with limit:
            answer = await api.create(
                SUBJECT_ACCESS_REVIEW,
                _review_body(identity, kind, namespace, verb),
                field_manager="dna-hub-access",
            )
        return verb[0], bool((answer.get("status") or {}).get("allowed"))

    allowed = dict(await asyncio.gather(*(ask(v) for v in ACCESS_VERBS)))
    return level_of(allowed)


def _grouped(rows: Iterable[Access]) -> dict[tuple[str, str, str], list[Access]]:
    grouped: dict[tuple[str, str, str], list[Access]] = {}
    for row in rows:
        grouped.setdefault((row.namespace, row.identity, row.kind), []).append(row)
    return grouped


async def access_report(
    api: KubeApi, *, namespace: str | None = None, identity: str | None = None
) -> AccessReport:
    """Every identity reaching ``namespace``, or every profile namespace ``identity``
    reaches (exact match, as Kubeflow compares it), with the authorizer's answer for each
    identity that RBAC gives a path."""
    if namespace:
        profiles = (await api.list(PROFILE, field_selector=f"metadata.name={namespace}"))["items"]
        if not profiles:
            return AccessReport()
        bindings, policies = await asyncio.gather(
            api.list(ROLE_BINDING, namespace), api.list(AUTHORIZATION_POLICY, namespace)
        )
    else:
        profiles = (await api.list(PROFILE))["items"]
        bindings, policies = await asyncio.gather(
            api.list(ROLE_BINDING), api.list(AUTHORIZATION_POLICY)
        )
    rows = access_rows(profiles, bindings["items"], policies["items"])
    if identity is not None:
        rows = [r for r in rows if r.identity == identity]
    limit = asyncio.Semaphore(_CONCURRENT_REVIEWS)
    grouped = _grouped(rows)

    async def entry(key: tuple[str, str, str], paths: list[Access]) -> IdentityAccess:
        ns, who, kind = key
        expected = expected_level(paths)
        reviewed = (
            await _reviewed_level(api, who, kind, ns, limit)
            if any(p.rbac for p in paths) or kind in ("User", "ServiceAccount")
            else None
        )
        return IdentityAccess(ns, who, kind, tuple(paths), expected, reviewed)

    entries = await asyncio.gather(*(entry(k, v) for k, v in grouped.items()))
    return AccessReport(sorted(entries, key=lambda e: (e.namespace, e.identity)))
