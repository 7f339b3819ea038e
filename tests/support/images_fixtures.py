"""pytest plugin: the project's images, built from the real Dockerfiles (devstack/images.py).

Fixtures ``singleuser_image`` and ``hub_image`` (session) give a local tag, built on first
use and cached in podman's storage until an input changes. The builds run in
``pytest_collection_finish`` when a collected test uses one of them (a cold build takes
minutes, longer than the per-test timeout that would otherwise include fixture set-up).
Where the container engine is missing the tests are skipped, and fail in CI.
"""

from __future__ import annotations

import pytest

from devstack import images, paths

_FIXTURES = {"singleuser_image": "singleuser", "hub_image": "hub"}
_built: dict[str, images.BuiltImage | Exception] = {}


def _ensure(name: str) -> images.BuiltImage | Exception:
    if name not in _built:
        try:
            _built[name] = images.ensure_image(name)
        except (images.ImageBuildError, OSError) as exc:
            _built[name] = exc
    return _built[name]


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or images.engine_missing():
        return
    wanted = {
        _FIXTURES[f]
        for item in session.items
        for f in getattr(item, "fixturenames", ())
        if f in _FIXTURES
    }
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for name in sorted(wanted):
        if reporter is not None:
            reporter.write_line(f"images: ensuring {name} (build log in {images.IMAGES_DIR})")
        result = _ensure(name)
        if reporter is not None:
            reporter.write_line(f"images: {name}: {result}")


def _image(name: str) -> str:
    missing = images.engine_missing()
    if missing:
        paths.unavailable(f"the container engine is not installed ({', '.join(missing)})")
    result = _ensure(name)
    if isinstance(result, Exception):
        pytest.fail(f"image {name} did not build: {result}", pytrace=False)
    return result.tag


@pytest.fixture(scope="session")
def singleuser_image() -> str:
    """Local tag of images/singleuser/Dockerfile built on the minimal-notebook stand-in."""
    return _image("singleuser")


@pytest.fixture(scope="session")
def hub_image() -> str:
    """Local tag of images/hub/Dockerfile built on the k8s-hub:4.4.0 stand-in."""
    return _image("hub")
