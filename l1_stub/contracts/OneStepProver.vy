# pragma version 0.4.3
# pragma optimize codesize
"""
@title derivnet one-step prover
@notice Re-executes one L2 transaction (one step of a batch) against a
        pre-state root and returns the post-state root, from one shared
        sparse Merkle multiproof of every leaf the step reads or writes
        (docs/protocol.md "One-step proof"). Deposit, OraclePrice and
        ListMarket are re-executed here; a Fill is decoded and checked by
        OneStepFill, a Withdraw, a FundingTick and a SettleFunding by
        OneStepRisk's own prove_state_step, a Liquidate by OneStepLiquidate's, a
        Deleverage by OneStepDeleverage's (constructor arguments). A transaction that fails any
        rule of the state transition function (docs/protocol.md "State
        transition rules") is a no-op: the post-state root is pre_root.
"""

import smt

# ---------------------------------------------------------------- constants

MAX_WITNESS: public(constant(uint256)) = 90112
MAX_TX_BYTES: constant(uint256) = 261

# leaf bounds, as in Rollup.vy (docs/protocol.md "State")
MAX_MARKETS: constant(uint256) = 64
MAX_POSITIONS: constant(uint256) = MAX_MARKETS
ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * MAX_POSITIONS
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * MAX_MARKETS
SYMBOLS_LEAF_BYTES: constant(uint256) = 2 * 32 + 2 * 32 * MAX_MARKETS
SYSTEM_LEAF_BYTES: constant(uint256) = 7 * 32
WITHDRAWAL_LEAF_BYTES: constant(uint256) = 4 * 32
ORDER_LEAF_BYTES: constant(uint256) = 32

# transaction types and encoded sizes (docs/protocol.md "Transactions")
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

# EIP-712 (docs/protocol.md "EIP-712")
ORACLE_PRICE_TYPEHASH: constant(bytes32) = keccak256("OraclePrice(uint32 market,uint64 price,uint64 timestamp)")
LIST_MARKET_TYPEHASH: constant(bytes32) = keccak256(
    "ListMarket(uint32 market,bytes16 symbol,uint8 priceDecimals,uint8 sizeDecimals,uint64 tickSize,uint64 stepSize,uint32 initialMarginPpm,uint32 maintenanceMarginPpm,uint32 makerFeePpm,uint32 takerFeePpm,uint64 oraclePrice,uint32 maxLiquidationFeePpm,uint128 openInterestLowerCap,uint128 openInterestUpperCap)"
)
SECP256K1_N: constant(uint256) = 115792089237316195423570985008687907852837564279074904382605163141518161494337
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

# state keys (docs/protocol.md "State")
MARKETS_KEY: constant(bytes32) = keccak256(b"\x02")
SYSTEM_KEY: constant(bytes32) = keccak256(b"\x04")
SYMBOLS_KEY: constant(bytes32) = keccak256(b"\x06")

PPM: constant(uint256) = 10**6
MAX_DECIMALS: constant(uint256) = 18
MASK64: constant(uint256) = 2**64 - 1
MASK128: constant(uint256) = 2**128 - 1

# ---------------------------------------------------------------- types

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

struct Symbol:
    id: uint32
    symbol: bytes16

interface OneStepProver:
    def prove_state_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[MAX_TX_BYTES],
                         domain_separator: bytes32, witness: Bytes[MAX_WITNESS]) -> bytes32: view

interface OneStepFill:
    def order_hashes(encoded_tx: Bytes[FILL_TX_BYTES], domain_separator: bytes32) -> (bytes32, bytes32): pure
    def transition(
        encoded_tx: Bytes[FILL_TX_BYTES], timestamp: uint64, domain_separator: bytes32, fee_account: address,
        maker_account: Bytes[ACCOUNT_LEAF_BYTES], taker_account: Bytes[ACCOUNT_LEAF_BYTES],
        fee_account_leaf: Bytes[ACCOUNT_LEAF_BYTES], maker_filled: Bytes[ORDER_LEAF_BYTES],
        taker_filled: Bytes[ORDER_LEAF_BYTES], markets: Bytes[MARKETS_LEAF_BYTES]
    ) -> (bool, bytes32, bytes32, bytes32, bytes32, bytes32, bytes32, int256): pure

FILL: public(immutable(address))
RISK: public(immutable(address))
LIQUIDATE: public(immutable(address))
DELEVERAGE: public(immutable(address))


