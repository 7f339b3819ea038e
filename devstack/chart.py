"""The Zero to JupyterHub chart as a platform engineer installs it, on the test control plane.

``helm upgrade --install dna-hub jupyterhub/jupyterhub --version 4.4.0 --namespace jupyterhub
-f helm-values/values.yaml -f <site values>``, then ``kubectl apply -f
helm-values/hub-rbac.yaml`` (docs/deploy.md) — done here in steps, with real Helm:

1. :func:`render_chart`: Helm v4's own Go library (PyPI ``helm-python-sdk``, offline) loads
   the released chart from ``../shared/charts/jupyterhub``, merges the values files as
   ``helm -f a -f b`` does, validates them against the chart's schema, and renders an
   install (client dry run): the release manifest comes out in Helm's install order. The
   pre-install hooks (rendered by the same engine) are kept apart, as Helm runs them first.
2. :func:`validate_objects`: every rendered object against the Kubernetes OpenAPI schema of
   the chart's own minimum kube version (``kubernetes-validate --strict``).
3. :func:`apply_chart`: server-side apply of the hooks and then the manifest, in that order,
   to the control plane; kinds the API server does not serve (the test server is 1.20, the
   chart wants >= 1.28: ``policy/v1`` PodDisruptionBudget) are reported by name in
   :attr:`ChartApplied.unserved`, never dropped silently. Then ``hub-rbac.yaml`` unchanged.

Not Helm here: no release record (Secret ``sh.helm.release.v1…``), no waiting for hook Jobs
(no kubelet runs the image-awaiter), no ``lookup`` (secrets are generated on every render,
as ``helm template`` does). The kube version check (``kubeVersion: >=1.28``) is Helm's,
against its default capabilities, since the 1.20 test server would fail it.

``python -m devstack.chart`` renders and validates, and prints the objects by kind.
"""

from __future__ import annotations

import base64
import functools
import json
import posixpath
import re
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack import paths
from devstack.controlplane import (
    REQUEST_TIMEOUT,
    _api_base,
    _get_json,
    apply_object,
    load_manifests,
    resource_for,
)

JSON = dict[str, Any]

RELEASE = "dna-hub"
NAMESPACE = "jupyterhub"
VALUES_FILE = paths.REPO_ROOT / "helm-values" / "values.yaml"
HUB_RBAC_FILE = paths.REPO_ROOT / "helm-values" / "hub-rbac.yaml"
FIELD_MANAGER = "helm"

#: Helm's install order of kinds (helm/helm pkg/release/v1/util/kind_sorter.go, InstallOrder),
#: used to order the hooks of one weight as Helm does. The release manifest itself comes
#: ordered from Helm.
HELM_INSTALL_ORDER = (
    "PriorityClass Namespace NetworkPolicy ResourceQuota LimitRange PodSecurityPolicy "
    "PodDisruptionBudget ServiceAccount Secret SecretList ConfigMap StorageClass "
    "PersistentVolume PersistentVolumeClaim CustomResourceDefinition ClusterRole "
    "ClusterRoleList ClusterRoleBinding ClusterRoleBindingList Role RoleList RoleBinding "
    "RoleBindingList Service DaemonSet Pod ReplicationController ReplicaSet Deployment "
    "HorizontalPodAutoscaler StatefulSet Job CronJob IngressClass Ingress APIService "
    "MutatingWebhookConfiguration ValidatingWebhookConfiguration"
).split()


class ChartError(RuntimeError):
    """The chart cannot be rendered, validated or applied; the message names the object."""


def chart_dir() -> Path:
    return paths.shared_path("charts", "jupyterhub")


@functools.cache
def packaged_chart_dir() -> Path:
    """The chart as its release package has it: with ``values.schema.json``.

    z2jh keeps its schema as ``values.schema.yaml`` and its release tooling writes the JSON
    that Helm reads into the package; the reference copy in ../shared has only the YAML,
    and Helm ignores it (no schema validation at all). So: a private copy with the JSON
    generated from the chart's own YAML schema, nothing else changed.
    """
    source = chart_dir()
    target = Path(tempfile.mkdtemp(prefix="dna-hub-chart-")) / "jupyterhub"
    shutil.copytree(source, target)
    schema = yaml.safe_load((source / "values.schema.yaml").read_text())
    (target / "values.schema.json").write_text(json.dumps(schema, indent=2))
    return target


def merge_values_files(*layers: JSON) -> JSON:
    """``helm -f a -f b``: later files win, maps merge, lists and scalars are replaced."""

    def merge(base: JSON, top: JSON) -> JSON:
        out = dict(base)
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    result: JSON = {}
    for layer in layers:
        result = merge(result, layer)
    return result


