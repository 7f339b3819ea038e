"""Container images for the tests, built from the project's real Dockerfiles with buildah.

``ensure_image("singleuser")`` / ``ensure_image("hub")`` return a local image tag
(``localhost/dna-hub-test/<name>:<input hash>``) built from ``images/<name>/Dockerfile``
*as it is* (``buildah bud --isolation chroot --pull=never``), cached in the root podman
storage and rebuilt when an input changes (the Dockerfile, its build context files, the
base image's inputs). A Dockerfile that does not build raises :class:`ImageBuildError`
with the build log's tail.

Base images cannot be pulled here (the only registries reachable are PyPI, Debian's
archive and npm), so the upstream bases are replaced by **STAND-IN bases**, tagged
locally with the upstream name so that the Dockerfiles' ``FROM`` resolves unchanged:

* a Debian bookworm root file system made with ``debootstrap --variant=minbase`` from
  Debian's archive (plus the libraries CPython needs, ``ca-certificates``, ``sudo``,
  ``tini``, ``curl``, ``libcurl4``, ``libpq5``, ``sqlite3``), imported with
  ``podman import``;
* ``quay.io/jupyter/minimal-notebook:2024-10-14`` stand-in: user ``jovyan`` 1000:100 with
  ``/home/jovyan``, a CPython 3.11 at ``/opt/conda`` (owned by 1000:100, empty
  site-packages except pip), ``ENV`` as docker-stacks sets it (``CONDA_DIR``, ``NB_*``,
  ``PATH``, ``HOME``, ``SHELL``, ``LANG``), ``USER 1000``, ``WORKDIR /home/jovyan``,
  ``ENTRYPOINT tini -g -- start.sh`` where ``start.sh`` only ``exec``\\s its arguments.
  Not provided: conda/mamba, the docker-stacks start-up hooks (``start.sh``'s user and
  permission fixing, ``before-notebook.d``), JupyterLab/Notebook/JupyterHub preinstalled
  (our lock installs them), locales, fonts, ``start-notebook.py``;
* ``quay.io/jupyterhub/k8s-hub:4.4.0`` stand-in, after ``../shared/charts/k8s-hub-4.4.0
  .Dockerfile``: user ``jovyan`` 1000:1000, a CPython 3.12 at ``/usr/local``, the chart's
  frozen ``k8s-hub-4.4.0-requirements.txt`` plus ``py-spy`` installed from PyPI,
  ``libcurl4``/``libpq5``/``sqlite3``/``tini``/``curl``, ``WORKDIR /srv/jupyterhub`` owned
  by jovyan, ``USER jovyan``, ``ENTRYPOINT tini --``, the upstream ``CMD``. Different:
  ``pycurl`` comes as PyPI's binary wheel (upstream builds it from source), and
  ``dnsutils``/``git``/``less``/``vim`` of the default stage are left out.

Where the interpreters come from: Debian bookworm's CPython is 3.11.2 (older than the
single-user lock allows, >= 3.11.5) and it has no 3.12; PyPI distributes no CPython
that installs without downloading from elsewhere. So the machine's own pyenv builds are
used (``$PYENV_ROOT/versions/3.11.*`` and ``3.12.*``; override with
``DNA_HUB_STANDIN_PYTHON311`` / ``DNA_HUB_STANDIN_PYTHON312``), copied with their
site-packages emptied, their script shebangs relocated, and ``libpython`` found through
``ld.so.conf`` instead of the build's absolute RUNPATH.

The container engine is Debian's podman/buildah with ``runc`` and the cgroupfs manager
(crun refuses this host's hybrid cgroups) and ``default_ulimits = []`` (setrlimit is
refused here): see :func:`engine_env`. PyPI is reached inside builds with TLS
verification on: both stand-in bases carry an ``/etc/pip.conf`` naming the system CA
bundle (``cert = /etc/ssl/certs/ca-certificates.crt``; upstream pip would use certifi's),
and the host's CA bundle is mounted read-only over that file in every ``RUN`` step (the
image keeps Debian's bundle; this host reaches PyPI through its own trust store).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import CACHE_DIR, REPO_ROOT, SHARED_DIR

IMAGES_DIR = CACHE_DIR / "images"
TEST_REPO = "localhost/dna-hub-test"
INPUTS_LABEL = "dna-hub.test.inputs"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT = 1800

#: Debian packages of the stand-in root file system (one rootfs for both bases).
DEBIAN_PACKAGES = (
    # CPython's shared-library dependencies
    "libffi8 libsqlite3-0 libssl3 libbz2-1.0 liblzma5 zlib1g libreadline8 libncursesw6 "
    "libuuid1 libgdbm6 libnsl2 libexpat1 "
    # what the upstream bases have and the Dockerfiles/charts use
    "ca-certificates sudo tini curl libcurl4 libpq5 sqlite3"
).split()
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DNA_HUB_DEBIAN_MIRROR", "http://deb.debian.org/debian")

CONTAINERS_CONF = """\
# Written by devstack/images.py for the tests' podman/buildah (CONTAINERS_CONF).
[containers]
# This host refuses setrlimit from containers: no default ulimits.
default_ulimits = []

