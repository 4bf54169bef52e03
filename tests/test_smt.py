"""Sparse Merkle tree: the optimized tree (node.smt) held against the
from-scratch reference (node.smt_reference), proofs, storage backends."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from node.crypto import keccak
from node.db import LevelDB, MemoryDB, PrefixedDB
from node.smt import (
    EMPTY_ROOT,
    INDEX_PREFIX,
    INDEX_ROOT_KEY,
    NODE_PREFIX,
    MissingNodeError,
    SparseMerkleProof,
    SparseMerkleTree,
    leaf_hash,
    verify_proof,
)
from node.smt_reference import reference_proof, reference_root

ZERO = b"\x00" * 32


def flip(key: bytes, bit: int) -> bytes:
    """``key`` with bit ``bit`` (MSB-first) inverted."""
    out = bytearray(key)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def raw_leaf(key: bytes, value: bytes) -> bytes:
    return keccak(b"\x00" + key + keccak(value))


BASE = [keccak(bytes([i])) for i in range(4)]
# Keys sharing long prefixes with BASE[0]: differing only in the last bit,
# the last two bits, bit 200, the top bits; plus the extreme keys.
POOL = [
    *BASE,
    flip(BASE[0], 255),
    flip(BASE[0], 254),
    flip(flip(BASE[0], 255), 254),
    flip(BASE[0], 200),
    flip(BASE[0], 0),
    flip(BASE[0], 1),
    ZERO,
    b"\xff" * 32,
]
keys = st.one_of(st.sampled_from(POOL), st.binary(min_size=32, max_size=32))
values = st.binary(max_size=8)


def check_proofs(
    tree: SparseMerkleTree, root: bytes, model: dict[bytes, bytes], key: bytes
) -> None:
    value = model.get(key)
    assert tree.get(root, key) == value
    proof = tree.prove(root, key)
    ref = reference_proof(model, key)
    assert proof == ref
    assert verify_proof(root, key, value, proof)
    assert verify_proof(root, key, value, ref)
    if value is None:
        assert not verify_proof(root, key, b"", proof)
    else:
        assert not verify_proof(root, key, None, proof)
        assert not verify_proof(root, key, value + b"x", proof)


def persisted_index(db: MemoryDB) -> tuple[bytes | None, dict[bytes, bytes]]:
    """(marker, {key: value}) of the flat index a tree wrote into ``db``."""
    entries = {key[len(INDEX_PREFIX) :]: value for key, value in db.iterate(INDEX_PREFIX)}
    return db.get(INDEX_ROOT_KEY), entries


class TreeMachine(RuleBasedStateMachine):
    """Random inserts, updates, deletes and batches, some from older roots;
    after every step the optimized root equals the reference root, proofs
    check out, ``get`` agrees with the reference dict at the latest root
    (answered by the flat index) and at older roots (a walk), and every flush
    leaves the persisted flat index equal to the latest root's leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.db = MemoryDB()
        self.tree = SparseMerkleTree(self.db)
        self.root = EMPTY_ROOT
        self.model: dict[bytes, bytes] = {}
        self.seen: list[bytes] = list(POOL)
        self.history: list[tuple[bytes, dict[bytes, bytes]]] = [(EMPTY_ROOT, {})]

    def note(self, items: dict[bytes, bytes | None], model: dict[bytes, bytes]) -> None:
        for key, value in items.items():
            if key not in self.seen:
                self.seen.append(key)
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value

    def apply(self, items: dict[bytes, bytes | None]) -> None:
        assert self.tree.indexed_root == self.root
        self.root = self.tree.update(self.root, items)
        assert self.tree.indexed_root == self.root
        self.note(items, self.model)
        self.history.append((self.root, dict(self.model)))

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        self.apply({key: value})

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.apply({key: None})

    @rule(data=st.data())
    def delete_present(self, data: st.DataObject) -> None:
        if self.model:
            self.apply({data.draw(st.sampled_from(sorted(self.model))): None})

    @rule(items=st.dictionaries(keys, st.none() | values, max_size=10))
    def batch(self, items: dict[bytes, bytes | None]) -> None:
        self.apply(items)

    @rule(data=st.data(), items=st.dictionaries(keys, st.none() | values, min_size=1, max_size=6))
    def update_older_root(self, data: st.DataObject, items: dict[bytes, bytes | None]) -> None:
        """A historical update: a new branch, the flat index stays put."""
        root, model = data.draw(st.sampled_from(self.history))
        model = dict(model)
        branch = self.tree.update(root, items)
        self.note(items, model)
        assert branch == reference_root(model)
        if root != self.root:
            assert self.tree.indexed_root == self.root
        else:  # updating the latest root is what moves the index
            self.root, self.model = branch, dict(model)
        self.history.append((branch, model))

    def flush_and_check(self) -> None:
        with self.db.write_batch() as batch:
            self.tree.flush(batch)
        assert self.tree.pending_count == 0
        marker, entries = persisted_index(self.db)
        assert (marker or EMPTY_ROOT, entries) == (self.root, self.model)

    @rule()
    def flush(self) -> None:
        self.flush_and_check()

    @rule(small_index_cache=st.booleans())
    def flush_and_reopen(self, small_index_cache: bool) -> None:
        self.flush_and_check()
        self.tree = SparseMerkleTree(
            self.db, cache_size=8, index_cache_size=2 if small_index_cache else 1000
        )
        assert self.tree.indexed_root == self.root

    @rule(data=st.data())
    def old_root_still_queryable(self, data: st.DataObject) -> None:
        root, model = data.draw(st.sampled_from(self.history))
        assert root == reference_root(model)
        for key in self.seen:
            check_proofs(self.tree, root, model, key)

    @invariant()
    def matches_reference(self) -> None:
        assert self.root == reference_root(self.model)
        assert self.tree.indexed_root == self.root
        for key in self.seen:
            check_proofs(self.tree, self.root, self.model, key)

    @invariant()
    def get_agrees_at_recent_roots(self) -> None:
        for root, model in self.history[-4:]:
            for key in self.seen:
                assert self.tree.get(root, key) == model.get(key)


