# pragma version 0.4.3
"""
@title Sparse Merkle multiproof: verify and update several leaves at once
@notice A Vyper module (imported by OneStepProver) for the compact sparse
        Merkle tree of docs/protocol.md "State: one sparse Merkle tree":
        empty subtree = 0x00..00, a subtree holding one leaf is that leaf's
        node keccak256(0x00 || key || keccak256(value)), any other subtree
        keccak256(left || right), key bits read most significant first.
        `roots` walks one shared multiproof (docs/protocol.md "One-step
        proof", "Tree witness") for a sorted set of keys and returns the
        root before and the root after writing their new value hashes:
        inserts into an empty subtree, inserts that split a single-leaf
        subtree (the leaves get a common subtree down to their first
        differing bit), updates, and deletes that collapse a subtree to
        its single remaining leaf.
"""

# at most this many distinct keys per call (a Fill touches 7)
MAX_KEYS: constant(uint256) = 8
# bound of the tree witness (about 33 bytes per level of each key's path)
MAX_TREE_BYTES: constant(uint256) = 16384
KEY_BITS: constant(uint256) = 256

# tree witness node tags (pre-order)
OP_EMPTY: constant(uint256) = 0
OP_HASH: constant(uint256) = 1
OP_LEAF: constant(uint256) = 2
OP_BRANCH: constant(uint256) = 3

# what is known of a subtree after the update
KIND_EMPTY: constant(uint256) = 0
KIND_LEAF: constant(uint256) = 1
KIND_INTERNAL: constant(uint256) = 2
# a HASH node: non-empty, leaf or internal unknown
KIND_OPAQUE: constant(uint256) = 3

# split depth of a lone leaf in `_build`
LEAF_SPLIT: constant(uint256) = 256
# the leaf slots of one one-step proof (a Fill has 7)
MAX_SLOTS: constant(uint256) = 7


# one leaf of a step: tree key, value hash before and after (empty: absent)
struct Slot:
    key: uint256
    old: bytes32
    new: bytes32


# a branch of the witness being walked: its left child's old and new hash
# once known (which side is being walked and the left child's kind are kept
# in bit masks indexed by the branch's depth)
struct Frame:
    old_left: bytes32
    new_left: bytes32


@pure
@internal
def leaf_hash(key: uint256, value_hash: bytes32) -> bytes32:
    """
    @dev keccak256(0x00 || key || value_hash): the node of a one-leaf subtree.
    """
    return keccak256(concat(b"\x00", convert(key, bytes32), value_hash))


@pure
@internal
def _bit_length(x: uint256) -> uint256:
    n: uint256 = 0
    y: uint256 = x
    for s: uint256 in [128, 64, 32, 16, 8, 4, 2, 1]:
        if y >> s != 0:
            y = y >> s
            n += s
    if y != 0:
        n += 1
    return n


@pure
@internal
def _split_depth(a: uint256, b: uint256) -> uint256:
    """
    @dev The first bit (from the top) where two different keys differ: their
         lowest common subtree splits them there.
    """
    return KEY_BITS - self._bit_length(a ^ b)


@pure
@internal
def _lift(node: bytes32, split: uint256, key: uint256, depth: uint256) -> bytes32:
    """
    @dev The hash at `depth` of a subtree whose top branch splits at `split`
         (LEAF_SPLIT: a single leaf, the same hash at any depth): every level
         from split - 1 up to depth has one empty child, the other on the
         path of `key`.
    """
    if split == LEAF_SPLIT:
        return node
    h: bytes32 = node
    for i: uint256 in range(split - depth, bound=KEY_BITS):
        d: uint256 = split - 1 - i
        if (key >> (255 - d)) & 1 == 1:
            h = keccak256(concat(empty(bytes32), h))
        else:
            h = keccak256(concat(h, empty(bytes32)))
    return h


@pure
@internal
def _build(keys: DynArray[uint256, MAX_KEYS + 1], hashes: DynArray[bytes32, MAX_KEYS + 1],
           depth: uint256) -> (bytes32, uint256):
    """
    @dev (hash, kind) of the canonical compact subtree at `depth` holding
         exactly the leaves (keys[i], hashes[i]) (value hashes; keys sorted
         ascending, sharing their first `depth` bits). A stack merge over
         sorted keys: two neighbours join under their split depth as soon
         as the next key splits off higher up.
    """
    n: uint256 = len(keys)
    if n == 0:
        return empty(bytes32), KIND_EMPTY
    if n == 1:
        return self.leaf_hash(keys[0], hashes[0]), KIND_LEAF
    stack_hash: DynArray[bytes32, MAX_KEYS + 1] = []
    stack_split: DynArray[uint256, MAX_KEYS + 1] = []
    stack_key: DynArray[uint256, MAX_KEYS + 1] = []
    for i: uint256 in range(n, bound=MAX_KEYS + 1):
        stack_hash.append(self.leaf_hash(keys[i], hashes[i]))
        stack_split.append(LEAF_SPLIT)
        stack_key.append(keys[i])
        last: bool = i + 1 == n
        next_split: uint256 = 0
        if not last:
            next_split = self._split_depth(keys[i], keys[i + 1])
        for _j: uint256 in range(MAX_KEYS + 1):
            top: uint256 = len(stack_hash)
            if top < 2:
                break
            split: uint256 = self._split_depth(stack_key[top - 2], stack_key[top - 1])
            if not last and split < next_split:
                break
            right: bytes32 = self._lift(stack_hash.pop(), stack_split.pop(), stack_key.pop(), split + 1)
            left: bytes32 = self._lift(stack_hash[top - 2], stack_split[top - 2], stack_key[top - 2], split + 1)
            stack_hash[top - 2] = keccak256(concat(left, right))
            stack_split[top - 2] = split
    if stack_split[0] == LEAF_SPLIT:  # pragma: unreachable for n >= 2
        return stack_hash[0], KIND_LEAF
    return self._lift(stack_hash[0], stack_split[0], stack_key[0], depth), KIND_INTERNAL


