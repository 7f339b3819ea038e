"""A KubeApi that lets a test act at the exact moment dna_hub lists or opens a watch.

Used to hold Kubeflow's profile controller (its stand-in ignores a Profile with the pause
annotation) until dna_hub is *waiting*, so a test forces the wait's watch path instead of
depending on whether the stand-in happened to be faster than dna_hub's first list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dna_hub.k8s.api import Kind, KubeApi

#: ``hook(kind, namespace, field_selector)``
Hook = Callable[[Kind, str | None, str | None], Awaitable[None]]


async def _nothing(kind: Kind, namespace: str | None, selector: str | None) -> None:
    return None


class HookedKubeApi(KubeApi):
    """KubeApi that awaits ``on_list`` before each list and ``on_watch`` before each watch."""

    def __init__(
        self, *args: Any, on_list: Hook = _nothing, on_watch: Hook = _nothing, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.on_list = on_list
        self.on_watch = on_watch

    async def list(self, kind: Kind, namespace: str | None = None, **kw: Any) -> dict:
        await self.on_list(kind, namespace, kw.get("field_selector"))
        return await super().list(kind, namespace, **kw)

    async def watch(  # type: ignore[override]
        self, kind: Kind, namespace: str | None, **kw: Any
    ) -> AsyncIterator[dict[str, Any]]:
        await self.on_watch(kind, namespace, kw["field_selector"])
        async for event in super().watch(kind, namespace, **kw):
            yield event
