"""The sequencer's risk engine (issue 8 item 5; docs/protocol.md "Risk engine
(sequencer policy)"): finds accounts below maintenance margin and closes
their positions, through the book first, then with the backstop liquidator,
then by deleveraging the most profitable opposite positions.

None of this is an STF rule: the STF checks every ``Liquidate`` and
``Deleverage`` from state alone (docs/protocol.md "Liquidation",
"Deleverage"); which account is liquidated when, against which orders, and
which offsets are picked is the sequencer's policy, written here.

``LiquidationIndex`` keeps, per market, the accounts with a position by
liquidation price (node/risk.py ``liquidation_price``): longs by price
descending, shorts ascending (two ``SortedList``). After an oracle move only
the accounts whose liquidation price the oracle price reached are checked
exactly (node/risk.py ``liquidatable``, unsettled funding included); an
account is re-indexed when a block touches it (fills, liquidations,
deleverages, withdrawals, deposits, funding settlements: the accounts named
by the block's transactions). No block scans all accounts.

Bounds the index keeps (so that it never misses a liquidatable account):
- rounding: the indexed price is computed with ``3 x positions`` base units
  less collateral (values floor, margins and funding round up, each by < 1
  per position), so it lies at or beyond the integer check's line;
- funding: a FundingTick moves every position's unsettled funding, so the
  liquidation price of every position in that market by at most
  ``|dI| / (PPM - mmf)`` price units (dI the index change since the entry
  was computed). The index does not recompute on a tick: it widens that
  market's search window by this bound (lazily), and rebuilds the market's
  entries once the window passes 1% of the oracle price (one pass over the
  market's holders per 1% of funding moved);
- cross margin: an account with positions in several markets has a
  liquidation price per market that assumes the others' prices fixed, so
  every trigger of a market also re-checks its multi-market holders.

``RiskEngine.step`` runs after every sealed block with an OraclePrice, a
FundingTick or trades (``on_block`` marks the work), as a trio task like
sequencer/funding_clock.py. Its transactions go through
``Sequencer.send_liquidate`` / ``send_deleverage``, which journal them
(kill -9 safe). An error while checking one account is logged and that
account skipped: the engine never stops the sequencer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import trio
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from node import exceptions as err
from node.blocks import Block
from node.margin import PPM, position_value, unsettled_funding
from node.risk import (
    adl_score,
    bankruptcy_price,
    deleverage_candidates,
    equity,
    fillable_price,
    liquidatable,
    liquidation_price,
    within_fillable,
)
from node.signing import Signer
from node.state import Account, Market, Position, State
from node.transactions import (
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    OraclePrice,
    Order,
    ORDER_BYTES,
    SIGNATURE_BYTES,
    TX_FILL,
    TX_FUNDING_TICK,
    TX_ORACLE_PRICE,
    SettleFunding,
    Transaction,
    Withdraw,
    decode_tx,
)
from sequencer.sequencer import Sequencer

log = logging.getLogger("derivnet.risk")

SPREAD_TO_MMR_PPM = 1_500_000
"""dYdX v4 mainnet liquidations config: max liquidation spread = 1.5 x the
position's maintenance margin (risk spec v1)."""
BANKRUPTCY_ADJUSTMENT_PPM = 1_000_000
"""dYdX v4 mainnet liquidations config (risk spec v1)."""

REBUILD_DRIFT_PPM = 10_000
"""A market's entries are recomputed once funding may have moved their
liquidation prices by more than this share of the oracle price (1%)."""

BACKSTOP_ORDER_SECONDS = 3_600
"""Expiry of the backstop liquidator's orders, seconds after the block time."""

POLL_SECONDS = 0.02
"""How often (wall seconds) the engine's task looks for work."""

_MAKER_ACCOUNT = slice(1, 21)  # in an encoded Fill: type | maker order | maker sig | taker ...
_TAKER_ACCOUNT = slice(1 + ORDER_BYTES + SIGNATURE_BYTES, 21 + ORDER_BYTES + SIGNATURE_BYTES)

_PRICE_TYPES = frozenset((TX_ORACLE_PRICE, TX_FUNDING_TICK))  # they move a market's lines

ORDER_RULES = frozenset({"InsufficientMargin", "OrderExpired", "InvalidOrderSignature",
                         "Overfill", "SelfTrade", "InvalidTickSize", "UnknownMarket"})
