# pragma version 0.4.3
"""
@title derivnet perpetuals arithmetic for the one-step verifier
@notice Shared by OneStepLiquidate.vy and OneStepDeleverage.vy (a Vyper
        module: internal functions only): leaf layouts, equity and margins
        at oracle prices (node/margin.py), open-interest-scaled initial
        margin, the bankruptcy quote and StarkEx's "no riskier" check
        (node/risk.py), funding settlement and the cost rule. Money in USDC
        base units, prices in price units, sizes in size units, fractions in
        ppm (docs/protocol.md "Money").
"""

# ---------------------------------------------------------------- constants

# leaf bounds, as in OneStepProver.vy and Rollup.vy (docs/protocol.md "State")
MAX_MARKETS: constant(uint256) = 64
MAX_POSITIONS: constant(uint256) = MAX_MARKETS
ACCOUNT_LEAF_BYTES: constant(uint256) = 4 * 32 + 5 * 32 * MAX_POSITIONS
MARKETS_LEAF_BYTES: constant(uint256) = 2 * 32 + 18 * 32 * MAX_MARKETS
SYSTEM_LEAF_BYTES: constant(uint256) = 7 * 32
ORDER_LEAF_BYTES: constant(uint256) = 32
# a market row of the markets leaf (after offset | length), 18 words: id 0,
# price_decimals 1, size_decimals 2, tick_size 3, step_size 4, imf_ppm 5,
# mmf_ppm 6, maker_fee_ppm 7, taker_fee_ppm 8, oracle_price 9, oracle_time
# 10, funding_index 11, funding_time 12, funding_rate_ppm 13,
# max_liquidation_fee_ppm 14, open_interest 15, oi_lower_cap 16,
# oi_upper_cap 17
MARKET_ROW_BYTES: constant(uint256) = 18 * 32
W_TICK: constant(uint256) = 3
W_STEP: constant(uint256) = 4
W_IMF: constant(uint256) = 5
W_MMF: constant(uint256) = 6
W_MAKER_FEE: constant(uint256) = 7
W_ORACLE: constant(uint256) = 9
W_INDEX: constant(uint256) = 11
W_MAX_LIQUIDATION_FEE: constant(uint256) = 14
W_OPEN_INTEREST: constant(uint256) = 15
W_OI_LOWER: constant(uint256) = 16
W_OI_UPPER: constant(uint256) = 17

# encoded transactions (docs/protocol.md "Transactions"), type byte first:
# Liquidate 0x07: liquidated(20) | order(57) | sig(65) | size u64 | price u64
TX_LIQUIDATE: constant(uint256) = 7
LIQUIDATE_TX_BYTES: constant(uint256) = 159
# Deleverage 0x08: liquidated(20) | offset(20) | market u32 | size u64
TX_DELEVERAGE: constant(uint256) = 8
DELEVERAGE_TX_BYTES: constant(uint256) = 53
# prove_state_step's bounds, as OneStepProver's
MAX_TX_BYTES: constant(uint256) = 261
MAX_WITNESS: constant(uint256) = 90112
MAX_TXP: constant(uint256) = MAX_TX_BYTES + 32

# state keys (docs/protocol.md "State")
MARKETS_KEY: constant(bytes32) = keccak256(b"\x02")
SYSTEM_KEY: constant(bytes32) = keccak256(b"\x04")

ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "Order(address account,uint32 market,bool isBuy,uint64 price,uint64 size,uint64 salt,uint64 expiry)"
)
SECP256K1_N: constant(uint256) = 115792089237316195423570985008687907852837564279074904382605163141518161494337
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

PPM: constant(int256) = 10**6
# liquidation constants (docs/protocol.md "Liquidate"; dYdX v4 mainnet)
SPREAD_TO_MMR_PPM: constant(int256) = 1_500_000
BANKRUPTCY_ADJUSTMENT_PPM: constant(int256) = 1_000_000
# 10**76 is the largest power of ten in an int256
MAX_POW10: constant(uint256) = 76

# ---------------------------------------------------------------- types

struct Position:
    market: uint32
    size: int128
    cost: int256
    funding_index: int256
    settled_funding: int256

struct Account:
    collateral: int256
    nonce: uint64
    positions: DynArray[Position, MAX_POSITIONS]

