"""WebSocket text frames written straight to a hypercorn connection's socket.

hypercorn (0.18) sends each ASGI ``websocket.send`` through its connection's
send lock and trio's socket wrapper: three scheduler rounds per message (the
sender task's wake-up, the lock, the socket's checkpoint) and, when the client
offered permessage-deflate (websockets and web3.py do), a per-connection
deflate. With 100 subscribers on a busy node each round waits for every other
runnable task (order intake, the batcher), and the rounds make most of the
delay from block seal to notification.

A ``SocketWriter`` writes a whole frame from the publishing code itself: it
takes the connection's send lock without waiting, frames the text with wsproto
(uncompressed: RFC 7692 lets a sender leave any message uncompressed, RSV1
clear, and the compression context only ever sees compressed messages) and
``os.write``\\ s it to the non-blocking socket: one syscall, no scheduler
round. What the kernel does not take at once is "owed": the lock stays held
(nothing else may be written into the middle of a frame) until an awaiting
task calls ``flush``. hypercorn's own lock is a ``trio.Lock``, which only the
task that took it may release, so the writer replaces it with a one-token
``trio.Semaphore`` (same ``async with`` use by hypercorn, no owner).

``attach`` returns None, and the caller keeps using the ASGI ``send``, when
the connection is not hypercorn's plain-TCP HTTP/1.1 WebSocket as expected
(another server or version, TLS, HTTP/2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import trio
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol

_FRAMES = FrameProtocol(client=False, extensions=[])
"""Server-side framing of whole messages (stateless with fin=True)."""


def frame(text: str) -> bytes:
    """One unmasked, uncompressed, final WebSocket text frame of ``text``."""
    return bytes(_FRAMES.send_data(text, fin=True))


class SocketWriter:
    """Direct writes of whole text frames to one hypercorn WebSocket connection.

    ``stream`` is hypercorn's ``WSStream``, ``tcp`` its ``TCPServer`` (whose
    ``send_lock`` this writer replaces). All methods run on the trio thread.
    """

    def __init__(self, stream: Any, tcp: Any) -> None:
        self.stream = stream
        self.tcp = tcp
        self.lock = trio.Semaphore(1)
        tcp.send_lock = self.lock  # hypercorn's own writes (pong, close) take it too
        self.owed = b""  # the unsent tail of a frame; the lock is held while non-empty
        self.broken = False  # the socket failed: the connection is ending
        self._reported = False  # hypercorn was told (it closes the socket, ends the app)

    @classmethod
    def attach(cls, send: Callable[..., Any]) -> SocketWriter | None:
        """The writer for the connection behind hypercorn's ASGI ``send``
        (``WSStream.app_send``), or None if that is not what ``send`` is or
        hypercorn is writing to the socket right now."""
        try:
            from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
            from hypercorn.trio.tcp_server import TCPServer
        except ImportError:
            return None
        stream = getattr(send, "__self__", None)
        if not isinstance(stream, WSStream) or stream.state != ASGIWebsocketState.CONNECTED:
            return None
        h11 = getattr(stream.send, "__self__", None)
        tcp = getattr(getattr(h11, "send", None), "__self__", None)
        if (not isinstance(tcp, TCPServer) or not hasattr(tcp, "protocol")
                or not isinstance(tcp.stream, trio.SocketStream)
                or not isinstance(tcp.send_lock, trio.Lock) or tcp.send_lock.locked()):
            return None
        return cls(stream, tcp)

    def open(self) -> bool:
        """True while text frames may be sent (accepted, not closing)."""
        from hypercorn.protocol.ws_stream import ASGIWebsocketState

        return (not self.broken and not self.stream.closed
                and self.stream.state == ASGIWebsocketState.CONNECTED
                and self.stream.connection.state == ConnectionState.OPEN)

    def write_nowait(self, data: bytes) -> bool:
        """Write frame bytes ``data`` now, without waiting. False (nothing
        written) if another write holds the lock or the socket takes no byte;
        True if written or begun: then ``owed`` is what is left, and the
        lock stays held until ``flush``. On a closed connection the data
        is discarded (True), as hypercorn discards sends after a close."""
        if self.lock.value == 0:
            return False
        if not self.open():
            return True
        fd = self.tcp.stream.socket.fileno()
        if fd < 0:
            self.broken = True
            return True
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            return False
        except OSError:
            self.broken = True
            return False  # the caller queues it: its sender task reports the failure

        if sent < len(data):
            self.lock.acquire_nowait()
            self.owed = data[sent:]
        return True

    async def flush(self) -> None:
        """Send the owed tail of a frame begun by ``write_nowait`` (waits for
        the socket, shielded from cancellation as hypercorn's own sends are:
        a half-sent frame would corrupt the stream), then free the lock.
        If the socket failed, report it to hypercorn (once)."""
        if not self.owed:
            if self.broken:
                await self._report_broken()
            return
        try:
            await self._send_all(self.owed)
        finally:
            self.owed = b""
            self.lock.release()

    async def write(self, data: bytes) -> None:
        """Write frame bytes ``data``, waiting for the lock and the socket."""
        if self.write_nowait(data):
            await self.flush()
            return
        if not self.broken:
            async with self.lock:
                if self.open():
                    await self._send_all(data)
        if self.broken:
            await self._report_broken()

    async def _send_all(self, data: bytes) -> None:
        try:
            with trio.CancelScope(shield=True):
                await self.tcp.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            await self._report_broken()

    async def _report_broken(self) -> None:
        """What hypercorn does when one of its own sends fails: hand its
        protocol a ``Closed`` event, which closes the socket and ends the app.
        Without it a client that floods requests while the app drops it
        would keep hypercorn's reader busy and the socket open."""
        if self._reported:
            return
        self._reported = True
        from hypercorn.events import Closed

        await self.tcp.protocol.handle(Closed())
