"""The admission guards constrain the objects the hub writes (issue 18, item 1).

The fast check: the policies' CEL is evaluated here with cel-python (a CEL implementation
from PyPI), the way the API server does: matchConditions select the request, variables
are computed, every validation must be true (an evaluation error counts as a refusal:
failurePolicy Fail).
The one Kubernetes CEL library function the guard uses, ``substring``, is supplied with
its Kubernetes semantics. Allowed objects are what dna_hub really renders (profile
templates, the pod KubeSpawner would create, the API-token Secret); forbidden ones are what
a compromised hub would write.

The proof is tests/integration/test_guard_replay.py: it collects every case evaluated here
(``DNA_HUB_GUARD_CASES``) and replays it through a real API server as the hub, with both
guard files applied; the server must reach the same verdict, and refuse by a guard.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Callable
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes

from devstack.paths import REPO_ROOT
from dna_hub.policy.rendering import ProfileContext, render_profile
from dna_hub.profiles.api_token import api_token_secret_manifest
from tests.unit.test_cli_render import render

HUB = "system:serviceaccount:jupyterhub:hub"
SYNC = "system:serviceaccount:jupyterhub:dna-hub-sync"
MANAGED = {"app.kubernetes.io/managed-by": "dna-hub"}
#: a team's namespace: Kubeflow's profile controller annotates it with the Profile's owner,
#: the team's own identity
TEAM_NS = {"owner": "dna-hub-team:kubeflow-alice"}
NS = "kubeflow-alice"
#: as Kubeflow's profile controller labels a profile namespace (upstream's kubeflow-pss
#: overlay; dna_hub requires enforce: restricted)
PROFILE_LABELS = {
    "app.kubernetes.io/part-of": "kubeflow-profile",
    "pod-security.kubernetes.io/enforce": "restricted",
}
GUARD_FILES = ("hub-object-guard.yaml", "hub-namespace-guard.yaml")
#: When set, refusals() appends every case it evaluates to this file (one JSON object per
#: line) for tests/integration/test_guard_replay.py, which replays them through a real API
#: server as the hub: cel-python here is the fast check, the API server the proof.
CASES_ENV = "DNA_HUB_GUARD_CASES"
RESOURCES = {
    "Pod": ("", "pods"),
    "Secret": ("", "secrets"),
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "PodDefault": ("kubeflow.org", "poddefaults"),
    "AuthorizationPolicy": ("security.istio.io", "authorizationpolicies"),
    "Profile": ("kubeflow.org", "profiles"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "EnvoyFilter": ("networking.istio.io", "envoyfilters"),
    "LimitRange": ("", "limitranges"),
    "DaemonSet": ("apps", "daemonsets"),
    "ServiceAccount": ("", "serviceaccounts"),
    "ConfigMap": ("", "configmaps"),
}


def _substring(value: Any, start: Any, end: Any = None) -> celtypes.StringType:
    return celtypes.StringType(str(value)[int(start) : None if end is None else int(end)])


class Policy:
    def __init__(self, spec: dict[str, Any], name: str) -> None:
        self.name = name
        self.spec = spec
        env = celpy.Environment()

        def compile_(expression: str) -> Callable[[dict[str, Any]], Any]:
            program = env.program(env.compile(expression), functions={"substring": _substring})
            return program.evaluate

        self.rules = spec["matchConstraints"]["resourceRules"]
        self.conditions = [compile_(c["expression"]) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compile_(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(compile_(v["expression"]), v["message"]) for v in spec["validations"]]

    def matches(self, group: str, resource: str, operation: str) -> bool:
        return any(
            (group in r["apiGroups"] or "*" in r["apiGroups"])
            and (resource in r["resources"] or "*" in r["resources"] or "*/*" in r["resources"])
            and (operation in r["operations"] or "*" in r["operations"])
            for r in self.rules
        )


def load_policies() -> list[Policy]:
    policies = []
    for file in GUARD_FILES:
        for obj in yaml.safe_load_all((REPO_ROOT / "helm-values" / file).read_text()):
            if obj and obj["kind"] == "ValidatingAdmissionPolicy":
                policies.append(Policy(obj["spec"], obj["metadata"]["name"]))
    return policies


POLICIES = load_policies()


def refusals(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    namespace: str | None = NS,
    namespace_labels: dict[str, str] | None = None,
    namespace_annotations: dict[str, str] | None = None,
    user: str = HUB,
) -> list[str]:
    """The messages of every guard validation that refuses this request ([] = admitted)."""
    subject = obj if obj is not None else old
    assert subject is not None
    group, resource = RESOURCES[subject["kind"]]
    if subject["kind"] == "Profile":
        namespace = None
    labels = PROFILE_LABELS if namespace_labels is None and namespace == NS else namespace_labels
    # as the API server sends it: empty fields (a cluster-scoped kind's namespace, no
    # subresource) are left out
    request = {
        "operation": operation,
        "name": subject["metadata"]["name"],
        "userInfo": {"username": user},
        "resource": {"group": group, "version": "v1", "resource": resource},
    }
    if namespace:
        request["namespace"] = namespace
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel(request),
        "namespaceObject": celpy.json_to_cel(
            {
                "metadata": {
                    "name": namespace,
                    "labels": labels or {},
                    "annotations": namespace_annotations or {},
                }
            }
            if namespace
            else None
        ),
    }
    refused = []
    for policy in POLICIES:
        if not policy.matches(group, resource, operation):
            continue
        if not all(bool(condition(activation)) for condition in policy.conditions):
            continue
        # in order: a variable may use the ones before it, as on the API server
        variables: dict[str, Any] = {}
        for name, expression in policy.variables:
            scope = celtypes.MapType({celtypes.StringType(k): v for k, v in variables.items()})
            variables[name] = expression({**activation, "variables": scope})
        activation["variables"] = celtypes.MapType(
            {celtypes.StringType(k): v for k, v in variables.items()}
        )
        for validation, message in policy.validations:
            result = validation(activation)
            # an error refuses too (failurePolicy Fail), but a guard that only refuses by
            # failing to evaluate would prove nothing: the tests require real verdicts
            assert not isinstance(result, celpy.CELEvalError), (policy.name, message, result)
            if not bool(result):
                refused.append(f"{policy.name}: {message}")
    if cases_file := os.environ.get(CASES_ENV):
        case = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0],
            "obj": obj,
            "operation": operation,
            "old": old,
            "namespace": namespace,
            "namespace_labels": labels or {},
            "namespace_annotations": namespace_annotations or {},
            "user": user,
            "refused": refused,
        }
        with open(cases_file, "a") as fh:
            fh.write(json.dumps(case, sort_keys=True) + "\n")
    return refused


# --- what dna_hub really writes -------------------------------------------------------------


def rendered(**kw: Any) -> dict[str, dict[str, Any]]:
    context = ProfileContext(
        username="alice",
        namespace=NS,
        owner="alice@example.com",
        hub_namespace="jupyterhub",
        legacy_envoy_filter=True,
        legacy_ml_pipeline_policy=True,
        **kw,
    )
    profile = render_profile(context)
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
        for o in profile.objects
    }


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    return rendered()


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    """The pod KubeSpawner creates for alice, after the PodDefault webhook's mutation."""
    # `dna-hub render --pod` in a process of its own: the preview points that process's
    # Kubernetes client nowhere (dna_hub.cli.context.isolate_from_cluster)
    result = render("--user", "alice", "--owner", "alice@example.com", "--pod")
    assert result.returncode == 0, result.stderr
    *_, manifest = yaml.safe_load_all(result.stdout)
    manifest["spec"].setdefault("volumes", []).append(
        {
            "name": "volume-kf-pipeline-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "expirationSeconds": 7200,
                            "audience": "pipelines.kubeflow.org",
                        }
                    }
                ]
            },
        }
    )
    return manifest


