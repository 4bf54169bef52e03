"""Batch data: the L2 blocks of one L1 batch, back to back (docs/protocol.md).

Layout per block: ``timestamp u64 | l1_origin u64 | tx_count u16 | txs``.
The Rollup contract splits the same bytes on L1 and commits to the Merkle
root of the step leaves ``keccak(timestamp u64 || encoded tx)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.crypto import keccak
from node.merkle import merkle_root
from node.transactions import DecodeError, decode_tx_at

BLOCK_HEADER_BYTES = 18
MAX_TXS_PER_BLOCK = 2**16 - 1


@dataclass(frozen=True, slots=True)
class BatchBlock:
    """One L2 block as carried in a batch: timestamp (unix s), L1 origin
    (L1 block number) and its encoded transactions."""

    timestamp: int
    l1_origin: int
    txs: tuple[bytes, ...]


def encode_batch(blocks: Sequence[BatchBlock]) -> bytes:
    """Concatenate ``blocks`` into batch data."""
    out = bytearray()
    for block in blocks:
        if len(block.txs) > MAX_TXS_PER_BLOCK:
            raise ValueError("too many transactions in one block for a batch")
        out += block.timestamp.to_bytes(8, "big")
        out += block.l1_origin.to_bytes(8, "big")
        out += len(block.txs).to_bytes(2, "big")
        for tx in block.txs:
            out += tx
    return bytes(out)


def decode_batch(data: bytes) -> list[BatchBlock]:
    """Split batch data into blocks; raises DecodeError if malformed."""
    blocks = []
    offset = 0
    while offset < len(data):
        if offset + BLOCK_HEADER_BYTES > len(data):
            raise DecodeError("truncated block header in batch")
        timestamp = int.from_bytes(data[offset : offset + 8], "big")
        l1_origin = int.from_bytes(data[offset + 8 : offset + 16], "big")
        count = int.from_bytes(data[offset + 16 : offset + 18], "big")
        offset += BLOCK_HEADER_BYTES
        txs = []
        for _ in range(count):
            _, end = decode_tx_at(data, offset)
            txs.append(bytes(data[offset:end]))
            offset = end
        blocks.append(BatchBlock(timestamp, l1_origin, tuple(txs)))
    return blocks


def step_leaves(blocks: Sequence[BatchBlock]) -> list[bytes]:
    """One leaf per transaction: keccak(timestamp u64 || encoded tx)."""
    return [
        keccak(block.timestamp.to_bytes(8, "big") + tx) for block in blocks for tx in block.txs
    ]


def batch_commitment(blocks: Sequence[BatchBlock]) -> bytes:
    """The batch commitment (``tx_root``) the Rollup contract stores."""
    return merkle_root(step_leaves(blocks))
