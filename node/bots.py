"""Trading bots for a live market on a devnet (``derivnet bots``).

Plain Python on top of the public client (``node.client.L2Client``,
``node.signing.Signer``) and the WebSocket streams: read it as an example
for writing your own bot. Every bot is one thread with its own client:

- ``Oracle`` posts the market's oracle price once a second with the
  oracle key (dev account 1, the genesis oracle), following the shared
  trade tape's prices (``--oracle tape``) or a random walk (``walk``).
- ``MarketMaker`` quotes ``levels`` bids and asks around the oracle price;
  it cancels and replaces its quotes when the oracle moves more than
  ``requote_bps`` or one of its orders fills, and skews its quotes against
  its inventory (a long maker quotes lower, so it sells more than it buys).
- ``Taker`` sends random-sized marketable IOC orders at random intervals.

``MarketFeed`` follows the market through one WebSocket (``l2_subscribe``
channels ``markets``, ``orderbook``, ``trades``, ``blocks`` and one
``account`` per bot) and keeps a ``MarketView`` the bots and the dashboard
read; if the WebSocket cannot be opened it polls JSON-RPC instead. The
dashboard, status line and summary tables are in ``node.bots_view``.

Accounts are dev accounts 3..9 (0 is the sequencer, 1 the oracle, 2 the fee
account), funded through real L1 deposits (``node.replay.fund_accounts``).
Units: prices in the market's price units (10^-priceDecimals USD), sizes in
size units (10^-sizeDecimals of the base asset), money in USDC base units
(1e-6 USDC).
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.client import L2Client, RpcError, order_params, quantity
from node.signing import Signer, dev_keys

FIRST_BOT_ACCOUNT = 3
"""Dev account index of the first bot (0..2: sequencer, oracle, fee account)."""
MAX_BOTS = 7
MAKER_FUNDING = 1_000_000 * 10**6  # USDC base units
TAKER_FUNDING = 200_000 * 10**6
SHARED_TAPE = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "ethusdt-trades-2023-02-02.csv"
"""The shared tape (../shared/data beside the project), the default for --oracle tape."""
QUOTE_EXPIRY = 120  # seconds: quotes left behind by a killed run expire soon


class BotsError(Exception):
    """The bots cannot run (bad options, not a devnet); one line for the user."""


@dataclass
class BotOptions:
    """``derivnet bots`` options. duration: seconds of trading; tape: CSV
    path for ``oracle="tape"``; requote_bps: oracle move (basis points) that
    makes a maker cancel and replace; spread_bps: half-spread of the best
    quotes; levels: quotes per side; seed: random seed (None: random)."""

    makers: int = 2
    takers: int = 2
    duration: float = 60.0
    rpc: str = "http://127.0.0.1:8545"
    market: str = "ETH-USD"
    oracle: str = "walk"
    tape: str | None = None
    levels: int = 3
    spread_bps: float = 5.0
    requote_bps: float = 3.0
    taker_interval: float = 0.5
    seed: int | None = None
    timeout: float = 90.0


# -- the market as the streams show it -----------------------------------------------


@dataclass
class BotAccount:
    """What the dashboard shows of a bot: its account (as ``l2_getAccount``),
    its equity at the start (USDC base units) and its counters."""

    name: str
    signer: Signer
    start_equity: int = 0
    account: dict[str, Any] = field(default_factory=dict)
    orders_sent: int = 0
    errors: int = 0
    last_error: str = ""

    @property
    def address(self) -> str:
        return "0x" + self.signer.address.hex()


@dataclass
class MarketView:
    """Shared state, written by ``MarketFeed`` under ``lock``: the oracle
    price, the book (price -> size, both in market units), recent trades
    (newest first), the heads (unsafe, safe, finalized L2 block numbers) and
    the bots' accounts by lower-case address."""

    market: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    oracle_price: int = 0
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=12))
    heads: dict[str, int] = field(default_factory=lambda: {"unsafe": 0, "safe": 0,
                                                           "finalized": 0})
    bots: dict[str, BotAccount] = field(default_factory=dict)
    fills_seen: int = 0
    streaming: bool = False

    @property
    def market_id(self) -> int:
        return quantity(self.market["id"])

    def scale(self) -> int:
        """e = priceDecimals + sizeDecimals - 6: USDC = size * price / 10^e."""
        return (quantity(self.market["priceDecimals"]) + quantity(self.market["sizeDecimals"])
                - 6)

    def usdc(self, size: int, price: int) -> int:
        """Signed USDC base units of ``size`` at ``price`` (floored)."""
        e = self.scale()
        return size * price * 10**-e if e <= 0 else (size * price) // 10**e

    def position(self, address: str) -> int:
        """The bot's signed position in this market (size units)."""
        with self.lock:
            acc = self.bots[address].account
        return position_of(acc, self.market_id)

    def equity(self, account: dict[str, Any]) -> int:
        """Equity in USDC base units: collateral plus the positions' values at
        the current oracle price (the cash model, ``node.margin.equity``:
        collateral already paid the positions' cost), minus unsettled funding."""
        eq = int(account.get("collateral", 0))
        for p in account.get("positions", []):
            price = self.oracle_price if quantity(p["market"]) == self.market_id else \
                int(p["oraclePrice"])
            eq += self.usdc(int(p["size"]), price) - int(p.get("unsettledFunding", 0))
        return eq


