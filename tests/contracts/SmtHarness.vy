# pragma version 0.4.3
"""
@title Test harness: exposes the smt module's multiproof walk (tests only)
"""
import smt


@pure
@external
def roots(tree: Bytes[smt.MAX_TREE_BYTES], keys: DynArray[uint256, smt.MAX_KEYS],
          old_hashes: DynArray[bytes32, smt.MAX_KEYS],
          new_hashes: DynArray[bytes32, smt.MAX_KEYS]) -> (bytes32, bytes32):
    return smt.roots(tree, keys, old_hashes, new_hashes)
