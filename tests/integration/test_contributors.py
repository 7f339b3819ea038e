"""Team profiles and contributors on the control plane, as the hub's own identity.

The hub (ServiceAccount jupyterhub/hub with exactly helm-values/hub-rbac.yaml) provisions
team Profiles — owned by itself, so the profile controller stand-in makes it kubeflow-admin
of the team namespace — and writes KFAM-exact contributor bindings. Access is proven with
SubjectAccessReviews on the real API server (real RBAC, real ClusterRole aggregation by
kube-controller-manager over Kubeflow's own ClusterRoles from ../shared).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from dna_hub.errors import OwnershipConflict
from dna_hub.k8s.api import AUTHORIZATION_POLICY, PROFILE, ROLE_BINDING, KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import ProfileContext, RenderedProfile, render_profile
from dna_hub.policy.teams import (
    Team,
    contributor_binding_name,
    parse_teams,
    plan_for,
    team_owner,
)
from dna_hub.profiles.contributors import ContributorSync
from dna_hub.profiles.provisioning import ProfileProvisioner

pytestmark = [pytest.mark.controlplane]

HUB_IDENTITY = "system:serviceaccount:jupyterhub:hub"


def render_team(team: Team) -> RenderedProfile:
    return render_profile(
        ProfileContext(
            username=team.group,
            namespace=team.namespace,
            owner=team.owner,
            hub_namespace="jupyterhub",
            team=team.group,
        )
    )


def make_sync(api: KubeApi) -> ContributorSync:
    return ContributorSync(
        api,
        ProfileProvisioner(api, ready_timeout=60),
        ready_timeout=60,
        log=logging.getLogger("dna_hub.profiles.contributors"),
    )


@pytest_asyncio.fixture(loop_scope="session")
async def hub_kube(hub_api: ApiClient, standins: Any) -> KubeApi:
    return KubeApi(hub_api, request_timeout=10)


@pytest.fixture
def admin_kube(admin_api: ApiClient) -> KubeApi:
    return KubeApi(admin_api, request_timeout=10)


async def may(admin: ApiClient, user: str, verb: str, resource: str, namespace: str) -> bool:
    """A SubjectAccessReview: may ``user`` do ``verb`` on ``resource`` in ``namespace``?

    Asked once the API server's authorizer has seen every RoleBinding change made so far
    (rbac_barrier), so the answer never depends on how fast its cache catches up.
    """
    await rbac_barrier(admin, namespace)
    review = await client.AuthorizationV1Api(admin).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb=verb, resource=resource
                ),
            )
        ),
        _request_timeout=10,
    )
    return bool(review.status.allowed)


async def rbac_barrier(admin: ApiClient, namespace: str, timeout: float = 30) -> None:
    """Until the authorizer has seen every RoleBinding write so far in ``namespace``.

    Its RBAC cache follows a watch of RoleBindings, in order: once a RoleBinding created
    now (a sentinel, for a user nobody is) takes effect, every earlier create and delete has
    too. The sentinel is then deleted.
    """
    rbac = client.RbacAuthorizationV1Api(admin)
    sentinel = f"dna-hub-test-barrier-{uuid.uuid4().hex[:12]}"
    user = f"dna-hub-test:{sentinel}"
    await rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": sentinel},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kubeflow-view",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
        _request_timeout=10,
    )
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb="list", resource="pods"
            ),
        )
    )
    authorization = client.AuthorizationV1Api(admin)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not (
            await authorization.create_subject_access_review(review, _request_timeout=10)
        ).status.allowed:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"RBAC changes in {namespace} not in effect after {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await rbac.delete_namespaced_role_binding(sentinel, namespace, _request_timeout=10)


async def kfam_list(admin: KubeApi, namespace: str) -> list[tuple[str, str]]:
    """KFAM's own read (kfam/bindings.go List), reproduced: RoleBindings of a profile
    namespace with both annotations are contributors; such a binding must have exactly one
    subject (KFAM fails the whole read otherwise)."""
    found = []
    for binding in (await admin.list(ROLE_BINDING, namespace))["items"]:
        annotations = binding["metadata"].get("annotations") or {}
        if "user" not in annotations or "role" not in annotations:
            continue
        assert len(binding["subjects"]) == 1, binding["metadata"]["name"]
        roles = {"kubeflow-admin": "admin", "kubeflow-edit": "edit", "kubeflow-view": "view"}
        found.append((binding["subjects"][0]["name"], roles[binding["roleRef"]["name"]]))
    return sorted(found)


def dashboard_binding(namespace: str, user: str, role: str) -> dict[str, Any]:
    """A contributor added in the Kubeflow dashboard (KFAM), which dna_hub did not make."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": contributor_binding_name(user, role),
            "namespace": namespace,
            "annotations": {"user": user, "role": role},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"kubeflow-{role}",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


