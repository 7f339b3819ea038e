"""A fault-injecting HTTPS reverse proxy in front of the test API server.

Tests point a client (the hub, KubeSpawner) at the proxy instead of the API server to make
chosen requests fail the way a real cluster fails them — a ``409``/``429``/``500``/``504``
with a proper Kubernetes ``Status`` body, or a request that hangs — a set number of times,
and to count the requests the client really made.

* TLS on both sides: the proxy serves a certificate from its own throw-away CA
  (:attr:`FaultProxy.ca_file`, which the client must trust) and verifies the API server
  with the control plane's CA. Nothing is ever unverified.
* Credentials: the client's ``Authorization`` header is forwarded as is (bearer tokens,
  e.g. the hub's ServiceAccount token). TLS client certificates end at the proxy; give
  the proxy ``upstream_client_cert`` to present one upstream (``for_kubeconfig`` does that
  automatically for a kubeconfig with client-certificate credentials).
* Streaming responses (``watch=true``, ``follow=true``) are passed through chunk by chunk,
  without a total timeout; other requests have ``request_timeout``.
* It runs in its own thread with its own event loop, so neither the code under test nor
  the proxy can stall the other.

Example::

    with FaultProxy.for_kubeconfig(cp.hub_kubeconfig, cp.ca_file) as proxy:
        kubeconfig = proxy.write_kubeconfig(cp.hub_kubeconfig, tmp_path / "kubeconfig")
        rule = proxy.add_rule("POST", r"/api/v1/namespaces/[^/]+/pods$", status=500, times=1)
        ...
        assert rule.hits == 1
        assert proxy.count("POST", r"/pods$") == 2
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, reason: str | None = None, **details: Any) -> dict:
    """A ``v1 Status`` failure object as the API server sends it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


@dataclass
class Rule:
    """Inject a fault into requests matching ``method`` and ``path`` (regex, ``search``).

    ``action``: ``"status"`` answers ``status`` with a Status body; ``"timeout"`` holds the
    request ``hold_seconds`` then answers 504 (unless the client gave up first);
    ``"delay"`` holds it ``hold_seconds`` then forwards it. ``times=None`` means always.
    """

    method: str
    path: re.Pattern[str]
    action: str = "status"
    status: int = 500
    times: int | None = 1
    hold_seconds: float = 60.0
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None
    hits: int = 0
    #: Optional regex the query string must match too (e.g. ``watch=true``).
    query: re.Pattern[str] | None = None

    def matches(self, method: str, path: str, query: str = "") -> bool:
        return (
            self.method in ("*", method)
            and bool(self.path.search(path))
            and (self.query is None or bool(self.query.search(query)))
        )

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass(frozen=True)
class Record:
    """One request seen by the proxy and what the client got."""

    method: str
    path: str
    query: str
    status: int
    injected: str | None
    time: float = field(default_factory=time.monotonic)


