# pragma version ~=0.4.3
"""
@title derivnet Rollup
@notice L1 side of the derivnet optimistic rollup: the ordered USDC deposit
        queue, the batch inbox and settlement (finality, forced inclusion,
        withdrawals against finalized state roots, the escape hatch). The byte
        layouts and rules are fixed by docs/protocol.md ("Transactions",
        "State: one sparse Merkle tree", "Batches (L1)", "Deposit queue (L1)",
        "Settlement (L1)").
"""

from ethereum.ercs import IERC20


# the dispute game (l1_stub/contracts/DisputeGame.vy) as the Rollup sees it
interface DisputeGame:
    def unresolved(batch_id: uint256) -> uint256: view

# ---------------------------------------------------------------- limits

# largest batch_data accepted (calldata bound of submitBatch)
MAX_BATCH_BYTES: public(constant(uint256)) = 131072
# most transactions (steps) in one batch; a power of two
MAX_STEPS: public(constant(uint256)) = 4096
# log2(MAX_STEPS): height of the largest commitment tree
MERKLE_DEPTH: constant(uint256) = 12

BLOCK_HEADER_BYTES: constant(uint256) = 18  # timestamp u64 | l1_origin u64 | tx_count u16
MAX_BLOCKS: constant(uint256) = MAX_BATCH_BYTES // BLOCK_HEADER_BYTES + 1
MAX_TXS_PER_BLOCK: constant(uint256) = 65535

# encoded transaction sizes: type byte + body
TX_DEPOSIT: constant(uint256) = 1
TX_FILL: constant(uint256) = 2
TX_ORACLE_PRICE: constant(uint256) = 3
TX_WITHDRAW: constant(uint256) = 4
TX_LIST_MARKET: constant(uint256) = 5
TX_FUNDING_TICK: constant(uint256) = 6
TX_LIQUIDATE: constant(uint256) = 7
TX_DELEVERAGE: constant(uint256) = 8
TX_SETTLE_FUNDING: constant(uint256) = 9
DEPOSIT_TX_BYTES: constant(uint256) = 45
FILL_TX_BYTES: constant(uint256) = 261
ORACLE_PRICE_TX_BYTES: constant(uint256) = 86
WITHDRAW_TX_BYTES: constant(uint256) = 130
LIST_MARKET_TX_BYTES: constant(uint256) = 164
FUNDING_TICK_TX_BYTES: constant(uint256) = 82
LIQUIDATE_TX_BYTES: constant(uint256) = 159
DELEVERAGE_TX_BYTES: constant(uint256) = 53
SETTLE_FUNDING_TX_BYTES: constant(uint256) = 25
DEPOSIT_BODY_BYTES: constant(uint256) = 44

MASK64: constant(uint256) = 2**64 - 1
MASK32: constant(uint256) = 2**32 - 1
MASK128: constant(uint256) = 2**128 - 1

# settlement
# most batches freeze() finalizes in one call (~6k gas each); a longer
# backlog must first be worked off with finalizeBatch
MAX_FINALIZE_ON_FREEZE: public(constant(uint256)) = 128
# a sparse Merkle proof has at most one sibling per key bit
MAX_PROOF_DEPTH: constant(uint256) = 256
# bounds of the escape hatch's leaf decoding. Markets only come from genesis
# and an account holds at most one position per market.
MAX_MARKETS: public(constant(uint256)) = 64
MAX_POSITIONS: public(constant(uint256)) = MAX_MARKETS
# ABI sizes of the largest leaves (docs/protocol.md, "State"):
# account = collateral | nonce | offset | length | 5 words per position
ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * MAX_POSITIONS
# markets = offset | length | 18 words per market
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * MAX_MARKETS
# 10**76 is the largest power of ten an int256 holds; any |size * price|
# (< 2**192 < 10**58) floors the same for every divisor >= 10**58
MAX_POW10: constant(uint256) = 76

# ---------------------------------------------------------------- types

# what get_batch returns
struct Batch:
    data_hash: bytes32
    state_root: bytes32
    l1_timestamp: uint64
    first_block: uint64
    block_count: uint64
    step_count: uint64
    deposit_end: uint64

# what is stored per batch: the small fields share one slot (`meta`), so a
# batch costs three fresh storage slots. Add members here to extend.
# meta = l1_timestamp << 192 | first_block << 128 | deposit_end << 64
#        | block_count << 32 | step_count
struct StoredBatch:
    data_hash: bytes32
    state_root: bytes32
    meta: uint256

# leaf layouts decoded by the escape hatch (docs/protocol.md, "State")
struct Position:
    market: uint32
    size: int128
    cost: int256
    funding_index: int256
    settled_funding: int256

