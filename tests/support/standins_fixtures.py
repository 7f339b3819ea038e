"""pytest plugin: the fixtures of :mod:`devstack.standins_process`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.controlplane import ControlPlane
from devstack.standins import Kube
from devstack.standins_process import StandIns, running_standins, start_standins


@pytest.fixture(scope="session")
def standins(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandIns]:
    """The session's stand-ins: profile controller, PodDefault webhook, scheduler+kubelet."""
    with running_standins(control_plane.admin_kubeconfig, tmp_path_factory.mktemp("standins")) as s:
        yield s


@pytest.fixture
def standins_factory(
    control_plane: ControlPlane, tmp_path: Path
) -> Iterator[Callable[..., StandIns]]:
    """Start extra stand-in processes with custom arguments; stopped after the test."""
    started: list[StandIns] = []

    def start(*extra_args: str) -> StandIns:
        running = start_standins(
            control_plane.admin_kubeconfig, tmp_path / f"standins-{len(started)}", *extra_args
        )
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def standins_kube(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    """Dict-based REST client as cluster-admin (same client the stand-ins use)."""
    kube = Kube(control_plane.admin_client())
    try:
        yield kube
    finally:
        await kube.close()
