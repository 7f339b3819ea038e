"""What ``dna-hub access`` needs from the cluster: read-only, and nothing else.

``helm-values/dna-hub-access-reader.yaml`` grants exactly :data:`ACCESS_PERMISSIONS`;
tests/integration/test_access.py proves on the API server that each one is needed (without
it, ``dna-hub access`` meets a 403) and that together they suffice. None of them reads a
Secret or changes an object: a SubjectAccessReview only asks the authorizer a question.
"""

from __future__ import annotations

from dna_hub.policy.permissions import Permission

__all__ = ["ACCESS_PERMISSIONS"]

ACCESS_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "kubeflow.org", "profiles", "list", "the profile namespaces and their owners (spec.owner)"
    ),
    Permission(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "list",
        "contributor bindings (KFAM annotations) and every other binding in profile namespaces",
    ),
    Permission(
        "security.istio.io",
        "authorizationpolicies",
        "list",
        "the kubeflow-userid header values Istio admits into each profile namespace",
    ),
    Permission(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "create",
        "cross-checks each identity's access with the API server's own authorizer",
    ),
)