@deploy
def __init__(fill: address, risk: address, liquidate: address, deleverage: address):
    """
    @param fill The OneStepFill contract (Fill transition).
    @param risk The OneStepRisk contract (Withdraw, FundingTick and
           SettleFunding transitions).
    @param liquidate The OneStepLiquidate contract (Liquidate transition).
    @param deleverage The OneStepDeleverage contract (Deleverage transition).
    """
    FILL = fill
    RISK = risk
    LIQUIDATE = liquidate
    DELEVERAGE = deleverage


# ---------------------------------------------------------------- helpers

@pure
@internal
def _uint(txp: Bytes[MAX_TX_BYTES + 32], offset: uint256, size: uint256) -> uint256:
    """
    @dev The `size`-byte big-endian integer at `offset` of the zero-padded tx.
    """
    return convert(extract32(txp, offset), uint256) >> (256 - 8 * size)


@pure
@internal
def _address(txp: Bytes[MAX_TX_BYTES + 32], offset: uint256) -> address:
    return convert(convert(self._uint(txp, offset, 20), uint160), address)


@pure
@internal
def _signer(txp: Bytes[MAX_TX_BYTES + 32], offset: uint256, digest: bytes32) -> address:
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
def _digest(domain_separator: bytes32, struct_hash: bytes32) -> bytes32:
    return keccak256(concat(b"\x19\x01", domain_separator, struct_hash))


@pure
@internal
def _key(prefix: bytes1, addr: address) -> uint256:
    return convert(keccak256(concat(prefix, convert(addr, bytes20))), uint256)


@pure
@internal
def _hash(leaf: Bytes[MARKETS_LEAF_BYTES]) -> bytes32:
    """
    @dev The value hash of a leaf: keccak256(value); empty(bytes32) for an
         absent leaf (empty bytes).
    """
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@pure
@internal
def _system_word(system: Bytes[SYSTEM_LEAF_BYTES], index: uint256) -> uint256:
    assert len(system) == SYSTEM_LEAF_BYTES, "osp: no system leaf"
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
def _markets(leaf: Bytes[MARKETS_LEAF_BYTES]) -> DynArray[Market, MAX_MARKETS]:
    if len(leaf) == 0:
        return []
    return abi_decode(leaf, DynArray[Market, MAX_MARKETS])


@pure
@internal
def _symbol_ok(symbol: uint256) -> bool:
    """
    @dev bytes16 `symbol` (as the top 16 bytes of a word): 1-16 bytes of
         A-Z 0-9 _ . / - starting with A-Z, then only zero bytes.
    """
    ended: bool = False
    for i: uint256 in range(16):
        c: uint256 = (symbol >> (248 - 8 * i)) & 255
        if c == 0:
            if i == 0:
                return False
            ended = True
            continue
        if ended:
            return False
        upper: bool = c >= 65 and c <= 90
        if i == 0:
            if not upper:
                return False
            continue
        if not (upper or (c >= 48 and c <= 57) or c == 95 or c == 46 or c == 47 or c == 45):
            return False
    return True


# ---------------------------------------------------------------- rules

@pure
@internal
def _deposit(txp: Bytes[MAX_TX_BYTES + 32], system: Bytes[SYSTEM_LEAF_BYTES],
             account: Bytes[ACCOUNT_LEAF_BYTES]) -> (bool, bytes32, bytes32):
    """
    @dev Deposit rule: index == system.next_deposit; credits amount.
         Returns (ok, new system hash, new account hash).
    """
    index: uint256 = self._uint(txp, 1, 8)
    amount: uint256 = self._uint(txp, 29, 16)
    next_deposit: uint256 = self._system_word(system, 0)
    if index != next_deposit:
        return False, empty(bytes32), empty(bytes32)
    new_account: bytes32 = empty(bytes32)
    if len(account) == 0:
        # abi_encode(amount, 0, []): collateral | nonce | offset 0x60 | length 0
        new_account = keccak256(concat(convert(amount, bytes32), empty(bytes32), convert(96, bytes32),
                                       empty(bytes32)))
    else:
        collateral: int256 = convert(extract32(account, 0), int256) + convert(amount, int256)
        new_account = keccak256(concat(convert(collateral, bytes32),
                                       slice(account, 32, len(account) - 32)))
    return True, self._system_with(system, next_deposit + 1, self._system_word(system, 1),
                                   convert(extract32(system, 5 * 32), int256)), new_account


