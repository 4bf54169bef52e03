"""The L2 chain: sealed blocks and the state on top of them, in one store.

``Chain`` keeps a *pending* ``State`` on top of the head block. The
sequencer applies transactions to it one by one (``apply``); ``seal`` turns
what is pending into a block, commits the state root and writes the block,
its tree nodes and the new head in one atomic LevelDB batch (synced), so a
kill -9 loses at most the unsealed transactions, never a block a client saw.
``apply_block`` re-executes a block from elsewhere (L1 derivation) and
records failed transactions as failed receipts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.blocks import Block, BlockHeader, Receipt, genesis_block, make_header
from node.crypto import ZERO_HASH
from node.db import KeyValueDB, PrefixedBatch, PrefixedDB, WriteBehindDB
from node.derive import PreparedBlock, block_rlp, execute_prepared, execute_txs
from node.eip712 import Domain, order_hash
from node.exceptions import InvalidBlock
from node.merkle import merkle_root
from node.smt import SparseMerkleTree
from node.state import State
from node.stf import apply_transaction
from node.transactions import (
    TX_FILL,
    TX_LIQUIDATE,
    TX_WITHDRAW,
    Transaction,
    decode_tx,
    encode_tx,
    tx_hash,
)

_HEAD = b"m:head"
_CONFIG = b"m:config"
_SAFE = b"m:safe"
_UNREAD: Any = object()  # latest batch not read from the store yet


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _block_key(number: int) -> bytes:
    return b"b:" + _u64(number)


@dataclass(frozen=True)
class BatchInfo:
    """Where a range of L2 blocks was posted on L1. ``tx_root``: the batch's
    step commitment (what a dispute proves steps against); ``data_hash``:
    keccak(batch data), the Rollup's record of the batch (zero in records
    written before the Rollup stored it)."""

    index: int
    first_block: int
    last_block: int
    state_root: bytes
    tx_root: bytes
    l1_block: int
    l1_tx: bytes
    deposit_end: int
    data_hash: bytes = b"\x00" * 32

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "firstBlock": self.first_block,
            "lastBlock": self.last_block,
            "stateRoot": "0x" + self.state_root.hex(),
            "txRoot": "0x" + self.tx_root.hex(),
            "l1Block": self.l1_block,
            "l1Tx": "0x" + self.l1_tx.hex(),
            "depositEnd": self.deposit_end,
            "dataHash": "0x" + self.data_hash.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchInfo:
        return cls(
            d["index"],
            d["firstBlock"],
            d["lastBlock"],
            bytes.fromhex(d["stateRoot"][2:]),
            bytes.fromhex(d["txRoot"][2:]),
            d["l1Block"],
            bytes.fromhex(d["l1Tx"][2:]),
            d["depositEnd"],
            bytes.fromhex(d.get("dataHash", "0x" + "00" * 32)[2:]),
        )


class Chain:
    """Block store + pending state. One instance owns the store.

    ``write_behind``: blocks and batch records are written on a background
    thread while the next block executes (``node.db.WriteBehindDB``; for the
    replica, whose store is derived again from L1 anyway); reads through
    ``Chain`` see every write. Call ``close()`` before closing the store."""

    def __init__(self, db: KeyValueDB, domain: Domain, write_behind: bool = False) -> None:
        self.db: KeyValueDB = WriteBehindDB(db) if write_behind else db
        self.domain = domain
        # the tree reads the store directly: what it flushed stays in memory
        # until the next flush, which waits for the writes (``_store``)
        self.tree = SparseMerkleTree(PrefixedDB(db, b"s:"))
        self._latest_batch: BatchInfo | None = _UNREAD
        head = db.get(_HEAD)
        if head is None:
            raise InvalidBlock("store has no genesis; call Chain.initialize first")
        self.head = self.block(int.from_bytes(head, "big"))
        self.state = State(self.tree, self.head.header.state_root)
        self.pending_txs: list[bytes] = []
        self.pending_decoded: list[Transaction | None] = []  # as applied, for _store
        self.pending_receipts: list[Receipt] = []
        self.pending_timestamp = self.head.header.timestamp

    # -- set-up ----------------------------------------------------------
    @staticmethod
    def initialize(db: KeyValueDB, genesis_leaves: dict[bytes, bytes], config: dict[str, Any]) -> None:
        """Write the genesis block and config into an empty store (no-op if
        the store already has a chain with the same config; raises
        InvalidBlock if it has another one)."""
        existing = db.get(_CONFIG)
        if existing is not None:
            if json.loads(existing) != config:
                raise InvalidBlock("datadir holds a chain with a different rollup config")
            return
        tree = SparseMerkleTree(PrefixedDB(db, b"s:"))
        root = tree.update(ZERO_HASH, genesis_leaves)
        block = genesis_block(root)
        with db.write_batch() as batch:
            tree.flush(PrefixedBatch(batch, b"s:"))
            batch.put(_block_key(0), block.encode())
            batch.put(b"h:" + block.hash, _u64(0))
            batch.put(_CONFIG, json.dumps(config, sort_keys=True).encode())
            batch.put(_HEAD, _u64(0))

    def wait_writes(self) -> None:
        """Block until every block and batch record is in the store (no-op
        unless ``write_behind``); raises a failed background write's error."""
        if isinstance(self.db, WriteBehindDB):
            self.db.wait()

    def close(self) -> None:
        """Finish the background writes (``write_behind``); the store stays open."""
        if isinstance(self.db, WriteBehindDB):
            self.db.close()

    @staticmethod
    def stored_config(db: KeyValueDB) -> dict[str, Any] | None:
        raw = db.get(_CONFIG)
        return json.loads(raw) if raw is not None else None

    # -- reads -----------------------------------------------------------
    def block(self, number: int) -> Block:
        raw = self.db.get(_block_key(number))
        if raw is None:
            raise KeyError(f"no block {number}")
        return Block.decode(raw)

    def block_number_by_hash(self, block_hash: bytes) -> int | None:
        raw = self.db.get(b"h:" + block_hash)
        return int.from_bytes(raw, "big") if raw is not None else None

    def tx_location(self, hash_: bytes) -> tuple[int, int] | None:
        """(block number, index) of a sealed transaction."""
        raw = self.db.get(b"t:" + hash_)
        if raw is None:
            return None
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")

    def block_number_by_state_root(self, root: bytes) -> int | None:
        """The latest sealed block whose state root is ``root`` (0 for genesis)."""
        raw = self.db.get(b"r:" + root)
        if raw is not None:
            return int.from_bytes(raw, "big")
        return 0 if root == self.block(0).header.state_root else None

    def withdrawal_block(self, withdrawal_id: int) -> int | None:
        """Number of the sealed block that created withdrawal ``withdrawal_id``."""
        raw = self.db.get(b"w:" + _u64(withdrawal_id))
        return int.from_bytes(raw, "big") if raw is not None else None

    def fills_of_order(self, order_hash_: bytes) -> list[bytes]:
        """Transaction hashes of the sealed fills of an order."""
        return [k[34:] for k, _ in self.db.iterate(b"o:" + order_hash_)]

    def head_state(self) -> State:
        """A fresh read-only view of the head block's state."""
        return State(self.tree, self.head.header.state_root)

    def state_at(self, number: int) -> State:
        return State(self.tree, self.block(number).header.state_root)

    # -- pending block ---------------------------------------------------
    def apply(self, tx: Transaction) -> Receipt:
        """Apply ``tx`` to the pending state; raises InvalidTransaction and
        changes nothing if it breaks a rule."""
        encoded = encode_tx(tx)
        apply_transaction(self.state, tx, self.pending_timestamp, self.domain)
        receipt = Receipt(tx_hash(encoded), True)
        self.pending_txs.append(encoded)
        self.pending_decoded.append(tx)
        self.pending_receipts.append(receipt)
        return receipt

    pending_timestamp: int = 0

    def open_block(self, timestamp: int) -> None:
        """Set the pending block's timestamp (unix s) if nothing is pending yet.

        Rules that read the block time (order expiry) see this value, and
        ``seal`` stamps the block with it. Never earlier than the head's.
        """
        if not self.pending_txs:
            self.pending_timestamp = max(timestamp, self.head.header.timestamp)

    def seal(self, l1_origin: int) -> Block | None:
        """Seal the pending transactions into the next block (None if there are none)."""
        if not self.pending_txs:
            return None
        root = self.state.commit()
        block = self._store(
            self.pending_timestamp,
            l1_origin,
            tuple(self.pending_txs),
            tuple(self.pending_receipts),
            root,
            self.pending_decoded,
        )
        self.pending_txs = []
        self.pending_decoded = []
        self.pending_receipts = []
        return block

    def apply_block(self, timestamp: int, l1_origin: int, txs: Iterable[bytes]) -> Block:
        """Execute and store a whole block (e.g. derived from L1); a
        transaction that breaks a rule (or does not decode) is a no-op with a
        failed receipt (``node.derive.execute_txs``)."""
        if self.pending_txs:
            raise InvalidBlock("apply_block with pending sequencer transactions")
        if timestamp < self.head.header.timestamp:
            raise InvalidBlock("block timestamp goes backwards")
        encoded = tuple(txs)
        decoded: list[Transaction | None] = []
        receipts = execute_txs(self.state, timestamp, encoded, self.domain, decoded)
        root = self.state.commit()
        return self._store(timestamp, l1_origin, encoded, tuple(receipts), root, decoded)

    def _store(
        self,
        timestamp: int,
        l1_origin: int,
        txs: tuple[bytes, ...],
        receipts: tuple[Receipt, ...],
        root: bytes,
        decoded: Sequence[Transaction | None] | None = None,
    ) -> Block:
        """Store a block on the head (one LevelDB batch). ``decoded``: the
        transactions as the STF decoded them (else decoded again here)."""
        number = self.head.number + 1
        header = make_header(number, self.head.hash, timestamp, l1_origin, txs, receipts, root)
        return self._write_block(Block(header, txs, receipts), decoded)

    def apply_prepared_block(self, prepared: PreparedBlock) -> Block:
        """``apply_block`` for a block a worker prepared (``node.derive``):
        the same block and receipts, with the hashes, roots and body
        encoding taken from ``prepared`` (computed again here only for the
        receipts root and encoding when a transaction failed)."""
        if self.pending_txs:
            raise InvalidBlock("apply_block with pending sequencer transactions")
        if prepared.timestamp < self.head.header.timestamp:
            raise InvalidBlock("block timestamp goes backwards")
        receipts, decoded = execute_prepared(self.state, prepared, self.domain)
        root = self.state.commit()
        ok = all(r.success for r in receipts)
        header = BlockHeader(
            self.head.number + 1, self.head.hash, prepared.timestamp, prepared.l1_origin,
            prepared.tx_root,
            prepared.ok_receipts_root if ok else merkle_root([r.leaf() for r in receipts]),
            root)
        block = Block(header, prepared.txs, tuple(receipts))
        return self._write_block(block, decoded,
                                 block_rlp(header, prepared.ok_body_rlp) if ok else None)

    def _write_block(self, block: Block, decoded: Sequence[Transaction | None] | None,
                     encoded: bytes | None = None) -> Block:
        """Write ``block`` (the next on the head; ``encoded``: its
        ``encode()`` if known) with the tree's pending nodes and its
        indexes in one batch, and make it the head."""
        number = block.number
        txs, receipts, root = block.txs, block.receipts, block.header.state_root
        self.wait_writes()  # the tree's flush checks its marker on disk
        with self.db.write_batch() as batch:
            self.tree.flush(PrefixedBatch(batch, b"s:"))
            batch.put(_block_key(number), block.encode() if encoded is None else encoded)
            batch.put(b"h:" + block.hash, _u64(number))
            batch.put(b"r:" + root, _u64(number))  # latest block with this state root
            withdrawals = [i for i, r in enumerate(receipts) if r.success and txs[i][0] == TX_WITHDRAW]
            first_id = self.state.system.withdrawal_count - len(withdrawals)
            for k in range(len(withdrawals)):
                batch.put(b"w:" + _u64(first_id + k), _u64(number))
            for i, r in enumerate(receipts):
                batch.put(b"t:" + r.tx_hash, _u64(number) + i.to_bytes(4, "big"))
                if r.success and txs[i][0] == TX_FILL:
                    fill = decoded[i] if decoded is not None else decode_tx(txs[i])
                    for order in (fill.maker, fill.taker):  # type: ignore[union-attr]
                        h = order_hash(self.domain, order)
                        batch.put(b"o:" + h + r.tx_hash, b"")
                elif r.success and txs[i][0] == TX_LIQUIDATE:  # the liquidator's order filled
                    liq = decoded[i] if decoded is not None else decode_tx(txs[i])
                    h = order_hash(self.domain, liq.order)  # type: ignore[union-attr]
                    batch.put(b"o:" + h + r.tx_hash, b"")
            batch.put(_HEAD, _u64(number))
        self.head = block
        return block

    def rollback(self, number: int) -> list[Block]:
        """Drop every block after ``number`` (and the batch records that end
        after it): the head becomes block ``number`` and the pending state its
        state (pending transactions dropped). One atomic batch; the tree keeps
        its nodes (content-addressed), its flat index moves to the new head.
        Returns the dropped blocks, oldest first. Raises KeyError if there is
        no block ``number``."""
        target = self.block(number)
        dropped = [self.block(n) for n in range(number + 1, self.head.number + 1)]
        root = target.header.state_root
        count_at_target = State(self.tree, root).system.withdrawal_count
        count_at_head = self.head_state().system.withdrawal_count
        self.wait_writes()
        self._latest_batch = _UNREAD
        if dropped:
            self.tree.rebuild_index(root)
        with self.db.write_batch() as batch:
            for block in dropped:
                n = _u64(block.number)
                batch.delete(_block_key(block.number))
                batch.delete(b"h:" + block.hash)
                batch.delete(b"bb:" + n)
                if self.db.get(b"r:" + block.header.state_root) == n:
                    batch.delete(b"r:" + block.header.state_root)
                for i, r in enumerate(block.receipts):
                    loc = self.db.get(b"t:" + r.tx_hash)
                    if loc is not None and loc[:8] == n:
                        batch.delete(b"t:" + r.tx_hash)
                    if r.success and block.txs[i][0] == TX_FILL:
                        fill = decode_tx(block.txs[i])
                        for order in (fill.maker, fill.taker):  # type: ignore[union-attr]
                            batch.delete(b"o:" + order_hash(self.domain, order) + r.tx_hash)
                    elif r.success and block.txs[i][0] == TX_LIQUIDATE:
                        liq = decode_tx(block.txs[i])
                        h = order_hash(self.domain, liq.order)  # type: ignore[union-attr]
                        batch.delete(b"o:" + h + r.tx_hash)
            for wid in range(count_at_target, count_at_head):
                batch.delete(b"w:" + _u64(wid))
            safe = None
            for key, raw in self.db.iterate(b"B:"):
                info = BatchInfo.from_json(json.loads(raw))
                if info.last_block > number:
                    batch.delete(key)
                elif safe is None or info.index > safe:
                    safe = info.index
            if safe is None:
                batch.delete(_SAFE)
            else:
                batch.put(_SAFE, _u64(safe))
            self.tree.flush(PrefixedBatch(batch, b"s:"))
            batch.put(_HEAD, _u64(number))
        self.head = target
        self.state = State(self.tree, root)
        self.pending_txs = []
        self.pending_decoded = []
        self.pending_receipts = []
        self.pending_timestamp = target.header.timestamp
        return dropped

    # -- batches (safe head) ---------------------------------------------
    def record_batch(self, info: BatchInfo) -> None:
        """Remember that blocks first..last are in L1 batch ``info.index``."""
        with self.db.write_batch() as batch:
            batch.put(b"B:" + _u64(info.index), json.dumps(info.to_json()).encode())
            for n in range(info.first_block, info.last_block + 1):
                batch.put(b"bb:" + _u64(n), _u64(info.index))
            batch.put(_SAFE, _u64(info.index))
        self._latest_batch = info

    def rollback_batches(self, count: int) -> list[BatchInfo]:
        """Forget every batch with index >= ``count`` (deleted on L1 after a
        lost dispute): their blocks are unsafe again, to be posted anew. The
        blocks themselves stay. Returns the forgotten batches, oldest first."""
        latest = self.latest_batch()
        self._latest_batch = _UNREAD
        gone: list[BatchInfo] = []
        if latest is None or latest.index < count:
            return gone
        with self.db.write_batch() as batch:
            for index in range(count, latest.index + 1):
                info = self.batch(index)
                if info is None:
                    continue
                gone.append(info)
                batch.delete(b"B:" + _u64(index))
                for n in range(info.first_block, info.last_block + 1):
                    batch.delete(b"bb:" + _u64(n))
            if count > 0:
                batch.put(_SAFE, _u64(count - 1))
            else:
                batch.delete(_SAFE)
        return gone

    def batch(self, index: int) -> BatchInfo | None:
        raw = self.db.get(b"B:" + _u64(index))
        return BatchInfo.from_json(json.loads(raw)) if raw is not None else None

    def latest_batch(self) -> BatchInfo | None:
        """The batch with the highest index (kept in memory once read, so the
        replica's next batch need not wait for the store's writes)."""
        if self._latest_batch is _UNREAD:
            raw = self.db.get(_SAFE)
            self._latest_batch = self.batch(int.from_bytes(raw, "big")) if raw is not None else None
        return self._latest_batch

    def batch_of_block(self, number: int) -> int | None:
        raw = self.db.get(b"bb:" + _u64(number))
        return int.from_bytes(raw, "big") if raw is not None else None

    @property
    def safe_head(self) -> int:
        """Highest L2 block whose batch is on L1 (0 = genesis)."""
        latest = self.latest_batch()
        return latest.last_block if latest else 0
