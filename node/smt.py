"""Compact sparse Merkle tree over 256-bit keys: the L2 state tree.

Hashing follows docs/protocol.md, "State: one sparse Merkle tree" (Diem's
Jellyfish layout): the empty subtree is 32 zero bytes, a subtree holding one
leaf is ``keccak(0x00 || key || keccak(value))``, a subtree holding two or
more leaves is ``keccak(left || right)``; key bits are read MSB first.

Nodes are content-addressed and never deleted, so every root the tree has
produced stays readable (proofs against historical state roots). Storage
layout inside the tree's ``KeyValueDB``:

- ``b"n" || node_hash`` -> ``0x00 || key || value_hash`` (leaf) or
  ``0x01 || left || right`` (internal node);
- ``b"v" || value_hash`` -> value;
- ``b"f" || key`` -> value: the flat leaf index of one root, the *indexed
  root* (normally the latest state), with no entry for a key not in it;
- ``b"r"`` -> the indexed root those ``f`` entries describe.

The flat index (after geth's snapshot / flat DB) makes ``get`` at the
indexed root one dict or database lookup instead of a ~20-level walk. An
``update`` of the indexed root moves the index to the new root; an update
of any other root leaves it alone. An empty store is indexed at the empty
root. A store written before the index existed keeps walking the tree
until ``rebuild_index`` is called.

``update`` only stages new nodes (and index changes) in memory;
``flush(batch)`` writes them, with the index marker, so the caller can
commit the tree together with other data in one atomic batch: the index on
disk always describes a root whose nodes are on disk.
``node.smt_reference`` is the simple from-scratch version tests compare to.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate, islice, repeat
from typing import Any

from node.crypto import ZERO_HASH, keccak, keccak_256
from node.db import KeyValueDB, KeyValueWriter, unwrap_writer

EMPTY_ROOT = ZERO_HASH
KEY_BITS = 256
NODE_PREFIX = b"n"
VALUE_PREFIX = b"v"
INDEX_PREFIX = b"f"
INDEX_ROOT_KEY = b"r"
INDEX_PRELOAD = 4096  # a persisted index this small is read whole at start
_LEAF_TAG = b"\x00"
_INTERNAL_TAG = b"\x01"

# A node in memory is its hash preimage: ``left || right`` (64 bytes) for an
# internal node, ``0x00 || key || value_hash`` (65 bytes) for a leaf. Plain
# bytes, so the millions a tree holds are no work for the garbage collector.
Node = bytes
_LEAF_BYTES = 65

# "Not in this dict" for dicts whose values may be None (index: key absent).
_ABSENT: Any = object()


class MissingNodeError(LookupError):
    """A node or value that a root refers to is not in the tree's storage
    (unknown root, or a corrupted / partially written database)."""


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    """``keccak(0x00 || key || value_hash)``: the node of a one-leaf subtree."""
    return keccak(_LEAF_TAG + key + value_hash)


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _unhex32(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 66:
        raise ValueError(f"expected a 0x-prefixed 32-byte hex string, got {text!r}")
    return bytes.fromhex(text[2:])


@dataclass(frozen=True, slots=True)
class SparseMerkleProof:
    """Proof for one key against a root (docs/protocol.md).

    ``siblings``: 32-byte sibling hashes from the root downward
    (``siblings[0]`` at depth 0), at most 256.
    ``leaf``: ``(key, value_hash)`` of the leaf found at depth
    ``len(siblings)`` on the key's path: the key's own leaf (inclusion),
    another key's leaf or None for an empty subtree (non-inclusion).
    """

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None

    def to_json(self) -> dict[str, Any]:
        """JSON-RPC shape: ``{"siblings": [hex], "leaf": null | {"key", "valueHash"}}``."""
        leaf = None
        if self.leaf is not None:
            leaf = {"key": _hex(self.leaf[0]), "valueHash": _hex(self.leaf[1])}
        return {"siblings": [_hex(s) for s in self.siblings], "leaf": leaf}

    @classmethod
    def from_json(cls, obj: Any) -> SparseMerkleProof:
        """Inverse of ``to_json``; raises ValueError on a malformed object."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("siblings"), list):
            raise ValueError("proof must be an object with a 'siblings' list")
        siblings = tuple(_unhex32(s) for s in obj["siblings"])
        if len(siblings) > KEY_BITS:
            raise ValueError("a proof has at most 256 siblings")
        raw_leaf = obj.get("leaf")
        if raw_leaf is None:
            return cls(siblings, None)
        if not isinstance(raw_leaf, Mapping):
            raise ValueError("proof 'leaf' must be null or an object")
        return cls(siblings, (_unhex32(raw_leaf.get("key")), _unhex32(raw_leaf.get("valueHash"))))


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: SparseMerkleProof) -> bool:
    """True if ``proof`` shows ``key`` maps to ``value`` under ``root``.

    ``value=None`` checks non-inclusion. Malformed proofs (wrong lengths,
    more than 256 siblings, a non-inclusion leaf with the queried key or not
    on the key's path) give False rather than raising.
    """
    siblings = proof.siblings
    depth = len(siblings)
    if len(key) != 32 or depth > KEY_BITS or any(len(s) != 32 for s in siblings):
        return False
    key_int = int.from_bytes(key, "big")
    leaf = proof.leaf
    if value is not None:
        if leaf is None or leaf[0] != key or leaf[1] != keccak(value):
            return False
        node = leaf_hash(key, leaf[1])
    elif leaf is None:
        node = ZERO_HASH
    else:
        other_key, other_value_hash = leaf
        if len(other_key) != 32 or len(other_value_hash) != 32 or other_key == key:
            return False
        # The other leaf must sit on the key's path: same first `depth` bits.
        if (int.from_bytes(other_key, "big") ^ key_int) >> (KEY_BITS - depth):
            return False
        node = leaf_hash(other_key, other_value_hash)
    for i in range(depth - 1, -1, -1):
        if (key_int >> (255 - i)) & 1:
            node = keccak(siblings[i] + node)
        else:
            node = keccak(node + siblings[i])
    return node == root


