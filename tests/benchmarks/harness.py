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

from kubernetes_asyncio.client import ApiClient, Configuration

from devstack.controlplane import ControlPlane, start_control_plane
from devstack.standins_process import StandIns, start_standins
from dna_hub.k8s.api import NAMESPACE, PROFILE, SERVICE_ACCOUNT, KubeApi
from dna_hub.policy.naming import namespace_for
from dna_hub.policy.rendering import ProfileContext, RenderedProfile, render_profile
from dna_hub.profiles.provisioning import DIGEST_ANNOTATION

#: KubeSpawner's default ``k8s_api_request_timeout``, which DnaSpawner passes to KubeApi.
HUB_REQUEST_TIMEOUT = 3.0


@dataclass
class Cluster:
    cp: ControlPlane
    standins: StandIns
    profile_workers: int
    workdir: Path
    admin_client: ApiClient
    admin: KubeApi
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
    whose pods run nothing (no PodDefault webhook: it is Kubeflow's, not the hub's, work)."""
    cp = await start_control_plane()
    standins = None
    admin_client = None
    c = None
    try:
        # Blocking, from the main thread: start_standins then ties the process to ours.
        standins = start_standins(
            cp.admin_kubeconfig,
            workdir / "standins",
            # pods Running at once, nothing run (kwok-like): see standins/simulated_pods.py
            "--kubelet-runtime",
            "none",
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
        c = Cluster(cp, standins, profile_workers, workdir, admin_client, admin)
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


class LoopLagProbe:
    """A task that sleeps 5 ms in a loop and records how late it wakes up.

    A late wake-up is either this event loop running other code (a stall the hub's users
    feel) or the OS not running this process at all (CPU starvation on a busy machine).
    So each wake-up also records the loop thread's CPU time over the interval: the part
    of an overshoot that the thread spent on CPU is the loop's own stall.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self.busy: list[float] = []
        #: Seconds since the probe started at which the worst on-CPU stall ended.
        self.worst_busy_at = 0.0
        #: ``time.perf_counter()`` spans of the worst on-CPU stall and the worst wall stall.
        self.worst_busy_window = (0.0, 0.0)
        self.worst_lag_window = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            before, cpu_before, wall_before = loop.time(), time.thread_time(), time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = loop.time() - before - self.interval
            busy = min(lag, time.thread_time() - cpu_before)
            window = (wall_before + self.interval, time.perf_counter())
            if busy > max(self.busy, default=0.0):
                self.worst_busy_at = loop.time() - start
                self.worst_busy_window = window
            if lag > max(self.lags, default=0.0):
                self.worst_lag_window = window
            self.lags.append(lag)
            self.busy.append(busy)

    def __enter__(self) -> LoopLagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def max_ms(self) -> float:
        return max(self.lags, default=0.0) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.lags, 99) * 1000

    @property
    def max_busy_ms(self) -> float:
        """The longest overshoot the loop thread spent on CPU (its own stall)."""
        return max(self.busy, default=0.0) * 1000


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


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


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
