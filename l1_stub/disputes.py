"""L1 bindings for the DisputeGame (docs/protocol.md "Disputes (L1)").

``DisputeClient`` sends the moves (open, dissect, pick, prove, timeout, void,
claim) and reads a game's state and its event history; the pure helpers
(``segments``, ``points``, ``step_proof``, ``pick_segment``) give the
dissection arithmetic and the commitment path that both parties and the
inspector compute the same way as the contract.

Sending methods take the sender's private key and return the transaction
hash (``l1_stub.client.wait_receipt``); views read the ``latest`` block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from l1_stub.client import Deployment, send_call
from l1_stub.contracts import load_contract

# gas limits (measured in tests/test_dispute_game.py; see docs/protocol.md)
GAS_OPEN = 400_000
# open with batch data adds its calldata (at most the EIP-7623 floor, 40 gas
# per byte), ~330k of memory for the 128 KiB data buffers and
# Rollup.tx_root_of (~0.9k gas of execution per step: 0.77M for a full
# batch of 500 fills). Measured: 566k for 1 step, 4.29M (the calldata
# floor) for 500 fills (130 KB)
GAS_OPEN_DATA_BASE = 300_000
GAS_OPEN_PER_DATA_BYTE = 72
GAS_DISSECT_BASE = 120_000
GAS_DISSECT_PER_ROOT = 25_000
GAS_PICK = 120_000
GAS_PROVE_BASE = 300_000  # plus the prover's own gas (prove_gas argument)
GAS_TIMEOUT = 200_000
GAS_VOID = 100_000
GAS_CLAIM = 60_000

ZERO = b"\x00" * 32


def open_gas_limit(batch_data_len: int) -> int:
    """Gas limit ``DisputeClient.open`` uses with ``batch_data_len`` bytes of batch data."""
    if batch_data_len == 0:
        return GAS_OPEN
    return GAS_OPEN + GAS_OPEN_DATA_BASE + GAS_OPEN_PER_DATA_BYTE * batch_data_len


class Status(IntEnum):
    """A game's status (DisputeGame constants)."""

    ACTIVE = 1
    CHALLENGER_WON = 2
    DEFENDER_WON = 3
    VOID = 4  # the batch was deleted by another game: the challenger's bond refunded


class Party(IntEnum):
    """Whose move it is."""

    DEFENDER = 0
    CHALLENGER = 1


@dataclass(frozen=True)
class GameState:
    """A game as stored (``DisputeGame.get_game``): the disputed step range
    ``[lo, hi]`` with the agreed root after step ``lo`` and the defender's
    root after step ``hi``; clocks are seconds left as last charged (see
    ``DisputeClient.clocks`` for the running values); ``last_move`` is an L1
    timestamp; ``bond`` wei."""

    id: int
    batch_index: int
    batch_id: int
    challenger: str
    bond: int
    lo: int
    hi: int
    root_lo: bytes
    root_hi: bytes
    status: Status
    turn: Party
    defender_clock: int
    challenger_clock: int
    last_move: int

    @property
    def single_step(self) -> bool:
        """One step left: it must be proven (before the challenger's clock runs out)."""
        return self.hi - self.lo == 1

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE


@dataclass(frozen=True)
class GameEvent:
    """One DisputeGame event of a game: ``kind`` is the event name
    (GameOpened, Dissected, Picked, StepProved, GameResolved), ``args`` its
    decoded fields (bytes32 as bytes), with the L1 block, transaction hash
    and the transaction's gas used."""

    kind: str
    args: dict[str, Any]
    l1_block: int
    tx_hash: bytes
    gas_used: int = 0


@dataclass(frozen=True)
class Round:
    """One dissection of a game: the range ``[lo, hi]``, its points
    (``points(lo, hi, k)``), the defender's roots at the inner points, and
    the segment the challenger then picked (None: not yet, or never)."""

    lo: int
    hi: int
    positions: list[int]
    roots: list[bytes]
    picked: int | None


@dataclass
class GameHistory:
    """Every event of one game in order, for the inspector."""

    game: int
    events: list[GameEvent] = field(default_factory=list)

    def rounds(self, degree: int) -> list[Round]:
        """The dissection tree walked by the game, rebuilt from the events
        alone (``degree``: the game's dissection degree k)."""
        out: list[Round] = []
        for event in self.events:
            if event.kind == "Dissected":
                lo, hi = int(event.args["lo"]), int(event.args["hi"])
                out.append(Round(lo, hi, points(lo, hi, degree), list(event.args["roots"]), None))
            elif event.kind == "Picked" and out and out[-1].picked is None:
                last = out[-1]
                out[-1] = Round(last.lo, last.hi, last.positions, last.roots,
                                int(event.args["segment"]))
        return out


# ---------------------------------------------------------------- arithmetic


