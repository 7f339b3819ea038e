"""Login storms with three methods side by side: stock KubeSpawner, DnaSpawner, old hook.

Per storm size, on the same cluster (pods Running through the kubelet stand-in's ``none``
runtime, which runs nothing — as kwok does for scale tests — the same for all three):

1. ``dna``: N brand-new users, DnaSpawner (profile provisioning + pod);
2. ``stock``: the same N users again with stock KubeSpawner, their pods deleted first —
   so their namespaces (and ``default-editor``) already exist: the floor;
3. ``old``: N other brand-new users, the old hook + stock KubeSpawner.

Each storm runs in a fresh hub process (:mod:`.hub_storm`); this side prepares, measures the
cluster's processes' CPU around it, checks what the storm left (every pod Running; every
DnaSpawner profile complete) and deletes the storm's pods afterwards (grace 0), outside
the clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import CoreV1Api

from tests.benchmarks.harness import Cluster, cpu_seconds, rendered_for, unique, verify

METHODS = ("dna", "stock", "old")
POD_SELECTOR = "component=singleuser-server"


async def run_storm(
    c: Cluster,
    method: str,
    usernames: list[str],
    workdir: Path,
    *,
    timeout: float,
    old_root: Path,
    old_concurrency: int,
    log_dir: Path,
    census: bool = False,
) -> dict[str, Any]:
    spec = {
        "census": census,
        "method": method,
        "usernames": usernames,
        # stock KubeSpawner and the old platform's hub as their own identities (harness)
        "hub_kubeconfig": str(
            {"stock": c.stock_kubeconfig, "old": c.old_kubeconfig}.get(method, c.cp.hub_kubeconfig)
        ),
        "hub_namespace": c.cp.hub_namespace,
        "timeout": timeout,
        "old_root": str(old_root),
        "old_hook_concurrency": old_concurrency,
    }
    spec_file = workdir / f"storm-{method}-{len(usernames)}.json"
    spec_file.write_text(json.dumps(spec))
    pids = {k: v for k, v in c.pids().items() if k != "hub (this process)"}
    cpu_before = cpu_seconds(pids)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.benchmarks.hub_storm",
        str(spec_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": spec["hub_kubeconfig"]},
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 3 * timeout + 300)
    (log_dir / f"storm-{method}-{len(usernames)}.log").write_bytes(err)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{method} storm of {len(usernames)} failed ({proc.returncode}): "
            f"{err.decode(errors='replace')[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    cpu_after = cpu_seconds(pids)
    result["cluster_cpu_seconds"] = {k: cpu_after[k] - cpu_before[k] for k in pids}
    return result


async def pods_running(core: CoreV1Api, namespaces: set[str]) -> int:
    pods = await core.list_pod_for_all_namespaces(label_selector=POD_SELECTOR)
    return sum(
        1
        for p in pods.items
        if p.metadata.namespace in namespaces
        and p.status.phase == "Running"
        and p.status.pod_ip
        and not p.metadata.deletion_timestamp
    )


async def delete_pods(core: CoreV1Api, namespaces: set[str]) -> None:
    """Every singleuser pod of these namespaces, at once (grace 0), and wait until gone."""
    semaphore = asyncio.Semaphore(20)

    async def one(namespace: str) -> None:
        async with semaphore:
            await core.delete_collection_namespaced_pod(
                namespace, label_selector=POD_SELECTOR, grace_period_seconds=0
            )

    await asyncio.gather(*(one(ns) for ns in sorted(namespaces)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pods = await core.list_pod_for_all_namespaces(label_selector=POD_SELECTOR)
        if not any(p.metadata.namespace in namespaces for p in pods.items):
            return
        await asyncio.sleep(1)
    raise RuntimeError("the storm's pods were not deleted within 300 s")


async def incomplete_profiles(c: Cluster, usernames: list[str]) -> int:
    semaphore = asyncio.Semaphore(20)

    async def one(username: str) -> str | None:
        async with semaphore:
            return await verify(c.admin, rendered_for(username, hub_namespace=c.cp.hub_namespace))

    return sum(1 for m in await asyncio.gather(*(one(u) for u in usernames)) if m)


async def storms_of_size(
    c: Cluster,
    n: int,
    workdir: Path,
    *,
    timeout: float,
    old_root: Path,
    old_concurrency: int,
    methods: tuple[str, ...] = METHODS,
    log_dir: Path | None = None,
    census: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    from dna_hub.policy.naming import namespace_for

    core = CoreV1Api(c.admin_client)
    users = [unique(f"p{n}-") for _ in range(n)]
    old_users = [unique(f"q{n}-") for _ in range(n)]
    out: dict[str, Any] = {"users": n}
    for method in methods:
        names = old_users if method == "old" else users
        namespaces = {namespace_for(u) for u in names}
        if method == "stock" and "dna" not in methods:
            raise ValueError("the stock storm spawns into the namespaces the dna storm made")
        log(f"storm: {n} users, {method}")
        result = await run_storm(
            c, method, names, workdir, timeout=timeout, old_root=old_root,
            old_concurrency=old_concurrency, log_dir=log_dir or workdir,
        )  # fmt: skip
        result["pods_running_after"] = await pods_running(core, namespaces)
        if method == "dna":
            result["profiles_incomplete_after"] = await incomplete_profiles(c, names)
        await delete_pods(core, namespaces)
        out[method] = result
        log(
            f"  {result['succeeded']}/{n} Running in {result['wall_seconds']:.1f}s, "
            f"stall {result['loop_lag_max_ms']:.1f} ms "
            f"({result['loop_stall_on_cpu_max_ms']:.1f} ms on CPU), "
            f"{result['requests_per_spawn']:.1f} requests/spawn"
        )
    if census and "dna" in methods:
        # What a full collection walks in the middle of a DnaSpawner storm: a separate storm
        # of new users, because counting costs the loop time.
        names = [unique(f"c{n}-") for _ in range(n)]
        log(f"storm: {n} users, dna, heap census (not measured)")
        result = await run_storm(
            c, "dna", names, workdir, timeout=timeout, old_root=old_root,
            old_concurrency=old_concurrency, log_dir=log_dir or workdir, census=True,
        )  # fmt: skip
        await delete_pods(core, {namespace_for(u) for u in names})
        out["census"] = {"users": n, "passes": result["census"], "heap_after": result["heap_after"]}
    if "dna" in out and "stock" in out:
        dna, stock = out["dna"], out["stock"]
        out["overhead"] = {
            "all_running_ratio": dna["wall_seconds"] / stock["wall_seconds"],
            "all_running_ms_per_spawn": (dna["wall_seconds"] - stock["wall_seconds"]) / n * 1000,
            "p50_ratio": _ratio(dna["per_user_seconds"], stock["per_user_seconds"], "median"),
            "hub_cpu_ms_per_spawn": dna["hub_cpu_ms_per_spawn"] - stock["hub_cpu_ms_per_spawn"],
            "requests_per_spawn": dna["requests_per_spawn"] - stock["requests_per_spawn"],
        }
    return out


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if not a.get(key) or not b.get(key):
        return None
    return a[key] / b[key]
