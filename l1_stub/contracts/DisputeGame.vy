# pragma version ~=0.4.3
"""
@title derivnet dispute game
@notice Interactive n-ary dissection over the transaction steps of one
        posted batch, with a chess clock per party and bonds, ending in a
        one-step proof (docs/protocol.md "Disputes (L1)"). The game knows
        nothing of what a step means: the one-step prover re-executes it.
        The claim disputed is "the state root after step step_count of the
        batch is not the posted state_root"; the agreed start root is the
        state root of the previous batch (genesis root for batch 0).
"""

# ---------------------------------------------------------------- limits

# largest dissection degree (k); k - 1 roots per dissection
MAX_DEGREE: constant(uint256) = 16
# height bound of a batch commitment tree (Rollup MAX_STEPS <= 2**32)
MAX_STEP_DEPTH: constant(uint256) = 32
# encoded transaction and witness bounds of prove_step
MAX_TX_BYTES: constant(uint256) = 261
# largest batch data (the Rollup's MAX_BATCH_BYTES)
MAX_BATCH_BYTES: constant(uint256) = 131072
MAX_WITNESS: constant(uint256) = 90112

MASK64: constant(uint256) = 2**64 - 1
MASK128: constant(uint256) = 2**128 - 1

# game status
ACTIVE: constant(uint8) = 1
CHALLENGER_WON: constant(uint8) = 2
DEFENDER_WON: constant(uint8) = 3
VOID: constant(uint8) = 4  # the batch was deleted by another game: bonds refunded

# whose move
DEFENDER: constant(uint8) = 0
CHALLENGER: constant(uint8) = 1

# share of a lost bond that is burned: 1/BURN_DIVISOR, kept unspendable here
BURN_DIVISOR: constant(uint256) = 3

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

# ---------------------------------------------------------------- interfaces

struct Batch:
    data_hash: bytes32
    state_root: bytes32
    l1_timestamp: uint64
    first_block: uint64
    block_count: uint64
    step_count: uint64
    deposit_end: uint64


interface Rollup:
    def get_batch(index: uint256) -> Batch: view
    def tx_root_of(index: uint256, batch_data: Bytes[MAX_BATCH_BYTES]) -> bytes32: view
    def batch_id(index: uint256) -> uint256: view
    def start_root(index: uint256) -> bytes32: view
    def finalized_batch_count() -> uint256: view
    def challenge_window() -> uint256: view
    def frozen() -> bool: view
    def sequencer() -> address: view
    def l2_chain_id() -> uint256: view
    def deleteBatches(index: uint256, batch_id: uint256) -> uint256: nonpayable


interface OneStepProver:
    def prove_step(
        pre_root: bytes32,
        timestamp: uint64,
        step_tx: Bytes[MAX_TX_BYTES],
        domain_separator: bytes32,
        witness: Bytes[MAX_WITNESS],
    ) -> bytes32: view

# ---------------------------------------------------------------- types

# what get_game returns
struct Game:
    batch_index: uint256
    batch_id: uint256
    challenger: address
    bond: uint256  # the challenger's bond, wei
    lo: uint256  # disputed step range [lo, hi]
    hi: uint256
    root_lo: bytes32  # agreed root after step lo
    root_hi: bytes32  # the defender's root after step hi (disputed)
    status: uint8
    turn: uint8
    defender_clock: uint256  # seconds left
    challenger_clock: uint256
    last_move: uint256  # L1 timestamp of the last move (or of the opening)

# what is stored per game: six slots (the bond is challenger_bond)
# batch = batch_index << 128 | batch_id
# state = lo << 192 | hi << 128 | last_move << 64 | status << 8 | turn
# clocks = defender_clock << 128 | challenger_clock
struct StoredGame:
    batch: uint256
    challenger: address
    root_lo: bytes32
    root_hi: bytes32
    state: uint256
    clocks: uint256

# ---------------------------------------------------------------- events

event GameOpened:
    game: indexed(uint256)
    batch_index: indexed(uint256)
    batch_id: uint256
    challenger: indexed(address)
    bond: uint256
    step_count: uint256
    start_root: bytes32
    claimed_root: bytes32

event Dissected:
    game: indexed(uint256)
    lo: uint256
    hi: uint256
    roots: DynArray[bytes32, MAX_DEGREE - 1]

event Picked:
    game: indexed(uint256)
    segment: uint256
    lo: uint256
    hi: uint256

