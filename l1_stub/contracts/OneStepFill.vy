# pragma version 0.4.3
"""
@title derivnet one-step Fill transition
@notice Re-executes the Fill rule of the state transition function
        (node/stf.py apply_fill, docs/protocol.md "State transition rules")
        on leaf values, for the one-step prover. Pure: the caller
        (OneStepProver) proves the leaves against the pre-state root and
        writes the returned leaves back. Values are exactly the leaf values
        of docs/protocol.md "State" (abi-encoded parameter lists); empty
        bytes stand for an absent leaf. See docs/protocol.md "One-step
        proof", "Fill".
"""

# ---------------------------------------------------------------- constants

# leaf bounds, as in Rollup.vy (docs/protocol.md "State")
MAX_MARKETS: constant(uint256) = 64
MAX_POSITIONS: constant(uint256) = MAX_MARKETS
ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * MAX_POSITIONS
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * MAX_MARKETS
# the markets leaf is offset | length | 18 words per market: id, price_decimals,
# size_decimals, tick_size, step_size, imf_ppm, mmf_ppm, maker_fee_ppm,
# taker_fee_ppm, oracle_price, oracle_time, funding_index, funding_time,
# funding_rate_ppm, max_liquidation_fee_ppm, open_interest, oi_lower_cap,
# oi_upper_cap
MARKET_ROW_BYTES: constant(uint256) = 18 * 32
FUNDING_INDEX_WORD: constant(uint256) = 11 * 32
OPEN_INTEREST_WORD: constant(uint256) = 15 * 32

# encoded Fill (docs/protocol.md "Transactions"): type byte 0x02, then
# maker order(57) | maker sig(65) | taker order(57) | taker sig(65) | size u64 | price u64
FILL_TX_BYTES: constant(uint256) = 261
TX_FILL: constant(uint256) = 2
MAKER_ORDER: constant(uint256) = 1
MAKER_SIG: constant(uint256) = 58
TAKER_ORDER: constant(uint256) = 123
TAKER_SIG: constant(uint256) = 180
# the last word of the tx holds size u64 | price u64 in its low 16 bytes
LAST_WORD: constant(uint256) = FILL_TX_BYTES - 32

ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "Order(address account,uint32 market,bool isBuy,uint64 price,uint64 size,uint64 salt,uint64 expiry)"
)
# secp256k1 group order n (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141) and n // 2
SECP256K1_N: constant(uint256) = 115792089237316195423570985008687907852837564279074904382605163141518161494337
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

MASK64: constant(uint256) = 2**64 - 1
MASK32: constant(uint256) = 2**32 - 1
PPM: constant(uint256) = 10**6
# pd + sd <= 36 for any u8 pair kept by the STF's rules (<= 18 each); the cap
# only keeps 10 ** e inside uint256 for a leaf no rule could have written
MAX_POW10: constant(uint256) = 76

# ---------------------------------------------------------------- types

struct Position:
    market: uint32
    size: int128
    cost: int256
    funding_index: int256
    settled_funding: int256

# a row of the markets leaf (words as listed at MARKETS_LEAF_BYTES)
struct MarketRow:
    id: uint256
    price_decimals: uint256
    size_decimals: uint256
    tick_size: uint256
    step_size: uint256
    imf_ppm: uint256
    mmf_ppm: uint256
    maker_fee_ppm: uint256
    taker_fee_ppm: uint256
    oracle_price: uint256
    oracle_time: uint256
    funding_index: uint256
    funding_time: uint256
    funding_rate_ppm: uint256
    max_liquidation_fee_ppm: uint256
    open_interest: uint256
    oi_lower_cap: uint256
    oi_upper_cap: uint256

# an order as packed in the tx; `side` is the raw isBuy byte (0 sell, 1 buy;
# anything else makes the tx undecodable, which fails the Fill)
struct Order:
    account: address
    market: uint32
    side: uint256
    price: uint256
    size: uint256
    salt: uint256
    expiry: uint256


# ---------------------------------------------------------------- decoding

@pure
@internal
def _word(fill_tx: Bytes[FILL_TX_BYTES], offset: uint256) -> uint256:
    return convert(extract32(fill_tx, offset), uint256)


