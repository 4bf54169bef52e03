"""Group commit of the sequencer journal, and signature recovery for
JSON-RPC batches on worker processes (sequencer.commit, sequencer.intake).

A "crash" closes the store without sealing (what kill -9 leaves: every
written entry, nothing buffered), as in test_durability.
"""

from __future__ import annotations

from pathlib import Path

import trio

from node.eip712 import order_hash
from node.sigverify import clear_memo, signer_of
from sequencer.commit import GroupCommit
from sequencer.intake import SignaturePrefetch, recover_orders, send_order_params
from tests.test_durability import _crash, _journal, _open, _pending, store  # noqa: F401
from tests.test_sequencer import ALICE, BOB, DOMAIN, Clock, signed


def test_group_is_written_by_one_batch_and_survives_a_crash(store: Path) -> None:  # noqa: F811
    clock = Clock()
    seq = _open(store, clock)
    commit = GroupCommit(seq)
    hashes = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(commit.run)
            mark = commit.mark()
            for salt in range(1, 6):  # five "requests" before the committer runs
                hashes.append(seq.send_order(*signed(ALICE, False, 166700, 1_000, salt)).order_hash)
            assert _journal(seq) == []  # buffered, not acknowledged yet
            await commit.wait(mark)
            assert seq.synced_sequence == seq.journal_sequence == 5
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert (commit.groups, commit.entries) == (1, 5)
    before = _pending(seq)
    _crash(seq)
    again = _open(store, clock)
    assert _pending(again) == before
    assert all(again.books[1].get(h) is not None for h in hashes)
    again.chain.db.close()


def test_unwritten_entries_are_lost_written_ones_are_not(store: Path) -> None:  # noqa: F811
    """Only entries whose group was written survive; an entry nobody waited
    for (never acknowledged) may be lost."""
    seq = _open(store)
    seq.group_commit = True
    kept = seq.send_order(*signed(ALICE, False, 166700, 1_000, 1))
    group, sequence = seq.take_journal_group()
    seq.write_journal_group(group)
    seq.journal_group_written(group, sequence)
    lost = seq.send_order(*signed(ALICE, False, 166700, 1_000, 2))  # buffered only
    _crash(seq)
    again = _open(store)
    assert again.books[1].get(kept.order_hash) is not None
    assert again.books[1].get(lost.order_hash) is None
    again.chain.db.close()


def test_prune_keeps_entries_until_they_are_written(store: Path) -> None:  # noqa: F811
    """A seal while a group is unwritten: the prune leaves that group's
    entries alone (deleting them first and writing them after would bring a
    filled order back); the next seal after the write prunes them."""
    seq = _open(store)
    seq.group_commit = True
    maker = seq.send_order(*signed(ALICE, False, 166700, 1_000, 1))
    seq.send_order(*signed(BOB, True, 166700, 1_000, 2), "IOC")  # fills the maker
    group, sequence = seq.take_journal_group()
    assert seq.seal() is not None  # both entries are stale now, but not on disk
    seq.write_journal_group(group)
    seq.journal_group_written(group, sequence)
    assert _journal(seq) == [b"O", b"O"]
    seq.send_order(*signed(ALICE, False, 166900, 1_000, 3))
    group, sequence = seq.take_journal_group()
    seq.write_journal_group(group)
    seq.journal_group_written(group, sequence)
    assert seq.seal(empty=True) is not None
    assert _journal(seq) == [b"O"]  # only the order still resting
    _crash(seq)
    again = _open(store)
    assert again.books[1].get(maker.order_hash) is None
    again.chain.db.close()


def test_batch_signatures_are_recovered_on_a_worker() -> None:
    orders = [signed(ALICE if i % 2 else BOB, bool(i % 2), 166700, 1_000, salt=100 + i)
              for i in range(20)]
    payload = [{"jsonrpc": "2.0", "id": i, "method": "l2_sendOrder",
                "params": [{"order": o.to_json(), "signature": "0x" + s.hex()}]}
               for i, (o, s) in enumerate(orders)]
    payload.append({"jsonrpc": "2.0", "id": 99, "method": "l2_sendOrder", "params": ["junk"]})
    payload[0]["params"][0]["order"]["price"] = "0x28b1c"  # 166684 in hex: parsed as the node does
    assert len(send_order_params(payload)) == 20
    recovered = recover_orders(DOMAIN, send_order_params(payload))
    assert len(recovered) == 20
    assert recovered[1] == (order_hash(DOMAIN, orders[1][0]), orders[1][1], ALICE.address)

    clear_memo()
    prefetch = SignaturePrefetch(DOMAIN, workers=1)
    try:
        trio.run(prefetch.prefetch, payload)
    finally:
        prefetch.close()
    assert prefetch.orders == 20
    for digest, signature, signer in recovered:
        assert signer_of(digest, signature) == signer
