"""Market listing helpers for clients: scales that fit a set of prices,
tape symbols, and the ``l2_sendListMarket`` request (docs/protocol.md,
"Markets and scales").

A market's price unit is 10^-price_decimals quote units and its size unit
10^-size_decimals base units; prices and sizes are u64. ``fit_scales``
picks the smallest decimals that hold every given price and size exactly
and keep at least ``MIN_SIGNIFICANT_DIGITS`` of the smallest price, so a
price from 1e-6 to 1e6 quote units never loses a digit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from node.client import quantity
from node.state import symbol_bytes, symbol_text
from node.stf import MAX_DECIMALS
from node.transactions import ListMarket

MIN_SIGNIFICANT_DIGITS = 6
U64 = 2**64

# Parameters of a market listed for a tape (those of the genesis ETH-USD).
DEFAULT_IMF_PPM = 100_000
DEFAULT_MMF_PPM = 50_000
DEFAULT_MAKER_FEE_PPM = 200
DEFAULT_TAKER_FEE_PPM = 500

_QUOTES = (("USDT", "USD"), ("USDC", "USD"), ("BUSD", "USD"), ("USD", "USD"), ("ETH", "ETH"),
           ("BTC", "BTC"), ("EUR", "EUR"))


@dataclass(frozen=True)
class Scales:
    """price_decimals / size_decimals (u8, <= 18); tick and step are 1 unit."""

    price_decimals: int
    size_decimals: int


def decimals_of(value: Decimal) -> int:
    """Digits after the point in ``value``'s shortest form (0 for integers)."""
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def fit_scales(prices: Iterable[Decimal], sizes: Iterable[Decimal]) -> Scales:
    """Smallest scales holding every price and size exactly, with at least
    6 significant digits for the smallest price.

    Raises ValueError if a price or size is not positive, needs more than 18
    decimals, or does not fit u64 at the chosen scale.
    """
    prices = list(prices)
    sizes = list(sizes)
    if not prices or not sizes:
        raise ValueError("no prices or sizes to fit")
    if min(prices) <= 0 or min(sizes) <= 0:
        raise ValueError("prices and sizes must be positive")
    pd = max(decimals_of(p) for p in prices)
    smallest = min(prices)
    magnitude = smallest.adjusted()  # floor(log10(smallest))
    pd = max(pd, MIN_SIGNIFICANT_DIGITS - 1 - magnitude)
    sd = max(decimals_of(s) for s in sizes)
    if pd > MAX_DECIMALS or sd > MAX_DECIMALS:
        raise ValueError(f"prices need {pd} and sizes {sd} decimals, at most {MAX_DECIMALS}")
    if max(prices) * 10**pd >= U64:
        raise ValueError(f"price {max(prices)} does not fit u64 at {pd} decimals")
    if max(sizes) * 10**sd >= U64:
        raise ValueError(f"size {max(sizes)} does not fit u64 at {sd} decimals")
    return Scales(pd, sd)


def to_units(value: Decimal, decimals: int, unit: int) -> int | None:
    """``value`` in units of 10^-decimals that are multiples of ``unit``;
    None if it is not exactly such a multiple (never rounds)."""
    scaled = value * 10**decimals
    if scaled != scaled.to_integral_value():
        return None
    n = int(scaled)
    return n if n % unit == 0 else None


def symbol_from_tape(path: str | Path) -> str:
    """Market symbol from a tape's file name: the part before the first
    ``-``/``_``/``.``, upper-cased, a known quote suffix split off:
    ``ethusdt-trades-2023-02-02.csv`` -> ``ETH-USD``, ``shibeth.csv`` ->
    ``SHIB-ETH``. At most 16 characters."""
    stem = re.split(r"[-_.]", Path(path).name, maxsplit=1)[0].upper()
    for suffix, quote in _QUOTES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return f"{stem[: -len(suffix)]}-{quote}"[:16]
    return stem[:16] or "TAPE"


def list_market_tx(market: int, symbol: str, scales: Scales, oracle_price: int,
                   tick_size: int = 1, step_size: int = 1, imf_ppm: int = DEFAULT_IMF_PPM,
                   mmf_ppm: int = DEFAULT_MMF_PPM, maker_fee_ppm: int = DEFAULT_MAKER_FEE_PPM,
                   taker_fee_ppm: int = DEFAULT_TAKER_FEE_PPM) -> ListMarket:
    """An unsigned ListMarket (sign with ``Signer.list_market``); oracle_price
    in price units. Raises ValueError for a symbol over 16 ASCII bytes."""
    return ListMarket(market, symbol_bytes(symbol), scales.price_decimals, scales.size_decimals,
                      tick_size, step_size, imf_ppm, mmf_ppm, maker_fee_ppm, taker_fee_ppm,
                      oracle_price, b"\x00" * 65)


def list_market_json(tx: ListMarket) -> dict[str, Any]:
    """A ListMarket's fields as in l2_sendListMarket / l2_getMarkets."""
    return {
        "market": hex(tx.market),
        "symbol": symbol_text(tx.symbol),
        "priceDecimals": hex(tx.price_decimals),
        "sizeDecimals": hex(tx.size_decimals),
        "tickSize": str(tx.tick_size),
        "stepSize": str(tx.step_size),
        "initialMarginPpm": hex(tx.imf_ppm),
        "maintenanceMarginPpm": hex(tx.mmf_ppm),
        "makerFeePpm": hex(tx.maker_fee_ppm),
        "takerFeePpm": hex(tx.taker_fee_ppm),
        "oraclePrice": str(tx.oracle_price),
        "maxLiquidationFeePpm": hex(tx.max_liquidation_fee_ppm),
        "openInterestLowerCap": str(tx.oi_lower_cap),
        "openInterestUpperCap": str(tx.oi_upper_cap),
    }


def list_market_params(tx: ListMarket) -> dict[str, Any]:
    """The ``l2_sendListMarket`` request object of a signed ListMarket."""
    return {**list_market_json(tx), "signature": "0x" + tx.signature.hex()}


def next_market_id(markets: Iterable[dict[str, Any]]) -> int:
    """One more than the highest listed id (1 if none): ids from l2_getMarkets."""
    return max((quantity(m["id"]) for m in markets), default=0) + 1
