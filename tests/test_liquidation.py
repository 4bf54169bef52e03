"""Liquidate, Deleverage, SettleFunding, open interest and the OI-scaled
initial margin through the STF (risk spec v1, docs/protocol.md
"Liquidation", "Deleverage", "Open interest"): every rule's typed error,
docs/risk.md's worked examples, the boundaries, and a hypothesis property
(every applied transaction keeps the ledger invariants, every rejected one
changes nothing)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import exceptions as err
from node.crypto import ZERO_HASH, keccak
from node.db import MemoryDB
from node.eip712 import Domain, order_hash
from node.genesis import load_genesis
from node.margin import effective_imf_ppm, equity, initial_margin, unsettled_funding
from node.signing import Signer
from node.smt import SparseMerkleTree
from node.state import Account, Position, State
from node.stf import apply_transaction
from node.transactions import (
    Deleverage,
    Deposit,
    Fill,
    Liquidate,
    Order,
    SettleFunding,
    Transaction,
)
from tests.invariants import check_ledger

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
USDC = 1_000_000
ETH = 10_000  # size units of 1 ETH (ETH-USD: pd 2, sd 4, so value = size x price)
GENESIS = load_genesis()
ORACLE = Signer(keccak(b"oracle"))
ALICE = Signer(keccak(b"alice"))  # the liquidator
BOB = Signer(keccak(b"bob"))
LONG = keccak(b"long")[:20]
S1 = keccak(b"s1")[:20]
FEE = GENESIS.fee_account
SLOW = os.environ.get("DERIVNET_SLOW") == "1"


def make_state(accounts: dict[bytes, Account], oracle: int, fund: int = 0,
               **market_fields: int) -> State:
    """A committed state at genesis with ETH-USD's oracle at ``oracle``, its
    open interest the sum of the accounts' longs, ``accounts`` written as
    they are and the insurance fund at ``fund`` (a test vector's pre-state)."""
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(ZERO_HASH, replace(GENESIS, oracle=ORACLE.address).leaves()))
    longs = sum(p.size for a in accounts.values() for p in a.positions if p.size > 0)
    state.set_market(replace(state.markets[1], oracle_price=oracle, open_interest=longs,
                             **market_fields))
    for address, acc in accounts.items():
        state.set_account(address, acc)
    state.set_system(replace(state.system, insurance_fund=fund))
    state.commit()
    return state


def long_1eth() -> Account:
    """docs/risk.md's long: 100 USDC deposited, 1 ETH bought at 2000.00."""
    return Account(-1_900 * USDC, 0, (Position(1, ETH, 2_000 * USDC),))


def short_1eth(collateral: int = 2_100 * USDC) -> Account:
    """docs/risk.md's S1: 100 USDC deposited, 1 ETH sold at 2000.00
    (collateral 2_100 USDC: 300 USDC of equity at 1800.00)."""
    return Account(collateral, 0, (Position(1, -ETH, -2_000 * USDC),))


def liquidate(price: int, size: int = ETH, is_buy: bool = True, liquidated: bytes = LONG,
              order_size: int | None = None, expiry: int = NOW + 60,
              signer: Signer = ALICE) -> Liquidate:
    order = Order(ALICE.address, 1, is_buy, price, size if order_size is None else order_size, 7,
                  expiry)
    return Liquidate(liquidated, order, signer.sign_order(DOMAIN, order)[1], size, price)


def assert_rejected(state: State, tx: Transaction, exc: type[err.InvalidTransaction],
                    timestamp: int = NOW) -> None:
    """``tx`` raises ``exc`` (exactly that rule) and changes nothing."""
    root = state.commit()
    with pytest.raises(exc) as info:
        apply_transaction(state, tx, timestamp, DOMAIN)
    assert type(info.value) is exc
    assert state.dirty_items() == {} and state.commit() == root


# -- worked examples (docs/risk.md) -------------------------------------------------


