"""Liquidate and Deleverage: the STF's risk transactions (docs/protocol.md
"Liquidation", "Deleverage").

Each ``apply_*`` checks its rules in the documented order, computes every
new leaf from the pre-state, runs the post-checks and only then writes: a
broken rule raises its ``InvalidTransaction`` subclass and changes nothing.
The formulas are node/risk.py's (dYdX v4 x/clob liquidations, StarkEx
Perpetual's ``Liquidate`` / ``Deleverage`` and ``check_valid_transition``);
money in USDC base units, sizes in size units, prices in price units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from node import exceptions as err
from node.eip712 import Domain, order_hash
from node.margin import (
    equity,
    fee,
    initial_margin,
    maintenance_margin,
    notional,
    trade_position,
    unsettled_funding,
)
from node.risk import (
    BANKRUPTCY_ADJUSTMENT_PPM,
    ENLARGING_HOLDINGS,
    NO_RISK_REDUCED_VALUE,
    REDUCING_VALUE_RISK_RATIO,
    SPREAD_TO_MMR_PPM,
    bankruptcy_quote,
    deleverage_price,
    fillable_price,
    insurance_fund_delta,
    liquidatable,
    transition_violation,
    within_fillable,
)
from node.sigverify import signer_of
from node.state import Account, Market, Position, State
from node.transactions import Deleverage, Liquidate

_TRANSITION_ERRORS: dict[str, type[err.InvalidTransaction]] = {
    ENLARGING_HOLDINGS: err.IllegalTransitionEnlargingSyntheticHoldings,
    REDUCING_VALUE_RISK_RATIO: err.IllegalTransitionReducingTotalValueRiskRatio,
    NO_RISK_REDUCED_VALUE: err.IllegalTransitionNoRiskReducedValue,
}


def unsettled_of(markets: Mapping[int, Market]) -> Callable[[Position], int]:
    """node/risk.py's ``unsettled`` argument: a position's unsettled funding
    in ``markets`` (USDC base units, positive: it pays)."""
    return lambda p: unsettled_funding(markets[p.market], p)


def settle_position(account: Account, market: Market) -> tuple[Account, int]:
    """``account`` with its position in ``market`` settled at the market's
    funding index (collateral - owed, settled_funding + owed) and the amount
    owed (USDC base units, positive: it paid into the funding pool). The
    account unchanged and 0 when it has no position there."""
    pos = account.position(market.id)
    if pos is None or pos.funding_index == market.funding_index:
        return account, 0
    owed = unsettled_funding(market, pos)
    pos = replace(pos, funding_index=market.funding_index,
                  settled_funding=pos.settled_funding + owed)
    settled = Account(account.collateral - owed, account.nonce, account.positions)
    return settled.with_position(pos), owed


def _check_transition(role: str, before: Account, after: Account,
                      markets: Mapping[int, Market]) -> None:
    """Raise the IllegalTransition* error when ``after`` is riskier than ``before``."""
    rule = transition_violation(before, after, markets, unsettled_of(markets))
    if rule is not None:
        raise _TRANSITION_ERRORS[rule](f"{role} account would end riskier than it was", role=role)


def _trade(account: Account, market: Market, delta: int, cash: int) -> tuple[Account, int]:
    """Settle ``account``'s position in ``market``, then trade ``delta``
    (signed size) for ``cash`` (signed USDC: + received, - paid): the account
    after and the funding it settled."""
    account, owed = settle_position(account, market)
    pos = trade_position(account.position(market.id), market.id, delta, -cash,
                         market.funding_index)
    return account.traded(cash, pos), owed


def _oi_delta(before: Account, after: Account, market_id: int) -> int:
    """max(size after, 0) - max(size before, 0): one account's share of the
    market's open interest change."""
    b, a = before.position(market_id), after.position(market_id)
    return max(a.size if a else 0, 0) - max(b.size if b else 0, 0)


