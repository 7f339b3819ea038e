"""The container runtime of the kubelet stand-in: podman, driven as the CRI would be.

Pure translation of a pod spec into podman arguments (security context, volumes,
command/args against the image's entrypoint) plus a small async wrapper around the
``podman`` CLI. Used by :class:`devstack.standins.kubelet.ContainerPodWorker`; see
that module's docstring for what the stand-in does and does not do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

#: Where the ServiceAccount volume is mounted (the kubelet's and client libraries' path).
SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


class ContainerConfigError(Exception):
    """The container cannot be started (the kubelet's CreateContainerConfigError/...Error)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- podman CLI


class PodmanError(RuntimeError):
    def __init__(self, args: Sequence[str], code: int, stderr: str) -> None:
        super().__init__(f"podman {' '.join(args[:3])} ... exited {code}: {stderr.strip()[-800:]}")
        self.code = code
        self.stderr = stderr


@dataclass
class Podman:
    """Async ``podman`` calls with the test engine's configuration (``CONTAINERS_CONF``)."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = 120.0

    async def __call__(self, *args: str, timeout: float | None = None, check: bool = True) -> str:
        process = await asyncio.create_subprocess_exec(
            "podman",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout or self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await process.wait()
            raise
        if check and process.returncode != 0:
            raise PodmanError(args, process.returncode or 0, err.decode(errors="replace"))
        return out.decode(errors="replace")

    async def image_config(self, image: str) -> JSON | None:
        """The image's config (User, Entrypoint, Cmd, ...), None if it is not present."""
        try:
            out = await self("image", "inspect", image)
        except PodmanError:
            return None
        data = json.loads(out)
        return (data[0].get("Config") or {}) if data else None


# --------------------------------------------------------------------------- security context


def effective_security(pod: JSON, container: JSON) -> JSON:
    """The container's security context with the pod's as defaults (as the kubelet merges)."""
    pod_ctx = pod.get("spec", {}).get("securityContext") or {}
    ctx = dict(container.get("securityContext") or {})
    for key in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"):
        if key not in ctx and key in pod_ctx:
            ctx[key] = pod_ctx[key]
    return ctx


def verify_run_as_non_root(ctx: JSON, image_user: str, pod_name: str, container: str) -> None:
    """The kubelet's check (kuberuntime verifyRunAsNonRoot), with its messages."""
    if not ctx.get("runAsNonRoot"):
        return
    where = f'(pod: "{pod_name}", container: {container})'
    if "runAsUser" in ctx:
        if int(ctx["runAsUser"]) == 0:
            raise ContainerConfigError(
                "CreateContainerConfigError",
                f"container's runAsUser breaks non-root policy {where}",
            )
        return
    user = (image_user or "").split(":", 1)[0]
    if user == "":
        user = "0"  # an image without USER runs as root
    if not user.isdigit():
        raise ContainerConfigError(
            "CreateContainerConfigError",
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {where}",
        )
    if int(user) == 0:
        raise ContainerConfigError(
            "CreateContainerConfigError",
            f"container has runAsNonRoot and image will run as root {where}",
        )


def security_args(pod: JSON, container: JSON) -> list[str]:
    """podman flags enforcing the security context (runAs*, groups, RO root, caps, NNP)."""
    ctx = effective_security(pod, container)
    pod_ctx = pod.get("spec", {}).get("securityContext") or {}
    args: list[str] = []
    user = ctx.get("runAsUser")
    group = ctx.get("runAsGroup")
    if user is not None:
        args.append(f"--user={user}:{group}" if group is not None else f"--user={user}")
    elif group is not None:
        raise ContainerConfigError(
            "CreateContainerConfigError", "runAsGroup without runAsUser is not supported here"
        )
    groups = [*(pod_ctx.get("supplementalGroups") or [])]
    if pod_ctx.get("fsGroup") is not None:
        groups.append(pod_ctx["fsGroup"])
    for gid in dict.fromkeys(groups):
        args.append(f"--group-add={gid}")
    if ctx.get("readOnlyRootFilesystem"):
        # Kubernetes gives no tmpfs on /tmp, /run, /var/tmp: only what is mounted.
        args += ["--read-only", "--read-only-tmpfs=false"]
    caps = ctx.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        args.append(f"--cap-drop={cap}")
    for cap in caps.get("add") or []:
        args.append(f"--cap-add={cap}")
    if ctx.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if ctx.get("privileged"):
        raise ContainerConfigError(
            "CreateContainerConfigError", "privileged containers are refused by the stand-in"
        )
    seccomp = (ctx.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        args.append("--security-opt=seccomp=unconfined")
    return args


def entrypoint_args(
    container: JSON, env: dict[str, str], expand: Any
) -> tuple[list[str], list[str]]:
    """(podman options, trailing args): Kubernetes command/args against ENTRYPOINT/CMD."""
    command = [expand(a, env) for a in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    options: list[str] = []
    if command:
        options.append(f"--entrypoint={json.dumps(command)}")
        # command without args: the image's CMD is ignored (an empty trailing list does it).
    return options, args


# --------------------------------------------------------------------------- volumes


_SAFE_PATH = re.compile(r"^(?!/)(?!.*(^|/)\.\.(/|$)).+$")


def safe_relative(path: str, what: str) -> str:
    if not _SAFE_PATH.match(path):
        raise ContainerConfigError("CreateContainerConfigError", f"invalid {what} {path!r}")
    return path


def write_file(root: Path, rel: str, data: bytes, mode: int, gid: int | None) -> None:
    target = root / safe_relative(rel, "volume item path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    if gid is not None:
        os.chown(tmp, 0, gid)
        mode |= 0o040  # the kubelet makes volume files group-readable for fsGroup
    tmp.chmod(mode)
    tmp.replace(target)  # atomic: a refreshed token never appears half-written


def apply_fs_group(path: Path, gid: int | None, *, recursive: bool) -> None:
    """What the kubelet does for fsGroup on writable volumes: group gid, g+rwX, setgid dirs."""
    if gid is None:
        return
    paths = [path, *path.rglob("*")] if recursive else [path]
    for item in paths:
        if item.is_symlink():
            continue
        os.chown(item, -1, gid)
        mode = item.stat().st_mode & 0o7777
        if item.is_dir():
            item.chmod(mode | 0o2070)
        else:
            item.chmod(mode | 0o060)


def mount_args(mounts: Sequence[JSON], volumes: dict[str, tuple[Path, bool]]) -> list[str]:
    """``--volume`` flags: volumeMounts at mountPath with subPath/readOnly.

    ``volumes`` maps a volume name to (host directory, always read-only).
    """
    args: list[str] = []
    for mount in mounts:
        name = mount.get("name", "")
        if name not in volumes:
            raise ContainerConfigError(
                "CreateContainerConfigError", f"volumeMount {name!r} names no volume of the pod"
            )
        host, forced_ro = volumes[name]
        if mount.get("subPath"):
            host = host / safe_relative(mount["subPath"], "subPath")
            if not host.exists():
                host.mkdir(parents=True)
        target = mount.get("mountPath", "")
        if not target.startswith("/") or ":" in target or "," in target:
            raise ContainerConfigError(
                "CreateContainerConfigError", f"invalid mountPath {target!r}"
            )
        options = "ro" if (forced_ro or mount.get("readOnly")) else "rw"
        args.append(f"--volume={host}:{target}:{options}")
    return args


def has_mount_at(container: JSON, path: str) -> bool:
    return any(m.get("mountPath") == path for m in container.get("volumeMounts") or [])
