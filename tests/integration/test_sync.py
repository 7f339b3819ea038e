"""``dna-hub sync`` on the control plane, as the CronJob's own identity (dna-hub-sync.yaml).

Profiles are provisioned as spawns make them (the hub's identity, the default templates);
then a template changes — one object gets a label, another is dropped — and sync rolls it
out. The profile controller is the stand-in; everything else is the real API server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from devstack.controlplane import ControlPlane
from devstack.paths import REPO_ROOT
from dna_hub.cli.context import settings_from
from dna_hub.cli.render import load_hub_config
from dna_hub.cli.sync import renderer, team_renderer
from dna_hub.k8s.api import AUTHORIZATION_POLICY, PROFILE, ROLE_BINDING, KubeApi
from dna_hub.k8s.retry import RetryPolicy
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import PROFILE_LABEL
from dna_hub.policy.teams import contributor_binding_name, plan_for
from dna_hub.profiles.contributors import ContributorSync
from dna_hub.profiles.managed import is_managed
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION, ProfileProvisioner
from dna_hub.profiles.sync import ProfileSync
from tests.integration.test_sync_rbac import client_for, sync_token, write_kubeconfig
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.controlplane]

TEMPLATES = REPO_ROOT / "profile-templates"
NETPOL = "21-notebook-networkpolicy.yaml.j2"
PODDEFAULT = "10-poddefault-ml-pipeline.yaml.j2"
NEW_LABEL = "dna-hub.test/rolled-out"


def hub_config(path: Path, template_dir: Path) -> Path:
    path.write_text(
        "c = get_config()  # noqa\n"
        f"c.DnaSpawner.profile_template_dirs = [{str(template_dir)!r}]\n"
        "c.DnaSpawner.profile_ready_timeout = 60\n"
    )
    return path


def change_templates(template_dir: Path) -> None:
    """Add a label to the notebook NetworkPolicy; drop the PodDefault."""
    netpol = (TEMPLATES / NETPOL).read_text()
    marker = "  namespace: {{ namespace }}\n"
    assert marker in netpol
    labelled = netpol.replace(marker, marker + f'  labels:\n    {NEW_LABEL}: "yes"\n', 1)
    (template_dir / NETPOL).write_text(labelled)
    (template_dir / PODDEFAULT).write_text("")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    templates = tmp_path / "templates"
    templates.mkdir()
    return templates, hub_config(tmp_path / "jupyterhub_config.py", templates)


async def provision_users(hub_api: ApiClient, config: Path, users: list[str]) -> None:
    """What the users' spawns did: the default templates, applied as the hub."""
    render = renderer(load_hub_config(str(config)))
    kube = KubeApi(hub_api, request_timeout=10, retry=RetryPolicy(attempts=4))
    limit = asyncio.Semaphore(8)

    async def one(user: str) -> None:
        async with limit:
            rendered = render(user, f"{user}@example.com", ["data-science"])
            await ProfileProvisioner(kube, ready_timeout=60).ensure(rendered)

    await asyncio.gather(*(one(u) for u in users))


def profile_state(profile: dict[str, Any]) -> str:
    """What sync could change: labels, annotations, spec, dna_hub's field-manager entries.
    (Not the resourceVersion: the profile controller stand-in adds its finalizer.)"""
    metadata = profile["metadata"]
    managers = [
        (m["manager"], m.get("time"), json.dumps(m.get("fieldsV1"), sort_keys=True))
        for m in metadata.get("managedFields", [])
        if m["manager"].startswith("dna-hub")
    ]
    return json.dumps(
        [metadata.get("labels"), metadata.get("annotations"), profile["spec"], managers],
        sort_keys=True,
    )


