"""L2 transactions and orders, and their packed encoding (docs/protocol.md).

Every state change is one of nine transactions: ``Deposit``, ``Fill``,
``OraclePrice``, ``Withdraw``, ``ListMarket``, ``FundingTick``,
``Liquidate``, ``Deleverage`` and ``SettleFunding``. Each
encodes to one type byte and a fixed-size body, so a batch of them splits on
L1 without length prefixes.
Addresses are 20 raw bytes, signatures 65 raw bytes ``r || s || v``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

from node.crypto import keccak

ORDER_BYTES = 57
SIGNATURE_BYTES = 65

TX_DEPOSIT = 0x01
TX_FILL = 0x02
TX_ORACLE_PRICE = 0x03
TX_WITHDRAW = 0x04
TX_LIST_MARKET = 0x05
TX_FUNDING_TICK = 0x06
TX_LIQUIDATE = 0x07
TX_DELEVERAGE = 0x08
TX_SETTLE_FUNDING = 0x09

BODY_BYTES = {
    TX_DEPOSIT: 44,
    TX_FILL: 2 * (ORDER_BYTES + SIGNATURE_BYTES) + 16,
    TX_ORACLE_PRICE: 85,
    TX_WITHDRAW: 129,
    TX_LIST_MARKET: 163,
    TX_FUNDING_TICK: 81,
    TX_LIQUIDATE: 20 + ORDER_BYTES + SIGNATURE_BYTES + 16,
    TX_DELEVERAGE: 52,
    TX_SETTLE_FUNDING: 24,
}

DEFAULT_MAX_LIQUIDATION_FEE_PPM = 15_000  # dYdX v4 mainnet liquidations config

U32 = 2**32
U64 = 2**64
U128 = 2**128

# packed layouts decoded in C (the replica decodes every fill of a batch)
_ORDER = struct.Struct(">20sIBQQQQ")  # account, market, side, price, size, salt, expiry
_FILL = struct.Struct(f">{ORDER_BYTES}s{SIGNATURE_BYTES}s{ORDER_BYTES}s{SIGNATURE_BYTES}sQQ")
_LIQUIDATE = struct.Struct(f">20s{ORDER_BYTES}s{SIGNATURE_BYTES}sQQ")
_DELEVERAGE = struct.Struct(">20s20sIQ")
_SETTLE_FUNDING = struct.Struct(">20sI")


class DecodeError(ValueError):
    """Bytes that are not a well-formed transaction, order or batch."""


def _check_range(name: str, value: int, bound: int) -> None:
    if not (0 <= value < bound):
        raise DecodeError(f"{name} out of range: {value}")


@dataclass(frozen=True, slots=True)
class Order:
    """An EIP-712 order (docs/protocol.md, "EIP-712").

    account: 20-byte address of the signer; market: market id (u32);
    is_buy: side; price: limit price in the market's price units (u64);
    size: in the market's size units (u64); salt: client nonce making the
    order unique (u64); expiry: unix seconds, live while block time < expiry.
    """

    account: bytes
    market: int
    is_buy: bool
    price: int
    size: int
    salt: int
    expiry: int

    def encode(self) -> bytes:
        """57 packed bytes."""
        return (
            self.account
            + self.market.to_bytes(4, "big")
            + (b"\x01" if self.is_buy else b"\x00")
            + self.price.to_bytes(8, "big")
            + self.size.to_bytes(8, "big")
            + self.salt.to_bytes(8, "big")
            + self.expiry.to_bytes(8, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> Order:
        """Inverse of ``encode``; raises DecodeError on a bad length or side byte."""
        if len(data) != ORDER_BYTES:
            raise DecodeError(f"order must be {ORDER_BYTES} bytes, got {len(data)}")
        account, market, side, price, size, salt, expiry = _ORDER.unpack(data)
        if side > 1:
            raise DecodeError(f"order side byte must be 0 or 1, got {side}")
        return cls(account, market, side == 1, price, size, salt, expiry)

    def to_json(self) -> dict[str, object]:
        """JSON-RPC form (docs/protocol.md "Numbers"): 0x address, price and
        size decimal strings, market, salt and expiry hex quantities. The
        node reads each number in any form (JSON number, decimal or 0x-hex
        string), so the EIP-712 message a wallet signed (``eth_signTypedData_v4``:
        JSON numbers or decimal strings, node.eip712.order_message) may be sent
        as it is."""
        return {
            "account": "0x" + self.account.hex(),
            "market": hex(self.market),
            "isBuy": self.is_buy,
            "price": str(self.price),
            "size": str(self.size),
            "salt": hex(self.salt),
            "expiry": hex(self.expiry),
        }

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.account) != 20:
            raise DecodeError("order account must be 20 bytes")
        _check_range("market", self.market, U32)
        for name in ("price", "size", "salt", "expiry"):
            _check_range(name, getattr(self, name), U64)


@dataclass(frozen=True, slots=True)
class Deposit:
    """Credit from the L1 deposit queue entry ``index`` (USDC base units)."""

    index: int
    account: bytes
    amount: int

    def body(self) -> bytes:
        return self.index.to_bytes(8, "big") + self.account + self.amount.to_bytes(16, "big")


@dataclass(frozen=True, slots=True)
class Fill:
    """A match of a resting maker order by a taker order.

    size: filled size (market size units); price: execution price, which the
    STF requires to equal the maker's limit price.
    """

    maker: Order
    maker_signature: bytes
    taker: Order
    taker_signature: bytes
    size: int
    price: int

    def body(self) -> bytes:
        return (
            self.maker.encode()
            + self.maker_signature
            + self.taker.encode()
            + self.taker_signature
            + self.size.to_bytes(8, "big")
            + self.price.to_bytes(8, "big")
        )


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """Oracle price update for one market, signed by the oracle key.

    price: market price units; timestamp: unix seconds of the observation.
    """

    market: int
    price: int
    timestamp: int
    signature: bytes

    def body(self) -> bytes:
        return (
            self.market.to_bytes(4, "big")
            + self.price.to_bytes(8, "big")
            + self.timestamp.to_bytes(8, "big")
            + self.signature
        )


@dataclass(frozen=True, slots=True)
class Withdraw:
    """L2 side of a withdrawal: burns ``amount`` USDC base units of
    ``account``'s free collateral for ``recipient`` on L1; ``nonce`` must
    equal the account nonce."""

    account: bytes
    recipient: bytes
    amount: int
    nonce: int
    signature: bytes

    def body(self) -> bytes:
        return (
            self.account
            + self.recipient
            + self.amount.to_bytes(16, "big")
            + self.nonce.to_bytes(8, "big")
            + self.signature
        )


@dataclass(frozen=True, slots=True)
class ListMarket:
    """Lists a new perpetual market; signed by the admin key of the system leaf.

    market: new market id (u32, unused); symbol: 16 bytes, ASCII
    left-aligned, zero-padded; price_decimals / size_decimals (u8): a price
    unit is 10^-pd USDC per base unit, a size unit 10^-sd base asset;
    tick_size / step_size (u64) in those units; *_ppm (u32): parts per
    million; oracle_price (u64): initial oracle price in price units;
    max_liquidation_fee_ppm (u32): cap of the liquidation fee, ppm of the
    liquidation notional; oi_lower_cap / oi_upper_cap (u128): open notional,
    USDC base units, between which the initial margin scales up to 100%
    (upper 0: no scaling). The three follow ``signature`` in the dataclass
    (defaults) but precede it in the packed body (docs/protocol.md).
    """

    market: int
    symbol: bytes
    price_decimals: int
    size_decimals: int
    tick_size: int
    step_size: int
    imf_ppm: int
    mmf_ppm: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    oracle_price: int
    signature: bytes
    max_liquidation_fee_ppm: int = DEFAULT_MAX_LIQUIDATION_FEE_PPM
    oi_lower_cap: int = 0
    oi_upper_cap: int = 0

    def body(self) -> bytes:
        return (
            self.market.to_bytes(4, "big")
            + self.symbol
            + self.price_decimals.to_bytes(1, "big")
            + self.size_decimals.to_bytes(1, "big")
            + self.tick_size.to_bytes(8, "big")
            + self.step_size.to_bytes(8, "big")
            + self.imf_ppm.to_bytes(4, "big")
            + self.mmf_ppm.to_bytes(4, "big")
            + self.maker_fee_ppm.to_bytes(4, "big")
            + self.taker_fee_ppm.to_bytes(4, "big")
            + self.oracle_price.to_bytes(8, "big")
            + self.max_liquidation_fee_ppm.to_bytes(4, "big")
            + self.oi_lower_cap.to_bytes(16, "big")
            + self.oi_upper_cap.to_bytes(16, "big")
            + self.signature
        )

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.symbol) != 16:
            raise DecodeError("symbol must be 16 bytes")
        if len(self.signature) != SIGNATURE_BYTES:
            raise DecodeError("signature must be 65 bytes")
        for name, bound in (("market", U32), ("price_decimals", 256), ("size_decimals", 256),
                            ("tick_size", U64), ("step_size", U64), ("imf_ppm", U32),
                            ("mmf_ppm", U32), ("maker_fee_ppm", U32), ("taker_fee_ppm", U32),
                            ("oracle_price", U64), ("max_liquidation_fee_ppm", U32),
                            ("oi_lower_cap", U128), ("oi_upper_cap", U128)):
            _check_range(name, getattr(self, name), bound)


@dataclass(frozen=True, slots=True)
class FundingTick:
    """Advances one market's funding index, signed by the oracle key.

    market: market id (u32); timestamp: unix seconds of the sample (u64);
    premium_ppm: the premium the sequencer sampled, signed ppm of an
    8-hour rate (i32, two's complement in the packed body).
    """

    market: int
    timestamp: int
    premium_ppm: int
    signature: bytes

    def body(self) -> bytes:
        return (
            self.market.to_bytes(4, "big")
            + self.timestamp.to_bytes(8, "big")
            + self.premium_ppm.to_bytes(4, "big", signed=True)
            + self.signature
        )

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise DecodeError("signature must be 65 bytes")
        _check_range("market", self.market, U32)
        _check_range("timestamp", self.timestamp, U64)
        if not -(1 << 31) <= self.premium_ppm < 1 << 31:
            raise DecodeError(f"premium_ppm out of int32 range: {self.premium_ppm}")


@dataclass(frozen=True, slots=True)
class Liquidate:
    """Closes ``size`` of ``liquidated``'s position in ``order.market``
    against the liquidator's signed order (docs/protocol.md "Liquidation").

    liquidated: 20-byte address (signs nothing); order / signature: the
    liquidator's EIP-712 Order, the maker of the trade; size (u64): size
    units; price (u64): price units, equal to ``order.price``.
    """

    liquidated: bytes
    order: Order
    signature: bytes
    size: int
    price: int

    def body(self) -> bytes:
        return (
            self.liquidated
            + self.order.encode()
            + self.signature
            + self.size.to_bytes(8, "big")
            + self.price.to_bytes(8, "big")
        )

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.liquidated) != 20:
            raise DecodeError("liquidated must be 20 bytes")
        if len(self.signature) != SIGNATURE_BYTES:
            raise DecodeError("signature must be 65 bytes")
        self.order.validate_ranges()
        _check_range("size", self.size, U64)
        _check_range("price", self.price, U64)


@dataclass(frozen=True, slots=True)
class Deleverage:
    """Offsets ``size`` of ``liquidated``'s position in ``market`` against
    the opposite position of ``offset`` at the liquidated side's bankruptcy
    price (docs/protocol.md "Deleverage"). Signed by nobody.

    liquidated, offset: 20-byte addresses; market (u32); size (u64): size units.
    """

    liquidated: bytes
    offset: bytes
    market: int
    size: int

    def body(self) -> bytes:
        return (self.liquidated + self.offset + self.market.to_bytes(4, "big")
                + self.size.to_bytes(8, "big"))

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.liquidated) != 20 or len(self.offset) != 20:
            raise DecodeError("liquidated and offset must be 20 bytes")
        _check_range("market", self.market, U32)
        _check_range("size", self.size, U64)


@dataclass(frozen=True, slots=True)
class SettleFunding:
    """Settles the funding of ``account``'s position in ``market``
    (docs/protocol.md "Funding"). Signed by nobody: settling never changes
    equity. account: 20-byte address; market (u32)."""

    account: bytes
    market: int

    def body(self) -> bytes:
        return self.account + self.market.to_bytes(4, "big")

    def validate_ranges(self) -> None:
        """Raise DecodeError if a field does not fit its packed width."""
        if len(self.account) != 20:
            raise DecodeError("account must be 20 bytes")
        _check_range("market", self.market, U32)


Transaction = Union[Deposit, Fill, OraclePrice, Withdraw, ListMarket, FundingTick, Liquidate,
                    Deleverage, SettleFunding]

_TYPE_OF = {Deposit: TX_DEPOSIT, Fill: TX_FILL, OraclePrice: TX_ORACLE_PRICE, Withdraw: TX_WITHDRAW,
            ListMarket: TX_LIST_MARKET, FundingTick: TX_FUNDING_TICK, Liquidate: TX_LIQUIDATE,
            Deleverage: TX_DELEVERAGE, SettleFunding: TX_SETTLE_FUNDING}


def tx_type(tx: Transaction) -> int:
    """The type byte of ``tx``."""
    return _TYPE_OF[type(tx)]


def encode_tx(tx: Transaction) -> bytes:
    """Type byte followed by the packed body (docs/protocol.md)."""
    return bytes([_TYPE_OF[type(tx)]]) + tx.body()


def tx_hash(encoded: bytes) -> bytes:
    """keccak256 of an encoded transaction."""
    return keccak(encoded)


def decode_tx(data: bytes) -> Transaction:
    """Decode exactly one encoded transaction; raises DecodeError."""
    tx, end = decode_tx_at(data, 0)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after transaction")
    return tx


def decode_tx_at(data: bytes, offset: int) -> tuple[Transaction, int]:
    """Decode the transaction starting at ``offset``; returns (tx, end offset)."""
    if offset >= len(data):
        raise DecodeError("missing transaction type byte")
    kind = data[offset]
    size = BODY_BYTES.get(kind)
    if size is None:
        raise DecodeError(f"unknown transaction type 0x{kind:02x}")
    start = offset + 1
    end = start + size
    if end > len(data):
        raise DecodeError(f"truncated transaction of type 0x{kind:02x}")
    b = bytes(data[start:end])
    tx: Transaction
    if kind == TX_DEPOSIT:
        tx = Deposit(
            index=int.from_bytes(b[0:8], "big"),
            account=b[8:28],
            amount=int.from_bytes(b[28:44], "big"),
        )
    elif kind == TX_FILL:
        maker, maker_sig, taker, taker_sig, size, price = _FILL.unpack(b)
        tx = Fill(Order.decode(maker), maker_sig, Order.decode(taker), taker_sig, size, price)
    elif kind == TX_ORACLE_PRICE:
        tx = OraclePrice(
            market=int.from_bytes(b[0:4], "big"),
            price=int.from_bytes(b[4:12], "big"),
            timestamp=int.from_bytes(b[12:20], "big"),
            signature=b[20:85],
        )
    elif kind == TX_WITHDRAW:
        tx = Withdraw(
            account=b[0:20],
            recipient=b[20:40],
            amount=int.from_bytes(b[40:56], "big"),
            nonce=int.from_bytes(b[56:64], "big"),
            signature=b[64:129],
        )
    elif kind == TX_FUNDING_TICK:
        tx = FundingTick(
            market=int.from_bytes(b[0:4], "big"),
            timestamp=int.from_bytes(b[4:12], "big"),
            premium_ppm=int.from_bytes(b[12:16], "big", signed=True),
            signature=b[16:81],
        )
    elif kind == TX_LIQUIDATE:
        liquidated, order, sig, size, price = _LIQUIDATE.unpack(b)
        tx = Liquidate(liquidated, Order.decode(order), sig, size, price)
    elif kind == TX_DELEVERAGE:
        tx = Deleverage(*_DELEVERAGE.unpack(b))
    elif kind == TX_SETTLE_FUNDING:
        tx = SettleFunding(*_SETTLE_FUNDING.unpack(b))
    else:
        tx = ListMarket(
            market=int.from_bytes(b[0:4], "big"),
            symbol=b[4:20],
            price_decimals=b[20],
            size_decimals=b[21],
            tick_size=int.from_bytes(b[22:30], "big"),
            step_size=int.from_bytes(b[30:38], "big"),
            imf_ppm=int.from_bytes(b[38:42], "big"),
            mmf_ppm=int.from_bytes(b[42:46], "big"),
            maker_fee_ppm=int.from_bytes(b[46:50], "big"),
            taker_fee_ppm=int.from_bytes(b[50:54], "big"),
            oracle_price=int.from_bytes(b[54:62], "big"),
            max_liquidation_fee_ppm=int.from_bytes(b[62:66], "big"),
            oi_lower_cap=int.from_bytes(b[66:82], "big"),
            oi_upper_cap=int.from_bytes(b[82:98], "big"),
            signature=b[98:163],
        )
    return tx, end