def _drop_older_half(cache: dict[bytes, Any], limit: int) -> None:
    """If ``cache`` exceeds ``limit``, delete its older half in place (in bulk,
    so the cost is amortized O(1) per cached entry)."""
    if len(cache) > limit:
        for stale in list(islice(cache, len(cache) // 2)):
            del cache[stale]


def _check_key(key: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError(f"tree keys are 32 bytes, got {len(key)}")
    return bytes(key)


class SparseMerkleTree:
    """Database-backed compact sparse Merkle tree; every method takes the root
    to work on, so any root produced earlier (and flushed or pending) is valid.

    ``cache_size`` bounds the number of decoded nodes kept in the read cache
    (pending, unflushed nodes are always kept); ``index_cache_size`` bounds
    the flat-index entries (present or absent keys) kept in memory in front
    of the persisted index (unflushed index changes are always kept).

    ``index=False`` makes a scratch tree over another tree's database: no
    flat index (reads walk the nodes), writes pending in memory, never to be
    flushed (``scratch()``); provers use it to re-execute old blocks.

    One tree object should own a database: ``get`` at the indexed root reads
    the persisted index, which another object on the same database may move
    to another root (``flush`` notices that and steps back, but reads in
    between would see the other root's leaves).
    """

    def __init__(
        self, db: KeyValueDB, cache_size: int = 1_000_000, index_cache_size: int = 500_000,
        index: bool = True,
    ) -> None:
        self._db = db
        self._cache_size = cache_size
        self._pending: dict[bytes, Node] = {}
        self._pending_values: dict[bytes, bytes] = {}
        self._cache: dict[bytes, Node] = {}
        self._value_cache: dict[bytes, bytes] = {}
        # Flat index of _indexed_root = the persisted index (describing
        # _disk_root) + _index_flushed (changes written into the last flush's
        # batch, kept until the next flush so reads stay right until that
        # batch is committed) + _index_pending (key -> value, None = delete).
        # _index_cache: persisted entries read or flushed (None = key
        # absent), bounded. None for a root: no usable index.
        self._index_cache_size = index_cache_size
        self._index_pending: dict[bytes, bytes | None] = {}
        self._index_flushed: dict[bytes, bytes | None] = {}
        self._index_cache: dict[bytes, bytes | None] = {}
        self._index_rewrite = False
        # index=False: a scratch tree over another tree's database (never
        # flushed; reads walk the nodes, writes stay pending in memory)
        self._disk_root: bytes | None = self._stored_index_root() if index else None
        self._indexed_root: bytes | None = self._disk_root
        # True while every persisted index entry is in memory (a small index
        # preloaded, then kept by every flush, until the cache is first
        # trimmed): a key found in no layer is absent, no store read
        self._index_complete = self._disk_root is not None and self._preload_index()

    def _preload_index(self) -> bool:
        """Read the persisted index into the cache if it has at most
        ``INDEX_PRELOAD`` entries (and fits the cache); returns whether it did."""
        entries: dict[bytes, bytes | None] = {}
        limit = min(INDEX_PRELOAD, self._index_cache_size)
        for key, value in self._db.iterate(INDEX_PREFIX):
            if len(entries) >= limit:
                return False
            entries[key[len(INDEX_PREFIX):]] = value
        self._index_cache.update(entries)
        return True

    def _stored_index_root(self) -> bytes | None:
        """The root the persisted flat index describes: its marker; the empty
        root if there is neither marker nor entry; None if unusable."""
        marker = self._db.get(INDEX_ROOT_KEY)
        if marker is not None:
            return marker if len(marker) == 32 else None
        for _ in self._db.iterate(INDEX_PREFIX):
            return None  # entries without a marker: not written by this class
        return EMPTY_ROOT

    @property
    def indexed_root(self) -> bytes | None:
        """The root ``get`` answers from the flat index (None: no usable index)."""
        return self._indexed_root

    # -- storage ---------------------------------------------------------

    def _fetch(self, node_hash: bytes) -> Node:
        """Read and decode a node missing from memory; caches it."""
        encoded = self._db.get(NODE_PREFIX + node_hash)
        if encoded is None:
            raise MissingNodeError(f"tree node {node_hash.hex()} not found")
        if len(encoded) != 65 or encoded[0] > 1:
            raise MissingNodeError(f"tree node {node_hash.hex()} is corrupt")
        node: Node = encoded[1:] if encoded[0] else bytes(encoded)
        cache = self._cache
        cache[node_hash] = node
        if len(cache) > self._cache_size:
            self._trim()
        return node

    def _trim(self) -> None:
        """Keep the read caches within bounds."""
        _drop_older_half(self._cache, self._cache_size)
        _drop_older_half(self._value_cache, self._cache_size // 4)
        if len(self._index_cache) > self._index_cache_size:
            self._index_complete = False
            _drop_older_half(self._index_cache, self._index_cache_size)

    def _loader(self) -> Callable[[bytes], Node]:
        pending_get = self._pending.get
        cache_get = self._cache.get
        fetch = self._fetch

        def load(node_hash: bytes) -> Node:
            return pending_get(node_hash) or cache_get(node_hash) or fetch(node_hash)

        return load

    def _value(self, value_hash: bytes) -> bytes:
        value = self._pending_values.get(value_hash)
        if value is None:
            value = self._value_cache.get(value_hash)
        if value is None:
            value = self._db.get(VALUE_PREFIX + value_hash)
            if value is None:
                raise MissingNodeError(f"tree value {value_hash.hex()} not found")
            self._value_cache[value_hash] = value
            if len(self._value_cache) > self._cache_size // 4:
                self._trim()
        return value

    def scratch(self) -> SparseMerkleTree:
        """A scratch tree over this tree's database: sees every flushed node,
        keeps its own writes in memory, never moves this tree's index."""
        return SparseMerkleTree(self._db, cache_size=self._cache_size, index=False)

    def flush(self, batch: KeyValueWriter) -> None:
        """Write every pending node and value, and the flat index changes with
        its root marker, into ``batch`` (anything with ``put`` and ``delete``,
        e.g. an open ``write_batch()``) and clear the pending set.

        The flushed nodes and index entries stay in memory (the index
        entries until the next ``flush``, which expects this batch to have
        been committed). If the caller discards the batch, the nodes exist
        only in the read cache: drop this tree object. (The index then steps
        back to the persisted one at the next ``flush``.)
        """
        writer, prefix = unwrap_writer(batch)
        put = writer.put
        node_prefix, value_prefix = prefix + NODE_PREFIX, prefix + VALUE_PREFIX
        internal_tag = _INTERNAL_TAG
        for node_hash, node in self._pending.items():
            put(node_prefix + node_hash, node if len(node) == _LEAF_BYTES else internal_tag + node)
        for value_hash, value in self._pending_values.items():
            put(value_prefix + value_hash, value)
        self._cache.update(self._pending)
        self._value_cache.update(self._pending_values)
        self._pending = {}
        self._pending_values = {}
        self._flush_index(batch)
        self._trim()

    def _flush_index(self, batch: KeyValueWriter) -> None:
        changes = self._index_pending
        if not changes and self._indexed_root == self._disk_root and not self._index_rewrite:
            return
        if not self._index_rewrite:
            marker = self._db.get(INDEX_ROOT_KEY)
            if (EMPTY_ROOT if marker is None else marker) != self._disk_root:
                # Someone else moved the persisted index (another tree object
                # on this store, or a discarded batch): the changes staged
                # here do not apply to it. Fall back to what it describes.
                self._index_pending = {}
                self._index_flushed = {}
                self._index_cache = {}
                self._index_complete = False
                self._disk_root = self._indexed_root = self._stored_index_root()
                return
        writer, prefix = unwrap_writer(batch)
        put, delete = writer.put, writer.delete
        index_prefix = prefix + INDEX_PREFIX
        for key, value in changes.items():
            if value is None:
                delete(index_prefix + key)
            else:
                put(index_prefix + key, value)
        assert self._indexed_root is not None
        put(prefix + INDEX_ROOT_KEY, self._indexed_root)
        self._disk_root = self._indexed_root
        self._index_rewrite = False
        # The previous flush's batch is committed by now (or the marker check
        # above would have failed): its entries can go to the bounded cache.
        self._index_cache.update(self._index_flushed)
        self._index_flushed = changes
        self._index_pending = {}

    def rebuild_index(self, root: bytes) -> None:
        """Point the flat index at ``root``, e.g. the head of a store written
        before the index existed: stages deleting every persisted index entry
        and writing every leaf of ``root``; the next ``flush`` writes them.
        Time and memory proportional to the number of leaves."""
        changes: dict[bytes, bytes | None] = {
            key[len(INDEX_PREFIX):]: None for key, _ in self._db.iterate(INDEX_PREFIX)
        }
        changes.update(dict.fromkeys(self._index_flushed))  # maybe not committed yet
        load = self._loader()
        stack = [root]
        while stack:
            node_hash = stack.pop()
            if node_hash == ZERO_HASH:
                continue
            node = load(node_hash)
            if len(node) == _LEAF_BYTES:
                changes[node[1:33]] = self._value(node[33:])
            else:
                stack += (node[32:], node[:32])
        self._index_pending = changes
        self._index_flushed = {}
        self._index_cache = {}
        self._index_complete = False
        self._indexed_root = root
        self._index_rewrite = True

    @property
    def pending_count(self) -> int:
        """Number of nodes and values waiting for ``flush``."""
        return len(self._pending) + len(self._pending_values)

    # -- reads -----------------------------------------------------------

    def get(self, root: bytes, key: bytes) -> bytes | None:
        """Value stored under ``key`` in the tree ``root``, None if absent.

        At the indexed root: one lookup in the flat index. Any other root:
        a walk down the tree, raising MissingNodeError if ``root`` (or a
        node below it) is unknown.
        """
        if type(key) is not bytes or len(key) != 32:
            key = _check_key(key)
        if root == self._indexed_root:
            value = self._index_pending.get(key, _ABSENT)
            if value is _ABSENT:
                value = self._index_flushed.get(key, _ABSENT)
            if value is _ABSENT:
                cache = self._index_cache
                value = cache.get(key, _ABSENT)
                if value is _ABSENT:
                    if self._index_complete:
                        return None
                    value = cache[key] = self._db.get(INDEX_PREFIX + key)
                    if len(cache) > self._index_cache_size:
                        _drop_older_half(cache, self._index_cache_size)
            return value  # type: ignore[no-any-return]
        key_int = int.from_bytes(key, "big")
        load = self._loader()
        node_hash = root
        depth = 0
        while node_hash != ZERO_HASH:
            node = load(node_hash)
            if len(node) == _LEAF_BYTES:
                return self._value(node[33:]) if node[1:33] == key else None
            if depth >= KEY_BITS:
                raise MissingNodeError("tree deeper than 256 levels: corrupt storage")
            node_hash = node[32:] if (key_int >> (255 - depth)) & 1 else node[:32]
            depth += 1
        return None

    def prove(self, root: bytes, key: bytes) -> SparseMerkleProof:
        """Inclusion or non-inclusion proof for ``key`` under ``root``."""
        key = _check_key(key)
        key_int = int.from_bytes(key, "big")
        load = self._loader()
        siblings: list[bytes] = []
        node_hash = root
        depth = 0
        while node_hash != ZERO_HASH:
            node = load(node_hash)
            if len(node) == _LEAF_BYTES:
                return SparseMerkleProof(tuple(siblings), (node[1:33], node[33:]))
            if depth >= KEY_BITS:
                raise MissingNodeError("tree deeper than 256 levels: corrupt storage")
            if (key_int >> (255 - depth)) & 1:
                siblings.append(node[:32])
                node_hash = node[32:]
            else:
                siblings.append(node[32:])
                node_hash = node[:32]
            depth += 1
        return SparseMerkleProof(tuple(siblings), None)

    # -- writes ----------------------------------------------------------

    def update(self, root: bytes, items: Mapping[bytes, bytes | None]) -> bytes:
        """Apply ``items`` (key -> new value, None deletes) to the tree ``root``
        and return the new root. ``root`` itself stays valid.

        The keys are sorted and the tree is descended once, splitting the
        batch on each key bit, so shared upper paths are rehashed once per
        batch. Deleting an absent key is a no-op. New nodes are pending until
        ``flush``. If ``root`` is the indexed root, the flat index moves to
        the new root (its changes are pending too). Raises ValueError for a
        key that is not 32 bytes.
        """
        if not items:
            return root
        # type and length checks run in C; other bytes-likes are copied to bytes
        keys = list(items)
        if set(map(type, keys)) != {bytes}:
            keys = [bytes(k) for k in keys]
        if set(map(len, keys)) != {32}:
            for key in keys:
                _check_key(key)  # raises
        values = list(items.values())
        if not set(map(type, values)) <= {bytes, type(None)}:
            values = [v if v is None else bytes(v) for v in values]
        if None in values:
            value_hashes = [None if v is None else keccak(v) for v in values]
            self._pending_values.update(
                (h, v) for h, v in zip(value_hashes, values) if v is not None)
        else:
            value_hashes = list(map(keccak, values))
            self._pending_values.update(zip(value_hashes, values))
        entries = sorted(zip(map(int.from_bytes, keys, repeat("big")), keys, value_hashes))
        new_root = self._apply(root, entries)
        if root == self._indexed_root:
            self._index_pending.update(zip(keys, values))
            self._indexed_root = new_root
        return new_root

    def _apply(self, root: bytes, entries: list[tuple[int, bytes, bytes | None]]) -> bytes:
        """``update`` on sorted ``(key_int, key, value_hash | None)`` entries.

        Hot path: nodes are plain bytes, loads and hashing are inlined, and
        one-entry sub-batches walk down and back up without recursion.
        """
        ks, bs, vs = map(list, zip(*entries))
        # deletes_before[i]: number of deletes among entries[:i].
        if None in vs:
            deletes_before = [0, *accumulate(v is None for v in vs)]
        else:
            deletes_before = [0] * (len(vs) + 1)
        pending = self._pending
        pending_get = pending.get
        cache_get = self._cache.get
        fetch = self._fetch
        zero = ZERO_HASH
        hasher = keccak_256

        def is_leaf(node_hash: bytes) -> bool:
            node = pending_get(node_hash) or cache_get(node_hash) or fetch(node_hash)
            return len(node) == _LEAF_BYTES

        def internal(left: bytes, right: bytes) -> bytes:
            node = left + right
            node_hash = hasher(node).digest()
            pending[node_hash] = node
            return node_hash

        def new_leaf(key: bytes, value_hash: bytes) -> bytes:
            node = _LEAF_TAG + key + value_hash
            node_hash = hasher(node).digest()
            pending[node_hash] = node
            return node_hash

        def pad(node_hash: bytes, key_int: int, from_depth: int, to_depth: int) -> bytes:
            """Lift ``node_hash`` from ``from_depth`` up to ``to_depth`` through
            levels whose other child is empty (keys' path given by ``key_int``)."""
            for d in range(from_depth - 1, to_depth - 1, -1):
                if (key_int >> (255 - d)) & 1:
                    node_hash = internal(zero, node_hash)
                else:
                    node_hash = internal(node_hash, zero)
            return node_hash

        def build(
            ks: list[int], bs: list[bytes], vs: list[Any], lo: int, hi: int, depth: int
        ) -> bytes:
            """Subtree at ``depth`` holding exactly entries[lo:hi] (no deletes)."""
            if hi - lo == 1:
                return new_leaf(bs[lo], vs[lo])
            first = ks[lo]
            # First bit where the smallest and largest key differ: all the
            # entries share the bits above it, so those levels have one child.
            split_depth = KEY_BITS - (first ^ ks[hi - 1]).bit_length()
            shift = 255 - split_depth
            split = bisect_left(ks, ((first >> shift) | 1) << shift, lo, hi)
            node_hash = internal(
                build(ks, bs, vs, lo, split, split_depth + 1),
                build(ks, bs, vs, split, hi, split_depth + 1),
            )
            return pad(node_hash, first, split_depth, depth)

        def rebuild(lo: int, hi: int, depth: int, leaf: Node | None) -> bytes:
            """Subtree from entries[lo:hi] minus deletes, plus ``leaf`` (the
            subtree's current single leaf) unless the batch overrides it."""
            if leaf is None and deletes_before[hi] == deletes_before[lo]:
                return build(ks, bs, vs, lo, hi, depth)
            sub = [(ks[i], bs[i], vs[i]) for i in range(lo, hi) if vs[i] is not None]
            if leaf is not None:
                leaf_key = leaf[1:33]
                leaf_int = int.from_bytes(leaf_key, "big")
                i = bisect_left(ks, leaf_int, lo, hi)
                if i == hi or ks[i] != leaf_int:
                    sub.append((leaf_int, leaf_key, leaf[33:]))
                    sub.sort()
            if not sub:
                return zero
            return build(
                [e[0] for e in sub], [e[1] for e in sub], [e[2] for e in sub], 0, len(sub), depth
            )

        def single(node_hash: bytes, depth: int, i: int) -> bytes:
            """New hash of the subtree ``node_hash`` at ``depth`` after entry i
            alone: walk down to the bottom, replace it, hash back up."""
            key_int = ks[i]
            value_hash = vs[i]
            trail: list[Node] = []  # the internal nodes passed, top down
            current = node_hash
            node: Node | None = None
            shift = 255 - depth  # key_int >> shift & 1: the key's bit at the current depth
            while current != zero:
                node = pending_get(current) or cache_get(current) or fetch(current)
                if len(node) == _LEAF_BYTES:
                    break
                trail.append(node)
                current = node[32:] if (key_int >> shift) & 1 else node[:32]
                shift -= 1
            if current == zero or node is None:
                if value_hash is None:
                    return node_hash  # deleting an absent key
                new, new_is_leaf = new_leaf(bs[i], value_hash), True
            elif node[1:33] == bs[i]:
                if value_hash is None:
                    new, new_is_leaf = zero, False
                elif node[33:] == value_hash:
                    return node_hash  # same value
                else:
                    new, new_is_leaf = new_leaf(bs[i], value_hash), True
            else:
                if value_hash is None:
                    return node_hash  # deleting an absent key
                # Another key's leaf: both go below their first differing bit.
                split_depth = KEY_BITS - (int.from_bytes(node[1:33], "big") ^ key_int).bit_length()
                added = new_leaf(bs[i], value_hash)
                if (key_int >> (255 - split_depth)) & 1:
                    new = internal(current, added)
                else:
                    new = internal(added, current)
                new = pad(new, key_int, split_depth, 255 - shift)
                new_is_leaf = False
            for node in reversed(trail):
                shift += 1
                right = (key_int >> shift) & 1  # our side of this node
                sibling = node[:32] if right else node[32:]
                # Re-collapse: a subtree with at most one leaf is that leaf.
                if sibling == zero:
                    if new_is_leaf or new == zero:
                        continue
                elif new == zero and is_leaf(sibling):
                    new, new_is_leaf = sibling, True
                    continue
                node = sibling + new if right else new + sibling
                new = hasher(node).digest()
                pending[new] = node
                new_is_leaf = False
            return new

        def descend(node_hash: bytes, depth: int, lo: int, hi: int) -> bytes:
            """New hash of the subtree ``node_hash`` at ``depth`` after entries[lo:hi]."""
            if hi - lo == 1:
                return single(node_hash, depth, lo)
            if node_hash == zero:
                return rebuild(lo, hi, depth, None)
            node = pending_get(node_hash) or cache_get(node_hash) or fetch(node_hash)
            if len(node) == _LEAF_BYTES:
                return rebuild(lo, hi, depth, node)
            left, right = node[:32], node[32:]
            shift = 255 - depth
            split = bisect_left(ks, ((ks[lo] >> shift) | 1) << shift, lo, hi)
            # (a one-entry range goes to ``single`` directly: one call fewer)
            if split - lo > 1:
                new_left = descend(left, depth + 1, lo, split)
            else:
                new_left = single(left, depth + 1, lo) if split > lo else left
            if hi - split > 1:
                new_right = descend(right, depth + 1, split, hi)
            else:
                new_right = single(right, depth + 1, split) if split < hi else right
            if new_left == left and new_right == right:
                return node_hash
            # Re-collapse: a subtree with at most one leaf is that leaf.
            if new_left == zero:
                if new_right == zero:
                    return zero
                if is_leaf(new_right):
                    return new_right
            elif new_right == zero and is_leaf(new_left):
                return new_left
            node = new_left + new_right
            new = hasher(node).digest()
            pending[new] = node
            return new

        return descend(root, 0, 0, len(entries))
