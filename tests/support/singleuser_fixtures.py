"""Fixtures for the single-user image: its pinned Python environment, without Docker.

No Docker engine is available to the tests, so the image's Python layer is reproduced as
a virtualenv: the exact lock file the Dockerfile installs (``--require-hashes --no-deps``)
plus the image's ``site-packages`` additions (the ``dna_hub_kfp_auth`` hook). Programs
then run in it as a subprocess with the environment a notebook pod would have.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.kfp_standin import KfpStandIn
from devstack.paths import CACHE_DIR, REPO_ROOT, unavailable

SINGLEUSER_DIR = REPO_ROOT / "images" / "singleuser"
LOCK_FILE = SINGLEUSER_DIR / "requirements.txt"
IMAGE_SITE_PACKAGES = SINGLEUSER_DIR / "site-packages"
KALE_CONFIG = SINGLEUSER_DIR / "kfp_server_config.json"
KALE_SAMPLES = REPO_ROOT / "tests" / "data" / "kale"

_COMPLETE_MARKER = ".dna-hub-complete"


def _run_logged(args: list[str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800)


def _build_venv(venv: Path) -> None:
    log = venv.with_name(venv.name + ".log")
    log.write_bytes(b"")
    # Same interpreter as the test run: the lock was compiled for it (3.11, Linux).
    _run_logged([sys.executable, "-m", "venv", "--clear", str(venv)], log)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # Exactly what the Dockerfile does: hashes enforced, no resolver surprises.
    _run_logged(
        [*pip, "install", "--no-cache-dir", "--require-hashes", "--no-deps", "-r", str(LOCK_FILE)],
        log,
    )
    _run_logged([*pip, "check"], log)
    (venv / _COMPLETE_MARKER).write_text(LOCK_FILE.name + "\n")


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


@pytest.fixture(scope="session")
def singleuser_venv() -> Path:
    """A cached virtualenv holding the image's locked requirements and start-up hook.

    ``${DNA_HUB_CACHE_DIR:-~/.cache/dna-hub}/singleuser-venv-<lock hash>``, reused while the
    lock file is unchanged. The first build downloads ~140 wheels (about a minute).
    """
    digest = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]
    venv = CACHE_DIR / f"singleuser-venv-{digest}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # A lock file, not a temp dir + rename: a venv's scripts embed its absolute path.
    with open(CACHE_DIR / f"singleuser-venv-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / _COMPLETE_MARKER).exists():
            try:
                _build_venv(venv)
            except (OSError, subprocess.SubprocessError) as error:
                log = venv.with_name(venv.name + ".log")
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                shutil.rmtree(venv, ignore_errors=True)
                unavailable(
                    f"could not build the single-user venv {venv} from {LOCK_FILE} "
                    f"({error}); pip output tail:\n{tail}"
                )
    # Copied every session (cheap) so the venv always carries the working tree's hook,
    # where the Dockerfile puts it: the interpreter's site-packages.
    target = _site_packages(venv)
    for name in ("dna_hub_kfp_auth.py", "dna_hub_kfp_auth.pth"):
        shutil.copyfile(IMAGE_SITE_PACKAGES / name, target / name)
    return venv


@dataclass(frozen=True)
class NotebookPod:
    """Runs programs in the image's Python with a notebook pod's environment."""

    venv: Path
    home: Path
    token_file: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def environ(self, notebook_env: Mapping[str, str]) -> dict[str, str]:
        env = {
            "PATH": f"{self.venv / 'bin'}{os.pathsep}/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            # The clients must reach the local stand-in directly.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **notebook_env,
            # What the PodDefault access-ml-pipeline adds (its projected token mount,
            # relocated to a temp file; kfp and Kale both honour this variable).
            "KF_PIPELINES_SA_TOKEN_PATH": str(self.token_file),
        }
        return env

    def run(
        self, args: list[str], notebook_env: Mapping[str, str], *, cwd: Path, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=self.environ(notebook_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{args} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                f"\n--- stderr\n{result.stderr[-6000:]}",
                pytrace=False,
            )
        return result


@pytest.fixture
def notebook_pod(singleuser_venv: Path, tmp_path: Path) -> NotebookPod:
    home = tmp_path / "home" / "jovyan"
    home.mkdir(parents=True)
    token_file = tmp_path / "secrets" / "kubeflow" / "pipelines" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("projected-token-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24])
    return NotebookPod(venv=singleuser_venv, home=home, token_file=token_file)


@pytest.fixture
def kfp_standin() -> Iterator[KfpStandIn]:
    with KfpStandIn() as standin:
        yield standin


@pytest.fixture
def kale_notebook(tmp_path: Path) -> Path:
    """A copy of the sample notebook (Kale writes its ``.kale/`` output beside it)."""
    work = tmp_path / "work"
    shutil.copytree(KALE_SAMPLES, work)
    return work / "pipeline.ipynb"
