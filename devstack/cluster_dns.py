"""STAND-IN for cluster DNS (CoreDNS's ``kubernetes`` plugin), Service names only.

A small DNS server (UDP, dnspython for the wire format) that answers
``<service>.<namespace>.svc.cluster.local`` A queries with the address of the pod backing
the Service, and NXDOMAIN for every other name. With :func:`resolv_conf` — the file a
kubelet writes into each pod: ``search <ns>.svc.cluster.local svc.cluster.local
cluster.local``, ``options ndots:5`` — the C library resolves names exactly as in a pod of
``<ns>``: ``hub`` only inside ``jupyterhub``, ``hub.jupyterhub.svc`` from anywhere. So a
short Service name used across namespaces fails here as it does on a cluster.

Backing addresses come from ``backing`` ((service, namespace) → address, for pods this
machine runs without Pod objects: devstack/host_pods.py) and else from the Service's
Endpoints in the API server (ready addresses; the endpoints controller fills them for real
pods).

Not done: no upstream forwarding (names outside the cluster domain are NXDOMAIN: use IP
addresses or /etc/hosts for them), no pod or headless-hostname records, no SRV/PTR, no
AAAA answers (empty NOERROR for a known name), no TCP, no caching, cluster domain is
``cluster.local``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

CLUSTER_DOMAIN = "cluster.local"
TTL = 5


def resolv_conf(namespace: str, nameserver: str) -> str:
    """The /etc/resolv.conf a kubelet writes for a pod in ``namespace`` (dnsPolicy ClusterFirst)."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\nnameserver {nameserver}\noptions ndots:5\n"


def service_of(name: str) -> tuple[str, str] | None:
    """``(service, namespace)`` of ``<svc>.<ns>.svc.cluster.local``, else None."""
    labels = name.lower().rstrip(".").split(".")
    suffix = ["svc", *CLUSTER_DOMAIN.split(".")]
    if len(labels) == 2 + len(suffix) and labels[2:] == suffix:
        return labels[0], labels[1]
    return None


@dataclass
class ClusterDNS:
    address: str
    api: ApiClient | None = None
    backing: dict[tuple[str, str], str] = field(default_factory=dict)
    port: int = 53
    request_timeout: float = 5
    _transport: asyncio.DatagramTransport | None = None
    queries: list[tuple[str, str]] = field(default_factory=list)
    #: (service, namespace) -> address, instead of ``api`` (the container kubelet's own client)
    resolve: Callable[[str, str], Awaitable[str | None]] | None = None
    #: bind before the address exists (a bridge's gateway appears with its first pod)
    free_bind: bool = False

    async def lookup(self, service: str, namespace: str) -> str | None:
        if (service, namespace) in self.backing:
            return self.backing[(service, namespace)]
        if self.resolve is not None:
            return await self.resolve(service, namespace)
        if self.api is None:
            return None
        try:
            endpoints = await client.CoreV1Api(self.api).read_namespaced_endpoints(
                service, namespace, _request_timeout=self.request_timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        for subset in endpoints.subsets or []:
            for address in subset.addresses or []:
                return address.ip
        return None

    async def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = question.name.to_text()
        target = service_of(name)
        address = await self.lookup(*target) if target else None
        self.queries.append((name, address or "NXDOMAIN"))
        if address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, address)
            )
        return response

    async def start(self) -> ClusterDNS:
        loop = asyncio.get_running_loop()
        server = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.pending: set[asyncio.Task[None]] = set()

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(self.reply(data, addr))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)

            async def reply(self, data: bytes, addr: tuple[str, int]) -> None:
                try:
                    query = dns.message.from_wire(data)
                    response = await server.answer(query)
                except Exception:
                    log.exception("cluster DNS stand-in: bad query from %s", addr)
                    return
                self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]

        if self.free_bind:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
            sock.bind((self.address, self.port))
            transport, _ = await loop.create_datagram_endpoint(Protocol, sock=sock)
        else:
            transport, _ = await loop.create_datagram_endpoint(
                Protocol, local_addr=(self.address, self.port)
            )
        self._transport = transport  # type: ignore[assignment]
        return self

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None

    def add(self, backing: Mapping[tuple[str, str], str]) -> None:
        self.backing.update(backing)
