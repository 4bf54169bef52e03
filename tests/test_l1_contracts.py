"""USDC and Rollup contracts on the embedded L1 (docs/protocol.md, L1 parts)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from l1_stub.chain import EmbeddedL1
from l1_stub.client import (
    Deployment,
    RollupClient,
    TransactionReverted,
    deploy,
    send_call,
    wait_receipt,
)
from l1_stub.contracts import compile_contract, write_abis
from node.batch import BatchBlock, batch_commitment, decode_batch, encode_batch
from node.crypto import keccak
from node.merkle import merkle_root
from node.transactions import (
    Deposit,
    Fill,
    FundingTick,
    ListMarket,
    OraclePrice,
    Order,
    Withdraw,
    encode_tx,
)

GENESIS_ROOT = keccak(b"derivnet genesis")
STATE_ROOT = keccak(b"state after batch")
L2_CHAIN_ID = 901
USDC_UNIT = 10**6


@dataclass
class Env:
    l1: EmbeddedL1
    deployment: Deployment
    client: RollupClient

    @property
    def w3(self):
        return self.l1.w3

    @property
    def seq_key(self) -> bytes:
        return self.l1.dev_keys[0]

    @property
    def sequencer(self) -> str:
        return self.l1.dev_accounts[0]

    def key(self, i: int) -> bytes:
        return self.l1.dev_keys[i]

    def addr(self, i: int) -> str:
        return self.l1.dev_accounts[i]

    def wait(self, tx_hash, check: bool = True):
        return wait_receipt(self.w3, tx_hash, check=check)

    def fund_and_deposit(self, user: int, to: bytes, amount: int):
        c = self.client
        self.wait(c.faucet(self.key(user), amount))
        self.wait(c.approve(self.key(user), amount))
        return self.wait(c.deposit(self.key(user), to, amount))

    def submit(self, batch: bytes, deposit_end: int, state_root: bytes = STATE_ROOT):
        return self.wait(self.client.submit_batch(self.seq_key, batch, state_root, deposit_end))

    def preflight(self, batch: bytes, deposit_end: int, sender: int = 0):
        """eth_call submitBatch; raises ContractLogicError on a revert."""
        fn = self.client.rollup.functions.submitBatch(batch, STATE_ROOT, deposit_end)
        return fn.call({"from": self.addr(sender)})


def deploy_rollup(l1: EmbeddedL1, **kwargs) -> tuple[Deployment, RollupClient]:
    """USDC + Rollup from dev account 0 (also the sequencer); ``kwargs`` go to
    ``deploy`` (windows) except constant overrides, passed as ``overrides``."""
    overrides = kwargs.pop("overrides", None)
    d = deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], GENESIS_ROOT, L2_CHAIN_ID,
               rollup_overrides=overrides or None, **kwargs)
    return d, RollupClient(l1.w3, d)


def _make_env(**overrides) -> Env:
    l1 = EmbeddedL1(auto_mine=True)
    return Env(l1, *deploy_rollup(l1, overrides=overrides))


@pytest.fixture
def env() -> Env:
    return _make_env()


# ------------------------------------------------------------------ builders

_rnd = random.Random(7)


def _sig() -> bytes:
    # the contract does not check signatures: any 65 bytes do
    return _rnd.randbytes(64) + bytes([27 + _rnd.randrange(2)])


def fill_tx(i: int = 0) -> bytes:
    maker = Order(_rnd.randbytes(20), 1, True, 350_000 + i, 10_000, i, 1_900_000_000)
    taker = Order(_rnd.randbytes(20), 1, False, 340_000, 5_000, i + 1, 1_900_000_000)
    return encode_tx(Fill(maker, _sig(), taker, _sig(), 5_000, 350_000 + i))


def oracle_tx(i: int = 0) -> bytes:
    return encode_tx(OraclePrice(1, 350_000 + i, 1_800_000_000 + i, _sig()))


def withdraw_tx(i: int = 0) -> bytes:
    return encode_tx(Withdraw(_rnd.randbytes(20), _rnd.randbytes(20), 10**6 + i, i, _sig()))


def funding_tick_tx(i: int = 0) -> bytes:
    return encode_tx(FundingTick(1, 1_800_000_000 + i, -(10**6) + i, _sig()))


def list_market_tx(i: int = 0) -> bytes:
    return encode_tx(ListMarket(3 + i, b"SHIB-ETH".ljust(16, b"\x00"), 12, 0, 1, 1, 100_000,
                                50_000, 200, 500, 104_138_125, _sig()))


def deposit_tx(index: int, account: bytes, amount: int) -> bytes:
    return encode_tx(Deposit(index, account, amount))


def batch_of(*blocks: tuple[int, list[bytes]]) -> tuple[bytes, list[BatchBlock]]:
    bb = [BatchBlock(ts, 7, tuple(txs)) for ts, txs in blocks]
    return encode_batch(bb), bb


def python_running_hashes(bodies: list[bytes]) -> list[bytes]:
    out, prev = [], b"\x00" * 32
    for body in bodies:
        prev = keccak(prev + body)
        out.append(prev)
    return out


def reverts_with(fn, reason: str):
    with pytest.raises(ContractLogicError) as info:
        fn()
    assert reason in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------------- USDC


def test_usdc_metadata_faucet_and_transfers(env: Env):
    usdc = env.client.usdc.functions
    assert usdc.name().call() == "USD Coin (derivnet)"
    assert usdc.symbol().call() == "USDC"
    assert usdc.decimals().call() == 6
    assert usdc.FAUCET_CAP().call() == 10_000_000 * USDC_UNIT

    receipt = env.wait(env.client.faucet(env.key(3), 500 * USDC_UNIT))
    transfers = env.client.usdc.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert transfers[0]["args"]["sender"] == "0x" + "00" * 20
    assert transfers[0]["args"]["receiver"] == env.addr(3)
    assert env.client.usdc_balance(env.addr(3)) == 500 * USDC_UNIT
    assert usdc.totalSupply().call() == 500 * USDC_UNIT

    env.wait(env.client.transfer(env.key(3), env.addr(4), 200 * USDC_UNIT))
    assert env.client.usdc_balance(env.addr(3)) == 300 * USDC_UNIT
    assert env.client.usdc_balance(env.addr(4)) == 200 * USDC_UNIT

    reverts_with(
        lambda: usdc.faucet(10_000_000 * USDC_UNIT + 1).call({"from": env.addr(3)}),
        "usdc: faucet cap",
    )
    reverts_with(
        lambda: usdc.transfer(env.addr(4), 301 * USDC_UNIT).call({"from": env.addr(3)}),
        "usdc: insufficient balance",
    )
    reverts_with(
        lambda: usdc.transferFrom(env.addr(3), env.addr(5), 1).call({"from": env.addr(5)}),
        "usdc: insufficient allowance",
    )
    env.wait(env.client.approve(env.key(3), 50, spender=env.addr(5)))
    assert env.client.usdc_allowance(env.addr(3), env.addr(5)) == 50
    env.wait(send_call(env.w3, env.key(5), usdc.transferFrom(env.addr(3), env.addr(5), 20), gas=100_000))
    assert env.client.usdc_allowance(env.addr(3), env.addr(5)) == 30
    assert env.client.usdc_balance(env.addr(5)) == 20


# ------------------------------------------------------------------- rollup


def test_rollup_initial_views(env: Env):
    c = env.client
    r = c.rollup.functions
    assert c.sequencer() == env.sequencer
    assert r.usdc().call() == env.deployment.usdc
    assert c.genesis_state_root() == GENESIS_ROOT
    assert c.l2_chain_id() == L2_CHAIN_ID
    assert c.batch_count() == 0
    assert c.next_l2_block() == 1
    assert c.deposits_consumed() == 0
    assert c.deposit_count() == 0
    assert c.latest_state_root() == GENESIS_ROOT
    assert c.max_batch_bytes() == 131072
    assert c.max_steps() == 4096
    # settlement (tests/test_settlement_contracts.py): devnet windows by default
    assert (c.challenge_window(), c.inclusion_window(), c.escape_delay()) == (60, 30, 120)
    assert c.finalized_batch_count() == 0
    assert c.latest_finalized_state_root() == GENESIS_ROOT
    assert not c.frozen()
    assert r.MAX_FINALIZE_ON_FREEZE().call() == 128
    assert (r.MAX_MARKETS().call(), r.MAX_POSITIONS().call()) == (64, 64)
    reverts_with(lambda: r.get_batch(0).call(), "rollup: no such batch")
    assert env.deployment.chain_id == 900
    assert env.w3.eth.get_code(env.deployment.rollup) != b""


def test_deposits_running_hash_and_logs(env: Env):
    c = env.client
    alice, bob = keccak(b"alice")[:20], keccak(b"bob")[:20]
    plan = [(3, alice, 1_000 * USDC_UNIT), (4, bob, 7), (3, bob, 9_000_000 * USDC_UNIT)]
    receipts = []
    for user, to, amount in plan:
        env.wait(c.faucet(env.key(user), amount))
        env.wait(c.approve(env.key(user), amount))
        receipts.append(env.wait(c.deposit(env.key(user), to, amount)))

    bodies = [Deposit(i, to, amount).body() for i, (_, to, amount) in enumerate(plan)]
    expected = python_running_hashes(bodies)
    assert c.deposit_count() == 3
    for i in range(3):
        assert c.deposit_hash(i) == expected[i]
        block = env.w3.eth.get_block(receipts[i]["blockNumber"])
        assert c.deposit_timestamp(i) == block["timestamp"]
        # kept for reclaimDeposit after a freeze
        assert c.deposit_sender(i) == env.addr(plan[i][0])
        assert c.deposit_amount(i) == plan[i][2]
        events = c.rollup.events.DepositQueued().process_receipt(receipts[i], errors=DISCARD)
        assert len(events) == 1
        args = events[0]["args"]
        assert args["index"] == i
        assert args["sender"] == env.addr(plan[i][0])
        assert bytes.fromhex(args["to"][2:]) == plan[i][1]
        assert args["amount"] == plan[i][2]
        assert args["running_hash"] == expected[i]
        assert args["timestamp"] == block["timestamp"]
        # the body in the log is exactly the Deposit tx body
        assert args["body"] == bodies[i]
    assert c.usdc_balance(env.deployment.rollup) == sum(a for _, _, a in plan)

    entries = c.deposits()
    assert [e.index for e in entries] == [0, 1, 2]
    assert [bytes.fromhex(e.account[2:]) for e in entries] == [alice, bob, bob]
    assert [e.amount for e in entries] == [a for _, _, a in plan]
    assert [e.running_hash for e in entries] == expected
    assert [e.l1_block for e in entries] == [r["blockNumber"] for r in receipts]
    assert c.deposits(1, 3) == entries[1:]
    assert c.deposits(2, 2) == []


def test_deposit_amount_bounds(env: Env):
    r = env.client.rollup.functions
    to = env.addr(5)
    reverts_with(lambda: r.deposit(to, 0).call({"from": env.addr(3)}), "deposit: zero amount")
    reverts_with(lambda: r.deposit(to, 2**128).call({"from": env.addr(3)}), "deposit: amount too large")
    # largest valid amount passes the bound and fails on the token pull
    reverts_with(
        lambda: r.deposit(to, 2**128 - 1).call({"from": env.addr(3)}),
        "usdc: insufficient allowance",
    )
    # a deposit mined without allowance is a failed transaction
    tx = env.client.deposit(env.key(3), to, 5)
    with pytest.raises(TransactionReverted) as info:
        env.wait(tx)
    assert info.value.receipt["status"] == 0
    assert "usdc: insufficient allowance" in info.value.reason
    assert env.client.deposit_count() == 0


def test_submit_batch_all_tx_types(env: Env):
    c = env.client
    alice, bob = keccak(b"alice")[:20], keccak(b"bob")[:20]
    env.fund_and_deposit(3, alice, 250 * USDC_UNIT)
    env.fund_and_deposit(4, bob, 75 * USDC_UNIT)
    batch, blocks = batch_of(
        (1_700_000_000, [oracle_tx(), deposit_tx(0, alice, 250 * USDC_UNIT), fill_tx()]),
        (1_700_000_001, []),
        (1_700_000_002, [deposit_tx(1, bob, 75 * USDC_UNIT), withdraw_tx(), fill_tx(1),
                         list_market_tx()]),
    )
    assert decode_batch(batch) == blocks
    receipt = env.submit(batch, deposit_end=2)
    block = env.w3.eth.get_block(receipt["blockNumber"])

    assert c.batch_count() == 1
    record = c.get_batch(0)
    assert record.data_hash == keccak(batch)
    assert c.tx_root_of(0, batch) == batch_commitment(blocks)
    assert record.state_root == STATE_ROOT
    assert record.l1_timestamp == block["timestamp"]
    assert record.first_block == 1
    assert record.block_count == 3
    assert record.step_count == 7
    assert record.deposit_end == 2
    assert c.latest_state_root() == STATE_ROOT
    assert c.next_l2_block() == 4
    assert c.deposits_consumed() == 2

    (event,) = c.rollup.events.BatchSubmitted().process_receipt(receipt, errors=DISCARD)
    args = event["args"]
    assert args["index"] == 0
    assert (args["first_block"], args["block_count"], args["step_count"]) == (1, 3, 7)
    assert args["state_root"] == STATE_ROOT
    assert args["data_hash"] == record.data_hash
    assert args["deposit_end"] == 2

    # a second batch continues the block numbers and may consume no deposits
    root2 = keccak(b"root 2")
    batch2, blocks2 = batch_of((1_700_000_005, [fill_tx(2)]), (1_700_000_006, [oracle_tx(1)]))
    env.submit(batch2, deposit_end=2, state_root=root2)
    record2 = c.get_batch(1)
    assert (record2.first_block, record2.block_count, record2.step_count) == (4, 2, 2)
    assert record2.data_hash == keccak(batch2)
    assert c.tx_root_of(1, batch2) == batch_commitment(blocks2)
    # the commitment is computed only from the batch's own data
    reverts_with(lambda: c.tx_root_of(1, batch), "rollup: batch data mismatch")
    reverts_with(lambda: c.tx_root_of(2, batch2), "rollup: no such batch")
    assert c.latest_state_root() == root2
    assert c.get_batch(0).state_root == STATE_ROOT
    assert c.next_l2_block() == 6

    # an L2 node can recover the posted data from L1 alone
    subs = c.batch_submissions()
    assert [s.index for s in subs] == [0, 1]
    assert subs[0].batch_data == batch and subs[1].batch_data == batch2
    assert decode_batch(subs[1].batch_data) == blocks2
    assert subs[0].data_hash == record.data_hash and subs[0].deposit_end == 2
    assert subs[0].l1_block == receipt["blockNumber"]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_commitment_padding_matches_python(env: Env, steps: int):
    txs = [oracle_tx(i) if i % 3 else withdraw_tx(i) if i % 2 else funding_tick_tx(i) for i in range(steps)]
    # spread over blocks so leaves carry different timestamps
    blocks_in = [(1_700_000_000 + j, txs[j * 4 : (j + 1) * 4]) for j in range((steps + 3) // 4)]
    batch, blocks = batch_of(*blocks_in)
    env.submit(batch, deposit_end=0)
    record = env.client.get_batch(0)
    leaves = [keccak(b.timestamp.to_bytes(8, "big") + tx) for b in blocks for tx in b.txs]
    assert env.client.tx_root_of(0, batch) == merkle_root(leaves) == batch_commitment(blocks)
    assert record.step_count == steps


def test_batch_of_only_empty_blocks_commits_zero_root(env: Env):
    batch, blocks = batch_of((1_700_000_000, []), (1_700_000_001, []))
    env.submit(batch, deposit_end=0)
    record = env.client.get_batch(0)
    assert env.client.tx_root_of(0, batch) == b"\x00" * 32 == batch_commitment(blocks)
    assert (record.block_count, record.step_count) == (2, 0)
    assert env.client.next_l2_block() == 3


# issue 8's types, as raw bytes (the Rollup reads only the type byte): the
# encoded sizes of docs/protocol.md "Transactions"
RISK_TX_SIZES = {0x05: 164, 0x07: 159, 0x08: 53, 0x09: 25}


def risk_tx(kind: int, i: int = 0) -> bytes:
    return bytes([kind]) + _rnd.randbytes(RISK_TX_SIZES[kind] - 1)


def test_batch_walk_knows_the_risk_types(env: Env):
    """ListMarket (164 bytes), Liquidate (159), Deleverage (53) and
    SettleFunding (25, shorter than the word the walk reads the type from)
    split and commit like every other type, a SettleFunding also as the
    batch's last bytes; each cut short is "batch: truncated"."""
    txs = [risk_tx(k, i) for i in range(2) for k in RISK_TX_SIZES] + [fill_tx(), risk_tx(0x09)]
    blocks_in = [(1_700_000_000, txs[:5]), (1_700_000_001, txs[5:])]
    batch, blocks = batch_of(*blocks_in)
    assert batch.endswith(txs[-1])
    env.submit(batch, deposit_end=0)
    leaves = [keccak(ts.to_bytes(8, "big") + tx) for ts, group in blocks_in for tx in group]
    assert env.client.tx_root_of(0, batch) == merkle_root(leaves)
    assert env.client.get_batch(0).step_count == len(txs)
    header = (1_700_000_002).to_bytes(8, "big") + (3).to_bytes(8, "big") + (1).to_bytes(2, "big")
    for kind in RISK_TX_SIZES:
        tx = risk_tx(kind)
        for cut in (tx[:-1], tx[:1]):
            reverts_with(lambda b=header + cut: env.preflight(b, 0), "batch: truncated")


