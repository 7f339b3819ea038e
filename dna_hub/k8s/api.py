"""Generic Kubernetes object access for rendered manifests, over kubernetes_asyncio's ApiClient.

The typed kubernetes_asyncio APIs need a method per kind; profile templates can render any
kind, so this speaks the REST conventions directly (one path scheme for every kind), through
the same ApiClient — same configuration, authentication and connection pool — that
KubeSpawner uses. Every request has a timeout, retryable failures are retried with bounded
backoff (:mod:`dna_hub.k8s.retry`), and requests are counted so tests and benchmarks can
assert what a spawn costs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.k8s.concurrency import LoopLimit
from dna_hub.k8s.retry import RetryPolicy, is_retryable, retrying
from dna_hub.policy import yaml_json

__all__ = ["Kind", "KubeApi"]


@dataclass(frozen=True)
class Kind:
    """Where objects of one kind live in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = (
            f"/api/{self.api_version}"
            if "/" not in self.api_version
            else (f"/apis/{self.api_version}")
        )
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is required")
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def path_all(self) -> str:
        """Objects of this kind in every namespace (or the cluster-scoped collection)."""
        group = "/api" if "/" not in self.api_version else "/apis"
        return f"{group}/{self.api_version}/{self.plural}"


def _kinds(*kinds: Kind) -> dict[tuple[str, str], Kind]:
    return {(k.api_version, k.kind): k for k in kinds}


#: Kinds dna_hub reads or renders by default; any other kind is found by discovery once.
KNOWN_KINDS: dict[tuple[str, str], Kind] = _kinds(
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "ServiceAccount", "serviceaccounts", namespaced=True),
    Kind("v1", "Pod", "pods", namespaced=True),
    Kind("v1", "ResourceQuota", "resourcequotas", namespaced=True),
    Kind("v1", "ConfigMap", "configmaps", namespaced=True),
    Kind("v1", "LimitRange", "limitranges", namespaced=True),
    Kind("v1", "Event", "events", namespaced=True),
    Kind("kubeflow.org/v1", "Profile", "profiles", namespaced=False),
    Kind("kubeflow.org/v1alpha1", "PodDefault", "poddefaults", namespaced=True),
    Kind("security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies", namespaced=True),
    Kind("security.istio.io/v1beta1", "AuthorizationPolicy", "authorizationpolicies", True),
    Kind("networking.istio.io/v1alpha3", "EnvoyFilter", "envoyfilters", namespaced=True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", namespaced=True),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", namespaced=True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", namespaced=True),
    Kind("kueue.x-k8s.io/v1beta2", "LocalQueue", "localqueues", namespaced=True),
    Kind("kueue.x-k8s.io/v1beta2", "Workload", "workloads", namespaced=True),
    # Kueue's visibility API (aggregated): a LocalQueue's pending workloads and their places
    Kind("visibility.kueue.x-k8s.io/v1beta2", "LocalQueue", "localqueues", namespaced=True),
)

NAMESPACE = KNOWN_KINDS[("v1", "Namespace")]
ROLE_BINDING = KNOWN_KINDS[("rbac.authorization.k8s.io/v1", "RoleBinding")]
AUTHORIZATION_POLICY = KNOWN_KINDS[("security.istio.io/v1", "AuthorizationPolicy")]
SERVICE_ACCOUNT = KNOWN_KINDS[("v1", "ServiceAccount")]
PROFILE = KNOWN_KINDS[("kubeflow.org/v1", "Profile")]
WORKLOAD = KNOWN_KINDS[("kueue.x-k8s.io/v1beta2", "Workload")]
EVENT = KNOWN_KINDS[("v1", "Event")]
QUEUE_VISIBILITY = KNOWN_KINDS[("visibility.kueue.x-k8s.io/v1beta2", "LocalQueue")]

_JSON = {"Accept": "application/json"}


