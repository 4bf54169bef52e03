"""The sequencer's risk engine (sequencer/risk_engine.py): the liquidation
index never misses a liquidatable account and checks only the accounts an
oracle move reached; the engine liquidates through the book first (best
price first, within the fillable price), then with the backstop
liquidator, then deleverages against the ADL ranking; the door refuses
orders that would leave an account liquidatable."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from node import exceptions as err
from node.chain import Chain
from node.crypto import keccak
from node.db import MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.margin import equity
from node.risk import fillable_price, liquidatable
from node.signing import Signer
from node.state import Account, Market, Position, State
from node.transactions import Deposit, OraclePrice, Order, decode_tx
from sequencer.risk_engine import (
    BANKRUPTCY_ADJUSTMENT_PPM,
    SPREAD_TO_MMR_PPM,
    LiquidationIndex,
    RiskEngine,
    index_price,
    unsettled_of,
)
from sequencer.sequencer import Sequencer
from sequencer.validation import WouldBeLiquidatable

ETH, BTC = 1, 2
# ETH-USD as in docs/risk.md's examples: pd 2, sd 4 (value = size x price), imf 10%, mmf 5%
ETH_M = Market(ETH, 2, 4, 1, 1, 100_000, 50_000, 200, 500, 200_000)
BTC_M = Market(BTC, 1, 5, 1, 1, 100_000, 50_000, 200, 500, 235_000)
MARKETS = {ETH: ETH_M, BTC: BTC_M}
USDC = 10**6


def addr(i: int) -> bytes:
    return i.to_bytes(20, "big")


def long_(collateral_usdc: int, eth: int = 10_000) -> Account:
    """1 ETH (default) bought at 2000 with ``collateral_usdc`` deposited."""
    return Account(collateral_usdc * USDC - 2_000 * USDC * eth // 10_000, 0,
                   (Position(ETH, eth, 2_000 * USDC * eth // 10_000),))


def short_(collateral_usdc: int, eth: int = 10_000) -> Account:
    return Account(collateral_usdc * USDC + 2_000 * USDC * eth // 10_000, 0,
                   (Position(ETH, -eth, -2_000 * USDC * eth // 10_000),))


def at(price: int, markets: dict[int, Market] = MARKETS, market: int = ETH) -> dict[int, Market]:
    return {**markets, market: replace(markets[market], oracle_price=price)}


# -- the index ---------------------------------------------------------------


def test_index_files_longs_descending_shorts_ascending_and_due_finds_crossed() -> None:
    index = LiquidationIndex()
    accounts = {addr(1): long_(100), addr(2): long_(200), addr(3): long_(400),
                addr(4): short_(100), addr(5): short_(300)}
    for a, acc in accounts.items():
        index.update(a, acc, MARKETS)
    assert len(index) == 5
    prices = {a: index.entry(a, ETH) for a in accounts}
    # a long with 100 USDC on 1 ETH at 2000 hits E = MM at 2000.00 (docs/risk.md)
    assert prices[addr(1)] >= 200_000 > prices[addr(2)] > prices[addr(3)]
    assert prices[addr(4)] <= 200_000 < prices[addr(5)]
    assert set(index.due(at(210_000)[ETH])) == {addr(4)}
    assert set(index.due(at(195_000)[ETH])) == {addr(1)}
    assert set(index.due(at(185_000)[ETH])) == {addr(1), addr(2)}
    # closing a position forgets it
    index.update(addr(1), Account(5 * USDC), MARKETS)
    assert addr(1) not in index and len(index) == 4
    assert set(index.due(at(195_000)[ETH])) == set()
    assert index.holders(ETH) == {addr(2): 10_000, addr(3): 10_000, addr(4): -10_000,
                                  addr(5): -10_000}


def test_index_never_misses_a_liquidatable_account() -> None:
    """Random one- and two-market accounts, random prices: every account the
    exact check (funding included) liquidates is in ``due`` of the market
    that moved, and ``due`` returns few others."""
    rng = random.Random(8)
    for _ in range(300):
        index = LiquidationIndex()
        accounts: dict[bytes, Account] = {}
        for i in range(6):
            size = rng.choice([1, -1]) * rng.randrange(1, 40_000)
            entry = rng.randrange(150_000, 250_000)
            positions = [Position(ETH, size, size * entry, rng.randrange(-10**9, 10**9))]
            if rng.random() < 0.3:
                bsize = rng.choice([1, -1]) * rng.randrange(1, 100_000)
                positions.append(Position(BTC, bsize, bsize * 235_000 // 100,
                                          rng.randrange(-10**9, 10**9)))
            accounts[addr(i)] = Account(rng.randrange(-8_000, 3_000) * USDC, 0,
                                        tuple(positions))
        markets = {ETH: replace(ETH_M, funding_index=rng.randrange(-10**9, 10**9)),
                   BTC: replace(BTC_M, funding_index=rng.randrange(-10**9, 10**9))}
        for a, acc in accounts.items():
            index.update(a, acc, markets)
        price = rng.randrange(100_000, 300_000)
        moved = at(price, markets)
        due = set(index.due(moved[ETH]))
        for a, acc in accounts.items():
            if liquidatable(acc, moved, unsettled_of(moved)) and acc.position(ETH):
                assert a in due, (acc, price, index.entry(a, ETH))


def test_index_widens_for_funding_and_rebuilds_past_one_percent() -> None:
    index = LiquidationIndex()
    index.update(addr(1), long_(100), MARKETS)  # liquidatable at 2000.00 and below
    line = index.entry(addr(1), ETH)
    assert line is not None
    # longs pay: an index move of dI raises the line by about dI / (PPM - mmf)
    moved = replace(ETH_M, oracle_price=line + 500, funding_index=600 * 950_000)
    assert index.funding_slack(moved) >= 600
    assert index.due(moved) == [addr(1)]  # inside the widened window, checked exactly
    assert liquidatable(long_(100), {ETH: moved, BTC: BTC_M},
                        unsettled_of({ETH: moved, BTC: BTC_M}))
    # past 1% of the price, the market is recomputed at the new index
    far = replace(ETH_M, funding_index=3_000 * 950_000)
    state_markets = {ETH: far, BTC: BTC_M}

    class FakeState:
        markets = state_markets

        @staticmethod
        def account(a: bytes) -> Account:
            return long_(100)

    index.due(far, FakeState())  # type: ignore[arg-type]
    assert index.rebuilds == 1 and index.funding_slack(far) == 0
    assert index.entry(addr(1), ETH) == index_price(long_(100), state_markets, ETH)


# -- the engine on a real sequencer -------------------------------------------

GENESIS = load_genesis()
DOMAIN = Domain(GENESIS.l2_chain_id, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
ORACLE = Signer(bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"))
LONG, SHORT, SHORT2, MAKER, MAKER2 = (Signer(keccak(n)) for n in
                                      (b"long", b"short", b"short2", b"maker", b"maker2"))
BACKSTOP = Signer(keccak(b"backstop"))


class Clock:
    def __init__(self) -> None:
        self.t = float(NOW)

    def __call__(self) -> float:
        return self.t


def sequencer(deposits: dict[Signer, int]) -> tuple[Sequencer, Clock]:
    db = MemoryDB()
    Chain.initialize(db, GENESIS.leaves(), {"test": 1})
    clock = Clock()
    seq = Sequencer(Chain(db, DOMAIN), clock)
    for i, (who, usdc) in enumerate({**deposits, BACKSTOP: 1_000_000}.items()):
        seq.include_deposit(Deposit(i, who.address, usdc * USDC))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, ETH, 200_000, NOW))
    seq.seal()
    return seq, clock


_salt = iter(range(1, 10**6))


def order(seq: Sequencer, who: Signer, is_buy: bool, price: int, size: int,
          tif: str = "GTC") -> str:
    o = Order(who.address, ETH, is_buy, price, size, next(_salt), NOW + 10**6)
    return seq.send_order(o, who.sign_order(DOMAIN, o)[1], tif).status


def move(seq: Sequencer, clock: Clock, price: int) -> None:
    clock.t += 1
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, ETH, price, int(clock.t)))
    seq.seal()


def engine_txs(seq: Sequencer, engine: RiskEngine) -> list:
    """Run the engine's pending work; the transactions it sent, in order."""
    start = len(seq.chain.pending_txs)
    engine.step()
    return [decode_tx(raw) for raw in seq.chain.pending_txs[start:]]


