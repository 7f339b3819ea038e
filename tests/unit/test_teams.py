"""Team policy (pure): group → team namespace, plans from verified groups, KFAM-exact objects."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from traitlets import TraitError

from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import ProfileContext, render_profile
from dna_hub.policy.teams import (
    CONTRIBUTOR_LABEL,
    DEFAULT_INGRESS_GATEWAY_PRINCIPAL,
    DEFAULT_KFP_UI_PRINCIPAL,
    Contributor,
    TeamConfigError,
    contributor_binding_name,
    contributor_objects,
    parse_teams,
    plan_for,
    team_like_namespace,
    team_namespace,
)
from tests.unit.test_naming import DNS_1123_LABEL, HOSTILE_USERNAMES

HOSTILE_GROUPS = [
    *HOSTILE_USERNAMES,
    "fraud",
    "Fraud",
    "FRAUD",
    "fraud.detection",
    "fraud.Detection",
    "/corp/risk/fraud",
    "g" * 200,
    "g" * 199 + "h",
    "équipe-fraude",
    "欺诈",
    "🙂",
    "alice",  # a group named like a user
    "kubeflow-alice",  # ... like another user's profile
    "team-alice",
]


def test_default_team_namespace_is_readable() -> None:
    assert team_namespace("fraud") == "kubeflow-team-fraud"


@pytest.mark.parametrize("group", HOSTILE_GROUPS)
def test_hostile_group_names_give_valid_short_stable_namespaces(group: str) -> None:
    namespace = team_namespace(group)
    assert DNS_1123_LABEL.match(namespace), namespace
    assert len(namespace) <= 63
    assert namespace.startswith("kubeflow-team-")
    assert team_namespace(group) == namespace  # deterministic


def test_hostile_group_names_map_to_distinct_namespaces() -> None:
    groups = sorted(set(HOSTILE_GROUPS))
    teams = parse_teams(dict.fromkeys(groups, "edit"))
    namespaces = [teams[g].namespace for g in groups]
    assert len(set(namespaces)) == len(groups)
    # ... and none is the personal profile of a user named like the group; the only
    # overlap the two default templates allow is a user named "team-<group>", whom the
    # spawner refuses (test_user_named_like_a_team_is_refused)
    personal = {namespace_for(g): g for g in groups}
    overlap = {personal[ns] for ns in set(personal) & set(namespaces)}
    assert overlap == {"team-alice"}
    assert team_namespace("alice") == namespace_for("team-alice")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_team_namespaces_are_injective(a: str, b: str) -> None:
    if a != b:
        assert team_namespace(a) != team_namespace(b)


def test_reserved_namespace_is_refused_naming_the_group() -> None:
    with pytest.raises(TeamConfigError, match=r"team group 'kube-system'.*reserved"):
        parse_teams({"kube-system": "edit"}, template="{group}")


@pytest.mark.parametrize(
    ("config", "template", "message"),
    [
        ({"fraud": "admin"}, "kubeflow-team-{group}", r"'fraud': role 'admin' is not one of"),
        ({"fraud": {"role": "edit", "owner": "x"}}, "kubeflow-team-{group}", "unknown settings"),
        ({"fraud": ["edit"]}, "kubeflow-team-{group}", "expected 'edit', 'view' or a dict"),
        ({"fraud": {"resource_quota": "8"}}, "kubeflow-team-{group}", "ResourceQuotaSpec"),
        ({"": "edit"}, "kubeflow-team-{group}", "non-empty string"),
        ({"fraud": "edit"}, "kubeflow-team-{username}", r"\{group\} exactly once"),
        ({"fraud": "edit"}, "team-{group}-{username}", r"\{group\} exactly once"),
        ({"fraud": "edit"}, "Team-{group}", "lowercase letters"),
        ({"fraud": "edit"}, "kubeflow--{group}", "'--'"),
        ({"fraud": "edit"}, "x" * 55 + "{group}", "leaves 8 characters"),
    ],
)
def test_bad_team_config_is_refused_clearly(
    config: dict[str, Any], template: str, message: str
) -> None:
    with pytest.raises(TeamConfigError, match=message):
        parse_teams(config, template=template)


def test_each_team_is_owned_by_its_own_identity_never_the_hub() -> None:
    teams = parse_teams({"fraud": "edit", "risk": "view"})
    assert teams["fraud"].owner == "dna-hub-team:kubeflow-team-fraud"
    assert teams["risk"].owner == "dna-hub-team:kubeflow-team-risk"
    assert not any(t.owner.startswith("system:") for t in teams.values())


def test_team_settings() -> None:
    teams = parse_teams(
        {"fraud": "edit", "risk": {"role": "view", "resource_quota": {"hard": {"cpu": "4"}}}},
    )
    assert teams["fraud"].role == "edit" and teams["fraud"].resource_quota is None
    assert teams["risk"].role == "view"
    assert teams["risk"].resource_quota == {"hard": {"cpu": "4"}}
    assert {t.owner for t in teams.values()} == {
        f"dna-hub-team:{t.namespace}" for t in teams.values()
    }
    assert parse_teams({"x": {}})["x"].role == "edit"


def test_plan_matches_verified_groups_exactly() -> None:
    teams = parse_teams({"fraud": "edit", "risk": "view", "Ops": "edit"})
    plan = plan_for(
        ["fraud", "FRAUD", "risk", "ops", None, 7, ["fraud"], "unrelated"],
        teams,
        "kubeflow-alice",
    )
    assert [t.group for t in plan.teams] == ["fraud", "risk"]
    assert [t.group for t in plan.editable()] == ["fraud"]  # view members get no notebook
    assert not plan.refused
    assert plan.contributors("Alice@Example.com") == {
        Contributor("Alice@Example.com", "kubeflow-team-fraud", "edit"),
        Contributor("Alice@Example.com", "kubeflow-team-risk", "view"),
    }
    assert plan_for([], teams, "kubeflow-alice").teams == ()


@pytest.mark.parametrize(
    "view_groups", ["fraud-viewers", [""], ["fraud"], [7], {"fraud-viewers": 1}]
)
def test_bad_view_groups_are_refused(view_groups: Any) -> None:
    with pytest.raises(TeamConfigError, match="view_groups must be a list of other group"):
        parse_teams({"fraud": {"role": "edit", "view_groups": view_groups}})


def test_view_groups_make_viewers_of_the_same_team() -> None:
    teams = parse_teams({"fraud": {"role": "edit", "view_groups": ["fraud-viewers"]}})
    namespace = "kubeflow-team-fraud"
    # bob is in the view group: a view contributor of the team, no notebook in it
    bob = plan_for(["data-science", "fraud-viewers"], teams, "kubeflow-bob")
    assert [(t.group, t.namespace, t.role) for t in bob.teams] == [("fraud", namespace, "view")]
    assert bob.editable() == ()
    assert bob.contributors("bob@example.com") == {
        Contributor("bob@example.com", namespace, "view")
    }
    # alice is in the team's group: edit, whatever view group she is also in
    alice = plan_for(["fraud", "fraud-viewers"], teams, "kubeflow-alice")
    assert alice.contributors("a@example.com") == {Contributor("a@example.com", namespace, "edit")}
    assert [t.group for t in alice.editable()] == ["fraud"]
    # matched exactly, as team groups are
    assert plan_for(["Fraud-Viewers"], teams, None).teams == ()


def test_team_that_is_the_users_personal_profile_is_refused() -> None:
    # an admin template without a team prefix: group "alice" lands on alice's profile
    teams = parse_teams({"alice": "edit", "fraud": "edit"}, template="kubeflow-{group}")
    plan = plan_for(["alice", "fraud"], teams, namespace_for("alice"))
    assert [t.group for t in plan.teams] == ["fraud"]
    ((group, reason),) = plan.refused
    assert group == "alice"
    assert "kubeflow-alice" in reason and "personal profile" in reason


# --- KFAM-exact contributor objects --------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "role", "name"),
    [
        # kubeflow/dashboard kfam/bindings.go getBindingName, by hand
        ("alice@example.com", "edit", "user-alice-example-com-clusterrole-edit"),
        ("Alice.Smith@Example.com", "view", "user-alice-smith-example-com-clusterrole-view"),
        ("a..b__c@x.io", "edit", "user-a-b-c-x-io-clusterrole-edit"),
        ("zoë@x.io", "edit", "user-zo-x-io-clusterrole-edit"),
        ("-lead@x.io-", "edit", "user-lead-x-io-clusterrole-edit"),
    ],
)
def test_binding_name_is_kfams(identity: str, role: str, name: str) -> None:
    assert contributor_binding_name(identity, role) == name


def test_binding_name_refuses_other_roles() -> None:
    with pytest.raises(ValueError, match="admin"):
        contributor_binding_name("a@x.io", "admin")


def test_contributor_objects_are_what_kfam_writes_and_reads() -> None:
    contributor = Contributor("Alice.Smith@Example.com", "kubeflow-team-fraud", "edit")
    binding, policy = contributor_objects(contributor)
    name = "user-alice-smith-example-com-clusterrole-edit"
    for obj in (binding, policy):
        assert obj["metadata"]["name"] == name
        assert obj["metadata"]["namespace"] == "kubeflow-team-fraud"
        assert obj["metadata"]["annotations"] == {
            "user": "Alice.Smith@Example.com",
            "role": "edit",
        }
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dna-hub"
        assert re.fullmatch(r"[0-9a-f]{40}", obj["metadata"]["labels"][CONTRIBUTOR_LABEL])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kubeflow-edit",
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "Alice.Smith@Example.com"}
    ]
    assert policy["spec"] == {
        "rules": [
            {
                "from": [
                    {
                        "source": {
                            "principals": [
                                DEFAULT_INGRESS_GATEWAY_PRINCIPAL,
                                DEFAULT_KFP_UI_PRINCIPAL,
                            ]
                        }
                    }
                ],
                "when": [
                    {
                        "key": "request.headers[kubeflow-userid]",
                        "values": ["Alice.Smith@Example.com"],
                    }
                ],
            }
        ]
    }
    # no action: Istio's default, ALLOW, as KFAM leaves it
    assert "action" not in policy["spec"]
    # a hostile identity stays data
    evil = Contributor('x"\n  - kind: Group\n    name: system:masters', "ns", "view")
    binding, _ = contributor_objects(evil)
    assert len(binding["subjects"]) == 1
    assert yaml.safe_load(yaml.safe_dump(binding))["subjects"][0]["name"] == evil.identity


# --- a team profile is the same templates with the team's data ------------------------------


def test_team_profile_renders_from_the_same_templates() -> None:
    teams = parse_teams({"Fraud.Team": {"role": "edit", "resource_quota": {"hard": {"cpu": "4"}}}})
    team = teams["Fraud.Team"]
    personal = render_profile(
        ProfileContext(
            username="alice",
            namespace="kubeflow-alice",
            owner="alice@example.com",
            hub_namespace="jupyterhub",
        )
    )
    shared = render_profile(
        ProfileContext(
            username=team.group,
            namespace=team.namespace,
            owner=team.owner,
            hub_namespace="jupyterhub",
            resource_quota=team.resource_quota,
            team=team.group,
        )
    )
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in personal.namespaced)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in shared.namespaced) == kinds
    assert shared.profile["metadata"]["name"] == team.namespace
    assert shared.profile["spec"]["owner"] == {"kind": "User", "name": team.owner}
    assert team.owner == f"dna-hub-team:{team.namespace}"
    assert shared.profile["spec"]["resourceQuotaSpec"] == {"hard": {"cpu": "4"}}
    assert shared.profile["metadata"]["annotations"] == {"dna-hub.io/team-group": "Fraud.Team"}
    assert {o["metadata"]["namespace"] for o in shared.namespaced} == {team.namespace}


# --- the spawner's traits ---------------------------------------------------------------------


def spawner(username: str = "alice", **config: Any) -> Any:
    from unittest import mock

    from dna_hub import DnaSpawner

    with mock.patch("kubespawner.spawner.load_config"):
        user = SimpleNamespace(
            name=username, id=1, url=f"/user/{username}/", groups=[], settings={}
        )
        hub = SimpleNamespace(api_url="http://h/hub/api", public_host="", url="/", base_url="/")
        return DnaSpawner(user=user, hub=hub, _mock=True, hub_namespace="jupyterhub", **config)


async def test_bad_team_config_fails_at_config_time() -> None:
    with pytest.raises(TraitError, match="role 'owner'"):
        spawner(team_profiles={"fraud": "owner"})
    with pytest.raises(TraitError, match=r"\{group\}"):
        spawner(team_namespace_template="team-{username}")


async def test_team_defaults() -> None:
    s = spawner()
    assert s.team_profiles == {} and s.profile_list == []  # no teams: no spawn form
    assert s.team_namespace_template == "kubeflow-team-{group}"
    assert callable(spawner(team_profiles={"fraud": "edit"}).profile_list)


async def test_user_named_like_a_team_is_refused() -> None:
    from dna_hub.errors import NamingError

    s = spawner("team-alice", team_profiles={"alice": "edit"})
    assert s.namespace == "kubeflow-team-alice"
    with pytest.raises(NamingError, match=r"team 'alice'.*nothing written") as e:
        s.check_personal_namespace(s.user.name, s.namespace)
    assert "maps to a team" in e.value.user_message
    # Issue 25.7: refused even when group "alice" is no configured team (yet): a team
    # added later would share the namespace with the user.
    for other in (spawner("team-alice", team_profiles={"bob": "edit"}), spawner("team-alice")):
        with pytest.raises(NamingError, match="has the form of team_namespace_template") as e:
            other.check_personal_namespace(other.user.name, other.namespace)
        assert "reserved for team profiles" in e.value.user_message


async def chosen_team(s: Any) -> Any:
    """The team a spawn of ``s`` would run in, as DnaSpawner._start asks for it."""
    from dna_hub.hub import team_choice

    return await team_choice.chosen_team(
        s,
        slug=(s.user_options or {}).get("profile"),
        username=s.user.name,
        server_name=s.name,
        load_auth_state=lambda: s.user.get_auth_state(),
    )


async def test_only_configured_team_slugs_are_team_choices() -> None:
    from unittest import mock

    from dna_hub.errors import TeamNotAllowed

    # an admin's own profile_list keeps working, with or without teams
    s = spawner(profile_list=[{"display_name": "GPU", "slug": "gpu"}])
    s.user_options = {"profile": "gpu"}
    assert await chosen_team(s) is None
    s = spawner(team_profiles={"fraud": "edit"})
    for slug in ("gpu", "personal", "kubeflow-alice", ""):
        s.user_options = {"profile": slug}
        assert await chosen_team(s) is None
    # a team's slug is re-checked against the verified groups, whatever the form posted
    s.orm_spawner = SimpleNamespace(name="t", server=None)
    s.user_options = {"profile": "kubeflow-team-fraud"}
    s.user.get_auth_state = mock.AsyncMock(return_value={"groups": ["Fraud", "fraud "]})
    with pytest.raises(TeamNotAllowed, match="not among their edit teams"):
        await chosen_team(s)
    s.user.get_auth_state = mock.AsyncMock(return_value={"groups": ["fraud"]})
    assert (await chosen_team(s)).namespace == "kubeflow-team-fraud"
    # groups posted anywhere but the verified token's auth_state count for nothing
    s.user.groups = [SimpleNamespace(name="fraud")]
    s.user.get_auth_state = mock.AsyncMock(return_value={})
    with pytest.raises(TeamNotAllowed):
        await chosen_team(s)


async def test_spawn_form_only_where_there_is_a_choice() -> None:
    from unittest import mock

    auth_state = mock.AsyncMock(return_value={"groups": ["fraud", "risk"]})
    s = spawner(team_profiles={"fraud": "edit", "risk": "view"})
    s.user.get_auth_state = auth_state
    assert await s.get_options_form() == ""  # the default server: personal, no form
    s.orm_spawner = SimpleNamespace(name="work", server=None)
    form = await s.get_options_form()
    assert 'value="personal"' in form and 'value="kubeflow-team-fraud"' in form
    assert "kubeflow-team-risk" not in form  # view members get no notebook there
    s.user.get_auth_state = mock.AsyncMock(return_value={"groups": ["risk"]})
    assert await s.get_options_form() == ""  # no edit team: no choice, no form


# --- issue 25.7: usernames whose namespace has the team namespace form ---------------------


@pytest.mark.parametrize(
    ("namespace", "template", "team_like"),
    [
        ("kubeflow-team-x", "kubeflow-team-{group}", True),
        ("kubeflow-team-x---1a2b3c4d", "kubeflow-team-{group}", True),
        ("kubeflow-team-", "kubeflow-team-{group}", False),  # no group part
        ("kubeflow-teamx", "kubeflow-team-{group}", False),
        ("kubeflow-alice", "kubeflow-team-{group}", False),
        ("kubeflow-x-team", "{group}-team", True),  # user "x-team" vs group "kubeflow-x"
        ("kubeflow-alice", "{group}-team", False),
    ],
)
def test_team_like_namespace(namespace: str, template: str, team_like: bool) -> None:
    assert team_like_namespace(namespace, template) is team_like


def test_team_like_namespace_names_a_bad_template() -> None:
    with pytest.raises(TeamConfigError, match="exactly once"):
        team_like_namespace("kubeflow-x", "kubeflow-team")


def test_team_like_username_is_refused_by_render() -> None:
    """`dna-hub render --user team-x` (no team configured): exit 2, the problem named."""
    from tests.unit.test_cli_render import render

    result = render("--user", "team-x")
    assert result.returncode == 2, result.stdout
    assert "'kubeflow-team-x'" in result.stderr
    assert "has the form of team_namespace_template 'kubeflow-team-{group}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert render("--user", "teamx", "--owner", "teamx@example.com").returncode == 0


def test_teams_need_per_user_origins_or_the_risk_accepted():
    """Issue 25.3: team profiles without JupyterHub.subdomain_host are a clear config error."""
    from traitlets.config import Config

    from dna_hub.errors import ConfigurationError
    from dna_hub.hub.settings import DnaSettings

    config = Config({"DnaSpawner": {"team_profiles": {"ml": "edit"}}})
    settings = DnaSettings.from_config(config)
    with pytest.raises(ConfigurationError, match=r"JupyterHub\.subdomain_host") as error:
        settings.check_team_isolation("")
    assert "team_shared_origin_risk_accepted" in error.value.detail
    settings.check_team_isolation("https://hub.example.com")  # per-user origins: fine
    DnaSettings.from_config(Config()).check_team_isolation("")  # no teams: fine
    config.DnaSpawner.team_shared_origin_risk_accepted = True
    DnaSettings.from_config(config).check_team_isolation("")  # the risk explicitly accepted


def test_legacy_envoy_filter_gives_team_notebooks_the_team_identity_never_the_hubs():
    """Issue 25.2: in legacy header mode a team notebook's requests to ml-pipeline carry
    the team's own identity (dna-hub-team:<namespace>), never the hub's service account
    (which would be admin everywhere) nor a member's."""
    import json as _json

    from traitlets.config import Config

    from dna_hub.hub.settings import DnaSettings, notebook_server_from_config
    from dna_hub.policy.teams import team_owner

    config = Config(
        {
            "DnaSpawner": {
                "team_profiles": {"ml": "edit"},
                "legacy_envoy_filter": True,
                "legacy_ml_pipeline_policy": True,
                "hub_namespace": "jupyterhub",
            }
        }
    )
    settings = DnaSettings.from_config(config)
    team = settings.teams()["ml"]
    rendered = settings.render_team(team, notebook_server_from_config(config))
    (envoy,) = [o for o in rendered.namespaced if o["kind"] == "EnvoyFilter"]
    (header,) = envoy["spec"]["configPatches"][0]["patch"]["value"]["request_headers_to_add"]
    assert header["header"] == {"key": "kubeflow-userid", "value": team_owner(team.namespace)}
    assert rendered.profile["spec"]["owner"]["name"] == team_owner(team.namespace)
    for obj in [rendered.profile, *rendered.namespaced]:
        text = _json.dumps(obj)
        assert "system:serviceaccount:jupyterhub" not in text, obj
        assert "serviceaccount:jupyterhub:hub" not in text, obj