TestTreeMachine = TreeMachine.TestCase
TestTreeMachine.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- hashing rules -------------------------------------------------------------


def test_empty_root_is_zero() -> None:
    tree = SparseMerkleTree(MemoryDB())
    assert EMPTY_ROOT == ZERO
    assert reference_root({}) == ZERO
    assert tree.update(EMPTY_ROOT, {}) == ZERO
    assert tree.update(EMPTY_ROOT, {BASE[0]: None}) == ZERO
    assert tree.get(EMPTY_ROOT, BASE[0]) is None
    proof = tree.prove(EMPTY_ROOT, BASE[0])
    assert proof == SparseMerkleProof((), None)
    assert verify_proof(EMPTY_ROOT, BASE[0], None, proof)


def test_single_leaf_root_is_leaf_hash() -> None:
    tree = SparseMerkleTree(MemoryDB())
    root = tree.update(EMPTY_ROOT, {BASE[1]: b"value"})
    assert root == raw_leaf(BASE[1], b"value") == leaf_hash(BASE[1], keccak(b"value"))
    assert root == reference_root({BASE[1]: b"value"})
    assert tree.get(root, BASE[1]) == b"value"
    assert tree.prove(root, BASE[1]) == SparseMerkleProof((), (BASE[1], keccak(b"value")))


def test_keys_differing_in_bit_zero() -> None:
    left_key = b"\x00" * 31 + b"\x05"
    right_key = b"\x80" + b"\x00" * 30 + b"\x05"
    expected = keccak(raw_leaf(left_key, b"l") + raw_leaf(right_key, b"r"))
    tree = SparseMerkleTree(MemoryDB())
    assert tree.update(EMPTY_ROOT, {right_key: b"r", left_key: b"l"}) == expected
    one = tree.update(EMPTY_ROOT, {right_key: b"r"})
    assert tree.update(one, {left_key: b"l"}) == expected
    assert reference_root({left_key: b"l", right_key: b"r"}) == expected
    proof = tree.prove(expected, right_key)
    assert proof.siblings == (raw_leaf(left_key, b"l"),)


