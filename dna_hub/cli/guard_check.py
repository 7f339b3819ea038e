"""``dna-hub doctor``: are the admission guards in force, and may they work?

The guards (``dna-hub manifests``: helm-values/hub-namespace-guard.yaml,
hub-object-guard.yaml) are what confine the hub and the sync job; without them a compromised
hub is cluster-admin in practice. So:

* Kubernetes < 1.30 (no ValidatingAdmissionPolicy served) FAILS: unsupported.
* EVERY policy is probed by its effect: a server-side DRY-RUN write (nothing persists) that
  the policy, and only it, must refuse, made as the identity the policy confines. Refused by
  that policy: in force. Admitted, or refused by something else: it fails, naming why.
  The hub cannot read the policies (least privilege), so effect is also the only way.
  Run in the hub pod, doctor probes as the hub; run by an operator who may impersonate
  (``--as``), as the hub and as the sync job, so both allow-lists are probed.
* Every Kubeflow profile namespace must enforce Pod Security ``restricted`` (the guards
  refuse the hub's writes into any other): each one that does not FAILS, by name.

Object-shape probes need a profile namespace to write into; before the first login there is
none, and they are reported as not checked (skip) with that reason.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.k8s.retry import describe
from dna_hub.policy.platform import PlatformValues

#: The group/version that serves ValidatingAdmissionPolicy from Kubernetes 1.30.
ADMISSION_API = "/apis/admissionregistration.k8s.io/v1"
PROBE = "dna-hub-doctor-probe"
MANAGED = {"app.kubernetes.io/managed-by": "dna-hub"}
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
PROFILE_SELECTOR = "app.kubernetes.io/part-of=kubeflow-profile"
FIX = "dna-hub manifests --config <hub config> | kubectl apply -f - (docs/deploy.md)"


@dataclass(frozen=True)
class GuardProbe:
    #: the policy that must refuse it
    policy: str
    #: whose writes it confines: "hub" or "sync"
    identity: str
    what: str
    path: str
    body: dict[str, Any]
    #: needs a profile namespace to write into
    namespaced: bool = False


def _pod(namespace: str) -> dict[str, Any]:
    """A pod Pod Security 'restricted' admits, but as another service account."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": PROBE, "namespace": namespace},
        "spec": {
            # one every namespace has (a missing one is refused before any guard is asked)
            "serviceAccountName": "default",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.invalid/probe",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsUser": 1000,
                    },
                }
            ],
        },
    }


def probes(values: PlatformValues, profile_namespace: str | None) -> tuple[GuardProbe, ...]:
    """One probe per policy and identity. ``profile_namespace``: a profile namespace that
    enforces 'restricted' (None: the namespaced probes are returned with a placeholder and
    reported as not checked)."""
    ns = profile_namespace or "<none>"
    hub_ns = values.hub.namespace
    profile_name = f"{values.profile_prefix}{PROBE}"
    kfp = values.kfp_namespace
    result = [
        GuardProbe(
            "dna-hub-hub-allowlist",
            "hub",
            f"a LimitRange in {hub_ns} (not a profile namespace)",
            f"/api/v1/namespaces/{hub_ns}/limitranges",
            {"metadata": {"name": PROBE, "labels": MANAGED}, "spec": {"limits": []}},
        ),
        GuardProbe(
            "dna-hub-sync-allowlist",
            "sync",
            f"a LimitRange in {hub_ns} (not a profile namespace)",
            f"/api/v1/namespaces/{hub_ns}/limitranges",
            {"metadata": {"name": PROBE, "labels": MANAGED}, "spec": {"limits": []}},
        ),
        GuardProbe(
            "dna-hub-profiles",
            "hub",
            "a Profile with spec.plugins",
            "/apis/kubeflow.org/v1/profiles",
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "Profile",
                "metadata": {"name": profile_name, "labels": MANAGED},
                "spec": {
                    "owner": {"kind": "User", "name": "dna-hub-doctor@example.invalid"},
                    "plugins": [{"kind": "AwsIamForServiceAccount", "spec": {}}],
                },
            },
        ),
        GuardProbe(
            "dna-hub-pods",
            "hub",
            f"a pod in {ns} as another service account",
            f"/api/v1/namespaces/{ns}/pods",
            _pod(ns),
            namespaced=True,
        ),
        GuardProbe(
            "dna-hub-secrets",
            "hub",
            f"a Secret in {ns} that is no server's API token",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": PROBE}, "type": "Opaque", "stringData": {"token": "x"}},
            namespaced=True,
        ),
        GuardProbe(
            "dna-hub-volume-claims",
            "hub",
            f"a volume claim in {ns} not named claim-<user>",
            f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
            {
                "metadata": {"name": PROBE},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            namespaced=True,
        ),
    ]
    for identity in ("hub", "sync"):
        result += [
            GuardProbe(
                "dna-hub-rbac",
                identity,
                f"a Role in {ns} that is not the Kale Role",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
                {"metadata": {"name": PROBE, "labels": MANAGED}, "rules": []},
                namespaced=True,
            ),
            GuardProbe(
                "dna-hub-poddefaults",
                identity,
                f"a PodDefault in {ns} selecting every pod",
                f"/apis/kubeflow.org/v1alpha1/namespaces/{ns}/poddefaults",
                {
                    "apiVersion": "kubeflow.org/v1alpha1",
                    "kind": "PodDefault",
                    "metadata": {"name": PROBE, "labels": MANAGED},
                    "spec": {"desc": PROBE, "selector": {}},
                },
                namespaced=True,
            ),
        ]
    if values.legacy_ml_pipeline_policy or values.legacy_envoy_filter:
        result.append(
            GuardProbe(
                "dna-hub-kfp-policies",
                "hub",
                f"an AuthorizationPolicy in {kfp} that opens ml-pipeline to everyone",
                f"/apis/security.istio.io/v1/namespaces/{kfp}/authorizationpolicies",
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {"name": f"dna-hub-ml-pipeline-{ns}", "labels": MANAGED},
                    "spec": {"action": "ALLOW", "rules": [{}]},
                },
                namespaced=True,
            )
        )
    return tuple(result)


