"""One-step proof witnesses (docs/protocol.md, "One-step proof").

A witness proves, against a pre-state root, the values of every leaf one
transaction step reads or writes, in one shared sparse Merkle multiproof:

    witness = eth_abi.encode(["bytes"] * (n + 1), [value_1, ..., value_n, tree])

``value_i`` is the pre-state value of the transaction type's i-th slot
(``slot_keys``; empty bytes = leaf absent) and ``tree`` the tree witness:
the part of the tree above those leaves in pre-order, one tag byte per node
(``0x00`` empty subtree, ``0x01`` + 32-byte hash of an untouched subtree,
``0x02`` + key + value hash of a single-leaf subtree, ``0x03`` branch,
followed by its left then right child).

``step_witness`` builds it from a ``node.state.State``; ``tree_witness``
is the multiproof alone, for any set of keys (and keys to be deleted).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from eth_abi import encode as abi_encode

from node.crypto import ZERO_HASH, keccak
from node.eip712 import Domain, order_hash
from node.smt import SparseMerkleProof, SparseMerkleTree
from node.state import (
    MARKETS_KEY,
    SYMBOLS_KEY,
    SYSTEM_KEY,
    State,
    account_key,
    order_key,
    withdrawal_key,
)
from node.transactions import (
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    SettleFunding,
    Transaction,
    Withdraw,
)

OP_EMPTY = b"\x00"
OP_HASH = b"\x01"
OP_LEAF = b"\x02"
OP_BRANCH = b"\x03"

MAX_TREE_BYTES = 16384  # smt.vy MAX_TREE_BYTES
MAX_WITNESS = 90112  # OneStepProver.vy MAX_WITNESS


class WitnessTooLarge(ValueError):
    """The witness does not fit the prover's bounds (MAX_TREE_BYTES, MAX_WITNESS)."""


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def tree_witness(
    tree: SparseMerkleTree, root: bytes, keys: Iterable[bytes], deletes: Collection[bytes] = ()
) -> bytes:
    """The tree witness (pre-order node tags, see the module docstring) for
    ``keys`` (32-byte) under ``root``.

    ``deletes``: keys the step will delete; the siblings on their paths are
    opened one level (a leaf as ``0x02``, a branch as ``0x03`` with hash
    children) so the verifier can collapse a subtree left with one leaf.
    Raises MissingNodeError for an unknown root.
    """
    unique = sorted(set(keys))
    proofs = {k: tree.prove(root, k) for k in unique}
    out = bytearray()
    _encode(tree, root, proofs, unique, 0, set(deletes), out)
    return bytes(out)


def _encode(tree: SparseMerkleTree, root: bytes, proofs: dict[bytes, SparseMerkleProof],
            keys: list[bytes], depth: int, deletes: set[bytes], out: bytearray) -> None:
    """Append the witness of the subtree at ``depth`` holding ``keys`` (all
    sharing their first ``depth`` bits, at least one)."""
    proof = proofs[keys[0]]
    if len(proof.siblings) == depth:
        # every key here ends at this node: empty, or one leaf
        if proof.leaf is None:
            out += OP_EMPTY
        else:
            out += OP_LEAF + proof.leaf[0] + proof.leaf[1]
        return
    out += OP_BRANCH
    left = [k for k in keys if not _bit(k, depth)]
    right = [k for k in keys if _bit(k, depth)]
    sibling = proof.siblings[depth]
    for side in (left, right):
        if side:
            _encode(tree, root, proofs, side, depth + 1, deletes, out)
        elif deletes.intersection(keys):
            _open(tree, root, keys[0], depth + 1, sibling, out)
        elif sibling == ZERO_HASH:
            out += OP_EMPTY
        else:
            out += OP_HASH + sibling


def _open(tree: SparseMerkleTree, root: bytes, near: bytes, depth: int, node: bytes,
          out: bytearray) -> None:
    """Append ``node`` (the subtree at ``depth`` beside ``near``'s path)
    opened one level: a leaf with its key and value hash, a branch with
    its two children as hashes."""
    if node == ZERO_HASH:
        out += OP_EMPTY
        return
    # find what the node is with a proof of a key inside it: flip the bit of
    # `near` at depth - 1, keep the prefix
    flipped = int.from_bytes(near, "big") ^ (1 << (256 - depth))
    inside = flipped.to_bytes(32, "big")
    proof = tree.prove(root, inside)
    if len(proof.siblings) == depth:
        assert proof.leaf is not None
        out += OP_LEAF + proof.leaf[0] + proof.leaf[1]
        return
    out += OP_BRANCH
    below = proof.siblings[depth]
    # the proof went down `inside`'s side: the other child is `below`
    mine = tree_witness_hash(tree, root, inside, depth + 1, proof)
    pair = (mine, below) if not _bit(inside, depth) else (below, mine)
    for child in pair:
        out += OP_EMPTY if child == ZERO_HASH else OP_HASH + child


