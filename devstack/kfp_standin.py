"""A local HTTP STAND-IN for the Kubeflow Pipelines v2beta1 REST API, for tests only.

This is not Kubeflow Pipelines: it runs nothing and keeps its objects in memory. It
answers just the endpoints the kfp 2.x SDK client and Kale's client call for health,
pipelines (list/get/upload/versions), experiments (list/get/create) and runs
(create/get/list), with JSON shaped like the real API so the generated
``kfp_server_api`` models deserialize. It records every request (method, path, query,
headers, body) so tests can assert what a client sent.

With ``auth=KubeAuth(...)`` it authenticates and authorizes like the multi-user KFP 2.x
API server: the ``Authorization: Bearer`` token is checked with a real ``TokenReview``
(audience ``pipelines.kubeflow.org``) → 401 if not authenticated; then every call below
with a real ``SubjectAccessReview`` for the reviewed user, groups, uid and extra, group
``pipelines.kubeflow.org``, version ``v1beta1``, no subresource, the namespace set →
403 if not allowed. Both with KFP's error body (``error``, ``code``, ``message``,
``details``). A ``kubeflow-userid`` header is never trusted (only recorded).

====================================  ==============  =======  ==========================
call                                  resource        verb     namespace
====================================  ==============  =======  ==========================
GET /experiments                      experiments     list     ``namespace`` query
POST /experiments                     experiments     create   body ``namespace``
GET /experiments/{id}                 experiments     get      the experiment's
POST /runs                            runs            create   the experiment's
GET /runs                             runs            list     ``namespace`` query /
                                                               the experiment's
GET /runs/{id}                        runs            get      the run's
POST /pipelines/upload[_version]      pipelines       create   ``namespace`` query / the
                                                               pipeline's
GET /pipelines[/{id}[/versions...]]   pipelines       list/get ``namespace`` query / the
                                                               pipeline's
====================================  ==============  =======  ==========================

Not done: a pipeline without a namespace is a *shared* pipeline and is not authorized
(as upstream, which lets anyone authenticated create and read shared pipelines); no
run is executed, no Argo workflow, no artifact store, no archive/delete/terminate, no
pagination beyond one page, no sort, filters only EQUALS.

Listens on ``host`` (127.0.0.1 by default; a pod network's gateway works before the
bridge exists, IP_FREEBIND) on a free port, in a daemon thread::

    with KfpStandIn() as kfp:
        ...  # point clients at kfp.url
        kfp.requests  # list[RecordedRequest]
        kfp.reviews  # list[Review]: who was authorized for what, and the verdict
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
_CREATED_AT = "2026-01-01T00:00:00Z"
KFP_AUDIENCE = "pipelines.kubeflow.org"
_REVIEW_TIMEOUT = 10.0


@dataclass(frozen=True)
class KubeAuth:
    """How the stand-in reaches the API server for its reviews (a client certificate).

    Real KFP uses its ServiceAccount, bound to a ClusterRole allowing ``create`` on
    ``tokenreviews`` and ``subjectaccessreviews``; give this identity the same.
    """

    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    audience: str = KFP_AUDIENCE

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, context=context, timeout=_REVIEW_TIMEOUT) as resp:
            return json.loads(resp.read())

    def token_review(self, token: str) -> dict[str, Any]:
        return self._post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]},
            },
        ).get("status", {})

    def access_review(
        self, user: dict[str, Any], namespace: str, verb: str, resource: str
    ) -> dict[str, Any]:
        spec = {
            "user": user.get("username", ""),
            "groups": user.get("groups") or [],
            "uid": user.get("uid", ""),
            "extra": user.get("extra") or {},
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": "pipelines.kubeflow.org",
                "version": "v1beta1",
                "resource": resource,
            },
        }
        return self._post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        ).get("status", {})


@dataclass(frozen=True)
class Review:
    """One authorization decision the stand-in made."""

    user: str
    namespace: str
    verb: str
    resource: str
    allowed: bool


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _kfp_error(status: int, message: str) -> dict[str, Any]:
    """The grpc-gateway error body of the KFP API server."""
    code = {401: 16, 403: 7, 404: 5, 400: 3}.get(status, 13)
    return {
        "error": message,
        "code": code,
        "message": message,
        "details": [{"@type": "type.googleapis.com/google.rpc.Status", "code": code,
                     "message": message}],
    }  # fmt: skip


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class _Store:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


class KfpStandIn:
    """The stand-in server; a context manager that starts and stops it."""

    def __init__(
        self, *, multi_user: bool = True, auth: KubeAuth | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.multi_user = multi_user
        self.auth = auth
        self.requests: list[RecordedRequest] = []
        self.reviews: list[Review] = []
        self.store = _Store()
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KfpStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # ---- routing ---------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: bytes,
        content_type: str,
        authorization: str = "",
    ) -> tuple[int, Any]:
        if self.auth is not None and path != API + "/healthz":
            try:
                self._authorize(method, path, query, body, authorization)
            except _Denied as denied:
                return denied.status, _kfp_error(denied.status, str(denied))
        with self._lock:
            # Like the real server (proto3 JSON), list answers omit an empty
            # next_page_token: clients page until it is absent (Kale loops on "").
            for pattern_method, pattern, action in _ROUTES:
                match = re.fullmatch(API + pattern, path)
                if match and pattern_method == method:
                    return action(self, query, body, content_type, **match.groupdict())
        return 404, {"code": 5, "message": f"stand-in: no route for {method} {path}"}

    # ---- authentication and authorization ------------------------------------------------

    def _authorize(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, authorization: str
    ) -> None:
        assert self.auth is not None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Denied(401, "Unauthenticated: no bearer token in the Authorization header")
        try:
            status = self.auth.token_review(token.strip())
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise _Denied(500, f"TokenReview failed: {exc}") from exc
        if not status.get("authenticated"):
            raise _Denied(
                401,
                "Unauthenticated: failed to authenticate the token with TokenReview "
                f"(audience {self.auth.audience}): {status.get('error', 'not authenticated')}",
            )
        user = status.get("user") or {}
        target = self._target(method, path, query, body)
        if target is None:  # shared pipeline: not authorized upstream either
            return
        resource, verb, namespace = target
        try:
            verdict = self.auth.access_review(user, namespace, verb, resource)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise _Denied(500, f"SubjectAccessReview failed: {exc}") from exc
        allowed = bool(verdict.get("allowed"))
        with self._lock:
            self.reviews.append(
                Review(user.get("username", ""), namespace, verb, resource, allowed)
            )
        if not allowed:
            raise _Denied(
                403,
                f"PermissionDenied: User '{user.get('username', '')}' is not authorized with "
                f"reason: {verdict.get('reason', '')} (request: ResourceAttributes{{Namespace:"
                f"{namespace},Verb:{verb},Group:pipelines.kubeflow.org,Version:v1beta1,"
                f"Resource:{resource}}})",
            )

    def _target(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[str, str, str] | None:
        """(resource, verb, namespace) of a call, None for a shared (namespace-less) pipeline."""
        rel = path.removeprefix(API)
        parts = [p for p in rel.split("/") if p]
        resource = parts[0] if parts else ""
        if resource not in ("experiments", "runs", "pipelines"):
            raise _Denied(404, f"stand-in: no route for {method} {path}")
        with self._lock:
            store = self.store
            if resource == "experiments":
                if method == "POST":
                    data = json.loads(body or b"{}")
                    return "experiments", "create", data.get("namespace") or ""
                if len(parts) > 1:
                    exp = store.experiments.get(parts[1]) or {}
                    return "experiments", "get", exp.get("namespace", "")
                return "experiments", "list", _first(query, "namespace") or ""
            if resource == "runs":
                if method == "POST":
                    data = json.loads(body or b"{}")
                    exp = store.experiments.get(data.get("experiment_id", "")) or {}
                    if not exp:
                        raise _Denied(
                            400, "InvalidInputError: a run needs an existing experiment_id"
                        )
                    return "runs", "create", exp.get("namespace", "")
                if len(parts) > 1:
                    run = store.runs.get(parts[1].split(":")[0]) or {}
                    exp = store.experiments.get(run.get("experiment_id", "")) or {}
                    return "runs", "get", exp.get("namespace", "")
                if _first(query, "experiment_id"):
                    exp = store.experiments.get(_first(query, "experiment_id") or "") or {}
                    return "runs", "list", exp.get("namespace", "")
                return "runs", "list", _first(query, "namespace") or ""
            # pipelines
            if method == "POST":
                pipeline_id = _first(query, "pipelineid") or _first(query, "pipeline_id")
                if pipeline_id:
                    namespace = (store.pipelines.get(pipeline_id) or {}).get("namespace", "")
                else:
                    namespace = _first(query, "namespace") or ""
                return ("pipelines", "create", namespace) if namespace else None
            if len(parts) > 1:
                namespace = (store.pipelines.get(parts[1]) or {}).get("namespace", "")
                return ("pipelines", "get", namespace) if namespace else None
            namespace = _first(query, "namespace") or ""
            return ("pipelines", "list", namespace) if namespace else None

    # ---- endpoints -------------------------------------------------------------------

    def _healthz(self, *_: Any) -> tuple[int, Any]:
        return 200, {
            "commit_sha": "stand-in",
            "tag_name": "2.16.0-standin",
            "multi_user": self.multi_user,
        }

    def _list_pipelines(self, query: dict[str, list[str]], *_: Any) -> tuple[int, Any]:
        items = _filtered(list(self.store.pipelines.values()), query)
        return 200, {"pipelines": items, "total_size": len(items)}

    def _get_pipeline(self, *_: Any, pipeline_id: str) -> tuple[int, Any]:
        pipeline = self.store.pipelines.get(pipeline_id)
        return (200, pipeline) if pipeline else _not_found("pipeline", pipeline_id)

    def _upload_pipeline(
        self, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, Any]:
        name = _first(query, "display_name") or _first(query, "name") or "pipeline"
        pipeline_id = str(uuid.uuid4())
        pipeline = {
            "pipeline_id": pipeline_id,
            "display_name": name,
            "name": name,
            "created_at": _CREATED_AT,
        }
        if namespace := _first(query, "namespace"):
            pipeline["namespace"] = namespace
        self.store.pipelines[pipeline_id] = pipeline
        self.store.versions[pipeline_id] = [
            self._new_version(pipeline_id, name, _uploaded_spec(body, content_type))
        ]
        return 200, pipeline

    def _upload_version(
        self, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, Any]:
        pipeline_id = _first(query, "pipelineid") or _first(query, "pipeline_id") or ""
        if pipeline_id not in self.store.pipelines:
            return _not_found("pipeline", pipeline_id)
        name = _first(query, "name") or _first(query, "display_name") or "version"
        version = self._new_version(pipeline_id, name, _uploaded_spec(body, content_type))
        self.store.versions[pipeline_id].append(version)
        return 200, version

    def _list_versions(self, *_: Any, pipeline_id: str) -> tuple[int, Any]:
        versions = self.store.versions.get(pipeline_id, [])
        return 200, {"pipeline_versions": versions, "total_size": len(versions)}

    def _get_version(self, *_: Any, pipeline_id: str, version_id: str) -> tuple[int, Any]:
        for version in self.store.versions.get(pipeline_id, []):
            if version["pipeline_version_id"] == version_id:
                return 200, version
        return _not_found("pipeline version", version_id)

    def _list_experiments(self, query: dict[str, list[str]], *_: Any) -> tuple[int, Any]:
        items = _filtered(list(self.store.experiments.values()), query)
        return 200, {"experiments": items, "total_size": len(items)}

    def _create_experiment(self, _query: Any, body: bytes, *_: Any) -> tuple[int, Any]:
        experiment = dict(json.loads(body or b"{}"))
        experiment.update(
            experiment_id=str(uuid.uuid4()), created_at=_CREATED_AT, storage_state="AVAILABLE"
        )
        self.store.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def _get_experiment(self, *_: Any, experiment_id: str) -> tuple[int, Any]:
        experiment = self.store.experiments.get(experiment_id)
        return (200, experiment) if experiment else _not_found("experiment", experiment_id)

    def _create_run(self, _query: Any, body: bytes, *_: Any) -> tuple[int, Any]:
        run = dict(json.loads(body or b"{}"))
        run.update(
            run_id=str(uuid.uuid4()),
            created_at=_CREATED_AT,
            state="PENDING",
            storage_state="AVAILABLE",
        )
        self.store.runs[run["run_id"]] = run
        return 200, run

    def _get_run(self, *_: Any, run_id: str) -> tuple[int, Any]:
        run = self.store.runs.get(run_id)
        return (200, run) if run else _not_found("run", run_id)

    def _list_runs(self, query: dict[str, list[str]], *_: Any) -> tuple[int, Any]:
        items = _filtered(list(self.store.runs.values()), query)
        return 200, {"runs": items, "total_size": len(items)}

    def _new_version(self, pipeline_id: str, name: str, spec: Any) -> dict[str, Any]:
        return {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "created_at": _CREATED_AT,
            "pipeline_spec": spec,
        }


_ROUTES = [
    ("GET", r"/healthz", KfpStandIn._healthz),
    ("GET", r"/pipelines", KfpStandIn._list_pipelines),
    ("POST", r"/pipelines/upload", KfpStandIn._upload_pipeline),
    ("POST", r"/pipelines/upload_version", KfpStandIn._upload_version),
    ("GET", r"/pipelines/(?P<pipeline_id>[^/]+)/versions", KfpStandIn._list_versions),
    (
        "GET",
        r"/pipelines/(?P<pipeline_id>[^/]+)/versions/(?P<version_id>[^/]+)",
        KfpStandIn._get_version,
    ),
    ("GET", r"/pipelines/(?P<pipeline_id>[^/]+)", KfpStandIn._get_pipeline),
    ("GET", r"/experiments", KfpStandIn._list_experiments),
    ("POST", r"/experiments", KfpStandIn._create_experiment),
    ("GET", r"/experiments/(?P<experiment_id>[^/]+)", KfpStandIn._get_experiment),
    ("POST", r"/runs", KfpStandIn._create_run),
    ("GET", r"/runs", KfpStandIn._list_runs),
    ("GET", r"/runs/(?P<run_id>[^/:]+)", KfpStandIn._get_run),
]


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _not_found(kind: str, ident: str) -> tuple[int, Any]:
    return 404, {"code": 5, "message": f"stand-in: {kind} {ident!r} not found"}


def _filtered(items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Apply the EQUALS predicates of a KFP ``filter`` (what the SDK's name look-ups send)."""
    raw = _first(query, "filter")
    if not raw:
        return items
    predicates = json.loads(raw).get("predicates", [])
    for predicate in predicates:
        if predicate.get("operation") not in {"EQUALS", 1}:
            continue
        key = predicate.get("key")
        wanted = predicate.get("string_value", predicate.get("stringValue"))
        items = [item for item in items if item.get(key) == wanted]
    return items


def _uploaded_spec(body: bytes, content_type: str) -> Any:
    """A summary of the uploaded package (the stand-in does not compile or parse it)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts() if message.is_multipart() else []:
        payload = part.get_payload(decode=True) or b""
        return {"uploaded_bytes": len(payload), "filename": part.get_filename()}
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # A pod network's gateway address exists only once its bridge is up.
        self.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        super().server_bind()


def _handler_for(standin: KfpStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = parse_qs(parts.query, keep_blank_values=True)
            standin.record(
                RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=query,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                )
            )
            status, payload = standin.handle(
                self.command,
                parts.path,
                query,
                body,
                self.headers.get("Content-Type", ""),
                self.headers.get("Authorization", ""),
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the recorded requests are the log

    return Handler


def security_contexts(node: Any) -> Iterator[dict[str, Any]]:
    """Every security context anywhere in a submitted run or pipeline (either spelling)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"securityContext", "security_context"} and isinstance(value, dict):
                yield value
            else:
                yield from security_contexts(value)
    elif isinstance(node, list):
        for item in node:
            yield from security_contexts(item)
