"""Issue 25.8: the minimum safe versions (dna_hub/policy/safe_versions.py), the pins that must
meet them, and `dna-hub doctor`'s report of the installed versions against them."""

from __future__ import annotations

import argparse
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from devstack import hub_image_env
from devstack.paths import REPO_ROOT, shared_path
from dna_hub.cli import doctor, versions_check
from dna_hub.policy.safe_versions import HUB, SAFE_VERSIONS, SINGLEUSER, problems

HUB_PINS = REPO_ROOT / "images" / "hub" / "requirements.txt"
SINGLEUSER_LOCK = REPO_ROOT / "images" / "singleuser" / "requirements.txt"

#: (hub major, single-user major) pairs of `jupyterhub` that are run together although
#: upstream's advice is to keep the major versions equal, each with the test that runs that
#: pair end to end. The hub image follows the z2jh chart (JupyterHub 5.x); the single-user
#: image is on 6.x: jupyterhub-singleuser 6.1.1 authenticates against the hub image
#: (JupyterHub 5.5.x) in tests/e2e/test_chart_pods.py (JupyterLab loads through the chart's
#: proxy, also after a hub pod replacement) and tests/e2e/test_e2e_containers.py.
SUPPORTED_SKEWS = {(5, 6): "tests/e2e/test_chart_pods.py"}


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements file (hash continuation lines ignored)."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def hub_image_versions() -> dict[str, str]:
    """The hub image's environment: the chart's frozen requirements, then our pins."""
    chart = pins(shared_path(*hub_image_env.REQUIREMENTS).read_text())
    return {**chart, **pins(HUB_PINS.read_text())}


def test_the_table_is_well_formed() -> None:
    packages = [row.package for row in SAFE_VERSIONS]
    assert len(packages) == len(set(packages))
    for row in SAFE_VERSIONS:
        Version(row.minimum)
        assert row.advisories and all(
            re.fullmatch(r"(CVE-\d{4}-\d+|GHSA(-[23456789cfghjmpqrvwx]{4}){3})", a)
            for a in row.advisories
        ), row
        assert row.images and set(row.images) <= {HUB, SINGLEUSER}


def test_hub_image_pins_meet_the_minimums() -> None:
    versions = hub_image_versions()
    assert problems(versions, HUB) == []
    assert versions["jupyterhub"] == "5.5.4"  # our pin wins over the chart's 5.5.0


def test_hub_image_env_and_dockerfile_install_the_same_pins() -> None:
    assert hub_image_env.IMAGE_PINS == HUB_PINS
    dockerfile = (REPO_ROOT / "images" / "hub" / "Dockerfile").read_text()
    assert "source=images/hub/requirements.txt" in dockerfile
    assert "--require-hashes" in dockerfile
    assert "--hash=sha256:" in HUB_PINS.read_text()


def test_singleuser_image_pins_meet_the_minimums() -> None:
    assert problems(pins(SINGLEUSER_LOCK.read_text()), SINGLEUSER) == []


def test_pyproject_lower_bounds_are_the_minimums() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = {
        (req := Requirement(line)).name.lower(): req for line in project["dependencies"]
    }
    for row in SAFE_VERSIONS:
        if HUB not in row.images or row.package not in requirements:
            continue
        specifier = requirements[row.package].specifier
        below = (*Version(row.minimum).release[:-1], Version(row.minimum).release[-1] - 1)
        # No version below the minimum is allowed; the lower bound is at least the minimum
        # (it may be higher: pyproject's lower bounds are the hub image's pins, which
        # tests/e2e/test_chart_deploy.py holds equal)
        assert not specifier.contains(".".join(map(str, below)), prereleases=True), row
        (lower,) = [Version(s.version) for s in specifier if s.operator == ">="]
        assert lower >= Version(row.minimum), row


def test_singleuser_jupyterhub_major_matches_the_hub_or_the_skew_is_stated() -> None:
    hub = Version(hub_image_versions()["jupyterhub"]).major
    singleuser = Version(pins(SINGLEUSER_LOCK.read_text())["jupyterhub"]).major
    if hub != singleuser:
        assert (hub, singleuser) in SUPPORTED_SKEWS, (hub, singleuser)
        assert (REPO_ROOT / SUPPORTED_SKEWS[hub, singleuser]).exists()


def test_problems_name_the_advisories() -> None:
    found = problems({"jupyterhub": "5.5.0", "oauthenticator": "17.4.0"}, HUB)
    assert [str(p) for p in found] == [
        "jupyterhub 5.5.0 is below the minimum safe version 5.5.1 "
        "(GHSA-c4gm-pwx9-9w8j, GHSA-69wv-m5fw-2fhp)"
    ]
    # Unknown is not safe: absent or unparseable versions fail.
    assert {p.package for p in problems({"jupyterhub": "5.5.1"}, HUB)} == {"oauthenticator"}
    assert problems({"jupyterhub": "dev", "oauthenticator": "17.4.0"}, HUB)[0].installed == "dev"
    assert problems({"jupyterhub": "6.1.1", "oauthenticator": "17.4.0"}, HUB) == []


def row(out: str, check: str) -> str:
    """RESULT and DETAIL of the table row `check`, with the column padding squeezed."""
    match = re.search(rf"^{re.escape(check)}\s+(\S+)\s+(.*)$", out, re.MULTILINE)
    assert match, out
    return f"{match[1]} {match[2]}"


def run_doctor(monkeypatch: pytest.MonkeyPatch, installed: dict[str, str]) -> int:
    """doctor's exit status and table with no cluster checks and these installed versions."""

    async def no_cluster_checks(args: argparse.Namespace) -> list[doctor.Check]:
        return []

    monkeypatch.setattr(doctor, "run_checks", no_cluster_checks)
    monkeypatch.setattr(versions_check, "installed_version", installed.get)
    return doctor.run_doctor(argparse.Namespace())


def test_doctor_fails_below_the_minimum(monkeypatch, capsys) -> None:
    status = run_doctor(monkeypatch, {"jupyterhub": "5.5.0", "oauthenticator": "17.4.0"})
    out = capsys.readouterr().out
    assert status == 1, out
    assert row(out, "jupyterhub >= 5.5.1 (minimum safe version)") == (
        "FAIL jupyterhub 5.5.0 is below the minimum safe version 5.5.1 "
        "(GHSA-c4gm-pwx9-9w8j, GHSA-69wv-m5fw-2fhp)"
    )
    assert "fix: upgrade jupyterhub in the hub image to 5.5.1 or later" in out
    assert row(out, "oauthenticator >= 17.4.0 (minimum safe version)") == "pass 17.4.0 installed"


def test_doctor_reports_the_installed_versions(monkeypatch, capsys) -> None:
    status = run_doctor(monkeypatch, {"jupyterhub": "5.5.4", "oauthenticator": "17.4.0"})
    out = capsys.readouterr().out
    assert status == 0, out
    assert row(out, "jupyterhub >= 5.5.1 (minimum safe version)") == "pass 5.5.4 installed"


def test_versions_check_reads_this_environment() -> None:
    checks = versions_check.check_versions()
    assert [c.ok for c in checks] == [True] * len(checks)
    assert any(c.name.startswith("jupyterhub >=") for c in checks)
    assert all(c.detail.endswith(" installed") for c in checks)