def test_liquidation_at_the_fillable_price_pays_the_fund() -> None:
    """The long at 1990.00 is liquidatable; ALICE's buy at the fillable
    price 1975.75 closes it, the fund earns 29_636_250 (1.5%), the long ends
    with 46_113_750 and no position; ALICE pays the maker fee."""
    state = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       199_000)
    tx = liquidate(197_575)
    apply_transaction(state, tx, NOW, DOMAIN)
    assert state.account(LONG) == Account(46_113_750, 0, ())
    assert state.system.insurance_fund == 29_636_250
    maker_fee = 395_150  # ceil(1_975_750_000 x 200 ppm)
    assert state.account(ALICE.address) == Account(
        10_000 * USDC - 1_975_750_000 - maker_fee, 0, (Position(1, ETH, 1_975_750_000),))
    assert state.account(FEE).collateral == maker_fee
    assert state.filled(order_hash(DOMAIN, tx.order)) == ETH
    assert state.markets[1].open_interest == ETH  # the long moved from LONG to ALICE
    check_ledger(state, [LONG, S1, ALICE.address, FEE],
                 -1_900 * USDC + 2_100 * USDC + 10_000 * USDC, 0, 2)


def test_liquidation_rejected_then_deleverage_at_the_bankruptcy_price() -> None:
    """At 1800.00 the fill at the fillable price 1665.00 would cost an empty
    fund 235 USDC: InsuranceFundShort; the long is deleveraged against S1 at
    1900.00: the long ends at exactly 0, S1 at 200 USDC, open interest 0."""
    state = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       180_000)
    assert_rejected(state, liquidate(166_500), err.InsuranceFundShort)
    apply_transaction(state, Deleverage(LONG, S1, 1, ETH), NOW, DOMAIN)
    assert state.account(LONG) == Account(0, 0, ())
    assert state.account(S1) == Account(200 * USDC, 0, ())
    assert state.markets[1].open_interest == 0
    assert state.account(FEE).collateral == 0  # no fees, no dust (M = N = 1)
    check_ledger(state, [LONG, S1, ALICE.address, FEE], 10_200 * USDC, 0, 2)


def test_half_deleverage_keeps_the_ratio() -> None:
    """A half deleverage at 1800.00: the long ends with E = -50, MM = 45 USDC
    (its ratio kept), S1 buys back half at 1900.00."""
    state = make_state({LONG: long_1eth(), S1: short_1eth()}, 180_000)
    apply_transaction(state, Deleverage(LONG, S1, 1, ETH // 2), NOW, DOMAIN)
    long = state.account(LONG)
    assert long.position(1).size == ETH // 2 and equity(long, state.markets) == -50 * USDC
    assert state.account(S1).position(1).size == -ETH // 2
    assert state.markets[1].open_interest == ETH // 2


# -- Liquidate rules, in order ---------------------------------------------------------


@pytest.fixture
def at_1990() -> State:
    return make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                      199_000)


def test_liquidate_rules_in_order(at_1990: State) -> None:
    s = at_1990
    bad_market = liquidate(197_575)
    order = replace(bad_market.order, market=9)
    assert_rejected(s, replace(bad_market, order=order, signature=ALICE.sign_order(DOMAIN, order)[1]),
                    err.UnknownMarket)
    assert_rejected(s, liquidate(197_575, liquidated=ALICE.address), err.SelfTrade)
    assert_rejected(s, liquidate(197_575, size=0, order_size=ETH), err.ZeroFillSize)
    stepped = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                         199_000, step_size=10, tick_size=5)
    assert_rejected(stepped, liquidate(197_575, size=ETH - 1), err.InvalidStepSize)
    assert_rejected(stepped, liquidate(197_576), err.InvalidTickSize)
    assert_rejected(s, replace(liquidate(197_575), price=197_600), err.FillPriceMismatch)
    assert_rejected(s, liquidate(197_575, expiry=NOW), err.OrderExpired)
    assert_rejected(s, liquidate(197_575, signer=BOB), err.InvalidOrderSignature)
    assert_rejected(s, liquidate(197_575, order_size=ETH - 1), err.Overfill)
    assert_rejected(s, liquidate(197_575, liquidated=BOB.address), err.NotLiquidatable)
    assert_rejected(s, liquidate(197_575, is_buy=False), err.NotAReduction)
    assert_rejected(s, liquidate(197_575, size=ETH + 1), err.NotAReduction)
    assert_rejected(s, liquidate(197_574), err.PriceBeyondFillable)
    poor = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(100 * USDC)},
                      199_000)
    assert_rejected(poor, liquidate(197_575), err.InsufficientMargin)


