"""The batcher: packs sealed L2 blocks into batches and posts them to the
Rollup contract with the claimed state root (docs/protocol.md, "Batches").

A batch holds consecutive whole blocks from the first unposted one, as many
as fit under ``max_bytes`` of batch data and ``max_steps`` transactions (the
Rollup's MAX_BATCH_BYTES / MAX_STEPS). The sequencer seals blocks within the
same limits, so every block fits a batch on its own. The safe head moves
when the batch's L1 transaction is mined; after a restart the batcher first
catches up with the batches already on L1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.batch import BLOCK_HEADER_BYTES, BatchBlock, batch_commitment, encode_batch
from node.chain import BatchInfo, Chain
from node.crypto import keccak
from node.derive import split_blocks

# the Rollup contract's limits (l1_stub/contracts/Rollup.vy); the node reads
# the deployed contract's values at start (RollupClient.max_batch_bytes/max_steps)
ROLLUP_MAX_BATCH_BYTES = 131_072
ROLLUP_MAX_STEPS = 4_096
DEFAULT_MAX_BATCH_BYTES = ROLLUP_MAX_BATCH_BYTES

__all__ = [
    "BLOCK_HEADER_BYTES",
    "DEFAULT_MAX_BATCH_BYTES",
    "ROLLUP_MAX_BATCH_BYTES",
    "ROLLUP_MAX_STEPS",
    "PlannedBatch",
    "batch_byte_cap",
    "batch_info",
    "plan_batch",
    "submission_info",
]


def batch_byte_cap(contract_max: int, block_gas_limit: int, configured: int | None = None,
                   gas_base: int = 300_000, gas_per_byte: int = 72) -> tuple[int, str]:
    """The batch data cap in bytes and what sets it: the Rollup's
    MAX_BATCH_BYTES, the configured ``max_batch_bytes`` (an upper bound,
    never above the contract's), or the L1 block gas limit (a batch's gas
    limit is ``gas_base + gas_per_byte * bytes``, l1_stub.client.batch_gas_limit;
    it must fit in one L1 block). Returns (bytes, "contract" | "config" | "gas")."""
    candidates = [(contract_max, "contract")]
    if configured is not None:
        candidates.append((configured, "config"))
    candidates.append(((block_gas_limit - gas_base) // gas_per_byte, "gas"))
    size, source = min(candidates, key=lambda c: c[0])
    if size < BLOCK_HEADER_BYTES + 261:
        raise ValueError(f"batch cap {size} bytes ({source}) cannot hold one fill")
    return size, source


@dataclass(frozen=True)
class PlannedBatch:
    """Batch data for blocks first..last with the claimed root and deposit
    position; ``tx_root`` is its step commitment, ``data_hash`` keccak(data)
    (what the Rollup stores)."""

    first_block: int
    last_block: int
    data: bytes
    state_root: bytes
    tx_root: bytes
    deposit_end: int
    step_count: int
    # True if the next block did not fit (more blocks wait to be posted)
    full: bool = False

    @property
    def data_hash(self) -> bytes:
        return keccak(self.data)


def plan_batch(chain: Chain, first: int, max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
               max_steps: int = ROLLUP_MAX_STEPS, head: int | None = None) -> PlannedBatch | None:
    """The next batch: whole blocks from ``first`` up to ``head`` (default:
    the chain head), as many as fit in ``max_bytes`` of batch data and
    ``max_steps`` transactions (None if nothing to post).

    Raises ValueError if a single block does not fit (a block sealed by an
    older node without the sequencer's size limit).
    """
    head = chain.head.number if head is None else head
    if first > head:
        return None
    blocks: list[BatchBlock] = []
    size = steps = 0
    last = first - 1
    full = False
    for n in range(first, head + 1):
        block = chain.block(n)
        bb = BatchBlock(block.header.timestamp, block.header.l1_origin, block.txs)
        bsize = BLOCK_HEADER_BYTES + sum(len(t) for t in block.txs)
        if size + bsize > max_bytes or steps + len(block.txs) > max_steps:
            if not blocks:
                raise ValueError(
                    f"block {n} ({bsize} bytes, {len(block.txs)} txs) exceeds the batch "
                    f"limits ({max_bytes} bytes, {max_steps} steps)")
            full = True
            break
        blocks.append(bb)
        size += bsize
        steps += len(block.txs)
        last = n
    last_block = chain.block(last)
    state = chain.state_at(last)
    return PlannedBatch(
        first_block=first,
        last_block=last,
        data=encode_batch(blocks),
        state_root=last_block.header.state_root,
        tx_root=batch_commitment(blocks),
        deposit_end=state.system.next_deposit,
        step_count=steps,
        full=full,
    )


def batch_info(planned: PlannedBatch, index: int, l1_block: int, l1_tx: bytes) -> BatchInfo:
    """The chain's record of a posted batch."""
    return BatchInfo(
        index=index,
        first_block=planned.first_block,
        last_block=planned.last_block,
        state_root=planned.state_root,
        tx_root=planned.tx_root,
        l1_block=l1_block,
        l1_tx=l1_tx,
        deposit_end=planned.deposit_end,
        data_hash=planned.data_hash,
    )


def submission_info(s: Any) -> BatchInfo:
    """The chain's record of a batch found on L1 (an
    ``l1_stub.client.BatchSubmission``): its step commitment is computed
    from the batch data."""
    return BatchInfo(
        index=s.index,
        first_block=s.first_block,
        last_block=s.first_block + s.block_count - 1,
        state_root=s.state_root,
        tx_root=batch_commitment(split_blocks(s.batch_data)),
        l1_block=s.l1_block,
        l1_tx=s.tx_hash,
        deposit_end=s.deposit_end,
        data_hash=s.data_hash,
    )
