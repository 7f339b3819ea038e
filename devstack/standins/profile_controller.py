"""STAND-IN for Kubeflow's profile controller (kubeflow/dashboard components/profile-controller).

This is not the real controller: it is a Python re-implementation, written from reading
the real one's reconcile loop (kubeflow/dashboard v2.0.0), for tests that cannot run
Kubeflow's Go controllers. The real one cannot be built here: the Go module proxy refuses
every version of ``github.com/kubeflow/dashboard/components/*`` (see
``devstack/gobuild/NOTES.md``)::

    $ M=github.com/kubeflow/dashboard/components/profile-controller  # tag v2.0.0
    $ go mod download -json $M@v0.0.0-20260602192831-c80e2c3d5451
    "Error": "... reading https://proxy.golang.org/$M/@v/v0.0.0-20260602192831-c80e2c3d5451.info:
      403 Forbidden\n\tserver response: This module version is not available."

(the same 403 for every version, ``@latest``, the other components and the old
``github.com/kubeflow/kubeflow/components/...`` paths).

Mimicked faithfully (per Profile ``kubeflow.org/v1``, cluster-scoped):

* namespace ``<profile name>`` created with annotation ``owner=<spec.owner.name>``, label
  ``istio-injection=enabled`` plus the labels of a namespace-labels file in upstream's
  format (``-namespace-labels-path``; here ``--namespace-labels-path``, default
  :data:`NAMESPACE_LABELS_FILE`, the devstack's: upstream's ``kubeflow-pss`` overlay with
  ``pod-security.kubernetes.io/enforce: restricted`` instead of ``baseline``, because
  dna_hub requires restricted), and a controller ownerReference to the Profile. As
  upstream: an existing label is never overwritten, ``key: ""`` removes a label;
* an existing namespace whose ``owner`` annotation is not the Profile's owner is refused:
  a ``{"type": "Failed", "message": "namespace already exist, but not owned by profile
  creator <owner>"}`` condition is appended to ``status.conditions`` and nothing is
  created or adopted; an owned one only gets missing labels added;
* Istio AuthorizationPolicy ``ns-owner-access-istio`` (annotations ``user``/``role=admin``)
  built like the real one: ALLOW requests whose ``kubeflow-userid`` header (configurable,
  with prefix) equals the owner from the ingress gateway / KFP UI principals, anything
  from the same namespace, ``/healthz``, ``/metrics``, ``/wait-for-drain``, and GET
  ``*/api/kernels`` from the notebook controller; spec is kept in sync;
* ServiceAccounts ``default-editor`` / ``default-viewer`` and RoleBindings of the same names
  to ClusterRoles ``kubeflow-edit`` / ``kubeflow-view``; RoleBinding ``namespaceAdmin``
  (owner -> ``kubeflow-admin``, annotations ``user=<owner>``, ``role=admin``); roleRef and
  subjects are reset when they drift;
* ResourceQuota ``kf-resource-quota`` from ``spec.resourceQuotaSpec`` when it has ``hard``
  entries, deleted when it has none;
* finalizer ``profile-finalizer`` added, and removed when the Profile is being deleted
  (namespace and the rest go through the API server's garbage collector via the
  ownerReferences, as in a real cluster);
* all children carry a controller ownerReference; changes to owned Namespaces,
  ServiceAccounts, RoleBindings and AuthorizationPolicies re-trigger the owner's
  reconcile (controller-runtime ``Owns``), so deleting e.g. ``default-editor`` makes it
  come back; errors requeue with bounded exponential backoff; 409s are retried.

Left out / different (what it does not do):

* plugins (``spec.plugins``: GCP workload identity, AWS IAM) are ignored, and so is
  ``-workload-identity``;
* the refusal condition is written through the ``status`` subresource and only appended
  once per distinct message (the real one calls ``Update`` on the main resource each
  reconcile; with the CRD's status subresource enabled that write does not persist it);
* no metrics or health endpoints, no leader election; the namespace-labels file is read
  once at start, not watched (the real one re-reconciles every Profile when it changes);
* several reconciles run concurrently (``workers``; the real one runs one at a time), so a
  slow Profile in one test does not hold up another test's Profiles.

Test-only knobs (annotations on the Profile, read at every reconcile):

* ``dna-hub.test/controller-delay-seconds: "<float>"`` — wait that long before acting on
  this Profile (overrides the process-wide ``delay_seconds``);
* ``dna-hub.test/controller-step-delay-seconds: "<float>"`` — wait that long between
  creating the namespace and creating the rest (ServiceAccounts, RoleBindings, ...), the
  window in which a client can see the namespace without ``default-editor``;
* ``dna-hub.test/controller-paused: "true"`` — ignore this Profile (a controller outage for
  it); removing the annotation resumes reconciling.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.standins import JSON, Kube, KubeError, WorkQueue, list_watch, owner_reference

log = logging.getLogger("standins.profile_controller")

PROFILES = "/apis/kubeflow.org/v1/profiles"
AUTHZ_GROUP_VERSION = "security.istio.io/v1beta1"
AUTHZ_POLICY_NAME = "ns-owner-access-istio"
QUOTA_NAME = "kf-resource-quota"
FINALIZER = "profile-finalizer"
DEFAULT_EDITOR = "default-editor"
DEFAULT_VIEWER = "default-viewer"

DELAY_ANNOTATION = "dna-hub.test/controller-delay-seconds"
STEP_DELAY_ANNOTATION = "dna-hub.test/controller-step-delay-seconds"
PAUSED_ANNOTATION = "dna-hub.test/controller-paused"

#: The devstack's namespace-labels file (upstream's kubeflow-pss overlay, enforce: restricted).
NAMESPACE_LABELS_FILE = Path(__file__).resolve().with_name("namespace-labels.yaml")


def load_namespace_labels(path: Path) -> dict[str, str]:
    """A namespace-labels file as the real controller reads it: one YAML mapping of label
    to value (``""``: remove that label). Refuses anything else, naming the file."""
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise ValueError(f"{path}: expected a mapping of label names to string values")
    return dict(doc)


#: The labels of :data:`NAMESPACE_LABELS_FILE`.
DEFAULT_NAMESPACE_LABELS: dict[str, str] = load_namespace_labels(NAMESPACE_LABELS_FILE)

#: Owned kinds watched to re-trigger the owning Profile (controller-runtime ``Owns``).
OWNED_COLLECTIONS = (
    "/api/v1/namespaces",
    "/api/v1/serviceaccounts",
    "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    f"/apis/{AUTHZ_GROUP_VERSION}/authorizationpolicies",
)


@dataclass
class ProfileControllerConfig:
    """Settings of the real controller's flags/env, plus the test-only delays."""

    delay_seconds: float = 0.0
    step_delay_seconds: float = 0.0
    workers: int = 4
    userid_header: str = "kubeflow-userid"
    userid_prefix: str = ""
    namespace_labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NAMESPACE_LABELS))
    istio_ingress_gateway_principal: str = (
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    )
    kfp_ui_principal: str = "cluster.local/ns/kubeflow/sa/ml-pipeline-ui"
    notebook_controller_principal: str = (
        "cluster.local/ns/kubeflow/sa/notebook-controller-service-account"
    )


