"""Issue 24: a compromised hub (or sync job) stays inside profile namespaces — on the API server.

Every attack of the security review is replayed here THROUGH THE REAL API SERVER (Kubernetes
1.37, the control plane applies helm-values/hub-rbac.yaml, dna-hub-sync.yaml and both guard
files at start) as the identity that would make it: the hub's ServiceAccount
``jupyterhub:hub`` or the sync job's ``jupyterhub:dna-hub-sync``, each with exactly its
shipped RBAC. Each must be refused by the server — by RBAC or by a named guard — and where an
attack is a sequence, its first step's effect is checked too.

Where RBAC alone would already refuse an attack, the test also WIDENS the identity's RBAC the
way a deployment might (Kubeflow's ``kubeflow-admin`` bound to it in a profile namespace, as
the profile controller did when a team Profile was owned by the hub) and shows that the
catch-all allow-list still refuses: the confinement must not rest on RBAC staying narrow.
Writes are dry runs (``dryRun=All``: admission runs, nothing is stored) unless the attack
needs a real first step.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient

from devstack.controlplane import ControlPlane
from devstack.standins.profile_controller import DEFAULT_NAMESPACE_LABELS
from tests.integration.test_guard_replay import Outcome, call

pytestmark = pytest.mark.controlplane

HUB = "system:serviceaccount:jupyterhub:hub"
SYNC = "system:serviceaccount:jupyterhub:dna-hub-sync"
DRY = [("dryRun", "All")]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
PROFILES = "/apis/kubeflow.org/v1/profiles"
MANAGED = {"app.kubernetes.io/managed-by": "dna-hub"}


def refused(outcome: Outcome, *, guard: str | None = None) -> None:
    """Refused by the server; with ``guard``, by that ValidatingAdmissionPolicy (or, when
    ``guard`` is ``"rbac-or-guard"``, by RBAC or any dna_hub guard)."""
    assert not outcome.admitted, f"admitted: {outcome}"
    if guard is None:
        return
    if guard == "rbac-or-guard":
        assert outcome.guard is not None or outcome.rbac, outcome
        return
    assert outcome.guard is not None, f"refused, but not by a guard: {outcome}"
    assert outcome.guard[0] == guard, f"refused by {outcome.guard}, expected {guard}"


async def until_loaded(request: Callable[[], Any], check: Callable[[Outcome], None]) -> None:
    """The API server loads policies from its informer: a refusal expected from a guard may
    take a moment after the control plane applied them. Retried briefly, then final."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        outcome = await request()
        try:
            check(outcome)
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline or not outcome.admitted:
                raise
        await asyncio.sleep(0.5)


def profile(name: str, owner: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name, "labels": dict(MANAGED), **metadata},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }


