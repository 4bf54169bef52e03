"""EIP-712 typed data for derivnet orders, cancels, oracle prices, withdrawals,
market listings and funding ticks.

Digests are computed by hand (one keccak for the struct, one for the
envelope) because orders are hashed on the hot path; tests hold them equal to
eth-account's ``encode_typed_data``. ``typed_data`` builds the JSON a wallet
signs with ``eth_signTypedData_v4``.

Source: EIP-712, https://eips.ethereum.org/EIPS/eip-712
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.crypto import keccak
from node.transactions import ListMarket, Order

DOMAIN_NAME = "derivnet"
DOMAIN_VERSION = "1"

DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
ORDER_TYPE = (
    "Order(address account,uint32 market,bool isBuy,uint64 price,uint64 size,"
    "uint64 salt,uint64 expiry)"
)
CANCEL_TYPE = "Cancel(address account,bytes32 orderHash)"
ORACLE_PRICE_TYPE = "OraclePrice(uint32 market,uint64 price,uint64 timestamp)"
WITHDRAW_TYPE = "Withdraw(address account,address recipient,uint128 amount,uint64 nonce)"
LIST_MARKET_TYPE = (
    "ListMarket(uint32 market,bytes16 symbol,uint8 priceDecimals,uint8 sizeDecimals,"
    "uint64 tickSize,uint64 stepSize,uint32 initialMarginPpm,uint32 maintenanceMarginPpm,"
    "uint32 makerFeePpm,uint32 takerFeePpm,uint64 oraclePrice,uint32 maxLiquidationFeePpm,"
    "uint128 openInterestLowerCap,uint128 openInterestUpperCap)"
)
FUNDING_TICK_TYPE = "FundingTick(uint32 market,uint64 timestamp,int32 premiumPpm)"

DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE.encode())
ORDER_TYPEHASH = keccak(ORDER_TYPE.encode())
CANCEL_TYPEHASH = keccak(CANCEL_TYPE.encode())
ORACLE_PRICE_TYPEHASH = keccak(ORACLE_PRICE_TYPE.encode())
WITHDRAW_TYPEHASH = keccak(WITHDRAW_TYPE.encode())
LIST_MARKET_TYPEHASH = keccak(LIST_MARKET_TYPE.encode())
FUNDING_TICK_TYPEHASH = keccak(FUNDING_TICK_TYPE.encode())

_PAD12 = b"\x00" * 12


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class Domain:
    """The signing domain: L2 chain id and the L1 Rollup contract (20 bytes)."""

    chain_id: int
    verifying_contract: bytes

    @property
    def separator(self) -> bytes:
        """hashStruct(EIP712Domain) (32 bytes)."""
        return keccak(
            DOMAIN_TYPEHASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + _word(self.chain_id)
            + _PAD12
            + self.verifying_contract
        )

    def digest(self, struct_hash: bytes) -> bytes:
        """keccak(0x1901 || separator || struct_hash): the value that is signed."""
        return keccak(b"\x19\x01" + self._separator() + struct_hash)

    def _separator(self) -> bytes:
        cached = _SEPARATORS.get(self)
        if cached is None:
            cached = _SEPARATORS[self] = self.separator
        return cached

    def as_json(self) -> dict[str, Any]:
        """The ``domain`` object of eth_signTypedData_v4."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": "0x" + self.verifying_contract.hex(),
        }


_SEPARATORS: dict[Domain, bytes] = {}


def order_struct_hash(order: Order) -> bytes:
    """hashStruct(Order)."""
    return keccak(
        ORDER_TYPEHASH
        + _PAD12
        + order.account
        + order.market.to_bytes(32, "big")
        + (_ONE_WORD if order.is_buy else _ZERO_WORD)
        + order.price.to_bytes(32, "big")
        + order.size.to_bytes(32, "big")
        + order.salt.to_bytes(32, "big")
        + order.expiry.to_bytes(32, "big")
    )


_ZERO_WORD = _word(0)
_ONE_WORD = _word(1)
# domain -> order -> order hash; each domain's memo is cleared when full
_ORDER_HASHES: dict[Domain, dict[Order, bytes]] = {}
_ORDER_HASHES_SIZE = 1 << 16


def order_hash(domain: Domain, order: Order) -> bytes:
    """The order hash: the EIP-712 digest of ``order`` (32 bytes). Memoized
    on the whole (domain, order) value: the sequencer, the STF and the block
    store hash the same order once."""
    memo = _ORDER_HASHES.get(domain)
    if memo is None:
        memo = _ORDER_HASHES[domain] = {}
    h = memo.get(order)
    if h is None:
        if len(memo) >= _ORDER_HASHES_SIZE:
            memo.clear()
        h = memo[order] = keccak(b"\x19\x01" + domain._separator() + order_struct_hash(order))
    return h


def clear_order_hashes() -> None:
    """Forget every memoized order hash (benchmarks start cold)."""
    _ORDER_HASHES.clear()


def seed_order_hash(domain: Domain, order: Order, digest: bytes) -> None:
    """Record ``digest`` as ``order_hash(domain, order)``, computed elsewhere
    (a signature worker process hashed the same order's encoding)."""
    memo = _ORDER_HASHES.get(domain)
    if memo is None:
        memo = _ORDER_HASHES[domain] = {}
    if len(memo) >= _ORDER_HASHES_SIZE:
        memo.clear()
    memo[order] = digest


def cancel_digest(domain: Domain, account: bytes, target_hash: bytes) -> bytes:
    """Digest of Cancel(account, orderHash), signed by the order's owner."""
    return domain.digest(keccak(CANCEL_TYPEHASH + _PAD12 + account + target_hash))


