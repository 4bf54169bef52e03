"""Price-time priority limit order book of one market (the sequencer's matching engine).

Each side keeps its price levels in a ``SortedList`` (O(log n) insert and
delete, O(1) best price) and a dict from price to a FIFO level, an
``OrderedDict`` from order hash to ``RestingOrder`` (O(1) append, pop from
the front and cancel from the middle). A taker matches the opposite side
while prices cross, best price first and first in, first out within a
level, always at the maker's price, as on Binance, dYdX or Hyperliquid.

Prices are the market's price units and sizes its size units (both u64,
docs/protocol.md "Transactions"); ``now`` is unix seconds and an order is
live while ``now < order.expiry`` (docs/protocol.md "EIP-712").

The book only orders orders. The caller (the sequencer) checks the taker's
signature, expiry, tick and step sizes and margin; it may veto single
matches through the ``accept`` predicate of ``OrderBook.match``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from node.transactions import Fill, Order

TimeInForce = Literal["GTC", "IOC", "POST_ONLY"]
TIME_IN_FORCE: frozenset[str] = frozenset(("GTC", "IOC", "POST_ONLY"))

RemoveReason = Literal["expired", "self_trade", "rejected"]
"""Why ``match`` took a maker out of the book without filling it:
``expired`` (``expiry <= now``), ``self_trade`` (same account as the taker,
"expire maker" self-trade prevention) or ``rejected`` (the ``accept``
predicate said no)."""

Accept = Callable[["RestingOrder", int], bool]


class BookError(Exception):
    """Base of the order book's errors; the book is unchanged when one is raised."""


class WouldCross(BookError):
    """A POST_ONLY order (or ``add_resting``) would trade against a live resting order."""


class DuplicateOrder(BookError):
    """An order with this hash is already resting in the book."""


class UnknownTimeInForce(BookError):
    """``time_in_force`` is not one of GTC, IOC, POST_ONLY."""


class StopMatching(Exception):
    """Raised by an ``accept`` predicate to end matching for this taker: the
    matches accepted so far are applied and the taker's remainder is dropped
    (as with IOC), e.g. when the taker itself can no longer afford a fill."""


class WrongMarket(BookError):
    """The order's market is not the book's market."""


class InvalidSize(BookError):
    """A remaining size or reduction outside ``1..order.size`` / ``1..remaining``."""


@dataclass(slots=True, eq=False)
class RestingOrder:
    """An order in the book.

    order_hash: 32-byte EIP-712 digest; signature: 65 bytes ``r || s || v``;
    remaining: unfilled size in size units (``0 < remaining <= order.size``);
    sequence: arrival number, lower is earlier (time priority in a level).
    Mutated only by the book; do not change ``remaining`` directly, use
    ``OrderBook.reduce``.
    """

    order: Order
    signature: bytes
    order_hash: bytes
    remaining: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Match:
    """One trade of a taker against a resting maker.

    size: traded size (size units); price: the maker's limit price (price
    units), which the STF requires as the fill price; maker_remaining: the
    maker's remaining size after this match (0 means it left the book).
    """

    maker_order: Order
    maker_signature: bytes
    maker_hash: bytes
    size: int
    price: int
    maker_remaining: int

    def fill(self, taker: Order, taker_signature: bytes) -> Fill:
        """The ``Fill`` transaction of this match for ``taker``."""
        return Fill(
            maker=self.maker_order,
            maker_signature=self.maker_signature,
            taker=taker,
            taker_signature=taker_signature,
            size=self.size,
            price=self.price,
        )


