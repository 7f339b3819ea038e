"""Login storms as users feel them: the whole hub, through HTTP, on the local control plane.

Per size N, on one cluster (control plane, profile-controller stand-in, kubelet stand-in's
``serve`` runtime), four storms of the same N users, each a real HTTP client with its own
cookie jar:

1. ``dna new``: a fresh ``jupyterhub`` + ``configurable-http-proxy`` with DnaSpawner;
   brand-new users: OIDC login at the real OpenID provider (panva/oidc-provider), the
   spawn (profile + pod), the spawn-pending page's progress stream until ``ready``, then
   ``GET /user/<name>/api`` through the proxy, answered by the user's own pod;
2. ``dna returning``: the same hub restarted on its database (servers stopped first,
   profiles left as they are), the same users logging in again with new cookie jars;
3. ``stock new`` and 4. ``stock returning``: the same with stock KubeSpawner (per-user
   namespaces ``kubeflow-{username}``, ServiceAccount ``default-editor``) on a hub of its
   own — into the namespaces storm 1 made, so stock pays no profile: the floor.

Optionally a ramp (R logins per second instead of all at once) of returning users for each
method. Every storm uses the same pod spec, JupyterHub settings (``concurrent_spawn_limit``
64 as z2jh's default; a user refused with 429 retries after its ``Retry-After`` with
jitter, as a user clicking again) and machine.

What each user measures: time to logged in (the hub's OAuth callback answered), time to
ready (``/api`` of its server answered 200 by its own pod through the proxy), 429s, and the
latency of every request to the hub. Beside them a prober (one logged-in user and the
admin service) requests ``/hub/api/``, ``/hub/api/users/<probe>`` and ``/hub/home`` every
``PROBE_INTERVAL`` seconds. Inside the hub (:mod:`.hub_probe`): Kubernetes requests and
the event loop's lag. Outside: CPU of every process, the hub's peak RSS, the proxy's
routes. For ``dna new``, the profile controller's reconcile latency: Profile ADDED ->
Namespace and ServiceAccount ``default-editor`` ADDED, from watches of the admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack import paths
from devstack.oidc_stack import (
    ALLOWED_GROUPS,
    HubProcess,
    OIDCProvider,
    _rsa_jwk,
    install_node_modules,
    start_hub,
)
from devstack.standins import Kube, KubeError, list_watch
from dna_hub.policy.naming import namespace_for
from tests.benchmarks import report
from tests.benchmarks.harness import Cluster, cpu_seconds, percentile, summary

#: z2jh's default ``hub.concurrentSpawnLimit``.
CONCURRENT_SPAWN_LIMIT = 64
PROBE_INTERVAL = 0.25
POD_SELECTOR = "component=singleuser-server"
#: A refused user tries again at most this many times.
MAX_RETRIES = 60

#: What both methods are configured with (the same pod as hub_storm.COMMON).
COMMON_CONFIG = """
# --- full-stack storm (tests/benchmarks/fullstack.py) ---
from tests.benchmarks.hub_probe import install as _install_probe
_install_probe({probe!r})
c.JupyterHub.concurrent_spawn_limit = {limit}
c.JupyterHub.active_server_limit = 0
c.KubeSpawner.image = "dna-hub/singleuser:bench"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 900
c.KubeSpawner.http_timeout = 120
c.KubeSpawner.k8s_api_request_timeout = 3
c.KubeSpawner.enable_user_namespaces = True
c.KubeSpawner.service_account = "default-editor"
c.KubeSpawner.uid = 1000
c.KubeSpawner.gid = 100
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.pod_security_context = {{
    "runAsNonRoot": True, "seccompProfile": {{"type": "RuntimeDefault"}}
}}
c.KubeSpawner.container_security_context = {{
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {{"drop": ["ALL"]}},
    "seccompProfile": {{"type": "RuntimeDefault"}},
}}
c.JupyterHub.load_roles[0]["scopes"].append("proxy")
"""
METHOD_CONFIG = {
    "dna": """
c.JupyterHub.spawner_class = "dna"
c.DnaSpawner.hub_namespace = "jupyterhub"
c.DnaSpawner.profile_ready_timeout = 600
""",
    "stock": """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.user_namespace_template = "kubeflow-{username}"