def test_healthy_account_exactly_at_maintenance_margin_is_not_liquidatable() -> None:
    """At 2000.00 the long has E = MM = 100 USDC: NotLiquidatable; at 1999.99 it is."""
    state = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       200_000)
    assert_rejected(state, liquidate(200_000), err.NotLiquidatable)
    state = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       199_999)
    apply_transaction(state, liquidate(199_999), NOW, DOMAIN)
    assert state.account(LONG).positions == ()


def test_zero_size_remainder_and_partial_liquidation(at_1990: State) -> None:
    """A half liquidation leaves half the position and a well-margined
    account; the second half closes it to a zero-size remainder (dropped)."""
    apply_transaction(at_1990, liquidate(197_575, size=ETH // 2, order_size=ETH), NOW, DOMAIN)
    half = at_1990.account(LONG)
    assert half.position(1).size == ETH // 2
    assert equity(half, at_1990.markets) >= 0
    short = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       180_000, fund=10 * USDC)
    apply_transaction(short, liquidate(189_000), NOW, DOMAIN)  # the fund pays 10 USDC
    assert short.account(LONG) == Account(0, 0, ())


def test_fund_exactly_empty_covers_one_unit_short_does_not() -> None:
    """At 1800.00 a close at 1890.00 needs 10 USDC from the fund: a fund of
    exactly 10 USDC covers it and ends at 0; 9.999999 USDC does not."""
    accounts = {LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)}
    state = make_state(accounts, 180_000, fund=10 * USDC)
    apply_transaction(state, liquidate(189_000), NOW, DOMAIN)
    assert state.system.insurance_fund == 0 and state.account(LONG) == Account(0, 0, ())
    state = make_state(accounts, 180_000, fund=10 * USDC - 1)
    assert_rejected(state, liquidate(189_000), err.InsuranceFundShort)
    # at exactly the bankruptcy price an empty fund covers the delta of 0
    state = make_state(accounts, 180_000, fund=0)
    apply_transaction(state, liquidate(190_000), NOW, DOMAIN)
    assert state.system.insurance_fund == 0


# -- Deleverage rules, in order --------------------------------------------------------


def test_deleverage_rules_in_order() -> None:
    s = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                   180_000)
    assert_rejected(s, Deleverage(LONG, S1, 9, ETH), err.UnknownMarket)
    assert_rejected(s, Deleverage(LONG, LONG, 1, ETH), err.SelfTrade)
    assert_rejected(s, Deleverage(LONG, S1, 1, 0), err.ZeroFillSize)
    stepped = make_state({LONG: long_1eth(), S1: short_1eth()}, 180_000, step_size=10)
    assert_rejected(stepped, Deleverage(LONG, S1, 1, ETH - 1), err.InvalidStepSize)
    assert_rejected(s, Deleverage(S1, LONG, 1, ETH), err.NotDeleveragable)  # S1 has E > 0
    assert_rejected(s, Deleverage(LONG, ALICE.address, 1, ETH), err.NotAReduction)  # no position
    assert_rejected(s, Deleverage(LONG, S1, 1, ETH + 1), err.NotAReduction)
    other_long = make_state({LONG: long_1eth(), BOB.address: long_1eth(),
                             S1: Account(4_200 * USDC, 0, (Position(1, -2 * ETH, -4_000 * USDC),))},
                            180_000)
    assert_rejected(other_long, Deleverage(LONG, BOB.address, 1, ETH), err.NotAReduction)


