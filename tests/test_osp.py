"""One-step prover (l1_stub/contracts/OneStepProver.vy, OneStepRisk.vy,
smt.vy) against the Python STF and tree: for every transaction type, valid and invalid
transactions give the same post-state root from ``node.stf`` +
``State.commit`` (a failed transaction: the pre-state root) and from
``prove_step`` with the witness of ``prover.witness.step_witness``.

The state carries funding: ETH has a funding index and a last tick, the
users' positions sit at other indices (owed on one side, due on the other),
so Withdraw settles and every margin check counts unsettled funding; and
open interest: BTC's open notional sits between its caps, so every Fill and
Withdraw touching BTC uses an OI-scaled initial margin fraction.

Default run: about 200 hypothesis steps; ``DERIVNET_SLOW=1`` runs 5,000 (with
tests/test_osp_fill.py's 5,000 fills: the 10,000 steps of issue 7)
and ``DERIVNET_OSP_STEPS=N`` sets the count. Gas per type is printed (run
with ``-s``) and held below 1M.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l1_stub.chain import EmbeddedL1
from l1_stub.contracts import compile_contract
from node import exceptions as err
from node.crypto import SECP256K1_N, ZERO_HASH, keccak
from node.db import MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.margin import free_collateral
from node.signing import Signer, dev_keys
from node.smt import EMPTY_ROOT, SparseMerkleTree
from node.state import Account, Market, Position, State, symbol_bytes
from node.stf import apply_transaction
from node.transactions import Deposit, Fill, FundingTick, ListMarket, Order, Transaction, encode_tx
from prover.osp import (
    OneStepProverClient,
    ProofReverted,
    compile_with_imports,
    deploy_compiled,
    deploy_prover,
)
from prover.witness import step_witness, tree_witness

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
GENESIS = load_genesis()
ORACLE = Signer(keccak(b"oracle"))
ADMIN = Signer(keccak(b"admin"))
USERS = [Signer(keccak(b"user %d" % i)) for i in range(6)]
STRANGER = Signer(keccak(b"stranger"))
FEE_SIGNER = Signer(dev_keys()[2])  # the genesis fee account
ETH, BTC = 1, 2
SLOW = os.environ.get("DERIVNET_SLOW") == "1"
STEPS = int(os.environ.get("DERIVNET_OSP_STEPS", "5000" if SLOW else "200"))
STEPS_PER_EXAMPLE = 20
HARNESS = Path(__file__).parent / "contracts" / "SmtHarness.vy"
GAS: dict[str, int] = {}


@dataclass
class Env:
    l1: EmbeddedL1
    prover: OneStepProverClient


@pytest.fixture(scope="module")
def env() -> Env:
    l1 = EmbeddedL1(auto_mine=True)
    deployment = deploy_prover(l1.w3, l1.dev_keys[0])
    return Env(l1, OneStepProverClient(l1.w3, deployment.prover))


ETH_INDEX = 123_456_789  # ETH-USD's funding index (price units x ppm) in new_state
ETH_TICKED = NOW - 3_600  # its last FundingTick
BTC_INDEX = -40_000_001  # BTC-USD's funding index; BTC has had no tick yet (funding_time 0)


def new_state() -> State:
    """Genesis (ETH-USD, BTC-USD) with our oracle and admin keys, and funded
    users 0-3; user 1 and 2 hold positions (so free collateral counts margin
    and funding). ETH was ticked an hour ago; user 1's ETH long sits below
    the index (it owes), its BTC short above (it is owed), user 2's BTC long
    at an index that makes its debt an exact multiple."""
    genesis = replace(GENESIS, oracle=ORACLE.address, admin=ADMIN.address)
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(EMPTY_ROOT, genesis.leaves()))
    for i, who in enumerate(USERS[:4]):
        apply_transaction(state, Deposit(i, who.address, 1_000_000_000), NOW, DOMAIN)
    markets = state.markets
    state.set_market(replace(markets[ETH], funding_index=ETH_INDEX, funding_time=ETH_TICKED,
                             funding_rate_ppm=250))
    # BTC's open notional (500 size units at 23,500.0: 117.5 USDC) sits between
    # its open-interest caps, so every BTC margin check scales the imf
    state.set_market(replace(markets[BTC], funding_index=BTC_INDEX, open_interest=500,
                             oi_lower_cap=100_000_000, oi_upper_cap=1_000_000_000))
    state.set_market(replace(state.markets[ETH], open_interest=2_000))
    state.set_account(USERS[1].address, Account(500_000_000, 0, (
        Position(ETH, 2_000, -333_200, 7), Position(BTC, -3_000, 70_500_000, 5))))
    btc = markets[BTC]
    unit = 10 ** (btc.price_decimals + btc.size_decimals)
    state.set_account(USERS[2].address, Account(-100_000_000, 0, (
        Position(BTC, 500, 1_000, BTC_INDEX - 3 * unit),),))
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
    return outcome


# ---------------------------------------------------------------- signatures

def low_v(sig: bytes) -> bytes:
    """The same signature with v in {0, 1} (invalid by the spec)."""
    return sig[:64] + bytes([sig[64] - 27])


def high_s(sig: bytes) -> bytes:
    """The malleable twin (n - s, other v): recovers the same signer, but
    EIP-2 forbids it."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


