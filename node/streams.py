"""Market-data streams over WebSocket: ``l2_subscribe`` / ``eth_subscribe``.

A ``StreamHub`` owns every subscription of the node. After each sealed L2
block (``Sequencer.on_block``) and on each block-builder tick (book changes
without a block, safe / finalized head moves) it computes each channel's
update once (not once per subscriber) and puts the encoded notification into
each subscriber's connection: the sealing path never awaits a socket. A
connection with nothing queued gets the frame written to its socket at once
(``node.socket_writer``: one non-blocking syscall, no wait for the event
loop's other tasks); otherwise the frame joins the connection's bounded
buffer (a trio memory channel, ``DEFAULT_BUFFER`` messages like geth's
10,000, or ``$DERIVNET_STREAM_BUFFER``), drained in order by the
connection's sender task. A connection whose buffer is full is dropped with
a WebSocket close reason.

Notification (JSON-RPC 2.0, no id)::

    {"jsonrpc": "2.0", "method": "l2_subscription",
     "params": {"subscription": ID, "result": ENVELOPE}}

    ENVELOPE = {"subscription": ID, "type": "snapshot" | "update",
                "channel": CHANNEL, "id": KEY, "seq": "0x..", "block": "0x..",
                "contents": {...}}

``seq`` counts 0x0, 0x1, 0x2... per subscription (0x0 is the snapshot); a gap means
the client lost messages and should resubscribe. ``id`` is the channel key:
the market symbol (orderbook, trades, candles; "#<id>" if it has none), the
lower-case address (account), null (markets, blocks). ``block`` is the L2
block the update describes (hex). Money, sizes and prices are decimal
strings; every other integer (block numbers, timestamps, market ids, deposit
and withdrawal ids, counts, ``seq``) a hex quantity, as in node/rpc.py (no
JSON numbers). Channel
contents are documented in README.md ("Streams") and docs/protocol.md.

``eth_subscribe("newHeads")`` sends geth's shape:
``{"jsonrpc": "2.0", "method": "eth_subscription", "params":
{"subscription": ID, "result": HEADER}}``, one per sealed block.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from node.blocks import Block
from node.rpc import RpcError, account_json, bad_params, hexb, hexq, hexq_or_none, parse_address
from node.rpc import parse_int
from node.rpc import DELEVERAGE_FILL, LIMIT_FILL, LIQUIDATION_FILL, unknown_market
from node.socket_writer import SocketWriter, frame
from node.transactions import Deleverage, Deposit, Fill, Liquidate, Withdraw, decode_tx

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("derivnet.streams")


def _risk_fill(h: str, tx: Liquidate | Deleverage, domain: Any, block: Block) -> dict[str, Any]:
    """A Liquidate's or Deleverage's fill in the trades / account streams'
    shape: fillType "liquidation" (maker: the liquidator's order, taker: the
    liquidated account) or "deleverage" (maker: the offset account, taker:
    the liquidated; price null: the bankruptcy price is computed from state,
    not carried by the transaction)."""
    from node.eip712 import order_hash

    if isinstance(tx, Liquidate):
        return {"txHash": h, "type": "Liquidate", "fillType": LIQUIDATION_FILL,
                "market": hexq(tx.order.market), "price": str(tx.price), "size": str(tx.size),
                "takerSide": "sell" if tx.order.is_buy else "buy",
                "maker": {"account": hexb(tx.order.account),
                          "orderHash": hexb(order_hash(domain, tx.order))},
                "taker": {"account": hexb(tx.liquidated), "orderHash": None},
                "blockNumber": hexq(block.number), "timestamp": hexq(block.header.timestamp)}
    return {"txHash": h, "type": "Deleverage", "fillType": DELEVERAGE_FILL,
            "market": hexq(tx.market), "price": None, "size": str(tx.size), "takerSide": None,
            "maker": {"account": hexb(tx.offset), "orderHash": None},
            "taker": {"account": hexb(tx.liquidated), "orderHash": None},
            "blockNumber": hexq(block.number), "timestamp": hexq(block.header.timestamp)}

DEFAULT_BUFFER = 10_000
"""Pending messages per connection before it is dropped (geth: 10,000)."""
MAX_SUBSCRIPTIONS = 1_000
"""Subscriptions per connection."""
RECENT_TRADES = 100
"""Trades kept per market for a ``trades`` snapshot."""
RECENT_CANDLES = 100
"""Candles kept per (market, resolution) for a ``candles`` snapshot."""
RESOLUTIONS = {"1m": 60, "5m": 300, "1h": 3600}
CHANNELS = ("orderbook", "trades", "markets", "account", "candles", "blocks")
CHANNEL_PARAMS: dict[str, tuple[str, ...]] = {
    "orderbook": ("market", "depth"), "trades": ("market",), "markets": (),
    "account": ("address",), "candles": ("market", "resolution"), "blocks": ()}
"""The members each channel's ``params`` object may have (others: -32602)."""
NOT_SUPPORTED = -32601
_COMPACT = (",", ":")
ABORT_AFTER = 1.0  # seconds a dropped consumer gets to take its close frame
CLOSE_POLICY = 1008  # WebSocket close code: policy violation (too slow)
DIRECT_MAX = 16 * 1024
"""Longest text (characters) written straight to the socket, uncompressed;
longer ones (large snapshots) go through hypercorn, compressed if the client
negotiated permessage-deflate."""
_BATCH = 64  # queued frames joined into one socket write by the sender task