struct Market:
    id: uint32
    price_decimals: uint8
    size_decimals: uint8
    tick_size: uint64
    step_size: uint64
    imf_ppm: uint32
    mmf_ppm: uint32
    maker_fee_ppm: uint32
    taker_fee_ppm: uint32
    oracle_price: uint64
    oracle_time: uint64
    funding_index: int256
    funding_time: uint64
    funding_rate_ppm: int32
    max_liquidation_fee_ppm: uint32
    open_interest: uint128
    oi_lower_cap: uint128
    oi_upper_cap: uint128

# ---------------------------------------------------------------- events

event DepositQueued:
    index: indexed(uint256)
    sender: indexed(address)
    to: indexed(address)
    amount: uint256
    running_hash: bytes32
    timestamp: uint256
    body: Bytes[DEPOSIT_BODY_BYTES]

event BatchSubmitted:
    index: indexed(uint256)
    first_block: uint256
    block_count: uint256
    step_count: uint256
    state_root: bytes32
    data_hash: bytes32
    deposit_end: uint256

event BatchFinalized:
    index: indexed(uint256)
    state_root: bytes32

event WithdrawalFinalized:
    id: indexed(uint64)
    recipient: indexed(address)
    amount: uint256
    batch_index: uint256

event Frozen:
    escape_root: bytes32
    escape_batch_count: uint256
    escape_deposit_end: uint256

event Escaped:
    account: indexed(address)
    amount: uint256

event BatchesDeleted:
    index: indexed(uint256)
    batch_id: indexed(uint256)
    batch_count: uint256

event BondsClaimed:
    amount: uint256

event DepositReclaimed:
    index: indexed(uint256)
    sender: indexed(address)
    amount: uint256

# ---------------------------------------------------------------- storage

usdc: public(immutable(IERC20))
sequencer: public(immutable(address))
genesis_state_root: public(immutable(bytes32))
l2_chain_id: public(immutable(uint256))
# settlement windows, seconds of L1 time (docs/protocol.md "Settlement (L1)")
challenge_window: public(immutable(uint256))
inclusion_window: public(immutable(uint256))
escape_delay: public(immutable(uint256))
deploy_timestamp: public(immutable(uint256))
# disputes (docs/protocol.md "Disputes (L1)")
dispute_game: public(immutable(address))
proposer_bond: public(immutable(uint256))  # wei per batch
max_drift: public(immutable(uint256))  # seconds an L2 block may be ahead of L1

# deposit queue
deposit_count: public(uint256)
deposit_hashes: public(HashMap[uint256, bytes32])
deposit_senders: public(HashMap[uint256, address])
# timestamp << 128 | amount (read through deposit_timestamps / deposit_amounts)
_deposit_info: HashMap[uint256, uint256]

# batch_count << 128 | next_l2_block << 64 | deposits_consumed (one slot,
# written once per batch)
_progress: uint256
_batches: HashMap[uint256, StoredBatch]
# per batch index: batch_id << 128 | timestamp of its last L2 block (ids
# count from 1 and are never reused, so a deleted batch's id stays dead)
_batch_extra: HashMap[uint256, uint256]
last_batch_id: public(uint256)
# proposer bonds the sequencer may claim (of final batches and of batches
# deleted after a disputed one), wei
sequencer_bonds: public(uint256)

# settlement
finalized_batch_count: public(uint256)
# bit (id % 256) of word (id // 256): withdrawal `id` was paid (ids are
# sequential, so most payments flip a bit in a word already written)
_paid_words: HashMap[uint256, uint256]
frozen: public(bool)
escape_root: public(bytes32)
escape_batch_count: public(uint256)
escape_deposit_end: public(uint256)
escaped: public(HashMap[address, bool])
deposit_reclaimed: public(HashMap[uint256, bool])


@deploy
def __init__(
    usdc_token: address,
    sequencer_address: address,
    genesis_root: bytes32,
    chain_id: uint256,
    challenge_window_seconds: uint256,
    inclusion_window_seconds: uint256,
    escape_delay_seconds: uint256,
    dispute_game_address: address,
    proposer_bond_wei: uint256,
    max_drift_seconds: uint256,
):
    assert usdc_token != empty(address), "rollup: zero usdc"
    assert sequencer_address != empty(address), "rollup: zero sequencer"
    assert dispute_game_address != empty(address), "rollup: zero dispute game"
    usdc = IERC20(usdc_token)
    sequencer = sequencer_address
    genesis_state_root = genesis_root
    l2_chain_id = chain_id
    challenge_window = challenge_window_seconds
    inclusion_window = inclusion_window_seconds
    escape_delay = escape_delay_seconds
    deploy_timestamp = block.timestamp
    dispute_game = dispute_game_address
    proposer_bond = proposer_bond_wei
    max_drift = max_drift_seconds
    # no batches, next L2 block is 1 (block 0 is genesis), no deposits consumed
    self._progress = 1 << 64