def bad_r(sig: bytes) -> bytes:
    return b"\x00" * 32 + sig[32:]


SIG_MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "v01": low_v, "high_s": high_s, "zero_r": bad_r, "v29": lambda s: s[:64] + b"\x1d",
}


def oracle_tx(market: int, price: int, ts: int, signer: Signer = ORACLE):
    return signer.oracle_price(DOMAIN, market, price, ts)


def withdraw_tx(who: Signer, amount: int, nonce: int, signer: Signer | None = None):
    tx = (signer or who).withdraw(DOMAIN, keccak(b"recipient")[:20], amount, nonce)
    return replace(tx, account=who.address) if signer else tx


def listing(market: int, symbol: str | bytes = "SOL-USD", signer: Signer = ADMIN,
            **fields: object) -> ListMarket:
    raw = symbol if isinstance(symbol, bytes) else symbol_bytes(symbol)
    base = dict(market=market, symbol=raw,
                price_decimals=3, size_decimals=2, tick_size=1, step_size=1, imf_ppm=100_000,
                mmf_ppm=50_000, maker_fee_ppm=200, taker_fee_ppm=500, oracle_price=150_000,
                signature=b"\x00" * 65)
    base.update(fields)
    return signer.list_market(DOMAIN, ListMarket(**base))  # type: ignore[arg-type]


def free(state: State, who: Signer) -> int:
    return free_collateral(state.account(who.address), state.markets)


def resign(tx, mutate: Callable[[bytes], bytes]):
    return replace(tx, signature=mutate(tx.signature))


def tick_tx(market: int, ts: int, premium_ppm: int, signer: Signer = ORACLE) -> FundingTick:
    return signer.funding_tick(DOMAIN, market, ts, premium_ppm)


def with_market(state: State, market: int, **fields: int) -> State:
    """``state`` with ``fields`` of market ``market`` changed, committed."""
    state.set_market(replace(state.markets[market], **fields))
    state.commit()
    return state


# ---------------------------------------------------------------- every rule