def test_keys_differing_in_last_bit_make_a_256_deep_path() -> None:
    a, b = BASE[2], flip(BASE[2], 255)
    tree = SparseMerkleTree(MemoryDB())
    root = tree.update(EMPTY_ROOT, {a: b"a", b: b"b"})
    assert root == reference_root({a: b"a", b: b"b"})
    proof = tree.prove(root, a)
    assert len(proof.siblings) == 256
    assert proof.siblings[-1] == raw_leaf(b, b"b")
    assert set(proof.siblings[:-1]) == {ZERO}
    assert verify_proof(root, a, b"a", proof)


def test_delete_back_to_one_leaf_collapses() -> None:
    tree = SparseMerkleTree(MemoryDB())
    a = BASE[0]
    for other in (flip(a, 255), flip(a, 0), flip(a, 100)):
        root = tree.update(EMPTY_ROOT, {a: b"a", other: b"o"})
        assert tree.update(root, {other: None}) == raw_leaf(a, b"a")
        assert tree.update(root, {a: None}) == raw_leaf(other, b"o")
    # Three leaves: removing the deep pair's sibling lifts the survivor up.
    deep = flip(a, 255)
    far = flip(a, 0)
    root = tree.update(EMPTY_ROOT, {a: b"a", deep: b"d", far: b"f"})
    collapsed = tree.update(root, {deep: None})
    assert collapsed == keccak(raw_leaf(a, b"a") + raw_leaf(far, b"f")) or collapsed == keccak(
        raw_leaf(far, b"f") + raw_leaf(a, b"a")
    )
    assert collapsed == reference_root({a: b"a", far: b"f"})
    # Deleting both deep keys in one batch leaves the far leaf as the root.
    assert tree.update(root, {a: None, deep: None}) == raw_leaf(far, b"f")


def test_delete_everything_gives_zero() -> None:
    tree = SparseMerkleTree(MemoryDB())
    items = {key: key[:3] for key in POOL}
    root = tree.update(EMPTY_ROOT, items)
    assert root == reference_root(items)
    assert tree.update(root, dict.fromkeys(POOL)) == ZERO
    step = root
    for key in POOL:
        step = tree.update(step, {key: None})
    assert step == ZERO


def test_noop_updates_keep_the_root() -> None:
    tree = SparseMerkleTree(MemoryDB())
    items = {key: b"v" for key in BASE}
    root = tree.update(EMPTY_ROOT, items)
    assert tree.update(root, items) == root
    assert tree.update(root, {flip(BASE[0], 255): None, b"\x01" * 32: None}) == root


def test_random_batches_match_reference() -> None:
    rng = random.Random(7)
    tree = SparseMerkleTree(MemoryDB())
    pool = [rng.randbytes(32) for _ in range(150)] + [flip(BASE[3], b) for b in range(0, 256, 9)]
    model: dict[bytes, bytes] = {}
    root = EMPTY_ROOT
    for _ in range(40):
        items: dict[bytes, bytes | None] = {}
        for key in rng.sample(pool, rng.randint(1, 60)):
            items[key] = None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 40))
        root = tree.update(root, items)
        for key, value in items.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        assert root == reference_root(model)
    for key in rng.sample(pool, 30):
        check_proofs(tree, root, model, key)


def test_update_rejects_bad_keys() -> None:
    tree = SparseMerkleTree(MemoryDB())
    with pytest.raises(ValueError):
        tree.update(EMPTY_ROOT, {b"short": b"v"})
    with pytest.raises(ValueError):
        tree.get(EMPTY_ROOT, b"short")