def opened(long_usdc: int = 250,
           shorts: tuple[tuple[Signer, int, int], ...] = ((SHORT, 10_000, 1_000),),
           extra: dict[Signer, int] | None = None) -> tuple[Sequencer, Clock, RiskEngine]:
    """LONG buys 1 ETH at 2000.00 with ``long_usdc`` deposited (250: 8x, its
    line near 1843.16) from the shorts ((signer, size, deposit USDC)); the
    engine is built after, as at a node's start."""
    deposits = {LONG: long_usdc, **{s: usdc for s, _, usdc in shorts}, **(extra or {})}
    seq, clock = sequencer(deposits)
    for s, size, _ in shorts:
        assert order(seq, s, False, 200_000, size) == "resting"
    assert order(seq, LONG, True, 200_000, 10_000, "IOC") == "filled"
    seq.seal()
    engine = RiskEngine(seq, BACKSTOP.private_key)
    assert engine.step() == []  # the start-up pass: nobody is liquidatable
    return seq, clock, engine


def test_engine_liquidates_through_the_book_best_first_within_fillable_then_backstop() -> None:
    seq, clock, engine = opened(extra={MAKER: 100_000, MAKER2: 100_000})
    assert engine.view()["accountsWatched"] == "0x2"  # the long and the short
    order(seq, MAKER, True, 182_800, 500)
    order(seq, MAKER2, True, 182_900, 500)
    order(seq, MAKER, True, 175_000, 10_000)  # beyond the fillable price: never used
    seq.seal()
    move(seq, clock, 183_000)  # E = 79 < MM = 91.5 USDC: liquidatable
    engine.on_block(seq.chain.head)  # the node's on_block does this on every seal
    state = seq.chain.state
    bound = fillable_price(state.account(LONG.address), state.markets, ETH,
                           BANKRUPTCY_ADJUSTMENT_PPM, SPREAD_TO_MMR_PPM,
                           unsettled_of(state.markets))
    assert 175_000 < bound < 182_800
    txs = engine_txs(seq, engine)
    assert [(t.order.account, t.size, t.price) for t in txs[:2]] == [
        (MAKER2.address, 500, 182_900), (MAKER.address, 500, 182_800)]
    rest = txs[2]
    assert len(txs) == 3 and rest.order.account == BACKSTOP.address and rest.size == 9_000
    assert rest.price >= bound and all(t.liquidated == LONG.address for t in txs)
    block = seq.seal()
    assert block is not None and all(r.success for r in block.receipts)
    head = seq.chain.head_state()
    assert head.account(LONG.address).positions == ()
    assert head.system.insurance_fund > 0  # fees; no shortfall at E > 0
    v = engine.view()
    assert (v["liquidations"], v["backstopLiquidations"], v["deleverages"]) == ("0x2", "0x1", "0x0")
    assert [ro.order.price for ro in seq.books[ETH].side_orders(True)] == [175_000]


