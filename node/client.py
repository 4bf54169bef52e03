"""Python client for bots and scripts: JSON-RPC over HTTP (httpx, keep-alive;
a request on a connection the server closed while idle is sent again) plus
order signing with the EIP-712 domain read from ``l2_rollupConfig``.

    client = L2Client("http://127.0.0.1:8545")
    me = Signer(key)
    result = client.send_order(me, "ETH-USD", is_buy=True, price=166621, size=10_000)
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import httpx

from node.eip712 import Domain
from node.signing import Signer
from node.transactions import Order


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def quantity(value: Any) -> int:
    """An int from a JSON-RPC number: a 0x-hex quantity (the node's form for
    ids, block numbers, counts, ``seq``), a decimal string (money) or a JSON
    number (``l2_syncStatus``/``l2_rollupConfig``, OP's shape; user input)."""
    if isinstance(value, str):
        return int(value, 16) if value.startswith(("0x", "0X")) else int(value)
    return int(value)


def order_params(order: Order, signature: bytes, time_in_force: str = "GTC") -> dict[str, Any]:
    """The l2_sendOrder request object for a signed order."""
    return {
        "order": order.to_json(),
        "signature": "0x" + signature.hex(),
        "timeInForce": time_in_force,
    }


class L2Client:
    """Synchronous JSON-RPC client of a derivnet node."""

    def __init__(self, url: str = "http://127.0.0.1:8545", timeout: float = 30.0) -> None:
        self.url = url
        self.http = httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)
        self._config: dict[str, Any] | None = None
        self._markets: dict[str, int] | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> L2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------
    RETRIES = 3

    def _post(self, payload: Any) -> Any:
        """POST one JSON-RPC frame and decode the answer. A request whose
        keep-alive connection the server closed under it (or that could not
        connect) is sent again, up to ``RETRIES`` times with a short backoff:
        safe, since reads are idempotent and every write is signed with a
        nonce or an order hash, so a second copy is rejected, never applied
        twice. Timeouts are not retried; the last error is raised (httpx)."""
        for attempt in range(self.RETRIES + 1):
            try:
                return self.http.post(self.url, json=payload).json()
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                    httpx.ConnectError):
                if attempt == self.RETRIES:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        """One request; returns ``result`` or raises RpcError."""
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                            "params": list(params)})
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e["code"], e["message"], e.get("data"))
        return reply["result"]

    # the node answers a batch of more than 1,000 requests with one error
    # (node.server.MAX_BATCH); longer lists go out as several batches
    MAX_BATCH = 1000

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """A JSON-RPC batch; returns results or RpcError instances, in order.
        More than MAX_BATCH calls are sent as consecutive batches. Raises
        RpcError if the node refuses the batch as a whole."""
        if len(calls) > self.MAX_BATCH:
            out: list[Any] = []
            for start in range(0, len(calls), self.MAX_BATCH):
                out += self.batch(calls[start:start + self.MAX_BATCH])
            return out
        if not calls:
            return []
        first = next(self._ids)
        payload = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
            for i, (m, p) in enumerate(calls)
        ]
        for _ in range(len(calls) - 1):
            next(self._ids)
        replies = self._post(payload)
        if isinstance(replies, dict):  # one error for the whole batch
            e = replies.get("error") or {"code": -32603, "message": str(replies)}
            raise RpcError(e["code"], e["message"], e.get("data"))
        by_id = {r["id"]: r for r in replies}
        out = []
        for i in range(len(calls)):
            r = by_id[first + i]
            if "error" in r:
                e = r["error"]
                out.append(RpcError(e["code"], e["message"], e.get("data")))
            else:
                out.append(r["result"])
        return out

    # -- config ----------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = self.call("l2_rollupConfig")
        return self._config

    @property
    def domain(self) -> Domain:
        c = self.config
        return Domain(int(c["l2_chain_id"]), bytes.fromhex(c["rollup_address"][2:]))

    def market_id(self, market: str | int) -> int:
        if isinstance(market, int):
            return market
        if self._markets is None:
            self._markets = {m["symbol"]: quantity(m["id"]) for m in self.call("l2_getMarkets")}
        return self._markets[market]

    # -- orders ----------------------------------------------------------
    def make_order(
        self,
        signer: Signer,
        market: str | int,
        is_buy: bool,
        price: int,
        size: int,
        expiry: int | None = None,
        salt: int | None = None,
    ) -> tuple[Order, bytes, bytes]:
        """Build and sign an order; returns (order, order hash, signature).
        expiry defaults to one hour from now; salt to a random u64."""
        order = Order(
            signer.address,
            self.market_id(market),
            is_buy,
            price,
            size,
            secrets.randbits(63) if salt is None else salt,
            int(time.time()) + 3600 if expiry is None else expiry,
        )
        digest, sig = signer.sign_order(self.domain, order)
        return order, digest, sig

    def send_order(self, signer: Signer, market: str | int, is_buy: bool, price: int, size: int,
                   time_in_force: str = "GTC", **kw: Any) -> dict[str, Any]:
        order, _, sig = self.make_order(signer, market, is_buy, price, size, **kw)
        return self.call("l2_sendOrder", order_params(order, sig, time_in_force))

    def cancel_order(self, signer: Signer, order_hash: bytes) -> dict[str, Any]:
        sig = signer.sign_cancel(self.domain, order_hash)
        return self.call("l2_cancelOrder", {"orderHash": "0x" + order_hash.hex(),
                                            "signature": "0x" + sig.hex()})

    def send_oracle_price(self, oracle: Signer, market: str | int, price: int,
                          timestamp: int | None = None) -> dict[str, Any]:
        ts = int(time.time()) if timestamp is None else timestamp
        tx = oracle.oracle_price(self.domain, self.market_id(market), price, ts)
        return self.call("l2_sendOraclePrice", {"market": hex(tx.market), "price": str(tx.price),
                                                "timestamp": hex(tx.timestamp),
                                                "signature": "0x" + tx.signature.hex()})

    def send_funding_tick(self, oracle: Signer, market: str | int, premium_ppm: int,
                          timestamp: int | None = None) -> dict[str, Any]:
        """Sign (with the oracle key) and send a FundingTick: ``premium_ppm``
        a signed 8-hour premium in ppm, ``timestamp`` unix s (default now).
        Returns l2_sendFundingTick's answer ``{txHash}``."""
        ts = int(time.time()) if timestamp is None else timestamp
        tx = oracle.funding_tick(self.domain, self.market_id(market), ts, premium_ppm)
        return self.call("l2_sendFundingTick", {"market": hex(tx.market),
                                                "timestamp": hex(tx.timestamp),
                                                "premiumPpm": str(tx.premium_ppm),
                                                "signature": "0x" + tx.signature.hex()})

    def withdraw(self, signer: Signer, amount: int, recipient: bytes | None = None) -> dict[str, Any]:
        """Sign and send an L2 Withdraw; the nonce is the account's in the
        pending state (so withdrawals sent before a block is sealed do not
        collide). Returns l2_sendWithdraw's answer (txHash, withdrawalId)."""
        nonce = quantity(self.get_account(signer.address, "pending")["nonce"])
        tx = signer.withdraw(self.domain, recipient or signer.address, amount, nonce)
        return self.call("l2_sendWithdraw", {
            "account": "0x" + tx.account.hex(), "recipient": "0x" + tx.recipient.hex(),
            "amount": str(tx.amount), "nonce": hex(tx.nonce),
            "signature": "0x" + tx.signature.hex()})

    def liquidate(self, signer: Signer, liquidated: bytes, market: str | int, is_buy: bool,
                  price: int, size: int, **kw: Any) -> dict[str, Any]:
        """Sign an order of ``signer`` (the liquidator, the maker) and send it
        as a Liquidate of ``size`` of ``liquidated``'s position at ``price``
        (``is_buy``: the liquidator's side, the other side of the closed
        position; ``kw`` as ``make_order``'s expiry / salt). Returns
        l2_sendLiquidation's answer ``{txHash, fillType, liquidated,
        orderHash, size, price}``; RpcError -32003 names a broken rule
        (docs/protocol.md "Liquidate")."""
        order, _, sig = self.make_order(signer, market, is_buy, price, size, **kw)
        return self.call("l2_sendLiquidation", {
            "liquidated": "0x" + liquidated.hex(), "order": order.to_json(),
            "signature": "0x" + sig.hex(), "size": str(size), "price": str(price)})

    def settle_funding(self, account: bytes | str, market: str | int) -> dict[str, Any]:
        """Send a SettleFunding of ``account``'s position in ``market``
        (anyone may). Returns ``{txHash}``; RpcError -32003 ``NoPosition``."""
        a = account if isinstance(account, str) else "0x" + account.hex()
        return self.call("l2_settleFunding", {"account": a, "market": self.market_id(market)})

    # -- reads -----------------------------------------------------------
    def get_account(self, address: bytes | str, tag: str = "latest") -> dict[str, Any]:
        a = address if isinstance(address, str) else "0x" + address.hex()
        return self.call("l2_getAccount", a, tag)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def sync_status(self) -> dict[str, Any]:
        return self.call("l2_syncStatus")