@pure
@internal
def _oracle_price(txp: Bytes[MAX_TX_BYTES + 32], domain_separator: bytes32,
                  system: Bytes[SYSTEM_LEAF_BYTES], markets_leaf: Bytes[MARKETS_LEAF_BYTES]) -> (bool, bytes32):
    """
    @dev OraclePrice rules (InvalidOracleSignature, UnknownMarket,
         InvalidPrice, StaleOraclePrice). Returns (ok, new markets hash).
    """
    market: uint256 = self._uint(txp, 1, 4)
    price: uint256 = self._uint(txp, 5, 8)
    timestamp: uint256 = self._uint(txp, 13, 8)
    digest: bytes32 = self._digest(domain_separator, keccak256(abi_encode(
        ORACLE_PRICE_TYPEHASH, market, price, timestamp)))
    oracle: address = convert(convert(self._system_word(system, 2), uint160), address)
    signer: address = self._signer(txp, 21, digest)
    if signer == empty(address) or signer != oracle:
        return False, empty(bytes32)
    markets: DynArray[Market, MAX_MARKETS] = self._markets(markets_leaf)
    for i: uint256 in range(len(markets), bound=MAX_MARKETS):
        if convert(markets[i].id, uint256) == market:
            if price == 0 or timestamp <= convert(markets[i].oracle_time, uint256):
                return False, empty(bytes32)
            markets[i].oracle_price = convert(price, uint64)
            markets[i].oracle_time = convert(timestamp, uint64)
            return True, keccak256(abi_encode(markets))
    return False, empty(bytes32)