async def snapshot(admin: KubeApi, namespaces: list[str]) -> dict[str, str]:
    """Every Profile's state; the resourceVersion of every object labelled as a profile's."""
    versions: dict[str, str] = {}
    for ns in namespaces:
        profile = await admin.get(PROFILE, ns)
        if profile:
            versions[f"Profile {ns}"] = profile_state(profile)
        for api_version, kind in (
            ("kubeflow.org/v1alpha1", "PodDefault"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("v1", "LimitRange"),
            ("security.istio.io/v1", "AuthorizationPolicy"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ):
            k = await admin.kind_for(api_version, kind)
            for item in (await admin.list(k, ns)).get("items", []):
                if PROFILE_LABEL not in (item["metadata"].get("labels") or {}):
                    continue  # the profile controller stand-in's objects, made meanwhile
                versions[f"{kind} {ns}/{item['metadata']['name']}"] = item["metadata"][
                    "resourceVersion"
                ]
    return versions


async def assert_converged(admin: KubeApi, config: Path, users: list[str]) -> None:
    render = renderer(load_hub_config(str(config)))
    netpol_kind = await admin.kind_for("networking.k8s.io/v1", "NetworkPolicy")
    poddefault_kind = await admin.kind_for("kubeflow.org/v1alpha1", "PodDefault")
    for user in users:
        ns = namespace_for(user)
        rendered = render(user, f"{user}@example.com", ["data-science"])
        profile = await admin.get(PROFILE, ns)
        assert profile["metadata"]["annotations"][DIGEST_ANNOTATION] == rendered.digest, ns
        netpol = await admin.get(netpol_kind, "dna-hub-notebook-ingress", ns)
        assert netpol["metadata"]["labels"][NEW_LABEL] == "yes", ns
        assert await admin.get(poddefault_kind, "access-ml-pipeline", ns) is None, ns


def run_cli(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", "sync", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},
    )


async def unmanaged_profile(admin: KubeApi, user: str) -> None:
    """A Profile someone else made (no dna_hub label, another field manager)."""
    await admin.create(
        PROFILE,
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": namespace_for(user)},
            "spec": {"owner": {"kind": "User", "name": "someone@example.com"}},
        },
        field_manager="someone-else",
    )


async def foreign_object(admin: KubeApi, namespace: str) -> None:
    """An object in a managed profile's namespace carrying dna_hub's labels, written by
    someone else: not rendered by the templates, yet sync must not prune it."""
    kind = await admin.kind_for("networking.k8s.io/v1", "NetworkPolicy")
    await admin.create(
        kind,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "foreign",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "dna-hub", PROFILE_LABEL: namespace},
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        field_manager="someone-else",
    )