async def test_group_membership_grants_and_revokes_access(
    hub_kube: KubeApi, admin_kube: KubeApi, admin_api: ApiClient, unique_name: Callable
) -> None:
    group = unique_name("fraud")
    alice, bob = f"Alice.{group}@Example.com", f"bob.{group}@example.com"
    carol = f"carol.{group}@example.com"
    teams = parse_teams({group: "edit"})
    team = teams[group]
    namespace = team.namespace
    assert namespace == f"kubeflow-team-{group}"

    # alice logs in with group `fraud` (and one that is no team)
    plan = plan_for([group, "data-science"], teams, namespace_for("alice"))
    result = await make_sync(hub_kube).sync(alice, plan, render_team)
    assert not result.failed and result.ready == [team]
    name = contributor_binding_name(alice, "edit")
    assert sorted(result.created) == [(namespace, name), (namespace, name)]

    profile = await admin_kube.get(PROFILE, namespace)
    # owned by the team's own identity: the hub is no team's kubeflow-admin (issue 24)
    owner = team_owner(namespace)
    assert profile["spec"]["owner"] == {"kind": "User", "name": owner}
    # (kubeflow-admin there would let the hub read every Secret of the team)
    assert not await may(admin_api, HUB_IDENTITY, "get", "secrets", namespace)
    assert await may(admin_api, alice, "create", "pods", namespace)
    assert not await may(admin_api, bob, "create", "pods", namespace)
    assert await kfam_list(admin_kube, namespace) == sorted([(owner, "admin"), (alice, "edit")])
    policy = await admin_kube.get(AUTHORIZATION_POLICY, name, namespace)
    assert policy["metadata"]["annotations"] == {"user": alice, "role": "edit"}
    assert policy["spec"]["rules"][0]["when"] == [
        {"key": "request.headers[kubeflow-userid]", "values": [alice]}
    ]

    # carol was added in the Kubeflow dashboard: not dna_hub's
    await admin_kube.create(
        ROLE_BINDING, dashboard_binding(namespace, carol, "view"), field_manager="kfam"
    )
    carols = await admin_kube.get(ROLE_BINDING, contributor_binding_name(carol, "view"), namespace)

    # a second login changes nothing and costs four reads: the team Profile (digest up to
    # date) and its namespace (the owner check every path makes), and one label-selected
    # list per contributor kind
    before = hub_kube.requests
    again = await make_sync(hub_kube).sync(alice, plan, render_team)
    assert not again.created and not again.deleted and not again.failed
    assert hub_kube.requests - before == 4

    # alice is removed from the group at the provider and logs in again
    gone = await make_sync(hub_kube).sync(
        alice, plan_for(["data-science"], teams, namespace_for("alice")), render_team
    )
    assert sorted(gone.deleted) == [(namespace, name), (namespace, name)]
    assert not await may(admin_api, alice, "create", "pods", namespace)
    assert await admin_kube.get(ROLE_BINDING, name, namespace) is None
    assert await admin_kube.get(AUTHORIZATION_POLICY, name, namespace) is None
    after = await admin_kube.get(ROLE_BINDING, contributor_binding_name(carol, "view"), namespace)
    assert after == carols  # the dashboard's binding: not touched at all
    assert await kfam_list(admin_kube, namespace) == sorted([(owner, "admin"), (carol, "view")])


async def test_role_change_replaces_the_binding(
    hub_kube: KubeApi, admin_kube: KubeApi, admin_api: ApiClient, unique_name: Callable
) -> None:
    group = unique_name("risk")
    dave = f"dave.{group}@example.com"
    as_editor = parse_teams({group: "edit"})
    await make_sync(hub_kube).sync(dave, plan_for([group], as_editor, None), render_team)
    namespace = as_editor[group].namespace
    assert await may(admin_api, dave, "create", "pods", namespace)

    as_viewer = parse_teams({group: "view"})
    result = await make_sync(hub_kube).sync(dave, plan_for([group], as_viewer, None), render_team)
    assert {n for _, n in result.deleted} == {contributor_binding_name(dave, "edit")}
    assert {n for _, n in result.created} == {contributor_binding_name(dave, "view")}
    assert not await may(admin_api, dave, "create", "pods", namespace)
    assert await may(admin_api, dave, "list", "pods", namespace)
    assert (dave, "view") in await kfam_list(admin_kube, namespace)


