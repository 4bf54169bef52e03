"""The L2 node's JSON-RPC and WebSocket surface against docs/protocol.md.

One devnet process for the module. Each row of a table is one call with
good or hostile params and what docs/protocol.md ("JSON-RPC conventions",
"Methods (L2 port)", "Streams") says it answers: a result whose fields have
the documented number forms, or an error with the documented code and a
message that starts with the broken rule. A call that answers an error
changes nothing. The methods the node serves are exactly the documented
ones.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from node.client import order_params
from node.eip712 import Domain
from node.node import Node
from node.risk_view import risk_methods
from node.rpc import L2Api
from node.signing import Signer, dev_keys
from node.streams import StreamHub
from node.transactions import ListMarket, Order
from tests.devnet_process import DevnetProcess

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KEYS = dev_keys(6)
ADMIN, ORACLE, USER = Signer(KEYS[0]), Signer(KEYS[1]), Signer(KEYS[5])
ADDR = "0x" + USER.address.hex()
MIXED = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"  # USER, EIP-55 checksummed
BAD_CHECKSUM = "0x9965507d1A55bcC2695C58ba16FB37d819B0A4dc"  # case not checked (as geth)
H32 = "0x" + "11" * 32
SIG = "0x" + "22" * 65
EXPIRY = int(time.time()) + 3600


# -- forms of docs/protocol.md "Numbers" -----------------------------------------
def _form(pattern: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None


Q = _form(r"0x(0|[1-9a-f][0-9a-f]*)")  # hex quantity
D = _form(r"-?(0|[1-9][0-9]*)")  # decimal integer string
F = _form(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")  # exact decimal string (fundingRate1h)
X = _form(r"0x([0-9a-f]{2})*")  # hex data, lower case
A = _form(r"0x[0-9a-f]{40}")  # address, lower case
S = _form(r".*")  # any string
N = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731  JSON number
B = lambda v: isinstance(v, bool)  # noqa: E731
L = lambda v: isinstance(v, list)  # noqa: E731
O = lambda v: isinstance(v, dict)  # noqa: E731


def nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


MARKET = {"id": Q, "symbol": S, "priceDecimals": Q, "sizeDecimals": Q, "tickSize": D,
          "stepSize": D, "initialMarginPpm": Q, "maintenanceMarginPpm": Q, "makerFeePpm": Q,
          "takerFeePpm": Q, "oraclePrice": D, "oracleTime": Q, "fundingIndex": D,
          "fundingTime": Q, "fundingRate8h": D, "fundingRate1h": F,
          "nextFundingTime": nullable(Q), "premiumEstimatePpm": nullable(D),
          "openInterest": D, "openNotional": D, "initialMarginPpmEffective": Q,
          "maxLiquidationFeePpm": Q, "openInterestLowerCap": D, "openInterestUpperCap": D,
          "insuranceFund": D}
ACCOUNT = {"address": A, "collateral": D, "nonce": Q, "equity": D, "initialMargin": D,
           "maintenanceMargin": D, "freeCollateral": D, "marginRatioPpm": nullable(D),
           "positions": L}
POSITION = {"market": Q, "symbol": S, "size": D, "side": S, "cost": D, "entryPrice": D,
            "oraclePrice": D, "value": D, "unrealizedPnl": D, "fundingIndex": D,
            "unsettledFunding": D, "liquidationPrice": nullable(D), "settledFunding": D}
FILL_TYPES = {"limit"}
"""``fillType`` values served today (docs/protocol.md "Fill types")."""
HEADER = {"number": Q, "hash": X, "parentHash": X, "timestamp": Q, "l1Origin": Q,
          "transactionsRoot": X, "receiptsRoot": X, "stateRoot": X, "status": S,
          "batch": nullable(Q), "transactions": L}
PENDING = {**HEADER, "hash": nullable(X), "transactionsRoot": nullable(X),
           "receiptsRoot": nullable(X), "stateRoot": nullable(X)}
BATCH = {"index": Q, "firstBlock": Q, "lastBlock": Q, "stateRoot": X, "txRoot": X,
         "l1Block": Q, "l1Tx": X, "depositEnd": Q, "dataHash": X, "status": S,
         "derivedStateRoot": X, "matches": B}
PROOF = {"address": A, "key": X, "value": nullable(X), "stateRoot": X, "blockNumber": Q,
         "batch": nullable(Q), "proof": O}


# -- expectations -------------------------------------------------------------------
@dataclass(frozen=True)
class Ok:
    """A result: ``shape`` (field -> form, exactly these fields), ``each``
    (the shape of every list item), or ``check`` (a predicate)."""

    shape: dict[str, Callable[[Any], bool]] | None = None
    each: dict[str, Callable[[Any], bool]] | None = None
    check: Callable[[Any], bool] | None = None
    null: bool = False  # null is a documented answer too

    def verify(self, result: Any) -> None:
        if result is None and self.null:
            return
        if self.check is not None:
            assert self.check(result), result
        if self.shape is not None:
            _shape(result, self.shape)
        if self.each is not None:
            assert isinstance(result, list) and result, result
            for item in result:
                _shape(item, self.each)


def _shape(obj: Any, shape: dict[str, Callable[[Any], bool]]) -> None:
    assert isinstance(obj, dict), obj
    assert set(obj) == set(shape), sorted(set(obj) ^ set(shape))
    for key, check in shape.items():
        assert check(obj[key]), (key, obj[key])


@dataclass(frozen=True)
class Err:
    """An error: documented ``code``, message starting with ``message``."""

    code: int
    message: str
    rule: bool = False  # -32003 of a rule: data is {"rule": RULE}


Params = list[Any] | dict[str, Any] | Callable[["Ctx"], list[Any]]


@dataclass
class Ctx:
    """What signed params need: the devnet's EIP-712 domain."""

    domain: Domain
    url: str
    l1_url: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def call(self, method: str, params: Any) -> dict[str, Any]:
        reply = self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                               "params": params})
        return reply.json()  # type: ignore[no-any-return]

    def result(self, method: str, *params: Any) -> Any:
        reply = self.call(method, list(params))
        assert "result" in reply, reply
        return reply["result"]

    def order(self, signer: Signer = USER, **kw: Any) -> dict[str, Any]:
        fields = {"account": signer.address, "market": 1, "is_buy": True, "price": 166621,
                  "size": 10_000, "salt": 7, "expiry": EXPIRY, **kw}
        order = Order(**fields)
        _, sig = signer.sign_order(self.domain, order)
        return order_params(order, sig)

    def withdraw(self, amount: int) -> dict[str, Any]:
        tx = USER.withdraw(self.domain, USER.address, amount, 0)
        return {"account": ADDR, "recipient": ADDR, "amount": str(amount), "nonce": "0x0",
                "signature": "0x" + tx.signature.hex()}

    def oracle(self, signer: Signer, market: int = 1) -> dict[str, Any]:
        tx = signer.oracle_price(self.domain, market, 166600, int(time.time()))
        return {"market": tx.market, "price": str(tx.price), "timestamp": hex(tx.timestamp),
                "signature": "0x" + tx.signature.hex()}

    def funding_tick(self, signer: Signer, market: int = 1, premium: int = 0) -> dict[str, Any]:
        ts = int(time.time()) - 60  # before the pending block's timestamp
        tx = signer.funding_tick(self.domain, market, ts, premium)
        return {"market": tx.market, "timestamp": hex(tx.timestamp), "premiumPpm": premium,
                "signature": "0x" + tx.signature.hex()}

    def list_market(self, market: int, symbol: bytes) -> dict[str, Any]:
        tx = ADMIN.list_market(self.domain, ListMarket(
            market, symbol.ljust(16, b"\0"), 2, 2, 1, 1, 100_000, 50_000, 0, 0, 100, b""))
        return {"market": hex(market), "symbol": symbol.decode(), "priceDecimals": "0x2",
                "sizeDecimals": "0x2", "tickSize": "1", "stepSize": "1",
                "initialMarginPpm": "0x186a0", "maintenanceMarginPpm": "0xc350",
                "makerFeePpm": "0x0", "takerFeePpm": "0x0", "oraclePrice": "100",
                "signature": "0x" + tx.signature.hex()}


