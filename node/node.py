"""The devnet node: wires the embedded L1, the L2 chain, the sequencer, the
batcher and the JSON-RPC servers, and runs their loops in one trio nursery.

Loops (each a trio task):
- L1 clock: mines an L1 block every ``l1_block_time`` seconds;
- deposits: after each L1 block, includes new deposit queue entries in order;
- block builder: seals the pending L2 block every ``block_time`` seconds;
- batcher: every ``batch_interval`` seconds posts unposted blocks to L1 and
  moves the safe head when the batch is mined;
- JSON-RPC: L2 on ``port``, the embedded L1 on ``l1_port``.
L1 calls run in a worker thread (``trio.to_thread``) so that mining a large
batch does not stall RPC answers. The embedded L1 runs in a child process
(``l1_stub.process.L1Process``, serving ``l1_port`` itself);
``NodeConfig.l1_process=False`` keeps it in this process.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from node.chain import Chain
from node.crypto import ZERO_HASH
from node.db import KeyValueDB, LevelDB, MemoryDB
from node.eip712 import Domain
from node.genesis import Genesis, load_genesis
from node.rpc import L2Api, hexb, hexq, methods
from node.server import JsonRpcApp, serve_jsonrpc
from node.smt import SparseMerkleTree
from node.transactions import Deposit
from sequencer.batcher import DEFAULT_MAX_BATCH_BYTES, batch_info, plan_batch
from sequencer.sequencer import Sequencer

log = logging.getLogger("derivnet")


@dataclass
class NodeConfig:
    """Flags of ``derivnet devnet`` (times in seconds)."""

    datadir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8545
    l1_port: int = 8546
    block_time: float = 0.25
    batch_interval: float = 2.0
    l1_block_time: float = 1.0
    genesis_path: str | None = None
    max_block_txs: int = 5_000
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    preset: str = "devnet"
    challenge_window: int | None = None
    inclusion_window: int | None = None
    escape_delay: int | None = None
    serve_l1: bool = True
    # the L1 in a child process serving l1_port (l1_stub.process); False (or
    # serve_l1=False): an in-process EmbeddedL1, for tests that build a Node
    l1_process: bool = True
    censor_deposits: bool = False
    batcher_enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Node:
    """All devnet components of one process. Construct, then ``await run()``."""

    def __init__(self, config: NodeConfig) -> None:
        from l1_stub.chain import EmbeddedL1
        from l1_stub.client import Deployment, RollupClient, deploy
        from l1_stub.process import L1Process

        self.config = config
        self.genesis: Genesis = load_genesis(config.genesis_path)
        self.db: KeyValueDB
        if config.datadir:
            Path(config.datadir).mkdir(parents=True, exist_ok=True)
            self.db = LevelDB(os.path.join(config.datadir, "l2"))
        else:
            self.db = MemoryDB()
        l1_dir = os.path.join(config.datadir, "l1") if config.datadir else None
        self.l1: EmbeddedL1 | L1Process
        if config.l1_process and config.serve_l1 and not self._l1_kwargs():
            self.l1 = L1Process(host=config.host, port=config.l1_port, datadir=l1_dir,
                                chain_id=self.genesis.l1_chain_id)
        else:
            self.l1 = EmbeddedL1(chain_id=self.genesis.l1_chain_id, datadir=l1_dir,
                                 **self._l1_kwargs())
        keys = self.l1.dev_keys
        self.sequencer_key = keys[0]

        stored = Chain.stored_config(self.db)
        if stored is None:
            leaves = self.genesis.leaves()
            root = SparseMerkleTree(MemoryDB()).update(ZERO_HASH, leaves)
            windows = self._windows()
            dep = deploy(self.l1.w3, self.sequencer_key, "0x" + self.genesis.sequencer.hex(),
                         root, self.genesis.l2_chain_id, mine=self.l1.mine, **windows)
            stored = {
                **{k: v for k, v in windows.items()},
                "l1ChainId": self.genesis.l1_chain_id,
                "l2ChainId": self.genesis.l2_chain_id,
                "rollup": dep.rollup,
                "usdc": dep.usdc,
                "deployBlock": dep.deploy_block,
                "genesisStateRoot": hexb(root),
            }
            Chain.initialize(self.db, leaves, stored)
        self.deployment = Deployment(stored["usdc"], stored["rollup"], stored["deployBlock"],
                                     stored["l1ChainId"])
        if not self.l1.w3.eth.get_code(stored["rollup"]):
            raise RuntimeError(
                f"the L1 chain has no Rollup contract at {stored['rollup']}: the L2 store and "
                "the L1 chain do not belong together (start with an empty --datadir)"
            )
        self.rollup = RollupClient(self.l1.w3, self.deployment)
        domain = Domain(self.genesis.l2_chain_id, bytes.fromhex(stored["rollup"][2:]))
        self.chain = Chain(self.db, domain)
        self.sequencer = Sequencer(self.chain, self.clock, max_block_txs=config.max_block_txs)
        self.sequencer.l1_origin = self.l1.head()[0]
        from l1_stub.contracts import write_abis

        abi_target = Path(config.datadir) / "abi" if config.datadir else None
        self.abi_files = write_abis(abi_target)
        self.stored_config = stored
        self.finalized_batch_count = 0
        self._finalize_sent = 0
        self.last_batch_error: str | None = None
        self.l1_send_lock = trio.Lock()
        self.api = L2Api(self)
        self.app = JsonRpcApp(methods(self.api, self.devnet_methods()))
        self.started_at = time.time()

    def _windows(self) -> dict[str, int]:
        """challenge/inclusion windows and escape delay: the preset, then flags."""
        from l1_stub.client import PRESETS

        if self.config.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.config.preset!r}; one of {sorted(PRESETS)}")
        p = PRESETS[self.config.preset]
        c = self.config
        return {
            "challenge_window": p.challenge_window if c.challenge_window is None else c.challenge_window,
            "inclusion_window": p.inclusion_window if c.inclusion_window is None else c.inclusion_window,
            "escape_delay": p.escape_delay if c.escape_delay is None else c.escape_delay,
        }

    def _l1_kwargs(self) -> dict[str, Any]:
        return dict(self.config.extra.get("l1", {}))

    def clock(self) -> float:
        """L2 time: wall time plus the L1 warp offset (follows L1 time)."""
        return time.time() + self.l1.time_offset

    # -- loops -----------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_jsonrpc, self.app, self.config.host, self.config.port)
            from l1_stub.process import L1Process

            if self.config.serve_l1 and not isinstance(self.l1, L1Process):  # else the child serves
                from l1_stub.server import serve_l1

                await nursery.start(serve_l1, self.l1, self.config.host, self.config.l1_port)
            nursery.start_soon(self._l1_clock)
            nursery.start_soon(self._block_builder)
            nursery.start_soon(self._batcher)
            task_status.started()

    async def _l1_clock(self) -> None:
        await self.update_finality()
        while True:
            await trio.sleep(self.config.l1_block_time)
            await self.on_l1_block(await trio.to_thread.run_sync(self.l1.mine))

    async def on_l1_block(self, number: int) -> None:
        """After an L1 block: move the L1 origin, include deposits, finalize batches."""
        self.sequencer.l1_origin = number
        await self.include_deposits()
        await self.update_finality()

    async def update_finality(self) -> None:
        """Proposer duty: finalize every batch whose challenge window has passed
        (finalizeBatch is open to anyone), and track the finalized count."""
        rollup = self.rollup
        count = await trio.to_thread.run_sync(rollup.finalized_batch_count)
        self.finalized_batch_count = count
        total = await trio.to_thread.run_sync(rollup.batch_count)
        frozen = await trio.to_thread.run_sync(rollup.frozen)
        index = max(count, self._finalize_sent)
        async with self.l1_send_lock:
            while not frozen and index < total:
                if not await trio.to_thread.run_sync(rollup.is_finalizable, index):
                    break
                await trio.to_thread.run_sync(rollup.finalize_batch, self.sequencer_key, index)
                index += 1
                self._finalize_sent = index

    async def include_deposits(self) -> int:
        """Include every new L1 deposit queue entry in the pending block, in order
        (none while ``censor_deposits`` is set: a devnet knob to show forced inclusion)."""
        if self.config.censor_deposits:
            return 0
        next_index = self.chain.state.system.next_deposit
        count = await trio.to_thread.run_sync(self.rollup.deposit_count)
        if count <= next_index:
            return 0
        entries = await trio.to_thread.run_sync(self.rollup.deposits, next_index, count)
        for e in entries:
            if e.index != self.chain.state.system.next_deposit:
                continue
            self.sequencer.include_deposit(
                Deposit(e.index, bytes.fromhex(e.account[2:]), e.amount)
            )
        return len(entries)

    async def _block_builder(self) -> None:
        while True:
            await trio.sleep(self.config.block_time)
            self.sequencer.seal()

    async def _batcher(self) -> None:
        await self.sync_batches()
        while True:
            await trio.sleep(self.config.batch_interval)
            if not self.config.batcher_enabled:
                continue
            try:
                await self.post_batch()
                self.last_batch_error = None
            except Exception as exc:  # keep the devnet up; the next interval retries
                self.last_batch_error = str(exc)
                log.warning("batch submission failed: %s", exc)

    async def sync_batches(self) -> None:
        """Record batches that are on L1 but not in the store (after a crash)."""
        count = await trio.to_thread.run_sync(self.rollup.batch_count)
        latest = self.chain.latest_batch()
        start = latest.index + 1 if latest else 0
        subs = []
        if start < count:
            subs = await trio.to_thread.run_sync(self.rollup.batch_submissions)
        from node.chain import BatchInfo

        for s in subs:
            if s.index < start:
                continue
            self.chain.record_batch(BatchInfo(
                s.index, s.first_block, s.first_block + s.block_count - 1, s.state_root,
                s.tx_root, s.l1_block, s.tx_hash, s.deposit_end))

    async def post_batch(self) -> int | None:
        """Post the next batch and wait until it is mined; returns its index."""
        from l1_stub.client import TransactionReverted

        first = self.chain.safe_head + 1
        planned = plan_batch(self.chain, first, self.config.max_batch_bytes)
        if planned is None:
            return None
        async with self.l1_send_lock:
            tx = await trio.to_thread.run_sync(
                self.rollup.submit_batch, self.sequencer_key, planned.data, planned.state_root,
                planned.deposit_end,
            )
        receipt = None
        while receipt is None:
            await trio.sleep(0.05)
            receipt = await trio.to_thread.run_sync(self._receipt, tx)
        if receipt["status"] != 1:
            from l1_stub.client import revert_reason

            reason = await trio.to_thread.run_sync(revert_reason, self.l1.w3, receipt)
            raise TransactionReverted(receipt, reason)
        index = await trio.to_thread.run_sync(self.rollup.batch_count) - 1
        info = batch_info(planned, index, int(receipt["blockNumber"]), bytes(tx))
        self.chain.record_batch(info)
        self.gas_used_total += int(receipt["gasUsed"])
        self.calldata_bytes_total += len(planned.data)
        return index

    gas_used_total: int = 0
    calldata_bytes_total: int = 0

    def _receipt(self, tx: bytes) -> Any:
        from web3.exceptions import TransactionNotFound

        try:
            r = self.l1.w3.eth.get_transaction_receipt(tx)
        except TransactionNotFound:
            return None
        return r if r.get("blockNumber") is not None else None

    # -- views -----------------------------------------------------------
    def finalized_head(self) -> int:
        """Highest L2 block whose batch the Rollup contract has marked final."""
        if self.finalized_batch_count == 0:
            return 0
        info = self.chain.batch(self.finalized_batch_count - 1)
        return info.last_block if info else 0

    def batch_status(self, index: int) -> str:
        return "finalized" if index < self.finalized_batch_count else "safe"

    # -- devnet controls -------------------------------------------------
    def devnet_methods(self) -> dict[str, Any]:
        """``devnet_`` JSON-RPC methods (anvil-like time and mining control)."""
        from node.rpc import parse_int

        def increase_time(seconds: Any) -> str:
            """Warp L1 (and so L2) time forward; returns the total offset (hex s)."""
            n = parse_int(seconds, "seconds")
            if n < 0:
                from node.rpc import bad_params

                raise bad_params("seconds must be >= 0")
            return hexq(self.l1.increase_time(n))

        def mine(blocks: Any = 1) -> str:
            """Mine L1 blocks now; returns the L1 head number (hex)."""
            n = parse_int(blocks, "blocks")
            if not 1 <= n <= 10_000:
                from node.rpc import bad_params

                raise bad_params("blocks must be 1..10000")
            return hexq(self.l1.mine(n))

        def set_censor_deposits(on: Any) -> bool:
            """Make the sequencer ignore (true) or include (false) L1 deposits."""
            self.config.censor_deposits = bool(on)
            return self.config.censor_deposits

        def set_batcher(on: Any) -> bool:
            """Pause (false) or resume (true) batch submission to L1."""
            self.config.batcher_enabled = bool(on)
            return self.config.batcher_enabled

        return {
            "devnet_increaseTime": increase_time,
            "devnet_mine": mine,
            "devnet_setCensorDeposits": set_censor_deposits,
            "devnet_setBatcher": set_batcher,
        }

    def block_status(self, number: int) -> str:
        if number <= self.finalized_head():
            return "finalized"
        if number <= self.chain.safe_head:
            return "safe"
        return "unsafe"

    def _l2_ref(self, number: int) -> dict[str, Any]:
        b = self.chain.block(number)
        return {
            "hash": hexb(b.hash),
            "number": number,
            "parentHash": hexb(b.header.parent_hash),
            "timestamp": b.header.timestamp,
            "l1origin": {"number": b.header.l1_origin},
        }

    def sync_status(self) -> dict[str, Any]:
        """Shaped like optimism_syncStatus (block refs with decimal numbers)."""
        number, ts = self.l1.head()
        l1_block = self.l1.w3.eth.get_block(number)
        l1_ref = {"hash": hexb(bytes(l1_block["hash"])), "number": number,
                  "parentHash": hexb(bytes(l1_block["parentHash"])), "timestamp": ts}
        latest = self.chain.latest_batch()
        window = int(self.stored_config.get("challenge_window", 0))
        batch = None
        if latest is not None:
            batch = latest.to_json()
            record = self.rollup.get_batch(latest.index)
            batch["l1Timestamp"] = record.l1_timestamp
            batch["finalizableAt"] = record.l1_timestamp + window
            batch["secondsToFinality"] = max(0, record.l1_timestamp + window - ts)
            batch["status"] = self.batch_status(latest.index)
        return {
            "current_l1": l1_ref,
            "head_l1": l1_ref,
            "safe_l1": l1_ref,
            # The embedded L1 has instant finality (one sequencer, no reorgs).
            "finalized_l1": l1_ref,
            "unsafe_l2": self._l2_ref(self.chain.head.number),
            "safe_l2": self._l2_ref(self.chain.safe_head),
            "finalized_l2": self._l2_ref(self.finalized_head()),
            "pending_txs": len(self.chain.pending_txs),
            "deposits_included": self.chain.head_state().system.next_deposit,
            "latest_batch": batch,
            "finalized_batches": self.finalized_batch_count,
            "challenge_window": window,
            "l1_time": ts,
            "frozen": self.rollup.frozen(),
            "batcher_error": self.last_batch_error,
        }

    def rollup_config_json(self) -> dict[str, Any]:
        """Shaped like optimism_rollupConfig, plus derivnet's addresses."""
        g = self.genesis
        return {
            "genesis": {
                "l1": {"number": self.deployment.deploy_block},
                "l2": {"number": 0, "hash": hexb(self.chain.block(0).hash)},
                "state_root": hexb(self.chain.block(0).header.state_root),
            },
            "l1_chain_id": g.l1_chain_id,
            "l2_chain_id": g.l2_chain_id,
            "block_time": self.config.block_time,
            "batch_interval": self.config.batch_interval,
            "l1_block_time": self.config.l1_block_time,
            "max_batch_bytes": self.config.max_batch_bytes,
            "challenge_window": self.stored_config.get("challenge_window"),
            "inclusion_window": self.stored_config.get("inclusion_window"),
            "escape_delay": self.stored_config.get("escape_delay"),
            "rollup_address": self.deployment.rollup,
            "usdc_address": self.deployment.usdc,
            "abi_dir": str(next(iter(self.abi_files.values())).parent),
            "abi_files": {name: str(path) for name, path in self.abi_files.items()},
            "l1_rpc_url": f"http://{self.config.host}:{self.config.l1_port}",
            "sequencer": hexb(g.sequencer),
            "oracle": hexb(g.oracle),
            "fee_account": hexb(g.fee_account),
            "markets": [{"id": m.market.id, "symbol": m.symbol} for m in g.markets],
        }

    def close(self) -> None:
        self.db.close()
        self.l1.close()


__all__ = ["Node", "NodeConfig", "hexq"]
