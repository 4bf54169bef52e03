"""Settlement half of the Rollup contract (docs/protocol.md "Settlement (L1)"):
finality, forced inclusion, withdrawals with sparse Merkle proofs, the escape
hatch and deposit reclaims, against state trees built with ``node.smt``.

The contract does not check state roots against batch contents, so every
test posts a small valid batch with whatever root it built in Python.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from l1_stub.chain import EmbeddedL1
from l1_stub.client import (
    PRESETS,
    Deployment,
    RollupClient,
    SettlementWindows,
    TransactionReverted,
    deploy,
    send_call,
    send_deploy,
    send_transaction,
    wait_receipt,
)
from l1_stub.contracts import CONTRACTS_DIR
from node.crypto import keccak
from node.db import MemoryDB
from node.genesis import load_genesis
from node.margin import equity, position_value
from node.smt import EMPTY_ROOT, SparseMerkleTree, verify_proof
from node.smt_reference import reference_proof, reference_root
from node.state import (
    MARKETS_KEY,
    SYSTEM_KEY,
    Account,
    Market,
    Position,
    System,
    Withdrawal,
    account_key,
    encode_markets,
    withdrawal_key,
)
from tests.test_l1_contracts import batch_of, deploy_rollup, deposit_tx, oracle_tx

GENESIS_ROOT = keccak(b"derivnet genesis")
L2_CHAIN_ID = 901
USDC = 10**6
TS = 1_700_000_000  # L2 block timestamp in the posted batches (behind L1 time)

GENESIS = load_genesis()
ETH = GENESIS.market_by_symbol("ETH-USD")
BTC = GENESIS.market_by_symbol("BTC-USD")
# pd + sd > 6: values floor; pd + sd < 6: values scale up exactly; a
# market whose divisor overflows 256 bits; a market without a price yet
WIDE = Market(3, 4, 6, 1, 1, 100_000, 50_000, 200, 500, 123_457, 1)
COARSE = Market(4, 2, 2, 1, 1, 100_000, 50_000, 200, 500, 3_333, 1)
HUGE = Market(5, 255, 255, 1, 1, 100_000, 50_000, 200, 500, 2**64 - 1, 1)
UNPRICED = Market(6, 2, 4, 1, 1, 100_000, 50_000, 200, 500, 0, 0)
MARKETS = {m.id: m for m in (ETH, BTC, WIDE, COARSE, HUGE, UNPRICED)}


def addr20(name: str) -> bytes:
    return keccak(name.encode())[:20]


def hexaddr(raw: bytes) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(raw)


def reverts_with(fn, reason: str):
    with pytest.raises(ContractLogicError) as info:
        fn()
    assert reason in str(info.value), str(info.value)
    return info.value


# ------------------------------------------------------------------ L2 state


@dataclass
class L2State:
    """A state tree built in Python: ``items`` are the leaves, ``root`` its
    root; ``siblings(key)`` an inclusion proof."""

    items: dict[bytes, bytes]
    tree: SparseMerkleTree = field(default_factory=lambda: SparseMerkleTree(MemoryDB()))
    root: bytes = EMPTY_ROOT

    def __post_init__(self) -> None:
        self.root = self.tree.update(EMPTY_ROOT, self.items)

    def siblings(self, key: bytes) -> list[bytes]:
        proof = self.tree.prove(self.root, key)
        assert proof.leaf is not None and proof.leaf[0] == key
        assert verify_proof(self.root, key, self.items[key], proof)
        return list(proof.siblings)

    def wproof(self, withdrawal_id: int) -> list[bytes]:
        return self.siblings(withdrawal_key(withdrawal_id))

    def aproof(self, address: bytes) -> list[bytes]:
        return self.siblings(account_key(address))


def state_of(
    accounts: Mapping[bytes, Account] = {},
    withdrawals: Iterable[Withdrawal] = (),
    markets: Mapping[int, Market] = MARKETS,
    extra: Mapping[bytes, bytes] = {},
) -> L2State:
    withdrawals = list(withdrawals)
    items = {
        MARKETS_KEY: encode_markets(markets),
        SYSTEM_KEY: System(0, len(withdrawals), GENESIS.oracle, GENESIS.fee_account,
                           GENESIS.admin).encode(),
    }
    for address, acc in accounts.items():
        items[account_key(address)] = acc.encode()
    for w in withdrawals:
        items[withdrawal_key(w.id)] = w.encode()
    items.update(extra)
    return L2State(items)


def account(collateral: int, *positions: tuple[int, int], nonce: int = 0) -> Account:
    pos = tuple(Position(m, size, size * 7) for m, size in sorted(positions))
    return Account(collateral, nonce, pos)


# ---------------------------------------------------------------------- env


@dataclass
class Env:
    l1: EmbeddedL1
    deployment: Deployment
    client: RollupClient
    queue: list[tuple[bytes, int]] = field(default_factory=list)  # (to, amount) per deposit

    @property
    def w3(self):
        return self.l1.w3

    @property
    def r(self):
        return self.client.rollup.functions

    @property
    def seq_key(self) -> bytes:
        return self.l1.dev_keys[0]

    def key(self, i: int) -> bytes:
        return self.l1.dev_keys[i]

    def addr(self, i: int) -> str:
        return self.l1.dev_accounts[i]

    def wait(self, tx_hash, check: bool = True):
        return wait_receipt(self.w3, tx_hash, check=check)

    def warp(self, seconds: int) -> int:
        """Mine a block at least ``seconds`` after the head block (warping the
        clock with increase_time: with a block per transaction the chain may
        run ahead of wall time); returns its timestamp."""
        target = self.l1.head()[1] + seconds
        self.l1.increase_time(max(0, target - self.l1.now()))
        self.l1.mine()
        return self.l1.head()[1]

    def mine_at(self, timestamp: int) -> None:
        """Mine an empty block at exactly ``timestamp`` (views see it)."""
        self.l1.set_next_block_timestamp(timestamp)
        self.l1.mine()

    def balance(self, who: str | bytes) -> int:
        return self.client.usdc_balance(hexaddr(who) if isinstance(who, bytes) else who)

    def fund_and_deposit(self, user: int, to: bytes, amount: int):
        c = self.client
        self.wait(c.faucet(self.key(user), amount))
        self.wait(c.approve(self.key(user), amount))
        receipt = self.wait(c.deposit(self.key(user), to, amount))
        self.queue.append((to, amount))
        return receipt

    def batch(self, upto: int | None = None) -> tuple[bytes, int]:
        """A valid batch consuming the queue up to ``upto`` (default: all)."""
        start = self.client.deposits_consumed()
        end = len(self.queue) if upto is None else upto
        deps = [deposit_tx(i, *self.queue[i]) for i in range(start, end)]
        data, _ = batch_of((TS, [oracle_tx(), *deps]))
        return data, end

    def submit(self, root: bytes, upto: int | None = None):
        data, end = self.batch(upto)
        return self.wait(self.client.submit_batch(self.seq_key, data, root, end))

    def finalize_all(self) -> None:
        c = self.client
        while c.finalized_batch_count() < c.batch_count():
            self.wait(c.finalize_batch(self.key(5), c.finalized_batch_count()))

    def escape(self, state: L2State, who: bytes, sender: int = 5, **kw):
        leaf = state.items[account_key(who)]
        return self.client.escape(
            self.key(sender),
            who,
            leaf,
            state.aproof(who),
            state.items[MARKETS_KEY],
            state.siblings(MARKETS_KEY),
            **kw,
        )

    def escape_fn(self, state: L2State, who: bytes, *, leaf=None, siblings=None,
                  markets_leaf=None, markets_siblings=None):
        """The bound escape call for ``who`` (parts replaceable)."""
        return self.r.escape(
            hexaddr(who),
            state.items[account_key(who)] if leaf is None else leaf,
            state.aproof(who) if siblings is None else siblings,
            state.items[MARKETS_KEY] if markets_leaf is None else markets_leaf,
            state.siblings(MARKETS_KEY) if markets_siblings is None else markets_siblings,
        )

    def reverts(self, fn, reason: str, sender: int = 5):
        """eth_call the bound contract function ``fn`` from dev account
        ``sender``; it must revert with ``reason`` (ContractLogicError)."""
        return reverts_with(lambda: fn.call({"from": self.addr(sender)}), reason)

    def withdraw_fn(self, batch_index: int, w: Withdrawal, siblings: list[bytes]):
        """The bound finalizeWithdrawal call for ``w``."""
        return self.r.finalizeWithdrawal(
            batch_index, w.id, hexaddr(w.account), hexaddr(w.recipient), w.amount, siblings
        )


def make_env(windows: SettlementWindows = PRESETS["devnet"], l1: EmbeddedL1 | None = None,
             **overrides) -> Env:
    l1 = l1 or EmbeddedL1(auto_mine=True)
    return Env(l1, *deploy_rollup(l1, overrides=overrides, **dataclasses.asdict(windows)))


@pytest.fixture
def env() -> Env:
    return make_env()


def bare_game(w3, key: bytes) -> tuple[str, int, int]:
    """(dispute game, proposer bond, max drift) Rollup constructor arguments:
    a DisputeGame nobody opens games on (no prover, no bond), for Rollups
    deployed by hand."""
    from l1_stub.client import NO_PROVER

    receipt = wait_receipt(w3, send_deploy(w3, key, "DisputeGame", (NO_PROVER, 2, 30, 0)))
    return receipt["contractAddress"], 0, 300


def fund_rollup(env: Env, amount: int, user: int = 9) -> None:
    """Give the Rollup USDC without a deposit (escape tests pay from it)."""
    while amount > 0:
        part = min(amount, 10_000_000 * USDC)
        env.wait(env.client.faucet(env.key(user), part))
        env.wait(env.client.transfer(env.key(user), env.deployment.rollup, part))
        amount -= part


# ------------------------------------------------------------------ presets


def test_presets_and_deploy_windows():
    assert tuple(PRESETS["devnet"]) == (60, 30, 120)
    assert tuple(PRESETS["mainnet"]) == (7 * 86400, 12 * 3600, 7 * 86400)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["devnet"].challenge_window = 1  # type: ignore[misc]
    l1 = EmbeddedL1(auto_mine=True)
    env = make_env(l1=l1)
    c = env.client
    assert c.windows() == PRESETS["devnet"]
    assert (c.challenge_window(), c.inclusion_window(), c.escape_delay()) == (60, 30, 120)
    receipt = env.w3.eth.get_block(env.deployment.deploy_block)
    assert c.last_batch_timestamp() == receipt["timestamp"]
    assert c.finalized_batch_count() == 0
    assert c.latest_finalized_state_root() == GENESIS_ROOT
    assert not c.frozen() and c.escape_root() == b"\x00" * 32
    assert not c.is_finalizable(0)
    main = make_env(PRESETS["mainnet"], l1=l1)
    assert main.client.windows() == PRESETS["mainnet"]
    with pytest.raises(ValueError):
        deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], GENESIS_ROOT, 901, escape_delay=-1)


# ------------------------------------------------------------------ finality


def test_finality_window_order_and_views(env: Env):
    c, r = env.client, env.r
    root0, root1 = keccak(b"root 0"), keccak(b"root 1")
    env.reverts(r.finalizeBatch(0), "finalize: no such batch")
    env.submit(root0)
    t0 = c.get_batch(0).l1_timestamp
    assert c.last_batch_timestamp() == t0
    env.mine_at(t0 + 30)
    env.submit(root1)
    t1 = c.get_batch(1).l1_timestamp

    # one second before the window closes: not finalizable
    env.mine_at(t0 + 59)
    assert not c.is_finalizable(0)
    env.reverts(r.finalizeBatch(0), "finalize: challenge window open")
    env.reverts(r.finalizeBatch(1), "finalize: out of order")
    env.reverts(r.finalizeBatch(2), "finalize: no such batch")
    env.mine_at(t0 + 60)
    assert c.is_finalizable(0) and not c.is_finalizable(1)
    # batch 1 out of order even when its window passes first
    env.mine_at(t1 + 60)
    assert c.is_finalizable(1)
    env.reverts(r.finalizeBatch(1), "finalize: out of order")

    assert c.latest_finalized_state_root() == GENESIS_ROOT
    receipt = env.wait(c.finalize_batch(env.key(7), 0))  # anyone may finalize
    (event,) = c.rollup.events.BatchFinalized().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["index"] == 0 and event["args"]["state_root"] == root0
    assert c.finalized_batch_count() == 1
    assert c.latest_finalized_state_root() == root0
    assert not c.is_finalizable(0)
    env.reverts(r.finalizeBatch(0), "finalize: already final")
    env.wait(c.finalize_batch(env.key(7), 1))
    assert c.finalized_batch_count() == 2
    assert c.latest_finalized_state_root() == root1 == c.latest_state_root()
    assert not c.is_finalizable(1) and not c.is_finalizable(2)


# ----------------------------------------------------------- forced inclusion


def test_forced_inclusion_of_overdue_deposits(env: Env):
    c, r = env.client, env.r
    alice, bob = addr20("alice"), addr20("bob")
    env.fund_and_deposit(3, alice, 100 * USDC)
    t_dep = c.deposit_timestamp(0)

    # fresh deposit: a batch may leave it in the queue
    env.submit(keccak(b"a"), upto=0)
    assert c.deposits_consumed() == 0
    # inclusion_window (30 s) after the deposit the sequencer must include it
    env.mine_at(t_dep + 29)
    data, _ = env.batch(upto=0)
    r.submitBatch(data, keccak(b"b"), 0).call(  # t_dep+29 < t_dep+30
        {"from": env.addr(0), "value": c.proposer_bond()})
    env.mine_at(t_dep + 30)
    env.reverts(r.submitBatch(data, keccak(b"b"), 0), "batch: deposit inclusion overdue", sender=0)
    # sent anyway, it fails on chain with the same reason
    with pytest.raises(TransactionReverted, match="batch: deposit inclusion overdue"):
        env.wait(c.submit_batch(env.seq_key, data, keccak(b"b"), 0))
    assert c.batch_count() == 1

    # a second deposit, queued now, is fresh; consuming only the overdue one
    # is enough
    env.fund_and_deposit(4, bob, 5 * USDC)
    env.submit(keccak(b"c"), upto=1)
    assert c.deposits_consumed() == 1 and c.batch_count() == 2
    # once the second one is overdue too, batches stop again until it is in
    env.mine_at(c.deposit_timestamp(1) + 30)
    data, _ = env.batch(upto=1)
    env.reverts(r.submitBatch(data, keccak(b"d"), 1), "batch: deposit inclusion overdue", sender=0)
    env.submit(keccak(b"d"), upto=2)
    assert c.deposits_consumed() == 2 and c.batch_count() == 3
    # empty queue: batches flow whatever the time
    env.warp(1000)
    env.submit(keccak(b"e"))
    assert c.batch_count() == 4


# ----------------------------------------------------------------- withdrawals


def _withdraw_state():
    alice, bob, carol = addr20("alice"), addr20("bob"), addr20("carol")
    withdrawals = [
        Withdrawal(0, alice, addr20("alice cold"), 40 * USDC),
        Withdrawal(1, bob, bob, 7),
        Withdrawal(2, alice, addr20("carol"), 123_456_789),
    ]
    accounts = {alice: account(10 * USDC, (1, 500)), bob: account(1), carol: account(0)}
    return state_of(accounts, withdrawals), withdrawals


def test_withdrawal_flow(env: Env):
    c = env.client
    state, ws = _withdraw_state()
    # the tree is the protocol's: node.smt agrees with the from-scratch reference
    assert state.root == reference_root(state.items)
    reference = reference_proof(state.items, withdrawal_key(2))
    assert list(reference.siblings) == state.wproof(2)

    env.fund_and_deposit(3, addr20("alice"), 500 * USDC)
    env.submit(state.root)
    w = ws[0]
    proof = state.wproof(w.id)
    # before finality
    env.reverts(env.withdraw_fn(0, w, proof), "withdrawal: batch not final")
    env.warp(60)
    env.wait(c.finalize_batch(env.key(5), 0))
    assert c.latest_finalized_state_root() == state.root
    env.reverts(env.withdraw_fn(1, w, proof), "withdrawal: batch not final")

    # wrong amount / recipient / account / id / proof
    for bad in (
        dataclasses.replace(w, amount=w.amount + 1),
        dataclasses.replace(w, recipient=addr20("mallory")),
        dataclasses.replace(w, account=addr20("bob")),
        dataclasses.replace(w, id=1),
    ):
        env.reverts(env.withdraw_fn(0, bad, proof), "withdrawal: invalid proof")
    env.reverts(env.withdraw_fn(0, w, proof[:-1]), "withdrawal: invalid proof")
    env.reverts(env.withdraw_fn(0, w, [*proof, b"\x00" * 32]), "withdrawal: invalid proof")
    tampered = [proof[0], keccak(b"x"), *proof[2:]]
    env.reverts(env.withdraw_fn(0, w, tampered), "withdrawal: invalid proof")
    env.reverts(env.withdraw_fn(0, w, state.wproof(1)), "withdrawal: invalid proof")

    held = env.balance(env.deployment.rollup)
    paid = 0
    for w in ws:
        before = env.balance(w.recipient)
        receipt = env.wait(
            c.finalize_withdrawal(
                env.key(6), 0, w.id, w.account, w.recipient, w.amount, state.wproof(w.id)
            )
        )
        (event,) = c.rollup.events.WithdrawalFinalized().process_receipt(receipt, errors=DISCARD)
        assert dict(event["args"]) == {
            "id": w.id, "recipient": hexaddr(w.recipient), "amount": w.amount, "batch_index": 0,
        }
        assert env.balance(w.recipient) == before + w.amount
        assert c.withdrawal_paid(w.id)
        paid += w.amount
        # exactly once
        env.reverts(env.withdraw_fn(0, w, state.wproof(w.id)), "withdrawal: already paid")
    assert env.balance(env.deployment.rollup) == held - paid
    assert not c.withdrawal_paid(3)

    # a later batch whose state still holds withdrawal 1 cannot pay it again
    env.submit(state.root)
    env.warp(60)
    env.wait(c.finalize_batch(env.key(5), 1))
    env.reverts(env.withdraw_fn(1, ws[1], state.wproof(1)), "withdrawal: already paid")


def test_withdrawal_cannot_pay_more_than_held(env: Env):
    """A proven withdrawal the contract cannot cover reverts in the token
    transfer; nothing is marked paid."""
    w = Withdrawal(0, addr20("a"), addr20("b"), 10 * USDC)
    state = state_of({}, [w])
    env.fund_and_deposit(3, addr20("a"), 9 * USDC)
    env.submit(state.root)
    env.warp(60)
    env.finalize_all()
    env.reverts(env.withdraw_fn(0, w, state.wproof(0)), "usdc: insufficient balance")
    assert not env.client.withdrawal_paid(0)


# ------------------------------------------------------------------- freezing


def test_freeze_rules(env: Env):
    c, r = env.client, env.r
    deployed = c.last_batch_timestamp()
    # no batch yet: the delay runs from the deployment
    env.mine_at(deployed + 119)
    env.reverts(r.freeze(), "freeze: sequencer still active")
    env.fund_and_deposit(3, addr20("a"), 10 * USDC)
    root = keccak(b"root")
    env.submit(root)
    t = c.get_batch(0).l1_timestamp
    assert c.last_batch_timestamp() == t
    env.mine_at(t + 119)
    env.reverts(r.freeze(), "freeze: sequencer still active")
    env.reverts(r.escape(env.addr(3), b"", [], b"", []), "escape: not frozen")
    env.reverts(r.reclaimDeposit(0), "reclaim: not frozen")

    env.mine_at(t + 120)
    receipt = env.wait(c.freeze(env.key(8)))  # anyone may freeze
    # freezing finalized the batch whose window had passed
    fin = c.rollup.events.BatchFinalized().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["index"] for e in fin] == [0]
    (frozen,) = c.rollup.events.Frozen().process_receipt(receipt, errors=DISCARD)
    assert dict(frozen["args"]) == {
        "escape_root": root, "escape_batch_count": 1, "escape_deposit_end": 1,
    }
    assert c.frozen() and c.escape_root() == root
    assert c.finalized_batch_count() == 1 == c.escape_batch_count()
    assert c.escape_deposit_end() == 1

    data, _ = env.batch()
    env.reverts(r.submitBatch(data, root, 1), "rollup: frozen", sender=0)
    env.reverts(r.finalizeBatch(0), "rollup: frozen")
    env.reverts(r.freeze(), "rollup: frozen")
    env.wait(c.faucet(env.key(4), 5))
    env.wait(c.approve(env.key(4), 5))
    env.reverts(r.deposit(env.addr(4), 5), "rollup: frozen", sender=4)
    assert not c.is_finalizable(0)


def test_freeze_with_a_batch_inside_its_window_and_reclaims():
    """escape_delay < challenge_window: the last batch is not final when the
    rollup freezes, so the escape root is the one before it and the deposits
    it consumed go back to their senders."""
    env = make_env(SettlementWindows(challenge_window=100, inclusion_window=1000, escape_delay=50))
    c, r = env.client, env.r
    a, b, d = addr20("a"), addr20("b"), addr20("d")
    w0 = Withdrawal(0, a, a, 3 * USDC)
    w1 = Withdrawal(1, b, b, 4 * USDC)
    s0 = state_of({a: account(7 * USDC)}, [w0])
    s1 = state_of({a: account(7 * USDC), b: account(1 * USDC)}, [w0, w1])

    env.fund_and_deposit(3, a, 10 * USDC)  # deposit 0, sender 3
    env.submit(s0.root, upto=1)
    env.warp(100)
    env.fund_and_deposit(4, b, 5 * USDC)  # deposit 1, sender 4, consumed by batch 1
    env.submit(s1.root, upto=2)
    t1 = c.get_batch(1).l1_timestamp
    env.fund_and_deposit(5, d, 6 * USDC)  # deposit 2, sender 5, never consumed
    env.mine_at(t1 + 50)
    env.wait(c.freeze(env.key(8)))
    assert c.finalized_batch_count() == 1 == c.escape_batch_count()
    assert c.escape_root() == s0.root and c.escape_deposit_end() == 1
    assert c.batch_count() == 2

    # withdrawals keep working while frozen, for final batches only
    env.wait(c.finalize_withdrawal(env.key(6), 0, 0, a, a, w0.amount, s0.wproof(0)))
    assert env.balance(a) == w0.amount
    env.reverts(env.withdraw_fn(1, w1, s1.wproof(1)), "withdrawal: batch not final")

    # reclaims: deposit 0 is in the escape state; 1 and 2 are not
    env.reverts(r.reclaimDeposit(0), "reclaim: deposit consumed", sender=9)
    env.reverts(r.reclaimDeposit(3), "reclaim: no such deposit", sender=9)
    assert (c.deposit_sender(1), c.deposit_amount(1)) == (env.addr(4), 5 * USDC)
    before4, before5 = env.balance(env.addr(4)), env.balance(env.addr(5))
    receipt = env.wait(c.reclaim_deposit(env.key(9), 1))  # anyone may; pays the sender
    (event,) = c.rollup.events.DepositReclaimed().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"index": 1, "sender": env.addr(4), "amount": 5 * USDC}
    env.wait(c.reclaim_deposit(env.key(9), 2))
    assert env.balance(env.addr(4)) == before4 + 5 * USDC
    assert env.balance(env.addr(5)) == before5 + 6 * USDC
    assert c.deposit_reclaimed(1) and c.deposit_reclaimed(2) and not c.deposit_reclaimed(0)
    env.reverts(r.reclaimDeposit(1), "reclaim: already reclaimed", sender=9)

    # a escapes with its collateral in the escape state; what is left backs
    # nothing else (b's deposit went back to its sender)
    env.wait(env.escape(s0, a))
    assert env.balance(a) == w0.amount + 7 * USDC
    assert env.balance(env.deployment.rollup) == 0
    env.reverts(env.escape_fn(s1, b), "escape: invalid account proof")


def test_freeze_finalization_is_bounded():
    env = make_env(MAX_FINALIZE_ON_FREEZE=2)
    c, r = env.client, env.r
    assert r.MAX_FINALIZE_ON_FREEZE().call() == 2
    for i in range(3):
        env.submit(keccak(bytes([i])))
    env.warp(200)
    env.reverts(r.freeze(), "freeze: too many unfinalized batches")
    env.wait(c.finalize_batch(env.key(5), 0))
    env.wait(c.freeze(env.key(5)))
    assert c.finalized_batch_count() == 3 and c.escape_root() == keccak(bytes([2]))


# ---------------------------------------------------------------- escape hatch


ROWS: list[tuple[str, Account]] = [
    ("cash only", account(1_000 * USDC)),
    ("empty", account(0)),
    ("negative cash", account(-5)),
    ("eth long", account(-1_000 * USDC, (ETH.id, 12_345))),
    ("eth short", account(3_000 * USDC, (ETH.id, -12_345))),
    ("btc long and eth short", account(17, (ETH.id, -3), (BTC.id, 99_999))),
    ("wide long, non-divisible", account(1, (WIDE.id, 7))),
    ("wide short, non-divisible", account(100, (WIDE.id, -7))),
    ("wide short, divisible", account(123_457, (WIDE.id, -10_000))),
    ("wide short, one unit", account(1, (WIDE.id, -1))),
    ("coarse short", account(10**9, (COARSE.id, -123))),
    ("huge divisor", account(5, (HUGE.id, -(2**127)), (WIDE.id, 3))),
    ("huge divisor long", account(5, (HUGE.id, 2**127 - 1))),
    ("unpriced market", account(9, (UNPRICED.id, -10**20))),
    ("every market", account(10**12, *((m, (-1) ** m * (10**m + m)) for m in MARKETS))),
    ("negative equity", account(100, (ETH.id, -10**6))),
    ("equity exactly zero", account(86 + 1, (WIDE.id, -7))),
    ("huge short, no overflow", account(0, (COARSE.id, -(2**127)))),
    ("big positive equity", account(2**100, (BTC.id, 1))),
]


SPARE = addr20("spare")  # in the table's state, never escapes


@pytest.fixture(scope="module")
def frozen_table():
    """One frozen rollup whose escape state holds every ROWS account."""
    env = make_env(SettlementWindows(0, 30, 0))
    accounts = {addr20(f"row {name}"): acc for name, acc in ROWS}
    state = state_of({**accounts, SPARE: account(1, (ETH.id, 5))})
    expected = {a: max(equity(acc, MARKETS), 0) for a, acc in accounts.items()}
    assert max(expected.values()) == 2**100 + position_value(BTC, 1)  # the row below
    spare = equity(account(1, (ETH.id, 5)), MARKETS)
    fund_rollup(env, sum(v for v in expected.values() if v < 2**90) + spare)
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    assert env.client.escape_root() == state.root
    return env, state, accounts


def test_escape_values_floor_toward_minus_infinity():
    # the table's hard cases, checked against node.margin by hand
    assert position_value(WIDE, -7) == -87 and position_value(WIDE, 7) == 86
    assert position_value(HUGE, -(2**127)) == -1 and position_value(HUGE, 2**127 - 1) == 0
    assert position_value(COARSE, -123) == -123 * 3_333 * 100
    assert equity(ROWS[16][1], MARKETS) == 0
    assert equity(ROWS[15][1], MARKETS) < 0


@pytest.mark.parametrize("name,acc", ROWS, ids=[name for name, _ in ROWS])
def test_escape_pays_floored_equity(frozen_table, name: str, acc: Account):
    env, state, _ = frozen_table
    c = env.client
    who = addr20(f"row {name}")
    expected = max(equity(acc, MARKETS), 0)
    held = env.balance(env.deployment.rollup)
    if expected > held:
        # the contract never pays more than it holds: the transfer reverts
        env.reverts(env.escape_fn(state, who), "usdc: insufficient balance")
        assert not c.escaped(who)
        return
    before = env.balance(who)
    receipt = env.wait(env.escape(state, who))
    (event,) = c.rollup.events.Escaped().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["account"] == hexaddr(who)
    assert event["args"]["amount"] == expected
    assert env.balance(who) == before + expected
    assert env.balance(env.deployment.rollup) == held - expected
    assert c.escaped(who)
    env.reverts(env.escape_fn(state, who), "escape: already escaped")


def test_escape_rejects_bad_proofs(frozen_table):
    env, state, _ = frozen_table
    who = SPARE
    other = addr20("row eth long")
    leaf = state.items[account_key(who)]
    richer = account(10**15).encode()
    bad_account, bad_markets = "escape: invalid account proof", "escape: invalid markets proof"
    # a leaf that is not the account's
    env.reverts(env.escape_fn(state, who, leaf=richer), bad_account)
    # another account's leaf and proof, claimed for `who`
    other_leaf = state.items[account_key(other)]
    claimed = env.escape_fn(state, who, leaf=other_leaf, siblings=state.aproof(other))
    env.reverts(claimed, bad_account)
    env.reverts(env.escape_fn(state, who, siblings=state.aproof(who)[1:]), bad_account)
    # markets with a higher oracle price
    dearer = dict(MARKETS)
    dearer[ETH.id] = dataclasses.replace(ETH, oracle_price=ETH.oracle_price * 2)
    env.reverts(env.escape_fn(state, who, markets_leaf=encode_markets(dearer)), bad_markets)
    env.reverts(env.escape_fn(state, who, markets_siblings=[]), bad_markets)
    # the account leaf proven as the markets leaf
    swapped = env.escape_fn(state, who, markets_leaf=leaf, markets_siblings=state.aproof(who))
    env.reverts(swapped, bad_markets)
    env.escape_fn(state, who).call({"from": env.addr(5)})  # the honest call passes
    assert not env.client.escaped(who)


# markets with a funding index (price units x ppm) and positions settled at
# other indices: the escape pays equity net of unsettled funding,
# ceil(size * (market index - position index) / 10^(pd + sd))
FUNDED_MARKETS = {
    ETH.id: dataclasses.replace(ETH, funding_index=-3_000_000_001, funding_time=TS, funding_rate_ppm=-9),
    WIDE.id: dataclasses.replace(WIDE, funding_index=10**10 + 7, funding_time=TS, funding_rate_ppm=300),
    HUGE.id: dataclasses.replace(HUGE, funding_index=10**30, funding_time=TS),
    COARSE.id: COARSE,
}


def funded(collateral: int, *positions: tuple[int, int, int]) -> Account:
    """An account with (market, size, settled index) positions."""
    return Account(collateral, 0, tuple(Position(m, size, size * 7, index)
                                        for m, size, index in sorted(positions)))


FUNDING_ROWS: list[tuple[str, Account, int]] = [
    # (name, account, the unsettled funding it owes, by hand)
    ("long pays, rounded up", funded(1_000, (WIDE.id, 7, 0)), 8),
    ("short receives, rounded down", funded(1_000, (WIDE.id, -7, 0)), -7),
    ("short receives, exact multiple", funded(1_000, (WIDE.id, -10**4, 7)), -10**4),
    ("settled at the index", funded(1_000, (WIDE.id, 7, 10**10 + 7)), 0),
    ("long receives on a negative index", funded(5, (ETH.id, 3, 0)), -9_000),
    ("short pays on a negative index", funded(5, (ETH.id, -3, 0)), 9_001),
    ("funding takes equity below zero", funded(-position_value(ETH, -3) + 9_000, (ETH.id, -3, 0)), 9_001),
    ("huge divisor, capped", funded(5, (HUGE.id, 2**127 - 1, 0)), 1),
    ("market without funding", funded(50, (COARSE.id, -2, 123)), 1),
    ("every funded market", funded(10**12, (ETH.id, 5, 17), (WIDE.id, -3, 10**11), (HUGE.id, -1, 0)), 0),
]


def test_escape_pays_equity_net_of_unsettled_funding():
    """escape() decodes the funding fields (markets +3, positions +1) and pays
    max(collateral + sum(value - unsettled funding), 0), as node.margin.equity."""
    from node.margin import unsettled_funding

    for name, acc, owed in FUNDING_ROWS[:-1]:
        got = sum(unsettled_funding(FUNDED_MARKETS[p.market], p) for p in acc.positions)
        assert got == owed, name
    env = make_env(SettlementWindows(0, 30, 0))
    accounts = {addr20(f"funded {name}"): acc for name, acc, _ in FUNDING_ROWS}
    state = state_of(accounts, markets=FUNDED_MARKETS)
    expected = {a: max(equity(acc, FUNDED_MARKETS), 0) for a, acc in accounts.items()}
    # 9,000 of equity without the funding, -1 with it: paid 0
    assert expected[addr20("funded funding takes equity below zero")] == 0
    fund_rollup(env, sum(expected.values()))
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    for who, amount in expected.items():
        receipt = env.wait(env.escape(state, who))
        (event,) = env.client.rollup.events.Escaped().process_receipt(receipt, errors=DISCARD)
        assert event["args"]["amount"] == amount, who
    assert env.balance(env.deployment.rollup) == 0


def test_escape_decodes_the_risk_fields():
    """escape() decodes issue 8's leaf formats (a market row + max
    liquidation fee, open interest and its caps; a position + settled
    funding; the system leaf + insurance fund, not read) and pays the same
    equity: none of the new fields enters it."""
    risky = {
        m.id: dataclasses.replace(m, max_liquidation_fee_ppm=15_000 + m.id, open_interest=2**128 - 1 - m.id,
                                  oi_lower_cap=25_000_000 * USDC, oi_upper_cap=50_000_000 * USDC)
        for m in FUNDED_MARKETS.values()
    }
    env = make_env(SettlementWindows(0, 30, 0))
    accounts = {}
    for name, acc, _ in FUNDING_ROWS:
        settled = tuple(dataclasses.replace(p, settled_funding=-(2**255) + i if i % 2 else 2**255 - 1 - i)
                        for i, p in enumerate(acc.positions))
        accounts[addr20(f"risky {name}")] = dataclasses.replace(acc, positions=settled)
    state = state_of(accounts, markets=risky)
    expected = {a: max(equity(acc, FUNDED_MARKETS), 0) for a, acc in accounts.items()}
    assert expected == {a: max(equity(acc, risky), 0) for a, acc in accounts.items()}
    fund_rollup(env, sum(expected.values()))
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    for who, amount in expected.items():
        receipt = env.wait(env.escape(state, who))
        (event,) = env.client.rollup.events.Escaped().process_receipt(receipt, errors=DISCARD)
        assert event["args"]["amount"] == amount, who


def test_escape_unknown_market_and_sum_over_a_ledger():
    """A balanced ledger (sizes net to zero per market, collateral summing to
    the deposits): the escapes pay the sum of floored equities, which never
    exceeds what the contract holds."""
    env = make_env(SettlementWindows(0, 30, 0))
    users = [addr20(f"user {i}") for i in range(6)]
    fee = GENESIS.fee_account
    deposits = 1_000_000 * USDC
    positions = {
        users[0]: [(ETH.id, 30_000), (WIDE.id, -7)],
        users[1]: [(ETH.id, -10_001), (BTC.id, 333)],
        users[2]: [(ETH.id, -19_999), (WIDE.id, 4), (COARSE.id, 5)],
        users[3]: [(BTC.id, -333), (WIDE.id, 3), (COARSE.id, -5)],
        users[4]: [],
    }
    collateral = {users[0]: -4_000 * USDC, users[1]: 150_000 * USDC, users[2]: 300_000 * USDC,
                  users[3]: 250_000 * USDC, users[4]: 1}
    collateral[fee] = deposits - sum(collateral.values())
    accounts = {u: account(collateral[u], *positions.get(u, ())) for u in collateral}
    for m in MARKETS:
        assert sum(p.size for acc in accounts.values() for p in acc.positions if p.market == m) == 0
    stray = account(10, (99, 1))  # a position in a market the leaf does not list
    state = state_of({**accounts, users[5]: stray})

    for i, (u, amount) in enumerate([(users[0], deposits)]):
        env.fund_and_deposit(3, u, amount)
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    env.reverts(env.escape_fn(state, users[5]), "escape: unknown market")

    held = env.balance(env.deployment.rollup)
    assert held == deposits == sum(acc.collateral for acc in accounts.values())
    equities = {u: equity(acc, MARKETS) for u, acc in accounts.items()}
    assert users[0] in equities and min(equities.values()) >= 0
    dust = -sum(position_value(MARKETS[p.market], p.size)
                for acc in accounts.values() for p in acc.positions)
    assert dust > 0  # floors favour the system
    assert sum(equities.values()) == held - dust
    paid = 0
    for u in accounts:
        before = env.balance(u)
        env.wait(env.escape(state, u, sender=7))
        paid += env.balance(u) - before
        assert env.balance(env.deployment.rollup) >= 0
    assert paid == sum(max(e, 0) for e in equities.values()) == sum(equities.values())
    assert env.balance(env.deployment.rollup) == held - paid == dust


# hypothesis: random accounts over the markets, one fresh frozen Rollup per
# example on a shared L1

@pytest.fixture(scope="module")
def shared_l1():
    l1 = EmbeddedL1(auto_mine=True)
    env = make_env(l1=l1)
    return l1, env.deployment.usdc


sizes = st.one_of(st.integers(-(2**127), 2**127 - 1), st.integers(-10**7, 10**7))
accounts_st = st.lists(
    st.tuples(
        st.integers(-(10**13), 10**13),
        st.dictionaries(st.sampled_from(sorted(MARKETS)), sizes, max_size=4),
    ),
    min_size=1,
    max_size=4,
)
prices_st = st.tuples(st.integers(0, 2**64 - 1), st.integers(1, 10**7))


# no shrinking: every example deploys and freezes a Rollup, so shrinking a
# failure would take minutes; the unshrunk example is reported as is
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(rows=accounts_st, prices=prices_st)
def test_escape_matches_node_margin(shared_l1, rows, prices):
    l1, usdc = shared_l1
    markets = dict(MARKETS)
    markets[WIDE.id] = dataclasses.replace(WIDE, oracle_price=prices[0])
    markets[ETH.id] = dataclasses.replace(ETH, oracle_price=prices[1])
    accounts = {
        addr20(f"h {i} {len(rows)}"): account(col, *sorted(pos.items()))
        for i, (col, pos) in enumerate(rows)
    }
    state = state_of(accounts, markets=markets)
    key = l1.dev_keys[0]
    receipt = wait_receipt(l1.w3, send_deploy(
        l1.w3, key, "Rollup",
        (usdc, l1.dev_accounts[0], GENESIS_ROOT, L2_CHAIN_ID, 0, 30, 0, *bare_game(l1.w3, key))
    ))
    d = Deployment(usdc, receipt["contractAddress"], receipt["blockNumber"], l1.chain_id)
    env = Env(l1, d, RollupClient(l1.w3, d))
    expected = {a: max(equity(acc, markets), 0) for a, acc in accounts.items()}
    payable = {a: v for a, v in expected.items() if v <= 10**13}
    fund_rollup(env, sum(payable.values()))
    env.submit(state.root)
    env.wait(env.client.freeze(env.key(5)))
    for a, amount in payable.items():
        before = env.balance(a)
        env.wait(env.escape(state, a))
        assert env.balance(a) - before == amount
    assert env.balance(d.rollup) == 0
    # the rest would need more than the contract holds
    for a in expected.keys() - payable.keys():
        env.reverts(env.escape_fn(state, a), "usdc: insufficient balance")


# --------------------------------------------------------------- failing token

FAILING_TOKEN = """
# pragma version ~=0.4.3
fail: public(bool)

