"""l1_stub.client.connect: a JSON-RPC session that retries a stale keep-alive
connection but gives up on a read timeout (found by the replica benchmark: a
slow eth_getLogs made the retry policy recurse until the process crashed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from l1_stub.client import connect


def test_read_timeout_raises_instead_of_recursing() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # never answers

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with connect(url, timeout=0.5) as w3:
            t0 = time.monotonic()
            with pytest.raises(requests.exceptions.ReadTimeout):
                w3.eth.block_number  # noqa: B018 - the call is the test
            assert time.monotonic() - t0 < 10
        # urllib3 does not resend a timed-out read; web3's own retry of idempotent
        # calls (5 attempts) is all there is
        assert 1 <= len(held) <= 6
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()
