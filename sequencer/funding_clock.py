"""The sequencer's funding clock (issue 8 item 1; docs/protocol.md "Funding").

Every ``sample_interval`` seconds of L2 time the clock samples each listed
market's premium from its book against the market's current oracle price
(``FundingSampler.sample_book``; a market without an oracle price is
skipped), and every ``tick_interval`` seconds it posts one ``FundingTick``
per market with the median premium of the period, stamped with the pending
L2 block's timestamp and signed by the oracle key. Ticks enter through
``Sequencer.send_funding_tick``, the path of ``l2_sendFundingTick``: the STF
checks them, the journal keeps them and the next seal puts them in a block.

Time is the L2 clock the block builder stamps blocks with (wall time plus
the devnet's warp offset): a warp past a tick time gets a tick at once, and
that tick pays for the whole warped time (up to MAX_FUNDING_ELAPSED). Ticks
fall on a grid (``timestamp // tick_interval``), as dYdX v4's funding
epochs do, so they do not drift with the clock task's own timing.

Presets: devnet samples every second and ticks every 10 s (funding is
visible within a minute); mainnet samples every minute and ticks hourly
(Hyperliquid, dYdX v4). 0 turns sampling (ticks carry premium 0, interest
only) or ticks off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from node.exceptions import InvalidTransaction
from node.funding import MAX_FUNDING_ELAPSED
from node.signing import Signer
from node.transactions import FundingTick
from sequencer.funding import FundingSampler, median_ppm
from sequencer.sequencer import Sequencer

log = logging.getLogger("derivnet.funding")

MAX_SAMPLE_INTERVAL = 3_600
"""Longest sample interval (s) the node accepts."""

MAX_TICK_INTERVAL = MAX_FUNDING_ELAPSED
"""Longest tick interval (s): a tick pays for at most MAX_FUNDING_ELAPSED
seconds (funding spec v1), so a longer interval would drop funding."""

WAKE_SECONDS = 1.0
"""The clock looks at L2 time at least this often (wall seconds), so a time
warp is answered within about a second whatever the intervals."""


@dataclass(frozen=True)
class FundingSchedule:
    """Seconds of L2 time between premium samples and between FundingTicks
    (0: off). Raises ValueError for a value out of range or samples less
    often than ticks (both on)."""

    sample_interval: int
    tick_interval: int

    def __post_init__(self) -> None:
        if not 0 <= self.sample_interval <= MAX_SAMPLE_INTERVAL:
            raise ValueError(f"funding sample interval: expected 0..{MAX_SAMPLE_INTERVAL} s, "
                             f"got {self.sample_interval}")
        if not 0 <= self.tick_interval <= MAX_TICK_INTERVAL:
            raise ValueError(f"funding interval: expected 0..{MAX_TICK_INTERVAL} s, "
                             f"got {self.tick_interval}")
        if self.tick_interval and self.sample_interval > self.tick_interval:
            raise ValueError(f"funding sample interval ({self.sample_interval} s) exceeds the "
                             f"funding interval ({self.tick_interval} s)")


FUNDING_PRESETS: dict[str, FundingSchedule] = {
    "devnet": FundingSchedule(sample_interval=1, tick_interval=10),
    "mainnet": FundingSchedule(sample_interval=60, tick_interval=3_600),
}


def resolve_schedule(preset: str, sample_interval: int | None,
                     tick_interval: int | None) -> FundingSchedule:
    """The preset's schedule with the given overrides (None: the preset's).
    A preset sample interval longer than an overriding tick interval is
    shortened to it; two explicit values that disagree raise ValueError, as
    does an unknown preset."""
    if preset not in FUNDING_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {sorted(FUNDING_PRESETS)}")
    base = FUNDING_PRESETS[preset]
    tick = base.tick_interval if tick_interval is None else tick_interval
    sample = base.sample_interval if sample_interval is None else sample_interval
    if sample_interval is None and tick:
        sample = min(sample, tick)
    return FundingSchedule(sample, tick)


class Retry(Protocol):
    """The node's retry bookkeeping (node.node.Backoff)."""

    def failed(self, exc: BaseException) -> float: ...

    def succeeded(self) -> None: ...


