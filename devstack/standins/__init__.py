"""Stand-ins for the cluster components dna_hub's tests cannot run for real.

The test control plane (``devstack/controlplane.py``) is a real kube-apiserver +
etcd + kube-controller-manager, but there is no kubelet, no scheduler, no Kubeflow
profile controller and no PodDefault admission webhook. This package provides Python
stand-ins for those, each documented in its own module with what it mimics faithfully and
what it leaves out:

* :mod:`.profile_controller` — Kubeflow's profile controller (Profile -> namespace, RBAC,
  Istio AuthorizationPolicy, ResourceQuota);
* :mod:`.poddefault_webhook` — Kubeflow's PodDefault mutating admission webhook, served
  over real HTTPS and registered with the API server;
* :mod:`.kubelet` — a one-node scheduler + kubelet that runs a pod's first container as a
  local process on its own loopback address.

They run together in one separate process (``python -m devstack.standins``, see
:mod:`.__main__`), started by the ``standins`` fixture in
``devstack/standins_process.py``.

This module holds what they share: :class:`Kube`, a small dict-in/dict-out REST client on
top of kubernetes_asyncio (the stand-ins handle CRDs and core objects alike as plain
JSON, the way the API server serves them), a list+watch loop that survives API server
hiccups, bounded exponential backoff and a keyed work queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

log = logging.getLogger("standins")

#: Printed (followed by a JSON object) on stdout once every stand-in is ready.
READY_MARKER = "STANDINS-READY"

#: Field manager / user agent the stand-ins identify themselves with.
FIELD_MANAGER = "dna-hub-standins"

JSON = dict[str, Any]


def now_rfc3339() -> str:
    """Kubernetes ``metav1.Time`` format (second precision, UTC)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """Kubernetes ``metav1.MicroTime`` format (Lease renewTime)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeError(Exception):
    """A non-2xx answer from the API server, with its ``Status`` body when there is one."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.path = path
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

    @property
    def reason(self) -> str:
        return self.body.get("reason", "") if isinstance(self.body, dict) else ""


