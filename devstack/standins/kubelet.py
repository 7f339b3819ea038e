"""STAND-IN for kube-scheduler + kubelet on a single node: pods as podman containers
(``runtime="podman"``) or as local processes (``runtime="process"``, the default), or
pods that run nothing (``runtime="none"``, for benchmarks), or pods that run nothing but
whose loopback IP the stand-in itself answers HTTP on like a Jupyter server
(``runtime="serve"``, for full-stack benchmarks); for those two see :mod:`.simulated_pods`.

It exists so that KubeSpawner and dna_hub see pods go through the real lifecycle on a
real API server, and — with podman — so that our real images run under the pod's real
security context, volumes and ServiceAccount tokens.

Common to both runtimes:

* node registration: a ``Node`` (default ``standin-node``) with Ready/pressure conditions,
  addresses, capacity, labels (``dna-hub.test/runtime``: ``podman``/``process``) and the
  configured taints, and a ``kube-node-lease`` Lease renewed every 10 s;
* scheduling is kube-scheduler's: the devstack control plane runs the real one (1.37),
  and the registered Node is schedulable for it once kube-controller-manager's
  node-lifecycle-controller has lifted the ``node.kubernetes.io/not-ready`` taint every
  new Node gets (a few seconds after the stand-in reports Ready and renews its Lease).
  Only with ``bind_pods`` (``--bind-pods``, for a cluster without a scheduler) does the
  stand-in bind pods itself: every pod without ``spec.nodeName`` (default scheduler)
  whose ``nodeSelector`` matches the node's labels and whose tolerations tolerate its
  NoSchedule/NoExecute taints, through ``pods/binding`` with a ``Scheduled`` event from
  ``default-scheduler``; so a process node and a (tainted) container node can share one
  cluster without racing;
* volumes: a PersistentVolume pre-bound to every unbound PersistentVolumeClaim (a
  local-path provisioner's part), since kube-scheduler places no pod with unbound claims;
* ``$(VAR)`` expansion; env from ``env`` (``value``; ``valueFrom`` fieldRef — name,
  namespace, uid, labels/annotations, nodeName, serviceAccountName, hostIP, podIP —,
  secretKeyRef, configMapKeyRef, resourceFieldRef) and ``envFrom`` (with prefix); a
  missing Secret/ConfigMap key gives ``CreateContainerConfigError`` and is retried (every
  0.5 s, the real kubelet backs off longer) until it appears or the pod is deleted;
* status through ``pods/status`` (Running with podIP/hostIP/startTime/containerStatuses/
  conditions; Succeeded/Failed with the exit code; waiting reasons), events ``Pulled``,
  ``Created``, ``Started`` (``Failed`` on errors) as the kubelet records them;
* readiness: Ready once each container's first TCP ``containerPort`` accepts a
  connection on the pod IP (as a tcpSocket probe); declared probes are not run;
* deletion: graceful stop within the pod's grace period, then delete with
  ``gracePeriodSeconds=0`` (UID precondition), which completes a graceful delete.

runtime "podman" (:class:`ContainerPodWorker`):

* one podman pod per pod on the node's bridge network (its own network namespace; the
  sandbox's address is ``podIP``; the gateway is the node's ``InternalIP``/``hostIP``);
  the sandbox runs a tiny "pause" image built from the Debian stand-in;
* every container from its image (never pulled: an absent image is ``ErrImagePull``),
  Kubernetes ``command``/``args`` against the image's ENTRYPOINT/CMD, the image's ENV
  under the pod's env, ``workingDir``; init containers run in order first;
* the security context enforced by the runtime: ``runAsUser``/``runAsGroup``,
  ``fsGroup`` and ``supplementalGroups`` (as extra groups), ``readOnlyRootFilesystem``
  (no tmpfs added), ``capabilities`` drop/add, ``allowPrivilegeEscalation: false`` (no
  new privileges), seccomp RuntimeDefault (podman's default); ``runAsNonRoot`` is
  verified against the image's user with the kubelet's messages and reason
  ``CreateContainerConfigError``; ``privileged`` is refused;
* volumes at ``mountPath`` with ``subPath``/``readOnly``: ``emptyDir``, ``configMap``,
  ``secret``, ``downwardAPI``, ``projected`` (those + ``serviceAccountToken`` issued by
  the TokenRequest API with the requested ``audience``/``expirationSeconds``, bound to
  the pod, rewritten atomically at 80 % of its lifetime or every
  ``token_refresh_seconds``, whichever is sooner), ``persistentVolumeClaim`` (a
  directory per claim UID, kept across pods); fsGroup makes files group-owned and
  writable volumes group-writable (setgid) as the kubelet does;
* the ServiceAccount volume: Kubernetes 1.20's admission adds a secret volume (its token
  Secret, with ``ca.crt`` and ``namespace``), mounted as such; a pod without one and
  without ``automountServiceAccountToken: false`` gets 1.21's ``kube-api-access``
  projected volume (TokenRequest token, ``kube-root-ca.crt``, namespace);
* ``KUBERNETES_SERVICE_HOST``/``PORT`` (and the ``KUBERNETES_PORT*`` links) point at the
  gateway, port 443, where the stand-in forwards TCP to the API server (kube-proxy's
  part); ``kubernetes.default.svc`` resolves to it in the pod's ``/etc/hosts``, so TLS
  verifies against the API server's certificate by that name (not by the bare IP, which
  the test certificate does not carry);
* with ``cluster_networking`` (``--cluster-networking``; :class:`ClusterNetworking`):
  the cluster DNS stand-in on the gateway and each pod's ClusterFirst resolv.conf, the
  service variables of the pod's namespace, and ``KUBERNETES_SERVICE_HOST`` the
  ``kubernetes`` Service's clusterIP, routed to the forwarder by a DNAT rule in the pod's
  network namespace (no ``/etc/hosts`` entry then);
* logs per container in the CRI format (``<log_dir>/<ns>_<pod>_<uid>.log`` for the first
  container, ``<log_dir>/containers/…_<container>.log`` for others).

runtime "process" (:class:`PodWorker`) — kept for the tests whose hub and notebooks must
be host processes on loopback (the hub under test listens on 127.0.0.1, and their
notebook is the development environment's ``jupyterhub-singleuser``, not an image):

* each pod gets a loopback address ``127.0.0.x`` as podIP (hostIP 127.0.0.1); listen
  addresses (``--ip``/``--bind``/``--host``/``--*.ip``, ``0.0.0.0``/``::``, the host of
  ``JUPYTERHUB_SERVICE_URL``) are rewritten to it;
* only the first container runs, as a local process looked up on the test venv's PATH
  (``CreateContainerError`` if missing); no image, no volumes (the host's filesystem),
  no security context, no ServiceAccount token, no user (the test's user; as root
  ``jupyterhub-singleuser`` gets ``--allow-root``); stdout+stderr in
  ``<log_dir>/<namespace>_<pod>_<uid>.log``; ``HOME`` and cwd a fresh per-pod directory;
  processes die with the stand-in (PR_SET_PDEATHSIG).

Not done by either: image pulls, restarts (restartPolicy is ignored), probes as
declared, lifecycle hooks, resource limits/cgroups, DNS for Services (only
``kubernetes.default.svc``, unless cluster networking), Services/kube-proxy beyond the
``kubernetes`` Service (no clusterIP but its routes),
``hostPath``/``csi``/other volume types (``CreateContainerConfigError``), ``exec``/
``attach``/``port-forward``/``kubectl logs`` through the API, node status from real
usage, eviction; a pod ends when its first container exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from devstack.standins import JSON, Backoff, Kube, KubeError, list_watch, now_micro, now_rfc3339
from devstack.standins.containers import (
    SA_MOUNT_PATH,
    ContainerConfigError,
    Podman,
    PodmanError,
    apply_fs_group,
    effective_security,
    entrypoint_args,
    has_mount_at,
    mount_args,
    safe_relative,
    security_args,
    verify_run_as_non_root,
    write_file,
)
from devstack.tcp_pipe import start_tcp_forwarder

if TYPE_CHECKING:
    from devstack.standins.simulated_pods import PodHttpServers

__all__ = ["ContainerConfigError", "Kubelet", "KubeletConfig"]

log = logging.getLogger("standins.kubelet")

DEFAULT_NODE_NAME = "standin-node"
HOST_IP = "127.0.0.1"
ANY_ADDRESSES = {"0.0.0.0", "::", "[::]", "*"}
LISTEN_OPTIONS = re.compile(r"^--(ip|bind|host|address|[A-Za-z]+App\.ip)$")
SHORT_BIND = {"-b"}
#: Bindings in flight at once (kube-scheduler binds asynchronously too).
BIND_CONCURRENCY = 16


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
    #: "process" (pods as host processes), "podman" (pods as containers), "none" (pods
    #: that run nothing) or "serve" (pods that run nothing, the stand-in answering HTTP on
    #: their loopback IPs): see :mod:`devstack.standins.simulated_pods` for the last two.
    runtime: str = "process"
    #: none/serve: the CIDR the pod IPs come from. serve needs one inside 127.0.0.0/8
    #: (``simulated_pods.default_pod_cidr("serve")``: 127.128.0.0/16); this default is
    #: refused there.
    pod_cidr: str = "10.244.0.0/16"
    #: podman: the bridge network pods join; its gateway is the node's address.
    network: str | None = None
    gateway: str | None = None
    #: podman: port of the ``kubernetes`` Service forwarder on the gateway.
    service_port: int = 443
    #: podman: rotate projected tokens at least this often (None: at 80 % of their TTL).
    token_refresh_seconds: float | None = None
    #: Node labels beyond hostname/os/arch; taints (scheduling stays with matching pods).
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[JSON] = field(default_factory=list)
    #: podman: cluster networking stand-ins (see :class:`ClusterNetworking`): the cluster
    #: DNS stand-in on the gateway, pods' ClusterFirst resolv.conf, the service variables
    #: of the pod's namespace, and the ``kubernetes`` Service's clusterIP in each pod.
    cluster_networking: bool = False
    #: Bind unscheduled pods to this node (kube-scheduler's job; only for a cluster
    #: without a scheduler: the devstack control plane runs kube-scheduler).
    bind_pods: bool = False
    #: Pods the node admits (``status.capacity.pods``); kube-scheduler counts them.
    max_pods: int = 250


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

    async def _ended_before_start(self) -> bool:
        """A pod found Succeeded/Failed (kept until deleted) or being deleted (deletion
        completed): True when there is nothing to start."""
        if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            await self._wait_for_deletion()
            await self._finish_deletion()
            return True
        if self.deleting():
            await self._finish_deletion()
            return True
        return False

    async def _run(self) -> None:
        if await self._ended_before_start():
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
            if not await self._exited_before_deletion(exited, self._kill):
                return None
            return exited.result()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _exited_before_deletion(
        self, exited: asyncio.Task[Any], stop: Callable[..., Awaitable[None]]
    ) -> bool:
        """Wait until ``exited`` is done (True) or the pod is being deleted: then ``stop``
        (``grace=`` its grace period) and False."""
        while True:
            if self.deleting():
                await stop(grace=self._grace_period())
                return False
            self.changed.clear()
            changed = asyncio.create_task(self.changed.wait())
            done, _ = await asyncio.wait({exited, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if exited in done:
                return True

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
        image = (self.pod.get("spec", {}).get("containers") or [{}])[0].get("image", "")
        await self._event(
            "Pulled",
            f'Container image "{image}" already present on machine '
            "(stand-in: runs a host process, no image)",
        )
        await self._event("Created", f"Created container {self._first_container_name()}")
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
        await self._event("Started", f"Started container {self._first_container_name()}")
        await self._report_running(ready=spec.port is None)

    def _first_container_name(self) -> str:
        return str((self.pod.get("spec", {}).get("containers") or [{}])[0].get("name", ""))

    async def _event(self, reason: str, message: str) -> None:
        await emit_event(
            self.kube, self.pod, reason, message, component="kubelet",
            host=self.kubelet.config.node_name,
            field_path=f"spec.containers{{{self._first_container_name()}}}",
        )  # fmt: skip

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
        base = {"hostIP": self.kubelet.host_ip, "startTime": self.started_at}
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


# --------------------------------------------------------------------------- events


async def emit_event(
    kube: Kube,
    pod: JSON,
    reason: str,
    message: str,
    *,
    component: str,
    host: str,
    field_path: str | None = None,
    kind: str = "Normal",
) -> None:
    """A core/v1 Event about ``pod``, as the kubelet's/scheduler's event recorder writes it."""
    meta = pod["metadata"]
    now = now_rfc3339()
    involved: JSON = {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        involved["fieldPath"] = field_path
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{random.getrandbits(64):016x}",
            "namespace": meta["namespace"],
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component, "host": host},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host,
    }
    try:
        await kube.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)
    except (KubeError, OSError, TimeoutError) as exc:  # events are best effort, as upstream
        log.warning(
            "event %s for %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], exc
        )


class ContainerPodWorker(PodWorker):
    """One pod as a podman pod (its own network namespace) with one container per container.

    Init containers run one after another to completion first; then every container starts.
    The pod is Running once all containers run, Ready once each container with a TCP
    ``containerPort`` accepts connections on the pod IP; it ends when the *first* container
    exits (its exit code decides Succeeded/Failed).
    """

    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        super().__init__(kubelet, pod)
        self.podman = kubelet.podman
        assert self.podman is not None
        self.pod_name = f"k8s_{self.namespace}_{self.name}_{self.uid[:8]}"[:120]
        self.root = kubelet.config.work_dir / self.uid
        self.container_ids: dict[str, str] = {}
        self.refreshers: list[asyncio.Task[None]] = []
        self.first_container_id = ""
        self.service_env: dict[str, str] = {}

    # ---- flow

    async def _run(self) -> None:
        phase = (self.pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or self.deleting():
            if not self.deleting():
                await self._wait_for_deletion()
            await self._remove_pod()
            await self._finish_deletion()
            return
        try:
            # Like the kubelet's pod sync: a CreateContainerConfigError (e.g. a Secret created
            # just after its pod, or a refused security context) is retried with backoff
            # until it is resolved or the pod is deleted.
            pause, reported = self.kubelet.config.config_retry_seconds, None
            while True:
                try:
                    volumes = await self._prepare_volumes()
                    await self._create_pod()
                    for container in self.pod["spec"].get("initContainers") or []:
                        code = await self._run_init(container, volumes)
                        if code != 0:
                            await self._report_terminated(code)
                            await self._wait_for_deletion()
                            return
                    containers = self.pod["spec"].get("containers") or []
                    if not containers:
                        raise ContainerConfigError(
                            "CreateContainerConfigError", "pod has no containers"
                        )
                    for container in containers:
                        await self._create_container(container, volumes)
                    break
                except ContainerConfigError as exc:
                    if (exc.reason, str(exc)) != reported:
                        reported = (exc.reason, str(exc))
                        await self._report_waiting(exc.reason, str(exc))
                        await emit_event(
                            self.kube, self.pod, "Failed", f"Error: {exc}", component="kubelet",
                            host=self.kubelet.config.node_name, kind="Warning",
                        )  # fmt: skip
                    await self._remove_pod()
                    self.container_ids.clear()
                    self.changed.clear()
                    if self.deleting():
                        return  # the finally below completes the deletion
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), pause)
                    pause = min(pause * 2, 10.0)
                    if self.deleting():
                        return
            for container in containers:
                await self._start_container(container)
            self.started_at = now_rfc3339()
            ports = [p for c in containers if (p := first_tcp_port(c)) is not None]
            await self._report_running(ready=not ports)
            exit_code = await self._supervise_containers(ports)
            if exit_code is not None:
                await self._report_terminated(exit_code)
                await self._wait_for_deletion()
        finally:
            for task in self.refreshers:
                task.cancel()
            await self._remove_pod(grace=self._grace_period() if self.deleting() else 0)
            if not self.gone and self.deleting():
                await self._finish_deletion()

    async def _kill(self, grace: float) -> None:
        await self._remove_pod(grace=grace)

    # ---- pod sandbox

    async def _create_pod(self) -> None:
        config = self.kubelet.config
        await self.podman("pod", "rm", "--force", "--ignore", self.pod_name)
        args = [
            "pod", "create", "--name", self.pod_name, "--hostname", self.name[:63],
            "--network", config.network or "bridge",
            "--label", f"dna-hub.test/kubelet={config.node_name}",
            "--label", f"dna-hub.test/network={config.network}",
            "--label", f"io.kubernetes.pod.uid={self.uid}",
            "--label", f"io.kubernetes.pod.namespace={self.namespace}",
            "--label", f"io.kubernetes.pod.name={self.name}",
            "--infra-image", self.kubelet.infra_image,
            "--infra-command", "/pause",
        ]  # fmt: skip
        if config.gateway and self.kubelet.networking is None:
            # (with cluster networking the DNS stand-in answers with the clusterIP instead)
            args += ["--add-host", f"kubernetes.default.svc:{config.gateway}"]
            args += ["--add-host", f"kubernetes.default:{config.gateway}"]
        networking = self.kubelet.networking
        if networking is not None and (self.pod["spec"].get("dnsPolicy") or "ClusterFirst") in (
            "ClusterFirst",
            "ClusterFirstWithHostNet",
        ):
            args += networking.dns_args(self.namespace)
        await self.podman(*args)
        await self.podman("pod", "start", self.pod_name, timeout=120)
        infra = (await self.podman("pod", "inspect", "--format", "{{.InfraContainerID}}",
                                   self.pod_name)).strip()  # fmt: skip
        out = await self.podman("container", "inspect", infra)
        networks = json.loads(out)[0]["NetworkSettings"].get("Networks") or {}
        ips = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
        if not ips:
            raise ContainerConfigError("CreateContainerConfigError", "pod sandbox has no IP")
        self.ip = ips[0]
        if networking is not None:
            pid = int(json.loads(out)[0]["State"]["Pid"])
            await networking.route_kubernetes_service(pid)
            self.service_env = await networking.service_environment(self.namespace)

    async def _remove_pod(self, grace: float = 0) -> None:
        with contextlib.suppress(PodmanError, OSError, TimeoutError):
            await self.podman(
                "pod", "stop", "--ignore", "--time", str(int(max(grace, 0))), self.pod_name,
                timeout=max(grace, 0) + 60,
            )  # fmt: skip
        with contextlib.suppress(PodmanError, OSError, TimeoutError):
            await self.podman("pod", "rm", "--force", "--ignore", self.pod_name, timeout=60)

    # ---- containers

    def container_log(self, name: str, index: int) -> Path:
        if index == 0:
            return self.log_file
        return (
            self.kubelet.config.log_dir
            / "containers"
            / f"{self.namespace}_{self.name}_{self.uid}_{name}.log"
        )

    def _base_env(self) -> dict[str, str]:
        # The image's ENV comes from the runtime; the kubelet adds the service variables.
        config = self.kubelet.config
        if self.kubelet.networking is not None:
            return dict(self.service_env)
        host, port = config.gateway or HOST_IP, str(config.service_port)
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": port,
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    async def _container_args(
        self, container: JSON, volumes: dict[str, tuple[Path, bool]], index: int, init: bool
    ) -> list[str]:
        image = container.get("image") or ""
        field = f"spec.{'initContainers' if init else 'containers'}{{{container['name']}}}"
        config = await self.podman.image_config(image)
        if config is None:
            await emit_event(
                self.kube, self.pod, "Failed",
                f'Failed to pull image "{image}": the stand-in kubelet cannot pull; '
                "build the image into local podman storage",
                component="kubelet", host=self.kubelet.config.node_name, field_path=field,
                kind="Warning",
            )  # fmt: skip
            raise ContainerConfigError("ErrImagePull", f'image "{image}" not present on the node')
        await emit_event(
            self.kube, self.pod, "Pulled", f'Container image "{image}" already present on machine',
            component="kubelet", host=self.kubelet.config.node_name, field_path=field,
        )  # fmt: skip
        ctx = effective_security(self.pod, container)
        verify_run_as_non_root(ctx, config.get("User") or "", self.name, container["name"])
        env = await self._container_env(container)
        options, args = entrypoint_args(container, env, expand)
        log_path = self.container_log(container["name"], -1 if init else index)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "create", "--pod", self.pod_name,
            "--name", f"{self.pod_name}_{container['name']}"[:250],
            "--pull=never",
            "--label", f"dna-hub.test/kubelet={self.kubelet.config.node_name}",
            "--log-driver=k8s-file", f"--log-opt=path={log_path}",
            *security_args(self.pod, container),
            *mount_args(container.get("volumeMounts") or [], volumes),
            *options,
        ]  # fmt: skip
        if container.get("workingDir"):
            argv.append(f"--workdir={container['workingDir']}")
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, image, *args]

    async def _create_container(
        self, container: JSON, volumes: dict[str, tuple[Path, bool]]
    ) -> None:
        index = (self.pod["spec"].get("containers") or []).index(container)
        argv = await self._container_args(container, volumes, index, init=False)
        try:
            cid = (await self.podman(*argv)).strip()
        except PodmanError as exc:
            raise ContainerConfigError("CreateContainerError", str(exc)) from exc
        self.container_ids[container["name"]] = cid
        if index == 0:
            self.first_container_id = cid
        await emit_event(
            self.kube, self.pod, "Created", f"Created container {container['name']}",
            component="kubelet", host=self.kubelet.config.node_name,
            field_path=f"spec.containers{{{container['name']}}}",
        )  # fmt: skip

    async def _start_container(self, container: JSON) -> None:
        cid = self.container_ids[container["name"]]
        try:
            await self.podman("start", cid)
        except PodmanError as exc:
            raise ContainerConfigError("RunContainerError", str(exc)) from exc
        log.info("pod %s/%s: started container %s on %s", self.namespace, self.name,
                 container["name"], self.ip)  # fmt: skip
        await emit_event(
            self.kube, self.pod, "Started", f"Started container {container['name']}",
            component="kubelet", host=self.kubelet.config.node_name,
            field_path=f"spec.containers{{{container['name']}}}",
        )  # fmt: skip

    async def _run_init(self, container: JSON, volumes: dict[str, tuple[Path, bool]]) -> int:
        argv = await self._container_args(container, volumes, -1, init=True)
        cid = (await self.podman(*argv)).strip()
        await self.podman("start", cid)
        out = await self.podman("wait", cid, timeout=3600)
        return int(out.strip().splitlines()[-1])

    async def _supervise_containers(self, ports: list[int]) -> int | None:
        exited = asyncio.create_task(
            self.podman("wait", self.first_container_id, timeout=24 * 3600)
        )
        probe = asyncio.create_task(self._probe_ports(ports))
        try:
            if not await self._exited_before_deletion(exited, self._remove_pod):
                return None
            try:
                return int(exited.result().strip().splitlines()[-1])
            except (PodmanError, ValueError, IndexError):
                return 137
        finally:
            for task in (probe, exited):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _probe_ports(self, ports: list[int]) -> None:
        if not ports:
            return
        assert self.ip is not None
        pending = set(ports)
        while pending:
            for port in list(pending):
                try:
                    _r, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, port), 1)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    pending.discard(port)
                except (OSError, TimeoutError):
                    pass
            if pending:
                await asyncio.sleep(self.kubelet.config.probe_interval)
        await self._report_running(ready=True)

    def _container_statuses(self, first_state: JSON, first_ready: bool) -> list[JSON]:
        statuses = super()._container_statuses(first_state, first_ready)
        for status in statuses:
            cid = self.container_ids.get(status["name"], "")
            status["containerID"] = f"podman://{cid}" if cid else ""
            status["imageID"] = f"podman://{status['image']}"
        return statuses

    # ---- volumes

    def _fs_group(self) -> int | None:
        value = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        return int(value) if value is not None else None

    async def _prepare_volumes(self) -> dict[str, tuple[Path, bool]]:
        """Each volume as a host directory: (path, mounted read-only whatever the mount says)."""
        spec = self.pod["spec"]
        volumes = list(spec.get("volumes") or [])
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        automount = spec.get("automountServiceAccountToken", True)
        if automount is not False and not any(has_mount_at(c, SA_MOUNT_PATH) for c in containers):
            # What the ServiceAccount admission of Kubernetes >= 1.21 adds (kube-api-access).
            volumes.append(default_sa_volume())
            for container in containers:
                container.setdefault("volumeMounts", []).append(
                    {
                        "name": "kube-api-access-standin",
                        "mountPath": SA_MOUNT_PATH,
                        "readOnly": True,
                    }
                )
        result: dict[str, tuple[Path, bool]] = {}
        for volume in volumes:
            name = volume["name"]
            result[name] = await self._prepare_volume(volume)
        return result

    async def _prepare_volume(self, volume: JSON) -> tuple[Path, bool]:
        name = volume["name"]
        path = self.root / "volumes" / safe_relative(name, "volume name")
        gid = self._fs_group()
        if "emptyDir" in volume:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            return path, False
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            obj = await self.kube.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
            )
            if obj is None:
                raise ContainerConfigError(
                    "CreateContainerConfigError",
                    f'persistentvolumeclaim "{claim}" not found',
                )
            # One directory per claim (by its UID), kept across pods until the test ends.
            path = self.kubelet.config.work_dir / "pvcs" / obj["metadata"]["uid"]
            path.mkdir(parents=True, exist_ok=True)
            apply_fs_group(path, gid, recursive=True)
            return path, bool(volume["persistentVolumeClaim"].get("readOnly"))
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        if "configMap" in volume or "secret" in volume:
            await self._project(path, [volume], gid)
        elif "downwardAPI" in volume:
            await self._project(path, [volume], gid)
        elif "projected" in volume:
            await self._project(path, volume["projected"].get("sources") or [], gid,
                                volume["projected"].get("defaultMode"))  # fmt: skip
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise ContainerConfigError(
                "CreateContainerConfigError",
                f"volume {name!r}: {kinds} not supported by the stand-in",
            )
        path.chmod(0o755)
        return path, True

    async def _project(
        self, root: Path, sources: list[JSON], gid: int | None, default_mode: int | None = None
    ) -> None:
        for source in sources:
            if "configMap" in source or "secret" in source:
                kind = "configmaps" if "configMap" in source else "secrets"
                ref = source.get("configMap") or source.get("secret") or {}
                name = ref.get("name") or ref.get("secretName")
                mode = ref.get("defaultMode", default_mode if default_mode is not None else 0o644)
                data = await self._config_data(kind, {"name": name})
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(
                        "CreateContainerConfigError", f'{kind[:-1]} "{name}" not found'
                    )
                items = ref.get("items") or [{"key": k, "path": k} for k in sorted(data)]
                for item in items:
                    if item["key"] not in data:
                        if ref.get("optional"):
                            continue
                        raise ContainerConfigError(
                            "CreateContainerConfigError",
                            f"couldn't find key {item['key']} in {kind[:-1]} "
                            f"{self.namespace}/{name}",
                        )
                    write_file(root, item["path"], data[item["key"]].encode(),
                               item.get("mode", mode), gid)  # fmt: skip
            elif "downwardAPI" in source:
                ref = source["downwardAPI"]
                mode = ref.get("defaultMode", default_mode if default_mode is not None else 0o644)
                for item in ref.get("items") or []:
                    if "fieldRef" in item:
                        value = _field_ref(self.pod, item["fieldRef"]["fieldPath"], self.ip or "")
                    else:
                        container = (self.pod["spec"].get("containers") or [{}])[0]
                        value = _resource_field(container, item.get("resourceFieldRef") or {})
                    write_file(root, item["path"], value.encode(), item.get("mode", mode), gid)
            elif "serviceAccountToken" in source:
                ref = source["serviceAccountToken"]
                mode = default_mode if default_mode is not None else 0o644
                expiry = await self._write_token(root, ref, mode, gid)
                self.refreshers.append(
                    asyncio.create_task(self._refresh_token(root, ref, mode, gid, expiry))
                )

    async def _write_token(self, root: Path, ref: JSON, mode: int, gid: int | None) -> float:
        """TokenRequest for the pod's ServiceAccount, bound to the pod; returns its lifetime."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": int(ref.get("expirationSeconds", 3600)),
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if ref.get("audience"):
            spec["audiences"] = [ref["audience"]]
        try:
            answer = await self.kube.create(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
        except KubeError as exc:
            raise ContainerConfigError(
                "CreateContainerConfigError", f"TokenRequest for serviceaccount {sa} failed: {exc}"
            ) from exc
        write_file(root, safe_relative(ref.get("path", "token"), "token path"),
                   answer["status"]["token"].encode(), mode, gid)  # fmt: skip
        return float(answer["spec"].get("expirationSeconds") or spec["expirationSeconds"])

    async def _refresh_token(
        self, root: Path, ref: JSON, mode: int, gid: int | None, lifetime: float
    ) -> None:
        """Rotate before expiry, as the kubelet's token manager does (at 80% of the TTL).

        ``KubeletConfig.token_refresh_seconds`` caps the wait (tests: see a rotation
        without waiting 8 minutes for the shortest TTL the API server grants).
        """
        cap = self.kubelet.config.token_refresh_seconds
        while True:
            await asyncio.sleep(min(lifetime * 0.8, cap) if cap else lifetime * 0.8)
            try:
                lifetime = await self._write_token(root, ref, mode, gid)
            except ContainerConfigError as exc:
                log.warning("pod %s/%s: token refresh failed: %s", self.namespace, self.name, exc)
                lifetime = 12.5  # retry soon: 0.8 * 12.5 = 10 s


def default_sa_volume() -> JSON:
    """The kube-api-access volume (token via TokenRequest, ca.crt, namespace)."""
    return {
        "name": "kube-api-access-standin",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


class Kubelet:
    """Node registration + lease, scheduler-style binding, and one worker per pod."""

    def __init__(
        self, kube: Kube, config: KubeletConfig | None = None, podman: Podman | None = None
    ) -> None:
        self.kube = kube
        self.config = config or KubeletConfig()
        self.ips: Any = IpPool(shuffle=True)
        #: serve: the pods' listening sockets.
        self.http: PodHttpServers | None = None
        self.workers: dict[str, PodWorker] = {}
        self._worker_class: type[PodWorker] = PodWorker
        self._binding: set[str] = set()
        self._bind_tasks: set[asyncio.Task[None]] = set()
        self._bind_slots = asyncio.Semaphore(BIND_CONCURRENCY)
        self.podman = podman
        self.infra_image = ""
        if self.config.runtime == "podman":
            if podman is None or not self.config.network or not self.config.gateway:
                raise ValueError("the podman runtime needs a Podman, a network and its gateway")
            self._worker_class = ContainerPodWorker
        elif self.config.runtime == "none":
            from devstack.standins.simulated_pods import PodCidrPool, SimulatedPodWorker

            self.ips = PodCidrPool(self.config.pod_cidr)
            self._worker_class = SimulatedPodWorker
        elif self.config.runtime == "serve":
            from devstack.standins.simulated_pods import (
                PodCidrPool,
                PodHttpServers,
                ServingPodWorker,
                loopback_cidr,
            )

            cidr = loopback_cidr(self.config.pod_cidr)
            self.ips = PodCidrPool(cidr, probe_ports=True, random_start=True)
            self.http = PodHttpServers()
            self._worker_class = ServingPodWorker
        elif self.config.runtime != "process":
            raise ValueError(f"unknown runtime {self.config.runtime!r}")
        self._forwarder: asyncio.Server | None = None
        self.networking: ClusterNetworking | None = None

    async def run(self, ready: asyncio.Event) -> None:
        if self.config.runtime == "podman":
            await self._start_podman()
        await self.register_node()
        node = self.config.node_name
        synced = [asyncio.Event(), asyncio.Event()]
        if not self.config.bind_pods:
            synced[1].set()
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
                if self.config.bind_pods:
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
                claims_synced = asyncio.Event()
                tg.create_task(
                    list_watch(
                        self.kube,
                        "/api/v1/persistentvolumeclaims",
                        self._on_claim,
                        synced=claims_synced,
                        name="volume provisioner",
                    )
                )
                synced.append(claims_synced)
                await asyncio.gather(*(e.wait() for e in synced))
                if not self.config.bind_pods:
                    await self._wait_schedulable()
                ready.set()
        finally:
            await self.shutdown()

    async def _wait_schedulable(self, timeout: float = 60) -> None:
        """Until node-lifecycle-controller has lifted the not-ready taint of a new Node, so
        that "ready" means pods can land here (the Node was registered Ready just before)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            node = await self.kube.get(f"/api/v1/nodes/{self.config.node_name}")
            taints = (node.get("spec") or {}).get("taints") or []
            if not any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints):
                return
            if asyncio.get_running_loop().time() > deadline:
                log.warning("node %s still tainted after %ss: %s", node["metadata"]["name"],
                            timeout, taints)  # fmt: skip
                return
            await asyncio.sleep(0.2)

    async def shutdown(self) -> None:
        """Kill every pod process (grace period 0), close every served pod socket: the node
        is going away."""
        for task in list(self._bind_tasks):
            task.cancel()
        workers = list(self.workers.values())
        for worker in workers:
            if worker.task:
                worker.task.cancel()
        for worker in workers:
            if worker.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task
        if self.http is not None:
            await self.http.close_all()
        if self._forwarder is not None:
            self._forwarder.close()
        if self.networking is not None:
            self.networking.close()
        if self.podman is not None:
            await remove_node_pods(self.podman, self.config.network or "")

    # ---- podman runtime

    async def _start_podman(self) -> None:
        """Infra image, leftovers of an earlier run removed, the ``kubernetes`` Service."""
        assert self.podman is not None and self.config.gateway
        from devstack.images import ensure_infra_image

        self.infra_image = await asyncio.to_thread(ensure_infra_image)
        await remove_node_pods(self.podman, self.config.network or "")
        self._forwarder = await start_forwarder(
            self.config.gateway, self.config.service_port, self._api_address()
        )
        if self.config.cluster_networking:
            self.networking = await ClusterNetworking(
                self.kube, self.config.gateway, self.config.service_port
            ).start()

    def _api_address(self) -> tuple[str, int]:
        parts = urlsplit(self.kube.api.configuration.host)
        return parts.hostname or "127.0.0.1", parts.port or 443

    # ---- node

    def node_object(self) -> JSON:
        name = self.config.node_name
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": self.node_labels(),
            },
            "spec": {"taints": self.config.taints} if self.config.taints else {},
        }

    def node_labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "dna-hub.test/standin": "true",
            "dna-hub.test/runtime": self.config.runtime,
            **self.config.labels,
        }

    @property
    def host_ip(self) -> str:
        return self.config.gateway or HOST_IP

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

        capacity = {
            "cpu": "8",
            "memory": "16Gi",
            "pods": str(self.config.max_pods),
            "ephemeral-storage": "100Gi",
        }
        if self.config.runtime in ("none", "serve"):
            # Pods that run nothing use nothing: kube-scheduler must not turn a benchmark's
            # storm away for requests no process will ever use.
            capacity.update(cpu="10k", memory="1Pi", **{"ephemeral-storage": "1Pi"})
        return {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
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
                "containerRuntimeVersion": f"{self.config.runtime}://standin",
                "kubeletVersion": "v1.37.2-standin",
                "kubeProxyVersion": "v1.37.2-standin",
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

    # ---- volumes

    async def _on_claim(self, kind: str, claim: JSON) -> None:
        """A local-path provisioner's part: a PersistentVolume pre-bound to each unbound
        claim, so the PV controller binds it and kube-scheduler (which refuses pods with
        unbound claims) places the pod. The data lives in a directory per claim UID (see
        the podman runtime); the PV is notional and kept (Retain) after the claim goes."""
        spec = claim.get("spec") or {}
        if (
            kind == "DELETED"
            or spec.get("volumeName")
            or claim["metadata"].get("deletionTimestamp")
        ):
            return
        meta = claim["metadata"]
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{meta['uid']}",
                "labels": {"dna-hub.test/standin": "true"},
                "annotations": {"pv.kubernetes.io/provisioned-by": "dna-hub.test/standin-kubelet"},
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "hostPath": {"path": str(self.config.work_dir / "volumes" / meta["uid"])},
            },
        }
        try:
            await self.kube.create("/api/v1/persistentvolumes", volume)
        except KubeError as exc:
            if exc.status != 409:  # 409: made already (another stand-in node, an old event)
                log.warning("provisioning %s/%s failed: %s", meta["namespace"], meta["name"], exc)

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
        if not pod_fits_node(pod, self.node_labels(), self.config.taints):
            return  # another stand-in node's (or nobody's): the scheduler would not pick us
        uid = pod["metadata"]["uid"]
        if uid in self._binding:
            return
        self._binding.add(uid)
        # Like kube-scheduler's binding cycle, the bind (and its event) runs apart from the
        # watch, a few at a time: a storm of pods is not bound one round trip after another.
        task = asyncio.create_task(self._bind_in_slot(pod, uid), name=f"bind {uid}")
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    async def _bind_in_slot(self, pod: JSON, uid: str) -> None:
        try:
            async with self._bind_slots:
                await self._bind(pod)
        except (KubeError, OSError, TimeoutError) as exc:
            meta = pod["metadata"]
            log.warning("binding %s/%s failed: %r", meta["namespace"], meta["name"], exc)
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
            return
        await emit_event(
            self.kube, pod, "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.config.node_name}",
            component="default-scheduler", host="",
        )  # fmt: skip

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
        worker = self._worker_class(self, pod)
        self.workers[uid] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"pod {uid}")

    def pod_log(self, namespace: str, name: str) -> Path | None:
        matches = sorted(self.config.log_dir.glob(f"{namespace}_{name}_*.log"))
        return matches[-1] if matches else None

    def describe(self) -> dict[str, Any]:
        return {
            "node_name": self.config.node_name,
            "log_dir": str(self.config.log_dir),
            "runtime": self.config.runtime,
            "gateway": self.config.gateway,
            "pod_cidr": getattr(self.ips, "cidr", None),
        }


# --------------------------------------------------------------------------- scheduling


def tolerates(tolerations: list[JSON], taint: JSON) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def pod_fits_node(pod: JSON, labels: dict[str, str], taints: list[JSON]) -> bool:
    """The scheduler's NodeSelector and TaintToleration (NoSchedule) predicates."""
    spec = pod.get("spec", {})
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = spec.get("tolerations") or []
    return all(
        tolerates(tolerations, t) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")
    )


# --------------------------------------------------------------------------- podman helpers


async def remove_node_pods(podman: Podman, network: str) -> None:
    """Remove every podman pod the kubelet created in ``network`` (unique to a session)."""
    try:
        out = await podman(
            "pod", "ps", "--quiet", "--filter", f"label=dna-hub.test/network={network}"
        )
    except (PodmanError, OSError) as exc:
        log.warning("listing pods in %s failed: %s", network, exc)
        return
    ids = out.split()
    if ids:
        with contextlib.suppress(PodmanError, OSError, TimeoutError):
            await podman("pod", "rm", "--force", "--time", "0", *ids, timeout=120)


async def start_forwarder(host: str, port: int, target: tuple[str, int]) -> asyncio.Server:
    """The ``kubernetes`` Service as kube-proxy makes it: ``host:port`` -> the API server.

    Bound with IP_FREEBIND: the bridge's gateway address exists only once a pod is up.
    """
    return await start_tcp_forwarder((host, port), target)


class ClusterNetworking:
    """STAND-IN for cluster DNS, the kubelet's service variables and kube-proxy's
    ``kubernetes`` Service, for the podman runtime (``--cluster-networking``).

    * cluster DNS: :class:`devstack.cluster_dns.ClusterDNS` on the bridge's gateway,
      port 53, answering ``<svc>.<ns>.svc.cluster.local`` with the first ready address of
      the Service's Endpoints (filled by kube-controller-manager's endpoints controller from
      the pods' Ready condition), ``kubernetes.default`` with its clusterIP, NXDOMAIN for
      everything else (no upstream: pods resolve no outside names);
    * each ClusterFirst pod gets the kubelet's resolv.conf (``nameserver <gateway>``,
      ``search <ns>.svc.cluster.local svc.cluster.local cluster.local``, ``ndots:5``);
    * the service variables of every Service of the pod's namespace
      (``PROXY_API_SERVICE_HOST``/``_PORT``/``_PORT_<NAME>``, ``…_PORT_8001_TCP…``) with the
      Service's clusterIP as on a cluster (devstack/host_pods.py's
      ``service_environment``), and the ``kubernetes`` Service's (``KUBERNETES_SERVICE_HOST``
      = its clusterIP, port 443);
    * kube-proxy for the ``kubernetes`` Service only: a DNAT rule in the pod's network
      namespace (``iptables -t nat OUTPUT``, set by the kubelet, not the pod) sends its
      clusterIP:443 to the API server forwarder on the gateway, so in-cluster configuration
      (``https://$KUBERNETES_SERVICE_HOST``) verifies the API server's certificate, which
      carries the clusterIP as a real one does.

    Not done: no clusterIP of any other Service routes (no kube-proxy): names resolve to a
    backing pod's address, so a client must use the Service's name and a Service whose
    ``port`` differs from its ``targetPort`` cannot be reached in-cluster at ``port`` (the
    chart's ``proxy-public`` 80 -> 8000: used from outside only, through
    devstack/service_lb.py); no load balancing (first ready address), no headless or
    pod records, no SRV, no TCP DNS; service variables are those of Services existing when
    the pod sandbox is made.
    """

    def __init__(self, kube: Kube, gateway: str, api_port: int) -> None:
        self.kube = kube
        self.gateway = gateway
        self.api_port = api_port
        self.kubernetes_ip = ""
        self.dns: Any = None

    async def start(self) -> ClusterNetworking:
        from devstack.cluster_dns import ClusterDNS

        service = await self.kube.get("/api/v1/namespaces/default/services/kubernetes")
        self.kubernetes_ip = service["spec"]["clusterIP"]
        self.dns = await ClusterDNS(self.gateway, resolve=self.resolve, free_bind=True).start()
        return self

    def close(self) -> None:
        if self.dns is not None:
            self.dns.close()

    async def resolve(self, service: str, namespace: str) -> str | None:
        if (service, namespace) == ("kubernetes", "default"):
            return self.kubernetes_ip
        endpoints = await self.kube.get_or_none(
            f"/api/v1/namespaces/{namespace}/endpoints/{service}"
        )
        for subset in (endpoints or {}).get("subsets") or []:
            for address in subset.get("addresses") or []:
                return address["ip"]
        return None

    def dns_args(self, namespace: str) -> list[str]:
        from devstack.cluster_dns import CLUSTER_DOMAIN

        args = ["--dns", self.gateway, "--dns-option", "ndots:5"]
        for domain in (f"{namespace}.svc", "svc", ""):
            args += ["--dns-search", f"{domain}.{CLUSTER_DOMAIN}".lstrip(".")]
        return args

    async def service_environment(self, namespace: str) -> dict[str, str]:
        from devstack.host_pods import service_environment

        listed = await self.kube.get(f"/api/v1/namespaces/{namespace}/services")
        services = [s for s in listed.get("items") or [] if s["metadata"]["name"] != "kubernetes"]
        env = service_environment(services, {})
        kubernetes = {"metadata": {"name": "kubernetes"}, "spec": {
            "clusterIP": self.kubernetes_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
        }}  # fmt: skip
        env.update(service_environment([kubernetes], {}))
        return env

    async def route_kubernetes_service(self, pid: int) -> None:
        argv = [
            "nsenter", "-t", str(pid), "-n", "iptables", "-t", "nat", "-A", "OUTPUT",
            "-d", f"{self.kubernetes_ip}/32", "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"{self.gateway}:{self.api_port}",
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        if process.returncode != 0:
            raise ContainerConfigError(
                "CreatePodSandboxError",
                f"cannot route the kubernetes Service in the pod: {out.decode(errors='replace')}",
            )