# equity and margins of an account at oracle prices (node/margin.py)
struct Risk:
    equity: int256  # collateral + sum(floor value - unsettled funding)
    equity_up: int256  # the same with values rounded up (StarkEx check)
    maintenance: int256  # sum of ceil maintenance margins
    initial: int256  # sum of ceil effective initial margins

# a listed market as the risk formulas read it (decoded once per step from
# the markets leaf: helpers never take the 37 KB leaf, which Vyper would copy
# into every call)
struct Mkt:
    id: uint256
    decimals: uint256  # pd + sd
    oracle: int256  # oracle_price
    index: int256  # funding_index
    mmf: int256  # mmf_ppm
    imf: int256  # effective imf_ppm at the market's open interest


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
def _address(txp: Bytes[MAX_TXP], offset: uint256) -> address:
    return convert(convert(self._uint(txp, offset, 20), uint160), address)


@pure
@internal
def _table(markets: Bytes[MARKETS_LEAF_BYTES]) -> DynArray[Mkt, MAX_MARKETS]:
    """
    @dev The markets leaf's rows (sorted by id) as Mkt, each with its
         effective initial margin fraction at its open interest.
    """
    out: DynArray[Mkt, MAX_MARKETS] = []
    if len(markets) == 0:
        return out
    n: uint256 = convert(extract32(markets, 32), uint256)
    for i: uint256 in range(n, bound=MAX_MARKETS):
        at: uint256 = 64 + i * MARKET_ROW_BYTES
        d: uint256 = convert(extract32(markets, at + 32), uint256) + convert(extract32(markets, at + 64), uint256)
        oracle: int256 = convert(extract32(markets, at + 32 * W_ORACLE), int256)
        out.append(Mkt(
            id=convert(extract32(markets, at), uint256), decimals=d, oracle=oracle,
            index=convert(extract32(markets, at + 32 * W_INDEX), int256),
            mmf=convert(extract32(markets, at + 32 * W_MMF), int256),
            imf=self._imf(convert(extract32(markets, at + 32 * W_IMF), int256),
                          convert(extract32(markets, at + 32 * W_OI_LOWER), int256),
                          convert(extract32(markets, at + 32 * W_OI_UPPER), int256),
                          convert(extract32(markets, at + 32 * W_OPEN_INTEREST), int256), oracle, d)))
    return out


@pure
@internal
def _find(table: DynArray[Mkt, MAX_MARKETS], market: uint256) -> uint256:
    """
    @dev The index of `market` in `table`, or MAX_MARKETS if not listed.
    """
    for i: uint256 in range(len(table), bound=MAX_MARKETS):
        if table[i].id >= market:
            if table[i].id == market:
                return i
            break
    return MAX_MARKETS


@pure
@internal
def _pow10(e: uint256) -> int256:
    return convert(10 ** min(e, MAX_POW10), int256)


@pure
@internal
def _floor_div(a: int256, b: int256) -> int256:
    # floor(a / b) for b != 0 (EVM SDIV truncates toward zero)
    q: int256 = a // b
    if q * b != a and (a < 0) != (b < 0):
        q -= 1
    return q


@pure
@internal
def _ceil_div(a: int256, b: int256) -> int256:
    return -self._floor_div(-a, b)


@pure
@internal
def _value(size: int256, oracle: int256, decimals: uint256, up: bool) -> int256:
    """
    @dev size * oracle * 10**6 / 10**(pd + sd), floored (node/margin.py
         position_value), or rounded up when `up`.
    """
    raw: int256 = size * oracle
    if decimals <= 6:
        return raw * self._pow10(6 - decimals)
    if up:
        return self._ceil_div(raw, self._pow10(decimals - 6))
    return self._floor_div(raw, self._pow10(decimals - 6))


@pure
@internal
def _margin(size: int256, oracle: int256, ppm: int256, decimals: uint256) -> int256:
    """
    @dev ceil(|size| * oracle * ppm / 10**(pd + sd)) (node/margin.py
         margin_requirement).
    """
    raw: int256 = abs(size) * oracle * ppm
    if decimals <= 6:
        return self._ceil_div(raw * self._pow10(6 - decimals), PPM)
    return self._ceil_div(raw, self._pow10(decimals))


