"""The sequencer's funding premium sampler (issue 8 item 1, docs/risk.md
"Funding premium").

The STF cannot see the book, so the sequencer measures the premium of the
perp over the oracle from its own book and signs it into ``FundingTick``
transactions (funding spec v1). Here: the premium of one book against the
oracle price from the impact bid / ask (dYdX v4 ``GetPricePremium``), and a
``FundingSampler`` that keeps one sample per market per clock slot and gives
a tick's premium as the median of the samples since the last tick (dYdX v4:
premium votes -> median). Pure apart from the ``now`` the caller passes (unix
seconds); nothing here posts a transaction.

Units: prices in the market's price units, sizes in its size units, money
in USDC base units (1e-6 USDC), premiums in ppm.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from node.margin import PPM
from node.state import Market
from sequencer.book import OrderBook

IMPACT_MARGIN = 500_000_000
"""500 USDC (base units): the impact notional is the position this margin
opens at the market's initial margin fraction (dYdX v4 liquidity tiers:
"10_000 USDC (500 USDC / 5%)")."""

MAX_PREMIUM_PPM = PPM
"""|premium| bound of a FundingTick (funding spec v1: InvalidPremium beyond it)."""


def default_impact_notional(imf_ppm: int) -> int:
    """ceil(IMPACT_MARGIN * 1e6 / imf_ppm), USDC base units (dYdX v4: impact
    notional = 500 USDC / initial margin fraction). Raises ValueError for
    imf_ppm <= 0."""
    if imf_ppm <= 0:
        raise ValueError(f"initial margin fraction must be > 0 ppm, got {imf_ppm}")
    return -((-IMPACT_MARGIN * PPM) // imf_ppm)


def _scale(market: Market) -> tuple[int, int]:
    e = market.price_decimals + market.size_decimals - 6
    return (10**-e, 1) if e <= 0 else (1, 10**e)


def impact_price(
    levels: Iterable[tuple[int, int]], impact_notional: int, market: Market
) -> Fraction | None:
    """The average price (price units, exact) of taking ``impact_notional``
    USDC base units from ``levels`` (one side of the book, best first, as
    ``(price, size)``); the best price when ``impact_notional`` is 0; None
    when the side is empty or too thin to fill it.

    Source: dYdX v4 x/clob memclob ``getImpactPriceSubticks`` (the last
    level is taken in part, pro rata to the notional left; dYdX rounds the
    base size up, we keep it exact and round only the premium).
    Raises ValueError for a negative ``impact_notional``.
    """
    if impact_notional < 0:
        raise ValueError(f"impact notional must be >= 0, got {impact_notional}")
    m, n = _scale(market)
    left = impact_notional * n  # notional still to take, x N (integers throughout)
    whole = 0  # size units of the levels taken whole
    part = Fraction(0)  # size units taken from the last level
    for price, size in levels:
        if impact_notional == 0:
            return Fraction(price)
        full = size * price * m  # the level's exact notional, x N
        if left > full:
            whole += size
            left -= full
        else:
            part = Fraction(size * left, full)
            left = 0
            break
    base = whole + part
    if left > 0 or base == 0:
        return None
    return Fraction(impact_notional * n, m) / base


def _premium_of(impact: Fraction | None, oracle_price: int, above: bool) -> int:
    if impact is None or (impact <= oracle_price if above else impact >= oracle_price):
        return 0
    ratio = (impact - oracle_price) * PPM / oracle_price
    return int(ratio)  # int() truncates toward zero


def premium_ppm(
    bids: Iterable[tuple[int, int]],
    asks: Iterable[tuple[int, int]],
    oracle_price: int,
    impact_notional: int,
    market: Market,
    max_abs_ppm: int = MAX_PREMIUM_PPM,
) -> int:
    """The premium of the book over the oracle, ppm, truncated toward zero and
    clamped to ``+-max_abs_ppm``:
    ``(impact_bid - oracle) / oracle`` when the oracle is below the best bid
    and the impact bid, ``(impact_ask - oracle) / oracle`` when it is above
    the best ask and the impact ask, else 0 (also when the side is too thin).

    bids / asks: ``(price, size)`` levels best first (``OrderBook.live_levels``).
    Source: dYdX v4 x/clob memclob ``GetPricePremium`` /
    ``getPricePremiumFromSide``. Raises ValueError for oracle_price <= 0.
    """
    if oracle_price <= 0:
        raise ValueError(f"oracle price must be > 0, got {oracle_price}")
    bid_iter = iter(bids)
    ask_iter = iter(asks)
    best_bid = next(bid_iter, None)
    best_ask = next(ask_iter, None)
    premium = 0
    if best_bid is not None and oracle_price < best_bid[0]:
        impact = impact_price(_chain(best_bid, bid_iter), impact_notional, market)
        premium = _premium_of(impact, oracle_price, above=True)
    elif best_ask is not None and oracle_price > best_ask[0]:
        impact = impact_price(_chain(best_ask, ask_iter), impact_notional, market)
        premium = _premium_of(impact, oracle_price, above=False)
    return max(-max_abs_ppm, min(max_abs_ppm, premium))


def _chain(
    first: tuple[int, int], rest: Iterable[tuple[int, int]]
) -> Iterable[tuple[int, int]]:
    yield first
    yield from rest


def book_premium_ppm(
    book: OrderBook, market: Market, now: int, impact_notional: int | None = None
) -> int:
    """``premium_ppm`` of ``book`` (orders live at ``now`` only) against
    ``market.oracle_price``; impact notional defaults to
    ``default_impact_notional(market.imf_ppm)``. Does not change the book.
    Raises ValueError when the market has no oracle price yet."""
    if impact_notional is None:
        impact_notional = default_impact_notional(market.imf_ppm)
    return premium_ppm(
        book.live_levels(True, now),
        book.live_levels(False, now),
        market.oracle_price,
        impact_notional,
        market,
    )


def median_ppm(values: Iterable[int]) -> int:
    """The median; of an even count, the mean of the middle two rounded half
    away from zero (dYdX v4 lib ``Median``). Raises ValueError when empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    total = ordered[mid - 1] + ordered[mid]
    half = (abs(total) + 1) // 2
    return half if total >= 0 else -half