# ---------------------------------------------------------------- deposits

@external
def deposit(to: address, amount: uint256):
    """
    @notice Pull `amount` USDC base units from the caller and queue a deposit
            crediting `to` on L2. Needs an allowance for this contract.
    """
    assert not self.frozen, "rollup: frozen"
    assert amount != 0, "deposit: zero amount"
    assert amount < 2**128, "deposit: amount too large"
    index: uint256 = self.deposit_count
    assert extcall usdc.transferFrom(msg.sender, self, amount, default_return_value=True), \
        "deposit: transfer failed"
    # body = index u64 | to (20) | amount u128, exactly a Deposit tx body
    body: Bytes[DEPOSIT_BODY_BYTES] = concat(
        convert(convert(index, uint64), bytes8),
        convert(to, bytes20),
        convert(convert(amount, uint128), bytes16),
    )
    prev: bytes32 = empty(bytes32)
    if index != 0:
        prev = self.deposit_hashes[index - 1]
    running: bytes32 = keccak256(concat(prev, body))
    self.deposit_hashes[index] = running
    self.deposit_senders[index] = msg.sender
    self._deposit_info[index] = (block.timestamp << 128) | amount
    self.deposit_count = index + 1
    log DepositQueued(
        index=index,
        sender=msg.sender,
        to=to,
        amount=amount,
        running_hash=running,
        timestamp=block.timestamp,
        body=body,
    )


# ---------------------------------------------------------------- batches