def token_secret() -> dict[str, Any]:
    secret = api_token_secret_manifest(
        name="jupyter-alice-api-token-0a1b2c3d",
        namespace=NS,
        token="t0ken",
        pod_name="jupyter-alice",
        pod_uid="0000-1111",
    )
    # The API server turns stringData into data before admission.
    secret["data"] = {"token": base64.b64encode(b"t0ken").decode()}
    del secret["stringData"]
    return secret


def team_binding(role: str = "edit") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": f"user-bob-example-com-clusterrole-{role}",
            "namespace": NS,
            # as dna_hub.policy.teams.contributor_objects labels it
            "labels": {**MANAGED, "dna-hub.io/contributor": "bob-example-com"},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"kubeflow-{role}",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob@example.com"}
        ],
    }


def test_guard_policies_are_schema_valid() -> None:
    import kubernetes_validate

    names = set()
    for file in GUARD_FILES:
        docs = [o for o in yaml.safe_load_all((REPO_ROOT / "helm-values" / file).read_text()) if o]
        for obj in docs:
            kubernetes_validate.validate(obj, "1.30.0", strict=True)
        policies = {o["metadata"]["name"] for o in docs if o["kind"] == "ValidatingAdmissionPolicy"}
        bindings = {
            o["spec"]["policyName"]
            for o in docs
            if o["kind"] == "ValidatingAdmissionPolicyBinding"
            and o["spec"]["validationActions"] == ["Deny"]
        }
        assert policies == bindings, file
        names |= policies
    assert len(names) == 9  # 7 object shapes + the allow-lists of the hub and the sync job