@pure
@internal
def _join(old_left: bytes32, new_left: bytes32, kind_left: uint256,
          old_right: bytes32, new_right: bytes32, kind_right: uint256) -> (bytes32, bytes32, uint256):
    """
    @dev (old, new, new kind) of a branch from its children's. A branch left
         with one empty child and one single leaf collapses to that leaf; a
         child that a delete emptied needs its sibling opened (not a HASH).
    """
    old: bytes32 = keccak256(concat(old_left, old_right))
    if new_left == empty(bytes32) and new_right == empty(bytes32):
        return old, empty(bytes32), KIND_EMPTY
    if new_left == empty(bytes32):
        if kind_right == KIND_LEAF:
            return old, new_right, KIND_LEAF
        assert kind_right != KIND_OPAQUE or old_left == empty(bytes32), "osp: sibling not opened"
        return old, keccak256(concat(empty(bytes32), new_right)), KIND_INTERNAL
    if new_right == empty(bytes32):
        if kind_left == KIND_LEAF:
            return old, new_left, KIND_LEAF
        assert kind_left != KIND_OPAQUE or old_right == empty(bytes32), "osp: sibling not opened"
        return old, keccak256(concat(new_left, empty(bytes32))), KIND_INTERNAL
    return old, keccak256(concat(new_left, new_right)), KIND_INTERNAL


