"""``dna-hub access`` on the control plane (issue 27, item 3): who reaches a team profile
namespace and through what — its owner (read from the Profile), a contributor dna_hub made
from the team, one added by hand as the dashboard does, the profile's service accounts —
and that a member removed from the group no longer does; each identity's RBAC path
cross-checked by SubjectAccessReview. Run as an identity with exactly
helm-values/dna-hub-access-reader.yaml, each of whose rules is proven needed on the API
server (as tests/integration/test_sync_rbac.py does for sync).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane
from devstack.paths import REPO_ROOT
from dna_hub.k8s.api import PROFILE, ROLE_BINDING, KubeApi
from dna_hub.policy.access_permissions import ACCESS_PERMISSIONS
from dna_hub.policy.permissions import Permission
from dna_hub.policy.teams import contributor_binding_name, parse_teams, plan_for
from dna_hub.profiles.access import AccessReport, access_report
from tests.integration.test_contributors import (
    admin_kube,  # noqa: F401 - a fixture
    dashboard_binding,
    hub_kube,  # noqa: F401 - a fixture
    make_sync,
    may,
    render_team,
)
from tests.integration.test_sync_rbac import client_for, write_kubeconfig
from tests.support.rbac_identity import granted, rules_without, service_account_token

READER_FILE = REPO_ROOT / "helm-values" / "dna-hub-access-reader.yaml"


def reader_role() -> dict[str, Any]:
    (role,) = [o for o in yaml.safe_load_all(READER_FILE.read_text()) if o]
    return role


def test_the_reader_grants_exactly_the_documented_read_only_permissions() -> None:
    role = reader_role()
    assert role["kind"] == "ClusterRole"
    assert granted(role) == {(p.group, p.resource, p.verb) for p in ACCESS_PERMISSIONS}
    for group, resource, verb in granted(role):
        assert "*" not in (group, resource, verb)
        assert resource not in {"secrets", "pods", "serviceaccounts/token"}
        # read-only: a SubjectAccessReview only asks the authorizer a question
        assert verb in {"get", "list"} or (resource, verb) == ("subjectaccessreviews", "create")


def entry(report: AccessReport, identity: str) -> Any:
    found = [e for e in report.entries if e.identity == identity]
    assert len(found) == 1, [e.identity for e in report.entries]
    return found[0]


async def reader_token(admin: ApiClient, missing: Permission | None, tag: str) -> str:
    return await service_account_token(
        admin, f"dna-hub-access-{tag}", rules_without(reader_role(), missing)
    )


async def reports(api_client: ApiClient, namespace: str, identity: str) -> tuple[Any, Any]:
    api = KubeApi(api_client, request_timeout=10)
    return (
        await access_report(api, namespace=namespace),
        await access_report(api, identity=identity),
    )


@pytest.mark.controlplane
@pytest.mark.slow
async def test_access_of_a_team_namespace_and_of_its_members(
    hub_kube: KubeApi,  # noqa: F811
    admin_kube: KubeApi,  # noqa: F811
    admin_api: ApiClient,
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    group = unique_name("fraud")
    alice, bob = f"Alice.{group}@Example.com", f"bob.{group}@example.com"
    carol = f"carol.{group}@example.com"
    teams = parse_teams({group: "edit"})
    namespace = teams[group].namespace
    # alice and bob log in with the team's group; carol is added by hand in the dashboard
    for member in (alice, bob):
        result = await make_sync(hub_kube).sync(member, plan_for([group], teams, None), render_team)
        assert not result.failed
    await admin_kube.create(
        ROLE_BINDING, dashboard_binding(namespace, carol, "view"), field_manager="kfam"
    )
    # bob is removed from the group at the provider and logs in again
    await make_sync(hub_kube).sync(bob, plan_for([], teams, None), render_team)
    assert not await may(admin_api, bob, "list", "pods", namespace)
    owner = (await admin_kube.get(PROFILE, namespace))["spec"]["owner"]["name"]

    token = await reader_token(admin_api, None, unique_name("all"))
    async with client_for(control_plane, token) as api:
        by_namespace, of_alice = await reports(api, namespace, alice)
        _, of_bob = await reports(api, namespace, bob)

    # the owner, as the Profile names it (whoever that is)
    owners = entry(by_namespace, owner)
    assert {p.via for p in owners.paths} >= {
        "owner (Profile spec.owner)",
        "owner (the profile controller's namespaceAdmin binding)",
    }
    assert owners.expected == "admin" and owners.reviewed == "admin"
    # alice: a contributor dna_hub made from the team, edit in RBAC and in Istio
    alices = entry(by_namespace, alice)
    assert {(p.role, p.via, p.source) for p in alices.paths} == {
        ("edit", f"contributor, by dna_hub from team {group}",
         f"RoleBinding/{contributor_binding_name(alice, 'edit')}"),
        ("edit", "authorizationpolicy, by dna_hub (contributor)",
         f"AuthorizationPolicy/{contributor_binding_name(alice, 'edit')}"),
    }  # fmt: skip
    assert (alices.expected, alices.reviewed, alices.consistent) == ("edit", "edit", True)
    # carol: a contributor added by hand (the dashboard's binding), view
    carols = entry(by_namespace, carol)
    assert [(p.role, p.via) for p in carols.paths] == [
        ("view", "contributor, added by hand (Kubeflow dashboard / KFAM)")
    ]
    assert (carols.expected, carols.reviewed) == ("view", "view")
    # the profile's service accounts, with their Kubeflow roles
    editor = entry(by_namespace, f"system:serviceaccount:{namespace}:default-editor")
    assert (editor.kind, editor.expected, editor.reviewed) == ("ServiceAccount", "edit", "edit")
    viewer = entry(by_namespace, f"system:serviceaccount:{namespace}:default-viewer")
    assert (viewer.expected, viewer.reviewed) == ("view", "view")
    # bob, removed from the group: no path in, and the authorizer agrees
    assert bob not in {e.identity for e in by_namespace.entries}
    assert namespace not in {e.namespace for e in of_bob.entries}
    assert all(e.consistent for e in by_namespace.entries), [
        (e.identity, e.expected, e.reviewed) for e in by_namespace.entries if not e.consistent
    ]
    # alice's view: the team namespace, with edit
    assert [(e.namespace, e.expected) for e in of_alice.entries] == [(namespace, "edit")]

    # the command itself, with the reader's kubeconfig: table and JSON
    kubeconfig = write_kubeconfig(control_plane, token, tmp_path / "reader.kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [sys.executable, "-m", "dna_hub.cli", "access"]
    table = subprocess.run(
        [*command, "--namespace", namespace], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:4] == ["NAMESPACE", "IDENTITY", "KIND", "ROLE"]
    assert "contributor, added by hand (Kubeflow dashboard / KFAM)" in table.stdout
    as_json = subprocess.run(
        [*command, "--user", alice, "--json"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    (found,) = json.loads(as_json.stdout)
    assert (found["namespace"], found["rbac_role"], found["subject_access_review"]) == (
        namespace,
        "edit",
        "edit",
    )


@pytest.mark.controlplane
@pytest.mark.slow
async def test_every_reader_permission_is_needed(
    hub_kube: KubeApi,  # noqa: F811
    admin_kube: KubeApi,  # noqa: F811
    admin_api: ApiClient,
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
) -> None:
    group = unique_name("risk")
    alice = f"alice.{group}@example.com"
    teams = parse_teams({group: "edit"})
    namespace = teams[group].namespace
    assert not (
        await make_sync(hub_kube).sync(alice, plan_for([group], teams, None), render_team)
    ).failed
    for index, permission in enumerate(ACCESS_PERMISSIONS):
        token = await reader_token(admin_api, permission, unique_name(f"w{index}"))
        async with client_for(control_plane, token) as api:
            with pytest.raises(ApiException) as info:
                await reports(api, namespace, alice)
        assert info.value.status == 403, (permission, info.value)
