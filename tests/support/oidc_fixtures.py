"""pytest plugin: the fixtures of :mod:`devstack.oidc_stack`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.oidc_stack import (
    HubFactory,
    HubProcess,
    OIDCProvider,
    ProviderFactory,
    SigningKeys,
    _rsa_jwk,
    install_node_modules,
    start_hub,
)


@pytest.fixture(scope="session")
def oidc_node_modules() -> Path:
    return install_node_modules()


@pytest.fixture(scope="session")
def oidc_keys() -> SigningKeys:
    return SigningKeys(primary=_rsa_jwk("dna-test-key"), rogue=_rsa_jwk("dna-test-key"))


@pytest.fixture(scope="session")
def oidc_provider_factory(
    oidc_node_modules: Path, oidc_keys: SigningKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderFactory]:
    started: list[OIDCProvider] = []

    def start(**kwargs: Any) -> OIDCProvider:
        kwargs.setdefault("keys", [oidc_keys.primary])
        provider = OIDCProvider(
            oidc_node_modules, tmp_path_factory.mktemp("oidc-provider"), **kwargs
        )
        started.append(provider)
        return provider.start()

    yield start
    for provider in started:
        provider.stop()


@pytest.fixture(scope="session")
def oidc_provider(oidc_provider_factory: ProviderFactory) -> OIDCProvider:
    return oidc_provider_factory()


@pytest.fixture
async def hub_factory(
    oidc_node_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HubFactory]:
    """``await hub_factory(provider, ...)``: :func:`start_hub`, stopped after the test.

    ``work=`` restarts a stopped hub in its directory (same database and cookie secret).
    """
    hubs: list[HubProcess] = []

    async def start(provider: OIDCProvider, work: Path | None = None, **kwargs: Any) -> HubProcess:
        hub_process = await start_hub(
            provider, oidc_node_modules, work or tmp_path_factory.mktemp("hub"), **kwargs
        )
        hubs.append(hub_process)
        return hub_process

    yield start
    for hub_process in hubs:
        hub_process.stop()
