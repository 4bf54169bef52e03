"""The embedded L1 chain and its JSON-RPC server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trio
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from l1_stub.chain import DEV_BALANCE_WEI, EmbeddedL1
from l1_stub.client import Deployment, RollupClient, deploy, send_transaction, wait_receipt
from l1_stub.server import serve_l1
from node.batch import BatchBlock, encode_batch

REPO_ROOT = Path(__file__).resolve().parent.parent

ANVIL_ACCOUNTS = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
]
ANVIL_KEY_0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _transfer(l1: EmbeddedL1, sender: int, to: int, value: int = 1, **kw):
    return send_transaction(
        l1.w3, l1.dev_keys[sender], to=l1.dev_accounts[to], gas=21_000, value=value, **kw
    )


def test_chain_id_and_dev_accounts():
    l1 = EmbeddedL1()
    w3 = l1.w3
    assert l1.chain_id == 900
    assert w3.eth.chain_id == 900
    assert w3.net.version == "900"
    assert len(l1.dev_accounts) == 10 and len(l1.dev_keys) == 10
    assert list(l1.dev_accounts[:3]) == ANVIL_ACCOUNTS
    assert l1.dev_keys[0].hex() == ANVIL_KEY_0
    for key, addr in zip(l1.dev_keys, l1.dev_accounts, strict=True):
        assert Account.from_key(key).address == addr
        assert w3.eth.get_balance(addr) == DEV_BALANCE_WEI == 10_000 * 10**18
    # the CHAINID opcode sees 900 too: a contract deployed with init code
    # `CHAINID PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN` stores 900 as its code
    init = bytes.fromhex("46600052" "60206000f3")
    r = wait_receipt(w3, send_transaction(w3, l1.dev_keys[0], to=None, data=init, gas=100_000), l1.mine)
    assert int.from_bytes(w3.eth.get_code(r["contractAddress"]), "big") == 900


def test_signed_transactions_must_use_chain_900():
    l1 = EmbeddedL1(auto_mine=True)
    acct = Account.from_key(l1.dev_keys[0])
    base = {
        "to": l1.dev_accounts[1],
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 0,
        "type": 2,
    }
    for wrong in (1, 31337, 131277322940537):
        raw = acct.sign_transaction({**base, "chainId": wrong}).raw_transaction
        with pytest.raises(Web3RPCError, match="invalid chain id"):
            l1.w3.eth.send_raw_transaction(raw)
    legacy = {"to": l1.dev_accounts[1], "value": 1, "gas": 21_000, "gasPrice": 10**10, "nonce": 0}
    with pytest.raises(Web3RPCError, match="invalid chain id"):
        l1.w3.eth.send_raw_transaction(acct.sign_transaction({**legacy, "chainId": 1}).raw_transaction)
    ok = acct.sign_transaction({**legacy, "chainId": 900}).raw_transaction
    receipt = wait_receipt(l1.w3, l1.w3.eth.send_raw_transaction(ok))
    assert receipt["status"] == 1


def test_manual_mining_holds_transactions_pending():
    l1 = EmbeddedL1()
    w3 = l1.w3
    assert not l1.auto_mine
    assert l1.head()[0] == 0
    h1 = _transfer(l1, 0, 1, 5)
    h2 = _transfer(l1, 0, 2, 7)  # nonce 1: pending nonces advance
    assert w3.eth.get_transaction_count(l1.dev_accounts[0], "pending") == 2
    assert w3.eth.get_transaction_count(l1.dev_accounts[0]) == 0
    assert l1.pending_transaction_count() == 2
    assert w3.eth.block_number == 0
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(h1)
    assert w3.eth.get_transaction(h1)["blockNumber"] is None
    assert w3.eth.get_balance(l1.dev_accounts[1]) == DEV_BALANCE_WEI

    assert l1.mine() == 1
    assert w3.eth.block_number == 1 and l1.head()[0] == 1
    assert l1.pending_transaction_count() == 0
    r1, r2 = w3.eth.get_transaction_receipt(h1), w3.eth.get_transaction_receipt(h2)
    assert r1["blockNumber"] == r2["blockNumber"] == 1
    assert (r1["status"], r2["status"]) == (1, 1)
    assert w3.eth.get_balance(l1.dev_accounts[1]) == DEV_BALANCE_WEI + 5
    assert len(w3.eth.get_block(1)["transactions"]) == 2

    assert l1.mine(3) == 4
    assert [len(w3.eth.get_block(n)["transactions"]) for n in (2, 3, 4)] == [0, 0, 0]
    with pytest.raises(ValueError):
        l1.mine(0)

    # wait_receipt with a mine callback mines the pending block
    h3 = _transfer(l1, 1, 2)
    assert wait_receipt(w3, h3, l1.mine)["blockNumber"] == 5

    # switching auto-mining on mines what is pending, then every transaction
    h4 = _transfer(l1, 1, 2)
    l1.auto_mine = True
    assert w3.eth.get_transaction_receipt(h4)["blockNumber"] == 6
    h5 = _transfer(l1, 1, 2)
    assert w3.eth.get_transaction_receipt(h5)["blockNumber"] == 7
    l1.auto_mine = False
    _transfer(l1, 1, 2)
    assert l1.head()[0] == 7 and l1.pending_transaction_count() == 1


def test_timestamps_follow_clock_and_warp():
    clock = FakeClock(1_800_000_000.4)
    l1 = EmbeddedL1(clock=clock)
    assert l1.head() == (0, 1_800_000_000)
    clock.now += 12
    l1.mine()
    assert l1.head() == (1, 1_800_000_012)
    # blocks mined within one second still get increasing timestamps
    l1.mine(2)
    assert l1.head() == (3, 1_800_000_014)
    clock.now += 60
    l1.mine()
    assert l1.head()[1] == 1_800_000_072
    # evm_increaseTime: shifts every later block
    assert l1.increase_time(7 * 86_400) == 7 * 86_400
    assert l1.now() == 1_800_000_072 + 7 * 86_400
    l1.mine()
    assert l1.head()[1] == 1_800_000_072 + 7 * 86_400
    clock.now += 5
    l1.mine()
    assert l1.head()[1] == 1_800_000_077 + 7 * 86_400
    with pytest.raises(ValueError):
        l1.increase_time(-1)
    # set_next_block_timestamp: exactly once
    target = l1.head()[1] + 1_000
    l1.set_next_block_timestamp(target)
    l1.mine()
    assert l1.head()[1] == target
    l1.mine()
    assert l1.head()[1] == target + 1
    with pytest.raises(ValueError):
        l1.set_next_block_timestamp(target)
    assert l1.w3.eth.get_block("latest")["timestamp"] == target + 1


def test_pending_transactions_see_the_warped_timestamp():
    """A transaction waiting in the pending block when time is warped
    executes with the timestamp of the block it is mined in."""
    clock = FakeClock(1_800_000_000)
    l1 = EmbeddedL1(clock=clock, auto_mine=True)
    d = deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x00" * 32, 901)
    c = RollupClient(l1.w3, d)
    key = l1.dev_keys[3]
    wait_receipt(l1.w3, c.faucet(key, 100))
    wait_receipt(l1.w3, c.approve(key, 100))
    l1.auto_mine = False
    clock.now += 3
    tx = c.deposit(key, l1.dev_accounts[3], 100)
    l1.increase_time(3_600)
    receipt = wait_receipt(l1.w3, tx, l1.mine)
    block_ts = l1.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert block_ts == 1_800_000_003 + 3_600
    assert c.deposit_timestamp(0) == block_ts
    # and with set_next_block_timestamp
    wait_receipt(l1.w3, c.faucet(key, 100), l1.mine)
    wait_receipt(l1.w3, c.approve(key, 100), l1.mine)
    tx = c.deposit(key, l1.dev_accounts[3], 100)
    l1.set_next_block_timestamp(1_900_000_000)
    receipt = wait_receipt(l1.w3, tx, l1.mine)
    assert l1.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == 1_900_000_000
    assert c.deposit_timestamp(1) == 1_900_000_000


def test_in_process_reverts_raise_contract_logic_error():
    l1 = EmbeddedL1(auto_mine=True)
    d = deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x00" * 32, 901)
    c = RollupClient(l1.w3, d)
    with pytest.raises(ContractLogicError, match="batch: empty") as info:
        c.rollup.functions.submitBatch(b"", b"\x00" * 32, 0).call({"from": l1.dev_accounts[0]})
    assert info.value.data.startswith("0x08c379a0")
    with pytest.raises(ContractLogicError, match="rollup: only sequencer"):
        c.rollup.functions.submitBatch(b"", b"\x00" * 32, 0).estimate_gas({"from": l1.dev_accounts[1]})


def test_calls_and_estimates_on_the_pending_state():
    l1 = EmbeddedL1()
    d = deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x00" * 32, 901, mine=l1.mine)
    c = RollupClient(l1.w3, d)
    user = l1.dev_accounts[3]
    c.faucet(l1.dev_keys[3], 100)
    c.approve(l1.dev_keys[3], 100)  # both pending, not mined
    fn = c.rollup.functions.deposit(user, 100)
    assert fn.estimate_gas({"from": user}, block_identifier="pending") > 50_000
    fn.call({"from": user}, block_identifier="pending")
    with pytest.raises(ContractLogicError, match="usdc: insufficient allowance"):
        fn.call({"from": user})  # latest does not see the approval yet
    with pytest.raises(ContractLogicError, match="usdc: insufficient allowance"):
        c.rollup.functions.deposit(user, 101).call({"from": user}, block_identifier="pending")


def test_threads_share_the_chain():
    l1 = EmbeddedL1()
    per_thread = 15
    errors: list[BaseException] = []
    stop = threading.Event()

    def sender(i: int) -> None:
        try:
            for _ in range(per_thread):
                _transfer(l1, i, 9)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def miner() -> None:
        while not stop.is_set():
            l1.mine()
            time.sleep(0.005)

    m = threading.Thread(target=miner)
    m.start()
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(1, 5)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    stop.set()
    m.join()
    l1.mine()
    assert errors == []
    for i in range(1, 5):
        assert l1.w3.eth.get_transaction_count(l1.dev_accounts[i]) == per_thread
    assert l1.w3.eth.get_balance(l1.dev_accounts[9]) == DEV_BALANCE_WEI + 4 * per_thread


# ---------------------------------------------------------------- JSON-RPC


def _rpc(url: str, method: str, params: list | None = None, rid: int = 1) -> dict:
    payload = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or []}
    response = httpx.post(url, json=payload, timeout=10)
    assert response.status_code == 200
    return response.json()


async def _with_server(l1: EmbeddedL1, body) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_l1, l1, "127.0.0.1", 0)
        assert url.startswith("http://127.0.0.1:")
        await trio.to_thread.run_sync(body, url)
        nursery.cancel_scope.cancel()


def test_json_rpc_server_httpx():
    l1 = EmbeddedL1()
    acct0 = l1.dev_accounts[0]

    def body(url: str) -> None:
        assert _rpc(url, "eth_chainId") == {"jsonrpc": "2.0", "id": 1, "result": "0x384"}
        assert _rpc(url, "net_version")["result"] == "900"
        assert _rpc(url, "eth_blockNumber")["result"] == "0x0"
        assert _rpc(url, "eth_getBalance", [acct0, "latest"])["result"] == hex(DEV_BALANCE_WEI)
        assert _rpc(url, "eth_getBalance", [acct0, "0x0"])["result"] == hex(DEV_BALANCE_WEI)
        # devnet controls
        assert "result" in _rpc(url, "evm_mine")
        assert _rpc(url, "anvil_mine", ["0x2"])["result"] is None
        assert _rpc(url, "eth_blockNumber")["result"] == "0x3"
        ts = int(_rpc(url, "eth_getBlockByNumber", ["latest", False])["result"]["timestamp"], 16)
        wall = int(time.time())
        assert _rpc(url, "evm_increaseTime", [3600])["result"] == hex(3600)
        _rpc(url, "evm_mine")
        block = _rpc(url, "eth_getBlockByNumber", ["0x4", False])["result"]
        assert int(block["timestamp"], 16) >= wall + 3600 > ts
        assert block["number"] == "0x4" and len(block["logsBloom"]) == 2 + 512
        _rpc(url, "evm_setNextBlockTimestamp", [hex(wall + 10_000)])
        _rpc(url, "evm_mine")
        latest = _rpc(url, "eth_getBlockByNumber", ["latest", False])["result"]
        assert latest["timestamp"] == hex(wall + 10_000)
        # batch request, a notification (no id) and errors
        batch = [
            {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
            {"jsonrpc": "2.0", "method": "eth_blockNumber"},
            {"jsonrpc": "2.0", "id": "b", "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": "c", "method": "no_such_method", "params": []},
        ]
        out = httpx.post(url, json=batch, timeout=10).json()
        assert [r["id"] for r in out] == ["a", "b", "c"]
        assert out[0]["result"] == "0x384" and out[1]["result"] == "0x5"
        assert out[2]["error"]["code"] == -32601
        bad = httpx.post(url, content=b"{not json", timeout=10).json()
        assert bad["error"]["code"] == -32700
        assert httpx.post(url, json=[], timeout=10).json()["error"]["code"] == -32600
        assert httpx.get(url, timeout=10).status_code == 405
        # a raw transaction through HTTP, pending until mined
        raw = Account.sign_transaction(
            {
                "to": l1.dev_accounts[1],
                "value": 3,
                "gas": 21_000,
                "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 10**9,
                "nonce": 0,
                "chainId": 900,
                "type": 2,
            },
            l1.dev_keys[0],
        ).raw_transaction
        tx_hash = _rpc(url, "eth_sendRawTransaction", ["0x" + raw.hex()])["result"]
        assert _rpc(url, "eth_getTransactionReceipt", [tx_hash])["result"] is None
        assert _rpc(url, "eth_getTransactionCount", [acct0, "pending"])["result"] == "0x1"
        _rpc(url, "anvil_mine")
        receipt = _rpc(url, "eth_getTransactionReceipt", [tx_hash])["result"]
        assert receipt["status"] == "0x1" and receipt["blockNumber"] == "0x6"
        tx = _rpc(url, "eth_getTransactionByHash", [tx_hash])["result"]
        assert tx["chainId"] == "0x384" and tx["value"] == "0x3" and tx["input"] == "0x"
        full = _rpc(url, "eth_getBlockByNumber", ["0x6", True])["result"]
        assert full["transactions"][0]["hash"] == tx_hash
        assert full["transactions"][0]["blockNumber"] == "0x6"

    trio.run(_with_server, l1, body)


def test_json_rpc_server_websocket_and_send_without_gas():
    """The L1 port speaks WebSocket like the L2 port; eth_sendTransaction
    without gas or nonce is estimated on the pending state, as anvil does."""
    from websockets.sync.client import connect

    l1 = EmbeddedL1()
    a = l1.dev_accounts

    def body(url: str) -> None:
        with connect(url.replace("http", "ws"), open_timeout=10) as ws:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "eth_chainId"}))
            assert json.loads(ws.recv(timeout=10)) == {"jsonrpc": "2.0", "id": 5, "result": "0x384"}
            ws.send(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"}
                                for i in range(3)]))
            assert [r["id"] for r in json.loads(ws.recv(timeout=10))] == [0, 1, 2]
            ws.send("[" * 10_000)
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        # no gas, no nonce: a transfer and a contract creation, back to back
        transfer = _rpc(url, "eth_sendTransaction", [{"from": a[1], "to": a[2], "value": "0x1"}])
        init_code = "0x" + "5b" * 5_000 + "00"  # JUMPDESTs, then STOP: creates an empty contract
        create = _rpc(url, "eth_sendTransaction", [{"from": a[1], "data": init_code}])
        assert "result" in transfer and "result" in create, (transfer, create)
        _rpc(url, "evm_mine")
        for tx in (transfer, create):
            receipt = _rpc(url, "eth_getTransactionReceipt", [tx["result"]])["result"]
            assert receipt["status"] == "0x1"
        sent = _rpc(url, "eth_getTransactionByHash", [create["result"]])["result"]
        receipt = _rpc(url, "eth_getTransactionReceipt", [create["result"]])["result"]
        used = int(receipt["gasUsed"], 16)
        assert used < int(sent["gas"], 16) <= used * 12 // 10
        # a reverting transaction is refused at the estimate, with the revert
        bad = _rpc(url, "eth_sendTransaction", [{"from": a[1], "data": "0xfe"}])
        assert bad["error"]["code"] in (3, -32000)

    trio.run(_with_server, l1, body)


def test_json_rpc_server_web3_http_provider():
    l1 = EmbeddedL1()

    def body(url: str) -> None:
        w3 = Web3(HTTPProvider(url))
        assert w3.is_connected()
        assert w3.eth.chain_id == 900
        assert w3.eth.block_number == 0
        assert w3.eth.get_balance(ANVIL_ACCOUNTS[0]) == DEV_BALANCE_WEI

        def mine() -> None:
            w3.provider.make_request("evm_mine", [])

        d = deploy(w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x42" * 32, 901, mine=mine)
        c = RollupClient(w3, d)
        assert c.latest_state_root() == b"\x42" * 32
        key = l1.dev_keys[3]
        for tx in (c.faucet(key, 10**6), c.approve(key, 10**6), c.deposit(key, l1.dev_accounts[4], 10**6)):
            assert wait_receipt(w3, tx, mine)["status"] == 1
        (entry,) = c.deposits()
        assert entry.amount == 10**6 and entry.account == l1.dev_accounts[4]
        assert entry.running_hash == c.deposit_hash(0)
        with pytest.raises(ContractLogicError, match="batch: empty"):
            c.rollup.functions.submitBatch(b"", b"\x00" * 32, 0).call({"from": l1.dev_accounts[0]})
        with pytest.raises(ContractLogicError, match="rollup: only sequencer"):
            c.rollup.functions.submitBatch(b"", b"\x00" * 32, 0).call({"from": l1.dev_accounts[2]})
        # eth_call without "from" defaults to a dev account, as in-process
        assert c.rollup.functions.next_l2_block().call() == 1

    trio.run(_with_server, l1, body)
    # the in-process view of the same chain agrees
    assert l1.head()[0] == l1.w3.eth.block_number > 0


def test_server_shuts_down_promptly_on_cancel():
    l1 = EmbeddedL1()

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(serve_l1, l1, "127.0.0.1", 0)
                async with httpx.AsyncClient() as client:
                    # keep-alive connection open while the server is cancelled
                    r = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
                    assert r.json()["result"] == "0x384"
                    start = trio.current_time()
                    nursery.cancel_scope.cancel()
            assert trio.current_time() - start < 2
        # the port is closed afterwards
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient() as client:
                await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})

    trio.run(main)


# ---------------------------------------------------------------- persistence


def _snapshot(l1: EmbeddedL1, c: RollupClient) -> dict:
    """Everything a restarted L2 node reads back from L1."""
    w3 = l1.w3
    head = w3.eth.get_block("latest")
    logs = w3.eth.get_logs(
        {"fromBlock": 0, "toBlock": head["number"], "address": c.deployment.rollup}
    )
    return {
        "head": (head["number"], head["hash"], head["timestamp"], head["stateRoot"]),
        "hashes": [w3.eth.get_block(n)["hash"] for n in range(head["number"] + 1)],
        "eth": [w3.eth.get_balance(a) for a in l1.dev_accounts],
        "nonces": [w3.eth.get_transaction_count(a) for a in l1.dev_accounts],
        "usdc": [c.usdc_balance(a) for a in l1.dev_accounts],
        "code": (w3.eth.get_code(c.deployment.usdc), w3.eth.get_code(c.deployment.rollup)),
        "logs": [(x["blockNumber"], x["logIndex"], x["topics"], x["data"]) for x in logs],
        "deposits": c.deposits(),
        "batches": [c.get_batch(i) for i in range(c.batch_count())],
        "submissions": c.batch_submissions(),
        "state_root": c.latest_state_root(),
    }


def test_in_memory_chain_has_no_datadir():
    l1 = EmbeddedL1()
    assert l1.datadir is None
    l1.mine()
    l1.close()  # a no-op in memory
    l1.close()


def test_datadir_survives_close_and_reopen(tmp_path):
    datadir = tmp_path / "l1"
    clock = FakeClock(1_800_000_000)
    l1 = EmbeddedL1(clock=clock, datadir=datadir)
    assert l1.datadir == str(datadir)
    w3 = l1.w3
    d = deploy(w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x11" * 32, 901, mine=l1.mine)
    c = RollupClient(w3, d)
    key = l1.dev_keys[3]
    to = l1.dev_accounts[4]
    for tx in (c.faucet(key, 10**9), c.approve(key, 10**9), c.deposit(key, to, 10**6)):
        wait_receipt(w3, tx, l1.mine)
    clock.now += 12
    batch = encode_batch([BatchBlock(1_700_000_000, 1, ()), BatchBlock(1_700_000_001, 1, ())])
    wait_receipt(w3, c.submit_batch(l1.dev_keys[0], batch, b"\x22" * 32, 0), l1.mine)
    wait_receipt(w3, _transfer(l1, 5, 6, 12345), l1.mine)
    assert l1.increase_time(3_600) == 3_600
    clock.now += 1
    wait_receipt(w3, c.deposit(key, l1.dev_accounts[5], 2 * 10**6), l1.mine)
    l1.mine(2)
    before = _snapshot(l1, c)
    old_number, old_hash, old_ts, _ = before["head"]
    assert old_ts >= 1_800_000_013 + 3_600
    assert len(before["deposits"]) == 2 and len(before["batches"]) == 1
    assert before["logs"], "the Rollup emitted logs"
    # a transaction still pending at close() is not persisted
    _transfer(l1, 7, 8, 1)
    assert l1.pending_transaction_count() == 1
    l1.close()
    l1.close()  # idempotent

    # the datadir is bound to its chain id and genesis accounts
    with pytest.raises(ValueError, match="chain id"):
        EmbeddedL1(datadir=datadir, chain_id=901)
    with pytest.raises(ValueError, match="genesis"):
        EmbeddedL1(datadir=datadir, balance_wei=1)

    # restart 10 s later (wall time)
    clock2 = FakeClock(1_800_000_023)
    with EmbeddedL1(clock=clock2, datadir=datadir) as l1b:
        assert l1b.head() == (old_number, old_ts)
        assert l1b.time_offset == 3_600 and l1b.now() == 1_800_000_023 + 3_600
        c2 = RollupClient(l1b.w3, Deployment(d.usdc, d.rollup, d.deploy_block, 900))
        assert _snapshot(l1b, c2) == before
        assert l1b.pending_transaction_count() == 0
        assert l1b.w3.eth.get_transaction_count(l1b.dev_accounts[7], "pending") == 0
        # the chain continues: timestamps from wall time + the restored offset
        assert l1b.mine() == old_number + 1
        number, ts = l1b.head()
        assert ts == 1_800_000_023 + 3_600 > old_ts
        assert l1b.w3.eth.get_block(number)["parentHash"] == old_hash
        wait_receipt(l1b.w3, c2.deposit(key, l1b.dev_accounts[6], 3 * 10**6), l1b.mine)
        assert [e.amount for e in c2.deposits()] == [10**6, 2 * 10**6, 3 * 10**6]
        assert c2.deposit_timestamp(2) == l1b.head()[1]
        l1b.set_next_block_timestamp(1_900_000_000)
        head_c = l1b.head()

    # a clock behind the chain (e.g. no warp re-applied by the caller) still
    # gives increasing timestamps, and set_next_block_timestamp survived
    with EmbeddedL1(clock=FakeClock(1_700_000_000), datadir=datadir) as l1c:
        assert l1c.head() == head_c
        l1c.mine()
        assert l1c.head() == (head_c[0] + 1, 1_900_000_000)
        l1c.mine()
        assert l1c.head() == (head_c[0] + 2, 1_900_000_001)


def test_auto_mine_with_datadir(tmp_path):
    with EmbeddedL1(auto_mine=True, datadir=tmp_path) as l1:
        receipt = wait_receipt(l1.w3, _transfer(l1, 0, 1, 77))
        head = l1.head()
    with EmbeddedL1(datadir=tmp_path) as l1:
        assert l1.head() == head == (receipt["blockNumber"], head[1])
        assert l1.w3.eth.get_transaction_receipt(receipt["transactionHash"])["status"] == 1
        assert l1.w3.eth.get_balance(l1.dev_accounts[1]) == DEV_BALANCE_WEI + 77


def test_datadir_is_locked_while_open(tmp_path):
    with EmbeddedL1(datadir=tmp_path):
        with pytest.raises(Exception, match="(?i)lock"):
            EmbeddedL1(datadir=tmp_path)


_CRASH_SCRIPT = """
import json, os, signal, sys
from l1_stub.chain import EmbeddedL1
from l1_stub.client import RollupClient, deploy, send_transaction, wait_receipt