"""Rules of a rejected Liquidate that blame the liquidator's order: the maker
is dropped from the book and the walk goes on."""


def unsettled_of(markets: dict[int, Market]) -> Callable[[Position], int]:
    """node/risk.py's ``unsettled`` argument: each position's unsettled
    funding (USDC base units, positive: it pays) at its market's index."""
    return lambda p: unsettled_funding(markets[p.market], p)


def index_price(account: Account, markets: dict[int, Market], market_id: int) -> int | None:
    """The liquidation price (price units) the index files the account's
    position in ``market_id`` under: node/risk.py ``liquidation_price`` of
    the account with ``3 x positions`` base units less collateral, so the
    integer check's rounding never liquidates beyond it (a long is
    liquidatable only at or below it, a short at or above). None: no price
    >= 0 liquidates the long (or no position)."""
    slack = 3 * len(account.positions)
    shaded = Account(account.collateral - slack, account.nonce, account.positions)
    return liquidation_price(shaded, markets, market_id, unsettled_of(markets))


def accounts_of(tx: Transaction) -> tuple[bytes, ...]:
    """The accounts whose leaf ``tx`` may change (20-byte addresses)."""
    if isinstance(tx, Fill):
        return (tx.maker.account, tx.taker.account)
    if isinstance(tx, Liquidate):
        return (tx.liquidated, tx.order.account)
    if isinstance(tx, Deleverage):
        return (tx.liquidated, tx.offset)
    if isinstance(tx, Withdraw):
        return (tx.account,)
    if isinstance(tx, Deposit):
        return (tx.account,)
    if isinstance(tx, SettleFunding):
        return (tx.account,)
    return ()


def candidates(index: LiquidationIndex, state: State, touched: set[bytes], moved: set[int],
               on_error: Callable[[bytes, Exception], None] | None = None) -> set[bytes]:
    """The accounts to check exactly after a block: re-file each account in
    ``touched`` (20-byte addresses) at ``state`` and take those whose new
    line the oracle price has reached (``LiquidationIndex.update``), plus
    ``index.due`` of each market in ``moved`` (ids) that has an oracle
    price. An account whose re-filing raises is passed to ``on_error`` (or
    the error propagates) and skipped."""
    markets = state.markets
    out: set[bytes] = set()
    for address in touched:
        try:
            if index.update(address, state.account(address), markets):
                out.add(address)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(address, exc)
    for market_id in sorted(moved):
        market = markets.get(market_id)
        if market is not None and market.oracle_price > 0:
            out.update(index.due(market, state))
    return out


