"""Reference sparse Merkle tree: the rule of docs/protocol.md written as
plainly as possible, recomputed from scratch on every call.

It shares nothing with ``node.smt`` except ``keccak`` and the proof
dataclass, so tests can hold the optimized tree against it. Far too slow
for a node; use it for tests and for checking small states by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.crypto import keccak
from node.smt import SparseMerkleProof

EMPTY = b"\x00" * 32


def key_bit(key: bytes, index: int) -> int:
    """Bit ``index`` of a 32-byte key, most significant first (bit 0 is the
    top bit of byte 0)."""
    return (key[index // 8] >> (7 - index % 8)) & 1


def subtree_root(leaves: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """Root of the subtree at ``depth`` holding ``leaves`` ((key, value_hash)
    pairs that all share their first ``depth`` bits)."""
    if not leaves:
        return EMPTY
    if len(leaves) == 1:
        key, value_hash = leaves[0]
        return keccak(b"\x00" + key + value_hash)
    left = [leaf for leaf in leaves if key_bit(leaf[0], depth) == 0]
    right = [leaf for leaf in leaves if key_bit(leaf[0], depth) == 1]
    return keccak(subtree_root(left, depth + 1) + subtree_root(right, depth + 1))


def _leaves(items: Mapping[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    for key in items:
        if len(key) != 32:
            raise ValueError("tree keys are 32 bytes")
    return [(key, keccak(value)) for key, value in items.items()]


def reference_root(items: Mapping[bytes, bytes]) -> bytes:
    """State root of the key -> value map ``items``."""
    return subtree_root(_leaves(items), 0)


def reference_proof(items: Mapping[bytes, bytes], key: bytes) -> SparseMerkleProof:
    """Inclusion proof for ``key`` if it is in ``items``, else non-inclusion."""
    leaves = _leaves(items)
    siblings: list[bytes] = []
    depth = 0
    while len(leaves) > 1:
        bit = key_bit(key, depth)
        same_side = [leaf for leaf in leaves if key_bit(leaf[0], depth) == bit]
        other_side = [leaf for leaf in leaves if key_bit(leaf[0], depth) != bit]
        siblings.append(subtree_root(other_side, depth + 1))
        leaves = same_side
        depth += 1
    leaf = leaves[0] if leaves else None
    return SparseMerkleProof(tuple(siblings), leaf)
