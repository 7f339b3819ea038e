"""The event-loop lag probe and a percentile: what a hub process may import to measure
itself (:mod:`.hub_probe`) without the harness's control-plane and client modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class LoopLagProbe:
    """A task that sleeps 5 ms in a loop and records how late it wakes up.

    A late wake-up is either this event loop running other code (a stall the hub's users
    feel) or the OS not running this process at all (CPU starvation on a busy machine).
    So each wake-up also records the loop thread's CPU time over the interval: the part
    of an overshoot that the thread spent on CPU is the loop's own stall.

    With ``callbacks_run`` (a count of the loop's callbacks so far, e.g.
    :attr:`~tests.benchmarks.stalls.StallAttribution.ran`) it also records how many
    callbacks ran inside the worst windows: one means a blocking callback, hundreds a
    saturated loop.
    """

    def __init__(
        self, interval: float = 0.005, callbacks_run: Callable[[], int] | None = None
    ) -> None:
        self.interval = interval
        self._callbacks_run = callbacks_run or (lambda: 0)
        #: Callbacks the loop ran inside the worst on-CPU stall and the worst wall stall.
        self.worst_busy_callbacks = 0
        self.worst_lag_callbacks = 0
        self.lags: list[float] = []
        self.busy: list[float] = []
        #: Seconds since the probe started at which the worst on-CPU stall ended.
        self.worst_busy_at = 0.0
        #: ``time.perf_counter()`` spans of the worst on-CPU stall and the worst wall stall.
        self.worst_busy_window = (0.0, 0.0)
        self.worst_lag_window = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            before, cpu_before, wall_before = loop.time(), time.thread_time(), time.perf_counter()
            ran_before = self._callbacks_run()
            await asyncio.sleep(self.interval)
            lag = loop.time() - before - self.interval
            busy = min(lag, time.thread_time() - cpu_before)
            window = (wall_before + self.interval, time.perf_counter())
            # this probe's own wake-up is one of them
            ran = max(0, self._callbacks_run() - ran_before - 1)
            if busy > max(self.busy, default=0.0):
                self.worst_busy_at = loop.time() - start
                self.worst_busy_window = window
                self.worst_busy_callbacks = ran
            if lag > max(self.lags, default=0.0):
                self.worst_lag_window = window
                self.worst_lag_callbacks = ran
            self.lags.append(lag)
            self.busy.append(busy)

    def __enter__(self) -> LoopLagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def max_ms(self) -> float:
        return max(self.lags, default=0.0) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.lags, 99) * 1000

    @property
    def max_busy_ms(self) -> float:
        """The longest overshoot the loop thread spent on CPU (its own stall)."""
        return max(self.busy, default=0.0) * 1000
