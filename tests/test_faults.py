"""The dishonest proposer on demand (issue 7 item 6): devnet_injectFault and
--faulty-proposer make the next applicable batch go to L1 with a wrong state
root, while the node's own chain stays honest."""

from __future__ import annotations

import pytest
import trio
from jsonrpcserver.exceptions import JsonRpcError

from node.batch import BatchBlock
from node.node import Node, NodeConfig
from node.signing import Signer, dev_keys
from node.state import State
from node.derive import batch_steps
from prover.trace import BatchTrace, Fault

KEYS = dev_keys(2)


def _post(node: Node) -> int:
    async def run() -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._l1_clock)
            landed = await node.post_batches()
            nursery.cancel_scope.cancel()
        return landed

    return trio.run(run)


def test_injected_fault_posts_a_wrong_root_and_keeps_its_trace() -> None:
    node = Node(NodeConfig(serve_l1=False, l1_block_time=0.3))
    try:
        oracle = Signer(KEYS[1])
        domain = node.chain.domain
        base = int(node.clock()) + 10
        inject = node.devnet_methods()["devnet_injectFault"]
        with pytest.raises(JsonRpcError, match="unknown fault kind"):
            inject({"kind": "nope"})
        with pytest.raises(JsonRpcError, match="unknown field"):
            inject({"kind": "oracle-price", "when": 1})
        assert inject({"kind": "oracle-price", "step": 1}) == {"kind": "oracle-price", "step": "0x1"}
        for i in range(3):
            node.sequencer.send_oracle_price(oracle.oracle_price(domain, 1, 166_600 + i, base + i))
        node.sequencer.seal()
        head = node.chain.head.number
        assert _post(node) == 1
        posted = node.rollup.get_batch(0)
        honest_root = node.chain.block(head).header.state_root
        assert posted.state_root != honest_root
        assert node.chain.head.header.state_root == honest_root  # the node stays honest
        trace = node.fault_traces[0]
        assert trace.fault is Fault.ORACLE_PRICE and trace.fault_step == 1
        assert trace.post_root == posted.state_root and len(trace.roots) == 4
        # the honest re-execution agrees with the trace up to the faulty step
        info = node.chain.batch(0)
        blocks = [node.chain.block(n) for n in range(info.first_block, info.last_block + 1)]
        steps = batch_steps([BatchBlock(b.header.timestamp, b.header.l1_origin, b.txs)
                             for b in blocks])
        assert len(steps) == 3
        pre = node.chain.block(info.first_block - 1).header.state_root
        honest = BatchTrace(State(node.chain.tree.scratch(), pre), steps, domain)
        assert honest.post_root == honest_root
        assert honest.roots[:2] == trace.roots[:2] and honest.roots[2] != trace.roots[2]
        assert node.armed_fault is None
        # the next batch goes out honest
        node.sequencer.send_oracle_price(oracle.oracle_price(domain, 1, 170_000, base + 10))
        node.sequencer.seal()
        assert _post(node) == 1
        assert node.rollup.get_batch(1).state_root == node.chain.head.header.state_root
    finally:
        node.close()


def test_fault_waits_for_a_batch_it_applies_to() -> None:
    node = Node(NodeConfig(serve_l1=False, l1_block_time=0.3, faulty_proposer="skip-deposit"))
    try:
        oracle = Signer(KEYS[1])
        node.sequencer.send_oracle_price(oracle.oracle_price(node.chain.domain, 1, 166_601,
                                                             int(node.clock()) + 10))
        node.sequencer.seal()
        assert _post(node) == 1  # no deposit in it: honest, still armed
        assert node.rollup.get_batch(0).state_root == node.chain.head.header.state_root
        assert node.armed_fault == (Fault.SKIP_DEPOSIT, 0) and node.fault_traces == {}
    finally:
        node.close()


def test_chain_forgets_deleted_batches() -> None:
    """Recovery's store side: batches deleted on L1 are forgotten, their
    blocks are unsafe again, the blocks themselves stay."""
    from node.chain import BatchInfo, Chain
    from node.db import MemoryDB
    from node.genesis import load_genesis
    from tests.test_sequencer import DOMAIN

    db = MemoryDB()
    Chain.initialize(db, load_genesis().leaves(), {"test": 1})
    chain = Chain(db, DOMAIN)
    for n in range(1, 7):
        chain.apply_block(1_700_000_000 + n, n, [])
    z = b"\x00" * 32
    for index, (first, last) in enumerate([(1, 2), (3, 4), (5, 6)]):
        chain.record_batch(BatchInfo(index, first, last, z, z, index, z, 0))
    assert chain.safe_head == 6
    assert chain.rollback_batches(3) == []
    gone = chain.rollback_batches(1)
    assert [g.index for g in gone] == [1, 2]
    assert chain.safe_head == 2 and chain.batch(1) is None and chain.batch_of_block(3) is None
    assert chain.batch_of_block(2) == 0 and chain.head.number == 6
    assert [g.index for g in chain.rollback_batches(0)] == [0]
    assert chain.safe_head == 0 and chain.latest_batch() is None
