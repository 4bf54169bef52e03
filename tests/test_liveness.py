"""Liveness: blocks always fit a batch, a max-size batch fits an L1 block,
the batcher's heartbeat keeps an idle rollup from being frozen, L1 views are
read once per L1 block, a frozen Rollup refuses orders, and hostile L1
traffic (a block-filling transaction, a nonce race on the sequencer key)
leaves the devnet running with batches landing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from l1_stub.chain import EmbeddedL1
from l1_stub.client import (
    RollupClient,
    TransactionReverted,
    batch_gas_limit,
    connect,
    deploy,
    send_transaction,
    wait_receipt,
)
from node import exceptions as err
from node.batch import BLOCK_HEADER_BYTES, BatchBlock, encode_batch
from node.chain import Chain
from node.client import L2Client, RpcError
from node.crypto import keccak
from node.db import MemoryDB
from node.node import Node, NodeConfig
from node.signing import Signer, dev_keys
from node.transactions import Deposit, Order
from node.wallet import deposit, rollup_client
from sequencer.batcher import batch_byte_cap, plan_batch
from sequencer.sequencer import Sequencer
from tests.devnet_process import DevnetProcess, l1_lead
from tests.test_sequencer import DOMAIN, GENESIS, NOW, Clock

KEYS = dev_keys(10)
ALICE, BOB = Signer(KEYS[5]), Signer(KEYS[6])
USDC = 10**6


# ------------------------------------------------------------ blocks fit a batch

def _burst(max_bytes: int, max_steps: int, makers: int) -> tuple[Sequencer, list[Any]]:
    """A sequencer with max_block_txs huge; ``makers`` resting asks, then one
    IOC buy that sweeps them all (one order's matching spans blocks)."""
    db = MemoryDB()
    Chain.initialize(db, GENESIS.leaves(), {"test": 1})
    seq = Sequencer(Chain(db, DOMAIN), Clock(), max_block_txs=10**9,
                    max_block_bytes=max_bytes, max_block_steps=max_steps)
    a, b = Signer(keccak(b"maker")), Signer(keccak(b"taker"))
    seq.include_deposit(Deposit(0, a.address, 10**13))
    seq.include_deposit(Deposit(1, b.address, 10**13))
    for i in range(makers):
        o = Order(a.address, 1, False, 166621, 10, i, int(NOW) + 600)
        seq.send_order(o, a.sign_order(DOMAIN, o)[1])
    t = Order(b.address, 1, True, 166621, 10 * makers, 10**6, int(NOW) + 600)
    result = seq.send_order(t, b.sign_order(DOMAIN, t)[1], "IOC")
    assert result.status == "filled" and len(result.fills) == makers
    seq.seal()
    blocks = [seq.chain.block(n) for n in range(1, seq.chain.head.number + 1)]
    return seq, blocks


def _check_fit(seq: Sequencer, blocks: list[Any], max_bytes: int, max_steps: int) -> None:
    for block in blocks:
        size = BLOCK_HEADER_BYTES + sum(len(t) for t in block.txs)
        assert size <= max_bytes and len(block.txs) <= max_steps
    # the batcher posts every block, several per batch, within the limits
    first = 1
    while first <= seq.chain.head.number:
        planned = plan_batch(seq.chain, first, max_bytes, max_steps)
        assert planned is not None
        assert len(planned.data) <= max_bytes and planned.step_count <= max_steps
        first = planned.last_block + 1


@pytest.mark.parametrize("max_bytes,max_steps", [(2_000, 1_000), (10_000, 7)])
def test_blocks_never_exceed_batch_limits_small(max_bytes: int, max_steps: int) -> None:
    seq, blocks = _burst(max_bytes, max_steps, 60)
    assert len(blocks) > 5  # the sweep was split over many blocks
    _check_fit(seq, blocks, max_bytes, max_steps)
    assert sum(len(b.txs) for b in blocks) == 62


def test_blocks_never_exceed_rollup_limits_with_burst() -> None:
    """Rollup limits (131072 bytes, 4096 steps): 700 fills in one sweep would
    be ~183 KB in one block; they are sealed in two blocks that each fit."""
    seq, blocks = _burst(131_072, 4_096, 700)
    _check_fit(seq, blocks, 131_072, 4_096)
    assert len(blocks) >= 2 and sum(len(b.txs) for b in blocks) == 702


def test_batch_cap_sources() -> None:
    assert batch_byte_cap(131_072, 30_029_122) == (131_072, "contract")
    assert batch_byte_cap(131_072, 30_029_122, 200_000) == (131_072, "contract")
    assert batch_byte_cap(131_072, 30_029_122, 100_000) == (100_000, "config")
    size, source = batch_byte_cap(131_072, 5_000_000)
    assert source == "gas" and batch_gas_limit(size) <= 5_000_000
    with pytest.raises(ValueError):
        batch_byte_cap(131_072, 300_000)


def test_max_size_batch_fits_an_l1_block() -> None:
    """A batch of MAX_BATCH_BYTES (incompressible fills) lands in one L1 block:
    its gas used (EIP-7623 floor, from the receipt) and its gas limit are
    below the embedded L1's block gas limit."""
    l1 = EmbeddedL1(auto_mine=True)
    key = l1.dev_keys[0]
    dep = deploy(l1.w3, key, l1.dev_accounts[0], b"\x01" * 32, 901)
    rollup = RollupClient(l1.w3, dep)
    cap = rollup.max_batch_bytes()
    count = (cap - BLOCK_HEADER_BYTES) // 261
    fills = tuple(b"\x02" + os.urandom(260) for _ in range(count))
    data = encode_batch([BatchBlock(int(time.time()), 1, fills)])
    assert cap - 261 < len(data) <= cap
    receipt = wait_receipt(l1.w3, rollup.submit_batch(key, data, b"\x02" * 32, 0))
    gas_limit = int(l1.w3.eth.get_block("latest")["gasLimit"])
    used = int(receipt["gasUsed"])
    assert 40 * len(data) < used < batch_gas_limit(len(data)) <= gas_limit
    print(f"max-size batch: {len(data)} bytes, {used} gas, block gas limit {gas_limit}")
    l1.close()


# ------------------------------------------------------------ L1 views cached

def test_sync_status_reads_no_l1_per_request() -> None:
    node = Node(NodeConfig(serve_l1=False))
    try:
        calls: list[str] = []
        provider = node.l1.w3.provider
        original = provider.make_request

        def counting(method: Any, params: Any) -> Any:
            calls.append(str(method))
            return original(method, params)

        provider.make_request = counting  # type: ignore[method-assign]
        for _ in range(20):
            status = node.sync_status()
        assert calls == []
        assert status["frozen"] is False and status["current_l1"]["number"] >= 1
        assert status["batch_limits"] == {"bytes": 131_072, "steps": 4_096}
    finally:
        node.close()


def test_frozen_rollup_refuses_orders_and_withdrawals() -> None:
    seq, _ = _burst(131_072, 4_096, 1)
    seq.frozen = True
    a = Signer(keccak(b"maker"))
    o = Order(a.address, 1, False, 166621, 10, 99, int(NOW) + 600)
    with pytest.raises(err.RollupFrozen):
        seq.send_order(o, a.sign_order(DOMAIN, o)[1])
    assert seq.chain.pending_txs == []


# ------------------------------------------------------------ devnet processes

def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def make_devnet(tmp_path: Path) -> Iterator[Callable[..., DevnetProcess]]:
    started: list[DevnetProcess] = []

    def start(**flags: str) -> DevnetProcess:
        node = DevnetProcess(None, tmp_path / f"devnet{len(started)}.log", **flags)
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def trade(client: L2Client, salt: int) -> None:
    price = 166_600
    client.send_order(BOB, "ETH-USD", False, price, 1_000, salt=salt)
    out = client.send_order(ALICE, "ETH-USD", True, price, 1_000, "IOC", salt=salt)
    assert out["status"] == "filled", out


def test_idle_devnet_cannot_be_frozen(make_devnet) -> None:
    """Escape delay 20 s, no traffic for 22 s: the heartbeat keeps batches
    coming; freeze() from another account reverts and nothing is frozen. A
    warp of 14 s (short of the delay, past the heartbeat point) is answered
    by a prompt heartbeat."""
    node = make_devnet(**{"--escape-delay": "20", "--batch-interval": "2",
                          "--block-time": "0.25", "--funding-interval": "0"})  # idle: no ticks
    with L2Client(node.url) as client, connect(node.l1_url) as w3:
        rollup = rollup_client(client, w3)
        time.sleep(22)
        status = client.sync_status()
        assert status["heartbeats"] >= 1 and status["batcher_error"] is None
        with pytest.raises(TransactionReverted, match="freeze: sequencer still active"):
            wait_receipt(w3, rollup.freeze(ALICE.private_key))
        assert not rollup.frozen()

        # right after a batch lands, warp 14 s: a heartbeat follows within seconds
        count = rollup.batch_count()
        wait_for(lambda: rollup.batch_count() > count, timeout=20, what="next heartbeat")
        count = rollup.batch_count()
        client.call("devnet_increaseTime", 14 + l1_lead(w3))  # 14 s of L1 time
        wait_for(lambda: rollup.batch_count() > count, timeout=6, what="heartbeat after warp")
        with pytest.raises(TransactionReverted, match="freeze: sequencer still active"):
            wait_receipt(w3, rollup.freeze(ALICE.private_key))
        assert not rollup.frozen() and not client.sync_status()["frozen"]


def test_frozen_rollup_answers_rollup_frozen(make_devnet) -> None:
    node = make_devnet(**{"--escape-delay": "10"})
    with L2Client(node.url) as client, connect(node.l1_url) as w3:
        rollup = rollup_client(client, w3)
        deposit(client, w3, ALICE, 1_000 * USDC)
        client.call("devnet_setBatcher", False)
        time.sleep(3)  # a batch already in flight lands first
        # the L1 clock may run seconds ahead of the wall clock after a burst of
        # blocks (each at least a second after its parent): warp past its lead
        client.call("devnet_increaseTime", 11 + l1_lead(w3))
        client.call("devnet_mine", 1)
        wait_receipt(w3, rollup.freeze(BOB.private_key))
        wait_for(lambda: client.sync_status()["frozen"], timeout=10, what="frozen on L2")
        with pytest.raises(RpcError) as info:
            client.send_order(ALICE, "ETH-USD", True, 166_600, 1_000)
        assert info.value.code == -32003 and info.value.message.startswith("RollupFrozen")
        with pytest.raises(RpcError) as info:
            client.withdraw(ALICE, 1 * USDC)
        assert info.value.code == -32003 and info.value.message.startswith("RollupFrozen")


def _batches_keep_landing(client: L2Client, w3: Any, salt0: int, rounds: int = 3) -> None:
    rollup = rollup_client(client, w3)
    for r in range(rounds):
        before = client.sync_status()["safe_l2"]["number"]
        trade(client, salt0 + r)
        wait_for(lambda: client.sync_status()["safe_l2"]["number"] > before,  # noqa: B023
                 what="a batch after the trade")
    # the proposer still finalizes (challenge window 1 s)
    wait_for(lambda: rollup.finalized_batch_count() >= rollup.batch_count() - 2,
             what="finalization")


def test_block_filling_l1_transaction_leaves_node_running(make_devnet) -> None:
    """A transaction with gas = the L1 block gas limit that burns all of it
    (INVALID opcode), sent through the L1 port every L1 block for ~8 s: the
    proposer's and the batcher's sends fail for those blocks and are
    retried; the node keeps running and batches keep landing."""
    node = make_devnet(**{"--challenge-window": "1", "--batch-interval": "0.5"})
    with L2Client(node.url) as client, connect(node.l1_url) as w3:
        deposit(client, w3, ALICE, 1_000 * USDC)
        deposit(client, w3, BOB, 1_000 * USDC)
        gas_limit = int(w3.eth.get_block("latest")["gasLimit"])
        spammer = KEYS[7]
        stop = threading.Event()
        sent: list[bytes] = []

        def spam() -> None:
            while not stop.is_set():
                try:
                    sent.append(bytes(send_transaction(w3, spammer, to=None, data=b"\xfe",
                                                       gas=gas_limit)))
                except Exception:  # block already full: try again in the next one
                    pass
                time.sleep(0.2)

        thread = threading.Thread(target=spam)
        thread.start()
        try:
            for i in range(8):
                trade(client, 100 + i)
                time.sleep(1)
                assert node.proc is not None and node.proc.poll() is None
        finally:
            stop.set()
            thread.join()
        receipt = wait_receipt(w3, sent[0], check=False)
        assert int(receipt["gasUsed"]) == gas_limit  # it really filled a block
        assert node.proc is not None and node.proc.poll() is None
        _batches_keep_landing(client, w3, 200)
        status = client.sync_status()
        assert status["batcher_error"] is None


def test_nonce_race_on_sequencer_key_leaves_node_running(make_devnet) -> None:
    """A second client sends L1 transactions with the sequencer's dev key
    (account 0) as fast as it can for ~8 s while the node trades, posts and
    finalizes: the node keeps running and batches keep landing."""
    node = make_devnet(**{"--challenge-window": "1", "--batch-interval": "0.5"})
    with L2Client(node.url) as client, connect(node.l1_url) as w3:
        deposit(client, w3, ALICE, 1_000 * USDC)
        deposit(client, w3, BOB, 1_000 * USDC)
        sequencer_key = KEYS[0]
        me = w3.eth.account.from_key(sequencer_key).address
        stop = threading.Event()
        count = [0, 0]

        def race() -> None:
            while not stop.is_set():
                nonce = w3.eth.get_transaction_count(me, "pending")
                try:
                    send_transaction(w3, sequencer_key, to=me, gas=21_000, nonce=nonce)
                    count[0] += 1
                except Exception:  # we lost the race to the node: fine
                    count[1] += 1

        thread = threading.Thread(target=race)
        thread.start()
        try:
            for i in range(8):
                trade(client, 300 + i)
                time.sleep(1)
                assert node.proc is not None and node.proc.poll() is None
        finally:
            stop.set()
            thread.join()
        assert count[0] > 20
        assert node.proc is not None and node.proc.poll() is None
        _batches_keep_landing(client, w3, 400)


def test_replay_that_cannot_finish_says_why(make_devnet) -> None:
    from node.replay import ReplayIncomplete, ReplayOptions, run_replay
    from tests.devnet_process import TAPE

    node = make_devnet()
    with L2Client(node.url) as client:
        client.call("devnet_setBatcher", False)
    with pytest.raises(ReplayIncomplete) as info:
        run_replay(ReplayOptions(tape=str(TAPE), rpc=node.url, progress=False, limit=20,
                                 timeout=5))
    message = str(info.value)
    assert "\n" not in message and message.startswith("replay could not finish")
    assert "batcher is paused" in message and "20 fills" in message
    assert info.value.summary["fills"] == 20 and not info.value.summary["rootsMatch"]


def test_batcher_posts_several_batches_per_l1_block_when_behind() -> None:
    """Six full blocks of oracle prices (each sealed at the byte cap, here a
    configured 20,000 bytes) wait to be posted: one post_batches call lands
    them all, several in one L1 block, roots as on L2."""
    import trio

    node = Node(NodeConfig(serve_l1=False, l1_block_time=0.3, max_batch_bytes=20_000))
    try:
        oracle = Signer(KEYS[1])
        domain = node.chain.domain
        base = int(node.clock()) + 10
        assert node.batch_limits == (20_000, 4_096)
        for i in range(1_400):
            node.sequencer.send_oracle_price(oracle.oracle_price(domain, 1, 166_600 + i, base + i))
        node.sequencer.seal()
        head = node.chain.head.number
        assert head >= 6

        async def run() -> int:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node._l1_clock)
                landed = await node.post_batches()
                nursery.cancel_scope.cancel()
            return landed

        landed = trio.run(run)
        assert node.chain.safe_head == head
        infos = [node.chain.batch(i) for i in range(landed)]
        assert landed >= 6 and len({b.l1_block for b in infos}) < landed
        for info in infos:
            record = node.rollup.get_batch(info.index)
            assert record.state_root == node.chain.block(info.last_block).header.state_root
        assert node.rollup.latest_state_root() == node.chain.head.header.state_root
    finally:
        node.close()


def test_backoff_doubles_up_to_cap() -> None:
    from node.node import Backoff

    b = Backoff(0.5, 4.0)
    delays = [b.failed(RuntimeError("batch: deposit inclusion overdue")) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.to_json()["failures"] == 6 and "overdue" in b.to_json()["error"]
    b.succeeded()
    assert b.to_json() is None and b.ready()
