"""The dispute game and the Rollup's side of it (docs/protocol.md "Disputes
(L1)"), played against the test machine (tests/contracts/TestMachine.vy):
the post root of a step is keccak(pre_root || keccak(timestamp u64 || tx)),
so both parties' roots are computed here exactly as the contract checks them.

Parties: the sequencer (dev account 0) defends; challengers are dev accounts
1 and 2; dev account 3 is a bystander who proves, times out and finalizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from l1_stub.chain import EmbeddedL1
from l1_stub.client import (
    ETHER,
    Deployment,
    RollupClient,
    TransactionReverted,
    deploy,
    send_deploy,
    wait_receipt,
)
from l1_stub.disputes import (
    DisputeClient,
    Party,
    Status,
    inner_points,
    pick_segment,
    points,
    step_leaf,
    step_proof,
)
from node.batch import BatchBlock, batch_commitment, encode_batch
from node.crypto import keccak
from node.derive import split_blocks
from node.transactions import Deposit, encode_tx

GENESIS_ROOT = keccak(b"derivnet genesis")
L2_CHAIN_ID = 901
BOND_C = 3 * 10**17  # challenger bond, wei (divisible by 3: exact burn)
BOND_P = 6 * 10**17  # proposer bond

Step = tuple[int, bytes]  # (block timestamp, encoded tx)


def machine_step(pre: bytes, step: Step) -> bytes:
    """The test machine's transition (TestMachine.prove_step)."""
    return keccak(pre + step_leaf(*step))


def roots_of(start: bytes, steps: Sequence[Step]) -> list[bytes]:
    """Honest roots r_0 = start .. r_n after each step."""
    out = [start]
    for s in steps:
        out.append(machine_step(out[-1], s))
    return out


def oracle_like(i: int, seed: bytes = b"") -> bytes:
    """An 86-byte OraclePrice-typed transaction (the Rollup splits by type
    and size only; the test machine does not decode it)."""
    return b"\x03" + (keccak(seed + i.to_bytes(4, "big")) * 3)[:85]


@dataclass
class Posted:
    """A batch posted by the test: its index, steps, honest roots and the
    roots the defender claims (``claimed[p]`` after step p)."""

    index: int
    steps: list[Step]
    honest: list[bytes]
    claimed: list[bytes]
    data: bytes = b""  # the batch data (submitBatch argument)

    @property
    def leaves(self) -> list[bytes]:
        return [step_leaf(*s) for s in self.steps]


@dataclass
class Env:
    l1: EmbeddedL1
    deployment: Deployment
    rollup: RollupClient
    game: DisputeClient
    degree: int
    clock: int
    deposits: list[tuple[bytes, int]] = field(default_factory=list)

    @property
    def w3(self):
        return self.l1.w3

    def key(self, i: int) -> bytes:
        return self.l1.dev_keys[i]

    def addr(self, i: int) -> str:
        return self.l1.dev_accounts[i]

    def wait(self, tx_hash, check: bool = True):
        return wait_receipt(self.w3, tx_hash, check=check)

    def now(self) -> int:
        return self.l1.head()[1]

    def warp(self, seconds: int) -> int:
        """Mine a block ``seconds`` after the head block; its timestamp."""
        target = self.now() + seconds
        self.l1.set_next_block_timestamp(target)
        self.l1.mine()
        return self.now()

    def reverts(self, fn, reason: str, sender: int = 3, value: int = 0):
        with pytest.raises(ContractLogicError) as info:
            fn.call({"from": self.addr(sender), "value": value})
        assert reason in str(info.value), str(info.value)

    def deposit(self, user: int, to: bytes, amount: int) -> None:
        c = self.rollup
        self.wait(c.faucet(self.key(user), amount))
        self.wait(c.approve(self.key(user), amount))
        self.wait(c.deposit(self.key(user), to, amount))
        self.deposits.append((to, amount))

    def post(self, n: int, *, fault: int | None = None, ts: int | None = None,
             with_deposits: bool = False, seed: bytes = b"", blocks: int = 1) -> Posted:
        """Post a batch of ``n`` steps at L2 time ``ts`` (default: the L1
        head's); the defender's roots are honest up to step ``fault`` and
        wrong after it (``fault=None``: an honest batch). ``with_deposits``
        first consumes the unconsumed queue entries."""
        ts = self.now() if ts is None else ts
        txs: list[bytes] = []
        start_dep = self.rollup.deposits_consumed()
        if with_deposits:
            txs += [encode_tx(Deposit(i, *self.deposits[i]))
                    for i in range(start_dep, len(self.deposits))]
        txs += [oracle_like(i, seed) for i in range(n - len(txs))]
        per = max(1, math.ceil(len(txs) / blocks))
        chunks = [txs[i:i + per] for i in range(0, len(txs), per)] or [[]]
        bb = [BatchBlock(ts, 1, tuple(chunk)) for chunk in chunks]
        steps = [(ts, tx) for tx in txs]
        index = self.rollup.batch_count()
        honest = roots_of(self.rollup.rollup.functions.start_root(index).call(), steps)
        claimed = [r if fault is None or p <= fault else keccak(b"wrong" + p.to_bytes(4, "big"))
                   for p, r in enumerate(honest)]
        deposit_end = start_dep + sum(1 for tx in txs if tx[0] == 1)
        data = encode_batch(bb)
        self.wait(self.rollup.submit_batch(self.key(0), data, claimed[-1], deposit_end))
        return Posted(index, steps, honest, claimed, data)

    def open(self, batch: Posted, challenger: int = 1) -> tuple[int, dict]:
        receipt = self.wait(self.game.open(self.key(challenger), batch.index, batch.data))
        (log,) = self.game.game.events.GameOpened().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["game"]), receipt


