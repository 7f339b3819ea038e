"""STAND-IN for kube-scheduler + kubelet on a single node, running pods as local processes.

This is not a kubelet: there is no container runtime here and container images cannot be
pulled, so a pod's *first container* is run as a plain local process, its executable
looked up on the PATH of the test's Python environment (the virtualenv's ``bin`` first).
It exists so that KubeSpawner and dna_hub see pods go through the real lifecycle on a
real API server.

Mimicked faithfully:

* node registration: a ``Node`` (default ``standin-node``) with Ready/pressure conditions,
  addresses, capacity, and a ``kube-node-lease`` Lease renewed every 10 s, so
  kube-controller-manager's node lifecycle and pod GC controllers treat it as healthy;
* scheduling: every pod without ``spec.nodeName`` (and the default scheduler) is bound to
  that node through the ``pods/binding`` subresource, as kube-scheduler does — which also
  makes deletion graceful (the API server deletes unbound pods at once);
* running: ``$(VAR)`` references in command/args/env are expanded like the kubelet does;
  env comes from ``env`` (``value``; ``valueFrom`` fieldRef — name, namespace, uid,
  labels/annotations, nodeName, serviceAccountName, hostIP, podIP —, secretKeyRef,
  configMapKeyRef, resourceFieldRef) and ``envFrom`` (ConfigMaps/Secrets, with prefix);
  a missing executable gives a waiting container with reason ``CreateContainerError``;
  a missing Secret/ConfigMap key gives ``CreateContainerConfigError`` and is retried (every
  0.5 s, the real kubelet backs off longer) until it appears or the pod is deleted;
* status through the ``pods/status`` subresource: ``Running`` with ``podIP``/``podIPs``,
  ``hostIP``, ``startTime``, ``containerStatuses`` (state running, ``ready``) and
  conditions Initialized/ContainersReady/Ready/PodScheduled; when the process exits the
  container is ``terminated`` with its exit code and the pod ``Succeeded`` (0) or
  ``Failed``;
* deletion: when a pod gets a ``deletionTimestamp`` the process group gets SIGTERM, then
  SIGKILL after the pod's grace period, and the pod is deleted with
  ``gracePeriodSeconds=0`` (UID precondition), which is what completes a graceful delete.

Different / left out (on purpose, say so in tests that depend on it):

* networking: each pod gets its own loopback address ``127.0.0.x`` (x in 2..254, returned
  to the pool when the pod is gone) as ``podIP``; ``hostIP`` is 127.0.0.1. Without network
  namespaces a process told to listen on all addresses would grab the port on every pod
  IP, so listen addresses are rewritten to the pod IP: the value of ``--ip``/``--bind``/
  ``--host``/``--*.ip`` options, any argument that is exactly ``0.0.0.0``/``::``, and the
  host of ``JUPYTERHUB_SERVICE_URL``;
* readiness: a container is Ready once its first declared TCP ``containerPort`` accepts a
  connection on the pod IP (as if it had a tcpSocket readiness probe), or right away when
  it declares no port; declared probes are not run;
* only the first container runs; further containers and init containers are reported
  running/ready without running anything; there are no restarts (restartPolicy is
  ignored), no volumes (mounts are ignored: the process sees the host's filesystem), no
  resource limits, no image user (processes run as the test's user; when that is root a
  ``jupyterhub-singleuser`` command gets ``--allow-root``), no service links, no
  ServiceAccount token mount and no ``kubectl logs``/``exec``: stdout+stderr go to
  ``<log_dir>/<namespace>_<pod>_<uid>.log``;
* the working directory and ``HOME`` are a fresh per-pod directory (``workingDir`` is
  ignored); the environment starts from PATH, LANG/LC_ALL, TZ of the stand-in process;
* processes are tied to the stand-in process (PR_SET_PDEATHSIG via ``setpriv`` when
  available) and killed when it stops; pods stay as they are in the API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.support.standins import (
    JSON,
    Backoff,
    Kube,
    KubeError,
    list_watch,
    now_micro,
    now_rfc3339,
)

log = logging.getLogger("standins.kubelet")

DEFAULT_NODE_NAME = "standin-node"
HOST_IP = "127.0.0.1"
ANY_ADDRESSES = {"0.0.0.0", "::", "[::]", "*"}
LISTEN_OPTIONS = re.compile(r"^--(ip|bind|host|address|[A-Za-z]+App\.ip)$")
SHORT_BIND = {"-b"}


# --------------------------------------------------------------------------- pure helpers


class IpPool:
    """Loopback addresses handed to pods; an address is reused only after release.

    The order is shuffled per process and, when the pod declares a port, an address whose
    port is already taken (another test session's stand-in kubelet on this machine, a
    leftover process) is skipped, so concurrent sessions do not collide.
    """

    def __init__(self, first: int = 2, last: int = 254, *, shuffle: bool = False) -> None:
        self._free = [f"127.0.0.{x}" for x in range(first, last + 1)]
        if shuffle:
            random.shuffle(self._free)
        self._used: set[str] = set()

    def allocate(self, preferred: str | None = None, port: int | None = None) -> str:
        candidates = ([preferred] if preferred in self._free else []) + self._free
        for ip in candidates:
            if port is None or _bindable(ip, port):
                self._free.remove(ip)
                self._used.add(ip)
                return ip
        raise RuntimeError("no free pod IP left in 127.0.0.2-254")

    def release(self, ip: str | None) -> None:
        if ip and ip in self._used:
            self._used.discard(ip)
            self._free.append(ip)

    def in_use(self) -> set[str]:
        return set(self._used)


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined vars replaced, ``$$`` -> ``$``, rest kept."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(sub, value)


def rewrite_listen_args(argv: list[str], pod_ip: str) -> list[str]:
    """Make a process that would listen on "all addresses" listen on its pod IP only."""
    out: list[str] = []
    rewrite_next = False
    for arg in argv:
        if rewrite_next:
            out.append(pod_ip)
            rewrite_next = False
            continue
        if arg in ANY_ADDRESSES:
            out.append(pod_ip)
            continue
        option, sep, _value = arg.partition("=")
        if LISTEN_OPTIONS.match(option) or option in SHORT_BIND:
            if sep:
                out.append(f"{option}={pod_ip}")
            else:
                out.append(arg)
                rewrite_next = True
            continue
        out.append(arg)
    return out


def rewrite_service_url(url: str, pod_ip: str) -> str:
    """``JUPYTERHUB_SERVICE_URL`` with its host replaced by the pod IP (port kept)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{pod_ip}{port}", parts.path, parts.query, parts.fragment))


