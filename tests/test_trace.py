"""prover.trace: a batch's step roots, honest and with each injected fault."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.crypto import ZERO_HASH, keccak
from node.db import MemoryDB
from node.eip712 import Domain
from node.genesis import load_genesis
from node.signing import Signer
from node.smt import SparseMerkleTree
from node.state import State
from node.stf import apply_transaction
from node.exceptions import InvalidTransaction
from node.transactions import Deposit, Fill, Order, decode_tx, encode_tx
from node.derive import Step
from prover.trace import BatchTrace, Fault

DOMAIN = Domain(901, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
NOW = 1_700_000_000
ORACLE = Signer(keccak(b"oracle"))
ALICE = Signer(keccak(b"alice"))
BOB = Signer(keccak(b"bob"))


def pre_state() -> State:
    genesis = replace(load_genesis(), oracle=ORACLE.address)
    tree = SparseMerkleTree(MemoryDB())
    return State(tree, tree.update(ZERO_HASH, genesis.leaves()))


def steps() -> list[Step]:
    def order(who: Signer, is_buy: bool, salt: int) -> Order:
        return Order(who.address, 1, is_buy, 166600, 10_000, salt, NOW + 60)

    def fill(salt: int) -> Fill:
        m, t = order(ALICE, False, salt), order(BOB, True, salt)
        return Fill(m, ALICE.sign_order(DOMAIN, m)[1], t, BOB.sign_order(DOMAIN, t)[1], 10_000, 166600)

    txs = [
        Deposit(0, ALICE.address, 10**10),
        Deposit(1, BOB.address, 10**10),
        fill(1),
        ORACLE.oracle_price(DOMAIN, 1, 170000, NOW),
        replace(fill(2), size=10**9),  # fails (Overfill): a no-op step
        fill(3),
        Deposit(2, BOB.address, 5),
    ]
    return [Step(NOW, encode_tx(tx)) for tx in txs]


def honest_roots() -> list[bytes]:
    state = pre_state()
    roots = [state.commit()]
    for step in steps():
        try:
            apply_transaction(state, decode_tx(step.tx), step.timestamp, DOMAIN)
        except InvalidTransaction:
            pass
        roots.append(state.commit())
    return roots


def test_honest_trace_is_step_by_step_application() -> None:
    trace = BatchTrace(pre_state(), steps(), DOMAIN)
    assert trace.roots == honest_roots()
    assert trace.fault_step is None
    assert trace.roots[4] == trace.roots[5]  # the overfill is a no-op
    assert trace.state_before(3).root == trace.roots[3]
    with pytest.raises(IndexError):
        trace.state_before(len(steps()))


@pytest.mark.parametrize("kind, from_step, at", [
    (Fault.FILL_COLLATERAL, 0, 2),
    (Fault.FILL_COLLATERAL, 3, 5),
    (Fault.SKIP_DEPOSIT, 0, 0),
    (Fault.SKIP_DEPOSIT, 2, 6),
    (Fault.FORGED_WITHDRAWAL, 4, 4),
    (Fault.ORACLE_PRICE, 0, 3),
    (Fault.LAST_STEP, 0, 6),
    (Fault.FAILED_VALID_TX, 4, 5),  # step 4 fails honestly, so step 5 is the one
])
def test_fault_is_wrong_from_its_step_on(kind: Fault, from_step: int, at: int) -> None:
    honest = honest_roots()
    trace = BatchTrace(pre_state(), steps(), DOMAIN, fault=kind, from_step=from_step)
    assert trace.fault_step == at
    assert trace.roots[: at + 1] == honest[: at + 1]
    assert trace.roots[at + 1] != honest[at + 1]
    assert trace.post_root != honest[-1]


def test_fault_with_no_applicable_step_leaves_the_trace_honest() -> None:
    trace = BatchTrace(pre_state(), steps()[:2], DOMAIN, fault=Fault.ORACLE_PRICE)
    assert trace.fault_step is None and trace.roots == honest_roots()[:3]


def test_fault_parse() -> None:
    assert Fault.parse("skip-deposit") is Fault.SKIP_DEPOSIT
    with pytest.raises(ValueError, match="kinds: fill-collateral"):
        Fault.parse("nope")


def test_oracle_fault_is_not_overwritten_by_a_later_price() -> None:
    more = steps()[:4] + [Step(NOW, encode_tx(ORACLE.oracle_price(DOMAIN, 1, 171000, NOW + 1)))]
    honest = BatchTrace(pre_state(), more, DOMAIN)
    faulty = BatchTrace(pre_state(), more, DOMAIN, fault=Fault.ORACLE_PRICE)
    assert faulty.fault_step == 3
    assert faulty.roots[4] != honest.roots[4] and faulty.post_root != honest.post_root
    assert faulty.state_before(4).markets[1].oracle_price == 170001
