"""Kueue on the devstack control plane (issue 28): the real thing, not a stand-in.

The manager is ``sigs.k8s.io/kueue/cmd/kueue`` built from the Go module proxy at the version
``devstack/gobuild/kueue/go.mod`` pins (``devstack/gobuild/build.sh kueue``); its CRDs and
admission webhooks come from the same module (``config/components``), read from the Go
module cache, never copied here. It runs as a process beside the control plane, as the
stand-ins do, with the real kube-scheduler placing what it admits.

How it is wired, and where that differs from Kueue's own deployment (the Helm chart or
``manifests.yaml``):

- **identity**: the admin kubeconfig (cluster-admin), not Kueue's own ServiceAccount and
  ClusterRole;
- **webhooks**: the API server calls ``https://127.0.0.1:<port>/<path>`` with a serving
  certificate from the control plane's CA (``clientConfig.url`` instead of a Service; Kueue's
  internal certificate rotation is off). Only the webhooks of Kueue's own kinds and of pods
  are registered (the ``pod`` integration is the only one enabled), and the pod webhooks
  get an ``objectSelector`` on the queue-name label, so a stopped Kueue never blocks the
  other pods of a shared test control plane (upstream sends every pod through them);
- **visibility API** (pending workloads and their positions): Kueue serves it on the host's
  address; an APIService + a Service without selector + an EndpointSlice to that address
  register it with the aggregator (``--enable-aggregator-routing``). The APIService skips
  TLS verification, as Kueue's own ``apiservice_v1beta2.yaml`` does;
- **fixed certificate paths**: without its internal certificate management Kueue reads the
  visibility and metrics certificates from ``/visibility`` and ``/etc/kueue/metrics/certs``:
  it runs in a private mount namespace (``unshare --mount``, root) with our certificate
  directory bound at both (the empty mount points are created once).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient

from devstack import paths
from devstack.controlplane import (
    REQUEST_TIMEOUT,
    ControlPlane,
    ControlPlaneError,
    _free_port,
    apply_object,
    load_manifests,
    wait_crds_established,
)

GOBUILD = paths.REPO_ROOT / "devstack" / "gobuild"
NAMESPACE = "kueue-system"
#: Kueue's label naming a pod's LocalQueue, and the scheduling gate its webhook adds.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
MUTATING = "dna-hub-kueue-mutating"
VALIDATING = "dna-hub-kueue-validating"
VISIBILITY_VERSIONS = ("v1beta1", "v1beta2")
#: Where Kueue reads certificates from fixed paths when its internal certificate management is
#: off: the visibility server (pkg/visibility/server.go) and the metrics server
#: (cmd/kueue/main.go). Bound to our directory in Kueue's private mount namespace.
FIXED_CERT_DIRS = (Path("/visibility"), Path("/etc/kueue/metrics/certs"))


def pinned_version() -> str:
    """The Kueue version devstack/gobuild/kueue/go.mod pins."""
    text = (GOBUILD / "kueue" / "go.mod").read_text()
    found = re.search(r"^\s*sigs\.k8s\.io/kueue (v\S+)", text, re.M)
    if found is None:
        raise ControlPlaneError("devstack/gobuild/kueue/go.mod does not pin sigs.k8s.io/kueue")
    return found.group(1)


def _gobuild_env() -> dict[str, str]:
    env = dict(os.environ)
    if not shutil.which("go") and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = f"{env.get('PATH', '')}:/usr/local/go/bin"
    return env


def build() -> Path:
    """The kueue binary (built once, ~5 min cold on 2 cores; instant when cached)."""
    result = subprocess.run(
        ["bash", str(GOBUILD / "build.sh"), "kueue"],
        capture_output=True,
        text=True,
        env=_gobuild_env(),
        check=False,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"building kueue failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip()) / "kueue"


def module_dir() -> Path:
    """Kueue's module source in the Go module cache (the build downloaded it)."""
    directory = paths.CACHE_DIR / "go" / "mod" / "sigs.k8s.io" / f"kueue@{pinned_version()}"
    if not (directory / "config" / "components").is_dir():
        raise ControlPlaneError(f"{directory} is missing: run devstack/gobuild/build.sh kueue")
    return directory


def crds() -> list[dict[str, Any]]:
    bases = module_dir() / "config" / "components" / "crd" / "bases"
    return [obj for f in sorted(bases.glob("*.yaml")) for obj in load_manifests(f)]


def _ours(webhook: dict[str, Any]) -> bool:
    """Kueue's own kinds, or pods (the one integration enabled here)."""
    for rule in webhook.get("rules", []):
        groups, resources = set(rule.get("apiGroups", [])), set(rule.get("resources", []))
        if groups == {"kueue.x-k8s.io"}:
            continue
        if groups == {""} and resources == {"pods"}:
            continue
        return False
    return True