def rule_cases() -> list[tuple[str, Callable[[State], Transaction], str]]:
    """(name, tx from the state, expected outcome) for every rule of the
    four types, valid transactions included."""
    u0, u1, fresh = USERS[0], USERS[1], USERS[5]
    cases: list[tuple[str, Callable[[State], Transaction], str]] = [
        ("deposit first (insert)", lambda s: Deposit(s.system.next_deposit, fresh.address, 5), "ok"),
        ("deposit again", lambda s: Deposit(s.system.next_deposit, u0.address, 7), "ok"),
        ("deposit to fee account", lambda s: Deposit(s.system.next_deposit, s.system.fee_account, 1),
         "ok"),
        ("deposit out of order", lambda s: Deposit(s.system.next_deposit + 1, u0.address, 7),
         "DepositOutOfOrder"),
        ("deposit replayed", lambda s: Deposit(s.system.next_deposit - 1, u0.address, 7),
         "DepositOutOfOrder"),
        ("oracle", lambda s: oracle_tx(ETH, 170_000, NOW), "ok"),
        ("oracle wrong signer", lambda s: oracle_tx(ETH, 170_000, NOW, STRANGER),
         "InvalidOracleSignature"),
        ("oracle unknown market", lambda s: oracle_tx(77, 170_000, NOW), "UnknownMarket"),
        ("oracle zero price", lambda s: oracle_tx(ETH, 0, NOW), "InvalidPrice"),
        ("oracle stale", lambda s: oracle_tx(ETH, 1, 0), "StaleOraclePrice"),
        ("withdraw", lambda s: withdraw_tx(u0, 1_000, 0), "ok"),
        ("withdraw with positions", lambda s: withdraw_tx(u1, 1_000, 0), "ok"),
        ("withdraw wrong signer", lambda s: withdraw_tx(u0, 1_000, 0, signer=STRANGER),
         "InvalidWithdrawSignature"),
        ("withdraw bad nonce", lambda s: withdraw_tx(u0, 1_000, 3), "InvalidNonce"),
        ("withdraw zero", lambda s: withdraw_tx(u0, 0, 0), "ZeroAmount"),
        ("withdraw too much", lambda s: withdraw_tx(u0, 1_000_000_001, 0),
         "InsufficientFreeCollateral"),
        ("withdraw all free collateral", lambda s: withdraw_tx(u1, free(s, u1), 0), "ok"),
        ("withdraw above free collateral", lambda s: withdraw_tx(u1, free(s, u1) + 1, 0),
         "InsufficientFreeCollateral"),
        ("withdraw negative collateral", lambda s: withdraw_tx(USERS[2], free(s, USERS[2]), 0),
         "ok"),
        ("withdraw absent account", lambda s: withdraw_tx(fresh, 1, 0),
         "InsufficientFreeCollateral"),
        ("list", lambda s: listing(3), "ok"),
        ("list below others", lambda s: listing(0, "AAA"), "ok"),
        ("list wrong signer", lambda s: listing(3, signer=STRANGER), "InvalidAdminSignature"),
        ("list listed id", lambda s: listing(ETH), "MarketAlreadyListed"),
        ("list bad symbol", lambda s: listing(3, "sol"), "InvalidSymbol"),
        ("list symbol digit first", lambda s: listing(3, "1INCH"), "InvalidSymbol"),
        ("list symbol hole", lambda s: listing(3, b"A\x00B".ljust(16, b"\x00")),
         "InvalidSymbol"),
        ("list empty symbol", lambda s: listing(3, b"\x00" * 16), "InvalidSymbol"),
        ("list duplicate symbol", lambda s: listing(3, "ETH-USD"), "DuplicateSymbol"),
        ("list decimals", lambda s: listing(3, price_decimals=19), "InvalidMarketDecimals"),
        ("list size decimals", lambda s: listing(3, size_decimals=19), "InvalidMarketDecimals"),
        ("list zero tick", lambda s: listing(3, tick_size=0), "InvalidTickStep"),
        ("list zero step", lambda s: listing(3, step_size=0), "InvalidTickStep"),
        ("list zero mmf", lambda s: listing(3, mmf_ppm=0), "InvalidMarginFraction"),
        ("list mmf > imf", lambda s: listing(3, mmf_ppm=200_000), "InvalidMarginFraction"),
        ("list imf > 1", lambda s: listing(3, imf_ppm=1_000_001, mmf_ppm=1),
         "InvalidMarginFraction"),
        ("list maker fee", lambda s: listing(3, maker_fee_ppm=1_000_001), "InvalidFee"),
        ("list taker fee", lambda s: listing(3, taker_fee_ppm=1_000_001), "InvalidFee"),
        ("list zero price", lambda s: listing(3, oracle_price=0), "InvalidPrice"),
        ("list with oi caps", lambda s: listing(3, max_liquidation_fee_ppm=10**6, oi_lower_cap=2**128 - 2,
                                                oi_upper_cap=2**128 - 1), "ok"),
        ("list lower cap without upper", lambda s: listing(3, oi_lower_cap=5), "ok"),
        ("list liquidation fee", lambda s: listing(3, max_liquidation_fee_ppm=10**6 + 1), "InvalidFee"),
        ("list caps equal", lambda s: listing(3, oi_lower_cap=7, oi_upper_cap=7), "InvalidOpenInterestCaps"),
        ("list caps reversed", lambda s: listing(3, oi_lower_cap=8, oi_upper_cap=7), "InvalidOpenInterestCaps"),
        ("list caps before price", lambda s: listing(3, oi_lower_cap=8, oi_upper_cap=7, oracle_price=0),
         "InvalidOpenInterestCaps"),
        ("funding tick", lambda s: tick_tx(ETH, NOW, 1_234), "ok"),
        ("funding tick negative", lambda s: tick_tx(ETH, NOW - 1, -777), "ok"),
        ("funding first tick", lambda s: tick_tx(BTC, NOW, 5_000), "ok"),
        ("funding premium at +1e6", lambda s: tick_tx(ETH, NOW, 10**6), "ok"),
        ("funding premium at -1e6", lambda s: tick_tx(ETH, NOW, -(10**6)), "ok"),
        ("funding tick at its block", lambda s: tick_tx(ETH, NOW, 0), "ok"),
        ("funding wrong signer", lambda s: tick_tx(ETH, NOW, 1, STRANGER), "InvalidOracleSignature"),
        ("funding signed by admin", lambda s: tick_tx(ETH, NOW, 1, ADMIN), "InvalidOracleSignature"),
        ("funding unknown market", lambda s: tick_tx(77, NOW, 1), "UnknownMarket"),
        ("funding stale", lambda s: tick_tx(ETH, ETH_TICKED, 1), "StaleFundingTick"),
        ("funding older", lambda s: tick_tx(ETH, ETH_TICKED - 1, 1), "StaleFundingTick"),
        ("funding in future", lambda s: tick_tx(ETH, NOW + 1, 1), "FundingTickInFuture"),
        ("funding premium above 1e6", lambda s: tick_tx(ETH, NOW, 10**6 + 1), "InvalidPremium"),
        ("funding premium below -1e6", lambda s: tick_tx(ETH, NOW, -(10**6) - 1), "InvalidPremium"),
        ("funding premium int32 min", lambda s: tick_tx(ETH, NOW, -(2**31)), "InvalidPremium"),
        ("withdraw settles funding", lambda s: withdraw_tx(u1, 1, 0), "ok"),
    ]
    for name, mutate in SIG_MUTATIONS.items():
        cases.append((f"oracle sig {name}", lambda s, m=mutate: resign(oracle_tx(ETH, 1, NOW), m),
                      "InvalidOracleSignature"))
        cases.append((f"withdraw sig {name}",
                      lambda s, m=mutate: resign(withdraw_tx(u0, 1, 0), m),
                      "InvalidWithdrawSignature"))
        cases.append((f"list sig {name}", lambda s, m=mutate: resign(listing(3), m),
                      "InvalidAdminSignature"))
        cases.append((f"funding sig {name}", lambda s, m=mutate: resign(tick_tx(ETH, NOW, 1), m),
                      "InvalidOracleSignature"))
    return cases


@pytest.mark.parametrize("name,make,outcome", rule_cases(), ids=[c[0] for c in rule_cases()])
def test_every_rule(env: Env, name: str, make: Callable[[State], Transaction], outcome: str) -> None:
    state = new_state()
    assert check_step(env, state, make(state)) == outcome