def pod(name: str, **spec: Any) -> dict[str, Any]:
    """A pod meeting Pod Security 'restricted', as default-editor, changed by ``spec``."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"component": "singleuser-server"}},
        "spec": {
            "serviceAccountName": "default-editor",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsUser": 1000,
                    },
                }
            ],
        },
    }
    body["spec"].update(spec)
    return body


def binding(name: str, namespace: str, kind: str, role: str, user: str, **labels: str) -> Any:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED, **labels}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


class Cluster:
    """Namespaces and objects made as cluster-admin for the attacks; removed afterwards."""

    def __init__(self, admin: ApiClient, unique_name: Callable[..., str]) -> None:
        self.admin = admin
        self.unique_name = unique_name
        self.cleanup: list[str] = []

    async def must(self, method: str, path: str, body: Any = None) -> None:
        outcome = await call(self.admin, method, path, body)
        assert outcome.admitted, f"setup {method} {path}: {outcome}"

    async def patch(self, path: str, body: Any) -> None:
        outcome = await call(
            self.admin, "PATCH", path, body, content_type="application/merge-patch+json"
        )
        assert outcome.admitted, f"setup PATCH {path}: {outcome}"

    async def namespace(
        self, *, owner: str = "alice@example.com", team: bool = False, **labels: str
    ) -> str:
        """A profile namespace as Kubeflow's profile controller makes it (its labels, owner
        annotation, default-editor), with ``labels`` changed; ``team``: owned by the team's
        identity, as a team Profile's namespace is."""
        name = self.unique_name("kubeflow")
        if team:
            owner = f"dna-hub-team:{name}"
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {**DEFAULT_NAMESPACE_LABELS, **labels},
                "annotations": {"owner": owner},
            },
        }
        await self.must("POST", "/api/v1/namespaces", body)
        self.cleanup.append(f"/api/v1/namespaces/{name}")
        await self.must(
            "POST",
            f"/api/v1/namespaces/{name}/serviceaccounts",
            {"metadata": {"name": "default-editor"}},
        )
        return name

    async def widen(self, identity: str, namespace: str) -> None:
        """Give ``identity`` Kubeflow's kubeflow-admin in ``namespace`` (RBAC widened)."""
        await self.must(
            "POST",
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            binding("widened", namespace, "ClusterRole", "kubeflow-admin", identity),
        )
        # RBAC's cache takes a moment: until the identity may list pods there
        async with asyncio.timeout(30):
            while True:
                review = await self.admin.call_api(
                    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    "POST",
                    body={
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SubjectAccessReview",
                        "spec": {
                            "user": identity,
                            "resourceAttributes": {
                                "namespace": namespace,
                                "verb": "create",
                                "group": "apps",
                                "resource": "daemonsets",
                            },
                        },
                    },
                    header_params={"Content-Type": "application/json"},
                    response_types_map={201: "object", 200: "object"},
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _request_timeout=10,
                )
                if review["status"].get("allowed"):
                    return
                await asyncio.sleep(0.2)

    async def managed_profile(self, owner: str = "victim@example.com") -> str:
        name = self.unique_name("kubeflow")
        body = profile(name, owner, annotations={"dna-hub.io/applied-digest": "abc"})
        await self.must("POST", PROFILES, body)
        self.cleanup.append(f"{PROFILES}/{name}")
        return name

    async def close(self) -> None:
        for path in reversed(self.cleanup):
            await call(self.admin, "DELETE", path)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(admin_api: ApiClient, unique_name: Callable[..., str]) -> AsyncIterator[Cluster]:
    made = Cluster(admin_api, unique_name)
    try:
        yield made
    finally:
        await made.close()


@pytest_asyncio.fixture(loop_scope="session")
async def sync_api(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    async with control_plane.sync_client() as api:
        yield api


# --- 1. the Profile deletion bypass -----------------------------------------------------------


async def test_hub_cannot_delete_a_profile_by_forging_the_pending_marker(
    cluster: Cluster, hub_api: ApiClient, admin_api: ApiClient
) -> None:
    name = await cluster.managed_profile()
    # the hub may still patch a managed Profile's annotations (provisioning writes pending)
    forged = await call(
        hub_api,
        "PATCH",
        f"{PROFILES}/{name}",
        {"metadata": {"annotations": {"dna-hub.io/applied-digest": "pending"}}},
        content_type="application/merge-patch+json",
    )
    assert forged.admitted, forged
    deleted = await call(hub_api, "DELETE", f"{PROFILES}/{name}")
    refused(deleted, guard="rbac-or-guard")
    assert (await call(admin_api, "GET", f"{PROFILES}/{name}")).admitted, "the Profile is gone"


async def test_hub_cannot_delete_a_profile_even_with_rbac_widened(
    cluster: Cluster, hub_api: ApiClient, admin_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    """Were `delete profiles` granted again (by hand, by another chart), the allow-list
    still refuses it."""
    name = await cluster.managed_profile()
    role = unique_name("del-prof")
    await cluster.must(
        "POST",
        f"{RBAC}/clusterroles",
        {
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": ["kubeflow.org"], "resources": ["profiles"], "verbs": ["delete"]}
            ],
        },
    )
    cluster.cleanup.append(f"{RBAC}/clusterroles/{role}")
    await cluster.must(
        "POST",
        f"{RBAC}/clusterrolebindings",
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}],
        },
    )
    cluster.cleanup.append(f"{RBAC}/clusterrolebindings/{role}")

    async def delete() -> Outcome:
        return await call(hub_api, "DELETE", f"{PROFILES}/{name}", query=DRY)

    async def rbac_allows() -> bool:
        outcome = await delete()
        return outcome.admitted or outcome.guard is not None

    async with asyncio.timeout(30):
        while not await rbac_allows():
            await asyncio.sleep(0.2)
    refused(await delete(), guard="dna-hub-hub-allowlist")
    assert (await call(admin_api, "GET", f"{PROFILES}/{name}")).admitted


