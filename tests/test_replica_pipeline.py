"""The replica's pipeline (node/derive.py ``prepare_batch``, node/chain.py
``apply_prepared_block``, node/db.py ``WriteBehindDB``): batches prepared on
worker processes and blocks written behind derivation give the same store,
byte for byte, as the node's own ``Chain.apply_block``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.batch import BatchBlock, encode_batch
from node.crypto import keccak
from node.chain import Chain
from node.db import KeyValueDB, LevelDB, MemoryDB, WriteBehindDB
from node.derive import (
    MALFORMED,
    DerivationError,
    PostedBatch,
    check_prepared,
    prepare_batch,
)
from node.sigverify import Prefetcher, clear_memo
from node.transactions import encode_tx
from tests.test_replica import DOMAIN, GENESIS, NOW, QUEUE, sample_chain, signed_fill


def with_bad_batch() -> tuple[Chain, list[PostedBatch]]:
    """``sample_chain`` plus a third batch: a replayed fill (Overfill), an
    undecodable fill, a forged signature, and an empty block."""
    chain, batches = sample_chain()
    fill = encode_tx(signed_fill(1))
    broken = bytearray(fill)
    broken[1 + 24] = 2  # maker side byte
    forged = bytearray(encode_tx(signed_fill(7)))
    forged[1 + 57 + 10] ^= 1  # maker signature
    blocks = [BatchBlock(NOW + 9, 9, (fill, bytes(broken), bytes(forged))),
              BatchBlock(NOW + 9, 9, ())]
    data = encode_batch(blocks)
    third = PostedBatch(2, chain.head.number + 1, data, b"", keccak(data), 2)
    for b in blocks:
        chain.apply_block(b.timestamp, b.l1_origin, b.txs)
    return chain, [*batches, third]


def stored(db: Any) -> dict[bytes, bytes]:
    return {k: v for k, v in db.iterate(b"") if not k.startswith(b"m:config")}


def derive_prepared(db: KeyValueDB, batches: list[PostedBatch], prepared: list[Any],
                    write_behind: bool = False) -> Chain:
    Chain.initialize(db, GENESIS.leaves(), {"test": True})
    chain = Chain(db, DOMAIN, write_behind=write_behind)
    deposit_start = 0
    for batch, p in zip(batches, prepared):
        check_prepared(batch, p, QUEUE, deposit_start, chain.head.header.timestamp)
        for block in p.blocks:
            chain.apply_prepared_block(block)
        deposit_start = batch.deposit_end
    return chain


@pytest.mark.parametrize("recover", [False, True])
def test_prepared_blocks_are_the_nodes_blocks(recover: bool) -> None:
    """Prepared on a worker process (order hashes and signers recovered
    there) or here (the STF recovers): the same blocks, receipts, roots
    and store as the sequencer's chain, failed and undecodable steps too."""
    node_chain, batches = with_bad_batch()
    clear_memo()
    if recover:
        with Prefetcher(1) as workers:
            prepared = [workers.pool.submit(prepare_batch, b.batch_data, DOMAIN).result()
                        for b in batches]
        assert any(block.fills for p in prepared for block in p.blocks)
    else:
        prepared = [prepare_batch(b.batch_data) for b in batches]
    db = MemoryDB()
    chain = derive_prepared(db, batches, prepared)
    assert chain.head.hash == node_chain.head.hash
    last = chain.block(chain.head.number - 1)
    assert [(r.success, r.error) for r in last.receipts] == [
        (False, "Overfill"), (False, MALFORMED), (False, "InvalidOrderSignature")]
    ours, theirs = stored(db), stored(node_chain.db)
    assert ours.keys() == theirs.keys()
    assert ours == theirs


def test_a_prepared_batch_is_checked_like_split_batch() -> None:
    _, batches = sample_chain()
    p = prepare_batch(batches[1].batch_data)
    with pytest.raises(DerivationError, match="data_hash"):
        check_prepared(batches[0], p, QUEUE, 0, 0)
    with pytest.raises(DerivationError, match="deposit"):
        check_prepared(batches[1], p, QUEUE, 1, 0)
    with pytest.raises(DerivationError, match="timestamp"):
        check_prepared(batches[1], p, QUEUE, 2, NOW + 100)
    with pytest.raises(DerivationError, match="truncated"):
        prepare_batch(batches[1].batch_data[:-1])


def test_blocks_written_behind_are_read_back_and_survive_a_reopen(tmp_path: Path) -> None:
    """``write_behind``: every read through the Chain sees the blocks queued
    before it; after ``close`` the store holds the same data as a chain
    written in line."""
    node_chain, batches = with_bad_batch()
    prepared = [prepare_batch(b.batch_data) for b in batches]
    db = LevelDB(str(tmp_path / "db"), sync=False)
    try:
        chain = derive_prepared(db, batches, prepared, write_behind=True)
        for n in range(chain.head.number + 1):
            assert chain.block(n).hash == node_chain.block(n).hash
        chain.close()
        assert stored(db) == stored(node_chain.db)
    finally:
        db.close()
    db = LevelDB(str(tmp_path / "db"), sync=False)
    try:
        again = Chain(db, DOMAIN)
        assert again.head.hash == node_chain.head.hash
    finally:
        db.close()


