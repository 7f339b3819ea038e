"""A clone without ../shared gets the reference data from upstream, verified, or one clear message.

The download path runs against a local HTTP server serving the same files as upstream
(``devstack/reference.py`` takes a mirror URL); this machine cannot reach GitHub, so the
real hosts are never contacted here. Upstream files whose exact bytes are in ../shared are
served as they are and checked against the real pins; the chart is served packaged as a
release is (values.schema.json generated, Chart.yaml rewritten) and checked against the real
content digest. The Istio bundle is not in ../shared (only its three CRDs are), so it is served
rebuilt from them under a pin computed here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack import paths, reference
from devstack.controlplane import CRD_NAMES, missing_binaries, start_control_plane
from devstack.paths import shared_path


def _served_path(source: reference.Source) -> str:
    return source.url.removeprefix("https://")


def _packaged_chart(chart: Path) -> bytes:
    """The chart as `helm package` at a z2jh release makes it: values.schema.json generated
    from values.schema.yaml (which is not shipped), Chart.yaml re-serialised."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"jupyterhub/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for file in sorted(p for p in chart.rglob("*") if p.is_file()):
            rel = file.relative_to(chart).as_posix()
            if rel == "values.schema.yaml":
                schema = yaml.safe_load(file.read_text())
                reference._clean_values_schema(schema)
                add("values.schema.json", json.dumps(schema).encode())
            elif rel == "Chart.yaml":
                add(rel, yaml.safe_dump(yaml.safe_load(file.read_text())).encode())
            else:
                add(rel, file.read_bytes())
    return buffer.getvalue()


@dataclasses.dataclass
class Mirror:
    url: str
    root: Path
    sources: tuple[reference.Source, ...]

    def replace(self, source: reference.Source, data: bytes) -> None:
        (self.root / _served_path(source)).write_bytes(data)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    shared = shared_path()
    istio = b"---\n".join(
        shared_path("crds", f"{name}.yaml").read_bytes() for name in reference.ISTIO_CRDS
    )
    by_target = {
        "crds/profiles.kubeflow.org.yaml": shared / "crds" / "profiles.kubeflow.org.yaml",
        "crds/poddefaults.kubeflow.org.yaml": shared / "crds" / "poddefaults.kubeflow.org.yaml",
        "rbac/kubeflow-roles.yaml": shared / "rbac" / "kubeflow-roles.yaml",
        "rbac/kubeflow-pipelines-roles.yaml": shared / "rbac" / "kubeflow-pipelines-roles.yaml",
    }
    for name in ("k8s-hub-4.4.0-requirements.txt", "k8s-hub-4.4.0.Dockerfile"):
        by_target[f"charts/{name}"] = shared / "charts" / name
    sources = []
    for source in reference.SOURCES:
        if source.kind == "istio":
            data = istio
            source = dataclasses.replace(source, sha256=hashlib.sha256(istio).hexdigest())
        elif source.kind == "chart":
            data = _packaged_chart(shared / "charts" / "jupyterhub")
        else:
            data = by_target[source.target].read_bytes()
        target = root / _served_path(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        sources.append(source)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_address[1]}", root, tuple(sources))
    finally:
        server.shutdown()
        server.server_close()


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_download_is_verified_and_derives_what_shared_has(mirror: Mirror, tmp_path: Path) -> None:
    destination = tmp_path / "cache" / "reference" / "r"
    assert reference.fetch(destination, sources=mirror.sources, mirror=mirror.url) == destination
    assert reference.complete(destination)
    assert os.listdir(destination.parent) == ["r"]  # no temporary directory left
    shared = shared_path()
    for name in ("profiles.kubeflow.org", "poddefaults.kubeflow.org"):
        file = f"{name}.yaml"
        assert (destination / "crds" / file).read_bytes() == (shared / "crds" / file).read_bytes()
    for name in CRD_NAMES:
        file = f"{name}.yaml"
        assert _docs(destination / "crds" / file) == _docs(shared / "crds" / file)
    for file in ("kubeflow-roles.yaml", "kubeflow-pipelines-roles.yaml"):
        assert (destination / "rbac" / file).read_bytes() == (shared / "rbac" / file).read_bytes()
    defaults = yaml.safe_load((destination / "schemas" / "z2jh-values.defaults.yaml").read_text())
    assert defaults["hub"]["image"]["tag"] == reference.Z2JH_VERSION
    schema = json.loads((destination / "schemas" / "z2jh-values.schema.json").read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert (destination / "charts" / "jupyterhub" / "templates").is_dir()
    # a second call finds it and downloads nothing
    assert reference.fetch(destination, sources=mirror.sources, mirror="http://127.0.0.1:1")


def test_a_checksum_mismatch_writes_nothing(mirror: Mirror, tmp_path: Path) -> None:
    (profiles,) = [s for s in mirror.sources if s.target.startswith("crds/profiles")]
    original = (mirror.root / _served_path(profiles)).read_bytes()
    tampered = original.replace(b"Profile", b"Pr0file", 1)
    mirror.replace(profiles, tampered)
    destination = tmp_path / "cache" / "reference" / "r"
    with pytest.raises(reference.ReferenceDataError) as info:
        reference.fetch(destination, sources=mirror.sources, mirror=mirror.url)
    message = str(info.value)
    assert "checksum mismatch" in message and profiles.url in message
    assert profiles.sha256 in message and hashlib.sha256(tampered).hexdigest() in message
    assert "DNA_HUB_SHARED_DIR=" in message
    assert os.listdir(destination.parent) == []


def test_a_chart_that_is_not_the_pinned_release_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    (chart,) = [s for s in mirror.sources if s.kind == "chart"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO((mirror.root / _served_path(chart)).read_bytes())) as old:
        with tarfile.open(fileobj=buffer, mode="w:gz") as new:
            for member in old.getmembers():
                data = old.extractfile(member).read()
                if member.name.endswith("templates/hub/deployment.yaml"):
                    data += b"\n# one more line\n"
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
    mirror.replace(chart, buffer.getvalue())
    destination = tmp_path / "cache" / "reference" / "r"
    with pytest.raises(reference.ReferenceDataError, match="checksum mismatch"):
        reference.fetch(destination, sources=mirror.sources, mirror=mirror.url)
    assert os.listdir(destination.parent) == []


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """env override → ../shared → the verified download in the cache."""
    beside, cache = tmp_path / "shared", tmp_path / "cache"
    monkeypatch.setattr(paths, "BESIDE_REPO", beside)
    monkeypatch.setattr(paths, "CACHE_DIR", cache)
    monkeypatch.delenv(paths.SHARED_ENV, raising=False)
    assert paths.shared_dir() == beside  # nothing anywhere: the path messages name
    reference.cache_dir().mkdir(parents=True)
    assert paths.shared_dir() == reference.cache_dir()
    beside.mkdir()
    assert paths.shared_dir() == beside
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "elsewhere"))
    assert paths.shared_dir() == tmp_path / "elsewhere"


