"""Funding formulas: pure integer functions (docs/protocol.md, "Funding").

A market keeps a cumulative funding index (price units x ppm); a FundingTick
advances it by an 8-hour rate pro-rated over the time since the last tick,
and every position remembers the index it last settled at, paying (or
receiving) ``size x index change / 10^(pd+sd)`` USDC base units when it is
next touched.

Sources:
- dYdX v4, x/perpetuals (``funding.go``, ``GetSettlementPpm``): the rate is
  premium + default funding, clamped to ``clamp factor x (imf - mmf)``; an
  8-hour rate is pro-rated by elapsed time; the index moves by
  ``rate x oracle price x elapsed / period``.
- StarkEx Perpetual (``FundingTick``, ``funding_index`` per asset, cached per
  position as ``cached_funding_index``): settled lazily when a position is
  touched.
"""

from __future__ import annotations

PPM = 1_000_000
FUNDING_PERIOD = 28_800  # seconds: the rate is an 8-hour rate
DEFAULT_FUNDING_PPM = 100  # 0.01% per 8 h: the interest component of premium + interest funding
FUNDING_CLAMP_FACTOR = 6  # dYdX v4 liquidity tiers: |rate| <= 600% x (imf - mmf) per 8 h
MAX_FUNDING_ELAPSED = 28_800  # seconds: one tick pays for at most one period
MAX_PREMIUM_PPM = PPM  # |premium_ppm| above this is InvalidPremium


def rate_cap(imf_ppm: int, mmf_ppm: int) -> int:
    """The largest |8-hour rate| in ppm: FUNDING_CLAMP_FACTOR x (imf - mmf)
    (dYdX v4 ``funding_rate_clamp_factor_ppm`` x (initial - maintenance))."""
    return FUNDING_CLAMP_FACTOR * (imf_ppm - mmf_ppm)


def funding_rate(premium_ppm: int, imf_ppm: int, mmf_ppm: int) -> int:
    """The 8-hour funding rate in ppm: premium + DEFAULT_FUNDING_PPM clamped
    to [-cap, cap], cap = ``rate_cap(imf, mmf)``. Positive: longs pay shorts."""
    cap = rate_cap(imf_ppm, mmf_ppm)
    return max(-cap, min(cap, premium_ppm + DEFAULT_FUNDING_PPM))


def funding_elapsed(funding_time: int, timestamp: int) -> int:
    """Seconds a tick at ``timestamp`` pays for: 0 for a market's first tick
    (funding_time 0), else min(timestamp - funding_time, MAX_FUNDING_ELAPSED)."""
    if funding_time == 0:
        return 0
    return min(timestamp - funding_time, MAX_FUNDING_ELAPSED)


def index_delta(rate_ppm: int, oracle_price: int, elapsed: int) -> int:
    """Change of the funding index (price units x ppm):
    rate_ppm x oracle_price x elapsed / FUNDING_PERIOD, truncated toward zero
    (as Vyper's signed ``//``)."""
    num = rate_ppm * oracle_price * elapsed
    q = abs(num) // FUNDING_PERIOD
    return q if num >= 0 else -q


def funding_owed(size: int, index_now: int, index_then: int, denominator: int) -> int:
    """USDC base units a position of ``size`` (signed size units) owes for the
    index moving from ``index_then`` to ``index_now``:
    ceil(size x (index_now - index_then) / denominator), denominator = 10^(pd+sd).
    Positive: the account pays; negative: it receives. Rounded toward +inf,
    so a payer pays up and a receiver gets down (funding creates no money)."""
    return -((-size * (index_now - index_then)) // denominator)
