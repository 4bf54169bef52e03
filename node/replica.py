"""The replica: an L2 node that derives the chain from L1 alone and serves it
read-only over JSON-RPC (docs/protocol.md, "Derivation (replica)").

``derivnet replica --l1-rpc URL`` runs one ``Replica``. It needs nothing
from the sequencer: the genesis file (the devnet default unless
``--genesis``) gives the genesis state, whose root must equal the Rollup's
``genesis_state_root`` (else it refuses to start); the Rollup is the first
contract the genesis sequencer created on L1 (unless ``--rollup``). Then
it follows L1: every ``poll_interval`` seconds it reads the Rollup's views
at the L1 head, rolls back batches that L1 deleted, reads new
``BatchSubmitted`` calldata and ``DepositQueued`` entries, and derives the
new batches with ``node.derive`` into a ``Chain`` store (LevelDB in the
datadir, so a restart resumes). L1 reads run in a worker thread;
derivation runs on the trio loop one batch at a time, so JSON-RPC reads
always see whole blocks. Each block is written to LevelDB on a thread
while the next executes (``Chain``'s ``write_behind``); with
``--sig-workers N`` the next batches are also prepared on N processes
(``node.derive.prepare_batch``: split, hashes, roots, order hashes,
signers) while one executes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.chain import BatchInfo, Chain
from node.crypto import ZERO_HASH, keccak
from node.datadir import read_genesis_json
from node.db import KeyValueDB, LevelDB, MemoryDB
from node.derive import (
    DerivationError,
    PostedBatch,
    QueuedDeposit,
    PreparedBatch,
    Step,
    batch_steps,
    check_prepared,
    prepare_batch,
    state_at_step,
    step_roots,
)
from node.eip712 import Domain
from node.genesis import Genesis, parse_genesis
from node.rpc import L2Api, RpcError, hexb, methods
from node.server import JsonRpcApp, serve_jsonrpc
from node.sigverify import Prefetcher
from node.smt import SparseMerkleTree
from node.state import State

log = logging.getLogger("derivnet.replica")

METHOD_NOT_SUPPORTED = -32004  # EIP-1474 "method not supported"
READ_ONLY = ("l2_sendOrder", "l2_cancelOrder", "l2_sendOraclePrice", "l2_sendFundingTick",
             "l2_sendWithdraw",
             "l2_sendListMarket", "l2_getOrderBook", "l2_getOpenOrders")
MAX_ROLLUP_NONCE = 64  # nonces of the genesis sequencer searched for the Rollup

_DEPOSIT = b"R:d:"  # queue index u64 -> account(20) | amount u128 | running hash
_DEPOSIT_SCAN = b"R:dscan"  # last L1 block whose DepositQueued logs are stored
_BATCH_ID = b"R:bid:"  # batch index u64 -> the Rollup's batch id u64 of the derived batch


LOG_PAGE_BLOCKS = 500  # L1 blocks per eth_getLogs call


EventDecoders = dict[bytes, tuple[str, list[dict[str, Any]]]]


def event_decoders(abi: list[dict[str, Any]], names: tuple[str, ...]) -> EventDecoders:
    """topic 0 -> (event name, its ABI inputs) for the events ``names`` of a
    contract ABI (static indexed types only, as the Rollup's events)."""
    out: EventDecoders = {}
    for item in abi:
        if item.get("type") == "event" and item["name"] in names:
            types = ",".join(i["type"] for i in item["inputs"])
            out[keccak(f"{item['name']}({types})".encode())] = (item["name"], item["inputs"])
    return out


def decode_log(events: EventDecoders, raw: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(event name, entry) of one raw ``eth_getLogs`` result (hex strings),
    decoded with eth_abi: entry has ``args`` (by input name; addresses as
    checksummed hex, as web3 gives them), ``blockNumber``,
    ``transactionIndex``, ``logIndex`` (ints) and ``transactionHash``
    (bytes). (None, {}) for a log of another event."""
    from eth_abi import decode as abi_decode

    topics = [bytes.fromhex(t[2:]) for t in raw.get("topics") or ()]
    found = events.get(topics[0]) if topics else None
    if found is None:
        return None, {}
    name, inputs = found
    plain = [i for i in inputs if not i.get("indexed")]
    data = bytes.fromhex(raw["data"][2:])
    args = dict(zip((i["name"] for i in plain), abi_decode([i["type"] for i in plain], data)))
    indexed = [i for i in inputs if i.get("indexed")]
    for i, topic in zip(indexed, topics[1:]):
        args[i["name"]] = abi_decode([i["type"]], topic)[0]
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("0x"):
            from eth_utils import to_checksum_address

            args[key] = to_checksum_address(value)
    return name, {"args": args, "blockNumber": int(raw["blockNumber"], 16),
                  "transactionIndex": int(raw["transactionIndex"], 16),
                  "logIndex": int(raw["logIndex"], 16),
                  "transactionHash": bytes.fromhex(raw["transactionHash"][2:])}


def function_decoders(abi: list[dict[str, Any]]) -> dict[bytes, list[dict[str, Any]]]:
    """4-byte selector -> ABI inputs of every function of a contract ABI."""
    out = {}
    for item in abi:
        if item.get("type") == "function":
            types = ",".join(i["type"] for i in item["inputs"])
            out[keccak(f"{item['name']}({types})".encode())[:4]] = item["inputs"]
    return out


def decode_call(functions: dict[bytes, list[dict[str, Any]]], calldata: str) -> dict[str, Any]:
    """The arguments (by name) of a call's 0x-hex ``calldata``, decoded with
    eth_abi (web3's decode_function_input costs more than the request for
    ~120 KB of batch data). Raises ValueError for an unknown selector."""
    from eth_abi import decode as abi_decode

    data = bytes.fromhex(calldata[2:])
    inputs = functions.get(data[:4])
    if inputs is None:
        raise ValueError(f"unknown function selector 0x{data[:4].hex()}")
    values = abi_decode([i["type"] for i in inputs], data[4:])
    return dict(zip((i["name"] for i in inputs), values))


class ReplicaError(ValueError):
    """The replica cannot start: L1 has no Rollup for this genesis, the genesis
    root or chain ids differ from L1's, or the datadir belongs to another chain."""


@dataclass
class ReplicaConfig:
    """Flags of ``derivnet replica`` (times in seconds)."""

    l1_rpc: str
    host: str = "127.0.0.1"
    port: int = 8547
    datadir: str | None = None
    genesis_path: str | None = None
    rollup: str | None = None  # None: found from the genesis sequencer's creations
    poll_interval: float = 0.5
    sig_workers: int = 0  # batch-preparing processes (0: prepared here, signatures in the STF)


def create_address(sender: bytes, nonce: int) -> bytes:
    """The address of the contract ``sender`` creates with ``nonce`` (CREATE)."""
    import rlp

    return keccak(rlp.encode([sender, nonce]))[12:]


def find_rollup(w3: Any, deployer: bytes, limit: int = MAX_ROLLUP_NONCE) -> str | None:
    """The first contract ``deployer`` created (nonces 0..limit-1) that answers
    as a Rollup (``genesis_state_root``, ``l2_chain_id``, ``usdc``); None if
    there is none. The devnet deploys USDC then the Rollup from the genesis
    sequencer's key, so this finds the devnet's Rollup."""
    from l1_stub.contracts import load_contract

    abi, _ = load_contract("Rollup")
    sent = int(w3.eth.get_transaction_count(w3.to_checksum_address(deployer)))
    for nonce in range(min(sent, limit)):
        address = w3.to_checksum_address(create_address(deployer, nonce))
        if not w3.eth.get_code(address):
            continue
        contract = w3.eth.contract(address=address, abi=abi)
        try:
            contract.functions.genesis_state_root().call()
            contract.functions.l2_chain_id().call()
            contract.functions.usdc().call()
        except Exception:  # noqa: BLE001 - not a Rollup (USDC, something else)
            continue
        return str(address)
    return None


def deploy_block_of(w3: Any, address: str, head: int) -> int:
    """The L1 block in which ``address`` got its code (binary search over
    ``eth_getCode`` at past blocks); 0 if the L1 node cannot answer for past
    blocks."""
    try:
        if not w3.eth.get_code(address, block_identifier=0):
            lo, hi = 0, head  # no code at lo, code at hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if w3.eth.get_code(address, block_identifier=mid):
                    hi = mid
                else:
                    lo = mid
            return hi
    except Exception:  # noqa: BLE001 - no archive state: scan logs from block 0
        pass
    return 0


class Replica:
    """One replica process's state: L1 connection, chain store, JSON-RPC app.
    Construct (raises ReplicaError), then ``await run()``; ``sync()`` does
    one round of following L1 synchronously (tests, benchmarks)."""

    def __init__(self, config: ReplicaConfig) -> None:
        from l1_stub.client import Deployment, RollupClient, connect

        self.config = config
        self._exit = ExitStack()
        self.db: KeyValueDB
        if config.datadir:
            Path(config.datadir).mkdir(parents=True, exist_ok=True)
            # no fsync: everything here derives again from L1, and LevelDB
            # keeps each write batch atomic, so a power loss at worst rewinds
            # the replica to an earlier consistent head (a kill -9 loses nothing)
            self.db = LevelDB(os.path.join(config.datadir, "replica"), sync=False)
        else:
            self.db = MemoryDB()
        self._exit.callback(self.db.close)
        try:
            self.w3 = self._exit.enter_context(connect(config.l1_rpc))
            stored = Chain.stored_config(self.db)
            genesis_json = self._genesis_json(stored)
            self.genesis: Genesis = parse_genesis(genesis_json)
            leaves = self.genesis.leaves()
            root = SparseMerkleTree(MemoryDB()).update(ZERO_HASH, leaves)
            new = stored is None
            if stored is None:
                stored = self._discover(genesis_json, root)
            elif stored["genesisStateRoot"] != hexb(root):
                raise ReplicaError("the datadir holds another chain (genesis root differs)")
            self.stored_config = stored
            self.deployment = Deployment(stored["usdc"], stored["rollup"],
                                         stored["deployBlock"], stored["l1ChainId"])
            self.rollup = RollupClient(self.w3, self.deployment)
            on_l1 = self.rollup.genesis_state_root()
            if on_l1 != root:
                raise ReplicaError(
                    f"the genesis file gives state root {hexb(root)} but the Rollup at "
                    f"{stored['rollup']} was deployed with {hexb(on_l1)}: pass the devnet's "
                    "genesis file with --genesis")
            if new:
                Chain.initialize(self.db, leaves, stored)
            self.domain = Domain(self.genesis.l2_chain_id, bytes.fromhex(stored["rollup"][2:]))
            # blocks are written behind derivation (the next batch executes
            # meanwhile); a kill -9 loses at most blocks _resume drops anyway
            self.chain = Chain(self.db, self.domain, write_behind=True)
            self._exit.callback(self.chain.close)
        except BaseException:
            self._exit.close()
            raise
        self.deposits: dict[int, QueuedDeposit] = {}
        self._deposit_hashes: dict[int, bytes] = {}
        for key, value in self.db.iterate(_DEPOSIT):
            index = int.from_bytes(key[len(_DEPOSIT):], "big")
            self.deposits[index] = QueuedDeposit(index, value[:20],
                                                 int.from_bytes(value[20:36], "big"))
            self._deposit_hashes[index] = value[36:]
        self.l1_snapshot: Any = None
        self.finalized_batch_count = 0
        self.error: str | None = None  # the last derivation / L1 error, until a round succeeds
        self.rollbacks = 0
        self.mismatched: list[int] = []
        self._resume()
        self.prefetcher: Prefetcher | None = None
        if config.sig_workers:
            self.prefetcher = Prefetcher(config.sig_workers)
            self._exit.callback(self.prefetcher.close)
        from l1_stub.contracts import load_contract

        self._functions = function_decoders(load_contract("Rollup")[0])
        self._fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-calldata")
        self._exit.callback(self._fetcher.shutdown, cancel_futures=True)
        self.api = ReplicaApi(self)
        self.app = JsonRpcApp(methods(self.api))
        self.started_at = time.time()

    # -- set-up ----------------------------------------------------------
    def _genesis_json(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        given = read_genesis_json(self.config.genesis_path) if self.config.genesis_path else None
        if stored is None:
            return given if given is not None else read_genesis_json(None)
        if given is not None and given != stored["genesis"]:
            raise ReplicaError("--genesis differs from the genesis the datadir was created with")
        return dict(stored["genesis"])

    def _discover(self, genesis_json: dict[str, Any], root: bytes) -> dict[str, Any]:
        """The stored config of a new datadir, read from L1: the Rollup (flag or
        search), its USDC and deployment block; checks the chain ids."""
        w3 = self.w3
        l1_chain_id = int(w3.eth.chain_id)
        if l1_chain_id != self.genesis.l1_chain_id:
            raise ReplicaError(f"the L1 node's chain id is {l1_chain_id}, the genesis file "
                               f"says {self.genesis.l1_chain_id}")
        rollup = self.config.rollup or find_rollup(w3, self.genesis.sequencer)
        if rollup is None:
            raise ReplicaError(
                f"no Rollup contract created by the genesis sequencer "
                f"0x{self.genesis.sequencer.hex()} on L1 {self.config.l1_rpc} "
                "(pass --rollup ADDRESS, or the devnet's --genesis file)")
        from l1_stub.contracts import load_contract

        rollup = w3.to_checksum_address(rollup)
        contract = w3.eth.contract(address=rollup, abi=load_contract("Rollup")[0])
        l2_chain_id = int(contract.functions.l2_chain_id().call())
        if l2_chain_id != self.genesis.l2_chain_id:
            raise ReplicaError(f"the Rollup's L2 chain id is {l2_chain_id}, the genesis file "
                               f"says {self.genesis.l2_chain_id}")
        return {
            "replica": True,
            "genesis": genesis_json,
            "genesisStateRoot": hexb(root),
            "l1ChainId": l1_chain_id,
            "l2ChainId": l2_chain_id,
            "rollup": rollup,
            "usdc": w3.to_checksum_address(contract.functions.usdc().call()),
            "deployBlock": deploy_block_of(w3, rollup, int(w3.eth.block_number)),
        }

    def _resume(self) -> None:
        """After a crash between a batch's blocks and its record: drop the
        blocks past the last recorded batch (they are derived again)."""
        safe = self.chain.safe_head
        if self.chain.head.number > safe:
            log.info("dropping L2 blocks %d..%d of an unfinished batch",
                     safe + 1, self.chain.head.number)
            self.chain.rollback(safe)

    def close(self) -> None:
        self._exit.close()

    # -- following L1 ------------------------------------------------------
    def read_l1(self) -> dict[str, Any]:
        """One consistent read of L1 at its head (blocking I/O): the Rollup
        snapshot, the records of the stored batches that must be checked for
        deletion, new deposit entries and new batch submissions."""
        snap = self.rollup.snapshot()
        at = snap.number
        latest = self.chain.latest_batch()
        derived = latest.index + 1 if latest else 0
        # what L1 says about our latest batch (and earlier ones if it changed):
        # a batch deleted and posted again with the same data and root has a
        # new id, and ids are never reused, so an unchanged id at index i
        # means nothing at or below i was deleted since it was derived
        changed_from = None
        i = min(derived, snap.batch_count) - 1
        while i >= 0:
            if self._still_on_l1(i, at):
                break
            changed_from = i
            i -= 1
        if derived > snap.batch_count and changed_from is None:
            changed_from = snap.batch_count
        survivors = changed_from if changed_from is not None else derived
        known = len(self.deposits)
        reset = known > 0 and (snap.deposit_count < known or bytes(
            self.rollup.rollup.functions.deposit_hashes(known - 1).call(block_identifier=at))
            != self._deposit_hashes.get(known - 1))
        starts = []
        if reset or snap.deposit_count > known:
            raw = None if reset else self.db.get(_DEPOSIT_SCAN)
            starts.append(int.from_bytes(raw, "big") + 1 if raw else self.deployment.deploy_block)
        if snap.batch_count > survivors:
            last = self.chain.batch(survivors - 1) if survivors else None
            starts.append(last.l1_block if last is not None else self.deployment.deploy_block)
        deposits: list[tuple[QueuedDeposit, bytes]] = []
        submissions: list[PostedBatch] = []
        if starts:
            deposits, submissions = self._read_logs(min(starts), at, survivors, snap.batch_count)
            deposits = [d for d in deposits if reset or d[0].index >= known]
        return {"snapshot": snap, "survivors": survivors, "deposits": deposits,
                "reset_deposits": reset, "batches": submissions}

    def _still_on_l1(self, index: int, at: int) -> bool:
        """Whether derived batch ``index`` is still the Rollup's batch
        ``index`` at L1 block ``at``: the same data hash and root and, if its
        id was stored (batches derived before ids were kept have none), the
        same batch id."""
        info = self.chain.batch(index)
        record = self.rollup.get_batch(index, at)
        if info is None or (record.data_hash, record.state_root) != (
                info.data_hash, info.state_root):
            return False
        raw = self.db.get(_BATCH_ID + index.to_bytes(8, "big"))
        return raw is None or self.rollup.batch_id(index, at) == int.from_bytes(raw, "big")

    def _read_logs(self, from_block: int, at: int, first_batch: int, batch_count: int
                   ) -> tuple[list[tuple[QueuedDeposit, bytes]], list[Future[PostedBatch]]]:
        """The Rollup's DepositQueued entries (with running hashes) and its
        BatchSubmitted batches of index ``first_batch <= index < batch_count``
        (their calldata on its way: futures) in L1 blocks ``from_block..at``, read with one
        ``eth_getLogs`` per ``LOG_PAGE_BLOCKS`` L1 blocks (a long history in
        one call can outlast the connection's timeout). An index deleted and
        posted again takes the later submission; one deleted and not posted
        again (``>= batch_count``) is left out."""
        from l1_stub.contracts import load_contract

        events = event_decoders(load_contract("Rollup")[0], ("DepositQueued", "BatchSubmitted"))
        logs = []
        for start in range(from_block, at + 1, LOG_PAGE_BLOCKS):
            # raw: web3's log formatting and decoding cost ~1 ms a log
            answer = self.w3.provider.make_request("eth_getLogs", [{
                "address": self.deployment.rollup, "fromBlock": hex(start),
                "toBlock": hex(min(at, start + LOG_PAGE_BLOCKS - 1))}])
            if answer.get("error") or answer.get("result") is None:
                raise ConnectionError(f"eth_getLogs: {answer.get('error')}")
            logs += answer["result"]
        deposits = []
        chosen: dict[int, Any] = {}
        for raw in logs:
            name, entry = decode_log(events, raw)
            if name == "DepositQueued":
                args = entry["args"]
                deposits.append((QueuedDeposit(int(args["index"]), bytes.fromhex(args["to"][2:]),
                                               int(args["amount"])), bytes(args["running_hash"])))
            elif name == "BatchSubmitted":
                index = int(entry["args"]["index"])
                key = (int(entry["blockNumber"]), int(entry["transactionIndex"]),
                       int(entry["logIndex"]))  # logIndex counts within a receipt here
                if first_batch <= index < batch_count and (
                        index not in chosen or key > chosen[index][0]):
                    chosen[index] = (key, entry)
        # calldata is fetched on a thread, in batch order, while earlier
        # batches derive (``derive_batches`` waits for each in turn)
        batches = [self._fetcher.submit(self._posted_batch, index, chosen[index][1], at)
                   for index in sorted(chosen)]
        return deposits, batches

    def _posted_batch(self, index: int, entry: Any, at: int) -> PostedBatch:
        """The batch of one BatchSubmitted log entry, with its calldata read
        from L1 (raw: web3's result formatters cost more than the request for
        ~120 KB of calldata) and its batch id at L1 block ``at`` (the entry is
        the latest submission of ``index`` up to ``at``). Raises
        ConnectionError if L1 does not have it."""
        args = entry["args"]
        answer = self.w3.provider.make_request(
            "eth_getTransactionByHash", ["0x" + bytes(entry["transactionHash"]).hex()])
        if answer.get("error") or not answer.get("result"):
            raise ConnectionError(f"batch {index}: its L1 transaction is not available "
                                  f"({answer.get('error')})")
        params = decode_call(self._functions, answer["result"]["input"])
        return PostedBatch(
            index=index, first_block=int(args["first_block"]),
            batch_data=bytes(params["batch_data"]), state_root=bytes(args["state_root"]),
            data_hash=bytes(args["data_hash"]), deposit_end=int(args["deposit_end"]),
            l1_block=int(entry["blockNumber"]), l1_tx=bytes(entry["transactionHash"]),
            batch_id=self.rollup.batch_id(index, at))

    def store_deposits(self, entries: list[tuple[QueuedDeposit, bytes]], scanned_to: int,
                       reset: bool = False) -> None:
        """Keep deposit queue entries (and running hashes) in the store; with
        ``reset`` first forget every stored entry."""
        with self.db.write_batch() as batch:
            if reset:
                for key, _ in self.db.iterate(_DEPOSIT):
                    batch.delete(key)
                self.deposits.clear()
                self._deposit_hashes.clear()
            for d, running_hash in entries:
                batch.put(_DEPOSIT + d.index.to_bytes(8, "big"),
                          d.account + d.amount.to_bytes(16, "big") + running_hash)
                self.deposits[d.index] = d
                self._deposit_hashes[d.index] = running_hash
            batch.put(_DEPOSIT_SCAN, scanned_to.to_bytes(8, "big"))

    def roll_back_to(self, survivors: int) -> None:
        """Keep batches ``0..survivors-1``, drop later ones and their blocks."""
        keep = self.chain.batch(survivors - 1) if survivors else None
        number = keep.last_block if keep else 0
        log.warning("L1 deleted batches from %d: rolling back to L2 block %d",
                    survivors, number)
        latest = self.chain.latest_batch()
        with self.db.write_batch() as batch:
            for index in range(survivors, latest.index + 1 if latest else 0):
                batch.delete(_BATCH_ID + index.to_bytes(8, "big"))
        self.chain.rollback(number)
        self.mismatched = [i for i in self.mismatched if i < survivors]
        self.rollbacks += 1

    def derive(self, batch: PostedBatch, prepared: PreparedBatch | None = None) -> bool:
        """Derive and store one batch on the chain head; returns ``matches``.
        ``prepared``: ``prepare_batch(batch.batch_data, ...)`` if a worker
        did it (else done here, signatures left to the STF). Raises
        DerivationError (nothing stored) if L1's data does not derive."""
        chain = self.chain
        latest = chain.latest_batch()
        if batch.index != (latest.index + 1 if latest else 0):
            raise DerivationError(f"batch {batch.index} is not the next batch")
        head = chain.head.header
        if batch.first_block != head.number + 1:
            raise DerivationError(f"batch {batch.index} starts at L2 block {batch.first_block}, "
                                  f"the derived chain is at block {head.number}")
        deposit_start = latest.deposit_end if latest else 0
        if prepared is None:
            prepared = prepare_batch(batch.batch_data)
        check_prepared(batch, prepared, self.deposits, deposit_start, head.timestamp)
        for block in prepared.blocks:
            chain.apply_prepared_block(block)
        chain.record_batch(BatchInfo(batch.index, batch.first_block, chain.head.number,
                                     batch.state_root, prepared.commitment,
                                     batch.l1_block, batch.l1_tx, batch.deposit_end,
                                     batch.data_hash))
        if batch.batch_id:
            self.db.put(_BATCH_ID + batch.index.to_bytes(8, "big"),
                        batch.batch_id.to_bytes(8, "big"))
        matches = chain.head.header.state_root == batch.state_root
        if not matches:
            self.mismatched.append(batch.index)
            log.warning("batch %d: derived state root %s, L1 has %s", batch.index,
                        hexb(chain.head.header.state_root), hexb(batch.state_root))
        return matches

    def _prepare(self, read: dict[str, Any]) -> None:
        """The head part of a ``read_l1`` result: roll back batches L1 deleted,
        store new deposit entries, adopt the L1 snapshot."""
        latest = self.chain.latest_batch()
        derived = latest.index + 1 if latest else 0
        if read["survivors"] < derived:
            self.roll_back_to(read["survivors"])
        if read["deposits"] or read["reset_deposits"]:
            self.store_deposits(read["deposits"], read["snapshot"].number,
                                read["reset_deposits"])
        self.l1_snapshot = read["snapshot"]
        self.finalized_batch_count = read["snapshot"].finalized_batch_count

    def derive_batches(self, batches: list[Future[PostedBatch]]) -> Iterator[bool]:
        """Derive ``batches`` (as ``read_l1`` gives them: their calldata may
        still be on its way) in order, yielding ``matches`` after each one
        (the caller may answer RPC in between). Blocks for each batch's
        calldata; raises what reading it raised. With ``sig_workers``, the
        signatures of batch k+1 are recovered on worker processes while batch
        k executes (``node.sigverify.Prefetcher``)."""
        ahead: dict[int, Future[PreparedBatch]] = {}
        for k in range(len(batches)):
            yield self._derive_next(batches, k, ahead)

    def _derive_next(self, batches: list[Future[PostedBatch]], k: int,
                     ahead: dict[int, Future[PreparedBatch]]) -> bool:
        """Derive batch k of ``batches`` (waits for its calldata). With
        ``sig_workers``, the workers prepare batches (``prepare_batch``:
        split, hashes, roots, order hashes, signers) up to ``sig_workers``
        ahead of k whose calldata is in; ``ahead`` holds those jobs by
        position, between calls."""
        batch = batches[k].result()
        if self.prefetcher is None:
            return self.derive(batch)
        pool = self.prefetcher.pool
        for j in range(k, min(k + 1 + self.prefetcher.workers, len(batches))):
            if j not in ahead:
                if j > k and not batches[j].done():
                    break  # its calldata is still on its way: submit it next time
                ahead[j] = pool.submit(prepare_batch, batches[j].result().batch_data,
                                       self.domain)
        return self.derive(batch, ahead.pop(k).result())

    def apply_read(self, read: dict[str, Any]) -> int:
        """Apply one ``read_l1`` result (rollback, deposits, new batches);
        returns the number of batches derived. Raises DerivationError at a
        batch that does not derive (the batches before it stay)."""
        self._prepare(read)
        return sum(1 for _ in self.derive_batches(read["batches"]))

    def sync(self) -> int:
        """One round of following L1, synchronously; returns the number of
        batches derived (see ``apply_read``)."""
        return self.apply_read(self.read_l1())

    async def follow(self, after: Callable[[], Any] | None = None) -> None:
        """Poll L1 forever; errors are logged, kept in ``error`` and retried.
        ``after`` (blocking, run in a worker thread) is called after every
        round that derived what L1 holds, e.g. a challenger's moves."""
        from node.node import Backoff

        retry = Backoff(self.config.poll_interval, 30.0)
        while True:
            try:
                read = await trio.to_thread.run_sync(self.read_l1)
                self._prepare(read)
                batches = read["batches"]
                ahead: dict[int, Future[PreparedBatch]] = {}
                for k in range(len(batches)):
                    # wait for calldata off the event loop (an L1 that hangs
                    # must not stop RPC), then derive; answer RPC in between
                    await trio.to_thread.run_sync(futures_wait, batches[k:k + 2])
                    self._derive_next(batches, k, ahead)
                    await trio.lowlevel.checkpoint()
                if after is not None:
                    await trio.to_thread.run_sync(after)
            except Exception as exc:  # keep serving; retry with backoff
                delay = retry.failed(exc)
                self.error = retry.error
                log.warning("replica: %s (retry in %.1f s)", exc, delay)
                await trio.sleep(delay)
                continue
            retry.succeeded()
            self.error = None
            await trio.sleep(self.config.poll_interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_jsonrpc, self.app, self.config.host, self.config.port)
            nursery.start_soon(self.follow)
            task_status.started()

    # -- dispute support -----------------------------------------------------
    def batch_pre_state(self, index: int) -> tuple[State, list[Step]]:
        """A scratch ``State`` at the state root before batch ``index`` and the
        batch's steps; the scratch state writes only to memory, never to the
        store. Raises KeyError for a batch the replica has not derived."""
        info = self.chain.batch(index)
        if info is None:
            raise KeyError(f"batch {index} is not derived")
        pre_root = self.chain.block(info.first_block - 1).header.state_root
        blocks = [self.chain.block(n) for n in range(info.first_block, info.last_block + 1)]
        return State(self.chain.tree.scratch(), pre_root), batch_steps(blocks)

    def step_roots(self, index: int, points: list[int]) -> list[bytes]:
        """``node.derive.step_roots`` for batch ``index``: roots after ``p`` steps
        for each point ``p`` (0 = the batch's pre-state root)."""
        state, steps = self.batch_pre_state(index)
        return step_roots(state, steps, points, self.domain)

    def state_before_step(self, index: int, step: int) -> State:
        """State just before step ``step`` (0-based) of batch ``index``, to build
        a one-step witness from (``prover.witness.step_witness``)."""
        state, steps = self.batch_pre_state(index)
        return state_at_step(state, steps, step, self.domain)

    # -- views (what L2Api asks of a node) -----------------------------------
    def finalized_head(self) -> int:
        if self.finalized_batch_count == 0:
            return 0
        info = self.chain.batch(self.finalized_batch_count - 1)
        return min(info.last_block, self.chain.head.number) if info else 0

    def batch_status(self, index: int) -> str:
        return "finalized" if index < self.finalized_batch_count else "safe"

    def block_status(self, number: int) -> str:
        return "finalized" if number <= self.finalized_head() else "safe"

    def sync_status(self) -> dict[str, Any]:
        """Shaped like optimism_syncStatus where it applies, plus the replica's
        derivation figures (``matches``: every derived batch matched L1)."""
        snap = self.l1_snapshot
        l1_ref = None if snap is None else {
            "hash": hexb(snap.hash), "number": snap.number,
            "parentHash": hexb(snap.parent_hash), "timestamp": snap.timestamp}
        latest = self.chain.latest_batch()
        batch = None
        if latest is not None:
            batch = {**latest.to_json(), "status": self.batch_status(latest.index),
                     **self._derived_fields(latest)}
        head = self.chain.head.number
        return {
            "replica": True,
            "current_l1": l1_ref,
            "head_l1": l1_ref,
            "unsafe_l2": self._l2_ref(head),
            "safe_l2": self._l2_ref(head),
            "finalized_l2": self._l2_ref(self.finalized_head()),
            "latest_batch": batch,
            "derived_batches": latest.index + 1 if latest else 0,
            "l1_batches": None if snap is None else snap.batch_count,
            "finalized_batches": self.finalized_batch_count,
            "mismatched_batches": list(self.mismatched),
            "rollbacks": self.rollbacks,
            "deposits_included": self.chain.head_state().system.next_deposit,
            "frozen": None if snap is None else snap.frozen,
            "error": self.error,
        }

    def _l2_ref(self, number: int) -> dict[str, Any]:
        b = self.chain.block(number)
        return {"hash": hexb(b.hash), "number": number, "parentHash": hexb(b.header.parent_hash),
                "timestamp": b.header.timestamp, "l1origin": {"number": b.header.l1_origin}}

    def _derived_fields(self, info: BatchInfo) -> dict[str, Any]:
        derived = self.chain.block(info.last_block).header.state_root
        return {"derivedStateRoot": hexb(derived), "matches": derived == info.state_root}

    def rollup_config_json(self) -> dict[str, Any]:
        """Like the node's l2_rollupConfig, from the datadir's config and L1."""
        g = self.genesis
        block0 = self.chain.block(0)
        return {
            "replica": True,
            "genesis": {"l1": {"number": self.deployment.deploy_block},
                        "l2": {"number": 0, "hash": hexb(block0.hash)},
                        "state_root": hexb(block0.header.state_root)},
            "l1_chain_id": g.l1_chain_id,
            "l2_chain_id": g.l2_chain_id,
            "rollup_address": self.deployment.rollup,
            "usdc_address": self.deployment.usdc,
            "l1_rpc_url": self.config.l1_rpc,
            "poll_interval": self.config.poll_interval,
            "sequencer": hexb(g.sequencer),
            "oracle": hexb(g.oracle),
            "fee_account": hexb(g.fee_account),
            "admin": hexb(g.admin),
            "markets": [{"id": m.market.id, "symbol": m.symbol} for m in g.markets],
        }


class ReplicaApi(L2Api):
    """The node's read methods over the replica's chain; the write methods and
    the order book (the sequencer's, not on L1) answer -32004. ``pending``
    is the head (a replica has no pending block)."""

    node: Replica  # type: ignore[assignment]

    def __init__(self, replica: Replica) -> None:
        super().__init__(replica)  # type: ignore[arg-type]
        for name in READ_ONLY:
            setattr(self, name, self._read_only(name))

    @staticmethod
    def _read_only(name: str) -> Any:
        def refuse(*_args: Any) -> Any:
            raise RpcError(METHOD_NOT_SUPPORTED,
                           f"{name}: this is a read-only replica (derived from L1); send "
                           "orders and transactions to the sequencer's node")

        refuse.__name__ = name
        return refuse

    def _state(self, tag: Any) -> State:
        return super()._state("latest" if tag == "pending" else tag)

    def l2_getBlockByNumber(self, tag: Any = "latest", full: Any = True) -> dict[str, Any]:
        return super().l2_getBlockByNumber("latest" if tag == "pending" else tag, full)


def run_replica(config: ReplicaConfig, ready: Any = None) -> None:
    """Run a replica until interrupted (the ``derivnet replica`` command);
    ``ready(replica)`` is called once it serves."""
    replica = Replica(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(replica.run)
            if ready is not None:
                ready(replica)

    try:
        trio.run(main)
    finally:
        replica.close()


__all__ = ["Replica", "ReplicaApi", "ReplicaConfig", "ReplicaError", "find_rollup",
           "run_replica"]
