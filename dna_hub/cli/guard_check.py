"""``dna-hub doctor``: are the admission guards in force (helm-values/hub-*-guard.yaml)?

The hub cannot read ValidatingAdmissionPolicies (nor should it: RBAC stays least
privilege), so each guard is checked by its effect: a server-side DRY-RUN create of an
object it must refuse, with the hub's own identity. Refused by the guard's policy: in force.
Admitted: absent (the dry run persists nothing). Kubernetes < 1.30 (no
ValidatingAdmissionPolicy served): a warning, because no guard can run there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.k8s.retry import describe

#: The group/version that serves ValidatingAdmissionPolicy from Kubernetes 1.30.
ADMISSION_API = "/apis/admissionregistration.k8s.io/v1"


@dataclass(frozen=True)
class GuardProbe:
    file: str
    policy: str
    what: str
    path: str
    body: dict[str, Any]


def probes(hub_namespace: str) -> tuple[GuardProbe, ...]:
    return (
        GuardProbe(
            "hub-object-guard.yaml",
            "dna-hub-profiles",
            "a Profile with spec.plugins",
            "/apis/kubeflow.org/v1/profiles",
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "Profile",
                "metadata": {"name": "kubeflow-dna-hub-doctor-probe"},
                "spec": {
                    "owner": {"kind": "User", "name": "dna-hub-doctor@invalid"},
                    "plugins": [{"kind": "AwsIamForServiceAccount", "spec": {}}],
                },
            },
        ),
        GuardProbe(
            "hub-namespace-guard.yaml",
            "dna-hub-writes-only-to-profiles",
            f"a NetworkPolicy in {hub_namespace} (not a profile namespace)",
            f"/apis/networking.k8s.io/v1/namespaces/{hub_namespace}/networkpolicies",
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "dna-hub-doctor-probe", "namespace": hub_namespace},
                "spec": {"podSelector": {}},
            },
        ),
    )


@dataclass(frozen=True)
class GuardVerdict:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


def verdict(probe: GuardProbe, error: BaseException | None) -> GuardVerdict:
    """Pure: what the dry run's answer says about the guard."""
    name = f"admission guard {probe.policy} in force"
    fix = f"kubectl apply -f helm-values/{probe.file} (adjust the names it lists first)"
    if error is None:
        return GuardVerdict(name, False, f"absent: {probe.what} was admitted (dry run)", fix)
    body = getattr(error, "body", None) or ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    status = getattr(error, "status", None)
    if status in (400, 403, 422) and probe.policy in str(body):
        return GuardVerdict(name, True, f"refuses {probe.what}")
    return GuardVerdict(name, False, f"dry run of {probe.what}: {describe(error)}", fix)


def unsupported() -> GuardVerdict:
    return GuardVerdict(
        "admission guards (helm-values/hub-*-guard.yaml)",
        True,
        "warning: this cluster serves no ValidatingAdmissionPolicy (Kubernetes < 1.30), so "
        "nothing constrains the objects the hub may write beyond RBAC (docs/deploy.md, "
        "blast radius)",
        warning=True,
    )


async def _get(api: ApiClient, path: str, seconds: float) -> Any:
    return await api.call_api(
        path,
        "GET",
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


async def check_guards(api: ApiClient, hub_namespace: str, seconds: float) -> list[GuardVerdict]:
    try:
        supported = await guards_supported(api, seconds)
    except (ApiException, OSError, TimeoutError) as e:
        return [GuardVerdict("admission guards", False, describe(e), "check the API server")]
    if not supported:
        return [unsupported()]
    verdicts = []
    for probe in probes(hub_namespace):
        error: BaseException | None = None
        try:
            await api.call_api(
                probe.path,
                "POST",
                query_params=[("dryRun", "All")],
                body=probe.body,
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=seconds,
            )
        except (ApiException, OSError, TimeoutError) as e:
            error = e
        verdicts.append(verdict(probe, error))
    return verdicts
