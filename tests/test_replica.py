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
    split_blocks,
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
    data = encode_batch(bbs)
    return PostedBatch(index, blocks[0].number, data, blocks[-1].header.state_root,
                       keccak(data), deposit_end)


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
        (replace(b, data_hash=keccak(b"x")), QUEUE, "data_hash"),
        (replace(b, batch_data=b.batch_data[:-3], data_hash=keccak(b.batch_data[:-3])), QUEUE,
         "truncated"),
        (replace(b, batch_data=b"", data_hash=keccak(b"")), QUEUE, "empty"),
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
    third = PostedBatch(2, 6, data, chain.head.header.state_root, keccak(data), 2)
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
        batch_commitment(split_blocks(batches[1].batch_data))  # the commitment's leaves
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


def test_step_roots_from_the_store_write_nothing() -> None:
    """The replica re-executes a batch on a scratch tree over its store: the
    same roots, and the store is untouched."""
    chain, batches = sample_chain()
    db = chain.db
    assert isinstance(db, MemoryDB)
    size = len(db)
    pre_root = chain.block(2).header.state_root
    steps = batch_steps([chain.block(n) for n in range(3, 6)])
    roots = step_roots(State(chain.tree.scratch(), pre_root), steps, [0, 4], DOMAIN)
    assert roots == [pre_root, batches[1].state_root]
    state = state_at_step(State(chain.tree.scratch(), pre_root), steps, 2, DOMAIN)
    assert state.root == chain.block(3).header.state_root
    assert state.account(BOB.address) == chain.state_at(3).account(BOB.address)
    assert len(db) == size