def apply_liquidate(state: State, tx: Liquidate, timestamp: int, domain: Domain) -> None:
    """Close ``tx.size`` of ``tx.liquidated``'s position in ``tx.order.market``
    against the liquidator's signed order, at ``tx.price`` (docs/protocol.md
    "Liquidation"; the liquidator is the maker).

    Rules in order: UnknownMarket, SelfTrade, ZeroFillSize, InvalidStepSize,
    InvalidTickSize, FillPriceMismatch, OrderExpired, InvalidOrderSignature,
    Overfill, NotLiquidatable, NotAReduction, PriceBeyondFillable; after the
    updates: InsuranceFundShort, InsufficientMargin (the liquidator, if its
    position grew), IllegalTransition* (the liquidated account). Writes the
    two accounts, the fee account, the order leaf, the system leaf
    (funding_pool, insurance_fund) and the markets leaf (open_interest).
    """
    order = tx.order
    market = state.markets.get(order.market)
    if market is None:
        raise err.UnknownMarket(f"market {order.market} is not listed")
    if order.account == tx.liquidated:
        raise err.SelfTrade("liquidator and liquidated are the same account")
    size, price = tx.size, tx.price
    if size == 0:
        raise err.ZeroFillSize("liquidation size is zero")
    if size % market.step_size:
        raise err.InvalidStepSize(f"size {size} is not a multiple of step {market.step_size}")
    if price % market.tick_size or order.price % market.tick_size:
        raise err.InvalidTickSize(f"price is not a multiple of tick {market.tick_size}")
    if price != order.price:
        raise err.FillPriceMismatch(f"liquidation price {price} != order price {order.price}")
    if order.expiry <= timestamp:
        raise err.OrderExpired(f"liquidator order expired at {order.expiry}, block time "
                               f"{timestamp}", role="maker")
    digest = order_hash(domain, order)
    if signer_of(digest, tx.signature) != order.account:
        raise err.InvalidOrderSignature(
            "liquidator signature does not match the order's account", role="maker")
    filled = state.filled(digest) + size
    if filled > order.size:
        raise err.Overfill(f"liquidator order would be filled {filled} of {order.size}",
                           role="maker")
    markets = state.markets
    unsettled = unsettled_of(markets)
    victim = state.account(tx.liquidated)
    if not liquidatable(victim, markets, unsettled):
        raise err.NotLiquidatable("account is not below maintenance margin")
    mid = market.id
    pos = victim.position(mid)
    if pos is None or order.is_buy != (pos.size > 0) or size > abs(pos.size):
        raise err.NotAReduction(f"liquidation of {size} does not only reduce the position "
                                f"{pos.size if pos else 0}")
    bound = fillable_price(victim, markets, mid, BANKRUPTCY_ADJUSTMENT_PPM, SPREAD_TO_MMR_PPM,
                           unsettled)
    if not within_fillable(pos.size, price, bound):
        raise err.PriceBeyondFillable(f"price {price} is beyond the fillable price {bound}")

    # the trade at `price`: the buyer pays ceil, the seller receives floor
    pay, receive = notional(market, size, price)
    maker_fee = fee(pay if order.is_buy else receive, market.maker_fee_ppm)
    delta = -size if pos.size > 0 else size  # the liquidated account's
    cash = receive if delta < 0 else -pay
    liquidator = state.account(order.account)
    new_liquidator, owed_liquidator = _trade(liquidator, market, -delta,
                                             -pay if order.is_buy else receive)
    new_liquidator = Account(new_liquidator.collateral - maker_fee, new_liquidator.nonce,
                             new_liquidator.positions)
    new_victim, owed_victim = _trade(victim, market, delta, cash)
    bq = bankruptcy_quote(victim, markets, mid, delta, unsettled)
    fund_delta = insurance_fund_delta(cash, bq, market.max_liquidation_fee_ppm)
    new_victim = Account(new_victim.collateral - fund_delta, new_victim.nonce,
                         new_victim.positions)
    new = {order.account: new_liquidator, tx.liquidated: new_victim}
    fee_account = state.system.fee_account
    fee_acc = new.get(fee_account) or state.account(fee_account)
    new[fee_account] = Account(fee_acc.collateral + maker_fee + (pay - receive), fee_acc.nonce,
                               fee_acc.positions)
    oi = (_oi_delta(liquidator, new_liquidator, mid) + _oi_delta(victim, new_victim, mid))
    after_market = market.with_open_interest(market.open_interest + oi)
    after_markets = {**markets, mid: after_market} if oi else markets

    system = state.system
    if system.insurance_fund + fund_delta < 0:
        raise err.InsuranceFundShort(
            f"insurance fund {system.insurance_fund} cannot pay {-fund_delta}: deleverage")
    if _grew(liquidator.position(mid), new_liquidator.position(mid)):
        after = new[order.account]
        have, need = equity(after, after_markets), initial_margin(after, after_markets)
        if have < need:
            raise err.InsufficientMargin(
                f"liquidator equity {have} below initial margin {need} after the liquidation",
                role="maker")
    _check_transition("liquidated", victim, new[tx.liquidated], after_markets)

    for address, acc in new.items():
        state.set_account(address, acc)
    state.set_filled(digest, filled)
    state.set_system(replace(system, funding_pool=system.funding_pool + owed_liquidator
                             + owed_victim, insurance_fund=system.insurance_fund + fund_delta))
    if oi:
        state.set_market(after_market)


