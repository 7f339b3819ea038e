"""Provisioning stays inside the user's own profile (issue 18, item 6).

- a template rendering a kind the API server reports as cluster-scoped is refused before
  anything is written (its metadata.namespace would be ignored);
- object names are validated while rendering;
- the up-to-date fast path checks the namespace's owner too;
- a spawn that loses the race to someone else's namespace leaves the Profile it created
  pending (the hub may never delete a Profile, issue 24); `dna-hub gc` finds it stranded
  and an operator's gc removes it, leaving the other owner's namespace alone.

Against the real API server with the hub's RBAC; the profile controller is the stand-in
(paused per Profile by annotation, so the race is forced, not timed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from dna_hub.errors import ConfigurationError, OwnershipConflict
from dna_hub.k8s.api import NAMESPACE, PROFILE, KubeApi
from dna_hub.policy.rendering import TemplateError
from dna_hub.profiles.offboarding import find_stranded, gc_delete_stranded
from dna_hub.profiles.provisioning import ProfileProvisioner
from tests.integration.test_provisioning import (  # noqa: F401 - fixtures
    admin_kube,
    hub_kube,
    profile_template_with,
    provisioner,
    rendered_for,
)

CLUSTER_SCOPED_TEMPLATE = """\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {{ namespace }}
  namespace: {{ namespace }}
spec:
  controller: example.com/evil
"""


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n"
            "  name: evil\n  namespace: {{ namespace }}\nroleRef: {}\n",
            "cluster-scoped kind",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-evil\n"
            "  namespace: {{ namespace }}\n",
            "cluster-scoped kind",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Name\n"
            "  namespace: {{ namespace }}\n",
            "DNS-1123 subdomain",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../secrets/x\n"
            "  namespace: {{ namespace }}\n",
            "DNS-1123 subdomain",
        ),
    ],
)
def test_rendering_refuses_cluster_scoped_kinds_and_bad_names(
    tmp_path: Path, document: str, message: str
) -> None:
    (tmp_path / "50-custom.yaml.j2").write_text(document)
    with pytest.raises(TemplateError, match=message):
        rendered_for("alice", template_dir=tmp_path)


@pytest.mark.controlplane
async def test_a_kind_the_api_reports_cluster_scoped_is_refused_before_any_write(
    provisioner: Callable[..., ProfileProvisioner],  # noqa: F811
    admin_kube: KubeApi,  # noqa: F811
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    (tmp_path / "50-custom.yaml.j2").write_text(CLUSTER_SCOPED_TEMPLATE)
    rendered = rendered_for(unique_name("scope"), template_dir=tmp_path)  # passes rendering
    namespace = rendered.profile["metadata"]["name"]
    with pytest.raises(ConfigurationError) as info:
        await provisioner().ensure(rendered)
    assert info.value.reason == "template"
    assert "IngressClass" in str(info.value) and "cluster-scoped" in str(info.value)
    assert await admin_kube.get(PROFILE, namespace) is None  # nothing written


@pytest.mark.controlplane
async def test_the_fast_path_checks_the_namespace_owner(
    provisioner: Callable[..., ProfileProvisioner],  # noqa: F811
    admin_kube: KubeApi,  # noqa: F811
    unique_name: Callable[..., str],
) -> None:
    rendered = rendered_for(unique_name("fast"))
    namespace = rendered.profile["metadata"]["name"]
    await provisioner().ensure(rendered)
    # the namespace is someone else's now (e.g. deleted and recreated by another party)
    await admin_kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {"owner": "mallory@example.com"}},
        },
        field_manager="profile-controller",
    )
    with pytest.raises(OwnershipConflict) as info:
        await provisioner().ensure(rendered)
    assert "mallory@example.com" in str(info.value)


@pytest.mark.controlplane
async def test_losing_the_race_leaves_a_pending_profile_that_gc_removes(
    hub_kube: KubeApi,  # noqa: F811
    admin_kube: KubeApi,  # noqa: F811
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> None:
    # the controller stand-in ignores this Profile: the only namespace to come is mallory's
    (tmp_path / "00-profile.yaml.j2").write_text(
        profile_template_with({"dna-hub.test/controller-paused": "true"})
    )
    rendered = rendered_for(unique_name("race"), template_dir=tmp_path)
    namespace = rendered.profile["metadata"]["name"]
    spawn = asyncio.ensure_future(ProfileProvisioner(hub_kube, ready_timeout=60).ensure(rendered))
    async with asyncio.timeout(60):
        while await admin_kube.get(PROFILE, namespace) is None:
            assert not spawn.done(), spawn
            await asyncio.sleep(0.1)
    await admin_kube.create(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {"owner": "mallory@example.com"}},
        },
        field_manager="test",
    )
    with pytest.raises(OwnershipConflict):
        await spawn
    left = await admin_kube.get(PROFILE, namespace)
    assert left is not None, "the hub deleted a Profile: it may not (issue 24)"
    assert left["metadata"]["annotations"]["dna-hub.io/applied-digest"] == "pending"
    # an operator's gc: listed as stranded, then deleted; mallory's namespace stays
    stranded = {p["metadata"]["name"]: other for p, other in await find_stranded(admin_kube)}
    assert stranded.get(namespace) == "mallory@example.com"
    (profile,) = [
        p for p, _ in await find_stranded(admin_kube) if p["metadata"]["name"] == namespace
    ]
    assert await gc_delete_stranded(admin_kube, profile) == "deleted"
    assert await admin_kube.get(PROFILE, namespace) is None
    ns = await admin_kube.get(NAMESPACE, namespace)
    assert ns is not None and ns["metadata"]["annotations"]["owner"] == "mallory@example.com"
