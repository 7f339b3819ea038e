"""Keep the hub's start-up heap out of full garbage-collection passes.

Measured in a login storm (BENCHMARKS.md, "Where the stalls came from"): a hub process with
JupyterHub, KubeSpawner and kubernetes_asyncio holds ~280,000 GC-tracked objects once it
has started — modules, classes, functions, the client's API models — that live as long as
the process. CPython's full (generation 2) collection walks every one of them, with the GIL
held, on whichever thread happened to allocate: 160 to 350 ms during which the event loop that
serves every user runs nothing. During a storm such passes come again and again.

``gc.freeze()`` moves everything alive at that moment into the permanent generation, which
collections never walk; later objects are collected as before. So the hub freezes once, at
its first spawn — start-up (imports, configuration, the database, every user's spawner) is
over by then. The price: garbage that exists at that moment is never freed (bounded: it
happens once per process). ``DnaSpawner.freeze_startup_heap`` turns it off.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_startup_heap"]

_lock = threading.Lock()
_frozen = False


def freeze_startup_heap() -> bool:
    """Freeze everything alive now, once per process; True if this call froze it."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
