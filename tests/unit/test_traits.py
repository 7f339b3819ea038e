"""Every dna_hub option is a documented traitlets trait (so `jupyterhub --help-all` lists it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from traitlets import HasTraits

from dna_hub import DnaOIDCAuthenticator, DnaSpawner


def own_config_traits(cls: type[HasTraits]) -> dict:
    base = cls.__mro__[1]
    return {
        name: trait
        for name, trait in cls.class_traits(config=True).items()
        if name not in base.class_traits(config=True) or trait is not base.class_traits()[name]
    }


@pytest.mark.parametrize("cls", [DnaSpawner, DnaOIDCAuthenticator])
def test_every_option_has_help(cls: type[HasTraits]) -> None:
    traits = own_config_traits(cls)
    assert traits, f"{cls.__name__} defines no options?"
    undocumented = [name for name, trait in traits.items() if len((trait.help or "").strip()) < 20]
    assert not undocumented, f"{cls.__name__} options without help: {undocumented}"


def test_help_all_lists_the_options() -> None:
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    out = subprocess.run(
        [str(jupyterhub), "--help-all"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for name in ("namespace_template", "profile_template_dirs", "kfp_endpoint", "pipeline_uid"):
        assert f"--DnaSpawner.{name}=" in out
    assert "--DnaOIDCAuthenticator.issuer=" in out
