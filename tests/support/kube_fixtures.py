"""pytest plugin: the local Kubernetes control plane and clients for it.

Fixtures:

* ``control_plane`` (session): a running :class:`~devstack.controlplane.ControlPlane`;
  ``KUBECONFIG`` points at the hub's kubeconfig for the whole session, because KubeSpawner
  loads the global kubernetes_asyncio configuration from it (once per process).
* ``admin_api`` / ``hub_api``: kubernetes_asyncio ``ApiClient`` as cluster-admin / as the
  hub's ServiceAccount, each with its own explicit Configuration.
* ``unique_name``: ``unique_name("prefix")`` returns a fresh DNS-1123 label per call.

Mark tests that use them with ``@pytest.mark.controlplane``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config

from devstack import paths
from devstack.controlplane import (
    BUILD_SCRIPT,
    KUBE_VERSION,
    ControlPlane,
    ControlPlaneError,
    build_binaries,
    external_kubeconfig,
    missing_binaries,
    start_control_plane,
)

BUILD_LOG = paths.CACHE_DIR / "gobuild.log"


def _needs_build() -> bool:
    return external_kubeconfig() is None and bool(missing_binaries())


def _can_build() -> bool:
    """build.sh needs Go (>= 1.26) and the Go module proxy; no root."""
    return shutil.which("go") is not None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs, if a collected test needs them.

    Here rather than in the fixture: the cold build (etcd, kube-apiserver,
    kube-controller-manager, kube-scheduler, kubectl from the Go module proxy) takes ~20
    minutes on two cores, longer than the per-test timeout that would otherwise include
    fixture setup.
    """
    if session.config.option.collectonly or not _needs_build() or not _can_build():
        return
    if not any(item.get_closest_marker("controlplane") for item in session.items):
        return
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"building etcd and Kubernetes {KUBE_VERSION} from the Go module proxy "
            f"(~20 min, once): {BUILD_SCRIPT}, log {BUILD_LOG}"
        )
    try:
        build_binaries(BUILD_LOG)
    except ControlPlaneError as exc:
        # Not fatal here: the fixture reports it on every test that needs the binaries.
        if reporter is not None:
            reporter.write_line(str(exc))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def control_plane() -> AsyncIterator[ControlPlane]:
    """The session's control plane, started once; KUBECONFIG = the hub's kubeconfig."""
    if _needs_build():
        if _can_build():
            try:
                await asyncio.to_thread(build_binaries, BUILD_LOG)
            except ControlPlaneError as exc:
                pytest.fail(str(exc), pytrace=False)
        else:
            missing = ", ".join(map(str, missing_binaries()))
            paths.unavailable(
                f"the test control plane's binaries are missing ({missing}) and there is no "
                f"go (>= 1.26) on PATH to build them; build them once with: {BUILD_SCRIPT}  "
                "(or set DNA_HUB_TEST_KUBECONFIG to an existing kind/k3d cluster)"
            )
    paths.shared_path("crds")
    paths.shared_path("rbac")
    try:
        cp = await start_control_plane()
    except ControlPlaneError as exc:
        pytest.fail(f"control plane failed to start: {exc}", pytrace=False)
    previous = os.environ.get("KUBECONFIG")
    previous_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(cp.hub_kubeconfig)
    # kubernetes_asyncio read KUBECONFIG when it was imported, before this fixture ran;
    # KubeSpawner's load_kube_config() (in-process spawners) must find the hub's.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(cp.hub_kubeconfig)
    try:
        yield cp
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = previous_default
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        await cp.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def admin_api(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    """ApiClient as cluster-admin (system:masters) — for test setup and inspection."""
    async with control_plane.admin_client() as api:
        yield api


@pytest_asyncio.fixture(loop_scope="session")
async def hub_api(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    """ApiClient as the hub's ServiceAccount — sees exactly helm-values/hub-rbac.yaml."""
    async with control_plane.hub_client() as api:
        yield api


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory of unique DNS-1123 labels, so tests sharing one cluster never collide.

    ``unique_name()`` / ``unique_name("prof")`` → e.g. ``prof-test-create-3-a1b2c3``;
    at most 40 characters, leaving room for suffixes other components append.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    slug = slug.removeprefix("test-")[:16].strip("-") or "t"
    counter = itertools.count(1)

    def make(prefix: str = "t") -> str:
        prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:10] or "t"
        name = f"{prefix}-{slug}-{next(counter)}-{secrets.token_hex(3)}"
        return name[:40].strip("-")

    return make
