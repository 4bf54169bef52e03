# pragma version 0.4.3
# pragma optimize codesize
"""
@title derivnet one-step Liquidate transition
@notice Re-executes the Liquidate (0x07) rule of the state transition
        function (node/stf.py, node/risk.py; docs/protocol.md "State
        transition rules", "Liquidate and Deleverage") on leaf values, for
        the one-step prover. OneStepProver.prove_step hands a Liquidate to
        this contract's prove_state_step (same arguments and result), which
        proves the leaves against the pre-state root with the shared
        multiproof module smt.vy and returns the post-state root; a
        transaction that breaks a rule leaves the root as it was.
"""

import smt
import perp

# ---------------------------------------------------------------- Liquidate

@pure
@internal
def _order_digest(txp: Bytes[perp.MAX_TXP], domain_separator: bytes32) -> bytes32:
    # EIP-712 digest of the liquidator's order (57 bytes at offset 21)
    head: uint256 = perp._uint(txp, 21, 32)
    tail: uint256 = perp._uint(txp, 46, 32)
    struct_hash: bytes32 = keccak256(abi_encode(
        perp.ORDER_TYPEHASH, convert(convert(head >> 96, uint160), address), (head >> 64) & (2**32 - 1),
        (head >> 56) & 255, tail >> 192, (tail >> 128) & (2**64 - 1), (tail >> 64) & (2**64 - 1),
        tail & (2**64 - 1)))
    return keccak256(concat(b"\x19\x01", domain_separator, struct_hash))


@pure
@internal
def _signed_by(txp: Bytes[perp.MAX_TXP], offset: uint256, digest: bytes32, account: address) -> bool:
    # r | s | v at offset recovers `account`: v in {27, 28}, 0 < r < n, 0 < s <= n / 2
    r: uint256 = perp._uint(txp, offset, 32)
    s: uint256 = perp._uint(txp, offset + 32, 32)
    v: uint256 = perp._uint(txp, offset + 64, 1)
    if v != 27 and v != 28:
        return False
    if r == 0 or r >= perp.SECP256K1_N or s == 0 or s > perp.HALF_N:
        return False
    signer: address = ecrecover(digest, v, r, s)
    return signer != empty(address) and signer == account


