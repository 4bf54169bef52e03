"""Nothing acknowledged is ever lost: the sequencer journal across restarts.

Unit tests run the sequencer over a LevelDB store and "crash" it by closing
the store without sealing (what kill -9 leaves behind: every synced write,
nothing else), then open a new sequencer on the same store. The subprocess
test kills a real devnet with SIGKILL in the middle of a replay with
withdrawals and cancels in flight (3 kill points by default, 20 with
DERIVNET_SLOW=1).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from node.chain import Chain
from node.db import LevelDB
from node.signing import Signer, dev_keys
from node.transactions import Deposit
from sequencer.sequencer import _JOURNAL, OrderCancelled, Sequencer, UnknownOrder
from tests.test_sequencer import ALICE, BOB, DOMAIN, NOW, Clock, funded, signed

ORACLE = Signer(dev_keys(10)[1])


def _open(path: Path, clock: Clock | None = None, max_block_txs: int = 10_000) -> Sequencer:
    return Sequencer(Chain(LevelDB(str(path)), DOMAIN), clock or Clock(), max_block_txs)


def _crash(seq: Sequencer) -> None:
    """Stop without sealing: only what was synced to the store survives."""
    seq.chain.db.close()


def _pending(seq: Sequencer) -> tuple[Any, ...]:
    """What a restart must reproduce: pending txs, block time, book, withdrawal count."""
    chain = seq.chain
    book = [(ro.order_hash, ro.remaining) for b in seq.books.values() for ro in b]
    return (tuple(chain.pending_txs), chain.pending_timestamp, sorted(book),
            chain.state.system.withdrawal_count, chain.head.number)


def _journal(seq: Sequencer) -> list[bytes]:
    return [v[:1] for _, v in seq.chain.db.iterate(_JOURNAL)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = LevelDB(str(tmp_path / "l2"))
    seq, _ = funded(db)
    db.close()
    return tmp_path / "l2"


def test_each_kind_round_trips(store: Path) -> None:
    """An order that rests, one that fills, a cancel, an oracle price, a
    withdrawal and a deposit: after a crash the same pending block and book."""
    clock = Clock()
    seq = _open(store, clock)
    clock.t += 3
    keep = seq.send_order(*signed(ALICE, False, 166700, 5_000, salt=1))
    gone = seq.send_order(*signed(ALICE, False, 166800, 5_000, salt=2))
    seq.send_order(*signed(BOB, True, 166700, 2_000, salt=3), "IOC")
    seq.cancel_order(gone.order_hash, ALICE.sign_cancel(DOMAIN, gone.order_hash))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, 1, 166650, int(NOW) + 1))
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 1_000_000, 0))
    seq.include_deposit(Deposit(2, ALICE.address, 7))
    before = _pending(seq)
    assert _journal(seq) == [b"O", b"O", b"O", b"C", b"T", b"T", b"T"]
    _crash(seq)

    clock.t += 100  # the restart is later: replay keeps the block's own time
    again = _open(store, clock)
    assert _pending(again) == before
    assert again.books[1].get(keep.order_hash).remaining == 3_000
    assert again.chain.state.markets[1].oracle_price == 166650
    assert again.chain.state.system.next_deposit == 3
    block = again.seal()
    assert block is not None and len(block.txs) == 4 and all(r.success for r in block.receipts)
    assert block.header.timestamp == int(NOW) + 3
    # sealed: only the resting order and the cancel (until its order expires) stay
    assert _journal(again) == [b"O", b"C"]
    again.chain.db.close()


def test_cancelled_order_never_comes_back(store: Path) -> None:
    seq = _open(store)
    r = seq.send_order(*signed(ALICE, False, 166621, 10_000))
    seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
    _crash(seq)  # no block sealed between the cancel and the restart

    for _ in range(2):  # and again after a clean seal + restart
        seq = _open(store)
        assert seq.books[1].get(r.order_hash) is None
        taker = seq.send_order(*signed(BOB, True, 166621, 10_000, salt=seq._sequence + 9), "IOC")
        assert taker.fills == [] and taker.status == "cancelled"
        with pytest.raises(OrderCancelled):  # anyone re-sending the signed order
            seq.send_order(*signed(ALICE, False, 166621, 10_000))
        with pytest.raises(UnknownOrder):
            seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
        seq.seal()
        _crash(seq)


def test_cancel_remembered_until_the_order_expires(store: Path) -> None:
    clock = Clock()
    seq = _open(store, clock)
    order = signed(ALICE, False, 166621, 10, expiry=int(NOW) + 30)
    r = seq.send_order(*order)
    seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
    seq.include_deposit(Deposit(2, ALICE.address, 1))
    seq.seal()
    assert _journal(seq) == [b"C"]
    clock.t += 31
    seq.include_deposit(Deposit(3, ALICE.address, 1))
    seq.seal()
    assert _journal(seq) == []
    with pytest.raises(Exception, match="expired"):
        seq.send_order(*order)
    seq.chain.db.close()


def test_acknowledged_withdrawal_keeps_its_id(store: Path) -> None:
    seq = _open(store)
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1_000_000, 0))
    first = seq.chain.state.system.withdrawal_count - 1
    _crash(seq)  # before its block is sealed

    seq = _open(store)
    assert seq.chain.state.system.withdrawal_count == first + 1
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 2_000_000, 0))
    second = seq.chain.state.system.withdrawal_count - 1
    assert second == first + 1
    seq.seal()
    w1, w2 = seq.chain.head_state().withdrawal(first), seq.chain.head_state().withdrawal(second)
    assert (w1.account, w1.amount) == (ALICE.address, 1_000_000)
    assert (w2.account, w2.amount) == (BOB.address, 2_000_000)
    assert seq.chain.withdrawal_block(first) == seq.chain.withdrawal_block(second)
    seq.chain.db.close()


def test_arrival_order_is_kept_across_kinds(store: Path) -> None:
    """Deposit -> withdrawal that needs it -> a maker that then lacks margin
    is dropped by a taker: replayed in another order, the results differ."""
    seq = _open(store)
    carol = Signer(b"\x11" * 32)
    seq.include_deposit(Deposit(2, carol.address, 2_000_000_000))
    seq.send_withdraw(carol.withdraw(DOMAIN, carol.address, 1_500_000_000, 0))
    maker = seq.send_order(*signed(ALICE, False, 166600, 500_000))
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 9_500_000_000, 0))
    taker = seq.send_order(*signed(BOB, True, 166600, 500_000, salt=2), "IOC")
    assert taker.fills == [] and seq.books[1].get(maker.order_hash) is None
    late = seq.send_order(*signed(BOB, True, 166000, 1_000, salt=3))
    before = _pending(seq)
    _crash(seq)

    seq = _open(store)
    assert _pending(seq) == before
    assert seq.books[1].get(late.order_hash) is not None
    assert seq.chain.state.account(carol.address).collateral == 500_000_000
    seq.chain.db.close()


def test_crash_between_seal_and_prune_applies_nothing_twice(store: Path) -> None:
    """The block is written but the journal not pruned yet: sealed entries
    only rebuild the book (no second withdrawal, no IOC coming back)."""
    seq = _open(store)
    maker = seq.send_order(*signed(ALICE, False, 166600, 10_000))
    seq.send_order(*signed(BOB, True, 166700, 4_000, salt=2), "IOC")
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 1_000_000, 0))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, 1, 166650, int(NOW) + 1))
    seq.chain.seal(seq.l1_origin)  # the block, but not Sequencer.seal's prune
    after = _pending(seq)
    _crash(seq)

    seq = _open(store)
    assert _pending(seq) == after and seq.chain.pending_txs == []
    assert [ro.order_hash for ro in seq.books[1]] == [maker.order_hash]
    assert seq.books[1].get(maker.order_hash).remaining == 6_000
    assert _journal(seq) == [b"O"]  # the rest was sealed: dropped at restore
    seq.chain.db.close()


def test_seal_during_replay_then_crash_again(store: Path) -> None:
    """A restart with a smaller block limit seals in the middle of the replay;
    what stays pending is journaled under the next block, so a second crash
    replays exactly it."""
    seq = _open(store)
    seq.send_order(*signed(ALICE, False, 166600, 10_000))
    for i in range(5):
        seq.send_order(*signed(BOB, True, 166600, 100, salt=10 + i), "IOC")
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1_000, 0))
    head = seq.chain.head.number
    _crash(seq)

    seq = _open(store, max_block_txs=3)
    assert seq.chain.head.number == head + 1 and len(seq.chain.pending_txs) == 3
    before = _pending(seq)
    _crash(seq)
    seq = _open(store, max_block_txs=3)
    assert _pending(seq) == before
    seq.seal()
    state = seq.chain.head_state()
    assert state.account(BOB.address).position(1).size == 500
    assert state.system.withdrawal_count == 1
    seq.chain.db.close()


def test_legacy_order_entries_are_upgraded(store: Path) -> None:
    from sequencer.sequencer import _encode_journal

    db = LevelDB(str(store))
    order, sig = signed(ALICE, False, 166621, 10)
    from node.eip712 import order_hash

    digest = order_hash(DOMAIN, order)
    db.put(_JOURNAL + (7).to_bytes(8, "big") + digest, _encode_journal(order, sig, "GTC"))
    db.close()
    seq = _open(store)
    assert seq.books[1].get(digest).remaining == 10
    assert [len(k) for k, _ in seq.chain.db.iterate(_JOURNAL)] == [10]
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1, 0))
    assert [k[2:] for k, _ in seq.chain.db.iterate(_JOURNAL)][-1] == (8).to_bytes(8, "big")
    seq.chain.db.close()
