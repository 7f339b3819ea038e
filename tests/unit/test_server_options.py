"""Server options gated by group (issue 27, item 2): who sees which entry, option and choice
of the spawn form, and the re-check of what a form posted (dna_hub/policy/server_options.py)."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError

from dna_hub import DnaSpawner
from dna_hub.hub.settings import DnaSettings
from dna_hub.policy.server_options import (
    GROUPS_KEY,
    is_gated,
    refused_choice,
    server_option_problem,
    visible_options,
)

OPTIONS: list[dict[str, Any]] = [
    {
        "display_name": "Standard",
        "slug": "standard",
        "default": True,
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "stable": {"display_name": "Stable", "default": True},
                    "beta": {"display_name": "Beta", GROUPS_KEY: ["ml-platform"]},
                },
            },
            "debug": {
                "display_name": "Debug",
                GROUPS_KEY: ["ml-platform"],
                "choices": {"on": {"display_name": "On"}},
            },
        },
    },
    {
        "display_name": "GPU server",
        "slug": "gpu",
        GROUPS_KEY: ["gpu-users"],
        "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"}},
    },
]


def slugs(options: list[dict[str, Any]]) -> list[str]:
    return [o["slug"] for o in options]


def test_everyone_sees_what_names_no_group() -> None:
    seen = visible_options(OPTIONS, ["data-science"])
    assert slugs(seen) == ["standard"]
    assert list(seen[0]["profile_options"]) == ["image"]
    assert list(seen[0]["profile_options"]["image"]["choices"]) == ["stable"]


def test_members_see_their_groups_entries_without_the_gating_keys() -> None:
    seen = visible_options(OPTIONS, ["data-science", "gpu-users", "ml-platform"])
    assert slugs(seen) == ["standard", "gpu"]
    assert list(seen[0]["profile_options"]) == ["image", "debug"]
    assert list(seen[0]["profile_options"]["image"]["choices"]) == ["stable", "beta"]
    assert GROUPS_KEY not in repr(seen)  # the form does not list who else may use what
    assert seen[1]["kubespawner_override"] == OPTIONS[1]["kubespawner_override"]
    assert GROUPS_KEY in OPTIONS[1]  # the configuration is not changed


def test_groups_are_compared_exactly() -> None:
    assert slugs(visible_options(OPTIONS, ["GPU-users", "gpu", "gpu-users-x"])) == ["standard"]


@pytest.mark.parametrize(
    ("groups", "posted", "refused"),
    [
        (["data-science"], {"profile": "gpu"}, "server option 'gpu' is for groups ['gpu-users']"),
        (["data-science"], {"profile": "standard", "image": "beta"}, "choice 'beta'"),
        (["data-science"], {"profile": "standard", "debug": "on"}, "option 'debug'"),
        (["data-science"], {"profile": "standard", "debug--unlisted-choice": "x"}, "'debug'"),
        (["gpu-users"], {"profile": "gpu"}, None),
        (["ml-platform"], {"profile": "standard", "image": "beta", "debug": "on"}, None),
        (["data-science"], {"profile": "standard", "image": "stable"}, None),
        (["data-science"], {}, None),  # the default of what they see
        (["data-science"], {"profile": "no-such"}, None),  # KubeSpawner refuses it
    ],
)
def test_what_a_form_posted_is_checked_again(
    groups: list[str], posted: dict[str, str], refused: str | None
) -> None:
    found = refused_choice(OPTIONS, posted, groups)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found


def test_a_hidden_default_is_not_the_default_of_others() -> None:
    options = [
        {"display_name": "GPU", "slug": "gpu", "default": True, GROUPS_KEY: ["gpu-users"]},
        {"display_name": "CPU", "slug": "cpu"},
    ]
    assert refused_choice(options, {}, ["data-science"]) is None
    assert slugs(visible_options(options, ["data-science"])) == ["cpu"]


def test_gated_or_not() -> None:
    assert is_gated(OPTIONS)
    assert not is_gated(visible_options(OPTIONS, ["gpu-users", "ml-platform"]))
    assert not is_gated([])


@pytest.mark.parametrize(
    "entry",
    [
        {"slug": "a", GROUPS_KEY: "gpu-users"},  # a string, not a list
        {"slug": "a", GROUPS_KEY: []},
        {"slug": "a", GROUPS_KEY: [""]},
        {"slug": "a", "profile_options": {"o": {GROUPS_KEY: [1]}}},
        {"slug": "a", "profile_options": {"o": {"choices": {"c": {GROUPS_KEY: None}}}}},
        "gpu",
    ],
)
def test_misconfigured_gating_is_refused_at_start(entry: Any) -> None:
    assert server_option_problem(entry) is not None
    with pytest.raises(TraitError, match=GROUPS_KEY if isinstance(entry, dict) else "dict"):
        DnaSettings(server_options=[entry])


def test_well_configured_gating_is_accepted() -> None:
    assert all(server_option_problem(entry) is None for entry in OPTIONS)
    assert DnaSettings(server_options=OPTIONS).server_options == OPTIONS
    assert "dna_hub_groups" in DnaSpawner.class_traits()["server_options"].help
