"""The reading of ``dna-hub access`` (dna_hub/policy/access.py): each object in a profile
namespace becomes the paths it gives, named by what made it; the live check is
tests/integration/test_access.py."""

from __future__ import annotations

from typing import Any

from dna_hub.policy.access import access_rows, expected_level, level_of, subject_identity
from dna_hub.policy.labels import CONTRIBUTOR_LABEL, MANAGED_BY_LABEL, TEAM_GROUP_ANNOTATION

NS = "kubeflow-team-fraud"
OWNER = "system:serviceaccount:dna-teams:team-fraud"  # whatever the Profile says


def profile(namespace: str = NS, owner: str = OWNER) -> dict[str, Any]:
    return {
        "metadata": {"name": namespace, "annotations": {TEAM_GROUP_ANNOTATION: "fraud"}},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }


def binding(name: str, role: str, *subjects: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": meta.pop("namespace", NS), **meta},
        "roleRef": {"kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name}


def test_each_object_is_named_by_what_made_it() -> None:
    rows = access_rows(
        [profile()],
        [
            binding("namespaceAdmin", "kubeflow-admin", user(OWNER),
                    annotations={"user": OWNER, "role": "admin"}),
            binding("user-alice", "kubeflow-edit", user("alice@example.com"),
                    annotations={"user": "alice@example.com", "role": "edit"},
                    labels={MANAGED_BY_LABEL: "dna-hub", CONTRIBUTOR_LABEL: "x"}),
            binding("user-carol", "kubeflow-view", user("carol@example.com"),
                    annotations={"user": "carol@example.com", "role": "view"}),
            binding("default-editor", "kubeflow-edit",
                    {"kind": "ServiceAccount", "name": "default-editor", "namespace": NS}),
            binding("ops", "view", {"kind": "Group", "name": "ops"}),
            binding("elsewhere", "kubeflow-edit", user("mallory"), namespace="kube-system"),
        ],
        [
            {"metadata": {"name": "ns-owner-access-istio", "namespace": NS},
             "spec": {"rules": [{"when": [{"key": "request.headers[kubeflow-userid]",
                                           "values": [OWNER]}]}]}},
            {"metadata": {"name": "deny", "namespace": NS},
             "spec": {"action": "DENY", "rules": [{"when": [
                 {"key": "request.headers[kubeflow-userid]", "values": ["eve"]}]}]}},
        ],
    )  # fmt: skip
    got = {(r.identity, r.role, r.via, r.rbac) for r in rows}
    assert got == {
        (OWNER, "admin", "owner (Profile spec.owner)", False),
        (OWNER, "admin", "owner (the profile controller's namespaceAdmin binding)", True),
        (OWNER, "http", "authorizationpolicy (the profile controller's, for the owner)", False),
        ("alice@example.com", "edit", "contributor, by dna_hub from team fraud", True),
        ("carol@example.com", "view", "contributor, added by hand (Kubeflow dashboard / KFAM)",
         True),
        (f"system:serviceaccount:{NS}:default-editor", "edit", "rolebinding", True),
        ("ops", "ClusterRole/view", "rolebinding", True),
    }  # fmt: skip
    # only profile namespaces; a DENY policy admits nobody
    assert "mallory" not in {r.identity for r in rows} and "eve" not in {r.identity for r in rows}


def test_levels() -> None:
    assert level_of({"view": True, "edit": True, "admin": False}) == "edit"
    assert level_of({}) == "none"
    rows = access_rows([profile()], [binding("b", "kubeflow-view", user("a"))], [])
    assert expected_level([r for r in rows if r.identity == "a"]) == "view"
    assert expected_level([r for r in rows if r.identity == OWNER]) == "none"  # not RBAC
    assert subject_identity({"kind": "ServiceAccount", "name": "n", "namespace": "x"}) == (
        "system:serviceaccount:x:n",
        "ServiceAccount",
    )
