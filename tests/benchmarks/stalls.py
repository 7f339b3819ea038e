"""Where an event-loop stall comes from: the loop's long callbacks and every GC pass.

:class:`~tests.benchmarks.looplag.LoopLagProbe` says *that* the loop stalled; this says
*why*, measured rather than guessed:

* every callback the loop runs (a task step, a timer, an I/O callback) is timed, with the
  loop thread's CPU time, and the longest are kept with what they were (the coroutine of a
  task step);
* every garbage collection (``gc.callbacks``) is timed with its generation and the thread
  it ran on — a collection runs on whichever thread allocated when a threshold was crossed,
  with the GIL held, so one on another thread stalls the loop too (off its CPU);
* the GC time that fell inside each long callback is attributed to it;
* how many callbacks ran and their CPU in all, so that a long loop *iteration* (many short
  callbacks ready at once: a saturated loop) can be told from one long callback (blocking
  code): :attr:`StallAttribution.ran` read at both ends of a window.

With ``sample_every`` set, a thread also samples the loop thread's stack while a callback
has run longer than ``min_seconds`` (a poor man's profiler of the stalls only): the samples,
weighted by the time between them, say which code inside the long callbacks holds the loop —
the innermost frame and its nearest callers outside the standard library.

A task step is named by its coroutine and, for a method, the class of its ``self`` — the
request handler's class for a Tornado request (``RequestHandler._execute``), which is
what says which hub page or API the time went to.

Cost: two clock reads per callback and per collection, and a frame reference per task step.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Collection:
    generation: int
    on_loop_thread: bool
    start: float
    seconds: float
    collected: int


@dataclass
class LongCallback:
    start: float
    seconds: float
    cpu_seconds: float
    gc_seconds: float
    what: str


@dataclass
class StallAttribution:
    """Use as a context manager around a storm, inside the event loop."""

    keep: int = 12
    min_seconds: float = 0.005
    #: Seconds between stack samples of a long callback (0: no sampling).
    sample_every: float = 0.0
    #: Seconds of long callbacks per sampled stack (``where ← callers``).
    sampled: Counter[str] = field(default_factory=Counter)
    #: The same seconds by the package whose code asked for them.
    sampled_packages: Counter[str] = field(default_factory=Counter)
    collections: list[Collection] = field(default_factory=list)
    long_callbacks: list[LongCallback] = field(default_factory=list)
    _origin: float = 0.0
    _loop_thread: int = 0
    _gc_started: dict[int, float] = field(default_factory=dict)
    _gc_on_loop: float = 0.0
    _original_run: Any = None
    _closed: bool = False
    _running_since: float = 0.0
    # the sampler thread adds to the counters while the loop thread summarises them
    _sampled_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Callbacks run so far, and the loop thread's CPU seconds spent in them.
    ran: int = 0
    ran_cpu_seconds: float = 0.0

    def __enter__(self) -> StallAttribution:
        self._origin = time.perf_counter()
        self._loop_thread = threading.get_ident()
        gc.callbacks.append(self._on_gc)
        self._original_run = original = asyncio.events.Handle._run
        attribution = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            # the frame outlives the step (a finished coroutine's frame keeps its locals), so
            # a long last step can still be named by its handler
            frame = _task_frame(handle)
            start, cpu, gc_before = time.perf_counter(), time.thread_time(), attribution._gc_on_loop
            attribution._running_since = start
            try:
                original(handle)
            finally:
                attribution._running_since = 0.0
                seconds = time.perf_counter() - start
                cpu_seconds = time.thread_time() - cpu
                attribution.ran += 1
                attribution.ran_cpu_seconds += cpu_seconds
                # a step that outlives the measurement (the harness's own work after it) is
                # not the storm's
                if seconds >= attribution.min_seconds and not attribution._closed:
                    attribution._long(handle, frame, start, seconds, cpu_seconds, gc_before)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        if self.sample_every:
            threading.Thread(target=self._sample, name="stall-sampler", daemon=True).start()
        return self

    def _sample(self) -> None:
        last = time.perf_counter()
        while not self._closed:
            time.sleep(self.sample_every)
            now = time.perf_counter()
            since, weight, last = self._running_since, min(now - last, 0.05), now
            if not since or now - since < self.min_seconds:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is not None:
                where, package = _where(frame)
                with self._sampled_lock:
                    self.sampled[where] += weight
                    self.sampled_packages[package] += weight

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        asyncio.events.Handle._run = self._original_run  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now, thread = time.perf_counter(), threading.get_ident()
        if phase == "start":
            self._gc_started[thread] = now
            return
        start = self._gc_started.pop(thread, now)
        on_loop = thread == self._loop_thread
        if on_loop:
            self._gc_on_loop += now - start
        self.collections.append(
            Collection(info["generation"], on_loop, start - self._origin, now - start,
                       info["collected"])
        )  # fmt: skip

    def _long(
        self,
        handle: Any,
        frame: Any,
        start: float,
        seconds: float,
        cpu: float,
        gc_before: float,
    ) -> None:
        self.long_callbacks.append(
            LongCallback(start - self._origin, seconds, cpu, self._gc_on_loop - gc_before,
                         describe_callback(handle, frame))
        )  # fmt: skip
        if len(self.long_callbacks) > self.keep * 4:
            self.long_callbacks.sort(key=lambda c: -c.cpu_seconds)
            del self.long_callbacks[self.keep :]

    def inside(self, window: tuple[float, float]) -> dict[str, Any]:
        """What overlapped a ``time.perf_counter()`` span: GC passes and long callbacks."""
        start, end = window[0] - self._origin, window[1] - self._origin

        def overlaps(at: float, seconds: float) -> bool:
            return at < end and at + seconds > start

        return {
            "ms": (end - start) * 1000,
            "collections": [
                {
                    "generation": c.generation,
                    "on_loop_thread": c.on_loop_thread,
                    "ms": c.seconds * 1000,
                }
                for c in self.collections
                if overlaps(c.start, c.seconds)
            ],
            "callbacks": [
                {"ms": c.seconds * 1000, "cpu_ms": c.cpu_seconds * 1000, "what": c.what}
                for c in self.long_callbacks
                if overlaps(c.start, c.seconds)
            ],
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able: GC passes per generation, and the longest callbacks with their GC share."""
        by_generation: dict[str, Any] = {}
        for generation in (0, 1, 2):
            passes = [c for c in self.collections if c.generation == generation]
            on_loop = [c.seconds for c in passes if c.on_loop_thread]
            other = [c.seconds for c in passes if not c.on_loop_thread]
            by_generation[str(generation)] = {
                "passes": len(passes),
                "on_loop_thread": len(on_loop),
                "max_ms_on_loop_thread": max(on_loop, default=0.0) * 1000,
                "max_ms_other_threads": max(other, default=0.0) * 1000,
                "total_ms": sum(c.seconds for c in passes) * 1000,
            }
        longest = sorted(self.long_callbacks, key=lambda c: -c.cpu_seconds)[: self.keep]
        with self._sampled_lock:
            sampled_stacks = self.sampled.most_common(self.keep)
            packages = self.sampled_packages.most_common()
            sampled_ms = sum(self.sampled.values()) * 1000
        sampled = [{"ms": seconds * 1000, "where": where} for where, seconds in sampled_stacks]
        return {
            "sampled_in_long_callbacks_ms": sampled_ms,
            "sampled": sampled,
            "sampled_packages_ms": {package: seconds * 1000 for package, seconds in packages},
            "gc": by_generation,
            "longest_callbacks": [
                {
                    "at_seconds": c.start,
                    "ms": c.seconds * 1000,
                    "cpu_ms": c.cpu_seconds * 1000,
                    "gc_ms": c.gc_seconds * 1000,
                    "what": c.what,
                }
                for c in longest
            ],
        }