def test_engine_deleverages_a_bankrupt_account_against_the_top_ranked_short() -> None:
    # SHORT (0.6 ETH on 300 USDC) outranks SHORT2 (0.4 ETH on 2,000 USDC): more leverage
    seq, clock, engine = opened(shorts=((SHORT, 6_000, 300), (SHORT2, 4_000, 2_000)))
    move(seq, clock, 170_000)  # the long: E = -51 USDC, the fund is empty
    engine.on_block(seq.chain.head)
    ranked = engine.ranking(ETH, 10_000)
    assert ranked == [SHORT.address, SHORT2.address]
    view = engine.ranking_view(ETH)
    assert [r["account"] for r in view["shorts"]] == ["0x" + a.hex() for a in ranked]
    assert int(view["shorts"][0]["scorePpm"]) > int(view["shorts"][1]["scorePpm"]) > 0
    txs = engine_txs(seq, engine)
    assert [(t.offset, t.size) for t in txs] == [(SHORT.address, 6_000), (SHORT2.address, 4_000)]
    seq.seal()
    head = seq.chain.head_state()
    assert head.account(LONG.address).positions == ()
    assert equity(head.account(LONG.address), head.markets) >= 0
    assert engine.view()["deleverages"] == "0x2" and engine.view()["backstopLiquidations"] == "0x0"


