"""JSON-RPC methods on an in-process node (no loops running): shapes, error
codes naming the broken rule, and that a rejected request changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from node.client import order_params
from node.node import Node, NodeConfig
from node.signing import Signer, dev_keys
from node.transactions import Deposit, Order

KEYS = dev_keys(10)
MAKER, TAKER, ORACLE = Signer(KEYS[3]), Signer(KEYS[4]), Signer(KEYS[1])


NODE: list[Node] = []


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = Node(NodeConfig(serve_l1=False))
    NODE[:] = [n]
    n.sequencer.include_deposit(Deposit(0, MAKER.address, 10**12))
    n.sequencer.include_deposit(Deposit(1, TAKER.address, 10**12))
    n.sequencer.seal()
    yield n
    n.close()


def call(node: Node, method: str, *params: Any) -> dict[str, Any]:
    out = json.loads(node.app.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})))
    assert out["id"] == 7
    return out


def result(node: Node, method: str, *params: Any) -> Any:
    out = call(node, method, *params)
    assert "error" not in out, out
    return out["result"]


def error(node: Node, method: str, *params: Any) -> dict[str, Any]:
    out = call(node, method, *params)
    assert "error" in out, out
    return out["error"]


def order(node: Node, who: Signer, is_buy: bool, price: int, size: int, salt: int,
          tif: str = "GTC") -> dict[str, Any]:
    o = Order(who.address, 1, is_buy, price, size, salt, 2**40)
    return order_params(o, who.sign_order(node.chain.domain, o)[1], tif)


def test_chain_id_and_config(node: Node) -> None:
    assert result(node, "eth_chainId") == hex(901)
    cfg = result(node, "l2_rollupConfig")
    assert cfg["l1_chain_id"] == 900 and cfg["rollup_address"].startswith("0x")
    assert cfg["oracle"] == "0x" + ORACLE.address.hex()
    assert {m["symbol"] for m in result(node, "l2_getMarkets")} == {"ETH-USD", "BTC-USD"}


def test_order_flow_and_reads(node: Node) -> None:
    rest = result(node, "l2_sendOrder", order(node, MAKER, False, 166621, 20_000, 1))
    assert rest["status"] == "resting"
    book = result(node, "l2_getOrderBook", "ETH-USD", 5)
    assert book["asks"] == [["166621", "20000", "0x1"]]
    take = result(node, "l2_sendOrder", order(node, TAKER, True, 166700, 5_000, 2, "IOC"))
    assert take["status"] == "filled" and take["fills"][0]["price"] == "166621"
    block = node.sequencer.seal()
    b = result(node, "l2_getBlockByNumber", "latest", True)
    assert int(b["number"], 16) == block.number and b["status"] == "unsafe"
    assert b["fills"][0]["size"] == "5000" and b["receipts"][0]["status"] == "0x1"
    acct = result(node, "l2_getAccount", "0x" + TAKER.address.hex())
    pos = acct["positions"][0]
    assert (pos["size"], pos["entryPrice"], pos["side"]) == ("5000", "166621", "long")
    assert int(acct["equity"]) == int(acct["collateral"]) + int(pos["value"])
    receipt = result(node, "l2_getTransactionReceipt", take["fills"][0]["txHash"])
    assert receipt["status"] == "0x1" and receipt["blockNumber"] == b["number"]
    cancel_sig = MAKER.sign_cancel(node.chain.domain, bytes.fromhex(rest["orderHash"][2:]))
    out = result(node, "l2_cancelOrder", {"orderHash": rest["orderHash"],
                                          "signature": "0x" + cancel_sig.hex()})
    assert out["remaining"] == "15000"


@pytest.mark.parametrize(
    ("mutate", "code", "rule"),
    [
        (lambda p: p["order"].update(size="0"), -32003, "InvalidSize"),
        (lambda p: p["order"].update(market=77), -32003, "UnknownMarket"),
        (lambda p: p["order"].update(market="DOGE-USD"), -32003, "UnknownMarket"),
        (lambda p: p["order"].update(expiry=1), -32003, "OrderExpired"),
        (lambda p: p.update(order(NODE[0], TAKER, True, 166621, 10**8, 98)), -32003,
         "InsufficientMargin"),
        (lambda p: p.update(signature="0x" + "11" * 65), -32003, "InvalidOrderSignature"),
        (lambda p: p.update(signature="0x1234"), -32602, "signature"),
        (lambda p: p["order"].update(account="0x12"), -32602, "order.account"),
        (lambda p: p["order"].update(isBuy="yes"), -32602, "order.isBuy"),
        (lambda p: p["order"].update(price="abc"), -32602, "order.price"),
        (lambda p: p["order"].update(price=str(2**64)), -32602, "out of range"),
        (lambda p: p.update(timeInForce="FOK"), -32602, "timeInForce"),
        (lambda p: p.pop("order"), -32602, "missing field order"),
    ],
)
def test_bad_orders_rejected_and_change_nothing(node: Node, mutate, code: int, rule: str) -> None:
    params = order(node, TAKER, True, 166621, 10, 99)
    mutate(params)
    pending = list(node.chain.pending_txs)
    root = node.chain.state.dirty_items()
    books = {m: len(b) for m, b in node.sequencer.books.items()}
    err = error(node, "l2_sendOrder", params)
    assert err["code"] == code and rule in err["message"], err
    assert node.chain.pending_txs == pending and node.chain.state.dirty_items() == root
    assert {m: len(b) for m, b in node.sequencer.books.items()} == books


def test_other_errors(node: Node) -> None:
    assert error(node, "l2_noSuchMethod")["code"] == -32601
    assert error(node, "l2_getBlockByNumber", "0x999999")["code"] == -32001
    assert error(node, "l2_getAccount", "0xnothex")["code"] == -32602
    e = error(node, "l2_cancelOrder", {"orderHash": "0x" + "00" * 32,
                                       "signature": "0x" + "00" * 65})
    assert e["message"].startswith("UnknownOrder")
    stale = ORACLE.oracle_price(node.chain.domain, 1, 170000, 0)
    e = error(node, "l2_sendOraclePrice", {"market": 1, "price": "170000", "timestamp": 0,
                                           "signature": "0x" + stale.signature.hex()})
    assert e["message"].startswith("StaleOraclePrice")
    w = TAKER.withdraw(node.chain.domain, TAKER.address, 10**15, 0)
    e = error(node, "l2_sendWithdraw", {"account": "0x" + w.account.hex(),
                                        "recipient": "0x" + w.recipient.hex(),
                                        "amount": str(w.amount), "nonce": 0,
                                        "signature": "0x" + w.signature.hex()})
    assert e["message"].startswith("InsufficientFreeCollateral")


def test_batch_request_and_proof(node: Node) -> None:
    out = json.loads(node.app.handle(json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "l2_getProof",
         "params": ["0x" + MAKER.address.hex(), "latest"]},
    ])))
    assert {r["id"] for r in out} == {1, 2}
    proof = next(r["result"] for r in out if r["id"] == 2)
    assert proof["value"] is not None and len(proof["proof"]["siblings"]) >= 1
    status = result(node, "l2_syncStatus")
    assert status["unsafe_l2"]["number"] == node.chain.head.number
    assert status["safe_l2"]["number"] == 0


def test_pending_block_shows_the_unsealed_transactions(node: Node) -> None:
    node.sequencer.seal()
    empty = result(node, "l2_getBlockByNumber", "pending", True)
    head = node.chain.head
    assert empty["number"] == hex(head.number + 1) and empty["transactions"] == []
    assert empty["parentHash"] == "0x" + head.hash.hex() and empty["status"] == "pending"
    assert empty["hash"] is None and empty["stateRoot"] is None
    # nothing pending: the time the next block would get, not a stale one
    assert head.header.timestamp <= int(empty["timestamp"], 16) <= node.sequencer.clock()
    rest = result(node, "l2_sendOrder", order(node, MAKER, False, 166650, 1_000, 301))
    take = result(node, "l2_sendOrder", order(node, TAKER, True, 166650, 1_000, 302, "IOC"))
    pending = result(node, "l2_getBlockByNumber", "pending", True)
    assert [f["hash"] for f in pending["fills"]] == [take["fills"][0]["txHash"]]
    assert pending["fills"][0]["market"] == "0x1" and pending["receipts"][0]["status"] == "0x1"
    hashes = result(node, "l2_getBlockByNumber", "pending", False)["transactions"]
    assert hashes == [take["fills"][0]["txHash"]]
    assert result(node, "l2_getBlockByNumber", "latest", False)["number"] == hex(head.number)
    block = node.sequencer.seal()
    sealed = result(node, "l2_getBlockByNumber", hex(block.number), False)
    assert sealed["transactions"] == hashes and rest["status"] == "resting"
    assert sealed["timestamp"] == pending["timestamp"]


def test_client_identity_methods(node: Node) -> None:
    assert result(node, "net_version") == "901"
    version = result(node, "web3_clientVersion")
    assert version.startswith("derivnet/") and version.endswith("/python"), version


def test_numbers_follow_one_convention(node: Node) -> None:
    """ids, counts, nonces and parameters are hex quantities; money is decimal strings;
    l2_syncStatus / l2_rollupConfig keep the OP Stack's JSON numbers."""
    markets = result(node, "l2_getMarkets")
    eth = next(m for m in markets if m["symbol"] == "ETH-USD")
    assert eth["id"] == "0x1" and eth["priceDecimals"] == "0x2" and eth["sizeDecimals"] == "0x4"
    assert eth["initialMarginPpm"].startswith("0x") and eth["oraclePrice"].isdigit()
    acct = result(node, "l2_getAccount", "0x" + TAKER.address.hex())
    assert acct["nonce"] == "0x0" and acct["positions"][0]["market"] == "0x1"
    assert acct["collateral"].lstrip("-").isdigit()
    book = result(node, "l2_getOrderBook", "0x1", 1)
    assert book["market"] == "0x1"
    deposit = result(node, "l2_getBlockByNumber", "0x1", True)["transactions"][0]
    assert deposit["type"] == "Deposit" and deposit["index"] == "0x0"
    status = result(node, "l2_syncStatus")
    assert isinstance(status["unsafe_l2"]["number"], int)
    assert isinstance(result(node, "l2_rollupConfig")["l2_chain_id"], int)
    # requests take either form, and only positional params
    assert result(node, "l2_getBlockByNumber", 1, False)["number"] == "0x1"
    assert error(node, "l2_getBlockByNumber", "0x1", "true")["code"] == -32602
    out = json.loads(node.app.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "l2_getAccount",
         "params": {"address": "0x" + TAKER.address.hex()}})))
    assert out["error"]["code"] == -32602 and "positional" in out["error"]["message"]


