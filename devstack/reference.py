"""The reference data of ``../shared``, fetched from upstream where a clone has no ``../shared``.

A development machine and CI have ``../shared`` (see ``devstack/paths.py`` for the
order in which it is looked for). A user's fresh clone does not: this module gets the same
data the way a user's machine can, at pinned versions, each file verified against a pinned
sha256 before anything is written where the tests look:

- Kubeflow's CRDs (Profile, PodDefault) and ClusterRoles from kubeflow/manifests at the
  commit ``../shared`` was taken from, and Istio's CRDs from the same commit's
  ``common/istio/istio-crds/base/crd.yaml`` (split into one file per CRD, as in ``crds/``);
- the Zero to JupyterHub chart 4.4.0 from its Helm repository, and the hub image's
  requirements and Dockerfile at the chart's tag.

Derived locally, never downloaded modified: ``schemas/`` (the chart's values schema and
defaults). The CRDs are used as published, CEL rules included (the devstack's API server is
1.37; ``crds-k8s-1.20/``, the CEL-free copies a 1.20 server needed, is no longer made).

The sha256 pins of the upstream files were computed from ``../shared``, whose files are
those exact upstream bytes, and the Istio bundle's from kubeflow/manifests at the pinned
commit. A packaged chart's bytes depend on how it was packaged, so the chart is pinned by a
digest of its content: every file's sha256, with ``Chart.yaml`` and the values schema
compared as parsed data (``helm package`` rewrites the one and the release generates the
other from ``values.schema.yaml``).

Downloads go to a temporary directory inside the cache that is renamed into place only when
everything is verified and derived, and removed on any failure. Offline, one message says
what is missing and how to provide it.

``python -m devstack.reference fetch`` (run by ``./dev setup``) does nothing when the
data is already found, and prints where it is.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from devstack import paths

KUBEFLOW_MANIFESTS_COMMIT = "009c88084074904c7743384ff50d3bd70012ef55"
Z2JH_VERSION = "4.4.0"
_KUBEFLOW = f"https://raw.githubusercontent.com/kubeflow/manifests/{KUBEFLOW_MANIFESTS_COMMIT}"
_Z2JH = f"https://raw.githubusercontent.com/jupyterhub/zero-to-jupyterhub-k8s/{Z2JH_VERSION}"

#: Environment variable naming a mirror that serves the same files under
#: ``<mirror>/<host>/<path>`` (e.g. a proxy cache); the sha256 pins still apply.
MIRROR_ENV = "DNA_HUB_REFERENCE_MIRROR"
#: Each request's timeout; retries of a failed request, with exponential backoff.
REQUEST_TIMEOUT = 60.0
RETRIES = 3
MAX_BYTES = 64 * 1024 * 1024

ISTIO_CRDS = (
    "authorizationpolicies.security.istio.io",
    "envoyfilters.networking.istio.io",
    "peerauthentications.security.istio.io",
)


class ReferenceDataError(RuntimeError):
    """The reference data is not here and could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """One upstream file: where it comes from, its pinned sha256, where it goes."""

    url: str
    #: sha256 of the downloaded bytes; for ``kind="chart"`` the content digest (see above).
    sha256: str
    #: Path under the reference directory; a directory for ``chart``, unused for ``istio``.
    target: str
    #: ``file`` (stored as is), ``istio`` (split into crds/<name>.yaml), ``chart`` (a .tgz).
    kind: str = "file"


