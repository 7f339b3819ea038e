"""Minimum safe versions of what the hub and the single-user image run: the one table.

Each row is a package, the lowest version without the listed advisories, the advisories
(checked against their sources when added; see the row's comment) and the images it
matters in. ``dna-hub doctor`` checks the hub's installed versions against it
(:mod:`dna_hub.cli.versions_check`); tests/unit/test_safe_versions.py checks the pins of
images/hub/requirements.txt, images/singleuser/requirements.txt and pyproject.toml.
Add a row (or raise a minimum) when an advisory is published; never lower one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

__all__ = ["HUB", "SAFE_VERSIONS", "SINGLEUSER", "SafeVersion", "VersionProblem", "problems"]

HUB = "hub"
SINGLEUSER = "singleuser"


@dataclass(frozen=True)
class SafeVersion:
    package: str  #: the distribution name on PyPI
    minimum: str  #: lowest version without `advisories`
    advisories: tuple[str, ...]
    images: tuple[str, ...]  #: HUB, SINGLEUSER


SAFE_VERSIONS: tuple[SafeVersion, ...] = (
    # JupyterHub 5.5.1 changelog (security release, 2026-08-10): user-initiated sharing (high)
    # and filtered admin roles (low). The hub is what is affected; the single-user image
    # carries the package too (jupyterhub-singleuser), so it is held to the same minimum.
    SafeVersion(
        "jupyterhub",
        "5.5.1",
        ("GHSA-c4gm-pwx9-9w8j", "GHSA-69wv-m5fw-2fhp"),
        (HUB, SINGLEUSER),
    ),
    # PYSEC-2026-2238: Auth0OAuthenticator accepted unverified emails; fixed in 17.4.0.
    SafeVersion("oauthenticator", "17.4.0", ("CVE-2026-33175", "GHSA-rrvg-cxh4-qhrv"), (HUB,)),
    # GHSA-rch3-82jr-f9w9 (CommandLinker XSS, token theft) and PYSEC-2026-164 (extension
    # manager allow-list): "JupyterLab 4.5.7 include[s] patches".
    SafeVersion(
        "jupyterlab",
        "4.5.7",
        ("CVE-2026-40171", "GHSA-rch3-82jr-f9w9", "CVE-2026-42266", "GHSA-37w4-hwhx-4rc4"),
        (SINGLEUSER,),
    ),
    # PYSEC-2026-366: stored XSS in the nbconvert handlers (critical); fixed in 2.20.0.
    SafeVersion(
        "jupyter-server", "2.20.0", ("CVE-2026-44727", "GHSA-fcw5-x6j4-ccmp"), (SINGLEUSER,)
    ),
)


@dataclass(frozen=True)
class VersionProblem:
    package: str
    installed: str | None
    row: SafeVersion

    def __str__(self) -> str:
        found = "not installed" if self.installed is None else self.installed
        return (
            f"{self.package} {found} is below the minimum safe version {self.row.minimum} "
            f"({', '.join(self.row.advisories)})"
        )


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def problems(installed: Mapping[str, str | None], image: str) -> list[VersionProblem]:
    """The rows of `image` that `installed` (package -> version, None if absent) fails.

    A package that is absent, or whose version cannot be parsed, fails: unknown is not safe.
    """
    found: list[VersionProblem] = []
    for row in SAFE_VERSIONS:
        if image not in row.images:
            continue
        version = installed.get(row.package)
        parsed = _version(version) if version is not None else None
        if parsed is None or parsed < Version(row.minimum):
            found.append(VersionProblem(row.package, version, row))
    return found