@payable
@external
def submitBatch(batch_data: Bytes[MAX_BATCH_BYTES], state_root: bytes32, deposit_end: uint64):
    """
    @notice Post the L2 blocks `batch_data` with the claimed post-state root.
    @dev Walks batch_data on chain (block headers and transaction types, not
         the transactions' contents), checks that its Deposit transactions
         are exactly the next deposit queue entries and stores the data hash
         keccak256(batch_data). The step commitment (tx_root) is computed
         from the same data only when a dispute needs it (tx_root_of).
         Block timestamps must not decrease (across batches too) nor be
         ahead of block.timestamp + max_drift. msg.value is the proposer
         bond (exactly proposer_bond wei).
    """
    assert msg.sender == sequencer, "rollup: only sequencer"
    assert not self.frozen, "rollup: frozen"
    n: uint256 = len(batch_data)
    assert n != 0, "batch: empty"

    progress: uint256 = self._progress
    index: uint256 = progress >> 128
    first_block: uint256 = (progress >> 64) & MASK64
    start: uint256 = progress & MASK64
    # timestamp of the latest L2 block posted so far (0 before any batch)
    last_ts: uint256 = 0
    if index != 0:
        last_ts = self._batch_extra[index - 1] & MASK64

    # deposit queue cursor; queue length and running hash load lazily
    pos: uint256 = start
    queued: uint256 = 0
    running: bytes32 = empty(bytes32)

    steps: uint256 = 0
    blocks: uint256 = 0
    p: uint256 = 0

    for _b: uint256 in range(MAX_BLOCKS):
        if p == n:
            break
        assert p + BLOCK_HEADER_BYTES <= n, "batch: truncated"
        ts: uint256 = convert(slice(batch_data, p, 8), uint256)
        count: uint256 = convert(slice(batch_data, p + 16, 2), uint256)
        assert ts >= last_ts, "batch: timestamp decreasing"
        last_ts = ts
        p += BLOCK_HEADER_BYTES
        blocks += 1
        steps += count
        assert steps <= MAX_STEPS, "batch: too many steps"

        for _t: uint256 in range(count, bound=MAX_TXS_PER_BLOCK):
            # read the type byte as the top byte of one word; a transaction
            # shorter than a word (SettleFunding, 25 bytes) may end the batch
            # (p <= n + FILL_TX_BYTES here: unchecked adds cannot overflow)
            kind: uint256 = 0
            if unsafe_add(p, 32) <= n:
                kind = extract32(batch_data, p, output_type=uint256) >> 248
            else:
                assert p < n, "batch: truncated"
                kind = convert(slice(batch_data, p, 1), uint256)
            if kind == TX_FILL:
                p = unsafe_add(p, FILL_TX_BYTES)
            elif kind == TX_ORACLE_PRICE:
                p = unsafe_add(p, ORACLE_PRICE_TX_BYTES)
            elif kind == TX_WITHDRAW:
                p = unsafe_add(p, WITHDRAW_TX_BYTES)
            elif kind == TX_LIST_MARKET:
                p = unsafe_add(p, LIST_MARKET_TX_BYTES)
            elif kind == TX_FUNDING_TICK:
                p = unsafe_add(p, FUNDING_TICK_TX_BYTES)
            elif kind == TX_LIQUIDATE:
                p = unsafe_add(p, LIQUIDATE_TX_BYTES)
            elif kind == TX_DELEVERAGE:
                p = unsafe_add(p, DELEVERAGE_TX_BYTES)
            elif kind == TX_SETTLE_FUNDING:
                p = unsafe_add(p, SETTLE_FUNDING_TX_BYTES)
            elif kind == TX_DEPOSIT:
                assert p + DEPOSIT_TX_BYTES <= n, "batch: truncated"
                if pos == start:
                    queued = self.deposit_count
                    if pos != 0:
                        running = self.deposit_hashes[pos - 1]
                assert convert(slice(batch_data, p + 1, 8), uint256) == pos, \
                    "batch: deposit out of order"
                assert pos < queued, "batch: deposit not queued"
                running = keccak256(concat(running, slice(batch_data, p + 1, DEPOSIT_BODY_BYTES)))
                pos += 1
                p += DEPOSIT_TX_BYTES
            else:
                raise "batch: unknown tx type"

    # a last transaction cut short leaves p past n; p < n only if the block
    # loop ran out, which MAX_BLOCKS rules out
    assert p == n, "batch: truncated"

    assert convert(deposit_end, uint256) == pos, "batch: deposit_end mismatch"
    if pos != start:
        assert running == self.deposit_hashes[pos - 1], "batch: deposit mismatch"
    else:
        queued = self.deposit_count

    # forced inclusion: the oldest deposit the batch leaves unconsumed must
    # not have waited inclusion_window seconds or more
    if pos < queued:
        assert (self._deposit_info[pos] >> 128) + inclusion_window > block.timestamp, \
            "batch: deposit inclusion overdue"

    # timestamps are non-decreasing, so the last one is the largest
    assert last_ts <= block.timestamp + max_drift, "batch: timestamp ahead of L1"
    assert msg.value == proposer_bond, "batch: wrong bond"

    data_hash: bytes32 = keccak256(batch_data)
    meta: uint256 = (
        (block.timestamp << 192)
        | (first_block << 128)
        | (pos << 64)
        | (blocks << 32)
        | steps
    )
    self._batches[index] = StoredBatch(data_hash=data_hash, state_root=state_root, meta=meta)
    batch_id: uint256 = self.last_batch_id + 1
    self.last_batch_id = batch_id
    self._batch_extra[index] = (batch_id << 128) | last_ts
    self._progress = ((index + 1) << 128) | ((first_block + blocks) << 64) | pos
    log BatchSubmitted(
        index=index,
        first_block=first_block,
        block_count=blocks,
        step_count=steps,
        state_root=state_root,
        data_hash=data_hash,
        deposit_end=pos,
    )


