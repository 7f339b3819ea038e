"""One login storm in a fresh hub process: ``python -m tests.benchmarks.hub_storm SPEC.json``.

A new process per storm, as a freshly started hub: its own heap, garbage collector state,
KubeSpawner reflectors and peak RSS, so no method inherits another's. It reads a JSON spec
(method, usernames, the hub's kubeconfig, ...), starts every user's server at once in one
event loop with the method's spawner, and prints one JSON result line.

Methods (the same pod spec, the same KubeSpawner, the same shared client):

* ``stock`` — stock ``KubeSpawner`` into namespaces that already exist (the floor: what any
  z2jh deployment with per-user namespaces pays);
* ``dna`` — ``DnaSpawner`` for brand-new users: profile provisioning, then the same pod;
* ``old`` — the old platform: its pre-spawn hook (``params.env`` + ``kubectl apply -k``
  twice, :mod:`.oldmethod`), then stock ``KubeSpawner``.

What JupyterHub does around ``Spawner.start`` (database, OAuth client, proxy routes,
waiting for the server's HTTP endpoint) is the same for all three and is not run: the
pods run nothing (the kubelet stand-in's ``none`` runtime), so ``start()`` returns when the
pod is Running with its IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jupyterhub import orm
from jupyterhub.objects import Server
from kubespawner import KubeSpawner

from dna_hub import DnaSpawner
from dna_hub.policy.naming import namespace_for
from tests.benchmarks import oldmethod
from tests.benchmarks.harness import summary
from tests.benchmarks.looplag import LoopLagProbe
from tests.benchmarks.stalls import StallAttribution
from tests.support.hub_user import HubUser

#: The pod every method starts (the kubelet stand-in runs nothing; the spec is real).
COMMON = {
    "image": "dna-hub/singleuser:bench",
    "cmd": ["jupyterhub-singleuser"],
    "start_timeout": 900,
    "http_timeout": 900,
    "k8s_api_request_timeout": 3,
    "enable_user_namespaces": True,
    "service_account": "default-editor",
    # Pod Security "restricted", which profile namespaces enforce: DnaSpawner's defaults,
    # given to stock KubeSpawner too, so every method creates the same pod
    "uid": 1000,
    "gid": 100,
    "fs_gid": 100,
    "pod_security_context": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "container_security_context": {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def make_spawner(method: str, username: str, hub_namespace: str) -> KubeSpawner:
    user = HubUser(
        name=username,
        escaped_name=username,
        id=abs(hash(username)) % 1_000_000,
        url=f"/user/{username}/",
        settings={},
        groups=[],
        auth_state={"kubeflow_userid": f"{username}@example.com"},
    )
    hub = SimpleNamespace(
        public_host="", url="/hub/", base_url="/hub/", api_url="http://hub:8081/hub/api"
    )
    common: dict[str, Any] = {
        "_mock": True,
        "user": user,
        "hub": hub,
        "orm_spawner": SimpleNamespace(name="", display_name="", server=None, last_activity=None),
        "api_token": "benchmark-token",
        "oauth_client_id": f"jupyterhub-user-{username}",
        **COMMON,
    }
    if method == "dna":
        spawner: KubeSpawner = DnaSpawner(
            hub_namespace=hub_namespace, profile_ready_timeout=900, **common
        )
    else:
        spawner = KubeSpawner(user_namespace_template="kubeflow-{username}", **common)
    if spawner.namespace != namespace_for(username):
        raise RuntimeError(f"{method}: namespace {spawner.namespace}, not the policy's")
    spawner.server = Server(
        orm_server=orm.Server(proto="http", ip="", port=0, base_url=f"/user/{username}/",
                              cookie_name="")
    )  # fmt: skip
    return spawner


def count_requests(api_client: Any) -> list[int]:
    """Count every request the shared Kubernetes client sends (watches included)."""
    counter = [0]
    original = api_client.request

    async def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await original(*args, **kwargs)

    api_client.request = counted
    return counter


def tracked(value: Any) -> int:
    """GC-tracked containers in a JSON value (what a full collection walks)."""
    seen, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            seen += gc.is_tracked(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            seen += gc.is_tracked(item)
            stack.extend(item)
    return seen


def reflector_heap(reflectors: dict[str, Any]) -> dict[str, Any]:
    """What the shared reflectors hold once the storm is over, and the whole heap."""
    out: dict[str, Any] = {"gc_tracked_objects": len(gc.get_objects())}
    out["frozen"] = gc.get_freeze_count()
    for key, reflector in reflectors.items():
        resources = list(reflector.resources.values())
        out[f"reflector {key}"] = {
            "resources": len(resources),
            "tracked": sum(tracked(r) for r in resources),
            "tracked_in_managed_fields": sum(
                tracked(r.get("metadata", {}).get("managedFields")) for r in resources
            ),
        }
    return out


def rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


#: A user whose spawn failed starts it again (JupyterHub shows the error; the user clicks
#: "Start" once more) — up to this many attempts in all.
ATTEMPTS = 3


def describe_failure(error: BaseException) -> str:
    """The exception and where it was raised (the innermost frame of our or KubeSpawner's)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = next(
        (f"{Path(f.filename).name}:{f.name}" for f in reversed(frames)
         if "kubespawner" in f.filename or "dna_hub" in f.filename),
        frames[-1].name if frames else "?",
    )  # fmt: skip
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__} in {where}: {message}"[:300]


