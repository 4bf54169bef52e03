"""Funding (docs/protocol.md "Funding"): the FundingTick rules and their typed
errors, the rate clamp, the elapsed cap, lazy settlement in Fill and
Withdraw with its rounding, equity with unsettled funding, the ledger
invariant over random sequences, and a tick posted over JSON-RPC."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import exceptions as err
from node.crypto import keccak
from node.funding import (
    DEFAULT_FUNDING_PPM,
    FUNDING_PERIOD,
    MAX_FUNDING_ELAPSED,
    funding_elapsed,
    funding_owed,
    funding_rate,
    index_delta,
    rate_cap,
)
from node.margin import equity, free_collateral, unsettled_funding
from node.signing import Signer
from node.state import Market, State
from node.stf import apply_transaction
from node.transactions import FundingTick, decode_tx, encode_tx
from tests.test_stf import ALICE, BOB, DOMAIN, ETH, FEE, NOW, ORACLE, fill, fund, new_state, order

BTC = 2
CAROL = Signer(keccak(b"carol"))
D_ETH = 10**6  # ETH-USD: pd 2 + sd 4
D_BTC = 10**6  # BTC-USD: pd 1 + sd 5


def tick(state: State, market: int, timestamp: int, premium: int, now: int = NOW) -> None:
    apply_transaction(state, ORACLE.funding_tick(DOMAIN, market, timestamp, premium), now, DOMAIN)


def assert_rejected(state: State, tx: FundingTick, exc: type[err.InvalidTransaction]) -> None:
    root = state.commit()
    with pytest.raises(exc):
        apply_transaction(state, tx, NOW, DOMAIN)
    assert state.dirty_items() == {} and state.commit() == root


@pytest.fixture
def state() -> State:
    s = new_state()
    fund(s, (ALICE, 10_000_000_000), (BOB, 10_000_000_000))
    return s


# -- FundingTick rules -------------------------------------------------------

def test_tick_rules_in_order_and_a_failed_tick_changes_nothing(state: State) -> None:
    tick(state, ETH, NOW - 100, 0)
    bad_sig = ALICE.funding_tick(DOMAIN, 99, NOW + 5, 2_000_000)  # every rule broken
    assert_rejected(state, bad_sig, err.InvalidOracleSignature)
    assert_rejected(state, ORACLE.funding_tick(DOMAIN, 99, NOW + 5, 2_000_000), err.UnknownMarket)
    assert_rejected(state, ORACLE.funding_tick(DOMAIN, ETH, NOW - 100, 2_000_000),
                    err.StaleFundingTick)
    assert_rejected(state, ORACLE.funding_tick(DOMAIN, ETH, NOW - 101, 0), err.StaleFundingTick)
    assert_rejected(state, ORACLE.funding_tick(DOMAIN, ETH, NOW + 1, 2_000_000),
                    err.FundingTickInFuture)
    for premium in (1_000_001, -1_000_001, 2**31 - 1, -(2**31)):
        assert_rejected(state, ORACLE.funding_tick(DOMAIN, ETH, NOW, premium), err.InvalidPremium)
    tick(state, ETH, NOW, -1_000_000)  # the bound itself is valid; at block time is not future
    assert state.markets[ETH].funding_time == NOW


def test_tick_encoding_round_trips_through_the_stf(state: State) -> None:
    tx = decode_tx(encode_tx(ORACLE.funding_tick(DOMAIN, ETH, NOW - 5, -1234)))
    assert isinstance(tx, FundingTick) and tx.premium_ppm == -1234
    apply_transaction(state, tx, NOW, DOMAIN)
    assert state.markets[ETH].funding_rate_ppm == -1234 + DEFAULT_FUNDING_PPM


def test_first_tick_only_sets_time_and_rate(state: State) -> None:
    before = state.markets[ETH]
    tick(state, ETH, NOW - 50, 5_000)
    m = state.markets[ETH]
    assert (m.funding_index, m.funding_time, m.funding_rate_ppm) == (0, NOW - 50, 5_100)
    assert replace(m, funding_time=0, funding_rate_ppm=0) == before
    assert state.markets[BTC].funding_time == 0  # one market's tick writes only that market


def test_rate_clamp_both_sides(state: State) -> None:
    cap = rate_cap(100_000, 50_000)
    assert cap == 300_000
    assert funding_rate(1_000_000, 100_000, 50_000) == cap
    assert funding_rate(-1_000_000, 100_000, 50_000) == -cap
    assert funding_rate(cap - DEFAULT_FUNDING_PPM, 100_000, 50_000) == cap
    assert funding_rate(-cap - DEFAULT_FUNDING_PPM, 100_000, 50_000) == -cap
    assert funding_rate(0, 100_000, 50_000) == DEFAULT_FUNDING_PPM
    assert funding_rate(5, 50_000, 50_000) == 0  # imf == mmf: no funding at all
    price = state.markets[ETH].oracle_price
    tick(state, ETH, NOW - 2 * FUNDING_PERIOD, 0)
    tick(state, ETH, NOW - FUNDING_PERIOD, 1_000_000)
    assert state.markets[ETH].funding_rate_ppm == cap
    assert state.markets[ETH].funding_index == cap * price
    tick(state, ETH, NOW, -1_000_000)
    assert state.markets[ETH].funding_rate_ppm == -cap
    assert state.markets[ETH].funding_index == 0


def test_elapsed_cap_and_truncation_toward_zero(state: State) -> None:
    assert funding_elapsed(0, NOW) == 0
    assert funding_elapsed(NOW - 10, NOW) == 10
    assert funding_elapsed(NOW - 10 * 3600, NOW) == MAX_FUNDING_ELAPSED
    assert index_delta(7, 3, 1) == 0 and index_delta(-7, 3, 1) == 0  # not floor (-1)
    assert index_delta(-100, 166_600, 10) == -(100 * 166_600 * 10 // FUNDING_PERIOD)
    price = state.markets[ETH].oracle_price
    tick(state, ETH, NOW - 10 * 3600, 0)
    tick(state, ETH, NOW, 0)  # ten hours later: pays for eight
    assert state.markets[ETH].funding_index == DEFAULT_FUNDING_PPM * price


def test_settlement_rounding_payer_ceil_receiver_floor() -> None:
    # index up by 1: a long pays ceil(1e-6) = 1, a short receives floor(1e-6) = 0
    assert funding_owed(1, 1, 0, D_ETH) == 1
    assert funding_owed(-1, 1, 0, D_ETH) == 0
    # index down by 1: the short pays, the long receives nothing
    assert funding_owed(-1, -1, 0, D_ETH) == 1
    assert funding_owed(1, -1, 0, D_ETH) == 0
    # exact amounts are exact on both sides
    assert funding_owed(3, 5 * D_ETH, 0, D_ETH) == 15
    assert funding_owed(-3, 5 * D_ETH, 0, D_ETH) == -15
    assert funding_owed(-3, 5 * D_ETH + 1, 0, D_ETH) == -15
    assert funding_owed(3, 5 * D_ETH + 1, 0, D_ETH) == 16


# -- settlement in Fill and Withdraw -----------------------------------------

def _open(state: State, size: int = 10_000, salt: int = 1) -> None:
    """Alice short ``size`` ETH, Bob long ``size``, at 1666.00."""
    apply_transaction(state, fill(order(ALICE, False, 166_600, size, salt=salt),
                                  order(BOB, True, 166_600, size, salt=salt)), NOW, DOMAIN)


def _two_ticks(state: State, market: int = ETH, premium: int = 1_000_000) -> int:
    tick(state, market, NOW - 20, premium)
    tick(state, market, NOW - 10, premium)
    return state.markets[market].funding_index


def test_fill_settles_maker_then_taker_then_trades(state: State) -> None:
    _open(state)
    index = _two_ticks(state)
    assert index == 300_000 * 166_600 * 10 // FUNDING_PERIOD
    alice, bob = state.account(ALICE.address), state.account(BOB.address)
    m = state.markets[ETH]
    u_alice = unsettled_funding(m, alice.position(ETH))
    u_bob = unsettled_funding(m, bob.position(ETH))
    assert u_bob == -(-10_000 * index // D_ETH) > 0 and u_alice == -(10_000 * index // D_ETH) < 0
    eq_alice, eq_bob = equity(alice, state.markets), equity(bob, state.markets)
    fee_before = state.account(FEE).collateral
    # Bob sells 4_000 to Alice at the oracle price: both settle, then trade
    apply_transaction(state, fill(order(ALICE, True, 166_600, 4_000, salt=2),
                                  order(BOB, False, 166_600, 4_000, salt=2)), NOW, DOMAIN)
    a2, b2 = state.account(ALICE.address), state.account(BOB.address)
    fees = state.account(FEE).collateral - fee_before
    notional = 4_000 * 166_600  # pd + sd = 6: exact
    assert a2.collateral == alice.collateral - u_alice - notional - (-(-notional * 200 // 10**6))
    assert b2.collateral == bob.collateral - u_bob + notional - (-(-notional * 500 // 10**6))
    assert a2.position(ETH).funding_index == b2.position(ETH).funding_index == index
    assert state.system.funding_pool == u_alice + u_bob == 1  # the rounding dust
    # equity moved only by the fees: settlement itself never changes equity
    assert equity(a2, state.markets) + equity(b2, state.markets) + fees == eq_alice + eq_bob


def test_open_from_zero_and_flip_start_at_the_current_index(state: State) -> None:
    fund(state, (CAROL, 10_000_000_000))
    _open(state, 1_000)
    index = _two_ticks(state)
    # Carol opens from zero against Alice, who flips from short 1_000 to long 1_000
    carol_sell = order(CAROL, False, 166_600, 2_000, salt=3)
    apply_transaction(state, fill(carol_sell, order(ALICE, True, 166_600, 2_000, salt=3),
                                  maker_signer=CAROL), NOW, DOMAIN)
    carol, alice = state.account(CAROL.address), state.account(ALICE.address)
    assert carol.position(ETH).size == -2_000 and carol.position(ETH).funding_index == index
    assert alice.position(ETH).size == 1_000 and alice.position(ETH).funding_index == index
    assert unsettled_funding(state.markets[ETH], carol.position(ETH)) == 0


def test_withdraw_settles_all_positions_in_market_order(state: State) -> None:
    _open(state)
    apply_transaction(state, fill(order(BOB, False, 235_000, 10_000, salt=5, market=BTC),
                                  order(ALICE, True, 235_000, 10_000, salt=5, market=BTC)),
                      NOW, DOMAIN)
    i_eth, i_btc = _two_ticks(state, ETH), _two_ticks(state, BTC, -1_000_000)
    bob = state.account(BOB.address)
    owed = (funding_owed(10_000, i_eth, 0, D_ETH), funding_owed(-10_000, i_btc, 0, D_BTC))
    assert owed[0] > 0 and owed[1] > 0  # long ETH and short BTC both pay
    eq = equity(bob, state.markets)
    apply_transaction(state, BOB.withdraw(DOMAIN, BOB.address, 1_000_000, 0), NOW, DOMAIN)
    after = state.account(BOB.address)
    assert after.collateral == bob.collateral - sum(owed) - 1_000_000
    assert [p.funding_index for p in after.positions] == [i_eth, i_btc]
    assert state.system.funding_pool == sum(owed)
    assert equity(after, state.markets) == eq - 1_000_000


def test_withdraw_checks_free_collateral_with_funding(state: State) -> None:
    _open(state)
    _two_ticks(state)
    bob = state.account(BOB.address)
    owed = unsettled_funding(state.markets[ETH], bob.position(ETH))
    free = free_collateral(bob, state.markets)
    settled = replace(bob.position(ETH), funding_index=state.markets[ETH].funding_index)
    no_funding = replace(bob, positions=(settled,))
    assert free_collateral(no_funding, state.markets) == free + owed
    root = state.commit()
    with pytest.raises(err.InsufficientFreeCollateral):  # fine without funding, not with it
        apply_transaction(state, BOB.withdraw(DOMAIN, BOB.address, free + 1, 0), NOW, DOMAIN)
    assert state.dirty_items() == {} and state.commit() == root
    apply_transaction(state, BOB.withdraw(DOMAIN, BOB.address, free, 0), NOW, DOMAIN)
    assert free_collateral(state.account(BOB.address), state.markets) == 0


# -- ledger invariant over random sequences ----------------------------------

ACCOUNTS = (ALICE, BOB, CAROL)
DEPOSIT = 100_000_000  # 100 USDC each: margin checks fail often enough to matter

_ops = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.sampled_from((ETH, BTC)), st.integers(1, 12 * 3600),
              st.integers(-1_000_000, 1_000_000)),
    st.tuples(st.just("fill"), st.sampled_from((ETH, BTC)), st.permutations(range(3)),
              st.booleans(), st.integers(1, 7_000)),
    st.tuples(st.just("withdraw"), st.integers(0, 2), st.integers(1, 50_000_000)),
    st.tuples(st.just("price"), st.sampled_from((ETH, BTC)), st.integers(-30, 30)),
), min_size=1, max_size=25)


def _check_invariant(state: State, deposits: int, withdrawn: int, settlements: int) -> None:
    addresses = [a.address for a in ACCOUNTS] + [FEE]
    accounts = [state.account(a) for a in addresses]
    pool = state.system.funding_pool
    assert sum(a.collateral for a in accounts) + pool == deposits - withdrawn
    unsettled = [unsettled_funding(state.markets[p.market], p)
                 for a in accounts for p in a.positions]
    open_with_funding = sum(1 for a in accounts for p in a.positions
                            if p.funding_index != state.markets[p.market].funding_index)
    assert 0 <= pool + sum(unsettled) <= settlements + open_with_funding
    for m in state.markets:
        assert sum(p.size for a in accounts for p in a.positions if p.market == m) == 0


SLOW = os.environ.get("DERIVNET_SLOW") == "1"  # 3,000 random sequences instead of 150


@settings(max_examples=3000 if SLOW else 150, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
def test_ledger_invariant_over_random_ticks_fills_withdraws(ops) -> None:
    state = new_state()
    fund(state, *((a, DEPOSIT) for a in ACCOUNTS))
    deposits, withdrawn, settlements = 3 * DEPOSIT, 0, 0
    clock = {ETH: NOW - 2 * 10**6, BTC: NOW - 2 * 10**6}
    salt = 0
    for op in ops:
        salt += 1
        try:
            if op[0] == "tick":
                _, m, dt, premium = op
                clock[m] += dt
                tick(state, m, clock[m], premium)
            elif op[0] == "price":
                _, m, pct = op
                price = max(1, state.markets[m].oracle_price * (100 + pct) // 100)
                t = state.markets[m].oracle_time + 1
                apply_transaction(state, ORACLE.oracle_price(DOMAIN, m, price, t), NOW, DOMAIN)
            elif op[0] == "fill":
                _, m, (i, j, _), maker_buys, size = op
                maker, taker = ACCOUNTS[i], ACCOUNTS[j]
                price = state.markets[m].oracle_price
                mo = order(maker, maker_buys, price, size, salt=salt, market=m)
                to = order(taker, not maker_buys, price, size, salt=salt, market=m)
                index = state.markets[m].funding_index
                touched = sum(1 for who in (maker, taker)
                              if (p := state.account(who.address).position(m)) is not None
                              and p.funding_index != index)
                apply_transaction(state, fill(mo, to, maker_signer=maker, taker_signer=taker),
                                  NOW, DOMAIN)
                settlements += touched
            else:
                _, i, amount = op
                who = ACCOUNTS[i]
                acc = state.account(who.address)
                touched = sum(1 for p in acc.positions
                              if p.funding_index != state.markets[p.market].funding_index)
                eq = equity(acc, state.markets)
                apply_transaction(state, who.withdraw(DOMAIN, who.address, amount, acc.nonce),
                                  NOW, DOMAIN)
                assert equity(state.account(who.address), state.markets) == eq - amount
                settlements += touched
                withdrawn += amount
        except err.InvalidTransaction:
            pass
        state.commit()
        _check_invariant(state, deposits, withdrawn, settlements)


# -- over JSON-RPC -----------------------------------------------------------

def test_tick_over_json_rpc_settles_on_the_next_fill() -> None:
    from node.node import Node, NodeConfig
    from node.signing import dev_keys
    from node.transactions import Deposit
    from tests.test_rpc import order as rpc_order

    keys = dev_keys(10)
    maker, taker, oracle = Signer(keys[3]), Signer(keys[4]), Signer(keys[1])
    node = Node(NodeConfig(serve_l1=False))
    try:
        def call(method: str, *params: object) -> dict:
            return json.loads(node.app.handle(json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})))

        def send_tick(timestamp: int, premium: int) -> dict:
            t = oracle.funding_tick(node.chain.domain, ETH, timestamp, premium)
            return call("l2_sendFundingTick", {"market": "ETH-USD", "timestamp": hex(timestamp),
                                               "premiumPpm": str(premium),
                                               "signature": "0x" + t.signature.hex()})

        node.sequencer.include_deposit(Deposit(0, maker.address, 10**12))
        node.sequencer.include_deposit(Deposit(1, taker.address, 10**12))
        node.sequencer.seal()
        assert "result" in call("l2_sendOrder", rpc_order(node, maker, False, 166_600, 10_000, 1))
        assert "result" in call("l2_sendOrder", rpc_order(node, taker, True, 166_600, 10_000, 2))
        node.sequencer.seal()
        now = node.chain.head.header.timestamp
        assert "txHash" in send_tick(now - 20, 1_000_000)["result"]
        assert "txHash" in send_tick(now - 10, 1_000_000)["result"]
        e = send_tick(now - 10, 0)["error"]
        assert e["code"] == -32003 and e["data"] == {"rule": "StaleFundingTick"}
        e = send_tick(now + 3600, 0)["error"]
        assert e["data"] == {"rule": "FundingTickInFuture"}
        e = send_tick(now - 5, 1_000_001)["error"]
        assert e["data"] == {"rule": "InvalidPremium"}
        node.sequencer.seal()
        index = 300_000 * 166_600 * 10 // FUNDING_PERIOD
        (eth,) = [m for m in call("l2_getMarkets")["result"] if m["symbol"] == "ETH-USD"]
        assert eth["fundingIndex"] == str(index) and eth["fundingRate8h"] == str(300_000)
        assert eth["fundingRate1h"] == str(300_000 // 8) and int(eth["fundingTime"], 16) == now - 10
        owed = -(-10_000 * index // D_ETH)
        acct = call("l2_getAccount", "0x" + taker.address.hex())["result"]
        assert acct["positions"][0]["unsettledFunding"] == str(owed)
        assert acct["positions"][0]["fundingIndex"] == "0"
        collateral = int(acct["collateral"])
        # the next fill settles the taker's funding
        assert "result" in call("l2_sendOrder", rpc_order(node, maker, False, 166_600, 1_000, 3))
        assert "result" in call("l2_sendOrder", rpc_order(node, taker, True, 166_600, 1_000, 4))
        node.sequencer.seal()
        acct = call("l2_getAccount", "0x" + taker.address.hex())["result"]
        assert acct["positions"][0]["unsettledFunding"] == "0"
        assert acct["positions"][0]["fundingIndex"] == str(index)
        notional = 1_000 * 166_600
        taker_fee = -(-notional * 500 // 10**6)
        assert int(acct["collateral"]) == collateral - owed - notional - taker_fee
        system = call("l2_getSystem")["result"]
        assert system["fundingPool"] == str(owed - 10_000 * index // D_ETH)
    finally:
        node.close()


def test_markets_table_shows_the_8h_funding_rate_in_percent() -> None:
    from node.cli import MARKET_COLUMNS, _market_rows

    market = {"id": "0x1", "symbol": "ETH-USD", "priceDecimals": "0x2", "sizeDecimals": "0x4",
              "tickSize": "1", "stepSize": "1", "initialMarginPpm": "0x186a0",
              "maintenanceMarginPpm": "0xc350", "makerFeePpm": "0xc8", "takerFeePpm": "0x1f4",
              "oraclePrice": "166600", "fundingRate8h": "-1250"}
    (row,) = _market_rows([market])
    col = MARKET_COLUMNS.index("funding 8h %")
    assert row[col] == "-0.125"
    assert _market_rows([{**market, "fundingRate8h": "300000"}])[0][col] == "30"
    # open interest (base units) and the OI-scaled initial margin (risk spec v1)
    (row,) = _market_rows([{**market, "openInterest": "25000",
                            "initialMarginPpmEffective": "0x2aaa8"}])
    assert row[MARKET_COLUMNS.index("open interest")] == "2.5000"
    assert row[MARKET_COLUMNS.index("imf eff %")] == "17.476"
