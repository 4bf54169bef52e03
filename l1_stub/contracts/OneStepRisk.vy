# pragma version 0.4.3
"""
@title derivnet one-step risk transitions
@notice Re-executes the perpetuals risk rules of the state transition
        function on leaf values, for the one-step prover: today FundingTick
        (node/stf.py, docs/protocol.md "State transition rules", "Funding";
        the Liquidate and Deleverage rules of issue 8 belong here too).
        Withdraw lives here too (it settles funding and checks the free
        collateral). OneStepProver.prove_step hands these types to this
        contract's prove_state_step (same arguments and result), which
        proves the leaves against the pre-state root with the shared
        multiproof module smt.vy and returns the post-state root. Values are
        the leaf values of docs/protocol.md "State" (abi-encoded parameter
        lists); empty bytes stand for an absent leaf. See docs/protocol.md
        "One-step proof", "FundingTick", "Withdraw".
"""

import smt

# ---------------------------------------------------------------- constants

# leaf bounds, as in OneStepProver.vy and Rollup.vy (docs/protocol.md "State")
MAX_MARKETS: constant(uint256) = 64
MAX_POSITIONS: constant(uint256) = MAX_MARKETS
ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * MAX_POSITIONS
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * MAX_MARKETS
SYSTEM_LEAF_BYTES: constant(uint256) = 7 * 32
# a market row of the markets leaf (after offset | length): id, price_decimals,
# size_decimals, tick_size, step_size, imf_ppm, mmf_ppm, maker_fee_ppm,
# taker_fee_ppm, oracle_price, oracle_time, funding_index, funding_time,
# funding_rate_ppm, max_liquidation_fee_ppm, open_interest, oi_lower_cap,
# oi_upper_cap
MARKET_ROW_BYTES: constant(uint256) = 18 * 32

# encoded FundingTick (docs/protocol.md "Transactions"): type byte 0x06, then
# market u32 | timestamp u64 | premium_ppm i32 | sig(65)
TX_FUNDING_TICK: constant(uint256) = 6
FUNDING_TICK_TX_BYTES: constant(uint256) = 82
SIG: constant(uint256) = 17
# encoded Withdraw: type byte 0x04, then
# account(20) | recipient(20) | amount u128 | nonce u64 | sig(65)
TX_WITHDRAW: constant(uint256) = 4
WITHDRAW_TX_BYTES: constant(uint256) = 130
# encoded SettleFunding: type byte 0x09, then account(20) | market u32
TX_SETTLE_FUNDING: constant(uint256) = 9
SETTLE_FUNDING_TX_BYTES: constant(uint256) = 25
# prove_state_step's bounds, as OneStepProver's
MAX_TX_BYTES: constant(uint256) = 261
MAX_WITNESS: constant(uint256) = 90112
WITHDRAWAL_LEAF_BYTES: constant(uint256) = 4 * 32
# a transaction zero-padded by a word for extract32
MAX_TXP: constant(uint256) = MAX_TX_BYTES + 32

# state keys (docs/protocol.md "State")
MARKETS_KEY: constant(bytes32) = keccak256(b"\x02")
SYSTEM_KEY: constant(bytes32) = keccak256(b"\x04")

FUNDING_TICK_TYPEHASH: constant(bytes32) = keccak256("FundingTick(uint32 market,uint64 timestamp,int32 premiumPpm)")
SECP256K1_N: constant(uint256) = 115792089237316195423570985008687907852837564279074904382605163141518161494337
WITHDRAW_TYPEHASH: constant(bytes32) = keccak256(
    "Withdraw(address account,address recipient,uint128 amount,uint64 nonce)"
)
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

# funding (docs/protocol.md "Funding"; dYdX v4 x/perpetuals funding)
PPM: constant(int256) = 10**6
DEFAULT_FUNDING_PPM: constant(int256) = 100  # 0.01% per 8 h, the interest component
FUNDING_CLAMP_FACTOR: constant(int256) = 6  # |rate| <= 600% x (imf - mmf) per 8 h
FUNDING_PERIOD: constant(int256) = 28_800  # s, the rate's period (8 h)
MAX_FUNDING_ELAPSED: constant(uint256) = 28_800  # s, a tick pays for at most one period

