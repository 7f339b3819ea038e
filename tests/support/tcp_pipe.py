"""One direction of a TCP forwarder: copy ``reader`` to ``writer`` until either end closes.

Shared by the test-only forwarders that stand in for kube-proxy (the container kubelet's
``kubernetes`` Service, the ``proxy-public`` load balancer).
"""

from __future__ import annotations

import asyncio


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
