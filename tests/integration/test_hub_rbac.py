"""helm-values/hub-rbac.yaml grants exactly what dna_hub does — each permission proven needed.

The suite's hub identity has exactly this RBAC (devstack/controlplane.py applies the
file unchanged). Here, for every single permission, a hub identity with all the others
runs everything dna_hub does against the API: without a required permission it must hit a
real 403; without an optional one (a watch dna_hub can replace by polling) it must still
work, poll, and log a warning naming the permission. With all of them it runs cleanly, with
no warning. The profile controller is held (HeldController) so that every code path that
needs a permission is taken in every run, however fast or slow the machine is.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.controlplane import ControlPlane
from devstack.paths import REPO_ROOT
from devstack.standins.profile_controller import PAUSED_ANNOTATION
from dna_hub.errors import ApiFailure, OwnershipConflict
from dna_hub.k8s.api import NAMESPACE, PROFILE, Kind, KubeApi
from dna_hub.k8s.retry import RetryPolicy
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.permissions import HUB_PERMISSIONS, Permission
from dna_hub.policy.rendering import RenderedProfile
from dna_hub.policy.teams import parse_teams, plan_for
from dna_hub.profiles.api_token import api_token_secret_name, create_api_token_secret
from dna_hub.profiles.contributors import ContributorSync
from dna_hub.profiles.provisioning import ProfileProvisioner
from tests.integration.test_contributors import render_team
from tests.integration.test_provisioning import profile_template_with, rendered_for
from tests.support.hooked_kube import HookedKubeApi
from tests.support.rbac_identity import granted, rules_without, service_account_token

RBAC_FILE = REPO_ROOT / "helm-values" / "hub-rbac.yaml"


def rbac_objects() -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(RBAC_FILE.read_text()) if o]


def test_rbac_file_grants_exactly_the_documented_permissions() -> None:
    (role,) = [o for o in rbac_objects() if o["kind"] == "ClusterRole"]
    assert granted(role) == {(p.group, p.resource, p.verb) for p in HUB_PERMISSIONS}
    # the only resourceNames: bind on exactly Kubeflow's edit and view roles
    assert {
        (tuple(rule["resources"]), tuple(rule["verbs"]), tuple(rule["resourceNames"]))
        for rule in role["rules"]
        if "resourceNames" in rule
    } == {(("clusterroles",), ("bind",), ("kubeflow-edit", "kubeflow-view"))}


def test_rbac_file_is_least_privilege() -> None:
    objects = rbac_objects()
    assert sorted(o["kind"] for o in objects) == ["ClusterRole", "ClusterRoleBinding"]
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    for group, resource, verb in granted(role):
        assert "*" not in (group, resource, verb)
        # Secrets: create only (each server's API token Secret), never read, list or change
        assert resource != "secrets" or verb == "create", "no cluster-wide access to Secrets"
        assert verb not in {"escalate", "impersonate", "deletecollection"}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        # bind (teams: grant kubeflow-edit/-view without holding them) only on those two;
        # every other rule applies to any object of its kind
        if "bind" in rule["verbs"]:
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": ["kubeflow-edit", "kubeflow-view"],
            }
        else:
            assert "resourceNames" not in rule
    # never delete a Profile (deleting one deletes its namespace and every volume in it)
    assert ("kubeflow.org", "profiles", "delete") not in granted(role)
    # writes: nothing to namespaces themselves, no cluster-scoped kinds but the Profile
    writes = {(g, r) for g, r, v in granted(role) if v in {"create", "patch", "update", "delete"}}
    assert ("", "namespaces") not in writes
    assert ("rbac.authorization.k8s.io", "clusterroles") not in writes
    assert ("rbac.authorization.k8s.io", "clusterrolebindings") not in writes
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}
    ]
    for obj in objects:
        assert obj["metadata"].get("namespace") not in {"kube-system", "istio-system"}


# --- on the control plane: every permission is needed -------------------------------------


def pod_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"component": "singleuser-server", "access-ml-pipeline": "true"},
        },
        "spec": {
            "serviceAccountName": "default-editor",
            "containers": [{"name": "notebook", "image": "x", "command": ["sleep", "60"]}],
        },
    }


def pvc_manifest(name: str) -> dict[str, Any]:
    """The claim KubeSpawner makes with the chart's default dynamic storage."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"component": "singleuser-storage"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }


async def drain(response: Any) -> None:
    """Read a watch to its end; kubernetes_asyncio leaves the status of unread ones to us."""
    async with response:
        body = await response.read()
        if response.status >= 400:
            raise ApiException(status=response.status, reason=body.decode(errors="replace"))