def webhook_configurations(url: str, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at ``url``, limited as the docstring says."""
    source = module_dir() / "config" / "components" / "webhook" / "manifests.yaml"
    result = []
    for obj in load_manifests(source):
        hooks = []
        for hook in obj.get("webhooks", []):
            if not _ours(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": url + path,
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            if any("pods" in rule.get("resources", []) for rule in hook.get("rules", [])):
                hook["objectSelector"] = {
                    "matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]
                }
            hooks.append(hook)
        kind = obj["kind"]
        expected = MUTATING if kind == "MutatingWebhookConfiguration" else VALIDATING
        result.append({**obj, "metadata": {"name": expected}, "webhooks": hooks})
    return result


def configuration(*, webhook_port: int, cert_dir: Path, health_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["pod"]},
        "managedJobsNamespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", NAMESPACE],
                }
            ]
        },
    }


def host_address() -> str:
    """A non-loopback IPv4 address of this machine (EndpointSlices refuse loopback)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    if found is None:
        raise ControlPlaneError("no global IPv4 address for Kueue's visibility server")
    return found.group(1)


@dataclass
class Kueue:
    """A running Kueue manager on a devstack control plane."""

    control_plane: ControlPlane
    workdir: Path
    webhook_port: int = 0
    visibility_port: int = 0
    health_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_file(self) -> Path:
        return self.control_plane.log_file("kueue") or self.workdir / "kueue.log"

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, timeout: float = 120.0) -> Kueue:
        cp = self.control_plane
        if cp.ca is None:
            raise ControlPlaneError("Kueue needs the local control plane (its CA)")
        binary = await asyncio.to_thread(build)
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        address = host_address()
        cert, key = cp.ca.issue(
            certs,
            "serving",
            common_name="kueue-webhook",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1", address],
            server=True,
        )
        shutil.copy(cert, certs / "tls.crt")
        shutil.copy(key, certs / "tls.key")
        self.webhook_port, self.visibility_port, self.health_port = (
            _free_port(),
            _free_port(),
            _free_port(),
        )
        config_file = self.workdir / "config.yaml"
        config_file.write_text(
            yaml.safe_dump(
                configuration(
                    webhook_port=self.webhook_port, cert_dir=certs, health_port=self.health_port
                )
            )
        )
        async with cp.admin_client() as api:
            await asyncio.gather(*(apply_object(api, obj) for obj in crds()))
            await wait_crds_established(
                api, [obj["metadata"]["name"] for obj in crds()], timeout=timeout
            )
            await apply_object(
                api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
        for mount_point in FIXED_CERT_DIRS:
            mount_point.mkdir(parents=True, exist_ok=True)  # empty; bound only inside Kueue's
        binds = " && ".join(f'mount --bind "$1" {d}' for d in FIXED_CERT_DIRS)
        script = f'{binds} && shift && exec "$@"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "kueue",
            str(certs),
            str(binary),
            f"--config={config_file}",
            f"--kubeconfig={cp.admin_kubeconfig}",
            f"--visibility-server-port={self.visibility_port}",
            "--zap-log-level=2",
        ]
        # the control plane's way: its log dir, its own process group, dies with the runner
        cp._spawn("kueue", argv)
        self.process = cp.processes["kueue"]
        await self._wait_healthy(timeout)
        async with cp.admin_client() as api:
            for obj in webhook_configurations(
                f"https://127.0.0.1:{self.webhook_port}", cp.ca.cert_file.read_bytes()
            ):
                await apply_object(api, obj)
            for obj in self._visibility_objects(address):
                await apply_object(api, obj)
            await self._wait_visibility(api, timeout)
        return self

    def _visibility_objects(self, address: str) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "visibility-server", "namespace": NAMESPACE},
                "spec": {
                    "ports": [{"name": "https", "port": 443, "targetPort": self.visibility_port}]
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "visibility-server-host",
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": "visibility-server"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": self.visibility_port, "protocol": "TCP"}],
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "visibility-server", "namespace": NAMESPACE},
                "subsets": [
                    {
                        "addresses": [{"ip": address}],
                        "ports": [{"name": "https", "port": self.visibility_port}],
                    }
                ],
            },
        ]
        for version in VISIBILITY_VERSIONS:
            objects.append(
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": f"{version}.visibility.kueue.x-k8s.io"},
                    "spec": {
                        "group": "visibility.kueue.x-k8s.io",
                        "version": version,
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100,
                        "insecureSkipTLSVerify": True,
                        "service": {"name": "visibility-server", "namespace": NAMESPACE},
                    },
                }
            )
        return objects

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ControlPlaneError(
                f"kueue exited with status {self.process.returncode}:\n{self.log_tail()}"
            )

    async def _wait_healthy(self, timeout: float) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                self.check_alive()
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"kueue not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.3)

    async def _wait_visibility(self, api: ApiClient, timeout: float) -> None:
        """Until the aggregator serves the visibility API (APIService Available)."""
        deadline = time.monotonic() + timeout
        path = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.visibility.kueue.x-k8s.io"
        last: Any = None
        while True:
            self.check_alive()
            service = await api.call_api(
                path,
                "GET",
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
            last = (service.get("status") or {}).get("conditions")
            if any(c["type"] == "Available" and c["status"] == "True" for c in last or []):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"Kueue's visibility API not available after {timeout}s: {last}\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """Unregister the webhooks first (a dead webhook with failurePolicy Fail blocks
        every write it matches), then stop the manager."""
        cp = self.control_plane
        async with cp.admin_client() as api:
            for kind, name in (
                ("mutatingwebhookconfigurations", MUTATING),
                ("validatingwebhookconfigurations", VALIDATING),
            ):
                try:
                    await api.call_api(
                        f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}",
                        "DELETE",
                        auth_settings=["BearerToken"],
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                except Exception:  # already gone is fine: stop anyway
                    pass
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        cp.processes.pop("kueue", None)  # stopped on purpose: not a dead control plane
