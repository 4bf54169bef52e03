"""sequencer/funding.py: impact prices, the premium against the oracle (dYdX
v4 GetPricePremium), the median, and the FundingSampler's clock; plus
OrderBook.live_levels, which the sampler reads.

ETH-USD with pd = 2, sd = 4: the notional of ``size`` at ``price`` is
``size * price`` USDC base units; 2000.00 USD = 200_000 price units.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.state import Market
from node.transactions import Order
from sequencer.book import OrderBook
from sequencer.funding import (
    FundingSampler,
    book_premium_ppm,
    default_impact_notional,
    impact_price,
    median_ppm,
    premium_ppm,
)

ETH_MARKET = Market(1, 2, 4, 1, 1, 100_000, 50_000, 0, 0, 200_000, 0)
FINE = Market(1, 6, 4, 1, 1, 100_000, 50_000, 0, 0, 2_000_000_000, 0)  # e = 4


def test_default_impact_notional() -> None:
    assert default_impact_notional(50_000) == 10_000_000_000  # 500 USDC / 5% = 10_000 USDC
    assert default_impact_notional(300_000) == 1_666_666_667  # rounded up
    with pytest.raises(ValueError):
        default_impact_notional(0)


def test_impact_price() -> None:
    bids = [(201_000, 10_000), (200_500, 20_000)]
    # 2010 USDC from the first level, 2005 USDC (10_000 units) from the second
    assert impact_price(bids, 4_015_000_000, ETH_MARKET) == 200_750
    assert impact_price(bids, 2_010_000_000, ETH_MARKET) == 201_000  # exactly one level
    assert impact_price(bids, 0, ETH_MARKET) == 201_000  # best price
    assert impact_price(bids, 6_020_000_001, ETH_MARKET) is None  # too thin
    assert impact_price([], 0, ETH_MARKET) is None
    # part of a level, exact: 1000 USDC of 2010 -> 10_000 * 1000/2010 units
    assert impact_price(bids, 1_000_000_000, ETH_MARKET) == 201_000
    mixed = impact_price([(3, 1), (1, 1)], 3, Market(1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0))
    # 3 base units of notional (M = 10^6): 3 / 10^6 of a unit at price 3 -> exactly 3
    assert mixed == 3
    with pytest.raises(ValueError):
        impact_price(bids, -1, ETH_MARKET)


def test_impact_price_with_scaled_notional() -> None:
    # e = 4: notional = size * price / 10^4; 3 units at 2_000_000_000 = 600_000
    assert impact_price([(2_000_000_000, 3), (2_000_000_001, 7)], 600_000, FINE) == 2_000_000_000
    avg = impact_price([(2_000_000_000, 3), (2_000_000_010, 7)], 1_000_000, FINE)
    assert avg is not None and 2_000_000_000 < avg < 2_000_000_010


def test_premium_from_the_bid_side() -> None:
    bids = [(201_000, 10_000), (200_500, 20_000)]
    asks = [(201_500, 10_000)]
    # impact bid 2007.50 vs oracle 2000.00: +0.375% = 3750 ppm
    assert premium_ppm(bids, asks, 200_000, 4_015_000_000, ETH_MARKET) == 3_750
    # impact bid at or under the oracle although the best bid is above: 0
    assert premium_ppm([(200_100, 1_000), (190_000, 100_000)], asks, 200_000,
                       4_015_000_000, ETH_MARKET) == 0
    # too thin: 0
    assert premium_ppm(bids, asks, 200_000, 10**12, ETH_MARKET) == 0


def test_premium_from_the_ask_side() -> None:
    bids = [(198_000, 10_000)]
    asks = [(199_000, 10_000), (199_500, 10_000)]
    # impact ask 1992.50 vs 2000.00: -3750 ppm
    assert premium_ppm(bids, asks, 200_000, 3_985_000_000, ETH_MARKET) == -3_750


def test_premium_zero_inside_the_spread_and_on_empty_books() -> None:
    assert premium_ppm([(199_000, 10)], [(201_000, 10)], 200_000, 0, ETH_MARKET) == 0
    assert premium_ppm([(200_000, 10)], [(201_000, 10)], 200_000, 0, ETH_MARKET) == 0  # at the bid
    assert premium_ppm([], [], 200_000, 0, ETH_MARKET) == 0
    with pytest.raises(ValueError):
        premium_ppm([], [], 0, 0, ETH_MARKET)


def test_premium_truncates_toward_zero_and_clamps() -> None:
    # +1/3 ppm and -1/3 ppm -> 0; 10/3 -> 3; -10/3 -> -3
    assert premium_ppm([(3_000_001, 1)], [], 3_000_000, 0, ETH_MARKET) == 0
    assert premium_ppm([(3_000_010, 1)], [], 3_000_000, 0, ETH_MARKET) == 3
    assert premium_ppm([], [(2_999_990, 1)], 3_000_000, 0, ETH_MARKET) == -3
    assert premium_ppm([(2_000_000, 1)], [], 200_000, 0, ETH_MARKET) == 1_000_000  # +900%
    assert premium_ppm([(2_000_000, 1)], [], 200_000, 0, ETH_MARKET, 5_000) == 5_000


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), min_size=1, max_size=6),
       st.integers(0, 10**12), st.integers(1, 10**6))
def test_premium_matches_the_exact_formula(
    levels: list[tuple[int, int]], notional: int, oracle: int
) -> None:
    bids = sorted({p: s for p, s in levels}.items(), reverse=True)
    premium = premium_ppm(bids, [], oracle, notional, ETH_MARKET)
    impact = impact_price(bids, notional, ETH_MARKET)
    if impact is None or bids[0][0] <= oracle or impact <= oracle:
        assert premium == 0
    else:
        exact = (impact - oracle) * Fraction(10**6, oracle)
        assert 0 <= exact - premium < 1 or premium == 1_000_000


def test_median() -> None:
    assert median_ppm([5]) == 5
    assert median_ppm([3, 1, 2]) == 2
    assert median_ppm([10, 30]) == 20
    assert median_ppm([1, 2]) == 2  # 1.5 -> away from zero
    assert median_ppm([-1, -2]) == -2
    assert median_ppm([-6, 5]) == -1  # -0.5 -> -1
    assert median_ppm([-5, 6]) == 1
    with pytest.raises(ValueError):
        median_ppm([])


def test_sampler_one_sample_per_slot() -> None:
    sampler = FundingSampler(sample_interval=60)
    assert sampler.due(1, 0)
    assert sampler.observe(1, 0, 10)
    assert not sampler.due(1, 59)
    assert not sampler.observe(1, 59, 20)
    assert sampler.observe(1, 60, 30)
    assert sampler.observe(1, 250, 50)  # slot 4; slots 2-3 had no sample
    assert not sampler.observe(1, 100, 70)  # a clock that goes back samples nothing
    assert sampler.observe(2, 100, -7)  # markets are independent
    assert sampler.samples(1) == (10, 30, 50)
    assert sampler.take_premium(1) == 30
    assert sampler.samples(1) == ()
    assert not sampler.observe(1, 299, 1)  # the slot clock survives a tick
    assert sampler.take_premium(1) == 0  # a period with no samples
    assert sampler.take_premium(2) == -7


def test_sampler_pads_to_min_samples() -> None:
    sampler = FundingSampler(sample_interval=1, min_samples=5)
    for t, p in enumerate((100, 200)):
        sampler.observe(1, t, p)
    assert sampler.take_premium(1) == 0  # median of 100, 200, 0, 0, 0
    for t, p in enumerate((100, 200, 300, 400), start=10):
        sampler.observe(1, t, p)
    assert sampler.take_premium(1) == 200  # 100, 200, 300, 400, 0


def test_sampler_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        FundingSampler(0)
    with pytest.raises(ValueError):
        FundingSampler(1, min_samples=-1)
    with pytest.raises(ValueError):
        FundingSampler(1).observe(1, 0, 1_000_001)


# -- from the order book -----------------------------------------------------------

SIG = b"\x00" * 65


def rest(book: OrderBook, account: bytes, is_buy: bool, price: int, size: int, salt: int,
         expiry: int = 10**9) -> None:
    o = Order(account, 1, is_buy, price, size, salt, expiry)
    book.add_resting(o, SIG, hashlib.sha256(o.encode()).digest(), size)


def make_book() -> OrderBook:
    book = OrderBook(1)
    rest(book, b"\x01" * 20, True, 201_000, 6_000, 1)
    rest(book, b"\x02" * 20, True, 201_000, 4_000, 2)
    rest(book, b"\x01" * 20, True, 200_500, 20_000, 3)
    rest(book, b"\x03" * 20, True, 202_000, 50_000, 4, expiry=100)  # expires at 100
    rest(book, b"\x02" * 20, False, 203_000, 10_000, 5)
    return book


def test_live_levels_skip_expired_orders() -> None:
    book = make_book()
    assert list(book.live_levels(True, 0)) == [(202_000, 50_000), (201_000, 10_000),
                                                (200_500, 20_000)]
    assert list(book.live_levels(True, 100)) == [(201_000, 10_000), (200_500, 20_000)]
    assert list(book.live_levels(False, 100)) == [(203_000, 10_000)]
    assert len(book) == 5  # reading changes nothing


def test_book_premium_and_sampler() -> None:
    book = make_book()
    assert book_premium_ppm(book, ETH_MARKET, 100, 4_015_000_000) == 3_750
    # with the expired 2020.00 bid still live: impact bid 2020.00 -> +1%
    assert book_premium_ppm(book, ETH_MARKET, 0, 4_015_000_000) == 10_000
    # default impact notional 500 / 10% = 5000 USDC: 2010 + 2990 of the 2005 level
    expected = int((Fraction(5_000_000_000, 10_000 + Fraction(2_990_000_000, 200_500))
                    - 200_000) * 5)
    assert book_premium_ppm(book, ETH_MARKET, 100) == expected
    sampler = FundingSampler(sample_interval=60)
    assert sampler.sample_book(book, ETH_MARKET, 100, 4_015_000_000) == 3_750
    assert sampler.sample_book(book, ETH_MARKET, 110, 4_015_000_000) is None  # same slot
    no_oracle = Market(1, 2, 4, 1, 1, 100_000, 50_000, 0, 0, 0, 0)
    assert sampler.sample_book(book, no_oracle, 200) is None
    assert sampler.take_premium(1) == 3_750
