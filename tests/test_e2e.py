"""End to end: the real tape through a devnet process over JSON-RPC, the
ledger invariants read back over JSON-RPC, and the L1 root check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from l1_stub.client import RollupClient, connect
from node.client import L2Client, quantity
from node.replay import ReplayOptions, run_replay
from node.wallet import rollup_client
from node.smt import SparseMerkleProof, verify_proof
from node.state import account_key
from tests.devnet_process import TAPE, DevnetProcess


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetProcess]:
    node = DevnetProcess(tmp_path / "data", tmp_path / "devnet.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def check_ledger(client: L2Client, rollup: RollupClient, tag: str = "latest") -> None:
    """Per market positions sum to zero; collateral (incl. fees) = deposits - withdrawals."""
    deposits = rollup.deposits(0, rollup.deposit_count())
    accounts = {d.account.lower() for d in deposits} | {client.config["fee_account"]}
    views = [client.get_account(a, tag) for a in sorted(accounts)]
    for market in client.call("l2_getMarkets"):
        total = sum(int(p["size"]) for v in views for p in v["positions"]
                    if p["market"] == market["id"])
        assert total == 0
    state_deposits = sum(d.amount for d in deposits
                         if d.index < quantity(client.call("l2_getBatch", "latest")["depositEnd"]))
    collateral = sum(int(v["collateral"]) for v in views)
    assert collateral == state_deposits  # no withdrawals in the replay


def test_replay_tape_end_to_end(devnet: DevnetProcess) -> None:
    summary = run_replay(ReplayOptions(tape=str(TAPE), rpc=devnet.url, progress=False))
    assert summary["trades"] == 1000
    assert summary["fills"] == 1000
    assert summary["failed"] == 0, summary["errors"]
    assert summary["rootsMatch"]
    assert summary["batches"] >= 1 and summary["l1GasPerFill"] > 0

    with L2Client(devnet.url) as client, connect(devnet.l1_url) as w3:
        check_replayed_devnet(client, rollup_client(client, w3), summary)


def check_replayed_devnet(client: L2Client, rollup: RollupClient, summary: dict) -> None:
    latest = client.call("l2_getBatch", "latest")
    assert rollup.latest_state_root().hex() == latest["stateRoot"][2:]
    check_ledger(client, rollup, "safe")

    # An account proof at the safe head verifies against the root on L1.
    maker = rollup.deposits(0, 1)[0].account
    proof = client.call("l2_getProof", maker, "safe")
    assert proof["stateRoot"] == "0x" + rollup.latest_state_root().hex()
    assert verify_proof(bytes.fromhex(proof["stateRoot"][2:]),
                        account_key(bytes.fromhex(maker[2:])),
                        bytes.fromhex(proof["value"][2:]),
                        SparseMerkleProof.from_json(proof["proof"]))

    # Blocks carry fills and receipts; the book is empty after IOC takers.
    block = client.call("l2_getBlockByNumber", hex(summary["lastBlock"]), True)
    assert block["status"] == "safe"
    assert len(block["receipts"]) == len(block["transactions"])
    book = client.call("l2_getOrderBook", "ETH-USD", 5)
    assert book["bids"] == [] and book["asks"] == []