@pytest.mark.slow
async def test_sync_rolls_out_a_template_change_to_20_profiles(
    admin_api: ApiClient,
    hub_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    unique_name: Callable[..., str],
    setup: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    templates, config = setup
    admin = KubeApi(admin_api, request_timeout=10)
    users = [unique_name(f"s{i:02d}") for i in range(20)]
    await provision_users(hub_api, config, users)
    stranger = unique_name("unmanaged")
    await unmanaged_profile(admin, stranger)
    first = namespace_for(users[0])
    await foreign_object(admin, first)
    namespaces = [namespace_for(u) for u in [*users, stranger]]
    before = await snapshot(admin, namespaces)

    token = await sync_token(admin_api, None, unique_name("sync"))
    kubeconfig = write_kubeconfig(control_plane, token, tmp_path / "sync.kubeconfig")
    selection = [arg for user in [*users, stranger] for arg in ("--user", user)]

    # unchanged templates: nothing to do
    result = run_cli("--config", str(config), "--dry-run", *selection, kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no changes"), result.stdout

    change_templates(templates)

    # --dry-run: exactly that change for every profile, and nothing written
    result = run_cli("--config", str(config), "--dry-run", *selection, kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for user in users:
        ns = namespace_for(user)
        actions = sorted(line for line in lines if line.startswith(f"{ns}: "))
        assert actions == [
            f"{ns}: delete PodDefault {ns}/access-ml-pipeline",
            f"{ns}: update NetworkPolicy {ns}/dna-hub-notebook-ingress",
        ], result.stdout
    # the diff lines (unified diff of the live and the dry-run object): only the new label
    diff_lines = [
        line
        for line in lines
        if line.startswith(("+", "-")) and not line.startswith(("---", "+++"))
    ]
    assert set(diff_lines) == {f"+    {NEW_LABEL}: 'yes'"}, diff_lines
    assert len(diff_lines) == 20
    summary = result.stdout.split("\n\n", 1)[1]
    assert f"{namespace_for(stranger)}  {stranger}  skipped" in summary
    assert "20 would change" not in summary  # the table counts ok/failed
    assert "21 ok, 0 failed" in summary
    assert await snapshot(admin, namespaces) == before, "a dry run must write nothing"

    # the real run: bounded concurrency, everything converged and pruned
    render = renderer(load_hub_config(str(config)))
    async with client_for(control_plane, token) as sync_api:
        syncer = ProfileSync(
            KubeApi(sync_api, request_timeout=10), render, concurrency=4, ready_timeout=60
        )
        profiles, missing = await syncer.managed_profiles([*users, stranger], namespace_for)
        assert len(profiles) == 20
        assert [(m.profile, m.status) for m in missing] == [(namespace_for(stranger), "skipped")]
        results = await syncer.run(profiles)
    assert syncer.max_in_flight == 4
    assert {r.status for r in results} == {"converged"}, [r.detail for r in results]
    for r in results:
        assert [c.what for c in r.pruned] == [f"PodDefault {r.profile}/access-ml-pipeline"]
    await assert_converged(admin, config, users)

    after = await snapshot(admin, namespaces)
    # untouched: the unmanaged Profile and the foreign object
    assert (
        after[f"Profile {namespace_for(stranger)}"] == before[f"Profile {namespace_for(stranger)}"]
    )
    assert after[f"NetworkPolicy {first}/foreign"] == before[f"NetworkPolicy {first}/foreign"]
    stranger_profile = await admin.get(PROFILE, namespace_for(stranger))
    assert not is_managed(stranger_profile)

    # converged: a second dry run has nothing to say
    result = run_cli("--config", str(config), "--dry-run", *selection, kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no changes"), result.stdout


@pytest.mark.slow
async def test_a_fault_mid_run_fails_loudly_and_the_next_run_converges(
    admin_api: ApiClient,
    hub_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    unique_name: Callable[..., str],
    setup: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    templates, config = setup
    admin = KubeApi(admin_api, request_timeout=10)
    users = [unique_name(f"f{i}") for i in range(6)]
    await provision_users(hub_api, config, users)
    change_templates(templates)
    token = await sync_token(admin_api, None, unique_name("fault"))
    kubeconfig = write_kubeconfig(control_plane, token, tmp_path / "sync.kubeconfig")
    selection = [arg for user in users for arg in ("--user", user)]
    broken_apply, broken_prune = namespace_for(users[2]), namespace_for(users[4])

    with FaultProxy.for_kubeconfig(kubeconfig, control_plane.ca_file) as proxy:
        via_proxy = proxy.write_kubeconfig(kubeconfig, tmp_path / "proxy.kubeconfig")
        # the API server keeps failing these two profiles' requests past every retry
        apply_rule = proxy.add_rule(
            "PATCH",
            rf"/namespaces/{broken_apply}/networkpolicies/dna-hub-notebook-ingress$",
            status=500,
            times=None,
        )
        prune_rule = proxy.add_rule(
            "DELETE", rf"/namespaces/{broken_prune}/poddefaults/", status=503, times=None
        )
        result = run_cli(
            "--config", str(config), "--concurrency", "3", *selection, kubeconfig=via_proxy
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert apply_rule.hits == 5 and prune_rule.hits == 5  # bounded retries
        failed_line = result.stderr.strip().splitlines()[-1]
        assert failed_line.startswith("dna-hub sync: failed: ")
        named = failed_line.removeprefix("dna-hub sync: failed: ").split(" (")[0].split(", ")
        assert sorted(named) == sorted([broken_apply, broken_prune])
        # progress, one line per profile off a terminal (a CronJob's log)
        progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
        assert len(progress) == 6 and progress[-1].startswith("[6/6] ")
        assert any(f"] {broken_apply}: failed (" in line for line in progress)
        table = result.stdout.splitlines()
        assert table[0].split() == ["PROFILE", "USER", "RESULT", "CHANGES", "DETAIL"]
        (broken_row,) = [row for row in table if row.startswith(broken_apply)]
        assert " failed " in broken_row and "HTTP 500" in broken_row
        assert "4 ok, 2 failed" in result.stdout
        # half-done: the Profile says so (pending digest), the other profiles converged
        profile = await admin.get(PROFILE, broken_apply)
        assert profile["metadata"]["annotations"][DIGEST_ANNOTATION] == "pending"

        proxy.clear_rules()
        result = run_cli("--config", str(config), *selection, kubeconfig=via_proxy)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "6 ok, 0 failed" in result.stdout
    await assert_converged(admin, config, users)


async def test_sync_refuses_bad_arguments(tmp_path: Path) -> None:
    missing = tmp_path / "none.kubeconfig"
    result = run_cli("--concurrency", "0", kubeconfig=missing)
    assert result.returncode == 2 and "--concurrency must be at least 1" in result.stderr
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c = get_config()  # noqa\nc.DnaSpawner.namespace_template = 'x'\n")
    result = run_cli("--config", str(config), kubeconfig=missing)
    assert result.returncode == 2 and "namespace template 'x' must contain" in result.stderr
    assert "Traceback" not in result.stderr


async def test_sync_converges_a_team_profile_and_keeps_its_contributors(
    hub_api: ApiClient,
    admin_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    tmp_path: Path,
    unique_name: Callable[..., str],
) -> None:
    """A team Profile (annotated with its group, not a hub user) is re-rendered from
    DnaSpawner.team_profiles; the contributor bindings in it, which carry the profile's label
    but are kept in step by logins, are never pruned; a team no longer configured is left."""
    group = unique_name("sync-team")
    templates = tmp_path / "templates"
    templates.mkdir()
    config = hub_config(tmp_path / "jupyterhub_config.py", templates)
    config.write_text(config.read_text() + f"c.DnaSpawner.team_profiles = {{{group!r}: 'edit'}}\n")
    hub = load_hub_config(str(config))
    render_team = team_renderer(hub)
    kube = KubeApi(hub_api, request_timeout=10, retry=RetryPolicy(attempts=4))
    alice = f"alice.{group}@example.com"
    teams = settings_from(hub).teams()
    joined = await ContributorSync(kube, ProfileProvisioner(kube, ready_timeout=60)).sync(
        alice,
        plan_for([group], teams, None),
        lambda team: render_team(team.group),
    )
    assert not joined.failed
    namespace = teams[group].namespace
    binding = contributor_binding_name(alice, "edit")

    change_templates(templates)
    token = await sync_token(admin_api, None, unique_name("team"))
    async with client_for(control_plane, token) as sync_api:
        as_sync = KubeApi(sync_api, request_timeout=10, retry=RetryPolicy(attempts=4))
        syncer = ProfileSync(as_sync, renderer(hub), render_team=render_team, ready_timeout=60)
        managed, _ = await syncer.managed_profiles()
        (profile,) = [p for p in managed if p["metadata"]["name"] == namespace]
        (result,) = await syncer.run([profile])
        assert result.status == "converged", result
        assert result.username == f"team {group}"
        assert [c.name for c in result.pruned] == ["access-ml-pipeline"]  # dropped PodDefault
        admin = KubeApi(admin_api, request_timeout=10)
        assert await admin.get(ROLE_BINDING, binding, namespace) is not None
        assert await admin.get(AUTHORIZATION_POLICY, binding, namespace) is not None

        gone = ProfileSync(as_sync, renderer(hub), render_team=lambda g: None, ready_timeout=60)
        (left,) = await gone.run([profile])
        assert left.status == "skipped" and "no longer configures" in left.detail
