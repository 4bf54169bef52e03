"""JSON-RPC 2.0 over HTTP and WebSocket on one port (hypercorn on trio).

Requests are dispatched by jsonrpcserver: single and batch requests over
HTTP POST, and the same frames over a WebSocket connection. Method tables
come from node.rpc.

Hostile input is bounded before any JSON parser sees it (``decode_frame``,
shared with the L1 server): a frame (HTTP body or WebSocket message) larger
than ``MAX_REQUEST_BYTES`` answers -32600 "request too large: N > M bytes"
(HTTP status 413); JSON nested deeper than ``MAX_DEPTH`` answers -32700
"parse error: nesting deeper than 64" (the process raises the recursion limit
for py-evm, so CPython's C JSON parser would otherwise overflow the C stack
and kill the process); a batch of more than ``MAX_BATCH`` requests answers
-32600 "batch too large: N > 1000 requests" (geth's BatchRequestLimit).
Large frames are decoded in a worker thread and batch items are dispatched
one at a time, yielding to other tasks every 0.5 ms, so a big batch never holds
the event loop (and the block builder) for long.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from itertools import accumulate
from typing import Any

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from jsonrpcserver.dispatcher import call, create_request, to_response
from jsonrpcserver.response import to_serializable_one
from jsonrpcserver.result import Error, InvalidParams, MethodNotFoundResult
from jsonrpcserver.sentinels import NOCONTEXT, NOID

_JSON = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]
log = logging.getLogger(__name__)


def _contain_connection_errors() -> None:
    """Keep one connection's protocol error inside that connection.

    hypercorn 0.18 lets an exception raised while it handles one connection
    escape ``TCPServer.run`` and end ``serve()``, i.e. the whole node: a
    WebSocket client that sends a frame before the 101 answer makes h11 raise
    ``LocalProtocolError`` while hypercorn answers 400. Wrapping ``run``
    logs such an error and drops only that connection (``run``'s own
    ``finally`` closes it). Cancellation (a BaseException) still propagates.
    Applies to every hypercorn server of the process (L2 and L1 ports).
    """
    from hypercorn.trio.tcp_server import TCPServer

    original = TCPServer.run
    if getattr(original, "contained", False):
        return

    async def run(self: TCPServer) -> None:
        try:
            await original(self)
        except Exception as exc:  # noqa: BLE001 - one client's error must not stop the server
            log.warning("dropped a connection after a protocol error: %r", exc)

    run.contained = True  # type: ignore[attr-defined]
    TCPServer.run = run  # type: ignore[method-assign]


_contain_connection_errors()


def _write_now(h11_protocol: Any, data: bytes) -> int:
    """Write what the kernel takes of ``data`` to the connection's socket at
    once, if nothing else is writing to it: bytes written (0: nothing, e.g.
    the socket is full or broken; the caller sends the rest through
    hypercorn's lock and socket wrapper, which also report a broken socket).
    Saves the lock and two scheduler rounds per answer, as
    ``node.socket_writer`` does for WebSocket frames."""
    from hypercorn.trio.tcp_server import TCPServer

    tcp = getattr(h11_protocol.send, "__self__", None)
    if (not isinstance(tcp, TCPServer) or not isinstance(tcp.stream, trio.SocketStream)
            or not isinstance(tcp.send_lock, trio.Lock) or tcp.send_lock.locked()):
        return 0
    sock = tcp.stream.socket
    if sock.did_shutdown_SHUT_WR or sock.fileno() < 0:
        return 0
    try:
        return os.write(sock.fileno(), data)
    except OSError:  # would block, or broken
        return 0


def _coalesce_response_writes() -> None:
    """Write an HTTP/1.1 response's head and body with one socket write.

    hypercorn 0.18 writes the head at ``http.response.start``, then the body,
    then the end of the message: three ``send`` syscalls and three trips
    through the connection's send lock per JSON-RPC answer, most of the
    server's CPU per small request. Wrapping ``H11Protocol._send_h11_event``
    holds a final response head (status >= 200, plain HTTP streams only; a
    WebSocket's 101 and ``100 Continue`` go out at once) until the next event
    of the connection and writes both together; empty writes (the end of a
    message with a Content-Length) are skipped. A response whose app fails
    before its body ends the connection, as before (the head is dropped).
    Applies to every hypercorn server of the process (L2 and L1 ports).
    """
    import h11
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import HTTPStream

    original = H11Protocol._send_h11_event
    if getattr(original, "coalesced", False):
        return

    async def send_h11_event(self: H11Protocol, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        held = self.__dict__.pop("_held_head", None)
        if held is not None:
            data = held + data
        if type(event) is h11.Response and isinstance(self.stream, HTTPStream):
            self.__dict__["_held_head"] = data
            return
        sent = _write_now(self, data) if data else 0
        if sent < len(data):
            await self.send(RawData(data=data[sent:]))

    send_h11_event.coalesced = True  # type: ignore[attr-defined]
    H11Protocol._send_h11_event = send_h11_event  # type: ignore[method-assign]


_coalesce_response_writes()


class _KeepAliveTimer:
    """hypercorn's per-connection keep-alive timer (``TrioSingleTask``'s
    interface: ``restart`` when a response is done, ``stop`` when a request
    arrives) without a task per request.

    hypercorn 0.18 restarts the timer by cancelling a task and waiting
    (``nursery.start``) for a new one, several scheduler rounds per request.
    Here one task per connection waits in a cancel scope whose deadline
    ``restart`` and ``stop`` move (no task wakes up); when the deadline passes
    the connection is closed as hypercorn's own timer does
    (``TCPServer._idle_timeout``: ``keep_alive_timeout`` s idle, or at once
    when the server terminates). ``end`` stops the task for good: called
    when the connection's read loop ends (the client went away), so a
    connection never waits for its timer to finish.
    """

    def __init__(self) -> None:
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None  # the current wait
        self._task_scope: trio.CancelScope | None = None  # the whole task
        self._started = self._ended = False

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        tcp = getattr(action, "__self__", None)
        self._deadline = trio.current_time() + tcp.config.keep_alive_timeout
        if self._scope is not None:
            self._scope.deadline = self._deadline
        if not self._started:
            self._started = True
            task_group._nursery.start_soon(self._run, tcp)

    async def stop(self) -> None:
        self._deadline = math.inf
        if self._scope is not None:
            self._scope.deadline = math.inf

    def end(self) -> None:
        """Stop the timer task for good (the connection is closing)."""
        self._ended = True
        if self._task_scope is not None:
            self._task_scope.cancel()

    async def _run(self, tcp: Any) -> None:
        with trio.CancelScope() as self._task_scope:
            if self._ended:
                return
            while True:
                with trio.CancelScope(deadline=self._deadline) as self._scope:
                    await tcp.context.terminated.wait()
                    break  # the server is shutting down
                if trio.current_time() >= self._deadline:
                    break  # idle for keep_alive_timeout
            self._scope = None
            with trio.CancelScope(shield=True):
                await tcp._initiate_server_close()


def _cheap_keep_alive_timers() -> None:
    """Give hypercorn's trio TCP connections a ``_KeepAliveTimer`` (0.18's
    ``TCPServer`` with its ``_idle_timeout``, ``_initiate_server_close`` and
    ``_read_data``, whose end also ends the timer)."""
    import hypercorn.trio.tcp_server as tcp_server

    server = tcp_server.TCPServer
    if getattr(server, "cheap_timers", False) or not all(
            hasattr(server, name) for name in ("_idle_timeout", "_initiate_server_close",
                                               "_read_data")):
        return
    read_data = server._read_data

    async def _read_data(self: Any) -> None:
        try:
            await read_data(self)
        finally:
            if isinstance(self.idle_task, _KeepAliveTimer):
                self.idle_task.end()

    tcp_server.TrioSingleTask = _KeepAliveTimer  # type: ignore[attr-defined,misc]
    server._read_data = _read_data  # type: ignore[method-assign]
    server.cheap_timers = True  # type: ignore[attr-defined]


_cheap_keep_alive_timers()

MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""Largest HTTP body or WebSocket message, bytes (geth's HTTP body limit)."""
MAX_DEPTH = 64
"""Deepest nesting of JSON arrays/objects in a frame (a batch is one level)."""
MAX_BATCH = 1000
"""Most requests in one batch (geth's BatchRequestLimit)."""
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_THREAD_DECODE_BYTES = 64 * 1024  # frames above this are decoded in a worker thread
_YIELD_SECONDS = 0.0005  # a batch yields to other tasks at least this often