@dataclass(frozen=True)
class GuardVerdict:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False
    skipped: bool = False


def verdict(probe: GuardProbe, error: BaseException | None) -> GuardVerdict:
    """Pure: what the dry run's answer says about the guard."""
    name = f"admission guard {probe.policy} in force ({probe.identity})"
    if error is None:
        return GuardVerdict(name, False, f"absent: {probe.what} was admitted (dry run)", FIX)
    body = getattr(error, "body", None) or ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    status = getattr(error, "status", None)
    if status in (400, 403, 422) and f"ValidatingAdmissionPolicy '{probe.policy}'" in str(body):
        return GuardVerdict(name, True, f"refuses {probe.what}")
    return GuardVerdict(name, False, f"dry run of {probe.what}: {describe(error)}", FIX)


def unsupported() -> GuardVerdict:
    return GuardVerdict(
        "admission guards (dna-hub manifests)",
        False,
        "this cluster serves no ValidatingAdmissionPolicy (Kubernetes < 1.30): nothing "
        "confines the hub beyond RBAC, which makes it cluster-admin in practice",
        "upgrade to Kubernetes >= 1.30: older versions are unsupported (docs/deploy.md)",
    )


async def _get(api: ApiClient, path: str, seconds: float, **query: str) -> Any:
    return await api.call_api(
        path,
        "GET",
        query_params=list(query.items()),
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=seconds,
    )


async def guards_supported(api: ApiClient, seconds: float) -> bool:
    try:
        listing = await _get(api, ADMISSION_API, seconds)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return "validatingadmissionpolicies" in {r.get("name") for r in listing.get("resources", [])}


async def profile_namespaces(api: ApiClient, seconds: float) -> list[dict[str, Any]]:
    listing = await _get(api, "/api/v1/namespaces", seconds, labelSelector=PROFILE_SELECTOR)
    return list(listing.get("items") or [])


def pod_security_verdicts(namespaces: Sequence[dict[str, Any]]) -> list[GuardVerdict]:
    """Pure: every profile namespace enforces Pod Security 'restricted'."""
    name = "profile namespaces enforce Pod Security restricted"
    levels = {
        ns["metadata"]["name"]: (ns["metadata"].get("labels") or {}).get(PSA_ENFORCE, "unset")
        for ns in namespaces
    }
    open_ = sorted(f"{name} ({level})" for name, level in levels.items() if level != "restricted")
    if open_:
        return [
            GuardVerdict(
                name,
                False,
                "not enforcing: " + ", ".join(open_),
                f"kubectl label namespace NAME {PSA_ENFORCE}=restricted --overwrite (Kubeflow's "
                "kubeflow-pss overlay enforces only baseline; the guards refuse the hub's "
                "writes there until it does)",
            )
        ]
    return [GuardVerdict(name, True, f"{len(namespaces)} profile namespace(s)")]


async def _probe(api: ApiClient, probe: GuardProbe, seconds: float) -> GuardVerdict:
    error: BaseException | None = None
    try:
        await api.call_api(
            probe.path,
            "POST",
            query_params=[("dryRun", "All")],
            body=copy.deepcopy(probe.body),
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=seconds,
        )
    except (ApiException, OSError, TimeoutError) as e:
        error = e
    return verdict(probe, error)


async def check_guards(
    clients: dict[str, ApiClient], values: PlatformValues, seconds: float
) -> list[GuardVerdict]:
    """``clients``: an ApiClient per identity doctor can act as ("hub", "sync"); the first
    one also reads the profile namespaces. Probes of an identity without a client are
    reported as not checked, saying how to check them."""
    reader = next(iter(clients.values()))
    try:
        supported = await guards_supported(reader, seconds)
        namespaces = await profile_namespaces(reader, seconds) if supported else []
    except (ApiException, OSError, TimeoutError) as e:
        return [GuardVerdict("admission guards", False, describe(e), "check the API server")]
    if not supported:
        return [unsupported()]
    # a namespace being deleted takes no new writes: neither a target nor a finding
    namespaces = [ns for ns in namespaces if not ns["metadata"].get("deletionTimestamp")]
    restricted = [
        ns["metadata"]["name"]
        for ns in namespaces
        if (ns["metadata"].get("labels") or {}).get(PSA_ENFORCE) == "restricted"
    ]
    target = sorted(restricted)[0] if restricted else None
    verdicts = pod_security_verdicts(namespaces)
    for probe in probes(values, target):
        name = f"admission guard {probe.policy} in force ({probe.identity})"
        if probe.namespaced and target is None:
            verdicts.append(
                GuardVerdict(
                    name,
                    False,
                    "no profile namespace enforcing restricted yet to probe in",
                    "re-run after the first login",
                    skipped=True,
                )
            )
            continue
        api = clients.get(probe.identity)
        if api is None:
            identity = values.sync.username if probe.identity == "sync" else values.hub.username
            verdicts.append(
                GuardVerdict(
                    name,
                    False,
                    f"doctor runs as another identity than {identity}",
                    f"as an operator: dna-hub doctor --as {identity}",
                    skipped=True,
                )
            )
            continue
        verdicts.append(await _probe(api, probe, seconds))
    return verdicts
