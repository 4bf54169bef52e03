"""Derivation: the L2 chain and state from L1 data alone (docs/protocol.md,
"Derivation (replica)").

Pure functions, no I/O: the caller reads the Rollup's ``submitBatch``
calldata and its deposit queue from L1 (``node.replica`` does, over
JSON-RPC) and hands them in as ``PostedBatch`` / ``QueuedDeposit`` values.

- ``split_batch`` cuts ``batch_data`` into blocks and transactions the way
  the Rollup contract does (type byte + fixed size, no decoding) and checks
  the batch's data hash (the Rollup's commitment) and the deposits against
  the queue;
- ``execute_block`` applies one block's transactions with the node's STF
  (a transaction that breaks a rule, or does not decode, is a no-op with a
  failed receipt) and commits the state root;
- ``derive_batch`` does both for one batch and builds the L2 blocks
  (headers exactly as the sequencer's node builds them, same hashes) and
  says whether the derived state root equals the posted one;
- ``batch_steps`` / ``step_roots`` re-execute the steps of one batch from its
  pre-state, for the dispute game's dissection and one-step witnesses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rlp.codec import encode_raw, length_prefix

from node.batch import BLOCK_HEADER_BYTES, BatchBlock, batch_commitment
from node.blocks import Block, BlockHeader, Receipt, make_header
from node.crypto import keccak
from node.eip712 import Domain
from node.exceptions import InvalidBlock, InvalidTransaction
from node.state import State
from node.stf import apply_transaction
from node.transactions import (
    BODY_BYTES,
    TX_DEPOSIT,
    TX_FILL,
    DecodeError,
    Transaction,
    decode_tx,
    tx_hash,
)

MALFORMED = "MalformedTransaction"
"""Receipt error of a transaction whose type and size are right (so the Rollup
accepted it) but whose body does not decode (e.g. an order side byte > 1)."""


class DerivationError(InvalidBlock):
    """L1 data the replica cannot derive from: batch data that does not split,
    a batch commitment or block numbering that does not match the Rollup's
    record, deposits that are not the queue's next entries, a block timestamp
    that goes backwards. The Rollup rejects all but the last at submission."""


@dataclass(frozen=True, slots=True)
class PostedBatch:
    """One ``submitBatch`` as found on L1.

    index: batch index; first_block: its first L2 block number (the event's
    ``first_block``); batch_data: the calldata argument; state_root: the
    posted (claimed) root; data_hash: the Rollup's batch commitment
    keccak(batch_data) (event);
    deposit_end: queue position after the batch; l1_block / l1_tx: where it
    landed (block number, 32-byte tx hash); batch_id: the Rollup's
    ``batch_id(index)`` for it (never reused, also not after a deletion;
    0: not read)."""

    index: int
    first_block: int
    batch_data: bytes
    state_root: bytes
    data_hash: bytes
    deposit_end: int
    l1_block: int = 0
    l1_tx: bytes = b"\x00" * 32
    batch_id: int = 0


@dataclass(frozen=True, slots=True)
class QueuedDeposit:
    """Deposit queue entry ``index`` (a DepositQueued event): L2 ``account``
    (20 bytes) and ``amount`` (USDC base units)."""

    index: int
    account: bytes
    amount: int

    def tx(self) -> bytes:
        """The encoded Deposit transaction that consumes this entry."""
        return (bytes([TX_DEPOSIT]) + self.index.to_bytes(8, "big") + self.account
                + self.amount.to_bytes(16, "big"))


@dataclass(frozen=True, slots=True)
class DerivedBatch:
    """A batch derived from L1: its blocks (stored form, receipts included),
    the derived state root after its last block, the posted one, and
    ``matches`` = (derived == posted)."""

    index: int
    blocks: tuple[Block, ...]
    derived_root: bytes
    posted_root: bytes

    @property
    def matches(self) -> bool:
        return self.derived_root == self.posted_root

    @property
    def step_count(self) -> int:
        return sum(len(b.txs) for b in self.blocks)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a batch: a transaction and its block's timestamp (unix s).
    ``leaf`` is the step leaf of the batch commitment."""

    timestamp: int
    tx: bytes

    @property
    def leaf(self) -> bytes:
        return keccak(self.timestamp.to_bytes(8, "big") + self.tx)