Chooser = Callable[[list[bytes], list[int]], int]


def honest_chooser(batch: Posted) -> Chooser:
    return lambda roots, pts: pick_segment(roots, lambda p: batch.honest[p], pts)


def last_segment(roots: list[bytes], pts: list[int]) -> int:
    return len(pts) - 2


@dataclass
class Played:
    status: Status
    challenger_txs: int
    defender_txs: int
    gas: int
    challenger_gas: int


def play(env: Env, game: int, batch: Posted, choose: Chooser, *, challenger: int = 1,
         prover: int | None = None, opened_gas: int = 0) -> Played:
    """Play ``game`` to the end: the defender dissects with ``batch.claimed``,
    the challenger picks with ``choose``; the single step is proven by
    ``prover`` (default: the challenger). Counts the challenger's
    transactions including the opening."""
    dc = env.game
    c_txs, d_txs, gas, c_gas = 1, 0, opened_gas, opened_gas
    prover = challenger if prover is None else prover
    while True:
        g = dc.get_game(game)
        if not g.active:
            return Played(g.status, c_txs, d_txs, gas, c_gas)
        if g.turn == Party.DEFENDER:
            roots = [batch.claimed[p] for p in inner_points(g.lo, g.hi, env.degree)]
            r = env.wait(dc.dissect(env.key(0), game, roots))
            d_txs += 1
        elif g.single_step:
            ts, tx = batch.steps[g.lo]
            r = env.wait(dc.prove(env.key(prover), game, ts, tx, step_proof(batch.leaves, g.lo)))
            c_txs += prover == challenger
            c_gas += r["gasUsed"] if prover == challenger else 0
        else:
            pts = points(g.lo, g.hi, env.degree)
            roots = dc.points(game)
            assert len(roots) == len(pts)
            r = env.wait(dc.pick(env.key(challenger), game, choose(roots, pts)))
            c_txs += 1
            c_gas += r["gasUsed"]
        gas += r["gasUsed"]


def make_env(degree: int = 16, clock: int = 600, challenge_window: int = 3600,
             **kw) -> Env:
    l1 = EmbeddedL1(auto_mine=True)
    machine = wait_receipt(l1.w3, send_deploy(l1.w3, l1.dev_keys[0], "TestMachine"))
    d = deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], GENESIS_ROOT, L2_CHAIN_ID,
               prover=machine["contractAddress"], dissection_degree=degree, clock=clock,
               challenger_bond=BOND_C, proposer_bond=BOND_P,
               challenge_window=challenge_window, **kw)
    return Env(l1, d, RollupClient(l1.w3, d), DisputeClient(l1.w3, d), degree, clock)


@pytest.fixture
def env() -> Env:
    return make_env()


def max_challenger_txs(steps: int, degree: int) -> int:
    rounds = 0
    while degree ** rounds < steps:
        rounds += 1
    return rounds + 2


def balance(env: Env, who: str) -> int:
    return int(env.w3.eth.get_balance(who))


def fee(receipt) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


# ------------------------------------------------------------------ games


def test_deploy_wires_game_and_rollup(env: Env):
    dc, rc = env.game, env.rollup
    assert rc.dispute_game_address() == dc.address == env.deployment.dispute_game
    assert dc.defender() == env.addr(0)
    assert (dc.degree(), dc.clock_seconds(), dc.challenger_bond()) == (16, 600, BOND_C)
    assert rc.proposer_bond() == BOND_P
    assert rc.max_drift() == 300
    from node.eip712 import Domain

    domain = Domain(L2_CHAIN_ID, bytes.fromhex(env.deployment.rollup[2:]))
    assert dc.domain_separator() == domain.separator
    env.reverts(dc.game.functions.initialize(env.deployment.rollup), "dispute: only deployer")
    env.reverts(dc.game.functions.initialize(env.deployment.rollup), "dispute: already initialized",
                sender=0)


