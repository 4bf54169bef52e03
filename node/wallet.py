"""User flows that span L1 and L2: deposit, withdraw (prove and finalize on
L1 once final) and escape. Used by the ``derivnet deposit / withdraw /
escape`` commands and by tests; every function talks to a node over
JSON-RPC (``L2Client``) and to L1 through web3 (``l1_stub.client``).
Amounts are USDC base units (1e-6 USDC).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.client import L2Client, quantity
from node.signing import Signer

Progress = Callable[[str, float | None], None]
"""progress(message, fraction done or None)."""


def _noop(message: str, fraction: float | None) -> None:
    pass


def rollup_client(client: L2Client, w3: Any) -> Any:
    """RollupClient for the contracts named by the node's l2_rollupConfig."""
    from l1_stub.client import Deployment, RollupClient

    cfg = client.config
    return RollupClient(w3, Deployment(cfg["usdc_address"], cfg["rollup_address"],
                                       cfg["genesis"]["l1"]["number"], cfg["l1_chain_id"]))


def _wait_l1(w3: Any, tx: bytes, timeout: float) -> Any:
    from l1_stub.client import wait_receipt

    return wait_receipt(w3, tx, timeout=timeout)


@dataclass(frozen=True)
class DepositResult:
    index: int
    amount: int
    l1_tx: str
    included: bool


def deposit(client: L2Client, w3: Any, signer: Signer, amount: int, to: bytes | None = None,
            wait: bool = True, timeout: float = 60.0, faucet: bool = True) -> DepositResult:
    """Approve and deposit ``amount`` into the Rollup for L2 account ``to``
    (default: the signer); mints from the devnet faucet first if the L1
    balance is short. With ``wait``, returns once the sequencer included it."""
    rollup = rollup_client(client, w3)
    me = "0x" + signer.address.hex()
    if faucet:
        short = amount - rollup.usdc_balance(me)
        while short > 0:
            chunk = min(short, 10_000_000 * 10**6)
            _wait_l1(w3, rollup.faucet(signer.private_key, chunk), timeout)
            short -= chunk
    _wait_l1(w3, rollup.approve(signer.private_key, amount), timeout)
    receipt = _wait_l1(w3, rollup.deposit(signer.private_key, to or signer.address, amount),
                       timeout)
    index = rollup.deposit_count() - 1
    for entry in rollup.deposits(max(0, index - 8), index + 1):
        if entry.tx_hash == bytes(receipt["transactionHash"]):
            index = entry.index
    included = False
    if wait:
        deadline = time.monotonic() + timeout
        while client.sync_status()["deposits_included"] <= index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deposit {index} not included on L2 within {timeout} s")
            time.sleep(0.1)
        included = True
    return DepositResult(index, amount, "0x" + bytes(receipt["transactionHash"]).hex(), included)


@dataclass(frozen=True)
class WithdrawResult:
    withdrawal_id: int
    amount: int
    recipient: str
    l2_tx: str
    l1_tx: str | None
    batch: int | None


def withdraw(client: L2Client, w3: Any, signer: Signer, amount: int,
             recipient: bytes | None = None, warp: bool = False, timeout: float = 120.0,
             progress: Progress = _noop) -> WithdrawResult:
    """Withdraw ``amount``: the L2 ``Withdraw``, then wait until its batch is
    finalized on L1 (``warp``: on a devnet, jump L1 time over the challenge
    window with devnet_increaseTime), then ``Rollup.finalizeWithdrawal``
    with the SMT proof. Raises TimeoutError if it is not final in time."""
    sent = client.withdraw(signer, amount, recipient)
    wid = quantity(sent["withdrawalId"])
    deadline = time.monotonic() + timeout
    warped = False
    while True:
        try:
            w = client.call("l2_getWithdrawal", wid)
        except Exception:  # not sealed yet
            w = None
        if w is not None and w["status"] == "finalized":
            break
        status = client.sync_status()
        batch = status["latest_batch"]
        if w is None or w["batch"] is None:
            progress("waiting for the withdrawal's batch to reach L1", None)
        else:
            left = max(0, batch["secondsToFinality"]) if batch else None
            window = status["challenge_window"] or 1
            frac = None if left is None else 1 - min(1.0, left / window)
            progress(f"batch {w['batch']} on L1; challenge window ends in {left} s", frac)
            if warp and not warped and left:
                client.call("devnet_increaseTime", left + 1)
                client.call("devnet_mine", 1)
                warped = True
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"withdrawal {wid} not final after {timeout} s; on a devnet, warp time with "
                "devnet_increaseTime (or pass --warp)")
        time.sleep(0.2)
    progress("finalizing on L1", 1.0)
    rollup = rollup_client(client, w3)
    siblings = [bytes.fromhex(x[2:]) for x in w["proof"]["siblings"]]
    tx = rollup.finalize_withdrawal(signer.private_key, quantity(w["batch"]), wid,
                                    w["account"], w["recipient"], int(w["amount"]), siblings)
    receipt = _wait_l1(w3, tx, timeout)
    return WithdrawResult(wid, amount, w["recipient"], sent["txHash"],
                          "0x" + bytes(receipt["transactionHash"]).hex(), quantity(w["batch"]))


@dataclass(frozen=True)
class EscapeResult:
    account: str
    amount: int
    l1_tx: str
    froze: bool


def escape(client: L2Client, w3: Any, signer: Signer, freeze: bool = True,
           timeout: float = 60.0) -> EscapeResult:
    """Leave through the escape hatch: freeze the Rollup if it may be frozen
    (no batch for ``escape_delay``) and ``freeze``, then ``Rollup.escape``
    with the account and markets leaves proven at the escape root."""
    rollup = rollup_client(client, w3)
    froze = False
    if not rollup.frozen():
        if not freeze:
            raise RuntimeError("the Rollup is not frozen")
        _wait_l1(w3, rollup.freeze(signer.private_key), timeout)
        froze = True
    p = client.call("l2_getEscapeProof", "0x" + signer.address.hex())
    before = rollup.usdc_balance("0x" + signer.address.hex())
    tx = rollup.escape(
        signer.private_key, "0x" + signer.address.hex(),
        bytes.fromhex(p["accountLeaf"][2:]),
        [bytes.fromhex(x[2:]) for x in p["accountProof"]["siblings"]],
        bytes.fromhex(p["marketsLeaf"][2:]),
        [bytes.fromhex(x[2:]) for x in p["marketsProof"]["siblings"]],
    )
    receipt = _wait_l1(w3, tx, timeout)
    paid = rollup.usdc_balance("0x" + signer.address.hex()) - before
    return EscapeResult("0x" + signer.address.hex(), paid,
                        "0x" + bytes(receipt["transactionHash"]).hex(), froze)