@pure
@internal
def _liquidate(txp: Bytes[perp.MAX_TXP], timestamp: uint64, domain_separator: bytes32, system: Bytes[perp.SYSTEM_LEAF_BYTES],
               markets: Bytes[perp.MARKETS_LEAF_BYTES], liquidated_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES],
               liquidator_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES], fee_leaf: Bytes[perp.ACCOUNT_LEAF_BYTES],
               filled_leaf: Bytes[perp.ORDER_LEAF_BYTES]) -> (bool, bytes32, bytes32, bytes32, bytes32, bytes32, bytes32):
    """
    @dev The Liquidate rule (docs/protocol.md "State transition rules").
         Returns (ok, new system, markets, liquidated, liquidator, fee
         account and order leaf hashes); ok=False (hashes empty) when a rule
         fails or the order does not decode (isBuy byte > 1).
    """
    liquidated: address = perp._address(txp, 1)
    liquidator: address = perp._address(txp, 21)
    market: uint256 = perp._uint(txp, 41, 4)
    buys: uint256 = perp._uint(txp, 45, 1)  # the liquidator's side
    order_price: uint256 = perp._uint(txp, 46, 8)
    order_size: uint256 = perp._uint(txp, 54, 8)
    expiry: uint256 = perp._uint(txp, 70, 8)
    size: uint256 = perp._uint(txp, 143, 8)
    price: uint256 = perp._uint(txp, 151, 8)
    if buys > 1:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 1 UnknownMarket, 2 SelfTrade, 3 ZeroFillSize, 4 InvalidStepSize,
    # 5 InvalidTickSize, 6 FillPriceMismatch, 7 OrderExpired
    table: DynArray[perp.Mkt, perp.MAX_MARKETS] = perp._table(markets)
    k: uint256 = perp._find(table, market)
    if k == perp.MAX_MARKETS or liquidator == liquidated or size == 0:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    mk: perp.Mkt = table[k]
    at: uint256 = 64 + k * perp.MARKET_ROW_BYTES  # the market's row in the leaf
    tick: uint256 = convert(extract32(markets, at + 32 * perp.W_TICK), uint256)
    # 8 InvalidOrderSignature, 9 Overfill (all of 4-9 fail alike: one test)
    filled: uint256 = 0
    if len(filled_leaf) != 0:
        filled = convert(extract32(filled_leaf, 0), uint256)
    if size % convert(extract32(markets, at + 32 * perp.W_STEP), uint256) != 0 or price % tick != 0 \
            or order_price % tick != 0 or price != order_price or expiry <= convert(timestamp, uint256) \
            or not self._signed_by(txp, 78, self._order_digest(txp, domain_separator), liquidator) \
            or filled + size > order_size:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 10 NotLiquidatable (pre-state, unsettled funding included)
    before: perp.Account = perp._decode(liquidated_leaf)
    oi: int256 = convert(extract32(markets, at + 32 * perp.W_OPEN_INTEREST), int256)
    pre: perp.Risk = perp._risk(before, table)
    if pre.maintenance <= 0 or pre.equity >= pre.maintenance:
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 11 NotAReduction: the liquidator takes the other side of a reduction
    held: int256 = perp._size_in(before, market)
    q: int256 = convert(size, int256)
    if held == 0 or (buys == 1) != (held > 0) or q > abs(held):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    # 12 PriceBeyondFillable: node/risk.py fillable_price on the pre-state
    m: int256 = 0
    n: int256 = 0
    m, n = perp._scale(mk.decimals)
    a_den: int256 = pre.maintenance * perp.PPM
    a_num: int256 = min(max(perp.BANKRUPTCY_ADJUSTMENT_PPM * (pre.maintenance - pre.equity), 0), a_den)
    den: int256 = a_den * perp.PPM * m * held
    num: int256 = mk.oracle * den - a_num * perp.SPREAD_TO_MMR_PPM * perp._margin(held, mk.oracle, mk.mmf, mk.decimals) * n
    p: int256 = convert(price, int256)
    if (held > 0 and p < max(perp._ceil_div(num, den), 0)) or (held < 0 and p > max(perp._floor_div(num, den), 0)):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)

    # a. settlement (liquidator, then liquidated) b. the trade at price: the
    # liquidator is the maker and pays the maker fee; the liquidated account
    # pays no trading fee
    pay: int256 = 0
    receive: int256 = 0
    pay, receive = perp._notional(q, p, mk.decimals)
    maker_fee_ppm: int256 = convert(extract32(markets, at + 32 * perp.W_MAKER_FEE), int256)
    delta: int256 = -q  # the liquidated account's
    cash: int256 = receive  # the liquidated account's signed trade cash
    liquidator_fee: int256 = perp._ceil_div(pay * maker_fee_ppm, perp.PPM)
    if held < 0:
        delta = q
        cash = -pay
        liquidator_fee = perp._ceil_div(receive * maker_fee_ppm, perp.PPM)
    maker: perp.Account = perp._decode(liquidator_leaf)
    maker_before: int256 = perp._size_in(maker, market)
    funding: int256 = 0
    owed: int256 = 0
    if held > 0:
        maker, owed = perp._settle_and_trade(maker, mk, q, pay, -pay - liquidator_fee)
    else:
        maker, owed = perp._settle_and_trade(maker, mk, -q, -receive, receive - liquidator_fee)
    funding += owed
    after: perp.Account = empty(perp.Account)
    after, owed = perp._settle_and_trade(before, mk, delta, -cash, cash)
    funding += owed
    # c. the insurance fund: node/risk.py insurance_fund_delta(cash, bq, max fee)
    surplus: int256 = cash - perp._bankruptcy_quote(mk, held, delta, pre)
    fund_delta: int256 = surplus
    if surplus > 0:
        fund_delta = min(perp._ceil_div(
            abs(cash) * convert(extract32(markets, at + 32 * perp.W_MAX_LIQUIDATION_FEE), int256), perp.PPM), surplus)
    after.collateral -= fund_delta
    fund: int256 = convert(extract32(system, 6 * 32), int256) + fund_delta
    # d. open interest
    new_oi: int256 = oi + max(held + delta, 0) - max(held, 0) + max(maker_before - delta, 0) - max(maker_before, 0)
    # fee income (maker fee + rounding dust) to the fee account, after the trades
    income: int256 = liquidator_fee + pay - receive
    fee_account: address = convert(convert(convert(extract32(system, 3 * 32), uint256), uint160), address)
    if fee_account == liquidator:
        maker.collateral += income
    elif fee_account == liquidated:
        after.collateral += income
    # 13 InsuranceFundShort, 14 InsufficientMargin (the liquidator, when its
    # position grew or flipped), 15 the liquidated account ends no riskier
    # (StarkEx): one failure test
    bad: bool = fund < 0
    maker_after: int256 = maker_before - delta
    if not bad and (abs(maker_after) > abs(maker_before) or maker_after * maker_before < 0):
        # the traded market's effective imf at its new open interest
        table[k].imf = perp._imf(convert(extract32(markets, at + 32 * perp.W_IMF), int256),
                                 convert(extract32(markets, at + 32 * perp.W_OI_LOWER), int256),
                                 convert(extract32(markets, at + 32 * perp.W_OI_UPPER), int256), new_oi, mk.oracle,
                                 mk.decimals)
        r: perp.Risk = perp._risk(maker, table)
        bad = r.equity < r.initial
    if bad or not perp._no_riskier(before, after, table):
        return False, empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32), empty(bytes32)
    fee_hash: bytes32 = empty(bytes32)
    if fee_account == liquidator:
        fee_hash = perp._hash(maker)
    elif fee_account == liquidated:
        fee_hash = perp._hash(after)
    else:
        fee: perp.Account = perp._decode(fee_leaf)
        fee.collateral += income
        fee_hash = perp._hash(fee)
    at += perp.W_OPEN_INTEREST * 32
    return True, \
        keccak256(concat(slice(system, 0, 160), convert(convert(extract32(system, 160), int256) + funding, bytes32),
                         convert(fund, bytes32))), \
        keccak256(concat(slice(markets, 0, at), convert(new_oi, bytes32), slice(markets, at + 32, len(markets) - at - 32))), \
        perp._hash(after), perp._hash(maker), fee_hash, keccak256(abi_encode(filled + size))