def test_challenger_wins_and_batch_is_deleted(env: Env):
    b0 = env.post(5)
    bad = env.post(100, fault=37)
    later = env.post(3)
    assert env.rollup.batch_count() == 3
    c_before = balance(env, env.addr(1))
    game, opened = env.open(bad)
    assert env.game.unresolved(env.rollup.batch_id(bad.index)) == 1
    played = play(env, game, bad, honest_chooser(bad), opened_gas=opened["gasUsed"])
    assert played.status == Status.CHALLENGER_WON
    assert played.challenger_txs <= max_challenger_txs(100, 16) == 4
    # the bad batch and the later one are gone; progress rolls back to b0's end
    rc = env.rollup
    assert rc.batch_count() == 1
    assert rc.next_l2_block() == 1 + rc.get_batch(0).block_count
    assert rc.latest_state_root() == b0.claimed[-1]
    assert rc.batch_id(1) == rc.batch_id(2) == 0
    # bonds: the challenger gets its bond back and 2/3 of the proposer bond,
    # 1/3 burned; the later batch's bond is claimable by the sequencer
    assert env.game.credits(env.addr(1)) == BOND_C + BOND_P - BOND_P // 3
    assert env.game.burned() == BOND_P // 3
    assert rc.sequencer_bonds() == BOND_P
    assert balance(env, env.game.address) == BOND_C + BOND_P
    before = balance(env, env.addr(1))
    receipt = env.wait(env.game.claim(env.key(1)))
    assert balance(env, env.addr(1)) == before + BOND_C + BOND_P - BOND_P // 3 - fee(receipt)
    assert balance(env, env.addr(1)) > c_before  # the challenger gained, gas included
    assert balance(env, env.game.address) == env.game.burned()
    s_before = balance(env, env.addr(0))
    r = env.wait(rc.claim_bonds(env.key(3)))  # anyone: paid to the sequencer
    assert balance(env, env.addr(0)) == s_before + BOND_P and r["status"] == 1
    assert rc.sequencer_bonds() == 0
    env.reverts(env.game.game.functions.claim(), "dispute: nothing to claim", sender=1)
    # events tell the whole story: the tree walked, the defender's roots
    history = env.game.history(game, with_gas=True)
    kinds = [e.kind for e in history.events]
    assert kinds[0] == "GameOpened" and kinds[-2:] == ["StepProved", "GameResolved"]
    assert all(e.gas_used > 0 for e in history.events)
    rounds = history.rounds(16)
    assert [(r.lo, r.hi) for r in rounds] == [(0, 100), (37, 43)]
    for r in rounds:
        assert r.roots == [bad.claimed[p] for p in r.positions[1:-1]]
        assert r.picked is not None
        assert r.positions[r.picked] <= 37 < r.positions[r.picked + 1]
    assert later.index == 2


def test_malicious_challenger_loses_and_batch_finalizes():
    env = make_env(challenge_window=120)
    good = env.post(50)
    game, opened = env.open(good, challenger=2)
    played = play(env, game, good, last_segment, challenger=2, prover=3)
    assert played.status == Status.DEFENDER_WON
    assert env.game.credits(env.addr(0)) == BOND_C - BOND_C // 3
    assert env.game.burned() == BOND_C // 3
    assert env.game.credits(env.addr(2)) == 0
    # finality after the window; the proposer bond goes back to the sequencer
    env.warp(121)
    s_before = balance(env, env.addr(0))
    env.wait(env.rollup.finalize_batch(env.key(3), 0))
    assert balance(env, env.addr(0)) == s_before + BOND_P
    assert env.rollup.finalized_batch_count() == 1
    env.reverts(env.game.game.functions.open(0, b""), "dispute: batch final", value=BOND_C)


@pytest.mark.parametrize("degree", [2, 16])
@pytest.mark.parametrize("n,fault", [(1, 0), (2, 0), (2, 1), (3, 2), (17, 0), (17, 16), (64, 31),
                                     (100, 99)])
def test_honest_challenger_wins_any_fault(degree: int, n: int, fault: int):
    """The fault is the first wrong root after step ``fault`` (fault + 1 is
    the first wrong point): the last step, the first, the middle."""
    env = make_env(degree=degree)
    bad = env.post(n, fault=fault)
    game, _ = env.open(bad)
    played = play(env, game, bad, honest_chooser(bad))
    assert played.status == Status.CHALLENGER_WON
    assert played.challenger_txs <= max_challenger_txs(n, degree)
    assert env.rollup.batch_count() == 0