async def test_binding_made_by_someone_else_is_never_adopted(
    hub_kube: KubeApi, admin_kube: KubeApi, unique_name: Callable
) -> None:
    group = unique_name("ops")
    erin = f"erin.{group}@example.com"
    teams = parse_teams({group: "edit"})
    namespace = teams[group].namespace
    first = await make_sync(hub_kube).sync(f"x.{erin}", plan_for([group], teams, None), render_team)
    assert not first.failed  # the team profile exists now

    # erin was made an editor in the dashboard before dna_hub knew her
    name = contributor_binding_name(erin, "edit")
    await admin_kube.create(
        ROLE_BINDING, dashboard_binding(namespace, erin, "edit"), field_manager="kfam"
    )
    before = await admin_kube.get(ROLE_BINDING, name, namespace)
    result = await make_sync(hub_kube).sync(erin, plan_for([group], teams, None), render_team)
    assert result.foreign == [(namespace, name)]
    assert result.created == [(namespace, name)]  # only the AuthorizationPolicy

    # she leaves the group: dna_hub removes what it made, never the dashboard's binding
    result = await make_sync(hub_kube).sync(erin, plan_for([], teams, None), render_team)
    assert result.deleted == [(namespace, name)]
    assert await admin_kube.get(AUTHORIZATION_POLICY, name, namespace) is None
    assert await admin_kube.get(ROLE_BINDING, name, namespace) == before


async def test_hostile_group_names_on_the_api_server(
    hub_kube: KubeApi, admin_kube: KubeApi, admin_api: ApiClient, unique_name: Callable
) -> None:
    tag = unique_name("h")
    groups = [f"Fraud.Detection.{tag}", f"{tag}-" + "g" * 200, f"équipe-{tag}-欺诈"]
    teams = parse_teams(dict.fromkeys(groups, "edit"))
    frank = f"frank.{tag}@example.com"
    result = await make_sync(hub_kube).sync(frank, plan_for(groups, teams, None), render_team)
    assert not result.failed
    namespaces = {teams[g].namespace for g in groups}
    assert len(namespaces) == 3
    for namespace in namespaces:
        assert len(namespace) <= 63
        assert await may(admin_api, frank, "create", "pods", namespace)
        profile = await admin_kube.get(PROFILE, namespace)
        assert profile["metadata"]["annotations"]["dna-hub.io/team-group"] in groups


async def test_team_namespace_owned_by_someone_else_is_refused_with_nothing_written(
    hub_kube: KubeApi,
    admin_kube: KubeApi,
    unique_name: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = unique_name("taken")
    teams = parse_teams({group: "edit", f"{group}-ok": "edit"})
    taken = teams[group].namespace
    # a personal profile of a user whose name happened to be "team-<group>"
    squatter = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": taken},
        "spec": {"owner": {"kind": "User", "name": "mallory@example.com"}},
    }
    await admin_kube.apply(squatter, field_manager="test")
    before = await admin_kube.get(PROFILE, taken)
    grace = f"grace.{group}@example.com"
    with caplog.at_level(logging.ERROR, logger="dna_hub.profiles.contributors"):
        result = await make_sync(hub_kube).sync(
            grace, plan_for([group, f"{group}-ok"], teams, None), render_team
        )
    assert isinstance(result.failed[group], OwnershipConflict)
    assert [t.group for t in result.ready] == [f"{group}-ok"]  # the other team goes on
    assert f"Team profile {taken} of group {group!r} not provisioned" in caplog.text
    assert "owned by 'mallory@example.com'" in caplog.text
    # nothing written: the Profile is unchanged and no binding was made there
    after = await admin_kube.get(PROFILE, taken)
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert "dna-hub" not in {m["manager"] for m in after["metadata"]["managedFields"]}
    name = contributor_binding_name(grace, "edit")
    assert await admin_kube.get(ROLE_BINDING, name, taken) is None
    assert (teams[f"{group}-ok"].namespace, name) in result.created


async def test_team_on_a_personal_namespace_is_refused_with_a_log_line(
    hub_kube: KubeApi,
    admin_kube: KubeApi,
    unique_name: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # an admin template without a team prefix: group "<user>" is that user's profile
    username = unique_name("henry")
    teams = parse_teams({username: "edit"}, template="kubeflow-{group}")
    identity = f"{username}@example.com"
    with caplog.at_level(logging.WARNING, logger="dna_hub.profiles.contributors"):
        result = await make_sync(hub_kube).sync(
            identity, plan_for([username], teams, namespace_for(username)), render_team
        )
    assert list(result.failed) == [username] and not result.ready and not result.created
    assert f"Team of group {username!r} refused for {identity}" in caplog.text
    assert "personal profile namespace" in caplog.text
    assert await admin_kube.get(PROFILE, namespace_for(username)) is None  # nothing written