""",
}
METHODS = tuple(METHOD_CONFIG)


def account(login: str) -> dict[str, Any]:
    return {
        "claims": {
            "preferred_username": login,
            "email": f"{login}@example.com",
            "email_verified": True,
            "groups": list(ALLOWED_GROUPS),
        }
    }


# ------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    cluster: Cluster
    provider: OIDCProvider
    node_modules: Path
    workdir: Path
    log: Callable[[str], None]
    admin_kube: Kube | None = None

    @classmethod
    async def start(
        cls, cluster: Cluster, logins: list[str], workdir: Path, log: Callable[[str], None]
    ) -> Stack:
        node_modules = await asyncio.to_thread(install_node_modules)
        accounts = {login: account(login) for login in [*logins, "prober"]}
        provider = OIDCProvider(
            node_modules, workdir / "provider", keys=[_rsa_jwk("bench-key")], accounts=accounts
        )
        await asyncio.to_thread(provider.start)
        stack = cls(cluster, provider, node_modules, workdir, log)
        stack.admin_kube = await Kube.from_kubeconfig(cluster.cp.admin_kubeconfig)
        return stack

    async def close(self) -> None:
        if self.admin_kube is not None:
            await self.admin_kube.close()
        await asyncio.to_thread(self.provider.stop)


@dataclass
class BenchHub:
    """One method's hub: its work directory (database, cookie secret) outlives restarts."""

    method: str
    work: Path
    crypt_key: str = field(default_factory=lambda: secrets.token_hex(32))
    proxy_token: str = field(default_factory=lambda: secrets.token_hex(32))
    process: HubProcess | None = None

    @property
    def probe_file(self) -> Path:
        return self.work / "probe.json"

    async def start(self, stack: Stack) -> HubProcess:
        self.work.mkdir(parents=True, exist_ok=True)
        self.probe_file.unlink(missing_ok=True)
        config = COMMON_CONFIG.format(probe=str(self.probe_file), limit=CONCURRENT_SPAWN_LIMIT)
        self.process = await start_hub(
            stack.provider,
            stack.node_modules,
            self.work,
            extra_config=config + METHOD_CONFIG[self.method],
            env={
                # stock KubeSpawner as its own identity (harness.STOCK_KUBESPAWNER_RBAC)
                "KUBECONFIG": str(
                    stack.cluster.stock_kubeconfig
                    if self.method == "stock"
                    else stack.cluster.cp.hub_kubeconfig
                ),
                "PYTHONPATH": str(paths.REPO_ROOT),
                "JUPYTERHUB_CRYPT_KEY": self.crypt_key,
                "CONFIGPROXY_AUTH_TOKEN": self.proxy_token,
            },
        )
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def proxy_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.work / "jupyterhub-proxy.pid").read_text().strip())
        return None

    def proxy_api_url(self) -> str:
        text = (self.work / "jupyterhub_config.py").read_text()
        found = re.search(r"ConfigurableHTTPProxy\.api_url = '([^']+)'", text)
        assert found, "no proxy api_url in the generated config"
        return found.group(1)

    async def routes(self) -> int:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(
                f"{self.proxy_api_url()}/api/routes",
                headers={"Authorization": f"token {self.proxy_token}"},
            )
        response.raise_for_status()
        return len(response.json())

    async def read_probe(self, after: float = 0.0, timeout: float = 10.0) -> dict[str, Any]:
        """The probe's report written after ``after`` (a ``time.time()``)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                if self.probe_file.stat().st_mtime > after:
                    data: dict[str, Any] = json.loads(self.probe_file.read_text())
                    return data
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub's probe wrote nothing to {self.probe_file}")
            await asyncio.sleep(0.1)

    async def reset_probe(self) -> None:
        reset = self.probe_file.with_name(self.probe_file.name + ".reset")
        reset.touch()
        deadline = time.monotonic() + 10
        while reset.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def vm_hwm_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------ one user


@dataclass
class UserOutcome:
    login: str
    arrival: float  # seconds after the storm's start
    logged_in: float | None = None  # seconds after arrival
    ready: float | None = None  # seconds after arrival
    started_at: float = 0.0  # time.perf_counter() at arrival
    refused: int = 0  # 429 answers
    bounced: int = 0  # "not running" pages while the spawn was starting
    relaunched: int = 0  # Launch pressed on one of them
    error: str | None = None
    hub_requests: list[tuple[str, float]] = field(default_factory=list)


def _kind(url: httpx.URL, hub: str) -> str | None:
    if not str(url).startswith(hub):
        return None
    path = url.path
    if path.startswith("/hub/api/"):
        return "api"
    if path == "/hub/spawn":  # waits for the spawn itself (up to slow_spawn_timeout)
        return "spawn"
    if path.startswith("/hub/"):
        return "page"
    return None


def _timed_client(hub_url: str, outcome: UserOutcome, timeout: float) -> httpx.AsyncClient:
    async def on_request(request: httpx.Request) -> None:
        request.extensions["bench_t0"] = time.perf_counter()

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path == "/hub/oauth_callback" and response.is_redirect:
            outcome.logged_in = time.perf_counter() - outcome.started_at
        kind = _kind(response.request.url, hub_url)
        started = response.request.extensions.get("bench_t0")
        if kind is not None and started is not None:
            outcome.hub_requests.append((kind, time.perf_counter() - started))

    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        event_hooks={"request": [on_request], "response": [on_response]},
    )


XSRF = re.compile(r'xsrf_token: "([^"]+)"')


async def user_flow(
    hub: HubProcess, login: str, t0: float, delay: float, timeout: float
) -> UserOutcome:
    """Log in, spawn, follow the progress stream, load ``/api`` through the proxy."""
    await asyncio.sleep(max(0.0, t0 + delay - time.perf_counter()))
    arrived = time.perf_counter()
    outcome = UserOutcome(login, arrived - t0, started_at=arrived)
    async with _timed_client(hub.url, outcome, timeout) as http:
        try:
            await asyncio.wait_for(_flow(hub, http, login, arrived, outcome), timeout)
        except Exception as exc:  # an outcome to report, with its reason
            outcome.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return outcome


async def _flow(
    hub: HubProcess, http: httpx.AsyncClient, login: str, arrived: float, out: UserOutcome
) -> None:
    response = await hub.provider.browse(
        http, f"{hub.url}/hub/oauth_login?next=%2Fhub%2Fspawn", username=login
    )
    if out.logged_in is None:  # set when the hub's OAuth callback answered (_timed_client)
        raise RuntimeError(f"login failed: {response.status_code} at {response.url.path}")
    backoff = 1.0
    while True:
        if response.status_code == 429:
            # JupyterHub's concurrent_spawn_limit: the user waits as told (with jitter) and
            # asks again — also after a Launch from the "not running" page below
            out.refused += 1
            if out.refused > MAX_RETRIES:
                raise RuntimeError(f"refused {out.refused} times (429)")
            retry_after = float(response.headers.get("Retry-After") or backoff)
            await asyncio.sleep(retry_after * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 30.0)
            response = await hub.provider.browse(http, f"{hub.url}/hub/spawn")
        elif _not_running_page(response):
            # JupyterHub redirects here 1 s after /hub/spawn whether the spawn has begun or
            # not (it first re-checks the user with the provider: refresh_pre_spawn); a
            # slower re-check shows "not running" with a Launch button. The user reloads the
            # page a few times, then presses Launch: a re-check that failed (the provider
            # overloaded) started no spawn at all, and JupyterHub shows nothing else.
            # Pressing Launch at once answers 500 "pending spawn" once the first spawn has
            # begun (trial runs).
            out.bounced += 1
            if out.bounced > MAX_RETRIES:
                raise RuntimeError(f"'not running' {out.bounced} times")
            await asyncio.sleep(random.uniform(2.0, 5.0))  # reading the page
            if out.bounced % 4:
                # reload, following where it leads (/user/<name>/ once the server is ready)
                response = await hub.provider.browse(http, str(response.url))
            else:
                out.relaunched += 1
                response = await hub.provider.browse(http, f"{hub.url}/hub/spawn")
        else:
            break
    path = response.url.path
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} at {path}")
    if path.startswith("/hub/spawn-pending/"):
        found = XSRF.search(response.text)
        params = {"_xsrf": found.group(1)} if found else {}
        await _follow_progress(http, f"{hub.url}/hub/api/users/{login}/server/progress", params)
    elif not path.startswith(f"/user/{login}/"):
        raise RuntimeError(f"unexpected page {path}")
    api = await http.get(f"{hub.url}/user/{login}/api")
    expected = f"{namespace_for(login)}/jupyter-{login}"
    if api.status_code != 200 or api.headers.get("X-Standin-Pod") != expected:
        raise RuntimeError(
            f"/user/{login}/api: {api.status_code} from {api.headers.get('X-Standin-Pod')}"
        )
    out.ready = time.perf_counter() - arrived


def _not_running_page(response: httpx.Response) -> bool:
    """JupyterHub's "server not running" page at /hub/spawn-pending (no progress stream)."""
    return (
        response.status_code == 200
        and response.url.path.startswith("/hub/spawn-pending/")
        and "server/progress" not in response.text
    )