# ----------------------------------------------------------- revert reasons


def test_only_sequencer(env: Env):
    batch, _ = batch_of((1_700_000_000, [fill_tx()]))
    reverts_with(lambda: env.preflight(batch, 0, sender=1), "rollup: only sequencer")
    # the client's preflight raises the same error before sending
    with pytest.raises(ContractLogicError, match="rollup: only sequencer"):
        env.client.submit_batch(env.key(1), batch, STATE_ROOT, 0, preflight=True)
    # sent anyway, it is mined as a failed transaction with the same reason
    tx = env.client.submit_batch(env.key(1), batch, STATE_ROOT, 0)
    with pytest.raises(TransactionReverted, match="rollup: only sequencer"):
        env.wait(tx)
    assert env.client.batch_count() == 0


def test_malformed_batches(env: Env):
    fill = fill_tx()
    header = (1_700_000_000).to_bytes(8, "big") + (3).to_bytes(8, "big")
    reverts_with(lambda: env.preflight(b"", 0), "batch: empty")
    # unknown type byte (0x00 and 0x0a)
    for bad in (b"\x00", b"\x0a"):
        batch = header + (1).to_bytes(2, "big") + bad + b"\x11" * 300
        reverts_with(lambda b=batch: env.preflight(b, 0), "batch: unknown tx type")
    # truncated block header
    reverts_with(lambda: env.preflight(header[:10], 0), "batch: truncated")
    # truncated transaction body
    batch = header + (1).to_bytes(2, "big") + fill[:-1]
    reverts_with(lambda: env.preflight(batch, 0), "batch: truncated")
    # tx_count promises more transactions than there are
    batch = header + (2).to_bytes(2, "big") + fill
    reverts_with(lambda: env.preflight(batch, 0), "batch: truncated")
    # trailing garbage shorter than a block header
    batch, _ = batch_of((1_700_000_000, [fill]))
    reverts_with(lambda: env.preflight(batch + b"\x01\x02", 0), "batch: truncated")
    # each truncation of every tx type
    for tx in (fill_tx(), oracle_tx(), withdraw_tx(), deposit_tx(0, b"\x01" * 20, 5),
               list_market_tx()):
        for cut in (tx[:-1], tx[:20]):  # 20: shorter than the word the type is read from
            batch = header + (1).to_bytes(2, "big") + cut
            reverts_with(lambda b=batch: env.preflight(b, 0), "batch: truncated")
    # a batch over MAX_BATCH_BYTES fails the calldata bound (no reason string)
    big = header + (0).to_bytes(2, "big")
    big = big * (131072 // len(big) + 1)
    with pytest.raises(ContractLogicError):
        env.preflight(big, 0)
    assert env.client.batch_count() == 0


def test_deposit_ordering_rules(env: Env):
    alice, bob = keccak(b"alice")[:20], keccak(b"bob")[:20]
    env.fund_and_deposit(3, alice, 100)
    env.fund_and_deposit(4, bob, 200)
    ts = 1_700_000_000

    def batch(*txs: bytes) -> bytes:
        return batch_of((ts, [oracle_tx(), *txs]))[0]

    d0, d1 = deposit_tx(0, alice, 100), deposit_tx(1, bob, 200)
    # skipping entry 0
    reverts_with(lambda: env.preflight(batch(d1), 1), "batch: deposit out of order")
    # entries swapped
    reverts_with(lambda: env.preflight(batch(d1, d0), 2), "batch: deposit out of order")
    # wrong index field on an otherwise right entry
    reverts_with(
        lambda: env.preflight(batch(deposit_tx(5, alice, 100)), 1), "batch: deposit out of order"
    )
    # the same entry twice
    reverts_with(lambda: env.preflight(batch(d0, d0), 2), "batch: deposit out of order")
    # wrong amount / wrong account
    reverts_with(
        lambda: env.preflight(batch(deposit_tx(0, alice, 101)), 1), "batch: deposit mismatch"
    )
    reverts_with(
        lambda: env.preflight(batch(d0, deposit_tx(1, alice, 200)), 2), "batch: deposit mismatch"
    )
    # an entry that is not queued yet
    reverts_with(
        lambda: env.preflight(batch(d0, d1, deposit_tx(2, bob, 1)), 3), "batch: deposit not queued"
    )
    # deposit_end must equal the position reached
    reverts_with(lambda: env.preflight(batch(d0), 2), "batch: deposit_end mismatch")
    reverts_with(lambda: env.preflight(batch(d0, d1), 1), "batch: deposit_end mismatch")
    reverts_with(lambda: env.preflight(batch(), 1), "batch: deposit_end mismatch")

    # consuming 0 then 1 across two batches works, and the second batch's
    # running hash starts from the consumed position
    env.submit(batch(d0), deposit_end=1)
    assert env.client.deposits_consumed() == 1
    reverts_with(lambda: env.preflight(batch(d0), 2), "batch: deposit out of order")
    reverts_with(lambda: env.preflight(batch(), 0), "batch: deposit_end mismatch")
    reverts_with(
        lambda: env.preflight(batch(deposit_tx(1, bob, 201)), 2), "batch: deposit mismatch"
    )
    env.submit(batch(d1), deposit_end=2)
    assert env.client.deposits_consumed() == 2
    assert env.client.get_batch(1).deposit_end == 2


def test_too_many_steps():
    # with the default limits (128 KiB, 4096 steps) the byte limit binds
    # first, so use a Rollup compiled with a small MAX_STEPS
    env = _make_env(MAX_STEPS=8)
    assert env.client.max_steps() == 8
    ok, blocks = batch_of((1_700_000_000, [oracle_tx(i) for i in range(5)]), (1_700_000_001, [fill_tx()] * 3))
    env.submit(ok, deposit_end=0)
    assert env.client.tx_root_of(0, ok) == batch_commitment(blocks)
    bad, _ = batch_of((1_700_000_001, [oracle_tx(i) for i in range(5)]), (1_700_000_002, [fill_tx()] * 4))
    reverts_with(lambda: env.preflight(bad, 0), "batch: too many steps")


def test_overrides_and_abi_export(tmp_path):
    assert compile_contract("Rollup").abi == compile_contract("Rollup", {"MAX_STEPS": 8}).abi
    assert compile_contract("Rollup").bytecode != compile_contract("Rollup", {"MAX_STEPS": 8}).bytecode
    with pytest.raises(KeyError):
        compile_contract("Rollup", {"MERKLE_DEPTH": 3})
    paths = write_abis(tmp_path)
    from l1_stub.contracts import CONTRACT_NAMES

    assert {"USDC", "Rollup", "OneStepFill"} <= set(paths) == set(CONTRACT_NAMES)
    import json

    rollup_abi = json.loads(paths["Rollup"].read_text())
    names = {item.get("name") for item in rollup_abi}
    assert {"deposit", "submitBatch", "get_batch", "DepositQueued", "BatchSubmitted"} <= names
    assert {
        "finalizeBatch", "finalizeWithdrawal", "freeze", "escape", "reclaimDeposit",
        "BatchFinalized", "WithdrawalFinalized", "Frozen", "Escaped", "DepositReclaimed",
    } <= names
    small = compile_contract("Rollup", {"MAX_FINALIZE_ON_FREEZE": 2})
    assert small.abi == compile_contract("Rollup").abi


# ---------------------------------------------------------------------- gas


def test_gas_per_fill(env: Env, capsys):
    results = {}
    for n in (1, 100, 400):
        txs = [fill_tx(i) for i in range(n)]
        # block timestamps never decrease across the batches
        blocks_in = [(1_700_000_000 + 10 * n + j, txs[j * 50 : (j + 1) * 50])
                     for j in range((n + 49) // 50)]
        batch, blocks = batch_of(*blocks_in)
        receipt = env.submit(batch, deposit_end=0)
        index = env.client.batch_count() - 1
        assert env.client.tx_root_of(index, batch) == batch_commitment(blocks)
        results[n] = (receipt["gasUsed"], len(batch))
    with capsys.disabled():
        print()
        for n, (gas, size) in results.items():
            print(f"submitBatch with {n:3d} fills: {size:6d} bytes, {gas:8d} gas, {gas / n:9.1f} gas/fill")
    # loose sanity bounds: the calldata floor (~40 gas/byte) dominates big batches
    assert results[400][0] / 400 < 12_000
    assert results[400][0] / 400 < results[1][0]