class _Side:
    """One side of the book: sorted prices and a FIFO level per price."""

    __slots__ = ("is_bid", "levels", "prices")

    def __init__(self, is_bid: bool) -> None:
        self.prices: SortedList = SortedList()
        # price -> order hash -> RestingOrder, in time priority
        self.levels: dict[int, OrderedDict[bytes, RestingOrder]] = {}
        self.is_bid = is_bid

    def best(self) -> int | None:
        prices = self.prices
        if not prices:
            return None
        best: int = prices[-1] if self.is_bid else prices[0]
        return best

    def best_first(self) -> Iterator[int]:
        return reversed(self.prices) if self.is_bid else iter(self.prices)

    def insert(self, ro: RestingOrder) -> None:
        price = ro.order.price
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = OrderedDict()
            self.prices.add(price)
        level[ro.order_hash] = ro

    def insert_in_time_order(self, ro: RestingOrder) -> None:
        """Insert ``ro`` at its ``sequence`` place in its level (restores)."""
        level = self.levels.get(ro.order.price)
        if not level or next(reversed(level.values())).sequence < ro.sequence:
            self.insert(ro)
            return
        ordered = sorted([*level.values(), ro], key=lambda r: r.sequence)
        level.clear()
        for r in ordered:
            level[r.order_hash] = r

    def remove(self, ro: RestingOrder) -> None:
        price = ro.order.price
        level = self.levels[price]
        del level[ro.order_hash]
        if not level:
            del self.levels[price]
            self.prices.remove(price)

    def depth(self, levels: int) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        for price in self.best_first():
            if len(out) == levels:
                break
            level = self.levels[price]
            out.append((price, sum(ro.remaining for ro in level.values()), len(level)))
        return out


