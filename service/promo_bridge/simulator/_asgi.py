"""The outermost ASGI layer: request ids on every response, and dropped connections.

A "dropped connection" must look to the client exactly like a server that hung up: no status
line, no bytes. ASGI has no message for that, so this layer reaches the transport of the
server's request cycle (uvicorn's ``send`` is a bound method of an object holding it) and
closes it; uvicorn then sees a disconnected cycle and neither logs nor answers 500. Without a
transport (httpx.ASGITransport, in-process), it raises ``httpx.RemoteProtocolError`` to the
caller, the error httpx raises over a real socket in the same situation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, MutableMapping
from typing import Any, Final

import httpx
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID_KEY: Final = "promo_bridge.simulator.request_id"
DROP_KEY: Final = "promo_bridge.simulator.drop"
REQUEST_ID_HEADER: Final = b"x-cap-requestid"

# connection_lost runs in a later loop iteration than transport.close(); a few yields suffice.
_DISCONNECT_YIELDS: Final = 10


class DropConnection(Response):
    """A "response" that closes the connection without answering."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ask the outer layer to hang up instead of sending anything."""
        drop: Callable[[], None] = scope[DROP_KEY]
        drop()


def new_request_id() -> str:
    """A unique X-Cap-Requestid value."""
    return uuid.uuid4().hex


class RequestIdAndDrop:
    """Wraps the Starlette app: X-Cap-Requestid on every answer, and connection drops."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode())
        cycle: Any = getattr(send, "__self__", None)
        transport: Any = getattr(cycle, "transport", None)
        dropped = False

        def drop() -> None:
            nonlocal dropped
            dropped = True
            if transport is not None:
                transport.close()

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if dropped:
                return
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        scope[REQUEST_ID_KEY] = request_id
        scope[DROP_KEY] = drop
        await self.app(scope, receive, send_with_id)
        if not dropped:
            return
        if transport is None:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        await _until_disconnected(cycle)


async def _until_disconnected(cycle: Any) -> None:
    for _ in range(_DISCONNECT_YIELDS):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
