"""STAND-IN for Kubeflow's PodDefault mutating admission webhook
(kubeflow/dashboard components/poddefaults-webhooks, formerly kubeflow/kubeflow
components/admission-webhook).

This is not the real webhook: it is a Python re-implementation, written from reading the
real one, served over real HTTPS (a throw-away CA made with ``cryptography``; the API
server verifies it through ``caBundle``) and registered with a real
``MutatingWebhookConfiguration``, so the API server calls it exactly as it would call the
real one.

Mimicked faithfully:

* registration as in kubeflow/manifests: ``admissionregistration.k8s.io/v1``, rules pods
  CREATE, ``namespaceSelector`` ``app.kubernetes.io/part-of: kubeflow-profile``,
  ``failurePolicy: Fail``, ``sideEffects: None``, path ``/apply-poddefault`` (but
  ``clientConfig.url`` on 127.0.0.1 instead of a Service);
* pods annotated ``poddefault.admission.kubeflow.org/exclude: "true"`` and mirror pods are
  left alone;
* PodDefaults (``kubeflow.org/v1alpha1``) of the pod's namespace are listed (a failure to
  list rejects the pod) and selected by ``spec.selector`` (matchLabels + matchExpressions
  In/NotIn/Exists/DoesNotExist; an empty selector matches every pod);
* safety check first: the same env var (per container), volume, volumeMount (by name and
  by mountPath, per container), toleration (by key), imagePullSecret, initContainer or
  sidecar (by name), annotation or label key defined differently by two PodDefaults or by
  a PodDefault and the pod rejects the pod (``allowed: false``, message ``conflict
  occurred while applying poddefaults: <names> on pod: <pod> err: ...`` naming each
  conflict);
* otherwise merged: volumes, tolerations, imagePullSecrets, annotations, labels,
  ``serviceAccountName`` and ``automountServiceAccountToken`` (last PodDefault wins); per
  container env, volumeMounts, envFrom (appended) and command/args (only when the
  container has none, never on ``istio-proxy``); initContainers and sidecars appended;
  plus the annotation ``poddefault.admission.kubeflow.org/poddefault-<name>:
  <resourceVersion>`` per applied PodDefault; answered as a JSONPatch.

Different / left out:

* "identical" is decided on the JSON the API server sent, after dropping null, empty and
  false values — an approximation of Go's ``reflect.DeepEqual`` on typed structs;
* the JSONPatch replaces each changed top-level field (``/spec/containers``,
  ``/metadata/annotations``, ...) instead of a minimal per-element diff: same result;
* no v1beta1 AdmissionReview, no metrics, no klog output format.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from devstack.standins import JSON, Kube, KubeError

log = logging.getLogger("standins.poddefault_webhook")

ANNOTATION_PREFIX = "poddefault.admission.kubeflow.org"
EXCLUDE_ANNOTATION = f"{ANNOTATION_PREFIX}/exclude"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
ISTIO_PROXY = "istio-proxy"
WEBHOOK_PATH = "/apply-poddefault"
#: Names as kubeflow/manifests renders them (kustomize namePrefix ``admission-webhook-``).
CONFIGURATION_NAME = "admission-webhook-mutating-webhook-configuration"
WEBHOOK_NAME = "admission-webhook-deployment.kubeflow.org"
NAMESPACE_SELECTOR = {"matchLabels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}


# --------------------------------------------------------------------------- selection


class SelectorError(ValueError):
    """A label selector the API machinery would refuse to convert."""


def selector_matches(selector: JSON | None, labels: dict[str, str] | None) -> bool:
    """``metav1.LabelSelectorAsSelector(selector).Matches(labels)``."""
    labels = labels or {}
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            if not values:
                raise SelectorError(f"{key}: values must be non-empty for In")
            if labels.get(key) not in values:
                return False
        elif op == "NotIn":
            if not values:
                raise SelectorError(f"{key}: values must be non-empty for NotIn")
            if key in labels and labels[key] in values:
                return False
        elif op == "Exists":
            if key not in labels:
                return False
        elif op == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise SelectorError(f"{op!r} is not a valid pod selector operator")
    return True


def filter_poddefaults(poddefaults: list[JSON], pod: JSON) -> list[JSON]:
    """The PodDefaults of the pod's namespace whose selector matches the pod's labels."""
    namespace = pod["metadata"].get("namespace")
    matching = []
    for pd in poddefaults:
        try:
            matches = selector_matches(
                pd.get("spec", {}).get("selector"), pod["metadata"].get("labels")
            )
        except SelectorError as exc:
            raise SelectorError(
                f"label selector conversion failed: {pd.get('spec', {}).get('selector')} "
                f"for selector: {exc}"
            ) from exc
        if matches and pd["metadata"].get("namespace") == namespace:
            matching.append(pd)
    return matching


# --------------------------------------------------------------------------- merging


def _zeroless(value: Any) -> Any:
    """Drop null/empty/false members: what Go's typed DeepEqual cannot tell apart."""
    if isinstance(value, dict):
        out = {k: _zeroless(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {}, False)}
    if isinstance(value, list):
        return [_zeroless(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    return _zeroless(a) == _zeroless(b)


def merge_keyed(
    existing: list[JSON] | None,
    poddefaults: list[JSON],
    field_name: str,
    key: str,
    what: str,
    items: Callable[[JSON], list[JSON]] | None = None,
) -> tuple[list[JSON], list[str]]:
    """Append each PodDefault item not present by ``key``; identical is fine, else a conflict."""
    merged = list(existing or [])
    seen = {item.get(key): item for item in merged}
    errors = []
    for pd in poddefaults:
        additions = items(pd) if items else pd.get("spec", {}).get(field_name) or []
        for item in additions:
            found = seen.get(item.get(key))
            if found is None:
                seen[item.get(key)] = item
                merged.append(item)
            elif not same(found, item):
                errors.append(
                    f"merging {what} for {pd['metadata']['name']} has a conflict on "
                    f"{item.get(key)}: {json.dumps(item)} does not match {json.dumps(found)}"
                )
    return merged, errors


def merge_volume_mounts(
    existing: list[JSON] | None, poddefaults: list[JSON]
) -> tuple[list[JSON], list[str]]:
    """Volume mounts conflict by name and, separately, by mountPath."""
    merged, errors = merge_keyed(existing, poddefaults, "volumeMounts", "name", "volume mounts")
    by_path = {m.get("mountPath"): m for m in existing or []}
    for pd in poddefaults:
        for mount in pd.get("spec", {}).get("volumeMounts") or []:
            found = by_path.setdefault(mount.get("mountPath"), mount)
            if found is not mount and not same(found, mount):
                errors.append(
                    f"merging volume mounts for {pd['metadata']['name']} has a conflict on "
                    f"mount path {mount.get('mountPath')}: {json.dumps(mount)} does not match "
                    f"{json.dumps(found)}"
                )
    return merged, errors


def merge_map(
    existing: dict[str, str] | None, poddefaults: list[JSON], field_name: str
) -> tuple[dict[str, str], list[str]]:
    out = dict(existing or {})
    errors = []
    for pd in poddefaults:
        for key, value in (pd.get("spec", {}).get(field_name) or {}).items():
            if key not in out:
                out[key] = value
            elif out[key] != value:
                errors.append(
                    f"merging has conflict on {key}: {value!r} does not match {out[key]!r} in pod"
                )
    return out, errors


def _container_items(field_name: str) -> Callable[[JSON], list[JSON]]:
    return lambda pd: pd.get("spec", {}).get(field_name) or []


def conflicts(pod: JSON, poddefaults: list[JSON]) -> list[str]:
    """The real ``safeToApplyPodDefaultsOnPod``: every conflict, as a message."""
    spec, meta = pod.get("spec", {}), pod.get("metadata", {})
    errors: list[str] = []
    errors += merge_keyed(spec.get("volumes"), poddefaults, "volumes", "name", "volumes")[1]
    errors += merge_keyed(
        spec.get("tolerations"), poddefaults, "tolerations", "key", "tolerations"
    )[1]
    errors += merge_keyed(
        spec.get("imagePullSecrets"), poddefaults, "imagePullSecrets", "name", "imagePullSecret"
    )[1]
    for container in spec.get("containers") or []:
        errors += merge_keyed(container.get("env"), poddefaults, "env", "name", "env")[1]
        errors += merge_volume_mounts(container.get("volumeMounts"), poddefaults)[1]
    errors += merge_map(meta.get("annotations"), poddefaults, "annotations")[1]
    errors += merge_map(meta.get("labels"), poddefaults, "labels")[1]
    errors += merge_keyed(
        spec.get("initContainers"),
        poddefaults,
        "",
        "name",
        "containers",
        _container_items("initContainers"),
    )[1]
    errors += merge_keyed(
        spec.get("containers"), poddefaults, "", "name", "containers", _container_items("sidecars")
    )[1]
    return errors


def _apply_on_container(container: JSON, poddefaults: list[JSON]) -> JSON:
    out = dict(container)
    out["env"] = merge_keyed(container.get("env"), poddefaults, "env", "name", "env")[0]
    out["volumeMounts"] = merge_volume_mounts(container.get("volumeMounts"), poddefaults)[0]
    env_from = list(container.get("envFrom") or [])
    for pd in poddefaults:
        env_from += pd.get("spec", {}).get("envFrom") or []
    out["envFrom"] = env_from
    if container.get("name") != ISTIO_PROXY:
        for pd in poddefaults:
            pd_spec = pd.get("spec", {})
            if out.get("command") is None and pd_spec.get("command") is not None:
                out["command"] = pd_spec["command"]
            if out.get("args") is None and pd_spec.get("args") is not None:
                out["args"] = pd_spec["args"]
    return {k: v for k, v in out.items() if v != [] or k in container}


def apply_poddefaults(pod: JSON, poddefaults: list[JSON]) -> JSON:
    """The real ``applyPodDefaultsOnPod`` on a copy (conflicts must be checked first)."""
    pod = copy.deepcopy(pod)
    spec, meta = pod.setdefault("spec", {}), pod.setdefault("metadata", {})
    for field_name, key, what in (
        ("volumes", "name", "volumes"),
        ("tolerations", "key", "tolerations"),
        ("imagePullSecrets", "name", "imagePullSecret"),
    ):
        merged = merge_keyed(spec.get(field_name), poddefaults, field_name, key, what)[0]
        if merged:
            spec[field_name] = merged
    for pd in poddefaults:
        pd_spec = pd.get("spec", {})
        if pd_spec.get("automountServiceAccountToken") is not None:
            spec["automountServiceAccountToken"] = pd_spec["automountServiceAccountToken"]
        if pd_spec.get("serviceAccountName"):
            spec["serviceAccountName"] = pd_spec["serviceAccountName"]
    labels = merge_map(meta.get("labels"), poddefaults, "labels")[0]
    if labels:
        meta["labels"] = labels
    annotations = merge_map(meta.get("annotations"), poddefaults, "annotations")[0]
    containers = [_apply_on_container(c, poddefaults) for c in spec.get("containers") or []]
    containers = merge_keyed(
        containers, poddefaults, "", "name", "containers", _container_items("sidecars")
    )[0]
    spec["containers"] = containers
    init = merge_keyed(
        spec.get("initContainers"),
        poddefaults,
        "",
        "name",
        "containers",
        _container_items("initContainers"),
    )[0]
    if init:
        spec["initContainers"] = init
    for pd in poddefaults:
        annotations[f"{ANNOTATION_PREFIX}/poddefault-{pd['metadata']['name']}"] = pd[
            "metadata"
        ].get("resourceVersion", "")
    meta["annotations"] = annotations
    return pod


def json_patch(before: JSON, after: JSON) -> list[JSON]:
    """``add`` ops (add replaces an existing member) for every changed 2nd-level field."""
    ops: list[JSON] = []
    for section in ("metadata", "spec"):
        old, new = before.get(section) or {}, after.get(section) or {}
        for key, value in new.items():
            if old.get(key) != value:
                ops.append({"op": "add", "path": f"/{section}/{_escape(key)}", "value": value})
    return ops


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass
class Decision:
    """What the webhook answers for one pod."""

    allowed: bool
    patch: list[JSON] | None = None
    message: str = ""
    applied: tuple[str, ...] = ()


def mutate_pod(pod: JSON, poddefaults: list[JSON]) -> Decision:
    """The real ``mutatePods`` after the PodDefault list: pure, so it is unit-tested."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if annotations.get(EXCLUDE_ANNOTATION) == "true" or MIRROR_POD_ANNOTATION in annotations:
        return Decision(True)
    if not poddefaults:
        return Decision(True)
    try:
        matching = filter_poddefaults(poddefaults, pod)
    except SelectorError as exc:
        return Decision(False, message=f"filtering pod defaults failed: {exc}")
    if not matching:
        return Decision(True)
    names = tuple(pd["metadata"]["name"] for pd in matching)
    errors = conflicts(pod, matching)
    if errors:
        pod_name = pod.get("metadata", {}).get("name") or pod.get("metadata", {}).get(
            "generateName", ""
        )
        message = (
            f"conflict occurred while applying poddefaults: {','.join(names)} on pod: "
            f"{pod_name} err: [{', '.join(errors)}]"
        )
        return Decision(False, message=message, applied=names)
    return Decision(True, patch=json_patch(pod, apply_poddefaults(pod, matching)), applied=names)


def admission_response(uid: str, decision: Decision) -> JSON:
    """An ``admission.k8s.io/v1`` AdmissionReview answer."""
    response: JSON = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    if not decision.allowed:
        response["status"] = {"message": decision.message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


# --------------------------------------------------------------------------- server


class PodDefaultWebhook:
    """The HTTPS server plus its MutatingWebhookConfiguration."""

    def __init__(self, kube: Kube, cert_dir: Path, host: str = "127.0.0.1") -> None:
        self.kube = kube
        self.cert_dir = cert_dir
        self.host = host
        self.port = 0
        self.ca_file: Path | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{WEBHOOK_PATH}"

    def _ssl_context(self) -> ssl.SSLContext:
        from devstack.controlplane import CertificateAuthority

        self.cert_dir.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(self.cert_dir, common_name="dna-hub-standin-webhook-ca")
        cert, key = ca.issue(
            self.cert_dir,
            "webhook",
            common_name="poddefault-webhook-standin",
            dns_names=["localhost"],
            ip_addresses=[self.host],
            server=True,
        )
        self.ca_file = ca.cert_file
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx

    async def start(self) -> None:
        """Serve on a free port, then register (replace) the webhook configuration."""
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self._ssl_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.register()
        log.info("PodDefault webhook serving at %s", self.url)

    def configuration(self) -> JSON:
        assert self.ca_file is not None
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [
                {
                    "name": WEBHOOK_NAME,
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": self.url,
                        "caBundle": base64.b64encode(self.ca_file.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": NAMESPACE_SELECTOR,
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "timeoutSeconds": 10,
                }
            ],
        }

    async def register(self) -> None:
        base = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        body = self.configuration()
        found = await self.kube.get_or_none(f"{base}/{CONFIGURATION_NAME}")
        if found is None:
            await self.kube.create(base, body)
        else:
            body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
            await self.kube.replace(f"{base}/{CONFIGURATION_NAME}", body)

    async def unregister(self) -> None:
        """Remove the configuration: with failurePolicy Fail a dead webhook blocks pods."""
        base = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        with contextlib.suppress(KubeError, OSError, asyncio.TimeoutError):
            await self.kube.delete(f"{base}/{CONFIGURATION_NAME}")

    async def stop(self) -> None:
        await self.unregister()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=400, text="expect application/json")
        try:
            review = await request.json()
            req = review["request"]
        except (ValueError, KeyError) as exc:
            return web.json_response(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": "", "allowed": False, "status": {"message": str(exc)}},
                }
            )
        decision = await self.review(req)
        log.info(
            "pod %s/%s: allowed=%s applied=%s %s",
            req.get("namespace"),
            (req.get("object") or {}).get("metadata", {}).get("name"),
            decision.allowed,
            ",".join(decision.applied),
            decision.message,
        )
        return web.json_response(admission_response(req.get("uid", ""), decision))

    async def review(self, req: JSON) -> Decision:
        resource = req.get("resource") or {}
        if (resource.get("group"), resource.get("version"), resource.get("resource")) != (
            "",
            "v1",
            "pods",
        ):
            return Decision(True)
        pod = copy.deepcopy(req.get("object") or {})
        pod.setdefault("metadata", {})
        if not pod["metadata"].get("namespace"):
            pod["metadata"]["namespace"] = req.get("namespace")
        namespace = pod["metadata"]["namespace"]
        try:
            listing = await self.kube.get(
                f"/apis/kubeflow.org/v1alpha1/namespaces/{namespace}/poddefaults"
            )
        except (TimeoutError, KubeError, OSError) as exc:
            return Decision(False, message=f"error fetching poddefaults: {exc}")
        return mutate_pod(pod, listing.get("items") or [])
