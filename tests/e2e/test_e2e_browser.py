"""The mission, end to end, in a real browser.

Headless Chromium logs in at a real OpenID provider → a real JupyterHub with
configurable-http-proxy, DnaOIDCAuthenticator and DnaSpawner → the local control plane
(the hub's own identity from helm-values/hub-rbac.yaml; profile controller, PodDefault
webhook and kubelet stand-ins) → JupyterLab loads for that user, from their own
namespace, whose Kubeflow Profile is owned by their email claim.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from devstack import paths
from devstack.demo import DNA_SPAWNER_CONFIG
from devstack.oidc_stack import DEMO_PASSWORD, HubProcess, OIDCProvider, start_hub
from devstack.standins import Kube

pytestmark = [pytest.mark.controlplane, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
#: Chromium as root in a sandbox with no network but loopback (see DEVELOPERS' notes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        paths.unavailable("Debian's chromium is not installed (./dev setup installs it)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest_asyncio.fixture(loop_scope="session")
async def dna_hub(
    oidc_provider: OIDCProvider,
    oidc_node_modules: Path,
    standins: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HubProcess]:
    hub = await start_hub(
        oidc_provider,
        oidc_node_modules,
        tmp_path_factory.mktemp("dna-hub"),
        extra_config=DNA_SPAWNER_CONFIG,
    )
    try:
        yield hub
    finally:
        hub.stop()


async def login_in_browser(
    page: Any, hub: HubProcess, username: str, next_path: str = "/hub/spawn"
) -> None:
    """Go through the provider's login and consent pages as a person would."""
    await page.goto(f"{hub.url}/hub/oauth_login?next={quote(next_path, safe='')}")
    provider = hub.provider.base_url
    for _ in range(4):
        await page.wait_for_load_state()
        if not page.url.startswith(provider):
            return
        login = page.locator("input[name=login]")
        if await login.count():
            await login.fill(username)
            await page.locator("input[name=password]").fill(DEMO_PASSWORD)
        await page.locator("button[type=submit]").first.click()
    raise AssertionError(f"still at the provider after login: {page.url}")


async def test_login_to_jupyterlab_in_own_profile(
    dna_hub: HubProcess, standins_kube: Kube, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            await login_in_browser(page, dna_hub, "alice")
            # spawn page → progress → JupyterLab of this user
            await page.wait_for_url("**/user/alice/lab**", timeout=240_000)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
            await page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            title = await page.title()
        finally:
            await browser.close()
    assert "JupyterLab" in title, dna_hub.log()[-3000:]

    # the notebook runs in the user's own profile, owned by the email claim (case kept)
    profile = await standins_kube.get("/apis/kubeflow.org/v1/profiles/kubeflow-alice")
    assert profile["spec"]["owner"] == {"kind": "User", "name": "Alice.Smith@Example.com"}
    pods = await standins_kube.get("/api/v1/namespaces/kubeflow-alice/pods")
    (pod,) = [p for p in pods["items"] if p["metadata"]["name"] == "jupyter-alice"]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "default-editor"
    assert pod["metadata"]["annotations"]["hub.jupyter.org/username"] == "alice"

    # the hub's /metrics shows the provisioning
    async with dna_hub.api() as api:
        metrics = (await api.get(f"{dna_hub.url}/hub/metrics")).text
    ours = "\n".join(line for line in metrics.splitlines() if line.startswith("dna_hub_"))
    # one successful provisioning in this hub: "full", or "fast" where an earlier test of
    # the session already provisioned kubeflow-alice with the same templates
    succeeded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in ours.splitlines()
        if line.startswith('dna_hub_provisioning_duration_seconds_count{outcome="success"')
    )
    assert succeeded == 1.0, ours
