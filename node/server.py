"""JSON-RPC 2.0 over HTTP and WebSocket on one port (hypercorn on trio).

Requests are dispatched by jsonrpcserver: single and batch requests over
HTTP POST, and the same frames over a WebSocket connection. Method tables
come from node.rpc.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from jsonrpcserver import dispatch

_JSON = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]


async def asgi_lifespan(receive: Callable, send: Callable) -> None:
    """Answer an ASGI lifespan scope (nothing to set up or tear down)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class JsonRpcApp:
    """ASGI application answering JSON-RPC at any path."""

    def __init__(self, methods: dict[str, Callable[..., Any]], streams: Any = None) -> None:
        self.methods = methods
        self.streams = streams  # node.streams.StreamHub: subscriptions over WebSocket

    def handle(self, text: str) -> str:
        """Dispatch one JSON-RPC frame (single or batch); '' for notifications."""
        return dispatch(text, methods=self.methods)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(receive, send, scope)
        elif kind == "lifespan":
            await asgi_lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["method"] == "OPTIONS":
            headers = _JSON + [(b"access-control-allow-headers", b"content-type"),
                               (b"access-control-allow-methods", b"POST, OPTIONS")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] != "POST":
            body = b'{"error":"send JSON-RPC 2.0 requests with POST"}'
            await send({"type": "http.response.start", "status": 405, "headers": _JSON})
            await send({"type": "http.response.body", "body": body})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        text = b"".join(chunks).decode("utf-8", errors="replace")
        out = self.handle(text).encode()
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": out})

    async def _websocket(self, receive: Callable, send: Callable,
                         scope: dict[str, Any] | None = None) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        from node.streams import ws_connection

        # responses and notifications leave through one bounded buffer, in order
        async with ws_connection(self.streams, send, scope) as conn:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if conn.dropped is not None:
                    continue  # too slow: read until the socket closes, answer nothing
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                with conn.context():
                    out = self.handle(text)
                if out:
                    conn.reply(out)


async def serve_jsonrpc(
    app: Any,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on host:port until cancelled; started() once listening."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    config.graceful_timeout = 0.5
    await serve(app, config, task_status=task_status)