class HeapCensus:
    """At the first full collections of a storm: how many GC-tracked objects it walked,
    by type. A census costs the loop time itself, so it runs only in a separate storm."""

    def __init__(self, passes: int = 3) -> None:
        self.passes = passes
        self.taken: list[dict[str, Any]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != 2 or len(self.taken) >= self.passes:
            return
        objects = gc.get_objects()
        by_type: dict[str, int] = {}
        for obj in objects:
            name = type(obj).__qualname__
            by_type[name] = by_type.get(name, 0) + 1
        top = sorted(by_type.items(), key=lambda t: -t[1])[:14]
        self.taken.append({"tracked": len(objects), "frozen": gc.get_freeze_count(), "top": top})


async def storm(spec: dict[str, Any]) -> dict[str, Any]:
    method, usernames = spec["method"], spec["usernames"]
    census = HeapCensus() if spec.get("census") else None
    if census is not None:
        gc.callbacks.append(census)
    spawners = [make_spawner(method, u, spec["hub_namespace"]) for u in usernames]
    requests = count_requests(spawners[0].api.api_client)
    # A running hub has its reflectors up before anyone logs in.
    await spawners[0]._start_watching_pods()
    await spawners[0]._start_watching_events()
    hooks = asyncio.Semaphore(spec.get("old_hook_concurrency") or 1)
    old_root = Path(spec["old_root"])
    hook_results: list[oldmethod.HookResult] = []

    async def attempt(spawner: KubeSpawner) -> None:
        if method == "old":  # JupyterHub runs the pre-spawn hook before every start
            async with hooks:  # kubectl processes, capped by memory (see __main__)
                hook_results.append(
                    await oldmethod.run_hook(
                        old_root,
                        Path(spec["hub_kubeconfig"]),
                        user=spawner.user.name,
                        profile=spawner.namespace,
                        owner=f"{spawner.user.name}@example.com",
                        cache_dir=old_root / "home" / ".kube" / "cache",
                        timeout=spec["timeout"],
                    )
                )
        await asyncio.wait_for(spawner.start(), spec["timeout"])

    async def one(spawner: KubeSpawner) -> dict[str, Any]:
        started = time.perf_counter()
        errors = []
        for _ in range(ATTEMPTS):
            try:
                await attempt(spawner)
            except Exception as e:  # a failed spawn is an outcome, reported with its reason
                errors.append(describe_failure(e))
                with contextlib.suppress(Exception):  # as JupyterHub cleans up a failed start
                    await asyncio.wait_for(spawner.stop(now=True), 60)
                continue
            break
        else:
            return {"seconds": None, "errors": errors}
        return {"seconds": time.perf_counter() - started, "errors": errors}

    cpu_before, children_before = (
        rusage_cpu(resource.RUSAGE_SELF),
        rusage_cpu(resource.RUSAGE_CHILDREN),
    )
    requests_before = requests[0]
    started = time.perf_counter()
    with LoopLagProbe() as probe, StallAttribution() as attribution:
        tasks = []
        for spawner in spawners:
            # As logins arrive: one spawn request per loop iteration, not 500 in one step.
            tasks.append(asyncio.ensure_future(one(spawner)))
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    hub_cpu = rusage_cpu(resource.RUSAGE_SELF) - cpu_before
    kubectl_cpu = rusage_cpu(resource.RUSAGE_CHILDREN) - children_before
    hub_requests = requests[0] - requests_before
    kubectl_requests = sum(h.requests for h in hook_results)
    ok = [o["seconds"] for o in outcomes if o["seconds"] is not None]
    first_try = [o["seconds"] for o in outcomes if o["seconds"] is not None and not o["errors"]]
    errors: dict[str, int] = {}
    for outcome in outcomes:
        for error in outcome["errors"]:
            errors[error] = errors.get(error, 0) + 1
    n = len(usernames)
    provisioning = [s.last_provision for s in spawners if getattr(s, "last_provision", None)]
    heap = reflector_heap(KubeSpawner.reflectors)
    for reflector in list(KubeSpawner.reflectors.values()):
        await reflector.stop()
    return {
        "method": method,
        "users": n,
        "succeeded": len(ok),
        "failed": n - len(ok),
        "succeeded_first_try": len(first_try),
        "attempts": sum(min(len(o["errors"]) + 1, ATTEMPTS) for o in outcomes),
        "errors": sorted(errors.items(), key=lambda e: -e[1])[:6],
        "wall_seconds": wall,
        "per_user_seconds": summary(ok),
        "requests_per_spawn": (hub_requests + kubectl_requests) / n,
        "hub_requests_per_spawn": hub_requests / n,
        "provisioning_requests_per_spawn": (
            sum(p.requests for p in provisioning) / len(provisioning) if provisioning else None
        ),
        "hub_cpu_ms_per_spawn": hub_cpu / n * 1000,
        "kubectl_cpu_ms_per_spawn": kubectl_cpu / n * 1000,
        "old_hooks": len(hook_results),
        "old_hooks_failed_last_apply": sum(not h.ok for h in hook_results),
        "loop_lag_max_ms": probe.max_ms,
        "loop_stall_on_cpu_max_ms": probe.max_busy_ms,
        "loop_stall_worst_at_seconds": probe.worst_busy_at,
        "loop_lag_p99_ms": probe.p99_ms,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "heap_after": heap,
        "census": census.taken if census is not None else None,
        "stalls": {
            **attribution.summary(),
            "worst_on_cpu": attribution.inside(probe.worst_busy_window),
            "worst_wall": attribution.inside(probe.worst_lag_window),
        },
    }


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # kubernetes_asyncio (KubeSpawner's load_config) reads the hub's kubeconfig.
    os.environ["KUBECONFIG"] = spec["hub_kubeconfig"]
    result = asyncio.run(storm(spec))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
