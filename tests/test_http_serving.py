"""node.server's tuning of hypercorn for small JSON-RPC requests: one socket
write per HTTP response (with a Content-Length, straight to the socket when
it takes it all), the keep-alive timer moved instead of respawned per
request and ended with its connection, and JSON-RPC batches taking turns."""

from __future__ import annotations

import http.client
import json
import math
import time
from typing import Any

import trio
import trio.testing

from node.rpc import _wrap
from node.server import JsonRpcApp, _KeepAliveTimer, serve_jsonrpc
from tests.devnet_process import free_port


def _app(log: list[Any] | None = None) -> JsonRpcApp:
    def l2_echo(value: Any) -> Any:
        if log is not None:  # each item outlasts a slice: a batch yields after each
            time.sleep(0.001)
            log.append(value)
        return value

    return JsonRpcApp({"l2_echo": _wrap(l2_echo)})


def _exchange(port: int, sizes: list[int]) -> list[tuple[int, dict[str, str], Any]]:
    """Echo requests of ``sizes`` characters on one keep-alive connection:
    (status, headers, decoded answer) of each."""
    answers = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i, size in enumerate(sizes):
        body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "l2_echo", "params": ["x" * size]})
        conn.request("POST", "/", body, {"content-type": "application/json"})
        r = conn.getresponse()
        answers.append((r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())))
    conn.close()
    return answers


def _serve_and_exchange(sizes: list[int], write_now: Any = None
                        ) -> tuple[list[tuple[int, dict[str, str], Any]], list[bytes],
                                   list[tuple[bytes, int]]]:
    """Serve ``_app()`` and run ``_exchange``; also returns what went
    through hypercorn's socket wrapper (``SocketStream.send_all``) and what
    ``node.server._write_now`` was given and wrote (``write_now`` replaces
    it, e.g. to take only part of the data)."""
    import node.server as server

    port = free_port()
    wrapped: list[bytes] = []
    direct: list[tuple[bytes, int]] = []
    real = server._write_now
    take = write_now or real

    def record(h11_protocol: Any, data: bytes) -> int:
        sent = take(h11_protocol, data)
        direct.append((bytes(data), sent))
        return sent

    async def main() -> list[Any]:
        original = trio.SocketStream.send_all

        async def send_all(self: trio.SocketStream, data: Any) -> None:
            wrapped.append(bytes(data))
            await original(self, data)

        trio.SocketStream.send_all = send_all  # type: ignore[method-assign]
        server._write_now = record
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_jsonrpc, _app(), "127.0.0.1", port)
                answers = await trio.to_thread.run_sync(_exchange, port, sizes)
                nursery.cancel_scope.cancel()
            return answers
        finally:
            trio.SocketStream.send_all = original  # type: ignore[method-assign]
            server._write_now = real

    return trio.run(main), wrapped, direct


def test_each_response_is_one_direct_write_with_a_content_length() -> None:
    """Three keep-alive requests on one connection: each answer is framed
    by Content-Length (not chunked), and head and body leave in one write
    straight to the socket (nothing through hypercorn's socket wrapper)."""
    answers, wrapped, direct = _serve_and_exchange([0, 100, 200])
    assert [a[2] for a in answers] == [{"jsonrpc": "2.0", "result": "x" * n, "id": i}
                                       for i, n in enumerate([0, 100, 200])]
    for status, headers, _ in answers:
        assert status == 200 and "transfer-encoding" not in headers
        assert headers["content-type"] == "application/json"
    assert wrapped == []
    assert len(direct) == 3 and all(sent == len(data) for data, sent in direct)
    for data, _ in direct:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["jsonrpc"] == "2.0"
        assert f"content-length: {len(body)}".encode() in head.lower()


def test_what_the_socket_does_not_take_at_once_goes_through_hypercorn() -> None:
    """A direct write that takes only part of an answer (a full socket
    buffer, forced here to 100 bytes): hypercorn sends the rest, in order."""
    from node.server import _write_now

    answers, wrapped, direct = _serve_and_exchange(
        [300_000, 10], write_now=lambda h, data: _write_now(h, data[:100]))
    assert [a[2]["result"] for a in answers] == ["x" * 300_000, "x" * 10]
    assert [sent for _, sent in direct] == [100, 100]
    assert [len(w) for w in wrapped] == [len(d) - 100 for d, _ in direct]


