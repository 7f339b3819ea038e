"""The demo's team (issue 27, item 4), with the real hub and the real OpenID provider on the
control plane, configured exactly as ``./dev demo`` configures them: alice (group ``fraud``)
edits the team profile and her named server's spawn form offers the team server; bob (group
``fraud-viewers``) views it; the banner says so."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient

from devstack.demo import DEMO_TEAMS_CONFIG, DNA_SPAWNER_CONFIG, demo_accounts, demo_teams
from devstack.oidc_stack import HTTP_TIMEOUT, HubProcess, start_hub
from tests.integration.test_contributors import may
from tests.integration.test_server_options_hub import offered
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

TEAM = "kubeflow-team-fraud"
ALICE, BOB = "Alice.Smith@Example.com", "bob@example.com"


def test_the_banner_says_who_is_in_the_team_and_with_which_role() -> None:
    lines = {line.split()[0]: line for line in demo_teams()}
    assert set(lines) == {"alice", "bob"}
    assert lines["alice"].split()[1] == "edit" and TEAM in lines["alice"]
    assert "/hub/spawn/alice/fraud" in lines["alice"]
    assert lines["bob"].split()[1] == "view" and "no notebook" in lines["bob"]


@pytest_asyncio.fixture(loop_scope="session")
async def demo_hub(
    oidc_provider_factory: Callable[..., Any],
    oidc_node_modules: Path,
    standins: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HubProcess]:
    provider = oidc_provider_factory(accounts=demo_accounts())
    hub = await start_hub(
        provider,
        oidc_node_modules,
        tmp_path_factory.mktemp("dna-hub-demo-team"),
        extra_config=DNA_SPAWNER_CONFIG + DEMO_TEAMS_CONFIG,
    )
    try:
        yield hub
    finally:
        hub.stop()


async def test_alice_is_offered_the_team_server_and_bob_views_the_team(
    demo_hub: HubProcess, admin_api: ApiClient
) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        page = await demo_hub.login(http, "alice", next_url="/hub/spawn/alice/fraud")
    assert page.status_code == 200, demo_hub.log()[-3000:]
    profiles, _ = offered(page.text)
    assert profiles == ["personal", TEAM]
    assert "Team fraud" in page.text
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        page = await demo_hub.login(http, "bob")
    assert page.status_code == 200
    # the logins made them contributors of the team, each with the banner's role
    assert await eventually(lambda: may(admin_api, ALICE, "create", "pods", TEAM), timeout=90)

    async def bob_views() -> bool:
        return await may(admin_api, BOB, "list", "pods", TEAM)

    assert await eventually(bob_views, timeout=90)
    assert not await may(admin_api, BOB, "create", "pods", TEAM)
