"""Test configuration.

Every `tests/support/*_fixtures.py` module is a pytest plugin (control plane, stand-ins,
OpenID provider, hub, ...) and is loaded here, so adding fixtures never means editing
this file.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.support.{path.stem}"
    for path in (Path(__file__).parent / "support").glob("*_fixtures.py")
)