class HeldController:
    """Plays Kubeflow's profile controller for one paused Profile, at a chosen moment.

    The exercised Profile carries the stand-in controller's pause annotation, so nothing
    makes its namespace or ``default-editor`` until dna_hub waits for it: by opening a watch
    (on the namespace after its owner-check list found nothing, on ``default-editor`` at
    once), or (if it never watches) by listing a second time. At that moment this creates
    the object (as the admin, exactly as the controller would), before the watch request
    is sent. So every wait goes down its watch path — allowed (the watch sees ADDED: the
    namespace's starts from the owner-check list's resourceVersion, ``default-editor``'s
    has none, so the server first sends what exists) or refused (dna_hub polls and finds
    it) — and a hub that stopped watching is seen as such rather than timing out. No verdict
    depends on how fast a stand-in is.
    """

    def __init__(self, admin: ApiClient, owner: str) -> None:
        self.core = CoreV1Api(admin)
        self.owner = owner
        #: Resources dna_hub tried to watch (whether or not the watch was allowed).
        self.watched: set[str] = set()
        self.lists: dict[str, int] = {}

    async def on_list(self, kind: Kind, namespace: str | None, selector: str | None) -> None:
        self.lists[kind.plural] = self.lists.get(kind.plural, 0) + 1
        if selector and self.lists[kind.plural] > 1:
            await self.release(kind, namespace, selector)

    async def on_watch(self, kind: Kind, namespace: str | None, selector: str | None) -> None:
        self.watched.add(kind.plural)
        await self.release(kind, namespace, selector or "")

    async def release(self, kind: Kind, namespace: str | None, selector: str) -> None:
        name = selector.removeprefix("metadata.name=")
        try:
            if kind.plural == "namespaces":
                await self.core.create_namespace(
                    {"metadata": {"name": name, "annotations": {"owner": self.owner}}}
                )
            elif kind.plural == "serviceaccounts":
                # Created, it is usable at once: since 1.24 the ServiceAccount admission
                # wants no token Secret (pods get a bound token, and none is made).
                await self.core.create_namespaced_service_account(
                    namespace, {"metadata": {"name": name}}
                )
        except ApiException as e:
            if e.status != 409:
                raise


@dataclass
class Exercised:
    #: Resources dna_hub opened (or tried to open) a watch on.
    watched: set[str]
    #: Resources whose watch was refused, so dna_hub polled.
    unwatchable: set[str]
    warnings: list[str]