@view
@external
def tx_root_of(index: uint256, batch_data: Bytes[MAX_BATCH_BYTES]) -> bytes32:
    """
    @notice The step commitment (tx_root) of batch `index`: the Merkle root
            of its step leaves keccak256(timestamp u64 || encoded tx), padded
            with zero leaves to the next power of two (docs/protocol.md
            "Merkle root of a list"); zero for a batch without steps.
            `batch_data` must be the batch's data (keccak256(batch_data) ==
            its data_hash), which submitBatch has already checked to split
            into whole blocks and transactions.
    @dev Reverts "rollup: no such batch", "rollup: batch data mismatch".
         About 0.77M gas of execution for a full batch of 500 fills.
    """
    assert index < self._progress >> 128, "rollup: no such batch"
    assert keccak256(batch_data) == self._batches[index].data_hash, "rollup: batch data mismatch"
    n: uint256 = len(batch_data)

    # incremental Merkle tree: branch[h] holds the pending complete subtree
    # of height h (valid where bit h of `steps` is set)
    branch: bytes32[MERKLE_DEPTH + 1] = empty(bytes32[MERKLE_DEPTH + 1])
    steps: uint256 = 0
    p: uint256 = 0
    for _b: uint256 in range(MAX_BLOCKS):
        if p == n:
            break
        ts: bytes8 = convert(slice(batch_data, p, 8), bytes8)
        count: uint256 = convert(slice(batch_data, p + 16, 2), uint256)
        p += BLOCK_HEADER_BYTES
        for _t: uint256 in range(count, bound=MAX_TXS_PER_BLOCK):
            kind: uint256 = convert(slice(batch_data, p, 1), uint256)
            size: uint256 = FILL_TX_BYTES
            if kind == TX_ORACLE_PRICE:
                size = ORACLE_PRICE_TX_BYTES
            elif kind == TX_WITHDRAW:
                size = WITHDRAW_TX_BYTES
            elif kind == TX_LIST_MARKET:
                size = LIST_MARKET_TX_BYTES
            elif kind == TX_FUNDING_TICK:
                size = FUNDING_TICK_TX_BYTES
            elif kind == TX_LIQUIDATE:
                size = LIQUIDATE_TX_BYTES
            elif kind == TX_DELEVERAGE:
                size = DELEVERAGE_TX_BYTES
            elif kind == TX_SETTLE_FUNDING:
                size = SETTLE_FUNDING_TX_BYTES
            elif kind == TX_DEPOSIT:
                size = DEPOSIT_TX_BYTES
            leaf: bytes32 = keccak256(concat(ts, slice(batch_data, p, size)))
            p += size

            # append the leaf: merge equal-height subtrees like a binary counter
            at: uint256 = steps
            steps += 1
            for h: uint256 in range(MERKLE_DEPTH + 1):
                if at & 1 == 0:
                    branch[h] = leaf
                    break
                leaf = keccak256(concat(branch[h], leaf))
                at >>= 1

    # Merkle root of the leaves padded with zero leaves to the next power of two
    if steps == 0:
        return empty(bytes32)
    if steps & (steps - 1) == 0:
        for h: uint256 in range(MERKLE_DEPTH + 1):
            if steps == 1 << h:
                return branch[h]
    node: bytes32 = empty(bytes32)  # subtree holding position `steps`
    zero: bytes32 = empty(bytes32)  # root of an all-zero subtree
    s: uint256 = steps
    for h: uint256 in range(MERKLE_DEPTH):
        if s == 0:
            break
        if s & 1 == 1:
            node = keccak256(concat(branch[h], node))
        else:
            node = keccak256(concat(node, zero))
        zero = keccak256(concat(zero, zero))
        s >>= 1
    return node


# ---------------------------------------------------------------- views

@view
@external
def batch_count() -> uint256:
    return self._progress >> 128


@view
@external
def next_l2_block() -> uint256:
    """
    @notice Number of the first L2 block of the next batch.
    """
    return (self._progress >> 64) & MASK64


@view
@external
def deposits_consumed() -> uint256:
    """
    @notice Deposit queue position reached by the posted batches.
    """
    return self._progress & MASK64


@view
@external
def get_batch(index: uint256) -> Batch:
    assert index < self._progress >> 128, "rollup: no such batch"
    stored: StoredBatch = self._batches[index]
    meta: uint256 = stored.meta
    return Batch(
        data_hash=stored.data_hash,
        state_root=stored.state_root,
        l1_timestamp=convert(meta >> 192, uint64),
        first_block=convert((meta >> 128) & MASK64, uint64),
        block_count=convert((meta >> 32) & MASK32, uint64),
        step_count=convert(meta & MASK32, uint64),
        deposit_end=convert((meta >> 64) & MASK64, uint64),
    )


@view
@external
def latest_state_root() -> bytes32:
    """
    @notice State root claimed by the latest batch (genesis root before any).
    """
    count: uint256 = self._progress >> 128
    if count == 0:
        return genesis_state_root
    return self._batches[count - 1].state_root


@view
@external
def deposit_timestamps(index: uint256) -> uint256:
    """
    @notice L1 timestamp of deposit queue entry `index` (0 if none).
    """
    return self._deposit_info[index] >> 128


@view
@external
def deposit_amounts(index: uint256) -> uint256:
    """
    @notice Amount of deposit queue entry `index` (0 if none).
    """
    return self._deposit_info[index] & MASK128


@view
@external
def last_batch_timestamp() -> uint256:
    """
    @notice L1 timestamp of the latest batch, or of the deployment if none:
            the escape delay runs from it.
    """
    return self._last_batch_timestamp()


# ---------------------------------------------------------------- finality

@view
@internal
def _last_batch_timestamp() -> uint256:
    count: uint256 = self._progress >> 128
    if count == 0:
        return deploy_timestamp
    return self._batches[count - 1].meta >> 192


@view
@internal
def _window_passed(index: uint256) -> bool:
    # the challenge window of batch `index` (which must exist) has passed
    # and no dispute against it is unresolved (a won dispute deletes it)
    if block.timestamp < (self._batches[index].meta >> 192) + challenge_window:
        return False
    return self._undisputed(index)


@view
@internal
def _undisputed(index: uint256) -> bool:
    # no dispute against batch `index` is unresolved
    return staticcall DisputeGame(dispute_game).unresolved(self._batch_extra[index] >> 128) == 0