def tree_witness_hash(tree: SparseMerkleTree, root: bytes, key: bytes, depth: int,
                      proof: SparseMerkleProof) -> bytes:
    """Hash of the subtree at ``depth`` on ``key``'s path, from its proof."""
    if proof.leaf is None:
        node = ZERO_HASH
    else:
        node = keccak(b"\x00" + proof.leaf[0] + proof.leaf[1])
    for i in range(len(proof.siblings) - 1, depth - 1, -1):
        if _bit(key, i):
            node = keccak(proof.siblings[i] + node)
        else:
            node = keccak(node + proof.siblings[i])
    return node


def slot_keys(state: State, tx: Transaction, domain: Domain) -> list[bytes]:
    """The tree keys of the witness slots of ``tx``, in slot order
    (docs/protocol.md "One-step proof"):

    - Deposit: system, account
    - Fill: system, markets, maker account, taker account, fee account,
      maker order, taker order
    - OraclePrice: system, markets
    - Withdraw: system, markets, account, withdrawal ``system.withdrawal_count``
    - ListMarket: system, markets, symbols
    - FundingTick: system, markets
    - Liquidate: system, markets, liquidated account, liquidator account
      (``order.account``), fee account, liquidator order
    - Deleverage: system, markets, liquidated account, offset account,
      fee account
    - SettleFunding: system, markets, account
    """
    system = state.system
    if isinstance(tx, Deposit):
        return [SYSTEM_KEY, account_key(tx.account)]
    if isinstance(tx, Fill):
        return [
            SYSTEM_KEY,
            MARKETS_KEY,
            account_key(tx.maker.account),
            account_key(tx.taker.account),
            account_key(system.fee_account),
            order_key(order_hash(domain, tx.maker)),
            order_key(order_hash(domain, tx.taker)),
        ]
    if isinstance(tx, OraclePrice | FundingTick):
        return [SYSTEM_KEY, MARKETS_KEY]
    if isinstance(tx, Withdraw):
        return [SYSTEM_KEY, MARKETS_KEY, account_key(tx.account),
                withdrawal_key(system.withdrawal_count)]
    if isinstance(tx, ListMarket):
        return [SYSTEM_KEY, MARKETS_KEY, SYMBOLS_KEY]
    if isinstance(tx, Liquidate):
        return [SYSTEM_KEY, MARKETS_KEY, account_key(tx.liquidated), account_key(tx.order.account),
                account_key(system.fee_account), order_key(order_hash(domain, tx.order))]
    if isinstance(tx, Deleverage):
        return [SYSTEM_KEY, MARKETS_KEY, account_key(tx.liquidated), account_key(tx.offset),
                account_key(system.fee_account)]
    if isinstance(tx, SettleFunding):
        return [SYSTEM_KEY, MARKETS_KEY, account_key(tx.account)]
    raise TypeError(f"not a transaction: {tx!r}")


def step_witness(state: State, tx: Transaction, timestamp: int, domain: Domain) -> bytes:
    """The witness of one step: ``tx`` applied at block ``timestamp`` (unix s)
    to the committed state ``state`` (its ``root`` is the pre-state root;
    uncommitted writes are not seen). ``timestamp`` does not enter the
    witness; it is taken for symmetry with ``prove_step``.

    Raises WitnessTooLarge past the prover's bounds, LookupError if the
    state has no system leaf.
    """
    del timestamp
    root = state.root
    keys = slot_keys(state, tx, domain)
    values = [state.tree.get(root, k) or b"" for k in keys]
    tree = tree_witness(state.tree, root, keys)
    if len(tree) > MAX_TREE_BYTES:
        raise WitnessTooLarge(f"tree witness of {len(tree)} bytes > {MAX_TREE_BYTES}")
    witness = abi_encode(["bytes"] * (len(values) + 1), [*values, tree])
    if len(witness) > MAX_WITNESS:
        raise WitnessTooLarge(f"witness of {len(witness)} bytes > {MAX_WITNESS}")
    return witness
