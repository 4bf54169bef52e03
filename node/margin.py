"""Integer money math for perpetual markets (docs/protocol.md, "Money").

All amounts are USDC base units (1e-6 USDC); sizes and prices are in a
market's size and price units. Rounding always favours the system: what an
account pays is rounded up, what it receives or is credited is rounded down.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.funding import funding_owed
from node.state import Account, Market, Position

PPM = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _scale(market: Market) -> int:
    """e = pd + sd - 6: notional = size * price / 10^e."""
    return market.price_decimals + market.size_decimals - 6


def notional(market: Market, size: int, price: int) -> tuple[int, int]:
    """(buyer pays, seller receives) for ``size`` at ``price``, both >= 0.

    Exact when pd + sd <= 6; otherwise ceiling for the buyer and floor for
    the seller (the difference is dust for the fee account).
    """
    raw = size * price
    e = _scale(market)
    if e <= 0:
        q = raw * 10**-e
        return q, q
    d = 10**e
    return _ceil_div(raw, d), raw // d


def fee(amount: int, fee_ppm: int) -> int:
    """ceil(amount * fee_ppm / 1e6): a fee on a notional, rounded up."""
    return _ceil_div(amount * fee_ppm, PPM)


def position_value(market: Market, size: int) -> int:
    """Signed value of ``size`` at the oracle price, floored toward -inf."""
    raw = size * market.oracle_price
    e = _scale(market)
    if e <= 0:
        return raw * 10**-e
    return raw // 10**e


def margin_requirement(market: Market, size: int, fraction_ppm: int) -> int:
    """ceil(|size| * oracle_price * fraction / 1e6), in USDC base units."""
    raw = abs(size) * market.oracle_price * fraction_ppm
    e = _scale(market)
    if e <= 0:
        return _ceil_div(raw * 10**-e, PPM)
    return _ceil_div(raw, 10**e * PPM)


def unsettled_funding(market: Market, position: Position) -> int:
    """Funding ``position`` owes and has not settled, USDC base units
    (positive: it pays): ceil(size x (market index - position index) /
    10^(pd+sd)), node.funding.funding_owed. 0 when the indices are equal."""
    if position.funding_index == market.funding_index:
        return 0
    return funding_owed(position.size, market.funding_index, position.funding_index,
                        10 ** (market.price_decimals + market.size_decimals))


def equity(account: Account, markets: Mapping[int, Market]) -> int:
    """collateral + sum of (position value at the oracle price - unsettled
    funding), USDC base units; settling funding leaves it unchanged."""
    total = account.collateral
    for p in account.positions:
        m = markets[p.market]
        total += position_value(m, p.size)
        if p.funding_index != m.funding_index:
            total -= unsettled_funding(m, p)
    return total


def open_notional(market: Market, open_interest: int) -> int:
    """Open interest (size units) x oracle price in USDC base units, rounded
    up (a larger open notional raises the initial margin: system's favour);
    the ``open_interest`` argument of ``oi_scaled_initial_margin_ppm``."""
    raw = open_interest * market.oracle_price
    e = _scale(market)
    if e <= 0:
        return raw * 10**-e
    return _ceil_div(raw, 10**e)


def oi_scaled_initial_margin_ppm(
    base_imf_ppm: int, open_interest: int, lower_cap: int, upper_cap: int
) -> int:
    """Initial margin fraction (ppm) raised linearly with open interest:
    ``base`` while open_interest <= lower_cap, then ``base + (1e6 - base) x
    (oi - lower) / (upper - lower)`` rounded up, 1_000_000 (100%) from the
    upper cap on; an upper cap of 0 disables the scaling.

    open_interest, lower_cap, upper_cap: open notional (open interest x
    oracle price), USDC base units. Source: dYdX v4 x/perpetuals
    ``LiquidityTier.GetAdjustedInitialMarginPpm`` (dYdX floors; we round the
    margin up). Raises ValueError when base_imf_ppm is outside 0..1e6 or
    lower_cap > upper_cap (upper_cap != 0).
    """
    if not 0 <= base_imf_ppm <= PPM:
        raise ValueError(f"base imf {base_imf_ppm} ppm not in 0..{PPM}")
    if upper_cap != 0 and lower_cap > upper_cap:
        raise ValueError(f"open interest lower cap {lower_cap} > upper cap {upper_cap}")
    if upper_cap == 0 or open_interest <= lower_cap:
        return base_imf_ppm
    if open_interest >= upper_cap:
        return PPM
    return base_imf_ppm + _ceil_div((PPM - base_imf_ppm) * (open_interest - lower_cap),
                                    upper_cap - lower_cap)


def effective_imf_ppm(market: Market) -> int:
    """The market's initial margin fraction (ppm) scaled by its open
    interest as it stands (docs/protocol.md "Open interest"):
    ``oi_scaled_initial_margin_ppm(imf, open_notional(m, m.open_interest),
    lower cap, upper cap)``; the base imf when the upper cap is 0."""
    if market.oi_upper_cap == 0:
        return market.imf_ppm
    return oi_scaled_initial_margin_ppm(market.imf_ppm,
                                        open_notional(market, market.open_interest),
                                        market.oi_lower_cap, market.oi_upper_cap)


def initial_margin(account: Account, markets: Mapping[int, Market]) -> int:
    """Sum of initial margin requirements of the account's positions at each
    market's effective (open-interest-scaled) initial margin fraction,
    ``effective_imf_ppm``; USDC base units, rounded up per position."""
    total = 0
    for p in account.positions:
        m = markets[p.market]
        total += margin_requirement(m, p.size, effective_imf_ppm(m))
    return total


def maintenance_margin(account: Account, markets: Mapping[int, Market]) -> int:
    """Sum of maintenance margin requirements of the account's positions."""
    return sum(margin_requirement(markets[p.market], p.size, markets[p.market].mmf_ppm)
               for p in account.positions)


def free_collateral(account: Account, markets: Mapping[int, Market]) -> int:
    """equity - initial margin (may be negative)."""
    return equity(account, markets) - initial_margin(account, markets)


def _trunc_div(a: int, b: int) -> int:
    """a / b truncated toward zero (b > 0)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def trade_position(pos: Position | None, market: int, delta: int, cash: int,
                   funding_index: int = 0) -> Position:
    """Position after trading ``delta`` (signed size) for ``cash`` (signed
    USDC: +paid for a buy, -received for a sell). Cost rule of
    docs/protocol.md ("Accounts: cash model"). The result carries
    ``funding_index`` (the market's current index: the STF settles ``pos``
    first, and a position opened from zero or flipped starts there) and
    ``pos``'s settled_funding (a flip keeps it)."""
    size = pos.size if pos else 0
    cost = pos.cost if pos else 0
    settled = pos.settled_funding if pos else 0
    if size == 0 or (size > 0) == (delta > 0):
        return Position(market, size + delta, cost + cash, funding_index, settled)
    closing = min(abs(delta), abs(size))
    cost -= _trunc_div(cost * closing, abs(size))
    sign = 1 if delta > 0 else -1
    size += sign * closing
    rest = abs(delta) - closing
    if rest > 0:
        size = sign * rest
        cost = _trunc_div(cash * rest, abs(delta))
    if size == 0:
        cost = 0
    return Position(market, size, cost, funding_index, settled)


def unrealized_pnl(market: Market, pos: Position) -> int:
    """value - cost at the oracle price (USDC base units)."""
    return position_value(market, pos.size) - pos.cost