@pytest.mark.parametrize("degree", [2, 16])
def test_honest_defender_wins_against_any_pick(degree: int):
    env = make_env(degree=degree)
    good = env.post(33)
    for choose in (last_segment, lambda roots, pts: 0, lambda roots, pts: (len(pts) - 1) // 2):
        game, _ = env.open(good)
        assert play(env, game, good, choose, prover=0).status == Status.DEFENDER_WON
    assert env.game.credits(env.addr(0)) == 3 * (BOND_C - BOND_C // 3)
    assert env.rollup.batch_count() == 1


def test_step_count_zero_resolves_at_once(env: Env):
    empty_ok = env.post(0)  # a heartbeat batch: header only, root unchanged
    game, _ = env.open(empty_ok)
    g = env.game.get_game(game)
    assert g.status == Status.DEFENDER_WON and (g.lo, g.hi) == (0, 0)
    assert env.rollup.batch_count() == 1
    empty_bad = env.post(0, fault=-1)  # claims another root after no step
    game, _ = env.open(empty_bad)
    assert env.game.get_game(game).status == Status.CHALLENGER_WON
    assert env.rollup.batch_count() == 1


def test_step_count_one(env: Env):
    one = env.post(1, fault=0)
    game, _ = env.open(one)
    g = env.game.get_game(game)
    assert (g.lo, g.hi, g.turn, g.single_step) == (0, 1, Party.CHALLENGER, True)
    env.reverts(env.game.game.functions.dissect(game, []), "dispute: not defender's turn", sender=0)
    env.reverts(env.game.game.functions.pick(game, 0), "dispute: single step", sender=1)
    ts, tx = one.steps[0]
    # the step must be leaf 0 of the commitment (no siblings for one leaf)
    env.reverts(env.game.game.functions.prove(game, ts + 1, tx, [], b""), "dispute: invalid step proof")
    env.reverts(env.game.game.functions.prove(game, ts, tx, [b"\x00" * 32], b""),
                "dispute: invalid step proof")
    assert play(env, game, one, honest_chooser(one)).status == Status.CHALLENGER_WON


def test_defender_silent_loses_on_clock():
    env = make_env(clock=30)
    bad = env.post(40, fault=3)
    game, _ = env.open(bad)
    g = env.game.get_game(game)
    env.reverts(env.game.game.functions.timeout(game), "dispute: clock not expired")
    env.warp(10)
    assert env.game.clocks(game) == (20, 30)
    env.l1.set_next_block_timestamp(g.last_move + 30)
    env.l1.mine()
    env.reverts(env.game.game.functions.timeout(game), "dispute: clock not expired")
    # the defender may still move at exactly 0 s left... but not one second later
    env.warp(1)
    roots = [bad.claimed[p] for p in inner_points(0, 40, 16)]
    env.reverts(env.game.game.functions.dissect(game, roots), "dispute: clock expired", sender=0)
    env.wait(env.game.timeout(env.key(3), game))
    assert env.game.get_game(game).status == Status.CHALLENGER_WON
    assert env.rollup.batch_count() == 0
    env.reverts(env.game.game.functions.timeout(game), "dispute: game over")


def test_challenger_silent_loses_on_clock():
    env = make_env(clock=30)
    bad = env.post(40, fault=3)
    game, _ = env.open(bad)
    roots = [bad.claimed[p] for p in inner_points(0, 40, 16)]
    env.wait(env.game.dissect(env.key(0), game, roots))
    d_left, c_left = env.game.clocks(game)
    assert c_left == 30 and d_left < 30
    env.warp(31)
    env.reverts(env.game.game.functions.pick(game, 0), "dispute: clock expired", sender=1)
    env.wait(env.game.timeout(env.key(3), game))
    assert env.game.get_game(game).status == Status.DEFENDER_WON
    assert env.rollup.batch_count() == 1  # the wrong root stands for this game...
    # ...but another challenger can still win inside the window; the game
    # already keeps the batch's step commitment, so it needs no batch data
    batch_id = env.rollup.batch_id(bad.index)
    assert env.game.tx_root(batch_id) == batch_commitment(split_blocks(bad.data))
    receipt = env.wait(env.game.open(env.key(2), bad.index))
    (log,) = env.game.game.events.GameOpened().process_receipt(receipt, errors=DISCARD)
    game2 = int(log["args"]["game"])
    assert play(env, game2, bad, honest_chooser(bad), challenger=2).status == Status.CHALLENGER_WON
    assert env.rollup.batch_count() == 0


def test_prove_after_challenger_clock_expired_reverts():
    env = make_env(clock=30)
    one = env.post(1, fault=0)
    game, _ = env.open(one)
    env.warp(31)
    ts, tx = one.steps[0]
    env.reverts(env.game.game.functions.prove(game, ts, tx, [], b""), "dispute: clock expired")
    env.wait(env.game.timeout(env.key(3), game))
    assert env.game.get_game(game).status == Status.DEFENDER_WON


def test_colluding_challenger_does_not_shield_a_wrong_root():
    env = make_env(challenge_window=300)
    bad = env.post(60, fault=20)
    colluder, _ = env.open(bad, challenger=2)
    honest, _ = env.open(bad, challenger=1)
    batch_id = env.rollup.batch_id(bad.index)
    assert env.game.unresolved(batch_id) == 2
    # the colluder throws its game: it picks a segment the defender has right
    assert play(env, colluder, bad, lambda roots, pts: 0, challenger=2,
                prover=0).status == Status.DEFENDER_WON
    assert env.game.unresolved(batch_id) == 1
    # the window passes with the honest game still open: no finality
    env.warp(301)
    assert not env.rollup.is_finalizable(0)
    env.reverts(env.rollup.rollup.functions.finalizeBatch(0), "finalize: dispute unresolved")
    assert play(env, honest, bad, honest_chooser(bad)).status == Status.CHALLENGER_WON
    assert env.rollup.batch_count() == 0
    assert env.game.credits(env.addr(1)) == BOND_C + BOND_P - BOND_P // 3
    assert env.game.credits(env.addr(0)) == BOND_C - BOND_C // 3


def test_finality_waits_for_every_game():
    env = make_env(challenge_window=100)
    good = env.post(10)
    game, _ = env.open(good)
    env.warp(101)
    assert not env.rollup.is_finalizable(0)
    env.reverts(env.rollup.rollup.functions.finalizeBatch(0), "finalize: dispute unresolved")
    assert play(env, game, good, last_segment, prover=3).status == Status.DEFENDER_WON
    assert env.rollup.is_finalizable(0)
    env.wait(env.rollup.finalize_batch(env.key(3), 0))
    env.reverts(env.game.game.functions.open(0, b""), "dispute: batch final", value=BOND_C)


def test_deletion_rolls_back_and_reposted_batch_is_new():
    env = make_env(challenge_window=600)
    alice, bob = b"\xaa" * 20, b"\xbb" * 20
    env.deposit(5, alice, 10**6)
    b0 = env.post(4, with_deposits=True, blocks=2)
    env.deposit(5, bob, 2 * 10**6)
    ts1 = env.now()
    b1 = env.post(6, fault=2, with_deposits=True, blocks=3)
    b2 = env.post(2, ts=ts1 + 5)
    rc = env.rollup
    assert (rc.batch_count(), rc.deposits_consumed(), rc.last_l2_timestamp()) == (3, 2, ts1 + 5)
    ids = [rc.batch_id(i) for i in range(3)]
    assert ids == [1, 2, 3]
    next_block_after_b0 = 1 + rc.get_batch(0).block_count
    on_b2, _ = env.open(b2, challenger=2)
    env.reverts(env.game.game.functions.void(on_b2), "dispute: batch exists")
    game, _ = env.open(b1)
    assert play(env, game, b1, honest_chooser(b1)).status == Status.CHALLENGER_WON
    assert (rc.batch_count(), rc.deposits_consumed(), rc.next_l2_block()) == (1, 1, next_block_after_b0)
    assert rc.last_l2_timestamp() == b0.steps[0][0]
    assert rc.latest_state_root() == b0.claimed[-1]
    # the game against the later batch is void: its bond comes back
    env.reverts(env.game.game.functions.pick(on_b2, 0), "dispute: batch gone", sender=2)
    env.wait(env.game.void(env.key(3), on_b2))
    assert env.game.get_game(on_b2).status == Status.VOID
    assert env.game.credits(env.addr(2)) == BOND_C
    assert env.game.unresolved(ids[2]) == 0
    # re-post honestly at index 1: a new id; the old games never touch it
    again = env.post(6, with_deposits=True)
    assert again.index == 1 and rc.batch_id(1) == 4
    assert rc.deposits_consumed() == 2
    env.reverts(env.game.game.functions.void(game), "dispute: game over")
    game3, _ = env.open(again)
    assert play(env, game3, again, last_segment, prover=0).status == Status.DEFENDER_WON
    assert rc.batch_count() == 2


def test_bond_accounting_adds_up():
    """Every wei paid in (bonds) is held for its owner, refunded or burned:
    the game holds the credits plus the burned share (unspendable)."""
    env = make_env()
    bad = env.post(8, fault=3)
    env.post(4)
    env.post(4)
    lose, _ = env.open(bad, challenger=2)
    win, _ = env.open(bad, challenger=1)
    play(env, lose, bad, lambda roots, pts: 0, challenger=2, prover=0)
    play(env, win, bad, honest_chooser(bad))
    paid_in = 3 * BOND_P + 2 * BOND_C
    burned = env.game.burned()
    assert burned == BOND_C // 3 + BOND_P // 3
    held = balance(env, env.deployment.rollup) + balance(env, env.game.address)
    assert held == paid_in
    assert env.rollup.sequencer_bonds() == 2 * BOND_P == balance(env, env.deployment.rollup)
    credits = {i: env.game.credits(env.addr(i)) for i in (0, 1, 2)}
    assert credits == {0: BOND_C - BOND_C // 3, 1: BOND_C + BOND_P - BOND_P // 3, 2: 0}
    assert sum(credits.values()) + burned == balance(env, env.game.address)
    for i in (0, 1):
        before = balance(env, env.addr(i))
        receipt = env.wait(env.game.claim(env.key(i)))
        assert balance(env, env.addr(i)) == before + credits[i] - fee(receipt)
    assert balance(env, env.game.address) == burned


# ------------------------------------------------------------------ timestamps


def test_timestamp_rules():
    env = make_env()
    rc, r = env.rollup, env.rollup.rollup.functions
    now = env.now()
    # within a batch: blocks may not go back in time
    data = encode_batch([BatchBlock(now, 1, ()), BatchBlock(now - 1, 1, ())])
    env.reverts(r.submitBatch(data, GENESIS_ROOT, 0), "batch: timestamp decreasing", sender=0,
                value=BOND_P)
    # ahead of L1 by more than max_drift (300 s): block.timestamp of the
    # pending block is at least the head's + 1
    ahead = encode_batch([BatchBlock(now + 302, 1, ())])
    env.reverts(r.submitBatch(ahead, GENESIS_ROOT, 0), "batch: timestamp ahead of L1", sender=0,
                value=BOND_P)
    env.l1.set_next_block_timestamp(now + 10)
    ok = env.post(1, ts=now + 310)  # exactly max_drift ahead of its L1 block
    assert rc.last_l2_timestamp() == now + 310
    # across batches: not older than the last posted block
    env.reverts(r.submitBatch(encode_batch([BatchBlock(now + 309, 1, ())]), GENESIS_ROOT, 0),
                "batch: timestamp decreasing", sender=0, value=BOND_P)
    env.post(0, ts=now + 310)  # equal is fine
    # the bond must be exact
    env.reverts(r.submitBatch(encode_batch([BatchBlock(now + 310, 1, ())]), GENESIS_ROOT, 0),
                "batch: wrong bond", sender=0, value=BOND_P - 1)
    # a deletion rolls the last timestamp back
    env.warp(30)
    bad = env.post(2, fault=0, ts=now + 320)
    game, _ = env.open(bad)
    play(env, game, bad, honest_chooser(bad))
    assert rc.last_l2_timestamp() == now + 310
    env.post(1, ts=now + 311)
    assert ok.index == 0


def test_sequencer_blocks_pass_the_timestamp_rules():
    """The sequencer stamps a block max(clock, parent timestamp): with a
    clock that jumps back, its blocks still never decrease, and the batcher's
    batch of them is accepted (its clock is L1 time, so never ahead)."""
    from node.chain import Chain
    from node.db import MemoryDB
    from node.eip712 import Domain
    from node.genesis import load_genesis
    from sequencer.batcher import plan_batch
    from sequencer.sequencer import Sequencer

    env = make_env()
    genesis = load_genesis()
    db = MemoryDB()
    Chain.initialize(db, genesis.leaves(), {"test": 1})
    now = [float(env.now() - 100)]
    seq = Sequencer(Chain(db, Domain(L2_CHAIN_ID, bytes.fromhex(env.deployment.rollup[2:]))),
                    lambda: now[0])
    stamps = []
    for step in (0, 5, -30, 2, -1, 40):
        now[0] += step
        block = seq.seal(empty=True)
        assert block is not None
        stamps.append(block.header.timestamp)
    assert stamps == sorted(stamps) and stamps[2] == stamps[1]
    planned = plan_batch(seq.chain, 1)
    assert planned is not None
    env.wait(env.rollup.submit_batch(env.key(0), planned.data, b"\x01" * 32, planned.deposit_end))
    assert env.rollup.last_l2_timestamp() == stamps[-1]


# ------------------------------------------------------------------ reverts


def test_open_reverts():
    env = make_env(challenge_window=50)
    g = env.game.game.functions
    env.reverts(g.open(0, b""), "dispute: wrong bond", value=BOND_C - 1)
    env.reverts(g.open(0, b""), "dispute: no such batch", value=BOND_C)
    posted = env.post(3)
    env.reverts(g.open(0, posted.data), "dispute: wrong bond", value=0)
    # the first game against a batch with steps needs the batch's own data
    env.reverts(g.open(0, b""), "dispute: batch data needed", value=BOND_C)
    env.reverts(g.open(0, posted.data + b"\x00"), "rollup: batch data mismatch", value=BOND_C)
    env.warp(50)
    env.reverts(g.open(0, posted.data), "dispute: challenge window closed", value=BOND_C)
    env.reverts(g.get_game(0), "dispute: no such game")
    env.reverts(g.points(0), "dispute: no such game")
    env.reverts(g.clocks(0), "dispute: no such game")
    env.reverts(g.void(0), "dispute: no such game")
    env.reverts(g.timeout(0), "dispute: no such game")
    env.reverts(g.dissect(0, []), "dispute: no such game", sender=0)
    env.reverts(g.pick(0, 0), "dispute: no such game", sender=1)
    # payments from anyone but the Rollup are refused
    with pytest.raises(Exception, match="dispute: unexpected payment"):
        env.w3.eth.call({"from": env.addr(3), "to": env.game.address, "value": 1})


def test_open_reverts_frozen_and_uninitialized():
    env = make_env(challenge_window=60, escape_delay=100)
    env.warp(101)
    env.wait(env.rollup.freeze(env.key(3)))
    env.reverts(env.game.game.functions.open(0, b""), "dispute: rollup frozen", value=BOND_C)
    # a game nobody bound to a Rollup
    receipt = wait_receipt(env.w3, send_deploy(env.w3, env.key(4), "DisputeGame",
                                               (env.game.prover(), 2, 30, 0)))
    from l1_stub.contracts import load_contract

    fresh = env.w3.eth.contract(address=receipt["contractAddress"], abi=load_contract("DisputeGame")[0])
    env.reverts(fresh.functions.open(0, b""), "dispute: not initialized")
    env.reverts(fresh.functions.initialize("0x" + "00" * 20), "dispute: zero rollup", sender=4)


@pytest.mark.parametrize("args,reason", [
    (("0x" + "00" * 20, 16, 30, 0), "dispute: zero prover"),
    (("0x" + "11" * 20, 1, 30, 0), "dispute: bad degree"),
    (("0x" + "11" * 20, 17, 30, 0), "dispute: bad degree"),
    (("0x" + "11" * 20, 2, 0, 0), "dispute: bad clock"),
])
def test_constructor_reverts(env: Env, args, reason: str):
    with pytest.raises(TransactionReverted) as info:
        wait_receipt(env.w3, send_deploy(env.w3, env.key(4), "DisputeGame", args))
    assert reason in info.value.reason


def test_deploy_validates_parameters():
    l1 = EmbeddedL1(auto_mine=True)
    for kw in ({"dissection_degree": 1}, {"dissection_degree": 17}, {"clock": 0},
               {"max_drift": -1}, {"proposer_bond": -1}, {"challenger_bond": 2**128}):
        with pytest.raises(ValueError):
            deploy(l1.w3, l1.dev_keys[0], l1.dev_accounts[0], GENESIS_ROOT, 901, **kw)
    # the Rollup refuses a zero dispute game
    from tests.test_l1_contracts import GENESIS_ROOT as G

    with pytest.raises(TransactionReverted, match="rollup: zero dispute game"):
        wait_receipt(l1.w3, send_deploy(l1.w3, l1.dev_keys[0], "Rollup", (
            l1.dev_accounts[1], l1.dev_accounts[0], G, 901, 60, 30, 120, "0x" + "00" * 20, 0, 0)))


def test_move_reverts(env: Env):
    bad = env.post(40, fault=5)
    game, _ = env.open(bad)
    g = env.game.game.functions
    inner = [bad.claimed[p] for p in inner_points(0, 40, 16)]
    env.reverts(g.dissect(game, inner), "dispute: only defender", sender=1)
    env.reverts(g.dissect(game, inner[:-1]), "dispute: wrong root count", sender=0)
    env.reverts(g.pick(game, 0), "dispute: not challenger's turn", sender=1)
    env.reverts(g.pick(game, 0), "dispute: only challenger", sender=2)
    env.reverts(g.prove(game, *bad.steps[0], step_proof(bad.leaves, 0), b""),
                "dispute: not a single step")
    env.wait(env.game.dissect(env.key(0), game, inner))
    assert env.game.points(game) == [bad.claimed[p] for p in points(0, 40, 16)]
    env.reverts(g.dissect(game, inner), "dispute: not defender's turn", sender=0)
    env.reverts(g.pick(game, 16), "dispute: no such segment", sender=1)
    # the step proof binds the transaction to its place in the commitment
    play_to_single = honest_chooser(bad)
    env.wait(env.game.pick(env.key(1), game, play_to_single(env.game.points(game),
                                                              points(0, 40, 16))))
    while not env.game.get_game(game).single_step:
        st = env.game.get_game(game)
        if st.turn == Party.DEFENDER:
            env.wait(env.game.dissect(env.key(0), game,
                                      [bad.claimed[p] for p in inner_points(st.lo, st.hi, 16)]))
        else:
            pts = points(st.lo, st.hi, 16)
            env.wait(env.game.pick(env.key(1), game, play_to_single(env.game.points(game), pts)))
    st = env.game.get_game(game)
    assert st.lo == 5
    other = (st.lo + 1) % 40
    env.reverts(g.prove(game, *bad.steps[other], step_proof(bad.leaves, other), b""),
                "dispute: invalid step proof")
    env.reverts(g.prove(game, *bad.steps[st.lo], step_proof(bad.leaves, st.lo)[:-1], b""),
                "dispute: invalid step proof")
    env.wait(env.game.prove(env.key(3), game, *bad.steps[st.lo], step_proof(bad.leaves, st.lo)))
    assert env.game.get_game(game).status == Status.CHALLENGER_WON
    env.reverts(g.pick(game, 0), "dispute: game over", sender=1)


def test_rollup_dispute_hooks_revert(env: Env):
    r = env.rollup.rollup.functions
    env.post(2)
    env.reverts(r.deleteBatches(0, 1), "rollup: only dispute game")
    assert env.rollup.batch_id(5) == 0


# ------------------------------------------------------------------ measures


@pytest.mark.parametrize("degree", [16, 2])
def test_whole_game_on_1000_steps(degree: int):
    """An honest challenger against a wrong root at the last step of a
    1,000-step batch: its transactions (open + picks + prove) and the gas of
    the whole game (both parties)."""
    env = make_env(degree=degree)
    bad = env.post(1000, fault=998)
    game, opened = env.open(bad)
    played = play(env, game, bad, honest_chooser(bad), opened_gas=opened["gasUsed"])
    assert played.status == Status.CHALLENGER_WON
    bound = max_challenger_txs(1000, degree)
    assert played.challenger_txs <= bound
    print(f"\n1000-step game, k={degree}: challenger {played.challenger_txs} txs "
          f"(bound {bound}), {played.challenger_gas} gas; defender {played.defender_txs} txs; "
          f"whole game {played.gas} gas")


# ------------------------------------------------------------------ config


def test_datadir_keeps_dispute_parameters():
    from node.datadir import DatadirMismatch, Requested, check_restart, resolve_windows

    base = Requested(None, None, None, None, None)
    devnet = resolve_windows(base)
    assert (devnet["dissection_degree"], devnet["clock"], devnet["max_drift"]) == (16, 30, 300)
    assert devnet["challenger_bond"] == devnet["proposer_bond"] == ETHER // 10
    mainnet = resolve_windows(Requested(None, "mainnet", None, None, None))
    assert (mainnet["clock"], mainnet["max_drift"]) == (302_400, 1800)
    asked = resolve_windows(Requested(None, None, None, None, None, dissection_degree=2, clock=5,
                                      challenger_bond=7, proposer_bond=0, max_drift=60))
    assert {k: asked[k] for k in ("dissection_degree", "clock", "challenger_bond",
                                  "proposer_bond", "max_drift")} == {
        "dissection_degree": 2, "clock": 5, "challenger_bond": 7, "proposer_bond": 0,
        "max_drift": 60}
    for bad in ({"dissection_degree": 1}, {"dissection_degree": 17}, {"clock": 0},
                {"max_drift": -1}):
        with pytest.raises(ValueError):
            resolve_windows(Requested(None, None, None, None, None, **bad))
    check_restart(asked, Requested(None, None, None, None, None, clock=5))
    with pytest.raises(DatadirMismatch, match="proposer_bond 0 wei, not 1 wei"):
        check_restart(asked, Requested(None, None, None, None, None, proposer_bond=1))
    with pytest.raises(DatadirMismatch, match="dissection_degree 2, not 16"):
        check_restart(asked, Requested(None, "devnet", None, None, None))


def test_cli_dispute_flags_are_validated():
    from click.testing import CliRunner

    from node.cli import main

    runner = CliRunner()
    help_text = runner.invoke(main, ["devnet", "--help"]).output
    for flag in ("--dissection-degree", "--clock", "--challenger-bond", "--proposer-bond",
                 "--max-drift"):
        assert flag in help_text
    for args in (["--dissection-degree", "1"], ["--dissection-degree", "17"], ["--clock", "0"],
                 ["--max-drift", "-1"], ["--proposer-bond", "-1"]):
        result = runner.invoke(main, ["devnet", *args])
        assert result.exit_code == 2 and "Invalid value" in result.output, result.output


def test_every_dispute_revert_reason_is_tested():
    """Every reason string in DisputeGame.vy occurs in this file."""
    import re
    from pathlib import Path

    from l1_stub.contracts import CONTRACTS_DIR

    source = (CONTRACTS_DIR / "DisputeGame.vy").read_text()
    reasons = set(re.findall(r'"(dispute: [^"\n]+)"', source))
    assert len(reasons) >= 25, sorted(reasons)
    text = Path(__file__).read_text()
    missing = sorted(r for r in reasons if text.count(f'"{r}"') < 1)
    assert not missing, missing