def accounts_in(raw: bytes) -> tuple[bytes, ...]:
    """``accounts_of`` an encoded transaction; a Fill's two accounts are
    read from their fixed offsets without decoding it (the hot path)."""
    if raw[0] == TX_FILL:
        return (raw[_MAKER_ACCOUNT], raw[_TAKER_ACCOUNT])
    return accounts_of(decode_tx(raw))


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class LiquidationIndex:
    """Accounts with a position, per market, by liquidation price.

    ``update(address, account, markets)`` files (or re-files) one account;
    ``due(market)`` lists the accounts to check after the market's oracle
    price or funding index moved; ``holders(market)`` lists every account
    with a position there (deleverage candidates). Prices in price units.
    """

    def __init__(self) -> None:
        # market -> SortedList of (-price, address) (longs, highest price first)
        self._longs: dict[int, Any] = {}
        # market -> SortedList of (price, address) (shorts, lowest first)
        self._shorts: dict[int, Any] = {}
        # market -> address -> position size (every holder)
        self._holders: dict[int, dict[bytes, int]] = {}
        # address -> market -> (sorted-list key (None: in no price list), size)
        self._entries: dict[bytes, dict[int, tuple[tuple[int, bytes] | None, int]]] = {}
        # market -> (lowest, highest) funding index the entries were computed at
        self._indices: dict[int, tuple[int, int]] = {}
        self.rebuilds = 0

    def __len__(self) -> int:
        """Accounts watched (with at least one position)."""
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def holders(self, market_id: int) -> dict[bytes, int]:
        """address -> position size of every holder of ``market_id`` (a copy)."""
        return dict(self._holders.get(market_id, {}))

    def entry(self, address: bytes, market_id: int) -> int | None:
        """The indexed liquidation price of the account's position (None: not
        indexed, or no price liquidates it)."""
        key, size = self._entries.get(address, {}).get(market_id, (None, 0))
        if key is None:
            return None
        return -key[0] if size > 0 else key[0]

    def remove(self, address: bytes) -> None:
        """Forget the account."""
        for market_id, entry in self._entries.pop(address, {}).items():
            self._unfile(address, market_id, entry)

    def update(self, address: bytes, account: Account, markets: dict[int, Market]) -> bool:
        """File ``account`` under its current positions (an account without
        positions is forgotten); entries that did not change stay in place.
        Returns True when the account is to be checked exactly now: a
        position's line is at or beyond its market's oracle price (a long's
        at or above it, a short's at or below), or it holds several
        markets. Raises KeyError for a position in a market not in
        ``markets``."""
        old = self._entries.get(address)
        if not account.positions:
            if old is not None:
                self.remove(address)
            return False
        new: dict[int, tuple[tuple[int, bytes] | None, int]] = {}
        at_risk = len(account.positions) > 1
        for pos in account.positions:
            market = markets[pos.market]
            price = index_price(account, markets, pos.market)
            key = None
            if price is not None:
                if pos.size > 0:
                    key = (-price, address)
                    at_risk = at_risk or market.oracle_price <= price
                else:
                    key = (price, address)
                    at_risk = at_risk or market.oracle_price >= price
            new[pos.market] = (key, pos.size)
            lo, hi = self._indices.get(pos.market, (market.funding_index, market.funding_index))
            self._indices[pos.market] = (min(lo, market.funding_index),
                                         max(hi, market.funding_index))
        if old is not None:
            for market_id, entry in old.items():
                if new.get(market_id) != entry:
                    self._unfile(address, market_id, entry)
        for market_id, entry in new.items():
            if old is None or old.get(market_id) != entry:
                key, size = entry
                self._holders.setdefault(market_id, {})[address] = size
                if key is not None:
                    side = self._longs if size > 0 else self._shorts
                    side.setdefault(market_id, SortedList()).add(key)
        self._entries[address] = new
        return at_risk

    def _unfile(self, address: bytes, market_id: int,
                entry: tuple[tuple[int, bytes] | None, int]) -> None:
        key, size = entry
        del self._holders[market_id][address]
        if key is not None:
            (self._longs if size > 0 else self._shorts)[market_id].remove(key)

    def funding_slack(self, market: Market) -> int:
        """Price units by which funding since the entries were computed may
        have moved a liquidation price in ``market``: ``ceil(max |dI| / (PPM
        - mmf))`` (+1 for rounding), 0 without entries."""
        lo, hi = self._indices.get(market.id, (market.funding_index, market.funding_index))
        drift = max(abs(market.funding_index - lo), abs(market.funding_index - hi))
        if drift == 0:
            return 0
        return _ceil_div(drift, max(PPM - market.mmf_ppm, 1)) + 1

    def rebuild(self, market_id: int, state: State) -> None:
        """Recompute the entries of every holder of ``market_id`` at the
        current funding index (one pass over the market's holders)."""
        markets = state.markets
        market = markets[market_id]
        self._indices[market_id] = (market.funding_index, market.funding_index)
        for address in list(self._holders.get(market_id, {})):
            self.update(address, state.account(address), markets)
        self._indices[market_id] = (market.funding_index, market.funding_index)
        self.rebuilds += 1

    def due(self, market: Market, state: State | None = None) -> list[bytes]:
        """Accounts to check exactly after ``market``'s oracle price or
        funding index moved: longs filed at or above ``oracle - slack``,
        shorts at or below ``oracle + slack`` (slack: ``funding_slack``), and
        every holder with positions in other markets too. With ``state``,
        first rebuilds the market when the funding slack passes
        REBUILD_DRIFT_PPM of the oracle price."""
        slack = self.funding_slack(market)
        if state is not None and slack * PPM > market.oracle_price * REBUILD_DRIFT_PPM:
            self.rebuild(market.id, state)
            slack = self.funding_slack(market)
        price = market.oracle_price
        out: list[bytes] = []
        for neg, address in self._longs.get(market.id, ()):
            if -neg < price - slack:
                break
            out.append(address)
        for short_price, address in self._shorts.get(market.id, ()):
            if short_price > price + slack:
                break
            out.append(address)
        for address in self._holders.get(market.id, {}):
            if len(self._entries[address]) > 1:
                out.append(address)
        return out