def local_overlay(
    *,
    issuer: str,
    callback_url: str,
    client_id: str = "dna-hub",
    hub_image: str = "localhost/dna-hub/hub:dev",
    notebook_image: str = "localhost/dna-hub/notebook:dev",
) -> JSON:
    """The site values a user passes as the second ``-f``, for this machine.

    Only what the REPLACE lines ask for, plus: a loopback issuer (allow_insecure_loopback),
    and no user-scheduler (a kube-scheduler pod, which nothing here runs; with it on, the
    chart gives notebook pods its schedulerName and no stand-in would bind them).
    """
    hub_name, hub_tag = hub_image.rsplit(":", 1)
    nb_name, nb_tag = notebook_image.rsplit(":", 1)
    return {
        "hub": {
            "image": {"name": hub_name, "tag": hub_tag},
            "config": {
                "DnaOIDCAuthenticator": {
                    "issuer": issuer,
                    "client_id": client_id,
                    "oauth_callback_url": callback_url,
                    "allow_insecure_loopback": True,
                }
            },
        },
        "singleuser": {"image": {"name": nb_name, "tag": nb_tag}},
        "scheduling": {"userScheduler": {"enabled": False}},
    }


def _name(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta.get('name')}"


@dataclass
class RenderedChart:
    """One rendered install: the manifest in Helm's order, and the pre-install hooks."""

    values: JSON  # the user values (all -f files merged), before the chart's defaults
    objects: list[JSON]
    hooks: list[JSON]
    kube_version: str  # the chart's minimum, e.g. "1.28.0"
    notes: str = ""

    def all_objects(self) -> list[JSON]:
        return self.hooks + self.objects

    def kinds(self) -> Counter[str]:
        return Counter(f"{o['apiVersion']}/{o['kind']}" for o in self.all_objects())

    def get(self, kind: str, name: str) -> JSON:
        for obj in self.all_objects():
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"the chart rendered no {kind} {name}")

    def files_of(self, kind: str, name: str) -> dict[str, bytes]:
        """The keys of a rendered ConfigMap or Secret as the files a volume shows."""
        obj = self.get(kind, name)
        files = {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
        for key, value in (obj.get("data") or {}).items():
            files[key] = base64.b64decode(value) if kind == "Secret" else value.encode()
        return files

    def mounted_files(self, workload_kind: str, name: str, container: int = 0) -> dict[str, bytes]:
        """Absolute path → content of every ConfigMap/Secret file the container mounts.

        What a kubelet shows the container (subPath mounts included); other volume types
        (PVCs, emptyDirs) are not files of the chart and are left out.
        """
        spec = self.get(workload_kind, name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        files: dict[str, bytes] = {}
        for mount in spec["containers"][container].get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                source = self.files_of("ConfigMap", volume["configMap"]["name"])
            elif "secret" in volume:
                source = self.files_of("Secret", volume["secret"]["secretName"])
            else:
                continue
            if mount.get("subPath"):
                files[mount["mountPath"]] = source[mount["subPath"]]
            else:
                for key, content in source.items():
                    files[posixpath.join(mount["mountPath"], key)] = content
        return files

    def summary(self) -> str:
        lines = [
            f"{len(self.all_objects())} objects in {len(self.kinds())} kinds "
            f"({len(self.hooks)} pre-install hooks)"
        ]
        lines += [f"  {count:3d} {kind}" for kind, count in sorted(self.kinds().items())]
        return "\n".join(lines)


def _min_kube_version(constraint: str) -> str:
    match = re.search(r">=\s*v?(\d+)\.(\d+)", constraint or "")
    if not match:
        raise ChartError(f"cannot read a minimum from the chart's kubeVersion {constraint!r}")
    return f"{match[1]}.{match[2]}.0"


def _hook_key(obj: JSON) -> tuple[int, int, str]:
    annotations = obj["metadata"].get("annotations") or {}
    kind = obj["kind"]
    order = (
        HELM_INSTALL_ORDER.index(kind) if kind in HELM_INSTALL_ORDER else len(HELM_INSTALL_ORDER)
    )
    return int(annotations.get("helm.sh/hook-weight", "0")), order, obj["metadata"]["name"]


def render_chart(
    *overlays: JSON,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    values_file: Path = VALUES_FILE,
) -> RenderedChart:
    """Render the chart with ``values_file`` and ``overlays`` as further ``-f`` files."""
    import helm_python as helm

    chart = helm.Chart.load(packaged_chart_dir())
    values = merge_values_files(yaml.safe_load(values_file.read_text()) or {}, *overlays)
    try:
        chart.validate_schema(values)
    except helm.HelmError as e:
        raise ChartError(f"values do not satisfy the chart's schema: {e}") from e
    # A client-side dry run is Helm's install minus the cluster: its manifest is sorted in
    # install order. No kubeconfig: nothing may be contacted.
    empty_kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
    try:
        with helm.Config(
            namespace=namespace, storage_driver="memory", kubeconfig_content=empty_kubeconfig
        ) as config:
            release_info = config.install(
                chart, release, values, namespace=namespace, dry_run="client"
            )
        templates = chart.render(values, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        raise ChartError(f"helm could not render the chart: {e}") from e
    objects = [o for o in yaml.safe_load_all(release_info["manifest"]) if o]
    hooks = [
        obj
        for path, text in templates.items()
        if path.endswith((".yaml", ".yml"))
        for obj in yaml.safe_load_all(text)
        if obj
        and "pre-install"
        in ((obj.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")
    ]
    hooks.sort(key=_hook_key)
    for obj in hooks + objects:
        meta = obj.setdefault("metadata", {})
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "Namespace"}:
            meta.setdefault("namespace", namespace)
    return RenderedChart(
        values=values,
        objects=objects,
        hooks=hooks,
        kube_version=_min_kube_version(chart.metadata.get("kubeVersion", "")),
        notes=release_info.get("notes", ""),
    )


def validate_objects(rendered: RenderedChart, kube_version: str | None = None) -> None:
    """Every object against Kubernetes' schema (strict: unknown fields are errors)."""
    import kubernetes_validate

    version = kube_version or rendered.kube_version
    errors = []
    for obj in rendered.all_objects():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{_name(obj)}: {e.message} at {'.'.join(map(str, e.path))}")
    if errors:
        raise ChartError(
            f"rendered objects invalid for Kubernetes {version}:\n" + "\n".join(errors)
        )


#: kube-apiserver 1.20's server-side apply cannot type some valid objects (Service ports
#: without ``protocol``: "associative list with keys has an element that omits key field");
#: fixed in later releases. Such objects are created (or merge-patched) instead.
_SSA_TYPING_BUG = "failed to create typed patch object"


async def _create_or_merge(api: ApiClient, obj: JSON) -> None:
    plural, namespaced = await resource_for(api, obj["apiVersion"], obj["kind"])
    base = _api_base(obj["apiVersion"])
    if namespaced:
        base += f"/namespaces/{obj['metadata']['namespace']}"
    common: dict[str, Any] = {
        "response_types_map": {200: "object", 201: "object"},
        "auth_settings": ["BearerToken"],
        "_return_http_data_only": True,
        "_request_timeout": REQUEST_TIMEOUT,
        "body": obj,
    }
    try:
        await api.call_api(
            f"{base}/{plural}",
            "POST",
            query_params=[("fieldManager", FIELD_MANAGER)],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            **common,
        )
    except ApiException as e:
        if e.status != 409:
            raise
        await api.call_api(
            f"{base}/{plural}/{obj['metadata']['name']}",
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER)],
            header_params={
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            },
            **common,
        )


@dataclass
class ChartApplied:
    applied: list[str] = field(default_factory=list)
    #: applied by create/merge-patch because 1.20's server-side apply cannot type them
    not_server_side: list[str] = field(default_factory=list)
    #: objects of kinds the API server does not serve, e.g. "policy/v1 PodDisruptionBudget
    #: jupyterhub/user-scheduler": not applied, and said so.
    unserved: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"applied {len(self.applied)} objects"]
        if self.not_server_side:
            lines.append("created/merge-patched (1.20's server-side apply cannot type them):")
            lines += [f"  {name}" for name in self.not_server_side]
        if self.unserved:
            lines.append("NOT applied, kinds this API server does not serve:")
            lines += [f"  {name}" for name in self.unserved]
        return "\n".join(lines)


async def _served(api: ApiClient, api_version: str, kind: str, cache: dict[str, set[str]]) -> bool:
    if api_version not in cache:
        try:
            doc = await _get_json(api, _api_base(api_version))
            cache[api_version] = {
                r["kind"] for r in doc.get("resources", []) if "/" not in r["name"]
            }
        except ApiException as e:
            if e.status != 404:
                raise
            cache[api_version] = set()
    return kind in cache[api_version]


async def apply_chart(
    api: ApiClient, rendered: RenderedChart, *, bind_hub_rbac: bool = True
) -> ChartApplied:
    """Apply hooks then manifest in order, then ``hub-rbac.yaml`` (docs/deploy.md step 4)."""
    result = ChartApplied()
    cache: dict[str, set[str]] = {}
    for obj in rendered.all_objects():
        label = f"{obj['apiVersion']} {_name(obj)}"
        if not await _served(api, obj["apiVersion"], obj["kind"], cache):
            result.unserved.append(label)
            continue
        try:
            try:
                await apply_object(api, obj, field_manager=FIELD_MANAGER)
            except ApiException as e:
                if e.status != 500 or _SSA_TYPING_BUG not in str(e.body):
                    raise
                await _create_or_merge(api, obj)
                result.not_server_side.append(label)
        except ApiException as e:
            raise ChartError(f"the API server refused {label}: {e.status} {e.body}") from e
        result.applied.append(label)
    if bind_hub_rbac:
        for obj in load_manifests(HUB_RBAC_FILE):
            await apply_object(api, obj, field_manager="kubectl")
            result.applied.append(f"{obj['apiVersion']} {_name(obj)} (helm-values/hub-rbac.yaml)")
    return result


def main(argv: list[str] | None = None) -> int:
    overlays = [yaml.safe_load(Path(p).read_text()) or {} for p in (argv or sys.argv[1:])]
    rendered = render_chart(*overlays)
    validate_objects(rendered)
    print(rendered.summary())
    print(f"all valid for Kubernetes {rendered.kube_version} (strict)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
