"""Signing helpers for clients, bots, the replay and tests.

Signatures are exactly what eth-account / wallets produce for
``eth_signTypedData_v4`` (tests check it); signing goes through coincurve
directly over our EIP-712 digest because replays sign hundreds of thousands
of orders.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from node.crypto import address_of, sign_digest
from node.eip712 import (
    Domain,
    cancel_digest,
    funding_tick_digest,
    list_market_digest,
    oracle_price_digest,
    order_hash,
    withdraw_digest,
)
from node.transactions import FundingTick, ListMarket, OraclePrice, Order, Withdraw


class Signer:
    """A secp256k1 key (32 bytes) and its 20-byte address."""

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise ValueError("private key must be 32 bytes")
        self.private_key = private_key
        self.address = address_of(private_key)

    def sign_order(self, domain: Domain, order: Order) -> tuple[bytes, bytes]:
        """Returns (order hash, 65-byte signature)."""
        digest = order_hash(domain, order)
        return digest, sign_digest(self.private_key, digest)

    def sign_cancel(self, domain: Domain, target_hash: bytes) -> bytes:
        return sign_digest(self.private_key, cancel_digest(domain, self.address, target_hash))

    def oracle_price(self, domain: Domain, market: int, price: int, timestamp: int) -> OraclePrice:
        digest = oracle_price_digest(domain, market, price, timestamp)
        return OraclePrice(market, price, timestamp, sign_digest(self.private_key, digest))

    def funding_tick(self, domain: Domain, market: int, timestamp: int,
                     premium_ppm: int) -> FundingTick:
        """A FundingTick signed by this key (the oracle key); premium_ppm is
        a signed 8-hour premium in ppm."""
        digest = funding_tick_digest(domain, market, timestamp, premium_ppm)
        return FundingTick(market, timestamp, premium_ppm, sign_digest(self.private_key, digest))

    def withdraw(self, domain: Domain, recipient: bytes, amount: int, nonce: int) -> Withdraw:
        digest = withdraw_digest(domain, self.address, recipient, amount, nonce)
        return Withdraw(self.address, recipient, amount, nonce,
                        sign_digest(self.private_key, digest))


    def list_market(self, domain: Domain, tx: ListMarket) -> ListMarket:
        """``tx`` signed by this key (the admin key); its own signature is ignored."""
        return replace(tx, signature=sign_digest(self.private_key, list_market_digest(domain, tx)))


DEV_MNEMONIC = "test test test test test test test test test test test junk"


@lru_cache(maxsize=4)
def dev_keys(count: int = 10) -> tuple[bytes, ...]:
    """Private keys of the anvil/hardhat dev accounts (m/44'/60'/0'/0/i)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return tuple(
        bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key)
        for i in range(count)
    )
