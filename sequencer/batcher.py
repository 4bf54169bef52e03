"""The batcher: packs sealed L2 blocks into batches and posts them to the
Rollup contract with the claimed state root (docs/protocol.md, "Batches").

A batch holds consecutive blocks from the first unposted one, as many as fit
under ``max_bytes`` of batch data. The safe head moves when the batch's L1
transaction is mined; after a restart the batcher first catches up with the
batches already on L1.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.batch import BatchBlock, batch_commitment, encode_batch
from node.chain import BatchInfo, Chain

DEFAULT_MAX_BATCH_BYTES = 120_000


@dataclass(frozen=True)
class PlannedBatch:
    """Batch data for blocks first..last with the claimed root and deposit position."""

    first_block: int
    last_block: int
    data: bytes
    state_root: bytes
    tx_root: bytes
    deposit_end: int
    step_count: int


def plan_batch(chain: Chain, first: int, max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> PlannedBatch | None:
    """The next batch starting at block ``first`` (None if nothing to post).

    Raises ValueError if a single block does not fit in ``max_bytes``.
    """
    head = chain.head.number
    if first > head:
        return None
    blocks: list[BatchBlock] = []
    size = 0
    last = first - 1
    for n in range(first, head + 1):
        block = chain.block(n)
        bb = BatchBlock(block.header.timestamp, block.header.l1_origin, block.txs)
        bsize = 18 + sum(len(t) for t in block.txs)
        if size + bsize > max_bytes:
            if not blocks:
                raise ValueError(f"block {n} ({bsize} bytes) exceeds the batch size cap {max_bytes}")
            break
        blocks.append(bb)
        size += bsize
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
        step_count=sum(len(b.txs) for b in blocks),
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
    )