def _grew(before: Position | None, after: Position | None) -> bool:
    """True when a position's |size| increased or it flipped side."""
    b = before.size if before else 0
    a = after.size if after else 0
    return abs(a) > abs(b) or a * b < 0


def apply_deleverage(state: State, tx: Deleverage) -> None:
    """Offset ``tx.size`` of ``tx.liquidated``'s position in ``tx.market``
    against ``tx.offset``'s opposite position at the liquidated side's
    bankruptcy price (docs/protocol.md "Deleverage"); no fees, the rounding
    dust to the fee account.

    Rules in order: UnknownMarket, SelfTrade, ZeroFillSize, InvalidStepSize,
    NotDeleveragable (unless equity < 0, maintenance margin > 0 and
    insurance fund + equity < 0), NotAReduction; after the trade the
    IllegalTransition* errors of the liquidated account, then the offset's.
    Writes the two accounts, the fee account, the system leaf
    (funding_pool) and the markets leaf (open_interest).
    """
    market = state.markets.get(tx.market)
    if market is None:
        raise err.UnknownMarket(f"market {tx.market} is not listed")
    if tx.offset == tx.liquidated:
        raise err.SelfTrade("offset and liquidated are the same account")
    size = tx.size
    if size == 0:
        raise err.ZeroFillSize("deleverage size is zero")
    if size % market.step_size:
        raise err.InvalidStepSize(f"size {size} is not a multiple of step {market.step_size}")
    markets = state.markets
    unsettled = unsettled_of(markets)
    victim = state.account(tx.liquidated)
    system = state.system
    eq = equity(victim, markets)
    if not (eq < 0 and system.insurance_fund + eq < 0
            and maintenance_margin(victim, markets) > 0):
        raise err.NotDeleveragable(
            f"equity {eq} with insurance fund {system.insurance_fund}: nothing to deleverage")
    mid = market.id
    pos = victim.position(mid)
    offset = state.account(tx.offset)
    other = offset.position(mid)
    if (pos is None or other is None or pos.size * other.size >= 0
            or size > min(abs(pos.size), abs(other.size))):
        raise err.NotAReduction(
            f"deleverage of {size}: positions {pos.size if pos else 0} and "
            f"{other.size if other else 0} are not opposite or too small")

    delta = -size if pos.size > 0 else size  # the liquidated account's
    price = deleverage_price(victim, markets, mid, delta, unsettled)
    pay, receive = notional(market, size, price)
    cash = receive if delta < 0 else -pay
    new_victim, owed_victim = _trade(victim, market, delta, cash)
    new_offset, owed_offset = _trade(offset, market, -delta, -pay if delta < 0 else receive)
    new = {tx.liquidated: new_victim, tx.offset: new_offset}
    # the fee account is written even with no dust: a write creates an absent
    # leaf, and the rule names it (as a Fill's)
    fee_account = system.fee_account
    fee_acc = new.get(fee_account) or state.account(fee_account)
    new[fee_account] = Account(fee_acc.collateral + pay - receive, fee_acc.nonce,
                               fee_acc.positions)
    oi = _oi_delta(victim, new_victim, mid) + _oi_delta(offset, new_offset, mid)
    after_market = market.with_open_interest(market.open_interest + oi)
    after_markets = {**markets, mid: after_market} if oi else markets
    _check_transition("liquidated", victim, new[tx.liquidated], after_markets)
    _check_transition("offset", offset, new[tx.offset], after_markets)

    for address, acc in new.items():
        state.set_account(address, acc)
    if owed_victim or owed_offset:
        state.set_system(replace(system,
                                 funding_pool=system.funding_pool + owed_victim + owed_offset))
    if oi:
        state.set_market(after_market)
