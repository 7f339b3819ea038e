"""Offboarding (DnaSpawner.profile_retention) and ``dna-hub gc`` on the control plane.

The spawner runs in the test's loop as the hub's identity (hub-rbac.yaml), like
tests/integration/test_spawner.py; the profile controller is the stand-in (it removes its finalizer
from a deleted Profile; kube-controller-manager's garbage collector and namespace
controller then delete the namespace and its contents).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from traitlets import TraitError

from devstack.controlplane import ControlPlane
from dna_hub import DnaSpawner
from dna_hub.hub.settings import DnaSettings
from dna_hub.k8s.api import NAMESPACE, PROFILE, KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.profiles.managed import (
    ORPHANED_AT_ANNOTATION,
    ORPHANED_LABEL,
    is_orphaned,
    orphaned_at,
)
from dna_hub.profiles.offboarding import mark_orphaned, offboard
from tests.integration.test_kubespawner_standins import fake_hub_api  # noqa: F401 - a fixture
from tests.integration.test_spawner import make_spawner  # noqa: F401 - a fixture
from tests.integration.test_standins import eventually
from tests.integration.test_sync import unmanaged_profile

pytestmark = [pytest.mark.controlplane]


def test_retention_delete_is_refused_naming_why_and_what_to_do() -> None:
    """The hub may never delete a Profile (issue 24): 'delete' was removed, and a config
    still setting it fails at start with the reason and the operator's way (dna-hub gc)."""
    help_text = " ".join(DnaSpawner.class_traits()["profile_retention"].help.split())
    assert "'delete' was removed and is refused" in help_text
    assert DnaSpawner.class_traits()["profile_retention"].default_value == "keep"
    with pytest.raises(TraitError, match=r"deletes its namespace and every volume.*dna-hub gc"):
        DnaSettings(profile_retention="delete")
    with pytest.raises(TraitError, match="must be one of"):
        DnaSettings(profile_retention="purge")


