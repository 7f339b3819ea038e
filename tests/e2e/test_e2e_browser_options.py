"""Server options and progress in people's words, in a real browser (issue 27, items 1 and
2): alice (group ``gpu-users`` in her id_token) is offered the GPU server, bob is not; alice
chooses it, and as no node has a GPU the progress page says so in people's words, and the
spawn ends with that message instead of a timeout. Screenshots of each step are saved.

Same stack as tests/e2e/test_e2e_browser_teams.py: Chromium → real OpenID provider → real
JupyterHub with DnaOIDCAuthenticator and DnaSpawner → the control plane (real
kube-scheduler; the stand-in node has no ``nvidia.com/gpu``) with the stand-ins.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devstack.demo import DNA_SPAWNER_CONFIG
from devstack.oidc_stack import DEMO_ACCOUNTS, HubProcess, start_hub
from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path, login_in_browser

pytestmark = [pytest.mark.controlplane, pytest.mark.browser, pytest.mark.slow]

NO_GPU = "No GPU is free in the cluster right now."
NO_GPU_FINAL = "Your server did not start: no GPU was free in the cluster."
OPTIONS_CONFIG = """
# --- server options gated by group (tests/e2e/test_e2e_browser_options.py) ---
c.DnaSpawner.start_timeout = 60  # the GPU server can never be scheduled here
c.DnaSpawner.server_options = [
    {"display_name": "Standard server", "slug": "standard", "default": True},
    {"display_name": "GPU server", "slug": "gpu", "dna_hub_groups": ["gpu-users"],
     "description": "One NVIDIA GPU",
     "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"}}},
]
"""


@pytest_asyncio.fixture(loop_scope="session")
async def options_hub(
    oidc_provider_factory: Callable[..., Any],
    oidc_node_modules: Path,
    standins: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HubProcess]:
    accounts = copy.deepcopy(DEMO_ACCOUNTS)
    accounts["alice"]["claims"]["groups"] = ["data-science", "gpu-users"]
    provider = oidc_provider_factory(accounts=accounts)
    hub = await start_hub(
        provider,
        oidc_node_modules,
        tmp_path_factory.mktemp("dna-hub-options-browser"),
        extra_config=DNA_SPAWNER_CONFIG + OPTIONS_CONFIG,
    )
    try:
        yield hub
    finally:
        hub.stop()


async def offered(page: Any) -> list[str]:
    await page.wait_for_selector("#spawn_form", timeout=60_000)
    values: list[str] = await page.locator("input[name=profile]").evaluate_all(
        "inputs => inputs.map(i => i.value)"
    )
    return values


async def test_the_gpu_option_is_alices_and_its_progress_says_no_gpu_is_free(
    options_hub: HubProcess, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            bob = await browser.new_page()
            await login_in_browser(bob, options_hub, "bob", next_path="/hub/spawn/bob")
            assert await offered(bob) == ["standard"], options_hub.log()[-3000:]
            assert await bob.get_by_text("GPU server").count() == 0
            await bob.screenshot(path=str(tmp_path / "form-bob.png"), full_page=True)

            alice = await (await browser.new_context()).new_page()
            await login_in_browser(alice, options_hub, "alice", next_path="/hub/spawn/alice")
            assert await offered(alice) == ["standard", "gpu"], options_hub.log()[-3000:]
            await alice.screenshot(path=str(tmp_path / "form-alice.png"), full_page=True)
            await alice.get_by_text("GPU server").click()
            await alice.locator("#spawn_form button[type=submit]").click()

            # the progress page: the scheduler's event, in people's words
            await alice.wait_for_url("**/hub/spawn-pending/alice**", timeout=60_000)
            await alice.locator("#progress-details").evaluate("d => d.open = true")
            await alice.locator("#progress-log", has_text=NO_GPU).wait_for(timeout=90_000)
            await alice.screenshot(path=str(tmp_path / "progress-no-gpu.png"), full_page=True)
            # the spawn ends with it, not with a timeout
            message = alice.locator("#progress-message", has_text="Spawn failed")
            await message.wait_for(timeout=120_000)
            await alice.screenshot(path=str(tmp_path / "spawn-failed.png"), full_page=True)
            text = await message.inner_text()
            log = await alice.locator("#progress-log").inner_text()
        finally:
            await browser.close()
    assert NO_GPU_FINAL in text, text
    assert "timeout" not in text.lower() and "Insufficient" not in text
    assert "Insufficient nvidia.com/gpu" not in log  # people read the translation
    assert "Insufficient nvidia.com/gpu" in options_hub.log()  # operators the event
    for shot in ("form-bob", "form-alice", "progress-no-gpu", "spawn-failed"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0