# a JSON string; text whose quotes all pair up into strings. Possessive and
# unrolled, so each is one linear pass (a failed string match is never retried)
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_STRINGS_PAIRED = re.compile(r'[^"]*+(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"[^"]*+)*+', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class FrameError(Exception):
    """A frame rejected before dispatch: ``code`` (-32700 / -32600) and a
    message starting with the broken rule; ``http_status`` for HTTP."""

    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status

    def response(self) -> dict[str, Any]:
        return error_response(self.code, self.message)


def error_response(code: int, message: str, request_id: Any = None) -> dict[str, Any]:
    """A JSON-RPC 2.0 error response object."""
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


def too_large(size: int) -> FrameError:
    return FrameError(INVALID_REQUEST, f"request too large: {size} > {MAX_REQUEST_BYTES} bytes",
                      413)


def nesting_depth(text: str) -> int:
    """Deepest array/object nesting of JSON ``text``, counted outside strings
    without parsing (linear time, no recursion). Raises FrameError (-32700)
    on an unterminated string."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return min(MAX_DEPTH, text.count("[") + text.count("{"))
    depth = _plain_depth(text)
    if depth is not None:
        return depth
    if _STRINGS_PAIRED.fullmatch(text) is None:
        raise FrameError(PARSE_ERROR, "parse error: unterminated string")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


_INNERMOST = re.compile(rb"\[\]|\{\}")  # the innermost bracket pairs
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')


def _plain_depth(text: str) -> int | None:
    """``nesting_depth`` for the common frame, at C speed: keep only the
    brackets, quotes and backslashes; if no string holds a quote, backslash
    or bracket (each string is then an empty pair of quotes) drop the
    strings and peel the innermost bracket pairs off, one level per pass.
    None when that does not apply (escapes, brackets in strings, unbalanced
    or deeper than MAX_DEPTH): the caller then counts exactly."""
    marks = text.encode("utf-8", "surrogatepass").translate(None, _NOT_STRUCTURE)
    if b"\\" in marks:
        return None
    brackets = marks.replace(b'""', b"")
    if b'"' in brackets:
        return None
    for depth in range(MAX_DEPTH + 1):
        if not brackets:
            return depth
        brackets = _INNERMOST.sub(b"", brackets)
    return None


_REQUEST_KEYS = frozenset(("jsonrpc", "method", "params", "id"))


def request_problem(request: Any) -> str:
    """What makes ``request`` not a JSON-RPC 2.0 request object ('' if
    nothing): jsonrpcserver's request schema, checked by hand (jsonschema
    costs ~0.8 ms per request)."""
    if not isinstance(request, dict):
        return "expected a request object"
    if request.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if not isinstance(request.get("method"), str):
        return "method must be a string"
    if "params" in request and not isinstance(request["params"], list | dict):
        return "params must be an array"
    rid = request.get("id")
    if not (rid is None or isinstance(rid, str | int | float) and not isinstance(rid, bool)):
        return "id must be a string, number or null"
    if not request.keys() <= _REQUEST_KEYS:
        return "unknown member " + repr(sorted(request.keys() - _REQUEST_KEYS)[0])[:40]
    return ""


def decode_frame(raw: bytes | str) -> Any:
    """One JSON-RPC frame (HTTP body or WebSocket message) to its decoded
    payload: a request object, or a list of 1..MAX_BATCH items for a batch.

    Raises FrameError: -32600 "request too large" (over MAX_REQUEST_BYTES),
    -32700 "parse error: ..." (not UTF-8, nesting deeper than MAX_DEPTH,
    invalid JSON), -32600 "invalid request: empty batch" / "batch too large".
    """
    if isinstance(raw, str):
        size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
        text = raw
    else:
        size = len(raw)
        if size <= MAX_REQUEST_BYTES:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(PARSE_ERROR, "parse error: request is not UTF-8") from None
    if size > MAX_REQUEST_BYTES:
        raise too_large(size)
    if nesting_depth(text) > MAX_DEPTH:
        raise FrameError(PARSE_ERROR, f"parse error: nesting deeper than {MAX_DEPTH}")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(PARSE_ERROR, f"parse error: {exc}") from None
    if isinstance(payload, list):
        if not payload:
            raise FrameError(INVALID_REQUEST, "invalid request: empty batch")
        if len(payload) > MAX_BATCH:
            raise FrameError(INVALID_REQUEST,
                             f"batch too large: {len(payload)} > {MAX_BATCH} requests")
    return payload


async def decode_frame_async(raw: bytes | str) -> Any:
    """``decode_frame``, in a worker thread for large frames."""
    if len(raw) > _THREAD_DECODE_BYTES:
        return await trio.to_thread.run_sync(decode_frame, raw)
    return decode_frame(raw)


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
        # awaited with a batch's decoded items before they are dispatched (e.g.
        # sequencer.intake.SignaturePrefetch.prefetch); None: nothing to prepare
        self.prepare_batch: Callable[[list[Any]], Awaitable[None]] | None = None
        # durability of what a frame's dispatch journaled (sequencer.commit.GroupCommit:
        # ``mark()`` before, ``await wait(mark)`` before answering); None: nothing to wait for
        self.commit: Any = None
        self._batch_turn = trio.Lock()  # batches dispatch one at a time (handle_async)
        # (method, argument count) -> jsonrpcserver's "Invalid params" text, "" if they bind
        self._arity: dict[tuple[Callable[..., Any], int], str] = {}

    def dispatch_one(self, request: Any) -> dict[str, Any] | None:
        """Dispatch one decoded request object; None for a notification.

        jsonrpcserver's own steps (``dispatch_request``: method lookup,
        argument check, ``call``, response), with the argument check
        (``inspect.signature(...).bind``, ~25 us) cached per method and
        argument count: positional params bind or fail by their count alone.
        Same codes, messages and data as ``dispatch_deserialized``."""
        problem = request_problem(request)
        if problem:
            return error_response(INVALID_REQUEST, f"invalid request: {problem}")
        req = create_request(request)
        method = self.methods.get(req.method)
        if method is None:
            result = Error(*MethodNotFoundResult(req.method))
        else:
            problem = self._params_problem(method, req.params)
            result = InvalidParams(problem) if problem else call(req, NOCONTEXT, method)
        if req.id is NOID:
            return None
        return to_serializable_one(to_response(req, result))

    def _params_problem(self, method: Callable[..., Any], params: Any) -> str:
        """'' if ``params`` bind to ``method``'s signature, else the TypeError
        text jsonrpcserver answers with (-32602 data)."""
        args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
        key = (method, len(args))
        if not kwargs and key in self._arity:
            return self._arity[key]
        try:
            inspect.signature(method).bind(*args, **kwargs)
            problem = ""
        except TypeError as exc:
            problem = str(exc)
        if not kwargs:
            self._arity[key] = problem
        return problem

    def handle(self, text: bytes | str) -> str:
        """Dispatch one JSON-RPC frame (single or batch) synchronously; '' when
        nothing is to be sent (notifications)."""
        try:
            payload = decode_frame(text)
        except FrameError as exc:
            return json.dumps(exc.response())
        if not isinstance(payload, list):
            return _dumps(self.dispatch_one(payload))
        return _dumps([r for r in map(self.dispatch_one, payload) if r is not None] or None)

    async def handle_async(self, raw: bytes | str) -> tuple[int, str]:
        """``handle`` for the servers: (HTTP status, response text). Batch items
        are dispatched one at a time, with a trio checkpoint whenever 0.5 ms
        have passed since the last one (a single request needs ~10 scheduler
        rounds through hypercorn, so the slice bounds how long a batch
        delays it; a checkpoint costs ~10 us). Batches take turns (a FIFO lock;
        their signatures are recovered before, ``prepare_batch``): between
        two slices of a batch the single requests, the block builder and the
        rest run, but no other batch's slice, so each scheduler round costs
        them at most one slice however many batches are in flight. The
        answer waits until what the frame journaled is on disk (``commit``)."""
        try:
            payload = await decode_frame_async(raw)
        except FrameError as exc:
            return exc.http_status, json.dumps(exc.response())
        commit = self.commit
        mark = commit.mark() if commit is not None else 0
        if not isinstance(payload, list):
            response = await self._dispatch_async(payload)
            if commit is not None:
                await commit.wait(mark)
            return 200, _dumps(response)
        if self.prepare_batch is not None:
            await self.prepare_batch(payload)
        responses = []
        async with self._batch_turn:
            yielded = time.perf_counter()
            for item in payload:
                response = await self._dispatch_async(item)
                if response is not None:
                    responses.append(response)
                if time.perf_counter() - yielded > _YIELD_SECONDS:
                    await trio.lowlevel.checkpoint()
                    yielded = time.perf_counter()
        if commit is not None:
            await commit.wait(mark)
        return 200, _dumps(responses or None)

    async def _dispatch_async(self, request: Any) -> dict[str, Any] | None:
        """``dispatch_one``; in a worker thread for methods marked ``blocking``
        (long L1 work such as mining many blocks)."""
        name = request.get("method") if isinstance(request, dict) else None
        method = self.methods.get(name) if isinstance(name, str) else None
        if getattr(method, "blocking", False):
            return await trio.to_thread.run_sync(self.dispatch_one, request)
        return self.dispatch_one(request)

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
        body = await read_body(receive)
        if body is None:
            return
        if isinstance(body, FrameError):
            status, out = body.http_status, json.dumps(body.response())
        else:
            status, out = await self.handle_async(body)
        body = out.encode()
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]  # not chunked
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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
                raw = text if text is not None else message.get("bytes") or b""
                with conn.context():
                    _, out = await self.handle_async(raw)
                if out:
                    conn.reply(out)


def _dumps(response: Any) -> str:
    """A response (object or list) as JSON text; '' for None. orjson, or the
    stdlib for what orjson refuses (integers past 64 bits)."""
    if response is None:
        return ""
    try:
        return orjson.dumps(response).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(response)


async def read_body(receive: Callable) -> bytes | FrameError | None:
    """An ASGI HTTP request body; FrameError ("request too large", 413) as
    soon as it passes MAX_REQUEST_BYTES (the rest is not read); None if the
    client disconnected."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return too_large(size)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def limit_config(config: Config) -> Config:
    """hypercorn's own limits for JSON-RPC servers: WebSocket messages and
    incomplete HTTP requests (headers) bounded, set on ``config``."""
    config.websocket_max_message_size = MAX_REQUEST_BYTES
    config.h11_max_incomplete_size = 16 * 1024
    return config


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
    limit_config(config)
    await serve(app, config, task_status=task_status)
