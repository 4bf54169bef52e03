"""Streams over WebSocket (node/streams.py) against a real devnet process.

One devnet (fast blocks, a 2 s challenge window) replays 200 trades of the
shared tape while a web3.py ``eth_subscribe("newHeads")`` client and a plain
``websockets`` client (orderbook, trades, blocks, account, candles, markets)
record every notification; the tests then check what they received.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from node.client import L2Client, RpcError, order_params, quantity
from node.replay import ReplayOptions, run_replay
from node.signing import Signer, dev_keys
from node.transactions import Order
from tests.devnet_process import TAPE, DevnetProcess

MARKET = "ETH-USD"
LIMIT = 200


def _rpc(url: str, method: str, *params: Any) -> Any:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                  "params": list(params)}, timeout=30).json()
    if "error" in reply:
        raise RpcError(reply["error"]["code"], reply["error"]["message"])
    return reply["result"]


class Recorder:
    """Background asyncio thread: a web3 newHeads subscriber and a websockets
    client on several l2_subscribe channels; messages kept with receipt time."""

    def __init__(self, ws_url: str, account: str) -> None:
        self.ws_url = ws_url
        self.account = account
        self.heads: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []  # l2_subscription params.result
        self.channel_of: dict[str, str] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(30), self.errors

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by the tests
            self.errors.append(exc)
            self.ready.set()

    async def _main(self) -> None:
        await asyncio.gather(self._web3(), self._plain())

    async def _web3(self) -> None:
        from web3 import AsyncWeb3, WebSocketProvider

        async with AsyncWeb3(WebSocketProvider(self.ws_url)) as w3:
            await w3.eth.subscribe("newHeads")
            self._web3_ready = True
            self._maybe_ready()
            stream = w3.socket.process_subscriptions()
            while not self.stop.is_set():
                try:
                    msg = await asyncio.wait_for(stream.__anext__(), 0.2)
                except TimeoutError:
                    continue
                self.heads.append(dict(msg["result"]))

    _web3_ready = False
    _plain_ready = False

    def _maybe_ready(self) -> None:
        if self._web3_ready and self._plain_ready:
            self.ready.set()

    async def _plain(self) -> None:
        import websockets

        subs = [("orderbook", {"market": MARKET, "depth": 1000}), ("trades", {"market": MARKET}),
                ("blocks", {}), ("account", {"address": self.account}),
                ("candles", {"market": MARKET, "resolution": "1m"}), ("markets", {})]
        async with websockets.connect(self.ws_url, max_size=None) as ws:
            for i, (channel, params) in enumerate(subs):
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "l2_subscribe",
                                          "params": [channel, params]}))
            answered = 0
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                msg = json.loads(raw)
                if "id" in msg:
                    self.channel_of[msg["result"]] = subs[msg["id"]][0]
                    answered += 1
                    if answered == len(subs):
                        self._plain_ready = True
                        self._maybe_ready()
                    continue
                assert msg["method"] == "l2_subscription"
                result = msg["params"]["result"]
                result["_received"] = time.time()
                self.messages.append(result)

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["channel"] == channel]

    def wait(self, predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, "stream did not deliver in time"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("streams")
    devnet = DevnetProcess(None, tmp / "devnet.log", **{"--block-time": "0.1",
                                                        "--batch-interval": "0.5",
                                                        "--challenge-window": "2"})
    saved = os.environ.get("DERIVNET_STREAM_BUFFER")
    os.environ["DERIVNET_STREAM_BUFFER"] = "2000"  # drop a stalled consumer sooner
    try:
        devnet.start()
    finally:
        if saved is None:
            del os.environ["DERIVNET_STREAM_BUFFER"]
        else:
            os.environ["DERIVNET_STREAM_BUFFER"] = saved
    taker = Signer(dev_keys(10)[4])  # the replay's first taker
    recorder = Recorder(devnet.url.replace("http://", "ws://"), "0x" + taker.address.hex())
    try:
        recorder.start()
        summary = run_replay(ReplayOptions(tape=str(TAPE), rpc=devnet.url, limit=LIMIT,
                                           progress=False))
        last = summary["lastBlock"]
        # finality: the last block reaches finalized (2 s window)
        deadline = time.monotonic() + 90
        while _rpc(devnet.url, "l2_syncStatus")["finalized_l2"]["number"] < last:
            assert time.monotonic() < deadline, "replay blocks were not finalized in time"
            time.sleep(0.2)
        recorder.wait(lambda: any(int(h["number"], 16) >= last for h in recorder.heads))
        recorder.wait(lambda: any(m["contents"].get("event") == "finality"
                                  and int(m["contents"]["heads"]["finalized"], 16) >= last
                                  for m in recorder.of("blocks")))
        yield {"devnet": devnet, "recorder": recorder, "summary": summary, "last": last,
               "taker": taker}
    finally:
        recorder.stop.set()
        recorder.thread.join(10)
        devnet.stop()


def _block_number(url: str) -> int:
    return int(_rpc(url, "eth_blockNumber"), 16)


def _first_replay_block(r: dict[str, Any]) -> int:
    return int(r["summary"]["firstBlock"])


# -- protocol errors ------------------------------------------------------------
def test_subscribe_needs_a_websocket(replayed: dict[str, Any]) -> None:
    url = replayed["devnet"].url
    for method, params in (("l2_subscribe", ["blocks", {}]), ("eth_subscribe", ["newHeads"]),
                           ("l2_unsubscribe", ["0x00"])):
        with pytest.raises(RpcError) as info:
            _rpc(url, method, *params)
        assert info.value.code == -32601
        assert info.value.message.startswith("NotificationsUnsupported")


def test_bad_subscriptions_are_named_errors(replayed: dict[str, Any]) -> None:
    ws_url = replayed["devnet"].url.replace("http://", "ws://")
    cases = [
        (["nope", {}], -32602, "UnknownChannel"),
        (["orderbook", {"market": "NOPE-USD"}], -32003, "UnknownMarket"),
        (["orderbook", {"market": MARKET, "depth": 0}], -32602, "depth"),
        (["candles", {"market": MARKET, "resolution": "2m"}], -32602, "resolution"),
        (["account", {"address": "0x12"}], -32602, "address"),
        (["orderbook", "x"], -32602, "params"),
    ]
    with connect(ws_url) as ws:
        for i, (params, code, start) in enumerate(cases):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "l2_subscribe",
                                "params": params}))
            reply = json.loads(ws.recv(timeout=10))
            assert reply["error"]["code"] == code, reply
            assert reply["error"]["message"].startswith(start), reply
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "eth_subscribe",
                            "params": ["logs"]}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32602
        # subscribe, then unsubscribe: true once, then false
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 100, "method": "l2_subscribe",
                            "params": ["markets", {}]}))
        sub = json.loads(ws.recv(timeout=10))["result"]
        snapshot = json.loads(ws.recv(timeout=10))["params"]["result"]
        assert (snapshot["type"], snapshot["seq"], snapshot["subscription"]) == ("snapshot", "0x0",
                                                                                 sub)
        for expect in (True, False):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 101, "method": "l2_unsubscribe",
                                "params": [sub]}))
            assert json.loads(ws.recv(timeout=10))["result"] is expect


# -- the replay, as the streams saw it ------------------------------------------------
def test_new_heads_every_block(replayed: dict[str, Any]) -> None:
    numbers = [int(h["number"], 16) for h in replayed["recorder"].heads]
    first = _first_replay_block(replayed)
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    # the first replay block may also hold the funding deposits (first == 1)
    assert numbers[0] <= first and numbers[-1] >= replayed["last"]
    head = _rpc(replayed["devnet"].url, "l2_getBlockByNumber", hex(first), False)
    seen = next(h for h in replayed["recorder"].heads if int(h["number"], 16) == first)
    assert (seen["hash"], seen["stateRoot"]) == (head["hash"], head["stateRoot"])


def test_envelopes_have_consecutive_seq(replayed: dict[str, Any]) -> None:
    rec = replayed["recorder"]
    by_sub: dict[str, list[dict[str, Any]]] = {}
    for m in rec.messages:
        by_sub.setdefault(m["subscription"], []).append(m)
    assert set(by_sub) == set(rec.channel_of)
    for sub, msgs in by_sub.items():
        assert [m["seq"] for m in msgs] == [hex(n) for n in range(len(msgs))]
        assert msgs[0]["type"] == "snapshot"
        assert all(m["type"] == "update" for m in msgs[1:])
        assert all(m["channel"] == rec.channel_of[sub] for m in msgs)


def test_orderbook_rebuilds_from_snapshot_and_deltas(replayed: dict[str, Any]) -> None:
    msgs = replayed["recorder"].of("orderbook")
    blocks = {int(m["block"], 16) for m in msgs[1:]}
    assert set(range(_first_replay_block(replayed), replayed["last"] + 1)) <= blocks
    book = apply_book(msgs)
    live = _rpc(replayed["devnet"].url, "l2_getOrderBook", MARKET, 1000)
    assert book == (live["bids"], live["asks"])


def apply_book(msgs: list[dict[str, Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """A local book from an orderbook snapshot and its deltas (Binance discipline)."""
    snap = msgs[0]["contents"]
    sides: list[dict[str, list[Any]]] = [{p: [p, s, c] for p, s, c in snap["bids"]},
                                         {p: [p, s, c] for p, s, c in snap["asks"]}]
    for m in msgs[1:]:
        for side, levels in zip(sides, (m["contents"]["bids"], m["contents"]["asks"]),
                                strict=True):
            for p, s, c in levels:
                if s == "0":
                    side.pop(p, None)
                else:
                    side[p] = [p, s, c]
    bids = sorted(sides[0].values(), key=lambda lv: -int(lv[0]))
    asks = sorted(sides[1].values(), key=lambda lv: int(lv[0]))
    return bids, asks


def test_trades_and_candles_cover_every_fill(replayed: dict[str, Any]) -> None:
    rec = replayed["recorder"]
    trades = [t for m in rec.of("trades")[1:] for t in m["contents"]["trades"]]
    assert len(trades) == replayed["summary"]["fills"] >= LIMIT
    t = trades[0]
    assert set(t) >= {"txHash", "type", "price", "size", "takerSide", "makerOrderHash",
                      "takerOrderHash", "blockNumber"}
    fill = _rpc(replayed["devnet"].url, "l2_getFill", t["txHash"])[0]
    assert (fill["price"], fill["size"], fill["takerSide"]) == (t["price"], t["size"],
                                                                 t["takerSide"])
    candles: dict[str, dict[str, Any]] = {}
    for m in rec.of("candles")[1:]:
        for c in m["contents"]["candles"]:
            candles[c["start"]] = c
    assert sum(int(c["trades"], 16) for c in candles.values()) == len(trades)
    assert sum(int(c["volume"]) for c in candles.values()) == sum(int(t["size"]) for t in trades)
    markets = rec.of("markets")
    assert any(u["contents"]["markets"] and "oraclePrice" in u["contents"]["markets"][0]
               for u in markets[1:])


def test_account_fill_moves_unsafe_safe_finalized(replayed: dict[str, Any]) -> None:
    rec = replayed["recorder"]
    msgs = rec.of("account")
    fills = [(m, f) for m in msgs if m["contents"]["event"] == "block"
             for f in m["contents"]["fills"]]
    assert fills, "the taker's fills reached the account channel"
    first_msg, fill = fills[0]
    assert first_msg["contents"]["status"] == "unsafe"
    assert rec.account in (fill["maker"]["account"], fill["taker"]["account"])
    levels = [m["contents"]["status"] for m in msgs if m["contents"]["event"] == "finality"
              and fill["txHash"] in m["contents"]["transactions"]]
    assert levels == ["safe", "finalized"]
    last_account = [m for m in msgs if m["contents"]["event"] == "block"][-1]["contents"]
    live = _rpc(replayed["devnet"].url, "l2_getAccount", rec.account)
    assert last_account["account"]["collateral"] == live["collateral"]


# -- a deterministic book: compare with l2_getOrderBook at every block ------------------
def test_book_equals_rpc_at_every_block(replayed: dict[str, Any]) -> None:
    url = replayed["devnet"].url
    client = L2Client(url)
    keys = dev_keys(10)
    maker, taker = Signer(keys[3]), Signer(keys[5])
    mk = next(m for m in client.call("l2_getMarkets") if m["symbol"] == MARKET)
    tick, step = int(mk["tickSize"]), int(mk["stepSize"])
    mid = int(mk["oraclePrice"]) // tick * tick
    import random

    rnd = random.Random(7)
    resting: list[bytes] = []
    with connect(url.replace("http://", "ws://"), max_size=None) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "l2_subscribe",
                            "params": ["orderbook", {"market": MARKET, "depth": 5}]}))
        json.loads(ws.recv(timeout=10))
        msgs = [json.loads(ws.recv(timeout=10))["params"]["result"]]
        for round_ in range(8):
            calls: list[tuple[str, list[Any]]] = []
            hashes = []
            for i in range(6):
                is_buy = i > 0 and rnd.random() < 0.5  # at least one ask to take
                off = rnd.randint(1, 12) * tick
                price = mid - off if is_buy else mid + off
                order, digest, sig = client.make_order(maker, MARKET, is_buy, price,
                                                       step * rnd.randint(1, 5))
                calls.append(("l2_sendOrder", [order_params(order, sig)]))
                hashes.append(digest)
            for h in rnd.sample(resting, min(2, len(resting))):
                resting.remove(h)
                calls.append(("l2_cancelOrder", [{"orderHash": "0x" + h.hex(), "signature":
                                                  "0x" + maker.sign_cancel(client.domain, h).hex()}]))
            # a taker crossing the best ask (fills make the block)
            order, _, sig = client.make_order(taker, MARKET, True, mid + 12 * tick, step)
            calls.append(("l2_sendOrder", [order_params(order, sig, "IOC")]))
            results = client.batch(calls)  # one batch: no block boundary inside it
            for call, r in zip(calls, results, strict=True):  # a cancel may find it filled
                assert not isinstance(r, RpcError) or (call[0] == "l2_cancelOrder"
                                                       and "UnknownOrder" in r.message), r
            resting += hashes
            fill_tx = results[-1]["fills"][0]["txHash"]
            deadline = time.monotonic() + 30
            while (receipt := client.call("l2_getTransactionReceipt", fill_tx)) is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            block = int(receipt["blockNumber"], 16)
            while int(msgs[-1]["block"], 16) < block or msgs[-1]["type"] == "snapshot":
                msgs.append(json.loads(ws.recv(timeout=30))["params"]["result"])
            live = client.call("l2_getOrderBook", MARKET, 5)
            assert apply_book(msgs) == (live["bids"], live["asks"]), f"round {round_}"
    client.close()


# -- a consumer that pauses, then reads on ------------------------------------------
def test_paused_consumer_gets_every_frame_in_order(replayed: dict[str, Any]) -> None:
    """A compressing websockets client with a 4 KiB receive buffer stops
    reading while ~1 MB of answers pile up: short frames written straight
    to the socket (half-written ones finished later, the rest queued) and
    long ones compressed by hypercorn. Read on, every answer arrives whole,
    once, in order."""
    from node.streams import DIRECT_MAX

    devnet = replayed["devnet"]
    sock = socket.create_connection(("127.0.0.1", devnet.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    markets = _rpc(devnet.url, "l2_getMarkets")
    batch = 1 + DIRECT_MAX // len(json.dumps(markets))  # an answer past DIRECT_MAX
    requests = []
    for i in range(400):
        call = {"jsonrpc": "2.0", "id": i, "method": "l2_getMarkets", "params": []}
        requests.append([dict(call, id=f"{i}.{j}") for j in range(batch)] if i % 25 == 0
                        else call)
    with connect(devnet.url.replace("http://", "ws://"), sock=sock, max_queue=1,
                 max_size=None) as ws:
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        for r in requests:
            ws.send(json.dumps(r))
        time.sleep(1.0)  # the client reads nothing meanwhile (its queue holds one message)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # then reads fast
        answers = [json.loads(ws.recv(timeout=30)) for _ in requests]
    def stable(result: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        # funding ticks may land meanwhile (fundingTime, nextFundingTime, ... move):
        # compare each market's identity and the fields every answer has
        return [(m["id"], m["symbol"], sorted(m)) for m in result]

    for i, answer in enumerate(answers):
        if i % 25 == 0:
            assert isinstance(answer, list), str(answer)[:300]
            assert [a["id"] for a in answer] == [f"{i}.{j}" for j in range(batch)]
            assert len(json.dumps(answer)) > DIRECT_MAX
            assert all(stable(a["result"]) == stable(markets) for a in answer)
        else:
            assert answer["id"] == i
            assert stable(answer["result"]) == stable(markets)


# -- a consumer that stops reading -----------------------------------------------
def _raw_ws(port: int) -> socket.socket:
    """A WebSocket client socket that will never read (tiny receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    return s


def _frame(text: str) -> bytes:
    """A masked client text frame (mask key 0: payload unchanged)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + data


def test_slow_consumer_is_dropped_and_blocks_keep_coming(replayed: dict[str, Any]) -> None:
    devnet = replayed["devnet"]
    keys = dev_keys(10)
    maker, taker = Signer(keys[3]), Signer(keys[6])
    sealed: list[int] = []  # sealedAt (ms) of blocks seen by a healthy subscriber
    done = threading.Event()
    trader_errors: list[BaseException] = []

    def trade_and_watch() -> None:
        """A trade pair every 50 ms (so every tick seals a block), and a healthy
        blocks subscriber that reads everything."""
        try:
            client = L2Client(devnet.url)
            mk = next(m for m in client.call("l2_getMarkets") if m["symbol"] == MARKET)
            tick, step = int(mk["tickSize"]), int(mk["stepSize"])
            price = int(mk["oraclePrice"]) // tick * tick
            with connect(devnet.url.replace("http://", "ws://")) as healthy:
                healthy.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "l2_subscribe",
                                         "params": ["blocks", {}]}))
                while not done.is_set():
                    market = quantity(mk["id"])
                    m = Order(maker.address, market, False, price, step, time.time_ns(), 2**40)
                    t = Order(taker.address, market, True, price, step, time.time_ns() + 1,
                              2**40)
                    client.batch([
                        ("l2_sendOrder", [order_params(m, maker.sign_order(client.domain, m)[1])]),
                        ("l2_sendOrder", [order_params(t, taker.sign_order(client.domain, t)[1],
                                                       "IOC")])])
                    deadline = time.monotonic() + 0.05
                    while (left := deadline - time.monotonic()) > 0:
                        try:
                            msg = json.loads(healthy.recv(timeout=left))
                        except TimeoutError:
                            break
                        c = msg.get("params", {}).get("result", {}).get("contents", {})
                        if c.get("event") == "block":
                            sealed.append(int(c["block"]["sealedAt"], 16))
            client.close()
        except BaseException as exc:
            trader_errors.append(exc)

    trader = threading.Thread(target=trade_and_watch, daemon=True)
    trader.start()
    slow = _raw_ws(devnet.port)
    slow.settimeout(60)
    try:
        # the slow client subscribes, then floods requests and never reads
        slow.sendall(_frame(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "l2_subscribe",
                                        "params": ["blocks", {}]})))
        request = _frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "l2_getMarkets",
                                     "params": []}))
        started = time.monotonic()
        sent = 0
        first_sealed = len(sealed)
        while True:
            assert time.monotonic() - started < 120, "the slow consumer was never dropped"
            try:
                slow.sendall(request * 500)
                sent += 500
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped: the server closed the connection
            except TimeoutError:
                raise AssertionError("the server stopped reading the slow consumer") from None
        during = sealed[first_sealed:]
    finally:
        done.set()
        trader.join(30)
        slow.close()
    assert not trader_errors, trader_errors
    assert sent >= 1000
    assert len(during) >= 3, "blocks kept being sealed while the slow consumer was stuck"
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert max(gaps) < 5_000, gaps  # ms; block time is 100 ms: the sealer never stalls


# -- the sender without hypercorn --------------------------------------------------
def test_frames_go_through_asgi_send_without_hypercorn() -> None:
    """An ASGI ``send`` that is not hypercorn's gets no direct writer: the
    connection's frames then leave through ``send``, in order."""
    import trio

    from node.socket_writer import SocketWriter
    from node.streams import Connection

    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message["text"])

    async def main() -> None:
        conn = Connection(None, 10)
        conn.writer = SocketWriter.attach(send)
        assert conn.writer is None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain, send)
            for i in range(5):
                assert conn.push(f"frame {i}")
            await trio.testing.wait_all_tasks_blocked()
            assert conn.queued == 0
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert sent == [f"frame {i}" for i in range(5)]