def segments(lo: int, hi: int, degree: int) -> int:
    """Number of segments a dissection of ``[lo, hi]`` has: min(k, hi - lo)."""
    return min(degree, hi - lo)


def points(lo: int, hi: int, degree: int) -> list[int]:
    """Step positions p_0 = lo .. p_s = hi of a dissection of ``[lo, hi]``:
    p_j = lo + (hi - lo) * j // s."""
    s = segments(lo, hi, degree)
    return [lo + (hi - lo) * j // s for j in range(s + 1)]


def inner_points(lo: int, hi: int, degree: int) -> list[int]:
    """The positions whose roots the defender posts (p_1 .. p_{s-1})."""
    return points(lo, hi, degree)[1:-1]


def pick_segment(roots: Sequence[bytes], honest: Callable[[int], bytes],
                 positions: Sequence[int]) -> int:
    """The segment an honest challenger picks: the first j whose end root
    ``roots[j + 1]`` differs from its own root at ``positions[j + 1]``
    (``honest(position)``); the start roots agree up to there. ``roots`` are
    the points' roots (``DisputeClient.points``). Raises ValueError if every
    root agrees (nothing to dispute)."""
    for j in range(len(roots) - 1):
        if bytes(roots[j + 1]) != bytes(honest(positions[j + 1])):
            return j
    raise ValueError("every root agrees: nothing to dispute")


def step_leaf(timestamp: int, tx: bytes) -> bytes:
    """The commitment leaf of one step: keccak(timestamp u64 || encoded tx)."""
    return keccak(timestamp.to_bytes(8, "big") + bytes(tx))


def step_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Siblings (bottom-up) of leaf ``index`` in the batch commitment: the
    Merkle tree of ``leaves`` padded with zero leaves to the next power of
    two (docs/protocol.md "Merkle root of a list"); empty for one leaf.
    Raises IndexError for a step outside the batch."""
    from node.merkle import merkle_proof

    if not 0 <= index < len(leaves):
        raise IndexError(f"step {index} not in a batch of {len(leaves)} steps")
    return merkle_proof([bytes(x) for x in leaves], index)


# ---------------------------------------------------------------- client


class DisputeClient:
    """Moves and views of the DisputeGame bound to a deployed Rollup."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        rollup_abi, _ = load_contract("Rollup")
        game_abi, _ = load_contract("DisputeGame")
        address = deployment.dispute_game
        if not address:
            rollup = w3.eth.contract(address=deployment.rollup, abi=rollup_abi)
            address = rollup.functions.dispute_game().call()
        self.address = to_checksum_address(address)
        self.game = w3.eth.contract(address=self.address, abi=game_abi)
        self.deploy_block = deployment.deploy_block
        self._degree: int | None = None

    # -- parameters -------------------------------------------------------

    def degree(self) -> int:
        """Dissection degree k (immutable)."""
        if self._degree is None:
            self._degree = int(self.game.functions.dissection_degree().call())
        return self._degree

    def clock_seconds(self) -> int:
        return int(self.game.functions.clock_seconds().call())

    def challenger_bond(self) -> int:
        return int(self.game.functions.challenger_bond().call())

    def prover(self) -> str:
        return to_checksum_address(self.game.functions.prover().call())

    def defender(self) -> str:
        return to_checksum_address(self.game.functions.defender().call())

    def domain_separator(self) -> bytes:
        return bytes(self.game.functions.domain_separator().call())

    # -- moves ------------------------------------------------------------

    def open(self, key: bytes, batch_index: int, batch_data: bytes = b"", *,
             bond: int | None = None) -> HexBytes:
        """Open a game against batch ``batch_index`` posting the challenger
        bond (``bond`` overrides it, e.g. to test the revert). ``batch_data``
        (the batch's submitBatch data) is needed by the first game against a
        batch with steps: the game computes and keeps the batch's step
        commitment from it (``tx_root``); later games may pass b""."""
        value = self.challenger_bond() if bond is None else bond
        fn = self.game.functions.open(batch_index, bytes(batch_data))
        return send_call(self.w3, key, fn, gas=open_gas_limit(len(batch_data)), value=value)

    def tx_root(self, batch_id: int, block: int | str = "latest") -> bytes:
        """The step commitment the game keeps for batch id ``batch_id``
        (zero until a game against it was opened with its data)."""
        return bytes(self.game.functions.tx_roots(batch_id).call(block_identifier=block))

    def dissect(self, key: bytes, game: int, roots: Sequence[bytes]) -> HexBytes:
        """The defender's roots at the inner points of the current range."""
        fn = self.game.functions.dissect(game, [bytes(r) for r in roots])
        return send_call(self.w3, key, fn,
                         gas=GAS_DISSECT_BASE + GAS_DISSECT_PER_ROOT * len(roots))

    def pick(self, key: bytes, game: int, segment: int) -> HexBytes:
        """The challenger keeps segment ``segment`` of the last dissection."""
        return send_call(self.w3, key, self.game.functions.pick(game, segment), gas=GAS_PICK)

    def prove(self, key: bytes, game: int, timestamp: int, tx: bytes,
              step_siblings: Sequence[bytes], witness: bytes = b"", *,
              prove_gas: int = 4_000_000) -> HexBytes:
        """Decide the single step ``lo`` of the game (anyone): ``tx`` is the
        encoded transaction, ``timestamp`` its block's, ``step_siblings`` its
        commitment path (``step_proof``), ``witness`` the prover's witness."""
        fn = self.game.functions.prove(game, timestamp, bytes(tx),
                                       [bytes(s) for s in step_siblings], bytes(witness))
        return send_call(self.w3, key, fn,
                         gas=GAS_PROVE_BASE + prove_gas + 16 * (len(witness) + len(tx)))

    def timeout(self, key: bytes, game: int) -> HexBytes:
        """End a game whose party to move ran out of time (anyone)."""
        return send_call(self.w3, key, self.game.functions.timeout(game), gas=GAS_TIMEOUT)

    def void(self, key: bytes, game: int) -> HexBytes:
        """End a game whose batch was deleted (anyone): bond refunded."""
        return send_call(self.w3, key, self.game.functions.void(game), gas=GAS_VOID)

    def claim(self, key: bytes) -> HexBytes:
        """Withdraw the sender's credits (bonds won or refunded)."""
        return send_call(self.w3, key, self.game.functions.claim(), gas=GAS_CLAIM)

    # -- views ------------------------------------------------------------

    def game_count(self, block: int | str = "latest") -> int:
        return int(self.game.functions.game_count().call(block_identifier=block))

    def get_game(self, game: int, block: int | str = "latest") -> GameState:
        g = self.game.functions.get_game(game).call(block_identifier=block)
        return GameState(
            id=game,
            batch_index=int(g[0]),
            batch_id=int(g[1]),
            challenger=to_checksum_address(g[2]),
            bond=int(g[3]),
            lo=int(g[4]),
            hi=int(g[5]),
            root_lo=bytes(g[6]),
            root_hi=bytes(g[7]),
            status=Status(int(g[8])),
            turn=Party(int(g[9])),
            defender_clock=int(g[10]),
            challenger_clock=int(g[11]),
            last_move=int(g[12]),
        )

    def points(self, game: int) -> list[bytes]:
        """Roots at the points of the current range: root_lo, the defender's
        inner roots once it has dissected, root_hi."""
        return [bytes(r) for r in self.game.functions.points(game).call()]

    def clocks(self, game: int) -> tuple[int, int]:
        """Seconds left (defender, challenger) at the latest block."""
        d, c = self.game.functions.clocks(game).call()
        return int(d), int(c)

    def unresolved(self, batch_id: int) -> int:
        """Active games against batch id ``batch_id``."""
        return int(self.game.functions.unresolved(batch_id).call())

    def credits(self, account: str) -> int:
        return int(self.game.functions.credits(to_checksum_address(account)).call())

    def burned(self) -> int:
        """Wei burned (sent to address(0)) by resolved games."""
        return int(self.game.functions.burned().call())

    def history(self, game: int, *, from_block: int | None = None,
                with_gas: bool = False) -> GameHistory:
        """Every event of ``game`` in L1 order (from the deployment block).
        With ``with_gas`` each event carries its transaction's gas used."""
        start = self.deploy_block if from_block is None else from_block
        events = self.game.events
        found: list[tuple[int, int, GameEvent]] = []
        for name in ("GameOpened", "Dissected", "Picked", "StepProved", "GameResolved"):
            logs = getattr(events, name)().get_logs(from_block=start, to_block="latest",
                                                    argument_filters={"game": game})
            for entry in logs:
                args = {k: (bytes(v) if isinstance(v, (bytes, HexBytes)) else
                            [bytes(x) for x in v] if isinstance(v, list) else v)
                        for k, v in dict(entry["args"]).items()}
                found.append((int(entry["blockNumber"]), int(entry["logIndex"]), GameEvent(
                    kind=name, args=args, l1_block=int(entry["blockNumber"]),
                    tx_hash=bytes(entry["transactionHash"]))))
        found.sort(key=lambda x: (x[0], x[1]))
        out = GameHistory(game=game)
        for _block, _index, event in found:
            if with_gas:
                receipt = self.w3.eth.get_transaction_receipt(event.tx_hash)
                event = GameEvent(event.kind, event.args, event.l1_block, event.tx_hash,
                                  int(receipt["gasUsed"]))
            out.events.append(event)
        return out
