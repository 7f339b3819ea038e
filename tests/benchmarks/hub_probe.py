"""Measurements taken *inside* a real ``jupyterhub`` process during a full-stack storm.

The full-stack storms (:mod:`.fullstack`) run JupyterHub as its own process, as deployed.
What only that process can see is measured here, installed from its
``jupyterhub_config.py`` (config is loaded inside the hub's running event loop)::

    from tests.benchmarks.hub_probe import install
    install("/path/to/probe.json")

* every request of kubernetes_asyncio (the spawner's shared client and the reflectors;
  a watch counts once, when it is opened), by HTTP method — counted on
  ``RESTClientObject.request``, the one place every API call goes through;
* the event loop's lag and the part of it the loop thread spent on CPU
  (:class:`~tests.benchmarks.looplag.LoopLagProbe`), and where it went
  (:class:`~tests.benchmarks.stalls.StallAttribution`: the longest callbacks by CPU, named
  by coroutine and handler class, GC passes, how many callbacks ran inside the worst
  stall), reset on demand so that a storm's figures are its own:
  ``touch <probe.json>.reset``;
* written to ``probe.json`` (atomically) every ``interval`` seconds; the storm's driver
  reads it once the storm is over.

Not collected by pytest; imports only what a hub has plus the benchmark harness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import rest

from tests.benchmarks.looplag import LoopLagProbe, percentile
from tests.benchmarks.stalls import StallAttribution

log = logging.getLogger("JupyterHub")
_requests: dict[str, int] = {}
_by_resource: dict[str, int] = {}


def _resource(url: str) -> str:
    """``pods``, ``namespaces``, ``profiles``, ``secrets``…: a request's resource, no names."""
    parts = [p for p in url.split("?", 1)[0].split("/") if p]
    if "api" in parts:
        rest = parts[parts.index("api") + 2 :]
    elif "apis" in parts:
        rest = parts[parts.index("apis") + 3 :]
    else:
        return "?"
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return "/".join(rest[:1] + rest[2:3])


def _count_requests() -> None:
    original = rest.RESTClientObject.request

    async def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        key = method.upper()
        query = kwargs.get("query_params") or (args[0] if args else None) or []
        if any(k == "watch" and v for k, v in query):
            key = "WATCH"
        _requests[key] = _requests.get(key, 0) + 1
        detail = f"{key} {_resource(url)}"
        _by_resource[detail] = _by_resource.get(detail, 0) + 1
        return await original(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = counted  # type: ignore[method-assign]


async def _report(path: Path, interval: float) -> None:
    reset = path.with_name(path.name + ".reset")

    def measure() -> tuple[LoopLagProbe, StallAttribution]:
        attribution = StallAttribution(sample_every=0.002).__enter__()
        return LoopLagProbe(callbacks_run=lambda: attribution.ran).__enter__(), attribution

    probe, attribution = measure()
    while True:
        await asyncio.sleep(interval)
        if reset.exists():
            reset.unlink()
            probe.__exit__()
            attribution.__exit__()
            probe, attribution = measure()
            generation = True
        else:
            generation = False
        data = {
            "pid": os.getpid(),
            "requests": dict(_requests),
            "requests_by_resource": dict(_by_resource),
            "reset": generation,
            "loop_samples": len(probe.lags),
            "loop_lag_max_ms": probe.max_ms,
            "loop_lag_p99_ms": probe.p99_ms,
            "loop_stall_on_cpu_max_ms": probe.max_busy_ms,
            "loop_stall_on_cpu_p99_ms": percentile(probe.busy, 99) * 1000,
            "loop_callbacks": attribution.ran,
            "loop_callback_cpu_seconds": attribution.ran_cpu_seconds,
            "stalls": {
                **attribution.summary(),
                "worst_on_cpu": {
                    **attribution.inside(probe.worst_busy_window),
                    "callbacks_run": probe.worst_busy_callbacks,
                },
                "worst_wall": {
                    **attribution.inside(probe.worst_lag_window),
                    "callbacks_run": probe.worst_lag_callbacks,
                },
            },
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


async def _report_until_cancelled(path: Path, interval: float) -> None:
    # a probe that dies silently looks like a hub that stopped answering: say why instead
    try:
        await _report(path, interval)
    except Exception:
        log.exception("the benchmark probe stopped reporting to %s", path)
        raise


def install(path: str, interval: float = 0.5) -> None:
    """Start counting and reporting in the running hub (call from jupyterhub_config.py)."""
    _count_requests()
    task = asyncio.get_running_loop().create_task(_report_until_cancelled(Path(path), interval))
    _tasks.add(task)


_tasks: set[asyncio.Task[None]] = set()