CONNECTION: ContextVar[Connection | None] = ContextVar("derivnet_ws_connection", default=None)
"""The WebSocket connection whose frame is being dispatched (None over HTTP)."""


def _buffer_bound() -> int:
    raw = os.environ.get("DERIVNET_STREAM_BUFFER")
    return max(1, int(raw)) if raw else DEFAULT_BUFFER


# -- connections -------------------------------------------------------------
class Connection:
    """One WebSocket connection: its subscriptions and its bounded outbound
    buffer (JSON text frames, responses and notifications in order)."""

    def __init__(self, hub: StreamHub | None, bound: int,
                 peer: tuple[Any, Any] | None = None) -> None:
        self.hub = hub
        self.bound = bound
        self.peer = peer  # (client, server) addresses from the ASGI scope
        self.nursery: trio.Nursery | None = None
        self.finished = False
        self._send, self._receive = trio.open_memory_channel[str](bound)
        self.subscriptions: dict[str, Subscription] = {}
        self.deferred: list[str] = []  # snapshots to send right after the response
        self.dropped: str | None = None
        self.stop = trio.CancelScope()
        self.writer: SocketWriter | None = None  # set by ws_connection under hypercorn
        self.queued = 0  # frames handed to the sender task and not yet written

    def push(self, text: str) -> bool:
        """Send one frame without waiting: written to the socket now if
        nothing is queued before it, else queued. Drops the connection
        (False) if its buffer is full."""
        if self.dropped is not None:
            return False
        writer = self.writer
        if (writer is not None and not self.queued and len(text) <= DIRECT_MAX
                and writer.write_nowait(frame(text))):
            if writer.owed:
                self.queued += 1
                self._send.send_nowait("")  # the sender task finishes the frame
            return True
        try:
            self._send.send_nowait(text)
            self.queued += 1
        except trio.WouldBlock:
            self.drop(f"subscriber too slow: {self.bound} messages pending")
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def reply(self, text: str) -> None:
        """Queue a response, then the snapshots its subscribe calls made."""
        self.push(text)
        deferred, self.deferred = self.deferred, []
        for message in deferred:
            self.push(message)

    def drop(self, reason: str) -> None:
        """Forget the subscriptions and end the connection with ``reason``."""
        if self.dropped is not None:
            return
        self.dropped = reason
        log.warning("dropping WebSocket subscriber: %s", reason)
        if self.hub is not None:
            self.hub.disconnect(self)
        self.stop.cancel()
        if self.nursery is not None:
            self.nursery.start_soon(self._abort_after, ABORT_AFTER)

    async def _abort_after(self, delay: float) -> None:
        """A consumer that does not read leaves the server's send blocked (and
        hypercorn shields it from cancellation): after ``delay`` seconds shut
        the TCP socket down, which fails that send and ends the connection."""
        await trio.sleep(delay)
        if not self.finished and self.peer is not None:
            found = _shutdown_socket(*self.peer)
            log.debug("shut down the socket of a dropped subscriber %s: %s", self.peer, found)

    @contextmanager
    def context(self) -> Iterator[None]:
        """Make this the current connection while a frame is dispatched."""
        token = CONNECTION.set(self)
        try:
            yield
        finally:
            CONNECTION.reset(token)

    async def drain(self, send: Callable[[dict[str, Any]], Any]) -> None:
        """Send queued frames in order until cancelled or dropped (several
        short ones in one socket write); on a drop try to send a close frame
        with the reason (1 s at most). An empty text means: finish the frame
        ``push`` began (``SocketWriter.owed``)."""
        writer = self.writer
        with self.stop:
            async for text in self._receive:
                if writer is not None:
                    await writer.flush()
                texts = [text] if text else []
                while len(texts) < _BATCH:
                    try:
                        texts.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                short: list[bytes] = []
                for t in texts:
                    if writer is not None and len(t) <= DIRECT_MAX:
                        if t:
                            short.append(frame(t))
                        continue
                    if short:
                        await writer.write(b"".join(short))  # type: ignore[union-attr]
                        short = []
                    await send({"type": "websocket.send", "text": t})
                if short:
                    await writer.write(b"".join(short))  # type: ignore[union-attr]
                self.queued -= len(texts) + (not text)
        if self.dropped is not None:
            with trio.move_on_after(1.0):
                await send({"type": "websocket.close", "code": CLOSE_POLICY,
                            "reason": self.dropped[:120]})