SOURCES: tuple[Source, ...] = (
    Source(
        f"{_KUBEFLOW}/applications/profiles/upstream/crd/bases/kubeflow.org_profiles.yaml",
        "d661b57824481b715aa7589b8e72aa695a7767c449880272bc2aa5f398f8eeac",
        "crds/profiles.kubeflow.org.yaml",
    ),
    Source(
        f"{_KUBEFLOW}/applications/admission-webhook/upstream/base/crd.yaml",
        "2696a772ea2ff713858c3b726e9a25356f32cc906d89b645147eeedbc6c89e85",
        "crds/poddefaults.kubeflow.org.yaml",
    ),
    Source(
        f"{_KUBEFLOW}/common/istio/istio-crds/base/crd.yaml",
        "84d5a174e99074f88aec0eb577f59690bc4ad28b7bddaee064642cca775e434a",
        "crds",
        kind="istio",
    ),
    Source(
        f"{_KUBEFLOW}/common/kubeflow-roles/base/cluster-roles.yaml",
        "b7a635e30e5254f3f3813ed6f7f32952feba27f3e7faff01782dd6a43bf90825",
        "rbac/kubeflow-roles.yaml",
    ),
    Source(
        f"{_KUBEFLOW}/applications/pipeline/upstream/base/installs/multi-user/"
        "view-edit-cluster-roles.yaml",
        "ca104d2b962e748650948d16657f478ecb87b7ec25026283107a432bc7dad7ee",
        "rbac/kubeflow-pipelines-roles.yaml",
    ),
    Source(
        f"https://hub.jupyter.org/helm-chart/jupyterhub-{Z2JH_VERSION}.tgz",
        "c7a277208d284a22108fbf5ad0f144a6c5c6ffc035d68583c3ca4942e9e337ea",
        "charts/jupyterhub",
        kind="chart",
    ),
    Source(
        f"{_Z2JH}/images/hub/requirements.txt",
        "4e948f6301b27eb7c2fa04c3dab32a3c1dc0561f62a4b0d079fb1a68932ea469",
        f"charts/k8s-hub-{Z2JH_VERSION}-requirements.txt",
    ),
    Source(
        f"{_Z2JH}/images/hub/Dockerfile",
        "bd810ff3ac226ceb264e287ccfcf80b6c5d25da0e0b38612db9ee7de18086566",
        f"charts/k8s-hub-{Z2JH_VERSION}.Dockerfile",
    ),
)

#: What a reference directory must hold to be used (what the tests and the demo read).
REQUIRED = ("crds", "rbac", "schemas", "charts")


def cache_dir(sources: Iterable[Source] = SOURCES) -> Path:
    """The verified download's directory; its name changes with the pins."""
    pins = hashlib.sha256("".join(s.url + s.sha256 for s in sources).encode()).hexdigest()
    return paths.CACHE_DIR / "reference" / f"z2jh-{Z2JH_VERSION}-{pins[:12]}"


def _how_to_provide(missing: str) -> str:
    return (
        f"The reference data (Kubeflow and Istio CRDs, Kubeflow's ClusterRoles, the z2jh chart "
        f"{Z2JH_VERSION}) is missing: there is no ../shared beside the project, and {missing}.\n"
        f"Provide it with DNA_HUB_SHARED_DIR=/path/to/shared (a copy of ../shared), or run "
        f"./dev setup with network access to raw.githubusercontent.com and hub.jupyter.org "
        f"(or ${MIRROR_ENV}=URL of a mirror) to download and verify it into {cache_dir()}."
    )


# --------------------------------------------------------------------------- fetching