@pure
@internal
def _notional(size: int256, price: int256, decimals: uint256) -> (int256, int256):
    """
    @dev (pay, receive) of `size` at `price`: the buyer pays the ceiling of
         size * price * 10**6 / 10**(pd + sd), the seller receives the floor.
    """
    return self._value(size, price, decimals, True), self._value(size, price, decimals, False)


@pure
@internal
def _unsettled(size: int256, index_diff: int256, decimals: uint256) -> int256:
    # ceil(size * (market index - position index) / 10**(pd + sd)) (> 0: it pays)
    return self._ceil_div(size * index_diff, self._pow10(decimals))


@pure
@internal
def _imf(base: int256, lower: int256, upper: int256, open_interest: int256, oracle: int256, d: uint256) -> int256:
    """
    @dev The effective initial margin fraction (ppm): node/risk.py
         oi_scaled_initial_margin_ppm(base, ceil(oi * oracle * 10**6 /
         10**d), lower cap, upper cap), d = pd + sd.
    """
    if upper == 0:
        return base
    notional: int256 = self._value(open_interest, oracle, d, True)
    if notional <= lower:
        return base
    if notional >= upper:
        return PPM
    return base + self._ceil_div((PPM - base) * (notional - lower), upper - lower)


@pure
@internal
def _risk(account: Account, table: DynArray[Mkt, MAX_MARKETS]) -> Risk:
    """
    @dev Equity (unsettled funding included, values floored and rounded
         up), maintenance margin and effective initial margin of `account`
         at oracle prices; positions and the table are both sorted by
         market id (one merge walk). Reverts "osp: position in an unknown
         market".
    """
    out: Risk = Risk(equity=account.collateral, equity_up=account.collateral, maintenance=0, initial=0)
    k: uint256 = 0
    for p: Position in account.positions:
        market: uint256 = convert(p.market, uint256)
        for _j: uint256 in range(MAX_MARKETS):
            if k == len(table) or table[k].id >= market:
                break
            k += 1
        assert k < len(table) and table[k].id == market, "osp: position in an unknown market"
        mk: Mkt = table[k]
        size: int256 = convert(p.size, int256)
        owed: int256 = self._unsettled(size, mk.index - p.funding_index, mk.decimals)
        out.equity += self._value(size, mk.oracle, mk.decimals, False) - owed
        out.equity_up += self._value(size, mk.oracle, mk.decimals, True) - owed
        out.maintenance += self._margin(size, mk.oracle, mk.mmf, mk.decimals)
        out.initial += self._margin(size, mk.oracle, mk.imf, mk.decimals)
    return out


@pure
@internal
def _size_in(account: Account, market: uint256) -> int256:
    for p: Position in account.positions:
        if convert(p.market, uint256) == market:
            return convert(p.size, int256)
    return 0


@pure
@internal
def _no_riskier(before: Account, after: Account, table: DynArray[Mkt, MAX_MARKETS]) -> bool:
    """
    @dev node/risk.py transition_violation(before, after) is None (StarkEx
         Perpetual check_valid_transition): after well leveraged, or no
         position enlarged or new, TV0 * TR1 <= TV1_up * TR0, and TV0 <=
         TV1_up when TR0 = 0.
    """
    r1: Risk = self._risk(after, table)
    if r1.maintenance <= r1.equity:
        return True
    for p: Position in after.positions:
        s0: int256 = self._size_in(before, convert(p.market, uint256))
        s1: int256 = convert(p.size, int256)
        if (s0 > 0) != (s1 > 0) or s0 == 0 or abs(s1) > abs(s0):
            return False
    r0: Risk = self._risk(before, table)
    if r0.equity * r1.maintenance > r1.equity_up * r0.maintenance:
        return False
    return r0.maintenance != 0 or r0.equity <= r1.equity_up