# margin (node/margin.py): 10**76 is the largest power of ten in an int256; every
# |size * price| and |size| * price * ppm (< 2**223 < 10**68) rounds the same for any divisor past 10**68
MARGIN_PPM: constant(uint256) = 10**6
MAX_POW10: constant(uint256) = 62

# ---------------------------------------------------------------- types

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


# ---------------------------------------------------------------- helpers

@pure
@internal
def _uint(txp: Bytes[MAX_TXP], offset: uint256, size: uint256) -> uint256:
    """
    @dev The `size`-byte big-endian integer at `offset` of the zero-padded tx.
    """
    return convert(extract32(txp, offset), uint256) >> (256 - 8 * size)


@pure
@internal
def _signer(txp: Bytes[MAX_TXP], offset: uint256, digest: bytes32) -> address:
    """
    @dev The signer of `digest` by the 65-byte signature r | s | v at
         `offset`; empty(address) unless v is 27 or 28, 0 < r < n and
         0 < s <= n / 2 (EIP-2), or if ecrecover fails.
    """
    r: uint256 = self._uint(txp, offset, 32)
    s: uint256 = self._uint(txp, offset + 32, 32)
    v: uint256 = self._uint(txp, offset + 64, 1)
    if v != 27 and v != 28:
        return empty(address)
    if r == 0 or r >= SECP256K1_N or s == 0 or s > HALF_N:
        return empty(address)
    return ecrecover(digest, v, r, s)


@pure
@internal
def _address(txp: Bytes[MAX_TXP], offset: uint256) -> address:
    return convert(convert(self._uint(txp, offset, 20), uint160), address)


@pure
@internal
def _system_word(system: Bytes[SYSTEM_LEAF_BYTES], index: uint256) -> uint256:
    return convert(extract32(system, 32 * index), uint256)


@pure
@internal
def _system_with(system: Bytes[SYSTEM_LEAF_BYTES], next_deposit: uint256, count: uint256,
                 funding_pool: int256) -> bytes32:
    """
    @dev The hash of the system leaf with next_deposit (word 0),
         withdrawal_count (word 1) and funding_pool (word 5) set; the
         addresses (words 2-4) and the insurance fund (word 6) kept.
    """
    return keccak256(concat(convert(next_deposit, bytes32), convert(count, bytes32), slice(system, 64, 96),
                            convert(funding_pool, bytes32), slice(system, 192, 32)))


@pure
@internal
def _pow10(e: uint256) -> uint256:
    return 10 ** min(e, MAX_POW10)


@pure
@internal
def _position_value(size: int256, price: uint256, decimals: uint256) -> int256:
    """
    @dev floor(size * oracle_price * 10**6 / 10**(pd + sd)), toward -infinity
         (node/margin.py position_value); `decimals` = pd + sd.
    """
    raw: int256 = size * convert(price, int256)
    if decimals <= 6:
        return raw * convert(10 ** (6 - decimals), int256)
    divisor: int256 = convert(self._pow10(decimals - 6), int256)
    q: int256 = raw // divisor
    if raw < 0 and q * divisor != raw:
        q -= 1
    return q


