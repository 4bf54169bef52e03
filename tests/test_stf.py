"""The state transition function: every rule's error, and the money flows."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node import exceptions as err
from node.crypto import ZERO_HASH, keccak
from node.db import MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.margin import equity, initial_margin
from node.signing import Signer
from node.smt import SparseMerkleTree
from node.state import State
from node.stf import apply_transaction
from node.transactions import Deposit, Fill, Order

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
ETH = 1
NOW = 1_700_000_000
GENESIS = load_genesis()
ORACLE = Signer(keccak(b"oracle"))
ALICE = Signer(keccak(b"alice"))
BOB = Signer(keccak(b"bob"))
FEE = GENESIS.fee_account


def new_state() -> State:
    genesis = replace(GENESIS, oracle=ORACLE.address)
    tree = SparseMerkleTree(MemoryDB())
    return State(tree, tree.update(ZERO_HASH, genesis.leaves()))


def fund(state: State, *pairs: tuple[Signer, int]) -> None:
    for who, amount in pairs:
        apply_transaction(state, Deposit(state.system.next_deposit, who.address, amount), NOW, DOMAIN)


def order(who: Signer, is_buy: bool, price: int, size: int, salt: int = 1,
          expiry: int = NOW + 60, market: int = ETH) -> Order:
    return Order(who.address, market, is_buy, price, size, salt, expiry)


def fill(maker: Order, taker: Order, size: int | None = None, price: int | None = None,
         maker_signer: Signer | None = None, taker_signer: Signer | None = None) -> Fill:
    signers = {ALICE.address: ALICE, BOB.address: BOB}
    ms = maker_signer or signers[maker.account]
    ts = taker_signer or signers[taker.account]
    return Fill(
        maker, ms.sign_order(DOMAIN, maker)[1], taker, ts.sign_order(DOMAIN, taker)[1],
        maker.size if size is None else size, maker.price if price is None else price,
    )


@pytest.fixture
def state() -> State:
    s = new_state()
    fund(s, (ALICE, 10_000_000_000), (BOB, 10_000_000_000))  # 10,000 USDC each
    return s


def assert_unchanged(state: State, tx, exc: type[err.InvalidTransaction]) -> None:
    before = state.dirty_items(), state.commit()
    with pytest.raises(exc):
        apply_transaction(state, tx, NOW, DOMAIN)
    assert state.dirty_items() == {}
    assert state.commit() == before[1]


def test_fill_moves_cash_positions_and_fees(state: State) -> None:
    maker = order(ALICE, False, 166621, 10_000)  # sell 1 ETH at 1666.21
    taker = order(BOB, True, 166700, 10_000)
    apply_transaction(state, fill(maker, taker), NOW, DOMAIN)
    notional = 10_000 * 166621  # 1666.21 USDC in base units
    maker_fee = -(-notional * 200 // 1_000_000)
    taker_fee = -(-notional * 500 // 1_000_000)
    alice, bob = state.account(ALICE.address), state.account(BOB.address)
    assert alice.collateral == 10_000_000_000 + notional - maker_fee
    assert bob.collateral == 10_000_000_000 - notional - taker_fee
    assert alice.position(ETH).size == -10_000 and alice.position(ETH).cost == -notional
    assert bob.position(ETH).size == 10_000 and bob.position(ETH).cost == notional
    assert state.account(FEE).collateral == maker_fee + taker_fee
    total = alice.collateral + bob.collateral + state.account(FEE).collateral
    assert total == 20_000_000_000


def test_partial_fills_accumulate_and_overfill_rejected(state: State) -> None:
    maker = order(ALICE, False, 166621, 10_000)
    apply_transaction(state, fill(maker, order(BOB, True, 166621, 6_000), 6_000), NOW, DOMAIN)
    apply_transaction(state, fill(maker, order(BOB, True, 166621, 4_000, salt=2), 4_000), NOW, DOMAIN)
    assert_unchanged(state, fill(maker, order(BOB, True, 166621, 1, salt=3), 1), err.Overfill)


def test_taker_overfill(state: State) -> None:
    taker = order(BOB, True, 166621, 5)
    apply_transaction(state, fill(order(ALICE, False, 166621, 5), taker, 5), NOW, DOMAIN)
    assert_unchanged(state, fill(order(ALICE, False, 166621, 5, salt=9), taker, 5), err.Overfill)


@pytest.mark.parametrize(
    ("maker", "taker", "kwargs", "exc"),
    [
        (order(ALICE, False, 100, 10, market=99), order(BOB, True, 100, 10, market=99), {},
         err.UnknownMarket),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10, market=2), {}, err.MarketMismatch),
        (order(ALICE, True, 100, 10), order(BOB, True, 100, 10), {}, err.SameSide),
        (order(ALICE, False, 100, 10), order(ALICE, True, 100, 10), {}, err.SelfTrade),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10), {"size": 0}, err.ZeroFillSize),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10), {"price": 101},
         err.FillPriceMismatch),
        (order(ALICE, False, 101, 10), order(BOB, True, 100, 10), {}, err.PricesDoNotCross),
        (order(ALICE, False, 100, 10, expiry=NOW), order(BOB, True, 100, 10), {},
         err.OrderExpired),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10, expiry=NOW - 1), {},
         err.OrderExpired),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10),
         {"maker_signer": BOB}, err.InvalidOrderSignature),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10),
         {"taker_signer": ALICE}, err.InvalidOrderSignature),
        (order(ALICE, False, 100, 10), order(BOB, True, 100, 10), {"size": 11}, err.Overfill),
    ],
)
def test_fill_rules(state: State, maker: Order, taker: Order, kwargs: dict, exc: type) -> None:
    assert_unchanged(state, fill(maker, taker, **kwargs), exc)


def test_step_and_tick(state: State) -> None:
    m = state.markets[ETH]
    state.set_market(replace(m, tick_size=5, step_size=10))
    state.commit()
    assert_unchanged(state, fill(order(ALICE, False, 100, 15), order(BOB, True, 100, 15)),
                     err.InvalidStepSize)
    assert_unchanged(state, fill(order(ALICE, False, 101, 10), order(BOB, True, 105, 10)),
                     err.InvalidTickSize)


def test_bad_signature_bytes_rejected(state: State) -> None:
    f = fill(order(ALICE, False, 100, 10), order(BOB, True, 100, 10))
    assert_unchanged(state, replace(f, maker_signature=b"\x00" * 65), err.InvalidOrderSignature)
    high_s = f.taker_signature[:32] + (2**256 - 1).to_bytes(32, "big") + f.taker_signature[64:]
    assert_unchanged(state, replace(f, taker_signature=high_s), err.InvalidOrderSignature)


def test_signature_v_must_be_27_or_28(state: State) -> None:
    """docs/protocol.md "EIP-712": v in {27, 28}; the 0/1 form of the same
    signature is refused (the one-step verifier's ecrecover refuses it too)."""
    f = fill(order(ALICE, False, 100, 10), order(BOB, True, 100, 10))
    for sig_field in ("maker_signature", "taker_signature"):
        sig = getattr(f, sig_field)
        assert sig[64] in (27, 28)
        for v in (sig[64] - 27, 29, 0x25):
            assert_unchanged(state, replace(f, **{sig_field: sig[:64] + bytes([v])}),
                             err.InvalidOrderSignature)
    apply_transaction(state, f, NOW, DOMAIN)


def test_fee_account_margin_counts_its_own_fee_income() -> None:
    """Rule order (docs/protocol.md): cash, fee and position updates, then the
    margin checks, so a fee account that takes a fill is checked with the
    fee income of that same fill credited."""
    carol = Signer(keccak(b"carol"))
    genesis = replace(GENESIS, oracle=ORACLE.address, fee_account=carol.address)
    signers = {ALICE.address: ALICE, carol.address: carol}

    def run(collateral: int) -> State:
        tree = SparseMerkleTree(MemoryDB())
        st = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
        fund(st, (ALICE, 10_000_000_000), (carol, collateral))
        maker = order(ALICE, False, 166600, 10_000)
        taker = Order(carol.address, ETH, True, 166600, 10_000, 1, NOW + 60)
        tx = Fill(maker, ALICE.sign_order(DOMAIN, maker)[1], taker,
                  signers[carol.address].sign_order(DOMAIN, taker)[1], 10_000, 166600)
        apply_transaction(st, tx, NOW, DOMAIN)
        return st

    lo, hi = 0, 1_000_000_000  # the smallest collateral that lets carol buy 1 ETH
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            run(mid)
            hi = mid
        except err.InsufficientMargin:
            lo = mid + 1
    st = run(lo)
    after = st.account(carol.address)
    maker_fee = -(-1666_000_000 * 200 // 1_000_000)
    taker_fee = -(-1666_000_000 * 500 // 1_000_000)
    assert after.collateral == lo - 1666_000_000 - taker_fee + maker_fee + taker_fee
    need = initial_margin(after, st.markets)
    assert equity(after, st.markets) >= need
    # without this fill's fee income the same account would be under margin
    assert equity(after, st.markets) - (maker_fee + taker_fee) < need
    with pytest.raises(err.InsufficientMargin, match="taker"):
        run(lo - 1)


def test_initial_margin_checked_for_maker_and_taker(state: State) -> None:
    # 10,000 USDC at 10% initial margin carries 100,000 USDC of notional: ~60 ETH.
    big = 70 * 10_000
    assert_unchanged(state, fill(order(ALICE, False, 166600, big), order(BOB, True, 166600, big)),
                     err.InsufficientMargin)
    fund(state, (ALICE, 100_000_000_000))
    with pytest.raises(err.InsufficientMargin, match="taker"):
        apply_transaction(state, fill(order(ALICE, False, 166600, big, salt=2),
                                      order(BOB, True, 166600, big, salt=2)), NOW, DOMAIN)


def test_reducing_trade_allowed_below_initial_margin(state: State) -> None:
    size = 50 * 10_000
    apply_transaction(state, fill(order(ALICE, False, 166600, size), order(BOB, True, 166600, size)),
                      NOW, DOMAIN)
    # ETH drops 10%: Bob (long 50) falls below initial margin but may still reduce.
    apply_transaction(state, ORACLE.oracle_price(DOMAIN, ETH, 150000, NOW), NOW, DOMAIN)
    bob = state.account(BOB.address)
    assert equity(bob, state.markets) < initial_margin(bob, state.markets)
    assert_unchanged(state, fill(order(ALICE, False, 150000, 10_000, salt=2),
                                 order(BOB, True, 150000, 10_000, salt=2)), err.InsufficientMargin)
    apply_transaction(state, fill(order(ALICE, True, 150000, 10_000, salt=3),
                                  order(BOB, False, 150000, 10_000, salt=3)), NOW, DOMAIN)
    assert state.account(BOB.address).position(ETH).size == size - 10_000


def test_deposit_order(state: State) -> None:
    nxt = state.system.next_deposit
    assert_unchanged(state, Deposit(nxt + 1, ALICE.address, 5), err.DepositOutOfOrder)
    assert_unchanged(state, Deposit(nxt - 1, ALICE.address, 5), err.DepositOutOfOrder)
    apply_transaction(state, Deposit(nxt, ALICE.address, 5), NOW, DOMAIN)
    assert state.system.next_deposit == nxt + 1


def test_oracle_rules(state: State) -> None:
    assert_unchanged(state, BOB.oracle_price(DOMAIN, ETH, 1, NOW), err.InvalidOracleSignature)
    assert_unchanged(state, ORACLE.oracle_price(DOMAIN, 77, 1, NOW), err.UnknownMarket)
    assert_unchanged(state, ORACLE.oracle_price(DOMAIN, ETH, 0, NOW), err.InvalidPrice)
    apply_transaction(state, ORACLE.oracle_price(DOMAIN, ETH, 170000, NOW), NOW, DOMAIN)
    assert state.markets[ETH].oracle_price == 170000
    assert_unchanged(state, ORACLE.oracle_price(DOMAIN, ETH, 170001, NOW), err.StaleOraclePrice)


def test_withdraw_rules(state: State) -> None:
    w = ALICE.withdraw(DOMAIN, ALICE.address, 1_000_000, 0)
    forged = replace(w, signature=BOB.withdraw(DOMAIN, ALICE.address, 1_000_000, 0).signature)
    assert_unchanged(state, forged, err.InvalidWithdrawSignature)
    assert_unchanged(state, ALICE.withdraw(DOMAIN, ALICE.address, 1, 1), err.InvalidNonce)
    assert_unchanged(state, ALICE.withdraw(DOMAIN, ALICE.address, 0, 0), err.ZeroAmount)
    assert_unchanged(state, ALICE.withdraw(DOMAIN, ALICE.address, 10_000_000_001, 0),
                     err.InsufficientFreeCollateral)
    apply_transaction(state, w, NOW, DOMAIN)
    assert state.account(ALICE.address).collateral == 10_000_000_000 - 1_000_000
    assert state.account(ALICE.address).nonce == 1
    assert state.withdrawal(0).amount == 1_000_000
    assert state.system.withdrawal_count == 1


def test_withdraw_keeps_margin(state: State) -> None:
    size = 50 * 10_000
    apply_transaction(state, fill(order(ALICE, False, 166600, size), order(BOB, True, 166600, size)),
                      NOW, DOMAIN)
    bob = state.account(BOB.address)
    free = equity(bob, state.markets) - initial_margin(bob, state.markets)
    assert_unchanged(state, BOB.withdraw(DOMAIN, BOB.address, free + 1, 0),
                     err.InsufficientFreeCollateral)
    apply_transaction(state, BOB.withdraw(DOMAIN, BOB.address, free, 0), NOW, DOMAIN)


def test_round_trip_realizes_pnl_and_entry_cost(state: State) -> None:
    apply_transaction(state, fill(order(ALICE, False, 100000, 20_000), order(BOB, True, 100000, 20_000)),
                      NOW, DOMAIN)
    # Bob closes half at a higher price, then flips short.
    apply_transaction(state, fill(order(ALICE, True, 110000, 10_000, salt=2),
                                  order(BOB, False, 110000, 10_000, salt=2)), NOW, DOMAIN)
    pos = state.account(BOB.address).position(ETH)
    assert (pos.size, pos.cost) == (10_000, 10_000 * 100000)
    apply_transaction(state, fill(order(ALICE, True, 120000, 30_000, salt=3),
                                  order(BOB, False, 120000, 30_000, salt=3)), NOW, DOMAIN)
    pos = state.account(BOB.address).position(ETH)
    assert (pos.size, pos.cost) == (-20_000, -20_000 * 120000)
    accounts = [state.account(a) for a in (ALICE.address, BOB.address, FEE)]
    assert sum(a.collateral for a in accounts) == 20_000_000_000
    assert sum(a.position(ETH).size for a in accounts if a.position(ETH)) == 0


def test_state_root_is_deterministic() -> None:
    roots = []
    for _ in range(2):
        s = new_state()
        fund(s, (ALICE, 10**10), (BOB, 10**10))
        apply_transaction(s, fill(order(ALICE, False, 166621, 10), order(BOB, True, 166621, 10)),
                          NOW, DOMAIN)
        roots.append(s.commit())
    assert roots[0] == roots[1] != ZERO_HASH


def test_genesis_state_is_three_leaves() -> None:
    """docs/protocol.md "Genesis state": markets, symbols, system; no accounts."""
    from node.smt_reference import reference_root
    from node.state import MARKETS_KEY, SYMBOLS_KEY, SYSTEM_KEY, decode_markets

    leaves = GENESIS.leaves()
    assert set(leaves) == {MARKETS_KEY, SYMBOLS_KEY, SYSTEM_KEY}
    assert all(m.oracle_time == 0 for m in decode_markets(leaves[MARKETS_KEY]).values())
    tree = SparseMerkleTree(MemoryDB())
    assert tree.update(ZERO_HASH, leaves) == reference_root(leaves)
    state = State(tree, tree.update(ZERO_HASH, leaves))
    system = state.system
    assert (system.next_deposit, system.withdrawal_count) == (0, 0)
    assert (system.oracle, system.fee_account, system.admin) == (
        GENESIS.oracle, GENESIS.fee_account, GENESIS.admin)


def test_account_leaf_is_a_parameter_list() -> None:
    """Leaf values are abi.encode(a, b, c): collateral first, then nonce, then
    the positions offset 0x60 (no head word for the list as a whole)."""
    from node.state import Account, Position

    raw = Account(-5, 7, (Position(1, 3, -9),)).encode()
    assert int.from_bytes(raw[0:32], "big", signed=True) == -5
    assert int.from_bytes(raw[32:64], "big") == 7
    assert int.from_bytes(raw[64:96], "big") == 0x60
    assert int.from_bytes(raw[96:128], "big") == 1  # one position


def test_fill_writes_five_leaves_even_with_zero_fee_credit() -> None:
    """A fill with no fees and no rounding dust still writes (creates) the
    fee account's leaf: five leaves per successful fill, plus the markets
    leaf when open interest moves (here: from 0 to 5)."""
    from node.state import MARKETS_KEY, Market, account_key

    zero_fee = Market(7, 0, 0, 1, 1, 100_000, 50_000, 0, 0, 100, 0)
    genesis = replace(GENESIS, oracle=ORACLE.address,
                      markets=GENESIS.markets + (type(GENESIS.markets[0])("ZERO-FEE", zero_fee),))
    tree = SparseMerkleTree(MemoryDB())
    st = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
    fund(st, (ALICE, 1_000_000_000), (BOB, 1_000_000_000))
    st.commit()
    assert account_key(FEE) not in st.dirty_items()
    tx = fill(order(ALICE, False, 100, 5, market=7), order(BOB, True, 100, 5, market=7))
    apply_transaction(st, tx, NOW, DOMAIN)
    written = st.dirty_items()
    assert len(written) == 6 and account_key(FEE) in written and MARKETS_KEY in written
    assert st.markets[7].open_interest == 5
    fee_acc = st.account(FEE)
    assert (fee_acc.collateral, fee_acc.nonce, fee_acc.positions) == (0, 0, ())


def test_prefetched_fills_seed_order_hashes_and_signers() -> None:
    """``Prefetcher.submit_fills`` hashes the orders and recovers the signers
    on a worker process; ``collect_fills`` seeds both memos with exactly what
    the STF would compute (a forged signature recovers another address or
    None), and a fill applied afterwards gives the same root as a cold one."""
    from node.eip712 import order_hash
    from node.sigverify import Prefetcher, clear_memo, signer_of

    good = fill(order(ALICE, True, 166600, 10_000), order(BOB, False, 166600, 10_000, salt=2))
    forged = replace(good, taker_signature=good.maker_signature)
    cold = new_state()
    fund(cold, (ALICE, 10**10), (BOB, 10**10))
    clear_memo()
    apply_transaction(cold, good, NOW, DOMAIN)
    clear_memo()
    with Prefetcher(1) as prefetcher:
        Prefetcher.collect_fills(DOMAIN, prefetcher.submit_fills(DOMAIN, [good, forged]))
    from node import eip712, sigverify

    for f in (good, forged):
        for o, sig in ((f.maker, f.maker_signature), (f.taker, f.taker_signature)):
            seeded = eip712._ORDER_HASHES[DOMAIN][o]  # seeded, not computed here
            assert seeded == DOMAIN.digest(eip712.order_struct_hash(o))
            assert seeded + sig in sigverify._MEMO
    assert signer_of(order_hash(DOMAIN, good.taker), good.taker_signature) == BOB.address
    assert signer_of(order_hash(DOMAIN, forged.taker), forged.taker_signature) != BOB.address
    warm = new_state()
    fund(warm, (ALICE, 10**10), (BOB, 10**10))
    apply_transaction(warm, good, NOW, DOMAIN)
    with pytest.raises(err.InvalidOrderSignature):
        apply_transaction(warm, forged, NOW, DOMAIN)
    assert warm.commit() == cold.commit()