class Backoff:
    """Bounded exponential backoff with jitter: retries never hammer, never stall long."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        return delay * random.uniform(0.8, 1.2)

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.failures = 0


class Kube:
    """JSON-over-REST client on a kubernetes_asyncio ``ApiClient`` (explicit Configuration).

    Why not the generated API classes: the stand-ins deal with CRDs (Profile, PodDefault,
    AuthorizationPolicy) and must pass objects through unchanged; plain dicts keep every
    field the API server sent, including ones the models don't know.
    """

    def __init__(self, api: ApiClient, request_timeout: float = 30.0) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self._env_session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: Path, request_timeout: float = 30.0) -> Kube:
        """Client with credentials from ``kubeconfig`` only (never the global default),
        that reaches the API server directly (see :meth:`_ignore_environment`)."""
        from devstack.controlplane import load_configuration

        cfg = await load_configuration(kubeconfig)
        kube = cls(ApiClient(configuration=cfg), request_timeout)
        kube._ignore_environment()
        return kube

    def _ignore_environment(self) -> None:
        """Requests on a session that does not trust the environment.

        kubernetes_asyncio's session is made with ``trust_env=True``, so aiohttp looks up
        ``~/.netrc`` and the proxy variables in a worker thread on every request: two
        thread hand-offs per request, about 40 % of the stand-ins' CPU in a storm of pods.
        The stand-ins talk to the kubeconfig's server directly, never through a proxy.
        The new session shares the connector (TLS settings, pool) and does not own it; the
        original session, which does, is closed last by :meth:`close`.
        """
        rest = self.api.rest_client
        self._env_session = rest.pool_manager
        rest.pool_manager = aiohttp.ClientSession(
            connector=self._env_session.connector,
            connector_owner=False,
            trust_env=False,
            read_bufsize=2**21,  # as kubernetes_asyncio: large watch events
        )

    async def close(self) -> None:
        await self.api.close()
        if self._env_session is not None:
            await self._env_session.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] | None,
        body: Any,
        content_type: str,
        timeout: aiohttp.ClientTimeout | float,
    ) -> aiohttp.ClientResponse:
        return await self.api.call_api(
            path,
            method,
            query_params=list(query or []),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        """One request; returns the decoded JSON body or raises :class:`KubeError`."""
        resp = await self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=timeout or self.request_timeout,
        )
        try:
            raw = await resp.read()
        finally:
            resp.release()
        try:
            data: Any = json.loads(raw) if raw else {}
        except ValueError:
            data = raw.decode(errors="replace")
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, data, method, path)
        return data

    async def get(self, path: str, **kw: Any) -> JSON:
        return await self.request("GET", path, **kw)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Any, patch_type: str = "merge") -> JSON:
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self,
        path: str,
        resource_version: str,
        *,
        timeout_seconds: int = 120,
        query: Iterable[tuple[str, str]] = (),
    ) -> AsyncIterator[JSON]:
        """Yield watch events (``{"type", "object"}``) until the server ends the watch."""
        params = [
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
            *query,
        ]
        # The server closes the watch after timeoutSeconds; the client bound is a backstop.
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_connect=10)
        resp = await self._send(
            "GET", path, query=params, body=None, content_type="application/json", timeout=timeout
        )
        try:
            if resp.status != 200:
                raw = await resp.read()
                try:
                    data: Any = json.loads(raw)
                except ValueError:
                    data = raw.decode(errors="replace")
                raise KubeError(resp.status, data, "WATCH", path)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                # One split per chunk: a burst of events arriving together is not copied
                # once per event (quadratic in the chunk's size).
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.close()


EventHandler = Callable[[str, JSON], Awaitable[None]]


async def list_watch(
    kube: Kube,
    path: str,
    handler: EventHandler,
    *,
    synced: asyncio.Event | None = None,
    query: Iterable[tuple[str, str]] = (),
    name: str = "",
) -> None:
    """Informer-style loop: list, hand every item over as ADDED, then watch; forever.

    Reconnects after the server ends a watch, relists after ``410 Gone`` (compacted
    resourceVersion), and backs off (bounded) on any error, so a stand-in outlives API
    server restarts and network faults. A handler error is logged, never fatal.
    """
    query = list(query)
    label = name or path
    backoff = Backoff()
    resource_version: str | None = None
    while True:
        try:
            if resource_version is None:
                listing = await kube.get(path, query=query)
                resource_version = listing["metadata"]["resourceVersion"]
                for item in listing.get("items") or []:
                    await _dispatch(handler, "ADDED", item, label)
                if synced is not None:
                    synced.set()
            async for event in kube.watch(path, resource_version, query=query):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        resource_version = None
                        break
                    raise KubeError(obj.get("code", 500), obj, "WATCH", path)
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if kind != "BOOKMARK":
                    await _dispatch(handler, kind, obj, label)
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            if exc.status == 410:
                resource_version = None
                continue
            log.warning("%s: watch failed: %s", label, exc)
            await backoff.wait()
        except Exception as exc:
            log.warning("%s: watch failed: %r", label, exc)
            await backoff.wait()


async def _dispatch(handler: EventHandler, kind: str, obj: JSON, label: str) -> None:
    try:
        await handler(kind, obj)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s: handler failed on %s event", label, kind)


class WorkQueue:
    """Keyed work queue like client-go's: a key is never processed by two workers at once,
    adds while it is being processed are coalesced into one more run, failures requeue
    with per-key bounded exponential backoff."""

    def __init__(self, max_backoff: float = 10.0) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._backoffs: dict[str, Backoff] = {}
        self._max_backoff = max_backoff
        self._timers: set[asyncio.Task[None]] = set()

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self.add(key)

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def add_rate_limited(self, key: str) -> None:
        backoff = self._backoffs.setdefault(key, Backoff(0.1, self._max_backoff))
        self.add_after(key, backoff.next_delay())

    def forget(self, key: str) -> None:
        self._backoffs.pop(key, None)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)


def owner_reference(obj: JSON) -> JSON:
    """A controller ownerReference to ``obj`` (what controllerutil.SetControllerReference sets)."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