async def _follow_progress(http: httpx.AsyncClient, url: str, params: dict[str, str]) -> None:
    async with http.stream("GET", url, params=params) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"progress: {response.status_code} {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("failed"):
                raise RuntimeError(f"spawn failed: {event.get('message', '')[:200]}")
            if event.get("ready"):
                return
    raise RuntimeError("progress stream ended before ready")


# ------------------------------------------------------------------------ probes


class Prober:
    """Hub latency seen by someone who is not in the storm, every PROBE_INTERVAL s."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.samples: dict[str, list[float]] = {"api_version": [], "api_user": [], "home": []}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self.http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.http = httpx.AsyncClient(timeout=60)
        page = await self.hub.login(self.http, "prober")
        if page.status_code != 200:
            raise RuntimeError(f"the prober could not log in: {page.status_code}")
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.http is not None
        token = {"Authorization": f"token {self.hub.api_token}"}
        urls = {
            "api_version": (f"{self.hub.url}/hub/api/", {}),
            "api_user": (f"{self.hub.url}/hub/api/users/prober", token),
            "home": (f"{self.hub.url}/hub/home", {}),
        }
        while True:
            for key, (url, headers) in urls.items():
                started = time.perf_counter()
                try:
                    response = await self.http.get(url, headers=headers)
                    if response.status_code != 200:
                        self.errors += 1
                except httpx.HTTPError:
                    self.errors += 1
                self.samples[key].append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_INTERVAL)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.http is not None:
            await self.http.aclose()
        out: dict[str, Any] = {
            f"{key}_p95_ms": percentile(values, 95) * 1000 for key, values in self.samples.items()
        }
        out.update(
            {f"{key}_max_ms": max(values, default=0) * 1000 for key, values in self.samples.items()}
        )
        out["errors"] = self.errors
        out["samples"] = len(self.samples["home"])
        return out


class ReconcileWatch:
    """When each Profile, its Namespace and its ``default-editor`` were first seen."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.seen: dict[str, dict[str, float]] = {"profile": {}, "namespace": {}, "sa": {}}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        sources = {
            "profile": ("/apis/kubeflow.org/v1/profiles", ()),
            "namespace": ("/api/v1/namespaces", ()),
            "sa": (
                "/api/v1/serviceaccounts",
                (("fieldSelector", "metadata.name=default-editor"),),
            ),
        }
        synced = []
        for key, (path, query) in sources.items():
            event = asyncio.Event()
            synced.append(event)
            self._tasks.append(
                asyncio.create_task(
                    list_watch(
                        self.kube, path, self._handler(key), synced=event, query=query, name=key
                    )
                )
            )
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in synced)), 60)

    def _handler(self, key: str) -> Any:
        store = self.seen[key]

        async def handle(kind: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            name = meta.get("namespace") if key == "sa" else meta.get("name")
            if kind in ("ADDED", "MODIFIED") and name and name not in store:
                store[name] = time.perf_counter()

        return handle

    def forget(self, namespaces: set[str]) -> None:
        """Objects that existed before the storm: not the storm's reconciles."""
        for store in self.seen.values():
            for namespace in namespaces:
                store[namespace] = -1.0

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def latencies(self, namespaces: set[str]) -> list[float]:
        out = []
        for namespace in namespaces:
            created = self.seen["profile"].get(namespace)
            ns = self.seen["namespace"].get(namespace)
            sa = self.seen["sa"].get(namespace)
            if created and ns and sa and created > 0:
                out.append(max(ns, sa) - created)
        return out


# ------------------------------------------------------------------------ storms


async def stop_servers(stack: Stack, hub: HubProcess, logins: list[str]) -> int:
    """Every user's server stopped through the hub's API (a spawn still pending is waited
    for: JupyterHub refuses to stop it), and every pod gone.

    Returns the pods left behind: pods of the storm's users still there once the hub has no
    server running — a spawn that failed and whose clean-up failed too (under a saturated
    API server KubeSpawner's create can time out on the client after the server made the
    pod, and its deletes time out as well). The user's next spawn replaces such a pod (same
    name); the harness deletes them as admin so that the next storm starts clean."""
    semaphore = asyncio.Semaphore(16)
    deadline = time.monotonic() + 600
    async with hub.api() as api:

        async def one(login: str) -> None:
            async with semaphore:
                while time.monotonic() < deadline:
                    model = await api.get(f"/users/{login}")
                    server = (model.json().get("servers") or {}).get("")
                    if model.status_code == 404 or not server:
                        return
                    if server.get("pending") == "spawn":
                        await asyncio.sleep(1)
                        continue
                    response = await api.delete(f"/users/{login}/server")
                    if response.status_code in (202, 204):
                        return
                    if response.status_code != 400:  # 400: not running (any more)
                        raise RuntimeError(f"stop {login}: {response.status_code} {response.text}")
                    await asyncio.sleep(1)

        await asyncio.gather(*(one(login) for login in logins))
        while time.monotonic() < deadline:
            response = await api.get("/users", params={"state": "active", "limit": 2000})
            response.raise_for_status()
            if not response.json():
                break
            await asyncio.sleep(1)
        else:
            raise RuntimeError("servers still active 600 s after being stopped")
    assert stack.admin_kube is not None
    namespaces = {namespace_for(login) for login in logins}

    async def storm_pods() -> list[dict[str, Any]]:
        assert stack.admin_kube is not None
        pods = await stack.admin_kube.get("/api/v1/pods", query=[("labelSelector", POD_SELECTOR)])
        return [p for p in pods["items"] if p["metadata"]["namespace"] in namespaces]

    # the hub's own deletes first (a stopped server's pod is deleted asynchronously)
    settle = min(deadline, time.monotonic() + 120)
    while (left := await storm_pods()) and time.monotonic() < settle:
        await asyncio.sleep(1)
    left_behind = [p for p in left if not p["metadata"].get("deletionTimestamp")]
    for pod in left_behind:
        meta = pod["metadata"]
        with contextlib.suppress(KubeError):  # 404: gone meanwhile
            await stack.admin_kube.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            )
    while time.monotonic() < deadline:
        if not await storm_pods():
            return len(left_behind)
        await asyncio.sleep(1)
    raise RuntimeError("the storm's pods were not gone 600 s after the servers stopped")


