"""The old platform's provisioning, reproduced: ``params.env`` + ``kubectl apply -k``, twice.

The old hub's pre-spawn hook wrote the user's parameters (user, profile name, owner) to a
``params.env`` next to a kustomization and ran ``kubectl apply -k`` on it in a subprocess.
The kustomization feeds ``params.env`` through a ``configMapGenerator`` (marked
``config.kubernetes.io/local-config`` so the ConfigMap itself is not applied) into
``replacements`` that set the profile name, owner, username and namespace in every object.
The first apply always failed — the namespaced objects went in before Kubeflow's profile
controller had created the namespace — so the hook ran the apply again. Nothing waited for
the namespace or ``default-editor``.

The kustomization holds the *same objects* DnaSpawner applies (Profile, PodDefault,
AuthorizationPolicy, NetworkPolicy, Role, RoleBinding): the base files are the default
profile templates rendered once with placeholder values, and every field holding a
placeholder becomes a replacement target, so the two methods cannot drift apart.

Each apply is one ``kubectl`` process (client-side apply, as the old platform ran it):
discovery (cached on disk under ``KUBECACHEDIR``, as in a long-running hub pod), the
OpenAPI schema, then a GET and a create/patch per object. ``-v=6`` makes kubectl log each
request, so they are counted.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dna_hub.policy.rendering import ProfileContext, render_profile

PLACEHOLDER_PROFILE = "kubeflow-oldplatform-placeholder"
PLACEHOLDER_USER = "oldplatform-user-placeholder"
PLACEHOLDER_OWNER = "oldplatform-owner-placeholder@example.com"
#: params.env key for each placeholder.
PARAMS = {PLACEHOLDER_PROFILE: "profile", PLACEHOLDER_USER: "user", PLACEHOLDER_OWNER: "owner"}
CONFIGMAP = "profile-params"

_REQUEST_LINE = re.compile(r"\] (GET|POST|PUT|PATCH|DELETE) https?://\S+ (\d{3}|\S+)")


def _field_paths(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(kustomize fieldPath, placeholder)`` for every string value that is a placeholder."""
    if isinstance(node, dict):
        for key, value in node.items():
            part = f"[{key}]" if ("." in key or "/" in key) else key
            yield from _field_paths(value, f"{prefix}.{part}" if prefix else part)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _field_paths(value, f"{prefix}.{index}")
    elif isinstance(node, str) and node in PARAMS:
        yield prefix, node


def write_kustomization(root: Path, hub_namespace: str = "jupyterhub") -> Path:
    """Write ``root/base`` (objects + kustomization) and return it.

    Per spawn, :func:`spawn_dir` adds an overlay with the user's ``params.env``.
    """
    rendered = render_profile(
        ProfileContext(
            username=PLACEHOLDER_USER,
            namespace=PLACEHOLDER_PROFILE,
            owner=PLACEHOLDER_OWNER,
            hub_namespace=hub_namespace,
        )
    )
    base = root / "base"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    resources = []
    for index, obj in enumerate(rendered.objects):
        name = f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (base / name).write_text(yaml.safe_dump(obj, sort_keys=False))
        resources.append(name)
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
            },
            sort_keys=False,
        )
    )
    # The overlay: params.env -> ConfigMap (local only) -> replacements into every object.
    targets: dict[str, list[dict[str, Any]]] = {key: [] for key in PARAMS.values()}
    for obj in rendered.objects:
        select: dict[str, Any] = {"kind": obj["kind"], "name": obj["metadata"]["name"]}
        by_param: dict[str, list[str]] = {}
        for path, placeholder in _field_paths(obj):
            by_param.setdefault(PARAMS[placeholder], []).append(path)
        for param, paths in by_param.items():
            # After the Profile's own name is replaced, its selector must not use the name.
            sel = {"kind": obj["kind"]} if obj["kind"] == "Profile" else dict(select)
            targets[param].append({"select": sel, "fieldPaths": paths})
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../base"],
        "configMapGenerator": [
            {
                "name": CONFIGMAP,
                "envs": ["params.env"],
                "options": {
                    "disableNameSuffixHash": True,
                    "annotations": {"config.kubernetes.io/local-config": "true"},
                },
            }
        ],
        # The profile name last: the other replacements select objects by their base names.
        "replacements": [
            {
                "source": {"kind": "ConfigMap", "name": CONFIGMAP, "fieldPath": f"data.{param}"},
                "targets": targets[param],
            }
            for param in ("user", "owner", "profile")
            if targets[param]
        ],
    }
    (root / "overlay-kustomization.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return base


def spawn_dir(root: Path, user: str, profile: str, owner: str) -> Path:
    """The per-spawn overlay: the kustomization plus this user's ``params.env``."""
    directory = root / "spawns" / profile
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "overlay-kustomization.yaml", directory / "kustomization.yaml")
    # kustomize resolves ../base relative to the overlay: link it.
    link = directory.parent / "base"
    if not link.exists():
        link.symlink_to(root / "base")
    (directory / "params.env").write_text(f"user={user}\nprofile={profile}\nowner={owner}\n")
    return directory


