"""Typed errors of the state transition function (execution-specs style).

Every rule of docs/protocol.md has its own class; ``rule`` is the class name,
which is what receipts and JSON-RPC errors report.
"""

from __future__ import annotations


class InvalidBlock(Exception):
    """A block that cannot be applied (bad parent, number, timestamp, root)."""


class InvalidTransaction(Exception):
    """A transaction that breaks a rule; applying it changed nothing.

    ``role`` says whose fault it is in a fill ("maker" or "taker"), else None.
    """

    def __init__(self, message: str = "", role: str | None = None) -> None:
        super().__init__(message)
        self.role = role

    @property
    def rule(self) -> str:
        return type(self).__name__


class DepositOutOfOrder(InvalidTransaction):
    """Deposit index is not the next entry of the L1 deposit queue."""


class UnknownMarket(InvalidTransaction):
    """The market id is not declared in the markets leaf."""


class MarketMismatch(InvalidTransaction):
    """Maker and taker orders are for different markets."""


class SameSide(InvalidTransaction):
    """Maker and taker orders are both buys or both sells."""


class SelfTrade(InvalidTransaction):
    """Maker and taker are the same account."""


class ZeroFillSize(InvalidTransaction):
    """A fill of size zero."""


class InvalidStepSize(InvalidTransaction):
    """A size that is not a multiple of the market's step size."""


class InvalidTickSize(InvalidTransaction):
    """A price that is not a multiple of the market's tick size."""


class FillPriceMismatch(InvalidTransaction):
    """The fill price is not the maker's limit price."""


class PricesDoNotCross(InvalidTransaction):
    """The buy order's price is below the sell order's price."""


class OrderExpired(InvalidTransaction):
    """An order whose expiry is at or before the block timestamp."""


class InvalidOrderSignature(InvalidTransaction):
    """An order signature that does not recover to the order's account."""


class Overfill(InvalidTransaction):
    """The fill would take an order past its size."""


class InsufficientMargin(InvalidTransaction):
    """After the fill an account's equity is below its initial margin."""


class InvalidOracleSignature(InvalidTransaction):
    """An oracle price not signed by the oracle key of the system leaf."""


class InvalidPrice(InvalidTransaction):
    """A price of zero."""


class StaleOraclePrice(InvalidTransaction):
    """An oracle price not newer than the market's current one."""


class StaleFundingTick(InvalidTransaction):
    """A FundingTick whose timestamp is not after the market's funding_time."""


class FundingTickInFuture(InvalidTransaction):
    """A FundingTick whose timestamp is after the block timestamp."""


class InvalidPremium(InvalidTransaction):
    """A FundingTick premium with |premium_ppm| above 1e6 (100% per 8 h)."""


class InvalidWithdrawSignature(InvalidTransaction):
    """A withdrawal not signed by its account."""


class InvalidNonce(InvalidTransaction):
    """A withdrawal nonce that is not the account's next nonce."""


class ZeroAmount(InvalidTransaction):
    """A withdrawal of zero."""


class InsufficientFreeCollateral(InvalidTransaction):
    """A withdrawal larger than the account's free collateral."""


class InvalidAdminSignature(InvalidTransaction):
    """A ListMarket not signed by the admin key of the system leaf."""


class MarketAlreadyListed(InvalidTransaction):
    """A ListMarket for a market id that is already listed."""


class TooManyMarkets(InvalidTransaction):
    """A ListMarket beyond MAX_MARKETS (64, the escape hatch's bound)."""


class InvalidSymbol(InvalidTransaction):
    """A symbol that is not 1-16 chars of A-Z 0-9 - _ / . starting with a letter,
    zero-padded to 16 bytes."""


class DuplicateSymbol(InvalidTransaction):
    """A ListMarket whose symbol another market already has."""


class InvalidMarketDecimals(InvalidTransaction):
    """price_decimals or size_decimals above MAX_DECIMALS (18)."""


class InvalidTickStep(InvalidTransaction):
    """A tick size or step size of zero."""


class InvalidMarginFraction(InvalidTransaction):
    """Margin fractions outside 0 < maintenance <= initial <= 1e6 ppm."""


class InvalidFee(InvalidTransaction):
    """A maker or taker fee above 1e6 ppm (100%)."""


class InvalidOpenInterestCaps(InvalidTransaction):
    """A ListMarket whose open interest caps are not (upper 0) or lower < upper."""


class NotLiquidatable(InvalidTransaction):
    """A Liquidate of an account that is not below maintenance margin
    (node/risk.py ``liquidatable``: MM > 0 and equity < MM)."""


class NotAReduction(InvalidTransaction):
    """A Liquidate or Deleverage that does not only reduce the liquidated
    account's position (no position, wrong side, larger than it), or a
    Deleverage against an offset account with no opposite position."""


class PriceBeyondFillable(InvalidTransaction):
    """A Liquidate at a price worse for the liquidated account than its
    fillable price (node/risk.py ``fillable_price``)."""


class InsuranceFundShort(InvalidTransaction):
    """A Liquidate whose shortfall the insurance fund cannot cover (the
    account is deleveraged instead)."""


class NotDeleveragable(InvalidTransaction):
    """A Deleverage of an account with equity >= 0, or whose shortfall the
    insurance fund could cover."""


class NoPosition(InvalidTransaction):
    """A SettleFunding of an account with no position in the market."""


class IllegalTransitionEnlargingSyntheticHoldings(InvalidTransaction):
    """StarkEx check_valid_transition: the account ends below maintenance
    margin with a position that grew, flipped or is new."""


class IllegalTransitionReducingTotalValueRiskRatio(InvalidTransaction):
    """StarkEx check_valid_transition: the account ends below maintenance
    margin with a lower equity / maintenance margin ratio."""


class IllegalTransitionNoRiskReducedValue(InvalidTransaction):
    """StarkEx check_valid_transition: an account with no maintenance margin
    before ends below it with less equity."""


class RollupFrozen(InvalidTransaction):
    """The L1 Rollup is frozen (escape hatch): the sequencer takes no new
    orders or withdrawals; accounts leave with ``escape`` on L1."""
