"""Hostile input cannot kill, stall or change the node (issue 6, item 3).

- frame limits (size, JSON nesting, batch length) before any JSON parser;
- every L2 method walked with hostile params answers a JSON-RPC error of the
  allowed codes (never -32603) and changes nothing;
- a hypothesis fuzzer throws random JSON-ish frames at the L2 app;
- a large batch of orders does not stall block sealing;
- time warps beyond 2^32 - 1 s are refused on both ports;
- a real devnet process survives every hostile input above through HTTP and
  WebSocket on both its L2 and L1 ports.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from l1_stub.chain import MAX_TIMESTAMP, EmbeddedL1
from l1_stub.server import handle_payload, rpc_call
from node.client import L2Client, order_params
from node.node import Node, NodeConfig
from node.server import MAX_BATCH, MAX_DEPTH, MAX_REQUEST_BYTES, FrameError, decode_frame
from node.signing import Signer, dev_keys
from node.transactions import Deposit, Order
from tests.devnet_process import DevnetProcess

KEYS = dev_keys(10)
MAKER, TAKER = Signer(KEYS[3]), Signer(KEYS[4])
ALLOWED = {-32700, -32600, -32601, -32602, -32001, -32003}
SLOW = os.environ.get("DERIVNET_SLOW") == "1"  # 3,000 fuzz examples instead of 200
NESTED = "[" * 70_000 + "]" * 70_000  # 140 KB: segfaulted the C JSON parser


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = Node(NodeConfig(serve_l1=False))
    n.sequencer.include_deposit(Deposit(0, MAKER.address, 10**12))
    n.sequencer.include_deposit(Deposit(1, TAKER.address, 10**12))
    n.sequencer.seal()
    yield n
    n.close()


def snapshot(node: Node) -> tuple[Any, ...]:
    """Everything a request could change: heads, roots, pending block, books,
    L1 head and clock, devnet switches."""
    chain = node.chain
    return (chain.head.number, chain.head.header.state_root, len(chain.pending_txs),
            chain.state.dirty_items(), {m: len(b) for m, b in node.sequencer.books.items()},
            node.l1.head(), node.l1.time_offset, node.config.censor_deposits,
            node.config.batcher_enabled)


def frame(node: Node, payload: Any) -> Any:
    text = node.app.handle(payload if isinstance(payload, str) else json.dumps(payload))
    return json.loads(text) if text else None


def call(node: Node, method: str, *params: Any) -> dict[str, Any]:
    return frame(node, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})


def check_responses(out: Any) -> list[dict[str, Any]]:
    """Each response is JSON-RPC 2.0 with a result or an allowed error code."""
    responses = out if isinstance(out, list) else [] if out is None else [out]
    for r in responses:
        assert r["jsonrpc"] == "2.0" and "id" in r, r
        assert ("result" in r) != ("error" in r), r
        if "error" in r:
            assert r["error"]["code"] in ALLOWED, r
            assert isinstance(r["error"]["message"], str) and r["error"]["message"], r
    return responses


# -- frame limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (NESTED, -32700, f"parse error: nesting deeper than {MAX_DEPTH}"),
        ('{"a":' * 65 + "1" + "}" * 65, -32700, "parse error: nesting deeper than 64"),
        ('"' + "[" * 100, -32700, "parse error: unterminated string"),
        ("[" * 100_000, -32700, "parse error: nesting deeper than 64"),
        ("{not json", -32700, "parse error"),
        (b"\xff\xfe[]", -32700, "parse error: request is not UTF-8"),
        ("[]", -32600, "invalid request: empty batch"),
        (json.dumps([{}] * (MAX_BATCH + 1)), -32600, "batch too large: 1001 > 1000 requests"),
        (" " * (MAX_REQUEST_BYTES + 1), -32600,
         f"request too large: {MAX_REQUEST_BYTES + 1} > {MAX_REQUEST_BYTES} bytes"),
    ],
)
def test_frames_are_bounded_before_parsing(raw: str | bytes, code: int, message: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(raw)
    assert info.value.code == code and info.value.message.startswith(message), info.value.message


def test_frames_within_the_limits_decode() -> None:
    assert decode_frame("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    # brackets and escaped quotes inside strings do not count
    assert decode_frame('{"a": "[[[[\\"{{{{' + "[" * 100 + '"}') == {"a": '[[[["{{{{' + "[" * 100}
    assert len(decode_frame(json.dumps([{"id": i} for i in range(MAX_BATCH)]))) == MAX_BATCH


def test_hostile_frames_answer_errors_on_the_l2_app(node: Node) -> None:
    before = snapshot(node)
    for raw, code in [(NESTED, -32700), (json.dumps([{}] * 50_000), -32600), ("[]", -32600),
                      ("null", -32600), ("[1, 2]", -32600), ('{"jsonrpc": "2.0"}', -32600)]:
        out = check_responses(frame(node, raw))
        assert out and {r["error"]["code"] for r in out} == {code}, (raw[:40], out)
    assert snapshot(node) == before
    assert call(node, "eth_blockNumber")["result"] == hex(node.chain.head.number)


# -- every method, hostile params ---------------------------------------------

HOSTILE = [None, True, False, -1, 0, 2**64, 2**128, 2**256, -(2**256), 1.5, "", "x" * 20_000,
           "0x", "0xzz", "0x 00", "0x" + "f" * 70, "-0x1", "false", "pending", {}, [], [1, [2]],
           {"order": {}}, {"a": None}, "0x" + "00" * 20, "0x" + "11" * 32, "ETH-USD", "9" * 5000]


def test_every_method_with_hostile_params_answers_a_named_error(node: Node) -> None:
    names = sorted(node.app.methods)
    assert {"net_version", "web3_clientVersion", "l2_sendOrder", "devnet_mine"} <= set(names)
    before = snapshot(node)
    for name in names:
        for arity in (1, 2, 3, 4):
            for pos in range(arity):
                for value in HOSTILE:
                    params = ["latest"] * arity
                    params[pos] = value
                    (r,) = check_responses(call(node, name, *params))
                    if "error" in r:
                        assert snapshot(node) == before, (name, params)
                    before = snapshot(node)
        for params in ({"bogus": 1}, {"tag": -1}, "notalist"):
            out = frame(node, {"jsonrpc": "2.0", "id": 1, "method": name, "params": params})
            check_responses(out)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("l2_getBatch", [-1], "index: out of range"),
        ("l2_getBatch", [2**64], "index: out of range"),
        ("l2_getWithdrawal", [-5], "withdrawalId: out of range"),
        ("l2_getBlockByNumber", [-1], "block: out of range"),
        ("l2_getBlockByNumber", [hex(2**256)], "block: out of range"),
        ("l2_getBlockByNumber", ["latest", "false"], "full: expected true or false"),
        ("l2_getOrderBook", [2**40], "market: out of range"),
        ("l2_getOrderBook", ["ETH-USD", 2**70], "depth: out of range"),
        ("l2_sendWithdraw", [{"account": "0x" + "00" * 20, "recipient": "0x" + "00" * 20,
                              "amount": str(2**128), "nonce": 0, "signature": "0x" + "00" * 65}],
         "amount: out of range"),
        ("l2_sendOraclePrice", [{"market": 1, "price": -1, "timestamp": 0,
                                 "signature": "0x" + "00" * 65}], "price: out of range"),
        ("devnet_increaseTime", [2**64], "seconds: out of range"),
        ("devnet_increaseTime", [2**40], "seconds: warping by"),
        ("devnet_increaseTime", [-1], "seconds: out of range"),
        ("devnet_mine", [10**6], "blocks: expected 1..1000"),
        ("devnet_setCensorDeposits", ["false"], "on: expected true or false"),
        ("devnet_setBatcher", [0], "on: expected true or false"),
    ],
)
def test_out_of_range_numbers_name_the_field(node: Node, method: str, params: list[Any],
                                             message: str) -> None:
    before = snapshot(node)
    err = call(node, method, *params)["error"]
    assert err["code"] == -32602 and err["message"].startswith(message), err
    assert snapshot(node) == before


def test_strict_booleans_and_the_devnet_switches(node: Node) -> None:
    assert call(node, "devnet_setCensorDeposits", True)["result"] is True
    assert node.config.censor_deposits is True
    assert call(node, "devnet_setCensorDeposits", "true")["error"]["code"] == -32602
    assert call(node, "devnet_setCensorDeposits", False)["result"] is False
    assert node.config.censor_deposits is False


# -- fuzz ------------------------------------------------------------------------

_leaf = (st.none() | st.booleans() | st.integers(-(2**300), 2**300)
         | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
         | st.sampled_from(["latest", "pending", "safe", "0x", "0x" + "00" * 20, "0x" + "ab" * 32,
                            "0x" + "11" * 65, "ETH-USD", "-1", str(2**64), hex(2**256)]))
_json = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=12)


@st.composite
def _request(draw: Any, methods: list[str]) -> Any:
    req: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0"]))}
    req["method"] = draw(st.sampled_from(methods) | st.text(max_size=12) | _leaf)
    if draw(st.booleans()):
        req["id"] = draw(st.integers(-(2**70), 2**70) | st.text(max_size=8) | st.none())
    if draw(st.integers(0, 4)):
        req["params"] = draw(st.lists(_json, max_size=4)
                             | st.dictionaries(st.text(max_size=8), _json, max_size=3) | _json)
    return req


@st.composite
def _frame(draw: Any, methods: list[str]) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return json.dumps(draw(_json))
    if kind == 1:
        return json.dumps(draw(st.lists(_request(methods) | _json, min_size=0, max_size=6)))
    if kind == 2:
        depth = draw(st.integers(0, 200))
        opener = draw(st.sampled_from(["[", '{"a":', '[{"b":']))
        return opener * depth + draw(st.sampled_from(["1", "", '"x'])) + draw(st.text(max_size=20))
    if kind == 3:
        return draw(st.text(max_size=60))
    return json.dumps(draw(_request(methods)))


_FUZZ_METHODS = [
    "eth_chainId", "eth_blockNumber", "net_version", "web3_clientVersion", "l2_sendOrder",
    "l2_cancelOrder", "l2_sendOraclePrice", "l2_sendFundingTick", "l2_sendWithdraw",
    "l2_getMarkets", "l2_getAccount",
    "l2_getOrderBook", "l2_getBlockByNumber", "l2_getBlockByHash", "l2_getTransactionReceipt",
    "l2_getBatch", "l2_getProof", "l2_getFill", "l2_getWithdrawal", "l2_getEscapeProof",
    "l2_rollupConfig", "devnet_increaseTime", "devnet_setCensorDeposits", "devnet_setBatcher",
]


@settings(max_examples=3000 if SLOW else 200,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_frames_never_break_the_node(node: Node, data: st.DataObject) -> None:
    # devnet_mine is left out only because success mines real L1 blocks (slow)
    raw = data.draw(_frame(_FUZZ_METHODS))
    before = snapshot(node)
    logging.disable(logging.CRITICAL)  # jsonrpcserver logs method exceptions
    try:
        text = node.app.handle(raw)
    finally:
        logging.disable(logging.NOTSET)
    responses = check_responses(json.loads(text) if text else None)
    if responses and all("error" in r for r in responses):
        assert snapshot(node) == before, raw[:200]
    assert call(node, "eth_blockNumber")["result"] == hex(node.chain.head.number)
    node.config.censor_deposits, node.config.batcher_enabled = False, True


# -- a large batch does not stall the block builder ---------------------------


def _signed_orders(node: Node, count: int) -> list[dict[str, Any]]:
    """``count`` resting buy orders (below the book, never crossing)."""
    out = []
    for i in range(count):
        who = MAKER if i % 2 else TAKER
        o = Order(who.address, 1, True, 100_000 - i % 500, 10, 10_000 + i, 2**40)
        out.append({"jsonrpc": "2.0", "id": i, "method": "l2_sendOrder",
                    "params": [order_params(o, who.sign_order(node.chain.domain, o)[1], "GTC")]})
    return out


def test_large_batches_do_not_stall_block_sealing(node: Node) -> None:
    frames = [json.dumps(_signed_orders(node, MAX_BATCH)[i::4]) for i in range(4)]
    big = json.dumps(_signed_orders(node, MAX_BATCH))  # the same orders again: replays
    books_before = sum(len(b) for b in node.sequencer.books.values())
    sealed: list[float] = []
    seal = node.sequencer.seal

    seal_seconds: list[float] = []

    def timed_seal() -> Any:
        sealed.append(time.perf_counter())
        try:
            return seal()
        finally:
            seal_seconds.append(time.perf_counter() - sealed[-1])

    async def main() -> list[tuple[int, str]]:
        answers: list[tuple[int, str]] = []

        async def send(raw: str) -> None:
            answers.append(await node.app.handle_async(raw))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._block_builder)
            await trio.sleep(0.2)
            start = len(sealed)
            async with trio.open_nursery() as clients:
                for raw in [*frames, big]:
                    clients.start_soon(send, raw)
            assert len(sealed) > start
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        return answers

    node.config.block_time = 0.05
    node.sequencer.seal = timed_seal  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        answers = trio.run(main)
        elapsed = time.perf_counter() - t0
    finally:
        del node.sequencer.seal
        node.config.block_time = 0.25
    assert all(status == 200 for status, _ in answers)
    results = [r for _, text in answers for r in json.loads(text)]
    assert len(results) == 2 * MAX_BATCH
    accepted = [r for r in results if "result" in r]
    assert len(accepted) == MAX_BATCH, results[:3]
    assert sum(len(b) for b in node.sequencer.books.values()) == books_before + MAX_BATCH
    gaps = [b - a for a, b in zip(sealed, sealed[1:], strict=False)]
    # A block every 50 ms. Dispatched in one piece, as before, a single batch
    # of 1,000 orders held the loop for 2.75 s on this (shared, 2-core)
    # machine and a 50,000-request batch for 45 s; the bound is generous
    # because other processes share the cores.
    print(f"5 x 1000-request batches in {elapsed:.2f} s, {len(sealed)} seals, "
          f"max gap {max(gaps) * 1000:.0f} ms, longest seal {max(seal_seconds) * 1000:.0f} ms")
    assert max(gaps) < 1.0, (max(gaps), elapsed)
    assert len(sealed) >= elapsed / 0.05 / 4  # sealing kept its pace


# -- time warps -----------------------------------------------------------------


def test_l1_time_warps_are_bounded() -> None:
    l1 = EmbeddedL1()
    for method, arg, message in [
        ("evm_increaseTime", 2**64, "seconds: warping by"),
        ("evm_increaseTime", -1, "seconds: cannot move time backwards"),
        ("anvil_increaseTime", hex(2**40), "seconds: warping by"),
        ("evm_setNextBlockTimestamp", MAX_TIMESTAMP + 1, "timestamp:"),
        ("evm_setNextBlockTimestamp", 2**64, "timestamp:"),
        ("evm_mine", 2**64, "timestamp:"),
        ("evm_increaseTime", "abc", "seconds: expected an integer"),
        ("evm_increaseTime", None, "seconds: missing"),
        ("evm_setAutomine", "false", "enabled: expected true or false"),
        ("anvil_mine", 10**9, "blocks: expected 1..1000"),
    ]:
        out = rpc_call(l1, method, [arg])
        assert out["error"]["code"] == -32602 and out["error"]["message"].startswith(message), out
    assert l1.time_offset == 0 and not l1.auto_mine
    assert "result" in rpc_call(l1, "evm_increaseTime", [3600])
    assert l1.mine() == 1 and l1.head()[1] >= time.time() + 3600 - 5


def test_every_l1_method_with_hostile_params_answers_an_error() -> None:
    """The L1 port: no hostile param escapes as an exception or -32603."""
    l1 = EmbeddedL1()
    names = [f"{ns}_{m}" for ns, ms in l1.provider.api_endpoints.items() for m in ms
             if f"{ns}_{m}" not in ("evm_mine", "anvil_mine")]
    hostile = [None, True, -1, 2**256, 1.5, "", "0xzz", {}, [1, [2]], {"from": 5, "to": []},
               {"from": l1.dev_accounts[1], "gas": -1}]
    logging.disable(logging.CRITICAL)
    try:
        for name in names:
            for value in hostile:
                for params in ([value], [value, "latest"], ["latest", value]):
                    out = handle_payload(l1, {"jsonrpc": "2.0", "id": 1, "method": name,
                                              "params": params})
                    if "error" in out:
                        assert out["error"]["code"] in {-32601, -32602, -32000, 3}, (name, out)
    finally:
        logging.disable(logging.NOTSET)
    assert l1.time_offset == 0


# -- a real devnet process --------------------------------------------------------


def _post(url: str, content: str | bytes) -> httpx.Response:
    return httpx.post(url, content=content, headers={"content-type": "application/json"},
                      timeout=30)


def _ws(url: str, text: str) -> Any:
    with ws_connect(url.replace("http", "ws"), max_size=None, open_timeout=10) as ws:
        ws.send(text)
        return json.loads(ws.recv(timeout=30))


def _rpc(method: str, *params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})


def _early_ws_frame(port: int) -> bytes:
    """Send a WebSocket upgrade and a masked text frame in one write (before
    the server's 101); returns what the server answers. Before the fix this
    ended hypercorn's serve() and with it the whole devnet."""
    import socket

    payload = _rpc("eth_blockNumber").encode()
    mask = os.urandom(4)
    frame = (bytes([0x81, 0x80 | len(payload)]) + mask
             + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    upgrade = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(upgrade + frame)
        return sock.recv(4096)


def test_devnet_process_survives_hostile_input(tmp_path: Path) -> None:
    dev = DevnetProcess(None, tmp_path / "devnet.log")
    dev.start()
    try:
        assert dev.proc is not None
        big_batch = json.dumps([json.loads(_rpc("eth_blockNumber"))] * 50_000)
        frames = [
            (NESTED, -32700),
            (big_batch, -32600),
            (" " * (MAX_REQUEST_BYTES + 10), -32600),
            ('{"a":' * 5000 + "}" * 5000, -32700),
        ]
        for url, warp in ((dev.url, "devnet_increaseTime"), (dev.l1_url, "evm_increaseTime")):
            for raw, code in frames:
                resp = _post(url, raw)
                assert resp.json()["error"]["code"] == code, (url, raw[:20], resp.text[:200])
                if len(raw) <= MAX_REQUEST_BYTES:
                    assert _ws(url, raw)["error"]["code"] == code
            for transport in (_post, _ws):
                out = transport(url, _rpc(warp, 2**64))
                out = out.json() if isinstance(out, httpx.Response) else out
                assert out["error"]["code"] == -32602, out
            with pytest.raises(Exception, match="1009|too big"):  # hypercorn's own limit
                _ws(url, " " * (MAX_REQUEST_BYTES + 10))
        out = _post(dev.url, _rpc("devnet_setCensorDeposits", "false")).json()
        assert out["error"]["code"] == -32602
        with L2Client(dev.url) as client:  # the client splits what the node would refuse
            assert len(client.batch([("eth_blockNumber", [])] * 2500)) == 2500
        for port in (dev.port, dev.l1_port):  # a WebSocket frame before the 101 answer
            assert _early_ws_frame(port).startswith(b"HTTP/1.1 400")
        # the process is alive, both ports answer, and L2 blocks and L1 time move on
        assert dev.proc.poll() is None, dev.log_path.read_text()
        for url in (dev.url, dev.l1_url):
            assert _post(url, _rpc("eth_blockNumber")).json()["result"].startswith("0x")
            assert _ws(url, _rpc("eth_chainId"))["result"].startswith("0x")
        status = _post(dev.url, _rpc("l2_syncStatus")).json()["result"]
        assert status["l1_time"] < MAX_TIMESTAMP
        assert _post(dev.url, _rpc("devnet_mine", 1)).json()["result"].startswith("0x")
        assert dev.proc.poll() is None
    finally:
        dev.stop()