def test_deleverage_of_an_account_the_fund_could_cover() -> None:
    """E = -100 USDC: a fund of 100 USDC covers it (fund + E = 0):
    NotDeleveragable; 99.999999 USDC does not."""
    accounts = {LONG: long_1eth(), S1: short_1eth()}
    assert_rejected(make_state(accounts, 180_000, fund=100 * USDC), Deleverage(LONG, S1, 1, ETH),
                    err.NotDeleveragable)
    state = make_state(accounts, 180_000, fund=100 * USDC - 1)
    apply_transaction(state, Deleverage(LONG, S1, 1, ETH), NOW, DOMAIN)
    assert state.system.insurance_fund == 100 * USDC - 1  # a deleverage never touches the fund


def test_deleverage_that_leaves_the_offset_riskier() -> None:
    """An offset short of 2 ETH with 150 USDC of equity at 1800.00 buying 1
    ETH back at the bankruptcy price 1900.00 ends at E' = 50 < MM' = 90 with
    a worse ratio (150 x 90 > 50 x 180): the StarkEx check rejects it."""
    offset = Account(3_750 * USDC, 0, (Position(1, -2 * ETH, -4_000 * USDC),))
    state = make_state({LONG: long_1eth(), S1: offset, BOB.address: long_1eth()}, 180_000)
    assert_rejected(state, Deleverage(LONG, S1, 1, ETH),
                    err.IllegalTransitionReducingTotalValueRiskRatio)


# -- SettleFunding ---------------------------------------------------------------------


def test_settle_funding_moves_funding_to_the_pool_and_keeps_equity() -> None:
    """The long owes ceil(10_000 x 500 / 10^6) = 5 base units after the index
    moved 500 (price units x ppm): SettleFunding pays them into the pool,
    records settled_funding = 5 and leaves equity unchanged."""
    state = make_state({LONG: long_1eth(), S1: short_1eth()}, 200_000, funding_index=500)
    before = equity(state.account(LONG), state.markets)
    apply_transaction(state, SettleFunding(LONG, 1), NOW, DOMAIN)
    long = state.account(LONG)
    assert long.collateral == -1_900 * USDC - 5 and long.position(1).settled_funding == 5
    assert long.position(1).funding_index == 500
    assert equity(long, state.markets) == before and state.system.funding_pool == 5
    apply_transaction(state, SettleFunding(S1, 1), NOW, DOMAIN)
    assert state.account(S1).position(1).settled_funding == -5 and state.system.funding_pool == 0
    assert_rejected(state, SettleFunding(ALICE.address, 1), err.NoPosition)
    assert_rejected(state, SettleFunding(LONG, 9), err.UnknownMarket)


def test_liquidation_settles_funding_of_both_sides() -> None:
    """Unsettled funding enters the liquidated account's equity; the
    Liquidate settles it (settled_funding of the liquidator's new position
    starts at 0, the liquidated position's is dropped with it)."""
    state = make_state({LONG: long_1eth(), S1: short_1eth(), ALICE.address: Account(10_000 * USDC)},
                       199_000, funding_index=500)
    apply_transaction(state, liquidate(197_575), NOW, DOMAIN)
    assert state.system.funding_pool == 5  # the long's 5 base units, settled
    assert state.account(ALICE.address).position(1).settled_funding == 0


# -- open interest ----------------------------------------------------------------------


def _fill(maker: Order, taker: Order, size: int) -> Fill:
    signers = {ALICE.address: ALICE, BOB.address: BOB}
    return Fill(maker, signers[maker.account].sign_order(DOMAIN, maker)[1], taker,
                signers[taker.account].sign_order(DOMAIN, taker)[1], size, maker.price)