[engine]
# crun refuses this host's hybrid cgroup layout; runc with cgroupfs works.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class ImageBuildError(RuntimeError):
    """A stand-in base or a project image could not be built."""


# --------------------------------------------------------------------------- engine


def engine_env() -> dict[str, str]:
    """Environment for podman/buildah: our containers.conf, host environment otherwise."""
    conf = IMAGES_DIR / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(CONTAINERS_CONF)
        tmp.replace(conf)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def engine_missing() -> list[str]:
    """Programs the container engine needs that are not installed."""
    return [p for p in ("podman", "buildah", "runc", "debootstrap") if shutil.which(p) is None]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def image_label(tag: str, label: str = INPUTS_LABEL) -> str | None:
    """A label of a local image, None if the image does not exist."""
    result = podman(
        "image", "inspect", "--format", f'{{{{ index .Labels "{label}" }}}}', tag, check=False
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip()


def _run_logged(args: list[str], log: Path, *, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run(
            args,
            cwd=cwd,
            env=engine_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ImageBuildError(
            f"{args[0]} {args[1]} failed ({result.returncode}); log {log}:\n{tail}"
        )


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per image (other test sessions on this machine share storage)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _hash(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _files_under(root: Path, relative: Iterable[str]) -> Iterator[Path]:
    for rel in relative:
        path = root / rel
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                    yield file
        else:
            yield path


def _hash_files(root: Path, relative: Iterable[str]) -> str:
    parts: list[bytes | str] = []
    for file in _files_under(root, relative):
        parts += [str(file.relative_to(root)), file.read_bytes()]
    return _hash(parts)


# --------------------------------------------------------------------------- the rootfs


def _debian_tag() -> tuple[str, str]:
    inputs = _hash([DEBIAN_SUITE, DEBIAN_MIRROR, *DEBIAN_PACKAGES, "v1"])
    return f"localhost/dna-hub-standin/debian:{DEBIAN_SUITE}-{inputs[:12]}", inputs


def ensure_debian_base() -> tuple[str, str]:
    """The debootstrapped Debian image (tag, inputs hash), built once."""
    tag, inputs = _debian_tag()
    with _locked("debian"):
        if image_label(tag) == inputs:
            return tag, inputs
        log = IMAGES_DIR / "debian.log"
        log.write_bytes(b"")
        with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=IMAGES_DIR) as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run_logged(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(DEBIAN_PACKAGES)}",
                    DEBIAN_SUITE,
                    str(rootfs),
                    DEBIAN_MIRROR,
                ],
                log,
            )
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tarball = Path(tmp) / "rootfs.tar"
            _run_logged(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], log
            )
            _run_logged(
                [
                    "podman",
                    "import",
                    "--change",
                    f"LABEL {INPUTS_LABEL}={inputs}",
                    "--change",
                    'CMD ["/bin/bash"]',
                    str(tarball),
                    tag,
                ],
                log,
            )
    return tag, inputs