@pytest.mark.parametrize("since,premium", [
    (100_000, 0),        # elapsed capped at one period
    (28_800, 50),        # exactly one period
    (28_801, -50),       # one second past it
    (1, 299_900),        # one second, at +cap after the default 100 ppm
    (7, -(10**6)),       # at -cap
])
def test_funding_tick_elapsed_and_clamp(env: Env, since: int, premium: int) -> None:
    """The index moves by trunc(rate x oracle_price x elapsed / 28800) with
    elapsed capped at 28800 s and rate clamped to 6 x (imf - mmf)."""
    state = with_market(new_state(), ETH, funding_time=NOW - since)
    market = state.markets[ETH]
    assert check_step(env, state, tick_tx(ETH, NOW, premium)) == "ok"
    cap = 6 * (market.imf_ppm - market.mmf_ppm)
    rate = max(-cap, min(cap, premium + 100))
    num = rate * market.oracle_price * min(since, 28_800)
    delta = abs(num) // 28_800 * (1 if num >= 0 else -1)
    after = state.markets[ETH]
    assert (after.funding_index, after.funding_time, after.funding_rate_ppm) == \
        (ETH_INDEX + delta, NOW, rate)


def test_fill_with_open_interest_scaling_binding(env: Env) -> None:
    """A BTC fill that the base imf (10%) allows but the OI-scaled one
    rejects, and a smaller one that passes; the markets leaf carries the
    new open interest (node/risk.py oi_scaled_initial_margin_ppm)."""
    state = with_market(new_state(), BTC, oi_lower_cap=100_000_000, oi_upper_cap=150_000_000)
    u0, u3 = USERS[0], USERS[3]
    # 1,000 USDC each: 30,000 units (7,050 USDC) needs 705 USDC at 10%, but
    # lifts the open notional past the upper cap (imf 100%)
    assert check_step(env, state, _fill(u0, u3, True, 30_000, 235_000, salt=31, market=BTC)) == \
        "InsufficientMargin"
    assert check_step(env, state, _fill(u0, u3, True, 100, 235_000, salt=32, market=BTC)) == "ok"
    assert state.markets[BTC].open_interest == 600


def test_funding_tick_zero_cap(env: Env) -> None:
    """imf == mmf: the cap is 0, every rate clamps to 0, the index stays."""
    state = with_market(new_state(), ETH, imf_ppm=50_000, mmf_ppm=50_000)
    assert check_step(env, state, tick_tx(ETH, NOW, 9_999)) == "ok"
    assert state.markets[ETH].funding_index == ETH_INDEX
    assert state.markets[ETH].funding_rate_ppm == 0


def test_withdraw_all_free_collateral_with_funding_owed_and_due(env: Env) -> None:
    """User 1 owes on its ETH long and is owed on its BTC short: the free
    collateral counts both, the withdrawal settles both into the pool."""
    state = new_state()
    u1 = USERS[1]
    room = free(state, u1)
    assert check_step(env, state, withdraw_tx(u1, room + 1, 0)) == "InsufficientFreeCollateral"
    pool = state.system.funding_pool
    assert check_step(env, state, withdraw_tx(u1, room, 0)) == "ok"
    acc = state.account(u1.address)
    assert [p.funding_index for p in acc.positions] == [ETH_INDEX, BTC_INDEX]
    assert state.system.funding_pool != pool


def test_negative_funding_pool(env: Env) -> None:
    """The pool goes below zero when receivers settle before payers (it is
    the pool plus the unsettled funding that stays >= 0): every type reads
    it as a signed word."""
    state = new_state()
    state.set_system(replace(state.system, funding_pool=-5))
    state.commit()
    u0, u1, u3 = USERS[0], USERS[1], USERS[3]
    assert check_step(env, state, Deposit(state.system.next_deposit, u0.address, 1)) == "ok"
    assert check_step(env, state, tick_tx(ETH, NOW, 10)) == "ok"
    assert state.system.funding_pool == -5
    for tx in (_fill(u1, u3, False, 100, 166_600, salt=21), withdraw_tx(u1, 1, 0)):
        assert check_step(env, state, tx) == "ok", tx


def test_funding_index_fault_is_caught_by_the_one_step_proof(env: Env) -> None:
    """prover.trace's funding-index fault: the faulty trace's root after the
    tick differs from the one-step proof's, which equals the honest one."""
    from node.derive import Step
    from prover.trace import BatchTrace, Fault

    state = new_state()
    steps = [Step(NOW, encode_tx(tx)) for tx in (
        oracle_tx(ETH, 170_000, NOW), tick_tx(ETH, NOW, 400), withdraw_tx(USERS[1], 1, 0))]
    honest = BatchTrace(State(state.tree, state.root), steps, DOMAIN)
    faulty = BatchTrace(State(state.tree, state.root), steps, DOMAIN, fault=Fault.FUNDING_INDEX)
    assert faulty.fault_step == 1 and faulty.roots[:2] == honest.roots[:2]
    assert faulty.post_root != honest.post_root
    before = faulty.state_before(1)
    tx = tick_tx(ETH, NOW, 400)
    proved = env.prover.prove_step(before.root, NOW, tx, DOMAIN, step_witness(before, tx, NOW, DOMAIN))
    assert proved == honest.roots[2] != faulty.roots[2]