def test_unknown_root_raises() -> None:
    tree = SparseMerkleTree(MemoryDB())
    with pytest.raises(MissingNodeError):
        tree.get(keccak(b"nope"), BASE[0])
    with pytest.raises(MissingNodeError):
        tree.update(keccak(b"nope"), {BASE[0]: b"v"})


# -- proof verification --------------------------------------------------------


Proven = tuple[bytes, dict[bytes, bytes], SparseMerkleTree]


@pytest.fixture
def proven() -> Proven:
    tree = SparseMerkleTree(MemoryDB())
    items = {key: b"v" + key[:4] for key in POOL[:8]}
    return tree.update(EMPTY_ROOT, items), items, tree


def test_verify_rejects_wrong_value(proven: Proven) -> None:
    root, items, tree = proven
    key = BASE[1]
    proof = tree.prove(root, key)
    assert verify_proof(root, key, items[key], proof)
    assert not verify_proof(root, key, b"other", proof)
    assert not verify_proof(root, key, None, proof)
    assert not verify_proof(keccak(root), key, items[key], proof)


def test_verify_rejects_wrong_key(proven: Proven) -> None:
    root, items, tree = proven
    key = POOL[4]  # BASE[0] with the last bit flipped: same path almost to the end
    proof = tree.prove(root, key)
    assert verify_proof(root, key, items[key], proof)
    assert not verify_proof(root, BASE[0], items[key], proof)
    assert not verify_proof(root, BASE[1], items[key], proof)
    # Relabelled leaf: the other key's leaf presented as the queried key's.
    assert proof.leaf is not None
    forged = SparseMerkleProof(proof.siblings, (BASE[1], proof.leaf[1]))
    assert not verify_proof(root, BASE[1], items[key], forged)


def test_verify_rejects_non_inclusion_leaf_with_queried_key(
    proven: Proven,
) -> None:
    root, _, tree = proven
    key = BASE[2]
    proof = tree.prove(root, key)
    assert proof.leaf is not None and proof.leaf[0] == key
    assert not verify_proof(root, key, None, proof)


def test_verify_rejects_non_inclusion_leaf_off_the_path() -> None:
    # A (non-canonical) root whose left child is a leaf whose key starts with
    # bit 1: folding succeeds for any key starting with bit 0, so only the
    # shared-prefix rule rejects it.
    misplaced = b"\x80" + b"\x11" * 31
    on_path = b"\x00" + b"\x11" * 31
    queried = b"\x00" + b"\x22" * 31
    value_hash = keccak(b"v")
    for leaf_key, accepted in ((misplaced, False), (on_path, True)):
        root = keccak(leaf_hash(leaf_key, value_hash) + ZERO)
        proof = SparseMerkleProof((ZERO,), (leaf_key, value_hash))
        assert verify_proof(root, queried, None, proof) is accepted


def test_verify_rejects_too_many_siblings(
    proven: Proven,
) -> None:
    root, items, tree = proven
    proof = tree.prove(root, POOL[4])
    assert len(proof.siblings) == 256
    padded = SparseMerkleProof((ZERO, *proof.siblings), proof.leaf)
    assert not verify_proof(root, POOL[4], items[POOL[4]], padded)
    assert not verify_proof(root, POOL[4], None, SparseMerkleProof((ZERO,) * 257, None))


def test_verify_rejects_tampered_siblings(
    proven: Proven,
) -> None:
    root, items, tree = proven
    absent = flip(BASE[1], 255)
    for key, value in ((BASE[1], items[BASE[1]]), (absent, None)):
        proof = tree.prove(root, key)
        assert verify_proof(root, key, value, proof)
        for i in range(len(proof.siblings)):
            siblings = list(proof.siblings)
            siblings[i] = keccak(siblings[i])
            tampered = SparseMerkleProof(tuple(siblings), proof.leaf)
            assert not verify_proof(root, key, value, tampered)
        assert not verify_proof(root, key, value, SparseMerkleProof(proof.siblings[1:], proof.leaf))
        assert not verify_proof(
            root, key, value, SparseMerkleProof((*proof.siblings, ZERO), proof.leaf)
        )
        short = SparseMerkleProof((proof.siblings[0][:31], *proof.siblings[1:]), proof.leaf)
        assert not verify_proof(root, key, value, short)


