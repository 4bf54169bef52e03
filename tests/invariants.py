"""Ledger invariants checked after every block (issue 8, "Invariants";
docs/protocol.md "Funding"), as a helper for end-to-end tests.

The state has no index of accounts, so ``LedgerWatch`` follows the chain
block by block and learns the accounts from the transactions (deposits,
fills, withdrawals) plus the fee account; it counts the money in
(deposits) and out (withdrawals) from the successful transactions, and an
upper bound on the funding settlements performed. After each block it reads
that block's state and checks:

- per market, the position sizes sum to zero and the long sizes sum to the
  market's ``open_interest`` (risk spec v1);
- ``sum(collateral, fee account included) + system.funding_pool +
  system.insurance_fund == deposits - withdrawals``, exactly (USDC base
  units), and ``insurance_fund >= 0``;
- ``0 <= funding_pool + sum(unsettled funding) <= S + U`` with S the
  settlements (bound: 2 per fill, liquidation and deleverage, 1 per
  SettleFunding, one per market per withdrawal) and U the
  open positions whose index differs from their market's: funding paid
  equals funding received up to the accounted rounding dust.

``watch_node(node)`` hooks a running in-process ``Node``: every sealed
block is checked from the sequencer's ``on_block`` callback. A broken
invariant there cannot raise through the block builder (it logs and goes
on), so it is recorded and ``LedgerWatch.assert_ok()`` raises it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from node.blocks import Block
from node.margin import unsettled_funding
from node.state import State
from node.transactions import (
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    SettleFunding,
    Withdraw,
    decode_tx,
)


class InvariantBroken(AssertionError):
    """A ledger invariant failed after a block (the message names it)."""


def check_ledger(state: State, accounts: Iterable[bytes], deposits: int, withdrawn: int,
                 settlements: int) -> None:
    """Check the three invariants on ``state`` over ``accounts`` (20-byte
    addresses: every account that holds collateral or a position, the fee
    account included). deposits / withdrawn: USDC base units credited and
    burnt so far; settlements: an upper bound on the funding settlements
    performed so far. Raises InvariantBroken naming the invariant."""
    markets = state.markets
    views = [state.account(a) for a in sorted(set(accounts))]
    for market_id in markets:
        total = sum(p.size for a in views for p in a.positions if p.market == market_id)
        if total != 0:
            raise InvariantBroken(f"market {market_id}: position sizes sum to {total}, not 0")
        longs = sum(p.size for a in views for p in a.positions
                    if p.market == market_id and p.size > 0)
        if longs != markets[market_id].open_interest:
            raise InvariantBroken(f"market {market_id}: long sizes sum to {longs}, open interest "
                                  f"is {markets[market_id].open_interest}")
    pool = state.system.funding_pool
    fund = state.system.insurance_fund
    if fund < 0:
        raise InvariantBroken(f"insurance fund {fund} < 0")
    collateral = sum(a.collateral for a in views)
    if collateral + pool + fund != deposits - withdrawn:
        raise InvariantBroken(
            f"collateral {collateral} + funding pool {pool} + insurance fund {fund} = "
            f"{collateral + pool + fund}, but deposits - withdrawals = {deposits} - {withdrawn} "
            f"= {deposits - withdrawn}")
    unsettled = sum(unsettled_funding(markets[p.market], p) for a in views for p in a.positions)
    stale = sum(1 for a in views for p in a.positions
                if p.funding_index != markets[p.market].funding_index)
    dust = pool + unsettled  # the exact funding sums to zero (sizes do): the rest is rounding
    if not 0 <= dust <= settlements + stale:  # each rounding adds less than 1
        raise InvariantBroken(
            f"funding pool {pool} + unsettled {unsettled} = {dust}, outside [0, "
            f"{settlements} settlements + {stale} unsettled positions]")


class LedgerWatch:
    """Follows blocks in order (``on_block``) and checks the invariants after
    each. fee_account: the system leaf's fee account (20 bytes)."""

    def __init__(self, fee_account: bytes) -> None:
        self.accounts: set[bytes] = {fee_account}
        self.deposits = 0
        self.withdrawn = 0
        self.settlements = 0
        self.blocks = 0  # blocks checked
        self.ticks = 0  # successful FundingTicks seen
        self.failure: InvariantBroken | None = None

    def follow(self, block: Block, markets: int) -> None:
        """Account for ``block``'s successful transactions (``markets``: how
        many markets are listed, the most positions a withdrawal settles).
        Raises InvariantBroken for a type this helper does not know (a new
        type must say how it moves money here)."""
        for raw, receipt in zip(block.txs, block.receipts, strict=True):
            if not receipt.success:
                continue
            tx = decode_tx(raw)
            if isinstance(tx, Deposit):
                self.accounts.add(tx.account)
                self.deposits += tx.amount
            elif isinstance(tx, Fill):
                self.accounts.update((tx.maker.account, tx.taker.account))
                self.settlements += 2
            elif isinstance(tx, Withdraw):
                self.accounts.add(tx.account)
                self.withdrawn += tx.amount
                self.settlements += markets
            elif isinstance(tx, Liquidate):
                self.accounts.update((tx.liquidated, tx.order.account))
                self.settlements += 2
            elif isinstance(tx, Deleverage):
                self.accounts.update((tx.liquidated, tx.offset))
                self.settlements += 2
            elif isinstance(tx, SettleFunding):
                self.accounts.add(tx.account)
                self.settlements += 1
            elif isinstance(tx, FundingTick):
                self.ticks += 1
            elif not isinstance(tx, OraclePrice | ListMarket):
                raise InvariantBroken(f"tests/invariants.py does not know {type(tx).__name__}: "
                                      "say which accounts it touches and how it moves money")

    def on_block(self, block: Block, state: State) -> None:
        """Follow ``block`` and check the invariants on ``state``, its post
        state. Raises InvariantBroken."""
        self.follow(block, len(state.markets))
        check_ledger(state, self.accounts, self.deposits, self.withdrawn, self.settlements)
        self.blocks += 1

    def assert_ok(self) -> None:
        """Raise the first invariant broken in a hooked node, if any."""
        if self.failure is not None:
            raise self.failure


def watch_node(node: Any) -> LedgerWatch:
    """Check every block ``node`` (an in-process node.node.Node) seals from
    now on; the node must be at genesis or at a state the watch can start
    from (no accounts yet). Chains the sequencer's previous ``on_block``."""
    chain = node.chain
    watch = LedgerWatch(chain.state.system.fee_account)
    before = node.sequencer.on_block

    def on_block(block: Block) -> None:
        if watch.failure is None:
            try:
                watch.on_block(block, State(chain.tree, block.header.state_root))
            except InvariantBroken as exc:
                exc.add_note(f"after L2 block {block.number}")
                watch.failure = exc
        if before is not None:
            before(block)

    node.sequencer.on_block = on_block
    return watch