@pure
@internal
def _order(fill_tx: Bytes[FILL_TX_BYTES], offset: uint256) -> Order:
    # account(20) | market u32 | isBuy u8 | price u64 | size u64 | salt u64 | expiry u64
    head: uint256 = self._word(fill_tx, offset)
    tail: uint256 = self._word(fill_tx, offset + 25)
    return Order(
        account=convert(convert(head >> 96, uint160), address),
        market=convert((head >> 64) & MASK32, uint32),
        side=(head >> 56) & 255,
        price=tail >> 192,
        size=(tail >> 128) & MASK64,
        salt=(tail >> 64) & MASK64,
        expiry=tail & MASK64,
    )


@pure
@internal
def _order_hash(order: Order, domain_separator: bytes32) -> bytes32:
    """
    @dev EIP-712 digest keccak(0x1901 || domain separator || hashStruct(order)).
    """
    struct_hash: bytes32 = keccak256(abi_encode(
        ORDER_TYPEHASH, order.account, order.market, order.side, order.price, order.size,
        order.salt, order.expiry,
    ))
    return keccak256(concat(b"\x19\x01", domain_separator, struct_hash))


@pure
@internal
def _signed_by(fill_tx: Bytes[FILL_TX_BYTES], offset: uint256, digest: bytes32, account: address) -> bool:
    """
    @dev The 65-byte signature r | s | v at `offset` recovers to `account`:
         v in {27, 28}, 0 < r < n, 0 < s <= n / 2 (EIP-2), else False.
    """
    r: uint256 = self._word(fill_tx, offset)
    s: uint256 = self._word(fill_tx, offset + 32)
    v: uint256 = self._word(fill_tx, offset + 33) & 255
    if v != 27 and v != 28:
        return False
    if r == 0 or r >= SECP256K1_N or s == 0 or s > HALF_N:
        return False
    signer: address = ecrecover(digest, v, r, s)
    return signer != empty(address) and signer == account


@pure
@internal
def _filled(leaf: Bytes[32]) -> uint256:
    # an order leaf is abi.encode(uint64 filled); absent = 0
    if len(leaf) == 0:
        return 0
    return convert(extract32(leaf, 0), uint256)


# ---------------------------------------------------------------- money (node/margin.py)

@pure
@internal
def _pow10(e: uint256) -> uint256:
    return 10 ** min(e, MAX_POW10)


@pure
@internal
def _ceil_div(a: uint256, b: uint256) -> uint256:
    return (a + b - 1) // b


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
        notional = self._ceil_div(raw, self._pow10(d - 6))
    if notional <= lower:
        return base
    if notional >= upper:
        return PPM
    return base + self._ceil_div((PPM - base) * (notional - lower), upper - lower)


@pure
@internal
def _oi_delta(size: int256, delta: int256) -> int256:
    # open interest change of one account trading delta: max(after, 0) - max(before, 0)
    return max(size + delta, 0) - max(size, 0)


@pure
@internal
def _trunc_div(a: int256, b: int256) -> int256:
    # EVM signed division truncates toward zero (b > 0)
    return a // b


@pure
@internal
def _unsettled(size: int256, index_diff: int256, unit: uint256) -> int256:
    """
    @dev Funding a position owes: ceil(size * (market index - position
         index) / 10**(pd + sd)), toward +infinity (u > 0: it pays;
         docs/protocol.md "Funding"). `unit` = 10**(pd + sd).
    """
    owed: int256 = size * index_diff
    d: int256 = convert(unit, int256)
    q: int256 = owed // d  # toward zero: step up above 0
    if owed > 0 and q * d != owed:
        q += 1
    return q


@pure
@internal
def _trade(size: int256, cost: int256, delta: int256, cash: int256) -> (int256, int256):
    """
    @dev (size, cost) of a position after trading `delta` (signed size
         units) for `cash` (signed USDC: +paid for a buy, -received for a
         sell): the cost rule of docs/protocol.md "Accounts: cash model".
    """
    if size == 0 or (size > 0) == (delta > 0):
        return size + delta, cost + cash
    closing: int256 = min(abs(delta), abs(size))
    new_cost: int256 = cost - self._trunc_div(cost * closing, abs(size))
    sign: int256 = 1
    if delta < 0:
        sign = -1
    new_size: int256 = size + sign * closing
    rest: int256 = abs(delta) - closing
    if rest > 0:
        new_size = sign * rest
        new_cost = self._trunc_div(cash * rest, abs(delta))
    if new_size == 0:
        new_cost = 0
    return new_size, new_cost


