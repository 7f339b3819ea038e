"""The hub's RBAC, the sync job and the guards come from one place (issue 24, items 6 and 7).

``dna-hub manifests`` renders them from the hub's config and the two service accounts;
helm-values/ is that rendering with every feature on (held equal here). The RBAC rendered
for a set of features grants exactly what dna_hub needs with those features
(dna_hub.policy.permissions), and every identity the guards name is the one the RBAC binds.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.paths import REPO_ROOT
from dna_hub.cli.guard_check import probes
from dna_hub.policy.ops_permissions import SYNC_PERMISSIONS
from dna_hub.policy.permissions import hub_permissions
from dna_hub.policy.platform import (
    FILES,
    SHIPPED,
    PlatformValues,
    ServiceAccountRef,
    platform_objects,
    render_platform,
)


def rules(role: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def role_in(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    return role


def test_helm_values_are_the_shipped_rendering() -> None:
    rendered = render_platform(SHIPPED)
    for name in FILES:
        assert (REPO_ROOT / "helm-values" / name).read_text() == rendered[name], (
            f"helm-values/{name} differs from `dna-hub manifests`' rendering: regenerate it "
            "(./dev manifests)"
        )


@pytest.mark.parametrize(
    ("teams", "legacy_envoy_filter", "kueue"), list(itertools.product([False, True], repeat=3))
)
def test_rbac_grants_exactly_what_the_features_need(
    teams: bool, legacy_envoy_filter: bool, kueue: bool
) -> None:
    values = PlatformValues(teams=teams, legacy_envoy_filter=legacy_envoy_filter, kueue=kueue)
    objects = platform_objects(values)
    hub = rules(role_in(objects["hub-rbac.yaml"]))
    wanted = {
        (p.group, p.resource, p.verb, p.resource_names)
        for p in hub_permissions(teams=teams, legacy_envoy_filter=legacy_envoy_filter, kueue=kueue)
    }
    assert hub == wanted
    assert any(r[1] == "envoyfilters" for r in hub) == legacy_envoy_filter
    assert any(r[2] == "bind" for r in hub) == teams
    assert any(r[0] == "kueue.x-k8s.io" for r in hub) == kueue
    on = {"legacy_envoy_filter": legacy_envoy_filter, "kueue": kueue}
    sync = rules(role_in(objects["dna-hub-sync.yaml"]))
    assert sync == {
        (p.group, p.resource, p.verb, p.resource_names)
        for p in SYNC_PERMISSIONS
        if p.setting is None or on[p.setting]
    }
    allow_list = "\n".join(objects_text(objects["hub-namespace-guard.yaml"]))
    assert ("kueue.x-k8s.io/localqueues:CREATE" in allow_list) == kueue


def objects_text(objects: list[dict[str, Any]]) -> list[str]:
    return [yaml.safe_dump(o) for o in objects]


def test_the_hub_never_holds_delete_on_profiles_nor_unbounded_bind() -> None:
    hub = rules(role_in(platform_objects(SHIPPED)["hub-rbac.yaml"]))
    assert ("kubeflow.org", "profiles", "delete", ()) not in hub
    binds = {r for r in hub if r[2] in {"bind", "escalate", "impersonate"}}
    assert binds == {
        ("rbac.authorization.k8s.io", "clusterroles", "bind", ("kubeflow-edit", "kubeflow-view"))
    }


def test_every_identity_the_guards_name_is_the_one_the_rbac_binds() -> None:
    values = PlatformValues(
        hub=ServiceAccountRef("hub-system", "my-release-hub"),
        sync=ServiceAccountRef("hub-system", "my-sync"),
        teams=True,
    )
    objects = platform_objects(values)
    text = "\n".join(render_platform(values).values())
    assert "jupyterhub" not in text.replace("jupyterhub_config", "").replace(
        "/etc/jupyterhub", ""
    ).replace("jupyterhub-singleuser", "")
    (hub_binding,) = [o for o in objects["hub-rbac.yaml"] if o["kind"] == "ClusterRoleBinding"]
    assert hub_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "my-release-hub", "namespace": "hub-system"}
    ]
    conditions = [
        c["expression"]
        for name in ("hub-namespace-guard.yaml", "hub-object-guard.yaml")
        for o in objects[name]
        if o["kind"] == "ValidatingAdmissionPolicy"
        for c in o["spec"]["matchConditions"]
        if c["name"].startswith("only-")
    ]
    assert conditions and all("system:serviceaccount:hub-system:" in c for c in conditions)
    assert any("my-release-hub" in c for c in conditions)
    assert any("my-sync" in c for c in conditions)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("jupyterhub", "expected NAMESPACE:NAME"),
        ("jupyterhub:hub' || true || '", "is not a DNS label"),
        ("Jupyterhub:hub", "is not a DNS label"),
    ],
)
def test_identities_cannot_change_a_policy(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceAccountRef.parse(value)


def test_the_same_identity_for_hub_and_sync_is_refused() -> None:
    hub = ServiceAccountRef("jupyterhub", "hub")
    with pytest.raises(ValueError, match="different service accounts"):
        PlatformValues(hub=hub, sync=hub)


def test_doctor_probes_every_policy_for_every_identity_it_confines() -> None:
    """A new policy without a probe would never be checked in a cluster."""
    objects = platform_objects(SHIPPED)
    policies = {
        o["metadata"]["name"]
        for name in ("hub-namespace-guard.yaml", "hub-object-guard.yaml")
        for o in objects[name]
        if o["kind"] == "ValidatingAdmissionPolicy"
    }
    assert {p.policy for p in probes(SHIPPED, "kubeflow-alice")} == policies


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", "manifests", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manifests_renders_from_the_hub_config(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c.DnaSpawner.hub_namespace = 'hubs'\n"
        "c.DnaSpawner.team_profiles = {'ml': 'edit'}\n"
        "c.DnaSpawner.kfp_namespace = 'pipelines'\n"
    )
    result = run_cli("--config", str(config), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rbac = list(yaml.safe_load_all((tmp_path / "out" / "hub-rbac.yaml").read_text()))
    assert rbac[1]["subjects"][0] == {"kind": "ServiceAccount", "name": "hub", "namespace": "hubs"}
    assert any(r[2] == "bind" for r in rules(rbac[0]))  # teams on
    assert not any(r[1] == "envoyfilters" for r in rules(rbac[0]))  # legacy off
    guards = (tmp_path / "out" / "hub-namespace-guard.yaml").read_text()
    assert "system:serviceaccount:hubs:dna-hub-sync" in guards
    assert "'pipelines'" in guards


def test_manifests_names_a_bad_identity(tmp_path: Path) -> None:
    result = run_cli("--hub-service-account", "hubs:Hub_1")
    assert result.returncode == 2
    assert "'Hub_1' is not a DNS label" in result.stderr


def test_manifests_refuses_templates_without_a_shared_prefix(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("c.DnaSpawner.team_namespace_template = 'team-{group}'\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert "share no fixed prefix" in result.stderr
