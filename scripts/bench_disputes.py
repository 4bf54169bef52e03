"""Benchmark: the L1 transactions and gas of a whole dispute over a
1,000-step batch, played with the real one-step prover (issue 7).

An in-process L1 with the Rollup, the DisputeGame and the prover; one batch
of ``steps`` oracle prices whose posted root comes from a faulty trace
(``oracle-price`` from step ``fault_at`` on); a challenger and the defender
play it to the end with the same logic as ``prover.challenger`` /
``sequencer.defender`` (dissect with the posted trace, pick the first
disagreeing segment, prove the step). Prints each party's transactions and
gas; ``run()`` returns the figures.

    .venv/bin/python scripts/bench_disputes.py [--steps 1000] [--fault-at 700]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l1_stub.chain import EmbeddedL1  # noqa: E402
from l1_stub.client import RollupClient, deploy, wait_receipt  # noqa: E402
from l1_stub.disputes import (  # noqa: E402
    DisputeClient,
    Party,
    Status,
    inner_points,
    pick_segment,
    points,
)
from node.batch import BatchBlock, encode_batch  # noqa: E402
from node.crypto import ZERO_HASH  # noqa: E402
from node.db import MemoryDB  # noqa: E402
from node.derive import batch_steps  # noqa: E402
from node.eip712 import Domain  # noqa: E402
from node.genesis import load_genesis  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402
from node.smt import SparseMerkleTree  # noqa: E402
from node.state import State  # noqa: E402
from node.transactions import encode_tx  # noqa: E402
from prover.trace import BatchTrace, Fault  # noqa: E402
from sequencer.defender import prove_step  # noqa: E402


def run(steps: int = 1000, fault_at: int = 700, quiet: bool = False) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print  # noqa: E731
    keys = dev_keys(10)
    sequencer_key, challenger_key = keys[0], keys[9]
    oracle = Signer(keys[1])
    genesis = load_genesis()
    l1 = EmbeddedL1(chain_id=genesis.l1_chain_id)
    w3 = l1.w3
    tree = SparseMerkleTree(MemoryDB())
    root = tree.update(ZERO_HASH, genesis.leaves())
    dep = deploy(w3, sequencer_key, "0x" + genesis.sequencer.hex(), root, genesis.l2_chain_id,
                 mine=l1.mine)
    rollup = RollupClient(w3, dep)
    disputes = DisputeClient(w3, dep)
    domain = Domain(genesis.l2_chain_id, bytes.fromhex(dep.rollup[2:]))
    l1.mine()
    now = int(w3.eth.get_block("latest")["timestamp"])
    txs = tuple(encode_tx(oracle.oracle_price(domain, 1, 166_600 + i, now - steps + i))
                for i in range(steps))
    block = BatchBlock(now - 1, 0, txs)
    steps_list = batch_steps([block])
    honest = BatchTrace(State(tree, root), steps_list, domain)
    faulty = BatchTrace(State(tree, root), steps_list, domain, fault=Fault.ORACLE_PRICE,
                        from_step=fault_at)
    assert faulty.fault_step == fault_at
    batch_data = encode_batch([block])
    sent = rollup.submit_batch(sequencer_key, batch_data, faulty.post_root, 0)
    l1.mine()
    assert wait_receipt(w3, sent)["status"] == 1

    gas = {"challenger": 0, "defender": 0}
    count = {"challenger": 0, "defender": 0}

    def mined(party: str, tx: Any) -> None:
        l1.mine()
        receipt = wait_receipt(w3, tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"{party} move reverted")
        gas[party] += int(receipt["gasUsed"])
        count[party] += 1

    t0 = time.perf_counter()
    mined("challenger", disputes.open(challenger_key, 0, batch_data))
    degree = disputes.degree()
    proof_gas = 0
    while True:
        g = disputes.get_game(0)
        if g.status != Status.ACTIVE:
            break
        if g.turn == Party.DEFENDER:
            roots = [faulty.roots[p] for p in inner_points(g.lo, g.hi, degree)]
            mined("defender", disputes.dissect(sequencer_key, 0, roots))
        elif g.single_step:
            before = gas["challenger"]
            mined("challenger", prove_step(disputes, challenger_key, 0, honest, g.lo, domain))
            proof_gas = gas["challenger"] - before
        else:
            segment = pick_segment(disputes.points(0), lambda p: honest.roots[p],
                                   points(g.lo, g.hi, degree))
            mined("challenger", disputes.pick(challenger_key, 0, segment))
    g = disputes.get_game(0)
    seconds = time.perf_counter() - t0
    bound = math.ceil(math.log(steps, degree)) + 2
    say(f"dispute over a {steps:,}-step batch (fault at step {fault_at}, degree {degree}): "
        f"{g.status.name.lower()}")
    say(f"  challenger: {count['challenger']} transactions (bound ceil(log_k(steps)) + 2 = "
        f"{bound}), {gas['challenger']:,} gas (the one-step proof {proof_gas:,})")
    say(f"  defender:   {count['defender']} transactions, {gas['defender']:,} gas")
    say(f"  whole game: {count['challenger'] + count['defender']} L1 transactions, "
        f"{gas['challenger'] + gas['defender']:,} gas; played in {seconds:.1f} s")
    return {
        "dispute_steps": steps,
        "dispute_winner": g.status.name.lower(),
        "dispute_challenger_txs": count["challenger"],
        "dispute_challenger_tx_bound": bound,
        "dispute_defender_txs": count["defender"],
        "dispute_total_txs": count["challenger"] + count["defender"],
        "dispute_total_gas": gas["challenger"] + gas["defender"],
        "dispute_step_proof_gas": proof_gas,
    }


def osp_gas(quiet: bool = False, risk: bool = True) -> dict[str, int]:
    """Gas of one ``prove_step`` per transaction type (eth_estimateGas, the
    21,000 intrinsic gas and calldata included) on a small state (2 genesis
    markets, two funded traders with a position each; ``osp_gas_<type>``) and
    at the limits the state allows (64 markets, the fill's three accounts
    holding a position in each; ``osp_gas_<type>_at_limits``).
    ``FillFunding`` is a Fill after a FundingTick moved the market's index:
    both parties settle funding (the system leaf's pool is written).
    ``Liquidate`` closes a third trader's long below maintenance margin (at
    the limits: holding a position in every market) against alice's order,
    the insurance fund paying the shortfall; ``Deleverage`` closes it against
    alice's short (bob's at the limits) with an empty fund; ``SettleFunding`` settles alice's
    position after the tick. ``risk=False`` leaves out SettleFunding,
    Liquidate and Deleverage (the slowest to measure: a Liquidate proof at the
    limits runs ~3.3M gas in py-evm)."""
    from node.stf import apply_transaction
    from node.state import symbol_bytes
    from dataclasses import replace

    from node.state import Position
    from node.transactions import Deleverage, Deposit, Fill, Liquidate, ListMarket, Order, SettleFunding
    from prover.osp import OneStepProverClient, deploy_prover
    from prover.witness import step_witness

    say = (lambda *a: None) if quiet else print  # noqa: E731
    keys = dev_keys(10)
    genesis = load_genesis()
    admin, oracle = Signer(keys[0]), Signer(keys[1])
    alice, bob, carol = Signer(keys[5]), Signer(keys[6]), Signer(keys[7])
    l1 = EmbeddedL1(chain_id=genesis.l1_chain_id, auto_mine=True)
    prover = OneStepProverClient(l1.w3, deploy_prover(l1.w3, keys[0]).prover)
    domain = Domain(genesis.l2_chain_id, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"))
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
    now = 1_700_000_000

    def order(who: Signer, is_buy: bool, salt: int) -> Order:
        return Order(who.address, 1, is_buy, 166_600, 10_000, salt, now + 3600)

    def fill(salt: int) -> Fill:
        m, t = order(alice, False, salt), order(bob, True, salt)
        return Fill(m, alice.sign_order(domain, m)[1], t, bob.sign_order(domain, t)[1],
                    10_000, 166_600)

    for i, who in enumerate((alice, bob)):
        apply_transaction(state, Deposit(i, who.address, 10_000 * 10**6), now, domain)
    apply_transaction(state, fill(1), now, domain)
    state.commit()
    market = genesis.markets[0].market
    # the market has had a tick: the next one moves its index
    state.set_market(replace(state.markets[1], funding_time=now - 3_600))
    state.commit()

    def cases(deposit_index: int, market_id: int) -> dict[str, Any]:
        return {
            "Deposit": Deposit(deposit_index, alice.address, 10**6),
            "Fill": fill(2),
            "OraclePrice": oracle.oracle_price(domain, 1, 170_000, now),
            "Withdraw": alice.withdraw(domain, alice.address, 10**6, 0),
            "ListMarket": admin.list_market(domain, ListMarket(
                market_id, symbol_bytes(f"X{market_id}-USD"), market.price_decimals,
                market.size_decimals, 1, 1, 100_000, 50_000, 200, 500, 2_000, b"")),
            "FundingTick": oracle.funding_tick(domain, 1, now, 2_500),
        }

    def after_tick(state: State) -> State:
        """``state`` after the FundingTick of ``cases`` (a fill then settles)."""
        ticked = State(tree, state.root)
        apply_transaction(ticked, oracle.funding_tick(domain, 1, now, 2_500), now, domain)
        ticked.commit()
        assert ticked.markets[1].funding_index != state.markets[1].funding_index
        return ticked

    def underwater(state: State, fund: int, others: int) -> State:
        """``state`` with carol long 1 ETH bought at 2,000.00 with 100 USDC
        (equity -234 USDC at 1,666.00), a position in ``others`` more
        markets, and the insurance fund at ``fund``."""
        risky = State(tree, state.root)
        held = [Position(1, 10_000, 2_000 * 10**6)] + [Position(m, 1, 0) for m in range(3, 3 + others)]
        risky.set_account(carol.address, replace(risky.account(carol.address), collateral=-1_900 * 10**6,
                                                 positions=tuple(held)))
        risky.set_market(replace(risky.markets[1], open_interest=risky.markets[1].open_interest + 10_000))
        risky.set_system(replace(risky.system, insurance_fund=fund))
        risky.commit()
        return risky

    def liquidation(salt: int) -> Liquidate:
        o = Order(alice.address, 1, True, 158_300, 10_000, salt, now + 3600)
        return Liquidate(carol.address, o, alice.sign_order(domain, o)[1], 10_000, 158_300)

    def risk_cases(state: State, others: int, offset: Signer) -> tuple[State, dict[str, Any], State, dict[str, Any]]:
        return (underwater(state, 10**12, others), {"Liquidate": liquidation(7)},
                underwater(state, 0, others), {"Deleverage": Deleverage(carol.address, offset.address, 1, 10_000)})

    def measure(state: State, txs: dict[str, Any], suffix: str, label: str) -> dict[str, int]:
        out = {}
        for name, tx in txs.items():
            probe = State(tree, state.root)
            witness = step_witness(probe, tx, now, domain)
            post = prover.prove_step(state.root, now, tx, domain, witness)
            check = State(tree, state.root)
            apply_transaction(check, tx, now, domain)  # raises if the case is not valid
            assert post == check.commit(), f"{name}: the prover disagrees with the STF"
            key = f"osp_gas_{name.lower()}{suffix}"
            out[key] = prover.gas(state.root, now, tx, domain, witness)
            say(f"  one-step proof of a {name}{label}: {out[key]:,} gas")
        return out

    out = measure(state, cases(2, 3), "", "")
    settles = {"SettleFunding": SettleFunding(alice.address, 1)} if risk else {}
    out.update(measure(after_tick(state), {"FillFunding": fill(3), **settles},
                       "", " settling funding"))
    if risk:
        liq_state, liq, del_state, dele = risk_cases(state, 0, alice)
        out.update(measure(liq_state, liq, "", " (the fund pays)"))
        out.update(measure(del_state, dele, "", ""))
    # the worst case the state allows: 63 markets listed (the ListMarket makes
    # 64), and the three accounts a fill touches holding a position in each
    limits = State(tree, state.root)
    for i in range(3, 64):
        # every position owes funding: the margin checks settle-compute each
        limits.set_market(replace(market, id=i, oracle_price=1_000 + i, oracle_time=now,
                                  funding_index=10**9 + i, funding_time=now - 60))
        limits.set_symbol(i, symbol_bytes(f"M{i}-USD"))
    for who, sign in ((alice.address, 1), (bob.address, -1), (genesis.fee_account, 1)):
        acc = limits.account(who)
        held = tuple(Position(m, sign * 10_000, sign * 10**7) for m in range(1, 64))
        limits.set_account(who, replace(acc, collateral=10**15, positions=held))
    limits.commit()
    out.update(measure(limits, cases(2, 64), "_at_limits",
                       " at the limits (64 markets, 64 positions x 3 accounts)"))
    out.update(measure(after_tick(limits), {"FillFunding": fill(3), **settles},
                       "_at_limits", " settling funding at the limits"))
    if not risk:
        return out
    liq_state, liq, del_state, dele = risk_cases(limits, 61, bob)
    out.update(measure(liq_state, liq, "_at_limits", " at the limits (the liquidated in 62 markets)"))
    out.update(measure(del_state, dele, "_at_limits", " at the limits (the liquidated in 62 markets)"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--fault-at", type=int, default=700)
    a = p.parse_args()
    osp_gas()
    run(a.steps, a.fault_at)


if __name__ == "__main__":
    main()