PAUSE_SCRIPT = """\
#!/bin/sh
# The pod sandbox's process (the stand-in's "pause"): holds the network namespace and
# exits at once on SIGTERM/SIGINT.
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def ensure_infra_image() -> str:
    """The kubelet stand-in's pod sandbox ("pause") image, on the Debian stand-in."""
    debian, debian_inputs = ensure_debian_base()
    inputs = _hash([debian_inputs, PAUSE_SCRIPT])
    tag = f"localhost/dna-hub-standin/pause:{inputs[:12]}"
    with _locked("pause"):
        if image_label(tag) == inputs:
            return tag
        with tempfile.TemporaryDirectory(prefix="pause-", dir=IMAGES_DIR) as tmp:
            context = Path(tmp)
            (context / "pause").write_text(PAUSE_SCRIPT)
            (context / "Containerfile").write_text(
                f"FROM {debian}\nCOPY --chmod=0755 pause /pause\n"
                'ENTRYPOINT ["/pause"]\nUSER 65535:65535\n'
            )
            _buildah_bud(context / "Containerfile", context, tag, inputs, IMAGES_DIR / "pause.log")
    return tag


# --------------------------------------------------------------------------- stand-in bases


PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"


@dataclass(frozen=True)
class StandInBase:
    """A stand-in for an upstream base image, built from a generated Containerfile."""

    key: str
    upstream: str
    python_minor: str  # "3.11"
    python_prefix: str  # where the interpreter lives in the image
    containerfile: str  # with {debian} for the rootfs image
    extra_files: tuple[tuple[str, Path | str], ...] = ()  # str: inline text
    #: Requirements (by name, version from the requirements file) that PyPI has as source
    #: only: built into ``wheels/`` of the context with the host's compiler and the same
    #: interpreter, as upstream's build stage does in a compiler image.
    host_wheels: tuple[str, ...] = ()


_MINIMAL_NOTEBOOK = StandInBase(
    key="minimal-notebook",
    upstream="quay.io/jupyter/minimal-notebook:2024-10-14",
    python_minor="3.11",
    python_prefix="/opt/conda",
    containerfile="""\
# STAND-IN for quay.io/jupyter/minimal-notebook (see devstack/images.py)
FROM {debian}
COPY pip.conf /etc/pip.conf
COPY --chown=1000:100 python/ /opt/conda/
COPY --chmod=0755 start.sh /usr/local/bin/start.sh
RUN echo /opt/conda/lib > /etc/ld.so.conf.d/opt-conda.conf && ldconfig \\
 && useradd --no-log-init --create-home --shell /bin/bash --uid 1000 --gid 100 jovyan \\
 && mkdir -p /home/jovyan/work && chown -R 1000:100 /home/jovyan \\
 && /opt/conda/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, readline, uuid'
ENV CONDA_DIR=/opt/conda SHELL=/bin/bash NB_USER=jovyan NB_UID=1000 NB_GID=100 \\
    LC_ALL=C.UTF-8 LANG=C.UTF-8 LANGUAGE=C.UTF-8 HOME=/home/jovyan \\
    PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 8888
ENTRYPOINT ["tini", "-g", "--", "start.sh"]
CMD ["jupyter", "lab"]
WORKDIR /home/jovyan
USER 1000
""",
    extra_files=(
        ("pip.conf", PIP_CONF),
        (
            "start.sh",
            "#!/bin/bash\n# stand-in for docker-stacks' start.sh: no hooks, just run.\n"
            'exec "$@"\n',
        ),
    ),
)

