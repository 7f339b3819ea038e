"""STAND-IN for the kubelet of the chart's hub and proxy pods: host processes, private mounts.

The container kubelet stand-in runs the chart's Deployments as real pods
(devstack/chart_hub.py ``deploy_chart_pods``); this lighter path, which needs no
container engine, runs the container of a rendered workload (the chart's ``hub`` and
``proxy`` Deployments) as a process on this machine, set up from the objects in the API
server the way a kubelet would:

* command/args of the pod template, ``$(VAR)`` references expanded; env from ``value``,
  ``fieldRef`` (metadata.namespace/name, spec.serviceAccountName) and ``secretKeyRef``
  (read from the API server: the chart's Secret ``hub``, the user's ``dna-hub-oidc``);
* every ConfigMap/Secret volume mount (``subPath`` included) written from the API server's
  objects and bind-mounted at its ``mountPath`` in a private mount namespace
  (``unshare -m``): the chart's ``jupyterhub_config.py``, ``z2jh.py``, ``config/`` and
  ``secret/`` appear at ``/usr/local/etc/jupyterhub`` exactly as in the pod;
* the pod's ServiceAccount token: a TokenRequest for it (a bound token, the API server's
  audience), with ``ca.crt`` and ``namespace``, at
  ``/var/run/secrets/kubernetes.io/serviceaccount``, and ``KUBERNETES_SERVICE_HOST/PORT``:
  kubernetes_asyncio's in-cluster configuration, nothing else (no kubeconfig, HOME empty);
* the Kubernetes service environment variables of the namespace's Services
  (``PROXY_API_SERVICE_HOST``/``_PORT``/``_PORT_<NAME>``, ``PROXY_API_PORT=tcp://…``);
* name resolution as in a pod: the kubelet's ``/etc/resolv.conf`` (search path
  ``<ns>.svc.cluster.local svc.cluster.local cluster.local``) pointing at the cluster DNS
  stand-in (devstack/cluster_dns.py), bind-mounted in the mount namespace; without a
  nameserver, an ``/etc/hosts`` with the Service names a pod of that namespace can use.

Different, on purpose (say so in tests that depend on it):

* no Pod object: the Deployment's own pods are left to whatever kubelet stand-in runs;
* no network namespace: each "pod" gets its own loopback address (127.77.x.y), which its
  /etc/hosts calls ``localhost``, and the container's listen addresses are rewritten to it
  (``--ip=``/``--api-ip=`` of configurable-http-proxy, ``JupyterHub.hub_bind_url`` on the
  command line);
  a Service's port is assumed to equal its target port (true for ``hub`` and ``proxy-api``;
  not for ``proxy-public`` 80 → 8000, which the browser bypasses: it uses the proxy pod);
* no image: the command's first word is mapped to a local executable (``jupyterhub`` from the
  hub-image environment, ``configurable-http-proxy`` from the test node modules); the hub's
  PVC (``/srv/jupyterhub``, the working directory) is a directory; processes run as the
  test's user; no probes, no restarts, no resource limits;
* notebooks are run by the process kubelet stand-in, which gives them the host's resolver:
  they cannot resolve Service names at all.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from devstack.cluster_dns import resolv_conf

JSON = dict[str, Any]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_LAUNCHER = r"""
set -e
mount --make-rprivate /
while [ "$1" != "--" ]; do
  [ -d "$1" ] && mkdir -p "$2"
  mount --bind "$1" "$2"
  shift 2
done
shift
cd "$POD_WORKDIR"
exec "$@"
"""


def pod_addresses(names: Sequence[str]) -> dict[str, str]:
    """One loopback address per pod, outside the process kubelet's 127.0.0.x range."""
    block = secrets.randbelow(250) + 2
    return {name: f"127.77.{block}.{i + 1}" for i, name in enumerate(names)}


def service_environment(services: Sequence[JSON], backing: Mapping[str, str]) -> dict[str, str]:
    """The variables a kubelet sets for each Service of the pod's namespace.

    ``backing``: Service name → the address its name resolves to here (a pod's, see module
    docstring); a Service without one gets its clusterIP.
    """
    env: dict[str, str] = {}
    for svc in services:
        name = svc["metadata"]["name"]
        spec = svc.get("spec") or {}
        host = backing.get(name) or spec.get("clusterIP") or ""
        ports = spec.get("ports") or []
        if not host or host == "None" or not ports:
            continue
        prefix = name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = host
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            protocol = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                    port["port"]
                )
            link = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[link] = f"{protocol.lower()}://{host}:{port['port']}"
            env[f"{link}_PROTO"] = protocol.lower()
            env[f"{link}_PORT"] = str(port["port"])
            env[f"{link}_ADDR"] = host
        env[f"{prefix}_PORT"] = (
            f"{ports[0].get('protocol', 'TCP').lower()}://{host}:{ports[0]['port']}"
        )
    return env


