"""``dna-hub doctor``: are the hub's installed packages at or above the minimum safe versions?

The table is :data:`dna_hub.policy.safe_versions.SAFE_VERSIONS`; this reports each hub
package's installed version (``importlib.metadata``, the environment doctor runs in: the hub
image with ``kubectl exec deploy/hub -- dna-hub doctor``) and fails below the minimum,
naming the advisories. The single-user image's pins are checked by the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from dna_hub.policy.safe_versions import HUB, SAFE_VERSIONS, problems

__all__ = ["VersionCheck", "check_versions", "installed_version"]


@dataclass(frozen=True)
class VersionCheck:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> list[VersionCheck]:
    """One check per hub package of the table: its installed version against the minimum."""
    rows = [row for row in SAFE_VERSIONS if HUB in row.images]
    installed = {row.package: installed_version(row.package) for row in rows}
    failing = {p.package: p for p in problems(installed, HUB)}
    checks = []
    for row in rows:
        name = f"{row.package} >= {row.minimum} (minimum safe version)"
        problem = failing.get(row.package)
        if problem is None:
            checks.append(VersionCheck(name, True, f"{installed[row.package]} installed"))
        else:
            checks.append(
                VersionCheck(
                    name,
                    False,
                    str(problem),
                    f"upgrade {row.package} in the hub image to {row.minimum} or later "
                    "(images/hub/requirements.txt)",
                )
            )
    return checks