_K8S_HUB = StandInBase(
    key="k8s-hub",
    upstream="quay.io/jupyterhub/k8s-hub:4.4.0",
    python_minor="3.12",
    python_prefix="/usr/local",
    containerfile="""\
# STAND-IN for quay.io/jupyterhub/k8s-hub:4.4.0 (see devstack/images.py), after
# ../shared/charts/k8s-hub-4.4.0.Dockerfile (slim stage + py-spy of the default stage).
FROM {debian}
COPY pip.conf /etc/pip.conf
COPY python/ /usr/local/
COPY requirements.txt /tmp/requirements.txt
COPY wheels/ /tmp/wheels/
RUN ldconfig \\
 && useradd --no-log-init --create-home --home-dir /home/jovyan --uid 1000 --user-group \\
        --comment "Default user" jovyan \\
 && python3 -m pip install --no-cache-dir --find-links /tmp/wheels \\
        -r /tmp/requirements.txt py-spy \\
 && rm -r /tmp/requirements.txt /tmp/wheels \\
 && mkdir -p /srv/jupyterhub && chown jovyan:jovyan /srv/jupyterhub
WORKDIR /srv/jupyterhub
USER jovyan
EXPOSE 8081
ENTRYPOINT ["tini", "--"]
CMD ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"]
""",
    extra_files=(
        ("pip.conf", PIP_CONF),
        ("requirements.txt", SHARED_DIR / "charts" / "k8s-hub-4.4.0-requirements.txt"),
    ),
    host_wheels=("psycopg2",),
)

STANDIN_BASES = {base.key: base for base in (_MINIMAL_NOTEBOOK, _K8S_HUB)}


def host_python(minor: str) -> Path:
    """The machine's CPython ``minor`` (a pyenv build), newest patch release."""
    override = os.environ.get(f"DNA_HUB_STANDIN_PYTHON{minor.replace('.', '')}")
    if override:
        return Path(override)
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(
        (p for p in root.glob(f"{minor}.*") if p.name.replace(".", "").isdigit()),
        key=lambda p: tuple(int(x) for x in p.name.split(".")),
    )
    if not found:
        raise ImageBuildError(
            f"no CPython {minor} under {root} to put into the stand-in base image (Debian "
            f"bookworm has none that fits); set DNA_HUB_STANDIN_PYTHON{minor.replace('.', '')}"
        )
    return found[-1]


