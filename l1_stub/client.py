"""L1 bindings for the USDC and Rollup contracts, through web3.py only.

They work unchanged against the embedded chain (``EmbeddedL1.w3``) and any
Ethereum JSON-RPC node (``Web3(HTTPProvider(url))``). Transactions are
signed locally with eth-account from raw private keys and sent with
``eth_sendRawTransaction``; ``send_*`` / most ``RollupClient`` methods return
the transaction hash at once. The embedded chain may not auto-mine, so
``wait_receipt`` takes an optional ``mine`` callback (e.g. ``l1.mine``)
that it calls while the receipt is missing.

Gas limits are explicit (fixed per call, a formula for ``submitBatch``), so
sending never depends on ``eth_estimateGas`` against a pending state the
node does not show yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from l1_stub.contracts import load_contract

MineFn = Callable[[], Any]

DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei

# the Rollup's creation uses ~3.2M (14.3 KB of runtime code)
GAS_DEPLOY = 8_000_000  # a 24,576-byte contract costs ~5M to create (200 gas per code byte)
GAS_FAUCET = 100_000
GAS_APPROVE = 100_000
GAS_TRANSFER = 100_000
GAS_DEPOSIT = 200_000
# submitBatch: the gas used is max(21k + calldata (16/4 gas per non-zero/zero
# byte) + execution, 21k + EIP-7623 floor (40/10 per byte)). Execution is
# ~170k fixed (3 fresh slots, the 128 KiB calldata copy's memory) plus
# ~270 gas per fill step (the walk over block headers and type bytes; the
# step commitment is no longer built on chain: it was ~1.2k per step), more
# per deposit (its queue check), so the floor binds for fills: a full batch of 500 fills
# uses 4.29M gas, before and after that change.
GAS_BATCH_BASE = 300_000
GAS_BATCH_PER_BYTE = 72
# tx_root_of (a view, for eth_call): ~0.77M execution for a full batch of
# fills plus its 128 KiB of calldata
GAS_TX_ROOT_OF = 12_000_000


# settlement calls (measured in tests/test_settlement_contracts.py): a proof
# costs ~1k gas per sibling (calldata + keccak). finalizeBatch ~54k;
# finalizeWithdrawal ~85-105k at depth ~16; escape ~125k with 2 positions
# and 6 markets, ~450k with 64 positions and 64 markets (~29 KB calldata);
# freeze ~76k plus ~6.2k per batch it finalizes
GAS_FINALIZE_BATCH = 100_000
GAS_FINALIZE_WITHDRAWAL_BASE = 150_000
GAS_ESCAPE_BASE = 300_000
GAS_ESCAPE_PER_LEAF_BYTE = 40
GAS_PER_SIBLING = 2_000
GAS_FREEZE_BASE = 200_000
GAS_FREEZE_PER_BATCH = 16_000  # ~11k measured with the dispute game's view
GAS_RECLAIM = 150_000
GAS_INITIALIZE = 200_000
GAS_CLAIM_BONDS = 100_000


def batch_gas_limit(batch_data_len: int) -> int:
    """Gas limit ``submit_batch`` uses for ``batch_data_len`` bytes."""
    return GAS_BATCH_BASE + GAS_BATCH_PER_BYTE * batch_data_len


ETHER = 10**18


@dataclass(frozen=True)
class SettlementWindows:
    """Settlement timing and dispute parameters of a Rollup deployment
    (docs/protocol.md "Settlement (L1)", "Disputes (L1)"). Seconds of L1
    time: a batch is final ``challenge_window`` after it was posted; a
    deposit must be consumed within ``inclusion_window``; anyone may freeze
    the rollup after ``escape_delay`` without a batch; each dispute party has
    ``clock`` seconds in total; an L2 block may be at most ``max_drift``
    ahead of L1. ``dissection_degree`` is k of the n-ary dissection (2..16);
    bonds are wei. Iterating gives the three windows only."""

    challenge_window: int
    inclusion_window: int
    escape_delay: int
    dissection_degree: int = 16
    clock: int = 30
    challenger_bond: int = ETHER // 10
    proposer_bond: int = ETHER // 10
    max_drift: int = 300

    def __iter__(self) -> Iterator[int]:
        return iter((self.challenge_window, self.inclusion_window, self.escape_delay))


DAY = 86_400
PRESETS: dict[str, SettlementWindows] = {
    "devnet": SettlementWindows(challenge_window=60, inclusion_window=30, escape_delay=120),
    "mainnet": SettlementWindows(
        challenge_window=7 * DAY, inclusion_window=12 * 3600, escape_delay=7 * DAY,
        clock=7 * DAY // 2, challenger_bond=ETHER, proposer_bond=ETHER, max_drift=1800,
    ),
}
# what deploy() checks (the contracts enforce the degree range too)
DISSECTION_DEGREES = range(2, 17)
# a placeholder prover address for deployments without a one-step prover
# contract (no code there: every prove() reverts)
NO_PROVER = "0x000000000000000000000000000000000000dEaD"


class TransactionReverted(RuntimeError):
    """A mined transaction with status 0. ``receipt`` is the receipt,
    ``reason`` the revert reason replayed with eth_call (may be empty)."""

    def __init__(self, receipt: Any, reason: str = "") -> None:
        self.receipt = receipt
        self.reason = reason
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        super().__init__(f"transaction {tx_hash} reverted" + (f": {reason}" if reason else ""))


@dataclass(frozen=True)
class Deployment:
    """Addresses of the deployed contracts and the block of the Rollup's
    deployment (where log scans start)."""

    usdc: str
    rollup: str
    deploy_block: int
    chain_id: int
    dispute_game: str = ""  # "" = read Rollup.dispute_game()


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored by the Rollup (docs/protocol.md "Batches (L1)")."""

    index: int
    data_hash: bytes  # keccak256(batch_data): the batch commitment
    state_root: bytes
    l1_timestamp: int
    first_block: int
    block_count: int
    step_count: int
    deposit_end: int