@dataclass
class Apply:
    returncode: int
    seconds: float
    requests: int
    error: str = ""


@dataclass
class HookResult:
    """One old-method spawn: the hook's two applies."""

    profile: str
    applies: list[Apply] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The old hub only cared about the last apply's exit status."""
        return bool(self.applies) and self.applies[-1].returncode == 0

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.applies)


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise RuntimeError(
            "kubectl not found: install it (Debian: apt-get install -y kubernetes-client) "
            "or set KUBECTL"
        )
    return found


async def kubectl_version() -> str:
    proc = await asyncio.create_subprocess_exec(
        kubectl(),
        "version",
        "--client",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return " / ".join(line.strip() for line in out.decode().splitlines() if line.strip())


async def _apply(directory: Path, kubeconfig: Path, env: dict[str, str], timeout: float) -> Apply:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        kubectl(),
        "--kubeconfig",
        str(kubeconfig),
        "apply",
        "-k",
        str(directory),
        "-v=6",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        raise
    text = err.decode(errors="replace")
    requests = len(_REQUEST_LINE.findall(text))
    errors = [
        line.strip()
        for line in text.splitlines()
        if line.startswith(("Error", "error:")) or "Error from server" in line
    ]
    return Apply(proc.returncode or 0, time.perf_counter() - started, requests, "; ".join(errors))


async def run_hook(
    root: Path,
    kubeconfig: Path,
    *,
    user: str,
    profile: str,
    owner: str,
    cache_dir: Path,
    timeout: float = 120.0,
) -> HookResult:
    """The old pre-spawn hook: write params.env, ``kubectl apply -k`` twice."""
    started = time.perf_counter()
    directory = spawn_dir(root, user, profile, owner)
    env = {**os.environ, "KUBECACHEDIR": str(cache_dir), "HOME": str(cache_dir.parent)}
    result = HookResult(profile)
    for _ in range(2):
        result.applies.append(await _apply(directory, kubeconfig, env, timeout))
    result.seconds = time.perf_counter() - started
    return result


#: Client-side ``kubectl apply`` reads every object before writing it; DnaSpawner's hub
#: RBAC (helm-values/hub-rbac.yaml) grants no ``get`` on the namespaced kinds, because
#: server-side apply does not need it. The old platform's hub had it; the benchmark grants
#: it to the hub's ServiceAccount (first-spawn section) and to the old platform's hub
#: (``old-platform-hub``, the login storms: harness.OLD_PLATFORM_SERVICE_ACCOUNT) in its own
#: throw-away cluster only.
OLD_METHOD_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "dna-hub-benchmark-old-method"},
        "rules": [
            {"apiGroups": ["kubeflow.org"], "resources": ["poddefaults"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["limitranges"], "verbs": ["get"]},
            {
                "apiGroups": ["security.istio.io"],
                "resources": ["authorizationpolicies"],
                "verbs": ["get"],
            },
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["get"],
            },
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles", "rolebindings"],
                "verbs": ["get"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "dna-hub-benchmark-old-method"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "dna-hub-benchmark-old-method",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"},
            {"kind": "ServiceAccount", "name": "old-platform-hub", "namespace": "jupyterhub"},
        ],
    },
]