class MarketFeed(threading.Thread):
    """Follows the market into ``view``: the WebSocket streams, or polling
    JSON-RPC every ``poll_interval`` s if the WebSocket cannot be opened.
    A gap in a subscription's ``seq`` resubscribes (new snapshot)."""

    def __init__(self, rpc: str, view: MarketView, stop: threading.Event,
                 poll_interval: float = 0.5) -> None:
        super().__init__(name="market-feed", daemon=True)
        self.rpc = rpc
        self.view = view
        self.stop_event = stop
        self.poll_interval = poll_interval
        self.error: str | None = None

    RETRY_STREAM = 10.0
    """Seconds of polling before the WebSocket is tried again."""

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._stream()
            except (OSError, TimeoutError) as exc:  # no WebSocket: poll for a while
                self.view.streaming = False
                self.error = f"WebSocket: {exc}; polling"
                retry = time.monotonic() + self.RETRY_STREAM
                while not self.stop_event.is_set() and time.monotonic() < retry:
                    self._poll_once()
                    self.stop_event.wait(self.poll_interval)
            except _Gap:
                continue

    # -- streams ---------------------------------------------------------
    def _stream(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        url = "ws" + self.rpc[len("http"):] if self.rpc.startswith("http") else self.rpc
        symbol = self.view.market["symbol"]
        subs: list[tuple[str, dict[str, Any]]] = [
            ("markets", {}), ("orderbook", {"market": symbol, "depth": 10}),
            ("trades", {"market": symbol}), ("blocks", {})]
        subs += [("account", {"address": a}) for a in self.view.bots]
        try:
            with connect(url, open_timeout=5, max_size=2**24) as ws:
                for i, (channel, params) in enumerate(subs):
                    ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "l2_subscribe",
                                        "params": [channel, params]}))
                self.view.streaming = True
                self.error = None
                seqs: dict[str, int] = {}
                while not self.stop_event.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    msg = json.loads(raw)
                    if "error" in msg:
                        raise OSError(f"l2_subscribe: {msg['error']['message']}")
                    if msg.get("method") != "l2_subscription":
                        continue
                    env = msg["params"]["result"]
                    expected = seqs.get(env["subscription"], -1) + 1
                    if quantity(env["seq"]) != expected:
                        raise _Gap()
                    seqs[env["subscription"]] = expected
                    self.apply(env)
        except WebSocketException as exc:  # closed, or the server does not speak WebSocket
            raise OSError(f"{type(exc).__name__}: {exc}") from None

    def apply(self, env: dict[str, Any]) -> None:
        """Fold one stream envelope into the view (docs: README "Streams")."""
        c, v = env["contents"], self.view
        with v.lock:
            channel = env["channel"]
            if channel == "markets":
                for m in c["markets"]:
                    if quantity(m["id"]) == v.market_id and "oraclePrice" in m:
                        v.oracle_price = int(m["oraclePrice"])
            elif channel == "orderbook":
                if env["type"] == "snapshot":
                    v.bids.clear()
                    v.asks.clear()
                for side, levels in ((v.bids, c["bids"]), (v.asks, c["asks"])):
                    for price, size, *_ in levels:
                        if int(size):
                            side[int(price)] = int(size)
                        else:
                            side.pop(int(price), None)
            elif channel == "trades":
                trades = c["trades"] if env["type"] == "update" else c["trades"][-12:]
                for t in trades:
                    v.trades.appendleft(t)
                if env["type"] == "update":
                    v.fills_seen += len(trades)
            elif channel == "blocks":
                v.heads = {k: quantity(n) for k, n in c["heads"].items()}
            elif channel == "account" and "account" in c:
                bot = v.bots.get(env["id"])
                if bot is not None:
                    bot.account = c["account"]

    # -- polling fallback ------------------------------------------------
    def _poll_once(self) -> None:
        v = self.view
        try:
            with L2Client(self.rpc, timeout=5) as client:
                m = client.call("l2_getMarkets")
                book = client.call("l2_getOrderBook", v.market_id, 10)
                status = client.sync_status()
                accounts = {a: client.get_account(a) for a in v.bots}
        except Exception as exc:  # noqa: BLE001 - the node may be busy; try again
            self.error = f"polling: {exc}"
            return
        with v.lock:
            for mk in m:
                if quantity(mk["id"]) == v.market_id:
                    v.oracle_price = int(mk["oraclePrice"])
            v.bids = {int(p): int(s) for p, s, *_ in book["bids"]}
            v.asks = {int(p): int(s) for p, s, *_ in book["asks"]}
            v.heads = {"unsafe": status["unsafe_l2"]["number"], "safe": status["safe_l2"]["number"],
                       "finalized": status["finalized_l2"]["number"]}
            for a, acc in accounts.items():
                v.bots[a].account = acc