class OrderBook:
    """The limit order book of one market.

    Invariants between calls: every resting order is in exactly one level
    of its side and in the hash index; no level is empty; the book is not
    crossed (best bid < best ask), counting expired orders not yet removed.
    """

    def __init__(self, market: int) -> None:
        self.market = market
        self._bids = _Side(is_bid=True)
        self._asks = _Side(is_bid=False)
        self._orders: dict[bytes, RestingOrder] = {}
        self._by_account: dict[bytes, dict[bytes, RestingOrder]] = {}
        # (expiry, sequence, order hash); entries of orders that already left are skipped.
        self._expiries: list[tuple[int, int, bytes]] = []
        self._next_sequence = 0

    # -- queries -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_hash: object) -> bool:
        return order_hash in self._orders

    def get(self, order_hash: bytes) -> RestingOrder | None:
        """The resting order with this hash, or None."""
        return self._orders.get(order_hash)

    def orders_of(self, account: bytes) -> list[RestingOrder]:
        """Resting orders of ``account`` (20 bytes), in arrival order."""
        orders = self._by_account.get(account)
        if not orders:
            return []
        return sorted(orders.values(), key=lambda ro: ro.sequence)

    def best_bid(self) -> int | None:
        """Highest bid price (price units), or None; may be an expired order's."""
        return self._bids.best()

    def best_ask(self) -> int | None:
        """Lowest ask price (price units), or None; may be an expired order's."""
        return self._asks.best()

    def depth(self, levels: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """``(bids, asks)``, each the best ``levels`` levels, best first, as
        ``(price, total remaining size, order count)``. Expired orders not yet
        removed are counted; call ``remove_expired`` first for a clean view.
        Raises ValueError if ``levels`` is negative."""
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        return self._bids.depth(levels), self._asks.depth(levels)

    def __iter__(self) -> Iterator[RestingOrder]:
        """All resting orders: bids best first, then asks best first, FIFO in a level."""
        for side in (self._bids, self._asks):
            for price in side.best_first():
                yield from side.levels[price].values()

    # -- changes -----------------------------------------------------------

    def match(
        self,
        order: Order,
        signature: bytes,
        order_hash: bytes,
        remaining: int,
        now: int,
        time_in_force: str = "GTC",
        accept: Accept | None = None,
        removed: list[tuple[RestingOrder, RemoveReason]] | None = None,
    ) -> list[Match]:
        """Match the taker ``order`` (``remaining`` size units still open) against the book.

        Makers are taken while prices cross (buy price >= ask, sell price <=
        bid), best price first, FIFO within a level; each match is at the
        maker's price. Along the way a maker is removed instead of matched if
        it expired (``expiry <= now``), belongs to the taker's account
        (self-trade prevention, "expire maker"), or ``accept`` rejects it.
        With GTC the unfilled remainder then rests (new sequence number);
        with IOC it is dropped; a POST_ONLY order rests if no live maker
        crosses it and otherwise raises ``WouldCross``.

        accept(maker, size) is called once per candidate match, before
        anything changes, with the maker as it is and the size that would
        trade; False drops the maker from the book and moves on. It must
        not modify the book. The book is changed only after every candidate
        was decided, so if ``accept`` raises, the exception propagates and
        the book is unchanged, except for ``StopMatching``: then the
        decisions made so far are applied and the remainder is dropped.

        removed: if given, ``(maker, reason)`` is appended for each maker
        taken out without a match, in book order.

        Returns the matches in execution order (maker snapshots, so later
        changes to the book do not alter them).

        Raises WrongMarket, InvalidSize (``remaining`` not in
        ``1..order.size``), UnknownTimeInForce, DuplicateOrder (the hash is
        already resting) and WouldCross, all before any change.
        """
        if order.market != self.market:
            raise WrongMarket(f"order for market {order.market} in book {self.market}")
        if not 0 < remaining <= order.size:
            raise InvalidSize(f"remaining {remaining} not in 1..{order.size}")
        if time_in_force not in TIME_IN_FORCE:
            raise UnknownTimeInForce(time_in_force)
        if order_hash in self._orders:
            raise DuplicateOrder(order_hash.hex())

        opposite = self._asks if order.is_buy else self._bids
        best = opposite.best()
        plan: list[tuple[RestingOrder, int, RemoveReason | None]] = []
        stopped = False
        if best is not None and (order.price >= best if order.is_buy else order.price <= best):
            try:
                left = self._plan(
                    plan, opposite, order, remaining, now, accept, time_in_force == "POST_ONLY"
                )
            except StopMatching:
                stopped = True
                left = remaining - sum(size for _, size, reason in plan if reason is None)
        else:
            left = remaining

        matches: list[Match] = []
        for ro, size, reason in plan:
            if reason is None:
                after = ro.remaining - size
                matches.append(
                    Match(ro.order, ro.signature, ro.order_hash, size, ro.order.price, after)
                )
                if after:
                    ro.remaining = after
                else:
                    self._unlink(ro, opposite)
            else:
                self._unlink(ro, opposite)
                if removed is not None:
                    removed.append((ro, reason))

        if left and time_in_force != "IOC" and not stopped:
            self._link(
                RestingOrder(order, signature, order_hash, left, self._next_sequence),
                self._bids if order.is_buy else self._asks,
            )
            self._next_sequence += 1
        return matches

    def _plan(
        self,
        plan: list[tuple[RestingOrder, int, RemoveReason | None]],
        opposite: _Side,
        order: Order,
        remaining: int,
        now: int,
        accept: Accept | None,
        post_only: bool,
    ) -> int:
        """Decide, without changing the book, what ``match`` does with each
        crossing maker; append ``(maker, size, None)`` for a match or
        ``(maker, 0, reason)`` for a removal. Returns the taker's size left."""
        limit = order.price
        is_buy = order.is_buy
        account = order.account
        levels = opposite.levels
        for price in opposite.best_first():
            if price > limit if is_buy else price < limit:
                break
            for ro in levels[price].values():
                maker = ro.order
                if maker.expiry <= now:
                    plan.append((ro, 0, "expired"))
                    continue
                if post_only:
                    raise WouldCross(f"post-only order at {limit} crosses {price}")
                if maker.account == account:
                    plan.append((ro, 0, "self_trade"))
                    continue
                size = min(remaining, ro.remaining)
                if accept is not None and not accept(ro, size):
                    plan.append((ro, 0, "rejected"))
                    continue
                plan.append((ro, size, None))
                remaining -= size
                if not remaining:
                    return 0
        return remaining

    def add_resting(
        self,
        order: Order,
        signature: bytes,
        order_hash: bytes,
        remaining: int,
        sequence: int | None = None,
    ) -> RestingOrder:
        """Put an order in the book without matching (rebuilding after a restart).

        sequence: the order's saved arrival number, to keep its time priority
        (inserted at its place in the level, later arrivals number above
        all restored ones); None gives it the next number.

        Raises WrongMarket, InvalidSize, DuplicateOrder, or WouldCross if it
        would cross the opposite side (expired orders included, which a
        consistent saved book never does).
        """
        if order.market != self.market:
            raise WrongMarket(f"order for market {order.market} in book {self.market}")
        if not 0 < remaining <= order.size:
            raise InvalidSize(f"remaining {remaining} not in 1..{order.size}")
        if order_hash in self._orders:
            raise DuplicateOrder(order_hash.hex())
        opposite = self._asks if order.is_buy else self._bids
        best = opposite.best()
        if best is not None and (order.price >= best if order.is_buy else order.price <= best):
            raise WouldCross(f"resting order at {order.price} crosses {best}")
        if sequence is None:
            sequence = self._next_sequence
        self._next_sequence = max(self._next_sequence, sequence + 1)
        ro = RestingOrder(order, signature, order_hash, remaining, sequence)
        self._link(ro, self._bids if order.is_buy else self._asks, in_time_order=True)
        return ro

    def cancel(self, order_hash: bytes) -> RestingOrder | None:
        """Remove the order with this hash; returns it, or None if it is not resting."""
        ro = self._orders.get(order_hash)
        if ro is not None:
            self._unlink(ro, self._bids if ro.order.is_buy else self._asks)
        return ro

    def reduce(self, order_hash: bytes, size: int) -> RestingOrder | None:
        """Lower the remaining size of a resting order by ``size`` size units,
        keeping its time priority; at 0 the order leaves the book.

        Returns the order (with its new ``remaining``), or None if it is not
        resting. Raises InvalidSize unless ``0 < size <= remaining``.
        """
        ro = self._orders.get(order_hash)
        if ro is None:
            return None
        if not 0 < size <= ro.remaining:
            raise InvalidSize(f"reduce by {size} not in 1..{ro.remaining}")
        ro.remaining -= size
        if not ro.remaining:
            self._unlink(ro, self._bids if ro.order.is_buy else self._asks)
        return ro

    def remove_expired(self, now: int) -> list[RestingOrder]:
        """Remove every order with ``expiry <= now``; returns them by expiry,
        then arrival. O(k log n) for k removed orders."""
        out: list[RestingOrder] = []
        heap = self._expiries
        orders = self._orders
        while heap and heap[0][0] <= now:
            _, sequence, order_hash = heapq.heappop(heap)
            ro = orders.get(order_hash)
            if ro is not None and ro.sequence == sequence:
                self._unlink(ro, self._bids if ro.order.is_buy else self._asks)
                out.append(ro)
        return out

    # -- internals ---------------------------------------------------------

    def _link(self, ro: RestingOrder, side: _Side, in_time_order: bool = False) -> None:
        if in_time_order:
            side.insert_in_time_order(ro)
        else:
            side.insert(ro)
        order_hash = ro.order_hash
        self._orders[order_hash] = ro
        account = ro.order.account
        mine = self._by_account.get(account)
        if mine is None:
            self._by_account[account] = {order_hash: ro}
        else:
            mine[order_hash] = ro
        heap = self._expiries
        heapq.heappush(heap, (ro.order.expiry, ro.sequence, order_hash))
        if len(heap) > 64 and len(heap) > 2 * len(self._orders):
            self._compact_expiries()

    def _unlink(self, ro: RestingOrder, side: _Side) -> None:
        side.remove(ro)
        order_hash = ro.order_hash
        del self._orders[order_hash]
        account = ro.order.account
        mine = self._by_account[account]
        del mine[order_hash]
        if not mine:
            del self._by_account[account]

    def _compact_expiries(self) -> None:
        """Drop heap entries of orders that left the book (amortised O(1) per order)."""
        self._expiries = [(ro.order.expiry, ro.sequence, h) for h, ro in self._orders.items()]
        heapq.heapify(self._expiries)

    def side_orders(self, is_bid: bool) -> Iterator[RestingOrder]:
        """One side's resting orders, best price first, FIFO in a level
        (expired ones included). Lazy: do not change the book while
        iterating (take a ``list`` first)."""
        side = self._bids if is_bid else self._asks
        for price in side.best_first():
            yield from side.levels[price].values()

    def live_levels(self, is_bid: bool, now: int) -> Iterator[tuple[int, int]]:
        """One side's levels, best first, as ``(price, remaining size)``
        summed over the orders live at ``now`` (``now < expiry``); levels
        with no live order are skipped. Lazy: a reader that stops early
        walks only the levels it read (the funding premium's impact price)."""
        side = self._bids if is_bid else self._asks
        for price in side.best_first():
            size = sum(ro.remaining for ro in side.levels[price].values() if now < ro.order.expiry)
            if size:
                yield price, size