# -- JSON ------------------------------------------------------------------------


def test_proof_json_round_trip(proven: Proven) -> None:
    root, _, tree = proven
    for key in (BASE[1], flip(BASE[1], 255), b"\x77" * 32):
        proof = tree.prove(root, key)
        encoded = json.loads(json.dumps(proof.to_json()))
        assert all(s.startswith("0x") and len(s) == 66 for s in encoded["siblings"])
        assert SparseMerkleProof.from_json(encoded) == proof
    empty = SparseMerkleProof((), None)
    assert empty.to_json() == {"siblings": [], "leaf": None}
    assert SparseMerkleProof.from_json(empty.to_json()) == empty
    inclusion = tree.prove(root, BASE[1]).to_json()
    assert inclusion["leaf"]["key"] == "0x" + BASE[1].hex()
    for bad in (
        {},
        {"siblings": "0x00"},
        {"siblings": ["0x1234"]},
        {"siblings": [], "leaf": {"key": "0x" + "00" * 32}},
        {"siblings": [], "leaf": ["0x" + "00" * 32]},
    ):
        with pytest.raises(ValueError):
            SparseMerkleProof.from_json(bad)


# -- storage -------------------------------------------------------------------


def test_memory_batch_is_atomic() -> None:
    db = MemoryDB()
    db.put(b"a", b"1")
    with pytest.raises(RuntimeError):
        with db.write_batch() as batch:
            batch.put(b"b", b"2")
            batch.delete(b"a")
            raise RuntimeError("abort")
    assert db.get(b"a") == b"1" and db.get(b"b") is None
    with db.write_batch() as batch:
        batch.put(b"b", b"2")
        batch.delete(b"a")
    assert db.get(b"a") is None and db.get(b"b") == b"2"


def test_prefixed_db_namespaces_keys() -> None:
    db = MemoryDB()
    one, two = PrefixedDB(db, b"1:"), PrefixedDB(db, b"2:")
    one.put(b"k", b"a")
    two.put(b"k", b"b")
    assert (one.get(b"k"), two.get(b"k"), db.get(b"1:k")) == (b"a", b"b", b"a")
    nested = PrefixedDB(one, b"x:")
    with db.write_batch() as batch:
        nested.wrap_batch(batch).put(b"k", b"c")
        two.wrap_batch(batch).delete(b"k")
    assert db.get(b"1:x:k") == b"c" and two.get(b"k") is None
    with one.write_batch() as own:
        own.put(b"z", b"z")
    assert db.get(b"1:z") == b"z"


def test_tree_persists_in_leveldb(tmp_path: Path) -> None:
    path = str(tmp_path / "chain")
    db = LevelDB(path)
    state_db = PrefixedDB(db, b"state:")
    tree = SparseMerkleTree(state_db)
    items = {keccak(i.to_bytes(4, "big")): i.to_bytes(4, "big") for i in range(300)}
    items.update({key: b"pool" for key in POOL})
    first = tree.update(EMPTY_ROOT, dict(list(items.items())[:100]))
    root = tree.update(first, items)
    with db.write_batch() as batch:
        tree.flush(state_db.wrap_batch(batch))
        batch.put(b"head", root)
    db.close()

    db = LevelDB(path)
    state_db = PrefixedDB(db, b"state:")
    tree = SparseMerkleTree(state_db, cache_size=64)
    assert db.get(b"head") == root
    assert root == reference_root(items)
    for key in [*POOL, *list(items)[::25], flip(BASE[0], 7)]:
        value = items.get(key)
        assert tree.get(root, key) == value
        assert verify_proof(root, key, value, tree.prove(root, key))
    first_items = dict(list(items.items())[:100])
    assert tree.get(first, POOL[0]) is None
    assert all(tree.get(first, key) == value for key, value in first_items.items())

    # A batch aborted by an exception writes nothing, not even the tree nodes.
    later = tree.update(root, {BASE[0]: b"later", b"\x42" * 32: b"new"})
    with pytest.raises(RuntimeError):
        with db.write_batch() as batch:
            tree.flush(state_db.wrap_batch(batch))
            batch.put(b"head", later)
            raise RuntimeError("crash before commit")
    db.close()

    db = LevelDB(path)
    tree = SparseMerkleTree(PrefixedDB(db, b"state:"))
    assert db.get(b"head") == root
    with pytest.raises(MissingNodeError):
        tree.get(later, BASE[0])
    assert tree.get(root, BASE[0]) == b"pool"
    db.close()


