"""Server options gated by group through the real hub and the real OpenID provider (issue 27,
item 2): the spawn form shows each login only the options its verified groups allow, a
crafted form POST for another group's option is refused with a clear 403 and starts
nothing, and an allowed option's resources reach the pod through KubeSpawner's own
override path.

The stack of tests/e2e/test_e2e_browser_teams.py without the browser: provider.mjs →
JupyterHub with DnaOIDCAuthenticator and DnaSpawner → the control plane with the stand-ins.
alice's id_token has the group ``gpu-users``; bob's has not.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devstack.demo import DNA_SPAWNER_CONFIG
from devstack.oidc_stack import DEMO_ACCOUNTS, HTTP_TIMEOUT, HubProcess, parse_forms, start_hub
from devstack.standins import Kube
from dna_hub.policy.naming import namespace_for
from tests.integration.test_standins import eventually

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

OPTIONS_CONFIG = """
# --- server options gated by group (tests/integration/test_server_options_hub.py) ---
c.DnaSpawner.server_options = [
    {"display_name": "Standard server", "slug": "standard", "default": True,
     "profile_options": {"image": {"display_name": "Image", "choices": {
         "stable": {"display_name": "Stable image", "default": True},
         "beta": {"display_name": "Beta image", "dna_hub_groups": ["ml-platform"],
                  "kubespawner_override": {"image": "example.org/beta:1"}}}}}},
    {"display_name": "Large server", "slug": "large", "dna_hub_groups": ["gpu-users"],
     "kubespawner_override": {"mem_limit": "3G", "environment": {"DNA_SERVER_OPTION": "large"},
                              "node_selector": {"kubernetes.io/os": "linux"}}},
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
        tmp_path_factory.mktemp("dna-hub-options"),
        extra_config=DNA_SPAWNER_CONFIG + OPTIONS_CONFIG,
    )
    try:
        yield hub
    finally:
        hub.stop()


def offered(html: str) -> tuple[list[str], list[str]]:
    """The server options (radio values) and the image choices a spawn form offers."""
    profiles = re.findall(r'name="profile"\s+id="profile-item-[^"]*"\s+value="([^"]+)"', html)
    select = re.search(r'<select name="profile-option-standard--image".*?</select>', html, re.S)
    images = re.findall(r'<option value="([^"]+)"', select.group(0)) if select else []
    return profiles, images


async def spawn_form(hub: HubProcess, http: httpx.AsyncClient, login: str) -> str:
    page = await hub.login(http, login, next_url=f"/hub/spawn/{login}")
    assert page.status_code == 200, page.text[-2000:]
    assert "kubespawner-profiles-list" in page.text, hub.log()[-3000:]
    return page.text


async def post_spawn(
    hub: HubProcess, http: httpx.AsyncClient, login: str, form: str, data: dict[str, str]
) -> httpx.Response:
    # as the page's script posts it: the form's fields and the page's XSRF token
    assert [f for f in parse_forms(form) if f.id == "spawn_form"]
    xsrf = re.search(r'xsrf_token: "([^"]+)"', form)
    assert xsrf is not None
    return await http.post(
        f"{hub.url}/hub/spawn/{login}",
        data={"_xsrf": xsrf.group(1), **data},
        follow_redirects=False,
    )


async def test_the_form_offers_each_login_its_groups_options_and_the_spawn_rechecks(
    options_hub: HubProcess, standins_kube: Kube
) -> None:
    hub = options_hub
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        bob_form = await spawn_form(hub, http, "bob")
    assert offered(bob_form) == (["standard"], ["stable"])
    assert "Large server" not in bob_form and "Beta image" not in bob_form
    assert "dna_hub_groups" not in bob_form and "gpu-users" not in bob_form

    # bob crafts the POST of an option his groups do not give: 403, nothing started
    bob_namespace = namespace_for("bob")
    profile_path = f"/apis/kubeflow.org/v1/profiles/{bob_namespace}"
    # (another test of the session may have made bob's profile: it must stay as it is)
    profile_before = await standins_kube.get_or_none(profile_path)
    for crafted in (
        {"profile": "large"},
        {"profile": "standard", "profile-option-standard--image": "beta"},
    ):
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            form = await spawn_form(hub, http, "bob")
            refused = await post_spawn(hub, http, "bob", form, crafted)
        assert refused.status_code == 403, (crafted, refused.status_code, hub.log()[-3000:])
        assert "You may not use that server option" in refused.text
        model = await hub.user_model("bob")
        assert model is not None and not model["servers"]
        pods = await standins_kube.get_or_none(f"/api/v1/namespaces/{bob_namespace}/pods")
        assert pods is None or not pods["items"]
        # refused before provisioning: not even bob's profile was made or written for it
        profile_after = await standins_kube.get_or_none(profile_path)
        if profile_before is None:
            assert profile_after is None
        else:
            # what the hub writes (its spec, its digest annotation), not the controller's status
            assert profile_after is not None
            assert profile_after["spec"] == profile_before["spec"]
            assert profile_after["metadata"].get("annotations") == profile_before["metadata"].get(
                "annotations"
            )
    assert "bob chose server option 'large' is for groups ['gpu-users']" in hub.log()

    # alice (gpu-users) is offered the large server, and its overrides reach her pod
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        alice_form = await spawn_form(hub, http, "alice")
        assert offered(alice_form) == (["standard", "large"], ["stable"])
        started = await post_spawn(hub, http, "alice", alice_form, {"profile": "large"})
        assert started.status_code == 302, (started.status_code, hub.log()[-3000:])
        namespace = namespace_for("alice")
        pod = await eventually(
            lambda: standins_kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/jupyter-alice"),
            timeout=120,
        )
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"]["memory"] == str(3 * 1024**3)  # "3G"
        assert {"name": "DNA_SERVER_OPTION", "value": "large"} in container["env"]
        assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
        async with hub.api() as api:
            await api.delete("/users/alice/server")