# ---------------------------------------------------------------- the step

@pure
@internal
def _leaf_hash(leaf: Bytes[perp.MARKETS_LEAF_BYTES]) -> bytes32:
    # keccak256(value); empty(bytes32) for an absent leaf (empty bytes)
    if len(leaf) == 0:
        return empty(bytes32)
    return keccak256(leaf)


@pure
@internal
def _account_key(who: address) -> uint256:
    return convert(keccak256(concat(b"\x01", convert(who, bytes20))), uint256)


@view
@external
def prove_state_step(pre_root: bytes32, timestamp: uint64, encoded_tx: Bytes[perp.MAX_TX_BYTES],
                     domain_separator: bytes32, witness: Bytes[perp.MAX_WITNESS]) -> bytes32:
    """
    @notice OneStepProver.prove_step for a Liquidate (same arguments and
            result): the post-state root, pre_root if the transaction fails
            a rule. Witness slots as docs/protocol.md "Witness": system,
            markets, liquidated account, liquidator account, fee account,
            liquidator order.
    @dev Reverts "osp: bad tx" for another type or a wrong length, "osp: no
         system leaf", "osp: position in an unknown market", and the tree's
         "osp: ..." for a witness that does not prove against pre_root.
    """
    size: uint256 = len(encoded_tx)
    assert size > 0, "osp: bad tx"
    txp: Bytes[perp.MAX_TXP] = concat(encoded_tx, empty(bytes32))
    kind: uint256 = perp._uint(txp, 0, 1)
    assert kind == perp.TX_LIQUIDATE and size == perp.LIQUIDATE_TX_BYTES, "osp: bad tx"
    system: Bytes[perp.SYSTEM_LEAF_BYTES] = b""
    markets: Bytes[perp.MARKETS_LEAF_BYTES] = b""
    first: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    second: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    fee: Bytes[perp.ACCOUNT_LEAF_BYTES] = b""
    tree: Bytes[smt.MAX_TREE_BYTES] = b""
    ok: bool = False
    new_system: bytes32 = empty(bytes32)
    new_markets: bytes32 = empty(bytes32)
    new_first: bytes32 = empty(bytes32)
    new_second: bytes32 = empty(bytes32)
    new_fee: bytes32 = empty(bytes32)
    slots: DynArray[smt.Slot, smt.MAX_SLOTS] = []
    filled: Bytes[perp.ORDER_LEAF_BYTES] = b""
    system, markets, first, second, fee, filled, tree = abi_decode(
        witness, (Bytes[perp.SYSTEM_LEAF_BYTES], Bytes[perp.MARKETS_LEAF_BYTES], Bytes[perp.ACCOUNT_LEAF_BYTES],
                  Bytes[perp.ACCOUNT_LEAF_BYTES], Bytes[perp.ACCOUNT_LEAF_BYTES], Bytes[perp.ORDER_LEAF_BYTES],
                  Bytes[smt.MAX_TREE_BYTES]))
    assert len(system) == perp.SYSTEM_LEAF_BYTES, "osp: no system leaf"
    new_filled: bytes32 = empty(bytes32)
    ok, new_system, new_markets, new_first, new_second, new_fee, new_filled = self._liquidate(
        txp, timestamp, domain_separator, system, markets, first, second, fee, filled)
    order_key: uint256 = convert(keccak256(concat(b"\x03", self._order_digest(txp, domain_separator))), uint256)
    slots.append(smt.Slot(key=order_key, old=self._leaf_hash(filled), new=new_filled))
    fee_account: address = convert(convert(convert(extract32(system, 3 * 32), uint256), uint160), address)
    slots.append(smt.Slot(key=convert(perp.SYSTEM_KEY, uint256), old=keccak256(system), new=new_system))
    slots.append(smt.Slot(key=convert(perp.MARKETS_KEY, uint256), old=self._leaf_hash(markets), new=new_markets))
    slots.append(smt.Slot(key=self._account_key(perp._address(txp, 1)), old=self._leaf_hash(first), new=new_first))
    slots.append(smt.Slot(key=self._account_key(perp._address(txp, 21)), old=self._leaf_hash(second), new=new_second))
    slots.append(smt.Slot(key=self._account_key(fee_account), old=self._leaf_hash(fee), new=new_fee))
    return smt.root_after(pre_root, ok, slots, tree)