# -- flat leaf index -------------------------------------------------------------


Items = dict[bytes, bytes | None]


def numbered(start: int, stop: int, tag: bytes = b"") -> dict[bytes, bytes]:
    return {keccak(i.to_bytes(4, "big")): tag + i.to_bytes(4, "big") for i in range(start, stop)}


def apply_items(model: dict[bytes, bytes], items: Items) -> dict[bytes, bytes]:
    out = dict(model)
    for key, value in items.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_flat_index_persists_and_answers_without_walking(tmp_path: Path) -> None:
    path = str(tmp_path / "chain")
    db = LevelDB(path)
    state_db = PrefixedDB(db, b"state:")
    tree = SparseMerkleTree(state_db)
    assert tree.indexed_root == EMPTY_ROOT  # an empty store is trivially indexed
    model: dict[bytes, bytes] = {}
    root = EMPTY_ROOT
    roots = []
    blocks: list[Items] = [
        dict(numbered(0, 200)),
        {**numbered(100, 250, b"x"), **dict.fromkeys(numbered(0, 50))},
        {**dict.fromkeys(numbered(200, 220)), **numbered(300, 310)},
    ]
    for items in blocks:
        root = tree.update(root, items)
        model = apply_items(model, items)
        roots.append((root, model))
        with db.write_batch() as batch:
            tree.flush(state_db.wrap_batch(batch))
            batch.put(b"head", root)
        assert tree.indexed_root == root
    db.close()

    db = LevelDB(path)
    state_db = PrefixedDB(db, b"state:")
    head = db.get(b"head")
    assert head == root == reference_root(model)
    # Remove the head root's node: any walk from the head now fails, so
    # every answer below comes from the flat index.
    db.delete(b"state:" + NODE_PREFIX + root)
    tree = SparseMerkleTree(state_db, cache_size=16, index_cache_size=8)
    assert tree.indexed_root == root
    probe = [*numbered(0, 320), *POOL]
    for _ in range(2):  # cold, then (partly) from the in-memory entries
        for key in probe:
            assert tree.get(root, key) == model.get(key)
    assert len(tree._index_cache) <= 8
    with pytest.raises(MissingNodeError):
        tree.prove(root, probe[0])
    # Older roots still walk the tree.
    first_root, first_model = roots[0]
    assert all(tree.get(first_root, key) == first_model.get(key) for key in probe[::7])
    db.close()