@pure
@internal
def _initial_margin(size: int256, price: uint256, imf_ppm: uint256, decimals: uint256) -> int256:
    """
    @dev ceil(|size| * oracle_price * imf_ppm / (10**(pd + sd - 6) * 10**6))
         (node/margin.py margin_requirement).
    """
    raw: uint256 = convert(abs(size), uint256) * price * imf_ppm
    divisor: uint256 = MARGIN_PPM
    if decimals <= 6:
        raw = raw * 10 ** (6 - decimals)
    else:
        divisor = self._pow10(decimals - 6) * MARGIN_PPM
    return convert((raw + divisor - 1) // divisor, int256)


@pure
@internal
def _imf(base: uint256, lower: uint256, upper: uint256, open_interest: uint256, oracle: uint256,
         d: uint256) -> uint256:
    """
    @dev The effective (open-interest-scaled) initial margin fraction, ppm:
         node/risk.py oi_scaled_initial_margin_ppm(base, open_notional,
         lower, upper) with open_notional = ceil(open_interest * oracle *
         10**6 / 10**d) USDC base units, d = pd + sd (docs/protocol.md
         "Open interest"). Scalars only: a markets leaf argument would be
         copied into every call.
    """
    if upper == 0:
        return base
    raw: uint256 = open_interest * oracle
    notional: uint256 = 0
    if d <= 6:
        notional = raw * 10 ** (6 - d)
    else:
        divisor: uint256 = self._pow10(d - 6)
        notional = (raw + divisor - 1) // divisor
    if notional <= lower:
        return base
    if notional >= upper:
        return MARGIN_PPM
    return base + ((MARGIN_PPM - base) * (notional - lower) + upper - lower - 1) // (upper - lower)


@pure
@internal
def _unsettled(size: int256, index_diff: int256, decimals: uint256) -> int256:
    """
    @dev Funding a position owes, USDC base units (> 0: it pays):
         ceil(size * (market index - position index) / 10**(pd + sd)),
         toward +infinity (docs/protocol.md "Funding").
    """
    owed: int256 = size * index_diff
    d: int256 = convert(self._pow10(decimals), int256)
    q: int256 = owed // d
    if owed > 0 and q * d != owed:
        q += 1
    return q


# ---------------------------------------------------------------- external

@pure
@internal
def _funding_tick(
    txp: Bytes[MAX_TXP],
    timestamp: uint64,
    domain_separator: bytes32,
    system: Bytes[SYSTEM_LEAF_BYTES],
    markets: Bytes[MARKETS_LEAF_BYTES],
) -> (bool, bytes32):
    """
    @dev Apply the encoded FundingTick `txp` (82 bytes, zero-padded) at block
            `timestamp` (unix s) to the markets leaf. Returns (ok, new
            markets leaf hash); ok=False (hash empty) when it breaks a rule,
            checked in order: InvalidOracleSignature (EIP-712
            FundingTick signer != system.oracle), UnknownMarket,
            StaleFundingTick (tick timestamp <= market.funding_time),
            FundingTickInFuture (tick timestamp > block timestamp),
            InvalidPremium (|premium_ppm| > 10**6).
         Effect (docs/protocol.md "Funding"): with
         cap = 6 * (imf_ppm - mmf_ppm),
         rate = min(max(premium_ppm + 100, -cap), cap) (ppm per 8 h),
         elapsed = 0 on the first tick (funding_time 0), else
         min(tick timestamp - funding_time, 28800) s,
         funding_index += trunc(rate * oracle_price * elapsed / 28800)
         (price units x ppm, toward zero), funding_time = tick timestamp,
         funding_rate_ppm = rate.
         `system` is the system leaf (192 bytes: word 2 is the oracle),
         `markets` the markets leaf (empty: no market listed).
    """
    market_id: uint256 = self._uint(txp, 1, 4)
    tick_time: uint256 = self._uint(txp, 5, 8)
    raw_premium: uint256 = self._uint(txp, 13, 4)
    premium: int256 = convert(raw_premium, int256)
    if raw_premium >= 2**31:
        premium -= 2**32
    # InvalidOracleSignature
    digest: bytes32 = keccak256(concat(b"\x19\x01", domain_separator, keccak256(abi_encode(
        FUNDING_TICK_TYPEHASH, convert(market_id, uint32), convert(tick_time, uint64),
        convert(premium, int32)))))
    oracle: address = convert(convert(convert(extract32(system, 64), uint256), uint160), address)
    signer: address = self._signer(txp, SIG, digest)
    if signer == empty(address) or signer != oracle:
        return False, empty(bytes32)
    # UnknownMarket
    rows: DynArray[Market, MAX_MARKETS] = []
    if len(markets) != 0:
        rows = abi_decode(markets, DynArray[Market, MAX_MARKETS])
    for i: uint256 in range(len(rows), bound=MAX_MARKETS):
        if convert(rows[i].id, uint256) != market_id:
            continue
        funding_time: uint256 = convert(rows[i].funding_time, uint256)
        # StaleFundingTick, FundingTickInFuture, InvalidPremium
        if tick_time <= funding_time or tick_time > convert(timestamp, uint256) or abs(premium) > PPM:
            return False, empty(bytes32)
        cap: int256 = FUNDING_CLAMP_FACTOR * (convert(rows[i].imf_ppm, int256) - convert(rows[i].mmf_ppm, int256))
        rate: int256 = max(min(premium + DEFAULT_FUNDING_PPM, cap), -cap)
        elapsed: int256 = 0
        if funding_time != 0:
            elapsed = convert(min(tick_time - funding_time, MAX_FUNDING_ELAPSED), int256)
        # signed // truncates toward zero
        rows[i].funding_index += rate * convert(rows[i].oracle_price, int256) * elapsed // FUNDING_PERIOD
        rows[i].funding_time = convert(tick_time, uint64)
        rows[i].funding_rate_ppm = convert(rate, int32)
        return True, keccak256(abi_encode(rows))
    return False, empty(bytes32)


@pure
@internal
def _withdraw(txp: Bytes[MAX_TXP], domain_separator: bytes32, system: Bytes[SYSTEM_LEAF_BYTES],
              markets_leaf: Bytes[MARKETS_LEAF_BYTES], account_leaf: Bytes[ACCOUNT_LEAF_BYTES]
              ) -> (bool, bytes32, bytes32, bytes32):
    """
    @dev Apply the encoded Withdraw `txp` (130 bytes, zero-padded). Rules in
            order: InvalidWithdrawSignature, InvalidNonce, ZeroAmount, then
            the funding of every position is settled (market-id order,
            into the system leaf's funding_pool), then
            InsufficientFreeCollateral (amount > equity - initial margin).
            Returns (ok, new system hash, new account hash, new withdrawal
            leaf hash); ok=False (hashes empty) when a rule fails.
         Reverts "osp: position in an unknown market" for an account with
         a position in a market the markets leaf lacks.
    """
    account: address = self._address(txp, 1)
    recipient: address = self._address(txp, 21)
    amount: uint256 = self._uint(txp, 41, 16)
    nonce: uint256 = self._uint(txp, 57, 8)
    digest: bytes32 = keccak256(concat(b"\x19\x01", domain_separator, keccak256(abi_encode(
        WITHDRAW_TYPEHASH, account, recipient, amount, nonce))))
    signer: address = self._signer(txp, 65, digest)
    if signer == empty(address) or signer != account:
        return False, empty(bytes32), empty(bytes32), empty(bytes32)
    collateral: int256 = 0
    account_nonce: uint64 = 0
    positions: DynArray[Position, MAX_POSITIONS] = []
    if len(account_leaf) != 0:
        collateral, account_nonce, positions = abi_decode(
            account_leaf, (int256, uint64, DynArray[Position, MAX_POSITIONS]))
    if nonce != convert(account_nonce, uint256) or amount == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32)
    # settle the funding of every position (market-id order) and sum
    # value - initial margin at oracle prices (the unsettled funding is 0
    # once settled): positions and market rows are both sorted by id, one
    # merge walk over the raw leaf (row: 14 words, see MARKET_ROW_BYTES)
    pool: int256 = convert(extract32(system, 5 * 32), int256)
    margin_free: int256 = 0
    cursor: uint256 = 64
    end: uint256 = 64
    if len(markets_leaf) != 0:
        end += convert(extract32(markets_leaf, 32), uint256) * MARKET_ROW_BYTES
    for i: uint256 in range(len(positions), bound=MAX_POSITIONS):
        market: uint256 = convert(positions[i].market, uint256)
        listed: uint256 = 0
        for _k: uint256 in range(MAX_MARKETS):
            if cursor == end:
                break
            listed = convert(extract32(markets_leaf, cursor), uint256)
            if listed >= market:
                break
            cursor += MARKET_ROW_BYTES
        assert cursor != end and listed == market, "osp: position in an unknown market"
        decimals: uint256 = convert(extract32(markets_leaf, cursor + 32), uint256) \
            + convert(extract32(markets_leaf, cursor + 2 * 32), uint256)
        price: uint256 = convert(extract32(markets_leaf, cursor + 9 * 32), uint256)
        index: int256 = convert(extract32(markets_leaf, cursor + 11 * 32), int256)
        size: int256 = convert(positions[i].size, int256)
        owed: int256 = self._unsettled(size, index - positions[i].funding_index, decimals)
        collateral -= owed
        pool += owed
        positions[i].funding_index = index
        positions[i].settled_funding += owed
        imf: uint256 = convert(extract32(markets_leaf, cursor + 5 * 32), uint256)
        upper: uint256 = convert(extract32(markets_leaf, cursor + 17 * 32), uint256)
        if upper != 0:  # open-interest scaling (the call only when a market has caps)
            imf = self._imf(imf, convert(extract32(markets_leaf, cursor + 16 * 32), uint256), upper,
                            convert(extract32(markets_leaf, cursor + 15 * 32), uint256), price, decimals)
        margin_free += self._position_value(size, price, decimals) - self._initial_margin(size, price, imf, decimals)
    free: int256 = collateral + margin_free
    if convert(amount, int256) > free:
        return False, empty(bytes32), empty(bytes32), empty(bytes32)
    count: uint256 = self._system_word(system, 1)
    new_account: bytes32 = keccak256(abi_encode(
        collateral - convert(amount, int256), account_nonce + 1, positions))
    new_withdrawal: bytes32 = keccak256(abi_encode(
        convert(count, uint64), account, recipient, convert(amount, uint128)))
    return True, self._system_with(system, self._system_word(system, 0), count + 1, pool), new_account, \
        new_withdrawal


