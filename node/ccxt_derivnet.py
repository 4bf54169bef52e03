"""ccxt exchange classes for a derivnet node (``pip install derivnet[ccxt]``).

    from node.ccxt_derivnet import derivnet, derivnet_async

    ex = derivnet({"urls": {"api": {"rpc": "http://127.0.0.1:8545"}},
                   "privateKey": "0x..."})
    ex.load_markets()                        # "ETH/USD:USDC", "BTC/USD:USDC"
    ex.create_order("ETH/USD:USDC", "limit", "buy", 0.5, 1666.21)

Markets are linear perpetual swaps settled in USDC: the node's ``ETH-USD``
is ccxt's ``ETH/USD:USDC`` (id ``ETH-USD``, ccxt's dYdX naming). Prices,
amounts, costs and balances are floats in human units (price: USDC per base
asset; amount: base asset; money: USDC), converted with the market's
``priceDecimals`` / ``sizeDecimals`` (docs/protocol.md, "Money"); a price or
amount off the market's tick or step raises ``ccxt.InvalidOrder`` (nothing
rounds). ``precisionMode`` is ``TICK_SIZE``.

Orders are built and signed by ``node.client.L2Client.make_order`` with the
key in ``privateKey`` (or ``secret``), EIP-712 exactly as the Python client.
``walletAddress`` alone is enough for the account reads.

The node's API and what each method uses:

- ``fetch_markets``: ``l2_getMarkets``; ``fetch_order_book``: ``l2_getOrderBook``.
- ``fetch_trades`` / ``fetch_my_trades`` / ``fetch_ohlcv`` / ``fetch_ticker``'s
  ``last``, ``high``, ``low``, ``baseVolume``: the node keeps no trade history
  index, so they read the fills of recent blocks (``l2_getBlockByNumber`` in
  JSON-RPC batches), newest first, at most ``options["scanBlocks"]`` blocks
  (2,000; per call ``params={"blocks": N}``). Candles are built from those
  fills like the ``candles`` stream (OHLC of fill prices, volume in base units).
- ``fetch_balance`` / ``fetch_positions``: ``l2_getAccount`` (USDC: total =
  equity, used = initial margin, free = free collateral).
- ``create_order``: ``l2_sendOrder``. ``limit`` is GTC unless
  ``params["timeInForce"]`` is ``IOC`` or ``PO`` (or ``postOnly=True``);
  ``market`` is an IOC at the price that sweeps the book for the amount
  (or at ``price``, if given, as the worst price). Reduce-only is not in the
  L2 API: ``reduceOnly=True`` raises ``ccxt.NotSupported``.
- ``cancel_order``: ``l2_cancelOrder``; ``fetch_open_orders``: ``l2_getOpenOrders``.
- ``derivnet_async``: the same methods as coroutines (each runs the
  synchronous method in a worker thread) plus ``watch_order_book``,
  ``watch_trades`` and ``watch_my_trades`` over one WebSocket to the same
  port (``l2_subscribe`` channels ``orderbook``, ``trades``, ``account``),
  called in a loop as with ccxt pro: each call returns after the next
  update. A gap in a subscription's ``seq`` raises ``ccxt.InvalidNonce``
  and the next call subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import httpx
from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeError,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    NetworkError,
    NotSupported,
    OrderImmediatelyFillable,
    OrderNotFound,
)
from websockets.exceptions import ConnectionClosed

from node.client import L2Client, RpcError, order_params, quantity
from node.signing import Signer

DEFAULT_URL = "http://127.0.0.1:8545"
_L2_LOCK = threading.Lock()
SETTLE = "USDC"
USDC = 10**6  # base units per USDC
SCAN_BLOCKS = 2_000
"""Blocks read back from the head for trades, candles and my trades."""
SCAN_BATCH = 100
"""Blocks per JSON-RPC batch while scanning."""
ORDER_STATUS = {"resting": "open", "partiallyFilled": "open", "filled": "closed",
                "cancelled": "canceled"}
"""l2_sendOrder status -> ccxt order status (an IOC remainder is cancelled)."""
TIME_IN_FORCE = {"GTC": "GTC", "IOC": "IOC", "PO": "POST_ONLY", "POST_ONLY": "POST_ONLY"}
ERRORS: dict[str, type[Exception]] = {
    "InsufficientMargin": InsufficientFunds,
    "InsufficientFreeCollateral": InsufficientFunds,
    "UnknownOrder": OrderNotFound,
    "OrderCancelled": OrderNotFound,
    "UnknownMarket": BadSymbol,
    "InvalidOrderSignature": AuthenticationError,
    "InvalidCancelSignature": AuthenticationError,
}
"""Rejection rule (docs/protocol.md) -> ccxt error; other rejections: InvalidOrder."""


def describe_derivnet(streams: bool = False) -> dict[str, Any]:
    """The ccxt ``describe()`` dict of both classes (``streams``: the async
    one, which has the watch_* methods)."""
    return {
        "id": "derivnet",
        "name": "derivnet",
        "countries": [],
        "version": "v1",
        "rateLimit": 0,
        "enableRateLimit": False,
        "pro": streams,
        "dex": True,
        "precisionMode": ccxt.TICK_SIZE,
        "urls": {"api": {"rpc": DEFAULT_URL}, "www": None, "doc": []},
        "requiredCredentials": {"apiKey": False, "secret": False, "privateKey": True,
                                "walletAddress": False},
        "timeframes": {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h",
                       "1d": "1d"},
        "options": {"scanBlocks": SCAN_BLOCKS, "depth": 20},
        "has": {
            "CORS": None, "spot": False, "margin": False, "swap": True, "future": False,
            "option": False, "fetchMarkets": True, "fetchCurrencies": False,
            "fetchOrderBook": True, "fetchTicker": True, "fetchTrades": True,
            "fetchOHLCV": True, "fetchBalance": True, "fetchPositions": True,
            "createOrder": True, "createMarketOrder": True, "createPostOnlyOrder": True,
            "createReduceOnlyOrder": False, "cancelOrder": True, "fetchOpenOrders": True,
            "fetchMyTrades": True, "fetchOrder": False, "fetchOrders": False,
            "fetchClosedOrders": False, "watchOrderBook": streams, "watchTrades": streams,
            "watchMyTrades": streams,
        },
    }


def _decimal(value: Any, name: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except ArithmeticError:
        raise InvalidOrder(f"{name}: not a number: {value!r}") from None
    if not d.is_finite() or d <= 0:
        raise InvalidOrder(f"{name}: expected a positive number, got {value!r}")
    return d


class derivnet(ccxt.Exchange):  # noqa: N801 - ccxt names exchange classes by their id
    """Synchronous ccxt exchange for a derivnet node (JSON-RPC over HTTP).

    Raises ccxt errors: NetworkError (node unreachable), BadRequest (-32602),
    InsufficientFunds, InvalidOrder, OrderImmediatelyFillable (a post-only
    order that would cross), OrderNotFound, BadSymbol, AuthenticationError
    (no key, or a signature the node refused), NotSupported."""

    def describe(self) -> Any:
        return self.deep_extend(super().describe(), describe_derivnet())

    # -- transport ---------------------------------------------------------
    @property
    def l2(self) -> L2Client:
        """The node's JSON-RPC client (opened on first use)."""
        with _L2_LOCK:  # derivnet_async calls in from worker threads
            client = self.__dict__.get("_l2")
            if client is None:
                client = self.__dict__["_l2"] = L2Client(self.urls["api"]["rpc"],
                                                         timeout=self.timeout / 1000)
        return client

    def close(self, clean_instance_data: bool = False) -> None:
        """Close the node connection (and ccxt's own HTTP session)."""
        with _L2_LOCK:
            client = self.__dict__.pop("_l2", None)
        if client is not None:
            client.close()
        super().close(clean_instance_data)

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call, node errors mapped to ccxt errors."""
        try:
            return self.l2.call(method, *params)
        except RpcError as exc:
            raise self.map_error(exc) from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"{self.id} {method}: {exc!r}") from None

    def rpc_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        try:
            out = self.l2.batch(calls)
        except RpcError as exc:
            raise self.map_error(exc) from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"{self.id} batch: {exc!r}") from None
        for r in out:
            if isinstance(r, RpcError):
                raise self.map_error(r)
        return out

    def map_error(self, exc: RpcError) -> Exception:
        text = f"{self.id} {exc.message}"
        if exc.code == -32602:
            return BadRequest(text)
        if exc.code != -32003:
            return ExchangeError(text)
        rule = (exc.data or {}).get("rule") if isinstance(exc.data, dict) else None
        rule = rule or exc.message.split(":", 1)[0]
        if "WouldCross" in exc.message:
            return OrderImmediatelyFillable(text)
        return ERRORS.get(rule, InvalidOrder)(text)

    # -- credentials -------------------------------------------------------
    @property
    def signer(self) -> Signer:
        key = self.privateKey or self.secret
        if not key:
            raise AuthenticationError(f"{self.id} needs privateKey (a 32-byte hex key)")
        try:
            return Signer(bytes.fromhex(key.removeprefix("0x")))
        except ValueError as exc:
            raise AuthenticationError(f"{self.id} privateKey: {exc}") from None

    def address(self) -> str:
        """The account: ``walletAddress`` if set, else the key's (0x, lower case)."""
        if self.walletAddress:
            return str(self.walletAddress).lower()
        return "0x" + self.signer.address.hex()

    # -- units -------------------------------------------------------------
    @staticmethod
    def scales(market: dict[str, Any]) -> tuple[int, int, int, int]:
        """(price_decimals, size_decimals, tick_size, step_size) of a market."""
        info = market["info"]
        return (quantity(info["priceDecimals"]), quantity(info["sizeDecimals"]),
                int(info["tickSize"]), int(info["stepSize"]))

    def price_units(self, market: dict[str, Any], price: Any) -> int:
        """A human price as price units; InvalidOrder if off the tick."""
        pd, _, tick, _ = self.scales(market)
        units = _decimal(price, "price") * 10**pd
        if units != units.to_integral_value() or int(units) % tick:
            raise InvalidOrder(f"{self.id} price {price} is not a multiple of the tick "
                               f"{self.human(tick, pd)} of {market['symbol']}")
        return int(units)

    def size_units(self, market: dict[str, Any], amount: Any) -> int:
        """A human amount (base asset) as size units; InvalidOrder if off the step."""
        _, sd, _, step = self.scales(market)
        units = _decimal(amount, "amount") * 10**sd
        if units != units.to_integral_value() or int(units) % step:
            raise InvalidOrder(f"{self.id} amount {amount} is not a multiple of the step "
                               f"{self.human(step, sd)} of {market['symbol']}")
        return int(units)

    @staticmethod
    def human(units: Any, decimals: int) -> float:
        """Integer units (int or decimal string) scaled down by 10^decimals."""
        return float(Decimal(int(units)).scaleb(-decimals))

    # -- markets -----------------------------------------------------------
    def fetch_markets(self, params: Any = {}) -> list[dict[str, Any]]:  # noqa: B006 - ccxt's signature
        return [self.parse_market(m) for m in self.rpc("l2_getMarkets")]

    def parse_market(self, m: dict[str, Any]) -> Any:
        mid = quantity(m["id"])
        native = m["symbol"] or m["id"]
        base, _, quote = (m["symbol"] or f"M{mid}-USD").partition("-")
        quote = quote or "USD"
        pd, sd = quantity(m["priceDecimals"]), quantity(m["sizeDecimals"])
        tick, step = int(m["tickSize"]), int(m["stepSize"])
        imf = quantity(m["initialMarginPpm"])
        return self.safe_market_structure({
            "id": native, "numericId": mid, "symbol": f"{base}/{quote}:{SETTLE}",
            "base": base, "quote": quote, "settle": SETTLE, "baseId": base, "quoteId": quote,
            "settleId": SETTLE, "type": "swap", "spot": False, "margin": False, "swap": True,
            "future": False, "option": False, "active": True, "contract": True,
            "linear": True, "inverse": False, "contractSize": 1.0,
            "taker": quantity(m["takerFeePpm"]) / 1e6, "maker": quantity(m["makerFeePpm"]) / 1e6,
            "precision": {"price": self.human(tick, pd), "amount": self.human(step, sd)},
            "limits": {"leverage": {"min": 1.0, "max": 1e6 / imf if imf else None},
                       "amount": {"min": self.human(step, sd),
                                  "max": self.human(2**64 - 1, sd)},
                       "price": {"min": self.human(tick, pd), "max": self.human(2**64 - 1, pd)},
                       "cost": {"min": None, "max": None}},
            "created": None, "info": m,
        })

    def market_id_of(self, symbol: str) -> tuple[dict[str, Any], int]:
        self.load_markets()
        market = self.market(symbol)
        return market, int(market["numericId"])

    # -- public data ---------------------------------------------------------
    def fetch_order_book(self, symbol: str, limit: int | None = None,
                         params: Any = {}) -> Any:  # noqa: B006
        market, mid = self.market_id_of(symbol)
        book = self.rpc("l2_getOrderBook", mid, limit or self.options["depth"])
        return self.book_structure(market, book["bids"], book["asks"], self.block_number())

    def book_structure(self, market: dict[str, Any], bids: list[list[Any]],
                       asks: list[list[Any]], nonce: int | None) -> dict[str, Any]:
        """ccxt order book from levels ``[price units, size units, ...]``."""
        pd, sd, _, _ = self.scales(market)
        now = self.milliseconds()
        return {"symbol": market["symbol"],
                "bids": [[self.human(p, pd), self.human(s, sd)] for p, s, *_ in bids],
                "asks": [[self.human(p, pd), self.human(s, sd)] for p, s, *_ in asks],
                "timestamp": now, "datetime": self.iso8601(now), "nonce": nonce}

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None,
                     params: Any = {}) -> list[Any]:  # noqa: B006
        market, mid = self.market_id_of(symbol)
        fills = self.scan_fills(lambda f: f["market"] == mid, since, limit, params)
        return [self.parse_fill(f, market) for f in fills]

    def fetch_my_trades(self, symbol: str | None = None, since: int | None = None,
                        limit: int | None = None, params: Any = {}) -> list[Any]:  # noqa: B006
        me = self.address()
        self.load_markets()
        mid = int(self.market(symbol)["numericId"]) if symbol else None

        def mine(f: dict[str, Any]) -> bool:
            return me in (f["maker"], f["taker"]) and (mid is None or f["market"] == mid)

        fills = self.scan_fills(mine, since, limit, params)
        return [self.parse_fill(f, self.market_by_number(f["market"]), me) for f in fills]

    def market_by_number(self, mid: int) -> dict[str, Any]:
        for m in self.markets.values():
            if m["numericId"] == mid:
                return m
        self.load_markets(reload=True)
        for m in self.markets.values():
            if m["numericId"] == mid:
                return m
        raise BadSymbol(f"{self.id} no market {mid}")

    def scan_fills(self, keep: Any, since: int | None, limit: int | None,
                   params: dict[str, Any]) -> list[dict[str, Any]]:
        """Fills (normalized, oldest first) of the newest blocks, read back
        from the head: at most ``params["blocks"]`` (``options["scanBlocks"]``)
        blocks, stopping early at a block older than ``since`` (ms) or, with
        no ``since``, once ``limit`` fills were found."""
        bound = int(params.get("blocks", self.options["scanBlocks"]))
        head = self.block_number()
        lowest = max(0, head - bound + 1)
        found: list[dict[str, Any]] = []
        n = head
        while n >= lowest:
            first = max(lowest, n - SCAN_BATCH + 1)
            blocks = self.rpc_batch([("l2_getBlockByNumber", [hex(b), True])
                                     for b in range(n, first - 1, -1)])
            done = False
            for block in blocks:
                ts = int(block["timestamp"], 16) * 1000
                if since is not None and ts < since:
                    done = True
                    break
                for raw in reversed(block["fills"]):
                    if raw.get("price") is None:  # a deleverage: no price in the transaction
                        continue
                    f = normalize_fill(raw, int(block["number"], 16), ts)
                    if keep(f):
                        found.append(f)
                if since is None and limit is not None and len(found) >= limit:
                    done = True
                    break
            if done:
                break
            n = first - 1
        found.reverse()
        if limit is not None:
            found = found[:limit] if since is not None else found[-limit:]
        return found

    def parse_fill(self, f: dict[str, Any], market: dict[str, Any],
                   account: str | None = None) -> Any:
        """A ccxt trade from a normalized fill; with ``account``, from that
        account's side (its order, side, maker/taker and fee in USDC)."""
        pd, sd, _, _ = self.scales(market)
        price, size = self.human(f["price"], pd), self.human(f["size"], sd)
        side, order, role, fee = f["takerSide"], f["takerOrderHash"], None, None
        if account is not None:
            role = "taker" if f["taker"] == account else "maker"
            if role == "maker":
                order = f["makerOrderHash"]
                side = "sell" if f["takerSide"] == "buy" else "buy"
            rate = market["taker"] if role == "taker" else market["maker"]
            fee = {"currency": SETTLE, "rate": rate,
                   "cost": fee_units(int(f["price"]), int(f["size"]), pd + sd, side == "buy",
                                     round(rate * 1e6)) / USDC}
        return self.safe_trade({
            "id": f["txHash"], "order": order, "timestamp": f["timestamp"],
            "datetime": self.iso8601(f["timestamp"]), "symbol": market["symbol"],
            "type": None, "side": side, "takerOrMaker": role, "price": price, "amount": size,
            "cost": price * size, "fee": fee, "info": f,
        }, market)

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None, params: Any = {}) -> list[list[float]]:  # noqa: B006
        """Candles ``[start ms, open, high, low, close, volume (base)]`` built
        from the fills of the scanned blocks, oldest first; only periods with
        fills (as the ``candles`` stream)."""
        market, mid = self.market_id_of(symbol)
        pd, sd, _, _ = self.scales(market)
        period = self.parse_timeframe(timeframe) * 1000
        fills = self.scan_fills(lambda f: f["market"] == mid, since, None, params)
        candles: dict[int, list[int]] = {}
        for f in fills:
            start = f["timestamp"] - f["timestamp"] % period
            p, s = int(f["price"]), int(f["size"])
            c = candles.get(start)
            if c is None:
                candles[start] = [p, p, p, p, s]
            else:
                c[1], c[2], c[3], c[4] = max(c[1], p), min(c[2], p), p, c[4] + s
        out = [[start, *(self.human(v, pd) for v in c[:4]), self.human(c[4], sd)]
               for start, c in sorted(candles.items())]
        if limit is not None:
            out = out[:limit] if since is not None else out[-limit:]
        return out

    def fetch_ticker(self, symbol: str, params: Any = {}) -> Any:  # noqa: B006
        """Best bid/ask from the book, mark and index price = the oracle price,
        last/high/low/volume over the fills of the scanned blocks."""
        market, mid = self.market_id_of(symbol)
        pd, sd, _, _ = self.scales(market)
        book = self.rpc("l2_getOrderBook", mid, 1)
        oracle = next(m for m in self.rpc("l2_getMarkets") if quantity(m["id"]) == mid)
        fills = self.scan_fills(lambda f: f["market"] == mid, None, None, params)
        prices = [int(f["price"]) for f in fills]
        base_volume = sum(int(f["size"]) for f in fills)
        quote_volume = sum(self.human(f["price"], pd) * self.human(f["size"], sd)
                           for f in fills)
        level = lambda side, i: (self.human(book[side][0][i], pd if i == 0 else sd)  # noqa: E731
                                 if book[side] else None)
        now = self.milliseconds()
        return self.safe_ticker({
            "symbol": market["symbol"], "timestamp": now, "datetime": self.iso8601(now),
            "bid": level("bids", 0), "bidVolume": level("bids", 1),
            "ask": level("asks", 0), "askVolume": level("asks", 1),
            "last": self.human(prices[-1], pd) if prices else None,
            "open": self.human(prices[0], pd) if prices else None,
            "high": self.human(max(prices), pd) if prices else None,
            "low": self.human(min(prices), pd) if prices else None,
            "baseVolume": self.human(base_volume, sd), "quoteVolume": quote_volume,
            "markPrice": self.human(oracle["oraclePrice"], pd),
            "indexPrice": self.human(oracle["oraclePrice"], pd),
            "info": {"book": book, "market": oracle, "fills": len(fills)},
        }, market)

    # -- account -------------------------------------------------------------
    def fetch_balance(self, params: Any = {}) -> Any:  # noqa: B006
        acc = self.rpc("l2_getAccount", self.address(), params.get("tag", "latest"))
        return self.safe_balance({
            "info": acc,
            SETTLE: {"free": int(acc["freeCollateral"]) / USDC,
                     "used": int(acc["initialMargin"]) / USDC,
                     "total": int(acc["equity"]) / USDC},
        })

    def fetch_positions(self, symbols: list[str] | None = None,
                        params: Any = {}) -> list[Any]:  # noqa: B006
        self.load_markets()
        acc = self.rpc("l2_getAccount", self.address(), params.get("tag", "latest"))
        out = []
        for p in acc["positions"]:
            market = self.market_by_number(quantity(p["market"]))
            if symbols and market["symbol"] not in symbols:
                continue
            pd, sd, _, _ = self.scales(market)
            size = abs(int(p["size"]))
            value = int(p["value"])
            imf = quantity(market["info"]["initialMarginPpm"]) / 1e6
            mmf = quantity(market["info"]["maintenanceMarginPpm"]) / 1e6
            out.append(self.safe_position({
                "info": p, "id": None, "symbol": market["symbol"], "timestamp": None,
                "datetime": None, "side": p["side"], "contracts": self.human(size, sd),
                "contractSize": 1.0, "entryPrice": self.human(p["entryPrice"], pd),
                "markPrice": self.human(p["oraclePrice"], pd),
                "notional": abs(value) / USDC, "unrealizedPnl": int(p["unrealizedPnl"]) / USDC,
                "initialMargin": abs(value) * imf / USDC,
                "maintenanceMargin": abs(value) * mmf / USDC,
                "initialMarginPercentage": imf, "maintenanceMarginPercentage": mmf,
                "collateral": int(acc["collateral"]) / USDC, "marginMode": "cross",
                "hedged": False, "leverage": None, "liquidationPrice": None,
                "percentage": None, "marginRatio": None, "lastUpdateTimestamp": None,
            }))
        return out

    # -- orders --------------------------------------------------------------
    def create_order(self, symbol: str, type: str, side: str, amount: float,  # noqa: A002
                     price: float | None = None, params: Any = {}) -> Any:  # noqa: B006
        """Sign and send an order. ``params``: ``timeInForce`` (GTC, IOC, PO),
        ``postOnly`` (bool), ``expiry`` (unix s; default in one hour),
        ``salt`` (u64; default random). Returns the ccxt order with its fills
        (``trades``) as the sequencer matched them."""
        market, mid = self.market_id_of(symbol)
        if params.get("reduceOnly"):
            raise NotSupported(f"{self.id} has no reduce-only orders (the L2 API lacks them)")
        if side not in ("buy", "sell") or type not in ("limit", "market"):
            raise InvalidOrder(f"{self.id} side must be buy/sell and type limit/market")
        is_buy = side == "buy"
        tif = TIME_IN_FORCE.get(str(params.get("timeInForce", "GTC")).upper())
        if tif is None:
            raise InvalidOrder(f"{self.id} timeInForce: expected GTC, IOC or PO")
        if params.get("postOnly"):
            tif = "POST_ONLY"
        size = self.size_units(market, amount)
        if type == "market":
            if tif == "POST_ONLY":
                raise InvalidOrder(f"{self.id} a market order cannot be post-only")
            tif = "IOC"
            units = (self.price_units(market, price) if price is not None
                     else self.sweep_price(mid, is_buy, size))
        else:
            if price is None:
                raise InvalidOrder(f"{self.id} a limit order needs a price")
            units = self.price_units(market, price)
        kw = {k: quantity(params[k]) for k in ("expiry", "salt") if k in params}
        order, _, sig = self.l2.make_order(self.signer, mid, is_buy, units, size, **kw)
        result = self.rpc("l2_sendOrder", order_params(order, sig, tif))
        return self.parse_sent_order(result, order.to_json(), market, type, tif)

    def sweep_price(self, mid: int, is_buy: bool, size: int) -> int:
        """The price of the level that fills ``size`` against the opposite
        side of the book (its last level if the book is shallower)."""
        book = self.rpc("l2_getOrderBook", mid, 1000)
        levels = book["asks" if is_buy else "bids"]
        if not levels:
            raise InvalidOrder(f"{self.id} no {'asks' if is_buy else 'bids'} to take")
        total = 0
        for price, level_size, *_ in levels:
            total += int(level_size)
            if total >= size:
                return int(price)
        return int(levels[-1][0])

    def parse_sent_order(self, result: dict[str, Any], order: dict[str, Any],
                         market: dict[str, Any], type: str, tif: str) -> Any:  # noqa: A002
        pd, sd, _, _ = self.scales(market)
        fills = result["fills"]
        filled = int(result["filled"])
        cost = sum(self.human(f["price"], pd) * self.human(f["size"], sd) for f in fills)
        now = self.milliseconds()
        trades = [{"id": f["txHash"], "order": result["orderHash"], "timestamp": now,
                   "datetime": self.iso8601(now), "symbol": market["symbol"], "type": type,
                   "side": "buy" if order["isBuy"] else "sell", "takerOrMaker": "taker",
                   "price": self.human(f["price"], pd), "amount": self.human(f["size"], sd),
                   "cost": self.human(f["price"], pd) * self.human(f["size"], sd),
                   "fee": None, "info": f} for f in fills]
        return self.safe_order({
            "id": result["orderHash"], "clientOrderId": None, "timestamp": now,
            "datetime": self.iso8601(now), "lastTradeTimestamp": now if fills else None,
            "symbol": market["symbol"], "type": type,
            "timeInForce": "PO" if tif == "POST_ONLY" else tif,
            "postOnly": tif == "POST_ONLY", "reduceOnly": False,
            "side": "buy" if order["isBuy"] else "sell",
            "price": self.human(order["price"], pd), "amount": self.human(order["size"], sd),
            "filled": self.human(filled, sd),
            "remaining": self.human(int(order["size"]) - filled, sd),
            "cost": cost, "average": cost / self.human(filled, sd) if filled else None,
            "status": ORDER_STATUS.get(result["status"], result["status"]),
            "trades": trades, "fee": None, "info": {**result, "order": order},
        }, market)

    def cancel_order(self, id: str, symbol: str | None = None,  # noqa: A002
                     params: Any = {}) -> Any:  # noqa: B006
        try:
            digest = bytes.fromhex(id.removeprefix("0x"))
        except ValueError:
            raise OrderNotFound(f"{self.id} order id is a 32-byte hex hash, got {id!r}") from None
        sig = self.signer.sign_cancel(self.l2.domain, digest)
        result = self.rpc("l2_cancelOrder", {"orderHash": "0x" + digest.hex(),
                                             "signature": "0x" + sig.hex()})
        market = self.market(symbol) if symbol else None
        remaining = (self.human(result["remaining"], self.scales(market)[1])
                     if market else None)
        return self.safe_order({"id": result["orderHash"], "status": "canceled",
                                "symbol": market["symbol"] if market else None,
                                "remaining": remaining, "info": result}, market)

    def fetch_open_orders(self, symbol: str | None = None, since: int | None = None,
                          limit: int | None = None, params: Any = {}) -> list[Any]:  # noqa: B006
        self.load_markets()
        args: list[Any] = [self.address()]
        if symbol:
            args.append(int(self.market(symbol)["numericId"]))
        out = []
        for ro in self.rpc("l2_getOpenOrders", *args):
            o = ro["order"]
            market = self.market_by_number(quantity(o["market"]))
            pd, sd, _, _ = self.scales(market)
            amount, remaining = int(o["size"]), int(ro["remaining"])
            out.append(self.safe_order({
                "id": ro["orderHash"], "clientOrderId": None, "timestamp": None,
                "datetime": None, "symbol": market["symbol"], "type": "limit",
                "side": "buy" if o["isBuy"] else "sell", "price": self.human(o["price"], pd),
                "amount": self.human(amount, sd), "remaining": self.human(remaining, sd),
                "filled": self.human(amount - remaining, sd), "status": "open",
                "reduceOnly": False, "fee": None, "trades": [], "info": ro,
            }, market))
        return out[:limit] if limit is not None else out