@external
def set_fail(failing: bool):
    self.fail = failing

@external
def transfer(receiver: address, amount: uint256) -> bool:
    return not self.fail

@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    return not self.fail
"""


def test_token_returning_false_and_constructor_checks():
    import vyper

    l1 = EmbeddedL1(auto_mine=True)
    w3, key = l1.w3, l1.dev_keys[0]
    out = vyper.compile_code(FAILING_TOKEN, output_formats=["abi", "bytecode"])
    code = bytes.fromhex(out["bytecode"][2:])
    token_addr = wait_receipt(
        w3, send_transaction(w3, key, to=None, data=code, gas=1_000_000)
    )["contractAddress"]
    token = w3.eth.contract(address=token_addr, abi=out["abi"])

    def ctor(*args):
        from l1_stub.contracts import load_contract

        abi, bytecode = load_contract("Rollup")
        data = w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).data_in_transaction
        return w3.eth.call({"from": l1.dev_accounts[0], "data": data})

    zero = "0x" + "00" * 20
    seq = l1.dev_accounts[0]
    game = bare_game(w3, key)
    reverts_with(lambda: ctor(zero, seq, GENESIS_ROOT, 901, 0, 30, 0, *game), "rollup: zero usdc")
    reverts_with(lambda: ctor(token_addr, zero, GENESIS_ROOT, 901, 0, 30, 0, *game),
                 "rollup: zero sequencer")

    receipt = wait_receipt(w3, send_deploy(
        w3, key, "Rollup", (token_addr, l1.dev_accounts[0], GENESIS_ROOT, 901, 0, 30, 0, *game)
    ))
    d = Deployment(token_addr, receipt["contractAddress"], receipt["blockNumber"], l1.chain_id)
    env = Env(l1, d, RollupClient(w3, d))
    r = env.r
    w = Withdrawal(0, addr20("a"), addr20("b"), 5)
    state = state_of({addr20("a"): account(9)}, [w])

    wait_receipt(w3, send_call(w3, key, token.functions.set_fail(True), gas=100_000))
    env.reverts(r.deposit(env.addr(3), 5), "deposit: transfer failed", sender=3)
    wait_receipt(w3, send_call(w3, key, token.functions.set_fail(False), gas=100_000))
    env.wait(env.client.deposit(env.key(3), addr20("a"), 5))
    env.queue.append((addr20("a"), 5))
    env.submit(state.root, upto=0)
    wait_receipt(w3, send_call(w3, key, token.functions.set_fail(True), gas=100_000))
    env.reverts(env.withdraw_fn(0, w, state.wproof(0)), "batch not final")
    env.finalize_all()
    env.reverts(env.withdraw_fn(0, w, state.wproof(0)), "rollup: transfer failed")
    env.wait(env.client.freeze(env.key(5)))
    env.reverts(env.escape_fn(state, addr20("a")), "rollup: transfer failed")
    env.reverts(r.reclaimDeposit(0), "rollup: transfer failed", sender=3)


# ------------------------------------------------------------------------ gas


@pytest.fixture(scope="module")
def deep_state():
    """A state of 2**15 leaves (accounts and withdrawals): proofs ~16 deep."""
    accounts = {addr20(f"deep {i}"): account(1_000 + i, (ETH.id, i - 50), (WIDE.id, -i))
                for i in range(2**14)}
    withdrawals = [
        Withdrawal(i, addr20(f"deep {i}"), addr20(f"to {i}"), 1 + i) for i in range(2**14 - 2)
    ]
    return state_of(accounts, withdrawals), accounts, withdrawals


def test_gas_finalize_withdrawal_and_escape(deep_state, capsys):
    state, accounts, withdrawals = deep_state
    env = make_env(SettlementWindows(0, 30, 0))
    fund_rollup(env, 10**9)
    env.submit(state.root)
    env.finalize_all()
    w_gas, w_depth = [], []
    for w in withdrawals[:6]:
        proof = state.wproof(w.id)
        receipt = env.wait(env.client.finalize_withdrawal(
            env.key(6), 0, w.id, w.account, w.recipient, w.amount, proof
        ))
        w_gas.append(receipt["gasUsed"])
        w_depth.append(len(proof))
    env.wait(env.client.freeze(env.key(5)))
    e_gas, e_depth = [], []
    for who in list(accounts)[:6]:
        receipt = env.wait(env.escape(state, who))
        assert env.balance(who) == max(equity(accounts[who], MARKETS), 0)
        e_gas.append(receipt["gasUsed"])
        e_depth.append(len(state.aproof(who)))
    m_depth = len(state.siblings(MARKETS_KEY))
    with capsys.disabled():
        print()
        print(f"finalizeWithdrawal: depth {w_depth}: gas {w_gas}")
        print(f"escape (2 positions, {len(MARKETS)} markets, markets depth {m_depth}): "
              f"depth {e_depth}: gas {e_gas}")
    assert 14 <= sum(w_depth) / len(w_depth) <= 19
    assert max(w_gas) < 120_000
    assert max(e_gas) < 250_000


# --------------------------------------------------------- revert reason audit


def test_every_rollup_revert_reason_is_tested():
    """Every reason string in Rollup.vy occurs in the L1 contract tests."""
    source = (CONTRACTS_DIR / "Rollup.vy").read_text()
    reasons = set(re.findall(r'"([a-z_]+: [^"\n]+)"', source))
    assert len(reasons) >= 30, sorted(reasons)
    tests = Path(__file__).parent
    text = "".join((tests / name).read_text() for name in (
        "test_l1_contracts.py", "test_settlement_contracts.py", "test_dispute_game.py"))
    missing = sorted(r for r in reasons if f'"{r}"' not in text)
    assert not missing, missing
