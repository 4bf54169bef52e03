"""The devnet node: wires the embedded L1, the L2 chain, the sequencer, the
batcher and the JSON-RPC servers, and runs their loops in one trio nursery.

Loops (each a trio task):
- L1 clock: mines an L1 block every ``l1_block_time`` seconds (an external
  node, ``l1_rpc``: only if it does not automine, l1_stub.external);
- deposits: after each L1 block, includes new deposit queue entries in order;
- block builder: seals the pending L2 block every ``block_time`` seconds;
- batcher: posts each full batch of unposted blocks as soon as it is sealed
  and the rest every ``batch_interval`` seconds (several batches per L1
  block when it is behind) and moves the safe head
  when the batch is mined; posts an empty heartbeat block when the chain
  is idle, so the Rollup never sees the escape delay pass;
- JSON-RPC: L2 on ``port``, the embedded L1 on ``l1_port``.
L1 calls run in a worker thread (``trio.to_thread``) so that mining a large
batch does not stall RPC answers. The L1 views the node needs (head,
batch counts, frozen...) are read once per L1 block into ``l1_snapshot``.
Every loop survives L1 errors: it logs, keeps the error visible in
``l2_syncStatus`` (``batcher_error``, ``l1_errors``) and retries with
exponential backoff. The embedded L1 runs in a child process
(``l1_stub.process.L1Process``, serving ``l1_port`` itself);
``NodeConfig.l1_process=False`` keeps it in this process.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from node.chain import Chain
from node.crypto import ZERO_HASH
from node.db import KeyValueDB, LevelDB, MemoryDB
from node.eip712 import Domain
from node.datadir import (
    DISPUTE_KEYS,
    DatadirMismatch,
    Requested,
    check_restart,
    read_genesis_json,
    resolve_windows,
)
from node.genesis import Genesis, parse_genesis
from node.rpc import L2Api, hexb, hexq, methods
from node.server import JsonRpcApp, serve_jsonrpc
from node.smt import SparseMerkleTree
from node.batch import decode_batch
from node.state import State
from node.transactions import Deposit
from node.derive import batch_steps
from l1_stub.process import L1ProcessExited
from prover.trace import BatchTrace, Fault
from sequencer.defender import Defender
from sequencer.funding_clock import FundingClock, resolve_schedule
from sequencer.batcher import BLOCK_HEADER_BYTES, batch_byte_cap, batch_info, plan_batch
from sequencer.sequencer import Sequencer

log = logging.getLogger("derivnet")

try:  # web3's process_receipt error modes
    from web3.logs import DISCARD as _DISCARD
except ImportError:  # pragma: no cover
    _DISCARD = "discard"

# most batches sent into one L1 block (each full one has a ~9.7M gas limit)
MAX_BATCHES_PER_L1_BLOCK = 4
# the batcher checks this often (at most every block time) for a full batch to post
BATCHER_POLL_SECONDS = 0.25
# a heartbeat batch is due after this share of the escape delay without a batch
HEARTBEAT_FRACTION = (2, 3)


class L1Lost(RuntimeError):
    """The devnet's in-memory L1 process died: its chain, and the Rollup's
    state with it, cannot come back, so the devnet stops."""


class Backoff:
    """Retry bookkeeping of one background task: after ``failures`` failures
    in a row the task waits ``min(cap, base * 2**(failures-1))`` seconds
    (``retry_at``, monotonic); ``error`` is the last failure's message."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(cap, base)
        self.failures = 0
        self.error: str | None = None
        self.retry_at = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns the delay before the next try (s)."""
        self.failures += 1
        self.error = str(exc) or type(exc).__name__
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.error = None
        self.retry_at = 0.0

    def to_json(self) -> dict[str, Any] | None:
        if self.error is None:
            return None
        return {"error": self.error, "failures": self.failures,
                "retryIn": round(max(0.0, self.retry_at - time.monotonic()), 3)}


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
    # upper bound on batch data (bytes); never above the Rollup's MAX_BATCH_BYTES
    max_batch_bytes: int | None = None
    preset: str | None = None  # None: the datadir's, or devnet for a new one
    challenge_window: int | None = None
    inclusion_window: int | None = None
    escape_delay: int | None = None
    # dispute parameters (None: the datadir's, or the preset's for a new one)
    dissection_degree: int | None = None
    clock: int | None = None  # seconds per party
    challenger_bond: int | None = None  # wei
    proposer_bond: int | None = None  # wei
    max_drift: int | None = None  # seconds
    sequencer_key: bytes | None = None  # None: the dev account that genesis names
    devnet_controls: bool = True  # devnet_* on L2, time warps on L1
    serve_l1: bool = True
    # the L1 in a child process serving l1_port (l1_stub.process); False (or
    # serve_l1=False): an in-process EmbeddedL1, for tests that build a Node
    l1_process: bool = True
    l1_rpc: str | None = None  # an external Ethereum node as the L1 (l1_stub.external)
    l1_rollup: str | None = None  # with l1_rpc: attach to this Rollup instead of deploying
    censor_deposits: bool = False
    faulty_proposer: str | None = None  # a prover.trace.Fault kind: the next batch's root is wrong
    silent_defender: bool = False  # never answer a dispute (loses every game on its clock)
    batcher_enabled: bool = True
    # funding clock (sequencer/funding_clock.py), seconds of L2 time; None: the
    # preset's (devnet 1 / 10, mainnet 60 / 3600); 0: off
    funding_sample_interval: int | None = None
    funding_interval: int | None = None
    oracle_key: bytes | None = None  # None: the dev account that genesis names as oracle
    # risk engine (sequencer/risk_engine.py): liquidations, backstop, deleverage
    risk_engine: bool = True
    backstop_key: bytes | None = None  # None: the sequencer's key (dev account 0)
    extra: dict[str, Any] = field(default_factory=dict)


class Node:
    """All devnet components of one process. Construct, then ``await run()``."""

    def __init__(self, config: NodeConfig) -> None:
        from l1_stub.chain import EmbeddedL1
        from l1_stub.client import Deployment, RollupClient, deploy
        from l1_stub.external import ExternalL1
        from l1_stub.process import L1Process

        self.config = config
        self.db: KeyValueDB
        if config.datadir:
            Path(config.datadir).mkdir(parents=True, exist_ok=True)
            self.db = LevelDB(os.path.join(config.datadir, "l2"))
        else:
            self.db = MemoryDB()
        try:
            stored = Chain.stored_config(self.db)
            genesis_json = self._resolve_genesis(stored)
        except BaseException:
            self.db.close()
            raise
        self.genesis: Genesis = parse_genesis(genesis_json)
        l1_dir = os.path.join(config.datadir, "l1") if config.datadir else None
        self.l1: EmbeddedL1 | L1Process | ExternalL1
        if config.l1_rpc:
            l1_dir = None  # the external node keeps its own chain
            self.l1 = ExternalL1(config.l1_rpc, chain_id=self.genesis.l1_chain_id,
                                 key=config.sequencer_key)
        elif config.l1_process and config.serve_l1 and not self._l1_kwargs():
            extra = () if config.devnet_controls else ("--no-devnet-controls",)
            self.l1 = L1Process(host=config.host, port=config.l1_port, datadir=l1_dir,
                                chain_id=self.genesis.l1_chain_id, extra_args=extra)
        else:
            self.l1 = EmbeddedL1(chain_id=self.genesis.l1_chain_id, datadir=l1_dir,
                                 **self._l1_kwargs())
            self.l1.devnet_controls = config.devnet_controls
        try:
            self.sequencer_key = self._sequencer_key()
            if stored is None and l1_dir is not None and self.l1.head()[0] > 0:
                raise DatadirMismatch(
                    f"{l1_dir} holds an L1 chain (head block {self.l1.head()[0]}) but the L2 "
                    "store beside it is empty: it was removed, or the first start crashed "
                    "before writing genesis; start with an empty --datadir"
                )
        except BaseException:
            self.close()
            raise

        if stored is None:
            leaves = self.genesis.leaves()
            root = SparseMerkleTree(MemoryDB()).update(ZERO_HASH, leaves)
            if config.l1_rollup:  # attach to a Rollup already on the external L1
                from l1_stub.external import attach

                try:
                    dep, windows = attach(self.l1.w3, config.l1_rollup,
                                          sequencer="0x" + self.genesis.sequencer.hex(),
                                          genesis_state_root=root,
                                          l2_chain_id=self.genesis.l2_chain_id,
                                          requested=vars(self._requested(None)))
                except BaseException:
                    self.close()
                    raise
            else:
                windows = resolve_windows(self._requested(None))
                self._fund_sequencer()
                dep = deploy(self.l1.w3, self.sequencer_key, "0x" + self.genesis.sequencer.hex(),
                             root, self.genesis.l2_chain_id, mine=self.l1.mine, **windows)
                if config.risk_engine:
                    self._fund_backstop(dep)
            stored = {
                **{k: v for k, v in windows.items()},
                "genesis": genesis_json,
                "preset": config.preset or "devnet",
                "l1ChainId": self.genesis.l1_chain_id,
                "l2ChainId": self.genesis.l2_chain_id,
                "rollup": dep.rollup,
                "usdc": dep.usdc,
                "disputeGame": dep.dispute_game,
                "deployBlock": dep.deploy_block,
                "genesisStateRoot": hexb(root),
            }
            Chain.initialize(self.db, leaves, stored)
        self.deployment = Deployment(stored["usdc"], stored["rollup"], stored["deployBlock"],
                                     stored["l1ChainId"], stored.get("disputeGame", ""))
        if not self.l1.w3.eth.get_code(stored["rollup"]):
            raise RuntimeError(
                f"the L1 chain has no Rollup contract at {stored['rollup']}: the L2 store and "
                "the L1 chain do not belong together (start with an empty --datadir)"
            )
        self.rollup = RollupClient(self.l1.w3, self.deployment)
        self.batch_limits = self._batch_limits()
        domain = Domain(self.genesis.l2_chain_id, bytes.fromhex(stored["rollup"][2:]))
        self.chain = Chain(self.db, domain)
        self.l1_snapshot = self.rollup.snapshot()
        self.sequencer = Sequencer(self.chain, self.clock, max_block_txs=config.max_block_txs,
                                   max_block_bytes=self.batch_limits[0],
                                   max_block_steps=self.batch_limits[1])
        self.sequencer.l1_origin = self.l1_snapshot.number
        self.sequencer.frozen = self.l1_snapshot.frozen
        self.l1_origin_time = self.l1_snapshot.timestamp
        try:
            self.funding_clock = self._funding_clock(stored.get("preset") or "devnet")
        except BaseException:
            self.close()
            raise
        self.funding_retry = Backoff(1.0, 30.0)
        from sequencer.risk_engine import RiskEngine

        self.risk_engine = (RiskEngine(self.sequencer, self._backstop_key())
                            if config.risk_engine else None)
        self.risk_retry = Backoff(0.5, 30.0)
        from l1_stub.contracts import write_abis

        abi_target = Path(config.datadir) / "abi" if config.datadir else None
        self.abi_files = write_abis(abi_target)
        self.stored_config = stored
        # read at start, so finality never reads lower after a restart than before it
        self.finalized_batch_count = self.l1_snapshot.finalized_batch_count
        self._finalize_sent = (-1, 0)  # (L1 head when sent, next index)
        self.batcher_retry = Backoff(config.batch_interval,
                                     min(30.0, 8 * config.batch_interval))
        self.l1_retry = {name: Backoff(config.l1_block_time, min(30.0, 8 * config.l1_block_time))
                         for name in ("mine", "snapshot", "deposits", "finalize", "disputes")}
        self._last_batch_l1_time = 0  # L1 timestamp of the last batch this node landed
        self._block_sizes: dict[int, tuple[int, int]] = {}  # unposted: (batch bytes, steps)
        self.heartbeats = 0
        # dishonest proposer on demand (devnet_injectFault, --faulty-proposer):
        # (kind, from step) armed for the next batch with an applicable step;
        # the wrong traces posted, by batch index, for the defender
        self.armed_fault: tuple[Fault, int] | None = (
            (Fault.parse(config.faulty_proposer), 0) if config.faulty_proposer else None)
        self.fault_traces: dict[int, BatchTrace] = {}
        self._faults_sent: dict[int, BatchTrace] = {}  # by first L2 block, until landed
        self.l1_send_lock = trio.Lock()
        self.api = L2Api(self)
        from node.streams import StreamHub

        self.streams = StreamHub(self)
        self.sequencer.on_block = self.streams.on_block
        if self.risk_engine is not None:
            engine, streams = self.risk_engine, self.streams

            def on_block(block: Any) -> None:
                engine.on_block(block)
                streams.on_block(block)

            self.sequencer.on_block = on_block
        from node.risk_view import risk_methods

        self.app = JsonRpcApp(methods(self.api, {**self.devnet_methods(),
                                                 **self.streams.methods(),
                                                 **risk_methods(self)}), self.streams)
        from sequencer.intake import SignaturePrefetch

        self.prefetch = SignaturePrefetch(domain)  # batches' signatures on worker processes
        self.app.prepare_batch = self.prefetch.prefetch
        from sequencer.commit import GroupCommit

        self.commit = GroupCommit(self.sequencer)  # journal group commit, on a datadir
        self.app.commit = self.commit
        self.started_at = time.time()

    def _requested(self, genesis_json: dict[str, Any] | None) -> Requested:
        c = self.config
        return Requested(genesis_json, c.preset, c.challenge_window, c.inclusion_window,
                         c.escape_delay, c.dissection_degree, c.clock, c.challenger_bond,
                         c.proposer_bond, c.max_drift)

    def _resolve_genesis(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        """The genesis JSON to run: --genesis, else the datadir's, else the
        packaged default. On a restart, refuse flags that differ from the
        datadir's (DatadirMismatch)."""
        given = read_genesis_json(self.config.genesis_path) if self.config.genesis_path else None
        if stored is None:
            return given if given is not None else read_genesis_json(None)
        check_restart(stored, self._requested(given))
        if "genesis" in stored:
            return dict(stored["genesis"])
        return given if given is not None else read_genesis_json(None)

    def _sequencer_key(self) -> bytes:
        """The key that signs batches: --sequencer-key, else the dev account
        genesis names as sequencer. Raises ValueError if neither fits."""
        from node.crypto import address_of

        want = self.genesis.sequencer
        key = self.config.sequencer_key
        if key is not None:
            if address_of(key) != want:
                raise ValueError(
                    f"--sequencer-key{' (--l1-key)' if self.config.l1_rpc else ''} is for "
                    f"0x{address_of(key).hex()}, but genesis names "
                    f"0x{want.hex()} as the sequencer"
                )
            return key
        for k in self.l1.dev_keys:
            if address_of(k) == want:
                return k
        raise ValueError(
            f"genesis names 0x{want.hex()} as the sequencer, which is not a dev account: "
            "pass its key with --sequencer-key"
        )

    def _funding_clock(self, preset: str) -> FundingClock:
        """The funding clock of the flags (or the datadir's preset), signing
        with --oracle-key, else the dev account genesis names as oracle (none
        if it is not one: ticks are off). Raises ValueError for a key that is
        not the state's oracle or a bad schedule."""
        from node.crypto import address_of

        c = self.config
        schedule = resolve_schedule(preset, c.funding_sample_interval, c.funding_interval)
        oracle = self.chain.state.system.oracle
        key = c.oracle_key
        if key is not None and address_of(key) != oracle:
            raise ValueError(f"--oracle-key is for 0x{address_of(key).hex()}, but the state "
                             f"names 0x{oracle.hex()} as the oracle")
        if key is None:
            key = next((k for k in self.l1.dev_keys if address_of(k) == oracle), None)
        return FundingClock(self.sequencer, self.clock, key, schedule)

    BACKSTOP_DEPOSIT = 1_000_000 * 10**6
    """USDC base units the backstop liquidator gets at devnet start (1,000,000 USDC)."""

    def _backstop_key(self) -> bytes:
        """--backstop-key, else the sequencer's key (the devnet's dev account 0)."""
        return self.config.backstop_key or self.sequencer_key

    def _fund_backstop(self, dep: Any) -> None:
        """Fund the backstop liquidator on a new devnet as the scripts fund
        dev accounts: USDC faucet, approve, ``Rollup.deposit`` on L1 (its
        deposit is the first of the L1 deposit queue); L1 ether first if
        the key is not a dev account."""
        from l1_stub.client import RollupClient
        from node.crypto import address_of

        key = self._backstop_key()
        w3 = self.l1.w3
        address = w3.to_checksum_address("0x" + address_of(key).hex())
        if w3.eth.get_balance(address) < 10**18:
            funder = self.l1.dev_accounts[0] if hasattr(self.l1, "dev_accounts") \
                else w3.eth.accounts[0]
            w3.eth.send_transaction({"from": funder, "to": address, "value": 10 * 10**18})
            self.l1.mine()
        rollup = RollupClient(w3, dep)
        amount = self.BACKSTOP_DEPOSIT
        for send in (lambda: rollup.faucet(key, amount), lambda: rollup.approve(key, amount),
                     lambda: rollup.deposit(key, address, amount)):
            tx = send()
            self.l1.mine()
            if w3.eth.get_transaction_receipt(tx)["status"] != 1:
                raise RuntimeError("funding the backstop liquidator on L1 failed")

    def _fund_sequencer(self) -> None:
        """Give a non-dev sequencer account L1 ether for gas (devnet faucet;
        on an external L1, --l1-rpc, the key brings its own ether)."""
        from node.crypto import address_of

        if self.config.l1_rpc:
            return
        address = "0x" + address_of(self.sequencer_key).hex()
        w3 = self.l1.w3
        if w3.eth.get_balance(w3.to_checksum_address(address)) >= 10**20:
            return
        funder = self.l1.dev_accounts[0] if hasattr(self.l1, "dev_accounts") else w3.eth.accounts[0]
        w3.eth.send_transaction({"from": funder, "to": w3.to_checksum_address(address),
                                 "value": 1000 * 10**18})
        self.l1.mine()

    def _batch_limits(self) -> tuple[int, int]:
        """(bytes, steps) one batch carries: the Rollup's MAX_BATCH_BYTES and
        MAX_STEPS, ``max_batch_bytes`` if configured lower, and what fits in
        one L1 block's gas limit."""
        gas_limit = int(self.l1.w3.eth.get_block("latest")["gasLimit"])
        size, source = batch_byte_cap(self.rollup.max_batch_bytes(), gas_limit,
                                      self.config.max_batch_bytes)
        if source == "gas":
            log.warning("L1 block gas limit %d: batches capped at %d bytes (below the "
                        "Rollup's MAX_BATCH_BYTES)", gas_limit, size)
        return size, self.rollup.max_steps()

    @property
    def last_batch_error(self) -> str | None:
        """The batcher's last error (None once a batch lands again)."""
        return self.batcher_retry.error

    def _l1_kwargs(self) -> dict[str, Any]:
        return dict(self.config.extra.get("l1", {}))

    def clock(self) -> float:
        """L2 time: wall time plus the L1 warp offset (follows L1 time), never
        behind the L1 origin's timestamp (unix s)."""
        return max(time.time() + self.l1.time_offset, self.l1_origin_time)

    l1_origin_time: int = 0

    # -- loops -----------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if isinstance(self.db, LevelDB):
                await nursery.start(self.commit.run)
            await nursery.start(serve_jsonrpc, self.app, self.config.host, self.config.port)
            from l1_stub.chain import EmbeddedL1

            if self.config.serve_l1 and isinstance(self.l1, EmbeddedL1):  # else it serves itself
                from l1_stub.server import serve_l1

                await nursery.start(serve_l1, self.l1, self.config.host, self.config.l1_port)
            nursery.start_soon(self._l1_clock)
            nursery.start_soon(self._block_builder)
            nursery.start_soon(self._start_prefetch)
            nursery.start_soon(self._batcher)
            nursery.start_soon(self.funding_clock.run, self.funding_retry)
            if self.risk_engine is not None:
                nursery.start_soon(self.risk_engine.run, self.risk_retry)
            task_status.started()

    async def _l1_clock(self) -> None:
        await self.on_l1_block(None)
        mine = self.l1_retry["mine"]
        while True:
            await trio.sleep(self.config.l1_block_time)
            if not mine.ready():
                continue
            try:
                number = await trio.to_thread.run_sync(self._l1_step)
            except L1ProcessExited as exc:
                await self._l1_process_exited(exc)
                continue
            except Exception as exc:  # keep the devnet up; retry with backoff
                log.warning("L1 mining failed (retry in %.1f s): %s", mine.failed(exc), exc)
                continue
            mine.succeeded()
            await self.on_l1_block(number)

    async def _l1_process_exited(self, exc: L1ProcessExited) -> None:
        """The embedded L1's process died (kill -9, a crash). On a datadir
        its chain survives: start a new process from it (the batcher re-sends
        what was pending). In memory the L1 chain is gone, and with it the
        Rollup's state: raise L1Lost, which stops the devnet."""
        if getattr(self.l1, "datadir", None) is None:
            raise L1Lost(f"{exc}; an in-memory L1 is gone with its process, so the devnet "
                         "stops (run with --datadir to keep the L1 across a crash)") from None
        mine = self.l1_retry["mine"]
        log.warning("%s; restarting it from its datadir", exc)
        try:
            await trio.to_thread.run_sync(self.l1.restart)
        except Exception as again:  # noqa: BLE001 - retry with backoff, keep the L2 up
            log.warning("restarting the L1 process failed (retry in %.1f s): %s",
                        mine.failed(again), again)
            return
        log.warning("the L1 process is back (pid %d)", self.l1.pid)
        mine.succeeded()

    async def _start_prefetch(self) -> None:
        try:
            await trio.to_thread.run_sync(self.prefetch.start, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - without workers the sequencer recovers itself
            log.warning("signature workers did not start: %r", exc)

    def _l1_step(self) -> int:
        """One L1 clock step: mine a block (an external node: only if it
        does not automine, see ExternalL1.tick); returns the L1 head number."""
        from l1_stub.external import ExternalL1

        return self.l1.tick() if isinstance(self.l1, ExternalL1) else self.l1.mine()

    async def _guarded(self, name: str, step: Any) -> None:
        """Run one L1 duty ``step`` (an async callable); on an error log it,
        keep it in ``l1_errors`` and skip the duty until its backoff passes."""
        retry = self.l1_retry[name]
        if not retry.ready():
            return
        try:
            await step()
        except Exception as exc:
            delay = retry.failed(exc)
            log.warning("L1 %s failed (%d in a row, retry in %.1f s): %s",
                        name, retry.failures, delay, exc)
        else:
            retry.succeeded()

    async def on_l1_block(self, number: int | None) -> None:
        """After an L1 block: refresh the L1 snapshot, move the L1 origin,
        include deposits, finalize batches. Each duty survives L1 errors."""
        await self._guarded("snapshot", self.refresh_l1)
        await self._guarded("snapshot", self.check_deletions)
        await self._guarded("deposits", self.include_deposits)
        await self._guarded("finalize", self.update_finality)
        await self._guarded("disputes", self.defend)

    async def refresh_l1(self) -> None:
        """Read the L1 snapshot (head and Rollup views) once for this L1 block."""
        snap = await trio.to_thread.run_sync(self.rollup.snapshot)
        self.l1_snapshot = snap
        self.finalized_batch_count = snap.finalized_batch_count
        self.sequencer.l1_origin = snap.number
        self.l1_origin_time = snap.timestamp
        if snap.frozen and not self.sequencer.frozen:
            log.warning("the Rollup is frozen: the sequencer refuses new orders and withdrawals")
        self.sequencer.frozen = snap.frozen

    async def check_deletions(self) -> None:
        """Recovery after a lost dispute (docs/protocol.md "Disputes"): if L1
        holds fewer batches than the store, the later ones were deleted; the
        store forgets them, so their blocks are unsafe again and the batcher
        posts them anew from the Rollup's ``next_l2_block``. The node's own
        blocks were executed honestly (a faulty proposer only posts a wrong
        root), so re-executing them gives the same blocks: they keep their
        numbers, hashes and receipts."""
        latest = self.chain.latest_batch()
        if latest is None or self.l1_snapshot.batch_count > latest.index:
            return  # nothing deleted (no L1 call on this path)
        async with self.l1_send_lock:
            count = await trio.to_thread.run_sync(self.rollup.batch_count)
            latest = self.chain.latest_batch()
            if latest is None or count > latest.index:
                return  # landed after the snapshot
            gone = self.chain.rollback_batches(count)
        for info in gone:
            self.fault_traces.pop(info.index, None)
        if gone:
            self.batches_deleted += len(gone)
            log.warning("batches %d..%d were deleted on L1 (a lost dispute): L2 blocks %d..%d are "
                        "unsafe again and will be posted anew", gone[0].index, gone[-1].index,
                        gone[0].first_block, gone[-1].last_block)

    batches_deleted: int = 0

    async def update_finality(self) -> None:
        """Proposer duty: finalize every batch whose challenge window has passed
        (finalizeBatch is open to anyone), and track the finalized count."""
        rollup = self.rollup
        snap = self.l1_snapshot
        self.finalized_batch_count = snap.finalized_batch_count
        sent_at, sent_next = self._finalize_sent
        index = snap.finalized_batch_count
        if sent_at == snap.number:  # already sent into this pending block
            index = max(index, sent_next)
        async with self.l1_send_lock:
            while not snap.frozen and index < snap.batch_count:
                if not await trio.to_thread.run_sync(rollup.is_finalizable, index):
                    break
                await trio.to_thread.run_sync(rollup.finalize_batch, self.sequencer_key, index)
                index += 1
                self._finalize_sent = (snap.number, index)

    async def include_deposits(self) -> int:
        """Include every new L1 deposit queue entry in the pending block, in order
        (none while ``censor_deposits`` is set: a devnet knob to show forced inclusion)."""
        if self.config.censor_deposits:
            return 0
        next_index = self.chain.state.system.next_deposit
        count = self.l1_snapshot.deposit_count
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
        # seal every block_time on a fixed schedule (a seal's own time does not
        # stretch the period; after an overrun the next seal comes at once)
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + self.config.block_time, trio.current_time())
            await trio.sleep_until(deadline)
            try:
                self.sequencer.seal()
                self.streams.tick()
            except Exception:  # a store error must not end the devnet silently
                log.exception("sealing the pending L2 block failed")

    async def _batcher(self) -> None:
        retry = self.batcher_retry
        while True:
            try:
                await self.sync_batches()
            except Exception as exc:
                delay = retry.failed(exc)
                log.warning("reading batches from L1 failed (retry in %.1f s): %s", delay, exc)
                await trio.sleep(delay)
            else:
                break
        interval = self.config.batch_interval
        poll = min(interval, max(self.config.block_time, BATCHER_POLL_SECONDS))
        last_post = time.monotonic()
        while True:
            await trio.sleep(max(poll, retry.retry_at - time.monotonic()))
            if not self.config.batcher_enabled or self.l1_snapshot.frozen:
                continue  # paused (devnet control), or frozen: submitBatch would revert
            # a full batch goes out at once (waiting cannot make it bigger); the
            # rest of the unposted blocks once per batch interval
            due = time.monotonic() - last_post >= interval
            if not due and not self.full_batch_ready():
                continue
            try:
                if due and self.heartbeat_due():
                    self.sequencer.seal(empty=True)
                await self.post_batches(full_only=not due)
            except Exception as exc:  # keep the devnet up; retry with backoff
                delay = retry.failed(exc)
                log.warning("batch submission failed (%d in a row, retry in %.1f s): %s",
                            retry.failures, delay, exc)
            else:
                retry.succeeded()
            if due:
                last_post = time.monotonic()

    def full_batch_ready(self) -> bool:
        """True if the unposted blocks fill at least one batch (bytes or
        steps of the batch limits). Block sizes are read once per block."""
        sizes = self._block_sizes
        max_bytes, max_steps = self.batch_limits
        size = steps = 0
        safe, head = self.chain.safe_head, self.chain.head.number
        for n in [n for n in sizes if n <= safe]:
            del sizes[n]
        for n in range(safe + 1, head + 1):
            if n not in sizes:
                txs = self.chain.block(n).txs
                sizes[n] = (BLOCK_HEADER_BYTES + sum(map(len, txs)), len(txs))
            size += sizes[n][0]
            steps += sizes[n][1]
            if size > max_bytes or steps > max_steps:
                return True
        return False

    def heartbeat_due(self) -> bool:
        """True if the chain has posted everything but no batch landed for
        2/3 of the escape delay (L1 time, warps included): then the batcher
        posts an empty block so that nobody can freeze a healthy rollup."""
        snap = self.l1_snapshot
        if snap.frozen or self.chain.safe_head < self.chain.head.number:
            return False
        delay = int(self.stored_config.get("escape_delay", 0))
        last = max(snap.last_batch_timestamp, self._last_batch_l1_time)
        # a freeze() is mined in the next L1 block, whose timestamp is at
        # least the head's + 1: after a burst of L1 blocks the L1 head runs
        # ahead of wall time plus warp, so the later of the two counts
        now = max(self.clock(), snap.timestamp + 1)
        num, den = HEARTBEAT_FRACTION
        if now < last + delay * num // den:
            return False
        self.heartbeats += 1
        log.info("L2 idle for %d s of L1 time: posting a heartbeat batch", int(now - last))
        return True

    async def sync_batches(self) -> None:
        """Record batches that are on L1 but not in the store (after a crash)."""
        count = await trio.to_thread.run_sync(self.rollup.batch_count)
        latest = self.chain.latest_batch()
        start = latest.index + 1 if latest else 0
        subs = []
        if start < count:
            subs = await trio.to_thread.run_sync(self.rollup.batch_submissions)
        from sequencer.batcher import submission_info

        for s in subs:
            if s.index < start:
                continue
            self.chain.record_batch(submission_info(s))

    async def post_batch(self) -> int | None:
        """Post the unposted blocks and wait until mined; returns the index
        of the last batch landed (None if there was nothing to post)."""
        before = self.chain.latest_batch()
        await self.post_batches()
        after = self.chain.latest_batch()
        if after is None or (before is not None and after.index == before.index):
            return None
        return after.index

    async def post_batches(self, full_only: bool = False) -> int:
        """Post every unposted block, until a batch that is not full is sent.
        Batches are sent one after another while earlier ones wait for their
        L1 block (up to MAX_BATCHES_PER_L1_BLOCK into one L1 block; the next
        goes out once that block is mined), and recorded in order as their
        receipts come. Returns the number of batches landed.
        ``full_only``: only full batches (the unposted rest waits).

        Raises TransactionReverted (with the reason) if L1 rejected a batch,
        or the L1 error of a refused send; nothing is recorded for them (or
        for batches sent after them)."""
        landed = 0
        inflight: list[tuple[Any, bytes]] = []  # sent, not recorded yet (in order)
        first: int | None = None
        while True:
            sent, error, blocked = await self._send_batches(full_only, first, limit=1)
            inflight += sent
            if sent:
                first = sent[-1][0].last_block + 1
            more = error is None and (blocked or bool(sent and sent[-1][0].full))
            landed += await self._await_batches(inflight, wait=not more)
            if not more:
                break
            if blocked and not sent:
                await trio.sleep(0.05)  # the pending L1 block is full: wait for the next one
        if error is not None:
            raise error
        return landed

    async def _send_batches(self, full_only: bool = False, first: int | None = None,
                            limit: int = MAX_BATCHES_PER_L1_BLOCK,
                            ) -> tuple[list[tuple[Any, bytes]], Exception | None, bool]:
        """Send up to ``limit`` next batches from L2 block ``first`` (default:
        after the safe head) into the pending L1 block. A batch is sent only
        if the pending L1 state expects exactly its first block, so a batch
        that failed in the pending block stops the rest. Returns the batches
        sent, the error of a refused send after the first one or of a check
        that failed (None if none), and whether sending stopped because the
        pending L1 block is full (MAX_BATCHES_PER_L1_BLOCK of ours, or no gas
        left: the rest go in a later one)."""
        from l1_stub.client import is_gas_limit_error

        rollup = self.rollup
        resume = first is not None  # batches from this call's caller are in flight
        first = self.chain.safe_head + 1 if first is None else first
        head = self.chain.head.number
        max_bytes, max_steps = self.batch_limits
        sent: list[tuple[Any, bytes]] = []
        async with self.l1_send_lock:
            expected = await trio.to_thread.run_sync(rollup.next_l2_block, "pending")
            if expected != first:
                if resume:  # one in flight failed in the pending block: its receipt says why
                    return [], None, False
                mined = await trio.to_thread.run_sync(rollup.next_l2_block, "latest")
                if mined > first:  # batches on L1 the store does not have yet
                    await self.sync_batches()
                    return [], None, False
                raise RuntimeError(f"the Rollup expects L2 block {expected} next, the batcher "
                                   f"has block {first}: waiting for L1")
            while len(sent) < limit:
                planned = plan_batch(self.chain, first, max_bytes, max_steps, head)
                if planned is None or (full_only and not planned.full):
                    break
                l1_head = await trio.to_thread.run_sync(lambda: self.l1.w3.eth.block_number)
                block, count = self._l1_block_sends
                if block == l1_head and count >= MAX_BATCHES_PER_L1_BLOCK:
                    return sent, None, True
                trace = None
                if self.armed_fault is not None:
                    trace = await trio.to_thread.run_sync(self._faulty_trace, planned)
                    if trace is not None:
                        planned = replace(planned, state_root=trace.post_root)
                try:
                    tx = await trio.to_thread.run_sync(
                        rollup.submit_batch, self.sequencer_key, planned.data,
                        planned.state_root, planned.deposit_end)
                except Exception as exc:
                    if is_gas_limit_error(exc) and (sent or resume):
                        return sent, None, True
                    if not sent and not resume:
                        raise
                    # wait for the batches already sent, then report
                    return sent, exc, False
                self._l1_block_sends = (l1_head, count + 1 if block == l1_head else 1)
                sent.append((planned, bytes(tx)))
                if trace is not None:
                    self._record_fault(planned, trace)
                if not planned.full:
                    break
                expected = await trio.to_thread.run_sync(rollup.next_l2_block, "pending")
                if expected != planned.last_block + 1:
                    break  # it failed in the pending block: its receipt says why
                first = planned.last_block + 1
        return sent, None, False

    _l1_block_sends: tuple[int, int] = (-1, 0)  # (L1 head when sent, batches sent on it)

    async def _await_batches(self, sent: list[tuple[Any, bytes]], wait: bool = True) -> int:
        """Record the landed batches of ``sent`` in order, removing them from
        the list; with ``wait`` wait for all of them, else stop at the first
        one not mined yet. Returns how many were recorded; raises
        TransactionReverted at the first failed one."""
        from l1_stub.client import TransactionReverted, revert_reason

        timeout = max(30.0, 10 * self.config.l1_block_time)
        recorded = 0
        while sent:
            planned, tx = sent[0]
            deadline = time.monotonic() + timeout
            receipt = await trio.to_thread.run_sync(self._receipt, tx)
            while receipt is None:
                if not wait:
                    return recorded
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch transaction 0x{tx.hex()} not mined in {timeout} s")
                await trio.sleep(0.05)
                receipt = await trio.to_thread.run_sync(self._receipt, tx)
            if receipt["status"] != 1:
                reason = await trio.to_thread.run_sync(revert_reason, self.l1.w3, receipt)
                raise TransactionReverted(receipt, reason)
            events = self.rollup.rollup.events.BatchSubmitted().process_receipt(
                receipt, errors=_DISCARD)
            index = int(events[0]["args"]["index"])
            first_on_l1 = int(events[0]["args"]["first_block"])
            if first_on_l1 != planned.first_block:
                await self.sync_batches()
                raise RuntimeError(f"batch {index} landed for L2 block {first_on_l1}, "
                                   f"planned for {planned.first_block}")
            info = batch_info(planned, index, int(receipt["blockNumber"]), tx)
            faulty = self._faults_sent.pop(planned.first_block, None)
            if faulty is not None:
                self.fault_traces[index] = faulty
                self.armed_fault = None
            self.chain.record_batch(info)
            self.gas_used_total += int(receipt["gasUsed"])
            self.calldata_bytes_total += len(planned.data)
            self.batches_posted += 1
            block = await trio.to_thread.run_sync(self.l1.w3.eth.get_block,
                                                  int(receipt["blockNumber"]))
            self._last_batch_l1_time = max(self._last_batch_l1_time, int(block["timestamp"]))
            sent.pop(0)
            recorded += 1
        return recorded

    gas_used_total: int = 0
    calldata_bytes_total: int = 0
    batches_posted: int = 0

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

    # -- disputes: the defender (issue 7 item 4) ----------------------------
    @property
    def defender(self) -> Defender:
        """The defender of this node's batches (created on first use)."""
        if self._defender is None:
            from l1_stub.disputes import DisputeClient

            disputes = DisputeClient(self.l1.w3, self.deployment)
            self._defender = Defender(disputes, self.rollup, self.sequencer_key,
                                      self.chain.domain, self.batch_trace,
                                      lambda index: index not in self.fault_traces,
                                      silent=self.config.silent_defender)
        return self._defender

    _defender: Defender | None = None

    @property
    def dispute_client(self) -> Any:
        """The DisputeGame bindings (l1_stub.disputes.DisputeClient)."""
        return self.defender.disputes

    def batch_trace(self, index: int) -> BatchTrace:
        """The trace this proposer stands by for batch ``index``: the faulty
        one it posted, or the honest re-execution of its own blocks.
        Raises KeyError for a batch this node has no record of."""
        if index in self.fault_traces:
            return self.fault_traces[index]
        info = self.chain.batch(index)
        if info is None:
            raise KeyError(f"no record of batch {index}")
        key = (index, info.tx_root)
        trace = self._honest_traces.get(key)
        if trace is None:
            blocks = [self.chain.block(n) for n in range(info.first_block, info.last_block + 1)]
            pre_root = self.chain.block(info.first_block - 1).header.state_root
            trace = BatchTrace(State(self.chain.tree.scratch(), pre_root), batch_steps(blocks),
                               self.chain.domain)
            self._honest_traces = {key: trace}  # the game in play; older ones are over
        return trace

    _honest_traces: dict[tuple[int, bytes], BatchTrace] = {}

    async def defend(self) -> None:
        """Defender duty, once per L1 block: answer every game's move."""
        if self.l1_snapshot.frozen:
            return
        async with self.l1_send_lock:
            moves = await trio.to_thread.run_sync(self.defender.step)
        for move in moves:
            log.info("defender: %s in game %d (tx 0x%s)", move.kind, move.game, move.tx.hex())

    # -- dishonest proposer (issue 7 item 6) ------------------------------
    def _faulty_trace(self, planned: Any) -> BatchTrace | None:
        """The armed fault's trace of ``planned`` (None if no step of it
        qualifies: the batch goes out honest and the fault stays armed).
        Re-executes the batch on a scratch tree from its pre-state root."""
        assert self.armed_fault is not None
        kind, from_step = self.armed_fault
        pre_root = self.chain.block(planned.first_block - 1).header.state_root
        state = State(self.chain.tree.scratch(), pre_root)
        trace = BatchTrace(state, batch_steps(decode_batch(planned.data)), self.chain.domain,
                           fault=kind, from_step=from_step)
        if trace.fault_step is None or trace.post_root == planned.state_root:
            return None
        return trace

    def _record_fault(self, planned: Any, trace: BatchTrace) -> None:
        """A faulty batch was sent: keep its trace until it lands (then the
        fault is disarmed; a batch that fails is planned with it again)."""
        self._faults_sent[planned.first_block] = trace
        log.warning("faulty proposer: the batch of L2 blocks %d..%d goes out with a wrong state "
                    "root (%s at step %s)", planned.first_block, planned.last_block,
                    trace.fault.value if trace.fault else "?", trace.fault_step)

    # -- devnet controls -------------------------------------------------
    def devnet_methods(self) -> dict[str, Any]:
        """``devnet_`` JSON-RPC methods (anvil-like time and mining control);
        none with ``devnet_controls`` off."""
        from l1_stub.chain import MAX_MINE_BLOCKS
        from node.rpc import bad_params, parse_bool, parse_uint

        if not self.config.devnet_controls:
            return {}

        def increase_time(seconds: Any) -> str:
            """Warp L1 (and so L2) time forward; returns the total offset (hex s).
            -32602 if the warp would put L1 time beyond 2^32 - 1 (year 2106)."""
            n = parse_uint(seconds, "seconds")
            try:
                return hexq(self.l1.increase_time(n))
            except ValueError as exc:
                raise bad_params(str(exc)) from None

        def mine(blocks: Any = 1) -> str:
            """Mine L1 blocks now (1..1000, in a worker thread); returns the L1
            head number (hex)."""
            n = parse_uint(blocks, "blocks")
            if not 1 <= n <= MAX_MINE_BLOCKS:
                raise bad_params(f"blocks: expected 1..{MAX_MINE_BLOCKS}")
            return hexq(self.l1.mine(n))

        mine.blocking = True  # type: ignore[attr-defined]  # dispatched off the trio loop

        def set_censor_deposits(on: Any) -> bool:
            """Make the sequencer ignore (true) or include (false) L1 deposits."""
            self.config.censor_deposits = parse_bool(on, "on")
            return self.config.censor_deposits

        def set_batcher(on: Any) -> bool:
            """Pause (false) or resume (true) batch submission to L1."""
            self.config.batcher_enabled = parse_bool(on, "on")
            return self.config.batcher_enabled

        def inject_fault(spec: Any) -> dict[str, Any]:
            """Make the proposer post a wrong state root for the next batch
            that has a step the fault applies to: ``{kind, step?}`` with kind
            one of prover.trace.Fault (fill-collateral, skip-deposit,
            forged-withdrawal, oracle-price, last-step, failed-valid-tx, funding-index, liquidation) and
            step the first step index of the batch it may apply at (default
            0). -32602 for an unknown kind or a bad step."""
            if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
                raise bad_params("fault: expected an object {kind, step?}")
            unknown = sorted(set(spec) - {"kind", "step"})
            if unknown:
                raise bad_params(f"{unknown[0][:64]}: unknown field (expected kind, step)")
            try:
                kind = Fault.parse(spec["kind"])
            except ValueError as exc:
                raise bad_params(str(exc)) from None
            step = parse_uint(spec.get("step", 0), "step")
            self.armed_fault = (kind, step)
            return {"kind": kind.value, "step": hexq(step)}

        def set_defender(on: Any) -> bool:
            """Let the defender answer disputes (true) or go silent (false: it
            then loses every game on its clock)."""
            self.config.silent_defender = not parse_bool(on, "on")
            if self._defender is not None:
                self._defender.silent = self.config.silent_defender
            return not self.config.silent_defender

        return {
            "devnet_setDefender": set_defender,
            "devnet_injectFault": inject_fault,
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
        """Shaped like optimism_syncStatus (block refs with decimal numbers).

        L1 values come from the L1 snapshot (read once per L1 block), not
        from L1 calls per request."""
        snap = self.l1_snapshot
        number, ts = snap.number, snap.timestamp
        l1_ref = {"hash": hexb(snap.hash), "number": number,
                  "parentHash": hexb(snap.parent_hash), "timestamp": ts}
        latest = self.chain.latest_batch()
        window = int(self.stored_config.get("challenge_window", 0))
        batch = None
        if latest is not None:
            batch = latest.to_json()
            record = snap.latest_batch
            if record is None or record.index != latest.index:  # landed after the snapshot
                try:
                    record = self.rollup.get_batch(latest.index)
                except Exception as exc:  # L1 busy or down: answer without the timing
                    log.debug("l2_syncStatus: reading batch %d from L1: %s", latest.index, exc)
                    record = None
            if record is not None:
                batch["l1Timestamp"] = record.l1_timestamp
                batch["finalizableAt"] = record.l1_timestamp + window
                batch["secondsToFinality"] = max(0, record.l1_timestamp + window - ts)
            else:
                batch["l1Timestamp"] = batch["finalizableAt"] = batch["secondsToFinality"] = None
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
            "frozen": snap.frozen,
            "batcher_error": self.last_batch_error,
            "batcher_enabled": self.config.batcher_enabled,
            "batcher_failures": self.batcher_retry.failures,
            "batcher_retry_in": (self.batcher_retry.to_json() or {}).get("retryIn"),
            "l1_errors": {name: r.to_json() for name, r in self.l1_retry.items()
                          if r.error is not None},
            "batches_posted": self.batches_posted,
            "batches_deleted": self.batches_deleted,
            "faulty_proposer": ({"kind": self.armed_fault[0].value, "step": self.armed_fault[1]}
                                if self.armed_fault else None),
            "heartbeats": self.heartbeats,
            "batch_limits": {"bytes": self.batch_limits[0], "steps": self.batch_limits[1]},
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
            "max_batch_bytes": self.batch_limits[0],
            "max_batch_steps": self.batch_limits[1],
            "challenge_window": self.stored_config.get("challenge_window"),
            "inclusion_window": self.stored_config.get("inclusion_window"),
            "escape_delay": self.stored_config.get("escape_delay"),
            **{k: self.stored_config.get(k) for k in DISPUTE_KEYS},
            # bonds are money (wei): decimal strings, as they may exceed 2^53
            **{k: None if self.stored_config.get(k) is None else str(self.stored_config[k])
               for k in ("challenger_bond", "proposer_bond")},
            "rollup_address": self.deployment.rollup,
            "usdc_address": self.deployment.usdc,
            "dispute_game_address": self.deployment.dispute_game or None,
            "abi_dir": str(next(iter(self.abi_files.values())).parent),
            "abi_files": {name: str(path) for name, path in self.abi_files.items()},
            "l1_rpc_url": self.config.l1_rpc or f"http://{self.config.host}:{self.config.l1_port}",
            "sequencer": hexb(g.sequencer),
            "oracle": hexb(g.oracle),
            "fee_account": hexb(g.fee_account),
            "admin": hexb(g.admin),
            "markets": [{"id": m.market.id, "symbol": m.symbol} for m in g.markets],
        }

    def close(self) -> None:
        prefetch = getattr(self, "prefetch", None)
        if prefetch is not None:
            prefetch.close()
        self.db.close()
        self.l1.close()


__all__ = ["L1Lost", "Node", "NodeConfig", "hexq"]