def test_oi_scaled_margin_rejects_a_fill_that_fits_the_base_imf() -> None:
    """Caps 1_000 / 2_000 USDC of open notional: 1 ETH at 1666.00 makes the
    open notional 1_666 USDC, imf 10% -> 69.94%; 500 USDC covers the base
    initial margin (166.6 USDC) but not the effective one (1_165.2004 USDC)."""
    caps = {"oi_lower_cap": 1_000 * USDC, "oi_upper_cap": 2_000 * USDC}
    accounts = {ALICE.address: Account(500 * USDC), BOB.address: Account(10_000 * USDC)}
    state = make_state(accounts, 166_600, **caps)
    tx = _fill(Order(ALICE.address, 1, True, 166_600, ETH, 1, NOW + 60),
               Order(BOB.address, 1, False, 166_600, ETH, 2, NOW + 60), ETH)
    assert_rejected(state, tx, err.InsufficientMargin)
    plain = make_state(accounts, 166_600)
    apply_transaction(plain, tx, NOW, DOMAIN)
    assert plain.markets[1].open_interest == ETH
    after = replace(plain.markets[1], **caps)
    assert effective_imf_ppm(after) == 699_400
    assert initial_margin(plain.account(ALICE.address), {1: after}) == 1_165_200_400


def test_with_open_interest_is_replace() -> None:
    m = replace(GENESIS.markets[0].market, oi_lower_cap=3, oi_upper_cap=9, funding_index=-4)
    assert m.with_open_interest(7) == replace(m, open_interest=7)