def test_engine_drops_a_maker_the_stf_refuses_and_goes_on() -> None:
    seq, clock, engine = opened(extra={MAKER: 100_000, MAKER2: 30})
    order(seq, MAKER2, True, 182_900, 1_000)  # 0.1 ETH of bid on 30 USDC: fine alone
    order(seq, MAKER, True, 182_800, 10_000)
    seq.seal()
    # MAKER2 withdraws what its bid needs: the Liquidate against it fails its margin check
    seq.send_withdraw(MAKER2.withdraw(DOMAIN, MAKER2.address, 29 * USDC, 0))
    move(seq, clock, 183_000)
    engine.on_block(seq.chain.head)
    txs = engine_txs(seq, engine)
    assert [(t.order.account, t.size) for t in txs] == [(MAKER.address, 10_000)]
    assert engine.view()["rejectedByRule"] == {"InsufficientMargin": "0x1"}
    assert all(ro.order.account != MAKER2.address for ro in seq.books[ETH].side_orders(True))


def test_an_oracle_move_checks_only_the_accounts_it_reached() -> None:
    seq, clock, engine = opened(long_usdc=1_000)  # lines near 1053 (long) and 2857 (short)
    checks = engine.counters.checks
    move(seq, clock, 190_000)
    engine.on_block(seq.chain.head)
    assert engine_txs(seq, engine) == [] and engine.counters.checks == checks
    # a block's fills re-file their maker and taker (read from the encoded Fill)
    order(seq, SHORT, False, 190_000, 1_000)
    order(seq, LONG, True, 190_000, 1_000, "IOC")
    engine.on_block(seq.seal())
    assert engine.due and engine._touched == {SHORT.address, LONG.address}
    engine.step()
    assert engine.counters.checks == checks  # both still far from their lines
    move(seq, clock, 100_000)  # past the long's line: one exact check, one liquidation
    engine.on_block(seq.chain.head)
    assert engine_txs(seq, engine) and engine.counters.checks > checks


def test_door_refuses_a_reduction_that_leaves_the_account_liquidatable() -> None:
    seq, _, _ = opened(extra={MAKER: 100_000})
    order(seq, MAKER, True, 195_000, 10_000)
    # selling half at a limit of 1500.00 would leave E < 0 (the door prices at the limit)
    with pytest.raises(WouldBeLiquidatable):
        order(seq, LONG, False, 150_000, 5_000, "IOC")
    assert order(seq, LONG, False, 199_000, 5_000, "IOC") == "cancelled"  # no bid that high


def test_door_uses_the_open_interest_scaled_initial_margin() -> None:
    seq, _, _ = opened(long_usdc=1_000, extra={MAKER: 100_000})
    state = seq.chain.state  # the pending state the door reads
    eth = state.markets[ETH]
    assert eth.open_interest == 10_000
    # 1 ETH open (2,000 USDC notional) is past an upper cap of 300 USDC: imf 100%
    state.set_market(replace(eth, oi_lower_cap=100 * USDC, oi_upper_cap=300 * USDC))
    order(seq, MAKER, False, 200_000, 10_000)
    with pytest.raises(err.InsufficientMargin):
        order(seq, LONG, True, 200_000, 1_000, "IOC")  # fine at 10%, not at 100%
    state.set_market(eth)
    assert order(seq, LONG, True, 200_000, 1_000, "IOC") == "filled"