class _Gap(Exception):
    """A subscription skipped a ``seq``: resubscribe for a fresh snapshot."""


# -- bots --------------------------------------------------------------------------


class Bot(threading.Thread):
    """A thread with its own client; ``step()`` runs until ``stop`` is set
    and returns the seconds to wait before the next step."""

    def __init__(self, rpc: str, view: MarketView, me: BotAccount | None, stop: threading.Event,
                 rng: random.Random) -> None:
        super().__init__(name=me.name if me else "oracle", daemon=True)
        self.client = L2Client(rpc, timeout=30)
        self.view = view
        self.me = me
        self.stop_event = stop
        self.rng = rng

    def run(self) -> None:
        import httpx

        try:
            while not self.stop_event.is_set():
                try:
                    wait = self.step()
                except httpx.HTTPError as exc:  # the node is busy or restarting: retry
                    self.note_error(f"{type(exc).__name__}: {exc}")
                    wait = 1.0
                self.stop_event.wait(wait)
            try:
                self.finish()
            except httpx.HTTPError as exc:
                self.note_error(f"{type(exc).__name__}: {exc}")
        finally:
            self.client.close()

    def step(self) -> float:
        """One move; returns the seconds to wait before the next one. Every
        bot (Oracle, MarketMaker, Taker) defines it; the base has none."""
        raise NotImplementedError(f"{type(self).__name__} defines no step()")

    def finish(self) -> None:
        """Called once after ``stop`` is set."""

    def note_error(self, error: Exception | str) -> None:
        if self.me is not None:
            self.me.errors += 1
            self.me.last_error = str(error)[:120]


