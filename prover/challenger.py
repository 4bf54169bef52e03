"""The challenger: proves wrong state roots wrong on L1, from L1 data alone
(docs/protocol.md "Disputes (L1)").

It runs a replica (``node.replica.Replica``: the chain derived from the
Rollup's calldata and deposit queue) and, on each ``step()``:

1. opens a game against the first batch whose posted state root differs
   from the derived one, while that batch's challenge window is open (one
   game per batch id at a time), passing the batch's data (read back from
   its submitBatch transaction) unless the game already holds the batch's
   step commitment;
2. plays each of its games: picks the first segment of the defender's
   dissection whose end root differs from its own (its own roots come from
   re-executing only that batch, ``prover.trace.BatchTrace``), and once a
   single step is left proves it with the one-step prover; it calls
   ``timeout`` when the defender's clock has run out and ``void`` on games
   whose batch was deleted by another game;
3. claims the bonds it has won.

An honest challenger needs ``1 + ceil(log_k(steps)) + 1`` transactions per
game (open, one pick per dissection round, the proof).

``mode`` picks a dishonest variant for tests and demos (issue 7 item 6):
``malicious`` disputes correct roots (it picks segment 0 and never proves,
so it loses on its clock or to the defender's own proof); ``colluding``
disputes wrong roots but plays to lose the same way (a proposer's friend
trying to shield a wrong root: another honest game still deletes it);
``silent`` disputes wrong roots and then never moves (it loses on its
clock).
"""

from __future__ import annotations

import logging
from typing import Any

from l1_stub.client import TransactionReverted, revert_reason, wait_receipt
from l1_stub.disputes import (
    DisputeClient,
    GameState,
    Party,
    Status,
    pick_segment,
    points,
)
from prover.trace import BatchTrace
from sequencer.defender import Move, MoveGuard, claim_credits, clock_expired, prove_step

log = logging.getLogger("derivnet.challenger")

MODES = ("honest", "malicious", "colluding", "silent")