def normalize_fill(raw: dict[str, Any], block: int, timestamp_ms: int) -> dict[str, Any]:
    """One fill as ``{txHash, market (int), price, size, takerSide, maker,
    taker (lower-case addresses), makerOrderHash, takerOrderHash, block,
    timestamp (ms)}`` from either shape the node sends: a block's ``fills``
    (``l2_getBlockByNumber``: full orders) or the ``account`` channel's
    (``maker``/``taker`` ``{account, orderHash}``)."""
    maker, taker = raw["maker"], raw["taker"]
    return {
        "txHash": raw.get("hash") or raw.get("txHash"),
        "market": quantity(raw["market"]),
        "price": raw["price"], "size": raw["size"], "takerSide": raw["takerSide"],
        "maker": maker["account"].lower(), "taker": taker["account"].lower(),
        "makerOrderHash": raw.get("makerOrderHash") or maker.get("orderHash"),
        "takerOrderHash": raw.get("takerOrderHash") or taker.get("orderHash"),
        "block": block, "timestamp": timestamp_ms,
    }


def fee_units(price: int, size: int, decimals: int, is_buy: bool, fee_ppm: int) -> int:
    """A side's fee in USDC base units: ``ceil(notional * fee_ppm / 1e6)``
    with the notional ``size * price * 1e6 / 10^(pd+sd)`` rounded up for the
    buyer and down for the seller (docs/protocol.md, "Money")."""
    num, den = size * price * USDC, 10**decimals
    notional = -(-num // den) if is_buy else num // den
    return -(-notional * fee_ppm // 10**6)


# -- async ---------------------------------------------------------------------
class _Subscription:
    """One l2_subscribe stream: ``queue`` of applied messages (contents) for
    the watch_* callers, ``book`` the local order book (orderbook channel)."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.id: str | None = None
        self.seq = 0
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.book: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.market: dict[str, Any] | None = None


def _threaded(name: str) -> Any:
    async def method(self: derivnet_async, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"``derivnet.{name}`` in a worker thread."
    return method


class derivnet_async(ccxt_async.Exchange):  # noqa: N801
    """Asynchronous ccxt exchange for a derivnet node: the REST methods of
    ``derivnet`` as coroutines, and ccxt-pro-style ``watch_order_book``,
    ``watch_trades``, ``watch_my_trades`` over one WebSocket
    (``urls["api"]["ws"]``, default: the RPC URL with ``ws://``). Each watch
    call subscribes on first use and returns after the next message of the
    subscription (the snapshot first for the order book). Close with
    ``await exchange.close()``."""

    def describe(self) -> Any:
        return self.deep_extend(super().describe(), describe_derivnet(streams=True))

    def __init__(self, config: dict[str, Any] = {}) -> None:  # noqa: B006
        super().__init__(config)
        self.sync = derivnet({k: v for k, v in config.items()
                              if k in ("urls", "privateKey", "secret", "walletAddress",
                                       "options", "timeout")})
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.subs: dict[tuple[Any, ...], _Subscription] = {}
        self.by_id: dict[str, _Subscription] = {}
        self.replies: dict[int, asyncio.Future[Any]] = {}
        self.subscribing: dict[int, _Subscription] = {}  # request id -> its subscription
        self.next_request = 0
        self.ws_lock = asyncio.Lock()

    fetch_markets = _threaded("fetch_markets")
    fetch_order_book = _threaded("fetch_order_book")
    fetch_ticker = _threaded("fetch_ticker")
    fetch_trades = _threaded("fetch_trades")
    fetch_ohlcv = _threaded("fetch_ohlcv")
    fetch_balance = _threaded("fetch_balance")
    fetch_positions = _threaded("fetch_positions")
    create_order = _threaded("create_order")
    cancel_order = _threaded("cancel_order")
    fetch_open_orders = _threaded("fetch_open_orders")
    fetch_my_trades = _threaded("fetch_my_trades")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.ws is not None:
            await self.ws.close()
        self.sync.close()
        await super().close()

    # -- WebSocket -------------------------------------------------------------
    def ws_url(self) -> str:
        url = self.urls["api"].get("ws")
        return url or self.urls["api"]["rpc"].replace("https://", "wss://").replace(
            "http://", "ws://")

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        async with self.ws_lock:
            if self.ws is None:
                try:
                    self.ws = await connect(self.ws_url(), max_size=None)
                except OSError as exc:
                    raise NetworkError(f"{self.id} WebSocket {self.ws_url()}: {exc!r}") from None
                self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        """Dispatch frames: responses to their futures, notifications to
        their subscription (applied, then queued). On a closed socket every
        waiter gets a NetworkError."""
        error: Exception = NetworkError(f"{self.id} WebSocket closed")
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                if "id" in msg and msg["id"] in self.replies:
                    sub = self.subscribing.pop(msg["id"], None)
                    if sub is not None and "result" in msg:  # before its snapshot is read
                        sub.id = msg["result"]
                        self.by_id[sub.id] = sub
                    self.replies.pop(msg["id"]).set_result(msg)
                elif msg.get("method") == "l2_subscription":
                    env = msg["params"]["result"]
                    sub = self.by_id.get(env["subscription"])
                    if sub is not None:
                        self.deliver(sub, env)
        except Exception as exc:  # the connection failed: tell every waiter
            error = NetworkError(f"{self.id} WebSocket: {exc!r}")
        for fut in self.replies.values():
            if not fut.done():
                fut.set_exception(error)
        for sub in self.subs.values():
            sub.queue.put_nowait(error)
        self.subs.clear()
        self.by_id.clear()
        self.ws = None

    def deliver(self, sub: _Subscription, env: dict[str, Any]) -> None:
        if quantity(env["seq"]) != sub.seq:
            self.forget(sub)
            sub.queue.put_nowait(InvalidNonce(
                f"{self.id} {sub.key[0]}: seq {env['seq']} after {sub.seq - 1}: "
                "messages lost; the next watch call subscribes again"))
            return
        sub.seq += 1
        contents = env["contents"]
        if sub.key[0] == "orderbook":
            bids, asks = sub.book
            if env["type"] == "snapshot":
                bids.clear()
                asks.clear()
            for side, levels in ((bids, contents["bids"]), (asks, contents["asks"])):
                for price, size, *_ in levels:
                    if int(size) == 0:
                        side.pop(int(price), None)
                    else:
                        side[int(price)] = int(size)
        sub.queue.put_nowait(contents)

    def forget(self, sub: _Subscription) -> None:
        self.subs.pop(sub.key, None)
        if sub.id is not None:
            self.by_id.pop(sub.id, None)

    async def ws_call(self, method: str, *params: Any, sub: _Subscription | None = None) -> Any:
        """One JSON-RPC request over the WebSocket; ccxt errors as ``rpc``.
        With ``sub`` (a subscribe call) the reader registers the returned id
        before it reads the next frame (the snapshot)."""
        await self.connect()
        self.next_request += 1
        rid = self.next_request
        if sub is not None:
            self.subscribing[rid] = sub
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        try:
            await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                           "params": list(params)}))
        except ConnectionClosed as exc:
            self.replies.pop(rid, None)
            self.subscribing.pop(rid, None)
            raise NetworkError(f"{self.id} WebSocket closed: {exc}") from None
        reply = await fut
        if "error" in reply:
            e = reply["error"]
            raise self.sync.map_error(RpcError(e["code"], e["message"], e.get("data")))
        return reply["result"]

    async def subscription(self, key: tuple[Any, ...], channel: str,
                           params: dict[str, Any]) -> _Subscription:
        sub = self.subs.get(key)
        if sub is None:
            sub = self.subs[key] = _Subscription(key)
            try:
                await self.ws_call("l2_subscribe", channel, params, sub=sub)
            except Exception:
                self.subs.pop(key, None)
                raise
        return sub

    async def next_message(self, sub: _Subscription) -> Any:
        item = await sub.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def watch_order_book(self, symbol: str, limit: int | None = None,
                               params: Any = {}) -> Any:  # noqa: B006
        """The local book (snapshot + deltas of ``orderbook``, depth ``limit``
        or 20) after the next message; several queued messages are applied
        before it returns."""
        market = await self._market(symbol)
        depth = limit or self.options["depth"]
        sub = await self.subscription(("orderbook", market["numericId"], depth), "orderbook",
                                      {"market": market["numericId"], "depth": depth})
        await self.next_message(sub)
        while not sub.queue.empty():
            await self.next_message(sub)
        bids, asks = sub.book
        return self.sync.book_structure(
            market, [[p, bids[p]] for p in sorted(bids, reverse=True)],
            [[p, asks[p]] for p in sorted(asks)], sub.seq - 1)

    async def watch_trades(self, symbol: str, since: int | None = None,
                           limit: int | None = None, params: Any = {}) -> list[Any]:  # noqa: B006
        """The next non-empty list of the market's trades (the snapshot's
        recent trades count, if any)."""
        market = await self._market(symbol)
        mid = market["numericId"]
        sub = await self.subscription(("trades", mid), "trades", {"market": mid})
        while True:
            contents = await self.next_message(sub)
            trades = [self.sync.parse_fill(_stream_trade(t, mid), market)
                      for t in contents["trades"]]
            trades = self.filter_by_since_limit(trades, since, limit, "timestamp", True)
            if trades:
                return trades

    async def watch_my_trades(self, symbol: str | None = None, since: int | None = None,
                              limit: int | None = None, params: Any = {}) -> list[Any]:  # noqa: B006
        """The account's next fills (``account`` channel block updates), as
        ccxt trades from the account's side."""
        if not self.sync.markets:
            await asyncio.to_thread(self.sync.load_markets)
        me = self.sync.address()
        mid = (await self._market(symbol))["numericId"] if symbol else None
        sub = await self.subscription(("account", me), "account", {"address": me})
        while True:
            contents = await self.next_message(sub)
            out = []
            for raw in contents.get("fills", []):
                if raw.get("price") is None:  # a deleverage: no price in the transaction
                    continue
                f = normalize_fill(raw, int(raw["blockNumber"], 16),
                                   int(raw["timestamp"], 16) * 1000)
                if mid is None or f["market"] == mid:
                    out.append(self.sync.parse_fill(f, self.sync.market_by_number(f["market"]),
                                                    me))
            if out:
                return out

    async def _market(self, symbol: str) -> dict[str, Any]:
        if not self.sync.markets:
            await asyncio.to_thread(self.sync.load_markets)
        return self.sync.market(symbol)  # type: ignore[no-any-return]


def _stream_trade(t: dict[str, Any], market: int) -> dict[str, Any]:
    """A ``trades`` channel trade as a normalized fill (no accounts in it)."""
    return {"txHash": t["txHash"], "market": market, "price": t["price"], "size": t["size"],
            "takerSide": t["takerSide"], "maker": None, "taker": None,
            "makerOrderHash": t["makerOrderHash"], "takerOrderHash": t["takerOrderHash"],
            "block": int(t["blockNumber"], 16), "timestamp": int(t["timestamp"], 16) * 1000}


__all__ = ["derivnet", "derivnet_async", "normalize_fill", "fee_units"]
