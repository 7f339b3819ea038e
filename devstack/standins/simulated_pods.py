"""STAND-IN kubelet runtime ``"none"``: pods reach Running without anything running (as
kwok does for scale tests).

Selected with ``KubeletConfig(runtime="none")`` (``python -m devstack.standins
--kubelet-runtime none``). Node registration, the lease and scheduler-style binding stay
the shared code of :class:`~devstack.standins.kubelet.Kubelet`; this module only
replaces the per-pod worker. It exists for benchmarks of hundreds of simultaneous spawns
on a small machine, where neither processes nor containers can run for every pod: the hub,
KubeSpawner and the API server see the same pod lifecycle (bound, Running and Ready, a
graceful delete completed by the node) at a cost of a few requests per pod.

What :class:`SimulatedPodWorker` does, per pod bound to the node:

* allocates a pod IP from :class:`PodCidrPool` (default ``10.244.0.0/16``: 65,533
  addresses, none of them bound or routed; an address is reused only after release);
* writes ONE status patch (``pods/status``, merge): phase Running, ``podIP``/``podIPs``,
  ``hostIP`` (the node's address), ``startTime``, the conditions Initialized, Ready,
  ContainersReady and PodScheduled all True, a running and ready ``containerStatuses``
  entry for every container and a terminated (``Completed``, exit 0)
  ``initContainerStatuses`` entry for every init container;
* waits (no polling: it sleeps until the pod's watch event arrives) for the pod's
  deletion and completes it at once with ``gracePeriodSeconds=0`` and a UID precondition,
  as the kubelet confirms a graceful delete, then releases the IP;
* a pod already Succeeded/Failed is left as it is until deleted; a pod already being
  deleted is completed at once (as the other runtimes do).

What it does NOT do (it is a stand-in, not a kubelet):

* no process, container, image, sandbox or network: nothing listens on the pod IP, so
  anything that connects to the pod (the hub's proxy, a health check) fails;
* no readiness probing: every container is Ready at once;
* no env/``envFrom``/volume/Secret/ConfigMap/ServiceAccount-token resolution, so a
  missing Secret or ConfigMap does NOT hold the pod in ``CreateContainerConfigError`` as
  the ``process`` and ``podman`` runtimes do; no security-context checks
  (``runAsNonRoot`` is not verified);
* no kubelet events (``Pulled``/``Created``/``Started``; the scheduler's ``Scheduled``
  event is still recorded by the shared binding code), no logs (the pod log dir stays
  empty), no exits (a pod never becomes Succeeded/Failed by itself), no restarts, no
  resource accounting (the node's capacity is not enforced).
"""

from __future__ import annotations

import ipaddress
import logging

from devstack.standins import JSON
from devstack.standins.kubelet import PodWorker

log = logging.getLogger("standins.kubelet.none")

DEFAULT_POD_CIDR = "10.244.0.0/16"


class PodCidrPool:
    """Pod IPs from a CIDR, handed out round-robin; an address is reused only after release.

    Same interface as the loopback :class:`~devstack.standins.kubelet.IpPool`
    (``allocate``/``release``/``in_use``) but sized for thousands of pods and with no port
    check: nothing will listen on these addresses. The network address, the first host
    address (a bridge's gateway by convention) and the broadcast address are never given.
    """

    def __init__(self, cidr: str = DEFAULT_POD_CIDR) -> None:
        network = ipaddress.IPv4Network(cidr)
        if network.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small")
        self.cidr = str(network)
        self._first = int(network.network_address) + 2
        self._size = network.num_addresses - 3
        self._next = 0
        self._used: set[int] = set()

    def allocate(self, preferred: str | None = None, port: int | None = None) -> str:
        """A free address; ``preferred`` (the pod's earlier IP) if it is free and ours.

        ``port`` is accepted for interface compatibility and ignored.
        """
        del port
        if preferred:
            try:
                offset = int(ipaddress.IPv4Address(preferred)) - self._first
            except ValueError:
                offset = -1
            if 0 <= offset < self._size and offset not in self._used:
                self._used.add(offset)
                return str(ipaddress.IPv4Address(self._first + offset))
        if len(self._used) >= self._size:
            raise RuntimeError(f"no free pod IP left in {self.cidr}")
        while self._next in self._used:
            self._next = (self._next + 1) % self._size
        offset = self._next
        self._next = (self._next + 1) % self._size
        self._used.add(offset)
        return str(ipaddress.IPv4Address(self._first + offset))

    def release(self, ip: str | None) -> None:
        if not ip:
            return
        try:
            self._used.discard(int(ipaddress.IPv4Address(ip)) - self._first)
        except ValueError:
            pass

    def in_use(self) -> set[str]:
        return {str(ipaddress.IPv4Address(self._first + offset)) for offset in self._used}


class SimulatedPodWorker(PodWorker):
    """One pod on the ``none`` runtime: Running at once, deletion completed at once.

    One task per pod that sleeps on the pod's watch events (no polling); per pod it costs
    one status patch and one final delete. See the module docstring for what it leaves out.
    """

    async def _run(self) -> None:
        if await self._ended_before_start():
            return
        status = self.pod.get("status") or {}
        try:
            self.ip = self.kubelet.ips.allocate(status.get("podIP"))
        except RuntimeError as exc:  # the kubelet's FailedCreatePodSandBox
            await self._report_waiting("ContainerCreating", str(exc))
            await self._wait_for_deletion()
            await self._finish_deletion()
            return
        # After a stand-in restart a running pod keeps its start time (and IP, above).
        self.started_at = status.get("startTime") or self.started_at
        await self._report_running(ready=True)
        await self._wait_for_deletion()
        await self._finish_deletion()

    async def _kill(self, grace: float) -> None:
        """Nothing runs, so nothing to stop."""

    def _container_statuses(self, first_state: JSON, first_ready: bool) -> list[JSON]:
        statuses = super()._container_statuses(first_state, first_ready)
        for status in statuses:
            status["containerID"] = f"standin-none://{self.uid}/{status['name']}"
        return statuses

    async def _report_running(self, ready: bool) -> None:
        state = {"running": {"startedAt": self.started_at}}
        status: JSON = {
            "phase": "Running",
            "conditions": self._conditions(ready),
            "containerStatuses": self._container_statuses(state, ready),
        }
        init = self.pod.get("spec", {}).get("initContainers") or []
        if init:
            status["initContainerStatuses"] = [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": f"standin-none://{container.get('image', '')}",
                    "containerID": f"standin-none://{self.uid}/{container['name']}",
                    "ready": True,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": self.started_at,
                            "finishedAt": self.started_at,
                        }
                    },
                }
                for container in init
            ]
        await self._patch_status(status)