@view
@internal
def _finalized_root(count: uint256) -> bytes32:
    # state root after the first `count` batches
    if count == 0:
        return genesis_state_root
    return self._batches[count - 1].state_root


@view
@external
def is_finalizable(index: uint256) -> bool:
    """
    @notice True if batch `index` exists, is not final, its challenge window
            has passed (block.timestamp >= l1_timestamp + challenge_window)
            and the rollup is not frozen. Batches finalize in order, so
            finalizeBatch(index) also needs every earlier batch final.
    """
    if self.frozen:
        return False
    if index >= self._progress >> 128 or index < self.finalized_batch_count:
        return False
    return self._window_passed(index)


@external
def finalizeBatch(index: uint256):
    """
    @notice Mark batch `index` final (anyone may call). Only the next
            unfinalized batch, once its challenge window has passed.
    """
    assert not self.frozen, "rollup: frozen"
    assert index < self._progress >> 128, "finalize: no such batch"
    finalized: uint256 = self.finalized_batch_count
    assert index >= finalized, "finalize: already final"
    assert index == finalized, "finalize: out of order"
    assert block.timestamp >= (self._batches[index].meta >> 192) + challenge_window, \
        "finalize: challenge window open"
    assert self._undisputed(index), "finalize: dispute unresolved"
    self.finalized_batch_count = index + 1
    self._refund_bonds(proposer_bond)
    log BatchFinalized(index=index, state_root=self._batches[index].state_root)


@view
@external
def latest_finalized_state_root() -> bytes32:
    """
    @notice State root of the latest final batch (genesis root before any).
    """
    return self._finalized_root(self.finalized_batch_count)


# ---------------------------------------------------------------- disputes

@view
@external
def batch_id(index: uint256) -> uint256:
    """
    @notice Unique id of batch `index` (ids count from 1, never reused), or 0
            if there is no batch `index`.
    """
    if index >= self._progress >> 128:
        return 0
    return self._batch_extra[index] >> 128


@view
@external
def start_root(index: uint256) -> bytes32:
    """
    @notice The agreed state root before batch `index`: the state root of
            batch index - 1, the genesis root for batch 0.
    """
    return self._finalized_root(index)


@view
@external
def last_l2_timestamp() -> uint256:
    """
    @notice Timestamp of the latest posted L2 block (0 before any batch): the
            next batch's blocks may not be older.
    """
    count: uint256 = self._progress >> 128
    if count == 0:
        return 0
    return self._batch_extra[count - 1] & MASK64


@external
def deleteBatches(index: uint256, batch_id: uint256) -> uint256:
    """
    @notice Called by the dispute game when a challenger wins against batch
            `index` (id `batch_id`): deletes it and every later batch in O(1)
            (batch count, next L2 block and deposit position roll back to the
            end of batch index - 1), sends the batch's proposer bond to the
            game and returns it (wei). The later batches' bonds become
            claimable by the sequencer (claimBonds).
    """
    assert msg.sender == dispute_game, "rollup: only dispute game"
    count: uint256 = self._progress >> 128
    assert index < count and self._batch_extra[index] >> 128 == batch_id, "rollup: no such batch"
    # never final: finality needs every game against the batch resolved
    meta: uint256 = self._batches[index].meta
    deposits: uint256 = 0
    if index != 0:
        deposits = (self._batches[index - 1].meta >> 64) & MASK64
    self._progress = (index << 128) | (((meta >> 128) & MASK64) << 64) | deposits
    self.sequencer_bonds += (count - index - 1) * proposer_bond
    log BatchesDeleted(index=index, batch_id=batch_id, batch_count=count)
    if proposer_bond != 0:
        raw_call(msg.sender, b"", value=proposer_bond)
    return proposer_bond


@internal
def _refund_bonds(amount: uint256):
    # proposer bonds of final batches go back to the sequencer at once; a
    # sequencer that refuses ether (a contract) claims them with claimBonds
    if amount == 0:
        return
    if not raw_call(sequencer, b"", value=amount, gas=50000, revert_on_failure=False):
        self.sequencer_bonds += amount


@external
def claimBonds():
    """
    @notice Pay the sequencer its claimable proposer bonds (anyone may call;
            the money always goes to the sequencer).
    """
    amount: uint256 = self.sequencer_bonds
    self.sequencer_bonds = 0
    if amount != 0:
        raw_call(sequencer, b"", value=amount)
    log BondsClaimed(amount=amount)


# ---------------------------------------------------------------- proofs

