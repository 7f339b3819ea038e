"""Kueue on the session's control plane (devstack/kueue.py), started by the first test that
asks for it and stopped (webhooks unregistered first) at the end of the session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from devstack.controlplane import ControlPlane, ControlPlaneError
from devstack.kueue import Kueue


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def kueue(
    control_plane: ControlPlane, standins: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Kueue]:
    running = Kueue(control_plane, tmp_path_factory.mktemp("kueue"))
    try:
        await running.start()
    except ControlPlaneError as exc:
        await running.stop()
        pytest.fail(f"Kueue did not start: {exc}", pytrace=False)
    try:
        yield running
    finally:
        await running.stop()
