"""The state transition function: one transaction at a time.

``apply_transaction(state, tx, timestamp, domain)`` checks every rule of
docs/protocol.md before it writes anything, then writes whole leaves. A
broken rule raises the matching ``InvalidTransaction`` subclass and leaves
``state`` unchanged, so a failed transaction inside a block is a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from node import exceptions as err
from node.eip712 import (
    Domain,
    funding_tick_digest,
    list_market_digest,
    oracle_price_digest,
    order_hash,
    withdraw_digest,
)
from node.funding import MAX_PREMIUM_PPM, funding_elapsed, funding_rate, index_delta
from node.margin import (
    equity,
    fee,
    free_collateral,
    initial_margin,
    notional,
    trade_position,
    unsettled_funding,
)
from node.liquidation import apply_deleverage, apply_liquidate, settle_position
from node.sigverify import signer_of
from node.state import Account, Market, State, Withdrawal, symbol_text
from node.transactions import (
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    Order,
    SettleFunding,
    Transaction,
    Withdraw,
)

MAX_MARKETS = 64  # Rollup.vy MAX_MARKETS: escape() decodes at most this many
MAX_DECIMALS = 18  # price_decimals and size_decimals each
PPM = 1_000_000
_SYMBOL = re.compile(rb"[A-Z][A-Z0-9_./-]{0,15}")


def apply_transaction(state: State, tx: Transaction, timestamp: int, domain: Domain) -> None:
    """Apply ``tx`` at block ``timestamp`` (unix s); raises InvalidTransaction."""
    if isinstance(tx, Fill):
        apply_fill(state, tx, timestamp, domain)
    elif isinstance(tx, Deposit):
        apply_deposit(state, tx)
    elif isinstance(tx, OraclePrice):
        apply_oracle_price(state, tx, domain)
    elif isinstance(tx, Withdraw):
        apply_withdraw(state, tx, domain)
    elif isinstance(tx, ListMarket):
        apply_list_market(state, tx, domain)
    elif isinstance(tx, FundingTick):
        apply_funding_tick(state, tx, timestamp, domain)
    elif isinstance(tx, Liquidate):
        apply_liquidate(state, tx, timestamp, domain)
    elif isinstance(tx, Deleverage):
        apply_deleverage(state, tx)
    elif isinstance(tx, SettleFunding):
        apply_settle_funding(state, tx)
    else:  # pragma: no cover - the Transaction union is closed
        raise TypeError(f"not a transaction: {tx!r}")


def apply_deposit(state: State, tx: Deposit) -> None:
    system = state.system
    if tx.index != system.next_deposit:
        raise err.DepositOutOfOrder(f"deposit index {tx.index}, expected {system.next_deposit}")
    acc = state.account(tx.account)
    state.set_account(tx.account, Account(acc.collateral + tx.amount, acc.nonce, acc.positions))
    state.set_system(replace(system, next_deposit=system.next_deposit + 1))


def _check_order_live(role: str, order: Order, timestamp: int) -> None:
    if order.expiry <= timestamp:
        raise err.OrderExpired(
            f"{role} order expired at {order.expiry}, block time {timestamp}", role=role
        )


def apply_fill(state: State, fill: Fill, timestamp: int, domain: Domain) -> None:
    maker, taker = fill.maker, fill.taker
    market = state.markets.get(maker.market)
    if market is None:
        raise err.UnknownMarket(f"market {maker.market} is not listed")
    if taker.market != maker.market:
        raise err.MarketMismatch(f"maker market {maker.market}, taker market {taker.market}")
    if maker.is_buy == taker.is_buy:
        raise err.SameSide("maker and taker are on the same side")
    if maker.account == taker.account:
        raise err.SelfTrade("maker and taker are the same account")
    size, price = fill.size, fill.price
    if size == 0:
        raise err.ZeroFillSize("fill size is zero")
    if size % market.step_size:
        raise err.InvalidStepSize(f"size {size} is not a multiple of step {market.step_size}")
    if maker.price % market.tick_size or taker.price % market.tick_size:
        raise err.InvalidTickSize(f"price is not a multiple of tick {market.tick_size}")
    if price != maker.price:
        raise err.FillPriceMismatch(f"fill price {price} != maker price {maker.price}")
    buy, sell = (maker, taker) if maker.is_buy else (taker, maker)
    if buy.price < sell.price:
        raise err.PricesDoNotCross(f"buy {buy.price} < sell {sell.price}")
    _check_order_live("maker", maker, timestamp)
    _check_order_live("taker", taker, timestamp)
    maker_hash = order_hash(domain, maker)
    if signer_of(maker_hash, fill.maker_signature) != maker.account:
        raise err.InvalidOrderSignature(
            "maker signature does not match the maker account", role="maker"
        )
    taker_hash = order_hash(domain, taker)
    if signer_of(taker_hash, fill.taker_signature) != taker.account:
        raise err.InvalidOrderSignature(
            "taker signature does not match the taker account", role="taker"
        )
    maker_filled = state.filled(maker_hash) + size
    if maker_filled > maker.size:
        raise err.Overfill(
            f"maker order would be filled {maker_filled} of {maker.size}", role="maker"
        )
    taker_filled = state.filled(taker_hash) + size
    if taker_filled > taker.size:
        raise err.Overfill(
            f"taker order would be filled {taker_filled} of {taker.size}", role="taker"
        )

    pay, receive = notional(market, size, price)
    maker_fee = fee(pay if maker.is_buy else receive, market.maker_fee_ppm)
    taker_fee = fee(pay if taker.is_buy else receive, market.taker_fee_ppm)

    new: dict[bytes, Account] = {}
    grows: list[bool] = []  # maker's, taker's: the fill does more than reduce the position
    market_id = market.id
    index = market.funding_index
    settled = 0  # funding the maker and taker pay into the funding pool
    oi_delta = 0  # change of the market's open interest (sum of long sizes)
    for order, charge in ((maker, maker_fee), (taker, taker_fee)):
        acc = state.account(order.account)
        old = acc.position(market_id)
        # settle funding on the traded market first (maker, then taker): the
        # new position starts at the market's index
        owed = 0
        if old is not None and old.funding_index != index:
            owed = unsettled_funding(market, old)
            if owed:
                old = replace(old, settled_funding=old.settled_funding + owed)
        settled += owed
        if order.is_buy:
            pos = trade_position(old, market_id, size, pay, index)
            cash = -pay - owed
        else:
            pos = trade_position(old, market_id, -size, -receive, index)
            cash = receive - owed
        new[order.account] = acc.traded(cash - charge, pos)
        old_size = old.size if old else 0
        oi_delta += max(pos.size, 0) - max(old_size, 0)
        reduces_only = abs(pos.size) < abs(old_size) and (pos.size == 0 or (pos.size > 0) == (old_size > 0))
        grows.append(not reduces_only)

    # fees and rounding dust reach the fee account before the margin checks
    # (docs/protocol.md rule order), so a fee account that trades counts its
    # own income from this fill
    fee_account = state.system.fee_account
    income = maker_fee + taker_fee + (pay - receive)
    fee_acc = new.get(fee_account) or state.account(fee_account)
    new[fee_account] = Account(fee_acc.collateral + income, fee_acc.nonce, fee_acc.positions)

    # open interest moves before the margin checks: they use the initial
    # margin scaled by the open interest after the fill
    markets = state.markets
    if oi_delta:
        market = market.with_open_interest(market.open_interest + oi_delta)
        markets = {**markets, market_id: market}
    for role, order, check in (("maker", maker, grows[0]), ("taker", taker, grows[1])):
        if check:
            after = new[order.account]
            have, need = equity(after, markets), initial_margin(after, markets)
            if have < need:
                raise err.InsufficientMargin(
                    f"{role} equity {have} below initial margin {need} after the fill", role=role
                )

    for address, acc in new.items():
        state.set_account(address, acc)
    state.set_filled(maker_hash, maker_filled)
    state.set_filled(taker_hash, taker_filled)
    if oi_delta:
        state.set_market(market)
    if settled:
        system = state.system
        state.set_system(replace(system, funding_pool=system.funding_pool + settled))


def apply_oracle_price(state: State, tx: OraclePrice, domain: Domain) -> None:
    digest = oracle_price_digest(domain, tx.market, tx.price, tx.timestamp)
    if signer_of(digest, tx.signature) != state.system.oracle:
        raise err.InvalidOracleSignature("oracle price is not signed by the oracle key")
    market = state.markets.get(tx.market)
    if market is None:
        raise err.UnknownMarket(f"market {tx.market} is not listed")
    if tx.price == 0:
        raise err.InvalidPrice("oracle price is zero")
    if tx.timestamp <= market.oracle_time:
        raise err.StaleOraclePrice(
            f"oracle timestamp {tx.timestamp} is not after {market.oracle_time}"
        )
    state.set_market(replace(market, oracle_price=tx.price, oracle_time=tx.timestamp))


def apply_funding_tick(state: State, tx: FundingTick, timestamp: int, domain: Domain) -> None:
    """Advance ``tx.market``'s funding index (docs/protocol.md "Funding").

    Rules in order: InvalidOracleSignature, UnknownMarket, StaleFundingTick
    (tx.timestamp <= funding_time), FundingTickInFuture (tx.timestamp >
    block ``timestamp``), InvalidPremium (|premium| > 1e6 ppm). Writes the
    markets leaf only: funding_index += index_delta(rate, oracle price,
    elapsed), funding_time = tx.timestamp, funding_rate_ppm = rate.
    """
    digest = funding_tick_digest(domain, tx.market, tx.timestamp, tx.premium_ppm)
    if signer_of(digest, tx.signature) != state.system.oracle:
        raise err.InvalidOracleSignature("funding tick is not signed by the oracle key")
    market = state.markets.get(tx.market)
    if market is None:
        raise err.UnknownMarket(f"market {tx.market} is not listed")
    if tx.timestamp <= market.funding_time:
        raise err.StaleFundingTick(
            f"funding tick timestamp {tx.timestamp} is not after {market.funding_time}"
        )
    if tx.timestamp > timestamp:
        raise err.FundingTickInFuture(
            f"funding tick timestamp {tx.timestamp} is after block time {timestamp}"
        )
    if abs(tx.premium_ppm) > MAX_PREMIUM_PPM:
        raise err.InvalidPremium(f"premium {tx.premium_ppm} ppm is beyond +-{MAX_PREMIUM_PPM}")
    rate = funding_rate(tx.premium_ppm, market.imf_ppm, market.mmf_ppm)
    elapsed = funding_elapsed(market.funding_time, tx.timestamp)
    state.set_market(replace(
        market,
        funding_index=market.funding_index + index_delta(rate, market.oracle_price, elapsed),
        funding_time=tx.timestamp,
        funding_rate_ppm=rate,
    ))


def settle_funding(account: Account, markets: Mapping[int, Market]) -> tuple[Account, int]:
    """``account`` with every position settled at its market's funding index
    (in market-id order) and the total it paid (USDC base units; negative:
    it received). Pure: the caller writes the account and the pool."""
    if all(p.funding_index == markets[p.market].funding_index for p in account.positions):
        return account, 0
    paid = 0
    positions = []
    for p in account.positions:
        m = markets[p.market]
        owed = unsettled_funding(m, p)
        paid += owed
        positions.append(replace(p, funding_index=m.funding_index,
                                 settled_funding=p.settled_funding + owed))
    return Account(account.collateral - paid, account.nonce, tuple(positions)), paid


def apply_settle_funding(state: State, tx: SettleFunding) -> None:
    """Settle ``tx.account``'s funding in ``tx.market`` (docs/protocol.md
    "SettleFunding"): rules UnknownMarket, NoPosition; the position moves to
    the market's funding index, the account pays (or receives) its unsettled
    funding into (out of) the funding pool, settled_funding accumulates it.
    Writes the account and the system leaf; equity is unchanged."""
    market = state.markets.get(tx.market)
    if market is None:
        raise err.UnknownMarket(f"market {tx.market} is not listed")
    acc = state.account(tx.account)
    if acc.position(tx.market) is None:
        raise err.NoPosition(f"account has no position in market {tx.market}")
    acc, owed = settle_position(acc, market)
    state.set_account(tx.account, acc)
    if owed:
        system = state.system
        state.set_system(replace(system, funding_pool=system.funding_pool + owed))


def apply_withdraw(state: State, tx: Withdraw, domain: Domain) -> None:
    digest = withdraw_digest(domain, tx.account, tx.recipient, tx.amount, tx.nonce)
    if signer_of(digest, tx.signature) != tx.account:
        raise err.InvalidWithdrawSignature("withdrawal is not signed by its account")
    acc = state.account(tx.account)
    if tx.nonce != acc.nonce:
        raise err.InvalidNonce(f"nonce {tx.nonce}, expected {acc.nonce}")
    if tx.amount == 0:
        raise err.ZeroAmount("withdrawal amount is zero")
    acc, paid = settle_funding(acc, state.markets)
    free = free_collateral(acc, state.markets)
    if tx.amount > free:
        raise err.InsufficientFreeCollateral(
            f"withdrawal of {tx.amount} exceeds free collateral {free}"
        )
    system = state.system
    state.set_account(tx.account, Account(acc.collateral - tx.amount, acc.nonce + 1, acc.positions))
    state.add_withdrawal(Withdrawal(system.withdrawal_count, tx.account, tx.recipient, tx.amount))
    state.set_system(replace(system, withdrawal_count=system.withdrawal_count + 1,
                             funding_pool=system.funding_pool + paid))


def check_symbol(symbol: bytes) -> None:
    """bytes16 symbol: 1-16 chars of A-Z 0-9 _ . / - starting with a letter,
    then zero bytes. Raises InvalidSymbol."""
    text = symbol.rstrip(b"\x00")
    if len(symbol) != 16 or not _SYMBOL.fullmatch(text):
        raise err.InvalidSymbol(
            f"symbol {symbol!r} is not 1-16 chars of A-Z 0-9 _ . / - starting with a letter"
        )


def check_market_params(market: Market) -> None:
    """The parameter rules of a listed market, in order: InvalidMarketDecimals
    (pd or sd > 18), InvalidTickStep (tick or step 0), InvalidMarginFraction
    (not 0 < mmf <= imf <= 1e6 ppm), InvalidFee (a fee or the max
    liquidation fee > 1e6 ppm), InvalidOpenInterestCaps (upper cap != 0 and
    lower >= upper), InvalidPrice (oracle price 0)."""
    if market.price_decimals > MAX_DECIMALS or market.size_decimals > MAX_DECIMALS:
        raise err.InvalidMarketDecimals(
            f"price/size decimals {market.price_decimals}/{market.size_decimals} "
            f"above {MAX_DECIMALS}"
        )
    if market.tick_size == 0 or market.step_size == 0:
        raise err.InvalidTickStep("tick size and step size must be positive")
    if not 0 < market.mmf_ppm <= market.imf_ppm <= PPM:
        raise err.InvalidMarginFraction(
            f"need 0 < maintenance ({market.mmf_ppm}) <= initial ({market.imf_ppm}) <= 1e6 ppm"
        )
    if market.maker_fee_ppm > PPM or market.taker_fee_ppm > PPM \
            or market.max_liquidation_fee_ppm > PPM:
        raise err.InvalidFee("fees must be at most 1e6 ppm")
    if market.oi_upper_cap != 0 and market.oi_lower_cap >= market.oi_upper_cap:
        raise err.InvalidOpenInterestCaps(
            f"open interest caps: need upper 0 or lower ({market.oi_lower_cap}) "
            f"< upper ({market.oi_upper_cap})"
        )
    if market.oracle_price == 0:
        raise err.InvalidPrice("initial oracle price is zero")


def apply_list_market(state: State, tx: ListMarket, domain: Domain) -> None:
    """List market ``tx.market`` with oracle_time 0 and its symbol (docs/protocol.md)."""
    if signer_of(list_market_digest(domain, tx), tx.signature) != state.system.admin:
        raise err.InvalidAdminSignature("market listing is not signed by the admin key")
    markets = state.markets
    if tx.market in markets:
        raise err.MarketAlreadyListed(f"market {tx.market} is already listed")
    if len(markets) >= MAX_MARKETS:
        raise err.TooManyMarkets(f"{len(markets)} markets listed, at most {MAX_MARKETS}")
    check_symbol(tx.symbol)
    if tx.symbol in state.symbols.values():
        raise err.DuplicateSymbol(f"symbol {symbol_text(tx.symbol)} is taken")
    market = Market(tx.market, tx.price_decimals, tx.size_decimals, tx.tick_size, tx.step_size,
                    tx.imf_ppm, tx.mmf_ppm, tx.maker_fee_ppm, tx.taker_fee_ppm,
                    tx.oracle_price, 0,
                    max_liquidation_fee_ppm=tx.max_liquidation_fee_ppm,
                    oi_lower_cap=tx.oi_lower_cap, oi_upper_cap=tx.oi_upper_cap)
    check_market_params(market)
    state.set_market(market)
    state.set_symbol(tx.market, tx.symbol)
