"""Where the test suite finds the repository, the shared reference data and its cache.

The reference data (CRDs, Kubeflow's ClusterRoles, the z2jh chart and schema) is looked for
in this order — the first that exists is used:

1. ``$DNA_HUB_SHARED_DIR``, when set (nothing else is then tried);
2. ``../shared`` beside the project root (development machines and CI);
3. the verified download in the cache (``$DNA_HUB_CACHE_DIR/reference/...``);
4. nothing here: ``./dev setup`` and ``./dev demo`` download it there
   (``devstack/reference.py``: pinned upstream versions, sha256-verified), or say in one
   message what is missing and how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Built binaries, virtualenvs, npm trees and downloaded reference data reused between runs.
CACHE_DIR = Path(os.environ.get("DNA_HUB_CACHE_DIR", Path.home() / ".cache" / "dna-hub")).resolve()

SHARED_ENV = "DNA_HUB_SHARED_DIR"
#: Reference data beside the project root. Never copied into the repo.
BESIDE_REPO = (REPO_ROOT.parent / "shared").resolve()

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def shared_dir() -> Path:
    """The reference data directory, by the order above (steps 1-3; no network here).

    When none exists it returns the ``../shared`` path, so a message naming it is true.
    """
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV]).resolve()
    if BESIDE_REPO.is_dir():
        return BESIDE_REPO
    from devstack.reference import cache_dir

    downloaded = cache_dir()
    return downloaded if downloaded.is_dir() else BESIDE_REPO


def __getattr__(name: str) -> Path:
    # ``paths.SHARED_DIR``: shared_dir() at the time it is read (a download may add it).
    if name == "SHARED_DIR":
        return shared_dir()
    raise AttributeError(name)


def unavailable(reason: str) -> None:
    """Skip a test whose prerequisite is missing on a user's machine; fail it in CI.

    CI must run every test, so a missing prerequisite there is a failure, never a skip.
    """
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    """A path inside the reference data, or skip (fail in CI) with a clear message."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        unavailable(
            f"{path} is missing: the shared reference data is expected beside the project "
            f"root (set {SHARED_ENV} to point elsewhere), or downloaded by ./dev setup"
        )
    return path
