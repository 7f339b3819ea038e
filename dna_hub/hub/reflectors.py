"""KubeSpawner's shared reflectors, keeping only what the hub reads of each object.

KubeSpawner keeps every singleuser pod and pod event of the cluster (one cluster-wide
reflector each, with per-user namespaces) as the decoded JSON the API server sent. Most of
that is ``metadata.managedFields`` — server-side apply bookkeeping the hub never reads:
measured after a 500-user storm, 33,000 of the pod reflector's 46,500 GC-tracked objects
(BENCHMARKS.md). Each full garbage collection walks them all, with the GIL held, stalling
the event loop that serves every user. These reflectors drop ``managedFields`` as each
object is stored (from a list or a watch event), so they are freed at once instead of living
as long as the pod.
"""

from __future__ import annotations

from typing import Any

from kubespawner.reflector import ResourceReflector
from kubespawner.spawner import EventReflector, PodReflector
from traitlets import validate

__all__ = ["LEAN_REFLECTORS", "without_managed_fields"]


def without_managed_fields(obj: Any) -> Any:
    """``obj`` with ``metadata.managedFields`` removed (in place; other values untouched)."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


class _LeanResources(dict[str, Any]):
    """The reflector's ``resources``: strips each object as KubeSpawner stores it."""

    def __init__(self, resources: dict[str, Any]) -> None:
        super().__init__((key, without_managed_fields(value)) for key, value in resources.items())

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, without_managed_fields(value))


class _LeanReflector(ResourceReflector):
    # KubeSpawner assigns the whole dict after a list and sets one key per watch event.
    @validate("resources")
    def _lean(self, proposal: dict[str, Any]) -> _LeanResources:
        return _LeanResources(proposal["value"])


class LeanPodReflector(_LeanReflector, PodReflector):
    """KubeSpawner's PodReflector without ``managedFields``."""


class LeanEventReflector(_LeanReflector, EventReflector):
    """KubeSpawner's EventReflector without ``managedFields``."""


#: KubeSpawner's reflector class → ours (DnaSpawner._start_reflector swaps them).
LEAN_REFLECTORS: dict[type, type] = {
    PodReflector: LeanPodReflector,
    EventReflector: LeanEventReflector,
}
