"""The replica: derivation of the L2 chain from L1 data alone (node/derive.py,
node/replica.py; docs/protocol.md "Derivation (replica)").

Unit tests build batches with the node's own Chain (as the sequencer does)
and derive them again from batch data + deposit queue only. The end-to-end
test runs a devnet with traffic of every transaction type, then a replica
process that knows only the devnet's L1 URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.batch import BatchBlock, batch_commitment, encode_batch
from node.blocks import Block, genesis_block
from node.chain import Chain
from node.crypto import ZERO_HASH, keccak
from node.db import MemoryDB
from node.derive import (
    MALFORMED,
    DerivationError,
    PostedBatch,
    QueuedDeposit,
    batch_steps,
    derive_batch,
    derive_chain,
    state_at_step,
    step_roots,
)
from node.eip712 import Domain
from node.genesis import load_genesis
from node.markets import Scales, list_market_tx
from node.signing import Signer, dev_keys
from node.smt import SparseMerkleTree
from node.state import State
from node.transactions import Deposit, Fill, Order, encode_tx
from tests.devnet_process import ROOT, TAPE, DevnetProcess, free_port

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
ETH = 1
ADMIN = Signer(dev_keys(1)[0])
ORACLE = Signer(keccak(b"oracle"))
ALICE = Signer(keccak(b"alice"))
BOB = Signer(keccak(b"bob"))
GENESIS = replace(load_genesis(), oracle=ORACLE.address, admin=ADMIN.address)
SLOW = os.environ.get("DERIVNET_SLOW") == "1"


def new_chain() -> Chain:
    db = MemoryDB()
    Chain.initialize(db, GENESIS.leaves(), {"test": True})
    return Chain(db, DOMAIN)


def genesis_state() -> tuple[State, Block]:
    tree = SparseMerkleTree(MemoryDB())
    root = tree.update(ZERO_HASH, GENESIS.leaves())
    return State(tree, root), genesis_block(root)


def signed_fill(salt: int, size: int = 10_000, price: int = 166_621) -> Fill:
    maker = Order(ALICE.address, ETH, salt % 2 == 0, price, size, salt, NOW + 3600)
    taker = Order(BOB.address, ETH, salt % 2 == 1, price, size, salt, NOW + 3600)
    return Fill(maker, ALICE.sign_order(DOMAIN, maker)[1], taker,
                BOB.sign_order(DOMAIN, taker)[1], size, price)


def sequence(chain: Chain, blocks: list[tuple[int, list[Any]]]) -> list[Block]:
    """Seal one block per (timestamp, txs) the way the sequencer does (a tx
    that breaks a rule is refused, so it is not in the block)."""
    out = []
    for ts, txs in blocks:
        chain.open_block(ts)
        for tx in txs:
            chain.apply(tx)
        sealed = chain.seal(l1_origin=ts - NOW)
        assert sealed is not None
        out.append(sealed)
    return out


def post(index: int, blocks: list[Block], deposit_end: int) -> PostedBatch:
    """The PostedBatch the batcher would send for ``blocks``."""
    bbs = [BatchBlock(b.header.timestamp, b.header.l1_origin, b.txs) for b in blocks]
    return PostedBatch(index, blocks[0].number, encode_batch(bbs), blocks[-1].header.state_root,
                       batch_commitment(bbs), deposit_end)


QUEUE = {0: QueuedDeposit(0, ALICE.address, 10**10), 1: QueuedDeposit(1, BOB.address, 10**10)}


def sample_chain() -> tuple[Chain, list[PostedBatch]]:
    """Two batches: deposits, an oracle price, a ListMarket, fills, a withdrawal."""
    chain = new_chain()
    listing = ADMIN.list_market(DOMAIN, list_market_tx(3, "SHIB-ETH", Scales(12, 0), 104_138_125))
    first = sequence(chain, [
        (NOW, [Deposit(0, ALICE.address, 10**10), Deposit(1, BOB.address, 10**10)]),
        (NOW + 1, [ORACLE.oracle_price(DOMAIN, ETH, 166_600, NOW), listing, signed_fill(1)]),
    ])
    second = sequence(chain, [
        (NOW + 2, [signed_fill(2), signed_fill(3, 20_000)]),
        (NOW + 2, [BOB.withdraw(DOMAIN, BOB.address, 10**6, 0)]),
        (NOW + 5, [signed_fill(4)]),
    ])
    return chain, [post(0, first, 2), post(1, second, 2)]


# ------------------------------------------------------------------ derivation

def test_derivation_reaches_the_sequencers_blocks_and_roots() -> None:
    chain, batches = sample_chain()
    state, genesis = genesis_state()
    derived = derive_chain(state, genesis.header, batches, QUEUE, DOMAIN)
    assert [d.matches for d in derived] == [True, True]
    blocks = [b for d in derived for b in d.blocks]
    assert [b.hash for b in blocks] == [chain.block(n).hash for n in range(1, 6)]
    assert [b.receipts for b in blocks] == [chain.block(n).receipts for n in range(1, 6)]
    assert derived[-1].derived_root == chain.head.header.state_root


def test_a_tampered_root_says_matches_false_and_derivation_goes_on() -> None:
    chain, batches = sample_chain()
    bad = replace(batches[0], state_root=keccak(b"wrong"))
    state, genesis = genesis_state()
    derived = derive_chain(state, genesis.header, [bad, batches[1]], QUEUE, DOMAIN)
    assert [d.matches for d in derived] == [False, True]
    assert derived[0].derived_root == batches[0].state_root  # the replica's own truth


def test_batch_data_that_l1_would_refuse_does_not_derive() -> None:
    _, batches = sample_chain()
    state, genesis = genesis_state()
    b = batches[0]
    wrong_queue = {**QUEUE, 1: QueuedDeposit(1, ALICE.address, 10**10)}
    cases = [
        (b, wrong_queue, "not queue entry 1"),
        (replace(b, deposit_end=1), QUEUE, "deposit_end is 1"),
        (replace(b, tx_root=keccak(b"x")), QUEUE, "tx_root"),
        (replace(b, batch_data=b.batch_data[:-3]), QUEUE, "truncated"),
        (replace(b, batch_data=b""), QUEUE, "empty"),
        (replace(b, first_block=2), QUEUE, "starts at L2 block 2"),
    ]
    for batch, queue, message in cases:
        with pytest.raises(DerivationError, match=message):
            derive_batch(state, genesis.header, batch, queue, 0, DOMAIN)
    assert state.commit() == genesis.header.state_root  # nothing executed


def test_failed_and_undecodable_transactions_are_no_ops() -> None:
    """A batch may carry what the sequencer would refuse (a replayed fill) or
    bytes that do not decode (order side byte 2: the Rollup checks only type
    and size): each is a no-op with a failed receipt."""
    chain, batches = sample_chain()
    fill = encode_tx(signed_fill(1))
    broken = bytearray(fill)
    broken[1 + 24] = 2  # maker side byte
    extra = BatchBlock(NOW + 9, 9, (fill, bytes(broken)))
    bbs = [BatchBlock(NOW + 9, 9, ())]  # an empty (heartbeat) block too
    data = encode_batch([extra, *bbs])
    third = PostedBatch(2, 6, data, chain.head.header.state_root,
                        batch_commitment([extra, *bbs]), 2)
    state, genesis = genesis_state()
    derived = derive_chain(state, genesis.header, [*batches, third], QUEUE, DOMAIN)
    assert derived[2].matches
    receipts = derived[2].blocks[0].receipts
    assert [(r.success, r.error) for r in receipts] == [(False, "Overfill"), (False, MALFORMED)]
    # the node's Chain.apply_block gives the same block
    chain.apply_block(NOW + 9, 9, extra.txs)
    assert chain.head.hash == derived[2].blocks[0].hash


def test_step_roots_re_execute_one_batch() -> None:
    chain, batches = sample_chain()
    pre_root = chain.block(2).header.state_root  # batch 1 starts after block 2
    blocks = [chain.block(n) for n in range(3, 6)]
    steps = batch_steps(blocks)
    assert len(steps) == 4
    assert batch_commitment([BatchBlock(b.header.timestamp, 0, b.txs) for b in blocks]) == \
        batches[1].tx_root  # step leaves are the commitment's leaves
    # reference: commit after every step
    ref_state = State(chain.tree, pre_root)
    ref = [pre_root]
    for p in range(1, 5):
        ref += step_roots(ref_state, steps[p - 1:p], [1], DOMAIN)
    assert ref[2] == chain.block(3).header.state_root and ref[4] == batches[1].state_root
    roots = step_roots(State(chain.tree, pre_root), steps, [4, 0, 2, 2, 3, 1], DOMAIN)
    assert roots == [ref[4], ref[0], ref[2], ref[2], ref[3], ref[1]]
    with pytest.raises(ValueError):
        step_roots(State(chain.tree, pre_root), steps, [5], DOMAIN)
    before = state_at_step(State(chain.tree, pre_root), steps, 3, DOMAIN)
    assert before.root == ref[3] and before.dirty_items() == {}


def test_chain_rollback_and_re_derive() -> None:
    from node.chain import BatchInfo

    chain, batches = sample_chain()
    head = chain.head
    chain.record_batch(BatchInfo(0, 1, 2, batches[0].state_root, batches[0].tx_root, 1,
                                 ZERO_HASH, 2))
    chain.record_batch(BatchInfo(1, 3, 5, batches[1].state_root, batches[1].tx_root, 2,
                                 ZERO_HASH, 2))
    withdraw_tx = chain.block(4).receipts[0].tx_hash
    assert chain.withdrawal_block(0) == 4 and chain.tx_location(withdraw_tx) == (4, 0)
    dropped = chain.rollback(2)
    assert [b.number for b in dropped] == [3, 4, 5]
    assert chain.head.number == 2 and chain.latest_batch().index == 0  # type: ignore[union-attr]
    assert chain.batch(1) is None and chain.batch_of_block(3) is None
    assert chain.withdrawal_block(0) is None and chain.tx_location(withdraw_tx) is None
    assert chain.block_number_by_hash(head.hash) is None
    assert chain.state.system.withdrawal_count == 0
    with pytest.raises(KeyError):
        chain.block(3)
    for block in dropped:  # the same transactions again: the same blocks
        chain.apply_block(block.header.timestamp, block.header.l1_origin, block.txs)
    assert chain.head.hash == head.hash
    assert chain.withdrawal_block(0) == 4