async def exercise(api_client: ApiClient, admin: ApiClient, username: str) -> Exercised:
    """What dna_hub does against the API, with one identity.

    Provisioning is dna_hub's own code (create path, then the forced patch path), with the
    profile controller held so that both waits must watch (see HeldController); the pod and
    event calls are exactly the ones KubeSpawner 7 makes (reflectors across namespaces,
    create, delete, read to confirm a stale pod is gone).
    """
    plain = rendered_for(username, legacy_envoy_filter=True, legacy_ml_pipeline_policy=True)
    profile = plain.profile  # a copy: the paused set is a new RenderedProfile
    profile["metadata"].setdefault("annotations", {})[PAUSED_ANNOTATION] = "true"
    rendered = RenderedProfile.of(profile, plain.namespaced)
    owner = rendered.profile["spec"]["owner"]["name"]
    controller = HeldController(admin, owner)
    # retries cover a loaded machine; a 403 is never retried, so it still surfaces
    kube = HookedKubeApi(
        api_client,
        request_timeout=10,
        retry=RetryPolicy(attempts=3),
        on_list=controller.on_list,
        on_watch=controller.on_watch,
    )
    log = logging.getLogger(f"{__name__}.{username}")
    records = ListHandler()
    log.addHandler(records)
    try:
        provisioner = ProfileProvisioner(kube, ready_timeout=60, log=log)
        await provisioner.ensure(rendered)
        await ProfileProvisioner(kube, ready_timeout=60, log=log).ensure(rendered, force=True)
    finally:
        log.removeHandler(records)
    # (not held: a plain client, so the held controller cannot act for this profile)
    plain = KubeApi(api_client, request_timeout=10, retry=RetryPolicy(attempts=3))
    await lose_the_race(plain, admin, f"{username}-lost")
    core = CoreV1Api(api_client)
    namespace = namespace_for(username)
    selector = "component=singleuser-server"
    await core.list_pod_for_all_namespaces(label_selector=selector, _request_timeout=10)
    await drain(
        await core.list_pod_for_all_namespaces(
            label_selector=selector, watch=True, timeout_seconds=1, _preload_content=False
        )
    )
    await core.list_event_for_all_namespaces(_request_timeout=10)
    await drain(
        await core.list_event_for_all_namespaces(
            watch=True, timeout_seconds=1, _preload_content=False
        )
    )
    # the chart's singleuser.storage.type "dynamic": KubeSpawner creates claim-<user> (a
    # 409 is fine) and reads it back when a quota refuses the create or for a legacy name
    claim = pvc_manifest(f"claim-{username}")
    await core.create_namespaced_persistent_volume_claim(namespace, claim, _request_timeout=10)
    await core.read_namespaced_persistent_volume_claim(
        claim["metadata"]["name"], namespace, _request_timeout=10
    )
    name = "jupyter-rbac-check"
    pod = await core.create_namespaced_pod(namespace, pod_manifest(name), _request_timeout=10)
    # DnaSpawner then puts the server's API token into a Secret owned by the pod
    await create_api_token_secret(
        kube,
        name=api_token_secret_name(name),
        namespace=namespace,
        token="not-a-real-token",
        pod_name=name,
        pod_uid=pod.metadata.uid,
    )
    await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=10)
    try:
        await core.read_namespaced_pod(name, namespace, _request_timeout=10)
    except ApiException as e:
        if e.status != 404:
            raise
    # teams: a team profile (owned by the team's own identity); a member joins, then leaves
    teams = parse_teams({f"team-{username}": "edit"})
    # (not held: the team's profile controller work is no permission's only path)
    plain = KubeApi(api_client, request_timeout=10, retry=RetryPolicy(attempts=3))
    sync = ContributorSync(plain, ProfileProvisioner(plain, ready_timeout=60), ready_timeout=60)
    for groups in ([f"team-{username}"], []):
        result = await sync.sync(
            f"{username}@example.com", plan_for(groups, teams, None), render_team
        )
        for error in result.failed.values():
            raise error
    return Exercised(
        controller.watched,
        set(provisioner.unwatchable),
        [r.getMessage() for r in records.records if r.levelno >= logging.WARNING],
    )


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def lose_the_race(kube: KubeApi, admin: ApiClient, username: str) -> None:
    """A spawn creates the Profile, then someone else's namespace of that name appears
    (the profile controller stand-in is paused, so only that one comes): dna_hub refuses and
    leaves its Profile pending (it may not delete Profiles: `dna-hub gc` removes it)."""
    template_dir = Path(tempfile.mkdtemp(prefix="dna-hub-rbac-"))
    (template_dir / "00-profile.yaml.j2").write_text(
        profile_template_with({"dna-hub.test/controller-paused": "true"})
    )
    rendered = rendered_for(username, template_dir=template_dir)
    namespace = rendered.profile["metadata"]["name"]
    as_admin = KubeApi(admin, request_timeout=10)
    spawn = asyncio.ensure_future(ProfileProvisioner(kube, ready_timeout=60).ensure(rendered))
    async with asyncio.timeout(60):
        while await as_admin.get(PROFILE, namespace) is None:
            if spawn.done():
                await spawn  # failed before writing the Profile: its error
            await asyncio.sleep(0.1)
    await as_admin.create(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {"owner": "mallory@example.com"}},
        },
        field_manager="test",
    )
    try:
        await spawn
    except OwnershipConflict:
        pass
    else:
        raise AssertionError(f"a spawn into someone else's namespace {namespace} succeeded")
    if await as_admin.get(PROFILE, namespace) is None:
        raise AssertionError(f"Profile {namespace} deleted by the hub after losing the race")


async def identity_without(
    admin: ApiClient, control_plane: ControlPlane, missing: Permission | None, tag: str
) -> ApiClient:
    """A ServiceAccount bound to hub-rbac.yaml's rules less ``missing``; an ApiClient as it."""
    token = await token_without(admin, missing, tag)
    configuration = copy.copy(control_plane.hub_configuration())
    configuration.api_key = {"BearerToken": f"Bearer {token}"}
    return ApiClient(configuration)


async def token_without(admin: ApiClient, missing: Permission | None, tag: str) -> str:
    """A token of a ServiceAccount bound to hub-rbac.yaml's rules less ``missing``."""
    (role,) = [o for o in rbac_objects() if o["kind"] == "ClusterRole"]
    return await service_account_token(admin, f"dna-hub-rbac-{tag}", rules_without(role, missing))


def service_account_user(tag: str) -> str:
    """The username of the ServiceAccount ``token_without(..., tag)`` makes."""
    return f"system:serviceaccount:jupyterhub:dna-hub-rbac-{tag}"


def is_forbidden(error: BaseException) -> bool:
    if isinstance(error, ApiFailure):
        return error.reason == "forbidden"
    return isinstance(error, ApiException) and error.status == 403


@pytest.fixture
async def kfp_namespace(admin_api: ApiClient) -> None:
    """The legacy ml-pipeline policy lives in Kubeflow Pipelines' namespace."""
    try:
        await CoreV1Api(admin_api).create_namespace({"metadata": {"name": "kubeflow"}})
    except ApiException as e:
        if e.status != 409:
            raise