# --- 2. the hub making itself kubeflow-admin --------------------------------------------------


@pytest.mark.parametrize(
    "owner",
    [
        HUB,
        SYNC,
        "system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        "system:admin",
        "dna-hub-team:kubeflow-team-someone-else",
    ],
)
async def test_a_profile_is_never_owned_by_the_hub_sync_or_a_system_identity(
    hub_api: ApiClient, unique_name: Callable[..., str], owner: str
) -> None:
    body = profile(unique_name("kubeflow"), owner)
    await until_loaded(
        lambda: call(hub_api, "POST", PROFILES, body, query=DRY),
        lambda o: refused(o, guard="dna-hub-profiles"),
    )


async def test_a_team_profile_may_be_owned_by_its_own_team_identity(
    hub_api: ApiClient, unique_name: Callable[..., str]
) -> None:
    name = unique_name("kubeflow")
    outcome = await call(
        hub_api, "POST", PROFILES, profile(name, f"dna-hub-team:{name}"), query=DRY
    )
    assert outcome.admitted, outcome


@pytest.mark.parametrize(
    "what",
    ["daemonset", "exec", "portforward", "serviceaccount", "service", "configmap", "job"],
)
async def test_a_hub_with_widened_rbac_still_writes_nothing_but_its_kinds(
    cluster: Cluster, hub_api: ApiClient, what: str
) -> None:
    """The review's escalation: the hub as kubeflow-admin of a namespace (as a Profile it
    owned made it) creating a privileged DaemonSet, exec'ing into pods, making service
    accounts, services, config maps, jobs. The catch-all allow-list refuses each."""
    ns = await cluster.namespace()
    await cluster.widen(HUB, ns)
    privileged = pod("x", hostPID=True, volumes=[{"name": "r", "hostPath": {"path": "/"}}])
    requests = {
        "daemonset": (
            "POST",
            f"/apis/apps/v1/namespaces/{ns}/daemonsets",
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "root"},
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {**privileged["spec"], "tolerations": [{"operator": "Exists"}]},
                    },
                },
            },
        ),
        "exec": ("POST", f"/api/v1/namespaces/{ns}/pods/anything/exec", None),
        "portforward": ("POST", f"/api/v1/namespaces/{ns}/pods/anything/portforward", None),
        "serviceaccount": (
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"metadata": {"name": "mine"}},
        ),
        "service": (
            "POST",
            f"/api/v1/namespaces/{ns}/services",
            {"metadata": {"name": "mine"}, "spec": {"ports": [{"port": 80}]}},
        ),
        "configmap": (
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            {"metadata": {"name": "mine"}, "data": {"a": "b"}},
        ),
        "job": (
            "POST",
            f"/apis/batch/v1/namespaces/{ns}/jobs",
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "mine"},
                "spec": {"template": {"spec": {**pod("x")["spec"], "restartPolicy": "Never"}}},
            },
        ),
    }
    method, path, body = requests[what]
    query = [] if body is None else DRY
    await until_loaded(
        lambda: call(hub_api, method, path, body, query=query),
        lambda o: refused(o, guard="dna-hub-hub-allowlist"),
    )


# --- 4. Pod Security "restricted" is required --------------------------------------------------