@dataclass(frozen=True)
class L1Snapshot:
    """What the node reads from L1 once per L1 block: the head block
    (number, hash, parent hash, timestamp in unix s) and the Rollup's views
    at that block. ``latest_batch`` is the record of batch
    ``batch_count - 1`` (None before the first batch);
    ``last_batch_timestamp`` is its L1 timestamp (the deployment's before
    any batch), from which the escape delay runs."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    batch_count: int
    finalized_batch_count: int
    next_l2_block: int
    frozen: bool
    last_batch_timestamp: int
    deposit_count: int
    latest_batch: BatchRecord | None


@dataclass(frozen=True)
class DepositEntry:
    """One deposit queue entry: ``account`` is the L2 recipient (``to``),
    ``amount`` USDC base units, ``running_hash`` the queue hash after it,
    ``l1_block`` / ``timestamp`` where and when it was queued."""

    index: int
    account: str
    amount: int
    running_hash: bytes
    l1_block: int
    timestamp: int
    sender: str
    tx_hash: bytes


@dataclass(frozen=True)
class BatchSubmission:
    """A ``submitBatch`` call as found on L1: the event fields plus the
    calldata (``batch_data``) needed to re-derive the L2 blocks."""

    index: int
    first_block: int
    block_count: int
    step_count: int
    state_root: bytes
    data_hash: bytes
    deposit_end: int
    batch_data: bytes
    l1_block: int
    tx_hash: bytes


# ---------------------------------------------------------------- sending


def _address_of(key: bytes) -> str:
    return Account.from_key(key).address


def _fee_fields(w3: Web3, priority_fee: int) -> dict[str, int]:
    base_fee = int(w3.eth.get_block("pending").get("baseFeePerGas") or 0)
    return {"maxFeePerGas": 2 * base_fee + priority_fee, "maxPriorityFeePerGas": priority_fee}


NONCE_RETRIES = 3


def is_nonce_error(exc: BaseException) -> bool:
    """A send refused for its nonce (another client used the same key)."""
    text = str(exc).lower()
    return "nonce" in text and ("invalid" in text or "too low" in text or "already" in text)


def is_gas_limit_error(exc: BaseException) -> bool:
    """A send refused because the pending L1 block has no room for its gas
    limit (retry in a later block)."""
    text = str(exc).lower()
    return "exceeds gas limit" in text or "gas cannot be negative" in text


def send_transaction(
    w3: Web3,
    key: bytes,
    *,
    to: str | None,
    data: bytes = b"",
    gas: int,
    value: int = 0,
    nonce: int | None = None,
    priority_fee: int = DEFAULT_PRIORITY_FEE,
) -> HexBytes:
    """Sign an EIP-1559 transaction with ``key`` and send it raw; returns the
    transaction hash. ``to=None`` creates a contract from ``data``.

    Without ``nonce`` the nonce comes from the pending state at send time,
    and a send refused for its nonce (another client sending with the same
    key in between) is re-signed with a fresh one, up to NONCE_RETRIES
    times; other errors (e.g. "Transaction exceeds gas limit" when the
    pending L1 block is full) propagate."""
    if nonce is not None:
        return _send_once(w3, key, to=to, data=data, gas=gas, value=value, nonce=nonce,
                          priority_fee=priority_fee)
    sender = _address_of(key)
    for attempt in range(NONCE_RETRIES + 1):
        fresh = w3.eth.get_transaction_count(sender, "pending")
        try:
            return _send_once(w3, key, to=to, data=data, gas=gas, value=value, nonce=fresh,
                              priority_fee=priority_fee)
        except Exception as exc:
            if attempt == NONCE_RETRIES or not is_nonce_error(exc):
                raise
    raise AssertionError("unreachable")


def _send_once(w3: Web3, key: bytes, *, to: str | None, data: bytes, gas: int, value: int,
               nonce: int, priority_fee: int) -> HexBytes:
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": w3.eth.chain_id,
        "nonce": nonce,
        "gas": gas,
        "value": value,
        "data": HexBytes(data),
        **_fee_fields(w3, priority_fee),
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    signed = Account.sign_transaction(tx, key)
    try:
        return w3.eth.send_raw_transaction(signed.raw_transaction)
    except Web3RPCError as exc:
        mined = _mined_despite_error(exc)
        if mined is None:
            raise
        return mined


def _mined_despite_error(exc: Web3RPCError) -> HexBytes | None:
    """The hash of a transaction an automining hardhat node mined as
    reverted while answering its send with an error ("VM Exception while
    processing transaction", the hash in ``data.txHash``); None for any
    other error. Its receipt (status 0) then tells the revert as on any node."""
    error = (exc.rpc_response or {}).get("error") or {}
    data = error.get("data") if isinstance(error, dict) else None
    tx_hash = data.get("txHash") if isinstance(data, dict) else None
    return HexBytes(tx_hash) if isinstance(tx_hash, str) else None


def send_call(w3: Web3, key: bytes, fn: Any, *, gas: int, nonce: int | None = None,
              value: int = 0) -> HexBytes:
    """Send the bound contract function ``fn`` (``contract.functions.f(args)``)
    with ``value`` wei."""
    data = HexBytes(fn._encode_transaction_data())
    return send_transaction(w3, key, to=fn.address, data=data, gas=gas, nonce=nonce, value=value)


def revert_reason(w3: Web3, receipt: Any) -> str:
    """Best-effort revert reason of a failed transaction: replays it with
    eth_call on the state before its block (earlier transactions of the same
    block are not replayed)."""
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    call: dict[str, Any] = {"from": tx["from"], "data": tx["input"], "value": tx["value"]}
    if tx.get("to"):
        call["to"] = tx["to"]
    call["gas"] = tx["gas"]
    try:
        w3.eth.call(call, block_identifier=max(0, receipt["blockNumber"] - 1))
    except ContractLogicError as exc:
        message = str(getattr(exc, "message", None) or exc)
        return message.removeprefix("execution reverted: ")
    except Exception as exc:  # noqa: BLE001 - reason is best effort only
        return f"(no reason: {exc})"
    return ""


def wait_receipt(
    w3: Web3,
    tx_hash: bytes | str,
    mine: MineFn | None = None,
    *,
    timeout: float = 60.0,
    poll: float = 0.05,
    check: bool = True,
) -> Any:
    """Wait for the receipt of ``tx_hash``. With ``mine``, call it whenever
    the receipt is missing (manual-mining chains); else poll every ``poll``
    seconds. With ``check``, raise TransactionReverted on status 0."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            receipt = None
        if receipt is not None and receipt.get("blockNumber") is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no receipt for {HexBytes(tx_hash).to_0x_hex()} in {timeout} s")
        if mine is not None:
            mine()
        else:
            time.sleep(poll)
    if check and receipt["status"] != 1:
        raise TransactionReverted(receipt, revert_reason(w3, receipt))
    return receipt


# ---------------------------------------------------------------- deploy


def send_deploy(
    w3: Web3,
    key: bytes,
    name: str,
    args: Sequence[Any] = (),
    *,
    nonce: int | None = None,
    overrides: Mapping[str, int] | None = None,
) -> HexBytes:
    """Send the creation transaction of contract ``name`` with constructor
    ``args`` (``overrides``: compile-time constants, see l1_stub.contracts)."""
    abi, bytecode = load_contract(name, overrides)
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    data = HexBytes(factory.constructor(*args).data_in_transaction)
    # code deposit is 200 gas per runtime byte: a contract near EIP-170's
    # 24,576 bytes needs more than GAS_DEPLOY
    gas = max(GAS_DEPLOY, 1_000_000 + 260 * len(data))
    return send_transaction(w3, key, to=None, data=data, gas=gas, nonce=nonce)


def deploy(
    w3: Web3,
    deployer_key: bytes,
    sequencer: str,
    genesis_state_root: bytes,
    l2_chain_id: int,
    *,
    mine: MineFn | None = None,
    timeout: float = 60.0,
    rollup_overrides: Mapping[str, int] | None = None,
    challenge_window: int = PRESETS["devnet"].challenge_window,
    inclusion_window: int = PRESETS["devnet"].inclusion_window,
    escape_delay: int = PRESETS["devnet"].escape_delay,
    dissection_degree: int = PRESETS["devnet"].dissection_degree,
    clock: int = PRESETS["devnet"].clock,
    challenger_bond: int = PRESETS["devnet"].challenger_bond,
    proposer_bond: int = PRESETS["devnet"].proposer_bond,
    max_drift: int = PRESETS["devnet"].max_drift,
    prover: str | None = None,
) -> Deployment:
    """Deploy USDC, the one-step prover, the DisputeGame, the Rollup bound to
    them, then ``DisputeGame.initialize(rollup)``; waits for every receipt
    (calling ``mine`` on a manual-mining chain). ``rollup_overrides``
    changes the Rollup's compile-time limits (MAX_BATCH_BYTES, MAX_STEPS,
    MAX_FINALIZE_ON_FREEZE). The settlement windows and dispute parameters
    default to ``PRESETS["devnet"]``; pass ``**asdict(PRESETS["mainnet"])``
    for the mainnet values. ``prover``: the one-step prover's address; None
    deploys OneStepFill + OneStepRisk + OneStepLiquidate + OneStepDeleverage +
    OneStepProver when this build has them, else
    uses NO_PROVER. Raises ValueError for a value out of range."""
    if len(genesis_state_root) != 32:
        raise ValueError("genesis_state_root must be 32 bytes")
    for name, value in (
        ("challenge_window", challenge_window),
        ("inclusion_window", inclusion_window),
        ("escape_delay", escape_delay),
        ("max_drift", max_drift),
    ):
        if not 0 <= int(value) < 2**64:
            raise ValueError(f"{name} must be a non-negative number of seconds")
    if not 0 < int(clock) < 2**64:
        raise ValueError("clock must be a positive number of seconds")
    if int(dissection_degree) not in DISSECTION_DEGREES:
        raise ValueError("dissection_degree must be 2..16")
    for name, value in (("challenger_bond", challenger_bond), ("proposer_bond", proposer_bond)):
        if not 0 <= int(value) < 2**128:
            raise ValueError(f"{name} must be a non-negative amount of wei")
    nonce = w3.eth.get_transaction_count(_address_of(deployer_key), "pending")
    usdc_hash = send_deploy(w3, deployer_key, "USDC", nonce=nonce)
    usdc_receipt = wait_receipt(w3, usdc_hash, mine, timeout=timeout)
    usdc = usdc_receipt["contractAddress"]
    nonce += 1
    if prover is None:
        prover, nonce = _deploy_prover(w3, deployer_key, nonce, mine, timeout)
    game_hash = send_deploy(
        w3, deployer_key, "DisputeGame",
        (to_checksum_address(prover), int(dissection_degree), int(clock), int(challenger_bond)),
        nonce=nonce,
    )
    game = wait_receipt(w3, game_hash, mine, timeout=timeout)["contractAddress"]
    rollup_hash = send_deploy(
        w3,
        deployer_key,
        "Rollup",
        (
            usdc,
            to_checksum_address(sequencer),
            bytes(genesis_state_root),
            l2_chain_id,
            int(challenge_window),
            int(inclusion_window),
            int(escape_delay),
            game,
            int(proposer_bond),
            int(max_drift),
        ),
        nonce=nonce + 1,
        overrides=rollup_overrides,
    )
    rollup_receipt = wait_receipt(w3, rollup_hash, mine, timeout=timeout)
    rollup = rollup_receipt["contractAddress"]
    game_abi, _ = load_contract("DisputeGame")
    init = w3.eth.contract(address=game, abi=game_abi).functions.initialize(rollup)
    wait_receipt(w3, send_call(w3, deployer_key, init, gas=GAS_INITIALIZE, nonce=nonce + 2),
                 mine, timeout=timeout)
    return Deployment(
        usdc=to_checksum_address(usdc),
        rollup=to_checksum_address(rollup),
        deploy_block=int(rollup_receipt["blockNumber"]),
        chain_id=int(w3.eth.chain_id),
        dispute_game=to_checksum_address(game),
    )


def _deploy_prover(w3: Web3, key: bytes, nonce: int, mine: MineFn | None,
                   timeout: float) -> tuple[str, int]:
    """Deploy OneStepFill, OneStepRisk, OneStepLiquidate, OneStepDeleverage,
    then OneStepProver(fill, risk, liquidate, deleverage) if this build has them; returns
    (prover address, next nonce). Without them: (NO_PROVER, nonce)."""
    from l1_stub.contracts import CONTRACT_NAMES

    names = {"OneStepProver", "OneStepFill", "OneStepRisk", "OneStepLiquidate", "OneStepDeleverage"}
    if not names <= set(CONTRACT_NAMES):
        return NO_PROVER, nonce
    fill = wait_receipt(w3, send_deploy(w3, key, "OneStepFill", nonce=nonce), mine,
                        timeout=timeout)["contractAddress"]
    risk = wait_receipt(w3, send_deploy(w3, key, "OneStepRisk", nonce=nonce + 1), mine,
                        timeout=timeout)["contractAddress"]
    liquidate = wait_receipt(w3, send_deploy(w3, key, "OneStepLiquidate", nonce=nonce + 2), mine,
                             timeout=timeout)["contractAddress"]
    deleverage = wait_receipt(w3, send_deploy(w3, key, "OneStepDeleverage", nonce=nonce + 3), mine,
                              timeout=timeout)["contractAddress"]
    prover = wait_receipt(w3, send_deploy(w3, key, "OneStepProver", (fill, risk, liquidate, deleverage),
                                          nonce=nonce + 4), mine, timeout=timeout)["contractAddress"]
    return prover, nonce + 5


# ---------------------------------------------------------------- client


def _b32(value: Any) -> bytes:
    return bytes(value)


class RollupClient:
    """Calls and transactions on a deployed USDC + Rollup pair.

    Sending methods take the sender's private key and return the transaction
    hash (use ``wait_receipt``); views read the ``latest`` block.
    """

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        usdc_abi, _ = load_contract("USDC")
        rollup_abi, _ = load_contract("Rollup")
        self.usdc = w3.eth.contract(address=deployment.usdc, abi=usdc_abi)
        self.rollup = w3.eth.contract(address=deployment.rollup, abi=rollup_abi)
        self._proposer_bond: int | None = None

    # -- USDC ------------------------------------------------------------

    def faucet(self, key: bytes, amount: int) -> HexBytes:
        """Mint ``amount`` base units of USDC to the key's address."""
        return send_call(self.w3, key, self.usdc.functions.faucet(amount), gas=GAS_FAUCET)

    def approve(self, key: bytes, amount: int, spender: str | None = None) -> HexBytes:
        """Approve ``spender`` (default: the Rollup) for ``amount``."""
        spender = spender or self.deployment.rollup
        return send_call(self.w3, key, self.usdc.functions.approve(spender, amount), gas=GAS_APPROVE)

    def transfer(self, key: bytes, to: str, amount: int) -> HexBytes:
        fn = self.usdc.functions.transfer(to_checksum_address(to), amount)
        return send_call(self.w3, key, fn, gas=GAS_TRANSFER)

    def usdc_balance(self, address: str) -> int:
        return int(self.usdc.functions.balanceOf(to_checksum_address(address)).call())

    def usdc_allowance(self, owner: str, spender: str | None = None) -> int:
        spender = spender or self.deployment.rollup
        fn = self.usdc.functions.allowance(to_checksum_address(owner), spender)
        return int(fn.call())

    # -- deposits --------------------------------------------------------

    def deposit(self, key: bytes, to: str | bytes, amount: int) -> HexBytes:
        """Queue a deposit of ``amount`` to L2 account ``to`` (needs approval)."""
        fn = self.rollup.functions.deposit(to_checksum_address(to), amount)
        return send_call(self.w3, key, fn, gas=GAS_DEPOSIT)

    def deposit_count(self) -> int:
        return int(self.rollup.functions.deposit_count().call())

    def deposit_hash(self, index: int) -> bytes:
        """Running hash after entry ``index``."""
        return _b32(self.rollup.functions.deposit_hashes(index).call())

    def deposit_timestamp(self, index: int) -> int:
        return int(self.rollup.functions.deposit_timestamps(index).call())

    def deposits(
        self, from_index: int = 0, to_index: int | None = None, *, from_block: int | None = None
    ) -> list[DepositEntry]:
        """Queue entries ``from_index <= index < to_index`` (default: all
        queued), from the DepositQueued logs (scanned from ``from_block``,
        default the deployment block)."""
        if to_index is None:
            to_index = self.deposit_count()
        if to_index <= from_index:
            return []
        start = self.deployment.deploy_block if from_block is None else from_block
        logs = self.rollup.events.DepositQueued().get_logs(from_block=start, to_block="latest")
        found: dict[int, DepositEntry] = {}
        for entry in logs:
            args = entry["args"]
            index = int(args["index"])
            if from_index <= index < to_index:
                found[index] = DepositEntry(
                    index=index,
                    account=to_checksum_address(args["to"]),
                    amount=int(args["amount"]),
                    running_hash=_b32(args["running_hash"]),
                    l1_block=int(entry["blockNumber"]),
                    timestamp=int(args["timestamp"]),
                    sender=to_checksum_address(args["sender"]),
                    tx_hash=bytes(entry["transactionHash"]),
                )
        missing = [i for i in range(from_index, to_index) if i not in found]
        if missing:
            raise LookupError(f"deposit logs missing for indices {missing[:5]}...")
        return [found[i] for i in range(from_index, to_index)]

    # -- batches ---------------------------------------------------------

    def submit_batch(
        self,
        key: bytes,
        batch_data: bytes,
        state_root: bytes,
        deposit_end: int,
        *,
        gas: int | None = None,
        preflight: bool = False,
    ) -> HexBytes:
        """Send ``submitBatch``; returns the transaction hash. The gas limit
        is ``batch_gas_limit(len(batch_data))`` unless given. With
        ``preflight``, first eth_call it on the pending state so a bad batch
        raises ContractLogicError (with the named reason) instead of being
        mined as a failed transaction."""
        fn = self.rollup.functions.submitBatch(bytes(batch_data), bytes(state_root), deposit_end)
        bond = self.proposer_bond()
        if preflight:
            fn.call({"from": _address_of(key), "value": bond}, block_identifier="pending")
        return send_call(
            self.w3, key, fn, gas=gas if gas is not None else batch_gas_limit(len(batch_data)),
            value=bond,
        )

    def proposer_bond(self) -> int:
        """Wei each submitBatch must carry (immutable: read once)."""
        if self._proposer_bond is None:
            self._proposer_bond = int(self.rollup.functions.proposer_bond().call())
        return self._proposer_bond

    def dispute_game_address(self) -> str:
        """The DisputeGame this Rollup defers to (immutable)."""
        if self.deployment.dispute_game:
            return self.deployment.dispute_game
        return to_checksum_address(self.rollup.functions.dispute_game().call())

    def batch_id(self, index: int, block: int | str = "latest") -> int:
        """Unique id of batch ``index`` (0: no such batch)."""
        return int(self.rollup.functions.batch_id(index).call(block_identifier=block))

    def last_l2_timestamp(self) -> int:
        """Timestamp of the latest posted L2 block (0 before any batch)."""
        return int(self.rollup.functions.last_l2_timestamp().call())

    def max_drift(self) -> int:
        return int(self.rollup.functions.max_drift().call())

    def sequencer_bonds(self) -> int:
        """Proposer bonds (wei) the sequencer may claim with claim_bonds."""
        return int(self.rollup.functions.sequencer_bonds().call())

    def claim_bonds(self, key: bytes) -> HexBytes:
        """Send ``claimBonds()``: pays the sequencer its claimable bonds."""
        return send_call(self.w3, key, self.rollup.functions.claimBonds(), gas=GAS_CLAIM_BONDS)

    def snapshot(self) -> L1Snapshot:
        """The L1 head block and the Rollup's views at it (see L1Snapshot):
        one block read and six view calls."""
        block = self.w3.eth.get_block("latest")
        at = int(block["number"])
        f = self.rollup.functions
        progress_count = int(f.batch_count().call(block_identifier=at))
        latest = self.get_batch(progress_count - 1, at) if progress_count else None
        return L1Snapshot(
            number=at,
            hash=bytes(block["hash"]),
            parent_hash=bytes(block["parentHash"]),
            timestamp=int(block["timestamp"]),
            batch_count=progress_count,
            finalized_batch_count=int(f.finalized_batch_count().call(block_identifier=at)),
            next_l2_block=int(f.next_l2_block().call(block_identifier=at)),
            frozen=bool(f.frozen().call(block_identifier=at)),
            last_batch_timestamp=int(f.last_batch_timestamp().call(block_identifier=at)),
            deposit_count=int(f.deposit_count().call(block_identifier=at)),
            latest_batch=latest,
        )

    def max_batch_bytes(self) -> int:
        return int(self.rollup.functions.MAX_BATCH_BYTES().call())

    def max_steps(self) -> int:
        return int(self.rollup.functions.MAX_STEPS().call())

    def batch_count(self, block: int | str = "latest") -> int:
        return int(self.rollup.functions.batch_count().call(block_identifier=block))

    def get_batch(self, index: int, block: int | str = "latest") -> BatchRecord:
        b = self.rollup.functions.get_batch(index).call(block_identifier=block)
        return BatchRecord(
            index=index,
            data_hash=_b32(b[0]),
            state_root=_b32(b[1]),
            l1_timestamp=int(b[2]),
            first_block=int(b[3]),
            block_count=int(b[4]),
            step_count=int(b[5]),
            deposit_end=int(b[6]),
        )

    def tx_root_of(self, index: int, batch_data: bytes, block: int | str = "latest") -> bytes:
        """The step commitment (tx_root) of batch ``index`` computed on L1
        from its data (a view; ~0.77M gas of execution for a full batch).
        Raises ContractLogicError ``rollup: batch data mismatch`` if
        keccak256(batch_data) is not the batch's data hash."""
        fn = self.rollup.functions.tx_root_of(index, bytes(batch_data))
        return _b32(fn.call({"gas": GAS_TX_ROOT_OF}, block_identifier=block))

    def latest_state_root(self) -> bytes:
        return _b32(self.rollup.functions.latest_state_root().call())

    def next_l2_block(self, block: int | str = "latest") -> int:
        """First L2 block of the next batch; at ``"pending"`` it counts the
        batches sent but not yet mined."""
        return int(self.rollup.functions.next_l2_block().call(block_identifier=block))

    def deposits_consumed(self) -> int:
        return int(self.rollup.functions.deposits_consumed().call())

    def sequencer(self) -> str:
        return to_checksum_address(self.rollup.functions.sequencer().call())

    def genesis_state_root(self) -> bytes:
        return _b32(self.rollup.functions.genesis_state_root().call())

    def l2_chain_id(self) -> int:
        return int(self.rollup.functions.l2_chain_id().call())

    def batch_submissions(
        self, from_block: int | None = None, to_block: int | str = "latest"
    ) -> list[BatchSubmission]:
        """Every ``submitBatch`` in the block range, with its calldata, from
        the BatchSubmitted logs and the transactions that emitted them."""
        start = self.deployment.deploy_block if from_block is None else from_block
        logs = self.rollup.events.BatchSubmitted().get_logs(from_block=start, to_block=to_block)
        out = []
        for entry in logs:
            args = entry["args"]
            tx = self.w3.eth.get_transaction(entry["transactionHash"])
            _fn, params = self.rollup.decode_function_input(tx["input"])
            out.append(
                BatchSubmission(
                    index=int(args["index"]),
                    first_block=int(args["first_block"]),
                    block_count=int(args["block_count"]),
                    step_count=int(args["step_count"]),
                    state_root=_b32(args["state_root"]),
                    data_hash=_b32(args["data_hash"]),
                    deposit_end=int(args["deposit_end"]),
                    batch_data=bytes(params["batch_data"]),
                    l1_block=int(entry["blockNumber"]),
                    tx_hash=bytes(entry["transactionHash"]),
                )
            )
        out.sort(key=lambda s: s.index)
        return out

    # -- settlement: finality -------------------------------------------

    def challenge_window(self) -> int:
        return int(self.rollup.functions.challenge_window().call())

    def inclusion_window(self) -> int:
        return int(self.rollup.functions.inclusion_window().call())

    def escape_delay(self) -> int:
        return int(self.rollup.functions.escape_delay().call())

    def windows(self) -> SettlementWindows:
        """The deployment's settlement windows and dispute parameters (from
        the Rollup and its DisputeGame)."""
        game_abi, _ = load_contract("DisputeGame")
        game = self.w3.eth.contract(address=self.dispute_game_address(), abi=game_abi).functions
        return SettlementWindows(
            self.challenge_window(), self.inclusion_window(), self.escape_delay(),
            dissection_degree=int(game.dissection_degree().call()),
            clock=int(game.clock_seconds().call()),
            challenger_bond=int(game.challenger_bond().call()),
            proposer_bond=self.proposer_bond(),
            max_drift=self.max_drift(),
        )

    def last_batch_timestamp(self) -> int:
        """L1 timestamp of the latest batch (of the deployment if none)."""
        return int(self.rollup.functions.last_batch_timestamp().call())

    def finalize_batch(self, key: bytes, index: int) -> HexBytes:
        """Send ``finalizeBatch(index)`` (anyone may)."""
        fn = self.rollup.functions.finalizeBatch(index)
        return send_call(self.w3, key, fn, gas=GAS_FINALIZE_BATCH)

    def finalized_batch_count(self) -> int:
        return int(self.rollup.functions.finalized_batch_count().call())

    def is_finalizable(self, index: int) -> bool:
        return bool(self.rollup.functions.is_finalizable(index).call())

    def latest_finalized_state_root(self) -> bytes:
        return _b32(self.rollup.functions.latest_finalized_state_root().call())

    # -- settlement: withdrawals ----------------------------------------

    def finalize_withdrawal(
        self,
        key: bytes,
        batch_index: int,
        withdrawal_id: int,
        account: str | bytes,
        recipient: str | bytes,
        amount: int,
        siblings: Sequence[bytes],
        *,
        gas: int | None = None,
    ) -> HexBytes:
        """Send ``finalizeWithdrawal``: pays ``amount`` to ``recipient`` given
        the sparse Merkle proof ``siblings`` (root first, e.g.
        ``SparseMerkleProof.siblings``) of the withdrawal leaf in the state
        root of final batch ``batch_index``. Anyone may send it."""
        fn = self.rollup.functions.finalizeWithdrawal(
            batch_index,
            withdrawal_id,
            to_checksum_address(account),
            to_checksum_address(recipient),
            amount,
            [bytes(s) for s in siblings],
        )
        if gas is None:
            gas = GAS_FINALIZE_WITHDRAWAL_BASE + GAS_PER_SIBLING * len(siblings)
        return send_call(self.w3, key, fn, gas=gas)

    def withdrawal_paid(self, withdrawal_id: int) -> bool:
        return bool(self.rollup.functions.withdrawal_paid(withdrawal_id).call())

    # -- settlement: escape hatch ---------------------------------------

    def freeze(self, key: bytes, *, gas: int | None = None) -> HexBytes:
        """Send ``freeze()`` (anyone may, once the sequencer has posted no
        batch for escape_delay seconds). The gas limit covers finalizing
        the unfinalized batches."""
        if gas is None:
            backlog = self.batch_count() - self.finalized_batch_count()
            gas = GAS_FREEZE_BASE + GAS_FREEZE_PER_BATCH * max(0, backlog)
        return send_call(self.w3, key, self.rollup.functions.freeze(), gas=gas)

    def frozen(self) -> bool:
        return bool(self.rollup.functions.frozen().call())

    def escape_root(self) -> bytes:
        """State root the escape hatch pays from (zero before freezing)."""
        return _b32(self.rollup.functions.escape_root().call())

    def escape_batch_count(self) -> int:
        return int(self.rollup.functions.escape_batch_count().call())

    def escape_deposit_end(self) -> int:
        return int(self.rollup.functions.escape_deposit_end().call())

    def escape(
        self,
        key: bytes,
        account: str | bytes,
        account_leaf: bytes,
        account_siblings: Sequence[bytes],
        markets_leaf: bytes,
        markets_siblings: Sequence[bytes],
        *,
        gas: int | None = None,
    ) -> HexBytes:
        """Send ``escape``: pays ``account`` max(equity, 0) of its leaf in the
        escape root, proven with the account and markets leaves and their
        proofs (siblings root first). Anyone may send it, once per account."""
        fn = self.rollup.functions.escape(
            to_checksum_address(account),
            bytes(account_leaf),
            [bytes(s) for s in account_siblings],
            bytes(markets_leaf),
            [bytes(s) for s in markets_siblings],
        )
        if gas is None:
            gas = (
                GAS_ESCAPE_BASE
                + GAS_PER_SIBLING * (len(account_siblings) + len(markets_siblings))
                + GAS_ESCAPE_PER_LEAF_BYTE * (len(account_leaf) + len(markets_leaf))
            )
        return send_call(self.w3, key, fn, gas=gas)

    def escaped(self, account: str | bytes) -> bool:
        return bool(self.rollup.functions.escaped(to_checksum_address(account)).call())

    def reclaim_deposit(self, key: bytes, index: int) -> HexBytes:
        """Send ``reclaimDeposit(index)``: frozen, refunds a deposit the escape
        state did not consume to its L1 sender. Anyone may send it."""
        fn = self.rollup.functions.reclaimDeposit(index)
        return send_call(self.w3, key, fn, gas=GAS_RECLAIM)

    def deposit_reclaimed(self, index: int) -> bool:
        return bool(self.rollup.functions.deposit_reclaimed(index).call())

    def deposit_sender(self, index: int) -> str:
        return to_checksum_address(self.rollup.functions.deposit_senders(index).call())

    def deposit_amount(self, index: int) -> int:
        return int(self.rollup.functions.deposit_amounts(index).call())


def _stale_connection_retry() -> Any:
    """urllib3 retries for a JSON-RPC session: a request whose pooled
    keep-alive connection the server closed under it (RemoteDisconnected,
    connection reset) or that could not connect is sent again, up to 3 times
    with a short backoff; a read timeout is not retried. Re-sending is safe:
    views are idempotent and a signed raw transaction sent twice is
    rejected as known, never executed twice."""
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.util.retry import Retry

    class StaleConnectionRetry(Retry):
        def increment(self, *args: Any, **kwargs: Any) -> Retry:
            if isinstance(kwargs.get("error"), ReadTimeoutError):
                # urllib3's own increment on a copy that may not retry reads:
                # it re-raises the timeout (calling this override again
                # recursed without end and overflowed the C stack)
                return Retry.increment(self.new(read=False), *args, **kwargs)
            return super().increment(*args, **kwargs)

    return StaleConnectionRetry(total=3, connect=3, read=3, status=0, other=0, redirect=0,
                                allowed_methods=None, backoff_factor=0.05)


@contextmanager
def connect(url: str, timeout: float = 60.0) -> Iterator[Web3]:
    """A Web3 on an HTTP JSON-RPC endpoint whose connections are closed on
    exit; robust to the server closing an idle keep-alive connection
    (``_stale_connection_retry``)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=_stale_connection_retry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        yield Web3(Web3.HTTPProvider(url, session=session, request_kwargs={"timeout": timeout}))
    finally:
        session.close()