l1 = EmbeddedL1(datadir=sys.argv[1])
w3 = l1.w3
d = deploy(w3, l1.dev_keys[0], l1.dev_accounts[0], b"\\x33" * 32, 901, mine=l1.mine)
c = RollupClient(w3, d)
key = l1.dev_keys[2]
for tx in (c.faucet(key, 10**9), c.approve(key, 10**9), c.deposit(key, l1.dev_accounts[3], 10**6)):
    wait_receipt(w3, tx, l1.mine)
l1.increase_time(86_400)
send_transaction(w3, l1.dev_keys[4], to=l1.dev_accounts[5], gas=21_000, value=999)
l1.mine(3)
head = w3.eth.get_block("latest")
send_transaction(w3, l1.dev_keys[6], to=l1.dev_accounts[7], gas=21_000, value=1)  # pending: lost
print(json.dumps({
    "number": head["number"], "hash": head["hash"].hex(), "timestamp": head["timestamp"],
    "rollup": d.rollup, "usdc": d.usdc, "deploy_block": d.deploy_block,
    "balance5": w3.eth.get_balance(l1.dev_accounts[5]),
    "deposit_hash": c.deposit_hash(0).hex(), "offset": l1.time_offset,
}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_mined_blocks_survive_sigkill(tmp_path):
    datadir = tmp_path / "l1"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(datadir)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    with EmbeddedL1(datadir=datadir) as l1:
        w3 = l1.w3
        head = w3.eth.get_block("latest")
        assert head["number"] == out["number"]
        assert head["hash"].hex() == out["hash"] and head["timestamp"] == out["timestamp"]
        assert l1.time_offset == out["offset"] == 86_400
        assert w3.eth.get_balance(l1.dev_accounts[5]) == out["balance5"] == DEV_BALANCE_WEI + 999
        # the pending transfer died with the process
        assert w3.eth.get_balance(l1.dev_accounts[7]) == DEV_BALANCE_WEI
        assert w3.eth.get_transaction_count(l1.dev_accounts[6], "pending") == 0
        c = RollupClient(w3, Deployment(out["usdc"], out["rollup"], out["deploy_block"], 900))
        assert c.deposit_hash(0).hex() == out["deposit_hash"]
        (entry,) = c.deposits()  # from the logs of blocks mined before the kill
        assert entry.amount == 10**6 and entry.account == l1.dev_accounts[3]
        assert c.usdc_balance(l1.dev_accounts[2]) == 10**9 - 10**6
        # and the chain goes on, with the day of warp kept
        l1.mine()
        assert l1.head()[1] >= max(out["timestamp"] + 1, int(time.time()) + 86_400 - 1)
        wait_receipt(w3, _transfer(l1, 6, 7, 5), l1.mine)
        assert w3.eth.get_balance(l1.dev_accounts[7]) == DEV_BALANCE_WEI + 5


def test_warps_are_bounded_and_an_out_of_range_offset_is_dropped_on_reopen(tmp_path):
    """evm_increaseTime(2**64) used to poison the datadir for every restart."""
    from l1_stub.chain import MAX_TIMESTAMP, InvalidParams

    with EmbeddedL1(datadir=tmp_path / "l1") as l1:
        with pytest.raises(InvalidParams, match="seconds: warping by"):
            l1.increase_time(2**64)
        with pytest.raises(InvalidParams, match="timestamp:"):
            l1.set_next_block_timestamp(MAX_TIMESTAMP + 1)
        assert l1.time_offset == 0
        l1._offset = 2**64  # as a datadir written before warps were bounded
        l1._save_meta()
    with EmbeddedL1(datadir=tmp_path / "l1") as l1:
        assert l1.time_offset == 0
        _transfer(l1, 1, 2)
        number = l1.mine()
        assert l1.head()[0] == number and l1.head()[1] <= time.time() + 5


def test_view_calls_work_while_the_pending_block_is_full() -> None:
    """eth_call without gas gets the block gas limit (as on geth/anvil), not
    what the pending block has left: one transaction that fills the pending
    block must not make the node's views fail until the next block."""
    with EmbeddedL1() as l1:
        w3 = l1.w3
        dep = deploy(w3, l1.dev_keys[0], l1.dev_accounts[0], b"\x11" * 32, 901, mine=l1.mine)
        rollup = RollupClient(w3, dep)
        gas_limit = int(w3.eth.get_block("latest")["gasLimit"])
        send_transaction(w3, l1.dev_keys[7], to=None, data=b"\xfe", gas=gas_limit)
        assert rollup.batch_count() == 0 and rollup.frozen() is False
        assert rollup.snapshot().batch_count == 0


def test_indexed_lookups_and_logs_agree_with_eth_tester(tmp_path):
    """Receipts and transactions come from py-evm's hash index and eth_getLogs
    reads each block's receipts once (skipping blocks by bloom): the answers
    are eth-tester's own, for mined, pending and unknown transactions, also
    after the datadir is reopened."""
    from eth_tester import EthereumTester
    from eth_tester.exceptions import TransactionNotFound as TesterNotFound

    from node.db import MemoryDB
    from node.genesis import load_genesis
    from node.smt import ZERO_HASH, SparseMerkleTree

    genesis = load_genesis()
    root0 = SparseMerkleTree(MemoryDB()).update(ZERO_HASH, genesis.leaves())
    with EmbeddedL1(datadir=str(tmp_path / "l1")) as l1:
        key = l1.dev_keys[0]
        dep = deploy(l1.w3, key, "0x" + genesis.sequencer.hex(), root0, genesis.l2_chain_id,
                     mine=l1.mine)
        rollup = RollupClient(l1.w3, dep)
        sent = []
        for b in range(4):
            sent += [rollup.faucet(key, 10**6 + i) for i in range(3)]
            sent.append(rollup.approve(key, 10**7))
            sent.append(rollup.deposit(key, bytes([b + 1]) * 20, 10**5))
            l1.mine()
            l1.mine()  # an empty block between
        pending = rollup.faucet(key, 5)
        filters = [dict(from_block=0, to_block="latest"),
                   dict(from_block=0, to_block="latest", address=dep.rollup),
                   dict(from_block=3, to_block=9, address=[dep.rollup, dep.usdc]),
                   dict(from_block="latest", to_block="latest"),
                   dict(from_block=0, address=dep.usdc,
                        topics=["0x" + l1.w3.keccak(text="Transfer(address,address,uint256)").hex()
                                .removeprefix("0x")])]
        tester = l1.tester
        with l1.lock:
            expected = [list(EthereumTester.get_logs(tester, **f)) for f in filters]
            assert [list(tester.get_logs(**f)) for f in filters] == expected
            assert all(isinstance(tester.get_logs(**f), tuple) for f in filters)
            # per round: 3 mints, an approval, a deposit (a USDC transfer + DepositQueued)
            assert [len(e) for e in expected][:2] == [4 * 6, 4]
            assert tester.get_transaction_by_hash(pending.to_0x_hex())["block_number"] is None
            with pytest.raises(TesterNotFound):
                tester.get_transaction_by_hash("0x" + "ab" * 32)
        with pytest.raises(TransactionNotFound):  # pending: no receipt yet
            l1.w3.eth.get_transaction_receipt(pending)
        receipts = [l1.w3.eth.get_transaction_receipt(h) for h in sent]
        assert [r["status"] for r in receipts] == [1] * len(sent)
        assert [r["transactionIndex"] for r in receipts[:5]] == list(range(5))
    with EmbeddedL1(datadir=str(tmp_path / "l1")) as l1:
        assert [l1.w3.eth.get_transaction_receipt(h) for h in sent] == receipts
        with l1.lock:
            assert [list(l1.tester.get_logs(**f)) for f in filters] == expected