def _fresh_clone(tmp_path: Path) -> Path:
    """The project's files, alone in a directory: no ../shared beside it."""
    clone = tmp_path / "clone" / "dna_hub"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=paths.REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = paths.REPO_ROOT / os.fsdecode(name)
        if source.is_file():
            (clone / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            (clone / os.fsdecode(name)).write_bytes(source.read_bytes())
    return clone


def test_demo_in_a_fresh_clone_offline_says_what_is_missing(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path)
    temp, cache = tmp_path / "tmp", tmp_path / "cache"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNA_HUB_")}
    # offline: the mirror's port is closed
    env |= {"DNA_HUB_CACHE_DIR": str(cache), "TMPDIR": str(temp)}
    env[reference.MIRROR_ENV] = "http://127.0.0.1:1"
    result = subprocess.run(
        [sys.executable, "-m", "devstack.demo", "--port", "0"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "reference data" in result.stderr and "is missing" in result.stderr
    assert "DNA_HUB_SHARED_DIR=" in result.stderr
    assert os.listdir(temp) == []  # no leftover temporary directory
    assert os.listdir(cache / "reference") == []


@pytest.mark.controlplane
async def test_the_control_plane_starts_on_downloaded_data(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if missing := missing_binaries():
        paths.unavailable(f"the control plane's binaries are missing ({missing}): ./dev setup")
    destination = tmp_path / "reference"
    reference.fetch(destination, sources=mirror.sources, mirror=mirror.url)
    monkeypatch.setenv(paths.SHARED_ENV, str(destination))
    control_plane = await start_control_plane()
    await control_plane.aclose()


def test_an_incomplete_directory_that_comes_first_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ensure() never downloads past a directory that would still be used instead."""
    (tmp_path / "partial" / "crds").mkdir(parents=True)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(reference, "fetch", lambda **_: pytest.fail("downloaded"))
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "partial"))
    with pytest.raises(
        reference.ReferenceDataError, match=r"DNA_HUB_SHARED_DIR=.* lacks rbac, schemas, charts"
    ):
        reference.ensure()
    monkeypatch.delenv(paths.SHARED_ENV)
    monkeypatch.setattr(paths, "BESIDE_REPO", tmp_path / "partial")
    with pytest.raises(reference.ReferenceDataError, match=r"partial lacks rbac, schemas, charts"):
        reference.ensure()