def _shutdown_socket(client: Any, server: Any) -> bool:
    """shutdown(2) this process's TCP socket from ``server`` to ``client``
    (ASGI scope addresses); True if found. Used only to drop a consumer."""
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    want_peer = (client[0], int(client[1])) if client else None
    want_local = (server[0], int(server[1])) if server else None
    for name in os.listdir(fd_dir):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET,
                                                                 socket.AF_INET6):
                continue
            if (s.getpeername()[:2] == want_peer and s.getsockname()[:2] == want_local):
                s.shutdown(socket.SHUT_RDWR)
                return True
        except OSError:
            continue
        finally:
            s.close()
    return False


@asynccontextmanager
async def ws_connection(
    hub: StreamHub | None, send: Callable[[dict[str, Any]], Any],
    scope: dict[str, Any] | None = None,
) -> AsyncIterator[Connection]:
    """Run a connection's sender task around the body (the frame reader,
    which skips frames once ``conn.dropped`` is set). On exit the
    connection's subscriptions are removed."""
    peer = (scope.get("client"), scope.get("server")) if scope else None
    conn = hub.connect(peer) if hub is not None else Connection(None, DEFAULT_BUFFER)
    conn.writer = SocketWriter.attach(send)
    async with trio.open_nursery() as nursery:
        conn.nursery = nursery

        # after a drop the body keeps reading (and ignoring) frames until the
        # disconnect: a body that stopped receiving would leave hypercorn's
        # reader blocked on the app queue, and the socket would never close
        nursery.start_soon(conn.drain, send)
        try:
            yield conn
        finally:
            conn.finished = True
            if hub is not None:
                hub.disconnect(conn)
            conn.stop.cancel()
            nursery.cancel_scope.cancel()


@dataclass(eq=False)
class Subscription:
    """One subscription: ``key`` selects the channel's data (channel name
    first), ``seq`` the next sequence number."""

    id: str
    conn: Connection
    key: tuple[Any, ...]
    label: Any  # the envelope's "id"
    geth: bool = False
    seq: int = 0
    # the notification's fixed text: up to the envelope's "type" value, then to "seq"'s
    _prefix: str = field(default="", init=False, repr=False)
    _middle: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.geth:
            self._prefix = ('{"jsonrpc":"2.0","method":"eth_subscription","params":'
                            '{"subscription":' + json.dumps(self.id) + ',"result":')
        else:
            self._prefix = ('{"jsonrpc":"2.0","method":"l2_subscription","params":'
                            '{"subscription":' + json.dumps(self.id) + ',"result":'
                            '{"subscription":' + json.dumps(self.id) + ',"type":')
            self._middle = (',"channel":' + json.dumps(self.key[0]) + ',"id":'
                            + json.dumps(self.label, separators=_COMPACT) + ',"seq":"')

    def envelope(self, kind: str, block: int, contents_json: str) -> str:
        """The encoded notification (contents already encoded once per block;
        the parts fixed for the subscription encoded once at subscribe)."""
        if self.geth:
            return self._prefix + contents_json + "}}"
        seq, self.seq = self.seq, self.seq + 1
        return (self._prefix + '"' + kind + '"' + self._middle + hexq(seq) + '","block":"'
                + hexq(block) + '","contents":' + contents_json + "}}}")


