"""The package's layers, checked on its source: imports only run downward, no circle.

    cli  >  hub  >  auth  >  profiles  >  k8s  >  policy  >  errors

``policy`` is pure (no JupyterHub, no Kubernetes client); the layers above may use any
below. ``dna_hub/__init__.py`` and ``dna_hub/team_login.py`` are the public entry points
(they re-export from above) and are not a layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dna_hub"
LAYERS = ["errors", "policy", "k8s", "profiles", "auth", "hub", "cli"]
ENTRY_POINTS = {"dna_hub", "dna_hub.team_login"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    part = module.split(".")[1]
    return LAYERS.index(part)


def imports_of(path: Path) -> set[str]:
    """The dna_hub modules ``path`` imports (at any depth of the file), absolute."""
    found = set()
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dna_hub"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("dna_hub"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(
                        candidate
                        if (PACKAGE.parent / candidate.replace(".", "/"))
                        .with_suffix(".py")
                        .exists()
                        or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                        else base
                    )
    return {m for m in found if m not in {"dna_hub"}}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        if module in ENTRY_POINTS:
            continue
        assert module.split(".")[1] in LAYERS, f"{module} is in no layer: {LAYERS}"


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_imports_run_only_downward(module: str) -> None:
    own = layer_of(module)
    for imported in imports_of(MODULES[module]):
        if imported in ENTRY_POINTS:
            raise AssertionError(f"{module} imports the entry point {imported}")
        assert layer_of(imported) <= own, (
            f"{module} ({LAYERS[own]}) imports {imported} ({LAYERS[layer_of(imported)]}), "
            "a layer above it"
        )


def test_no_import_circle() -> None:
    graph = {m: {i for i in imports_of(p) if i in MODULES} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_test_machinery_in_the_package() -> None:
    for module, path in MODULES.items():
        source = path.read_text()
        assert "unittest" not in source, f"{module} uses unittest (mock) machinery"
        assert "_mock=True" not in source, f"{module} passes KubeSpawner's test-only _mock"


def test_policy_imports_without_jupyterhub_or_a_kubernetes_client() -> None:
    policy = sorted(m for m in MODULES if m.startswith("dna_hub.policy."))
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in policy)
        + "print(sorted(m for m in ('jupyterhub', 'kubespawner.spawner', 'tornado',"
        " 'kubernetes_asyncio') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
