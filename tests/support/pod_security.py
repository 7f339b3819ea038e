"""Pod Security "restricted" for hand-written test pods.

Profile namespaces enforce ``pod-security.kubernetes.io/enforce: restricted`` (the devstack's
namespace-labels file), and since Kubernetes 1.25 the API server's PodSecurity admission
refuses any pod there that does not meet it. Test pods that are about something else (a
webhook, a kubelet feature) wear these settings, so they are admitted for what they test.
"""

from __future__ import annotations

import copy
from typing import Any

#: Pod-level securityContext meeting "restricted" (runAsNonRoot, seccomp RuntimeDefault).
RESTRICTED_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}

#: Container-level securityContext meeting "restricted".
RESTRICTED_CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def restricted(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` with the restricted settings added where it sets none of its own."""
    spec = pod.setdefault("spec", {})
    spec["securityContext"] = {
        **copy.deepcopy(RESTRICTED_POD_SECURITY_CONTEXT),
        **(spec.get("securityContext") or {}),
    }
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        container["securityContext"] = {
            **copy.deepcopy(RESTRICTED_CONTAINER_SECURITY_CONTEXT),
            **(container.get("securityContext") or {}),
        }
    return pod
