"""The demo's logins: any login the provider's form takes gets a polite answer from the hub, and
the banner says truly who is admin, who is refused and why (issue #14, item 3)."""

from __future__ import annotations

import httpx
import pytest

from devstack.demo import demo_logins
from devstack.oidc_stack import DEMO_ACCOUNTS, OIDCProvider

pytestmark = pytest.mark.slow


def test_the_banner_lists_each_login_once_with_its_role() -> None:
    lines = demo_logins()
    for login in DEMO_ACCOUNTS:
        assert sum(line.split()[0] == login for line in lines) == 1, lines
    by_login = {line.split()[0]: line for line in lines}
    assert "admin" in by_login["bob"]
    assert "refused" in by_login["mallory"] and "allowed groups" in by_login["mallory"]
    assert "refused" in by_login["eve"] and "not verified the email" in by_login["eve"]
    for login in ("alice", "carol"):
        assert "refused" not in by_login[login] and "admin" not in by_login[login]
    assert lines[-1].startswith("any other login") and "refused" in lines[-1]


async def test_every_login_gets_what_the_banner_says(oidc_provider: OIDCProvider, hub_factory):
    """Each demo login and an unknown one, through the real provider and hub."""
    hub = await hub_factory(oidc_provider)
    errors_before = oidc_provider.log_file.read_text().count("server_error")
    verdicts = {line.split()[0]: line for line in demo_logins()[:-1]}
    verdicts["zed"] = demo_logins()[-1]  # any other login
    for login, verdict in verdicts.items():
        async with httpx.AsyncClient(timeout=15) as http:
            page = await hub.login(http, login)
        if "refused" in verdict:
            assert page.status_code == 403, (login, page.status_code, page.text)
            assert "not verified" in page.text or "not currently authorized" in page.text
        else:
            assert page.status_code == 200, (login, page.status_code, page.text)
    admins = {name for name in await hub.user_names() if (await hub.user_model(name))["admin"]}
    assert admins == {"bob"}
    assert "zed" not in await hub.user_names()
    assert oidc_provider.log_file.read_text().count("server_error") == errors_before
