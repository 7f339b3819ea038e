"""The hub image's Python environment, on this machine: the versions production runs.

``quay.io/jupyterhub/k8s-hub:4.4.0`` is a frozen requirements file
(``../shared/charts/k8s-hub-4.4.0-requirements.txt``: JupyterHub 5.5.0, KubeSpawner 7.0.0,
OAuthenticator 17.4.0, kubernetes-asyncio, pycurl, ...) installed on Python 3.12; our image
installs its own security pins over it (``images/hub/requirements.txt``: JupyterHub 5.5.4,
``--no-deps``) and adds the dna_hub wheel without pulling anything else
(images/hub/Dockerfile). Here:

* a virtualenv with exactly those requirements and then our pins, cached under
  ``DNA_HUB_CACHE_DIR`` and keyed by both files' hashes and the interpreter (made once, under
  a file lock);
* the dna_hub wheel built from this checkout, installed ``--no-deps`` into its own directory
  keyed by the hash of the package sources (so worktrees with different sources never share
  one), put on ``PYTHONPATH`` — entry points included;
* ``pip check`` of the result must be clean, as the image build requires.

Differences from the image, on purpose: the interpreter is the image's Python 3.12 when one
is on PATH (``DNA_HUB_HUB_PYTHON`` to choose), else this machine's ``python3``; pycurl comes
from its wheel rather than built against the image's libcurl.

``python -m devstack.hub_image_env`` creates it and prints the interpreter.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack import paths

REQUIREMENTS = ("charts", "k8s-hub-4.4.0-requirements.txt")
#: The hub image's own pins over the chart's (images/hub/Dockerfile installs the same).
IMAGE_PINS = paths.REPO_ROOT / "images" / "hub" / "requirements.txt"
#: What the dna_hub wheel is made of (images/hub/Dockerfile copies the same).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "dna_hub", "profile-templates")
INSTALL_TIMEOUT = 1800


class HubEnvError(RuntimeError):
    pass


@dataclass(frozen=True)
class HubImageEnv:
    python: Path
    dna_hub_dir: Path

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that runs as in the hub image."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = str(self.dna_hub_dir)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env

    def run(
        self, *args: str, timeout: float = 120, **kwargs: object
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.python), *args],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[arg-type]
        )


def base_python() -> str:
    chosen = os.environ.get("DNA_HUB_HUB_PYTHON")
    if chosen:
        return chosen
    for name in ("python3.12", "python3"):
        exe = shutil.which(name)
        if exe and subprocess.run([exe, "-c", ""], capture_output=True).returncode == 0:
            return exe
    return sys.executable


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:16]


def _source_digest() -> str:
    files: list[bytes] = []
    for entry in WHEEL_SOURCES:
        path = paths.REPO_ROOT / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in candidates:
            if f.is_file() and "__pycache__" not in f.parts:
                files += [str(f.relative_to(paths.REPO_ROOT)).encode(), f.read_bytes()]
    return _digest(*files)


def _run(cmd: list[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise HubEnvError(f"{what} failed ({' '.join(cmd)}):\n{result.stdout}\n{result.stderr}")


def _locked(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _venv(requirements: Path) -> Path:
    interpreter = base_python()
    version = subprocess.run(
        [interpreter, "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    ).stdout.strip()
    key = _digest(requirements.read_bytes(), IMAGE_PINS.read_bytes(), version.encode())
    root = paths.CACHE_DIR / "hub-image-venv"
    target = root / key
    python = target / "bin" / "python"
    marker = target / ".installed"
    if marker.exists():
        return python
    fd = _locked(root)
    try:
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            _run([interpreter, "-m", "venv", str(target)], "creating the hub-image venv")
            _run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "-r", str(requirements)],
                f"installing {requirements.name}",
            )  # fmt: skip
            _run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "--no-deps", "--require-hashes", "-r", str(IMAGE_PINS)],
                "installing images/hub/requirements.txt",
            )  # fmt: skip
            marker.write_text(version + "\n")
    finally:
        os.close(fd)
    return python


def _dna_hub(python: Path) -> Path:
    root = paths.CACHE_DIR / "hub-image-dna-hub"
    target = root / _source_digest()
    marker = target / ".installed"
    if marker.exists():
        return target
    fd = _locked(root)
    try:
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix="dna-hub-wheel-") as tmp:
                _run(
                    [str(python), "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                     "--no-deps", "--wheel-dir", tmp, str(paths.REPO_ROOT)],
                    "building the dna_hub wheel",
                )  # fmt: skip
                (wheel,) = Path(tmp).glob("dna_hub-*.whl")
                _run(
                    [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     "--no-deps", "--target", str(target), str(wheel)],
                    "installing the dna_hub wheel",
                )  # fmt: skip
            marker.touch()
    finally:
        os.close(fd)
    return target


def hub_image_env() -> HubImageEnv:
    """The environment, made if needed; raises :class:`HubEnvError` if ``pip check`` fails."""
    requirements = paths.shared_path(*REQUIREMENTS)
    python = _venv(requirements)
    env = HubImageEnv(python=python, dna_hub_dir=_dna_hub(python))
    check = env.run("-m", "pip", "check", "--disable-pip-version-check")
    if check.returncode != 0:
        raise HubEnvError(f"pip check in the hub-image environment:\n{check.stdout}{check.stderr}")
    return env


def main() -> int:
    env = hub_image_env()
    print(env.python)
    print(env.dna_hub_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