event StepProved:
    game: indexed(uint256)
    step: uint256
    post_root: bytes32

event GameResolved:
    game: indexed(uint256)
    status: uint8
    winner: indexed(address)
    paid: uint256
    burned: uint256

event Claimed:
    account: indexed(address)
    amount: uint256

# ---------------------------------------------------------------- storage

prover: public(immutable(address))
dissection_degree: public(immutable(uint256))
clock_seconds: public(immutable(uint256))
challenger_bond: public(immutable(uint256))
deployer: immutable(address)

rollup: public(address)
defender: public(address)  # the Rollup's sequencer
domain_separator: public(bytes32)

game_count: public(uint256)
_games: HashMap[uint256, StoredGame]
# game -> point j (1..segments-1) -> the defender's root at that point
_points: HashMap[uint256, HashMap[uint256, bytes32]]
# batch id -> its step commitment (Merkle root of the step leaves), set by
# the first game opened against a batch with steps (Rollup.tx_root_of)
tx_roots: public(HashMap[uint256, bytes32])
# batch id -> number of its games still ACTIVE
unresolved: public(HashMap[uint256, uint256])
# wei each address may claim()
credits: public(HashMap[address, uint256])
burned: public(uint256)


@deploy
def __init__(
    prover_address: address, degree: uint256, clock: uint256, bond: uint256
):
    assert prover_address != empty(address), "dispute: zero prover"
    assert degree >= 2 and degree <= MAX_DEGREE, "dispute: bad degree"
    assert clock != 0 and clock < 2**64, "dispute: bad clock"
    prover = prover_address
    dissection_degree = degree
    clock_seconds = clock
    challenger_bond = bond
    deployer = msg.sender


@external
def initialize(rollup_address: address):
    """
    @notice Bind the game to its Rollup, once, by the deployer: reads the
            sequencer (the defender) and the L2 chain id, and computes the L2
            EIP-712 domain separator (name derivnet, version 1, chainId,
            verifyingContract = the Rollup).
    """
    assert msg.sender == deployer, "dispute: only deployer"
    assert self.rollup == empty(address), "dispute: already initialized"
    assert rollup_address != empty(address), "dispute: zero rollup"
    self.rollup = rollup_address
    self.defender = staticcall Rollup(rollup_address).sequencer()
    chain_id: uint256 = staticcall Rollup(rollup_address).l2_chain_id()
    self.domain_separator = keccak256(abi_encode(
        EIP712_DOMAIN_TYPEHASH, keccak256("derivnet"), keccak256("1"), chain_id, rollup_address
    ))


@payable
@external
def __default__():
    # proposer bonds arrive from the Rollup's deleteBatches
    assert msg.sender == self.rollup, "dispute: unexpected payment"


# ---------------------------------------------------------------- helpers

@view
@internal
def _load(game_id: uint256) -> Game:
    stored: StoredGame = self._games[game_id]
    state: uint256 = stored.state
    return Game(
        batch_index=stored.batch >> 128,
        batch_id=stored.batch & MASK128,
        challenger=stored.challenger,
        bond=challenger_bond,
        lo=state >> 192,
        hi=(state >> 128) & MASK64,
        root_lo=stored.root_lo,
        root_hi=stored.root_hi,
        status=convert((state >> 8) & 255, uint8),
        turn=convert(state & 255, uint8),
        defender_clock=stored.clocks >> 128,
        challenger_clock=stored.clocks & MASK128,
        last_move=(state >> 64) & MASK64,
    )


@internal
def _save(game_id: uint256, g: Game):
    # rewriting an unchanged slot costs 100 gas (warm no-op)
    self._games[game_id] = StoredGame(
        batch=(g.batch_index << 128) | g.batch_id,
        challenger=g.challenger,
        root_lo=g.root_lo,
        root_hi=g.root_hi,
        state=(g.lo << 192) | (g.hi << 128) | (g.last_move << 64)
        | (convert(g.status, uint256) << 8) | convert(g.turn, uint256),
        clocks=(g.defender_clock << 128) | g.challenger_clock,
    )


@pure
@internal
def _point(lo: uint256, hi: uint256, j: uint256, segments: uint256) -> uint256:
    # step position of point j when [lo, hi] is cut into `segments` parts
    return lo + (hi - lo) * j // segments


@view
@internal
def _segments(lo: uint256, hi: uint256) -> uint256:
    return min(dissection_degree, hi - lo)


