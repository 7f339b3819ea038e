"""STAND-IN for a Service's load balancer (``type: LoadBalancer``), reached from this machine.

The chart's ``proxy-public`` Service is how a browser reaches the hub: port 80 → the proxy
pods' ``http`` port (8000). No cloud and no kube-proxy run here, so :class:`ServiceLoadBalancer`
listens on a loopback port of this machine and, for every connection, looks the Service's
Endpoints up in the API server (kube-controller-manager's endpoints controller keeps them to
the Ready pods) and connects to the first ready address at the port the Endpoints give for
the Service port's name — the ``targetPort`` resolved, which is how a Service whose
``port`` differs from its ``targetPort`` is served here. A replaced pod is found at the
next connection.

Not done: no clusterIP or nodePort, no balancing (first ready address), no
``externalTrafficPolicy``/session affinity, no status.loadBalancer written; one TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devstack.tcp_pipe import pipe

REQUEST_TIMEOUT = 10


@dataclass
class ServiceLoadBalancer:
    api: ApiClient
    namespace: str
    service: str
    port_name: str
    host: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def backend(self) -> tuple[str, int] | None:
        """The first ready address of the Service and its target port, or None."""
        try:
            endpoints = await client.CoreV1Api(self.api).read_namespaced_endpoints(
                self.service, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        for subset in endpoints.subsets or []:
            ports = [p.port for p in subset.ports or [] if p.name == self.port_name]
            for address in subset.addresses or []:
                if ports:
                    return address.ip, ports[0]
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = await self.backend()
            if target is None:
                raise OSError(f"no ready endpoint for Service {self.namespace}/{self.service}")
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, TimeoutError, ApiException):
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def start(self) -> ServiceLoadBalancer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return self

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.close()
            self._server = None
