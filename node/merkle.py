"""Binary Merkle root of a list of 32-byte leaves (docs/protocol.md).

Used for block ``tx_root`` / ``receipts_root`` and the batch commitment that
the Rollup contract recomputes on L1, so the rule is deliberately simple:
pad with zero hashes to a power of two, hash pairs ``keccak(left || right)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.crypto import ZERO_HASH, keccak


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of ``leaves`` (each 32 bytes); zero hash for an empty list."""
    if not leaves:
        return ZERO_HASH
    level = list(leaves)
    width = 1
    while width < len(level):
        width *= 2
    level.extend([ZERO_HASH] * (width - len(level)))
    while len(level) > 1:
        level = [keccak(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from the bottom up proving ``leaves[index]``."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    level = list(leaves)
    width = 1
    while width < len(level):
        width *= 2
    level.extend([ZERO_HASH] * (width - len(level)))
    proof = []
    while len(level) > 1:
        proof.append(level[index ^ 1])
        level = [keccak(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return proof


def verify_merkle_proof(root: bytes, leaf: bytes, index: int, proof: Sequence[bytes]) -> bool:
    """True if ``proof`` (from ``merkle_proof``) links ``leaf`` at ``index`` to ``root``."""
    node = leaf
    for sibling in proof:
        node = keccak(sibling + node) if index & 1 else keccak(node + sibling)
        index //= 2
    return index == 0 and node == root