@view
@internal
def _active(game_id: uint256) -> Game:
    # the game, which must be active and whose batch must still exist
    assert game_id < self.game_count, "dispute: no such game"
    g: Game = self._load(game_id)
    assert g.status == ACTIVE, "dispute: game over"
    assert staticcall Rollup(self.rollup).batch_id(g.batch_index) == g.batch_id, \
        "dispute: batch gone"
    return g


@view
@internal
def _clock_left(g: Game) -> uint256:
    # seconds the party to move has left (0 if run out), at block.timestamp
    left: uint256 = g.defender_clock
    if g.turn == CHALLENGER:
        left = g.challenger_clock
    elapsed: uint256 = block.timestamp - g.last_move
    if elapsed > left:
        return 0
    return left - elapsed


@view
@internal
def _charge(g: Game) -> Game:
    # end the mover's turn: charge it the time since the last move
    out: Game = g
    elapsed: uint256 = block.timestamp - g.last_move
    if g.turn == DEFENDER:
        assert elapsed <= g.defender_clock, "dispute: clock expired"
        out.defender_clock = g.defender_clock - elapsed
    else:
        assert elapsed <= g.challenger_clock, "dispute: clock expired"
        out.challenger_clock = g.challenger_clock - elapsed
    out.last_move = block.timestamp
    return out


@internal
def _challenger_wins(game_id: uint256, g: Game):
    # delete the batch (and every later one); the challenger gets its bond
    # back plus the proposer bond less the burned share
    done: Game = g
    done.status = CHALLENGER_WON
    self._save(game_id, done)
    self.unresolved[g.batch_id] -= 1
    proposer_bond: uint256 = extcall Rollup(self.rollup).deleteBatches(g.batch_index, g.batch_id)
    burn: uint256 = proposer_bond // BURN_DIVISOR
    paid: uint256 = g.bond + proposer_bond - burn
    self.credits[g.challenger] += paid
    self._burn(burn)
    log GameResolved(game=game_id, status=CHALLENGER_WON, winner=g.challenger, paid=paid, burned=burn)


@internal
def _defender_wins(game_id: uint256, g: Game):
    # the batch stands; the defender gets the challenger's bond less the
    # burned share (the proposer bond stays with the batch)
    done: Game = g
    done.status = DEFENDER_WON
    self._save(game_id, done)
    self.unresolved[g.batch_id] -= 1
    burn: uint256 = g.bond // BURN_DIVISOR
    paid: uint256 = g.bond - burn
    winner: address = self.defender
    self.credits[winner] += paid
    self._burn(burn)
    log GameResolved(game=game_id, status=DEFENDER_WON, winner=winner, paid=paid, burned=burn)


@internal
def _burn(amount: uint256):
    # burned wei stay in this contract, unspendable (no function pays out
    # `burned`): on a devnet address(0) is the block coinbase, so sending
    # there would mix burns with fees
    self.burned += amount


# ---------------------------------------------------------------- moves

@payable
@external
def open(batch_index: uint256, batch_data: Bytes[MAX_BATCH_BYTES]) -> uint256:
    """
    @notice Dispute the state root posted by batch `batch_index`, posting
            exactly challenger_bond wei. Returns the game id. A batch with no
            steps is decided at once (the challenger wins iff the posted root
            differs from the start root); with one step the challenger must
            next prove it; otherwise the defender must dissect.
    @param batch_data The batch's data (its submitBatch argument), needed by
           the first game against a batch with steps: the game stores the
           step commitment Rollup.tx_root_of(batch_index, batch_data), which
           checks the data against the batch's data hash. Later games
           against the same batch may pass b"" (ignored if given).
    """
    rollup: address = self.rollup
    assert rollup != empty(address), "dispute: not initialized"
    assert msg.value == challenger_bond, "dispute: wrong bond"
    assert not staticcall Rollup(rollup).frozen(), "dispute: rollup frozen"
    batch_id: uint256 = staticcall Rollup(rollup).batch_id(batch_index)
    assert batch_id != 0, "dispute: no such batch"
    assert batch_index >= staticcall Rollup(rollup).finalized_batch_count(), "dispute: batch final"
    batch: Batch = staticcall Rollup(rollup).get_batch(batch_index)
    assert block.timestamp < convert(batch.l1_timestamp, uint256) + staticcall Rollup(rollup).challenge_window(), \
        "dispute: challenge window closed"

    game_id: uint256 = self.game_count
    self.game_count = game_id + 1
    steps: uint256 = convert(batch.step_count, uint256)
    if steps != 0 and self.tx_roots[batch_id] == empty(bytes32):
        assert len(batch_data) != 0, "dispute: batch data needed"
        self.tx_roots[batch_id] = staticcall Rollup(rollup).tx_root_of(batch_index, batch_data)
    start: bytes32 = staticcall Rollup(rollup).start_root(batch_index)
    turn: uint8 = DEFENDER
    if steps == 1:
        turn = CHALLENGER
    g: Game = Game(
        batch_index=batch_index,
        batch_id=batch_id,
        challenger=msg.sender,
        bond=msg.value,
        lo=0,
        hi=steps,
        root_lo=start,
        root_hi=batch.state_root,
        status=ACTIVE,
        turn=turn,
        defender_clock=clock_seconds,
        challenger_clock=clock_seconds,
        last_move=block.timestamp,
    )
    self._save(game_id, g)
    self.unresolved[batch_id] += 1
    log GameOpened(
        game=game_id,
        batch_index=batch_index,
        batch_id=batch_id,
        challenger=msg.sender,
        bond=msg.value,
        step_count=steps,
        start_root=start,
        claimed_root=batch.state_root,
    )
    if steps == 0:
        if batch.state_root != start:
            self._challenger_wins(game_id, g)
        else:
            self._defender_wins(game_id, g)
    return game_id