# -- splitting ---------------------------------------------------------------
def split_blocks(data: bytes) -> list[BatchBlock]:
    """Split batch data into blocks as the Rollup does: per block
    ``timestamp u64 | l1_origin u64 | tx_count u16`` then transactions cut by
    their type's size (nothing decoded). Raises DerivationError if the data
    is empty, truncated or holds an unknown type."""
    if not data:
        raise DerivationError("empty batch data")
    blocks = []
    offset = 0
    end = len(data)
    while offset < end:
        if offset + BLOCK_HEADER_BYTES > end:
            raise DerivationError("truncated block header in batch data")
        timestamp = int.from_bytes(data[offset:offset + 8], "big")
        l1_origin = int.from_bytes(data[offset + 8:offset + 16], "big")
        count = int.from_bytes(data[offset + 16:offset + 18], "big")
        offset += BLOCK_HEADER_BYTES
        txs = []
        for _ in range(count):
            if offset >= end:
                raise DerivationError("truncated transaction in batch data")
            size = BODY_BYTES.get(data[offset])
            if size is None:
                raise DerivationError(f"unknown transaction type 0x{data[offset]:02x}")
            stop = offset + 1 + size
            if stop > end:
                raise DerivationError("truncated transaction in batch data")
            txs.append(bytes(data[offset:stop]))
            offset = stop
        blocks.append(BatchBlock(timestamp, l1_origin, tuple(txs)))
    return blocks


def check_deposits(blocks: Sequence[BatchBlock], deposits: Mapping[int, QueuedDeposit],
                   start: int, end: int) -> None:
    """The batch's Deposit transactions must be exactly queue entries
    ``start, start+1, ..., end-1`` in order (the Rollup checks the same with
    the running hash). ``deposits`` maps queue index -> entry and must hold
    those entries. Raises DerivationError."""
    position = start
    for block in blocks:
        for tx in block.txs:
            if tx[0] != TX_DEPOSIT:
                continue
            entry = deposits.get(position)
            if entry is None:
                raise DerivationError(f"deposit queue entry {position} is not known")
            if tx != entry.tx():
                raise DerivationError(f"batch deposit #{position - start} is not queue entry "
                                      f"{position}")
            position += 1
    if position != end:
        raise DerivationError(f"batch consumes deposits {start}..{position}, but its "
                              f"deposit_end is {end}")


def split_batch(batch: PostedBatch, deposits: Mapping[int, QueuedDeposit],
                deposit_start: int) -> list[BatchBlock]:
    """``split_blocks`` plus the checks against L1's record: the batch data
    hashes to ``batch.data_hash`` and the deposits are the queue's next
    entries from ``deposit_start`` (the previous batch's deposit_end).
    Raises DerivationError."""
    if keccak(batch.batch_data) != batch.data_hash:
        raise DerivationError(f"batch {batch.index}: the batch data does not hash to the "
                              "posted data_hash")
    blocks = split_blocks(batch.batch_data)
    check_deposits(blocks, deposits, deposit_start, batch.deposit_end)
    return blocks


def check_timestamps(blocks: Sequence[BatchBlock], parent_timestamp: int) -> None:
    """Block timestamps never go backwards (from the parent block's, unix s).
    Raises DerivationError."""
    previous = parent_timestamp
    for i, block in enumerate(blocks):
        if block.timestamp < previous:
            raise DerivationError(f"block {i} of the batch: timestamp {block.timestamp} is "
                                  f"before {previous}")
        previous = block.timestamp


# -- execution -----------------------------------------------------------------
def execute_txs(state: State, timestamp: int, txs: Iterable[bytes],
                domain: Domain, decoded: list[Transaction | None] | None = None
                ) -> list[Receipt]:
    """Apply encoded transactions in order at block ``timestamp`` (unix s) with
    the STF; one receipt each. A transaction that breaks a rule (or does not
    decode: error ``MalformedTransaction``) changes nothing. Does not commit.
    With ``decoded``, each decoded transaction (None if it does not decode)
    is appended to it, so callers need not decode again."""
    receipts = []
    for raw in txs:
        h = tx_hash(raw)
        tx = None
        try:
            tx = decode_tx(raw)
            price = apply_transaction(state, tx, timestamp, domain)
        except InvalidTransaction as exc:
            receipts.append(Receipt(h, False, exc.rule, str(exc)))
        except DecodeError as exc:
            receipts.append(Receipt(h, False, MALFORMED, str(exc)))
        else:
            receipts.append(Receipt(h, True, price=price))
        if decoded is not None:
            decoded.append(tx)
    return receipts


def execute_block(state: State, parent: BlockHeader, block: BatchBlock,
                  domain: Domain) -> Block:
    """Apply ``block`` on ``state`` (at ``parent``'s state root), commit, and
    return the L2 block numbered ``parent.number + 1``. Raises DerivationError
    if its timestamp is before the parent's."""
    if block.timestamp < parent.timestamp:
        raise DerivationError(f"L2 block {parent.number + 1}: timestamp goes backwards")
    receipts = tuple(execute_txs(state, block.timestamp, block.txs, domain))
    root = state.commit()
    header = make_header(parent.number + 1, parent.hash, block.timestamp, block.l1_origin,
                         block.txs, receipts, root)
    return Block(header, block.txs, receipts)