class FundingSampler:
    """Premium samples per market, at most one per clock slot of
    ``sample_interval`` seconds (slot = now // sample_interval, so samples
    fall on a fixed grid whatever the call times); ``take_premium`` gives
    the next FundingTick's premium and starts a new period.

    min_samples: a period with fewer samples is padded with zero premiums
    up to this many before the median (dYdX v4 ``processStoredPremiums``
    padding: a sequencer that sampled little cannot move the rate far).
    Raises ValueError for sample_interval <= 0 or min_samples < 0.
    """

    def __init__(self, sample_interval: int, min_samples: int = 0) -> None:
        if sample_interval <= 0:
            raise ValueError(f"sample interval must be > 0 s, got {sample_interval}")
        if min_samples < 0:
            raise ValueError(f"min_samples must be >= 0, got {min_samples}")
        self.sample_interval = sample_interval
        self.min_samples = min_samples
        self._samples: dict[int, list[int]] = {}
        self._last_slot: dict[int, int] = {}

    def due(self, market: int, now: int) -> bool:
        """True when ``market`` has no sample yet in the slot of ``now``."""
        last = self._last_slot.get(market)
        return last is None or now // self.sample_interval > last

    def observe(self, market: int, now: int, premium: int) -> bool:
        """Record ``premium`` (ppm) for ``market`` if a sample is due at
        ``now``; returns whether it was recorded. Raises ValueError when
        ``|premium| > 1e6`` (a FundingTick could not carry it)."""
        if abs(premium) > MAX_PREMIUM_PPM:
            raise ValueError(f"premium {premium} ppm beyond +-{MAX_PREMIUM_PPM}")
        if not self.due(market, now):
            return False
        self._last_slot[market] = now // self.sample_interval
        self._samples.setdefault(market, []).append(premium)
        return True

    def sample_book(
        self, book: OrderBook, market: Market, now: int, impact_notional: int | None = None
    ) -> int | None:
        """If a sample is due and the market has an oracle price, measure
        ``book_premium_ppm`` and record it; returns it, or None when nothing
        was sampled."""
        if not self.due(market.id, now) or market.oracle_price <= 0:
            return None
        premium = book_premium_ppm(book, market, now, impact_notional)
        self.observe(market.id, now, premium)
        return premium

    def samples(self, market: int) -> tuple[int, ...]:
        """The samples of the current period, oldest first."""
        return tuple(self._samples.get(market, ()))

    def take_premium(self, market: int) -> int:
        """The period's premium (ppm): the median of its samples padded with
        zeros up to ``min_samples`` (0 with no samples); then the period's
        samples are dropped (the slot clock is kept: no second sample in
        the same slot)."""
        values = self._samples.pop(market, [])
        values += [0] * (self.min_samples - len(values))
        return median_ppm(values) if values else 0