async def storm(
    stack: Stack,
    bench: BenchHub,
    logins: list[str],
    *,
    label: str,
    rate: float | None = None,
    timeout: float = 1200.0,
    reconcile: ReconcileWatch | None = None,
) -> dict[str, Any]:
    """One storm of `logins` at `bench`'s running hub: all at once, or `rate` per second."""
    hub = bench.process
    assert hub is not None
    n = len(logins)
    prober = Prober(hub)
    await prober.start()
    pids = {
        "hub": hub.process.pid,
        "proxy": bench.proxy_pid or 0,
        "provider": stack.provider.process.pid if stack.provider.process else 0,
        **{k: v for k, v in stack.cluster.pids().items() if k != "hub (this process)"},
    }
    probe_before = await bench.read_probe()
    await bench.reset_probe()
    cpu_before = cpu_seconds(pids)
    started_wall = time.time()
    t0 = time.perf_counter()
    delays = [i / rate if rate else 0.0 for i in range(n)]
    outcomes = await asyncio.gather(
        *(
            user_flow(hub, login, t0, delay, timeout)
            for login, delay in zip(logins, delays, strict=True)
        )
    )
    wall = time.perf_counter() - t0
    cpu_after = cpu_seconds(pids)
    latency = await prober.stop()
    probe_after = await bench.read_probe(after=time.time())
    del started_wall
    requests = {
        k: probe_after["requests"].get(k, 0) - probe_before["requests"].get(k, 0)
        for k in set(probe_after["requests"]) | set(probe_before["requests"])
    }
    ready = [o.ready for o in outcomes if o.ready is not None]
    ready_at = [o.arrival + o.ready for o in outcomes if o.ready is not None]
    failed = [o for o in outcomes if o.ready is None]
    errors: dict[str, int] = {}
    for o in failed:
        key = re.sub(r"s\d+-\d+", "<user>", o.error or "?")
        errors[key] = errors.get(key, 0) + 1
    pages = [s for o in outcomes for kind, s in o.hub_requests if kind == "page"]
    apis = [s for o in outcomes for kind, s in o.hub_requests if kind == "api"]
    by_resource = {
        k: probe_after["requests_by_resource"].get(k, 0)
        - probe_before["requests_by_resource"].get(k, 0)
        for k in set(probe_after["requests_by_resource"])
    }
    result: dict[str, Any] = {
        "label": label,
        "method": bench.method,
        "users": n,
        "pattern": f"ramp {rate:g}/s" if rate else "all at once",
        "ready": len(ready),
        "failed": len(failed),
        "login_failed": sum(1 for o in outcomes if o.logged_in is None),
        "errors": sorted(errors.items(), key=lambda e: -e[1])[:6],
        "refused_429": sum(o.refused for o in outcomes),
        "not_running_pages": sum(o.bounced for o in outcomes),
        "users_bounced": sum(1 for o in outcomes if o.bounced),
        "relaunched": sum(o.relaunched for o in outcomes),
        "all_ready_seconds": max(ready_at, default=0.0),
        "wall_seconds": wall,
        "time_to_ready": summary(ready),
        "time_to_ready_p95": percentile(ready, 95),
        "time_to_ready_values": sorted(ready),
        "login_seconds": summary([o.logged_in for o in outcomes if o.logged_in is not None]),
        "user_page_p95_ms": percentile(pages, 95) * 1000,
        "user_api_p95_ms": percentile(apis, 95) * 1000,
        "prober": latency,
        "kube_requests": requests,
        "kube_requests_by_resource": {k: v for k, v in sorted(by_resource.items()) if v},
        "hub_loop": {k: v for k, v in probe_after.items() if k.startswith("loop_")},
        "hub_stalls": probe_after.get("stalls"),
        "cpu_seconds": {k: cpu_after[k] - cpu_before[k] for k in pids},
        "hub_peak_rss_kib": vm_hwm_kib(hub.process.pid),
        "proxy_peak_rss_kib": vm_hwm_kib(bench.proxy_pid),
        "proxy_routes": await bench.routes(),
    }
    result["kube_requests_per_spawn"] = report.requests_per_spawn(result)
    result["hub_cpu_ms_per_user"] = result["cpu_seconds"]["hub"] / n * 1000
    if reconcile is not None:
        values = reconcile.latencies({namespace_for(login) for login in logins})
        result["reconcile"] = {**summary(values), "p95": percentile(values, 95)}
    return result