class Oracle(Bot):
    """Posts the oracle price once a second: the next tape price (the tape
    replayed ``speed`` times faster than it happened) or a random walk with
    steps of ``walk_bps`` basis points. Timestamps strictly increase (the
    STF rejects an oracle price not newer than the market's)."""

    def __init__(self, rpc: str, view: MarketView, stop: threading.Event, rng: random.Random,
                 signer: Signer, prices: list[tuple[int, int]] | None, speed: float = 5.0,
                 walk_bps: float = 4.0) -> None:
        super().__init__(rpc, view, None, stop, rng)
        self.signer = signer
        self.prices = prices  # (tape ms, price) or None for a random walk
        self.speed = speed
        self.walk_bps = walk_bps
        self.started = time.monotonic()
        self.price = int(view.market["oraclePrice"])
        self.last_ts = quantity(view.market.get("oracleTime", 0))
        self.posted = 0
        self.errors = 0
        self.last_error = ""

    def next_price(self) -> int:
        tick = int(self.view.market["tickSize"])
        if self.prices:
            t0 = self.prices[0][0]
            at = t0 + (time.monotonic() - self.started) * self.speed * 1000
            # loop over the tape when it runs out
            span = self.prices[-1][0] - t0 + 1
            at = t0 + (at - t0) % span
            price = self.prices[0][1]
            for ms, p in self.prices:
                if ms > at:
                    break
                price = p
        else:
            price = int(self.price * math.exp(self.rng.gauss(0, self.walk_bps / 1e4)))
        return max(tick, price // tick * tick)

    def step(self) -> float:
        price = self.next_price()
        self.last_ts = max(int(time.time()), self.last_ts + 1)
        try:
            self.client.send_oracle_price(self.signer, self.view.market_id, price, self.last_ts)
            self.price = price
            self.posted += 1
        except RpcError as exc:
            self.errors += 1
            self.last_error = exc.message
        return 1.0


class MarketMaker(Bot):
    """Quotes ``levels`` bids and asks around the oracle price.

    Best quotes sit ``spread_bps`` from the (skewed) mid, further levels
    one more half-spread apart; the best level is ``size`` size units, each
    further level half of that more.
    The mid is skewed against inventory: ``mid * (1 - skew_bps * position /
    max_position / 1e4)``. Quotes are cancelled and replaced (one JSON-RPC
    batch) when the oracle moves more than ``requote_bps``, when a quote
    fills, or every ``refresh`` seconds."""

    def __init__(self, rpc: str, view: MarketView, me: BotAccount, stop: threading.Event,
                 rng: random.Random, levels: int, spread_bps: float, requote_bps: float,
                 size: int, max_position: int, skew_bps: float = 10.0,
                 refresh: float = 20.0) -> None:
        super().__init__(rpc, view, me, stop, rng)
        self.levels = levels
        self.spread_bps = spread_bps
        self.requote_bps = requote_bps
        self.size = size
        self.max_position = max_position
        self.skew_bps = skew_bps
        self.refresh = refresh
        self.quoted_at = 0  # oracle price of the live quotes
        self.quoted_position = 0
        self.quoted_time = 0.0
        self.resting: list[bytes] = []  # order hashes of the live quotes

    def quotes(self, oracle: int, position: int) -> list[tuple[bool, int, int]]:
        """(is_buy, price, size) of every quote, prices on the tick."""
        tick = int(self.view.market["tickSize"])
        step = int(self.view.market["stepSize"])
        skew = self.skew_bps * max(-1.0, min(1.0, position / self.max_position)) / 1e4
        mid = oracle * (1 - skew)
        half = max(tick, mid * self.spread_bps / 1e4)
        out = []
        for level in range(1, self.levels + 1):
            size = max(step, self.size * (1 + level) // 2 // step * step)
            bid = int((mid - half * level) // tick * tick)
            ask = int(-(-(mid + half * level) // tick) * tick)
            if bid > 0:
                out.append((True, bid, size))
            out.append((False, ask, size))
        return out

    def step(self) -> float:
        with self.view.lock:
            oracle = self.view.oracle_price
        if oracle == 0:
            return 0.2
        position = self.view.position(self.me.address)  # type: ignore[union-attr]
        moved = abs(oracle - self.quoted_at) * 1e4 > self.requote_bps * oracle
        filled = position != self.quoted_position
        stale = time.monotonic() - self.quoted_time > self.refresh
        if moved or filled or stale:
            self.requote(oracle, position)
        return 0.1

    def requote(self, oracle: int, position: int) -> None:
        """Cancel the live quotes and place new ones, in one batch."""
        me = self.me
        assert me is not None
        calls: list[tuple[str, list[Any]]] = self.cancel_calls()
        hashes = []
        expiry = int(time.time()) + QUOTE_EXPIRY
        for is_buy, price, size in self.quotes(oracle, position):
            order, digest, sig = self.client.make_order(me.signer, self.view.market_id, is_buy,
                                                        price, size, expiry=expiry)
            calls.append(("l2_sendOrder", [order_params(order, sig, "GTC")]))
            hashes.append(digest)
        results = self.client.batch(calls)
        cancels = len(calls) - len(hashes)
        for r in results[cancels:]:
            if isinstance(r, RpcError):
                self.note_error(r)
        me.orders_sent += len(hashes)
        self.resting = [h for h, r in zip(hashes, results[cancels:], strict=True)
                        if not isinstance(r, RpcError) and r["status"] != "filled"]
        self.quoted_at, self.quoted_position = oracle, position
        self.quoted_time = time.monotonic()

    def cancel_calls(self) -> list[tuple[str, list[Any]]]:
        """l2_cancelOrder calls for the live quotes (a quote that filled in
        the meantime answers an error, which is expected and ignored)."""
        me = self.me
        assert me is not None
        domain = self.client.domain
        calls: list[tuple[str, list[Any]]] = []
        for h in self.resting:
            sig = me.signer.sign_cancel(domain, h)
            calls.append(("l2_cancelOrder", [{"orderHash": "0x" + h.hex(),
                                              "signature": "0x" + sig.hex()}]))
        return calls

    def finish(self) -> None:
        """Take the quotes off the book."""
        self.client.batch(self.cancel_calls())
        self.resting = []


class Taker(Bot):
    """Sends a marketable IOC order at exponentially distributed intervals
    (mean ``interval`` s): a random side, a random size of 1..``max_size``
    steps, priced ``slippage_bps`` through the oracle so it crosses the
    book. Leans against its own position beyond ``max_position``."""

    def __init__(self, rpc: str, view: MarketView, me: BotAccount, stop: threading.Event,
                 rng: random.Random, interval: float, max_size: int, max_position: int,
                 slippage_bps: float = 50.0) -> None:
        super().__init__(rpc, view, me, stop, rng)
        self.interval = interval
        self.max_size = max_size
        self.max_position = max_position
        self.slippage_bps = slippage_bps
        self.fills = 0

    def step(self) -> float:
        me = self.me
        assert me is not None
        with self.view.lock:
            oracle = self.view.oracle_price
        if oracle:
            tick = int(self.view.market["tickSize"])
            step = int(self.view.market["stepSize"])
            position = self.view.position(me.address)
            is_buy = self.rng.random() < 0.5
            if abs(position) > self.max_position:
                is_buy = position < 0
            size = self.rng.randint(1, max(1, self.max_size // step)) * step
            through = oracle * self.slippage_bps / 1e4
            price = int((oracle + through if is_buy else oracle - through) // tick * tick)
            try:
                r = self.client.send_order(me.signer, self.view.market_id, is_buy, max(tick, price),
                                           size, "IOC")
                me.orders_sent += 1
                self.fills += len(r["fills"])
            except RpcError as exc:
                self.note_error(exc)
        return self.rng.expovariate(1 / self.interval)


# -- setup, run, summary -------------------------------------------------------------


def tape_prices(path: str, market: dict[str, Any]) -> list[tuple[int, int]]:
    """(timestamp ms, price in market units on the tick) of each tape trade
    (``node.replay.read_tape_rows``; raises ValueError naming a bad line)."""
    from node.replay import read_tape_rows

    pd, tick = quantity(market["priceDecimals"]), int(market["tickSize"])
    out = []
    for r in read_tape_rows(path):
        units = int(r.price.scaleb(pd).to_integral_value())
        out.append((r.timestamp_ms, max(tick, units // tick * tick)))
    if not out:
        raise ValueError(f"{path}: the tape has no trades")
    return out


@dataclass
class Bots:
    """A running set of bots: call ``start()``, then ``stop()``; ``view``
    is the live market for a dashboard."""

    opts: BotOptions
    client: L2Client
    view: MarketView
    oracle: Oracle
    makers: list[MarketMaker]
    takers: list[Taker]
    feed: MarketFeed
    stop_event: threading.Event
    first_block: int = 0
    started: float = 0.0

    def start(self) -> None:
        self.feed.start()
        deadline = time.monotonic() + 10  # the streams' snapshots, or polling
        while not (self.view.streaming or self.feed.error) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.first_block = self.client.block_number() + 1
        self.started = time.monotonic()
        for bot in [self.oracle, *self.makers, *self.takers]:
            bot.start()

    def stop(self) -> None:
        """Stop trading: every bot finishes its step, makers cancel their quotes."""
        self.stop_event.set()
        for bot in [self.oracle, *self.makers, *self.takers]:
            bot.join(timeout=30)

    def close(self) -> None:
        """Stop the bots (if running) and the feed; close the client."""
        self.stop_event.set()
        self.feed.stop_event.set()
        if self.feed.is_alive():
            self.feed.join(timeout=5)
        self.client.close()


def setup(opts: BotOptions, w3: Any, client: L2Client,
          say: Callable[[str], None] = lambda line: None) -> Bots:
    """Check the options against the node, fund the bots' accounts through
    L1 deposits and build the bots (not started); ``say`` gets progress
    lines. Raises BotsError (bad options, not a devnet) or ValueError (a bad
    tape line)."""
    from node.replay import fund_accounts

    if opts.makers < 0 or opts.takers < 0 or opts.makers + opts.takers == 0:
        raise BotsError("need at least one maker or taker")
    if opts.makers + opts.takers > MAX_BOTS:
        raise BotsError(f"at most {MAX_BOTS} bots in all (dev accounts "
                        f"{FIRST_BOT_ACCOUNT}..{FIRST_BOT_ACCOUNT + MAX_BOTS - 1})")
    if opts.oracle not in ("tape", "walk"):
        raise BotsError("--oracle must be tape or walk")
    keys = dev_keys(10)
    oracle_key = Signer(keys[1])
    if "0x" + oracle_key.address.hex() != str(client.config["oracle"]).lower():
        raise BotsError("the node's oracle is not the dev oracle key (dev account 1); "
                        "bots run on a devnet")
    market = next((m for m in client.call("l2_getMarkets", "pending")
                   if m["symbol"] == opts.market), None)
    if market is None:
        raise BotsError(f"the node has no market {opts.market} (see `derivnet markets`)")
    prices = None
    if opts.oracle == "tape":
        tape = opts.tape or str(SHARED_TAPE)
        if not os.path.exists(tape):
            raise BotsError(f"no tape at {tape}: give --tape PATH")
        prices = tape_prices(tape, market)

    rng = random.Random(opts.seed)
    view = MarketView(market)
    names = [f"maker{i + 1}" for i in range(opts.makers)] + \
        [f"taker{i + 1}" for i in range(opts.takers)]
    accounts = [BotAccount(n, Signer(keys[FIRST_BOT_ACCOUNT + i])) for i, n in enumerate(names)]
    say(f"funding {len(accounts)} bots through L1 deposits...")
    fund_accounts(client, w3, [(a.signer, MAKER_FUNDING if a.name.startswith("maker")
                                else TAKER_FUNDING) for a in accounts], opts.timeout)
    view.oracle_price = int(market["oraclePrice"])
    for a in accounts:
        a.account = client.get_account(a.signer.address, "pending")
        a.start_equity = view.equity(a.account)
        view.bots[a.address] = a

    stop = threading.Event()
    one = 10 ** quantity(market["sizeDecimals"])  # one unit of the base asset in size units
    makers = [MarketMaker(opts.rpc, view, a, stop, random.Random(rng.random()), opts.levels,
                          opts.spread_bps * (1 + 0.5 * i), opts.requote_bps, size=2 * one,
                          max_position=20 * one)
              for i, a in enumerate(accounts[:opts.makers])]
    takers = [Taker(opts.rpc, view, a, stop, random.Random(rng.random()), opts.taker_interval,
                    max_size=one, max_position=10 * one)
              for a in accounts[opts.makers:]]
    oracle = Oracle(opts.rpc, view, stop, random.Random(rng.random()), oracle_key, prices)
    feed = MarketFeed(opts.rpc, view, threading.Event())
    return Bots(opts, client, view, oracle, makers, takers, feed, stop)


def wind_down(bots: Bots, w3: Any, timeout: float) -> dict[str, Any]:
    """After ``stop()``: wait until every sent transaction is sealed and on
    L1, then summarize. Raises TimeoutError if the blocks do not reach L1."""
    from node.replay import summarize

    client = bots.client
    trading = time.monotonic() - bots.started
    deadline = time.monotonic() + timeout
    while client.sync_status()["pending_txs"]:
        if time.monotonic() > deadline:
            raise TimeoutError("transactions still pending after the bots stopped")
        time.sleep(0.05)
    last_block = client.block_number()
    while client.sync_status()["safe_l2"]["number"] < last_block:
        if time.monotonic() > deadline:
            raise TimeoutError(f"L2 blocks up to #{last_block} not on L1 after {timeout:g} s")
        time.sleep(0.1)
    fills, volume, per_bot = block_fills(client, bots.first_block, last_block,
                                         bots.view.market_id)
    stats = {"fills": fills, "oracleUpdates": bots.oracle.posted,
             "oracleRejected": bots.oracle.errors}
    errors = [f"{b.name}: {b.last_error}" for b in bots.view.bots.values() if b.errors]
    if bots.oracle.errors:
        errors.append(f"oracle: {bots.oracle.last_error}")
    out = summarize(client, w3, bots.first_block, last_block, stats, errors,
                    len(bots.view.bots), fills, trading, time.monotonic() - bots.started)
    with bots.view.lock:
        oracle = bots.view.oracle_price
    view = bots.view
    out["volume"] = str(volume)
    out["volumeUsdc"] = str(sum(view.usdc(s, p) for s, p in per_bot.pop("_trades", [])))
    out["oraclePrice"] = str(oracle)
    rows = []
    for b in view.bots.values():
        account = client.get_account(b.signer.address)
        rows.append({"bot": b.name, "address": b.address, "fills": per_bot.get(b.address, 0),
                     "orders": b.orders_sent, "errors": b.errors,
                     "position": str(position_of(account, view.market_id)),
                     "pnl": str(view.equity(account) - b.start_equity)})
    out["bots"] = rows
    out["market"] = view.market["symbol"]
    out["priceDecimals"] = hex(quantity(view.market["priceDecimals"]))
    out["sizeDecimals"] = hex(quantity(view.market["sizeDecimals"]))
    return out


def position_of(account: dict[str, Any], market: int) -> int:
    """The signed position (size units) in ``market`` of an ``l2_getAccount`` answer."""
    for p in account.get("positions", []):
        if quantity(p["market"]) == market:
            return int(p["size"])
    return 0


def block_fills(client: L2Client, first: int, last: int,
                market: int) -> tuple[int, int, dict[str, Any]]:
    """Fills the node sealed in blocks first..last of ``market``: (count,
    volume in size units, {address: fills as maker or taker, "_trades":
    [(size, price)]})."""
    fills = volume = 0
    per: dict[str, Any] = {"_trades": []}
    numbers = list(range(first, last + 1))
    for start in range(0, len(numbers), 200):
        calls = [("l2_getBlockByNumber", [hex(n), True]) for n in numbers[start:start + 200]]
        for block in client.batch(calls):
            if isinstance(block, RpcError):
                raise block
            for f in block["fills"]:
                if quantity(f["market"]) != market:
                    continue
                fills += 1
                volume += int(f["size"])
                per["_trades"].append((int(f["size"]), int(f["price"])))
                for side in ("maker", "taker"):
                    a = f[side]["account"].lower()
                    per[a] = per.get(a, 0) + 1
    return fills, volume, per


def run_bots(opts: BotOptions, l1_rpc: str | None = None, dashboard: bool = True,
             as_json: bool = False, status_every: float = 3.0) -> dict[str, Any] | None:
    """Fund, run for ``opts.duration`` s (or until Ctrl-C), stop, wait for
    L1 and print the summary (rich tables, or JSON with ``as_json``).
    Returns the summary, or None if Ctrl-C came again while winding down.
    Raises BotsError, ValueError (a bad tape) or TimeoutError."""
    from l1_stub.client import connect
    from node.bots_view import dashboard_view, print_summary, status_line
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with L2Client(opts.rpc, timeout=opts.timeout) as client, \
            connect(l1_rpc or client.config["l1_rpc_url"]) as w3:
        bots = setup(opts, w3, client, say=(lambda line: None) if as_json else console.print)
        try:
            bots.start()
            end = bots.started + opts.duration
            try:
                if dashboard:
                    with Live(dashboard_view(bots, opts.duration), console=console,
                              refresh_per_second=4) as live:
                        while (left := end - time.monotonic()) > 0:
                            live.update(dashboard_view(bots, left))
                            time.sleep(0.25)
                else:
                    next_line = 0.0
                    while (left := end - time.monotonic()) > 0:
                        if time.monotonic() >= next_line:
                            print(status_line(bots, time.monotonic() - bots.started), flush=True)
                            next_line = time.monotonic() + status_every
                        time.sleep(min(0.25, left))
            except KeyboardInterrupt:
                pass  # Ctrl-C ends trading early; the wind-down and summary still run
            if not as_json:
                console.print("stopping: cancelling quotes, waiting for the last batch on L1...")
            try:
                bots.stop()
                summary = wind_down(bots, w3, opts.timeout)
            except KeyboardInterrupt:
                console.print("interrupted before the summary")
                return None
        finally:
            bots.close()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return summary
