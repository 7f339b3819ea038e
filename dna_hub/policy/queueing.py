"""Kueue-aware spawning: which notebook pods queue, and what a queued spawn tells its user.

Kueue's pod integration gates a pod labelled with a LocalQueue (``kueue.x-k8s.io/queue-name``)
until its Workload is admitted under the ClusterQueue's quota, then lifts the gate and the
scheduler places it. dna_hub labels only the notebook pods that ask for an accelerator
(``DnaSpawner.kueue_accelerators``), so CPU notebooks never wait in a queue; a queued spawn
waits ``DnaSpawner.kueue_queue_timeout`` on top of ``start_timeout`` and shows its place.

Pure: mappings in (a Workload, a visibility API answer), values and strings out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADMISSION_GATE",
    "DEFAULT_ACCELERATORS",
    "QUEUE_LABEL",
    "WORKLOAD_POD_UID_LABEL",
    "QueueState",
    "accelerator_requests",
    "describe_request",
    "queue_state",
    "queue_timeout_message",
    "queued_message",
]

#: The label that hands a pod to Kueue, naming its LocalQueue.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: The scheduling gate Kueue's webhook puts on a queued pod (lifted when admitted).
ADMISSION_GATE = "kueue.x-k8s.io/admission"
#: The label Kueue puts on the Workload of a pod: the pod's uid.
WORKLOAD_POD_UID_LABEL = "kueue.x-k8s.io/job-uid"
#: Extended resources that make a notebook queue (device plugins' names).
DEFAULT_ACCELERATORS = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")

_QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def valid_queue_name(name: str) -> bool:
    """LocalQueue and ClusterQueue names are DNS labels here (a subset of what Kueue takes)."""
    return bool(_QUEUE_NAME.match(name))


def accelerator_requests(
    resources: Iterable[Mapping[str, Any]], accelerators: Iterable[str]
) -> dict[str, str]:
    """The accelerators among a pod's resource limits/requests (KubeSpawner's
    ``extra_resource_limits`` and ``extra_resource_guarantees``), with their quantities;
    a quantity of 0 asks for none."""
    wanted = set(accelerators)
    found: dict[str, str] = {}
    for mapping in resources:
        for name, quantity in (mapping or {}).items():
            if name in wanted and str(quantity).strip() not in ("", "0"):
                found[name] = str(quantity)
    return found


def describe_request(requests: Mapping[str, str]) -> str:
    """ "1 nvidia.com/gpu", "2 nvidia.com/gpu and 1 amd.com/gpu"."""
    parts = [f"{quantity} {name}" for name, quantity in sorted(requests.items())]
    return " and ".join(parts) if parts else "an accelerator"


@dataclass(frozen=True)
class QueueState:
    """Where a queued notebook's Workload stands."""

    #: "pending" (waiting for quota), "admitted", "evicted", "finished", "unknown"
    phase: str
    #: 1 = next to be admitted in its ClusterQueue (from the visibility API), None: unknown
    position: int | None = None
    #: Kueue's own words (the condition message), for the hub log
    detail: str = ""


def _condition(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _true(condition: Mapping[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def queue_state(
    workload: Mapping[str, Any] | None, pending: Mapping[str, Any] | None = None
) -> QueueState:
    """The state of a Workload; ``pending`` is the visibility API's ``pendingworkloads``
    answer for its LocalQueue (its position when it is still waiting)."""
    if workload is None:
        return QueueState("unknown", detail="Kueue has not made a Workload for the pod yet")
    for kind, phase in (("Finished", "finished"), ("Evicted", "evicted"), ("Admitted", "admitted")):
        condition = _condition(workload, kind)
        if _true(condition):
            return QueueState(phase, detail=str((condition or {}).get("message", "")))
    detail = str((_condition(workload, "QuotaReserved") or {}).get("message", ""))
    name = (workload.get("metadata") or {}).get("name")
    position = None
    for item in (pending or {}).get("items") or []:
        if (item.get("metadata") or {}).get("name") == name:
            raw = item.get("positionInClusterQueue")
            position = int(raw) + 1 if isinstance(raw, int) else None
    return QueueState("pending", position=position, detail=detail)


def queued_message(state: QueueState, *, queue: str, requests: Mapping[str, str]) -> str:
    """What a queued spawn's progress page says."""
    what = describe_request(requests)
    if state.phase == "pending":
        place = f"position {state.position}" if state.position else "waiting"
        return (
            f"Queued: {place} in queue {queue}, waiting for {what}. Your server starts when "
            "the quota frees; leave this page open, or press Stop Server to cancel."
        )
    if state.phase == "admitted":
        return f"Admitted by the queue {queue}: {what} reserved, starting your server."
    if state.phase == "unknown":
        return f"Asking the queue {queue} for {what}…"
    return f"The queue {queue} stopped this request ({state.phase})."


def queue_timeout_message(requests: Mapping[str, str], queue: str, seconds: float) -> str:
    """What a user reads when their spawn waited in the queue as long as it may."""
    waited = f"{round(seconds / 60)} minutes" if seconds >= 120 else f"{round(seconds)} seconds"
    return (
        f"No {describe_request(requests)} became free in the queue {queue} within {waited}. "
        "Please try again later, or start a server without an accelerator."
    )


def eviction_message(detail: str) -> str:
    """What a user reads when the queue ends a running or queued notebook."""
    return (
        "Your server was stopped by the GPU queue (preempted or evicted to make room, or "
        "its quota changed). Your files are kept; start it again to queue for a GPU. "
        f"({detail})"
        if detail
        else "Your server was stopped by the GPU queue. Start it again to queue for a GPU."
    )
