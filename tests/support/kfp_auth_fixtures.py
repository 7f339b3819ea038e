"""pytest plugin: the fixtures of :mod:`devstack.kfp_auth`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from devstack.controlplane import ControlPlane
from devstack.kfp_auth import apply_pipelines_roles, kfp_reviewer_auth
from devstack.kfp_standin import KubeAuth


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kfp_cluster_roles(control_plane: ControlPlane) -> None:
    await apply_pipelines_roles(control_plane)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kfp_auth(control_plane: ControlPlane, kfp_cluster_roles: None) -> AsyncIterator[KubeAuth]:
    yield await kfp_reviewer_auth(control_plane)