def test_too_many_markets(env: Env) -> None:
    state = new_state()
    for market_id in range(3, 65):
        state.set_market(Market(market_id, 2, 2, 1, 1, 100_000, 50_000, 0, 0, 100, 0))
        state.set_symbol(market_id, symbol_bytes(f"M{market_id}"))
    state.commit()
    assert len(state.markets) == 64
    assert check_step(env, state, listing(65)) == "TooManyMarkets"
    assert check_step(env, state, oracle_tx(64, 5, NOW)) == "ok"


def test_chained_steps_and_gas(env: Env) -> None:
    """A short chain through every type; gas of prove_step per type < 1M."""
    state = new_state()
    steps = [
        ("Deposit", Deposit(state.system.next_deposit, USERS[4].address, 10**9)),
        ("OraclePrice", oracle_tx(ETH, 170_000, NOW)),
        ("Withdraw", withdraw_tx(USERS[1], 1_000, 0)),
        ("ListMarket", listing(3)),
        ("FundingTick", tick_tx(ETH, NOW, 1_000)),
    ]
    for name, tx in steps:
        witness = step_witness(state, tx, NOW, DOMAIN)
        gas = env.prover.gas(state.root, NOW, tx, DOMAIN, witness)
        GAS[name] = gas
        print(f"prove_step {name}: {gas} gas, witness {len(witness)} bytes")
        assert gas < 1_000_000
        assert check_step(env, state, tx) == "ok"


def test_gas_at_the_leaf_bounds(env: Env) -> None:
    """64 markets and an account with 63 positions: the largest leaves
    (22.6 KB markets leaf) still prove, each type below 1M gas."""
    state = new_state()
    for market_id in range(3, 64):
        state.set_market(Market(market_id, 2, 2, 1, 1, 100_000, 50_000, 0, 0, 100, 0))
        state.set_symbol(market_id, symbol_bytes(f"M{market_id}"))
    state.set_account(USERS[0].address, Account(
        10**12, 0, tuple(Position(m, 5, 5) for m in range(1, 64))))
    state.commit()
    for name, tx in [("OraclePrice", oracle_tx(ETH, 170_000, NOW)),
                     ("Withdraw", withdraw_tx(USERS[0], 1_000, 0)),
                     ("ListMarket", listing(64)),
                     ("FundingTick", tick_tx(ETH, NOW, 1_000)),
                     ("Deposit", Deposit(state.system.next_deposit, USERS[0].address, 5))]:
        witness = step_witness(state, tx, NOW, DOMAIN)
        gas = env.prover.gas(state.root, NOW, tx, DOMAIN, witness)
        print(f"prove_step {name} at the bounds: {gas} gas, witness {len(witness)} bytes")
        assert gas < 1_000_000
        scratch = State(state.tree, state.root)
        assert check_step(env, scratch, tx) == "ok"


# ---------------------------------------------------------------- bad input


def test_witness_for_another_root_reverts(env: Env) -> None:
    state = new_state()
    other = new_state()
    apply_transaction(other, Deposit(other.system.next_deposit, USERS[0].address, 1), NOW, DOMAIN)
    other.commit()
    tx = Deposit(state.system.next_deposit, USERS[0].address, 5)
    witness = step_witness(other, tx, NOW, DOMAIN)
    with pytest.raises(ProofReverted, match="osp: "):
        env.prover.prove_step(state.root, NOW, tx, DOMAIN, witness)
    # a failing transaction still needs a witness of its pre-state
    bad = Deposit(state.system.next_deposit + 5, USERS[0].address, 5)
    with pytest.raises(ProofReverted, match="osp: "):
        env.prover.prove_step(state.root, NOW, bad, DOMAIN, step_witness(other, bad, NOW, DOMAIN))


def test_forged_leaf_value_reverts(env: Env) -> None:
    """A witness claiming another value for a leaf (here: a richer account)
    does not prove against the root."""
    from eth_abi import decode, encode

    state = new_state()
    tx = withdraw_tx(USERS[0], 2_000_000_000, 0)
    assert python_root(state, tx, NOW)[1] == "InsufficientFreeCollateral"
    parts = list(decode(["bytes"] * 5, step_witness(state, tx, NOW, DOMAIN)))
    parts[2] = Account(5_000_000_000, 0, ()).encode()
    with pytest.raises(ProofReverted, match="osp: leaf value does not match"):
        env.prover.prove_step(state.root, NOW, tx, DOMAIN, encode(["bytes"] * 5, parts))


@pytest.mark.parametrize("raw", [b"", b"\x09" + b"\x00" * 44, encode_tx(Deposit(0, b"\x01" * 20, 1))[:-1],
                                 encode_tx(Deposit(0, b"\x01" * 20, 1)) + b"\x00"])
def test_bad_tx_reverts(env: Env, raw: bytes) -> None:
    state = new_state()
    witness = step_witness(state, Deposit(0, b"\x01" * 20, 1), NOW, DOMAIN)
    with pytest.raises(ProofReverted, match="osp: bad tx"):
        env.prover.prove_step(state.root, NOW, raw, DOMAIN, witness)


# ---------------------------------------------------------------- differential


SIGNATURE_FAULTS = ["signer", *SIG_MUTATIONS]


