"""A queued notebook's wait, as its user sees it (Kueue; the rules are in
:mod:`dna_hub.policy.queueing`).

While a notebook pod that asked for an accelerator waits for Kueue to admit it, the spawn
looks at the pod's Workload (found by Kueue's ``kueue.x-k8s.io/job-uid`` label) and, while it
is pending, at the visibility API's ``pendingworkloads`` of its LocalQueue for its place, every
``DnaSpawner.kueue_poll_interval`` seconds; each change is one progress message. Read-only:
``get``/``list`` on Workloads and ``get`` on ``localqueues/pendingworkloads`` in profile
namespaces (helm-values/hub-rbac.yaml). A failed look is logged and retried; it never fails
the spawn (the place is then shown as unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dna_hub.k8s.api import EVENT, QUEUE_VISIBILITY, WORKLOAD, KubeApi
from dna_hub.k8s.retry import describe
from dna_hub.policy.queueing import (
    WORKLOAD_POD_UID_LABEL,
    QueueState,
    queue_state,
    queued_message,
)

__all__ = ["QueueWatch", "stop_reason"]

#: The reason of the event Kueue records on a pod it stops (evicted, preempted, deactivated).
KUEUE_STOPPED = "Stopped"


async def stop_reason(
    api: KubeApi, namespace: str, pod_name: str, pod_uid: str, *, attempts: int = 3
) -> str | None:
    """Kueue's own words if it stopped this pod (its ``Stopped`` event), else None.

    Events outlive the pod, so this is asked after the pod is gone; Kueue records the event
    right after deleting the pod, so a few short looks cover the moment in between.
    """
    selector = f"involvedObject.name={pod_name},reason={KUEUE_STOPPED}"
    for attempt in range(attempts):
        listing = await api.list(EVENT, namespace, field_selector=selector)
        for event in listing.get("items") or []:
            if (event.get("involvedObject") or {}).get("uid") == pod_uid:
                return str(event.get("message") or KUEUE_STOPPED)
        if attempt + 1 < attempts:
            await asyncio.sleep(1.0)
    return None


class QueueWatch:
    """Follows one queued pod until Kueue admits, evicts or finishes it."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        local_queue: str,
        requests: Mapping[str, str],
        interval: float,
        pod_uid: Callable[[], str | None],
        report: Callable[[str], None],
        log: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.local_queue = local_queue
        self.requests = dict(requests)
        self.interval = interval
        self.pod_uid = pod_uid
        self.report = report
        self.log = log
        self.state = QueueState("unknown")
        self._failing = False

    async def look(self) -> QueueState:
        """One look at the Workload (and its place while it waits)."""
        uid = self.pod_uid()
        workload = None
        if uid:
            listing = await self.api.list(
                WORKLOAD, self.namespace, label_selector=f"{WORKLOAD_POD_UID_LABEL}={uid}"
            )
            items = listing.get("items") or []
            workload = items[0] if items else None
        pending: dict[str, Any] | None = None
        if workload is not None and queue_state(workload).phase == "pending":
            pending = await self.api.get_subresource(
                QUEUE_VISIBILITY, self.local_queue, self.namespace, "pendingworkloads"
            )
        return queue_state(workload, pending)

    async def run(self) -> QueueState:
        """Look until the Workload leaves the queue; report each new message."""
        last = ""
        while True:
            try:
                self.state = await self.look()
                self._failing = False
            except (ApiException, TimeoutError, OSError) as e:
                if not self._failing:
                    self.log.warning(
                        "Queue of %s/%s: cannot read the Workload or its place: %s",
                        self.namespace,
                        self.local_queue,
                        describe(e),
                    )
                self._failing = True
            message = queued_message(self.state, queue=self.local_queue, requests=self.requests)
            if message != last:
                last = message
                self.report(message)
                self.log.info(
                    "Queue %s/%s: %s (position %s; %s)",
                    self.namespace,
                    self.local_queue,
                    self.state.phase,
                    self.state.position,
                    self.state.detail,
                )
            if self.state.phase in ("admitted", "evicted", "finished"):
                return self.state
            await asyncio.sleep(self.interval)
