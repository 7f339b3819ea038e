"""What every benchmark shares: the cluster, the hub's client, users, probes, verification."""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import platform
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import (
    ApiClient,
    AuthenticationV1TokenRequest,
    Configuration,
    CoreV1Api,
    V1TokenRequestSpec,
)

from devstack.controlplane import (
    HUB_TOKEN_SECONDS,
    ControlPlane,
    _write_kubeconfig,
    apply_object,
    start_control_plane,
)
from devstack.standins_process import StandIns, start_standins
from dna_hub.k8s.api import NAMESPACE, PROFILE, SERVICE_ACCOUNT, KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import ProfileContext, RenderedProfile, render_profile
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION
from tests.benchmarks.looplag import percentile

#: KubeSpawner's default ``k8s_api_request_timeout``, which DnaSpawner passes to KubeApi.
HUB_REQUEST_TIMEOUT = 3.0


#: Stock KubeSpawner's own identity: what a z2jh hub with per-user namespaces is granted
#: (it creates the namespace itself, a 409 when it exists) and nothing of dna_hub's
#: deployment — no admission guard confines it (they confine the ``hub`` ServiceAccount, and
#: refuse a namespace create by it: 422). So stock KubeSpawner is measured as deployed on
#: its own, and DnaSpawner pays for its guards.
STOCK_SERVICE_ACCOUNT = "stock-kubespawner"
STOCK_ROLE = "dna-hub-benchmark-stock-kubespawner"
#: The old platform's hub: DnaSpawner's hub RBAC (it applied the same objects with kubectl),
#: stock KubeSpawner's (it created the namespace) and the old method's ``get`` rules
#: (oldmethod.OLD_METHOD_RBAC) — and, as on the old platform, no admission guard.
OLD_PLATFORM_SERVICE_ACCOUNT = "old-platform-hub"


def _service_account(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "jupyterhub"},
    }


def _cluster_role_binding(name: str, role: str, service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account, "namespace": "jupyterhub"}
        ],
    }


STOCK_KUBESPAWNER_RBAC: list[dict[str, Any]] = [
    _service_account(STOCK_SERVICE_ACCOUNT),
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": STOCK_ROLE},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create", "get"]},
            {
                "apiGroups": [""],
                "resources": ["pods", "secrets", "services", "persistentvolumeclaims"],
                "verbs": ["get", "list", "watch", "create", "delete", "patch"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ],
    },
    _cluster_role_binding(STOCK_ROLE, STOCK_ROLE, STOCK_SERVICE_ACCOUNT),
]
OLD_PLATFORM_RBAC: list[dict[str, Any]] = [
    _service_account(OLD_PLATFORM_SERVICE_ACCOUNT),
    *(
        _cluster_role_binding(
            f"dna-hub-benchmark-old-platform-{role}", role, OLD_PLATFORM_SERVICE_ACCOUNT
        )
        for role in ("dna-hub", STOCK_ROLE)
    ),
]


async def service_account_kubeconfig(
    cp: ControlPlane, admin_client: ApiClient, name: str, rbac: list[dict[str, Any]], path: Path
) -> Path:
    """Apply `rbac` and write a kubeconfig for ServiceAccount jupyterhub/`name`."""
    for obj in rbac:
        await apply_object(admin_client, obj)
    token = await CoreV1Api(admin_client).create_namespaced_service_account_token(
        name,
        "jupyterhub",
        AuthenticationV1TokenRequest(
            spec=V1TokenRequestSpec(audiences=[], expiration_seconds=HUB_TOKEN_SECONDS)
        ),
    )
    return _write_kubeconfig(
        path,
        server=cp.server,
        ca_file=cp.ca_file,
        user=f"jupyterhub-{name}",
        credentials={"token": token.status.token},
        namespace="jupyterhub",
    )


@dataclass
class Cluster:
    cp: ControlPlane
    standins: StandIns
    profile_workers: int
    workdir: Path
    admin_client: ApiClient
    admin: KubeApi
    #: stock KubeSpawner's identity (not the guarded ``hub`` ServiceAccount)
    stock_kubeconfig: Path
    #: the old platform's hub (old hook + stock KubeSpawner in the login storms)
    old_kubeconfig: Path
    hub_clients: list[ApiClient] = field(default_factory=list)

    def hub_client(self, *, pool: int | None = None) -> ApiClient:
        """An ApiClient as the hub's ServiceAccount; ``pool`` overrides the connection limit
        (kubernetes_asyncio's default, which KubeSpawner keeps, is 100)."""
        configuration: Configuration = copy.deepcopy(self.cp.hub_configuration())
        if pool is not None:
            configuration.connection_pool_maxsize = pool
        client = ApiClient(configuration=configuration)
        self.hub_clients.append(client)
        return client

    def pids(self) -> dict[str, int]:
        """Processes whose CPU use a benchmark reports: this one and the cluster's."""
        pids = {"hub (this process)": os.getpid(), "stand-ins": self.standins.process.pid}
        pids.update({name: proc.pid for name, proc in self.cp.processes.items()})
        return pids

    def hub_api(self, client: ApiClient | None = None, **kw: Any) -> KubeApi:
        kw.setdefault("request_timeout", HUB_REQUEST_TIMEOUT)
        return KubeApi(client or self.hub_client(), **kw)