@external
def dissect(game_id: uint256, roots: DynArray[bytes32, MAX_DEGREE - 1]):
    """
    @notice The defender's move: its state roots after the inner points
            p_j = lo + (hi - lo) * j // s, j = 1..s-1, of the disputed range,
            s = min(dissection_degree, hi - lo) segments.
    """
    g: Game = self._active(game_id)
    assert msg.sender == self.defender, "dispute: only defender"
    assert g.turn == DEFENDER, "dispute: not defender's turn"
    g = self._charge(g)
    segments: uint256 = self._segments(g.lo, g.hi)
    assert len(roots) == segments - 1, "dispute: wrong root count"
    for j: uint256 in range(MAX_DEGREE - 1):
        if j == len(roots):
            break
        self._points[game_id][j + 1] = roots[j]
    g.turn = CHALLENGER
    self._save(game_id, g)
    log Dissected(game=game_id, lo=g.lo, hi=g.hi, roots=roots)


@external
def pick(game_id: uint256, segment: uint256):
    """
    @notice The challenger's move: keep segment [p_segment, p_segment+1] of
            the last dissection (the one whose start root it agrees with and
            whose end root it disputes).
    """
    g: Game = self._active(game_id)
    assert msg.sender == g.challenger, "dispute: only challenger"
    assert g.turn == CHALLENGER, "dispute: not challenger's turn"
    assert g.hi - g.lo > 1, "dispute: single step"
    g = self._charge(g)
    segments: uint256 = self._segments(g.lo, g.hi)
    assert segment < segments, "dispute: no such segment"
    root_lo: bytes32 = g.root_lo
    if segment != 0:
        root_lo = self._points[game_id][segment]
    root_hi: bytes32 = g.root_hi
    if segment + 1 != segments:
        root_hi = self._points[game_id][segment + 1]
    lo: uint256 = self._point(g.lo, g.hi, segment, segments)
    hi: uint256 = self._point(g.lo, g.hi, segment + 1, segments)
    g.lo = lo
    g.hi = hi
    g.root_lo = root_lo
    g.root_hi = root_hi
    if hi - lo > 1:
        g.turn = DEFENDER
    self._save(game_id, g)
    log Picked(game=game_id, segment=segment, lo=lo, hi=hi)


