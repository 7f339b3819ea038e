"""Team notebooks in a real browser: alice (group ``fraud`` in her id_token) logs in — which
makes her a contributor of the team — opens a named server, chooses the team in the spawn
form, and JupyterLab loads from the team namespace.

Same stack as tests/e2e/test_e2e_browser.py: Chromium → real OpenID provider → real JupyterHub
with DnaOIDCAuthenticator and DnaSpawner → the local control plane with the hub's own
identity and the stand-ins (profile controller, PodDefault webhook, kubelet).
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
from devstack.standins import Kube
from dna_hub.policy.teams import contributor_binding_name
from tests.e2e.test_e2e_browser import CHROMIUM_ARGS, chromium_path, login_in_browser
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.browser, pytest.mark.slow]

TEAM_NAMESPACE = "kubeflow-team-fraud"
ALICE = "Alice.Smith@Example.com"

TEAMS_CONFIG = """
# --- team profiles (tests/e2e/test_e2e_browser_teams.py) ---
from dna_hub.hub.team_login import sync_teams_at_login

c.JupyterHub.allow_named_servers = True
c.Authenticator.post_auth_hook = sync_teams_at_login
c.DnaSpawner.team_profiles = {"fraud": "edit"}
# the e2e hub has one origin (no wildcard DNS here): the shared-origin risk is accepted
c.DnaSpawner.team_shared_origin_risk_accepted = True
"""
BINDINGS = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{TEAM_NAMESPACE}/rolebindings"


@pytest_asyncio.fixture(loop_scope="session")
async def teams_hub(
    oidc_provider_factory: Callable[..., Any],
    oidc_node_modules: Path,
    standins: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HubProcess]:
    accounts = copy.deepcopy(DEMO_ACCOUNTS)
    accounts["alice"]["claims"]["groups"] = ["data-science", "fraud"]
    provider = oidc_provider_factory(accounts=accounts)
    hub = await start_hub(
        provider,
        oidc_node_modules,
        tmp_path_factory.mktemp("dna-hub-teams"),
        extra_config=DNA_SPAWNER_CONFIG + TEAMS_CONFIG,
    )
    try:
        yield hub
    finally:
        hub.stop()


async def test_alice_runs_jupyterlab_in_her_team_profile(
    teams_hub: HubProcess, standins_kube: Kube, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    name = contributor_binding_name(ALICE, "edit")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            await login_in_browser(page, teams_hub, "alice", next_path="/hub/spawn/alice/fraud")
            # the spawn form of her named server offers her profile and the team's
            await page.wait_for_selector("#spawn_form", timeout=60_000)
            # the login (post_auth_hook), before any spawn, made her a team contributor
            binding = await eventually(
                lambda: standins_kube.get_or_none(f"{BINDINGS}/{name}"), timeout=90
            )
            assert binding["metadata"]["annotations"] == {"user": ALICE, "role": "edit"}
            options = await page.locator("input[name=profile]").evaluate_all(
                "inputs => inputs.map(i => i.value)"
            )
            assert options == ["personal", TEAM_NAMESPACE], teams_hub.log()[-3000:]
            await page.get_by_text("Team fraud").click()
            await page.locator("#spawn_form button[type=submit]").click()
            await page.wait_for_url("**/user/alice/fraud/lab**", timeout=240_000)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
            await page.screenshot(path=str(tmp_path / "team-jupyterlab.png"))
            title = await page.title()
        finally:
            await browser.close()
    assert "JupyterLab" in title, teams_hub.log()[-3000:]

    # the notebook runs in the team namespace, as its default-editor
    pods = await standins_kube.get(f"/api/v1/namespaces/{TEAM_NAMESPACE}/pods")
    (pod,) = [p for p in pods["items"] if p["metadata"]["name"] == "jupyter-alice--fraud"]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "default-editor"
    assert pod["metadata"]["annotations"]["hub.jupyter.org/username"] == "alice"
    profile = await standins_kube.get(f"/apis/kubeflow.org/v1/profiles/{TEAM_NAMESPACE}")
    # owned by the team's own identity, never the hub (issue 24)
    assert profile["spec"]["owner"]["name"] == f"dna-hub-team:{TEAM_NAMESPACE}"
    # and she is its contributor exactly as Kubeflow's access management writes one
    binding = await standins_kube.get(f"{BINDINGS}/{name}")
    assert binding["metadata"]["annotations"] == {"user": ALICE, "role": "edit"}
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}
    ]
