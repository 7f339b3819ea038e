"""Run code in a user's kernel the way a user's browser does: Jupyter Server's REST API and
the kernel channels websocket, through the hub's proxy, authenticated with the user's
JupyterHub token. No Jupyter client library: the wire protocol (v5.3 JSON messages).
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Execution:
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    reply: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Execution:
        if self.error is not None or self.reply.get("status") != "ok":
            tb = "\n".join((self.error or {}).get("traceback") or [])
            raise AssertionError(
                f"kernel code failed: {self.error}\n{tb}\n--- stdout\n{self.stdout}"
                f"\n--- stderr\n{self.stderr}"
            )
        return self


def _message(code: str, session: str) -> tuple[str, dict[str, Any]]:
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {
            "msg_id": msg_id,
            "username": "dna-hub-test",
            "session": session,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


class Kernel:
    """A kernel of a single-user server at ``server_url`` (``…/user/<name>``)."""

    def __init__(self, server_url: str, token: str, timeout: float = 300) -> None:
        self.server_url = server_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout
        self.session = uuid.uuid4().hex
        self.kernel_id = ""
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> Kernel:
        self._http = aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        async with self._http.post(
            f"{self.server_url}/api/kernels", json={"name": "python3"}
        ) as resp:
            body = await resp.text()
            assert resp.status == 201, f"starting a kernel: {resp.status} {body}"
            self.kernel_id = (await resp.json())["id"]
        ws_url = self.server_url.replace("http", "ws", 1)
        self._ws = await self._http.ws_connect(
            f"{ws_url}/api/kernels/{self.kernel_id}/channels?session_id={self.session}",
            max_msg_size=0,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        try:
            if self._ws is not None:
                await self._ws.close()
            async with self._http.delete(f"{self.server_url}/api/kernels/{self.kernel_id}"):
                pass
        finally:
            await self._http.close()

    async def run(self, code: str) -> Execution:
        assert self._ws is not None
        msg_id, message = _message(code, self.session)
        await self._ws.send_json(message)
        result = Execution()
        idle = replied = False
        async with asyncio.timeout(self.timeout):
            while not (idle and replied):
                msg = await self._ws.receive_json()
                if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg.get("content") or {}
                if kind == "stream":
                    if content.get("name") == "stderr":
                        result.stderr += content.get("text", "")
                    else:
                        result.stdout += content.get("text", "")
                elif kind == "error":
                    result.error = content
                elif kind == "execute_reply":
                    result.reply, replied = content, True
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
        return result
