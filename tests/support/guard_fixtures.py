"""pytest plugin: the admission guards (helm-values/hub-*-guard.yaml) applied for a module.

``guards`` (module scope): both guard files applied unchanged as cluster-admin; removed
afterwards (those that were not there before), so other tests of the session meet no guard.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest_asyncio

from devstack.controlplane import ControlPlane, apply_object
from tests.integration.test_guard_replay import call, guard_objects, guard_path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guards(control_plane: ControlPlane) -> AsyncIterator[float]:
    """Both guard files applied unchanged (cluster-admin); yields when. Removed afterwards
    (those that were not there before), so other tests of the session meet no guard."""
    objects = guard_objects()
    async with control_plane.admin_client() as api:
        existed = set()
        for obj in objects:
            if (await call(api, "GET", guard_path(obj))).admitted:
                existed.add(guard_path(obj))
        for obj in objects:
            await apply_object(api, obj)
        try:
            yield time.monotonic()
        finally:
            for obj in reversed(objects):
                if guard_path(obj) not in existed:
                    await call(api, "DELETE", guard_path(obj))