def derive_batch(state: State, parent: BlockHeader, batch: PostedBatch,
                 deposits: Mapping[int, QueuedDeposit], deposit_start: int,
                 domain: Domain) -> DerivedBatch:
    """Derive one batch on ``state`` (at ``parent``, the last block of the
    previous batch): split and check it, execute every block, compare roots.
    ``state`` ends at the derived root. Raises DerivationError before
    executing anything."""
    if batch.first_block != parent.number + 1:
        raise DerivationError(f"batch {batch.index} starts at L2 block {batch.first_block}, "
                              f"the derived chain is at block {parent.number}")
    split = split_batch(batch, deposits, deposit_start)
    check_timestamps(split, parent.timestamp)
    blocks = []
    header = parent
    for bb in split:
        block = execute_block(state, header, bb, domain)
        blocks.append(block)
        header = block.header
    return DerivedBatch(batch.index, tuple(blocks), header.state_root, batch.state_root)


def derive_chain(state: State, genesis: BlockHeader, batches: Iterable[PostedBatch],
                 deposits: Mapping[int, QueuedDeposit], domain: Domain) -> list[DerivedBatch]:
    """Derive consecutive batches from genesis (``state`` at the genesis root)."""
    out = []
    parent = genesis
    deposit_start = 0
    for batch in batches:
        derived = derive_batch(state, parent, batch, deposits, deposit_start, domain)
        out.append(derived)
        parent = derived.blocks[-1].header
        deposit_start = batch.deposit_end
    return out


# -- steps (dispute game) --------------------------------------------------------
def batch_steps(blocks: Iterable[BatchBlock | Block]) -> list[Step]:
    """The steps of a batch in order: one per transaction, with its block's
    timestamp. Accepts split batch blocks or derived blocks."""
    steps = []
    for block in blocks:
        ts = block.timestamp if isinstance(block, BatchBlock) else block.header.timestamp
        steps.extend(Step(ts, tx) for tx in block.txs)
    return steps


def step_roots(pre_state: State, steps: Sequence[Step], points: Iterable[int],
               domain: Domain) -> list[bytes]:
    """State roots at the given ``points`` of a batch, re-executing its steps
    from ``pre_state`` (the state root before the batch's first step).

    Point ``p`` is the state after the first ``p`` steps: 0 is the batch's
    pre-state root, ``len(steps)`` its post-state root; the root *after step
    index i* (0-based) is point ``i + 1``. Returns one root per point in the
    order given (points may repeat or come unsorted). ``pre_state`` is
    advanced to the largest point. Raises ValueError for a point outside
    ``0..len(steps)``.
    """
    wanted = list(points)
    for p in wanted:
        if not 0 <= p <= len(steps):
            raise ValueError(f"point {p} outside 0..{len(steps)}")
    roots: dict[int, bytes] = {}
    done = 0
    for p in sorted(set(wanted)):
        for step in steps[done:p]:
            execute_txs(pre_state, step.timestamp, (step.tx,), domain)
        done = p
        roots[p] = pre_state.commit()
    return [roots[p] for p in wanted]


def state_at_step(pre_state: State, steps: Sequence[Step], step: int,
                  domain: Domain) -> State:
    """``pre_state`` advanced to the state just before step index ``step``
    (after steps ``0..step-1``), committed, with an empty cache: what a
    one-step witness for ``steps[step]`` is built from. Raises ValueError
    if ``step`` is outside ``0..len(steps)``."""
    step_roots(pre_state, steps, [step], domain)
    pre_state.clear_cache()
    return pre_state


# -- prepared batches (the replica's pipeline) ------------------------------------
# per fill of a block: (tx index in the block, maker order hash, maker signer,
# taker order hash, taker signer); a signer is None if the signature is unusable
FillSigners = tuple[tuple[int, bytes, "bytes | None", bytes, "bytes | None"], ...]


@dataclass(frozen=True, slots=True)
class PreparedBlock:
    """One block of a batch with everything but execution done (on a worker
    process): ``tx_hashes`` (32 bytes each), ``tx_root``, and, assuming every
    transaction succeeds, the receipts root and the RLP of the block's body
    (``ok_body_rlp``: the transaction list then the receipt list, as
    ``Block.encode`` writes them). ``fills``: the fills' order hashes and
    signers (empty when not recovered ahead: the STF recovers them)."""

    timestamp: int
    l1_origin: int
    txs: tuple[bytes, ...]
    tx_hashes: tuple[bytes, ...]
    tx_root: bytes
    ok_receipts_root: bytes
    ok_body_rlp: bytes
    fills: FillSigners = ()


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """``prepare_batch``'s result: the blocks, the data hash
    keccak(batch_data) (to compare with the posted ``data_hash``) and the
    step commitment ``tx_root`` (the Merkle root of the step leaves, what a
    dispute proves steps against)."""

    blocks: tuple[PreparedBlock, ...]
    data_hash: bytes
    commitment: bytes