# --------------------------------------------------------------------------- desired state


def set_namespace_labels(labels: dict[str, str], defaults: dict[str, str]) -> dict[str, str]:
    """The real ``setNamespaceLabels``: add missing keys, never overwrite, '' removes."""
    out = dict(labels)
    for key, value in defaults.items():
        if not value:
            out.pop(key, None)
        elif key not in out:
            out[key] = value
    return out


def desired_namespace(profile: JSON, config: ProfileControllerConfig) -> JSON:
    labels = set_namespace_labels({"istio-injection": "enabled"}, config.namespace_labels)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": profile["metadata"]["name"],
            "annotations": {"owner": profile["spec"]["owner"]["name"]},
            "labels": labels,
            "ownerReferences": [owner_reference(profile)],
        },
    }


def authorization_policy_spec(profile: JSON, config: ProfileControllerConfig) -> JSON:
    """The real ``getAuthorizationPolicy`` (recent kubeflow/dashboard version)."""
    owner = profile["spec"]["owner"]["name"]
    return {
        "action": "ALLOW",
        "rules": [
            {
                "when": [
                    {
                        "key": f"request.headers[{config.userid_header}]",
                        "values": [config.userid_prefix + owner],
                    }
                ],
                "from": [
                    {
                        "source": {
                            "principals": [
                                config.istio_ingress_gateway_principal,
                                config.kfp_ui_principal,
                            ]
                        }
                    }
                ],
            },
            {"when": [{"key": "source.namespace", "values": [profile["metadata"]["name"]]}]},
            {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
            {
                "from": [{"source": {"principals": [config.notebook_controller_principal]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}],
            },
        ],
    }


def _meta(profile: JSON, name: str, annotations: dict[str, str] | None = None) -> JSON:
    meta: JSON = {
        "name": name,
        "namespace": profile["metadata"]["name"],
        "ownerReferences": [owner_reference(profile)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def role_binding(profile: JSON, name: str, cluster_role: str, subjects: list[JSON]) -> JSON:
    annotations = None
    if name == "namespaceAdmin":
        annotations = {"user": profile["spec"]["owner"]["name"], "role": "admin"}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(profile, name, annotations),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": subjects,
    }


def _normalize_subjects(subjects: list[JSON]) -> list[JSON]:
    """Subjects as the API server stores them (RBAC v1 defaults apiGroup for User/Group)."""
    out = []
    for subject in subjects or []:
        s = {k: v for k, v in subject.items() if v not in (None, "")}
        if s.get("kind") in ("User", "Group"):
            s.setdefault("apiGroup", "rbac.authorization.k8s.io")
        out.append(s)
    return out


def _delay(profile: JSON, annotation: str, default: float) -> float:
    value = (profile["metadata"].get("annotations") or {}).get(annotation)
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        log.warning("ignoring bad %s=%r on %s", annotation, value, profile["metadata"]["name"])
        return default


# --------------------------------------------------------------------------- controller


class ProfileController:
    """Watches Profiles (and owned children) and reconciles them with a keyed work queue."""

    def __init__(self, kube: Kube, config: ProfileControllerConfig | None = None) -> None:
        self.kube = kube
        self.config = config or ProfileControllerConfig()
        self.queue = WorkQueue()

    async def run(self, ready: asyncio.Event) -> None:
        """Run until cancelled; ``ready`` is set once every watch has listed once."""
        synced = [asyncio.Event() for _ in range(1 + len(OWNED_COLLECTIONS))]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                list_watch(self.kube, PROFILES, self._on_profile, synced=synced[0], name="profiles")
            )
            for event, path in zip(synced[1:], OWNED_COLLECTIONS, strict=True):
                tg.create_task(list_watch(self.kube, path, self._on_owned, synced=event))
            for _ in range(max(1, self.config.workers)):
                tg.create_task(self._worker())
            await asyncio.gather(*(e.wait() for e in synced))
            ready.set()

    async def _on_profile(self, kind: str, obj: JSON) -> None:
        self.queue.add(obj["metadata"]["name"])

    async def _on_owned(self, kind: str, obj: JSON) -> None:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if (
                ref.get("controller")
                and ref.get("kind") == "Profile"
                and ref.get("apiVersion", "").startswith("kubeflow.org/")
            ):
                self.queue.add(ref["name"])

    async def _worker(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                await self.reconcile(name)
                self.queue.forget(name)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                level = logging.INFO if exc.status == 409 else logging.WARNING
                log.log(level, "reconcile %s failed, requeued: %s", name, exc)
                self.queue.add_rate_limited(name)
            except Exception:
                log.exception("reconcile %s failed, requeued", name)
                self.queue.add_rate_limited(name)
            finally:
                self.queue.done(name)

    async def _get_profile(self, name: str) -> JSON | None:
        return await self.kube.get_or_none(f"{PROFILES}/{name}")

    async def reconcile(self, name: str) -> None:
        """One pass of the real ``Reconcile``, in the real order."""
        profile = await self._get_profile(name)
        if profile is None:
            return
        annotations = profile["metadata"].get("annotations") or {}
        if annotations.get(PAUSED_ANNOTATION) == "true":
            log.info("profile %s: paused by annotation", name)
            return
        delay = _delay(profile, DELAY_ANNOTATION, self.config.delay_seconds)
        if delay:
            await asyncio.sleep(delay)
            profile = await self._get_profile(name)
            if profile is None:
                return
        if not await self._ensure_namespace(profile):
            return
        step_delay = _delay(profile, STEP_DELAY_ANNOTATION, self.config.step_delay_seconds)
        if step_delay:
            await asyncio.sleep(step_delay)
        await self._ensure_authorization_policy(profile)
        await self._ensure_service_account(profile, DEFAULT_EDITOR, "kubeflow-edit")
        await self._ensure_service_account(profile, DEFAULT_VIEWER, "kubeflow-view")
        owner_binding = role_binding(
            profile, "namespaceAdmin", "kubeflow-admin", [dict(profile["spec"]["owner"])]
        )
        await self._ensure_role_binding(owner_binding)
        await self._ensure_resource_quota(profile)
        await self._handle_finalizer(profile)

    # ---- namespace

    async def _ensure_namespace(self, profile: JSON) -> bool:
        """Create or label the namespace; False (and a Failed condition) if not ours."""
        desired = desired_namespace(profile, self.config)
        name = desired["metadata"]["name"]
        owner = profile["spec"]["owner"]["name"]
        found = await self.kube.get_or_none(f"/api/v1/namespaces/{name}")
        if found is None:
            log.info("profile %s: creating namespace", name)
            try:
                await self.kube.create("/api/v1/namespaces", desired)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # Someone else created it meanwhile: decide ownership on the next pass.
                self.queue.add(name)
                return False
            return True
        if (found["metadata"].get("annotations") or {}).get("owner") == owner:
            labels = found["metadata"].get("labels") or {}
            wanted = set_namespace_labels(labels, self.config.namespace_labels)
            if wanted != labels:
                found["metadata"]["labels"] = wanted
                await self.kube.replace(f"/api/v1/namespaces/{name}", found)
            return True
        message = f"namespace already exist, but not owned by profile creator {owner}"
        log.info("profile %s: %s", name, message)
        await self._append_failed_condition(profile, message)
        return False

    async def _append_failed_condition(self, profile: JSON, message: str) -> None:
        status = profile.get("status") or {}
        conditions = list(status.get("conditions") or [])
        condition = {"type": "Failed", "message": message}
        if condition in conditions:
            return
        conditions.append(condition)
        body = copy.deepcopy(profile)
        body["status"] = {**status, "conditions": conditions}
        await self.kube.replace(f"{PROFILES}/{profile['metadata']['name']}/status", body)

    # ---- children

    async def _ensure_authorization_policy(self, profile: JSON) -> None:
        ns = profile["metadata"]["name"]
        path = f"/apis/{AUTHZ_GROUP_VERSION}/namespaces/{ns}/authorizationpolicies"
        spec = authorization_policy_spec(profile, self.config)
        found = await self.kube.get_or_none(f"{path}/{AUTHZ_POLICY_NAME}")
        if found is None:
            owner = profile["spec"]["owner"]["name"]
            body = {
                "apiVersion": AUTHZ_GROUP_VERSION,
                "kind": "AuthorizationPolicy",
                "metadata": _meta(profile, AUTHZ_POLICY_NAME, {"user": owner, "role": "admin"}),
                "spec": spec,
            }
            await self._create_tolerating_conflict(path, body)
        elif found.get("spec") != spec:
            found["spec"] = spec
            await self.kube.replace(f"{path}/{AUTHZ_POLICY_NAME}", found)

    async def _ensure_service_account(self, profile: JSON, name: str, cluster_role: str) -> None:
        ns = profile["metadata"]["name"]
        path = f"/api/v1/namespaces/{ns}/serviceaccounts"
        if await self.kube.get_or_none(f"{path}/{name}") is None:
            log.info("profile %s: creating ServiceAccount %s", ns, name)
            body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(profile, name)}
            await self._create_tolerating_conflict(path, body)
        subject = {"kind": "ServiceAccount", "name": name, "namespace": ns}
        await self._ensure_role_binding(role_binding(profile, name, cluster_role, [subject]))

    async def _ensure_role_binding(self, desired: JSON) -> None:
        ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"
        found = await self.kube.get_or_none(f"{path}/{name}")
        if found is None:
            await self._create_tolerating_conflict(path, desired)
            return
        subjects = _normalize_subjects(desired["subjects"])
        if (
            found.get("roleRef") != desired["roleRef"]
            or _normalize_subjects(found.get("subjects") or []) != subjects
        ):
            found["roleRef"] = desired["roleRef"]
            found["subjects"] = desired["subjects"]
            await self.kube.replace(f"{path}/{name}", found)

    async def _ensure_resource_quota(self, profile: JSON) -> None:
        ns = profile["metadata"]["name"]
        path = f"/api/v1/namespaces/{ns}/resourcequotas"
        spec = profile["spec"].get("resourceQuotaSpec") or {}
        found = await self.kube.get_or_none(f"{path}/{QUOTA_NAME}")
        if spec.get("hard"):
            if found is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": _meta(profile, QUOTA_NAME),
                    "spec": spec,
                }
                await self._create_tolerating_conflict(path, body)
            elif found.get("spec") != spec:
                found["spec"] = spec
                await self.kube.replace(f"{path}/{QUOTA_NAME}", found)
        elif found is not None:
            with contextlib.suppress(KubeError):
                await self.kube.delete(f"{path}/{QUOTA_NAME}")

    async def _handle_finalizer(self, profile: JSON) -> None:
        name = profile["metadata"]["name"]
        finalizers: list[str] = list(profile["metadata"].get("finalizers") or [])
        deleting = bool(profile["metadata"].get("deletionTimestamp"))
        if not deleting and FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        elif deleting and FINALIZER in finalizers:
            finalizers.remove(FINALIZER)
        else:
            return
        # Fetched object + resourceVersion: a concurrent change gives 409 and a requeue,
        # exactly like controller-runtime's Update.
        fresh = await self.kube.get(f"{PROFILES}/{name}")
        if fresh["metadata"]["resourceVersion"] != profile["metadata"]["resourceVersion"]:
            self.queue.add(name)
            return
        fresh["metadata"]["finalizers"] = finalizers
        await self.kube.replace(f"{PROFILES}/{name}", fresh)

    async def _create_tolerating_conflict(self, path: str, body: JSON) -> Any:
        """Create; 409 AlreadyExists means a redelivered event raced us, which is fine."""
        try:
            return await self.kube.create(path, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return None