async def test_everything_dna_hub_writes_is_admitted(
    objects: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    for key, obj in objects.items():
        namespace = obj["metadata"].get("namespace")
        labels = PROFILE_LABELS if namespace == NS else {}
        assert refusals(obj, namespace=namespace, namespace_labels=labels) == [], key
    assert refusals(pod) == []
    assert refusals(token_secret()) == []
    for role in ("edit", "view"):
        assert refusals(team_binding(role), namespace_annotations=TEAM_NS) == []
        # a member who left the group: dna_hub deletes the binding it made
        deleted = refusals(
            None, operation="DELETE", old=team_binding(role), namespace_annotations=TEAM_NS
        )
        assert deleted == []
    assert refusals(claim()) == []
    profile = objects[f"Profile//{NS}"]
    assert refusals(profile, operation="UPDATE", old=profile) == []
    team = copy.deepcopy(profile)
    team["spec"]["owner"]["name"] = f"dna-hub-team:{NS}"
    assert refusals(team) == []


async def test_the_sync_job_may_apply_and_prune_what_dna_hub_renders(
    objects: dict[str, dict[str, Any]],
) -> None:
    for key, obj in objects.items():
        namespace = obj["metadata"].get("namespace")
        labels = PROFILE_LABELS if namespace == NS else {}
        if obj["kind"] == "Profile":  # re-applied, never created
            assert refusals(obj, operation="UPDATE", old=obj, user=SYNC) == [], key
            continue
        assert refusals(obj, namespace=namespace, namespace_labels=labels, user=SYNC) == [], key
        assert (
            refusals(
                None,
                operation="DELETE",
                old=obj,
                namespace=namespace,
                namespace_labels=labels,
                user=SYNC,
            )
            == []
        ), key


def _pod_with(pod: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    changed = copy.deepcopy(pod)
    change(changed)
    return changed


POD_BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "cluster-admin service account": lambda p: p["spec"].update(
        serviceAccountName="profiles-controller-service-account"
    ),
    "hostNetwork": lambda p: p["spec"].update(hostNetwork=True),
    "hostPID": lambda p: p["spec"].update(hostPID=True),
    "nodeName": lambda p: p["spec"].update(nodeName="control-plane"),
    "hostPath": lambda p: p["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
    # the API server's validation refuses privileged with allowPrivilegeEscalation false
    "privileged": lambda p: p["spec"]["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True
    ),
    "privilege escalation": lambda p: p["spec"]["containers"][0]["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "capabilities kept": lambda p: p["spec"]["containers"][0]["securityContext"].update(
        capabilities={"add": ["SYS_ADMIN"]}
    ),
    "root": lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsUser=0),
    "pod root": lambda p: p["spec"]["securityContext"].update(runAsNonRoot=False),
    "seccomp unconfined": lambda p: p["spec"]["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "sysctls": lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "kernel.shm_rmid_forced", "value": "0"}]
    ),
    "hostPort": lambda p: p["spec"]["containers"][0].update(
        ports=[{"containerPort": 8888, "hostPort": 8888}]
    ),
    # (runtimeClassName: on the API server with a RuntimeClass that exists,
    # tests/integration/test_hub_confinement.py::test_pod_gaps_are_closed)
    "system priority": lambda p: p["spec"].update(priorityClassName="system-node-critical"),
    "AppArmor unconfined": lambda p: p["spec"]["securityContext"].update(
        appArmorProfile={"type": "Unconfined"}
    ),
    "AppArmor annotation": lambda p: (
        p["metadata"]
        .setdefault("annotations", {})
        .update({"container.apparmor.security.beta.kubernetes.io/notebook": "unconfined"})
    ),
    "privileged init container": lambda p: p["spec"].update(
        initContainers=[{"name": "x", "image": "x", "securityContext": {"privileged": True}}]
    ),
}


@pytest.mark.parametrize("breakage", sorted(POD_BREAKAGES))
async def test_forbidden_pods_are_refused(pod: dict[str, Any], breakage: str) -> None:
    assert refusals(_pod_with(pod, POD_BREAKAGES[breakage])), breakage


async def test_pods_only_in_profile_namespaces(pod: dict[str, Any]) -> None:
    assert refusals(pod, namespace="kubeflow", namespace_labels={})
    assert refusals(pod, namespace="istio-system", namespace_labels={})
    # the guards bind the hub only
    assert refusals(pod, namespace="kubeflow", namespace_labels={}, user="system:admin") == []


def test_writes_only_to_profile_namespaces(objects: dict[str, dict[str, Any]]) -> None:
    """hub-namespace-guard.yaml: what dna_hub writes into a profile namespace, it may write
    nowhere else — the KFP namespace included (there: only the legacy policies)."""
    # RoleBindings left out: outside a profile namespace the Kale Role they name does not
    # exist, and RBAC refuses binding a missing Role (404) before any admission runs.
    writes = [
        o
        for o in objects.values()
        if o["metadata"].get("namespace") == NS and o["kind"] != "RoleBinding"
    ]
    assert {o["kind"] for o in writes} >= {"LimitRange", "NetworkPolicy", "EnvoyFilter"}
    for obj in [*writes, token_secret(), claim()]:
        for namespace in ("kubeflow", "istio-system"):
            moved = copy.deepcopy(obj)
            moved["metadata"]["namespace"] = namespace
            refused = refusals(moved, namespace=namespace, namespace_labels={})
            assert any(r.startswith("dna-hub-hub-allowlist:") for r in refused), (
                obj["kind"],
                namespace,
                refused,
            )


def test_forbidden_secrets_are_refused() -> None:
    sa_token = token_secret()
    sa_token["type"] = "kubernetes.io/service-account-token"
    sa_token["metadata"]["annotations"] = {
        "kubernetes.io/service-account.name": "profiles-controller-service-account"
    }
    assert refusals(sa_token)
    other_key = token_secret()
    other_key["data"]["ca.crt"] = "eA=="
    assert refusals(other_key)
    orphan = token_secret()
    del orphan["metadata"]["ownerReferences"]
    assert refusals(orphan)
    renamed = token_secret()
    renamed["metadata"]["name"] = "dna-hub-oidc"
    assert refusals(renamed)


def test_forbidden_rbac_is_refused(objects: dict[str, dict[str, Any]]) -> None:
    role = objects[f"Role/{NS}/dna-hub-kale-workflows"]
    wild = copy.deepcopy(role)
    wild["rules"].append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert refusals(wild)
    secrets = copy.deepcopy(role)
    secrets["rules"][0]["resources"] = ["secrets"]
    assert refusals(secrets)
    other = copy.deepcopy(role)
    other["metadata"]["name"] = "admin"
    assert refusals(other)

    binding = objects[f"RoleBinding/{NS}/dna-hub-kale-workflows"]
    to_admin = copy.deepcopy(binding)
    to_admin["roleRef"] = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert refusals(to_admin)
    foreign = copy.deepcopy(binding)
    foreign["subjects"][0]["namespace"] = "kubeflow"
    assert refusals(foreign)
    extra = copy.deepcopy(binding)
    extra["subjects"].append({"kind": "Group", "name": "system:authenticated"})
    assert refusals(extra)

    def team(obj: dict[str, Any]) -> list[str]:
        return refusals(obj, namespace_annotations=TEAM_NS)

    escalated = team_binding("edit")
    escalated["roleRef"]["name"] = "kubeflow-admin"
    assert team(escalated)
    view_as_edit = team_binding("view")
    view_as_edit["roleRef"]["name"] = "kubeflow-edit"
    assert team(view_as_edit)
    many = team_binding()
    many["subjects"].append({"kind": "Group", "name": "system:authenticated"})
    assert team(many)
    service_account = team_binding()
    service_account["subjects"] = [{"kind": "ServiceAccount", "name": "x", "namespace": "kubeflow"}]
    assert team(service_account)
    # a User subject named like a service account IS that service account to RBAC
    for name in (HUB, SYNC, "system:serviceaccount:kube-system:default", "system:masters"):
        system = team_binding()
        system["subjects"][0]["name"] = name
        assert team(system), name
    team_identity = team_binding()
    team_identity["subjects"][0]["name"] = "dna-hub-team:kubeflow-team-other"
    assert team(team_identity)
    # contributors only in a team's namespace, never in a person's own profile
    assert refusals(team_binding()) != []
    unlabelled = team_binding()
    del unlabelled["metadata"]["labels"]
    assert team(unlabelled)
    # deleting: only what dna_hub labelled (never the profile controller's namespaceAdmin)
    owner_binding = team_binding()
    owner_binding["metadata"] = {"name": "namespaceAdmin", "namespace": NS}
    owner_binding["roleRef"]["name"] = "kubeflow-admin"
    assert refusals(None, operation="DELETE", old=owner_binding, namespace_annotations=TEAM_NS)


def test_forbidden_poddefaults_are_refused(objects: dict[str, dict[str, Any]]) -> None:
    poddefault = objects[f"PodDefault/{NS}/access-ml-pipeline"]
    host = copy.deepcopy(poddefault)
    host["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    assert refusals(host)
    other_token = copy.deepcopy(poddefault)
    other_token["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"][
        "audience"
    ] = "https://kubernetes.default.svc"
    assert refusals(other_token)
    account = copy.deepcopy(poddefault)
    account["spec"]["serviceAccountName"] = "profiles-controller-service-account"
    assert refusals(account)
    # the review's gaps: every pod of the namespace, other env, annotations, labels, mounts
    everyone = copy.deepcopy(poddefault)
    everyone["spec"]["selector"] = {}
    assert refusals(everyone)
    expression = copy.deepcopy(poddefault)
    expression["spec"]["selector"]["matchExpressions"] = [{"key": "x", "operator": "DoesNotExist"}]
    assert refusals(expression)
    preload = copy.deepcopy(poddefault)
    preload["spec"]["env"].append({"name": "LD_PRELOAD", "value": "/tmp/x.so"})
    assert refusals(preload)
    annotated = copy.deepcopy(poddefault)
    annotated["spec"]["annotations"] = {"sidecar.istio.io/inject": "false"}
    assert refusals(annotated)
    labelled = copy.deepcopy(poddefault)
    labelled["spec"]["labels"] = {"component": "singleuser-server"}
    assert refusals(labelled)
    mounted = copy.deepcopy(poddefault)
    mounted["spec"]["volumeMounts"][0]["mountPath"] = "/etc"
    assert refusals(mounted)


def test_kfp_namespace_policies_only_in_the_legacy_shape(
    objects: dict[str, dict[str, Any]],
) -> None:
    allow = objects[f"AuthorizationPolicy/kubeflow/dna-hub-ml-pipeline-{NS}"]
    deny = objects[f"AuthorizationPolicy/kubeflow/dna-hub-userid-{NS}"]

    def kfp(obj: dict[str, Any]) -> list[str]:
        return refusals(obj, namespace="kubeflow", namespace_labels={})

    open_to_all = copy.deepcopy(allow)
    open_to_all["spec"]["rules"] = [{}]  # ALLOW everything from anyone
    assert kfp(open_to_all)
    no_selector = copy.deepcopy(allow)
    del no_selector["spec"]["selector"]  # every workload of the KFP namespace
    assert kfp(no_selector)
    someone_else = copy.deepcopy(allow)
    someone_else["spec"]["rules"][0]["from"][0]["source"]["principals"] = [
        "cluster.local/ns/kubeflow/sa/profiles-controller-service-account"
    ]
    assert kfp(someone_else)
    other_name = copy.deepcopy(allow)
    other_name["metadata"]["name"] = "ml-pipeline"
    assert kfp(other_name)
    flipped = copy.deepcopy(deny)
    flipped["spec"]["action"] = "ALLOW"
    assert kfp(flipped)
    mismatched = copy.deepcopy(deny)
    mismatched["metadata"]["name"] = "dna-hub-userid-kubeflow-bob"
    assert kfp(mismatched)


def test_forbidden_profiles_are_refused(objects: dict[str, dict[str, Any]]) -> None:
    profile = objects[f"Profile//{NS}"]
    plugins = copy.deepcopy(profile)
    plugins["spec"]["plugins"] = [
        {"kind": "AwsIamForServiceAccount", "spec": {"awsIamRole": "arn:aws:iam::1:role/admin"}}
    ]
    assert refusals(plugins)
    taken_over = copy.deepcopy(profile)
    taken_over["spec"]["owner"]["name"] = "mallory@example.com"
    assert refusals(taken_over, operation="UPDATE", old=profile)
    from dna_hub.policy.naming import RESERVED_NAMESPACES

    # every reserved namespace the naming policy refuses, the guard refuses as well
    for name in sorted(RESERVED_NAMESPACES | {"kube-evil"}):
        renamed = copy.deepcopy(profile)
        renamed["metadata"]["name"] = name
        assert refusals(renamed), name
    group_owner = copy.deepcopy(profile)
    group_owner["spec"]["owner"]["kind"] = "Group"
    assert refusals(group_owner)
    # never deleted by the hub, pending or not (a forged marker deleted any Profile)
    assert refusals(None, operation="DELETE", old=profile)
    pending = copy.deepcopy(profile)
    pending["metadata"]["annotations"]["dna-hub.io/applied-digest"] = "pending"
    assert refusals(None, operation="DELETE", old=pending)
    # the owner is never the hub, the sync job, a system: identity or another team's
    for owner in (
        HUB,
        SYNC,
        "system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        "system:admin",
        "dna-hub-team:kubeflow-team-other",
    ):
        owned = copy.deepcopy(profile)
        owned["spec"]["owner"]["name"] = owner
        assert refusals(owned), owner
    # never a Profile dna_hub does not manage
    unmanaged = copy.deepcopy(profile)
    del unmanaged["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert refusals(profile, operation="UPDATE", old=unmanaged)
    assert refusals(unmanaged)


def test_the_sync_job_is_confined_like_the_hub(objects: dict[str, dict[str, Any]]) -> None:
    profile = objects[f"Profile//{NS}"]
    taken_over = copy.deepcopy(profile)
    taken_over["spec"]["owner"]["name"] = "mallory@example.com"
    assert refusals(taken_over, operation="UPDATE", old=profile, user=SYNC)
    plugins = copy.deepcopy(profile)
    plugins["spec"]["plugins"] = [{"kind": "AwsIamForServiceAccount", "spec": {}}]
    assert refusals(plugins, operation="UPDATE", old=profile, user=SYNC)
    # sync never creates or deletes a Profile: the allow-list refuses (and RBAC grants
    # neither: tests/integration/test_sync_rbac.py)
    assert refusals(profile, user=SYNC)
    assert refusals(None, operation="DELETE", old=profile, user=SYNC)
    envoy = objects[f"EnvoyFilter/{NS}/dna-hub-kubeflow-userid"]
    mesh_wide = copy.deepcopy(envoy)
    mesh_wide["metadata"]["namespace"] = "istio-system"
    assert refusals(mesh_wide, namespace="istio-system", namespace_labels={}, user=SYNC)
    foreign_policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "ns-owner-access-istio", "namespace": NS},
        "spec": {"action": "ALLOW", "rules": [{}]},
    }
    assert refusals(None, operation="DELETE", old=foreign_policy, user=SYNC)
    role = objects[f"Role/{NS}/dna-hub-kale-workflows"]
    wild = copy.deepcopy(role)
    wild["rules"].append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert refusals(wild, user=SYNC)


def test_nothing_outside_the_allow_list(pod: dict[str, Any]) -> None:
    """The catch-all: kinds RBAC might one day grant are refused for both identities."""
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "root", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {**pod["spec"], "restartPolicy": "Always"},
            },
        },
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x", "namespace": NS},
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}}
    for user in (HUB, SYNC):
        for obj in (daemonset, account, config):
            assert refusals(obj, user=user), (user, obj["kind"])
    assert refusals(pod, user=SYNC)


def test_nothing_into_a_profile_namespace_without_pod_security_restricted(
    objects: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    for enforce in ("privileged", "baseline"):
        labels = {**PROFILE_LABELS, "pod-security.kubernetes.io/enforce": enforce}
        assert refusals(pod, namespace_labels=labels), enforce
        limits = objects[f"LimitRange/{NS}/dna-hub-defaults"]
        assert refusals(limits, namespace_labels=labels, user=SYNC), enforce
    open_ns = {k: v for k, v in PROFILE_LABELS.items() if "pod-security" not in k}
    assert refusals(pod, namespace_labels=open_ns)


def claim() -> dict[str, Any]:
    """KubeSpawner's per-user volume claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "claim-alice", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }


def test_volume_claims_never_reach_existing_data() -> None:
    bound = claim()
    bound["spec"]["volumeName"] = "pvc-of-bob"  # a released volume with bob's data
    assert refusals(bound)
    cloned = claim()
    cloned["spec"]["dataSource"] = {"kind": "PersistentVolumeClaim", "name": "claim-bob"}
    assert refusals(cloned)
    other = claim()
    other["metadata"]["name"] = "data"
    assert refusals(other)
