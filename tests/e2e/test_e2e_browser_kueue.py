"""Issue 28 in a real browser: bob's GPU notebook waits in the Kueue queue while alice's holds
the one GPU, and his spawn page shows his place; it starts when alice stops. Screenshots of
each step are saved (and copied to $DNA_HUB_SCREENSHOTS when set).

Chromium → the real OpenID provider → JupyterHub with DnaOIDCAuthenticator and DnaSpawner →
the control plane with real Kueue (tests/integration/test_kueue.py has the API-level checks).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.demo import DNA_SPAWNER_CONFIG
from devstack.kueue import Kueue
from devstack.standins import Kube
from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path, login_in_browser
from tests.integration.test_auth_hardening import accounts, browser, person
from tests.integration.test_kueue import (
    advertise_gpu,
    gpu_cluster_queue,
    kueue_config,
    server_state,
)
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.browser, pytest.mark.slow]


async def test_bob_sees_his_place_in_the_gpu_queue_and_his_notebook_starts_after_alices(
    kueue: Kueue,
    standins_kube: Kube,
    unique_name: Callable[..., str],
    oidc_provider_factory: Any,
    hub_factory: Any,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    queue = unique_name("gpu")
    await advertise_gpu(standins_kube)
    await gpu_cluster_queue(standins_kube, queue)
    alice, bob = unique_name("ka"), unique_name("kb")
    provider = oidc_provider_factory(accounts=accounts(**{n: person(n) for n in (alice, bob)}))
    hub = await hub_factory(provider, extra_config=DNA_SPAWNER_CONFIG + kueue_config(queue))
    async with browser() as http:
        assert (await hub.login(http, alice)).status_code == 200
    async with hub.api() as api:
        started = await api.post(f"/users/{alice}/server", json={"profile": "gpu"})
    assert started.status_code in (201, 202), started.text

    async def alice_ready() -> bool:
        state = await server_state(hub, alice)
        return bool(state and state.get("ready"))

    assert await eventually(alice_ready, timeout=180), hub.log()[-3000:]

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = await chromium.new_page()
            await login_in_browser(page, hub, bob, next_path=f"/hub/spawn/{bob}")
            await page.wait_for_selector("#spawn_form", timeout=60_000)
            await page.get_by_text("GPU server").click()
            await page.screenshot(path=str(tmp_path / "kueue-form.png"), full_page=True)
            await page.locator("#spawn_form button[type=submit]").click()
            await page.wait_for_url(f"**/hub/spawn-pending/{bob}**", timeout=60_000)
            await page.locator("#progress-details").evaluate("d => d.open = true")
            queued = page.locator("#progress-log", has_text="Queued: position 1 in queue")
            await queued.wait_for(timeout=90_000)
            await page.screenshot(path=str(tmp_path / "kueue-queued.png"), full_page=True)
            log = await page.locator("#progress-log").inner_text()
            await asyncio.sleep(3)  # pod events come in meanwhile (Kueue's CreatedWorkload)
            headline = await page.locator("#progress-message").inner_text()
            await page.screenshot(path=str(tmp_path / "kueue-queued.png"), full_page=True)

            async with hub.api() as api:
                await api.delete(f"/users/{alice}/server")
            # the page follows the spawn to the running server (JupyterLab's URL)
            await page.wait_for_url(f"**/user/{bob}/**", timeout=180_000)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
            await page.screenshot(path=str(tmp_path / "kueue-started.png"), full_page=True)
        finally:
            await chromium.close()
    assert "waiting for 1 example.com/gpu" in log, log
    # the headline under the progress bar stays the place in the queue, not a raw event
    assert headline.startswith("Queued: position 1 in queue notebooks"), headline
    for shot in ("kueue-form", "kueue-queued", "kueue-started"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0
        if os.environ.get("DNA_HUB_SCREENSHOTS"):
            target = Path(os.environ["DNA_HUB_SCREENSHOTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / f"{shot}.png", target / f"{shot}.png")
    async with hub.api() as api:
        await api.delete(f"/users/{bob}/server")