def test_fill_open_interest_moves_by_longs() -> None:
    """OI = sum of longs: open 1 ETH (0 -> 1), a flip of the long to a short
    of 0.5 (1 -> 0.5: the other side is now long 0.5)."""
    state = make_state({ALICE.address: Account(10_000 * USDC), BOB.address: Account(10_000 * USDC)},
                       166_600)
    apply_transaction(state, _fill(Order(ALICE.address, 1, True, 166_600, ETH, 1, NOW + 60),
                                   Order(BOB.address, 1, False, 166_600, ETH, 2, NOW + 60), ETH),
                      NOW, DOMAIN)
    assert state.markets[1].open_interest == ETH
    apply_transaction(state, _fill(Order(ALICE.address, 1, False, 166_600, 3 * ETH // 2, 3, NOW + 60),
                                   Order(BOB.address, 1, True, 166_600, 3 * ETH // 2, 4, NOW + 60),
                                   3 * ETH // 2), NOW, DOMAIN)
    assert state.markets[1].open_interest == ETH // 2
    assert state.account(BOB.address).position(1).size == ETH // 2


# -- property ---------------------------------------------------------------------------

ACTORS = [ALICE, BOB, Signer(keccak(b"carol")), Signer(keccak(b"dave"))]

op = st.one_of(
    st.tuples(st.just("fill"), st.integers(0, 3), st.integers(0, 3), st.booleans(),
              st.integers(ETH // 4, 2 * ETH), st.integers(-3000, 3000)),
    st.tuples(st.just("oracle"), st.sampled_from([-25, -12, -5, -1, 1, 5, 12, 25])),
    st.tuples(st.just("oracle"), st.sampled_from([-25, 25])),
    st.tuples(st.just("liquidate"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 3 * ETH),
              st.integers(-3000, 3000)),
    st.tuples(st.just("deleverage"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 3 * ETH)),
    st.tuples(st.just("settle"), st.integers(0, 3)),
    st.tuples(st.just("funding"), st.integers(-2000, 2000)),
)


def _at_risk(state: State, addresses: list[bytes], default: int) -> int:
    """The index of the first liquidatable account (the likeliest target), else ``default``."""
    from node.liquidation import unsettled_of
    from node.risk import liquidatable

    for i, a in enumerate(addresses):
        if liquidatable(state.account(a), state.markets, unsettled_of(state.markets)):
            return i
    return default


@settings(max_examples=400 if SLOW else 60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25), st.integers(0, 50 * USDC),
       st.integers(ETH // 2, 2 * ETH), st.integers(ETH // 2, 2 * ETH), st.booleans())
def test_every_applied_tx_keeps_the_invariants(ops: list[tuple], fund: int, size_a: int,
                                               size_b: int, side: bool) -> None:
    """Random fills, oracle moves (+-25% steps), funding index moves,
    liquidations near the fillable price, deleverages and settlements: every
    applied transaction keeps the ledger invariants (sizes sum to 0, OI ==
    longs, collateral + pool + fund == deposits, fund >= 0, settled_funding
    sums to the pool less what closed positions took), every rejected one
    changes nothing."""
    from node.risk import (
        BANKRUPTCY_ADJUSTMENT_PPM,
        SPREAD_TO_MMR_PPM,
        bankruptcy_price,
        fillable_price,
    )
    from node.liquidation import unsettled_of

    state = make_state({}, 200_000, fund=fund)
    addresses = [a.address for a in ACTORS]
    deposits = fund  # the fund's opening balance counts as money in
    for i, who in enumerate(ACTORS):
        apply_transaction(state, Deposit(i, who.address, 400 * USDC), NOW, DOMAIN)
        deposits += 400 * USDC
    lost = 0  # settled_funding of positions that closed
    salt = 0
    opening = [("fill", 0, 1, side, size_a, 0), ("fill", 2, 3, not side, size_b, 0)]
    for step in opening + ops:
        salt += 1
        m = state.markets[1]
        tx: Transaction | None = None
        kind = step[0]
        if kind == "fill":
            _, a, b, buy, size, off = step
            if a == b:
                continue
            price = max(m.oracle_price + off, 1)
            maker = Order(addresses[a], 1, buy, price, size, salt, NOW + 60)
            taker = Order(addresses[b], 1, not buy, price, size, salt, NOW + 60)
            tx = Fill(maker, ACTORS[a].sign_order(DOMAIN, maker)[1], taker,
                      ACTORS[b].sign_order(DOMAIN, taker)[1], size, price)
        elif kind == "oracle":
            state.set_market(replace(m, oracle_price=max(m.oracle_price * (100 + step[1]) // 100, 1)))
            state.commit()
            continue
        elif kind == "funding":
            state.set_market(replace(m, funding_index=m.funding_index + step[1]))
            state.commit()
            continue
        elif kind == "liquidate":
            _, v, liq, size, off = step
            v = _at_risk(state, addresses, v)
            liq = (v + 1 + liq % 3) % 4
            victim = state.account(addresses[v])
            pos = victim.position(1)
            price = m.oracle_price + off
            if pos is not None:
                try:
                    bound = fillable_price(victim, state.markets, 1, BANKRUPTCY_ADJUSTMENT_PPM,
                                           SPREAD_TO_MMR_PPM, unsettled_of(state.markets))
                    price = bound + (abs(off) if pos.size > 0 else -abs(off)) // 100 - off // 1000
                    if off > 0:  # at the bankruptcy price (or the bound): the fund is not needed
                        close = min(size, abs(pos.size))
                        bp = bankruptcy_price(victim, state.markets, 1,
                                              -close if pos.size > 0 else close,
                                              unsettled_of(state.markets))
                        price = max(bp, bound) if pos.size > 0 else min(bp, bound)
                except ValueError:
                    pass
            order = Order(addresses[liq], 1, pos is None or pos.size > 0, max(price, 1), size, salt,
                          NOW + 60)
            tx = Liquidate(addresses[v], order, ACTORS[liq].sign_order(DOMAIN, order)[1], size,
                           max(price, 1))
        elif kind == "deleverage":
            _, v, o, size = step
            v = _at_risk(state, addresses, v)
            o = (v + 1 + o % 3) % 4
            tx = Deleverage(addresses[v], addresses[o], 1, size)
        else:
            tx = SettleFunding(addresses[step[1]], 1)
        before = {a: state.account(a) for a in addresses}
        market_before = state.markets[1]
        root = state.commit()
        try:
            apply_transaction(state, tx, NOW, DOMAIN)
        except err.InvalidTransaction:
            assert state.dirty_items() == {} and state.commit() == root
            continue
        state.commit()
        for a in addresses:
            old, new = before[a].position(1), state.account(a).position(1)
            if old is not None and new is None:  # closed: its settled funding leaves the sum
                lost += old.settled_funding + unsettled_funding(market_before, old)
        check_ledger(state, addresses + [FEE], deposits, 0, 10**9)
        settled = sum(p.settled_funding for a in addresses for p in state.account(a).positions)
        assert settled + lost == state.system.funding_pool
        assert state.system.insurance_fund >= 0


def test_deleverage_writes_the_fee_account_leaf_even_without_dust() -> None:
    """Deleverage names the fee account among its writes: with no rounding
    dust (M = N = 1) its leaf is still written (created if absent: the root
    depends on it, as for a Fill)."""
    from node.state import account_key

    state = make_state({LONG: long_1eth(), S1: short_1eth()}, 180_000)
    assert state.tree.get(state.root, account_key(FEE)) is None
    apply_transaction(state, Deleverage(LONG, S1, 1, ETH), NOW, DOMAIN)
    assert account_key(FEE) in state.dirty_items()


def test_list_market_risk_parameters() -> None:
    """ListMarket's new fields: InvalidFee for max_liquidation_fee_ppm >
    10^6, then InvalidOpenInterestCaps (upper != 0 and lower >= upper)
    before InvalidPrice; a valid listing stores them with open interest 0;
    a genesis file with bad caps is refused."""
    from node.genesis import parse_genesis
    from node.transactions import ListMarket

    admin = Signer(keccak(b"admin"))
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(ZERO_HASH, replace(GENESIS, admin=admin.address).leaves()))

    def listing(fee: int, lower: int, upper: int, price: int = 100) -> ListMarket:
        tx = ListMarket(3, b"DOGE-USD".ljust(16, b"\x00"), 4, 0, 1, 1, 200_000, 100_000, 0, 0,
                        price, b"", fee, lower, upper)
        return admin.list_market(DOMAIN, tx)

    assert_rejected(state, listing(10**6 + 1, 0, 0, price=0), err.InvalidFee)
    assert_rejected(state, listing(15_000, 5, 5, price=0), err.InvalidOpenInterestCaps)
    assert_rejected(state, listing(15_000, 0, 0, price=0), err.InvalidPrice)
    apply_transaction(state, listing(10**6, 25 * 10**12, 50 * 10**12), NOW, DOMAIN)
    m = state.markets[3]
    assert (m.max_liquidation_fee_ppm, m.open_interest, m.oi_lower_cap, m.oi_upper_cap) == (
        10**6, 0, 25 * 10**12, 50 * 10**12)
    raw = {"l1ChainId": 1, "l2ChainId": 2, "sequencer": "0x" + "11" * 20,
           "oracle": "0x" + "22" * 20, "feeAccount": "0x" + "33" * 20,
           "markets": [{"id": 1, "symbol": "ETH-USD", "priceDecimals": 2, "sizeDecimals": 4,
                        "tickSize": 1, "stepSize": 1, "initialMarginPpm": 100_000,
                        "maintenanceMarginPpm": 50_000, "makerFeePpm": 0, "takerFeePpm": 0,
                        "openInterestLowerCap": 9, "openInterestUpperCap": 9}]}
    with pytest.raises(ValueError, match="open interest caps"):
        parse_genesis(raw)
    raw["markets"][0]["openInterestLowerCap"] = 0
    assert parse_genesis(raw).markets[0].market.oi_upper_cap == 9
