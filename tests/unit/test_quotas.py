"""Per-group resource quotas of personal profiles: explicit precedence.

(dna_hub/policy/quotas.py)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dna_hub.policy.quotas import check_group_quotas, resource_quota_for
from tests.unit.test_cli_render import render

GPU = {"hard": {"requests.nvidia.com/gpu": "1", "cpu": "16"}}
SCIENCE = {"hard": {"cpu": "8", "memory": "32Gi"}}
DEFAULT = {"hard": {"cpu": "2", "memory": "8Gi"}}
QUOTAS = {"gpu-users": GPU, "data-science": SCIENCE}


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["data-science"], SCIENCE),
        (["gpu-users"], GPU),
        # member of both: the first entry in the configuration's order, whole, never merged
        (["data-science", "gpu-users"], GPU),
        (["gpu-users", "data-science"], GPU),
        # none of them: the default for everyone
        (["marketing"], DEFAULT),
        ([], DEFAULT),
    ],
)
def test_first_matching_group_then_the_default(groups: list[str], expected: dict) -> None:
    assert resource_quota_for(groups, QUOTAS, DEFAULT) == expected


def test_order_of_the_configuration_decides() -> None:
    reordered = {"data-science": SCIENCE, "gpu-users": GPU}
    assert resource_quota_for(["gpu-users", "data-science"], reordered, DEFAULT) == SCIENCE


def test_no_default_and_no_match_is_no_quota() -> None:
    assert resource_quota_for(["x"], QUOTAS, None) is None
    assert resource_quota_for(["x"], {}, {}) is None


def test_a_malformed_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"profile_group_resource_quotas\['gpu-users'\]"):
        check_group_quotas({"gpu-users": "8 cpus"})


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        f"c.DnaSpawner.profile_group_resource_quotas = {QUOTAS!r}\n"
        f"c.DnaSpawner.profile_resource_quota = {DEFAULT!r}\n"
    )
    return config


@pytest.mark.parametrize(
    ("groups", "expected"),
    [(["data-science", "gpu-users"], GPU), (["data-science"], SCIENCE), ([], DEFAULT)],
)
def test_the_spawner_renders_the_group_quota(
    tmp_path: Path, groups: list[str], expected: dict
) -> None:
    args = [a for g in groups for a in ("--group", g)]
    result = render(
        "--user", "bob", "--owner", "b@x", "--config", str(write_config(tmp_path)), *args
    )
    assert result.returncode == 0, result.stderr
    profile = next(yaml.safe_load_all(result.stdout))
    assert profile["spec"]["resourceQuotaSpec"] == expected


def test_a_bad_group_quota_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\nc.DnaSpawner.profile_group_resource_quotas = {'a': 3}\n"
    )
    result = render("--user", "bob", "--owner", "b@x", "--config", str(config))
    assert result.returncode == 2 and "profile_group_resource_quotas['a']" in result.stderr
    assert "Traceback" not in result.stderr