def prepare_batch(batch_data: bytes, domain: Domain | None = None) -> PreparedBatch:
    """Split batch data (``split_blocks``), compute its data hash, its step
    commitment and each block's hashes, roots and body encoding; with
    ``domain``, also hash the fills' orders and recover their signers. Pure and picklable: the
    replica runs it on worker processes, one batch a job. Raises
    DerivationError if the data does not split."""
    from node.merkle import merkle_root
    from node.sigverify import recover_fill

    blocks = split_blocks(batch_data)
    leaves = []
    prepared = []
    for block in blocks:
        stamp = block.timestamp.to_bytes(8, "big")
        leaves += [keccak(stamp + tx) for tx in block.txs]
        hashes = tuple(map(keccak, block.txs))
        fills: list[tuple[int, bytes, bytes | None, bytes, bytes | None]] = []
        if domain is not None:
            for i, raw in enumerate(block.txs):
                if raw[0] == TX_FILL:
                    recovered = recover_fill(domain, raw)
                    if recovered is not None:
                        fills.append((i, *recovered))
        ok = b"\x01"
        prepared.append(PreparedBlock(
            block.timestamp, block.l1_origin, block.txs, hashes, merkle_root(hashes),
            merkle_root([keccak(h + ok) for h in hashes]),
            encode_raw(list(block.txs)) + encode_raw([[h, ok, b"", b""] for h in hashes]),
            tuple(fills)))
    return PreparedBatch(tuple(prepared), keccak(batch_data), merkle_root(leaves))


def check_prepared(batch: PostedBatch, prepared: PreparedBatch,
                   deposits: Mapping[int, QueuedDeposit], deposit_start: int,
                   parent_timestamp: int) -> None:
    """``split_batch``'s and ``check_timestamps``' checks on a prepared batch:
    data hash, deposits, timestamps. Raises DerivationError."""
    if prepared.data_hash != batch.data_hash:
        raise DerivationError(f"batch {batch.index}: the batch data does not hash to the "
                              "posted data_hash")
    blocks: Sequence[BatchBlock] = prepared.blocks  # type: ignore[assignment]  # same fields
    check_deposits(blocks, deposits, deposit_start, batch.deposit_end)
    check_timestamps(blocks, parent_timestamp)


def execute_prepared(state: State, block: PreparedBlock, domain: Domain
                     ) -> tuple[list[Receipt], list[Transaction | None]]:
    """``execute_txs`` for a prepared block: decodes its transactions, seeds
    the order-hash and signer memos with what the worker computed, applies
    them; returns (receipts, decoded transactions, None where one does not
    decode). Same receipts as ``execute_txs``. Does not commit."""
    from node.sigverify import seed_fills

    decoded: list[Transaction | None] = []
    errors: dict[int, str] = {}
    for i, raw in enumerate(block.txs):
        try:
            decoded.append(decode_tx(raw))
        except DecodeError as exc:
            decoded.append(None)
            errors[i] = str(exc)
    if block.fills:
        seed_fills(domain, decoded, block.fills)
    receipts = []
    timestamp = block.timestamp
    for i, (tx, h) in enumerate(zip(decoded, block.tx_hashes)):
        if tx is None:
            receipts.append(Receipt(h, False, MALFORMED, errors[i]))
            continue
        try:
            price = apply_transaction(state, tx, timestamp, domain)
        except InvalidTransaction as exc:
            receipts.append(Receipt(h, False, exc.rule, str(exc)))
        else:
            receipts.append(Receipt(h, True, price=price))
    return receipts, decoded


def block_rlp(header: BlockHeader, body_rlp: bytes) -> bytes:
    """``Block.encode()`` of a block with ``header`` whose body (transaction
    list then receipt list) encodes to ``body_rlp``."""
    head = encode_raw([_rlp_int(header.number), header.parent_hash, _rlp_int(header.timestamp),
                       _rlp_int(header.l1_origin), header.tx_root, header.receipts_root,
                       header.state_root])
    return length_prefix(len(head) + len(body_rlp), 0xC0) + head + body_rlp


def _rlp_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


__all__ = [
    "MALFORMED",
    "PreparedBatch",
    "PreparedBlock",
    "block_rlp",
    "check_prepared",
    "execute_prepared",
    "prepare_batch",
    "DerivationError",
    "DerivedBatch",
    "PostedBatch",
    "QueuedDeposit",
    "Step",
    "batch_steps",
    "check_deposits",
    "check_timestamps",
    "derive_batch",
    "derive_chain",
    "execute_block",
    "execute_txs",
    "split_batch",
    "split_blocks",
    "state_at_step",
    "step_roots",
]