@pure
@internal
def roots(tree: Bytes[MAX_TREE_BYTES], keys: DynArray[uint256, MAX_KEYS],
          old_hashes: DynArray[bytes32, MAX_KEYS], new_hashes: DynArray[bytes32, MAX_KEYS]) -> (bytes32, bytes32):
    """
    @dev Walk the tree witness `tree` (pre-order: 0x00 empty, 0x01 hash(32),
         0x02 leaf key(32) value_hash(32), 0x03 branch left right) for the
         strictly ascending `keys`, whose value hashes are `old_hashes`
         before and `new_hashes` after (empty(bytes32) = absent). Returns
         (root before, root after). Reverts `osp: ...` on a witness that
         is malformed or does not prove the old values.
    """
    m: uint256 = len(keys)
    size: uint256 = len(tree)
    stack: DynArray[Frame, KEY_BITS] = []
    # bit d: the branch at depth d walks its right child; its left child's
    # kind is bit d of kind_hi * 2 + bit d of kind_lo
    rights: uint256 = 0
    kind_lo: uint256 = 0
    kind_hi: uint256 = 0
    pos: uint256 = 0
    nxt: uint256 = 0  # keys[:nxt] are placed
    depth: uint256 = 0
    path: uint256 = 0  # the current node's first `depth` key bits
    old: bytes32 = empty(bytes32)
    new: bytes32 = empty(bytes32)
    kind: uint256 = KIND_EMPTY
    done: bool = False
    for _n: uint256 in range(MAX_TREE_BYTES):
        assert pos < size, "osp: witness tree truncated"
        op: uint256 = convert(slice(tree, pos, 1), uint256)
        pos += 1
        if op == OP_BRANCH:
            assert depth < KEY_BITS, "osp: witness tree too deep"
            stack.append(Frame(old_left=empty(bytes32), new_left=empty(bytes32)))
            depth += 1
            continue
        # a terminal node: the keys under it are keys[nxt:j]
        j: uint256 = nxt
        for _k: uint256 in range(MAX_KEYS):
            if j == m or (keys[j] ^ path) >> (KEY_BITS - depth) != 0:
                break
            j += 1
        if op == OP_HASH:
            assert pos + 32 <= size, "osp: witness tree truncated"
            old = extract32(tree, pos)
            pos += 32
            assert j == nxt, "osp: touched leaf under a hash"
            assert old != empty(bytes32), "osp: empty hash node"
            new = old
            kind = KIND_OPAQUE
        elif op == OP_EMPTY or op == OP_LEAF:
            leaf_key: uint256 = 0
            leaf_value: bytes32 = empty(bytes32)
            other: bool = False  # a leaf of a key that is not being written
            if op == OP_LEAF:
                assert pos + 64 <= size, "osp: witness tree truncated"
                leaf_key = convert(extract32(tree, pos), uint256)
                leaf_value = extract32(tree, pos + 32)
                pos += 64
                assert (leaf_key ^ path) >> (KEY_BITS - depth) == 0, "osp: leaf off its path"
                old = self.leaf_hash(leaf_key, leaf_value)
                other = True
            else:
                old = empty(bytes32)
            new_keys: DynArray[uint256, MAX_KEYS + 1] = []
            new_values: DynArray[bytes32, MAX_KEYS + 1] = []
            for k: uint256 in range(nxt, j, bound=MAX_KEYS):
                if op == OP_LEAF and keys[k] == leaf_key:
                    assert old_hashes[k] == leaf_value, "osp: leaf value does not match"
                    other = False
                else:
                    assert old_hashes[k] == empty(bytes32), "osp: leaf is not absent"
                if other and leaf_key < keys[k]:
                    new_keys.append(leaf_key)
                    new_values.append(leaf_value)
                    other = False
                if new_hashes[k] != empty(bytes32):
                    new_keys.append(keys[k])
                    new_values.append(new_hashes[k])
            if other:
                new_keys.append(leaf_key)
                new_values.append(leaf_value)
            new, kind = self._build(new_keys, new_values, depth)
        else:
            raise "osp: bad witness tree"
        nxt = j
        # climb: hand the result to the parent branches
        for _u: uint256 in range(KEY_BITS + 1):
            if len(stack) == 0:
                done = True
                break
            top: uint256 = len(stack) - 1  # == depth - 1, the parent's depth
            bit: uint256 = 1 << top
            if rights & bit == 0:
                stack[top] = Frame(old_left=old, new_left=new)
                rights |= bit
                kind_lo = (kind_lo & ~bit) | (bit * (kind & 1))
                kind_hi = (kind_hi & ~bit) | (bit * (kind >> 1))
                path |= 1 << (KEY_BITS - depth)
                break
            frame: Frame = stack.pop()
            rights &= ~bit
            kind_left: uint256 = ((kind_hi >> top) & 1) * 2 + ((kind_lo >> top) & 1)
            path &= ~(1 << (KEY_BITS - depth))
            depth -= 1
            old, new, kind = self._join(frame.old_left, frame.new_left, kind_left, old, new, kind)
        if done:
            break
    assert done, "osp: witness tree truncated"
    assert pos == size, "osp: trailing witness bytes"
    assert nxt == m, "osp: witness misses a leaf"
    return old, new


@pure
@internal
def sorted_slots(slots: DynArray[Slot, MAX_SLOTS]) -> (DynArray[uint256, MAX_KEYS], DynArray[bytes32, MAX_KEYS],
                                                     DynArray[bytes32, MAX_KEYS]):
    """
    @dev The slots' keys ascending with their old and new value hashes;
         equal keys (one leaf in two slots) must agree on both.
    """
    keys: DynArray[uint256, MAX_KEYS] = []
    olds: DynArray[bytes32, MAX_KEYS] = []
    news: DynArray[bytes32, MAX_KEYS] = []
    taken: uint256 = 0  # bit i: slot i placed
    for _r: uint256 in range(MAX_SLOTS):
        best: uint256 = len(slots)
        for i: uint256 in range(len(slots), bound=MAX_SLOTS):
            if (taken >> i) & 1 == 0 and (best == len(slots) or slots[i].key < slots[best].key):
                best = i
        if best == len(slots):
            break
        taken |= 1 << best
        slot: Slot = slots[best]
        n: uint256 = len(keys)
        if n > 0 and keys[n - 1] == slot.key:
            assert olds[n - 1] == slot.old and news[n - 1] == slot.new, "osp: aliased leaves differ"
            continue
        keys.append(slot.key)
        olds.append(slot.old)
        news.append(slot.new)
    return keys, olds, news


@pure
@internal
def root_after(pre_root: bytes32, ok: bool, slots: DynArray[Slot, MAX_SLOTS], tree: Bytes[MAX_TREE_BYTES]) -> bytes32:
    """
    @dev Check the multiproof `tree` of the slots' old values against
         pre_root; the root after their new values, pre_root if not `ok`
         (a failed rule writes nothing, but the values it read must still
         be proven).
    """
    keys: DynArray[uint256, MAX_KEYS] = []
    olds: DynArray[bytes32, MAX_KEYS] = []
    news: DynArray[bytes32, MAX_KEYS] = []
    keys, olds, news = self.sorted_slots(slots)
    if not ok:
        news = olds
    old_root: bytes32 = empty(bytes32)
    new_root: bytes32 = empty(bytes32)
    old_root, new_root = self.roots(tree, keys, olds, news)
    assert old_root == pre_root, "osp: witness does not prove the pre-state root"
    return new_root
