"""Where the test suite finds the repository, the shared reference data and its cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Reference data beside the project root (CRDs, chart schema). Never copied into the repo.
SHARED_DIR = Path(os.environ.get("DNA_HUB_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()

#: Built binaries, virtualenvs and npm trees reused between runs.
CACHE_DIR = Path(os.environ.get("DNA_HUB_CACHE_DIR", Path.home() / ".cache" / "dna-hub")).resolve()

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip a test whose prerequisite is missing on a user's machine; fail it in CI.

    CI must run every test, so a missing prerequisite there is a failure, never a skip.
    """
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, or skip (fail in CI) with a clear message if it is absent."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        unavailable(
            f"{path} is missing: the shared reference data is expected beside the project "
            "root (set DNA_HUB_SHARED_DIR to point elsewhere)"
        )
    return path