@pure
@internal
def _trade(size: int256, cost: int256, delta: int256, cash: int256) -> (int256, int256):
    """
    @dev (size, cost) after trading `delta` for `cash` (+paid for a buy,
         -received for a sell): docs/protocol.md "Accounts: cash model".
    """
    if size == 0 or (size > 0) == (delta > 0):
        return size + delta, cost + cash
    closing: int256 = min(abs(delta), abs(size))
    new_cost: int256 = cost - cost * closing // abs(size)
    sign: int256 = 1
    if delta < 0:
        sign = -1
    new_size: int256 = size + sign * closing
    rest: int256 = abs(delta) - closing
    if rest > 0:
        new_size = sign * rest
        new_cost = cash * rest // abs(delta)
    if new_size == 0:
        new_cost = 0
    return new_size, new_cost


@pure
@internal
def _decode(leaf: Bytes[ACCOUNT_LEAF_BYTES]) -> Account:
    # an absent leaf reads (0, 0, [])
    if len(leaf) == 0:
        return empty(Account)
    collateral: int256 = 0
    nonce: uint64 = 0
    positions: DynArray[Position, MAX_POSITIONS] = []
    collateral, nonce, positions = abi_decode(leaf, (int256, uint64, DynArray[Position, MAX_POSITIONS]))
    return Account(collateral=collateral, nonce=nonce, positions=positions)


@pure
@internal
def _hash(account: Account) -> bytes32:
    return keccak256(abi_encode(account.collateral, account.nonce, account.positions))


@pure
@internal
def _settle_and_trade(account: Account, mk: Mkt, delta: int256, cash: int256, change: int256) -> (Account, int256):
    """
    @dev Settle the funding of the account's position in `market` (if any:
         collateral -= u, settled_funding += u, funding_index = the
         market's), then trade `delta` for position cash `cash` and move the
         collateral by `change`. Returns (the account, u).
    """
    market: uint256 = mk.id
    out: Account = account
    k: uint256 = len(out.positions)
    for j: uint256 in range(len(out.positions), bound=MAX_POSITIONS):
        if convert(out.positions[j].market, uint256) >= market:
            k = j
            break
    held: bool = k < len(out.positions) and convert(out.positions[k].market, uint256) == market
    old_size: int256 = 0
    old_cost: int256 = 0
    settled: int256 = 0
    owed: int256 = 0
    if held:
        old_size = convert(out.positions[k].size, int256)
        old_cost = out.positions[k].cost
        owed = self._unsettled(old_size, mk.index - out.positions[k].funding_index, mk.decimals)
        settled = out.positions[k].settled_funding + owed
    out.collateral += change - owed
    new_size: int256 = 0
    new_cost: int256 = 0
    new_size, new_cost = self._trade(old_size, old_cost, delta, cash)
    entry: Position = Position(market=convert(market, uint32), size=convert(new_size, int128), cost=new_cost,
                               funding_index=mk.index, settled_funding=settled)
    if held and new_size != 0:
        out.positions[k] = entry
    elif held:
        for j: uint256 in range(k, len(out.positions) - 1, bound=MAX_POSITIONS):
            out.positions[j] = out.positions[j + 1]
        out.positions.pop()
    elif new_size != 0:
        out.positions.append(entry)
        for j: uint256 in range(len(out.positions) - 1 - k, bound=MAX_POSITIONS):
            at: uint256 = len(out.positions) - 1 - j
            out.positions[at] = out.positions[at - 1]
        out.positions[k] = entry
    return out, owed


@pure
@internal
def _bankruptcy_quote(mk: Mkt, size: int256, delta: int256, pre: Risk) -> int256:
    """
    @dev node/risk.py bankruptcy_quote: -DNNV - floor(E * |DMMR| / MM),
         DNNV = value(size + delta) - value(size), DMMR = mm(size + delta)
         - mm(size), E and MM of the pre-state account (`pre`, MM > 0).
    """
    dnnv: int256 = self._value(size + delta, mk.oracle, mk.decimals, False) \
        - self._value(size, mk.oracle, mk.decimals, False)
    dmmr: int256 = self._margin(size + delta, mk.oracle, mk.mmf, mk.decimals) \
        - self._margin(size, mk.oracle, mk.mmf, mk.decimals)
    return -dnnv - self._floor_div(pre.equity * -dmmr, pre.maintenance)


@pure
@internal
def _scale(decimals: uint256) -> (int256, int256):
    # (M, N): the exact value of size at price is size * price * M / N
    if decimals <= 6:
        return self._pow10(6 - decimals), 1
    return 1, self._pow10(decimals - 6)