def oracle_price_digest(domain: Domain, market: int, price: int, timestamp: int) -> bytes:
    """Digest of OraclePrice(market, price, timestamp), signed by the oracle key."""
    return domain.digest(
        keccak(ORACLE_PRICE_TYPEHASH + _word(market) + _word(price) + _word(timestamp))
    )


def funding_tick_digest(domain: Domain, market: int, timestamp: int, premium_ppm: int) -> bytes:
    """Digest of FundingTick(market, timestamp, premiumPpm), signed by the
    oracle key; int32 premiumPpm encodes as a two's-complement 256-bit word."""
    return domain.digest(
        keccak(FUNDING_TICK_TYPEHASH + _word(market) + _word(timestamp)
               + premium_ppm.to_bytes(32, "big", signed=True))
    )


def withdraw_digest(
    domain: Domain, account: bytes, recipient: bytes, amount: int, nonce: int
) -> bytes:
    """Digest of Withdraw(account, recipient, amount, nonce), signed by the account."""
    return domain.digest(
        keccak(
            WITHDRAW_TYPEHASH
            + _PAD12
            + account
            + _PAD12
            + recipient
            + _word(amount)
            + _word(nonce)
        )
    )


def list_market_digest(domain: Domain, tx: ListMarket) -> bytes:
    """Digest of ListMarket(...) (all fields but the signature), signed by
    the admin key. bytes16 encodes left-aligned in its 32-byte word."""
    return domain.digest(
        keccak(
            LIST_MARKET_TYPEHASH
            + _word(tx.market)
            + tx.symbol.ljust(32, b"\x00")
            + _word(tx.price_decimals)
            + _word(tx.size_decimals)
            + _word(tx.tick_size)
            + _word(tx.step_size)
            + _word(tx.imf_ppm)
            + _word(tx.mmf_ppm)
            + _word(tx.maker_fee_ppm)
            + _word(tx.taker_fee_ppm)
            + _word(tx.oracle_price)
            + _word(tx.max_liquidation_fee_ppm)
            + _word(tx.oi_lower_cap)
            + _word(tx.oi_upper_cap)
        )
    )


def list_market_message(tx: ListMarket) -> dict[str, Any]:
    """The ``message`` of a ListMarket in EIP-712 JSON (symbol as 0x hex)."""
    return {
        "market": tx.market,
        "symbol": "0x" + tx.symbol.hex(),
        "priceDecimals": tx.price_decimals,
        "sizeDecimals": tx.size_decimals,
        "tickSize": tx.tick_size,
        "stepSize": tx.step_size,
        "initialMarginPpm": tx.imf_ppm,
        "maintenanceMarginPpm": tx.mmf_ppm,
        "makerFeePpm": tx.maker_fee_ppm,
        "takerFeePpm": tx.taker_fee_ppm,
        "oraclePrice": tx.oracle_price,
        "maxLiquidationFeePpm": tx.max_liquidation_fee_ppm,
        "openInterestLowerCap": tx.oi_lower_cap,
        "openInterestUpperCap": tx.oi_upper_cap,
    }


_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Order": [
        {"name": "account", "type": "address"},
        {"name": "market", "type": "uint32"},
        {"name": "isBuy", "type": "bool"},
        {"name": "price", "type": "uint64"},
        {"name": "size", "type": "uint64"},
        {"name": "salt", "type": "uint64"},
        {"name": "expiry", "type": "uint64"},
    ],
    "Cancel": [
        {"name": "account", "type": "address"},
        {"name": "orderHash", "type": "bytes32"},
    ],
    "OraclePrice": [
        {"name": "market", "type": "uint32"},
        {"name": "price", "type": "uint64"},
        {"name": "timestamp", "type": "uint64"},
    ],
    "FundingTick": [
        {"name": "market", "type": "uint32"},
        {"name": "timestamp", "type": "uint64"},
        {"name": "premiumPpm", "type": "int32"},
    ],
    "Withdraw": [
        {"name": "account", "type": "address"},
        {"name": "recipient", "type": "address"},
        {"name": "amount", "type": "uint128"},
        {"name": "nonce", "type": "uint64"},
    ],
    "ListMarket": [
        {"name": "market", "type": "uint32"},
        {"name": "symbol", "type": "bytes16"},
        {"name": "priceDecimals", "type": "uint8"},
        {"name": "sizeDecimals", "type": "uint8"},
        {"name": "tickSize", "type": "uint64"},
        {"name": "stepSize", "type": "uint64"},
        {"name": "initialMarginPpm", "type": "uint32"},
        {"name": "maintenanceMarginPpm", "type": "uint32"},
        {"name": "makerFeePpm", "type": "uint32"},
        {"name": "takerFeePpm", "type": "uint32"},
        {"name": "oraclePrice", "type": "uint64"},
        {"name": "maxLiquidationFeePpm", "type": "uint32"},
        {"name": "openInterestLowerCap", "type": "uint128"},
        {"name": "openInterestUpperCap", "type": "uint128"},
    ],
}


def typed_data(domain: Domain, primary_type: str, message: dict[str, Any]) -> dict[str, Any]:
    """Full EIP-712 JSON (``eth_signTypedData_v4`` / eth-account ``full_message``)."""
    return {
        "types": {"EIP712Domain": _TYPES["EIP712Domain"], primary_type: _TYPES[primary_type]},
        "domain": domain.as_json(),
        "primaryType": primary_type,
        "message": message,
    }


def order_message(order: Order) -> dict[str, Any]:
    """The ``message`` of an Order in EIP-712 JSON (addresses as 0x hex)."""
    return {
        "account": "0x" + order.account.hex(),
        "market": order.market,
        "isBuy": order.is_buy,
        "price": order.price,
        "size": order.size,
        "salt": order.salt,
        "expiry": order.expiry,
    }