def first_tcp_port(container: JSON) -> int | None:
    for port in container.get("ports") or []:
        if port.get("protocol", "TCP") == "TCP" and port.get("containerPort"):
            return int(port["containerPort"])
    return None


def _field_ref(pod: JSON, path: str, pod_ip: str) -> str:
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": HOST_IP,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ValueError(f"unsupported fieldRef {path!r}")


def _resource_field(container: JSON, ref: JSON) -> str:
    section, _, name = ref.get("resource", "").partition(".")
    value = (container.get("resources", {}).get(section) or {}).get(name)
    return str(value) if value is not None else "0"


class ContainerConfigError(Exception):
    """The container cannot be started (the kubelet's CreateContainerConfigError/...Error)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    port: int | None


# --------------------------------------------------------------------------- the kubelet


@dataclass
class KubeletConfig:
    node_name: str = DEFAULT_NODE_NAME
    log_dir: Path = Path("standin-pods/logs")
    work_dir: Path = Path("standin-pods/work")
    lease_seconds: int = 40
    renew_seconds: float = 10.0
    probe_interval: float = 0.2
    #: Pause before retrying a container whose config (Secret, ConfigMap) is missing.
    config_retry_seconds: float = 0.5
    #: Directories put in front of the inherited PATH (the test venv's bin by default).
    path_prefix: list[str] = field(default_factory=lambda: [str(Path(sys.executable).parent)])


class PodWorker:
    """Everything the kubelet does for one pod, in one task (like the kubelet's pod workers)."""

    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        self.kubelet = kubelet
        self.kube = kubelet.kube
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.changed = asyncio.Event()
        self.gone = False  # DELETED event seen
        self.ip: str | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = now_rfc3339()
        self.task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    @property
    def log_file(self) -> Path:
        return self.kubelet.config.log_dir / f"{self.namespace}_{self.name}_{self.uid}.log"

    def update(self, pod: JSON) -> None:
        self.pod = pod
        self.changed.set()

    def deleting(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    # ---- main flow

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._kill(grace=0)
            raise
        except Exception:
            log.exception("pod %s/%s: worker failed", self.namespace, self.name)
        finally:
            self.kubelet.ips.release(self.ip)
            self.kubelet.workers.pop(self.uid, None)

    async def _run(self) -> None:
        phase = (self.pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            await self._wait_for_deletion()
            await self._finish_deletion()
            return
        if self.deleting():
            await self._finish_deletion()
            return
        preferred = (self.pod.get("status") or {}).get("podIP")
        containers = self.pod.get("spec", {}).get("containers") or [{}]
        try:
            self.ip = self.kubelet.ips.allocate(preferred, first_tcp_port(containers[0]))
        except RuntimeError as exc:  # the kubelet's FailedCreatePodSandBox
            await self._report_waiting("ContainerCreating", str(exc))
            await self._wait_for_deletion()
            await self._finish_deletion()
            return
        spec = await self._launch_spec_when_configured()
        if spec is None:
            await self._finish_deletion()
            return
        await self._start(spec)
        exit_code = await self._supervise(spec.port)
        if exit_code is not None:
            await self._report_terminated(exit_code)
            self.kubelet.ips.release(self.ip)
            self.ip = None
            await self._wait_for_deletion()
        await self._finish_deletion()

    async def _launch_spec_when_configured(self) -> LaunchSpec | None:
        """The launch spec, retried like the kubelet's pod sync retries a
        CreateContainerConfigError (e.g. a Secret created just after its pod); None once the
        pod is being deleted."""
        reported = None
        while True:
            try:
                return await self._launch_spec()
            except ContainerConfigError as exc:
                if (exc.reason, str(exc)) != reported:
                    reported = (exc.reason, str(exc))
                    await self._report_waiting(exc.reason, str(exc))
            self.changed.clear()
            if self.deleting():
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.changed.wait(), self.kubelet.config.config_retry_seconds
                )
            if self.deleting():
                return None

    async def _wait_for_deletion(self) -> None:
        while not self.deleting():
            self.changed.clear()
            await self.changed.wait()

    async def _supervise(self, port: int | None) -> int | None:
        """Probe readiness and wait for exit or deletion; the exit code, None if deleted."""
        assert self.process is not None
        exited = asyncio.create_task(self.process.wait())
        probe = asyncio.create_task(self._probe_readiness(port))
        try:
            while True:
                if self.deleting():
                    await self._kill(grace=self._grace_period())
                    return None
                self.changed.clear()
                changed = asyncio.create_task(self.changed.wait())
                done, _ = await asyncio.wait({exited, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if exited in done:
                    return exited.result()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    def _grace_period(self) -> float:
        meta, spec = self.pod["metadata"], self.pod.get("spec", {})
        value = meta.get("deletionGracePeriodSeconds")
        if value is None:
            value = spec.get("terminationGracePeriodSeconds", 30)
        return float(value)

    # ---- process

    async def _launch_spec(self) -> LaunchSpec:
        spec = self.pod.get("spec", {})
        containers = spec.get("containers") or []
        if not containers:
            raise ContainerConfigError("CreateContainerConfigError", "pod has no containers")
        container = containers[0]
        assert self.ip is not None
        env = await self._container_env(container)
        if "JUPYTERHUB_SERVICE_URL" in env:
            env["JUPYTERHUB_SERVICE_URL"] = rewrite_service_url(
                env["JUPYTERHUB_SERVICE_URL"], self.ip
            )
        argv = [expand(a, env) for a in (container.get("command") or [])]
        argv += [expand(a, env) for a in (container.get("args") or [])]
        if not argv:
            raise ContainerConfigError(
                "CreateContainerError",
                f"stand-in kubelet cannot run the image's entrypoint ({container.get('image')}): "
                "the container has no command",
            )
        argv = rewrite_listen_args(argv, self.ip)
        executable = argv[0]
        if "/" not in executable:
            found = shutil.which(executable, path=env["PATH"])
            if found is None:
                raise ContainerConfigError(
                    "CreateContainerError",
                    f'exec: "{executable}": executable file not found in $PATH',
                )
            argv[0] = found
        elif not os.access(executable, os.X_OK):
            raise ContainerConfigError(
                "CreateContainerError", f'exec: "{executable}": no such file or permission denied'
            )
        if (
            os.path.basename(argv[0]) == "jupyterhub-singleuser"
            and os.geteuid() == 0
            and "--allow-root" not in argv
        ):
            argv.append("--allow-root")
        return LaunchSpec(argv, env, first_tcp_port(container))

    def _base_env(self) -> dict[str, str]:
        work = self.kubelet.config.work_dir / f"{self.namespace}_{self.name}_{self.uid}"
        work.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([*self.kubelet.config.path_prefix, os.environ.get("PATH", "")])
        env = {"PATH": path, "HOME": str(work), "HOSTNAME": self.name}
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    async def _container_env(self, container: JSON) -> dict[str, str]:
        env = self._base_env()
        for source in container.get("envFrom") or []:
            env.update(await self._env_from(source))
        for var in container.get("env") or []:
            value = await self._env_value(container, var, env)
            if value is not None:
                env[var["name"]] = value
        return env

    async def _env_from(self, source: JSON) -> dict[str, str]:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, data = (
                source["configMapRef"],
                await self._config_data("configmaps", source["configMapRef"]),
            )
        elif "secretRef" in source:
            ref, data = source["secretRef"], await self._config_data("secrets", source["secretRef"])
        else:
            return {}
        if data is None:
            if ref.get("optional"):
                return {}
            raise ContainerConfigError(
                "CreateContainerConfigError", f"{ref.get('name')!r} not found (envFrom)"
            )
        return {prefix + k: v for k, v in data.items()}

    async def _config_data(self, kind: str, ref: JSON) -> dict[str, str] | None:
        obj = await self.kube.get_or_none(
            f"/api/v1/namespaces/{self.namespace}/{kind}/{ref.get('name')}"
        )
        if obj is None:
            return None
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    async def _env_value(self, container: JSON, var: JSON, env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            try:
                assert self.ip is not None
                return _field_ref(self.pod, source["fieldRef"]["fieldPath"], self.ip)
            except ValueError as exc:
                raise ContainerConfigError("CreateContainerConfigError", str(exc)) from exc
        if "resourceFieldRef" in source:
            return _resource_field(container, source["resourceFieldRef"])
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in source:
                ref = source[key]
                data = await self._config_data(kind, ref)
                if data is None or ref.get("key") not in data:
                    if ref.get("optional"):
                        return None
                    raise ContainerConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref.get('key')} in {kind[:-1]} "
                        f"{self.namespace}/{ref.get('name')}",
                    )
                return data[ref["key"]]
        return None

    async def _start(self, spec: LaunchSpec) -> None:
        self.kubelet.config.log_dir.mkdir(parents=True, exist_ok=True)
        argv = spec.argv
        setpriv = shutil.which("setpriv")
        if setpriv:
            # Die with the stand-in process, whatever kills it (setpriv execs: same PID).
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        with self.log_file.open("ab") as out:
            out.write(f"# stand-in kubelet: {spec.argv!r} on {self.ip}\n".encode())
            out.flush()
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=spec.env,
                cwd=spec.env["HOME"],
                start_new_session=True,
            )
        self.started_at = now_rfc3339()
        log.info(
            "pod %s/%s: started pid %s on %s: %s",
            self.namespace,
            self.name,
            self.process.pid,
            self.ip,
            spec.argv,
        )
        await self._report_running(ready=spec.port is None)

    async def _probe_readiness(self, port: int | None) -> None:
        if port is None:
            return
        assert self.ip is not None
        while True:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ip, port), timeout=1
                )
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                await self._report_running(ready=True)
                return
            except (OSError, TimeoutError):
                await asyncio.sleep(self.kubelet.config.probe_interval)

    async def _kill(self, grace: float) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=max(grace, 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything left in the group

    async def _finish_deletion(self) -> None:
        """Delete with grace 0: the kubelet's confirmation that the pod is gone."""
        if self.gone:
            return
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        backoff = Backoff(0.2, 5)
        for _ in range(10):
            try:
                await self.kube.delete(self.path, body)
                return
            except KubeError as exc:
                if exc.status in (404, 409):
                    return
                log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)
            except (OSError, TimeoutError) as exc:
                log.warning("pod %s/%s: final delete failed: %r", self.namespace, self.name, exc)
            await backoff.wait()

    # ---- status

    def _container_statuses(self, first_state: JSON, first_ready: bool) -> list[JSON]:
        statuses = []
        for i, container in enumerate(self.pod.get("spec", {}).get("containers") or []):
            pid = self.process.pid if self.process else 0
            running = {"running": {"startedAt": self.started_at}}
            statuses.append(
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": f"standin://{container.get('image', '')}",
                    "containerID": f"standin://{self.uid}/{container['name']}/{pid}",
                    "ready": first_ready if i == 0 else True,
                    "started": "running" in first_state if i == 0 else True,
                    "restartCount": 0,
                    "state": first_state if i == 0 else running,
                }
            )
        return statuses

    def _conditions(self, ready: bool, reason: str = "ContainersNotReady") -> list[JSON]:
        now = now_rfc3339()
        ready_cond: JSON = {
            "status": "True" if ready else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        if not ready:
            ready_cond["reason"] = reason
        return [
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {"type": "Ready", **ready_cond},
            {"type": "ContainersReady", **ready_cond},
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
        ]

    async def _patch_status(self, status: JSON) -> None:
        base = {"hostIP": HOST_IP, "startTime": self.started_at}
        if self.ip:
            base.update({"podIP": self.ip, "podIPs": [{"ip": self.ip}]})
        backoff = Backoff(0.1, 5)
        for _ in range(10):
            try:
                self.pod = await self.kube.patch(
                    f"{self.path}/status", {"status": {**base, **status}}
                )
                return
            except KubeError as exc:
                if exc.status == 404:
                    self.gone = True
                    self.changed.set()
                    return
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc)
            except (OSError, TimeoutError) as exc:
                log.warning("pod %s/%s: status update failed: %r", self.namespace, self.name, exc)
            await backoff.wait()

    async def _report_running(self, ready: bool) -> None:
        state = {"running": {"startedAt": self.started_at}}
        await self._patch_status(
            {
                "phase": "Running",
                "conditions": self._conditions(ready),
                "containerStatuses": self._container_statuses(state, ready),
            }
        )

    async def _report_waiting(self, reason: str, message: str) -> None:
        log.warning("pod %s/%s: %s: %s", self.namespace, self.name, reason, message)
        state = {"waiting": {"reason": reason, "message": message}}
        await self._patch_status(
            {
                "phase": "Pending",
                "conditions": self._conditions(False),
                "containerStatuses": self._container_statuses(state, False),
            }
        )

    async def _report_terminated(self, exit_code: int) -> None:
        log.info("pod %s/%s: process exited with %s", self.namespace, self.name, exit_code)
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": self.started_at,
                "finishedAt": now_rfc3339(),
                "containerID": f"standin://{self.uid}",
            }
        }
        await self._patch_status(
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": self._conditions(False, reason="PodCompleted"),
                "containerStatuses": self._container_statuses(state, False),
            }
        )