class FundingClock:
    """Samples premiums and posts FundingTicks for ``sequencer``'s markets.

    clock: L2 time (unix s, float; the node's ``clock``). oracle_key: the
    32-byte key of the state's oracle, or None (then no ticks: logged once
    by ``run``). ``step`` does one pass and is what ``run`` repeats.
    """

    def __init__(self, sequencer: Sequencer, clock: Callable[[], float],
                 oracle_key: bytes | None, schedule: FundingSchedule) -> None:
        self.sequencer = sequencer
        self.clock = clock
        self.schedule = schedule
        self.signer = Signer(oracle_key) if oracle_key is not None else None
        self.sampler: FundingSampler | None = None  # samples only for ticks to come
        self.next_tick: int | None = None  # L2 unix s of the next tick (None: ticks off)
        if self.ticking:
            self.next_tick = self._grid_after(int(clock()))
            if schedule.sample_interval:
                self.sampler = FundingSampler(schedule.sample_interval)
        self.ticks_posted = 0
        self.ticks_failed = 0

    @property
    def ticking(self) -> bool:
        """True when this clock posts ticks (an interval and a key)."""
        return self.schedule.tick_interval > 0 and self.signer is not None

    def _grid_after(self, now: int) -> int:
        interval = self.schedule.tick_interval
        return (now // interval + 1) * interval

    # -- views -------------------------------------------------------------
    def next_funding_time(self) -> int | None:
        """L2 unix seconds at which the next ticks are due (None: ticks off)."""
        return self.next_tick

    def premium_estimate(self, market: int) -> int | None:
        """The premium (ppm) the next tick of ``market`` would carry now: the
        median of this period's samples; None with no sample yet (or
        sampling or ticks off)."""
        if self.sampler is None:
            return None
        samples = self.sampler.samples(market)
        return median_ppm(samples) if samples else None

    # -- work --------------------------------------------------------------
    def step(self) -> list[FundingTick]:
        """Sample every market whose sample is due, then, if the tick time has
        come, post one tick per market with an oracle price. Returns the
        ticks the sequencer accepted. A tick the STF refuses (e.g. one
        posted over JSON-RPC got there first) is logged and skipped. Does
        nothing while the Rollup is frozen."""
        seq = self.sequencer
        if seq.frozen:
            return []
        now = int(self.clock())
        markets = seq.chain.state.markets  # the pending state: the latest oracle prices
        if self.sampler is not None:
            for market in markets.values():
                book = seq.books.get(market.id)
                if book is not None:
                    self.sampler.sample_book(book, market, now)
        if self.next_tick is None or now < self.next_tick or self.signer is None:
            return []
        self.next_tick = self._grid_after(now)
        chain = seq.chain
        chain.open_block(now)  # no-op if a block is pending: then its timestamp counts
        timestamp = chain.pending_timestamp
        domain = chain.domain
        posted = []
        for market_id in sorted(markets):
            premium = self.sampler.take_premium(market_id) if self.sampler is not None else 0
            market = chain.state.markets[market_id]
            if market.oracle_price <= 0 or timestamp <= market.funding_time:
                continue
            tick = self.signer.funding_tick(domain, market_id, timestamp, premium)
            try:
                seq.send_funding_tick(tick)
            except InvalidTransaction as exc:
                self.ticks_failed += 1
                log.warning("funding tick for market %d at %d refused: %s: %s",
                            market_id, timestamp, exc.rule, exc)
                continue
            self.ticks_posted += 1
            posted.append(tick)
        if posted:
            log.debug("funding ticks at %d: %s", timestamp,
                      ", ".join(f"market {t.market} premium {t.premium_ppm} ppm" for t in posted))
        return posted

    def _sleep_seconds(self) -> float:
        """Wall seconds until the next sample or tick is due, at most WAKE_SECONDS."""
        now = self.clock()
        due = [WAKE_SECONDS]
        if self.sampler is not None:
            interval = self.schedule.sample_interval
            due.append((int(now) // interval + 1) * interval - now)
        if self.next_tick is not None:
            due.append(self.next_tick - now)
        return max(0.01, min(due))

    async def run(self, retry: Retry) -> None:
        """Step on the clock until cancelled (a trio task). An error is logged
        and retried after ``retry``'s backoff; the task never ends by itself."""
        if self.schedule.tick_interval == 0:
            log.info("funding ticks are off (funding interval 0)")
        elif self.signer is None:
            log.warning("funding ticks are off: no oracle key (pass --oracle-key)")
        if not self.ticking:
            return
        while True:
            try:
                self.step()
            except Exception as exc:  # keep the devnet up; retry with backoff
                delay = retry.failed(exc)
                log.warning("funding clock failed (retry in %.1f s): %s", delay, exc)
                await trio.sleep(delay)
                continue
            retry.succeeded()
            await trio.sleep(self._sleep_seconds())
