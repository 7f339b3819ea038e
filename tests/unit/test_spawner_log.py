"""What the hub log says about where a notebook runs must be where it runs (issue #14, item 8)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from unittest import mock

import pytest

from dna_hub import DnaSpawner
from dna_hub.policy.naming import namespace_for


def spawner_for(username: str, log: logging.Logger, **config: object) -> DnaSpawner:
    user = SimpleNamespace(name=username, id=1, url=f"/user/{username}/", settings={}, groups=[])
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", public_host="", url="/hub/",
                          base_url="/hub/")  # fmt: skip
    with mock.patch("kubespawner.spawner.load_config"):  # no cluster credentials needed
        return DnaSpawner(user=user, hub=hub, _mock=True, log=log, **config)


@pytest.mark.parametrize("template", [None, "ml-{username}"])
async def test_the_log_names_the_namespace_the_pod_runs_in(
    template: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test-dna-spawner-namespace")
    config = {"namespace_template": template} if template else {}
    with caplog.at_level(logging.DEBUG, logger=log.name):
        spawner = spawner_for("alice", log, **config)
    policy = namespace_for("alice", template) if template else namespace_for("alice")
    assert spawner.namespace == policy
    namespaces = [r.getMessage() for r in caplog.records if "namespace" in r.getMessage()]
    assert namespaces, "KubeSpawner no longer logs the namespace it chose"
    assert all(policy in message for message in namespaces), namespaces
    assert not any("user-alice" in message for message in namespaces), namespaces


async def test_saved_state_cannot_leave_a_stale_dns_name() -> None:
    spawner = spawner_for("alice", logging.getLogger("test-dna-spawner-state"))
    spawner.load_state({"namespace": "user-alice", "dns_name": "jupyter-alice.user-alice.svc"})
    assert spawner.namespace == namespace_for("alice")
    assert f".{namespace_for('alice')}." in spawner.dns_name
