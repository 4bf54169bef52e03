# pragma version ~=0.4.3
"""
@title derivnet Rollup
@notice L1 side of the derivnet optimistic rollup: the ordered USDC deposit
        queue and the batch inbox. The byte layouts are fixed by
        docs/protocol.md ("Transactions", "Batches (L1)", "Deposit queue (L1)").
"""

from ethereum.ercs import IERC20

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
DEPOSIT_TX_BYTES: constant(uint256) = 45
FILL_TX_BYTES: constant(uint256) = 261
ORACLE_PRICE_TX_BYTES: constant(uint256) = 86
WITHDRAW_TX_BYTES: constant(uint256) = 130
DEPOSIT_BODY_BYTES: constant(uint256) = 44

MASK64: constant(uint256) = 2**64 - 1
MASK32: constant(uint256) = 2**32 - 1

# ---------------------------------------------------------------- types

# what get_batch returns
struct Batch:
    tx_root: bytes32
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
    tx_root: bytes32
    state_root: bytes32
    meta: uint256

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
    tx_root: bytes32
    deposit_end: uint256

# ---------------------------------------------------------------- storage

usdc: public(immutable(IERC20))
sequencer: public(immutable(address))
genesis_state_root: public(immutable(bytes32))
l2_chain_id: public(immutable(uint256))

# deposit queue
deposit_count: public(uint256)
deposit_hashes: public(HashMap[uint256, bytes32])
deposit_timestamps: public(HashMap[uint256, uint256])

# batch_count << 128 | next_l2_block << 64 | deposits_consumed (one slot,
# written once per batch)
_progress: uint256
_batches: HashMap[uint256, StoredBatch]


@deploy
def __init__(
    usdc_token: address,
    sequencer_address: address,
    genesis_root: bytes32,
    chain_id: uint256,
):
    assert usdc_token != empty(address), "rollup: zero usdc"
    assert sequencer_address != empty(address), "rollup: zero sequencer"
    usdc = IERC20(usdc_token)
    sequencer = sequencer_address
    genesis_state_root = genesis_root
    l2_chain_id = chain_id
    # no batches, next L2 block is 1 (block 0 is genesis), no deposits consumed
    self._progress = 1 << 64


# ---------------------------------------------------------------- deposits

@external
def deposit(to: address, amount: uint256):
    """
    @notice Pull `amount` USDC base units from the caller and queue a deposit
            crediting `to` on L2. Needs an allowance for this contract.
    """
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
    self.deposit_timestamps[index] = block.timestamp
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

@external
def submitBatch(batch_data: Bytes[MAX_BATCH_BYTES], state_root: bytes32, deposit_end: uint64):
    """
    @notice Post the L2 blocks `batch_data` with the claimed post-state root.
    @dev Splits batch_data on chain, checks that its Deposit transactions are
         exactly the next deposit queue entries and commits to the Merkle
         root of the step leaves keccak256(timestamp u64 || encoded tx).
    """
    assert msg.sender == sequencer, "rollup: only sequencer"
    n: uint256 = len(batch_data)
    assert n != 0, "batch: empty"

    progress: uint256 = self._progress
    index: uint256 = progress >> 128
    first_block: uint256 = (progress >> 64) & MASK64
    start: uint256 = progress & MASK64

    # deposit queue cursor; queue length and running hash load lazily
    pos: uint256 = start
    queued: uint256 = 0
    running: bytes32 = empty(bytes32)

    # incremental Merkle tree: branch[h] holds the pending complete subtree
    # of height h (valid where bit h of `steps` is set)
    branch: bytes32[MERKLE_DEPTH + 1] = empty(bytes32[MERKLE_DEPTH + 1])
    steps: uint256 = 0
    blocks: uint256 = 0
    p: uint256 = 0

    for _b: uint256 in range(MAX_BLOCKS):
        if p == n:
            break
        assert p + BLOCK_HEADER_BYTES <= n, "batch: truncated"
        ts: bytes8 = convert(slice(batch_data, p, 8), bytes8)
        count: uint256 = convert(slice(batch_data, p + 16, 2), uint256)
        p += BLOCK_HEADER_BYTES
        blocks += 1

        for _t: uint256 in range(count, bound=MAX_TXS_PER_BLOCK):
            assert p < n, "batch: truncated"
            kind: uint256 = convert(slice(batch_data, p, 1), uint256)
            leaf: bytes32 = empty(bytes32)
            if kind == TX_FILL:
                assert p + FILL_TX_BYTES <= n, "batch: truncated"
                leaf = keccak256(concat(ts, slice(batch_data, p, FILL_TX_BYTES)))
                p += FILL_TX_BYTES
            elif kind == TX_ORACLE_PRICE:
                assert p + ORACLE_PRICE_TX_BYTES <= n, "batch: truncated"
                leaf = keccak256(concat(ts, slice(batch_data, p, ORACLE_PRICE_TX_BYTES)))
                p += ORACLE_PRICE_TX_BYTES
            elif kind == TX_WITHDRAW:
                assert p + WITHDRAW_TX_BYTES <= n, "batch: truncated"
                leaf = keccak256(concat(ts, slice(batch_data, p, WITHDRAW_TX_BYTES)))
                p += WITHDRAW_TX_BYTES
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
                leaf = keccak256(concat(ts, slice(batch_data, p, DEPOSIT_TX_BYTES)))
                p += DEPOSIT_TX_BYTES
            else:
                raise "batch: unknown tx type"

            # append the leaf: merge equal-height subtrees like a binary counter
            size: uint256 = steps
            steps += 1
            assert steps <= MAX_STEPS, "batch: too many steps"
            for h: uint256 in range(MERKLE_DEPTH + 1):
                if size & 1 == 0:
                    branch[h] = leaf
                    break
                leaf = keccak256(concat(branch[h], leaf))
                size >>= 1

    # p == n unless the block loop ran out, which MAX_BLOCKS rules out
    assert p == n, "batch: truncated"

    assert convert(deposit_end, uint256) == pos, "batch: deposit_end mismatch"
    if pos != start:
        assert running == self.deposit_hashes[pos - 1], "batch: deposit mismatch"

    # commitment: Merkle root of the leaves padded with zero leaves to the
    # next power of two (docs/protocol.md "Merkle root of a list")
    tx_root: bytes32 = empty(bytes32)
    if steps != 0:
        if steps & (steps - 1) == 0:
            for h: uint256 in range(MERKLE_DEPTH + 1):
                if steps == 1 << h:
                    tx_root = branch[h]
                    break
        else:
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
            tx_root = node

    meta: uint256 = (
        (block.timestamp << 192)
        | (first_block << 128)
        | (pos << 64)
        | (blocks << 32)
        | steps
    )
    self._batches[index] = StoredBatch(tx_root=tx_root, state_root=state_root, meta=meta)
    self._progress = ((index + 1) << 128) | ((first_block + blocks) << 64) | pos
    log BatchSubmitted(
        index=index,
        first_block=first_block,
        block_count=blocks,
        step_count=steps,
        state_root=state_root,
        tx_root=tx_root,
        deposit_end=pos,
    )


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
        tx_root=stored.tx_root,
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