@pure
@internal
def _smt_verify(
    root: bytes32, key: bytes32, value_hash: bytes32, siblings: DynArray[bytes32, MAX_PROOF_DEPTH]
) -> bool:
    """
    @dev Inclusion proof of the leaf (key, value_hash) under `root`
         (docs/protocol.md "State: one sparse Merkle tree"): the leaf node
         keccak256(0x00 || key || value_hash) sits at depth len(siblings);
         fold the siblings from the deepest up, the node being the left
         child at depth i when bit i of key (MSB first) is 0.
    """
    node: bytes32 = keccak256(concat(b"\x00", key, value_hash))
    path: uint256 = convert(key, uint256)
    depth: uint256 = len(siblings)
    for j: uint256 in range(depth, bound=MAX_PROOF_DEPTH):
        i: uint256 = depth - 1 - j
        if (path >> (255 - i)) & 1 == 0:
            node = keccak256(concat(node, siblings[i]))
        else:
            node = keccak256(concat(siblings[i], node))
    return node == root


@internal
def _pay(to: address, amount: uint256):
    # an ERC-20 transfer reverts when the contract holds less than amount,
    # so the contract never pays out more than it holds
    assert extcall usdc.transfer(to, amount, default_return_value=True), \
        "rollup: transfer failed"


# ---------------------------------------------------------------- withdrawals

@external
def finalizeWithdrawal(
    batch_index: uint256,
    withdrawal_id: uint64,
    account: address,
    recipient: address,
    amount: uint128,
    siblings: DynArray[bytes32, MAX_PROOF_DEPTH],
):
    """
    @notice Pay L2 withdrawal `withdrawal_id` to `recipient` (anyone may
            call), proving its leaf against the state root of the final
            batch `batch_index`. Works while frozen too.
    @param siblings The sparse Merkle proof of the withdrawal leaf
           keccak256(0x05 || id u64) -> abi_encode(id, account, recipient,
           amount), root first.
    """
    assert batch_index < self.finalized_batch_count, "withdrawal: batch not final"
    key: bytes32 = keccak256(concat(b"\x05", convert(withdrawal_id, bytes8)))
    value: Bytes[128] = abi_encode(withdrawal_id, account, recipient, amount)
    assert self._smt_verify(self._batches[batch_index].state_root, key, keccak256(value), siblings), \
        "withdrawal: invalid proof"
    word_index: uint256 = convert(withdrawal_id, uint256) >> 8
    bit: uint256 = 1 << (convert(withdrawal_id, uint256) & 255)
    word: uint256 = self._paid_words[word_index]
    assert word & bit == 0, "withdrawal: already paid"
    self._paid_words[word_index] = word | bit
    self._pay(recipient, convert(amount, uint256))
    log WithdrawalFinalized(
        id=withdrawal_id, recipient=recipient, amount=convert(amount, uint256), batch_index=batch_index
    )


@view
@external
def withdrawal_paid(withdrawal_id: uint64) -> bool:
    """
    @notice True once withdrawal `withdrawal_id` was paid on L1.
    """
    n: uint256 = convert(withdrawal_id, uint256)
    return (self._paid_words[n >> 8] >> (n & 255)) & 1 == 1


# ---------------------------------------------------------------- escape hatch

@external
def freeze():
    """
    @notice Freeze the rollup (anyone may call) once no batch was submitted
            for escape_delay seconds. Finalizes every batch whose challenge
            window has passed, then fixes the escape root: the latest final
            state root. Frozen, deposits and batches stop; accounts leave
            with escape(), unconsumed deposits with reclaimDeposit().
    """
    assert not self.frozen, "rollup: frozen"
    assert block.timestamp >= self._last_batch_timestamp() + escape_delay, \
        "freeze: sequencer still active"
    count: uint256 = self._progress >> 128
    finalized: uint256 = self.finalized_batch_count
    for _i: uint256 in range(MAX_FINALIZE_ON_FREEZE):
        if finalized == count or not self._window_passed(finalized):
            break
        log BatchFinalized(index=finalized, state_root=self._batches[finalized].state_root)
        finalized += 1
    assert finalized == count or not self._window_passed(finalized), \
        "freeze: too many unfinalized batches"
    refund: uint256 = (finalized - self.finalized_batch_count) * proposer_bond
    self.finalized_batch_count = finalized
    self._refund_bonds(refund)
    root: bytes32 = self._finalized_root(finalized)
    deposit_end: uint256 = 0
    if finalized != 0:
        deposit_end = (self._batches[finalized - 1].meta >> 64) & MASK64
    self.frozen = True
    self.escape_root = root
    self.escape_batch_count = finalized
    self.escape_deposit_end = deposit_end
    log Frozen(escape_root=root, escape_batch_count=finalized, escape_deposit_end=deposit_end)


