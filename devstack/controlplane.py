"""A real, local Kubernetes control plane for dna_hub's tests.

Why a real one: dna_hub's whole job is to talk to the Kubernetes API as the hub's
ServiceAccount — create Profiles, PodDefaults and pods in other namespaces. A mock would
accept what a real API server rejects (schema violations of the real CRDs, RBAC denials,
the ServiceAccount admission plugin refusing a pod whose ServiceAccount does not exist yet),
so the tests run against etcd 3.7.3 + kube-apiserver, kube-controller-manager and
kube-scheduler 1.37.2 on 127.0.0.1, with TLS verified everywhere, Node+RBAC authorization
and the API server's default admission plugins (ServiceAccount, PodSecurity,
ValidatingAdmissionPolicy, the admission webhooks, ...). The binaries come from
``devstack/gobuild/build.sh`` (built once from the Go module proxy at the versions pinned
in ``devstack/gobuild/go.mod``, cached; see ``devstack/gobuild/NOTES.md`` for the flags).

When ``DNA_HUB_TEST_KUBECONFIG`` names an existing cluster (kind, k3d, ...), that cluster is
used as admin instead and no process is started; the CRDs, Kubeflow's ClusterRoles and the
hub identity are still installed there.

Debugging by hand::

    python -m devstack.controlplane up

starts everything, prints ``export KUBECONFIG=...`` and stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import copy
import datetime as dt
import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from devstack import paths

KUBE_VERSION = "1.37.2"
ETCD_VERSION = "3.7.3"
BUILD_SCRIPT = Path(__file__).resolve().parent / "gobuild" / "build.sh"
#: What build.sh builds by default; all of it is started here (kubectl: for people and tests).
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
HUB_RBAC_FILE = paths.REPO_ROOT / "helm-values" / "hub-rbac.yaml"
#: The sync CronJob's identity and RBAC (the CronJob itself is not run here).
SYNC_FILE = paths.REPO_ROOT / "helm-values" / "dna-hub-sync.yaml"
#: The admission guards that confine the hub and the sync job: applied at start, so every
#: test that acts as either identity is held to them, as a deployment is.
GUARD_FILES = tuple(
    paths.REPO_ROOT / "helm-values" / name
    for name in ("hub-namespace-guard.yaml", "hub-object-guard.yaml")
)
SYNC_SERVICE_ACCOUNT = "dna-hub-sync"

HUB_NAMESPACE = "jupyterhub"
HUB_SERVICE_ACCOUNT = "hub"
#: Issuer and audience of ServiceAccount tokens, as on a stock cluster.
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FIELD_MANAGER = "dna-hub-tests"
#: Lifetime of the hub's token (TokenRequest); a test session never lasts longer.
HUB_TOKEN_SECONDS = 24 * 3600
#: Upper bound for each startup phase; generous for a loaded CI machine.
START_TIMEOUT = float(os.environ.get("DNA_HUB_KUBE_START_TIMEOUT", "90"))
#: Timeout of every single HTTP request made here.
REQUEST_TIMEOUT = 30

CRD_NAMES = (
    "profiles.kubeflow.org",
    "poddefaults.kubeflow.org",
    "authorizationpolicies.security.istio.io",
    "envoyfilters.networking.istio.io",
    "peerauthentications.security.istio.io",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message carries the relevant log lines."""


# --------------------------------------------------------------------------- binaries


@functools.cache
def bin_dir() -> Path:
    """Where build.sh puts the binaries for the current pins (``build.sh --bin-dir``).

    The directory is named by a hash of the pins and the Go version, so only the script
    knows it; asking it builds nothing.
    """
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--bin-dir"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        raise ControlPlaneError(f"{BUILD_SCRIPT} --bin-dir failed: {exc} {stderr}".strip()) from exc
    return Path(out.strip())


def binaries() -> dict[str, Path]:
    """Paths of the control plane's binaries (all built by devstack/gobuild/build.sh)."""
    try:
        directory = bin_dir()
    except ControlPlaneError:
        # No go on PATH: report every binary as missing rather than fail here.
        directory = paths.CACHE_DIR / "gobuild" / "unknown" / "bin"
    return {name: directory / name for name in BINARIES}


def missing_binaries() -> list[Path]:
    """The binaries that are not installed yet (empty when the control plane can start)."""
    return [p for p in binaries().values() if not os.access(p, os.X_OK)]