@external
def prove(
    game_id: uint256,
    timestamp: uint64,
    step_tx: Bytes[MAX_TX_BYTES],
    step_siblings: DynArray[bytes32, MAX_STEP_DEPTH],
    witness: Bytes[MAX_WITNESS],
):
    """
    @notice Decide a one-step range [lo, lo + 1] (anyone may call, before the
            challenger's clock runs out): the step leaf keccak256(timestamp
            u64 || tx) must be leaf `lo` of the batch's step commitment
            tx_roots[batch_id], kept since `open` (siblings bottom-up, as
            many as the commitment tree is high); the prover
            re-executes it from root_lo. A post root other than root_hi: the
            challenger wins; equal: the defender wins.
    """
    g: Game = self._active(game_id)
    assert g.hi - g.lo == 1, "dispute: not a single step"
    assert block.timestamp - g.last_move <= g.challenger_clock, "dispute: clock expired"
    batch: Batch = staticcall Rollup(self.rollup).get_batch(g.batch_index)
    steps: uint256 = convert(batch.step_count, uint256)
    depth: uint256 = 0
    for _h: uint256 in range(MAX_STEP_DEPTH):
        if 1 << depth >= steps:
            break
        depth += 1
    assert len(step_siblings) == depth, "dispute: invalid step proof"
    node: bytes32 = keccak256(concat(convert(timestamp, bytes8), step_tx))
    position: uint256 = g.lo
    for i: uint256 in range(MAX_STEP_DEPTH):
        if i == depth:
            break
        if position & 1 == 0:
            node = keccak256(concat(node, step_siblings[i]))
        else:
            node = keccak256(concat(step_siblings[i], node))
        position >>= 1
    assert node == self.tx_roots[g.batch_id], "dispute: invalid step proof"
    post: bytes32 = staticcall OneStepProver(prover).prove_step(
        g.root_lo, timestamp, step_tx, self.domain_separator, witness
    )
    log StepProved(game=game_id, step=g.lo, post_root=post)
    if post != g.root_hi:
        self._challenger_wins(game_id, g)
    else:
        self._defender_wins(game_id, g)


@external
def timeout(game_id: uint256):
    """
    @notice End a game whose party to move has run out of time (anyone may
            call): the other party wins.
    """
    g: Game = self._active(game_id)
    left: uint256 = g.defender_clock
    if g.turn == CHALLENGER:
        left = g.challenger_clock
    assert block.timestamp - g.last_move > left, "dispute: clock not expired"
    if g.turn == DEFENDER:
        self._challenger_wins(game_id, g)
    else:
        self._defender_wins(game_id, g)


@external
def void(game_id: uint256):
    """
    @notice End a game whose batch was deleted (by another game won against
            it or an earlier batch): the challenger's bond is refunded.
    """
    assert game_id < self.game_count, "dispute: no such game"
    g: Game = self._load(game_id)
    assert g.status == ACTIVE, "dispute: game over"
    assert staticcall Rollup(self.rollup).batch_id(g.batch_index) != g.batch_id, \
        "dispute: batch exists"
    g.status = VOID
    self._save(game_id, g)
    self.unresolved[g.batch_id] -= 1
    self.credits[g.challenger] += g.bond
    log GameResolved(game=game_id, status=VOID, winner=g.challenger, paid=g.bond, burned=0)


@external
def claim():
    """
    @notice Pay the caller its credits (bonds won or refunded), wei.
    """
    amount: uint256 = self.credits[msg.sender]
    assert amount != 0, "dispute: nothing to claim"
    self.credits[msg.sender] = 0
    raw_call(msg.sender, b"", value=amount)
    log Claimed(account=msg.sender, amount=amount)


# ---------------------------------------------------------------- views

@view
@external
def get_game(game_id: uint256) -> Game:
    assert game_id < self.game_count, "dispute: no such game"
    return self._load(game_id)


@view
@external
def points(game_id: uint256) -> DynArray[bytes32, MAX_DEGREE + 1]:
    """
    @notice The roots at the points p_0..p_s of the current range: root_lo,
            the defender's inner roots once it has dissected (else none),
            root_hi.
    """
    assert game_id < self.game_count, "dispute: no such game"
    g: Game = self._load(game_id)
    out: DynArray[bytes32, MAX_DEGREE + 1] = [g.root_lo]
    if g.turn == CHALLENGER and g.hi - g.lo > 1:
        segments: uint256 = self._segments(g.lo, g.hi)
        for j: uint256 in range(1, MAX_DEGREE):
            if j == segments:
                break
            out.append(self._points[game_id][j])
    out.append(g.root_hi)
    return out


@view
@external
def clocks(game_id: uint256) -> (uint256, uint256):
    """
    @notice Seconds left (defender, challenger) at block.timestamp: the party
            to move has its running time deducted.
    """
    assert game_id < self.game_count, "dispute: no such game"
    g: Game = self._load(game_id)
    if g.status != ACTIVE:
        return g.defender_clock, g.challenger_clock
    if g.turn == DEFENDER:
        return self._clock_left(g), g.challenger_clock
    return g.defender_clock, self._clock_left(g)
