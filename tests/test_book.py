"""Tests of the sequencer's order book (sequencer/book.py).

Unit tests per rule, then a hypothesis state machine that holds the book
against a naive reference (a plain list sorted on every call).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from node.transactions import Fill, Order
from sequencer.book import (
    BookError,
    DuplicateOrder,
    InvalidSize,
    Match,
    OrderBook,
    RemoveReason,
    RestingOrder,
    UnknownTimeInForce,
    WouldCross,
    WrongMarket,
)

MARKET = 1
SIG = bytes(64) + b"\x1b"
ALICE = b"\xaa" * 20
BOB = b"\xbb" * 20
CAROL = b"\xcc" * 20
FAR = 10**9  # an expiry that never comes in these tests

_salt = 0


def order(
    account: bytes,
    is_buy: bool,
    price: int,
    size: int,
    expiry: int = FAR,
    market: int = MARKET,
) -> Order:
    global _salt
    _salt += 1
    return Order(account, market, is_buy, price, size, _salt, expiry)


def hash_of(o: Order) -> bytes:
    # Any 32 unique bytes do for the book; the real one is the EIP-712 digest.
    return hashlib.sha256(o.encode()).digest()


def place(book: OrderBook, o: Order, now: int = 0, tif: str = "GTC", **kw: object) -> list[Match]:
    return book.match(o, SIG, hash_of(o), o.size, now, tif, **kw)  # type: ignore[arg-type]


def rest(book: OrderBook, o: Order) -> bytes:
    assert place(book, o) == []
    return hash_of(o)


def snapshot(book: OrderBook) -> list[tuple[bytes, int, int]]:
    return [(ro.order_hash, ro.remaining, ro.sequence) for ro in book]


def trades(matches: list[Match]) -> list[tuple[bytes, int, int]]:
    return [(m.maker_hash, m.size, m.price) for m in matches]


# -- price and time priority -------------------------------------------------


def test_price_priority_best_ask_first_at_maker_price() -> None:
    book = OrderBook(MARKET)
    a103 = rest(book, order(ALICE, False, 103, 1))
    a101 = rest(book, order(ALICE, False, 101, 1))
    a102 = rest(book, order(ALICE, False, 102, 1))
    assert book.best_ask() == 101
    matches = place(book, order(BOB, True, 110, 3))
    assert trades(matches) == [(a101, 1, 101), (a102, 1, 102), (a103, 1, 103)]
    assert len(book) == 0


def test_price_priority_best_bid_first() -> None:
    book = OrderBook(MARKET)
    b98 = rest(book, order(ALICE, True, 98, 1))
    b100 = rest(book, order(ALICE, True, 100, 1))
    rest(book, order(ALICE, True, 97, 1))
    assert book.best_bid() == 100
    matches = place(book, order(BOB, False, 98, 5), tif="IOC")
    assert trades(matches) == [(b100, 1, 100), (b98, 1, 98)]
    assert book.best_bid() == 97


def test_time_priority_within_a_level() -> None:
    book = OrderBook(MARKET)
    first = rest(book, order(ALICE, False, 100, 2))
    second = rest(book, order(CAROL, False, 100, 2))
    matches = place(book, order(BOB, True, 100, 3))
    assert trades(matches) == [(first, 2, 100), (second, 1, 100)]
    assert matches[0].maker_remaining == 0
    assert matches[1].maker_remaining == 1
    remaining = book.get(second)
    assert remaining is not None and remaining.remaining == 1


def test_partial_fills_across_levels() -> None:
    book = OrderBook(MARKET)
    a100 = rest(book, order(ALICE, False, 100, 2))
    a101 = rest(book, order(ALICE, False, 101, 3))
    a102 = rest(book, order(ALICE, False, 102, 3))
    matches = place(book, order(BOB, True, 101, 4))
    assert trades(matches) == [(a100, 2, 100), (a101, 2, 101)]
    assert book.depth(5) == ([], [(101, 1, 1), (102, 3, 1)])
    assert book.get(a100) is None
    assert book.get(a102) is not None


def test_no_match_when_prices_do_not_cross() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 101, 1))
    assert place(book, order(BOB, True, 100, 1)) == []
    assert (book.best_bid(), book.best_ask()) == (100, 101)


# -- time in force -----------------------------------------------------------


def test_gtc_remainder_rests() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 100, 2))
    taker = order(BOB, True, 100, 5)
    assert len(place(book, taker)) == 1
    resting = book.get(hash_of(taker))
    assert resting is not None and resting.remaining == 3
    assert (book.best_bid(), book.best_ask()) == (100, None)


def test_ioc_remainder_dropped() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 100, 2))
    taker = order(BOB, True, 100, 5)
    assert len(place(book, taker, tif="IOC")) == 1
    assert len(book) == 0
    assert book.get(hash_of(taker)) is None


def test_post_only_rejected_when_crossing_leaves_book_unchanged() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 100, 2))
    rest(book, order(CAROL, False, 101, 2))
    rest(book, order(CAROL, True, 90, 2))
    before = (snapshot(book), book.depth(10))
    with pytest.raises(WouldCross):
        place(book, order(BOB, True, 100, 1), tif="POST_ONLY")
    # Even a self-crossing post-only order is rejected, not self-trade cancelled.
    with pytest.raises(WouldCross):
        place(book, order(ALICE, True, 100, 1), tif="POST_ONLY")
    assert (snapshot(book), book.depth(10)) == before


def test_post_only_rests_when_not_crossing() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 100, 2))
    maker = order(BOB, True, 99, 1)
    assert place(book, maker, tif="POST_ONLY") == []
    assert book.get(hash_of(maker)) is not None


def test_post_only_crossing_only_expired_orders_rests_and_removes_them() -> None:
    book = OrderBook(MARKET)
    stale = rest(book, order(ALICE, False, 100, 2, expiry=10))
    removed: list[tuple[RestingOrder, RemoveReason]] = []
    maker = order(BOB, True, 100, 1)
    assert place(book, maker, now=10, tif="POST_ONLY", removed=removed) == []
    assert [(ro.order_hash, why) for ro, why in removed] == [(stale, "expired")]
    assert (book.best_bid(), book.best_ask()) == (100, None)


def test_unknown_time_in_force() -> None:
    book = OrderBook(MARKET)
    with pytest.raises(UnknownTimeInForce):
        place(book, order(BOB, True, 100, 1), tif="FOK")
    assert len(book) == 0


# -- removals while matching -------------------------------------------------


def test_expired_makers_skipped_and_removed() -> None:
    book = OrderBook(MARKET)
    stale = rest(book, order(ALICE, False, 100, 2, expiry=50))
    live = rest(book, order(ALICE, False, 101, 2, expiry=51))
    far_stale = rest(book, order(ALICE, False, 200, 2, expiry=50))
    removed: list[tuple[RestingOrder, RemoveReason]] = []
    matches = place(book, order(BOB, True, 101, 1), now=50, removed=removed)
    assert trades(matches) == [(live, 1, 101)]
    assert [(ro.order_hash, why) for ro, why in removed] == [(stale, "expired")]
    assert book.get(stale) is None
    # Expired orders out of the taker's reach stay until remove_expired.
    assert book.get(far_stale) is not None
    assert [ro.order_hash for ro in book.remove_expired(50)] == [far_stale]
    assert [ro.order_hash for ro in book] == [live]


def test_self_trade_cancels_the_maker() -> None:
    book = OrderBook(MARKET)
    own = rest(book, order(ALICE, False, 100, 2))
    other = rest(book, order(CAROL, False, 100, 2))
    removed: list[tuple[RestingOrder, RemoveReason]] = []
    matches = place(book, order(ALICE, True, 100, 1), removed=removed)
    assert trades(matches) == [(other, 1, 100)]
    assert [(ro.order_hash, why) for ro, why in removed] == [(own, "self_trade")]
    assert book.get(own) is None
    assert book.orders_of(ALICE) == []


def test_self_trade_only_resting_against_own_order_rests_taker() -> None:
    book = OrderBook(MARKET)
    own = rest(book, order(ALICE, False, 100, 2))
    taker = order(ALICE, True, 100, 1)
    assert place(book, taker) == []
    assert book.get(own) is None
    assert [ro.order_hash for ro in book] == [hash_of(taker)]


# -- the accept predicate (two-phase matching) -------------------------------


def test_accept_rejects_a_maker_which_is_removed_and_matching_continues() -> None:
    book = OrderBook(MARKET)
    poor = rest(book, order(ALICE, False, 100, 3))
    rich = rest(book, order(CAROL, False, 100, 3))
    asked: list[tuple[bytes, int]] = []

    def accept(maker: RestingOrder, size: int) -> bool:
        asked.append((maker.order_hash, size))
        return maker.order.account != ALICE

    removed: list[tuple[RestingOrder, RemoveReason]] = []
    matches = place(book, order(BOB, True, 100, 2), accept=accept, removed=removed)
    assert asked == [(poor, 2), (rich, 2)]
    assert trades(matches) == [(rich, 2, 100)]
    assert [(ro.order_hash, why) for ro, why in removed] == [(poor, "rejected")]
    assert book.get(poor) is None
    assert book.depth(1) == ([], [(100, 1, 1)])


def test_accept_sees_makers_unchanged_and_raising_changes_nothing() -> None:
    book = OrderBook(MARKET)
    first = rest(book, order(ALICE, False, 100, 1))
    rest(book, order(CAROL, False, 101, 1))
    before = snapshot(book)
    calls = 0

    def accept(maker: RestingOrder, size: int) -> bool:
        nonlocal calls
        calls += 1
        assert maker.remaining == 1 and book.get(maker.order_hash) is maker
        if calls == 2:
            raise RuntimeError("margin engine failed")
        return True

    with pytest.raises(RuntimeError):
        place(book, order(BOB, True, 101, 2), accept=accept)
    assert snapshot(book) == before
    assert book.get(first) is not None


# -- book management ---------------------------------------------------------


def test_duplicate_order_rejected() -> None:
    book = OrderBook(MARKET)
    o = order(ALICE, True, 100, 2)
    rest(book, o)
    before = snapshot(book)
    with pytest.raises(DuplicateOrder):
        place(book, o)
    with pytest.raises(DuplicateOrder):
        book.add_resting(o, SIG, hash_of(o), 1)
    assert snapshot(book) == before
    assert issubclass(DuplicateOrder, BookError)


def test_cancel() -> None:
    book = OrderBook(MARKET)
    h = rest(book, order(ALICE, True, 100, 2))
    other = rest(book, order(ALICE, True, 100, 1))
    cancelled = book.cancel(h)
    assert cancelled is not None and cancelled.order_hash == h
    assert book.cancel(h) is None
    assert book.cancel(b"\x00" * 32) is None
    assert [ro.order_hash for ro in book.orders_of(ALICE)] == [other]
    assert book.depth(5) == ([(100, 1, 1)], [])
    assert book.cancel(other) is not None
    assert len(book) == 0 and book.best_bid() is None
    assert book.orders_of(ALICE) == []


def test_depth_aggregation() -> None:
    book = OrderBook(MARKET)
    for price, size in [(99, 1), (100, 2), (100, 3), (98, 4), (97, 5)]:
        rest(book, order(ALICE, True, price, size))
    for price, size in [(101, 1), (101, 1), (103, 7), (102, 2)]:
        rest(book, order(BOB, False, price, size))
    bids, asks = book.depth(3)
    assert bids == [(100, 5, 2), (99, 1, 1), (98, 4, 1)]
    assert asks == [(101, 2, 2), (102, 2, 1), (103, 7, 1)]
    assert book.depth(0) == ([], [])
    assert book.depth(1) == ([(100, 5, 2)], [(101, 2, 2)])
    with pytest.raises(ValueError):
        book.depth(-1)


def test_orders_of_in_arrival_order() -> None:
    book = OrderBook(MARKET)
    hashes = [rest(book, order(ALICE, i % 2 == 0, 90 if i % 2 == 0 else 110, 1)) for i in range(4)]
    rest(book, order(BOB, True, 95, 1))
    assert [ro.order_hash for ro in book.orders_of(ALICE)] == hashes
    assert book.orders_of(CAROL) == []


def test_remove_expired_order_and_stale_entries() -> None:
    book = OrderBook(MARKET)
    late = rest(book, order(ALICE, True, 90, 1, expiry=30))
    early = rest(book, order(ALICE, True, 91, 1, expiry=20))
    gone = rest(book, order(ALICE, True, 92, 1, expiry=10))
    keep = rest(book, order(ALICE, True, 93, 1, expiry=31))
    assert book.cancel(gone) is not None
    assert book.remove_expired(19) == []
    assert [ro.order_hash for ro in book.remove_expired(30)] == [early, late]
    assert [ro.order_hash for ro in book] == [keep]


def test_reduce_keeps_priority_and_removes_at_zero() -> None:
    book = OrderBook(MARKET)
    first = rest(book, order(ALICE, False, 100, 5))
    second = rest(book, order(CAROL, False, 100, 5))
    reduced = book.reduce(first, 3)
    assert reduced is not None and reduced.remaining == 2
    with pytest.raises(InvalidSize):
        book.reduce(first, 3)
    with pytest.raises(InvalidSize):
        book.reduce(first, 0)
    assert book.reduce(b"\x00" * 32, 1) is None
    assert trades(place(book, order(BOB, True, 100, 1))) == [(first, 1, 100)]
    assert book.reduce(first, 1) is not None
    assert book.get(first) is None
    assert [ro.order_hash for ro in book] == [second]


def test_add_resting_restores_time_priority() -> None:
    book = OrderBook(MARKET)
    late, early, middle = (order(ALICE, False, 100, 2) for _ in range(3))
    book.add_resting(late, SIG, hash_of(late), 2, sequence=7)
    book.add_resting(early, SIG, hash_of(early), 1, sequence=3)
    book.add_resting(middle, SIG, hash_of(middle), 2, sequence=5)
    assert [ro.sequence for ro in book] == [3, 5, 7]
    newer = order(CAROL, False, 100, 1)
    assert place(book, newer) == []
    newest = book.get(hash_of(newer))
    assert newest is not None and newest.sequence == 8
    matches = place(book, order(BOB, True, 100, 3))
    assert trades(matches) == [(hash_of(early), 1, 100), (hash_of(middle), 2, 100)]


def test_add_resting_rejects_crossing_and_bad_input() -> None:
    book = OrderBook(MARKET)
    ask = order(ALICE, False, 100, 2)
    book.add_resting(ask, SIG, hash_of(ask), 2)
    bid = order(BOB, True, 100, 1)
    with pytest.raises(WouldCross):
        book.add_resting(bid, SIG, hash_of(bid), 1)
    with pytest.raises(InvalidSize):
        book.add_resting(bid, SIG, hash_of(bid), 2)
    other_market = order(BOB, True, 90, 1, market=2)
    with pytest.raises(WrongMarket):
        book.add_resting(other_market, SIG, hash_of(other_market), 1)
    assert len(book) == 1


def test_match_rejects_bad_input_without_change() -> None:
    book = OrderBook(MARKET)
    rest(book, order(ALICE, False, 100, 2))
    before = snapshot(book)
    taker = order(BOB, True, 100, 2)
    with pytest.raises(InvalidSize):
        book.match(taker, SIG, hash_of(taker), 0, 0)
    with pytest.raises(InvalidSize):
        book.match(taker, SIG, hash_of(taker), 3, 0)
    with pytest.raises(WrongMarket):
        place(book, order(BOB, True, 100, 2, market=7))
    assert snapshot(book) == before


def test_taker_with_partial_remaining_and_match_to_fill() -> None:
    book = OrderBook(MARKET)
    maker = order(ALICE, False, 100, 5)
    rest(book, maker)
    taker = order(BOB, True, 105, 10)
    (m,) = book.match(taker, SIG, hash_of(taker), 3, 0, "IOC")
    assert (m.size, m.price, m.maker_remaining) == (3, 100, 2)
    fill = m.fill(taker, SIG)
    assert fill == Fill(maker, SIG, taker, SIG, 3, 100)


# -- model-based test against a naive reference ------------------------------


@dataclass
class RefOrder:
    order: Order
    order_hash: bytes
    remaining: int
    sequence: int


@dataclass
class NaiveBook:
    """Reference book: one list, filtered and sorted from scratch on every call."""

    orders: list[RefOrder] = field(default_factory=list)
    next_sequence: int = 0

    def find(self, order_hash: bytes) -> RefOrder | None:
        return next((r for r in self.orders if r.order_hash == order_hash), None)

    def sorted_side(self, bids: bool) -> list[RefOrder]:
        side = [r for r in self.orders if r.order.is_buy == bids]
        return sorted(side, key=lambda r: (-r.order.price if bids else r.order.price, r.sequence))

    def match(
        self, o: Order, order_hash: bytes, remaining: int, now: int, tif: str, accept: object
    ) -> tuple[list[tuple[bytes, int, int, int]], list[tuple[bytes, str]]]:
        if self.find(order_hash) is not None:
            raise DuplicateOrder
        crossing = [
            r
            for r in self.sorted_side(not o.is_buy)
            if (r.order.price <= o.price if o.is_buy else r.order.price >= o.price)
        ]
        if tif == "POST_ONLY" and any(r.order.expiry > now for r in crossing):
            raise WouldCross
        matches, removed = [], []
        for r in crossing:
            if remaining == 0:
                break
            if r.order.expiry <= now:
                reason = "expired"
            elif r.order.account == o.account:
                reason = "self_trade"
            else:
                size = min(remaining, r.remaining)
                if callable(accept) and not accept(r.order_hash, size):
                    reason = "rejected"
                else:
                    r.remaining -= size
                    remaining -= size
                    matches.append((r.order_hash, size, r.order.price, r.remaining))
                    if r.remaining == 0:
                        self.orders.remove(r)
                    continue
            self.orders.remove(r)
            removed.append((r.order_hash, reason))
        if remaining and tif != "IOC":
            self.orders.append(RefOrder(o, order_hash, remaining, self.next_sequence))
            self.next_sequence += 1
        return matches, removed

    def cancel(self, order_hash: bytes) -> bool:
        r = self.find(order_hash)
        if r is not None:
            self.orders.remove(r)
        return r is not None

    def reduce(self, order_hash: bytes, size: int) -> None:
        r = self.find(order_hash)
        assert r is not None
        r.remaining -= size
        if r.remaining == 0:
            self.orders.remove(r)

    def remove_expired(self, now: int) -> list[bytes]:
        gone = sorted(
            (r for r in self.orders if r.order.expiry <= now),
            key=lambda r: (r.order.expiry, r.sequence),
        )
        for r in gone:
            self.orders.remove(r)
        return [r.order_hash for r in gone]

    def listing(self) -> list[tuple[bytes, int, int]]:
        return [
            (r.order_hash, r.remaining, r.sequence)
            for r in self.sorted_side(True) + self.sorted_side(False)
        ]

    def depth(self, bids: bool) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        for r in self.sorted_side(bids):
            if out and out[-1][0] == r.order.price:
                price, total, count = out[-1]
                out[-1] = (price, total + r.remaining, count + 1)
            else:
                out.append((r.order.price, r.remaining, 1))
        return out


ACCOUNTS = [ALICE, BOB, CAROL]


def veto(order_hash: bytes, size: int) -> bool:
    """A deterministic stand-in for the sequencer's margin check."""
    return (order_hash[0] + size) % 4 != 0


class BookVersusReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(MARKET)
        self.ref = NaiveBook()
        self.now = 100
        self.salt = 0
        self.seen: list[tuple[Order, bytes]] = []

    def submit(self, o: Order, h: bytes, remaining: int, tif: str, use_accept: bool) -> None:
        asked: list[tuple[bytes, int]] = []

        def accept(maker: RestingOrder, size: int) -> bool:
            asked.append((maker.order_hash, size))
            return veto(maker.order_hash, size)

        ref_asked: list[tuple[bytes, int]] = []

        def ref_accept(order_hash: bytes, size: int) -> bool:
            ref_asked.append((order_hash, size))
            return veto(order_hash, size)

        try:
            expected = self.ref.match(
                o, h, remaining, self.now, tif, ref_accept if use_accept else None
            )
        except BookError as e:
            before = snapshot(self.book)
            with pytest.raises(type(e)):
                self.book.match(o, SIG, h, remaining, self.now, tif, accept if use_accept else None)
            assert snapshot(self.book) == before
            return
        removed: list[tuple[RestingOrder, RemoveReason]] = []
        matches = self.book.match(
            o, SIG, h, remaining, self.now, tif, accept if use_accept else None, removed
        )
        got = [(m.maker_hash, m.size, m.price, m.maker_remaining) for m in matches]
        assert got == expected[0]
        assert [(ro.order_hash, why) for ro, why in removed] == expected[1]
        assert asked == ref_asked
        self.seen.append((o, h))

    @rule(
        account=st.sampled_from(ACCOUNTS),
        is_buy=st.booleans(),
        price=st.integers(95, 105),
        size=st.integers(1, 6),
        filled=st.integers(0, 5),
        expiry_in=st.sampled_from([1, 2, 4, FAR]),
        tif=st.sampled_from(["GTC", "GTC", "IOC", "POST_ONLY"]),
        use_accept=st.booleans(),
    )
    def place(
        self,
        account: bytes,
        is_buy: bool,
        price: int,
        size: int,
        filled: int,
        expiry_in: int,
        tif: str,
        use_accept: bool,
    ) -> None:
        self.salt += 1
        o = Order(account, MARKET, is_buy, price, size, self.salt, self.now + expiry_in)
        remaining = max(1, size - filled)
        self.submit(o, hash_of(o), remaining, tif, use_accept)

    @rule(pick=st.integers(0, 1000), tif=st.sampled_from(["GTC", "IOC", "POST_ONLY"]))
    def resubmit(self, pick: int, tif: str) -> None:
        if self.seen:
            o, h = self.seen[pick % len(self.seen)]
            self.submit(o, h, o.size, tif, False)

    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        if self.seen:
            _, h = self.seen[pick % len(self.seen)]
            found = self.ref.cancel(h)
            cancelled = self.book.cancel(h)
            assert (cancelled is not None) == found

    @rule(pick=st.integers(0, 1000), size=st.integers(1, 6))
    def reduce(self, pick: int, size: int) -> None:
        if self.ref.orders:
            r = self.ref.orders[pick % len(self.ref.orders)]
            size = min(size, r.remaining)
            self.ref.reduce(r.order_hash, size)
            assert self.book.reduce(r.order_hash, size) is not None

    @rule(seconds=st.integers(0, 3))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def remove_expired(self) -> None:
        expected = self.ref.remove_expired(self.now)
        assert [ro.order_hash for ro in self.book.remove_expired(self.now)] == expected

    @invariant()
    def same_book(self) -> None:
        assert snapshot(self.book) == self.ref.listing()
        assert len(self.book) == len(self.ref.orders)
        bids, asks = self.book.depth(100)
        assert bids == self.ref.depth(True)
        assert asks == self.ref.depth(False)
        assert self.book.best_bid() == (bids[0][0] if bids else None)
        assert self.book.best_ask() == (asks[0][0] if asks else None)
        if bids and asks:
            assert bids[0][0] < asks[0][0]
        for account in ACCOUNTS:
            mine = [r for r in self.ref.orders if r.order.account == account]
            mine.sort(key=lambda r: r.sequence)
            assert [ro.order_hash for ro in self.book.orders_of(account)] == [
                r.order_hash for r in mine
            ]


BookVersusReference.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
test_book_matches_reference = BookVersusReference.TestCase