def external_kubeconfig() -> Path | None:
    """The existing cluster named by ``DNA_HUB_TEST_KUBECONFIG``, if any."""
    value = os.environ.get("DNA_HUB_TEST_KUBECONFIG")
    return Path(value).expanduser().resolve() if value else None


# --------------------------------------------------------------------------- PKI


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> Path:
    """Write key material readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """The throw-away CA of one control plane; also signs certs for stand-ins (webhooks)."""

    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, common_name: str = "dna-hub-test-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _utcnow()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        cert_file = directory / "ca.crt"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = _write_private(directory / "ca.key", _key_pem(key))
        return cls(cert_file, key_file)

    def issue(
        self,
        directory: Path,
        stem: str,
        *,
        common_name: str,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate; returns ``(cert_file, key_file)`` in ``directory``.

        Public so that stand-ins (e.g. an admission webhook the API server calls over
        TLS) can get a serving certificate the API server already trusts.
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = _utcnow()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        cert_file = directory / f"{stem}.crt"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = _write_private(directory / f"{stem}.key", _key_pem(key))
        return cert_file, key_file


def _service_account_keys(directory: Path) -> tuple[Path, Path]:
    """RSA pair that signs (private) and verifies (public) ServiceAccount tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = _write_private(directory / "sa.key", _key_pem(key))
    public = directory / "sa.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


# --------------------------------------------------------------------------- kubeconfig


def _write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    credentials: dict[str, str],
    namespace: str = "default",
) -> Path:
    """Write a self-contained kubeconfig (data embedded: it can be copied and used as is)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dna-hub-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "dna-hub-test", "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    _write_private(path, yaml.safe_dump(doc, sort_keys=False).encode())
    return path


def _file_data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def load_configuration(kubeconfig: Path, temp_dir: Path | None = None) -> Configuration:
    """A Configuration loaded from ``kubeconfig`` — explicitly, never the global default.

    The global default belongs to the hub (KubeSpawner loads it from ``KUBECONFIG``); the
    admin identity must never leak into it.
    """
    cfg = Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig),
        client_configuration=cfg,
        persist_config=False,
        temp_file_path=str(temp_dir) if temp_dir else None,
    )
    if not cfg.verify_ssl:
        raise ControlPlaneError(f"{kubeconfig} disables TLS verification; refusing to use it")
    return cfg


# --------------------------------------------------------------------------- applying YAML


def _api_base(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


async def _get_json(api: ApiClient, path: str, query: list[tuple[str, str]] | None = None) -> Any:
    return await api.call_api(
        path,
        "GET",
        query_params=query or [],
        header_params={"Accept": "application/json"},
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=REQUEST_TIMEOUT,
    )


async def resource_for(
    api: ApiClient, api_version: str, kind: str, *, timeout: float = 30
) -> tuple[str, bool]:
    """``(plural, namespaced)`` of ``kind`` via discovery; waits for a just-added CRD."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = await _get_json(api, _api_base(api_version))
            for res in doc.get("resources", []):
                if res.get("kind") == kind and "/" not in res["name"]:
                    return res["name"], bool(res.get("namespaced"))
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"API server does not serve {kind} in {api_version}")
        await asyncio.sleep(0.2)