@pure
@internal
def _list_market(txp: Bytes[MAX_TX_BYTES + 32], domain_separator: bytes32, system: Bytes[SYSTEM_LEAF_BYTES],
                 markets_leaf: Bytes[MARKETS_LEAF_BYTES], symbols_leaf: Bytes[SYMBOLS_LEAF_BYTES]
                 ) -> (bool, bytes32, bytes32):
    """
    @dev ListMarket rules (InvalidAdminSignature, MarketAlreadyListed,
         TooManyMarkets, InvalidSymbol, DuplicateSymbol,
         InvalidMarketDecimals, InvalidTickStep, InvalidMarginFraction,
         InvalidFee (maker, taker or max liquidation fee > 10**6),
         InvalidOpenInterestCaps (unless upper == 0 or lower < upper),
         InvalidPrice). Returns (ok, new markets hash, new symbols hash).
    """
    new: Market = Market(
        id=convert(self._uint(txp, 1, 4), uint32),
        price_decimals=convert(self._uint(txp, 21, 1), uint8),
        size_decimals=convert(self._uint(txp, 22, 1), uint8),
        tick_size=convert(self._uint(txp, 23, 8), uint64),
        step_size=convert(self._uint(txp, 31, 8), uint64),
        imf_ppm=convert(self._uint(txp, 39, 4), uint32),
        mmf_ppm=convert(self._uint(txp, 43, 4), uint32),
        maker_fee_ppm=convert(self._uint(txp, 47, 4), uint32),
        taker_fee_ppm=convert(self._uint(txp, 51, 4), uint32),
        oracle_price=convert(self._uint(txp, 55, 8), uint64),
        oracle_time=0,
        funding_index=0,
        funding_time=0,
        funding_rate_ppm=0,
        max_liquidation_fee_ppm=convert(self._uint(txp, 63, 4), uint32),
        open_interest=0,
        oi_lower_cap=convert(self._uint(txp, 67, 16), uint128),
        oi_upper_cap=convert(self._uint(txp, 83, 16), uint128),
    )
    # bytes16 symbol: the top 16 bytes of the word at offset 5
    symbol_word: uint256 = self._uint(txp, 5, 16) << 128
    struct_hash: bytes32 = keccak256(abi_encode(
        LIST_MARKET_TYPEHASH, new.id, symbol_word, new.price_decimals, new.size_decimals,
        new.tick_size, new.step_size, new.imf_ppm, new.mmf_ppm, new.maker_fee_ppm,
        new.taker_fee_ppm, new.oracle_price, new.max_liquidation_fee_ppm, new.oi_lower_cap, new.oi_upper_cap))
    admin: address = convert(convert(self._system_word(system, 4), uint160), address)
    signer: address = self._signer(txp, 99, self._digest(domain_separator, struct_hash))
    if signer == empty(address) or signer != admin:
        return False, empty(bytes32), empty(bytes32)
    markets: DynArray[Market, MAX_MARKETS] = self._markets(markets_leaf)
    if len(markets) >= MAX_MARKETS or not self._symbol_ok(symbol_word):
        return False, empty(bytes32), empty(bytes32)
    if convert(new.price_decimals, uint256) > MAX_DECIMALS or convert(new.size_decimals, uint256) > MAX_DECIMALS:
        return False, empty(bytes32), empty(bytes32)
    if new.tick_size == 0 or new.step_size == 0 or new.oracle_price == 0:
        return False, empty(bytes32), empty(bytes32)
    if new.mmf_ppm == 0 or new.mmf_ppm > new.imf_ppm or convert(new.imf_ppm, uint256) > PPM:
        return False, empty(bytes32), empty(bytes32)
    if convert(new.maker_fee_ppm, uint256) > PPM or convert(new.taker_fee_ppm, uint256) > PPM \
            or convert(new.max_liquidation_fee_ppm, uint256) > PPM:
        return False, empty(bytes32), empty(bytes32)
    if new.oi_upper_cap != 0 and new.oi_lower_cap >= new.oi_upper_cap:
        return False, empty(bytes32), empty(bytes32)
    symbols: DynArray[Symbol, MAX_MARKETS] = []
    if len(symbols_leaf) != 0:
        symbols = abi_decode(symbols_leaf, DynArray[Symbol, MAX_MARKETS])
    symbol: bytes16 = convert(slice(convert(symbol_word, bytes32), 0, 16), bytes16)
    for s: Symbol in symbols:
        if s.symbol == symbol:
            return False, empty(bytes32), empty(bytes32)
    # insert in id order; an id already listed fails
    new_markets: DynArray[Market, MAX_MARKETS] = []
    placed: bool = False
    for mk: Market in markets:
        if mk.id == new.id:
            return False, empty(bytes32), empty(bytes32)
        if not placed and mk.id > new.id:
            new_markets.append(new)
            placed = True
        new_markets.append(mk)
    if not placed:
        new_markets.append(new)
    new_symbols: DynArray[Symbol, MAX_MARKETS] = []
    placed = False
    for s: Symbol in symbols:
        if not placed and s.id > new.id:
            new_symbols.append(Symbol(id=new.id, symbol=symbol))
            placed = True
        new_symbols.append(s)
    if not placed:
        new_symbols.append(Symbol(id=new.id, symbol=symbol))
    return True, keccak256(abi_encode(new_markets)), keccak256(abi_encode(new_symbols))


# ---------------------------------------------------------------- the step

@pure
@internal
def _tx_bytes(kind: uint256) -> uint256:
    """
    @dev The encoded size of a transaction of type `kind` but Fill; 0 for
         an unknown type.
    """
    if kind == TX_DEPOSIT:
        return DEPOSIT_TX_BYTES
    if kind == TX_ORACLE_PRICE:
        return ORACLE_PRICE_TX_BYTES
    if kind == TX_LIST_MARKET:
        return LIST_MARKET_TX_BYTES
    return 0

