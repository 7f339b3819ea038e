"""STAND-IN kubelet runtimes ``"none"`` and ``"serve"``: pods reach Running without a
process or container (as kwok does for scale tests); on ``serve`` the stand-in itself
answers HTTP on each pod's IP.

Selected with ``KubeletConfig(runtime="none")`` / ``runtime="serve"`` (``python -m
devstack.standins --kubelet-runtime none|serve``). Node registration, the lease and
scheduler-style binding stay the shared code of :class:`~devstack.standins.kubelet.Kubelet`;
this module only replaces the per-pod worker. It exists for benchmarks of hundreds of
simultaneous spawns on a small machine, where neither processes nor containers can run for
every pod: the hub, KubeSpawner and the API server see the same pod lifecycle (bound,
Running and Ready, a graceful delete completed by the node) at a cost of a few requests per
pod — and, on ``serve``, the hub's proxy reaches something at the pod's address.

What :class:`SimulatedPodWorker` (runtime ``none``) does, per pod bound to the node:

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

What :class:`ServingPodWorker` (runtime ``serve``) does in addition — for full-stack
benchmarks of a real JupyterHub and configurable-http-proxy in front of hundreds of pods:

* pod IPs come from a LOOPBACK CIDR (default ``127.128.0.0/16``; any CIDR outside
  ``127.0.0.0/8`` is refused): Linux routes all of ``127.0.0.0/8`` to ``lo``, so every
  pod IP can be bound without any setup. The pool starts at a random address and skips
  addresses whose port something else listens on (another stand-in on this machine);
* before the pod is reported Running, the stand-in process listens on
  (podIP, port) — port the first container's first TCP ``containerPort``, default
  8888. ONE process, MANY sockets: every pod's socket is served by one shared aiohttp
  low-level server (:class:`PodHttpServers`), which tells pods apart by the address the
  connection came in on;
* it answers HTTP/1.1 (keep-alive) like a Jupyter server behind JupyterHub, under the
  prefix the first container's env ``JUPYTERHUB_SERVICE_PREFIX`` gives (a plain
  ``value``; default ``/``):

  - ``GET {prefix}api`` → 200 ``application/json`` ``{"version": "2.14.2"}`` (jupyter_server's
    unauthenticated version endpoint),
  - ``GET {prefix}`` → 302 to ``{prefix}lab``,
  - ``GET {prefix}lab`` and anything under ``{prefix}lab/`` → 200 ``text/html``, a tiny
    page titled "JupyterLab (stand-in)",
  - anything else (other paths, other methods but HEAD) → 404 ``{"message": "Not Found"}``;

  every response carries ``X-Standin-Pod: <namespace>/<name>``, so a benchmark can check
  that it reached the right pod;
* a socket that cannot be bound (address in use) is logged and the pod reported waiting
  (``ContainerCreating``, with the address and the error, no IP), as when the pool is
  exhausted, until it is deleted;
* on deletion: the listening socket and its open connections are closed BEFORE the
  deletion is completed, then the IP is released; when the kubelet stops, every socket
  is closed.

What they do NOT do (they are stand-ins, not a kubelet):

* no process, container, image, sandbox or network. On ``none`` nothing listens on the
  pod IP, so anything that connects to the pod (the hub's proxy, a health check) fails.
  On ``serve`` only the four answers above exist: no authentication (no token check, no
  OAuth with the hub, no ``/oauth_callback``), no activity reports to the hub, no
  kernels, sessions, contents, terminals or websockets, no TLS, and the prefix is not
  checked against ``JUPYTERHUB_SERVICE_URL`` or any other variable;
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

import asyncio
import html
import ipaddress
import logging
import os
import random
import socket
from dataclasses import dataclass

from aiohttp import web

from devstack.standins import JSON
from devstack.standins.kubelet import PodWorker, first_tcp_port

log = logging.getLogger("standins.kubelet.simulated")

DEFAULT_POD_CIDR = "10.244.0.0/16"
#: The ``serve`` runtime's pod CIDR: loopback, so every pod IP can be listened on.
SERVE_POD_CIDR = "127.128.0.0/16"
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
#: The port a ``serve`` pod listens on when its first container declares no TCP port.
DEFAULT_SERVE_PORT = 8888
#: What ``{prefix}api`` reports (jupyter_server's version endpoint).
JUPYTER_SERVER_VERSION = "2.14.2"
#: Addresses a port-checking pool tries before it gives up (something may be listening on
#: the wildcard address at that port, which takes it on every address).
PROBE_LIMIT = 256


def default_pod_cidr(runtime: str) -> str:
    """The pod CIDR of ``runtime`` when none is given: loopback for ``serve``."""
    return SERVE_POD_CIDR if runtime == "serve" else DEFAULT_POD_CIDR


def loopback_cidr(cidr: str) -> str:
    """``cidr`` if it lies inside ``127.0.0.0/8``; ValueError (naming it) otherwise."""
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise ValueError(f"pod CIDR {cidr!r} is not an IPv4 network: {exc}") from None
    if not network.subnet_of(LOOPBACK):
        raise ValueError(
            f"pod CIDR {cidr} is outside 127.0.0.0/8: the serve runtime listens on every "
            f"pod IP, so it needs loopback addresses (e.g. {SERVE_POD_CIDR})"
        )
    return str(network)


def _listenable(ip: str, port: int) -> bool:
    """Whether (ip, port) can be bound as ``loop.create_server`` binds (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class PodCidrPool:
    """Pod IPs from a CIDR, handed out round-robin; an address is reused only after release.

    Same interface as the loopback :class:`~devstack.standins.kubelet.IpPool`
    (``allocate``/``release``/``in_use``) but sized for thousands of pods. By default no
    port check (on ``none`` nothing will listen on these addresses) and the round starts
    at the first address; with ``probe_ports`` (``serve``) an address whose port cannot
    be bound is skipped, and with ``random_start`` the round starts at a random address,
    so that two stand-ins on one machine rarely try the same ones. The network address,
    the first host address (a bridge's gateway by convention) and the broadcast address
    are never given.
    """

    def __init__(
        self,
        cidr: str = DEFAULT_POD_CIDR,
        *,
        probe_ports: bool = False,
        random_start: bool = False,
    ) -> None:
        network = ipaddress.IPv4Network(cidr)
        if network.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small")
        self.cidr = str(network)
        self.probe_ports = probe_ports
        self._first = int(network.network_address) + 2
        self._size = network.num_addresses - 3
        self._next = random.randrange(self._size) if random_start else 0
        self._used: set[int] = set()

    def _address(self, offset: int) -> str:
        return str(ipaddress.IPv4Address(self._first + offset))

    def _usable(self, offset: int, port: int | None) -> bool:
        return not self.probe_ports or port is None or _listenable(self._address(offset), port)

    def allocate(self, preferred: str | None = None, port: int | None = None) -> str:
        """A free address; ``preferred`` (the pod's earlier IP) if it is free and ours.

        ``port`` is checked only with ``probe_ports`` (ignored otherwise).
        """
        if preferred:
            try:
                offset = int(ipaddress.IPv4Address(preferred)) - self._first
            except ValueError:
                offset = -1
            if 0 <= offset < self._size and offset not in self._used:
                if self._usable(offset, port):
                    self._used.add(offset)
                    return self._address(offset)
        if len(self._used) >= self._size:
            raise RuntimeError(f"no free pod IP left in {self.cidr}")
        probed = 0
        while True:
            while self._next in self._used:
                self._next = (self._next + 1) % self._size
            offset = self._next
            self._next = (self._next + 1) % self._size
            if self._usable(offset, port):
                self._used.add(offset)
                return self._address(offset)
            probed += 1
            if probed >= min(PROBE_LIMIT, self._size - len(self._used)):
                raise RuntimeError(
                    f"no pod IP in {self.cidr} where port {port} is free (tried {probed}: "
                    f"is something listening on 0.0.0.0:{port}?)"
                )

    def release(self, ip: str | None) -> None:
        if not ip:
            return
        try:
            self._used.discard(int(ipaddress.IPv4Address(ip)) - self._first)
        except ValueError:
            pass

    def in_use(self) -> set[str]:
        return {self._address(offset) for offset in self._used}


class SimulatedPodWorker(PodWorker):
    """One pod on the ``none`` runtime: Running at once, deletion completed at once.

    One task per pod that sleeps on the pod's watch events (no polling); per pod it costs
    one status patch and one final delete. See the module docstring for what it leaves out.
    Subclasses hook in with :meth:`_serve` (before Running) and :meth:`_unserve` (once
    the deletion is seen, before it is completed).
    """

    #: Scheme of the ``containerID``/``imageID`` it reports.
    id_scheme = "standin-none"

    async def _run(self) -> None:
        if await self._ended_before_start():
            return
        status = self.pod.get("status") or {}
        try:
            self.ip = self.kubelet.ips.allocate(status.get("podIP"), self._probe_port())
        except RuntimeError as exc:  # the kubelet's FailedCreatePodSandBox
            await self._report_waiting("ContainerCreating", str(exc))
            await self._wait_for_deletion()
            await self._finish_deletion()
            return
        # After a stand-in restart a running pod keeps its start time (and IP, above).
        self.started_at = status.get("startTime") or self.started_at
        if await self._serve():
            await self._report_running(ready=True)
        await self._wait_for_deletion()
        await self._unserve()
        await self._finish_deletion()

    def _probe_port(self) -> int | None:
        """The port the IP pool should check is free (None: nothing will listen)."""
        return None

    async def _serve(self) -> bool:
        """Before Running: start what answers on the pod IP; False if that failed (the pod
        was reported waiting, and its IP released)."""
        return True

    async def _unserve(self) -> None:
        """The pod is being deleted: stop what :meth:`_serve` started."""

    async def _kill(self, grace: float) -> None:
        """Nothing runs, so nothing to stop."""

    def _container_statuses(self, first_state: JSON, first_ready: bool) -> list[JSON]:
        statuses = super()._container_statuses(first_state, first_ready)
        for status in statuses:
            status["containerID"] = f"{self.id_scheme}://{self.uid}/{status['name']}"
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
                    "imageID": f"{self.id_scheme}://{container.get('image', '')}",
                    "containerID": f"{self.id_scheme}://{self.uid}/{container['name']}",
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


# --------------------------------------------------------------------------- serve


@dataclass
class ServedPod:
    """What one pod's socket answers for."""

    namespace: str
    name: str
    prefix: str
    server: asyncio.Server

    @property
    def header(self) -> dict[str, str]:
        return {"X-Standin-Pod": f"{self.namespace}/{self.name}"}

    def respond(self, request: web.BaseRequest) -> web.StreamResponse:
        """The Jupyter-like answers listed in the module docstring."""
        path, prefix = request.path, self.prefix
        if request.method in ("GET", "HEAD"):
            if path == f"{prefix}api":
                return web.json_response({"version": JUPYTER_SERVER_VERSION}, headers=self.header)
            if path == prefix:
                return web.Response(status=302, headers={**self.header, "Location": f"{prefix}lab"})
            if path == f"{prefix}lab" or path.startswith(f"{prefix}lab/"):
                return web.Response(text=self.page(), content_type="text/html", headers=self.header)
        return web.json_response({"message": "Not Found"}, status=404, headers=self.header)

    def page(self) -> str:
        pod = html.escape(f"{self.namespace}/{self.name}")
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            "<title>JupyterLab (stand-in)</title></head>\n"
            f"<body><p>Stand-in pod {pod}: no Jupyter server runs here.</p></body></html>\n"
        )