class Challenger:
    """Disputes and games of one challenger key over a replica.

    ``replica`` must have synced (``replica.sync()``) before ``step()``;
    ``ChallengerLoop`` (below) does both. Raises ValueError for an unknown
    ``mode``."""

    def __init__(self, replica: Any, disputes: DisputeClient, key: bytes,
                 mode: str = "honest") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown challenger mode {mode!r}; modes: {', '.join(MODES)}")
        self.replica = replica
        self.rollup = replica.rollup
        self.disputes = disputes
        self.key = key
        self.mode = mode
        self.address = disputes.w3.eth.account.from_key(key).address
        self.games: dict[int, int] = {}  # game id -> batch id, while active
        self.disputed: set[int] = set()  # batch ids opened against
        self.moves: list[Move] = []
        self._traces: dict[tuple[int, bytes], BatchTrace] = {}
        self.guard = MoveGuard()
        self._games_seen = 0  # games below this id were looked at by _adopt

    # -- traces --------------------------------------------------------------
    def trace(self, index: int) -> BatchTrace:
        """The honest trace of batch ``index`` as derived (cached per batch
        and commitment). Raises KeyError if the replica has not derived it."""
        info = self.replica.chain.batch(index)
        if info is None:
            raise KeyError(f"batch {index} is not derived")
        key = (index, info.tx_root)
        if key not in self._traces:
            state, steps = self.replica.batch_pre_state(index)
            self._traces[key] = BatchTrace(state, steps, self.replica.domain)
        return self._traces[key]

    # -- one round -------------------------------------------------------------
    def step(self) -> list[Move]:
        """Open what needs disputing, move in every own game, claim credits."""
        sent: list[Move] = []
        d = self.disputes
        self._adopt()
        head = d.w3.eth.get_block("latest")
        now, at = int(head["timestamp"]), int(head["number"])
        target = self._target(now, at)
        if target is not None:
            opened = self._open(target, at)
            if opened is not None:
                sent.append(opened)
        for gid in sorted(self.games):
            g = d.get_game(gid)
            if g.status != Status.ACTIVE:
                del self.games[gid]
                log.info("challenger: game %d over: %s", gid, g.status.name)
                continue
            move = self.guard.play(gid, g, lambda: self._move(gid, g, now))
            if move is not None:
                sent.append(move)
        claimed = claim_credits(d, self.key, self.address)
        if claimed is not None:
            sent.append(claimed)
        self.moves.extend(sent)
        return sent

    def play(self) -> None:
        """``step()`` with every move logged (the challenger process's round)."""
        for move in self.step():
            log.info("challenger: %s in game %d (tx 0x%s)", move.kind, move.game, move.tx.hex())

    def _adopt(self) -> None:
        """Take up this key's games on L1 that this instance has not seen:
        after a restart (also a kill -9) the games it opened go on, and no
        second bond is posted against a batch it already disputes. Games and
        disputed batches live on L1, so nothing of them is lost with the
        process. One ``get_game`` per game opened since the last call."""
        d = self.disputes
        count = d.game_count()
        for gid in range(self._games_seen, count):
            g = d.get_game(gid)
            if g.challenger == self.address:
                self.disputed.add(g.batch_id)
                if g.status == Status.ACTIVE:
                    self.games.setdefault(gid, g.batch_id)
        self._games_seen = count

    def _open(self, target: int, at: int) -> Move | None:
        """Open a game against batch ``target`` (as read at L1 block ``at``).
        None if the open reverted: L1 moved on between the read and the
        open's block (another game deleted the batch, its window closed), no
        bond was taken and the next round looks again."""
        d = self.disputes
        before = d.game_count()
        tx = bytes(d.open(self.key, target, self._open_data(target, at)))
        try:
            self._await(tx)
        except TransactionReverted as exc:
            log.warning("challenger: open against batch %d reverted (%s); L1 changed since "
                        "block %d, looking again next round", target, exc.reason, at)
            return None
        gid = before  # ids are sequential; find ours if another open raced
        for candidate in range(before, d.game_count()):
            g = d.get_game(candidate)
            if g.challenger == self.address and g.batch_index == target:
                gid = candidate
                break
        g = d.get_game(gid)
        self.games[gid] = g.batch_id
        self.disputed.add(g.batch_id)
        log.warning("challenger: disputing batch %d (game %d)", target, gid)
        return Move("open", gid, tx)

    def _await(self, tx: bytes) -> None:
        """Wait for ``tx``; raises TransactionReverted if it reverted."""
        receipt = wait_receipt(self.disputes.w3, tx)
        if receipt["status"] != 1:
            raise TransactionReverted(receipt, revert_reason(self.disputes.w3, receipt))

    def _target(self, now: int, at: int) -> int | None:
        """The batch to open a game against now, if any, read at L1 block
        ``at`` (whose timestamp is ``now``): one consistent view, since a
        game may delete batches at any block (also since the replica's sync)."""
        snap = self.replica.l1_snapshot
        if snap is None or snap.frozen:
            return None
        window = self.rollup.challenge_window()
        first = snap.finalized_batch_count
        latest = self.replica.chain.latest_batch()
        derived = latest.index + 1 if latest else 0
        on_l1 = self.rollup.batch_count(at)
        for index in range(first, min(derived, on_l1)):
            info = self.replica.chain.batch(index)
            wrong = info is not None and index in self.replica.mismatched
            if (self.mode == "malicious") == wrong:
                continue  # malicious disputes correct roots, every other mode wrong ones
            record = self.rollup.get_batch(index, at)
            if now >= record.l1_timestamp + window:
                continue
            if self.rollup.batch_id(index, at) in self.disputed:
                if self.mode != "malicious":
                    return None  # our game on the first wrong batch is running
                continue
            return index
        return None

    def _open_data(self, index: int, at: int | str = "latest") -> bytes:
        """The data ``open`` needs for batch ``index``: b"" if the game
        already holds the batch's step commitment, else the batch data of
        its submitBatch transaction (the L1 block the replica derived it
        from). Raises KeyError if the replica has not derived the batch."""
        if self.disputes.tx_root(self.rollup.batch_id(index, at), at) != b"\x00" * 32:
            return b""
        info = self.replica.chain.batch(index)
        if info is None:
            raise KeyError(f"batch {index} is not derived")
        for s in self.rollup.batch_submissions(info.l1_block, info.l1_block):
            if s.index == index and s.data_hash == info.data_hash:
                return s.batch_data
        raise KeyError(f"batch {index}: no submitBatch in L1 block {info.l1_block}")

    def _move(self, gid: int, g: GameState, now: int) -> Move | None:
        d = self.disputes
        if self.rollup.batch_id(g.batch_index) != g.batch_id:
            return Move("void", gid, bytes(d.void(self.key, gid)))
        if g.turn == Party.DEFENDER:
            if clock_expired(g, now):
                return Move("timeout", gid, bytes(d.timeout(self.key, gid)))
            return None
        if self.mode == "silent":
            return None
        if g.single_step:
            if self.mode in ("malicious", "colluding"):
                return None  # plays to lose: never proves
            trace = self.trace(g.batch_index)
            log.info("challenger: proving step %d of batch %d (game %d)", g.lo, g.batch_index, gid)
            return Move("prove", gid, prove_step(d, self.key, gid, trace, g.lo,
                                                 self.replica.domain))
        positions = points(g.lo, g.hi, d.degree())
        if self.mode in ("malicious", "colluding"):
            segment = 0
        else:
            trace = self.trace(g.batch_index)
            segment = pick_segment(d.points(gid), lambda p: trace.roots[p], positions)
        return Move("pick", gid, bytes(d.pick(self.key, gid, segment)))


def run_challenger(config: Any, key: bytes, mode: str = "honest", ready: Any = None) -> None:
    """The ``derivnet challenger`` process: a replica (serving its read-only
    JSON-RPC) and a challenger with ``key`` playing every game it opens.
    ``ready(challenger)`` is called once it serves."""
    import trio

    from node.replica import Replica
    from node.server import serve_jsonrpc

    replica = Replica(config)
    try:
        challenger = Challenger(replica, DisputeClient(replica.w3, replica.deployment), key, mode)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_jsonrpc, replica.app, config.host, config.port)
                nursery.start_soon(replica.follow, challenger.play)
                if ready is not None:
                    ready(challenger)

        trio.run(main)
    finally:
        replica.close()