async def apply_object(
    api: ApiClient, obj: dict[str, Any], *, field_manager: str = FIELD_MANAGER
) -> dict[str, Any]:
    """Server-side apply one object (any kind, found by discovery); returns the result.

    Server-side apply so that the API server, not this helper, merges and validates —
    the same path ``kubectl apply --server-side`` takes.
    """
    api_version, kind = obj["apiVersion"], obj["kind"]
    meta = obj.get("metadata") or {}
    plural, namespaced = await resource_for(api, api_version, kind)
    path = _api_base(api_version)
    if namespaced:
        path += f"/namespaces/{meta.get('namespace') or 'default'}"
    path += f"/{plural}/{meta['name']}"
    return await api.call_api(
        path,
        "PATCH",
        query_params=[("fieldManager", field_manager), ("force", "true")],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=obj,
        response_types_map={200: "object", 201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=REQUEST_TIMEOUT,
    )


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a manifest file."""
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


async def apply_manifest(api: ApiClient, path: Path) -> list[dict[str, Any]]:
    """Server-side apply every object of a manifest file, in order."""
    return [await apply_object(api, obj) for obj in load_manifests(path)]


async def wait_crds_established(api: ApiClient, names: Iterable[str], timeout: float) -> None:
    """Wait until every CRD is Established, i.e. its resource is actually served."""
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            crd = await ext.read_custom_resource_definition(name, _request_timeout=REQUEST_TIMEOUT)
            conditions = (crd.status and crd.status.conditions) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"CRDs not Established after {timeout}s: {sorted(pending)}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fast_tmp() -> str | None:
    """RAM-backed temp dir when available: etcd fsyncs every write and tests write a lot."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------- the control plane


@dataclass
class ControlPlane:
    """A running control plane (or an existing cluster) with an admin and a hub identity.

    The API is used by tests and stand-ins alike; keep it stable.
    """

    server: str
    ca_file: Path
    admin_kubeconfig: Path
    hub_kubeconfig: Path
    workdir: Path
    hub_namespace: str = HUB_NAMESPACE
    hub_service_account: str = HUB_SERVICE_ACCOUNT
    hub_token: str = field(default="", repr=False)
    sync_service_account: str = SYNC_SERVICE_ACCOUNT
    sync_token: str = field(default="", repr=False)
    #: time.monotonic() when the guards were applied (the API server loads them moments
    #: later, from its own informer)
    guards_applied_at: float = 0.0
    #: True when using an existing cluster (``DNA_HUB_TEST_KUBECONFIG``): nothing to stop.
    external: bool = False
    #: The CA the API server's serving cert and client certs chain to (None when external).
    ca: CertificateAuthority | None = None
    #: Issuer / audience of ServiceAccount tokens.
    service_account_issuer: str = SA_ISSUER
    logs_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _admin_config: Configuration | None = field(default=None, repr=False)
    _hub_config: Configuration | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # ---- clients

    def admin_configuration(self) -> Configuration:
        """Explicit admin Configuration (cluster-admin); never the global default."""
        assert self._admin_config is not None, "control plane not started"
        return self._admin_config

    def hub_configuration(self) -> Configuration:
        """Explicit Configuration with the hub ServiceAccount's token."""
        assert self._hub_config is not None, "control plane not started"
        return self._hub_config

    def sync_configuration(self) -> Configuration:
        """Explicit Configuration with the sync job's ServiceAccount token."""
        configuration = copy.copy(self.hub_configuration())
        configuration.api_key = {"BearerToken": f"Bearer {self.sync_token}"}
        return configuration

    def sync_client(self) -> ApiClient:
        """A new ApiClient as ``system:serviceaccount:jupyterhub:dna-hub-sync``, with exactly
        helm-values/dna-hub-sync.yaml's RBAC."""
        return ApiClient(configuration=self.sync_configuration())

    def admin_client(self) -> ApiClient:
        """A new ApiClient as cluster-admin (``async with`` it, or ``await .close()``)."""
        return ApiClient(configuration=self.admin_configuration())

    def hub_client(self) -> ApiClient:
        """A new ApiClient as ``system:serviceaccount:jupyterhub:hub``."""
        return ApiClient(configuration=self.hub_configuration())

    # ---- processes

    def log_file(self, name: str) -> Path | None:
        """Log of one process (``etcd``, ``kube-apiserver``, ``kube-controller-manager``,
        ``kube-scheduler``)."""
        return self.logs_dir / f"{name}.log" if self.logs_dir else None

    def log_tail(self, name: str, lines: int = 40) -> str:
        """Last lines of a process's log, for error messages."""
        path = self.log_file(name)
        return _tail(path, lines) if path else "(no log)"

    def check_alive(self) -> None:
        """Raise with the log tail if any process started here has exited."""
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None and not self._stopped:
                raise ControlPlaneError(
                    f"{name} exited with status {code}; last lines of its log:\n"
                    f"{self.log_tail(name)}"
                )

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.logs_dir is not None
        log = (self.logs_dir / f"{name}.log").open("ab")
        # Each process leads its own process group so stop() can kill it with all children.
        # Started from the main thread, setpriv ties its life to ours (PR_SET_PDEATHSIG):
        # even if the test runner is SIGKILLed, nothing is left behind.
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        try:
            self.processes[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()

    async def _wait_https(
        self, name: str, url: str, ssl_ctx: ssl.SSLContext, timeout: float, ok: str = "ok"
    ) -> None:
        """Poll ``url`` until it answers 200 with ``ok`` in the body, or fail with the log."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        per_request = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=per_request) as session:
            while True:
                self.check_alive()
                try:
                    async with session.get(url, ssl=ssl_ctx) as resp:
                        body = await resp.text()
                        if resp.status == 200 and ok in body:
                            return
                        last = f"HTTP {resp.status}: {body[-500:]}"
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"{name} not ready at {url} after {timeout}s ({last}); "
                        f"last lines of its log:\n{self.log_tail(name)}"
                    )
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Terminate every process started here (whole process groups) and remove the workdir.

        Synchronous on purpose: it also runs from atexit and signal handlers. From async
        code call it via ``asyncio.to_thread``.
        """
        if self._stopped:
            return
        self._stopped = True
        # One at a time, scheduler, controller manager, API server, etcd: each shuts down cleanly
        # (~1s) while the one it talks to is still there; all at once, the API server
        # hangs on its vanished etcd until the SIGKILL.
        for proc in reversed(list(self.processes.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Anything the process left in its group (there should be nothing).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if os.environ.get("DNA_HUB_KEEP_KUBE_WORKDIR"):
            print(f"control plane: keeping {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def aclose(self) -> None:
        """``stop()`` without blocking the event loop."""
        await asyncio.to_thread(self.stop)


# --------------------------------------------------------------------------- startup


async def _bootstrap(cp: ControlPlane, api: ApiClient, crd_dir: Path, timeout: float) -> None:
    """Install CRDs, Kubeflow's ClusterRoles and the hub identity; write the hub kubeconfig."""
    crd_files = sorted(crd_dir.glob("*.yaml"))
    crds = [obj for f in crd_files for obj in load_manifests(f)]
    await asyncio.gather(*(apply_object(api, obj) for obj in crds))
    names = [obj["metadata"]["name"] for obj in crds]
    if missing := set(CRD_NAMES) - set(names):
        raise ControlPlaneError(f"{crd_dir} lacks CRDs {sorted(missing)}")

    rbac_dir = paths.shared_dir() / "rbac"
    rbac = [obj for f in sorted(rbac_dir.glob("*.yaml")) for obj in load_manifests(f)]
    if not rbac:
        raise ControlPlaneError(f"no Kubeflow ClusterRoles in {rbac_dir}")
    await asyncio.gather(*(apply_object(api, obj) for obj in rbac))

    # The hub identity, as z2jh creates it, bound to the project's single RBAC file.
    await apply_object(
        api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cp.hub_namespace}}
    )
    await apply_object(
        api,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": cp.hub_service_account, "namespace": cp.hub_namespace},
        },
    )
    hub_rbac = load_manifests(HUB_RBAC_FILE)
    bound = any(
        s.get("kind") == "ServiceAccount"
        and s.get("name") == cp.hub_service_account
        and s.get("namespace") == cp.hub_namespace
        for obj in hub_rbac
        if obj["kind"] in {"ClusterRoleBinding", "RoleBinding"}
        for s in obj.get("subjects") or []
    )
    if not bound:
        raise ControlPlaneError(
            f"{HUB_RBAC_FILE} binds nothing to ServiceAccount "
            f"{cp.hub_namespace}/{cp.hub_service_account}"
        )
    for obj in hub_rbac:
        await apply_object(api, obj)

    token = await client.CoreV1Api(api).create_namespaced_service_account_token(
        cp.hub_service_account,
        cp.hub_namespace,
        client.AuthenticationV1TokenRequest(
            # No audiences: the API server's own (--api-audiences), whatever the cluster.
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=HUB_TOKEN_SECONDS)
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    cp.hub_token = token.status.token
    cp.service_account_issuer = _jwt_claims(cp.hub_token).get("iss", cp.service_account_issuer)
    _write_kubeconfig(
        cp.hub_kubeconfig,
        server=cp.server,
        ca_file=cp.ca_file,
        user=f"{cp.hub_namespace}-{cp.hub_service_account}",
        credentials={"token": cp.hub_token},
        namespace=cp.hub_namespace,
    )
    cp._hub_config = await load_configuration(cp.hub_kubeconfig, cp.workdir)

    # The sync job's identity and RBAC, exactly as dna-hub-sync.yaml makes them.
    for obj in load_manifests(SYNC_FILE):
        if obj["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}:
            await apply_object(api, obj)
    sync_token = await client.CoreV1Api(api).create_namespaced_service_account_token(
        cp.sync_service_account,
        cp.hub_namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=HUB_TOKEN_SECONDS)
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    cp.sync_token = sync_token.status.token

    for guard_file in GUARD_FILES:
        for obj in load_manifests(guard_file):
            await apply_object(api, obj)
    cp.guards_applied_at = time.monotonic()

    await wait_crds_established(api, names, timeout)


def _jwt_claims(token: str) -> dict[str, Any]:
    """Unverified JWT claims, only to learn an external cluster's token issuer."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def _wait_controllers(cp: ControlPlane, api: ApiClient, timeout: float) -> None:
    """Wait for kube-controller-manager's first visible work: the ``default`` ServiceAccount."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        cp.check_alive()
        try:
            await core.read_namespaced_service_account(
                "default", "default", _request_timeout=REQUEST_TIMEOUT
            )
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"kube-controller-manager created no 'default' ServiceAccount in {timeout}s; "
                f"last lines of its log:\n{cp.log_tail('kube-controller-manager')}"
            )
        await asyncio.sleep(0.1)


async def _start_local(timeout: float) -> ControlPlane:
    if missing := missing_binaries():
        raise ControlPlaneError(
            f"missing {', '.join(map(str, missing))}: run {BUILD_SCRIPT} "
            "(builds them from the Go module proxy, ~20 min once)"
        )
    bins = binaries()
    workdir = Path(tempfile.mkdtemp(prefix="dna-hub-kube-", dir=_fast_tmp()))
    pki = workdir / "pki"
    logs = workdir / "logs"
    pki.mkdir()
    logs.mkdir()
    api_port, etcd_port, peer_port = _free_port(), _free_port(), _free_port()
    kcm_port, scheduler_port = _free_port(), _free_port()
    server = f"https://127.0.0.1:{api_port}"
    cp = ControlPlane(
        server=server,
        ca_file=pki / "ca.crt",
        admin_kubeconfig=workdir / "admin.kubeconfig",
        hub_kubeconfig=workdir / "hub.kubeconfig",
        workdir=workdir,
        logs_dir=logs,
    )
    atexit.register(cp.stop)
    try:

        def make_pki() -> dict[str, Path]:
            ca = CertificateAuthority.create(pki)
            cp.ca = ca
            serving = ca.issue(
                pki, "serving", common_name="kube-apiserver",
                dns_names=["localhost", "kubernetes", "kubernetes.default",
                           "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
                # and the kubernetes Service's clusterIP (the range's first address), as
                # kube-apiserver puts in the certificate it makes: in-cluster clients use it
                ip_addresses=["127.0.0.1", "10.96.0.1"], server=True,
            )  # fmt: skip
            admin = ca.issue(
                pki, "admin", common_name="dna-hub-admin", organizations=["system:masters"],
                client=True,
            )  # fmt: skip
            sa_key, sa_pub = _service_account_keys(pki)
            # A second CA for request-header (front-proxy) authentication, as kubeadm makes:
            # without it kube-controller-manager and kube-scheduler, which delegate the
            # authentication of their secure ports to the API server, log "missing content
            # for CA bundle ... requestheader-client-ca-file" many times a second.
            front_proxy_dir = pki / "front-proxy"
            front_proxy_dir.mkdir()
            front_proxy = CertificateAuthority.create(
                front_proxy_dir, common_name="dna-hub-test-front-proxy-ca"
            )
            proxy_client = front_proxy.issue(
                front_proxy_dir, "front-proxy-client", common_name="front-proxy-client",
                client=True,
            )  # fmt: skip
            return {
                "serving.crt": serving[0], "serving.key": serving[1],
                "admin.crt": admin[0], "admin.key": admin[1],
                "sa.key": sa_key, "sa.pub": sa_pub,
                "front-proxy-ca.crt": front_proxy.cert_file,
                "front-proxy-client.crt": proxy_client[0],
                "front-proxy-client.key": proxy_client[1],
            }  # fmt: skip

        files = await asyncio.to_thread(make_pki)
        assert cp.ca is not None

        # Clients of the readiness probes verify the server against the CA, as everyone does.
        etcd_ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        api_ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        api_ssl.load_cert_chain(files["admin.crt"], files["admin.key"])

        etcd_url = f"https://127.0.0.1:{etcd_port}"
        cp._spawn(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=default",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                f"--cert-file={files['serving.crt']}",
                f"--key-file={files['serving.key']}",
                # metrics on an ephemeral loopback port, never the default :2381
                "--listen-metrics-urls=http://127.0.0.1:0",
                "--log-level=warn",
            ],
        )
        await cp._wait_https("etcd", f"{etcd_url}/health", etcd_ssl, timeout, ok="true")

        cp._spawn(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={files['serving.crt']}",
                f"--tls-private-key-file={files['serving.key']}",
                f"--client-ca-file={cp.ca_file}",
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={cp.ca_file}",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--service-account-issuer={cp.service_account_issuer}",
                f"--service-account-key-file={files['sa.pub']}",
                f"--service-account-signing-key-file={files['sa.key']}",
                f"--api-audiences={cp.service_account_issuer}",
                # The master service's endpoints may not be a loopback address; nothing
                # in-cluster reaches the API server through default/kubernetes here anyway
                # (stand-ins use the kubeconfig; the container kubelet forwards itself).
                "--endpoint-reconciler-type=none",
                "--authorization-mode=Node,RBAC",
                # The default plugin list stays on (NamespaceLifecycle, LimitRanger,
                # ServiceAccount, PodSecurity, DefaultStorageClass, the admission webhooks,
                # ValidatingAdmissionPolicy, ResourceQuota, ...); this only adds to it.
                "--enable-admission-plugins=NodeRestriction",
                f"--requestheader-client-ca-file={files['front-proxy-ca.crt']}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={files['front-proxy-client.crt']}",
                f"--proxy-client-key-file={files['front-proxy-client.key']}",
                # aggregated APIs (Kueue's visibility API) are reached at their endpoints'
                # addresses: there is no kube-proxy to route a Service's clusterIP
                "--enable-aggregator-routing=true",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        await cp._wait_https("kube-apiserver", f"{server}/readyz", api_ssl, timeout)

        _write_kubeconfig(
            cp.admin_kubeconfig,
            server=server,
            ca_file=cp.ca_file,
            user="admin",
            credentials={
                "client-certificate-data": _file_data(files["admin.crt"]),
                "client-key-data": _file_data(files["admin.key"]),
            },
        )
        cp._admin_config = await load_configuration(cp.admin_kubeconfig, workdir)
        async with cp.admin_client() as api:
            await _bootstrap(cp, api, paths.shared_dir() / "crds", timeout)
            # Started once the CRDs are served, so its garbage collector knows Profiles from
            # the start: a deleted Profile's namespace goes at once, not at the next
            # 30-second discovery resync.
            kubeconfig = f"{cp.admin_kubeconfig}"
            cp._spawn(
                "kube-controller-manager",
                [
                    str(bins["kube-controller-manager"]),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    f"--service-account-private-key-file={files['sa.key']}",
                    f"--root-ca-file={cp.ca_file}",
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    # No cloud, no pod network, no attachable volumes: those controllers
                    # stay off (the cloud ones are not in kube-controller-manager any more).
                    # node-lifecycle-controller stays ON: a new Node gets the taint
                    # node.kubernetes.io/not-ready at admission and only this controller
                    # lifts it once the stand-in kubelet reports Ready and renews its Lease
                    # (and it taints a node whose stand-in has gone, as in a real cluster).
                    "--controllers=*,-node-ipam-controller,"
                    "-persistentvolume-attach-detach-controller",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--profiling=false",
                    "--v=1",
                ],
            )
            # The real scheduler binds every pod (the stand-in kubelet only registers its
            # node and runs what is bound to it), and the chart's user-scheduler is one too.
            cp._spawn(
                "kube-scheduler",
                [
                    str(bins["kube-scheduler"]),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={scheduler_port}",
                    f"--cert-dir={workdir / 'scheduler-certs'}",
                    "--leader-elect=false",
                    "--profiling=false",
                    "--v=1",
                ],
            )
            await _wait_controllers(cp, api, timeout)
            # Both answer /healthz on their secure port (self-signed: not verified).
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            for name, port in (("kube-controller-manager", kcm_port),
                               ("kube-scheduler", scheduler_port)):  # fmt: skip
                await cp._wait_https(name, f"https://127.0.0.1:{port}/healthz", insecure, timeout)
        cp.check_alive()
        return cp
    except BaseException:
        cp.stop()
        raise


async def _start_external(kubeconfig: Path, timeout: float) -> ControlPlane:
    if not kubeconfig.is_file():
        raise ControlPlaneError(f"DNA_HUB_TEST_KUBECONFIG={kubeconfig} does not exist")
    workdir = Path(tempfile.mkdtemp(prefix="dna-hub-kube-"))
    try:
        admin_cfg = await load_configuration(kubeconfig, workdir)
        if not admin_cfg.ssl_ca_cert:
            raise ControlPlaneError(
                f"{kubeconfig} has no certificate-authority: the hub kubeconfig could not "
                "verify the server"
            )
        ca_file = workdir / "ca.crt"
        shutil.copyfile(admin_cfg.ssl_ca_cert, ca_file)
        cp = ControlPlane(
            server=admin_cfg.host,
            ca_file=ca_file,
            admin_kubeconfig=kubeconfig,
            hub_kubeconfig=workdir / "hub.kubeconfig",
            workdir=workdir,
            external=True,
            _admin_config=admin_cfg,
        )
        async with cp.admin_client() as api:
            version = await client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
            minor = int("".join(ch for ch in version.minor if ch.isdigit()) or 0)
            # The upstream CRDs carry CEL rules (x-kubernetes-validations, 1.25+).
            if minor < 25:
                raise ControlPlaneError(
                    f"{kubeconfig} is Kubernetes {version.git_version}; the CRDs need >= 1.25"
                )
            await _bootstrap(cp, api, paths.shared_dir() / "crds", timeout)
        return cp
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


async def start_control_plane(timeout: float = START_TIMEOUT) -> ControlPlane:
    """Start a local control plane (or adopt ``DNA_HUB_TEST_KUBECONFIG``) and bootstrap it.

    Each startup phase (etcd, API server, CRDs, controllers) is bounded by ``timeout``.
    The caller owns the result and must ``stop()`` / ``await aclose()`` it.
    """
    external = external_kubeconfig()
    if external:
        return await _start_external(external, timeout)
    # Free ports are picked before the servers bind them; with parallel test sessions
    # another process can take one in between. That race is retried, nothing else is.
    for attempt in range(3):
        try:
            return await _start_local(timeout)
        except ControlPlaneError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def build_binaries(log_file: Path | None = None) -> None:
    """Run devstack/gobuild/build.sh (idempotent); raise with the log tail on failure."""
    out = log_file.open("ab") if log_file else None
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            # stdout is only the bin dir; the progress (stderr) goes to the log.
            stdout=subprocess.DEVNULL,
            stderr=out,
            check=False,
            timeout=3600,
        )
    finally:
        if out:
            out.close()
    if result.returncode:
        tail = _tail(log_file) if log_file else ""
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed ({result.returncode})\n{tail}")


# --------------------------------------------------------------------------- CLI


async def _up() -> int:
    started = time.monotonic()
    cp = await start_control_plane()
    print(f"control plane up in {time.monotonic() - started:.1f}s: {cp.server}")
    print(f"  admin kubeconfig: {cp.admin_kubeconfig}")
    print(f"  hub kubeconfig:   {cp.hub_kubeconfig}  ({cp.hub_namespace}/{cp.hub_service_account})")
    print(f"  CA:               {cp.ca_file}")
    if cp.logs_dir:
        print(f"  logs:             {cp.logs_dir}")
    print(f"\nexport KUBECONFIG={cp.admin_kubeconfig}")
    print("# Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        while not stop.is_set():
            try:
                cp.check_alive()
            except ControlPlaneError as exc:
                print(exc, file=sys.stderr)
                code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
    finally:
        print("stopping control plane", file=sys.stderr)
        await cp.aclose()
    return code


def main(argv: list[str] | None = None) -> int:
    """``up``: run a control plane until Ctrl-C; ``build``: build the binaries."""
    parser = argparse.ArgumentParser(prog="python -m devstack.controlplane")
    parser.add_argument("command", choices=["up", "build"])
    args = parser.parse_args(argv)
    if args.command == "build":
        build_binaries()
        return 0
    try:
        return asyncio.run(_up())
    except ControlPlaneError as exc:
        print(f"control plane failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