# -- per-block facts ---------------------------------------------------------
@dataclass
class _BlockFacts:
    """What a sealed block did, decoded once: fills (JSON as in l2_getFill),
    deposits and withdrawals (with ids), touched accounts."""

    fills: list[dict[str, Any]] = field(default_factory=list)
    deposits: list[dict[str, Any]] = field(default_factory=list)
    withdrawals: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[str, list[str]] = field(default_factory=dict)  # address -> tx hashes


Levels = dict[int, tuple[int, int]]  # price -> (size, orders)


def _by_value(quantity: str) -> int:
    """Sort key of a hex quantity (as a number: "0x2" before "0x10")."""
    return int(quantity, 16)


def _level_diff(old: Levels, new: Levels) -> list[list[Any]]:
    out = [[str(p), str(s), hexq(c)] for p, (s, c) in new.items() if old.get(p) != (s, c)]
    out += [[str(p), "0", "0x0"] for p in old if p not in new]
    return out


class StreamHub:
    """Every subscription of one node and the state needed to compute deltas."""

    def __init__(self, node: Node, bound: int | None = None) -> None:
        self.node = node
        self.bound = bound if bound is not None else _buffer_bound()
        self.subs: dict[tuple[Any, ...], dict[str, Subscription]] = {}
        self.books: dict[tuple[int, int], tuple[Levels, Levels]] = {}  # last published
        self.trades: dict[int, deque[dict[str, Any]]] = {}
        self.candles: dict[tuple[int, str], deque[dict[str, Any]]] = {}
        self.markets: dict[int, dict[str, Any]] = {}
        self.pending_finality: dict[int, _BlockFacts] = {}  # block -> facts, until finalized
        self.safe = node.chain.safe_head
        self.finalized = node.finalized_head()
        self.published = 0  # notifications queued (all subscriptions)

    # -- connections ------------------------------------------------------
    def connect(self, peer: tuple[Any, Any] | None = None) -> Connection:
        return Connection(self, self.bound, peer)

    def disconnect(self, conn: Connection) -> None:
        for sub in list(conn.subscriptions.values()):
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        sub.conn.subscriptions.pop(sub.id, None)
        group = self.subs.get(sub.key)
        if group is not None:
            group.pop(sub.id, None)
            if not group:
                del self.subs[sub.key]
                if sub.key[0] == "orderbook":
                    self.books.pop(sub.key[1:], None)  # type: ignore[arg-type]
                elif sub.key[0] == "markets":
                    self.markets = {}

    # -- JSON-RPC methods ---------------------------------------------------
    def methods(self) -> dict[str, Callable[..., Any]]:
        """``l2_subscribe``, ``l2_unsubscribe``, ``eth_subscribe``,
        ``eth_unsubscribe`` (plain functions; node.rpc.methods wraps them)."""
        return {"l2_subscribe": self.l2_subscribe, "l2_unsubscribe": self.l2_unsubscribe,
                "eth_subscribe": self.eth_subscribe, "eth_unsubscribe": self.unsubscribe}

    @staticmethod
    def _connection(method: str) -> Connection:
        conn = CONNECTION.get()
        if conn is None:
            raise RpcError(NOT_SUPPORTED, f"NotificationsUnsupported: {method} needs a "
                           "WebSocket connection (ws://host:port), not HTTP")
        return conn

    def l2_subscribe(self, channel: Any = None, params: Any = None) -> str:
        """Subscribe to ``channel`` with ``params`` (object); returns the
        subscription id (0x + 32 hex). The snapshot (seq 0) follows the
        response. Errors: -32601 over HTTP; -32602 UnknownChannel, a params
        member the channel does not take (CHANNEL_PARAMS), bad
        depth/resolution/address, TooManySubscriptions; -32003 UnknownMarket."""
        conn = self._connection("l2_subscribe")
        if channel not in CHANNELS:
            raise bad_params(f"UnknownChannel: expected one of {', '.join(CHANNELS)}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise bad_params("params: expected an object")
        allowed = CHANNEL_PARAMS[channel]
        unknown = sorted(k for k in params if k not in allowed)
        if unknown:
            raise bad_params(f"{unknown[0][:64]}: unknown field (channel {channel} takes "
                             f"{', '.join(allowed) or 'none'})")
        key, label = self._key(channel, params)
        sub = self._add(conn, key, label, geth=False)
        conn.deferred.append(sub.envelope("snapshot", self.node.chain.head.number,
                                          json.dumps(self._snapshot(key), separators=_COMPACT)))
        return sub.id

    def eth_subscribe(self, kind: Any = None, *rest: Any) -> str:
        """geth's ``eth_subscribe``: only ``newHeads`` (one header per sealed
        L2 block, no snapshot). Errors: -32601 over HTTP, -32602 other kinds."""
        conn = self._connection("eth_subscribe")
        if kind != "newHeads":
            raise bad_params(f"UnknownSubscription: {str(kind)[:64]!r} is not supported "
                             "(newHeads is)")
        if rest:
            raise bad_params("params: newHeads takes no parameters")
        return self._add(conn, ("newHeads",), None, geth=True).id

    def l2_unsubscribe(self, sub_id: Any = None) -> bool:
        return self.unsubscribe(sub_id)

    def unsubscribe(self, sub_id: Any = None) -> bool:
        """Cancel one of this connection's subscriptions; False if unknown."""
        conn = self._connection("unsubscribe")
        sub = conn.subscriptions.get(sub_id) if isinstance(sub_id, str) else None
        if sub is None:
            return False
        self._remove(sub)
        return True

    def _add(self, conn: Connection, key: tuple[Any, ...], label: Any, geth: bool) -> Subscription:
        if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise bad_params(f"TooManySubscriptions: at most {MAX_SUBSCRIPTIONS} per connection")
        sub = Subscription("0x" + secrets.token_hex(16), conn, key, label, geth)
        conn.subscriptions[sub.id] = sub
        self.subs.setdefault(key, {})[sub.id] = sub
        return sub

    def _market(self, params: dict[str, Any]) -> tuple[int, str]:
        if "market" not in params:
            raise bad_params("missing field market")
        mid = self.node.api._market_id(params["market"])
        if mid not in self.node.chain.state.markets:
            raise unknown_market(f"market {mid} is not listed")
        symbol = self.node.api._symbol(mid)
        return mid, symbol or f"#{mid}"

    def _key(self, channel: str, params: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
        if channel == "orderbook":
            mid, symbol = self._market(params)
            depth = parse_int(params.get("depth", 20), "depth")
            if not 1 <= depth <= 1000:
                raise bad_params("depth: expected 1..1000")
            return ("orderbook", mid, depth), symbol
        if channel == "trades":
            mid, symbol = self._market(params)
            return ("trades", mid), symbol
        if channel == "candles":
            mid, symbol = self._market(params)
            res = params.get("resolution", "1m")
            if not isinstance(res, str) or res not in RESOLUTIONS:
                raise bad_params("resolution: expected 1m, 5m or 1h")
            return ("candles", mid, res), symbol
        if channel == "account":
            addr = hexb(parse_address(params.get("address"), "address"))
            return ("account", addr), addr
        return (channel,), None

    # -- snapshots ----------------------------------------------------------
    def _heads(self) -> dict[str, str]:
        return {"unsafe": hexq(self.node.chain.head.number), "safe": hexq(self.safe),
                "finalized": hexq(self.finalized)}

    def _book_view(self, market: int, depth: int) -> tuple[Levels, Levels]:
        book = self.node.sequencer.books.get(market)
        if book is None:
            return {}, {}
        bids, asks = book.depth(depth)
        return ({p: (s, c) for p, s, c in bids}, {p: (s, c) for p, s, c in asks})

    def _snapshot(self, key: tuple[Any, ...]) -> dict[str, Any]:
        channel = key[0]
        if channel == "orderbook":
            view = self.books.get(key[1:])  # type: ignore[arg-type]
            if view is None:
                view = self.books[key[1:]] = self._book_view(key[1], key[2])  # type: ignore[index]
            bids, asks = view
            return {"market": hexq(key[1]),
                    "bids": [[str(p), str(s), hexq(c)] for p, (s, c) in sorted(bids.items(), reverse=True)],
                    "asks": [[str(p), str(s), hexq(c)] for p, (s, c) in sorted(asks.items())]}
        if channel == "trades":
            return {"market": hexq(key[1]), "trades": list(self.trades.get(key[1], ()))}
        if channel == "candles":
            return {"market": hexq(key[1]), "resolution": key[2],
                    "candles": list(self.candles.get((key[1], key[2]), ()))}
        if channel == "markets":
            if not self.markets:  # else the last published state, as deltas follow it
                self.markets = {m["id"]: m for m in self.node.api.l2_getMarkets("pending")}
            return {"markets": [self.markets[i] for i in sorted(self.markets, key=_by_value)]}
        if channel == "account":
            return self._account_contents(key[1], None, "unsafe")
        head = self.node.chain.head
        return {"event": "snapshot", "block": self._block_summary(head, None),
                "heads": self._heads()}

    def _account_contents(
        self, address: str, facts: _BlockFacts | None, status: str
    ) -> dict[str, Any]:
        state = self.node.chain.state
        raw = bytes.fromhex(address[2:])
        out: dict[str, Any] = {
            "event": "snapshot" if facts is None else "block",
            "status": status,
            "account": account_json(state, raw, state.account(raw), self.node.api._symbol),
        }
        if facts is not None:
            out["fills"] = [f for f in facts.fills
                            if address in (f["maker"]["account"], f["taker"]["account"])]
            out["deposits"] = [d for d in facts.deposits if d["account"] == address]
            out["withdrawals"] = [w for w in facts.withdrawals if w["account"] == address]
        return out

    def _block_summary(self, block: Block, sealed_at: int | None) -> dict[str, Any]:
        h = block.header
        fills = sum(1 for t, r in zip(block.txs, block.receipts, strict=True)
                    if r.success and t[0] in (0x02, 0x07, 0x08))
        return {"number": hexq(h.number), "hash": hexb(block.hash),
                "parentHash": hexb(h.parent_hash), "timestamp": hexq(h.timestamp),
                "l1Origin": hexq(h.l1_origin), "stateRoot": hexb(h.state_root),
                "transactions": hexq(len(block.txs)), "fills": hexq(fills),
                "status": self.node.block_status(h.number), "sealedAt": hexq_or_none(sealed_at)}

    # -- publishing -----------------------------------------------------------
    def _publish(self, key: tuple[Any, ...], kind: str, block: int, contents: Any) -> None:
        group = self.subs.get(key)
        if not group:
            return
        text = contents if isinstance(contents, str) else json.dumps(contents, separators=_COMPACT)
        for sub in list(group.values()):
            if sub.conn.push(sub.envelope(kind, block, text)):
                self.published += 1

    def on_block(self, block: Block) -> None:
        """Sequencer.on_block: publish every channel's update for ``block``
        (synchronous, never waits on a socket)."""
        if not self.subs:
            return
        sealed_at = int(time.time() * 1000)
        number = block.number
        # heads first: they need nothing decoded, so their delay after the seal is
        # the sending alone
        if ("newHeads",) in self.subs:
            self._publish(("newHeads",), "update", number, self._header(block, sealed_at))
        if ("blocks",) in self.subs:
            self._publish(("blocks",), "update", number,
                          {"event": "block", "block": self._block_summary(block, sealed_at),
                           "heads": self._heads()})
        needs_facts = any(k[0] in ("trades", "candles", "account") for k in self.subs)
        facts = self._facts(block) if needs_facts else _BlockFacts()
        self._publish_books(number, True)
        for key in list(self.subs):
            channel = key[0]
            if channel == "trades":
                market = hexq(key[1])
                trades = [self._trade(f, block) for f in facts.fills if f["market"] == market]
                recent = self.trades.setdefault(key[1], deque(maxlen=RECENT_TRADES))
                recent.extend(trades)
                if trades:
                    self._publish(key, "update", number, {"market": market, "trades": trades})
            elif channel == "candles":
                changed = self._candles(key[1], key[2], block, facts)
                if changed:
                    self._publish(key, "update", number, {"market": hexq(key[1]),
                                                          "resolution": key[2],
                                                          "candles": changed})
            elif channel == "account" and key[1] in facts.accounts:
                self._publish(key, "update", number,
                              self._account_contents(key[1], facts, "unsafe"))
            elif channel == "markets":
                self._publish_markets(number)
        if any(k[0] == "account" for k in self.subs) and facts.accounts:
            self.pending_finality[number] = facts

    def tick(self) -> None:
        """Block-builder tick: publish book changes that happened without a
        block (resting orders, cancels) and safe / finalized head moves."""
        if not self.subs:
            self.safe, self.finalized = self.node.chain.safe_head, self.node.finalized_head()
            self.pending_finality.clear()
            return
        self._publish_books(self.node.chain.head.number, False)
        self._publish_finality()

    def _publish_books(self, number: int, new_block: bool) -> None:
        """One update per orderbook view per sealed block (empty if nothing
        changed), and between blocks only when the view changed."""
        for (market, depth), (old_bids, old_asks) in list(self.books.items()):
            bids, asks = self._book_view(market, depth)
            db, da = _level_diff(old_bids, bids), _level_diff(old_asks, asks)
            self.books[(market, depth)] = (bids, asks)
            if db or da or new_block:
                self._publish(("orderbook", market, depth), "update", number,
                              {"market": hexq(market), "bids": db, "asks": da})

    def _publish_markets(self, number: int) -> None:
        changed = []
        for m in self.node.api.l2_getMarkets("pending"):
            old = self.markets.get(m["id"])
            if old == m:
                continue
            diff = {k: v for k, v in m.items() if old is None or old.get(k) != v}
            changed.append({"id": m["id"], "symbol": m["symbol"], **diff})
            self.markets[m["id"]] = m
        if changed:
            self._publish(("markets",), "update", number, {"markets": changed})

    def _publish_finality(self) -> None:
        safe, finalized = self.node.chain.safe_head, self.node.finalized_head()
        if (safe, finalized) == (self.safe, self.finalized):
            return
        moves = []
        if safe > self.safe:
            moves.append(("safe", self.safe + 1, safe))
        if finalized > self.finalized:
            moves.append(("finalized", self.finalized + 1, finalized))
        self.safe, self.finalized = max(safe, self.safe), max(finalized, self.finalized)
        head = self.node.chain.head.number
        self._publish(("blocks",), "update", head,
                      {"event": "finality", "heads": self._heads(),
                       "moves": [{"status": s, "fromBlock": hexq(a), "toBlock": hexq(b)}
                                 for s, a, b in moves]})
        for status, first, last in moves:
            blocks = sorted(n for n in self.pending_finality if first <= n <= last)
            for key in [k for k in self.subs if k[0] == "account"]:
                address = key[1]
                touched = [n for n in blocks if address in self.pending_finality[n].accounts]
                if not touched:
                    continue
                self._publish(key, "update", head, {
                    "event": "finality", "status": status,
                    "fromBlock": hexq(first), "toBlock": hexq(last),
                    "blocks": [hexq(n) for n in touched],
                    "transactions": [h for n in touched
                                     for h in self.pending_finality[n].accounts[address]]})
        for n in [n for n in self.pending_finality if n <= self.finalized]:
            del self.pending_finality[n]

    # -- per-block computations --------------------------------------------
    def _facts(self, block: Block) -> _BlockFacts:
        from node.eip712 import order_hash
        from node.transactions import tx_hash

        domain = self.node.chain.domain
        facts = _BlockFacts()
        next_withdrawal = self.node.chain.state.system.withdrawal_count
        decoded = []
        for raw, receipt in zip(block.txs, block.receipts, strict=True):
            if receipt.success:
                decoded.append((raw, decode_tx(raw)))
        n_withdraws = sum(1 for _, tx in decoded if isinstance(tx, Withdraw))
        wid = next_withdrawal - n_withdraws  # ids of this block's withdrawals
        for raw, tx in decoded:
            h = hexb(tx_hash(raw))
            if isinstance(tx, Fill):
                fill = {
                    "txHash": h, "type": "Fill", "fillType": LIMIT_FILL,
                    "market": hexq(tx.maker.market),
                    "price": str(tx.price), "size": str(tx.size),
                    "takerSide": "buy" if tx.taker.is_buy else "sell",
                    "maker": {"account": hexb(tx.maker.account),
                              "orderHash": hexb(order_hash(domain, tx.maker))},
                    "taker": {"account": hexb(tx.taker.account),
                              "orderHash": hexb(order_hash(domain, tx.taker))},
                    "blockNumber": hexq(block.number), "timestamp": hexq(block.header.timestamp),
                }
                facts.fills.append(fill)
                for who in (fill["maker"]["account"], fill["taker"]["account"]):
                    facts.accounts.setdefault(who, []).append(h)
            elif isinstance(tx, Liquidate | Deleverage):
                fill = _risk_fill(h, tx, domain, block)
                facts.fills.append(fill)
                for who in (fill["maker"]["account"], fill["taker"]["account"]):
                    facts.accounts.setdefault(who, []).append(h)
            elif isinstance(tx, Deposit):
                who = hexb(tx.account)
                facts.deposits.append({"txHash": h, "index": hexq(tx.index), "account": who,
                                       "amount": str(tx.amount),
                                       "blockNumber": hexq(block.number)})
                facts.accounts.setdefault(who, []).append(h)
            elif isinstance(tx, Withdraw):
                who = hexb(tx.account)
                facts.withdrawals.append({"txHash": h, "id": hexq(wid), "account": who,
                                          "recipient": hexb(tx.recipient),
                                          "amount": str(tx.amount),
                                          "blockNumber": hexq(block.number)})
                wid += 1
                facts.accounts.setdefault(who, []).append(h)
        return facts

    @staticmethod
    def _trade(fill: dict[str, Any], block: Block) -> dict[str, Any]:
        return {"txHash": fill["txHash"], "type": fill["type"], "fillType": fill["fillType"],
                "price": fill["price"],
                "size": fill["size"], "takerSide": fill["takerSide"],
                "makerOrderHash": fill["maker"].get("orderHash"),
                "takerOrderHash": fill["taker"].get("orderHash"),
                "blockNumber": fill["blockNumber"], "timestamp": fill["timestamp"]}

    def _candles(self, market: int, res: str, block: Block,
                 facts: _BlockFacts) -> list[dict[str, Any]]:
        market_hex = hexq(market)
        fills = [f for f in facts.fills if f["market"] == market_hex and f["price"] is not None]
        if not fills:
            return []
        seconds = RESOLUTIONS[res]
        start = block.header.timestamp - block.header.timestamp % seconds
        history = self.candles.setdefault((market, res), deque(maxlen=RECENT_CANDLES))
        candle = history[-1] if history and history[-1]["start"] == hexq(start) else None
        for f in fills:
            price, size = int(f["price"]), int(f["size"])
            if candle is None:
                candle = {"start": hexq(start), "resolution": res, "open": f["price"],
                          "high": f["price"], "low": f["price"], "close": f["price"],
                          "volume": "0", "trades": "0x0"}
                history.append(candle)
            candle["high"] = str(max(int(candle["high"]), price))
            candle["low"] = str(min(int(candle["low"]), price))
            candle["close"] = f["price"]
            candle["volume"] = str(int(candle["volume"]) + size)
        if candle is None:
            return []
        candle["trades"] = hexq(int(candle["trades"], 16) + len(fills))  # one block, one candle
        return [dict(candle)]

    def _header(self, block: Block, sealed_at: int) -> dict[str, Any]:
        """geth's newHeads header shape (fields without an L2 meaning zeroed)."""
        h = block.header
        return {
            "number": hexq(h.number), "hash": hexb(block.hash), "parentHash": hexb(h.parent_hash),
            "timestamp": hexq(h.timestamp), "stateRoot": hexb(h.state_root),
            "transactionsRoot": hexb(h.tx_root), "receiptsRoot": hexb(h.receipts_root),
            "sha3Uncles": "0x" + "00" * 32, "miner": hexb(self.node.genesis.sequencer),
            "logsBloom": "0x" + "00" * 256, "difficulty": "0x0", "gasLimit": "0x0",
            "gasUsed": "0x0", "extraData": "0x", "mixHash": "0x" + "00" * 32,
            "nonce": "0x0000000000000000", "l1Origin": hexq(h.l1_origin),
            "sealedAt": hexq(sealed_at),
        }