@pytest.mark.parametrize("enforce", ["privileged", "baseline", None])
async def test_hub_writes_nothing_into_a_profile_namespace_not_enforcing_restricted(
    cluster: Cluster, hub_api: ApiClient, enforce: str | None
) -> None:
    labels = {"pod-security.kubernetes.io/enforce": enforce} if enforce else {}
    ns = await cluster.namespace(**labels)
    if enforce is None:  # the label removed altogether
        await cluster.patch(
            f"/api/v1/namespaces/{ns}",
            {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": None}}},
        )
    body = pod("jupyter-alice")
    await until_loaded(
        lambda: call(hub_api, "POST", f"/api/v1/namespaces/{ns}/pods", body, query=DRY),
        lambda o: refused(o, guard="dna-hub-hub-allowlist"),
    )


# --- 3 and 5. the sync job is confined like the hub -------------------------------------------


async def test_sync_cannot_put_an_envoyfilter_into_istio_system(
    sync_api: ApiClient, admin_api: ApiClient
) -> None:
    made = await call(
        admin_api, "POST", "/api/v1/namespaces", {"metadata": {"name": "istio-system"}}
    )
    assert made.admitted or made.status == 409, made  # kept, as other tests keep it
    body = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "mesh-wide", "namespace": "istio-system", "labels": MANAGED},
        "spec": {"configPatches": []},
    }
    await until_loaded(
        lambda: call(
            sync_api,
            "POST",
            "/apis/networking.istio.io/v1alpha3/namespaces/istio-system/envoyfilters",
            body,
            query=DRY,
        ),
        lambda o: refused(o, guard="dna-hub-sync-allowlist"),
    )


async def test_sync_cannot_delete_an_authorization_policy_it_did_not_make(
    cluster: Cluster, sync_api: ApiClient
) -> None:
    ns = await cluster.namespace()
    path = f"/apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies"
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "ns-owner-access-istio"},
        "spec": {"action": "ALLOW", "rules": [{}]},
    }
    await cluster.must("POST", path, policy)
    await until_loaded(
        lambda: call(sync_api, "DELETE", f"{path}/ns-owner-access-istio", query=DRY),
        lambda o: refused(o, guard="dna-hub-sync-allowlist"),
    )


@pytest.mark.parametrize("change", ["owner", "plugins", "unmanaged"])
async def test_sync_cannot_take_over_a_profile(
    cluster: Cluster, sync_api: ApiClient, change: str
) -> None:
    name = await cluster.managed_profile()
    if change == "unmanaged":  # a Profile dna_hub does not manage
        await cluster.patch(
            f"{PROFILES}/{name}",
            {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}},
        )
    patch = {
        "owner": {"spec": {"owner": {"kind": "User", "name": "mallory@example.com"}}},
        "plugins": {"spec": {"plugins": [{"kind": "AwsIamForServiceAccount", "spec": {}}]}},
        "unmanaged": {"spec": {"resourceQuotaSpec": {"hard": {"cpu": "1"}}}},
    }[change]
    await until_loaded(
        lambda: call(
            sync_api,
            "PATCH",
            f"{PROFILES}/{name}",
            copy.deepcopy(patch),
            query=DRY,
            content_type="application/merge-patch+json",
        ),
        lambda o: refused(o, guard="dna-hub-profiles"),
    )


async def test_sync_with_widened_rbac_still_cannot_run_pods(
    cluster: Cluster, sync_api: ApiClient
) -> None:
    ns = await cluster.namespace()
    await cluster.widen(SYNC, ns)
    body = pod("x")
    await until_loaded(
        lambda: call(sync_api, "POST", f"/api/v1/namespaces/{ns}/pods", body, query=DRY),
        lambda o: refused(o, guard="dna-hub-sync-allowlist"),
    )


# --- 6. the smaller gaps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["selector-all", "env", "annotations", "labels", "volume-mount"],
)
async def test_pod_default_gaps_are_closed(
    cluster: Cluster, hub_api: ApiClient, change: str
) -> None:
    ns = await cluster.namespace()
    body: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": "access-ml-pipeline", "namespace": ns, "labels": MANAGED},
        "spec": {
            "desc": "x",
            "selector": {"matchLabels": {"access-ml-pipeline": "true"}},
        },
    }
    spec = body["spec"]
    if change == "selector-all":
        spec["selector"] = {}
    elif change == "env":
        spec["env"] = [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]
    elif change == "annotations":
        spec["annotations"] = {"sidecar.istio.io/inject": "false"}
    elif change == "labels":
        spec["labels"] = {"component": "singleuser-server"}
    else:
        spec["volumeMounts"] = [{"name": "volume-kf-pipeline-token", "mountPath": "/etc"}]
    await until_loaded(
        lambda: call(
            hub_api,
            "POST",
            f"/apis/kubeflow.org/v1alpha1/namespaces/{ns}/poddefaults",
            body,
            query=DRY,
        ),
        lambda o: refused(o, guard="dna-hub-poddefaults"),
    )


