"""Order checks made before an order touches the book.

They mirror the STF's fill rules so that what the sequencer matches will
apply; the STF checks everything again when the fill lands in a block.
One check is sequencer policy, not an STF rule (docs/protocol.md "Risk
engine (sequencer policy)"): ``WouldBeLiquidatable``, an order whose fill
would leave its account liquidatable is refused even when it only reduces.
"""

from __future__ import annotations

from dataclasses import replace

from node import exceptions as err
from node.margin import (
    equity,
    fee,
    initial_margin,
    maintenance_margin,
    notional,
    trade_position,
    unsettled_funding,
)
from node.state import Account, State
from node.sigverify import signer_of
from node.transactions import DecodeError, Order


class InvalidSize(err.InvalidTransaction):
    """An order size of zero."""


class OrderFilled(err.InvalidTransaction):
    """The order hash is already fully filled."""


class WouldBeLiquidatable(err.InvalidTransaction):
    """Sequencer policy (not an STF rule): filling the order would leave the
    account below maintenance margin, even though it only reduces."""


def check_order(state: State, order: Order, signature: bytes, order_hash: bytes, now: int) -> int:
    """Validate ``order`` against ``state`` at time ``now`` (unix s).

    Returns the size still open (size - filled). Raises DecodeError for
    fields out of range and an InvalidTransaction subclass naming the rule:
    UnknownMarket, InvalidSize, InvalidPrice, InvalidTickSize,
    InvalidStepSize, OrderExpired, InvalidOrderSignature, OrderFilled,
    InsufficientMargin (if filling the whole order at its limit price with
    the taker fee would leave equity below the effective initial margin,
    unless it only reduces the position), WouldBeLiquidatable (a reduction
    that would leave equity below maintenance margin; sequencer policy).
    """
    order.validate_ranges()
    if len(signature) != 65:
        raise DecodeError("signature must be 65 bytes")
    market = state.markets.get(order.market)
    if market is None:
        raise err.UnknownMarket(f"market {order.market} is not listed")
    if order.size == 0:
        raise InvalidSize("order size is zero")
    if order.price == 0:
        raise err.InvalidPrice("order price is zero")
    if order.price % market.tick_size:
        raise err.InvalidTickSize(f"price {order.price} is not a multiple of tick {market.tick_size}")
    if order.size % market.step_size:
        raise err.InvalidStepSize(f"size {order.size} is not a multiple of step {market.step_size}")
    if order.expiry <= now:
        raise err.OrderExpired(f"order expired at {order.expiry}, now {now}")
    if signer_of(order_hash, signature) != order.account:
        raise err.InvalidOrderSignature("signature does not recover to the order's account")
    remaining = order.size - state.filled(order_hash)
    if remaining <= 0:
        raise OrderFilled("order is already fully filled")
    check_margin(state, order, remaining)
    return remaining


def check_margin(state: State, order: Order, size: int) -> None:
    """Raise InsufficientMargin if taking ``size`` of ``order`` at its limit
    price (paying the taker fee) leaves equity below the effective
    (open-interest-scaled, node/margin.py ``initial_margin``) initial margin,
    unless it only reduces; raise
    WouldBeLiquidatable if a reduction leaves equity below maintenance
    margin (sequencer policy: such an account is the risk engine's).

    The open interest after the fill is taken as ``open_interest + size``
    (the most one fill can add: its maker's side is not known here), so the
    door is never looser than the STF's check."""
    market = state.markets[order.market]
    acc = state.account(order.account)
    old = acc.position(market.id)
    pay, receive = notional(market, size, order.price)
    index = market.funding_index  # the STF settles the position's funding first
    owed = unsettled_funding(market, old) if old is not None else 0
    if order.is_buy:
        pos = trade_position(old, market.id, size, pay, index)
        cash = -pay - fee(pay, market.taker_fee_ppm) - owed
    else:
        pos = trade_position(old, market.id, -size, -receive, index)
        cash = receive - fee(receive, market.taker_fee_ppm) - owed
    old_size = old.size if old else 0
    after = Account(acc.collateral + cash, acc.nonce, acc.positions).with_position(pos)
    markets = state.markets
    if abs(pos.size) < abs(old_size) and (pos.size == 0 or (pos.size > 0) == (old_size > 0)):
        have, need = equity(after, markets), maintenance_margin(after, markets)
        if need > 0 and have < need:
            raise WouldBeLiquidatable(
                f"equity {have} would be below maintenance margin {need} after the order fills"
            )
        return
    if market.oi_upper_cap:
        markets = {**markets, market.id: replace(market,
                                                 open_interest=market.open_interest + size)}
    have, need = equity(after, markets), initial_margin(after, markets)
    if have < need:
        raise err.InsufficientMargin(
            f"equity {have} would fall below initial margin {need} if the order fills"
        )
