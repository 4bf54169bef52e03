"""The ccxt adapter (node/ccxt_derivnet.py) against a real devnet: every
REST method, order types and their errors, and the async watch_* loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ccxt = pytest.importorskip("ccxt", reason="ccxt is not installed (pip install derivnet[ccxt])")

from l1_stub.client import connect  # noqa: E402
from node.ccxt_derivnet import derivnet, derivnet_async, fee_units  # noqa: E402
from node.client import L2Client  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402
from node.wallet import deposit  # noqa: E402
from tests.devnet_process import DevnetProcess  # noqa: E402

ETH = "ETH/USD:USDC"
USDC = 10**6
MAKER, TAKER = dev_keys(10)[6], dev_keys(10)[7]


def wait_for(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll ``fetch`` until ``ok`` holds for its value; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {value!r}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    tmp: Path = tmp_path_factory.mktemp("ccxt")
    node = DevnetProcess(None, tmp / "devnet.log")
    node.start()
    try:
        with L2Client(node.url) as client, connect(node.l1_url) as w3:
            for key in (MAKER, TAKER):
                deposit(client, w3, Signer(key), 10_000 * USDC)
        yield node
    finally:
        node.stop()


def exchange(devnet: DevnetProcess, key: bytes) -> derivnet:
    return derivnet({"urls": {"api": {"rpc": devnet.url}}, "privateKey": "0x" + key.hex()})


def test_markets_and_units(devnet: DevnetProcess) -> None:
    ex = exchange(devnet, MAKER)
    try:
        markets = ex.load_markets()
        eth = markets[ETH]
        assert (eth["id"], eth["base"], eth["quote"], eth["settle"]) == ("ETH-USD", "ETH", "USD",
                                                                           "USDC")
        assert eth["swap"] and eth["linear"] and eth["type"] == "swap"
        assert eth["precision"] == {"price": 0.01, "amount": 0.0001}
        assert (eth["maker"], eth["taker"]) == (0.0002, 0.0005)
        assert "BTC/USD:USDC" in markets
        assert ex.price_units(eth, 1666.21) == 166621 and ex.size_units(eth, "0.5") == 5000
        with pytest.raises(ccxt.InvalidOrder, match="tick"):
            ex.price_units(eth, 1666.215)
        with pytest.raises(ccxt.InvalidOrder, match="step"):
            ex.size_units(eth, 0.00001)
    finally:
        ex.close()


def test_rest_methods(devnet: DevnetProcess) -> None:
    maker, taker = exchange(devnet, MAKER), exchange(devnet, TAKER)
    raw = L2Client(devnet.url)
    try:
        ask = maker.create_order(ETH, "limit", "sell", 0.5, 1670.00)
        bid = maker.create_order(ETH, "limit", "buy", 0.3, 1660.00, {"timeInForce": "GTC"})
        assert (ask["status"], ask["side"], ask["price"], ask["amount"]) == ("open", "sell",
                                                                          1670.0, 0.5)
        assert ask["filled"] == 0 and ask["remaining"] == 0.5 and ask["id"].startswith("0x")
        opens = maker.fetch_open_orders(ETH)
        assert {o["id"] for o in opens} == {ask["id"], bid["id"]}
        assert all(o["status"] == "open" and o["symbol"] == ETH for o in opens)
        assert taker.fetch_open_orders() == []
        assert raw.call("l2_getOpenOrders", maker.address(), "BTC-USD") == []
        by_rpc = raw.call("l2_getOpenOrders", maker.address(), "ETH-USD")
        assert [(o["orderHash"], o["order"]["price"], o["remaining"]) for o in by_rpc] == [
            (ask["id"], "167000", "5000"), (bid["id"], "166000", "3000")]

        book = maker.fetch_order_book(ETH)
        node_book = raw.call("l2_getOrderBook", "ETH-USD", 20)
        assert book["asks"] == [[1670.0, 0.5]] and book["bids"] == [[1660.0, 0.3]]
        assert node_book["asks"][0][:2] == ["167000", "5000"]

        # what the L2 API refuses, ccxt's way
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            taker.create_order(ETH, "limit", "buy", 0.1, 1670.00, {"postOnly": True})
        with pytest.raises(ccxt.NotSupported):
            taker.create_order(ETH, "limit", "sell", 0.1, 1700.00, {"reduceOnly": True})
        with pytest.raises(ccxt.InvalidOrder, match="tick"):
            taker.create_order(ETH, "limit", "buy", 0.1, 1650.001)
        with pytest.raises(ccxt.BadSymbol):
            taker.create_order("DOGE/USD:USDC", "limit", "buy", 1, 0.1)
        post = taker.create_order(ETH, "limit", "buy", 0.1, 1650.00, {"timeInForce": "PO"})
        assert post["postOnly"] and post["status"] == "open"
        taker.cancel_order(post["id"], ETH)

        # market: an IOC at the sweep price; then an IOC limit takes the rest
        market = taker.create_order(ETH, "market", "buy", 0.2)
        assert (market["status"], market["filled"], market["average"]) == ("closed", 0.2, 1670.0)
        assert market["trades"][0]["price"] == 1670.0
        ioc = taker.create_order(ETH, "limit", "buy", 0.5, 1670.00, {"timeInForce": "IOC"})
        assert (ioc["status"], ioc["filled"], ioc["remaining"]) == ("canceled", 0.3, 0.2)

        # sealed fills: trades, my trades (both sides), candles, ticker
        mine = wait_for(lambda: taker.fetch_my_trades(ETH), lambda t: len(t) == 2)
        assert [(t["side"], t["takerOrMaker"], t["amount"], t["price"]) for t in mine] == [
            ("buy", "taker", 0.2, 1670.0), ("buy", "taker", 0.3, 1670.0)]
        assert [t["order"] for t in mine] == [market["id"], ioc["id"]]
        made = maker.fetch_my_trades()
        assert [(t["side"], t["takerOrMaker"], t["order"]) for t in made] == [
            ("sell", "maker", ask["id"]), ("sell", "maker", ask["id"])]
        assert made[0]["fee"]["cost"] == fee_units(167000, 2000, 6, False, 200) / USDC
        assert mine[0]["fee"]["cost"] == fee_units(167000, 2000, 6, True, 500) / USDC
        trades = maker.fetch_trades(ETH)
        assert [t["id"] for t in trades[-2:]] == [t["id"] for t in mine]
        assert maker.fetch_trades(ETH, limit=1)[0]["id"] == mine[-1]["id"]
        assert maker.fetch_trades(ETH, since=trades[-1]["timestamp"] + 1000) == []
        ohlcv = maker.fetch_ohlcv(ETH, "1m")
        assert ohlcv[-1][1:] == [1670.0, 1670.0, 1670.0, 1670.0, 0.5]
        assert ohlcv[-1][0] % 60_000 == 0
        ticker = maker.fetch_ticker(ETH)
        assert (ticker["bid"], ticker["bidVolume"], ticker["ask"]) == (1660.0, 0.3, None)
        assert (ticker["last"], ticker["markPrice"]) == (1670.0, 1666.0)

        # account: balance and positions from l2_getAccount
        acc = raw.get_account(taker.address())
        balance = taker.fetch_balance()
        assert balance["USDC"]["total"] == int(acc["equity"]) / USDC
        assert balance["USDC"]["free"] == int(acc["freeCollateral"]) / USDC
        (long,) = taker.fetch_positions()
        assert (long["symbol"], long["side"], long["contracts"], long["entryPrice"]) == (
            ETH, "long", 0.5, 1670.0)
        (short,) = maker.fetch_positions([ETH])
        assert (short["side"], short["contracts"]) == ("short", 0.5)
        assert maker.fetch_positions(["BTC/USD:USDC"]) == []

        # cancel
        cancelled = maker.cancel_order(bid["id"], ETH)
        assert (cancelled["status"], cancelled["remaining"]) == ("canceled", 0.3)
        assert maker.fetch_open_orders() == []
        with pytest.raises(ccxt.OrderNotFound):
            maker.cancel_order(bid["id"])
    finally:
        maker.close()
        taker.close()
        raw.close()


def test_watch_loops(devnet: DevnetProcess) -> None:
    async def run() -> None:
        config = {"urls": {"api": {"rpc": devnet.url}}}
        maker = derivnet_async({**config, "privateKey": "0x" + MAKER.hex()})
        taker = derivnet_async({**config, "privateKey": "0x" + TAKER.hex()})
        try:
            await maker.load_markets()
            first = await maker.watch_order_book(ETH, 5)
            assert [1655.5, 0.7] not in first["asks"]
            watching_trades = asyncio.create_task(maker.watch_trades(ETH))
            watching_mine = asyncio.create_task(taker.watch_my_trades(ETH))
            for ex, channel in ((maker, "trades"), (taker, "account")):
                await until(lambda: any(k[0] == channel and sub.id  # noqa: B023
                                        for k, sub in ex.subs.items()))  # noqa: B023
            order = await maker.create_order(ETH, "limit", "sell", 0.7, 1655.50)
            for _ in range(100):  # the loop sees the order in a later update
                book = await asyncio.wait_for(maker.watch_order_book(ETH, 5), 10)
                if [1655.5, 0.7] in book["asks"]:
                    break
            else:
                raise AssertionError("watch_order_book never showed the new order")
            assert book["asks"][0] == [1655.5, 0.7]
            assert book["nonce"] > first["nonce"]
            taken = await taker.create_order(ETH, "market", "buy", 0.7)
            assert taken["filled"] == 0.7
            trades = await asyncio.wait_for(watching_trades, 20)
            assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(1655.5, 0.7, "buy")]
            assert trades[0]["order"] == taken["id"]
            mine = await asyncio.wait_for(watching_mine, 20)
            assert [(t["side"], t["takerOrMaker"], t["order"]) for t in mine] == [
                ("buy", "taker", taken["id"])]
            for _ in range(100):
                book = await asyncio.wait_for(maker.watch_order_book(ETH, 5), 10)
                if [1655.5, 0.7] not in book["asks"]:
                    break
            assert order["id"] not in {o["id"] for o in await maker.fetch_open_orders(ETH)}
            assert book["asks"] == node_asks(devnet)
        finally:
            await maker.close()
            await taker.close()

    asyncio.run(run())


async def until(ok: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait (polling the event loop) until ``ok()`` holds."""
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def node_asks(devnet: DevnetProcess) -> list[list[float]]:
    """The node's asks now (l2_getOrderBook) in ccxt's form."""
    with L2Client(devnet.url) as client:
        asks = client.call("l2_getOrderBook", "ETH-USD", 5)["asks"]
    return [[int(p) / 100, int(s) / 10_000] for p, s, _ in asks]
