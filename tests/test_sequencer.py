"""Sequencer over a real chain store: order checks, matching into fills,
blocks, the order journal across a restart, and batch planning."""

from __future__ import annotations

import pytest

from node import exceptions as err
from node.batch import batch_commitment, decode_batch
from node.chain import Chain
from node.crypto import keccak
from node.db import LevelDB, MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.signing import Signer
from node.transactions import Deposit, Order, decode_tx
from sequencer.batcher import plan_batch
from sequencer.sequencer import InvalidCancelSignature, Sequencer, UnknownOrder
from sequencer.validation import InvalidSize, OrderFilled

GENESIS = load_genesis()
DOMAIN = Domain(GENESIS.l2_chain_id, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
ALICE = Signer(keccak(b"alice"))
BOB = Signer(keccak(b"bob"))
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def make(db=None) -> tuple[Sequencer, Clock]:
    db = db if db is not None else MemoryDB()
    Chain.initialize(db, GENESIS.leaves(), {"test": 1})
    clock = Clock()
    seq = Sequencer(Chain(db, DOMAIN), clock)
    return seq, clock


def funded(db=None) -> tuple[Sequencer, Clock]:
    seq, clock = make(db)
    seq.include_deposit(Deposit(0, ALICE.address, 10_000_000_000))
    seq.include_deposit(Deposit(1, BOB.address, 10_000_000_000))
    seq.seal()
    return seq, clock


def signed(who: Signer, is_buy: bool, price: int, size: int, salt: int = 1,
           expiry: int = int(NOW) + 600) -> tuple[Order, bytes]:
    o = Order(who.address, 1, is_buy, price, size, salt, expiry)
    return o, who.sign_order(DOMAIN, o)[1]


def test_match_seal_and_block_contents() -> None:
    seq, _ = funded()
    r1 = seq.send_order(*signed(ALICE, False, 166621, 10_000))
    assert r1.status == "resting" and r1.remaining == 10_000
    r2 = seq.send_order(*signed(BOB, True, 166700, 4_000), "IOC")
    assert r2.status == "filled" and len(r2.fills) == 1
    assert r2.fills[0].price == 166621 and r2.fills[0].size == 4_000
    block = seq.seal()
    assert block is not None and block.number == 2
    fill = decode_tx(block.txs[0])
    assert fill.maker.account == ALICE.address and fill.size == 4_000
    assert all(r.success for r in block.receipts)
    assert seq.books[1].get(r1.order_hash).remaining == 6_000
    assert seq.chain.head_state().account(BOB.address).position(1).size == 4_000
    assert seq.seal() is None  # nothing pending: no empty blocks


@pytest.mark.parametrize(
    ("order_args", "exc"),
    [
        ((ALICE, True, 166621, 0), InvalidSize),
        ((ALICE, True, 0, 10), err.InvalidPrice),
        ((ALICE, True, 166621, 10, 1, int(NOW)), err.OrderExpired),
        ((ALICE, True, 166621, 10**9), err.InsufficientMargin),
    ],
)
def test_order_checks(order_args, exc) -> None:
    seq, _ = funded()
    with pytest.raises(exc):
        seq.send_order(*signed(*order_args))
    assert len(seq.books[1]) == 0 and seq.chain.pending_txs == []


def test_bad_signature_and_unknown_market() -> None:
    seq, _ = funded()
    o, _sig = signed(ALICE, True, 166621, 10)
    with pytest.raises(err.InvalidOrderSignature):
        seq.send_order(o, signed(BOB, True, 166621, 10)[1])
    o2 = Order(ALICE.address, 42, True, 1, 1, 1, int(NOW) + 60)
    with pytest.raises(err.UnknownMarket):
        seq.send_order(o2, ALICE.sign_order(DOMAIN, o2)[1])


def test_filled_order_cannot_be_resent() -> None:
    seq, _ = funded()
    maker = signed(ALICE, False, 166621, 10)
    seq.send_order(*maker)
    seq.send_order(*signed(BOB, True, 166621, 10), "IOC")
    with pytest.raises(OrderFilled):
        seq.send_order(*maker)


def test_cancel_needs_owner_signature() -> None:
    seq, _ = funded()
    r = seq.send_order(*signed(ALICE, False, 166621, 10))
    with pytest.raises(InvalidCancelSignature):
        seq.cancel_order(r.order_hash, BOB.sign_cancel(DOMAIN, r.order_hash))
    seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
    with pytest.raises(UnknownOrder):
        seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))


