"""Checkov (PyPI ``checkov``), the IaC scanner, in a cached virtualenv of its own.

Not in the test venv: checkov pins ``packaging<24`` and pytest 9 needs ``packaging>=24``.
``${DNA_HUB_CACHE_DIR:-~/.cache/dna-hub}/checkov-venv-<version>``, built once (about a
minute) under a file lock, so parallel test runs share it.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack.paths import CACHE_DIR, unavailable

CHECKOV_VERSION = "3.3.30"
_COMPLETE_MARKER = ".dna-hub-complete"


def checkov_binary() -> Path:
    venv = CACHE_DIR / f"checkov-venv-{CHECKOV_VERSION}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"checkov-venv-{CHECKOV_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / _COMPLETE_MARKER).exists():
            log = venv.with_name(venv.name + ".log")
            try:
                with log.open("wb") as out:
                    for args in (
                        [sys.executable, "-m", "venv", "--clear", str(venv)],
                        [
                            str(venv / "bin" / "python"),
                            "-m",
                            "pip",
                            "install",
                            "--disable-pip-version-check",
                            f"checkov=={CHECKOV_VERSION}",
                        ],
                    ):
                        subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=True)
            except (OSError, subprocess.SubprocessError):
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                shutil.rmtree(venv, ignore_errors=True)
                unavailable(f"cannot install checkov {CHECKOV_VERSION} from PyPI:\n{tail}")
            (venv / _COMPLETE_MARKER).write_text(CHECKOV_VERSION + "\n")
    return venv / "bin" / "checkov"


def run_checkov(manifest: Path, checks: list[str]) -> dict[str, Any]:
    """Run the given checks on one Kubernetes manifest file; checkov's JSON report."""
    result = subprocess.run(
        [
            str(checkov_binary()),
            "--compact",
            "--skip-download",
            "--framework",
            "kubernetes",
            "--check",
            ",".join(checks),
            "--output",
            "json",
            "--file",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # exit 1 = some check failed; anything else but 0 is checkov itself failing
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report