@dataclass
class RiskCounters:
    """What the engine did since start (``l2_getRiskEngine``)."""

    checks: int = 0  # exact liquidatable checks
    liquidated_accounts: int = 0  # accounts with at least one Liquidate / Deleverage
    liquidations: int = 0  # Liquidate transactions against book orders
    backstop_liquidations: int = 0  # Liquidate transactions against the backstop's orders
    deleverages: int = 0  # Deleverage transactions
    rejected: int = 0  # Liquidate / Deleverage refused by the STF
    errors: int = 0  # exceptions while checking an account (logged, account skipped)
    last_error: str | None = None
    rules: dict[str, int] = field(default_factory=dict)  # refusals by rule name

    def refused(self, rule: str) -> None:
        self.rejected += 1
        self.rules[rule] = self.rules.get(rule, 0) + 1


class Retry(Protocol):
    """The node's retry bookkeeping (node.node.Backoff)."""

    def failed(self, exc: BaseException) -> float: ...

    def succeeded(self) -> None: ...


class RiskEngine:
    """Liquidates and deleverages ``sequencer``'s accounts (sequencer policy).

    backstop_key: 32-byte key of the backstop liquidator (None: no backstop,
    liquidations only through the book, then deleverages). ``on_block`` is
    the sequencer's block callback; ``step`` does the pending work now and
    is what ``run`` repeats.
    """

    def __init__(self, sequencer: Sequencer, backstop_key: bytes | None) -> None:
        self.sequencer = sequencer
        self.backstop = Signer(backstop_key) if backstop_key is not None else None
        self.index = LiquidationIndex()
        self.counters = RiskCounters()
        self._touched: set[bytes] = set()  # accounts to re-file and check
        self._moved: set[int] = set()  # markets whose oracle or funding index moved
        self._stuck: set[bytes] = set()  # liquidatable, nothing closed it (logged once)
        self._salt = time.time_ns() % (1 << 62)
        self._build()

    # -- following the chain ---------------------------------------------
    def _build(self) -> None:
        """File every account the chain's blocks (and the pending block)
        name: one pass over the chain at start (the state has no account
        index); then every market is due once."""
        chain = self.sequencer.chain
        seen: set[bytes] = set()
        for number in range(1, chain.head.number + 1):
            for raw in chain.block(number).txs:
                seen.update(accounts_in(raw))
        for raw in chain.pending_txs:
            seen.update(accounts_in(raw))
        state = chain.state
        markets = state.markets
        for address in seen:
            try:
                self.index.update(address, state.account(address), markets)
            except Exception as exc:  # a node must start: the account is not watched
                self._error(address, exc)
        self._moved.update(markets)

    def on_block(self, block: Block) -> None:
        """Note what a sealed block changed: accounts its transactions name
        (to re-file and check) and markets with an OraclePrice or a
        FundingTick (to check by the index)."""
        touched = self._touched
        for raw, receipt in zip(block.txs, block.receipts):
            if not receipt.success:
                continue
            if raw[0] in _PRICE_TYPES:
                tx = decode_tx(raw)
                assert isinstance(tx, (OraclePrice, FundingTick))
                self._moved.add(tx.market)
            else:
                touched.update(accounts_in(raw))

    @property
    def due(self) -> bool:
        """True when a block left work for ``step``."""
        return bool(self._touched or self._moved)

    # -- the check ----------------------------------------------------------
    def step(self) -> list[bytes]:
        """Re-file the touched accounts, check them and the accounts the
        moved markets' prices reached, and liquidate each liquidatable one
        (``liquidate``). Returns the addresses acted on. Does nothing while
        the Rollup is frozen."""
        seq = self.sequencer
        if seq.frozen:
            return []
        state = seq.chain.state
        touched, self._touched = self._touched, set()
        moved, self._moved = self._moved, set()
        check = candidates(self.index, state, touched, moved, self._error)
        acted = []
        for address in sorted(check):
            try:
                if self.liquidate(address):
                    acted.append(address)
            except Exception as exc:  # never wedge the sequencer on one account
                self._error(address, exc)
        return acted

    def _error(self, address: bytes, exc: Exception) -> None:
        self.counters.errors += 1
        self.counters.last_error = f"0x{address.hex()}: {type(exc).__name__}: {exc}"
        log.exception("risk engine: checking 0x%s failed; skipped", address.hex())

    def is_liquidatable(self, address: bytes) -> bool:
        """node/risk.py ``liquidatable`` on the pending state, funding included."""
        state = self.sequencer.chain.state
        self.counters.checks += 1
        return liquidatable(state.account(address), state.markets, unsettled_of(state.markets))

    def liquidate(self, address: bytes) -> bool:
        """Close the positions of ``address`` while it is liquidatable, the
        position with the largest value first: through the book
        (``liquidate_through_book``), then, unless the account is
        deleveragable (equity < 0 and the fund cannot cover it), the
        backstop liquidator (``close_by_backstop``), then, if it is,
        ``deleverage``. Returns True if any transaction went through. The
        account is re-filed in the index."""
        seq = self.sequencer
        acted = False
        if not self.is_liquidatable(address):
            self._stuck.discard(address)
            return False
        log.debug("risk engine: 0x%s is liquidatable", address.hex())
        state = seq.chain.state
        order = sorted(state.account(address).positions,
                       key=lambda p: -abs(position_value(state.markets[p.market], p.size)))
        for pos in order:
            market_id = pos.market
            if not self.is_liquidatable(address):
                break
            acted |= self.liquidate_through_book(address, market_id)
            if (self._open(address, market_id) and self.is_liquidatable(address)
                    and not self.deleveragable(address)):
                acted |= self.close_by_backstop(address, market_id)
            if self._open(address, market_id) and self.deleveragable(address):
                acted |= self.deleverage(address, market_id)
        if acted:
            self.counters.liquidated_accounts += 1
            self._stuck.discard(address)
        elif address not in self._stuck:  # logged once, checked again on every trigger
            self._stuck.add(address)
            log.warning("risk engine: 0x%s is liquidatable but nothing could close it now "
                        "(no order within the fillable price, no backstop, no offset)",
                        address.hex())
        state = seq.chain.state
        self.index.update(address, state.account(address), state.markets)
        return acted

    def _open(self, address: bytes, market_id: int) -> int:
        """The account's position size in the market now (0: none)."""
        pos = self.sequencer.chain.state.account(address).position(market_id)
        return pos.size if pos is not None else 0

    def fillable(self, address: bytes, market_id: int) -> int:
        """node/risk.py ``fillable_price`` of the account's position now."""
        state = self.sequencer.chain.state
        return fillable_price(state.account(address), state.markets, market_id,
                              BANKRUPTCY_ADJUSTMENT_PPM, SPREAD_TO_MMR_PPM,
                              unsettled_of(state.markets))

    def deleveragable(self, address: bytes) -> bool:
        """The Deleverage precondition: equity < 0 and insurance fund +
        equity < 0 (the fund cannot cover the shortfall)."""
        state = self.sequencer.chain.state
        eq = equity(state.account(address), state.markets, unsettled_of(state.markets))
        return eq < 0 and state.system.insurance_fund + eq < 0

    def liquidate_through_book(self, address: bytes, market_id: int) -> bool:
        """Walk the book's opposite side from the best price while the
        level is within the fillable price, one Liquidate per resting order
        (the resting order is the liquidator's, its signature from the book).
        A refusal that blames the order drops the maker from the book and
        the walk goes on; any other refusal ends it. Returns True if any
        fill went through."""
        seq = self.sequencer
        book = seq.books.get(market_id)
        size = self._open(address, market_id)
        if book is None or size == 0:
            return False
        acted = False
        now = seq.chain.pending_timestamp
        for ro in list(book.side_orders(is_bid=size > 0)):
            size = self._open(address, market_id)
            if size == 0 or not self.is_liquidatable(address):
                break
            if ro.order.expiry <= now or ro.order.account == address:
                continue
            if not within_fillable(size, ro.order.price, self.fillable(address, market_id)):
                break  # the book is sorted: every later level is worse
            if book.get(ro.order_hash) is None:
                continue  # left the book since the walk started
            fill = min(ro.remaining, abs(size))
            tx = Liquidate(address, ro.order, ro.signature, fill, ro.order.price)
            try:
                seq.send_liquidate(tx)
            except err.InvalidTransaction as exc:
                self.counters.refused(exc.rule)
                log.info("risk engine: Liquidate of 0x%s against 0x%s refused: %s: %s",
                         address.hex(), ro.order.account.hex(), exc.rule, exc)
                if exc.rule in ORDER_RULES:
                    book.cancel(ro.order_hash)
                    continue
                break
            self.counters.liquidations += 1  # send_liquidate shrank the resting order
            acted = True
        return acted

    def _backstop_order(self, market: Market, is_buy: bool, price: int,
                        size: int) -> tuple[Order, bytes]:
        assert self.backstop is not None
        self._salt = (self._salt + 1) % (1 << 64)
        seq = self.sequencer
        order = Order(self.backstop.address, market.id, is_buy, price, size, self._salt,
                      seq.chain.pending_timestamp + BACKSTOP_ORDER_SECONDS)
        _, signature = self.backstop.sign_order(seq.chain.domain, order)
        return order, signature

    def close_by_backstop(self, address: bytes, market_id: int) -> bool:
        """The backstop liquidator takes what is left of the position at
        the fillable price (on the tick, in the liquidated account's favour).
        If the insurance fund cannot pay that (InsuranceFundShort) and the
        account is not deleveragable (equity >= 0 or the fund covers it),
        the backstop takes it at the bankruptcy price instead, where the
        fund pays nothing. Returns True if a Liquidate went through."""
        if self.backstop is None or address == self.backstop.address:
            return False
        seq = self.sequencer
        size = self._open(address, market_id)
        if size == 0:
            return False
        state = seq.chain.state
        market = state.markets[market_id]
        tick = market.tick_size
        bound = self.fillable(address, market_id)
        price = _ceil_div(bound, tick) * tick if size > 0 else bound // tick * tick
        refused = self._send_backstop(address, market, size, price)
        if refused is None:
            return True
        if refused != "InsuranceFundShort" or self.deleveragable(address):
            return False
        state = seq.chain.state
        bk = bankruptcy_price(state.account(address), state.markets, market_id, -size,
                              unsettled_of(state.markets))
        price = _ceil_div(bk, tick) * tick if size > 0 else bk // tick * tick
        if not within_fillable(size, price, bound):
            return False
        return self._send_backstop(address, market, size, price) is None

    def _send_backstop(self, address: bytes, market: Market, size: int, price: int) -> str | None:
        """Send the backstop's Liquidate of ``size`` (signed, the liquidated
        position) at ``price``; None if it went through, else the rule."""
        if price <= 0:
            return "InvalidPrice"
        order, signature = self._backstop_order(market, size > 0, price, abs(size))
        try:
            self.sequencer.send_liquidate(Liquidate(address, order, signature, abs(size), price))
        except err.InvalidTransaction as exc:
            self.counters.refused(exc.rule)
            log.info("risk engine: backstop Liquidate of 0x%s at %d refused: %s: %s",
                     address.hex(), price, exc.rule, exc)
            return exc.rule
        self.counters.backstop_liquidations += 1
        log.info("risk engine: backstop took %d of 0x%s in market %d at %d", abs(size),
                 address.hex(), market.id, price)
        return None

    def ranking(self, market_id: int, liquidated_size: int) -> list[bytes]:
        """node/risk.py ``deleverage_candidates`` over the market's holders
        on the opposite side of ``liquidated_size``, best first."""
        state = self.sequencer.chain.state
        holders = [a for a, s in self.index.holders(market_id).items()
                   if s * liquidated_size < 0]
        return deleverage_candidates(((a, state.account(a)) for a in sorted(holders)),
                                     state.markets, market_id, liquidated_size,
                                     unsettled_of(state.markets))

    def deleverage(self, address: bytes, market_id: int) -> bool:
        """Offset the rest of the position against ``ranking``, highest
        first, each Deleverage capped by the offset's position; an offset
        the STF refuses is skipped. Returns True if any went through."""
        seq = self.sequencer
        size = self._open(address, market_id)
        if size == 0:
            return False
        acted = False
        for offset in self.ranking(market_id, size):
            size = self._open(address, market_id)
            if size == 0 or not self.deleveragable(address):
                break
            other = self._open(offset, market_id)
            amount = min(abs(size), abs(other))
            if amount == 0 or other * size >= 0:
                continue
            try:
                seq.send_deleverage(Deleverage(address, offset, market_id, amount))
            except err.InvalidTransaction as exc:
                self.counters.refused(exc.rule)
                log.info("risk engine: Deleverage of 0x%s against 0x%s refused: %s: %s",
                         address.hex(), offset.hex(), exc.rule, exc)
                continue
            self.counters.deleverages += 1
            acted = True
            log.info("risk engine: deleveraged %d of 0x%s against 0x%s in market %d", amount,
                     address.hex(), offset.hex(), market_id)
            state = seq.chain.state
            self.index.update(offset, state.account(offset), state.markets)
        return acted

    # -- views ---------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """The counters and the index size (``l2_getRiskEngine``); counts
        are hex quantities (docs/protocol.md "Numbers")."""
        c = self.counters
        return {
            "enabled": True,
            "due": self.due,
            "backstopLiquidator": ("0x" + self.backstop.address.hex()) if self.backstop else None,
            "accountsWatched": hex(len(self.index)),
            "checks": hex(c.checks),
            "liquidatedAccounts": hex(c.liquidated_accounts),
            "liquidations": hex(c.liquidations),
            "backstopLiquidations": hex(c.backstop_liquidations),
            "deleverages": hex(c.deleverages),
            "rejected": hex(c.rejected),
            "rejectedByRule": {rule: hex(n) for rule, n in sorted(c.rules.items())},
            "indexRebuilds": hex(self.index.rebuilds),
            "errors": hex(c.errors),
            "lastError": c.last_error,
        }

    def ranking_view(self, market_id: int) -> dict[str, Any]:
        """The ADL ranking of both sides of ``market_id`` with each score's
        parts (``l2_getDeleverageRanking``): ``shorts`` offset a liquidated
        long, ``longs`` a liquidated short, best first. Money in USDC base
        units, as decimal strings."""
        state = self.sequencer.chain.state
        markets = state.markets
        unsettled = unsettled_of(markets)
        market = markets[market_id]

        def rows(liquidated_size: int) -> list[dict[str, Any]]:
            out = []
            for rank, address in enumerate(self.ranking(market_id, liquidated_size), 1):
                account = state.account(address)
                pos = account.position(market_id)
                assert pos is not None
                value = position_value(market, pos.size)
                owed = unsettled(pos)
                eq = equity(account, markets, unsettled)
                score = adl_score(account, markets, market_id, unsettled) or Fraction(0)
                out.append({
                    "rank": hex(rank),
                    "account": "0x" + address.hex(),
                    "size": str(pos.size),
                    "value": str(value),
                    "cost": str(pos.cost),
                    "unsettledFunding": str(owed),
                    "pnl": str(value - pos.cost - owed),
                    "equity": str(eq),
                    "pnlRatioPpm": str(int(Fraction(value - pos.cost - owed,
                                                    max(abs(pos.cost), 1)) * PPM)),
                    "leveragePpm": str(int(Fraction(abs(value), eq) * PPM)),
                    "scorePpm": str(int(score * PPM)),
                })
            return out

        return {"market": hex(market_id), "oraclePrice": str(market.oracle_price),
                "insuranceFund": str(state.system.insurance_fund),
                "shorts": rows(1), "longs": rows(-1)}

    # -- task ----------------------------------------------------------------
    async def run(self, retry: Retry) -> None:
        """Step whenever a block left work, until cancelled (a trio task).
        An error is logged and retried after ``retry``'s backoff."""
        log.info("risk engine on (backstop liquidator %s)",
                 ("0x" + self.backstop.address.hex()) if self.backstop else "none")
        while True:
            if self.due:
                try:
                    self.step()
                except Exception as exc:  # keep the devnet up; retry with backoff
                    delay = retry.failed(exc)
                    log.warning("risk engine failed (retry in %.1f s): %s", delay, exc)
                    await trio.sleep(delay)
                    continue
                retry.succeeded()
            await trio.sleep(POLL_SECONDS)
