"""node/risk.py: hand-computed examples for every formula (docs/risk.md's
worked examples), the boundaries, and a few bounded hypothesis properties.

The examples use ETH-USD with pd = 2, sd = 4 (value = size * price USDC
base units), imf 10%, mmf 5%: 1 ETH = 10_000 size units, 2000.00 USD =
200_000 price units, 1 USDC = 1_000_000.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import risk
from node.margin import maintenance_margin, notional, position_value, trade_position
from node.state import Account, Market, Position

USDC = 1_000_000
ETH = 10_000


def eth(oracle: int, mmf: int = 50_000) -> Market:
    return Market(1, 2, 4, 1, 1, 100_000, mmf, 0, 0, oracle, 0)


def long_1eth() -> Account:
    """100 USDC deposited, bought 1 ETH at 2000: bankrupt at 1900, at MM at 2000."""
    return Account(-1_900 * USDC, 0, (Position(1, ETH, 2_000 * USDC),))


def short_1eth() -> Account:
    """100 USDC deposited, sold 1 ETH at 2000: bankrupt at 2100, at MM at 2000."""
    return Account(2_100 * USDC, 0, (Position(1, -ETH, -2_000 * USDC),))


def traded(account: Account, market: Market, delta: int, price: int) -> Account:
    """The account after trading ``delta`` at ``price`` with no fees (the Fill rules)."""
    pos = account.position(market.id)
    buyer_pays, seller_gets = notional(market, abs(delta), price)
    cash = -buyer_pays if delta > 0 else seller_gets
    return account.traded(cash, trade_position(pos, market.id, delta, -cash))


# -- liquidatable, equity, margin ratio ------------------------------------------


def test_liquidatable_boundary_exactly_at_maintenance_margin() -> None:
    # long: equity 100 USDC == mm 5% of 2000 USDC: not liquidatable
    assert risk.equity(long_1eth(), {1: eth(200_000)}) == 100 * USDC
    assert maintenance_margin(long_1eth(), {1: eth(200_000)}) == 100 * USDC
    assert not risk.liquidatable(long_1eth(), {1: eth(200_000)})
    # one price unit lower: equity 99.99 < mm 99.9995 USDC
    assert risk.liquidatable(long_1eth(), {1: eth(199_999)})
    # short mirrors it
    assert not risk.liquidatable(short_1eth(), {1: eth(200_000)})
    assert risk.liquidatable(short_1eth(), {1: eth(200_001)})


def test_unsettled_funding_counts_in_equity() -> None:
    ms = {1: eth(200_000)}
    assert risk.equity(long_1eth(), ms, {1: 1}) == 100 * USDC - 1
    assert risk.liquidatable(long_1eth(), ms, {1: 1})
    assert risk.liquidatable(long_1eth(), ms, lambda p: 1)
    assert not risk.liquidatable(long_1eth(), ms, {1: -1})  # receiving funding


def test_no_position_is_never_liquidatable() -> None:
    assert not risk.liquidatable(Account(-5, 0, ()), {1: eth(200_000)})


def test_margin_ratio() -> None:
    assert risk.margin_ratio_ppm(long_1eth(), {1: eth(200_000)}) == 1_000_000
    # mm 99.5 / equity 90 = 1.10555...: rounded up
    assert risk.margin_ratio_ppm(long_1eth(), {1: eth(199_000)}) == 1_105_556
    assert risk.margin_ratio_ppm(long_1eth(), {1: eth(190_000)}) is None  # equity 0
    assert risk.margin_ratio_ppm(Account(5, 0, ()), {1: eth(200_000)}) == 0


# -- bankruptcy ---------------------------------------------------------------


def test_bankruptcy_full_close_long_and_short() -> None:
    for oracle in (199_000, 190_000, 180_000):  # equity 90, 0, -100 USDC
        ms = {1: eth(oracle)}
        assert risk.bankruptcy_quote(long_1eth(), ms, 1, -ETH) == 1_900 * USDC
        assert risk.bankruptcy_price(long_1eth(), ms, 1, -ETH) == 190_000
    ms = {1: eth(220_000)}  # short equity -100 USDC
    assert risk.bankruptcy_quote(short_1eth(), ms, 1, ETH) == -2_100 * USDC
    assert risk.bankruptcy_price(short_1eth(), ms, 1, ETH) == 210_000
    assert risk.deleverage_price(short_1eth(), ms, 1, ETH) == 210_000


def test_bankruptcy_full_close_leaves_zero_size_and_zero_equity() -> None:
    ms = {1: eth(180_000)}
    after = traded(long_1eth(), ms[1], -ETH, 190_000)
    assert after.positions == ()
    assert risk.equity(after, ms) == 0


def test_bankruptcy_partial_close_keeps_the_ratio() -> None:
    ms = {1: eth(180_000)}  # equity -100, mm 90
    assert risk.bankruptcy_quote(long_1eth(), ms, 1, -ETH // 2) == 950 * USDC
    after = traded(long_1eth(), ms[1], -ETH // 2, 190_000)
    assert risk.equity(after, ms) == -50 * USDC
    assert maintenance_margin(after, ms) == 45 * USDC
    assert risk.is_valid_transition(long_1eth(), after, ms)


def test_bankruptcy_rejects_non_reductions() -> None:
    ms = {1: eth(180_000)}
    for delta in (0, ETH, -ETH - 1):  # nothing, an increase, a flip
        with pytest.raises(ValueError):
            risk.bankruptcy_quote(long_1eth(), ms, 1, delta)
    with pytest.raises(ValueError):
        risk.bankruptcy_quote(Account(5, 0, ()), ms, 1, -1)
    with pytest.raises(ValueError):  # oracle price 0: no maintenance margin
        risk.bankruptcy_quote(long_1eth(), {1: eth(0)}, 1, -ETH)


def test_price_for_cash_rounds_for_the_trader() -> None:
    m = Market(1, 6, 4, 1, 1, 100_000, 50_000, 0, 0, 1, 0)  # e = 4: value = size*price/10^4
    # sell 3 for >= 100 received: floor(3P/10^4) >= 100 -> P = ceil(10^6/3) = 333_334
    assert risk.price_for_cash(m, -3, 100) == 333_334
    assert notional(m, 3, 333_334)[1] == 100
    assert notional(m, 3, 333_333)[1] == 99
    # buy 3 paying <= 100: ceil(3P/10^4) <= 100 -> P = floor(10^6/3) = 333_333
    assert risk.price_for_cash(m, 3, -100) == 333_333
    assert notional(m, 3, 333_333)[0] == 100
    assert risk.price_for_cash(m, -3, -5) == 0  # clamped
    with pytest.raises(ValueError):
        risk.price_for_cash(m, 0, 1)


# -- fillable price -----------------------------------------------------------


def test_fillable_price() -> None:
    ba, smmr = 1_000_000, 1_500_000
    # equity <= 0: ABR = 1, full spread 1.5 x 5% = 7.5% below the oracle
    assert risk.fillable_price(long_1eth(), {1: eth(180_000)}, 1, ba, smmr) == 166_500
    # equity 90, mm 99.5: ABR = 9.5/99.5, spread = 1.5 x 9.5 USDC = 14.25 USDC = 1425 units
    assert risk.fillable_price(long_1eth(), {1: eth(199_000)}, 1, ba, smmr) == 197_575
    # at maintenance margin: ABR = 0, the oracle
    assert risk.fillable_price(long_1eth(), {1: eth(200_000)}, 1, ba, smmr) == 200_000
    # short at 2200 (equity -100): 7.5% above
    assert risk.fillable_price(short_1eth(), {1: eth(220_000)}, 1, ba, smmr) == 236_500
    assert risk.within_fillable(ETH, 166_500, 166_500)
    assert not risk.within_fillable(ETH, 166_499, 166_500)
    assert risk.within_fillable(-ETH, 236_500, 236_500)
    assert not risk.within_fillable(-ETH, 236_501, 236_500)


def test_fillable_price_rounds_for_the_liquidated() -> None:
    # equity 90, mm 99.5 as above but spread 1 ppm: offset 0.0095 units
    assert risk.fillable_price(long_1eth(), {1: eth(199_000)}, 1, 1_000_000, 1) == 199_000
    short = Account(2_100 * USDC - 1, 0, (Position(1, -ETH, -2_000 * USDC),))
    assert risk.fillable_price(short, {1: eth(201_000)}, 1, 1_000_000, 1) == 201_000


# -- liquidation fee, insurance fund -------------------------------------------


def test_insurance_fund_delta() -> None:
    bq = 1_900 * USDC  # bankruptcy cash of closing the long
    # fill at 1975.75: surplus 75.75 USDC, fee 1.5% of 1975.75 = 29.63625 USDC
    assert risk.insurance_fund_delta(1_975_750_000, bq, 15_000) == 29_636_250
    # fill at 1905: surplus 5 USDC caps the fee
    assert risk.insurance_fund_delta(1_905 * USDC, bq, 15_000) == 5 * USDC
    assert risk.insurance_fund_delta(bq, bq, 15_000) == 0  # at bankruptcy
    assert risk.insurance_fund_delta(1_890 * USDC, bq, 15_000) == -10 * USDC  # fund pays
    # a short buying back: cash negative
    assert risk.insurance_fund_delta(-2_090 * USDC, -2_100 * USDC, 1_000) == 2_090_000
    # fee rounds up
    assert risk.liquidation_fee(1, 1, 10) == 1
    assert risk.liquidation_fee(1_000, 15_000, -3) == 0


def test_fund_exactly_empty() -> None:
    assert risk.fund_covers(10 * USDC, -10 * USDC)  # leaves it exactly empty
    assert not risk.fund_covers(10 * USDC - 1, -10 * USDC)
    assert risk.fund_covers(0, 0)
    assert not risk.fund_covers(0, -1)


# -- StarkEx transition -------------------------------------------------------


def test_transition_well_leveraged_after_is_valid() -> None:
    ms = {1: eth(199_000)}
    after = traded(long_1eth(), ms[1], -ETH // 2, 199_000)
    assert risk.transition_violation(long_1eth(), after, ms) is None


def test_transition_rejects_size_increase_and_flip() -> None:
    ms = {1: eth(199_000)}
    for delta in (ETH // 5, -4 * ETH):  # an increase, a flip to a larger short
        after = traded(long_1eth(), ms[1], delta, 199_000)
        assert risk.transition_violation(long_1eth(), after, ms) == risk.ENLARGING_HOLDINGS
    other = Account(long_1eth().collateral, 0, (*long_1eth().positions, Position(2, 1, 0)))
    ms2 = {1: eth(199_000), 2: Market(2, 2, 4, 1, 1, 100_000, 50_000, 0, 0, 100, 0)}
    assert risk.transition_violation(long_1eth(), other, ms2) == risk.ENLARGING_HOLDINGS


def test_transition_ratio_rule() -> None:
    ms = {1: eth(180_000)}  # equity -100, mm 90
    at_bankruptcy = traded(long_1eth(), ms[1], -ETH // 2, 190_000)
    assert risk.is_valid_transition(long_1eth(), at_bankruptcy, ms)
    worse = traded(long_1eth(), ms[1], -ETH // 2, 189_999)
    assert risk.transition_violation(long_1eth(), worse, ms) == risk.REDUCING_VALUE_RISK_RATIO
    at_oracle = traded(long_1eth(), ms[1], -ETH // 2, 180_000)  # negative equity: worse ratio
    assert risk.transition_violation(long_1eth(), at_oracle, ms) == risk.REDUCING_VALUE_RISK_RATIO
    closed_at_oracle = traded(long_1eth(), ms[1], -ETH, 180_000)  # fund must cover
    assert not risk.is_valid_transition(long_1eth(), closed_at_oracle, ms)


def test_transition_no_risk_reduced_value() -> None:
    ms = {1: eth(180_000)}
    before, after = Account(-5, 0, ()), Account(-6, 0, ())
    assert risk.transition_violation(before, after, ms) == risk.NO_RISK_REDUCED_VALUE
    assert risk.is_valid_transition(after, before, ms)


# -- deleveraging -------------------------------------------------------------


def test_deleverage_candidates_ranking() -> None:
    ms = {1: eth(180_000)}
    s1 = Account(2_100 * USDC, 0, (Position(1, -ETH, -2_000 * USDC),))  # pnl 200, eq 300: 0.1 x 6
    s2 = Account(1_200 * USDC, 0, (Position(1, -ETH // 2, -1_000 * USDC),))  # 0.1 x 3
    s3 = Account(1_900 * USDC, 0, (Position(1, -ETH, -1_700 * USDC),))  # in loss
    lng = Account(0, 0, (Position(1, ETH, 0),))  # same side as the liquidated
    flat = Account(10, 0, ())
    accounts = [(b"\x05" * 20, s2), (b"\x01" * 20, s3), (b"\x02" * 20, lng),
                (b"\x03" * 20, s1), (b"\x04" * 20, s2), (b"\x00" * 20, flat)]
    assert risk.adl_score(s1, ms, 1) == Fraction(6, 10)
    assert risk.adl_score(s2, ms, 1) == Fraction(3, 10)
    assert risk.adl_score(s3, ms, 1) is None
    ranked = risk.deleverage_candidates(accounts, ms, 1, ETH)
    assert ranked == [b"\x03" * 20, b"\x04" * 20, b"\x05" * 20]
    assert risk.deleverage_candidates(accounts, ms, 1, -ETH) == [b"\x02" * 20]


# -- open interest ------------------------------------------------------------


def test_oi_scaled_initial_margin() -> None:
    lo, hi = 20_000_000 * USDC, 50_000_000 * USDC
    assert risk.oi_scaled_initial_margin_ppm(50_000, 0, lo, hi) == 50_000
    assert risk.oi_scaled_initial_margin_ppm(50_000, lo, lo, hi) == 50_000
    assert risk.oi_scaled_initial_margin_ppm(50_000, 35_000_000 * USDC, lo, hi) == 525_000
    assert risk.oi_scaled_initial_margin_ppm(50_000, hi, lo, hi) == 1_000_000
    assert risk.oi_scaled_initial_margin_ppm(50_000, 10 * hi, lo, hi) == 1_000_000
    assert risk.oi_scaled_initial_margin_ppm(50_000, 10 * hi, lo, 0) == 50_000  # disabled
    assert risk.oi_scaled_initial_margin_ppm(0, 1, 0, 3) == 333_334  # rounded up
    with pytest.raises(ValueError):
        risk.oi_scaled_initial_margin_ppm(50_000, 40, 50, 30)
    with pytest.raises(ValueError):
        risk.oi_scaled_initial_margin_ppm(1_000_001, 0, 0, 0)


def test_open_interest_helpers() -> None:
    # a fill: maker long 2 -> 5 (+3), taker short -1 -> -4: OI grows by 3
    assert risk.open_interest_delta(2, 3) + risk.open_interest_delta(-1, -3) == 3
    # a flip: long 2 sells 5 -> short 3 (-2); buyer short -3 -> long 2 (+2): OI unchanged
    assert risk.open_interest_delta(2, -5) + risk.open_interest_delta(-3, 5) == 0
    assert risk.open_interest_delta(0, -4) == 0
    assert risk.open_notional(eth(200_000), 3 * ETH) == 6_000 * USDC
    fine = Market(1, 6, 4, 1, 1, 100_000, 50_000, 0, 0, 3, 0)  # e = 4
    assert risk.open_notional(fine, 1) == 1  # 3 / 10^4 rounded up
    assert risk.oi_cap_allows(10, 20, 0)
    assert risk.oi_cap_allows(10, 20, 20)
    assert not risk.oi_cap_allows(10, 21, 20)
    assert risk.oi_cap_allows(30, 25, 20)  # over the cap but shrinking


# -- liquidation price ----------------------------------------------------------


def test_liquidation_price() -> None:
    ms = {1: eth(210_000)}
    assert risk.liquidation_price(long_1eth(), ms, 1) == 200_000
    assert risk.liquidation_price(short_1eth(), ms, 1) == 200_000
    # a long with more collateral than its position: never liquidatable
    safe = Account(10 * USDC, 0, (Position(1, ETH, 0),))
    assert risk.liquidation_price(safe, ms, 1) is None
    # a short with no collateral: at every positive price
    broke = Account(-1, 0, (Position(1, -ETH, 0),))
    assert risk.liquidation_price(broke, ms, 1) == 0
    assert risk.liquidation_price(long_1eth(), ms, 2) is None
    # rounded toward liquidation: 1.9e9 + 1 over 9.5e9 -> up for the long
    poorer = Account(-1_900 * USDC - 1, 0, long_1eth().positions)
    assert risk.liquidation_price(poorer, ms, 1) == 200_001
    # other positions count at their values and margins
    two = Account(-1_900 * USDC - 95 * USDC, 0, (Position(1, ETH, 0), Position(2, ETH, 0)))
    ms2 = {1: eth(200_000), 2: Market(2, 2, 4, 1, 1, 100_000, 50_000, 0, 0, 10_000, 0)}
    # market 2: value 100 USDC, mm 5 USDC -> K = -1995 + 100 - 5 = -1900 USDC
    assert risk.liquidation_price(two, ms2, 1) == 200_000


# -- properties (bounded) ---------------------------------------------------------

markets_st = st.builds(
    lambda pd, sd, mmf, oracle: Market(1, pd, sd, 1, 1, min(2 * mmf, 1_000_000), mmf, 0, 0,
                                       oracle, 0),
    st.integers(0, 9), st.integers(0, 9),
    st.one_of(st.sampled_from((10_000, 30_000, 50_000, 150_000)), st.integers(1, 300_000)),
    st.integers(1_000, 10**9),
)


@st.composite
def accounts_st(draw: st.DrawFn) -> tuple[Market, Account]:
    """One position whose equity is -2..+2 maintenance margin fractions of its value."""
    market = draw(markets_st)
    size = draw(st.integers(1, 10**8)) * draw(st.sampled_from((1, -1)))
    value = position_value(market, size)
    ratio = draw(st.integers(-2 * market.mmf_ppm, 2 * market.mmf_ppm))
    eq = abs(value) * ratio // 1_000_000 + draw(st.integers(-3, 3))
    return market, Account(eq - value, 0, (Position(1, size, 0),))


@settings(max_examples=100, deadline=None)
@given(accounts_st(), st.sampled_from((0, 500_000, 1_000_000, 2_000_000)),
       st.one_of(st.sampled_from((100_000, 1_500_000)), st.integers(1, 2_000_000)))
def test_fillable_price_never_worse_than_the_bound(
    ma: tuple[Market, Account], ba: int, smmr: int
) -> None:
    market, account = ma
    size = account.positions[0].size
    ms = {1: market}
    if maintenance_margin(account, ms) == 0:
        return
    fp = risk.fillable_price(account, ms, 1, ba, smmr)
    # the exact (rational) dYdX bound, PNNV = size * oracle exactly
    tnc = risk.equity(account, ms)
    tmmr = maintenance_margin(account, ms)
    abr = min(max(Fraction(ba, 1_000_000) * (1 - Fraction(tnc, tmmr)), Fraction(0)), Fraction(1))
    per_unit = Fraction(10**6, 10 ** (market.price_decimals + market.size_decimals))
    spread = abr * Fraction(smmr, 1_000_000) * tmmr  # single position: PMMR = TMMR
    exact = market.oracle_price - spread / (per_unit * size)
    if size > 0:
        assert fp >= exact and (fp - exact < 1 or exact < 0)
        assert fp <= market.oracle_price
    else:
        assert fp <= exact and exact - fp < 1
        assert fp >= market.oracle_price


@settings(max_examples=100, deadline=None)
@given(accounts_st(), st.integers(1, 10**8))
def test_closing_at_the_bankruptcy_price_leaves_zero_equity(
    ma: tuple[Market, Account], close: int
) -> None:
    market, account = ma
    size = account.positions[0].size
    ms = {1: market}
    if maintenance_margin(account, ms) == 0:
        return
    # full close at the exact bankruptcy cash: equity exactly 0
    quote = risk.bankruptcy_quote(account, ms, 1, -size)
    assert account.collateral + quote == 0
    # at the bankruptcy price: 0 <= equity <= notional of one price unit of |size| + 1
    price = risk.bankruptcy_price(account, ms, 1, -size)
    after = traded(account, market, -size, price)
    assert after.positions == ()
    one_unit = notional(market, abs(size), 1)[0]
    if price > 0:
        assert 0 <= risk.equity(after, ms) <= one_unit + 1
    # a partial close at the bankruptcy cash keeps the account no riskier
    delta = -size * min(close, abs(size)) // abs(size)
    quote = risk.bankruptcy_quote(account, ms, 1, delta)
    partial = account.traded(quote, trade_position(account.positions[0], 1, delta, -quote))
    assert risk.is_valid_transition(account, partial, ms)


@settings(max_examples=100, deadline=None)
@given(accounts_st(), st.integers(1, 10**8))
def test_transition_accepts_reductions_and_rejects_increases(
    ma: tuple[Market, Account], change: int
) -> None:
    market, account = ma
    size = account.positions[0].size
    ms = {1: market}
    sign = 1 if size > 0 else -1
    reduced = traded(account, market, -sign * min(change, abs(size)), market.oracle_price)
    if risk.equity(account, ms) >= 0:
        assert risk.is_valid_transition(account, reduced, ms)
    if risk.liquidatable(account, ms):
        grown = traded(account, market, sign * change, market.oracle_price)
        assert risk.transition_violation(account, grown, ms) == risk.ENLARGING_HOLDINGS


@settings(max_examples=100, deadline=None)
@given(accounts_st())
def test_bankruptcy_price_is_the_nearest_price(ma: tuple[Market, Account]) -> None:
    market, account = ma
    size = account.positions[0].size
    ms = {1: market}
    if maintenance_margin(account, ms) == 0:
        return
    quote = risk.bankruptcy_quote(account, ms, 1, -size)
    price = risk.bankruptcy_price(account, ms, 1, -size)
    buyer_pays, seller_gets = notional(market, abs(size), price)
    if size > 0:  # the long sells: the lowest price that receives the quote
        assert seller_gets >= quote or price == 0
        if price > 0:
            assert notional(market, size, price - 1)[1] < quote
    else:  # the short buys: the highest price that pays at most -quote
        assert -buyer_pays >= quote or price == 0
        assert -notional(market, -size, price + 1)[0] < quote


@settings(max_examples=100, deadline=None)
@given(accounts_st(), st.integers(0, 10**6), st.integers(0, 50_000))
def test_liquidation_with_the_fund_never_leaves_negative_equity(
    ma: tuple[Market, Account], better: int, fee_ppm: int
) -> None:
    """Close the whole position at any price within the fillable bound and
    apply the insurance fund delta: the account ends with equity >= 0, exactly 0
    when the fund paid, and money is conserved (fund + account change == cash)."""
    market, account = ma
    size = account.positions[0].size
    ms = {1: market}
    if not risk.liquidatable(account, ms):
        return
    bound = risk.fillable_price(account, ms, 1, 1_000_000, 1_500_000)
    price = bound + better if size > 0 else max(bound - better, 0)
    assert risk.within_fillable(size, price, bound)
    after = traded(account, market, -size, price)
    cash = after.collateral - account.collateral
    bq = risk.bankruptcy_quote(account, ms, 1, -size)
    delta = risk.insurance_fund_delta(cash, bq, fee_ppm)
    settled = Account(after.collateral - delta, 0, after.positions)
    assert after.positions == ()
    assert risk.equity(settled, ms) >= 0
    if delta < 0:
        assert risk.equity(settled, ms) == 0
    assert (settled.collateral - account.collateral) + delta == cash


@settings(max_examples=100, deadline=None)
@given(accounts_st(), st.integers(1, 10**6))
def test_liquidation_price_bounds_the_liquidatable_prices(
    ma: tuple[Market, Account], step: int
) -> None:
    """Every oracle price beyond the liquidation price (below it for a long,
    above for a short) is liquidatable; on the other side, every price where
    the exact equity - margin is >= 2 base units (the integer rounding) is not."""
    market, account = ma
    size = account.positions[0].size
    lp = risk.liquidation_price(account, {1: market}, 1)

    def at(price: int) -> bool:
        m = Market(1, market.price_decimals, market.size_decimals, 1, 1, market.imf_ppm,
                   market.mmf_ppm, 0, 0, price, 0)
        return risk.liquidatable(account, {1: m})

    # slope of (equity - margin) per price unit, exact; 2 base units of rounding
    slope = Fraction(abs(size) * 10**6, 10 ** (market.price_decimals + market.size_decimals))
    slope *= Fraction(10**6 - market.mmf_ppm if size > 0 else 10**6 + market.mmf_ppm, 10**6)
    far = int(2 / slope) + 1
    if size > 0:
        if lp is None:  # K >= 0: only the rounding of tiny values can liquidate it
            assert not at(far + step)
            return
        if lp > 1:
            assert at(max(lp - step, 1))
        assert not at(lp + far + step)
    else:
        assert lp is not None
        assert at(lp + step)
        if lp - far - step > 0:
            assert not at(lp - far - step)


@settings(max_examples=100, deadline=None)
@given(accounts_st(), accounts_st(), st.integers(1, 10**8))
def test_two_markets_bankruptcy_and_reduction_are_no_riskier(
    ma1: tuple[Market, Account], ma2: tuple[Market, Account], close: int
) -> None:
    """With a second position held fixed: a close at the bankruptcy cash keeps
    E / MM, and a pure reduction at the oracle of an account with E >= 0 passes."""
    m1, a1 = ma1
    m2, a2 = ma2
    m2 = Market(2, m2.price_decimals, m2.size_decimals, 1, 1, m2.imf_ppm, m2.mmf_ppm, 0, 0,
                m2.oracle_price, 0)
    p2 = a2.positions[0]
    account = Account(a1.collateral + a2.collateral, 0,
                      (a1.positions[0], Position(2, p2.size, p2.cost)))
    ms = {1: m1, 2: m2}
    if maintenance_margin(account, ms) == 0:
        return
    size = account.positions[0].size
    delta = -size * min(close, abs(size)) // abs(size)
    quote = risk.bankruptcy_quote(account, ms, 1, delta)
    at_bk = account.traded(quote, trade_position(account.positions[0], 1, delta, -quote))
    assert risk.is_valid_transition(account, at_bk, ms)
    reduced = traded(account, m1, delta, m1.oracle_price)
    if risk.equity(account, ms) >= 0:
        assert risk.is_valid_transition(account, reduced, ms)


def test_liquidation_then_deleverage_flow() -> None:
    """docs/risk.md "Putting it together": the checks in the order a Liquidate
    and a Deleverage will make them, on the worked examples."""
    # liquidation through the book at the fillable price: the fund earns the fee
    ms = {1: eth(199_000)}
    account = long_1eth()
    assert risk.liquidatable(account, ms)
    assert risk.is_reduction(ETH, -ETH)
    bound = risk.fillable_price(account, ms, 1, 1_000_000, 1_500_000)
    assert bound == 197_575 and risk.within_fillable(ETH, 197_575, bound)
    after = traded(account, ms[1], -ETH, 197_575)
    delta = risk.insurance_fund_delta(after.collateral - account.collateral,
                                      risk.bankruptcy_quote(account, ms, 1, -ETH), 15_000)
    assert delta == 29_636_250 and risk.fund_covers(0, delta)
    after = Account(after.collateral - delta, 0, after.positions)
    assert after == Account(46_113_750, 0, ())
    assert risk.is_valid_transition(account, after, ms)

    # at 1800 the same fill would need 235 USDC from an empty fund: deleverage
    ms = {1: eth(180_000)}
    bound = risk.fillable_price(account, ms, 1, 1_000_000, 1_500_000)
    cash = notional(ms[1], ETH, bound)[1]
    delta = risk.insurance_fund_delta(cash, risk.bankruptcy_quote(account, ms, 1, -ETH), 15_000)
    assert (bound, delta) == (166_500, -235 * USDC)
    assert not risk.fund_covers(0, delta)
    s1 = Account(2_100 * USDC, 0, (Position(1, -ETH, -2_000 * USDC),))
    s2 = Account(1_200 * USDC, 0, (Position(1, -ETH // 2, -1_000 * USDC),))
    ranked = risk.deleverage_candidates([(b"\x02" * 20, s2), (b"\x01" * 20, s1)], ms, 1, ETH)
    assert ranked[0] == b"\x01" * 20
    price = risk.deleverage_price(account, ms, 1, -ETH)
    assert price == 190_000
    liquidated_after = traded(account, ms[1], -ETH, price)
    offset_after = traded(s1, ms[1], ETH, price)
    assert liquidated_after == Account(0, 0, ())
    assert offset_after == Account(200 * USDC, 0, ())  # 100 USDC of its 300 went to the bad debt
    assert risk.is_valid_transition(account, liquidated_after, ms)
    assert risk.is_valid_transition(s1, offset_after, ms)