def test_an_error_in_one_check_is_counted_and_the_account_retried_later() -> None:
    seq, clock, engine = opened(extra={MAKER: 100_000})
    order(seq, MAKER, True, 182_800, 10_000)
    seq.seal()
    real = seq.send_liquidate

    def broken(tx: object) -> None:
        raise OSError("store unavailable")

    seq.send_liquidate = broken  # type: ignore[method-assign]
    move(seq, clock, 183_000)
    engine.on_block(seq.chain.head)
    assert engine.step() == []  # logged and skipped, the step itself goes on
    view = engine.view()
    assert view["errors"] == "0x1" and "store unavailable" in view["lastError"]
    seq.send_liquidate = real  # type: ignore[method-assign]
    move(seq, clock, 182_900)  # the next trigger checks the account again
    engine.on_block(seq.chain.head)
    assert engine.step() == [LONG.address]


def test_a_funding_tick_alone_can_make_an_account_liquidatable() -> None:
    """No oracle move: 8 hours of funding at 7.5% (longs pay ~150 USDC) take
    the long (E = 249, MM = 100 USDC) under its maintenance margin; the
    index's funding window finds it after the tick's block."""
    seq, clock, engine = opened()
    seq.send_funding_tick(ORACLE.funding_tick(DOMAIN, ETH, int(clock.t), 0))  # sets the time
    engine.on_block(seq.seal())
    assert engine.step() == []
    clock.t += 28_800
    seq.send_funding_tick(ORACLE.funding_tick(DOMAIN, ETH, int(clock.t), 75_000))
    engine.on_block(seq.seal())
    market = seq.chain.state.markets[ETH]
    assert engine.index.funding_slack(market) > 0  # the lines moved up to this much
    assert engine.step() == [LONG.address]
    seq.seal()
    assert seq.chain.head_state().account(LONG.address).positions == ()
    assert engine.view()["backstopLiquidations"] == "0x1"


def test_engine_transactions_survive_a_crash_and_the_index_is_rebuilt(tmp_path) -> None:
    """The engine's Liquidate is journaled by send_liquidate: after a stop
    without sealing (kill -9) the restarted sequencer has the same pending
    block, and a new engine files the accounts from the chain and that
    block."""
    from node.db import LevelDB

    db = LevelDB(str(tmp_path / "l2"))
    Chain.initialize(db, GENESIS.leaves(), {"test": 1})
    clock = Clock()
    seq = Sequencer(Chain(db, DOMAIN), clock)
    for i, (who, usdc) in enumerate(((LONG, 250), (SHORT, 1_000), (MAKER, 100_000),
                                     (BACKSTOP, 1_000_000))):
        seq.include_deposit(Deposit(i, who.address, usdc * USDC))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, ETH, 200_000, NOW))
    order(seq, SHORT, False, 200_000, 10_000)
    order(seq, LONG, True, 200_000, 10_000, "IOC")
    order(seq, MAKER, True, 182_800, 10_000)
    seq.seal()
    engine = RiskEngine(seq, BACKSTOP.private_key)
    move(seq, clock, 183_000)
    engine.on_block(seq.chain.head)
    assert engine.step() == [LONG.address]
    pending = tuple(seq.chain.pending_txs)
    assert [type(decode_tx(t)).__name__ for t in pending] == ["Liquidate"]
    db.close()  # no seal

    again = Sequencer(Chain(LevelDB(str(tmp_path / "l2")), DOMAIN), clock)
    try:
        assert tuple(again.chain.pending_txs) == pending
        # the maker's bid, all of it taken by the Liquidate, is not back in the book
        assert all(ro.order.account != MAKER.address for ro in again.books[ETH])
        rebuilt = RiskEngine(again, BACKSTOP.private_key)
        # the long is flat in the pending state; the short and the maker hold positions
        assert rebuilt.view()["accountsWatched"] == "0x2"
        assert rebuilt.index.holders(ETH) == {SHORT.address: -10_000, MAKER.address: 10_000}
        assert rebuilt.step() == []
    finally:
        again.chain.db.close()