def hosts_file(namespace: str, backing: Mapping[str, str], address: str) -> str:
    """The pod's /etc/hosts: ``localhost`` is the pod's own address (its loopback, as in a
    pod's network namespace: the chart's idle culler calls the hub at localhost:8081)."""
    lines = [f"{address} localhost"]
    for name, address in sorted(backing.items()):
        forms = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc"]
        forms.append(f"{name}.{namespace}.svc.cluster.local")
        lines.append(f"{address} {' '.join(forms)}")
    return "\n".join(lines) + "\n"


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion (unknown references stay as written)."""
    return _VAR.sub(lambda m: env.get(m[1], m[0]), value)


async def _secret_value(api: ApiClient, namespace: str, name: str, key: str) -> str:
    secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return base64.b64decode((secret.data or {})[key]).decode()


async def _volume_files(api: ApiClient, namespace: str, volume: JSON) -> dict[str, bytes]:
    core = client.CoreV1Api(api)
    if "configMap" in volume:
        cm = await core.read_namespaced_config_map(volume["configMap"]["name"], namespace)
        return {k: v.encode() for k, v in (cm.data or {}).items()}
    secret = await core.read_namespaced_secret(volume["secret"]["secretName"], namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


@dataclass
class HostPod:
    """One container of a workload, ready to run: argv, env, files, mounts."""

    name: str
    namespace: str
    address: str
    argv: list[str]
    env: dict[str, str]
    root: Path  # staged files: root/<absolute path>
    binds: list[tuple[Path, str]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def workdir(self) -> Path:
        return self.root / "workdir"

    @property
    def log_file(self) -> Path:
        return self.root / "container.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def command(self) -> list[str]:
        binds = [str(x) for src, dst in self.binds for x in (src, dst)]
        return ["unshare", "-m", "--", "sh", "-c", _LAUNCHER, "launcher", *binds, "--", *self.argv]

    def start(self) -> HostPod:
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env={**self.env, "POD_WORKDIR": str(self.workdir)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def run(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(),
            env={**self.env, "POD_WORKDIR": str(self.workdir)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self, grace: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)


async def prepare_host_pod(
    api: ApiClient,
    workload: JSON,
    *,
    address: str,
    backing: Mapping[str, str],
    executables: Mapping[str, Sequence[str]],
    api_server: str,
    ca_file: Path,
    base_env: Mapping[str, str] | None = None,
    root: Path | None = None,
    nameserver: str | None = None,
) -> HostPod:
    """Set up the first container of ``workload`` (a rendered Deployment) to run here.

    ``api`` reads the pod's Secrets/ConfigMaps and requests its ServiceAccount token (as a
    kubelet does with its node credentials). ``backing``: Service name → pod address.
    ``nameserver``: the cluster DNS stand-in (devstack/cluster_dns.py) — the pod gets
    the kubelet's resolv.conf for it; without one, Service names go into /etc/hosts.
    """
    meta = workload["metadata"]
    namespace = meta["namespace"]
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    root = root or Path(tempfile.mkdtemp(prefix=f"dna-hub-pod-{meta['name']}-"))
    (root / "workdir").mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    core = client.CoreV1Api(api)

    # environment: base, service variables, the API server, then the container's own
    server = urlsplit(api_server)
    listed = await core.list_namespaced_service(namespace)
    services = [api.sanitize_for_serialization(s) for s in listed.items]
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "HOSTNAME": f"{meta['name']}-host-pod",
        **(base_env or {}),
        **service_environment(services, backing),
        "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.port or 443),
    }
    sa = spec.get("serviceAccountName") or "default"
    fields = {
        "metadata.namespace": namespace,
        "metadata.name": f"{meta['name']}-host-pod",
        "spec.serviceAccountName": sa,
        "status.podIP": address,
    }
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "fieldRef" in (src := item.get("valueFrom") or {}):
            env[item["name"]] = fields[src["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            env[item["name"]] = await _secret_value(api, namespace, ref["name"], ref["key"])
        else:
            raise NotImplementedError(f"env source {src} of {meta['name']}")

    # files: ConfigMap/Secret mounts, the ServiceAccount token, /etc/hosts
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mount_roots: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "configMap" not in volume and "secret" not in volume:
            continue
        files = await _volume_files(api, namespace, volume)
        path = mount["mountPath"].rstrip("/")
        if mount.get("subPath"):
            targets = {path: files[mount["subPath"]]}
            top = os.path.dirname(path)
        else:
            targets = {f"{path}/{key}": content for key, content in files.items()}
            top = path
        for target, content in targets.items():
            staged = root / "fs" / target.lstrip("/")
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(content)
        mount_roots.append(top)
    token = await core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    sa_dir = root / "fs" / SA_DIR.lstrip("/")
    sa_dir.mkdir(parents=True, exist_ok=True)
    (sa_dir / "token").write_text(token.status.token)
    (sa_dir / "ca.crt").write_bytes(ca_file.read_bytes())
    (sa_dir / "namespace").write_text(namespace)
    mount_roots.append(SA_DIR)
    hosts = root / "hosts"
    hosts.write_text(hosts_file(namespace, {} if nameserver else backing, address))

    binds: list[tuple[Path, str]] = []
    for top in sorted(set(mount_roots)):
        if not any(top != other and top.startswith(other + "/") for other in mount_roots):
            binds.append((root / "fs" / top.lstrip("/"), top))
    binds.append((hosts, "/etc/hosts"))
    if nameserver:
        resolv = root / "resolv.conf"
        resolv.write_text(resolv_conf(namespace, nameserver))
        binds.append((resolv, "/etc/resolv.conf"))

    words = (container.get("command") or []) + (container.get("args") or [])
    argv = [expand(a, env) for a in words]
    local = executables.get(argv[0])
    if local is None:
        raise NotImplementedError(f"no local executable for {argv[0]!r} of {meta['name']}")
    argv = [*local, *(_rewrite_listen(a, address) for a in argv[1:])]
    if words[0] == "jupyterhub":
        port = container["ports"][0]["containerPort"]
        argv.append(f"--JupyterHub.hub_bind_url=http://{address}:{port}")
    return HostPod(meta["name"], namespace, address, argv, env, root, binds)


def _rewrite_listen(arg: str, address: str) -> str:
    for option in ("--ip=", "--api-ip="):
        if arg == option or arg == option + "0.0.0.0":
            return option + address
    return arg
