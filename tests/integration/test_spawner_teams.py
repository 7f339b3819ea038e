"""DnaSpawner with team profiles on the control plane: the spawn form, the server-side
re-check, team notebooks as named servers in the team namespace, sync at every spawn.

Same setup as tests/integration/test_spawner.py (the hub's own identity, the stand-ins); the user's
groups are what the authenticator stored in auth_state from the verified id_token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from devstack.standins import Kube
from dna_hub import DnaSpawner
from dna_hub.errors import TeamNotAllowed
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.teams import contributor_binding_name, team_namespace
from tests.integration.test_contributors import may
from tests.integration.test_kubespawner_standins import fake_hub_api  # noqa: F401 - a fixture
from tests.integration.test_spawner import make_spawner, start_with_progress  # noqa: F401 - a fixture

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

RB = "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings/{}"


def with_groups(spawner: DnaSpawner, *groups: Any) -> DnaSpawner:
    spawner.user.auth_state["groups"] = list(groups)
    # team profiles need per-user origins (issue 25.3)
    spawner.user.settings["subdomain_host"] = "https://hub.example.test"
    return spawner


async def test_team_notebook_is_a_named_server_in_the_team_namespace(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    standins_kube: Kube,
    admin_api: ApiClient,
    unique_name: Callable[..., str],
) -> None:
    username, group = unique_name("alice"), unique_name("fraud")
    owner = f"{username}@example.com"
    teams = {group: "edit", f"{group}-viewers": "view"}
    namespace = team_namespace(group)

    # the default server is the personal one: no form
    default = with_groups(make_spawner(username, owner, team_profiles=teams), group)
    assert await default.profile_list(default) == []

    spawner = with_groups(
        make_spawner(username, owner, server_name="fraud", team_profiles=teams),
        group,
        f"{group}-viewers",
        "not-a-team",
    )
    choices = await spawner.profile_list(spawner)
    # edit teams only: a view member gets no notebook in the team
    assert [c["slug"] for c in choices] == ["personal", namespace]
    assert choices[0]["default"] is True

    spawner.user_options = {"profile": namespace}
    _, messages = await start_with_progress(spawner)
    assert spawner.namespace == namespace
    assert f"Waiting for namespace {namespace}…" in messages  # the team's provisioning
    pod = await standins_kube.get(f"/api/v1/namespaces/{namespace}/pods/{spawner.pod_name}")
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "default-editor"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert namespace in env.values()  # Kale's KFP namespace is the team's
    # she is a contributor of both teams, as KFAM writes it
    assert await may(admin_api, owner, "create", "pods", namespace)
    viewers = team_namespace(f"{group}-viewers")
    assert await may(admin_api, owner, "list", "pods", viewers)
    assert not await may(admin_api, owner, "create", "pods", viewers)
    # no personal profile was needed for a team server
    personal = namespace_for(username)
    assert await standins_kube.get_or_none(f"/apis/kubeflow.org/v1/profiles/{personal}") is None

    # after a hub restart, the server is found in the team namespace by policy
    state = spawner.get_state()
    assert state["dna_team_group"] == group
    restored = make_spawner(username, owner, server_name="fraud", team_profiles=teams)
    restored.load_state({**state, "namespace": "somewhere-else"})
    assert restored.namespace == namespace
    assert restored.pod_name == spawner.pod_name
    assert f"{namespace}/{restored.pod_name}" in restored.pod_reflector.pods  # found running


async def test_the_form_choice_is_rechecked_at_spawn(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    standins_kube: Kube,
    unique_name: Callable[..., str],
) -> None:
    username, group = unique_name("bob"), unique_name("fraud")
    owner = f"{username}@example.com"
    teams = {group: "edit", f"{group}-viewers": "view"}
    for groups, server, slug, message in [
        ([], "x", team_namespace(group), "not an editor"),  # not a member (any more)
        ([group.upper()], "x", team_namespace(group), "not an editor"),  # another group
        ([f"{group}-viewers"], "x", team_namespace(f"{group}-viewers"), "not an editor"),
        ([group], "", team_namespace(group), "named servers"),  # the personal server
    ]:
        spawner = with_groups(
            make_spawner(username, owner, server_name=server, team_profiles=teams), *groups
        )
        spawner.user_options = {"profile": slug}
        with pytest.raises(TeamNotAllowed) as info:
            await start_with_progress(spawner)
        assert message in info.value.jupyterhub_message
        assert spawner.namespace == namespace_for(username)
    for namespace in (team_namespace(group), namespace_for(username)):
        pods = await standins_kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods")
        assert pods is None or pods["items"] == []


async def test_every_spawn_keeps_contributors_in_step_with_the_groups(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    standins_kube: Kube,
    admin_api: ApiClient,
    unique_name: Callable[..., str],
) -> None:
    username, group = unique_name("carol"), unique_name("risk")
    owner = f"Carol.{username}@Example.com"
    teams = {group: "edit"}
    namespace = team_namespace(group)
    binding = RB.format(namespace, contributor_binding_name(owner, "edit"))

    spawner = with_groups(make_spawner(username, owner, team_profiles=teams), group)
    await start_with_progress(spawner)
    assert spawner.namespace == namespace_for(username)  # personal server, personal profile
    assert (await standins_kube.get(binding))["metadata"]["annotations"]["user"] == owner
    assert await may(admin_api, owner, "create", "pods", namespace)

    # removed from the group at the provider; the next login stores the new groups
    await asyncio.wait_for(spawner.stop(), timeout=60)
    spawner.clear_state()
    with_groups(spawner, "data-science")
    await start_with_progress(spawner)
    assert await standins_kube.get_or_none(binding) is None
    assert not await may(admin_api, owner, "create", "pods", namespace)