def test_chain_rollback_and_re_derive() -> None:
    from node.chain import BatchInfo

    chain, batches = sample_chain()
    head = chain.head
    chain.record_batch(BatchInfo(0, 1, 2, batches[0].state_root, ZERO_HASH, 1,
                                 ZERO_HASH, 2))
    chain.record_batch(BatchInfo(1, 3, 5, batches[1].state_root, ZERO_HASH, 2,
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


# ------------------------------------------------------------------ replica process

class ReplicaProcess:
    """``python -m node.cli replica`` on a free port, given only an L1 URL."""

    def __init__(self, l1_url: str, datadir: Path, log: Path, *extra: str) -> None:
        self.l1_url = l1_url
        self.datadir = datadir
        self.log_path = log
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "node.cli", "replica", "--l1-rpc", self.l1_url,
               "--port", str(self.port), "--datadir", str(self.datadir),
               "--poll-interval", "0.2", *self.extra]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._log.close()
                    raise RuntimeError(f"replica exited early:\n{self.log_path.read_text()}")
                try:
                    http.post(self.url, json={"jsonrpc": "2.0", "id": 1,
                                              "method": "eth_chainId", "params": []})
                    return
                except httpx.HTTPError:
                    time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"replica did not answer in {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self._log.close()


_HTTP = httpx.Client(timeout=30)  # one client: each new one loads the CA certs


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Any:
    yield
    _HTTP.close()


def rpc(url: str, method: str, *params: Any) -> Any:
    r = _HTTP.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": list(params)}).json()
    if "error" in r:
        raise RuntimeError(r["error"])
    return r["result"]


def settle(node_url: str, timeout: float = 60.0) -> int:
    """Wait until every node block is in a batch on L1; returns the batch count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = rpc(node_url, "l2_syncStatus")
        if s["pending_txs"] == 0 and s["safe_l2"]["number"] == s["unsafe_l2"]["number"] \
                and s["latest_batch"] is not None:
            return int(s["latest_batch"]["index"]) + 1
        time.sleep(0.2)
    raise TimeoutError("the node did not post every block")


def caught_up(replica_url: str, batches: int, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the replica derived ``batches`` batches; its sync status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = rpc(replica_url, "l2_syncStatus")
        if s["derived_batches"] >= batches:
            return s
        time.sleep(0.2)
    raise TimeoutError(f"replica did not reach batch {batches}: {s}")


def same_chain(node_url: str, replica_url: str, batches: int, accounts: list[str]) -> None:
    """Every batch matches (and equals the node's record), every block and
    account equals the node's."""
    last = 0
    for i in range(batches):
        mine = rpc(replica_url, "l2_getBatch", i)
        theirs = rpc(node_url, "l2_getBatch", i)
        assert mine["matches"] is True, mine
        mine.pop("status"), theirs.pop("status")
        assert mine == theirs
        last = int(mine["lastBlock"], 16)
    for n in range(last + 1):
        mine = rpc(replica_url, "l2_getBlockByNumber", hex(n), True)
        theirs = rpc(node_url, "l2_getBlockByNumber", hex(n), True)
        mine.pop("status"), theirs.pop("status")
        assert mine == theirs
    tag = hex(last)
    for a in accounts:
        assert rpc(replica_url, "l2_getAccount", a, tag) == rpc(node_url, "l2_getAccount", a, tag)
    assert rpc(replica_url, "l2_getMarkets", tag) == rpc(node_url, "l2_getMarkets", tag)


def traffic(node_url: str, l1_url: str, rounds: int, deposits: int = 2,
            list_market: bool = False, withdraw: bool = False) -> list[str]:
    """``deposits`` L1 deposits (maker, then taker), an oracle price, ``rounds``
    fills, optionally a ListMarket with a fill on it and a withdrawal;
    returns the accounts touched."""
    from l1_stub.client import connect
    from node.client import L2Client
    from node.wallet import deposit

    keys = dev_keys(6)
    admin, oracle, maker, taker = (Signer(keys[i]) for i in (0, 1, 3, 4))
    with L2Client(node_url) as c, connect(l1_url) as w3:
        for who in (maker, taker)[:deposits]:
            deposit(c, w3, who, 10**10)
        c.send_oracle_price(oracle, "ETH-USD", 166_600 + rounds)
        for i in range(rounds):
            c.send_order(maker, "ETH-USD", i % 2 == 0, 166_600 + i, 10_000)
            c.send_order(taker, "ETH-USD", i % 2 == 1, 166_600 + i, 10_000, "IOC")
        if list_market:
            from node.markets import list_market_params

            tx = admin.list_market(c.domain, list_market_tx(7, "SHIB-ETH", Scales(12, 0),
                                                            104_138_125))
            c.call("l2_sendListMarket", list_market_params(tx))
            c.send_order(maker, 7, False, 104_138_125, 5_000)
            c.send_order(taker, 7, True, 104_138_125, 5_000, "IOC")
        if withdraw:
            c.withdraw(taker, 10**6)
        fee = c.config["fee_account"]
    return ["0x" + maker.address.hex(), "0x" + taker.address.hex(), fee]


def refuses_another_genesis(l1_url: str, tmp_path: Path) -> None:
    """A genesis file whose root is not the Rollup's: the replica will not start."""
    from node.datadir import read_genesis_json
    from node.replica import Replica, ReplicaConfig, ReplicaError

    other = read_genesis_json(None)
    other["markets"][0]["takerFeePpm"] = 1
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    with pytest.raises(ReplicaError, match="pass the devnet's genesis file"):
        Replica(ReplicaConfig(l1_rpc=l1_url, genesis_path=str(path)))


def test_replica_process_derives_the_devnet_from_l1_alone(tmp_path: Path) -> None:
    node = DevnetProcess(None, tmp_path / "devnet.log")
    node.start()
    # one signature worker: batches prepared on a worker process (node.derive.prepare_batch)
    replica = ReplicaProcess(node.l1_url, tmp_path / "replica", tmp_path / "replica.log",
                             "--sig-workers", "1")
    try:
        accounts = traffic(node.url, node.l1_url, 6, list_market=True, withdraw=True)
        batches = settle(node.url)
        refuses_another_genesis(node.l1_url, tmp_path)
        replica.start()
        status = caught_up(replica.url, batches)
        assert status["mismatched_batches"] == [] and status["error"] is None
        same_chain(node.url, replica.url, batches, accounts)
        # read-only: writes and the book answer -32004
        for method in ("l2_sendOrder", "l2_sendWithdraw", "l2_getOrderBook"):
            r = _HTTP.post(replica.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                              "params": [{}]}).json()
            assert r["error"]["code"] == -32004 and "read-only replica" in r["error"]["message"]
        head = rpc(replica.url, "eth_blockNumber")

        # restart: it resumes from its datadir (head at once), then follows new batches
        replica.stop()
        traffic(node.url, node.l1_url, 3, deposits=0)
        replica.start()
        ready = [line for line in replica.log_path.read_text().splitlines()
                 if "derivnet replica ready" in line]
        assert f"derived L2 block {int(head, 16)}" in ready[-1]
        batches = settle(node.url)
        caught_up(replica.url, batches)
        same_chain(node.url, replica.url, batches, accounts)

        # L1 history replaced under the replica (a fresh devnet on the same L1
        # port: the Rollup at the same address, other batches and deposits):
        # it rolls back to the last batch L1 still has and derives the new ones
        node.stop()
        node = DevnetProcess(None, tmp_path / "devnet2.log")
        node.l1_port = int(replica.l1_url.rsplit(":", 1)[1])
        node.start()
        accounts = traffic(node.url, node.l1_url, 0, deposits=1)
        batches = settle(node.url)
        deadline = time.monotonic() + 120
        while True:
            status = rpc(replica.url, "l2_syncStatus")
            if status["rollbacks"] >= 1 and status["derived_batches"] == batches and \
                    status["latest_batch"]["stateRoot"] == rpc(node.url, "l2_getBatch",
                                                               batches - 1)["stateRoot"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        same_chain(node.url, replica.url, batches, accounts)
    finally:
        replica.stop()
        node.stop()


@pytest.mark.skipif(not SLOW, reason="set DERIVNET_SLOW=1 (the whole tape, ~2 min)")
def test_replica_matches_every_batch_of_the_tape(tmp_path: Path) -> None:
    from node.replay import ReplayOptions, run_replay

    node = DevnetProcess(None, tmp_path / "devnet.log")
    node.start()
    replica = ReplicaProcess(node.l1_url, tmp_path / "replica", tmp_path / "replica.log")
    try:
        summary = run_replay(ReplayOptions(tape=str(TAPE), rpc=node.url, progress=False))
        assert summary["fills"] == 1000 and summary["rootsMatch"]
        batches = settle(node.url)
        replica.start()
        status = caught_up(replica.url, batches, timeout=300)
        assert status["mismatched_batches"] == []
        for i in range(batches):
            mine = rpc(replica.url, "l2_getBatch", i)
            assert mine["matches"] is True
            assert mine["derivedStateRoot"] == rpc(node.url, "l2_getBatch", i)["derivedStateRoot"]
    finally:
        replica.stop()
        node.stop()