BAD = -32602
BAD_ORDER = {"account": ADDR, "market": "0x1", "isBuy": True, "price": "1", "size": "1",
             "salt": "0x1", "expiry": EXPIRY}
BAD_LISTING = {"market": "0x9", "symbol": "SOL-USD", "priceDecimals": "0x2",
               "sizeDecimals": "0x2", "tickSize": "1", "stepSize": "1",
               "initialMarginPpm": "0x1", "maintenanceMarginPpm": "0x1", "makerFeePpm": "0x0",
               "takerFeePpm": "0x0", "oraclePrice": "1", "signature": SIG}


def _with(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {**base, **kw}


def _liquidation(c: Ctx) -> dict[str, Any]:
    """l2_sendLiquidation of the oracle's (flat) account with USER's signed buy."""
    order = c.order()
    return {"liquidated": "0x" + ORACLE.address.hex(), "order": order["order"],
            "signature": order["signature"], "size": "10000", "price": "166621"}


HTTP: list[tuple[str, Params, Ok | Err]] = [
    # identity
    ("eth_chainId", [], Ok(check=lambda r: r == "0x385")),
    ("eth_blockNumber", [], Ok(check=Q)),
    ("net_version", [], Ok(check=lambda r: r == "901")),
    ("web3_clientVersion", [], Ok(check=lambda r: r.startswith("derivnet/"))),
    ("eth_getBalance", [ADDR, "latest"], Err(-32601, "Method not found")),
    # params: positional, arity, trailing null
    ("eth_chainId", [1], Err(BAD, "params: expected none, got 1")),
    ("net_version", [None], Err(BAD, "params: expected none, got 1")),
    ("l2_getAccount", [ADDR, "latest", None], Err(BAD, "params: expected at most 2")),
    ("eth_chainId", {"a": 1}, Err(BAD, "params: expected an array")),
    ("l2_getAccount", [], Err(BAD, "params: expected at least 1 parameter, got 0")),
    ("l2_getAccount", [ADDR, "latest", 1], Err(BAD, "params: expected at most 2 parameters")),
    ("l2_getAccount", {"address": ADDR}, Err(BAD, "params: expected an array")),
    ("l2_getAccount", [ADDR, None], Ok(ACCOUNT)),
    ("l2_getOrderBook", ["ETH-USD", None], Ok({"market": Q, "symbol": S, "bids": L, "asks": L})),
    ("l2_getAccount", [None], Err(BAD, "address: expected 0x-prefixed hex")),
    # addresses and bytes
    ("l2_getAccount", [MIXED], Ok(ACCOUNT)),
    ("l2_getAccount", [BAD_CHECKSUM], Ok(ACCOUNT)),
    ("l2_getAccount", [ADDR[2:]], Err(BAD, "address: expected 0x-prefixed hex")),
    ("l2_getAccount", [ADDR[:-1]], Err(BAD, "address: expected 20 bytes, got 39 hex digits")),
    ("l2_getAccount", ["0xzz" + ADDR[4:]], Err(BAD, "address: invalid hex")),
    ("l2_getAccount", [[ADDR]], Err(BAD, "address: expected 0x-prefixed hex")),
    ("l2_getBlockByHash", ["0X" + H32[2:]], Err(BAD, "hash: expected 0x-prefixed hex")),
    ("l2_getBlockByHash", [H32[:-1]], Err(BAD, "hash: expected 32 bytes, got 63")),
    ("l2_getBlockByHash", [H32], Ok(null=True, check=lambda r: False)),
    ("l2_getTransactionReceipt", [H32], Ok(null=True, check=lambda r: False)),
    ("l2_getTransactionReceipt", [1], Err(BAD, "txHash: expected 0x-prefixed hex")),
    ("l2_getFill", [H32], Err(-32001, "no sealed fill")),
    ("l2_getFill", ["0x"], Err(BAD, "hash: expected 32 bytes")),
    # numbers and tags
    ("l2_getAccount", [ADDR, "0x0"], Ok(ACCOUNT)),
    ("l2_getAccount", [ADDR, "pending"], Ok(ACCOUNT)),
    ("l2_getAccount", [ADDR, "earliest"], Ok(ACCOUNT)),
    ("l2_getAccount", [ADDR, "0x" + "f" * 20], Err(BAD, "block: out of range")),
    ("l2_getAccount", [ADDR, "-1"], Err(BAD, "block: out of range")),
    ("l2_getAccount", [ADDR, 2**64 - 1], Err(-32001, "block 18446744073709551615 not found")),
    ("l2_getAccount", [ADDR, " 0"], Err(BAD, "block: expected an integer")),
    ("l2_getAccount", [ADDR, "\uff10"], Err(BAD, "block: expected an integer")),
    ("l2_getAccount", [ADDR, "1_0"], Err(BAD, "block: expected an integer")),
    ("l2_getAccount", [ADDR, "1e3"], Err(BAD, "block: expected an integer")),
    ("l2_getAccount", [ADDR, 0.0], Err(BAD, "block: expected an integer")),
    ("l2_getAccount", [ADDR, "0x"], Err(BAD, "block: expected an integer")),
    ("l2_getBatch", ["0x" + "f" * 5000], Err(BAD, "index: out of range (longer than 1000")),
    ("l2_getAccount", [ADDR, True], Err(BAD, "block: expected an integer, got a boolean")),
    ("l2_getAccount", [ADDR, "LATEST"], Err(BAD, "block: expected an integer")),
    ("l2_getMarkets", [], Ok(each=MARKET)),
    ("l2_getMarkets", ["pending"], Ok(each=MARKET)),
    ("l2_getMarkets", [{}], Err(BAD, "block: expected an integer")),
    ("l2_getBlockByNumber", ["earliest", False], Ok(HEADER)),
    ("l2_getBlockByNumber", ["latest"], Ok({**HEADER, "receipts": L, "fills": L})),
    ("l2_getBlockByNumber", ["pending", False], Ok(PENDING)),
    ("l2_getBlockByNumber", ["latest", "false"], Err(BAD, "full: expected true or false")),
    ("l2_getBlockByNumber", ["latest", 0], Err(BAD, "full: expected true or false")),
    ("l2_getBlockByNumber", [[["latest"]]], Err(BAD, "block: expected an integer")),
    ("l2_getBatch", [], Ok(BATCH, null=True)),
    ("l2_getBatch", [2**64 - 1], Ok(BATCH, null=True, check=lambda r: False)),
    ("l2_getBatch", [2**64], Err(BAD, "index: out of range (expected 0 <= index < 2^64)")),
    ("l2_getBatch", ["earliest"], Err(BAD, "index: expected an integer")),
    ("l2_getWithdrawal", [0], Err(-32001, "no withdrawal 0")),
    ("l2_getWithdrawal", [-1], Err(BAD, "withdrawalId: out of range")),
    ("l2_getProof", [ADDR], Ok(PROOF)),
    ("l2_getProof", [ADDR, "pending"], Ok(PROOF)),
    ("l2_getEscapeProof", [ADDR], Err(-32001, f"account {ADDR} has no leaf")),
    ("l2_getDisputes", [], Ok(check=L)),
    ("l2_getDispute", [0], Ok(null=True, check=lambda r: False)),
    ("l2_getDispute", ["x"], Err(BAD, "id: expected an integer")),
    ("l2_syncStatus", [], Ok(check=lambda r: N(r["unsafe_l2"]["number"]))),
    ("l2_getSystem", [], Ok({"nextDeposit": Q, "withdrawalCount": Q, "oracle": A,
                             "feeAccount": A, "admin": A, "fundingPool": D,
                             "insuranceFund": D})),
    ("l2_getSystem", ["pending"], Ok(check=lambda r: D(r["fundingPool"]))),
    ("l2_getSystem", [2**64 - 1], Err(-32001, "block 18446744073709551615 not found")),
    ("l2_rollupConfig", [], Ok(check=lambda r: r["l2_chain_id"] == 901)),
    # markets
    ("l2_getOrderBook", [1, "0x5"], Ok({"market": Q, "symbol": S, "bids": L, "asks": L})),
    ("l2_getOrderBook", ["eth-usd"], Err(-32003, "UnknownMarket: ", rule=True)),
    ("l2_getOrderBook", [99], Err(-32003, "UnknownMarket: ", rule=True)),
    ("l2_getOrderBook", [2**32], Err(BAD, "market: out of range (expected 0 <= market < 2^32)")),
    ("l2_getOrderBook", ["ETH-USD", 0], Err(BAD, "depth: expected 1..1000")),
    ("l2_getOrderBook", ["ETH-USD", 1001], Err(BAD, "depth: expected 1..1000")),
    ("l2_getOpenOrders", [ADDR], Ok(check=lambda r: r == [])),
    ("l2_getOpenOrders", [ADDR, "NOPE"], Err(-32003, "UnknownMarket: ", rule=True)),
    # writes: malformed (-32602) and signed but against a rule (-32003, data.rule)
    ("l2_sendOrder", [None], Err(BAD, "params: expected an object")),
    ("l2_sendOrder", [{"signature": SIG}], Err(BAD, "missing field order")),
    ("l2_sendOrder", [{"order": [], "signature": SIG}], Err(BAD, "order: expected an object")),
    ("l2_sendOrder", [{"order": BAD_ORDER, "signature": SIG, "reduceOnly": True}],
     Err(BAD, "reduceOnly: unknown field")),
    ("l2_sendOrder", [{"order": _with(BAD_ORDER, postOnly=True), "signature": SIG}],
     Err(BAD, "order.postOnly: unknown field")),
    ("l2_sendOrder", [{"order": _with(BAD_ORDER, isBuy="true"), "signature": SIG}],
     Err(BAD, "order.isBuy: expected true or false")),
    ("l2_sendOrder", [{"order": _with(BAD_ORDER, price=2**64), "signature": SIG}],
     Err(BAD, "order.price: out of range")),
    ("l2_sendOrder", [{"order": _with(BAD_ORDER, size="1.5"), "signature": SIG}],
     Err(BAD, "order.size: expected an integer")),
    ("l2_sendOrder", [{"order": BAD_ORDER, "signature": SIG[:-2]}],
     Err(BAD, "signature: expected 65 bytes")),
    ("l2_sendOrder", [{"order": BAD_ORDER, "signature": SIG, "timeInForce": "FOK"}],
     Err(BAD, "timeInForce: expected GTC, IOC or POST_ONLY")),
    ("l2_sendOrder", [{"order": BAD_ORDER, "signature": SIG}],
     Err(-32003, "InvalidOrderSignature: ", rule=True)),
    ("l2_sendOrder", lambda c: [c.order()], Err(-32003, "InsufficientMargin: ", rule=True)),
    ("l2_sendOrder", lambda c: [c.order(size=0)], Err(-32003, "InvalidSize: ", rule=True)),
    ("l2_sendOrder", lambda c: [c.order(expiry=1)], Err(-32003, "OrderExpired: ", rule=True)),
    ("l2_cancelOrder", [{"orderHash": H32, "signature": SIG}],
     Err(-32003, "UnknownOrder: ", rule=True)),
    ("l2_cancelOrder", [H32, SIG], Err(BAD, "params: expected at most 1 parameter, got 2")),
    ("l2_sendWithdraw", lambda c: [c.withdraw(1)],
     Err(-32003, "InsufficientFreeCollateral: ", rule=True)),
    ("l2_sendWithdraw", lambda c: [_with(c.withdraw(1), amount=str(2**128))],
     Err(BAD, "amount: out of range (expected 0 <= amount < 2^128)")),
    ("l2_sendWithdraw", lambda c: [_with(c.withdraw(1), memo="x")],
     Err(BAD, "memo: unknown field")),
    ("l2_sendOraclePrice", lambda c: [c.oracle(USER)],
     Err(-32003, "InvalidOracleSignature: ", rule=True)),
    ("l2_sendOraclePrice", lambda c: [_with(c.oracle(ORACLE), timestamp=-1)],
     Err(BAD, "timestamp: out of range")),
    ("l2_sendOraclePrice", lambda c: [c.oracle(ORACLE)], Ok({"txHash": X})),
    ("l2_sendFundingTick", lambda c: [c.funding_tick(USER)],
     Err(-32003, "InvalidOracleSignature: ", rule=True)),
    ("l2_sendFundingTick", lambda c: [_with(c.funding_tick(ORACLE), premiumPpm=2**31)],
     Err(BAD, "premiumPpm: out of range")),
    ("l2_sendFundingTick", lambda c: [c.funding_tick(ORACLE, premium=1_000_001)],
     Err(-32003, "InvalidPremium: ", rule=True)),
    ("l2_sendFundingTick", lambda c: [c.funding_tick(ORACLE, premium=-250)], Ok({"txHash": X})),
    ("l2_sendLiquidation", lambda c: [_liquidation(c)], Err(-32003, "NotLiquidatable: ", rule=True)),
    ("l2_sendLiquidation", lambda c: [_with(_liquidation(c), price="1")],
     Err(-32003, "FillPriceMismatch: ", rule=True)),
    ("l2_sendLiquidation", lambda c: [{k: v for k, v in _liquidation(c).items() if k != "size"}],
     Err(BAD, "missing field size")),
    ("l2_sendLiquidation", lambda c: [_with(_liquidation(c), size=str(2**64))],
     Err(BAD, "size: out of range")),
    ("l2_settleFunding", [{"account": ADDR, "market": "0x1"}], Err(-32003, "NoPosition: ", rule=True)),
    ("l2_settleFunding", [{"account": ADDR}], Err(BAD, "missing field market")),
    ("l2_getRiskEngine", [], Ok(check=lambda r: r["enabled"] is True and Q(r["accountsWatched"])
                                and isinstance(r["rejectedByRule"], dict))),
    ("l2_getDeleverageRanking", [1], Ok({"market": Q, "oraclePrice": D, "insuranceFund": D,
                                         "shorts": L, "longs": L})),
    ("l2_getDeleverageRanking", [2**32 - 1], Err(-32003, "UnknownMarket: ", rule=True)),
    ("l2_sendListMarket", [_with(BAD_LISTING, priceDecimals=256)],
     Err(BAD, "priceDecimals: out of range (expected 0 <= priceDecimals < 2^8)")),
    ("l2_sendListMarket", [_with(BAD_LISTING, market="ETH-USD")],
     Err(BAD, "market: expected an integer")),
    ("l2_sendListMarket", [_with(BAD_LISTING, symbol="X" * 17)],
     Err(BAD, "symbol: expected at most 16 ASCII characters")),
    ("l2_sendListMarket", [BAD_LISTING], Err(-32003, "InvalidAdminSignature: ", rule=True)),
    ("l2_sendListMarket", lambda c: [c.list_market(1, b"AUDIT")],
     Err(-32003, "MarketAlreadyListed: ", rule=True)),
    ("l2_sendListMarket", lambda c: [c.list_market(77, b"AUDIT-USD")],
     Ok({"txHash": X, "market": Q})),
    # devnet controls
    ("devnet_increaseTime", [2**40], Err(BAD, "seconds: ")),
    ("devnet_increaseTime", [-1], Err(BAD, "seconds: out of range")),
    ("devnet_increaseTime", [0], Ok(check=Q)),
    ("devnet_mine", [0], Err(BAD, "blocks: expected 1..1000")),
    ("devnet_mine", [None], Ok(check=Q)),
    ("devnet_setBatcher", ["false"], Err(BAD, "on: expected true or false")),
    ("devnet_setBatcher", [None], Err(BAD, "on: expected true or false")),
    ("devnet_setBatcher", [True], Ok(check=lambda r: r is True)),
    ("devnet_setCensorDeposits", [False], Ok(check=lambda r: r is False)),
    ("devnet_setDefender", [True], Ok(check=lambda r: r is True)),
    ("devnet_injectFault", [{"kind": "nope"}], Err(BAD, "unknown fault kind")),
    ("devnet_injectFault", [{"kind": "last-step", "at": 1}],
     Err(BAD, "at: unknown field (expected kind, step)")),
    ("devnet_injectFault", [{"kind": "last-step", "step": -1}], Err(BAD, "step: out of range")),
    # streams need a WebSocket
    ("l2_subscribe", ["blocks", {}], Err(-32601, "NotificationsUnsupported")),
    ("eth_subscribe", ["newHeads"], Err(-32601, "NotificationsUnsupported")),
    ("l2_unsubscribe", ["0x1"], Err(-32601, "NotificationsUnsupported")),
]

WS: list[tuple[str, list[Any], Ok | Err]] = [
    ("l2_subscribe", ["blocks"], Ok(check=_form(r"0x[0-9a-f]{32}"))),
    ("l2_subscribe", ["orderbook", {"market": "ETH-USD", "depth": "0x5"}],
     Ok(check=_form(r"0x[0-9a-f]{32}"))),
    ("l2_subscribe", ["candles", {"market": 1, "resolution": "5m"}],
     Ok(check=_form(r"0x[0-9a-f]{32}"))),
    ("l2_subscribe", ["account", {"address": MIXED}], Ok(check=_form(r"0x[0-9a-f]{32}"))),
    ("l2_subscribe", ["nope"], Err(BAD, "UnknownChannel: ")),
    ("l2_subscribe", [["orderbook"]], Err(BAD, "UnknownChannel: ")),
    ("l2_subscribe", ["orderbook", {}], Err(BAD, "missing field market")),
    ("l2_subscribe", ["orderbook", []], Err(BAD, "params: expected an object")),
    ("l2_subscribe", ["orderbook", {"market": "ETH-USD", "dept": 5}],
     Err(BAD, "dept: unknown field (channel orderbook takes market, depth)")),
    ("l2_subscribe", ["markets", {"market": 1}], Err(BAD, "market: unknown field")),
    ("l2_subscribe", ["orderbook", {"market": "NOPE"}], Err(-32003, "UnknownMarket: ", rule=True)),
    ("l2_subscribe", ["orderbook", {"market": 1, "depth": 0}], Err(BAD, "depth: expected 1..1000")),
    ("l2_subscribe", ["orderbook", {"market": 1, "depth": True}],
     Err(BAD, "depth: expected an integer, got a boolean")),
    ("l2_subscribe", ["candles", {"market": 1, "resolution": ["1m"]}],
     Err(BAD, "resolution: expected 1m, 5m or 1h")),
    ("l2_subscribe", ["account", {"address": "0x12"}], Err(BAD, "address: expected 20 bytes")),
    ("l2_subscribe", ["blocks", {}, 3], Err(BAD, "params: expected at most 2 parameters")),
    ("eth_subscribe", ["newHeads"], Ok(check=_form(r"0x[0-9a-f]{32}"))),
    ("eth_subscribe", ["newHeads", {"includeTransactions": True}],
     Err(BAD, "params: newHeads takes no parameters")),
    ("eth_subscribe", ["logs"], Err(BAD, "UnknownSubscription: ")),
    ("l2_unsubscribe", ["0x" + "0" * 32], Ok(check=lambda r: r is False)),
    ("l2_unsubscribe", [{}], Ok(check=lambda r: r is False)),
    ("eth_unsubscribe", ["0x1"], Ok(check=lambda r: r is False)),
    ("eth_getBalance", [ADDR], Err(-32601, "Method not found")),
]

FRAMES: list[tuple[str, int, str]] = [
    ("[]", -32600, "invalid request: empty batch"),
    ("[[]]", -32600, "invalid request: expected a request object"),
    ("[1, [2]]", -32600, "invalid request: expected a request object"),
    ("null", -32600, "invalid request: expected a request object"),
    ('{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": 5}', -32600,
     "invalid request: params must be an array"),
    ('{"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"}', -32600, "invalid request: jsonrpc"),
    ('{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "extra": 1}', -32600,
     "invalid request: unknown member 'extra'"),
    ('{"jsonrpc": "2.0", "id": true, "method": "eth_chainId"}', -32600,
     "invalid request: id must be a string, number or null"),
    ('{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600, "invalid request: method must be"),
    ("{", -32700, "parse error"),
    ("[" * 65 + "]" * 65, -32700, "parse error: nesting deeper than 64"),
    ('{"jsonrpc": "2.0", "id": 1, "method": "l2_getBatch", "params": [%s]}' % ("9" * 4301),
     -32700, "parse error: Exceeds the limit (4300 digits)"),
]


# -- the devnet -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    # the embedded L1 in the node's process: one interpreter less to start
    # (the surface under test is the L2 port's, the same in both modes)
    # funding ticks off: the session posts its own tick (a clock tick after it
    # would make it stale), and "an error changes nothing" compares states
    proc = DevnetProcess(None, tmp_path_factory.mktemp("conformance") / "devnet.log",
                         **{"--l1": "in-process", "--funding-interval": "0"})
    proc.start()
    try:
        ctx = Ctx(Domain(901, b""), proc.url, proc.l1_url)
        config = ctx.result("l2_rollupConfig")
        ctx.domain = Domain(901, bytes.fromhex(config["rollup_address"][2:]))
        yield ctx
    finally:
        ctx.http.close()
        proc.stop()


@pytest.fixture(scope="module")
def ws(devnet: Ctx) -> Iterator[ClientConnection]:
    with ws_connect(devnet.url.replace("http", "ws"), open_timeout=10) as conn:
        yield conn


def observable(ctx: Ctx) -> tuple[Any, ...]:
    """What a refused call could have changed: the pending state of the
    account and the markets, the account's orders, the devnet switches."""
    calls = [("l2_getAccount", [ADDR, "pending"]), ("l2_getMarkets", ["pending"]),
             ("l2_getOpenOrders", [ADDR]), ("l2_syncStatus", [])]
    replies = ctx.http.post(ctx.url, json=[{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                                           for i, (m, p) in enumerate(calls)]).json()
    account, markets, orders, status = (r["result"] for r in sorted(replies, key=lambda r: r["id"]))
    return account, markets, orders, status["batcher_enabled"], status["faulty_proposer"]


def check_answer(reply: dict[str, Any], expect: Ok | Err) -> None:
    assert reply.get("jsonrpc") == "2.0", reply
    if isinstance(expect, Ok):
        assert "result" in reply, reply
        expect.verify(reply["result"])
        return
    assert "error" in reply, reply
    error = reply["error"]
    assert error["code"] == expect.code and error["message"].startswith(expect.message), error
    if expect.rule:
        assert error["data"] == {"rule": expect.message.split(":")[0]}, error


def _id(case: tuple[Any, ...]) -> str:
    params = "<signed>" if callable(case[1]) else json.dumps(case[1])
    return f"{case[0]}{params[:60]}"


# -- tests ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "params", "expect"), HTTP, ids=map(_id, HTTP))
def test_http_answers_as_documented(devnet: Ctx, method: str, params: Params,
                                    expect: Ok | Err) -> None:
    sent = params(devnet) if callable(params) else params
    writes = method.startswith(("l2_send", "l2_cancel", "devnet_"))  # the others only read
    before = observable(devnet) if writes and isinstance(expect, Err) else None
    check_answer(devnet.call(method, sent), expect)
    if before is not None:
        assert observable(devnet) == before


@pytest.mark.parametrize(("method", "params", "expect"), WS, ids=map(_id, WS))
def test_websocket_answers_as_documented(ws: ClientConnection, method: str, params: list[Any],
                                         expect: Ok | Err) -> None:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": "q", "method": method, "params": params}))
    while True:  # skip notifications of earlier subscriptions
        reply = json.loads(ws.recv(timeout=10))
        if reply.get("id") == "q":
            break
    check_answer(reply, expect)


@pytest.mark.parametrize(("frame", "code", "message"), FRAMES, ids=[f[0][:20] for f in FRAMES])
def test_bad_frames_answer_documented_codes(devnet: Ctx, frame: str, code: int,
                                            message: str) -> None:
    reply = devnet.http.post(devnet.url, content=frame,
                             headers={"content-type": "application/json"}).json()
    errors = [r["error"] for r in (reply if isinstance(reply, list) else [reply])]
    assert errors and all(e["code"] == code and e["message"].startswith(message)
                          for e in errors), reply


def documented_methods() -> set[str]:
    """Method names in the first column of "Methods (L2 port)"."""
    text = DOCS.read_text()
    section = text[text.index("### Methods (L2 port)"):text.index("### Open orders")]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)\(", row)}


def test_the_node_serves_exactly_the_documented_methods() -> None:
    served = {n for n in dir(L2Api) if n.startswith(("eth_", "net_", "web3_", "l2_"))}
    for source in (inspect.getsource(StreamHub.methods), inspect.getsource(Node.devnet_methods),
                   inspect.getsource(risk_methods)):
        served |= set(re.findall(r'"((?:l2|eth|devnet)_\w+)":', source))
    assert served == documented_methods()
    assert {m for m, _, _ in HTTP + WS} >= served  # every method is probed above


# -- one session: no JSON numbers where docs/protocol.md "Numbers" wants strings --------
MONEY = {"collateral", "equity", "initialMargin", "maintenanceMargin", "freeCollateral", "size",
         "cost", "entryPrice", "oraclePrice", "value", "unrealizedPnl", "price", "amount",
         "filled", "remaining", "tickSize", "stepSize", "volume", "open", "high", "low", "close",
         "challengerBond", "fundingIndex", "fundingRate8h", "unsettledFunding", "premiumPpm",
         "fundingPool", "liquidationPrice", "marginRatioPpm", "openInterest", "openNotional",
         "openInterestLowerCap", "openInterestUpperCap", "insuranceFund", "settledFunding"}
"""Fields that are money, sizes or prices: decimal strings."""
QUANTITIES = {"number", "timestamp", "l1Origin", "nonce", "salt", "expiry", "index", "batch",
              "firstBlock", "lastBlock", "l1Block", "depositEnd", "market", "withdrawalId",
              "blockNumber", "seq", "block", "sealedAt", "transactions", "fills", "trades",
              "start", "priceDecimals", "sizeDecimals", "initialMarginPpm",
              "maintenanceMarginPpm", "makerFeePpm", "takerFeePpm", "oracleTime", "fromBlock",
              "toBlock", "unsafe", "safe", "finalized", "step", "batchIndex", "lo", "hi",
              "stepCount", "gasUsed", "difficulty", "gasLimit", "fundingTime",
              "nextDeposit", "withdrawalCount", "initialMarginPpmEffective",
              "maxLiquidationFeePpm"}
"""Fields that are quantities or ids: hex quantities (when a string; ``transactions``,
``fills``, ``trades``, ``block`` are lists or objects elsewhere)."""
OP_SHAPED = ("l2_syncStatus", "l2_rollupConfig")
"""The documented exception: OP Stack shapes keep JSON numbers."""
TRADERS = [Signer(k) for k in dev_keys(10)[7:9]]


DATA = {"l2_getProof": {"value"}, "eth_subscription": {"nonce"}}
"""Fields of these answers that are hex data under a MONEY or QUANTITIES name
(the account leaf; geth's 8-byte header nonce)."""


def no_json_numbers(value: Any, path: str, data: frozenset[str] = frozenset()) -> None:
    """Assert ``value`` holds no JSON number, its MONEY fields are decimal
    strings, its QUANTITIES hex quantities (``data`` fields hex data) and its
    book levels ``[price, size, orders]`` ``[D, D, Q]``."""
    assert isinstance(value, (str, bool, dict, list)) or value is None, (path, value)
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, str) and key in data:
                assert X(v), (f"{path}.{key}", v)
            elif isinstance(v, str) and key in MONEY:
                assert D(v), (f"{path}.{key}", v)
            elif isinstance(v, str) and key in QUANTITIES:
                assert Q(v), (f"{path}.{key}", v)
            no_json_numbers(v, f"{path}.{key}", data)
    elif isinstance(value, list):
        if path.endswith((".bids", ".asks")):
            assert all(D(p) and D(sz) and Q(n) for p, sz, n in value), (path, value)
        for i, v in enumerate(value):
            no_json_numbers(v, f"{path}[{i}]", data)


def _fund(ctx: Ctx, client: Any, amount: int) -> None:
    """Deposit ``amount`` for each of TRADERS: every L1 transaction sent at
    once (nonces from the pending state), then wait for the L2 inclusion."""
    from l1_stub.client import connect, wait_receipt
    from node.wallet import rollup_client

    with connect(ctx.l1_url) as w3:
        rollup = rollup_client(client, w3)
        sent = [tx for t in TRADERS for tx in (rollup.faucet(t.private_key, amount),
                                               rollup.approve(t.private_key, amount),
                                               rollup.deposit(t.private_key, t.address, amount))]
        for tx in sent:
            assert wait_receipt(w3, tx, timeout=30)["status"] == 1
        count = rollup.deposit_count()
    deadline = time.monotonic() + 30
    while client.sync_status()["deposits_included"] < count:
        assert time.monotonic() < deadline, "deposits not included"
        time.sleep(0.1)


def test_one_session_sends_no_json_numbers(devnet: Ctx) -> None:
    """Every documented result and notification of a session with deposits,
    orders, fills, a cancel, a withdrawal, an oracle update, a listing and
    batches: no JSON numbers (but in the OP-shaped methods), money decimal,
    quantities and ids hex. Orders go in both the node's form (hex) and the
    form a wallet signs (EIP-712 message: JSON numbers). ``devnet_injectFault``
    comes last (it makes the proposer faulty); a live dispute game is
    test_dispute_e2e's."""
    from node.client import L2Client
    from node.eip712 import order_message

    maker, taker = TRADERS
    wanted = {("orderbook", "update"), ("trades", "update"), ("candles", "update"),
              ("markets", "update"), ("blocks", "block"), ("blocks", "finality"),
              ("account", "fills"), ("account", "deposits"), ("account", "withdrawals"),
              ("account", "finality"), ("newHeads", "header")}
    seen: set[tuple[str, str]] = set()
    notes: list[tuple[str, Any]] = []
    results: list[tuple[str, Any]] = []

    def see(msg: dict[str, Any]) -> None:
        result = msg["params"]["result"]
        notes.append((msg["method"], result))
        if msg["method"] == "eth_subscription":
            seen.add(("newHeads", "header"))
            return
        c = result["contents"]
        if result["channel"] == "account":
            seen.update(("account", k) for k in ("fills", "deposits", "withdrawals") if c.get(k))
            if c["event"] == "finality":
                seen.add(("account", "finality"))
        elif result["channel"] == "blocks":
            seen.add(("blocks", c["event"]))
        elif result["type"] == "update" and (result["channel"] != "orderbook"
                                             or c["bids"] or c["asks"]):
            seen.add((result["channel"], "update"))

    subs = [("l2_subscribe", ["orderbook", {"market": "ETH-USD", "depth": 5}]),
            ("l2_subscribe", ["trades", {"market": "0x1"}]),
            ("l2_subscribe", ["candles", {"market": 1}]), ("l2_subscribe", ["markets"]),
            ("l2_subscribe", ["blocks"]),
            ("l2_subscribe", ["account", {"address": "0x" + taker.address.hex()}]),
            ("eth_subscribe", ["newHeads"])]
    with ws_connect(devnet.url.replace("http", "ws"), open_timeout=10) as ws, \
            L2Client(devnet.url) as client:
        for i, (method, params) in enumerate(subs):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": f"s{i}", "method": method,
                                "params": params}))
        _fund(devnet, client, 10_000 * 10**6)

        def call(method: str, *params: Any) -> Any:
            result = client.call(method, *params)
            results.append((method, result))
            return result

        ask, ask_hash, ask_sig = client.make_order(maker, "ETH-USD", False, 166700, 30_000)
        bid, _, bid_sig = client.make_order(taker, "ETH-USD", True, 166700, 10_000)
        call("l2_sendOrder", order_params(ask, ask_sig))  # the node's form: hex
        signed = {"order": order_message(bid), "signature": "0x" + bid_sig.hex(),
                  "timeInForce": "IOC"}  # as a wallet signed it: JSON numbers
        assert isinstance(signed["order"]["expiry"], int)
        fill = call("l2_sendOrder", signed)["fills"][0]
        (open_order,) = call("l2_getOpenOrders", "0x" + maker.address.hex())
        assert open_order["order"] == ask.to_json()
        withdrawal = client.withdraw(taker, 10**6)
        results.append(("l2_sendWithdraw", withdrawal))
        results.append(("l2_sendOraclePrice", client.send_oracle_price(ORACLE, 1, 166650)))
        results.append(("l2_sendFundingTick",
                        client.send_funding_tick(ORACLE, 2, -40, int(time.time()) - 60)))
        call("l2_sendListMarket", devnet.list_market(16, b"WALK-USD"))  # 0x10 after 0x2
        call("l2_getBlockByNumber", "pending", True)
        cancel_sig = maker.sign_cancel(client.domain, ask_hash)
        call("l2_cancelOrder", {"orderHash": "0x" + ask_hash.hex(),
                                "signature": "0x" + cancel_sig.hex()})

        deadline = time.monotonic() + 30
        while not wanted <= seen:
            assert time.monotonic() < deadline, f"no {sorted(wanted - seen)} notification"
            try:
                msg = json.loads(ws.recv(timeout=1))
            except TimeoutError:
                continue
            if "method" in msg:
                see(msg)
            else:
                assert "result" in msg, msg
                results.append(("subscribe", msg["result"]))

        ws.send(json.dumps({"jsonrpc": "2.0", "id": "m", "method": "l2_subscribe",
                            "params": ["markets"]}))
        while (msg := json.loads(ws.recv(timeout=10))).get("id") != "m":
            pass
        while (snap := json.loads(ws.recv(timeout=10))["params"])["subscription"] != msg["result"]:
            pass
        ids = [int(m["id"], 16) for m in snap["result"]["contents"]["markets"]]
        assert 16 in ids and ids == sorted(ids), ids  # by id, as numbers
        listed = [int(m["id"], 16) for m in call("l2_getMarkets", "pending")]
        assert listed == sorted(listed), listed
        notes.append(("l2_subscription", snap["result"]))
        receipt = call("l2_getTransactionReceipt", fill["txHash"])
        block = call("l2_getBlockByNumber", receipt["blockNumber"], True)
        call("l2_getBlockByHash", block["hash"], False)
        call("l2_getFill", fill["txHash"])
        call("l2_getFill", fill["takerOrderHash"])
        call("l2_getWithdrawal", withdrawal["withdrawalId"])
        batch = call("l2_getBatch", "latest")
        call("l2_getBatch", batch["index"])
        address = "0x" + taker.address.hex()
        for method, params in [
                ("eth_chainId", []), ("eth_blockNumber", []), ("net_version", []),
                ("web3_clientVersion", []), ("l2_getMarkets", []), ("l2_getMarkets", ["pending"]),
                ("l2_getAccount", [address]), ("l2_getAccount", [address, "pending"]),
                ("l2_getOrderBook", ["ETH-USD"]), ("l2_getProof", [address, "safe"]),
                ("l2_getDisputes", []), ("l2_getDispute", ["0x0"]),
                ("devnet_increaseTime", [0]), ("devnet_mine", []),
                ("devnet_setBatcher", [True]), ("devnet_setCensorDeposits", [False]),
                ("devnet_setDefender", [True])]:
            call(method, *params)
        try:
            call("l2_getEscapeProof", address)
        except Exception as exc:  # no leaf at the finalized root yet: -32001, documented
            assert getattr(exc, "code", None) == -32001, exc
        op = {m: client.call(m) for m in OP_SHAPED}
        assert call("devnet_injectFault", {"kind": "last-step", "step": 3}) == {
            "kind": "last-step", "step": "0x3"}
    for method, result in results + notes:
        no_json_numbers(result, method, frozenset(DATA.get(method, ())))
    assert set(QUANTITIES) & {k for _, r in notes for k in _keys(r)} >= {
        "seq", "market", "index", "trades", "transactions", "fills", "sealedAt"}
    # issue 8's views: the positions' fields, and a type on every fill and receipt
    positions = [p for m, r in results if m == "l2_getAccount" for p in r["positions"]]
    assert positions
    for p in positions:
        _shape(p, POSITION)
    typed = [v for _, r in results + notes for v in _values(r, "fillType")]
    assert "limit" in typed and set(typed) <= FILL_TYPES | {None}, typed
    # the documented exception, and its own exception: bonds are money
    assert isinstance(op["l2_syncStatus"]["unsafe_l2"]["number"], int)
    assert D(op["l2_rollupConfig"]["challenger_bond"])


def _values(value: Any, key: str) -> Iterator[Any]:
    """Every value of ``key`` in the objects nested in ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(value, list):
        for v in value:
            yield from _values(v, key)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)
