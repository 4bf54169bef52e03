"""The embedded L1: an in-process Ethereum chain (eth-tester + py-evm).

``EmbeddedL1`` behaves like a small anvil:

- chain id 900 (``eth_chainId``, the CHAINID opcode and signed-transaction
  validation all use it);
- the 10 dev accounts of the anvil/hardhat mnemonic ``test test ... junk``
  (path ``m/44'/60'/0'/0/i``), 10,000 ETH each;
- transactions execute into the pending block when they are sent (so nonces
  at ``"pending"`` and validation errors are immediate) and become visible
  (receipts, logs, ``latest``) when a block is mined: on every transaction
  with ``auto_mine=True``, else only on ``mine()``, which the node's clock
  calls every ``--l1-block-time`` seconds;
- block timestamps follow wall time plus a warp offset
  (``increase_time``, anvil's ``evm_increaseTime``) or an explicit
  ``set_next_block_timestamp``; they strictly increase.

All chain access goes through one re-entrant lock (``EmbeddedL1.lock``), so
the chain can be used from several threads: the trio node should run
``mine()`` and web3 calls in worker threads (``trio.to_thread.run_sync``).
Code that touches ``l1.tester`` directly must hold ``l1.lock``.
``w3`` is a web3.Web3 over an EthereumTesterProvider on this chain whose
responses (including reverts, as JSON-RPC errors with revert data) look like
those of a real node.

Persistence: with ``datadir=None`` (the default) the chain lives in memory
and is gone with the object. With ``datadir=PATH`` the py-evm chain database
(headers, blocks, transactions, receipts, state tries) is a LevelDB (plyvel)
in directory ``PATH``, which ``EmbeddedL1`` owns and creates if missing; the
first start writes the genesis block there, later starts reopen the chain at
its canonical head, so block numbers and hashes, balances, contracts and old
logs (``eth_getLogs``) are all back. ``EmbeddedL1``'s own bookkeeping (chain
id, time-warp offset, a pending ``set_next_block_timestamp``) is stored in the
same LevelDB under a key of its own, written when it changes, so block
timestamps continue from the restored head and warp offset.

Durability: every write goes straight to LevelDB (nothing of a mined block is
buffered in Python: py-evm's atomic batches commit as one LevelDB write batch),
so a block is on disk when ``mine()`` returns and survives the process being
killed (SIGKILL) right after; with ``sync=True`` (the default) each write is
also fsynced, so it survives a power loss too. Not persisted: transactions
sent but not yet mined (the pending block) -- after a crash or ``close()``
they are lost and must be re-sent -- and runtime settings passed to the
constructor (``auto_mine``, ``clock``). Only one process may open a datadir
at a time (LevelDB's lock; a second open raises). Call ``close()`` (or use
the object as a context manager) to release it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eth.db.atomic import AtomicDBWriteBatch
from eth.db.backends.base import BaseAtomicDB
from eth.db.chain import ChainDB
from eth.exceptions import CanonicalHeadNotFound
from eth_abi import abi
from eth_abi.exceptions import DecodingError
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils import to_checksum_address, to_wei
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

log = logging.getLogger(__name__)

L1_CHAIN_ID = 900
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PATH = "m/44'/60'/0'/0"
DEV_ACCOUNT_COUNT = 10
DEV_BALANCE_WEI = to_wei(10_000, "ether")

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)

MAX_TIMESTAMP = 2**32 - 1
"""Latest L1 block timestamp a time warp may reach (unix s, year 2106): far
beyond any test, and every uint64 timestamp on L1 and L2 stays in range."""
MAX_MINE_BLOCKS = 1_000
"""Most blocks one ``anvil_mine`` / ``devnet_mine`` call may mine (~10 ms each)."""


class InvalidParams(ValueError):
    """A devnet method's argument is malformed or out of range (JSON-RPC
    -32602); the message starts with the parameter's name."""

# EmbeddedL1's own record in the chain LevelDB (py-evm's keys are 32-byte
# hashes and b"v1:..."-style schema keys, so this cannot collide)
_META_KEY = b"derivnet-l1:meta"
_META_VERSION = 1


