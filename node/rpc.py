"""JSON-RPC methods of the L2 node (`eth_`, `net_`, `web3_`, `l2_`).

Conventions (docs/protocol.md, "JSON-RPC conventions"): block numbers,
timestamps, chain ids, ids (market, batch, withdrawal, deposit index),
nonces, counts and parameters (decimals, ppm) are hex quantities (Ethereum
style); ledger amounts (USDC base units, sizes, prices, PnL) are decimal
integer strings because they can be negative and exceed 2^53. The two
methods shaped like the OP Stack's (``l2_syncStatus``, ``l2_rollupConfig``)
keep OP's JSON numbers. Requests accept a JSON number, a decimal string or a
0x-hex string for any number; out-of-range numbers answer -32602 naming the
field. A broken rule answers with code -32003 ("transaction rejected",
EIP-1474) and a message starting with the rule's name; malformed input
answers -32602; a missing object -32001. Nothing changes on an error.
Params are positional (an array): a wrong count, or a request-object member
the method does not define, answers -32602; a trailing null counts as an
omitted optional parameter (geth's rule). Every method, its params, result
and errors: docs/protocol.md, "Methods (L2 port)".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jsonrpcserver import Success
from jsonrpcserver.exceptions import JsonRpcError

from node import exceptions as err
from node.blocks import Block
from node.margin import (
    effective_imf_ppm,
    equity,
    initial_margin,
    open_notional,
    maintenance_margin,
    position_value,
    unsettled_funding,
)
from node.risk import liquidation_price, margin_ratio_ppm
from node.state import Account, State, account_key
from node.transactions import (
    DecodeError,
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    Order,
    SettleFunding,
    Withdraw,
    decode_tx,
)

if TYPE_CHECKING:
    from node.node import Node

INVALID_PARAMS = -32602
TX_REJECTED = -32003
NOT_FOUND = -32001

LIMIT_FILL = "limit"
"""``fillType`` of a Fill transaction (two signed limit orders matched)
(docs/protocol.md, "Fill types")."""
LIQUIDATION_FILL = "liquidation"
"""``fillType`` of a Liquidate (maker: the liquidator's order, taker: the liquidated account)."""
DELEVERAGE_FILL = "deleverage"
"""``fillType`` of a Deleverage (maker: the offset account, taker: the liquidated account)."""
FILL_TYPES = {0x02: LIMIT_FILL, 0x07: LIQUIDATION_FILL, 0x08: DELEVERAGE_FILL}
"""Type byte of an encoded transaction -> its fillType (absent: not a fill)."""


class RpcError(JsonRpcError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)


def bad_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


def unknown_market(detail: str) -> RpcError:
    """-32003 ``UnknownMarket: detail``, with the ``{"rule": ...}`` data of
    every rule error (a market parameter naming no listed market)."""
    return RpcError(TX_REJECTED, f"UnknownMarket: {detail}", {"rule": "UnknownMarket"})


# -- parsing ----------------------------------------------------------------
_INTEGER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
_MAX_DIGITS = 1000  # longer integer strings are out of every range (and slow to convert)


def parse_int(value: Any, name: str) -> int:
    """int from a JSON integer, a decimal string or a 0x-hex string (ASCII
    digits only, an optional leading ``-``: no spaces, ``_``, exponents or
    fractions). -32602 naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise bad_params(f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (value.isdigit() and value.isascii()
                                   or _INTEGER.fullmatch(value) is not None):
        if len(value) > _MAX_DIGITS:
            raise bad_params(f"{name}: out of range (longer than {_MAX_DIGITS} characters)")
        return int(value, 16) if "x" in value or "X" in value else int(value)
    raise bad_params(f"{name}: expected an integer (number, decimal or 0x-hex string)")


def parse_uint(value: Any, name: str, bits: int = 64) -> int:
    """``parse_int`` limited to 0 <= n < 2**bits (-32602 naming ``name`` otherwise)."""
    n = parse_int(value, name)
    if not 0 <= n < 2**bits:
        raise bad_params(f"{name}: out of range (expected 0 <= {name} < 2^{bits})")
    return n


def parse_bool(value: Any, name: str) -> bool:
    """Only JSON true / false (not "false", 0 or null)."""
    if not isinstance(value, bool):
        raise bad_params(f"{name}: expected true or false")
    return value


_HEX = re.compile(r"[0-9a-fA-F]*")


def parse_bytes(value: Any, name: str, size: int | None = None) -> bytes:
    """Bytes from a 0x-prefixed hex string (exactly ``size`` bytes if given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise bad_params(f"{name}: expected 0x-prefixed hex")
    if size is not None and len(value) != 2 + 2 * size:
        raise bad_params(f"{name}: expected {size} bytes, got {len(value) - 2} hex digits")
    if not _HEX.fullmatch(value, 2) or len(value) % 2:
        raise bad_params(f"{name}: invalid hex")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise bad_params(f"{name}: expected {size} bytes, got {len(raw)}")
    return raw


def parse_address(value: Any, name: str = "address") -> bytes:
    return parse_bytes(value, name, 20)


def _field(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        raise bad_params("expected an object")
    if name not in obj:
        raise bad_params(f"missing field {name}")
    return obj[name]


def only_fields(obj: Any, allowed: tuple[str, ...], prefix: str = "") -> None:
    """-32602 if request object ``obj`` has a member outside ``allowed``
    (a misspelt or unsupported option is refused, never ignored)."""
    if not isinstance(obj, dict):
        raise bad_params(f"{prefix.rstrip('.') or 'params'}: expected an object")
    for key in obj:
        if key not in allowed:
            first = min(k for k in obj if k not in allowed)
            raise bad_params(f"{prefix}{first[:64]}: unknown field (expected "
                             f"{', '.join(allowed)})")


def hexq(n: int) -> str:
    return hex(n)


def hexb(b: bytes) -> str:
    return "0x" + b.hex()


def hexq_or_none(n: int | None) -> str | None:
    return None if n is None else hexq(n)


def batch_json(info: Any) -> dict[str, Any]:
    """A ``BatchInfo`` with hex quantities (index, block numbers, deposit end)."""
    return {k: hexq(v) if isinstance(v, int) else v for k, v in info.to_json().items()}


# -- rendering ----------------------------------------------------------------
def tx_json(raw: bytes, domain_hash: Callable[[Order], bytes]) -> dict[str, Any]:
    from node.transactions import tx_hash

    tx = decode_tx(raw)
    out: dict[str, Any] = {"hash": hexb(tx_hash(raw))}
    if isinstance(tx, Fill):
        out.update(
            type="Fill",
            fillType=LIMIT_FILL,
            maker=tx.maker.to_json(),
            makerOrderHash=hexb(domain_hash(tx.maker)),
            taker=tx.taker.to_json(),
            takerOrderHash=hexb(domain_hash(tx.taker)),
            size=str(tx.size),
            price=str(tx.price),
            market=hexq(tx.maker.market),
            takerSide="buy" if tx.taker.is_buy else "sell",
        )
    elif isinstance(tx, Deposit):
        out.update(type="Deposit", index=hexq(tx.index), account=hexb(tx.account),
                   amount=str(tx.amount))
    elif isinstance(tx, OraclePrice):
        out.update(type="OraclePrice", market=hexq(tx.market), price=str(tx.price),
                   timestamp=hexq(tx.timestamp))
    elif isinstance(tx, Withdraw):
        out.update(type="Withdraw", account=hexb(tx.account), recipient=hexb(tx.recipient),
                   amount=str(tx.amount), nonce=hexq(tx.nonce))
    elif isinstance(tx, ListMarket):
        from node.markets import list_market_json

        out.update(type="ListMarket", **list_market_json(tx))
    elif isinstance(tx, FundingTick):
        out.update(type="FundingTick", market=hexq(tx.market), timestamp=hexq(tx.timestamp),
                   premiumPpm=str(tx.premium_ppm))
    elif isinstance(tx, Liquidate):
        out.update(
            type="Liquidate",
            fillType=LIQUIDATION_FILL,
            maker=tx.order.to_json(),
            makerOrderHash=hexb(domain_hash(tx.order)),
            taker={"account": hexb(tx.liquidated)},
            liquidated=hexb(tx.liquidated),
            size=str(tx.size),
            price=str(tx.price),
            market=hexq(tx.order.market),
            takerSide="sell" if tx.order.is_buy else "buy",
        )
    elif isinstance(tx, Deleverage):
        out.update(type="Deleverage", fillType=DELEVERAGE_FILL, market=hexq(tx.market),
                   maker={"account": hexb(tx.offset)}, taker={"account": hexb(tx.liquidated)},
                   offset=hexb(tx.offset), liquidated=hexb(tx.liquidated), size=str(tx.size),
                   price=None, takerSide=None)  # the bankruptcy price is not in the tx
    elif isinstance(tx, SettleFunding):
        out.update(type="SettleFunding", account=hexb(tx.account), market=hexq(tx.market))
    return out


def ppm_per_hour(rate_8h_ppm: int) -> str:
    """An 8-hour rate in ppm as the exact hourly rate, a decimal string
    (rate / 8: at most three decimals, e.g. 100 -> "12.5")."""
    q, r = divmod(abs(rate_8h_ppm) * 125, 1000)
    text = str(q) + (f".{r:03d}".rstrip("0") if r else "")
    return "-" + text if rate_8h_ppm < 0 else text



class L2Api:
    """The method implementations; ``methods()`` exposes them to the dispatcher."""

    def __init__(self, node: Node) -> None:
        self.node = node

    # -- helpers ---------------------------------------------------------
    def _block_number(self, tag: Any) -> int:
        chain = self.node.chain
        if tag in (None, "latest", "pending", "unsafe"):
            return chain.head.number
        if tag == "safe":
            return chain.safe_head
        if tag == "finalized":
            return self.node.finalized_head()
        if tag == "earliest":
            return 0
        n = parse_uint(tag, "block")
        if not n <= chain.head.number:
            raise RpcError(NOT_FOUND, f"block {n} not found (head is {chain.head.number})")
        return n

    def _state(self, tag: Any) -> State:
        if tag == "pending":
            return self.node.chain.state
        return self.node.chain.state_at(self._block_number(tag))

    def _market_id(self, value: Any, name: str = "market") -> int:
        if isinstance(value, str) and not value[:1].isdigit() and not value.startswith(("0x", "-")):
            try:
                return self.node.chain.state.market_by_symbol(value).id
            except KeyError:
                raise unknown_market(f"no market {value[:64]!r}") from None
        return parse_uint(value, name, 32)

    def _symbol(self, market_id: int) -> str:
        """A market's symbol in the pending state ("" if it has none)."""
        raw = self.node.chain.state.symbols.get(market_id)
        return "" if raw is None else raw.rstrip(b"\x00").decode("ascii", "replace")

    def _reject(self, exc: err.InvalidTransaction) -> RpcError:
        return RpcError(TX_REJECTED, f"{exc.rule}: {exc}", {"rule": exc.rule})

    # -- eth_ --------------------------------------------------------------
    def eth_chainId(self) -> str:
        return hexq(self.node.genesis.l2_chain_id)

    def eth_blockNumber(self) -> str:
        return hexq(self.node.chain.head.number)

    def net_version(self) -> str:
        """The L2 chain id as a decimal string (as Ethereum nodes answer)."""
        return str(self.node.genesis.l2_chain_id)

    def web3_clientVersion(self) -> str:
        return f"derivnet/{client_version()}/python"

    # -- orders ------------------------------------------------------------
    def parse_order(self, obj: Any) -> Order:
        only_fields(obj, ("account", "market", "isBuy", "price", "size", "salt", "expiry"),
                    "order.")
        order = Order(
            account=parse_address(_field(obj, "account"), "order.account"),
            market=self._market_id(_field(obj, "market"), "order.market"),
            is_buy=parse_bool(_field(obj, "isBuy"), "order.isBuy"),
            price=parse_uint(_field(obj, "price"), "order.price"),
            size=parse_uint(_field(obj, "size"), "order.size"),
            salt=parse_uint(_field(obj, "salt"), "order.salt"),
            expiry=parse_uint(_field(obj, "expiry"), "order.expiry"),
        )
        try:
            order.validate_ranges()
        except DecodeError as exc:
            raise bad_params(f"order: {exc}") from None
        return order

    def l2_sendOrder(self, request: Any) -> dict[str, Any]:
        only_fields(request, ("order", "signature", "timeInForce"))
        order = self.parse_order(_field(request, "order"))
        signature = parse_bytes(_field(request, "signature"), "signature", 65)
        tif = request.get("timeInForce", "GTC")
        if tif not in ("GTC", "IOC", "POST_ONLY"):
            raise bad_params("timeInForce: expected GTC, IOC or POST_ONLY")
        try:
            result = self.node.sequencer.send_order(order, signature, tif)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        except DecodeError as exc:
            raise bad_params(str(exc)) from None
        return {
            "orderHash": hexb(result.order_hash),
            "status": result.status,
            "filled": str(result.filled),
            "remaining": str(result.remaining),
            "fills": [
                {
                    "makerOrderHash": hexb(f.maker_hash),
                    "takerOrderHash": hexb(f.taker_hash),
                    "size": str(f.size),
                    "price": str(f.price),
                    "txHash": hexb(f.tx_hash),
                    "fillType": LIMIT_FILL,
                }
                for f in result.fills
            ],
        }

    def l2_cancelOrder(self, request: Any) -> dict[str, Any]:
        only_fields(request, ("orderHash", "signature"))
        target = parse_bytes(_field(request, "orderHash"), "orderHash", 32)
        signature = parse_bytes(_field(request, "signature"), "signature", 65)
        try:
            ro = self.node.sequencer.cancel_order(target, signature)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"orderHash": hexb(target), "status": "cancelled", "remaining": str(ro.remaining)}

    def l2_sendOraclePrice(self, request: Any) -> dict[str, Any]:
        only_fields(request, ("market", "price", "timestamp", "signature"))
        tx = OraclePrice(
            market=self._market_id(_field(request, "market")),
            price=parse_uint(_field(request, "price"), "price"),
            timestamp=parse_uint(_field(request, "timestamp"), "timestamp"),
            signature=parse_bytes(_field(request, "signature"), "signature", 65),
        )
        try:
            receipt = self.node.sequencer.send_oracle_price(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"txHash": hexb(receipt.tx_hash)}

    def l2_sendFundingTick(self, request: Any) -> dict[str, Any]:
        """A FundingTick signed by the oracle key (EIP-712 ``FundingTick``):
        ``{market, timestamp, premiumPpm, signature}``, premiumPpm a signed
        int32 (any integer form). Checked against the pending block like an
        oracle price (-32003 naming the rule). Returns ``{txHash}``."""
        only_fields(request, ("market", "timestamp", "premiumPpm", "signature"))
        premium = parse_int(_field(request, "premiumPpm"), "premiumPpm")
        if not -(2**31) <= premium < 2**31:
            raise bad_params("premiumPpm: out of range (expected a signed 32-bit integer)")
        tx = FundingTick(
            market=self._market_id(_field(request, "market")),
            timestamp=parse_uint(_field(request, "timestamp"), "timestamp"),
            premium_ppm=premium,
            signature=parse_bytes(_field(request, "signature"), "signature", 65),
        )
        try:
            receipt = self.node.sequencer.send_funding_tick(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"txHash": hexb(receipt.tx_hash)}

    def l2_sendLiquidation(self, request: Any) -> dict[str, Any]:
        """Liquidate with your own signed order (anyone may, as dYdX v4's
        liquidators): ``{liquidated, order, signature, size, price}``, order
        and signature as l2_sendOrder's (the liquidator's EIP-712 Order, the
        maker of the trade), size/price in market units (any integer form).
        Returns ``{txHash, fillType: "liquidation", liquidated, orderHash,
        size, price}``. Rules (-32003 naming the rule): docs/protocol.md
        "Liquidation" (NotLiquidatable, NotAReduction, PriceBeyondFillable,
        InsuranceFundShort, InsufficientMargin, ...)."""
        from node.eip712 import order_hash

        only_fields(request, ("liquidated", "order", "signature", "size", "price"))
        tx = Liquidate(
            liquidated=parse_address(_field(request, "liquidated"), "liquidated"),
            order=self.parse_order(_field(request, "order")),
            signature=parse_bytes(_field(request, "signature"), "signature", 65),
            size=parse_uint(_field(request, "size"), "size"),
            price=parse_uint(_field(request, "price"), "price"),
        )
        try:
            tx.validate_ranges()
        except DecodeError as exc:
            raise bad_params(f"liquidation: {exc}") from None
        try:
            receipt = self.node.sequencer.send_liquidate(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"txHash": hexb(receipt.tx_hash), "fillType": LIQUIDATION_FILL,
                "liquidated": hexb(tx.liquidated),
                "orderHash": hexb(order_hash(self.node.chain.domain, tx.order)),
                "size": str(tx.size), "price": str(tx.price)}

    def l2_settleFunding(self, request: Any) -> dict[str, Any]:
        """Settle an account's funding in one market: ``{account, market}``
        (anyone may: settling never changes equity). Returns ``{txHash}``.
        Rules: UnknownMarket, NoPosition (-32003)."""
        only_fields(request, ("account", "market"))
        tx = SettleFunding(account=parse_address(_field(request, "account"), "account"),
                           market=self._market_id(_field(request, "market")))
        try:
            receipt = self.node.sequencer.send_settle_funding(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"txHash": hexb(receipt.tx_hash)}

    def l2_sendWithdraw(self, request: Any) -> dict[str, Any]:
        only_fields(request, ("account", "recipient", "amount", "nonce", "signature"))
        tx = Withdraw(
            account=parse_address(_field(request, "account"), "account"),
            recipient=parse_address(_field(request, "recipient"), "recipient"),
            amount=parse_uint(_field(request, "amount"), "amount", 128),
            nonce=parse_uint(_field(request, "nonce"), "nonce"),
            signature=parse_bytes(_field(request, "signature"), "signature", 65),
        )
        if not (0 <= tx.amount < 2**128 and 0 <= tx.nonce < 2**64):
            raise bad_params("withdraw field out of range")
        try:
            receipt = self.node.sequencer.send_withdraw(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        withdrawal_id = self.node.chain.state.system.withdrawal_count - 1
        return {"txHash": hexb(receipt.tx_hash), "withdrawalId": hexq(withdrawal_id)}

    def l2_sendListMarket(self, request: Any) -> dict[str, Any]:
        """List a market: ``{market, symbol, priceDecimals, sizeDecimals,
        tickSize, stepSize, initialMarginPpm, maintenanceMarginPpm,
        makerFeePpm, takerFeePpm, oraclePrice, signature}`` and optional
        ``maxLiquidationFeePpm`` (default 15000), ``openInterestLowerCap``,
        ``openInterestUpperCap`` (default 0), signed by the genesis admin
        (EIP-712 ``ListMarket``). Returns ``{txHash, market}``.
        Rules: InvalidAdminSignature, MarketAlreadyListed, TooManyMarkets,
        InvalidSymbol, DuplicateSymbol, InvalidMarketDecimals,
        InvalidTickStep, InvalidMarginFraction, InvalidFee,
        InvalidOpenInterestCaps, InvalidPrice."""
        from node.state import symbol_bytes

        names = (("market", "market", 32), ("priceDecimals", "price_decimals", 8),
                 ("sizeDecimals", "size_decimals", 8), ("tickSize", "tick_size", 64),
                 ("stepSize", "step_size", 64), ("initialMarginPpm", "imf_ppm", 32),
                 ("maintenanceMarginPpm", "mmf_ppm", 32), ("makerFeePpm", "maker_fee_ppm", 32),
                 ("takerFeePpm", "taker_fee_ppm", 32), ("oraclePrice", "oracle_price", 64))
        optional = (("maxLiquidationFeePpm", "max_liquidation_fee_ppm", 32),
                    ("openInterestLowerCap", "oi_lower_cap", 128),
                    ("openInterestUpperCap", "oi_upper_cap", 128))
        only_fields(request, ("symbol", *(key for key, _, _ in names + optional), "signature"))
        symbol = _field(request, "symbol")
        if not isinstance(symbol, str):
            raise bad_params("symbol: expected a string")
        try:
            raw_symbol = symbol_bytes(symbol)
        except (ValueError, UnicodeError):
            raise bad_params("symbol: expected at most 16 ASCII characters") from None
        values = {field: parse_uint(_field(request, key), key, bits)
                  for key, field, bits in names}
        values.update({field: parse_uint(request[key], key, bits)
                       for key, field, bits in optional if request.get(key) is not None})
        tx = ListMarket(symbol=raw_symbol,
                        signature=parse_bytes(_field(request, "signature"), "signature", 65),
                        **values)
        try:
            tx.validate_ranges()
        except DecodeError as exc:
            raise bad_params(f"listMarket: {exc}") from None
        try:
            receipt = self.node.sequencer.send_list_market(tx)
        except err.InvalidTransaction as exc:
            raise self._reject(exc) from None
        return {"txHash": hexb(receipt.tx_hash), "market": hexq(tx.market)}

    # -- reads -------------------------------------------------------------
    def l2_getMarkets(self, tag: Any = "latest") -> list[dict[str, Any]]:
        """Listed markets at ``tag`` with their symbols (from the symbols leaf),
        by id (a market listed later may have a lower id). ``nextFundingTime``
        (L2 unix s) and ``premiumEstimatePpm`` are the sequencer's funding
        clock now, at tags ``latest`` and ``pending`` (null at other tags, with
        ticks off, before a sample, on a replica)."""
        state = self._state(tag)
        symbols = state.symbols
        clock = getattr(self.node, "funding_clock", None)  # the sequencer's (a replica: none)
        if tag not in ("latest", "pending"):  # an older state: the clock's now is not its own
            clock = None
        next_tick = clock.next_funding_time() if clock is not None else None
        fund = state.system.insurance_fund  # one fund for all markets
        out = []
        for m in sorted(state.markets.values(), key=lambda m: m.id):
            premium = clock.premium_estimate(m.id) if clock is not None else None
            out.append({
                "id": hexq(m.id),
                "symbol": symbols[m.id].rstrip(b"\x00").decode("ascii", "replace")
                if m.id in symbols else "",
                "priceDecimals": hexq(m.price_decimals),
                "sizeDecimals": hexq(m.size_decimals),
                "tickSize": str(m.tick_size),
                "stepSize": str(m.step_size),
                "initialMarginPpm": hexq(m.imf_ppm),
                "maintenanceMarginPpm": hexq(m.mmf_ppm),
                "makerFeePpm": hexq(m.maker_fee_ppm),
                "takerFeePpm": hexq(m.taker_fee_ppm),
                "oraclePrice": str(m.oracle_price),
                "oracleTime": hexq(m.oracle_time),
                "fundingIndex": str(m.funding_index),
                "fundingTime": hexq(m.funding_time),
                "fundingRate8h": str(m.funding_rate_ppm),
                "fundingRate1h": ppm_per_hour(m.funding_rate_ppm),
                "nextFundingTime": hexq_or_none(next_tick),
                "premiumEstimatePpm": None if premium is None else str(premium),
                "openInterest": str(m.open_interest),
                "openNotional": str(open_notional(m, m.open_interest)),
                "initialMarginPpmEffective": hexq(effective_imf_ppm(m)),
                "maxLiquidationFeePpm": hexq(m.max_liquidation_fee_ppm),
                "openInterestLowerCap": str(m.oi_lower_cap),
                "openInterestUpperCap": str(m.oi_upper_cap),
                "insuranceFund": str(fund),
            })
        return out

    def l2_getAccount(self, address: Any, tag: Any = "latest") -> dict[str, Any]:
        addr = parse_address(address)
        state = self._state(tag)
        return account_json(state, addr, state.account(addr), self._symbol)

    def l2_getSystem(self, tag: Any = "latest") -> dict[str, Any]:
        """The system leaf at ``tag``: deposit and withdrawal counters, the
        oracle, fee and admin accounts, the funding pool and the insurance
        fund (USDC base units, decimal strings; docs/protocol.md "Funding",
        "Insurance fund")."""
        system = self._state(tag).system
        return {
            "nextDeposit": hexq(system.next_deposit),
            "withdrawalCount": hexq(system.withdrawal_count),
            "oracle": hexb(system.oracle),
            "feeAccount": hexb(system.fee_account),
            "admin": hexb(system.admin),
            "fundingPool": str(system.funding_pool),
            "insuranceFund": str(system.insurance_fund),
        }

    def l2_getOrderBook(self, market: Any, depth: Any = 20) -> dict[str, Any]:
        mid = self._market_id(market)
        book = self.node.sequencer.books.get(mid)
        if book is None:
            raise unknown_market(f"market {mid} is not listed")
        n = parse_uint(depth, "depth")
        if not 1 <= n <= 1000:
            raise bad_params("depth: expected 1..1000")
        bids, asks = book.depth(n)
        level = lambda lv: [str(lv[0]), str(lv[1]), hexq(lv[2])]  # noqa: E731
        return {
            "market": hexq(mid),
            "symbol": self._symbol(mid),
            "bids": [level(b) for b in bids],
            "asks": [level(a) for a in asks],
        }

    def l2_getOpenOrders(self, address: Any, market: Any = None) -> list[dict[str, Any]]:
        """The account's resting orders in the sequencer's books (every market,
        or only ``market``), each ``{orderHash, order, remaining}``:
        ``order`` as in l2_sendOrder's request, ``remaining`` the unfilled size
        (size units, decimal string). Oldest first within a market. Expired
        orders still in the book are left out."""
        addr = parse_address(address)
        books = self.node.sequencer.books
        if market is None:
            chosen = [books[m] for m in sorted(books)]
        else:
            mid = self._market_id(market)
            if mid not in books:
                raise unknown_market(f"market {mid} is not listed")
            chosen = [books[mid]]
        now = self._pending_time()
        return [{"orderHash": hexb(ro.order_hash), "order": ro.order.to_json(),
                 "remaining": str(ro.remaining)}
                for book in chosen for ro in book.orders_of(addr) if ro.order.expiry > now]

    def l2_getBlockByNumber(self, tag: Any = "latest", full: Any = True) -> dict[str, Any]:
        full = parse_bool(full, "full")
        if tag == "pending":
            return self.pending_block_json(full)
        n = self._block_number(tag)
        return self.block_json(self.node.chain.block(n), full)

    def l2_getBlockByHash(self, block_hash: Any, full: Any = True) -> dict[str, Any] | None:
        n = self.node.chain.block_number_by_hash(parse_bytes(block_hash, "hash", 32))
        full = parse_bool(full, "full")
        return None if n is None else self.block_json(self.node.chain.block(n), full)

    def block_json(self, block: Block, full: bool) -> dict[str, Any]:
        h = block.header
        out: dict[str, Any] = {
            "number": hexq(h.number),
            "hash": hexb(block.hash),
            "parentHash": hexb(h.parent_hash),
            "timestamp": hexq(h.timestamp),
            "l1Origin": hexq(h.l1_origin),
            "transactionsRoot": hexb(h.tx_root),
            "receiptsRoot": hexb(h.receipts_root),
            "stateRoot": hexb(h.state_root),
            "status": self.node.block_status(h.number),
            "batch": hexq_or_none(self.node.chain.batch_of_block(h.number)),
        }
        return self._with_txs(out, block.txs, block.receipts, full)

    def pending_block_json(self, full: bool) -> dict[str, Any]:
        """The unsealed block (``pending`` tag): its transactions so far, as
        Ethereum nodes show it: no hash or state root yet (null)."""
        chain = self.node.chain
        out: dict[str, Any] = {
            "number": hexq(chain.head.number + 1),
            "hash": None,
            "parentHash": hexb(chain.head.hash),
            "timestamp": hexq(self._pending_time()),
            "l1Origin": hexq(self.node.sequencer.l1_origin),
            "transactionsRoot": None,
            "receiptsRoot": None,
            "stateRoot": None,
            "status": "pending",
            "batch": None,
        }
        return self._with_txs(out, list(chain.pending_txs), list(chain.pending_receipts), full)

    def _pending_time(self) -> int:
        """The pending block's timestamp (unix s): the one it was opened with,
        or, with nothing pending yet, the time the next one would get (the
        sequencer's clock, never before the head's)."""
        chain = self.node.chain
        if chain.pending_txs:
            return chain.pending_timestamp
        seq = self.node.sequencer
        replay = getattr(seq, "_replay_time", None)
        now = replay if replay is not None else int(seq.clock())
        return max(now, chain.head.header.timestamp)

    def _with_txs(self, out: dict[str, Any], raw_txs: Any, receipts: Any,
                  full: bool) -> dict[str, Any]:
        from node.eip712 import order_hash

        domain = self.node.chain.domain
        txs = [tx_json(t, lambda o: order_hash(domain, o)) for t in raw_txs]
        if full:
            out["transactions"] = txs
            out["receipts"] = [
                {"txHash": hexb(r.tx_hash), "status": "0x1" if r.success else "0x0",
                 "error": r.error or None, "message": r.message or None,
                 "fillType": t.get("fillType")}
                for t, r in zip(txs, receipts, strict=True)
            ]
            out["fills"] = [
                t for t, r in zip(txs, receipts, strict=True) if "fillType" in t and r.success
            ]
        else:
            out["transactions"] = [t["hash"] for t in txs]
        return out

    def l2_getTransactionReceipt(self, tx_hash_hex: Any) -> dict[str, Any] | None:
        h = parse_bytes(tx_hash_hex, "txHash", 32)
        loc = self.node.chain.tx_location(h)
        if loc is None:
            return None
        block = self.node.chain.block(loc[0])
        r = block.receipts[loc[1]]
        return {
            "txHash": hexb(h),
            "blockNumber": hexq(block.number),
            "blockHash": hexb(block.hash),
            "index": hexq(loc[1]),
            "status": "0x1" if r.success else "0x0",
            "error": r.error or None,
            "message": r.message or None,
            "fillType": FILL_TYPES.get(block.txs[loc[1]][0]),
        }

    def l2_getBatch(self, index: Any = "latest") -> dict[str, Any] | None:
        chain = self.node.chain
        if index == "latest":
            info = chain.latest_batch()
        else:
            info = chain.batch(parse_uint(index, "index"))
        if info is None:
            return None
        out = {**batch_json(info), "status": self.node.batch_status(info.index)}
        if info.last_block <= chain.head.number:  # this node's own root after the batch
            derived = chain.block(info.last_block).header.state_root
            out.update(derivedStateRoot=hexb(derived), matches=derived == info.state_root)
        return out

    def l2_getDispute(self, game_id: Any) -> dict[str, Any] | None:
        """A dispute game with its history (prover.inspect.dispute_json);
        null for an id that does not exist."""
        from prover.inspect import dispute_json

        gid = parse_uint(game_id, "id")
        try:
            return dispute_json(self._disputes(), gid)
        except IndexError:
            return None

    l2_getDispute.blocking = True  # type: ignore[attr-defined]  # L1 reads: off the trio loop

    def l2_getDisputes(self) -> list[dict[str, Any]]:
        """Every dispute game, one summary each (prover.inspect.list_json)."""
        from prover.inspect import list_json

        return list_json(self._disputes())

    l2_getDisputes.blocking = True  # type: ignore[attr-defined]

    def _disputes(self) -> Any:
        client = getattr(self.node, "dispute_client", None)
        if client is None:
            raise JsonRpcError(-32601, "Method not found: this node has no dispute game")
        return client

    def l2_getProof(self, address: Any, tag: Any = "latest") -> dict[str, Any]:
        addr = parse_address(address)
        n = self._block_number(tag)
        block = self.node.chain.block(n)
        root = block.header.state_root
        key = account_key(addr)
        tree = self.node.chain.tree
        value = tree.get(root, key)
        proof = tree.prove(root, key)
        return {
            "address": hexb(addr),
            "key": hexb(key),
            "value": hexb(value) if value is not None else None,
            "stateRoot": hexb(root),
            "blockNumber": hexq(n),
            "batch": hexq_or_none(self.node.chain.batch_of_block(n)),
            "proof": proof.to_json(),
        }

    def l2_getFill(self, hash_hex: Any) -> list[dict[str, Any]]:
        """Fills by fill transaction hash or by order hash, each with its block
        and finality level (unsafe / safe / finalized); ``fillType`` limit,
        liquidation or deleverage."""
        from node.eip712 import order_hash

        h = parse_bytes(hash_hex, "hash", 32)
        chain = self.node.chain
        tx_hashes = [h] if chain.tx_location(h) is not None else chain.fills_of_order(h)
        out = []
        for th in tx_hashes:
            number, index = chain.tx_location(th)  # type: ignore[misc]
            block = chain.block(number)
            raw = block.txs[index]
            if raw[0] not in FILL_TYPES:  # a Fill, Liquidate or Deleverage
                raise RpcError(NOT_FOUND, "that transaction is not a fill")
            fill = tx_json(raw, lambda o: order_hash(chain.domain, o))
            fill.update(
                blockNumber=hexq(number),
                blockHash=hexb(block.hash),
                success=block.receipts[index].success,
                status=self.node.block_status(number),
                batch=hexq_or_none(chain.batch_of_block(number)),
            )
            out.append(fill)
        if not out:
            raise RpcError(NOT_FOUND, "no sealed fill with that transaction or order hash")
        return out

    def l2_getWithdrawal(self, withdrawal_id: Any) -> dict[str, Any]:
        """A withdrawal, its finality level (``pending`` while acknowledged but
        not sealed yet), and (once its batch is on L1) the SMT proof for
        ``Rollup.finalizeWithdrawal`` against that batch's root."""
        from node.state import withdrawal_key

        wid = parse_uint(withdrawal_id, "withdrawalId")
        chain = self.node.chain
        number = chain.withdrawal_block(wid)
        if number is None:
            pending = chain.state.withdrawal(wid) if 0 <= wid < 2**64 else None
            if pending is None:
                raise RpcError(NOT_FOUND, f"no withdrawal {wid}")
            return {"id": hexq(wid), "account": hexb(pending.account),
                    "recipient": hexb(pending.recipient), "amount": str(pending.amount),
                    "blockNumber": None, "status": "pending", "leaf": hexb(pending.encode()),
                    "batch": None, "paid": False}
        state = chain.state_at(number)
        w = state.withdrawal(wid)
        assert w is not None
        out: dict[str, Any] = {
            "id": hexq(wid),
            "account": hexb(w.account),
            "recipient": hexb(w.recipient),
            "amount": str(w.amount),
            "blockNumber": hexq(number),
            "status": self.node.block_status(number),
            "leaf": hexb(w.encode()),
            "batch": None,
            "paid": self.node.rollup.withdrawal_paid(wid),
        }
        index = chain.batch_of_block(number)
        if index is not None:
            info = chain.batch(index)
            assert info is not None
            own = chain.block(info.last_block).header.state_root
            out["batch"] = hexq(index)
            out["stateRoot"] = hexb(info.state_root)
            if own == info.state_root:
                out["proof"] = chain.tree.prove(own, withdrawal_key(wid)).to_json()
            else:  # a wrong root was posted (a faulty proposer): no proof until it is replaced
                out["proof"] = None
                out["batchRootMatches"] = False
        return out

    def l2_getEscapeProof(self, address: Any) -> dict[str, Any]:
        """Account and markets leaves with SMT proofs at the Rollup's escape
        root (or, before a freeze, at the latest finalized root), for
        ``Rollup.escape``."""
        from node.state import MARKETS_KEY

        addr = parse_address(address)
        chain = self.node.chain
        root = bytes(self.node.rollup.escape_root()) if self.node.rollup.frozen() else None
        number = self.node.finalized_head()
        if root is not None:
            found = chain.block_number_by_state_root(root)
            if found is None:
                raise RpcError(NOT_FOUND, "the escape root is not a state root of this chain")
            number = found
        block_root = chain.block(number).header.state_root
        tree = chain.tree
        account_leaf = tree.get(block_root, account_key(addr))
        if account_leaf is None:
            raise RpcError(NOT_FOUND, f"account {hexb(addr)} has no leaf at the escape root")
        state = chain.state_at(number)
        return {
            "address": hexb(addr),
            "stateRoot": hexb(block_root),
            "blockNumber": hexq(number),
            "accountLeaf": hexb(account_leaf),
            "accountProof": tree.prove(block_root, account_key(addr)).to_json(),
            "marketsLeaf": hexb(tree.get(block_root, MARKETS_KEY) or b""),
            "marketsProof": tree.prove(block_root, MARKETS_KEY).to_json(),
            "equity": str(account_json(state, addr, state.account(addr),
                                       self._symbol)["equity"]),
        }

    def l2_syncStatus(self) -> dict[str, Any]:
        return self.node.sync_status()

    def l2_rollupConfig(self) -> dict[str, Any]:
        return self.node.rollup_config_json()


def account_json(
    state: State, addr: bytes, acc: Account, symbol_of: Callable[[int], str]
) -> dict[str, Any]:
    """l2_getAccount's result for ``acc`` at ``state`` (amounts: decimal strings).

    Per position ``liquidationPrice`` (price units, null when the position
    cannot be liquidated at any price) and per account ``marginRatioPpm``
    (maintenance margin / equity in ppm, null when equity <= 0): node/risk.py
    with each position's unsettled funding passed once as ``unsettled``
    (node/risk.py never reads node/margin.py's ``equity``, which subtracts it
    itself). ``settledFunding``: funding settled on the position since it
    was opened (USDC base units, positive: paid).
    """
    markets = state.markets
    owed = {p.market: unsettled_funding(markets[p.market], p) for p in acc.positions}
    positions = []
    for p in acc.positions:
        m = markets[p.market]
        value = position_value(m, p.size)
        e = m.price_decimals + m.size_decimals - 6
        if e >= 0:
            entry = abs(p.cost) * 10**e // abs(p.size)
        else:
            entry = abs(p.cost) // (abs(p.size) * 10**-e)
        liq = liquidation_price(acc, markets, p.market, owed)
        positions.append({
            "market": hexq(p.market),
            "symbol": symbol_of(p.market),
            "size": str(p.size),
            "side": "long" if p.size > 0 else "short",
            "cost": str(p.cost),
            "entryPrice": str(entry),
            "oraclePrice": str(m.oracle_price),
            "value": str(value),
            "unrealizedPnl": str(value - p.cost),
            "fundingIndex": str(p.funding_index),
            "unsettledFunding": str(owed[p.market]),
            "settledFunding": str(p.settled_funding),
            "liquidationPrice": None if liq is None else str(liq),
        })
    eq = equity(acc, markets)
    im = initial_margin(acc, markets)
    ratio = margin_ratio_ppm(acc, markets, owed)
    return {
        "address": hexb(addr),
        "collateral": str(acc.collateral),
        "nonce": hexq(acc.nonce),
        "equity": str(eq),
        "initialMargin": str(im),
        "maintenanceMargin": str(maintenance_margin(acc, markets)),
        "freeCollateral": str(eq - im),
        "marginRatioPpm": None if ratio is None else str(ratio),
        "positions": positions,
    }


def methods(api: L2Api, extra: dict[str, Callable[..., Any]] | None = None) -> dict[str, Callable[..., Any]]:
    """Dispatcher table: each public method name -> function returning Success."""
    table: dict[str, Callable[..., Any]] = {}
    names = [n for n in dir(api) if n.startswith(("eth_", "net_", "web3_", "l2_"))]
    for name in names:
        table[name] = _wrap(getattr(api, name))
    for name, fn in (extra or {}).items():
        table[name] = _wrap(fn)
    return table


def client_version() -> str:
    """derivnet's package version ("0+unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("derivnet")
    except PackageNotFoundError:
        return "0+unknown"


def _arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    """(required, most) positional parameters of ``fn`` (most None: any)."""
    import inspect

    lo, hi = 0, 0
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return lo, None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            lo += p.default is p.empty
    return lo, hi


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a dispatcher method: positional params only, checked here
    (-32602 ``params: ...``); a trailing null in an optional position counts
    as omitted (as geth does), so it takes the parameter's default."""
    import functools

    lo, hi = _arity(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise bad_params("params: expected an array (positional parameters)")
        n = len(args)
        while n > lo and args[n - 1] is None and (hi is None or n <= hi):
            n -= 1
        if n < lo:
            raise bad_params(f"params: expected at least {lo} parameter{'s' * (lo != 1)}, "
                             f"got {len(args)}")
        if hi is not None and n > hi:
            raise bad_params(f"params: expected at most {hi} parameter{'s' * (hi != 1)}, "
                             f"got {len(args)}" if hi else f"params: expected none, got {len(args)}")
        return Success(fn(*args) if n == len(args) else fn(*args[:n]))

    del call.__wrapped__  # type: ignore[attr-defined]  # the dispatcher binds (*args) as is
    return call