def service_prefix(container: JSON) -> str:
    """The container's ``JUPYTERHUB_SERVICE_PREFIX`` (a plain ``value``) as ``/…/``."""
    for var in container.get("env") or []:
        if var.get("name") == "JUPYTERHUB_SERVICE_PREFIX":
            value = str(var.get("value") or "").strip("/")
            return f"/{value}/" if value else "/"
    return "/"


class PodHttpServers:
    """Every ``serve`` pod's listening socket, served by ONE aiohttp low-level server.

    ``aiohttp.web.Server`` is a protocol factory: each pod gets its own
    ``loop.create_server(factory, ip, port)``, and a request is answered for the pod whose
    (ip, port) the connection was accepted on. Owned by the
    :class:`~devstack.standins.kubelet.Kubelet` (``kubelet.http``).
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, int], ServedPod] = {}
        self._protocols: web.Server | None = None  # made in the running loop

    def __len__(self) -> int:
        return len(self._pods)

    async def listen(self, ip: str, port: int, namespace: str, name: str, prefix: str) -> None:
        """Listen on (ip, port) for pod ``namespace/name``; OSError if it cannot bind."""
        if self._protocols is None:
            self._protocols = web.Server(self._handle, access_log=None)
        key = (ip, port)
        if key in self._pods:
            served = self._pods[key]
            raise OSError(f"{ip}:{port} is already served for {served.namespace}/{served.name}")
        server = await asyncio.get_running_loop().create_server(self._protocols, host=ip, port=port)
        self._pods[key] = ServedPod(namespace, name, prefix, server)
        log.debug("pod %s/%s: serving http://%s:%s%s", namespace, name, ip, port, prefix)

    async def close(self, ip: str, port: int) -> None:
        """Stop listening on (ip, port) and drop the connections accepted there."""
        pod = self._pods.pop((ip, port), None)
        if pod is None:
            return
        pod.server.close()  # the listening socket is closed right away
        if self._protocols is not None:
            for handler in self._protocols.connections:
                transport = handler.transport
                sockname = transport.get_extra_info("sockname") if transport else None
                if sockname and tuple(sockname[:2]) == (ip, port):
                    handler.force_close()
        await pod.server.wait_closed()

    async def close_all(self) -> None:
        for ip, port in list(self._pods):
            await self.close(ip, port)
        if self._protocols is not None:
            for handler in self._protocols.connections:
                handler.force_close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        pod = self._pods.get(tuple(sockname[:2])) if sockname else None
        if pod is None:  # the pod's socket was closed while this request was read
            return web.json_response({"message": "Not Found"}, status=404)
        return pod.respond(request)


class ServingPodWorker(SimulatedPodWorker):
    """One pod on the ``serve`` runtime: as on ``none``, plus a socket on (podIP, port)
    answering like a Jupyter server (see the module docstring)."""

    id_scheme = "standin-serve"
    #: Whether :meth:`_serve` listens for this pod (until :meth:`_unserve`).
    served = False

    @property
    def port(self) -> int:
        containers = self.pod.get("spec", {}).get("containers") or [{}]
        return first_tcp_port(containers[0]) or DEFAULT_SERVE_PORT

    @property
    def prefix(self) -> str:
        containers = self.pod.get("spec", {}).get("containers") or [{}]
        return service_prefix(containers[0])

    def _probe_port(self) -> int | None:
        return self.port

    async def _serve(self) -> bool:
        http = self.kubelet.http
        assert http is not None and self.ip is not None
        try:
            await http.listen(self.ip, self.port, self.namespace, self.name, self.prefix)
        except OSError as exc:  # as the kubelet's FailedCreatePodSandBox
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            message = f"cannot listen on {self.ip}:{self.port}: {reason}"
            self.kubelet.ips.release(self.ip)
            self.ip = None
            await self._report_waiting("ContainerCreating", message)  # logs it too
            return False
        self.served = True
        return True

    async def _unserve(self) -> None:
        if self.served and self.ip is not None:
            self.served = False
            http = self.kubelet.http
            assert http is not None
            await http.close(self.ip, self.port)

    async def _kill(self, grace: float) -> None:
        """The worker is cancelled (the kubelet stops): close the pod's socket."""
        await self._unserve()