@asynccontextmanager
async def cluster(workdir: Path, profile_workers: int) -> AsyncIterator[Cluster]:
    """Control plane + a stand-ins process as admin: the profile controller and a kubelet
    whose pods run nothing but a Jupyter-server-shaped HTTP answer on a loopback pod IP
    (runtime ``serve``; no PodDefault webhook: it is Kubeflow's, not the hub's, work)."""
    cp = await start_control_plane()
    standins = None
    admin_client = None
    c = None
    try:
        # Blocking, from the main thread: start_standins then ties the process to ours.
        standins = start_standins(
            cp.admin_kubeconfig,
            workdir / "standins",
            # pods Running at once, nothing run but one HTTP socket each, answering like a
            # single-user server (kwok-like otherwise): see standins/simulated_pods.py
            "--kubelet-runtime",
            "serve",
            # kube-scheduler counts pods per node; a storm is more than a real node's 250
            "--max-pods",
            "100000",
            "--no-webhook",
            "--profile-workers",
            str(profile_workers),
            "--log-level",
            "WARNING",
        )
        admin_client = cp.admin_client()
        admin = KubeApi(admin_client, request_timeout=30)
        stock = await service_account_kubeconfig(
            cp, admin_client, STOCK_SERVICE_ACCOUNT, STOCK_KUBESPAWNER_RBAC,
            workdir / "stock.kubeconfig",
        )  # fmt: skip
        old = await service_account_kubeconfig(
            cp, admin_client, OLD_PLATFORM_SERVICE_ACCOUNT, OLD_PLATFORM_RBAC,
            workdir / "old-platform.kubeconfig",
        )  # fmt: skip
        c = Cluster(cp, standins, profile_workers, workdir, admin_client, admin, stock, old)
        yield c
    finally:
        if c is not None:
            for client in c.hub_clients:
                await client.close()
        if admin_client is not None:
            await admin_client.close()
        if standins is not None:
            await asyncio.to_thread(standins.stop)
        await cp.aclose()


_RUN = uuid.uuid4().hex[:5]
_COUNTER = itertools.count()


def unique(prefix: str) -> str:
    """A username no other run or benchmark uses."""
    return f"bm{_RUN}-{prefix}{next(_COUNTER)}"


def rendered_for(
    username: str, template_dir: Path | None = None, hub_namespace: str = "jupyterhub"
) -> RenderedProfile:
    context = ProfileContext(
        username=username,
        namespace=namespace_for(username),
        owner=f"{username}@example.com",
        hub_namespace=hub_namespace,
    )
    return render_profile(context, [template_dir] if template_dir else [])


async def verify(admin: KubeApi, rendered: RenderedProfile) -> str | None:
    """None when the whole profile exists as rendered and recorded; else what is missing."""
    namespace = rendered.profile["metadata"]["name"]
    owner = rendered.profile["spec"]["owner"]["name"]
    profile = await admin.get(PROFILE, namespace)
    if profile is None:
        return "no Profile"
    if profile["spec"]["owner"]["name"] != owner:
        return "Profile owner differs"
    if (profile["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION) != rendered.digest:
        return "digest not recorded"
    ns = await admin.get(NAMESPACE, namespace)
    if ns is None:
        return "no namespace"
    if await admin.get(SERVICE_ACCOUNT, "default-editor", namespace) is None:
        return "no default-editor"
    for obj in rendered.namespaced:
        kind = await admin.kind_for(obj["apiVersion"], obj["kind"])
        if await admin.get(kind, obj["metadata"]["name"], obj["metadata"]["namespace"]) is None:
            return f"no {obj['kind']} {obj['metadata']['name']}"
    return None


async def exists(admin: KubeApi, rendered: RenderedProfile) -> str | None:
    """Like :func:`verify` without the digest (the old method records none)."""
    namespace = rendered.profile["metadata"]["name"]
    if await admin.get(PROFILE, namespace) is None:
        return "no Profile"
    if await admin.get(NAMESPACE, namespace) is None:
        return "no namespace"
    for obj in rendered.namespaced:
        kind = await admin.kind_for(obj["apiVersion"], obj["kind"])
        if await admin.get(kind, obj["metadata"]["name"], obj["metadata"]["namespace"]) is None:
            return f"no {obj['kind']} {obj['metadata']['name']}"
    return None


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """user+system CPU seconds of each process so far (0 when it is gone)."""
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    return out


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def memory_kib() -> dict[str, int]:
    """VmRSS / VmHWM / VmPeak of this process, in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmPeak"):
            out[key] = int(value.split()[0])
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