def test_maker_that_lost_margin_is_dropped_not_filled() -> None:
    seq, _ = funded()
    # Alice rests a big sell, then withdraws most of her collateral.
    r = seq.send_order(*signed(ALICE, False, 166600, 500_000))
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 9_500_000_000, 0))
    out = seq.send_order(*signed(BOB, True, 166600, 500_000), "IOC")
    assert out.fills == [] and out.status == "cancelled"
    assert seq.books[1].get(r.order_hash) is None


def test_expired_makers_are_removed_at_seal() -> None:
    seq, clock = funded()
    r = seq.send_order(*signed(ALICE, False, 166621, 10, expiry=int(NOW) + 5))
    clock.t += 10
    seq.include_deposit(Deposit(2, ALICE.address, 1))
    seq.seal()
    assert seq.books[1].get(r.order_hash) is None


def test_journal_restores_book_after_restart(tmp_path) -> None:
    db = LevelDB(str(tmp_path / "l2"))
    seq, _ = funded(db)
    resting = seq.send_order(*signed(ALICE, False, 166621, 10_000))
    seq.send_order(*signed(BOB, True, 166621, 3_000), "IOC")
    seq.seal()
    unsealed = seq.send_order(*signed(ALICE, False, 166700, 1_000, salt=2))
    head = seq.chain.head.number
    db.close()  # crash: nothing else is written

    db2 = LevelDB(str(tmp_path / "l2"))
    seq2 = Sequencer(Chain(db2, DOMAIN), Clock())
    assert seq2.chain.head.number == head
    assert seq2.books[1].get(resting.order_hash).remaining == 7_000
    assert seq2.books[1].get(unsealed.order_hash).remaining == 1_000
    db2.close()


def test_plan_batch_covers_blocks_and_matches_commitment() -> None:
    seq, _ = funded()
    seq.send_order(*signed(ALICE, False, 166621, 10))
    seq.send_order(*signed(BOB, True, 166621, 10), "IOC")
    seq.seal()
    planned = plan_batch(seq.chain, 1)
    assert (planned.first_block, planned.last_block) == (1, 2)
    blocks = decode_batch(planned.data)
    assert [len(b.txs) for b in blocks] == [2, 1]
    assert planned.tx_root == batch_commitment(blocks)
    assert planned.data_hash == keccak(planned.data)
    assert planned.state_root == seq.chain.head.header.state_root
    assert planned.deposit_end == 2
    small = plan_batch(seq.chain, 1, max_bytes=120)
    assert small.last_block == 1
    with pytest.raises(ValueError, match="exceeds"):
        plan_batch(seq.chain, 2, max_bytes=100)


def test_apply_block_records_failed_transactions_as_noops() -> None:
    """A block derived from elsewhere (L1) may hold a transaction that breaks a
    rule: it is a no-op with a failed receipt naming the rule."""
    from node.transactions import Fill, encode_tx

    seq, _ = funded()
    chain = seq.chain
    before = chain.head.header.state_root
    m, ms = signed(ALICE, False, 166621, 10)
    t, ts = signed(BOB, True, 166621, 10)
    good = encode_tx(Deposit(2, ALICE.address, 5))
    bad_fill = encode_tx(Fill(m, ms, t, ts, 11, 166621))  # overfill
    bad_deposit = encode_tx(Deposit(7, ALICE.address, 5))  # out of order
    block = chain.apply_block(int(NOW) + 1, 3, [bad_fill, good, bad_deposit])
    assert [r.success for r in block.receipts] == [False, True, False]
    assert [r.error for r in block.receipts] == ["Overfill", "", "DepositOutOfOrder"]
    after = chain.head_state()
    assert after.account(ALICE.address).collateral == 10_000_000_005
    assert after.account(BOB.address).positions == ()
    assert block.header.state_root != before
    # The same block applied to another replica gives the same root and hash.
    other, _ = funded()
    again = other.chain.apply_block(int(NOW) + 1, 3, [bad_fill, good, bad_deposit])
    assert again.hash == block.hash