class Kubelet:
    """Node registration + lease, scheduler-style binding, and one worker per pod."""

    def __init__(self, kube: Kube, config: KubeletConfig | None = None) -> None:
        self.kube = kube
        self.config = config or KubeletConfig()
        self.ips = IpPool(shuffle=True)
        self.workers: dict[str, PodWorker] = {}
        self._binding: set[str] = set()

    async def run(self, ready: asyncio.Event) -> None:
        await self.register_node()
        node = self.config.node_name
        synced = [asyncio.Event(), asyncio.Event()]
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._renew_lease_forever())
                tg.create_task(
                    list_watch(
                        self.kube,
                        "/api/v1/pods",
                        self._on_pod,
                        query=[("fieldSelector", f"spec.nodeName={node}")],
                        synced=synced[0],
                        name="kubelet pods",
                    )
                )
                tg.create_task(
                    list_watch(
                        self.kube,
                        "/api/v1/pods",
                        self._on_unscheduled,
                        query=[("fieldSelector", "spec.nodeName=")],
                        synced=synced[1],
                        name="scheduler pods",
                    )
                )
                await asyncio.gather(*(e.wait() for e in synced))
                ready.set()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Kill every pod process (grace period 0): the node is going away."""
        workers = list(self.workers.values())
        for worker in workers:
            if worker.task:
                worker.task.cancel()
        for worker in workers:
            if worker.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task

    # ---- node

    def node_object(self) -> JSON:
        name = self.config.node_name
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "dna-hub.test/standin": "true",
                },
            },
        }

    def node_status(self) -> JSON:
        now = now_rfc3339()

        def cond(kind: str, status: str, reason: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": "stand-in kubelet",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        capacity = {"cpu": "8", "memory": "16Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        return {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "dna-hub stand-in",
                "containerRuntimeVersion": "standin://0",
                "kubeletVersion": "v1.20.2-standin",
                "kubeProxyVersion": "v1.20.2-standin",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register_node(self) -> None:
        name = self.config.node_name
        try:
            await self.kube.create("/api/v1/nodes", self.node_object())
        except KubeError as exc:
            if exc.status != 409:
                raise
        await self.kube.patch(
            f"/api/v1/nodes/{name}/status", {"status": self.node_status()}, "strategic"
        )
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        name = self.config.node_name
        base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.config.lease_seconds,
            "renewTime": now_micro(),
        }
        try:
            await self.kube.patch(f"{base}/{name}", {"spec": spec})
        except KubeError as exc:
            if exc.status != 404:
                raise
            await self.kube.create(
                base,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": spec,
                },
            )

    async def _renew_lease_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.config.renew_seconds)
            ticks += 1
            try:
                await self._renew_lease()
                if ticks % 6 == 0:  # a status heartbeat now and then, like the kubelet
                    await self.kube.patch(
                        f"/api/v1/nodes/{self.config.node_name}/status",
                        {"status": self.node_status()},
                        "strategic",
                    )
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning("node heartbeat failed: %s", exc)

    # ---- scheduling

    async def _on_unscheduled(self, kind: str, pod: JSON) -> None:
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            return
        spec = pod.get("spec", {})
        if (
            spec.get("nodeName")
            or spec.get("schedulerName", "default-scheduler") != "default-scheduler"
        ):
            return
        uid = pod["metadata"]["uid"]
        if uid in self._binding:
            return
        self._binding.add(uid)
        try:
            await self._bind(pod)
        finally:
            self._binding.discard(uid)

    async def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
        }
        try:
            await self.kube.create(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    # ---- pods on this node

    async def _on_pod(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.gone = True
                worker.update(pod)
            return
        if worker is not None:
            worker.update(pod)
            return
        worker = PodWorker(self, pod)
        self.workers[uid] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"pod {uid}")

    def pod_log(self, namespace: str, name: str) -> Path | None:
        matches = sorted(self.config.log_dir.glob(f"{namespace}_{name}_*.log"))
        return matches[-1] if matches else None

    def describe(self) -> dict[str, Any]:
        return {"node_name": self.config.node_name, "log_dir": str(self.config.log_dir)}
