"""TCP forwarding for the test-only stand-ins of kube-proxy (the container kubelet's
``kubernetes`` Service, the ``proxy-public`` load balancer, the hub pod's way to the
provider): :func:`pipe` copies one direction, :func:`start_tcp_forwarder` listens.

This file also runs as the hub pod's loopback sidecar (devstack/chart_hub.py), so it
uses nothing but the standard library.
"""

from __future__ import annotations

import asyncio
import socket


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def start_tcp_forwarder(listen: tuple[str, int], target: tuple[str, int]) -> asyncio.Server:
    """A plain TCP forwarder (``listen`` → ``target``), bound with IP_FREEBIND: a bridge's
    gateway address may exist only once a pod is up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
    sock.bind(listen)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, sock=sock)