def _mirrored(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    return f"{mirror.rstrip('/')}/{url.removeprefix('https://')}"


def _get(url: str) -> bytes:
    """GET with a timeout, TLS verified (urllib's default), bounded retries with backoff for
    what may pass (connection errors, 5xx, 429); a 4xx other than 429 fails at once."""
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
                data = response.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ReferenceDataError(f"{url} is larger than {MAX_BYTES} bytes")
            return data
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:
                raise ReferenceDataError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if attempt < RETRIES:
            time.sleep(0.5 * 2**attempt)
    raise ReferenceDataError(f"cannot download {url} ({last})")


def _verify(source: Source, actual: str) -> None:
    if actual != source.sha256:
        raise ReferenceDataError(
            f"checksum mismatch for {source.url}: expected sha256 {source.sha256}, got "
            f"{actual}. Nothing was written; the pinned file changed upstream or in transit."
        )


def _clean_values_schema(schema: MutableMapping[str, Any]) -> None:
    """What z2jh's tools/generate-json-schema.py drops from values.schema.yaml at release:
    ``description`` keys, at every level below ``properties``."""
    schema.pop("description", None)
    for value in (schema.get("properties") or {}).values():
        if isinstance(value, MutableMapping):
            _clean_values_schema(value)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def chart_digest(chart: Path) -> str:
    """Content digest of an unpacked chart (see the module docstring); dot-files are left out
    (``.helmignore`` is packaging metadata)."""
    entries: dict[str, str] = {}
    for file in sorted(p for p in chart.rglob("*") if p.is_file()):
        rel = file.relative_to(chart).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        data = file.read_bytes()
        if rel == "values.schema.yaml":  # a chart from source: the release ships the JSON
            schema = yaml.safe_load(data)
            _clean_values_schema(schema)
            rel, data = "values.schema.json", _canonical(schema)
        elif rel == "values.schema.json":
            data = _canonical(json.loads(data))
        elif rel == "Chart.yaml":
            data = _canonical(yaml.safe_load(data))
        entries[rel] = hashlib.sha256(data).hexdigest()
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def _unpack_chart(data: bytes, target: Path) -> None:
    """Unpack a chart .tgz (one top-level directory) into ``target``, refusing any member
    that is not a plain file or directory inside it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        tops = {PurePosixPath(m.name).parts[0] for m in members if m.name.strip("/")}
        if len(tops) != 1:
            raise ReferenceDataError(f"the chart archive has {len(tops)} top-level entries")
        (top,) = tops
        tmp = target.parent / f".{target.name}.unpack"
        tar.extractall(tmp, members=members, filter="data")
    (tmp / top).rename(target)
    shutil.rmtree(tmp)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _derive(root: Path) -> None:
    """schemas/ from what was downloaded and verified."""
    chart, schemas = root / "charts" / "jupyterhub", root / "schemas"
    _write(schemas / "z2jh-values.schema.json", (chart / "values.schema.json").read_bytes())
    _write(schemas / "z2jh-values.defaults.yaml", (chart / "values.yaml").read_bytes())
    (root / "README.md").write_text(
        "Reference data downloaded and verified by devstack/reference.py (do not edit):\n"
        + "".join(f"- {s.url} sha256 {s.sha256} -> {s.target}\n" for s in SOURCES)
    )


def fetch(
    destination: Path | None = None,
    *,
    sources: Iterable[Source] = SOURCES,
    mirror: str | None = None,
    get: Callable[[str], bytes] = _get,
) -> Path:
    """Download, verify and derive the reference data into ``destination`` (default:
    :func:`cache_dir`); returns it. All or nothing: on any error nothing is left behind."""
    sources = tuple(sources)
    destination = destination or cache_dir(sources)
    if destination.is_dir():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=destination.parent))
    try:
        for source in sources:
            data = get(_mirrored(source.url, mirror))
            if source.kind == "chart":
                target = work / source.target
                target.parent.mkdir(parents=True, exist_ok=True)
                _unpack_chart(data, target)
                _verify(source, chart_digest(target))
                continue
            _verify(source, hashlib.sha256(data).hexdigest())
            if source.kind == "istio":
                _split_istio(data, work / source.target)
            else:
                _write(work / source.target, data)
        _derive(work)
        try:
            work.rename(destination)
        except OSError:
            if not destination.is_dir():  # else another run finished first: use its copy
                raise
    except (ReferenceDataError, tarfile.TarError, yaml.YAMLError, OSError, ValueError) as e:
        raise ReferenceDataError(_how_to_provide(str(e))) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return destination


def _split_istio(data: bytes, crd_dir: Path) -> None:
    """The Istio CRDs dna_hub renders, one file each, from the upstream bundle."""
    found = {}
    for doc in yaml.safe_load_all(data):
        if doc and doc.get("metadata", {}).get("name") in ISTIO_CRDS:
            found[doc["metadata"]["name"]] = doc
    if missing := sorted(set(ISTIO_CRDS) - set(found)):
        raise ReferenceDataError(f"the Istio CRD bundle lacks {missing}")
    for name, doc in found.items():
        _write(crd_dir / f"{name}.yaml", yaml.safe_dump(doc, sort_keys=False).encode())


def complete(directory: Path) -> bool:
    return all((directory / part).is_dir() for part in REQUIRED)


def ensure(mirror: str | None = None) -> Path:
    """The reference data's directory: found (see paths.shared_dir) or fetched now."""
    found = paths.shared_dir()
    if complete(found):
        return found
    lacks = ", ".join(p for p in REQUIRED if not (found / p).is_dir())
    if os.environ.get(paths.SHARED_ENV):
        raise ReferenceDataError(
            f"{paths.SHARED_ENV}={os.environ[paths.SHARED_ENV]} is set but lacks {lacks}: "
            "point it at a copy of ../shared, or unset it to use ../shared or the download"
        )
    if found.is_dir():  # ../shared, which comes before any download, is incomplete
        raise ReferenceDataError(
            f"{found} lacks {lacks}: complete it, or point {paths.SHARED_ENV} at a complete copy"
        )
    return fetch(mirror=mirror if mirror is not None else os.environ.get(MIRROR_ENV))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.reference")
    parser.add_argument("command", choices=["fetch", "where"])
    args = parser.parse_args(argv)
    if args.command == "where":
        print(paths.shared_dir())
        return 0
    try:
        print(f"reference data: {ensure()}")
    except ReferenceDataError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