def _copy_python(source: Path, target: Path, minor: str, prefix: str) -> None:
    """The interpreter without its site-packages (pip kept), shebangs pointing at ``prefix``."""
    site = f"lib/python{minor}/site-packages"
    subprocess.run(
        [
            "rsync",
            "-a",
            "--delete",
            f"--exclude=/{site}/*",
            f"--exclude=/lib/python{minor}/test/",
            "--exclude=__pycache__/",
            f"{source}/",
            f"{target}/",
        ],
        check=True,
        timeout=600,
    )
    for entry in (source / site).iterdir():
        if entry.name.startswith("pip"):
            subprocess.run(["cp", "-a", str(entry), str(target / site)], check=True, timeout=120)
    old = f"#!{source}/bin/".encode()
    for script in (target / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            with script.open("rb") as handle:
                head = handle.read(len(old))
            if head == old:
                data = script.read_bytes()
                script.write_bytes(f"#!{prefix}/bin/".encode() + data[len(old) :])


def _host_wheels(base: StandInBase, python: Path, context: Path, log: Path) -> None:
    wheels = context / "wheels"
    wheels.mkdir()
    if not base.host_wheels:
        return
    requirements = dict(base.extra_files).get("requirements.txt")
    assert isinstance(requirements, Path)
    pins = dict(
        line.split("==", 1)
        for line in requirements.read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    )
    wanted = [f"{name}=={pins[name].strip()}" for name in base.host_wheels]
    _run_logged(
        [str(python / "bin" / "python3"), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
         "--wheel-dir", str(wheels), *wanted],
        log,
    )  # fmt: skip


def _base_inputs(base: StandInBase, debian_inputs: str) -> tuple[str, Path]:
    python = host_python(base.python_minor)
    parts: list[bytes | str] = [base.containerfile, debian_inputs, str(python), "v2"]
    parts += base.host_wheels
    for name, source in base.extra_files:
        parts += [name, source.read_bytes() if isinstance(source, Path) else source]
    return _hash(parts), python


def ensure_standin_base(key: str) -> tuple[str, str]:
    """Build (once) the stand-in for an upstream base: (upstream tag, inputs hash)."""
    base = STANDIN_BASES[key]
    debian, debian_inputs = ensure_debian_base()
    inputs, python = _base_inputs(base, debian_inputs)
    with _locked(key):
        if image_label(base.upstream) == inputs:
            return base.upstream, inputs
        log = IMAGES_DIR / f"{key}.log"
        log.write_bytes(b"")
        with tempfile.TemporaryDirectory(prefix=f"{key}-", dir=IMAGES_DIR) as tmp:
            context = Path(tmp)
            _copy_python(python, context / "python", base.python_minor, base.python_prefix)
            _host_wheels(base, python, context, log)
            for name, source in base.extra_files:
                if isinstance(source, Path):
                    shutil.copyfile(source, context / name)
                else:  # inline text
                    (context / name).write_text(source)
            (context / "Containerfile").write_text(base.containerfile.format(debian=debian))
            _buildah_bud(context / "Containerfile", context, base.upstream, inputs, log)
    return base.upstream, inputs


# --------------------------------------------------------------------------- project images


@dataclass(frozen=True)
class ProjectImage:
    name: str
    dockerfile: Path
    context: Path
    base: str  # key of STANDIN_BASES
    inputs: tuple[str, ...]  # files/dirs (relative to context) the image is built from


PROJECT_IMAGES = {
    "singleuser": ProjectImage(
        name="singleuser",
        dockerfile=REPO_ROOT / "images" / "singleuser" / "Dockerfile",
        context=REPO_ROOT / "images" / "singleuser",
        base="minimal-notebook",
        inputs=("Dockerfile", "requirements.txt", "kfp_server_config.json", "site-packages"),
    ),
    "hub": ProjectImage(
        name="hub",
        dockerfile=REPO_ROOT / "images" / "hub" / "Dockerfile",
        context=REPO_ROOT,
        base="k8s-hub",
        inputs=(
            "images/hub/Dockerfile",
            "images/hub/Dockerfile.dockerignore",
            "images/hub/build-requirements.txt",
            "images/hub/requirements.txt",
            "pyproject.toml",
            "README.md",
            "dna_hub",
            "profile-templates",
        ),
    ),
}


def _build_volumes() -> list[str]:
    """The host's CA bundle over the image's, read-only, in every RUN step."""
    return ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]


def _buildah_bud(dockerfile: Path, context: Path, tag: str, inputs: str, log: Path) -> None:
    _run_logged(
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "--layers=false",
            # docker format: OCI has no SHELL, and the Dockerfiles rely on theirs (pipefail)
            "--format=docker",
            *_build_volumes(),
            "--label",
            f"{INPUTS_LABEL}={inputs}",
            "-f",
            str(dockerfile),
            "-t",
            tag,
            str(context),
        ],
        log,
    )


def image_inputs(name: str) -> str:
    """The hash of everything ``name`` is built from (its files + its base's inputs)."""
    image = PROJECT_IMAGES[name]
    _debian, debian_inputs = _debian_tag()
    base_inputs, _python = _base_inputs(STANDIN_BASES[image.base], debian_inputs)
    return _hash([base_inputs, _hash_files(image.context, image.inputs), "format=docker"])


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    built: bool  # False when it came from the cache
    seconds: float