@pytest.mark.parametrize("change", ["runtime-class", "apparmor-unconfined", "system-priority"])
async def test_pod_gaps_are_closed(
    cluster: Cluster, hub_api: ApiClient, unique_name: Callable[..., str], change: str
) -> None:
    ns = await cluster.namespace()
    body = pod("jupyter-alice")
    if change == "runtime-class":
        # one that exists (the RuntimeClass admission plugin refuses unknown ones first)
        runtime = unique_name("runtime")
        await cluster.must(
            "POST",
            "/apis/node.k8s.io/v1/runtimeclasses",
            {"metadata": {"name": runtime}, "handler": "unsandboxed"},
        )
        cluster.cleanup.append(f"/apis/node.k8s.io/v1/runtimeclasses/{runtime}")
        body["spec"]["runtimeClassName"] = runtime
    elif change == "apparmor-unconfined":
        body["metadata"]["annotations"] = {
            "container.apparmor.security.beta.kubernetes.io/c": "unconfined"
        }
    else:
        body["spec"]["priorityClassName"] = "system-node-critical"
    outcome = await call(hub_api, "POST", f"/api/v1/namespaces/{ns}/pods", body, query=DRY)
    # Pod Security "restricted" refuses unconfined AppArmor first; the guard refuses it too
    # (tests/unit/test_hub_guard.py) where a namespace is open
    assert not outcome.admitted, outcome
    if change != "apparmor-unconfined":
        refused(outcome, guard="dna-hub-pods")


@pytest.mark.parametrize(
    "subject", [HUB, SYNC, "system:serviceaccount:kube-system:default", "system:masters"]
)
async def test_contributor_bindings_never_name_a_system_or_dna_hub_identity(
    cluster: Cluster, hub_api: ApiClient, subject: str
) -> None:
    team = await cluster.namespace(team=True)
    body = binding(
        "user-x-clusterrole-edit",
        team,
        "ClusterRole",
        "kubeflow-edit",
        subject,
        **{"dna-hub.io/contributor": "x"},
    )
    await until_loaded(
        lambda: call(hub_api, "POST", f"{RBAC}/namespaces/{team}/rolebindings", body, query=DRY),
        lambda o: refused(o, guard="dna-hub-rbac"),
    )


async def test_contributor_bindings_only_in_team_namespaces(
    cluster: Cluster, hub_api: ApiClient
) -> None:
    """A person's own profile is no team's: the hub may not make anyone a contributor."""
    personal = await cluster.namespace(owner="alice@example.com")
    body = binding(
        "user-mallory-example-com-clusterrole-edit",
        personal,
        "ClusterRole",
        "kubeflow-edit",
        "mallory@example.com",
        **{"dna-hub.io/contributor": "x"},
    )
    await until_loaded(
        lambda: call(
            hub_api, "POST", f"{RBAC}/namespaces/{personal}/rolebindings", body, query=DRY
        ),
        lambda o: refused(o, guard="dna-hub-rbac"),
    )


async def test_hub_deletes_no_rolebinding_it_did_not_label(
    cluster: Cluster, hub_api: ApiClient
) -> None:
    ns = await cluster.namespace()
    unlabelled = binding("namespaceAdmin", ns, "ClusterRole", "kubeflow-admin", "alice@x.org")
    unlabelled["metadata"]["labels"] = {}
    await cluster.must("POST", f"{RBAC}/namespaces/{ns}/rolebindings", unlabelled)
    await until_loaded(
        lambda: call(
            hub_api, "DELETE", f"{RBAC}/namespaces/{ns}/rolebindings/namespaceAdmin", query=DRY
        ),
        lambda o: refused(o, guard="rbac-or-guard"),
    )
