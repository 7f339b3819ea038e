"""The event-loop stalls of a login storm, pinned at their causes (issue #17): full garbage
collections walking the hub's start-up heap, and the reflectors' frequent full relists whose
objects set them off. Counts objects and checks settings; never times anything."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import subprocess
import sys
from types import SimpleNamespace
from typing import ClassVar
from unittest import mock

import pytest
from kubespawner import KubeSpawner
from kubespawner.reflector import ResourceReflector

from dna_hub import DnaSpawner
from dna_hub.hub import startup_heap

#: Imports what a hub process holds (JupyterHub, KubeSpawner, kubernetes_asyncio, dna_hub),
#: freezes, and reports what a full collection still walks afterwards.
_PROBE = """
import gc, json
import dna_hub.hub.spawner, dna_hub.auth.oidc, jupyterhub.app  # what a hub has imported
from dna_hub.hub import startup_heap
walked_before = len(gc.get_objects())
first, again = startup_heap.freeze_startup_heap(), startup_heap.freeze_startup_heap()
print(json.dumps({
    "walked_before": walked_before,
    "frozen": gc.get_freeze_count(),
    "walked_after": len(gc.get_objects()),
    "first": first,
    "again": again,
}))
"""


def test_freezing_takes_the_start_up_heap_out_of_full_collections() -> None:
    # A fresh interpreter: the freeze is process-wide and must not depend on this one.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    probe = json.loads(out.stdout)
    assert probe["first"] is True and probe["again"] is False, probe
    # What made each full pass long: the start-up heap, now frozen and no longer walked.
    assert probe["walked_before"] > 100_000, probe
    assert probe["frozen"] >= probe["walked_before"] * 0.95, probe
    assert probe["walked_after"] < probe["walked_before"] * 0.02, probe


def _spawner(**config: object) -> DnaSpawner:
    user = SimpleNamespace(name="alice", id=1, url="/user/alice/", settings={}, groups=[])
    hub = SimpleNamespace(api_url="http://hub:8081/hub/api", public_host="", url="/hub/",
                          base_url="/hub/")  # fmt: skip
    with mock.patch("kubespawner.spawner.load_config"):  # no cluster credentials needed
        return DnaSpawner(
            user=user, hub=hub, _mock=True, log=logging.getLogger("test-heap"), **config
        )


class _Stop(Exception):
    """Ends _start right after its first step."""


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_spawn_freezes_the_start_up_heap_unless_told_not_to(enabled: bool) -> None:
    spawner = _spawner(freeze_startup_heap=enabled)
    freeze = mock.Mock(return_value=True)
    with (
        mock.patch.object(startup_heap, "freeze_startup_heap", freeze),
        mock.patch.object(DnaSpawner, "provision_profile", side_effect=_Stop),
        pytest.raises(_Stop),
    ):
        await spawner._start()
    assert freeze.call_count == (1 if enabled else 0)


class _RecordingReflector:
    """Takes what KubeSpawner's _start_reflector gives a reflector class; starts nothing."""

    made: ClassVar[list[dict[str, object]]] = []

    def __init__(self, **kwargs: object) -> None:
        self.made.append(kwargs)
        self.first_load_future = asyncio.get_running_loop().create_future()
        self.first_load_future.set_result(None)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_the_shared_reflectors_relist_every_five_minutes_not_every_ten_seconds() -> None:
    """A full relist of every singleuser pod (cluster-wide with per-user namespaces) is
    decoded on the event loop, and its objects set off the full collections that stalled
    the hub; KubeSpawner's 10 s watch timeout / 30 s restart made it several times a minute."""
    spawner = _spawner()
    saved = dict(KubeSpawner.reflectors)
    KubeSpawner.reflectors.clear()
    _RecordingReflector.made.clear()
    try:
        with (
            mock.patch("kubespawner.spawner.PodReflector", _RecordingReflector),
            mock.patch("kubespawner.spawner.EventReflector", _RecordingReflector),
        ):
            await spawner._start_watching_pods()
            await spawner._start_watching_events()
    finally:
        KubeSpawner.reflectors.clear()
        KubeSpawner.reflectors.update(saved)
    # Both shared reflectors (pods, events) were made with the period.
    assert [(m["timeout_seconds"], m["restart_seconds"]) for m in _RecordingReflector.made] == [
        (300, 300),
        (300, 300),
    ]
    # What those keywords mean to KubeSpawner's reflector (pinned: kubespawner<8).
    assert {"timeout_seconds", "restart_seconds"} <= set(ResourceReflector.class_trait_names())
    params = inspect.signature(KubeSpawner._start_reflector).parameters
    assert list(params)[:4] == ["self", "kind", "reflector_class", "replace"]


def test_the_relist_period_cannot_be_set_below_ten_seconds() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        _spawner(reflector_relist_seconds=1)