@pure
@internal
def _settle_funding(txp: Bytes[MAX_TXP], system: Bytes[SYSTEM_LEAF_BYTES], markets_leaf: Bytes[MARKETS_LEAF_BYTES],
                    account_leaf: Bytes[ACCOUNT_LEAF_BYTES]) -> (bool, bytes32, bytes32):
    """
    @dev Apply the encoded SettleFunding `txp` (25 bytes, zero-padded:
            account(20) | market u32). Rules in order: UnknownMarket,
            NoPosition (the account holds no position in the market). Effect:
            u = unsettled funding of the position; collateral -= u,
            settled_funding += u, funding_index = the market's, the system
            leaf's funding_pool += u. Returns (ok, new system hash, new
            account hash); ok=False (hashes empty) when a rule fails.
    """
    market: uint256 = self._uint(txp, 21, 4)
    row: uint256 = 0
    if len(markets_leaf) != 0:
        n: uint256 = convert(extract32(markets_leaf, 32), uint256)
        for i: uint256 in range(n, bound=MAX_MARKETS):
            at: uint256 = 64 + i * MARKET_ROW_BYTES
            listed: uint256 = convert(extract32(markets_leaf, at), uint256)
            if listed >= market:
                if listed == market:
                    row = at
                break
    if row == 0 or len(account_leaf) == 0:
        return False, empty(bytes32), empty(bytes32)
    collateral: int256 = 0
    nonce: uint64 = 0
    positions: DynArray[Position, MAX_POSITIONS] = []
    collateral, nonce, positions = abi_decode(account_leaf, (int256, uint64, DynArray[Position, MAX_POSITIONS]))
    for i: uint256 in range(len(positions), bound=MAX_POSITIONS):
        if convert(positions[i].market, uint256) != market:
            continue
        decimals: uint256 = convert(extract32(markets_leaf, row + 32), uint256) \
            + convert(extract32(markets_leaf, row + 2 * 32), uint256)
        index: int256 = convert(extract32(markets_leaf, row + 11 * 32), int256)
        owed: int256 = self._unsettled(convert(positions[i].size, int256), index - positions[i].funding_index,
                                       decimals)
        positions[i].funding_index = index
        positions[i].settled_funding += owed
        return True, self._system_with(system, self._system_word(system, 0), self._system_word(system, 1),
                                       convert(extract32(system, 5 * 32), int256) + owed), \
            keccak256(abi_encode(collateral - owed, nonce, positions))
    return False, empty(bytes32), empty(bytes32)


