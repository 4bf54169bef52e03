"""Genesis configuration: chain ids, role addresses and the market list.

The default file ``node/genesis.json`` declares ETH-USD and BTC-USD perps
(large caps: no open-interest scaling, as dYdX v4's large-cap liquidity tier);
each market may set ``maxLiquidationFeePpm`` (default 15_000),
``openInterestLowerCap`` / ``openInterestUpperCap`` (USDC base units, default
0: no scaling; dYdX v4's mid-cap tier is 25_000_000 / 50_000_000 USDC);
``derivnet devnet --genesis FILE`` takes another file of the same shape.
``admin`` is the key that signs ``ListMarket`` (more markets at run time);
it defaults to dev account 0 (the deployer/sequencer key) when omitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from node.exceptions import InvalidTransaction
from node.state import Market, genesis_items, symbol_bytes
from node.stf import MAX_MARKETS, check_market_params, check_symbol
from node.transactions import DEFAULT_MAX_LIQUIDATION_FEE_PPM

DEFAULT_ADMIN = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # dev account 0


def parse_address(text: str) -> bytes:
    """0x-prefixed 20-byte hex address -> bytes; raises ValueError."""
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 42:
        raise ValueError(f"not a 0x-prefixed 20-byte address: {text!r}")
    return bytes.fromhex(text[2:])


@dataclass(frozen=True)
class MarketSpec:
    """A market as declared in genesis: the state leaf fields plus its symbol."""

    symbol: str
    market: Market


@dataclass(frozen=True)
class Genesis:
    """Parsed genesis file. Addresses are 20 raw bytes."""

    l1_chain_id: int
    l2_chain_id: int
    sequencer: bytes
    oracle: bytes
    fee_account: bytes
    markets: tuple[MarketSpec, ...]
    admin: bytes = bytes.fromhex(DEFAULT_ADMIN[2:])

    def leaves(self) -> dict[bytes, bytes]:
        """Initial state leaves (markets, symbols and system)."""
        return genesis_items([(m.symbol, m.market) for m in self.markets], self.oracle,
                             self.fee_account, self.admin)

    def market_by_symbol(self, symbol: str) -> Market:
        for spec in self.markets:
            if spec.symbol == symbol:
                return spec.market
        raise KeyError(f"unknown market symbol {symbol!r}")

    def symbol_of(self, market_id: int) -> str:
        for spec in self.markets:
            if spec.market.id == market_id:
                return spec.symbol
        raise KeyError(f"unknown market id {market_id}")


def parse_genesis(data: dict[str, Any]) -> Genesis:
    """Build a Genesis from the JSON object; raises ValueError/KeyError."""
    markets = []
    for m in data["markets"]:
        market = Market(
            id=int(m["id"]),
            price_decimals=int(m["priceDecimals"]),
            size_decimals=int(m["sizeDecimals"]),
            tick_size=int(m["tickSize"]),
            step_size=int(m["stepSize"]),
            imf_ppm=int(m["initialMarginPpm"]),
            mmf_ppm=int(m["maintenanceMarginPpm"]),
            maker_fee_ppm=int(m["makerFeePpm"]),
            taker_fee_ppm=int(m["takerFeePpm"]),
            oracle_price=int(m.get("oraclePrice", 0)),
            oracle_time=0,
            max_liquidation_fee_ppm=int(m.get("maxLiquidationFeePpm",
                                              DEFAULT_MAX_LIQUIDATION_FEE_PPM)),
            oi_lower_cap=int(m.get("openInterestLowerCap", 0)),
            oi_upper_cap=int(m.get("openInterestUpperCap", 0)),
        )
        if market.tick_size <= 0 or market.step_size <= 0:
            raise ValueError(f"market {m['symbol']}: tick and step must be positive")
        try:
            check_symbol(symbol_bytes(str(m["symbol"])))
            # genesis markets may start without an oracle price (ListMarket may not)
            check_market_params(market if market.oracle_price else
                                replace(market, oracle_price=1))
        except (InvalidTransaction, ValueError, UnicodeError) as exc:
            raise ValueError(f"market {m['symbol']}: {exc}") from None
        markets.append(MarketSpec(str(m["symbol"]), market))
    ids = [s.market.id for s in markets]
    if len(set(ids)) != len(ids):
        raise ValueError("market ids must be unique")
    if len({s.symbol for s in markets}) != len(markets):
        raise ValueError("market symbols must be unique")
    if len(markets) > MAX_MARKETS:
        raise ValueError(f"at most {MAX_MARKETS} markets")
    return Genesis(
        l1_chain_id=int(data["l1ChainId"]),
        l2_chain_id=int(data["l2ChainId"]),
        sequencer=parse_address(data["sequencer"]),
        oracle=parse_address(data["oracle"]),
        fee_account=parse_address(data["feeAccount"]),
        markets=tuple(markets),
        admin=parse_address(data.get("admin", DEFAULT_ADMIN)),
    )


def load_genesis(path: str | Path | None = None) -> Genesis:
    """Load ``path``, or the packaged default genesis when None."""
    if path is None:
        text = resources.files("node").joinpath("genesis.json").read_text()
    else:
        text = Path(path).read_text()
    return parse_genesis(json.loads(text))