def _signed(data: st.DataObject, make: Callable[[Signer], Transaction], signer: Signer,
            fault: str) -> Transaction:
    """``make(key)``, with the signature fault ``fault`` (wrong key, or a
    mutation of SIG_MUTATIONS) if it is one."""
    if fault == "signer":
        return make(STRANGER)
    tx = make(signer)
    return resign(tx, SIG_MUTATIONS[fault]) if fault in SIG_MUTATIONS else tx


def _fault(data: st.DataObject, faults: list[str]) -> str:
    """"none" half the time, else one of ``faults``."""
    return data.draw(st.sampled_from(["none"] * len(faults) + faults))


SYMBOLS = st.text("ABCXYZ", min_size=1, max_size=1).flatmap(
    lambda first: st.text("ABZ09-_./", max_size=15).map(lambda rest: first + rest))


def draw_fill(data: st.DataObject, state: State, timestamp: int) -> Fill:
    """A Fill between funded users (the fee account among them), valid half
    the time, else with one rule's failure."""
    fault = _fault(data, ["sig", "expired", "same side", "self", "zero", "step", "tick", "price",
                          "cross", "market", "mismatch", "overfill", "margin"])
    traders = [*USERS[:4], FEE_SIGNER]
    maker, taker = data.draw(st.permutations(traders))[:2]
    if fault == "self":
        taker = maker
    markets = state.markets
    market = markets[data.draw(st.sampled_from(sorted(markets)))]
    tick, step = market.tick_size, market.step_size
    top = (2**64 - 1) // tick * tick  # the highest price on the tick

    def on_tick(p: int) -> int:
        return min(max(p, tick), top)

    price = on_tick((market.oracle_price // tick + data.draw(st.integers(-5, 5))) * tick)
    size = data.draw(st.integers(1, 50)) * step
    if fault == "margin":
        size = 10**12 * step
    maker_buys = data.draw(st.booleans())
    better = data.draw(st.integers(0, 3)) * tick
    taker_price = on_tick(price - better) if maker_buys else on_tick(price + better)
    if fault == "cross":
        taker_price = min(price + tick, 2**64 - 1) if maker_buys else price - tick
    elif fault == "tick" and tick > 1:
        taker_price -= 1
    expiry = timestamp + data.draw(st.integers(1, 1000))
    salt = data.draw(st.integers(0, 2**64 - 2))
    mo = Order(maker.address, market.id, maker_buys, price, size, salt, expiry)
    to = Order(taker.address, market.id, not maker_buys, taker_price, size, salt + 1, expiry)
    if fault == "expired":
        to = replace(to, expiry=timestamp - data.draw(st.integers(0, 3)))
    elif fault == "same side":
        to = replace(to, is_buy=maker_buys)
    elif fault == "market":
        mo = to = replace(mo, market=max(markets) + 1)
        to = Order(taker.address, mo.market, not maker_buys, taker_price, size, salt + 1, expiry)
    elif fault == "mismatch":
        to = replace(to, market=market.id + 1)
    elif fault == "overfill":
        mo = replace(mo, size=size - 1)
    fill_size = {"zero": 0, "step": size + 1 if step > 1 else size}.get(fault, size)
    fill_price = price - 1 if fault == "price" else price
    maker_sig, taker_sig = maker.sign_order(DOMAIN, mo)[1], taker.sign_order(DOMAIN, to)[1]
    if fault == "sig":
        mutate = data.draw(st.sampled_from([*SIG_MUTATIONS.values(), lambda s: STRANGER.sign_order(
            DOMAIN, mo)[1]]))
        if data.draw(st.booleans()):
            maker_sig = mutate(maker_sig)
        else:
            taker_sig = mutate(taker_sig) if mutate in SIG_MUTATIONS.values() else \
                STRANGER.sign_order(DOMAIN, to)[1]
    return Fill(mo, maker_sig, to, taker_sig, fill_size, fill_price)


def draw_tx(data: st.DataObject, state: State, timestamp: int = NOW) -> Transaction:
    """A transaction for ``state``: valid half the time, else with one
    rule's failure (every rule of the type can be drawn)."""
    kinds = ["deposit", "oracle", "withdraw", "list", "fill", "fill", "funding"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "fill":
        return draw_fill(data, state, timestamp)
    who = data.draw(st.sampled_from(USERS))
    markets = state.markets
    if kind == "deposit":
        fault = _fault(data, ["ahead", "behind"])
        index = state.system.next_deposit + {"none": 0, "ahead": 1, "behind": -1}[fault]
        return Deposit(max(index, 0), who.address, data.draw(st.integers(0, 10**12)))
    if kind == "oracle":
        fault = _fault(data, [*SIGNATURE_FAULTS, "market", "price", "stale"])
        market = data.draw(st.sampled_from(sorted(markets)))
        last = markets[market].oracle_time
        ts = last + data.draw(st.integers(1, 100))
        price = data.draw(st.sampled_from([1, 2**64 - 1]) | st.integers(1, 10**9))
        if fault == "market":
            market = max(markets) + data.draw(st.integers(1, 5))
        elif fault == "price":
            price = 0
        elif fault == "stale":
            ts = data.draw(st.integers(0, last))
        return _signed(data, lambda k: oracle_tx(market, price, ts, k), ORACLE, fault)
    if kind == "funding":
        fault = _fault(data, [*SIGNATURE_FAULTS, "market", "stale", "future", "premium"])
        market = data.draw(st.sampled_from(sorted(markets)))
        last = markets[market].funding_time
        ts = data.draw(st.integers(last + 1, max(last + 1, timestamp)))
        premium = data.draw(st.integers(-(10**6), 10**6) | st.sampled_from([-(10**6), 10**6, 0, -100]))
        if fault == "market":
            market = max(markets) + data.draw(st.integers(1, 5))
        elif fault == "stale":
            ts = data.draw(st.integers(0, last))
        elif fault == "future":
            ts = max(timestamp, last) + data.draw(st.integers(1, 100))
        elif fault == "premium":
            premium = data.draw(st.sampled_from([1, -1])) * data.draw(st.integers(10**6 + 1, 2**31 - 1))
        return _signed(data, lambda k: tick_tx(market, ts, premium, k), ORACLE, fault)
    if kind == "withdraw":
        fault = _fault(data, [*SIGNATURE_FAULTS, "nonce", "zero", "too much"])
        acc = state.account(who.address)
        room = free(state, who)
        amount = data.draw(st.integers(1, room)) if room >= 1 else 1
        nonce = acc.nonce
        if fault == "nonce":
            nonce += data.draw(st.sampled_from([1, 2**32]))
        elif fault == "zero":
            amount = 0
        elif fault == "too much":
            amount = max(room, 0) + data.draw(st.integers(1, 10**6))
        return _signed(data, lambda k: withdraw_tx(who, amount, nonce, signer=k), who, fault)
    fault = _fault(data, [*SIGNATURE_FAULTS, "listed", "symbol", "duplicate", "decimals",
                          "tickstep", "margin", "fee", "price", "caps"])
    unused = [i for i in range(0, max(markets) + 3) if i not in markets]
    market = data.draw(st.sampled_from(unused))
    taken = {bytes(v) for v in state.symbols.values()}
    symbol: str | bytes = data.draw(SYMBOLS.filter(lambda t: symbol_bytes(t) not in taken))
    fields: dict[str, object] = dict(
        price_decimals=data.draw(st.integers(0, 18)), size_decimals=data.draw(st.integers(0, 18)),
        tick_size=data.draw(st.integers(1, 100)), step_size=data.draw(st.integers(1, 100)),
        maker_fee_ppm=data.draw(st.integers(0, 10**6)), taker_fee_ppm=data.draw(st.integers(0, 10**6)),
        oracle_price=data.draw(st.integers(1, 2**64 - 1)),
    )
    mmf = data.draw(st.integers(1, 10**6))
    fields.update(mmf_ppm=mmf, imf_ppm=data.draw(st.integers(mmf, 10**6)))
    if fault == "listed":
        market = data.draw(st.sampled_from(sorted(markets)))
    elif fault == "symbol":
        symbol = data.draw(st.sampled_from([b"", b"a", b"1A", b"A B", b"A\x00B", b"A$", b"\xffA"]))
        symbol = bytes(symbol).ljust(16, b"\x00")
    elif fault == "duplicate":
        symbol = data.draw(st.sampled_from(sorted(taken)))
    elif fault == "decimals":
        fields[data.draw(st.sampled_from(["price_decimals", "size_decimals"]))] = \
            data.draw(st.integers(19, 255))
    elif fault == "tickstep":
        fields[data.draw(st.sampled_from(["tick_size", "step_size"]))] = 0
    elif fault == "margin":
        fields.update(data.draw(st.sampled_from([
            {"mmf_ppm": 0}, {"mmf_ppm": mmf + 1, "imf_ppm": mmf},
            {"imf_ppm": 10**6 + 1}, {"imf_ppm": 2**32 - 1, "mmf_ppm": 2**32 - 1}])))
    elif fault == "fee":
        fields[data.draw(st.sampled_from(["maker_fee_ppm", "taker_fee_ppm"]))] = \
            data.draw(st.integers(10**6 + 1, 2**32 - 1))
    elif fault == "price":
        fields["oracle_price"] = 0
    elif fault == "caps":
        upper = data.draw(st.integers(1, 2**128 - 1))
        fields.update(oi_upper_cap=upper, oi_lower_cap=data.draw(st.integers(upper, 2**128 - 1)))
    if fault != "caps" and data.draw(st.booleans()):
        upper = data.draw(st.sampled_from([0, 2**128 - 1]) | st.integers(1, 10**12))
        fields.update(oi_upper_cap=upper, oi_lower_cap=data.draw(st.integers(0, max(upper - 1, 0))))
    fields["max_liquidation_fee_ppm"] = data.draw(st.integers(0, 10**6))
    if fault == "fee" and data.draw(st.booleans()):
        fields["max_liquidation_fee_ppm"] = data.draw(st.integers(10**6 + 1, 2**32 - 1))
    return _signed(data, lambda k: listing(market, symbol, k, **fields), ADMIN, fault)


@settings(max_examples=max(1, STEPS // STEPS_PER_EXAMPLE), suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_differential(env: Env, data: st.DataObject) -> None:
    state = new_state()
    timestamp = NOW
    for _ in range(STEPS_PER_EXAMPLE):
        timestamp += data.draw(st.integers(0, 5))
        check_step(env, state, draw_tx(data, state, timestamp), timestamp)


# ---------------------------------------------------------------- the tree alone


@pytest.fixture(scope="module")
def harness(env: Env):
    return deploy_compiled(env.l1.w3, env.l1.dev_keys[0], compile_with_imports(HARNESS))


def _near(key: bytes, bit: int) -> bytes:
    return (int.from_bytes(key, "big") ^ (1 << (255 - bit))).to_bytes(32, "big")


@settings(max_examples=40 if not SLOW else 400, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_multiproof_inserts_splits_updates_deletes(harness, data: st.DataObject) -> None:
    """smt.roots against node.smt on random trees and up to 7 keys written
    at once: inserts into empty subtrees, splits of single-leaf subtrees
    (keys that share long prefixes), updates, deletes that collapse."""
    keys32 = st.binary(min_size=32, max_size=32)
    base = data.draw(st.lists(keys32, max_size=40, unique=True))
    if base and data.draw(st.booleans()):
        base += [_near(base[0], b) for b in data.draw(st.lists(st.integers(0, 255), max_size=4))]
    tree = SparseMerkleTree(MemoryDB())
    root = tree.update(EMPTY_ROOT, {k: keccak(k)[:5] for k in base})
    pool = base + [_near(k, b) for k in base[:5] for b in (2, 30, 255)]
    touched = data.draw(st.lists(st.sampled_from(pool) | keys32 if pool else keys32,
                                 min_size=1, max_size=7, unique=True))
    ops = [data.draw(st.sampled_from(["write", "write", "delete", "read"])) for _ in touched]
    items = {k: (None if op == "delete" else keccak(k + b"new")[:9])
             for k, op in zip(touched, ops) if op != "read"}
    keys = sorted(touched)
    old = [tree.get(root, k) for k in keys]
    witness = tree_witness(tree, root, keys, deletes=[k for k, v in items.items() if v is None])
    new_root = tree.update(root, items)
    old_hashes = [keccak(v) if v is not None else ZERO_HASH for v in old]
    new_hashes = []
    for k, h in zip(keys, old_hashes):
        if k in items:
            h = keccak(items[k]) if items[k] is not None else ZERO_HASH  # type: ignore[arg-type]
        new_hashes.append(h)
    got_old, got_new = harness.functions.roots(
        witness, [int.from_bytes(k, "big") for k in keys], old_hashes, new_hashes).call()
    assert got_old == root
    assert got_new == new_root


# ---------------------------------------------------------------- Fill


def _fill(maker: Signer, taker: Signer, maker_buys: bool, size: int, price: int,
          taker_price: int | None = None, market: int = ETH, expiry: int = NOW + 60,
          salt: int = 1) -> Fill:
    mo = Order(maker.address, market, maker_buys, price, size, salt, expiry)
    to = Order(taker.address, market, not maker_buys, price if taker_price is None else taker_price,
               size, salt + 1, expiry)
    return Fill(mo, maker.sign_order(DOMAIN, mo)[1], to, taker.sign_order(DOMAIN, to)[1], size, price)


def test_fill_steps_and_gas(env: Env) -> None:
    state = new_state()
    u0, u3 = USERS[0], USERS[3]
    fee = state.system.fee_account
    tx = _fill(u0, u3, True, 1_000, 166_600)
    witness = step_witness(state, tx, NOW, DOMAIN)
    gas = env.prover.gas(state.root, NOW, tx, DOMAIN, witness)
    GAS["Fill"] = gas
    print(f"prove_step Fill: {gas} gas, witness {len(witness)} bytes")
    assert check_step(env, state, tx) == "ok"
    assert check_step(env, state, tx) == "Overfill"
    assert check_step(env, state, _fill(u0, u3, True, 1_000, 166_600, 166_500, salt=5)) == "ok"
    assert check_step(env, state, _fill(u0, u3, True, 1_000, 166_600, expiry=NOW)) == "OrderExpired"
    assert check_step(env, state, _fill(u0, u0, True, 1_000, 166_600)) == "SelfTrade"
    assert check_step(env, state, _fill(u0, u3, True, 10**9, 166_600)) == "InsufficientMargin"
    bad = _fill(u0, u3, True, 7, 166_600)
    assert check_step(env, state, replace(bad, maker_signature=low_v(bad.maker_signature))) \
        == "InvalidOrderSignature"
    assert check_step(env, state, replace(bad, taker_signature=high_s(bad.taker_signature))) \
        == "InvalidOrderSignature"
    # the fee account trades: its leaf is maker and fee account at once
    fee_signer = FEE_SIGNER
    assert fee_signer.address == fee
    apply_transaction(state, Deposit(state.system.next_deposit, fee, 10**9), NOW, DOMAIN)
    state.commit()
    assert check_step(env, state, _fill(fee_signer, u3, False, 10, 166_600, salt=9)) == "ok"
    assert check_step(env, state, _fill(u3, fee_signer, False, 10, 166_600, salt=11)) == "ok"


def test_prover_fits_eip170() -> None:
    runtime = compile_contract("OneStepProver").bytecode_runtime
    assert (len(runtime) - 2) // 2 <= 24_576