@pure
@internal
def _position_value(size: int128, market: Market) -> int256:
    """
    @dev floor(size * oracle_price * 10**6 / 10**(pd + sd)), floored toward
         -infinity (docs/protocol.md "Accounts: cash model").
    """
    raw: int256 = convert(size, int256) * convert(market.oracle_price, int256)
    decimals: uint256 = convert(market.price_decimals, uint256) + convert(market.size_decimals, uint256)
    if decimals <= 6:
        return raw * convert(10 ** (6 - decimals), int256)
    divisor: int256 = convert(10 ** min(decimals - 6, MAX_POW10), int256)
    # EVM signed division truncates toward zero: step down for a negative
    # non-multiple
    q: int256 = raw // divisor
    if raw < 0 and q * divisor != raw:
        q -= 1
    return q


@pure
@internal
def _unsettled_funding(p: Position, market: Market) -> int256:
    """
    @dev Funding the position owes, USDC base units (> 0: it pays):
         ceil(size * (market index - position index) / 10**(pd + sd)),
         toward +infinity (docs/protocol.md "Funding").
    """
    owed: int256 = convert(p.size, int256) * (market.funding_index - p.funding_index)
    divisor: int256 = convert(10 ** min(convert(market.price_decimals, uint256)
                                        + convert(market.size_decimals, uint256), MAX_POW10), int256)
    # EVM signed division truncates toward zero: step up for a positive
    # non-multiple
    q: int256 = owed // divisor
    if owed > 0 and q * divisor != owed:
        q += 1
    return q


@external
def escape(
    account: address,
    account_leaf: Bytes[ACCOUNT_LEAF_BYTES],
    account_siblings: DynArray[bytes32, MAX_PROOF_DEPTH],
    markets_leaf: Bytes[MARKETS_LEAF_BYTES],
    markets_siblings: DynArray[bytes32, MAX_PROOF_DEPTH],
):
    """
    @notice Frozen: pay `account` its equity in the escape state, once
            (anyone may call). equity = collateral + sum over positions of
            floor(size * oracle_price * 10**6 / 10**(pd + sd)) minus the
            unsettled funding ceil(size * (market funding_index - position
            funding_index) / 10**(pd + sd)); pays max(equity, 0).
    @param account_leaf The account leaf value (key keccak256(0x01 || account))
    @param markets_leaf The markets leaf value (key keccak256(0x02))
    """
    assert self.frozen, "escape: not frozen"
    assert not self.escaped[account], "escape: already escaped"
    root: bytes32 = self.escape_root
    assert self._smt_verify(
        root, keccak256(concat(b"\x01", convert(account, bytes20))), keccak256(account_leaf), account_siblings
    ), "escape: invalid account proof"
    assert self._smt_verify(root, keccak256(b"\x02"), keccak256(markets_leaf), markets_siblings), \
        "escape: invalid markets proof"

    collateral: int256 = 0
    nonce: uint64 = 0
    positions: DynArray[Position, MAX_POSITIONS] = []
    collateral, nonce, positions = abi_decode(
        account_leaf, (int256, uint64, DynArray[Position, MAX_POSITIONS])
    )
    markets: DynArray[Market, MAX_MARKETS] = abi_decode(markets_leaf, DynArray[Market, MAX_MARKETS])

    # positions and markets are both sorted by market id: one merge walk
    equity: int256 = collateral
    m: uint256 = 0
    for p: Position in positions:
        for _k: uint256 in range(MAX_MARKETS):
            if m == len(markets) or markets[m].id >= p.market:
                break
            m += 1
        assert m < len(markets) and markets[m].id == p.market, "escape: unknown market"
        equity += self._position_value(p.size, markets[m]) - self._unsettled_funding(p, markets[m])

    amount: uint256 = 0
    if equity > 0:
        amount = convert(equity, uint256)
    self.escaped[account] = True
    if amount != 0:
        self._pay(account, amount)
    log Escaped(account=account, amount=amount)


@external
def reclaimDeposit(index: uint256):
    """
    @notice Frozen: refund deposit `index` to its L1 sender, once (anyone may
            call), if the escape state did not consume it (index >= the
            deposit_end of the last final batch).
    """
    assert self.frozen, "reclaim: not frozen"
    assert index < self.deposit_count, "reclaim: no such deposit"
    assert index >= self.escape_deposit_end, "reclaim: deposit consumed"
    assert not self.deposit_reclaimed[index], "reclaim: already reclaimed"
    self.deposit_reclaimed[index] = True
    sender: address = self.deposit_senders[index]
    amount: uint256 = self._deposit_info[index] & MASK128
    self._pay(sender, amount)
    log DepositReclaimed(index=index, sender=sender, amount=amount)
