"""KubeSpawner's safe slugs, without importing KubeSpawner's spawner (and so JupyterHub).

The naming policy is pure and must be importable where JupyterHub is not (``dna-hub render``
on a laptop, the sync CronJob's quick checks, the fast test tier). ``kubespawner.slugs`` is
self-contained (standard library + ``escapism``), but importing it runs
``kubespawner/__init__.py``, which imports the spawner, JupyterHub and the Kubernetes
client. So the module file is loaded on its own, from the installed KubeSpawner — the same
code, not a copy — unless the hub has imported KubeSpawner already, whose module is then
used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["is_valid_label", "is_valid_object_name", "safe_slug"]


def _kubespawner_slugs() -> ModuleType:
    loaded = sys.modules.get("kubespawner.slugs")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("kubespawner")  # finds; does not run __init__
    if package is None or not package.submodule_search_locations:
        raise ImportError("dna_hub needs jupyterhub-kubespawner (its safe slugs) installed")
    path = Path(next(iter(package.submodule_search_locations))) / "slugs.py"
    spec = importlib.util.spec_from_file_location("dna_hub.policy._kubespawner_slugs", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load KubeSpawner's slugs from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_slugs = _kubespawner_slugs()

safe_slug = _slugs.safe_slug
is_valid_object_name = _slugs.is_valid_object_name
is_valid_label = _slugs.is_valid_label