async def method_storms(
    stack: Stack,
    method: str,
    logins: list[str],
    *,
    ramp: float | None,
    timeout: float,
    out: list[dict[str, Any]],
) -> None:
    """New users, then returning users (hub restarted), then optionally a returning ramp;
    each storm's result is appended to `out` as it ends, so a later failure keeps it."""
    n = len(logins)
    bench = BenchHub(method, stack.workdir / f"hub-{method}-{n}")
    reconcile = None
    if method == "dna":
        assert stack.admin_kube is not None
        reconcile = ReconcileWatch(stack.admin_kube)
        await reconcile.start()

    def keep_log(label: str) -> None:
        # each storm's hub writes a new jupyterhub.log: keep every one (output dir)
        log = bench.work / "jupyterhub.log"
        name = f"jupyterhub-{method}-{n}-{label.replace(' ', '-')}.log"
        (stack.workdir / name).write_bytes(log.read_bytes() if log.exists() else b"")

    try:
        await bench.start(stack)
        stack.log(f"full stack: {n} users, {method}, new")
        out.append(
            await storm(stack, bench, logins, label="new", timeout=timeout, reconcile=reconcile)
        )
        keep_log("new")
        stack.log(_line(out[-1]))
        if reconcile is not None:
            await reconcile.stop()
        phases = [("returning", None)] + ([("returning ramp", ramp)] if ramp else [])
        for label, rate in phases:
            out[-1]["pods_left_behind"] = await stop_servers(stack, bench.process, logins)  # type: ignore[arg-type]
            bench.stop()
            await bench.start(stack)
            stack.log(f"full stack: {n} users, {method}, {label}")
            out.append(await storm(stack, bench, logins, label=label, rate=rate, timeout=timeout))
            keep_log(label)
            stack.log(_line(out[-1]))
        out[-1]["pods_left_behind"] = await stop_servers(stack, bench.process, logins)  # type: ignore[arg-type]
    finally:
        if reconcile is not None:
            await reconcile.stop()
        keep_log("last")
        bench.stop()