def test_update_of_an_older_root_leaves_the_index_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "chain")
    db = LevelDB(path)
    tree = SparseMerkleTree(db)
    one = numbered(0, 100)
    r1 = tree.update(EMPTY_ROOT, one)
    changes: Items = {**numbered(50, 120, b"2"), **dict.fromkeys(numbered(0, 10))}
    two = apply_items(one, changes)
    r2 = tree.update(r1, changes)
    with db.write_batch() as batch:
        tree.flush(batch)
    # A branch off r1 touching the same keys and others, flushed too.
    fork: Items = {
        **numbered(0, 20, b"f"),
        **dict.fromkeys(numbered(60, 70)),
        **numbered(500, 510),
    }
    branch = tree.update(r1, fork)
    fork_model = apply_items(one, fork)
    assert tree.indexed_root == r2
    with db.write_batch() as batch:
        tree.flush(batch)
    assert tree.indexed_root == r2
    probe = [*numbered(0, 130), *numbered(500, 510)]
    for key in probe:
        assert tree.get(r2, key) == two.get(key)
        assert tree.get(branch, key) == fork_model.get(key)
        assert tree.get(r1, key) == one.get(key)
    db.close()

    db = LevelDB(path)
    tree = SparseMerkleTree(db, index_cache_size=4)
    assert tree.indexed_root == r2
    assert dict((k[1:], v) for k, v in db.iterate(INDEX_PREFIX)) == two
    for key in probe:
        assert tree.get(r2, key) == two.get(key)
        assert tree.get(branch, key) == fork_model.get(key)
    # The chain goes on from the indexed root.
    three_items: Items = {**numbered(0, 5, b"3"), **dict.fromkeys(numbered(90, 95))}
    r3 = tree.update(r2, three_items)
    three = apply_items(two, three_items)
    assert tree.indexed_root == r3
    assert all(tree.get(r3, key) == three.get(key) for key in probe)
    db.close()


def test_index_reads_are_right_between_flush_and_commit() -> None:
    db = MemoryDB()
    tree = SparseMerkleTree(db, index_cache_size=2)
    r1 = tree.update(EMPTY_ROOT, numbered(0, 50))
    with db.write_batch() as batch:
        tree.flush(batch)
    changes: Items = {**numbered(0, 20, b"n"), **dict.fromkeys(numbered(20, 40))}
    r2 = tree.update(r1, changes)
    expected = apply_items(numbered(0, 50), changes)
    with db.write_batch() as batch:
        tree.flush(batch)
        # The batch is not committed yet: the store still holds r1's index.
        for key in numbered(0, 60):
            assert tree.get(r2, key) == expected.get(key)
    assert all(tree.get(r2, key) == expected.get(key) for key in numbered(0, 60))


def test_index_never_follows_a_foreign_or_discarded_write() -> None:
    db = MemoryDB()
    base = numbered(0, 40)
    r0 = SparseMerkleTree(db).update(EMPTY_ROOT, base)
    setup = SparseMerkleTree(db)
    assert setup.update(EMPTY_ROOT, base) == r0
    with db.write_batch() as batch:
        setup.flush(batch)
    mine, other = SparseMerkleTree(db), SparseMerkleTree(db)
    assert mine.indexed_root == other.indexed_root == r0
    a_items: Items = {**numbered(0, 10, b"a"), **dict.fromkeys(numbered(30, 40))}
    ra = other.update(r0, a_items)
    with db.write_batch() as batch:
        other.flush(batch)
    # `mine` still believes the store is indexed at r0: its flush must not
    # apply its changes on top of r_a's index; it steps back to r_a.
    b_items: Items = {**numbered(5, 15, b"b"), **numbered(100, 105)}
    rb = mine.update(r0, b_items)
    assert mine.indexed_root == rb
    with db.write_batch() as batch:
        mine.flush(batch)
    a_model = apply_items(base, a_items)
    assert db.get(INDEX_ROOT_KEY) == ra == mine.indexed_root
    assert dict((k[1:], v) for k, v in db.iterate(INDEX_PREFIX)) == a_model
    b_model = apply_items(base, b_items)
    for key in numbered(0, 110):
        assert mine.get(ra, key) == a_model.get(key)
        assert mine.get(rb, key) == b_model.get(key)

    # A discarded batch: the next flush finds the store's marker unchanged
    # and steps back to it rather than writing on top.
    tree = SparseMerkleTree(db)
    rc = tree.update(ra, numbered(0, 3, b"c"))
    with pytest.raises(RuntimeError):
        with db.write_batch() as batch:
            tree.flush(batch)
            raise RuntimeError("crash before commit")
    tree.update(rc, numbered(3, 6, b"d"))
    with db.write_batch() as batch:
        tree.flush(batch)
    assert db.get(INDEX_ROOT_KEY) == ra == tree.indexed_root
    assert dict((k[1:], v) for k, v in db.iterate(INDEX_PREFIX)) == a_model


