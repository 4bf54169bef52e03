"""One-step prover for issue 8's risk transactions (OneStepLiquidate.vy,
OneStepDeleverage.vy, OneStepRisk.vy's SettleFunding) against the Python
STF: every rule's failure, the boundaries of the acceptance list (exactly
at maintenance margin, a zero-size remainder, the insurance fund exactly
empty and one unit short, the price exactly at the fillable bound), and a
hypothesis run of random liquidations, deleverages and settlements, each
compared root for root with ``node.stf`` + ``State.commit``.

The worked examples are docs/risk.md's: ETH-USD (pd 2, sd 4: value = size x
price), imf 10%, mmf 5%; the long holds 1 ETH (10_000 size units) bought at
2000.00 with 100 USDC, the short sold 1 ETH at 2000.00 with 100 USDC.

Default run: the acceptance boundaries of the table and 12 random steps
(each step executes ~1M gas of py-evm: a few seconds in all); with
``DERIVNET_SLOW=1`` every rule of the table and 2,000 random steps,
``DERIVNET_LIQUIDATE_STEPS=N`` any count. Gas per type is measured by
scripts/bench_disputes.py ``osp_gas``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l1_stub.chain import EmbeddedL1
from node import exceptions as err
from node.crypto import keccak
from node.db import MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.margin import maintenance_margin
from node.risk import equity, fillable_price
from node.signing import Signer, dev_keys
from node.smt import EMPTY_ROOT, SparseMerkleTree
from node.state import Account, Position, State
from node.stf import apply_transaction
from node.transactions import Deleverage, Liquidate, Order, SettleFunding, Transaction, encode_tx
from prover.osp import OneStepProverClient, deploy_prover
from prover.witness import step_witness

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
GENESIS = load_genesis()
ORACLE = Signer(keccak(b"oracle"))
ADMIN = Signer(keccak(b"admin"))
LONG = Signer(keccak(b"liquidated long"))
SHORT = Signer(keccak(b"liquidated short"))
LIQUIDATOR = Signer(keccak(b"liquidator"))
OTHER = Signer(keccak(b"other liquidator"))
STRANGER = Signer(keccak(b"stranger"))
FEE = Signer(dev_keys()[2])  # the genesis fee account
ETH, BTC = 1, 2
ETH_UNIT = 10_000  # size units per ETH
USDC = 10**6
SLOW = os.environ.get("DERIVNET_SLOW") == "1"
STEPS = int(os.environ.get("DERIVNET_LIQUIDATE_STEPS", "2000" if SLOW else "12"))
# the table cases of the default run (the acceptance list's boundaries);
# the rest with DERIVNET_SLOW=1
DEFAULT_CASES = {
    "fund earns", "fund pays, exactly empty after", "fund one unit short", "at the fillable bound",
    "beyond the fillable bound", "exactly at maintenance margin", "short, fund pays",
    "the long against a short", "fund one unit short (deleverage)",
}
SLOW_ONLY = pytest.mark.skipif(not SLOW, reason="every rule of the table: set DERIVNET_SLOW=1")
STEPS_PER_EXAMPLE = 6
OUTCOMES: Counter[str] = Counter()


@dataclass
class Env:
    l1: EmbeddedL1
    prover: OneStepProverClient


@pytest.fixture(scope="module")
def env() -> Env:
    l1 = EmbeddedL1(auto_mine=True)
    return Env(l1, OneStepProverClient(l1.w3, deploy_prover(l1.w3, l1.dev_keys[0]).prover))


def new_state(eth_price: int = 180_000, fund: int = 0) -> State:
    """Genesis with our oracle and admin keys, ETH at ``eth_price``, the
    insurance fund at ``fund``; the long (-1,900 USDC, +1 ETH) and the short
    (+2,100 USDC, -1 ETH) of docs/risk.md, a liquidator with 10,000 USDC
    and no position, ETH's open interest the long's size."""
    genesis = replace(GENESIS, oracle=ORACLE.address, admin=ADMIN.address)
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(EMPTY_ROOT, genesis.leaves()))
    state.set_market(replace(state.markets[ETH], oracle_price=eth_price, open_interest=ETH_UNIT))
    state.set_system(replace(state.system, insurance_fund=fund))
    state.set_account(LONG.address, Account(-1_900 * USDC, 0, (Position(ETH, ETH_UNIT, 2_000 * USDC),)))
    state.set_account(SHORT.address, Account(2_100 * USDC, 0, (Position(ETH, -ETH_UNIT, -2_000 * USDC),)))
    state.set_account(LIQUIDATOR.address, Account(10_000 * USDC, 0, ()))
    state.set_account(OTHER.address, Account(10_000 * USDC, 0, ()))
    state.commit()
    return state


def python_root(state: State, tx: Transaction, timestamp: int) -> tuple[bytes, str]:
    """(post-state root, rule name or "ok") by the Python STF."""
    scratch = State(state.tree, state.root)
    try:
        apply_transaction(scratch, tx, timestamp, DOMAIN)
    except err.InvalidTransaction as exc:
        return state.root, type(exc).__name__
    return scratch.commit(), "ok"


def check_step(env: Env, state: State, tx: Transaction, timestamp: int = NOW) -> str:
    """Assert prove_step == the Python STF on ``tx``; move ``state`` to the
    post-state; returns the rule that failed or "ok"."""
    expected, outcome = python_root(state, tx, timestamp)
    witness = step_witness(state, tx, timestamp, DOMAIN)
    got = env.prover.prove_step(state.root, timestamp, tx, DOMAIN, witness)
    assert got == expected, f"{type(tx).__name__} ({outcome}): prover root differs"
    state.root = expected
    state.clear_cache()
    OUTCOMES[f"{type(tx).__name__} {outcome}"] += 1
    return outcome


def liquidation(state: State, liquidated: bytes, size: int, price: int, *, liquidator: Signer = LIQUIDATOR,
                market: int = ETH, order_size: int | None = None, order_price: int | None = None,
                expiry: int = NOW + 100, salt: int = 1, is_buy: bool | None = None,
                signer: Signer | None = None) -> Liquidate:
    """A Liquidate of ``size`` at ``price`` against ``liquidator``'s order
    (on the other side of the liquidated position unless ``is_buy``)."""
    pos = state.account(liquidated).position(ETH if market not in state.markets else market)
    buys = (pos is not None and pos.size > 0) if is_buy is None else is_buy
    order = Order(liquidator.address, market, buys, price if order_price is None else order_price,
                  size if order_size is None else order_size, salt, expiry)
    signature = (signer or liquidator).sign_order(DOMAIN, order)[1]
    return Liquidate(liquidated, order, signature, size, price)


def fillable(state: State, who: bytes, market: int = ETH) -> int:
    return fillable_price(state.account(who), state.markets, market, 1_000_000, 1_500_000)


def with_account(state: State, who: bytes, acc: Account) -> State:
    state.set_account(who, acc)
    state.commit()
    return state


def with_market(state: State, market: int = ETH, **fields: int) -> State:
    state.set_market(replace(state.markets[market], **fields))
    state.commit()
    return state


# ---------------------------------------------------------------- Liquidate, table

def liquidate_cases() -> list[tuple[str, Callable[[], tuple[State, Transaction]], str]]:
    """(name, (state, tx), expected outcome)."""
    L, S = LONG.address, SHORT.address

    def at(price: int = 180_000, fund: int = 0) -> State:
        return new_state(price, fund)

    return [
        # docs/risk.md: the long at 1990.00 (E 90, MM 99.5 USDC): fillable 197_575, the fund earns 1.5%
        ("fund earns", lambda: (s := at(199_000), liquidation(s, L, ETH_UNIT, 197_575)), "ok"),
        ("fund earns, half", lambda: (s := at(199_000), liquidation(s, L, ETH_UNIT // 2, 198_000)), "ok"),
        ("one tick below fillable", lambda: (s := at(199_000), liquidation(s, L, ETH_UNIT, 197_574)),
         "PriceBeyondFillable"),
        # the long at 1800.00 (E -100 USDC): fillable 166_500 costs the fund 235 USDC
        ("fund pays, exactly empty after", lambda: (s := at(fund=235 * USDC),
                                                    liquidation(s, L, ETH_UNIT, 166_500)), "ok"),
        ("fund one unit short", lambda: (s := at(fund=235 * USDC - 1), liquidation(s, L, ETH_UNIT, 166_500)),
         "InsuranceFundShort"),
        ("empty fund, at the bankruptcy price", lambda: (s := at(), liquidation(s, L, ETH_UNIT, 190_000)), "ok"),
        ("empty fund, one tick under bankruptcy", lambda: (s := at(), liquidation(s, L, ETH_UNIT, 189_999)),
         "InsuranceFundShort"),
        ("fund pays, half", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT // 2, 170_000)), "ok"),
        ("at the fillable bound", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, fillable(s, L))),
         "ok"),
        ("beyond the fillable bound", lambda: (s := at(fund=10**12),
                                               liquidation(s, L, ETH_UNIT, fillable(s, L) - 1)),
         "PriceBeyondFillable"),
        # the short at 2200.00 (E -100 USDC): fillable 236_500
        ("short, fund pays", lambda: (s := at(220_000, 10**12), liquidation(s, S, ETH_UNIT, 236_500)), "ok"),
        ("short beyond fillable", lambda: (s := at(220_000, 10**12), liquidation(s, S, ETH_UNIT, 236_501)),
         "PriceBeyondFillable"),
        ("short, fund earns", lambda: (s := at(201_000), liquidation(s, S, ETH_UNIT, 201_000)), "ok"),
        # exactly at maintenance margin (E = MM = 100 USDC at 2000.00): not liquidatable
        ("exactly at maintenance margin", lambda: (s := at(200_000), liquidation(s, L, ETH_UNIT, 200_000)),
         "NotLiquidatable"),
        ("one price unit below", lambda: (s := at(199_999), liquidation(s, L, ETH_UNIT, 199_999)), "ok"),
        ("healthy short", lambda: (s := at(180_000), liquidation(s, S, ETH_UNIT, 180_000)), "NotLiquidatable"),
        ("unknown market", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, market=77)),
         "UnknownMarket"),
        ("self trade", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, liquidator=LONG)),
         "SelfTrade"),
        ("zero size", lambda: (s := at(fund=10**12), liquidation(s, L, 0, 170_000, order_size=5)),
         "ZeroFillSize"),
        ("step size", lambda: (s := with_market(at(fund=10**12), step_size=3),
                               liquidation(s, L, 5_000, 170_000)), "InvalidStepSize"),
        ("tick size", lambda: (s := with_market(at(fund=10**12), tick_size=7),
                               liquidation(s, L, ETH_UNIT, 170_001)), "InvalidTickSize"),
        ("price mismatch", lambda: (s := at(fund=10**12),
                                    liquidation(s, L, ETH_UNIT, 170_000, order_price=170_001)),
         "FillPriceMismatch"),
        ("expired", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, expiry=NOW)),
         "OrderExpired"),
        ("bad signature", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, signer=STRANGER)),
         "InvalidOrderSignature"),
        ("overfill", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, order_size=9_999)),
         "Overfill"),
        ("wrong side", lambda: (s := at(fund=10**12), liquidation(s, L, ETH_UNIT, 170_000, is_buy=False)),
         "NotAReduction"),
        ("larger than the position", lambda: (s := at(fund=10**12),
                                              liquidation(s, L, ETH_UNIT + 1, 170_000, order_size=2 * ETH_UNIT)),
         "NotAReduction"),
        ("no position in the market", lambda: (s := with_market(at(fund=10**12), BTC, open_interest=0),
                                               liquidation(s, L, 10, 235_000, market=BTC, is_buy=True)),
         "NotAReduction"),
        ("poor liquidator", lambda: (s := with_account(at(fund=10**12), LIQUIDATOR.address, Account(1, 0, ())),
                                     liquidation(s, L, ETH_UNIT, 170_000)), "InsufficientMargin"),
        ("liquidator closes its own short", lambda: (
            s := with_account(at(fund=10**12), LIQUIDATOR.address,
                              Account(-5 * USDC, 0, (Position(ETH, -2 * ETH_UNIT, -3_600 * USDC),))),
            liquidation(s, L, ETH_UNIT, 170_000)), "ok"),
        ("the fee account liquidates", lambda: (s := with_account(at(fund=10**12), FEE.address,
                                                                  Account(10_000 * USDC, 0, ())),
                                                liquidation(s, L, ETH_UNIT, 170_000, liquidator=FEE)), "ok"),
    ]


def _params(cases: list[tuple]) -> list:
    return [pytest.param(*c, id=c[0], marks=() if c[0] in DEFAULT_CASES else SLOW_ONLY) for c in cases]


@pytest.mark.parametrize("name,make,outcome", _params(liquidate_cases()))
def test_liquidate_rule(env: Env, name: str, make: Callable[[], tuple[State, Transaction]],
                        outcome: str) -> None:
    state, tx = make()
    assert check_step(env, state, tx) == outcome


def test_docs_examples_hold() -> None:
    """The table's numbers are docs/risk.md's."""
    state = new_state(199_000)
    assert fillable(state, LONG.address) == 197_575
    state = new_state(180_000)
    assert fillable(state, LONG.address) == 166_500
    acc = state.account(LONG.address)
    assert equity(acc, state.markets) == -100 * USDC and maintenance_margin(acc, state.markets) == 90 * USDC
    assert fillable(new_state(220_000), SHORT.address) == 236_500


def test_liquidation_fault_is_caught_by_the_one_step_proof(env: Env) -> None:
    """prover.trace's 'liquidation' fault (the fund credited one unit too
    much): the faulty trace's root after the Liquidate differs from the
    one-step proof's, which equals the honest one."""
    from node.derive import Step
    from prover.trace import BatchTrace, Fault

    state = new_state(199_000)
    tx = liquidation(state, LONG.address, ETH_UNIT, 197_575)
    steps = [Step(NOW, encode_tx(SettleFunding(SHORT.address, ETH))), Step(NOW, encode_tx(tx))]
    honest = BatchTrace(State(state.tree, state.root), steps, DOMAIN)
    faulty = BatchTrace(State(state.tree, state.root), steps, DOMAIN, fault=Fault.LIQUIDATION)
    assert faulty.fault_step == 1 and faulty.roots[:2] == honest.roots[:2]
    assert faulty.post_root != honest.post_root
    before = faulty.state_before(1)
    proved = env.prover.prove_step(before.root, NOW, tx, DOMAIN, step_witness(before, tx, NOW, DOMAIN))
    assert proved == honest.roots[2] != faulty.roots[2]


