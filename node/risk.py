"""Integer formulas of the perpetuals risk engine (docs/risk.md): liquidation,
bankruptcy and fillable prices, the insurance fund's share of a liquidation,
StarkEx's "no riskier" transition check, auto-deleveraging ranking,
open-interest-scaled initial margin, liquidation price and margin ratio.

Pure functions over ints and node/state.py's ``Account`` / ``Market`` /
``Position``. Nothing here reads or writes state: the STF's ``Liquidate`` /
``Deleverage`` (node/liquidation.py) and the sequencer's risk engine call
them. ``open_notional`` and ``oi_scaled_initial_margin_ppm`` live in
node/margin.py (its ``initial_margin`` uses them) and are re-exported here.

Units as in docs/protocol.md ("Money"): money in USDC base units (1e-6
USDC), prices in a market's price units, sizes in its size units, fractions
in ppm. The exact value of ``size`` at ``price`` is ``size * price * M / N``
USDC base units with ``M = 10^max(0, -e)``, ``N = 10^max(0, e)``,
``e = pd + sd - 6`` (node/margin.py's scale).

Funding: every function that reads equity takes ``unsettled``, the funding
a position owes and has not settled (USDC base units, positive: it pays),
as a callable ``Position -> int`` or a mapping ``market id -> int``; the
default None is zero for every position. The equity is then
``collateral + sum(value(p) - unsettled(p))`` (funding spec v1, "EQUITY").
Callers pass ``lambda p: <unsettled funding of p in markets[p.market]>``
(node/liquidation.py ``unsettled_of``); this module
never reads node/margin.py's ``equity`` (which will count funding itself),
only its per-position value and margin, so funding is never counted twice.

Rounding always favours the system; each docstring says which way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Union

from node.margin import PPM, maintenance_margin, margin_requirement, position_value
from node.margin import oi_scaled_initial_margin_ppm as oi_scaled_initial_margin_ppm
from node.margin import open_notional as open_notional

SPREAD_TO_MMR_PPM = 1_500_000  # dYdX v4 mainnet liquidations config
BANKRUPTCY_ADJUSTMENT_PPM = 1_000_000  # dYdX v4 mainnet liquidations config
from node.state import Account, Market, Position

Unsettled = Union[Callable[[Position], int], Mapping[int, int], None]
"""Unsettled funding per position, USDC base units, positive: the position pays."""

# Names of the reasons ``transition_violation`` gives (StarkEx Perpetual's
# PerpetualErrorCode names, in the casing of our typed errors).
ENLARGING_HOLDINGS = "IllegalTransitionEnlargingSyntheticHoldings"
REDUCING_VALUE_RISK_RATIO = "IllegalTransitionReducingTotalValueRiskRatio"
NO_RISK_REDUCED_VALUE = "IllegalTransitionNoRiskReducedValue"


# -- helpers ---------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for b != 0 (any signs)."""
    return -((-a) // b)


def _scale(market: Market) -> tuple[int, int]:
    """(M, N): the exact value of ``size`` at ``price`` is size * price * M / N."""
    e = market.price_decimals + market.size_decimals - 6
    return (10**-e, 1) if e <= 0 else (1, 10**e)


def _unsettled(unsettled: Unsettled, position: Position) -> int:
    if unsettled is None:
        return 0
    if callable(unsettled):
        return unsettled(position)
    return unsettled.get(position.market, 0)


def _position(account: Account, market_id: int) -> Position:
    pos = account.position(market_id)
    if pos is None:
        raise ValueError(f"account has no position in market {market_id}")
    return pos


def _value_ceil(market: Market, size: int) -> int:
    """ceil(size * oracle_price * M / N): an upper bound of a position's value."""
    m, n = _scale(market)
    return _ceil_div(size * market.oracle_price * m, n)


def is_reduction(size: int, delta: int) -> bool:
    """True when trading ``delta`` (signed size units) only reduces ``size``:
    opposite signs and ``|delta| <= |size|`` (a close to zero is a reduction,
    a flip is not). dYdX v4 x/clob ``GetBankruptcyPriceInQuoteQuantums``'s
    delta check."""
    return size * delta < 0 and abs(delta) <= abs(size)


# -- equity, liquidatable, margin ratio -------------------------------------


def equity(account: Account, markets: Mapping[int, Market], unsettled: Unsettled = None) -> int:
    """collateral + sum(value(p) - unsettled(p)), USDC base units.

    value(p) is node/margin.py's ``position_value`` (floored toward -inf);
    unsettled funding as the funding spec's EQUITY. Raises KeyError for a
    position in a market not in ``markets``.
    """
    total = account.collateral
    for p in account.positions:
        total += position_value(markets[p.market], p.size) - _unsettled(unsettled, p)
    return total


def liquidatable(
    account: Account, markets: Mapping[int, Market], unsettled: Unsettled = None
) -> bool:
    """True when maintenance margin > 0 and equity < maintenance margin.

    Source: dYdX v4 lib/margin ``Risk.IsLiquidatable`` (``MMR > 0 && MMR >
    NC``). Exactly at maintenance margin is not liquidatable; an account with
    no positions is not (nothing to close). Maintenance margin is
    node/margin.py's (rounded up), equity floors values: both round toward
    liquidating.
    """
    mm = maintenance_margin(account, markets)
    return mm > 0 and equity(account, markets, unsettled) < mm


def margin_ratio_ppm(
    account: Account, markets: Mapping[int, Market], unsettled: Unsettled = None
) -> int | None:
    """Maintenance margin / equity in ppm (Binance's "margin ratio":
    liquidation at 100%, i.e. 1_000_000), rounded up (shows more risk).

    0 when there is no maintenance margin; None when equity <= 0 and there
    is (an unbounded ratio).
    """
    mm = maintenance_margin(account, markets)
    if mm == 0:
        return 0
    eq = equity(account, markets, unsettled)
    if eq <= 0:
        return None
    return _ceil_div(mm * PPM, eq)


# -- bankruptcy and fillable prices ------------------------------------------


def bankruptcy_quote(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    delta: int,
    unsettled: Unsettled = None,
) -> int:
    """The cash (USDC base units, signed: + received, - paid) at which closing
    ``delta`` of the account's position in ``market_id`` leaves the ratio
    equity / maintenance margin unchanged; for a close of all the account's
    maintenance margin it leaves equity exactly 0.

    Source: dYdX v4 x/clob ``GetBankruptcyPriceInQuoteQuantums``:
    ``-DNNV - floor(TNC * |DMMR| / TMMR)`` with DNNV = value(size + delta) -
    value(size), DMMR = mm(size + delta) - mm(size) (node/margin.py's
    floored value and rounded-up margin), TNC = equity, TMMR = maintenance
    margin. The one division floors, so the result rounds toward +inf (the
    account's equity after a close at exactly this cash is >= TNC * TMMR' /
    TMMR: closing at it never needs the insurance fund).

    Raises ValueError when ``delta`` is not a reduction (``is_reduction``),
    the account has no position in the market, or its maintenance margin is
    0 (the ratio is undefined).
    """
    market = markets[market_id]
    pos = _position(account, market_id)
    if not is_reduction(pos.size, delta):
        raise ValueError(f"delta {delta} does not reduce position {pos.size}")
    tmmr = maintenance_margin(account, markets)
    if tmmr == 0:
        raise ValueError("no maintenance margin: bankruptcy price undefined")
    after = pos.size + delta
    dnnv = position_value(market, after) - position_value(market, pos.size)
    dmmr = (margin_requirement(market, after, market.mmf_ppm)
            - margin_requirement(market, pos.size, market.mmf_ppm))
    tnc = equity(account, markets, unsettled)
    return -dnnv - (tnc * -dmmr) // tmmr


def price_for_cash(market: Market, delta: int, cash: int) -> int:
    """The price (price units, >= 0) at which trading ``delta`` gives the
    account at least ``cash`` (signed USDC base units: + received), the
    nearest such price: a sell (delta < 0) receives ``floor(|delta| * P * M /
    N)`` so P = ceil(cash * N / (|delta| * M)); a buy pays ``ceil(...)`` so
    P = floor(-cash * N / (delta * M)). Rounded in the trading account's
    favour (its equity ends >= the target), clamped at 0.

    Raises ValueError for ``delta == 0``.
    """
    if delta == 0:
        raise ValueError("delta must not be 0")
    m, n = _scale(market)
    if delta < 0:
        price = _ceil_div(cash * n, -delta * m)
    else:
        price = (-cash * n) // (delta * m)
    return max(price, 0)


def bankruptcy_price(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    delta: int,
    unsettled: Unsettled = None,
) -> int:
    """The bankruptcy price (price units) of closing ``delta``: the price
    whose cash is ``bankruptcy_quote`` (``price_for_cash``: rounded in the
    liquidated account's favour, up for a sell closing a long, down for a buy
    closing a short, so its equity ends >= the bankruptcy equity, by less
    than the notional of one price unit of ``|delta|`` plus one base unit).
    Clamped at 0 (a long whose bankruptcy price is <= 0 cannot go bankrupt).

    Source: dYdX v4 x/clob ``GetBankruptcyPriceInQuoteQuantums`` divided by
    the size. Raises as ``bankruptcy_quote``.
    """
    quote = bankruptcy_quote(account, markets, market_id, delta, unsettled)
    return price_for_cash(markets[market_id], delta, quote)


def deleverage_price(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    delta: int,
    unsettled: Unsettled = None,
) -> int:
    """The price of a deleverage that closes ``delta`` of the liquidated
    account against an offsetting position: the liquidated side's bankruptcy
    price (dYdX v4 x/clob ``OffsetSubaccountPerpetualPosition``; StarkEx
    Perpetual ``Deleverage``). Raises as ``bankruptcy_quote``."""
    return bankruptcy_price(account, markets, market_id, delta, unsettled)


def fillable_price(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    bankruptcy_adjustment_ppm: int,
    spread_to_mmr_ppm: int,
    unsettled: Unsettled = None,
) -> int:
    """The worst price (price units) a liquidation of the account's position
    in ``market_id`` may fill at: a long's closing sell must be at or above
    it, a short's closing buy at or below it (``within_fillable``).

    Source: dYdX v4 x/clob ``GetFillablePrice``:
    ``(PNNV - ABR * SMMR * PMMR) / PS`` with ``ABR = clamp(BA * (1 - TNC /
    TMMR), 0, 1)``; PS the position size, PNNV its exact value at the oracle
    price, PMMR its maintenance margin, TNC equity, TMMR the account's
    maintenance margin, BA ``bankruptcy_adjustment_ppm`` (dYdX: 1_000_000),
    SMMR ``spread_to_mmr_ppm`` (dYdX mainnet: 1_500_000). With an exact PNNV
    this is ``oracle - ABR * SMMR * PMMR * N / (PPM * M * PS)``: the oracle at
    the maintenance margin, the oracle minus the max liquidation spread
    (SMMR x PMMR) at zero or negative equity.

    Rounded in the liquidated account's favour (up for a long, down for a
    short, as dYdX's ``ConvertFillablePriceToSubticks``), clamped at 0.
    Raises ValueError when the account has no position in the market or no
    maintenance margin.
    """
    market = markets[market_id]
    pos = _position(account, market_id)
    tmmr = maintenance_margin(account, markets)
    if tmmr == 0:
        raise ValueError("no maintenance margin: fillable price undefined")
    tnc = equity(account, markets, unsettled)
    # ABR = a_num / a_den, clamped to [0, 1]
    a_num = bankruptcy_adjustment_ppm * (tmmr - tnc)
    a_den = tmmr * PPM
    a_num = min(max(a_num, 0), a_den)
    pmmr = margin_requirement(market, pos.size, market.mmf_ppm)
    m, n = _scale(market)
    # price = oracle - a_num * SMMR * PMMR * N / (a_den * PPM * M * PS)
    num = market.oracle_price * a_den * PPM * m * pos.size - a_num * spread_to_mmr_ppm * pmmr * n
    den = a_den * PPM * m * pos.size
    price = _ceil_div(num, den) if pos.size > 0 else num // den
    return max(price, 0)


def within_fillable(size: int, price: int, bound: int) -> bool:
    """True when a liquidation fill at ``price`` is no worse for the position
    of ``size`` than ``bound`` (``fillable_price``): a long's sell at or above
    it, a short's buy at or below it."""
    return price >= bound if size > 0 else price <= bound


# -- liquidation fee and insurance fund ----------------------------------------


def liquidation_fee(notional: int, max_fee_ppm: int, surplus: int) -> int:
    """The liquidation fee the liquidated account pays the insurance fund,
    USDC base units: ``min(ceil(notional * max_fee_ppm / 1e6), max(surplus,
    0))``, rounded up, and never more than ``surplus``, what the account has
    above its bankruptcy equity at the fill's price (so the fee never makes
    the fund pay).

    notional: |cash| of the liquidation fill. Source: dYdX v4 x/clob
    ``GetLiquidationInsuranceFundDelta`` (``min(maxLiquidationFee,
    leftover)``; dYdX rounds the fee down, we up).
    """
    return min(_ceil_div(notional * max_fee_ppm, PPM), max(surplus, 0))


def insurance_fund_delta(cash: int, bankruptcy_cash: int, max_fee_ppm: int) -> int:
    """The insurance fund's change from a liquidation fill, USDC base units:
    positive, the fund earns the (capped) liquidation fee; negative, the fund
    pays the shortfall; 0 at exactly the bankruptcy price.

    cash: the liquidated account's signed cash of the fill (+ received for a
    sell, - paid for a buy: node/margin.py ``notional``); bankruptcy_cash:
    ``bankruptcy_quote`` for the same delta. ``surplus = cash -
    bankruptcy_cash``; a surplus <= 0 is returned as is (the fund covers it),
    otherwise ``liquidation_fee(|cash|, max_fee_ppm, surplus)``.

    Source: dYdX v4 x/clob ``GetLiquidationInsuranceFundDelta``.
    """
    surplus = cash - bankruptcy_cash
    if surplus <= 0:
        return surplus
    return liquidation_fee(abs(cash), max_fee_ppm, surplus)


def fund_covers(fund_balance: int, delta: int) -> bool:
    """True when the insurance fund (balance, USDC base units, >= 0) can take
    ``delta`` (``insurance_fund_delta``) and stay >= 0; an exactly empty fund
    covers a delta of 0 and nothing less. When it cannot, the account is
    deleveraged instead (dYdX v4 x/clob ``IsValidInsuranceFundDelta``)."""
    return fund_balance + delta >= 0


# -- StarkEx transition check -------------------------------------------------


def transition_violation(
    before: Account,
    after: Account,
    markets: Mapping[int, Market],
    unsettled: Unsettled = None,
) -> str | None:
    """None when ``after`` is no riskier than ``before`` at the same oracle
    prices, else the name of the broken rule.

    Source: StarkEx Perpetual ``check_valid_transition``
    (services/perpetual/cairo/position/validate_state_transition.cairo), with
    total value TV = equity and total risk TR = maintenance margin:
    1. ``after`` well leveraged (TR <= TV, floored equity): valid;
    2. else every position of ``after`` keeps the sign of ``before``'s in its
       market and does not grow, and no market is new
       (``check_smaller_in_synthetic_holdings``), else
       ``IllegalTransitionEnlargingSyntheticHoldings``;
    3. TV/TR does not fall: ``TV0 * TR1 <= TV1 * TR0`` in integers, else
       ``IllegalTransitionReducingTotalValueRiskRatio``;
    4. if TR0 == 0: ``TV0 <= TV1``, else
       ``IllegalTransitionNoRiskReducedValue``.
    TV0 floors position values; TV1 in rules 3-4 rounds them up (an upper
    bound): a trade's cash rounds against the account by less than one base
    unit per market, and the check forgives exactly that, so a pure reduction
    at the oracle price of an account with equity >= 0 always passes. An
    account with negative equity only passes at prices at least as good as
    its bankruptcy price (closing at the oracle makes its ratio worse).
    """
    tv1 = equity(after, markets, unsettled)
    tr1 = maintenance_margin(after, markets)
    if tr1 <= tv1:
        return None
    held = {p.market: p.size for p in before.positions}
    for p in after.positions:
        s0 = held.get(p.market, 0)
        if s0 * p.size <= 0 or abs(p.size) > abs(s0):
            return ENLARGING_HOLDINGS
    tv0 = equity(before, markets, unsettled)
    tr0 = maintenance_margin(before, markets)
    tv1_upper = after.collateral + sum(
        _value_ceil(markets[p.market], p.size) - _unsettled(unsettled, p)
        for p in after.positions
    )
    if tv0 * tr1 > tv1_upper * tr0:
        return REDUCING_VALUE_RISK_RATIO
    if tr0 == 0 and tv0 > tv1_upper:
        return NO_RISK_REDUCED_VALUE
    return None


def is_valid_transition(
    before: Account,
    after: Account,
    markets: Mapping[int, Market],
    unsettled: Unsettled = None,
) -> bool:
    """``transition_violation(...) is None``: StarkEx's "no riskier"."""
    return transition_violation(before, after, markets, unsettled) is None


# -- auto-deleveraging --------------------------------------------------------


def adl_score(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    unsettled: Unsettled = None,
) -> Fraction | None:
    """The auto-deleveraging rank of the account's position in ``market_id``:
    ``PnL% x effective leverage = (pnl / max(|cost|, 1)) x (|value| /
    equity)``, exact (a Fraction), with pnl = value - cost - unsettled.
    None when the position does not exist, is not in profit, or the
    account's equity is <= 0 (not an offsetting candidate).

    Source: Binance "Auto-Deleveraging" (ranking = PnL percentage x effective
    leverage, profitable positions only); Hyperliquid and Bybit rank by the
    same two factors; dYdX v4 offsets against any opposite position.
    """
    pos = account.position(market_id)
    if pos is None:
        return None
    market = markets[market_id]
    value = position_value(market, pos.size)
    pnl = value - pos.cost - _unsettled(unsettled, pos)
    eq = equity(account, markets, unsettled)
    if pnl <= 0 or eq <= 0:
        return None
    return Fraction(pnl, max(abs(pos.cost), 1)) * Fraction(abs(value), eq)


def deleverage_candidates(
    accounts: Iterable[tuple[bytes, Account]],
    markets: Mapping[int, Market],
    market_id: int,
    liquidated_size: int,
    unsettled: Unsettled = None,
) -> list[bytes]:
    """Addresses (20 bytes) to offset a liquidated position of
    ``liquidated_size`` (signed size units) against, best first: positions
    on the opposite side with an ``adl_score``, highest score first, ties by
    address ascending (deterministic). ``unsettled`` should be a callable
    here (one mapping cannot describe many accounts).
    """
    ranked: list[tuple[Fraction, bytes]] = []
    for address, account in accounts:
        pos = account.position(market_id)
        if pos is None or pos.size * liquidated_size >= 0:
            continue
        score = adl_score(account, markets, market_id, unsettled)
        if score is not None:
            ranked.append((score, address))
    ranked.sort(key=lambda sa: (-sa[0], sa[1]))
    return [address for _, address in ranked]


# -- open interest --------------------------------------------------------------
# oi_scaled_initial_margin_ppm and open_notional live in node/margin.py (the
# STF's initial margin uses them) and are re-exported here.


def open_interest_delta(size: int, delta: int) -> int:
    """The change of a market's open interest (the sum of long sizes, size
    units) when one account's position goes from ``size`` to ``size +
    delta``: ``max(size + delta, 0) - max(size, 0)``. A fill's change is the
    sum over its maker and taker (equal to the change of the shorts' sum,
    since sizes sum to zero)."""
    return max(size + delta, 0) - max(size, 0)


def oi_cap_allows(open_interest_before: int, open_interest_after: int, hard_cap: int) -> bool:
    """True when a fill may move open interest (size units) from before to
    after under a hard cap: no cap (0), at most the cap, or not growing (a
    fill that reduces open interest is always allowed, as dYdX v4's OI caps
    and Hyperliquid's open interest caps only stop new exposure)."""
    return (hard_cap == 0 or open_interest_after <= hard_cap
            or open_interest_after <= open_interest_before)


# -- display --------------------------------------------------------------------


def liquidation_price(
    account: Account,
    markets: Mapping[int, Market],
    market_id: int,
    unsettled: Unsettled = None,
) -> int | None:
    """The oracle price (price units) of ``market_id`` at which the account's
    equity equals its maintenance margin, every other price fixed; for
    display (l2_getAccount, ``derivnet positions``).

    With K = equity - maintenance margin without this position's value and
    margin: ``K + s*P*M/N = |s|*P*M*mmf/(N*PPM)``, so ``P = -K*N*PPM / (M *
    (s*PPM - |s|*mmf))`` (exact, ignoring the per-term rounding).
    Rounded toward liquidation (up for a long, down for a short), so every
    oracle price beyond it (below for a long, above for a short) is
    liquidatable; on the near side the integer check can still liquidate
    where the exact equity - margin is under 2 base units (value floors,
    margin rounds up). None when there is no position or a long cannot be
    liquidated at any price >= 0 (up to that rounding; or its mmf is 100%);
    0 for a short liquidatable at every price > 0.
    """
    pos = account.position(market_id)
    if pos is None:
        return None
    market = markets[market_id]
    s = pos.size
    k = account.collateral - _unsettled(unsettled, pos)
    for p in account.positions:
        if p.market != market_id:
            m_other = markets[p.market]
            k += (position_value(m_other, p.size) - _unsettled(unsettled, p)
                  - margin_requirement(m_other, p.size, m_other.mmf_ppm))
    m, n = _scale(market)
    num = -k * n * PPM
    den = m * (s * PPM - abs(s) * market.mmf_ppm)
    if den == 0:
        return None  # mmf = 100% long: equity - margin does not move with the price
    if s > 0:
        if k >= 0:
            return None
        return _ceil_div(num, den)
    return max(num // den, 0)
