"""Settlement on L1 through a devnet process: finality levels with L1 time,
deposit -> trade -> withdraw with a Merkle proof, forced inclusion against a
censoring sequencer, and the escape hatch.

Every test runs twice: on the embedded L1 and on a hardhat node from npm
(``--l1-rpc``, tests/hardhat_node.py; skipped only if npm cannot install it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from l1_stub.client import TransactionReverted, connect, wait_receipt
from node.client import L2Client, RpcError, quantity
from node.signing import Signer, dev_keys
from node.wallet import deposit, escape, rollup_client, withdraw
from tests.devnet_process import DevnetProcess, l1_lead
from tests.hardhat_node import HardhatNode, HardhatUnavailable, install

KEYS = dev_keys(10)
ALICE, BOB, ORACLE = Signer(KEYS[5]), Signer(KEYS[6]), Signer(KEYS[1])
USDC = 10**6


@pytest.fixture(scope="module")
def hardhat_home() -> Path:
    """hardhat from npm, installed once into a cache outside the repository."""
    try:
        return install()
    except HardhatUnavailable as exc:
        pytest.skip(str(exc))


MANUAL_MINING = pytest.mark.skipif(os.environ.get("DERIVNET_SLOW") != "1",
                                   reason="hardhat without automine: set DERIVNET_SLOW=1")


@pytest.fixture(params=["embedded", "hardhat",
                        pytest.param("hardhat-manual", marks=MANUAL_MINING)])
def devnet(request: pytest.FixtureRequest,
           tmp_path: Path) -> Iterator[tuple[DevnetProcess, L2Client, Any]]:
    """A devnet whose L1 is the embedded chain, or a fresh hardhat node
    (automining, its default; or mining only when the devnet's L1 clock
    mines, ``evm_setAutomine false``)."""
    hardhat = None
    # no funding ticks: the tests wait for "finalized == safe", which a chain
    # that seals a tick every 10 s (and at once after each time warp) never
    # holds still for; funding and the escape hatch: test_settlement_contracts
    flags: dict[str, str | None] = {"--funding-interval": "0"}
    if request.param.startswith("hardhat"):
        hardhat = HardhatNode(request.getfixturevalue("hardhat_home"), tmp_path / "hardhat.log")
        hardhat.start()
        if request.param == "hardhat-manual":
            hardhat.call("evm_setAutomine", False)
        flags["--l1-rpc"] = hardhat.url
    node = DevnetProcess(None, tmp_path / "devnet.log", **flags)
    try:
        node.start()
        l1_url = hardhat.url if hardhat is not None else node.l1_url
        with L2Client(node.url) as client, connect(l1_url) as w3:
            yield node, client, w3
    finally:
        node.stop()
        if hardhat is not None:
            hardhat.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def try_call(client: L2Client, method: str, *params: Any) -> Any:
    """The result, or None while the node answers an error (e.g. not sealed yet)."""
    try:
        return client.call(method, *params)
    except RpcError:
        return None


def trade(client: L2Client, maker: Signer, taker: Signer, size: int = 10_000,
          price: int = 166600) -> dict[str, Any]:
    client.send_order(maker, "ETH-USD", False, price, size)
    out = client.send_order(taker, "ETH-USD", True, price, size, "IOC")
    assert out["status"] == "filled", out
    return out


def test_deposit_trade_withdraw_with_finality(devnet) -> None:
    node, client, w3 = devnet
    rollup = rollup_client(client, w3)
    alice_l1 = "0x" + ALICE.address.hex()
    deposit(client, w3, ALICE, 1_000 * USDC)
    deposit(client, w3, BOB, 1_000 * USDC)
    assert client.get_account(ALICE.address)["collateral"] == str(1_000 * USDC)

    fill = trade(client, BOB, ALICE, size=1_000)["fills"][0]
    # unsafe -> safe -> finalized, with L1 time.
    sealed = wait_for(lambda: try_call(client, "l2_getFill", fill["txHash"]), what="sealed fill")
    levels = {sealed[0]["status"]}
    wait_for(lambda: client.call("l2_getFill", fill["txHash"])[0]["status"] == "safe",
             what="safe fill")
    levels.add("safe")

    before = rollup.usdc_balance(alice_l1)
    sent = client.withdraw(ALICE, 400 * USDC)
    wid = quantity(sent["withdrawalId"])
    w = wait_for(lambda: (lambda x: x if x and x["batch"] is not None else None)(
        try_call(client, "l2_getWithdrawal", wid)), what="withdrawal batch on L1")
    assert w["status"] == "safe" and not w["paid"]
    siblings = [bytes.fromhex(x[2:]) for x in w["proof"]["siblings"]]
    args = (ALICE.private_key, quantity(w["batch"]), wid, w["account"], w["recipient"],
            400 * USDC, siblings)
    with pytest.raises(TransactionReverted, match="withdrawal: batch not final"):
        wait_receipt(w3, rollup.finalize_withdrawal(*args))
    assert rollup.usdc_balance(alice_l1) == before

    status = client.sync_status()
    assert status["finalized_l2"]["number"] < status["safe_l2"]["number"]
    client.call("devnet_increaseTime", status["challenge_window"] + 1)
    client.call("devnet_mine", 1)
    wait_for(lambda: client.call("l2_getWithdrawal", wid)["status"] == "finalized",
             what="finalized withdrawal")
    assert client.call("l2_getFill", fill["txHash"])[0]["status"] == "finalized"
    levels.add("finalized")
    assert levels >= {"safe", "finalized"}
    status = client.sync_status()
    assert status["finalized_l2"]["number"] >= int(w["blockNumber"], 16)

    wait_receipt(w3, rollup.finalize_withdrawal(*args))
    assert rollup.usdc_balance(alice_l1) == before + 400 * USDC
    assert client.call("l2_getWithdrawal", wid)["paid"]
    with pytest.raises(TransactionReverted, match="withdrawal: already paid"):
        wait_receipt(w3, rollup.finalize_withdrawal(*args))
    # L2 collateral went down by exactly the withdrawal.
    assert int(client.get_account(ALICE.address)["collateral"]) < 1_000 * USDC - 400 * USDC + 1


def test_withdraw_flow_helper_with_warp(devnet) -> None:
    node, client, w3 = devnet
    rollup = rollup_client(client, w3)
    deposit(client, w3, ALICE, 1_000 * USDC)
    before = rollup.usdc_balance("0x" + ALICE.address.hex())
    r = withdraw(client, w3, ALICE, 250 * USDC, warp=True, timeout=60)
    assert rollup.usdc_balance("0x" + ALICE.address.hex()) == before + 250 * USDC
    assert r.l1_tx is not None


def test_censored_deposit_blocks_batches_until_included(devnet) -> None:
    node, client, w3 = devnet
    deposit(client, w3, BOB, 100 * USDC)
    client.call("devnet_setCensorDeposits", True)
    r = deposit(client, w3, ALICE, 100 * USDC, wait=False)
    status = client.sync_status()
    # the embedded L1 stamps each block at least a second after its parent, so
    # after a burst of sends (the backstop liquidator's funding at start) its
    # clock runs ahead of the wall clock: warp past the deposit's own timestamp
    client.call("devnet_increaseTime", client.config["inclusion_window"] + 5 + l1_lead(w3))
    client.call("devnet_mine", 1)
    # New L2 blocks keep coming, but their batch is rejected on L1.
    client.send_oracle_price(ORACLE, "ETH-USD", 166700, int(time.time()) + 10_000)
    wait_for(lambda: "deposit inclusion overdue" in (client.sync_status()["batcher_error"] or ""),
             what="rejected batch")
    stuck = client.sync_status()
    assert stuck["safe_l2"]["number"] < stuck["unsafe_l2"]["number"]
    assert stuck["deposits_included"] == status["deposits_included"] == r.index

    client.call("devnet_setCensorDeposits", False)
    wait_for(lambda: client.sync_status()["deposits_included"] > r.index, what="inclusion")
    wait_for(lambda: (lambda s: s["batcher_error"] is None
                      and s["safe_l2"]["number"] == s["unsafe_l2"]["number"])(
        client.sync_status()), what="batches flowing again")
    assert int(client.get_account(ALICE.address, "safe")["collateral"]) == 100 * USDC


def test_freeze_and_escape_pays_floored_equity(devnet) -> None:
    node, client, w3 = devnet
    rollup = rollup_client(client, w3)
    deposit(client, w3, ALICE, 1_000 * USDC)
    deposit(client, w3, BOB, 1_000 * USDC)
    trade(client, BOB, ALICE, size=50_000, price=166600)  # Alice long 5 ETH
    client.send_oracle_price(ORACLE, "ETH-USD", 150000, int(time.time()) + 5)  # -10%
    wait_for(lambda: (lambda s: s["safe_l2"]["number"] == s["unsafe_l2"]["number"]
                      and s["pending_txs"] == 0)(client.sync_status()), what="all posted")
    client.call("devnet_increaseTime", client.config["challenge_window"] + 1)
    client.call("devnet_mine", 1)
    wait_for(lambda: (lambda s: s["finalized_l2"]["number"] == s["safe_l2"]["number"])(
        client.sync_status()), what="finalized")

    # The sequencer goes silent; before the escape delay nobody can freeze.
    client.call("devnet_setBatcher", False)
    with pytest.raises(TransactionReverted, match="freeze: sequencer still active"):
        wait_receipt(w3, rollup.freeze(ALICE.private_key))
    client.call("devnet_increaseTime", client.config["escape_delay"] + 1)
    client.call("devnet_mine", 1)

    fee = Signer(KEYS[2])
    expected = {}
    for who in (ALICE, BOB, fee):
        proof = client.call("l2_getEscapeProof", "0x" + who.address.hex())
        expected[who.address] = max(0, int(proof["equity"]))
    held = rollup.usdc_balance(client.config["rollup_address"])
    paid = {}
    for who in (ALICE, BOB, fee):
        paid[who.address] = escape(client, w3, who).amount
    assert rollup.frozen()
    assert paid == expected
    assert sum(paid.values()) <= held
    assert rollup.usdc_balance(client.config["rollup_address"]) == held - sum(paid.values())
    with pytest.raises(TransactionReverted, match="escape: already escaped"):
        escape(client, w3, ALICE)