class _Connection:
    """What ``_KeepAliveTimer`` uses of hypercorn's ``TCPServer``."""

    def __init__(self, timeout: float) -> None:
        class Config:
            keep_alive_timeout = timeout

        class Context:
            terminated = trio.Event()

        self.config = Config()
        self.context = Context()
        self.closed_at: float | None = None

    async def _idle_timeout(self) -> None:  # the action hypercorn passes (only its owner is used)
        raise AssertionError("the timer closes the connection itself")

    async def _initiate_server_close(self) -> None:
        self.closed_at = trio.current_time()


class _TaskGroup:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery


def test_keep_alive_timer_closes_only_after_the_idle_timeout() -> None:
    conn = _Connection(75.0)

    async def main() -> None:
        timer = _KeepAliveTimer()
        async with trio.open_nursery() as nursery:
            group = _TaskGroup(nursery)
            await timer.restart(group, conn._idle_timeout)  # connection opened: idle
            await trio.sleep(50)
            await timer.stop()  # a request arrives at 50 s ...
            await trio.sleep(100)  # ... and takes 100 s: no timeout while busy
            assert conn.closed_at is None
            await timer.restart(group, conn._idle_timeout)  # answered at 150 s
            await trio.sleep(74)
            assert conn.closed_at is None
            await trio.sleep(2)
            assert conn.closed_at == 225.0  # 150 + 75

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_keep_alive_timer_closes_at_once_when_the_server_terminates() -> None:
    conn = _Connection(math.inf)

    async def main() -> None:
        timer = _KeepAliveTimer()
        async with trio.open_nursery() as nursery:
            await timer.restart(_TaskGroup(nursery), conn._idle_timeout)
            await trio.sleep(10)
            conn.context.terminated.set()
        assert conn.closed_at == 10.0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_batches_take_turns_and_single_requests_run_between_their_slices() -> None:
    """Two batches sent together dispatch one after the other (no slice of
    one between slices of the other); a single request sent meanwhile is
    answered before the first batch ends."""
    log: list[Any] = []
    app = _app(log)

    def batch(tag: str, n: int) -> bytes:
        return json.dumps([{"jsonrpc": "2.0", "id": i, "method": "l2_echo",
                            "params": [f"{tag}{i}"]} for i in range(n)]).encode()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.handle_async, batch("a", 20))
            nursery.start_soon(app.handle_async, batch("b", 20))
            while not log:  # until a batch is being dispatched
                await trio.lowlevel.checkpoint()
            await app.handle_async(json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "l2_echo", "params": ["single"]}))

    trio.run(main)
    first, second = ("a", "b") if log[0] == "a0" else ("b", "a")
    batches = [x for x in log if x != "single"]
    assert batches == [f"{first}{i}" for i in range(20)] + [f"{second}{i}" for i in range(20)]
    assert 0 < log.index("single") < 20  # between two slices of the first batch


def test_a_connection_ends_when_its_client_leaves_idle_or_mid_request() -> None:
    """A client that closes its keep-alive connection, and one that leaves
    while its request runs: the server drops each connection's tasks at
    once (no task waits for the 75 s keep-alive timer)."""
    import socket

    port = free_port()

    def slow(value: Any) -> Any:
        time.sleep(0.3)
        return value

    wrapped = _wrap(slow)
    wrapped.blocking = True  # type: ignore[attr-defined]  # dispatched in a worker thread
    app = JsonRpcApp({"l2_echo": _wrap(lambda value: value), "l2_slow": wrapped})

    def request(method: str) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": [1]}).encode()
        return (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def idle_client() -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/", request("l2_echo").partition(b"\r\n\r\n")[2],
                     {"content-type": "application/json"})
        answer = json.loads(conn.getresponse().read())  # the whole answer ...
        conn.close()  # ... then the idle connection is closed
        return answer

    def leaving_client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request("l2_slow"))  # and gone before the answer

    results: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_jsonrpc, app, "127.0.0.1", port)
            await trio.testing.wait_all_tasks_blocked()
            baseline = trio.lowlevel.current_statistics().tasks_living
            results["answer"] = await trio.to_thread.run_sync(idle_client)
            results["idle"] = await trio.to_thread.run_sync(lambda: _poll(baseline))
            await trio.to_thread.run_sync(leaving_client)
            results["leaving"] = await trio.to_thread.run_sync(lambda: _poll(baseline))
            nursery.cancel_scope.cancel()

    def _poll(baseline: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if trio.from_thread.run_sync(
                    lambda: trio.lowlevel.current_statistics().tasks_living) == baseline:
                return True
            time.sleep(0.01)
        return False

    trio.run(main)
    assert results["answer"] == {"jsonrpc": "2.0", "result": 1, "id": 1}
    assert results["idle"] and results["leaving"]