@pure
@internal
def _hash_account(leaf: Bytes[ACCOUNT_LEAF_BYTES]) -> bytes32:
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@pure
@internal
def _hash_word(leaf: Bytes[ORDER_LEAF_BYTES]) -> bytes32:
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@view
@external
def prove_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[MAX_TX_BYTES], domain_separator: bytes32,
               witness: Bytes[MAX_WITNESS]) -> bytes32:
    """
    @notice The post-state root of applying `encoded_tx` (one encoded
            transaction, docs/protocol.md "Transactions") at block
            `timestamp` to the state `pre_root`; pre_root itself if the
            transaction fails a rule of the state transition function.
    @param domain_separator The L2 EIP-712 domain separator.
    @param witness abi.encode(bytes value_1, ..., bytes value_n, bytes tree):
           the pre-state values of the type's leaf slots and their shared
           multiproof (docs/protocol.md "One-step proof").
    @dev Reverts "osp: bad tx" for an unknown type or a wrong length, and
         "osp: ..." for a witness that does not prove against pre_root.
         A Fill is re-executed here (by OneStepFill); the other types in a
         prove_state_step (this contract's, OneStepRisk's for Withdraw,
         FundingTick and SettleFunding, OneStepLiquidate's for Liquidate,
         OneStepDeleverage's for Deleverage), called as an external call so that each runs in
         fresh memory and their large buffers do not weigh on each other.
    """
    size: uint256 = len(encoded_tx)
    assert size > 0, "osp: bad tx"
    if convert(slice(encoded_tx, 0, 1), uint256) == TX_FILL:
        assert size == FILL_TX_BYTES, "osp: bad tx"
        system: Bytes[SYSTEM_LEAF_BYTES] = b""
        markets: Bytes[MARKETS_LEAF_BYTES] = b""
        maker: Bytes[ACCOUNT_LEAF_BYTES] = b""
        taker: Bytes[ACCOUNT_LEAF_BYTES] = b""
        fee: Bytes[ACCOUNT_LEAF_BYTES] = b""
        maker_filled: Bytes[ORDER_LEAF_BYTES] = b""
        taker_filled: Bytes[ORDER_LEAF_BYTES] = b""
        tree: Bytes[smt.MAX_TREE_BYTES] = b""
        system, markets, maker, taker, fee, maker_filled, taker_filled, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[ACCOUNT_LEAF_BYTES],
                      Bytes[ACCOUNT_LEAF_BYTES], Bytes[ACCOUNT_LEAF_BYTES], Bytes[ORDER_LEAF_BYTES],
                      Bytes[ORDER_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
        txp: Bytes[MAX_TX_BYTES + 32] = concat(encoded_tx, empty(bytes32))
        fee_account: address = convert(convert(self._system_word(system, 3), uint160), address)
        maker_hash: bytes32 = empty(bytes32)
        taker_hash: bytes32 = empty(bytes32)
        maker_hash, taker_hash = staticcall OneStepFill(FILL).order_hashes(encoded_tx, domain_separator)
        ok: bool = False
        new_maker: bytes32 = empty(bytes32)
        new_taker: bytes32 = empty(bytes32)
        new_fee: bytes32 = empty(bytes32)
        new_maker_filled: bytes32 = empty(bytes32)
        new_taker_filled: bytes32 = empty(bytes32)
        new_markets: bytes32 = empty(bytes32)
        funding: int256 = 0
        ok, new_maker, new_taker, new_fee, new_maker_filled, new_taker_filled, new_markets, funding = \
            staticcall OneStepFill(FILL).transition(
                encoded_tx, timestamp, domain_separator, fee_account, maker, taker, fee, maker_filled, taker_filled,
                markets)
        old_system: bytes32 = keccak256(system)
        # the funding the fill settled goes to the system leaf's funding_pool
        new_system: bytes32 = self._system_with(system, self._system_word(system, 0), self._system_word(system, 1),
                                                convert(extract32(system, 5 * 32), int256) + funding)
        old_markets: bytes32 = empty(bytes32)
        if len(markets) != 0:
            old_markets = keccak256(markets)
        slots: DynArray[smt.Slot, 7] = [
            smt.Slot(key=convert(SYSTEM_KEY, uint256), old=old_system, new=new_system),
            smt.Slot(key=convert(MARKETS_KEY, uint256), old=old_markets, new=new_markets),
            smt.Slot(key=self._key(0x01, self._address(txp, 1)), old=self._hash_account(maker), new=new_maker),
            smt.Slot(key=self._key(0x01, self._address(txp, 123)), old=self._hash_account(taker), new=new_taker),
            smt.Slot(key=self._key(0x01, fee_account), old=self._hash_account(fee), new=new_fee),
            smt.Slot(key=convert(keccak256(concat(b"\x03", maker_hash)), uint256), old=self._hash_word(maker_filled),
                 new=new_maker_filled),
            smt.Slot(key=convert(keccak256(concat(b"\x03", taker_hash)), uint256), old=self._hash_word(taker_filled),
                 new=new_taker_filled),
        ]
        # as _root_after, inline: one copy of the tree witness less
        keys: DynArray[uint256, smt.MAX_KEYS] = []
        olds: DynArray[bytes32, smt.MAX_KEYS] = []
        news: DynArray[bytes32, smt.MAX_KEYS] = []
        keys, olds, news = smt.sorted_slots(slots)
        if not ok:
            news = olds
        old_root: bytes32 = empty(bytes32)
        new_root: bytes32 = empty(bytes32)
        old_root, new_root = smt.roots(tree, keys, olds, news)
        assert old_root == pre_root, "osp: witness does not prove the pre-state root"
        return new_root
    # the other types in a fresh call (memory): Withdraw, FundingTick and
    # SettleFunding in OneStepRisk, Liquidate in OneStepLiquidate,
    # Deleverage in OneStepDeleverage, the rest here
    kind: uint256 = convert(slice(encoded_tx, 0, 1), uint256)
    target: address = self
    if kind == TX_WITHDRAW or kind == TX_FUNDING_TICK or kind == TX_SETTLE_FUNDING:
        target = RISK
    elif kind == TX_LIQUIDATE:
        target = LIQUIDATE
    elif kind == TX_DELEVERAGE:
        target = DELEVERAGE
    return staticcall OneStepProver(target).prove_state_step(pre_root, timestamp, encoded_tx, domain_separator,
                                                             witness)


@view
@external
def prove_state_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[MAX_TX_BYTES],
                     domain_separator: bytes32, witness: Bytes[MAX_WITNESS]) -> bytes32:
    """
    @notice prove_step for Deposit, OraclePrice and ListMarket; same
            arguments and result. (Withdraw, FundingTick, SettleFunding: OneStepRisk's;
            Liquidate: OneStepLiquidate's; Deleverage: OneStepDeleverage's;
            prove_state_step; Fill: prove_step itself.)
    """
    size: uint256 = len(encoded_tx)
    txp: Bytes[MAX_TX_BYTES + 32] = concat(encoded_tx, empty(bytes32))
    kind: uint256 = self._uint(txp, 0, 1)
    expected: uint256 = self._tx_bytes(kind)
    assert expected != 0 and size == expected, "osp: bad tx"
    system: Bytes[SYSTEM_LEAF_BYTES] = b""
    markets: Bytes[MARKETS_LEAF_BYTES] = b""
    account: Bytes[ACCOUNT_LEAF_BYTES] = b""
    tree: Bytes[smt.MAX_TREE_BYTES] = b""
    slots: DynArray[smt.Slot, 7] = []
    ok: bool = False
    new_system: bytes32 = empty(bytes32)
    new_account: bytes32 = empty(bytes32)

    if kind == TX_DEPOSIT:
        system, account, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[ACCOUNT_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
        ok, new_system, new_account = self._deposit(txp, system, account)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=self._hash(system), new=new_system))
        slots.append(smt.Slot(key=self._key(0x01, self._address(txp, 9)), old=self._hash(account), new=new_account))

    elif kind == TX_ORACLE_PRICE:
        system, markets, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[smt.MAX_TREE_BYTES]))
        new_markets: bytes32 = empty(bytes32)
        ok, new_markets = self._oracle_price(txp, domain_separator, system, markets)
        old_system: bytes32 = self._hash(system)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=old_system, new=old_system))
        slots.append(smt.Slot(key=convert(MARKETS_KEY, uint256), old=self._hash(markets), new=new_markets))

    else:  # TX_LIST_MARKET
        symbols: Bytes[SYMBOLS_LEAF_BYTES] = b""
        system, markets, symbols, tree = abi_decode(
            witness, (Bytes[SYSTEM_LEAF_BYTES], Bytes[MARKETS_LEAF_BYTES], Bytes[SYMBOLS_LEAF_BYTES],
                      Bytes[smt.MAX_TREE_BYTES]))
        new_markets_hash: bytes32 = empty(bytes32)
        new_symbols: bytes32 = empty(bytes32)
        ok, new_markets_hash, new_symbols = self._list_market(txp, domain_separator, system, markets, symbols)
        system_hash: bytes32 = self._hash(system)
        slots.append(smt.Slot(key=convert(SYSTEM_KEY, uint256), old=system_hash, new=system_hash))
        slots.append(smt.Slot(key=convert(MARKETS_KEY, uint256), old=self._hash(markets), new=new_markets_hash))
        slots.append(smt.Slot(key=convert(SYMBOLS_KEY, uint256), old=self._hash(symbols), new=new_symbols))

    return smt.root_after(pre_root, ok, slots, tree)