@pure
@internal
def _leaf_hash(leaf: Bytes[MARKETS_LEAF_BYTES]) -> bytes32:
    # keccak256(value); empty(bytes32) for an absent leaf (empty bytes)
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@view
@external
def prove_state_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[MAX_TX_BYTES],
                     domain_separator: bytes32, witness: Bytes[MAX_WITNESS]) -> bytes32:
    """
    @notice OneStepProver.prove_step for a Withdraw or a FundingTick (same
            arguments and result): the post-state root, pre_root if the
            transaction fails a rule. Witness slots as docs/protocol.md
            "Witness": Withdraw (system, markets, account, withdrawal),
            FundingTick (system, markets).
    @dev Reverts "osp: bad tx" for another type or a wrong length, "osp:
         ..." for a witness that does not prove against pre_root.
    """
    size: uint256 = len(encoded_tx)
    assert size > 0, "osp: bad tx"
    txp: Bytes[MAX_TXP] = concat(encoded_tx, empty(bytes32))
    kind: uint256 = self._uint(txp, 0, 1)
    assert (kind == TX_WITHDRAW and size == WITHDRAW_TX_BYTES) or \
        (kind == TX_FUNDING_TICK and size == FUNDING_TICK_TX_BYTES) or \
        (kind == TX_SETTLE_FUNDING and size == SETTLE_FUNDING_TX_BYTES), "osp: bad tx"
    system: Bytes[SYSTEM_LEAF_BYTES] = b""
    markets: Bytes[MARKETS_LEAF_BYTES] = b""
    tree: Bytes[smt.MAX_TREE_BYTES] = b""
    slots: DynArray[smt.Slot, smt.MAX_SLOTS] = []
    ok: bool = False
    if kind == TX_FUNDING_TICK:
        system, markets, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
        assert len(system) == SYSTEM_LEAF_BYTES, "osp: no system leaf"
        new_markets: bytes32 = empty(bytes32)
        ok, new_markets = self._funding_tick(txp, timestamp, domain_separator, system, markets)
        old_system: bytes32 = keccak256(system)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=old_system, new=old_system))
        slots.append(smt.Slot(key=convert(MARKETS_KEY, uint256), old=self._leaf_hash(markets), new=new_markets))
    elif kind == TX_SETTLE_FUNDING:
        settled: Bytes[ACCOUNT_LEAF_BYTES] = b""
        system, markets, settled, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[ACCOUNT_LEAF_BYTES],
                      Bytes[smt.MAX_TREE_BYTES]))
        assert len(system) == SYSTEM_LEAF_BYTES, "osp: no system leaf"
        settled_system: bytes32 = empty(bytes32)
        settled_account: bytes32 = empty(bytes32)
        ok, settled_system, settled_account = self._settle_funding(txp, system, markets, settled)
        unchanged_markets: bytes32 = self._leaf_hash(markets)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=keccak256(system), new=settled_system))
        slots.append(smt.Slot(key=convert(MARKETS_KEY, uint256), old=unchanged_markets, new=unchanged_markets))
        slots.append(smt.Slot(key=convert(keccak256(concat(b"\x01", convert(self._address(txp, 1), bytes20))), uint256),
                              old=self._leaf_hash(settled), new=settled_account))
    else:  # TX_WITHDRAW
        account: Bytes[ACCOUNT_LEAF_BYTES] = b""
        new_system: bytes32 = empty(bytes32)
        new_account: bytes32 = empty(bytes32)
        withdrawal: Bytes[WITHDRAWAL_LEAF_BYTES] = b""
        system, markets, account, withdrawal, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[ACCOUNT_LEAF_BYTES],
                      Bytes[WITHDRAWAL_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
        new_withdrawal: bytes32 = empty(bytes32)
        assert len(system) == SYSTEM_LEAF_BYTES, "osp: no system leaf"
        ok, new_system, new_account, new_withdrawal = self._withdraw(txp, domain_separator, system, markets, account)
        count: uint256 = self._system_word(system, 1)
        old_markets: bytes32 = self._leaf_hash(markets)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=self._leaf_hash(system), new=new_system))
        slots.append(smt.Slot(key=convert(MARKETS_KEY, uint256), old=old_markets, new=old_markets))
        account_key: uint256 = convert(keccak256(concat(b"\x01", convert(self._address(txp, 1), bytes20))), uint256)
        slots.append(smt.Slot(key=account_key, old=self._leaf_hash(account), new=new_account))
        slots.append(smt.Slot(key=convert(keccak256(concat(b"\x05", convert(convert(count, uint64), bytes8))), uint256),
                          old=self._leaf_hash(withdrawal), new=new_withdrawal))
    return smt.root_after(pre_root, ok, slots, tree)