class FaultProxy:
    """See the module docstring. ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        upstream: str,
        upstream_ca_file: Path,
        *,
        upstream_client_cert: tuple[Path, Path] | None = None,
        request_timeout: float = 60.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ca_file = Path(upstream_ca_file)
        self.upstream_client_cert = upstream_client_cert
        self.request_timeout = request_timeout
        self.host = host
        self.port = 0
        self._dir = Path(tempfile.mkdtemp(prefix="dna-hub-faultproxy-"))
        self.ca_file = self._dir / "ca.crt"
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._records: list[Record] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- construction helpers

    @classmethod
    def for_kubeconfig(cls, kubeconfig: Path, ca_file: Path, **kwargs: Any) -> FaultProxy:
        """A proxy to the kubeconfig's server; its client certificate, if any, is used upstream."""
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        ctx = _current_context(doc)
        server = _named(doc["clusters"], ctx["cluster"])["cluster"]["server"]
        user = _named(doc["users"], ctx["user"])["user"]
        proxy = cls(server, ca_file, **kwargs)
        if "client-certificate-data" in user or "client-certificate" in user:
            proxy.upstream_client_cert = (
                _material(user, "client-certificate", proxy._dir / "client.crt"),
                _material(user, "client-key", proxy._dir / "client.key"),
            )
        return proxy

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def write_kubeconfig(self, source: Path, dest: Path) -> Path:
        """A copy of ``source`` whose clusters point at the proxy (and trust its CA).

        Token credentials stay (they are forwarded); client certificates are dropped, the
        proxy presents its ``upstream_client_cert`` instead.
        """
        doc = yaml.safe_load(Path(source).read_text())
        for cluster in doc.get("clusters") or []:
            c = cluster["cluster"]
            c.pop("certificate-authority-data", None)
            c["certificate-authority"] = str(self.ca_file)
            c["server"] = self.url
        for user in doc.get("users") or []:
            for key in (
                "client-certificate",
                "client-certificate-data",
                "client-key",
                "client-key-data",
            ):
                user["user"].pop(key, None)
        dest.write_text(yaml.safe_dump(doc, sort_keys=False))
        dest.chmod(0o600)
        return dest

    # ---- rules and records (thread-safe; called from the test's thread)

    def add_rule(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        action: str = "status",
        times: int | None = 1,
        hold_seconds: float = 60.0,
        reason: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
        query: str | None = None,
    ) -> Rule:
        if action not in ("status", "timeout", "delay"):
            raise ValueError(f"unknown action {action!r}")
        if status == 429 and retry_after is None:
            retry_after = 1
        rule = Rule(
            method.upper(),
            re.compile(path),
            action,
            status,
            times,
            hold_seconds,
            reason,
            message,
            retry_after,
            query=re.compile(query) if query is not None else None,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, method: str = "*", path: str = "", *, injected: bool | None = None) -> int:
        """How many requests matched ``method`` (``*`` = any) and ``path`` (regex search)."""
        pattern = re.compile(path)
        return sum(
            1
            for r in self.records
            if method.upper() in ("*", r.method)
            and pattern.search(r.path)
            and (injected is None or (r.injected is not None) == injected)
        )

    def _take_rule(self, method: str, path: str, query: str = "") -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.exhausted and rule.matches(method, path, query):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, request: web.Request, status: int, injected: str | None) -> None:
        with self._lock:
            self._records.append(
                Record(request.method, request.path, request.query_string, status, injected)
            )

    # ---- lifecycle

    def start(self, timeout: float = 30) -> FaultProxy:
        self._make_serving_cert()
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name="faultproxy", daemon=True
        )
        self._thread.start()
        started.result(timeout=timeout)
        return self

    def stop(self, timeout: float = 15) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=timeout)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_serving_cert(self) -> None:
        from devstack.controlplane import CertificateAuthority

        ca = CertificateAuthority.create(self._dir, common_name="dna-hub-faultproxy-ca")
        self._serving = ca.issue(
            self._dir,
            "proxy",
            common_name="faultproxy",
            dns_names=["localhost"],
            ip_addresses=[self.host],
            server=True,
        )
        assert ca.cert_file == self.ca_file

    def _thread_main(self, started: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
            started.set_result(None)
        except BaseException as exc:
            started.set_exception(exc)
            return
        loop.run_forever()
        loop.close()

    async def _serve(self) -> None:
        upstream_ctx = ssl.create_default_context(cafile=str(self.upstream_ca_file))
        if self.upstream_client_cert:
            upstream_ctx.load_cert_chain(*map(str, self.upstream_client_cert))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_ctx),
            auto_decompress=False,
        )
        serving_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving_ctx.load_cert_chain(*map(str, self._serving))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=serving_ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ---- request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rule = self._take_rule(request.method, request.path, request.query_string)
        if rule is not None:
            if rule.action == "status":
                return self._inject(request, rule, rule.status)
            await asyncio.sleep(rule.hold_seconds)
            if rule.action == "timeout":
                return self._inject(request, rule, 504)
        return await self._forward(request, injected=rule.action if rule else None)

    def _inject(self, request: web.Request, rule: Rule, code: int) -> web.Response:
        reason = rule.reason
        if reason is None and code == 409:
            reason = "AlreadyExists" if request.method == "POST" else "Conflict"
        message = rule.message or f"fault injected by test proxy: {code} for {request.path}"
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after else {}
        self._record(request, code, rule.action)
        return web.Response(
            status=code,
            body=json.dumps(status_body(code, message, reason)),
            content_type="application/json",
            headers=headers,
        )

    async def _forward(self, request: web.Request, injected: str | None) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        streaming = request.query.get("watch") in ("1", "true") or request.query.get("follow") in (
            "1",
            "true",
        )
        timeout = aiohttp.ClientTimeout(
            total=None if streaming else self.request_timeout, sock_connect=10
        )
        url = self.upstream + str(request.rel_url)
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(request, 502, injected)
            return web.json_response(
                status_body(503, f"fault proxy: upstream unreachable: {exc!r}"), status=503
            )
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            self._record(request, upstream.status, injected)
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
        return response


def _current_context(doc: dict) -> dict:
    return _named(doc["contexts"], doc["current-context"])["context"]


def _named(items: list[dict], name: str) -> dict:
    for item in items:
        if item["name"] == name:
            return item
    raise KeyError(name)


def _material(user: dict, key: str, dest: Path) -> Path:
    if f"{key}-data" in user:
        dest.write_bytes(base64.b64decode(user[f"{key}-data"]))
        dest.chmod(0o600)
        return dest
    return Path(user[key])