# ---------------------------------------------------------------- Deleverage, table

def deleverage_cases() -> list[tuple[str, Callable[[], State], Callable[[State], Transaction], str]]:
    L, S, U = LONG.address, SHORT.address, LIQUIDATOR.address
    offset_short = Account(5_000 * USDC, 0, (Position(ETH, -ETH_UNIT, -2_000 * USDC),))
    offset_long = Account(5_000 * USDC, 0, (Position(ETH, ETH_UNIT, 1_000 * USDC),))

    def long_under(fund: int = 0) -> State:
        return with_account(new_state(180_000, fund), U, offset_short)

    return [
        ("the long against a short", long_under, lambda s: Deleverage(L, U, ETH, ETH_UNIT), "ok"),
        ("half", long_under, lambda s: Deleverage(L, U, ETH, ETH_UNIT // 2), "ok"),
        ("against the short of docs/risk.md", lambda: new_state(180_000), lambda s: Deleverage(L, S, ETH, 4_000),
         "ok"),
        ("the short against a long", lambda: with_account(new_state(220_000), U, offset_long),
         lambda s: Deleverage(S, U, ETH, ETH_UNIT), "ok"),
        ("fund covers exactly", lambda: long_under(100 * USDC), lambda s: Deleverage(L, U, ETH, ETH_UNIT),
         "NotDeleveragable"),
        ("fund one unit short (deleverage)", lambda: long_under(100 * USDC - 1),
         lambda s: Deleverage(L, U, ETH, ETH_UNIT), "ok"),
        ("positive equity", lambda: with_account(new_state(199_000), U, offset_short),
         lambda s: Deleverage(L, U, ETH, ETH_UNIT), "NotDeleveragable"),
        ("unknown market", long_under, lambda s: Deleverage(L, U, 77, ETH_UNIT), "UnknownMarket"),
        ("self trade", long_under, lambda s: Deleverage(L, L, ETH, ETH_UNIT), "SelfTrade"),
        ("zero size", long_under, lambda s: Deleverage(L, U, ETH, 0), "ZeroFillSize"),
        ("step size", lambda: with_market(long_under(), step_size=3), lambda s: Deleverage(L, U, ETH, 5_000),
         "InvalidStepSize"),
        ("offset on the same side", lambda: with_account(new_state(180_000), U, offset_long),
         lambda s: Deleverage(L, U, ETH, ETH_UNIT), "NotAReduction"),
        ("offset without a position", lambda: new_state(180_000), lambda s: Deleverage(L, U, ETH, ETH_UNIT),
         "NotAReduction"),
        ("more than the offset holds", lambda: with_account(new_state(180_000), U, replace(
            offset_short, positions=(Position(ETH, -5_000, -1_000 * USDC),))),
         lambda s: Deleverage(L, U, ETH, 5_001), "NotAReduction"),
        ("more than the liquidated holds", long_under, lambda s: Deleverage(L, U, ETH, ETH_UNIT + 1),
         "NotAReduction"),
    ]


@pytest.mark.parametrize("name,make,tx,outcome", _params(deleverage_cases()))
def test_deleverage_rule(env: Env, name: str, make: Callable[[], State], tx: Callable[[State], Transaction],
                         outcome: str) -> None:
    state = make()
    assert check_step(env, state, tx(state)) == outcome


# ---------------------------------------------------------------- SettleFunding, table

@pytest.mark.parametrize("who,market,index,outcome", [
    (LONG, ETH, 123_456_789, "ok"),       # a long pays, rounded up
    pytest.param(SHORT, ETH, 123_456_789, "ok", marks=SLOW_ONLY),  # a short receives, rounded down
    pytest.param(SHORT, ETH, -10**6, "ok", marks=SLOW_ONLY),
    pytest.param(LONG, ETH, 0, "ok", marks=SLOW_ONLY),  # nothing owed: the leaves stay
    (LONG, BTC, 5, "NoPosition"),
    pytest.param(STRANGER, ETH, 5, "NoPosition", marks=SLOW_ONLY),  # an absent account
    pytest.param(LONG, 77, 5, "UnknownMarket", marks=SLOW_ONLY),
])
def test_settle_funding_rule(env: Env, who: Signer, market: int, index: int, outcome: str) -> None:
    state = with_market(new_state(), ETH, funding_index=index)
    assert check_step(env, state, SettleFunding(who.address, market)) == outcome
    if outcome == "ok" and index:
        pos = state.account(who.address).position(ETH)
        assert pos is not None and pos.funding_index == index and pos.settled_funding != 0


# ---------------------------------------------------------------- hypothesis

def draw_account_state(data: st.DataObject) -> tuple[State, bytes, int]:
    """A state whose LONG or SHORT account sits at a random equity to
    maintenance margin ratio (some below zero), with random funding owed,
    maybe a BTC position, a random insurance fund and a random liquidator
    (maybe poor, maybe already positioned). Returns (state, liquidated,
    position size)."""
    state = new_state(data.draw(st.integers(150_000, 250_000)),
                      data.draw(st.sampled_from([0, 1, 10**6]) | st.integers(0, 10**10)))
    long = data.draw(st.booleans())
    who = LONG if long else SHORT
    size = data.draw(st.integers(1, 40)) * 1_000 * (1 if long else -1)
    markets = state.markets
    index_gap = data.draw(st.sampled_from([0, 0, 1, -7, 10**9 + 3]))
    eth = markets[ETH]
    state.set_market(replace(eth, funding_index=eth.funding_index + index_gap,
                             open_interest=abs(size) + 10 * ETH_UNIT))
    positions = [Position(ETH, size, size * 200_000 // ETH_UNIT, eth.funding_index)]
    if data.draw(st.booleans()):
        positions.append(Position(BTC, data.draw(st.integers(-50_000, 50_000)) or 1, 0, 0))
        state.set_market(replace(markets[BTC], open_interest=10**6))
    mm = sum(abs(p.size) * (state.markets[p.market].oracle_price) * 50_000
             // 10**(state.markets[p.market].price_decimals + state.markets[p.market].size_decimals)
             for p in positions)
    value = sum(p.size * state.markets[p.market].oracle_price * 10**6
                // 10**(state.markets[p.market].price_decimals + state.markets[p.market].size_decimals)
                for p in positions)
    ratio_ppm = data.draw(st.integers(-1_500_000, 1_200_000))
    collateral = mm * ratio_ppm // 10**6 - value + data.draw(st.integers(-3, 3))
    state.set_account(who.address, Account(collateral, 0, tuple(positions)))
    liquidator = data.draw(st.sampled_from([
        Account(10**11, 0, ()), Account(data.draw(st.integers(0, 10**9)), 0, ()),
        Account(10**10, 0, (Position(ETH, data.draw(st.integers(-30_000, 30_000)) or 1, 0, 0),))]))
    state.set_account(LIQUIDATOR.address, liquidator)
    state.commit()
    return state, who.address, size


def draw_liquidate(data: st.DataObject, state: State, who: bytes, size: int) -> Transaction:
    fault = data.draw(st.sampled_from(["none"] * 8 + ["side", "size", "sig", "expired", "overfill", "zero"]))
    q = data.draw(st.sampled_from([abs(size), abs(size) // 2 or 1]) | st.integers(1, abs(size)))
    try:
        bound = fillable(state, who)
    except ValueError:
        bound = state.markets[ETH].oracle_price
    sign = 1 if size > 0 else -1
    price = max(1, bound + sign * data.draw(st.sampled_from([0, 0, 1, -1, 50]) | st.integers(-100, 3_000)))
    kwargs: dict[str, object] = {}
    if fault == "side":
        kwargs["is_buy"] = size < 0
    elif fault == "size":
        q = abs(size) + 1
        kwargs["order_size"] = q
    elif fault == "sig":
        kwargs["signer"] = STRANGER
    elif fault == "expired":
        kwargs["expiry"] = NOW
    elif fault == "overfill":
        kwargs["order_size"] = q - 1
    elif fault == "zero":
        q = 0
        kwargs["order_size"] = 1
    return liquidation(state, who, q, price, salt=data.draw(st.integers(0, 2**32)), **kwargs)  # type: ignore[arg-type]


def draw_deleverage(data: st.DataObject, state: State, who: bytes, size: int) -> Transaction:
    offset = data.draw(st.sampled_from([LIQUIDATOR.address, SHORT.address if size > 0 else LONG.address]))
    held = state.account(offset).position(ETH)
    cap = min(abs(size), abs(held.size)) if held is not None else abs(size)
    q = data.draw(st.sampled_from([cap, cap + 1, 0]) | st.integers(1, max(cap, 1)))
    return Deleverage(who, offset, data.draw(st.sampled_from([ETH, ETH, ETH, 77])), q)


@settings(max_examples=max(1, STEPS // STEPS_PER_EXAMPLE), suppress_health_check=list(HealthCheck),
          deadline=None)
@given(data=st.data())
def test_differential(env: Env, data: st.DataObject) -> None:
    state, who, size = draw_account_state(data)
    for _ in range(STEPS_PER_EXAMPLE):
        kind = data.draw(st.sampled_from(["liquidate", "liquidate", "deleverage", "settle"]))
        if kind == "liquidate":
            tx = draw_liquidate(data, state, who, size)
        elif kind == "deleverage":
            tx = draw_deleverage(data, state, who, size)
        else:
            tx = SettleFunding(data.draw(st.sampled_from([who, LIQUIDATOR.address, STRANGER.address])),
                               data.draw(st.sampled_from([ETH, BTC, 77])))
        check_step(env, state, tx)
        pos = state.account(who).position(ETH)
        if pos is None:
            break
        size = pos.size


@pytest.mark.skipif(not SLOW, reason="the outcomes of the full random run: set DERIVNET_SLOW=1")
def test_zz_outcomes() -> None:
    """The random run reached valid liquidations, deleverages and
    settlements (printed with -s)."""
    print(dict(OUTCOMES))
    assert OUTCOMES["Liquidate ok"] and OUTCOMES["Deleverage ok"] and OUTCOMES["SettleFunding ok"]
