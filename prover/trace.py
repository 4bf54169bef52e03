"""A batch's execution trace: the state root after every step, honest or with
an injected fault.

A *step* is one transaction of a batch, in order across its blocks, with its
block's timestamp (docs/protocol.md "Batches": the step leaf is
``keccak(timestamp u64 || encoded tx)``). Step ``i`` (from 0) takes the state
root after ``i`` steps to the root after ``i + 1``; a transaction that fails
a rule is a no-op, as in a block. ``BatchTrace.roots[i]`` is the root after
``i`` steps, so ``roots[0]`` is the batch's pre-state root (the previous
batch's state root) and ``roots[-1]`` the root the batch should post.

Both dispute parties use a trace: the challenger's is honest, the defender's
is whatever its proposer executed. ``Fault`` is the menu of dishonest
proposers of issue 7 item 6 (``devnet_injectFault``): the trace applies the
fault once, at the first step from ``from_step`` on where it applies, so the
roots before that step are honest and every root after it is wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import replace

from node.derive import Step, execute_txs
from node.eip712 import Domain
from node.state import State, Withdrawal
from node.transactions import (
    DecodeError,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    OraclePrice,
    Transaction,
    decode_tx,
)

# where a forged withdrawal pays (an address nobody holds a key for)
FORGED_RECIPIENT = bytes.fromhex("00000000000000000000000000000000000bad00")
FORGED_AMOUNT = 1_000_000_000  # 1,000 USDC in base units


class Fault(enum.Enum):
    """What a dishonest proposer gets wrong (issue 7 item 6)."""

    FILL_COLLATERAL = "fill-collateral"  # a fill credits the maker one base unit too much
    SKIP_DEPOSIT = "skip-deposit"  # a deposit is treated as a no-op
    FORGED_WITHDRAWAL = "forged-withdrawal"  # a withdrawal nobody signed appears
    ORACLE_PRICE = "oracle-price"  # oracle prices of a market are written one unit too high
    LAST_STEP = "last-step"  # only the root after the last step is wrong
    FAILED_VALID_TX = "failed-valid-tx"  # a transaction that applies is treated as failed
    FUNDING_INDEX = "funding-index"  # a funding tick writes the market's index one unit too high
    LIQUIDATION = "liquidation"  # a liquidation credits the insurance fund one unit too much

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``Fault`` from its name (``fill-collateral`` ...); raises ValueError
        listing the kinds."""
        for kind in cls:
            if kind.value == text:
                return kind
        raise ValueError(f"unknown fault kind {text!r}; kinds: {', '.join(k.value for k in cls)}")


def _apply(state: State, step: Step, domain: Domain) -> bool:
    """Apply one step as a block does (node.derive.execute_txs: a broken rule
    or an undecodable body is a no-op); True if the transaction applied."""
    return execute_txs(state, step.timestamp, (step.tx,), domain)[0].success


def _decoded(step: Step) -> Transaction | None:
    try:
        return decode_tx(step.tx)
    except DecodeError:
        return None


def _faulty_apply(state: State, step: Step, domain: Domain, fault: Fault, last: bool) -> bool:
    """Apply ``step`` with ``fault`` if the fault applies to it; returns True
    if it did (the state then holds the wrong post-state), False if the step
    was applied honestly."""
    tx = _decoded(step)
    if tx is None:
        return False  # a no-op either way
    if fault is Fault.SKIP_DEPOSIT and isinstance(tx, Deposit):
        return True  # not applied at all
    if fault is Fault.FAILED_VALID_TX:
        # an oracle price is left out: a later price may overwrite it
        if not isinstance(tx, OraclePrice) and _apply(State(state.tree, state.root), step, domain):
            return True  # it applies honestly: leave the state as it was
        return False  # it fails honestly too: a no-op either way
    applied = _apply(state, step, domain)
    if fault is Fault.FILL_COLLATERAL and applied and isinstance(tx, Fill):
        acc = state.account(tx.maker.account)
        state.set_account(tx.maker.account, replace(acc, collateral=acc.collateral + 1))
        return True
    if fault is Fault.ORACLE_PRICE and applied and isinstance(tx, OraclePrice):
        market = state.markets[tx.market]
        state.set_market(replace(market, oracle_price=market.oracle_price + 1))
        return True
    if fault is Fault.FUNDING_INDEX and applied and isinstance(tx, FundingTick):
        # the index is cumulative: later ticks carry the error on
        market = state.markets[tx.market]
        state.set_market(replace(market, funding_index=market.funding_index + 1))
        return True
    if fault is Fault.LIQUIDATION and applied and isinstance(tx, Liquidate):
        system = state.system
        state.set_system(replace(system, insurance_fund=system.insurance_fund + 1))
        return True
    if fault is Fault.FORGED_WITHDRAWAL:
        system = state.system
        state.add_withdrawal(Withdrawal(system.withdrawal_count, FORGED_RECIPIENT,
                                        FORGED_RECIPIENT, FORGED_AMOUNT))
        state.set_system(replace(system, withdrawal_count=system.withdrawal_count + 1))
        return True
    if fault is Fault.LAST_STEP and last:
        fee = state.system.fee_account
        acc = state.account(fee)
        state.set_account(fee, replace(acc, collateral=acc.collateral + 1))
        return True
    return False


def _skew_oracle(state: State, step: Step, market_id: int) -> None:
    """After an ORACLE_PRICE fault: every later price of the same market is
    written one unit too high as well (a consistent bug, so the wrong price
    is not overwritten by an honest one within the batch)."""
    tx = _decoded(step)
    if isinstance(tx, OraclePrice) and tx.market == market_id:
        market = state.markets[market_id]
        if market.oracle_time == tx.timestamp and market.oracle_price == tx.price:  # it applied
            state.set_market(replace(market, oracle_price=market.oracle_price + 1))


class BatchTrace:
    """State roots of one batch, step by step.

    ``state`` is a State at the batch's pre-state root on a tree the caller
    owns (the trace commits into it without flushing). ``roots`` has
    ``len(steps) + 1`` entries. With ``fault`` the first applicable step at
    index >= ``from_step`` is executed wrongly (``fault_step``; None if no
    step qualified, and the trace is then honest).
    """

    def __init__(self, state: State, steps: Sequence[Step], domain: Domain,
                 fault: Fault | None = None, from_step: int = 0) -> None:
        self.steps = list(steps)
        self.domain = domain
        self.tree = state.tree
        self.fault = fault
        self.fault_step: int | None = None
        self.roots: list[bytes] = [state.commit()]
        for i, step in enumerate(self.steps):
            if fault is not None and self.fault_step is None and i >= from_step:
                if _faulty_apply(state, step, domain, fault, last=i == len(self.steps) - 1):
                    self.fault_step = i
                    skewed = _decoded(step)
            else:
                _apply(state, step, domain)
                if self.fault_step is not None and fault is Fault.ORACLE_PRICE:
                    _skew_oracle(state, step, skewed.market)  # type: ignore[attr-defined]
            self.roots.append(state.commit())

    @property
    def post_root(self) -> bytes:
        """The root after the last step (the one to post)."""
        return self.roots[-1]

    def state_before(self, step: int) -> State:
        """A fresh State at the root before ``step`` (for a one-step witness)."""
        if not 0 <= step < len(self.steps):
            raise IndexError(f"step {step} not in 0..{len(self.steps) - 1}")
        return State(self.tree, self.roots[step])