def _package(path: str) -> str | None:
    """The installed package (or ``dna_hub``) a code file belongs to; None for the stdlib."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/dna_hub/" in path:
        return "dna_hub"
    return None


def _frame_name(frame: Any) -> str:
    path = frame.f_code.co_filename
    package, file = _package(path), path.rsplit("/", 1)[-1]
    return f"{package + '/' if package else ''}{file}:{frame.f_code.co_qualname}"


def _where(frame: Any, callers: int = 3) -> tuple[str, str]:
    """``innermost frame ← its nearest callers outside the standard library``, and the
    package of the nearest frame outside it (the code that asked for the time)."""
    names = [_frame_name(frame)]
    owner = _package(frame.f_code.co_filename)
    frame = frame.f_back
    while frame is not None and len(names) <= callers:
        package = _package(frame.f_code.co_filename)
        if package:
            names.append(_frame_name(frame))
            owner = owner or package
        frame = frame.f_back
    return " ← ".join(names), owner or "stdlib"


def _task_frame(handle: Any) -> Any:
    """The frame of the coroutine a task-step handle will run (None for other callbacks)."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    return None


def describe_callback(handle: Any, frame: Any = None) -> str:
    """What a loop callback is: a task step names its coroutine (and its ``self``'s class,
    e.g. the Tornado handler); else the function."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None:
            where = code.co_filename.rsplit("/", 1)[-1]
            this = frame.f_locals.get("self") if frame is not None else None
            of = f" of {type(this).__name__}" if this is not None else ""
            return f"task step: {code.co_qualname}{of} ({where})"
        return f"task step: {owner.get_name()}"
    name = getattr(callback, "__qualname__", None) or repr(callback)
    module = getattr(callback, "__module__", None) or ""
    return f"{module}.{name}" if module else name