def test_rebuild_index_for_a_store_without_one() -> None:
    db = MemoryDB()
    tree = SparseMerkleTree(db)
    items = numbered(0, 120)
    root = tree.update(EMPTY_ROOT, items)
    with db.write_batch() as batch:
        tree.flush(batch)
    # A store written before the flat index existed: nodes only.
    for key, _ in list(db.iterate(INDEX_PREFIX)):
        db.delete(key)
    db.delete(INDEX_ROOT_KEY)
    tree = SparseMerkleTree(db)
    assert tree.indexed_root == EMPTY_ROOT
    assert tree.get(root, next(iter(items))) == next(iter(items.values()))  # walks
    later = tree.update(root, numbered(0, 5, b"x"))  # not the indexed root
    assert tree.indexed_root == EMPTY_ROOT
    with db.write_batch() as batch:
        tree.flush(batch)
    assert db.get(INDEX_ROOT_KEY) is None
    # Stray entries without a marker: not an index this class wrote.
    db.put(INDEX_PREFIX + b"\x01" * 32, b"stray")
    tree = SparseMerkleTree(db)
    assert tree.indexed_root is None
    assert tree.get(root, b"\x01" * 32) is None
    tree.rebuild_index(later)
    later_model = {**items, **numbered(0, 5, b"x")}
    assert all(tree.get(later, key) == value for key, value in later_model.items())
    with db.write_batch() as batch:
        tree.flush(batch)
    assert db.get(INDEX_ROOT_KEY) == later
    assert dict((k[1:], v) for k, v in db.iterate(INDEX_PREFIX)) == later_model
    tree = SparseMerkleTree(db)
    assert tree.indexed_root == later
    assert tree.get(later, b"\x01" * 32) is None


def test_scratch_tree_reads_flushed_nodes_and_never_moves_the_index() -> None:
    from node.db import MemoryDB

    db = MemoryDB()
    tree = SparseMerkleTree(db)
    k1, k2 = keccak(b"a"), keccak(b"b")
    root = tree.update(EMPTY_ROOT, {k1: b"one"})
    with db.write_batch() as batch:
        tree.flush(batch)
    scratch = tree.scratch()
    assert scratch.get(root, k1) == b"one"
    other = scratch.update(root, {k2: b"two", k1: b"uno"})  # at the indexed root
    assert scratch.get(other, k2) == b"two"
    assert tree.indexed_root == root and tree.get(root, k1) == b"one"
    assert SparseMerkleTree(db).get(root, k1) == b"one"  # nothing written
    assert db.get(NODE_PREFIX + other) is None  # the scratch writes stay in memory


def test_flush_through_prefixed_batches_writes_the_same_keys() -> None:
    """``flush`` writes past PrefixedBatch layers (``unwrap_writer``) under the
    same keys as a plain prefixed write: a tree reopened on the namespace
    reads every leaf from its flat index and by walking the nodes."""
    from node.db import PrefixedBatch, unwrap_writer

    shared = MemoryDB()
    items = {keccak(bytes([i])): bytes([i]) * 40 for i in range(50)}
    tree = SparseMerkleTree(PrefixedDB(PrefixedDB(shared, b"a:"), b"s:"))
    root = tree.update(EMPTY_ROOT, items)
    with shared.write_batch() as batch:
        layered = PrefixedBatch(PrefixedBatch(batch, b"a:"), b"s:")
        assert unwrap_writer(layered) == (batch, b"a:s:")
        tree.flush(layered)
    assert shared.get(b"a:s:" + INDEX_ROOT_KEY) == root
    again = SparseMerkleTree(PrefixedDB(PrefixedDB(shared, b"a:"), b"s:"))
    assert again.indexed_root == root
    scratch = again.scratch()  # no index: walks the flushed nodes
    for key, value in items.items():
        assert again.get(root, key) == value == scratch.get(root, key)
    assert root == reference_root(items)