@pytest.mark.controlplane
@pytest.mark.slow
async def test_every_permission_is_needed_and_all_suffice(
    admin_api: ApiClient,
    control_plane: ControlPlane,
    standins: Any,
    kfp_namespace: None,
    unique_name: Callable[..., str],
) -> None:
    # all of them: everything works, and both waits watched without a warning
    tag = unique_name("all")
    full = await identity_without(admin_api, control_plane, None, tag)
    async with full:
        done = await exercise(full, admin_api, unique_name("rbac-all"))
    assert done.watched == {"namespaces", "serviceaccounts"}, (
        f"dna_hub must watch for the profile controller's work; it watched only {done.watched}"
    )
    assert not done.unwatchable and not done.warnings, done

    # each one missing: a required one fails with a real 403; an optional one (a watch)
    # is still used — dna_hub falls back to polling and logs a warning that names it
    limit = asyncio.Semaphore(6)

    async def without(
        index: int, permission: Permission
    ) -> tuple[Permission, Exercised | BaseException]:
        async with limit:
            tag = unique_name(f"w{index}")
            api = await identity_without(admin_api, control_plane, permission, tag)
            async with api:
                try:
                    return permission, await exercise(api, admin_api, unique_name(f"rbac-{index}"))
                except Exception as error:
                    return permission, error

    # Kueue's rules need Kueue's kinds served: test_kueue.py proves each of them
    checked = [p for p in HUB_PERMISSIONS if p.setting != "kueue"]
    results = await asyncio.gather(*(without(i, p) for i, p in enumerate(checked)))

    def label(p: Permission) -> str:
        return f"{p.verb} {p.resource}.{p.group or 'core'}"

    required = [(p, r) for p, r in results if not p.optional]
    unneeded = [label(p) for p, r in required if isinstance(r, Exercised)]
    assert not unneeded, f"hub-rbac.yaml grants permissions nothing uses: {unneeded}"
    wrong = [
        f"{label(p)}: {type(r).__name__}: {r}"
        for p, r in required
        if isinstance(r, BaseException) and not is_forbidden(r)
    ]
    assert not wrong, "missing permissions must fail with 403:\n" + "\n".join(wrong)

    for p, r in results:
        if not p.optional:
            continue
        assert isinstance(r, Exercised), f"without optional {label(p)} the hub must work: {r!r}"
        assert r.unwatchable == {p.resource}, (
            f"without {label(p)} dna_hub must poll {p.resource} and nothing else: {r}"
        )
        named = [w for w in r.warnings if f"watch {p.resource}" in w]
        assert named, f"without {label(p)} a warning must name it; warnings: {r.warnings}"


# --- the allow-list (hub-namespace-guard.yaml, Kubernetes >= 1.30) ---------------------------

GUARD_FILE = REPO_ROOT / "helm-values" / "hub-namespace-guard.yaml"
#: how an RBAC verb reaches admission
OPERATIONS = {"create": {"CREATE"}, "patch": {"UPDATE", "CREATE"}, "delete": {"DELETE"}}


def test_the_hub_allow_list_admits_exactly_what_its_rbac_writes() -> None:
    """Every write the hub's RBAC grants is on its allow-list and nothing else is (the Kale
    workflow grants excepted: held only so the hub may grant them, never used)."""
    import re

    import kubernetes_validate

    objects = [o for o in yaml.safe_load_all(GUARD_FILE.read_text()) if o]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    (policy,) = [
        o
        for o in objects
        if o["metadata"]["name"] == "dna-hub-hub-allowlist" and "matchConditions" in o["spec"]
    ]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": ["*"],
        "apiVersions": ["*"],
        "operations": ["*"],
        "resources": ["*/*"],
    }
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:jupyterhub:hub'"
    )
    listed = {
        entry
        for variable in policy["spec"]["variables"]
        if variable["name"].endswith("Writes")
        for entry in re.findall(r"'([^']+)'", variable["expression"])
    }
    allowed = {
        (group, resource, op)
        for entry in listed
        for kind, op in [entry.rsplit(":", 1)]
        for group, resource in [kind.split("/", 1)]
    }
    granted_writes = {
        (p.group, p.resource, op)
        for p in HUB_PERMISSIONS
        if p.verb in OPERATIONS and p.group != "argoproj.io"
        for op in OPERATIONS[p.verb]
    }
    # patch is server-side apply: CREATE when the object is new; nothing more is listed
    assert allowed <= granted_writes, allowed - granted_writes
    assert {(g, r, o) for g, r, o in granted_writes if o != "CREATE"} <= allowed
    assert {(g, r) for g, r, _ in granted_writes} == {(g, r) for g, r, _ in allowed}