async def namespaced_versions(admin: KubeApi, namespace: str) -> dict[str, str]:
    versions = {}
    for api_version, kind in (
        ("kubeflow.org/v1alpha1", "PodDefault"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("v1", "LimitRange"),
        ("rbac.authorization.k8s.io/v1", "Role"),
    ):
        k = await admin.kind_for(api_version, kind)
        for item in (await admin.list(k, namespace)).get("items", []):
            versions[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return versions


@pytest.mark.slow
async def test_keep_marks_the_profile_orphaned_and_changes_nothing_else(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    admin_api: ApiClient,
    unique_name: Callable[..., str],
) -> None:
    admin = KubeApi(admin_api, request_timeout=10)
    username = unique_name("keep")
    owner = f"{username}@example.com"
    namespace = namespace_for(username)
    spawner = make_spawner(username, owner)  # profile_retention: the default, keep
    await spawner.provision_profile()
    before = await admin.get(PROFILE, namespace)
    objects = await namespaced_versions(admin, namespace)
    assert len(objects) == 5  # PodDefault, the two NetworkPolicies, LimitRange, Role

    started = datetime.now(UTC).replace(microsecond=0)
    await spawner.delete_forever()

    after = await admin.get(PROFILE, namespace)
    assert is_orphaned(after)
    assert after["metadata"]["labels"][ORPHANED_LABEL] == "true"
    assert started <= orphaned_at(after) <= datetime.now(UTC)
    assert after["spec"] == before["spec"]
    assert {k: v for k, v in after["metadata"]["labels"].items() if k != ORPHANED_LABEL} == before[
        "metadata"
    ]["labels"]
    assert await namespaced_versions(admin, namespace) == objects, "nothing else changes"
    assert await admin.get(NAMESPACE, namespace) is not None
    # deleting again keeps the first timestamp
    first_mark = after["metadata"]["annotations"][ORPHANED_AT_ANNOTATION]
    await spawner.delete_forever()
    again = await admin.get(PROFILE, namespace)
    assert again["metadata"]["annotations"][ORPHANED_AT_ANNOTATION] == first_mark

    # the user comes back: their next spawn adopts the profile again
    await make_spawner(username, owner).provision_profile()
    back = await admin.get(PROFILE, namespace)
    assert not is_orphaned(back)
    assert ORPHANED_LABEL not in back["metadata"]["labels"]
    assert ORPHANED_AT_ANNOTATION not in back["metadata"].get("annotations", {})


async def test_offboarding_never_touches_a_profile_dna_hub_does_not_manage(
    hub_api: ApiClient, admin_api: ApiClient, standins: Any, unique_name: Callable[..., str]
) -> None:
    admin = KubeApi(admin_api, request_timeout=10)
    username = unique_name("stranger")
    namespace = namespace_for(username)
    await unmanaged_profile(admin, username)
    before = await admin.get(PROFILE, namespace)
    hub = KubeApi(hub_api, request_timeout=10)
    done = await offboard(hub, namespace, username, "keep")
    assert done.action == "untouched"
    with pytest.raises(ValueError, match="dna-hub gc"):
        await offboard(hub, namespace, username, "delete")
    after = await admin.get(PROFILE, namespace)
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert after["metadata"].get("deletionTimestamp") is None
    assert (await offboard(hub, namespace_for(unique_name("nobody")), "nobody", "keep")).action == (
        "absent"
    )


# --- dna-hub gc -----------------------------------------------------------------------------


def gc(control_plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dna_hub.cli",
            "gc",
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rows_for(output: str, namespaces: list[str]) -> dict[str, str]:
    """PROFILE → ACTION for the given profiles in gc's table."""
    found = {}
    for line in output.splitlines():
        name = line.split("  ", 1)[0]
        if name in namespaces:
            found[name] = line.rsplit("  ", 1)[1].strip()
    return found


@pytest.mark.slow
async def test_gc_lists_old_orphans_and_deletes_only_with_yes(
    make_spawner: Callable[..., DnaSpawner],  # noqa: F811
    admin_api: ApiClient,
    control_plane: ControlPlane,
    unique_name: Callable[..., str],
) -> None:
    admin = KubeApi(admin_api, request_timeout=10)
    now = datetime.now(UTC)
    users = {k: unique_name(k) for k in ("old", "recent", "active", "stranger")}
    ns = {k: namespace_for(u) for k, u in users.items()}
    for key in ("old", "recent", "active"):
        await make_spawner(users[key], f"{users[key]}@example.com").provision_profile()
    await mark_orphaned(admin, ns["old"], now - timedelta(days=40))
    await mark_orphaned(admin, ns["recent"], now - timedelta(days=1))
    # a Profile dna_hub does not manage, even if labelled and marked like an old orphan
    await unmanaged_profile(admin, users["stranger"])
    await admin.apply(
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {
                "name": ns["stranger"],
                "labels": {"app.kubernetes.io/managed-by": "dna-hub", ORPHANED_LABEL: "true"},
                "annotations": {ORPHANED_AT_ANNOTATION: "2020-01-01T00:00:00Z"},
            },
        },
        field_manager="someone-else",
    )
    mine = list(ns.values())

    listed = gc(control_plane, "--older-than", "30d")
    assert listed.returncode == 0, listed.stderr
    assert rows_for(listed.stdout, mine) == {ns["old"]: "would delete (re-run with --yes)"}
    assert users["old"] in listed.stdout and "40d" in listed.stdout

    dry = gc(control_plane, "--older-than", "30d", "--dry-run", "--yes")
    assert dry.returncode == 0, dry.stderr
    assert rows_for(dry.stdout, mine) == {ns["old"]: "would delete (dry run)"}
    for key in ns:
        assert await admin.get(PROFILE, ns[key]) is not None, "nothing deleted without --yes"

    everything = gc(control_plane, "--older-than", "0s")
    assert everything.returncode == 0, everything.stderr
    assert set(rows_for(everything.stdout, mine)) == {ns["old"], ns["recent"]}

    deleted = gc(control_plane, "--older-than", "30d", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert rows_for(deleted.stdout, mine) == {ns["old"]: "deleted"}

    async def old_gone() -> bool:
        return await admin.get(PROFILE, ns["old"]) is None

    await eventually(old_gone, timeout=60)
    for key in ("recent", "active", "stranger"):
        profile = await admin.get(PROFILE, ns[key])
        assert profile is not None and not profile["metadata"].get("deletionTimestamp"), key

    bad = gc(control_plane, "--older-than", "soon")
    assert bad.returncode == 2 and "not an age" in bad.stderr


def test_gc_refuses_without_a_cluster(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dna_hub.cli", "gc", "--kubeconfig", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "no usable kube context" in result.stderr
    assert "Traceback" not in result.stderr
