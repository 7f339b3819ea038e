"""Per-event-loop limits: semaphores shared by every spawn that runs in the same loop.

The hub is one asyncio loop; a limit must be shared by all its spawns, yet never cross
loops (tests and tools run several), and must not keep a closed loop alive.
"""

from __future__ import annotations

import asyncio
import weakref


class LoopLimit:
    """A semaphore per running event loop, sized when that loop first asks for it."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, size: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            # Sized by the first user in this loop (the hub configures it once).
            semaphore = self._by_loop[loop] = asyncio.Semaphore(size)
        return semaphore

    def replace(self, semaphore: asyncio.Semaphore) -> None:
        """Use ``semaphore`` in the running loop from now on (tests set a tight limit)."""
        self._by_loop[asyncio.get_running_loop()] = semaphore