class KubeApi:
    """Counted, timed, retrying access to Kubernetes objects as plain dicts."""

    #: Kinds found by discovery, shared by every instance (discovery data is per cluster).
    _discovered: ClassVar[dict[tuple[str, str], Kind]] = {}
    #: At most this many watches open at once per event loop (see ``watch_slots``).
    max_watches: int = 40
    #: Shared by every KubeApi in the same event loop.
    watch_limit: ClassVar[LoopLimit] = LoopLimit()

    def __init__(
        self,
        api_client: ApiClient,
        *,
        request_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_watches: int | None = None,
    ) -> None:
        self.api_client = api_client
        if max_watches is not None:
            self.max_watches = max_watches
        self.request_timeout = request_timeout
        self.retry = retry or RetryPolicy()
        #: HTTP requests sent, retries included.
        self.requests = 0

    def watch_slots(self) -> asyncio.Semaphore:
        """The running loop's watch slots: a watch holds a pooled connection for minutes,
        and the pool (kubernetes_asyncio's default: 100) also serves every short request
        of the hub, KubeSpawner's included; unbounded watches would starve them."""
        return self.watch_limit.get(self.max_watches)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        retry_conflicts: bool = True,
    ) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            self.requests += 1
            return await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={**_JSON, "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.request_timeout,
            )

        def retryable(error: BaseException) -> bool:
            if not retry_conflicts and getattr(error, "status", None) == 409:
                return False
            return is_retryable(error)

        return await retrying(attempt, self.retry, what=f"{method} {path}", retryable=retryable)

    async def kind_for(self, api_version: str, kind: str) -> Kind:
        """The REST location of a kind: known, or discovered once from the API server."""
        key = (api_version, kind)
        found = KNOWN_KINDS.get(key) or self._discovered.get(key)
        if found:
            return found
        prefix = "/apis/" if "/" in api_version else "/api/"
        listing = await self._call("GET", f"{prefix}{api_version}")
        for resource in listing.get("resources", []):
            if resource.get("kind") == kind and "/" not in resource.get("name", ""):
                found = Kind(api_version, kind, resource["name"], bool(resource["namespaced"]))
                self._discovered[key] = found
                return found
        raise ValueError(f"the API server does not serve {kind} in {api_version}")

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return await self._call("GET", kind.path(namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def get_subresource(
        self, kind: Kind, name: str, namespace: str | None, subresource: str
    ) -> dict | None:
        """A subresource of an object (e.g. Kueue's ``pendingworkloads``), or None on 404."""
        try:
            return await self._call("GET", kind.path(namespace, name) + f"/{subresource}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def create(self, kind: Kind, obj: Mapping[str, Any], *, field_manager: str) -> dict:
        namespace = obj["metadata"].get("namespace")
        return await self._call(
            "POST", kind.path(namespace), query=[("fieldManager", field_manager)], body=dict(obj)
        )

    async def apply(
        self,
        obj: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = True,
        dry_run: bool = False,
    ) -> dict:
        """Server-side apply: idempotent, and fields set by others are left alone.

        Without ``force``, a field another manager set to a different value is a 409
        conflict, which is an answer, not a transient failure: it is not retried.
        ``dry_run``: the server runs the whole request (admission included) and answers
        with the object it would store, storing nothing.
        """
        kind = await self.kind_for(obj["apiVersion"], obj["kind"])
        metadata = obj["metadata"]
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return await self._call(
            "PATCH",
            kind.path(metadata.get("namespace"), metadata["name"]),
            query=query,
            # The API server parses this body as YAML: serialised here so that any name (an
            # emoji's surrogate-pair escape is invalid YAML) arrives verbatim. With the charset
            # parameter, which the server ignores, the client sends these bytes unchanged.
            body=yaml_json.dumps(dict(obj)).encode(),
            content_type="application/apply-patch+yaml; charset=utf-8",
            retry_conflicts=force,
        )

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> dict:
        """List objects; a namespaced kind without ``namespace``: across all namespaces."""
        query = [("fieldSelector", field_selector)] if field_selector else []
        if label_selector:
            query.append(("labelSelector", label_selector))
        path = kind.path(namespace) if namespace or not kind.namespaced else kind.path_all()
        return await self._call("GET", path, query=query)

    async def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        dry_run: bool = False,
    ) -> bool:
        """Delete (background propagation); False when it was already gone.

        ``uid``/``resource_version`` are preconditions: the server refuses (409) to delete
        an object that was replaced or changed since it was read — an answer, not retried.
        """
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if preconditions:
            body["preconditions"] = preconditions
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            await self._call(
                "DELETE",
                kind.path(namespace, name),
                body=body,
                retry_conflicts=not preconditions,
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        field_selector: str,
        resource_version: str | None,
        timeout_seconds: int,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events from ``resource_version`` until the server ends the watch.

        ``resource_version`` None: "get state and start at most recent" — the server first
        sends a synthetic ADDED event for each object that exists, then the changes (so one
        request replaces a list and a watch). The server closes the stream after
        ``timeout_seconds``; the client gives it a little longer, so a dead connection cannot
        hang the caller.
        """
        self.requests += 1
        query = [("watch", "true"), ("fieldSelector", field_selector)]
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        query += [("timeoutSeconds", str(timeout_seconds)), ("allowWatchBookmarks", "true")]
        response = await self.api_client.call_api(
            kind.path(namespace),
            "GET",
            query_params=query,
            header_params=dict(_JSON),
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                total=timeout_seconds + 5, sock_connect=self.request_timeout
            ),
        )
        try:
            if not 200 <= response.status <= 299:
                body = await response.read()
                error = ApiException(status=response.status, reason=response.reason)
                error.body = body
                raise error
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release()
