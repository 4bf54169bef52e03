"""The defender: the proposer's side of every dispute against its batches
(docs/protocol.md "Disputes (L1)").

The Rollup's sequencer key is the defender of every game. On each L1 block
``Defender.step()`` looks at the active games and moves where it is the
defender's turn: it posts its state roots at the inner points of the
disputed range (``l1_stub.disputes.inner_points``), read from the batch's
trace (``prover.trace.BatchTrace``: re-execution of that batch only, from
its pre-state). It also ends games the other side lost on its clock
(``timeout``), voids games whose batch was deleted, proves a single step
itself when its own root there is honest (the game then ends at once
instead of waiting for the challenger's clock), and claims its credits.

What it defends is what the proposer posted: an honest proposer's trace is
the honest one; a faulty proposer (``devnet_injectFault``) defends its
faulty trace, so the game finds the faulty step. ``silent`` makes it never
dissect (it loses on its clock): the "silent defender" of issue 7 item 6.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from l1_stub.client import RollupClient
from l1_stub.disputes import DisputeClient, GameState, Party, Status, inner_points, step_proof
from node.eip712 import Domain
from node.transactions import DecodeError, decode_tx
from prover.trace import BatchTrace

log = logging.getLogger("derivnet.defender")


@dataclass(frozen=True)
class Move:
    """One L1 transaction a party sent: ``kind`` (dissect, pick, prove,
    timeout, void, claim, open), the game id and the transaction hash."""

    kind: str
    game: int
    tx: bytes


def prove_step(disputes: DisputeClient, key: bytes, game: int, trace: BatchTrace,
               lo: int, domain: Domain) -> bytes:
    """Send the one-step proof of step ``lo`` of ``trace``'s batch: its
    commitment path and the witness built from the state before it
    (``prover.witness.step_witness``). Returns the transaction hash."""
    from prover.witness import step_witness

    step = trace.steps[lo]
    witness = b""
    try:
        tx = decode_tx(step.tx)
    except DecodeError:
        tx = None  # an undecodable body is a no-op; the prover needs no witness for it
    if tx is not None:
        witness = step_witness(trace.state_before(lo), tx, step.timestamp, domain)
    siblings = step_proof([s.leaf for s in trace.steps], lo)
    return bytes(disputes.prove(key, game, step.timestamp, step.tx, siblings, witness))


def clock_expired(g: GameState, now: int) -> bool:
    """Whether the party to move in ``g`` has run out of time by L1 time
    ``now`` (``timeout`` then succeeds in any later block)."""
    left = g.defender_clock if g.turn == Party.DEFENDER else g.challenger_clock
    return now - g.last_move > left


RESEND_AFTER = 30.0  # seconds a move may stay unmined before it is sent again


class MoveGuard:
    """Sends at most one move per game position: after a move the game's
    (status, lo, hi, turn) is remembered and no move is sent for it again
    until it changes (the move was mined) or ``RESEND_AFTER`` seconds pass
    (it was dropped). Keeps a party's L1 transaction count minimal without
    waiting for receipts."""

    def __init__(self) -> None:
        self._sent: dict[int, tuple[tuple[int, int, int, int], float]] = {}

    @staticmethod
    def _position(g: GameState) -> tuple[int, int, int, int]:
        return (int(g.status), g.lo, g.hi, int(g.turn))

    def pending(self, gid: int, g: GameState) -> bool:
        """True if a move for this exact position was sent and may still land."""
        import time

        sent = self._sent.get(gid)
        return (sent is not None and sent[0] == self._position(g)
                and time.monotonic() - sent[1] < RESEND_AFTER)

    def sent(self, gid: int, g: GameState) -> None:
        import time

        self._sent[gid] = (self._position(g), time.monotonic())

    def play(self, gid: int, g: GameState, move: Callable[[], Move | None]) -> Move | None:
        """``move()`` unless a move for this position may still land; the
        move it returns (if any) is remembered."""
        if self.pending(gid, g):
            return None
        made = move()
        if made is not None:
            self.sent(gid, g)
        return made


def claim_credits(disputes: DisputeClient, key: bytes, address: str) -> Move | None:
    """Withdraw the bonds ``address`` won or got back, if any (``claim``)."""
    if disputes.credits(address) > 0:
        return Move("claim", -1, bytes(disputes.claim(key)))
    return None


class Defender:
    """Moves for the defender (the sequencer key ``key``).

    ``trace_of(batch_index)`` gives the trace the proposer stands by for
    that batch (raising KeyError if it has none, e.g. a batch it did not
    post); ``honest(batch_index)`` says whether that trace is an honest
    execution (only then does the defender prove a step itself).
    """

    def __init__(self, disputes: DisputeClient, rollup: RollupClient, key: bytes, domain: Domain,
                 trace_of: Callable[[int], BatchTrace], honest: Callable[[int], bool],
                 *, silent: bool = False) -> None:
        self.disputes = disputes
        self.rollup = rollup
        self.key = key
        self.domain = domain
        self.trace_of = trace_of
        self.honest = honest
        self.silent = silent
        self.first_active = 0  # every game below it is over
        self.address = disputes.w3.eth.account.from_key(key).address
        self.moves: list[Move] = []
        self.guard = MoveGuard()

    def step(self) -> list[Move]:
        """One pass over the active games; returns the moves sent."""
        d = self.disputes
        sent: list[Move] = []
        count = d.game_count()
        now = int(d.w3.eth.get_block("latest")["timestamp"])
        still_active = None
        for gid in range(self.first_active, count):
            g = d.get_game(gid)
            if g.status != Status.ACTIVE:
                continue
            if still_active is None:
                still_active = gid
            move = self.guard.play(gid, g, lambda: self._move(gid, g, now))
            if move is not None:
                sent.append(move)
        self.first_active = count if still_active is None else still_active
        claimed = claim_credits(d, self.key, self.address)
        if claimed is not None:
            sent.append(claimed)
        self.moves.extend(sent)
        return sent

    def _move(self, gid: int, g: GameState, now: int) -> Move | None:
        d = self.disputes
        if self.rollup.batch_id(g.batch_index) != g.batch_id:
            return Move("void", gid, bytes(d.void(self.key, gid)))
        if g.turn == Party.CHALLENGER and clock_expired(g, now):
            return Move("timeout", gid, bytes(d.timeout(self.key, gid)))
        if g.turn == Party.DEFENDER and not self.silent:
            trace = self.trace_of(g.batch_index)
            degree = d.degree()
            roots = [trace.roots[p] for p in inner_points(g.lo, g.hi, degree)]
            log.info("dispute %d: dissecting steps %d..%d of batch %d", gid, g.lo, g.hi,
                     g.batch_index)
            return Move("dissect", gid, bytes(d.dissect(self.key, gid, roots)))
        if (g.turn == Party.CHALLENGER and g.single_step and not self.silent
                and self.honest(g.batch_index)):
            trace = self.trace_of(g.batch_index)
            if trace.roots[g.lo] == g.root_lo and trace.roots[g.hi] == g.root_hi:
                log.info("dispute %d: proving step %d of batch %d", gid, g.lo, g.batch_index)
                return Move("prove", gid, prove_step(d, self.key, gid, trace, g.lo, self.domain))
        return None