def build_project_image(
    name: str, *, dockerfile: Path | None = None, tag: str | None = None
) -> BuiltImage:
    """Build ``name`` now (no cache look-up); ``dockerfile`` overrides the real one (tests)."""
    image = PROJECT_IMAGES[name]
    ensure_standin_base(image.base)
    inputs = image_inputs(name)
    tag = tag or f"{TEST_REPO}/{name}:{inputs[:16]}"
    log = IMAGES_DIR / f"{name}-{inputs[:16]}.log"
    log.write_bytes(b"")
    started = time.monotonic()
    _buildah_bud(dockerfile or image.dockerfile, image.context, tag, inputs, log)
    return BuiltImage(tag, True, time.monotonic() - started)


def ensure_image(name: str) -> BuiltImage:
    """The local tag of project image ``name`` ("singleuser", "hub"), built if needed."""
    if name not in PROJECT_IMAGES:
        raise KeyError(f"unknown image {name!r}; known: {', '.join(PROJECT_IMAGES)}")
    missing = engine_missing()
    if missing:
        raise ImageBuildError(f"container engine programs missing: {', '.join(missing)}")
    image = PROJECT_IMAGES[name]
    ensure_standin_base(image.base)
    inputs = image_inputs(name)
    tag = f"{TEST_REPO}/{name}:{inputs[:16]}"
    with _locked(name):
        if image_label(tag) == inputs:
            return BuiltImage(tag, False, 0.0)
        built = build_project_image(name, tag=tag)
        _prune(f"{TEST_REPO}/{name}", keep=KEEP_BUILDS)
        return built


#: Builds of one project image kept in storage (every source change makes a new tag;
#: several worktrees on one machine may each use a different one).
KEEP_BUILDS = 4


def _prune(repository: str, keep: int) -> None:
    """Remove all but the ``keep`` newest tags of ``repository`` (in-use ones stay)."""
    result = podman(
        "images", "--filter", f"reference={repository}", "--format", "{{.Repository}}:{{.Tag}}",
        "--sort", "created", check=False,
    )  # fmt: skip
    tags = [t for t in result.stdout.split() if t.startswith(repository + ":")]
    # podman sorts "created" newest first
    for tag in tags[keep:]:
        podman("rmi", tag, check=False)


# --------------------------------------------------------------------------- the chart's proxy

PROXY_CONTAINERFILE = """\
FROM {debian}
COPY node /usr/local/bin/node
COPY node_modules /srv/configurable-http-proxy/node_modules
ENV PATH=/srv/configurable-http-proxy/node_modules/.bin:/usr/local/bin:/usr/bin:/bin
WORKDIR /srv/configurable-http-proxy
ENTRYPOINT ["configurable-http-proxy"]
USER 65534:65534
"""


def ensure_proxy_image(node_modules: Path) -> str:
    """STAND-IN for the chart's ``proxy.chp.image`` (quay.io/jupyterhub/configurable-http-proxy):
    the Debian stand-in with this machine's ``node`` and the test node modules'
    configurable-http-proxy (devstack/oidc_provider/package.json's version, not the chart's
    4.6.3), ``configurable-http-proxy`` on PATH, user 65534 as the chart runs it.
    """
    debian, debian_inputs = ensure_debian_base()
    node = Path(shutil.which("node") or "/usr/bin/node").resolve()
    inputs = _hash(
        [debian_inputs, PROXY_CONTAINERFILE, node.read_bytes(), str(node_modules.resolve())]
    )
    tag = f"{TEST_REPO}/configurable-http-proxy:{inputs[:16]}"
    with _locked("configurable-http-proxy"):
        if image_label(tag) == inputs:
            return tag
        with tempfile.TemporaryDirectory(prefix="chp-", dir=IMAGES_DIR) as tmp:
            context = Path(tmp)
            shutil.copy2(node, context / "node")
            shutil.copytree(node_modules, context / "node_modules", symlinks=True)
            (context / "Containerfile").write_text(PROXY_CONTAINERFILE.format(debian=debian))
            _buildah_bud(context / "Containerfile", context, tag, inputs, IMAGES_DIR / "chp.log")
    return tag