class _FailingBatch:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __enter__(self) -> _FailingBatch:
        return self

    def put(self, key: bytes, value: bytes) -> None:
        self.inner.put(key, value)

    def delete(self, key: bytes) -> None:
        self.inner.delete(key)

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            raise OSError("disk full")


def test_a_failed_write_behind_raises_at_the_next_read_and_stops_later_writes() -> None:
    inner = MemoryDB()
    failing = True

    class Flaky(MemoryDB):
        def write_batch(self) -> Any:
            return _FailingBatch(inner.write_batch()) if failing else inner.write_batch()

    db = WriteBehindDB(Flaky())
    with db.write_batch() as batch:
        batch.put(b"a", b"1")
    failing = False
    with db.write_batch() as batch:
        batch.put(b"b", b"2")
    with pytest.raises(OSError, match="disk full"):
        db.get(b"a")
    assert inner.get(b"b") is None  # queued after a failed batch: never written
    with pytest.raises(OSError, match="disk full"):
        db.close()


def test_a_small_flat_index_is_read_whole_and_answers_absent_keys_from_memory() -> None:
    """A tree whose persisted index fits ``INDEX_PRELOAD`` (and its cache)
    reads it once at start; a key in no layer is then absent without a
    store read (a new order's filled leaf: two a fill), until the cache is
    first trimmed."""
    from node.crypto import ZERO_HASH, keccak
    from node.smt import INDEX_PREFIX, SparseMerkleTree

    class Counting(MemoryDB):
        gets = 0

        def get(self, key: bytes) -> bytes | None:
            Counting.gets += key.startswith(INDEX_PREFIX)  # flat-index reads only
            return super().get(key)

    db = Counting()
    items = {keccak(bytes([i])): bytes([i]) * 40 for i in range(50)}
    tree = SparseMerkleTree(db)
    root = tree.update(ZERO_HASH, items)
    with db.write_batch() as batch:
        tree.flush(batch)
    again = SparseMerkleTree(db)
    before = Counting.gets
    assert again.get(root, keccak(b"absent")) is None
    assert all(again.get(root, k) == v for k, v in items.items())
    assert Counting.gets == before
    new_root = again.update(root, {keccak(b"new"): b"n"})
    with db.write_batch() as batch:
        again.flush(batch)
    assert again.get(new_root, keccak(b"new")) == b"n"
    assert again.get(new_root, keccak(b"absent")) is None and Counting.gets == before
    small = SparseMerkleTree(db, index_cache_size=10)  # does not fit: reads the store
    assert small.get(new_root, keccak(b"absent")) is None and Counting.gets > before


_CRASH_CHILD = """
import sys
from node.chain import BatchInfo, Chain
from node.db import LevelDB
from node.derive import prepare_batch
from tests.test_replica import DOMAIN, GENESIS
from tests.test_replica_pipeline import with_bad_batch
_, batches = with_bad_batch()
db = LevelDB(sys.argv[1], sync=False)
Chain.initialize(db, GENESIS.leaves(), {"test": True})
chain = Chain(db, DOMAIN, write_behind=True)
prepared = [prepare_batch(b.batch_data) for b in batches]
for index in range(10**6):  # the last batch again and again (its fills fail: still blocks)
    p = prepared[min(index, len(prepared) - 1)]
    first = chain.head.number + 1
    for block in p.blocks:
        chain.apply_prepared_block(block)
    chain.record_batch(BatchInfo(index, first, chain.head.number, b"", b"", 0, bytes(32), 2))
    print(index, flush=True)
"""


def test_a_kill_9_during_write_behind_leaves_a_store_that_resumes(tmp_path: Path) -> None:
    """kill -9 while blocks are queued and written behind: the store holds a
    prefix of the committed batches (head block, tree index and nodes
    agree), and dropping the blocks past the last recorded batch (what
    ``Replica._resume`` does) gives a chain that derives on."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    path = str(tmp_path / "db")
    child = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, path], cwd=root,
                             env=dict(os.environ, PYTHONPATH=str(root)),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= 20:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    db = LevelDB(path, sync=False)
    try:
        chain = Chain(db, DOMAIN)
        head = chain.head
        assert head.number > 20 and chain.tree.indexed_root == head.header.state_root
        for n in range(head.number, 0, -1):  # every block is there, hash-linked
            assert chain.block(n).header.parent_hash == chain.block(n - 1).hash
        safe = chain.safe_head
        assert 0 < safe <= head.number
        chain.rollback(safe)
        assert chain.state.root == chain.block(safe).header.state_root
        _, batches = with_bad_batch()
        block = chain.apply_prepared_block(prepare_batch(batches[-1].batch_data).blocks[0])
        assert block.number == safe + 1
    finally:
        db.close()
