"""Test identities with chosen RBAC: a ServiceAccount bound to given rules, and its token.

The per-permission proofs (tests/integration/test_hub_rbac.py,
tests/integration/test_sync_rbac.py) run dna_hub as such an identity with one rule of a
shipped ClusterRole removed at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from dna_hub.policy.permissions import Permission


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every rule of a ClusterRole."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def rules_without(role: dict[str, Any], missing: Permission | None) -> list[dict[str, Any]]:
    """The role's rules, one verb each (resourceNames kept), less ``missing``."""
    split = {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    return [
        {"apiGroups": [g], "resources": [r], "verbs": [v]}
        | ({"resourceNames": list(names)} if names else {})
        for g, r, v, names in sorted(split)
        if missing is None or (g, r, v) != (missing.group, missing.resource, missing.verb)
    ]


async def service_account_token(
    admin: ApiClient, name: str, rules: list[dict[str, Any]], namespace: str = "jupyterhub"
) -> str:
    """A token of a new ServiceAccount ``namespace/name`` bound (cluster-wide) to ``rules``."""
    rbac = client.RbacAuthorizationV1Api(admin)
    core = CoreV1Api(admin)
    await core.create_namespaced_service_account(
        namespace, {"metadata": {"name": name}}, _request_timeout=10
    )
    await rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    await rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
    )
    await bindings_in_effect(admin, f"system:serviceaccount:{namespace}:{name}", rules)
    token = await core.create_namespaced_service_account_token(
        name,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    return token.status.token


async def bindings_in_effect(
    admin: ApiClient, user: str, rules: list[dict[str, Any]], timeout: float = 30
) -> None:
    """Until the API server's authorizer has the new binding (its RBAC cache is filled by a
    watch, so a binding made a moment ago may not count yet): the identity may do the first
    rule's verb. Without this, a proof's "all permissions" run could meet a stale 403."""
    if not rules:
        return
    rule = rules[0]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            resource_attributes=client.V1ResourceAttributes(
                group=rule["apiGroups"][0], resource=rule["resources"][0], verb=rule["verbs"][0]
            ),
        )
    )
    authorization = client.AuthorizationV1Api(admin)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await authorization.create_subject_access_review(review, _request_timeout=10)
        if answer.status.allowed:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"RBAC binding of {user} not in effect after {timeout:.0f}s")
        await asyncio.sleep(0.05)
