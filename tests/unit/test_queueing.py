"""Kueue-aware spawning, the pure part (dna_hub/policy/queueing.py) and its settings: which
pods queue, where a Workload stands, what the spawn page says, the LocalQueue a profile gets."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError

from dna_hub.hub.settings import DnaSettings
from dna_hub.policy.queueing import (
    accelerator_requests,
    describe_request,
    eviction_message,
    queue_state,
    queue_timeout_message,
    queued_message,
)
from dna_hub.policy.rendering import ProfileContext, render_profile

GPU = "nvidia.com/gpu"


def test_only_accelerators_with_a_quantity_queue() -> None:
    accelerators = [GPU, "amd.com/gpu"]
    assert accelerator_requests([{GPU: "1"}, {}], accelerators) == {GPU: "1"}
    assert accelerator_requests([{"cpu": "2", "memory": "4G"}], accelerators) == {}
    assert accelerator_requests([{GPU: "0"}, {GPU: 0}], accelerators) == {}
    assert accelerator_requests([{}, {"amd.com/gpu": 2}], accelerators) == {"amd.com/gpu": "2"}
    assert accelerator_requests([{"example.com/gpu": "1"}], accelerators) == {}
    assert describe_request({GPU: "2", "amd.com/gpu": "1"}) == "1 amd.com/gpu and 2 nvidia.com/gpu"


def workload(name: str = "pod-x-1", **conditions: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [
                {"type": kind, "status": status, "message": message}
                for kind, (status, message) in conditions.items()
            ]
        },
    }


def test_a_pending_workload_has_its_place_from_the_visibility_api() -> None:
    waiting = workload(QuotaReserved=("False", "insufficient unused quota for nvidia.com/gpu"))
    pending = {
        "items": [
            {"metadata": {"name": "pod-other-1"}, "positionInClusterQueue": 0},
            {"metadata": {"name": "pod-x-1"}, "positionInClusterQueue": 1},
        ]
    }
    state = queue_state(waiting, pending)
    assert (state.phase, state.position) == ("pending", 2)
    assert "insufficient unused quota" in state.detail
    message = queued_message(state, queue="notebooks", requests={GPU: "1"})
    assert message.startswith("Queued: position 2 in queue notebooks, waiting for 1 nvidia.com/gpu")
    # not (yet) in the visibility answer: waiting, place unknown
    assert queue_state(waiting, {"items": []}).position is None
    assert "Queued: waiting in queue" in queued_message(
        queue_state(waiting, None), queue="notebooks", requests={GPU: "1"}
    )


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        ({"QuotaReserved": ("True", ""), "Admitted": ("True", "admitted")}, "admitted"),
        ({"Admitted": ("True", ""), "Evicted": ("True", "Preempted by x")}, "evicted"),
        ({"Admitted": ("True", ""), "Finished": ("True", "done")}, "finished"),
        ({"Admitted": ("False", "")}, "pending"),
    ],
)
def test_the_phase_follows_kueues_conditions(
    conditions: dict[str, tuple[str, str]], phase: str
) -> None:
    assert queue_state(workload(**conditions)).phase == phase


def test_no_workload_yet_is_unknown_not_an_error() -> None:
    state = queue_state(None)
    assert state.phase == "unknown"
    assert "Asking the queue" in queued_message(state, queue="q", requests={GPU: "1"})
    assert "Preempted" in eviction_message("Preempted: to make room")


def test_cluster_queue_by_group_then_default_and_team() -> None:
    settings = DnaSettings(
        kueue_cluster_queue="gpu-default",
        kueue_group_cluster_queues={"ml-platform": "ml-gpu", "fraud": "fraud-gpu"},
    )
    assert settings.kueue_enabled
    assert settings.cluster_queue_for(["data-science"]) == "gpu-default"
    assert settings.cluster_queue_for(["fraud", "ml-platform"]) == "ml-gpu"  # dict order
    assert settings.cluster_queue_for([], team="fraud") == "fraud-gpu"
    assert settings.cluster_queue_for([], team="other") == "gpu-default"
    assert DnaSettings().cluster_queue_for(["ml-platform"]) is None
    only_groups = DnaSettings(kueue_group_cluster_queues={"ml-platform": "ml-gpu"})
    assert only_groups.cluster_queue_for(["data-science"]) is None


@pytest.mark.parametrize(
    ("trait", "value", "message"),
    [
        ("kueue_cluster_queue", "GPU Queue", "is not a DNS label"),
        ("kueue_local_queue", "", "may not be empty"),
        ("kueue_group_cluster_queues", {"ml": "Bad_Name"}, "is not a DNS label"),
        ("kueue_queue_timeout", 0, "must be 0.1 s to 7 days"),
    ],
)
def test_bad_kueue_settings_are_refused_by_name(trait: str, value: Any, message: str) -> None:
    with pytest.raises(TraitError, match=message):
        DnaSettings(**{trait: value})


def test_a_profile_gets_its_local_queue_only_when_kueue_is_on() -> None:
    base = {
        "username": "alice",
        "namespace": "kubeflow-alice",
        "owner": "a@x",
        "hub_namespace": "jh",
    }
    off = render_profile(ProfileContext(**base))
    assert not [o for o in off.objects if o["kind"] == "LocalQueue"]
    on = render_profile(
        ProfileContext(**base, kueue_local_queue="notebooks", kueue_cluster_queue="gpu")
    )
    (queue,) = [o for o in on.objects if o["kind"] == "LocalQueue"]
    assert queue == {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {
            "name": "notebooks",
            "namespace": "kubeflow-alice",
            "labels": queue["metadata"]["labels"],
        },
        "spec": {"clusterQueue": "gpu"},
    }


def test_a_spawn_that_waited_its_limit_says_how_long_in_words() -> None:
    assert queue_timeout_message({GPU: "1"}, "notebooks", 25).startswith(
        "No 1 nvidia.com/gpu became free in the queue notebooks within 25 seconds."
    )
    assert "within 61 minutes" in queue_timeout_message({GPU: "1"}, "notebooks", 3660)