class _LevelDBWriteBatch(AtomicDBWriteBatch):
    """A py-evm atomic batch that commits as one LevelDB write batch."""

    def _commit(self) -> None:
        self._write_target_db._write_diff(self._diff())  # type: ignore[attr-defined]


class _LevelDB(BaseAtomicDB):
    """py-evm atomic database on LevelDB (plyvel); py-evm 0.12 no longer
    ships one. Writes outside ``atomic_batch()`` go straight to LevelDB; an
    atomic batch is one LevelDB write batch (all or nothing, also on a
    crash). With ``sync`` every write is fsynced before returning."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        import plyvel

        self._db = plyvel.DB(path, create_if_missing=True)
        self._sync = sync

    def __getitem__(self, key: bytes) -> bytes:
        value = self._db.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value, sync=self._sync)

    def __delitem__(self, key: bytes) -> None:
        if self._db.get(key) is None:
            raise KeyError(key)
        self._db.delete(key, sync=self._sync)

    def _exists(self, key: bytes) -> bool:
        return self._db.get(key) is not None

    def _write_diff(self, diff: Any) -> None:
        with self._db.write_batch(sync=self._sync) as batch:
            for key, value in diff.pending_items():
                batch.put(key, value)
            for key in diff.deleted_keys():
                batch.delete(key)

    @contextmanager
    def atomic_batch(self) -> Iterator[Any]:
        with _LevelDBWriteBatch._commit_unless_raises(self) as batch:
            yield batch

    def close(self) -> None:
        self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)


class _Backend(PyEVMBackend):
    """PyEVMBackend with a controllable block clock, chain-id checks on
    signed transactions and revert data kept on failed calls."""

    # set by EmbeddedL1 right after construction
    _l1: EmbeddedL1

    def __init__(self, *args: Any, base_db: _LevelDB | None = None, **kwargs: Any) -> None:
        self._base_db = base_db  # None: eth-tester's in-memory database
        super().__init__(*args, **kwargs)

    # -- genesis / reopening -------------------------------------------

    def reset_to_genesis(
        self,
        genesis_params=None,
        genesis_state=None,
        num_accounts=None,
        vm_configuration=None,
        mnemonic=None,
        hd_path=None,
    ):
        """In memory: eth-tester's own setup. With a LevelDB: eth-tester's
        chain class (and account keys) on that database, created from
        genesis if it is empty, else reopened at its canonical head."""
        if self._base_db is not None and self.chain is not None:
            raise NotImplementedError("a persistent L1 chain cannot be reset to genesis")
        # eth-tester builds its chain class inside setup_tester_chain on an
        # in-memory database it creates itself; keep that chain's class and
        # its (cheap, 10-account) genesis for comparison
        super().reset_to_genesis(
            genesis_params, genesis_state, num_accounts, vm_configuration, mnemonic, hd_path
        )
        db = self._base_db
        if db is None:
            return
        chain_class = type(self.chain)
        expected_genesis = self.chain.get_canonical_block_header_by_number(0)
        chaindb = ChainDB(db)
        try:
            chaindb.get_canonical_head()
        except CanonicalHeadNotFound:
            chain = chain_class.from_genesis(db, genesis_params, genesis_state)
        else:
            stored = chaindb.get_canonical_block_header_by_number(0)
            if stored.state_root != expected_genesis.state_root:
                raise ValueError(
                    "the L1 datadir holds a chain with a different genesis state "
                    "(dev accounts / balances)"
                )
            chain = chain_class(db)
        self.chain = chain

    # -- lookups -------------------------------------------------------
    #
    # eth-tester finds a transaction by scanning every block from the head
    # back to genesis (O(chain length) per receipt, and eth_getLogs asks for
    # every receipt of its range: ~20 ms per transaction on a devnet's
    # history). py-evm keeps a hash -> (block, index) lookup for canonical
    # transactions; use it, and decode a block's receipts once per block.

    def _find_transaction(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
        """(block, transaction, index) of a pending or canonical transaction;
        eth_tester's TransactionNotFound if neither."""
        from eth.exceptions import TransactionNotFound as EvmTransactionNotFound
        from eth_tester.exceptions import TransactionNotFound

        pending = self.chain.get_block()
        for index, tx in enumerate(pending.transactions):
            if tx.hash == transaction_hash:
                return pending, tx, index
        try:
            number, index = self.chain.chaindb.get_transaction_index(transaction_hash)
        except EvmTransactionNotFound:
            raise TransactionNotFound(
                f"No transaction found for transaction hash: 0x{bytes(transaction_hash).hex()}"
            ) from None
        block = self.chain.get_canonical_block_by_number(number)
        return block, block.transactions[index], index

    def _block_receipts(self, block: Any) -> Any:
        """The receipts of a mined block, decoded once (blocks are immutable;
        keyed by hash, so a changed canonical chain cannot be served stale)."""
        cache = self.__dict__.setdefault("_receipts_cache", {})
        receipts = cache.get(block.hash)
        if receipts is None:
            receipts = block.get_receipts(self.chain.chaindb)
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[block.hash] = receipts
        return receipts

    def get_transaction_by_hash(self, transaction_hash):
        from eth_tester.backends.pyevm.serializers import serialize_transaction

        block, transaction, index = self._find_transaction(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        return serialize_transaction(block, transaction, index, is_pending)

    def get_transaction_receipt(self, transaction_hash):
        from eth_tester.backends.pyevm.serializers import serialize_transaction_receipt

        block, transaction, index = self._find_transaction(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        receipts = (block.get_receipts(self.chain.chaindb) if is_pending
                    else self._block_receipts(block))
        return serialize_transaction_receipt(
            block, receipts, transaction, index, is_pending, self.chain.get_vm())

    # -- calls ---------------------------------------------------------

    def _max_available_gas(self) -> int:
        """Gas of an eth_call that names none: the block gas limit, as geth
        and anvil give. eth-tester gives what is left in the pending block, so
        one transaction that fills a block made every view call fail
        ("Message.gas cannot be negative") until the next block was mined."""
        return int(self.chain.get_block().header.gas_limit)

    # -- pending block -------------------------------------------------

    def _pending_has_transactions(self) -> bool:
        return len(self.chain.get_block().transactions) > 0

    def _prepare_pending(self) -> None:
        """Stamp an empty pending block with the current clock before the
        first transaction executes in it."""
        if not self._pending_has_transactions():
            ts = self._l1._next_timestamp(self.chain.get_canonical_head().timestamp)
            if ts != self.chain.header.timestamp:
                self.chain.header = self.chain.header.copy(timestamp=ts)
            self._l1._pending_epoch = self._l1._warp_epoch

    def _restamp_pending(self, timestamp: int) -> None:
        """Give the pending block ``timestamp``, re-executing its transactions
        if it has any (they must see the timestamp they are mined with)."""
        chain = self.chain
        if chain.header.timestamp == timestamp:
            return
        txs = chain.get_block().transactions
        if not txs:
            chain.header = chain.header.copy(timestamp=timestamp)
            return
        parent = chain.get_canonical_head()
        chain.header = chain.create_header_from_parent(parent, timestamp=timestamp)
        for tx in txs:
            chain.apply_transaction(tx)

    def mine_blocks(self, num_blocks=1, coinbase=b"\x00" * 20):
        hashes = []
        for _ in range(num_blocks):
            parent_ts = self.chain.get_canonical_head().timestamp
            if self._pending_has_transactions() and self._l1._pending_epoch == self._l1._warp_epoch:
                # stamped when its first transaction arrived; no warp since
                ts = self.chain.header.timestamp
            else:
                ts = self._l1._next_timestamp(parent_ts)
            self._restamp_pending(ts)
            self._l1._next_block_timestamp = None
            hashes.extend(super().mine_blocks(1, coinbase))
            self._l1._pending_epoch = self._l1._warp_epoch
        self._l1._save_meta()
        return tuple(hashes)

    # -- sending -------------------------------------------------------

    def _check_chain_id(self, raw_transaction: bytes) -> None:
        try:
            tx = self.chain.get_vm().get_transaction_builder().decode(raw_transaction)
        except Exception:  # let the real send path report undecodable bytes
            return
        chain_id = getattr(tx, "chain_id", None)
        if chain_id is not None and chain_id != self.chain.chain_id:
            raise TesterValidationError(
                f"invalid chain id {chain_id} for transaction (this chain is {self.chain.chain_id})"
            )

    def send_raw_transaction(self, raw_transaction):
        self._check_chain_id(bytes(raw_transaction))
        self._prepare_pending()
        return super().send_raw_transaction(raw_transaction)

    def send_signed_transaction(self, signed_transaction, block_number="latest"):
        self._prepare_pending()
        return super().send_signed_transaction(signed_transaction, block_number)

    def send_transaction(self, transaction):
        self._prepare_pending()
        return super().send_transaction(transaction)

    # -- calls ---------------------------------------------------------

    def call(self, transaction, block_number="latest"):
        from eth.vm.spoof import SpoofTransaction
        from eth_tester.backends.pyevm.main import _execute_and_revert_transaction

        tx = dict(transaction)
        if "gas" not in tx:
            tx["gas"] = self._max_available_gas()
        unsigned = self._get_normalized_and_unsigned_evm_transaction(tx, block_number)
        spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
        computation = _execute_and_revert_transaction(self.chain, spoofed, block_number)
        if computation.is_error:
            raise _revert_exception(computation._error)
        return computation.output

    def estimate_gas(self, transaction, block_number="latest"):
        if block_number != "pending":
            return super().estimate_gas(transaction, block_number)
        from eth.vm.spoof import SpoofTransaction

        unsigned = self._get_normalized_and_unsigned_evm_transaction(
            dict(transaction, gas=21000), "pending"
        )
        spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
        try:
            return self.chain.estimate_gas(spoofed, self.chain.header)
        except Exception as exc:
            from eth.exceptions import Revert

            if isinstance(exc, Revert):
                raise _revert_exception(exc) from exc
            raise


def _revert_exception(error: Exception) -> TransactionFailed:
    """TransactionFailed carrying the raw revert data as ``revert_data``."""
    data = b""
    if error.args and isinstance(error.args[0], bytes | bytearray):
        data = bytes(error.args[0])
    message = str(error)
    if data[:4] == _ERROR_SELECTOR:
        with contextlib.suppress(DecodingError):  # malformed Error(string): keep str(error)
            message = abi.decode(["string"], data[4:])[0]
    exc = TransactionFailed(message)
    exc.revert_data = data  # type: ignore[attr-defined]
    return exc


def _revert_message_and_data(exc: TransactionFailed) -> tuple[str, str | None]:
    """JSON-RPC error message and hex revert data of a failed call/estimate."""
    data: bytes | None = getattr(exc, "revert_data", None)
    reason: Any = exc.args[0] if exc.args else ""
    if isinstance(reason, Exception):  # eth-tester wraps the EVM's Revert
        reason = reason.args[0] if reason.args else ""
    if isinstance(reason, bytes | bytearray):
        data = bytes(reason) if data is None else data
        reason = ""
    if data and data[:4] == _ERROR_SELECTOR:
        with contextlib.suppress(DecodingError):  # malformed Error(string): no reason
            reason = abi.decode(["string"], data[4:])[0]
    message = f"execution reverted: {reason}" if reason else "execution reverted"
    return message, ("0x" + data.hex() if data is not None else None)


class _Tester(EthereumTester):
    """EthereumTester whose sends go straight into the pending block.

    eth-tester's own manual-mining mode replays every sent transaction on a
    snapshot and reverts it, so pending nonces never advance and each send
    re-imports the head block; here a sent transaction simply stays in the
    pending block until it is mined.
    """

    def send_raw_transaction(self, raw_transaction_hex):
        tx_hash = EthereumTester.send_raw_transaction.__wrapped__(self, raw_transaction_hex)
        if self.auto_mine_transactions:
            self.mine_block()
        return tx_hash

    def send_transaction(self, transaction):
        tx_hash = EthereumTester.send_transaction.__wrapped__(self, transaction)
        if self.auto_mine_transactions:
            self.mine_block()
        return tx_hash

    def get_logs(self, from_block=None, to_block=None, address=None, topics=None):
        """eth_getLogs with eth-tester's inputs, filter and output, read
        straight from each block's receipts (decoded once per block) and
        skipping mined blocks whose logs bloom rules the address out;
        eth-tester serializes a whole receipt per transaction of the range."""
        from eth_bloom import BloomFilter
        from eth_tester.backends.pyevm.serializers import serialize_log
        from eth_tester.utils.filters import check_if_log_matches

        self.validator.validate_inbound_filter_params(
            from_block=from_block, to_block=to_block, address=address, topics=topics)
        raw_from, raw_to, raw_address, raw_topics = self.normalizer.normalize_inbound_filter_params(
            from_block=from_block, to_block=to_block, address=address, topics=topics)
        lower = raw_from if isinstance(raw_from, int) else self.get_block_by_number(
            "latest" if raw_from is None else raw_from)["number"]
        upper = raw_to if isinstance(raw_to, int) else self.get_block_by_number(
            "latest" if raw_to is None else raw_to)["number"]
        addresses = (None if raw_address is None else
                     (raw_address,) if isinstance(raw_address, bytes) else tuple(raw_address))
        backend = self.backend
        chain = backend.chain
        pending = chain.get_block()
        logs = []
        for number in range(lower, upper + 1):
            is_pending = number == pending.number
            if is_pending:
                block, receipts = pending, pending.get_receipts(chain.chaindb)
            else:
                block = chain.get_canonical_block_by_number(number)
                if addresses is not None:
                    bloom = BloomFilter(block.header.bloom)
                    if not any(a in bloom for a in addresses):
                        continue
                receipts = backend._block_receipts(block)
            for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
                for log_index, log_entry in enumerate(receipt.logs):
                    entry = serialize_log(block, tx, index, log_entry, log_index, is_pending)
                    if check_if_log_matches(entry, raw_from, raw_to, raw_address, raw_topics):
                        logs.append(self.normalizer.normalize_outbound_log_entry(entry))
        return tuple(logs)


def _int_param(params: Any, index: int, name: str, default: int | None = None) -> int:
    """``params[index]`` as an int (JSON number, decimal or 0x-hex string);
    ``default`` when absent or null (else InvalidParams, like any bad value)."""
    value = params[index] if isinstance(params, list | tuple) and len(params) > index else None
    if value is None:
        if default is None:
            raise InvalidParams(f"{name}: missing")
        return default
    if isinstance(value, bool):
        raise InvalidParams(f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith(("0x", "0X")) else int(value)
        except ValueError:
            pass
    raise InvalidParams(f"{name}: expected an integer (number, decimal or 0x-hex string)")


def _error_response(request_id: Any, code: int, message: str, data: str | None = None) -> RPCResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"id": request_id, "jsonrpc": "2.0", "error": error}  # type: ignore[return-value,typeddict-item]


class L1Provider(EthereumTesterProvider):
    """EthereumTesterProvider for an EmbeddedL1: chain id 900, devnet
    methods (``evm_mine``, ``anvil_mine``, ``evm_increaseTime``,
    ``evm_setNextBlockTimestamp``, ``evm_setAutomine``), the chain lock, and
    node-like errors: a revert becomes JSON-RPC error 3 ("execution reverted:
    <reason>", data = revert bytes) and any other failure error -32000."""

    def __init__(self, l1: EmbeddedL1) -> None:
        from web3.providers.eth_tester.defaults import API_ENDPOINTS

        endpoints = {namespace: dict(methods) for namespace, methods in API_ENDPOINTS.items()}
        chain_id = l1.chain_id
        endpoints["eth"]["chainId"] = lambda _tester, _params: chain_id
        endpoints["net"]["version"] = lambda _tester, _params: str(chain_id)
        endpoints["web3"]["clientVersion"] = lambda _tester, _params: "derivnet-l1/eth-tester"

        def require_controls(name: str) -> None:
            if not l1.devnet_controls:
                raise PermissionError(f"{name} is disabled (the devnet runs with --no-devnet-controls)")

        def mine(_tester: Any, params: Any) -> int:
            # evm_mine([timestamp]) (anvil also takes {"timestamp": ..}) / evm_mine([])
            if params and isinstance(params[0], dict):
                params = [params[0].get("timestamp")]
            if params and params[0] is not None:
                require_controls("evm_mine with a timestamp")
                l1.set_next_block_timestamp(_int_param(params, 0, "timestamp"))
            l1.mine(1)
            return 0

        def anvil_mine(_tester: Any, params: Any) -> None:
            # anvil_mine([blocks=1, interval_seconds=None])
            blocks = _int_param(params, 0, "blocks", 1)
            interval = _int_param(params, 1, "interval", 0)
            if interval:  # mining alone stays open: the node's L1 clock mines this way
                require_controls("anvil_mine with an interval")
            if not 1 <= blocks <= MAX_MINE_BLOCKS:
                raise InvalidParams(f"blocks: expected 1..{MAX_MINE_BLOCKS}, got {blocks}")
            if interval:
                l1.check_warp(interval * (blocks - 1), "interval")
            for i in range(blocks):
                if interval and i > 0:
                    l1.increase_time(interval)
                l1.mine(1)
            return None

        def increase_time(_tester: Any, params: Any) -> int:
            require_controls("evm_increaseTime")
            return l1.increase_time(_int_param(params, 0, "seconds"))

        def set_next_ts(_tester: Any, params: Any) -> None:
            require_controls("evm_setNextBlockTimestamp")
            l1.set_next_block_timestamp(_int_param(params, 0, "timestamp"))
            return None

        def set_automine(_tester: Any, params: Any) -> None:
            require_controls("evm_setAutomine")
            on = params[0] if params else None
            if not isinstance(on, bool):
                raise InvalidParams("enabled: expected true or false")
            l1.auto_mine = on
            return None

        endpoints["evm"]["mine"] = mine
        endpoints["evm"]["increaseTime"] = increase_time
        endpoints["evm"]["setNextBlockTimestamp"] = set_next_ts
        endpoints["evm"]["setAutomine"] = set_automine
        endpoints["anvil"] = {
            "mine": anvil_mine,
            "increaseTime": increase_time,
            "setNextBlockTimestamp": set_next_ts,
            "setAutomine": set_automine,
        }
        super().__init__(ethereum_tester=l1.tester, api_endpoints=endpoints)
        self._l1 = l1

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = repr(self._current_request_id)
        self._current_request_id += 1
        namespace, _, endpoint = method.partition("_")
        delegator = (self.api_endpoints or {}).get(namespace, {}).get(endpoint)
        if delegator is None:
            return _error_response(request_id, -32601, f"Method not found: {method}")
        with self._l1.lock:
            try:
                result = delegator(self.ethereum_tester, params)
            except NotImplementedError:
                return _error_response(request_id, -32601, f"Method not implemented: {method}")
            except TransactionFailed as exc:
                message, data = _revert_message_and_data(exc)
                return _error_response(request_id, 3, message, data)
            except InvalidParams as exc:
                return _error_response(request_id, -32602, str(exc))
            except Exception as exc:  # noqa: BLE001 - a node reports every failure as an RPC error
                log.debug("L1 RPC %s failed: %r", method, exc)
                return _error_response(request_id, -32000, f"{type(exc).__name__}: {exc}")
        return {"id": request_id, "jsonrpc": "2.0", "result": result}  # type: ignore[typeddict-item]


class EmbeddedL1:
    """An in-process L1 chain (see the module docstring).

    Parameters: ``chain_id`` (900), ``auto_mine`` (mine a block per
    transaction; default False: transactions wait in the pending block until
    ``mine()``), ``accounts`` and ``balance_wei`` for the dev accounts,
    ``clock`` (a ``time.time``-like function, for tests), ``datadir`` (None:
    in memory; else the directory of the chain's LevelDB, created or
    reopened; see "Persistence" in the module docstring) and ``sync`` (with a
    datadir: fsync every write, default True; False still survives a killed
    process, not a power loss).

    Reopening a datadir needs the same ``chain_id`` and dev accounts
    (``accounts``, ``balance_wei``, ``mnemonic``) it was created with, else
    ValueError. Pending (sent, unmined) transactions are not persisted.
    """

    def __init__(
        self,
        *,
        chain_id: int = L1_CHAIN_ID,
        auto_mine: bool = False,
        accounts: int = DEV_ACCOUNT_COUNT,
        balance_wei: int = DEV_BALANCE_WEI,
        mnemonic: str = DEV_MNEMONIC,
        clock: Callable[[], float] = time.time,
        datadir: str | os.PathLike[str] | None = None,
        sync: bool = True,
    ) -> None:
        self._chain_id = chain_id
        self._clock = clock
        # False: the L1 port refuses time warps and anvil_/evm_setAutomine
        # (evm_mine stays: mining on demand changes no rule)
        self.devnet_controls = True
        self._offset = 0
        self._next_block_timestamp: int | None = None
        self._warp_epoch = 0
        self._pending_epoch = 0
        self.lock = threading.RLock()
        self._datadir = os.fspath(datadir) if datadir is not None else None
        self._db: _LevelDB | None = None
        self._saved_meta: bytes | None = None

        meta: dict[str, Any] | None = None
        if self._datadir is not None:
            os.makedirs(self._datadir, exist_ok=True)
            self._db = _LevelDB(self._datadir, sync=sync)
            try:
                meta = self._load_meta()
            except BaseException:
                self._db.close()
                raise

        try:
            self._init_chain(accounts, balance_wei, mnemonic, auto_mine)
        except BaseException:
            if self._db is not None:
                self._db.close()
            raise
        if meta is not None:
            self._offset = int(meta["time_offset"])
            if self.now() > MAX_TIMESTAMP:  # written before warps were bounded
                log.warning("L1 time warp offset %d is out of range; reset to 0", self._offset)
                self._offset = 0
            nbt = meta.get("next_block_timestamp")
            # a crash between mining and saving the meta record leaves an
            # already used timestamp behind: drop it
            if nbt is not None and nbt > self.head()[1]:
                self._next_block_timestamp = int(nbt)
        self._save_meta()

    def _init_chain(self, accounts: int, balance_wei: int, mnemonic: str, auto_mine: bool) -> None:
        clock = self._clock
        genesis_state = _Backend.generate_genesis_state(
            overrides={"balance": balance_wei},
            num_accounts=accounts,
            mnemonic=mnemonic,
            hd_path=DEV_HD_PATH,
        )
        genesis_params = _Backend.generate_genesis_params({"timestamp": int(clock())})
        backend = _Backend(
            genesis_parameters=genesis_params,
            genesis_state=genesis_state,
            mnemonic=mnemonic,
            hd_path=DEV_HD_PATH,
            base_db=self._db,
        )
        backend._l1 = self
        # the chain class is created per backend by eth-tester, so setting the
        # class attribute changes this chain only (and survives snapshots)
        type(backend.chain).chain_id = self._chain_id
        self._backend = backend
        self.tester = _Tester(backend=backend, auto_mine_transactions=auto_mine)
        self._dev_keys = tuple(bytes(k.to_bytes()) for k in backend.account_keys)
        self._dev_accounts = tuple(
            to_checksum_address(k.public_key.to_canonical_address()) for k in backend.account_keys
        )
        self.provider = L1Provider(self)
        self._w3 = Web3(self.provider)

    # -- persistence ---------------------------------------------------

    def _load_meta(self) -> dict[str, Any] | None:
        assert self._db is not None
        try:
            raw = self._db[_META_KEY]
        except KeyError:
            return None
        meta: dict[str, Any] = json.loads(raw)
        if meta.get("version") != _META_VERSION:
            raise ValueError(f"unsupported L1 datadir format: {meta.get('version')!r}")
        if meta.get("chain_id") != self._chain_id:
            raise ValueError(
                f"the L1 datadir holds chain id {meta.get('chain_id')}, not {self._chain_id}"
            )
        return meta

    def _save_meta(self) -> None:
        """Write the bookkeeping record if it changed (no-op in memory)."""
        if self._db is None:
            return
        raw = json.dumps(
            {
                "version": _META_VERSION,
                "chain_id": self._chain_id,
                "time_offset": self._offset,
                "next_block_timestamp": self._next_block_timestamp,
            },
            sort_keys=True,
        ).encode()
        if raw != self._saved_meta:
            self._db[_META_KEY] = raw
            self._saved_meta = raw

    @property
    def datadir(self) -> str | None:
        """The LevelDB directory, or None for an in-memory chain."""
        return self._datadir

    def close(self) -> None:
        """Release the datadir (closes the LevelDB; the object is unusable
        afterwards). Transactions still pending are dropped. Idempotent;
        a no-op for an in-memory chain."""
        with self.lock:
            if self._db is not None and not self._db.closed:
                self._db.close()

    def __enter__(self) -> EmbeddedL1:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- identity ------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def w3(self) -> Web3:
        """web3.Web3 on an EthereumTesterProvider over this chain."""
        return self._w3

    @property
    def dev_keys(self) -> tuple[bytes, ...]:
        """32-byte private keys of the dev accounts (anvil's order)."""
        return self._dev_keys

    @property
    def dev_accounts(self) -> tuple[str, ...]:
        """Checksum addresses of the dev accounts."""
        return self._dev_accounts

    # -- mining --------------------------------------------------------

    @property
    def auto_mine(self) -> bool:
        return bool(self.tester.auto_mine_transactions)

    @auto_mine.setter
    def auto_mine(self, value: bool) -> None:
        with self.lock:
            if value and not self.tester.auto_mine_transactions:
                self.tester.auto_mine_transactions = True
                if self._backend._pending_has_transactions():
                    self.tester.mine_blocks(1)
            elif not value:
                self.tester.auto_mine_transactions = False

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks (the first holds the pending transactions);
        returns the new head block number."""
        if blocks < 1:
            raise ValueError("blocks must be >= 1")
        with self.lock:
            self.tester.mine_blocks(blocks)
            return self._backend.chain.get_canonical_head().block_number

    def pending_transaction_count(self) -> int:
        """Transactions waiting in the pending block."""
        with self.lock:
            return len(self._backend.chain.get_block().transactions)

    # -- time ----------------------------------------------------------

    def now(self) -> int:
        """The chain's notion of now: wall time plus the warp offset."""
        return int(self._clock()) + self._offset

    def _next_timestamp(self, parent_timestamp: int) -> int:
        if self._next_block_timestamp is not None:
            return max(self._next_block_timestamp, parent_timestamp + 1)
        return max(self.now(), parent_timestamp + 1)

    def check_warp(self, seconds: int, name: str = "seconds") -> None:
        """Raise InvalidParams unless moving the clock forward by ``seconds``
        keeps every block timestamp at most MAX_TIMESTAMP."""
        if seconds < 0:
            raise InvalidParams(f"{name}: cannot move time backwards ({seconds})")
        latest = max(self.now(), self._next_block_timestamp or 0) + seconds
        if latest > MAX_TIMESTAMP:
            raise InvalidParams(
                f"{name}: warping by {seconds} s would put L1 time at {latest}, "
                f"beyond {MAX_TIMESTAMP} (year 2106)"
            )

    def increase_time(self, seconds: int) -> int:
        """Shift the clock of the next mined blocks by ``seconds`` (anvil's
        ``evm_increaseTime``); returns the total offset in seconds. Raises
        InvalidParams (a ValueError) for a negative warp or one that would put
        L1 time beyond MAX_TIMESTAMP."""
        with self.lock:
            self.check_warp(seconds)
            self._offset += int(seconds)
            self._warp_epoch += 1
            self._save_meta()
            return self._offset

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """The next mined block gets exactly ``timestamp`` (must be later than
        the head block and at most MAX_TIMESTAMP, else InvalidParams, a
        ValueError); later blocks continue from wall time + offset."""
        with self.lock:
            head_ts = self._backend.chain.get_canonical_head().timestamp
            if timestamp <= head_ts:
                raise InvalidParams(
                    f"timestamp: {timestamp} is not after the head block's ({head_ts})"
                )
            if timestamp > MAX_TIMESTAMP:
                raise InvalidParams(f"timestamp: {timestamp} is beyond {MAX_TIMESTAMP} (year 2106)")
            self._next_block_timestamp = int(timestamp)
            self._warp_epoch += 1
            self._save_meta()

    @property
    def time_offset(self) -> int:
        return self._offset

    # -- inspection ----------------------------------------------------

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest mined block."""
        with self.lock:
            header = self._backend.chain.get_canonical_head()
            return header.block_number, header.timestamp
