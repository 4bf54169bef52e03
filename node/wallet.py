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
    """withdrawal_id: L2 withdrawal id; amount: USDC base units; l2_tx: the
    Withdraw's L2 hash (None when resumed by id); l1_tx: the
    finalizeWithdrawal that paid it (None if it was already paid);
    batch: the L1 batch whose root proved it."""

    withdrawal_id: int
    amount: int
    recipient: str
    l2_tx: str | None
    l1_tx: str | None
    batch: int | None
    already_paid: bool = False


def send_withdrawal(client: L2Client, signer: Signer, amount: int,
                    recipient: bytes | None = None) -> tuple[int, str]:
    """The L2 side only: sign and send a Withdraw of ``amount`` (nonce from
    the pending state). Returns (withdrawal id, L2 tx hash); the sequencer
    journals it before answering, so the id survives a node crash.
    Raises node.client.RpcError if the sequencer rejects it."""
    sent = client.withdraw(signer, amount, recipient)
    return quantity(sent["withdrawalId"]), sent["txHash"]


def withdraw(client: L2Client, w3: Any, signer: Signer, amount: int,
             recipient: bytes | None = None, warp: bool = False, timeout: float = 120.0,
             progress: Progress = _noop) -> WithdrawResult:
    """Withdraw ``amount``: the L2 ``Withdraw`` (``send_withdrawal``), then
    ``finish_withdrawal``. If this is interrupted after the first progress
    message, resume with ``finish_withdrawal(..., withdrawal_id)`` instead of
    withdrawing again. Raises TimeoutError if it is not final in time."""
    wid, l2_tx = send_withdrawal(client, signer, amount, recipient)
    progress(f"withdrawal #{wid} sent (resume with: derivnet withdraw --id {wid})", 0.0)
    r = finish_withdrawal(client, w3, signer, wid, warp=warp, timeout=timeout, progress=progress)
    return WithdrawResult(wid, r.amount, r.recipient, l2_tx, r.l1_tx, r.batch, r.already_paid)


def finish_withdrawal(client: L2Client, w3: Any, signer: Signer, withdrawal_id: int,
                      warp: bool = False, timeout: float = 120.0,
                      progress: Progress = _noop) -> WithdrawResult:
    """Finish withdrawal ``withdrawal_id`` (sent earlier, by anyone): wait
    until its own batch is finalized on L1 (``warp``: on a devnet, jump L1
    time over the rest of that batch's challenge window with
    devnet_increaseTime), then ``Rollup.finalizeWithdrawal`` with the SMT
    proof, sent and paid for by ``signer``. If it is already paid, returns
    with ``already_paid`` and sends nothing, so it is safe to run again.

    Raises LookupError if the node knows no such withdrawal (acknowledged
    ones are known at once, sealed or not), TimeoutError if it is not final within ``timeout``
    seconds, l1_stub.client.TransactionReverted if finalizeWithdrawal fails.
    """
    from node.client import RpcError

    wid = withdrawal_id
    deadline = time.monotonic() + timeout
    rollup = rollup_client(client, w3)
    window = quantity(client.config.get("challenge_window") or 0)
    warped = False
    while True:
        try:
            w = client.call("l2_getWithdrawal", wid)
        except RpcError as exc:
            if exc.code != -32001:  # anything but "not found (yet)"
                raise
            w = None
        if w is None:
            raise LookupError(f"no withdrawal #{wid} on this chain")
        if w["paid"] or w["status"] == "finalized":
            break
        if w["status"] == "pending":
            progress(f"withdrawal #{wid}: waiting for its block to be sealed", None)
        elif w["batch"] is None:
            progress(f"withdrawal #{wid}: waiting for its batch to reach L1", None)
        else:
            batch = quantity(w["batch"])
            l1_time = quantity(client.sync_status()["l1_time"])
            final_at = rollup.get_batch(batch).l1_timestamp + window
            left = max(0, final_at - l1_time)
            frac = 1 - min(1.0, left / window) if window else None
            progress(f"withdrawal #{wid} in batch {batch}; its challenge window ends "
                     f"in {left} s", frac)
            if warp and not warped and left:
                client.call("devnet_increaseTime", left + 1)
                client.call("devnet_mine", 1)
                warped = True
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"withdrawal {wid} not final after {timeout} s; on a devnet, warp time with "
                "devnet_increaseTime (or pass --warp); resume with: derivnet withdraw --id "
                f"{wid}")
        time.sleep(0.2)
    batch = quantity(w["batch"])
    amount = quantity(w["amount"])
    result = WithdrawResult(wid, amount, w["recipient"], None, None, batch, True)
    if w["paid"]:
        progress(f"withdrawal #{wid} is already paid on L1", 1.0)
        return result
    progress(f"withdrawal #{wid}: finalizing on L1", 1.0)
    if w.get("proof") is None:
        raise LookupError(f"withdrawal #{wid}: batch {batch} was posted with a state root this "
                          "node does not hold (a faulty proposer): it cannot be proven there")
    siblings = [bytes.fromhex(x[2:]) for x in w["proof"]["siblings"]]
    tx = rollup.finalize_withdrawal(signer.private_key, batch, wid,
                                    w["account"], w["recipient"], amount, siblings)
    from l1_stub.client import TransactionReverted, wait_receipt

    receipt = wait_receipt(w3, tx, timeout=timeout, check=False)
    if receipt["status"] != 1:
        if rollup.withdrawal_paid(wid):  # someone else finalized it first
            return result
        from l1_stub.client import revert_reason

        raise TransactionReverted(receipt, revert_reason(w3, receipt))
    return WithdrawResult(wid, amount, w["recipient"], None,
                          "0x" + bytes(receipt["transactionHash"]).hex(), batch)


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