def _line(r: dict[str, Any]) -> str:
    t = r["time_to_ready"]
    return (
        f"  {r['ready']}/{r['users']} ready, all in {r['all_ready_seconds']:.1f}s, "
        f"p50 {t.get('median', 0):.1f}s p95 {r['time_to_ready_p95']:.1f}s, "
        f"429s {r['refused_429']}, 'not running' {r['not_running_pages']}, "
        f"{r['kube_requests_per_spawn']:.1f} kube requests/spawn, "
        f"hub CPU {r['cpu_seconds']['hub']:.1f}s, stall {r['hub_loop']['loop_lag_max_ms']:.0f} ms "
        f"({r['hub_loop']['loop_stall_on_cpu_max_ms']:.0f} on CPU)"
    )


async def full_stack(
    cluster: Cluster,
    sizes: list[int],
    workdir: Path,
    *,
    ramp: float | None,
    ramp_sizes: set[int],
    timeout: float,
    log: Callable[[str], None],
    log_dir: Path,
) -> dict[str, Any]:
    run = secrets.token_hex(2)
    logins_by_size = {n: [f"s{run}{n}-{i}" for i in range(n)] for n in sizes}
    stack = await Stack.start(
        cluster, [u for users in logins_by_size.values() for u in users], workdir, log
    )
    out: dict[str, Any] = {"sizes": []}
    try:
        for n, logins in logins_by_size.items():
            rate = ramp if n in ramp_sizes else None
            entry: dict[str, Any] = {"users": n, "storms": []}
            out["sizes"].append(entry)
            for method in METHODS:
                storms: list[dict[str, Any]] = []
                try:
                    await method_storms(
                        stack, method, logins, ramp=rate, timeout=timeout, out=storms
                    )
                except Exception as error:
                    # what was measured stays; the cluster may still hold this size's
                    # servers, so no later storm would start clean: stop here
                    entry["failure"] = {"method": method, "error": str(error)}
                    log(f"full stack: {n} users, {method}: {error}; no larger size is run")
                    break
                finally:
                    entry["storms"] += [{**r, "method": method} for r in storms]
            entry["ratios"] = report.ratios(entry["storms"])
            if "failure" in entry:
                break
    finally:
        await stack.close()
        for path in workdir.glob("jupyterhub-*.log"):
            with contextlib.suppress(OSError):
                (log_dir / path.name).write_bytes(path.read_bytes())
        with contextlib.suppress(OSError):
            (log_dir / "provider.log").write_bytes(stack.provider.log_file.read_bytes())
    return out