# ---------------------------------------------------------------- external

@pure
@external
def order_hashes(fill_tx: Bytes[FILL_TX_BYTES], domain_separator: bytes32) -> (bytes32, bytes32):
    """
    @notice EIP-712 order hashes (maker, taker) of an encoded Fill: the keys
            of its order leaves are keccak(0x03 || hash). A side byte other
            than 0/1 is hashed as its value (such a Fill fails anyway).
    """
    assert len(fill_tx) == FILL_TX_BYTES and self._word(fill_tx, 0) >> 248 == TX_FILL, "fill: not a fill"
    return self._order_hash(self._order(fill_tx, MAKER_ORDER), domain_separator), \
        self._order_hash(self._order(fill_tx, TAKER_ORDER), domain_separator)


@pure
@external
def transition(
    fill_tx: Bytes[FILL_TX_BYTES],
    timestamp: uint64,
    domain_separator: bytes32,
    fee_account: address,
    maker_account: Bytes[ACCOUNT_LEAF_BYTES],
    taker_account: Bytes[ACCOUNT_LEAF_BYTES],
    fee_account_leaf: Bytes[ACCOUNT_LEAF_BYTES],
    maker_filled: Bytes[32],
    taker_filled: Bytes[32],
    markets: Bytes[MARKETS_LEAF_BYTES],
) -> (bool, bytes32, bytes32, bytes32, bytes32, bytes32, bytes32, int256):
    """
    @notice Apply the encoded Fill `fill_tx` at block `timestamp` (unix s)
            to its leaves: the maker's and taker's account leaves, the fee
            account's leaf, both order leaves (filled size) and the markets
            leaf. Returns (ok, value hashes of the new maker account, taker
            account, fee account, maker order and taker order leaves and
            the markets leaf (open interest), funding); ok=False (hashes
            empty, funding 0) when the Fill
            breaks an STF rule, a no-op. A hash is keccak256 of the leaf
            value as node/state.py encodes it (the tree's value hash).
            `funding` (USDC base units, signed) is what settling the maker's
            and then the taker's position in the market paid into the
            funding pool (the system leaf's funding_pool, which the caller
            writes). When the fee account is the maker (taker),
            `fee_account_leaf` is not read: the maker's (taker's) leaf is
            the fee account's, and both outputs carry its final value.
            Leaves are trusted to be canonical (the prover proves them
            against the state root).
    """
    assert len(fill_tx) == FILL_TX_BYTES and self._word(fill_tx, 0) >> 248 == TX_FILL, \
        "fill: not a fill"
    maker: Order = self._order(fill_tx, MAKER_ORDER)
    taker: Order = self._order(fill_tx, TAKER_ORDER)
    last: uint256 = self._word(fill_tx, LAST_WORD)
    size: uint256 = (last >> 64) & MASK64
    price: uint256 = last & MASK64
    # a side byte other than 0/1 does not decode (node.transactions.DecodeError)
    if maker.side > 1 or taker.side > 1:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0

    # UnknownMarket (the maker's): the markets leaf is sorted by id
    n_markets: uint256 = 0
    if len(markets) != 0:
        n_markets = convert(extract32(markets, 32), uint256)
    mk: uint256 = 0  # byte offset of the market's 11-word row
    for i: uint256 in range(n_markets, bound=MAX_MARKETS):
        row: uint256 = 64 + i * MARKET_ROW_BYTES
        market_id: uint256 = convert(extract32(markets, row), uint256)
        if market_id >= convert(maker.market, uint256):
            if market_id == convert(maker.market, uint256):
                mk = row
            break
    if mk == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # MarketMismatch, SameSide, SelfTrade, ZeroFillSize
    if taker.market != maker.market or maker.side == taker.side or maker.account == taker.account \
            or size == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # InvalidStepSize, InvalidTickSize, FillPriceMismatch
    tick: uint256 = convert(extract32(markets, mk + 3 * 32), uint256)
    step: uint256 = convert(extract32(markets, mk + 4 * 32), uint256)
    if size % step != 0 or maker.price % tick != 0 or taker.price % tick != 0 or price != maker.price:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # PricesDoNotCross
    if maker.side == 1:
        if maker.price < taker.price:
            return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    elif taker.price < maker.price:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # OrderExpired (maker, taker)
    now: uint256 = convert(timestamp, uint256)
    if maker.expiry <= now or taker.expiry <= now:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # InvalidOrderSignature (maker, taker)
    if not self._signed_by(fill_tx, MAKER_SIG, self._order_hash(maker, domain_separator), maker.account):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    if not self._signed_by(fill_tx, TAKER_SIG, self._order_hash(taker, domain_separator), taker.account):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
    # Overfill (maker, taker)
    maker_total: uint256 = self._filled(maker_filled) + size
    taker_total: uint256 = self._filled(taker_filled) + size
    if maker_total > maker.size or taker_total > taker.size:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0

    # notional: the buyer pays the ceiling, the seller receives the floor
    decimals: uint256 = convert(extract32(markets, mk + 32), uint256) \
        + convert(extract32(markets, mk + 2 * 32), uint256)
    raw: uint256 = size * price
    pay: uint256 = 0
    receive: uint256 = 0
    if decimals <= 6:
        pay = raw * 10 ** (6 - decimals)
        receive = pay
    else:
        d: uint256 = self._pow10(decimals - 6)
        pay = self._ceil_div(raw, d)
        receive = raw // d
    # fees: ceil(own notional * fee_ppm / 1e6); income = fees + rounding dust
    buyer_fee_ppm: uint256 = convert(extract32(markets, mk + 8 * 32), uint256)  # the taker's
    seller_fee_ppm: uint256 = convert(extract32(markets, mk + 7 * 32), uint256)  # the maker's
    if maker.side == 1:
        buyer_fee_ppm = seller_fee_ppm
        seller_fee_ppm = convert(extract32(markets, mk + 8 * 32), uint256)
    buyer_fee: uint256 = self._ceil_div(pay * buyer_fee_ppm, PPM)
    seller_fee: uint256 = self._ceil_div(receive * seller_fee_ppm, PPM)
    income: int256 = convert(buyer_fee + seller_fee + pay - receive, int256)

    # funding settlement, cash, fee and position updates, then
    # InsufficientMargin: maker, then taker
    market: uint32 = maker.market
    market_index: int256 = convert(extract32(markets, mk + FUNDING_INDEX_WORD), int256)
    # open interest after the fill (docs/protocol.md "Open interest"): both
    # sides' changes, before the margin checks, which scale the traded
    # market's initial margin fraction with it
    maker_delta: int256 = -convert(size, int256)
    if maker.side == 1:
        maker_delta = convert(size, int256)
    # the two accounts' sizes in the market, from the raw leaves (positions
    # of five words from byte 128: market, size, ...)
    oi_change: int256 = 0
    for role: uint256 in range(2):
        n_held: uint256 = 0
        if role == 0 and len(maker_account) != 0:
            n_held = convert(extract32(maker_account, 96), uint256)
        elif role == 1 and len(taker_account) != 0:
            n_held = convert(extract32(taker_account, 96), uint256)
        held_size: int256 = 0
        for i: uint256 in range(n_held, bound=MAX_POSITIONS):
            at: uint256 = 128 + i * 160
            word: uint256 = 0
            if role == 0:
                word = convert(extract32(maker_account, at), uint256)
            else:
                word = convert(extract32(taker_account, at), uint256)
            if word >= convert(market, uint256):
                if word == convert(market, uint256):
                    if role == 0:
                        held_size = convert(extract32(maker_account, at + 32), int256)
                    else:
                        held_size = convert(extract32(taker_account, at + 32), int256)
                break
        if role == 0:
            oi_change += self._oi_delta(held_size, maker_delta)
        else:
            oi_change += self._oi_delta(held_size, -maker_delta)
    new_oi: uint256 = convert(convert(extract32(markets, mk + OPEN_INTEREST_WORD), int256) + oi_change, uint256)
    traded_imf: uint256 = self._imf(
        convert(extract32(markets, mk + 5 * 32), uint256), convert(extract32(markets, mk + 16 * 32), uint256),
        convert(extract32(markets, mk + 17 * 32), uint256), new_oi,
        convert(extract32(markets, mk + 9 * 32), uint256), decimals)
    market_unit: uint256 = self._pow10(decimals)
    funding: int256 = 0
    out_maker: bytes32 = empty(bytes32)
    out_taker: bytes32 = empty(bytes32)
    collateral: int256 = 0
    nonce: uint64 = 0
    positions: DynArray[Position, MAX_POSITIONS] = []
    for role: uint256 in range(2):
        who: address = maker.account
        buys: bool = maker.side == 1
        if role == 0:
            if len(maker_account) != 0:
                collateral, nonce, positions = abi_decode(
                    maker_account, (int256, uint64, DynArray[Position, MAX_POSITIONS])
                )
        else:
            who = taker.account
            buys = not buys
            collateral = 0
            nonce = 0
            positions = []
            if len(taker_account) != 0:
                collateral, nonce, positions = abi_decode(
                    taker_account, (int256, uint64, DynArray[Position, MAX_POSITIONS])
                )
        delta: int256 = -convert(size, int256)
        cash: int256 = -convert(receive, int256)  # the position's cash: -received
        change: int256 = convert(receive, int256) - convert(seller_fee, int256)
        if buys:
            delta = convert(size, int256)
            cash = convert(pay, int256)
            change = -convert(pay, int256) - convert(buyer_fee, int256)
        if who == fee_account:
            change += income
        collateral += change

        # the market's position: update, insert (sorted by market) or remove
        k: uint256 = len(positions)
        for j: uint256 in range(len(positions), bound=MAX_POSITIONS):
            if positions[j].market >= market:
                k = j
                break
        old_size: int256 = 0
        old_cost: int256 = 0
        settled: int256 = 0
        held: bool = k < len(positions) and positions[k].market == market
        if held:
            old_size = convert(positions[k].size, int256)
            old_cost = positions[k].cost
            # lazy funding settlement of the traded market's position
            owed: int256 = self._unsettled(old_size, market_index - positions[k].funding_index, market_unit)
            collateral -= owed
            funding += owed
            settled = positions[k].settled_funding + owed
        new_size: int256 = 0
        new_cost: int256 = 0
        new_size, new_cost = self._trade(old_size, old_cost, delta, cash)
        if held and new_size != 0:
            positions[k] = Position(market=market, size=convert(new_size, int128), cost=new_cost,
                                    funding_index=market_index, settled_funding=settled)
        elif held:
            for j: uint256 in range(k, len(positions) - 1, bound=MAX_POSITIONS):
                positions[j] = positions[j + 1]
            positions.pop()
        elif new_size != 0:
            positions.append(empty(Position))
            for j: uint256 in range(len(positions) - 1 - k, bound=MAX_POSITIONS):
                at: uint256 = len(positions) - 1 - j
                positions[at] = positions[at - 1]
            positions[k] = Position(market=market, size=convert(new_size, int128), cost=new_cost,
                                    funding_index=market_index, settled_funding=0)

        # no margin check when the fill only reduced the position (no flip)
        reduces_only: bool = abs(new_size) < abs(old_size) and (new_size == 0 or (new_size > 0) == (old_size > 0))
        if not reduces_only:
            # equity >= initial margin at oracle prices (node/margin.py); with
            # d = pd + sd, per position:
            #   value = floor(size * oracle_price * 10**6 / 10**d)  (toward -infinity)
            #   unsettled = ceil(size * (funding_index - p.funding_index) / 10**d)
            #   margin = ceil(|size| * oracle_price * imf_ppm / 10**d)
            # (= ceil(|size| * oracle_price * imf_ppm / (10**(d-6) * 10**6)) of the spec).
            # |size| < 2**127, oracle_price < 2**64, imf_ppm < 2**32, 10**(6-d) < 2**20 and
            # 10**d <= 10**76 < 2**253: the products stay below 2**243 and the sum of
            # at most 64 margins below 2**250, so they need no overflow checks
            # (equity, which adds the collateral, is checked).
            # Positions and markets are both sorted by market id: one merge walk.
            equity: int256 = collateral
            need: uint256 = 0
            cursor: uint256 = 64
            end: uint256 = 64 + n_markets * MARKET_ROW_BYTES
            for p: Position in positions:
                held_market: uint256 = convert(p.market, uint256)
                listed_id: uint256 = 0
                for _m: uint256 in range(MAX_MARKETS):
                    if cursor == end:
                        break
                    listed_id = convert(extract32(markets, cursor), uint256)
                    if listed_id >= held_market:
                        break
                    cursor = unsafe_add(cursor, MARKET_ROW_BYTES)
                assert cursor != end and listed_id == held_market, "fill: position in unknown market"
                d: uint256 = min(
                    unsafe_add(convert(extract32(markets, unsafe_add(cursor, 32)), uint256),
                               convert(extract32(markets, unsafe_add(cursor, 64)), uint256)),
                    MAX_POW10,
                )
                value_raw: int256 = unsafe_mul(
                    convert(p.size, int256), convert(extract32(markets, unsafe_add(cursor, 9 * 32)), int256)
                )
                unit: uint256 = pow_mod256(10, d)
                if d <= 6:
                    equity += unsafe_mul(value_raw, convert(unsafe_div(10**6, unit), int256))
                else:
                    divisor: int256 = convert(unsafe_div(unit, 10**6), int256)
                    q: int256 = unsafe_div(value_raw, divisor)  # toward zero: step down below 0
                    if value_raw < 0 and unsafe_mul(q, divisor) != value_raw:
                        q = unsafe_sub(q, 1)
                    equity += q
                equity -= self._unsettled(
                    convert(p.size, int256),
                    convert(extract32(markets, unsafe_add(cursor, FUNDING_INDEX_WORD)), int256) - p.funding_index,
                    unit)
                imf: uint256 = traded_imf
                if held_market != convert(market, uint256):
                    imf = convert(extract32(markets, unsafe_add(cursor, 5 * 32)), uint256)
                    upper: uint256 = convert(extract32(markets, unsafe_add(cursor, 17 * 32)), uint256)
                    if upper != 0:  # the call only for a market with open-interest caps
                        imf = self._imf(
                            imf, convert(extract32(markets, unsafe_add(cursor, 16 * 32)), uint256), upper,
                            convert(extract32(markets, unsafe_add(cursor, OPEN_INTEREST_WORD)), uint256),
                            convert(extract32(markets, unsafe_add(cursor, 9 * 32)), uint256), d)
                scaled: uint256 = unsafe_mul(convert(abs(value_raw), uint256), imf)
                need = unsafe_add(need, unsafe_div(unsafe_add(scaled, unsafe_sub(unit, 1)), unit))
            if equity < convert(need, int256):
                return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), 0
        if role == 0:
            out_maker = keccak256(abi_encode(collateral, nonce, positions))
        else:
            out_taker = keccak256(abi_encode(collateral, nonce, positions))

    # the markets leaf with the traded market's new open interest
    # (decoded into rows and re-encoded: one buffer of the leaf's bound each,
    # where concat(slice, word, slice) takes four)
    rows: DynArray[MarketRow, MAX_MARKETS] = abi_decode(markets, DynArray[MarketRow, MAX_MARKETS])
    rows[(mk - 64) // MARKET_ROW_BYTES].open_interest = new_oi
    out_markets: bytes32 = keccak256(abi_encode(rows))
    # fees and rounding dust to the fee account (credited above if it traded)
    if fee_account == maker.account:
        return True, out_maker, out_taker, out_maker, keccak256(abi_encode(maker_total)), \
            keccak256(abi_encode(taker_total)), out_markets, funding
    if fee_account == taker.account:
        return True, out_maker, out_taker, out_taker, keccak256(abi_encode(maker_total)), \
            keccak256(abi_encode(taker_total)), out_markets, funding
    collateral = 0
    nonce = 0
    positions = []
    if len(fee_account_leaf) != 0:
        collateral, nonce, positions = abi_decode(
            fee_account_leaf, (int256, uint64, DynArray[Position, MAX_POSITIONS])
        )
    return True, out_maker, out_taker, keccak256(abi_encode(collateral + income, nonce, positions)), \
        keccak256(abi_encode(maker_total)), keccak256(abi_encode(taker_total)), out_markets, funding