# -- liquidation, settlement, risk fields (risk spec v1) ----------------------------------
def test_liquidation_settlement_and_risk_fields() -> None:
    """A long at 10x (202 USDC for 1 ETH at 2000.00, liquidatable at 1890.00) is liquidated over JSON-RPC by a resting bid's owner
    (l2_sendLiquidation): fillType "liquidation" in the answer, the receipt,
    the block and l2_getFill; the bid shrinks by the liquidated size; the
    insurance fund shows in l2_getMarkets and l2_getSystem; open interest
    moves; rule failures are -32003 naming the rule, malformed params -32602
    naming the field; l2_settleFunding settles. The journal keeps the
    liquidation: a sequencer rebuilt from it has the same pending state and
    book."""
    from node.eip712 import order_hash
    from sequencer.sequencer import Sequencer
    from tests.invariants import watch_node

    n = Node(NodeConfig(serve_l1=False))
    try:
        long_, short, liq = Signer(KEYS[5]), Signer(KEYS[6]), Signer(KEYS[7])
        seq, domain = n.sequencer, n.chain.domain
        for i, (who, amount) in enumerate(((long_, 202 * 10**6), (short, 10**10), (liq, 10**10))):
            seq.include_deposit(Deposit(i, who.address, amount))
        price = ORACLE.oracle_price(domain, 1, 200_000, 1)
        result(n, "l2_sendOraclePrice", {"market": 1, "price": 200_000, "timestamp": 1,
                                         "signature": "0x" + price.signature.hex()})

        def signed(who: Signer, is_buy: bool, px: int, size: int, salt: int) -> dict[str, Any]:
            o = Order(who.address, 1, is_buy, px, size, salt, 2**40)
            return order_params(o, who.sign_order(domain, o)[1])

        result(n, "l2_sendOrder", signed(short, False, 200_000, 10_000, 1))
        assert result(n, "l2_sendOrder", signed(long_, True, 200_000, 10_000, 2))["status"] == "filled"
        bid = signed(liq, True, 188_500, 20_000, 3)  # the fillable price at 1890.00: 1884.75
        assert result(n, "l2_sendOrder", bid)["status"] == "resting"
        markets = result(n, "l2_getMarkets", "pending")
        eth = markets[0]
        assert eth["openInterest"] == "10000" and eth["insuranceFund"] == "0"
        assert eth["openNotional"] == "2000000000" and eth["initialMarginPpmEffective"] == "0x186a0"
        assert eth["maxLiquidationFeePpm"] == hex(15_000) and eth["openInterestUpperCap"] == "0"
        request = {"liquidated": "0x" + long_.address.hex(), "order": bid["order"],
                   "signature": bid["signature"], "size": "10000", "price": "188500"}
        healthy = error(n, "l2_sendLiquidation", request)
        assert healthy["code"] == -32003 and healthy["message"].startswith("NotLiquidatable")
        price = ORACLE.oracle_price(domain, 1, 189_000, 2)
        result(n, "l2_sendOraclePrice", {"market": 1, "price": 189_000, "timestamp": 2,
                                         "signature": "0x" + price.signature.hex()})
        bad = error(n, "l2_sendLiquidation", {**request, "liquidated": "0x12"})
        assert bad["code"] == -32602 and "liquidated" in bad["message"]
        assert error(n, "l2_sendLiquidation", {**request, "size": "x"})["code"] == -32602
        beyond = error(n, "l2_sendLiquidation", {**request, "size": "20000"})
        assert beyond["code"] == -32003 and beyond["message"].startswith("NotAReduction")
        done = result(n, "l2_sendLiquidation", request)
        assert done["fillType"] == "liquidation" and done["size"] == "10000"
        digest = order_hash(domain, Order(liq.address, 1, True, 188_500, 20_000, 3, 2**40))
        assert seq.books[1].get(digest).remaining == 10_000  # the bid shrank by 1 ETH
        fund = int(result(n, "l2_getSystem", "pending")["insuranceFund"])
        assert fund > 0 and result(n, "l2_getMarkets", "pending")[0]["insuranceFund"] == str(fund)
        again = error(n, "l2_sendLiquidation", request)
        assert again["code"] == -32003 and again["message"].startswith("NotLiquidatable")
        settle = error(n, "l2_settleFunding", {"account": "0x" + long_.address.hex(),
                                               "market": "ETH-USD"})
        assert settle["code"] == -32003 and settle["message"].startswith("NoPosition")
        assert error(n, "l2_settleFunding", {"account": "0x12", "market": 1})["code"] == -32602
        result(n, "l2_settleFunding", {"account": "0x" + short.address.hex(), "market": 1})

        # the journal keeps it: drop the pending block, rebuild the sequencer from the journal
        pending_root = n.chain.state.commit()
        n.chain.rollback(n.chain.head.number)
        rebuilt = Sequencer(n.chain, seq.clock)
        assert n.chain.state.commit() == pending_root
        assert rebuilt.books[1].get(digest).remaining == 10_000
        n.sequencer = rebuilt
        watch = watch_node(n)  # nothing is sealed yet: the watch starts at genesis

        block = rebuilt.seal()
        watch.assert_ok()
        assert watch.blocks == 1 and {long_.address, liq.address} <= watch.accounts
        b = result(n, "l2_getBlockByNumber", hex(block.number), True)
        kinds = [f["fillType"] for f in b["fills"]]
        assert kinds.count("liquidation") == 1 and kinds.count("limit") == 1
        receipt = result(n, "l2_getTransactionReceipt", done["txHash"])
        assert receipt["fillType"] == "liquidation" and receipt["status"] == "0x1"
        fills = result(n, "l2_getFill", done["orderHash"])
        assert [f["fillType"] for f in fills] == ["liquidation"]
        acct = result(n, "l2_getAccount", "0x" + liq.address.hex())
        assert acct["positions"][0]["settledFunding"] == "0"
        assert result(n, "l2_getMarkets")[0]["openInterest"] == "10000"  # liq holds the long now
    finally:
        n.close()
